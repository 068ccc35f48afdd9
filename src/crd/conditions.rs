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
    /// Every pipeline condition type, in the order they are reported.
    pub const ALL: [&str; 11] = [
        READY,
        KMS_KEY_READY,
        LOG_GROUPS_READY,
        IAM_ROLE_READY,
        COLLECTOR_READY,
        METRICS_SOURCE_READY,
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

/// Ready reasons that need a change (spec, policy, AWS permissions) before a retry can succeed.
/// The Argo CD health scripts under config/argocd list the same reasons (tests/health.rs).
pub const TERMINAL_REASONS: [&str; 15] = [
    "InvalidSpec",
    "NameTooLong",
    "InvalidName",
    "TooManyTags",
    "InvalidAwsPlan",
    "PolicyViolation",
    "PolicyNotFound",
    "DefaultConflict",
    "BudgetExceeded",
    "NameConflict",
    "AccessDenied",
    "AwsError",
    "AwsResourceMissing",
    "CleanupFailed",
    "PodSecurityForbidden",
];

/// Whether a Ready=False reason is terminal (see [`TERMINAL_REASONS`]).
pub fn is_terminal(reason: &str) -> bool {
    TERMINAL_REASONS.contains(&reason)
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
    pub const RECONCILED: &str = "Reconciled";
    pub const RECONCILING: &str = "Reconciling";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const POLICY_VIOLATION: &str = "PolicyViolation";
    pub const POLICY_NOT_FOUND: &str = "PolicyNotFound";
    pub const DEFAULT_CONFLICT: &str = "DefaultConflict";
    pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";
    pub const WAITING_FOR_AWS: &str = "WaitingForAws";
    pub const NAME_CONFLICT: &str = "NameConflict";
    pub const ACCESS_DENIED: &str = "AccessDenied";
    pub const AWS_RETRYABLE: &str = "AwsRetryable";
    pub const AWS_ERROR: &str = "AwsError";
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    pub const DRIFT_CORRECTED: &str = "DriftCorrected";
    pub const NO_DRIFT: &str = "NoDrift";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const COMPLIANT: &str = "Compliant";
    pub const VALID: &str = "Valid";
    /// No DCGM exporter pod runs where the collectors scrape (External selector matches nothing,
    /// or the Managed exporter is not up yet).
    pub const NO_EXPORTER_PODS: &str = "NoExporterPods";
    /// No node matches the GPU node selector (e.g. a node group scaled to zero): nothing to run yet.
    pub const NO_GPU_NODES: &str = "NoGpuNodes";
    /// The collector's namespace enforces a Pod Security level that forbids its hostPath volumes.
    pub const POD_SECURITY_FORBIDDEN: &str = "PodSecurityForbidden";
    /// A namespace the policy names (dcgmExporter.namespace, collectorNamespace) does not exist.
    pub const NAMESPACE_NOT_FOUND: &str = "NamespaceNotFound";
    /// DataFlowing=True: every log group of the pipeline received an event within the grace period.
    pub const DATA_FLOWING: &str = "DataFlowing";
    /// DataFlowing=False: the logs group's newest event is older than the grace period, or there is none.
    pub const NO_RECENT_LOGS: &str = "NoRecentLogs";
    /// DataFlowing=False: the metrics group's newest event is older than the grace period, or there is none.
    pub const NO_RECENT_METRICS: &str = "NoRecentMetrics";
    /// DataFlowing=Unknown: no collector pod is ready, so no data is expected yet.
    pub const COLLECTOR_NOT_READY: &str = "CollectorNotReady";
    /// DataFlowing=Unknown: the collector became ready less than a grace period ago and no event
    /// arrived yet.
    pub const WAITING_FOR_DATA: &str = "WaitingForData";
    /// DataFlowing=Unknown: reading the log streams failed (the message has the AWS error).
    pub const DATA_CHECK_FAILED: &str = "DataCheckFailed";
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
