//! The awsJson1_1 wire protocol as botocore's CodePipeline model defines it: the operation
//! named by `X-Amz-Target`, JSON bodies, and errors as `{"__type", "message"}` with the
//! `x-amzn-ErrorType` header, so every AWS client maps them to its exception types.

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use penstock_app::error::AppError;
use penstock_app::store::StoreError;
use serde_json::{Value, json};

/// The target prefix of every CodePipeline operation (`targetPrefix` in the service model).
pub const TARGET_PREFIX: &str = "CodePipeline_20150709.";

/// The content type of requests and responses (`jsonVersion` 1.1).
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// The header carrying the request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// The header naming the exception of an error response.
pub const ERROR_TYPE_HEADER: &str = "x-amzn-errortype";

/// The message of every internal failure: details stay in the server's log.
const INTERNAL_MESSAGE: &str = "An internal error occurred; try again later.";

/// An error answer: CodePipeline's exception name, the HTTP status, a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: Cow<'static, str>,
    pub message: String,
}

impl ApiError {
    /// A client error (HTTP 400) with the given exception name.
    pub fn client(error_type: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::client("ValidationException", message)
    }

    pub fn serialization(message: impl Into<String>) -> Self {
        Self::client("SerializationException", message)
    }

    /// An internal failure (HTTP 500, which clients retry). The cause is not sent: the caller
    /// logs it once with the request id.
    pub fn internal() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_type: Cow::Borrowed("InternalFailure"),
            message: INTERNAL_MESSAGE.into(),
        }
    }

    pub fn is_internal(&self) -> bool {
        self.status.is_server_error()
    }

    /// The JSON body clients parse: `__type` and `message`.
    pub fn body(&self) -> Value {
        json!({ "__type": self.error_type, "message": self.message })
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        let name = error.exception_name();
        match &error {
            AppError::Store(StoreError::Throttled(_)) => {
                ApiError::client(name, "Rate exceeded; slow down and try again.")
            }
            AppError::Store(_) | AppError::Bus(_) | AppError::Internal(_) => ApiError::internal(),
            // The engine's messages carry the exception name in front; the body has it apart.
            AppError::Engine(engine) => {
                let text = engine.to_string();
                let message = text
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(": "))
                    .map(str::to_string)
                    .unwrap_or(text);
                ApiError::client(name, message)
            }
            AppError::PipelineNotFound(pipeline) => ApiError::client(
                name,
                format!("Account does not have a pipeline with name '{pipeline}'"),
            ),
            _ => ApiError::client(name, error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, json_headers(), self.body().to_string()).into_response();
        if let Ok(value) = HeaderValue::from_str(&self.error_type) {
            response.headers_mut().insert(ERROR_TYPE_HEADER, value);
        }
        response
    }
}

/// A successful answer: HTTP 200 with the operation's output shape.
pub fn success(body: &Value) -> Response {
    (StatusCode::OK, json_headers(), body.to_string()).into_response()
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers
}

/// The operation named by an `X-Amz-Target` value, or `UnknownOperationException` as AWS
/// answers for a target it does not serve.
pub fn operation_name(target: Option<&HeaderValue>) -> Result<&str, ApiError> {
    let target = target.and_then(|v| v.to_str().ok()).unwrap_or_default();
    match target.strip_prefix(TARGET_PREFIX) {
        Some(operation) if !operation.is_empty() => Ok(operation),
        _ => Err(ApiError::client(
            "UnknownOperationException",
            format!("X-Amz-Target must name an operation: {TARGET_PREFIX}<Operation>"),
        )),
    }
}

/// The request body as a JSON object. awsJson1_1 clients always send at least `{}`.
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::serialization(
            "the request body is empty; send a JSON object, at least {}",
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::serialization(format!("the request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::serialization(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use penstock_core::engine::EngineError;

    #[test]
    fn operation_comes_from_the_target_header() {
        let value = HeaderValue::from_static("CodePipeline_20150709.GetPipeline");
        assert_eq!(operation_name(Some(&value)), Ok("GetPipeline"));
    }

    #[test]
    fn other_targets_are_unknown_operations() {
        for target in [
            "DynamoDB_20120810.GetItem",
            "CodePipeline_20150709.",
            "GetPipeline",
        ] {
            let value = HeaderValue::from_static(target);
            let error = operation_name(Some(&value)).unwrap_err();
            assert_eq!(error.error_type, "UnknownOperationException", "{target}");
        }
        assert!(operation_name(None).is_err());
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(parse_body(b"{}").is_ok());
        for body in [&b""[..], b"  ", b"{", b"[]", b"\"x\"", b"null"] {
            let error = parse_body(body).unwrap_err();
            assert_eq!(error.error_type, "SerializationException");
        }
    }

    #[test]
    fn engine_refusals_keep_their_exception_name_and_drop_it_from_the_message() {
        let error = ApiError::from(AppError::Engine(EngineError::StageNotFound(
            "stage Deploy not found".into(),
        )));
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.error_type, "StageNotFoundException");
        assert_eq!(error.message, "stage Deploy not found");
    }

    #[test]
    fn internal_failures_hide_their_cause() {
        let error = ApiError::from(AppError::Store(StoreError::Unavailable(
            "disk /var/secret full".into(),
        )));
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!error.message.contains("secret"));
        let throttled = ApiError::from(AppError::Store(StoreError::Throttled("x".into())));
        assert_eq!(throttled.error_type, "ThrottlingException");
        assert_eq!(throttled.status, StatusCode::BAD_REQUEST);
    }
}
