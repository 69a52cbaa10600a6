//! The awsJson1_1 protocol as clients rely on it: targets, content type, request ids, error
//! bodies and headers, the path clients post to, and internal failures that leak nothing.

mod support;

use std::collections::HashSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use penstock_app::store::StoreError;
use serde_json::json;
use support::{Harness, Signer, signed_request};

#[tokio::test]
async fn a_success_is_json_1_1_with_a_request_id_and_a_date() {
    let h = Harness::new();
    let reply = h.call("ListPipelines", json!({})).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/x-amz-json-1.1");
    assert!(reply.headers.contains_key("date"));
    let id = reply.headers["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(reply.body, json!({ "pipelines": [] }));
}

#[tokio::test]
async fn every_response_gets_its_own_request_id_errors_included() {
    let h = Harness::new();
    let mut ids = HashSet::new();
    for operation in ["ListPipelines", "GetPipeline", "NoSuchThing"] {
        let reply = h.call(operation, json!({})).await;
        let id = reply.headers["x-amzn-requestid"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(ids.insert(id), "request ids repeat");
    }
}

#[tokio::test]
async fn an_unknown_target_is_an_unknown_operation() {
    let h = Harness::new();
    let reply = h.call("NoSuchThing", json!({})).await;
    reply.refused("UnknownOperationException");
    assert_eq!(reply.headers["content-type"], "application/x-amz-json-1.1");
    // A model operation this endpoint does not serve says so.
    let reply = h.call("PollForJobs", json!({})).await;
    reply.refused("UnknownOperationException");
    assert!(
        reply.message().contains("PollForJobs"),
        "{}",
        reply.message()
    );
}

#[tokio::test]
async fn a_missing_target_is_an_unknown_operation() {
    let h = Harness::new();
    let body = b"{}".to_vec();
    let mut request = support::unsigned_request("/", "ListPipelines", body.clone());
    request.headers_mut().remove("x-amz-target");
    let request = support::sign_request(&Signer::default(), request, &body);
    h.send(request).await.refused("UnknownOperationException");
}

#[tokio::test]
async fn clients_may_post_to_any_path() {
    let h = Harness::new();
    for path in ["/", "/prod/api", "/prod/api/"] {
        let signer = Signer {
            path: path.into(),
            ..Signer::default()
        };
        let reply = h
            .send(signed_request(&signer, "ListPipelines", b"{}".to_vec()))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }
}

#[tokio::test]
async fn other_methods_are_left_for_a_console() {
    let h = Harness::new();
    let request = Request::builder()
        .method("GET")
        .uri("/")
        .header("host", support::HOST)
        .body(Body::empty())
        .unwrap();
    let reply = h.send(request).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn explicit_nulls_are_absent_members() {
    let h = Harness::new();
    let reply = h
        .call(
            "ListPipelines",
            json!({ "nextToken": null, "maxResults": null }),
        )
        .await;
    assert_eq!(reply.ok(), json!({ "pipelines": [] }));
    h.call("GetPipeline", json!({ "name": null }))
        .await
        .refused("ValidationException");
}

#[tokio::test]
async fn members_a_newer_model_might_add_are_ignored() {
    let h = Harness::new();
    let reply = h
        .call("ListPipelines", json!({ "someFutureMember": true }))
        .await;
    assert_eq!(reply.ok(), json!({ "pipelines": [] }));
}

#[tokio::test]
async fn every_violation_is_reported_with_its_path() {
    let h = Harness::new();
    let reply = h
        .call(
            "RetryStageExecution",
            json!({
                "pipelineName": "bad name", "stageName": "", "pipelineExecutionId": "x",
                "retryMode": "NOPE"
            }),
        )
        .await;
    reply.refused("ValidationException");
    let message = reply.message();
    assert!(
        message.starts_with("4 validation errors detected"),
        "{message}"
    );
    for path in [
        "pipelineName",
        "stageName",
        "pipelineExecutionId",
        "retryMode",
    ] {
        assert!(message.contains(path), "{path} missing from {message}");
    }
}

#[tokio::test]
async fn a_failing_store_is_an_internal_failure_that_tells_nothing() {
    let h = Harness::new();
    h.store.fail_next(
        5,
        StoreError::Unavailable("disk /var/lib/penstock/secret.db is gone".into()),
    );
    let reply = h.call("ListPipelines", json!({})).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.error_type(), "InternalFailure");
    assert!(
        !reply.message().contains("secret.db"),
        "{}",
        reply.message()
    );
    assert!(reply.headers.contains_key("x-amzn-requestid"));
}

#[tokio::test]
async fn a_throttled_store_asks_the_client_to_slow_down() {
    let h = Harness::new();
    h.store
        .fail_next(5, StoreError::Throttled("provisioned throughput".into()));
    let reply = h.call("ListPipelines", json!({})).await;
    reply.refused("ThrottlingException");
}
