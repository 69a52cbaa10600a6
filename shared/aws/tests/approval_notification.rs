//! Approval notifications on AWS APIs (moto): a Manual approval with a `NotificationArn`
//! publishes CodePipeline's approval message to the topic (read back through an SQS
//! subscription), linking the approval page with the attempt's token; a topic that cannot be
//! published to fails the action with the reason instead of leaving it waiting unseen.

use std::collections::BTreeMap;
use std::sync::Arc;

use penstock_app::ports::{
    ActionProvider, JobContext, ProviderOutcome, ProviderRegistry, RandomIds,
};
use penstock_aws::providers::{AwsProviders, ProviderDeps};
use penstock_aws::sts::RoleAssumer;
use penstock_aws::testing::{sdk_config, unique_name};
use penstock_aws::{AwsClients, S3Artifacts};
use penstock_core::engine::{ActionJob, Timestamp};
use penstock_core::model::{ActionCategory, ActionOwner, ActionTypeId};
use penstock_local::adapters::ZipArchiver;
use serde_json::Value;

const APPROVAL_URL: &str = "https://approvals.example/approvals";

fn approval_type() -> ActionTypeId {
    ActionTypeId {
        category: ActionCategory::Approval,
        owner: ActionOwner::Aws,
        provider: "Manual".into(),
        version: "1".into(),
    }
}

fn provider(clients: &AwsClients) -> Arc<dyn ActionProvider> {
    AwsProviders::new(ProviderDeps {
        clients: clients.clone(),
        assumer: RoleAssumer::new(clients.sts.clone(), clients.sdk_config().clone()),
        archiver: Arc::new(ZipArchiver),
        artifacts: S3Artifacts::new(clients.s3.clone(), "unused-bucket", "alias/unused"),
        ids: Arc::new(RandomIds),
        external_id: None,
        default_codebuild_project: None,
        github_source: None,
        approval_url: Some(APPROVAL_URL.into()),
    })
    .provider_for(&approval_type())
    .expect("Manual approvals are provided on AWS")
}

fn context(configuration: &[(&str, &str)]) -> JobContext {
    JobContext {
        job: ActionJob {
            pipeline_name: "web-app".into(),
            pipeline_version: 1,
            execution_id: "exec-1".into(),
            stage: "Prod".into(),
            action: "Review".into(),
            attempt: 1,
            action_execution_id: "act-1".into(),
            action_type_id: approval_type(),
            configuration: configuration
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            input_artifacts: Vec::new(),
            output_artifacts: Vec::new(),
            role_arn: None,
            region: None,
            namespace: None,
            artifact_store: None,
            source_revision: None,
            deadline: Timestamp(1_800_000_000_000),
        },
        work_dir: std::env::temp_dir(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        cancel: tokio_util::sync::CancellationToken::new(),
    }
}

/// A topic with an SQS queue subscribed to it: (topic ARN, queue URL).
async fn topic_with_queue(config: &aws_config::SdkConfig) -> (String, String) {
    let sns = aws_sdk_sns::Client::new(config);
    let sqs = aws_sdk_sqs::Client::new(config);
    let topic = sns
        .create_topic()
        .name(unique_name("approvals"))
        .send()
        .await
        .expect("topic")
        .topic_arn()
        .expect("topic arn")
        .to_string();
    let queue_url = sqs
        .create_queue()
        .queue_name(unique_name("approvers"))
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("queue url")
        .to_string();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes")
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("queue arn")
        .clone();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(queue_arn)
        .send()
        .await
        .expect("subscribe");
    (topic, queue_url)
}

/// The SNS envelopes delivered to the queue so far.
async fn delivered(config: &aws_config::SdkConfig, queue_url: &str) -> Vec<Value> {
    let sqs = aws_sdk_sqs::Client::new(config);
    let output = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    output
        .messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().expect("body")).expect("SNS envelope"))
        .collect()
}

#[tokio::test]
async fn an_approval_with_a_topic_notifies_it_with_the_review_link_and_token() {
    let config = sdk_config().await;
    let clients = AwsClients::new(&config);
    let (topic, queue_url) = topic_with_queue(&config).await;
    let outcome = provider(&clients)
        .run(&context(&[
            ("NotificationArn", topic.as_str()),
            ("CustomData", "Check the canary dashboards"),
            ("ExternalEntityLink", "https://dashboards.example/canary"),
        ]))
        .await;
    let ProviderOutcome::Pending {
        approval_token: Some(token),
        external,
    } = outcome
    else {
        panic!("the approval waits with a token: {outcome:?}");
    };
    assert_eq!(
        external.summary.as_deref(),
        Some("Check the canary dashboards")
    );

    let envelopes = delivered(&config, &queue_url).await;
    assert_eq!(envelopes.len(), 1, "{envelopes:?}");
    assert_eq!(
        envelopes[0]["Subject"],
        "APPROVAL NEEDED: AWS CodePipeline web-app for action Review"
    );
    let message: Value =
        serde_json::from_str(envelopes[0]["Message"].as_str().expect("message")).expect("JSON");
    let approval = &message["approval"];
    assert_eq!(approval["pipelineName"], "web-app");
    assert_eq!(approval["stageName"], "Prod");
    assert_eq!(approval["actionName"], "Review");
    assert_eq!(approval["token"], token.as_str());
    assert_eq!(approval["expires"], "2027-01-15T08:00Z");
    assert_eq!(approval["customData"], "Check the canary dashboards");
    assert_eq!(
        approval["externalEntityLink"],
        "https://dashboards.example/canary"
    );
    assert_eq!(
        approval["approvalReviewLink"],
        format!("{APPROVAL_URL}/web-app/Prod/Review?token={token}")
    );
    assert_eq!(message["region"], config.region().expect("region").as_ref());
}

#[tokio::test]
async fn an_approval_without_a_topic_publishes_nothing_and_waits() {
    let config = sdk_config().await;
    let clients = AwsClients::new(&config);
    let (_topic, queue_url) = topic_with_queue(&config).await;
    let outcome = provider(&clients).run(&context(&[])).await;
    assert!(
        matches!(
            outcome,
            ProviderOutcome::Pending {
                approval_token: Some(_),
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(delivered(&config, &queue_url).await.is_empty());
}

#[tokio::test]
async fn a_topic_that_does_not_exist_fails_the_approval_naming_it() {
    let config = sdk_config().await;
    let clients = AwsClients::new(&config);
    let region = config.region().expect("region").to_string();
    let topic = format!(
        "arn:aws:sns:{region}:123456789012:{}",
        unique_name("missing")
    );
    let outcome = provider(&clients)
        .run(&context(&[("NotificationArn", topic.as_str())]))
        .await;
    let ProviderOutcome::Failed { code, message, .. } = outcome else {
        panic!("a notification that cannot be sent fails the approval: {outcome:?}");
    };
    assert_eq!(code, "PermissionError");
    assert!(message.contains(&topic), "{message}");
}
