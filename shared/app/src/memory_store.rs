//! An in-memory [`ItemStore`] with the real stores' semantics, for tests and the simulator.
//!
//! It is a faithful fake, not a map with a trait on it: writes are conditional, transactions are
//! all-or-nothing, versions count from 1, expired items are absent, and queries page like the
//! real ones. It can also be told to fail its next calls, so retry paths can be tested.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::store::{
    Expect, IndexName, Item, ItemKey, ItemStore, Page, Query, StoreError, Write, is_live,
    validate_query, validate_transaction,
};

/// The store's notion of "now", in epoch seconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The current system time in epoch seconds.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

pub struct MemoryStore {
    clock: Clock,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    items: BTreeMap<ItemKey, Item>,
    /// Failures to return instead of doing the next calls.
    fail_before: Vec<StoreError>,
    /// Failures to return after applying the next transactions: the write happened, but the
    /// caller cannot know (a timeout after DynamoDB committed).
    fail_after_commit: Vec<StoreError>,
}

impl MemoryStore {
    /// A store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(system_clock())
    }

    /// A store whose "now" (epoch seconds) comes from `clock`, so tests can move time.
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            clock,
            state: Mutex::new(State::default()),
        }
    }

    /// Make the next `calls` calls (get, transact or query) fail with `error`, changing nothing.
    /// Replaces any injected failures still pending.
    pub fn fail_next(&self, calls: usize, error: StoreError) {
        let mut state = self.lock();
        state.fail_before = std::iter::repeat_n(error, calls).collect();
    }

    /// Make the next `transactions` transactions apply their writes and then report `error`,
    /// as when a response is lost after the backend committed.
    pub fn fail_next_after_commit(&self, transactions: usize, error: StoreError) {
        let mut state = self.lock();
        state.fail_after_commit = std::iter::repeat_n(error, transactions).collect();
    }

    /// Every live item, in key order: lets tests look at the whole state at once.
    pub fn snapshot(&self) -> Vec<Item> {
        let now = (self.clock)();
        let state = self.lock();
        state
            .items
            .values()
            .filter(|item| is_live(item.expires_at, now))
            .cloned()
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied transaction behind (writes
        // are applied only after every check passed, without panicking code in between), so
        // the state is still consistent and later calls may go on using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    fn injected_failure(&mut self) -> Result<(), StoreError> {
        match self.fail_before.pop() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn live(&self, key: &ItemKey, now: i64) -> Option<&Item> {
        self.items
            .get(key)
            .filter(|item| is_live(item.expires_at, now))
    }

    fn holds(&self, key: &ItemKey, expect: Expect, now: i64) -> bool {
        match (self.live(key, now), expect) {
            (None, Expect::Absent) => true,
            (Some(item), Expect::Version(version)) => item.version == version,
            _ => false,
        }
    }
}

fn conflict(key: &ItemKey) -> StoreError {
    StoreError::Conflict {
        pk: key.pk.clone(),
        sk: key.sk.clone(),
    }
}

#[async_trait]
impl ItemStore for MemoryStore {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, StoreError> {
        let now = (self.clock)();
        let mut state = self.lock();
        state.injected_failure()?;
        Ok(state.live(key, now).cloned())
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        let now = (self.clock)();
        let mut state = self.lock();
        state.injected_failure()?;
        validate_transaction(&writes)?;

        for write in &writes {
            let holds = match write {
                Write::Put { key, expect, .. } | Write::Check { key, expect } => {
                    state.holds(key, *expect, now)
                }
                Write::Delete { key, version } => state.holds(key, Expect::Version(*version), now),
            };
            if !holds {
                return Err(conflict(write.key()));
            }
        }

        let mut versions = Vec::with_capacity(writes.len());
        for write in writes {
            match write {
                Write::Put {
                    key,
                    expect,
                    body,
                    index,
                    expires_at,
                } => {
                    let version = match expect {
                        Expect::Absent => 1,
                        Expect::Version(version) => version + 1,
                    };
                    versions.push(version);
                    state.items.insert(
                        key.clone(),
                        Item {
                            key,
                            version,
                            body,
                            index,
                            expires_at,
                        },
                    );
                }
                Write::Delete { key, .. } => {
                    state.items.remove(&key);
                    versions.push(0);
                }
                Write::Check { .. } => versions.push(0),
            }
        }

        match state.fail_after_commit.pop() {
            Some(error) => Err(error),
            None => Ok(versions),
        }
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        let now = (self.clock)();
        let mut state = self.lock();
        state.injected_failure()?;
        validate_query(query)?;

        // (sort key, item) in sort-key order; on the index, ties between equal index sort keys
        // are broken by the primary key so the order is stable.
        let mut matching: Vec<(&str, &Item)> = match query.index {
            IndexName::Primary => {
                let start = ItemKey::new(query.pk.clone(), String::new());
                state
                    .items
                    .range((Bound::Included(start), Bound::Unbounded))
                    .take_while(|(key, _)| key.pk == query.pk)
                    .map(|(key, item)| (key.sk.as_str(), item))
                    .collect()
            }
            IndexName::Gsi1 => {
                let mut indexed: Vec<(&str, &Item)> = state
                    .items
                    .values()
                    .filter_map(|item| {
                        let index = item.index.as_ref()?;
                        (index.pk == query.pk).then_some((index.sk.as_str(), item))
                    })
                    .collect();
                indexed.sort_by(|(a_sk, a), (b_sk, b)| a_sk.cmp(b_sk).then(a.key.cmp(&b.key)));
                indexed
            }
        };
        if query.descending {
            matching.reverse();
        }

        let mut selected = matching
            .into_iter()
            .filter(|(sk, item)| {
                is_live(item.expires_at, now)
                    && query
                        .sk_prefix
                        .as_deref()
                        .is_none_or(|prefix| sk.starts_with(prefix))
                    && query.after.as_deref().is_none_or(|after| {
                        if query.descending {
                            *sk < after
                        } else {
                            *sk > after
                        }
                    })
            })
            .peekable();

        let mut items = Vec::new();
        let mut last_sk = None;
        while items.len() < query.limit {
            let Some((sk, item)) = selected.next() else {
                break;
            };
            last_sk = Some(sk.to_owned());
            items.push(item.clone());
        }
        let next = if selected.peek().is_some() {
            last_sk
        } else {
            None
        };
        Ok(Page { items, next })
    }
}
