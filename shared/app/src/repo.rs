//! The typed repository: Penstock's items on top of the generic [`ItemStore`].
//!
//! Key layout (one table on DynamoDB, one SQLite table on the embedded default):
//!
//! | pk | sk | what | gsi1 |
//! |---|---|---|---|
//! | `PIPELINE#{name}` | `DECLARATION` | current declaration, tags, created/updated | `PIPELINES` / `{name}` |
//! | `PIPELINE#{name}` | `DECLARATION#v{version:010}` | every version, immutable | |
//! | `PIPELINE#{name}` | `STATE` | the engine's runtime document and its outbox | `ACTIVE` / `{name}` while work is live |
//! | `EXECUTION#{id}` | `EXECUTION` | an execution as of its start and its end | `EXECUTIONS#{pipeline}` / `{start:015}#{id}` |
//! | `CLAIM#{action execution id}` | `CLAIM` | who runs an action attempt | |
//! | `IDEMPOTENCY#{scope}#{key}` | `IDEMPOTENCY` | a remembered request and its answer, with TTL | |
//!
//! Architecture Invariant: every write here is conditional on the version that was read.

use std::sync::Arc;

use penstock_core::engine::{Execution, PipelineState, Timestamp};
use penstock_core::model::{PipelineDeclaration, Tag};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::AppError;
use crate::ports::Envelope;
use crate::store::{Expect, IndexName, Item, ItemKey, ItemStore, Query, StoreError, Write};

/// The current declaration of a pipeline and what the API reports about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRecord {
    pub declaration: PipelineDeclaration,
    #[serde(default)]
    pub tags: Vec<Tag>,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// The `STATE` item: the engine's document plus effects not yet known to be published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeDocument {
    pub state: PipelineState,
    /// Messages written with the state and published after it; cleared once published.
    #[serde(default)]
    pub outbox: Vec<Envelope>,
    /// When the oldest message in the outbox was written (the sweeper re-publishes old ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_since: Option<Timestamp>,
}

impl RuntimeDocument {
    /// Live work exists: an execution that is not finished, or messages to publish.
    pub fn is_active(&self) -> bool {
        !self.outbox.is_empty()
            || self
                .state
                .executions
                .values()
                .any(|e| !e.status.is_terminal())
    }
}

/// A loaded item and the version to condition the next write on.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

/// Who claimed an action attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub owner: String,
    pub claimed_at: Timestamp,
    pub pipeline: String,
    pub execution_id: String,
    pub stage: String,
    pub action: String,
    pub attempt: u32,
}

fn pipeline_pk(name: &str) -> String {
    format!("PIPELINE#{name}")
}

fn declaration_key(name: &str) -> ItemKey {
    ItemKey::new(pipeline_pk(name), "DECLARATION")
}

fn declaration_version_key(name: &str, version: i64) -> ItemKey {
    ItemKey::new(pipeline_pk(name), format!("DECLARATION#v{version:010}"))
}

fn state_key(name: &str) -> ItemKey {
    ItemKey::new(pipeline_pk(name), "STATE")
}

fn execution_key(id: &str) -> ItemKey {
    ItemKey::new(format!("EXECUTION#{id}"), "EXECUTION")
}

fn executions_index(pipeline: &str, execution: &Execution) -> ItemKey {
    ItemKey::new(
        format!("EXECUTIONS#{pipeline}"),
        format!("{:015}#{}", execution.start_time.0, execution.id),
    )
}

fn claim_key(action_execution_id: &str) -> ItemKey {
    ItemKey::new(format!("CLAIM#{action_execution_id}"), "CLAIM")
}

fn idempotency_key(scope: &str, key: &str) -> ItemKey {
    ItemKey::new(format!("IDEMPOTENCY#{scope}#{key}"), "IDEMPOTENCY")
}

fn to_body<T: Serialize>(value: &T) -> Result<Value, AppError> {
    serde_json::to_value(value).map_err(|e| AppError::Internal(format!("encoding state: {e}")))
}

fn from_item<T: for<'de> Deserialize<'de>>(item: &Item) -> Result<T, AppError> {
    serde_json::from_value(item.body.clone()).map_err(|e| {
        AppError::Internal(format!(
            "stored item {}/{} is unreadable: {e}",
            item.key.pk, item.key.sk
        ))
    })
}

/// How many versions the declaration store keeps per page when listing.
const PAGE_MAX: usize = 1000;

#[derive(Clone)]
pub struct Repository {
    store: Arc<dyn ItemStore>,
}

impl Repository {
    pub fn new(store: Arc<dyn ItemStore>) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Arc<dyn ItemStore> {
        &self.store
    }

    /// Create a pipeline: its current declaration, version 1 and an empty runtime document,
    /// all or nothing. A taken name is `PipelineNameInUseException`.
    pub async fn create_pipeline(&self, record: &PipelineRecord) -> Result<(), AppError> {
        let name = &record.declaration.name;
        let version = record.declaration.version.unwrap_or(1);
        let runtime = RuntimeDocument {
            state: PipelineState::new(record.declaration.clone()),
            outbox: Vec::new(),
            outbox_since: None,
        };
        let writes = vec![
            Write::Put {
                key: declaration_key(name),
                expect: Expect::Absent,
                body: to_body(record)?,
                index: Some(ItemKey::new("PIPELINES", name.clone())),
                expires_at: None,
            },
            Write::Put {
                key: declaration_version_key(name, version),
                expect: Expect::Absent,
                body: to_body(&record.declaration)?,
                index: None,
                expires_at: None,
            },
            Write::Put {
                key: state_key(name),
                expect: Expect::Absent,
                body: to_body(&runtime)?,
                index: None,
                expires_at: None,
            },
        ];
        match self.store.transact(writes).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(AppError::PipelineNameInUse(name.clone())),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_pipeline(&self, name: &str) -> Result<Versioned<PipelineRecord>, AppError> {
        let item = self
            .store
            .get(&declaration_key(name))
            .await?
            .ok_or_else(|| AppError::PipelineNotFound(name.to_string()))?;
        Ok(Versioned {
            value: from_item(&item)?,
            version: item.version,
        })
    }

    pub async fn get_pipeline_version(
        &self,
        name: &str,
        version: i64,
    ) -> Result<PipelineDeclaration, AppError> {
        let item = self
            .store
            .get(&declaration_version_key(name, version))
            .await?
            .ok_or_else(|| {
                AppError::PipelineVersionNotFound(format!(
                    "pipeline {name} has no version {version}"
                ))
            })?;
        from_item(&item)
    }

    /// Store a new version as current, conditional on the current record read earlier.
    pub async fn put_pipeline_version(
        &self,
        current: &Versioned<PipelineRecord>,
        next: &PipelineRecord,
    ) -> Result<(), AppError> {
        let name = &next.declaration.name;
        let version = next.declaration.version.unwrap_or(1);
        let writes = vec![
            Write::Put {
                key: declaration_key(name),
                expect: Expect::Version(current.version),
                body: to_body(next)?,
                index: Some(ItemKey::new("PIPELINES", name.clone())),
                expires_at: None,
            },
            Write::Put {
                key: declaration_version_key(name, version),
                expect: Expect::Absent,
                body: to_body(&next.declaration)?,
                index: None,
                expires_at: None,
            },
        ];
        self.store.transact(writes).await?;
        Ok(())
    }

    /// Replace the tags (or other metadata) of the current record.
    pub async fn put_pipeline_record(
        &self,
        current: &Versioned<PipelineRecord>,
        next: &PipelineRecord,
    ) -> Result<(), AppError> {
        self.store
            .put(
                declaration_key(&next.declaration.name),
                Expect::Version(current.version),
                to_body(next)?,
                Some(ItemKey::new("PIPELINES", next.declaration.name.clone())),
                None,
            )
            .await?;
        Ok(())
    }

    /// Delete a pipeline's declaration items and runtime document. Execution history stays
    /// readable by id, as CodePipeline keeps it.
    pub async fn delete_pipeline(&self, name: &str) -> Result<(), AppError> {
        let mut writes = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .query(&Query {
                    index: IndexName::Primary,
                    pk: pipeline_pk(name),
                    sk_prefix: None,
                    after: after.clone(),
                    limit: PAGE_MAX,
                    descending: false,
                })
                .await?;
            for item in &page.items {
                writes.push(Write::Delete {
                    key: item.key.clone(),
                    version: item.version,
                });
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        if writes.is_empty() {
            return Err(AppError::PipelineNotFound(name.to_string()));
        }
        // Many versions may exceed one transaction; the current declaration goes last so a
        // partial delete leaves a pipeline that can still be deleted again.
        writes.sort_by_key(|w| w.key().sk == "DECLARATION");
        for chunk in writes.chunks(crate::store::MAX_TRANSACTION_WRITES) {
            self.store.transact(chunk.to_vec()).await?;
        }
        Ok(())
    }

    /// One page of pipeline names, in name order.
    pub async fn list_pipelines(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<PipelineRecord>, Option<String>), AppError> {
        let page = self
            .store
            .query(&Query {
                index: IndexName::Gsi1,
                pk: "PIPELINES".into(),
                sk_prefix: None,
                after,
                limit,
                descending: false,
            })
            .await?;
        let records = page
            .items
            .iter()
            .map(from_item)
            .collect::<Result<Vec<PipelineRecord>, _>>()?;
        Ok((records, page.next))
    }

    pub async fn load_runtime(&self, name: &str) -> Result<Versioned<RuntimeDocument>, AppError> {
        let item = self
            .store
            .get(&state_key(name))
            .await?
            .ok_or_else(|| AppError::PipelineNotFound(name.to_string()))?;
        Ok(Versioned {
            value: from_item(&item)?,
            version: item.version,
        })
    }

    /// Write the runtime document conditional on `expected`, with the execution snapshots
    /// that must change with it. Returns the new version.
    pub async fn save_runtime(
        &self,
        name: &str,
        document: &RuntimeDocument,
        expected: u64,
        executions: &[Execution],
    ) -> Result<u64, AppError> {
        let mut writes = vec![Write::Put {
            key: state_key(name),
            expect: Expect::Version(expected),
            body: to_body(document)?,
            index: document
                .is_active()
                .then(|| ItemKey::new("ACTIVE", name.to_string())),
            expires_at: None,
        }];
        for execution in executions {
            let key = execution_key(&execution.id);
            let current = self.store.get(&key).await?;
            writes.push(Write::Put {
                key,
                expect: match &current {
                    Some(item) => Expect::Version(item.version),
                    None => Expect::Absent,
                },
                body: to_body(execution)?,
                index: Some(executions_index(name, execution)),
                expires_at: None,
            });
        }
        let versions = self.store.transact(writes).await?;
        Ok(versions[0])
    }

    /// Names of pipelines with live work, for the sweeper.
    pub async fn active_pipelines(&self) -> Result<Vec<String>, AppError> {
        let mut names = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .query(&Query {
                    index: IndexName::Gsi1,
                    pk: "ACTIVE".into(),
                    sk_prefix: None,
                    after: after.clone(),
                    limit: PAGE_MAX,
                    descending: false,
                })
                .await?;
            names.extend(
                page.items
                    .iter()
                    .filter_map(|i| i.index.as_ref().map(|k| k.sk.clone())),
            );
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(names)
    }

    /// The stored snapshot of an execution (as of its start or its end).
    pub async fn get_execution_snapshot(&self, id: &str) -> Result<Option<Execution>, AppError> {
        match self.store.get(&execution_key(id)).await? {
            Some(item) => Ok(Some(from_item(&item)?)),
            None => Ok(None),
        }
    }

    /// Executions of a pipeline, newest first, one page at a time.
    pub async fn list_executions(
        &self,
        pipeline: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Execution>, Option<String>), AppError> {
        let page = self
            .store
            .query(&Query {
                index: IndexName::Gsi1,
                pk: format!("EXECUTIONS#{pipeline}"),
                sk_prefix: None,
                after,
                limit,
                descending: true,
            })
            .await?;
        let executions = page
            .items
            .iter()
            .map(from_item)
            .collect::<Result<Vec<Execution>, _>>()?;
        Ok((executions, page.next))
    }

    /// Claim an action attempt for `claim.owner`. `false` when it was already claimed:
    /// the attempt is then someone else's and must not run again.
    pub async fn claim_attempt(
        &self,
        action_execution_id: &str,
        claim: &Claim,
    ) -> Result<bool, AppError> {
        match self
            .store
            .put(
                claim_key(action_execution_id),
                Expect::Absent,
                to_body(claim)?,
                None,
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_claim(&self, action_execution_id: &str) -> Result<Option<Claim>, AppError> {
        match self.store.get(&claim_key(action_execution_id)).await? {
            Some(item) => Ok(Some(from_item(&item)?)),
            None => Ok(None),
        }
    }

    /// The answer remembered for an idempotency key, if it is still remembered.
    pub async fn recall(&self, scope: &str, key: &str) -> Result<Option<Value>, AppError> {
        Ok(self
            .store
            .get(&idempotency_key(scope, key))
            .await?
            .map(|item| item.body))
    }

    /// Remember `answer` for an idempotency key; returns the earlier answer when the key was
    /// already used (and not expired).
    pub async fn remember(
        &self,
        scope: &str,
        key: &str,
        answer: &Value,
        expires_at: i64,
    ) -> Result<Option<Value>, AppError> {
        let item_key = idempotency_key(scope, key);
        match self
            .store
            .put(
                item_key.clone(),
                Expect::Absent,
                answer.clone(),
                None,
                Some(expires_at),
            )
            .await
        {
            Ok(_) => Ok(None),
            Err(StoreError::Conflict { .. }) => {
                let existing = self.store.get(&item_key).await?;
                Ok(Some(existing.map(|i| i.body).unwrap_or(Value::Null)))
            }
            Err(e) => Err(e.into()),
        }
    }
}
