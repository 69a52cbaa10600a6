//! The embedded default's runtime: every function of Penstock in one process over a data
//! directory (SQLite state, encrypted artifact files, local buckets), with the same use cases
//! the Lambda functions run.
//!
//! One runner (a `penstock run` or `penstock serve`) owns a data directory at a time, enforced
//! by an exclusive lock on `DATA_DIR/runner.lock`. Other commands (`approve`, `status`...) open
//! the same state without the lock and leave their effects in the outbox for the runner.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use penstock_app::advance::Engine;
use penstock_app::control::Control;
use penstock_app::dispatch::Dispatcher;
use penstock_app::ports::{
    BusMessage, Clock, Envelope, EventBus, IdGenerator, ProviderRegistry, RandomIds, SystemClock,
};
use penstock_app::repo::Repository;
use penstock_app::store::ItemStore;
use penstock_core::engine::StateChange;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, warn};

use crate::bus::{DetachedBus, LocalBus};

/// How long an outbox may sit before the sweeper publishes it again.
const STALE_OUTBOX_MS: i64 = 1_500;
/// How long an in-progress attempt may go unclaimed before it is scheduled again.
const UNCLAIMED_ATTEMPT_MS: i64 = 3_000;
/// How often the sweeper runs on the embedded default.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data directory {0} is in use by another running penstock (run or serve); stop it or use another --data-dir"
    )]
    Busy(PathBuf),
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    Artifacts(String),
}

/// The parts of a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    /// A relative `root` is taken from the current directory once, here: providers run
    /// processes in other directories.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        Self { root }
    }
    pub fn state_db(&self) -> PathBuf {
        self.root.join("state.sqlite")
    }
    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }
    pub fn buckets(&self) -> PathBuf {
        self.root.join("buckets")
    }
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }
    pub fn events_log(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("runner.lock")
    }

    pub fn create(&self) -> Result<(), RuntimeError> {
        for dir in [
            self.root.clone(),
            self.artifacts(),
            self.buckets(),
            self.work(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| RuntimeError::DataDir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// A state change as the runner saw it, for progress displays.
#[derive(Debug, Clone)]
pub struct ObservedChange {
    pub pipeline: String,
    pub execution_id: String,
    pub change: StateChange,
}

/// Builds the use cases over a data directory.
pub struct LocalParts {
    pub data_dir: DataDir,
    pub store: Arc<dyn ItemStore>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
}

impl LocalParts {
    pub fn open(data_dir: DataDir) -> Result<Self, RuntimeError> {
        data_dir.create()?;
        let store = crate::sqlite_store::SqliteStore::open(data_dir.state_db())
            .map_err(|e| RuntimeError::Store(e.to_string()))?;
        Ok(Self {
            data_dir,
            store: Arc::new(store),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
        })
    }

    /// Use cases for a process that is not the runner: effects wait in the outbox.
    pub fn detached_control(&self) -> Control {
        Control::new(Engine::new(
            Repository::new(self.store.clone()),
            Arc::new(DetachedBus),
            self.clock.clone(),
            self.ids.clone(),
        ))
    }
}

/// The runner: owns the data directory and executes pipelines.
pub struct Runner {
    pub control: Control,
    pub dispatcher: Dispatcher,
    pub changes: broadcast::Sender<ObservedChange>,
    parts: Arc<LocalParts>,
    receiver: Option<mpsc::UnboundedReceiver<Envelope>>,
    _lock: File,
}

impl Runner {
    /// Take the data directory's runner lock and build the runtime with the local providers.
    pub fn open(data_dir: DataDir) -> Result<Self, RuntimeError> {
        Self::open_with(data_dir, |data_dir, ids| {
            Arc::new(crate::providers::LocalProviders::new(data_dir, ids))
        })
    }

    /// [`Runner::open`] with other action providers (benchmarks, embedding).
    pub fn open_with(
        data_dir: DataDir,
        providers: impl FnOnce(&DataDir, Arc<dyn IdGenerator>) -> Arc<dyn ProviderRegistry>,
    ) -> Result<Self, RuntimeError> {
        let parts = LocalParts::open(data_dir)?;
        let lock_path = parts.data_dir.lock_file();
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| RuntimeError::DataDir {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(RuntimeError::Busy(parts.data_dir.root.clone()));
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(RuntimeError::DataDir {
                    path: lock_path,
                    source,
                });
            }
        }
        let (bus, receiver) = LocalBus::new();
        let bus: Arc<dyn EventBus> = Arc::new(bus);
        let engine = Engine::new(
            Repository::new(parts.store.clone()),
            bus,
            parts.clock.clone(),
            parts.ids.clone(),
        );
        let artifacts = crate::adapters::FileArtifacts::open(&parts.data_dir.artifacts())
            .map_err(|e| RuntimeError::Artifacts(e.to_string()))?;
        let providers = providers(&parts.data_dir, parts.ids.clone());
        let dispatcher = Dispatcher::new(
            engine.clone(),
            Arc::new(artifacts),
            Arc::new(crate::adapters::ZipArchiver),
            providers,
            format!("local-{}", parts.ids.uuid()),
            parts.data_dir.work(),
        );
        let (changes, _) = broadcast::channel(1024);
        Ok(Self {
            control: Control::new(engine),
            dispatcher,
            changes,
            parts: Arc::new(parts),
            receiver: Some(receiver),
            _lock: lock,
        })
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.parts.data_dir
    }

    /// Start the consumer loop and the sweeper. Work left by an earlier runner (a crash, a
    /// kill) is picked up by the first sweep.
    pub fn start(&mut self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = Vec::new();
        if let Some(mut receiver) = self.receiver.take() {
            let dispatcher = self.dispatcher.clone();
            let changes = self.changes.clone();
            let events_log = self.parts.data_dir.events_log();
            handles.push(tokio::spawn(async move {
                while let Some(envelope) = receiver.recv().await {
                    consume(&dispatcher, &changes, &events_log, envelope).await;
                }
            }));
        }
        let sweeper = Sweeper::new(&self.dispatcher);
        handles.push(tokio::spawn(sweeper.run(self.dispatcher.work_root.clone())));
        handles
    }
}

async fn consume(
    dispatcher: &Dispatcher,
    changes: &broadcast::Sender<ObservedChange>,
    events_log: &Path,
    envelope: Envelope,
) {
    match envelope.message {
        BusMessage::ActionScheduled(job) => {
            let dispatcher = dispatcher.clone();
            tokio::spawn(async move {
                let pipeline = job.pipeline_name.clone();
                if let Err(e) = dispatcher.dispatch(job).await {
                    warn!(pipeline, error = %e, "dispatch failed; the sweeper will retry");
                }
            });
        }
        BusMessage::ActionCancelled {
            execution_id,
            stage,
            action,
            attempt,
        } => dispatcher.cancel(&execution_id, &stage, &action, attempt),
        BusMessage::EngineInput { pipeline, input } => {
            let engine = dispatcher.engine.clone();
            tokio::spawn(async move {
                if let Err(e) = engine.apply(&pipeline, input).await {
                    warn!(pipeline, error = %e, "applying an engine input failed");
                }
            });
        }
        BusMessage::StateChange {
            pipeline,
            execution_id,
            change,
        } => {
            append_event(events_log, &pipeline, &envelope.id, &change).await;
            let _ = changes.send(ObservedChange {
                pipeline,
                execution_id,
                change,
            });
        }
    }
}

/// Append the event as EventBridge would deliver it, one JSON object per line.
async fn append_event(path: &Path, pipeline: &str, id: &str, change: &StateChange) {
    use tokio::io::AsyncWriteExt;
    let line = serde_json::json!({
        "version": "0",
        "id": id,
        "detail-type": change.kind.detail_type(),
        "source": penstock_app::ports::PUBLIC_EVENT_SOURCE,
        "time": change.time.to_iso8601(),
        "resources": [format!("arn:aws:codepipeline:local:000000000000:{pipeline}")],
        "detail": change.detail,
    });
    let result = async {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        file.write_all(format!("{line}\n").as_bytes()).await
    }
    .await;
    if let Err(e) = result {
        warn!(path = %path.display(), error = %e, "could not append to the events log");
    }
}

/// Runs the shared sweep on a timer. This runner holds the data directory's lock, so any
/// claim by another owner was made by a runner that is gone: its attempt is interrupted.
struct Sweeper {
    sweeper: penstock_app::sweep::Sweeper,
    first: bool,
}

impl Sweeper {
    fn new(dispatcher: &Dispatcher) -> Self {
        Self {
            sweeper: penstock_app::sweep::Sweeper {
                engine: dispatcher.engine.clone(),
                owner: dispatcher.owner.clone(),
                providers: None,
                settings: penstock_app::sweep::SweepSettings {
                    stale_outbox_ms: STALE_OUTBOX_MS,
                    unclaimed_attempt_ms: UNCLAIMED_ATTEMPT_MS,
                },
            },
            first: true,
        }
    }

    async fn run(mut self, work_root: PathBuf) {
        let hooks = GoneRunners { work_root };
        loop {
            // On the first sweep every outbox and unclaimed attempt is stale: its writer is gone.
            match self.sweeper.sweep(self.first, &hooks).await {
                Ok(report) if report.failed > 0 => {
                    debug!(
                        failed = report.failed,
                        "some pipelines were not swept; trying again"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "sweep failed; trying again"),
            }
            self.first = false;
            tokio::time::sleep(SWEEP_INTERVAL).await;
        }
    }
}

/// Claims by other owners come from runners that exited: their build processes are ended and
/// their attempts retried.
struct GoneRunners {
    work_root: PathBuf,
}

#[async_trait::async_trait]
impl penstock_app::sweep::SweepHooks for GoneRunners {
    async fn foreign_claim(
        &self,
        job: &penstock_core::engine::ActionJob,
        _claim: &penstock_app::repo::Claim,
    ) -> penstock_app::sweep::ForeignClaim {
        kill_orphans(&self.work_root.join(&job.action_execution_id));
        penstock_app::sweep::ForeignClaim::Interrupted
    }
}

/// Kill the process group an interrupted attempt left running, if its work directory says
/// which one it was (the build runner records it).
fn kill_orphans(work_dir: &Path) {
    let Ok(text) = std::fs::read_to_string(work_dir.join("build").join("process-group")) else {
        return;
    };
    if let Ok(pgid) = text.trim().parse::<i32>()
        && pgid > 1
    {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
    }
}
