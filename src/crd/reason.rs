//! The one vocabulary of reasons. Each [`Reason`] is, in the same CamelCase word, a condition
//! reason, an event reason and a metric label; whether it is terminal (waits for a change of the
//! spec, the policy or AWS, not a retry) is declared here once. The Argo CD health script and the
//! kstatus logic are checked against [`Reason::terminal`] by tests/health.rs.

macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $variant:ident $(= $terminal:ident)?,)*) => {
        /// A CamelCase reason: condition reason, event reason and metric label.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The CamelCase word.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => stringify!($variant),)*
                }
            }

            /// Waits for a change of the spec, the policy or AWS: a Ready=False with it is
            /// Stalled, and the controller does not retry it with backoff.
            pub const fn is_terminal(self) -> bool {
                match self {
                    $(Reason::$variant => reasons!(@terminal $($terminal)?),)*
                }
            }
        }
    };
    (@terminal terminal) => { true };
    (@terminal) => { false };
}

reasons! {
    // Progress and success.
    /// Everything is as the spec says.
    Reconciled,
    /// Work is in progress.
    Reconciling,
    /// AWS resources are being created or checked.
    WaitingForAws,
    /// The collector DaemonSet is rolling out.
    RollingOut,
    /// A collector pod cannot be scheduled on its GPU node (the scheduler's message says why:
    /// the node's pod capacity, CPU or memory, a taint). Not terminal: the scheduler keeps trying.
    CollectorUnschedulable,
    /// The pipeline complies with its policy.
    Compliant,
    /// The policy is valid.
    Valid,
    /// No drift between the spec and what runs.
    NoDrift,
    /// Drift was found and reported (driftPolicy Report).
    DriftDetected,
    /// Drift was found and put back.
    DriftCorrected,
    /// The AWS resources are ready (event).
    AwsReady,
    /// The AWS resources were handled per deletionPolicy (event).
    AwsCleanedUp,
    /// The archive bucket (and its KMS key) outlive the pipeline: Object Lock forbids deleting
    /// it, also under deletionPolicy Delete (event).
    ArchiveRetained,
    /// A child object was created (event).
    Created,
    /// A child object was updated (event).
    Updated,
    /// A child object mlobs no longer wants was deleted (event).
    Deleted,
    // Placement and metrics source.
    /// No node matches the GPU node selector: nothing runs yet.
    NoGpuNodes,
    /// No DCGM exporter pod runs on the GPU nodes.
    NoExporterPods,
    /// A namespace the children belong in does not exist.
    NamespaceNotFound,
    /// Pod Security admission rejects the collector's pods.
    PodSecurityForbidden = terminal,
    // Data flow (informative).
    /// Telemetry reaches CloudWatch.
    DataFlowing,
    /// The logs group has no recent event.
    NoRecentLogs,
    /// The metrics group has no recent event.
    NoRecentMetrics,
    /// No collector pod is ready, so no data is expected yet.
    CollectorNotReady,
    /// The collector became ready less than a grace period ago.
    WaitingForData,
    /// Reading the log streams failed.
    DataCheckFailed,
    // Input.
    /// The spec (or the policy) breaks a validation rule.
    InvalidSpec = terminal,
    /// A derived AWS name exceeds its limit.
    NameTooLong = terminal,
    /// A derived AWS name has a character AWS refuses.
    InvalidName = terminal,
    /// More tags than AWS allows on a resource.
    TooManyTags = terminal,
    /// The AWS plan breaks an AWS limit.
    InvalidAwsPlan = terminal,
    /// The pipeline breaks a guardrail of its policy.
    PolicyViolation = terminal,
    /// spec.policyRef names no policy.
    PolicyNotFound = terminal,
    /// Several policies say default: true.
    DefaultConflict = terminal,
    /// The estimate exceeds the policy budget (Deny).
    BudgetExceeded = terminal,
    /// The fleet's instance type is unknown to the cost model.
    UnknownInstanceType,
    // AWS.
    /// An AWS resource with the desired name exists and is not ours.
    NameConflict = terminal,
    /// AWS refused a call for lack of permission.
    AccessDenied = terminal,
    /// A throttling, 5xx or network error: retried with backoff.
    AwsRetryable,
    /// Another AWS error that a retry will not fix.
    AwsError = terminal,
    /// Something the plan names does not exist and mlobs may not create it.
    AwsResourceMissing = terminal,
    /// The AMP workspace the pipeline writes to does not exist (looked for again at each resync).
    WorkspaceNotFound,
    /// The AMP workspace exists but is not ACTIVE yet.
    WorkspaceNotActive,
    /// X-Ray stores segments in X-Ray, not CloudWatch Logs: its OTLP endpoint refuses spans
    /// until Transaction Search is enabled in the account (looked for again at each resync).
    TransactionSearchDisabled,
    /// Deleting AWS resources failed; the finalizer stays.
    CleanupFailed = terminal,
    // Kubernetes and the operator.
    /// A write conflicted with another writer (409, or 422 on the finalizer patch whose test of
    /// the finalizer list failed): retried with backoff.
    Conflict,
    /// The API server refused or failed a request.
    KubeError,
    /// The object lacks a field the API server always sets.
    MissingField,
    /// A child could not be serialized (a bug).
    SerializeError,
    /// This replica lost its Lease.
    LostLeadership,
}

impl Reason {
    /// The reason of a CamelCase word, if it is one.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == s)
    }

    /// Every terminal reason.
    pub fn terminal() -> impl Iterator<Item = Reason> {
        Reason::ALL.iter().copied().filter(|r| r.is_terminal())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_one_camel_case_word_that_parses_back() {
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(s.chars().next().is_some_and(|c| c.is_ascii_uppercase()), "{s}");
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
            assert_eq!(Reason::parse(s), Some(*r));
        }
        assert_eq!(Reason::parse("NoSuchReason"), None);
    }

    #[test]
    fn waiting_and_retryable_reasons_are_not_terminal() {
        for r in [
            Reason::WaitingForAws,
            Reason::AwsRetryable,
            Reason::Conflict,
            Reason::NoExporterPods,
            Reason::NoRecentLogs,
            Reason::RollingOut,
        ] {
            assert!(!r.is_terminal(), "{r}");
        }
        assert!(Reason::AccessDenied.is_terminal() && Reason::PodSecurityForbidden.is_terminal());
        assert_eq!(Reason::terminal().count(), 15);
    }
}
