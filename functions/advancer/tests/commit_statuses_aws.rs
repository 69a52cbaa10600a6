//! Commit statuses on AWS APIs (moto): executions run through the real functions (dispatcher
//! and advancer handlers, DynamoDB, EventBridge rules with the functions' event patterns
//! delivering to SQS, S3 + KMS artifacts), their GitHub source against a loopback GitHub API
//! answering from a real git repository. The advancer posts `pending` then `success` for a
//! GitHub-sourced execution, nothing for an S3-sourced one, and a refused post never fails the
//! invocation.

#[path = "../../../shared/local/tests/support/fake_github.rs"]
mod fake_github;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use penstock_advancer::Advancer;
use penstock_app::control::{Control, StartOptions};
use penstock_app::dispatch::Dispatcher;
use penstock_app::ports::Archiver;
use penstock_aws::config::{ArtifactConfig, AwsConfig};
use penstock_aws::testing::{BusTap, sdk_config, unique_name};
use penstock_aws::{AwsClients, AwsParts, DynamoStore};
use penstock_core::engine::{Execution, ExecutionStatus, SourceRevision};
use penstock_core::model::PipelineDeclaration;
use penstock_local::commit_status::CommitStatuses;
use penstock_local::github_source::{GitHubClient, GitHubSettings, GitHubSource};
use serde_json::{Value, json};

const TOKEN: &str = "ghp-test-token-not-a-secret";
const PUBLIC_URL: &str = "https://penstock.example/";

struct World {
    github: fake_github::FakeGitHub,
    sha: String,
    control: Control,
    advancer: Advancer,
    dispatcher: Dispatcher,
    advancer_events: BusTap,
    dispatcher_events: BusTap,
    artifact_bucket: String,
    deploy_bucket: String,
    key_id: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn git(dir: &Path, args: &[&str]) -> String {
    let mut command = Command::new("git");
    command.arg("-C").arg(dir).args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            command.env_remove(name);
        }
    }
    let output = command
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

async fn world() -> World {
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let repo = repo_dir.path().join("hello");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("index.html"), "<h1>hello</h1>\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "Hello"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let github = fake_github::start(repo, "octo/hello").await;

    let config = sdk_config().await;
    let clients = AwsClients::new(&config);
    let (table, bus) = (unique_name("state"), unique_name("bus"));
    let (artifact_bucket, deploy_bucket) = (unique_name("artifacts"), unique_name("site"));
    DynamoStore::create_table(&clients.dynamodb, &table)
        .await
        .expect("table");
    for bucket in [&artifact_bucket, &deploy_bucket] {
        clients
            .s3
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("bucket");
    }
    let key_id = clients
        .kms
        .create_key()
        .send()
        .await
        .expect("key")
        .key_metadata()
        .expect("metadata")
        .key_id()
        .to_string();
    let patterns = |p: Vec<(&str, Value)>| p.into_iter().map(|(_, p)| p).collect::<Vec<_>>();
    let advancer_events = BusTap::new(
        &config,
        &bus,
        true,
        &patterns(penstock_advancer::event_patterns()),
    )
    .await
    .expect("advancer rules");
    let dispatcher_events = BusTap::new(
        &config,
        &bus,
        false,
        &patterns(penstock_dispatcher::event_patterns()),
    )
    .await
    .expect("dispatcher rules");

    let parts = AwsParts::new(
        AwsConfig {
            table,
            event_bus: bus,
            artifacts: Some(ArtifactConfig {
                bucket: artifact_bucket.clone(),
                kms_key: key_id.clone(),
            }),
        },
        clients,
    );
    let settings = GitHubSettings::new(Some(github.api_url.clone()), Some(TOKEN.into()));
    let archiver: Arc<dyn Archiver> = Arc::new(penstock_local::adapters::ZipArchiver);
    let providers = Arc::new(
        parts
            .providers(
                archiver.clone(),
                None,
                Some(Arc::new(GitHubSource::new(&settings))),
            )
            .expect("providers"),
    );
    let work = tempfile::tempdir().expect("work dir");
    let dispatcher = Dispatcher::new(
        parts.engine(),
        Arc::new(parts.require_artifacts().expect("artifacts")),
        archiver,
        providers.clone(),
        "dispatcher-test".into(),
        work.path().to_path_buf(),
    );
    // As the advancer's main wires it.
    let mut advancer = Advancer::new(parts.engine(), Some(providers));
    advancer.commit_statuses = Some(CommitStatuses::new(
        GitHubClient::new(&settings).expect("client"),
        Control::new(parts.engine()),
        Some(PUBLIC_URL.into()),
    ));
    World {
        github,
        sha,
        control: Control::new(parts.engine()),
        advancer,
        dispatcher,
        advancer_events,
        dispatcher_events,
        artifact_bucket,
        deploy_bucket,
        key_id,
        _dirs: (repo_dir, work),
    }
}

/// A pipeline: `source`, then an S3 deploy of its output.
fn declaration(w: &World, name: &str, source: Value) -> PipelineDeclaration {
    serde_json::from_value(json!({
        "name": name,
        "roleArn": "arn:aws:iam::123456789012:role/penstock",
        "pipelineType": "V2",
        "artifactStore": {
            "type": "S3",
            "location": w.artifact_bucket,
            "encryptionKey": { "id": w.key_id, "type": "KMS" }
        },
        "stages": [
            { "name": "Source", "actions": [source] },
            { "name": "Deploy", "actions": [{
                "name": "Publish",
                "actionTypeId": { "category": "Deploy", "owner": "AWS", "provider": "S3", "version": "1" },
                "configuration": { "BucketName": w.deploy_bucket, "Extract": "true", "ObjectKey": name, "KMSEncryptionKeyARN": w.key_id },
                "inputArtifacts": [{ "name": "Src" }]
            }]}
        ]
    }))
    .expect("declaration")
}

fn github_source(repository: &str) -> Value {
    json!({
        "name": "Code",
        "actionTypeId": { "category": "Source", "owner": "AWS", "provider": "CodeStarSourceConnection", "version": "1" },
        "configuration": { "FullRepositoryId": repository, "BranchName": "main" },
        "outputArtifacts": [{ "name": "Src" }]
    })
}

/// Create the pipeline, start an execution (pinned to `sha` when given, as the webhook does)
/// and hand every event the rules deliver to its function until the execution has ended and
/// nothing is left to deliver. Returns the execution and what the advancer answered to each
/// state-change event.
async fn run(w: &World, source: Value, pinned: Option<&str>) -> (String, Execution, Vec<Value>) {
    let name = unique_name("pipe");
    w.control
        .create_pipeline(declaration(w, &name, source), Vec::new())
        .await
        .expect("create pipeline");
    let id = w
        .control
        .start_execution(
            &name,
            StartOptions {
                source_revisions: pinned
                    .map(|sha| SourceRevision {
                        action_name: "Code".into(),
                        revision_type: "COMMIT_ID".into(),
                        revision_value: sha.into(),
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
        )
        .await
        .expect("start");
    let mut answers = Vec::new();
    for _ in 0..50 {
        let scheduled = w.dispatcher_events.drain().await.expect("drain");
        let advancer_events = w.advancer_events.drain().await.expect("drain");
        let idle = scheduled.is_empty() && advancer_events.is_empty();
        for event in advancer_events {
            let state_change = penstock_aws::bus::is_public_event(&event);
            let answer = w.advancer.handle_event(event).await.expect("advancer");
            if state_change {
                answers.push(answer);
            }
        }
        for event in scheduled {
            penstock_dispatcher::handle_event(&w.dispatcher, event)
                .await
                .expect("dispatch");
        }
        let execution = w
            .control
            .get_execution(&name, &id)
            .await
            .expect("execution");
        if idle && execution.status.is_terminal() {
            return (name, execution, answers);
        }
    }
    panic!("execution {id} of {name} never ended");
}

/// Every status the fake GitHub received so far: (sha, body).
fn statuses(w: &mut World) -> Vec<(String, Value)> {
    let mut received = Vec::new();
    while let Ok(status) = w.github.statuses.try_recv() {
        received.push(status);
    }
    received
}

#[tokio::test]
async fn a_github_sourced_execution_reports_pending_then_success() {
    let mut w = world().await;
    let sha = w.sha.clone();
    let (name, execution, answers) = run(&w, github_source("octo/hello"), Some(&sha)).await;
    assert_eq!(execution.status, ExecutionStatus::Succeeded);

    let received = statuses(&mut w);
    let states: Vec<&str> = received
        .iter()
        .map(|(_, body)| body["state"].as_str().expect("state"))
        .collect();
    assert_eq!(states, ["pending", "success"], "{answers:?}");
    for (status_sha, body) in &received {
        assert_eq!(status_sha, &sha);
        assert_eq!(body["context"], format!("penstock/{name}"));
        assert_eq!(
            body["target_url"],
            format!(
                "https://penstock.example/pipelines/{name}/executions/{}",
                execution.id
            )
        );
        let description = body["description"].as_str().expect("description");
        assert!(
            description.len() <= 140 && description.contains(&name),
            "{description}"
        );
    }
    let seen = w.github.seen.lock().expect("lock").clone();
    let posts: Vec<_> = seen
        .iter()
        .filter(|s| s.path.contains("/statuses/"))
        .collect();
    assert_eq!(posts.len(), 2);
    assert!(
        posts
            .iter()
            .all(|s| s.authorization.as_deref() == Some(format!("Bearer {TOKEN}").as_str()))
    );

    // EventBridge delivers at least once and in any order: the start delivered again after the
    // end leaves the final status alone, the end delivered again says the same thing.
    let event = |state: &str| {
        json!({
            "source": "penstock.codepipeline",
            "detail-type": "CodePipeline Pipeline Execution State Change",
            "detail": {"pipeline": name, "execution-id": execution.id, "state": state},
        })
    };
    let late_start = w
        .advancer
        .handle_event(event("STARTED"))
        .await
        .expect("late start");
    assert_eq!(late_start["commitStatuses"]["outdated"], 1, "{late_start}");
    w.advancer
        .handle_event(event("SUCCEEDED"))
        .await
        .expect("repeated end");
    let states: Vec<String> = statuses(&mut w)
        .into_iter()
        .map(|(_, body)| body["state"].as_str().expect("state").to_string())
        .collect();
    assert_eq!(states, ["success"]);
}

#[tokio::test]
async fn an_s3_sourced_execution_reports_nothing_and_a_refused_post_fails_nothing() {
    let mut w = world().await;
    // The object is missing: the execution fails, which a GitHub source would report.
    let s3_source = json!({
        "name": "Code",
        "actionTypeId": { "category": "Source", "owner": "AWS", "provider": "S3", "version": "1" },
        "configuration": { "S3Bucket": w.artifact_bucket, "S3ObjectKey": "missing.zip", "PollForSourceChanges": "false" },
        "outputArtifacts": [{ "name": "Src" }]
    });
    let (_, execution, answers) = run(&w, s3_source, None).await;
    assert_eq!(execution.status, ExecutionStatus::Failed);
    assert!(
        !answers.is_empty(),
        "the state changes reached the advancer"
    );
    assert_eq!(statuses(&mut w), Vec::new());
    assert!(
        !w.github
            .seen
            .lock()
            .expect("lock")
            .iter()
            .any(|s| s.path.contains("/statuses/"))
    );

    // A repository GitHub does not know: every post is refused (404), logged, and the
    // invocations still succeed.
    let sha = w.sha.clone();
    let (_, execution, answers) = run(&w, github_source("octo/gone"), Some(&sha)).await;
    assert_eq!(execution.status, ExecutionStatus::Failed);
    let failed: u64 = answers
        .iter()
        .filter_map(|a| a["commitStatuses"]["failed"].as_u64())
        .sum();
    assert_eq!(failed, 2, "pending and failure, both refused: {answers:?}");
    assert_eq!(statuses(&mut w), Vec::new());
}
