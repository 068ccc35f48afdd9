//! The AWS side of a pipeline as a typed, printable plan: KMS key, log groups, the archive bucket,
//! the collector's role and (Pod Identity) association. Pure: `mlobs plan` prints it and the controller applies it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::effective::{EffKms, EffLogGroup, EffRole, Effective};
use crate::crd::{IdentityMode, LogGroupClass};

pub mod alerts;
pub mod archive;
pub mod destinations;
pub mod hot_path;

pub const LOG_GROUP_NAME_MAX: usize = 512;
pub const ROLE_NAME_MAX: usize = 64;
pub const TAGS_MAX: usize = 50;
/// IAM counts all inline policies of a role together, whitespace excluded; we have one.
pub const INLINE_POLICY_MAX_CHARS: usize = 10_240;
pub const INLINE_POLICY_NAME: &str = "mlobs-collector";
/// Exactly what the collector's exporters call; awsemf writes metrics as log events.
pub const COLLECTOR_ACTIONS: [&str; 3] = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"];
const KMS_LOGS_ACTIONS: [&str; 5] = [
    "kms:Encrypt*",
    "kms:Decrypt*",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:Describe*",
];

/// A limit or required value the effective spec breaks. `field` is the pipeline spec path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{field}: {len} characters, more than the limit of {max}")]
    TooLong { field: String, len: usize, max: usize },
    #[error("{field}: {value:?} contains {bad:?}; allowed: {allowed}")]
    BadCharacter {
        field: String,
        value: String,
        bad: char,
        allowed: &'static str,
    },
    #[error("{field}: {count} tags, more than the limit of {max}")]
    TooManyTags { field: String, count: usize, max: usize },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl PlanError {
    /// CamelCase reason for conditions, events and metric labels.
    pub fn reason(&self) -> crate::crd::reason::Reason {
        use crate::crd::reason::Reason;
        match self {
            PlanError::TooLong { .. } => Reason::NameTooLong,
            PlanError::BadCharacter { .. } => Reason::InvalidName,
            PlanError::TooManyTags { .. } => Reason::TooManyTags,
            PlanError::Invalid { .. } => Reason::InvalidAwsPlan,
        }
    }
}

/// The KMS key both log groups are encrypted with.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all_fields = "camelCase")]
pub enum KmsKeyPlan {
    Create {
        description: String,
        alias: String,
        rotation: bool,
        deletion_window_days: i32,
        tags: BTreeMap<String, String>,
        policy: Value,
    },
    /// mlobs never edits a user's key policy; it tells the user which statement to add.
    Existing { key_arn: String, required_statement: Value },
}

/// How a log group names its key. The created key's ARN is unknown until apply, so refer to it by alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum KmsRef {
    Created { alias: String },
    Existing { arn: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGroupPlan {
    pub name: String,
    pub arn: String,
    pub kms_key: Option<KmsRef>,
    pub retention_days: i32,
    pub class: LogGroupClass,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all_fields = "camelCase")]
// Built once per reconcile and never stored in bulk: boxing the big variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum RolePlan {
    Create {
        name: String,
        arn: String,
        path: String,
        trust_policy: Value,
        inline_policy_name: String,
        inline_policy: Value,
        permissions_boundary: Option<String>,
        tags: BTreeMap<String, String>,
    },
    Existing {
        arn: String,
    },
}

impl RolePlan {
    pub fn arn(&self) -> &str {
        match self {
            RolePlan::Create { arn, .. } | RolePlan::Existing { arn } => arn,
        }
    }
}

/// A CloudWatch dashboard as PutDashboard takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardPlan {
    pub name: String,
    pub arn: String,
    /// Canonical JSON (sorted keys), compared with GetDashboard's body for drift.
    pub body: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodIdentityPlan {
    pub cluster_name: String,
    pub namespace: String,
    pub service_account: String,
    pub role_arn: String,
}

/// Everything AWS-side, in apply order: KMS → log groups → archive bucket → IAM (the role's
/// policy names the bucket) → pod identity association.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsPlan {
    pub kms: Option<KmsKeyPlan>,
    pub log_groups: Vec<LogGroupPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<archive::ArchiveBucketPlan>,
    /// The hot path's stream and Fluent Bit role (created after the archive, before the collector's role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_path: Option<hot_path::HotPathPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amp_workspace: Option<destinations::AmpWorkspacePlan>,
    /// The SNS topic and CloudWatch alarms, when alerts are enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<alerts::AlertsPlan>,
    /// The CloudWatch dashboard, when `spec.dashboards.cloudwatch` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<DashboardPlan>,
    pub role: RolePlan,
    pub pod_identity: Option<PodIdentityPlan>,
}

pub fn role_arn(partition: &str, account: &str, name: &str) -> String {
    format!("arn:{partition}:iam::{account}:role/{name}")
}

pub fn log_group_arn(e: &Effective, name: &str) -> String {
    format!(
        "arn:{}:logs:{}:{}:log-group:{name}",
        e.partition, e.region, e.account_id
    )
}

/// `mlobs.io/cluster`, `mlobs.io/pipeline` and, for objects from the API server, `mlobs.io/uid`.
pub fn ownership_tags(e: &Effective) -> BTreeMap<String, String> {
    crate::conventions::ownership_tags(&e.cluster_name, &e.namespace, &e.name, e.uid.as_deref())
}

/// Sorts the keys of every policy document so the plan prints the same in every build.
fn canonicalize(plan: &mut AwsPlan) {
    use super::canonical_json as c;
    match &mut plan.kms {
        Some(KmsKeyPlan::Create { policy, .. }) => *policy = c(std::mem::take(policy)),
        Some(KmsKeyPlan::Existing { required_statement, .. }) => {
            *required_statement = c(std::mem::take(required_statement))
        }
        None => {}
    }
    if let RolePlan::Create {
        trust_policy,
        inline_policy,
        ..
    } = &mut plan.role
    {
        *trust_policy = c(std::mem::take(trust_policy));
        *inline_policy = c(std::mem::take(inline_policy));
    }
    if let Some(a) = &mut plan.archive {
        a.bucket_policy = c(std::mem::take(&mut a.bucket_policy));
    }
}

pub fn build(e: &Effective) -> Result<AwsPlan, PlanError> {
    let kms_ref = match &e.kms {
        EffKms::Create { alias, .. } => Some(KmsRef::Created { alias: alias.clone() }),
        EffKms::Existing { key_arn } => Some(KmsRef::Existing { arn: key_arn.clone() }),
        EffKms::Disabled => None,
    };
    let mut log_groups = Vec::new();
    if e.logs.enabled {
        log_groups.push(log_group(e, &e.logs.group, "spec.logs.logGroup", &kms_ref)?);
    }
    if e.metrics.dcgm_enabled {
        log_groups.push(log_group(
            e,
            &e.metrics.group,
            "spec.metrics.cloudwatch.logGroup",
            &kms_ref,
        )?);
    }
    if let [a, b] = log_groups.as_slice()
        && a.name == b.name
    {
        // One group for both would mix EMF events into pod logs and double-count ingestion.
        return Err(invalid(
            "spec.metrics.cloudwatch.logGroup.name",
            format!("{:?} is also the logs group", a.name),
        ));
    }
    if log_groups.is_empty() {
        // A role with an empty Resource list is invalid IAM, and a collector with nowhere to write is a mistake.
        return Err(invalid(
            "spec",
            "neither logs nor DCGM metrics are enabled: nothing to write to CloudWatch",
        ));
    }
    let group_arns: Vec<String> = log_groups.iter().map(|g| g.arn.clone()).collect();
    let archive = match &e.destinations.archive {
        Some(a) => Some(archive::bucket(e, a, &kms_ref)?),
        None => None,
    };
    let hot_path = match &e.destinations.hot_path {
        Some(h) => Some(hot_path::plan(e, h, &kms_ref)?),
        None => None,
    };
    let alerts = e.alerts.as_ref().map(|a| alerts::plan(e, a, &kms_ref));
    let dashboard = e.dashboards.cloudwatch.then(|| {
        let name = crate::desired::dashboards::dashboard_name(&e.cluster_name, &e.namespace, &e.name);
        DashboardPlan {
            arn: format!("arn:{}:cloudwatch::{}:dashboard/{name}", e.partition, e.account_id),
            name,
            body: crate::desired::dashboards::cloudwatch::body(e),
        }
    });
    let kms = match &e.kms {
        EffKms::Disabled => None,
        EffKms::Existing { key_arn } => Some(KmsKeyPlan::Existing {
            key_arn: key_arn.clone(),
            required_statement: logs_key_statement(e, &group_arns),
        }),
        EffKms::Create {
            alias,
            rotation,
            deletion_window_days,
        } => {
            check_alias(alias)?;
            if !(7..=30).contains(deletion_window_days) {
                return Err(invalid(
                    "spec.encryption.kms.create.deletionWindowInDays",
                    format!("{deletion_window_days} is outside 7–30 days"),
                ));
            }
            Some(KmsKeyPlan::Create {
                description: format!("mlobs: logs of {} in {}", e.pipeline_id(), e.cluster_name),
                alias: alias.clone(),
                rotation: *rotation,
                deletion_window_days: *deletion_window_days,
                tags: ownership_tags(e),
                policy: key_policy(e, &group_arns),
            })
        }
    };
    let role = match &e.identity.role {
        EffRole::Existing { arn } => RolePlan::Existing { arn: arn.clone() },
        EffRole::Create { name } => create_role(e, name, &group_arns)?,
    };
    let pod_identity = (e.identity.mode == IdentityMode::PodIdentity).then(|| PodIdentityPlan {
        cluster_name: e.cluster_name.clone(),
        namespace: e.collector_namespace.clone(),
        service_account: e.identity.service_account.clone(),
        role_arn: role.arn().to_string(),
    });
    let amp_workspace = destinations::amp_workspace(e, &kms_ref);
    let mut plan = AwsPlan {
        kms,
        log_groups,
        archive,
        hot_path,
        amp_workspace,
        alerts,
        dashboard,
        role,
        pod_identity,
    };
    canonicalize(&mut plan);
    Ok(plan)
}

fn invalid(field: &str, message: impl Into<String>) -> PlanError {
    PlanError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Length in characters (AWS limits count characters), then the allowed character set.
fn check_name(
    field: &str,
    value: &str,
    max: usize,
    ok: fn(char) -> bool,
    allowed: &'static str,
) -> Result<(), PlanError> {
    let len = value.chars().count();
    if len == 0 {
        return Err(invalid(field, "must not be empty"));
    }
    if len > max {
        return Err(PlanError::TooLong {
            field: field.into(),
            len,
            max,
        });
    }
    match value.chars().find(|c| !ok(*c)) {
        Some(bad) => Err(PlanError::BadCharacter {
            field: field.into(),
            value: value.into(),
            bad,
            allowed,
        }),
        None => Ok(()),
    }
}

fn check_alias(alias: &str) -> Result<(), PlanError> {
    const FIELD: &str = "spec.encryption.kms.create.alias";
    check_name(
        FIELD,
        alias,
        256,
        |c| c.is_ascii_alphanumeric() || "/_-".contains(c),
        "[A-Za-z0-9/_-]",
    )?;
    if !alias.starts_with("alias/") || alias.starts_with("alias/aws/") || alias.len() == "alias/".len() {
        return Err(invalid(
            FIELD,
            format!("{alias:?} must be alias/<name> and not under alias/aws/"),
        ));
    }
    Ok(())
}

fn check_tags(field: &str, tags: &BTreeMap<String, String>) -> Result<(), PlanError> {
    if tags.len() > TAGS_MAX {
        return Err(PlanError::TooManyTags {
            field: field.into(),
            count: tags.len(),
            max: TAGS_MAX,
        });
    }
    Ok(())
}

fn log_group(e: &Effective, g: &EffLogGroup, field: &str, kms: &Option<KmsRef>) -> Result<LogGroupPlan, PlanError> {
    check_name(
        &format!("{field}.name"),
        &g.name,
        LOG_GROUP_NAME_MAX,
        |c| c.is_ascii_alphanumeric() || "_-/.#".contains(c),
        "[A-Za-z0-9_-/.#]",
    )?;
    let mut tags = g.tags.clone();
    tags.extend(ownership_tags(e));
    check_tags(&format!("{field}.tags"), &tags)?;
    Ok(LogGroupPlan {
        name: g.name.clone(),
        arn: log_group_arn(e, &g.name),
        kms_key: kms.clone(),
        retention_days: g.retention_days,
        class: g.class,
        tags,
    })
}

/// The statement CloudWatch Logs needs in the key policy, limited to our log groups' ARNs.
fn logs_key_statement(e: &Effective, group_arns: &[String]) -> Value {
    json!({
        "Sid": "CloudWatchLogs",
        "Effect": "Allow",
        "Principal": { "Service": format!("logs.{}.amazonaws.com", e.region) },
        "Action": KMS_LOGS_ACTIONS,
        // In a key policy "*" means "this key"; the encryption context condition narrows it to our groups.
        "Resource": "*",
        "Condition": { "ArnLike": { "kms:EncryptionContext:aws:logs:arn": group_arns } },
    })
}

fn key_policy(e: &Effective, group_arns: &[String]) -> Value {
    let mut policy = json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AccountRoot",
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:{}:iam::{}:root", e.partition, e.account_id) },
                "Action": "kms:*",
                // Key policy: "*" is this key (the only allowed form). Without this statement the key
                // becomes unmanageable by IAM in the account.
                "Resource": "*",
            },
            logs_key_statement(e, group_arns),
        ],
    });
    if e.destinations.archive.is_some()
        && let Some(statements) = policy["Statement"].as_array_mut()
    {
        let role = match &e.identity.role {
            EffRole::Create { name } => role_arn(&e.partition, &e.account_id, name),
            EffRole::Existing { arn } => arn.clone(),
        };
        statements.push(archive::key_statement(e, &role));
    }
    if e.alerts
        .as_ref()
        .is_some_and(|a| matches!(a.topic, crate::desired::alerts::EffTopic::Create { .. }))
        && let Some(statements) = policy["Statement"].as_array_mut()
    {
        statements.push(alerts::key_statement(e));
    }
    policy
}

fn trust_policy(e: &Effective) -> Result<Value, PlanError> {
    trust_policy_for(e, &e.identity.service_account, "CollectorServiceAccount")
}

/// The trust policy of a role for one ServiceAccount in the collector's namespace (IRSA or Pod Identity).
pub(crate) fn trust_policy_for(e: &Effective, sa: &str, sid: &str) -> Result<Value, PlanError> {
    let ns = &e.collector_namespace;
    let statement = match e.identity.mode {
        IdentityMode::Irsa => {
            const FIELD: &str = "spec.identity.oidcProviderArn";
            let provider = e
                .identity
                .oidc_provider_arn
                .as_deref()
                .ok_or_else(|| invalid(FIELD, "required for IRSA"))?;
            let issuer = provider
                .split_once(":oidc-provider/")
                .map(|(_, host)| host)
                .filter(|h| !h.is_empty())
                .ok_or_else(|| invalid(FIELD, format!("{provider:?} is not an IAM OIDC provider ARN")))?;
            json!({
                "Sid": sid,
                "Effect": "Allow",
                "Principal": { "Federated": provider },
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": { "StringEquals": {
                    format!("{issuer}:sub"): format!("system:serviceaccount:{ns}:{sa}"),
                    format!("{issuer}:aud"): "sts.amazonaws.com",
                } },
            })
        }
        // EKS Pod Identity passes these session tags; matching them limits the role to one SA of one cluster.
        IdentityMode::PodIdentity => json!({
            "Sid": sid,
            "Effect": "Allow",
            "Principal": { "Service": "pods.eks.amazonaws.com" },
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": { "StringEquals": {
                "aws:RequestTag/eks-cluster-name": e.cluster_name,
                "aws:RequestTag/kubernetes-namespace": ns,
                "aws:RequestTag/kubernetes-service-account": sa,
            } },
        }),
    };
    Ok(json!({ "Version": "2012-10-17", "Statement": [statement] }))
}

fn inline_policy(e: &Effective, group_arns: &[String]) -> Value {
    let mut string_equals = BTreeMap::from([("aws:RequestedRegion".to_string(), e.region.clone())]);
    if let Some(vpc) = &e.identity.source_vpc {
        string_equals.insert("aws:SourceVpc".into(), vpc.clone());
    }
    let condition = json!({ "StringEquals": string_equals });
    // Streams live under the group: `<group ARN>:*` is the narrowest resource the three actions take.
    let resources: Vec<String> = group_arns.iter().map(|a| format!("{a}:*")).collect();
    let mut statements = vec![json!({
        "Sid": "WriteOwnLogGroups",
        "Effect": "Allow",
        "Action": COLLECTOR_ACTIONS,
        "Resource": resources,
        "Condition": condition,
    })];
    statements.extend(destinations::statements(e, &condition));
    json!({ "Version": "2012-10-17", "Statement": statements })
}

fn create_role(e: &Effective, name: &str, group_arns: &[String]) -> Result<RolePlan, PlanError> {
    check_name(
        "spec.identity.roleName",
        name,
        ROLE_NAME_MAX,
        |c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c),
        "[A-Za-z0-9+=,.@_-]",
    )?;
    let inline = inline_policy(e, group_arns);
    let len = inline.to_string().chars().count();
    if len > INLINE_POLICY_MAX_CHARS {
        return Err(PlanError::TooLong {
            // Made of the log group ARNs, the region and sourceVpc; the role carries it.
            field: "spec.identity: inline policy mlobs-collector".into(),
            len,
            max: INLINE_POLICY_MAX_CHARS,
        });
    }
    let tags = ownership_tags(e);
    check_tags("spec.identity.roleName (role tags)", &tags)?;
    Ok(RolePlan::Create {
        name: name.to_string(),
        arn: role_arn(&e.partition, &e.account_id, name),
        path: "/".into(),
        trust_policy: trust_policy(e)?,
        inline_policy_name: INLINE_POLICY_NAME.into(),
        inline_policy: inline,
        permissions_boundary: e.identity.permissions_boundary_arn.clone(),
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::effective::test_fixture;

    const GROUPS: [&str; 2] = [
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/prod-gpu/team-a/train/logs",
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/prod-gpu/team-a/train/metrics",
    ];

    fn role_policies(plan: &AwsPlan) -> (Value, Value) {
        match &plan.role {
            RolePlan::Create {
                trust_policy,
                inline_policy,
                ..
            } => (trust_policy.clone(), inline_policy.clone()),
            RolePlan::Existing { .. } => panic!("fixture creates its role"),
        }
    }

    fn pod_identity_fixture() -> Effective {
        let mut e = test_fixture();
        e.identity.mode = IdentityMode::PodIdentity;
        e.identity.oidc_provider_arn = None;
        e
    }

    /// Fails on any "*" resource or Not* element anywhere in the document.
    fn assert_least_privilege(v: &Value) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    assert!(
                        !["NotAction", "NotResource", "NotPrincipal"].contains(&k.as_str()),
                        "{k} in {v}"
                    );
                    if k == "Resource" {
                        let all: Vec<&Value> = child.as_array().map(|a| a.iter().collect()).unwrap_or(vec![child]);
                        assert!(
                            all.iter()
                                .all(|r| r.as_str().is_some_and(|s| s != "*" && s.starts_with("arn:"))),
                            "{v}"
                        );
                    }
                    assert_least_privilege(child);
                }
            }
            Value::Array(a) => a.iter().for_each(assert_least_privilege),
            _ => {}
        }
    }

    #[test]
    fn key_policy_keeps_account_root_and_limits_logs_to_exactly_our_group_arns() {
        let Some(KmsKeyPlan::Create {
            policy,
            description,
            tags,
            ..
        }) = build(&test_fixture()).unwrap().kms
        else {
            panic!("fixture creates a key")
        };
        assert_eq!(description, "mlobs: logs of team-a/train in prod-gpu");
        assert_eq!(tags["mlobs.io/pipeline"], "team-a/train");
        assert_eq!(policy["Version"], "2012-10-17");
        let root = &policy["Statement"][0];
        assert_eq!(root["Sid"], "AccountRoot");
        assert_eq!(root["Principal"]["AWS"], "arn:aws:iam::123456789012:root");
        assert_eq!(
            (root["Action"].as_str(), root["Resource"].as_str()),
            (Some("kms:*"), Some("*"))
        );
        let logs = &policy["Statement"][1];
        assert_eq!(logs["Principal"]["Service"], "logs.us-east-1.amazonaws.com");
        assert_eq!(logs["Action"], json!(KMS_LOGS_ACTIONS));
        assert_eq!(
            logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"],
            json!(GROUPS)
        );
        assert_eq!(policy["Statement"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn existing_key_only_records_the_statement_to_add_and_disabled_plans_no_key() {
        let mut e = test_fixture();
        e.kms = EffKms::Existing {
            key_arn: "arn:aws:kms:us-east-1:123456789012:key/abc".into(),
        };
        let plan = build(&e).unwrap();
        let Some(KmsKeyPlan::Existing { required_statement, .. }) = &plan.kms else {
            panic!("{plan:?}")
        };
        assert_eq!(
            required_statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"],
            json!(GROUPS)
        );
        assert!(
            plan.log_groups
                .iter()
                .all(|g| matches!(&g.kms_key, Some(KmsRef::Existing { arn }) if arn.ends_with("key/abc")))
        );
        e.kms = EffKms::Disabled;
        let plan = build(&e).unwrap();
        assert!(plan.kms.is_none() && plan.log_groups.iter().all(|g| g.kms_key.is_none()));
    }

    #[test]
    fn log_groups_follow_enabled_signals_and_carry_uid_tag() {
        let mut e = test_fixture();
        e.uid = Some("u-1".into());
        let plan = build(&e).unwrap();
        let arns: Vec<&str> = plan.log_groups.iter().map(|g| g.arn.as_str()).collect();
        assert_eq!(arns, GROUPS);
        assert!(
            plan.log_groups
                .iter()
                .all(|g| g.tags.get("mlobs.io/uid").map(String::as_str) == Some("u-1"))
        );
        e.metrics.group.name = e.logs.group.name.clone();
        assert!(
            matches!(build(&e), Err(PlanError::Invalid { .. })),
            "one group for logs and metrics"
        );
        e.logs.enabled = false;
        assert_eq!(build(&e).unwrap().log_groups.len(), 1);
        e.metrics.dcgm_enabled = false;
        assert!(matches!(build(&e), Err(PlanError::Invalid { .. })));
    }

    #[test]
    fn inline_policy_is_three_log_actions_on_own_groups_in_region_only() {
        for e in [test_fixture(), pod_identity_fixture()] {
            let (trust, inline) = role_policies(&build(&e).unwrap());
            let statements = inline["Statement"].as_array().unwrap();
            assert_eq!(statements.len(), 1);
            assert_eq!(statements[0]["Sid"], "WriteOwnLogGroups");
            assert_eq!(
                statements[0]["Action"],
                json!(["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"])
            );
            assert_eq!(statements[0]["Resource"], json!(GROUPS.map(|g| format!("{g}:*"))));
            assert!(
                statements
                    .iter()
                    .all(|s| s["Condition"]["StringEquals"]["aws:RequestedRegion"] == "us-east-1")
            );
            assert_least_privilege(&inline);
            assert_least_privilege(&trust);
        }
    }

    #[test]
    fn source_vpc_condition_only_when_set() {
        let mut e = test_fixture();
        let (_, inline) = role_policies(&build(&e).unwrap());
        assert!(
            inline["Statement"][0]["Condition"]["StringEquals"]
                .get("aws:SourceVpc")
                .is_none()
        );
        e.identity.source_vpc = Some("vpc-0abc".into());
        let (_, inline) = role_policies(&build(&e).unwrap());
        assert_eq!(
            inline["Statement"][0]["Condition"]["StringEquals"]["aws:SourceVpc"],
            "vpc-0abc"
        );
    }

    #[test]
    fn irsa_trust_names_exactly_one_service_account() {
        let (trust, _) = role_policies(&build(&test_fixture()).unwrap());
        let s = &trust["Statement"];
        assert_eq!(s.as_array().map(Vec::len), Some(1));
        assert_eq!(
            s[0]["Principal"]["Federated"],
            "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE"
        );
        assert_eq!(s[0]["Action"], "sts:AssumeRoleWithWebIdentity");
        let cond = s[0]["Condition"]["StringEquals"].as_object().unwrap();
        assert_eq!(cond.len(), 2);
        assert_eq!(
            cond["oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE:sub"],
            "system:serviceaccount:team-a:mlobs-train"
        );
        assert_eq!(
            cond["oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE:aud"],
            "sts.amazonaws.com"
        );
        let mut e = test_fixture();
        e.identity.oidc_provider_arn = None;
        assert!(matches!(build(&e), Err(PlanError::Invalid { field, .. }) if field == "spec.identity.oidcProviderArn"));
        assert!(build(&test_fixture()).unwrap().pod_identity.is_none());
    }

    #[test]
    fn pod_identity_trusts_eks_pods_for_one_service_account_and_plans_the_association() {
        let plan = build(&pod_identity_fixture()).unwrap();
        let (trust, _) = role_policies(&plan);
        let s = &trust["Statement"][0];
        assert_eq!(s["Principal"]["Service"], "pods.eks.amazonaws.com");
        assert_eq!(s["Action"], json!(["sts:AssumeRole", "sts:TagSession"]));
        assert_eq!(
            s["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-namespace"],
            "team-a"
        );
        assert_eq!(
            s["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-service-account"],
            "mlobs-train"
        );
        let expected = PodIdentityPlan {
            cluster_name: "prod-gpu".into(),
            namespace: "team-a".into(),
            service_account: "mlobs-train".into(),
            role_arn: "arn:aws:iam::123456789012:role/mlobs-prod-gpu-team-a-train".into(),
        };
        assert_eq!(plan.pod_identity, Some(expected));
    }

    #[test]
    fn limits_are_errors_that_name_the_field() {
        let mut e = test_fixture();
        e.logs.group.name = format!("/{}", "a".repeat(511));
        assert!(build(&e).is_ok(), "512 characters is allowed");
        e.logs.group.name.push('a');
        let err = build(&e).unwrap_err();
        assert_eq!(
            err,
            PlanError::TooLong {
                field: "spec.logs.logGroup.name".into(),
                len: 513,
                max: 512
            }
        );

        let mut e = test_fixture();
        e.metrics.group.name = "/aws/eks/a b".into();
        assert!(matches!(build(&e), Err(PlanError::BadCharacter { bad: ' ', .. })));

        let mut e = test_fixture();
        e.identity.role = EffRole::Create { name: "r".repeat(65) };
        assert!(
            matches!(build(&e), Err(PlanError::TooLong { field, len: 65, max: 64 }) if field == "spec.identity.roleName")
        );
        e.identity.role = EffRole::Create { name: "team/a".into() };
        assert!(matches!(build(&e), Err(PlanError::BadCharacter { bad: '/', .. })));

        let mut e = test_fixture();
        e.logs
            .group
            .tags
            .extend((0..49).map(|i| (format!("k{i}"), "v".to_string())));
        let err = build(&e).unwrap_err();
        assert_eq!(
            err,
            PlanError::TooManyTags {
                field: "spec.logs.logGroup.tags".into(),
                count: 51,
                max: 50
            }
        );

        let mut e = test_fixture();
        e.identity.source_vpc = Some("v".repeat(INLINE_POLICY_MAX_CHARS));
        assert!(matches!(
            build(&e),
            Err(PlanError::TooLong {
                max: INLINE_POLICY_MAX_CHARS,
                ..
            })
        ));

        let mut e = test_fixture();
        e.kms = EffKms::Create {
            alias: "alias/aws/logs".into(),
            rotation: true,
            deletion_window_days: 30,
        };
        assert!(matches!(build(&e), Err(PlanError::Invalid { .. })));
    }

    #[test]
    fn plan_is_deterministic() {
        let a = serde_json::to_string(&build(&test_fixture()).unwrap()).unwrap();
        let b = serde_json::to_string(&build(&test_fixture()).unwrap()).unwrap();
        assert_eq!(a, b);
    }
}
