//! The MLObservabilityPipeline reconciler: dereference → merge/validate → build → apply (AWS,
//! then Kubernetes children) → status. See ../STYLE.md's "shape of a reconcile".

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::children::{self, Applied};
use super::dataflow::{self, DataFlowObs, GroupReading};
use super::error::{Error, Result};
use super::lookup::{self, Governing, governing, key_id_of};
use super::status::{self, AwsResult, MetricsSource, Observed};
use super::{Ctx, jittered};
use crate::aws::apply::{ApplyOptions, delete_all, ensure_all};
use crate::aws::{Drift, Owner};
use crate::crd::MLObservabilityPipeline;
use crate::crd::conditions::{self, pipeline as pty, reason};
use crate::crd::reason::Reason;
use crate::desired::aws_plan::KmsKeyPlan;
use crate::desired::{self, Desired};

/// Finalizer that keeps a pipeline until its AWS resources are handled per deletionPolicy.
pub const FINALIZER: &str = "mlobs.io/aws-cleanup";
/// Annotation that opts a pipeline into adopting existing, untagged AWS resources.
pub const ADOPT_ANNOTATION: &str = crate::conventions::ADOPT_ANNOTATION;
/// Annotation whose change forces a full reconcile, AWS included, now (as Flux's
/// `reconcile.fluxcd.io/requestedAt`): `kubectl annotate mlop x mlobs.io/reconcile-requested-at="$(date +%s)" --overwrite`.
pub const RECONCILE_REQUESTED_ANNOTATION: &str = "mlobs.io/reconcile-requested-at";
/// How soon a pipeline waiting on something no watch reports (exporter pods, Pod Security) looks again.
const WAITING_RECHECK_MS: u64 = 30_000;

fn owner(d: &Desired) -> Owner {
    Owner {
        cluster: d.effective.cluster_name.clone(),
        pipeline: d.effective.pipeline_id(),
    }
}

fn adopt(p: &MLObservabilityPipeline, d: &Desired) -> bool {
    d.effective.adopt || p.annotations().get(ADOPT_ANNOTATION).is_some_and(|v| v == "true")
}

/// Fingerprint of what AWS should look like: the plan, the spec generation (drift policy and
/// adoption are not in the plan) and a requested reconcile. A change means ensure AWS now.
fn plan_fingerprint(p: &MLObservabilityPipeline, d: &Desired) -> String {
    let requested = p
        .annotations()
        .get(RECONCILE_REQUESTED_ANNOTATION)
        .map_or("", String::as_str);
    let adopt = p.annotations().get(ADOPT_ANNOTATION).map_or("", String::as_str);
    format!(
        "{}|{requested}|{adopt}|{}",
        p.meta().generation.unwrap_or_default(),
        serde_json::to_string(&d.aws).unwrap_or_default()
    )
}

pub async fn reconcile(p: Arc<MLObservabilityPipeline>, ctx: Arc<Ctx>) -> Result<Action> {
    let started = Instant::now();
    // Inside kube-runtime's span, which names the object and why it is reconciled.
    tracing::debug!("reconcile");
    // Re-triggered by our own status write during a backoff: wait out the rest of it.
    if let Some(wait) = ctx.backoffs.waiting(p.as_ref(), started) {
        return Ok(Action::requeue(wait));
    }
    let result = reconcile_inner(&p, &ctx).await;
    ctx.metrics.reconcile_done(
        "pipeline",
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(Error::reason),
    );
    // A terminal stop is no retry streak: the next change of the object is acted on at once.
    if matches!(result, Ok(_) | Err(Error::Stopped { .. })) {
        ctx.backoffs.succeeded(p.as_ref());
    }
    result
}

/// Retryable errors back off; terminal ones wait for a spec change (or the periodic resync).
pub fn error_policy(p: Arc<MLObservabilityPipeline>, e: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(pipeline = %p.name_any(), namespace = p.namespace().unwrap_or_default(), reason = e.reason().as_str(), error = %e, "reconcile failed");
    match e {
        Error::Stopped { requeue, .. } => Action::requeue(*requeue),
        e if e.is_retryable() => Action::requeue(ctx.backoffs.failed(p.as_ref(), Instant::now())),
        _ => Action::requeue(Duration::from_secs(600)),
    }
}

async fn reconcile_inner(p: &MLObservabilityPipeline, ctx: &Ctx) -> Result<Action> {
    let ns = p.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<MLObservabilityPipeline> = Api::namespaced(ctx.client.clone(), &ns);

    // dereference
    if !ctx.caches_synced().await {
        return Ok(Action::await_change());
    }
    let policies = ctx.policies.state();
    let gov = governing(p, &policies);

    if p.meta().deletion_timestamp.is_some() {
        return cleanup(p, ctx, &api, &gov).await;
    }
    if !p.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = p.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": p.resource_version()}});
        api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        // The patch triggers a new reconcile with the finalizer in place.
        return Ok(Action::await_change());
    }

    let mut obs = Observed::new(p);
    let policy = match &gov {
        Governing::None => None,
        Governing::One(x) => Some(x.as_ref()),
        Governing::NotFound(name) => {
            obs.blocked(
                reason::POLICY_NOT_FOUND,
                format!("spec.policyRef: GpuTelemetryPolicy {name:?} does not exist"),
            );
            return finish(p, ctx, &api, obs, None).await;
        }
        Governing::DefaultConflict(names) => {
            obs.blocked(
                reason::DEFAULT_CONFLICT,
                format!(
                    "spec.policyRef is absent and several policies say default: true: {}",
                    names.join(", ")
                ),
            );
            return finish(p, ctx, &api, obs, None).await;
        }
    };
    obs.policy = policy.map(|x| (x.name_any(), x.meta().generation));

    // validate (the same rules as admission and the CLI), merge, build
    if let Err(inv) = crate::crd::validate::validate_pipeline(p) {
        obs.invalid(reason::INVALID_SPEC, format!("invalid spec:{inv}"));
        return finish(p, ctx, &api, obs, None).await;
    }
    if let Some(pol) = policy
        && let Err(inv) = crate::crd::validate::validate_policy(pol)
    {
        obs.blocked(
            reason::INVALID_SPEC,
            format!("GpuTelemetryPolicy {} is invalid:{inv}", pol.name_any()),
        );
        return finish(p, ctx, &api, obs, None).await;
    }
    let d = match desired::build(p, policy, &ctx.desired) {
        Ok(d) => d,
        Err(e) => {
            obs.invalid(e.reason().as_str(), e.to_string());
            return finish(p, ctx, &api, obs, None).await;
        }
    };
    obs.config_hash = Some(d.config_hash.clone());

    // the fleet the collector runs on, for the live estimate and the budget
    let nodes = gpu_nodes(ctx, &d).await?;
    obs.telemetry(&d, &nodes, &ctx.prices);
    let mut violations: Vec<String> = d.violations.iter().map(ToString::to_string).collect();
    if let Some(e) = &obs.estimate
        && let Some((action, msg)) = lookup::budget_exceeded(&d, e, nodes.len())
    {
        match action {
            crate::crd::BudgetAction::Deny => violations.push(msg),
            crate::crd::BudgetAction::Warn => obs.budget_warning = Some(msg),
        }
    }
    if !violations.is_empty() {
        // Nothing new is created or changed; what runs keeps running.
        obs.violations = violations;
        return finish(p, ctx, &api, obs, Some(&d)).await;
    }

    // apply: AWS first, in dependency order
    let due = aws_due(p, ctx, &d);
    if due {
        let recorded = p.status.as_ref().and_then(|s| s.aws.clone()).unwrap_or_default();
        let known_key_id = recorded.kms_key_arn.as_deref().and_then(key_id_of);
        let scan_for_key = recorded.kms_key_create_started.is_some();
        if matches!(d.aws.kms, Some(KmsKeyPlan::Create { .. })) && known_key_id.is_none() && !scan_for_key {
            // Recorded before CreateKey: after a crash between CreateKey and the status write, the
            // next reconcile knows to look for the key by its tags instead of creating another.
            let patch = json!({"status": {"aws": {"kmsKeyCreateStarted": super::now().0.to_string()}}});
            api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        // A resync (AWS already ready) reads the cluster's log groups from a shared snapshot.
        let prefix = format!("/aws/eks/{}/", d.effective.cluster_name);
        let snapshot = if Observed::new(p).aws_ready(p) && d.aws.log_groups.iter().all(|g| g.name.starts_with(&prefix))
        {
            ctx.log_group_snapshot(&prefix).await
        } else {
            None
        };
        let opts = ApplyOptions {
            owner: owner(&d),
            adopt: adopt(p, &d),
            drift: d.effective.drift_policy,
            known_key_id,
            scan_for_key,
            log_group_snapshot: snapshot,
        };
        match ensure_all(&ctx.aws, &d.aws, &opts).await {
            Ok(out) => {
                if out.drift.iter().any(|x| x.corrected) || !Observed::new(p).aws_ready(p) {
                    ctx.invalidate_log_groups().await;
                }
                let ready = out.ready(&d.aws);
                ctx.metrics.drift("aws", "found", out.drift.len() as u64);
                ctx.metrics.drift(
                    "aws",
                    "corrected",
                    out.drift.iter().filter(|x| x.corrected).count() as u64,
                );
                for x in &out.drift {
                    drift_event(ctx, p, x).await;
                }
                obs.aws = Some(AwsResult::Ok {
                    out: Box::new(out),
                    ready,
                });
                if ready {
                    ctx.mark_aws_synced(p, plan_fingerprint(p, &d));
                }
            }
            Err(e) => {
                let retryable = e.error.is_retryable();
                ctx.event(p, EventType::Warning, e.error.reason(), "EnsureAws", e.to_string())
                    .await;
                obs.aws = Some(AwsResult::Failed(Box::new(e.clone())));
                finish(p, ctx, &api, obs, Some(&d)).await?;
                if retryable {
                    return Err(Error::Aws(e));
                }
                return Ok(Action::requeue(jittered(d.effective.resync_interval_ms, p)));
            }
        }
    }
    if !obs.aws_ready(p) {
        return finish(p, ctx, &api, obs, Some(&d)).await;
    }

    // apply: Kubernetes children, collector last
    let collector_ns = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&d.effective.collector_namespace)
        .await?;
    let Some(collector_ns) = collector_ns else {
        obs.collector_blocked = Some((
            reason::NAMESPACE_NOT_FOUND,
            format!(
                "the collector's namespace {:?} (GpuTelemetryPolicy spec.collectorNamespace) does not exist",
                d.effective.collector_namespace
            ),
        ));
        return finish(p, ctx, &api, obs, Some(&d)).await;
    };
    let ds = apply_children(p, ctx, &d, &mut obs).await?;
    obs.collector(&ds);
    obs.collector_blocked = collector_forbidden(ctx, &collector_ns, &ds)
        .await?
        .map(|m| (reason::POD_SECURITY_FORBIDDEN, m));
    obs.metrics_source = Some(metrics_source(ctx, &d, &nodes).await?);
    check_data_flow(p, ctx, &d, &mut obs, due).await;
    if let Some(msg) = &obs.budget_warning
        && !status::was_budget_warned(p)
    {
        ctx.event(
            p,
            EventType::Warning,
            Reason::BudgetExceeded,
            "CheckBudget",
            msg.clone(),
        )
        .await;
    }
    finish(p, ctx, &api, obs, Some(&d)).await
}

/// Whether the AWS side must be ensured now: never ensured for this plan, or the resync is due.
fn aws_due(p: &MLObservabilityPipeline, ctx: &Ctx, d: &Desired) -> bool {
    let interval = Duration::from_millis(d.effective.resync_interval_ms);
    let Some(uid) = p.uid() else { return true };
    // Status must say AWS is ready too: a status write that failed after the last ensure would
    // otherwise leave the pipeline waiting for AWS until the resync.
    if !Observed::new(p).aws_ready(p) {
        return true;
    }
    let synced = ctx.aws_synced.lock().unwrap_or_else(|e| e.into_inner());
    match synced.get(&uid) {
        Some((fp, at)) => *fp != plan_fingerprint(p, d) || at.elapsed() >= interval,
        None => true,
    }
}

async fn gpu_nodes(ctx: &Ctx, d: &Desired) -> Result<Vec<Node>> {
    let selector: Vec<String> = d
        .effective
        .node_selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let api: Api<Node> = Api::all(ctx.client.clone());
    Ok(api
        .list_metadata(&ListParams::default().labels(&selector.join(",")))
        .await?
        .items
        .into_iter()
        .map(|m| Node {
            metadata: m.metadata,
            ..Default::default()
        })
        .collect())
}

/// The DCGM exporter pods the collectors will scrape: running pods matching the exporter's
/// selector, on the pipeline's GPU nodes.
async fn metrics_source(ctx: &Ctx, d: &Desired, nodes: &[Node]) -> Result<MetricsSource> {
    let x = &d.effective.exporter;
    let selector: Vec<String> = x.pod_selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let selector = selector.join(",");
    let gpu: BTreeSet<&str> = nodes.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &x.namespace)
        .list(&ListParams::default().labels(&selector))
        .await?;
    let on: BTreeSet<&str> = pods
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()))
        .filter(|n| gpu.contains(n))
        .collect();
    Ok(MetricsSource {
        namespace: x.namespace.clone(),
        selector,
        nodes_with_exporter: on.len(),
    })
}

/// Reads when each log group last received an event, when a read is due (`dataflow::read_due`:
/// at the AWS step, or a re-check while data is not flowing). A failed read becomes
/// `DataFlowing=Unknown` (`DataCheckFailed`), never a failed reconcile: the next look is the
/// scheduled re-check, not a hot retry.
async fn check_data_flow(p: &MLObservabilityPipeline, ctx: &Ctx, d: &Desired, obs: &mut Observed, aws_step_ran: bool) {
    let Some(uid) = p.uid() else { return };
    let groups = dataflow::groups(&d.effective);
    if groups.is_empty() {
        return;
    }
    let prev = p
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, pty::DATA_FLOWING));
    let recheck = ctx.recheck(&uid);
    let Some(read) = dataflow::read_due(aws_step_ran, &obs.serving(), prev, recheck.as_ref(), Instant::now()) else {
        return;
    };
    let mut readings = Vec::with_capacity(groups.len());
    let mut failed = None;
    for (signal, group) in groups {
        match crate::aws::logs::newest_event_ms(&ctx.aws, &group).await {
            Ok(newest_ms) => readings.push(GroupReading {
                signal,
                group,
                newest_ms,
            }),
            Err(e) => {
                tracing::debug!(error = %e, "data-flow check failed");
                failed = Some(e.to_string());
                break;
            }
        }
    }
    obs.data_flow = Some(DataFlowObs {
        read,
        grace_ms: d.effective.data_flow_grace_ms,
        result: failed.map_or(Ok(readings), Err),
    });
}

/// Label that sets the Pod Security level a namespace enforces.
const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// Why Pod Security admission rejects the collector's pods, if it does: the namespace enforces
/// `baseline` or `restricted` (both forbid hostPath volumes), or — for a cluster-wide default the
/// labels do not show — the DaemonSet controller's FailedCreate event says so. The event's
/// admission message is quoted when there is one.
async fn collector_forbidden(ctx: &Ctx, namespace: &Namespace, ds: &DaemonSet) -> Result<Option<String>> {
    let ns = namespace.name_any();
    let level = namespace
        .labels()
        .get(PSA_ENFORCE)
        .cloned()
        .filter(|l| l == "baseline" || l == "restricted");
    let s = ds.status.clone().unwrap_or_default();
    let none_created = s.desired_number_scheduled > 0 && s.current_number_scheduled == 0;
    if level.is_none() && !none_created {
        return Ok(None);
    }
    let admission = match ds.uid() {
        Some(uid) => Api::<CoreEvent>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default().fields(&format!("involvedObject.uid={uid},reason=FailedCreate")))
            .await?
            .items
            .into_iter()
            .filter_map(|e| e.message)
            .find(|m| m.contains("violates PodSecurity")),
        None => None,
    };
    let hint = "; run collectors where hostPath is allowed (GpuTelemetryPolicy spec.collectorNamespace) or allow it in this namespace";
    Ok(match (level, admission) {
        (_, Some(m)) => Some(format!(
            "Pod Security admission rejects the collector's pods in namespace {ns}: {m}{hint}"
        )),
        (Some(l), None) => Some(format!(
            "namespace {ns} enforces Pod Security {l:?} ({PSA_ENFORCE}), which forbids the collector's hostPath volumes (/var/log/pods, its queue){hint}"
        )),
        (None, None) => None,
    })
}

/// Annotation on every collector child naming its pipeline (`<namespace>/<name>`): how a child
/// outside the pipeline's namespace, which cannot carry an owner reference, finds its pipeline.
pub const OWNER_ANNOTATION: &str = "mlobs.io/owner";
/// Annotation with the owning pipeline's uid: pruning and cleanup delete only what it names.
pub const OWNER_UID_ANNOTATION: &str = "mlobs.io/owner-uid";

/// Applies ServiceAccount, RBAC, ConfigMap, then the DaemonSet; returns the live DaemonSet.
async fn apply_children(p: &MLObservabilityPipeline, ctx: &Ctx, d: &Desired, obs: &mut Observed) -> Result<DaemonSet> {
    let ns = d.effective.collector_namespace.clone();
    let uid = p.uid().ok_or(Error::MissingField("metadata.uid"))?;
    // Owner references only within the pipeline's namespace (the garbage collector removes those
    // children); elsewhere the owner annotations and the finalizer do.
    let oref = if d.effective.collector_elsewhere() {
        None
    } else {
        Some(p.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))?)
    };
    let owner = format!("{}/{}", d.effective.namespace, d.effective.name);
    let own = |mut meta: kube::api::ObjectMeta, namespaced: bool| {
        if namespaced && let Some(o) = &oref {
            meta.owner_references = Some(vec![o.clone()]);
        }
        let ann = meta.annotations.get_or_insert_with(Default::default);
        ann.insert(OWNER_ANNOTATION.into(), owner.clone());
        ann.insert(OWNER_UID_ANNOTATION.into(), uid.clone());
        meta
    };
    let o = &d.objects;
    let mut sa: ServiceAccount = o.service_account.clone();
    sa.metadata = own(sa.metadata, true);
    let mut cr: ClusterRole = o.cluster_role.clone();
    cr.metadata = own(cr.metadata, false);
    let mut crb: ClusterRoleBinding = o.cluster_role_binding.clone();
    crb.metadata = own(crb.metadata, false);
    let mut cm: ConfigMap = o.config_map.clone();
    cm.metadata = own(cm.metadata, true);
    let mut ds: DaemonSet = o.daemon_set.clone();
    ds.metadata = own(ds.metadata, true);
    let keep = [
        children::describe(&sa),
        children::describe(&cr),
        children::describe(&crb),
        children::describe(&cm),
        children::describe(&ds),
    ];

    let c = &ctx.client;
    let applied = &ctx.applied;
    let results = [
        (
            keep[0].clone(),
            children::apply(&Api::namespaced(c.clone(), &ns), sa, applied).await?.0,
        ),
        (
            keep[1].clone(),
            children::apply(&Api::all(c.clone()), cr, applied).await?.0,
        ),
        (
            keep[2].clone(),
            children::apply(&Api::all(c.clone()), crb, applied).await?.0,
        ),
        (
            keep[3].clone(),
            children::apply(&Api::namespaced(c.clone(), &ns), cm, applied).await?.0,
        ),
    ];
    let (ds_applied, live) = children::apply(&Api::<DaemonSet>::namespaced(c.clone(), &ns), ds, applied).await?;
    let mut corrected = 0;
    for (what, a) in results.iter().chain([(keep[4].clone(), ds_applied)].iter()) {
        match a {
            Applied::Unchanged => {}
            Applied::Created | Applied::Updated => {
                let verb = if *a == Applied::Created {
                    Reason::Created
                } else {
                    Reason::Updated
                };
                ctx.event(p, EventType::Normal, verb, "ApplyChild", format!("{verb} {what}"))
                    .await;
            }
            Applied::Corrected { field, actual, desired } => {
                corrected += 1;
                ctx.event(
                    p,
                    EventType::Normal,
                    Reason::DriftCorrected,
                    "ApplyChild",
                    format!("{what} {field} was edited by hand; put back"),
                )
                .await;
                obs.k8s_drift.push(Drift {
                    resource: what.clone(),
                    field: field.clone(),
                    desired: desired.clone(),
                    actual: actual.clone(),
                    corrected: true,
                });
            }
        }
    }
    if corrected > 0 {
        ctx.metrics.drift("kubernetes", "found", corrected);
        ctx.metrics.drift("kubernetes", "corrected", corrected);
    }

    // The applied set is the child set: anything else labelled for this pipeline and owned by it
    // goes, on every reconcile (operator-rs `ClusterResources`). Gating this on a generation
    // change missed generations whose first reconcile stopped early; the lists are served from
    // the API server's watch cache.
    let sel = crate::conventions::pipeline_selector(&d.effective.namespace, &d.effective.name);
    let pruned = prune_children(ctx, &sel, &keep, &uid, false).await?;
    ctx.pruned(p, &pruned).await;
    Ok(live)
}

/// Deletes the pipeline's children (by label and owner) that are not in `keep`, in every
/// namespace. `only_unowned`: only those the garbage collector cannot remove (no owner reference).
async fn prune_children(ctx: &Ctx, sel: &str, keep: &[String], uid: &str, only_unowned: bool) -> Result<Vec<String>> {
    let c = &ctx.client;
    let owner = children::Owner { uid, only_unowned };
    let mut pruned = children::prune_everywhere::<DaemonSet>(c, sel, keep, &owner).await?;
    pruned.extend(children::prune_everywhere::<ConfigMap>(c, sel, keep, &owner).await?);
    pruned.extend(children::prune_everywhere::<ServiceAccount>(c, sel, keep, &owner).await?);
    pruned.extend(children::prune_cluster::<ClusterRoleBinding>(c, sel, keep, &owner).await?);
    pruned.extend(children::prune_cluster::<ClusterRole>(c, sel, keep, &owner).await?);
    for key in &pruned {
        ctx.applied.forget(key);
    }
    Ok(pruned)
}

async fn drift_event(ctx: &Ctx, p: &MLObservabilityPipeline, x: &Drift) {
    let (r, verb) = if x.corrected {
        (Reason::DriftCorrected, "corrected")
    } else {
        (Reason::DriftDetected, "found (driftPolicy Report)")
    };
    let note = format!(
        "{} {}: {verb}; desired {}, actual {}",
        x.resource, x.field, x.desired, x.actual
    );
    ctx.event(p, EventType::Warning, r, "ObserveAws", note).await;
}

/// Computes the status and writes it only if it changed.
async fn finish(
    p: &MLObservabilityPipeline,
    ctx: &Ctx,
    api: &Api<MLObservabilityPipeline>,
    obs: Observed,
    d: Option<&Desired>,
) -> Result<Action> {
    let old = p.status.clone().unwrap_or_default();
    let read = obs.data_flow.is_some();
    let new = obs.into_status(p, &old, super::now());
    let stop = conditions::find(&new.conditions, pty::READY)
        .filter(|c| c.status == conditions::status::FALSE)
        .and_then(|c| Some((Reason::parse(&c.reason).filter(|r| r.is_terminal())?, c.message.clone())));
    let flow_old = conditions::find(&old.conditions, pty::DATA_FLOWING);
    let flow_new = conditions::find(&new.conditions, pty::DATA_FLOWING);
    // Counted before the write, so the gauge never lags behind what the status shows.
    if let Some(uid) = p.uid() {
        let state = flow_new.map(|c| (c.status.as_str(), c.reason.as_str()));
        ctx.metrics.data_flowing(&uid, state);
    }
    if new != old {
        let patch = json!({"status": new});
        api.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        if status::aws_arns_new(&old, &new) {
            ctx.event(
                p,
                EventType::Normal,
                Reason::AwsReady,
                "EnsureAws",
                status::aws_summary(&new),
            )
            .await;
        }
        // A pipeline that cannot go on without a change says so once, as it happens.
        if let Some((r, m)) = status::became_stalled(&old, &new) {
            ctx.event(p, EventType::Warning, r, "Reconcile", m).await;
        }
        if let Some((warning, r, m)) = dataflow::transition_event(flow_old, flow_new) {
            let kind = if warning { EventType::Warning } else { EventType::Normal };
            ctx.event(p, kind, r, "CheckDataFlow", m).await;
        }
    }
    let interval = d.map_or(600_000, |d| d.effective.resync_interval_ms);
    let recheck = p.uid().and_then(|uid| {
        let next = if read {
            let resync = Duration::from_millis(interval);
            let (was, is) = (flow_old.map(|c| c.status.as_str()), flow_new.map(|c| c.status.as_str()));
            dataflow::after_read(ctx.recheck(&uid).as_ref(), was, is, Instant::now(), resync)
        } else if flow_new.is_some_and(dataflow::rechecks) {
            ctx.recheck(&uid)
        } else {
            None
        };
        ctx.set_recheck(&uid, next);
        next
    });
    // Nothing watches the exporter pods or Pod Security labels: look again soon while waiting on them.
    let waiting = [
        (pty::METRICS_SOURCE_READY, reason::NO_EXPORTER_PODS),
        (pty::COLLECTOR_READY, reason::POD_SECURITY_FORBIDDEN),
    ]
    .iter()
    .any(|(t, r)| conditions::find(&new.conditions, t).is_some_and(|c| c.reason == *r));
    let interval = if waiting {
        interval.min(WAITING_RECHECK_MS)
    } else {
        interval
    };
    let wait = jittered(interval, p);
    // While data is not flowing, look again at the scheduled re-check (not sooner than 1 s).
    let wait = recheck.map_or(wait, |r| {
        wait.min(dataflow::next_read_in(&r, Instant::now()).max(Duration::from_secs(1)))
    });
    // A terminal Ready=False is a failed reconcile to kube-runtime and the metrics
    // (result="error" with its reason); error_policy requeues it after `wait`, without backoff.
    match stop {
        Some((reason, message)) => Err(Error::Stopped {
            reason,
            message,
            requeue: wait,
        }),
        None => Ok(Action::requeue(wait)),
    }
}

/// Deletion: AWS per deletionPolicy, then the cluster-scoped children, then the finalizer.
async fn cleanup(
    p: &MLObservabilityPipeline,
    ctx: &Ctx,
    api: &Api<MLObservabilityPipeline>,
    gov: &Governing,
) -> Result<Action> {
    if !p.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let policy = match gov {
        Governing::One(x) => Some(x.as_ref()),
        _ => None,
    };
    match desired::build(p, policy, &ctx.desired) {
        Ok(d) => {
            let known = p
                .status
                .as_ref()
                .and_then(|s| s.aws.as_ref())
                .and_then(|a| a.kms_key_arn.as_deref())
                .and_then(key_id_of);
            let policy = d.effective.deletion_policy;
            if let Err(e) = delete_all(&ctx.aws, &d.aws, &owner(&d), known.as_deref(), policy).await {
                let msg = format!("cleanup of AWS resources failed, finalizer kept: {e}");
                ctx.event(p, EventType::Warning, e.error.reason(), "DeleteAws", msg.clone())
                    .await;
                let mut obs = Observed::new(p);
                obs.blocked(reason::CLEANUP_FAILED, msg);
                let _ = finish(p, ctx, api, obs, Some(&d)).await;
                return Err(Error::Aws(e));
            }
            ctx.event(
                p,
                EventType::Normal,
                Reason::AwsCleanedUp,
                "DeleteAws",
                format!("AWS resources handled per deletionPolicy {policy:?}"),
            )
            .await;
            // Cluster-scoped children (no owner reference possible): by their names, then any
            // left from an older spec by label and owner. Children in another namespace too.
            delete_ignoring_absent(
                &Api::<ClusterRoleBinding>::all(ctx.client.clone()),
                &d.objects.cluster_role_binding.name_any(),
            )
            .await?;
            delete_ignoring_absent(
                &Api::<ClusterRole>::all(ctx.client.clone()),
                &d.objects.cluster_role.name_any(),
            )
            .await?;
            if let Some(uid) = p.uid() {
                let sel = crate::conventions::pipeline_selector(&d.effective.namespace, &d.effective.name);
                prune_children(ctx, &sel, &[], &uid, true).await?;
            }
            let o = &d.objects;
            for key in [
                children::describe(&o.service_account),
                children::describe(&o.cluster_role),
                children::describe(&o.cluster_role_binding),
                children::describe(&o.config_map),
                children::describe(&o.daemon_set),
            ] {
                ctx.applied.forget(&key);
            }
        }
        Err(e) => {
            // Without a plan nothing can be matched safely: keep every AWS resource (never lose data).
            ctx.event(
                p,
                EventType::Warning,
                e.reason(),
                "DeleteAws",
                format!("spec cannot be built ({e}); AWS resources are retained"),
            )
            .await;
        }
    }
    let finalizers: Vec<&String> = p.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": p.resource_version()}});
    api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.forget(p);
    Ok(Action::await_change())
}

async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
