//! Event-driven drift against moto's SQS: the operator reads the CloudTrail events an EventBridge
//! rule delivers, reconciles the pipeline whose resource an event names at once (its resync is an
//! hour away), and deletes every message it read, matched or not.

mod support;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::moto;
use support::operator::Operator;

/// The EventBridge envelope of a CloudTrail record, as the rule delivers it to SQS.
fn cloudtrail(source: &str, name: &str, params: serde_json::Value) -> String {
    json!({"version": "0", "id": moto::unique("ev"), "detail-type": "AWS API Call via CloudTrail",
           "source": format!("aws.{}", source.trim_end_matches(".amazonaws.com")),
           "account": "123456789012", "region": "us-east-1", "resources": [],
           "detail": {"eventVersion": "1.09", "eventSource": source, "eventName": name,
                      "awsRegion": "us-east-1", "requestParameters": params, "responseElements": null,
                      "eventType": "AwsApiCall", "readOnly": false, "managementEvent": true}})
    .to_string()
}

async fn put_one_event(aws: &mlobs::aws::AwsClients, group: &str) {
    let _ = aws
        .logs
        .create_log_stream()
        .log_group_name(group)
        .log_stream_name("gpu-0")
        .send()
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let event = aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
        .timestamp(now)
        .message("step 1")
        .build()
        .expect("event");
    aws.logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name("gpu-0")
        .log_events(event)
        .send()
        .await
        .expect("put log events");
}

/// A new queue in moto, its URL.
async fn new_queue(aws: &mlobs::aws::AwsClients, name: &str) -> String {
    let queue = aws
        .sqs
        .create_queue()
        .queue_name(moto::unique(name))
        .send()
        .await
        .expect("queue");
    queue.queue_url().expect("queue url").to_string()
}

/// Queues the CloudTrail event of a PutRetentionPolicy of one day on `group`.
async fn send_retention_event(aws: &mlobs::aws::AwsClients, url: &str, group: &str) {
    aws.sqs
        .send_message()
        .queue_url(url)
        .message_body(cloudtrail(
            "logs.amazonaws.com",
            "PutRetentionPolicy",
            json!({"logGroupName": group, "retentionInDays": 1}),
        ))
        .send()
        .await
        .expect("send");
}

/// Sets `group`'s retention to one day, as someone outside mlobs would.
async fn tamper_retention(aws: &mlobs::aws::AwsClients, group: &str) {
    aws.logs
        .put_retention_policy()
        .log_group_name(group)
        .retention_in_days(1)
        .send()
        .await
        .expect("tamper");
}

/// Waits (at most a minute) until `group`'s retention is `desired` again.
async fn wait_retention_put_back(aws: &mlobs::aws::AwsClients, group: &str, desired: Option<i32>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = mlobs::aws::logs::observe_many(aws, group).await.expect("group");
        if now.get(group).is_some_and(|g| g.retention_days == desired) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the retention was not put back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_changed_outside_mlobs_is_put_back_when_its_event_arrives() {
    let aws = moto::clients().await;
    let url = new_queue(&aws, "drift").await;
    let op = Operator::start_with_drift_events(url.clone()).await;
    op.create("ev", json!({"resyncInterval": "1h", "dataFlow": {"gracePeriod": "2h"}}))
        .await;
    op.ready("ev").await;
    // Data flows: the pipeline has nothing to look at again before its resync, an hour away, so
    // only the event can bring the next reconcile.
    let groups: Vec<String> = (op.log_groups().await.into_iter())
        .filter(|g| g.name.contains("/ev/"))
        .map(|g| g.name)
        .collect();
    assert_eq!(groups.len(), 2, "{groups:?}");
    for g in &groups {
        put_one_event(&aws, g).await;
    }
    op.request_reconcile("ev", 1).await;
    op.wait_reason("ev", "DataFlowing", "True", "DataFlowing").await;
    let group = (op.log_groups().await.into_iter())
        .find(|g| g.name.ends_with("/ev/logs"))
        .expect("logs group");
    let desired = group.retention_days;
    tamper_retention(&aws, &group.name).await;

    // Noise first: a failed call, an unwatched one, another account's group, and garbage.
    let mut failed: serde_json::Value = serde_json::from_str(&cloudtrail(
        "logs.amazonaws.com",
        "PutRetentionPolicy",
        json!({"logGroupName": group.name}),
    ))
    .expect("json");
    failed["detail"]["errorCode"] = json!("AccessDeniedException");
    for body in [
        failed.to_string(),
        cloudtrail("logs.amazonaws.com", "DescribeLogGroups", json!({})),
        cloudtrail(
            "logs.amazonaws.com",
            "PutRetentionPolicy",
            json!({"logGroupName": "/aws/eks/other/x/y/logs"}),
        ),
        "not json".to_string(),
        cloudtrail(
            "logs.amazonaws.com",
            "PutRetentionPolicy",
            json!({"logGroupName": group.name, "retentionInDays": 1}),
        ),
    ] {
        aws.sqs
            .send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }

    // No timing claim here (that is the bench's): the correction must come from the event, long
    // before the hour-long resync.
    wait_retention_put_back(&aws, &group.name, desired).await;
    op.wait("the correction recorded", |_| {
        op.pipeline("ev").and_then(|p| p.status).is_some_and(|s| {
            s.drift
                .iter()
                .any(|d| d.action.as_deref() == Some("Corrected") && d.field.contains("etention"))
        })
    })
    .await;
    let text = op.metrics.encode();
    for (result, n) in [("matched", 1), ("irrelevant", 2), ("unmatched", 1), ("malformed", 1)] {
        let line = format!("mlobs_drift_events_total{{result=\"{result}\"}} {n}");
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    let left = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .expect("attributes");
    let n = (left
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)))
    .cloned()
    .unwrap_or_default();
    assert_eq!(n, "0", "every message read is deleted");
    op.stop().await;
}

/// The express lane: a drift event's pipeline is reconciled at once, not behind the queue. Here
/// the queue's controller has one reconcile slot (`--max-concurrent-reconciles 1`) and it is
/// taken: the API server holds another pipeline's status write. The event's correction still
/// happens; without the express lane it waited for that slot (on a real cluster: for a resync
/// wave of every pipeline, 28 s at 1,000 in bench run AQ).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_event_is_acted_on_while_the_queue_s_every_slot_is_held_up() {
    let aws = moto::clients().await;
    let url = new_queue(&aws, "express").await;
    let op = Operator::start_with_drift_events_and_slots(url.clone(), 1).await;
    let spec = json!({"resyncInterval": "1h", "dataFlow": {"gracePeriod": "2h"}});
    for name in ["busy", "ev"] {
        op.create(name, spec.clone()).await;
    }
    op.ready("busy").await;
    op.ready("ev").await;
    let group = (op.log_groups().await.into_iter())
        .find(|g| g.name.ends_with("/ev/logs"))
        .expect("logs group");
    let desired = group.retention_days;

    // Take the one slot: a spec change makes busy's reconcile write its status, which the API
    // server holds.
    let held = op.fake.stall("PATCH", "/mlobservabilitypipelines/busy/status");
    let patch = json!({"spec": {"resyncInterval": "2h"}});
    op.pipelines()
        .patch("busy", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("spec change");
    op.wait("busy's status write held", |f| f.held() >= 1).await;
    // A reconcile of ev queued behind it: the queue's controller cannot start it.
    op.request_reconcile("ev", 1).await;

    tamper_retention(&aws, &group.name).await;
    send_retention_event(&aws, &url, &group.name).await;
    wait_retention_put_back(&aws, &group.name, desired).await;
    assert!(
        op.fake.held() >= 1,
        "busy's status write was let go: the slot was not taken throughout"
    );
    let express = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("mlobs_express_reconciles_total "))
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    assert_eq!(express(&op.metrics.encode()), Some(1), "one express reconcile");

    // Let go: busy's change lands, and ev, handed to the queue after its express reconcile, is
    // reconciled in turn with nothing left to do.
    held.release();
    op.wait("busy's change observed", |_| {
        op.pipeline("busy")
            .and_then(|p| p.status)
            .is_some_and(|s| s.observed_generation == Some(2))
    })
    .await;
    op.wait_condition("ev", "Ready", "True").await;
    op.stop().await;
}

/// Sharded replicas share one queue: a message none of a shard's pipelines matches is released
/// (visible again at once) for the other shards, and SQS counts each receive, which is what ends
/// the passing on (`drift_events::pass_on`).
#[tokio::test]
async fn a_released_message_is_visible_again_at_once_with_its_receive_count() {
    use mlobs::aws::drift_events::{delete, receive, release};
    let aws = moto::clients().await;
    let url = aws
        .sqs
        .create_queue()
        .queue_name(moto::unique("shards"))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "300")
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("queue url")
        .to_string();
    let body = cloudtrail("logs.amazonaws.com", "DeleteLogGroup", json!({"logGroupName": "/x"}));
    aws.sqs
        .send_message()
        .queue_url(&url)
        .message_body(&body)
        .send()
        .await
        .expect("send");
    let first = receive(&aws, &url, 1).await.expect("receive");
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].body.as_str(), first[0].receive_count), (body.as_str(), 1));
    // Without the release, the 300 s visibility timeout hides it from every other reader.
    release(&aws, &url, &first).await.expect("release");
    let second = receive(&aws, &url, 1).await.expect("receive again");
    assert_eq!(second.len(), 1, "the released message is visible again at once");
    assert_eq!(second[0].receive_count, 2);
    let shard = mlobs::controller::shard::Shard { index: 0, count: 2 };
    assert!(mlobs::controller::drift_events::pass_on(
        true,
        &shard,
        second[0].receive_count
    ));
    delete(&aws, &url, &second).await.expect("delete");
    assert!(
        receive(&aws, &url, 1).await.expect("receive").is_empty(),
        "deleted for good"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_event_makes_the_next_reconcile_read_the_key_in_full_before_its_check_interval() {
    let aws = moto::clients().await;
    let url = new_queue(&aws, "kdrift").await;
    let op = Operator::start_with_drift_events(url.clone()).await;
    op.create(
        "kev",
        json!({"resyncInterval": "1h", "dataFlow": {"gracePeriod": "2h"}}),
    )
    .await;
    op.ready("kev").await;
    let arn = op
        .pipeline("kev")
        .and_then(|p| p.status?.aws?.kms_key_arn)
        .expect("status.aws.kmsKeyArn");
    let key = arn.rsplit_once(":key/").map(|(_, id)| id.to_string()).expect("key id");
    aws.kms
        .disable_key_rotation()
        .key_id(&key)
        .send()
        .await
        .expect("rotation off");

    // A resync now does not see it: the key was read in full at its create, and its slower
    // check is a day away (the operator's default --kms-check-interval).
    op.request_reconcile("kev", 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while op.aws.calls.of("ListAliases") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no resync: {:?}",
            op.aws.calls.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let on = |aws: &mlobs::aws::AwsClients| {
        let (aws, key) = (aws.clone(), key.clone());
        async move {
            aws.kms
                .get_key_rotation_status()
                .key_id(&key)
                .send()
                .await
                .expect("rotation status")
                .key_rotation_enabled()
        }
    };
    assert!(!on(&aws).await, "a resync without the event read the key in full");

    // The event names the key: the reconcile it brings reads the key in full and puts rotation back.
    aws.sqs
        .send_message()
        .queue_url(&url)
        .message_body(cloudtrail(
            "kms.amazonaws.com",
            "DisableKeyRotation",
            json!({"keyId": key}),
        ))
        .send()
        .await
        .expect("send");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !on(&aws).await {
        assert!(std::time::Instant::now() < deadline, "rotation was not put back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    op.stop().await;
}

/// Calls of `operation` the operator made, and a wait for them.
async fn wait_calls(op: &Operator, operation: &str, at_least: u64, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while op.aws.calls.of(operation) < at_least {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {:?}",
            op.aws.calls.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// While the queue is read, the log group listing (2N/50 pages, the read that grows with the
/// pipelines) is the backstop of the events, not a per-resync read: a resync period after the one
/// that listed the groups mlobs created takes no DescribeLogGroups, and a change outside mlobs is
/// still put back, from its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_queue_is_read_a_resync_takes_no_log_group_listing_and_events_still_correct() {
    let aws = moto::clients().await;
    let url = new_queue(&aws, "backstop").await;
    let op = Operator::start_with_drift_events(url.clone()).await;
    // Other groups of the cluster: the listing of all takes four pages.
    for i in 0..150 {
        aws.logs
            .create_log_group()
            .log_group_name(format!("/aws/eks/{}/other/g{i:03}", op.cluster))
            .send()
            .await
            .expect("other group");
    }
    // A first message ends the first long poll at once: the queue is known to be read.
    let noise = cloudtrail("logs.amazonaws.com", "DescribeLogGroups", json!({}));
    aws.sqs
        .send_message()
        .queue_url(&url)
        .message_body(noise)
        .send()
        .await
        .expect("send");
    let names = ["bs-a", "bs-b", "bs-c"];
    for n in names {
        op.create(n, json!({"resyncInterval": "30s", "dataFlow": {"gracePeriod": "2h"}}))
            .await;
    }
    for n in names {
        op.ready(n).await;
    }
    let text = op.metrics.encode();
    assert!(
        text.contains("mlobs_drift_events_total{result=\"irrelevant\"} 1"),
        "the queue was read"
    );
    let read_at: i64 = (text.lines())
        .find_map(|l| l.strip_prefix("mlobs_drift_events_last_read_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("mlobs_drift_events_last_read_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    assert!(
        (now - 120..=now).contains(&read_at),
        "last read at {read_at}, now {now}"
    );
    // The first resync period lists the groups mlobs just created (its own creates dropped the
    // listing); the roles listing marks each period's resyncs.
    op.aws.calls.reset();
    wait_calls(&op, "GetAccountAuthorizationDetails", 1, "a first resync").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    op.aws.calls.reset();
    wait_calls(&op, "GetAccountAuthorizationDetails", 1, "a second resync").await;
    // Every slot lies in the period's first tenth (3 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!("a resync period while the queue is read: {:?}", op.aws.calls.snapshot());
    assert_eq!(
        op.aws.calls.of("DescribeLogGroups"),
        0,
        "no listing per resync while events arrive: {:?}",
        op.aws.calls.snapshot()
    );
    for slow in ["DescribeKey", "GetKeyPolicy", "ListTagsForResource"] {
        assert_eq!(
            op.aws.calls.of(slow),
            0,
            "{slow}: the slower checks wait for the backstop"
        );
    }

    // A retention changed outside mlobs: its event drops the listing, and the pipeline's
    // reconcile reads its own groups (one page, not the four of all) and puts the retention back.
    let prefix = "/aws/eks/";
    let groups = mlobs::aws::logs::observe_many(&aws, prefix).await.expect("groups");
    let group = (groups.into_values())
        .find(|g| g.name.ends_with("/bs-b/logs"))
        .expect("bs-b's logs group");
    let desired = group.retention_days;
    tamper_retention(&aws, &group.name).await;
    op.aws.calls.reset();
    send_retention_event(&aws, &url, &group.name).await;
    wait_retention_put_back(&aws, &group.name, desired).await;
    let pages = op.aws.calls.of("DescribeLogGroups");
    assert!(
        (1..=2).contains(&pages),
        "{pages} DescribeLogGroups between the event and its correction: {:?}",
        op.aws.calls.snapshot()
    );
    op.stop().await;
}
