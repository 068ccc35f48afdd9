//! Watches that never build what the caches drop.
//!
//! Every object the API server sends carries its `metadata.managedFields`: the server-side apply
//! field sets of each manager, as a JSON tree. A collector DaemonSet's is the size of its whole
//! pod template. Parsed as `k8s_openapi`'s `ObjectMeta`, that tree becomes a `serde_json::Value`
//! of maps and strings, and the DaemonSet's pod template a `PodSpec`; the caches then drop both
//! (`child_stores::slim_daemon_set`, the pipeline cache's `slim`). At a restart the first listing
//! parsed a page of 500 DaemonSets at once: heaptrack at 500 pipelines showed 15 MiB of `Value`
//! and 6 MiB of `PodSpec` in use at the replica's peak (39.6 MiB of heap, against 21 MiB for
//! the same replica creating the 500), only to be thrown away.
//!
//! [`Lean<K>`] is `K` read through a wire type ([`LeanKind::Wire`]) that has no field for what
//! is dropped: serde skips an unknown JSON field without allocating, so `managedFields` and a
//! DaemonSet's pod template are never built. `Api<Lean<K>>` sends the same requests as `Api<K>`
//! (metadata-only ones for `PartialObjectMeta<K>`); [`watch`] watches through it and yields
//! `K`'s events. Its first listing comes in pages of [`LIST_PAGE`] objects instead of 500, which
//! bounds the response text held at once.

use std::borrow::Cow;
use std::collections::BTreeMap;

use futures::{Stream, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::crd::pipeline::{MLObservabilityPipeline, MLObservabilityPipelineSpec, MLObservabilityPipelineStatus};

/// Objects per page of a watch's first listing (kube's default is 500). A page's response text
/// and its parsed objects are held together until the page is in the cache; at 100, a listing of
/// 1,000 collector DaemonSets is 10 requests.
pub const LIST_PAGE: u32 = 100;

/// The watch events of the `K`s `cfg` selects across the cluster, read lean, the first listing
/// in pages of [`LIST_PAGE`], retried with kube's default backoff.
pub fn watch<K: LeanKind>(
    client: Client,
    cfg: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static {
    watcher(Api::<Lean<K>>::all(client), cfg.page_size(LIST_PAGE))
        .default_backoff()
        .map_ok(unwrap)
}

/// `ObjectMeta` as the API server sends it, without `managedFields` (skipped unparsed).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl From<WireMeta> for ObjectMeta {
    fn from(w: WireMeta) -> ObjectMeta {
        ObjectMeta {
            annotations: w.annotations,
            creation_timestamp: w.creation_timestamp,
            deletion_grace_period_seconds: w.deletion_grace_period_seconds,
            deletion_timestamp: w.deletion_timestamp,
            finalizers: w.finalizers,
            generate_name: w.generate_name,
            generation: w.generation,
            labels: w.labels,
            managed_fields: None,
            name: w.name,
            namespace: w.namespace,
            owner_references: w.owner_references,
            resource_version: w.resource_version,
            self_link: w.self_link,
            uid: w.uid,
        }
    }
}

/// A kind whose watches can be read through a leaner wire type.
pub trait LeanKind: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The object as sent, with fields only for what is kept.
    type Wire: DeserializeOwned;
    fn from_wire(wire: Self::Wire) -> Self;
}

/// `K` as a lean watch reads it: equal to `K` parsed whole, without `metadata.managedFields`
/// and what else `K::Wire` has no field for.
#[derive(Clone, Debug)]
pub struct Lean<K>(pub K);

impl<'de, K: LeanKind> Deserialize<'de> for Lean<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::Wire::deserialize(d).map(|w| Lean(K::from_wire(w)))
    }
}

impl<K: LeanKind> Resource for Lean<K> {
    type DynamicType = ();
    type Scope = K::Scope;
    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
    /// Metadata-only requests exactly when `K` makes them (`PartialObjectMeta<_>`).
    fn metadata_api() -> bool {
        K::metadata_api()
    }
}

/// A lean watch's event as `K`'s.
fn unwrap<K>(ev: watcher::Event<Lean<K>>) -> watcher::Event<K> {
    match ev {
        watcher::Event::Apply(o) => watcher::Event::Apply(o.0),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.0),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.0),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// A metadata-only object: its metadata (the type fields are not kept).
#[derive(Deserialize)]
pub struct WireMetaOnly {
    metadata: WireMeta,
}

impl<K> LeanKind for PartialObjectMeta<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    type Wire = WireMetaOnly;
    fn from_wire(w: WireMetaOnly) -> Self {
        PartialObjectMeta {
            types: None,
            metadata: w.metadata.into(),
            _phantom: Default::default(),
        }
    }
}

/// A DaemonSet as the collector caches read it: metadata, the spec's selector, the status; no
/// pod template.
#[derive(Deserialize)]
pub struct WireDaemonSet {
    metadata: WireMeta,
    spec: Option<WireDaemonSetSpec>,
    status: Option<DaemonSetStatus>,
}

#[derive(Deserialize)]
struct WireDaemonSetSpec {
    #[serde(default)]
    selector: LabelSelector,
}

impl LeanKind for DaemonSet {
    type Wire = WireDaemonSet;
    fn from_wire(w: WireDaemonSet) -> Self {
        DaemonSet {
            metadata: w.metadata.into(),
            spec: w.spec.map(|s| DaemonSetSpec {
                selector: s.selector,
                ..Default::default()
            }),
            status: w.status,
        }
    }
}

/// A pod as the pod caches read it (`shared_reads::slim_pod`): metadata, the node, the phase
/// and the conditions; no containers, volumes or container statuses.
#[derive(Deserialize)]
pub struct WirePod {
    metadata: WireMeta,
    spec: Option<WirePodSpec>,
    status: Option<WirePodStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePodSpec {
    node_name: Option<String>,
}

#[derive(Deserialize)]
struct WirePodStatus {
    phase: Option<String>,
    conditions: Option<Vec<PodCondition>>,
}

impl LeanKind for Pod {
    type Wire = WirePod;
    fn from_wire(w: WirePod) -> Self {
        Pod {
            metadata: w.metadata.into(),
            spec: w.spec.map(|s| PodSpec {
                node_name: s.node_name,
                ..Default::default()
            }),
            status: w.status.map(|s| PodStatus {
                phase: s.phase,
                conditions: s.conditions,
                ..Default::default()
            }),
        }
    }
}

/// A node as the node cache reads it (`controller::slim_node`): metadata, whether it is
/// cordoned, its conditions; no images, addresses, capacity or other status.
#[derive(Deserialize)]
pub struct WireNode {
    metadata: WireMeta,
    spec: Option<WireNodeSpec>,
    status: Option<WireNodeStatus>,
}

#[derive(Deserialize)]
struct WireNodeSpec {
    unschedulable: Option<bool>,
}

#[derive(Deserialize)]
struct WireNodeStatus {
    conditions: Option<Vec<NodeCondition>>,
}

impl LeanKind for Node {
    type Wire = WireNode;
    fn from_wire(w: WireNode) -> Self {
        Node {
            metadata: w.metadata.into(),
            spec: w.spec.map(|s| NodeSpec {
                unschedulable: s.unschedulable,
                ..Default::default()
            }),
            status: w.status.map(|s| NodeStatus {
                conditions: s.conditions,
                ..Default::default()
            }),
        }
    }
}

/// A pipeline: spec and status whole, metadata without `managedFields`.
#[derive(Deserialize)]
pub struct WirePipeline {
    metadata: WireMeta,
    spec: MLObservabilityPipelineSpec,
    status: Option<MLObservabilityPipelineStatus>,
}

impl LeanKind for MLObservabilityPipeline {
    type Wire = WirePipeline;
    fn from_wire(w: WirePipeline) -> Self {
        MLObservabilityPipeline {
            metadata: w.metadata.into(),
            spec: w.spec,
            status: w.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn managed_fields() -> serde_json::Value {
        json!([{
            "manager": "mlobs", "operation": "Apply", "apiVersion": "apps/v1",
            "time": "2026-12-06T10:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}}
        }])
    }

    fn daemon_set_json() -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {
                "name": "collector", "namespace": "team", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2026-12-06T10:00:00Z",
                "labels": {"app.kubernetes.io/managed-by": "mlobs"},
                "annotations": {"mlobs.io/owner": "team/p"},
                "ownerReferences": [{"apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
                    "name": "p", "uid": "u-0", "controller": true}],
                "finalizers": ["f"],
                "managedFields": managed_fields(),
            },
            "spec": {
                "selector": {"matchLabels": {"app": "collector"}},
                "template": {"metadata": {"labels": {"app": "collector"}},
                    "spec": {"containers": [{"name": "otelcol", "image": "otel/collector:1", "args": ["--config", "/conf/c.yaml"]}]}}
            },
            "status": {"currentNumberScheduled": 2, "desiredNumberScheduled": 2, "numberMisscheduled": 0,
                "numberReady": 1, "observedGeneration": 3, "updatedNumberScheduled": 2}
        })
    }

    #[test]
    fn a_lean_daemon_set_is_the_whole_one_without_managed_fields_or_pod_template() {
        let whole: DaemonSet = serde_json::from_value(daemon_set_json()).expect("whole");
        let lean: Lean<DaemonSet> = serde_json::from_value(daemon_set_json()).expect("lean");
        let mut want = whole.clone();
        want.metadata.managed_fields = None;
        want.spec = Some(DaemonSetSpec {
            selector: whole.spec.as_ref().expect("spec").selector.clone(),
            ..Default::default()
        });
        assert_eq!(lean.0, want);
        assert!(
            whole.metadata.managed_fields.is_some(),
            "the whole parse keeps what the lean one drops"
        );
    }

    #[test]
    fn lean_metadata_keeps_every_field_but_managed_fields() {
        let v = daemon_set_json();
        let whole: PartialObjectMeta<ConfigMap> = serde_json::from_value(v.clone()).expect("whole");
        let lean: Lean<PartialObjectMeta<ConfigMap>> = serde_json::from_value(v).expect("lean");
        let mut want = whole.metadata.clone();
        want.managed_fields = None;
        assert_eq!(lean.0.metadata, want);
        assert!(lean.0.types.is_none());
    }

    #[test]
    fn a_lean_watch_asks_for_what_its_kind_asks_for() {
        assert!(Lean::<PartialObjectMeta<ConfigMap>>::metadata_api());
        assert!(!Lean::<DaemonSet>::metadata_api());
        assert_eq!(Lean::<DaemonSet>::plural(&()), "daemonsets");
        assert_eq!(Lean::<DaemonSet>::api_version(&()), "apps/v1");
        assert_eq!(
            Lean::<MLObservabilityPipeline>::url_path(&(), Some("team")),
            MLObservabilityPipeline::url_path(&(), Some("team"))
        );
    }

    #[test]
    fn a_lean_pod_keeps_its_node_phase_and_conditions() {
        let v = json!({
            "metadata": {"name": "collector-x", "namespace": "team", "managedFields": managed_fields(),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "collector", "uid": "u", "controller": true}]},
            "spec": {"nodeName": "gpu-node-1", "containers": [{"name": "otelcol", "image": "otel/collector:1"}]},
            "status": {"phase": "Pending", "hostIP": "10.0.0.1", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/4 nodes are available"}]}
        });
        let whole: Pod = serde_json::from_value(v.clone()).expect("whole");
        let lean: Lean<Pod> = serde_json::from_value(v).expect("lean");
        let pod = lean.0;
        assert_eq!(pod.metadata.owner_references, whole.metadata.owner_references);
        assert_eq!(pod.metadata.managed_fields, None);
        let (spec, status) = (pod.spec.expect("spec"), pod.status.expect("status"));
        assert_eq!(spec.node_name.as_deref(), Some("gpu-node-1"));
        assert!(spec.containers.is_empty(), "no containers are kept");
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.conditions, whole.status.expect("status").conditions);
        assert_eq!(status.host_ip, None);
    }

    #[test]
    fn a_lean_node_keeps_its_labels_cordon_and_conditions() {
        let v = json!({
            "metadata": {"name": "gpu-node-1", "labels": {"nvidia.com/gpu.present": "true"}, "managedFields": managed_fields()},
            "spec": {"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "images": [{"names": ["a"], "sizeBytes": 1}]}
        });
        let whole: Node = serde_json::from_value(v.clone()).expect("whole");
        let node = serde_json::from_value::<Lean<Node>>(v).expect("lean").0;
        assert_eq!(node.metadata.labels, whole.metadata.labels);
        assert_eq!(node.spec.as_ref().and_then(|s| s.unschedulable), Some(true));
        let status = node.status.expect("status");
        assert_eq!(status.conditions, whole.status.expect("status").conditions);
        assert_eq!(status.images, None);
    }

    #[test]
    fn a_lean_pipeline_is_the_whole_one_without_managed_fields() {
        let v = json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "metadata": {"name": "p", "namespace": "team", "managedFields": managed_fields()},
            "spec": {"policyRef": "default"},
            "status": {"phase": "Ready"}
        });
        let whole: MLObservabilityPipeline = serde_json::from_value(v.clone()).expect("whole");
        let lean: Lean<MLObservabilityPipeline> = serde_json::from_value(v).expect("lean");
        let mut want = whole;
        want.metadata.managed_fields = None;
        assert_eq!(
            serde_json::to_value(&lean.0).expect("json"),
            serde_json::to_value(&want).expect("json")
        );
    }
}
