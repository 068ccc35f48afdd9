//! The GpuTelemetryPolicy reconciler: the Managed DCGM exporter (DaemonSet, counters ConfigMap,
//! Service in the operator's namespace, owned by the cluster-scoped policy) and the policy's status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
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
use crate::crd::{ExporterStatus, GpuTelemetryPolicy, GpuTelemetryPolicyStatus, PipelineCounts};
use crate::desired::dcgm_exporter;

/// How often a policy's counts are refreshed without any event.
const RESYNC: Duration = Duration::from_secs(300);

pub async fn reconcile(p: Arc<GpuTelemetryPolicy>, ctx: Arc<Ctx>) -> Result<Action> {
    let started = Instant::now();
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
    if result.is_ok() {
        ctx.backoffs.succeeded(p.as_ref());
    }
    result
}

pub fn error_policy(p: Arc<GpuTelemetryPolicy>, e: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(policy = %p.name_any(), reason = e.reason(), error = %e, "reconcile failed");
    if e.is_retryable() {
        Action::requeue(ctx.backoffs.failed(p.as_ref(), Instant::now()))
    } else {
        Action::requeue(RESYNC)
    }
}

async fn reconcile_inner(p: &GpuTelemetryPolicy, ctx: &Ctx) -> Result<Action> {
    let name = p.name_any();
    ctx.pipelines.wait_until_ready().await.ok();
    ctx.policies.wait_until_ready().await.ok();

    // Valid: at most one default policy.
    let other_defaults: Vec<String> = ctx
        .policies
        .state()
        .iter()
        .filter(|x| x.spec.default == Some(true) && x.name_any() != name)
        .map(|x| x.name_any())
        .collect();
    let conflict = p.spec.default == Some(true) && !other_defaults.is_empty();

    // The managed exporter (never from an invalid spec: the running one stays as it is).
    let invalid = crate::crd::validate::validate_policy(p).err();
    let mut exporter = None;
    if invalid.is_none()
        && let Some(x) = dcgm_exporter::from_policy(p, &ctx.desired.operator_namespace)
    {
        let oref = p.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))?;
        let (ds, cm, svc) = dcgm_exporter::build(&x, Some(oref));
        let ns = x.namespace.clone();
        let c = ctx.client.clone();
        let (a1, _) = children::apply(&Api::<ConfigMap>::namespaced(c.clone(), &ns), cm).await?;
        let (a2, _) = children::apply(&Api::<Service>::namespaced(c.clone(), &ns), svc).await?;
        let what = children::describe(&ds);
        let (a3, live) = children::apply(&Api::<DaemonSet>::namespaced(c, &ns), ds).await?;
        for a in [a1, a2, a3] {
            if let Applied::Corrected { field, .. } = &a {
                ctx.metrics.drift("kubernetes", "corrected", 1);
                ctx.event(
                    p,
                    EventType::Normal,
                    reason::DRIFT_CORRECTED,
                    "ApplyChild",
                    format!("{what}: {field} was edited by hand; put back"),
                )
                .await;
            }
        }
        let s = live.status.unwrap_or_default();
        exporter = Some(ExporterStatus {
            desired: s.desired_number_scheduled,
            ready: s.number_ready,
        });
    }

    // Counts.
    let mut selector = p.spec.node_selector.clone().unwrap_or_default();
    if selector.is_empty() {
        selector.insert("nvidia.com/gpu.present".into(), "true".into());
    }
    let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let nodes = Api::<Node>::all(ctx.client.clone())
        .list_metadata(&ListParams::default().labels(&sel.join(",")))
        .await?
        .items
        .len();
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
        gpu_nodes: i32::try_from(nodes).unwrap_or(i32::MAX),
        exporter: exporter.clone(),
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
    let (ready, rr, rm) = match (&exporter, conflict || invalid.is_some()) {
        (_, true) => (
            st::FALSE,
            vr,
            "policy is not valid (see the Valid condition)".to_string(),
        ),
        (Some(x), false) if x.ready < x.desired => (
            st::FALSE,
            reason::ROLLING_OUT,
            format!("{}/{} DCGM exporter pods ready", x.ready, x.desired),
        ),
        (Some(x), false) => (
            st::TRUE,
            reason::RECONCILED,
            format!("{}/{} DCGM exporter pods ready", x.ready, x.desired),
        ),
        (None, false) => (
            st::TRUE,
            reason::RECONCILED,
            "uses an existing DCGM exporter (External)".to_string(),
        ),
    };
    conditions::upsert(
        &mut s.conditions,
        conditions::condition(ty::READY, ready, rr, rm, g, t.clone()),
    );
    conditions::set_kstatus(&mut s.conditions, g, t);
    if s != old {
        let api: Api<GpuTelemetryPolicy> = Api::all(ctx.client.clone());
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": s})))
            .await?;
    }
    Ok(Action::requeue(RESYNC))
}
