//! The webhook function on Lambda: one handler for every way it is invoked. API Gateway HTTP
//! requests (GitHub deliveries) go through `lambda_http`'s own request and response conversion to
//! the library's [`router`]; EventBridge events (S3, ECR, scheduled events routed by rules) and
//! EventBridge Scheduler's direct input (a scheduled start) go to [`handle_aws_event`].
//!
//! Failures say whether a retry can help: a store or bus outage is an error (Lambda's
//! asynchronous retries, then the failed-invocation queue, take it again); an event that can never
//! start anything (a shape this function does not know, a member missing) is acknowledged as
//! ignored and logged, so it is not retried.

use axum::Router;
use lambda_http::lambda_runtime::Diagnostic;
use lambda_http::request::LambdaRequest;
use lambda_http::tower::ServiceExt;
use lambda_http::{Adapter, Context, LambdaEvent};
use penstock_app::intake::Intake;
use penstock_aws::HandlerError;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::aws_events::{AwsEventError, handle_aws_event};
use crate::{WebhookDeps, router};

/// What one invocation carries, told apart by its shape.
#[derive(Debug)]
pub enum Invocation {
    /// An API Gateway (HTTP API or REST API) proxy request.
    Http(Box<LambdaRequest>),
    /// An EventBridge event (an envelope with `detail-type`), or an S3 notification (`Records`).
    Event(Value),
    /// Nothing this function handles, and why.
    Unknown(String),
}

/// Tell an invocation's payload apart: an EventBridge envelope has `detail-type` (Scheduler's
/// input for a scheduled start is shaped like one), an S3 notification has `Records`, an API
/// Gateway request has `requestContext`.
pub fn classify(payload: Value) -> Invocation {
    if payload.get("detail-type").is_some() || payload.get("Records").is_some() {
        return Invocation::Event(payload);
    }
    if payload.get("requestContext").is_some() {
        return match serde_json::from_value::<LambdaRequest>(payload) {
            Ok(request) => Invocation::Http(Box::new(request)),
            Err(e) => Invocation::Unknown(format!("an HTTP request of no known shape: {e}")),
        };
    }
    Invocation::Unknown(
        "neither an EventBridge event, an S3 notification nor an API Gateway request".into(),
    )
}

/// The webhook function: the router for HTTP requests, intake for events.
#[derive(Clone)]
pub struct WebhookFunction {
    router: Router,
    intake: Intake,
}

impl WebhookFunction {
    pub fn new(deps: WebhookDeps) -> Self {
        Self {
            intake: deps.intake.clone(),
            router: router(deps),
        }
    }

    /// Handle one invocation. `Err` only for failures a retry can fix; everything else is an
    /// answer (the HTTP response, the intake report, or why the event was ignored).
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
        let LambdaEvent { payload, context } = event;
        match classify(payload) {
            Invocation::Http(request) => Ok(self.http(*request, context).await),
            Invocation::Event(event) => penstock_aws::handler::outcome(self.event(&event).await),
            Invocation::Unknown(reason) => {
                warn!(reason = %reason, "invocation ignored");
                Ok(json!({ "ignored": reason }))
            }
        }
    }

    /// An HTTP request through the router, converted both ways by `lambda_http` exactly as
    /// `lambda_http::run` would (the response shape follows the request's origin).
    async fn http(&self, request: LambdaRequest, context: Context) -> Value {
        let adapter = Adapter::from(self.router.clone());
        let response = match adapter.oneshot(LambdaEvent::new(request, context)).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        serde_json::to_value(response).unwrap_or_else(|e| {
            // Serialising a response of strings and numbers does not fail; if it ever did, API
            // Gateway answers 502 to an empty object, which is what a failed function gets.
            warn!(error = %e, "HTTP response not serialisable");
            json!({})
        })
    }

    async fn event(&self, event: &Value) -> Result<Value, HandlerError> {
        let id = event.get("id").and_then(Value::as_str).unwrap_or("-");
        let detail_type = event
            .get("detail-type")
            .and_then(Value::as_str)
            .unwrap_or("-");
        match handle_aws_event(&self.intake, event).await {
            Ok(report) => {
                info!(
                    event_id = id,
                    detail_type,
                    duplicate = report.duplicate,
                    started = report.started.len(),
                    problems = ?report.problems,
                    "trigger event taken in"
                );
                Ok(serde_json::to_value(&report).unwrap_or(Value::Null))
            }
            Err(e @ AwsEventError::Missing { .. }) => Err(HandlerError::rejected(e.to_string())),
            Err(AwsEventError::Intake(e)) => Err(HandlerError::from(e)),
        }
    }
}

/// Lambda's error report: the type says whether a retry can help.
pub fn diagnostic(error: HandlerError) -> Diagnostic {
    Diagnostic {
        error_type: if error.retryable {
            "Retryable"
        } else {
            "Rejected"
        }
        .to_string(),
        error_message: error.message,
    }
}
