//! Controller errors. Each knows its CamelCase reason (condition reason, event reason and metric
//! label) and whether a requeue with backoff may fix it.

use crate::aws::apply::StepError;
use crate::crd::reason::Reason;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An AWS step failed.
    #[error("{0}")]
    Aws(#[from] StepError),
    /// The object lacks something the API server always sets (name, namespace, uid).
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// The reconcile stopped on a terminal reason (written to the Ready condition): it waits for a
    /// change of the spec, the policy or AWS, looking again after `requeue`, never with backoff.
    #[error("{reason}: {message}")]
    Stopped {
        reason: Reason,
        message: String,
        requeue: std::time::Duration,
    },
    /// A child object could not be serialized (a bug, not user input).
    #[error("serialize {kind}: {source}")]
    Serialize {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// CamelCase reason for conditions, events and metric labels.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => Reason::Conflict,
            Error::Kube(_) => Reason::KubeError,
            Error::Aws(e) => e.error.reason(),
            Error::MissingField(_) => Reason::MissingField,
            Error::Stopped { reason, .. } => *reason,
            Error::Serialize { .. } => Reason::SerializeError,
        }
    }

    /// Whether a requeue with backoff may succeed without a spec change.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(s)) => s.code == 409 || s.code == 429 || s.code >= 500,
            Error::Kube(_) => true,
            Error::Aws(e) => e.error.is_retryable(),
            Error::MissingField(_) | Error::Serialize { .. } | Error::Stopped { .. } => false,
        }
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match e {
            F::ApplyFailed(e) | F::CleanupFailed(e) => e,
            F::AddFinalizer(e) | F::RemoveFinalizer(e) => Error::Kube(e),
            F::UnnamedObject => Error::MissingField("metadata.name"),
            F::InvalidFinalizer => Error::MissingField("a valid finalizer path"),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
