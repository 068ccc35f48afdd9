//! Reads of the archive bucket: whether it exists for us (HeadBucket) and every setting the
//! drift check compares, one Get call each. "Not configured" answers are `None`, not errors.

use std::collections::BTreeMap;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::error::{classify, code};
use super::s3_settings::{ObservedBucket, ObservedRule, Retention, resource};
use super::{AwsClients, AwsError};
use crate::desired::aws_plan::archive::ArchiveBucketPlan;

/// Error codes that mean "this configuration was never set".
const NOT_CONFIGURED: [&str; 6] = [
    "NoSuchTagSet",
    "ObjectLockConfigurationNotFoundError",
    "ServerSideEncryptionConfigurationNotFoundError",
    "NoSuchPublicAccessBlockConfiguration",
    "NoSuchBucketPolicy",
    "NoSuchLifecycleConfiguration",
];

fn not_configured<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    code(e).is_some_and(|c| NOT_CONFIGURED.contains(&c))
}

/// `Ok(None)` when the configuration is not set; other errors classified.
fn optional<T, E>(r: Result<T, SdkError<E, HttpResponse>>, op: &str, res: &str) -> Result<Option<T>, AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if not_configured(&e) => Ok(None),
        Err(e) => Err(classify(op, res, e)),
    }
}

fn status_of<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Whether the bucket exists for us: `Ok(false)` when absent; a bucket of another account (403)
/// or in another region (301) is an error naming it.
pub(super) async fn exists(c: &AwsClients, plan: &ArchiveBucketPlan) -> Result<bool, AwsError> {
    let res = resource(&plan.name);
    match c.s3.head_bucket().bucket(&plan.name).send().await {
        Ok(_) => Ok(true),
        Err(e) => match status_of(&e) {
            Some(404) => Ok(false),
            Some(403) => Err(AwsError::Terminal {
                operation: "HeadBucket".into(),
                resource: res,
                code: "BucketOwnedByAnotherAccount".into(),
                message: "the bucket name is taken (bucket names are global across AWS accounts, or the operator may not read it): choose spec.archive.bucket".into(),
            }),
            Some(301) => Err(AwsError::Terminal {
                operation: "HeadBucket".into(),
                resource: res,
                code: "BucketInAnotherRegion".into(),
                message: format!("the bucket exists outside {}: the collector writes to the pipeline's region", plan.region),
            }),
            _ => Err(classify("HeadBucket", &res, e)),
        },
    }
}

pub(super) async fn tags(c: &AwsClients, name: &str) -> Result<BTreeMap<String, String>, AwsError> {
    let out = optional(
        c.s3.get_bucket_tagging().bucket(name).send().await,
        "GetBucketTagging",
        &resource(name),
    )?;
    Ok(out
        .map(|o| {
            o.tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect()
        })
        .unwrap_or_default())
}

/// Every setting [`settings::diff`] compares, one Get call each.
pub async fn observe(c: &AwsClients, name: &str) -> Result<ObservedBucket, AwsError> {
    let res = resource(name);
    let versioning = c.s3.get_bucket_versioning().bucket(name).send().await;
    let versioning = versioning.map_err(|e| classify("GetBucketVersioning", &res, e))?;
    let lock = c.s3.get_object_lock_configuration().bucket(name).send().await;
    let lock = optional(lock, "GetObjectLockConfiguration", &res)?;
    let lock = lock.as_ref().and_then(|l| l.object_lock_configuration());
    let retention = (lock.and_then(|l| l.rule()).and_then(|r| r.default_retention())).map(|d| Retention {
        mode: d.mode().map(|m| m.as_str().to_string()).unwrap_or_default(),
        years: d.years(),
        days: d.days(),
    });
    let enc = optional(
        c.s3.get_bucket_encryption().bucket(name).send().await,
        "GetBucketEncryption",
        &res,
    )?;
    let encryption = (enc.as_ref().and_then(|e| e.server_side_encryption_configuration()))
        .and_then(|c| c.rules().first())
        .and_then(|r| {
            let d = r.apply_server_side_encryption_by_default()?;
            let key = d.kms_master_key_id().map(String::from);
            Some((
                d.sse_algorithm().as_str().to_string(),
                key,
                r.bucket_key_enabled() == Some(true),
            ))
        });
    let pab = optional(
        c.s3.get_public_access_block().bucket(name).send().await,
        "GetPublicAccessBlock",
        &res,
    )?;
    let public_access_block = (pab.as_ref().and_then(|p| p.public_access_block_configuration())).map(|p| {
        [
            p.block_public_acls() == Some(true),
            p.ignore_public_acls() == Some(true),
            p.block_public_policy() == Some(true),
            p.restrict_public_buckets() == Some(true),
        ]
    });
    let policy = optional(
        c.s3.get_bucket_policy().bucket(name).send().await,
        "GetBucketPolicy",
        &res,
    )?;
    let policy = policy.and_then(|p| p.policy().and_then(|t| serde_json::from_str(t).ok()));
    let lc = c.s3.get_bucket_lifecycle_configuration().bucket(name).send().await;
    let lc = optional(lc, "GetBucketLifecycleConfiguration", &res)?;
    let lifecycle = (lc.as_ref().map(|l| l.rules()).unwrap_or_default().iter())
        .map(|r| ObservedRule {
            id: r.id().map(String::from),
            enabled: r.status().as_str() == "Enabled",
            prefix: r.filter().and_then(|f| f.prefix()).map(String::from),
            transitions: (r.transitions().iter())
                .map(|t| (t.days(), t.storage_class().map(|s| s.as_str().to_string())))
                .collect(),
            raw: r.clone(),
        })
        .collect();
    Ok(ObservedBucket {
        tags: tags(c, name).await?,
        versioning: versioning.status().map(|s| s.as_str().to_string()),
        lock_enabled: lock
            .and_then(|l| l.object_lock_enabled())
            .is_some_and(|e| e.as_str() == "Enabled"),
        retention,
        encryption,
        public_access_block,
        policy,
        lifecycle,
    })
}
