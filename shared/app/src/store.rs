//! The state store port: a versioned item store with conditional writes and transactions.
//!
//! Every piece of state (pipeline declarations, the pipeline runtime document, execution
//! history, idempotency records, approval tokens) is an [`Item`] under a two-part key. The port
//! is deliberately the intersection of what DynamoDB and SQLite do well, so the DynamoDB, SQLite
//! and in-memory stores can share one conformance suite and behave the same:
//!
//! - Architecture Invariant: there is no blind overwrite. Every write states what it expects to
//!   find ([`Expect::Absent`] or [`Expect::Version`]); a stale expectation fails with
//!   [`StoreError::Conflict`], like DynamoDB's `ConditionalCheckFailed`.
//! - A transaction applies all of its writes or none of them.
//! - An item whose `expires_at` has passed counts as absent for [`Expect::Absent`] and is not
//!   returned by reads (DynamoDB's TTL deletes lazily; the adapters hide that difference).

use async_trait::async_trait;
use serde_json::Value;

/// An item's primary key: partition key and sort key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemKey {
    pub pk: String,
    pub sk: String,
}

impl ItemKey {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }
}

/// A stored item. `version` starts at 1 and grows by one on every write.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: ItemKey,
    pub version: u64,
    pub body: Value,
    /// The secondary index key (`gsi1pk`, `gsi1sk`), when the item is indexed.
    pub index: Option<ItemKey>,
    /// Epoch seconds after which the item counts as absent.
    pub expires_at: Option<i64>,
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No live item under the key (an expired one counts as absent).
    Absent,
    /// A live item at exactly this version.
    Version(u64),
}

/// One write inside [`ItemStore::transact`] (or alone, through the single-write helpers).
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Create or replace. The new version is 1 after `Absent`, `v + 1` after `Version(v)`.
    Put {
        key: ItemKey,
        expect: Expect,
        body: Value,
        index: Option<ItemKey>,
        expires_at: Option<i64>,
    },
    /// Remove an item at exactly this version.
    Delete { key: ItemKey, version: u64 },
    /// Change nothing, but fail the transaction unless the expectation holds.
    Check { key: ItemKey, expect: Expect },
}

impl Write {
    pub fn key(&self) -> &ItemKey {
        match self {
            Write::Put { key, .. } | Write::Delete { key, .. } | Write::Check { key, .. } => key,
        }
    }
}

/// Which key a query runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexName {
    Primary,
    /// The one global secondary index (`gsi1pk`/`gsi1sk`).
    Gsi1,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub index: IndexName,
    pub pk: String,
    /// Only sort keys starting with this prefix.
    pub sk_prefix: Option<String>,
    /// Resume after this sort key (exclusive), from a previous page's `next`.
    ///
    /// On [`IndexName::Gsi1`] this is the index sort key alone, so index sort keys should be
    /// unique within an index partition when results are paged: items sharing the index sort
    /// key of a page's last item would be skipped by the next page.
    pub after: Option<String>,
    pub limit: usize,
    /// Largest sort key first.
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Item>,
    /// The sort key to pass as `after` for the next page, when there may be more.
    pub next: Option<String>,
}

/// Most writes one transaction may carry (DynamoDB's `TransactWriteItems` limit).
pub const MAX_TRANSACTION_WRITES: usize = 100;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// An expectation did not hold: reload and decide again.
    #[error("conditional write failed on {pk}/{sk}")]
    Conflict { pk: String, sk: String },
    /// The backend asked to slow down; retrying later can succeed.
    #[error("store throttled: {0}")]
    Throttled(String),
    /// The backend could not be reached or failed; retrying later can succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request itself is wrong (too many writes, the same key twice...); retrying cannot help.
    #[error("invalid store request: {0}")]
    Invalid(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Throttled(_) | StoreError::Unavailable(_))
    }
}

#[async_trait]
pub trait ItemStore: Send + Sync {
    /// The live item under `key`, if any.
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, StoreError>;

    /// Apply every write or none. At most [`MAX_TRANSACTION_WRITES`] writes, each key once.
    /// Returns the new version of each write in order (0 for deletes and checks).
    async fn transact(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError>;

    /// Items under one partition key of the primary key or the secondary index, in sort-key
    /// order, one page at a time.
    async fn query(&self, query: &Query) -> Result<Page, StoreError>;

    /// A single conditional put; returns the new version.
    async fn put(
        &self,
        key: ItemKey,
        expect: Expect,
        body: Value,
        index: Option<ItemKey>,
        expires_at: Option<i64>,
    ) -> Result<u64, StoreError> {
        let versions = self
            .transact(vec![Write::Put {
                key,
                expect,
                body,
                index,
                expires_at,
            }])
            .await?;
        Ok(versions[0])
    }
}

/// Whether an item with this expiry is live at `now` (epoch seconds). Every store uses this one
/// rule, so "expired" means the same in the fake, on SQLite and on DynamoDB.
pub fn is_live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|at| now <= at)
}

/// The checks every store makes before looking at any item: a transaction carries between one
/// and [`MAX_TRANSACTION_WRITES`] writes and names each key at most once (DynamoDB rejects the
/// same, so the other stores must too).
pub fn validate_transaction(writes: &[Write]) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Err(StoreError::Invalid(
            "a transaction needs at least one write".into(),
        ));
    }
    if writes.len() > MAX_TRANSACTION_WRITES {
        return Err(StoreError::Invalid(format!(
            "a transaction carries at most {MAX_TRANSACTION_WRITES} writes, got {}",
            writes.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(writes.len());
    for write in writes {
        let key = write.key();
        if !seen.insert(key) {
            return Err(StoreError::Invalid(format!(
                "the transaction names {}/{} more than once",
                key.pk, key.sk
            )));
        }
    }
    Ok(())
}

/// The checks every store makes on a query before running it.
pub fn validate_query(query: &Query) -> Result<(), StoreError> {
    if query.limit == 0 {
        return Err(StoreError::Invalid(
            "a query limit must be at least 1".into(),
        ));
    }
    Ok(())
}
