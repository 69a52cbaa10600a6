//! The official Rust SDK (`aws-sdk-codepipeline`) against the router served on a loopback port:
//! the strict check that every response parses into the SDK's types, enum values included,
//! that errors map to the SDK's modelled exceptions, and that SigV4 and clock-skew correction
//! work as they do against AWS.

mod support;

use aws_sdk_codepipeline::Client;
use aws_sdk_codepipeline::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_codepipeline::error::ProvideErrorMetadata;
use aws_sdk_codepipeline::types::{
    ActionCategory, ActionDeclaration, ActionExecutionFilter, ActionExecutionStatus, ActionOwner,
    ActionTypeId, ApprovalResult, ApprovalStatus, ArtifactStore, ArtifactStoreType, ExecutionMode,
    ExecutionType, InputArtifact, OutputArtifact, PipelineDeclaration, PipelineExecutionStatus,
    PipelineType, StageDeclaration, StageExecutionStatus, StageRetryMode, StageTransitionType, Tag,
    TriggerType,
};
use support::{ACCOUNT, Harness, KEY_ID, REGION, SECRET, Script};

/// Serve the harness's router on a free loopback port; a client for it signed with `secret`.
async fn serve(harness: &Harness, secret: &str) -> anyhow::Result<Client> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let router = harness.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let config = aws_sdk_codepipeline::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(format!("http://{address}"))
        .credentials_provider(Credentials::new(KEY_ID, secret, None, None, "test"))
        .build();
    Ok(Client::from_conf(config))
}

fn action(
    name: &str,
    category: ActionCategory,
    provider: &str,
) -> anyhow::Result<aws_sdk_codepipeline::types::builders::ActionDeclarationBuilder> {
    Ok(ActionDeclaration::builder().name(name).action_type_id(
        ActionTypeId::builder()
            .category(category)
            .owner(ActionOwner::Aws)
            .provider(provider)
            .version("1")
            .build()?,
    ))
}

/// The harness's pipeline, built with the SDK's types.
fn declaration(name: &str) -> anyhow::Result<PipelineDeclaration> {
    let source = action("Checkout", ActionCategory::Source, "S3")?
        .configuration("S3Bucket", "sources")
        .configuration("S3ObjectKey", "app.zip")
        .configuration("PollForSourceChanges", "false")
        .output_artifacts(OutputArtifact::builder().name("App").build()?)
        .build()?;
    let build = action("Compile", ActionCategory::Build, "CodeBuild")?
        .configuration("ProjectName", "web")
        .input_artifacts(InputArtifact::builder().name("App").build()?)
        .output_artifacts(OutputArtifact::builder().name("Bin").build()?)
        .build()?;
    let approve = action("Approve", ActionCategory::Approval, "Manual")?
        .run_order(1)
        .build()?;
    let ship = action("Ship", ActionCategory::Deploy, "S3")?
        .configuration("BucketName", "site")
        .configuration("Extract", "true")
        .input_artifacts(InputArtifact::builder().name("Bin").build()?)
        .run_order(2)
        .build()?;
    Ok(PipelineDeclaration::builder()
        .name(name)
        .role_arn("arn:aws:iam::123456789012:role/pipeline")
        .artifact_store(
            ArtifactStore::builder()
                .r#type(ArtifactStoreType::S3)
                .location("artifacts-bucket")
                .build()?,
        )
        .stages(
            StageDeclaration::builder()
                .name("Source")
                .actions(source)
                .build()?,
        )
        .stages(
            StageDeclaration::builder()
                .name("Build")
                .actions(build)
                .build()?,
        )
        .stages(
            StageDeclaration::builder()
                .name("Deploy")
                .actions(approve)
                .actions(ship)
                .build()?,
        )
        .build()?)
}

#[tokio::test]
async fn pipelines_round_trip_through_the_sdk_types() -> anyhow::Result<()> {
    let h = Harness::new();
    let client = serve(&h, SECRET).await?;
    let created = client
        .create_pipeline()
        .pipeline(declaration("web")?)
        .tags(Tag::builder().key("team").value("blue").build()?)
        .send()
        .await?;
    assert_eq!(created.pipeline().and_then(|p| p.version()), Some(1));
    assert_eq!(created.tags().len(), 1);

    let got = client.get_pipeline().name("web").send().await?;
    let pipeline = got.pipeline().expect("pipeline");
    assert_eq!(pipeline.stages().len(), 3);
    assert_eq!(
        pipeline.stages()[0].actions()[0]
            .action_type_id()
            .map(|t| t.category()),
        Some(&ActionCategory::Source)
    );
    let metadata = got.metadata().expect("metadata");
    assert_eq!(
        metadata.pipeline_arn(),
        Some(format!("arn:aws:codepipeline:{REGION}:{ACCOUNT}:web").as_str())
    );
    assert!(metadata.created().is_some_and(|t| t.secs() > 1_600_000_000));

    let mut changed = declaration("web")?;
    changed.stages[1].actions[0].configuration =
        Some([("ProjectName".to_string(), "web-v2".to_string())].into());
    let updated = client.update_pipeline().pipeline(changed).send().await?;
    assert_eq!(updated.pipeline().and_then(|p| p.version()), Some(2));

    let listed = client.list_pipelines().send().await?;
    let summary = &listed.pipelines()[0];
    assert_eq!(summary.name(), Some("web"));
    assert_eq!(summary.version(), Some(2));
    assert_eq!(summary.pipeline_type(), Some(&PipelineType::V1));
    assert_eq!(summary.execution_mode(), Some(&ExecutionMode::Superseded));
    assert!(summary.updated().is_some());

    let arn = metadata.pipeline_arn().unwrap_or_default().to_string();
    client
        .tag_resource()
        .resource_arn(&arn)
        .tags(Tag::builder().key("tier").value("web").build()?)
        .send()
        .await?;
    client
        .untag_resource()
        .resource_arn(&arn)
        .tag_keys("team")
        .send()
        .await?;
    let tags = client
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await?;
    let keys: Vec<&str> = tags.tags().iter().map(|t| t.key()).collect();
    assert_eq!(keys, ["tier"]);

    client.delete_pipeline().name("web").send().await?;
    let missing = client
        .get_pipeline()
        .name("web")
        .send()
        .await
        .expect_err("deleted");
    assert!(
        missing
            .into_service_error()
            .is_pipeline_not_found_exception()
    );
    Ok(())
}

#[tokio::test]
async fn an_execution_is_followed_approved_and_listed_through_the_sdk() -> anyhow::Result<()> {
    let h = Harness::new();
    let client = serve(&h, SECRET).await?;
    client
        .create_pipeline()
        .pipeline(declaration("web")?)
        .send()
        .await?;
    let started = client.start_pipeline_execution().name("web").send().await?;
    let id = started.pipeline_execution_id().expect("id").to_string();
    h.drive().await;

    let state = client.get_pipeline_state().name("web").send().await?;
    assert_eq!(state.pipeline_version(), Some(1));
    assert!(state.created().is_some() && state.updated().is_some());
    let deploy = &state.stage_states()[2];
    assert_eq!(deploy.stage_name(), Some("Deploy"));
    assert_eq!(
        deploy.inbound_transition_state().map(|t| t.enabled()),
        Some(true)
    );
    let latest = deploy.latest_execution().expect("latest");
    assert_eq!(latest.pipeline_execution_id(), id);
    assert_eq!(latest.status(), &StageExecutionStatus::InProgress);
    let approve = deploy.action_states()[0]
        .latest_execution()
        .expect("approval running");
    assert_eq!(approve.status(), Some(&ActionExecutionStatus::InProgress));
    let token = approve.token().expect("token").to_string();
    let build = &state.stage_states()[1].action_states()[0];
    let compile = build.latest_execution().expect("compile ran");
    assert_eq!(compile.status(), Some(&ActionExecutionStatus::Succeeded));
    assert!(compile.last_status_change().is_some());
    assert_eq!(compile.summary(), Some("Compile ran"));

    let execution = client
        .get_pipeline_execution()
        .pipeline_name("web")
        .pipeline_execution_id(&id)
        .send()
        .await?;
    let e = execution.pipeline_execution().expect("execution");
    assert_eq!(e.status(), Some(&PipelineExecutionStatus::InProgress));
    assert_eq!(e.execution_mode(), Some(&ExecutionMode::Superseded));
    assert_eq!(e.execution_type(), Some(&ExecutionType::Standard));
    assert_eq!(
        e.trigger().and_then(|t| t.trigger_type()),
        Some(&TriggerType::StartPipelineExecution)
    );
    assert_eq!(e.artifact_revisions()[0].revision_id(), Some("rev-0001"));

    let details = client
        .list_action_executions()
        .pipeline_name("web")
        .filter(
            ActionExecutionFilter::builder()
                .pipeline_execution_id(&id)
                .build(),
        )
        .send()
        .await?;
    let compile = details
        .action_execution_details()
        .iter()
        .find(|d| d.action_name() == Some("Compile"))
        .expect("compile detail");
    assert_eq!(compile.status(), Some(&ActionExecutionStatus::Succeeded));
    let input = compile.input().expect("input");
    assert_eq!(
        input.action_type_id().map(|t| t.category()),
        Some(&ActionCategory::Build)
    );
    assert_eq!(
        input.input_artifacts()[0]
            .s3_location()
            .and_then(|l| l.bucket()),
        Some("artifacts-bucket")
    );
    let output = compile.output().expect("output");
    assert_eq!(output.output_artifacts()[0].name(), Some("Bin"));
    assert_eq!(
        output
            .output_variables()
            .and_then(|v| v.get("Done"))
            .map(String::as_str),
        Some("yes")
    );

    let wrong = client
        .put_approval_result()
        .pipeline_name("web")
        .stage_name("Deploy")
        .action_name("Approve")
        .token("00000000-0000-0000-0000-000000000000")
        .result(
            ApprovalResult::builder()
                .status(ApprovalStatus::Approved)
                .summary("no")
                .build()?,
        )
        .send()
        .await
        .expect_err("wrong token");
    assert!(
        wrong
            .into_service_error()
            .is_invalid_approval_token_exception()
    );

    let approved = client
        .put_approval_result()
        .pipeline_name("web")
        .stage_name("Deploy")
        .action_name("Approve")
        .token(&token)
        .result(
            ApprovalResult::builder()
                .status(ApprovalStatus::Approved)
                .summary("ship it")
                .build()?,
        )
        .send()
        .await?;
    assert!(approved.approved_at().is_some());
    h.drive().await;

    let executions = client
        .list_pipeline_executions()
        .pipeline_name("web")
        .send()
        .await?;
    let summary = &executions.pipeline_execution_summaries()[0];
    assert_eq!(summary.pipeline_execution_id(), Some(id.as_str()));
    assert_eq!(summary.status(), Some(&PipelineExecutionStatus::Succeeded));
    assert!(summary.start_time().is_some() && summary.last_update_time().is_some());
    assert_eq!(summary.source_revisions()[0].action_name(), "Checkout");
    Ok(())
}

#[tokio::test]
async fn transitions_stops_and_retries_through_the_sdk() -> anyhow::Result<()> {
    let h = Harness::new();
    let client = serve(&h, SECRET).await?;
    client
        .create_pipeline()
        .pipeline(declaration("web")?)
        .send()
        .await?;

    client
        .disable_stage_transition()
        .pipeline_name("web")
        .stage_name("Build")
        .transition_type(StageTransitionType::Inbound)
        .reason("freeze")
        .send()
        .await?;
    let held = client.start_pipeline_execution().name("web").send().await?;
    let held = held.pipeline_execution_id().expect("id").to_string();
    h.drive().await;
    let state = client.get_pipeline_state().name("web").send().await?;
    let build = &state.stage_states()[1];
    let transition = build.inbound_transition_state().expect("transition");
    assert!(!transition.enabled());
    assert_eq!(transition.disabled_reason(), Some("freeze"));
    assert_eq!(
        build.inbound_execution().map(|e| e.pipeline_execution_id()),
        Some(held.as_str())
    );

    let stopped = client
        .stop_pipeline_execution()
        .pipeline_name("web")
        .pipeline_execution_id(&held)
        .abandon(true)
        .reason("not this one")
        .send()
        .await?;
    assert_eq!(stopped.pipeline_execution_id(), Some(held.as_str()));
    let again = client
        .stop_pipeline_execution()
        .pipeline_name("web")
        .pipeline_execution_id(&held)
        .send()
        .await
        .expect_err("already stopped");
    let again = again.into_service_error();
    assert!(
        again.is_pipeline_execution_not_stoppable_exception()
            || again.is_duplicated_stop_request_exception(),
        "{again:?}"
    );

    client
        .enable_stage_transition()
        .pipeline_name("web")
        .stage_name("Build")
        .transition_type(StageTransitionType::Inbound)
        .send()
        .await?;
    h.script("Compile", Script::Fail);
    let failing = client.start_pipeline_execution().name("web").send().await?;
    let failing = failing.pipeline_execution_id().expect("id").to_string();
    h.drive().await;
    let execution = client
        .get_pipeline_execution()
        .pipeline_name("web")
        .pipeline_execution_id(&failing)
        .send()
        .await?;
    assert_eq!(
        execution.pipeline_execution().and_then(|e| e.status()),
        Some(&PipelineExecutionStatus::Failed)
    );
    let state = client.get_pipeline_state().name("web").send().await?;
    let compile = state.stage_states()[1].action_states()[0]
        .latest_execution()
        .expect("compile");
    assert_eq!(compile.status(), Some(&ActionExecutionStatus::Failed));
    assert_eq!(
        compile.error_details().and_then(|d| d.code()),
        Some("JobFailed")
    );

    let not_retryable = client
        .retry_stage_execution()
        .pipeline_name("web")
        .stage_name("Source")
        .pipeline_execution_id(&failing)
        .retry_mode(StageRetryMode::FailedActions)
        .send()
        .await
        .expect_err("source succeeded");
    assert!(
        not_retryable
            .into_service_error()
            .is_stage_not_retryable_exception()
    );

    h.script("Compile", Script::Succeed);
    let retried = client
        .retry_stage_execution()
        .pipeline_name("web")
        .stage_name("Build")
        .pipeline_execution_id(&failing)
        .retry_mode(StageRetryMode::FailedActions)
        .send()
        .await?;
    assert_eq!(retried.pipeline_execution_id(), Some(failing.as_str()));
    h.drive().await;
    let state = client.get_pipeline_state().name("web").send().await?;
    let build = &state.stage_states()[1];
    assert_eq!(
        build.latest_execution().map(|e| e.status()),
        Some(&StageExecutionStatus::Succeeded)
    );
    assert_eq!(
        build
            .retry_stage_metadata()
            .and_then(|m| m.manual_stage_retry_attempt()),
        Some(1)
    );
    Ok(())
}

#[tokio::test]
async fn a_wrong_secret_is_reported_as_an_invalid_signature() -> anyhow::Result<()> {
    let h = Harness::new();
    let client = serve(&h, "not-the-secret").await?;
    let error = client
        .list_pipelines()
        .send()
        .await
        .expect_err("wrong secret");
    assert_eq!(error.code(), Some("InvalidSignatureException"));
    Ok(())
}

#[tokio::test]
async fn the_sdk_corrects_its_clock_from_the_servers_date() -> anyhow::Result<()> {
    // The server's clock is 30 minutes ahead: the first attempt is refused as expired, the
    // SDK measures the skew from the response's Date header and signs the retry right.
    let h = Harness::with_server_clock_ahead(30);
    let client = serve(&h, SECRET).await?;
    let listed = client.list_pipelines().send().await?;
    assert!(listed.pipelines().is_empty());
    Ok(())
}
