//! The engine's data: the pipeline runtime document it evolves, the inputs it accepts and the
//! effects it asks the caller to carry out.
//!
//! The aggregate is one pipeline's runtime state ([`PipelineState`]): stage locks, waiting
//! executions and transitions are shared by every execution of a pipeline, so they live in one
//! document that is read, changed by [`super::apply`] and written back conditionally.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{
    ActionTypeId, ArtifactStore, ExecutionMode, PipelineDeclaration, StageRetryMode,
};

/// Milliseconds since the Unix epoch. The core never reads a clock: callers pass `now`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn plus_minutes(self, minutes: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(minutes.saturating_mul(60_000)))
    }
    pub fn as_epoch_seconds_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

/// `PipelineExecutionStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExecutionStatus {
    InProgress,
    Stopping,
    Stopped,
    Succeeded,
    Superseded,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Stopped | Self::Succeeded | Self::Superseded | Self::Failed | Self::Cancelled
        )
    }
}

/// `StageExecutionStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StageStatus {
    InProgress,
    Stopping,
    Stopped,
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
}

/// `ActionExecutionStatus`, plus `NotStarted` for an action this execution has not reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionStatus {
    NotStarted,
    InProgress,
    Abandoned,
    Succeeded,
    Failed,
}

/// `TriggerType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TriggerType {
    CreatePipeline,
    StartPipelineExecution,
    PollForSourceChanges,
    Webhook,
    CloudWatchEvent,
    PutActionRevision,
    WebhookV2,
    ManualRollback,
    AutomatedRollback,
}

/// `ExecutionTrigger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub trigger_type: TriggerType,
    pub trigger_detail: String,
}

/// `SourceRevisionOverride`: pins one source action to a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRevision {
    pub action_name: String,
    /// `COMMIT_ID`, `IMAGE_DIGEST`, `S3_OBJECT_VERSION_ID` or `S3_OBJECT_KEY`.
    pub revision_type: String,
    pub revision_value: String,
}

/// Where an artifact produced by an action lives (an S3 key or a local file), as the
/// artifact store returned it. Opaque to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub name: String,
    pub location: String,
    /// The source revision it was made from (commit id, object version...), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_summary: Option<String>,
}

/// `ErrorDetails`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetails {
    /// e.g. `JobFailed`, `TimedOut`, `ApprovalRejected`, `VariablesUnresolved`.
    pub code: String,
    pub message: String,
}

/// What the provider reported about the external work of an action attempt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExternalExecution {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A stop request recorded on an execution (`stopTrigger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    pub abandon: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub requested_at: Timestamp,
}

/// The inbound transition of a stage when disabled (absent from the map = enabled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisabledTransition {
    pub reason: String,
    pub changed_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
}

/// A transition that was enabled (kept for `lastChangedAt`/`lastChangedBy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionChange {
    pub changed_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
}

/// Where an execution is in its pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Position {
    /// Waiting in front of stage `index` (locked stage or disabled transition).
    Waiting { stage: usize },
    /// Inside stage `index`, holding its lock (except in PARALLEL mode, which has no locks).
    InStage { stage: usize },
    /// Terminal.
    Finished,
}

/// `RetryStageMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RetryMetadata {
    pub auto_stage_retry_attempt: u32,
    pub manual_stage_retry_attempt: u32,
    /// `AutomatedStageRetry` or `ManualStageRetry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_retry_trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retry_at: Option<Timestamp>,
}

/// One finished attempt of an action, kept for `ListActionExecutions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionAttemptRecord {
    pub attempt: u32,
    pub action_execution_id: String,
    pub status: ActionStatus,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    pub resolved_configuration: BTreeMap<String, String>,
    pub input_artifacts: Vec<ArtifactRef>,
    pub output_artifacts: Vec<ArtifactRef>,
    pub output_variables: BTreeMap<String, String>,
    pub external: ExternalExecution,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetails>,
}

/// An action inside one execution's stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRun {
    pub name: String,
    pub status: ActionStatus,
    /// 0 until first dispatched; grows by one on every dispatch. Inputs name the attempt they
    /// are about, and inputs about any other attempt are ignored.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_execution_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
    /// When the current attempt times out (the sweeper sends `ActionTimedOut` after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// The dispatcher has claimed the current attempt and reported it started.
    #[serde(default)]
    pub started_reported: bool,
    /// The open approval token of a Manual approval attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Who decided a Manual approval (`lastUpdatedBy`), when the decision named someone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_by: Option<String>,
    #[serde(default)]
    pub external: ExternalExecution,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetails>,
    #[serde(default)]
    pub resolved_configuration: BTreeMap<String, String>,
    #[serde(default)]
    pub input_artifacts: Vec<ArtifactRef>,
    #[serde(default)]
    pub output_artifacts: Vec<ArtifactRef>,
    #[serde(default)]
    pub output_variables: BTreeMap<String, String>,
    /// Earlier attempts, oldest first.
    #[serde(default)]
    pub history: Vec<ActionAttemptRecord>,
}

/// One stage of one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRun {
    pub name: String,
    /// `None` until the execution reaches the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StageStatus>,
    pub actions: Vec<ActionRun>,
    #[serde(default)]
    pub retry: RetryMetadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entered_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

/// One pipeline execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    pub id: String,
    pub pipeline_name: String,
    pub pipeline_version: i64,
    pub execution_mode: ExecutionMode,
    pub status: ExecutionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_summary: Option<String>,
    pub trigger: Trigger,
    pub start_time: Timestamp,
    pub last_update_time: Timestamp,
    /// `pipeline-execution-attempt`: 1, then one more per retry.
    pub attempt: u32,
    /// Pipeline-level variables, fixed at start (defaults overridden by the start request).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub source_revisions: Vec<SourceRevision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopRequest>,
    pub position: Position,
    pub stages: Vec<StageRun>,
    /// Artifacts produced so far, by artifact name (a retry's outputs overwrite).
    #[serde(default)]
    pub artifacts: BTreeMap<String, ArtifactRef>,
    /// Output variables by namespace.
    #[serde(default)]
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

/// One pipeline's runtime document: every live execution and the state they share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineState {
    pub pipeline_name: String,
    /// The declaration version new executions start on.
    pub current_version: i64,
    /// Declarations by version: the current one and every version a kept execution runs on.
    pub declarations: BTreeMap<i64, PipelineDeclaration>,
    /// Disabled inbound transitions by stage name.
    #[serde(default)]
    pub disabled_transitions: BTreeMap<String, DisabledTransition>,
    /// Last enable of a transition by stage name (for `lastChangedAt`).
    #[serde(default)]
    pub enabled_transitions: BTreeMap<String, TransitionChange>,
    /// Stage name -> id of the execution holding its lock (SUPERSEDED and QUEUED modes).
    #[serde(default)]
    pub stage_locks: BTreeMap<String, String>,
    /// Stage name -> ids of executions waiting in front of it, in arrival order.
    #[serde(default)]
    pub waiting: BTreeMap<String, Vec<String>>,
    /// Stage name -> id of the latest execution that entered it (retry needs it).
    #[serde(default)]
    pub stage_latest: BTreeMap<String, String>,
    /// Live executions, and finished ones still referenced by `stage_latest`.
    #[serde(default)]
    pub executions: BTreeMap<String, Execution>,
}

/// Everything an action attempt needs to run, resolved by the engine at dispatch time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionJob {
    pub pipeline_name: String,
    pub pipeline_version: i64,
    pub execution_id: String,
    pub stage: String,
    pub action: String,
    pub attempt: u32,
    pub action_execution_id: String,
    pub action_type_id: ActionTypeId,
    /// The configuration with every `#{...}` reference resolved.
    pub configuration: BTreeMap<String, String>,
    pub input_artifacts: Vec<ArtifactRef>,
    /// Names of the artifacts the action must produce.
    pub output_artifacts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Where outputs go: the store of the action's region, or the pipeline's only store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_store: Option<ArtifactStore>,
    /// The pinned revision for a source action, when the execution carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_revision: Option<SourceRevision>,
    pub deadline: Timestamp,
}

/// Which of the three CodePipeline state-change events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// "CodePipeline Pipeline Execution State Change"
    Pipeline,
    /// "CodePipeline Stage Execution State Change"
    Stage,
    /// "CodePipeline Action Execution State Change"
    Action,
}

impl EventKind {
    pub fn detail_type(self) -> &'static str {
        match self {
            Self::Pipeline => "CodePipeline Pipeline Execution State Change",
            Self::Stage => "CodePipeline Stage Execution State Change",
            Self::Action => "CodePipeline Action Execution State Change",
        }
    }
}

/// A CodePipeline-compatible state-change event: `detail-type` from `kind`, `detail` as
/// CodePipeline shapes it (`pipeline`, `execution-id`, `state`, `version`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    pub kind: EventKind,
    pub time: Timestamp,
    pub detail: serde_json::Value,
}

/// What the caller must do after an input was applied and the new state stored.
// Effects live only between `apply` and their publication; boxing the job would cost every
// caller a pattern change for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// Run this action attempt (claim it first: an attempt runs at most once).
    Dispatch(ActionJob),
    /// The attempt was abandoned: stop waiting for it (external work need not be cancelled).
    Cancel {
        execution_id: String,
        stage: String,
        action: String,
        attempt: u32,
    },
    /// Publish this state-change event.
    Publish(StateChange),
}

/// Who or what started an execution, and with what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// Chosen by the caller (a UUID), so that a retried start is recognisable.
    pub execution_id: String,
    pub trigger: Trigger,
    /// Overrides of the pipeline-level variable defaults.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub source_revisions: Vec<SourceRevision>,
}

/// The engine's inputs. Each names the execution (and attempt) it is about; the engine ignores
/// inputs about attempts other than the current one and about finished executions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// Start a new execution on `PipelineState::current_version`.
    Start(StartRequest),
    /// The dispatcher claimed the attempt and began the work.
    ActionStarted {
        execution_id: String,
        stage: String,
        action: String,
        attempt: u32,
        #[serde(default)]
        external: ExternalExecution,
        /// For Manual approvals: the fresh approval token (a UUID) chosen by the caller.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval_token: Option<String>,
    },
    ActionSucceeded {
        execution_id: String,
        stage: String,
        action: String,
        attempt: u32,
        #[serde(default)]
        output_artifacts: Vec<ArtifactRef>,
        #[serde(default)]
        output_variables: BTreeMap<String, String>,
        #[serde(default)]
        external: ExternalExecution,
    },
    ActionFailed {
        execution_id: String,
        stage: String,
        action: String,
        attempt: u32,
        error: ErrorDetails,
        #[serde(default)]
        external: ExternalExecution,
    },
    /// The attempt's deadline passed.
    ActionTimedOut {
        execution_id: String,
        stage: String,
        action: String,
        attempt: u32,
    },
    /// `PutApprovalResult`: checked against the open token of the action.
    ApprovalDecided {
        execution_id: String,
        stage: String,
        action: String,
        token: String,
        approved: bool,
        summary: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decided_by: Option<String>,
    },
    DisableTransition {
        stage: String,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        changed_by: Option<String>,
    },
    EnableTransition {
        stage: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        changed_by: Option<String>,
    },
    Stop {
        execution_id: String,
        abandon: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Retry {
        execution_id: String,
        stage: String,
        mode: StageRetryMode,
    },
    /// `UpdatePipeline` stored a new declaration version.
    PipelineUpdated { declaration: PipelineDeclaration },
}

/// Why an input coming from an API call was refused; the state is unchanged. Names follow the
/// CodePipeline exceptions the control plane returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("PipelineExecutionNotFoundException: {0}")]
    PipelineExecutionNotFound(String),
    #[error("StageNotFoundException: {0}")]
    StageNotFound(String),
    #[error("ActionNotFoundException: {0}")]
    ActionNotFound(String),
    #[error("PipelineExecutionNotStoppableException: {0}")]
    NotStoppable(String),
    #[error("DuplicatedStopRequestException: {0}")]
    DuplicatedStop(String),
    #[error("StageNotRetryableException: {0}")]
    StageNotRetryable(String),
    #[error("NotLatestPipelineExecutionException: {0}")]
    NotLatestExecution(String),
    #[error("InvalidApprovalTokenException: {0}")]
    InvalidApprovalToken(String),
    #[error("ApprovalAlreadyCompletedException: {0}")]
    ApprovalAlreadyCompleted(String),
    #[error("ConcurrentPipelineExecutionsLimitExceededException: {0}")]
    ConcurrencyLimit(String),
    #[error("ValidationException: {0}")]
    Validation(String),
}

impl EngineError {
    /// The CodePipeline exception name, for the control plane's `__type`.
    pub fn exception_name(&self) -> &'static str {
        match self {
            Self::PipelineExecutionNotFound(_) => "PipelineExecutionNotFoundException",
            Self::StageNotFound(_) => "StageNotFoundException",
            Self::ActionNotFound(_) => "ActionNotFoundException",
            Self::NotStoppable(_) => "PipelineExecutionNotStoppableException",
            Self::DuplicatedStop(_) => "DuplicatedStopRequestException",
            Self::StageNotRetryable(_) => "StageNotRetryableException",
            Self::NotLatestExecution(_) => "NotLatestPipelineExecutionException",
            Self::InvalidApprovalToken(_) => "InvalidApprovalTokenException",
            Self::ApprovalAlreadyCompleted(_) => "ApprovalAlreadyCompletedException",
            Self::ConcurrencyLimit(_) => "ConcurrentPipelineExecutionsLimitExceededException",
            Self::Validation(_) => "ValidationException",
        }
    }
}

/// Keeps `ArtifactStore` reachable from jobs without the caller re-reading the declaration.
pub fn artifact_store_for(
    declaration: &PipelineDeclaration,
    region: Option<&str>,
) -> Option<ArtifactStore> {
    match (&declaration.artifact_stores, region) {
        (Some(stores), Some(region)) => stores.get(region).cloned(),
        (Some(stores), None) => stores.values().next().cloned(),
        (None, _) => declaration.artifact_store.clone(),
    }
}
