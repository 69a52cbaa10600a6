//! The approval handler over the in-memory store: a decision with the open token settles the
//! approval; a wrong token, a bad body or a wrong method are refused with CodePipeline's
//! exception names and change nothing.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request};
use penstock_app::advance::Engine;
use penstock_app::control::Control;
use penstock_app::memory_store::MemoryStore;
use penstock_app::ports::{BusError, Envelope, EventBus, RandomIds, SystemClock};
use penstock_app::repo::Repository;
use penstock_core::engine::{ActionStatus, ExecutionStatus, ExternalExecution, Input};
use penstock_core::model::PipelineDeclaration;
use serde_json::{Value, json};

#[derive(Default)]
struct CollectingBus(Mutex<Vec<Envelope>>);

#[async_trait]
impl EventBus for CollectingBus {
    async fn publish(&self, envelopes: Vec<Envelope>) -> Result<(), BusError> {
        if let Ok(mut published) = self.0.lock() {
            published.extend(envelopes);
        }
        Ok(())
    }
}

/// A pipeline whose source has run and whose Manual approval waits on token `token-1`.
async fn waiting_approval() -> (Control, String) {
    let engine = Engine::new(
        Repository::new(Arc::new(MemoryStore::new())),
        Arc::new(CollectingBus::default()),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
    );
    let control = Control::new(engine);
    let declaration: PipelineDeclaration = serde_json::from_value(json!({
        "name": "gate",
        "roleArn": "arn:aws:iam::123456789012:role/penstock",
        "artifactStore": { "type": "S3", "location": "artifacts" },
        "stages": [
            { "name": "Source", "actions": [{
                "name": "Get",
                "actionTypeId": { "category": "Source", "owner": "AWS", "provider": "S3", "version": "1" },
                "configuration": { "S3Bucket": "sources", "S3ObjectKey": "app.zip" },
                "outputArtifacts": [{ "name": "Src" }]
            }]},
            { "name": "Approve", "actions": [{
                "name": "Review",
                "actionTypeId": { "category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1" }
            }]}
        ]
    }))
    .expect("declaration");
    control
        .create_pipeline(declaration, Vec::new())
        .await
        .expect("create");
    let id = control
        .start_execution("gate", Default::default())
        .await
        .expect("start");
    let execution = control.get_execution("gate", &id).await.expect("execution");
    control
        .engine
        .apply(
            "gate",
            Input::ActionSucceeded {
                execution_id: id.clone(),
                stage: "Source".into(),
                action: "Get".into(),
                attempt: execution.stages[0].actions[0].attempt,
                output_artifacts: vec![penstock_core::engine::ArtifactRef {
                    name: "Src".into(),
                    location: "s3://sources/app.zip".into(),
                    revision_id: None,
                    revision_summary: None,
                }],
                output_variables: Default::default(),
                external: ExternalExecution::default(),
            },
        )
        .await
        .expect("source done");
    let execution = control.get_execution("gate", &id).await.expect("execution");
    let attempt = execution.stages[1].actions[0].attempt;
    control
        .engine
        .apply(
            "gate",
            Input::ActionStarted {
                execution_id: id.clone(),
                stage: "Approve".into(),
                action: "Review".into(),
                attempt,
                external: ExternalExecution {
                    id: None,
                    summary: Some("Check <b>staging</b> & \"sign off\"".into()),
                    url: Some("javascript:alert(1)".into()),
                },
                approval_token: Some("token-1".into()),
            },
        )
        .await
        .expect("approval waiting");
    (control, id)
}

fn request(method: Method, body: &str) -> Request {
    let mut request = Request::new(Body::from(body.to_string()));
    *request.method_mut() = method;
    request
}

fn page_request(method: Method, path_and_query: &str, form: Option<&str>) -> Request {
    let mut request = Request::new(Body::from(form.unwrap_or("").to_string()));
    *request.method_mut() = method;
    *request.uri_mut() = format!("https://api.example.com/prod{path_and_query}")
        .parse()
        .expect("uri");
    if form.is_some() {
        request.headers_mut().insert(
            "content-type",
            lambda_http::http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    request
}

fn html(response: &lambda_http::Response<Body>) -> String {
    match response.body() {
        Body::Text(text) => text.clone(),
        other => panic!("unexpected body {other:?}"),
    }
}

fn decision(token: &str, status: &str) -> String {
    json!({
        "pipelineName": "gate",
        "stageName": "Approve",
        "actionName": "Review",
        "token": token,
        "result": { "status": status, "summary": "looks good" }
    })
    .to_string()
}

fn body_json(response: &lambda_http::Response<Body>) -> Value {
    match response.body() {
        Body::Text(text) => serde_json::from_str(text).expect("json"),
        other => panic!("unexpected body {other:?}"),
    }
}

#[tokio::test]
async fn an_approval_with_the_open_token_settles_the_action() {
    let (control, id) = waiting_approval().await;
    let response = penstock_approval::handle(
        &control,
        request(Method::POST, &decision("token-1", "Approved")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body_json(&response)["approvedAt"].as_f64().is_some());
    let execution = control.get_execution("gate", &id).await.expect("execution");
    assert_eq!(
        execution.stages[1].actions[0].status,
        ActionStatus::Succeeded
    );
    assert_eq!(execution.status, ExecutionStatus::Succeeded);

    // The token is single use.
    let again = penstock_approval::handle(
        &control,
        request(Method::POST, &decision("token-1", "Approved")),
    )
    .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn refusals_name_the_exception_and_change_nothing() {
    let (control, id) = waiting_approval().await;
    let wrong = penstock_approval::handle(
        &control,
        request(Method::POST, &decision("token-2", "Approved")),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(&wrong)["__type"], "InvalidApprovalTokenException");

    let malformed =
        penstock_approval::handle(&control, request(Method::POST, "{\"token\": 1}")).await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(&malformed)["__type"], "ValidationException");

    let put = penstock_approval::handle(&control, request(Method::PUT, "")).await;
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    let get = penstock_approval::handle(&control, request(Method::GET, "")).await;
    assert_eq!(get.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_json(&get)["__type"], "ValidationException");

    let missing = penstock_approval::handle(
        &control,
        request(
            Method::POST,
            &decision("token-1", "Approved").replace("\"gate\"", "\"nope\""),
        ),
    )
    .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_json(&missing)["__type"], "PipelineNotFoundException");

    let execution = control.get_execution("gate", &id).await.expect("execution");
    assert_eq!(
        execution.stages[1].actions[0].status,
        ActionStatus::InProgress
    );

    let rejected = penstock_approval::handle(
        &control,
        request(Method::POST, &decision("token-1", "Rejected")),
    )
    .await;
    assert_eq!(rejected.status(), StatusCode::OK);
    let execution = control.get_execution("gate", &id).await.expect("execution");
    assert_eq!(execution.status, ExecutionStatus::Failed);
}

#[tokio::test]
async fn the_approval_page_shows_what_waits_and_changes_nothing() {
    let (control, id) = waiting_approval().await;
    let response = penstock_approval::handle(
        &control,
        page_request(
            Method::GET,
            "/approvals/gate/Approve/Review?token=token-1",
            None,
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("default-src 'none'")
    );
    let page = html(&response);
    for shown in ["gate", "Approve", "Review", &id] {
        assert!(page.contains(shown), "{shown} missing from {page}");
    }
    // Whatever the summary and link hold is shown as text, never as markup or a script link.
    assert!(
        page.contains("Check &lt;b&gt;staging&lt;&#x2F;b&gt; &amp; &quot;sign off&quot;"),
        "{page}"
    );
    assert!(!page.contains("<b>staging"));
    assert!(!page.contains("href=\"javascript"), "{page}");
    assert!(page.contains("name=\"token\" value=\"token-1\""));
    assert!(page.contains("<dt>Decide before</dt><dd>20"), "{page}");
    assert!(page.contains("value=\"Approved\"") && page.contains("value=\"Rejected\""));
    let execution = control.get_execution("gate", &id).await.expect("execution");
    assert_eq!(
        execution.stages[1].actions[0].status,
        ActionStatus::InProgress,
        "a GET decides nothing"
    );

    // A link with another token, or none, leads nowhere and does not echo the token.
    for path in [
        "/approvals/gate/Approve/Review?token=token-2",
        "/approvals/gate/Approve/Review",
        "/approvals/nope/Approve/Review?token=token-1",
    ] {
        let response =
            penstock_approval::handle(&control, page_request(Method::GET, path, None)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(!html(&response).contains("token-"), "{path}");
    }
}

#[tokio::test]
async fn the_page_buttons_decide_once() {
    let (control, id) = waiting_approval().await;
    let path = "/approvals/gate/Approve/Review";
    let bad = penstock_approval::handle(
        &control,
        page_request(Method::POST, path, Some("token=token-1&status=Maybe")),
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let wrong = penstock_approval::handle(
        &control,
        page_request(Method::POST, path, Some("token=token-2&status=Approved")),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    let execution = control.get_execution("gate", &id).await.expect("execution");
    assert_eq!(
        execution.stages[1].actions[0].status,
        ActionStatus::InProgress
    );

    let approved = penstock_approval::handle(
        &control,
        page_request(
            Method::POST,
            path,
            Some("token=token-1&status=Approved&summary=ship+it"),
        ),
    )
    .await;
    assert_eq!(approved.status(), StatusCode::OK);
    assert!(html(&approved).contains("was approved"));
    let execution = control.get_execution("gate", &id).await.expect("execution");
    assert_eq!(
        execution.stages[1].actions[0].status,
        ActionStatus::Succeeded
    );
    assert_eq!(execution.status, ExecutionStatus::Succeeded);

    // The page of a decided approval, and a second click, change nothing.
    let page = penstock_approval::handle(
        &control,
        page_request(Method::GET, &format!("{path}?token=token-1"), None),
    )
    .await;
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    let again = penstock_approval::handle(
        &control,
        page_request(Method::POST, path, Some("token=token-1&status=Rejected")),
    )
    .await;
    assert!(again.status().is_client_error());
    let execution = control.get_execution("gate", &id).await.expect("execution");
    assert_eq!(execution.status, ExecutionStatus::Succeeded);
}

#[tokio::test]
async fn the_reject_button_fails_the_execution() {
    let (control, id) = waiting_approval().await;
    let rejected = penstock_approval::handle(
        &control,
        page_request(
            Method::POST,
            "/approvals/gate/Approve/Review",
            Some("status=Rejected&token=token-1&summary=not+yet"),
        ),
    )
    .await;
    assert_eq!(rejected.status(), StatusCode::OK);
    assert!(html(&rejected).contains("was rejected"));
    let execution = control.get_execution("gate", &id).await.expect("execution");
    assert_eq!(execution.status, ExecutionStatus::Failed);
}
