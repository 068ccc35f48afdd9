//! What a GpuTelemetryPolicy's counts (`status.pipelines`) read of a pipeline: which policy it
//! names and whether its `PolicyCompliant` condition is False. A sharded shard 0 runs the policies
//! and so needs every pipeline of the cluster, not only its shard's: it keeps each as a
//! [`Counted`] (735 bytes instead of 7.4 KB for a pipeline with its status written; see
//! `tests/cache_memory.rs`), so its memory still follows its own shard.

use std::borrow::Cow;
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::watcher;
use kube::{Client, Resource};

use super::lookup::{Governing, governing_ref};
use crate::crd::conditions::{self, pipeline as pty, status as st};
use crate::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};

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

impl Resource for Counted {
    type DynamicType = ();
    type Scope = <MLObservabilityPipeline as Resource>::Scope;
    fn kind(_: &()) -> Cow<'_, str> {
        MLObservabilityPipeline::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        MLObservabilityPipeline::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        MLObservabilityPipeline::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        MLObservabilityPipeline::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

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

/// [`count_governed`] over whole pipelines.
pub fn count_whole(
    pipelines: &[Arc<MLObservabilityPipeline>],
    policies: &[Arc<GpuTelemetryPolicy>],
    name: &str,
) -> (usize, usize) {
    count_governed(
        pipelines
            .iter()
            .map(|p| (p.spec.policy_ref.as_deref(), non_compliant(p))),
        policies,
        name,
    )
}

/// A cache of every pipeline of the cluster as [`Counted`]: (the store, the future that keeps it
/// filled).
pub fn watch(client: Client) -> (Store<Counted>, impl std::future::Future<Output = ()> + Send + 'static) {
    let (reader, writer) = reflector::store();
    let events = counted_events(super::lean::watch::<MLObservabilityPipeline>(
        client,
        watcher::Config::default(),
    ));
    (
        reader,
        reflector(writer, events).for_each(|_| futures::future::ready(())),
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
}
