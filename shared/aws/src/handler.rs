//! What the Lambda handlers return when they fail: the reason, and whether invoking them again
//! with the same event can help (the runtime retries those; the others are logged and dropped).

use penstock_app::error::AppError;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub retryable: bool,
    pub message: String,
}

impl HandlerError {
    /// An event this function can never handle (malformed, not for it).
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }

    /// A failure that may pass (a throttled or unreachable service, a contended pipeline).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }
}

impl From<AppError> for HandlerError {
    fn from(error: AppError) -> Self {
        Self {
            retryable: error.is_retryable(),
            message: error.to_string(),
        }
    }
}

/// The events of an invocation: one EventBridge event delivered directly, or the bodies of an
/// SQS batch (a queue between the bus and the function), each with its message id.
pub fn events_of(
    payload: &serde_json::Value,
) -> Result<Vec<(Option<String>, serde_json::Value)>, HandlerError> {
    let Some(records) = payload.get("Records").and_then(|r| r.as_array()) else {
        return Ok(vec![(None, payload.clone())]);
    };
    records
        .iter()
        .map(|record| {
            let id = record
                .get("messageId")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let body = record
                .get("body")
                .and_then(|v| v.as_str())
                .ok_or_else(|| HandlerError::rejected("an SQS record without a body"))?;
            let event = serde_json::from_str(body).map_err(|e| {
                HandlerError::rejected(format!("an SQS record body is not JSON: {e}"))
            })?;
            Ok((id, event))
        })
        .collect()
}

/// Handle every event of an invocation with `handle`. For an SQS batch the answer lists the
/// messages to deliver again (`batchItemFailures`: only retryable failures; the others are
/// logged and dropped); for a direct event, a failure is the invocation's error.
pub async fn for_each_event<F, Fut>(
    payload: serde_json::Value,
    handle: F,
) -> Result<serde_json::Value, HandlerError>
where
    F: Fn(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, HandlerError>>,
{
    let events = events_of(&payload)?;
    let batch = payload.get("Records").is_some();
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for (id, event) in events {
        match handle(event).await {
            Ok(result) => results.push(result),
            Err(error) if !batch => return Err(error),
            Err(error) => {
                tracing::warn!(message_id = ?id, retryable = error.retryable, error = %error.message, "event failed");
                if error.retryable
                    && let Some(id) = id
                {
                    failures.push(serde_json::json!({ "itemIdentifier": id }));
                }
            }
        }
    }
    if batch {
        Ok(serde_json::json!({ "batchItemFailures": failures }))
    } else {
        Ok(results
            .into_iter()
            .next()
            .unwrap_or(serde_json::Value::Null))
    }
}

/// What an invocation answers: a failure that retrying cannot fix is logged and answered as
/// handled (so Lambda and EventBridge do not retry it pointlessly); others stay failures.
pub fn outcome(
    result: Result<serde_json::Value, HandlerError>,
) -> Result<serde_json::Value, HandlerError> {
    match result {
        Err(error) if !error.retryable => {
            tracing::error!(error = %error.message, "event rejected; not retrying");
            Ok(serde_json::json!({ "rejected": error.message }))
        }
        other => other,
    }
}
