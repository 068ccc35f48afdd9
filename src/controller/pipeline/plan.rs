//! Step 2 of a pipeline reconcile, pure: from what the dereference step read, decide everything
//! before any write — the governing policy's verdict, validation, the merge and build, the live
//! estimate and budget, whether AWS is due, and the desired child set. Every early exit is a
//! typed [`Stop`] with its reason. No I/O and no clock: each decision has a unit test
//! (plan_tests.rs).

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::{Resource, ResourceExt};

use super::super::applier::{Child, ChildSet, Kind, SetOwner};
use super::super::lookup::{self, Governing};
use super::super::status::Observed;
use super::{ADOPT_ANNOTATION, RECONCILE_REQUESTED_ANNOTATION};
use crate::crd::conditions::reason;
use crate::crd::reason::Reason;
use crate::crd::{BudgetAction, MLObservabilityPipeline};
use crate::desired::cost::Prices;
use crate::desired::{self, Desired};

/// The kinds of a pipeline's children: what a prune lists.
pub const CHILD_KINDS: &[Kind] = &[
    Kind::DaemonSet,
    Kind::ConfigMap,
    Kind::ServiceAccount,
    Kind::ClusterRoleBinding,
    Kind::ClusterRole,
];

pub use super::super::applier::MonitoringApis;

impl MonitoringApis {
    /// [`CHILD_KINDS`] and the monitoring kinds served: what a prune lists.
    pub fn child_kinds(self) -> Vec<Kind> {
        let mut kinds = CHILD_KINDS.to_vec();
        kinds.extend(self.prometheus_rules.then_some(Kind::PrometheusRule));
        kinds.extend(self.pod_monitors.then_some(Kind::PodMonitor));
        kinds
    }
}

/// What the dereference step read: everything [`plan`] decides from.
#[derive(Debug, Clone)]
pub struct World {
    pub gov: Governing,
    /// The GPU nodes matching the pipeline's node selector (metadata only).
    pub nodes: Vec<Node>,
    /// The collector's namespace; `None` when it does not exist.
    pub collector_namespace: Option<Namespace>,
    /// When this process last ensured the AWS side ready: (plan fingerprint, when).
    pub aws_memory: Option<(PlanFingerprint, SystemTime)>,
    /// Whether the check once after data stopped flowing is still to run: `DataFlowing` turned
    /// `False` after this process last ran the pipeline's slower checks (see
    /// `controller::batched`). It makes the AWS step due at once, not at the next resync slot.
    pub stop_check_due: bool,
    /// The time of the dereference step: the clock the plan decides by.
    pub now: SystemTime,
    /// Which monitoring.coreos.com/v1 kinds the API server serves.
    pub monitoring: MonitoringApis,
}

/// Why a reconcile stops before it changes anything.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// `spec.policyRef` names a policy that does not exist.
    PolicyNotFound(String),
    /// No `spec.policyRef`, and several policies say `default: true`.
    DefaultConflict(Vec<String>),
    /// The pipeline's spec breaks a rule (the shared validation, or the merge and build).
    InvalidSpec(Reason, String),
    /// The governing policy's spec breaks a rule.
    InvalidPolicy(String),
    /// The policy's guardrails (or a budget with action Deny) refuse the spec: nothing new is
    /// created or changed; what runs keeps running.
    Violations(Vec<String>),
}

impl Stop {
    pub fn reason(&self) -> Reason {
        match self {
            Stop::PolicyNotFound(_) => Reason::PolicyNotFound,
            Stop::DefaultConflict(_) => Reason::DefaultConflict,
            Stop::InvalidSpec(r, _) => *r,
            Stop::InvalidPolicy(_) => Reason::InvalidSpec,
            Stop::Violations(_) => Reason::PolicyViolation,
        }
    }

    /// Records the stop where the status step reads it.
    pub fn record(self, obs: &mut Observed) {
        match self {
            Stop::PolicyNotFound(name) => obs.blocked(
                reason::POLICY_NOT_FOUND,
                format!("spec.policyRef: GpuTelemetryPolicy {name:?} does not exist"),
            ),
            Stop::DefaultConflict(names) => obs.blocked(
                reason::DEFAULT_CONFLICT,
                format!(
                    "spec.policyRef is absent and several policies say default: true: {}",
                    names.join(", ")
                ),
            ),
            Stop::InvalidSpec(r, message) => obs.invalid(r.as_str(), message),
            Stop::InvalidPolicy(message) => obs.blocked(reason::INVALID_SPEC, message),
            Stop::Violations(v) => obs.violations = v,
        }
    }
}

/// What the plan decided.
#[derive(Debug)]
pub struct Plan {
    /// What the status step will report so far (policy, config hash, estimate, budget warning).
    pub obs: Observed,
    /// The resync interval, once the spec is built.
    pub resync_ms: Option<u64>,
    /// `Err`: stop here and write status.
    pub next: Result<Go, Stop>,
}

/// The writes the plan calls for.
#[derive(Debug)]
pub struct Go {
    pub desired: Box<Desired>,
    /// Ensure the AWS side now (never ensured for this plan, recorded status not ready, or the
    /// resync is due).
    pub aws_due: bool,
    /// The Kubernetes children, collector last; `Err((reason, message))` when they cannot be
    /// placed (the collector's namespace is missing). Applied after the AWS side is ready.
    pub children: Result<ChildSet, (&'static str, String)>,
}

/// The operator-level inputs of a plan.
pub struct Inputs<'a> {
    pub desired: &'a desired::Context,
    pub prices: &'a Prices,
}

/// Step 2: decides from `p` and `world` (see the module comment).
pub fn plan(p: &MLObservabilityPipeline, world: &World, inputs: &Inputs<'_>) -> Plan {
    let mut obs = Observed::new(p);
    let stop = |obs, stop, d: Option<&Desired>| Plan {
        obs,
        resync_ms: d.map(|d| d.effective.resync_interval_ms),
        next: Err(stop),
    };
    let policy = match &world.gov {
        Governing::None => None,
        Governing::One(x) => Some(x.as_ref()),
        Governing::NotFound(name) => return stop(obs, Stop::PolicyNotFound(name.clone()), None),
        Governing::DefaultConflict(names) => return stop(obs, Stop::DefaultConflict(names.clone()), None),
    };
    obs.policy = policy.map(|x| (x.name_any(), x.meta().generation));
    // The same rules as admission and the CLI.
    if let Err(inv) = crate::crd::validate::validate_pipeline(p) {
        return stop(
            obs,
            Stop::InvalidSpec(Reason::InvalidSpec, format!("invalid spec:{inv}")),
            None,
        );
    }
    if let Some(pol) = policy
        && let Err(inv) = crate::crd::validate::validate_policy(pol)
    {
        let msg = format!("GpuTelemetryPolicy {} is invalid:{inv}", pol.name_any());
        return stop(obs, Stop::InvalidPolicy(msg), None);
    }
    let d = match desired::build(p, policy, inputs.desired) {
        Ok(d) => Box::new(d),
        Err(e) => return stop(obs, Stop::InvalidSpec(e.reason(), e.to_string()), None),
    };
    obs.config_hash = Some(d.config_hash.clone());
    obs.monitoring = world.monitoring;
    // The fleet the collector runs on, for the live estimate and the budget.
    obs.telemetry(&d, &world.nodes, inputs.prices);
    let mut violations: Vec<String> = d.violations.iter().map(ToString::to_string).collect();
    if let Some(e) = &obs.estimate
        && let Some((action, msg)) = lookup::budget_exceeded(&d, e, world.nodes.len())
    {
        match action {
            BudgetAction::Deny => violations.push(msg),
            BudgetAction::Warn => obs.budget_warning = Some(msg),
        }
    }
    if !violations.is_empty() {
        return stop(obs, Stop::Violations(violations), Some(&d));
    }
    let aws_due = world.stop_check_due || aws_due(p, &d, world.aws_memory.as_ref(), world.now);
    let pending_workspace = (d.effective.destinations.prometheus.as_ref())
        .filter(|w| w.pending())
        .and_then(|w| w.managed.as_ref());
    let children = match (&world.collector_namespace, p.uid()) {
        // The remote write endpoint names the workspace's id, known once the AWS step created it.
        _ if pending_workspace.is_some() => Err((
            reason::WAITING_FOR_AWS,
            format!(
                "waiting for the AMP workspace of alias {:?} (spec.metrics.prometheus.workspaceAlias) to be created",
                pending_workspace.map_or("", |m| m.alias.as_str())
            ),
        )),
        (Some(_), Some(uid)) => Ok(child_set(p, &d, uid, world.monitoring)),
        _ => Err((
            reason::NAMESPACE_NOT_FOUND,
            format!(
                "the collector's namespace {:?} (GpuTelemetryPolicy spec.collectorNamespace) does not exist",
                d.effective.collector_namespace
            ),
        )),
    };
    Plan {
        obs,
        resync_ms: Some(d.effective.resync_interval_ms),
        next: Ok(Go {
            desired: d,
            aws_due,
            children,
        }),
    }
}

/// Fingerprint of what AWS should look like: the plan, the spec generation (drift policy and
/// adoption are not in the plan) and a requested reconcile. A change means ensure AWS now.
/// Digests, not the plan's JSON (a few KiB per pipeline, held for every pipeline).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanFingerprint {
    /// Everything above.
    pub whole: [u8; 32],
    /// The AWS plan alone (`apply::aws` tells a changed plan from drift by it).
    pub aws: [u8; 32],
}

pub fn plan_fingerprint(p: &MLObservabilityPipeline, d: &Desired) -> PlanFingerprint {
    use sha2::{Digest, Sha256};
    let requested = p
        .annotations()
        .get(RECONCILE_REQUESTED_ANNOTATION)
        .map_or("", String::as_str);
    let adopt = p.annotations().get(ADOPT_ANNOTATION).map_or("", String::as_str);
    let aws = aws_plan_digest(d);
    let mut whole = Sha256::new();
    whole.update(format!("{}|{requested}|{adopt}|", p.meta().generation.unwrap_or_default()).as_bytes());
    whole.update(aws);
    PlanFingerprint {
        whole: whole.finalize().into(),
        aws,
    }
}

/// The AWS plan's digest, as [`PlanFingerprint::aws`] records it.
pub fn aws_plan_digest(d: &Desired) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(serde_json::to_string(&d.aws).unwrap_or_default().as_bytes()).into()
}

/// Whether the AWS side must be ensured now: the recorded status does not say it is ready (a
/// status write that failed after the last ensure would otherwise leave the pipeline waiting
/// until the resync), this process never ensured this plan, or the pipeline's resync slot came
/// since it last did (`resync::due`: once per resync interval, in step with the other pipelines
/// of that interval).
pub fn aws_due(
    p: &MLObservabilityPipeline,
    d: &Desired,
    memory: Option<&(PlanFingerprint, SystemTime)>,
    now: SystemTime,
) -> bool {
    if !Observed::new(p).aws_ready(p) {
        return true;
    }
    let interval = Duration::from_millis(d.effective.resync_interval_ms);
    let key = p.uid().unwrap_or_else(|| p.name_any());
    match memory {
        Some((fp, at)) => *fp != plan_fingerprint(p, d) || super::super::resync::due(*at, now, interval, &key),
        None => true,
    }
}

/// The pipeline's children in apply order (ServiceAccount, RBAC, ConfigMap, the hot path's
/// ServiceAccount, ConfigMap and DaemonSet when enabled, the collector's DaemonSet last: the
/// applier reports the last DaemonSet as the collector's),
/// owned by the pipeline: an owner reference in the pipeline's namespace, the owner annotations
/// everywhere. With alerts and the PrometheusRule CRD installed, the rule comes before the
/// DaemonSet; so does the collector's PodMonitor where its CRD is installed and the pipeline reads
/// its collectors' telemetry (`desired::self_monitoring::wanted`).
pub fn child_set(p: &MLObservabilityPipeline, d: &Desired, uid: String, monitoring: MonitoringApis) -> ChildSet {
    let e = &d.effective;
    let o = &d.objects;
    let owner = SetOwner {
        name: format!("{}/{}", e.namespace, e.name),
        uid,
        reference: p.controller_owner_ref(&()),
        ref_namespace: Some(e.namespace.clone()),
    };
    let mut children = vec![
        Child::ServiceAccount(o.service_account.clone()),
        Child::ClusterRole(o.cluster_role.clone()),
        Child::ClusterRoleBinding(o.cluster_role_binding.clone()),
        Child::ConfigMap(o.config_map.clone()),
    ];
    if let Some(h) = &o.hot_path {
        children.extend([
            Child::ServiceAccount(h.service_account.clone()),
            Child::ConfigMap(h.config_map.clone()),
            Child::DaemonSet(h.daemon_set.clone()),
        ]);
    }
    if e.dashboards.grafana {
        children.push(Child::ConfigMap(crate::desired::dashboards::grafana::config_map(e)));
    }
    if let (true, Some(a)) = (monitoring.prometheus_rules, &e.alerts) {
        let rule = crate::desired::alerts::prometheus::prometheus_rule(e, a);
        children.push(Child::PrometheusRule(rule));
    }
    if monitoring.pod_monitors
        && crate::desired::self_monitoring::wanted(e)
        && let Some(spec) = &o.daemon_set.spec
    {
        let m = crate::desired::self_monitoring::pod_monitor(e, spec.selector.clone());
        children.push(Child::PodMonitor(m));
    }
    children.push(Child::DaemonSet(o.daemon_set.clone()));
    ChildSet::new(
        crate::conventions::pipeline_selector(&e.namespace, &e.name),
        &monitoring.child_kinds(),
        owner,
        children,
    )
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
