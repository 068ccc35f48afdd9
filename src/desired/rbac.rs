//! Read-only cluster RBAC for the collector: k8sattributes and Prometheus pod discovery watch pods,
//! namespaces, nodes and replicasets. Cluster-scoped, so the objects cannot carry an owner
//! reference to the namespaced pipeline: they are pruned by the common labels.

use super::effective::{Effective, common_labels};
use crate::conventions;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const VERBS: [&str; 3] = ["get", "list", "watch"];

/// `mlobs-collector-<namespace>-<name>`, unique per pipeline (see [`conventions::cluster_role_name`]).
pub fn name(e: &Effective) -> String {
    conventions::cluster_role_name(&e.namespace, &e.name)
}

fn rule(group: &str, resources: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: VERBS.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

/// The ClusterRole and its binding to the pipeline's ServiceAccount (both named [`name`]).
pub fn build(e: &Effective) -> (ClusterRole, ClusterRoleBinding) {
    let metadata = ObjectMeta {
        name: Some(name(e)),
        labels: Some(common_labels(e)),
        ..Default::default()
    };
    let role = ClusterRole {
        metadata: metadata.clone(),
        rules: Some(vec![
            rule("", &["namespaces", "nodes", "pods"]),
            rule("apps", &["replicasets"]),
        ]),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: name(e),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: e.identity.service_account.clone(),
            namespace: Some(e.collector_namespace.clone()),
            ..Default::default()
        }]),
    };
    (role, binding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::effective::test_fixture;

    #[test]
    fn role_is_read_only_without_wildcards() {
        let (role, _) = build(&test_fixture());
        let rules = role.rules.unwrap_or_default();
        assert_eq!(rules.len(), 2);
        for r in &rules {
            assert_eq!(r.verbs, ["get", "list", "watch"]);
            let names = r
                .api_groups
                .iter()
                .flatten()
                .chain(r.resources.iter().flatten())
                .chain(&r.verbs);
            assert!(names.clone().all(|n| !n.contains('*')), "wildcard in {r:?}");
            assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
        }
        let core = rules
            .iter()
            .find(|r| r.api_groups.as_deref() == Some(&["".to_string()]));
        assert_eq!(
            core.and_then(|r| r.resources.clone()),
            Some(vec!["namespaces".into(), "nodes".into(), "pods".into()])
        );
        let apps = rules
            .iter()
            .find(|r| r.api_groups.as_deref() == Some(&["apps".to_string()]));
        assert_eq!(apps.and_then(|r| r.resources.clone()), Some(vec!["replicasets".into()]));
    }

    #[test]
    fn binding_subject_is_exactly_the_pipeline_service_account() {
        let e = test_fixture();
        let (role, binding) = build(&e);
        assert_eq!(role.metadata.name.as_deref(), Some("mlobs-collector-team-a-train"));
        assert_eq!(binding.role_ref.name, "mlobs-collector-team-a-train");
        assert_eq!(
            (binding.role_ref.kind.as_str(), binding.role_ref.api_group.as_str()),
            ("ClusterRole", "rbac.authorization.k8s.io")
        );
        let subject = Subject {
            kind: "ServiceAccount".into(),
            name: "mlobs-train".into(),
            namespace: Some("team-a".into()),
            api_group: None,
        };
        assert_eq!(binding.subjects, Some(vec![subject]));
        assert_eq!(role.metadata.labels, Some(common_labels(&e)));
        assert_eq!(binding.metadata.labels, Some(common_labels(&e)));
    }

    #[test]
    fn long_names_are_cut_to_253_and_stay_distinct() {
        let mut a = test_fixture();
        a.name = "x".repeat(240);
        let mut b = a.clone();
        b.name.push('y');
        assert!(name(&a).len() <= 253 && name(&b).len() <= 253);
        assert_ne!(name(&a), name(&b));
        assert!(name(&a).starts_with("mlobs-collector-team-a-xxx"));
        assert_eq!(name(&a), name(&a.clone()));
    }
}
