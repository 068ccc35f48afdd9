//! The GpuTelemetryPolicy reconciler: the Managed DCGM exporter (DaemonSet, counters ConfigMap,
//! Service in the operator's namespace, owned by the cluster-scoped policy) and the policy's status.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::children::{self, Applied};
use super::error::{Error, Result};
use super::lookup::{Governing, governing};
use super::{Ctx, now};
use crate::crd::conditions::{self, pipeline as pty, policy as ty, reason, status as st};
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
    let name = p.name_any();
    if !ctx.caches_synced().await {
        return Ok(Action::await_change());
    }

    // Valid: at most one default policy.
    let other_defaults: Vec<String> = ctx
        .policies
        .state()
        .iter()
        .filter(|x| x.spec.default == Some(true) && x.name_any() != name)
        .map(|x| x.name_any())
        .collect();
    let conflict = p.spec.default == Some(true) && !other_defaults.is_empty();

    // The GPU nodes.
    let mut selector = p.spec.node_selector.clone().unwrap_or_default();
    if selector.is_empty() {
        selector = crate::conventions::default_gpu_node_selector();
    }
    let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let nodes: BTreeSet<String> = Api::<Node>::all(ctx.client.clone())
        .list_metadata(&ListParams::default().labels(&sel.join(",")))
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();

    // The exporter (never from an invalid spec: what runs stays as it is).
    let invalid = crate::crd::validate::validate_policy(p).err();
    let source = if invalid.is_some() {
        None
    } else {
        Some(metrics_source(p, ctx, &nodes).await?)
    };

    // Counts.
    let policies = ctx.policies.state();
    let governed: Vec<_> = ctx
        .pipelines
        .state()
        .into_iter()
        .filter(|x| matches!(governing(x, &policies), Governing::One(g) if g.name_any() == name))
        .collect();
    let non_compliant = governed
        .iter()
        .filter(|x| {
            x.status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, pty::POLICY_COMPLIANT))
                .is_some_and(|c| c.status == st::FALSE)
        })
        .count();

    let old = p.status.clone().unwrap_or_default();
    let mut s = GpuTelemetryPolicyStatus {
        observed_generation: p.meta().generation,
        conditions: old.conditions.clone(),
        gpu_nodes: i32::try_from(nodes.len()).unwrap_or(i32::MAX),
        exporter: source.as_ref().map(|x| x.rollout.clone()),
        pipelines: Some(PipelineCounts {
            total: i32::try_from(governed.len()).unwrap_or(i32::MAX),
            non_compliant: i32::try_from(non_compliant).unwrap_or(i32::MAX),
        }),
    };
    let g = p.meta().generation;
    let t = now();
    let (valid, vr, vm) = if let Some(inv) = &invalid {
        (st::FALSE, reason::INVALID_SPEC, format!("invalid spec:{inv}"))
    } else if conflict {
        (
            st::FALSE,
            reason::DEFAULT_CONFLICT,
            format!("another policy also says default: true: {}", other_defaults.join(", ")),
        )
    } else {
        (st::TRUE, reason::VALID, "policy is valid".to_string())
    };
    conditions::upsert(
        &mut s.conditions,
        conditions::condition(ty::VALID, valid, vr, vm, g, t.clone()),
    );
    if let Some(x) = &source {
        conditions::upsert(
            &mut s.conditions,
            conditions::condition(
                ty::METRICS_SOURCE_READY,
                x.status,
                x.reason,
                x.message.clone(),
                g,
                t.clone(),
            ),
        );
    }
    let (ready, rr, rm) = match (&source, conflict || invalid.is_some()) {
        (_, true) => (
            st::FALSE,
            vr,
            "policy is not valid (see the Valid condition)".to_string(),
        ),
        (Some(x), false) if x.status != st::TRUE => (st::FALSE, x.reason, x.message.clone()),
        (Some(x), false) => (st::TRUE, reason::RECONCILED, x.message.clone()),
        (None, false) => (st::TRUE, reason::RECONCILED, "policy is valid".to_string()),
    };
    conditions::upsert(
        &mut s.conditions,
        conditions::condition(ty::READY, ready, rr, rm.clone(), g, t.clone()),
    );
    conditions::set_kstatus(&mut s.conditions, g, t);
    if s != old {
        let api: Api<GpuTelemetryPolicy> = Api::all(ctx.client.clone());
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": s})))
            .await?;
    }
    // Nothing watches External exporter pods or a missing namespace: look again soon.
    let waiting = source.as_ref().is_some_and(|x| x.status != st::TRUE);
    let requeue = if waiting { WAITING_RECHECK } else { RESYNC };
    // An invalid or conflicting policy is a failed reconcile (result="error" with its reason),
    // requeued without backoff: it waits for a change.
    match Reason::parse(rr).filter(|r| ready == st::FALSE && r.is_terminal()) {
        Some(reason) => Err(Error::Stopped {
            reason,
            message: rm,
            requeue,
        }),
        None => Ok(Action::requeue(requeue)),
    }
}

/// How soon a policy waiting on exporter pods or a namespace looks again.
const WAITING_RECHECK: Duration = Duration::from_secs(30);

/// The DCGM exporter as this reconcile left it, for status.
struct Source {
    rollout: ExporterStatus,
    status: &'static str,
    reason: &'static str,
    message: String,
}

/// Managed: applies the exporter's ConfigMap, Service and DaemonSet. Both modes: deletes the
/// exporter objects this policy owns and no longer wants (a switch to External, a new namespace),
/// and reports how many GPU nodes have an exporter pod.
async fn metrics_source(p: &GpuTelemetryPolicy, ctx: &Ctx, nodes: &BTreeSet<String>) -> Result<Source> {
    let c = ctx.client.clone();
    let name = p.name_any();
    let uid = p.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let selector = crate::conventions::policy_selector(&name);
    let gpu = i32::try_from(nodes.len()).unwrap_or(i32::MAX);
    let Some(x) = dcgm_exporter::from_policy(p, &ctx.desired.operator_namespace) else {
        // External: mlobs runs no exporter.
        let pruned = prune_exporter(ctx, &selector, &[], &uid).await?;
        ctx.pruned(p, &pruned).await;
        let spec = p.spec.dcgm_exporter.clone().unwrap_or_default();
        let ns = spec.namespace.unwrap_or_default();
        let labels = spec.pod_selector.unwrap_or_default();
        let pod_sel: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let pod_sel = pod_sel.join(",");
        let pods = Api::<Pod>::namespaced(c, &ns)
            .list(&ListParams::default().labels(&pod_sel))
            .await?;
        let on: BTreeSet<&str> = pods
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()))
            .filter(|n| nodes.contains(*n))
            .collect();
        let ready = i32::try_from(on.len()).unwrap_or(i32::MAX);
        let rollout = ExporterStatus { desired: gpu, ready };
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
                    "no running pod in namespace {ns} matches {pod_sel} on the GPU nodes: collectors have no DCGM exporter to scrape"
                ),
            )
        } else {
            (
                st::TRUE,
                reason::RECONCILED,
                format!("{ready}/{gpu} GPU nodes run an existing DCGM exporter pod ({pod_sel} in namespace {ns})"),
            )
        };
        return Ok(Source {
            rollout,
            status,
            reason,
            message,
        });
    };

    if Api::<Namespace>::all(c.clone()).get_opt(&x.namespace).await?.is_none() {
        // What runs elsewhere keeps running until the exporter can move.
        return Ok(Source {
            rollout: ExporterStatus::default(),
            status: st::FALSE,
            reason: reason::NAMESPACE_NOT_FOUND,
            message: format!("dcgmExporter.namespace {:?} does not exist", x.namespace),
        });
    }
    let oref = p.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))?;
    let (ds, cm, svc) = dcgm_exporter::build(&x, Some(oref));
    let ns = x.namespace.clone();
    let keep = [
        children::describe(&ds),
        children::describe(&cm),
        children::describe(&svc),
    ];
    let what = children::describe(&ds);
    let (a1, _) = children::apply(&Api::<ConfigMap>::namespaced(c.clone(), &ns), cm, &ctx.applied).await?;
    let (a2, _) = children::apply(&Api::<Service>::namespaced(c.clone(), &ns), svc, &ctx.applied).await?;
    let (a3, live) = children::apply(&Api::<DaemonSet>::namespaced(c, &ns), ds, &ctx.applied).await?;
    for a in [a1, a2, a3] {
        if let Applied::Corrected { field, .. } = &a {
            ctx.metrics.drift("kubernetes", "corrected", 1);
            ctx.event(
                p,
                EventType::Normal,
                Reason::DriftCorrected,
                "ApplyChild",
                format!("{what}: {field} was edited by hand; put back"),
            )
            .await;
        }
    }
    let pruned = prune_exporter(ctx, &selector, &keep, &uid).await?;
    ctx.pruned(p, &pruned).await;
    let ds_status = live.status.clone().unwrap_or_default();
    let rollout = ExporterStatus {
        desired: ds_status.desired_number_scheduled,
        ready: ds_status.number_ready,
    };
    let observed = ds_status.observed_generation >= live.metadata.generation;
    let msg = format!("{}/{} DCGM exporter pods ready", rollout.ready, rollout.desired);
    let (status, reason) = if rollout.desired == 0 && observed {
        (st::TRUE, reason::NO_GPU_NODES)
    } else if observed && rollout.ready == rollout.desired {
        (st::TRUE, reason::RECONCILED)
    } else {
        (st::FALSE, reason::ROLLING_OUT)
    };
    Ok(Source {
        rollout,
        status,
        reason,
        message: msg,
    })
}

/// Deletes the policy's exporter objects (DaemonSet, ConfigMap, Service, in any namespace) that
/// are not in `keep`.
async fn prune_exporter(ctx: &Ctx, selector: &str, keep: &[String], uid: &str) -> Result<Vec<String>> {
    let c = &ctx.client;
    let owner = children::Owner {
        uid,
        only_unowned: false,
    };
    let mut pruned = children::prune_everywhere::<DaemonSet>(c, selector, keep, &owner).await?;
    pruned.extend(children::prune_everywhere::<ConfigMap>(c, selector, keep, &owner).await?);
    pruned.extend(children::prune_everywhere::<Service>(c, selector, keep, &owner).await?);
    for key in &pruned {
        ctx.applied.forget(key);
    }
    Ok(pruned)
}
