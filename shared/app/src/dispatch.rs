//! Dispatch: claim an action attempt, fetch its input artifacts, run its provider, store its
//! output artifacts and report the result to the engine.
//!
//! Architecture Invariant: an attempt runs at most once. The claim is a conditional create of
//! the attempt's claim item; whoever loses the race (a redelivered `ActionScheduled`, a second
//! dispatcher) does nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use penstock_core::engine::{
    ActionJob, ActionStatus, ArtifactRef, ErrorDetails, ExternalExecution, Input,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::advance::Engine;
use crate::error::AppError;
use crate::ports::{Archiver, ArtifactStore, JobContext, ProviderOutcome, ProviderRegistry};
use crate::repo::Claim;

/// Attempts running in this process, so an abandon can cancel them.
type Running = Arc<Mutex<BTreeMap<(String, String, String, u32), CancellationToken>>>;

#[derive(Clone)]
pub struct Dispatcher {
    pub engine: Engine,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub archiver: Arc<dyn Archiver>,
    pub providers: Arc<dyn ProviderRegistry>,
    /// Identifies this dispatcher in claims (a process or Lambda invocation id).
    pub owner: String,
    /// Where attempts get their scratch directories.
    pub work_root: PathBuf,
    running: Running,
}

/// What became of one `ActionScheduled` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchResult {
    /// The attempt ran (or was handed off) and its result was reported.
    Ran,
    /// Someone else holds the claim: a duplicate delivery.
    AlreadyClaimed,
    /// The attempt is no longer current (stopped, superseded, retried): nothing to do.
    Stale,
}

impl Dispatcher {
    pub fn new(
        engine: Engine,
        artifacts: Arc<dyn ArtifactStore>,
        archiver: Arc<dyn Archiver>,
        providers: Arc<dyn ProviderRegistry>,
        owner: String,
        work_root: PathBuf,
    ) -> Self {
        Self {
            engine,
            artifacts,
            archiver,
            providers,
            owner,
            work_root,
            running: Arc::default(),
        }
    }

    /// Whether the attempt is still the current, in-progress attempt of its action.
    async fn is_current(&self, job: &ActionJob) -> Result<bool, AppError> {
        let runtime = self.engine.repo.load_runtime(&job.pipeline_name).await?;
        let Some(execution) = runtime.value.state.executions.get(&job.execution_id) else {
            return Ok(false);
        };
        let action = execution
            .stages
            .iter()
            .find(|s| s.name == job.stage)
            .and_then(|s| s.actions.iter().find(|a| a.name == job.action));
        Ok(
            action
                .is_some_and(|a| a.attempt == job.attempt && a.status == ActionStatus::InProgress),
        )
    }

    /// Handle one `ActionScheduled` message.
    pub async fn dispatch(&self, job: ActionJob) -> Result<DispatchResult, AppError> {
        if !self.is_current(&job).await? {
            return Ok(DispatchResult::Stale);
        }
        let claim = Claim {
            owner: self.owner.clone(),
            claimed_at: self.engine.clock.now(),
            pipeline: job.pipeline_name.clone(),
            execution_id: job.execution_id.clone(),
            stage: job.stage.clone(),
            action: job.action.clone(),
            attempt: job.attempt,
        };
        if !self
            .engine
            .repo
            .claim_attempt(&job.action_execution_id, &claim)
            .await?
        {
            return Ok(DispatchResult::AlreadyClaimed);
        }
        info!(
            pipeline = %job.pipeline_name,
            execution_id = %job.execution_id,
            stage = %job.stage,
            action = %job.action,
            attempt = job.attempt,
            "action attempt claimed"
        );
        let key = running_key(&job);
        let cancel = CancellationToken::new();
        self.running
            .lock()
            .map_err(|_| AppError::Internal("running-attempts lock poisoned".into()))?
            .insert(key.clone(), cancel.clone());
        let input = self.run_claimed(&job, cancel).await;
        if let Ok(mut running) = self.running.lock() {
            running.remove(&key);
        }
        self.engine.apply(&job.pipeline_name, input).await?;
        Ok(DispatchResult::Ran)
    }

    /// Cancel a running attempt (after an abandon); harmless when it is not running here.
    pub fn cancel(&self, execution_id: &str, stage: &str, action: &str, attempt: u32) {
        let key = (
            execution_id.to_string(),
            stage.to_string(),
            action.to_string(),
            attempt,
        );
        if let Ok(running) = self.running.lock()
            && let Some(token) = running.get(&key)
        {
            token.cancel();
        }
    }

    /// Run a claimed attempt and turn whatever happens into the engine input that reports it.
    async fn run_claimed(&self, job: &ActionJob, cancel: CancellationToken) -> Input {
        let work_dir = self.work_root.join(&job.action_execution_id);
        let result = self.run_in(job, &work_dir, cancel).await;
        if let Err(e) = tokio::fs::remove_dir_all(&work_dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(dir = %work_dir.display(), error = %e, "could not remove work directory");
        }
        match result {
            Ok(input) => input,
            Err(message) => failed(job, "JobFailed", message, ExternalExecution::default()),
        }
    }

    async fn run_in(
        &self,
        job: &ActionJob,
        work_dir: &std::path::Path,
        cancel: CancellationToken,
    ) -> Result<Input, String> {
        let Some(provider) = self.providers.provider_for(&job.action_type_id) else {
            return Ok(failed(
                job,
                "ProviderNotSupported",
                format!(
                    "action provider {}/{}/{} version {} is not supported on this runtime",
                    job.action_type_id.category.as_str(),
                    job.action_type_id.owner.as_str(),
                    job.action_type_id.provider,
                    job.action_type_id.version
                ),
                ExternalExecution::default(),
            ));
        };
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        tokio::fs::create_dir_all(work_dir)
            .await
            .map_err(|e| io("creating the work directory", e))?;

        let mut inputs = Vec::new();
        for (index, artifact) in job.input_artifacts.iter().enumerate() {
            let zip = work_dir.join(format!("input-{index}.zip"));
            let dir = work_dir.join("inputs").join(&artifact.name);
            self.artifacts
                .get(&artifact.location, &zip)
                .await
                .map_err(|e| format!("input artifact {}: {e}", artifact.name))?;
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| io("creating an input directory", e))?;
            let archiver = self.archiver.clone();
            let (zip_path, dir_path) = (zip.clone(), dir.clone());
            tokio::task::spawn_blocking(move || archiver.unpack(&zip_path, &dir_path))
                .await
                .map_err(|e| format!("unpacking input artifact {}: {e}", artifact.name))?
                .map_err(|e| format!("input artifact {}: {e}", artifact.name))?;
            let _ = tokio::fs::remove_file(&zip).await;
            inputs.push((artifact.clone(), dir));
        }
        let mut outputs = Vec::new();
        for name in &job.output_artifacts {
            let dir = work_dir.join("outputs").join(name);
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| io("creating an output directory", e))?;
            outputs.push((name.clone(), dir));
        }
        let ctx = JobContext {
            job: job.clone(),
            work_dir: work_dir.to_path_buf(),
            inputs,
            outputs,
            cancel,
        };
        let outcome = provider.run(&ctx).await;
        match outcome {
            ProviderOutcome::Succeeded {
                output_variables,
                revisions,
                external,
            } => {
                let mut stored = Vec::new();
                for (name, dir) in &ctx.outputs {
                    let zip = work_dir.join(format!("output-{name}.zip"));
                    let archiver = self.archiver.clone();
                    let (dir_path, zip_path) = (dir.clone(), zip.clone());
                    tokio::task::spawn_blocking(move || archiver.pack(&dir_path, &zip_path))
                        .await
                        .map_err(|e| format!("packing output artifact {name}: {e}"))?
                        .map_err(|e| format!("packing output artifact {name}: {e}"))?;
                    let key = artifact_key(job, name);
                    let location = self
                        .artifacts
                        .put(job.artifact_store.as_ref(), &key, &zip)
                        .await
                        .map_err(|e| format!("storing output artifact {name}: {e}"))?;
                    let revision = revisions.get(name);
                    stored.push(ArtifactRef {
                        name: name.clone(),
                        location,
                        revision_id: revision.map(|(id, _)| id.clone()),
                        revision_summary: revision.and_then(|(_, summary)| summary.clone()),
                    });
                }
                Ok(Input::ActionSucceeded {
                    execution_id: job.execution_id.clone(),
                    stage: job.stage.clone(),
                    action: job.action.clone(),
                    attempt: job.attempt,
                    output_artifacts: stored,
                    output_variables,
                    external,
                })
            }
            ProviderOutcome::Failed {
                code,
                message,
                external,
            } => Ok(failed(job, &code, message, external)),
            ProviderOutcome::Pending {
                external,
                approval_token,
            } => Ok(Input::ActionStarted {
                execution_id: job.execution_id.clone(),
                stage: job.stage.clone(),
                action: job.action.clone(),
                attempt: job.attempt,
                external,
                approval_token,
            }),
        }
    }
}

fn running_key(job: &ActionJob) -> (String, String, String, u32) {
    (
        job.execution_id.clone(),
        job.stage.clone(),
        job.action.clone(),
        job.attempt,
    )
}

fn failed(job: &ActionJob, code: &str, message: String, external: ExternalExecution) -> Input {
    Input::ActionFailed {
        execution_id: job.execution_id.clone(),
        stage: job.stage.clone(),
        action: job.action.clone(),
        attempt: job.attempt,
        error: ErrorDetails {
            code: code.to_string(),
            message,
        },
        external,
    }
}

/// Where an output artifact is stored: unique per attempt, so a retry never overwrites the
/// artifact an earlier attempt produced.
pub fn artifact_key(job: &ActionJob, artifact: &str) -> String {
    format!(
        "{}/{}/{}/{artifact}.zip",
        job.pipeline_name, job.execution_id, job.action_execution_id
    )
}
