//! A pipeline's new status, computed from what one reconcile observed. Pure: the clock comes in
//! as an argument, and an unchanged observation gives an identical status (so nothing is written).

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::dataflow::{self, DataFlowObs, Serving};
use super::destinations::DestinationsObs;
use crate::aws::Drift;
use crate::aws::apply::{AwsOutcome, Step, StepError};
use crate::crd::conditions::{self, pipeline as ty, reason, status as st};
use crate::crd::reason::Reason;
use crate::crd::{
    AwsStatus, CollectorStatus, DriftRecord, MLObservabilityPipeline, MLObservabilityPipelineStatus, PolicyRefStatus,
    TelemetryStatus,
};
use crate::desired::Desired;
use crate::desired::cost::{self, Estimate, Prices};

/// Drift records kept in status (newest last).
pub const MAX_DRIFT_RECORDS: usize = 20;
const ACTION_CORRECTED: &str = "Corrected";
const ACTION_REPORTED: &str = "Reported";

/// The AWS step's result, when it ran in this reconcile.
#[derive(Debug, Clone)]
pub enum AwsResult {
    Ok { out: Box<AwsOutcome>, ready: bool },
    Failed(Box<StepError>),
}

/// What one reconcile saw and did.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    generation: Option<i64>,
    pub policy: Option<(String, Option<i64>)>,
    /// The pipeline cannot proceed for a policy reason (not found, default conflict) or cleanup failed.
    blocked: Option<(String, String)>,
    /// The spec cannot be built.
    invalid: Option<(String, String)>,
    pub violations: Vec<String>,
    pub budget_warning: Option<String>,
    pub aws: Option<AwsResult>,
    pub k8s_drift: Vec<Drift>,
    collector: Option<CollectorStatus>,
    collector_up_to_date: bool,
    pub config_hash: Option<String>,
    pub estimate: Option<Estimate>,
    gpu_nodes: i32,
    /// The GPU nodes were counted (by [`Observed::telemetry`]) and none matched.
    no_gpu_nodes: bool,
    /// Where the collectors scrape DCGM metrics and how many GPU nodes have an exporter pod.
    pub metrics_source: Option<MetricsSource>,
    /// The collector cannot run where it should: (reason, message), e.g. Pod Security admission
    /// rejects its pods, or its namespace does not exist.
    pub collector_blocked: Option<(&'static str, String)>,
    /// The read of the log groups' newest events, when this reconcile made one.
    pub data_flow: Option<DataFlowObs>,
    /// The destinations beyond CloudWatch, when the AWS step read them.
    pub destinations: Option<DestinationsObs>,
    /// The archive bucket's ArchiveReady message, when the plan has one.
    archive: Option<String>,
    /// The hot path's HotPathReady message, when the plan has one.
    hot_path: Option<String>,
    /// The resourceVersion this reconcile's status is computed against: the object's, or the one
    /// a status patch of this reconcile returned (see `write_status`).
    pub resource_version: Option<String>,
    /// The AlertsReady message, when the plan has alerts.
    alerts: Option<String>,
    /// Which monitoring.coreos.com/v1 kinds the cluster serves (the plan applied those).
    pub monitoring: super::applier::MonitoringApis,
}

/// The DCGM exporter pods the collectors scrape, as one reconcile found them.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSource {
    pub namespace: String,
    /// `k=v,...` of the exporter pods.
    pub selector: String,
    /// GPU nodes with a running exporter pod that matches.
    pub nodes_with_exporter: usize,
}

impl Observed {
    pub fn new(p: &MLObservabilityPipeline) -> Observed {
        Observed {
            generation: p.metadata.generation,
            ..Default::default()
        }
    }

    pub fn blocked(&mut self, reason: &str, message: String) {
        self.blocked = Some((reason.to_string(), message));
    }

    pub fn invalid(&mut self, reason: &str, message: String) {
        self.invalid = Some((reason.to_string(), message));
    }

    pub fn telemetry(&mut self, d: &Desired, nodes: &[Node], prices: &Prices) {
        let fleet = super::lookup::fleet(nodes);
        self.gpu_nodes = i32::try_from(nodes.len()).unwrap_or(i32::MAX);
        self.no_gpu_nodes = nodes.is_empty();
        self.estimate = cost::estimate(&d.effective, &fleet, prices, None).ok();
        self.archive = d
            .aws
            .archive
            .as_ref()
            .map(|a| super::archive_status::summary(a, d.effective.deletion_policy));
        self.hot_path = (d.aws.hot_path.as_ref()).map(|h| super::hot_path::summary(h, d.effective.deletion_policy));
        self.alerts = d.aws.alerts.as_ref().map(|a| {
            let rule = if self.monitoring.prometheus_rules {
                "the PrometheusRule is applied"
            } else {
                "no PrometheusRule: this cluster does not serve monitoring.coreos.com/v1"
            };
            let slo = d.effective.alerts.as_ref().is_some_and(|a| a.slo.is_some());
            let scrape = match (slo, self.monitoring.pod_monitors) {
                (false, _) => String::new(),
                (true, true) => "; a PodMonitor scrapes the collectors for the pipeline-health rules".into(),
                (true, false) => {
                    use crate::desired::self_monitoring::{SERIES_LABEL, TELEMETRY_PORT, TELEMETRY_PORT_NAME};
                    format!(
                        "; no PodMonitor (not served here): the pipeline-health rules get data only where something scrapes the collectors' port {TELEMETRY_PORT_NAME} ({TELEMETRY_PORT}) and labels the series {SERIES_LABEL}"
                    )
                }
            };
            format!("{} CloudWatch alarms notify {}; {rule}{scrape}", a.alarms.len(), a.topic.arn)
        });
    }

    pub fn collector(&mut self, ds: &DaemonSet) {
        let s = ds.status.clone().unwrap_or_default();
        self.collector_up_to_date = s.observed_generation >= ds.metadata.generation
            && s.updated_number_scheduled.unwrap_or(0) == s.desired_number_scheduled;
        self.collector = Some(CollectorStatus {
            desired_nodes: s.desired_number_scheduled,
            ready_nodes: s.number_ready,
            config_hash: self.config_hash.clone(),
        });
    }

    /// Whether a collector can be sending data (for DataFlowing).
    pub fn serving(&self) -> Serving {
        match (&self.collector, &self.collector_blocked) {
            (None, Some((_, why))) => Serving::NotReady(why.clone()),
            (None, None) => Serving::NotLookedAt,
            (Some(_), _) if self.no_gpu_nodes => Serving::NoGpuNodes,
            (Some(c), _) if c.ready_nodes <= 0 => {
                Serving::NotReady(format!("no collector pod is ready (0/{} GPU nodes)", c.desired_nodes))
            }
            (Some(_), _) => Serving::Ready,
        }
    }

    /// Whether this reconcile finds `CollectorReady` True by a running collector: applied, up to
    /// date and ready on every matching GPU node (not `NoGpuNodes`).
    pub fn collector_all_ready(&self) -> bool {
        self.collector_blocked.is_none()
            && !self.no_gpu_nodes
            && self.collector_up_to_date
            && (self.collector.as_ref()).is_some_and(|c| c.desired_nodes > 0 && c.ready_nodes == c.desired_nodes)
    }

    /// GPU nodes match the selector, but the up-to-date DaemonSet schedules the collector on none
    /// of them (`desiredNumberScheduled` 0): each has a taint the collector pods do not tolerate
    /// (a GPU node group's own taint, or `unreachable`/`not-ready` while a node is down). Nothing
    /// collects, however ready "0/0" looks.
    fn collector_on_no_matching_node(&self) -> bool {
        !self.no_gpu_nodes
            && self.collector_up_to_date
            && (self.collector.as_ref()).is_some_and(|c| c.desired_nodes == 0)
    }

    /// Whether the AWS side is ready: as this reconcile found it, or as status last recorded it.
    pub fn aws_ready(&self, p: &MLObservabilityPipeline) -> bool {
        match &self.aws {
            Some(AwsResult::Ok { ready, .. }) => *ready,
            Some(AwsResult::Failed(_)) => false,
            None => {
                let c = p.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
                [ty::KMS_KEY_READY, ty::LOG_GROUPS_READY, ty::IAM_ROLE_READY]
                    .iter()
                    .all(|t| conditions::find(c, t).is_some_and(|c| c.status == st::TRUE))
                    && conditions::find(c, ty::ARCHIVE_READY).is_none_or(|c| c.status == st::TRUE)
            }
        }
    }

    /// The new status: one function per condition, in the order Ready reads them. Pure: the
    /// clock comes in, and an unchanged observation gives an identical status.
    pub fn into_status(
        self,
        p: &MLObservabilityPipeline,
        old: &MLObservabilityPipelineStatus,
        now: Time,
    ) -> MLObservabilityPipelineStatus {
        let mut s = old.clone();
        s.observed_generation = self.generation;
        s.policy = self.policy.as_ref().map(|(name, generation)| PolicyRefStatus {
            name: name.clone(),
            generation: *generation,
        });
        let mut c = Conds {
            s: &mut s,
            g: self.generation,
            now: &now,
        };
        let (st_, r, m) = self.policy_compliant();
        c.set(ty::POLICY_COMPLIANT, st_, &r, m);
        self.aws_steps(&mut c, old);
        self.collector_ready(&mut c, p);
        self.metrics_source_ready(&mut c);
        self.destinations_ready(&mut c);
        // DataFlowing: informative, not part of Ready.
        dataflow::update(c.s, &self.serving(), self.data_flow.as_ref(), self.generation, &now);
        drifted(&mut c);
        self.telemetry_status(c.s);
        ready(&mut c);
        conditions::set_kstatus(&mut s.conditions, self.generation, now.clone());
        s.conditions
            .sort_by_key(|c| ty::ALL.iter().position(|t| *t == c.type_).unwrap_or(usize::MAX));
        s
    }

    /// PolicyCompliant: blocked (False), invalid (Unknown), violations (False), else True.
    fn policy_compliant(&self) -> (&'static str, String, String) {
        if let Some((r, m)) = &self.blocked {
            return (st::FALSE, r.clone(), m.clone());
        }
        if let Some((r, m)) = &self.invalid {
            return (st::UNKNOWN, r.clone(), m.clone());
        }
        if !self.violations.is_empty() {
            let m = format!(
                "nothing is created or changed until fixed: {}",
                self.violations.join("; ")
            );
            return (st::FALSE, reason::POLICY_VIOLATION.into(), m);
        }
        let (r, m) = match (&self.budget_warning, &self.policy) {
            (Some(w), _) => (
                reason::BUDGET_EXCEEDED,
                format!("applied with a warning (budget action Warn): {w}"),
            ),
            (None, Some((name, _))) => (reason::COMPLIANT, format!("complies with GpuTelemetryPolicy {name}")),
            (None, None) => (reason::COMPLIANT, "no GpuTelemetryPolicy governs this pipeline".into()),
        };
        (st::TRUE, r.into(), m)
    }

    /// KmsKeyReady, LogGroupsReady, IamRoleReady, the AWS ARNs and the drift records.
    fn aws_steps(&self, c: &mut Conds<'_>, old: &MLObservabilityPipelineStatus) {
        let steps = [
            (Step::KmsKey, ty::KMS_KEY_READY),
            (Step::LogGroups, ty::LOG_GROUPS_READY),
            (Step::ArchiveBucket, ty::ARCHIVE_READY),
            (Step::HotPath, ty::HOT_PATH_READY),
            (Step::IamRole, ty::IAM_ROLE_READY),
        ];
        let steps = steps.into_iter().filter(|(s, _)| match s {
            Step::ArchiveBucket => self.archive.is_some(),
            Step::HotPath => self.hot_path.is_some(),
            _ => true,
        });
        if self.archive.is_none() {
            c.s.conditions.retain(|x| x.type_ != ty::ARCHIVE_READY);
        }
        if self.hot_path.is_none() {
            c.s.conditions.retain(|x| x.type_ != ty::HOT_PATH_READY);
        }
        if self.alerts.is_none() {
            c.s.conditions.retain(|x| x.type_ != ty::ALERTS_READY);
        }
        let now = c.now.clone();
        match &self.aws {
            Some(AwsResult::Ok { out, .. }) => {
                let started = c.s.aws.as_ref().and_then(|a| a.kms_key_create_started.clone());
                let checked = match (&out.kms_key_arn, out.kms_key_checked) {
                    (None, _) => None,
                    (Some(_), true) => Some(now.clone()),
                    (Some(_), false) => c.s.aws.as_ref().and_then(|a| a.kms_key_checked_at.clone()),
                };
                c.s.aws = Some(Box::new(AwsStatus {
                    kms_key_arn: out.kms_key_arn.clone(),
                    log_group_arns: out.log_group_arns.clone(),
                    archive_bucket_arn: out.archive_bucket_arn.clone(),
                    hot_path_stream_arn: out.hot_path_stream_arn.clone(),
                    hot_path_role_arn: out.hot_path_role_arn.clone(),
                    alerts_topic_arn: out.alerts_topic_arn.clone(),
                    alarm_count: out.alarm_count,
                    dashboard_name: out.dashboard_name.clone(),
                    role_arn: out.role_arn.clone(),
                    pod_identity_association_id: out.pod_identity_association_id.clone(),
                    amp_workspace_arn: out.amp_workspace.as_ref().map(|(_, w)| w.arn.clone()),
                    amp_workspace_alias: out.amp_workspace.as_ref().map(|(a, _)| a.clone()),
                    // Kept as written: the API server keeps it too (status is merge-patched).
                    kms_key_create_started: started,
                    kms_key_checked_at: checked,
                }));
                let key = out.kms_key_arn.as_deref().unwrap_or("CloudWatch default encryption");
                c.set(ty::KMS_KEY_READY, st::TRUE, reason::RECONCILED, key.to_string());
                let groups = format!(
                    "{} log groups exist with their key, retention and tags",
                    out.log_group_arns.len()
                );
                c.set(ty::LOG_GROUPS_READY, st::TRUE, reason::RECONCILED, groups);
                if let (Some(m), Some(arn)) = (&self.archive, &out.archive_bucket_arn) {
                    c.set(ty::ARCHIVE_READY, st::TRUE, reason::RECONCILED, format!("{arn}: {m}"));
                }
                if let (Some(m), Some(arn)) = (&self.hot_path, &out.hot_path_stream_arn) {
                    c.set(ty::HOT_PATH_READY, st::TRUE, reason::RECONCILED, format!("{arn}: {m}"));
                }
                let role = out.role_arn.clone().unwrap_or_default();
                c.set(ty::IAM_ROLE_READY, st::TRUE, reason::RECONCILED, role);
                match (&self.alerts, &out.alerts_error) {
                    (Some(_), Some(e)) => c.set(ty::ALERTS_READY, st::FALSE, e.reason().as_str(), e.to_string()),
                    (Some(m), None) => c.set(ty::ALERTS_READY, st::TRUE, reason::RECONCILED, m.clone()),
                    (None, _) => {}
                }
                c.s.drift = merge_drift(&old.drift, Some(&out.drift), &self.k8s_drift, &now);
            }
            Some(AwsResult::Failed(e)) => {
                let failed = if e.step == Step::PodIdentity {
                    Step::IamRole
                } else {
                    e.step
                };
                // The workspace has a condition of its own; the role, which names it, waits.
                if failed == Step::AmpWorkspace {
                    c.set(
                        ty::PROMETHEUS_READY,
                        st::FALSE,
                        e.error.reason().as_str(),
                        e.to_string(),
                    );
                }
                let mut before = true;
                for (step, t) in steps {
                    if failed == Step::AmpWorkspace && step == Step::IamRole {
                        before = false;
                        c.set(
                            t,
                            st::FALSE,
                            reason::WAITING_FOR_AWS,
                            format!("waiting for the {failed}"),
                        );
                    } else if step == failed {
                        before = false;
                        c.set(t, st::FALSE, e.error.reason().as_str(), e.to_string());
                    } else if before {
                        c.set(t, st::TRUE, reason::RECONCILED, "ready".into());
                    } else {
                        c.set(
                            t,
                            st::FALSE,
                            reason::WAITING_FOR_AWS,
                            format!("waiting for the {failed}"),
                        );
                    }
                }
                if self.alerts.is_some() {
                    let m = format!("waiting for the {failed}");
                    c.set(ty::ALERTS_READY, st::FALSE, reason::WAITING_FOR_AWS, m);
                }
                if let Some(arn) = &e.partial.kms_key_arn {
                    c.s.aws.get_or_insert_with(Default::default).kms_key_arn = Some(arn.clone());
                }
                c.s.drift = merge_drift(&old.drift, None, &self.k8s_drift, &now);
            }
            None => {
                let alerts = self.alerts.as_ref().map(|_| (Step::Alerts, ty::ALERTS_READY));
                for (_, t) in steps.chain(alerts) {
                    if conditions::find(&c.s.conditions, t).is_none() {
                        c.set(t, st::UNKNOWN, reason::RECONCILING, "not ensured yet".into());
                    }
                }
                c.s.drift = merge_drift(&old.drift, None, &self.k8s_drift, &now);
            }
        }
    }

    /// CollectorReady and the collector's rollout.
    fn collector_ready(&self, c: &mut Conds<'_>, p: &MLObservabilityPipeline) {
        if let Some(col) = &self.collector {
            c.s.collector = Some(col.clone());
        }
        if let Some((r, m)) = &self.collector_blocked {
            c.set(ty::COLLECTOR_READY, st::FALSE, r, m.clone());
            return;
        }
        let stopped = self.blocked.is_some() || self.invalid.is_some() || !self.violations.is_empty();
        let Some(col) = &self.collector else {
            if !self.aws_ready(p) && !stopped {
                let m = "the collector starts once the KMS key, log groups and IAM role are ready";
                c.set(ty::COLLECTOR_READY, st::FALSE, reason::WAITING_FOR_AWS, m.into());
            } else if conditions::find(&c.s.conditions, ty::COLLECTOR_READY).is_none() {
                c.set(
                    ty::COLLECTOR_READY,
                    st::UNKNOWN,
                    reason::RECONCILING,
                    "not applied".into(),
                );
            }
            return;
        };
        let counts = format!(
            "{}/{} GPU nodes run a ready collector",
            col.ready_nodes, col.desired_nodes
        );
        if self.no_gpu_nodes {
            let m = "no node matches the GPU node selector, so nothing runs yet; the collector starts on each matching node as it joins";
            c.set(ty::COLLECTOR_READY, st::TRUE, reason::NO_GPU_NODES, m.into());
        } else if self.collector_on_no_matching_node() {
            let m = format!(
                "{} GPU node(s) match the selector, but the DaemonSet runs the collector on none of them: \
                 each has a taint the collector pods do not tolerate (a NoSchedule taint of the node group, \
                 or node.kubernetes.io/unreachable or not-ready while the node is down); tolerate it in the \
                 GpuTelemetryPolicy's (or the pipeline's) tolerations, or fix the nodes",
                self.gpu_nodes
            );
            c.set(ty::COLLECTOR_READY, st::FALSE, reason::COLLECTOR_UNSCHEDULABLE, m);
        } else if self.collector_all_ready() {
            c.set(ty::COLLECTOR_READY, st::TRUE, reason::RECONCILED, counts);
        } else {
            c.set(ty::COLLECTOR_READY, st::FALSE, reason::ROLLING_OUT, counts);
        }
    }

    /// MetricsSourceReady: only known once the collector was applied.
    fn metrics_source_ready(&self, c: &mut Conds<'_>) {
        let (Some(m), Some(_)) = (&self.metrics_source, &self.collector) else {
            return;
        };
        let (status, r, msg) = if self.no_gpu_nodes {
            (
                st::TRUE,
                reason::NO_GPU_NODES,
                "no GPU node yet: nothing to scrape".to_string(),
            )
        } else if m.nodes_with_exporter == 0 {
            (
                st::FALSE,
                reason::NO_EXPORTER_PODS,
                format!(
                    "no running pod in namespace {} matches {} on the pipeline's GPU nodes: the collectors have no DCGM exporter to scrape",
                    m.namespace, m.selector
                ),
            )
        } else {
            (
                st::TRUE,
                reason::RECONCILED,
                format!(
                    "{}/{} GPU nodes run a DCGM exporter pod ({} in namespace {})",
                    m.nodes_with_exporter, self.gpu_nodes, m.selector, m.namespace
                ),
            )
        };
        c.set(ty::METRICS_SOURCE_READY, status, r, msg);
    }

    /// TracesReady and PrometheusReady (each only with its destination), and where data goes.
    /// Kept as they were when the AWS step did not run.
    fn destinations_ready(&self, c: &mut Conds<'_>) {
        let Some(d) = &self.destinations else { return };
        c.s.destinations = (d.status != Default::default()).then(|| Box::new(d.status.clone()));
        for (t, verdict) in [(ty::TRACES_READY, &d.traces), (ty::PROMETHEUS_READY, &d.prometheus)] {
            match verdict {
                Some((status, r, m)) => c.set(t, status, r.as_str(), m.clone()),
                None => c.s.conditions.retain(|x| x.type_ != t),
            }
        }
    }

    /// The live estimate; the last event times are the DataFlowing step's.
    fn telemetry_status(&self, s: &mut MLObservabilityPipelineStatus) {
        let Some(e) = &self.estimate else { return };
        let t = s.telemetry.get_or_insert_with(Default::default);
        **t = TelemetryStatus {
            gpu_nodes: self.gpu_nodes,
            series_per_node: i64::try_from(e.series_per_node).unwrap_or(i64::MAX),
            total_series: i64::try_from(e.total_series).unwrap_or(i64::MAX),
            estimated_monthly_cost_usd: e.total_usd,
            last_log_event_time: t.last_log_event_time.take(),
            last_metric_event_time: t.last_metric_event_time.take(),
        };
    }
}

/// The conditions being written: the status, the generation they describe, the clock.
struct Conds<'a> {
    s: &'a mut MLObservabilityPipelineStatus,
    g: Option<i64>,
    now: &'a Time,
}

impl Conds<'_> {
    fn set(&mut self, t: &str, status: &str, r: &str, m: String) {
        let c = conditions::condition(t, status, r, m, self.g, self.now.clone());
        conditions::upsert(&mut self.s.conditions, c);
    }
}

/// Drifted: True while a drift record is open (driftPolicy Report).
fn drifted(c: &mut Conds<'_>) {
    let open: Vec<String> = (c.s.drift.iter())
        .filter(|d| d.action.as_deref() == Some(ACTION_REPORTED))
        .map(|d| format!("{} {}", d.resource, d.field))
        .collect();
    if open.is_empty() {
        c.set(
            ty::DRIFTED,
            st::FALSE,
            reason::NO_DRIFT,
            "AWS and Kubernetes match the spec".into(),
        );
    } else {
        let m = format!("{} open (driftPolicy Report): {}", open.len(), open.join(", "));
        c.set(ty::DRIFTED, st::TRUE, reason::DRIFT_DETECTED, m);
    }
}

/// Ready: every other condition says so; else the first that does not, with its reason.
fn ready(c: &mut Conds<'_>) {
    let parts = [
        ty::POLICY_COMPLIANT,
        ty::KMS_KEY_READY,
        ty::LOG_GROUPS_READY,
        ty::IAM_ROLE_READY,
        ty::COLLECTOR_READY,
        ty::METRICS_SOURCE_READY,
        ty::TRACES_READY,
        ty::PROMETHEUS_READY,
    ];
    // Present only while an archive is enabled (aws_steps removes it otherwise).
    let archive = conditions::find(&c.s.conditions, ty::ARCHIVE_READY).map(|_| ty::ARCHIVE_READY);
    let hot_path = conditions::find(&c.s.conditions, ty::HOT_PATH_READY).map(|_| ty::HOT_PATH_READY);
    // Likewise while alerts are enabled.
    let alerts = conditions::find(&c.s.conditions, ty::ALERTS_READY).map(|_| ty::ALERTS_READY);
    let parts = parts.into_iter().chain(archive).chain(hot_path).chain(alerts);
    let not_ready = parts.into_iter().find_map(|t| {
        conditions::find(&c.s.conditions, t)
            .filter(|x| x.status != st::TRUE)
            .cloned()
    });
    match not_ready {
        None => {
            let idle = conditions::find(&c.s.conditions, ty::COLLECTOR_READY)
                .filter(|x| x.reason == reason::NO_GPU_NODES)
                .map(|x| x.message.clone());
            let msg = idle.unwrap_or_else(|| "pipeline is running".into());
            c.set(ty::READY, st::TRUE, reason::RECONCILED, msg);
        }
        Some(x) => c.set(ty::READY, st::FALSE, &x.reason, format!("{}: {}", x.type_, x.message)),
    }
}

/// Open AWS records are replaced by the latest observation (keeping the first detection time);
/// corrections stay as history, newest last, bounded.
fn merge_drift(old: &[DriftRecord], aws: Option<&Vec<Drift>>, k8s: &[Drift], now: &Time) -> Vec<DriftRecord> {
    let now_s = now.0.to_string();
    let mut out: Vec<DriftRecord> = match aws {
        Some(_) => old
            .iter()
            .filter(|d| d.action.as_deref() != Some(ACTION_REPORTED))
            .cloned()
            .collect(),
        None => old.to_vec(),
    };
    let record = |d: &Drift| {
        let action = if d.corrected { ACTION_CORRECTED } else { ACTION_REPORTED };
        let first_seen = old.iter().find(|o| {
            o.action.as_deref() == Some(ACTION_REPORTED)
                && !d.corrected
                && o.resource == d.resource
                && o.field == d.field
                && o.desired == d.desired
                && o.actual == d.actual
        });
        DriftRecord {
            resource: d.resource.clone(),
            field: d.field.clone(),
            desired: d.desired.clone(),
            actual: d.actual.clone(),
            detected_at: Some(
                first_seen
                    .and_then(|o| o.detected_at.clone())
                    .unwrap_or_else(|| now_s.clone()),
            ),
            action: Some(action.to_string()),
        }
    };
    out.extend(aws.into_iter().flatten().map(record));
    out.extend(k8s.iter().map(record));
    let excess = out.len().saturating_sub(MAX_DRIFT_RECORDS);
    out.drain(..excess);
    out
}

/// Whether the last status already carried the budget warning (so the event is not repeated).
/// The Ready reason and message when this status newly stalls on a terminal reason (one that
/// needs a change, not a retry); `None` when it did not change into one.
pub fn became_stalled(
    old: &MLObservabilityPipelineStatus,
    new: &MLObservabilityPipelineStatus,
) -> Option<(Reason, String)> {
    let now = conditions::find(&new.conditions, ty::READY)?;
    let reason = Reason::parse(&now.reason).filter(|r| now.status == st::FALSE && r.is_terminal())?;
    let before = conditions::find(&old.conditions, ty::READY);
    let same = before.is_some_and(|b| b.status == now.status && b.reason == now.reason);
    (!same).then(|| (reason, now.message.clone()))
}

pub fn was_budget_warned(p: &MLObservabilityPipeline) -> bool {
    p.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, ty::POLICY_COMPLIANT))
        .is_some_and(|c| c.reason == reason::BUDGET_EXCEEDED)
}

/// Whether this status is the first to record the role (the AWS side just became ready).
pub fn aws_arns_new(old: &MLObservabilityPipelineStatus, new: &MLObservabilityPipelineStatus) -> bool {
    let role = |s: &MLObservabilityPipelineStatus| s.aws.as_ref().and_then(|a| a.role_arn.clone());
    role(old).is_none() && role(new).is_some()
}

pub fn aws_summary(s: &MLObservabilityPipelineStatus) -> String {
    let a = s.aws.clone().unwrap_or_default();
    let hot = a
        .hot_path_stream_arn
        .map(|x| format!(", hot path stream {x}"))
        .unwrap_or_default();
    format!(
        "AWS side ready: key {}, log groups {}, role {}{hot}",
        a.kms_key_arn.as_deref().unwrap_or("(CloudWatch default)"),
        a.log_group_arns.join(", "),
        a.role_arn.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
#[path = "alerts_status_tests.rs"]
mod alerts_tests;
#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
