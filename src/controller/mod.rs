//! `mlobs run`: two kube-runtime Controllers in one process (pipelines and policies), behind
//! Lease-based leader election, with `/metrics`, `/healthz` and `/readyz`.

pub mod applier;
pub mod archive_status;
pub mod backoff;
pub mod batched;
pub mod cached;
pub mod child_stores;
pub mod children;
pub mod client;
pub mod counted;
pub mod dataflow;
pub mod destinations;
pub mod drift_events;
pub mod error;
pub mod events;
pub mod express;
pub mod hot_path;
pub mod leader;
pub mod lean;
pub mod lookup;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod resync;
pub mod run;
pub mod shard;
pub mod shared_reads;
pub mod status;

use crate::conventions::LAST_APPLIED;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::reflector::reflector;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::aws::AwsClients;
use crate::crd::reason::Reason;
use crate::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use crate::desired;
use crate::desired::cost::Prices;
pub use error::Error;
pub use metrics::Metrics;

/// Label every child carries; the owned-object watches select on it.
pub const MANAGED_BY: &str = crate::conventions::MANAGED_BY_SELECTOR;

/// Shared state of both controllers.
pub struct Ctx {
    pub client: Client,
    pub aws: AwsClients,
    /// Operator-level inputs of the desired state (cluster, region, account, namespace).
    pub desired: desired::Context,
    pub metrics: Metrics,
    /// Events, with repeats as series (a slim cache: see `events`).
    pub recorder: events::Publisher,
    pub prices: Prices,
    /// The pipelines this replica's shard reconciles (all of them when unsharded).
    pub pipelines: Store<cached::CachedPipeline>,
    /// On a sharded shard 0, every pipeline of the cluster as the policies' counts read it
    /// ([`counted::Counted`]). `None`: the counts read `pipelines` (unsharded: every pipeline;
    /// the other shards run no policy reconciles).
    pub counted_pipelines: Option<Store<counted::Counted>>,
    pub policies: Store<GpuTelemetryPolicy>,
    /// Pipeline uid → (AWS plan fingerprint, when it was last ensured ready). Lets reconciles
    /// triggered by child or node events skip AWS until the plan changes or the resync is due.
    pub aws_synced: Mutex<HashMap<String, (pipeline::plan::PlanFingerprint, SystemTime)>>,
    /// Per-object exponential backoff after retryable failures.
    pub backoffs: backoff::Backoffs,
    /// The cluster's log groups, observed at once for a resync of many pipelines.
    pub log_groups: tokio::sync::Mutex<Option<LogGroupSnapshot>>,
    /// KMS aliases and IAM roles read once for many pipelines, and the per-key KMS check schedule.
    pub batched: batched::BatchedReads,
    /// True once both stores hold the cluster's state; closed when the operator stops first.
    pub synced: tokio::sync::watch::Receiver<bool>,
    /// Children verified to be as desired: skips the dry-run comparison while nothing changed.
    pub applied: children::AppliedCache,
    /// Metadata caches of this shard's children, filled by the child watches: what the applier
    /// reads instead of the API server.
    pub child_stores: child_stores::ChildStores,
    /// Every node, slimmed to labels, schedulability and readiness (`slim_node`), filled by the
    /// pipeline controller's node watch: a reconcile's GPU nodes come from here once it is
    /// ready, not from a LIST.
    pub nodes: Store<Node>,
    /// Every namespace's name and Pod Security level (`shared_reads`): a reconcile's collector
    /// namespace comes from here, not from a GET.
    pub namespaces: Store<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>>,
    /// One listing of an External DCGM exporter's pods for the reconciles of every pipeline
    /// scraping it.
    pub exporter_pods: shared_reads::ExporterPods,
    /// The Managed DCGM exporters' pods (`shared_reads::watch_managed_exporter_pods`).
    pub managed_exporter_pods: Store<k8s_openapi::api::core::v1::Pod>,
    /// mlobs' pods waiting in `Pending` (`shared_reads::watch_waiting_pods`): why the scheduler
    /// cannot place a collector.
    pub waiting_pods: Store<k8s_openapi::api::core::v1::Pod>,
    /// Pipeline uid → the next DataFlowing re-check, while data is not flowing.
    pub data_checks: Mutex<HashMap<String, dataflow::Recheck>>,
    /// The `DataFlowing` checks' DescribeLogStreams budget (`--stream-reads-per-second`).
    pub stream_reads: crate::aws::budget::CallBudget,
    /// Pipeline uid → drift a reconcile found (and put back) whose status write failed: the next
    /// status write records it, so a hand edit corrected by a reconcile that lost a status race
    /// (409) is still recorded once.
    pub pending_drift: Mutex<HashMap<String, Vec<crate::aws::Drift>>>,
    /// Which pipelines this replica reconciles.
    pub shard: shard::Shard,
    /// One reconcile of a pipeline at a time across the queue's controller and the drift
    /// events' express lane (`express`).
    pub exclusive: express::Exclusive,
}

/// Log groups under one prefix, as one paged DescribeLogGroups saw them.
pub struct LogGroupSnapshot {
    pub prefix: String,
    pub taken: SystemTime,
    pub groups: Arc<BTreeMap<String, crate::aws::logs::ObservedGroup>>,
}

impl Ctx {
    /// Waits until both stores are synced; `false` when the operator stops before that.
    ///
    /// A reconcile must not call another controller's `Store::wait_until_ready` itself: kube-runtime's
    /// `DelayedInit` keeps only the last waiter's waker, and reconciles run as separate futures
    /// of a `FuturesUnordered`, so all but one waiter were never woken (the startup deadlock seen on
    /// a real control plane). One future waits on the stores and publishes the result here.
    pub async fn caches_synced(&self) -> bool {
        let mut rx = self.synced.clone();
        rx.wait_for(|ready| *ready).await.is_ok()
    }

    /// Publishes an event; failures are logged, never fatal (events are best effort).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: Reason,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.as_str().to_string(),
            note: Some(truncate(note, 1000)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, "event not published");
        }
    }

    fn mark_aws_synced(&self, p: &MLObservabilityPipeline, fingerprint: pipeline::plan::PlanFingerprint) {
        if let Some(uid) = p.uid() {
            let mut m = self.aws_synced.lock().unwrap_or_else(|e| e.into_inner());
            m.insert(uid, (fingerprint, SystemTime::now()));
        }
    }

    /// When this process last ensured the pipeline's AWS side ready: (plan fingerprint, when).
    fn aws_memory(&self, p: &MLObservabilityPipeline) -> Option<(pipeline::plan::PlanFingerprint, SystemTime)> {
        let uid = p.uid()?;
        let m = self.aws_synced.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&uid).cloned()
    }

    /// Events and drift metrics for what an applier run did: Created/Updated, hand edits put back
    /// (returned as drift records), children pruned.
    async fn report_applied<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        report: &applier::Report,
    ) -> Vec<crate::aws::Drift> {
        let mut drift = Vec::new();
        for (what, a) in &report.applied {
            match a {
                children::Applied::Unchanged => {}
                children::Applied::Created | children::Applied::Updated => {
                    let verb = if *a == children::Applied::Created {
                        Reason::Created
                    } else {
                        Reason::Updated
                    };
                    self.event(obj, EventType::Normal, verb, "ApplyChild", format!("{verb} {what}"))
                        .await;
                }
                children::Applied::Corrected { field, actual, desired } => {
                    let note = format!("{what} {field} was edited by hand; put back");
                    self.event(obj, EventType::Normal, Reason::DriftCorrected, "ApplyChild", note)
                        .await;
                    drift.push(crate::aws::Drift {
                        resource: what.clone(),
                        field: field.clone(),
                        desired: desired.clone(),
                        actual: actual.clone(),
                        corrected: true,
                    });
                }
            }
        }
        if !drift.is_empty() {
            let n = drift.len() as u64;
            self.metrics.drift("kubernetes", "found", n);
            self.metrics.drift("kubernetes", "corrected", n);
        }
        self.pruned(obj, &report.pruned).await;
        drift
    }

    /// The log groups under `prefix`, from a snapshot taken at or after `fresh_since` (the
    /// current resync period's start, see [`resync`]): N pipelines resyncing in one period cost
    /// one listing, N/50 DescribeLogGroups pages, instead of N calls. `None` when the snapshot
    /// cannot be taken (the caller then describes its own groups).
    pub async fn log_group_snapshot(
        &self,
        prefix: &str,
        fresh_since: SystemTime,
    ) -> Option<Arc<BTreeMap<String, crate::aws::logs::ObservedGroup>>> {
        let mut cached = self.log_groups.lock().await;
        if let Some(s) = cached.as_ref()
            && s.prefix == prefix
            && s.taken >= fresh_since
        {
            return Some(s.groups.clone());
        }
        let taken = SystemTime::now();
        let groups = Arc::new(crate::aws::logs::observe_many(&self.aws, prefix).await.ok()?);
        *cached = Some(LogGroupSnapshot {
            prefix: prefix.to_string(),
            taken,
            groups: groups.clone(),
        });
        Some(groups)
    }

    /// One Normal event per child deleted by a prune (`Kind/namespace/name`).
    pub async fn pruned<K: Resource<DynamicType = ()>>(&self, obj: &K, pruned: &[String]) {
        for what in pruned {
            self.event(
                obj,
                EventType::Normal,
                Reason::Deleted,
                "PruneChild",
                format!("Deleted {what}"),
            )
            .await;
        }
    }

    /// Drops the snapshot after mlobs changed a log group, so nobody reads the old state.
    pub async fn invalidate_log_groups(&self) {
        *self.log_groups.lock().await = None;
    }

    /// Makes the next reconcile of `p` ensure its AWS side (a drift event says it changed).
    fn forget_aws_sync(&self, p: &MLObservabilityPipeline) {
        if let Some(uid) = p.uid() {
            let mut m = self.aws_synced.lock().unwrap_or_else(|e| e.into_inner());
            m.remove(&uid);
        }
    }

    fn forget(&self, p: &MLObservabilityPipeline) {
        if let Some(uid) = p.uid() {
            let mut m = self.aws_synced.lock().unwrap_or_else(|e| e.into_inner());
            m.remove(&uid);
            drop(m);
            self.set_recheck(&uid, None);
            self.stream_reads.forget(&uid);
            self.batched.pipeline_gone(&uid);
            self.metrics.data_flowing(&uid, None);
            let mut m = self.pending_drift.lock().unwrap_or_else(|e| e.into_inner());
            m.remove(&uid);
        }
    }

    /// The pipeline's scheduled DataFlowing re-check.
    fn recheck(&self, uid: &str) -> Option<dataflow::Recheck> {
        let m = self.data_checks.lock().unwrap_or_else(|e| e.into_inner());
        m.get(uid).copied()
    }

    fn set_recheck(&self, uid: &str, r: Option<dataflow::Recheck>) {
        let mut m = self.data_checks.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Some(r) => m.insert(uid.to_string(), r),
            None => m.remove(uid),
        };
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The current time as a Kubernetes timestamp.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// `ms` spread by ±10% per object, so 1,000 pipelines waiting together (on exporter pods, on Pod
/// Security labels) do not look again together. Resyncs come at slots instead (see [`resync`]).
pub fn jittered<K: Resource>(ms: u64, obj: &K) -> Duration {
    let key = obj
        .meta()
        .uid
        .clone()
        .or_else(|| obj.meta().name.clone())
        .unwrap_or_default();
    let h = Sha256::digest(key.as_bytes());
    let frac = f64::from(u16::from_be_bytes([h[0], h[1]])) / f64::from(u16::MAX);
    Duration::from_millis((ms as f64 * (0.9 + 0.2 * frac)) as u64)
}

/// The node selector a pipeline's collector uses: its own, else its policy's, else the default.
fn node_selector(
    spec: &crate::crd::pipeline::MLObservabilityPipelineSpec,
    policies: &[Arc<GpuTelemetryPolicy>],
) -> BTreeMap<String, String> {
    if let Some(s) = spec.sources.as_ref().and_then(|s| s.node_selector.clone()) {
        return s;
    }
    if let lookup::Governing::One(pol) = lookup::governing_ref(spec.policy_ref.as_deref(), policies)
        && let Some(s) = pol.spec.node_selector.clone()
    {
        return s;
    }
    crate::conventions::default_gpu_node_selector()
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Pipelines a policy change affects: those naming it, and those without policyRef (a default
/// flag may have moved to or from it).
fn pipelines_of_policy(store: &Store<cached::CachedPipeline>, pol: &GpuTelemetryPolicy) -> Vec<PipelineRef> {
    let name = pol.name_any();
    store
        .state()
        .iter()
        .filter(|p| p.spec.policy_ref.as_deref().is_none_or(|r| r == name))
        .map(|p| pipeline_ref(p.as_ref()))
        .collect()
}

/// Which node events matter: a node not seen before, or one whose labels, schedulability or
/// readiness changed. Kubelet heartbeats and status noise are ignored: on a real cluster every
/// node's status is rewritten every few minutes, which would reconcile every pipeline each time.
/// A node that goes away shows in the DaemonSets' status, which the controllers watch.
#[derive(Default)]
struct NodeChanges(Mutex<HashMap<String, u64>>);

impl NodeChanges {
    fn changed(&self, node: &Node) -> bool {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone());
        let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable);
        let key = format!("{:?}|{ready:?}|{unschedulable:?}", node.labels());
        let h = Sha256::digest(key.as_bytes());
        let fp = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(node.name_any(), fp) != Some(fp)
    }
}

/// Which policy events reconcile the policy's pipelines: a policy created or deleted, its spec
/// changed (its generation) or its deletion begun. Not a status write: the policy controller
/// rewrites a policy's status whenever a count moves, which is every time one of its pipelines is
/// created or turns compliant, and no pipeline reads a policy's status. Before this filter, each
/// such write reconciled every pipeline of the policy.
#[derive(Default)]
struct PolicyChanges(Mutex<HashMap<String, (Option<i64>, bool)>>);

impl PolicyChanges {
    /// The policy of `ev` when its pipelines are to be reconciled.
    fn of(&self, ev: watcher::Event<GpuTelemetryPolicy>) -> Option<GpuTelemetryPolicy> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match ev {
            watcher::Event::Apply(pol) | watcher::Event::InitApply(pol) => {
                let spec = (pol.metadata.generation, pol.metadata.deletion_timestamp.is_some());
                (m.insert(pol.name_any(), spec) != Some(spec)).then_some(pol)
            }
            watcher::Event::Delete(pol) => {
                m.remove(&pol.name_any());
                Some(pol)
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    }
}

/// Pipelines whose GPU node selector matches a node that changed.
fn pipelines_of_node(
    pipelines: &Store<cached::CachedPipeline>,
    policies: &Store<GpuTelemetryPolicy>,
    node: &Node,
) -> Vec<PipelineRef> {
    let pols = policies.state();
    pipelines
        .state()
        .iter()
        .filter(|p| matches(&node_selector(&p.spec, &pols), node.labels()))
        .map(|p| pipeline_ref(p.as_ref()))
        .collect()
}

/// A reference to a pipeline of the pipeline controller's queue and cache.
pub type PipelineRef = ObjectRef<cached::CachedPipeline>;

/// A pipeline's reference as the controller's queue holds it: namespace and name, on which the
/// queue and the cache key. `ObjectRef::from_obj` adds the uid and resourceVersion, two more
/// strings in each queued request that nothing reads.
pub fn pipeline_ref<K: Resource>(p: &K) -> PipelineRef {
    let r = ObjectRef::new(p.meta().name.as_deref().unwrap_or_default());
    match p.meta().namespace.as_deref() {
        Some(ns) => r.within(ns),
        None => r,
    }
}

/// The pipeline a child belongs to: its `mlobs.io/owner` annotation (`<namespace>/<name>`), else
/// its owner reference to a pipeline.
pub fn pipeline_of_child<K: Resource>(child: &K) -> Option<PipelineRef> {
    if let Some((ns, name)) = child
        .annotations()
        .get(crate::conventions::OWNER_ANNOTATION)
        .and_then(|o| o.split_once('/'))
    {
        return Some(ObjectRef::new(name).within(ns));
    }
    let ns = child.meta().namespace.as_deref()?;
    child
        .owner_references()
        .iter()
        .find(|o| o.kind == "MLObservabilityPipeline" && o.api_version.starts_with("mlobs.io/"))
        .map(|o| ObjectRef::new(&o.name).within(ns))
}

/// What the operator needs besides a Kubernetes client.
pub struct Settings {
    pub aws: AwsClients,
    pub desired: desired::Context,
    pub metrics: Metrics,
    pub reporter: Reporter,
    /// SQS queue URL of CloudTrail events (`--drift-events-queue`); None: drift is found at resyncs.
    pub drift_events_queue: Option<String>,
    /// Which pipelines this replica reconciles (`--shard`).
    pub shard: shard::Shard,
    /// Reconciles in flight at once, per controller (`--max-concurrent-reconciles`).
    pub concurrency: u16,
    /// How often a KMS key's state, tags, rotation and policy are read when nothing names it
    /// (`--kms-check-interval`).
    pub kms_check_interval: Duration,
    /// How often the reads drift events stand in for run while the queue is read
    /// (`--event-backstop-interval`).
    pub event_backstop_interval: Duration,
    /// DescribeLogStreams calls a second at the most (`--stream-reads-per-second`; 0: no limit).
    pub stream_reads_per_second: f64,
}

/// Drops what no reconcile reads before a pipeline enters the cache: managedFields (a few KB
/// per object once status has been written a few times) and kubectl's client-side
/// last-applied-configuration annotation (a second copy of the spec).
fn slim<K: Resource>(p: &mut K) {
    p.managed_fields_mut().clear();
    p.annotations_mut().remove(LAST_APPLIED);
}

/// What the controllers read of a node: its name, labels, `spec.unschedulable` and its `Ready`
/// condition (a node's images, addresses and other conditions can be tens of KiB).
fn slim_node(n: &mut Node) {
    let meta = &mut n.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
        unschedulable: n.spec.as_ref().and_then(|s| s.unschedulable),
        ..Default::default()
    });
    let ready = (n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| k8s_openapi::api::core::v1::NodeCondition {
            type_: c.type_.clone(),
            status: c.status.clone(),
            ..Default::default()
        });
    n.status = Some(k8s_openapi::api::core::v1::NodeStatus {
        conditions: ready.map(|c| vec![c]),
        ..Default::default()
    });
}

/// The nodes whose labels match `selector`, from `ctx.nodes` when it is ready, else listed.
pub async fn nodes_matching(ctx: &Ctx, selector: &BTreeMap<String, String>) -> error::Result<Vec<Node>> {
    if shared_reads::is_ready(&ctx.nodes) {
        let found = ctx.nodes.state_filter(|n| matches(selector, n.labels()));
        return Ok(found.iter().map(|n| n.as_ref().clone()).collect());
    }
    Ok(Api::<Node>::all(ctx.client.clone())
        .list_metadata(&kube::api::ListParams::default().labels(&crate::conventions::selector_string(selector)))
        .await?
        .items
        .into_iter()
        .map(|m| Node {
            metadata: m.metadata,
            ..Default::default()
        })
        .collect())
}

/// Whether a pipeline watch event belongs to `shard` (errors and list markers always do).
fn shard_event<K: Resource>(shard: &shard::Shard, ev: &Result<watcher::Event<K>, watcher::Error>) -> bool {
    match ev {
        Ok(watcher::Event::Apply(p) | watcher::Event::Delete(p) | watcher::Event::InitApply(p)) => shard.owns_obj(p),
        Ok(watcher::Event::Init | watcher::Event::InitDone) | Err(_) => true,
    }
}

/// The pipeline a child belongs to, when it is this shard's.
fn own_child<K: Resource>(shard: &shard::Shard, child: &K) -> Option<PipelineRef> {
    pipeline_of_child(child).filter(|r| shard.owns(r.namespace.as_deref().unwrap_or_default(), &r.name))
}

/// Metadata-only watch of the operator's children of kind `K` (label-selected).
fn children_meta<K>(
    client: &Client,
    cfg: &watcher::Config,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    // kube 5 sends metadata-only list and watch requests for `PartialObjectMeta`.
    lean::watch::<PartialObjectMeta<K>>(client.clone(), cfg.clone()).touched_objects()
}

/// Logs a failed watch from a controller's output (the API server unreachable, a list
/// forbidden): the watch retries with backoff (up to 30 s apart), and nothing else would say
/// why the caches do not fill. Reconcile errors are logged by the error policies.
fn log_watch_error<T, E>(r: Result<T, controller::Error<E, watcher::Error>>) -> futures::future::Ready<()> {
    if let Err(controller::Error::QueueError(e)) = r {
        tracing::warn!(error = %e, "watch failed; retrying with backoff");
    }
    futures::future::ready(())
}

/// The pipelines to reconcile for each change of `changes`, as `mapper` names them; a failed
/// watch is logged (the watch retries with backoff). Used instead of kube's `watches_stream`,
/// whose requests each carry the changed object's reference with its API group, version, kind
/// and plural as five more strings, twice over while queued.
fn triggers<C, I>(
    changes: impl futures::Stream<Item = Result<C, watcher::Error>> + Send + 'static,
    mapper: impl Fn(C) -> I + Send + 'static,
) -> impl futures::Stream<Item = PipelineRef> + Send + 'static
where
    I: IntoIterator<Item = PipelineRef>,
    I::IntoIter: Send + 'static,
{
    changes
        .filter_map(move |r| {
            futures::future::ready(match r {
                Ok(c) => Some(futures::stream::iter(mapper(c))),
                Err(e) => {
                    tracing::warn!(error = %e, "watch failed; retrying with backoff");
                    None
                }
            })
        })
        .flatten()
}

/// Runs a cache-filling future until the operator stops.
async fn fill_until(fill: impl std::future::Future<Output = ()>, stop: impl std::future::Future<Output = ()>) {
    tokio::select! {
        () = fill => {}
        () = stop => {}
    }
}

/// Runs both controllers until `shutdown` resolves (then drains in-flight reconciles). With
/// `settings.shard` set, the pipeline controller sees only its shard's pipelines, and only shard 0
/// runs the policy controller (the other shards keep a cache of the policies).
pub async fn run_controllers(
    client: Client,
    settings: Settings,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let shard = settings.shard;
    // Children are read by their labels only: their mapping needs owner annotation and owner
    // references, so the watches hold metadata, not the objects.
    let managed = watcher::Config::default().labels(MANAGED_BY);
    let config = controller::Config::default().concurrency(settings.concurrency);
    // Drift events name pipelines to reconcile now (see `drift_events`): the express lane
    // reconciles them at once and then hands them to the queue's controller (`express`).
    let (drift_tx, drift_rx) = futures::channel::mpsc::unbounded();
    let (handed_tx, handed_rx) = futures::channel::mpsc::unbounded();
    let gc = Controller::new(
        Api::<GpuTelemetryPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(config.clone());
    // The policies' counts follow the pipelines of the cache they are read from: this replica's
    // own when it is the only shard, every pipeline of the cluster (`Counted`) on shard 0 of
    // several; other shards run no policy reconciles (see `counted::CountTriggers`).
    let (count_triggers, policy_triggers) = counted::CountTriggers::new(gc.store());
    let (mut own_triggers, counted_triggers) = match (shard.runs_policies(), shard.is_sharded()) {
        (false, _) => (None, None),
        (true, true) => (None, Some(count_triggers)),
        (true, false) => (Some(count_triggers), None),
    };
    // The shard's pipelines only: others are dropped before the cache, so a replica's memory
    // follows its shard, not the cluster.
    let (p_reader, p_writer) = reflector::store();
    let own_pipelines = lean::watch::<cached::CachedPipeline>(client.clone(), watcher::Config::default())
        .filter(move |ev| futures::future::ready(shard_event(&shard, ev)))
        .modify(slim);
    let own_pipelines = reflector(p_writer, own_pipelines).inspect_ok(move |ev| {
        if let Some(t) = own_triggers.as_mut() {
            t.event(ev);
        }
    });
    // The cache's changes reach the queue as namespace/name references (`triggers`), like every
    // other trigger: kube's own trigger for them (`for_stream`'s stream) would queue each with
    // its uid and resourceVersion, two more strings per queued pipeline.
    let pc = Controller::for_stream(futures::stream::empty(), p_reader)
        .with_config(config)
        .reconcile_on(triggers(own_pipelines.applied_objects(), |p| Some(pipeline_ref(&p))))
        .reconcile_on(handed_rx);
    // Shard 0 of several needs every pipeline for the policies' counts; other shards run no
    // policy reconciles and keep only the policies.
    let (counted_pipelines, fill_counted) = match counted_triggers {
        Some(triggers) => {
            let (store, fill) = counted::watch(client.clone(), triggers);
            (Some(store), fill.boxed())
        }
        None => (None, futures::future::ready(()).boxed()),
    };
    let policies = if shard.runs_policies() {
        gc.store()
    } else {
        let (reader, writer) = reflector::store();
        let api = Api::<GpuTelemetryPolicy>::all(client.clone());
        let fill = reflector(writer, watcher(api, watcher::Config::default()).default_backoff())
            .for_each(|_| futures::future::ready(()));
        tokio::spawn(fill_until(fill, shutdown.clone()));
        reader
    };
    let drift_queue = settings.drift_events_queue.clone();
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    // The child watches trigger reconciles and fill the applier's metadata caches.
    let (ds_store, ds_changes) = child_stores::watch_daemon_sets(&client, &managed, shard);
    let (cm_store, cm_changes) = child_stores::watch::<ConfigMap>(&client, &managed, shard);
    let (sa_store, sa_changes) = child_stores::watch::<ServiceAccount>(&client, &managed, shard);
    let (svc_store, svc_changes) = child_stores::watch::<Service>(&client, &managed, shard);
    let (cr_store, cr_changes) = child_stores::watch::<ClusterRole>(&client, &managed, shard);
    let (crb_store, crb_changes) = child_stores::watch::<ClusterRoleBinding>(&client, &managed, shard);
    let (nodes, nodes_writer) = reflector::store();
    let node_changes = reflector(
        nodes_writer,
        lean::watch::<Node>(client.clone(), watcher::Config::default()).modify(slim_node),
    )
    .touched_objects();
    let (namespaces, fill_namespaces) = shared_reads::watch_namespaces(client.clone());
    let (waiting_pods, waiting_changes) = shared_reads::watch_waiting_pods(client.clone());
    let (managed_exporter_pods, exporter_changes) = shared_reads::watch_managed_exporter_pods(client.clone());
    tokio::spawn(fill_until(fill_namespaces, shutdown.clone()));
    let child_stores = child_stores::ChildStores {
        daemon_sets: ds_store,
        config_maps: cm_store,
        service_accounts: sa_store,
        services: svc_store,
        cluster_roles: cr_store,
        cluster_role_bindings: crb_store,
    };
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        aws: settings.aws,
        desired: settings.desired,
        metrics: settings.metrics,
        recorder: events::Publisher::new(client.clone(), settings.reporter),
        prices: Prices::default(),
        pipelines: pc.store(),
        counted_pipelines,
        policies,
        aws_synced: Mutex::new(HashMap::new()),
        backoffs: backoff::Backoffs::default(),
        log_groups: tokio::sync::Mutex::new(None),
        batched: batched::BatchedReads::new(settings.kms_check_interval, settings.event_backstop_interval),
        synced: synced_rx,
        applied: children::AppliedCache::default(),
        child_stores,
        nodes,
        namespaces,
        exporter_pods: shared_reads::ExporterPods::default(),
        waiting_pods,
        managed_exporter_pods,
        data_checks: Mutex::new(HashMap::new()),
        stream_reads: crate::aws::budget::CallBudget::per_second(settings.stream_reads_per_second),
        pending_drift: Mutex::new(HashMap::new()),
        shard,
        exclusive: express::Exclusive::default(),
    });
    ctx.metrics.shard(shard);
    tokio::spawn(fill_until(fill_counted, shutdown.clone()));

    let pipes = ctx.pipelines.clone();
    let collectors = ctx.child_stores.daemon_sets.clone();
    let (pipes2, pols2) = (ctx.pipelines.clone(), ctx.policies.clone());
    // Children map to their pipeline by the owner annotation, not only by owner reference: a
    // collector in the policy's collectorNamespace cannot carry one.
    let pipeline_ctl = pc
        .reconcile_on(triggers(ds_changes, move |o| own_child(&shard, &o)))
        .reconcile_on(triggers(cm_changes, move |o| own_child(&shard, &o)))
        .reconcile_on(triggers(sa_changes, move |o| own_child(&shard, &o)))
        .reconcile_on(triggers(svc_changes, move |o| own_child(&shard, &o)))
        .reconcile_on(triggers(cr_changes, move |o| own_child(&shard, &o)))
        .reconcile_on(triggers(crb_changes, move |o| own_child(&shard, &o)))
        // A pod the scheduler cannot place: its DaemonSet's status may not change.
        .reconcile_on(triggers(waiting_changes, move |pod| {
            let ds = shared_reads::unschedulable(&pod).and(shared_reads::controlling_daemon_set(&pod))?;
            own_child(
                &shard,
                &child_stores::get(&collectors, ds.namespace.as_deref(), &ds.name)?,
            )
        }))
        .reconcile_on(triggers(
            {
                let seen = PolicyChanges::default();
                watcher(
                    Api::<GpuTelemetryPolicy>::all(client.clone()),
                    watcher::Config::default(),
                )
                .try_filter_map(move |ev| futures::future::ready(Ok(seen.of(ev))))
            },
            move |pol| pipelines_of_policy(&pipes, &pol),
        ))
        // A Managed exporter pod that starts or stops running: the policy's status may follow
        // only later (or not at all, for a pod moved to another node).
        .reconcile_on(triggers(exporter_changes, {
            let (pipes, pols) = (ctx.pipelines.clone(), ctx.policies.clone());
            move |pod| {
                let Some(label) = pod.labels().get(crate::conventions::POLICY_LABEL) else {
                    return vec![];
                };
                (pols.state().iter())
                    .filter(|pol| crate::conventions::policy_label(&pol.name_any()) == *label)
                    .flat_map(|pol| pipelines_of_policy(&pipes, pol))
                    .collect::<Vec<_>>()
            }
        }))
        .reconcile_on(triggers(node_changes, {
            let seen = NodeChanges::default();
            move |node| {
                if seen.changed(&node) {
                    pipelines_of_node(&pipes2, &pols2, &node)
                } else {
                    vec![]
                }
            }
        }))
        .graceful_shutdown_on(shutdown.clone())
        .run(pipeline::reconcile, pipeline::error_policy, ctx.clone())
        .for_each(log_watch_error);

    let policy_ctl = if shard.runs_policies() {
        let all_policies = ctx.policies.clone();
        // Only the Managed exporters' DaemonSets (what a policy owns): not every collector's,
        // whose status changes the policy controller would otherwise receive too.
        let exporters = format!(
            "{MANAGED_BY},{}={}",
            crate::conventions::NAME_LABEL,
            crate::conventions::EXPORTER_APP
        );
        let exporters = watcher::Config::default().labels(&exporters);
        gc.owns_stream(children_meta::<DaemonSet>(&client, &exporters))
            // Pipeline changes that move the counts, once the cache the counts read holds them.
            .reconcile_on(policy_triggers)
            .watches_stream(
                lean::watch::<Node>(client.clone(), watcher::Config::default()).touched_objects(),
                {
                    let seen = NodeChanges::default();
                    move |node| {
                        if !seen.changed(&node) {
                            return vec![];
                        }
                        all_policies
                            .state()
                            .iter()
                            .map(|x| ObjectRef::from_obj(x.as_ref()))
                            .collect::<Vec<_>>()
                    }
                },
            )
            .graceful_shutdown_on(shutdown.clone())
            .run(policy::reconcile, policy::error_policy, ctx.clone())
            .for_each(log_watch_error)
            .boxed()
    } else {
        futures::future::ready(()).boxed()
    };

    // Ready once the caches hold the cluster's state (the first lists succeeded). This future is
    // the only one that waits on the stores outside their own controllers; reconciles wait on
    // `synced` (see `Ctx::caches_synced`).
    ready.store(false, Ordering::SeqCst);
    let (own, counted) = (ctx.pipelines.clone(), ctx.counted_pipelines.clone());
    let (g_store, flag) = (ctx.policies.clone(), ready.clone());
    let stopping = shutdown.clone();
    let synced = async move {
        let both = async {
            let counted_ready = match counted {
                Some(all) => all.wait_until_ready().await.is_ok(),
                None => true,
            };
            own.wait_until_ready().await.is_ok() && counted_ready && g_store.wait_until_ready().await.is_ok()
        };
        tokio::select! {
            ok = both => if ok {
                flag.store(true, Ordering::SeqCst);
                synced_tx.send_replace(true);
                tracing::info!(shard = %shard, "caches synced; reconciling");
                // Keep the sender open: dropping it would look like a stop to waiting reconciles.
                stopping.await;
            },
            () = stopping.clone() => {}
        }
        drop(synced_tx);
    };
    // After SIGTERM, running reconciles get DRAIN_TIMEOUT to finish; then the process stops
    // anyway (the lease is released by the caller), so a hung AWS or API call cannot keep a
    // terminating leader alive.
    let events_ctx = ctx.clone();
    let events_stop = shutdown.clone();
    let drift_events = async move {
        let Some(url) = drift_queue else { return };
        tokio::select! {
            () = drift_events::run(events_ctx, url, drift_tx) => {}
            () = events_stop => {}
        }
    };
    // Ends with the events reader (its sender dropped), after the reconciles in flight.
    let express = express::run(ctx.clone(), drift_rx, handed_tx);
    let drained = async move {
        shutdown.await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        _ = async { futures::join!(pipeline_ctl, policy_ctl, synced, drift_events, express) } => {}
        () = drained => tracing::warn!(timeout_s = DRAIN_TIMEOUT.as_secs(), "reconciles still running at shutdown; stopping them"),
    }
    ready.store(false, Ordering::SeqCst);
}

/// How long reconciles in flight at SIGTERM may take to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: serde_json::Value, ready: &str, heartbeat: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "gpu-0", "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}]}}))
        .expect("node")
    }

    #[test]
    fn the_cached_pipeline_drops_managed_fields_and_last_applied_only() {
        let mut p: MLObservabilityPipeline = serde_json::from_value(json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "metadata": {"name": "p", "namespace": "ns",
                "annotations": {LAST_APPLIED: "{\"spec\":{}}", "mlobs.io/keep": "yes"},
                "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "mlobs.io/v1alpha1"}]},
            "spec": {}
        }))
        .expect("pipeline");
        slim(&mut p);
        assert!(p.managed_fields().is_empty());
        assert_eq!(p.annotations().keys().collect::<Vec<_>>(), ["mlobs.io/keep"]);
        assert!(shard_event(
            &shard::Shard { index: 0, count: 1 },
            &Ok(watcher::Event::Apply(p.clone()))
        ));
        let other = shard::Shard {
            index: 1 - shard::Shard::of("ns", "p", 2),
            count: 2,
        };
        assert!(!shard_event(&other, &Ok(watcher::Event::InitApply(p))));
        assert!(shard_event(
            &other,
            &Ok(watcher::Event::<MLObservabilityPipeline>::InitDone)
        ));
    }

    #[test]
    fn policy_status_writes_reconcile_no_pipeline_but_spec_changes_and_deletes_do() {
        let pol = |generation: i64, status: serde_json::Value| -> GpuTelemetryPolicy {
            serde_json::from_value(json!({"apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
                "metadata": {"name": "gpu", "generation": generation}, "spec": {}, "status": status}))
            .expect("policy")
        };
        let seen = PolicyChanges::default();
        let name = |p: Option<GpuTelemetryPolicy>| p.map(|p| p.name_any());
        assert_eq!(
            name(seen.of(watcher::Event::Apply(pol(1, json!({}))))),
            Some("gpu".into()),
            "new"
        );
        let counted = json!({"gpuNodes": 3, "observedGeneration": 1});
        assert_eq!(
            name(seen.of(watcher::Event::Apply(pol(1, counted.clone())))),
            None,
            "status write"
        );
        assert_eq!(
            name(seen.of(watcher::Event::InitApply(pol(1, counted.clone())))),
            None,
            "relist, unchanged"
        );
        assert_eq!(seen.of(watcher::Event::InitDone).map(|p| p.name_any()), None);
        assert_eq!(
            name(seen.of(watcher::Event::Apply(pol(2, counted.clone())))),
            Some("gpu".into()),
            "spec edit"
        );
        let mut deleting = pol(2, counted.clone());
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(
            name(seen.of(watcher::Event::Apply(deleting))),
            Some("gpu".into()),
            "deletion begun"
        );
        assert_eq!(
            name(seen.of(watcher::Event::Delete(pol(2, counted)))),
            Some("gpu".into()),
            "deleted"
        );
        assert_eq!(
            name(seen.of(watcher::Event::Apply(pol(1, json!({}))))),
            Some("gpu".into()),
            "created again"
        );
    }

    #[test]
    fn node_heartbeats_are_not_changes_but_labels_and_readiness_are() {
        let seen = NodeChanges::default();
        let gpu = json!({"nvidia.com/gpu.present": "true"});
        assert!(
            seen.changed(&node(gpu.clone(), "True", "2026-01-01T00:00:00Z")),
            "new node"
        );
        assert!(
            !seen.changed(&node(gpu.clone(), "True", "2026-01-01T00:05:00Z")),
            "heartbeat"
        );
        assert!(
            seen.changed(&node(gpu.clone(), "False", "2026-01-01T00:06:00Z")),
            "not ready"
        );
        assert!(
            seen.changed(&node(json!({}), "False", "2026-01-01T00:06:00Z")),
            "label removed"
        );
    }
}
