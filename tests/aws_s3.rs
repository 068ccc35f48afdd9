//! The archive bucket against moto, created and adopted: Object Lock (COMPLIANCE, N years),
//! versioning, SSE-KMS with the pipeline's key, public access blocked, a TLS-only policy, the
//! lifecycle rule and ownership tags, before the role; in another region with its location
//! constraint; adopted by tag; a foreign bucket refused by name. Drift and deletion:
//! tests/aws_s3_lifecycle.rs.

#[path = "support/archive.rs"]
mod archive;
mod support;

use archive::*;
use aws_sdk_s3::config::RequestChecksumCalculation;
use mlobs::aws::apply::ensure_all;
use mlobs::aws::{AwsClients, AwsError, s3};
use mlobs::crd::DriftPolicy;
use mlobs::desired::aws_plan::{self, RolePlan};
use serde_json::json;
use support::moto;

#[tokio::test]
async fn the_bucket_is_created_locked_encrypted_private_tls_only_with_its_lifecycle_before_the_role() {
    let e = effective(&moto::unique("s3create"), "us-east-1", json!({}));
    let (plan, opts) = plan_and_opts(&e);
    let b = bucket_plan(&plan);
    let c = moto::clients().await;
    let out = ensure_all(&c, &plan, &opts).await.expect("ensure");
    assert!(out.ready(&plan), "{out:?}");
    assert_eq!(out.archive_bucket_arn.as_deref(), Some(b.arn.as_str()));
    assert!(out.drift.is_empty(), "{:?}", out.drift);
    // The role's policy names the bucket's prefix: the bucket exists before it.
    let RolePlan::Create { inline_policy, .. } = &plan.role else {
        panic!("a created role")
    };
    assert!(
        inline_policy
            .to_string()
            .contains(&format!("{}/logs/team-a/train/*", b.arn))
    );

    let o = observe(&c, &b.name).await;
    assert!(o.lock_enabled);
    let r = o.retention.clone().expect("default retention");
    assert_eq!((r.mode.as_str(), r.years), ("COMPLIANCE", Some(7)));
    assert_eq!(
        o.versioning.as_deref(),
        Some("Enabled"),
        "Object Lock turns versioning on"
    );
    let key = out.kms_key_arn.clone().expect("key");
    let (alg, used, bucket_key) = o.encryption.clone().expect("encryption");
    assert_eq!((alg.as_str(), bucket_key), ("aws:kms", true));
    assert!(
        key.ends_with(used.as_deref().unwrap_or("-").rsplit('/').next().unwrap_or("-")),
        "{used:?} vs {key}"
    );
    assert_eq!(o.public_access_block, Some([true; 4]));
    let policy = o.policy.clone().expect("bucket policy");
    let deny = &policy["Statement"][0];
    assert_eq!(deny["Sid"], "DenyInsecureTransport");
    assert_eq!(deny["Condition"]["Bool"]["aws:SecureTransport"], "false");
    let rule = o
        .lifecycle
        .iter()
        .find(|r| r.id.as_deref() == Some("mlobs-archive-transition"))
        .expect("rule");
    assert_eq!(rule.prefix.as_deref(), Some("logs/team-a/train/"));
    assert_eq!(rule.transitions, [(Some(30), Some("DEEP_ARCHIVE".to_string()))]);
    assert_eq!(
        o.tags.get("mlobs.io/pipeline").map(String::as_str),
        Some("team-a/train")
    );
    assert_eq!(o.tags.get("mlobs.io/cluster"), Some(&e.cluster_name));

    // Nothing changed since: a second ensure writes nothing.
    let again = moto::clients().await;
    let out2 = ensure_all(&again, &plan, &opts).await.expect("re-run");
    assert!(out2.drift.is_empty(), "{:?}", out2.drift);
    assert_eq!(again.calls.mutating(), 0, "{:?}", again.calls.snapshot());

    // moto evaluates a bucket policy without its conditions: the TLS-only Deny denies every
    // object request there, plaintext or not. Objects are written with the policy removed.
    assert!(put_object(&c, &b.name, "logs/team-a/train/denied.json").await.is_err());
    without_policy(&c, &b.name).await;
    // A PUT with a checksum (the Rust SDK names its algorithm, x-amz-sdk-checksum-algorithm) is
    // accepted and locked: its version cannot be deleted. Without one Object Lock refuses it.
    let version = put_object(
        &c,
        &b.name,
        "logs/team-a/train/year=2026/month=01/day=01/hour=00/a.json.gz",
    )
    .await
    .expect("a checksummed PUT is accepted");
    let bare = AwsClients {
        s3: aws_sdk_s3::Client::from_conf(
            c.s3.config()
                .to_builder()
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .build(),
        ),
        ..c.clone()
    };
    assert!(
        put_object(&bare, &b.name, "logs/team-a/train/b.json").await.is_err(),
        "no checksum, no PUT"
    );
    let deleted =
        c.s3.delete_object()
            .bucket(&b.name)
            .key("logs/team-a/train/year=2026/month=01/day=01/hour=00/a.json.gz")
            .set_version_id(version)
            .send()
            .await;
    assert!(deleted.is_err(), "a COMPLIANCE-locked version cannot be deleted");
    // The removed policy is drift, put back (into a bucket that now holds objects).
    let out3 = ensure_all(&c, &plan, &opts).await.expect("correct");
    let fields: Vec<(&str, bool)> = out3.drift.iter().map(|d| (d.field.as_str(), d.corrected)).collect();
    assert_eq!(fields, [("bucketPolicy", true)]);
    assert!(observe(&c, &b.name).await.policy.is_some());
}

#[tokio::test]
async fn outside_us_east_1_the_bucket_is_created_in_the_pipelines_region() {
    let e = effective(
        &moto::unique("s3region"),
        "eu-west-1",
        json!({"encryption": {"kms": {"disabled": true}}}),
    );
    let b = bucket_plan(&aws_plan::build(&e).expect("plan"));
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-1"))
        .endpoint_url(moto::endpoint())
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await;
    let c = AwsClients::new(&conf);
    let (arn, drift) = s3::ensure(&c, &b, None, &owner(&e), false, DriftPolicy::Correct)
        .await
        .expect("ensure");
    assert_eq!((arn, drift), (b.arn.clone(), vec![]));
    let loc =
        c.s3.get_bucket_location()
            .bucket(&b.name)
            .send()
            .await
            .expect("location");
    assert_eq!(loc.location_constraint().map(|l| l.as_str()), Some("eu-west-1"));
    let (alg, key, _) = observe(&c, &b.name).await.encryption.expect("encryption");
    assert_eq!((alg.as_str(), key), ("AES256", None), "kms disabled: SSE-S3");
}

#[tokio::test]
async fn a_bucket_tagged_for_this_pipeline_is_adopted_and_finished_and_a_foreign_one_is_refused() {
    let (e, b, c, me) = keyless("s3adopt").await;
    foreign_bucket(
        &c,
        &b.name,
        &[("mlobs.io/pipeline", "team-a/train"), ("team", "vision")],
    )
    .await;
    let (_, drift) = s3::ensure(&c, &b, None, &me, false, DriftPolicy::Report)
        .await
        .expect("ours by tag");
    assert!(drift.is_empty(), "finishing our own bucket is not drift: {drift:?}");
    let o = observe(&c, &b.name).await;
    assert_eq!(o.retention.map(|r| r.years), Some(Some(7)));
    assert_eq!(o.public_access_block, Some([true; 4]));
    assert_eq!(
        o.tags.get("team").map(String::as_str),
        Some("vision"),
        "other tags are kept"
    );
    assert_eq!(o.tags.get("mlobs.io/cluster"), Some(&e.cluster_name));

    // Another pipeline's bucket (or an untagged one under a name of the user's): NameConflict,
    // naming the bucket, and nothing is touched. With adoption opted in it becomes ours.
    let other = effective(
        &moto::unique("s3foreign"),
        "us-east-1",
        json!({"encryption": {"kms": {"disabled": true}},
        "archive": {"bucket": moto::unique("user-bucket-").to_lowercase()}}),
    );
    let ob = bucket_plan(&aws_plan::build(&other).expect("plan"));
    foreign_bucket(&c, &ob.name, &[("mlobs.io/pipeline", "team-b/other")]).await;
    let err = s3::ensure(&c, &ob, None, &owner(&other), false, DriftPolicy::Correct)
        .await
        .expect_err("not ours");
    assert_eq!(
        err,
        AwsError::NameConflict {
            resource: format!("s3Bucket:{}", ob.name)
        }
    );
    assert!(err.to_string().contains(&ob.name), "{err}");
    let untouched = observe(&c, &ob.name).await;
    assert!(untouched.retention.is_none() && untouched.public_access_block.is_none());
    s3::ensure(&c, &ob, None, &owner(&other), true, DriftPolicy::Correct)
        .await
        .expect("adopted");
    let adopted = observe(&c, &ob.name).await;
    assert_eq!(
        adopted.tags.get("mlobs.io/pipeline").map(String::as_str),
        Some("team-a/train")
    );
    assert_eq!(adopted.retention.map(|r| r.mode), Some("COMPLIANCE".into()));
}
