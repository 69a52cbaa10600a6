//! The GitHub source action on the AWS providers (moto for S3 and KMS, a loopback GitHub API
//! answering from a real git repository): run through the dispatch use case, its artifact lands
//! in the S3 artifact store, SSE-KMS encrypted, with the repository's files at its root; the
//! source variables are CodePipeline's; the token goes to the API host only.

#[path = "../../local/tests/support/fake_github.rs"]
mod fake_github;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use penstock_app::advance::Engine;
use penstock_app::control::{Control, StartOptions};
use penstock_app::dispatch::{DispatchResult, Dispatcher};
use penstock_app::memory_store::MemoryStore;
use penstock_app::ports::{
    Archiver, BusError, BusMessage, Envelope, EventBus, ProviderRegistry, RandomIds, SystemClock,
};
use penstock_app::repo::Repository;
use penstock_aws::artifacts::{S3Object, download_file};
use penstock_aws::providers::{AwsProviders, ProviderDeps};
use penstock_aws::testing::{sdk_config, unique_name};
use penstock_aws::{AwsClients, RoleAssumer, S3Artifacts};
use penstock_core::engine::{ActionJob, ActionStatus, SourceRevision};
use penstock_core::model::PipelineDeclaration;
use penstock_local::adapters::ZipArchiver;
use penstock_local::github_source::{GitHubSettings, GitHubSource};
use serde_json::json;

const TOKEN: &str = "ghp-test-token-not-a-secret";

/// A bus that keeps what is published, for the test to hand to the dispatcher.
#[derive(Default)]
struct CollectingBus {
    published: Mutex<Vec<Envelope>>,
}

impl CollectingBus {
    fn scheduled(&self) -> Vec<ActionJob> {
        let mut published = self.published.lock().expect("lock");
        std::mem::take(&mut *published)
            .into_iter()
            .filter_map(|e| match e.message {
                BusMessage::ActionScheduled(job) => Some(job),
                _ => None,
            })
            .collect()
    }
}

#[async_trait]
impl EventBus for CollectingBus {
    async fn publish(&self, envelopes: Vec<Envelope>) -> Result<(), BusError> {
        self.published
            .lock()
            .map_err(|_| BusError::Unavailable("poisoned".into()))?
            .extend(envelopes);
        Ok(())
    }
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
        .env("GIT_AUTHOR_DATE", "2024-03-01T10:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-03-01T10:00:00Z")
        .output()
        .expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A repository whose `main` has two commits; returns the first (the one the run pins).
fn repository(root: &Path) -> (std::path::PathBuf, String) {
    let repo = root.join("hello");
    std::fs::create_dir_all(repo.join("src")).expect("mkdir");
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("README.md"), "first\n").expect("write");
    std::fs::write(repo.join("src/app.py"), "print('one')\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(
        &repo,
        &["commit", "--quiet", "-m", "First commit\n\nWith a body."],
    );
    let first = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("README.md"), "second\n").expect("write");
    git(&repo, &["commit", "--quiet", "-am", "Second commit"]);
    (repo, first)
}

#[tokio::test]
async fn a_github_source_stores_the_pinned_commit_in_the_s3_artifact_store() {
    let root = tempfile::tempdir().expect("tempdir");
    let (repo, first) = repository(root.path());
    let mut github = fake_github::start(repo, "octo/hello").await;

    let clients = AwsClients::new(&sdk_config().await);
    let artifact_bucket = unique_name("artifacts");
    clients
        .s3
        .create_bucket()
        .bucket(&artifact_bucket)
        .send()
        .await
        .expect("bucket");
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

    let bus = Arc::new(CollectingBus::default());
    let engine = Engine::new(
        Repository::new(Arc::new(MemoryStore::new())),
        bus.clone(),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
    );
    let archiver: Arc<dyn Archiver> = Arc::new(ZipArchiver);
    let artifacts = S3Artifacts::new(clients.s3.clone(), &artifact_bucket, &key_id);
    let settings = GitHubSettings::new(Some(github.api_url.clone()), Some(TOKEN.into()));
    let providers: Arc<dyn ProviderRegistry> = Arc::new(AwsProviders::new(ProviderDeps {
        clients: clients.clone(),
        assumer: RoleAssumer::new(clients.sts.clone(), clients.sdk_config().clone()),
        archiver: archiver.clone(),
        artifacts: artifacts.clone(),
        ids: Arc::new(RandomIds),
        external_id: None,
        default_codebuild_project: None,
        github_source: Some(Arc::new(GitHubSource::new(&settings))),
        approval_url: None,
    }));
    let work = tempfile::tempdir().expect("work dir");
    let dispatcher = Dispatcher::new(
        engine.clone(),
        Arc::new(artifacts),
        archiver.clone(),
        providers,
        "dispatcher-test".into(),
        work.path().to_path_buf(),
    );
    let control = Control::new(engine);

    // Both action types CodePipeline has for GitHub run on the same provider.
    for (provider, owner, configuration) in [
        (
            "CodeStarSourceConnection",
            "AWS",
            json!({
                "ConnectionArn": "arn:aws:codeconnections:us-east-1:123456789012:connection/x",
                "FullRepositoryId": "octo/hello",
                "BranchName": "main",
            }),
        ),
        (
            "GitHub",
            "ThirdParty",
            json!({"Owner": "octo", "Repo": "hello", "Branch": "main", "OAuthToken": "****"}),
        ),
    ] {
        let name = unique_name("pipe");
        let declaration: PipelineDeclaration = serde_json::from_value(json!({
            "name": name,
            "roleArn": "arn:aws:iam::123456789012:role/penstock",
            "pipelineType": "V2",
            "artifactStore": {
                "type": "S3",
                "location": artifact_bucket,
                "encryptionKey": { "id": key_id, "type": "KMS" }
            },
            "stages": [
                { "name": "Source", "actions": [{
                    "name": "Code",
                    "actionTypeId": { "category": "Source", "owner": owner, "provider": provider, "version": "1" },
                    "configuration": configuration,
                    "outputArtifacts": [{ "name": "Src" }],
                }]},
                { "name": "Approve", "actions": [{
                    "name": "Approve",
                    "actionTypeId": { "category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1" }
                }]}
            ]
        }))
        .expect("declaration");
        control
            .create_pipeline(declaration, Vec::new())
            .await
            .expect("create pipeline");
        // Pinned to the first commit, as a webhook-started execution is.
        let execution_id = control
            .start_execution(
                &name,
                StartOptions {
                    source_revisions: vec![SourceRevision {
                        action_name: "Code".into(),
                        revision_type: "COMMIT_ID".into(),
                        revision_value: first.clone(),
                    }],
                    ..Default::default()
                },
            )
            .await
            .expect("start");
        let jobs: Vec<ActionJob> = bus
            .scheduled()
            .into_iter()
            .filter(|job| job.pipeline_name == name)
            .collect();
        assert_eq!(jobs.len(), 1, "{provider}: the source action is scheduled");
        let result = dispatcher
            .dispatch(jobs.into_iter().next().expect("job"))
            .await
            .expect("dispatch");
        assert_eq!(result, DispatchResult::Ran);

        let execution = control
            .get_execution(&name, &execution_id)
            .await
            .expect("execution");
        let action = &execution.stages[0].actions[0];
        assert_eq!(
            action.status,
            ActionStatus::Succeeded,
            "{provider}: {:?}",
            action.error
        );
        let variables = &action.output_variables;
        assert_eq!(variables["CommitId"], first, "{provider}");
        assert_eq!(variables["BranchName"], "main", "{provider}");
        assert_eq!(
            variables["CommitMessage"], "First commit\n\nWith a body.",
            "{provider}"
        );
        assert_eq!(
            variables["AuthorDate"], "2024-03-01T10:00:00Z",
            "{provider}"
        );
        assert_eq!(variables["FullRepositoryName"], "octo/hello", "{provider}");

        // The artifact is an SSE-KMS object in the artifact bucket with the files at its root.
        assert_eq!(action.output_artifacts.len(), 1, "{provider}");
        let artifact = &action.output_artifacts[0];
        assert_eq!(artifact.revision_id.as_deref(), Some(first.as_str()));
        let object = S3Object::parse(&artifact.location).expect("an S3 location");
        assert_eq!(object.bucket, artifact_bucket);
        let head = clients
            .s3
            .head_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .set_version_id(object.version_id.clone())
            .send()
            .await
            .expect("head artifact");
        assert_eq!(
            head.server_side_encryption(),
            Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms)
        );
        let zip = root.path().join(format!("{provider}.zip"));
        download_file(&clients.s3, &object, &zip)
            .await
            .expect("download artifact");
        let unpacked = root.path().join(provider);
        archiver.unpack(&zip, &unpacked).expect("unpack");
        assert_eq!(
            std::fs::read_to_string(unpacked.join("README.md")).expect("README"),
            "first\n"
        );
        assert_eq!(
            std::fs::read_to_string(unpacked.join("src/app.py")).expect("app"),
            "print('one')\n"
        );
        let mut top: Vec<String> = std::fs::read_dir(&unpacked)
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["README.md", "src"],
            "{provider}: only the repository's files"
        );
    }

    // The token went as Authorization to every API request, and never to the download host.
    let seen = github.seen.lock().expect("lock").clone();
    let (api, downloads): (Vec<_>, Vec<_>) =
        seen.iter().partition(|s| s.path.starts_with("/repos/"));
    assert!(!api.is_empty() && !downloads.is_empty(), "{seen:?}");
    assert!(downloads.iter().all(|s| s.path.starts_with("/codeload/")));
    for request in &api {
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{}",
            request.path
        );
    }
    for request in &downloads {
        assert_eq!(request.authorization, None, "{}", request.path);
    }
    // Running a source reports no commit status (the advancer does, from state changes).
    assert!(github.statuses.try_recv().is_err());
}
