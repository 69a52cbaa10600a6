//! Engine: stop (SEMANTICS §5), retry (§6), Manual approvals and timeouts (§7).

mod engine_support;

use engine_support::*;
use penstock_core::engine::{
    ActionStatus, Effect, EngineError, ExecutionStatus, Input, Position, StageStatus, Timestamp,
};
use penstock_core::model::{
    ConditionResult, ExecutionMode, FailureConditions, PipelineDeclaration, RetryConfiguration,
    StageRetryMode,
};

fn cancels(effects: &[Effect]) -> Vec<(String, String, u32)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Cancel {
                execution_id,
                action,
                attempt,
                ..
            } => Some((execution_id.clone(), action.clone(), *attempt)),
            _ => None,
        })
        .collect()
}

/// Source, then a Test stage with A and B in parallel and C after them, then Deploy.
fn parallel_test_stage() -> PipelineDeclaration {
    pipeline(
        ExecutionMode::Superseded,
        vec![
            stage("Source", vec![source("Source", "Src")]),
            stage(
                "Test",
                vec![
                    build("A").output("OutA"),
                    build("B"),
                    build("C").run_order(2),
                ],
            ),
            stage("Deploy", vec![build("Deploy").input("OutA")]),
        ],
    )
}

fn approval_pipeline(timeout: Option<u32>) -> PipelineDeclaration {
    let mut gate = approval("Approval");
    gate.timeout_in_minutes = timeout;
    pipeline(
        ExecutionMode::Superseded,
        vec![
            stage("Source", vec![source("Source", "Src")]),
            stage("Approve", vec![gate]),
            stage("Deploy", vec![build("Deploy")]),
        ],
    )
}

fn in_build() -> Harness {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h
}

// ----- stop -------------------------------------------------------------------------------

#[test]
fn stop_and_wait_lets_running_actions_finish_then_stops_and_releases_the_lock() {
    let mut h = in_build();
    h.start("e2");
    h.succeed("e2", "Source", "Source");
    let effects = h.stop("e1", false).expect("stopping");
    assert_eq!(
        event_lines(&effects),
        vec!["pipeline e1 STOPPING", "stage e1 Build STOPPING"]
    );
    assert_eq!(
        published(&effects)[0].detail["stop-execution-comments"],
        "halt"
    );
    assert_eq!(h.status("e1"), ExecutionStatus::Stopping);
    assert_eq!(h.lock("Build"), Some("e1"));

    let effects = h.succeed("e1", "Build", "Build");
    assert_eq!(
        event_lines(&effects)[..3],
        [
            "action e1 Build/Build SUCCEEDED",
            "stage e1 Build STOPPED",
            "pipeline e1 STOPPED"
        ]
    );
    assert_eq!(
        dispatched(&effects),
        vec![triple("e2", "Build", "Build")],
        "no new stage for e1"
    );
    assert_eq!(h.lock("Build"), Some("e2"));
    // e2 is now the latest in every stage e1 reached: the engine dropped the stopped e1.
    assert!(!h.state.executions.contains_key("e1"));
    assert!(
        !event_lines(&h.log)
            .iter()
            .any(|l| l.starts_with("stage e1 Deploy"))
    );
}

#[test]
fn stop_and_wait_starts_no_later_group_and_a_failure_while_stopping_still_stops() {
    let mut h = Harness::new(parallel_test_stage());
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.stop("e1", false).expect("stopping");
    let effects = h.succeed("e1", "Test", "A");
    assert!(dispatched(&effects).is_empty());
    h.fail("e1", "Test", "B");
    assert_eq!(h.status("e1"), ExecutionStatus::Stopped);
    assert_eq!(h.action_status("e1", "Test", "C"), ActionStatus::NotStarted);
}

#[test]
fn stop_and_abandon_abandons_running_actions_and_stops_at_once() {
    let mut h = Harness::new(parallel_test_stage());
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.succeed("e1", "Test", "A");
    let effects = h.stop("e1", true).expect("stopped");
    assert_eq!(
        event_lines(&effects),
        vec![
            "pipeline e1 STOPPING",
            "stage e1 Test STOPPING",
            "action e1 Test/B ABANDONED",
            "stage e1 Test STOPPED",
            "pipeline e1 STOPPED"
        ]
    );
    assert_eq!(
        cancels(&effects),
        vec![("e1".to_string(), "B".to_string(), 1)]
    );
    assert_eq!(h.action_status("e1", "Test", "B"), ActionStatus::Abandoned);
    assert_eq!(h.status("e1"), ExecutionStatus::Stopped);
    assert_eq!(h.lock("Test"), None);
    // The abandoned work finishing later changes nothing.
    let before = h.state.clone();
    let late = Input::ActionSucceeded {
        execution_id: "e1".into(),
        stage: "Test".into(),
        action: "B".into(),
        attempt: 1,
        output_artifacts: vec![],
        output_variables: Default::default(),
        external: Default::default(),
    };
    assert_eq!(h.apply(late), vec![]);
    assert_eq!(h.state, before);
}

#[test]
fn abandon_escalates_a_stop_and_wait() {
    let mut h = in_build();
    h.stop("e1", false).expect("stopping");
    let effects = h.stop("e1", true).expect("escalated");
    assert_eq!(
        event_lines(&effects),
        vec![
            "action e1 Build/Build ABANDONED",
            "stage e1 Build STOPPED",
            "pipeline e1 STOPPED"
        ]
    );
    assert_eq!(h.status("e1"), ExecutionStatus::Stopped);
}

#[test]
fn a_second_stop_is_a_duplicate_and_a_finished_execution_is_not_stoppable() {
    let mut h = in_build();
    h.stop("e1", false).expect("stopping");
    assert!(matches!(
        h.stop("e1", false),
        Err(EngineError::DuplicatedStop(_))
    ));
    h.stop("e1", true).expect("escalated");
    assert!(matches!(
        h.stop("e1", true),
        Err(EngineError::NotStoppable(_))
    ));
    assert!(matches!(
        h.stop("e1", false),
        Err(EngineError::NotStoppable(_))
    ));
    assert!(matches!(
        h.stop("nope", false),
        Err(EngineError::PipelineExecutionNotFound(_))
    ));

    let mut h = in_build();
    h.succeed("e1", "Build", "Build");
    h.succeed("e1", "Deploy", "Deploy");
    assert!(matches!(
        h.stop("e1", false),
        Err(EngineError::NotStoppable(_))
    ));
}

#[test]
fn stop_and_wait_waits_for_a_pending_approval_and_abandon_abandons_it() {
    let mut h = Harness::new(approval_pipeline(None));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.open_approval("e1", "Approve", "Approval", "tok");
    h.stop("e1", false).expect("stopping");
    assert_eq!(h.status("e1"), ExecutionStatus::Stopping);
    let effects = h
        .decide("e1", "Approve", "Approval", "tok", true)
        .expect("decided");
    assert!(dispatched(&effects).is_empty());
    assert_eq!(h.status("e1"), ExecutionStatus::Stopped);

    let mut h = Harness::new(approval_pipeline(None));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.open_approval("e1", "Approve", "Approval", "tok");
    let effects = h.stop("e1", true).expect("stopped");
    assert_eq!(cancels(&effects).len(), 1);
    assert!(matches!(
        h.decide("e1", "Approve", "Approval", "tok", true),
        Err(EngineError::InvalidApprovalToken(_))
    ));
}

// ----- retry ------------------------------------------------------------------------------

#[test]
fn retry_failed_actions_reruns_only_failed_ones_and_keeps_succeeded_outputs() {
    let mut h = Harness::new(parallel_test_stage());
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.succeed("e1", "Test", "A");
    h.fail("e1", "Test", "B");
    assert_eq!(h.status("e1"), ExecutionStatus::Failed);
    let artifact_before = h.execution("e1").artifacts["OutA"].clone();

    let effects = h
        .retry("e1", "Test", StageRetryMode::FailedActions)
        .expect("retried");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Test", "B")]);
    assert_eq!(
        event_lines(&effects),
        vec![
            "pipeline e1 RESUMED",
            "stage e1 Test RESUMED",
            "action e1 Test/B STARTED"
        ]
    );
    let resumed = &published(&effects)[1].detail;
    assert_eq!(resumed["pipeline-execution-attempt"], 2.0);
    assert!(resumed["stage-last-retry-attempt-time"].is_string());
    assert_eq!(jobs(&effects)[0].attempt, 2);
    let execution = h.execution("e1");
    assert_eq!(
        (execution.status, execution.attempt),
        (ExecutionStatus::InProgress, 2)
    );
    assert_eq!(execution.position, Position::InStage { stage: 1 });
    assert_eq!(h.lock("Test"), Some("e1"));
    assert_eq!(h.action_status("e1", "Test", "A"), ActionStatus::Succeeded);
    assert_eq!(h.action_run("e1", "Test", "A").attempt, 1);
    assert_eq!(h.execution("e1").artifacts["OutA"], artifact_before);
    let b = h.action_run("e1", "Test", "B");
    assert_eq!(b.history.len(), 1);
    assert_eq!(b.history[0].status, ActionStatus::Failed);
    assert_ne!(
        b.action_execution_id.as_deref(),
        Some(b.history[0].action_execution_id.as_str())
    );
    let retry = &h.execution("e1").stages[1].retry;
    assert_eq!(retry.manual_stage_retry_attempt, 1);
    assert_eq!(
        retry.latest_retry_trigger.as_deref(),
        Some("ManualStageRetry")
    );

    let effects = h.succeed("e1", "Test", "B");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Test", "C")]);
    h.succeed("e1", "Test", "C");
    h.succeed("e1", "Deploy", "Deploy");
    assert_eq!(h.status("e1"), ExecutionStatus::Succeeded);
}

#[test]
fn retry_all_actions_reruns_the_stage_from_its_first_group() {
    let mut h = Harness::new(parallel_test_stage());
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.succeed("e1", "Test", "A");
    h.succeed("e1", "Test", "B");
    h.fail("e1", "Test", "C");
    let effects = h
        .retry("e1", "Test", StageRetryMode::AllActions)
        .expect("retried");
    assert_eq!(
        dispatched(&effects),
        vec![triple("e1", "Test", "A"), triple("e1", "Test", "B")]
    );
    assert_eq!(h.action_status("e1", "Test", "C"), ActionStatus::NotStarted);
    assert_eq!(h.attempt_of("e1", "Test", "A"), 2);
    h.succeed("e1", "Test", "A");
    let effects = h.succeed("e1", "Test", "B");
    assert_eq!(jobs(&effects)[0].attempt, 2, "C runs its second attempt");
}

#[test]
fn failed_actions_may_be_retried_before_the_stage_finishes_but_all_actions_may_not() {
    let mut h = Harness::new(parallel_test_stage());
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.fail("e1", "Test", "A");
    assert!(matches!(
        h.retry("e1", "Test", StageRetryMode::AllActions),
        Err(EngineError::StageNotRetryable(_))
    ));
    let effects = h
        .retry("e1", "Test", StageRetryMode::FailedActions)
        .expect("retried");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Test", "A")]);
    assert_eq!(h.action_status("e1", "Test", "B"), ActionStatus::InProgress);
    h.succeed("e1", "Test", "A");
    let effects = h.succeed("e1", "Test", "B");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Test", "C")]);
}

#[test]
fn only_the_latest_execution_of_a_failed_stage_can_be_retried() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.succeed("e1", "Build", "Build");
    h.fail("e1", "Deploy", "Deploy");
    h.start("e2");
    h.succeed("e2", "Source", "Source");
    assert!(matches!(
        h.retry("e1", "Build", StageRetryMode::FailedActions),
        Err(EngineError::NotLatestExecution(_))
    ));
    assert!(matches!(
        h.retry("e2", "Source", StageRetryMode::FailedActions),
        Err(EngineError::StageNotRetryable(_))
    ));
    assert!(matches!(
        h.retry("e1", "Nope", StageRetryMode::FailedActions),
        Err(EngineError::StageNotFound(_))
    ));
    let effects = h
        .retry("e1", "Deploy", StageRetryMode::FailedActions)
        .expect("retried");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Deploy", "Deploy")]);
    // A second identical retry finds nothing failed.
    assert!(matches!(
        h.retry("e1", "Deploy", StageRetryMode::FailedActions),
        Err(EngineError::StageNotRetryable(_))
    ));
}

#[test]
fn a_stopped_execution_is_retried_where_it_stopped() {
    let mut h = in_build();
    h.stop("e1", true).expect("stopped");
    let effects = h
        .retry("e1", "Build", StageRetryMode::FailedActions)
        .expect("retried");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Build", "Build")]);
    assert_eq!(h.lock("Build"), Some("e1"));
    assert_eq!(h.execution("e1").stop, None);
    h.succeed("e1", "Build", "Build");
    h.succeed("e1", "Deploy", "Deploy");
    assert_eq!(h.status("e1"), ExecutionStatus::Succeeded);
}

#[test]
fn a_stage_stopped_after_all_its_actions_succeeded_resumes_into_the_next_stage() {
    let mut h = in_build();
    h.stop("e1", false).expect("stopping");
    h.succeed("e1", "Build", "Build");
    assert_eq!(h.status("e1"), ExecutionStatus::Stopped);
    assert_eq!(
        h.execution("e1").stages[1].status,
        Some(StageStatus::Stopped)
    );
    assert_eq!(h.execution("e1").stages[2].status, None);
    let effects = h
        .retry("e1", "Build", StageRetryMode::FailedActions)
        .expect("retried");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Deploy", "Deploy")]);
}

#[test]
fn a_retry_after_the_pipeline_changed_is_refused() {
    let mut h = in_build();
    h.fail("e1", "Build", "Build");
    let mut next = three_stages(ExecutionMode::Superseded);
    next.version = Some(2);
    h.apply(Input::PipelineUpdated { declaration: next });
    assert!(matches!(
        h.retry("e1", "Build", StageRetryMode::FailedActions),
        Err(EngineError::StageNotRetryable(_))
    ));
}

fn auto_retry(mode: Option<StageRetryMode>) -> PipelineDeclaration {
    let mut declaration = parallel_test_stage();
    declaration.stages[1].on_failure = Some(FailureConditions {
        result: Some(ConditionResult::Retry),
        retry_configuration: mode.map(|m| RetryConfiguration {
            retry_mode: Some(m),
        }),
        conditions: None,
    });
    declaration
}

#[test]
fn on_failure_retry_retries_the_stage_automatically_exactly_once() {
    let mut h = Harness::new(auto_retry(None));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.succeed("e1", "Test", "A");
    let effects = h.fail("e1", "Test", "B");
    assert_eq!(
        event_lines(&effects),
        vec![
            "action e1 Test/B FAILED",
            "stage e1 Test FAILED",
            "stage e1 Test RESUMED",
            "action e1 Test/B STARTED"
        ]
    );
    assert_eq!(
        dispatched(&effects),
        vec![triple("e1", "Test", "B")],
        "FAILED_ACTIONS by default"
    );
    assert_eq!(h.status("e1"), ExecutionStatus::InProgress);
    assert_eq!(
        h.execution("e1").stages[1].retry.auto_stage_retry_attempt,
        1
    );

    let effects = h.fail("e1", "Test", "B");
    assert!(dispatched(&effects).is_empty());
    assert_eq!(h.status("e1"), ExecutionStatus::Failed);

    // A manual retry that fails again gets its own automatic attempt.
    h.retry("e1", "Test", StageRetryMode::FailedActions)
        .expect("retried");
    let effects = h.fail("e1", "Test", "B");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Test", "B")]);
    assert_eq!(h.attempt_of("e1", "Test", "B"), 4);
}

#[test]
fn on_failure_retry_uses_the_configured_mode() {
    let mut h = Harness::new(auto_retry(Some(StageRetryMode::AllActions)));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.succeed("e1", "Test", "A");
    let effects = h.fail("e1", "Test", "B");
    assert_eq!(
        dispatched(&effects),
        vec![triple("e1", "Test", "A"), triple("e1", "Test", "B")]
    );
}

// ----- approvals and timeouts ---------------------------------------------------------------

fn awaiting_approval(timeout: Option<u32>) -> Harness {
    let mut h = Harness::new(approval_pipeline(timeout));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.open_approval("e1", "Approve", "Approval", "token-1");
    h
}

#[test]
fn an_approved_approval_succeeds_and_the_execution_moves_on() {
    let mut h = awaiting_approval(None);
    assert_eq!(
        h.action_run("e1", "Approve", "Approval").token.as_deref(),
        Some("token-1")
    );
    let effects = h
        .decide("e1", "Approve", "Approval", "token-1", true)
        .expect("approved");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Deploy", "Deploy")]);
    let run = h.action_run("e1", "Approve", "Approval");
    assert_eq!(run.status, ActionStatus::Succeeded);
    assert_eq!(run.external.summary.as_deref(), Some("looks good"));
    assert!(run.last_updated_by.is_some());
    assert!(matches!(
        h.decide("e1", "Approve", "Approval", "token-1", false),
        Err(EngineError::ApprovalAlreadyCompleted(_))
    ));
}

#[test]
fn a_rejected_approval_fails_the_stage_and_the_execution() {
    let mut h = awaiting_approval(None);
    let effects = h
        .decide("e1", "Approve", "Approval", "token-1", false)
        .expect("rejected");
    assert_eq!(
        event_lines(&effects),
        vec![
            "action e1 Approve/Approval FAILED",
            "stage e1 Approve FAILED",
            "pipeline e1 FAILED"
        ]
    );
    assert_eq!(
        published(&effects)[0].detail["execution-result"]["error-code"],
        "ApprovalRejected"
    );
    assert_eq!(h.status("e1"), ExecutionStatus::Failed);
    assert!(matches!(
        h.decide("e1", "Approve", "Approval", "token-1", true),
        Err(EngineError::ApprovalAlreadyCompleted(_))
    ));
}

#[test]
fn a_wrong_or_missing_token_is_refused() {
    let mut h = Harness::new(approval_pipeline(None));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    assert!(
        matches!(
            h.decide("e1", "Approve", "Approval", "token-1", true),
            Err(EngineError::InvalidApprovalToken(_))
        ),
        "no token is open before the dispatcher reports the request sent"
    );
    h.open_approval("e1", "Approve", "Approval", "token-1");
    assert!(matches!(
        h.decide("e1", "Approve", "Approval", "token-2", true),
        Err(EngineError::InvalidApprovalToken(_))
    ));
    assert!(matches!(
        h.decide("e1", "Approve", "Nope", "token-1", true),
        Err(EngineError::ActionNotFound(_))
    ));
    assert!(matches!(
        h.decide("e1", "Nope", "Approval", "token-1", true),
        Err(EngineError::StageNotFound(_))
    ));
    assert!(matches!(
        h.decide("e9", "Approve", "Approval", "token-1", true),
        Err(EngineError::PipelineExecutionNotFound(_))
    ));
    // Bus results cannot approve: only the token can.
    let attempt = h.attempt_of("e1", "Approve", "Approval");
    let forged = Input::ActionSucceeded {
        execution_id: "e1".into(),
        stage: "Approve".into(),
        action: "Approval".into(),
        attempt,
        output_artifacts: vec![],
        output_variables: Default::default(),
        external: Default::default(),
    };
    assert_eq!(h.apply(forged), vec![]);
    assert_eq!(
        h.action_status("e1", "Approve", "Approval"),
        ActionStatus::InProgress
    );
}

#[test]
fn an_approval_times_out_after_its_timeout_and_its_token_expires() {
    let mut h = awaiting_approval(Some(30));
    let run = h.action_run("e1", "Approve", "Approval");
    let deadline = run.deadline.expect("a deadline");
    assert_eq!(
        deadline,
        Timestamp(run.started_at.expect("started").0 + 30 * 60_000)
    );
    let timed_out = Input::ActionTimedOut {
        execution_id: "e1".into(),
        stage: "Approve".into(),
        action: "Approval".into(),
        attempt: 1,
    };
    // Too early: ignored.
    assert_eq!(h.apply(timed_out.clone()), vec![]);
    h.now = deadline;
    let effects = h.apply(timed_out);
    assert_eq!(
        published(&effects)[0].detail["execution-result"]["error-code"],
        "TimedOut"
    );
    assert_eq!(
        cancels(&effects),
        vec![("e1".to_string(), "Approval".to_string(), 1)]
    );
    assert_eq!(h.status("e1"), ExecutionStatus::Failed);
    assert!(matches!(
        h.decide("e1", "Approve", "Approval", "token-1", true),
        Err(EngineError::InvalidApprovalToken(_))
    ));
}

#[test]
fn an_action_past_its_deadline_fails_with_timed_out() {
    let mut h = in_build();
    let deadline = h
        .action_run("e1", "Build", "Build")
        .deadline
        .expect("a deadline");
    assert_eq!(h.state.overdue_attempts(deadline).len(), 1);
    h.now = deadline;
    h.apply(Input::ActionTimedOut {
        execution_id: "e1".into(),
        stage: "Build".into(),
        action: "Build".into(),
        attempt: 1,
    });
    let run = h.action_run("e1", "Build", "Build");
    assert_eq!(run.status, ActionStatus::Failed);
    assert_eq!(
        run.error.as_ref().map(|e| e.code.as_str()),
        Some("TimedOut")
    );
    assert_eq!(h.status("e1"), ExecutionStatus::Failed);
}
