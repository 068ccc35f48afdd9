//! The GPU rules as a `PrometheusRule` (monitoring.coreos.com/v1) for Prometheus and AMP users:
//! the community expressions on dcgm-exporter's series (REFERENCE "GPU alerts"), plus the
//! pipeline-health burn-rate group ([`super::slo`]).

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{EffAlerts, GpuRule, RuleKind, slo};
use crate::desired::effective::{Effective, common_labels};

pub const API_VERSION: &str = "monitoring.coreos.com/v1";
pub const KIND: &str = "PrometheusRule";
/// The CRD whose presence decides whether the PrometheusRule child is applied.
pub const CRD_NAME: &str = "prometheusrules.monitoring.coreos.com";

/// The Prometheus operator's rule object, typed for the child applier; the groups stay JSON (mlobs
/// writes them and never reads them back).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "PrometheusRule",
    namespaced,
    schema = "disabled"
)]
pub struct PrometheusRuleSpec {
    pub groups: Vec<Value>,
}

/// PromQL and `for` of one GPU rule.
pub fn expression(r: &GpuRule) -> (String, Option<String>) {
    let f = r.kind.field();
    match r.kind {
        // The field is a latched gauge of the last XID: a change is a new error.
        RuleKind::Xid => (format!("changes({f}[5m]) > 0"), None),
        RuleKind::EccDoubleBit => (format!("increase({f}[1h]) > 0"), None),
        RuleKind::Temperature => (format!("{f} > {}", r.threshold), Some(format!("{}m", r.minutes))),
        // `pod!=""`: dcgm-exporter's pod mapping names the pod holding the GPU.
        RuleKind::IdleGpu => (
            format!("avg_over_time({f}{{pod!=\"\"}}[{}m]) < {}", r.minutes, r.threshold),
            None,
        ),
    }
}

fn gpu_rule(e: &Effective, r: &GpuRule) -> Value {
    let (expr, for_) = expression(r);
    let mut rule = json!({
        "alert": r.kind.alert_name(),
        "expr": expr,
        "labels": {"severity": r.kind.severity(), "mlobs_pipeline": e.pipeline_label()},
        "annotations": {
            "summary": r.describe(),
            "description": format!("{} on {{{{ $labels.Hostname }}}} GPU {{{{ $labels.gpu }}}} (pod {{{{ $labels.pod }}}}); pipeline {}", r.kind.field(), e.pipeline_id()),
        },
    });
    if let Some(f) = for_ {
        rule["for"] = json!(f);
    }
    rule
}

/// The rule groups: GPU rules, then pipeline health when the SLO is on.
pub fn groups(e: &Effective, a: &EffAlerts) -> Vec<Value> {
    let mut groups = Vec::new();
    if !a.rules.is_empty() {
        let rules: Vec<Value> = a.rules.iter().map(|r| gpu_rule(e, r)).collect();
        groups.push(json!({"name": format!("mlobs-gpu-{}", e.pipeline_label()), "rules": rules}));
    }
    if let Some(s) = &a.slo {
        groups.push(json!({
            "name": format!("mlobs-pipeline-health-{}", e.pipeline_label()),
            "rules": slo::rules(e, s),
        }));
    }
    groups
}

/// The PrometheusRule object, in the pipeline's namespace with the common labels.
pub fn prometheus_rule(e: &Effective, a: &EffAlerts) -> PrometheusRule {
    let labels: BTreeMap<String, String> = common_labels(e);
    let groups = groups(e, a).into_iter().map(crate::desired::canonical_json).collect();
    let mut r = PrometheusRule::new(&format!("{}-alerts", e.child_name()), PrometheusRuleSpec { groups });
    r.metadata.namespace = Some(e.namespace.clone());
    r.metadata.labels = Some(labels);
    r
}
