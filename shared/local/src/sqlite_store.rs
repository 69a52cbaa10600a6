//! The embedded [`ItemStore`]: one SQLite file, safe to share between threads and processes.
//!
//! Every transaction runs under `BEGIN IMMEDIATE`, which takes SQLite's write lock before the
//! conditions are read, so checking the expectations and applying the writes is one atomic step
//! even when several processes use the same file. WAL mode lets reads go on while a write holds
//! the lock; a writer that cannot get the lock within the busy timeout fails with
//! [`StoreError::Unavailable`], which callers retry.
//!
//! Calls run on tokio's blocking pool, each on a connection taken from a small pool (opened on
//! demand, so a burst of callers never waits for a connection, only for SQLite's lock).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use penstock_app::memory_store::{Clock, system_clock};
use penstock_app::store::{
    Expect, IndexName, Item, ItemKey, ItemStore, Page, Query, StoreError, Write, is_live,
    validate_query, validate_transaction,
};
use rusqlite::types::ToSql;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// How long a writer waits for another writer (in any process) before giving up, by default.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections kept open between calls; more are opened when callers overlap.
const IDLE_CONNECTIONS: usize = 4;

/// The schema this build reads and writes, recorded in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

/// Each entry migrates the schema from version `index` to `index + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [r#"
    CREATE TABLE items (
        pk         TEXT    NOT NULL,
        sk         TEXT    NOT NULL,
        version    INTEGER NOT NULL,
        body       TEXT    NOT NULL,
        gsi1pk     TEXT,
        gsi1sk     TEXT,
        expires_at INTEGER,
        PRIMARY KEY (pk, sk)
    ) WITHOUT ROWID;
    CREATE INDEX items_gsi1 ON items (gsi1pk, gsi1sk, pk, sk) WHERE gsi1pk IS NOT NULL;
    CREATE INDEX items_expires_at ON items (expires_at) WHERE expires_at IS NOT NULL;
"#];

/// How a [`SqliteStore`] behaves; [`SqliteOptions::default`] suits production.
#[derive(Clone)]
pub struct SqliteOptions {
    /// How long a write waits for another writer's lock before failing with
    /// [`StoreError::Unavailable`].
    pub busy_timeout: Duration,
    /// "Now" in epoch seconds, for expiry.
    pub clock: Clock,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            clock: system_clock(),
        }
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    options: SqliteOptions,
    idle: Mutex<Vec<Connection>>,
    /// Writers of this process take turns here, so they queue without sleeping in SQLite's
    /// busy handler (which backs off in steps of milliseconds); other processes still meet at
    /// SQLite's write lock.
    writers: tokio::sync::Mutex<()>,
}

impl SqliteStore {
    /// Open (creating if needed) the store in the file at `path`, with default options. This
    /// blocks while it sets the file up; call it at start-up.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Like [`SqliteStore::open`], with the given options.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut connection = connect(&path, &options)?;
        // The journal mode is stored in the file, so setting it once covers every connection.
        let mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(backend_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "{} cannot use write-ahead logging (journal mode {mode})",
                path.display()
            )));
        }
        migrate(&mut connection)?;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                options,
                idle: Mutex::new(vec![connection]),
                writers: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Delete the expired items for good. Reads already ignore them; this only gives the
    /// space back.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        self.run(|connection, now| {
            connection
                .execute(
                    "DELETE FROM items WHERE expires_at IS NOT NULL AND expires_at < ?1",
                    [now],
                )
                .map_err(backend_error)
        })
        .await
    }

    /// Run `work` on a pooled connection on the blocking pool, with the current time.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, i64) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = shared.take_connection()?;
            let result = work(&mut connection, (shared.options.clock)());
            shared.return_connection(connection);
            result
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("a store call did not finish: {error}")))?
    }
}

impl Shared {
    fn take_connection(&self) -> Result<Connection, StoreError> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        match pooled {
            Some(connection) => Ok(connection),
            None => connect(&self.path, &self.options),
        }
    }

    fn return_connection(&self, connection: Connection) {
        // A failed call leaves no transaction open (an unfinished one rolls back when dropped),
        // so the connection is fit for the next call.
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(connection);
        }
    }
}

fn connect(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend_error)?;
    connection
        .busy_timeout(options.busy_timeout)
        .map_err(backend_error)?;
    // NORMAL in WAL mode: a committed transaction survives any crash of the process (what the
    // runner's recovery relies on); a power cut may lose the last ones, never corrupt the
    // file. FULL would add an fsync to every write, nearly doubling the cost of an action
    // lifecycle (see the lifecycle benchmark) for a guarantee a local runner does not need.
    connection
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(backend_error)?;
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    // Under the write lock, so two processes opening a new file do not both create the schema.
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend_error)?;
    let found: i64 = transaction
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(backend_error)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Invalid(format!(
            "the database has schema version {found}; this build knows up to {SCHEMA_VERSION}"
        )));
    }
    for migration in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)) {
        transaction
            .execute_batch(migration)
            .map_err(backend_error)?;
    }
    transaction
        .pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(backend_error)?;
    transaction.commit().map_err(backend_error)
}

/// Every SQLite failure is the backend failing; a busy database (another writer held the lock
/// past the busy timeout) is the common, retryable case and says so.
fn backend_error(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!("the database stayed locked: {error}"))
        }
        _ => StoreError::Unavailable(format!("sqlite: {error}")),
    }
}

fn conflict(key: &ItemKey) -> StoreError {
    StoreError::Conflict {
        pk: key.pk.clone(),
        sk: key.sk.clone(),
    }
}

fn to_sql_version(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version)
        .map_err(|_| StoreError::Invalid(format!("version {version} is out of range")))
}

/// The live version under `key`, if any.
fn live_version(
    connection: &Connection,
    key: &ItemKey,
    now: i64,
) -> Result<Option<u64>, StoreError> {
    let row: Option<(i64, Option<i64>)> = connection
        .prepare_cached("SELECT version, expires_at FROM items WHERE pk = ?1 AND sk = ?2")
        .and_then(|mut statement| {
            statement
                .query_row(params![key.pk, key.sk], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
        })
        .map_err(backend_error)?;
    match row {
        Some((version, expires_at)) if is_live(expires_at, now) => {
            let version = u64::try_from(version).map_err(|_| {
                StoreError::Unavailable(format!("{}/{} has version {version}", key.pk, key.sk))
            })?;
            Ok(Some(version))
        }
        _ => Ok(None),
    }
}

fn holds(
    connection: &Connection,
    key: &ItemKey,
    expect: Expect,
    now: i64,
) -> Result<bool, StoreError> {
    Ok(match (live_version(connection, key, now)?, expect) {
        (None, Expect::Absent) => true,
        (Some(found), Expect::Version(version)) => found == version,
        _ => false,
    })
}

const COLUMNS: &str = "pk, sk, version, body, gsi1pk, gsi1sk, expires_at";

/// An item from a row selected with [`COLUMNS`].
fn item_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Item, StoreError>> {
    let pk: String = row.get(0)?;
    let sk: String = row.get(1)?;
    let version: i64 = row.get(2)?;
    let body: String = row.get(3)?;
    let gsi1pk: Option<String> = row.get(4)?;
    let gsi1sk: Option<String> = row.get(5)?;
    let expires_at: Option<i64> = row.get(6)?;
    Ok((|| {
        let corrupt = |what: String| StoreError::Unavailable(format!("{pk}/{sk}: {what}"));
        let version = u64::try_from(version).map_err(|_| corrupt(format!("version {version}")))?;
        let body =
            serde_json::from_str(&body).map_err(|error| corrupt(format!("body: {error}")))?;
        let index = match (gsi1pk, gsi1sk) {
            (Some(pk), Some(sk)) => Some(ItemKey { pk, sk }),
            _ => None,
        };
        Ok(Item {
            key: ItemKey::new(pk.clone(), sk.clone()),
            version,
            body,
            index,
            expires_at,
        })
    })())
}

/// The smallest string greater than every string starting with `prefix`, if there is one, so
/// a prefix match becomes an index range. Strings compare by UTF-8 bytes, which is code point
/// order, so bumping the last character that can grow (and dropping what follows it) works.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let bumped = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(bumped) = bumped {
            chars.push(bumped);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[async_trait]
impl ItemStore for SqliteStore {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, StoreError> {
        let key = key.clone();
        self.run(move |connection, now| {
            let sql = format!("SELECT {COLUMNS} FROM items WHERE pk = ?1 AND sk = ?2");
            let item = connection
                .prepare_cached(&sql)
                .and_then(|mut statement| {
                    statement
                        .query_row(params![key.pk, key.sk], item_from_row)
                        .optional()
                })
                .map_err(backend_error)?
                .transpose()?;
            Ok(item.filter(|item| is_live(item.expires_at, now)))
        })
        .await
    }

    async fn transact(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        validate_transaction(&writes)?;
        let _turn = self.shared.writers.lock().await;
        self.run(move |connection, now| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend_error)?;
            for write in &writes {
                let holds = match write {
                    Write::Put { key, expect, .. } | Write::Check { key, expect } => {
                        holds(&transaction, key, *expect, now)?
                    }
                    Write::Delete { key, version } => {
                        holds(&transaction, key, Expect::Version(*version), now)?
                    }
                };
                if !holds {
                    // Dropping the transaction rolls it back; nothing was written yet anyway.
                    return Err(conflict(write.key()));
                }
            }
            let mut versions = Vec::with_capacity(writes.len());
            for write in &writes {
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
                        let sql_version = to_sql_version(version)?;
                        let body = serde_json::to_string(body).map_err(|error| {
                            StoreError::Invalid(format!("body of {}/{}: {error}", key.pk, key.sk))
                        })?;
                        transaction
                            .prepare_cached(
                                "INSERT INTO items (pk, sk, version, body, gsi1pk, gsi1sk, expires_at)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                                 ON CONFLICT (pk, sk) DO UPDATE SET
                                     version = excluded.version,
                                     body = excluded.body,
                                     gsi1pk = excluded.gsi1pk,
                                     gsi1sk = excluded.gsi1sk,
                                     expires_at = excluded.expires_at",
                            )
                            .and_then(|mut statement| {
                                statement.execute(params![
                                    key.pk,
                                    key.sk,
                                    sql_version,
                                    body,
                                    index.as_ref().map(|index| &index.pk),
                                    index.as_ref().map(|index| &index.sk),
                                    expires_at,
                                ])
                            })
                            .map_err(backend_error)?;
                        versions.push(version);
                    }
                    Write::Delete { key, .. } => {
                        transaction
                            .prepare_cached("DELETE FROM items WHERE pk = ?1 AND sk = ?2")
                            .and_then(|mut statement| statement.execute(params![key.pk, key.sk]))
                            .map_err(backend_error)?;
                        versions.push(0);
                    }
                    Write::Check { .. } => versions.push(0),
                }
            }
            transaction.commit().map_err(backend_error)?;
            Ok(versions)
        })
        .await
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        validate_query(query)?;
        let query = query.clone();
        self.run(move |connection, now| {
            let (pk_column, sk_column) = match query.index {
                IndexName::Primary => ("pk", "sk"),
                IndexName::Gsi1 => ("gsi1pk", "gsi1sk"),
            };
            let direction = if query.descending { "DESC" } else { "ASC" };
            let mut sql = format!(
                "SELECT {COLUMNS} FROM items WHERE {pk_column} = :pk \
                 AND (expires_at IS NULL OR expires_at >= :now)"
            );
            let upper = query.sk_prefix.as_deref().and_then(prefix_upper_bound);
            // One more row than the page holds tells whether another page follows.
            let fetch = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
            let mut bound: Vec<(&str, &dyn ToSql)> =
                vec![(":pk", &query.pk), (":now", &now), (":fetch", &fetch)];
            if let Some(prefix) = &query.sk_prefix {
                sql.push_str(&format!(" AND {sk_column} >= :prefix"));
                bound.push((":prefix", prefix));
            }
            if let Some(upper) = &upper {
                sql.push_str(&format!(" AND {sk_column} < :upper"));
                bound.push((":upper", upper));
            }
            if let Some(after) = &query.after {
                let comparison = if query.descending { "<" } else { ">" };
                sql.push_str(&format!(" AND {sk_column} {comparison} :after"));
                bound.push((":after", after));
            }
            let order = match query.index {
                IndexName::Primary => format!("sk {direction}"),
                // Index sort keys need not be unique: the primary key orders equal ones.
                IndexName::Gsi1 => format!("gsi1sk {direction}, pk {direction}, sk {direction}"),
            };
            sql.push_str(&format!(" ORDER BY {order} LIMIT :fetch"));

            let mut statement = connection.prepare_cached(&sql).map_err(backend_error)?;
            let mut items = statement
                .query_map(bound.as_slice(), item_from_row)
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(backend_error)?
                .into_iter()
                .collect::<Result<Vec<Item>, StoreError>>()?;
            let next = if items.len() > query.limit {
                items.truncate(query.limit);
                items.last().map(|item| match query.index {
                    IndexName::Primary => item.key.sk.clone(),
                    IndexName::Gsi1 => item
                        .index
                        .as_ref()
                        .map(|index| index.sk.clone())
                        .unwrap_or_default(),
                })
            } else {
                None
            };
            Ok(Page { items, next })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn prefix_upper_bound_is_the_next_string_past_the_prefix() {
        assert_eq!(prefix_upper_bound("item-"), Some("item.".into()));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), Some("b".into()));
        assert_eq!(prefix_upper_bound("\u{D7FF}"), Some("\u{E000}".into()));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        assert_eq!(prefix_upper_bound(""), None);
        for prefix in ["item-", "é", "a\u{10FFFF}"] {
            let upper = prefix_upper_bound(prefix).unwrap();
            for inside in [prefix.to_owned(), format!("{prefix}\u{10FFFF}\u{10FFFF}")] {
                assert!(inside.as_str() < upper.as_str(), "{inside:?} < {upper:?}");
            }
        }
    }
}
