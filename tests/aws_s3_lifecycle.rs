//! The archive bucket against moto over its life: drift reported or corrected (a COMPLIANCE
//! retention only raised), deletion that keeps a locked bucket and its key, a failing bucket step
//! that stops before the role.

#[path = "support/archive.rs"]
mod archive;
mod support;

use archive::*;
use aws_sdk_s3::types::{
    DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule,
    PublicAccessBlockConfiguration,
};
use mlobs::aws::apply::{Step, ensure_all};
use mlobs::aws::s3;
use mlobs::crd::DriftPolicy;
use serde_json::json;
use support::moto;

#[tokio::test]
async fn drift_is_reported_under_report_corrected_under_correct_and_a_retention_never_lowered() {
    let (_, b, c, me) = keyless("s3drift").await;
    s3::ensure(&c, &b, None, &me, false, DriftPolicy::Correct)
        .await
        .expect("create");
    let weaken = |mode: ObjectLockRetentionMode, years: i32| {
        ObjectLockConfiguration::builder()
            .object_lock_enabled(ObjectLockEnabled::Enabled)
            .rule(
                ObjectLockRule::builder()
                    .default_retention(DefaultRetention::builder().mode(mode).years(years).build())
                    .build(),
            )
            .build()
    };
    // moto refuses Object Lock changes on a bucket with objects (AWS does not): the bucket is empty.
    c.s3.put_object_lock_configuration()
        .bucket(&b.name)
        .object_lock_configuration(weaken(ObjectLockRetentionMode::Governance, 1))
        .send()
        .await
        .expect("weaken the lock");
    let open = PublicAccessBlockConfiguration::builder()
        .block_public_acls(false)
        .ignore_public_acls(true)
        .block_public_policy(false)
        .restrict_public_buckets(true)
        .build();
    c.s3.put_public_access_block()
        .bucket(&b.name)
        .public_access_block_configuration(open)
        .send()
        .await
        .expect("open");
    c.s3.delete_bucket_policy()
        .bucket(&b.name)
        .send()
        .await
        .expect("drop policy");

    let (_, reported) = s3::ensure(&c, &b, None, &me, false, DriftPolicy::Report)
        .await
        .expect("report");
    let fields: Vec<(&str, bool)> = reported.iter().map(|d| (d.field.as_str(), d.corrected)).collect();
    assert_eq!(
        fields,
        [
            ("publicAccessBlock", false),
            ("bucketPolicy", false),
            ("objectLock", false)
        ]
    );
    assert_eq!(reported[2].actual, "GOVERNANCE 1 years");
    assert!(observe(&c, &b.name).await.policy.is_none(), "Report changes nothing");

    let (_, corrected) = s3::ensure(&c, &b, None, &me, false, DriftPolicy::Correct)
        .await
        .expect("correct");
    assert!(
        corrected.iter().all(|d| d.corrected) && corrected.len() == 3,
        "{corrected:?}"
    );
    let o = observe(&c, &b.name).await;
    assert_eq!(
        o.retention.map(|r| (r.mode, r.years)),
        Some(("COMPLIANCE".into(), Some(7)))
    );
    assert_eq!(o.public_access_block, Some([true; 4]));
    assert!(o.policy.is_some());
    let (_, none) = s3::ensure(&c, &b, None, &me, false, DriftPolicy::Correct)
        .await
        .expect("steady");
    assert!(none.is_empty(), "{none:?}");

    // Someone raised the retention to 10 years: reported, never lowered, even under Correct.
    c.s3.put_object_lock_configuration()
        .bucket(&b.name)
        .object_lock_configuration(weaken(ObjectLockRetentionMode::Compliance, 10))
        .send()
        .await
        .expect("raise");
    let (_, raised) = s3::ensure(&c, &b, None, &me, false, DriftPolicy::Correct)
        .await
        .expect("raised");
    let fields: Vec<(&str, bool)> = raised.iter().map(|d| (d.field.as_str(), d.corrected)).collect();
    assert_eq!(fields, [("objectLock", false)]);
    assert_eq!(observe(&c, &b.name).await.retention.and_then(|r| r.years), Some(10));
}

#[tokio::test]
async fn deletion_keeps_a_locked_bucket_and_its_key_and_says_why() {
    let e = effective(
        &moto::unique("s3delete"),
        "us-east-1",
        json!({"deletionPolicy": "Delete"}),
    );
    let (plan, opts) = plan_and_opts(&e);
    let b = bucket_plan(&plan);
    let c = moto::clients().await;
    let out = ensure_all(&c, &plan, &opts).await.expect("ensure");
    without_policy(&c, &b.name).await;
    put_object(&c, &b.name, "logs/team-a/train/x.json.gz")
        .await
        .expect("an archived object");
    let gone = delete(&c, &plan, &opts, &out).await.expect("delete");
    let retained = gone.retained.expect("the bucket is retained");
    assert_eq!(retained.bucket, b.name);
    assert!(
        retained
            .message
            .contains("although deletionPolicy is Delete: Object Lock"),
        "{}",
        retained.message
    );
    // The bucket and its object stay, without our tags; the key that decrypts them is not
    // scheduled for deletion; the log groups and the role are gone.
    c.s3.head_bucket().bucket(&b.name).send().await.expect("bucket kept");
    let o = observe(&c, &b.name).await;
    assert!(o.tags.keys().all(|k| !k.starts_with("mlobs.io/")), "{:?}", o.tags);
    let key = c
        .kms
        .describe_key()
        .key_id(out.kms_key_id.clone().unwrap_or_default())
        .send()
        .await
        .expect("key");
    let state = key
        .key_metadata()
        .and_then(|m| m.key_state())
        .map(|s| s.as_str().to_string());
    assert_eq!(state.as_deref(), Some("Enabled"));
    let role = plan.role.arn().rsplit('/').next().unwrap_or_default().to_string();
    assert!(
        c.iam.get_role().role_name(role).send().await.is_err(),
        "the role is deleted"
    );
    // Again: the bucket is no longer ours, nothing more happens.
    let again = delete(&c, &plan, &opts, &out).await.expect("idempotent");
    assert!(again.retained.is_none());
    c.s3.head_bucket().bucket(&b.name).send().await.expect("still there");
}

#[tokio::test]
async fn a_failing_bucket_step_stops_before_the_role() {
    let e = effective(&moto::unique("s3order"), "us-east-1", json!({}));
    let (plan, opts) = plan_and_opts(&e);
    let c = moto::clients().await;
    // The derived name taken by another pipeline's bucket: the role is never created.
    foreign_bucket(&c, &bucket_plan(&plan).name, &[("mlobs.io/pipeline", "team-z/x")]).await;
    let err = ensure_all(&c, &plan, &opts).await.expect_err("conflict");
    assert_eq!(err.step, Step::ArchiveBucket);
    assert!(err.partial.kms_key_arn.is_some() && err.partial.log_group_arns.len() == 2);
    assert_eq!(c.calls.of("CreateRole"), 0);
}
