//! The complete example pipeline of the CodePipeline user guide (`reference.json`: a GitHub
//! source, a CodeBuild build without `ProjectName`, a CodeDeploy deployment) runs end to end on
//! the AWS providers: moto for S3, KMS, CodeBuild and CodeDeploy, a loopback GitHub API
//! answering from a real git repository, the real dispatch use case and the real sweep.
//!
//! moto runs no builds and finishes no deployments, so the test plays the two workers AWS
//! would run: the build's (it reads the source artifact CodeBuild was given and writes the
//! build's output zip where StartBuild told CodeBuild to put it) and CodeDeploy's agents
//! (`testing::ReportDeployments` reports the deployment `Succeeded`). Everything Penstock
//! does (the calls, their arguments, the artifacts, the polls) is real.

#[path = "../../local/tests/support/fake_github.rs"]
#[allow(dead_code)] // commit statuses: the advancer's, not exercised here
mod fake_github;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use penstock_app::advance::Engine;
use penstock_app::control::{Control, StartOptions};
use penstock_app::dispatch::{Dispatcher, artifact_key};
use penstock_app::memory_store::MemoryStore;
use penstock_app::ports::{
    Archiver, BusError, BusMessage, Envelope, EventBus, ProviderRegistry, RandomIds, SystemClock,
};
use penstock_app::repo::Repository;
use penstock_app::sweep::{SweepSettings, Sweeper, WaitForOwners};
use penstock_aws::artifacts::{Encryption, S3Object, download_file, upload_file};
use penstock_aws::providers::{AwsProviders, ProviderDeps};
use penstock_aws::testing::{ReportDeployments, sdk_config, unique_name};
use penstock_aws::{AwsClients, RoleAssumer, S3Artifacts};
use penstock_core::engine::{ActionStatus, ExecutionStatus};
use penstock_core::model::PipelineDeclaration;
use penstock_local::adapters::ZipArchiver;
use penstock_local::github_source::{GitHubSettings, GitHubSource};
use serde_json::Value;

/// A bus that keeps what is published, for the test to hand to the functions.
#[derive(Default)]
struct CollectingBus {
    messages: Mutex<Vec<Envelope>>,
}

impl CollectingBus {
    fn take(&self) -> Vec<Envelope> {
        std::mem::take(&mut *self.messages.lock().expect("bus"))
    }
}

#[async_trait]
impl EventBus for CollectingBus {
    async fn publish(&self, messages: Vec<Envelope>) -> Result<(), BusError> {
        self.messages
            .lock()
            .map_err(|_| BusError::Unavailable("poisoned".into()))?
            .extend(messages);
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
        .output()
        .expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The guide's example, as the fixture has it, with its artifact bucket made unique.
fn reference_pipeline(bucket: &str) -> PipelineDeclaration {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/reference.json");
    let mut document: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON");
    document["pipeline"]["artifactStore"]["location"] = Value::String(bucket.to_string());
    serde_json::from_value(document["pipeline"].clone()).expect("the guide's pipeline")
}

/// moto answers an existing application or group with an error; the test only needs them there.
fn existing_is_fine<T, E: std::fmt::Debug>(result: Result<T, E>, what: &str) {
    if let Err(e) = result {
        let text = format!("{e:?}");
        assert!(text.contains("AlreadyExists"), "{what}: {text}");
    }
}

#[tokio::test]
async fn the_guides_example_pipeline_runs_end_to_end_on_aws_apis() {
    // The repository the GitHub source reads: Owner myusername, Repo my-app, Branch main.
    let root = tempfile::tempdir().expect("tempdir");
    let repo = root.path().join("my-app");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("index.html"), "<h1>my app</h1>\n").expect("write");
    std::fs::write(
        repo.join("buildspec.yml"),
        "version: 0.2\nphases:\n  build:\n    commands: [echo build]\nartifacts:\n  files: ['**/*']\n",
    )
    .expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "My app"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let github = fake_github::start(repo, "myusername/my-app").await;

    let deployments = ReportDeployments::new();
    let clients = AwsClients::with_interceptors(&sdk_config().await, vec![deployments.shared()]);
    let bucket = unique_name("artifacts");
    clients
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    clients
        .s3
        .put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning");
    let key_arn = clients
        .kms
        .create_key()
        .send()
        .await
        .expect("key")
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("key arn")
        .to_string();

    // The deployment's default build project (the action names none) and CodeDeploy's
    // application and group the action names.
    let project = unique_name("default-build");
    clients
        .codebuild
        .create_project()
        .name(&project)
        .source(
            aws_sdk_codebuild::types::ProjectSource::builder()
                .r#type(aws_sdk_codebuild::types::SourceType::NoSource)
                .location("unused")
                .build()
                .expect("source"),
        )
        .artifacts(
            aws_sdk_codebuild::types::ProjectArtifacts::builder()
                .r#type(aws_sdk_codebuild::types::ArtifactsType::NoArtifacts)
                .build()
                .expect("artifacts"),
        )
        .environment(
            aws_sdk_codebuild::types::ProjectEnvironment::builder()
                .r#type(aws_sdk_codebuild::types::EnvironmentType::LinuxContainer)
                .image("aws/codebuild/standard:7.0")
                .compute_type(aws_sdk_codebuild::types::ComputeType::BuildGeneral1Small)
                .build()
                .expect("environment"),
        )
        .service_role("arn:aws:iam::123456789012:role/codebuild")
        .send()
        .await
        .expect("project");
    existing_is_fine(
        clients
            .codedeploy
            .create_application()
            .application_name("MyApp")
            .send()
            .await,
        "application",
    );
    existing_is_fine(
        clients
            .codedeploy
            .create_deployment_group()
            .application_name("MyApp")
            .deployment_group_name("Production")
            .service_role_arn("arn:aws:iam::123456789012:role/codedeploy")
            .send()
            .await,
        "deployment group",
    );

    let bus = Arc::new(CollectingBus::default());
    let engine = Engine::new(
        Repository::new(Arc::new(MemoryStore::new())),
        bus.clone(),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
    );
    let archiver: Arc<dyn Archiver> = Arc::new(ZipArchiver);
    let artifacts = S3Artifacts::new(clients.s3.clone(), &bucket, &key_arn);
    let settings = GitHubSettings::new(Some(github.api_url.clone()), None);
    let providers: Arc<dyn ProviderRegistry> = Arc::new(AwsProviders::new(ProviderDeps {
        clients: clients.clone(),
        assumer: RoleAssumer::new(clients.sts.clone(), clients.sdk_config().clone()),
        archiver: archiver.clone(),
        artifacts: artifacts.clone(),
        ids: Arc::new(RandomIds),
        external_id: None,
        default_codebuild_project: Some(project.clone()),
        github_source: Some(Arc::new(GitHubSource::new(&settings))),
        approval_url: None,
    }));
    let work = tempfile::tempdir().expect("work dir");
    let dispatcher = Dispatcher::new(
        engine.clone(),
        Arc::new(artifacts),
        archiver.clone(),
        providers.clone(),
        "dispatcher-test".into(),
        work.path().to_path_buf(),
    );
    let sweeper = Sweeper {
        engine: engine.clone(),
        owner: "sweeper-test".into(),
        providers: Some(providers),
        settings: SweepSettings {
            stale_outbox_ms: 60_000,
            unclaimed_attempt_ms: 60_000,
        },
    };
    let control = Control::new(engine.clone());

    let declaration = reference_pipeline(&bucket);
    let name = declaration.name.clone();
    control
        .create_pipeline(declaration, Vec::new())
        .await
        .expect("CreatePipeline takes the guide's example");
    let id = control
        .start_execution(&name, StartOptions::default())
        .await
        .expect("start");

    let mut build_output_key = None;
    let mut execution = control.get_execution(&name, &id).await.expect("execution");
    for _ in 0..60 {
        let messages = bus.take();
        let idle = messages.is_empty();
        for envelope in messages {
            match envelope.message {
                BusMessage::ActionScheduled(job) => {
                    let build = job.action == "BuildAction";
                    dispatcher.dispatch(job.clone()).await.expect("dispatch");
                    if build {
                        // The build's work: the source CodeBuild was given, plus what it built,
                        // zipped where StartBuild sent the output.
                        let source = S3Object::parse(&job.input_artifacts[0].location)
                            .expect("source location");
                        let dir = root.path().join("build");
                        let zip = root.path().join("source.zip");
                        download_file(&clients.s3, &source, &zip)
                            .await
                            .expect("the build reads its source");
                        archiver.unpack(&zip, &dir).expect("unpack source");
                        std::fs::write(dir.join("built.txt"), "built\n").expect("write");
                        let output = root.path().join("output.zip");
                        archiver.pack(&dir, &output).expect("pack output");
                        let key = artifact_key(&job, "BuildOutput");
                        upload_file(
                            &clients.s3,
                            &bucket,
                            &key,
                            &output,
                            &Encryption::Kms(key_arn.clone()),
                        )
                        .await
                        .expect("the build writes its output");
                        build_output_key = Some(key);
                    }
                }
                BusMessage::EngineInput { pipeline, input } => {
                    engine.apply(&pipeline, input).await.expect("apply");
                }
                BusMessage::ActionCancelled { .. } | BusMessage::StateChange { .. } => {}
            }
        }
        execution = control.get_execution(&name, &id).await.expect("execution");
        if execution.status != ExecutionStatus::InProgress {
            break;
        }
        let deploying = execution
            .stages
            .iter()
            .flat_map(|s| &s.actions)
            .any(|a| a.name == "DeployAction" && a.status == ActionStatus::InProgress);
        if deploying {
            // The deployment exists in CodeDeploy with the build's output as its revision;
            // then its agents finish.
            let deploy = execution
                .stages
                .iter()
                .flat_map(|s| &s.actions)
                .find(|a| a.name == "DeployAction")
                .expect("deploy action");
            if let Some(deployment_id) = deploy.external.id.clone() {
                let info = clients
                    .codedeploy
                    .get_deployment()
                    .deployment_id(&deployment_id)
                    .send()
                    .await
                    .expect("GetDeployment")
                    .deployment_info
                    .expect("deployment info");
                assert_eq!(info.application_name(), Some("MyApp"));
                assert_eq!(info.deployment_group_name(), Some("Production"));
                let s3 = info
                    .revision()
                    .and_then(|r| r.s3_location())
                    .expect("an S3 revision");
                assert_eq!(s3.bucket(), Some(bucket.as_str()));
                assert_eq!(s3.key(), build_output_key.as_deref());
                assert_eq!(s3.bundle_type().map(|b| b.as_str()), Some("zip"));
                deployments.report("MyApp", "Succeeded", None);
            }
        }
        if idle {
            sweeper.sweep(false, &WaitForOwners).await.expect("sweep");
        }
    }

    assert_eq!(
        execution.status,
        ExecutionStatus::Succeeded,
        "{:#?}",
        execution.stages
    );
    let actions: Vec<(&str, ActionStatus)> = execution
        .stages
        .iter()
        .flat_map(|s| &s.actions)
        .map(|a| (a.name.as_str(), a.status))
        .collect();
    assert_eq!(
        actions,
        [
            ("SourceAction", ActionStatus::Succeeded),
            ("BuildAction", ActionStatus::Succeeded),
            ("DeployAction", ActionStatus::Succeeded),
        ]
    );
    let source = execution
        .stages
        .iter()
        .flat_map(|s| &s.actions)
        .find(|a| a.name == "SourceAction")
        .expect("source");
    assert_eq!(
        source.output_variables.get("CommitId").map(String::as_str),
        Some(head.as_str())
    );
    // The source downloaded exactly that commit, without credentials (none configured).
    let seen = github.seen.lock().expect("seen").clone();
    assert!(
        seen.iter()
            .any(|r| r.path.ends_with(&format!("/zipball/{head}")) && r.authorization.is_none()),
        "{seen:?}"
    );
    // The build ran in the default project, from the source's buildspec.yml.
    let build = execution
        .stages
        .iter()
        .flat_map(|s| &s.actions)
        .find(|a| a.name == "BuildAction")
        .expect("build");
    assert!(
        build
            .external
            .id
            .as_deref()
            .is_some_and(|id| id.starts_with(&project)),
        "{:?}",
        build.external
    );
}
