//! AWS errors, classified: retryable (throttling, 5xx, timeouts, conflicts) requeue with backoff;
//! terminal ones (access denied, invalid parameters, name conflicts) wait for a spec change.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// An AWS step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// Worth retrying with backoff.
    #[error("{operation} on {resource}: {code}: {message} (will retry)")]
    Retryable {
        operation: String,
        resource: String,
        code: String,
        message: String,
    },
    /// The caller lacks permission: fix the operator's IAM policy.
    #[error("{operation} on {resource}: {code}: {message}")]
    AccessDenied {
        operation: String,
        resource: String,
        code: String,
        message: String,
    },
    /// AWS rejected the request as invalid; retrying the same request cannot help.
    #[error("{operation} on {resource}: {code}: {message}")]
    Terminal {
        operation: String,
        resource: String,
        code: String,
        message: String,
    },
    /// A resource with the desired name exists and is not ours; opt in to adoption to take it over.
    #[error(
        "{resource} already exists and is not managed by mlobs (no mlobs.io/pipeline tag for this pipeline); set spec.adopt: true or annotate mlobs.io/adopt: \"true\" to take it over"
    )]
    NameConflict { resource: String },
    /// Something the plan needs does not exist and mlobs may not create it (e.g. existingRoleArn).
    #[error("{resource} does not exist")]
    Missing { resource: String },
}

impl AwsError {
    /// CamelCase reason for conditions, events and metric labels.
    pub fn reason(&self) -> crate::crd::reason::Reason {
        use crate::crd::reason::Reason;
        match self {
            AwsError::Retryable { .. } => Reason::AwsRetryable,
            AwsError::AccessDenied { .. } => Reason::AccessDenied,
            AwsError::Terminal { .. } => Reason::AwsError,
            AwsError::NameConflict { .. } => Reason::NameConflict,
            AwsError::Missing { .. } => Reason::AwsResourceMissing,
        }
    }

    /// Whether a requeue with backoff may succeed without a spec change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AwsError::Retryable { .. })
    }
}

const RETRYABLE_CODES: [&str; 14] = [
    // S3's throttling, and its answer to a conflicting operation on one bucket in progress.
    "SlowDown",
    "OperationAborted",
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalServerError",
    "KMSInternalException",
    "OperationAbortedException",
    "ConcurrentModification",
    "ConcurrentModificationException",
];

/// The AWS error code of an SDK error, if the service sent one.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    match e {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    }
}

/// An error and its sources, e.g. "dispatch failure: timeout: ...": `SdkError`'s own text is
/// only "dispatch failure", the cause is in its sources.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Classifies an SDK error. `operation` and `resource` end up in the message.
pub fn classify<E>(operation: &str, resource: &str, e: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let op = operation.to_string();
    let res = resource.to_string();
    match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            let timeout = match &e {
                SdkError::TimeoutError(_) => true,
                SdkError::DispatchFailure(d) => d.is_timeout(),
                _ => false,
            };
            AwsError::Retryable {
                operation: op,
                resource: res,
                code: if timeout { "Timeout" } else { "Transport" }.into(),
                message: with_sources(&e),
            }
        }
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("Unknown").to_string();
            let message = s.err().message().unwrap_or_default().to_string();
            let server_error = s.raw().status().is_server_error();
            if RETRYABLE_CODES.contains(&code.as_str()) || server_error {
                AwsError::Retryable {
                    operation: op,
                    resource: res,
                    code,
                    message,
                }
            } else if code.contains("AccessDenied") || code == "UnauthorizedOperation" || code == "AuthFailure" {
                AwsError::AccessDenied {
                    operation: op,
                    resource: res,
                    code,
                    message,
                }
            } else {
                AwsError::Terminal {
                    operation: op,
                    resource: res,
                    code,
                    message,
                }
            }
        }
        _ => AwsError::Terminal {
            operation: op,
            resource: res,
            code: "Client".into(),
            message: format!("{e}"),
        },
    }
}

/// Whether the error says the resource does not exist (deletion treats that as success).
pub fn is_absent<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(code(e), Some("NotFoundException" | "ResourceNotFoundException"))
}

/// `Ok` for success and for "does not exist"; any other error classified for `resource`.
pub fn absent_is_ok<T, E>(sent: Result<T, SdkError<E, HttpResponse>>, op: &str, resource: &str) -> Result<(), AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match sent {
        Ok(_) => Ok(()),
        Err(e) if is_absent(&e) => Ok(()),
        Err(e) => Err(classify(op, resource, e)),
    }
}
