//! Advance: apply one engine input to a pipeline's runtime document, store it conditionally,
//! then publish the resulting effects. Every runtime (the Lambda advancer, the control plane,
//! the embedded default) changes pipeline state only through [`Engine::apply`].
//!
//! Architecture Invariant: effects are written into the document's outbox in the same
//! conditional write as the state they come from, and published only after it. A crash between
//! the two loses nothing: the next writer or the sweeper publishes the outbox again, and every
//! consumer is idempotent (inputs by attempt, dispatch by claim).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use penstock_core::engine::{self, Effect, Execution, Input, Timestamp};
use tracing::{debug, warn};

use crate::error::AppError;
use crate::ports::{BusMessage, Clock, Envelope, EventBus, IdGenerator};
use crate::repo::{Repository, RuntimeDocument, Versioned};

/// How often a write is tried again after a conflict before giving up.
const MAX_CONFLICT_RETRIES: u32 = 50;

/// The outcome of one applied input.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub effects: Vec<Effect>,
    /// The runtime document's version after the write (unchanged when nothing changed).
    pub version: u64,
}

/// The shared machinery of every use case that changes pipeline state.
#[derive(Clone)]
pub struct Engine {
    pub repo: Repository,
    pub bus: Arc<dyn EventBus>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
}

impl Engine {
    pub fn new(
        repo: Repository,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        Self {
            repo,
            bus,
            clock,
            ids,
        }
    }

    /// Apply `input` to `pipeline`: load, run the state machine, write conditionally (retrying
    /// on conflict with a fresh read), publish. Refusals from the engine change nothing.
    pub async fn apply(&self, pipeline: &str, input: Input) -> Result<Applied, AppError> {
        for attempt in 0..MAX_CONFLICT_RETRIES {
            let loaded = self.repo.load_runtime(pipeline).await?;
            let now = self.clock.now();
            let mut document = loaded.value.clone();
            let (effects, dropped) =
                engine::apply_pruning(&mut document.state, input.clone(), now)?;
            if effects.is_empty() && dropped.is_empty() && document.state == loaded.value.state {
                return Ok(Applied {
                    effects,
                    version: loaded.version,
                });
            }
            let mut archive = executions_to_archive(&loaded.value, &document);
            archive.extend(dropped);
            let envelopes: Vec<Envelope> = effects
                .iter()
                .map(|effect| Envelope {
                    id: self.ids.uuid(),
                    message: message_for(pipeline, effect),
                })
                .collect();
            if !envelopes.is_empty() && document.outbox.is_empty() {
                document.outbox_since = Some(now);
            }
            document.outbox.extend(envelopes);
            match self
                .repo
                .save_runtime(pipeline, &document, loaded.version, &archive)
                .await
            {
                Ok(version) => {
                    let version = self
                        .flush_outbox(
                            pipeline,
                            Versioned {
                                value: document,
                                version,
                            },
                        )
                        .await;
                    return Ok(Applied { effects, version });
                }
                Err(AppError::Store(crate::store::StoreError::Conflict { .. })) => {
                    debug!(
                        pipeline,
                        attempt, "runtime document changed meanwhile; applying again"
                    );
                    // The first retry goes at once (the usual case: two actions of a stage
                    // finishing together); after that, spread racing writers apart a little.
                    if attempt > 0 {
                        let jitter = u64::from(self.ids.uuid().as_bytes()[0])
                            % u64::from(attempt.min(8) + 1);
                        tokio::time::sleep(Duration::from_millis(jitter)).await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(AppError::Contended(pipeline.to_string()))
    }

    /// Publish whatever the stored document's outbox holds, then clear it if nobody wrote in
    /// between (a later writer publishes and clears it otherwise). Returns the latest version
    /// known. Publish failures leave the outbox for the sweeper.
    pub async fn flush_outbox(&self, pipeline: &str, stored: Versioned<RuntimeDocument>) -> u64 {
        if stored.value.outbox.is_empty() {
            return stored.version;
        }
        if let Err(e) = self.bus.publish(stored.value.outbox.clone()).await {
            warn!(pipeline, error = %e, "publishing effects failed; the sweeper will retry");
            return stored.version;
        }
        let mut cleared = stored.value;
        cleared.outbox.clear();
        cleared.outbox_since = None;
        match self
            .repo
            .save_runtime(pipeline, &cleared, stored.version, &[])
            .await
        {
            Ok(version) => version,
            Err(e) => {
                // A newer write carries these messages and publishes them after itself.
                debug!(pipeline, error = %e, "outbox not cleared; a later writer will");
                stored.version
            }
        }
    }

    /// Re-publish an outbox older than `older_than_ms` (a writer crashed before publishing).
    pub async fn republish_stale_outbox(
        &self,
        pipeline: &str,
        older_than_ms: i64,
    ) -> Result<bool, AppError> {
        let loaded = self.repo.load_runtime(pipeline).await?;
        let now: Timestamp = self.clock.now();
        match loaded.value.outbox_since {
            Some(since) if now.0 - since.0 >= older_than_ms => {
                self.flush_outbox(pipeline, loaded).await;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// The bus message that carries out an effect.
pub fn message_for(pipeline: &str, effect: &Effect) -> BusMessage {
    match effect {
        Effect::Dispatch(job) => BusMessage::ActionScheduled(job.clone()),
        Effect::Cancel {
            execution_id,
            stage,
            action,
            attempt,
        } => BusMessage::ActionCancelled {
            execution_id: execution_id.clone(),
            stage: stage.clone(),
            action: action.clone(),
            attempt: *attempt,
        },
        Effect::Publish(change) => BusMessage::StateChange {
            pipeline: pipeline.to_string(),
            execution_id: change
                .detail
                .get("execution-id")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            change: change.clone(),
        },
    }
}

/// Executions whose stored snapshot must change with this write: new ones (so they can be
/// found by id and listed) and those that changed status (so history stays true after the
/// runtime document drops them).
fn executions_to_archive(before: &RuntimeDocument, after: &RuntimeDocument) -> Vec<Execution> {
    let previous: BTreeMap<&str, &Execution> = before
        .state
        .executions
        .iter()
        .map(|(id, e)| (id.as_str(), e))
        .collect();
    after
        .state
        .executions
        .values()
        .filter(|execution| match previous.get(execution.id.as_str()) {
            None => true,
            Some(old) => old.status != execution.status || old.attempt != execution.attempt,
        })
        .cloned()
        .collect()
}
