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
    /// kube's finalizer helper adds or removes the finalizer with a JSON patch that tests the
    /// finalizer list it read; the API server refuses it (422) when the pipeline changed since,
    /// e.g. a reconcile that ran on a cache not yet showing the previous reconcile's finalizer.
    /// Optimistic concurrency like a 409: retried with backoff, not after ten minutes.
    #[error("the finalizer patch raced another write (its test of the finalizer list failed): {0}")]
    FinalizerRaced(kube::Error),
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
            Error::FinalizerRaced(_) => Reason::Conflict,
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
            Error::Kube(_) | Error::FinalizerRaced(_) => true,
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
            F::AddFinalizer(kube::Error::Api(s)) | F::RemoveFinalizer(kube::Error::Api(s)) if s.code == 422 => {
                Error::FinalizerRaced(kube::Error::Api(s))
            }
            F::AddFinalizer(e) | F::RemoveFinalizer(e) => Error::Kube(e),
            F::UnnamedObject => Error::MissingField("metadata.name"),
            F::InvalidFinalizer => Error::MissingField("a valid finalizer path"),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use kube::runtime::finalizer::Error as F;

    fn api(code: u16) -> kube::Error {
        let reason = if code == 422 { "Invalid" } else { "Conflict" };
        kube::Error::Api(Box::new(
            Status::failure("the server rejected our request due to an error in our request", reason).with_code(code),
        ))
    }

    #[test]
    fn a_refused_finalizer_patch_is_a_conflict_retried_with_backoff() {
        // Seen on the real API server right after creating 400 pipelines (README, runs AK and AL).
        for e in [F::AddFinalizer(api(422)), F::RemoveFinalizer(api(422))] {
            let e = Error::from(e);
            assert!(matches!(e, Error::FinalizerRaced(_)), "{e:?}");
            assert_eq!(e.reason(), Reason::Conflict);
            assert!(e.is_retryable());
        }
        // A 422 anywhere else is still the API server refusing what mlobs sent: not retried.
        let other = Error::Kube(api(422));
        assert_eq!((other.reason(), other.is_retryable()), (Reason::KubeError, false));
        // And a finalizer patch that fails otherwise keeps its own classification.
        let e = Error::from(F::<Error>::AddFinalizer(api(409)));
        assert!(matches!(e, Error::Kube(_)));
        assert_eq!((e.reason(), e.is_retryable()), (Reason::Conflict, true));
    }
}
