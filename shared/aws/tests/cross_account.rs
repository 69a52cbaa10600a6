//! Cross-account deploys on AWS APIs (moto): a pipeline in account 111111111111 deploys a
//! CloudFormation stack, an S3 site and a CodeDeploy deployment into account 222222222222
//! through an assumed role, and the checks read account B with B's own credentials. Every action goes through the real
//! dispatch path (claim, input artifacts, provider, report) and every handed-off stack or build
//! through the real sweep (the provider's poll), on the in-memory store and a collecting bus.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_config::SdkConfig;
use penstock_app::advance::Engine;
use penstock_app::control::{Control, StartOptions};
use penstock_app::dispatch::Dispatcher;
use penstock_app::memory_store::MemoryStore;
use penstock_app::ports::{
    Archiver, BusError, BusMessage, Envelope, EventBus, JobContext, ProviderOutcome,
    ProviderRegistry, RandomIds, SystemClock,
};
use penstock_app::repo::Repository;
use penstock_app::sweep::{SweepSettings, Sweeper, WaitForOwners};
use penstock_aws::artifacts::S3Object;
use penstock_aws::providers::{AwsProviders, ProviderDeps};
use penstock_aws::sts::{AssumeRequest, RoleAssumer};
use penstock_aws::testing::{
    DenyAssumeRole, ExportBuildVariables, ReportDeployments, SignerRecorder, TEST_REGION,
    sdk_config, unique_name,
};
use penstock_aws::{AwsClients, S3Artifacts};
use penstock_core::engine::{ActionJob, ActionRun, ActionStatus, Execution, ExecutionStatus};
use penstock_core::model::PipelineDeclaration;
use penstock_local::adapters::ZipArchiver;
use serde_json::{Value, json};

const ACCOUNT_A: &str = "111111111111";
const ACCOUNT_B: &str = "222222222222";
const DEPLOY_ROLE: &str = "arn:aws:iam::222222222222:role/penstock-deployer";
const CFN_SERVICE_ROLE: &str = "arn:aws:iam::222222222222:role/penstock-cloudformation";

/// A bus that keeps what is published, for the test to hand to the functions.
#[derive(Default)]
struct CollectingBus {
    published: Mutex<Vec<Envelope>>,
}

impl CollectingBus {
    fn take(&self) -> Vec<Envelope> {
        self.published
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
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

struct World {
    /// Account A's clients (the functions' own), with the recording interceptors.
    clients: AwsClients,
    /// Account B's clients, as the role assumed into B sees it (for checks only).
    b: AwsClients,
    deny: DenyAssumeRole,
    signers: SignerRecorder,
    exports: ExportBuildVariables,
    deployments: ReportDeployments,
    bus: Arc<CollectingBus>,
    control: Control,
    engine: Engine,
    dispatcher: Dispatcher,
    sweeper: Sweeper,
    providers: Arc<dyn ProviderRegistry>,
    source_bucket: String,
    artifact_bucket: String,
    key_id: String,
    _work: tempfile::TempDir,
}

/// An SDK configuration acting as `role_arn`, assumed with `base`'s credentials.
async fn assumed(base: &SdkConfig, role_arn: &str) -> SdkConfig {
    RoleAssumer::new(aws_sdk_sts::Client::new(base), base.clone())
        .config_for(&AssumeRequest {
            role_arn: role_arn.to_string(),
            external_id: None,
            session_name: "penstock-tests".into(),
            region: None,
        })
        .await
        .expect("assume role")
}

async fn world() -> World {
    let root = sdk_config().await;
    // The functions run as a role of account A; moto then places everything they create there.
    let a_config = assumed(
        &root,
        &format!("arn:aws:iam::{ACCOUNT_A}:role/penstock-functions"),
    )
    .await;
    let deny = DenyAssumeRole::new();
    let signers = SignerRecorder::new();
    let exports = ExportBuildVariables::new();
    let deployments = ReportDeployments::new();
    let clients = AwsClients::with_interceptors(
        &a_config,
        vec![
            deny.shared(),
            signers.shared(),
            exports.shared(),
            deployments.shared(),
        ],
    );
    let b = AwsClients::new(&assumed(&root, DEPLOY_ROLE).await);
    let (artifact_bucket, source_bucket) = (unique_name("artifacts"), unique_name("source"));
    for bucket in [&artifact_bucket, &source_bucket] {
        clients
            .s3
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("bucket");
        clients
            .s3
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .expect("versioning");
    }
    let key_arn = clients
        .kms
        .create_key()
        .send()
        .await
        .expect("key")
        .key_metadata()
        .expect("metadata")
        .arn()
        .expect("key arn")
        .to_string();
    assert!(key_arn.contains(ACCOUNT_A), "the key lives in A: {key_arn}");

    let bus = Arc::new(CollectingBus::default());
    let engine = Engine::new(
        Repository::new(Arc::new(MemoryStore::new())),
        bus.clone(),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
    );
    let archiver: Arc<dyn Archiver> = Arc::new(ZipArchiver);
    let artifacts = S3Artifacts::new(clients.s3.clone(), &artifact_bucket, &key_arn);
    let providers: Arc<dyn ProviderRegistry> = Arc::new(AwsProviders::new(ProviderDeps {
        clients: clients.clone(),
        assumer: RoleAssumer::new(clients.sts.clone(), clients.sdk_config().clone()),
        archiver: archiver.clone(),
        artifacts: artifacts.clone(),
        ids: Arc::new(RandomIds),
        external_id: None,
        default_codebuild_project: None,
        github_source: None,
        approval_url: None,
    }));
    let work = tempfile::tempdir().expect("work dir");
    let dispatcher = Dispatcher::new(
        engine.clone(),
        Arc::new(artifacts),
        archiver,
        providers.clone(),
        "dispatcher-test".into(),
        work.path().to_path_buf(),
    );
    let sweeper = Sweeper {
        engine: engine.clone(),
        owner: "sweeper-test".into(),
        providers: Some(providers.clone()),
        settings: SweepSettings {
            stale_outbox_ms: 60_000,
            unclaimed_attempt_ms: 60_000,
        },
    };
    World {
        clients,
        b,
        deny,
        signers,
        exports,
        deployments,
        bus,
        control: Control::new(engine.clone()),
        engine,
        dispatcher,
        sweeper,
        providers,
        source_bucket,
        artifact_bucket,
        key_id: key_arn,
        _work: work,
    }
}

/// The stack template: a bucket and a queue, named by parameters.
fn template(with_second_queue: bool) -> Value {
    let mut template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {
            "BucketName": { "Type": "String" },
            "QueueName": { "Type": "String" },
            "Env": { "Type": "String", "Default": "dev" }
        },
        "Resources": {
            "Bucket": { "Type": "AWS::S3::Bucket", "Properties": { "BucketName": { "Ref": "BucketName" } } },
            "Queue": { "Type": "AWS::SQS::Queue", "Properties": { "QueueName": { "Ref": "QueueName" } } }
        },
        "Outputs": {
            "BucketName": { "Value": { "Ref": "Bucket" } },
            "QueueUrl": { "Value": { "Ref": "Queue" } },
            "Env": { "Value": { "Ref": "Env" } }
        }
    });
    if with_second_queue {
        template["Resources"]["Dead"] = json!({
            "Type": "AWS::SQS::Queue",
            "Properties": { "QueueName": { "Fn::Join": ["-", [{ "Ref": "QueueName" }, "dead"]] } }
        });
    }
    template
}

/// Upload the source zip: templates, a parameter file and a template configuration.
async fn upload_source(w: &World, queue: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("config")).expect("app dir");
    let write = |path: &str, value: &Value| {
        std::fs::write(
            app.join(path),
            serde_json::to_string_pretty(value).expect("json"),
        )
        .expect("write")
    };
    write("template.json", &template(false));
    write("template-v2.json", &template(true));
    // `Type` is missing: CloudFormation's validation refuses the template.
    write(
        "broken.json",
        &json!({ "Resources": { "Queue": { "Properties": { "QueueName": "q" } } } }),
    );
    write("config/params.json", &json!({ "QueueName": queue }));
    write(
        "config/stack.json",
        &json!({ "Parameters": { "Env": "prod" }, "Tags": { "team": "deploy" } }),
    );
    std::fs::write(app.join("index.html"), "<h1>hello</h1>").expect("index");
    let zip = dir.path().join("app.zip");
    ZipArchiver.pack(&app, &zip).expect("zip");
    w.clients
        .s3
        .put_object()
        .bucket(&w.source_bucket)
        .key("app.zip")
        .body(
            aws_sdk_s3::primitives::ByteStream::from_path(&zip)
                .await
                .expect("body"),
        )
        .send()
        .await
        .expect("upload source");
}

/// A pipeline: the S3 source, then one stage with `actions` (each reading `Source`).
fn declaration(w: &World, name: &str, actions: Vec<Value>) -> PipelineDeclaration {
    serde_json::from_value(json!({
        "name": name,
        "roleArn": format!("arn:aws:iam::{ACCOUNT_A}:role/penstock"),
        "pipelineType": "V2",
        "executionMode": "QUEUED",
        "artifactStore": {
            "type": "S3",
            "location": w.artifact_bucket,
            "encryptionKey": { "id": w.key_id, "type": "KMS" }
        },
        "stages": [
            { "name": "Source", "actions": [{
                "name": "Fetch",
                "actionTypeId": { "category": "Source", "owner": "AWS", "provider": "S3", "version": "1" },
                "configuration": { "S3Bucket": w.source_bucket, "S3ObjectKey": "app.zip", "PollForSourceChanges": "false" },
                "outputArtifacts": [{ "name": "Source" }]
            }]},
            { "name": "Deploy", "actions": actions }
        ]
    }))
    .expect("declaration")
}

fn cloudformation(name: &str, run_order: u32, configuration: Value) -> Value {
    json!({
        "name": name,
        "runOrder": run_order,
        "actionTypeId": { "category": "Deploy", "owner": "AWS", "provider": "CloudFormation", "version": "1" },
        "roleArn": DEPLOY_ROLE,
        "configuration": configuration,
        "inputArtifacts": [{ "name": "Source" }]
    })
}

/// Create the pipeline, start it and hand every published message to its function until the
/// execution ends; sweep (which polls stacks and builds) when nothing is in flight.
async fn run(w: &World, actions: Vec<Value>) -> Execution {
    let (name, id) = start(w, actions).await;
    drive(w, &name, &id, |execution| {
        execution.status != ExecutionStatus::InProgress
    })
    .await
}

/// Create a pipeline with `actions` and start it: (pipeline, execution id).
async fn start(w: &World, actions: Vec<Value>) -> (String, String) {
    let name = unique_name("pipe");
    w.control
        .create_pipeline(declaration(w, &name, actions), Vec::new())
        .await
        .expect("create pipeline");
    let id = w
        .control
        .start_execution(&name, StartOptions::default())
        .await
        .expect("start");
    (name, id)
}

/// Hand every published message to its function, and sweep when nothing is in flight, until
/// `done` holds for the execution.
async fn drive(w: &World, name: &str, id: &str, done: impl Fn(&Execution) -> bool) -> Execution {
    for _ in 0..60 {
        let messages = w.bus.take();
        let idle = messages.is_empty();
        for envelope in messages {
            match envelope.message {
                BusMessage::ActionScheduled(job) => {
                    w.dispatcher.dispatch(job).await.expect("dispatch");
                }
                BusMessage::EngineInput { pipeline, input } => {
                    w.engine.apply(&pipeline, input).await.expect("apply");
                }
                BusMessage::ActionCancelled { .. } | BusMessage::StateChange { .. } => {}
            }
        }
        let execution = w.control.get_execution(name, id).await.expect("execution");
        if done(&execution) {
            return execution;
        }
        if idle {
            w.sweeper.sweep(false, &WaitForOwners).await.expect("sweep");
        }
    }
    panic!("execution {id} of {name} did not get there");
}

fn action<'a>(execution: &'a Execution, name: &str) -> &'a ActionRun {
    execution
        .stages
        .iter()
        .flat_map(|s| &s.actions)
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no action {name}"))
}

fn succeeded(execution: &Execution) {
    let failures: Vec<String> = execution
        .stages
        .iter()
        .flat_map(|s| &s.actions)
        .filter_map(|a| {
            a.error
                .as_ref()
                .map(|e| format!("{}: {} {}", a.name, e.code, e.message))
        })
        .collect();
    assert_eq!(
        execution.status,
        ExecutionStatus::Succeeded,
        "failures: {failures:?}"
    );
}

/// The stack as account B sees it, or `None`.
async fn stack_in(
    clients: &AwsClients,
    name: &str,
) -> Option<aws_sdk_cloudformation::types::Stack> {
    clients
        .cloudformation
        .describe_stacks()
        .stack_name(name)
        .send()
        .await
        .ok()
        .and_then(|o| o.stacks().first().cloned())
}

async fn queue_exists(clients: &AwsClients, queue: &str) -> bool {
    aws_sdk_sqs::Client::new(clients.sdk_config())
        .get_queue_url()
        .queue_name(queue)
        .send()
        .await
        .is_ok()
}

async fn buckets(clients: &AwsClients) -> Vec<String> {
    clients
        .s3
        .list_buckets()
        .send()
        .await
        .expect("list buckets")
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_string))
        .collect()
}

/// The files of a stored artifact.
async fn artifact_files(w: &World, location: &str) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = dir.path().join("a.zip");
    penstock_aws::artifacts::download_file(
        &w.clients.s3,
        &S3Object::parse(location).expect("location"),
        &zip,
    )
    .await
    .expect("download");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("dir");
    ZipArchiver.unpack(&zip, &out).expect("unpack");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&out).expect("read dir") {
        let entry = entry.expect("entry");
        files.insert(
            entry.file_name().to_string_lossy().into_owned(),
            std::fs::read_to_string(entry.path()).expect("read"),
        );
    }
    files
}

/// The access key id of the functions' own credentials (account A's, not an assumed role's).
async fn own_access_key(w: &World) -> String {
    let provider = w
        .clients
        .sdk_config()
        .credentials_provider()
        .expect("credentials");
    aws_credential_types::provider::ProvideCredentials::provide_credentials(&provider)
        .await
        .expect("own credentials")
        .access_key_id()
        .to_string()
}

fn base_configuration(stack: &str, template: &str, bucket: &str) -> Value {
    json!({
        "ActionMode": "CREATE_UPDATE",
        "StackName": stack,
        "TemplatePath": format!("Source::{template}"),
        "TemplateConfiguration": "Source::config/stack.json",
        "ParameterOverrides": json!({
            "BucketName": bucket,
            "QueueName": { "Fn::GetParam": ["Source", "config/params.json", "QueueName"] }
        }).to_string(),
        "Capabilities": "CAPABILITY_IAM,CAPABILITY_NAMED_IAM",
        "RoleArn": CFN_SERVICE_ROLE,
    })
}

#[tokio::test]
async fn cloudformation_deploys_into_another_account_through_an_assumed_role() {
    let w = world().await;
    let (stack, bucket, queue) = (
        unique_name("stack"),
        unique_name("site"),
        unique_name("queue"),
    );
    upload_source(&w, &queue).await;

    // Create: parameters from the template configuration and the overrides (Fn::GetParam),
    // outputs as variables and as a file in the output artifact.
    let mut create = cloudformation(
        "Create",
        1,
        base_configuration(&stack, "template.json", &bucket),
    );
    create["configuration"]["OutputFileName"] = json!("outputs.json");
    create["outputArtifacts"] = json!([{ "name": "StackOutputs" }]);
    create["namespace"] = json!("StackVariables");
    let execution = run(&w, vec![create]).await;
    succeeded(&execution);
    let created = action(&execution, "Create");
    assert_eq!(
        created.output_variables.get("Env").map(String::as_str),
        Some("prod")
    );
    assert_eq!(
        created.output_variables.get("BucketName"),
        Some(&bucket),
        "{:?}",
        created.output_variables
    );
    let queue_url = created
        .output_variables
        .get("QueueUrl")
        .expect("QueueUrl")
        .clone();
    assert!(
        queue_url.contains(&queue) && queue_url.contains(ACCOUNT_B),
        "{queue_url}"
    );
    let files = artifact_files(&w, &execution.artifacts["StackOutputs"].location).await;
    let written: BTreeMap<String, String> =
        serde_json::from_str(&files["outputs.json"]).expect("outputs.json");
    assert_eq!(written, created.output_variables);

    // The stack and its resources are in B, and not in A.
    let in_b = stack_in(&w.b, &stack).await.expect("the stack is in B");
    assert_eq!(
        in_b.stack_status().map(|s| s.as_str()),
        Some("CREATE_COMPLETE")
    );
    assert!(in_b.stack_id().unwrap_or_default().contains(ACCOUNT_B));
    assert!(
        in_b.tags()
            .iter()
            .any(|t| t.key() == Some("team") && t.value() == Some("deploy"))
    );
    assert_eq!(in_b.role_arn(), Some(CFN_SERVICE_ROLE));
    assert!(
        stack_in(&w.clients, &stack).await.is_none(),
        "no stack in A"
    );
    assert!(queue_exists(&w.b, &queue).await);
    assert!(!queue_exists(&w.clients, &queue).await, "no queue in A");
    assert!(buckets(&w.b).await.contains(&bucket));
    assert!(
        !buckets(&w.clients).await.contains(&bucket),
        "no bucket in A"
    );

    // The artifact the deploy read is SSE-KMS under the pipeline's key, and the deploy read it
    // with the assumed role's credentials: the same key id that signed CreateStack.
    let source = S3Object::parse(&execution.artifacts["Source"].location).expect("location");
    let head = w
        .clients
        .s3
        .head_object()
        .bucket(&source.bucket)
        .key(&source.key)
        .send()
        .await
        .expect("head artifact");
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms)
    );
    assert_eq!(head.ssekms_key_id(), Some(w.key_id.as_str()));
    let own_key = own_access_key(&w).await;
    let deployer = w.signers.signers("CloudFormation", "CreateStack");
    assert_eq!(deployer.len(), 1, "{deployer:?}");
    assert_ne!(
        deployer[0], own_key,
        "CreateStack signed by the assumed role"
    );
    assert!(
        w.signers.signers("S3", "GetObject").contains(&deployer[0]),
        "the deploy read its artifact with the assumed credentials"
    );

    // Update with changes: a second queue appears in B.
    let execution = run(
        &w,
        vec![cloudformation(
            "Update",
            1,
            base_configuration(&stack, "template-v2.json", &bucket),
        )],
    )
    .await;
    succeeded(&execution);
    assert!(queue_exists(&w.b, &format!("{queue}-dead")).await);
    assert_eq!(
        stack_in(&w.b, &stack)
            .await
            .and_then(|s| s.stack_status().map(|s| s.as_str().to_string()))
            .as_deref(),
        Some("UPDATE_COMPLETE")
    );

    // The same again: nothing to update is a success.
    let execution = run(
        &w,
        vec![cloudformation(
            "Again",
            1,
            base_configuration(&stack, "template-v2.json", &bucket),
        )],
    )
    .await;
    succeeded(&execution);
    let again = action(&execution, "Again");
    assert!(
        again
            .external
            .summary
            .as_deref()
            .unwrap_or_default()
            .contains("no updates"),
        "{:?}",
        again.external
    );
    assert_eq!(again.output_variables.get("BucketName"), Some(&bucket));

    // A change set, then its execution, in one stage.
    // moto matches change sets by name across stacks: each test uses its own names.
    let release = unique_name("release");
    let mut replace = base_configuration(&stack, "template.json", &bucket);
    replace["ActionMode"] = json!("CHANGE_SET_REPLACE");
    replace["ChangeSetName"] = json!(release);
    let execute =
        json!({ "ActionMode": "CHANGE_SET_EXECUTE", "StackName": stack, "ChangeSetName": release });
    let execution = run(
        &w,
        vec![
            cloudformation("Plan", 1, replace),
            cloudformation("Apply", 2, execute),
        ],
    )
    .await;
    succeeded(&execution);
    assert!(action(&execution, "Plan").output_variables.is_empty());
    assert_eq!(
        action(&execution, "Apply").output_variables.get("QueueUrl"),
        Some(&queue_url)
    );
    let changed =
        w.b.cloudformation
            .describe_change_set()
            .stack_name(&stack)
            .change_set_name(&release)
            .send()
            .await
            .expect("change set in B");
    assert_eq!(
        changed.execution_status().map(|s| s.as_str()),
        Some("EXECUTE_COMPLETE")
    );

    // A template error fails with CloudFormation's reason, before any stack is touched.
    let execution = run(
        &w,
        vec![cloudformation(
            "Broken",
            1,
            base_configuration(&stack, "broken.json", &bucket),
        )],
    )
    .await;
    assert_eq!(execution.status, ExecutionStatus::Failed);
    let error = action(&execution, "Broken").error.clone().expect("error");
    assert_eq!(error.code, "ConfigurationError");
    assert!(
        error
            .message
            .contains("template Source::broken.json is invalid")
            && error.message.contains("Type"),
        "{}",
        error.message
    );

    // Delete: the stack and its queue leave B.
    let delete =
        json!({ "ActionMode": "DELETE_ONLY", "StackName": stack, "RoleArn": CFN_SERVICE_ROLE });
    let execution = run(&w, vec![cloudformation("Delete", 1, delete.clone())]).await;
    succeeded(&execution);
    assert!(stack_in(&w.b, &stack).await.is_none(), "the stack is gone");
    assert!(!queue_exists(&w.b, &queue).await, "its queue is gone");
    // Deleting what does not exist succeeds.
    let execution = run(&w, vec![cloudformation("DeleteAgain", 1, delete)]).await;
    succeeded(&execution);
}

#[tokio::test]
async fn a_change_set_creates_a_new_stack_when_executed() {
    let w = world().await;
    let (stack, bucket, queue) = (
        unique_name("stack"),
        unique_name("site"),
        unique_name("queue"),
    );
    upload_source(&w, &queue).await;
    let first = unique_name("first");
    let mut plan = base_configuration(&stack, "template.json", &bucket);
    plan["ActionMode"] = json!("CHANGE_SET_REPLACE");
    plan["ChangeSetName"] = json!(first);
    let execution = run(&w, vec![cloudformation("Plan", 1, plan)]).await;
    succeeded(&execution);
    // Planned, not applied: the stack waits for review and nothing was created.
    let waiting = stack_in(&w.b, &stack).await.expect("stack under review");
    assert_eq!(
        waiting.stack_status().map(|s| s.as_str()),
        Some("REVIEW_IN_PROGRESS")
    );
    assert!(!queue_exists(&w.b, &queue).await);
    let execute =
        json!({ "ActionMode": "CHANGE_SET_EXECUTE", "StackName": stack, "ChangeSetName": first });
    let execution = run(&w, vec![cloudformation("Apply", 1, execute)]).await;
    succeeded(&execution);
    assert!(queue_exists(&w.b, &queue).await);
    // Executing a change set that does not exist fails naming it.
    let nope = unique_name("nope");
    let missing =
        json!({ "ActionMode": "CHANGE_SET_EXECUTE", "StackName": stack, "ChangeSetName": nope });
    let execution = run(&w, vec![cloudformation("Missing", 1, missing)]).await;
    assert_eq!(execution.status, ExecutionStatus::Failed);
    let error = action(&execution, "Missing").error.clone().expect("error");
    assert!(
        error
            .message
            .contains(&format!("change set {nope} of stack {stack}")),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_refused_assume_role_fails_the_action_naming_the_role() {
    let w = world().await;
    upload_source(&w, &unique_name("queue")).await;
    let refused = "arn:aws:iam::222222222222:role/not-trusting-penstock";
    w.deny.deny(refused);
    let mut deploy = cloudformation(
        "Deploy",
        1,
        base_configuration(&unique_name("stack"), "template.json", &unique_name("site")),
    );
    deploy["roleArn"] = json!(refused);
    let execution = run(&w, vec![deploy]).await;
    assert_eq!(execution.status, ExecutionStatus::Failed);
    let error = action(&execution, "Deploy").error.clone().expect("error");
    assert_eq!(error.code, "PermissionError");
    assert!(
        error
            .message
            .contains(&format!("assuming {refused} was refused"))
            && error.message.contains("AccessDenied"),
        "{}",
        error.message
    );
    assert!(w.deny.refused() >= 1);
    assert!(
        w.signers
            .signers("CloudFormation", "CreateStack")
            .is_empty()
    );
}

#[tokio::test]
async fn s3_deploy_writes_into_the_target_account_with_every_setting() {
    let w = world().await;
    upload_source(&w, &unique_name("queue")).await;
    let site = unique_name("site");
    w.b.s3
        .create_bucket()
        .bucket(&site)
        .send()
        .await
        .expect("bucket in B");
    let deploy = |name: &str, configuration: Value| {
        json!({
            "name": name,
            "actionTypeId": { "category": "Deploy", "owner": "AWS", "provider": "S3", "version": "1" },
            "roleArn": DEPLOY_ROLE,
            "configuration": configuration,
            "inputArtifacts": [{ "name": "Source" }]
        })
    };
    let execution = run(
        &w,
        vec![
            deploy(
                "Extracted",
                json!({
                    "BucketName": site, "Extract": "true", "ObjectKey": "www",
                    "KMSEncryptionKeyARN": w.key_id, "CannedACL": "public-read",
                    "CacheControl": "max-age=60"
                }),
            ),
            deploy(
                "Zipped",
                json!({ "BucketName": site, "Extract": "false", "ObjectKey": "releases/app.zip" }),
            ),
        ],
    )
    .await;
    succeeded(&execution);
    assert!(buckets(&w.b).await.contains(&site));
    assert!(
        !buckets(&w.clients).await.contains(&site),
        "the bucket is B's"
    );
    let head =
        w.b.s3
            .head_object()
            .bucket(&site)
            .key("www/index.html")
            .send()
            .await
            .expect("index in B");
    assert_eq!(head.cache_control(), Some("max-age=60"));
    assert_eq!(head.content_type(), Some("text/html"));
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms)
    );
    assert_eq!(head.ssekms_key_id(), Some(w.key_id.as_str()));
    let acl =
        w.b.s3
            .get_object_acl()
            .bucket(&site)
            .key("www/index.html")
            .send()
            .await
            .expect("acl");
    assert!(
        acl.grants().iter().any(|g| {
            g.grantee().and_then(|g| g.uri())
                == Some("http://acs.amazonaws.com/groups/global/AllUsers")
                && g.permission().map(|p| p.as_str()) == Some("READ")
        }),
        "public-read: {:?}",
        acl.grants()
    );
    assert!(
        w.b.s3
            .head_object()
            .bucket(&site)
            .key("www/config/params.json")
            .send()
            .await
            .is_ok(),
        "nested files keep their paths"
    );
    let zipped =
        w.b.s3
            .head_object()
            .bucket(&site)
            .key("releases/app.zip")
            .send()
            .await
            .expect("zip in B");
    assert_eq!(
        zipped.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
    );
    assert_eq!(zipped.cache_control(), None);
    // An ACL S3 does not know is refused before anything is written.
    let execution = run(
        &w,
        vec![deploy(
            "BadAcl",
            json!({ "BucketName": site, "Extract": "true", "ObjectKey": "bad", "CannedACL": "everyone" }),
        )],
    )
    .await;
    assert_eq!(execution.status, ExecutionStatus::Failed);
    let error = action(&execution, "BadAcl").error.clone().expect("error");
    assert!(
        error.message.contains("CannedACL \"everyone\""),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_codebuild_build_runs_to_completion_and_exports_variables() {
    let w = world().await;
    upload_source(&w, &unique_name("queue")).await;
    let project = unique_name("build");
    w.clients
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
        .service_role(format!("arn:aws:iam::{ACCOUNT_A}:role/codebuild"))
        .send()
        .await
        .expect("project");
    // moto's builds export no variables; CodeBuild's answer carries them the way it does on
    // AWS (`exportedEnvironmentVariables` of BatchGetBuilds).
    w.exports.export("IMAGE_TAG", "1.2.3");
    let execution = run(
        &w,
        vec![json!({
            "name": "Build",
            "actionTypeId": { "category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1" },
            "configuration": { "ProjectName": project },
            "inputArtifacts": [{ "name": "Source" }],
            "namespace": "BuildVariables"
        })],
    )
    .await;
    succeeded(&execution);
    let build = action(&execution, "Build");
    assert!(
        build
            .external
            .id
            .as_deref()
            .unwrap_or_default()
            .starts_with(&project),
        "{:?}",
        build.external
    );
    assert_eq!(
        build.output_variables,
        BTreeMap::from([("IMAGE_TAG".to_string(), "1.2.3".to_string())])
    );
    assert_eq!(
        execution
            .namespaces
            .get("BuildVariables")
            .and_then(|n| n.get("IMAGE_TAG"))
            .map(String::as_str),
        Some("1.2.3")
    );
    assert_eq!(
        w.signers.signers("CodeBuild", "StartBuild").len(),
        1,
        "one build started"
    );
}

/// A CodeDeploy application with one deployment group, created with `clients` (in their
/// account): (application, deployment group).
async fn codedeploy_application(clients: &AwsClients) -> (String, String) {
    let (application, group) = (unique_name("app"), unique_name("group"));
    clients
        .codedeploy
        .create_application()
        .application_name(&application)
        .send()
        .await
        .expect("application");
    clients
        .codedeploy
        .create_deployment_group()
        .application_name(&application)
        .deployment_group_name(&group)
        .service_role_arn(format!("arn:aws:iam::{ACCOUNT_B}:role/codedeploy"))
        .send()
        .await
        .expect("deployment group");
    (application, group)
}

/// A CodeDeploy action deploying `Source` through the role in account B.
fn codedeploy(name: &str, application: &str, group: &str) -> Value {
    json!({
        "name": name,
        "actionTypeId": { "category": "Deploy", "owner": "AWS", "provider": "CodeDeploy", "version": "1" },
        "roleArn": DEPLOY_ROLE,
        "configuration": { "ApplicationName": application, "DeploymentGroupName": group },
        "inputArtifacts": [{ "name": "Source" }]
    })
}

fn deployment_url(deployment_id: &str) -> String {
    format!(
        "https://{TEST_REGION}.console.aws.amazon.com/codesuite/codedeploy/deployments/{deployment_id}"
    )
}

#[tokio::test]
async fn codedeploy_deploys_the_input_revision_in_the_target_account_and_waits_for_it() {
    let w = world().await;
    upload_source(&w, &unique_name("queue")).await;
    let (application, group) = codedeploy_application(&w.b).await;
    let (name, id) = start(&w, vec![codedeploy("Deploy", &application, &group)]).await;
    let execution = drive(&w, &name, &id, |execution| {
        action(execution, "Deploy").external.id.is_some()
    })
    .await;
    // moto's deployments stay `Created`: however often the sweep polls, the action waits.
    for _ in 0..3 {
        let report = w.sweeper.sweep(false, &WaitForOwners).await.expect("sweep");
        assert_eq!(report.polled_finished, 0, "{report:?}");
    }
    // The sweep's polls, before this test's own reads below add theirs.
    let pollers = w.signers.signers("CodeDeploy", "GetDeployment");
    assert!(!pollers.is_empty(), "the sweep polled the deployment");
    let execution_now = w
        .control
        .get_execution(&name, &id)
        .await
        .expect("execution");
    assert_eq!(execution_now.status, ExecutionStatus::InProgress);
    let deploy = action(&execution_now, "Deploy");
    assert_eq!(deploy.status, ActionStatus::InProgress);
    assert!(deploy.error.is_none(), "{:?}", deploy.error);
    let deployment_id = deploy.external.id.clone().expect("deployment id");
    assert_eq!(
        deploy.external.url.as_deref(),
        Some(deployment_url(&deployment_id).as_str())
    );

    // The deployment is B's, of the input artifact at the version the execution stored.
    let source = S3Object::parse(&execution.artifacts["Source"].location).expect("location");
    assert!(
        source.version_id.is_some(),
        "the artifact bucket is versioned"
    );
    let info =
        w.b.codedeploy
            .get_deployment()
            .deployment_id(&deployment_id)
            .send()
            .await
            .expect("the deployment is in B")
            .deployment_info
            .expect("deployment info");
    assert_eq!(info.application_name(), Some(application.as_str()));
    assert_eq!(info.deployment_group_name(), Some(group.as_str()));
    assert_eq!(info.status().map(|s| s.as_str()), Some("Created"));
    let description = info.description().unwrap_or_default();
    assert!(
        description.contains(&name) && description.contains(&id),
        "{description}"
    );
    let revision = info.revision().expect("revision");
    assert_eq!(revision.revision_type().map(|t| t.as_str()), Some("S3"));
    let s3 = revision.s3_location().expect("s3 location");
    assert_eq!(s3.bucket(), Some(w.artifact_bucket.as_str()));
    assert_eq!(s3.key(), Some(source.key.as_str()));
    assert_eq!(s3.bundle_type().map(|b| b.as_str()), Some("zip"));
    assert_eq!(s3.version(), source.version_id.as_deref());
    assert!(
        w.clients
            .codedeploy
            .get_deployment()
            .deployment_id(&deployment_id)
            .send()
            .await
            .is_err(),
        "no deployment in A"
    );

    // Created and polled with the assumed role's credentials.
    let own_key = own_access_key(&w).await;
    let creator = w.signers.signers("CodeDeploy", "CreateDeployment");
    assert_eq!(creator.len(), 1, "one deployment created: {creator:?}");
    assert_ne!(
        creator[0], own_key,
        "CreateDeployment signed by the assumed role"
    );
    assert!(
        pollers.iter().all(|key| *key == creator[0]),
        "GetDeployment signed by the assumed role: {pollers:?}"
    );
}

#[tokio::test]
async fn a_retried_codedeploy_attempt_adopts_the_deployment_in_flight() {
    // An attempt whose function died after CreateDeployment, before reporting, is run again
    // (the sweep's lease): it must wait for the deployment already going, not start another.
    let w = world().await;
    upload_source(&w, &unique_name("queue")).await;
    let (application, group) = codedeploy_application(&w.b).await;
    let (name, id) = start(&w, vec![codedeploy("Deploy", &application, &group)]).await;
    let mut deploy_job = None;
    for _ in 0..20 {
        for envelope in w.bus.take() {
            match envelope.message {
                BusMessage::ActionScheduled(job) => {
                    deploy_job = Some(job.clone());
                    w.dispatcher.dispatch(job).await.expect("dispatch");
                }
                BusMessage::EngineInput { pipeline, input } => {
                    w.engine.apply(&pipeline, input).await.expect("apply");
                }
                BusMessage::ActionCancelled { .. } | BusMessage::StateChange { .. } => {}
            }
        }
    }
    let job = deploy_job.expect("the deploy action was scheduled");
    let execution = w
        .control
        .get_execution(&name, &id)
        .await
        .expect("execution");
    let first = action(&execution, "Deploy")
        .external
        .id
        .clone()
        .expect("a deployment in flight");

    let work = tempfile::tempdir().expect("work");
    let provider = w
        .providers
        .provider_for(&job.action_type_id)
        .expect("CodeDeploy provider");
    let again = provider
        .run(&penstock_app::ports::JobContext {
            job,
            work_dir: work.path().to_path_buf(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            cancel: tokio_util::sync::CancellationToken::new(),
        })
        .await;
    let penstock_app::ports::ProviderOutcome::Pending { external, .. } = again else {
        panic!("the retried attempt waits: {again:?}");
    };
    assert_eq!(
        external.id.as_deref(),
        Some(first.as_str()),
        "the same deployment"
    );
    assert_eq!(
        w.signers.signers("CodeDeploy", "CreateDeployment").len(),
        1,
        "one deployment created"
    );
    let listed =
        w.b.codedeploy
            .list_deployments()
            .application_name(&application)
            .deployment_group_name(&group)
            .send()
            .await
            .expect("list");
    assert_eq!(listed.deployments(), std::slice::from_ref(&first));
}

#[tokio::test]
async fn a_codedeploy_deployment_that_ends_settles_the_action() {
    let w = world().await;
    upload_source(&w, &unique_name("queue")).await;

    // Succeeded: the action succeeds, pointing at the deployment.
    let (application, group) = codedeploy_application(&w.b).await;
    w.deployments.report(&application, "Succeeded", None);
    let execution = run(&w, vec![codedeploy("Deploy", &application, &group)]).await;
    succeeded(&execution);
    let deploy = action(&execution, "Deploy");
    let deployment_id = deploy.external.id.clone().expect("deployment id");
    assert_eq!(
        deploy.external.url.as_deref(),
        Some(deployment_url(&deployment_id).as_str())
    );
    assert_eq!(
        deploy.external.summary.as_deref(),
        Some(format!("Deployment {deployment_id} succeeded").as_str())
    );

    // Failed (with CodeDeploy's error information) and Stopped: both fail their action.
    let (failing, failing_group) = codedeploy_application(&w.b).await;
    w.deployments.report(
        &failing,
        "Failed",
        Some((
            "HEALTH_CONSTRAINTS",
            "The overall deployment failed because too many individual instances failed deployment",
        )),
    );
    let (stopped, stopped_group) = codedeploy_application(&w.b).await;
    w.deployments.report(&stopped, "Stopped", None);
    let execution = run(
        &w,
        vec![
            codedeploy("Failing", &failing, &failing_group),
            codedeploy("Stopped", &stopped, &stopped_group),
        ],
    )
    .await;
    assert_eq!(execution.status, ExecutionStatus::Failed);
    let failing_action = action(&execution, "Failing");
    let deployment_id = failing_action.external.id.clone().expect("deployment id");
    let error = failing_action.error.clone().expect("error");
    assert_eq!(error.code, "JobFailed");
    assert_eq!(
        error.message,
        format!(
            "deployment {deployment_id} Failed: HEALTH_CONSTRAINTS: The overall deployment failed because too many individual instances failed deployment"
        )
    );
    let stopped_action = action(&execution, "Stopped");
    let deployment_id = stopped_action.external.id.clone().expect("deployment id");
    let error = stopped_action.error.clone().expect("error");
    assert_eq!(error.message, format!("deployment {deployment_id} Stopped"));
}

#[tokio::test]
async fn a_codedeploy_action_without_application_name_fails_before_any_deployment() {
    let w = world().await;
    let (_, group) = codedeploy_application(&w.b).await;
    let job: ActionJob = serde_json::from_value(json!({
        "pipeline_name": "pipe",
        "pipeline_version": 1,
        "execution_id": "e-1",
        "stage": "Deploy",
        "action": "Deploy",
        "attempt": 1,
        "action_execution_id": "a-1",
        "action_type_id": { "category": "Deploy", "owner": "AWS", "provider": "CodeDeploy", "version": "1" },
        "configuration": { "DeploymentGroupName": group },
        "input_artifacts": [{ "name": "Source", "location": format!("s3://{}/pipe/e-1/a-0/Source.zip", w.artifact_bucket) }],
        "output_artifacts": [],
        "role_arn": DEPLOY_ROLE,
        "deadline": 0
    }))
    .expect("job");
    let provider = w
        .providers
        .provider_for(&job.action_type_id)
        .expect("CodeDeploy runs on AWS");
    let work = tempfile::tempdir().expect("work dir");
    let outcome = provider
        .run(&JobContext {
            job,
            work_dir: work.path().to_path_buf(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            cancel: Default::default(),
        })
        .await;
    let ProviderOutcome::Failed { code, message, .. } = outcome else {
        panic!("not refused: {outcome:?}");
    };
    assert_eq!(code, "ConfigurationError");
    assert_eq!(message, "the action's configuration has no ApplicationName");
    assert!(
        w.signers
            .signers("CodeDeploy", "CreateDeployment")
            .is_empty()
    );
}
