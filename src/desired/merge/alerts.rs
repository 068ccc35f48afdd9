//! `spec.alerts` and the policy's `alerts` defaults and guardrails (`required`, `defaults`,
//! `maxTemperatureCelsius`). A rule switched on explicitly (by the pipeline or the policy's
//! defaults) whose DCGM field is not selected is an error naming both: its alarm would watch a
//! metric that is never shipped. A rule on only by the built-in default is left out instead, so
//! a policy can require alerts of pipelines that ship fewer fields.

use super::Merger;
use super::placement::Placement;
use crate::crd::{AlertRulesSpec, MLObservabilityPipelineSpec};
use crate::desired::destinations::parse_arn;
use crate::desired::effective::{Context, EffMetrics};
use crate::desired::monitoring::*;
use crate::desired::sources::{Source, Sourced};

/// `spec.dashboards`: both on when the section is present, unless switched off.
pub(super) fn dashboards(spec: &MLObservabilityPipelineSpec) -> crate::desired::monitoring::EffDashboards {
    let d = spec.dashboards.as_ref();
    crate::desired::monitoring::EffDashboards {
        grafana: d.is_some_and(|d| d.grafana != Some(false)),
        cloudwatch: d.is_some_and(|d| d.cloudwatch != Some(false)),
    }
}

/// The only EMF dimension set whose values are known before metrics arrive.
const ALARM_DIMENSIONS: [&str; 1] = ["k8s.cluster.name"];

/// A setting of one rule: the pipeline's, else the policy default's, else built-in.
fn pick<T: Copy>(
    pipeline: Option<&AlertRulesSpec>,
    policy: Option<&AlertRulesSpec>,
    get: impl Fn(&AlertRulesSpec) -> Option<T>,
    builtin: T,
) -> T {
    Sourced::pick(pipeline.and_then(&get), policy.and_then(&get), builtin).value
}

/// The enabled rules, each with its settings and whether it was switched on explicitly.
fn rules(m: &mut Merger<'_>, own: Option<&AlertRulesSpec>, def: Option<&AlertRulesSpec>) -> Vec<(GpuRule, bool)> {
    let on = |kind: RuleKind| {
        let get = move |r: &AlertRulesSpec| match kind {
            RuleKind::Xid => r.xid.as_ref().and_then(|x| x.enabled),
            RuleKind::EccDoubleBit => r.ecc_double_bit.as_ref().and_then(|x| x.enabled),
            RuleKind::Temperature => r.temperature.as_ref().and_then(|x| x.enabled),
            RuleKind::IdleGpu => r.idle_gpu.as_ref().and_then(|x| x.enabled),
        };
        Sourced::pick(own.and_then(get), def.and_then(get), true)
    };
    let temp = |r: &AlertRulesSpec| r.temperature.as_ref().and_then(|t| t.threshold_celsius);
    let temp_min = |r: &AlertRulesSpec| r.temperature.as_ref().and_then(|t| t.for_minutes);
    let idle = |r: &AlertRulesSpec| r.idle_gpu.as_ref().and_then(|t| t.threshold_percent);
    let idle_min = |r: &AlertRulesSpec| r.idle_gpu.as_ref().and_then(|t| t.for_minutes);
    let mut out = Vec::new();
    for kind in RuleKind::ALL {
        let enabled = on(kind);
        if !enabled.value {
            continue;
        }
        let (threshold, minutes, range, minutes_range) = match kind {
            RuleKind::Xid | RuleKind::EccDoubleBit => (0, 1, 0..=0, 1..=1),
            RuleKind::Temperature => (
                pick(own, def, temp, DEFAULT_TEMPERATURE_CELSIUS),
                pick(own, def, temp_min, DEFAULT_TEMPERATURE_MINUTES),
                40..=110,
                1..=60,
            ),
            RuleKind::IdleGpu => (
                pick(own, def, idle, DEFAULT_IDLE_PERCENT),
                pick(own, def, idle_min, DEFAULT_IDLE_MINUTES),
                1..=50,
                5..=1440,
            ),
        };
        // The CRD schema has the same ranges; this catches objects that bypassed it (CLI files).
        if !range.contains(&threshold) {
            let path = format!("{}.{}", kind.spec_path(), threshold_key(kind));
            m.error(
                &path,
                "range",
                format!("{threshold} is outside {}–{}", range.start(), range.end()),
            );
        }
        if !minutes_range.contains(&minutes) {
            let path = format!("{}.forMinutes", kind.spec_path());
            let (lo, hi) = (minutes_range.start(), minutes_range.end());
            m.error(&path, "range", format!("{minutes} minutes is outside {lo}–{hi}"));
        }
        let rule = GpuRule {
            kind,
            threshold: threshold as f64,
            minutes: minutes.max(1) as u32,
        };
        out.push((rule, enabled.source != Source::BuiltIn));
    }
    out
}

fn threshold_key(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::Temperature => "thresholdCelsius",
        _ => "thresholdPercent",
    }
}

/// The topic: the given ARN (same partition, region and account, `sns`), else one mlobs creates.
fn topic(m: &mut Merger<'_>, arn: Option<&String>, at: &Placement, ctx: &Context) -> EffTopic {
    let Some(arn) = arn else {
        return EffTopic::Create {
            name: topic_name(&at.cluster_name.value, &at.namespace, &at.name),
        };
    };
    let path = "spec.alerts.sns.topicArn";
    match parse_arn(arn) {
        Some(p) if p.service != "sns" => m.error(
            path,
            "snsArn",
            format!("{arn} is an {} ARN, not an SNS topic", p.service),
        ),
        Some(p) if p.region != at.region.value => m.error(
            path,
            "sameRegion",
            format!(
                "{arn} is in {}, the pipeline in {}: CloudWatch alarms notify only topics of their own region",
                p.region, at.region.value
            ),
        ),
        Some(p) if p.account != ctx.account_id => m.error(
            path,
            "sameAccount",
            format!(
                "{arn} belongs to account {}, not {}: mlobs alarms notify topics of their own account",
                p.account, ctx.account_id
            ),
        ),
        Some(p) if p.partition != ctx.partition => m.error(
            path,
            "samePartition",
            format!("{arn} is not in partition {}", ctx.partition),
        ),
        Some(_) => {}
        None => m.error(path, "snsArn", format!("{arn} is not an ARN")),
    }
    EffTopic::Existing { arn: arn.clone() }
}

/// Alerts, when enabled by the pipeline's section or the policy's `required`.
pub(super) fn alerts(
    m: &mut Merger<'_>,
    spec: &MLObservabilityPipelineSpec,
    at: &Placement,
    ctx: &Context,
    metrics: &mut EffMetrics,
) -> Option<EffAlerts> {
    let a = spec.alerts.as_ref();
    let pol = m.policy_spec().and_then(|p| p.alerts.as_ref());
    let required = pol.and_then(|p| p.required) == Some(true);
    let enabled = match (a.and_then(|a| a.enabled), a.is_some()) {
        (Some(on), _) => Sourced::new(on, Source::Pipeline),
        (None, true) => Sourced::new(true, Source::Pipeline),
        (None, false) => Sourced::new(required, Source::PolicyDefault),
    };
    if required && !enabled.value {
        m.violate(
            "spec.alerts.enabled",
            "alerts.required",
            "the policy requires GPU alerts on every pipeline",
        );
    }
    if !enabled.value {
        return None;
    }
    let own = a.and_then(|a| a.rules.as_ref());
    let def = pol.and_then(|p| p.defaults.as_ref());
    let mut rules = Vec::new();
    for (r, explicit) in self::rules(m, own, def) {
        let selected = metrics.ships() && metrics.metrics.iter().any(|f| f == r.kind.field());
        if !selected && explicit {
            m.error(
                r.kind.spec_path(),
                "fieldNotSelected",
                format!(
                    "the {} alert reads {}, which is not among the selected metrics (spec.metrics.dcgm.metrics): select it or set {}.enabled: false",
                    r.kind.slug(),
                    r.kind.field(),
                    r.kind.spec_path()
                ),
            );
        }
        if selected {
            rules.push(r);
        }
    }
    if let (Some(max), Some(t)) = (
        pol.and_then(|p| p.max_temperature_celsius),
        rules.iter().find(|r| r.kind == RuleKind::Temperature),
    ) && t.threshold > max as f64
    {
        m.violate(
            "spec.alerts.rules.temperature.thresholdCelsius",
            "alerts.maxTemperatureCelsius",
            format!("{} °C is above the policy's highest threshold of {max} °C", t.threshold),
        );
    }
    let wanted: Vec<String> = ALARM_DIMENSIONS.iter().map(|d| d.to_string()).collect();
    if !rules.is_empty() && !metrics.dimensions.contains(&wanted) {
        // An alarm names every dimension value, and only the cluster's is known before metrics
        // arrive: EMF ships the cluster-wide set too (one more metric per selected field).
        metrics.dimensions.push(wanted.clone());
    }
    let health_on = |r: &AlertRulesSpec| r.pipeline_health.as_ref().and_then(|h| h.enabled);
    let objective = |r: &AlertRulesSpec| r.pipeline_health.as_ref().and_then(|h| h.objective_percent);
    let slo = pick(own, def, health_on, true).then(|| EffSlo {
        objective_percent: pick(own, def, objective, DEFAULT_OBJECTIVE_PERCENT),
    });
    if let Some(s) = &slo
        && !(90.0..=99.99).contains(&s.objective_percent)
    {
        m.error(
            "spec.alerts.rules.pipelineHealth.objectivePercent",
            "range",
            format!("{} is outside 90–99.99", s.objective_percent),
        );
    }
    let topic = topic(
        m,
        a.and_then(|a| a.sns.as_ref()).and_then(|s| s.topic_arn.as_ref()),
        at,
        ctx,
    );
    Some(EffAlerts {
        rules,
        topic,
        slo,
        alarm_dimensions: wanted,
    })
}
