//! End to end on AWS APIs (moto): an S3 source -> CodeBuild -> S3 deploy pipeline driven by the
//! events EventBridge routes. Rules with the functions' event patterns (read from
//! `infra/template.yaml` when the checkout has one, else the functions' own
//! `event_patterns()`) deliver to SQS queues; the test drains each queue and hands its events
//! to that function's handler, so an event routed wrongly never reaches its handler and the run
//! never finishes.
//!
//! Faults on the way: every dispatch event delivered twice, a stale event delivered after
//! later ones, a duplicated start, a crash between the state write and the publish (recovered
//! by the sweeper), and a throttled DynamoDB write retried. A second, clean run counts the AWS
//! calls per action lifecycle (printed; the README's "Cost on AWS" quotes them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use async_trait::async_trait;
use penstock_advancer::Advancer;
use penstock_app::advance::Engine;
use penstock_app::control::Control;
use penstock_app::dispatch::Dispatcher;
use penstock_app::ports::{
    Archiver, BusError, BusMessage, Clock, Envelope, EventBus, IdGenerator, PUBLIC_EVENT_SOURCE,
    RandomIds,
};
use penstock_app::repo::Repository;
use penstock_aws::config::{ArtifactConfig, AwsConfig};
use penstock_aws::testing::{
    BusTap, CallCount, CallCounter, ThrottleDynamoDb, sdk_config, unique_name,
};
use penstock_aws::{AwsClients, AwsParts, DynamoStore};
use penstock_core::engine::{
    ExecutionStatus, Input, StartRequest, Timestamp, Trigger, TriggerType,
};
use penstock_core::model::PipelineDeclaration;
use serde_json::{Value, json};

/// The system clock plus an offset the test moves forward (to make outboxes stale).
#[derive(Default)]
struct TestClock {
    offset_ms: AtomicI64,
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        let real = penstock_app::ports::SystemClock.now();
        Timestamp(real.0 + self.offset_ms.load(Ordering::SeqCst))
    }
}

/// The bus, failing the next publishes when told: the state was written, its effects were not
/// published, exactly what a crash between the two leaves behind.
struct CrashingBus {
    inner: Arc<dyn EventBus>,
    crash_next: AtomicUsize,
}

#[async_trait]
impl EventBus for CrashingBus {
    async fn publish(&self, envelopes: Vec<Envelope>) -> Result<(), BusError> {
        let crash = self
            .crash_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if crash {
            return Err(BusError::Unavailable(
                "the process died before publishing".into(),
            ));
        }
        self.inner.publish(envelopes).await
    }
}

/// Rules routing to each function, by function folder name.
fn routes() -> BTreeMap<String, Vec<Value>> {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml");
    if template.exists() {
        let text = std::fs::read_to_string(&template).expect("read infra/template.yaml");
        return template_routes(&text);
    }
    BTreeMap::from([
        (
            "advancer".to_string(),
            penstock_advancer::event_patterns()
                .into_iter()
                .map(|(_, p)| p)
                .collect(),
        ),
        (
            "dispatcher".to_string(),
            penstock_dispatcher::event_patterns()
                .into_iter()
                .map(|(_, p)| p)
                .collect(),
        ),
    ])
}

/// The EventBridge rule patterns of each function of a SAM template (events of type
/// `EventBridgeRule`), keyed by the folder of the function's `CodeUri`. CloudFormation's short
/// tags (`!Ref`, `!GetAtt`...) are dropped first: the patterns use none.
fn template_routes(text: &str) -> BTreeMap<String, Vec<Value>> {
    let tags = regex_lite_tags(text);
    let template: Value = serde_saphyr::from_str(&tags).expect("infra/template.yaml is YAML");
    let mut routes: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let Some(resources) = template.get("Resources").and_then(Value::as_object) else {
        return routes;
    };
    for resource in resources.values() {
        if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
            continue;
        }
        let properties = &resource["Properties"];
        let Some(code_uri) = properties.get("CodeUri").and_then(Value::as_str) else {
            continue;
        };
        let function = code_uri
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(code_uri)
            .to_string();
        let Some(events) = properties.get("Events").and_then(Value::as_object) else {
            continue;
        };
        for event in events.values() {
            if event.get("Type").and_then(Value::as_str) == Some("EventBridgeRule")
                && let Some(pattern) = event["Properties"].get("Pattern")
            {
                routes
                    .entry(function.clone())
                    .or_default()
                    .push(pattern.clone());
            }
        }
    }
    routes
}

/// The template text with CloudFormation's short-form tags removed (`!Ref X` -> `X`).
fn regex_lite_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut previous = '\n';
    while let Some(c) = chars.next() {
        if c == '!' && (previous.is_whitespace() || previous == '[' || previous == ',') {
            let mut tag = String::new();
            while let Some(&next) = chars.peek() {
                if next.is_ascii_alphanumeric() || next == ':' {
                    tag.push(next);
                    chars.next();
                } else {
                    break;
                }
            }
            if !tag.is_empty() {
                if chars.peek() == Some(&' ') {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c);
        previous = c;
    }
    out
}

struct World {
    clients: AwsClients,
    /// Reads by the test itself, on uncounted clients.
    status: Control,
    counter: CallCounter,
    capacity: CapacityMeter,
    throttle: ThrottleDynamoDb,
    clock: Arc<TestClock>,
    bus: Arc<CrashingBus>,
    control: Control,
    advancer: Advancer,
    dispatcher: Dispatcher,
    taps: BTreeMap<String, BusTap>,
    observer: BusTap,
    source_bucket: String,
    deploy_bucket: String,
    artifact_bucket: String,
    key_id: String,
    _work: tempfile::TempDir,
}

async fn world() -> World {
    let config = sdk_config().await;
    let counter = CallCounter::new();
    let throttle = ThrottleDynamoDb::new("TransactWriteItems");
    let capacity = CapacityMeter::default();
    let clients = AwsClients::with_interceptors(
        &config,
        vec![counter.shared(), throttle.shared(), capacity.shared()],
    );
    let (table, bus_name) = (unique_name("state"), unique_name("bus"));
    let (artifact_bucket, source_bucket, deploy_bucket) = (
        unique_name("artifacts"),
        unique_name("source"),
        unique_name("site"),
    );
    DynamoStore::create_table(&clients.dynamodb, &table)
        .await
        .expect("table");
    for bucket in [&artifact_bucket, &source_bucket, &deploy_bucket] {
        clients
            .s3
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("bucket");
    }
    for bucket in [&artifact_bucket, &source_bucket] {
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
    clients
        .codebuild
        .create_project()
        .name("penstock-build")
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

    let mut taps = BTreeMap::new();
    let mut first = true;
    for (function, patterns) in routes() {
        let tap = BusTap::new(&config, &bus_name, first, &patterns)
            .await
            .expect("function rules");
        first = false;
        taps.insert(function, tap);
    }
    let observer = BusTap::new(
        &config,
        &bus_name,
        first,
        &[json!({ "source": [PUBLIC_EVENT_SOURCE] })],
    )
    .await
    .expect("observer rule");

    let parts = AwsParts::new(
        AwsConfig {
            table,
            event_bus: bus_name,
            artifacts: Some(ArtifactConfig {
                bucket: artifact_bucket.clone(),
                kms_key: key_id.clone(),
            }),
        },
        clients.clone(),
    );
    let clock = Arc::new(TestClock::default());
    let bus = Arc::new(CrashingBus {
        inner: parts.bus.clone(),
        crash_next: AtomicUsize::new(0),
    });
    let engine = Engine::new(
        Repository::new(parts.store.clone()),
        bus.clone(),
        clock.clone(),
        Arc::new(RandomIds),
    );
    let archiver: Arc<dyn Archiver> = Arc::new(penstock_local::adapters::ZipArchiver);
    let providers = Arc::new(
        parts
            .providers(archiver.clone(), None, None)
            .expect("providers"),
    );
    let work = tempfile::tempdir().expect("work dir");
    let dispatcher = Dispatcher::new(
        engine.clone(),
        Arc::new(parts.require_artifacts().expect("artifacts")),
        archiver,
        providers.clone(),
        "dispatcher-test".into(),
        work.path().to_path_buf(),
    );
    let uncounted = AwsParts::new(parts.config.clone(), AwsClients::new(&config));
    World {
        status: Control::new(uncounted.engine()),
        control: Control::new(engine.clone()),
        advancer: Advancer::new(engine.clone(), Some(providers)),
        dispatcher,
        clients,
        counter,
        capacity,
        throttle,
        clock,
        bus,
        taps,
        observer,
        source_bucket,
        deploy_bucket,
        artifact_bucket,
        key_id,
        _work: work,
    }
}

fn declaration(w: &World, name: &str) -> PipelineDeclaration {
    serde_json::from_value(json!({
        "name": name,
        "roleArn": "arn:aws:iam::123456789012:role/penstock",
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
                "outputArtifacts": [{ "name": "SourceOutput" }],
                "namespace": "SourceVariables"
            }]},
            { "name": "Build", "actions": [{
                "name": "Compile",
                "actionTypeId": { "category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1" },
                "configuration": {
                    "ProjectName": "penstock-build",
                    "EnvironmentVariables": "[{\"name\":\"SOURCE_VERSION\",\"value\":\"#{SourceVariables.VersionId}\",\"type\":\"PLAINTEXT\"}]"
                },
                "inputArtifacts": [{ "name": "SourceOutput" }]
            }]},
            { "name": "Deploy", "actions": [{
                "name": "Publish",
                "actionTypeId": { "category": "Deploy", "owner": "AWS", "provider": "S3", "version": "1" },
                "configuration": { "BucketName": w.deploy_bucket, "Extract": "true", "ObjectKey": "site", "KMSEncryptionKeyARN": w.key_id },
                "inputArtifacts": [{ "name": "SourceOutput" }]
            }]}
        ]
    }))
    .expect("declaration")
}

/// Upload the application zip to the source bucket; returns its version id.
async fn upload_source(w: &World, index: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("assets")).expect("app dir");
    std::fs::write(app.join("index.html"), index).expect("index");
    std::fs::write(app.join("assets/site.css"), "body { color: teal; }").expect("css");
    let zip = dir.path().join("app.zip");
    penstock_local::adapters::ZipArchiver
        .pack(&app, &zip)
        .expect("zip");
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
        .expect("upload source")
        .version_id()
        .expect("a versioned source")
        .to_string()
}

fn start_event(pipeline: &str, execution_id: &str) -> Value {
    let envelope = Envelope {
        id: RandomIds.uuid(),
        message: BusMessage::EngineInput {
            pipeline: pipeline.to_string(),
            input: Input::Start(StartRequest {
                execution_id: execution_id.to_string(),
                trigger: Trigger {
                    trigger_type: TriggerType::CloudWatchEvent,
                    trigger_detail: "e2e".into(),
                },
                variables: BTreeMap::new(),
                source_revisions: Vec::new(),
            }),
        },
    };
    json!({
        "version": "0",
        "id": RandomIds.uuid(),
        "source": "penstock",
        "detail-type": "Penstock Engine Input",
        "detail": envelope,
    })
}

fn sweep_event() -> Value {
    json!({ "source": "penstock.scheduler", "detail-type": "Penstock Sweep", "detail": {} })
}

async fn execution_status(w: &World, pipeline: &str, id: &str) -> ExecutionStatus {
    w.status
        .get_execution(pipeline, id)
        .await
        .expect("execution")
        .status
}

/// What a drained event did, for the fault checks.
#[derive(Default)]
struct Pump {
    handled: Vec<(String, Value, Value)>,
    sweeps: usize,
}

/// Hand every routed event to its function until the execution ends; sweep when nothing is
/// in flight (builds are polled by the sweeper). `tamper` may reorder or repeat a batch.
async fn pump(
    w: &World,
    pipeline: &str,
    execution_id: &str,
    pump: &mut Pump,
    mut tamper: impl FnMut(&str, Vec<Value>, &Pump) -> Vec<Value>,
) -> ExecutionStatus {
    for _ in 0..60 {
        let mut delivered = 0;
        for (function, tap) in &w.taps {
            let events = tap.drain().await.expect("drain");
            let events = tamper(function, events, pump);
            for event in events {
                delivered += 1;
                let result = match function.as_str() {
                    "dispatcher" => {
                        penstock_dispatcher::handle_event(&w.dispatcher, event.clone()).await
                    }
                    "advancer" => w.advancer.handle_event(event.clone()).await,
                    other => panic!(
                        "the template routes events to {other}, which this test does not run"
                    ),
                };
                let result = result.unwrap_or_else(|e| panic!("{function} failed on {event}: {e}"));
                pump.handled.push((function.clone(), event, result));
            }
        }
        let status = execution_status(w, pipeline, execution_id).await;
        if status.is_terminal() {
            return status;
        }
        if delivered == 0 {
            // Nothing in flight: time passes (past the sweeper's staleness thresholds) and the
            // schedule fires.
            w.clock.offset_ms.fetch_add(
                penstock_advancer::STALE_OUTBOX_MS.max(penstock_advancer::UNCLAIMED_ATTEMPT_MS)
                    + 1_000,
                Ordering::SeqCst,
            );
            w.advancer.handle_event(sweep_event()).await.expect("sweep");
            pump.sweeps += 1;
        }
    }
    panic!(
        "the execution did not finish: {:?}",
        execution_status(w, pipeline, execution_id).await
    );
}

/// The (detail-type, detail) of every public event drained, without duplicates.
fn public_events(events: &[Value]) -> BTreeSet<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["detail-type"].as_str().unwrap_or_default().to_string(),
                e["detail"].to_string(),
            )
        })
        .collect()
}

fn states(events: &[Value], detail_type: &str, field: &str) -> BTreeSet<(String, String)> {
    events
        .iter()
        .filter(|e| e["detail-type"] == detail_type)
        .map(|e| {
            (
                e["detail"]
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                e["detail"]["state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_end_to_end_on_aws_apis_through_faults() {
    let w = world().await;
    let pipeline = unique_name("site");
    let version = upload_source(&w, "<h1>one</h1>").await;
    w.control
        .create_pipeline(declaration(&w, &pipeline), Vec::new())
        .await
        .expect("create");
    for (function, tap) in &w.taps {
        assert!(
            tap.drain().await.expect("drain").is_empty(),
            "nothing routed to {function} yet"
        );
    }

    // A duplicated start: one execution.
    let execution_id = RandomIds.uuid();
    for _ in 0..2 {
        w.advancer
            .handle_event(start_event(&pipeline, &execution_id))
            .await
            .expect("start");
    }
    // A throttled write on the way is retried by the SDK.
    w.throttle.arm(1);
    // The write that schedules the build crashes before publishing: the sweeper recovers it.
    let mut crashed = false;
    let mut stale_source_event: Option<Value> = None;
    let mut run = Pump::default();
    let status = pump(
        &w,
        &pipeline,
        &execution_id,
        &mut run,
        |function, events, pump| {
            if function != "dispatcher" {
                return events;
            }
            let mut out = Vec::new();
            for event in events {
                let action = event["detail"]["message"]["ActionScheduled"]["action"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if action == "Fetch" && stale_source_event.is_none() {
                    stale_source_event = Some(event.clone());
                    // The source dispatch's success is the write whose publish is lost.
                    w.bus.crash_next.store(1, Ordering::SeqCst);
                    crashed = true;
                }
                if action == "Publish"
                    && let Some(stale) = stale_source_event.take()
                {
                    // Reordered: the source's dispatch event arrives after the deploy's.
                    out.push(event.clone());
                    out.push(stale);
                    continue;
                }
                // Every dispatch event is delivered twice.
                out.push(event.clone());
                out.push(event);
            }
            let _ = pump;
            out
        },
    )
    .await;
    assert_eq!(status, ExecutionStatus::Succeeded);
    assert!(crashed, "the crash was injected");
    assert_eq!(w.throttle.injected(), 1, "one throttled write");

    // The duplicate and reordered deliveries did nothing.
    let results: Vec<&str> = run
        .handled
        .iter()
        .filter(|(f, _, _)| f == "dispatcher")
        .filter_map(|(_, _, r)| r["result"].as_str())
        .collect();
    assert_eq!(
        results.iter().filter(|r| **r == "ran").count(),
        3,
        "{results:?}"
    );
    assert!(results.contains(&"already-claimed"), "{results:?}");
    assert!(results.contains(&"stale"), "{results:?}");
    assert!(
        run.sweeps >= 2,
        "the sweeper polled the build and recovered the lost publish"
    );

    // One execution, succeeded, from the pinned source version.
    let (executions, _) = w
        .control
        .list_executions(&pipeline, None, 10)
        .await
        .expect("list");
    assert_eq!(executions.len(), 1);
    let execution = &executions[0];
    let fetch = &execution.stages[0].actions[0];
    assert_eq!(fetch.output_variables.get("VersionId"), Some(&version));
    let compile = &execution.stages[1].actions[0];
    assert_eq!(
        compile
            .resolved_configuration
            .get("EnvironmentVariables")
            .map(|v| v.contains(&version)),
        Some(true)
    );
    assert!(compile.external.id.is_some(), "the build id is recorded");

    // The artifact is encrypted with the pipeline's key, and the site is deployed with SSE.
    let artifact = penstock_aws::artifacts::S3Object::parse(&fetch.output_artifacts[0].location)
        .expect("location");
    assert!(artifact.version_id.is_some());
    let head = w
        .clients
        .s3
        .head_object()
        .bucket(&artifact.bucket)
        .key(&artifact.key)
        .set_version_id(artifact.version_id.clone())
        .send()
        .await
        .expect("artifact");
    assert_eq!(
        head.server_side_encryption().map(|e| e.as_str()),
        Some("aws:kms")
    );
    assert!(head.ssekms_key_id().is_some_and(|k| k.contains(&w.key_id)));
    let page = w
        .clients
        .s3
        .get_object()
        .bucket(&w.deploy_bucket)
        .key("site/index.html")
        .send()
        .await
        .expect("deployed page");
    assert_eq!(
        page.server_side_encryption().map(|e| e.as_str()),
        Some("aws:kms")
    );
    let body = page.body.collect().await.expect("body").into_bytes();
    assert_eq!(body.as_ref(), b"<h1>one</h1>");

    // Every state change was observed on the bus, under Penstock's public source.
    let observed = w.observer.drain().await.expect("observer");
    assert!(observed.iter().all(|e| e["source"] == PUBLIC_EVENT_SOURCE));
    assert_eq!(
        states(
            &observed,
            "CodePipeline Pipeline Execution State Change",
            "execution-id"
        ),
        BTreeSet::from([
            (execution_id.clone(), "STARTED".to_string()),
            (execution_id.clone(), "SUCCEEDED".to_string()),
        ])
    );
    let stages = states(
        &observed,
        "CodePipeline Stage Execution State Change",
        "stage",
    );
    let actions = states(
        &observed,
        "CodePipeline Action Execution State Change",
        "action",
    );
    for stage in ["Source", "Build", "Deploy"] {
        for state in ["STARTED", "SUCCEEDED"] {
            assert!(
                stages.contains(&(stage.to_string(), state.to_string())),
                "{stage} {state}: {stages:?}"
            );
        }
    }
    for action in ["Fetch", "Compile", "Publish"] {
        for state in ["STARTED", "SUCCEEDED"] {
            assert!(
                actions.contains(&(action.to_string(), state.to_string())),
                "{action} {state}: {actions:?}"
            );
        }
    }

    // A clean second run, counted.
    upload_source(&w, "<h1>two</h1>").await;
    w.counter.take();
    w.capacity.take();
    let second = RandomIds.uuid();
    w.advancer
        .handle_event(start_event(&pipeline, &second))
        .await
        .expect("start");
    let mut clean = Pump::default();
    let status = pump(&w, &pipeline, &second, &mut clean, |_, events, _| events).await;
    assert_eq!(status, ExecutionStatus::Succeeded);
    let counts = w.counter.take();
    let observed = w.observer.drain().await.expect("observer");
    report_calls(&counts, 3, clean.sweeps, public_events(&observed).len());
    let capacity = w.capacity.take();
    let cost = report_cost(capacity, &counts);
    // The meter saw the run: every write and read of it, and every entry the run published.
    assert!(capacity.write_units >= 9.0, "{capacity:?}");
    assert!(capacity.read_units > 0.0, "{capacity:?}");
    assert!(
        capacity.event_entries >= public_events(&observed).len(),
        "{capacity:?}"
    );
    assert!(cost > 0.0);
    let store = w.control.engine.repo.store();
    for (pk, sk) in [
        (format!("PIPELINE#{pipeline}"), "STATE"),
        (format!("EXECUTION#{second}"), "EXECUTION"),
    ] {
        let item = store
            .get(&penstock_app::store::ItemKey::new(pk.clone(), sk))
            .await
            .expect("get")
            .expect("item");
        println!(
            "  item {pk}/{sk}: {} bytes of JSON",
            item.body.to_string().len()
        );
    }
}

/// Print the calls of one 3-action execution, per service and operation, and per action.
fn report_calls(
    counts: &BTreeMap<(String, String), CallCount>,
    actions: usize,
    sweeps: usize,
    public_events: usize,
) {
    println!(
        "AWS calls for one execution of 3 actions ({sweeps} sweeps, {public_events} public events):"
    );
    for ((service, operation), count) in counts {
        println!(
            "  {service:<12} {operation:<28} {:>3} calls {:>3} attempts  {:.2} per action",
            count.executions,
            count.attempts,
            count.executions as f64 / actions as f64
        );
    }
    let sum = |service: &str, ops: &[&str]| -> usize {
        counts
            .iter()
            .filter(|((s, o), _)| s == service && ops.contains(&o.as_str()))
            .map(|(_, c)| c.executions)
            .sum()
    };
    let writes = sum("DynamoDB", &["PutItem", "TransactWriteItems", "DeleteItem"]);
    let reads = sum("DynamoDB", &["GetItem", "Query"]);
    let puts = sum("EventBridge", &["PutEvents"]);
    println!(
        "  per action lifecycle: {:.2} DynamoDB writes, {:.2} DynamoDB reads, {:.2} PutEvents",
        writes as f64 / actions as f64,
        reads as f64 / actions as f64,
        puts as f64 / actions as f64
    );
}

/// Every internal event type reaches exactly one function (the template, when present, must
/// route them as the functions expect).
#[test]
fn every_internal_event_type_is_routed_to_exactly_one_function() {
    let routes = routes();
    let matches = |pattern: &Value, source: &str, detail_type: &str| {
        let listed = |field: &str, value: &str| {
            pattern[field]
                .as_array()
                .is_some_and(|values| values.iter().any(|v| v == value))
        };
        listed("source", source) && listed("detail-type", detail_type)
    };
    for (source, detail_type) in BusMessage::published_event_types() {
        if source != penstock_app::ports::INTERNAL_EVENT_SOURCE {
            continue;
        }
        let targets: Vec<&String> = routes
            .iter()
            .filter(|(_, patterns)| patterns.iter().any(|p| matches(p, source, detail_type)))
            .map(|(function, _)| function)
            .collect();
        assert_eq!(targets.len(), 1, "{detail_type} is routed to {targets:?}");
    }
}

/// DynamoDB capacity units as on-demand billing counts them, estimated from what goes over the
/// wire: a write costs one unit per started kilobyte of the item written (two inside a
/// transaction, one more for the index copy of an indexed item); a read costs one unit per
/// started 4 KB of the items returned (half for an eventually consistent read). Deletes and
/// condition checks carry no item, so they are counted as items of one kilobyte.
#[derive(Debug, Clone, Default)]
struct CapacityMeter {
    units: Arc<std::sync::Mutex<Capacity>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Capacity {
    write_units: f64,
    read_units: f64,
    /// EventBridge bills entries, not requests.
    event_entries: usize,
}

impl CapacityMeter {
    fn shared(&self) -> aws_smithy_runtime_api::client::interceptors::SharedInterceptor {
        aws_smithy_runtime_api::client::interceptors::SharedInterceptor::new(self.clone())
    }

    fn take(&self) -> Capacity {
        self.units
            .lock()
            .map(|mut units| std::mem::take(&mut *units))
            .unwrap_or_default()
    }

    fn add(&self, write_units: f64, read_units: f64, event_entries: usize) {
        if let Ok(mut units) = self.units.lock() {
            units.write_units += write_units;
            units.read_units += read_units;
            units.event_entries += event_entries;
        }
    }
}

fn operation(cfg: &aws_smithy_types::config_bag::ConfigBag) -> Option<(String, String)> {
    cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
        .map(|m| (m.service().to_string(), m.name().to_string()))
}

/// The size DynamoDB bills for an attribute value in its JSON wire form.
fn value_size(value: &Value) -> usize {
    use base64::Engine as _;
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match (kind.as_str(), inner) {
        ("S", Value::String(text)) => text.len(),
        ("N", Value::String(number)) => number.trim_start_matches('-').len().div_ceil(2) + 1,
        ("B", Value::String(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_or(encoded.len(), |bytes| bytes.len()),
        ("BOOL" | "NULL", _) => 1,
        ("M", Value::Object(members)) => 3 + item_size(members),
        ("L", Value::Array(values)) => 3 + values.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        _ => inner.to_string().len(),
    }
}

fn item_size(attributes: &serde_json::Map<String, Value>) -> usize {
    attributes
        .iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

/// Write units of one item put: its kilobytes, plus the index copy when it is indexed.
fn put_units(item: &Value) -> f64 {
    let Some(attributes) = item.as_object() else {
        return 1.0;
    };
    let kilobytes = item_size(attributes).div_ceil(1024).max(1) as f64;
    if attributes.contains_key("gsi1pk") {
        kilobytes * 2.0
    } else {
        kilobytes
    }
}

fn read_units(items: &[&Value], consistent: bool) -> f64 {
    let bytes: usize = items
        .iter()
        .filter_map(|item| item.as_object())
        .map(item_size)
        .sum();
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for CapacityMeter {
    fn name(&self) -> &'static str {
        "PenstockCapacityMeter"
    }

    fn read_before_transmit(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let Some((service, name)) = operation(cfg) else {
            return Ok(());
        };
        let Some(body) = context.request().body().bytes() else {
            return Ok(());
        };
        // A meter only reads: bodies that are not JSON (S3) are none of its business.
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return Ok(());
        };
        if (service.as_str(), name.as_str()) == ("EventBridge", "PutEvents") {
            self.add(0.0, 0.0, request["Entries"].as_array().map_or(0, Vec::len));
        }
        if service != "DynamoDB" {
            return Ok(());
        }
        let units = match name.as_str() {
            "PutItem" => put_units(&request["Item"]),
            "UpdateItem" | "DeleteItem" => 1.0,
            "TransactWriteItems" => request["TransactItems"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|item| {
                            2.0 * item.get("Put").map_or(1.0, |put| put_units(&put["Item"]))
                        })
                        .sum()
                })
                .unwrap_or(0.0),
            _ => 0.0,
        };
        self.add(units, 0.0, 0);
        Ok(())
    }

    // After deserialization: by then the SDK has read the whole body into memory.
    fn read_after_deserialization(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let Some((service, name)) = operation(cfg) else {
            return Ok(());
        };
        if service != "DynamoDB" || !context.response().status().is_success() {
            return Ok(());
        }
        let Some(body) = context.response().body().bytes() else {
            return Ok(());
        };
        let Ok(response) = serde_json::from_slice::<Value>(body) else {
            return Ok(());
        };
        let units = match name.as_str() {
            // The store reads its items strongly consistent; index queries cannot be.
            "GetItem" => read_units(&response.get("Item").into_iter().collect::<Vec<_>>(), true),
            "Query" => {
                let items: Vec<&Value> = response["Items"]
                    .as_array()
                    .map(|items| items.iter().collect())
                    .unwrap_or_default();
                read_units(&items, false)
            }
            _ => 0.0,
        };
        self.add(0.0, units, 0);
        Ok(())
    }
}

/// Request charges of one execution in us-east-1 list prices (on-demand DynamoDB per million
/// units: $0.625 writes, $0.125 reads; EventBridge $1 per million entries; S3 $0.005 per
/// thousand PUTs and $0.0004 per thousand GETs/HEADs). KMS is left out: with S3 Bucket Keys on
/// the artifact bucket its requests are shared across many objects.
fn report_cost(capacity: Capacity, counts: &BTreeMap<(String, String), CallCount>) -> f64 {
    let event_entries = capacity.event_entries;
    let calls = |service: &str, ops: &[&str]| -> f64 {
        counts
            .iter()
            .filter(|((s, o), _)| s == service && ops.contains(&o.as_str()))
            .map(|(_, c)| c.executions as f64)
            .sum()
    };
    let dynamodb = capacity.write_units * 0.625e-6 + capacity.read_units * 0.125e-6;
    let eventbridge = event_entries as f64 * 1e-6;
    let s3 = calls(
        "S3",
        &[
            "PutObject",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
        ],
    ) * 0.005e-3
        + calls("S3", &["GetObject", "HeadObject"]) * 0.0004e-3;
    let total = dynamodb + eventbridge + s3;
    println!(
        "  DynamoDB: {:.1} write units, {:.1} read units = ${dynamodb:.7}",
        capacity.write_units, capacity.read_units
    );
    println!("  EventBridge: {event_entries} entries = ${eventbridge:.7}");
    println!("  S3 requests: ${s3:.7}");
    println!("  total request charges per execution: ${total:.7}");
    total
}
