//! `spec.logs`, and the log group rules both groups share (name, retention, class, tags).

use std::collections::BTreeMap;

use super::Merger;
use super::placement::Placement;
use crate::crd::{LogGroupClass, LogGroupSpec, MLObservabilityPipelineSpec, Redaction};
use crate::desired::effective::{EffLogGroup, EffLogs};
use crate::desired::sources::{LogGroupSources, LogsSources, Source, Sourced};

/// The policy's rules for every log group of a pipeline.
pub(super) struct GroupRules<'a> {
    pub min_retention: Option<i32>,
    pub prefix: Option<String>,
    pub ownership: &'a BTreeMap<String, String>,
}

impl<'a> GroupRules<'a> {
    pub fn of(m: &Merger<'_>, at: &'a Placement) -> Self {
        let pol_logs = m.policy_spec().and_then(|p| p.logs.as_ref());
        GroupRules {
            min_retention: pol_logs.and_then(|l| l.min_retention_in_days),
            prefix: pol_logs.and_then(|l| l.log_group_prefix.clone()),
            ownership: &at.ownership,
        }
    }
}

/// A log group: `path` is its place in the spec (`logs.logGroup`), for violations.
pub(super) fn log_group(
    m: &mut Merger<'_>,
    path: &str,
    spec: Option<&LogGroupSpec>,
    derived_name: String,
    rules: &GroupRules<'_>,
) -> (EffLogGroup, LogGroupSources) {
    let name = Sourced::pipeline_or(spec.and_then(|s| s.name.clone()), derived_name);
    let retention = Sourced::pick(spec.and_then(|s| s.retention_in_days), rules.min_retention, 30);
    if let Some(min) = rules.min_retention
        && retention.value < min
    {
        m.violate(
            format!("spec.{path}.retentionInDays"),
            "logs.minRetentionInDays",
            format!("{} days is below the policy minimum of {min}", retention.value),
        );
    }
    if let Some(prefix) = &rules.prefix
        && !name.value.starts_with(prefix.as_str())
    {
        m.violate(
            format!("spec.{path}.name"),
            "logs.logGroupPrefix",
            format!("{:?} must start with {prefix:?}", name.value),
        );
    }
    let class = Sourced::pipeline_or(spec.and_then(|s| s.class), LogGroupClass::Standard);
    let mut tags = spec.and_then(|s| s.tags.clone()).unwrap_or_default();
    tags.extend(rules.ownership.clone());
    let sources = LogGroupSources {
        name: name.source,
        retention_days: retention.source,
        class: class.source,
    };
    let group = EffLogGroup {
        name: name.value,
        retention_days: retention.value,
        class: class.value,
        tags,
    };
    (group, sources)
}

fn same_redaction(a: &Redaction, b: &Redaction) -> bool {
    match (&a.name, &b.name) {
        (Some(x), Some(y)) => x == y,
        _ => a.pattern == b.pattern,
    }
}

/// The pipeline's redactions, then each required one of the policy that is missing.
fn redactions(m: &Merger<'_>, own: Option<Vec<Redaction>>) -> Sourced<Vec<Redaction>> {
    let mut out = Sourced::pipeline_or(own, vec![]);
    let required = m
        .policy_spec()
        .and_then(|p| p.logs.as_ref())
        .and_then(|l| l.required_redactions.clone());
    for r in required.unwrap_or_default() {
        if !out.value.iter().any(|x| same_redaction(x, &r)) {
            out.value.push(r);
            out.source = Source::PolicyGuardrail;
        }
    }
    out
}

pub(super) fn logs(m: &mut Merger<'_>, spec: &MLObservabilityPipelineSpec, at: &Placement) -> (EffLogs, LogsSources) {
    let logs = spec.logs.as_ref();
    let enabled = Sourced::pipeline_or(logs.and_then(|l| l.enabled), true);
    let namespaces = &at.source_namespaces.value;
    let derived_include: Vec<String> = namespaces
        .iter()
        .map(|ns| format!("/var/log/pods/{ns}_*/*/*.log"))
        .collect();
    let include = Sourced::pipeline_or(logs.and_then(|l| l.include.clone()), derived_include);
    for (i, glob) in include.value.iter().enumerate() {
        let inside = namespaces
            .iter()
            .any(|ns| glob.starts_with(&format!("/var/log/pods/{ns}_")));
        if !inside {
            m.error(
                &format!("spec.logs.include[{i}]"),
                "sourceNamespaces",
                format!("{glob:?} must start with /var/log/pods/<namespace>_ for one of the source namespaces {namespaces:?}"),
            );
        }
    }
    let exclude = Sourced::pipeline_or(logs.and_then(|l| l.exclude.clone()), vec![]);
    let rules = GroupRules::of(m, at);
    let (group, group_src) = log_group(
        m,
        "logs.logGroup",
        logs.and_then(|l| l.log_group.as_ref()),
        format!("/aws/eks/{}/{}/{}/logs", at.cluster_name.value, at.namespace, at.name),
        &rules,
    );
    let redaction = redactions(m, logs.and_then(|l| l.redaction.clone()));
    let sources = LogsSources {
        enabled: enabled.source,
        include: include.source,
        exclude: exclude.source,
        group: group_src,
        redaction: redaction.source,
    };
    let effective = EffLogs {
        enabled: enabled.value,
        include: include.value,
        exclude: exclude.value,
        group,
        redactions: redaction.value,
        job_id_label: logs.and_then(|l| l.job_id_label.clone()),
    };
    (effective, sources)
}
