//! What a GpuTelemetryPolicy's counts (`status.pipelines`) read of a pipeline: which policy it
//! names and whether its `PolicyCompliant` condition is False. A sharded shard 0 runs the policies
//! and so needs every pipeline of the cluster, not only its shard's: it keeps each as a
//! [`Counted`] (735 bytes instead of 7.4 KB for a pipeline with its status written; see
//! `tests/cache_memory.rs`), so its memory still follows its own shard.

use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::watcher;
use kube::{Client, Resource};

use super::lookup::{Governing, governing_ref};
use crate::crd::conditions::{self, pipeline as pty, status as st};
use crate::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};

/// `impl Resource` for a type that stands for an MLObservabilityPipeline in a cache (its kind,
/// group, version and plural) and keeps the pipeline's metadata in a `metadata` field.
macro_rules! pipeline_resource {
    ($t:ty) => {
        impl kube::Resource for $t {
            type DynamicType = ();
            type Scope = <MLObservabilityPipeline as kube::Resource>::Scope;
            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                MLObservabilityPipeline::kind(&())
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                MLObservabilityPipeline::group(&())
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                MLObservabilityPipeline::version(&())
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                MLObservabilityPipeline::plural(&())
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use pipeline_resource;

/// A pipeline as the policies' counts read it.
#[derive(Clone, Debug)]
pub struct Counted {
    /// Namespace, name, uid and resourceVersion only (the store keys on them).
    metadata: ObjectMeta,
    policy_ref: Option<Box<str>>,
    non_compliant: bool,
}

impl Counted {
    pub fn of(p: &MLObservabilityPipeline) -> Counted {
        let m = &p.metadata;
        Counted {
            metadata: ObjectMeta {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                ..ObjectMeta::default()
            },
            policy_ref: p.spec.policy_ref.as_deref().map(Box::from),
            non_compliant: non_compliant(p),
        }
    }
}

/// Whether the pipeline reports `PolicyCompliant` False.
pub fn non_compliant(p: &MLObservabilityPipeline) -> bool {
    (p.status.as_ref())
        .and_then(|s| conditions::find(&s.conditions, pty::POLICY_COMPLIANT))
        .is_some_and(|c| c.status == st::FALSE)
}

pipeline_resource!(Counted);

/// How many pipelines policy `name` governs among `pipelines` (each `(spec.policyRef, whether
/// PolicyCompliant is False)`), and how many of those are non-compliant.
pub fn count_governed<'a>(
    pipelines: impl IntoIterator<Item = (Option<&'a str>, bool)>,
    policies: &[Arc<GpuTelemetryPolicy>],
    name: &str,
) -> (usize, usize) {
    let governed = (pipelines.into_iter())
        .filter(|(policy_ref, _)| matches!(governing_ref(*policy_ref, policies), Governing::One(g) if g.metadata.name.as_deref() == Some(name)));
    governed.fold((0, 0), |(all, failing), (_, non_compliant)| {
        (all + 1, failing + usize::from(non_compliant))
    })
}

/// [`count_governed`] over a store of [`Counted`] pipelines.
pub fn count_in(store: &Store<Counted>, policies: &[Arc<GpuTelemetryPolicy>], name: &str) -> (usize, usize) {
    let all = store.state();
    count_governed(
        all.iter().map(|c| (c.policy_ref.as_deref(), c.non_compliant)),
        policies,
        name,
    )
}

/// [`count_governed`] over the pipelines of this replica's own cache.
pub fn count_whole<K: CountedFields>(
    pipelines: &[Arc<K>],
    policies: &[Arc<GpuTelemetryPolicy>],
    name: &str,
) -> (usize, usize) {
    count_governed(pipelines.iter().map(|p| p.counted()), policies, name)
}

/// A cache of every pipeline of the cluster as [`Counted`]: (the store, the future that keeps it
/// filled). Each change the counts read is passed to `triggers` once the store holds it.
pub fn watch(
    client: Client,
    mut triggers: CountTriggers,
) -> (Store<Counted>, impl std::future::Future<Output = ()> + Send + 'static) {
    let (reader, writer) = reflector::store();
    let events = counted_events(super::lean::watch::<MLObservabilityPipeline>(
        client,
        watcher::Config::default(),
    ));
    (
        reader,
        reflector(writer, events)
            .inspect_ok(move |ev| triggers.event(ev))
            .for_each(|_| futures::future::ready(())),
    )
}

/// What the policies' counts read of a pipeline: `(spec.policyRef, whether PolicyCompliant is
/// False)`.
pub trait CountedFields: Resource {
    fn counted(&self) -> (Option<&str>, bool);
}

impl CountedFields for MLObservabilityPipeline {
    fn counted(&self) -> (Option<&str>, bool) {
        (self.spec.policy_ref.as_deref(), non_compliant(self))
    }
}

impl CountedFields for Counted {
    fn counted(&self) -> (Option<&str>, bool) {
        (self.policy_ref.as_deref(), self.non_compliant)
    }
}

/// The policy reconciles that pipeline changes call for: fed the events of the store the counts
/// are read from (once the store holds each, so a reconcile counts what triggered it), it names
/// the policies whose counts an event may change. Only a change of what is counted does: a
/// pipeline created or deleted, its `policyRef` changed (the policies before and after), its
/// `PolicyCompliant` turned False or back. Every other status write of a pipeline (a dozen or
/// more on its way to Ready) used to reconcile its policy: 8,400 policy reconciles in one
/// 1,000-pipeline bench run, for ten policies.
pub struct CountTriggers {
    /// `<namespace>/<name>` → what was counted of the pipeline at its last event.
    seen: std::collections::HashMap<Box<str>, (Option<Box<str>>, bool)>,
    policies: Store<GpuTelemetryPolicy>,
    tx: futures::channel::mpsc::UnboundedSender<ObjectRef<GpuTelemetryPolicy>>,
}

impl CountTriggers {
    /// The triggers, and the stream of policies to reconcile (`Controller::reconcile_on`).
    pub fn new(
        policies: Store<GpuTelemetryPolicy>,
    ) -> (
        CountTriggers,
        futures::channel::mpsc::UnboundedReceiver<ObjectRef<GpuTelemetryPolicy>>,
    ) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let t = CountTriggers {
            seen: Default::default(),
            policies,
            tx,
        };
        (t, rx)
    }

    /// Follows one event of the counted store.
    pub fn event<K: CountedFields>(&mut self, ev: &watcher::Event<K>) {
        match ev {
            // A new listing follows: every pipeline in it is news again, and one missing from it
            // (deleted while the watch was down) is found at `InitDone`.
            watcher::Event::Init => self.seen.clear(),
            watcher::Event::InitDone => {
                for p in self.policies.state() {
                    self.send(ObjectRef::from_obj(p.as_ref()));
                }
            }
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                let (policy_ref, non_compliant) = p.counted();
                let now = (policy_ref.map(Box::from), non_compliant);
                let before = self.seen.insert(key(p).into(), now.clone());
                if before.as_ref() != Some(&now) {
                    self.governing(policy_ref);
                    self.governing_before(before, policy_ref);
                }
            }
            watcher::Event::Delete(p) => {
                let before = self.seen.remove(key(p).as_str());
                let (policy_ref, _) = p.counted();
                self.governing(policy_ref);
                self.governing_before(before, policy_ref);
            }
        }
    }

    /// The policy named `policy_ref`, or every default policy without one (a conflict of
    /// defaults shows on each of them); none that the cache does not hold.
    fn governing(&self, policy_ref: Option<&str>) {
        let refs: Vec<_> = (self.policies.state().iter())
            .filter(|x| match policy_ref {
                Some(name) => x.metadata.name.as_deref() == Some(name),
                None => x.spec.default == Some(true),
            })
            .map(|x| ObjectRef::from_obj(x.as_ref()))
            .collect();
        for r in refs {
            self.send(r);
        }
    }

    /// The policy a pipeline named `before` its event, when that is another than it names now.
    fn governing_before(&self, before: Option<(Option<Box<str>>, bool)>, now: Option<&str>) {
        if let Some((Some(old), _)) = before.filter(|(r, _)| r.as_deref() != now) {
            self.governing(Some(&old));
        }
    }

    fn send(&self, r: ObjectRef<GpuTelemetryPolicy>) {
        // Gone only when the policy controller stopped (shutdown).
        let _ = self.tx.unbounded_send(r);
    }
}

fn key<K: Resource>(p: &K) -> String {
    format!(
        "{}/{}",
        p.meta().namespace.as_deref().unwrap_or_default(),
        p.meta().name.as_deref().unwrap_or_default()
    )
}

/// `events` with each pipeline as [`Counted`].
fn counted_events(
    events: impl Stream<Item = Result<watcher::Event<MLObservabilityPipeline>, watcher::Error>> + Send,
) -> impl Stream<Item = Result<watcher::Event<Counted>, watcher::Error>> + Send {
    events.map_ok(|ev| match ev {
        watcher::Event::Apply(p) => watcher::Event::Apply(Counted::of(&p)),
        watcher::Event::Delete(p) => watcher::Event::Delete(Counted::of(&p)),
        watcher::Event::InitApply(p) => watcher::Event::InitApply(Counted::of(&p)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    })
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector;
    use serde_json::json;

    use super::*;

    fn policy(name: &str, default: bool) -> Arc<GpuTelemetryPolicy> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
                "metadata": {"name": name}, "spec": {"default": default}
            }))
            .expect("policy"),
        )
    }

    /// A pipeline as the watch receives it: `policy_ref`, a `PolicyCompliant` condition when
    /// `compliant` is set, and the rest of a written status beside it.
    fn pipeline(i: usize, policy_ref: Option<&str>, compliant: Option<bool>) -> MLObservabilityPipeline {
        let cond = |t: &str, s: &str| {
            json!({"type": t, "status": s, "reason": "Reconciled", "message": format!("{t} of pipeline {i}"),
                "lastTransitionTime": "2026-12-06T10:00:00Z"})
        };
        let mut conditions = vec![cond(pty::READY, st::TRUE), cond(pty::DATA_FLOWING, st::FALSE)];
        if let Some(c) = compliant {
            conditions.push(cond(pty::POLICY_COMPLIANT, if c { st::TRUE } else { st::FALSE }));
        }
        serde_json::from_value(json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "metadata": {"name": format!("p-{i}"), "namespace": "team", "uid": format!("uid-{i}"),
                "resourceVersion": format!("{}", 100 + i), "labels": {"team": "a"},
                "finalizers": ["mlobs.io/cleanup"]},
            "spec": {"policyRef": policy_ref, "clusterName": "prod", "resyncInterval": "10m"},
            "status": {"conditions": conditions, "aws": {"roleArn": "arn:aws:iam::1:role/r"}}
        }))
        .expect("pipeline")
    }

    #[test]
    fn a_store_of_counted_pipelines_counts_as_the_whole_pipelines_do() {
        let policies = vec![policy("gpu", true), policy("other", false)];
        let whole: Vec<Arc<MLObservabilityPipeline>> = [
            (None, Some(false)),
            (None, Some(true)),
            (Some("gpu"), Some(false)),
            (Some("gpu"), None),
            (Some("other"), Some(false)),
            (Some("missing"), Some(false)),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (r, c))| Arc::new(pipeline(i, r, c)))
        .collect();
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for p in &whole {
            writer.apply_watcher_event(&watcher::Event::InitApply(Counted::of(p)));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        assert_eq!(count_whole(&whole, &policies, "gpu"), (4, 2));
        assert_eq!(count_whole(&whole, &policies, "other"), (1, 1));
        for name in ["gpu", "other", "missing"] {
            assert_eq!(
                count_in(&store, &policies, name),
                count_whole(&whole, &policies, name),
                "policy {name}"
            );
        }
        // A pipeline deleted from the cluster leaves the counts: the store keys on its identity.
        writer.apply_watcher_event(&watcher::Event::Delete(Counted::of(&whole[2])));
        assert_eq!(count_in(&store, &policies, "gpu"), (3, 1));
        let kept = Counted::of(&whole[4]);
        assert_eq!(
            (kept.metadata.namespace.as_deref(), kept.metadata.name.as_deref()),
            (Some("team"), Some("p-4"))
        );
        assert!(kept.metadata.labels.is_none() && kept.metadata.finalizers.is_none());
    }

    /// The policy names `triggers` asked to reconcile since the last call, sorted.
    fn sent(rx: &mut futures::channel::mpsc::UnboundedReceiver<ObjectRef<GpuTelemetryPolicy>>) -> Vec<String> {
        let mut names = vec![];
        while let Ok(r) = rx.try_recv() {
            names.push(r.name);
        }
        names.sort();
        names
    }

    fn policy_store(policies: &[Arc<GpuTelemetryPolicy>]) -> Store<GpuTelemetryPolicy> {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::Init);
        for p in policies {
            writer.apply_watcher_event(&watcher::Event::InitApply(p.as_ref().clone()));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        store
    }

    #[test]
    fn only_changes_of_what_is_counted_reconcile_policies() {
        let store = policy_store(&[policy("gpu", true), policy("other", false)]);
        let (mut t, mut rx) = CountTriggers::new(store);
        let apply = |p| watcher::Event::Apply(p);

        t.event(&apply(pipeline(1, Some("other"), None)));
        assert_eq!(sent(&mut rx), ["other"], "a new pipeline");
        // Its status written again and again on its way to Ready: nothing counted changed.
        let mut written = pipeline(1, Some("other"), Some(true));
        t.event(&apply(written.clone()));
        written.metadata.resource_version = Some("200".into());
        t.event(&apply(written));
        assert_eq!(sent(&mut rx), Vec::<String>::new(), "status writes that move no count");
        t.event(&apply(pipeline(1, Some("other"), Some(false))));
        assert_eq!(sent(&mut rx), ["other"], "PolicyCompliant turned False");
        // Moved to the default policy: both counts change.
        t.event(&apply(pipeline(1, None, Some(false))));
        assert_eq!(sent(&mut rx), ["gpu", "other"]);
        t.event(&watcher::Event::Delete(pipeline(1, None, Some(false))));
        assert_eq!(sent(&mut rx), ["gpu"], "a deleted pipeline");
        // A policy the cache does not hold is not asked for.
        t.event(&apply(pipeline(2, Some("missing"), None)));
        assert_eq!(sent(&mut rx), Vec::<String>::new());
    }

    #[test]
    fn a_new_listing_counts_every_pipeline_again_and_ends_with_every_policy() {
        let store = policy_store(&[policy("gpu", true), policy("other", false)]);
        let (mut t, mut rx) = CountTriggers::new(store);
        t.event(&watcher::Event::Apply(pipeline(1, Some("other"), Some(true))));
        assert_eq!(sent(&mut rx), ["other"]);
        // The watch restarts: a pipeline deleted meanwhile is in no event, so every policy is
        // reconciled once the listing is complete.
        t.event(&watcher::Event::<MLObservabilityPipeline>::Init);
        t.event(&watcher::Event::InitApply(pipeline(1, Some("other"), Some(true))));
        assert_eq!(sent(&mut rx), ["other"]);
        t.event(&watcher::Event::<MLObservabilityPipeline>::InitDone);
        assert_eq!(sent(&mut rx), ["gpu", "other"]);
        // The Counted pipelines of shard 0 of several trigger alike.
        t.event(&watcher::Event::Apply(Counted::of(&pipeline(3, None, Some(false)))));
        assert_eq!(sent(&mut rx), ["gpu"]);
    }
}
