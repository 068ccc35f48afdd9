//! Desired state, pure: effective spec → Kubernetes objects and the AWS plan.
//!
//! No I/O, no clock, no randomness: the same input gives byte-identical output. The CLI's
//! `render`/`plan` and the controller both call into here, so they cannot disagree.

pub mod alerts;
#[cfg(test)]
mod alerts_tests;
#[cfg(test)]
pub(crate) mod alerts_tests_support;
#[cfg(test)]
mod archive_tests;
pub mod aws_plan;
pub mod collector_config;
pub mod collector_daemonset;
pub mod cost;
pub mod dashboards;
#[cfg(test)]
mod dashboards_tests;
pub mod dcgm_exporter;
pub mod destinations;
#[cfg(test)]
mod destinations_tests;
pub mod effective;
pub mod fluent_bit;
pub mod hot_path;
pub mod merge;
pub mod monitoring;
pub mod rbac;
pub mod self_monitoring;
pub mod service_account;
pub mod settings;
pub mod sources;

pub use effective::Context;

/// A JSON value with every object's keys in sorted order. serde_json keeps insertion order when
/// any crate in the build enables its `preserve_order` feature (the AWS SDK's test utilities do),
/// so output built from `json!` would otherwise differ between builds of the same code.
pub fn canonical_json(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, canonical_json(v))).collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(canonical_json).collect()),
        other => other,
    }
}

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

use crate::crd::validate::Invalid;
use crate::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use effective::{Effective, Violation};

/// The Kubernetes children of one pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineObjects {
    pub config_map: ConfigMap,
    pub service_account: ServiceAccount,
    pub cluster_role: ClusterRole,
    pub cluster_role_binding: ClusterRoleBinding,
    pub daemon_set: DaemonSet,
    /// The hot path's Fluent Bit ServiceAccount, ConfigMap and DaemonSet, when enabled.
    pub hot_path: Option<fluent_bit::HotPathObjects>,
}

/// Everything one pipeline needs, built from its spec and policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub effective: Effective,
    pub violations: Vec<Violation>,
    pub config_yaml: String,
    pub config_hash: String,
    pub objects: PipelineObjects,
    pub aws: aws_plan::AwsPlan,
}

/// Why a pipeline cannot be built at all (as opposed to a guardrail violation).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    #[error("invalid spec:{0}")]
    Invalid(Invalid),
    #[error("{0}")]
    Plan(#[from] aws_plan::PlanError),
}

impl BuildError {
    /// CamelCase reason for conditions, events and metric labels.
    pub fn reason(&self) -> crate::crd::reason::Reason {
        match self {
            BuildError::Invalid(_) => crate::crd::reason::Reason::InvalidSpec,
            BuildError::Plan(e) => e.reason(),
        }
    }
}

/// Merges and builds a pipeline: the one code path of `render`, `plan` and the controller.
pub fn build(
    p: &MLObservabilityPipeline,
    policy: Option<&GpuTelemetryPolicy>,
    ctx: &Context,
) -> Result<Desired, BuildError> {
    let merged = merge::merge(p, policy, ctx).map_err(BuildError::Invalid)?;
    let e = merged.effective;
    let aws = aws_plan::build(&e)?;
    let config_yaml = collector_config::to_yaml(&e);
    let config_hash = collector_config::config_hash(&config_yaml);
    let (cluster_role, cluster_role_binding) = rbac::build(&e);
    let objects = PipelineObjects {
        config_map: collector_daemonset::config_map(&e, &config_yaml),
        service_account: service_account::build(&e, Some(aws.role.arn())),
        cluster_role,
        cluster_role_binding,
        daemon_set: collector_daemonset::daemon_set(&e, &config_hash),
        hot_path: match (&e.destinations.hot_path, &aws.hot_path) {
            (Some(h), Some(plan)) => Some(fluent_bit::build(&e, h, plan.role.arn())),
            _ => None,
        },
    };
    Ok(Desired {
        effective: e,
        violations: merged.violations,
        config_yaml,
        config_hash,
        objects,
        aws,
    })
}

#[cfg(test)]
mod tests {
    use super::canonical_json;

    #[test]
    fn canonical_json_sorts_keys_whatever_the_insertion_order() {
        let mut m = serde_json::Map::new();
        m.insert("zeta".into(), serde_json::json!({"b": 1, "a": 2}));
        m.insert("alpha".into(), serde_json::json!([{"y": 1, "x": 2}]));
        let out = serde_json::to_string(&canonical_json(serde_json::Value::Object(m))).expect("serializes");
        assert_eq!(out, r#"{"alpha":[{"x":2,"y":1}],"zeta":{"a":2,"b":1}}"#);
    }
}
