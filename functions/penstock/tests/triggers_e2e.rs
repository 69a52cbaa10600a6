//! End to end: a signed GitHub push reaches the real `penstock serve`, which starts an
//! execution pinned to the pushed commit, fetches that commit through a loopback GitHub API
//! (answering with `git archive` output of a real repository), builds it with a real buildspec
//! process, and reports `pending` then `success` as commit statuses to the same loopback API.

#[path = "../../../shared/local/tests/support/fake_github.rs"]
mod fake_github;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use penstock_core::engine::{ExecutionStatus, TriggerType};
use penstock_local::runtime::{DataDir, LocalParts};
use penstock_webhook::{WebhookSecret, signature};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const PENSTOCK: &str = env!("CARGO_BIN_EXE_penstock");
const SECRET: &str = "e2e webhook secret";
/// Generous bounds for a loaded machine; the test waits for events, not for time.
const DEADLINE: Duration = Duration::from_secs(120);

fn git(repo: &Path, args: &[&str]) -> String {
    let mut command = std::process::Command::new("git");
    command.args([
        "-c",
        "user.name=Test",
        "-c",
        "user.email=test@example.invalid",
        "-c",
        "commit.gpgsign=false",
    ]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            command.env_remove(name);
        }
    }
    let output = command.args(args).current_dir(repo).output().expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `octo/hello`: two commits on `main`; returns (repository, first, second).
fn repository(root: &Path) -> (PathBuf, String, String) {
    let repo = root.join("hello");
    std::fs::create_dir_all(repo.join("src")).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "first\n").expect("write");
    std::fs::write(repo.join("src/app.py"), "print('hello')\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first commit"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("README.md"), "second\n").expect("write");
    git(&repo, &["commit", "-q", "-am", "second commit"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    (repo, first, second)
}

/// The pipeline: the GitHub source, then a build that checks it got the pushed commit's files
/// at the root of its input.
async fn create_pipeline(data: &Path, expected_commit: &str) {
    let text = json!({"pipeline": {
        "name": "hello",
        "roleArn": "arn:aws:iam::111111111111:role/p",
        "pipelineType": "V2",
        "artifactStore": {"type": "S3", "location": "artifacts"},
        "stages": [
            {"name": "Source", "actions": [{
                "name": "Code",
                "namespace": "SourceVariables",
                "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "CodeStarSourceConnection", "version": "1"},
                "configuration": {
                    "FullRepositoryId": "octo/hello",
                    "BranchName": "main",
                    "ConnectionArn": "arn:aws:codeconnections:us-east-1:111111111111:connection/e2e"
                },
                "outputArtifacts": [{"name": "Src"}]
            }]},
            {"name": "Build", "actions": [{
                "name": "Check",
                "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
                "configuration": {
                    "BuildSpec": "version: 0.2\nphases:\n  build:\n    commands:\n      - test \"$(cat README.md)\" = second\n      - test -f src/app.py\n      - test \"$COMMIT\" = \"$EXPECTED\"\n",
                    "EnvironmentVariables": format!("[{{\"name\":\"COMMIT\",\"value\":\"#{{SourceVariables.CommitId}}\"}},{{\"name\":\"EXPECTED\",\"value\":\"{expected_commit}\"}}]")
                },
                "inputArtifacts": [{"name": "Src"}]
            }]}
        ]
    }})
    .to_string();
    let validated = penstock_core::validate::parse_and_validate(&text).expect("valid pipeline");
    let parts = LocalParts::open(DataDir::new(data)).expect("data dir");
    parts
        .detached_control()
        .create_pipeline(validated.declaration, validated.tags)
        .await
        .expect("create");
}

/// GitHub's push payload (a real one), retargeted at `octo/hello` and the pushed commits.
fn push_payload(before: &str, after: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../webhook/tests/fixtures/github/push.with-new-branch.payload.json");
    let mut payload: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("JSON");
    payload["ref"] = json!("refs/heads/main");
    payload["before"] = json!(before);
    payload["after"] = json!(after);
    payload["created"] = json!(false);
    payload["repository"]["full_name"] = json!("octo/hello");
    payload["repository"]["name"] = json!("hello");
    payload["head_commit"]["id"] = json!(after);
    payload["commits"][0]["id"] = json!(after);
    payload.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_runs_the_pushed_commit_and_reports_its_status() {
    let root = tempfile::tempdir().expect("tempdir");
    let (repo, first, second) = repository(root.path());
    let mut github = fake_github::start(repo, "octo/hello").await;
    let data = root.path().join("data");
    create_pipeline(&data, &second).await;

    let mut serve = tokio::process::Command::new(PENSTOCK)
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(root.path())
        .env(penstock_webhook::SECRET_ENV, SECRET)
        .env("PENSTOCK_GITHUB_API_URL", &github.api_url)
        .env("PENSTOCK_GITHUB_TOKEN", "e2e-token")
        .env_remove("PENSTOCK_ACCESS_KEY_ID")
        .env_remove("PENSTOCK_SECRET_ACCESS_KEY")
        .env_remove("PENSTOCK_PUBLIC_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start penstock serve");
    let mut lines = BufReader::new(serve.stdout.take().expect("stdout")).lines();
    let base = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(rest) =
                line.strip_prefix("penstock serve: GitHub webhooks on POST /webhooks/github at ")
            {
                return rest.trim().to_string();
            }
        }
        panic!("penstock serve ended without serving webhooks");
    })
    .await
    .expect("penstock serve announces its webhook endpoint");
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let body = push_payload(&first, &second);
    let response = reqwest::Client::new()
        .post(format!("{base}/webhooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "e2e-delivery-1")
        .header("Content-Type", "application/json")
        .header(
            "X-Hub-Signature-256",
            signature::sign(&WebhookSecret::new(SECRET), &body),
        )
        .body(body)
        .send()
        .await
        .expect("deliver");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let answer: Value = response.json().await.expect("JSON answer");
    let execution_id = answer["started"][0]["pipelineExecutionId"]
        .as_str()
        .expect("an execution started")
        .to_string();

    // The statuses arrive as the execution starts and ends.
    let mut states = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some((sha, status)) = github.statuses.recv().await {
            assert_eq!(sha, second);
            assert_eq!(status["context"], "penstock/hello");
            let link = status["target_url"].as_str().expect("a link");
            assert!(link.starts_with("http://127.0.0.1:"), "{link}");
            assert!(
                link.ends_with(&format!("/pipelines/hello/executions/{execution_id}")),
                "{link}"
            );
            let state = status["state"].as_str().expect("state").to_string();
            let done = state != "pending";
            states.push(state);
            if done {
                break;
            }
        }
    })
    .await
    .expect("commit statuses for the execution");
    assert_eq!(states, vec!["pending", "success"]);

    serve.kill().await.expect("stop penstock serve");
    let _ = serve.wait().await;

    let parts = LocalParts::open(DataDir::new(&data)).expect("data dir");
    let execution = parts
        .detached_control()
        .get_execution("hello", &execution_id)
        .await
        .expect("the execution");
    assert_eq!(execution.status, ExecutionStatus::Succeeded);
    assert_eq!(execution.trigger.trigger_type, TriggerType::WebhookV2);
    let source = &execution.stages[0].actions[0];
    assert_eq!(source.output_variables["CommitId"], second);
    assert_eq!(source.output_variables["BranchName"], "main");
    assert_eq!(source.output_variables["FullRepositoryName"], "octo/hello");
    assert_eq!(source.output_variables["CommitMessage"], "second commit");
    let seen = github.seen.lock().expect("lock").clone();
    assert!(
        seen.iter()
            .any(|s| s.path == format!("/repos/octo/hello/zipball/{second}"))
    );
    assert!(
        seen.iter()
            .filter(|s| s.path.starts_with("/repos/"))
            .all(|s| s.authorization.as_deref() == Some("Bearer e2e-token"))
    );
}
