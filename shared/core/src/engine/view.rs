//! Read-only questions about a [`PipelineState`], for the control plane (`GetPipelineState`,
//! `GetPipelineExecution`) and the sweeper.

use super::job;
use super::types::{
    ActionJob, ActionStatus, Execution, PipelineState, Position, StageRun, Timestamp,
};
use crate::model::PipelineDeclaration;

impl PipelineState {
    /// The declaration new executions start on.
    pub fn current_declaration(&self) -> Option<&PipelineDeclaration> {
        self.declarations.get(&self.current_version)
    }

    /// The declaration an execution runs on (its own version, which may be older).
    pub fn declaration_of(&self, execution: &Execution) -> Option<&PipelineDeclaration> {
        self.declarations.get(&execution.pipeline_version)
    }

    /// The latest execution that entered the stage (`GetPipelineState`'s `latestExecution`);
    /// the only one `RetryStageExecution` accepts for it.
    pub fn latest_stage_execution(&self, stage: &str) -> Option<&Execution> {
        self.executions.get(self.stage_latest.get(stage)?)
    }

    /// Executions waiting in front of the stage, in arrival order (`inboundExecutions`).
    pub fn inbound_executions(&self, stage: &str) -> Vec<&Execution> {
        self.waiting
            .get(stage)
            .into_iter()
            .flatten()
            .filter_map(|id| self.executions.get(id))
            .collect()
    }

    /// The execution holding the stage's lock (SUPERSEDED and QUEUED mode).
    pub fn stage_lock_holder(&self, stage: &str) -> Option<&Execution> {
        self.executions.get(self.stage_locks.get(stage)?)
    }

    /// Whether the stage's inbound transition lets executions in.
    pub fn is_transition_enabled(&self, stage: &str) -> bool {
        !self.disabled_transitions.contains_key(stage)
    }

    /// Executions that have not finished.
    pub fn live_executions(&self) -> impl Iterator<Item = &Execution> {
        self.executions.values().filter(|e| !e.status.is_terminal())
    }

    /// Every in-progress attempt whose deadline is at or before `now`: the sweeper sends
    /// `ActionTimedOut` for each, as (execution id, stage, action, attempt).
    pub fn overdue_attempts(&self, now: Timestamp) -> Vec<(String, String, String, u32)> {
        let mut overdue = Vec::new();
        for execution in self.live_executions() {
            for stage in &execution.stages {
                for action in &stage.actions {
                    if action.status == ActionStatus::InProgress
                        && action.deadline.is_some_and(|deadline| deadline <= now)
                    {
                        overdue.push((
                            execution.id.clone(),
                            stage.name.clone(),
                            action.name.clone(),
                            action.attempt,
                        ));
                    }
                }
            }
        }
        overdue
    }

    /// The jobs of every in-progress attempt that no dispatcher has reported started: the
    /// sweeper publishes them again in case their first publish was lost (a dispatcher claims
    /// an attempt before running it, so a second delivery is harmless).
    pub fn unclaimed_jobs(&self) -> Vec<ActionJob> {
        let mut jobs = Vec::new();
        for execution in self.live_executions() {
            let Some(declaration) = self.declaration_of(execution) else {
                continue;
            };
            for (si, stage) in execution.stages.iter().enumerate() {
                for (ai, action) in stage.actions.iter().enumerate() {
                    if action.status == ActionStatus::InProgress && !action.started_reported {
                        jobs.extend(job::dispatched_job(declaration, execution, si, ai));
                    }
                }
            }
        }
        jobs
    }
}

impl Execution {
    /// The index of a stage of this execution's version, by name.
    pub fn stage_index(&self, stage: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == stage)
    }

    /// The stage the execution is in, if it is inside one.
    pub fn current_stage(&self) -> Option<&StageRun> {
        match self.position {
            Position::InStage { stage } => self.stages.get(stage),
            Position::Waiting { .. } | Position::Finished => None,
        }
    }
}
