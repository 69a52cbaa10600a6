//! The API's output shapes and the pure conversions from the engine's state to them.
//!
//! Each struct is one shape of the CodePipeline service model, member for member; enum values
//! are spelled out here instead of borrowing the engine's serde names, so that a change inside
//! the engine cannot change the wire by accident. Timestamps leave as epoch seconds with a
//! fraction, as awsJson1_1 requires.

use std::collections::{BTreeMap, HashMap};

use penstock_app::repo::PipelineRecord;
use penstock_core::engine::{
    ActionAttemptRecord, ActionRun, ActionStatus, ArtifactRef, ErrorDetails, Execution,
    ExecutionStatus, ExternalExecution, PipelineState, RetryMetadata, StageStatus, Timestamp,
    TriggerType,
};
use penstock_core::model::{
    ActionDeclaration, ExecutionMode, PipelineDeclaration, PipelineType, StageRetryMode,
};
use serde::Serialize;

/// A timestamp on the wire: seconds since the epoch, with milliseconds as the fraction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct EpochSeconds(pub f64);

impl From<Timestamp> for EpochSeconds {
    fn from(t: Timestamp) -> Self {
        EpochSeconds(t.as_epoch_seconds_f64())
    }
}

/// `arn:aws:codepipeline:{region}:{account}:{name}`, CodePipeline's pipeline ARN.
pub fn pipeline_arn(region: &str, account_id: &str, name: &str) -> String {
    format!("arn:aws:codepipeline:{region}:{account_id}:{name}")
}

pub fn execution_status_name(status: ExecutionStatus) -> &'static str {
    match status {
        ExecutionStatus::InProgress => "InProgress",
        ExecutionStatus::Stopping => "Stopping",
        ExecutionStatus::Stopped => "Stopped",
        ExecutionStatus::Succeeded => "Succeeded",
        ExecutionStatus::Superseded => "Superseded",
        ExecutionStatus::Failed => "Failed",
        ExecutionStatus::Cancelled => "Cancelled",
    }
}

pub fn stage_status_name(status: StageStatus) -> &'static str {
    match status {
        StageStatus::InProgress => "InProgress",
        StageStatus::Stopping => "Stopping",
        StageStatus::Stopped => "Stopped",
        StageStatus::Succeeded => "Succeeded",
        StageStatus::Failed => "Failed",
        StageStatus::Cancelled => "Cancelled",
        StageStatus::Skipped => "Skipped",
    }
}

/// `ActionExecutionStatus`; `None` for an action the execution has not reached.
pub fn action_status_name(status: ActionStatus) -> Option<&'static str> {
    match status {
        ActionStatus::NotStarted => None,
        ActionStatus::InProgress => Some("InProgress"),
        ActionStatus::Abandoned => Some("Abandoned"),
        ActionStatus::Succeeded => Some("Succeeded"),
        ActionStatus::Failed => Some("Failed"),
    }
}

/// A stage execution's status as `StageExecutionStatus`, for an execution that is not (yet)
/// inside the stage: waiting in front of it.
fn inbound_status_name(status: ExecutionStatus) -> &'static str {
    match status {
        ExecutionStatus::InProgress => "InProgress",
        ExecutionStatus::Stopping => "Stopping",
        ExecutionStatus::Stopped => "Stopped",
        ExecutionStatus::Succeeded => "Succeeded",
        ExecutionStatus::Failed | ExecutionStatus::Superseded => "Failed",
        ExecutionStatus::Cancelled => "Cancelled",
    }
}

pub fn execution_mode_name(mode: ExecutionMode) -> &'static str {
    match mode {
        ExecutionMode::Queued => "QUEUED",
        ExecutionMode::Superseded => "SUPERSEDED",
        ExecutionMode::Parallel => "PARALLEL",
    }
}

pub fn pipeline_type_name(pipeline_type: PipelineType) -> &'static str {
    match pipeline_type {
        PipelineType::V1 => "V1",
        PipelineType::V2 => "V2",
    }
}

pub fn trigger_type_name(trigger: TriggerType) -> &'static str {
    match trigger {
        TriggerType::CreatePipeline => "CreatePipeline",
        TriggerType::StartPipelineExecution => "StartPipelineExecution",
        TriggerType::PollForSourceChanges => "PollForSourceChanges",
        TriggerType::Webhook => "Webhook",
        TriggerType::CloudWatchEvent => "CloudWatchEvent",
        TriggerType::PutActionRevision => "PutActionRevision",
        TriggerType::WebhookV2 => "WebhookV2",
        TriggerType::ManualRollback => "ManualRollback",
        TriggerType::AutomatedRollback => "AutomatedRollback",
    }
}

pub fn retry_mode_name(mode: StageRetryMode) -> &'static str {
    match mode {
        StageRetryMode::FailedActions => "FAILED_ACTIONS",
        StageRetryMode::AllActions => "ALL_ACTIONS",
    }
}

/// `ExecutionType`: rollbacks are the executions a rollback trigger started.
fn execution_type_name(execution: &Execution) -> &'static str {
    match execution.trigger.trigger_type {
        TriggerType::ManualRollback | TriggerType::AutomatedRollback => "ROLLBACK",
        _ => "STANDARD",
    }
}

/// Text a shape requires to be non-empty, or nothing.
fn non_empty(text: Option<&String>) -> Option<String> {
    text.filter(|t| !t.is_empty()).cloned()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineMetadata {
    pub pipeline_arn: String,
    pub created: EpochSeconds,
    pub updated: EpochSeconds,
}

pub fn pipeline_metadata(
    record: &PipelineRecord,
    region: &str,
    account_id: &str,
) -> PipelineMetadata {
    PipelineMetadata {
        pipeline_arn: pipeline_arn(region, account_id, &record.declaration.name),
        created: record.created.into(),
        updated: record.updated.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSummary {
    pub name: String,
    pub version: i64,
    pub pipeline_type: &'static str,
    pub execution_mode: &'static str,
    pub created: EpochSeconds,
    pub updated: EpochSeconds,
}

pub fn pipeline_summary(record: &PipelineRecord) -> PipelineSummary {
    let declaration = &record.declaration;
    PipelineSummary {
        name: declaration.name.clone(),
        version: declaration.version.unwrap_or(1),
        pipeline_type: pipeline_type_name(declaration.effective_pipeline_type()),
        execution_mode: execution_mode_name(declaration.effective_execution_mode()),
        created: record.created.into(),
        updated: record.updated.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionTrigger {
    pub trigger_type: &'static str,
    pub trigger_detail: String,
}

fn execution_trigger(execution: &Execution) -> ExecutionTrigger {
    ExecutionTrigger {
        trigger_type: trigger_type_name(execution.trigger.trigger_type),
        trigger_detail: execution.trigger.trigger_detail.clone(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRevision {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision_summary: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedPipelineVariable {
    pub name: String,
    pub resolved_value: String,
}

/// `PipelineExecution` (`GetPipelineExecution`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineExecution {
    pub pipeline_name: String,
    pub pipeline_version: i64,
    pub pipeline_execution_id: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_summary: Option<String>,
    pub artifact_revisions: Vec<ArtifactRevision>,
    pub variables: Vec<ResolvedPipelineVariable>,
    pub trigger: ExecutionTrigger,
    pub execution_mode: &'static str,
    pub execution_type: &'static str,
}

pub fn pipeline_execution(execution: &Execution) -> PipelineExecution {
    PipelineExecution {
        pipeline_name: execution.pipeline_name.clone(),
        pipeline_version: execution.pipeline_version,
        pipeline_execution_id: execution.id.clone(),
        status: execution_status_name(execution.status),
        status_summary: non_empty(execution.status_summary.as_ref()),
        artifact_revisions: execution
            .artifacts
            .values()
            .filter(|a| a.revision_id.is_some())
            .map(|a| ArtifactRevision {
                name: a.name.clone(),
                revision_id: a.revision_id.clone(),
                revision_summary: a.revision_summary.clone(),
            })
            .collect(),
        variables: execution
            .variables
            .iter()
            .map(|(name, value)| ResolvedPipelineVariable {
                name: name.clone(),
                resolved_value: value.clone(),
            })
            .collect(),
        trigger: execution_trigger(execution),
        execution_mode: execution_mode_name(execution.execution_mode),
        execution_type: execution_type_name(execution),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRevision {
    pub action_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision_summary: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StopExecutionTrigger {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `PipelineExecutionSummary` (`ListPipelineExecutions`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineExecutionSummary {
    pub pipeline_execution_id: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_summary: Option<String>,
    pub start_time: EpochSeconds,
    pub last_update_time: EpochSeconds,
    pub source_revisions: Vec<SourceRevision>,
    pub trigger: ExecutionTrigger,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_trigger: Option<StopExecutionTrigger>,
    pub execution_mode: &'static str,
    pub execution_type: &'static str,
}

/// The revisions the execution's source actions (the first stage, which holds only source
/// actions) worked on: what they produced, or else the revision the start request pinned.
fn source_revisions(execution: &Execution) -> Vec<SourceRevision> {
    let Some(source_stage) = execution.stages.first() else {
        return Vec::new();
    };
    source_stage
        .actions
        .iter()
        .filter_map(|action| {
            let produced = action
                .output_artifacts
                .iter()
                .find(|a| a.revision_id.is_some());
            if let Some(artifact) = produced {
                return Some(SourceRevision {
                    action_name: action.name.clone(),
                    revision_id: artifact.revision_id.clone(),
                    revision_summary: artifact.revision_summary.clone(),
                });
            }
            execution
                .source_revisions
                .iter()
                .find(|r| r.action_name == action.name)
                .map(|pinned| SourceRevision {
                    action_name: action.name.clone(),
                    revision_id: Some(pinned.revision_value.clone()),
                    revision_summary: None,
                })
        })
        .collect()
}

pub fn pipeline_execution_summary(execution: &Execution) -> PipelineExecutionSummary {
    PipelineExecutionSummary {
        pipeline_execution_id: execution.id.clone(),
        status: execution_status_name(execution.status),
        status_summary: non_empty(execution.status_summary.as_ref()),
        start_time: execution.start_time.into(),
        last_update_time: execution.last_update_time.into(),
        source_revisions: source_revisions(execution),
        trigger: execution_trigger(execution),
        stop_trigger: execution.stop.as_ref().map(|stop| StopExecutionTrigger {
            reason: non_empty(stop.reason.as_ref()),
        }),
        execution_mode: execution_mode_name(execution.execution_mode),
        execution_type: execution_type_name(execution),
    }
}

/// Whether `stage` of the execution ended Succeeded (`filter.succeededInStage`).
pub fn succeeded_in_stage(execution: &Execution, stage: &str) -> bool {
    execution
        .stages
        .iter()
        .any(|s| s.name == stage && s.status == Some(StageStatus::Succeeded))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransitionState {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_changed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_changed_at: Option<EpochSeconds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageExecution {
    pub pipeline_execution_id: String,
    pub status: &'static str,
    #[serde(rename = "type")]
    pub execution_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiErrorDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn error_details(error: &ErrorDetails) -> ApiErrorDetails {
    ApiErrorDetails {
        code: Some(error.code.clone()),
        message: non_empty(Some(&error.message)),
    }
}

/// `ActionExecution`: the latest run of an action, as `GetPipelineState` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionExecution {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_execution_id: Option<String>,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status_change: Option<EpochSeconds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_execution_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_execution_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_details: Option<ApiErrorDetails>,
}

fn action_execution(action: &ActionRun) -> Option<ActionExecution> {
    let status = action_status_name(action.status)?;
    Some(ActionExecution {
        action_execution_id: action.action_execution_id.clone(),
        status,
        summary: non_empty(action.external.summary.as_ref()),
        last_status_change: action.updated_at.or(action.started_at).map(Into::into),
        // The token is only useful, and only valid, while the approval waits.
        token: match action.status {
            ActionStatus::InProgress => action.token.clone(),
            _ => None,
        },
        last_updated_by: non_empty(action.last_updated_by.as_ref()),
        external_execution_id: non_empty(action.external.id.as_ref()),
        external_execution_url: non_empty(action.external.url.as_ref()),
        error_details: action.error.as_ref().map(error_details),
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionState {
    pub action_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_execution: Option<ActionExecution>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryStageMetadata {
    pub auto_stage_retry_attempt: u32,
    pub manual_stage_retry_attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_retry_trigger: Option<String>,
}

fn retry_stage_metadata(retry: &RetryMetadata) -> Option<RetryStageMetadata> {
    if retry.auto_stage_retry_attempt == 0 && retry.manual_stage_retry_attempt == 0 {
        return None;
    }
    Some(RetryStageMetadata {
        auto_stage_retry_attempt: retry.auto_stage_retry_attempt,
        manual_stage_retry_attempt: retry.manual_stage_retry_attempt,
        latest_retry_trigger: retry.latest_retry_trigger.clone(),
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageState {
    pub stage_name: String,
    pub inbound_transition_state: TransitionState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_execution: Option<StageExecution>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inbound_executions: Vec<StageExecution>,
    pub action_states: Vec<ActionState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_execution: Option<StageExecution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_stage_metadata: Option<RetryStageMetadata>,
}

/// `GetPipelineStateOutput`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStateView {
    pub pipeline_name: String,
    pub pipeline_version: i64,
    pub stage_states: Vec<StageState>,
    pub created: EpochSeconds,
    pub updated: EpochSeconds,
}

fn transition_state(state: &PipelineState, stage: &str) -> TransitionState {
    match state.disabled_transitions.get(stage) {
        Some(disabled) => TransitionState {
            enabled: false,
            last_changed_by: disabled.changed_by.clone(),
            last_changed_at: Some(disabled.changed_at.into()),
            disabled_reason: non_empty(Some(&disabled.reason)),
        },
        None => {
            let enabled = state.enabled_transitions.get(stage);
            TransitionState {
                enabled: true,
                last_changed_by: enabled.and_then(|e| e.changed_by.clone()),
                last_changed_at: enabled.map(|e| e.changed_at.into()),
                disabled_reason: None,
            }
        }
    }
}

/// The state of every stage of the current declaration: transitions, who waits in front of
/// it, and the latest execution inside it with its actions' latest runs.
pub fn pipeline_state(record: &PipelineRecord, state: &PipelineState) -> PipelineStateView {
    let declaration = state
        .declarations
        .get(&state.current_version)
        .unwrap_or(&record.declaration);
    let stage_states = declaration
        .stages
        .iter()
        .map(|stage| {
            let waiting: Vec<StageExecution> = state
                .waiting
                .get(&stage.name)
                .into_iter()
                .flatten()
                .filter_map(|id| state.executions.get(id))
                .map(|execution| StageExecution {
                    pipeline_execution_id: execution.id.clone(),
                    status: inbound_status_name(execution.status),
                    execution_type: execution_type_name(execution),
                })
                .collect();
            let latest = state
                .stage_latest
                .get(&stage.name)
                .and_then(|id| state.executions.get(id));
            let latest_run = latest.and_then(|execution| {
                execution
                    .stages
                    .iter()
                    .find(|s| s.name == stage.name && s.status.is_some())
                    .map(|run| (execution, run))
            });
            let action_states = stage
                .actions
                .iter()
                .map(|declared| ActionState {
                    action_name: declared.name.clone(),
                    latest_execution: latest_run.and_then(|(_, run)| {
                        run.actions
                            .iter()
                            .find(|a| a.name == declared.name)
                            .and_then(action_execution)
                    }),
                })
                .collect();
            StageState {
                stage_name: stage.name.clone(),
                inbound_transition_state: transition_state(state, &stage.name),
                inbound_execution: waiting.last().cloned(),
                inbound_executions: waiting,
                action_states,
                latest_execution: latest_run.and_then(|(execution, run)| {
                    run.status.map(|status| StageExecution {
                        pipeline_execution_id: execution.id.clone(),
                        status: stage_status_name(status),
                        execution_type: execution_type_name(execution),
                    })
                }),
                retry_stage_metadata: latest_run
                    .and_then(|(_, run)| retry_stage_metadata(&run.retry)),
            }
        })
        .collect();
    PipelineStateView {
        pipeline_name: declaration.name.clone(),
        pipeline_version: state.current_version,
        stage_states,
        created: record.created.into(),
        updated: record.updated.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionTypeIdView {
    pub category: &'static str,
    pub owner: &'static str,
    pub provider: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    pub bucket: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactDetail {
    pub name: String,
    #[serde(rename = "s3location", skip_serializing_if = "Option::is_none")]
    pub s3_location: Option<S3Location>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionExecutionInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_type_id: Option<ActionTypeIdView>,
    pub configuration: BTreeMap<String, String>,
    pub resolved_configuration: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub input_artifacts: Vec<ArtifactDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionExecutionResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_execution_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_execution_summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_execution_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_details: Option<ApiErrorDetails>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionExecutionOutput {
    pub output_artifacts: Vec<ArtifactDetail>,
    pub execution_result: ActionExecutionResult,
    pub output_variables: BTreeMap<String, String>,
}

/// `ActionExecutionDetail` (`ListActionExecutions`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionExecutionDetail {
    pub pipeline_execution_id: String,
    pub action_execution_id: String,
    pub pipeline_version: i64,
    pub stage_name: String,
    pub action_name: String,
    pub start_time: EpochSeconds,
    pub last_update_time: EpochSeconds,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    pub status: &'static str,
    pub input: ActionExecutionInput,
    pub output: ActionExecutionOutput,
}

/// Where an artifact lives, in S3 terms: `s3://bucket/key` locations are split; any other
/// (local) location is shown as a key in the pipeline's declared artifact store.
pub fn s3_location(location: &str, store_location: Option<&str>) -> Option<S3Location> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/')?;
        return Some(S3Location {
            bucket: bucket.to_string(),
            key: key.to_string(),
        });
    }
    if location.is_empty() {
        return None;
    }
    Some(S3Location {
        bucket: store_location.unwrap_or_default().to_string(),
        key: location.to_string(),
    })
}

fn artifact_details(
    artifacts: &[ArtifactRef],
    store_location: Option<&str>,
) -> Vec<ArtifactDetail> {
    artifacts
        .iter()
        .map(|a| ArtifactDetail {
            name: a.name.clone(),
            s3_location: s3_location(&a.location, store_location),
        })
        .collect()
}

/// One attempt of an action, from either its live run or its history.
struct Attempt<'a> {
    action_execution_id: &'a str,
    status: ActionStatus,
    started_at: Timestamp,
    updated_at: Timestamp,
    resolved_configuration: &'a BTreeMap<String, String>,
    input_artifacts: &'a [ArtifactRef],
    output_artifacts: &'a [ArtifactRef],
    output_variables: &'a BTreeMap<String, String>,
    external: &'a ExternalExecution,
    /// Who decided it (approvals), when known.
    updated_by: Option<&'a str>,
    error: Option<&'a ErrorDetails>,
}

fn attempts(action: &ActionRun) -> Vec<Attempt<'_>> {
    let mut all: Vec<Attempt<'_>> = action
        .history
        .iter()
        .map(|h: &ActionAttemptRecord| Attempt {
            action_execution_id: &h.action_execution_id,
            status: h.status,
            started_at: h.started_at,
            updated_at: h.updated_at,
            resolved_configuration: &h.resolved_configuration,
            input_artifacts: &h.input_artifacts,
            output_artifacts: &h.output_artifacts,
            output_variables: &h.output_variables,
            external: &h.external,
            updated_by: None,
            error: h.error.as_ref(),
        })
        .collect();
    let current_recorded = action
        .history
        .iter()
        .any(|h| Some(&h.action_execution_id) == action.action_execution_id.as_ref());
    if let (Some(id), false) = (&action.action_execution_id, current_recorded)
        && action.status != ActionStatus::NotStarted
    {
        let started = action.started_at.unwrap_or_default();
        all.push(Attempt {
            action_execution_id: id,
            status: action.status,
            started_at: started,
            updated_at: action.updated_at.unwrap_or(started),
            resolved_configuration: &action.resolved_configuration,
            input_artifacts: &action.input_artifacts,
            output_artifacts: &action.output_artifacts,
            output_variables: &action.output_variables,
            external: &action.external,
            updated_by: action.last_updated_by.as_deref(),
            error: action.error.as_ref(),
        });
    }
    all
}

fn action_type_id(declared: &ActionDeclaration) -> ActionTypeIdView {
    ActionTypeIdView {
        category: declared.action_type_id.category.as_str(),
        owner: declared.action_type_id.owner.as_str(),
        provider: declared.action_type_id.provider.clone(),
        version: declared.action_type_id.version.clone(),
    }
}

/// Every action attempt of an execution, newest first (ties by id, so the order is total and
/// a page boundary stays put). `declaration` is the version the execution ran on; `latest_only`
/// keeps the latest attempt of each action (`startTimeRange: Latest`).
pub fn action_execution_details(
    execution: &Execution,
    declaration: Option<&PipelineDeclaration>,
    latest_only: bool,
) -> Vec<ActionExecutionDetail> {
    let store_location = declaration
        .and_then(|d| penstock_core::engine::artifact_store_for(d, None).map(|s| s.location));
    let declared: HashMap<(&str, &str), &ActionDeclaration> = declaration
        .into_iter()
        .flat_map(|d| d.stages.iter())
        .flat_map(|s| {
            s.actions
                .iter()
                .map(move |a| ((s.name.as_str(), a.name.as_str()), a))
        })
        .collect();
    let mut details = Vec::new();
    for stage in &execution.stages {
        for action in &stage.actions {
            let mut runs = attempts(action);
            if latest_only && runs.len() > 1 {
                runs.drain(..runs.len() - 1);
            }
            let declared = declared
                .get(&(stage.name.as_str(), action.name.as_str()))
                .copied();
            for run in runs {
                let Some(status) = action_status_name(run.status) else {
                    continue;
                };
                details.push(ActionExecutionDetail {
                    pipeline_execution_id: execution.id.clone(),
                    action_execution_id: run.action_execution_id.to_string(),
                    pipeline_version: execution.pipeline_version,
                    stage_name: stage.name.clone(),
                    action_name: action.name.clone(),
                    start_time: run.started_at.into(),
                    last_update_time: run.updated_at.into(),
                    updated_by: run.updated_by.map(str::to_string),
                    status,
                    input: ActionExecutionInput {
                        action_type_id: declared.map(action_type_id),
                        configuration: declared
                            .map(|d| d.configuration.clone())
                            .unwrap_or_default(),
                        resolved_configuration: run.resolved_configuration.clone(),
                        role_arn: declared.and_then(|d| d.role_arn.clone()),
                        region: declared.and_then(|d| d.region.clone()),
                        input_artifacts: artifact_details(
                            run.input_artifacts,
                            store_location.as_deref(),
                        ),
                        namespace: declared.and_then(|d| d.namespace.clone()),
                    },
                    output: ActionExecutionOutput {
                        output_artifacts: artifact_details(
                            run.output_artifacts,
                            store_location.as_deref(),
                        ),
                        execution_result: ActionExecutionResult {
                            external_execution_id: non_empty(run.external.id.as_ref()),
                            external_execution_summary: non_empty(run.external.summary.as_ref()),
                            external_execution_url: non_empty(run.external.url.as_ref()),
                            error_details: run.error.map(error_details),
                        },
                        output_variables: run.output_variables.clone(),
                    },
                });
            }
        }
    }
    details.sort_by(|a, b| {
        b.start_time
            .0
            .total_cmp(&a.start_time.0)
            .then_with(|| a.action_execution_id.cmp(&b.action_execution_id))
    });
    details
}

#[cfg(test)]
mod tests {
    use super::*;
    use penstock_core::engine::{
        DisabledTransition, Position, SourceRevision as PinnedRevision, StageRun, StopRequest,
        Trigger,
    };
    use serde_json::json;

    fn declaration() -> PipelineDeclaration {
        serde_json::from_value(json!({
            "name": "web",
            "roleArn": "arn:aws:iam::123456789012:role/pipeline",
            "artifactStore": {"type": "S3", "location": "artifacts-bucket"},
            "version": 3,
            "executionMode": "QUEUED",
            "pipelineType": "V2",
            "stages": [
                {"name": "Source", "actions": [{
                    "name": "Checkout",
                    "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
                    "configuration": {"S3Bucket": "src", "S3ObjectKey": "app.zip"},
                    "outputArtifacts": [{"name": "App"}]
                }]},
                {"name": "Approve", "actions": [{
                    "name": "Gate",
                    "actionTypeId": {"category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1"}
                }, {
                    "name": "Later",
                    "runOrder": 2,
                    "actionTypeId": {"category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1"}
                }]}
            ]
        }))
        .unwrap()
    }

    fn record() -> PipelineRecord {
        PipelineRecord {
            declaration: declaration(),
            tags: Vec::new(),
            created: Timestamp(1_700_000_000_000),
            updated: Timestamp(1_700_000_500_250),
        }
    }

    fn action(name: &str, status: ActionStatus) -> ActionRun {
        ActionRun {
            name: name.into(),
            status,
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

    fn app_artifact() -> ArtifactRef {
        ArtifactRef {
            name: "App".into(),
            location: "s3://artifacts-bucket/web/App/abc.zip".into(),
            revision_id: Some("v-42".into()),
            revision_summary: Some("release 42".into()),
        }
    }

    /// An execution whose source succeeded and whose approval waits with a token.
    fn execution() -> Execution {
        let mut checkout = action("Checkout", ActionStatus::Succeeded);
        checkout.attempt = 1;
        checkout.action_execution_id = Some("a-source-1".into());
        checkout.started_at = Some(Timestamp(1_700_000_600_000));
        checkout.updated_at = Some(Timestamp(1_700_000_601_500));
        checkout.output_artifacts = vec![app_artifact()];
        checkout.resolved_configuration =
            BTreeMap::from([("S3Bucket".to_string(), "src".to_string())]);
        checkout.output_variables = BTreeMap::from([("VersionId".to_string(), "v-42".to_string())]);
        let mut gate = action("Gate", ActionStatus::InProgress);
        gate.attempt = 1;
        gate.action_execution_id = Some("a-gate-1".into());
        gate.started_at = Some(Timestamp(1_700_000_602_000));
        gate.token = Some("11111111-2222-3333-4444-555555555555".into());
        gate.input_artifacts = vec![app_artifact()];
        Execution {
            id: "e1".into(),
            pipeline_name: "web".into(),
            pipeline_version: 3,
            execution_mode: ExecutionMode::Queued,
            status: ExecutionStatus::InProgress,
            status_summary: None,
            trigger: Trigger {
                trigger_type: TriggerType::StartPipelineExecution,
                trigger_detail: "penstock".into(),
            },
            start_time: Timestamp(1_700_000_600_000),
            last_update_time: Timestamp(1_700_000_602_000),
            attempt: 1,
            variables: BTreeMap::from([("Env".to_string(), "prod".to_string())]),
            source_revisions: Vec::new(),
            stop: None,
            position: Position::InStage { stage: 1 },
            stages: vec![
                StageRun {
                    name: "Source".into(),
                    status: Some(StageStatus::Succeeded),
                    actions: vec![checkout],
                    retry: RetryMetadata::default(),
                    entered_at: Some(Timestamp(1_700_000_600_000)),
                    updated_at: Some(Timestamp(1_700_000_601_500)),
                },
                StageRun {
                    name: "Approve".into(),
                    status: Some(StageStatus::InProgress),
                    actions: vec![gate, action("Later", ActionStatus::NotStarted)],
                    retry: RetryMetadata::default(),
                    entered_at: Some(Timestamp(1_700_000_602_000)),
                    updated_at: Some(Timestamp(1_700_000_602_000)),
                },
            ],
            artifacts: BTreeMap::from([("App".to_string(), app_artifact())]),
            namespaces: BTreeMap::new(),
        }
    }

    fn state_with(executions: Vec<Execution>) -> PipelineState {
        let mut state = PipelineState::new(declaration());
        for execution in executions {
            state.executions.insert(execution.id.clone(), execution);
        }
        state
    }

    #[test]
    fn timestamps_are_epoch_seconds_with_a_fraction() {
        let value = serde_json::to_value(EpochSeconds::from(Timestamp(1_700_000_500_250))).unwrap();
        assert_eq!(value, json!(1_700_000_500.25));
    }

    #[test]
    fn pipeline_metadata_carries_the_arn_and_times() {
        let value = serde_json::to_value(pipeline_metadata(&record(), "eu-west-1", "123456789012"))
            .unwrap();
        assert_eq!(
            value,
            json!({
                "pipelineArn": "arn:aws:codepipeline:eu-west-1:123456789012:web",
                "created": 1_700_000_000.0,
                "updated": 1_700_000_500.25
            })
        );
    }

    #[test]
    fn pipeline_summaries_show_the_effective_type_and_mode() {
        let value = serde_json::to_value(pipeline_summary(&record())).unwrap();
        assert_eq!(value["version"], 3);
        assert_eq!(value["pipelineType"], "V2");
        assert_eq!(value["executionMode"], "QUEUED");
        let mut plain = record();
        plain.declaration.execution_mode = None;
        plain.declaration.pipeline_type = None;
        let value = serde_json::to_value(pipeline_summary(&plain)).unwrap();
        assert_eq!(value["pipelineType"], "V1");
        assert_eq!(value["executionMode"], "SUPERSEDED");
    }

    #[test]
    fn a_pipeline_execution_has_every_member_of_the_shape() {
        let value = serde_json::to_value(pipeline_execution(&execution())).unwrap();
        assert_eq!(
            value,
            json!({
                "pipelineName": "web",
                "pipelineVersion": 3,
                "pipelineExecutionId": "e1",
                "status": "InProgress",
                "artifactRevisions": [
                    {"name": "App", "revisionId": "v-42", "revisionSummary": "release 42"}
                ],
                "variables": [{"name": "Env", "resolvedValue": "prod"}],
                "trigger": {"triggerType": "StartPipelineExecution", "triggerDetail": "penstock"},
                "executionMode": "QUEUED",
                "executionType": "STANDARD"
            })
        );
    }

    #[test]
    fn a_summary_shows_source_revisions_and_the_stop_reason() {
        let mut stopped = execution();
        stopped.status = ExecutionStatus::Stopping;
        stopped.stop = Some(StopRequest {
            abandon: false,
            reason: Some("bad build".into()),
            requested_at: Timestamp(1_700_000_603_000),
        });
        let value = serde_json::to_value(pipeline_execution_summary(&stopped)).unwrap();
        assert_eq!(value["status"], "Stopping");
        assert_eq!(value["stopTrigger"], json!({"reason": "bad build"}));
        assert_eq!(
            value["sourceRevisions"],
            json!([{"actionName": "Checkout", "revisionId": "v-42", "revisionSummary": "release 42"}])
        );
        assert_eq!(value["startTime"], json!(1_700_000_600.0));
        assert_eq!(value["lastUpdateTime"], json!(1_700_000_602.0));
    }

    #[test]
    fn a_pinned_revision_stands_in_until_the_source_produced_one() {
        let mut pinned = execution();
        pinned.stages[0].actions[0].output_artifacts.clear();
        pinned.source_revisions = vec![PinnedRevision {
            action_name: "Checkout".into(),
            revision_type: "S3_OBJECT_VERSION_ID".into(),
            revision_value: "v-7".into(),
        }];
        let summary = pipeline_execution_summary(&pinned);
        assert_eq!(
            summary.source_revisions,
            vec![SourceRevision {
                action_name: "Checkout".into(),
                revision_id: Some("v-7".into()),
                revision_summary: None
            }]
        );
    }

    #[test]
    fn the_state_shows_latest_runs_tokens_and_transitions() {
        let mut state = state_with(vec![execution()]);
        state.stage_latest.insert("Source".into(), "e1".into());
        state.stage_latest.insert("Approve".into(), "e1".into());
        let view = serde_json::to_value(pipeline_state(&record(), &state)).unwrap();
        assert_eq!(view["pipelineName"], "web");
        assert_eq!(view["pipelineVersion"], 3);
        let approve = &view["stageStates"][1];
        assert_eq!(approve["stageName"], "Approve");
        assert_eq!(approve["inboundTransitionState"], json!({"enabled": true}));
        assert_eq!(
            approve["latestExecution"],
            json!({"pipelineExecutionId": "e1", "status": "InProgress", "type": "STANDARD"})
        );
        assert_eq!(
            approve["actionStates"][0]["latestExecution"],
            json!({
                "actionExecutionId": "a-gate-1",
                "status": "InProgress",
                "lastStatusChange": 1_700_000_602.0,
                "token": "11111111-2222-3333-4444-555555555555"
            })
        );
        // An action the execution has not reached has no latest execution.
        assert_eq!(approve["actionStates"][1], json!({"actionName": "Later"}));
        assert_eq!(
            view["stageStates"][0]["actionStates"][0]["latestExecution"]["status"],
            "Succeeded"
        );
    }

    #[test]
    fn a_settled_approval_no_longer_shows_its_token() {
        let mut settled = execution();
        settled.stages[1].actions[0].status = ActionStatus::Failed;
        settled.stages[1].actions[0].error = Some(ErrorDetails {
            code: "ApprovalRejected".into(),
            message: "no".into(),
        });
        let mut state = state_with(vec![settled]);
        state.stage_latest.insert("Approve".into(), "e1".into());
        let view = pipeline_state(&record(), &state);
        let gate = view.stage_states[1].action_states[0]
            .latest_execution
            .clone()
            .unwrap();
        assert_eq!(gate.token, None);
        assert_eq!(gate.status, "Failed");
        assert_eq!(
            gate.error_details,
            Some(ApiErrorDetails {
                code: Some("ApprovalRejected".into()),
                message: Some("no".into())
            })
        );
    }

    #[test]
    fn a_disabled_transition_holds_the_waiting_execution() {
        let mut waiting = execution();
        waiting.id = "e2".into();
        waiting.position = Position::Waiting { stage: 1 };
        let mut state = state_with(vec![waiting]);
        state.disabled_transitions.insert(
            "Approve".into(),
            DisabledTransition {
                reason: "freeze".into(),
                changed_at: Timestamp(1_700_000_700_000),
                changed_by: Some("ops".into()),
            },
        );
        state.waiting.insert("Approve".into(), vec!["e2".into()]);
        let view = serde_json::to_value(pipeline_state(&record(), &state)).unwrap();
        let approve = &view["stageStates"][1];
        assert_eq!(
            approve["inboundTransitionState"],
            json!({"enabled": false, "lastChangedBy": "ops", "lastChangedAt": 1_700_000_700.0, "disabledReason": "freeze"})
        );
        assert_eq!(
            approve["inboundExecution"],
            json!({"pipelineExecutionId": "e2", "status": "InProgress", "type": "STANDARD"})
        );
        assert_eq!(
            approve["inboundExecutions"].as_array().map(Vec::len),
            Some(1)
        );
        assert!(approve.get("latestExecution").is_none());
    }

    #[test]
    fn retry_metadata_appears_once_a_stage_was_retried() {
        let mut retried = execution();
        retried.stages[1].retry = RetryMetadata {
            auto_stage_retry_attempt: 0,
            manual_stage_retry_attempt: 2,
            latest_retry_trigger: Some("ManualStageRetry".into()),
            last_retry_at: None,
        };
        let mut state = state_with(vec![retried]);
        state.stage_latest.insert("Approve".into(), "e1".into());
        state.stage_latest.insert("Source".into(), "e1".into());
        let view = pipeline_state(&record(), &state);
        assert_eq!(view.stage_states[0].retry_stage_metadata, None);
        assert_eq!(
            view.stage_states[1].retry_stage_metadata,
            Some(RetryStageMetadata {
                auto_stage_retry_attempt: 0,
                manual_stage_retry_attempt: 2,
                latest_retry_trigger: Some("ManualStageRetry".into())
            })
        );
    }

    #[test]
    fn action_details_list_every_attempt_newest_first() {
        let mut retried = execution();
        let gate = &mut retried.stages[1].actions[0];
        gate.history.push(ActionAttemptRecord {
            attempt: 1,
            action_execution_id: "a-gate-0".into(),
            status: ActionStatus::Failed,
            started_at: Timestamp(1_700_000_601_800),
            updated_at: Timestamp(1_700_000_601_900),
            resolved_configuration: BTreeMap::new(),
            input_artifacts: Vec::new(),
            output_artifacts: Vec::new(),
            output_variables: BTreeMap::new(),
            external: ExternalExecution::default(),
            error: Some(ErrorDetails {
                code: "JobFailed".into(),
                message: "boom".into(),
            }),
        });
        let details = action_execution_details(&retried, Some(&declaration()), false);
        let ids: Vec<&str> = details
            .iter()
            .map(|d| d.action_execution_id.as_str())
            .collect();
        assert_eq!(ids, ["a-gate-1", "a-gate-0", "a-source-1"]);
        let latest = action_execution_details(&retried, Some(&declaration()), true);
        let ids: Vec<&str> = latest
            .iter()
            .map(|d| d.action_execution_id.as_str())
            .collect();
        assert_eq!(ids, ["a-gate-1", "a-source-1"]);
        assert_eq!(
            details[1].output.execution_result.error_details,
            Some(ApiErrorDetails {
                code: Some("JobFailed".into()),
                message: Some("boom".into())
            })
        );
    }

    #[test]
    fn action_details_carry_the_declared_and_resolved_inputs_and_the_outputs() {
        let details = action_execution_details(&execution(), Some(&declaration()), false);
        let source = serde_json::to_value(&details[1]).unwrap();
        assert_eq!(
            source,
            json!({
                "pipelineExecutionId": "e1",
                "actionExecutionId": "a-source-1",
                "pipelineVersion": 3,
                "stageName": "Source",
                "actionName": "Checkout",
                "startTime": 1_700_000_600.0,
                "lastUpdateTime": 1_700_000_601.5,
                "status": "Succeeded",
                "input": {
                    "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
                    "configuration": {"S3Bucket": "src", "S3ObjectKey": "app.zip"},
                    "resolvedConfiguration": {"S3Bucket": "src"},
                    "inputArtifacts": []
                },
                "output": {
                    "outputArtifacts": [{
                        "name": "App",
                        "s3location": {"bucket": "artifacts-bucket", "key": "web/App/abc.zip"}
                    }],
                    "executionResult": {},
                    "outputVariables": {"VersionId": "v-42"}
                }
            })
        );
        // The declared type's names are the API's enum values.
        let ActionTypeIdView {
            category, owner, ..
        } = details[0].input.action_type_id.clone().unwrap();
        assert_eq!((category, owner), ("Approval", "AWS"));
    }

    #[test]
    fn local_artifact_locations_show_as_keys_of_the_declared_store() {
        assert_eq!(
            s3_location("web/App/abc.zip", Some("artifacts-bucket")),
            Some(S3Location {
                bucket: "artifacts-bucket".into(),
                key: "web/App/abc.zip".into()
            })
        );
        assert_eq!(s3_location("", Some("b")), None);
        assert_eq!(s3_location("s3://only-bucket", None), None);
    }

    #[test]
    fn succeeded_in_stage_looks_at_that_stage_only() {
        let e = execution();
        assert!(succeeded_in_stage(&e, "Source"));
        assert!(!succeeded_in_stage(&e, "Approve"));
        assert!(!succeeded_in_stage(&e, "Missing"));
    }
}
