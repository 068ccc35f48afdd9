//! Event-driven drift: reads the drift events queue (`mlobs run --drift-events-queue`), maps each
//! CloudTrail event to the pipelines whose resources it touched, forgets that their AWS side was
//! just ensured, and asks their controller to reconcile them now. The resync interval stays the
//! fallback for events that never arrive (no trail, no rule, a lost message).
//!
//! Runs on the leader only (inside the controllers' future). A message is deleted once handled,
//! matched or not; one that cannot be read is deleted too (logged and counted): a poison message
//! must not come back forever.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use kube::ResourceExt;

use super::lookup::{Governing, governing};
use super::{Ctx, PipelineRef};
use crate::aws::drift_events::{self, Skip, Touched};
use crate::crd::MLObservabilityPipeline;
use crate::desired::effective::EffKms;

/// Long polling: how long one ReceiveMessage waits for a first message.
const WAIT_S: i32 = 20;

fn ends_with_segment(arn: &str, sep: &str, name: &str) -> bool {
    arn.strip_suffix(name).is_some_and(|head| head.ends_with(sep))
}

/// Whether the pipeline's recorded AWS resources include what the event touched. Aliases are not
/// recorded: `alias_of` gives the pipeline's created key's alias.
pub fn touches(
    p: &MLObservabilityPipeline,
    t: &Touched,
    alias_of: impl Fn(&MLObservabilityPipeline) -> Option<String>,
) -> bool {
    let Some(aws) = p.status.as_ref().and_then(|s| s.aws.as_ref()) else {
        return false;
    };
    match t {
        Touched::LogGroup(name) => (aws.log_group_arns.iter()).any(|a| ends_with_segment(a, ":log-group:", name)),
        Touched::Key(k) => aws
            .kms_key_arn
            .as_deref()
            .is_some_and(|arn| arn == k || ends_with_segment(arn, ":key/", k)),
        Touched::Role(name) => aws
            .role_arn
            .as_deref()
            .is_some_and(|arn| ends_with_segment(arn, "/", name)),
        Touched::Alias(a) => alias_of(p).is_some_and(|mine| &mine == a),
    }
}

/// The alias of the key mlobs creates for `p` (none for a given or disabled key).
fn created_key_alias(ctx: &Ctx, p: &MLObservabilityPipeline) -> Option<String> {
    let policies = ctx.policies.state();
    let policy = match governing(p, &policies) {
        Governing::One(x) => Some(x),
        Governing::None => None,
        Governing::NotFound(_) | Governing::DefaultConflict(_) => return None,
    };
    let merged = crate::desired::merge::merge(p, policy.as_deref(), &ctx.desired).ok()?;
    match merged.effective.kms {
        EffKms::Create { alias, .. } => Some(alias),
        _ => None,
    }
}

/// Handles one message body; returns its outcome label for the metric.
async fn handle(ctx: &Ctx, body: &str, trigger: &UnboundedSender<PipelineRef>) -> &'static str {
    let event = match drift_events::parse(body) {
        Ok(e) => e,
        Err(Skip::Irrelevant) => return "irrelevant",
        Err(Skip::Malformed(why)) => {
            tracing::warn!(%why, "drift events queue: a message that is not a CloudTrail event; deleted");
            return "malformed";
        }
    };
    // Each pipeline whole (the cache keeps statuses packed): events are rare, a few a day.
    let pipes = ctx.pipelines.state();
    let hit: Vec<MLObservabilityPipeline> = (pipes.iter())
        .map(|c| c.unpack())
        .filter(|p| touches(p, &event.touched, |x| created_key_alias(ctx, x)))
        .collect();
    if hit.is_empty() {
        return "unmatched";
    }
    // The shared snapshot of the cluster's log groups predates the change: read them afresh.
    if matches!(event.touched, Touched::LogGroup(_)) {
        ctx.invalidate_log_groups().await;
    }
    // Likewise the shared aliases and roles.
    if matches!(event.touched, Touched::Role(_) | Touched::Alias(_)) {
        ctx.batched.invalidate().await;
    }
    for p in &hit {
        // Its slower checks (key state, rotation and policy; log group tags) run at once too,
        // and it reads its own log groups rather than waiting for the listing of all.
        if let Some(uid) = p.uid() {
            ctx.batched.event_named(&uid);
        }
        tracing::info!(event = %event.event_name, pipeline = %format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()), "drift event: reconciling now");
        ctx.forget_aws_sync(p);
        let _ = trigger.unbounded_send(super::pipeline_ref(p));
    }
    "matched"
}

/// How often a message no pipeline of this shard matches goes back to the queue for the other
/// shards before it is deleted as unmatched: readers receive at random, so 3 receives per shard
/// give every shard's replica a turn with high probability.
const RECEIVES_PER_SHARD: u32 = 3;

/// In a `--drift-events-queue` URL: the shard's index (`--shard I/M`). Each shard then reads a
/// queue of its own, to which the EventBridge rule delivers every event (one target per shard).
pub const SHARD_PLACEHOLDER: &str = "{shard}";

/// The queue a replica of `shard` reads, and whether other shards read it too (`shared`): the
/// URL with [`SHARD_PLACEHOLDER`] replaced by the shard's index (a queue of its own), else the
/// URL as given (shared when sharded).
pub fn shard_queue(url: &str, shard: &crate::controller::shard::Shard) -> (String, bool) {
    if url.contains(SHARD_PLACEHOLDER) {
        (url.replace(SHARD_PLACEHOLDER, &shard.index.to_string()), false)
    } else {
        (url.to_string(), shard.is_sharded())
    }
}

/// Whether an unmatched message goes back to the queue (a queue `shared` by the shards, and not
/// yet received often enough for every shard to have seen it) instead of being deleted. A
/// shard's own queue (`{shard}` in the URL) holds its copy of every event: what none of its
/// pipelines matches is deleted at once.
pub fn pass_on(shared: bool, shard: &crate::controller::shard::Shard, receive_count: u32) -> bool {
    shared && receive_count < RECEIVES_PER_SHARD.saturating_mul(shard.count)
}

/// Reads the queue until the process stops. Errors back off (5 s doubling to 60 s) and are
/// counted; they never stop the controllers. `queue_url` may name the shard's own queue
/// ([`shard_queue`]). With `--shard` and one queue for all shards, a message that touches none of
/// this shard's pipelines is made visible again for the other shards' replicas, and deleted once
/// every shard has likely seen it: which replica receives it is up to SQS, so the right one may
/// see it late or, rarely, not at all (the resync and the backstop then find the change).
pub async fn run(ctx: Arc<Ctx>, queue_url: String, trigger: UnboundedSender<PipelineRef>) {
    let (queue_url, shared) = shard_queue(&queue_url, &ctx.shard);
    if shared {
        tracing::warn!(queue = %queue_url, "drift events: all shards read one queue; an event may reach its shard late or not at all. Give each shard its own queue: {SHARD_PLACEHOLDER} in --drift-events-queue");
    } else {
        tracing::info!(queue = %queue_url, "drift events: reading the queue");
    }
    let mut backoff = Duration::from_secs(5);
    loop {
        if !ctx.caches_synced().await {
            return;
        }
        match drift_events::receive(&ctx.aws, &queue_url, WAIT_S).await {
            Ok(messages) => {
                backoff = Duration::from_secs(5);
                // Drift events reach this process: the reads they stand in for can wait.
                let now = std::time::SystemTime::now();
                ctx.batched.events_read(now);
                ctx.metrics.drift_events_read(now);
                let (mut done, mut others) = (Vec::new(), Vec::new());
                for m in messages {
                    let outcome = handle(&ctx, &m.body, &trigger).await;
                    if outcome == "unmatched" && pass_on(shared, &ctx.shard, m.receive_count) {
                        ctx.metrics.drift_event("passed_on");
                        others.push(m);
                    } else {
                        ctx.metrics.drift_event(outcome);
                        done.push(m);
                    }
                }
                if let Err(e) = drift_events::delete(&ctx.aws, &queue_url, &done).await {
                    tracing::warn!(error = %e, "drift events queue: DeleteMessage failed; the messages come back and are handled again");
                    ctx.metrics.drift_event("error");
                }
                if let Err(e) = drift_events::release(&ctx.aws, &queue_url, &others).await {
                    tracing::warn!(error = %e, "drift events queue: ChangeMessageVisibility failed; the messages come back after the queue's visibility timeout");
                    ctx.metrics.drift_event("error");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "drift events queue: ReceiveMessage failed");
                ctx.metrics.drift_event("error");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pipeline() -> MLObservabilityPipeline {
        serde_json::from_value(json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "metadata": {"name": "train", "namespace": "team-a"},
            "spec": {"clusterName": "prod"},
            "status": {"aws": {
                "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd",
                "logGroupArns": ["arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/prod/team-a/train/logs"],
                "roleArn": "arn:aws:iam::123456789012:role/mlobs-prod-team-a-train"}}}))
        .expect("pipeline")
    }

    #[test]
    fn unmatched_messages_go_back_only_to_a_queue_the_shards_share() {
        use crate::controller::shard::Shard;
        let s = Shard { index: 1, count: 4 };
        let (url, shared) = shard_queue("https://sqs.us-east-1.amazonaws.com/1/q", &Shard::default());
        assert!(
            !shared && !pass_on(shared, &Shard::default(), 1),
            "unsharded: nobody else can match it"
        );
        assert_eq!(url, "https://sqs.us-east-1.amazonaws.com/1/q");
        let (url, shared) = shard_queue("https://sqs.us-east-1.amazonaws.com/1/q", &s);
        assert!(shared && pass_on(shared, &s, 1) && pass_on(shared, &s, 11));
        assert_eq!(url, "https://sqs.us-east-1.amazonaws.com/1/q");
        assert!(!pass_on(shared, &s, 12), "every shard had 3 turns on average: deleted");
        let (url, shared) = shard_queue("https://sqs.us-east-1.amazonaws.com/1/q-{shard}", &s);
        assert_eq!(url, "https://sqs.us-east-1.amazonaws.com/1/q-1");
        assert!(
            !shared && !pass_on(shared, &s, 1),
            "a shard's own queue: deleted at once"
        );
        let (url, _) = shard_queue("https://sqs.us-east-1.amazonaws.com/1/q-{shard}", &Shard::default());
        assert_eq!(url, "https://sqs.us-east-1.amazonaws.com/1/q-0");
    }

    #[test]
    fn an_event_reaches_the_pipeline_whose_recorded_resource_it_names() {
        let p = pipeline();
        let alias = |_: &MLObservabilityPipeline| Some("alias/mlobs/prod/team-a/train".to_string());
        for t in [
            Touched::LogGroup("/aws/eks/prod/team-a/train/logs".into()),
            Touched::Key("1234abcd".into()),
            Touched::Key("arn:aws:kms:us-east-1:123456789012:key/1234abcd".into()),
            Touched::Role("mlobs-prod-team-a-train".into()),
            Touched::Alias("alias/mlobs/prod/team-a/train".into()),
        ] {
            assert!(touches(&p, &t, alias), "{t:?}");
        }
        for t in [
            Touched::LogGroup("/aws/eks/prod/team-a/train/logs-old".into()),
            Touched::LogGroup("eks/prod/team-a/train/logs".into()),
            Touched::Key("234abcd".into()),
            Touched::Role("prod-team-a-train".into()),
            Touched::Alias("alias/mlobs/prod/team-a/other".into()),
        ] {
            assert!(!touches(&p, &t, alias), "{t:?}");
        }
    }
}
