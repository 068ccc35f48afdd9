//! The archive bucket in the AWS plan: Object Lock (COMPLIANCE, N years), SSE-KMS with the
//! pipeline's key and an S3 Bucket Key, public access blocked, a TLS-only bucket policy, one
//! lifecycle transition, ownership tags; and what it adds to the collector's role and the key
//! policy. Pure.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::{KmsRef, PlanError, check_name, ownership_tags};
use crate::crd::ArchiveStorageClass;
use crate::desired::destinations::{EffArchive, dns_suffix};
use crate::desired::effective::{EffKms, Effective};

/// Sid of the collector's statement on the archive prefix.
pub const ARCHIVE_SID: &str = "ArchivePutObjects";
/// What the awss3 exporter calls: PutObject, and AbortMultipartUpload to clean up a large upload
/// that failed half way (its uploader switches to multipart above 5 MiB).
pub const ARCHIVE_ACTIONS: [&str; 2] = ["s3:AbortMultipartUpload", "s3:PutObject"];
/// Sid of the collector's statement on the pipeline's key, used by S3 on its behalf.
pub const ARCHIVE_KMS_SID: &str = "ArchiveKeyViaS3";
/// SSE-KMS: S3 asks KMS for a data key on each PUT (GenerateDataKey) and decrypts it to complete
/// a multipart upload (Decrypt).
pub const ARCHIVE_KMS_ACTIONS: [&str; 2] = ["kms:Decrypt", "kms:GenerateDataKey"];
/// Sid of the key policy statement that lets the collector role use the key through S3.
pub const KEY_POLICY_SID: &str = "CollectorArchiveViaS3";
/// Object Lock mode mlobs sets: nobody can shorten or remove a version's lock.
pub const LOCK_MODE: &str = "COMPLIANCE";
/// The lifecycle rule's id.
pub const LIFECYCLE_RULE_ID: &str = "mlobs-archive-transition";

/// The bucket as mlobs creates (or adopts) it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveBucketPlan {
    pub name: String,
    pub arn: String,
    pub region: String,
    /// Whether the name is mlobs' derived one (a name only mlobs produces).
    pub derived_name: bool,
    /// Object Lock default retention: mode COMPLIANCE for this many years.
    pub retention_years: i32,
    /// SSE-KMS key (with an S3 Bucket Key); None: SSE-S3 (`encryption.kms.disabled`).
    pub kms_key: Option<KmsRef>,
    pub transition_after_days: i32,
    pub storage_class: ArchiveStorageClass,
    /// The collector writes only under this prefix.
    pub prefix: String,
    /// Denies every request that does not use TLS.
    pub bucket_policy: Value,
    pub tags: BTreeMap<String, String>,
}

fn service_host(service: &str, e: &Effective) -> String {
    format!("{service}.{}.{}", e.region, dns_suffix(&e.partition))
}

/// Denies plaintext HTTP to the bucket and its objects, for every principal.
pub fn tls_only_policy(bucket_arn: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, format!("{bucket_arn}/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }],
    })
}

pub(super) fn bucket(e: &Effective, a: &EffArchive, kms: &Option<KmsRef>) -> Result<ArchiveBucketPlan, PlanError> {
    check_name(
        "spec.archive.bucket",
        &a.bucket,
        63,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
        "[a-z0-9-]",
    )?;
    let arn = a.bucket_arn(&e.partition);
    Ok(ArchiveBucketPlan {
        name: a.bucket.clone(),
        bucket_policy: tls_only_policy(&arn),
        arn,
        region: e.region.clone(),
        derived_name: a.derived_name,
        retention_years: a.retention_years,
        kms_key: kms.clone(),
        transition_after_days: a.transition_after_days,
        storage_class: a.storage_class,
        prefix: a.prefix.clone(),
        tags: ownership_tags(e),
    })
}

/// The collector's statements: PutObject under the prefix only, and the key through S3 only.
/// The key statement carries no `aws:SourceVpc`: S3 calls KMS on the collector's behalf, from
/// AWS's network, so that key would never be in the request.
pub fn statements(e: &Effective, a: &EffArchive, condition: &Value) -> Vec<Value> {
    let objects = format!("{}/{}*", a.bucket_arn(&e.partition), a.prefix);
    let mut out = vec![json!({
        "Sid": ARCHIVE_SID,
        "Effect": "Allow",
        "Action": ARCHIVE_ACTIONS,
        "Resource": [objects],
        "Condition": condition,
    })];
    let via_s3 = |extra: Option<(&str, Value)>| {
        let mut c = json!({"StringEquals": {
            "aws:RequestedRegion": e.region,
            "kms:ViaService": service_host("s3", e),
        }});
        if let Some((k, v)) = extra {
            c[k] = v;
        }
        c
    };
    let key = match &e.kms {
        EffKms::Disabled => None,
        EffKms::Existing { key_arn } => Some((key_arn.clone(), via_s3(None))),
        // The created key's id is random and unknown here; its alias is not: the statement names
        // the account's keys and is narrowed to the one carrying the pipeline's alias.
        EffKms::Create { alias, .. } => Some((
            format!("arn:{}:kms:{}:{}:key/*", e.partition, e.region, e.account_id),
            via_s3(Some((
                "ForAnyValue:StringEquals",
                json!({"kms:ResourceAliases": [alias]}),
            ))),
        )),
    };
    if let Some((resource, condition)) = key {
        out.push(json!({
            "Sid": ARCHIVE_KMS_SID,
            "Effect": "Allow",
            "Action": ARCHIVE_KMS_ACTIONS,
            "Resource": [resource],
            "Condition": condition,
        }));
    }
    out
}

/// The key policy statement for a created key: the collector role may use the key, through S3
/// in the pipeline's region only. Its principal is the account (a key policy naming a role that
/// does not exist yet is refused by KMS; the role is created after the key), narrowed to the
/// role by `aws:PrincipalArn`.
pub fn key_statement(e: &Effective, role_arn: &str) -> Value {
    json!({
        "Sid": KEY_POLICY_SID,
        "Effect": "Allow",
        "Principal": { "AWS": format!("arn:{}:iam::{}:root", e.partition, e.account_id) },
        "Action": ARCHIVE_KMS_ACTIONS,
        // In a key policy "*" means "this key".
        "Resource": "*",
        "Condition": {
            "StringEquals": {"kms:ViaService": service_host("s3", e), "kms:CallerAccount": e.account_id},
            "ArnEquals": {"aws:PrincipalArn": role_arn},
        },
    })
}
