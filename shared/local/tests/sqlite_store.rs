//! The SQLite store against the shared conformance suite, plus what only a file shared between
//! threads and processes can show: lock contention, schema versions and lost updates across
//! real processes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use penstock_app::store::{
    Expect, IndexName, Item, ItemKey, ItemStore, Page, Query, StoreError, Write,
};
use penstock_local::sqlite_store::{SqliteOptions, SqliteStore};
use serde_json::json;
use tempfile::TempDir;

/// A store on a fresh file that disappears with it.
struct TempSqlite {
    store: SqliteStore,
    _dir: TempDir,
}

impl TempSqlite {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(dir.path().join("state.db")).expect("open the store");
        Self { store, _dir: dir }
    }
}

#[async_trait]
impl ItemStore for TempSqlite {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, StoreError> {
        self.store.get(key).await
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        self.store.transact(writes).await
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        self.store.query(query).await
    }
}

mod conformance {
    use super::TempSqlite;

    penstock_app::item_store_conformance_tests!(TempSqlite::new());
}

fn counter_key() -> ItemKey {
    ItemKey::new("race", "counter")
}

/// Increment the counter `times` times, retrying on conflict and on a busy database; returns
/// the count each successful increment wrote.
async fn increment(store: &SqliteStore, times: usize) -> Vec<u64> {
    let mut written = Vec::new();
    while written.len() < times {
        let item = match store.get(&counter_key()).await {
            Ok(item) => item.expect("the counter exists"),
            Err(error) if error.is_retryable() => continue,
            Err(error) => panic!("read the counter: {error}"),
        };
        let count = item.body["count"].as_u64().expect("a numeric counter");
        let result = store
            .put(
                counter_key(),
                Expect::Version(item.version),
                json!({"count": count + 1}),
                None,
                None,
            )
            .await;
        match result {
            Ok(_) => written.push(count + 1),
            Err(StoreError::Conflict { .. }) => {}
            Err(error) if error.is_retryable() => {}
            Err(error) => panic!("increment the counter: {error}"),
        }
    }
    written
}

async fn seed_counter(store: &SqliteStore) {
    store
        .put(
            counter_key(),
            Expect::Absent,
            json!({"count": 0}),
            None,
            None,
        )
        .await
        .expect("seed the counter");
}

/// Every count from 1 to `total` was written exactly once, and the counter holds `total`.
async fn assert_no_lost_update(store: &SqliteStore, written: Vec<Vec<u64>>, total: u64) {
    let mut seen = BTreeSet::new();
    for count in written.into_iter().flatten() {
        assert!(
            seen.insert(count),
            "count {count} was written twice: an update was lost"
        );
    }
    assert_eq!(seen, (1..=total).collect::<BTreeSet<u64>>());
    let item = store.get(&counter_key()).await.unwrap().unwrap();
    assert_eq!(item.body["count"], json!(total));
    assert_eq!(item.version, total + 1);
}

#[test]
fn threads_with_their_own_stores_lose_no_update() {
    const THREADS: usize = 6;
    const INCREMENTS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(seed_counter(&SqliteStore::open(&path).unwrap()));

    // Each thread opens the file itself and drives its own runtime: nothing is shared but the
    // file, as between processes.
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let written: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let barrier = barrier.clone();
                let path = path.clone();
                scope.spawn(move || {
                    let store = SqliteStore::open(&path).unwrap();
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    barrier.wait();
                    runtime.block_on(increment(&store, INCREMENTS))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });

    let store = SqliteStore::open(&path).unwrap();
    runtime.block_on(assert_no_lost_update(
        &store,
        written,
        (THREADS * INCREMENTS) as u64,
    ));
}

/// Set in a child process: the database file it increments the counter in.
const CHILD_DATABASE: &str = "PENSTOCK_TEST_SQLITE_CHILD_DATABASE";
const CHILD_INCREMENTS: usize = 30;
const CHILD_TEST: &str = "child_process_increments";

/// In a child process started by `processes_lose_no_update`: open the file, say "ready", wait
/// for "go" on stdin, increment the shared counter and print what it wrote. Run on its own, it
/// does the same on a file of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_increments() {
    match std::env::var_os(CHILD_DATABASE) {
        Some(path) => {
            let store = SqliteStore::open(Path::new(&path)).unwrap();
            println!("ready");
            let mut go = String::new();
            std::io::stdin().read_line(&mut go).unwrap();
            assert_eq!(go.trim(), "go");
            let written = increment(&store, CHILD_INCREMENTS).await;
            let listed: Vec<String> = written.iter().map(u64::to_string).collect();
            println!("\nwritten: {}", listed.join(","));
        }
        None => {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(dir.path().join("state.db")).unwrap();
            seed_counter(&store).await;
            let written = increment(&store, CHILD_INCREMENTS).await;
            assert_no_lost_update(&store, vec![written], CHILD_INCREMENTS as u64).await;
        }
    }
}

#[test]
fn processes_lose_no_update() {
    const PROCESSES: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = SqliteStore::open(&path).unwrap();
    runtime.block_on(seed_counter(&store));

    let executable = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            let mut child = Command::new(&executable)
                .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_DATABASE, &path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a child process");
            let stdout = BufReader::new(child.stdout.take().unwrap());
            (child, stdout)
        })
        .collect();

    // A barrier across processes: every child has the file open before any starts writing.
    for (_, stdout) in &mut children {
        let mut seen = String::new();
        while !seen.contains("ready") {
            let mut line = String::new();
            let read = stdout.read_line(&mut line).unwrap();
            assert!(read > 0, "a child ended before it was ready: {seen}");
            seen.push_str(&line);
        }
    }
    for (child, _) in &mut children {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }

    let mut written = Vec::new();
    for (child, mut stdout) in children {
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "a child failed: {rest}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = rest
            .lines()
            .find_map(|line| line.strip_prefix("written: "))
            .unwrap_or_else(|| panic!("the child ran no increments: {rest}"));
        let counts: Vec<u64> = line
            .split(',')
            .map(|count| count.parse().unwrap())
            .collect();
        assert_eq!(counts.len(), CHILD_INCREMENTS);
        written.push(counts);
    }
    runtime.block_on(assert_no_lost_update(
        &store,
        written,
        (PROCESSES * CHILD_INCREMENTS) as u64,
    ));
}

#[tokio::test]
async fn a_writer_held_past_the_busy_timeout_is_unavailable_and_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open_with(
        &path,
        SqliteOptions {
            busy_timeout: Duration::from_millis(200),
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let key = ItemKey::new("p", "s");
    store
        .put(key.clone(), Expect::Absent, json!({"n": 1}), None, None)
        .await
        .unwrap();

    // Another connection, as another process would, takes the write lock and keeps it.
    let mut other = rusqlite::Connection::open(&path).unwrap();
    let lock = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let result = store
        .put(key.clone(), Expect::Version(1), json!({"n": 2}), None, None)
        .await;
    match &result {
        Err(error @ StoreError::Unavailable(_)) => assert!(error.is_retryable()),
        other => panic!("expected the store to be unavailable, got {other:?}"),
    }
    let item = store.get(&key).await.unwrap().unwrap();
    assert_eq!(item.version, 1, "reads go on under another writer's lock");

    lock.rollback().unwrap();
    assert_eq!(
        store
            .put(key.clone(), Expect::Version(1), json!({"n": 2}), None, None)
            .await,
        Ok(2)
    );
}

#[tokio::test]
async fn the_schema_version_is_recorded_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).unwrap();
    let key = ItemKey::new("p", "s");
    store
        .put(
            key.clone(),
            Expect::Absent,
            json!({"kept": true}),
            None,
            None,
        )
        .await
        .unwrap();
    drop(store);

    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(
        reopened.get(&key).await.unwrap().unwrap().body,
        json!({"kept": true})
    );
    drop(reopened);

    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 1);
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    raw.pragma_update(None, "user_version", 99).unwrap();
    drop(raw);

    match SqliteStore::open(&path) {
        Err(StoreError::Invalid(message)) => assert!(message.contains("99"), "{message}"),
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[tokio::test]
async fn expiry_follows_the_clock_and_purging_keeps_live_items() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(1_000));
    let clock_now = now.clone();
    let store = SqliteStore::open_with(
        dir.path().join("state.db"),
        SqliteOptions {
            clock: Arc::new(move || clock_now.load(Ordering::SeqCst)),
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    for (sk, expires_at) in [
        ("forever", None),
        ("soon", Some(1_010)),
        ("later", Some(2_000)),
    ] {
        store
            .put(
                ItemKey::new("p", sk),
                Expect::Absent,
                json!({}),
                None,
                expires_at,
            )
            .await
            .unwrap();
    }
    let live = |store: SqliteStore| async move {
        let page = store
            .query(&Query {
                index: IndexName::Primary,
                pk: "p".into(),
                sk_prefix: None,
                after: None,
                limit: 10,
                descending: false,
            })
            .await
            .unwrap();
        page.items
            .into_iter()
            .map(|item| item.key.sk)
            .collect::<Vec<_>>()
    };

    now.store(1_010, Ordering::SeqCst);
    assert_eq!(live(store.clone()).await, ["forever", "later", "soon"]);
    assert_eq!(store.purge_expired().await, Ok(0));

    now.store(1_011, Ordering::SeqCst);
    assert_eq!(live(store.clone()).await, ["forever", "later"]);
    assert_eq!(store.get(&ItemKey::new("p", "soon")).await, Ok(None));
    assert_eq!(store.purge_expired().await, Ok(1));
    assert_eq!(live(store.clone()).await, ["forever", "later"]);
}
