//! `POST /webhooks/github` over real HTTP on loopback, on the embedded default (SQLite state):
//! signatures and every refusal, each event type with GitHub's own payloads, both body
//! encodings, the body limit, delivery dedupe and racing deliveries of one push.

use std::path::Path;

use penstock_app::control::Control;
use penstock_app::intake::Intake;
use penstock_core::engine::{Execution, TriggerType};
use penstock_local::runtime::{DataDir, LocalParts};
use penstock_webhook::{WebhookDeps, WebhookSecret, router, signature};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "a test secret";
const HEAD: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
const PR_HEAD: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Server {
    _dir: tempfile::TempDir,
    control: Control,
    base: String,
    client: reqwest::Client,
}

async fn server(max_body_bytes: Option<usize>) -> Server {
    server_with_secret(SECRET, max_body_bytes).await
}

async fn server_with_secret(secret: &str, max_body_bytes: Option<usize>) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let parts = LocalParts::open(DataDir::new(dir.path())).expect("data dir");
    let control = parts.detached_control();
    let mut deps = WebhookDeps::new(Intake::new(control.clone()), WebhookSecret::new(secret));
    if let Some(limit) = max_body_bytes {
        deps.max_body_bytes = limit;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(deps)).await;
    });
    Server {
        _dir: dir,
        control,
        base,
        client: reqwest::Client::new(),
    }
}

/// A pipeline on `Codertocat/Hello-World` with a connection source; `triggers` as given.
fn declaration(name: &str, triggers: Option<Value>) -> String {
    let mut pipeline = json!({
        "name": name,
        "roleArn": "arn:aws:iam::111111111111:role/p",
        "pipelineType": "V2",
        "artifactStore": {"type": "S3", "location": "artifacts"},
        "stages": [
            {"name": "Source", "actions": [{
                "name": "Code",
                "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "CodeStarSourceConnection", "version": "1"},
                "configuration": {"FullRepositoryId": "Codertocat/Hello-World", "BranchName": "master"},
                "outputArtifacts": [{"name": "Src"}]
            }]},
            {"name": "Build", "actions": [{
                "name": "Build",
                "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
                "configuration": {"BuildSpec": "version: 0.2\nphases:\n  build:\n    commands: [\"true\"]\n"},
                "inputArtifacts": [{"name": "Src"}]
            }]}
        ]
    });
    if let Some(triggers) = triggers {
        pipeline["triggers"] = triggers;
    }
    json!({ "pipeline": pipeline }).to_string()
}

impl Server {
    async fn create(&self, text: &str) {
        let validated = penstock_core::validate::parse_and_validate(text).expect("valid pipeline");
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

    fn post(&self, event: &str, delivery: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        self.post_as(event, delivery, body, "application/json")
    }

    fn post_as(
        &self,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> reqwest::RequestBuilder {
        let signature = signature::sign(&WebhookSecret::new(SECRET), &body);
        self.client
            .post(format!("{}/webhooks/github", self.base))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", signature)
            .header("Content-Type", content_type)
            .body(body)
    }

    async fn deliver(&self, event: &str, delivery: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let response = self.post(event, delivery, body).send().await.expect("send");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON answer");
        (status, body)
    }
}

#[tokio::test]
async fn githubs_test_vector_passes_the_signature_check() {
    let server = server_with_secret("It's a Secret to Everybody", None).await;
    let vector = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let send = |body: &'static str| {
        server
            .client
            .post(format!("{}/webhooks/github", server.base))
            .header("X-GitHub-Event", "ping")
            .header("X-Hub-Signature-256", vector)
            .body(body)
            .send()
    };
    // The documented body gets past the signature check, then is refused as a payload (it is
    // not an event's JSON).
    let response = send("Hello, World!").await.expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // One character changed: the signature no longer matches.
    let response = send("Hello, World?").await.expect("send");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refused_signatures_change_nothing() {
    let server = server(None).await;
    server.create(&declaration("app", None)).await;
    let body = fixture("push.with-new-branch.payload.json");
    let good = signature::sign(&WebhookSecret::new(SECRET), &body);
    let wrong = signature::sign(&WebhookSecret::new("not the secret"), &body);
    let url = format!("{}/webhooks/github", server.base);
    // (X-Hub-Signature-256, X-Hub-Signature)
    let cases: Vec<(Option<String>, Option<String>)> = vec![
        (None, None),
        (None, Some(format!("sha1={}", "0".repeat(40)))),
        (Some(good.trim_start_matches("sha256=").to_string()), None),
        (Some(good.replace("sha256=", "sha1=")), None),
        (Some("sha256=xyz".into()), None),
        (Some(wrong), None),
        (Some(format!("{}0", &good[..good.len() - 1])), None),
    ];
    for (sha256, sha1) in cases {
        let mut request = server
            .client
            .post(&url)
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "delivery-1")
            .header("Content-Type", "application/json")
            .body(body.clone());
        if let Some(v) = &sha256 {
            request = request.header("X-Hub-Signature-256", v);
        }
        if let Some(v) = &sha1 {
            request = request.header("X-Hub-Signature", v);
        }
        let response = request.send().await.expect("send");
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{sha256:?} {sha1:?}"
        );
        let answer: Value = response.json().await.expect("JSON");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("X-Hub-Signature"))
        );
        assert!(!answer.to_string().contains(SECRET));
    }
    assert!(server.executions("app").await.is_empty());
    // The refused deliveries did not use up the delivery id.
    let (status, answer) = server.deliver("push", "delivery-1", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(server.executions("app").await.len(), 1);
}

#[tokio::test]
async fn ping_is_answered() {
    let server = server(None).await;
    let (status, answer) = server
        .deliver("ping", "ping-1", fixture("ping.payload.json"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["message"], "pong");
    assert_eq!(answer["zen"], "Anything added dilutes everything else.");
}

#[tokio::test]
async fn a_push_to_the_source_branch_starts_an_execution_pinned_to_its_commit() {
    let server = server(None).await;
    server.create(&declaration("app", None)).await;
    server
        .create(&declaration("other", None).replace("Codertocat/Hello-World", "someone/else"))
        .await;
    let (status, answer) = server
        .deliver(
            "push",
            "push-1",
            fixture("push.with-new-branch.payload.json"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["started"][0]["pipeline"], "app");
    let executions = server.executions("app").await;
    assert_eq!(executions.len(), 1);
    let execution = &executions[0];
    assert_eq!(
        answer["started"][0]["pipelineExecutionId"],
        execution.id.as_str()
    );
    assert_eq!(execution.trigger.trigger_type, TriggerType::WebhookV2);
    assert_eq!(execution.source_revisions.len(), 1);
    assert_eq!(execution.source_revisions[0].action_name, "Code");
    assert_eq!(execution.source_revisions[0].revision_type, "COMMIT_ID");
    assert_eq!(execution.source_revisions[0].revision_value, HEAD);
    assert!(server.executions("other").await.is_empty());
}

#[tokio::test]
async fn tag_pushes_and_deletions() {
    let server = server(None).await;
    let tags = json!([{"providerType": "CodeStarSourceConnection", "gitConfiguration": {
        "sourceActionName": "Code", "push": [{"tags": {"includes": ["simple-*"]}}]
    }}]);
    server.create(&declaration("tags", Some(tags))).await;
    // GitHub's push.payload.json deletes the tag simple-tag: nothing starts.
    let (status, answer) = server
        .deliver("push", "tag-delete", fixture("push.payload.json"))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["started"], json!([]));
    // The same payload as a tag creation starts the pipeline at the tagged commit.
    let mut created: Value =
        serde_json::from_slice(&fixture("push.payload.json")).expect("fixture JSON");
    created["deleted"] = json!(false);
    created["created"] = json!(true);
    created["before"] = json!("0000000000000000000000000000000000000000");
    created["after"] = json!(HEAD);
    let (status, answer) = server
        .deliver("push", "tag-create", created.to_string().into_bytes())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let executions = server.executions("tags").await;
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0].source_revisions[0].revision_value, HEAD);
    // A branch deletion starts nothing either.
    let mut deleted: Value =
        serde_json::from_slice(&fixture("push.with-new-branch.payload.json")).expect("JSON");
    deleted["deleted"] = json!(true);
    deleted["after"] = json!("0000000000000000000000000000000000000000");
    server.create(&declaration("branch", None)).await;
    let (status, _) = server
        .deliver("push", "branch-delete", deleted.to_string().into_bytes())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(server.executions("branch").await.is_empty());
}

#[tokio::test]
async fn pull_request_events_map_to_open_updated_closed() {
    let server = server(None).await;
    let trigger = |events: Value| {
        json!([{"providerType": "CodeStarSourceConnection", "gitConfiguration": {
            "sourceActionName": "Code",
            "pullRequest": [{"events": events, "branches": {"includes": ["master"]}}]
        }}])
    };
    server
        .create(&declaration("open", Some(trigger(json!(["OPEN"])))))
        .await;
    server
        .create(&declaration("updated", Some(trigger(json!(["UPDATED"])))))
        .await;
    server
        .create(&declaration("closed", Some(trigger(json!(["CLOSED"])))))
        .await;
    // (fixture, pipeline that starts)
    let table = [
        ("pull_request.opened.payload.json", "open"),
        ("pull_request.reopened.payload.json", "open"),
        ("pull_request.synchronize.payload.json", "updated"),
        ("pull_request.closed.payload.json", "closed"),
    ];
    for (index, (file, pipeline)) in table.iter().enumerate() {
        let (status, answer) = server
            .deliver("pull_request", &format!("pr-{index}"), fixture(file))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{file}: {answer}");
        let started: Vec<&str> = answer["started"]
            .as_array()
            .expect("started")
            .iter()
            .filter_map(|s| s["pipeline"].as_str())
            .collect();
        assert_eq!(started, vec![*pipeline], "{file}");
    }
    assert_eq!(server.executions("open").await.len(), 2);
    assert_eq!(server.executions("updated").await.len(), 1);
    let closed = server.executions("closed").await;
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].source_revisions[0].revision_value, PR_HEAD);
    // A labelled pull request starts nothing.
    let (status, answer) = server
        .deliver(
            "pull_request",
            "pr-labeled",
            fixture("pull_request.labeled.payload.json"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        answer["ignored"]
            .as_str()
            .is_some_and(|r| r.contains("labeled"))
    );
}

#[tokio::test]
async fn form_encoded_bodies_are_read_from_their_payload_field() {
    let server = server(None).await;
    server.create(&declaration("app", None)).await;
    let payload = String::from_utf8(fixture("push.with-new-branch.payload.json")).expect("utf-8");
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload)
        .finish();
    let response = server
        .post_as(
            "push",
            "form-1",
            body.into_bytes(),
            "application/x-www-form-urlencoded",
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(server.executions("app").await.len(), 1);
    // A form without the payload field.
    let response = server
        .post_as(
            "push",
            "form-2",
            b"other=1".to_vec(),
            "application/x-www-form-urlencoded",
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn other_events_are_acknowledged_and_ignored() {
    let server = server(None).await;
    server.create(&declaration("app", None)).await;
    let (status, answer) = server
        .deliver("issues", "issues-1", br#"{"action":"opened"}"#.to_vec())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer["ignored"].as_str().is_some());
    assert!(server.executions("app").await.is_empty());
}

#[tokio::test]
async fn malformed_requests_are_refused_clearly() {
    let server = server(Some(64 * 1024)).await;
    server.create(&declaration("app", None)).await;
    // Over the body limit.
    let big = vec![b' '; 64 * 1024 + 1];
    let response = server.post("push", "big", big).send().await.expect("send");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let answer: Value = response.json().await.expect("JSON");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("65536"))
    );
    // Not JSON.
    let (status, _) = server.deliver("push", "bad-json", b"{".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // JSON, but not a push.
    let (status, answer) = server
        .deliver("push", "bad-push", br#"{"ref": 1}"#.to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("push"))
    );
    // No event header.
    let body = fixture("push.with-new-branch.payload.json");
    let response = server
        .client
        .post(format!("{}/webhooks/github", server.base))
        .header(
            "X-Hub-Signature-256",
            signature::sign(&WebhookSecret::new(SECRET), &body),
        )
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // An unknown content type.
    let response = server
        .post_as("push", "xml", body, "application/xml")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(server.executions("app").await.is_empty());
}

#[tokio::test]
async fn a_redelivery_starts_nothing_new() {
    let server = server(None).await;
    server.create(&declaration("app", None)).await;
    let body = fixture("push.with-new-branch.payload.json");
    let (first, answer) = server.deliver("push", "same-delivery", body.clone()).await;
    assert_eq!(first, StatusCode::ACCEPTED, "{answer}");
    let (second, answer) = server.deliver("push", "same-delivery", body).await;
    assert_eq!(second, StatusCode::OK);
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["started"], json!([]));
    assert_eq!(server.executions("app").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_deliveries_of_one_push_start_one_execution_per_pipeline() {
    let server = server(None).await;
    server.create(&declaration("first", None)).await;
    server.create(&declaration("second", None)).await;
    let body = fixture("push.with-new-branch.payload.json");
    // Different delivery ids (a repository and an organization webhook, or GitHub retrying),
    // one push, all at once.
    let requests = (0..8).map(|i| {
        let request = server.post("push", &format!("race-{i}"), body.clone());
        async move { request.send().await.expect("send").status() }
    });
    let statuses = futures_join_all(requests).await;
    assert!(statuses.iter().all(|s| s.is_success()), "{statuses:?}");
    for pipeline in ["first", "second"] {
        let executions = server.executions(pipeline).await;
        assert_eq!(executions.len(), 1, "{pipeline}: {executions:?}");
        assert_eq!(executions[0].source_revisions[0].revision_value, HEAD);
    }
    // A later push of another commit to the branch starts again.
    let mut next: Value = serde_json::from_slice(&body).expect("JSON");
    next["before"] = json!(HEAD);
    next["after"] = json!("1111111111111111111111111111111111111111");
    let (status, _) = server
        .deliver("push", "next", next.to_string().into_bytes())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(server.executions("first").await.len(), 2);
}

/// Runs the futures concurrently on the current runtime.
async fn futures_join_all<F: std::future::Future<Output = StatusCode> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<StatusCode> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.expect("task"));
    }
    results
}
