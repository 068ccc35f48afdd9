//! The operator's own IAM policy: exactly the AWS operations the modules beside this one call
//! (`tests/operator_policy.rs` scans them and fails on any difference), each on the narrowest
//! resource and condition AWS lets a policy name. `mlobs plan --operator-policy` prints it.
//!
//! Scoping, service by service:
//! - KMS key ids are random, so keys are scoped by tag (ABAC): CreateKey must carry our
//!   `mlobs.io/pipeline` and `mlobs.io/cluster` tags, and every change to a key needs the key to
//!   carry `mlobs.io/pipeline`. Aliases are scoped by name (`alias/mlobs/` by default).
//! - Log groups and IAM roles are scoped by name prefix; destructive log-group calls also need
//!   our tag, so other groups under the prefix (EKS control-plane logs live under `/aws/eks/`
//!   too) cannot be changed or deleted even by mistake.
//! - EKS pod identity associations are scoped to the cluster.
//! - Hot path Kinesis streams are scoped by name prefix (`mlobs-` by default) and region.
//! - Archive buckets are scoped by name prefix (`mlobs-` by default) and to the account
//!   (`aws:ResourceAccount`): S3 evaluates tag conditions on a bucket only once ABAC is enabled on
//!   it, so tags cannot scope them. No object action is granted: the operator never reads,
//!   writes or deletes archived logs, and no bucket is ever deleted.
//!
//! - Alerts: CloudWatch alarms are scoped by name (`alarm:mlobs/*`: every alarm mlobs names
//!   `mlobs/<cluster>/<namespace>/<pipeline>/<rule>`), SNS topics mlobs creates by name prefix
//!   (`mlobs-`); a topic given by ARN is only read (GetTopicAttributes on the account's topics).
//!   Every one of these actions has a resource type, so none is on `*`.
//!
//! Not in the policy, on purpose: `sts:GetCallerIdentity` (`mlobs run` calls it to learn the
//! account unless `--account-id` is given) needs no permission, AWS allows it to every caller.

mod kinesis;

use serde_json::{Value, json};

use super::{TAG_CLUSTER, TAG_PIPELINE, TAG_UID};

/// Actions whose Service Authorization Reference entry has no resource type: a policy can name
/// them only with `"Resource": "*"` (each statement is still limited by `aws:RequestedRegion`).
pub const RESOURCE_STAR_ACTIONS: [&str; 9] = [
    "aps:CreateWorkspace",
    "aps:ListWorkspaces",
    "cloudwatch:GetMetricData",
    "iam:GetAccountAuthorizationDetails",
    "kms:CreateKey",
    "kms:ListAliases",
    "kms:ListKeys",
    "logs:DescribeLogGroups",
    "xray:GetTraceSegmentDestination",
];

/// Actions in the policy that no SDK call names: AWS authorizes them as part of another call.
/// `iam:PassRole` is checked by EKS on CreatePodIdentityAssociation and on an
/// UpdatePodIdentityAssociation that changes the role: the association hands the role to
/// `pods.eks.amazonaws.com`. (IRSA needs no PassRole: the role trusts the cluster's OIDC
/// provider and nothing is passed.)
///
/// `s3:TagResource` authorizes the tags given to CreateBucket (S3 API reference,
/// CreateBucketConfiguration.Tags), which makes a new bucket ours in the same call;
/// `cloudwatch:TagResource` and `sns:TagResource` likewise authorize the tags given to
/// PutMetricAlarm and CreateTopic (their API references require them for tags on create).
///
/// The `kms:` grant actions are what AMP calls with the caller's permissions, through `aps`,
/// when it creates a workspace encrypted with a customer managed key (AMP user guide,
/// "Encryption at rest").
pub const IMPLIED_ACTIONS: [&str; 7] = [
    "cloudwatch:TagResource",
    "iam:PassRole",
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "s3:TagResource",
    "sns:TagResource",
];

/// The service principal a pod identity association passes the collector role to.
const POD_IDENTITY_SERVICE: &str = "pods.eks.amazonaws.com";

/// What the policy is scoped to. [`OperatorPolicyOptions::new`] fills the defaults that match
/// the names mlobs derives; change them together with the pipelines' names or policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPolicyOptions {
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: String,
    /// The 12-digit account the operator manages resources in.
    pub account_id: String,
    /// Regions the operator may call (KMS, CloudWatch Logs and EKS are regional).
    pub regions: Vec<String>,
    /// Log group names the operator may create and manage start with this (default `/aws/eks/`,
    /// where mlobs derives `/aws/eks/<cluster>/<namespace>/<pipeline>/{logs,metrics}`).
    pub log_group_prefix: String,
    /// Collector role names start with this (default `mlobs-`, as in the derived
    /// `mlobs-<cluster>-<namespace>-<pipeline>`).
    pub role_name_prefix: String,
    /// IAM path of the collector roles (mlobs creates them at `/`).
    pub role_path: String,
    /// KMS aliases start with this (default `alias/mlobs/`, as in the derived
    /// `alias/mlobs/<cluster>/<namespace>/<pipeline>`).
    pub kms_alias_prefix: String,
    /// Archive bucket names start with this (default `mlobs-`, as in the derived
    /// `mlobs-<cluster>-<namespace>-<pipeline>-<hash>`); a `spec.archive.bucket` outside it is
    /// refused by AWS with AccessDenied.
    pub archive_bucket_prefix: String,
    /// Hot path stream names start with this (default `mlobs-`, as in the derived
    /// `mlobs-<cluster>-<namespace>-<pipeline>-hot`).
    pub hot_path_stream_prefix: String,
    /// SNS topics and CloudWatch dashboards mlobs creates start with this (default `mlobs-`, as
    /// in the derived `mlobs-<cluster>-<namespace>-<pipeline>[-alerts]`).
    pub alerts_name_prefix: String,
    /// When set, the operator may create a role, or write a role's inline policy or boundary, only
    /// with exactly this boundary: what the operator can grant stays inside it.
    pub permissions_boundary_arn: Option<String>,
    /// The EKS cluster of the pod identity associations; `None` allows every cluster of the
    /// account in the regions.
    pub cluster_name: Option<String>,
    /// The drift events queues (`mlobs run --drift-events-queue`; one per shard with `{shard}`):
    /// the operator may receive and delete their messages, nothing else. Empty: no SQS permission.
    pub drift_events_queue_arns: Vec<String>,
}

impl OperatorPolicyOptions {
    /// The defaults for one account and region.
    pub fn new(account_id: impl Into<String>, region: impl Into<String>) -> OperatorPolicyOptions {
        OperatorPolicyOptions {
            partition: "aws".into(),
            account_id: account_id.into(),
            regions: vec![region.into()],
            log_group_prefix: "/aws/eks/".into(),
            role_name_prefix: "mlobs-".into(),
            role_path: "/".into(),
            kms_alias_prefix: "alias/mlobs/".into(),
            archive_bucket_prefix: crate::conventions::ARCHIVE_BUCKET_PREFIX.into(),
            hot_path_stream_prefix: crate::desired::hot_path::STREAM_PREFIX.into(),
            alerts_name_prefix: "mlobs-".into(),
            permissions_boundary_arn: None,
            cluster_name: None,
            drift_events_queue_arns: Vec::new(),
        }
    }

    /// Every problem with the options, one message each (empty: valid). A value with a wildcard
    /// would silently widen the policy, so `*` and `?` are refused everywhere.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut wild = |what: &str, v: &str| {
            if v.contains(['*', '?']) {
                out.push(format!("{what} {v:?} must not contain * or ?"));
            }
        };
        wild("partition", &self.partition);
        wild("account id", &self.account_id);
        wild("log group prefix", &self.log_group_prefix);
        wild("role name prefix", &self.role_name_prefix);
        wild("role path", &self.role_path);
        wild("KMS alias prefix", &self.kms_alias_prefix);
        wild("archive bucket prefix", &self.archive_bucket_prefix);
        for q in &self.drift_events_queue_arns {
            wild("drift events queue ARN", q);
        }
        wild("hot path stream prefix", &self.hot_path_stream_prefix);
        wild("alerts name prefix", &self.alerts_name_prefix);
        for r in &self.regions {
            wild("region", r);
        }
        if let Some(c) = &self.cluster_name {
            wild("cluster name", c);
        }
        if let Some(b) = &self.permissions_boundary_arn {
            wild("permissions boundary", b);
        }
        if !["aws", "aws-cn", "aws-us-gov"].contains(&self.partition.as_str()) {
            out.push(format!(
                "partition {:?} must be aws, aws-cn or aws-us-gov",
                self.partition
            ));
        }
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            out.push(format!("account id {:?} must be 12 digits", self.account_id));
        }
        if self.regions.is_empty() {
            out.push("at least one region is required".into());
        }
        for r in &self.regions {
            let ok = !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                out.push(format!("region {r:?} is not a region name such as us-east-1"));
            }
        }
        // An empty prefix would mean every log group or role of the account.
        if !self.log_group_prefix.starts_with('/') || self.log_group_prefix.len() < 2 {
            out.push(format!(
                "log group prefix {:?} must start with / and name at least one level, e.g. /aws/eks/",
                self.log_group_prefix
            ));
        }
        // Empty would mean every bucket of the account; S3 names are [a-z0-9.-].
        let bucket_ok = (self.archive_bucket_prefix.bytes())
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if self.archive_bucket_prefix.len() < 3 || !bucket_ok {
            out.push(format!(
                "archive bucket prefix {:?} must be at least 3 characters of a bucket name ([a-z0-9.-]), e.g. mlobs-",
                self.archive_bucket_prefix
            ));
        }
        if self.hot_path_stream_prefix.is_empty() {
            out.push("hot path stream prefix must not be empty".into());
        }
        if self.role_name_prefix.is_empty() {
            out.push("role name prefix must not be empty".into());
        }
        // Empty would mean every topic of the account.
        if self.alerts_name_prefix.is_empty() {
            out.push("alerts name prefix must not be empty".into());
        }
        if !self.role_path.starts_with('/') || !self.role_path.ends_with('/') {
            out.push(format!("role path {:?} must start and end with /", self.role_path));
        }
        let alias_name = self.kms_alias_prefix.strip_prefix("alias/").unwrap_or("");
        if alias_name.is_empty() || self.kms_alias_prefix.starts_with("alias/aws/") {
            out.push(format!(
                "KMS alias prefix {:?} must be alias/<name>... and not under alias/aws/",
                self.kms_alias_prefix
            ));
        }
        if let Some(b) = &self.permissions_boundary_arn
            && !b.starts_with(&format!("arn:{}:iam::", self.partition))
        {
            out.push(format!("permissions boundary {b:?} is not an IAM policy ARN"));
        }
        for q in &self.drift_events_queue_arns {
            let parts: Vec<&str> = q.split(':').collect();
            if parts.len() != 6 || parts[0] != "arn" || parts[2] != "sqs" || parts[5].is_empty() {
                out.push(format!(
                    "drift events queue ARN {q:?} is not an SQS queue ARN (arn:aws:sqs:<region>:<account>:<name>)"
                ));
            } else if !self.regions.iter().any(|r| r == parts[3]) {
                out.push(format!(
                    "drift events queue {q:?} is in {}, not one of the operator's regions: add it with --region",
                    parts[3]
                ));
            }
        }
        out
    }

    fn arn(&self, service: &str, region: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{region}:{}:{resource}",
            self.partition, self.account_id
        )
    }

    /// One ARN per region.
    fn regional(&self, service: &str, resource: &str) -> Vec<String> {
        self.regions.iter().map(|r| self.arn(service, r, resource)).collect()
    }

    fn roles(&self) -> String {
        self.arn("iam", "", &format!("role{}{}*", self.role_path, self.role_name_prefix))
    }

    fn region_condition(&self) -> Value {
        json!({ "aws:RequestedRegion": self.regions })
    }

    /// Bucket ARNs name neither region nor account: `arn:<partition>:s3:::<prefix>*`.
    fn buckets(&self) -> String {
        format!("arn:{}:s3:::{}*", self.partition, self.archive_bucket_prefix)
    }

    /// The region, and buckets of this account only (a bucket name is global).
    fn own_bucket_condition(&self) -> Value {
        json!({ "aws:RequestedRegion": self.regions, "aws:ResourceAccount": self.account_id })
    }
}

/// The tag keys mlobs puts on KMS keys; nothing else may be tagged or untagged on them.
fn key_tag_keys() -> [&'static str; 3] {
    [TAG_CLUSTER, TAG_PIPELINE, TAG_UID]
}

/// `{"Null": {"aws:RequestTag/<k>": "false", ...}}`: each tag must be in the request.
fn tags_required(prefix: &str, keys: &[&str]) -> Value {
    let m: serde_json::Map<String, Value> = keys.iter().map(|k| (format!("{prefix}/{k}"), json!("false"))).collect();
    Value::Object(m)
}

fn statement(sid: &str, actions: &[&str], resources: Value, condition: Option<Value>) -> Value {
    let mut s = json!({
        "Sid": sid,
        "Effect": "Allow",
        "Action": actions,
        "Resource": resources,
    });
    if let Some(c) = condition {
        s["Condition"] = c;
    }
    s
}

/// The least-privilege policy for `mlobs run`. Deterministic: the same options give
/// byte-identical JSON. Check [`OperatorPolicyOptions::problems`] first.
pub fn operator_policy(opts: &OperatorPolicyOptions) -> Value {
    let region = opts.region_condition();
    let keys = opts.regional("kms", "key/*");
    let group_prefix = opts.regional("logs", &format!("log-group:{}*", opts.log_group_prefix));
    let roles = opts.roles();
    let cluster = opts.cluster_name.as_deref().unwrap_or("*");
    let tag_keys = key_tag_keys();
    let key_create_tags = tags_required("aws:RequestTag", &[TAG_CLUSTER, TAG_PIPELINE]);
    let own_resource = tags_required("aws:ResourceTag", &[TAG_PIPELINE]);
    let boundary = |mut cond: serde_json::Map<String, Value>| -> Option<Value> {
        if let Some(b) = &opts.permissions_boundary_arn {
            cond.insert("ArnEquals".into(), json!({ "iam:PermissionsBoundary": b }));
        }
        (!cond.is_empty()).then_some(Value::Object(cond))
    };

    let statements = vec![
        // KMS. CreateKey has no resource to name (the key does not exist yet).
        statement(
            "KmsCreateTaggedKeys",
            &["kms:CreateKey"],
            json!("*"),
            Some(json!({
                "StringEquals": region,
                "Null": key_create_tags,
                "ForAllValues:StringEquals": { "aws:TagKeys": tag_keys },
            })),
        ),
        // Tags given to CreateKey are authorized as kms:TagResource on "all KMS keys in the
        // account and Region" (AWS KMS developer guide): the key has no tags to match yet.
        statement(
            "KmsTagKeysOnCreate",
            &["kms:TagResource"],
            json!(keys),
            Some(json!({
                "StringEquals": region,
                "Null": key_create_tags,
                "ForAllValues:StringEquals": { "aws:TagKeys": tag_keys },
            })),
        ),
        // The tag scan that finds a key whose create crashed before its alias was written.
        statement(
            "KmsListKeys",
            &["kms:ListKeys"],
            json!("*"),
            Some(json!({ "StringEquals": region })),
        ),
        // A resync finds every pipeline's key through one listing of the aliases (100 a page)
        // instead of a DescribeKey per pipeline.
        statement(
            "KmsListAliases",
            &["kms:ListAliases"],
            json!("*"),
            Some(json!({ "StringEquals": region })),
        ),
        // Reads carry no tag condition: a user's key (encryption.kms.keyArn) is only described,
        // and the ownership check must read a foreign key's tags to report a NameConflict.
        statement(
            "KmsReadKeys",
            &["kms:DescribeKey", "kms:ListResourceTags"],
            json!(keys),
            Some(json!({ "StringEquals": region })),
        ),
        statement(
            "KmsManageOwnKeys",
            &[
                "kms:CancelKeyDeletion",
                "kms:EnableKey",
                "kms:EnableKeyRotation",
                "kms:GetKeyPolicy",
                "kms:GetKeyRotationStatus",
                "kms:PutKeyPolicy",
                "kms:ScheduleKeyDeletion",
            ],
            json!(keys),
            Some(json!({ "StringEquals": region, "Null": own_resource })),
        ),
        statement(
            "KmsTagOwnKeys",
            &["kms:TagResource", "kms:UntagResource"],
            json!(keys),
            Some(json!({
                "StringEquals": region,
                "Null": own_resource,
                "ForAllValues:StringEquals": { "aws:TagKeys": tag_keys },
            })),
        ),
        // CreateAlias and DeleteAlias are authorized twice, on the key and on the alias (AWS KMS
        // developer guide, "Controlling access to aliases"): one statement each, because the
        // tag condition cannot hold for an alias (aliases have no tags).
        statement(
            "KmsAliasOwnKeys",
            &["kms:CreateAlias", "kms:DeleteAlias"],
            json!(keys),
            Some(json!({ "StringEquals": region, "Null": own_resource })),
        ),
        statement(
            "KmsOwnAliases",
            &["kms:CreateAlias", "kms:DeleteAlias"],
            json!(opts.regional("kms", &format!("{}*", opts.kms_alias_prefix))),
            Some(json!({ "StringEquals": region })),
        ),
        // CloudWatch Logs. DescribeLogGroups has no resource type; the prefix is a request
        // parameter IAM cannot see.
        statement(
            "LogsDescribeGroups",
            &["logs:DescribeLogGroups"],
            json!("*"),
            Some(json!({ "StringEquals": region })),
        ),
        statement(
            "LogsCreateTaggedGroups",
            &["logs:CreateLogGroup"],
            json!(group_prefix),
            Some(json!({
                "StringEquals": region,
                "Null": tags_required("aws:RequestTag", &[TAG_PIPELINE]),
            })),
        ),
        // Tags are read to check ownership and written when adoption is opted in (and they
        // authorize the tags given to CreateLogGroup): on groups that do not carry our tag yet.
        // Log group tags include the spec's own, so the keys cannot be limited to ours.
        statement(
            "LogsReadAndTagGroups",
            &["logs:ListTagsForResource", "logs:TagResource"],
            json!(group_prefix),
            Some(json!({ "StringEquals": region })),
        ),
        // The DataFlowing check reads when each pipeline group last received an event.
        statement(
            "LogsReadStreams",
            &["logs:DescribeLogStreams"],
            json!(group_prefix),
            Some(json!({ "StringEquals": region })),
        ),
        statement(
            "LogsManageOwnGroups",
            &["logs:AssociateKmsKey", "logs:DeleteLogGroup", "logs:PutRetentionPolicy"],
            json!(group_prefix),
            Some(json!({ "StringEquals": region, "Null": own_resource })),
        ),
        statement(
            "LogsUntagOwnGroups",
            &["logs:UntagResource"],
            json!(group_prefix),
            Some(json!({
                "StringEquals": region,
                "Null": own_resource,
                "ForAllValues:StringLike": { "aws:TagKeys": "mlobs.io/*" },
            })),
        ),
        // S3 archive buckets. CreateBucket with ObjectLockEnabledForBucket is also authorized as
        // s3:PutBucketObjectLockConfiguration and s3:PutBucketVersioning (granted below, both
        // called too); its tags as s3:TagResource.
        statement(
            "S3CreateArchiveBuckets",
            &["s3:CreateBucket", "s3:TagResource"],
            json!(opts.buckets()),
            Some(json!({ "StringEquals": region })),
        ),
        // HeadBucket is authorized as s3:ListBucket (existence and region of the bucket).
        statement(
            "S3ReadArchiveBuckets",
            &[
                "s3:GetBucketObjectLockConfiguration",
                "s3:GetBucketPolicy",
                "s3:GetBucketPublicAccessBlock",
                "s3:GetBucketTagging",
                "s3:GetBucketVersioning",
                "s3:GetEncryptionConfiguration",
                "s3:GetLifecycleConfiguration",
                "s3:ListBucket",
            ],
            json!(opts.buckets()),
            Some(json!({ "StringEquals": opts.own_bucket_condition() })),
        ),
        // DeleteBucketTagging is authorized as s3:PutBucketTagging.
        statement(
            "S3ConfigureArchiveBuckets",
            &[
                "s3:PutBucketObjectLockConfiguration",
                "s3:PutBucketPublicAccessBlock",
                "s3:PutBucketTagging",
                "s3:PutBucketVersioning",
                "s3:PutEncryptionConfiguration",
            ],
            json!(opts.buckets()),
            Some(json!({ "StringEquals": opts.own_bucket_condition() })),
        ),
        // The TLS-only bucket policy and the transition rule. Both could loosen access to the
        // objects; Object Lock in COMPLIANCE mode still keeps every version until its retention
        // ends, whatever a bucket policy or lifecycle rule says.
        statement(
            "S3ArchivePolicyAndLifecycle",
            &["s3:PutBucketPolicy", "s3:PutLifecycleConfiguration"],
            json!(opts.buckets()),
            Some(json!({ "StringEquals": opts.own_bucket_condition() })),
        ),
        // IAM is a global service: every IAM request is made to one endpoint whatever region
        // the operator runs in, so aws:RequestedRegion would not limit anything (or would
        // deny everything outside that endpoint's region). Roles are scoped by name instead.
        statement(
            "IamCreateTaggedRoles",
            &["iam:CreateRole"],
            json!(roles),
            boundary(
                json!({
                    "Null": tags_required("aws:RequestTag", &[TAG_PIPELINE]),
                    "ForAllValues:StringLike": { "aws:TagKeys": "mlobs.io/*" },
                })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ),
        ),
        statement(
            "IamReadRoles",
            &["iam:GetRole", "iam:GetRolePolicy"],
            json!(roles),
            None,
        ),
        // A resync reads every role's trust policy, inline policies, tags and boundary in one
        // listing (250 roles a page) instead of GetRole and GetRolePolicy per pipeline. The
        // action has no resource type, so it cannot be narrowed to our roles; it reads (and mlobs
        // keeps) only what the listing returns, and it writes nothing. Without it mlobs falls
        // back to the per-role reads above.
        statement(
            "IamListRoleDetails",
            &["iam:GetAccountAuthorizationDetails"],
            json!("*"),
            None,
        ),
        // With a boundary, a role's permissions can only be written on a role that carries it:
        // without one, whoever controls the operator could grant a role anything.
        statement(
            "IamWriteRolePermissions",
            &["iam:PutRolePermissionsBoundary", "iam:PutRolePolicy"],
            json!(roles),
            boundary(serde_json::Map::new()),
        ),
        statement(
            "IamManageRoles",
            &["iam:DeleteRole", "iam:DeleteRolePolicy", "iam:UpdateAssumeRolePolicy"],
            json!(roles),
            None,
        ),
        statement(
            "IamTagRoles",
            &["iam:TagRole", "iam:UntagRole"],
            json!(roles),
            Some(json!({ "ForAllValues:StringLike": { "aws:TagKeys": "mlobs.io/*" } })),
        ),
        statement(
            "IamPassRolesToPodIdentity",
            &["iam:PassRole"],
            json!(roles),
            Some(json!({ "StringEquals": { "iam:PassedToService": POD_IDENTITY_SERVICE } })),
        ),
        // Destinations mlobs reads but does not create: the AMP workspaces pipelines write to
        // (any workspace of the account in the region: their ids are the users'), and whether
        // X-Ray's OTLP endpoint accepts spans (Transaction Search; an account setting).
        statement(
            "ApsReadWorkspaces",
            &["aps:DescribeWorkspace"],
            json!(opts.regional("aps", "workspace/*")),
            Some(json!({ "StringEquals": region })),
        ),
        // AMP workspaces mlobs manages (spec.metrics.prometheus.workspaceAlias). CreateWorkspace
        // and ListWorkspaces have no resource type; a create must carry our tags, and only a
        // workspace with our tag may be deleted.
        statement(
            "ApsCreateTaggedWorkspaces",
            &["aps:CreateWorkspace"],
            json!("*"),
            Some(json!({
                "StringEquals": region,
                "Null": tags_required("aws:RequestTag", &[TAG_CLUSTER, TAG_PIPELINE]),
                "ForAllValues:StringEquals": { "aws:TagKeys": tag_keys },
            })),
        ),
        statement(
            "ApsTagWorkspaces",
            &["aps:TagResource"],
            json!(opts.regional("aps", "workspace/*")),
            Some(json!({
                "StringEquals": region,
                "ForAllValues:StringEquals": { "aws:TagKeys": tag_keys },
            })),
        ),
        statement(
            "ApsListWorkspaces",
            &["aps:ListWorkspaces"],
            json!("*"),
            Some(json!({ "StringEquals": region })),
        ),
        statement(
            "ApsDeleteOwnWorkspaces",
            &["aps:DeleteWorkspace"],
            json!(opts.regional("aps", "workspace/*")),
            Some(json!({ "StringEquals": region, "Null": own_resource })),
        ),
        // A workspace encrypted with the pipeline's key: AMP creates grants on it with the
        // caller's permissions, only through AMP.
        statement(
            "KmsGrantsToAmp",
            &["kms:CreateGrant", "kms:Decrypt", "kms:GenerateDataKey"],
            json!(keys),
            Some(json!({
                "StringEquals": {
                    "aws:RequestedRegion": opts.regions,
                    "kms:ViaService": opts.regions.iter().map(|r| format!("aps.{r}.{}", crate::desired::destinations::dns_suffix(&opts.partition))).collect::<Vec<_>>(),
                },
            })),
        ),
        statement(
            "XRayReadTraceDestination",
            &["xray:GetTraceSegmentDestination"],
            json!("*"),
            Some(json!({ "StringEquals": region })),
        ),
        // Alerts: the pipeline's alarms (named mlobs/<cluster>/<ns>/<pipeline>/<rule>); the tags
        // given to PutMetricAlarm are authorized as cloudwatch:TagResource.
        statement(
            "CloudWatchManageAlarms",
            &[
                "cloudwatch:DeleteAlarms",
                "cloudwatch:DescribeAlarms",
                "cloudwatch:ListTagsForResource",
                "cloudwatch:PutMetricAlarm",
                "cloudwatch:TagResource",
            ],
            json!(opts.regional(
                "cloudwatch",
                &format!("alarm:{}*", crate::desired::alerts::cloudwatch::ALARM_NAME_PREFIX)
            )),
            Some(json!({ "StringEquals": region })),
        ),
        // The DataFlowing read at a resync: CloudWatch Logs' own per-group IncomingLogEvents
        // metric, 500 groups per call. GetMetricData has no resource type.
        statement(
            "CloudWatchReadLogGroupMetrics",
            &["cloudwatch:GetMetricData"],
            json!("*"),
            Some(json!({ "StringEquals": region })),
        ),
        // Dashboards are global to the account (their ARN has no region) and carry no tags: the
        // name prefix is their scope.
        statement(
            "CloudWatchManageDashboards",
            &[
                "cloudwatch:DeleteDashboards",
                "cloudwatch:GetDashboard",
                "cloudwatch:PutDashboard",
            ],
            json!(opts.arn("cloudwatch", "", &format!("dashboard/{}*", opts.alerts_name_prefix))),
            Some(json!({ "StringEquals": region })),
        ),
        // The topics mlobs creates (KMS-encrypted, tagged on create: sns:TagResource).
        statement(
            "SnsManageAlertTopics",
            &[
                "sns:CreateTopic",
                "sns:DeleteTopic",
                "sns:ListTagsForResource",
                "sns:SetTopicAttributes",
                "sns:TagResource",
            ],
            json!(opts.regional("sns", &format!("{}*", opts.alerts_name_prefix))),
            Some(json!({ "StringEquals": region })),
        ),
        // A topic given by ARN is only checked to exist; it may have any name in the account.
        statement(
            "SnsReadTopics",
            &["sns:GetTopicAttributes"],
            json!(opts.regional("sns", "*")),
            Some(json!({ "StringEquals": region })),
        ),
        // EKS pod identity associations of the collector's service account.
        statement(
            "EksFindAndCreateAssociations",
            &["eks:CreatePodIdentityAssociation", "eks:ListPodIdentityAssociations"],
            json!(opts.regional("eks", &format!("cluster/{cluster}"))),
            Some(json!({ "StringEquals": region })),
        ),
        statement(
            "EksManageAssociations",
            &[
                "eks:DeletePodIdentityAssociation",
                "eks:DescribePodIdentityAssociation",
                "eks:UpdatePodIdentityAssociation",
            ],
            json!(opts.regional("eks", &format!("podidentityassociation/{cluster}/*"))),
            Some(json!({ "StringEquals": region })),
        ),
    ];
    let mut statements = statements;
    if let Some(q) = match opts.drift_events_queue_arns.as_slice() {
        [] => None,
        [one] => Some(json!(one)),
        all => Some(json!(all)),
    } {
        // CloudTrail events of the calls that change what mlobs owns (drift events).
        statements.push(statement(
            "SqsReadDriftEvents",
            &["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage"],
            q,
            Some(json!({ "StringEquals": opts.region_condition() })),
        ));
    }
    statements.extend(kinesis::statements(opts));
    json!({ "Version": "2012-10-17", "Statement": statements })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_wildcards_are_refused() {
        let o = OperatorPolicyOptions::new("123456789012", "us-east-1");
        assert_eq!(o.problems(), Vec::<String>::new());
        let mut bad = o.clone();
        bad.role_name_prefix = "*".into();
        bad.account_id = "12345".into();
        bad.kms_alias_prefix = "alias/aws/".into();
        bad.regions = vec![];
        let problems = bad.problems().join("\n");
        for want in [
            "must not contain *",
            "12 digits",
            "not under alias/aws/",
            "at least one region",
        ] {
            assert!(problems.contains(want), "{want:?} missing in:\n{problems}");
        }
    }

    #[test]
    fn the_same_options_give_identical_json() {
        let o = OperatorPolicyOptions::new("123456789012", "us-east-1");
        assert_eq!(operator_policy(&o).to_string(), operator_policy(&o.clone()).to_string());
    }
}
