//! One child applier for both controllers, modelled on stackable operator-rs `ClusterResources`:
//! the desired children of one owner are a [`ChildSet`]; [`apply`] server-side applies each (in
//! order, only when the API server would store something else: see [`super::children`]), then
//! deletes every object of the set's kinds that carries the set's labels, is owned by the same
//! owner and is not in the set — on every reconcile, not gated on a generation change.
//!
//! Ownership is an owner reference or, where none is possible (cluster-scoped kinds, children in
//! another namespace), the `mlobs.io/owner-uid` annotation: never a guessed name. Nothing mlobs
//! did not create, or that another owner owns, is deleted.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta};
use kube::{Client, Resource};

use super::child_stores::{Cached, ChildStores};
use super::children::{self, Applied, AppliedCache, Owner};
use super::error::Result;
use crate::desired::alerts::prometheus::PrometheusRule;
use crate::desired::self_monitoring::PodMonitor;

/// Annotation on every child naming its owner (`<namespace>/<name>`, or `<name>` for a
/// cluster-scoped owner): how a child that cannot carry an owner reference finds its owner.
pub const OWNER_ANNOTATION: &str = crate::conventions::OWNER_ANNOTATION;
/// Annotation with the owner's uid: pruning and cleanup delete only what it names.
pub const OWNER_UID_ANNOTATION: &str = crate::conventions::OWNER_UID_ANNOTATION;

/// The kinds of child mlobs creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ServiceAccount,
    ClusterRole,
    ClusterRoleBinding,
    ConfigMap,
    Service,
    DaemonSet,
    /// monitoring.coreos.com/v1: listed and pruned only where its CRD is installed.
    PrometheusRule,
    /// monitoring.coreos.com/v1: listed and pruned only where its CRD is installed.
    PodMonitor,
}

/// Which monitoring.coreos.com/v1 kinds the API server serves (API discovery). Read only when
/// the pipeline may want one; unknown counts as absent: nothing of that kind applied or pruned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitoringApis {
    pub prometheus_rules: bool,
    pub pod_monitors: bool,
}

/// One desired child. (A set holds about ten, built once per reconcile: boxing the larger
/// variants would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Child {
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    ConfigMap(ConfigMap),
    Service(Service),
    DaemonSet(DaemonSet),
    PrometheusRule(PrometheusRule),
    PodMonitor(PodMonitor),
}

impl Child {
    /// `Kind/namespace/name` (or `Kind/name`).
    pub fn key(&self) -> String {
        match self {
            Child::ServiceAccount(o) => children::describe(o),
            Child::ClusterRole(o) => children::describe(o),
            Child::ClusterRoleBinding(o) => children::describe(o),
            Child::ConfigMap(o) => children::describe(o),
            Child::Service(o) => children::describe(o),
            Child::DaemonSet(o) => children::describe(o),
            Child::PrometheusRule(o) => children::describe(o),
            Child::PodMonitor(o) => children::describe(o),
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Child::ServiceAccount(o) => &mut o.metadata,
            Child::ClusterRole(o) => &mut o.metadata,
            Child::ClusterRoleBinding(o) => &mut o.metadata,
            Child::ConfigMap(o) => &mut o.metadata,
            Child::Service(o) => &mut o.metadata,
            Child::DaemonSet(o) => &mut o.metadata,
            Child::PrometheusRule(o) => &mut o.metadata,
            Child::PodMonitor(o) => &mut o.metadata,
        }
    }

    fn namespaced(&self) -> bool {
        !matches!(self, Child::ClusterRole(_) | Child::ClusterRoleBinding(_))
    }
}

/// Who owns a child set.
#[derive(Debug, Clone, PartialEq)]
pub struct SetOwner {
    /// `<namespace>/<name>` or `<name>`.
    pub name: String,
    pub uid: String,
    /// The owner reference namespaced children in `ref_namespace` carry (the garbage collector
    /// removes them with the owner). `None`: the children live where no reference is possible.
    pub reference: Option<OwnerReference>,
    /// Where an owner reference is valid: the owner's namespace; `None` for a cluster-scoped owner
    /// (valid everywhere).
    pub ref_namespace: Option<String>,
}

/// The desired children of one owner, in apply order, and what a prune looks at.
#[derive(Debug, Clone)]
pub struct ChildSet {
    /// Label selector every child carries (and that a prune lists with).
    pub selector: String,
    /// The kinds this owner ever creates: what a prune lists.
    pub kinds: Vec<Kind>,
    pub owner: SetOwner,
    pub children: Vec<Child>,
}

impl ChildSet {
    /// A set whose children get the owner's annotations, and its owner reference where valid.
    pub fn new(selector: String, kinds: &[Kind], owner: SetOwner, children: Vec<Child>) -> ChildSet {
        let mut set = ChildSet {
            selector,
            kinds: kinds.to_vec(),
            owner,
            children,
        };
        for c in &mut set.children {
            let namespaced = c.namespaced();
            let meta = c.meta_mut();
            let ref_ok = namespaced
                && set
                    .owner
                    .ref_namespace
                    .as_ref()
                    .is_none_or(|ns| meta.namespace.as_ref() == Some(ns));
            if ref_ok && let Some(r) = &set.owner.reference {
                meta.owner_references = Some(vec![r.clone()]);
            }
            let ann = meta.annotations.get_or_insert_with(Default::default);
            ann.insert(OWNER_ANNOTATION.into(), set.owner.name.clone());
            ann.insert(OWNER_UID_ANNOTATION.into(), set.owner.uid.clone());
        }
        set
    }

    /// The keys of the children: what a prune keeps.
    pub fn keys(&self) -> Vec<String> {
        self.children.iter().map(Child::key).collect()
    }
}

/// What applying a set did.
#[derive(Debug, Default)]
pub struct Report {
    /// Each child's key and outcome, in apply order.
    pub applied: Vec<(String, Applied)>,
    /// The live DaemonSet of the set (the last one applied), with its status: as the API server
    /// returned it, or slimmed from the cache (`child_stores::slim_daemon_set`).
    pub daemon_set: Option<DaemonSet>,
    /// The objects deleted by the prune (keys).
    pub pruned: Vec<String>,
}

/// Applies every child of `set` in order, then prunes (see the module comment). Reads what
/// `stores` caches from there (see [`super::child_stores`]), the DaemonSet's status included.
pub async fn apply(client: &Client, cache: &AppliedCache, stores: &ChildStores, set: ChildSet) -> Result<Report> {
    let keep = set.keys();
    let mut report = Report::default();
    for child in set.children {
        let key = child.key();
        let outcome = match child {
            Child::ServiceAccount(o) => apply_namespaced(client, cache, stores, o).await?,
            Child::ClusterRole(o) => children::apply_known(&Api::all(client.clone()), o, cache, stores).await?,
            Child::ClusterRoleBinding(o) => children::apply_known(&Api::all(client.clone()), o, cache, stores).await?,
            Child::ConfigMap(o) => apply_namespaced(client, cache, stores, o).await?,
            Child::Service(o) => apply_namespaced(client, cache, stores, o).await?,
            Child::PrometheusRule(o) => apply_namespaced(client, cache, stores, o).await?,
            Child::PodMonitor(o) => apply_namespaced(client, cache, stores, o).await?,
            Child::DaemonSet(o) => {
                let ns = o.meta().namespace.clone().unwrap_or_default();
                let (a, live) =
                    children::apply_with_status(&Api::namespaced(client.clone(), &ns), o, cache, stores).await?;
                report.daemon_set = Some(live);
                a
            }
        };
        report.applied.push((key, outcome));
    }
    let owner = Owner {
        uid: &set.owner.uid,
        only_unowned: false,
    };
    report.pruned = prune(client, cache, Some(stores), &set.selector, &set.kinds, &keep, &owner).await?;
    Ok(report)
}

async fn apply_namespaced<K>(client: &Client, cache: &AppliedCache, stores: &ChildStores, o: K) -> Result<Applied>
where
    K: Cached<Scope = k8s_openapi::NamespaceResourceScope>
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let ns = o.meta().namespace.clone().unwrap_or_default();
    children::apply_known(&Api::namespaced(client.clone(), &ns), o, cache, stores).await
}

/// Deletes the objects of `kinds` carrying `selector` that `owner` may delete and whose key is
/// not in `keep`, in every namespace; forgets them in `cache`. Returns their keys. The candidates
/// come from `stores` where a kind's cache is ready, else from LISTs (always without `stores`:
/// the cleanup at deletion lists, so that nothing a lagging cache misses is left behind).
pub async fn prune(
    client: &Client,
    cache: &AppliedCache,
    stores: Option<&ChildStores>,
    selector: &str,
    kinds: &[Kind],
    keep: &[String],
    owner: &Owner<'_>,
) -> Result<Vec<String>> {
    let mut pruned = Vec::new();
    for kind in kinds {
        let (c, st, s) = (client, stores, selector);
        pruned.extend(match kind {
            Kind::DaemonSet => children::prune_everywhere::<DaemonSet>(c, st, s, keep, owner).await?,
            Kind::ConfigMap => children::prune_everywhere::<ConfigMap>(c, st, s, keep, owner).await?,
            Kind::Service => children::prune_everywhere::<Service>(c, st, s, keep, owner).await?,
            Kind::PrometheusRule => children::prune_everywhere::<PrometheusRule>(c, st, s, keep, owner).await?,
            Kind::PodMonitor => children::prune_everywhere::<PodMonitor>(c, st, s, keep, owner).await?,
            Kind::ServiceAccount => children::prune_everywhere::<ServiceAccount>(c, st, s, keep, owner).await?,
            Kind::ClusterRoleBinding => children::prune_cluster::<ClusterRoleBinding>(c, st, s, keep, owner).await?,
            Kind::ClusterRole => children::prune_cluster::<ClusterRole>(c, st, s, keep, owner).await?,
        });
    }
    for key in &pruned {
        cache.forget(key);
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(reference: bool) -> SetOwner {
        SetOwner {
            name: "team/train".into(),
            uid: "u-1".into(),
            reference: reference.then(|| OwnerReference {
                uid: "u-1".into(),
                ..Default::default()
            }),
            ref_namespace: Some("team".into()),
        }
    }

    fn cm(ns: &str) -> Child {
        let mut o = ConfigMap::default();
        o.metadata.name = Some("c".into());
        o.metadata.namespace = Some(ns.into());
        Child::ConfigMap(o)
    }

    fn meta(c: &mut Child) -> ObjectMeta {
        c.meta_mut().clone()
    }

    #[test]
    fn children_carry_the_owner_annotations_and_a_reference_only_where_valid() {
        let cr = Child::ClusterRole(ClusterRole {
            metadata: ObjectMeta {
                name: Some("r".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        let set = ChildSet::new(
            "a=b".into(),
            &[Kind::ConfigMap],
            owner(true),
            vec![cm("team"), cm("elsewhere"), cr],
        );
        let mut cs = set.children.clone();
        let (same, other, cluster) = (meta(&mut cs[0]), meta(&mut cs[1]), meta(&mut cs[2]));
        assert_eq!(same.owner_references.map(|r| r.len()), Some(1));
        assert_eq!(other.owner_references, None, "no reference across namespaces");
        assert_eq!(cluster.owner_references, None, "no reference on cluster-scoped kinds");
        for m in [other, cluster] {
            let ann = m.annotations.unwrap_or_default();
            assert_eq!(ann.get(OWNER_UID_ANNOTATION).map(String::as_str), Some("u-1"));
            assert_eq!(ann.get(OWNER_ANNOTATION).map(String::as_str), Some("team/train"));
        }
        assert_eq!(
            set.keys(),
            ["ConfigMap/team/c", "ConfigMap/elsewhere/c", "ClusterRole/r"]
        );
    }
}
