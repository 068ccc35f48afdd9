//! The express lane: drift events reconcile their pipeline at once, not behind the queue.
//!
//! kube-runtime's controller runs the reconciles that are due in the order they fell due, at most
//! `--max-concurrent-reconciles` at a time. A pipeline that a drift event names was put at the
//! end of that queue; when the event came with a resync wave (every pipeline of an interval falls
//! due within a tenth of it, `resync`), it waited for the whole wave: 28 s at 1,000 pipelines on
//! the bench machine (run AQ) against the 10 s the event path is for.
//!
//! So the events feed a second applier of their own (kube-runtime's `applier`, over the same
//! pipeline cache), with [`CONCURRENCY`] reconciles of its own. Two appliers could reconcile one
//! pipeline at the same time; [`Exclusive`] keeps that to one at a time across both, and a
//! reconcile that waited for it takes the cache's newest copy of its pipeline. The express lane
//! keeps no schedule: after its reconcile, successful or not, the pipeline is handed to the
//! queue's controller as well, which reconciles it once more in turn and keeps its requeues and
//! error backoff as for any other trigger (an event is rare, one reconcile more is cheap).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use kube::runtime::controller::{self, Action};

use super::{Ctx, PipelineRef};

/// Reconciles the express lane runs at once. Drift events are rare and each names one pipeline;
/// two let an event's reconcile go ahead while another waits for its pipeline's turn.
pub const CONCURRENCY: u16 = 2;

/// One reconcile of a pipeline at a time across the appliers. An entry lives only while a
/// reconcile of its pipeline runs or waits.
#[derive(Debug, Default)]
pub struct Exclusive(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// Held for the length of one reconcile (see [`Exclusive::hold`]).
pub struct Held<'a> {
    of: &'a Exclusive,
    key: String,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Exclusive {
    /// Waits until no other reconcile of `key` (a pipeline's namespace/name) runs, then holds it.
    pub async fn hold(&self, key: String) -> Held<'_> {
        let slot = {
            let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(key.clone()).or_default().clone()
        };
        let turn = slot.lock_owned().await;
        Held {
            of: self,
            key,
            _turn: turn,
        }
    }

    /// Pipelines with a reconcile running or waiting.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// No reconcile runs or waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut m = self.of.0.lock().unwrap_or_else(|e| e.into_inner());
        // The map's Arc and the one in our guard: nobody else waits, so the entry goes. A waiter
        // took its clone under this same lock, which keeps the entry for it.
        if m.get(&self.key).is_some_and(|slot| Arc::strong_count(slot) <= 2) {
            m.remove(&self.key);
        }
    }
}

/// Runs the express lane until `events` ends (the drift events reader stopped): every pipeline
/// an event names is reconciled at once, then handed to `queue` (the queue's controller).
pub async fn run(ctx: Arc<Ctx>, events: UnboundedReceiver<PipelineRef>, queue: UnboundedSender<PipelineRef>) {
    let store = ctx.pipelines.clone();
    let config = controller::Config::default().concurrency(CONCURRENCY);
    controller::applier(
        move |p: Arc<super::cached::CachedPipeline>, ctx: Arc<Ctx>| {
            let queue = queue.clone();
            Box::pin(async move {
                ctx.metrics.express_reconcile();
                let result = super::pipeline::reconcile(p.clone(), ctx).await;
                // The queue's controller keeps the schedule (requeues, backoff); a closed channel
                // means the operator is stopping.
                let _ = queue.unbounded_send(super::pipeline_ref(p.as_ref()));
                result
            })
        },
        // No retry here: the pipeline was handed to the queue's controller, whose error policy
        // backs off.
        |_, _, _| Action::await_change(),
        ctx,
        store,
        events.map(Ok::<_, std::convert::Infallible>),
        config,
    )
    .for_each(|r| {
        if let Err(controller::Error::ReconcilerFailed(e, obj)) = r {
            tracing::warn!(pipeline = %obj, error = %e, "drift event: express reconcile failed; the pipeline is reconciled again in turn");
        }
        futures::future::ready(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::Exclusive;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn one_reconcile_of_a_pipeline_at_a_time_and_no_entry_left_after() {
        let ex = Arc::new(Exclusive::default());
        let first = ex.hold("team-a/train".into()).await;
        // Another pipeline is not held up.
        let other = tokio::time::timeout(Duration::from_secs(1), ex.hold("team-a/eval".into())).await;
        assert!(other.is_ok(), "another pipeline waited");
        drop(other);
        // The same one waits until the first is done.
        let waiter = {
            let ex = ex.clone();
            tokio::spawn(async move {
                let _h = ex.hold("team-a/train".into()).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "a second reconcile of the pipeline ran beside the first"
        );
        assert_eq!(ex.len(), 1, "the waiter keeps the entry");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the waiter went on once the first was done")
            .expect("join");
        assert!(ex.is_empty(), "entries left after every reconcile ended");
    }
}
