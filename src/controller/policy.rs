//! The GpuTelemetryPolicy reconciler: the Managed DCGM exporter (DaemonSet, counters ConfigMap,
//! Service in the operator's namespace, owned by the cluster-scoped policy) and the policy's
//! status. The same typed steps as the pipeline's: 1. [`dereference`] (reads only: other default
//! policies, governed pipelines, GPU nodes, the exporter's namespace) → 2. [`plan`] (pure:
//! validity, the exporter child set or the existing exporter to look for) → 3. [`apply_children`]
//! (the one applier: apply, then prune; under External the empty set prunes the exporter; an
//! invalid spec touches nothing) → 4. [`observe`] (rollout or existing pods) → 5. [`status`]
//! (pure, clock passed in) and its write.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::applier::{self, Child, ChildSet, Kind, SetOwner};
use super::counted;
use super::error::{Error, Result};
use super::{Ctx, now};
use crate::crd::conditions::{self, policy as ty, reason, status as st};
use crate::crd::reason::Reason;
use crate::crd::{ExporterStatus, GpuTelemetryPolicy, GpuTelemetryPolicyStatus, PipelineCounts};
use crate::desired::dcgm_exporter;

/// How often a policy's counts are refreshed without any event.
const RESYNC: Duration = Duration::from_secs(300);

pub async fn reconcile(p: Arc<GpuTelemetryPolicy>, ctx: Arc<Ctx>) -> Result<Action> {
    let started = Instant::now();
    // Inside kube-runtime's span, which names the object and why it is reconciled.
    tracing::debug!("reconcile");
    // Re-triggered by our own status write during a backoff: wait out the rest of it.
    if let Some(wait) = ctx.backoffs.waiting(p.as_ref(), started) {
        return Ok(Action::requeue(wait));
    }
    let result = reconcile_inner(&p, &ctx).await;
    ctx.metrics.reconcile_done(
        "policy",
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(Error::reason),
    );
    if matches!(result, Ok(_) | Err(Error::Stopped { .. })) {
        ctx.backoffs.succeeded(p.as_ref());
    }
    result
}

pub fn error_policy(p: Arc<GpuTelemetryPolicy>, e: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(policy = %p.name_any(), reason = e.reason().as_str(), error = %e, "reconcile failed");
    match e {
        Error::Stopped { requeue, .. } => Action::requeue(*requeue),
        e if e.is_retryable() => Action::requeue(ctx.backoffs.failed(p.as_ref(), Instant::now())),
        _ => Action::requeue(RESYNC),
    }
}

async fn reconcile_inner(p: &GpuTelemetryPolicy, ctx: &Ctx) -> Result<Action> {
    if !ctx.caches_synced().await {
        return Ok(Action::await_change());
    }
    // 1. dereference (reads only)
    let world = dereference(p, ctx).await?;
    // 2. plan (pure)
    let plan = plan(p, &world, &ctx.desired.operator_namespace);
    // 3. children: the Managed exporter, pruned of what is no longer wanted
    let live = match &plan.exporter {
        Exporter::Managed(set) => apply_children(p, ctx, set.clone()).await?,
        Exporter::External { .. } => {
            // mlobs runs no exporter: the whole set of this policy's exporter objects goes.
            apply_children(p, ctx, exporter_set(p, vec![])?).await?;
            None
        }
        Exporter::Untouched | Exporter::NamespaceMissing(_) => None,
    };
    // 4. observe
    let source = observe(ctx, &plan.exporter, &world, live.as_ref()).await?;
    // 5. status (pure) and its write
    let (s, stop) = status(p, &world, &plan, source.as_ref(), now());
    if Some(&s) != p.status.as_ref() {
        let api: Api<GpuTelemetryPolicy> = Api::all(ctx.client.clone());
        api.patch_status(
            &p.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": s})),
        )
        .await?;
    }
    // Nothing watches External exporter pods or a missing namespace: look again soon.
    let waiting = source.as_ref().is_some_and(|x| x.status != st::TRUE);
    let requeue = if waiting { WAITING_RECHECK } else { RESYNC };
    // An invalid or conflicting policy is a failed reconcile (result="error" with its reason),
    // requeued without backoff: it waits for a change.
    match stop {
        Some((reason, message)) => Err(Error::Stopped {
            reason,
            message,
            requeue,
        }),
        None => Ok(Action::requeue(requeue)),
    }
}

/// How soon a policy waiting on exporter pods or a namespace looks again.
const WAITING_RECHECK: Duration = Duration::from_secs(30);

/// Step 1: what the plan decides from.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Other policies that say `default: true`.
    pub other_defaults: Vec<String>,
    /// The GPU nodes (the policy's node selector, else the default one).
    pub nodes: BTreeSet<String>,
    /// Pipelines this policy governs, and how many of them are not compliant.
    pub governed: usize,
    pub non_compliant: usize,
    /// Whether the Managed exporter's namespace exists (`true` when not Managed).
    pub exporter_namespace_exists: bool,
}

async fn dereference(p: &GpuTelemetryPolicy, ctx: &Ctx) -> Result<World> {
    let name = p.name_any();
    let policies = ctx.policies.state();
    let other_defaults = policies
        .iter()
        .filter(|x| x.spec.default == Some(true) && x.name_any() != name)
        .map(|x| x.name_any())
        .collect();
    let mut selector = p.spec.node_selector.clone().unwrap_or_default();
    if selector.is_empty() {
        selector = crate::conventions::default_gpu_node_selector();
    }
    let nodes = super::nodes_matching(ctx, &selector)
        .await?
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    // Every pipeline of the cluster, not only this shard's (shard 0 runs the policies).
    let (governed, non_compliant) = match &ctx.counted_pipelines {
        Some(all) => counted::count_in(all, &policies, &name),
        None => counted::count_whole(&ctx.pipelines.state(), &policies, &name),
    };
    let exporter_namespace_exists = match dcgm_exporter::from_policy(p, &ctx.desired.operator_namespace) {
        Some(x) => super::shared_reads::namespace(&ctx.client, &ctx.namespaces, &x.namespace)
            .await?
            .is_some(),
        None => true,
    };
    Ok(World {
        other_defaults,
        nodes,
        governed,
        non_compliant,
        exporter_namespace_exists,
    })
}

/// What the policy asks of the exporter.
#[derive(Debug, Clone)]
pub enum Exporter {
    /// mlobs runs the exporter: its ConfigMap, Service and DaemonSet.
    Managed(ChildSet),
    /// An existing exporter (e.g. gpu-operator's): the pods to look for.
    External { namespace: String, selector: String },
    /// The Managed exporter's namespace does not exist: what runs elsewhere keeps running.
    NamespaceMissing(String),
    /// The spec is invalid: what runs stays as it is.
    Untouched,
}

/// Step 2 (pure).
#[derive(Debug, Clone)]
pub struct Plan {
    /// The validation errors, when the spec is invalid.
    pub invalid: Option<String>,
    pub exporter: Exporter,
}

pub fn plan(p: &GpuTelemetryPolicy, world: &World, operator_namespace: &str) -> Plan {
    let invalid = crate::crd::validate::validate_policy(p)
        .err()
        .map(|inv| inv.to_string());
    let exporter = if invalid.is_some() {
        Exporter::Untouched
    } else {
        match dcgm_exporter::from_policy(p, operator_namespace) {
            None => {
                let spec = p.spec.dcgm_exporter.clone().unwrap_or_default();
                Exporter::External {
                    namespace: spec.namespace.unwrap_or_default(),
                    selector: crate::conventions::selector_string(&spec.pod_selector.unwrap_or_default()),
                }
            }
            Some(x) if !world.exporter_namespace_exists => Exporter::NamespaceMissing(x.namespace),
            Some(x) => {
                let (ds, cm, svc) = dcgm_exporter::build(&x, p.controller_owner_ref(&()));
                match exporter_set(p, vec![Child::ConfigMap(cm), Child::Service(svc), Child::DaemonSet(ds)]) {
                    Ok(set) => Exporter::Managed(set),
                    Err(_) => Exporter::Untouched,
                }
            }
        }
    };
    Plan { invalid, exporter }
}

/// The kinds of a policy's children: what a prune lists.
const CHILD_KINDS: &[Kind] = &[Kind::DaemonSet, Kind::ConfigMap, Kind::Service];

/// The policy's exporter objects as a child set (the owner reference is valid in any namespace:
/// the policy is cluster-scoped).
fn exporter_set(p: &GpuTelemetryPolicy, children: Vec<Child>) -> Result<ChildSet> {
    let name = p.name_any();
    let owner = SetOwner {
        name: name.clone(),
        uid: p.uid().ok_or(Error::MissingField("metadata.uid"))?,
        reference: p.controller_owner_ref(&()),
        ref_namespace: None,
    };
    Ok(ChildSet::new(
        crate::conventions::policy_selector(&name),
        CHILD_KINDS,
        owner,
        children,
    ))
}

/// Step 3: applies the set and prunes; returns the live exporter DaemonSet.
async fn apply_children(p: &GpuTelemetryPolicy, ctx: &Ctx, set: ChildSet) -> Result<Option<DaemonSet>> {
    let report = applier::apply(&ctx.client, &ctx.applied, &ctx.child_stores, set).await?;
    ctx.report_applied(p, &report).await;
    Ok(report.daemon_set)
}

/// The DCGM exporter as this reconcile left it, for status.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub rollout: ExporterStatus,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// Step 4: the exporter's rollout (Managed) or the existing exporter's pods on the GPU nodes
/// (External); `None` for an invalid spec.
async fn observe(ctx: &Ctx, exporter: &Exporter, world: &World, live: Option<&DaemonSet>) -> Result<Option<Source>> {
    Ok(match exporter {
        Exporter::Untouched => None,
        Exporter::NamespaceMissing(ns) => Some(Source {
            rollout: ExporterStatus::default(),
            status: st::FALSE,
            reason: reason::NAMESPACE_NOT_FOUND,
            message: format!("dcgmExporter.namespace {ns:?} does not exist"),
        }),
        Exporter::Managed(_) => live.map(managed_source),
        Exporter::External { namespace, selector } => {
            let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
                .list(&ListParams::default().labels(selector))
                .await?;
            let running = super::shared_reads::running_nodes(&pods.items);
            let ready = world.nodes.iter().filter(|n| running.contains(*n)).count();
            Some(external_source(namespace, selector, world.nodes.len(), ready))
        }
    })
}

fn managed_source(live: &DaemonSet) -> Source {
    let s = live.status.clone().unwrap_or_default();
    let rollout = ExporterStatus {
        desired: s.desired_number_scheduled,
        ready: s.number_ready,
    };
    let observed = s.observed_generation >= live.metadata.generation;
    let message = format!("{}/{} DCGM exporter pods ready", rollout.ready, rollout.desired);
    let (status, reason) = if rollout.desired == 0 && observed {
        (st::TRUE, reason::NO_GPU_NODES)
    } else if observed && rollout.ready == rollout.desired {
        (st::TRUE, reason::RECONCILED)
    } else {
        (st::FALSE, reason::ROLLING_OUT)
    };
    Source {
        rollout,
        status,
        reason,
        message,
    }
}

fn external_source(ns: &str, selector: &str, gpu: usize, ready: usize) -> Source {
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let rollout = ExporterStatus {
        desired: count(gpu),
        ready: count(ready),
    };
    let (status, reason, message) = if gpu == 0 {
        (
            st::TRUE,
            reason::NO_GPU_NODES,
            "no GPU node yet: nothing to scrape".to_string(),
        )
    } else if ready == 0 {
        (
            st::FALSE,
            reason::NO_EXPORTER_PODS,
            format!(
                "no running pod in namespace {ns} matches {selector} on the GPU nodes: collectors have no DCGM exporter to scrape"
            ),
        )
    } else {
        (
            st::TRUE,
            reason::RECONCILED,
            format!("{ready}/{gpu} GPU nodes run an existing DCGM exporter pod ({selector} in namespace {ns})"),
        )
    };
    Source {
        rollout,
        status,
        reason,
        message,
    }
}

/// Step 5 (pure, clock passed in): the new status, and the terminal reason when the policy
/// cannot be used as it is.
pub fn status(
    p: &GpuTelemetryPolicy,
    world: &World,
    plan: &Plan,
    source: Option<&Source>,
    t: Time,
) -> (GpuTelemetryPolicyStatus, Option<(Reason, String)>) {
    let old = p.status.clone().unwrap_or_default();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let mut s = GpuTelemetryPolicyStatus {
        observed_generation: p.meta().generation,
        conditions: old.conditions.clone(),
        gpu_nodes: count(world.nodes.len()),
        exporter: source.map(|x| x.rollout.clone()),
        pipelines: Some(PipelineCounts {
            total: count(world.governed),
            non_compliant: count(world.non_compliant),
        }),
    };
    let g = p.meta().generation;
    let conflict = p.spec.default == Some(true) && !world.other_defaults.is_empty();
    let (valid, vr, vm) = if let Some(inv) = &plan.invalid {
        (st::FALSE, reason::INVALID_SPEC, format!("invalid spec:{inv}"))
    } else if conflict {
        let others = world.other_defaults.join(", ");
        (
            st::FALSE,
            reason::DEFAULT_CONFLICT,
            format!("another policy also says default: true: {others}"),
        )
    } else {
        (st::TRUE, reason::VALID, "policy is valid".to_string())
    };
    let set = |s: &mut GpuTelemetryPolicyStatus, ty: &str, status, r, m| {
        conditions::upsert(&mut s.conditions, conditions::condition(ty, status, r, m, g, t.clone()));
    };
    set(&mut s, ty::VALID, valid, vr, vm);
    if let Some(x) = source {
        set(&mut s, ty::METRICS_SOURCE_READY, x.status, x.reason, x.message.clone());
    }
    let (ready, rr, rm) = match source {
        _ if valid == st::FALSE => (
            st::FALSE,
            vr,
            "policy is not valid (see the Valid condition)".to_string(),
        ),
        Some(x) if x.status != st::TRUE => (st::FALSE, x.reason, x.message.clone()),
        Some(x) => (st::TRUE, reason::RECONCILED, x.message.clone()),
        None => (st::TRUE, reason::RECONCILED, "policy is valid".to_string()),
    };
    set(&mut s, ty::READY, ready, rr, rm.clone());
    conditions::set_kstatus(&mut s.conditions, g, t.clone());
    let stop = Reason::parse(rr).filter(|r| ready == st::FALSE && r.is_terminal());
    (s, stop.map(|r| (r, rm)))
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
