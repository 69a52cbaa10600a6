//! The control use cases behind CodePipeline's API and the CLI: pipelines (create, update,
//! get, list, delete, tags), executions (start, stop, retry), approvals and transitions, and
//! the reads they need. Validation of declarations happens here, so no caller can store an
//! invalid pipeline.

use std::collections::BTreeMap;

use penstock_core::engine::{
    Execution, Input, PipelineState, SourceRevision, StartRequest, Trigger, TriggerType,
};
use penstock_core::model::{PipelineDeclaration, StageRetryMode, Tag};
use serde_json::json;

use crate::advance::{Applied, Engine};
use crate::error::AppError;
use crate::repo::{PipelineRecord, RuntimeDocument, Versioned};

/// How long a `clientRequestToken` is remembered (CodePipeline documents no figure; a day
/// covers every client retry policy).
const START_TOKEN_TTL_SECONDS: i64 = 24 * 3600;

/// Options of `StartPipelineExecution`.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub variables: BTreeMap<String, String>,
    pub source_revisions: Vec<SourceRevision>,
    pub client_request_token: Option<String>,
    /// Who or what starts it; `StartPipelineExecution` by default.
    pub trigger: Option<Trigger>,
}

/// The control use cases, on top of the shared [`Engine`].
#[derive(Clone)]
pub struct Control {
    pub engine: Engine,
}

impl Control {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// `CreatePipeline`: stores version 1 (whatever `version` the caller sent).
    pub async fn create_pipeline(
        &self,
        mut declaration: PipelineDeclaration,
        tags: Vec<Tag>,
    ) -> Result<PipelineRecord, AppError> {
        check(&declaration)?;
        declaration.version = Some(1);
        let now = self.engine.clock.now();
        let record = PipelineRecord {
            declaration,
            tags,
            created: now,
            updated: now,
        };
        self.engine.repo.create_pipeline(&record).await?;
        Ok(record)
    }

    /// `UpdatePipeline`: stores the declaration as the next version and tells the engine, which
    /// cancels or keeps running executions per the execution mode rules.
    pub async fn update_pipeline(
        &self,
        mut declaration: PipelineDeclaration,
    ) -> Result<PipelineRecord, AppError> {
        check(&declaration)?;
        for _ in 0..10 {
            let current = self.engine.repo.get_pipeline(&declaration.name).await?;
            let version = current.value.declaration.version.unwrap_or(1) + 1;
            declaration.version = Some(version);
            let next = PipelineRecord {
                declaration: declaration.clone(),
                tags: current.value.tags.clone(),
                created: current.value.created,
                updated: self.engine.clock.now(),
            };
            match self.engine.repo.put_pipeline_version(&current, &next).await {
                Ok(()) => {
                    self.engine
                        .apply(
                            &declaration.name,
                            Input::PipelineUpdated {
                                declaration: declaration.clone(),
                            },
                        )
                        .await?;
                    return Ok(next);
                }
                Err(AppError::Store(crate::store::StoreError::Conflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AppError::Contended(declaration.name))
    }

    /// Create the pipeline, or update it when the stored declaration differs.
    pub async fn put_pipeline(
        &self,
        declaration: PipelineDeclaration,
        tags: Vec<Tag>,
    ) -> Result<PipelineRecord, AppError> {
        match self.engine.repo.get_pipeline(&declaration.name).await {
            Ok(current) => {
                let mut stored = current.value.declaration.clone();
                stored.version = None;
                let mut wanted = declaration.clone();
                wanted.version = None;
                if stored == wanted {
                    Ok(current.value)
                } else {
                    self.update_pipeline(declaration).await
                }
            }
            Err(AppError::PipelineNotFound(_)) => {
                match self.create_pipeline(declaration.clone(), tags).await {
                    Err(AppError::PipelineNameInUse(_)) => self.update_pipeline(declaration).await,
                    other => other,
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `GetPipeline`, optionally at an older version.
    pub async fn get_pipeline(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<(PipelineDeclaration, PipelineRecord), AppError> {
        let current = self.engine.repo.get_pipeline(name).await?.value;
        let declaration = match version {
            Some(v) if Some(v) != current.declaration.version => {
                self.engine.repo.get_pipeline_version(name, v).await?
            }
            _ => current.declaration.clone(),
        };
        Ok((declaration, current))
    }

    pub async fn delete_pipeline(&self, name: &str) -> Result<(), AppError> {
        self.engine.repo.delete_pipeline(name).await
    }

    /// `StartPipelineExecution`; returns the execution id. A repeated `clientRequestToken`
    /// returns the first execution's id and starts nothing new.
    pub async fn start_execution(
        &self,
        pipeline: &str,
        options: StartOptions,
    ) -> Result<String, AppError> {
        // The pipeline must exist before a token is spent on it.
        self.engine.repo.get_pipeline(pipeline).await?;
        let mut execution_id = self.engine.ids.uuid();
        let mut repeated = false;
        if let Some(token) = &options.client_request_token {
            let expires = self.engine.clock.now().0 / 1000 + START_TOKEN_TTL_SECONDS;
            if let Some(earlier) = self
                .engine
                .repo
                .remember(
                    &format!("start#{pipeline}"),
                    token,
                    &json!({ "pipelineExecutionId": execution_id }),
                    expires,
                )
                .await?
                && let Some(id) = earlier.get("pipelineExecutionId").and_then(|v| v.as_str())
            {
                execution_id = id.to_string();
                repeated = true;
            }
        }
        // A repeated request whose execution already finished (and left the runtime
        // document) must not start it again.
        if repeated
            && self
                .engine
                .repo
                .get_execution_snapshot(&execution_id)
                .await?
                .is_some_and(|e| e.status.is_terminal())
        {
            return Ok(execution_id);
        }
        let trigger = options.trigger.unwrap_or(Trigger {
            trigger_type: TriggerType::StartPipelineExecution,
            trigger_detail: "penstock".into(),
        });
        // Applying the same start again (a retried request) changes nothing.
        self.engine
            .apply(
                pipeline,
                Input::Start(StartRequest {
                    execution_id: execution_id.clone(),
                    trigger,
                    variables: options.variables,
                    source_revisions: options.source_revisions,
                }),
            )
            .await?;
        Ok(execution_id)
    }

    pub async fn stop_execution(
        &self,
        pipeline: &str,
        execution_id: &str,
        abandon: bool,
        reason: Option<String>,
    ) -> Result<Applied, AppError> {
        self.engine
            .apply(
                pipeline,
                Input::Stop {
                    execution_id: execution_id.to_string(),
                    abandon,
                    reason,
                },
            )
            .await
    }

    pub async fn retry_stage(
        &self,
        pipeline: &str,
        stage: &str,
        execution_id: &str,
        mode: StageRetryMode,
    ) -> Result<Applied, AppError> {
        self.engine
            .apply(
                pipeline,
                Input::Retry {
                    execution_id: execution_id.to_string(),
                    stage: stage.to_string(),
                    mode,
                },
            )
            .await
    }

    pub async fn set_transition(
        &self,
        pipeline: &str,
        stage: &str,
        enabled: bool,
        reason: Option<String>,
    ) -> Result<Applied, AppError> {
        let input = if enabled {
            Input::EnableTransition {
                stage: stage.to_string(),
                changed_by: None,
            }
        } else {
            Input::DisableTransition {
                stage: stage.to_string(),
                reason: reason.unwrap_or_default(),
                changed_by: None,
            }
        };
        self.engine.apply(pipeline, input).await
    }

    /// `PutApprovalResult`: the token picks the execution; the engine checks it.
    pub async fn put_approval_result(
        &self,
        pipeline: &str,
        stage: &str,
        action: &str,
        token: &str,
        approved: bool,
        summary: String,
    ) -> Result<Applied, AppError> {
        let runtime = self.engine.repo.load_runtime(pipeline).await?;
        let execution_id = approval_execution(&runtime.value.state, stage, action, token)?;
        self.engine
            .apply(
                pipeline,
                Input::ApprovalDecided {
                    execution_id,
                    stage: stage.to_string(),
                    action: action.to_string(),
                    token: token.to_string(),
                    approved,
                    summary,
                    decided_by: None,
                },
            )
            .await
    }

    /// The runtime document (for state views).
    pub async fn runtime(&self, pipeline: &str) -> Result<Versioned<RuntimeDocument>, AppError> {
        self.engine.repo.load_runtime(pipeline).await
    }

    /// An execution as it is now: live from the runtime document, else its stored snapshot.
    pub async fn get_execution(
        &self,
        pipeline: &str,
        execution_id: &str,
    ) -> Result<Execution, AppError> {
        if let Ok(runtime) = self.engine.repo.load_runtime(pipeline).await
            && let Some(execution) = runtime.value.state.executions.get(execution_id)
        {
            return Ok(execution.clone());
        }
        match self
            .engine
            .repo
            .get_execution_snapshot(execution_id)
            .await?
        {
            Some(execution) if execution.pipeline_name == pipeline => Ok(execution),
            _ => Err(AppError::ExecutionNotFound(format!(
                "execution {execution_id} of pipeline {pipeline} not found"
            ))),
        }
    }

    /// Executions newest first; live ones as they are now.
    pub async fn list_executions(
        &self,
        pipeline: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Execution>, Option<String>), AppError> {
        let (mut executions, next) = self
            .engine
            .repo
            .list_executions(pipeline, after, limit)
            .await?;
        if let Ok(runtime) = self.engine.repo.load_runtime(pipeline).await {
            for execution in &mut executions {
                if let Some(live) = runtime.value.state.executions.get(&execution.id) {
                    *execution = live.clone();
                }
            }
        }
        Ok((executions, next))
    }
}

/// CodePipeline's structural rules; callers that parse JSON check shapes before this.
fn check(declaration: &PipelineDeclaration) -> Result<(), AppError> {
    let findings = penstock_core::validate::check_declaration(declaration, "pipeline");
    if findings.errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::InvalidDeclaration(findings.errors))
    }
}

/// The execution whose approval action `stage.action` holds `token`; when none does, the
/// latest execution of the stage, so the engine answers with the precise refusal.
fn approval_execution(
    state: &PipelineState,
    stage: &str,
    action: &str,
    token: &str,
) -> Result<String, AppError> {
    let declaration = state.declarations.get(&state.current_version);
    let stage_exists = declaration.is_some_and(|d| d.stage(stage).is_some());
    if !stage_exists {
        return Err(penstock_core::engine::EngineError::StageNotFound(format!(
            "stage {stage} not found"
        ))
        .into());
    }
    let action_exists = declaration
        .and_then(|d| d.stage(stage))
        .is_some_and(|s| s.actions.iter().any(|a| a.name == action));
    if !action_exists {
        return Err(penstock_core::engine::EngineError::ActionNotFound(format!(
            "action {action} not found in stage {stage}"
        ))
        .into());
    }
    let holder = state.executions.values().find(|execution| {
        execution
            .stages
            .iter()
            .filter(|s| s.name == stage)
            .flat_map(|s| s.actions.iter())
            .any(|a| a.name == action && a.token.as_deref() == Some(token))
    });
    match holder.or_else(|| {
        state
            .stage_latest
            .get(stage)
            .and_then(|id| state.executions.get(id))
    }) {
        Some(execution) => Ok(execution.id.clone()),
        None => Err(penstock_core::engine::EngineError::InvalidApprovalToken(
            "the approval token is not valid for this action".into(),
        )
        .into()),
    }
}
