//! Engine: an execution's way through its stages (SEMANTICS §1, §2, §8, §10, §11): dispatch,
//! runOrder groups, failures, artifacts, variables, stale and duplicated results, events.

mod engine_support;

use std::collections::BTreeMap;

use engine_support::*;
use penstock_core::engine::{
    ActionStatus, Effect, EngineError, ExecutionStatus, ExternalExecution, Input, Position,
    SourceRevision, StageStatus, Timestamp, action_execution_id,
};
use penstock_core::model::{ActionCategory, ExecutionMode};
use serde_json::json;

#[test]
fn happy_path_runs_three_stages_in_order_and_succeeds() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    let effects = h.start("e1");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Source", "Source")]);
    assert_eq!(
        event_lines(&effects),
        vec![
            "pipeline e1 STARTED",
            "stage e1 Source STARTED",
            "action e1 Source/Source STARTED"
        ]
    );

    let effects = h.succeed("e1", "Source", "Source");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Build", "Build")]);
    let build_job = jobs(&effects)[0];
    assert_eq!(build_job.input_artifacts[0].name, "SourceArtifact");
    assert_eq!(
        build_job.input_artifacts[0].location,
        "s3://artifact-bucket/e1/SourceArtifact/1"
    );

    let effects = h.succeed("e1", "Build", "Build");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Deploy", "Deploy")]);

    let effects = h.succeed("e1", "Deploy", "Deploy");
    assert!(dispatched(&effects).is_empty());
    assert_eq!(
        event_lines(&effects),
        vec![
            "action e1 Deploy/Deploy SUCCEEDED",
            "stage e1 Deploy SUCCEEDED",
            "pipeline e1 SUCCEEDED"
        ]
    );
    assert_eq!(h.status("e1"), ExecutionStatus::Succeeded);
    assert!(h.state.stage_locks.is_empty());
    assert_eq!(
        h.state
            .latest_stage_execution("Deploy")
            .map(|e| e.id.as_str()),
        Some("e1")
    );
}

#[test]
fn run_order_groups_run_in_ascending_order_with_gaps_and_parallel_members() {
    let declaration = pipeline(
        ExecutionMode::Superseded,
        vec![
            stage("Source", vec![source("Source", "Src")]),
            stage(
                "Test",
                vec![
                    build("Late").run_order(7),
                    build("A").run_order(2),
                    build("B").run_order(2),
                    build("First"),
                ],
            ),
        ],
    );
    let mut h = Harness::new(declaration);
    h.start("e1");
    let effects = h.succeed("e1", "Source", "Source");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Test", "First")]);
    let effects = h.succeed("e1", "Test", "First");
    assert_eq!(
        dispatched(&effects),
        vec![triple("e1", "Test", "A"), triple("e1", "Test", "B")]
    );
    let effects = h.succeed("e1", "Test", "A");
    assert!(
        dispatched(&effects).is_empty(),
        "the group is not finished until B is"
    );
    let effects = h.succeed("e1", "Test", "B");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Test", "Late")]);
    h.succeed("e1", "Test", "Late");
    assert_eq!(h.status("e1"), ExecutionStatus::Succeeded);
}

#[test]
fn a_failed_action_waits_for_running_siblings_then_fails_the_stage() {
    let declaration = pipeline(
        ExecutionMode::Superseded,
        vec![
            stage("Source", vec![source("Source", "Src")]),
            stage(
                "Test",
                vec![build("A"), build("B"), build("Later").run_order(2)],
            ),
            stage("Deploy", vec![build("Deploy")]),
        ],
    );
    let mut h = Harness::new(declaration);
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    let effects = h.fail("e1", "Test", "A");
    assert_eq!(event_lines(&effects), vec!["action e1 Test/A FAILED"]);
    assert_eq!(h.status("e1"), ExecutionStatus::InProgress);
    assert_eq!(
        h.execution("e1").stages[1].status,
        Some(StageStatus::InProgress)
    );
    assert_eq!(h.lock("Test"), Some("e1"));

    let effects = h.succeed("e1", "Test", "B");
    assert!(
        dispatched(&effects).is_empty(),
        "no later group starts after a failure"
    );
    assert_eq!(
        event_lines(&effects),
        vec![
            "action e1 Test/B SUCCEEDED",
            "stage e1 Test FAILED",
            "pipeline e1 FAILED"
        ]
    );
    assert_eq!(h.status("e1"), ExecutionStatus::Failed);
    assert_eq!(
        h.action_status("e1", "Test", "Later"),
        ActionStatus::NotStarted
    );
    assert_eq!(
        h.execution("e1").stages[2].status,
        None,
        "the next stage is never entered"
    );
    assert_eq!(h.lock("Test"), None, "a failure releases the lock");
    assert_eq!(h.execution("e1").status_summary.as_deref(), Some("A: boom"));
}

#[test]
fn a_failure_in_a_group_keeps_later_groups_from_starting() {
    let declaration = pipeline(
        ExecutionMode::Superseded,
        vec![
            stage("Source", vec![source("Source", "Src")]),
            stage("Test", vec![build("First"), build("Second").run_order(2)]),
        ],
    );
    let mut h = Harness::new(declaration);
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    let effects = h.fail("e1", "Test", "First");
    assert!(dispatched(&effects).is_empty());
    assert_eq!(h.status("e1"), ExecutionStatus::Failed);
    assert_eq!(
        h.action_status("e1", "Test", "Second"),
        ActionStatus::NotStarted
    );
}

#[test]
fn actions_finishing_together_advance_the_stage_exactly_once() {
    let declaration = pipeline(
        ExecutionMode::Superseded,
        vec![
            stage("Source", vec![source("S1", "A1"), source("S2", "A2")]),
            stage("Build", vec![build("Build").input("A1").input("A2")]),
        ],
    );
    let mut h = Harness::new(declaration);
    h.start("e1");
    let first = h.succeed("e1", "Source", "S1");
    let second = h.succeed("e1", "Source", "S2");
    assert!(dispatched(&first).is_empty());
    assert_eq!(dispatched(&second), vec![triple("e1", "Build", "Build")]);
    let stage_successes = event_lines(&second)
        .iter()
        .filter(|l| *l == "stage e1 Source SUCCEEDED")
        .count();
    assert_eq!(stage_successes, 1);
    // Both sources run on every execution and both artifacts reach the build.
    let names: Vec<_> = jobs(&second)[0]
        .input_artifacts
        .iter()
        .map(|a| a.name.clone())
        .collect();
    assert_eq!(names, vec!["A1", "A2"]);
}

#[test]
fn stale_attempts_unknown_executions_and_duplicates_are_ignored() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.start("e1");
    let before = h.state.clone();
    for input in [
        Input::ActionSucceeded {
            execution_id: "e1".into(),
            stage: "Source".into(),
            action: "Source".into(),
            attempt: 2,
            output_artifacts: vec![],
            output_variables: BTreeMap::new(),
            external: ExternalExecution::default(),
        },
        Input::ActionFailed {
            execution_id: "nope".into(),
            stage: "Source".into(),
            action: "Source".into(),
            attempt: 1,
            error: penstock_core::engine::ErrorDetails {
                code: "JobFailed".into(),
                message: "x".into(),
            },
            external: ExternalExecution::default(),
        },
        Input::ActionTimedOut {
            execution_id: "e1".into(),
            stage: "Build".into(),
            action: "Build".into(),
            attempt: 1,
        },
        Input::ActionStarted {
            execution_id: "e1".into(),
            stage: "Nope".into(),
            action: "Source".into(),
            attempt: 1,
            external: ExternalExecution::default(),
            approval_token: None,
        },
    ] {
        assert_eq!(h.apply(input), vec![]);
        assert_eq!(h.state, before);
    }
    // The harness applies every input twice: a duplicated success changes nothing more.
    h.succeed("e1", "Source", "Source");
    let after = h.state.clone();
    let again = Input::ActionSucceeded {
        execution_id: "e1".into(),
        stage: "Source".into(),
        action: "Source".into(),
        attempt: 1,
        output_artifacts: vec![],
        output_variables: BTreeMap::new(),
        external: ExternalExecution::default(),
    };
    assert_eq!(h.apply(again), vec![]);
    assert_eq!(h.state, after);
}

#[test]
fn a_duplicate_start_changes_nothing() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.start("e1");
    let before = h.state.clone();
    assert_eq!(h.start("e1"), vec![]);
    assert_eq!(h.state, before);
}

#[test]
fn results_of_finished_executions_are_ignored() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.start("e1");
    h.fail("e1", "Source", "Source");
    assert_eq!(h.status("e1"), ExecutionStatus::Failed);
    let before = h.state.clone();
    let effects = h.apply(Input::ActionSucceeded {
        execution_id: "e1".into(),
        stage: "Source".into(),
        action: "Source".into(),
        attempt: 1,
        output_artifacts: vec![],
        output_variables: BTreeMap::new(),
        external: ExternalExecution::default(),
    });
    assert!(effects.is_empty());
    assert_eq!(h.state, before);
}

#[test]
fn a_source_job_carries_its_pinned_revision_store_id_and_deadline() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    let mut request = start_request("e1");
    request.source_revisions = vec![SourceRevision {
        action_name: "Source".into(),
        revision_type: "COMMIT_ID".into(),
        revision_value: "abc123".into(),
    }];
    let effects = h.apply(Input::Start(request));
    let job = jobs(&effects)[0];
    assert_eq!(
        job.source_revision
            .as_ref()
            .map(|r| r.revision_value.as_str()),
        Some("abc123")
    );
    assert_eq!(
        job.deadline,
        Timestamp(h.now.0 + 60 * 60_000),
        "CodeCommit: the 1 hour default"
    );
    assert_eq!(
        job.artifact_store.as_ref().map(|s| s.location.as_str()),
        Some("artifact-bucket")
    );
    assert_eq!(job.attempt, 1);
    assert_eq!(
        job.action_execution_id,
        action_execution_id("e1", "Source", "Source", 1)
    );
    assert_eq!(job.output_artifacts, vec!["SourceArtifact"]);
    assert_eq!(
        h.state.unclaimed_jobs(),
        vec![job.clone()],
        "the sweeper can publish it again"
    );

    // Reported without a revision id, the source artifact takes the pinned revision.
    h.succeed("e1", "Source", "Source");
    assert_eq!(
        h.execution("e1").artifacts["SourceArtifact"]
            .revision_id
            .as_deref(),
        Some("abc123")
    );
}

#[test]
fn an_input_artifact_never_produced_fails_the_action() {
    let declaration = pipeline(
        ExecutionMode::Superseded,
        vec![
            stage("Source", vec![source("Source", "Src")]),
            stage("Build", vec![build("Build").input("Src")]),
        ],
    );
    let mut h = Harness::new(declaration);
    h.start("e1");
    // The source reports success without its artifact.
    h.succeed_with_variables("e1", "Source", "Source", &[]);
    assert_eq!(h.status("e1"), ExecutionStatus::Failed);
    let error = h
        .action_run("e1", "Build", "Build")
        .error
        .clone()
        .expect("an error");
    assert_eq!(error.code, "ConfigurationError");
    assert!(error.message.contains("Src"));
}

#[test]
fn a_source_start_revision_must_name_a_source_action() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    let mut request = start_request("e1");
    request.source_revisions = vec![SourceRevision {
        action_name: "Build".into(),
        revision_type: "COMMIT_ID".into(),
        revision_value: "abc123".into(),
    }];
    assert!(matches!(
        h.try_apply(Input::Start(request)),
        Err(EngineError::Validation(_))
    ));
}

#[test]
fn configuration_references_are_resolved_at_dispatch() {
    let declaration = with_variables(
        pipeline(
            ExecutionMode::Superseded,
            vec![
                stage(
                    "Source",
                    vec![source("Source", "Src").namespace("SourceVariables")],
                ),
                stage(
                    "Build",
                    vec![
                        build("Build")
                            .input("Src")
                            .region("eu-west-1")
                            .config("ProjectName", "app-#{variables.Env}")
                            .config("Commit", "#{SourceVariables.CommitId}")
                            .config("Run", "#{codepipeline.PipelineExecutionId}")
                            .config("Literal", "plain #{text"),
                    ],
                ),
            ],
        ),
        &[("Env", Some("dev"))],
    );
    let mut h = Harness::new(declaration);
    let mut request = start_request("e1");
    request.variables.insert("Env".into(), "prod".into());
    h.apply(Input::Start(request));
    let attempt = h.attempt_of("e1", "Source", "Source");
    let effects = h.apply(Input::ActionSucceeded {
        execution_id: "e1".into(),
        stage: "Source".into(),
        action: "Source".into(),
        attempt,
        output_artifacts: vec![penstock_core::engine::ArtifactRef {
            name: "Src".into(),
            location: "s3://artifact-bucket/e1/Src".into(),
            revision_id: None,
            revision_summary: None,
        }],
        output_variables: BTreeMap::from([("CommitId".to_string(), "abc123".to_string())]),
        external: ExternalExecution {
            id: Some("abc123".into()),
            ..Default::default()
        },
    });
    let job = jobs(&effects)[0];
    assert_eq!(
        job.configuration["ProjectName"], "app-prod",
        "the start request overrides the default"
    );
    assert_eq!(job.configuration["Commit"], "abc123");
    assert_eq!(job.configuration["Run"], "e1");
    assert_eq!(job.configuration["Literal"], "plain #{text");
    assert_eq!(job.region.as_deref(), Some("eu-west-1"));
    assert_eq!(
        job.deadline,
        Timestamp(h.now.0 + 8 * 60 * 60_000),
        "CodeBuild: 8 hours"
    );
    assert_eq!(
        h.execution("e1").artifacts["Src"].revision_id.as_deref(),
        Some("abc123"),
        "a source artifact carries its revision"
    );
    assert_eq!(
        h.execution("e1").namespaces["SourceVariables"]["CommitId"],
        "abc123"
    );
    assert_eq!(
        h.action_run("e1", "Build", "Build").resolved_configuration,
        job.configuration
    );
}

#[test]
fn an_unresolvable_reference_fails_the_action_at_dispatch() {
    let declaration = pipeline(
        ExecutionMode::Superseded,
        vec![
            stage("Source", vec![source("Source", "Src")]),
            stage(
                "Build",
                vec![build("Build").config("Image", "#{Build2.Tag}-#{variables.Missing}")],
            ),
        ],
    );
    let mut h = Harness::new(declaration);
    h.start("e1");
    let effects = h.succeed("e1", "Source", "Source");
    assert!(dispatched(&effects).is_empty());
    assert_eq!(
        event_lines(&effects),
        vec![
            "action e1 Source/Source SUCCEEDED",
            "stage e1 Source SUCCEEDED",
            "stage e1 Build STARTED",
            "action e1 Build/Build FAILED",
            "stage e1 Build FAILED",
            "pipeline e1 FAILED"
        ]
    );
    let error = h
        .action_run("e1", "Build", "Build")
        .error
        .clone()
        .expect("an error");
    assert_eq!(error.code, "VariablesUnresolved");
    assert!(
        error.message.contains("#{Build2.Tag}") && error.message.contains("#{variables.Missing}"),
        "{}",
        error.message
    );
}

#[test]
fn pipeline_variables_are_validated_at_start() {
    let declaration = with_variables(
        three_stages(ExecutionMode::Queued),
        &[("Env", Some("dev")), ("Region", None)],
    );
    let mut h = Harness::new(declaration);
    let mut undeclared = start_request("e1");
    undeclared.variables.insert("Region".into(), "eu".into());
    undeclared.variables.insert("Nope".into(), "x".into());
    assert!(
        matches!(h.try_apply(Input::Start(undeclared)), Err(EngineError::Validation(m)) if m.contains("Nope"))
    );
    assert!(
        matches!(h.try_apply(Input::Start(start_request("e1"))), Err(EngineError::Validation(m)) if m.contains("Region"))
    );
    assert!(h.state.executions.is_empty());

    let mut good = start_request("e1");
    good.variables.insert("Region".into(), "eu".into());
    h.apply(Input::Start(good));
    let variables = &h.execution("e1").variables;
    assert_eq!(variables["Env"], "dev");
    assert_eq!(variables["Region"], "eu");
}

#[test]
fn provider_default_timeouts_follow_the_limits_table() {
    use penstock_core::engine::default_timeout_minutes;
    let minutes = |category, provider: &str| {
        default_timeout_minutes(&action("a", category, provider).action_type_id)
    };
    assert_eq!(minutes(ActionCategory::Approval, "Manual"), 7 * 24 * 60);
    assert_eq!(
        minutes(ActionCategory::Deploy, "CloudFormation"),
        3 * 24 * 60
    );
    assert_eq!(
        minutes(ActionCategory::Deploy, "CodeDeployToECS"),
        5 * 24 * 60
    );
    assert_eq!(minutes(ActionCategory::Deploy, "S3"), 90);
    assert_eq!(minutes(ActionCategory::Build, "CodeBuild"), 8 * 60);
    assert_eq!(minutes(ActionCategory::Deploy, "ECS"), 60);
    assert_eq!(minutes(ActionCategory::Source, "S3"), 60);
}

#[test]
fn events_of_a_successful_run_have_codepipeline_shapes() {
    let declaration = pipeline(
        ExecutionMode::Superseded,
        vec![
            stage("Source", vec![source("Source", "SourceArtifact")]),
            stage(
                "Prod",
                vec![
                    action("myAction", ActionCategory::Deploy, "CodeDeploy")
                        .input("SourceArtifact")
                        .region("us-west-2"),
                ],
            ),
        ],
    );
    let mut h = Harness::new(declaration);
    let start = h.start("e1");
    let start_time = "2023-10-26T13:49:40.208Z";
    let pipeline_started = &published(&start)[0];
    assert_eq!(
        pipeline_started.kind.detail_type(),
        "CodePipeline Pipeline Execution State Change"
    );
    assert_eq!(
        pipeline_started.detail,
        json!({
            "pipeline": "myPipeline",
            "execution-id": "e1",
            "start-time": start_time,
            "execution-trigger": {
                "trigger-type": "StartPipelineExecution",
                "trigger-detail": "arn:aws:sts::123456789012:assumed-role/Admin/my-user"
            },
            "state": "STARTED",
            "version": 1.0,
            "pipeline-execution-attempt": 1.0
        })
    );
    // Member order as CodePipeline writes it.
    let keys: Vec<_> = pipeline_started
        .detail
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        [
            "pipeline",
            "execution-id",
            "start-time",
            "execution-trigger",
            "state",
            "version",
            "pipeline-execution-attempt"
        ]
    );
    assert_eq!(
        published(&start)[1].detail,
        json!({
            "pipeline": "myPipeline",
            "execution-id": "e1",
            "start-time": start_time,
            "stage": "Source",
            "state": "STARTED",
            "version": 1.0,
            "pipeline-execution-attempt": 1.0
        })
    );

    let attempt = h.attempt_of("e1", "Source", "Source");
    let effects = h.apply(Input::ActionSucceeded {
        execution_id: "e1".into(),
        stage: "Source".into(),
        action: "Source".into(),
        attempt,
        output_artifacts: vec![penstock_core::engine::ArtifactRef {
            name: "SourceArtifact".into(),
            location: "s3://codepipeline-bucket/myPipeline/SourceArti/KEY".into(),
            revision_id: Some("8cf40f".into()),
            revision_summary: None,
        }],
        output_variables: BTreeMap::new(),
        external: ExternalExecution {
            id: Some("8cf40f".into()),
            summary: Some("Added LICENSE.txt".into()),
            url: Some("https://example.com/commit/8cf40f".into()),
        },
    });
    let source_succeeded = &published(&effects)[0];
    assert_eq!(
        source_succeeded.kind.detail_type(),
        "CodePipeline Action Execution State Change"
    );
    assert_eq!(
        source_succeeded.detail,
        json!({
            "pipeline": "myPipeline",
            "execution-id": "e1",
            "start-time": start_time,
            "stage": "Source",
            "execution-result": {
                "external-execution-url": "https://example.com/commit/8cf40f",
                "external-execution-summary": "Added LICENSE.txt",
                "external-execution-id": "8cf40f"
            },
            "output-artifacts": [
                {"name": "SourceArtifact", "s3location": {"bucket": "codepipeline-bucket", "key": "myPipeline/SourceArti/KEY"}}
            ],
            "action-execution-id": action_execution_id("e1", "Source", "Source", 1),
            "action": "Source",
            "state": "SUCCEEDED",
            "type": {"owner": "AWS", "provider": "CodeCommit", "category": "Source", "version": "1"},
            "version": 1.0,
            "pipeline-execution-attempt": 1.0
        })
    );
    let deploy_started = published(&effects)
        .into_iter()
        .find(|c| c.detail["action"] == "myAction")
        .expect("the deploy action started");
    assert_eq!(
        deploy_started.detail,
        json!({
            "pipeline": "myPipeline",
            "execution-id": "e1",
            "start-time": start_time,
            "stage": "Prod",
            "action-execution-id": action_execution_id("e1", "Prod", "myAction", 1),
            "action": "myAction",
            "input-artifacts": [
                {"name": "SourceArtifact", "s3location": {"bucket": "codepipeline-bucket", "key": "myPipeline/SourceArti/KEY"}}
            ],
            "state": "STARTED",
            "region": "us-west-2",
            "type": {"owner": "AWS", "provider": "CodeDeploy", "category": "Deploy", "version": "1"},
            "version": 1.0,
            "pipeline-execution-attempt": 1.0
        })
    );
    let effects = h.apply(Input::ActionFailed {
        execution_id: "e1".into(),
        stage: "Prod".into(),
        action: "myAction".into(),
        attempt: 1,
        error: penstock_core::engine::ErrorDetails {
            code: "JobFailed".into(),
            message: "Deployment d-1 failed".into(),
        },
        external: ExternalExecution {
            id: Some("d-1".into()),
            summary: Some("Deployment d-1 failed".into()),
            url: None,
        },
    });
    assert_eq!(
        published(&effects)[0].detail["execution-result"],
        json!({"external-execution-summary": "Deployment d-1 failed", "external-execution-id": "d-1", "error-code": "JobFailed"})
    );
    assert_eq!(published(&effects)[2].detail["state"], "FAILED");
    assert!(effects.iter().all(|e| matches!(e, Effect::Publish(_))));
}

#[test]
fn state_survives_a_json_round_trip() {
    let mut h = Harness::new(three_stages(ExecutionMode::Queued));
    h.start("e1");
    h.start("e2");
    h.succeed("e1", "Source", "Source");
    let text = serde_json::to_string(&h.state).expect("serialises");
    let back: penstock_core::engine::PipelineState = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, h.state);
    assert_eq!(h.execution("e2").position, Position::InStage { stage: 0 });
}
