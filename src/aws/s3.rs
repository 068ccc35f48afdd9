//! The archive bucket: created with Object Lock (COMPLIANCE default retention), versioning (which
//! Object Lock turns on), SSE-KMS with the pipeline's key and a Bucket Key, all public access
//! blocked, a TLS-only bucket policy, a lifecycle transition and ownership tags; adopted only by
//! tag (or opt-in); drift observed and, under `Correct`, put back (a COMPLIANCE retention only
//! upwards); never deleted.
//!
//! Create order: CreateBucket (Object Lock on, ownership tags in the same call) → tags (moto
//! ignores tags given to CreateBucket) → encryption → public access block → policy → lifecycle
//! → PutObjectLockConfiguration last, so that a bucket of ours without a default retention is a
//! create that stopped half way, finished by the next ensure in every drift mode.

use std::collections::BTreeMap;

use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, Tag, Tagging, VersioningConfiguration,
};

use super::error::{classify, code};
pub use super::s3_observe::observe;
use super::s3_observe::{exists, tags};
use super::s3_settings::{self as settings, ObservedBucket, resource};
use super::{AwsClients, AwsError, Drift, Owner};
use crate::crd::{DeletionPolicy, DriftPolicy};
use crate::desired::aws_plan::archive::ArchiveBucketPlan;

const OWN_TAG_PREFIX: &str = "mlobs.io/";
/// us-east-1 takes no LocationConstraint (S3 refuses one naming it).
const DEFAULT_REGION: &str = "us-east-1";

/// The bucket kept on deletion (it always is), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    pub bucket: String,
    /// For status and the event.
    pub message: String,
}

/// The key the bucket is encrypted with: the applied key, else the plan's existing key ARN.
fn desired_key<'a>(plan: &'a ArchiveBucketPlan, key_arn: Option<&'a str>) -> Result<Option<&'a str>, AwsError> {
    super::planned_key(&plan.kms_key, key_arn, "CreateBucket", &resource(&plan.name))
}

fn sdk_tags(tags: &BTreeMap<String, String>, res: &str) -> Result<Vec<Tag>, AwsError> {
    (tags.iter())
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("PutBucketTagging", res, e.to_string()))
}

fn invalid(op: &str, res: &str, message: String) -> AwsError {
    AwsError::Terminal {
        operation: op.into(),
        resource: res.into(),
        code: "InvalidRequest".into(),
        message,
    }
}

async fn put_tags(c: &AwsClients, name: &str, tags: &BTreeMap<String, String>) -> Result<(), AwsError> {
    let res = resource(name);
    let tagging = Tagging::builder()
        .set_tag_set(Some(sdk_tags(tags, &res)?))
        .build()
        .map_err(|e| invalid("PutBucketTagging", &res, e.to_string()))?;
    c.s3.put_bucket_tagging()
        .bucket(name)
        .tagging(tagging)
        .send()
        .await
        .map(drop)
        .map_err(|e| classify("PutBucketTagging", &res, e))
}

/// CreateBucket with Object Lock on and the ownership tags (taken in the same call by S3, so a
/// crash cannot leave an untagged bucket of ours there; moto ignores them).
async fn create(c: &AwsClients, plan: &ArchiveBucketPlan) -> Result<(), AwsError> {
    let res = resource(&plan.name);
    let mut conf = CreateBucketConfiguration::builder().set_tags(Some(sdk_tags(&plan.tags, &res)?));
    if plan.region != DEFAULT_REGION {
        conf = conf.location_constraint(BucketLocationConstraint::from(plan.region.as_str()));
    }
    let sent =
        c.s3.create_bucket()
            .bucket(&plan.name)
            .object_lock_enabled_for_bucket(true)
            .create_bucket_configuration(conf.build())
            .send()
            .await;
    match sent {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("BucketAlreadyOwnedByYou") => Err(AwsError::Retryable {
            operation: "CreateBucket".into(),
            resource: res,
            code: "BucketAlreadyOwnedByYou".into(),
            message: "created concurrently; re-observing".into(),
        }),
        Err(e) if code(&e) == Some("BucketAlreadyExists") => Err(AwsError::Terminal {
            operation: "CreateBucket".into(),
            resource: res,
            code: "BucketAlreadyExists".into(),
            message: "another AWS account owns this bucket name (names are global): choose spec.archive.bucket".into(),
        }),
        Err(e) => Err(classify("CreateBucket", &res, e)),
    }
}

/// Puts one setting back (`field` as in [`settings::FIELDS`]).
async fn put(
    c: &AwsClients,
    plan: &ArchiveBucketPlan,
    o: &ObservedBucket,
    field: &str,
    key: Option<&str>,
) -> Result<(), AwsError> {
    let (name, res) = (&plan.name, resource(&plan.name));
    let bad = |op: &'static str| move |m: String| invalid(op, &resource(name), m);
    let (op, sent) = match field {
        "versioning" => {
            let v = VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build();
            let r =
                c.s3.put_bucket_versioning()
                    .bucket(name)
                    .versioning_configuration(v)
                    .send()
                    .await;
            (
                "PutBucketVersioning",
                r.map(drop).map_err(|e| classify("PutBucketVersioning", &res, e)),
            )
        }
        "encryption" => {
            let conf = settings::encryption(key).map_err(bad("PutBucketEncryption"))?;
            let r =
                c.s3.put_bucket_encryption()
                    .bucket(name)
                    .server_side_encryption_configuration(conf)
                    .send()
                    .await;
            (
                "PutBucketEncryption",
                r.map(drop).map_err(|e| classify("PutBucketEncryption", &res, e)),
            )
        }
        "publicAccessBlock" => {
            let conf = settings::public_access_block();
            let r =
                c.s3.put_public_access_block()
                    .bucket(name)
                    .public_access_block_configuration(conf)
                    .send()
                    .await;
            (
                "PutPublicAccessBlock",
                r.map(drop).map_err(|e| classify("PutPublicAccessBlock", &res, e)),
            )
        }
        "bucketPolicy" => {
            let policy = settings::merged_policy(o.policy.as_ref(), &plan.bucket_policy);
            let r =
                c.s3.put_bucket_policy()
                    .bucket(name)
                    .policy(policy.to_string())
                    .send()
                    .await;
            (
                "PutBucketPolicy",
                r.map(drop).map_err(|e| classify("PutBucketPolicy", &res, e)),
            )
        }
        "lifecycle" => {
            let conf = settings::lifecycle(plan, &o.lifecycle).map_err(bad("PutBucketLifecycleConfiguration"))?;
            let r =
                c.s3.put_bucket_lifecycle_configuration()
                    .bucket(name)
                    .lifecycle_configuration(conf)
                    .send()
                    .await;
            let r = r
                .map(drop)
                .map_err(|e| classify("PutBucketLifecycleConfiguration", &res, e));
            ("PutBucketLifecycleConfiguration", r)
        }
        "objectLock" => {
            let conf = settings::lock_configuration(plan);
            let r =
                c.s3.put_object_lock_configuration()
                    .bucket(name)
                    .object_lock_configuration(conf)
                    .send()
                    .await;
            let r = r.map(drop).map_err(|e| classify("PutObjectLockConfiguration", &res, e));
            ("PutObjectLockConfiguration", r)
        }
        _ => return Ok(()),
    };
    tracing::debug!(operation = op, bucket = %name, "archive bucket setting put");
    sent
}

/// Ensures the bucket; returns its ARN and the drift found. Ownership is checked before anything
/// changes: a bucket whose tags name another pipeline (or none) is a `NameConflict` unless
/// adoption is opted in.
pub async fn ensure(
    c: &AwsClients,
    plan: &ArchiveBucketPlan,
    key_arn: Option<&str>,
    owner: &Owner,
    adopt: bool,
    drift: DriftPolicy,
) -> Result<(String, Vec<Drift>), AwsError> {
    let key = desired_key(plan, key_arn)?;
    let created = if exists(c, plan).await? {
        false
    } else {
        create(c, plan).await?;
        true
    };
    let mut o = observe(c, &plan.name).await?;
    let ours = owner.owns_tags(&o.tags);
    // A derived name embeds a hash of account, region and pipeline: an untagged bucket of that
    // name with Object Lock on and no default retention yet is our create that stopped before
    // its tags stuck (moto drops CreateBucket's tags).
    let interrupted = plan.derived_name && o.tags.is_empty() && o.lock_enabled && o.retention.is_none();
    if !(ours || adopt || created || interrupted) {
        return Err(AwsError::NameConflict {
            resource: resource(&plan.name),
        });
    }
    let adopting = !ours && !created && !interrupted;
    let correct = drift == DriftPolicy::Correct;
    // A bucket of ours without a default retention is an unfinished create: every setting (tags
    // too) is put in every drift mode, and it is not drift. Object Lock needs versioning first
    // (an adopted bucket may lack both).
    let finishing = created || adopting || interrupted || o.retention.is_none();
    let mut drifts = Vec::new();
    let missing: BTreeMap<String, String> = (plan.tags.iter())
        .filter(|(k, v)| o.tags.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !missing.is_empty() {
        if finishing || correct {
            let mut all = o.tags.clone();
            all.extend(missing.clone());
            put_tags(c, &plan.name, &all).await?;
        }
        if !finishing {
            let keys: Vec<String> = missing.keys().cloned().collect();
            drifts.push(Drift {
                resource: resource(&plan.name),
                field: "tags".into(),
                desired: keys.join(", "),
                actual: "absent or different".into(),
                corrected: correct,
            });
        }
    }
    let found = settings::diff(plan, &o, key);
    let mut order: Vec<&Drift> = found.iter().collect();
    order.sort_by_key(|d| match d.field.as_str() {
        "versioning" => 0,
        "objectLock" => 2,
        _ => 1,
    });
    for d in order {
        let raise = d.field != "objectLock" || settings::retention_may_be_raised(plan, &o);
        let fix = raise && (finishing || correct);
        if fix {
            put(c, plan, &o, &d.field, key).await?;
            if d.field == "versioning" {
                o.versioning = Some("Enabled".into());
            }
        }
        if !finishing {
            drifts.push(Drift {
                corrected: fix,
                ..d.clone()
            });
        }
    }
    Ok((plan.arn.clone(), drifts))
}

/// Never deletes the bucket: Object Lock in COMPLIANCE mode forbids deleting its objects before
/// their retention ends, and a bucket with objects cannot be deleted. Its mlobs ownership tags
/// are removed under both deletion policies (as for a retained log group); under `Delete` the
/// answer says why it stays.
pub async fn delete(
    c: &AwsClients,
    plan: &ArchiveBucketPlan,
    owner: &Owner,
    policy: DeletionPolicy,
) -> Result<Option<Retained>, AwsError> {
    if !exists(c, plan).await? {
        return Ok(None);
    }
    let tags = tags(c, &plan.name).await?;
    if !owner.owns_tags(&tags) {
        return Ok(None);
    }
    let rest: BTreeMap<String, String> = (tags.into_iter())
        .filter(|(k, _)| !k.starts_with(OWN_TAG_PREFIX))
        .collect();
    if rest.is_empty() {
        let res = resource(&plan.name);
        let r = c.s3.delete_bucket_tagging().bucket(&plan.name).send().await;
        r.map_err(|e| classify("DeleteBucketTagging", &res, e))?;
    } else {
        put_tags(c, &plan.name, &rest).await?;
    }
    let why = match policy {
        DeletionPolicy::Delete => "although deletionPolicy is Delete: Object Lock",
        DeletionPolicy::Retain => "(deletionPolicy Retain); Object Lock",
    };
    Ok(Some(Retained {
        bucket: plan.name.clone(),
        message: format!(
            "archive bucket {} is retained {why} (COMPLIANCE, {} years) forbids deleting its objects before their retention ends; its mlobs tags were removed",
            plan.name, plan.retention_years
        ),
    }))
}
