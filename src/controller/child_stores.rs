//! Metadata caches of the children mlobs creates, read by the child applier instead of the API
//! server.
//!
//! The watches that trigger reconciles on child changes fill these stores on the way (metadata
//! only: name, labels, owner, resourceVersion and mlobs' own annotations). With them, a reconcile
//! that changes nothing asks the API server for one object, the collector DaemonSet (its status
//! is the collector's readiness), instead of one GET per child and one label-selected LIST per
//! kind across the whole cluster for the prune. Those LISTs cost the API server a scan of every
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
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use super::shard::Shard;
use crate::desired::alerts::prometheus::PrometheusRule;
use crate::desired::self_monitoring::PodMonitor;

/// The metadata of mlobs' children, one store per kind the applier reads through a cache.
#[derive(Clone)]
pub struct ChildStores {
    pub daemon_sets: Store<PartialObjectMeta<DaemonSet>>,
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
    fn store(_: &ChildStores) -> Option<&Store<PartialObjectMeta<Self>>> {
        None
    }
}

macro_rules! cached {
    ($($kind:ty => $field:ident),* $(,)?) => {$(
        impl Cached for $kind {
            fn store(s: &ChildStores) -> Option<&Store<PartialObjectMeta<Self>>> {
                Some(&s.$field)
            }
        }
    )*};
}

cached!(
    DaemonSet => daemon_sets,
    ConfigMap => config_maps,
    ServiceAccount => service_accounts,
    Service => services,
    ClusterRole => cluster_roles,
    ClusterRoleBinding => cluster_role_bindings,
);
impl Cached for PrometheusRule {}
impl Cached for PodMonitor {}

/// The store of `K` when its first listing is complete.
pub fn ready<K: Cached>(stores: &ChildStores) -> Option<&Store<PartialObjectMeta<K>>> {
    K::store(stores).filter(|s| super::shared_reads::is_ready(*s))
}

/// The cached metadata of the child `name` (in `namespace` for namespaced kinds).
pub fn get<K: Cached>(
    store: &Store<PartialObjectMeta<K>>,
    namespace: Option<&str>,
    name: &str,
) -> Option<PartialObjectMeta<K>> {
    let mut r = ObjectRef::<PartialObjectMeta<K>>::new(name);
    if let Some(ns) = namespace {
        r = r.within(ns);
    }
    store.get(&r).map(|o| o.as_ref().clone())
}

/// The cached children whose labels match every `key=value` of `selector`; `None` when the
/// selector is not a list of equalities (then the caller lists from the API server).
pub fn selected<K: Cached>(store: &Store<PartialObjectMeta<K>>, selector: &str) -> Option<Vec<PartialObjectMeta<K>>> {
    let wanted: Vec<(&str, &str)> = selector
        .split(',')
        .map(|term| term.split_once('=').filter(|(k, _)| !k.ends_with('!') && kept_label(k)))
        .collect::<Option<_>>()?;
    Some(
        store
            .state_filter(|o| {
                let labels = o.metadata.labels.as_ref();
                wanted
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(*k)).is_some_and(|x| x == v))
            })
            .into_iter()
            .map(|o| o.as_ref().clone())
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
    m.managed_fields = None;
    m.uid = None;
    m.creation_timestamp = None;
    m.generation = None;
    if let Some(a) = m.annotations.as_mut() {
        a.retain(|k, _| k.starts_with("mlobs.io/"));
    }
    if let Some(l) = m.labels.as_mut() {
        l.retain(|k, _| kept_label(k));
    }
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
    let (reader, writer) = reflector::store();
    // kube 5 sends metadata-only list and watch requests for `PartialObjectMeta`.
    let events = watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), cfg.clone())
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
    use super::*;
    use kube::api::ObjectMeta;
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

    fn filled(objs: Vec<PartialObjectMeta<ConfigMap>>) -> Store<PartialObjectMeta<ConfigMap>> {
        let (reader, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for o in objs {
            writer.apply_watcher_event(&watcher::Event::InitApply(o));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        reader
    }

    #[test]
    fn selected_matches_every_equality_of_the_selector() {
        let (p, m) = ("mlobs.io/pipeline", "app.kubernetes.io/managed-by");
        let store = filled(vec![
            meta("a", &[(p, "1"), (m, "mlobs")]),
            meta("b", &[(p, "2"), (m, "mlobs")]),
            meta("c", &[(p, "1")]),
        ]);
        let names = |v: Vec<PartialObjectMeta<ConfigMap>>| -> Vec<String> {
            let mut n: Vec<String> = v.into_iter().filter_map(|o| o.metadata.name).collect();
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
}
