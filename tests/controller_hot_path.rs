//! The hot path through the real controller (in-process API fake, moto): the stream and Fluent
//! Bit's role before its children, `HotPathReady` as part of `Ready`, a no-op reconcile writing
//! nothing, and turning it off pruning the Fluent Bit children and retiring the stream.

mod support;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use mlobs::aws::kinesis;
use serde_json::json;
use support::operator::{NS, Operator, WAIT};

const KINDS: [(&str, &str); 3] = [
    ("apps/v1", "daemonsets"),
    ("v1", "configmaps"),
    ("v1", "serviceaccounts"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_path_runs_after_its_stream_and_turning_it_off_prunes_it_and_retires_the_stream() {
    let op = Operator::start().await;
    op.create(
        "hot",
        json!({"hotPath": {"retentionHours": 48}, "deletionPolicy": "Delete"}),
    )
    .await;
    op.ready("hot").await;
    assert_eq!(
        op.condition("hot", "HotPathReady").map(|c| c.0).as_deref(),
        Some("True")
    );

    let status = op.pipeline("hot").and_then(|p| p.status).expect("status");
    let aws = status.aws.expect("status.aws");
    let arn = aws.hot_path_stream_arn.clone().expect("status.aws.hotPathStreamArn");
    let stream = arn.rsplit('/').next().expect("a stream ARN").to_string();
    let o = kinesis::observe(&op.aws, &stream)
        .await
        .expect("observe")
        .expect("the stream");
    assert_eq!(o.kms_key, aws.kms_key_arn, "encrypted with the pipeline's key");
    assert_eq!(o.retention_hours, 48);

    // Fluent Bit's children exist; its account names its own role, not the collector's.
    for (v, plural) in KINDS {
        assert!(
            op.fake.object(v, plural, Some(NS), "mlobs-hot-hotpath").is_some(),
            "{plural}"
        );
    }
    let sa = op
        .fake
        .object("v1", "serviceaccounts", Some(NS), "mlobs-hot-hotpath")
        .expect("Fluent Bit's account");
    let role = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(role.ends_with("-hotpath"), "{role}");
    assert_ne!(Some(role.as_str()), aws.role_arn.as_deref());

    // A no-op reconcile writes nothing, the hot path included.
    let wrote = op.no_op_reconcile_writes().await;
    assert!(wrote.is_empty(), "a no-op reconcile wrote: {wrote:?}");

    // Off: the children are pruned, the condition goes, the stream is deleted (deletionPolicy Delete).
    op.pipelines()
        .patch(
            "hot",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hotPath": {"enabled": false}}})),
        )
        .await
        .expect("turn the hot path off");
    op.wait("the Fluent Bit children pruned", |f| {
        KINDS
            .iter()
            .all(|(v, p)| f.object(v, p, Some(NS), "mlobs-hot-hotpath").is_none())
    })
    .await;
    op.wait("HotPathReady removed", |f| {
        f.get::<mlobs::crd::MLObservabilityPipeline>(Some(NS), "hot")
            .and_then(|p| p.status)
            .is_some_and(|s| s.conditions.iter().all(|c| c.type_ != "HotPathReady"))
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while kinesis::observe(&op.aws, &stream).await.expect("observe").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the stream was not retired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        op.fake.object("apps/v1", "daemonsets", Some(NS), "mlobs-hot").is_some(),
        "the collector stays"
    );
    op.stop().await;
}
