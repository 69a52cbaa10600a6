//! Engine invariants under random pipelines and random schedules (DESIGN "Invariants" 1-3).
//!
//! A case is a random valid pipeline (2-5 stages, 1-4 actions per stage with random runOrders,
//! a random execution mode, some Manual approvals, some automatic retries) and a schedule of
//! small operations: starts, completions of dispatched work (success or failure), duplicated and
//! stale deliveries, approvals, timeouts, stops, retries, transition toggles and pipeline
//! updates. After every operation the test checks:
//! - idempotency: applying the same input again changes neither the state nor the effects;
//! - a refused input leaves the state exactly as it was;
//! - no (execution, stage, action, attempt) is dispatched twice in the whole run;
//! - a terminal execution never changes status (only an accepted retry reopens one) and a
//!   dropped execution never comes back;
//! - locks and waiting lists are consistent, and nothing waits in front of a free, enabled
//!   stage.
//!
//! At the end every transition is enabled and all outstanding work is completed; then every
//! execution that was started has ended Succeeded, Failed, Stopped, Superseded or Cancelled.
//!
//! Can it catch a real bug? With the engine's duplicate check weakened (a result was accepted
//! for the current attempt number even when that attempt was no longer in progress, so a
//! redelivered success was handled again), this test failed on its first run and shrank to the
//! smallest pipeline it generates (one source action, one build stage, SUPERSEDED) and the
//! schedule `[Start, Start]`: draining completes the first source attempt, and applying that
//! success a second time re-emitted the action's SUCCEEDED event, which the idempotency check
//! reports ("applying ActionSucceeded { .. } twice had effects").

mod engine_support;

use std::collections::{BTreeMap, BTreeSet};

use engine_support::*;
use penstock_core::engine::{
    ActionStatus, ArtifactRef, Effect, ErrorDetails, EventKind, ExecutionStatus, ExternalExecution,
    Input, PipelineState, Position, StageStatus, Timestamp, apply, event_state, is_manual_approval,
};
use penstock_core::model::{
    ConditionResult, ExecutionMode, FailureConditions, PipelineDeclaration, StageRetryMode,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct ActionShape {
    run_order: u32,
    approval: bool,
}

#[derive(Debug, Clone)]
struct StageShape {
    actions: Vec<ActionShape>,
    auto_retry: Option<bool>,
}

fn mode_of(n: u8) -> ExecutionMode {
    match n % 3 {
        0 => ExecutionMode::Superseded,
        1 => ExecutionMode::Queued,
        _ => ExecutionMode::Parallel,
    }
}

prop_compose! {
    fn action_shape()(run_order in 1u32..=3, approval in prop::bool::weighted(0.2)) -> ActionShape {
        ActionShape { run_order, approval }
    }
}

prop_compose! {
    fn stage_shape()(
        actions in prop::collection::vec(action_shape(), 1..=4),
        auto_retry in prop::option::weighted(0.3, any::<bool>()),
    ) -> StageShape {
        StageShape { actions, auto_retry }
    }
}

prop_compose! {
    fn declaration()(
        mode in 0u8..3,
        sources in prop::collection::vec(1u32..=2, 1..=2),
        stages in prop::collection::vec(stage_shape(), 1..=4),
    ) -> PipelineDeclaration {
        let mut declared = vec![stage(
            "Source",
            sources
                .iter()
                .enumerate()
                .map(|(i, order)| source(&format!("Src{i}"), &format!("S{i}")).run_order(*order))
                .collect(),
        )];
        for (si, shape) in stages.iter().enumerate() {
            let actions = shape
                .actions
                .iter()
                .enumerate()
                .map(|(ai, a)| {
                    let name = format!("A{si}_{ai}");
                    let declared = if a.approval {
                        approval(&name)
                    } else {
                        build(&name)
                            .input("S0")
                            .config("Run", "#{codepipeline.PipelineExecutionId}")
                    };
                    declared.run_order(a.run_order)
                })
                .collect();
            let mut next = stage(&format!("Stage{si}"), actions);
            next.on_failure = shape.auto_retry.map(|all| FailureConditions {
                result: Some(ConditionResult::Retry),
                retry_configuration: Some(penstock_core::model::RetryConfiguration {
                    retry_mode: Some(if all { StageRetryMode::AllActions } else { StageRetryMode::FailedActions }),
                }),
                conditions: None,
            });
            declared.push(next);
        }
        pipeline(mode_of(mode), declared)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Start,
    /// Completes one in-progress attempt (an approval is opened and decided).
    Complete {
        pick: usize,
        success: bool,
    },
    /// Delivers again an input delivered before.
    Redeliver {
        pick: usize,
    },
    /// Reports a result for the attempt before the current one of an in-progress action.
    Stale {
        pick: usize,
        success: bool,
    },
    /// The dispatcher reports an attempt started (opening an approval's token).
    Started {
        pick: usize,
    },
    Timeout {
        pick: usize,
    },
    Stop {
        pick: usize,
        abandon: bool,
    },
    /// A retry of a random (execution, stage), or, when `targeted`, of a stage that failed or
    /// stopped (random picks rarely hit one).
    Retry {
        pick: usize,
        stage: usize,
        all: bool,
        targeted: bool,
    },
    Toggle {
        stage: usize,
    },
    Update {
        mode: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Start),
        8 => (any::<usize>(), prop::bool::weighted(0.75)).prop_map(|(pick, success)| Op::Complete { pick, success }),
        2 => any::<usize>().prop_map(|pick| Op::Redeliver { pick }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, success)| Op::Stale { pick, success }),
        1 => any::<usize>().prop_map(|pick| Op::Started { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Timeout { pick }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, abandon)| Op::Stop { pick, abandon }),
        3 => (any::<usize>(), 0usize..6, any::<bool>(), prop::bool::weighted(0.7))
            .prop_map(|(pick, stage, all, targeted)| Op::Retry { pick, stage, all, targeted }),
        1 => (0usize..6).prop_map(|stage| Op::Toggle { stage }),
        1 => (0u8..3).prop_map(|mode| Op::Update { mode }),
    ]
}

/// An in-progress attempt of the current state.
#[derive(Debug, Clone)]
struct Running {
    execution: String,
    stage: String,
    action: String,
    attempt: u32,
    approval: bool,
    started: bool,
    deadline: Option<Timestamp>,
}

struct World {
    state: PipelineState,
    now: Timestamp,
    started: Vec<String>,
    dispatched: BTreeSet<(String, String, String, u32)>,
    delivered: Vec<Input>,
    terminal: BTreeMap<String, ExecutionStatus>,
    dropped: BTreeSet<String>,
    /// The last pipeline event state per execution.
    last_event: BTreeMap<String, String>,
    next_id: usize,
}

impl World {
    fn new(declaration: PipelineDeclaration) -> Self {
        World {
            state: PipelineState::new(declaration),
            now: Timestamp(T0),
            started: vec![],
            dispatched: BTreeSet::new(),
            delivered: vec![],
            terminal: BTreeMap::new(),
            dropped: BTreeSet::new(),
            last_event: BTreeMap::new(),
            next_id: 0,
        }
    }

    fn running(&self) -> Vec<Running> {
        let mut running = vec![];
        for execution in self.state.executions.values() {
            let Some(declaration) = self.state.declaration_of(execution) else {
                continue;
            };
            for (si, stage) in execution.stages.iter().enumerate() {
                for (ai, action) in stage.actions.iter().enumerate() {
                    if action.status == ActionStatus::InProgress {
                        running.push(Running {
                            execution: execution.id.clone(),
                            stage: stage.name.clone(),
                            action: action.name.clone(),
                            attempt: action.attempt,
                            approval: is_manual_approval(
                                &declaration.stages[si].actions[ai].action_type_id,
                            ),
                            started: action.started_reported,
                            deadline: action.deadline,
                        });
                    }
                }
            }
        }
        running
    }

    /// Applies an input, checking every per-step invariant. Returns whether it was accepted.
    fn apply(&mut self, input: Input) -> Result<bool, TestCaseError> {
        self.now = Timestamp(self.now.0 + 1000);
        let before = self.state.clone();
        let mut next = self.state.clone();
        let result = apply(&mut next, input.clone(), self.now);
        let mut again = next.clone();
        let second = apply(&mut again, input.clone(), self.now);
        prop_assert_eq!(
            &again,
            &next,
            "applying {:?} twice changed the state",
            input
        );
        if let Ok(effects) = &second {
            prop_assert!(
                effects.is_empty(),
                "applying {:?} twice had effects: {:?}",
                input,
                effects
            );
        }
        let effects = match result {
            Ok(effects) => effects,
            Err(_) => {
                prop_assert_eq!(&next, &before, "a refused {:?} changed the state", input);
                return Ok(false);
            }
        };
        self.state = next;
        self.delivered.push(input.clone());
        if let Input::Retry { execution_id, .. } = &input {
            self.terminal.remove(execution_id);
        }
        for effect in &effects {
            match effect {
                Effect::Dispatch(job) => {
                    let key = (
                        job.execution_id.clone(),
                        job.stage.clone(),
                        job.action.clone(),
                        job.attempt,
                    );
                    prop_assert!(
                        self.dispatched.insert(key.clone()),
                        "dispatched twice: {:?}",
                        key
                    );
                }
                Effect::Publish(change) if change.kind == EventKind::Pipeline => {
                    let id = change.detail["execution-id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let state = change.detail["state"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    self.last_event.insert(id, state);
                }
                _ => {}
            }
        }
        self.check_invariants()?;
        Ok(true)
    }

    fn check_invariants(&mut self) -> Result<(), TestCaseError> {
        let state = &self.state;
        for id in &self.dropped {
            prop_assert!(
                !state.executions.contains_key(id),
                "dropped execution {} came back",
                id
            );
        }
        for (id, status) in &self.terminal {
            match state.executions.get(id) {
                Some(execution) => {
                    prop_assert_eq!(execution.status, *status, "terminal {} changed", id)
                }
                None => {
                    self.dropped.insert(id.clone());
                }
            }
        }
        for id in &self.started {
            if !state.executions.contains_key(id) {
                self.dropped.insert(id.clone());
            }
        }
        for execution in state.executions.values() {
            if execution.status.is_terminal() {
                prop_assert_eq!(execution.position, Position::Finished);
                self.terminal
                    .entry(execution.id.clone())
                    .or_insert(execution.status);
            }
        }
        // Locks: held only by live, locked-mode executions inside that stage.
        for (stage, holder) in &state.stage_locks {
            let execution = state.executions.get(holder);
            prop_assert!(
                execution.is_some(),
                "lock of {} held by unknown {}",
                stage,
                holder
            );
            let Some(execution) = execution else { continue };
            prop_assert!(matches!(
                execution.status,
                ExecutionStatus::InProgress | ExecutionStatus::Stopping
            ));
            prop_assert!(execution.execution_mode != ExecutionMode::Parallel);
            let Position::InStage { stage: index } = execution.position else {
                return Err(TestCaseError::fail(format!(
                    "lock holder {holder} of {stage} is not in a stage"
                )));
            };
            prop_assert_eq!(&execution.stages[index].name, stage);
        }
        for execution in state.executions.values() {
            match execution.position {
                Position::InStage { stage }
                    if execution.execution_mode != ExecutionMode::Parallel =>
                {
                    let name = &execution.stages[stage].name;
                    prop_assert_eq!(
                        state.stage_locks.get(name),
                        Some(&execution.id),
                        "{} in {} without the lock",
                        execution.id,
                        name
                    );
                }
                Position::Waiting { stage } => {
                    let name = &execution.stages[stage].name;
                    let listed = state
                        .waiting
                        .get(name)
                        .map(|w| w.iter().filter(|i| **i == execution.id).count());
                    prop_assert_eq!(
                        listed,
                        Some(1),
                        "{} waits for {} but is not listed once",
                        execution.id,
                        name
                    );
                }
                _ => {}
            }
        }
        for (stage, ids) in &state.waiting {
            prop_assert!(!ids.is_empty());
            let enabled = state.is_transition_enabled(stage);
            for id in ids {
                let execution = state.executions.get(id);
                prop_assert!(
                    execution.is_some_and(|e| !e.status.is_terminal()),
                    "{} waits for {} but is gone or finished",
                    id,
                    stage
                );
                let Some(execution) = execution else { continue };
                let free_for_it = execution.execution_mode == ExecutionMode::Parallel
                    || !state.stage_locks.contains_key(stage);
                prop_assert!(
                    !(enabled && free_for_it),
                    "{} waits in front of the free, enabled stage {}",
                    id,
                    stage
                );
            }
        }
        Ok(())
    }

    fn result_input(&self, running: &Running, success: bool, attempt: u32) -> Input {
        let outputs = self
            .state
            .executions
            .get(&running.execution)
            .and_then(|e| self.state.declaration_of(e))
            .and_then(|d| d.stage(&running.stage))
            .and_then(|s| s.actions.iter().find(|a| a.name == running.action))
            .map(|a| {
                a.output_artifacts
                    .iter()
                    .map(|o| o.name.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if success {
            Input::ActionSucceeded {
                execution_id: running.execution.clone(),
                stage: running.stage.clone(),
                action: running.action.clone(),
                attempt,
                output_artifacts: outputs
                    .into_iter()
                    .map(|name| ArtifactRef {
                        location: format!("s3://bucket/{}/{name}", running.execution),
                        name,
                        revision_id: None,
                        revision_summary: None,
                    })
                    .collect(),
                output_variables: BTreeMap::new(),
                external: ExternalExecution::default(),
            }
        } else {
            Input::ActionFailed {
                execution_id: running.execution.clone(),
                stage: running.stage.clone(),
                action: running.action.clone(),
                attempt,
                error: ErrorDetails {
                    code: "JobFailed".into(),
                    message: "failed".into(),
                },
                external: ExternalExecution::default(),
            }
        }
    }

    fn token(running: &Running) -> String {
        format!(
            "token-{}-{}-{}-{}",
            running.execution, running.stage, running.action, running.attempt
        )
    }

    fn open(&mut self, running: &Running) -> Result<(), TestCaseError> {
        self.apply(Input::ActionStarted {
            execution_id: running.execution.clone(),
            stage: running.stage.clone(),
            action: running.action.clone(),
            attempt: running.attempt,
            external: ExternalExecution {
                id: Some(format!("ext-{}", running.attempt)),
                ..Default::default()
            },
            approval_token: running.approval.then(|| Self::token(running)),
        })?;
        Ok(())
    }

    fn complete(&mut self, running: &Running, success: bool) -> Result<(), TestCaseError> {
        if running.approval {
            if !running.started {
                self.open(running)?;
            }
            self.apply(Input::ApprovalDecided {
                execution_id: running.execution.clone(),
                stage: running.stage.clone(),
                action: running.action.clone(),
                token: Self::token(running),
                approved: success,
                summary: String::new(),
                decided_by: None,
            })?;
        } else {
            let input = self.result_input(running, success, running.attempt);
            self.apply(input)?;
        }
        Ok(())
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let running = self.running();
        let pick_running =
            |pick: usize| (!running.is_empty()).then(|| running[pick % running.len()].clone());
        let known: Vec<String> = self.started.clone();
        let stage_names: Vec<String> = self
            .state
            .current_declaration()
            .map(|d| d.stages.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default();
        match op {
            Op::Start => {
                let id = format!("e{}", self.next_id);
                self.next_id += 1;
                if self.apply(Input::Start(start_request(&id)))? {
                    self.started.push(id);
                }
            }
            Op::Complete { pick, success } => {
                if let Some(target) = pick_running(*pick) {
                    self.complete(&target, *success)?;
                }
            }
            Op::Redeliver { pick } => {
                if !self.delivered.is_empty() {
                    let input = self.delivered[pick % self.delivered.len()].clone();
                    // The engine forgets executions it dropped; the caller, which keeps the
                    // history, drops a start of an execution it has seen finish (the contract
                    // of `Input::Start`). Anything else is a duplicate or late delivery.
                    let forgotten =
                        matches!(&input, Input::Start(r) if self.dropped.contains(&r.execution_id));
                    if !forgotten {
                        self.apply(input)?;
                    }
                }
            }
            Op::Stale { pick, success } => {
                if let Some(target) = pick_running(*pick).filter(|t| t.attempt > 1) {
                    let before = self.state.clone();
                    let input = self.result_input(&target, *success, target.attempt - 1);
                    self.apply(input)?;
                    prop_assert_eq!(
                        &self.state,
                        &before,
                        "a result for an older attempt changed the state"
                    );
                }
            }
            Op::Started { pick } => {
                if let Some(target) = pick_running(*pick) {
                    self.open(&target)?;
                }
            }
            Op::Timeout { pick } => {
                if let Some(target) = pick_running(*pick) {
                    if let Some(deadline) = target.deadline {
                        self.now = Timestamp(self.now.0.max(deadline.0));
                    }
                    self.apply(Input::ActionTimedOut {
                        execution_id: target.execution.clone(),
                        stage: target.stage.clone(),
                        action: target.action.clone(),
                        attempt: target.attempt,
                    })?;
                }
            }
            Op::Stop { pick, abandon } => {
                if !known.is_empty() {
                    let id = known[pick % known.len()].clone();
                    self.apply(Input::Stop {
                        execution_id: id,
                        abandon: *abandon,
                        reason: None,
                    })?;
                }
            }
            Op::Retry {
                pick,
                stage,
                all,
                targeted,
            } => {
                let mode = if *all {
                    StageRetryMode::AllActions
                } else {
                    StageRetryMode::FailedActions
                };
                let retryable: Vec<(String, String)> = self
                    .state
                    .executions
                    .values()
                    .flat_map(|e| {
                        e.stages
                            .iter()
                            .filter(|s| {
                                matches!(s.status, Some(StageStatus::Failed | StageStatus::Stopped))
                                    || s.actions.iter().any(|a| a.status == ActionStatus::Failed)
                            })
                            .map(|s| (e.id.clone(), s.name.clone()))
                    })
                    .collect();
                if *targeted && !retryable.is_empty() {
                    let (execution_id, stage) = retryable[pick % retryable.len()].clone();
                    self.apply(Input::Retry {
                        execution_id,
                        stage,
                        mode,
                    })?;
                } else if !known.is_empty() && !stage_names.is_empty() {
                    let id = known[pick % known.len()].clone();
                    let stage = stage_names[stage % stage_names.len()].clone();
                    self.apply(Input::Retry {
                        execution_id: id,
                        stage,
                        mode,
                    })?;
                }
            }
            Op::Toggle { stage } => {
                if !stage_names.is_empty() {
                    let stage = stage_names[stage % stage_names.len()].clone();
                    let input = if self.state.is_transition_enabled(&stage) {
                        Input::DisableTransition {
                            stage,
                            reason: "hold".into(),
                            changed_by: None,
                        }
                    } else {
                        Input::EnableTransition {
                            stage,
                            changed_by: None,
                        }
                    };
                    self.apply(input)?;
                }
            }
            Op::Update { mode } => {
                if let Some(current) = self.state.current_declaration() {
                    let mut next = current.clone();
                    next.version = Some(self.state.current_version + 1);
                    next.execution_mode = Some(mode_of(*mode));
                    self.apply(Input::PipelineUpdated { declaration: next })?;
                }
            }
        }
        Ok(())
    }

    /// Enables every transition and completes all outstanding work successfully.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        let disabled: Vec<String> = self.state.disabled_transitions.keys().cloned().collect();
        for stage in disabled {
            self.apply(Input::EnableTransition {
                stage,
                changed_by: None,
            })?;
        }
        for _ in 0..10_000 {
            let running = self.running();
            let Some(target) = running.first().cloned() else {
                break;
            };
            self.complete(&target, true)?;
        }
        prop_assert!(
            self.running().is_empty(),
            "work still outstanding after draining"
        );
        for execution in self.state.executions.values() {
            prop_assert!(
                execution.status.is_terminal(),
                "{} is stuck: {:?}",
                execution.id,
                execution
            );
        }
        let terminal = [
            event_state::SUCCEEDED,
            event_state::FAILED,
            event_state::STOPPED,
            event_state::SUPERSEDED,
            event_state::CANCELED,
        ];
        for id in &self.started {
            let last = self
                .last_event
                .get(id)
                .map(String::as_str)
                .unwrap_or("none");
            prop_assert!(
                terminal.contains(&last),
                "{} ended with the event {}",
                id,
                last
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 4096, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_random_pipelines_and_schedules(
        declaration in declaration(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut world = World::new(declaration);
        for op in &ops {
            world.run(op)?;
        }
        world.drain()?;
    }
}
