//! The conformance suite every [`ItemStore`] must pass, so the in-memory, SQLite and DynamoDB
//! stores behave the same.
//!
//! It is plain public code (no cargo feature): it needs nothing beyond what this crate already
//! depends on. Two ways to run it:
//!
//! - [`item_store_conformance_tests!`](crate::item_store_conformance_tests) expands to one
//!   `#[tokio::test]` per case for a store constructor. The calling crate needs `tokio` (with
//!   `macros` and `rt-multi-thread`) among its dev-dependencies. The constructor is any
//!   expression, evaluated inside the async test, so it may `.await`:
//!   ```text
//!   penstock_app::item_store_conformance_tests!(MemoryStore::new());
//!   penstock_app::item_store_conformance_tests!(dynamo_store_on_moto().await);
//!   ```
//! - [`run_all`] runs every case and returns the failures, for callers that want one test.
//!
//! Each case gets a fresh store, and every key it writes carries a partition key unique to that
//! run, so a store backed by one shared table (DynamoDB on moto) can run cases in parallel.
//! Expiry is tested with `expires_at` in the past or future of the system clock, so the suite
//! runs on any store without controlling its clock.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::store::{
    Expect, IndexName, Item, ItemKey, ItemStore, MAX_TRANSACTION_WRITES, Page, Query, StoreError,
    Write,
};

/// Why a case failed, in words a test report can show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CaseFailure(pub String);

pub type CaseResult = Result<(), CaseFailure>;

/// The store under test, shared so concurrent cases can hand it to spawned tasks.
pub type Store = Arc<dyn ItemStore>;

type CaseFuture = Pin<Box<dyn Future<Output = CaseResult> + Send>>;

/// One named case of the suite.
pub struct Case {
    pub name: &'static str,
    pub run: fn(Store) -> CaseFuture,
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        /// Every case, in the order [`item_store_conformance_tests!`](crate::item_store_conformance_tests) lists them.
        pub fn cases() -> Vec<Case> {
            vec![$(Case { name: stringify!($case), run: |store| Box::pin($case(store)) }),*]
        }
    };
}

cases!(
    get_missing,
    put_absent_then_get,
    put_absent_twice_conflicts,
    put_with_version_increments,
    stale_version_conflicts_and_leaves_item_unchanged,
    version_on_missing_item_conflicts,
    delete_with_wrong_version_conflicts,
    delete_with_right_version_removes,
    transaction_applies_every_write,
    transaction_is_all_or_nothing,
    transaction_conflict_names_first_failing_key,
    transaction_with_same_key_twice_is_invalid,
    transaction_over_limit_is_invalid,
    empty_transaction_is_invalid,
    expired_item_is_absent,
    expired_item_is_hidden_from_queries,
    query_by_prefix,
    query_pages_through_next,
    query_descending,
    query_secondary_index,
    query_with_zero_limit_is_invalid,
    concurrent_increments_lose_no_update,
);

/// The names of every case, in order.
pub fn case_names() -> Vec<&'static str> {
    cases().into_iter().map(|case| case.name).collect()
}

/// Run every case, each on a fresh store from `make`, and return the failures by case name.
pub async fn run_all<S, F, Fut>(make: F) -> Vec<(&'static str, CaseFailure)>
where
    S: ItemStore + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let mut failures = Vec::new();
    for case in cases() {
        let store: Store = Arc::new(make().await);
        if let Err(failure) = (case.run)(store).await {
            failures.push((case.name, failure));
        }
    }
    failures
}

/// Expands to one `#[tokio::test]` per conformance case, each on a store made by `$make` (an
/// expression evaluated inside the async test; it may `.await`), plus a test that the list is
/// complete.
#[macro_export]
macro_rules! item_store_conformance_tests {
    ($make:expr) => {
        $crate::item_store_conformance_tests!(@cases $make;
            get_missing,
            put_absent_then_get,
            put_absent_twice_conflicts,
            put_with_version_increments,
            stale_version_conflicts_and_leaves_item_unchanged,
            version_on_missing_item_conflicts,
            delete_with_wrong_version_conflicts,
            delete_with_right_version_removes,
            transaction_applies_every_write,
            transaction_is_all_or_nothing,
            transaction_conflict_names_first_failing_key,
            transaction_with_same_key_twice_is_invalid,
            transaction_over_limit_is_invalid,
            empty_transaction_is_invalid,
            expired_item_is_absent,
            expired_item_is_hidden_from_queries,
            query_by_prefix,
            query_pages_through_next,
            query_descending,
            query_secondary_index,
            query_with_zero_limit_is_invalid,
            concurrent_increments_lose_no_update,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store: $crate::store_conformance::Store = ::std::sync::Arc::new($make);
                if let Err(failure) = $crate::store_conformance::$case(store).await {
                    panic!("{}: {}", stringify!($case), failure);
                }
            }
        )*

        #[test]
        fn conformance_suite_is_complete() {
            assert_eq!(
                [$(stringify!($case)),*].as_slice(),
                $crate::store_conformance::case_names().as_slice(),
            );
        }
    };
}

fn fail(message: impl Into<String>) -> CaseResult {
    Err(CaseFailure(message.into()))
}

fn ensure(condition: bool, message: impl FnOnce() -> String) -> CaseResult {
    if condition { Ok(()) } else { fail(message()) }
}

fn ensure_eq<T: PartialEq + std::fmt::Debug>(actual: T, expected: T, what: &str) -> CaseResult {
    ensure(actual == expected, || {
        format!("{what}: expected {expected:?}, got {actual:?}")
    })
}

/// Turn an unexpected store error into a case failure.
fn step<T>(result: Result<T, StoreError>, what: &str) -> Result<T, CaseFailure> {
    result.map_err(|error| CaseFailure(format!("{what}: unexpected error {error}")))
}

fn expect_conflict<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    key: &ItemKey,
    what: &str,
) -> CaseResult {
    match result {
        Err(StoreError::Conflict { pk, sk }) if pk == key.pk && sk == key.sk => Ok(()),
        other => fail(format!(
            "{what}: expected a conflict on {}/{}, got {other:?}",
            key.pk, key.sk
        )),
    }
}

fn expect_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) -> CaseResult {
    match result {
        Err(StoreError::Invalid(_)) => Ok(()),
        other => fail(format!(
            "{what}: expected an invalid request, got {other:?}"
        )),
    }
}

/// A partition key no other run uses.
fn unique_pk(case: &str) -> String {
    format!("conformance#{case}#{}", uuid::Uuid::new_v4())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

/// Well past, so clock skew between the test and the store cannot matter.
fn long_ago() -> i64 {
    now() - 24 * 3600
}

fn far_ahead() -> i64 {
    now() + 24 * 3600
}

async fn put(store: &Store, key: &ItemKey, expect: Expect, body: Value) -> Result<u64, StoreError> {
    store.put(key.clone(), expect, body, None, None).await
}

fn primary(pk: &str, limit: usize) -> Query {
    Query {
        index: IndexName::Primary,
        pk: pk.to_owned(),
        sk_prefix: None,
        after: None,
        limit,
        descending: false,
    }
}

fn sort_keys(page: &Page) -> Vec<String> {
    page.items.iter().map(|item| item.key.sk.clone()).collect()
}

/// Every item of a query, page by page, checking each page keeps to the limit.
async fn collect_pages(store: &Store, mut query: Query) -> Result<Vec<Item>, CaseFailure> {
    let mut items = Vec::new();
    // A bound on the pages, so a store whose `next` never ends fails instead of hanging.
    for _ in 0..1000 {
        let page = step(store.query(&query).await, "query a page")?;
        ensure(page.items.len() <= query.limit, || {
            format!(
                "a page holds {} items, over the limit {}",
                page.items.len(),
                query.limit
            )
        })?;
        items.extend(page.items);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(items),
        }
    }
    Err(CaseFailure("a query never stopped returning `next`".into()))
}

pub async fn get_missing(store: Store) -> CaseResult {
    let key = ItemKey::new(unique_pk("get_missing"), "nothing");
    ensure_eq(
        step(store.get(&key).await, "get")?,
        None,
        "get a missing key",
    )
}

pub async fn put_absent_then_get(store: Store) -> CaseResult {
    let key = ItemKey::new(unique_pk("put_absent_then_get"), "item");
    let index = ItemKey::new(unique_pk("index"), "sort");
    let body = json!({"name": "build", "nested": {"list": [1, 2, 3]}, "unicode": "é✓"});
    let expires_at = far_ahead();
    let version = step(
        store
            .put(
                key.clone(),
                Expect::Absent,
                body.clone(),
                Some(index.clone()),
                Some(expires_at),
            )
            .await,
        "put absent",
    )?;
    ensure_eq(version, 1, "the first version")?;
    let expected = Item {
        key: key.clone(),
        version: 1,
        body,
        index: Some(index),
        expires_at: Some(expires_at),
    };
    ensure_eq(
        step(store.get(&key).await, "get")?,
        Some(expected),
        "the stored item",
    )
}

pub async fn put_absent_twice_conflicts(store: Store) -> CaseResult {
    let key = ItemKey::new(unique_pk("put_absent_twice"), "item");
    step(
        put(&store, &key, Expect::Absent, json!({"n": 1})).await,
        "first put",
    )?;
    expect_conflict(
        put(&store, &key, Expect::Absent, json!({"n": 2})).await,
        &key,
        "second put absent",
    )?;
    let item = step(store.get(&key).await, "get")?;
    ensure_eq(
        item.map(|item| (item.version, item.body)),
        Some((1, json!({"n": 1}))),
        "the item after the refused put",
    )
}

pub async fn put_with_version_increments(store: Store) -> CaseResult {
    let key = ItemKey::new(unique_pk("put_with_version"), "item");
    step(
        put(&store, &key, Expect::Absent, json!({"n": 1})).await,
        "put absent",
    )?;
    let second = step(
        put(&store, &key, Expect::Version(1), json!({"n": 2})).await,
        "put at version 1",
    )?;
    ensure_eq(second, 2, "the version after one update")?;
    let third = step(
        put(&store, &key, Expect::Version(2), json!({"n": 3})).await,
        "put at version 2",
    )?;
    ensure_eq(third, 3, "the version after two updates")?;
    let item = step(store.get(&key).await, "get")?;
    ensure_eq(
        item.map(|item| (item.version, item.body)),
        Some((3, json!({"n": 3}))),
        "the updated item",
    )
}

pub async fn stale_version_conflicts_and_leaves_item_unchanged(store: Store) -> CaseResult {
    let key = ItemKey::new(unique_pk("stale_version"), "item");
    step(
        put(&store, &key, Expect::Absent, json!({"n": 1})).await,
        "put absent",
    )?;
    step(
        put(&store, &key, Expect::Version(1), json!({"n": 2})).await,
        "put at version 1",
    )?;
    let before = step(store.get(&key).await, "get before")?;
    expect_conflict(
        put(&store, &key, Expect::Version(1), json!({"n": "stale"})).await,
        &key,
        "put at a stale version",
    )?;
    expect_conflict(
        put(&store, &key, Expect::Version(7), json!({"n": "future"})).await,
        &key,
        "put at a version never written",
    )?;
    ensure_eq(
        step(store.get(&key).await, "get after")?,
        before,
        "the item after stale puts",
    )
}

pub async fn version_on_missing_item_conflicts(store: Store) -> CaseResult {
    let key = ItemKey::new(unique_pk("version_on_missing"), "item");
    expect_conflict(
        put(&store, &key, Expect::Version(1), json!({})).await,
        &key,
        "put at a version of a missing item",
    )?;
    ensure_eq(
        step(store.get(&key).await, "get")?,
        None,
        "the missing item",
    )
}

pub async fn delete_with_wrong_version_conflicts(store: Store) -> CaseResult {
    let key = ItemKey::new(unique_pk("delete_wrong_version"), "item");
    step(
        put(&store, &key, Expect::Absent, json!({"n": 1})).await,
        "put absent",
    )?;
    let delete = |version| {
        let store = store.clone();
        let key = key.clone();
        async move { store.transact(vec![Write::Delete { key, version }]).await }
    };
    expect_conflict(delete(2).await, &key, "delete at a wrong version")?;
    let item = step(store.get(&key).await, "get")?;
    ensure_eq(
        item.map(|item| item.version),
        Some(1),
        "the item after a refused delete",
    )?;
    let missing = ItemKey::new(unique_pk("delete_missing"), "item");
    expect_conflict(
        store
            .transact(vec![Write::Delete {
                key: missing.clone(),
                version: 1,
            }])
            .await,
        &missing,
        "delete a missing item",
    )
}

pub async fn delete_with_right_version_removes(store: Store) -> CaseResult {
    let key = ItemKey::new(unique_pk("delete_right_version"), "item");
    step(
        put(&store, &key, Expect::Absent, json!({"n": 1})).await,
        "put absent",
    )?;
    step(
        put(&store, &key, Expect::Version(1), json!({"n": 2})).await,
        "put at version 1",
    )?;
    let versions = step(
        store
            .transact(vec![Write::Delete {
                key: key.clone(),
                version: 2,
            }])
            .await,
        "delete",
    )?;
    ensure_eq(versions, vec![0], "what a delete returns")?;
    ensure_eq(
        step(store.get(&key).await, "get")?,
        None,
        "the deleted item",
    )?;
    let recreated = step(
        put(&store, &key, Expect::Absent, json!({"n": 3})).await,
        "put absent after delete",
    )?;
    ensure_eq(recreated, 1, "the version of a recreated item")
}

pub async fn transaction_applies_every_write(store: Store) -> CaseResult {
    let pk = unique_pk("transaction_applies");
    let updated = ItemKey::new(&pk, "updated");
    let created = ItemKey::new(&pk, "created");
    let deleted = ItemKey::new(&pk, "deleted");
    let checked = ItemKey::new(&pk, "checked");
    for key in [&updated, &deleted, &checked] {
        step(
            put(&store, key, Expect::Absent, json!({"n": 1})).await,
            "seed",
        )?;
    }
    let missing = ItemKey::new(&pk, "missing");
    let versions = step(
        store
            .transact(vec![
                Write::Put {
                    key: updated.clone(),
                    expect: Expect::Version(1),
                    body: json!({"n": 2}),
                    index: None,
                    expires_at: None,
                },
                Write::Put {
                    key: created.clone(),
                    expect: Expect::Absent,
                    body: json!({"n": 1}),
                    index: None,
                    expires_at: None,
                },
                Write::Delete {
                    key: deleted.clone(),
                    version: 1,
                },
                Write::Check {
                    key: checked.clone(),
                    expect: Expect::Version(1),
                },
                Write::Check {
                    key: missing,
                    expect: Expect::Absent,
                },
            ])
            .await,
        "transaction",
    )?;
    ensure_eq(
        versions,
        vec![2, 1, 0, 0, 0],
        "the versions a transaction returns",
    )?;
    let version_of = |key: ItemKey| {
        let store = store.clone();
        async move { step(store.get(&key).await, "get").map(|item| item.map(|item| item.version)) }
    };
    ensure_eq(version_of(updated).await?, Some(2), "the updated item")?;
    ensure_eq(version_of(created).await?, Some(1), "the created item")?;
    ensure_eq(version_of(deleted).await?, None, "the deleted item")?;
    ensure_eq(version_of(checked).await?, Some(1), "the checked item")
}

pub async fn transaction_is_all_or_nothing(store: Store) -> CaseResult {
    let pk = unique_pk("all_or_nothing");
    let guard = ItemKey::new(&pk, "guard");
    let existing = ItemKey::new(&pk, "existing");
    let doomed = ItemKey::new(&pk, "doomed");
    step(
        put(&store, &guard, Expect::Absent, json!({})).await,
        "seed guard",
    )?;
    step(
        put(&store, &existing, Expect::Absent, json!({"n": 1})).await,
        "seed existing",
    )?;
    let result = store
        .transact(vec![
            Write::Put {
                key: existing.clone(),
                expect: Expect::Version(1),
                body: json!({"n": 2}),
                index: None,
                expires_at: None,
            },
            Write::Put {
                key: doomed.clone(),
                expect: Expect::Absent,
                body: json!({}),
                index: None,
                expires_at: None,
            },
            Write::Delete {
                key: guard.clone(),
                version: 1,
            },
            // Fails: nothing lives under this key.
            Write::Check {
                key: ItemKey::new(&pk, "guard-check"),
                expect: Expect::Version(1),
            },
        ])
        .await;
    expect_conflict(
        result,
        &ItemKey::new(&pk, "guard-check"),
        "a transaction with a failing check",
    )?;
    let existing_after = step(store.get(&existing).await, "get existing")?;
    ensure_eq(
        existing_after.map(|item| (item.version, item.body)),
        Some((1, json!({"n": 1}))),
        "the item a failed transaction would have updated",
    )?;
    ensure_eq(
        step(store.get(&doomed).await, "get doomed")?,
        None,
        "the item a failed transaction would have created",
    )?;
    let guard_after = step(store.get(&guard).await, "get guard")?;
    ensure_eq(
        guard_after.map(|item| item.version),
        Some(1),
        "the item a failed transaction would have deleted",
    )
}

pub async fn transaction_conflict_names_first_failing_key(store: Store) -> CaseResult {
    let pk = unique_pk("first_failing");
    let present = ItemKey::new(&pk, "a-present");
    let first_failing = ItemKey::new(&pk, "z-first");
    let second_failing = ItemKey::new(&pk, "b-second");
    step(
        put(&store, &present, Expect::Absent, json!({})).await,
        "seed",
    )?;
    let result = store
        .transact(vec![
            Write::Check {
                key: present,
                expect: Expect::Version(1),
            },
            Write::Check {
                key: first_failing.clone(),
                expect: Expect::Version(1),
            },
            Write::Put {
                key: second_failing,
                expect: Expect::Version(3),
                body: json!({}),
                index: None,
                expires_at: None,
            },
        ])
        .await;
    expect_conflict(result, &first_failing, "a transaction failing on two keys")
}

pub async fn transaction_with_same_key_twice_is_invalid(store: Store) -> CaseResult {
    let pk = unique_pk("same_key_twice");
    let key = ItemKey::new(&pk, "item");
    let other = ItemKey::new(&pk, "other");
    let result = store
        .transact(vec![
            Write::Put {
                key: other.clone(),
                expect: Expect::Absent,
                body: json!({}),
                index: None,
                expires_at: None,
            },
            Write::Put {
                key: key.clone(),
                expect: Expect::Absent,
                body: json!({}),
                index: None,
                expires_at: None,
            },
            Write::Check {
                key: key.clone(),
                expect: Expect::Absent,
            },
        ])
        .await;
    expect_invalid(result, "a transaction naming a key twice")?;
    ensure_eq(
        step(store.get(&other).await, "get")?,
        None,
        "a write of the refused transaction",
    )
}

pub async fn transaction_over_limit_is_invalid(store: Store) -> CaseResult {
    let pk = unique_pk("over_limit");
    let puts = |count: usize, prefix: &str| -> Vec<Write> {
        (0..count)
            .map(|n| Write::Put {
                key: ItemKey::new(&pk, format!("{prefix}-{n:03}")),
                expect: Expect::Absent,
                body: json!({"n": n}),
                index: None,
                expires_at: None,
            })
            .collect()
    };
    expect_invalid(
        store
            .transact(puts(MAX_TRANSACTION_WRITES + 1, "over"))
            .await,
        "a transaction over the limit",
    )?;
    let page = step(store.query(&primary(&pk, 10)).await, "query")?;
    ensure_eq(
        page.items.len(),
        0,
        "items written by the refused transaction",
    )?;
    let versions = step(
        store.transact(puts(MAX_TRANSACTION_WRITES, "full")).await,
        "a transaction at the limit",
    )?;
    ensure_eq(
        versions,
        vec![1; MAX_TRANSACTION_WRITES],
        "the versions of a full transaction",
    )
}

pub async fn empty_transaction_is_invalid(store: Store) -> CaseResult {
    expect_invalid(store.transact(Vec::new()).await, "an empty transaction")
}

pub async fn expired_item_is_absent(store: Store) -> CaseResult {
    let pk = unique_pk("expired");
    let key = ItemKey::new(&pk, "item");
    let version = step(
        store
            .put(
                key.clone(),
                Expect::Absent,
                json!({"n": 1}),
                None,
                Some(long_ago()),
            )
            .await,
        "put an expired item",
    )?;
    ensure_eq(version, 1, "the version of an expired put")?;
    ensure_eq(
        step(store.get(&key).await, "get")?,
        None,
        "get an expired item",
    )?;
    expect_conflict(
        put(&store, &key, Expect::Version(1), json!({"n": 2})).await,
        &key,
        "put at the version of an expired item",
    )?;
    expect_conflict(
        store
            .transact(vec![Write::Delete {
                key: key.clone(),
                version: 1,
            }])
            .await,
        &key,
        "delete an expired item",
    )?;
    let replaced = step(
        put(&store, &key, Expect::Absent, json!({"n": 3})).await,
        "put absent over an expired item",
    )?;
    ensure_eq(
        replaced,
        1,
        "the version of an item replacing an expired one",
    )?;
    let item = step(store.get(&key).await, "get the replacement")?;
    ensure_eq(
        item.map(|item| (item.version, item.body, item.expires_at)),
        Some((1, json!({"n": 3}), None)),
        "the replacement",
    )?;

    let later = ItemKey::new(&pk, "expires-later");
    step(
        store
            .put(
                later.clone(),
                Expect::Absent,
                json!({}),
                None,
                Some(far_ahead()),
            )
            .await,
        "put an item expiring later",
    )?;
    expect_conflict(
        put(&store, &later, Expect::Absent, json!({})).await,
        &later,
        "put absent over an item not yet expired",
    )
}

pub async fn expired_item_is_hidden_from_queries(store: Store) -> CaseResult {
    let pk = unique_pk("expired_query");
    let index_pk = unique_pk("expired_query_index");
    for (sk, expires_at) in [
        ("a", None),
        ("b", Some(long_ago())),
        ("c", Some(far_ahead())),
        ("d", Some(long_ago())),
    ] {
        step(
            store
                .put(
                    ItemKey::new(&pk, sk),
                    Expect::Absent,
                    json!({}),
                    Some(ItemKey::new(&index_pk, sk)),
                    expires_at,
                )
                .await,
            "seed",
        )?;
    }
    let live = collect_pages(&store, primary(&pk, 1)).await?;
    let live: Vec<&str> = live.iter().map(|item| item.key.sk.as_str()).collect();
    ensure_eq(live, vec!["a", "c"], "live items on the primary key")?;
    let mut on_index = primary(&index_pk, 10);
    on_index.index = IndexName::Gsi1;
    let indexed = collect_pages(&store, on_index).await?;
    let indexed: Vec<&str> = indexed.iter().map(|item| item.key.sk.as_str()).collect();
    ensure_eq(indexed, vec!["a", "c"], "live items on the index")
}

/// Items `item-00`..`item-24` plus a few outside the prefix, under a fresh partition key.
async fn seed_items(store: &Store, case: &str) -> Result<String, CaseFailure> {
    let pk = unique_pk(case);
    let mut writes: Vec<Write> = (0..25)
        .map(|n| Write::Put {
            key: ItemKey::new(&pk, format!("item-{n:02}")),
            expect: Expect::Absent,
            body: json!({"n": n}),
            index: None,
            expires_at: None,
        })
        .collect();
    for sk in ["a-before", "itel", "item", "iten-after", "z-after"] {
        writes.push(Write::Put {
            key: ItemKey::new(&pk, sk),
            expect: Expect::Absent,
            body: json!({}),
            index: None,
            expires_at: None,
        });
    }
    // Items under neighbouring partition keys must never show up.
    for neighbour in [format!("{pk}-"), pk[..pk.len() - 1].to_owned()] {
        writes.push(Write::Put {
            key: ItemKey::new(neighbour, "item-00x"),
            expect: Expect::Absent,
            body: json!({}),
            index: None,
            expires_at: None,
        });
    }
    step(store.transact(writes).await, "seed items")?;
    Ok(pk)
}

fn expected_items(range: impl Iterator<Item = usize>) -> Vec<String> {
    range.map(|n| format!("item-{n:02}")).collect()
}

pub async fn query_by_prefix(store: Store) -> CaseResult {
    let pk = seed_items(&store, "query_prefix").await?;
    let mut query = primary(&pk, 100);
    query.sk_prefix = Some("item-".into());
    let page = step(store.query(&query).await, "query by prefix")?;
    ensure_eq(
        sort_keys(&page),
        expected_items(0..25),
        "items with the prefix",
    )?;
    ensure_eq(page.next, None, "next after the whole partition")?;

    query.sk_prefix = Some("item-1".into());
    let page = step(store.query(&query).await, "query by a narrower prefix")?;
    ensure_eq(
        sort_keys(&page),
        expected_items(10..20),
        "items with a narrower prefix",
    )?;

    query.sk_prefix = Some("nothing".into());
    let page = step(store.query(&query).await, "query by an unused prefix")?;
    ensure_eq(
        sort_keys(&page),
        Vec::<String>::new(),
        "items with an unused prefix",
    )?;

    let all = step(store.query(&primary(&pk, 100)).await, "query the partition")?;
    ensure_eq(all.items.len(), 30, "items in the partition")?;
    let keys = sort_keys(&all);
    let mut sorted = keys.clone();
    sorted.sort();
    ensure_eq(keys, sorted, "the order of a query")
}

pub async fn query_pages_through_next(store: Store) -> CaseResult {
    let pk = seed_items(&store, "query_pages").await?;
    for limit in [1, 7, 25, 26] {
        for descending in [false, true] {
            let mut query = primary(&pk, limit);
            query.sk_prefix = Some("item-".into());
            query.descending = descending;
            let items = collect_pages(&store, query).await?;
            let mut expected = expected_items(0..25);
            if descending {
                expected.reverse();
            }
            let keys: Vec<String> = items.into_iter().map(|item| item.key.sk).collect();
            ensure_eq(
                keys,
                expected,
                &format!("items paged by {limit}, descending: {descending}"),
            )?;
        }
    }
    // A page that stops before the end says where to go on.
    let mut query = primary(&pk, 7);
    query.sk_prefix = Some("item-".into());
    let first = step(store.query(&query).await, "first page")?;
    ensure_eq(sort_keys(&first), expected_items(0..7), "the first page")?;
    ensure_eq(
        first.next.as_deref(),
        Some("item-06"),
        "next after the first page",
    )?;
    // `after` is exclusive, and need not be a key that exists.
    query.after = Some("item-06x".into());
    let resumed = step(store.query(&query).await, "a page after a missing key")?;
    ensure_eq(
        sort_keys(&resumed),
        expected_items(7..14),
        "the page after a missing key",
    )
}

pub async fn query_descending(store: Store) -> CaseResult {
    let pk = seed_items(&store, "query_descending").await?;
    let mut query = primary(&pk, 3);
    query.descending = true;
    let page = step(store.query(&query).await, "query descending")?;
    ensure_eq(
        sort_keys(&page),
        vec!["z-after".to_owned(), "iten-after".into(), "item-24".into()],
        "the largest sort keys",
    )?;
    ensure(page.next.is_some(), || "a partial page without next".into())?;
    query.sk_prefix = Some("item-".into());
    query.after = Some("item-10".into());
    let page = step(store.query(&query).await, "query descending after")?;
    ensure_eq(
        sort_keys(&page),
        expected_items([9, 8, 7].into_iter()),
        "descending after a key",
    )
}

pub async fn query_secondary_index(store: Store) -> CaseResult {
    let pk = unique_pk("gsi_items");
    let index_pk = unique_pk("gsi");
    let other_index_pk = unique_pk("gsi_other");
    let mut writes = Vec::new();
    for n in 0..12 {
        // Item keys run against index keys, so the index order is visibly its own.
        writes.push(Write::Put {
            key: ItemKey::new(&pk, format!("item-{:02}", 11 - n)),
            expect: Expect::Absent,
            body: json!({"n": n}),
            index: Some(ItemKey::new(&index_pk, format!("by-{n:02}"))),
            expires_at: None,
        });
    }
    writes.push(Write::Put {
        key: ItemKey::new(&pk, "elsewhere"),
        expect: Expect::Absent,
        body: json!({}),
        index: Some(ItemKey::new(&other_index_pk, "by-00")),
        expires_at: None,
    });
    writes.push(Write::Put {
        key: ItemKey::new(&pk, "unindexed"),
        expect: Expect::Absent,
        body: json!({}),
        index: None,
        expires_at: None,
    });
    step(store.transact(writes).await, "seed")?;

    let mut query = primary(&index_pk, 5);
    query.index = IndexName::Gsi1;
    let items = collect_pages(&store, query.clone()).await?;
    let bodies: Vec<Value> = items.iter().map(|item| item.body["n"].clone()).collect();
    ensure_eq(
        bodies,
        (0..12).map(Value::from).collect(),
        "items in index order",
    )?;
    let first = &items[0];
    ensure_eq(
        (first.key.clone(), first.index.clone(), first.version),
        (
            ItemKey::new(&pk, "item-11"),
            Some(ItemKey::new(&index_pk, "by-00")),
            1,
        ),
        "an item read through the index",
    )?;

    query.descending = true;
    query.sk_prefix = Some("by-0".into());
    let items = collect_pages(&store, query).await?;
    let bodies: Vec<Value> = items.iter().map(|item| item.body["n"].clone()).collect();
    ensure_eq(
        bodies,
        (0..10).rev().map(Value::from).collect(),
        "items by index prefix, descending",
    )?;

    let mut other = primary(&other_index_pk, 10);
    other.index = IndexName::Gsi1;
    let page = step(store.query(&other).await, "query another index partition")?;
    ensure_eq(
        sort_keys(&page),
        vec!["elsewhere".to_owned()],
        "the other index partition",
    )?;

    // The index moves when an item's index key changes, and leaves when it is dropped.
    let moved = ItemKey::new(&pk, "item-11");
    step(
        store
            .put(
                moved.clone(),
                Expect::Version(1),
                json!({"n": "moved"}),
                Some(ItemKey::new(&other_index_pk, "by-01")),
                None,
            )
            .await,
        "move an item in the index",
    )?;
    step(
        store
            .put(
                ItemKey::new(&pk, "item-10"),
                Expect::Version(1),
                json!({}),
                None,
                None,
            )
            .await,
        "drop an item from the index",
    )?;
    let page = step(store.query(&other).await, "query after the move")?;
    ensure_eq(
        sort_keys(&page),
        vec!["elsewhere".to_owned(), "item-11".into()],
        "the index partition an item moved to",
    )?;
    let mut original = primary(&index_pk, 100);
    original.index = IndexName::Gsi1;
    let page = step(
        store.query(&original).await,
        "query the index after changes",
    )?;
    ensure_eq(
        page.items.len(),
        10,
        "items left in the original index partition",
    )
}

pub async fn query_with_zero_limit_is_invalid(store: Store) -> CaseResult {
    expect_invalid(
        store.query(&primary(&unique_pk("zero_limit"), 0)).await,
        "a query with limit 0",
    )
}

/// Concurrent tasks.
const RACERS: u64 = 8;
/// Successful increments per task.
const INCREMENTS: u64 = 25;

/// Tasks read-modify-write one counter at once, retrying on conflict; with no lost update the
/// counter ends at exactly the number of successful increments, and every increment saw a
/// distinct value.
pub async fn concurrent_increments_lose_no_update(store: Store) -> CaseResult {
    let key = ItemKey::new(unique_pk("race"), "counter");
    step(
        put(&store, &key, Expect::Absent, json!({"count": 0})).await,
        "seed the counter",
    )?;
    let mut tasks = tokio::task::JoinSet::new();
    for racer in 0..RACERS {
        let store = store.clone();
        let key = key.clone();
        tasks.spawn(async move { increment_repeatedly(store, key, racer).await });
    }
    let mut seen = BTreeSet::new();
    let mut successes = 0u64;
    while let Some(joined) = tasks.join_next().await {
        let written = joined.map_err(|error| CaseFailure(format!("a racer failed: {error}")))??;
        successes += written.len() as u64;
        for count in written {
            ensure(seen.insert(count), || {
                format!("two racers both wrote count {count}: an update was lost")
            })?;
        }
    }
    ensure_eq(successes, RACERS * INCREMENTS, "successful increments")?;
    let item = step(store.get(&key).await, "get the counter")?;
    ensure_eq(
        item.map(|item| (item.body["count"].as_u64(), item.version)),
        Some((Some(successes), successes + 1)),
        "the counter and its version after the race",
    )
}

/// Increment the counter [`INCREMENTS`] times; returns the count each success wrote.
async fn increment_repeatedly(
    store: Store,
    key: ItemKey,
    racer: u64,
) -> Result<Vec<u64>, CaseFailure> {
    let mut written = Vec::new();
    // Far more attempts than eight racers need; a store that never lets a write through fails.
    let mut attempts_left = 100_000u32;
    while (written.len() as u64) < INCREMENTS {
        attempts_left = attempts_left
            .checked_sub(1)
            .ok_or_else(|| CaseFailure(format!("racer {racer} ran out of attempts")))?;
        let item = match store.get(&key).await {
            Ok(Some(item)) => item,
            Ok(None) => return Err(CaseFailure("the counter vanished".into())),
            Err(error) if error.is_retryable() => continue,
            Err(error) => return Err(CaseFailure(format!("get the counter: {error}"))),
        };
        let count = item.body["count"]
            .as_u64()
            .ok_or_else(|| CaseFailure(format!("the counter body is {}", item.body)))?;
        // Give the other racers a chance to read the same version.
        tokio::task::yield_now().await;
        let body = json!({"count": count + 1, "last": racer});
        match put(&store, &key, Expect::Version(item.version), body).await {
            Ok(version) => {
                ensure_eq(version, item.version + 1, "the version after an increment")?;
                written.push(count + 1);
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(error) if error.is_retryable() => {}
            Err(error) => return Err(CaseFailure(format!("increment: {error}"))),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::memory_store::MemoryStore;
    use crate::store::{Item, Page};

    crate::item_store_conformance_tests!(MemoryStore::new());

    /// A store that breaks the central rule: every put overwrites whatever is there.
    struct BlindOverwrites(MemoryStore);

    #[async_trait]
    impl ItemStore for BlindOverwrites {
        async fn get(&self, key: &ItemKey) -> Result<Option<Item>, StoreError> {
            self.0.get(key).await
        }

        async fn transact(&self, mut writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
            for write in &mut writes {
                if let Write::Put { key, expect, .. } = write {
                    *expect = match self.0.get(key).await? {
                        Some(item) => Expect::Version(item.version),
                        None => Expect::Absent,
                    };
                }
            }
            self.0.transact(writes).await
        }

        async fn query(&self, query: &Query) -> Result<Page, StoreError> {
            self.0.query(query).await
        }
    }

    #[tokio::test]
    async fn the_suite_catches_a_store_that_ignores_expectations() {
        let failures = run_all(|| async { BlindOverwrites(MemoryStore::new()) }).await;
        let failed: Vec<&str> = failures.iter().map(|(name, _)| *name).collect();
        for case in [
            "put_absent_twice_conflicts",
            "stale_version_conflicts_and_leaves_item_unchanged",
            "version_on_missing_item_conflicts",
        ] {
            assert!(
                failed.contains(&case),
                "{case} passed on a blind store: {failed:?}"
            );
        }
        assert!(!failed.contains(&"get_missing"), "{failures:?}");
    }

    /// A store that claims every write worked but keeps nothing.
    struct Forgetful;

    #[async_trait]
    impl ItemStore for Forgetful {
        async fn get(&self, _: &ItemKey) -> Result<Option<Item>, StoreError> {
            Ok(None)
        }

        async fn transact(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
            Ok(vec![1; writes.len()])
        }

        async fn query(&self, _: &Query) -> Result<Page, StoreError> {
            Ok(Page {
                items: Vec::new(),
                next: None,
            })
        }
    }

    #[tokio::test]
    async fn the_suite_catches_a_store_that_keeps_nothing() {
        let failures = run_all(|| async { Forgetful }).await;
        let failed: Vec<&str> = failures.iter().map(|(name, _)| *name).collect();
        for case in [
            "put_absent_then_get",
            "query_pages_through_next",
            "concurrent_increments_lose_no_update",
        ] {
            assert!(failed.contains(&case), "{case} passed on a forgetful store");
        }
    }
}
