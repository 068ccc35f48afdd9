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
//!
//! The stores are mlobs' own ([`CompactStore`]), not kube's reflector stores: kube keys each
//! object by an `ObjectRef` (four strings) and keeps a whole `ObjectMeta` (15 fields wide) in each.
//! Here a child is keyed by `namespace/name` and keeps only the metadata fields it has
//! (`SlimMeta`), its DaemonSet selector as [`Pairs`] too: a cached collector DaemonSet takes
//! 1,209 bytes instead of 2,166, a child's metadata 828 instead of 1,253 (`tests/cache_memory.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, OwnerReference};
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;
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
    pub daemon_sets: CompactStore<DaemonSet>,
    pub config_maps: MetaStore<ConfigMap>,
    pub service_accounts: MetaStore<ServiceAccount>,
    pub services: MetaStore<Service>,
    pub cluster_roles: MetaStore<ClusterRole>,
    pub cluster_role_bindings: MetaStore<ClusterRoleBinding>,
}

/// The cache of a kind's metadata.
pub type MetaStore<K> = CompactStore<PartialObjectMeta<K>>;

/// Labels or annotations in key order (the order of the map they came from), in two
/// allocations: the keys and values one after the other in `text`, and where each ends
/// ([`concat`]). As a list of boxed pairs each key and each value was an allocation of its own,
/// at least 32 bytes with glibc's header: a collector DaemonSet's four labels and two
/// annotations took 12 of them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pairs {
    text: Box<str>,
    /// End of each key and value in `text`, key first.
    ends: Box<[u32]>,
}

impl Pairs {
    /// `m` packed; `None` when its text is beyond 4 GiB (no Kubernetes object is) and so cannot be
    /// indexed by `u32`: the caller keeps the map as it is then.
    fn of(m: &BTreeMap<String, String>) -> Option<Pairs> {
        let (text, ends) = concat(m.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]))?;
        Some(Pairs {
            text,
            ends: ends.into_boxed_slice(),
        })
    }

    /// The pairs, in key order.
    fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let part = |i| part(&self.text, &self.ends, i);
        (0..self.ends.len() / 2).map(move |i| (part(2 * i), part(2 * i + 1)))
    }
}

/// `parts` one after the other in one string, and where each ends in it; `None` when the text
/// is beyond 4 GiB (no Kubernetes object is) and so cannot be indexed by `u32`. [`Pairs`] and
/// [`Strs`] keep strings so: one allocation where each string was one of at least 32 bytes.
fn concat<'a>(parts: impl Iterator<Item = &'a str> + Clone) -> Option<(Box<str>, Vec<u32>)> {
    let mut text = String::with_capacity(parts.clone().map(str::len).sum());
    let mut ends = Vec::with_capacity(parts.clone().count());
    for p in parts {
        text.push_str(p);
        ends.push(u32::try_from(text.len()).ok()?);
    }
    Some((text.into_boxed_str(), ends))
}

/// String `i` of what [`concat`] packed into `text` and `ends`.
fn part<'a>(text: &'a str, ends: &[u32], i: usize) -> &'a str {
    let start = i.checked_sub(1).and_then(|j| ends.get(j)).map_or(0, |&e| e as usize);
    let end = ends.get(i).map_or(start, |&e| e as usize);
    // The ends are where `concat` pushed each string: char boundaries within `text`.
    text.get(start..end).unwrap_or_default()
}

/// What a store keeps of a child `C`: its metadata without the labels and annotations, those as
/// [`Pairs`], and what else of `C` the cache reads ([`Split::Rest`]). [`Compact::expand`] gives
/// the `C` back, equal to the one it was made from.
#[derive(Clone, Debug)]
pub struct Compact<C: Split> {
    metadata: SlimMeta,
    labels: Option<Packed>,
    annotations: Option<Packed>,
    rest: C::Rest,
}

/// The metadata fields a cached child carries, each no bigger than it is (an `ObjectMeta` is
/// 15 fields wide however few are set), its strings packed ([`Strs`]); any other field set (a
/// deletion timestamp, finalizers, ...) stays in `other`, boxed, so that [`Compact::expand`]
/// gives back all of it.
#[derive(Clone, Debug)]
struct SlimMeta {
    /// Name, namespace, resourceVersion and uid.
    ids: Strs<4>,
    generation: Option<i64>,
    owner_references: Option<Box<[SlimOwner]>>,
    other: Option<Box<ObjectMeta>>,
}

/// An owner reference, its four strings (apiVersion, kind, name, uid) in one allocation.
#[derive(Clone, Debug)]
struct SlimOwner {
    ids: Strs<4>,
    controller: Option<bool>,
    block_owner_deletion: Option<bool>,
}

impl SlimOwner {
    fn of(o: &OwnerReference) -> Option<SlimOwner> {
        Some(SlimOwner {
            ids: Strs::of([Some(&o.api_version), Some(&o.kind), Some(&o.name), Some(&o.uid)])?,
            controller: o.controller,
            block_owner_deletion: o.block_owner_deletion,
        })
    }

    fn expand(&self) -> OwnerReference {
        let part = |i| self.ids.get(i).unwrap_or_default().to_string();
        OwnerReference {
            api_version: part(0),
            kind: part(1),
            name: part(2),
            uid: part(3),
            controller: self.controller,
            block_owner_deletion: self.block_owner_deletion,
        }
    }
}

/// Up to `N` optional strings in one allocation ([`concat`]), as [`Pairs`] keeps its keys and
/// values: four strings of a few bytes each took four allocations of at least 32 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Strs<const N: usize> {
    text: Box<str>,
    ends: [u32; N],
    /// Bit `i`: string `i` is set.
    present: u8,
}

impl<const N: usize> Strs<N> {
    /// The strings packed; `None` beyond 4 GiB of text or 8 strings.
    fn of(parts: [Option<&str>; N]) -> Option<Strs<N>> {
        if N > 8 {
            return None;
        }
        let present = (parts.iter().enumerate()).fold(0u8, |bits, (i, p)| bits | (u8::from(p.is_some()) << i));
        let (text, ends) = concat(parts.iter().map(|p| p.unwrap_or_default()))?;
        Some(Strs {
            text,
            ends: ends.try_into().ok()?,
            present,
        })
    }

    fn get(&self, i: usize) -> Option<&str> {
        if i >= N || self.present & (1 << i) == 0 {
            return None;
        }
        Some(part(&self.text, &self.ends, i))
    }
}

impl SlimMeta {
    /// `m` without its labels and annotations (kept apart as [`Pairs`]).
    fn of(mut m: ObjectMeta) -> SlimMeta {
        let ids = Strs::of([
            m.name.as_deref(),
            m.namespace.as_deref(),
            m.resource_version.as_deref(),
            m.uid.as_deref(),
        ]);
        let owners = match &m.owner_references {
            Some(v) => v.iter().map(SlimOwner::of).collect::<Option<Box<[_]>>>().map(Some),
            None => Some(None),
        };
        let (Some(ids), Some(owner_references)) = (ids, owners) else {
            // Too big to pack (no Kubernetes object is): all of it kept as it is.
            return SlimMeta {
                ids: Strs {
                    text: Box::default(),
                    ends: [0; 4],
                    present: 0,
                },
                generation: None,
                owner_references: None,
                other: Some(Box::new(m)),
            };
        };
        (m.name, m.namespace, m.resource_version, m.uid, m.owner_references) = (None, None, None, None, None);
        let slim = SlimMeta {
            ids,
            generation: m.generation.take(),
            owner_references,
            other: None,
        };
        let other = (m != ObjectMeta::default()).then(|| Box::new(m));
        SlimMeta { other, ..slim }
    }

    fn name(&self) -> Option<&str> {
        (self.ids.get(0)).or_else(|| self.other.as_ref()?.name.as_deref())
    }

    fn namespace(&self) -> Option<&str> {
        (self.ids.get(1)).or_else(|| self.other.as_ref()?.namespace.as_deref())
    }

    fn expand(&self) -> ObjectMeta {
        let mut m = self.other.as_deref().cloned().unwrap_or_default();
        let string = |i| self.ids.get(i).map(String::from);
        (m.name, m.namespace, m.resource_version, m.uid) = (
            string(0).or(m.name),
            string(1).or(m.namespace),
            string(2).or(m.resource_version),
            string(3).or(m.uid),
        );
        m.generation = self.generation.or(m.generation);
        if let Some(o) = &self.owner_references {
            m.owner_references = Some(o.iter().map(SlimOwner::expand).collect());
        }
        m
    }
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
    selector: Option<Selector>,
    status: Option<Box<DaemonSetStatus>>,
}

/// A [`LabelSelector`] with its `matchLabels` as [`Pairs`] (a map is a 544-byte node).
#[derive(Clone, Debug)]
struct Selector {
    match_labels: Option<Packed>,
    match_expressions: Option<Box<[LabelSelectorRequirement]>>,
}

impl Split for DaemonSet {
    type Rest = DaemonSetRest;
    fn split(self) -> (ObjectMeta, DaemonSetRest) {
        let rest = DaemonSetRest {
            selector: self.spec.map(|s| Selector {
                match_labels: pairs(s.selector.match_labels),
                match_expressions: s.selector.match_expressions.map(Vec::into_boxed_slice),
            }),
            status: self.status.map(Box::new),
        };
        (self.metadata, rest)
    }
    fn join(metadata: ObjectMeta, rest: DaemonSetRest) -> Self {
        DaemonSet {
            metadata,
            spec: rest.selector.map(|s| DaemonSetSpec {
                selector: LabelSelector {
                    match_labels: map(&s.match_labels),
                    match_expressions: s.match_expressions.map(Vec::from),
                },
                ..Default::default()
            }),
            status: rest.status.map(|s| *s),
        }
    }
}

/// A map as [`Pairs`] (or as it is, see [`Pairs::of`]).
fn pairs(m: Option<BTreeMap<String, String>>) -> Option<Packed> {
    m.map(|m| match Pairs::of(&m) {
        Some(p) => Packed::Pairs(p),
        None => Packed::Map(m),
    })
}

/// [`pairs`]' output as the map it came from.
fn map(p: &Option<Packed>) -> Option<BTreeMap<String, String>> {
    p.as_ref().map(|p| match p {
        Packed::Pairs(p) => p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        Packed::Map(m) => m.clone(),
    })
}

/// A map as a cache keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Packed {
    Pairs(Pairs),
    /// Too big to pack (never for a Kubernetes object).
    Map(BTreeMap<String, String>),
}

impl<C: Split> Compact<C> {
    /// `obj` as a store keeps it.
    pub fn of(obj: &C) -> Self {
        let (mut metadata, rest) = obj.clone().split();
        Compact {
            labels: pairs(metadata.labels.take()),
            annotations: pairs(metadata.annotations.take()),
            metadata: SlimMeta::of(metadata),
            rest,
        }
    }

    /// The key of the child in a [`CompactStore`].
    fn key(&self) -> Key {
        key(self.metadata.namespace(), self.metadata.name().unwrap_or_default())
    }

    /// The object this was made from.
    pub fn expand(&self) -> C {
        let mut metadata = self.metadata.expand();
        metadata.labels = map(&self.labels);
        metadata.annotations = map(&self.annotations);
        C::join(metadata, self.rest.clone())
    }

    fn label(&self, key: &str) -> Option<&str> {
        match self.labels.as_ref()? {
            Packed::Pairs(p) => p.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            Packed::Map(m) => m.get(key).map(String::as_str),
        }
    }
}

/// A store's key: `namespace/name`, or `name` for a cluster-scoped child.
type Key = Box<str>;

fn key(namespace: Option<&str>, name: &str) -> Key {
    match namespace {
        Some(ns) => format!("{ns}/{name}").into_boxed_str(),
        None => name.into(),
    }
}

/// The cache of one child kind: [`Compact`] children by namespace and name, filled by its watch
/// ([`CompactStore::apply`], the watcher's events as kube's reflector applies them: a listing
/// replaces the whole content when it is complete).
///
/// kube's `Store` keys each object by an `ObjectRef` (its name, namespace, resourceVersion and
/// uid as four more strings) and needs the whole `ObjectMeta` in each object; this store keys a
/// child by one string. heaptrack at 1,000 pipelines (runs AS and AT in the README): the child
/// caches held 3.8 MiB at the peak in kube's stores.
pub struct CompactStore<C: Split>(Arc<RwLock<Filled<C>>>);

struct Filled<C: Split> {
    children: HashMap<Key, Arc<Compact<C>>>,
    /// The listing in progress (between `Init` and `InitDone`).
    listing: Option<HashMap<Key, Arc<Compact<C>>>>,
    /// A first listing was complete.
    ready: bool,
}

impl<C: Split> Clone for CompactStore<C> {
    fn clone(&self) -> Self {
        CompactStore(self.0.clone())
    }
}

impl<C: Split> Default for CompactStore<C> {
    /// An empty store, not ready until a watch's first listing completes.
    fn default() -> Self {
        CompactStore(Arc::new(RwLock::new(Filled {
            children: HashMap::new(),
            listing: None,
            ready: false,
        })))
    }
}

impl<C: Split> CompactStore<C> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Filled<C>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a first listing was complete.
    pub fn is_ready(&self) -> bool {
        self.read().ready
    }

    /// The child `name` (in `namespace` for namespaced kinds).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<Compact<C>>> {
        self.read().children.get(&key(namespace, name)).cloned()
    }

    /// The children `keep` is true of.
    pub fn state_filter(&self, keep: impl Fn(&Compact<C>) -> bool) -> Vec<Arc<Compact<C>>> {
        (self.read().children.values()).filter(|c| keep(c)).cloned().collect()
    }

    /// How many children the store holds.
    pub fn len(&self) -> usize {
        self.read().children.len()
    }

    /// The store holds no child.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a watch event, as kube's reflector does.
    pub fn apply(&self, ev: &watcher::Event<C>) {
        let mut f = self.0.write().unwrap_or_else(|e| e.into_inner());
        match ev {
            watcher::Event::Apply(o) => {
                let c = Compact::of(o);
                f.children.insert(c.key(), Arc::new(c));
            }
            watcher::Event::Delete(o) => {
                let m = o.meta();
                f.children
                    .remove(&key(m.namespace.as_deref(), m.name.as_deref().unwrap_or_default()));
            }
            watcher::Event::Init => f.listing = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let c = Compact::of(o);
                f.listing.get_or_insert_default().insert(c.key(), Arc::new(c));
            }
            watcher::Event::InitDone => {
                let mut listed = f.listing.take().unwrap_or_default();
                listed.shrink_to_fit();
                f.children = listed;
                f.ready = true;
            }
        }
    }
}

impl<C: Split> FromIterator<Compact<C>> for CompactStore<C> {
    /// A store that holds `children`, ready (as after a complete listing).
    fn from_iter<I: IntoIterator<Item = Compact<C>>>(children: I) -> Self {
        let store = CompactStore::default();
        {
            let mut f = store.0.write().unwrap_or_else(|e| e.into_inner());
            f.children = children.into_iter().map(|c| (c.key(), Arc::new(c))).collect();
            f.ready = true;
        }
        store
    }
}

impl Default for ChildStores {
    /// Stores no watch fills: never ready, so every read goes to the API server.
    fn default() -> Self {
        ChildStores {
            daemon_sets: CompactStore::default(),
            config_maps: CompactStore::default(),
            service_accounts: CompactStore::default(),
            services: CompactStore::default(),
            cluster_roles: CompactStore::default(),
            cluster_role_bindings: CompactStore::default(),
        }
    }
}

/// A child kind, and the store that caches it (if any).
pub trait Cached: Resource<DynamicType = ()> + Sized + Clone + 'static {
    /// What the store keeps of each object: its metadata, or a slimmed object.
    type Kept: Split;
    fn store(_: &ChildStores) -> Option<&CompactStore<Self::Kept>> {
        None
    }
}

macro_rules! cached {
    ($($kind:ty => $field:ident),* $(,)?) => {$(
        impl Cached for $kind {
            type Kept = PartialObjectMeta<$kind>;
            fn store(s: &ChildStores) -> Option<&CompactStore<Self::Kept>> {
                Some(&s.$field)
            }
        }
    )*};
}

impl Cached for DaemonSet {
    type Kept = DaemonSet;
    fn store(s: &ChildStores) -> Option<&CompactStore<DaemonSet>> {
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
pub fn ready<K: Cached>(stores: &ChildStores) -> Option<&CompactStore<K::Kept>> {
    K::store(stores).filter(|s| s.is_ready())
}

/// The cached child `name` (in `namespace` for namespaced kinds).
pub fn get<C: Split>(store: &CompactStore<C>, namespace: Option<&str>, name: &str) -> Option<C> {
    store.get(namespace, name).map(|o| o.expand())
}

/// The metadata of the cached children whose labels match every `key=value` of `selector`; `None`
/// when the selector is not a list of equalities (then the caller lists from the API server).
pub fn selected<C: Split>(store: &CompactStore<C>, selector: &str) -> Option<Vec<ObjectMeta>> {
    let wanted: Vec<(&str, &str)> = selector
        .split(',')
        .map(|term| term.split_once('=').filter(|(k, _)| !k.ends_with('!') && kept_label(k)))
        .collect::<Option<_>>()?;
    Some(
        store
            .state_filter(|o| wanted.iter().all(|(k, v)| o.label(k) == Some(*v)))
            .into_iter()
            .map(|o| o.metadata.expand())
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
    CompactStore<DaemonSet>,
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
    CompactStore<C>,
    impl Stream<Item = Result<C, watcher::Error>> + Send + 'static,
)
where
    C: Split + LeanKind,
{
    let store = CompactStore::default();
    let writer = store.clone();
    let events = lean::watch::<C>(client.clone(), cfg.clone())
        .filter(move |ev| futures::future::ready(ours(&shard, ev)))
        .modify(slim)
        .inspect_ok(move |ev| writer.apply(ev));
    (store, events.touched_objects())
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
        let store: CompactStore<_> = [
            meta("a", &[(p, "1"), (m, "mlobs")]),
            meta("b", &[(p, "2"), (m, "mlobs")]),
            meta("c", &[(p, "1")]),
        ]
        .iter()
        .map(Compact::of)
        .collect();
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
    fn the_store_applies_watch_events_as_kube_s_reflector_does() {
        let store = CompactStore::<PartialObjectMeta<ConfigMap>>::default();
        let names = |s: &CompactStore<PartialObjectMeta<ConfigMap>>| -> Vec<String> {
            let mut n: Vec<String> = (s.state_filter(|_| true).iter())
                .filter_map(|c| c.expand().metadata.name)
                .collect();
            n.sort();
            n
        };
        store.apply(&watcher::Event::Init);
        store.apply(&watcher::Event::InitApply(meta("a", &[])));
        assert!(!store.is_ready(), "not ready while the first listing is in progress");
        assert!(store.get(Some("team"), "a").is_none(), "a listing shows once complete");
        store.apply(&watcher::Event::InitApply(meta("b", &[])));
        store.apply(&watcher::Event::InitDone);
        assert!(store.is_ready());
        assert_eq!(names(&store), vec!["a", "b"]);

        let mut a2 = meta("a", &[("mlobs.io/pipeline", "t.a")]);
        a2.metadata.resource_version = Some("2".into());
        store.apply(&watcher::Event::Apply(a2.clone()));
        let got = get(&store, Some("team"), "a").expect("a");
        assert_eq!(got.metadata, a2.metadata, "an update replaces the child");
        store.apply(&watcher::Event::Delete(meta("b", &[])));
        assert_eq!(names(&store), vec!["a"]);

        // A relist (after a watch expired) replaces the content when it completes: a child
        // deleted meanwhile goes, the store stays ready throughout.
        store.apply(&watcher::Event::Init);
        store.apply(&watcher::Event::InitApply(meta("c", &[])));
        assert!(store.is_ready());
        assert_eq!(names(&store), vec!["a"], "the old content until the listing completes");
        store.apply(&watcher::Event::InitDone);
        assert_eq!(names(&store), vec!["c"]);
        assert!(
            store.get(None, "c").is_none(),
            "namespaced children are found in their namespace"
        );
    }

    #[test]
    fn a_cached_child_keeps_every_metadata_field_it_came_with() {
        let mut cm = meta("a", &[("mlobs.io/pipeline", "t.a")]);
        let m = &mut cm.metadata;
        m.uid = Some("u".into());
        m.generation = Some(4);
        m.resource_version = Some("9".into());
        m.finalizers = Some(vec!["f".into()]);
        m.deletion_timestamp = serde_json::from_value(serde_json::json!("2026-12-07T10:00:00Z")).ok();
        m.owner_references = Some(vec![OwnerReference {
            name: "t".into(),
            uid: "o".into(),
            ..Default::default()
        }]);
        let back = Compact::of(&cm).expand();
        assert_eq!(back.metadata, cm.metadata);
    }

    #[test]
    fn a_store_is_ready_only_after_its_first_listing() {
        assert!(ready::<ConfigMap>(&ChildStores::default()).is_none());
        let stores = ChildStores {
            config_maps: [Compact::of(&meta("a", &[]))].into_iter().collect(),
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
    fn packed_strings_come_back_as_they_were() {
        let m = BTreeMap::from([
            ("".to_string(), "empty key".to_string()),
            ("é/ü".to_string(), "".to_string()),
            ("mlobs.io/owner".to_string(), "team/train ✓".to_string()),
        ]);
        let p = Pairs::of(&m).expect("packs");
        let back: BTreeMap<String, String> = p.iter().map(|(k, v)| (k.into(), v.into())).collect();
        assert_eq!(back, m);
        assert_eq!(Pairs::of(&BTreeMap::new()).expect("packs").iter().count(), 0);

        let s = Strs::of([Some("ünï"), None, Some(""), Some("u-1")]).expect("packs");
        assert_eq!(
            (0..5).map(|i| s.get(i)).collect::<Vec<_>>(),
            [Some("ünï"), None, Some(""), Some("u-1"), None]
        );
        // Everything a metadata packs, and a field it does not (kept in `other`).
        let meta = ObjectMeta {
            name: Some("n".into()),
            uid: Some(String::new()),
            owner_references: Some(vec![]),
            finalizers: Some(vec!["f".into()]),
            ..Default::default()
        };
        let slim = SlimMeta::of(meta.clone());
        assert_eq!((slim.name(), slim.namespace()), (Some("n"), None));
        assert_eq!(slim.expand(), meta);
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
        assert_eq!(c.metadata.expand().labels, None, "the metadata keeps no map");

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
