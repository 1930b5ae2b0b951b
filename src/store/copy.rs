//! Moving an embedded store to PostgreSQL (`hookgate migrate`): every row of every table of a
//! SQLite file is copied into an empty PostgreSQL database, then the tables' row counts are
//! compared.
//!
//! What is copied, column for column and value for value: raw bodies (first, since events
//! reference them), events (ids, `seq`, times, data, idempotency keys, receive counts,
//! quarantine), hook URL tokens (so every hook URL stays the same), API keys (their hashes),
//! installed apps, settings (the admin token's hash among them), subscriptions with their status,
//! deliveries, delivery attempts, NATS publications and notice mails. Identity columns keep their
//! values, and their sequences continue after the highest number the SQLite store ever gave. One
//! value is translated rather than copied: the notice mails' cursor, a `seq` in SQLite and
//! `txid:seq` in PostgreSQL (`postgres::cursor_from_sqlite` says why the translation marks the
//! same place in the log).
//!
//! What is checked: the source must be a hookgate SQLite file at this hookgate's schema version
//! (older files are refused, not upgraded, because the source is never written: opening it once
//! with this hookgate upgrades it); the target must hold no row in any of these tables; at the
//! end, every table's row count in PostgreSQL must equal SQLite's.
//!
//! How: the source is read on a blocking thread (rusqlite never runs on a tokio worker) through a
//! read-only connection, in one read transaction, so the copy is one consistent snapshot even if
//! a gateway still writes to the file (what it writes after the snapshot is not copied: stop it
//! first). Rows travel in batches bounded in rows and bytes over a channel of two batches, so
//! memory stays bounded whatever the store's size. The target is written in one transaction,
//! which first locks the tables and checks that they are empty, and commits only when every count
//! matches: a copy that fails, is interrupted or counts wrong leaves the target as empty as it
//! found it (only the schema, which the migrations created, remains), and may simply be run again.

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;

use super::postgres::{self, PostgresStore, pg_error};
use super::{StoreError, sqlite};

/// The most rows one batch carries.
const BATCH_ROWS: usize = 1000;
/// About the most bytes of values one batch carries (a single larger row travels alone).
const BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Batches read ahead of the writer.
const BATCHES_IN_FLIGHT: usize = 2;

/// How a column's values are read from SQLite and written to PostgreSQL.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    /// `bigint`: times in microseconds, `seq` and ids of identity columns.
    BigInt,
    /// `integer`: counts and status codes.
    Int,
    /// `boolean`, kept by SQLite as 0 or 1.
    Bool,
    /// `bytea`: hashes and raw bodies.
    Bytes,
}

use Kind::{BigInt, Bool, Bytes, Int, Text};

/// A table to copy. The columns have the same names in both schemas.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// A column PostgreSQL fills from a sequence (`GENERATED ALWAYS AS IDENTITY`).
    identity: Option<&'static str>,
    /// Where the schemas differ: the SQLite query that reads the rows as PostgreSQL keeps them
    /// (a `rowid` first, then the columns in order, ordered by it). `None`: the table itself.
    read: Option<&'static str>,
}

/// What the source's reading needs made first, in its temporary schema (the file itself is
/// never written): the bodies to copy, one per SHA-256, with it. SQLite numbers its bodies, may
/// hold equal bodies of separate appends twice, and no longer stores their hash (see
/// `sqlite::migrations::keys_by_hash`); PostgreSQL keys them by their SHA-256, computed here by
/// [`SHA256_FUNCTION`].
const PREPARE_SOURCE: &str = "CREATE TEMP TABLE copied_bodies (id INTEGER PRIMARY KEY, sha256 BLOB NOT NULL);
    INSERT INTO copied_bodies SELECT min(id), hookgate_sha256(bytes) FROM bodies GROUP BY 2;";

/// The SQL function the source's reading hashes bodies with: `hookgate_sha256(bytes)`.
const SHA256_FUNCTION: &str = "hookgate_sha256";

/// Every table of the store, in the order they are copied: bodies before the events that
/// reference them.
const TABLES: &[Table] = &[
    Table {
        name: "bodies",
        columns: &[("sha256", Bytes), ("bytes", Bytes)],
        identity: None,
        read: Some(
            "SELECT b.id, c.sha256, b.bytes FROM temp.copied_bodies c JOIN bodies b ON b.id = c.id ORDER BY c.id",
        ),
    },
    Table {
        name: "events",
        columns: &[
            ("seq", BigInt),
            ("id", Text),
            ("name", Text),
            ("app", Text),
            ("hook_type", Text),
            ("received_at_us", BigInt),
            ("source", Text),
            ("data", Text),
            ("body_sha256", Bytes),
            ("idempotency_scope", Text),
            ("idempotency_key", Text),
            ("receive_count", Int),
            ("quarantined", Bool),
        ],
        identity: Some("seq"),
        // An event references its body by the body's SHA-256 in PostgreSQL, by number in SQLite.
        read: Some(
            "SELECT e.rowid, e.seq, e.id, e.name, e.app, e.hook_type, e.received_at_us, e.source, e.data,
                    (SELECT hookgate_sha256(b.bytes) FROM bodies b WHERE b.id = e.body_id), e.idempotency_scope,
                    e.idempotency_key, e.receive_count, e.quarantined
             FROM events e ORDER BY e.rowid",
        ),
    },
    Table { name: "hook_tokens", columns: &[("event_name", Text), ("token", Text)], identity: None, read: None },
    Table {
        name: "api_keys",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("prefix", Text),
            ("sha256", Text),
            ("apps", Text),
            ("created_at_us", BigInt),
            ("revoked_at_us", BigInt),
            ("purpose", Text),
            ("scopes", Text),
        ],
        identity: None,
        read: None,
    },
    Table {
        name: "installed_apps",
        columns: &[("app", Text), ("definition", Text), ("installed_at_us", BigInt)],
        identity: None,
        read: None,
    },
    Table { name: "settings", columns: &[("key", Text), ("value", Text)], identity: None, read: None },
    Table {
        name: "subscriptions",
        columns: &[("id", Text), ("body", Text), ("status", Text), ("created_at_us", BigInt)],
        identity: None,
        read: None,
    },
    Table {
        name: "deliveries",
        columns: &[
            ("id", Text),
            ("subscription_id", Text),
            ("event_id", Text),
            ("status", Text),
            ("attempts", Int),
            ("next_attempt_at_us", BigInt),
            ("created_at_us", BigInt),
            ("updated_at_us", BigInt),
            ("ordering_key", Text),
        ],
        identity: None,
        read: None,
    },
    Table {
        name: "delivery_attempts",
        columns: &[
            ("delivery_id", Text),
            ("attempt", Int),
            ("at_us", BigInt),
            ("status_code", Int),
            ("latency_us", BigInt),
            ("response_excerpt", Text),
            ("error", Text),
            ("transform_version", Text),
            ("due_at_us", BigInt),
        ],
        identity: None,
        read: None,
    },
    Table {
        name: "subscription_rate_limits",
        columns: &[
            ("subscription_id", Text),
            ("per_second_milli", BigInt),
            ("burst", Int),
            ("tokens_milli", BigInt),
            ("refilled_at_us", BigInt),
        ],
        identity: None,
        read: None,
    },
    Table {
        name: "retry_jobs",
        columns: &[
            ("id", Text),
            ("selection", Text),
            ("state", Text),
            ("total", BigInt),
            ("queued", BigInt),
            ("skipped", BigInt),
            ("cursor_id", Text),
            ("until_id", Text),
            ("created_at_us", BigInt),
            ("updated_at_us", BigInt),
            ("finished_at_us", BigInt),
        ],
        identity: None,
        read: None,
    },
    Table {
        name: "publications",
        columns: &[("event_id", Text), ("subject", Text), ("attempts", Int), ("next_attempt_at_us", BigInt)],
        identity: None,
        read: None,
    },
    Table {
        name: "notice_mails",
        columns: &[
            ("id", BigInt),
            ("kind", Text),
            ("subject", Text),
            ("event_ids", Text),
            ("due_at_us", BigInt),
            ("created_at_us", BigInt),
            ("attempts", Int),
            ("last_error", Text),
            ("sent_at_us", BigInt),
        ],
        identity: Some("id"),
        read: None,
    },
];

/// Why a copy was refused or failed. Nothing was kept in the target in any case.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("no SQLite database at {0}")]
    SourceMissing(PathBuf),
    #[error("{0} is not a hookgate store (it has no hookgate schema)")]
    NotAStore(PathBuf),
    #[error(
        "the SQLite store at {path} has schema version {found}, older than this hookgate's ({current}); the copy never \
         writes to its source, so bring it up to date first by opening it once with this hookgate (for instance \
         `hookgate keys list --database sqlite:{path}`), then copy again"
    )]
    SourceOutdated { path: PathBuf, found: i64, current: usize },
    #[error(
        "the SQLite store at {path} has schema version {found}, newer than this hookgate's ({current}); use the \
         hookgate that wrote it, or a newer one"
    )]
    SourceNewer { path: PathBuf, found: i64, current: usize },
    #[error(
        "the PostgreSQL database already holds hookgate data ({0}); the copy goes only into an empty database, and \
         nothing was copied. Name a new database or schema, or empty this one first (for instance `DROP SCHEMA \
         public CASCADE; CREATE SCHEMA public;`, which deletes every table in that schema)"
    )]
    TargetNotEmpty(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How far a copy is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyProgress {
    /// A table's copy starts; it has `rows` rows.
    Table { table: &'static str, rows: u64 },
    /// `rows` more rows of the current table are written.
    Copied { rows: u64 },
}

/// One table's row count in both stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    pub sqlite: u64,
    pub postgres: u64,
}

/// What a copy found at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<TableCount>,
    /// True when every count matched and the copy was committed; otherwise it was rolled back.
    pub committed: bool,
}

impl CopyReport {
    pub fn counts_match(&self) -> bool {
        self.tables.iter().all(|count| count.sqlite == count.postgres)
    }
}

/// Copies the SQLite store at `source` into the empty PostgreSQL database at `target` (created
/// and migrated if need be), calling `progress` as it goes. Returns the counts of both; the copy
/// is committed only if they all match.
pub async fn sqlite_to_postgres(
    source: &Path,
    target: &str,
    mut progress: impl FnMut(CopyProgress),
) -> Result<CopyReport, CopyError> {
    let path = source.to_path_buf();
    let (connection, source_counts) =
        tokio::task::spawn_blocking(move || open_source(&path)).await.map_err(thread_failed)??;

    let store = PostgresStore::open(target).await?;
    let mut client = store.client().await?;
    let transaction = client.transaction().await.map_err(pg_error)?;
    lock_empty_target(&transaction).await?;
    copy_rows(&transaction, connection, &source_counts.rows, &mut progress).await?;
    for (table, high_water) in TABLES.iter().zip(&source_counts.high_water) {
        if let Some(column) = table.identity {
            continue_identity(&transaction, table.name, column, *high_water).await?;
        }
    }
    postgres::cursor_from_sqlite(&transaction).await?;

    let target_counts = count_target(&transaction).await?;
    let tables: Vec<TableCount> = TABLES
        .iter()
        .zip(source_counts.rows.iter().zip(target_counts))
        .map(|(table, (sqlite, postgres))| TableCount { table: table.name, sqlite: *sqlite, postgres })
        .collect();
    let mut report = CopyReport { tables, committed: false };
    if report.counts_match() {
        transaction.commit().await.map_err(pg_error)?;
        report.committed = true;
    } else {
        transaction.rollback().await.map_err(pg_error)?;
    }
    Ok(report)
}

/// Locks every table of the target until the copy commits (so that no gateway writes between
/// the check and the commit) and refuses a target that holds any row, naming what it holds.
async fn lock_empty_target(transaction: &deadpool_postgres::Transaction<'_>) -> Result<(), CopyError> {
    let names: Vec<&str> = TABLES.iter().map(|table| table.name).collect();
    let lock = format!("LOCK TABLE {} IN EXCLUSIVE MODE", names.join(", "));
    transaction.batch_execute(&lock).await.map_err(pg_error)?;
    let held: Vec<String> = count_target(transaction)
        .await?
        .into_iter()
        .zip(TABLES)
        .filter(|(rows, _)| *rows > 0)
        .map(|(rows, table)| format!("{}: {rows} {}", table.name, if rows == 1 { "row" } else { "rows" }))
        .collect();
    if held.is_empty() { Ok(()) } else { Err(CopyError::TargetNotEmpty(held.join(", "))) }
}

/// Writes the batches the source's reader sends, table after table; `source_rows` are the
/// tables' sizes for `progress`.
async fn copy_rows(
    transaction: &deadpool_postgres::Transaction<'_>,
    source: Connection,
    source_rows: &[u64],
    progress: &mut impl FnMut(CopyProgress),
) -> Result<(), StoreError> {
    let (batches, mut arriving) = mpsc::channel(BATCHES_IN_FLIGHT);
    let reader = tokio::task::spawn_blocking(move || read_tables(&source, &batches));
    let mut current = None;
    while let Some(batch) = arriving.recv().await {
        let batch = batch?;
        if current != Some(batch.table.name) {
            current = Some(batch.table.name);
            let index = TABLES.iter().position(|table| table.name == batch.table.name).expect("a table of TABLES");
            progress(CopyProgress::Table { table: batch.table.name, rows: source_rows[index] });
        }
        insert(transaction, &batch).await?;
        progress(CopyProgress::Copied { rows: batch.rows as u64 });
    }
    reader.await.map_err(thread_failed)?
}

/// What the source holds, read in the snapshot the copy reads.
struct SourceCounts {
    /// Rows per table, in the order of `TABLES`.
    rows: Vec<u64>,
    /// Per table, the highest value its identity column was ever given (0 when it has none).
    high_water: Vec<i64>,
}

/// Opens the source read-only, checks its schema, begins the read transaction the whole copy
/// reads in, and counts its rows.
fn open_source(path: &Path) -> Result<(Connection, SourceCounts), CopyError> {
    if !path.is_file() {
        return Err(CopyError::SourceMissing(path.to_path_buf()));
    }
    let connection = sqlite::open_reader(path)?;
    connection.execute_batch("BEGIN").map_err(StoreError::from)?;
    let found: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(StoreError::from)?;
    let current = sqlite::schema_version();
    let path = path.to_path_buf();
    match usize::try_from(found) {
        Ok(0) => return Err(CopyError::NotAStore(path)),
        Ok(found_version) if found_version == current => {}
        Ok(found_version) if found_version > current => return Err(CopyError::SourceNewer { path, found, current }),
        _ => return Err(CopyError::SourceOutdated { path, found, current }),
    }
    connection
        .create_scalar_function(
            SHA256_FUNCTION,
            1,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8 | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
            |context| {
                let bytes =
                    context.get_raw(0).as_bytes().map_err(|error| rusqlite::Error::UserFunctionError(error.into()))?;
                Ok(<sha2::Sha256 as sha2::Digest>::digest(bytes).to_vec())
            },
        )
        .map_err(StoreError::from)?;
    connection.execute_batch(PREPARE_SOURCE).map_err(StoreError::from)?;
    let counts = count_source(&connection)?;
    Ok((connection, counts))
}

fn count_source(connection: &Connection) -> Result<SourceCounts, StoreError> {
    let mut counts = SourceCounts { rows: Vec::new(), high_water: Vec::new() };
    for table in TABLES {
        let rows: i64 =
            connection.query_row(&format!("SELECT count(*) FROM ({})", read_query(table)), [], |row| row.get(0))?;
        counts.rows.push(rows as u64);
        let high_water = match table.identity {
            // AUTOINCREMENT keeps the highest number given in `sqlite_sequence`, even when its row
            // is gone; a plain rowid table gives max + 1 again.
            Some(column) => connection.query_row(
                &format!(
                    "SELECT max(COALESCE((SELECT max({column}) FROM {table}), 0),
                                COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{table}'), 0))",
                    table = table.name
                ),
                [],
                |row| row.get(0),
            )?,
            None => 0,
        };
        counts.high_water.push(high_water);
    }
    Ok(counts)
}

/// A table's rows, a batch of them, column by column (the form `unnest` takes).
struct Batch {
    table: &'static Table,
    columns: Vec<Values>,
    rows: usize,
}

/// One column's values in a batch.
enum Values {
    Text(Vec<Option<String>>),
    BigInt(Vec<Option<i64>>),
    Int(Vec<Option<i32>>),
    Bool(Vec<Option<bool>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Values {
    fn new(kind: Kind) -> Values {
        match kind {
            Text => Values::Text(Vec::new()),
            BigInt => Values::BigInt(Vec::new()),
            Int => Values::Int(Vec::new()),
            Bool => Values::Bool(Vec::new()),
            Bytes => Values::Bytes(Vec::new()),
        }
    }

    /// Adds one SQLite value; returns about how many bytes it takes.
    fn push(&mut self, value: ValueRef<'_>, at: &dyn Fn() -> String) -> Result<usize, StoreError> {
        let wrong = || StoreError::Corrupt(format!("{} holds a {} value", at(), value.data_type()));
        let size = match (self, value) {
            (Values::Text(values), ValueRef::Text(text)) => {
                let text = String::from_utf8(text.to_vec())
                    .map_err(|_| StoreError::Corrupt(format!("{} is text that is not UTF-8", at())))?;
                let size = text.len();
                values.push(Some(text));
                size
            }
            (Values::Bytes(values), ValueRef::Blob(bytes) | ValueRef::Text(bytes)) => {
                values.push(Some(bytes.to_vec()));
                bytes.len()
            }
            (Values::BigInt(values), ValueRef::Integer(number)) => {
                values.push(Some(number));
                8
            }
            (Values::Int(values), ValueRef::Integer(number)) => {
                let number = i32::try_from(number)
                    .map_err(|_| StoreError::Corrupt(format!("{} holds {number}, too large", at())))?;
                values.push(Some(number));
                4
            }
            (Values::Bool(values), ValueRef::Integer(number @ (0 | 1))) => {
                values.push(Some(number == 1));
                1
            }
            (Values::Text(values), ValueRef::Null) => push_null(values),
            (Values::Bytes(values), ValueRef::Null) => push_null(values),
            (Values::BigInt(values), ValueRef::Null) => push_null(values),
            (Values::Int(values), ValueRef::Null) => push_null(values),
            (Values::Bool(values), ValueRef::Null) => push_null(values),
            _ => return Err(wrong()),
        };
        Ok(size)
    }

    fn as_param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Values::Text(values) => values,
            Values::BigInt(values) => values,
            Values::Int(values) => values,
            Values::Bool(values) => values,
            Values::Bytes(values) => values,
        }
    }
}

fn push_null<T>(values: &mut Vec<Option<T>>) -> usize {
    values.push(None);
    1
}

/// The SQLite query that reads a table's rows: its `rowid`, then its columns.
fn read_query(table: &Table) -> String {
    match table.read {
        Some(query) => query.to_owned(),
        None => {
            let columns: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
            format!("SELECT rowid, {} FROM {} ORDER BY rowid", columns.join(", "), table.name)
        }
    }
}

/// Reads every table in the order of `TABLES`, in batches, in the read transaction `open_source`
/// began; stops early when the writer has gone (it failed).
fn read_tables(connection: &Connection, batches: &mpsc::Sender<Result<Batch, StoreError>>) -> Result<(), StoreError> {
    let read = || -> Result<(), StoreError> {
        for table in TABLES {
            let mut select = connection.prepare(&read_query(table))?;
            let mut rows = select.query([])?;
            let new_batch = || Batch {
                table,
                columns: table.columns.iter().map(|(_, kind)| Values::new(*kind)).collect(),
                rows: 0,
            };
            let mut batch = new_batch();
            let mut bytes = 0;
            while let Some(row) = rows.next()? {
                let rowid: i64 = row.get(0)?;
                for (index, values) in batch.columns.iter_mut().enumerate() {
                    let at = || format!("{}.{} of row {rowid}", table.name, table.columns[index].0);
                    bytes += values.push(row.get_ref(index + 1)?, &at)?;
                }
                batch.rows += 1;
                if batch.rows == BATCH_ROWS || bytes >= BATCH_BYTES {
                    if batches.blocking_send(Ok(std::mem::replace(&mut batch, new_batch()))).is_err() {
                        return Ok(());
                    }
                    bytes = 0;
                }
            }
            if batch.rows > 0 && batches.blocking_send(Ok(batch)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    };
    let outcome = read();
    if let Err(error) = &outcome {
        let _ = batches.blocking_send(Err(error.clone()));
    }
    // The read transaction ends; the source was only read.
    let _ = connection.execute_batch("COMMIT");
    outcome
}

/// Writes one batch with one statement: `unnest` turns the column arrays back into rows.
async fn insert(transaction: &deadpool_postgres::Transaction<'_>, batch: &Batch) -> Result<(), StoreError> {
    let table = batch.table;
    let columns: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    let arrays: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(index, (_, kind))| {
            let array = match kind {
                Text => "text[]",
                BigInt => "int8[]",
                Int => "int4[]",
                Bool => "bool[]",
                Bytes => "bytea[]",
            };
            format!("${}::{array}", index + 1)
        })
        .collect();
    let overriding = if table.identity.is_some() { "OVERRIDING SYSTEM VALUE " } else { "" };
    let sql = format!(
        "INSERT INTO {} ({}) {overriding}SELECT * FROM unnest({})",
        table.name,
        columns.join(", "),
        arrays.join(", ")
    );
    let statement = transaction.prepare_cached(&sql).await.map_err(pg_error)?;
    let params: Vec<&(dyn ToSql + Sync)> = batch.columns.iter().map(Values::as_param).collect();
    let written = transaction.execute(&statement, &params).await.map_err(pg_error)?;
    if written != batch.rows as u64 {
        return Err(StoreError::Database(format!("{} of {} rows of {} were written", written, batch.rows, table.name)));
    }
    Ok(())
}

/// Makes an identity column's sequence continue after `high_water` (or the highest value copied),
/// so that no number the SQLite store gave is given again.
async fn continue_identity(
    transaction: &deadpool_postgres::Transaction<'_>,
    table: &str,
    column: &str,
    high_water: i64,
) -> Result<(), StoreError> {
    transaction
        .execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), greatest(max({column}), $1::int8))
                 FROM {table} HAVING greatest(max({column}), $1::int8) > 0"
            ),
            &[&high_water],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Rows per table in the target, in the order of `TABLES`.
async fn count_target(transaction: &deadpool_postgres::Transaction<'_>) -> Result<Vec<u64>, StoreError> {
    let counts: Vec<String> = TABLES.iter().map(|table| format!("(SELECT count(*) FROM {})", table.name)).collect();
    let row = transaction.query_one(&format!("SELECT {}", counts.join(", ")), &[]).await.map_err(pg_error)?;
    Ok((0..TABLES.len()).map(|index| row.get::<_, i64>(index) as u64).collect())
}

fn thread_failed(error: tokio::task::JoinError) -> StoreError {
    StoreError::Unavailable(format!("the thread reading the SQLite store failed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::sample_event;
    use crate::store::postgres::testing;
    use crate::store::{
        ApiKeyRecord, AttemptRecord, DeliveryQuery, EventQuery, InstalledApp, KeyPurpose, NextStep, SqliteStore, Store,
    };
    use crate::subscriptions::{Status, Subscription, TargetPolicy, from_request};
    use jiff::Timestamp;

    /// No server answers here: a copy that reached the target would fail differently.
    const UNREACHABLE: &str = "postgres://postgres@127.0.0.1:1/never";

    fn sha256_of(path: &Path) -> String {
        crate::secrets::sha256_hex(&String::from_utf8_lossy(&std::fs::read(path).unwrap()))
    }

    async fn refusal(path: &Path) -> CopyError {
        sqlite_to_postgres(path, UNREACHABLE, |_| {}).await.expect_err("refused")
    }

    #[tokio::test]
    async fn a_missing_file_is_refused_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.db");
        assert!(matches!(refusal(&path).await, CopyError::SourceMissing(_)));
        assert!(!path.exists(), "the source is never created");
    }

    #[tokio::test]
    async fn a_store_of_another_schema_version_is_refused_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let connection = Connection::open(&path).unwrap();
        connection.execute_batch("CREATE TABLE t (a); INSERT INTO t VALUES (1);").unwrap();
        assert!(matches!(refusal(&path).await, CopyError::NotAStore(_)), "schema version 0: not a hookgate store");

        connection.execute_batch("PRAGMA user_version = 3").unwrap();
        let before = sha256_of(&path);
        let error = refusal(&path).await;
        assert!(matches!(error, CopyError::SourceOutdated { found: 3, .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("older than this hookgate's") && message.contains("hookgate keys list"), "{message}");
        assert_eq!(sha256_of(&path), before, "an outdated source is not upgraded: the copy never writes to it");

        connection.execute_batch(&format!("PRAGMA user_version = {}", sqlite::schema_version() + 1)).unwrap();
        assert!(matches!(refusal(&path).await, CopyError::SourceNewer { .. }));
    }

    /// A SQLite store holding a little of everything: split and keyed and quarantined events,
    /// hook tokens, a key, an app, a setting, an active and a paused subscription with deliveries
    /// and attempts, and a publication waiting for NATS. (Notice mails: see the test of their
    /// cursor.)
    async fn filled_sqlite_store(dir: &tempfile::TempDir) -> (Store, Vec<Subscription>) {
        let store = Store::Sqlite(SqliteStore::open(dir.path().join("hookgate.db")).await.unwrap());
        let policy = TargetPolicy::new(true, ["127.0.0.0/8".parse().unwrap()]);
        let mut subscriptions = Vec::new();
        for (url, status) in
            [("http://127.0.0.1:9/active", Status::Active), ("http://127.0.0.1:9/paused", Status::Paused)]
        {
            let request = serde_json::json!({"url": url});
            let mut subscription = from_request(&request, None, false, &policy, Timestamp::now()).await.unwrap();
            subscription.status = status;
            store.put_subscription(subscription.clone()).await.unwrap();
            subscriptions.push(subscription);
        }
        let split = bytes::Bytes::from_static(br#"[{"sku": "a"}, {"sku": "b"}]"#);
        let mut events = Vec::new();
        for sku in ["a", "b"] {
            let mut element = sample_event("kustomer.app.copy.item", "copy");
            element.raw_body = split.clone();
            element.event.data = serde_json::json!({"sku": sku});
            element.data_is_raw_json = false;
            element.deliver_to = subscriptions.iter().map(|subscription| subscription.id.clone()).collect();
            events.push(element);
        }
        let mut keyed = sample_event("stripe.charge.succeeded", "stripe");
        keyed.idempotency_key = Some(crate::event::IdempotencyKey {
            scope: "stripe".into(),
            key: "evt_copied".into(),
            window: crate::event::DEFAULT_DEDUP_WINDOW,
        });
        keyed.publish_to = Some("hookgate.stripe.charge.succeeded".into());
        let mut held = sample_event("kustomer.app.copy.held", "copy");
        held.event.quarantined = true;
        events.extend([keyed.clone(), held]);
        store.append_events(events).await.unwrap();
        assert!(store.append_events(vec![keyed]).await.unwrap()[0].duplicate, "a receive count of 2");

        let claimed = store.claim_due_deliveries(Timestamp::now(), std::time::Duration::from_secs(60), 10).await;
        let claimed = claimed.unwrap();
        assert_eq!(claimed.len(), 2, "the active subscription's two; the paused one's wait");
        let attempts = claimed.iter().zip([NextStep::Delivered, NextStep::Failed]).map(|(due, next)| AttemptRecord {
            delivery_id: due.id.clone(),
            attempt: 1,
            at: Timestamp::now(),
            status_code: Some(if next == NextStep::Delivered { 200 } else { 410 }),
            latency: std::time::Duration::from_millis(7),
            response_excerpt: Some("answered".into()),
            error: None,
            transform_version: None,
            next,
            due_at: Some(due.due_at),
        });
        store.record_attempts(attempts.collect()).await.unwrap();

        store.hook_tokens(vec!["kustomer.app.copy.item".into(), "kustomer.app.copy.held".into()]).await.unwrap();
        store
            .insert_api_key(ApiKeyRecord {
                id: "key_copied".into(),
                name: "copied".into(),
                purpose: KeyPurpose::Management,
                prefix: "hgm_abcd".into(),
                sha256: "c".repeat(64),
                apps: None,
                scopes: Some(vec!["stripe.*".into()]),
                created_at: Timestamp::now(),
                revoked_at: None,
            })
            .await
            .unwrap();
        let definition = r#"{"app": "copied", "version": "1", "hooks": []}"#.to_owned();
        store.put_app(InstalledApp { app: "copied".into(), definition, installed_at: Timestamp::now() }).await.unwrap();
        store.put_setting("admin_token_sha256", &"d".repeat(64)).await.unwrap();
        (store, subscriptions)
    }

    /// Every event, newest first, through the store's own listing.
    async fn all_events(store: &Store) -> Vec<crate::event::Event> {
        store.list_events(EventQuery { limit: 1000, ..EventQuery::default() }).await.unwrap().events
    }

    async fn history(store: &Store, subscription: &Subscription) -> crate::store::DeliveryPage {
        let query = DeliveryQuery {
            subscription_id: subscription.id.clone(),
            from: None,
            to: None,
            status: None,
            page: 1,
            per_page: 100,
        };
        store.deliveries(query).await.unwrap()
    }

    #[tokio::test]
    async fn a_copied_store_reads_back_the_same_on_postgres() {
        let Some(server) = testing::server_url("a_copied_store_reads_back_the_same_on_postgres") else { return };
        let dir = tempfile::tempdir().unwrap();
        let (sqlite, subscriptions) = filled_sqlite_store(&dir).await;
        let target = testing::fresh_schema(&server).await;
        let mut steps = Vec::new();
        let report = sqlite_to_postgres(&dir.path().join("hookgate.db"), &target, |step| steps.push(step)).await;
        let report = report.unwrap();
        assert!(report.committed && report.counts_match(), "{report:?}");
        let count = |table: &str| report.tables.iter().find(|count| count.table == table).unwrap().postgres;
        assert_eq!((count("events"), count("bodies"), count("deliveries")), (4, 2, 4), "{report:?}");
        assert_eq!(count("delivery_attempts"), 2);
        assert!(steps.contains(&CopyProgress::Table { table: "events", rows: 4 }), "{steps:?}");

        let postgres = Store::Postgres(PostgresStore::open(&target).await.unwrap());
        let events = all_events(&sqlite).await;
        assert_eq!(all_events(&postgres).await, events, "every event, with its data, in the same order");
        for event in &events {
            assert_eq!(postgres.raw_body(&event.id).await.unwrap(), sqlite.raw_body(&event.id).await.unwrap());
        }
        assert_eq!(postgres.stored_body_count().await.unwrap(), 2, "a shared body is still stored once");
        for subscription in &subscriptions {
            assert_eq!(postgres.subscription(&subscription.id).await.unwrap().as_ref(), Some(subscription));
            assert_eq!(history(&postgres, subscription).await, history(&sqlite, subscription).await);
        }
        let names = vec!["kustomer.app.copy.item".to_owned(), "kustomer.app.copy.held".to_owned()];
        assert_eq!(postgres.hook_tokens(names.clone()).await.unwrap(), sqlite.hook_tokens(names).await.unwrap());
        assert_eq!(postgres.api_keys().await.unwrap(), sqlite.api_keys().await.unwrap());
        assert_eq!(postgres.apps().await.unwrap(), sqlite.apps().await.unwrap());
        assert_eq!(postgres.setting("admin_token_sha256").await.unwrap(), Some("d".repeat(64)));
        let lease = std::time::Duration::from_secs(60);
        let later = Timestamp::now() + jiff::SignedDuration::from_secs(3600);
        assert_eq!(
            postgres.claim_publications(later, lease, 10).await.unwrap(),
            sqlite.claim_publications(later, lease, 10).await.unwrap(),
            "the publication waiting for NATS"
        );
        assert!(
            postgres.claim_due_deliveries(later, lease, 10).await.unwrap().is_empty(),
            "the paused subscription's deliveries still wait"
        );

        let mut repeat = sample_event("stripe.charge.succeeded", "stripe");
        repeat.idempotency_key = Some(crate::event::IdempotencyKey {
            scope: "stripe".into(),
            key: "evt_copied".into(),
            window: crate::event::DEFAULT_DEDUP_WINDOW,
        });
        let next = sample_event("kustomer.app.copy.after", "copy");
        let appended = postgres.append_events(vec![repeat, next]).await.unwrap();
        assert!(appended[0].duplicate, "a platform's retry after the move is still a duplicate");
        assert!(!appended[1].duplicate);
        let (client, connection) = tokio_postgres::connect(&target, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let seqs: Vec<i64> = client
            .query("SELECT seq FROM events ORDER BY seq", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
        let newest: i64 =
            client.query_one("SELECT seq FROM events WHERE id = $1", &[&appended[1].id]).await.unwrap().get(0);
        assert_eq!(newest, *seqs.last().unwrap(), "a new event comes after every copied one");
    }

    #[tokio::test]
    async fn sealed_subscription_secrets_are_copied_sealed_and_open_on_postgres_with_the_same_key() {
        let test = "sealed_subscription_secrets_are_copied_sealed_and_open_on_postgres_with_the_same_key";
        let Some(server) = testing::server_url(test) else { return };
        use crate::store::conformance::SECRETS_KEY;
        use crate::store::sealed::{SecretsKeys, seal_stored_secrets};
        let keys = || std::sync::Arc::new(SecretsKeys::parse(SECRETS_KEY, &[]).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::Sqlite(SqliteStore::open(dir.path().join("hookgate.db")).await.unwrap());
        sqlite.install_secrets_keys(keys());
        let policy = &TargetPolicy::new(true, ["127.0.0.1/32".parse().unwrap()]);
        let request = serde_json::json!({"url": "http://127.0.0.1:9/sealed"});
        let subscription = from_request(&request, None, false, policy, Timestamp::now()).await.unwrap();
        sqlite.put_subscription(subscription.clone()).await.unwrap();
        drop(sqlite);

        let target = testing::fresh_schema(&server).await;
        let report = sqlite_to_postgres(&dir.path().join("hookgate.db"), &target, |_| {}).await.unwrap();
        assert!(report.committed && report.counts_match(), "{report:?}");
        let postgres = Store::Postgres(PostgresStore::open(&target).await.unwrap());
        let secret = &subscription.secrets[0].secret;
        let bodies = postgres.subscription_bodies().await.unwrap();
        assert!(bodies.iter().all(|(_, body)| !body.contains(secret.as_str())), "copied sealed, never opened");
        postgres.install_secrets_keys(keys());
        assert_eq!(seal_stored_secrets(&postgres).await.unwrap().sealed, 1, "the same key opens it");
        assert_eq!(postgres.subscription(&subscription.id).await.unwrap(), Some(subscription));
    }

    #[tokio::test]
    async fn notices_not_yet_mailed_are_mailed_after_the_copy_and_none_twice() {
        let test = "notices_not_yet_mailed_are_mailed_after_the_copy_and_none_twice";
        let Some(server) = testing::server_url(test) else { return };
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::Sqlite(SqliteStore::open(dir.path().join("hookgate.db")).await.unwrap());
        let names = vec!["hookgate.delivery.disabled".to_owned()];
        let coalesce = std::time::Duration::from_secs(3600);
        assert_eq!(sqlite.queue_notice_mails(names.clone(), coalesce, Timestamp::now()).await.unwrap(), 0);
        let notice = || sample_event("hookgate.delivery.disabled", "hookgate");
        let (mailed, waiting) = (notice(), notice());
        sqlite.append_events(vec![mailed.clone()]).await.unwrap();
        assert_eq!(sqlite.queue_notice_mails(names.clone(), coalesce, Timestamp::now()).await.unwrap(), 1);
        // Committed after the cursor moved: not looked at yet when the store is copied.
        sqlite.append_events(vec![waiting.clone()]).await.unwrap();

        let target = testing::fresh_schema(&server).await;
        let report = sqlite_to_postgres(&dir.path().join("hookgate.db"), &target, |_| {}).await.unwrap();
        assert!(report.committed, "{report:?}");
        let postgres = Store::Postgres(PostgresStore::open(&target).await.unwrap());
        // PostgreSQL reads hookgate's events only once every older transaction has ended, in
        // any schema of the server (other tests run beside this one): poll for it.
        let mut queued = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while queued == 0 && std::time::Instant::now() < deadline {
            queued = postgres.queue_notice_mails(names.clone(), coalesce, Timestamp::now()).await.unwrap();
            if queued == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        assert_eq!(queued, 1, "the notice the SQLite store had not looked at yet, and only that one");
        assert_eq!(postgres.queue_notice_mails(names, coalesce, Timestamp::now()).await.unwrap(), 0);
        let due = postgres.due_notice_mails(Timestamp::now(), 10).await.unwrap();
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(due[0].event_ids, vec![mailed.event.id, waiting.event.id], "both in the one unsent mail");
    }

    #[tokio::test]
    async fn a_target_that_holds_data_is_refused_and_left_as_it_was() {
        let test = "a_target_that_holds_data_is_refused_and_left_as_it_was";
        let Some(server) = testing::server_url(test) else { return };
        let dir = tempfile::tempdir().unwrap();
        filled_sqlite_store(&dir).await;
        let target = testing::fresh_schema(&server).await;
        let occupied = Store::Postgres(PostgresStore::open(&target).await.unwrap());
        occupied.hook_tokens(vec!["kustomer.app.elsewhere".into()]).await.unwrap();
        let before = occupied.hook_tokens(vec!["kustomer.app.elsewhere".into()]).await.unwrap();

        let error = sqlite_to_postgres(&dir.path().join("hookgate.db"), &target, |_| {}).await.unwrap_err();
        assert!(matches!(&error, CopyError::TargetNotEmpty(held) if held == "hook_tokens: 1 row"), "{error}");
        assert!(all_events(&occupied).await.is_empty(), "nothing was copied");
        assert_eq!(occupied.hook_tokens(vec!["kustomer.app.elsewhere".into()]).await.unwrap(), before);
    }
}
