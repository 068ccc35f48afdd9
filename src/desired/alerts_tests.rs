//! The rule model: each default rule fires on a value past its threshold and not on one short of
//! it (CloudWatch semantics evaluated here; PromQL checked as rendered), the burn-rate thresholds,
//! alarms on exactly what EMF ships, and the merge's refusals.

use serde_json::{Value, json};

use super::alerts::cloudwatch::{AlarmPlan, Comparison, Statistic, breaches};
use super::alerts::prometheus::{expression, groups, prometheus_rule};
use super::alerts::slo::{WINDOWS, budget, threshold};
use super::alerts_tests_support::{default_alerts, with_alerts};
use super::monitoring::*;
use crate::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use crate::desired::aws_plan;
use crate::desired::effective::{Context, test_fixture};
use crate::desired::merge::merge;

fn alarm(kind: RuleKind) -> AlarmPlan {
    let e = with_alerts();
    let plan = aws_plan::build(&e).expect("plan");
    let a = plan.alerts.expect("alerts planned");
    a.alarms
        .into_iter()
        .find(|x| x.rule == kind)
        .expect("alarm of the rule")
}

fn every(v: f64, n: usize) -> Vec<Option<f64>> {
    vec![Some(v); n]
}

#[test]
fn xid_alarm_fires_when_the_last_xid_changes_and_not_while_it_stays_latched() {
    let a = alarm(RuleKind::Xid);
    assert_eq!(
        (a.statistic, a.comparison, a.threshold),
        (Statistic::Maximum, Comparison::GreaterThanThreshold, 0.0)
    );
    assert_eq!(a.expression.as_deref(), Some("ABS(DIFF(m1))"));
    assert!(breaches(&a, &[Some(0.0), Some(0.0), Some(79.0)]), "a new XID 79");
    assert!(!breaches(&a, &[Some(0.0), Some(0.0), Some(0.0)]), "no XID");
    assert!(
        !breaches(&a, &every(79.0, 3)),
        "an old XID still latched is not a new error"
    );
}

#[test]
fn ecc_alarm_fires_on_any_double_bit_error_in_five_minutes_and_not_on_none() {
    let a = alarm(RuleKind::EccDoubleBit);
    assert_eq!((a.statistic, a.period_seconds, a.threshold), (Statistic::Sum, 300, 0.0));
    assert!(breaches(&a, &[Some(0.0), Some(1.0)]));
    assert!(
        !breaches(&a, &[Some(3.0), Some(0.0)]),
        "an increase in an older period is past"
    );
    assert!(!breaches(&a, &[None]), "no data does not breach");
}

#[test]
fn temperature_alarm_fires_after_n_minutes_above_the_threshold_and_not_after_fewer() {
    let a = alarm(RuleKind::Temperature);
    assert_eq!((a.evaluation_periods, a.datapoints_to_alarm, a.threshold), (5, 5, 85.0));
    assert!(breaches(&a, &every(86.0, 5)));
    assert!(
        !breaches(&a, &[Some(86.0), Some(86.0), Some(86.0), Some(86.0), Some(84.0)]),
        "4 of 5 minutes"
    );
    assert!(!breaches(&a, &every(85.0, 5)), "at the threshold is not above it");
}

#[test]
fn idle_alarm_fires_after_m_minutes_under_the_threshold_and_not_when_one_minute_is_busy() {
    let a = alarm(RuleKind::IdleGpu);
    assert_eq!(
        (a.comparison, a.evaluation_periods, a.threshold),
        (Comparison::LessThanThreshold, 30, 5.0)
    );
    assert!(breaches(&a, &every(2.0, 30)));
    let mut busy = every(2.0, 30);
    busy[10] = Some(60.0);
    assert!(!breaches(&a, &busy));
    assert!(
        !breaches(&a, &vec![None; 30]),
        "no GPU reporting (scaled to zero) is no alarm"
    );
}

#[test]
fn prometheus_expressions_follow_the_community_rules_with_the_thresholds_set() {
    let want = [
        (RuleKind::Xid, "changes(DCGM_FI_DEV_XID_ERRORS[5m]) > 0", None),
        (
            RuleKind::EccDoubleBit,
            "increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[1h]) > 0",
            None,
        ),
        (RuleKind::Temperature, "DCGM_FI_DEV_GPU_TEMP > 85", Some("5m")),
        (
            RuleKind::IdleGpu,
            "avg_over_time(DCGM_FI_DEV_GPU_UTIL{pod!=\"\"}[30m]) < 5",
            None,
        ),
    ];
    for (r, (kind, expr, for_)) in default_alerts().rules.iter().zip(want) {
        assert_eq!(r.kind, kind);
        assert_eq!(expression(r), (expr.to_string(), for_.map(String::from)));
    }
    let hot = GpuRule {
        kind: RuleKind::Temperature,
        threshold: 90.0,
        minutes: 10,
    };
    assert_eq!(
        expression(&hot),
        ("DCGM_FI_DEV_GPU_TEMP > 90".into(), Some("10m".into()))
    );
}

#[test]
fn burn_rate_alerts_use_both_windows_at_14_4_and_6_times_the_budget_for_logs_and_metrics() {
    let s = EffSlo {
        objective_percent: 99.9,
    };
    assert_eq!(budget(&s), 0.001);
    assert_eq!((threshold(&s, 14.4), threshold(&s, 6.0)), (0.0144, 0.006));
    let e = with_alerts();
    let g = groups(&e, e.alerts.as_ref().expect("alerts"));
    let health = g[1]["rules"].as_array().expect("rules").clone();
    assert_eq!(health.len(), 5, "2 signals × 2 window pairs + the queue");
    let sel = format!("{{mlobs_io_pipeline=\"{}\"}}", e.pipeline_label());
    for (signal, failed) in [("LogRecords", "log_records"), ("MetricPoints", "metric_points")] {
        let rules: Vec<&Value> = health
            .iter()
            .filter(|r| r["alert"] == format!("MlobsDelivery{signal}BudgetBurn"))
            .collect();
        assert_eq!(rules.len(), 2);
        for (r, (long, short, burn, severity)) in rules.iter().zip(WINDOWS) {
            let expr = r["expr"].as_str().unwrap_or_default();
            let t = threshold(&s, burn);
            assert!(
                expr.contains(&format!("otelcol_exporter_send_failed_{failed}_total{sel}[{long}]")),
                "{expr}"
            );
            assert!(
                expr.contains(&format!("otelcol_exporter_sent_{failed}_total{sel}[{short}]")),
                "{expr}"
            );
            assert_eq!(expr.matches(&format!("> {t}")).count(), 2, "{expr}");
            assert_eq!(r["labels"]["severity"], severity);
        }
    }
    assert!(health[4]["expr"].as_str().unwrap_or_default().contains(&format!(
        "otelcol_exporter_queue_size{sel} / otelcol_exporter_queue_capacity{sel}) > 0.8"
    )));
}

/// Every collector series the SLO rules and the Grafana delivery panels read is selected by the
/// pipeline's label: two pipelines in one Prometheus never read each other's collectors.
#[test]
fn every_collector_series_the_rules_and_panels_read_is_the_pipelines_own() {
    let e = with_alerts();
    let sel = format!("{{mlobs_io_pipeline=\"{}\"}}", e.pipeline_label());
    let rules = serde_json::to_string(&groups(&e, e.alerts.as_ref().expect("alerts"))).expect("json");
    let mut d = e.clone();
    d.dashboards.grafana = true;
    let panels = crate::desired::dashboards::grafana::dashboard(&d).to_string();
    for text in [rules, panels] {
        let text = text.replace("\\\"", "\"");
        let mut seen = 0;
        for (i, _) in text.match_indices("otelcol_") {
            let name_end = text[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |n| i + n);
            assert!(
                text[name_end..].starts_with(&sel),
                "{} is read without {sel}",
                &text[i..name_end]
            );
            seen += 1;
        }
        assert!(seen >= 5, "{seen} collector series read");
    }
}

#[test]
fn alarms_read_the_namespace_metric_and_dimension_set_emf_ships() {
    let e = with_alerts();
    let config = crate::desired::collector_config::build(&e);
    let emf = &config["exporters"]["awsemf"];
    let declared: Vec<Vec<String>> =
        serde_json::from_value(emf["metric_declarations"][0]["dimensions"].clone()).expect("dimensions");
    let selectors = emf["metric_declarations"][0]["metric_name_selectors"].clone();
    for a in aws_plan::build(&e).expect("plan").alerts.expect("alerts").alarms {
        assert_eq!(json!(a.namespace), emf["namespace"]);
        let shipped = (selectors.as_array().into_iter().flatten()).any(|s| {
            s.as_str()
                .is_some_and(|s| s.trim_end_matches('$') == format!("^{}", a.metric_name))
        });
        assert!(shipped, "{} not shipped: {selectors}", a.metric_name);
        let keys: Vec<String> = a.dimensions.keys().cloned().collect();
        assert!(declared.contains(&keys), "{keys:?} is not a declared dimension set");
        assert_eq!(a.dimensions.get("k8s.cluster.name"), Some(&e.cluster_name));
        assert!(a.name.starts_with("mlobs/prod-gpu/team-a/train/"), "{}", a.name);
        assert_eq!(
            a.tags.get("mlobs.io/pipeline").map(String::as_str),
            Some("team-a/train")
        );
        assert_eq!(
            a.actions,
            ["arn:aws:sns:us-east-1:123456789012:mlobs-prod-gpu-team-a-train-alerts"]
        );
    }
}

#[test]
fn the_prometheus_rule_is_labelled_for_pruning_and_lists_only_enabled_rules() {
    let mut e = with_alerts();
    if let Some(a) = e.alerts.as_mut() {
        a.rules.retain(|r| r.kind != RuleKind::IdleGpu);
        a.slo = None;
    }
    let pr = serde_json::to_value(prometheus_rule(&e, e.alerts.as_ref().expect("alerts"))).expect("json");
    assert_eq!(pr["kind"], "PrometheusRule");
    assert_eq!(pr["metadata"]["labels"]["app.kubernetes.io/managed-by"], "mlobs");
    let names: Vec<&str> = pr["spec"]["groups"][0]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(names, ["GpuXidError", "GpuEccDoubleBitError", "GpuTemperatureHigh"]);
    assert_eq!(pr["spec"]["groups"].as_array().map(Vec::len), Some(1));
}

#[test]
fn the_created_topic_is_encrypted_with_the_pipeline_key_which_lets_cloudwatch_publish() {
    let plan = aws_plan::build(&with_alerts()).expect("plan");
    let t = plan.alerts.expect("alerts").topic;
    assert!(t.create);
    assert_eq!(
        t.kms_key,
        Some(aws_plan::KmsRef::Created {
            alias: "alias/mlobs/prod-gpu/team-a/train".into()
        })
    );
    let Some(aws_plan::KmsKeyPlan::Create { policy, .. }) = plan.kms else {
        panic!("a created key")
    };
    let s = policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["Sid"] == aws_plan::alerts::KEY_POLICY_SID);
    assert_eq!(
        s.map(|s| s["Principal"]["Service"].clone()),
        Some(json!("cloudwatch.amazonaws.com"))
    );
    let plain = aws_plan::build(&test_fixture()).expect("plan");
    assert!(plain.alerts.is_none());
}

// --- the merge ---------------------------------------------------------------------------

fn ctx() -> Context {
    Context {
        cluster_name: Some("prod".into()),
        region: Some("us-east-1".into()),
        ..Context::default()
    }
}

fn pipeline(mut spec: Value) -> MLObservabilityPipeline {
    spec["identity"] =
        json!({"oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/X"});
    let mut p = MLObservabilityPipeline::new("train", serde_json::from_value(spec).expect("spec"));
    p.metadata.namespace = Some("team-a".into());
    p
}

fn errors(spec: Value, policy: Option<&GpuTelemetryPolicy>) -> Vec<(String, String)> {
    match merge(&pipeline(spec), policy, &ctx()) {
        Ok(_) => vec![],
        Err(i) => i.0.into_iter().map(|f| (f.path, f.message)).collect(),
    }
}

#[test]
fn an_alert_on_a_field_that_is_not_selected_names_the_rule_and_the_field() {
    let spec = json!({"alerts": {"rules": {"eccDoubleBit": {"enabled": true}}}, "metrics": {"dcgm": {"metrics": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS"]}}});
    let errs = errors(spec, None);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "spec.alerts.rules.eccDoubleBit");
    assert!(
        errs[0].1.contains("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL") && errs[0].1.contains("ecc-double-bit"),
        "{}",
        errs[0].1
    );
    let off = json!({"alerts": {"rules": {"eccDoubleBit": {"enabled": false}}}, "metrics": {"dcgm": {"metrics": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS"]}}});
    assert_eq!(errors(off, None), vec![]);
    // On only by default: the rule is left out, the others stay.
    let default =
        json!({"alerts": {}, "metrics": {"dcgm": {"metrics": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP"]}}});
    let m = merge(&pipeline(default), None, &ctx()).expect("merged");
    let kinds: Vec<RuleKind> = m
        .effective
        .alerts
        .map(|a| a.rules.iter().map(|r| r.kind).collect())
        .unwrap_or_default();
    assert_eq!(kinds, [RuleKind::Temperature, RuleKind::IdleGpu]);
}

#[test]
fn alarms_get_the_cluster_wide_dimension_set_shipped_when_the_pipeline_has_none() {
    let dims = json!({"metrics": {"cloudwatch": {"dimensions": [["k8s.cluster.name", "k8s.node.name", "gpu"]]}}});
    let mut with = dims.clone();
    with["alerts"] = json!({});
    let shipped = |spec: Value| {
        merge(&pipeline(spec), None, &ctx())
            .expect("merged")
            .effective
            .metrics
            .dimensions
    };
    assert_eq!(shipped(dims).len(), 1, "no alerts: the sets as given");
    let sets = shipped(with);
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[1], ["k8s.cluster.name"]);
}

#[test]
fn a_topic_of_another_region_or_account_or_service_is_refused_at_its_field() {
    for (arn, words) in [
        ("arn:aws:sns:eu-west-1:123456789012:ops", "eu-west-1"),
        ("arn:aws:sns:us-east-1:210987654321:ops", "210987654321"),
        ("arn:aws:sqs:us-east-1:123456789012:ops", "sqs"),
        ("not-an-arn", "not an ARN"),
    ] {
        let errs = errors(json!({"alerts": {"sns": {"topicArn": arn}}}), None);
        assert_eq!(errs.len(), 1, "{arn}: {errs:?}");
        assert_eq!(errs[0].0, "spec.alerts.sns.topicArn");
        assert!(errs[0].1.contains(words), "{}", errs[0].1);
    }
    let ok = merge(
        &pipeline(json!({"alerts": {"sns": {"topicArn": "arn:aws:sns:us-east-1:123456789012:ops"}}})),
        None,
        &ctx(),
    );
    let topic = ok.ok().and_then(|m| m.effective.alerts).map(|a| a.topic);
    assert_eq!(
        topic,
        Some(EffTopic::Existing {
            arn: "arn:aws:sns:us-east-1:123456789012:ops".into()
        })
    );
}

#[test]
fn thresholds_out_of_range_are_field_errors_not_panics() {
    let errs = errors(
        json!({"alerts": {"rules": {"temperature": {"thresholdCelsius": 200, "forMinutes": 0}, "idleGpu": {"thresholdPercent": 90}}}}),
        None,
    );
    let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.alerts.rules.temperature.thresholdCelsius",
            "spec.alerts.rules.temperature.forMinutes",
            "spec.alerts.rules.idleGpu.thresholdPercent"
        ]
    );
}

#[test]
fn the_policy_sets_defaults_requires_alerts_and_caps_the_temperature() {
    let policy: GpuTelemetryPolicy = serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy", "metadata": {"name": "platform"},
        "spec": {"alerts": {"required": true, "maxTemperatureCelsius": 90, "defaults": {"temperature": {"thresholdCelsius": 80}, "idleGpu": {"enabled": false}}}},
    }))
    .expect("policy");
    let m = merge(&pipeline(json!({})), Some(&policy), &ctx()).expect("merged");
    let a = m.effective.alerts.expect("required by the policy");
    let kinds: Vec<RuleKind> = a.rules.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [RuleKind::Xid, RuleKind::EccDoubleBit, RuleKind::Temperature]);
    assert_eq!(a.rules[2].threshold, 80.0);
    let off = merge(&pipeline(json!({"alerts": {"enabled": false}})), Some(&policy), &ctx()).expect("merged");
    assert_eq!(
        off.violations.iter().map(|v| v.rule.as_str()).collect::<Vec<_>>(),
        ["alerts.required"]
    );
    let hot = merge(
        &pipeline(json!({"alerts": {"rules": {"temperature": {"thresholdCelsius": 95}}}})),
        Some(&policy),
        &ctx(),
    )
    .expect("merged");
    assert_eq!(
        hot.violations.iter().map(|v| v.path.as_str()).collect::<Vec<_>>(),
        ["spec.alerts.rules.temperature.thresholdCelsius"]
    );
    assert!(
        merge(&pipeline(json!({})), None, &ctx())
            .expect("merged")
            .effective
            .alerts
            .is_none(),
        "off by default"
    );
}
