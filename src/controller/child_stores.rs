//! Metadata caches of the children mlobs creates, read by the child applier instead of the API
//! server.
//!
//! The watches that trigger reconciles on child changes fill these stores on the way (metadata
//! only: name, labels, owner, resourceVersion and mlobs' own annotations; for the collector
//! DaemonSets also the generation, the selector and the status, the collector's readiness). With
//! them, a reconcile that changes nothing asks the API server for nothing, instead of one GET per
//! child and one label-selected LIST per kind across the whole cluster for the prune. Those LISTs cost the API server a scan of every
//! object of the kind, so at 1,000 pipelines each reconcile scanned about 5,000 objects
//! (`make bench`, see the README).
//!
//! A store is used only once its first listing is complete; before that, and for kinds without a
//! store (`PrometheusRule`, `PodMonitor`, served only where the Prometheus operator is), the
//! applier asks the API server as before. A cache may lag: a child it does not show yet is read
//! from the API server, and an edit it does not show yet is found by the reconcile its own watch
//! event triggers.
//!
//! A store keeps each child as a [`Compact`]: its metadata with the labels and annotations as
//! flat lists instead of maps (a map holds a 544-byte node however few entries it has) and, for
//! a DaemonSet, only its selector and status beside the metadata (the whole `DaemonSet` is
//! 2.4 KB before any of its fields is set). heaptrack at 300 pipelines: 20 KB of caches per
//! pipeline, 2.5 KB of it each DaemonSet's empty pod template and 1.1 KB each child's two maps.

use std::borrow::Cow;
use std::collections::BTreeMap;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};

use super::lean::{self, LeanKind};
use super::shard::Shard;
use crate::conventions::LAST_APPLIED;
use crate::desired::alerts::prometheus::PrometheusRule;
use crate::desired::self_monitoring::PodMonitor;

/// The metadata of mlobs' children, one store per kind the applier reads through a cache.
#[derive(Clone)]
pub struct ChildStores {
    /// Slimmed DaemonSets: metadata, selector and status ([`slim_daemon_set`]).
    pub daemon_sets: Store<Compact<DaemonSet>>,
    pub config_maps: MetaStore<ConfigMap>,
    pub service_accounts: MetaStore<ServiceAccount>,
    pub services: MetaStore<Service>,
    pub cluster_roles: MetaStore<ClusterRole>,
    pub cluster_role_bindings: MetaStore<ClusterRoleBinding>,
}

/// The cache of a kind's metadata.
pub type MetaStore<K> = Store<Compact<PartialObjectMeta<K>>>;

/// Labels or annotations as a list sorted by key (the order of the map they came from).
type Pairs = Box<[(Box<str>, Box<str>)]>;

/// What a store keeps of a child `C`: its metadata without the labels and annotations, those as
/// [`Pairs`], and what else of `C` the cache reads ([`Split::Rest`]). [`Compact::expand`] gives
/// the `C` back, equal to the one it was made from.
#[derive(Clone, Debug)]
pub struct Compact<C: Split> {
    metadata: ObjectMeta,
    labels: Option<Pairs>,
    annotations: Option<Pairs>,
    rest: C::Rest,
}

/// A kind a [`Compact`] can hold: its metadata and the rest, apart and together again.
pub trait Split: Resource<DynamicType = ()> + Clone + Sized + 'static {
    /// What a cache keeps of the object besides its metadata.
    type Rest: Clone + std::fmt::Debug + Send + Sync + 'static;
    fn split(self) -> (ObjectMeta, Self::Rest);
    fn join(metadata: ObjectMeta, rest: Self::Rest) -> Self;
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Split for PartialObjectMeta<K> {
    type Rest = ();
    fn split(self) -> (ObjectMeta, ()) {
        (self.metadata, ())
    }
    fn join(metadata: ObjectMeta, (): ()) -> Self {
        PartialObjectMeta {
            types: None,
            metadata,
            _phantom: Default::default(),
        }
    }
}

/// A slimmed DaemonSet's spec (only its selector: `None` when the object had no spec) and status.
#[derive(Clone, Debug)]
pub struct DaemonSetRest {
    selector: Option<LabelSelector>,
    status: Option<Box<DaemonSetStatus>>,
}

impl Split for DaemonSet {
    type Rest = DaemonSetRest;
    fn split(self) -> (ObjectMeta, DaemonSetRest) {
        let rest = DaemonSetRest {
            selector: self.spec.map(|s| s.selector),
            status: self.status.map(Box::new),
        };
        (self.metadata, rest)
    }
    fn join(metadata: ObjectMeta, rest: DaemonSetRest) -> Self {
        DaemonSet {
            metadata,
            spec: rest.selector.map(|selector| DaemonSetSpec {
                selector,
                ..Default::default()
            }),
            status: rest.status.map(|s| *s),
        }
    }
}

impl<C: Split> Compact<C> {
    /// `obj` as a store keeps it.
    pub fn of(obj: &C) -> Self {
        let (mut metadata, rest) = obj.clone().split();
        let pairs = |m: Option<BTreeMap<String, String>>| -> Option<Pairs> {
            m.map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                    .collect()
            })
        };
        Compact {
            labels: pairs(metadata.labels.take()),
            annotations: pairs(metadata.annotations.take()),
            metadata,
            rest,
        }
    }

    /// The object this was made from.
    pub fn expand(&self) -> C {
        let map = |p: &Option<Pairs>| -> Option<BTreeMap<String, String>> {
            p.as_ref()
                .map(|p| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        let mut metadata = self.metadata.clone();
        metadata.labels = map(&self.labels);
        metadata.annotations = map(&self.annotations);
        C::join(metadata, self.rest.clone())
    }

    fn label(&self, key: &str) -> Option<&str> {
        let labels = self.labels.as_deref()?;
        labels
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*labels[i].1)
    }
}

impl<C: Split> Resource for Compact<C> {
    type DynamicType = ();
    type Scope = C::Scope;
    fn kind(_: &()) -> Cow<'_, str> {
        C::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        C::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        C::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        C::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Default for ChildStores {
    /// Stores no watch fills: never ready, so every read goes to the API server.
    fn default() -> Self {
        ChildStores {
            daemon_sets: reflector::store().0,
            config_maps: reflector::store().0,
            service_accounts: reflector::store().0,
            services: reflector::store().0,
            cluster_roles: reflector::store().0,
            cluster_role_bindings: reflector::store().0,
        }
    }
}

/// A child kind, and the store that caches it (if any).
pub trait Cached: Resource<DynamicType = ()> + Sized + Clone + 'static {
    /// What the store keeps of each object: its metadata, or a slimmed object.
    type Kept: Split;
    fn store(_: &ChildStores) -> Option<&Store<Compact<Self::Kept>>> {
        None
    }
}

macro_rules! cached {
    ($($kind:ty => $field:ident),* $(,)?) => {$(
        impl Cached for $kind {
            type Kept = PartialObjectMeta<$kind>;
            fn store(s: &ChildStores) -> Option<&Store<Compact<Self::Kept>>> {
                Some(&s.$field)
            }
        }
    )*};
}

impl Cached for DaemonSet {
    type Kept = DaemonSet;
    fn store(s: &ChildStores) -> Option<&Store<Compact<DaemonSet>>> {
        Some(&s.daemon_sets)
    }
}

cached!(
    ConfigMap => config_maps,
    ServiceAccount => service_accounts,
    Service => services,
    ClusterRole => cluster_roles,
    ClusterRoleBinding => cluster_role_bindings,
);
impl Cached for PrometheusRule {
    type Kept = PartialObjectMeta<PrometheusRule>;
}
impl Cached for PodMonitor {
    type Kept = PartialObjectMeta<PodMonitor>;
}

/// The store of `K` when its first listing is complete.
pub fn ready<K: Cached>(stores: &ChildStores) -> Option<&Store<Compact<K::Kept>>> {
    K::store(stores).filter(|s| super::shared_reads::is_ready(*s))
}

/// The cached child `name` (in `namespace` for namespaced kinds).
pub fn get<C: Split>(store: &Store<Compact<C>>, namespace: Option<&str>, name: &str) -> Option<C> {
    let mut r = ObjectRef::<Compact<C>>::new(name);
    if let Some(ns) = namespace {
        r = r.within(ns);
    }
    store.get(&r).map(|o| o.expand())
}

/// The metadata of the cached children whose labels match every `key=value` of `selector`; `None`
/// when the selector is not a list of equalities (then the caller lists from the API server).
pub fn selected<C: Split>(store: &Store<Compact<C>>, selector: &str) -> Option<Vec<ObjectMeta>> {
    let wanted: Vec<(&str, &str)> = selector
        .split(',')
        .map(|term| term.split_once('=').filter(|(k, _)| !k.ends_with('!') && kept_label(k)))
        .collect::<Option<_>>()?;
    Some(
        store
            .state_filter(|o| wanted.iter().all(|(k, v)| o.label(k) == Some(*v)))
            .into_iter()
            .map(|o| o.expand().meta().clone())
            .collect(),
    )
}

/// The labels a cache keeps (what the child sets select on); a selector on any other label is
/// answered by the API server.
fn kept_label(k: &str) -> bool {
    k.starts_with("mlobs.io/") || k == "app.kubernetes.io/managed-by"
}

/// Only what the applier and the triggers read: name, namespace, resourceVersion, owner
/// references, deletion timestamp, mlobs' labels and annotations (no type, managedFields, uid,
/// timestamps or other labels: a cached child is a few hundred bytes).
fn slim<K>(o: &mut PartialObjectMeta<K>) {
    o.types = None;
    let m = &mut o.metadata;
    m.generation = None;
    m.uid = None;
    if let Some(a) = m.annotations.as_mut() {
        a.retain(|k, _| k.starts_with("mlobs.io/"));
    }
    if let Some(l) = m.labels.as_mut() {
        l.retain(|k, _| kept_label(k));
    }
    drop_bookkeeping(m);
}

/// A collector DaemonSet as the applier and the status read it: metadata without managedFields,
/// timestamps or kubectl's last-applied annotation (the labels and annotations stay whole: their
/// digest tells a hand edit of them, see `children::apply_with_status`), the generation, the
/// selector, the status; no pod template (most of the object).
pub fn slim_daemon_set(o: &mut DaemonSet) {
    drop_bookkeeping(&mut o.metadata);
    if let Some(a) = o.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
    if let Some(spec) = o.spec.as_mut() {
        *spec = k8s_openapi::api::apps::v1::DaemonSetSpec {
            selector: std::mem::take(&mut spec.selector),
            ..Default::default()
        };
    }
    if let Some(st) = o.status.as_mut() {
        st.conditions = None;
    }
}

/// A digest of an object's labels and annotations, without kubectl's last-applied annotation
/// (the caches do not keep it; an apply that changes anything else changes more than it). With
/// the generation it tells a spec or metadata edit from a status write: a status write changes
/// neither.
pub fn metadata_digest(meta: &ObjectMeta) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    meta.labels.hash(&mut h);
    if let Some(a) = &meta.annotations {
        for kv in a.iter().filter(|(k, _)| k.as_str() != LAST_APPLIED) {
            kv.hash(&mut h);
        }
    }
    h.finish()
}

fn drop_bookkeeping(m: &mut ObjectMeta) {
    m.managed_fields = None;
    m.creation_timestamp = None;
}

/// A metadata-only watch of the children of kind `K` carrying `cfg`'s labels that belong to this
/// shard (those of its pipelines; a policy's on the shard that runs policies), filling `store`
/// on the way: (the store, the stream of changed children for the controller's triggers).
pub fn watch<K>(
    client: &Client,
    cfg: &watcher::Config,
    shard: Shard,
) -> (
    MetaStore<K>,
    impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    // kube 5 sends metadata-only list and watch requests for `PartialObjectMeta`.
    watch_slimmed(client, cfg, shard, slim)
}

/// [`watch`] of the collector DaemonSets as whole objects (their status is the collectors'
/// readiness), slimmed by [`slim_daemon_set`].
pub fn watch_daemon_sets(
    client: &Client,
    cfg: &watcher::Config,
    shard: Shard,
) -> (
    Store<Compact<DaemonSet>>,
    impl Stream<Item = Result<DaemonSet, watcher::Error>> + Send + 'static,
) {
    watch_slimmed(client, cfg, shard, slim_daemon_set)
}

/// The store filled by the watch of the `C`s `cfg` selects (read lean, each object slimmed by
/// `slim`, kept [`Compact`]) and the stream of the slimmed objects it changed.
fn watch_slimmed<C>(
    client: &Client,
    cfg: &watcher::Config,
    shard: Shard,
    slim: fn(&mut C),
) -> (
    Store<Compact<C>>,
    impl Stream<Item = Result<C, watcher::Error>> + Send + 'static,
)
where
    C: Split + LeanKind,
{
    let (reader, mut writer) = reflector::store();
    let events = lean::watch::<C>(client.clone(), cfg.clone())
        .filter(move |ev| futures::future::ready(ours(&shard, ev)))
        .modify(slim)
        .inspect_ok(move |ev| writer.apply_watcher_event(&compact_event(ev)));
    (reader, events.touched_objects())
}

/// `ev` with its object as a store keeps it.
fn compact_event<C: Split>(ev: &watcher::Event<C>) -> watcher::Event<Compact<C>> {
    match ev {
        watcher::Event::Apply(o) => watcher::Event::Apply(Compact::of(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(Compact::of(o)),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(Compact::of(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

fn ours<K: Resource>(shard: &Shard, ev: &Result<watcher::Event<K>, watcher::Error>) -> bool {
    match ev {
        Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o)) => {
            match super::pipeline_of_child(o) {
                Some(p) => shard.owns(p.namespace.as_deref().unwrap_or_default(), &p.name),
                None => shard.runs_policies(),
            }
        }
        Ok(watcher::Event::Init | watcher::Event::InitDone) | Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::super::shared_reads::filled;
    use super::*;
    use std::collections::BTreeMap;

    fn meta(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<ConfigMap> {
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                labels: Some(labels),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    #[test]
    fn selected_matches_every_equality_of_the_selector() {
        let (p, m) = ("mlobs.io/pipeline", "app.kubernetes.io/managed-by");
        let store = filled(
            [
                meta("a", &[(p, "1"), (m, "mlobs")]),
                meta("b", &[(p, "2"), (m, "mlobs")]),
                meta("c", &[(p, "1")]),
            ]
            .iter()
            .map(Compact::of)
            .collect(),
        );
        let names = |v: Vec<ObjectMeta>| -> Vec<String> {
            let mut n: Vec<String> = v.into_iter().filter_map(|o| o.name).collect();
            n.sort();
            n
        };
        let both = format!("{p}=1,{m}=mlobs");
        assert_eq!(names(selected(&store, &both).expect("equalities")), vec!["a"]);
        assert_eq!(
            names(selected(&store, &format!("{p}=1")).expect("equalities")),
            vec!["a", "c"]
        );
        assert!(
            selected(&store, &format!("{p}!=1")).is_none(),
            "an inequality is not evaluated here"
        );
        assert!(
            selected(&store, &format!("{p} in (1)")).is_none(),
            "a set selector is not evaluated here"
        );
        assert!(
            selected(&store, "app=x").is_none(),
            "a label the cache does not keep is not evaluated here"
        );
    }

    #[test]
    fn a_store_is_ready_only_after_its_first_listing() {
        assert!(ready::<ConfigMap>(&ChildStores::default()).is_none());
        let stores = ChildStores {
            config_maps: filled(vec![Compact::of(&meta("a", &[]))]),
            ..ChildStores::default()
        };
        assert!(ready::<ConfigMap>(&stores).is_some());
        assert!(ready::<PrometheusRule>(&stores).is_none(), "no store for this kind");
        assert!(get(&stores.config_maps, Some("team"), "a").is_some());
        assert!(get(&stores.config_maps, Some("other"), "a").is_none());
    }

    #[test]
    fn slim_keeps_only_mlobs_annotations_and_labels_and_no_managed_fields() {
        let mut o = meta("a", &[("mlobs.io/pipeline", "t.a"), ("app.kubernetes.io/name", "x")]);
        o.metadata.annotations = Some(BTreeMap::from([
            ("mlobs.io/desired-hash".to_string(), "h".to_string()),
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            ),
        ]));
        o.metadata.managed_fields = Some(vec![Default::default()]);
        slim(&mut o);
        assert_eq!(o.metadata.managed_fields, None);
        let keys: Vec<&String> = o
            .metadata
            .annotations
            .as_ref()
            .map(|a| a.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, vec!["mlobs.io/desired-hash"]);
        let labels: Vec<&String> = o
            .metadata
            .labels
            .as_ref()
            .map(|a| a.keys().collect())
            .unwrap_or_default();
        assert_eq!(labels, vec!["mlobs.io/pipeline"]);
    }

    #[test]
    fn a_compact_child_expands_to_the_object_it_was_made_from() {
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "mlobs-train", "namespace": "team", "generation": 3, "resourceVersion": "42",
                "labels": {"b": "2", "a": "1", "mlobs.io/pipeline": "team.train"},
                "annotations": {"mlobs.io/desired-hash": "h", "mlobs.io/owner": "team/train"},
                "ownerReferences": [{"apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
                    "name": "train", "uid": "u"}]},
            "spec": {"selector": {"matchLabels": {"app": "c"}}},
            "status": {"desiredNumberScheduled": 4, "numberReady": 3, "currentNumberScheduled": 4,
                "numberMisscheduled": 0, "observedGeneration": 3}
        }))
        .expect("DaemonSet");
        let c = Compact::of(&ds);
        assert_eq!(c.expand(), ds);
        assert_eq!(metadata_digest(c.expand().meta()), metadata_digest(&ds.metadata));
        assert_eq!(c.label("a"), Some("1"), "labels are looked up by key");
        assert_eq!(c.label("mlobs.io/pipeline"), Some("team.train"));
        assert_eq!(c.label("c"), None);
        assert_eq!(c.meta().labels, None, "the metadata keeps no map");

        let bare = DaemonSet {
            metadata: ObjectMeta {
                name: Some("x".into()),
                labels: Some(BTreeMap::new()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(Compact::of(&bare).expand(), bare, "no spec and empty labels stay so");
        assert_ne!(
            metadata_digest(&bare.metadata),
            metadata_digest(&ObjectMeta::default()),
            "empty labels and no labels digest apart, so both must come back as they were"
        );

        let cm = meta("a", &[("mlobs.io/pipeline", "t.a")]);
        let back = Compact::of(&cm).expand();
        assert_eq!((back.metadata, back.types), (cm.metadata, None));
    }

    #[test]
    fn a_slim_daemon_set_keeps_what_status_and_the_applier_read_and_the_same_metadata_digest() {
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "mlobs-train", "namespace": "team", "uid": "u1", "generation": 3,
                "resourceVersion": "42", "managedFields": [{"manager": "mlobs"}],
                "labels": {"app.kubernetes.io/name": "mlobs-collector", "mlobs.io/pipeline": "team.train"},
                "annotations": {"mlobs.io/desired-hash": "h", "deprecated.daemonset.template.generation": "3",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"selector": {"matchLabels": {"app": "c"}},
                "template": {"metadata": {"labels": {"app": "c"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"desiredNumberScheduled": 4, "numberReady": 3, "currentNumberScheduled": 4,
                "numberMisscheduled": 0, "observedGeneration": 3,
                "conditions": [{"type": "x", "status": "True"}]}
        }))
        .expect("DaemonSet");
        let mut slim = ds.clone();
        slim_daemon_set(&mut slim);
        let m = &slim.metadata;
        assert_eq!(
            (m.uid.as_deref(), m.generation, m.managed_fields.as_ref()),
            (Some("u1"), Some(3), None)
        );
        assert_eq!(m.labels, ds.metadata.labels, "labels stay whole");
        assert!(!m.annotations.as_ref().is_some_and(|a| a.contains_key(LAST_APPLIED)));
        assert!(m.annotations.as_ref().is_some_and(|a| a.len() == 2));
        assert_eq!(
            metadata_digest(m),
            metadata_digest(&ds.metadata),
            "the digest of a slimmed copy is the live object's"
        );
        let spec = slim.spec.as_ref().expect("spec");
        assert_eq!(spec.selector, ds.spec.as_ref().expect("spec").selector);
        assert_eq!(spec.template, Default::default(), "no pod template");
        let st = slim.status.as_ref().expect("status");
        assert_eq!(
            (st.number_ready, st.desired_number_scheduled, st.observed_generation),
            (3, 4, Some(3))
        );
    }
}
