//! The archive bucket against moto: created with Object Lock (COMPLIANCE, N years), versioning,
//! SSE-KMS with the pipeline's key, public access blocked, a TLS-only policy, the lifecycle rule
//! and ownership tags, in order between the log groups and the role; adopted by tag; a foreign
//! bucket refused by name; drift reported or corrected (a retention only raised); never deleted.

mod support;

use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule,
    PublicAccessBlockConfiguration, Tag, Tagging,
};
use mlobs::aws::apply::{ApplyOptions, AwsOutcome, DeleteOutcome, Step, delete_all, ensure_all};
use mlobs::aws::s3_settings::ObservedBucket;
use mlobs::aws::{AwsClients, AwsError, Owner, s3};
use mlobs::crd::{DeletionPolicy, DriftPolicy, MLObservabilityPipeline};
use mlobs::desired::aws_plan::archive::ArchiveBucketPlan;
use mlobs::desired::aws_plan::{self, AwsPlan, RolePlan};
use mlobs::desired::effective::{Context, Effective};
use mlobs::desired::merge::merge;
use serde_json::{Value, json};
use support::moto;

fn effective(cluster: &str, region: &str, extra: Value) -> Effective {
    let mut spec = json!({"clusterName": cluster, "region": region,
        "identity": {"mode": "IRSA", "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/TEST"},
        "archive": {"retentionYears": 7, "transitionAfterDays": 30, "storageClass": "DEEP_ARCHIVE"}});
    if let (Some(s), Some(x)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(x.clone());
    }
    let p: MLObservabilityPipeline = serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": "train", "namespace": "team-a"}, "spec": spec}))
    .expect("pipeline");
    merge(&p, None, &Context::default()).expect("merge").effective
}

fn owner(e: &Effective) -> Owner {
    Owner {
        cluster: e.cluster_name.clone(),
        pipeline: e.pipeline_id(),
    }
}

fn plan_and_opts(e: &Effective) -> (AwsPlan, ApplyOptions) {
    let plan = aws_plan::build(e).expect("plan");
    let opts = ApplyOptions {
        owner: owner(e),
        adopt: false,
        drift: DriftPolicy::Correct,
        known_key_id: None,
        scan_for_key: false,
        log_group_snapshot: None,
    };
    (plan, opts)
}

fn bucket_plan(plan: &AwsPlan) -> ArchiveBucketPlan {
    plan.archive.clone().expect("the plan has an archive bucket")
}

/// A pipeline without a KMS key (the bucket alone can be ensured), its bucket, clients and owner.
async fn keyless(prefix: &str) -> (Effective, ArchiveBucketPlan, AwsClients, Owner) {
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
async fn delete(
    c: &AwsClients,
    plan: &AwsPlan,
    opts: &ApplyOptions,
    out: &AwsOutcome,
) -> Result<DeleteOutcome, mlobs::aws::apply::StepError> {
    delete_all(c, plan, &opts.owner, out.kms_key_id.as_deref(), DeletionPolicy::Delete).await
}

async fn observe(c: &AwsClients, name: &str) -> ObservedBucket {
    s3::observe(c, name).await.expect("observe")
}

async fn put_object(c: &AwsClients, bucket: &str, key: &str) -> Result<Option<String>, String> {
    c.s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b"{\"resourceLogs\":[]}"))
        .send()
        .await
        .map(|o| o.version_id().map(String::from))
        .map_err(|e| format!("{e:?}"))
}

fn tagging(tags: &[(&str, &str)]) -> Tagging {
    let set: Vec<Tag> = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(*k).value(*v).build().expect("tag"))
        .collect();
    Tagging::builder().set_tag_set(Some(set)).build().expect("tagging")
}

/// A bucket created by someone else (Object Lock on, nothing else), tagged with `tags`.
async fn foreign_bucket(c: &AwsClients, name: &str, tags: &[(&str, &str)]) {
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

/// Removes the TLS-only bucket policy, which moto applies without its condition.
async fn without_policy(c: &AwsClients, bucket: &str) {
    c.s3.delete_bucket_policy()
        .bucket(bucket)
        .send()
        .await
        .expect("delete policy");
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
