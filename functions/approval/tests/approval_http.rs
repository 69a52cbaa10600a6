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
use penstock_core::engine::{ActionStatus, ArtifactRef, ExecutionStatus, ExternalExecution, Input};
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

/// A pipeline whose source finished and whose Manual approval waits on token `token-1`.
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
                "name": "Fetch",
                "actionTypeId": { "category": "Source", "owner": "AWS", "provider": "S3", "version": "1" },
                "configuration": { "S3Bucket": "source", "S3ObjectKey": "app.zip" },
                "outputArtifacts": [{ "name": "SourceOutput" }]
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
    let attempt_of = |execution: &penstock_core::engine::Execution, stage: usize| {
        execution.stages[stage].actions[0].attempt
    };
    let execution = control.get_execution("gate", &id).await.expect("execution");
    control
        .engine
        .apply(
            "gate",
            Input::ActionSucceeded {
                execution_id: id.clone(),
                stage: "Source".into(),
                action: "Fetch".into(),
                attempt: attempt_of(&execution, 0),
                output_artifacts: vec![ArtifactRef {
                    name: "SourceOutput".into(),
                    location: "s3://artifacts/gate/source.zip".into(),
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
    control
        .engine
        .apply(
            "gate",
            Input::ActionStarted {
                execution_id: id.clone(),
                stage: "Approve".into(),
                action: "Review".into(),
                attempt: attempt_of(&execution, 1),
                external: ExternalExecution::default(),
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

    let get = penstock_approval::handle(&control, request(Method::GET, "")).await;
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);

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
