//! The transition function: `apply(state, input, now) -> effects`.
//!
//! Every input is handled in two steps. First the input itself is recorded (an action result,
//! a stop, a retry...). Then [`Machine::progress`] moves every execution as far as the rules
//! allow: it dispatches the next `runOrder` group, finishes stages, moves executions to the next
//! stage, ends them, and admits waiting executions into stages whose lock was released. Progress
//! runs to a fixed point, so after `apply` returns no rule can fire without a new input; that is
//! what makes a second application of the same input a no-op.
//!
//! The rules, by SEMANTICS section:
//! - §2: groups run in ascending `runOrder`; a group starts once the previous one fully
//!   succeeded; after a failure nothing new starts in the stage, and the stage fails once nothing
//!   in it runs.
//! - §3: stage locks in SUPERSEDED and QUEUED mode (keyed by stage name and shared by every
//!   version); PARALLEL executions take no locks. In SUPERSEDED mode each stage has one waiting
//!   slot; the first stage is treated like any other, so a start that finds the first stage
//!   locked waits in front of it and supersedes the start already waiting there. QUEUED
//!   executions wait in one FIFO queue per stage. After `PipelineUpdated`, executions of an older
//!   version not in PARALLEL mode are doomed: waiting ones are cancelled at once, ones in a stage
//!   start nothing new and end `Cancelled` once their in-progress actions finish (a pending
//!   Manual approval is cancelled at once rather than held for up to 7 days). PARALLEL
//!   executions of older versions continue on their own version.
//! - §4: a disabled inbound transition holds arrivals; enabling it admits what waits (the single
//!   SUPERSEDED slot, the head of a QUEUED queue, every PARALLEL execution).
//! - §5: stop-and-wait lets in-progress actions finish (a pending Manual approval included: it
//!   waits for the decision or the timeout, as CodePipeline does), stop-and-abandon abandons them.
//!   Both end with the stage and the execution `Stopped` and the lock released. An execution
//!   that was already stopping when a pipeline update dooms it still ends `Stopped`.
//! - §6: manual retry (FAILED_ACTIONS / ALL_ACTIONS) and one automatic retry per stage failure
//!   (`onFailure.result = RETRY`); a failure that follows an automatic retry is final until a
//!   manual retry.
//! - §7: approvals decided with the open token; timeouts fail the attempt with `TimedOut`.
//! - §9: no condition rule providers exist, so `beforeEntry` and `onSuccess` conditions are
//!   treated as met; `onFailure` RETRY is honoured; rollback is not implemented.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;

use super::events::{self, state};
use super::job;
use super::types::{
    ActionAttemptRecord, ActionRun, ActionStatus, ArtifactRef, DisabledTransition, Effect,
    EngineError, ErrorDetails, Execution, ExecutionStatus, ExternalExecution, Input, PipelineState,
    Position, RetryMetadata, StageRun, StageStatus, StartRequest, StopRequest, Timestamp,
    TransitionChange,
};
use crate::model::{
    ActionCategory, ConditionResult, ExecutionMode, PipelineDeclaration, StageRetryMode,
};

/// Live executions allowed at once in QUEUED and PARALLEL mode. CodePipeline documents the
/// limit's exception but not its number; 50 is what others reproducing it use.
pub const MAX_LIVE_EXECUTIONS: usize = 50;

/// Error code of an attempt that passed its deadline.
pub const TIMED_OUT: &str = "TimedOut";
/// Error code of a rejected Manual approval.
pub const APPROVAL_REJECTED: &str = "ApprovalRejected";

const AUTOMATED_STAGE_RETRY: &str = "AutomatedStageRetry";
const MANUAL_STAGE_RETRY: &str = "ManualStageRetry";

impl PipelineState {
    /// A pipeline with no execution yet, on `declaration.version` (1 when absent).
    pub fn new(mut declaration: PipelineDeclaration) -> Self {
        let version = declaration.version.unwrap_or(1);
        declaration.version = Some(version);
        PipelineState {
            pipeline_name: declaration.name.clone(),
            current_version: version,
            declarations: BTreeMap::from([(version, declaration)]),
            disabled_transitions: BTreeMap::new(),
            enabled_transitions: BTreeMap::new(),
            stage_locks: BTreeMap::new(),
            waiting: BTreeMap::new(),
            stage_latest: BTreeMap::new(),
            executions: BTreeMap::new(),
        }
    }
}

/// Applies one input. On `Err` the state is exactly as before. Results from the bus about
/// unknown or finished executions, or about an attempt other than the current one, are stale
/// or duplicated deliveries: they return `Ok(vec![])` and change nothing.
///
/// After every accepted input, finished executions that no stage names as its latest are
/// dropped from the state ([`apply_pruning`] hands them to the caller to persist). The engine
/// therefore no longer knows them: the caller must drop a `Start` of an execution it has seen
/// finish, and answer `NotLatestPipelineExecution` itself for a retry of a dropped execution it
/// knows (the engine says `PipelineExecutionNotFound`).
pub fn apply(
    state: &mut PipelineState,
    input: Input,
    now: Timestamp,
) -> Result<Vec<Effect>, EngineError> {
    apply_pruning(state, input, now).map(|(effects, _)| effects)
}

/// [`apply`], also returning the finished executions it dropped from the state, as they were
/// last, so the caller can store them before they are gone.
pub fn apply_pruning(
    state: &mut PipelineState,
    input: Input,
    now: Timestamp,
) -> Result<(Vec<Effect>, Vec<Execution>), EngineError> {
    match input {
        // The hot path: never an error, so it works in place.
        Input::ActionStarted { .. }
        | Input::ActionSucceeded { .. }
        | Input::ActionFailed { .. }
        | Input::ActionTimedOut { .. } => apply_in(state, input, now),
        // Commands can be refused part-way through their checks: work on a copy.
        command => {
            let mut next = state.clone();
            let outcome = apply_in(&mut next, command, now)?;
            *state = next;
            Ok(outcome)
        }
    }
}

fn apply_in(
    state: &mut PipelineState,
    input: Input,
    now: Timestamp,
) -> Result<(Vec<Effect>, Vec<Execution>), EngineError> {
    // Inputs that change what every execution shares are recorded before the machine borrows
    // the state.
    match &input {
        Input::DisableTransition {
            stage,
            reason,
            changed_by,
        } => {
            require_stage(state, stage)?;
            if state
                .disabled_transitions
                .get(stage)
                .is_some_and(|d| d.reason == *reason)
            {
                return Ok((vec![], vec![]));
            }
            state.disabled_transitions.insert(
                stage.clone(),
                DisabledTransition {
                    reason: reason.clone(),
                    changed_at: now,
                    changed_by: changed_by.clone(),
                },
            );
            // Disabling only holds future arrivals: nothing moves.
            return Ok((vec![], vec![]));
        }
        Input::EnableTransition { stage, changed_by } => {
            require_stage(state, stage)?;
            if state.disabled_transitions.remove(stage).is_none() {
                return Ok((vec![], vec![]));
            }
            state.enabled_transitions.insert(
                stage.clone(),
                TransitionChange {
                    changed_at: now,
                    changed_by: changed_by.clone(),
                },
            );
        }
        Input::PipelineUpdated { declaration } => {
            let Some(version) = declaration.version else {
                return Err(EngineError::Validation(
                    "pipeline.version: an updated declaration must carry its version".into(),
                ));
            };
            if declaration.name != state.pipeline_name {
                return Err(EngineError::Validation(format!(
                    "pipeline.name: expected {}, got {}",
                    state.pipeline_name, declaration.name
                )));
            }
            if version <= state.current_version {
                return Ok((vec![], vec![]));
            }
            state.declarations.insert(version, declaration.clone());
            state.current_version = version;
        }
        _ => {}
    }

    let mut machine = Machine::new(state, now);
    let touched = machine.handle(input)?;
    if !touched {
        return Ok((vec![], vec![]));
    }
    machine.progress();
    let effects = std::mem::take(&mut machine.effects);
    let dropped = prune(state);
    Ok((effects, dropped))
}

fn require_stage(state: &PipelineState, stage: &str) -> Result<(), EngineError> {
    let known = state
        .declarations
        .get(&state.current_version)
        .is_some_and(|d| d.stage(stage).is_some());
    if known {
        Ok(())
    } else {
        Err(EngineError::StageNotFound(format!(
            "stage {stage} is not in the pipeline"
        )))
    }
}

/// Drops finished executions nothing refers to, `stage_latest` entries of stages the current
/// version no longer has, declarations no kept execution runs on, and empty waiting lists.
fn prune(state: &mut PipelineState) -> Vec<Execution> {
    let current = state.declarations.get(&state.current_version);
    state
        .stage_latest
        .retain(|stage, _| current.is_some_and(|d| d.stage(stage).is_some()));
    let latest = &state.stage_latest;
    let dropped_ids: Vec<String> = state
        .executions
        .iter()
        .filter(|(id, e)| e.status.is_terminal() && !latest.values().any(|l| l == *id))
        .map(|(id, _)| id.clone())
        .collect();
    let dropped: Vec<Execution> = dropped_ids
        .iter()
        .filter_map(|id| state.executions.remove(id))
        .collect();
    let executions = &state.executions;
    let current_version = state.current_version;
    state.declarations.retain(|version, _| {
        *version == current_version || executions.values().any(|e| e.pipeline_version == *version)
    });
    state.waiting.retain(|_, ids| !ids.is_empty());
    dropped
}

/// The state, split into what the rules read and what they change, plus the effects so far.
struct Machine<'a> {
    declarations: &'a BTreeMap<i64, PipelineDeclaration>,
    current_version: i64,
    disabled: &'a BTreeMap<String, DisabledTransition>,
    locks: &'a mut BTreeMap<String, String>,
    waiting: &'a mut BTreeMap<String, Vec<String>>,
    latest: &'a mut BTreeMap<String, String>,
    executions: &'a mut BTreeMap<String, Execution>,
    now: Timestamp,
    effects: Vec<Effect>,
}

/// Why a stage is restarted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RetryTrigger {
    Manual,
    Automated,
}

impl<'a> Machine<'a> {
    fn new(state: &'a mut PipelineState, now: Timestamp) -> Self {
        let PipelineState {
            declarations,
            current_version,
            disabled_transitions,
            stage_locks,
            waiting,
            stage_latest,
            executions,
            ..
        } = state;
        Machine {
            declarations,
            current_version: *current_version,
            disabled: disabled_transitions,
            locks: stage_locks,
            waiting,
            latest: stage_latest,
            executions,
            now,
            effects: Vec::new(),
        }
    }

    fn declaration(&self, version: i64) -> Option<&'a PipelineDeclaration> {
        self.declarations.get(&version)
    }

    /// An execution of an older version that does not run in PARALLEL mode: it ends `Cancelled`
    /// as soon as nothing of it is running (SEMANTICS rule 38).
    fn doomed(&self, execution: &Execution) -> bool {
        execution.execution_mode != ExecutionMode::Parallel
            && execution.pipeline_version < self.current_version
    }

    /// Records the input. `Ok(true)` when something changed and progress must run.
    fn handle(&mut self, input: Input) -> Result<bool, EngineError> {
        match input {
            Input::Start(request) => self.start(request),
            Input::ActionStarted {
                execution_id,
                stage,
                action,
                attempt,
                external,
                approval_token,
            } => Ok(self.action_started(
                &execution_id,
                &stage,
                &action,
                attempt,
                external,
                approval_token,
            )),
            Input::ActionSucceeded {
                execution_id,
                stage,
                action,
                attempt,
                output_artifacts,
                output_variables,
                external,
            } => Ok(self.action_succeeded(
                &execution_id,
                &stage,
                &action,
                attempt,
                output_artifacts,
                output_variables,
                external,
            )),
            Input::ActionFailed {
                execution_id,
                stage,
                action,
                attempt,
                error,
                external,
            } => Ok(self.action_failed(&execution_id, &stage, &action, attempt, error, external)),
            Input::ActionTimedOut {
                execution_id,
                stage,
                action,
                attempt,
            } => Ok(self.action_timed_out(&execution_id, &stage, &action, attempt)),
            Input::ApprovalDecided {
                execution_id,
                stage,
                action,
                token,
                approved,
                summary,
                decided_by,
            } => self.approval_decided(
                &execution_id,
                &stage,
                &action,
                &token,
                approved,
                summary,
                decided_by,
            ),
            Input::Stop {
                execution_id,
                abandon,
                reason,
            } => self.stop(&execution_id, abandon, reason),
            Input::Retry {
                execution_id,
                stage,
                mode,
            } => self.retry(&execution_id, &stage, mode),
            Input::PipelineUpdated { .. } => {
                self.doom_older_versions();
                Ok(true)
            }
            // Recorded before the machine was built; enabling needs the admission below.
            Input::EnableTransition { .. } => Ok(true),
            Input::DisableTransition { .. } => Ok(false),
        }
    }

    // ----- inputs --------------------------------------------------------------------------

    fn start(&mut self, request: StartRequest) -> Result<bool, EngineError> {
        if self.executions.contains_key(&request.execution_id) {
            return Ok(false);
        }
        let declaration = self.declaration(self.current_version).ok_or_else(|| {
            EngineError::Validation("the pipeline has no current declaration".into())
        })?;
        let variables = pipeline_variables(declaration, &request.variables)?;
        if let Some(first) = declaration.stages.first() {
            for revision in &request.source_revisions {
                let is_source = first.actions.iter().any(|a| {
                    a.name == revision.action_name
                        && a.action_type_id.category == ActionCategory::Source
                });
                if !is_source {
                    return Err(EngineError::Validation(format!(
                        "sourceRevisions.actionName: {} is not a source action of the pipeline",
                        revision.action_name
                    )));
                }
            }
        }
        let mode = declaration.effective_execution_mode();
        if mode != ExecutionMode::Superseded {
            let live = self
                .executions
                .values()
                .filter(|e| !e.status.is_terminal())
                .count();
            if live >= MAX_LIVE_EXECUTIONS {
                return Err(EngineError::ConcurrencyLimit(format!(
                    "at most {MAX_LIVE_EXECUTIONS} executions may run at once in {mode:?} mode"
                )));
            }
        }
        let execution = Execution {
            id: request.execution_id.clone(),
            pipeline_name: declaration.name.clone(),
            pipeline_version: self.current_version,
            execution_mode: mode,
            status: ExecutionStatus::InProgress,
            status_summary: None,
            trigger: request.trigger,
            start_time: self.now,
            last_update_time: self.now,
            attempt: 1,
            variables,
            source_revisions: request.source_revisions,
            stop: None,
            position: Position::Waiting { stage: 0 },
            stages: declaration
                .stages
                .iter()
                .map(|stage| StageRun {
                    name: stage.name.clone(),
                    status: None,
                    actions: stage
                        .actions
                        .iter()
                        .map(|a| new_action_run(&a.name))
                        .collect(),
                    retry: RetryMetadata::default(),
                    entered_at: None,
                    updated_at: None,
                })
                .collect(),
            artifacts: BTreeMap::new(),
            namespaces: BTreeMap::new(),
        };
        self.effects
            .push(events::pipeline_event(&execution, state::STARTED, self.now));
        let id = execution.id.clone();
        self.executions.insert(id.clone(), execution);
        self.arrive(&id, 0);
        Ok(true)
    }

    /// The (stage, action) indices of the attempt a bus input names, when it is the current,
    /// in-progress attempt of a live execution; `None` for anything stale or duplicated.
    fn live_attempt(
        &self,
        execution_id: &str,
        stage: &str,
        action: &str,
        attempt: u32,
    ) -> Option<(usize, usize)> {
        let execution = self.executions.get(execution_id)?;
        if execution.status.is_terminal() {
            return None;
        }
        let stage_index = execution.stages.iter().position(|s| s.name == stage)?;
        let action_index = execution.stages[stage_index]
            .actions
            .iter()
            .position(|a| a.name == action)?;
        let run = &execution.stages[stage_index].actions[action_index];
        (run.attempt == attempt && run.status == ActionStatus::InProgress)
            .then_some((stage_index, action_index))
    }

    fn action_started(
        &mut self,
        execution_id: &str,
        stage: &str,
        action: &str,
        attempt: u32,
        external: ExternalExecution,
        approval_token: Option<String>,
    ) -> bool {
        let Some((si, ai)) = self.live_attempt(execution_id, stage, action, attempt) else {
            return false;
        };
        let now = self.now;
        let Some(execution) = self.executions.get_mut(execution_id) else {
            return false;
        };
        let Some(declaration) = self.declarations.get(&execution.pipeline_version) else {
            return false;
        };
        let is_approval = declaration
            .stages
            .get(si)
            .and_then(|s| s.actions.get(ai))
            .is_some_and(|a| job::is_manual_approval(&a.action_type_id));
        let run = &mut execution.stages[si].actions[ai];
        if run.started_reported {
            return false;
        }
        run.started_reported = true;
        merge_external(&mut run.external, external);
        if is_approval {
            run.token = approval_token;
        }
        run.updated_at = Some(now);
        execution.last_update_time = now;
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn action_succeeded(
        &mut self,
        execution_id: &str,
        stage: &str,
        action: &str,
        attempt: u32,
        output_artifacts: Vec<ArtifactRef>,
        output_variables: BTreeMap<String, String>,
        external: ExternalExecution,
    ) -> bool {
        let Some((si, ai)) = self.live_attempt(execution_id, stage, action, attempt) else {
            return false;
        };
        let now = self.now;
        let Some(execution) = self.executions.get_mut(execution_id) else {
            return false;
        };
        let Some(declaration) = self.declarations.get(&execution.pipeline_version) else {
            return false;
        };
        let Some(action_declaration) = declaration.stages.get(si).and_then(|s| s.actions.get(ai))
        else {
            return false;
        };
        // A Manual approval succeeds only through its token (`ApprovalDecided`).
        if job::is_manual_approval(&action_declaration.action_type_id) {
            return false;
        }
        let pinned = job::pinned_source_revision(execution, action_declaration)
            .map(|r| r.revision_value.clone());
        let is_source = action_declaration.action_type_id.category == ActionCategory::Source;
        let mut kept = Vec::with_capacity(output_artifacts.len());
        for mut artifact in output_artifacts {
            // Only declared outputs are recorded: a provider cannot overwrite other artifacts.
            if !action_declaration
                .output_artifacts
                .iter()
                .any(|o| o.name == artifact.name)
            {
                continue;
            }
            if is_source && artifact.revision_id.is_none() {
                artifact.revision_id = pinned.clone().or_else(|| external.id.clone());
            }
            kept.push(artifact);
        }
        for artifact in &kept {
            execution
                .artifacts
                .insert(artifact.name.clone(), artifact.clone());
        }
        if let Some(namespace) = &action_declaration.namespace {
            execution
                .namespaces
                .insert(namespace.clone(), output_variables.clone());
        }
        let run = &mut execution.stages[si].actions[ai];
        run.status = ActionStatus::Succeeded;
        run.updated_at = Some(now);
        run.output_artifacts = kept;
        run.output_variables = output_variables;
        merge_external(&mut run.external, external);
        execution.last_update_time = now;
        self.effects.push(events::action_event(
            declaration,
            execution,
            si,
            ai,
            state::SUCCEEDED,
            now,
        ));
        true
    }

    fn action_failed(
        &mut self,
        execution_id: &str,
        stage: &str,
        action: &str,
        attempt: u32,
        error: ErrorDetails,
        external: ExternalExecution,
    ) -> bool {
        let Some((si, ai)) = self.live_attempt(execution_id, stage, action, attempt) else {
            return false;
        };
        self.fail_action(execution_id, si, ai, error, external);
        true
    }

    fn action_timed_out(
        &mut self,
        execution_id: &str,
        stage: &str,
        action: &str,
        attempt: u32,
    ) -> bool {
        let Some((si, ai)) = self.live_attempt(execution_id, stage, action, attempt) else {
            return false;
        };
        let Some(execution) = self.executions.get(execution_id) else {
            return false;
        };
        // A timeout reported before the deadline is a confused sweeper, not a timeout.
        if execution.stages[si].actions[ai]
            .deadline
            .is_some_and(|deadline| self.now < deadline)
        {
            return false;
        }
        let error = ErrorDetails {
            code: TIMED_OUT.to_string(),
            message: "The action did not complete before its timeout".to_string(),
        };
        self.fail_action(execution_id, si, ai, error, ExternalExecution::default());
        self.effects.push(Effect::Cancel {
            execution_id: execution_id.to_string(),
            stage: stage.to_string(),
            action: action.to_string(),
            attempt,
        });
        true
    }

    fn fail_action(
        &mut self,
        execution_id: &str,
        si: usize,
        ai: usize,
        error: ErrorDetails,
        external: ExternalExecution,
    ) {
        let now = self.now;
        let Some(execution) = self.executions.get_mut(execution_id) else {
            return;
        };
        let Some(declaration) = self.declarations.get(&execution.pipeline_version) else {
            return;
        };
        let run = &mut execution.stages[si].actions[ai];
        run.status = ActionStatus::Failed;
        run.updated_at = Some(now);
        run.error = Some(error);
        merge_external(&mut run.external, external);
        execution.last_update_time = now;
        self.effects.push(events::action_event(
            declaration,
            execution,
            si,
            ai,
            state::FAILED,
            now,
        ));
    }

    #[allow(clippy::too_many_arguments)]
    fn approval_decided(
        &mut self,
        execution_id: &str,
        stage: &str,
        action: &str,
        token: &str,
        approved: bool,
        summary: String,
        decided_by: Option<String>,
    ) -> Result<bool, EngineError> {
        let execution = self.executions.get(execution_id).ok_or_else(|| {
            EngineError::PipelineExecutionNotFound(format!("execution {execution_id} not found"))
        })?;
        let si = execution
            .stages
            .iter()
            .position(|s| s.name == stage)
            .ok_or_else(|| EngineError::StageNotFound(format!("stage {stage} not found")))?;
        let ai = execution.stages[si]
            .actions
            .iter()
            .position(|a| a.name == action)
            .ok_or_else(|| {
                EngineError::ActionNotFound(format!("action {action} not found in stage {stage}"))
            })?;
        let run = &execution.stages[si].actions[ai];
        let token_matches = run
            .token
            .as_deref()
            .is_some_and(|open| bool::from(open.as_bytes().ct_eq(token.as_bytes())));
        if !token_matches {
            return Err(EngineError::InvalidApprovalToken(format!(
                "the token does not match an approval request of {stage}/{action}"
            )));
        }
        let rejected_before = run
            .error
            .as_ref()
            .is_some_and(|e| e.code == APPROVAL_REJECTED);
        match run.status {
            ActionStatus::InProgress if !execution.status.is_terminal() => {}
            ActionStatus::Succeeded => {
                return Err(EngineError::ApprovalAlreadyCompleted(format!(
                    "{stage}/{action} was already approved"
                )));
            }
            ActionStatus::Failed if rejected_before => {
                return Err(EngineError::ApprovalAlreadyCompleted(format!(
                    "{stage}/{action} was already rejected"
                )));
            }
            // Timed out, abandoned or cancelled: the request has expired.
            _ => {
                return Err(EngineError::InvalidApprovalToken(format!(
                    "the approval request of {stage}/{action} has expired"
                )));
            }
        }
        if approved {
            let now = self.now;
            let Some(execution) = self.executions.get_mut(execution_id) else {
                return Ok(false);
            };
            let Some(declaration) = self.declarations.get(&execution.pipeline_version) else {
                return Ok(false);
            };
            let run = &mut execution.stages[si].actions[ai];
            run.status = ActionStatus::Succeeded;
            run.updated_at = Some(now);
            run.external.summary = Some(summary).filter(|s| !s.is_empty());
            run.last_updated_by = decided_by;
            execution.last_update_time = now;
            self.effects.push(events::action_event(
                declaration,
                execution,
                si,
                ai,
                state::SUCCEEDED,
                now,
            ));
        } else {
            let error = ErrorDetails {
                code: APPROVAL_REJECTED.to_string(),
                message: summary.clone(),
            };
            let external = ExternalExecution {
                summary: Some(summary).filter(|s| !s.is_empty()),
                ..Default::default()
            };
            self.fail_action(execution_id, si, ai, error, external);
            if let Some(run) = self
                .executions
                .get_mut(execution_id)
                .map(|e| &mut e.stages[si].actions[ai])
            {
                run.last_updated_by = decided_by;
            }
        }
        Ok(true)
    }

    fn stop(
        &mut self,
        execution_id: &str,
        abandon: bool,
        reason: Option<String>,
    ) -> Result<bool, EngineError> {
        let now = self.now;
        let execution = self.executions.get(execution_id).ok_or_else(|| {
            EngineError::PipelineExecutionNotFound(format!("execution {execution_id} not found"))
        })?;
        if execution.status.is_terminal() {
            return Err(EngineError::NotStoppable(format!(
                "execution {execution_id} is {:?} and cannot be stopped",
                execution.status
            )));
        }
        if execution.status == ExecutionStatus::Stopping {
            let abandoning = execution.stop.as_ref().is_some_and(|s| s.abandon);
            if !abandon || abandoning {
                return Err(EngineError::DuplicatedStop(format!(
                    "execution {execution_id} is already stopping"
                )));
            }
        }
        let position = execution.position;
        let first_request = execution.status == ExecutionStatus::InProgress;
        let Some(execution) = self.executions.get_mut(execution_id) else {
            return Ok(false);
        };
        let reason = reason.or_else(|| execution.stop.as_ref().and_then(|s| s.reason.clone()));
        execution.stop = Some(StopRequest {
            abandon,
            reason,
            requested_at: now,
        });
        execution.last_update_time = now;
        match position {
            Position::Waiting { .. } | Position::Finished => {
                // Between stages nothing runs: the execution stops at once and never enters.
                execution.status = ExecutionStatus::Stopping;
                self.effects
                    .push(events::pipeline_event(execution, state::STOPPING, now));
                execution.status = ExecutionStatus::Stopped;
                execution.position = Position::Finished;
                self.effects
                    .push(events::pipeline_event(execution, state::STOPPED, now));
                remove_waiting(self.waiting, execution_id);
            }
            Position::InStage { stage: si } => {
                execution.status = ExecutionStatus::Stopping;
                if first_request {
                    self.effects
                        .push(events::pipeline_event(execution, state::STOPPING, now));
                    if let Some(stage) = execution.stages.get_mut(si) {
                        stage.status = Some(StageStatus::Stopping);
                        stage.updated_at = Some(now);
                    }
                    self.effects
                        .push(events::stage_event(execution, si, state::STOPPING, now));
                }
                if abandon {
                    self.abandon_running(execution_id, si, state::ABANDONED);
                }
            }
        }
        Ok(true)
    }

    /// Marks every in-progress action of the stage `Abandoned` (stop-and-abandon).
    fn abandon_running(&mut self, execution_id: &str, si: usize, event_state: &str) {
        let Some(stage) = self
            .executions
            .get(execution_id)
            .and_then(|e| e.stages.get(si))
        else {
            return;
        };
        let running: Vec<usize> = (0..stage.actions.len())
            .filter(|&ai| stage.actions[ai].status == ActionStatus::InProgress)
            .collect();
        self.abandon_actions(execution_id, si, &running, event_state);
    }

    /// Marks the actions `Abandoned` and tells the caller to stop waiting for them (their
    /// external work need not be cancelled). `event_state` is `ABANDONED` for a stop and
    /// `CANCELED` for a pipeline update.
    fn abandon_actions(
        &mut self,
        execution_id: &str,
        si: usize,
        actions: &[usize],
        event_state: &str,
    ) {
        let now = self.now;
        let Some(execution) = self.executions.get_mut(execution_id) else {
            return;
        };
        let Some(declaration) = self.declarations.get(&execution.pipeline_version) else {
            return;
        };
        let stage_name = execution.stages[si].name.clone();
        for &ai in actions {
            let run = &mut execution.stages[si].actions[ai];
            run.status = ActionStatus::Abandoned;
            run.updated_at = Some(now);
            let cancel = Effect::Cancel {
                execution_id: execution_id.to_string(),
                stage: stage_name.clone(),
                action: run.name.clone(),
                attempt: run.attempt,
            };
            self.effects.push(events::action_event(
                declaration,
                execution,
                si,
                ai,
                event_state,
                now,
            ));
            self.effects.push(cancel);
        }
    }

    fn retry(
        &mut self,
        execution_id: &str,
        stage: &str,
        mode: StageRetryMode,
    ) -> Result<bool, EngineError> {
        let execution = self.executions.get(execution_id).ok_or_else(|| {
            EngineError::PipelineExecutionNotFound(format!("execution {execution_id} not found"))
        })?;
        let si = execution
            .stages
            .iter()
            .position(|s| s.name == stage)
            .ok_or_else(|| EngineError::StageNotFound(format!("stage {stage} not found")))?;
        if self.latest.get(stage).map(String::as_str) != Some(execution_id) {
            return Err(EngineError::NotLatestExecution(format!(
                "execution {execution_id} is not the latest execution of stage {stage}"
            )));
        }
        let not_retryable =
            |why: &str| EngineError::StageNotRetryable(format!("stage {stage}: {why}"));
        if execution.pipeline_version != self.current_version {
            return Err(not_retryable(
                "the pipeline structure changed since the execution ran",
            ));
        }
        let run = &execution.stages[si];
        let running = run
            .actions
            .iter()
            .any(|a| a.status == ActionStatus::InProgress);
        let has_failed = run
            .actions
            .iter()
            .any(|a| matches!(a.status, ActionStatus::Failed | ActionStatus::Abandoned));
        let retryable = match (execution.status, run.status) {
            (ExecutionStatus::Failed, Some(StageStatus::Failed)) => has_failed,
            (ExecutionStatus::Stopped, Some(StageStatus::Stopped)) => true,
            // FAILED_ACTIONS may be issued before the stage finishes.
            (ExecutionStatus::InProgress, Some(StageStatus::InProgress)) => {
                execution.position == (Position::InStage { stage: si })
                    && has_failed
                    && mode == StageRetryMode::FailedActions
            }
            _ => false,
        };
        if !retryable {
            return Err(not_retryable("the stage has no failed actions to retry"));
        }
        if mode == StageRetryMode::AllActions && running {
            return Err(not_retryable(
                "ALL_ACTIONS needs every action of the stage to be finished",
            ));
        }
        let parallel = execution.execution_mode == ExecutionMode::Parallel;
        if !parallel
            && self
                .locks
                .get(stage)
                .is_some_and(|holder| holder != execution_id)
        {
            return Err(not_retryable("another execution holds the stage"));
        }
        if !parallel {
            self.locks
                .insert(stage.to_string(), execution_id.to_string());
        }
        self.restart_stage(execution_id, si, mode, RetryTrigger::Manual);
        Ok(true)
    }

    /// Cancels what a pipeline update cancels at once: waiting executions of older versions
    /// (not PARALLEL) and their pending Manual approvals. Executions in a stage end in progress.
    fn doom_older_versions(&mut self) {
        let doomed: Vec<String> = self
            .executions
            .values()
            .filter(|e| !e.status.is_terminal() && self.doomed(e))
            .map(|e| e.id.clone())
            .collect();
        for id in doomed {
            let Some(execution) = self.executions.get(&id) else {
                continue;
            };
            match execution.position {
                Position::Waiting { .. } => self.cancel_waiting(&id),
                Position::InStage { stage: si } => {
                    let Some(declaration) = self.declaration(execution.pipeline_version) else {
                        continue;
                    };
                    let approvals: Vec<usize> = execution.stages[si]
                        .actions
                        .iter()
                        .enumerate()
                        .filter(|(ai, a)| {
                            a.status == ActionStatus::InProgress
                                && declaration.stages[si]
                                    .actions
                                    .get(*ai)
                                    .is_some_and(|d| job::is_manual_approval(&d.action_type_id))
                        })
                        .map(|(ai, _)| ai)
                        .collect();
                    if !approvals.is_empty() {
                        self.abandon_actions(&id, si, &approvals, state::CANCELED);
                    }
                }
                Position::Finished => {}
            }
        }
    }

    // ----- progress ------------------------------------------------------------------------

    /// Applies every rule that can fire, until none can.
    fn progress(&mut self) {
        loop {
            let mut changed = false;
            let ids: Vec<String> = self.executions.keys().cloned().collect();
            for id in &ids {
                changed |= self.step(id);
            }
            let stages: Vec<String> = self.waiting.keys().cloned().collect();
            for stage in &stages {
                changed |= self.admit(stage);
            }
            if !changed {
                break;
            }
        }
    }

    /// One rule for one execution, if any applies; `true` when something changed.
    fn step(&mut self, id: &str) -> bool {
        let Some(execution) = self.executions.get(id) else {
            return false;
        };
        if execution.status.is_terminal() {
            return false;
        }
        match execution.position {
            Position::Waiting { .. } => {
                if self.doomed(execution) {
                    self.cancel_waiting(id);
                    return true;
                }
                false
            }
            Position::InStage { stage } => self.step_in_stage(id, stage),
            Position::Finished => false,
        }
    }

    fn step_in_stage(&mut self, id: &str, si: usize) -> bool {
        let Some(execution) = self.executions.get(id) else {
            return false;
        };
        let Some(run) = execution.stages.get(si) else {
            return false;
        };
        let running = run
            .actions
            .iter()
            .any(|a| a.status == ActionStatus::InProgress);
        let failed = run
            .actions
            .iter()
            .any(|a| matches!(a.status, ActionStatus::Failed | ActionStatus::Abandoned));
        let stopping = execution.status == ExecutionStatus::Stopping;
        if stopping || self.doomed(execution) {
            if running {
                return false;
            }
            if stopping {
                self.end_in_stage(id, si, ExecutionStatus::Stopped);
            } else {
                self.end_in_stage(id, si, ExecutionStatus::Cancelled);
            }
            return true;
        }
        if failed {
            if running {
                return false;
            }
            self.stage_failed(id, si);
            return true;
        }
        self.advance_groups(id, si)
    }

    /// Dispatches what is ready in the first group that has not fully succeeded, or completes
    /// the stage when every group has.
    fn advance_groups(&mut self, id: &str, si: usize) -> bool {
        let Some(execution) = self.executions.get(id) else {
            return false;
        };
        let Some(declaration) = self.declaration(execution.pipeline_version) else {
            return false;
        };
        let Some(stage) = declaration.stages.get(si) else {
            return false;
        };
        let run = &execution.stages[si];
        let mut orders: Vec<u32> = stage
            .actions
            .iter()
            .map(|a| a.effective_run_order())
            .collect();
        orders.sort_unstable();
        orders.dedup();
        for order in orders {
            let members: Vec<usize> = (0..stage.actions.len())
                .filter(|&ai| stage.actions[ai].effective_run_order() == order)
                .collect();
            let status = |ai: usize| run.actions.get(ai).map(|a| a.status);
            if members
                .iter()
                .all(|&ai| status(ai) == Some(ActionStatus::Succeeded))
            {
                continue;
            }
            let ready: Vec<usize> = members
                .into_iter()
                .filter(|&ai| status(ai) == Some(ActionStatus::NotStarted))
                .collect();
            if ready.is_empty() {
                return false;
            }
            for ai in ready {
                self.dispatch(id, si, ai);
            }
            return true;
        }
        self.complete_stage(id, si);
        true
    }

    /// Starts the next attempt of an action: `Dispatch` with the resolved job, or an immediate
    /// failure when its configuration or inputs cannot be resolved.
    fn dispatch(&mut self, id: &str, si: usize, ai: usize) {
        let now = self.now;
        let Some(execution) = self.executions.get_mut(id) else {
            return;
        };
        let Some(declaration) = self.declarations.get(&execution.pipeline_version) else {
            return;
        };
        let Some(action) = declaration.stages.get(si).and_then(|s| s.actions.get(ai)) else {
            return;
        };
        let prepared = job::prepare(action, execution);
        let stage_name = execution.stages[si].name.clone();
        let run = &mut execution.stages[si].actions[ai];
        run.attempt += 1;
        run.action_execution_id = Some(job::action_execution_id(
            id,
            &stage_name,
            &run.name,
            run.attempt,
        ));
        run.started_at = Some(now);
        run.updated_at = Some(now);
        run.started_reported = false;
        run.token = None;
        run.last_updated_by = None;
        run.external = ExternalExecution::default();
        run.error = None;
        run.output_artifacts.clear();
        run.output_variables.clear();
        execution.last_update_time = now;
        match prepared {
            Ok(prepared) => {
                run.status = ActionStatus::InProgress;
                run.resolved_configuration = prepared.configuration;
                run.input_artifacts = prepared.input_artifacts;
                run.deadline = Some(now.plus_minutes(job::action_timeout_minutes(action)));
                self.effects.push(events::action_event(
                    declaration,
                    execution,
                    si,
                    ai,
                    state::STARTED,
                    now,
                ));
                if let Some(dispatched) = job::dispatched_job(declaration, execution, si, ai) {
                    self.effects.push(Effect::Dispatch(dispatched));
                }
            }
            Err(error) => {
                run.status = ActionStatus::Failed;
                run.resolved_configuration.clear();
                run.input_artifacts.clear();
                run.deadline = None;
                run.error = Some(error);
                self.effects.push(events::action_event(
                    declaration,
                    execution,
                    si,
                    ai,
                    state::FAILED,
                    now,
                ));
            }
        }
    }

    fn complete_stage(&mut self, id: &str, si: usize) {
        let now = self.now;
        let Some(execution) = self.executions.get_mut(id) else {
            return;
        };
        let stage = &mut execution.stages[si];
        stage.status = Some(StageStatus::Succeeded);
        stage.updated_at = Some(now);
        let name = stage.name.clone();
        execution.last_update_time = now;
        self.effects
            .push(events::stage_event(execution, si, state::SUCCEEDED, now));
        release_lock(self.locks, &name, id);
        self.arrive(id, si + 1);
    }

    /// A stage failed: retried once automatically when it says so, else the execution fails.
    fn stage_failed(&mut self, id: &str, si: usize) {
        let now = self.now;
        let Some(execution) = self.executions.get_mut(id) else {
            return;
        };
        let Some(declaration) = self.declarations.get(&execution.pipeline_version) else {
            return;
        };
        let Some(stage_declaration) = declaration.stages.get(si) else {
            return;
        };
        let stage = &mut execution.stages[si];
        stage.status = Some(StageStatus::Failed);
        stage.updated_at = Some(now);
        let name = stage.name.clone();
        let after_automatic_retry =
            stage.retry.latest_retry_trigger.as_deref() == Some(AUTOMATED_STAGE_RETRY);
        execution.last_update_time = now;
        self.effects
            .push(events::stage_event(execution, si, state::FAILED, now));
        let automatic_mode = stage_declaration
            .on_failure
            .as_ref()
            .filter(|f| f.result == Some(ConditionResult::Retry))
            .map(|f| {
                f.retry_configuration
                    .as_ref()
                    .and_then(|r| r.retry_mode)
                    .unwrap_or(StageRetryMode::FailedActions)
            });
        if let Some(mode) = automatic_mode
            && !after_automatic_retry
        {
            self.restart_stage(id, si, mode, RetryTrigger::Automated);
            return;
        }
        execution.status = ExecutionStatus::Failed;
        execution.status_summary = execution.stages[si].actions.iter().find_map(|a| {
            a.error
                .as_ref()
                .map(|e| format!("{}: {}", a.name, e.message))
        });
        execution.position = Position::Finished;
        self.effects
            .push(events::pipeline_event(execution, state::FAILED, now));
        release_lock(self.locks, &name, id);
    }

    /// Puts the stage back in progress for a retry: FAILED_ACTIONS resets the failed and
    /// abandoned actions, ALL_ACTIONS every action; the reset attempts go to the history and
    /// progress dispatches them again with the next attempt number.
    fn restart_stage(&mut self, id: &str, si: usize, mode: StageRetryMode, trigger: RetryTrigger) {
        let now = self.now;
        let Some(execution) = self.executions.get_mut(id) else {
            return;
        };
        let resumed_execution = execution.status != ExecutionStatus::InProgress;
        execution.attempt += 1;
        execution.status = ExecutionStatus::InProgress;
        execution.status_summary = None;
        execution.stop = None;
        execution.position = Position::InStage { stage: si };
        execution.last_update_time = now;
        let stage = &mut execution.stages[si];
        stage.status = Some(StageStatus::InProgress);
        stage.updated_at = Some(now);
        match trigger {
            RetryTrigger::Manual => {
                stage.retry.manual_stage_retry_attempt += 1;
                stage.retry.latest_retry_trigger = Some(MANUAL_STAGE_RETRY.to_string());
            }
            RetryTrigger::Automated => {
                stage.retry.auto_stage_retry_attempt += 1;
                stage.retry.latest_retry_trigger = Some(AUTOMATED_STAGE_RETRY.to_string());
            }
        }
        stage.retry.last_retry_at = Some(now);
        for action in &mut stage.actions {
            let reset = match mode {
                StageRetryMode::FailedActions => {
                    matches!(
                        action.status,
                        ActionStatus::Failed | ActionStatus::Abandoned
                    )
                }
                StageRetryMode::AllActions => action.attempt > 0,
            };
            if reset {
                archive_and_reset(action);
            }
        }
        if resumed_execution || trigger == RetryTrigger::Manual {
            self.effects
                .push(events::pipeline_event(execution, state::RESUMED, now));
        }
        self.effects
            .push(events::stage_event(execution, si, state::RESUMED, now));
    }

    /// Ends an execution inside a stage: `Stopped` after a stop, `Cancelled` after an update.
    fn end_in_stage(&mut self, id: &str, si: usize, status: ExecutionStatus) {
        let now = self.now;
        let Some(execution) = self.executions.get_mut(id) else {
            return;
        };
        let (stage_status, event_state) = match status {
            ExecutionStatus::Stopped => (StageStatus::Stopped, state::STOPPED),
            _ => (StageStatus::Cancelled, state::CANCELED),
        };
        let stage = &mut execution.stages[si];
        stage.status = Some(stage_status);
        stage.updated_at = Some(now);
        let name = stage.name.clone();
        execution.status = status;
        execution.position = Position::Finished;
        execution.last_update_time = now;
        self.effects
            .push(events::stage_event(execution, si, event_state, now));
        self.effects
            .push(events::pipeline_event(execution, event_state, now));
        release_lock(self.locks, &name, id);
    }

    fn cancel_waiting(&mut self, id: &str) {
        let now = self.now;
        let Some(execution) = self.executions.get_mut(id) else {
            return;
        };
        execution.status = ExecutionStatus::Cancelled;
        execution.position = Position::Finished;
        execution.last_update_time = now;
        self.effects
            .push(events::pipeline_event(execution, state::CANCELED, now));
        remove_waiting(self.waiting, id);
    }

    /// The execution finished stage `index - 1` (or starts, at 0): it succeeds after the last
    /// stage, else waits in front of stage `index`, superseding the SUPERSEDED execution that
    /// already waits there. Admission happens in `progress`.
    fn arrive(&mut self, id: &str, index: usize) {
        let now = self.now;
        let Some(execution) = self.executions.get_mut(id) else {
            return;
        };
        let Some(declaration) = self.declarations.get(&execution.pipeline_version) else {
            return;
        };
        execution.last_update_time = now;
        let Some(stage) = declaration.stages.get(index) else {
            execution.status = ExecutionStatus::Succeeded;
            execution.position = Position::Finished;
            self.effects
                .push(events::pipeline_event(execution, state::SUCCEEDED, now));
            return;
        };
        execution.position = Position::Waiting { stage: index };
        if execution.execution_mode == ExecutionMode::Superseded {
            let overtaken: Vec<String> = self
                .waiting
                .get(&stage.name)
                .into_iter()
                .flatten()
                .filter(|other| {
                    other.as_str() != id
                        && self
                            .executions
                            .get(other.as_str())
                            .is_some_and(|o| o.execution_mode == ExecutionMode::Superseded)
                })
                .cloned()
                .collect();
            for other in overtaken {
                self.supersede(&other);
            }
        }
        self.waiting
            .entry(stage.name.clone())
            .or_default()
            .push(id.to_string());
    }

    fn supersede(&mut self, id: &str) {
        let now = self.now;
        let Some(execution) = self.executions.get_mut(id) else {
            return;
        };
        execution.status = ExecutionStatus::Superseded;
        execution.position = Position::Finished;
        execution.last_update_time = now;
        self.effects
            .push(events::pipeline_event(execution, state::SUPERSEDED, now));
        remove_waiting(self.waiting, id);
    }

    /// Lets waiting executions into a stage whose inbound transition is enabled: every
    /// PARALLEL one, and the first SUPERSEDED/QUEUED one in arrival order if the lock is free.
    fn admit(&mut self, stage_name: &str) -> bool {
        if self.disabled.contains_key(stage_name) {
            return false;
        }
        let candidates = self.waiting.get(stage_name).cloned().unwrap_or_default();
        let mut entered = false;
        for id in candidates {
            let Some(execution) = self.executions.get(&id) else {
                continue;
            };
            let Position::Waiting { stage: index } = execution.position else {
                continue;
            };
            let parallel = execution.execution_mode == ExecutionMode::Parallel;
            if !parallel && self.locks.contains_key(stage_name) {
                continue;
            }
            if !parallel {
                self.locks.insert(stage_name.to_string(), id.clone());
            }
            self.enter(&id, index);
            entered = true;
        }
        entered
    }

    fn enter(&mut self, id: &str, index: usize) {
        let now = self.now;
        remove_waiting(self.waiting, id);
        let Some(execution) = self.executions.get_mut(id) else {
            return;
        };
        execution.position = Position::InStage { stage: index };
        execution.last_update_time = now;
        let Some(stage) = execution.stages.get_mut(index) else {
            return;
        };
        stage.status = Some(StageStatus::InProgress);
        stage.entered_at = Some(now);
        stage.updated_at = Some(now);
        self.latest.insert(stage.name.clone(), id.to_string());
        self.effects
            .push(events::stage_event(execution, index, state::STARTED, now));
    }
}

fn new_action_run(name: &str) -> ActionRun {
    ActionRun {
        name: name.to_string(),
        status: ActionStatus::NotStarted,
        attempt: 0,
        action_execution_id: None,
        started_at: None,
        updated_at: None,
        deadline: None,
        started_reported: false,
        token: None,
        last_updated_by: None,
        external: ExternalExecution::default(),
        error: None,
        resolved_configuration: BTreeMap::new(),
        input_artifacts: Vec::new(),
        output_artifacts: Vec::new(),
        output_variables: BTreeMap::new(),
        history: Vec::new(),
    }
}

/// Moves the current attempt into the history and makes the action ready to run again.
fn archive_and_reset(action: &mut ActionRun) {
    if action.attempt > 0 {
        action.history.push(ActionAttemptRecord {
            attempt: action.attempt,
            action_execution_id: action.action_execution_id.take().unwrap_or_default(),
            status: action.status,
            started_at: action.started_at.unwrap_or_default(),
            updated_at: action.updated_at.or(action.started_at).unwrap_or_default(),
            resolved_configuration: std::mem::take(&mut action.resolved_configuration),
            input_artifacts: std::mem::take(&mut action.input_artifacts),
            output_artifacts: std::mem::take(&mut action.output_artifacts),
            output_variables: std::mem::take(&mut action.output_variables),
            external: std::mem::take(&mut action.external),
            error: action.error.take(),
        });
    }
    action.status = ActionStatus::NotStarted;
    action.action_execution_id = None;
    action.started_at = None;
    action.updated_at = None;
    action.deadline = None;
    action.started_reported = false;
    action.token = None;
    action.last_updated_by = None;
}

fn merge_external(into: &mut ExternalExecution, from: ExternalExecution) {
    if from.id.is_some() {
        into.id = from.id;
    }
    if from.summary.is_some() {
        into.summary = from.summary;
    }
    if from.url.is_some() {
        into.url = from.url;
    }
}

fn release_lock(locks: &mut BTreeMap<String, String>, stage: &str, id: &str) {
    if locks.get(stage).is_some_and(|holder| holder == id) {
        locks.remove(stage);
    }
}

fn remove_waiting(waiting: &mut BTreeMap<String, Vec<String>>, id: &str) {
    for ids in waiting.values_mut() {
        ids.retain(|w| w != id);
    }
}

/// The execution's pipeline variables: declared defaults overridden by the start request
/// (SEMANTICS rule 70). Overriding an undeclared variable, an empty value, or a declared
/// variable left without any value is refused.
fn pipeline_variables(
    declaration: &PipelineDeclaration,
    overrides: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, EngineError> {
    let declared = declaration.variables.as_deref().unwrap_or_default();
    for (name, value) in overrides {
        if !declared.iter().any(|d| d.name == *name) {
            return Err(EngineError::Validation(format!(
                "variables.{name}: the pipeline declares no variable named {name}"
            )));
        }
        if value.is_empty() {
            return Err(EngineError::Validation(format!(
                "variables.{name}: the value is empty"
            )));
        }
    }
    declared
        .iter()
        .map(|d| {
            overrides
                .get(&d.name)
                .or(d.default_value.as_ref())
                .map(|value| (d.name.clone(), value.clone()))
                .ok_or_else(|| {
                    EngineError::Validation(format!(
                        "variables.{}: the variable has no default value and none was given",
                        d.name
                    ))
                })
        })
        .collect()
}
