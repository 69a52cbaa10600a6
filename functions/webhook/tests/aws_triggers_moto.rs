//! Triggers on AWS APIs (moto), with the real DynamoDB store: the inputs `infra/template.yaml`
//! sends to the webhook function reach its Lambda handler and start exactly the executions they
//! should, once however often delivered.
//!
//! - A scheduled start: the template's Scheduler `Input`, placeholders filled as Scheduler fills
//!   them, invoked directly (as Scheduler invokes the function).
//! - S3: a real `PutObject` into a bucket with EventBridge notifications on; moto emits the
//!   "Object Created" event to the buses' rules, the template's rule pattern routes it to an SQS
//!   queue, the test drains it and hands it to the handler.
//! - ECR: moto's ECR emits no events, so an "ECR Image Action" of the documented shape goes
//!   through `PutEvents` on the default bus, then the template's rule pattern as above.
//!
//! Rules on the default bus stand in for the template's rules, whose target (the function) moto
//! cannot invoke: a Lambda target makes moto's `PutEvents` fail.

use std::path::Path;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, EventBridgeConfiguration, NotificationConfiguration,
    VersioningConfiguration,
};
use lambda_http::{Context, LambdaEvent};
use penstock_app::control::Control;
use penstock_app::intake::Intake;
use penstock_aws::testing::{BusTap, ThrottleDynamoDb, sdk_config, unique_name};
use penstock_aws::{AwsClients, AwsConfig, AwsParts, DynamoStore};
use penstock_core::engine::{Execution, TriggerType};
use penstock_webhook::lambda::WebhookFunction;
use penstock_webhook::{WebhookDeps, WebhookSecret};
use serde_json::{Value, json};

/// The default event bus, where AWS services put their events.
const DEFAULT_BUS: &str = "default";

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/aws")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

/// `infra/template.yaml` as JSON, CloudFormation's short-form tags dropped (`!GetAtt X` -> `X`,
/// `!Sub '...'` -> the string): the parts read here (event patterns, the schedule's input) use
/// none inside them.
fn template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml");
    let text = std::fs::read_to_string(&path).expect("read infra/template.yaml");
    serde_saphyr::from_str(&without_tags(&text)).expect("infra/template.yaml is YAML")
}

fn without_tags(text: &str) -> String {
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

/// The event pattern of the template's rule `rule`, which must target the webhook function on
/// the default bus.
fn trigger_pattern(template: &Value, rule: &str) -> Value {
    let properties = &template["Resources"][rule]["Properties"];
    assert!(
        properties.get("EventBusName").is_none(),
        "{rule} must be on the default bus, where S3 and ECR put their events"
    );
    let targets = properties["Targets"].as_array().expect("targets");
    assert!(
        targets.iter().any(|t| t["Arn"] == "Webhook.Arn"),
        "{rule} must target the webhook function: {targets:?}"
    );
    properties["EventPattern"].clone()
}

struct World {
    clients: AwsClients,
    control: Control,
    function: WebhookFunction,
    throttle: ThrottleDynamoDb,
}

async fn world() -> World {
    let sdk = sdk_config().await;
    let throttle = ThrottleDynamoDb::new("GetItem");
    let clients = AwsClients::with_interceptors(&sdk, vec![throttle.shared()]);
    let (table, bus) = (unique_name("state"), unique_name("bus"));
    DynamoStore::create_table(&clients.dynamodb, &table)
        .await
        .expect("table");
    clients
        .eventbridge
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .expect("bus");
    let parts = AwsParts::new(
        AwsConfig {
            table,
            event_bus: bus,
            artifacts: None,
        },
        clients.clone(),
    );
    let control = Control::new(parts.engine());
    let function = WebhookFunction::new(WebhookDeps::new(
        Intake::new(control.clone()),
        WebhookSecret::new("unused here"),
    ));
    World {
        clients,
        control,
        function,
        throttle,
    }
}

impl World {
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

    /// A queue receiving what the template's rule `rule` matches on the default bus.
    async fn tap(&self, rule: &str) -> BusTap {
        BusTap::new(
            self.clients.sdk_config(),
            DEFAULT_BUS,
            false,
            &[trigger_pattern(&template(), rule)],
        )
        .await
        .expect("rule and queue")
    }
}

fn pipeline(name: &str, source: Value) -> Value {
    json!({
        "name": name,
        "roleArn": "arn:aws:iam::123456789012:role/penstock",
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

fn s3_source(bucket: &str, key: &str) -> Value {
    json!({
        "name": "Object",
        "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
        "configuration": {"S3Bucket": bucket, "S3ObjectKey": key, "PollForSourceChanges": "false"},
        "outputArtifacts": [{"name": "Src"}]
    })
}

fn ecr_source(repository: &str, tag: Option<&str>) -> Value {
    let mut configuration = json!({ "RepositoryName": repository });
    if let Some(tag) = tag {
        configuration["ImageTag"] = json!(tag);
    }
    json!({
        "name": "Image",
        "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "ECR", "version": "1"},
        "configuration": configuration,
        "outputArtifacts": [{"name": "Img"}]
    })
}

#[tokio::test]
async fn the_templates_scheduled_start_starts_the_named_pipeline_once_per_firing() {
    let w = world().await;
    let nightly = unique_name("nightly");
    let other = unique_name("other");
    w.create(pipeline(&nightly, s3_source("bucket", "app.zip")))
        .await;
    w.create(pipeline(&other, s3_source("bucket", "app.zip")))
        .await;

    let template = template();
    let input = template["Resources"]["ScheduledPipelineStart"]["Properties"]["Target"]["Input"]
        .as_str()
        .expect("the schedule's Input");
    let schedule = "arn:aws:scheduler:us-east-1:123456789012:schedule/penstock-pipelines/nightly";
    // What CloudFormation (`!Sub`) and then Scheduler, on each firing, make of the input.
    let fired = |time: &str| -> Value {
        let text = input
            .replace("${ScheduledPipelineName}", &nightly)
            .replace("<aws.scheduler.schedule-arn>", schedule)
            .replace("<aws.scheduler.scheduled-time>", time);
        assert!(
            !text.contains("${") && !text.contains("<aws.scheduler."),
            "the input uses a substitution this test does not fill: {text}"
        );
        serde_json::from_str(&text).expect("the schedule's Input is JSON")
    };

    let report = w.invoke(fired("2026-12-07T06:00:00Z")).await;
    assert_eq!(
        report["started"][0]["pipeline"],
        nightly.as_str(),
        "{report}"
    );
    let executions = w.executions(&nightly).await;
    assert_eq!(executions.len(), 1);
    assert_eq!(
        executions[0].trigger.trigger_type,
        TriggerType::CloudWatchEvent
    );
    assert_eq!(executions[0].trigger.trigger_detail, schedule);
    assert!(w.executions(&other).await.is_empty());

    // Scheduler delivers at least once: the same firing again starts nothing new.
    let again = w.invoke(fired("2026-12-07T06:00:00Z")).await;
    assert_eq!(
        again["started"][0]["pipelineExecutionId"],
        report["started"][0]["pipelineExecutionId"]
    );
    assert_eq!(w.executions(&nightly).await.len(), 1);
    // The next firing starts the next execution.
    w.invoke(fired("2026-12-08T06:00:00Z")).await;
    assert_eq!(w.executions(&nightly).await.len(), 2);
    assert!(w.executions(&other).await.is_empty());
}

#[tokio::test]
async fn an_s3_put_with_eventbridge_notifications_starts_the_pipeline_watching_that_object() {
    let w = world().await;
    let bucket = unique_name("source");
    let s3 = &w.clients.s3;
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    s3.put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning");
    // What the README asks of a watched bucket: EventBridge notifications on.
    s3.put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .event_bridge_configuration(EventBridgeConfiguration::builder().build())
                .build(),
        )
        .send()
        .await
        .expect("EventBridge notifications");
    let tap = w.tap("S3ObjectCreatedTrigger").await;

    let (watching, other_key, other_bucket) = (
        unique_name("release"),
        unique_name("other-key"),
        unique_name("other-bucket"),
    );
    w.create(pipeline(&watching, s3_source(&bucket, "releases/app.zip")))
        .await;
    w.create(pipeline(
        &other_key,
        s3_source(&bucket, "releases/other.zip"),
    ))
    .await;
    w.create(pipeline(
        &other_bucket,
        s3_source("another-bucket", "releases/app.zip"),
    ))
    .await;

    let version = s3
        .put_object()
        .bucket(&bucket)
        .key("releases/app.zip")
        .body(ByteStream::from_static(b"PK\x05\x06 not really a zip"))
        .send()
        .await
        .expect("put")
        .version_id()
        .expect("a versioned bucket answers with the version")
        .to_string();

    // moto sends a bucket's events to the rules of every bus, and with one fixed event id for
    // all of them: events of other tests' buckets are left out here, or their id would make
    // this test's event look like a redelivery. (On AWS each event has its own id.)
    let events: Vec<Value> = tap
        .drain()
        .await
        .expect("drain")
        .into_iter()
        .filter(|e| e["detail"]["bucket"]["name"] == bucket.as_str())
        .collect();
    assert_eq!(events.len(), 1, "one Object Created event: {events:?}");
    let event = &events[0];
    assert_eq!(event["source"], "aws.s3");
    assert_eq!(event["detail-type"], "Object Created");

    let report = w.invoke(event.clone()).await;
    assert_eq!(
        report["started"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    let executions = w.executions(&watching).await;
    assert_eq!(executions.len(), 1);
    assert_eq!(
        executions[0].trigger.trigger_type,
        TriggerType::CloudWatchEvent
    );
    assert_eq!(executions[0].source_revisions.len(), 1);
    assert_eq!(
        executions[0].source_revisions[0].revision_type,
        "S3_OBJECT_VERSION_ID"
    );
    assert_eq!(executions[0].source_revisions[0].revision_value, version);
    assert!(w.executions(&other_key).await.is_empty());
    assert!(w.executions(&other_bucket).await.is_empty());

    // EventBridge delivers at least once: the same event again starts nothing new.
    let again = w.invoke(event.clone()).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(w.executions(&watching).await.len(), 1);
}

#[tokio::test]
async fn an_ecr_push_event_routed_by_the_templates_rule_starts_the_pipeline_watching_that_tag() {
    let w = world().await;
    let tap = w.tap("EcrImagePushedTrigger").await;
    let repository = unique_name("repo");
    let (latest, stable) = (unique_name("latest"), unique_name("stable"));
    w.create(pipeline(&latest, ecr_source(&repository, None)))
        .await;
    w.create(pipeline(&stable, ecr_source(&repository, Some("stable"))))
        .await;

    // The documented "ECR Image Action" push, and two that must not be routed: a failed push
    // and a deletion.
    let pushed = fixture("ecr-image-push.json");
    let mut detail = pushed["detail"].clone();
    detail["repository-name"] = json!(repository);
    let mut failed = detail.clone();
    failed["result"] = json!("FAILURE");
    let mut deleted = detail.clone();
    deleted["action-type"] = json!("DELETE");
    let entries: Vec<PutEventsRequestEntry> = [&detail, &failed, &deleted]
        .into_iter()
        .map(|detail| {
            PutEventsRequestEntry::builder()
                .event_bus_name(DEFAULT_BUS)
                .source(pushed["source"].as_str().expect("source"))
                .detail_type(pushed["detail-type"].as_str().expect("detail-type"))
                .detail(detail.to_string())
                .build()
        })
        .collect();
    let put = w
        .clients
        .eventbridge
        .put_events()
        .set_entries(Some(entries))
        .send()
        .await
        .expect("put events");
    assert_eq!(put.failed_entry_count(), 0);

    let events: Vec<Value> = tap
        .drain()
        .await
        .expect("drain")
        .into_iter()
        .filter(|e| e["detail"]["repository-name"] == repository.as_str())
        .collect();
    assert_eq!(events.len(), 1, "only the successful push: {events:?}");
    let event = &events[0];
    assert_eq!(event["detail"]["action-type"], "PUSH");

    let report = w.invoke(event.clone()).await;
    assert_eq!(
        report["started"][0]["pipeline"],
        latest.as_str(),
        "{report}"
    );
    let executions = w.executions(&latest).await;
    assert_eq!(executions.len(), 1);
    assert_eq!(
        executions[0].source_revisions[0].revision_type,
        "IMAGE_DIGEST"
    );
    assert_eq!(
        executions[0].source_revisions[0].revision_value,
        detail["image-digest"].as_str().expect("digest")
    );
    assert!(w.executions(&stable).await.is_empty());

    // A redelivery of the same event id starts nothing new.
    let again = w.invoke(event.clone()).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(w.executions(&latest).await.len(), 1);
}

#[tokio::test]
async fn a_store_outage_fails_the_invocation_as_retryable_and_the_retry_starts_once() {
    let w = world().await;
    let repository = unique_name("repo");
    let latest = unique_name("latest");
    w.create(pipeline(&latest, ecr_source(&repository, None)))
        .await;
    let mut event = fixture("ecr-image-push.json");
    event["id"] = json!(unique_name("event"));
    event["detail"]["repository-name"] = json!(repository);

    // Every attempt of the SDK's retries throttled: the invocation fails, and says a retry can
    // help (Lambda retries it, then keeps it in the failed-invocation queue).
    w.throttle.arm(100);
    let error = w
        .function
        .handle(LambdaEvent::new(event.clone(), Context::default()))
        .await
        .expect_err("the table is throttled");
    assert!(error.retryable, "{error}");
    assert!(w.throttle.injected() > 0);
    w.throttle.arm(0);
    assert!(w.executions(&latest).await.is_empty());

    // Lambda's retry: one execution.
    let report = w.invoke(event).await;
    assert_eq!(
        report["started"][0]["pipeline"],
        latest.as_str(),
        "{report}"
    );
    assert_eq!(w.executions(&latest).await.len(), 1);
}
