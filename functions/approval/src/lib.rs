//! The approval function: applies approval decisions sent over HTTP (API Gateway) in
//! CodePipeline's `PutApprovalResult` shape, through the shared control use case. The
//! approval token is the capability: it is issued per attempt, single use, and checked by the
//! engine.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use penstock_app::control::Control;
use penstock_app::error::AppError;
use serde::Deserialize;
use serde_json::json;
use tracing::info;

/// A `PutApprovalResult` request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRequest {
    pub pipeline_name: String,
    pub stage_name: String,
    pub action_name: String,
    pub token: String,
    pub result: ApprovalResult,
}

#[derive(Debug, Deserialize)]
pub struct ApprovalResult {
    pub status: ApprovalStatus,
    #[serde(default)]
    pub summary: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ApprovalStatus {
    Approved,
    Rejected,
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        lambda_http::http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(status: StatusCode, name: &str, message: &str) -> Response<Body> {
    json_response(status, json!({ "__type": name, "message": message }))
}

/// Answer one HTTP request. Refusals are 4xx with CodePipeline's exception name in `__type`;
/// failures worth retrying are 5xx (429 when throttled), so clients retry them.
pub async fn handle(control: &Control, request: Request) -> Response<Body> {
    if request.method() != Method::POST {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "ValidationException",
            "approval decisions are POSTed",
        );
    }
    let parsed: Result<ApprovalRequest, _> = match request.body() {
        Body::Text(text) => serde_json::from_str(text),
        Body::Binary(bytes) => serde_json::from_slice(bytes),
        Body::Empty => serde_json::from_str(""),
        _ => serde_json::from_str(""),
    };
    let decision = match parsed {
        Ok(decision) => decision,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &format!("the body is not a PutApprovalResult request: {e}"),
            );
        }
    };
    let approved = decision.result.status == ApprovalStatus::Approved;
    match control
        .put_approval_result(
            &decision.pipeline_name,
            &decision.stage_name,
            &decision.action_name,
            &decision.token,
            approved,
            decision.result.summary.clone(),
        )
        .await
    {
        Ok(_) => {
            info!(
                pipeline = %decision.pipeline_name,
                stage = %decision.stage_name,
                action = %decision.action_name,
                approved,
                "approval decided"
            );
            let now = control.engine.clock.now();
            json_response(
                StatusCode::OK,
                json!({ "approvedAt": now.as_epoch_seconds_f64() }),
            )
        }
        Err(error) => {
            let status = match &error {
                AppError::Store(penstock_app::store::StoreError::Throttled(_)) => {
                    StatusCode::TOO_MANY_REQUESTS
                }
                e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
                AppError::Internal(_) | AppError::Store(_) | AppError::Bus(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                AppError::PipelineNotFound(_) | AppError::ExecutionNotFound(_) => {
                    StatusCode::NOT_FOUND
                }
                _ => StatusCode::BAD_REQUEST,
            };
            let message = if status.is_server_error() {
                tracing::error!(error = %error, "approval failed");
                "the decision could not be recorded; try again".to_string()
            } else {
                error.to_string()
            };
            error_response(status, error.exception_name(), &message)
        }
    }
}
