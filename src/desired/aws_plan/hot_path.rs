//! The hot path in the AWS plan: the Kinesis data stream (KMS-encrypted with the pipeline's key,
//! capacity, retention, ownership tags) and Fluent Bit's own role, allowed `kinesis:PutRecords`
//! on that stream only (the `kinesis_streams` output calls nothing else) and the key's data key
//! through Kinesis only. Pure.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::{
    INLINE_POLICY_MAX_CHARS, KmsRef, PlanError, PodIdentityPlan, ROLE_NAME_MAX, RolePlan, check_name, check_tags,
    ownership_tags, role_arn, trust_policy_for,
};
use crate::crd::IdentityMode;
use crate::desired::destinations::dns_suffix;
use crate::desired::effective::{EffKms, Effective};
use crate::desired::hot_path::{
    Capacity, DEFAULT_FLUENT_BIT_IMAGE, DEFAULT_MEM_BUF_LIMIT_MB, DEFAULT_RETENTION_HOURS, EffHotPath, STREAM_NAME_MAX,
    child_name, derived_role_name,
};

/// Sid of Fluent Bit's statement on the stream.
pub const PUT_SID: &str = "HotPathPutRecords";
/// What the `kinesis_streams` output calls (PutRecords only, per Fluent Bit's documentation).
pub const PUT_ACTIONS: [&str; 1] = ["kinesis:PutRecords"];
/// Sid of Fluent Bit's statement on the pipeline's key.
pub const KMS_SID: &str = "HotPathStreamKeyViaKinesis";
/// SSE-KMS on a stream: Kinesis asks KMS for a data key on the producer's behalf.
pub const KMS_ACTIONS: [&str; 1] = ["kms:GenerateDataKey"];
/// The Fluent Bit role's inline policy.
pub const INLINE_POLICY_NAME: &str = "mlobs-hotpath";

/// The stream as mlobs creates (or adopts) it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamPlan {
    pub name: String,
    pub arn: String,
    pub region: String,
    /// Whether the name is mlobs' derived one.
    pub derived_name: bool,
    pub capacity: Capacity,
    pub retention_hours: i32,
    /// SSE-KMS key; None: unencrypted (`encryption.kms.disabled`).
    pub kms_key: Option<KmsRef>,
    pub tags: BTreeMap<String, String>,
}

/// The hot path's AWS side, in apply order: stream → role → (Pod Identity) association.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HotPathPlan {
    pub stream: StreamPlan,
    pub role: RolePlan,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<PodIdentityPlan>,
}

/// Fluent Bit's statements: PutRecords on the stream, and the key's data key through Kinesis.
pub fn statements(e: &Effective, h: &EffHotPath) -> Vec<Value> {
    let region = json!({"StringEquals": {"aws:RequestedRegion": e.region}});
    let mut out = vec![json!({
        "Sid": PUT_SID,
        "Effect": "Allow",
        "Action": PUT_ACTIONS,
        "Resource": [h.stream_arn(e)],
        "Condition": region,
    })];
    let via = json!({
        "aws:RequestedRegion": e.region,
        "kms:ViaService": format!("kinesis.{}.{}", e.region, dns_suffix(&e.partition)),
    });
    let key = match &e.kms {
        EffKms::Disabled => None,
        EffKms::Existing { key_arn } => Some((key_arn.clone(), json!({"StringEquals": via}))),
        // The created key's id is unknown here: the account's keys, narrowed to the pipeline's alias.
        EffKms::Create { alias, .. } => Some((
            format!("arn:{}:kms:{}:{}:key/*", e.partition, e.region, e.account_id),
            json!({"StringEquals": via, "ForAnyValue:StringEquals": {"kms:ResourceAliases": [alias]}}),
        )),
    };
    if let Some((resource, condition)) = key {
        out.push(json!({
            "Sid": KMS_SID,
            "Effect": "Allow",
            "Action": KMS_ACTIONS,
            "Resource": [resource],
            "Condition": condition,
        }));
    }
    out
}

pub(super) fn plan(e: &Effective, h: &EffHotPath, kms: &Option<KmsRef>) -> Result<HotPathPlan, PlanError> {
    check_name(
        "spec.hotPath.stream",
        &h.stream,
        STREAM_NAME_MAX,
        |c| c.is_ascii_alphanumeric() || "_.-".contains(c),
        "[a-zA-Z0-9_.-]",
    )?;
    check_name(
        "spec.hotPath (Fluent Bit role name)",
        &h.role_name,
        ROLE_NAME_MAX,
        |c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c),
        "[A-Za-z0-9+=,.@_-]",
    )?;
    let tags = ownership_tags(e);
    check_tags("spec.hotPath (stream tags)", &tags)?;
    let inline = super::super::canonical_json(json!({"Version": "2012-10-17", "Statement": statements(e, h)}));
    let len = inline.to_string().chars().count();
    if len > INLINE_POLICY_MAX_CHARS {
        return Err(PlanError::TooLong {
            field: "spec.hotPath: inline policy mlobs-hotpath".into(),
            len,
            max: INLINE_POLICY_MAX_CHARS,
        });
    }
    let sa = child_name(e);
    let arn = role_arn(&e.partition, &e.account_id, &h.role_name);
    let role = RolePlan::Create {
        name: h.role_name.clone(),
        arn: arn.clone(),
        path: "/".into(),
        trust_policy: super::super::canonical_json(trust_policy_for(e, &sa, "HotPathServiceAccount")?),
        inline_policy_name: INLINE_POLICY_NAME.into(),
        inline_policy: inline,
        permissions_boundary: e.identity.permissions_boundary_arn.clone(),
        tags: tags.clone(),
    };
    let pod_identity = (e.identity.mode == IdentityMode::PodIdentity).then(|| PodIdentityPlan {
        cluster_name: e.cluster_name.clone(),
        namespace: e.collector_namespace.clone(),
        service_account: sa,
        role_arn: arn,
    });
    Ok(HotPathPlan {
        stream: StreamPlan {
            name: h.stream.clone(),
            arn: h.stream_arn(e),
            region: e.region.clone(),
            derived_name: h.derived_name,
            capacity: h.capacity,
            retention_hours: h.retention_hours,
            kms_key: kms.clone(),
            tags,
        },
        role,
        pod_identity,
    })
}

/// The plan of a hot path that was turned off, for its deletion: the recorded stream (by the
/// name in its ARN) and the derived Fluent Bit role. None for an ARN without a stream name.
pub fn retired(e: &Effective, stream_arn: &str) -> Option<HotPathPlan> {
    let name = stream_arn.split_once(":stream/")?.1;
    let h = EffHotPath {
        stream: name.to_string(),
        derived_name: false,
        capacity: Capacity::OnDemand,
        retention_hours: DEFAULT_RETENTION_HOURS,
        patterns: vec![],
        mem_buf_limit_mb: DEFAULT_MEM_BUF_LIMIT_MB,
        image: DEFAULT_FLUENT_BIT_IMAGE.into(),
        role_name: derived_role_name(&e.cluster_name, &e.namespace, &e.name),
    };
    plan(e, &h, &None).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::aws_plan::build;
    use crate::desired::hot_path::test_hot_path;

    fn trust_sub(plan: &HotPathPlan) -> String {
        let RolePlan::Create { trust_policy, .. } = &plan.role else {
            panic!("a created role")
        };
        trust_policy.to_string()
    }

    #[test]
    fn fluent_bit_s_role_trusts_only_its_own_service_account() {
        let e = test_hot_path();
        let plan = build(&e).expect("plan").hot_path.expect("hot path");
        let trust = trust_sub(&plan);
        assert!(
            trust.contains("system:serviceaccount:team-a:mlobs-train-hotpath"),
            "{trust}"
        );
        assert!(!trust.contains("system:serviceaccount:team-a:mlobs-train\""), "{trust}");
        assert!(plan.pod_identity.is_none(), "IRSA needs no association");
        assert_eq!(
            plan.role.arn(),
            "arn:aws:iam::123456789012:role/mlobs-prod-gpu-team-a-train-hotpath"
        );
    }

    #[test]
    fn with_pod_identity_fluent_bit_gets_its_own_association() {
        let mut e = test_hot_path();
        e.identity.mode = IdentityMode::PodIdentity;
        e.identity.oidc_provider_arn = None;
        let plan = build(&e).expect("plan");
        let hot = plan.hot_path.expect("hot path");
        let pi = hot.pod_identity.clone().expect("an association");
        assert_eq!(
            (pi.namespace.as_str(), pi.service_account.as_str()),
            ("team-a", "mlobs-train-hotpath")
        );
        assert_eq!(pi.role_arn, hot.role.arn());
        assert_ne!(Some(&pi), plan.pod_identity.as_ref(), "not the collector's association");
        assert!(trust_sub(&hot).contains("\"aws:RequestTag/kubernetes-service-account\":\"mlobs-train-hotpath\""));
    }

    #[test]
    fn a_retired_stream_is_found_by_the_name_in_its_arn() {
        let mut e = test_hot_path();
        e.destinations.hot_path = None;
        let r = retired(&e, "arn:aws:kinesis:us-east-1:123456789012:stream/custom.name_1").expect("a plan");
        assert_eq!(r.stream.name, "custom.name_1");
        assert_eq!(
            r.role.arn(),
            "arn:aws:iam::123456789012:role/mlobs-prod-gpu-team-a-train-hotpath"
        );
        assert!(retired(&e, "arn:aws:s3:::bucket").is_none());
    }
}
