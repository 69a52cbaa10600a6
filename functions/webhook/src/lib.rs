//! Trigger intake as a function: GitHub webhooks over HTTP (`POST /webhooks/github`, an axum
//! [`Router`] that `penstock serve` mounts and the Lambda serves), and the AWS events that start
//! pipelines (EventBridge schedules, S3 objects created, ECR images pushed; see
//! [`aws_events`]). With the `lambda` feature, [`lambda::WebhookFunction`] is the Lambda
//! handler taking both.
//!
//! A GitHub delivery goes through, in order: the body size limit (413), the
//! `X-Hub-Signature-256` check over the raw body (401; nothing is read before it passes), the
//! body encoding (JSON, or form-encoded with a `payload` field), the event type, then intake,
//! which starts executions and returns at once: the executions run on their own.

pub mod aws_events;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod signature;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use penstock_app::intake::Intake;
use penstock_core::triggers::{GitHubEvent, parse_github_event};
use serde_json::{Value, json};
use tracing::{error, info, warn};

pub use signature::{SignatureError, WebhookSecret};

/// The path GitHub posts to.
pub const GITHUB_PATH: &str = "/webhooks/github";

/// GitHub caps webhook payloads at 25 MB; a larger body is not GitHub's.
pub const DEFAULT_MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// The environment variable holding the webhook secret on the embedded default.
pub const SECRET_ENV: &str = "PENSTOCK_GITHUB_WEBHOOK_SECRET";

/// What the webhook needs.
#[derive(Clone)]
pub struct WebhookDeps {
    pub intake: Intake,
    pub secret: WebhookSecret,
    /// Larger bodies are refused with 413.
    pub max_body_bytes: usize,
}

impl WebhookDeps {
    pub fn new(intake: Intake, secret: WebhookSecret) -> Self {
        Self {
            intake,
            secret,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// `POST /webhooks/github`.
pub fn router(deps: WebhookDeps) -> Router {
    Router::new()
        .route(GITHUB_PATH, post(github))
        .with_state(Arc::new(deps))
}

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    answer(status, json!({ "message": message.into() }))
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn github(State(deps): State<Arc<WebhookDeps>>, headers: HeaderMap, body: Body) -> Response {
    let delivery = header_text(&headers, "x-github-delivery").map(str::to_string);
    let delivery_log = delivery.as_deref().unwrap_or("-");
    let too_large = || {
        warn!(
            delivery = delivery_log,
            limit = deps.max_body_bytes,
            "webhook body over the limit"
        );
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than the {} bytes this webhook accepts",
                deps.max_body_bytes
            ),
        )
    };
    let declared = header_text(&headers, header::CONTENT_LENGTH.as_str())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > deps.max_body_bytes) {
        return too_large();
    }
    // A body without a Content-Length is cut at the limit while it streams in. (A client that
    // disconnects midway also lands here; nobody reads that answer.)
    let body: Bytes = match axum::body::to_bytes(body, deps.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => return too_large(),
    };
    if let Err(e) = signature::verify(
        &deps.secret,
        &body,
        header_text(&headers, "x-hub-signature-256"),
        headers.contains_key("x-hub-signature"),
    ) {
        warn!(delivery = delivery_log, reason = %e, "webhook signature refused");
        return refuse(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let Some(event) = header_text(&headers, "x-github-event") else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the X-GitHub-Event header is missing",
        );
    };
    let payload = match decode_body(header_text(&headers, header::CONTENT_TYPE.as_str()), &body) {
        Ok(payload) => payload,
        Err((status, message)) => return refuse(status, message),
    };
    let parsed = match parse_github_event(event, &payload) {
        Ok(parsed) => parsed,
        Err(e) => {
            warn!(delivery = delivery_log, event, error = %e, "webhook payload refused");
            return refuse(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    match parsed {
        GitHubEvent::Ping { zen, hook_id } => {
            info!(delivery = delivery_log, hook_id, "GitHub ping");
            answer(
                StatusCode::OK,
                json!({ "message": "pong", "zen": zen, "hookId": hook_id }),
            )
        }
        GitHubEvent::Ignored(reason) => {
            info!(delivery = delivery_log, event, reason = %reason, "webhook event ignored");
            answer(StatusCode::OK, json!({ "ignored": reason }))
        }
        GitHubEvent::Git(git) => match deps.intake.git_event(delivery.as_deref(), git).await {
            Ok(report) => {
                let status = if report.duplicate || report.started.is_empty() {
                    StatusCode::OK
                } else {
                    StatusCode::ACCEPTED
                };
                answer(status, serde_json::to_value(&report).unwrap_or(Value::Null))
            }
            Err(e) => {
                error!(delivery = delivery_log, event, error = %e, "webhook delivery failed");
                let status = if e.is_retryable() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                refuse(
                    status,
                    "the delivery could not be processed; push again or start the pipeline",
                )
            }
        },
    }
}

/// The JSON payload of a delivery: the body itself (`application/json`), or its `payload`
/// field (`application/x-www-form-urlencoded`), as GitHub sends for either content type.
pub fn decode_body(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, (StatusCode, String)> {
    let media = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(body.to_vec()),
        "application/x-www-form-urlencoded" => form_urlencoded::parse(body)
            .find(|(name, _)| name == "payload")
            .map(|(_, value)| value.into_owned().into_bytes())
            .ok_or_else(|| {
                (
                    StatusCode::BAD_REQUEST,
                    "the form-encoded body has no payload field".to_string(),
                )
            }),
        other => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type {other} is not accepted: use application/json or application/x-www-form-urlencoded"
            ),
        )),
    }
}
