//! Reading SDK errors at the adapter boundary: the service's error code, whether it means
//! "slow down", and a message that keeps the whole cause chain.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_smithy_runtime_api::client::result::SdkError;

/// Error codes AWS services use to ask callers to slow down (the SDK has retried them already
/// by the time an adapter sees one).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "LimitExceededException",
];

pub(crate) fn is_throttling_code(code: &str) -> bool {
    THROTTLING_CODES.contains(&code)
}

/// What an SDK error means to an adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The service answered with this error code.
    Service(String),
    /// The service asked to slow down.
    Throttled,
    /// No usable answer: timeout, connection failure, unparseable response.
    Transport,
    /// The request could not even be built (a bug or bad input, not worth retrying).
    Construction,
}

pub(crate) fn kind<E, R>(error: &SdkError<E, R>) -> ErrorKind
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(service) => match service.err().code() {
            Some(code) if is_throttling_code(code) => ErrorKind::Throttled,
            Some(code) => ErrorKind::Service(code.to_string()),
            None => ErrorKind::Transport,
        },
        SdkError::ConstructionFailure(_) => ErrorKind::Construction,
        _ => ErrorKind::Transport,
    }
}

/// The error and every cause, on one line.
pub(crate) fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    DisplayErrorContext(error).to_string()
}
