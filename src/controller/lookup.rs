//! Dereference-step helpers, pure: which policy governs a pipeline, the fleet its collector runs
//! on, whether the estimate breaks the budget.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use crate::crd::{BudgetAction, GpuTelemetryPolicy, MLObservabilityPipeline};
use crate::desired::Desired;
use crate::desired::cost::{self, Estimate, Fleet};

/// Which policy governs a pipeline, as the API server sees it now.
#[derive(Debug, Clone)]
pub enum Governing {
    None,
    One(Arc<GpuTelemetryPolicy>),
    /// `policyRef` names a policy that does not exist.
    NotFound(String),
    /// No `policyRef` and more than one policy says `default: true`.
    DefaultConflict(Vec<String>),
}

/// The governing policy among `policies`.
pub fn governing(p: &MLObservabilityPipeline, policies: &[Arc<GpuTelemetryPolicy>]) -> Governing {
    governing_ref(p.spec.policy_ref.as_deref(), policies)
}

/// The policy governing a pipeline whose `spec.policyRef` is `policy_ref`.
pub fn governing_ref(policy_ref: Option<&str>, policies: &[Arc<GpuTelemetryPolicy>]) -> Governing {
    match policy_ref {
        Some(name) => policies
            .iter()
            .find(|x| x.metadata.name.as_deref() == Some(name))
            .map_or_else(|| Governing::NotFound(name.to_string()), |x| Governing::One(x.clone())),
        None => {
            let mut defaults: Vec<&Arc<GpuTelemetryPolicy>> =
                policies.iter().filter(|x| x.spec.default == Some(true)).collect();
            match defaults.len() {
                0 => Governing::None,
                1 => Governing::One(defaults.remove(0).clone()),
                _ => {
                    let mut names: Vec<String> = defaults.iter().map(|x| x.name_any()).collect();
                    names.sort();
                    Governing::DefaultConflict(names)
                }
            }
        }
    }
}

/// The key id inside a key ARN (`arn:aws:kms:r:a:key/<id>`).
pub fn key_id_of(arn: &str) -> Option<String> {
    arn.rsplit_once("key/").map(|(_, id)| id.to_string())
}

/// The budget action and message when the estimate for `nodes` GPU nodes exceeds the policy's budget.
pub fn budget_exceeded(d: &Desired, e: &Estimate, nodes: usize) -> Option<(BudgetAction, String)> {
    let b = d.effective.budget.as_ref()?;
    if e.total_usd <= b.monthly_usd {
        return None;
    }
    let policy = d.effective.policy.as_ref().map_or("", |(n, _)| n.as_str());
    Some((
        b.action,
        format!(
            "estimated ${:.2}/month for {nodes} GPU nodes exceeds the budget of ${:.2}/month [policy {policy} rule budget.monthlyUSD]",
            e.total_usd, b.monthly_usd
        ),
    ))
}

/// The fleet of a live cluster: the most common instance type among the matching nodes.
pub fn fleet(nodes: &[Node]) -> Fleet {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for n in nodes {
        if let Some(t) = n.labels().get("node.kubernetes.io/instance-type") {
            *counts.entry(t.as_str()).or_default() += 1;
        }
    }
    let instance_type = counts
        .iter()
        .max_by_key(|(_, c)| **c)
        .map_or("p4d.24xlarge", |(t, _)| t)
        .to_string();
    let gpus_per_node = if cost::instance_type(&instance_type).is_some() {
        None
    } else {
        // An instance type mlobs does not know: GPU feature discovery's count label, else 8.
        Some(
            nodes
                .iter()
                .find_map(|n| n.labels().get("nvidia.com/gpu.count")?.parse().ok())
                .unwrap_or(8),
        )
    };
    Fleet {
        nodes: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
        instance_type,
        gpus_per_node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Context;
    use serde_json::json;

    fn policy(name: &str, default: bool, budget: Option<serde_json::Value>) -> Arc<GpuTelemetryPolicy> {
        let mut spec = json!({"default": default});
        if let Some(b) = budget {
            spec["budget"] = b;
        }
        Arc::new(
            serde_json::from_value(json!({"apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
                "metadata": {"name": name}, "spec": spec}))
            .expect("policy"),
        )
    }

    fn pipeline(policy_ref: Option<&str>) -> MLObservabilityPipeline {
        let mut spec = json!({"clusterName": "c", "region": "us-east-1",
            "identity": {"mode": "IRSA", "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/X"}});
        if let Some(r) = policy_ref {
            spec["policyRef"] = json!(r);
        }
        serde_json::from_value(
            json!({"apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "metadata": {"name": "p", "namespace": "ns"}, "spec": spec}),
        )
        .expect("pipeline")
    }

    fn node(instance_type: &str) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": instance_type, "labels": {"node.kubernetes.io/instance-type": instance_type}}}),
        )
        .expect("node")
    }

    #[test]
    fn the_governing_policy_is_the_named_one_else_the_single_default() {
        let all = vec![policy("a", true, None), policy("b", false, None)];
        assert!(matches!(governing(&pipeline(None), &all), Governing::One(p) if p.name_any() == "a"));
        assert!(matches!(governing(&pipeline(Some("b")), &all), Governing::One(p) if p.name_any() == "b"));
        assert!(matches!(governing(&pipeline(Some("zz")), &all), Governing::NotFound(n) if n == "zz"));
        assert!(matches!(governing(&pipeline(None), &all[1..]), Governing::None));
        let two = vec![policy("y", true, None), policy("x", true, None)];
        assert!(matches!(governing(&pipeline(None), &two), Governing::DefaultConflict(n) if n == ["x", "y"]));
        // A named policy wins over any number of defaults.
        assert!(matches!(governing(&pipeline(Some("x")), &two), Governing::One(p) if p.name_any() == "x"));
    }

    #[test]
    fn the_fleet_is_the_most_common_instance_type_and_unknown_types_fall_back_to_a_gpu_count() {
        let f = fleet(&[node("p4d.24xlarge"), node("g5.xlarge"), node("p4d.24xlarge")]);
        assert_eq!(
            (f.nodes, f.instance_type.as_str(), f.gpus_per_node),
            (3, "p4d.24xlarge", None)
        );
        let f = fleet(&[node("x9.mystery")]);
        assert_eq!((f.instance_type.as_str(), f.gpus_per_node), ("x9.mystery", Some(8)));
        assert_eq!(fleet(&[]).nodes, 0);
    }

    #[test]
    fn a_budget_is_exceeded_only_above_its_limit_with_the_policy_action() {
        for (action, want) in [("Deny", BudgetAction::Deny), ("Warn", BudgetAction::Warn)] {
            let pol = policy("cap", true, Some(json!({"monthlyUSD": 100.0, "action": action})));
            let d = crate::desired::build(&pipeline(None), Some(&pol), &Context::default()).expect("build");
            let fleet_of = |n| Fleet {
                nodes: n,
                instance_type: "p4d.24xlarge".into(),
                gpus_per_node: None,
            };
            let small = cost::estimate(&d.effective, &fleet_of(1), &Default::default(), None).expect("estimate");
            let large = cost::estimate(&d.effective, &fleet_of(20), &Default::default(), None).expect("estimate");
            assert!(
                small.total_usd <= 100.0 && large.total_usd > 100.0,
                "{} {}",
                small.total_usd,
                large.total_usd
            );
            assert_eq!(budget_exceeded(&d, &small, 1), None);
            let (got, msg) = budget_exceeded(&d, &large, 20).expect("exceeded");
            assert_eq!(got, want);
            assert!(msg.contains("budget.monthlyUSD") && msg.contains("policy cap"), "{msg}");
        }
    }

    #[test]
    fn key_ids_come_from_key_arns() {
        assert_eq!(key_id_of("arn:aws:kms:us-east-1:1:key/abc-1").as_deref(), Some("abc-1"));
        assert_eq!(key_id_of("alias/x"), None);
    }
}
