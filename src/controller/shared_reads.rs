//! Reads many pipelines share: the namespaces (from a metadata watch) and the DCGM exporter's
//! pods (one listing per exporter for a burst of reconciles).
//!
//! Before, every reconcile asked the API server for its collector namespace (a GET) and listed
//! its exporter's pods (a LIST): at 1,000 pipelines under one policy that was 2,000 requests for
//! one answer each (`make bench`, see the README).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::error::Result;

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
    let events = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(slim_namespace);
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

/// How long one look at a waiting collector's pods answers for the same DaemonSet
/// resourceVersion.
pub const UNSCHEDULABLE_FRESH_FOR: Duration = Duration::from_secs(10);

/// DaemonSet uid → what the last look at its pods found (`Some(message)` when the scheduler
/// cannot place some), for that DaemonSet resourceVersion, for [`UNSCHEDULABLE_FRESH_FOR`].
#[derive(Default)]
pub struct UnschedulableLooks {
    looks: Mutex<HashMap<String, Look>>,
}

/// (DaemonSet resourceVersion, when, what was found).
type Look = (String, Instant, Option<String>);

impl UnschedulableLooks {
    pub fn fresh(&self, uid: &str, version: &str, now: Instant) -> Option<Option<String>> {
        let looks = self.looks.lock().unwrap_or_else(|e| e.into_inner());
        let (v, at, found) = looks.get(uid)?;
        (v == version && now.saturating_duration_since(*at) < UNSCHEDULABLE_FRESH_FOR).then(|| found.clone())
    }

    /// Keeps a look, and drops those no longer fresh.
    pub fn keep(&self, uid: String, version: String, now: Instant, found: Option<String>) {
        let mut looks = self.looks.lock().unwrap_or_else(|e| e.into_inner());
        looks.retain(|_, (_, at, _)| now.saturating_duration_since(*at) < UNSCHEDULABLE_FRESH_FOR);
        looks.insert(uid, (version, now, found));
    }
}

/// The nodes with a Running pod among `pods`.
pub fn running_nodes(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect()
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

    #[test]
    fn a_look_at_waiting_pods_answers_for_the_same_daemon_set_version_while_fresh() {
        let looks = UnschedulableLooks::default();
        let t0 = Instant::now();
        let why = Some("0/2 nodes are available: 2 Too many pods".to_string());
        looks.keep("ds-1".into(), "5".into(), t0, why.clone());
        assert_eq!(looks.fresh("ds-1", "5", t0 + Duration::from_secs(9)), Some(why));
        assert_eq!(looks.fresh("ds-1", "6", t0), None, "the DaemonSet changed");
        assert_eq!(looks.fresh("ds-1", "5", t0 + UNSCHEDULABLE_FRESH_FOR), None, "too old");
        looks.keep("ds-2".into(), "1".into(), t0 + UNSCHEDULABLE_FRESH_FOR, None);
        assert_eq!(looks.fresh("ds-2", "1", t0 + UNSCHEDULABLE_FRESH_FOR), Some(None));
        let held = looks.looks.lock().map(|l| l.len()).unwrap_or_default();
        assert_eq!(held, 1, "the stale look is dropped");
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
