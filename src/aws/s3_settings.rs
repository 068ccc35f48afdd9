//! The archive bucket's settings as S3 takes them, and how an observed bucket differs from the
//! plan. Pure: [`super::s3`] reads and writes, this module only builds and compares.

use std::collections::BTreeMap;

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, DefaultRetention, ExpirationStatus, LifecycleRule, LifecycleRuleFilter,
    ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Transition, TransitionStorageClass,
};
use serde_json::Value;

use super::Drift;
use crate::desired::aws_plan::archive::{ArchiveBucketPlan, LIFECYCLE_RULE_ID, LOCK_MODE};

const DAYS_PER_YEAR: i32 = 365;

/// The default retention of an Object Lock configuration: mode and period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub mode: String,
    pub years: Option<i32>,
    pub days: Option<i32>,
}

impl Retention {
    fn period_days(&self) -> i32 {
        self.years
            .map(|y| y.saturating_mul(DAYS_PER_YEAR))
            .or(self.days)
            .unwrap_or(0)
    }

    fn text(&self) -> String {
        match (self.years, self.days) {
            (Some(y), _) => format!("{} {y} years", self.mode),
            (None, Some(d)) => format!("{} {d} days", self.mode),
            (None, None) => format!("{} (no period)", self.mode),
        }
    }
}

/// One lifecycle rule as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedRule {
    pub id: Option<String>,
    pub enabled: bool,
    pub prefix: Option<String>,
    /// (days, storage class) of each transition.
    pub transitions: Vec<(Option<i32>, Option<String>)>,
    /// The rule as S3 returned it, put back unchanged when ours is merged in.
    pub raw: LifecycleRule,
}

/// A bucket as the Get* calls report it; `None` is "not configured".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedBucket {
    pub tags: BTreeMap<String, String>,
    pub versioning: Option<String>,
    pub lock_enabled: bool,
    pub retention: Option<Retention>,
    /// (algorithm, key id or ARN, bucket key enabled).
    pub encryption: Option<(String, Option<String>, bool)>,
    /// block public ACLs, ignore public ACLs, block public policy, restrict public buckets.
    pub public_access_block: Option<[bool; 4]>,
    pub policy: Option<Value>,
    pub lifecycle: Vec<ObservedRule>,
}

/// Everything [`diff`] compares, one field of a drift record each.
pub const FIELDS: [&str; 6] = [
    "objectLock",
    "encryption",
    "publicAccessBlock",
    "bucketPolicy",
    "lifecycle",
    "versioning",
];

pub fn resource(name: &str) -> String {
    format!("s3Bucket:{name}")
}

pub fn desired_retention(plan: &ArchiveBucketPlan) -> Retention {
    Retention {
        mode: LOCK_MODE.into(),
        years: Some(plan.retention_years),
        days: None,
    }
}

pub fn lock_configuration(plan: &ArchiveBucketPlan) -> ObjectLockConfiguration {
    let retention = DefaultRetention::builder()
        .mode(ObjectLockRetentionMode::Compliance)
        .years(plan.retention_years)
        .build();
    ObjectLockConfiguration::builder()
        .object_lock_enabled(ObjectLockEnabled::Enabled)
        .rule(ObjectLockRule::builder().default_retention(retention).build())
        .build()
}

/// SSE-KMS with `key` and an S3 Bucket Key (one KMS call per bucket and period instead of one
/// per object), else SSE-S3.
pub fn encryption(key: Option<&str>) -> Result<ServerSideEncryptionConfiguration, String> {
    let by_default = match key {
        Some(k) => ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::AwsKms)
            .kms_master_key_id(k),
        None => ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256),
    }
    .build()
    .map_err(|e| e.to_string())?;
    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(by_default)
        .bucket_key_enabled(key.is_some())
        .build();
    ServerSideEncryptionConfiguration::builder()
        .rules(rule)
        .build()
        .map_err(|e| e.to_string())
}

pub fn public_access_block() -> PublicAccessBlockConfiguration {
    PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build()
}

fn our_rule(plan: &ArchiveBucketPlan) -> Result<LifecycleRule, String> {
    LifecycleRule::builder()
        .id(LIFECYCLE_RULE_ID)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix(&plan.prefix).build())
        .transitions(
            Transition::builder()
                .days(plan.transition_after_days)
                .storage_class(TransitionStorageClass::from(plan.storage_class.as_str()))
                .build(),
        )
        .build()
        .map_err(|e| e.to_string())
}

/// The bucket's lifecycle with our rule put in (by id); other rules are kept as they are.
pub fn lifecycle(plan: &ArchiveBucketPlan, observed: &[ObservedRule]) -> Result<BucketLifecycleConfiguration, String> {
    let mut rules: Vec<LifecycleRule> = (observed.iter())
        .filter(|r| r.id.as_deref() != Some(LIFECYCLE_RULE_ID))
        .map(|r| r.raw.clone())
        .collect();
    rules.push(our_rule(plan)?);
    BucketLifecycleConfiguration::builder()
        .set_rules(Some(rules))
        .build()
        .map_err(|e| e.to_string())
}

/// `arn:...:key/<id>` and `<id>` name the same key.
fn key_id_part(k: &str) -> &str {
    k.rsplit_once(":key/").map_or(k, |(_, id)| id)
}

/// The bucket policy with our statements put in (by Sid); statements of others are kept.
pub fn merged_policy(actual: Option<&Value>, desired: &Value) -> Value {
    actual.map_or_else(|| desired.clone(), |a| super::kms::merged_policy(a, desired))
}

/// The encryption the bucket should have, as text: `aws:kms <key>` or `AES256`.
fn encryption_text(key: Option<&str>) -> String {
    key.map_or_else(
        || "AES256".into(),
        |k| format!("aws:kms {} (bucket key)", key_id_part(k)),
    )
}

/// Where the bucket differs from the plan (all `corrected: false`). `key` is the KMS key the
/// bucket should be encrypted with (None: SSE-S3).
pub fn diff(plan: &ArchiveBucketPlan, o: &ObservedBucket, key: Option<&str>) -> Vec<Drift> {
    let res = resource(&plan.name);
    let drift = |field: &str, desired: String, actual: String| Drift::found(&res, field, desired, actual);
    let mut out = Vec::new();
    let want = desired_retention(plan);
    match &o.retention {
        Some(r) if r.mode == want.mode && r.period_days() == want.period_days() => {}
        Some(r) => out.push(drift("objectLock", want.text(), r.text())),
        None => out.push(drift("objectLock", want.text(), "no default retention".into())),
    }
    let enc_ok = o.encryption.as_ref().is_some_and(|(alg, k, bucket_key)| match key {
        Some(want) => alg == "aws:kms" && k.as_deref().map(key_id_part) == Some(key_id_part(want)) && *bucket_key,
        None => alg == "AES256" || alg == "aws:kms",
    });
    if !enc_ok {
        let actual = o.encryption.as_ref().map_or_else(
            || "none".into(),
            |(alg, k, bk)| {
                format!(
                    "{alg} {}{}",
                    k.as_deref().map(key_id_part).unwrap_or("-"),
                    if *bk { " (bucket key)" } else { "" }
                )
            },
        );
        out.push(drift("encryption", encryption_text(key), actual));
    }
    if o.public_access_block != Some([true; 4]) {
        let actual = o
            .public_access_block
            .map_or_else(|| "none".into(), |b| format!("{b:?}"));
        out.push(drift("publicAccessBlock", "all four true".into(), actual));
    }
    if !(o.policy.as_ref()).is_some_and(|p| super::kms::missing_statements(p, &plan.bucket_policy).is_empty()) {
        out.push(drift(
            "bucketPolicy",
            "DenyInsecureTransport statement".into(),
            if o.policy.is_some() {
                "without it".into()
            } else {
                "no policy".into()
            },
        ));
    }
    let ours = o.lifecycle.iter().find(|r| r.id.as_deref() == Some(LIFECYCLE_RULE_ID));
    let want_transition = (
        Some(plan.transition_after_days),
        Some(plan.storage_class.as_str().to_string()),
    );
    let lifecycle_ok = ours.is_some_and(|r| {
        r.enabled && r.prefix.as_deref() == Some(plan.prefix.as_str()) && r.transitions == [want_transition.clone()]
    });
    if !lifecycle_ok {
        let actual = ours.map_or_else(
            || "no such rule".into(),
            |r| {
                format!(
                    "enabled {}, prefix {:?}, transitions {:?}",
                    r.enabled, r.prefix, r.transitions
                )
            },
        );
        let desired = format!(
            "{} days → {} under {}",
            plan.transition_after_days,
            plan.storage_class.as_str(),
            plan.prefix
        );
        out.push(drift("lifecycle", desired, actual));
    }
    if o.versioning.as_deref() != Some("Enabled") {
        let actual = o.versioning.clone().unwrap_or_else(|| "never enabled".into());
        out.push(drift("versioning", "Enabled".into(), actual));
    }
    out
}

/// Whether a drifted retention may be put back: only to raise it. A COMPLIANCE default longer
/// than the spec's stays (the spec was lowered, or someone raised it): mlobs never shortens it.
pub fn retention_may_be_raised(plan: &ArchiveBucketPlan, o: &ObservedBucket) -> bool {
    let want = desired_retention(plan);
    match &o.retention {
        Some(r) if r.mode == LOCK_MODE => r.period_days() < want.period_days(),
        _ => true,
    }
}

#[cfg(test)]
#[path = "s3_settings_tests.rs"]
mod tests;
