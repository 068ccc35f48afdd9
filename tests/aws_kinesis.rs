//! The hot path's Kinesis data stream against moto: created with SSE-KMS (the pipeline's key),
//! retention, capacity and ownership tags before the roles; a second ensure writes nothing;
//! retention and key changed outside are put back (or only reported); adopted by tag or opt-in,
//! refused otherwise; deleted or untagged per deletionPolicy, never when not ours.

#[path = "support/archive.rs"]
mod archive;
mod support;

use archive::plan_and_opts;
use aws_sdk_kinesis::types::{StreamMode, StreamModeDetails};
use mlobs::aws::apply::{delete_all, ensure_all};
use mlobs::aws::{AwsClients, AwsError, kinesis};
use mlobs::crd::{DeletionPolicy, DriftPolicy};
use mlobs::desired::aws_plan::hot_path::StreamPlan;
use mlobs::desired::aws_plan::{self, AwsPlan, KmsRef, RolePlan};
use mlobs::desired::effective::Effective;
use mlobs::desired::hot_path::Capacity;
use serde_json::{Value, json};
use support::{aws_pipeline, moto};

fn effective(cluster: &str, hot_path: Value) -> Effective {
    aws_pipeline::effective(cluster, "train", json!({"hotPath": hot_path}))
}

fn stream(plan: &AwsPlan) -> StreamPlan {
    plan.hot_path.clone().expect("a hot path").stream
}

/// A stream plan without a key: ensured on its own, no KMS key needed.
fn keyless(s: &StreamPlan) -> StreamPlan {
    StreamPlan {
        kms_key: None,
        ..s.clone()
    }
}

async fn observed(c: &AwsClients, name: &str) -> kinesis::ObservedStream {
    kinesis::observe(c, name)
        .await
        .expect("observe")
        .expect("the stream exists")
}

#[tokio::test]
async fn the_stream_is_created_encrypted_with_the_pipeline_key_retention_and_tags_before_the_roles() {
    let e = effective(&moto::unique("kcreate"), json!({"shards": 2, "retentionHours": 48}));
    let (plan, opts) = plan_and_opts(&e);
    let s = stream(&plan);
    let c = moto::clients().await;
    let out = ensure_all(&c, &plan, &opts).await.expect("ensure");
    assert!(out.ready(&plan), "{out:?}");
    assert_eq!(out.hot_path_stream_arn.as_deref(), Some(s.arn.as_str()));
    assert!(out.drift.is_empty(), "{:?}", out.drift);

    let o = observed(&c, &s.name).await;
    let key = out.kms_key_arn.clone().expect("the pipeline's key");
    assert_eq!(o.kms_key.as_deref(), Some(key.as_str()));
    assert_eq!(o.retention_hours, 48);
    assert_eq!(o.capacity, Capacity::Provisioned { shards: 2 });
    assert_eq!(
        o.tags.get("mlobs.io/pipeline").map(String::as_str),
        Some("team-a/train")
    );
    assert!(o.active());

    // Fluent Bit's role exists, and its only permissions are the stream and the key.
    let hot = plan.hot_path.clone().expect("hot path");
    let RolePlan::Create { name, .. } = &hot.role else {
        panic!("a created role")
    };
    assert_eq!(out.hot_path_role_arn.as_deref(), Some(hot.role.arn()));
    let doc = c
        .iam
        .get_role_policy()
        .role_name(name)
        .policy_name("mlobs-hotpath")
        .send()
        .await
        .expect("inline policy");
    let text = doc.policy_document().replace("%3A", ":").replace("%2F", "/");
    assert!(text.contains(&s.arn), "{text}");
    assert!(text.contains("kinesis:PutRecords"), "{text}");
    assert!(!text.contains("kinesis:*"), "{text}");
}

#[tokio::test]
async fn a_second_ensure_of_an_unchanged_stream_makes_no_write() {
    let e = effective(&moto::unique("kidem"), json!({"retentionHours": 72}));
    let (plan, opts) = plan_and_opts(&e);
    let c = moto::clients().await;
    ensure_all(&c, &plan, &opts).await.expect("first ensure");
    c.calls.reset();
    let out = ensure_all(&c, &plan, &opts).await.expect("second ensure");
    assert!(out.drift.is_empty(), "{:?}", out.drift);
    assert_eq!(c.calls.mutating(), 0, "{:?}", c.calls.snapshot());
    // The stream costs two reads: its summary and its tags.
    assert_eq!(c.calls.of("DescribeStreamSummary"), 1);
    assert_eq!(c.calls.of("ListTagsForStream"), 1);
}

#[tokio::test]
async fn retention_changed_outside_is_put_back_under_correct_and_only_reported_under_report() {
    let e = effective(&moto::unique("kdrift"), json!({"retentionHours": 48}));
    let (plan, opts) = plan_and_opts(&e);
    let s = keyless(&stream(&plan));
    let c = moto::clients().await;
    kinesis::ensure(&c, &s, None, &opts.owner, false, DriftPolicy::Correct)
        .await
        .expect("create");
    let raise = |h: i32| {
        let c = c.clone();
        let name = s.name.clone();
        async move {
            (c.kinesis.increase_stream_retention_period().stream_name(name))
                .retention_period_hours(h)
                .send()
                .await
                .expect("changed outside")
        }
    };
    raise(96).await;
    let (_, drift) = kinesis::ensure(&c, &s, None, &opts.owner, false, DriftPolicy::Report)
        .await
        .expect("report");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!((drift[0].field.as_str(), drift[0].corrected), ("retentionHours", false));
    assert_eq!((drift[0].desired.as_str(), drift[0].actual.as_str()), ("48", "96"));
    assert_eq!(
        observed(&c, &s.name).await.retention_hours,
        96,
        "Report changes nothing"
    );

    let (_, drift) = kinesis::ensure(&c, &s, None, &opts.owner, false, DriftPolicy::Correct)
        .await
        .expect("correct");
    assert_eq!((drift[0].field.as_str(), drift[0].corrected), ("retentionHours", true));
    assert_eq!(observed(&c, &s.name).await.retention_hours, 48);
}

#[tokio::test]
async fn a_stream_encrypted_with_another_key_is_rekeyed_with_the_pipeline_key() {
    let e = effective(&moto::unique("kkey"), json!({}));
    let (plan, opts) = plan_and_opts(&e);
    let ours = "arn:aws:kms:us-east-1:123456789012:key/11111111-1111-1111-1111-111111111111";
    let s = StreamPlan {
        kms_key: Some(KmsRef::Existing { arn: ours.into() }),
        ..stream(&plan)
    };
    let c = moto::clients().await;
    kinesis::ensure(&c, &s, None, &opts.owner, false, DriftPolicy::Correct)
        .await
        .expect("create");
    assert_eq!(observed(&c, &s.name).await.kms_key.as_deref(), Some(ours));
    let other = "arn:aws:kms:us-east-1:123456789012:key/22222222-2222-2222-2222-222222222222";
    (c.kinesis.start_stream_encryption().stream_name(&s.name))
        .encryption_type(aws_sdk_kinesis::types::EncryptionType::Kms)
        .key_id(other)
        .send()
        .await
        .expect("re-keyed outside");
    let (_, drift) = kinesis::ensure(&c, &s, None, &opts.owner, false, DriftPolicy::Correct)
        .await
        .expect("correct");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!((drift[0].field.as_str(), drift[0].actual.as_str()), ("kmsKey", other));
    assert_eq!(observed(&c, &s.name).await.kms_key.as_deref(), Some(ours));
}

/// A stream created outside mlobs: untagged, on-demand.
async fn foreign_stream(c: &AwsClients, name: &str) {
    let mode = StreamModeDetails::builder()
        .stream_mode(StreamMode::OnDemand)
        .build()
        .expect("mode");
    (c.kinesis.create_stream().stream_name(name))
        .stream_mode_details(mode)
        .send()
        .await
        .expect("created outside");
}

#[tokio::test]
async fn a_stream_we_do_not_own_is_a_name_conflict_until_adoption_is_opted_in() {
    let name = moto::unique("kforeign");
    let e = effective(&moto::unique("kadopt"), json!({"stream": name}));
    let (plan, opts) = plan_and_opts(&e);
    let s = keyless(&stream(&plan));
    let c = moto::clients().await;
    foreign_stream(&c, &name).await;
    c.calls.reset();
    let err = kinesis::ensure(&c, &s, None, &opts.owner, false, DriftPolicy::Correct)
        .await
        .expect_err("not ours");
    assert!(matches!(err, AwsError::NameConflict { .. }), "{err}");
    assert_eq!(c.calls.mutating(), 0, "nothing is touched: {:?}", c.calls.snapshot());

    let (_, drift) = kinesis::ensure(&c, &s, None, &opts.owner, true, DriftPolicy::Report)
        .await
        .expect("adopted");
    assert!(drift.is_empty(), "adoption is not drift: {drift:?}");
    let o = observed(&c, &name).await;
    assert_eq!(
        o.tags.get("mlobs.io/pipeline").map(String::as_str),
        Some("team-a/train")
    );
    assert_eq!(o.capacity, Capacity::OnDemand);
    // Once tagged it is ours: no adopt flag needed any more.
    kinesis::ensure(&c, &s, None, &opts.owner, false, DriftPolicy::Correct)
        .await
        .expect("ours by tag");
}

#[tokio::test]
async fn delete_removes_our_stream_and_retain_only_removes_our_tags() {
    let c = moto::clients().await;
    for (policy, survives) in [(DeletionPolicy::Delete, false), (DeletionPolicy::Retain, true)] {
        let e = effective(&moto::unique("kdel"), json!({}));
        let (plan, opts) = plan_and_opts(&e);
        let s = stream(&plan);
        ensure_all(&c, &plan, &opts).await.expect("ensure");
        (c.kinesis.add_tags_to_stream().stream_name(&s.name))
            .tags("team", "a")
            .send()
            .await
            .expect("a user tag");
        delete_all(&c, &plan, &opts.owner, None, policy).await.expect("delete");
        let left = kinesis::observe(&c, &s.name).await.expect("observe");
        assert_eq!(left.is_some(), survives, "{policy:?}");
        if let Some(o) = left {
            assert!(o.tags.keys().all(|k| !k.starts_with("mlobs.io/")), "{:?}", o.tags);
            assert_eq!(o.tags.get("team").map(String::as_str), Some("a"), "user tags stay");
        }
        // Idempotent: a second delete finds nothing of ours and succeeds.
        delete_all(&c, &plan, &opts.owner, None, policy)
            .await
            .expect("second delete");
    }
}

#[tokio::test]
async fn delete_never_touches_a_stream_without_our_tags() {
    let name = moto::unique("knotours");
    let e = effective(&moto::unique("kkeep"), json!({"stream": name}));
    let (plan, opts) = plan_and_opts(&e);
    let c = moto::clients().await;
    foreign_stream(&c, &name).await;
    c.calls.reset();
    kinesis::delete(&c, &stream(&plan), &opts.owner, DeletionPolicy::Delete)
        .await
        .expect("delete");
    assert_eq!(c.calls.mutating(), 0, "{:?}", c.calls.snapshot());
    assert!(kinesis::observe(&c, &name).await.expect("observe").is_some());
}

#[tokio::test]
async fn a_hot_path_turned_off_retires_its_stream_and_role_by_the_recorded_arn() {
    let cluster = moto::unique("kretire");
    let e = effective(&cluster, json!({}));
    let (plan, opts) = plan_and_opts(&e);
    let c = moto::clients().await;
    let out = ensure_all(&c, &plan, &opts).await.expect("ensure");
    let arn = out
        .hot_path_stream_arn
        .clone()
        .expect("the stream's ARN, as status records it");
    let role = plan.hot_path.clone().expect("hot path").role;

    // The same pipeline with the hot path off: only status remembers the stream.
    let mut off = e.clone();
    off.destinations.hot_path = None;
    assert!(aws_plan::build(&off).expect("plan").hot_path.is_none());
    let retired = aws_plan::hot_path::retired(&off, &arn).expect("a retire plan");
    assert_eq!(retired.stream.name, stream(&plan).name);
    assert_eq!(retired.role.arn(), role.arn(), "the derived Fluent Bit role");
    mlobs::aws::hot_path::delete(&c, &retired, &opts.owner, DeletionPolicy::Delete)
        .await
        .expect("retire");
    assert!(
        kinesis::observe(&c, &retired.stream.name)
            .await
            .expect("observe")
            .is_none()
    );
    let RolePlan::Create { name, .. } = &role else {
        panic!("a created role")
    };
    let gone = c.iam.get_role().role_name(name).send().await;
    assert!(gone.is_err(), "the Fluent Bit role is deleted too: {gone:?}");
}
