//! The control plane: CodePipeline's JSON API (awsJson1_1) as an axum [`Router`], so the `aws`
//! CLI, boto3 and the SDKs work unchanged with `--endpoint-url`. Every request is authenticated
//! with AWS Signature Version 4 against the credentials the server holds.
//!
//! The API answers `POST` on any path (clients post to the path of their endpoint URL); other
//! methods are left free for a console.

pub mod auth;
pub mod operations;
pub mod paging;
pub mod protocol;
pub mod views;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use penstock_app::control::Control;
use tracing::{debug, error, info};

use crate::auth::{Credentials, DEFAULT_MAX_CLOCK_SKEW, Verifier};
use crate::protocol::{ApiError, REQUEST_ID_HEADER};

/// The largest request body read, by default: far above any pipeline declaration.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the control plane needs.
#[derive(Clone)]
pub struct ApiDeps {
    pub control: Control,
    /// Access key ids and their secrets; requests signed with anything else are refused.
    pub credentials: Credentials,
    /// The region and account that pipeline ARNs name.
    pub region: String,
    pub account_id: String,
    /// How far a request's `X-Amz-Date` may be from the server's clock.
    pub max_clock_skew: Duration,
    /// Larger request bodies are refused with HTTP 413.
    pub max_body_bytes: usize,
}

impl ApiDeps {
    /// The defaults: 15 minutes of clock skew, 1 MiB bodies.
    pub fn new(
        control: Control,
        credentials: Credentials,
        region: impl Into<String>,
        account_id: impl Into<String>,
    ) -> Self {
        Self {
            control,
            credentials,
            region: region.into(),
            account_id: account_id.into(),
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The state every request shares.
pub struct Api {
    pub control: Control,
    pub region: String,
    pub account_id: String,
    verifier: Verifier,
    max_body_bytes: usize,
}

/// The id of one request, in the `x-amzn-RequestId` header and in the log lines about it.
#[derive(Debug, Clone)]
struct RequestId(String);

/// The CodePipeline API on `POST` at any path.
pub fn router(deps: ApiDeps) -> Router {
    let api = Arc::new(Api {
        verifier: Verifier::new(deps.credentials, deps.max_clock_skew),
        control: deps.control,
        region: deps.region,
        account_id: deps.account_id,
        max_body_bytes: deps.max_body_bytes,
    });
    Router::new()
        .fallback(handle)
        .with_state(api.clone())
        .layer(middleware::from_fn_with_state(api, stamp))
}

/// Give every response a request id and a `Date` from the clock signatures are checked
/// against: clients correct their clock skew from it.
async fn stamp(State(api): State<Arc<Api>>, mut request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(api.now())) {
        headers.insert(header::DATE, value);
    }
    response
}

async fn handle(State(api): State<Arc<Api>>, request: Request) -> Response {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    match api.serve(request).await {
        Ok(body) => {
            debug!(request_id, target, "request served");
            protocol::success(&body)
        }
        Err(e) if e.is_internal() => {
            // The cause was logged where it was known; the caller gets the generic message.
            error!(request_id, target, "request failed internally");
            e.into_response()
        }
        Err(e) => {
            info!(request_id, target, error_type = %e.error_type, message = %e.message, "request refused");
            e.into_response()
        }
    }
}

impl Api {
    /// The server's time, from the engine's clock.
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.control.engine.clock.now().0.max(0) as u64)
    }

    async fn serve(&self, request: Request) -> Result<serde_json::Value, ApiError> {
        let (parts, body) = request.into_parts();
        if parts.method != Method::POST {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                error_type: "UnknownOperationException".into(),
                message: "the API answers POST requests only".into(),
            });
        }
        let body = self.read_body(&parts.headers, body).await?;
        // The client signed the path it posted to, before any router stripped a prefix.
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map(|o| &o.0)
            .unwrap_or(&parts.uri);
        let now =
            UNIX_EPOCH + Duration::from_millis(self.control.engine.clock.now().0.max(0) as u64);
        let caller = self
            .verifier
            .verify(&parts.method, uri, &parts.headers, &body, now)?;
        let operation = protocol::operation_name(parts.headers.get("x-amz-target"))?;
        let input = protocol::parse_body(&body)?;
        let context = operations::Context { caller: &caller };
        operations::dispatch(self, &context, operation, input)
            .await
            .inspect_err(|e| {
                if e.is_internal() {
                    error!(operation, "operation failed: {e}");
                }
            })
    }

    async fn read_body(
        &self,
        headers: &axum::http::HeaderMap,
        body: Body,
    ) -> Result<axum::body::Bytes, ApiError> {
        let too_large = || ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error_type: "RequestEntityTooLargeException".into(),
            message: format!(
                "the request body is larger than {} bytes",
                self.max_body_bytes
            ),
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(too_large());
        }
        axum::body::to_bytes(body, self.max_body_bytes)
            .await
            .map_err(|e| {
                let source = std::error::Error::source(&e);
                let is_limit = source.is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                    || e.into_inner().is::<http_body_util::LengthLimitError>();
                if is_limit {
                    too_large()
                } else {
                    ApiError::serialization("the request body could not be read")
                }
            })
    }
}
