//! Sweep: the periodic pass that makes every crash point recoverable. For each pipeline with
//! live work it re-publishes an outbox whose publish was lost, times out overdue attempts,
//! schedules again attempts nobody claimed, and asks providers about external work they handed
//! off (remote builds). The embedded runtime runs it on a timer; on AWS a scheduled event
//! invokes it in the advancer.

use std::sync::Arc;

use async_trait::async_trait;
use penstock_core::engine::{
    ActionJob, ActionStatus, ErrorDetails, Input, PipelineState, Timestamp, dispatched_job,
};
use tracing::{debug, info, warn};

use crate::advance::Engine;
use crate::error::AppError;
use crate::ports::{BusMessage, Envelope, Polled, ProviderRegistry};
use crate::repo::Claim;

/// How old things must be before the sweep acts on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepSettings {
    /// An outbox older than this is published again (its writer is taken to have crashed).
    pub stale_outbox_ms: i64,
    /// An in-progress attempt unclaimed for this long is scheduled again.
    pub unclaimed_attempt_ms: i64,
}

/// What to do about an attempt another owner claimed but never reported started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignClaim {
    /// It may still be running: leave it to its owner, or to its deadline.
    Wait,
    /// Its owner is known to be gone: fail the attempt as interrupted and retry the action as
    /// a new attempt (the attempt itself never runs twice).
    Interrupted,
}

/// Runtime-specific decisions of the sweep.
#[async_trait]
pub trait SweepHooks: Send + Sync {
    /// An attempt claimed by `claim.owner`, not by the sweeping runtime. The default waits:
    /// on AWS another function instance may be running it, and its deadline bounds the wait.
    async fn foreign_claim(&self, job: &ActionJob, claim: &Claim) -> ForeignClaim {
        let _ = (job, claim);
        ForeignClaim::Wait
    }
}

/// Hooks that always wait for foreign claims.
pub struct WaitForOwners;

impl SweepHooks for WaitForOwners {}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub pipelines: usize,
    pub republished_outboxes: usize,
    pub timed_out: usize,
    pub rescheduled: usize,
    pub interrupted: usize,
    /// External work found finished and reported.
    pub polled_finished: usize,
    /// Pipelines whose sweep failed (logged; the next sweep tries again).
    pub failed: usize,
}

/// The sweep use case.
#[derive(Clone)]
pub struct Sweeper {
    pub engine: Engine,
    /// The claim owner of the runtime sweeping (claims by anyone else are foreign).
    pub owner: String,
    /// Providers to poll for pending external work, when the runtime has pollable ones.
    pub providers: Option<Arc<dyn ProviderRegistry>>,
    pub settings: SweepSettings,
}

impl Sweeper {
    /// Sweep every pipeline with live work. `everything_stale` treats every outbox and
    /// unclaimed attempt as stale (the first sweep after a restart: their writers are gone).
    pub async fn sweep(
        &self,
        everything_stale: bool,
        hooks: &dyn SweepHooks,
    ) -> Result<SweepReport, AppError> {
        let mut report = SweepReport::default();
        for pipeline in self.engine.repo.active_pipelines().await? {
            report.pipelines += 1;
            if let Err(e) = self
                .sweep_pipeline(&pipeline, everything_stale, hooks, &mut report)
                .await
            {
                warn!(pipeline, error = %e, "sweeping a pipeline failed; the next sweep tries again");
                report.failed += 1;
            }
        }
        Ok(report)
    }

    async fn sweep_pipeline(
        &self,
        pipeline: &str,
        everything_stale: bool,
        hooks: &dyn SweepHooks,
        report: &mut SweepReport,
    ) -> Result<(), AppError> {
        let engine = &self.engine;
        let age = if everything_stale {
            0
        } else {
            self.settings.stale_outbox_ms
        };
        // One read serves the whole pass: publishing the outbox changes no state.
        let runtime = engine.repo.load_runtime(pipeline).await?;
        let now = engine.clock.now();
        if runtime
            .value
            .outbox_since
            .is_some_and(|since| now.0 - since.0 >= age)
        {
            engine.flush_outbox(pipeline, runtime.clone()).await;
            report.republished_outboxes += 1;
        }
        let state = &runtime.value.state;
        for (execution_id, stage, action, attempt) in state.overdue_attempts(now) {
            engine
                .apply(
                    pipeline,
                    Input::ActionTimedOut {
                        execution_id,
                        stage,
                        action,
                        attempt,
                    },
                )
                .await?;
            report.timed_out += 1;
        }
        for job in state.unclaimed_jobs() {
            if job.deadline <= now {
                continue;
            }
            match engine.repo.get_claim(&job.action_execution_id).await? {
                Some(claim) if claim.owner != self.owner => {
                    if hooks.foreign_claim(&job, &claim).await == ForeignClaim::Interrupted {
                        self.interrupted(pipeline, &job).await?;
                        report.interrupted += 1;
                    }
                }
                Some(_) => {}
                None => {
                    let since = attempt_updated(state, &job).unwrap_or(now);
                    if everything_stale || now.0 - since.0 >= self.settings.unclaimed_attempt_ms {
                        debug!(pipeline, action = %job.action, "scheduling an unclaimed attempt again");
                        engine
                            .bus
                            .publish(vec![Envelope {
                                id: engine.ids.uuid(),
                                message: BusMessage::ActionScheduled(job),
                            }])
                            .await?;
                        report.rescheduled += 1;
                    }
                }
            }
        }
        if let Some(providers) = &self.providers {
            for job in handed_off_jobs(state, now) {
                let Some(provider) = providers.provider_for(&job.action_type_id) else {
                    continue;
                };
                let external = external_of(state, &job).unwrap_or_default();
                if let Some(Polled::Finished(input)) = provider.poll(&job, &external).await {
                    info!(pipeline, action = %job.action, attempt = job.attempt, "external work finished");
                    engine.apply(pipeline, input).await?;
                    report.polled_finished += 1;
                }
            }
        }
        Ok(())
    }

    /// Fail an interrupted attempt and retry its stage's failed actions as new attempts.
    async fn interrupted(&self, pipeline: &str, job: &ActionJob) -> Result<(), AppError> {
        let engine = &self.engine;
        info!(
            pipeline,
            execution_id = %job.execution_id,
            stage = %job.stage,
            action = %job.action,
            attempt = job.attempt,
            "attempt interrupted by its runner's exit; retrying it as a new attempt"
        );
        engine
            .apply(
                pipeline,
                Input::ActionFailed {
                    execution_id: job.execution_id.clone(),
                    stage: job.stage.clone(),
                    action: job.action.clone(),
                    attempt: job.attempt,
                    error: ErrorDetails {
                        code: "JobInterrupted".into(),
                        message: "penstock stopped while this attempt ran; it was not run again"
                            .into(),
                    },
                    external: Default::default(),
                },
            )
            .await?;
        if let Err(e) = engine
            .apply(
                pipeline,
                Input::Retry {
                    execution_id: job.execution_id.clone(),
                    stage: job.stage.clone(),
                    mode: penstock_core::model::StageRetryMode::FailedActions,
                },
            )
            .await
        {
            info!(pipeline, error = %e, "interrupted attempt left failed (not retryable)");
        }
        Ok(())
    }
}

/// When the current attempt of the job's action last changed.
pub fn attempt_updated(state: &PipelineState, job: &ActionJob) -> Option<Timestamp> {
    let action = action_run(state, job)?;
    action.updated_at.or(action.started_at)
}

fn action_run<'s>(
    state: &'s PipelineState,
    job: &ActionJob,
) -> Option<&'s penstock_core::engine::ActionRun> {
    let execution = state.executions.get(&job.execution_id)?;
    let stage = execution.stages.iter().find(|s| s.name == job.stage)?;
    stage.actions.iter().find(|a| a.name == job.action)
}

fn external_of(
    state: &PipelineState,
    job: &ActionJob,
) -> Option<penstock_core::engine::ExternalExecution> {
    action_run(state, job).map(|action| action.external.clone())
}

/// Jobs of in-progress attempts a dispatcher reported started and handed off (they carry an
/// external id), not yet past their deadline (the timeout settles those).
fn handed_off_jobs(state: &PipelineState, now: Timestamp) -> Vec<ActionJob> {
    let mut jobs = Vec::new();
    for execution in state.live_executions() {
        let Some(declaration) = state.declaration_of(execution) else {
            continue;
        };
        for (si, stage) in execution.stages.iter().enumerate() {
            for (ai, action) in stage.actions.iter().enumerate() {
                if action.status == ActionStatus::InProgress
                    && action.started_reported
                    && action.token.is_none()
                    && action.external.id.is_some()
                    && action.deadline.is_some_and(|deadline| deadline > now)
                {
                    jobs.extend(dispatched_job(declaration, execution, si, ai));
                }
            }
        }
    }
    jobs
}
