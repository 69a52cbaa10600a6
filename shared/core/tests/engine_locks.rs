//! Engine: stage locks and the three execution modes (SEMANTICS §3), inbound transitions (§4)
//! and pipeline updates (rule 38).

mod engine_support;

use engine_support::*;
use penstock_core::engine::{
    ActionStatus, EngineError, ExecutionStatus, Input, MAX_LIVE_EXECUTIONS, Position,
};
use penstock_core::model::{ExecutionMode, StageRetryMode};

fn with_approval(mode: ExecutionMode) -> penstock_core::model::PipelineDeclaration {
    pipeline(
        mode,
        vec![
            stage("Source", vec![source("Source", "Src")]),
            stage("Approve", vec![approval("Approval")]),
            stage("Deploy", vec![build("Deploy").input("Src")]),
        ],
    )
}

#[test]
fn superseded_a_newer_arrival_replaces_the_one_waiting_between_stages() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    assert_eq!(h.lock("Build"), Some("e1"));

    h.start("e2");
    h.succeed("e2", "Source", "Source");
    assert_eq!(h.inbound("Build"), vec!["e2"]);
    assert_eq!(h.lock("Source"), None, "e2 left Source: the stage is free");

    h.start("e3");
    let effects = h.succeed("e3", "Source", "Source");
    assert!(event_lines(&effects).contains(&"pipeline e2 SUPERSEDED".to_string()));
    assert!(
        !h.state.executions.contains_key("e2"),
        "a superseded execution is pruned"
    );
    assert_eq!(h.inbound("Build"), vec!["e3"]);
    assert_eq!(
        h.status("e1"),
        ExecutionStatus::InProgress,
        "never superseded inside a stage"
    );

    let effects = h.succeed("e1", "Build", "Build");
    assert_eq!(
        dispatched(&effects),
        vec![
            triple("e1", "Deploy", "Deploy"),
            triple("e3", "Build", "Build")
        ]
    );
    assert_eq!(h.lock("Build"), Some("e3"));
    assert_eq!(h.lock("Deploy"), Some("e1"));
}

#[test]
fn superseded_the_first_stage_has_a_waiting_slot_like_any_other() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.start("e1");
    h.start("e2");
    assert_eq!(h.execution("e2").position, Position::Waiting { stage: 0 });
    assert_eq!(h.inbound("Source"), vec!["e2"]);
    let effects = h.start("e3");
    assert_eq!(
        event_lines(&effects),
        vec!["pipeline e3 STARTED", "pipeline e2 SUPERSEDED"]
    );
    let effects = h.succeed("e1", "Source", "Source");
    assert_eq!(
        dispatched(&effects),
        vec![
            triple("e1", "Build", "Build"),
            triple("e3", "Source", "Source")
        ]
    );
}

#[test]
fn a_pending_approval_is_never_superseded_and_newer_executions_wait_behind_it() {
    let mut h = Harness::new(with_approval(ExecutionMode::Superseded));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.open_approval("e1", "Approve", "Approval", "tok-1");
    for id in ["e2", "e3"] {
        h.start(id);
        h.succeed(id, "Source", "Source");
    }
    assert_eq!(h.status("e1"), ExecutionStatus::InProgress);
    assert_eq!(h.lock("Approve"), Some("e1"));
    assert_eq!(h.inbound("Approve"), vec!["e3"]);
    let effects = h
        .decide("e1", "Approve", "Approval", "tok-1", true)
        .expect("approved");
    assert_eq!(
        dispatched(&effects),
        vec![
            triple("e1", "Deploy", "Deploy"),
            triple("e3", "Approve", "Approval")
        ],
        "e3 enters the approval stage and its approval request goes out"
    );
    assert_eq!(h.lock("Approve"), Some("e3"));
    assert_eq!(
        h.action_status("e3", "Approve", "Approval"),
        ActionStatus::InProgress
    );
}

#[test]
fn queued_executions_enter_each_stage_in_arrival_order() {
    let mut h = Harness::new(three_stages(ExecutionMode::Queued));
    h.start("e1");
    h.start("e2");
    h.start("e3");
    assert_eq!(h.inbound("Source"), vec!["e2", "e3"]);
    h.succeed("e1", "Source", "Source");
    assert_eq!(h.lock("Source"), Some("e2"));
    h.succeed("e2", "Source", "Source");
    assert_eq!(h.lock("Source"), Some("e3"));
    assert_eq!(h.inbound("Build"), vec!["e2"]);
    h.succeed("e3", "Source", "Source");
    assert_eq!(
        h.inbound("Build"),
        vec!["e2", "e3"],
        "no execution overtakes another"
    );
    let effects = h.succeed("e1", "Build", "Build");
    assert_eq!(
        dispatched(&effects),
        vec![
            triple("e1", "Deploy", "Deploy"),
            triple("e2", "Build", "Build")
        ]
    );
    h.succeed("e2", "Build", "Build");
    assert_eq!(h.lock("Build"), Some("e3"));
    assert_eq!(h.inbound("Deploy"), vec!["e2"]);
    for id in ["e1", "e2"] {
        h.succeed(id, "Deploy", "Deploy");
    }
    h.succeed("e3", "Build", "Build");
    h.succeed("e3", "Deploy", "Deploy");
    for id in ["e1", "e2", "e3"] {
        assert!(
            h.state
                .executions
                .get(id)
                .is_none_or(|e| e.status == ExecutionStatus::Succeeded)
        );
    }
    assert!(h.state.stage_locks.is_empty() && h.state.waiting.is_empty());
}

#[test]
fn parallel_executions_run_independently_without_locks() {
    let mut h = Harness::new(three_stages(ExecutionMode::Parallel));
    let first = h.start("e1");
    let second = h.start("e2");
    assert_eq!(dispatched(&first), vec![triple("e1", "Source", "Source")]);
    assert_eq!(dispatched(&second), vec![triple("e2", "Source", "Source")]);
    assert!(h.state.stage_locks.is_empty());
    h.succeed("e2", "Source", "Source");
    h.succeed("e2", "Build", "Build");
    h.succeed("e2", "Deploy", "Deploy");
    assert_eq!(h.status("e2"), ExecutionStatus::Succeeded);
    assert_eq!(h.execution("e1").position, Position::InStage { stage: 0 });
    h.fail("e1", "Source", "Source");
    assert_eq!(h.last_pipeline_event("e1").as_deref(), Some("FAILED"));
}

#[test]
fn a_disabled_transition_holds_arrivals_and_enabling_admits_the_waiting_one() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.disable("Build");
    assert!(!h.state.is_transition_enabled("Build"));
    h.start("e1");
    let effects = h.succeed("e1", "Source", "Source");
    assert!(dispatched(&effects).is_empty());
    assert_eq!(h.inbound("Build"), vec!["e1"]);
    assert_eq!(h.lock("Build"), None);

    h.start("e2");
    let effects = h.succeed("e2", "Source", "Source");
    assert!(event_lines(&effects).contains(&"pipeline e1 SUPERSEDED".to_string()));
    assert_eq!(h.inbound("Build"), vec!["e2"]);

    let effects = h.enable("Build");
    assert_eq!(dispatched(&effects), vec![triple("e2", "Build", "Build")]);
    assert_eq!(h.lock("Build"), Some("e2"));
    assert!(h.state.enabled_transitions.contains_key("Build"));
    // Enabling an enabled transition changes nothing.
    assert_eq!(h.enable("Build"), vec![]);
}

#[test]
fn enabling_a_transition_in_front_of_a_locked_stage_admits_nothing_until_it_is_free() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.disable("Build");
    h.start("e2");
    h.succeed("e2", "Source", "Source");
    assert_eq!(dispatched(&h.enable("Build")), vec![]);
    assert_eq!(h.inbound("Build"), vec!["e2"]);
    let effects = h.succeed("e1", "Build", "Build");
    assert!(dispatched(&effects).contains(&triple("e2", "Build", "Build")));
}

#[test]
fn queued_executions_wait_in_order_at_a_disabled_transition() {
    let mut h = Harness::new(three_stages(ExecutionMode::Queued));
    h.disable("Build");
    for id in ["e1", "e2"] {
        h.start(id);
        h.succeed(id, "Source", "Source");
    }
    assert_eq!(h.inbound("Build"), vec!["e1", "e2"]);
    let effects = h.enable("Build");
    assert_eq!(dispatched(&effects), vec![triple("e1", "Build", "Build")]);
    assert_eq!(h.inbound("Build"), vec!["e2"]);
}

#[test]
fn parallel_executions_all_enter_when_a_transition_is_enabled() {
    let mut h = Harness::new(three_stages(ExecutionMode::Parallel));
    h.disable("Build");
    for id in ["e1", "e2"] {
        h.start(id);
        h.succeed(id, "Source", "Source");
    }
    assert_eq!(h.inbound("Build"), vec!["e1", "e2"]);
    let effects = h.enable("Build");
    assert_eq!(
        dispatched(&effects),
        vec![
            triple("e1", "Build", "Build"),
            triple("e2", "Build", "Build")
        ]
    );
}

#[test]
fn a_stopped_inbound_execution_never_enters_and_cannot_be_retried() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.disable("Build");
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    let effects = h.stop("e1", false).expect("stopped");
    assert_eq!(
        event_lines(&effects),
        vec!["pipeline e1 STOPPING", "pipeline e1 STOPPED"]
    );
    assert_eq!(h.status("e1"), ExecutionStatus::Stopped);
    assert!(h.inbound("Build").is_empty());
    assert_eq!(dispatched(&h.enable("Build")), vec![]);
    assert!(matches!(
        h.retry("e1", "Source", StageRetryMode::FailedActions),
        Err(EngineError::StageNotRetryable(_))
    ));
}

#[test]
fn a_failure_releases_the_lock_and_admits_the_waiting_execution() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.start("e2");
    h.succeed("e2", "Source", "Source");
    let effects = h.fail("e1", "Build", "Build");
    assert_eq!(dispatched(&effects), vec![triple("e2", "Build", "Build")]);
    assert_eq!(h.lock("Build"), Some("e2"));
    // The failed execution can no longer be retried once a newer one entered the stage: it is
    // no longer the latest of any stage, so the engine dropped it (the caller keeps the history
    // and answers NotLatestPipelineExecution for ids it knows).
    assert!(!h.state.executions.contains_key("e1"));
    assert!(matches!(
        h.retry("e1", "Build", StageRetryMode::FailedActions),
        Err(EngineError::PipelineExecutionNotFound(_))
    ));
}

fn updated(mut declaration: penstock_core::model::PipelineDeclaration, version: i64) -> Input {
    declaration.version = Some(version);
    Input::PipelineUpdated { declaration }
}

#[test]
fn an_update_cancels_waiting_executions_at_once_and_running_ones_after_their_actions() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.start("e2");
    h.succeed("e2", "Source", "Source");
    h.start("e3");
    let effects = h.apply(updated(three_stages(ExecutionMode::Queued), 2));
    assert_eq!(event_lines(&effects), vec!["pipeline e2 CANCELED"]);
    assert_eq!(h.state.current_version, 2);
    assert_eq!(
        h.status("e1"),
        ExecutionStatus::InProgress,
        "in-progress actions finish first"
    );
    assert_eq!(h.status("e3"), ExecutionStatus::InProgress);
    assert!(h.state.declarations.contains_key(&1), "still referenced");

    // A new execution runs on version 2 and waits for the lock the old one holds.
    h.start("e4");
    h.succeed("e3", "Source", "Source");
    assert_eq!(h.last_pipeline_event("e3").as_deref(), Some("CANCELED"));
    assert_eq!(h.lock("Source"), Some("e4"));
    assert_eq!(h.execution("e4").pipeline_version, 2);

    let effects = h.succeed("e1", "Build", "Build");
    assert_eq!(
        event_lines(&effects),
        vec![
            "action e1 Build/Build SUCCEEDED",
            "stage e1 Build CANCELED",
            "pipeline e1 CANCELED"
        ]
    );
    assert!(
        dispatched(&effects).is_empty(),
        "a doomed execution starts nothing new"
    );
    assert_eq!(h.lock("Build"), None);
    h.succeed("e4", "Source", "Source");
    assert!(
        !h.state.declarations.contains_key(&1),
        "no kept execution runs on version 1"
    );
    assert!(h.state.executions.values().all(|e| e.pipeline_version == 2));
}

#[test]
fn an_update_cancels_a_pending_approval_at_once() {
    let mut h = Harness::new(with_approval(ExecutionMode::Superseded));
    h.start("e1");
    h.succeed("e1", "Source", "Source");
    h.open_approval("e1", "Approve", "Approval", "tok");
    let effects = h.apply(updated(with_approval(ExecutionMode::Superseded), 2));
    assert_eq!(
        event_lines(&effects),
        vec![
            "action e1 Approve/Approval CANCELED",
            "stage e1 Approve CANCELED",
            "pipeline e1 CANCELED"
        ]
    );
    assert!(effects.iter().any(|e| matches!(e, penstock_core::engine::Effect::Cancel { action, .. } if action == "Approval")));
    assert_eq!(h.lock("Approve"), None);
    assert!(matches!(
        h.decide("e1", "Approve", "Approval", "tok", true),
        Err(EngineError::InvalidApprovalToken(_))
    ));
}

#[test]
fn parallel_executions_continue_on_their_old_version_after_an_update() {
    let mut h = Harness::new(three_stages(ExecutionMode::Parallel));
    h.start("e1");
    h.apply(updated(three_stages(ExecutionMode::Parallel), 2));
    h.start("e2");
    h.succeed("e1", "Source", "Source");
    h.succeed("e1", "Build", "Build");
    h.succeed("e1", "Deploy", "Deploy");
    assert_eq!(h.status("e1"), ExecutionStatus::Succeeded);
    assert_eq!(h.execution("e1").pipeline_version, 1);
    assert_eq!(h.execution("e2").pipeline_version, 2);
}

#[test]
fn a_stale_or_unversioned_update_is_refused_or_ignored() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    h.apply(updated(three_stages(ExecutionMode::Superseded), 3));
    let before = h.state.clone();
    assert_eq!(
        h.apply(updated(three_stages(ExecutionMode::Queued), 2)),
        vec![]
    );
    assert_eq!(h.state, before);
    let mut unversioned = three_stages(ExecutionMode::Superseded);
    unversioned.version = None;
    assert!(matches!(
        h.try_apply(Input::PipelineUpdated {
            declaration: unversioned
        }),
        Err(EngineError::Validation(_))
    ));
}

#[test]
fn transitions_of_unknown_stages_are_refused() {
    let mut h = Harness::new(three_stages(ExecutionMode::Superseded));
    let result = h.try_apply(Input::DisableTransition {
        stage: "Nope".into(),
        reason: "x".into(),
        changed_by: None,
    });
    assert!(matches!(result, Err(EngineError::StageNotFound(_))));
    let result = h.try_apply(Input::EnableTransition {
        stage: "Nope".into(),
        changed_by: None,
    });
    assert!(matches!(result, Err(EngineError::StageNotFound(_))));
}

#[test]
fn queued_mode_limits_live_executions() {
    let mut h = Harness::new(three_stages(ExecutionMode::Queued));
    for n in 0..MAX_LIVE_EXECUTIONS {
        h.start(&format!("e{n}"));
    }
    let result = h.try_apply(Input::Start(start_request("one-more")));
    assert!(matches!(result, Err(EngineError::ConcurrencyLimit(_))));
}
