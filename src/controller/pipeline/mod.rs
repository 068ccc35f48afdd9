//! The MLObservabilityPipeline reconciler, in typed steps (../STYLE.md, "shape of a reconcile";
//! zookeeper-operator's dereference → validate → build → apply → update_status):
//! 1. [`dereference`] (reads only): the governing policy, the GPU nodes, the collector's
//!    namespace, this process's AWS memory;
//! 2. [`plan::plan`] (pure): validation, merge and build, estimate and budget, whether AWS is
//!    due, the desired child set; a typed [`plan::Stop`] for every early exit;
//! 3. [`apply::aws`]: the AWS side in dependency order, when due;
//! 4. [`apply::children`]: the child set through the one applier (apply, then prune);
//! 5. [`apply::observe`]: what no watch reports (exporter pods, Pod Security, data flow);
//! 6. [`write_status`]: the status, computed purely (`Observed::into_status`, clock passed in).
//!
//! Deletion is [`cleanup::run`].

mod apply;
mod cleanup;
pub mod plan;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use serde_json::json;

use super::cached::CachedPipeline;
use super::dataflow;
use super::error::{Error, Result};
use super::lookup::{Governing, governing};
use super::status::{self, Observed};
use super::{Ctx, jittered};
use crate::aws::Owner;
use crate::crd::MLObservabilityPipeline;
use crate::crd::conditions::{self, pipeline as pty, reason};
use crate::crd::reason::Reason;
use crate::desired::Desired;

/// Finalizer that keeps a pipeline until its AWS resources are handled per deletionPolicy.
pub const FINALIZER: &str = "mlobs.io/aws-cleanup";
/// Annotation that opts a pipeline into adopting existing, untagged AWS resources.
pub const ADOPT_ANNOTATION: &str = crate::conventions::ADOPT_ANNOTATION;
/// Annotation whose change forces a full reconcile, AWS included, now (as Flux's
/// `reconcile.fluxcd.io/requestedAt`): `kubectl annotate mlop x mlobs.io/reconcile-requested-at="$(date +%s)" --overwrite`.
pub const RECONCILE_REQUESTED_ANNOTATION: &str = "mlobs.io/reconcile-requested-at";
/// How soon a pipeline waiting on something no watch reports (exporter pods, Pod Security) looks again.
const WAITING_RECHECK_MS: u64 = 30_000;

/// The owner tags of the pipeline's AWS resources.
fn owner(d: &Desired) -> Owner {
    Owner {
        cluster: d.effective.cluster_name.clone(),
        pipeline: d.effective.pipeline_id(),
    }
}

pub async fn reconcile(p: Arc<CachedPipeline>, ctx: Arc<Ctx>) -> Result<Action> {
    // One reconcile of a pipeline at a time across the queue and the drift events' express lane
    // (`express`); one that waited takes the cache's newest copy of its pipeline.
    let _held = (ctx.exclusive)
        .hold(format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
        .await;
    let p = ctx
        .pipelines
        .get(&crate::controller::pipeline_ref(p.as_ref()))
        .unwrap_or(p);
    // The cache keeps the status packed (`cached`): this reconcile reads it whole.
    let p = Arc::new(p.unpack());
    let started = Instant::now();
    // Inside kube-runtime's span, which names the object and why it is reconciled.
    tracing::debug!("reconcile");
    // Re-triggered by our own status write during a backoff: wait out the rest of it.
    if let Some(wait) = ctx.backoffs.waiting(p.as_ref(), started) {
        return Ok(Action::requeue(wait));
    }
    let result = reconcile_inner(p.clone(), &ctx).await;
    ctx.metrics.reconcile_done(
        "pipeline",
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(Error::reason),
    );
    // A terminal stop is no retry streak: the next change of the object is acted on at once.
    if matches!(result, Ok(_) | Err(Error::Stopped { .. })) {
        ctx.backoffs.succeeded(p.as_ref());
    }
    result
}

/// Retryable errors back off; terminal ones wait for a spec change (or the periodic resync).
pub fn error_policy(p: Arc<CachedPipeline>, e: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(pipeline = %p.name_any(), namespace = p.namespace().unwrap_or_default(), reason = e.reason().as_str(), error = %e, "reconcile failed");
    match e {
        Error::Stopped { requeue, .. } => Action::requeue(*requeue),
        e if e.is_retryable() => Action::requeue(ctx.backoffs.failed(p.as_ref(), Instant::now())),
        _ => Action::requeue(Duration::from_secs(600)),
    }
}

/// The finalizer is kube-runtime's helper (`kube::runtime::finalizer`): it adds [`FINALIZER`]
/// before the first apply, runs the cleanup on deletion, and removes the finalizer (a JSON patch
/// that tests its index) only once the cleanup succeeded.
async fn reconcile_inner(p: Arc<MLObservabilityPipeline>, ctx: &Ctx) -> Result<Action> {
    if !ctx.caches_synced().await {
        return Ok(Action::await_change());
    }
    let ns = p.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<MLObservabilityPipeline> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, p, |event| async move {
        match event {
            FinalizerEvent::Apply(p) => apply(&p, ctx).await,
            FinalizerEvent::Cleanup(p) => cleanup::run(&p, ctx).await,
        }
    })
    .await
    .map_err(Error::from)
}

/// Steps 1–6 for a pipeline that carries the finalizer and is not being deleted.
async fn apply(p: &MLObservabilityPipeline, ctx: &Ctx) -> Result<Action> {
    // 1. dereference (reads only)
    let world = dereference(p, ctx).await?;
    // 2. plan (pure)
    let inputs = plan::Inputs {
        desired: &ctx.desired,
        prices: &ctx.prices,
    };
    let plan::Plan {
        mut obs,
        resync_ms,
        next,
    } = plan::plan(p, &world, &inputs);
    let go = match next {
        Ok(go) => go,
        Err(stop) => {
            stop.record(&mut obs);
            return write_status(p, ctx, obs, resync_ms).await;
        }
    };
    let d = &go.desired;
    // 3. AWS, in dependency order, when due
    if go.aws_due
        && let Err(e) = apply::aws(p, ctx, d, &mut obs).await
    {
        let retryable = e.is_retryable();
        let written = write_status(p, ctx, obs, resync_ms).await;
        return if retryable { Err(e) } else { written };
    }
    if !obs.aws_ready(p) {
        return write_status(p, ctx, obs, resync_ms).await;
    }
    // 4. Kubernetes children, collector last; prune what is no longer desired
    let set = match go.children {
        Ok(set) => set,
        Err(blocked) => {
            obs.collector_blocked = Some(blocked);
            return write_status(p, ctx, obs, resync_ms).await;
        }
    };
    let ds = apply::children(p, ctx, set, &mut obs).await?;
    // 5. observe what no watch reports
    apply::observe(p, ctx, d, &world, &ds, &mut obs, go.aws_due).await?;
    if let Some(msg) = &obs.budget_warning
        && !status::was_budget_warned(p)
    {
        ctx.event(
            p,
            EventType::Warning,
            Reason::BudgetExceeded,
            "CheckBudget",
            msg.clone(),
        )
        .await;
    }
    // 6. status
    write_status(p, ctx, obs, resync_ms).await
}

/// Step 1: what the plan decides from, read from the stores and the API server: the governing
/// policy, the GPU nodes matching the pipeline's node selector and the collector's namespace
/// (both placed by the merge's own placement section), and this process's AWS memory.
async fn dereference(p: &MLObservabilityPipeline, ctx: &Ctx) -> Result<plan::World> {
    let policies = ctx.policies.state();
    let gov = governing(p, &policies);
    let mut world = plan::World {
        gov,
        nodes: vec![],
        collector_namespace: None,
        aws_memory: ctx.aws_memory(p),
        stop_check_due: (p.uid().zip(apply::data_stopped_at(p)))
            .is_some_and(|(uid, at)| ctx.batched.stop_check_due(&uid, at)),
        now: std::time::SystemTime::now(),
        monitoring: plan::MonitoringApis::default(),
    };
    let policy = match &world.gov {
        Governing::None => None,
        Governing::One(x) => Some(x.as_ref()),
        // The plan stops on these: nothing else to read.
        Governing::NotFound(_) | Governing::DefaultConflict(_) => return Ok(world),
    };
    let (selector, collector_ns) = crate::desired::merge::placement_of(p, policy, &ctx.desired);
    world.nodes = super::nodes_matching(ctx, &selector).await?;
    world.collector_namespace = super::shared_reads::namespace(&ctx.client, &ctx.namespaces, &collector_ns).await?;
    // Alerts (the PrometheusRule, the SLO's PodMonitor) or a Grafana dashboard (the PodMonitor).
    let monitoring = p.spec.alerts.is_some()
        || p.spec.dashboards.is_some()
        || policy
            .and_then(|x| x.spec.alerts.as_ref())
            .is_some_and(|a| a.required == Some(true));
    if monitoring {
        world.monitoring = monitoring_served(&ctx.client).await;
    }
    Ok(world)
}

/// Which monitoring.coreos.com/v1 kinds the API server serves (API discovery, which every
/// authenticated user may read). An error counts as absent: nothing of those kinds is then
/// applied or pruned.
async fn monitoring_served(client: &kube::Client) -> plan::MonitoringApis {
    use crate::desired::{alerts::prometheus, self_monitoring};
    match client.list_api_group_resources(prometheus::API_VERSION).await {
        Ok(list) => plan::MonitoringApis {
            prometheus_rules: list.resources.iter().any(|r| r.kind == prometheus::KIND),
            pod_monitors: list.resources.iter().any(|r| r.kind == self_monitoring::KIND),
        },
        Err(e) => {
            tracing::debug!(error = %e, "no monitoring.coreos.com/v1 API: no PrometheusRule, no PodMonitor");
            plan::MonitoringApis::default()
        }
    }
}

/// Step 6: computes the status (pure, the clock passed in) and writes it only if it changed;
/// events for what changed; the next look. A terminal Ready=False is an `Err` to kube-runtime.
async fn write_status(p: &MLObservabilityPipeline, ctx: &Ctx, obs: Observed, resync_ms: Option<u64>) -> Result<Action> {
    let api: Api<MLObservabilityPipeline> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let old = p.status.clone().unwrap_or_default();
    // Drift an earlier reconcile found but could not record (its status write failed) comes
    // first; this reconcile's own findings for the same field follow and win.
    let mut obs = obs;
    let uid = p.uid().unwrap_or_default();
    let carried = {
        let mut m = ctx.pending_drift.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&uid).unwrap_or_default()
    };
    obs.k8s_drift.splice(0..0, carried);
    let found = obs.k8s_drift.clone();
    let keep_found = || {
        if !found.is_empty() {
            let mut m = ctx.pending_drift.lock().unwrap_or_else(|e| e.into_inner());
            m.insert(uid.clone(), found.clone());
        }
    };
    let base = obs.resource_version.clone().or_else(|| p.resource_version());
    // A restated read (no AWS call) leaves the re-check schedule as it was.
    let read = (obs.data_flow.as_ref()).is_some_and(|d| d.read.asked_aws());
    // A read put off by the DescribeLogStreams budget: its reserved time.
    let deferred = (obs.data_flow.as_ref()).and_then(|d| match d.read {
        dataflow::Read::Deferred(wait) => Some(wait),
        _ => None,
    });
    let grace_ms = obs.data_flow.as_ref().map(|d| d.grace_ms);
    let now = super::now();
    let new = obs.into_status(p, &old, now.clone());
    let stop = conditions::find(&new.conditions, pty::READY)
        .filter(|c| c.status == conditions::status::FALSE)
        .and_then(|c| Some((Reason::parse(&c.reason).filter(|r| r.is_terminal())?, c.message.clone())));
    let flow_old = conditions::find(&old.conditions, pty::DATA_FLOWING);
    let flow_new = conditions::find(&new.conditions, pty::DATA_FLOWING);
    // Counted before the write, so the gauge never lags behind what the status shows.
    if let Some(uid) = p.uid() {
        let state = flow_new.map(|c| (c.status.as_str(), c.reason.as_str()));
        ctx.metrics.data_flowing(&uid, state);
    }
    if new != old {
        // Optimistic concurrency: `new` was computed from `old`. When the object changed since
        // (the store handed this reconcile a copy older than a status this process already
        // wrote), the server refuses, and the next reconcile starts from the newer copy instead
        // of writing back conditions that were observed only once (the AWS step's).
        let mut patch = json!({"status": new});
        if let Some(rv) = &base {
            patch["metadata"] = json!({"resourceVersion": rv});
        }
        match api
            .patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!("status computed from an older copy; reconciling again from the newer one");
                // What this reconcile read of the data flow is not written: the retry reads again.
                if let Some(uid) = p.uid().filter(|_| read) {
                    ctx.set_recheck(&uid, None);
                }
                ctx.metrics.status_conflict("pipeline");
                keep_found();
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            Err(e) => {
                keep_found();
                return Err(e.into());
            }
        }
        if status::aws_arns_new(&old, &new) {
            ctx.event(
                p,
                EventType::Normal,
                Reason::AwsReady,
                "EnsureAws",
                status::aws_summary(&new),
            )
            .await;
        }
        // A pipeline that cannot go on without a change says so once, as it happens.
        if let Some((r, m)) = status::became_stalled(&old, &new) {
            ctx.event(p, EventType::Warning, r, "Reconcile", m).await;
        }
        if let Some((warning, r, m)) = dataflow::transition_event(flow_old, flow_new) {
            let kind = if warning { EventType::Warning } else { EventType::Normal };
            ctx.event(p, kind, r, "CheckDataFlow", m).await;
        }
    }
    let interval = resync_ms.unwrap_or(600_000);
    let recheck = p.uid().and_then(|uid| {
        let next = if read {
            let resync = Duration::from_millis(interval);
            let (was, is) = (flow_old.map(|c| c.status.as_str()), flow_new.map(|c| c.status.as_str()));
            dataflow::after_read(ctx.recheck(&uid).as_ref(), was, is, Instant::now(), resync)
                .map(|r| dataflow::due_by_grace_end(r, &new, grace_ms.unwrap_or_default(), &now))
        } else if deferred.is_some() || flow_new.is_some_and(dataflow::rechecks) {
            ctx.recheck(&uid)
        } else {
            None
        };
        ctx.set_recheck(&uid, next);
        if read || next.is_some() {
            tracing::debug!(
                data_flowing = flow_new.map(|c| c.reason.as_str()),
                next_read_in = ?next.map(|r| dataflow::next_read_in(&r, Instant::now())),
                "data-flow re-check scheduled"
            );
        }
        next
    });
    // Nothing watches the exporter pods or Pod Security labels: look again soon while waiting on them.
    let waiting = [
        (pty::METRICS_SOURCE_READY, reason::NO_EXPORTER_PODS),
        (pty::COLLECTOR_READY, reason::POD_SECURITY_FORBIDDEN),
    ]
    .iter()
    .any(|(t, r)| conditions::find(&new.conditions, t).is_some_and(|c| c.reason == *r));
    // The next resync comes at the pipeline's slot (see `resync`), in step with the others.
    let key = p.uid().unwrap_or_else(|| p.name_any());
    let wait = super::resync::until_next_slot(std::time::SystemTime::now(), Duration::from_millis(interval), &key);
    let wait = if waiting {
        wait.min(jittered(WAITING_RECHECK_MS, p))
    } else {
        wait
    };
    // While data is not flowing, look again at the scheduled re-check (not sooner than 1 s); a
    // read put off by the budget, at its reserved time (the re-check it stands for is overdue).
    let wait = match (deferred, recheck) {
        (Some(d), _) => wait.min(d.max(Duration::from_millis(100))),
        (None, Some(r)) => wait.min(dataflow::next_read_in(&r, Instant::now()).max(Duration::from_secs(1))),
        (None, None) => wait,
    };
    // A terminal Ready=False is a failed reconcile to kube-runtime and the metrics
    // (result="error" with its reason); error_policy requeues it after `wait`, without backoff.
    match stop {
        Some((reason, message)) => Err(Error::Stopped {
            reason,
            message,
            requeue: wait,
        }),
        None => Ok(Action::requeue(wait)),
    }
}
