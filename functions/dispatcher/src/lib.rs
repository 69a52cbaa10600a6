//! The dispatcher: claims the action attempt an `ActionScheduled` event names and runs its
//! provider (the shared [`Dispatcher`] use case), then reports the result to the engine.
//!
//! An `ActionCancelled` event needs no work here: each invocation runs one attempt, and an
//! abandoned attempt's later result is ignored by the engine (it names an old attempt).

use penstock_app::dispatch::{DispatchResult, Dispatcher};
use penstock_app::ports::{ACTION_CANCELLED, ACTION_SCHEDULED, BusMessage, INTERNAL_EVENT_SOURCE};
use penstock_aws::HandlerError;
use penstock_aws::bus::decode_internal_event;
use serde_json::{Value, json};
use tracing::info;

/// Where attempts get their scratch directories (Lambda's writable storage).
pub const WORK_ROOT: &str = "/tmp/penstock-work";

/// The event patterns of the rules that target the dispatcher, by rule role.
pub fn event_patterns() -> Vec<(&'static str, Value)> {
    vec![(
        "ActionEvents",
        json!({
            "source": [INTERNAL_EVENT_SOURCE],
            "detail-type": [ACTION_SCHEDULED, ACTION_CANCELLED],
        }),
    )]
}

/// Handle one invocation: a direct EventBridge event or an SQS batch of them.
pub async fn handle(dispatcher: &Dispatcher, payload: Value) -> Result<Value, HandlerError> {
    penstock_aws::handler::for_each_event(payload, |event| handle_event(dispatcher, event)).await
}

/// Handle one EventBridge event.
pub async fn handle_event(dispatcher: &Dispatcher, event: Value) -> Result<Value, HandlerError> {
    let envelope =
        decode_internal_event(&event).map_err(|e| HandlerError::rejected(e.to_string()))?;
    match envelope.message {
        BusMessage::ActionScheduled(job) => {
            let (pipeline, action, attempt) =
                (job.pipeline_name.clone(), job.action.clone(), job.attempt);
            let result = dispatcher.dispatch(job).await?;
            info!(pipeline, action, attempt, event_id = %envelope.id, result = ?result, "dispatched");
            Ok(json!({ "result": match result {
                DispatchResult::Ran => "ran",
                DispatchResult::AlreadyClaimed => "already-claimed",
                DispatchResult::Stale => "stale",
            }}))
        }
        BusMessage::ActionCancelled {
            execution_id,
            stage,
            action,
            attempt,
        } => {
            dispatcher.cancel(&execution_id, &stage, &action, attempt);
            Ok(json!({ "result": "cancelled" }))
        }
        other => Err(HandlerError::rejected(format!(
            "the dispatcher does not handle {} events",
            other.detail_type()
        ))),
    }
}
