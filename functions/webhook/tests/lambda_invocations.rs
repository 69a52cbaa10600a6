//! The webhook Lambda's handler on the embedded default (SQLite state), fed the payloads Lambda
//! hands it: an API Gateway HTTP API request carrying a GitHub delivery (converted by
//! `lambda_http`, answered in the API Gateway response shape), EventBridge events, Scheduler's
//! scheduled start, and payloads that can never start anything (acknowledged, not failed).

use std::path::Path;

use lambda_http::{Context, LambdaEvent};
use penstock_app::control::Control;
use penstock_app::intake::Intake;
use penstock_core::engine::{Execution, TriggerType};
use penstock_local::runtime::{DataDir, LocalParts};
use penstock_webhook::lambda::{Invocation, WebhookFunction, classify};
use penstock_webhook::{WebhookDeps, WebhookSecret, signature};
use serde_json::{Value, json};

const SECRET: &str = "a test secret";
const HEAD: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

fn fixture(path: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_fixture(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).expect("fixture JSON")
}

struct Local {
    _dir: tempfile::TempDir,
    control: Control,
    function: WebhookFunction,
}

fn local() -> Local {
    let dir = tempfile::tempdir().expect("tempdir");
    let parts = LocalParts::open(DataDir::new(dir.path())).expect("data dir");
    let control = parts.detached_control();
    let function = WebhookFunction::new(WebhookDeps::new(
        Intake::new(control.clone()),
        WebhookSecret::new(SECRET),
    ));
    Local {
        _dir: dir,
        control,
        function,
    }
}

impl Local {
    async fn create(&self, pipeline: Value) {
        let validated = penstock_core::validate::parse_and_validate(
            &json!({ "pipeline": pipeline }).to_string(),
        )
        .expect("valid pipeline");
        self.control
            .create_pipeline(validated.declaration, validated.tags)
            .await
            .expect("create");
    }

    async fn executions(&self, pipeline: &str) -> Vec<Execution> {
        self.control
            .list_executions(pipeline, None, 100)
            .await
            .expect("list")
            .0
    }

    async fn invoke(&self, payload: Value) -> Value {
        self.function
            .handle(LambdaEvent::new(payload, Context::default()))
            .await
            .unwrap_or_else(|e| panic!("invocation failed (retryable {}): {e}", e.retryable))
    }
}

fn pipeline(name: &str, source: Value) -> Value {
    json!({
        "name": name,
        "roleArn": "arn:aws:iam::111111111111:role/p",
        "artifactStore": {"type": "S3", "location": "artifacts"},
        "stages": [
            {"name": "Source", "actions": [source]},
            {"name": "Approve", "actions": [{
                "name": "Approve",
                "actionTypeId": {"category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1"}
            }]}
        ]
    })
}

fn github_source() -> Value {
    json!({
        "name": "Code",
        "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "CodeStarSourceConnection", "version": "1"},
        "configuration": {"FullRepositoryId": "Codertocat/Hello-World", "BranchName": "master"},
        "outputArtifacts": [{"name": "Src"}]
    })
}

fn s3_source(bucket: &str, key: &str) -> Value {
    json!({
        "name": "Object",
        "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
        "configuration": {"S3Bucket": bucket, "S3ObjectKey": key, "PollForSourceChanges": "false"},
        "outputArtifacts": [{"name": "Src"}]
    })
}

/// API Gateway's HTTP API request (payload 2.0) for a GitHub delivery of `body`, signed with
/// `secret`: AWS's documented request example with the method, path and headers GitHub sends.
fn github_request(delivery: &str, body: &[u8], secret: &str) -> Value {
    let mut request = json_fixture("aws/apigw-v2-request.json");
    request["routeKey"] = json!("POST /webhooks/github");
    request["rawPath"] = json!("/webhooks/github");
    request["requestContext"]["routeKey"] = json!("POST /webhooks/github");
    request["requestContext"]["http"]["method"] = json!("POST");
    request["requestContext"]["http"]["path"] = json!("/webhooks/github");
    request["requestContext"]["http"]["userAgent"] = json!("GitHub-Hookshot/044aadd");
    let headers = request["headers"].as_object_mut().expect("headers");
    headers.insert("content-type".into(), json!("application/json"));
    headers.insert("content-length".into(), json!(body.len().to_string()));
    headers.insert("user-agent".into(), json!("GitHub-Hookshot/044aadd"));
    headers.insert("x-github-event".into(), json!("push"));
    headers.insert("x-github-delivery".into(), json!(delivery));
    headers.insert(
        "x-hub-signature-256".into(),
        json!(signature::sign(&WebhookSecret::new(secret), body)),
    );
    request["body"] = json!(String::from_utf8(body.to_vec()).expect("UTF-8 body"));
    request["isBase64Encoded"] = json!(false);
    request
}

/// The JSON body of an API Gateway (payload 2.0) response.
fn response_body(response: &Value) -> Value {
    let body = response["body"].as_str().expect("a text body");
    serde_json::from_str(body).expect("a JSON body")
}

#[test]
fn payloads_are_told_apart_by_shape() {
    assert!(matches!(
        classify(github_request("d", b"{}", SECRET)),
        Invocation::Http(_)
    ));
    assert!(matches!(
        classify(json_fixture("aws/eventbridge-schedule.json")),
        Invocation::Event(_)
    ));
    assert!(matches!(
        classify(json_fixture("aws/s3-event-with-decoded.json")),
        Invocation::Event(_)
    ));
    assert!(matches!(
        classify(json!({"hello": "world"})),
        Invocation::Unknown(_)
    ));
    assert!(matches!(
        classify(json!({"requestContext": "not an object"})),
        Invocation::Unknown(_)
    ));
}

#[tokio::test]
async fn a_github_delivery_through_api_gateway_starts_the_pipeline_and_answers_in_its_shape() {
    let local = local();
    local.create(pipeline("app", github_source())).await;
    let body = fixture("github/push.with-new-branch.payload.json");

    let response = local
        .invoke(github_request("delivery-1", &body, SECRET))
        .await;
    assert_eq!(response["statusCode"], 202, "{response}");
    assert_eq!(response["headers"]["content-type"], "application/json");
    let answer = response_body(&response);
    assert_eq!(answer["started"][0]["pipeline"], "app", "{answer}");
    let executions = local.executions("app").await;
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0].trigger.trigger_type, TriggerType::WebhookV2);
    assert_eq!(executions[0].source_revisions[0].revision_value, HEAD);

    // The same delivery again: answered, nothing new.
    let again = local
        .invoke(github_request("delivery-1", &body, SECRET))
        .await;
    assert_eq!(again["statusCode"], 200);
    assert_eq!(response_body(&again)["duplicate"], true);
    assert_eq!(local.executions("app").await.len(), 1);

    // Signed with another secret: refused by the router, as over plain HTTP.
    let forged = local
        .invoke(github_request("delivery-2", &body, "not the secret"))
        .await;
    assert_eq!(forged["statusCode"], 401);
    assert_eq!(local.executions("app").await.len(), 1);
}

#[tokio::test]
async fn eventbridge_events_and_scheduled_starts_go_to_intake() {
    let local = local();
    local
        .create(pipeline(
            "release",
            s3_source("amzn-s3-demo-bucket1", "releases/app.zip"),
        ))
        .await;
    local
        .create(pipeline("nightly", s3_source("other", "x.zip")))
        .await;

    let report = local
        .invoke(json_fixture("aws/s3-object-created.json"))
        .await;
    assert_eq!(report["started"][0]["pipeline"], "release", "{report}");
    assert_eq!(local.executions("release").await.len(), 1);

    let start = json!({
        "source": "penstock.scheduler",
        "detail-type": "Penstock Scheduled Start",
        "detail": {
            "pipelineName": "nightly",
            "schedule": "arn:aws:scheduler:us-east-1:123456789012:schedule/penstock-pipelines/nightly",
            "scheduledTime": "2026-12-07T06:00:00Z"
        }
    });
    let report = local.invoke(start.clone()).await;
    assert_eq!(report["started"][0]["pipeline"], "nightly", "{report}");
    let executions = local.executions("nightly").await;
    assert_eq!(executions.len(), 1);
    assert_eq!(
        executions[0].trigger.trigger_type,
        TriggerType::CloudWatchEvent
    );
    assert_eq!(
        executions[0].trigger.trigger_detail,
        "arn:aws:scheduler:us-east-1:123456789012:schedule/penstock-pipelines/nightly"
    );
    // Scheduler delivers at least once: the same firing again starts nothing new.
    local.invoke(start).await;
    assert_eq!(local.executions("nightly").await.len(), 1);
}

#[tokio::test]
async fn events_that_can_never_start_anything_are_acknowledged_not_failed() {
    let local = local();
    local
        .create(pipeline("release", s3_source("bucket", "key.zip")))
        .await;

    // Not a payload this function knows.
    let answer = local.invoke(json!({"hello": "world"})).await;
    assert!(answer["ignored"].is_string(), "{answer}");

    // An event of another service (a rule matching too much).
    let answer = local
        .invoke(json!({"version": "0", "id": "x", "source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {}}))
        .await;
    assert_eq!(answer["started"], json!([]), "{answer}");
    assert_eq!(answer["problems"].as_array().map(Vec::len), Some(1));

    // A known event missing what it needs.
    let answer = local
        .invoke(json!({"id": "y", "source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {"name": "bucket"}}}))
        .await;
    assert!(
        answer["rejected"]
            .as_str()
            .is_some_and(|m| m.contains("detail.object.key")),
        "{answer}"
    );

    // A schedule input sent as written, placeholders unfilled: not from Scheduler.
    let answer = local
        .invoke(json!({
            "source": "penstock.scheduler",
            "detail-type": "Penstock Scheduled Start",
            "detail": {"pipelineName": "release", "schedule": "<aws.scheduler.schedule-arn>", "scheduledTime": "<aws.scheduler.scheduled-time>"}
        }))
        .await;
    assert!(
        answer["rejected"]
            .as_str()
            .is_some_and(|m| m.contains("scheduledTime")),
        "{answer}"
    );

    // A schedule naming a pipeline that does not exist: reported, not retried.
    let answer = local
        .invoke(json!({
            "source": "penstock.scheduler",
            "detail-type": "Penstock Scheduled Start",
            "detail": {"pipelineName": "gone", "schedule": "arn:aws:scheduler:us-east-1:123456789012:schedule/g/gone", "scheduledTime": "2026-12-07T06:00:00Z"}
        }))
        .await;
    assert_eq!(answer["started"], json!([]), "{answer}");
    assert!(
        answer["problems"][0]
            .as_str()
            .is_some_and(|m| m.contains("PipelineNotFoundException")),
        "{answer}"
    );
    assert!(local.executions("release").await.is_empty());
}
