//! AWS events starting executions on the embedded default (SQLite state): an EventBridge
//! scheduled event, S3 objects created (EventBridge and S3 notification shapes) and an ECR
//! image push, each with AWS's payload shapes, each starting once however often delivered.

use std::path::Path;

use penstock_app::control::Control;
use penstock_app::intake::Intake;
use penstock_core::engine::{Execution, TriggerType};
use penstock_core::model::Tag;
use penstock_local::runtime::{DataDir, LocalParts};
use penstock_webhook::aws_events::{AwsTriggerEvent, handle_aws_event, parse_aws_event};
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/aws")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

struct Local {
    _dir: tempfile::TempDir,
    control: Control,
    intake: Intake,
}

fn local() -> Local {
    let dir = tempfile::tempdir().expect("tempdir");
    let parts = LocalParts::open(DataDir::new(dir.path())).expect("data dir");
    let control = parts.detached_control();
    Local {
        _dir: dir,
        intake: Intake::new(control.clone()),
        control,
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

fn s3_source(bucket: &str, key: &str) -> Value {
    json!({
        "name": "Object",
        "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
        "configuration": {"S3Bucket": bucket, "S3ObjectKey": key, "PollForSourceChanges": "false"},
        "outputArtifacts": [{"name": "Src"}]
    })
}

impl Local {
    async fn create(&self, declaration: Value, tags: Vec<Tag>) {
        let validated = penstock_core::validate::parse_and_validate(
            &json!({ "pipeline": declaration }).to_string(),
        )
        .expect("valid pipeline");
        self.control
            .create_pipeline(validated.declaration, tags)
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
}

#[tokio::test]
async fn a_scheduled_event_starts_the_pipeline_its_rule_names() {
    let local = local();
    let source = s3_source("bucket", "key.zip");
    // Named like the rule.
    local
        .create(pipeline("my-scheduled-rule", source.clone()), vec![])
        .await;
    // Tagged with the rule's name.
    local
        .create(
            pipeline("nightly", source.clone()),
            vec![Tag {
                key: "penstock:schedule-rule".into(),
                value: "my-scheduled-rule".into(),
            }],
        )
        .await;
    // Neither.
    local.create(pipeline("unscheduled", source), vec![]).await;

    let event = fixture("eventbridge-schedule.json");
    assert!(matches!(
        parse_aws_event(&event).expect("parse"),
        AwsTriggerEvent::Scheduled { ref rule, .. }
            if rule == "arn:aws:events:us-east-1:123456789012:rule/my-scheduled-rule"
    ));
    let report = handle_aws_event(&local.intake, &event)
        .await
        .expect("intake");
    let mut started: Vec<&str> = report.started.iter().map(|s| s.pipeline.as_str()).collect();
    started.sort();
    assert_eq!(started, vec!["my-scheduled-rule", "nightly"]);
    for name in ["my-scheduled-rule", "nightly"] {
        let executions = local.executions(name).await;
        assert_eq!(executions.len(), 1, "{name}");
        assert_eq!(
            executions[0].trigger.trigger_type,
            TriggerType::CloudWatchEvent
        );
        assert_eq!(
            executions[0].trigger.trigger_detail,
            "arn:aws:events:us-east-1:123456789012:rule/my-scheduled-rule"
        );
        assert!(executions[0].source_revisions.is_empty());
    }
    assert!(local.executions("unscheduled").await.is_empty());

    // EventBridge delivers at least once: the same event again starts nothing.
    let again = handle_aws_event(&local.intake, &event)
        .await
        .expect("intake");
    assert!(again.duplicate);
    assert_eq!(local.executions("nightly").await.len(), 1);
    // The same firing under another event id (a retried target) still starts nothing new.
    let mut retried = event.clone();
    retried["id"] = json!("another-id");
    handle_aws_event(&local.intake, &retried)
        .await
        .expect("intake");
    assert_eq!(local.executions("nightly").await.len(), 1);
    // The next firing starts again.
    let mut next = event;
    next["id"] = json!("next-id");
    next["time"] = json!("2015-10-08T17:53:06Z");
    handle_aws_event(&local.intake, &next)
        .await
        .expect("intake");
    assert_eq!(local.executions("nightly").await.len(), 2);
}

#[tokio::test]
async fn an_s3_object_created_event_starts_pipelines_watching_that_object() {
    let local = local();
    local
        .create(
            pipeline(
                "release",
                s3_source("amzn-s3-demo-bucket1", "releases/app.zip"),
            ),
            vec![],
        )
        .await;
    local
        .create(
            pipeline(
                "other-key",
                s3_source("amzn-s3-demo-bucket1", "releases/other.zip"),
            ),
            vec![],
        )
        .await;
    let event = fixture("s3-object-created.json");
    let report = handle_aws_event(&local.intake, &event)
        .await
        .expect("intake");
    assert_eq!(report.started.len(), 1);
    let executions = local.executions("release").await;
    assert_eq!(executions.len(), 1);
    let execution = &executions[0];
    assert_eq!(execution.trigger.trigger_type, TriggerType::CloudWatchEvent);
    assert_eq!(execution.source_revisions.len(), 1);
    assert_eq!(execution.source_revisions[0].action_name, "Object");
    assert_eq!(
        execution.source_revisions[0].revision_type,
        "S3_OBJECT_VERSION_ID"
    );
    assert_eq!(
        execution.source_revisions[0].revision_value,
        "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"
    );
    assert!(local.executions("other-key").await.is_empty());
    // Delivered twice: one execution.
    let again = handle_aws_event(&local.intake, &event)
        .await
        .expect("intake");
    assert!(again.duplicate);
    assert_eq!(local.executions("release").await.len(), 1);
}

#[tokio::test]
async fn s3_notifications_decode_their_keys() {
    let local = local();
    local
        .create(
            pipeline("photos", s3_source("sourcebucket", "Happy Face.jpg")),
            vec![],
        )
        .await;
    let event = fixture("s3-event-with-decoded.json");
    let report = handle_aws_event(&local.intake, &event)
        .await
        .expect("intake");
    assert_eq!(report.started.len(), 1, "{report:?}");
    let executions = local.executions("photos").await;
    assert_eq!(executions[0].source_revisions[0].revision_value, "version");
    // No event id in a notification: the object's identity (version, etag, sequencer) keeps a
    // repeated notification from starting again.
    handle_aws_event(&local.intake, &event)
        .await
        .expect("intake");
    assert_eq!(local.executions("photos").await.len(), 1);
}

#[tokio::test]
async fn an_ecr_push_starts_pipelines_watching_that_repository_and_tag() {
    let local = local();
    let ecr = |tag: Option<&str>| {
        let mut configuration = json!({"RepositoryName": "my-repository-name"});
        if let Some(tag) = tag {
            configuration["ImageTag"] = json!(tag);
        }
        json!({
            "name": "Image",
            "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "ECR", "version": "1"},
            "configuration": configuration,
            "outputArtifacts": [{"name": "Img"}]
        })
    };
    local.create(pipeline("latest", ecr(None)), vec![]).await;
    local
        .create(pipeline("stable", ecr(Some("stable"))), vec![])
        .await;
    let event = fixture("ecr-image-push.json");
    let report = handle_aws_event(&local.intake, &event)
        .await
        .expect("intake");
    assert_eq!(report.started.len(), 1);
    let executions = local.executions("latest").await;
    assert_eq!(
        executions[0].source_revisions[0].revision_type,
        "IMAGE_DIGEST"
    );
    assert_eq!(
        executions[0].source_revisions[0].revision_value,
        "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234"
    );
    assert!(local.executions("stable").await.is_empty());
    // A failed push, or a deletion, starts nothing.
    let mut failed = event;
    failed["id"] = json!("failed");
    failed["detail"]["result"] = json!("FAILURE");
    assert!(matches!(
        parse_aws_event(&failed).expect("parse"),
        AwsTriggerEvent::Ignored(_)
    ));
}

#[tokio::test]
async fn other_events_are_ignored() {
    let local = local();
    let event = json!({"version": "0", "id": "x", "source": "aws.codebuild", "detail-type": "CodeBuild Build State Change", "detail": {}});
    let report = handle_aws_event(&local.intake, &event)
        .await
        .expect("intake");
    assert!(report.started.is_empty());
    assert_eq!(report.problems.len(), 1);
}
