//! The approval function: applies approval decisions sent over HTTP (API Gateway) in
//! CodePipeline's `PutApprovalResult` shape, through the shared control use case, and serves
//! approval pages (`GET /approvals/{pipeline}/{stage}/{action}?token=…`) whose Approve and
//! Reject buttons post a form to the same address ([`page`]). The approval token is the
//! capability: it is issued per attempt, single use, and checked by the engine.

pub mod page;

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
    let target = page::PageTarget::from_path(request.uri().path());
    let is_form = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    match (request.method(), target) {
        (&Method::GET, Some(target)) => return show(control, &request, &target).await,
        (&Method::POST, Some(target)) if is_form => {
            return decide_form(control, &request, &target).await;
        }
        (&Method::POST, _) => {}
        (&Method::GET, None) => {
            return error_response(
                StatusCode::NOT_FOUND,
                "ValidationException",
                "approval pages are at /approvals/{pipeline}/{stage}/{action}?token=...",
            );
        }
        _ => {
            return error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "ValidationException",
                "approval decisions are POSTed",
            );
        }
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
    match decide(control, &decision).await {
        Ok(()) => {
            let now = control.engine.clock.now();
            json_response(
                StatusCode::OK,
                json!({ "approvedAt": now.as_epoch_seconds_f64() }),
            )
        }
        Err((status, name, message)) => error_response(status, name, &message),
    }
}

/// The body bytes of a request.
fn body_bytes(request: &Request) -> &[u8] {
    match request.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    }
}

/// The `token` query parameter.
fn query_token(request: &Request) -> Option<String> {
    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
}

/// `GET`: the page of the approval waiting on the link's token, or "no approval waiting".
async fn show(control: &Control, request: &Request, target: &page::PageTarget) -> Response<Body> {
    let Some(token) = query_token(request) else {
        return page::not_waiting_page();
    };
    match control.runtime(&target.pipeline).await {
        Ok(runtime) => match page::waiting(&runtime.value.state, target, &token) {
            Some(waiting) => page::waiting_page(target, &token, &waiting),
            None => page::not_waiting_page(),
        },
        Err(AppError::PipelineNotFound(_)) => page::not_waiting_page(),
        Err(error) => {
            tracing::error!(error = %error, "loading an approval page failed");
            page::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "the approval could not be loaded; try again",
            )
        }
    }
}

/// `POST` of the page's form: `token`, `status` (`Approved` or `Rejected`), `summary`.
async fn decide_form(
    control: &Control,
    request: &Request,
    target: &page::PageTarget,
) -> Response<Body> {
    let mut token = None;
    let mut status = None;
    let mut summary = String::new();
    for (name, value) in form_urlencoded::parse(body_bytes(request)) {
        match name.as_ref() {
            "token" => token = Some(value.into_owned()),
            "status" => status = Some(value.into_owned()),
            "summary" => summary = value.into_owned(),
            _ => {}
        }
    }
    let status = match status.as_deref() {
        Some("Approved") => ApprovalStatus::Approved,
        Some("Rejected") => ApprovalStatus::Rejected,
        _ => {
            return page::error_page(
                StatusCode::BAD_REQUEST,
                "the form must say Approved or Rejected",
            );
        }
    };
    let Some(token) = token else {
        return page::error_page(StatusCode::BAD_REQUEST, "the form has no approval token");
    };
    let decision = ApprovalRequest {
        pipeline_name: target.pipeline.clone(),
        stage_name: target.stage.clone(),
        action_name: target.action.clone(),
        token,
        result: ApprovalResult { status, summary },
    };
    match decide(control, &decision).await {
        Ok(()) => page::decided_page(target, status == ApprovalStatus::Approved),
        Err((status, _, message)) => page::error_page(status, &message),
    }
}

/// Apply a decision; a refusal or failure as (HTTP status, exception name, message).
async fn decide(
    control: &Control,
    decision: &ApprovalRequest,
) -> Result<(), (StatusCode, &'static str, String)> {
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
            Ok(())
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
            Err((status, error.exception_name(), message))
        }
    }
}
