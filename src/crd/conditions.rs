//! Condition types and reasons shared by both kinds.
//!
//! Reasons are CamelCase and are used three ways: condition reason, event reason and metric label.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types of an MLObservabilityPipeline.
pub mod pipeline {
    pub const READY: &str = "Ready";
    pub const KMS_KEY_READY: &str = "KmsKeyReady";
    pub const LOG_GROUPS_READY: &str = "LogGroupsReady";
    pub const IAM_ROLE_READY: &str = "IamRoleReady";
    pub const COLLECTOR_READY: &str = "CollectorReady";
    pub const POLICY_COMPLIANT: &str = "PolicyCompliant";
    pub const DRIFTED: &str = "Drifted";
    /// The DCGM exporter the collectors scrape runs on the pipeline's GPU nodes.
    pub const METRICS_SOURCE_READY: &str = "MetricsSourceReady";
    /// Telemetry reaches CloudWatch: the newest event of each log group is younger than the grace
    /// period. Informative: never part of `Ready`, so health checks (Argo CD, kstatus) ignore it.
    pub const DATA_FLOWING: &str = "DataFlowing";
    /// Spans can reach the traces destination (X-Ray: Transaction Search is on). Only with
    /// `spec.traces.destination`; part of Ready.
    pub const TRACES_READY: &str = "TracesReady";
    /// The AMP workspace the metrics are remote-written to exists and is ACTIVE. Only with
    /// `spec.metrics.prometheus`; part of Ready.
    pub const PROMETHEUS_READY: &str = "PrometheusReady";
    /// The S3 archive bucket exists with Object Lock, encryption, public access block, TLS-only
    /// policy, lifecycle and tags. Only while `spec.archive` is enabled; then part of `Ready`.
    pub const ARCHIVE_READY: &str = "ArchiveReady";
    /// The hot path's Kinesis data stream is ACTIVE with KMS encryption, retention, capacity and
    /// tags as specified. Only while `spec.hotPath` is enabled; then part of `Ready`.
    pub const HOT_PATH_READY: &str = "HotPathReady";
    /// The SNS topic and every CloudWatch alarm exist as planned (and the PrometheusRule is
    /// applied where the cluster serves it). Only while `spec.alerts` is enabled; then part of
    /// `Ready`. A failure here never holds the collector back.
    pub const ALERTS_READY: &str = "AlertsReady";
    /// Every pipeline condition type, in the order they are reported.
    pub const ALL: [&str; 16] = [
        READY,
        KMS_KEY_READY,
        LOG_GROUPS_READY,
        ARCHIVE_READY,
        HOT_PATH_READY,
        IAM_ROLE_READY,
        ALERTS_READY,
        COLLECTOR_READY,
        METRICS_SOURCE_READY,
        TRACES_READY,
        PROMETHEUS_READY,
        POLICY_COMPLIANT,
        DRIFTED,
        DATA_FLOWING,
        super::RECONCILING,
        super::STALLED,
    ];
}

/// kstatus (Flux, kpt, cli-utils) reads these, not `Ready`: `Reconciling=True` while the object
/// is on its way to Ready, `Stalled=True` when it cannot get there without a change.
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Whether a Ready=False reason is terminal ([`Reason::is_terminal`](super::reason::Reason::is_terminal)).
pub fn is_terminal(reason: &str) -> bool {
    super::reason::Reason::parse(reason).is_some_and(super::reason::Reason::is_terminal)
}

/// Sets `Reconciling` and `Stalled` from the `Ready` condition, for kstatus.
pub fn set_kstatus(conditions: &mut Vec<Condition>, generation: Option<i64>, now: Time) -> bool {
    let Some(ready) = find(conditions, pipeline::READY).cloned() else {
        return false;
    };
    let (reconciling, stalled) = match ready.status.as_str() {
        status::TRUE => (false, false),
        status::FALSE if is_terminal(&ready.reason) => (false, true),
        _ => (true, false),
    };
    let mut changed = false;
    for (t, on) in [(RECONCILING, reconciling), (STALLED, stalled)] {
        let (st, reason, message) = if on {
            (status::TRUE, ready.reason.as_str(), ready.message.clone())
        } else {
            (
                status::FALSE,
                reason::RECONCILED,
                format!("see the Ready condition ({})", ready.reason),
            )
        };
        changed |= upsert(conditions, condition(t, st, reason, message, generation, now.clone()));
    }
    changed
}

/// Condition types of a GpuTelemetryPolicy.
pub mod policy {
    pub const READY: &str = "Ready";
    pub const VALID: &str = "Valid";
    /// Managed: the exporter DaemonSet's pods are ready; External: pods match `podSelector`.
    pub const METRICS_SOURCE_READY: &str = "MetricsSourceReady";
}

/// Condition reasons. One vocabulary for conditions, events and metric labels.
pub mod reason {
    use super::super::reason::Reason;

    pub const RECONCILED: &str = Reason::Reconciled.as_str();
    pub const RECONCILING: &str = Reason::Reconciling.as_str();
    pub const INVALID_SPEC: &str = Reason::InvalidSpec.as_str();
    pub const POLICY_VIOLATION: &str = Reason::PolicyViolation.as_str();
    pub const POLICY_NOT_FOUND: &str = Reason::PolicyNotFound.as_str();
    pub const DEFAULT_CONFLICT: &str = Reason::DefaultConflict.as_str();
    pub const BUDGET_EXCEEDED: &str = Reason::BudgetExceeded.as_str();
    pub const WAITING_FOR_AWS: &str = Reason::WaitingForAws.as_str();
    pub const NAME_CONFLICT: &str = Reason::NameConflict.as_str();
    pub const ACCESS_DENIED: &str = Reason::AccessDenied.as_str();
    pub const AWS_RETRYABLE: &str = Reason::AwsRetryable.as_str();
    pub const AWS_ERROR: &str = Reason::AwsError.as_str();
    pub const DRIFT_DETECTED: &str = Reason::DriftDetected.as_str();
    pub const DRIFT_CORRECTED: &str = Reason::DriftCorrected.as_str();
    pub const NO_DRIFT: &str = Reason::NoDrift.as_str();
    pub const ROLLING_OUT: &str = Reason::RollingOut.as_str();
    pub const COLLECTOR_UNSCHEDULABLE: &str = Reason::CollectorUnschedulable.as_str();
    pub const COMPLIANT: &str = Reason::Compliant.as_str();
    pub const VALID: &str = Reason::Valid.as_str();
    pub const NO_EXPORTER_PODS: &str = Reason::NoExporterPods.as_str();
    pub const NO_GPU_NODES: &str = Reason::NoGpuNodes.as_str();
    pub const POD_SECURITY_FORBIDDEN: &str = Reason::PodSecurityForbidden.as_str();
    pub const NAMESPACE_NOT_FOUND: &str = Reason::NamespaceNotFound.as_str();
    pub const DATA_FLOWING: &str = Reason::DataFlowing.as_str();
    pub const NO_RECENT_LOGS: &str = Reason::NoRecentLogs.as_str();
    pub const NO_RECENT_METRICS: &str = Reason::NoRecentMetrics.as_str();
    pub const COLLECTOR_NOT_READY: &str = Reason::CollectorNotReady.as_str();
    pub const WAITING_FOR_DATA: &str = Reason::WaitingForData.as_str();
    pub const DATA_CHECK_FAILED: &str = Reason::DataCheckFailed.as_str();
    pub const CLEANUP_FAILED: &str = Reason::CleanupFailed.as_str();
}

/// Condition status values.
pub mod status {
    pub const TRUE: &str = "True";
    pub const FALSE: &str = "False";
    pub const UNKNOWN: &str = "Unknown";
}

/// Sets `new` in `conditions`, keeping `lastTransitionTime` unless the status changed.
///
/// Returns true when anything about the list changed.
pub fn upsert(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            let changed = *existing != new;
            *existing = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Builds a condition. `now` is passed in so callers stay testable.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn transition_time_changes_only_when_status_changes() {
        let mut list = vec![];
        assert!(upsert(
            &mut list,
            condition(
                pipeline::READY,
                status::FALSE,
                reason::RECONCILING,
                "a",
                Some(1),
                at(10)
            )
        ));
        // Same status, new message: time stays.
        assert!(upsert(
            &mut list,
            condition(
                pipeline::READY,
                status::FALSE,
                reason::WAITING_FOR_AWS,
                "b",
                Some(1),
                at(20)
            )
        ));
        assert_eq!(list[0].last_transition_time, at(10));
        assert_eq!(list[0].reason, reason::WAITING_FOR_AWS);
        // Identical: no change reported.
        assert!(!upsert(
            &mut list,
            condition(
                pipeline::READY,
                status::FALSE,
                reason::WAITING_FOR_AWS,
                "b",
                Some(1),
                at(30)
            )
        ));
        // Status flips: time moves.
        assert!(upsert(
            &mut list,
            condition(pipeline::READY, status::TRUE, reason::RECONCILED, "ok", Some(1), at(40))
        ));
        assert_eq!(list[0].last_transition_time, at(40));
        assert_eq!(list.len(), 1);
    }
}
