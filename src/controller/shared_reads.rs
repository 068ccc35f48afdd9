//! Reads many pipelines share: the namespaces (from a metadata watch), the DCGM exporter's pods
//! (one listing per exporter for a burst of reconciles) and mlobs' waiting pods (a watch of the
//! pods in `Pending`).
//!
//! Before, every reconcile asked the API server for its collector namespace (a GET) and listed
//! its exporter's pods (a LIST): at 1,000 pipelines under one policy that was 2,000 requests for
//! one answer each (`make bench`, see the README).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec, PodStatus};
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use super::error::Result;
use super::lean;

/// The label Pod Security admission enforces a level by: the only label the namespace cache
/// keeps.
pub const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// Whether a store's first listing is complete (its contents are the cluster's).
pub fn is_ready<K: kube::Resource + Clone>(store: &Store<K>) -> bool
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
}

/// A metadata watch of every namespace, slimmed to its name and Pod Security level: (the store,
/// the future that fills it).
pub fn watch_namespaces(client: Client) -> (Store<PartialObjectMeta<Namespace>>, impl Future<Output = ()> + Send) {
    let (reader, writer) = reflector::store();
    let events = lean::watch::<PartialObjectMeta<Namespace>>(client, watcher::Config::default()).modify(slim_namespace);
    let fill = reflector(writer, events).for_each(|_| futures::future::ready(()));
    (reader, fill)
}

fn slim_namespace(o: &mut PartialObjectMeta<Namespace>) {
    let m = &mut o.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.uid = None;
    m.creation_timestamp = None;
    if let Some(l) = m.labels.as_mut() {
        l.retain(|k, _| k == PSA_ENFORCE);
    }
}

/// The namespace `name` (its name and Pod Security label), `None` when it does not exist. From
/// the cache when it holds the namespace; else (a namespace created a moment ago, or the cache
/// not listed yet) from the API server, so a new namespace is never reported missing.
pub async fn namespace(
    client: &Client,
    cache: &Store<PartialObjectMeta<Namespace>>,
    name: &str,
) -> Result<Option<Namespace>> {
    if is_ready(cache)
        && let Some(ns) = cache.get(&ObjectRef::new(name))
    {
        return Ok(Some(Namespace {
            metadata: ns.metadata.clone(),
            ..Default::default()
        }));
    }
    Ok(Api::<Namespace>::all(client.clone()).get_opt(name).await?)
}

/// How long one listing of an exporter's pods answers for every pipeline that scrapes it: short,
/// since a pod replaced without any change of the policy's counts is seen only after it.
pub const EXPORTER_LISTING_FRESH_FOR: Duration = Duration::from_secs(5);

/// The nodes running an exporter pod, per (namespace, selector): one listing answers the
/// reconciles of every pipeline scraping that exporter within [`EXPORTER_LISTING_FRESH_FOR`],
/// and only while the governing policy is unchanged (its resourceVersion is part of the key:
/// the policy's status follows its exporter's rollout, so a rollout change is never answered
/// from an older listing).
#[derive(Default)]
pub struct ExporterPods {
    listings: Mutex<HashMap<(String, String), Listing>>,
}

struct Listing {
    version: String,
    at: Instant,
    nodes: Arc<BTreeSet<String>>,
}

impl ExporterPods {
    /// The nodes with a Running pod matching `selector` in `namespace`; `version` is the
    /// governing policy's resourceVersion.
    pub async fn running_on(
        &self,
        client: &Client,
        namespace: &str,
        selector: &str,
        version: &str,
    ) -> Result<Arc<BTreeSet<String>>> {
        let key = (namespace.to_string(), selector.to_string());
        if let Some(nodes) = self.fresh(&key, version, Instant::now()) {
            return Ok(nodes);
        }
        let pods = Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().labels(selector))
            .await?;
        let nodes = Arc::new(running_nodes(&pods.items));
        self.keep(key, version, Instant::now(), nodes.clone());
        Ok(nodes)
    }

    fn fresh(&self, key: &(String, String), version: &str, now: Instant) -> Option<Arc<BTreeSet<String>>> {
        let listings = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        let l = listings.get(key)?;
        (l.version == version && now.saturating_duration_since(l.at) < EXPORTER_LISTING_FRESH_FOR)
            .then(|| l.nodes.clone())
    }

    /// Keeps a listing, and drops the ones no longer fresh (the map holds one entry per exporter
    /// listed in the last few seconds).
    fn keep(&self, key: (String, String), version: &str, now: Instant, nodes: Arc<BTreeSet<String>>) {
        let mut listings = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        listings.retain(|_, l| now.saturating_duration_since(l.at) < EXPORTER_LISTING_FRESH_FOR);
        listings.insert(
            key,
            Listing {
                version: version.to_string(),
                at: now,
                nodes,
            },
        );
    }
}

/// The field selector of [`watch_waiting_pods`]: a pod leaves the watch (a delete event) when it
/// starts running.
pub const WAITING_PHASE: &str = "status.phase=Pending";

/// A watch of mlobs' pods that wait in `Pending` (label- and field-selected), slimmed by
/// [`slim_pod`]: why the scheduler cannot place a collector comes from here, not from a LIST per
/// DaemonSet status change (at 1,000 pipelines rolling out that was ~8,000 LISTs, `make bench`).
/// A healthy cluster has no waiting pod, so the store is empty in steady state. Every shard keeps
/// every waiting pod (a pod names its DaemonSet, not its pipeline); the trigger maps it through
/// the shard's DaemonSet cache. Returns (the store, the stream of changed waiting pods).
pub fn watch_waiting_pods(
    client: Client,
) -> (
    Store<Pod>,
    impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
) {
    let cfg = watcher::Config::default()
        .labels(crate::conventions::MANAGED_BY_SELECTOR)
        .fields(WAITING_PHASE);
    let (store, events) = watch_pods(client, cfg);
    (store, events.touched_objects())
}

/// A watch of the Managed DCGM exporters' pods (mlobs' labels; one per GPU node and policy),
/// slimmed by [`slim_pod`]: which GPU nodes run one comes from here, not from a LIST per burst
/// of reconciles. An External exporter's pods (e.g. gpu-operator's) carry labels mlobs does not
/// choose; they are listed ([`ExporterPods`]). Returns (the store, the stream of the pods that
/// started or stopped running on a node or went away, by [`ExporterPodChanges`]): each carries
/// its policy's label.
pub fn watch_managed_exporter_pods(
    client: Client,
) -> (
    Store<Pod>,
    impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
) {
    let selector = format!(
        "{},{}={}",
        crate::conventions::MANAGED_BY_SELECTOR,
        crate::conventions::NAME_LABEL,
        crate::conventions::EXPORTER_APP
    );
    let (store, events) = watch_pods(client, watcher::Config::default().labels(&selector));
    let mut seen = ExporterPodChanges::default();
    let changes = events.flat_map(move |event| {
        let pods: Vec<Result<Pod, watcher::Error>> = match event {
            Ok(event) => seen.changes(event).into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(pods)
    });
    (store, changes)
}

/// Which exporter pod events matter to the pipelines: a pod that starts or stops running on a
/// node (its phase or node changed) or goes away, not a status rewrite. It remembers each pod's
/// (phase, node) and policy label until the pod is deleted, or missing from a relisting (a
/// deletion the watch did not see).
#[derive(Default)]
pub struct ExporterPodChanges {
    /// `namespace/name` → (phase, node, the policy label).
    known: HashMap<String, (PodPlace, Option<String>)>,
    /// While a relisting is in progress (between `Init` and `InitDone`): the pods it has shown.
    relisted: Option<BTreeSet<String>>,
}

/// A pod's (phase, node).
type PodPlace = (Option<String>, Option<String>);

impl ExporterPodChanges {
    /// The pods of `event` the pipelines must hear of: a started, stopped, moved or deleted pod,
    /// and at the end of a relisting, every remembered pod it did not show (as a bare pod with
    /// its name and policy label).
    pub fn changes(&mut self, event: watcher::Event<Pod>) -> Vec<Pod> {
        let key = |pod: &Pod| format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        match event {
            watcher::Event::Init => {
                self.relisted = Some(BTreeSet::new());
                vec![]
            }
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                let (k, place) = (key(&pod), place_of(&pod));
                if let Some(relisted) = self.relisted.as_mut() {
                    relisted.insert(k.clone());
                }
                let label = pod.labels().get(crate::conventions::POLICY_LABEL).cloned();
                let before = self.known.insert(k, (place.clone(), label));
                if before.is_some_and(|(p, _)| p == place) {
                    vec![]
                } else {
                    vec![pod]
                }
            }
            watcher::Event::Delete(pod) => {
                self.known.remove(&key(&pod));
                vec![pod]
            }
            watcher::Event::InitDone => {
                let relisted = self.relisted.take().unwrap_or_default();
                let gone: Vec<String> = (self.known.keys())
                    .filter(|k| !relisted.contains(*k))
                    .cloned()
                    .collect();
                gone.into_iter()
                    .filter_map(|k| {
                        let (_, label) = self.known.remove(&k)?;
                        let (ns, name) = k.split_once('/')?;
                        let mut pod = Pod::default();
                        pod.metadata.namespace = Some(ns.to_string());
                        pod.metadata.name = Some(name.to_string());
                        pod.metadata.labels =
                            label.map(|l| BTreeMap::from([(crate::conventions::POLICY_LABEL.to_string(), l)]));
                        Some(pod)
                    })
                    .collect()
            }
        }
    }

    /// How many pods are remembered.
    pub fn remembered(&self) -> usize {
        self.known.len()
    }
}

fn place_of(pod: &Pod) -> PodPlace {
    (
        pod.status.as_ref().and_then(|s| s.phase.clone()),
        pod.spec.as_ref().and_then(|s| s.node_name.clone()),
    )
}

/// A watch of the pods `cfg` selects, slimmed by [`slim_pod`], filling a store on the way:
/// (the store, its watch events).
fn watch_pods(
    client: Client,
    cfg: watcher::Config,
) -> (
    Store<Pod>,
    impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + 'static,
) {
    let (reader, writer) = reflector::store();
    let events = lean::watch::<Pod>(client, cfg).modify(slim_pod);
    (reader, reflector(writer, events))
}

/// What mlobs reads of a pod: name, namespace, labels, the controller's owner reference, the
/// node, the phase and the `PodScheduled` condition (a few hundred bytes).
fn slim_pod(p: &mut Pod) {
    let m = &mut p.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.creation_timestamp = None;
    if let Some(refs) = m.owner_references.as_mut() {
        refs.retain(|r| r.controller == Some(true));
    }
    p.spec = p.spec.take().map(|s| PodSpec {
        node_name: s.node_name,
        ..Default::default()
    });
    if let Some(st) = p.status.as_mut() {
        let scheduled = (st.conditions.take().into_iter().flatten())
            .filter(|c| c.type_ == "PodScheduled")
            .collect();
        *st = PodStatus {
            phase: st.phase.take(),
            conditions: Some(scheduled),
            ..Default::default()
        };
    }
}

/// The cached pods in `namespace` carrying every label of `labels` (e.g. a DaemonSet's selector);
/// `None` until the watch has listed once.
pub fn cached_pods(store: &Store<Pod>, namespace: &str, labels: &BTreeMap<String, String>) -> Option<Vec<Pod>> {
    is_ready(store).then(|| {
        store
            .state_filter(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && (labels.iter()).all(|(k, v)| p.labels().get(k) == Some(v))
            })
            .into_iter()
            .map(|p| p.as_ref().clone())
            .collect()
    })
}

/// The pod's name and the scheduler's message when it reported that it cannot place the pod
/// (`PodScheduled=False`, reason `Unschedulable`).
pub fn unschedulable(pod: &Pod) -> Option<(String, String)> {
    let c = (pod.status.as_ref())
        .and_then(|st| st.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))?;
    (c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
        .then(|| (pod.name_any(), c.message.clone().unwrap_or_default()))
}

/// The DaemonSet that controls `pod` (by its controller owner reference), when it is one.
pub fn controlling_daemon_set(pod: &Pod) -> Option<ObjectRef<DaemonSet>> {
    let owner = (pod.owner_references().iter()).find(|r| r.controller == Some(true) && r.kind == "DaemonSet")?;
    Some(ObjectRef::new(&owner.name).within(pod.metadata.namespace.as_deref()?))
}

/// The nodes with a Running pod among `pods`.
pub fn running_nodes(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect()
}

/// A store whose first listing returned `objs` (for tests of what reads the caches).
#[cfg(test)]
pub(super) fn filled<K>(objs: Vec<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objs {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nodes(names: &[&str]) -> Arc<BTreeSet<String>> {
        Arc::new(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn a_listing_answers_while_fresh_and_the_policy_unchanged() {
        let x = ExporterPods::default();
        let key = ("gpu-operator".to_string(), "app=dcgm".to_string());
        let t0 = Instant::now();
        assert!(x.fresh(&key, "7", t0).is_none(), "nothing listed yet");
        x.keep(key.clone(), "7", t0, nodes(&["gpu-0"]));
        assert_eq!(x.fresh(&key, "7", t0 + Duration::from_secs(4)), Some(nodes(&["gpu-0"])));
        assert!(
            x.fresh(&key, "8", t0 + Duration::from_secs(1)).is_none(),
            "the policy changed (its status follows the exporter's rollout)"
        );
        assert!(x.fresh(&key, "7", t0 + EXPORTER_LISTING_FRESH_FOR).is_none(), "too old");
        let other = ("gpu-operator".to_string(), "app=other".to_string());
        assert!(x.fresh(&other, "7", t0).is_none(), "another selector");
    }

    #[test]
    fn stale_listings_are_dropped_when_a_new_one_is_kept() {
        let x = ExporterPods::default();
        let t0 = Instant::now();
        x.keep(("a".into(), "s".into()), "1", t0, nodes(&[]));
        x.keep(
            ("b".into(), "s".into()),
            "1",
            t0 + EXPORTER_LISTING_FRESH_FOR,
            nodes(&[]),
        );
        let held = x.listings.lock().map(|l| l.len()).unwrap_or_default();
        assert_eq!(held, 1);
    }

    fn waiting(name: &str, ns: &str, pipeline: &str, scheduled: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "uid": "u", "annotations": {"a": "b"},
                "labels": {"mlobs.io/pipeline": pipeline, "app.kubernetes.io/name": "c"},
                "managedFields": [{"manager": "kube-controller-manager"}],
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "mlobs-x", "uid": "d", "controller": true},
                    {"apiVersion": "v1", "kind": "Other", "name": "o", "uid": "e"}]},
            "spec": {"containers": [{"name": "otelcol", "image": "otel/collector"}], "nodeName": "gpu-0"},
            "status": {"phase": "Pending", "conditions": [scheduled,
                {"type": "Initialized", "status": "True"}], "qosClass": "Burstable"}
        }))
        .expect("pod")
    }

    #[test]
    fn a_waiting_pod_is_kept_slim_and_found_by_its_daemon_sets_selector() {
        let why = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 Too many pods"});
        let mut a = waiting("a", "team", "team.train", why);
        slim_pod(&mut a);
        assert!(a.metadata.annotations.is_none() && a.metadata.managed_fields.is_none());
        let spec = a.spec.clone().unwrap_or_default();
        assert!(spec.node_name.as_deref() == Some("gpu-0") && spec.containers.is_empty());
        let conditions = a.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        assert_eq!(conditions.len(), 1, "only PodScheduled is kept");
        assert_eq!(a.owner_references().len(), 1, "only the controller");
        assert_eq!(
            unschedulable(&a),
            Some(("a".into(), "0/2 nodes are available: 2 Too many pods".into()))
        );
        assert_eq!(
            controlling_daemon_set(&a),
            Some(ObjectRef::new("mlobs-x").within("team"))
        );

        let placed = waiting(
            "b",
            "team",
            "team.train",
            json!({"type": "PodScheduled", "status": "True"}),
        );
        assert_eq!(unschedulable(&placed), None);
        let other = waiting(
            "c",
            "team",
            "team.other",
            json!({"type": "PodScheduled", "status": "True"}),
        );
        let elsewhere = waiting(
            "d",
            "lab",
            "team.train",
            json!({"type": "PodScheduled", "status": "True"}),
        );

        let (store, _) = reflector::store::<Pod>();
        let selector = BTreeMap::from([("mlobs.io/pipeline".to_string(), "team.train".to_string())]);
        assert_eq!(cached_pods(&store, "team", &selector), None, "not listed yet");
        let store = filled(vec![a, placed, other, elsewhere]);
        let mut names: Vec<String> = (cached_pods(&store, "team", &selector).unwrap_or_default().iter())
            .map(|p| p.name_any())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn an_exporter_pod_matters_when_it_starts_moves_or_goes_not_when_its_status_is_rewritten() {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let pod = |name: &str, phase: &str, node: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "mlobs",
                "labels": {"mlobs.io/policy": "default"}},
                "spec": {"nodeName": node, "containers": []}, "status": {"phase": phase}}))
            .expect("pod")
        };
        let names = |pods: Vec<Pod>| -> Vec<String> { pods.iter().map(|p| p.name_any()).collect() };
        let mut seen = ExporterPodChanges::default();
        assert_eq!(names(seen.changes(Apply(pod("x-1", "Pending", "gpu-0")))), ["x-1"]);
        assert!(
            seen.changes(Apply(pod("x-1", "Pending", "gpu-0"))).is_empty(),
            "nothing the pipelines read"
        );
        assert_eq!(names(seen.changes(Apply(pod("x-1", "Running", "gpu-0")))), ["x-1"]);
        assert!(seen.changes(Apply(pod("x-1", "Running", "gpu-0"))).is_empty());
        assert_eq!(names(seen.changes(Apply(pod("x-1", "Running", "gpu-1")))), ["x-1"]);
        assert_eq!(names(seen.changes(Apply(pod("x-2", "Running", "gpu-2")))), ["x-2"]);
        assert_eq!(seen.remembered(), 2);

        // A deletion is a change, and the pod is forgotten.
        assert_eq!(names(seen.changes(Delete(pod("x-1", "Running", "gpu-1")))), ["x-1"]);
        assert_eq!(seen.remembered(), 1);

        // A relisting after a watch gap: x-2 went away unseen, x-3 is new.
        assert!(seen.changes(Init).is_empty());
        assert_eq!(names(seen.changes(InitApply(pod("x-3", "Running", "gpu-2")))), ["x-3"]);
        let gone = seen.changes(InitDone);
        assert_eq!(names(gone.clone()), ["x-2"]);
        assert_eq!(
            gone[0]
                .labels()
                .get(crate::conventions::POLICY_LABEL)
                .map(String::as_str),
            Some("default"),
            "a pod gone unseen still names its policy"
        );
        assert_eq!(seen.remembered(), 1);
        // Pods applied outside a relisting are not taken for relisted ones later.
        assert!(seen.changes(Apply(pod("x-3", "Running", "gpu-2"))).is_empty());
        assert!(seen.changes(Init).is_empty());
        assert!(seen.changes(InitApply(pod("x-3", "Running", "gpu-2"))).is_empty());
        assert!(seen.changes(InitDone).is_empty());
        assert_eq!(seen.remembered(), 1);
    }

    #[test]
    fn only_running_pods_count_and_each_node_once() {
        let pods: Vec<Pod> = serde_json::from_value(json!([
            {"spec": {"nodeName": "gpu-0", "containers": []}, "status": {"phase": "Running"}},
            {"spec": {"nodeName": "gpu-0", "containers": []}, "status": {"phase": "Running"}},
            {"spec": {"nodeName": "gpu-1", "containers": []}, "status": {"phase": "Pending"}},
            {"spec": {"containers": []}, "status": {"phase": "Running"}},
        ]))
        .expect("pods");
        assert_eq!(running_nodes(&pods), *nodes(&["gpu-0"]));
    }

    #[test]
    fn the_namespace_cache_keeps_only_the_pod_security_level() {
        let mut ns: PartialObjectMeta<Namespace> = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "team", "uid": "u", "annotations": {"a": "b"},
                "labels": {PSA_ENFORCE: "baseline", "kubernetes.io/metadata.name": "team"}}
        }))
        .expect("namespace");
        slim_namespace(&mut ns);
        let labels: Vec<&String> = ns.metadata.labels.iter().flatten().map(|(k, _)| k).collect();
        assert_eq!(labels, [PSA_ENFORCE]);
        assert!(ns.metadata.uid.is_none() && ns.metadata.annotations.is_none());
    }
}
