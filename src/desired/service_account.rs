//! The collector's ServiceAccount. In IRSA mode it names the IAM role; with EKS Pod Identity the
//! role is bound by a pod identity association instead, so the account carries no annotation.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::effective::{EffRole, Effective, common_labels};
use crate::crd::IdentityMode;

/// Annotation the EKS pod identity webhook reads to inject web-identity credentials (IRSA).
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// ARN of the collector's role: the user's for an existing role, else the one mlobs creates.
pub fn role_arn(e: &Effective) -> String {
    match &e.identity.role {
        EffRole::Existing { arn } => arn.clone(),
        EffRole::Create { name } => format!("arn:{}:iam::{}:role/{}", e.partition, e.account_id, name),
    }
}

/// The ServiceAccount. `role_arn` overrides [`role_arn`] (e.g. the ARN IAM returned); it is
/// ignored with Pod Identity.
pub fn build(e: &Effective, role_arn_override: Option<&str>) -> ServiceAccount {
    let annotations = match e.identity.mode {
        IdentityMode::Irsa => {
            let arn = role_arn_override.map_or_else(|| role_arn(e), str::to_string);
            Some([(ROLE_ARN_ANNOTATION.to_string(), arn)].into())
        }
        IdentityMode::PodIdentity => None,
    };
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(e.identity.service_account.clone()),
            namespace: Some(e.collector_namespace.clone()),
            labels: Some(common_labels(e)),
            annotations,
            ..Default::default()
        },
        // k8sattributes and pod discovery call the API server with this account's token.
        automount_service_account_token: Some(true),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::effective::test_fixture;

    fn annotation(sa: &ServiceAccount) -> Option<String> {
        sa.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ROLE_ARN_ANNOTATION).cloned())
    }

    #[test]
    fn irsa_annotates_the_created_role_arn() {
        let e = test_fixture();
        let sa = build(&e, None);
        assert_eq!(
            annotation(&sa).as_deref(),
            Some("arn:aws:iam::123456789012:role/mlobs-prod-gpu-team-a-train")
        );
        assert_eq!(sa.metadata.name.as_deref(), Some("mlobs-train"));
        assert_eq!(sa.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(sa.metadata.labels, Some(common_labels(&e)));
        assert_eq!(sa.automount_service_account_token, Some(true));
    }

    #[test]
    fn irsa_uses_an_existing_role_or_the_given_arn() {
        let mut e = test_fixture();
        e.partition = "aws-us-gov".into();
        assert!(role_arn(&e).starts_with("arn:aws-us-gov:iam::123456789012:role/"));
        e.identity.role = EffRole::Existing {
            arn: "arn:aws:iam::111122223333:role/path/ours".into(),
        };
        assert_eq!(
            annotation(&build(&e, None)).as_deref(),
            Some("arn:aws:iam::111122223333:role/path/ours")
        );
        let given = "arn:aws:iam::111122223333:role/other";
        assert_eq!(annotation(&build(&e, Some(given))).as_deref(), Some(given));
    }

    #[test]
    fn pod_identity_has_no_role_annotation() {
        let mut e = test_fixture();
        e.identity.mode = IdentityMode::PodIdentity;
        let sa = build(&e, Some("arn:aws:iam::123456789012:role/x"));
        assert_eq!(sa.metadata.annotations, None);
        assert_eq!(sa.automount_service_account_token, Some(true));
    }
}
