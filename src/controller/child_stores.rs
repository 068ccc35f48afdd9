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

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use super::shard::Shard;
use crate::conventions::LAST_APPLIED;
use crate::desired::alerts::prometheus::PrometheusRule;
use crate::desired::self_monitoring::PodMonitor;

/// The metadata of mlobs' children, one store per kind the applier reads through a cache.
#[derive(Clone)]
pub struct ChildStores {
    /// Slimmed DaemonSets: metadata, selector and status ([`slim_daemon_set`]).
    pub daemon_sets: Store<DaemonSet>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub cluster_roles: Store<PartialObjectMeta<ClusterRole>>,
    pub cluster_role_bindings: Store<PartialObjectMeta<ClusterRoleBinding>>,
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
    type Kept: Resource<DynamicType = ()> + Clone + 'static;
    fn store(_: &ChildStores) -> Option<&Store<Self::Kept>> {
        None
    }
}

macro_rules! cached {
    ($($kind:ty => $field:ident),* $(,)?) => {$(
        impl Cached for $kind {
            type Kept = PartialObjectMeta<$kind>;
            fn store(s: &ChildStores) -> Option<&Store<Self::Kept>> {
                Some(&s.$field)
            }
        }
    )*};
}

impl Cached for DaemonSet {
    type Kept = DaemonSet;
    fn store(s: &ChildStores) -> Option<&Store<DaemonSet>> {
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
pub fn ready<K: Cached>(stores: &ChildStores) -> Option<&Store<K::Kept>> {
    K::store(stores).filter(|s| super::shared_reads::is_ready(*s))
}

/// The cached child `name` (in `namespace` for namespaced kinds).
pub fn get<C>(store: &Store<C>, namespace: Option<&str>, name: &str) -> Option<C>
where
    C: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut r = ObjectRef::<C>::new(name);
    if let Some(ns) = namespace {
        r = r.within(ns);
    }
    store.get(&r).map(|o| o.as_ref().clone())
}

/// The metadata of the cached children whose labels match every `key=value` of `selector`; `None`
/// when the selector is not a list of equalities (then the caller lists from the API server).
pub fn selected<C>(store: &Store<C>, selector: &str) -> Option<Vec<ObjectMeta>>
where
    C: Resource<DynamicType = ()> + Clone + 'static,
{
    let wanted: Vec<(&str, &str)> = selector
        .split(',')
        .map(|term| term.split_once('=').filter(|(k, _)| !k.ends_with('!') && kept_label(k)))
        .collect::<Option<_>>()?;
    Some(
        store
            .state_filter(|o| {
                let labels = o.meta().labels.as_ref();
                wanted
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(*k)).is_some_and(|x| x == v))
            })
            .into_iter()
            .map(|o| o.meta().clone())
            .collect(),
    )
}

/// The labels a cache keeps (what the child sets select on); a selector on any other label is
/// answered by the API server.
fn kept_label(k: &str) -> bool {
    k.starts_with("mlobs.io/") || k == "app.kubernetes.io/managed-by"
}

/// Only what the applier and the triggers read: name, namespace, resourceVersion, owner
/// references, deletion timestamp, mlobs' labels and annotations (no managedFields, uid,
/// timestamps or other labels: a cached child is a few hundred bytes).
fn slim<K>(o: &mut PartialObjectMeta<K>) {
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
    Store<PartialObjectMeta<K>>,
    impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    // kube 5 sends metadata-only list and watch requests for `PartialObjectMeta`.
    watch_slimmed(Api::<PartialObjectMeta<K>>::all(client.clone()), cfg, shard, slim)
}

/// [`watch`] of the collector DaemonSets as whole objects (their status is the collectors'
/// readiness), slimmed by [`slim_daemon_set`].
pub fn watch_daemon_sets(
    client: &Client,
    cfg: &watcher::Config,
    shard: Shard,
) -> (
    Store<DaemonSet>,
    impl Stream<Item = Result<DaemonSet, watcher::Error>> + Send + 'static,
) {
    watch_slimmed(Api::<DaemonSet>::all(client.clone()), cfg, shard, slim_daemon_set)
}

fn watch_slimmed<C>(
    api: Api<C>,
    cfg: &watcher::Config,
    shard: Shard,
    slim: fn(&mut C),
) -> (Store<C>, impl Stream<Item = Result<C, watcher::Error>> + Send + 'static)
where
    C: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let events = watcher(api, cfg.clone())
        .default_backoff()
        .filter(move |ev| futures::future::ready(ours(&shard, ev)))
        .modify(slim);
    (reader, reflector(writer, events).touched_objects())
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
        let store = filled(vec![
            meta("a", &[(p, "1"), (m, "mlobs")]),
            meta("b", &[(p, "2"), (m, "mlobs")]),
            meta("c", &[(p, "1")]),
        ]);
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
            config_maps: filled(vec![meta("a", &[])]),
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
