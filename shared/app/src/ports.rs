//! The ports besides the store: event bus, artifact store, action providers, clock and ids.
//! Adapters implement them in `penstock-local` (embedded default) and `penstock-aws`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use penstock_core::engine::{
    ActionJob, ArtifactRef, ExternalExecution, Input, StateChange, Timestamp,
};
use serde::{Deserialize, Serialize};

/// A message on the bus. Delivery is at least once: every consumer must be idempotent.
// Messages live briefly between a write and a publish; boxing the job would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BusMessage {
    /// An action attempt is ready to run (the dispatcher's input).
    ActionScheduled(ActionJob),
    /// An attempt was abandoned: whoever runs it may stop.
    ActionCancelled {
        execution_id: String,
        stage: String,
        action: String,
        attempt: u32,
    },
    /// An engine input to apply to a pipeline (trigger intake and other functions hand inputs
    /// to the advancer this way on AWS).
    EngineInput { pipeline: String, input: Input },
    /// A CodePipeline-compatible state-change event, for subscribers outside Penstock.
    StateChange {
        pipeline: String,
        execution_id: String,
        change: StateChange,
    },
}

/// `source` of Penstock's internal events (on AWS: EventBridge entries between the functions).
pub const INTERNAL_EVENT_SOURCE: &str = "penstock";
/// `source` of the CodePipeline-compatible state-change events (an `aws.` source can only be
/// used by AWS itself; rules written for CodePipeline need only this changed).
pub const PUBLIC_EVENT_SOURCE: &str = "penstock.codepipeline";
/// `detail-type` of [`BusMessage::ActionScheduled`].
pub const ACTION_SCHEDULED: &str = "Penstock Action Scheduled";
/// `detail-type` of [`BusMessage::ActionCancelled`].
pub const ACTION_CANCELLED: &str = "Penstock Action Cancelled";
/// `detail-type` of [`BusMessage::EngineInput`].
pub const ENGINE_INPUT: &str = "Penstock Engine Input";

impl BusMessage {
    /// The EventBridge `source` this message is published under.
    pub fn source(&self) -> &'static str {
        match self {
            BusMessage::StateChange { .. } => PUBLIC_EVENT_SOURCE,
            _ => INTERNAL_EVENT_SOURCE,
        }
    }

    /// The EventBridge `detail-type`.
    pub fn detail_type(&self) -> &'static str {
        match self {
            BusMessage::ActionScheduled(_) => ACTION_SCHEDULED,
            BusMessage::ActionCancelled { .. } => ACTION_CANCELLED,
            BusMessage::EngineInput { .. } => ENGINE_INPUT,
            BusMessage::StateChange { change, .. } => change.kind.detail_type(),
        }
    }

    /// Every `(source, detail-type)` pair Penstock publishes: infrastructure rules must match
    /// exactly these.
    pub fn published_event_types() -> Vec<(&'static str, &'static str)> {
        use penstock_core::engine::EventKind;
        vec![
            (INTERNAL_EVENT_SOURCE, ACTION_SCHEDULED),
            (INTERNAL_EVENT_SOURCE, ACTION_CANCELLED),
            (INTERNAL_EVENT_SOURCE, ENGINE_INPUT),
            (PUBLIC_EVENT_SOURCE, EventKind::Pipeline.detail_type()),
            (PUBLIC_EVENT_SOURCE, EventKind::Stage.detail_type()),
            (PUBLIC_EVENT_SOURCE, EventKind::Action.detail_type()),
        ]
    }
}

/// A bus message with the id that makes redeliveries recognisable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    pub message: BusMessage,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BusError {
    /// Some entries were not accepted; the caller keeps them and publishes again later.
    #[error("{failed} of {total} events were not published: {reason}")]
    Partial {
        failed: usize,
        total: usize,
        reason: String,
    },
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    #[error("event rejected: {0}")]
    Invalid(String),
}

#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publish every envelope, or fail saying so; a failed publish may be repeated freely.
    async fn publish(&self, envelopes: Vec<Envelope>) -> Result<(), BusError>;
}

/// Where an artifact was stored: opaque outside the adapter that wrote it.
pub type ArtifactLocation = String;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact not found: {0}")]
    NotFound(String),
    #[error("artifact is corrupt or was tampered with: {0}")]
    Corrupt(String),
    #[error("artifact store unavailable: {0}")]
    Unavailable(String),
    #[error("artifact rejected: {0}")]
    Invalid(String),
}

/// Stores artifacts as zip files. Both directions go through files, so memory stays flat
/// whatever the artifact size.
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Store the zip at `zip` under `key` in the pipeline's artifact store (`store`: bucket and
    /// encryption key as declared); returns its location.
    async fn put(
        &self,
        store: Option<&penstock_core::model::ArtifactStore>,
        key: &str,
        zip: &Path,
    ) -> Result<ArtifactLocation, ArtifactError>;
    /// Write the zip stored at `location` to `dest`.
    async fn get(&self, location: &str, dest: &Path) -> Result<(), ArtifactError>;
}

/// What a provider gets to run one action attempt.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job: ActionJob,
    /// A scratch directory for this attempt, removed afterwards.
    pub work_dir: PathBuf,
    /// Each input artifact, extracted into its own directory, in declaration order.
    pub inputs: Vec<(ArtifactRef, PathBuf)>,
    /// Each output artifact name with the directory the provider fills.
    pub outputs: Vec<(String, PathBuf)>,
    /// Cancelled when the attempt is abandoned or times out.
    pub cancel: tokio_util::sync::CancellationToken,
}

/// What a provider reports for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderOutcome {
    Succeeded {
        output_variables: BTreeMap<String, String>,
        /// Revision of each output artifact (source actions), by artifact name.
        revisions: BTreeMap<String, (String, Option<String>)>,
        external: ExternalExecution,
    },
    Failed {
        code: String,
        message: String,
        external: ExternalExecution,
    },
    /// The work goes on elsewhere (an approval awaiting a decision, a remote build): the
    /// attempt stays in progress until another input settles it.
    Pending {
        external: ExternalExecution,
        approval_token: Option<String>,
    },
}

/// What a provider found when asked again about work it handed off as `Pending`.
// Lives only between a poll and its apply; boxing the input would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Polled {
    /// Still going: ask again on a later sweep.
    Running,
    /// Finished: the input that reports it (`ActionSucceeded` or `ActionFailed`).
    Finished(Input),
}

#[async_trait]
pub trait ActionProvider: Send + Sync {
    /// Run the attempt to completion (or until it is handed off as `Pending`).
    async fn run(&self, ctx: &JobContext) -> ProviderOutcome;

    /// Ask how the external work of an attempt handed off as `Pending` is going (the sweeper
    /// calls this for remote builds and deployments). `None`: this provider's pending work is
    /// settled by someone else (an approval decision), never by polling.
    async fn poll(&self, job: &ActionJob, external: &ExternalExecution) -> Option<Polled> {
        let _ = (job, external);
        None
    }
}

/// Finds the provider for an action type; `None` means "not supported on this runtime".
pub trait ProviderRegistry: Send + Sync {
    fn provider_for(
        &self,
        type_id: &penstock_core::model::ActionTypeId,
    ) -> Option<Arc<dyn ActionProvider>>;
}

/// Packs directories into zip artifacts and unpacks them safely.
pub trait Archiver: Send + Sync {
    /// Zip the contents of `dir` into the file `zip`.
    fn pack(&self, dir: &Path, zip: &Path) -> Result<(), ArtifactError>;
    /// Unpack `zip` into `dir`, refusing entries that would escape it and archive bombs.
    fn unpack(&self, zip: &Path, dir: &Path) -> Result<(), ArtifactError>;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

pub trait IdGenerator: Send + Sync {
    /// A fresh random UUID (v4), lower-case hyphenated.
    fn uuid(&self) -> String;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(millis)
    }
}

/// Random v4 UUIDs.
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn uuid(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}
