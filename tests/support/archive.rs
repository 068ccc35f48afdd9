//! Helpers of the archive bucket's moto tests (tests/aws_s3.rs, tests/aws_s3_lifecycle.rs): a
//! pipeline with an archive, its plan and apply options, reads and writes of the bucket.

#![allow(dead_code)]

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Tag, Tagging};
use mlobs::aws::apply::{ApplyOptions, AwsOutcome, DeleteOutcome, StepError, delete_all};
use mlobs::aws::s3_settings::ObservedBucket;
use mlobs::aws::{AwsClients, Owner, s3};
use mlobs::crd::{DeletionPolicy, DriftPolicy};
use mlobs::desired::aws_plan::archive::ArchiveBucketPlan;
use mlobs::desired::aws_plan::{self, AwsPlan};
use mlobs::desired::effective::Effective;
use serde_json::{Value, json};

use super::support::aws_pipeline;
pub use super::support::aws_pipeline::owner;
use super::support::moto;

/// A pipeline with a 7-year DEEP_ARCHIVE archive, and the spec fields of `extra` over it.
pub fn effective(cluster: &str, region: &str, extra: Value) -> Effective {
    let mut spec = json!({"archive": {"retentionYears": 7, "transitionAfterDays": 30, "storageClass": "DEEP_ARCHIVE"}});
    if let (Some(s), Some(x)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(x.clone());
    }
    aws_pipeline::effective_in(cluster, region, "train", spec)
}

pub fn plan_and_opts(e: &Effective) -> (AwsPlan, ApplyOptions) {
    aws_pipeline::plan_and_opts(e, DriftPolicy::Correct)
}

pub fn bucket_plan(plan: &AwsPlan) -> ArchiveBucketPlan {
    plan.archive.clone().expect("the plan has an archive bucket")
}

/// A pipeline without a KMS key (the bucket alone can be ensured), its bucket, clients and owner.
pub async fn keyless(prefix: &str) -> (Effective, ArchiveBucketPlan, AwsClients, Owner) {
    let e = effective(
        &moto::unique(prefix),
        "us-east-1",
        json!({"encryption": {"kms": {"disabled": true}}}),
    );
    let b = bucket_plan(&aws_plan::build(&e).expect("plan"));
    let me = owner(&e);
    (e, b, moto::clients().await, me)
}

/// `delete_all` under `deletionPolicy: Delete`, with the key an ensure created.
pub async fn delete(
    c: &AwsClients,
    plan: &AwsPlan,
    opts: &ApplyOptions,
    out: &AwsOutcome,
) -> Result<DeleteOutcome, StepError> {
    delete_all(c, plan, &opts.owner, out.kms_key_id.as_deref(), DeletionPolicy::Delete).await
}

pub async fn observe(c: &AwsClients, name: &str) -> ObservedBucket {
    s3::observe(c, name).await.expect("observe")
}

pub async fn put_object(c: &AwsClients, bucket: &str, key: &str) -> Result<Option<String>, String> {
    c.s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b"{\"resourceLogs\":[]}"))
        .send()
        .await
        .map(|o| o.version_id().map(String::from))
        .map_err(|e| format!("{e:?}"))
}

pub fn tagging(tags: &[(&str, &str)]) -> Tagging {
    let set: Vec<Tag> = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(*k).value(*v).build().expect("tag"))
        .collect();
    Tagging::builder().set_tag_set(Some(set)).build().expect("tagging")
}

/// A bucket created by someone else (Object Lock on, nothing else), tagged with `tags`.
pub async fn foreign_bucket(c: &AwsClients, name: &str, tags: &[(&str, &str)]) {
    c.s3.create_bucket()
        .bucket(name)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("create");
    if !tags.is_empty() {
        c.s3.put_bucket_tagging()
            .bucket(name)
            .tagging(tagging(tags))
            .send()
            .await
            .expect("tag");
    }
}

/// Removes the TLS-only bucket policy, which moto applies without its condition.
pub async fn without_policy(c: &AwsClients, bucket: &str) {
    c.s3.delete_bucket_policy()
        .bucket(bucket)
        .send()
        .await
        .expect("delete policy");
}
