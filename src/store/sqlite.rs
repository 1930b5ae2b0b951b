//! The embedded SQLite backend: one file in WAL mode with `synchronous=FULL`.
//!
//! One writer thread owns the only write connection. Writers send it jobs over a channel; it
//! takes every job that is queued (up to `MAX_BATCH`), runs each inside its own savepoint of
//! one transaction, commits once, and only then answers every waiter (group commit). Reads run
//! on a small pool of read connections on tokio's blocking threads. rusqlite is never called on
//! a tokio worker thread.

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

use super::{
    ApiKeyRecord, Appended, Attempt, AttemptRecord, Delivery, DeliveryPage, DeliveryQuery, DueDelivery, EventPage,
    EventQuery, InstalledApp, KeyPurpose, NextStep, RawBody, StoreError,
};
use crate::event::HookType;
use crate::event::{Event, EventSource, NewEvent};
use crate::subscriptions::{Status, Subscription};

/// The most jobs one transaction takes.
const MAX_BATCH: usize = 512;
/// Read connections kept open between reads.
const MAX_IDLE_READERS: usize = 8;

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    app TEXT NOT NULL,
    hook_type TEXT NOT NULL,
    received_at_us INTEGER NOT NULL,
    source TEXT NOT NULL,
    -- NULL when the data is the raw body parsed as JSON: the body is then kept only once.
    data TEXT,
    raw_body BLOB NOT NULL,
    idempotency_scope TEXT,
    idempotency_key TEXT,
    receive_count INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX events_by_idempotency_key ON events (idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_by_name ON events (name, id);
CREATE INDEX events_by_app ON events (app, id);
CREATE INDEX events_by_received_at ON events (received_at_us);
CREATE TABLE hook_tokens (
    event_name TEXT PRIMARY KEY NOT NULL,
    token TEXT NOT NULL UNIQUE
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    apps TEXT,
    created_at_us INTEGER NOT NULL,
    revoked_at_us INTEGER
);
CREATE TABLE installed_apps (
    app TEXT PRIMARY KEY NOT NULL,
    definition TEXT NOT NULL,
    installed_at_us INTEGER NOT NULL
);
CREATE TABLE settings (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE events ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- A subscription is a document (its shape is `subscriptions::Subscription`), secrets included.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    body TEXT NOT NULL,
    created_at_us INTEGER NOT NULL
);
"#,
    r#"
-- The outbox: one row per event and subscription, written with the event.
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    subscription_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- pending, delivered or failed
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- When a pending delivery is next tried (a claim pushes it out by the lease).
    next_attempt_at_us INTEGER,
    created_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at_us) WHERE status = 'pending';
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id, created_at_us);
CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at_us INTEGER NOT NULL,
    status_code INTEGER,
    latency_us INTEGER NOT NULL,
    response_excerpt TEXT,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
"#,
    r#"
-- Events still to publish to NATS JetStream, written with the event; removed on the ack.
CREATE TABLE publications (
    event_id TEXT PRIMARY KEY NOT NULL,
    subject TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_us INTEGER NOT NULL
);
CREATE INDEX publications_due ON publications (next_attempt_at_us);
"#,
    r#"
-- Management keys beside the web hooks' ingest keys; scopes limit the events they manage.
ALTER TABLE api_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'ingest';
ALTER TABLE api_keys ADD COLUMN scopes TEXT;
"#,
    r#"
-- A subscription's pending deliveries, found without reading its whole history (disabling fails them).
CREATE INDEX deliveries_pending_by_subscription ON deliveries (subscription_id) WHERE status = 'pending';
"#,
];

/// A unit of work for the writer thread: it runs inside the batch's transaction, and is told
/// afterwards whether the transaction committed.
trait WriteJob: Send {
    fn run(&mut self, connection: &Connection);
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Job<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, connection: &Connection) {
        let Some(work) = self.work.take() else { return };
        self.result = Some(in_savepoint(connection, work));
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let outcome = match (commit, self.result) {
            (Err(error), _) => Err(error),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Unavailable("the write was not run".into())),
        };
        // The waiter may have gone away (client disconnected); the write stands regardless.
        let _ = self.reply.send(outcome);
    }
}

/// Runs one job so that its failure undoes only its own changes, not the whole batch.
fn in_savepoint<T>(
    connection: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    connection.prepare_cached("SAVEPOINT job")?.execute([])?;
    match work(connection) {
        Ok(value) => {
            connection.prepare_cached("RELEASE job")?.execute([])?;
            Ok(value)
        }
        Err(error) => {
            // SQLite rolls the whole transaction back by itself on some errors (disk full, I/O);
            // then there is no savepoint left to undo, and the batch fails as a whole.
            if !connection.is_autocommit() {
                connection.prepare_cached("ROLLBACK TO job")?.execute([])?;
                connection.prepare_cached("RELEASE job")?.execute([])?;
            }
            Err(error)
        }
    }
}

/// The SQLite store. Cloning shares the writer and the read pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Box<dyn WriteJob>>>>,
    readers: Mutex<Vec<Connection>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the writer thread finish what is queued and exit.
        if let Ok(mut writer) = self.writer.lock() {
            writer.take();
        }
    }
}

fn configure(connection: &Connection) -> Result<(), StoreError> {
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    connection.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    Ok(())
}

/// Applies the migrations not yet applied, each in an IMMEDIATE transaction that re-reads the
/// version, so two processes opening a new file at once do not both migrate it.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let transaction = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let applied: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        let applied = usize::try_from(applied).map_err(|_| StoreError::Corrupt(format!("schema version {applied}")))?;
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "the database has schema version {applied}, newer than this hookgate ({}); upgrade hookgate",
                MIGRATIONS.len()
            )));
        }
        if applied > index {
            continue;
        }
        transaction.execute_batch(migration)?;
        transaction.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
        transaction.commit()?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens or creates the database file (and its folder), migrates it and starts the writer.
    pub async fn open(path: PathBuf) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_wal_limit(path, WAL_CATCH_UP_BYTES).await
    }

    async fn open_with_wal_limit(path: PathBuf, wal_limit_bytes: u64) -> Result<SqliteStore, StoreError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Box<dyn WriteJob>>();
        let writer_path = path.clone();
        std::thread::Builder::new()
            .name("hookgate-sqlite-writer".into())
            .spawn(move || {
                let connection = match open_writer(&writer_path) {
                    Ok(connection) => {
                        let _ = ready_tx.send(Ok(()));
                        connection
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                // The checkpointer lives as long as this thread: it stops when `_running` drops.
                let (_running, running) = mpsc::channel::<()>();
                start_checkpointer(writer_path.clone(), running);
                let wal = WalLimit { path: wal_path(&writer_path), bytes: wal_limit_bytes };
                write_loop(&connection, &jobs_rx, &wal);
            })
            .map_err(|error| StoreError::Unavailable(format!("cannot start the writer thread: {error}")))?;
        ready_rx.await.map_err(|_| StoreError::Unavailable("the writer thread stopped while opening".into()))??;
        Ok(SqliteStore {
            inner: Arc::new(Inner { path, writer: Mutex::new(Some(jobs_tx)), readers: Mutex::new(Vec::new()) }),
        })
    }

    /// Runs `work` in the writer's next transaction and returns once it has committed.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(Job { work: Some(work), result: None, reply });
        {
            let writer =
                self.inner.writer.lock().map_err(|_| StoreError::Unavailable("writer lock poisoned".into()))?;
            let sender = writer.as_ref().ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
            sender.send(job).map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?;
        }
        answer.await.map_err(|_| StoreError::Unavailable("the writer thread stopped before committing".into()))?
    }

    /// Runs `work` on a read connection on a blocking thread.
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut readers| readers.pop());
            let connection = match pooled {
                Some(connection) => connection,
                None => open_reader(&inner.path)?,
            };
            let result = work(&connection);
            if let Ok(mut readers) = inner.readers.lock()
                && readers.len() < MAX_IDLE_READERS
            {
                readers.push(connection);
            }
            result
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("a read task failed: {error}")))?
    }

    pub async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        // Serialize here, on the caller's task, so the single writer thread only writes.
        let rows = events.into_iter().map(EventRow::new).collect::<Result<Vec<_>, _>>()?;
        self.write(move |connection| rows.iter().map(|row| append_one(connection, row)).collect()).await
    }

    pub async fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
        let id = id.to_owned();
        self.read(move |connection| {
            connection
                .query_row(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"), [id], event_from_row)
                .optional()?
                .transpose()
        })
        .await
    }

    pub async fn events(&self, ids: Vec<String>) -> Result<Vec<Event>, StoreError> {
        self.read(move |connection| {
            let placeholders = vec!["?"; ids.len()].join(", ");
            let mut statement =
                connection.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id IN ({placeholders})"))?;
            let rows = statement.query_map(rusqlite::params_from_iter(ids.iter()), event_from_row)?;
            rows.map(|row| row?).collect()
        })
        .await
    }

    pub async fn raw_body(&self, id: &str) -> Result<Option<RawBody>, StoreError> {
        let id = id.to_owned();
        self.read(move |connection| {
            let row = connection
                .query_row("SELECT source, raw_body FROM events WHERE id = ?1", [id], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
                })
                .optional()?;
            row.map(|(source, bytes)| {
                let source: EventSource =
                    serde_json::from_str(&source).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok(RawBody { content_type: source.content_type, bytes })
            })
            .transpose()
        })
        .await
    }

    pub async fn list_events(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        self.read(move |connection| list_events(connection, &query)).await
    }

    pub async fn hook_tokens(&self, event_names: Vec<String>) -> Result<HashMap<String, String>, StoreError> {
        self.write(move |connection| {
            let mut tokens = HashMap::with_capacity(event_names.len());
            // INSERT OR IGNORE keeps the first token when another process creates one at the same time.
            let mut insert =
                connection.prepare_cached("INSERT OR IGNORE INTO hook_tokens (event_name, token) VALUES (?1, ?2)")?;
            let mut select = connection.prepare_cached("SELECT token FROM hook_tokens WHERE event_name = ?1")?;
            for name in event_names {
                insert.execute(params![name, crate::secrets::random_token(32)])?;
                let token: String = select.query_row([&name], |row| row.get(0))?;
                tokens.insert(name, token);
            }
            Ok(tokens)
        })
        .await
    }

    pub async fn insert_api_key(&self, key: ApiKeyRecord) -> Result<(), StoreError> {
        self.write(move |connection| {
            let apps = key.apps.as_ref().map(|apps| serde_json::to_string(apps).unwrap_or_default());
            let scopes = key.scopes.as_ref().map(|scopes| serde_json::to_string(scopes).unwrap_or_default());
            connection.execute(
                "INSERT INTO api_keys (id, name, prefix, sha256, apps, created_at_us, revoked_at_us, purpose, scopes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    key.id,
                    key.name,
                    key.prefix,
                    key.sha256,
                    apps,
                    key.created_at.as_microsecond(),
                    key.revoked_at.map(|at| at.as_microsecond()),
                    key.purpose.as_str(),
                    scopes
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(|connection| {
            let mut statement =
                connection.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at_us, id"))?;
            let rows = statement.query_map([], key_from_row)?;
            rows.map(|row| row?).collect()
        })
        .await
    }

    pub async fn active_api_key_by_hash(&self, sha256: String) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.read(move |connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE sha256 = ?1 AND revoked_at_us IS NULL"
                ))?
                .query_row([sha256], key_from_row)
                .optional()?
                .transpose()
        })
        .await
    }

    pub async fn revoke_api_key(&self, id: String, at: Timestamp) -> Result<bool, StoreError> {
        self.write(move |connection| {
            let changed = connection.execute(
                "UPDATE api_keys SET revoked_at_us = ?2 WHERE id = ?1 AND revoked_at_us IS NULL",
                params![id, at.as_microsecond()],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    pub async fn put_app(&self, app: InstalledApp) -> Result<(), StoreError> {
        self.write(move |connection| {
            connection.execute(
                "INSERT INTO installed_apps (app, definition, installed_at_us) VALUES (?1, ?2, ?3)
                 ON CONFLICT (app) DO UPDATE SET definition = excluded.definition, installed_at_us = excluded.installed_at_us",
                params![app.app, app.definition, app.installed_at.as_microsecond()],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn apps(&self) -> Result<Vec<InstalledApp>, StoreError> {
        self.read(|connection| {
            let mut statement = connection
                .prepare_cached("SELECT app, definition, installed_at_us FROM installed_apps ORDER BY app")?;
            let rows = statement
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?)))?;
            rows.map(|row| {
                let (app, definition, installed_at_us) = row?;
                Ok(InstalledApp { app, definition, installed_at: timestamp(installed_at_us)? })
            })
            .collect()
        })
        .await
    }

    pub async fn delete_app(&self, app: String) -> Result<bool, StoreError> {
        self.write(move |connection| Ok(connection.execute("DELETE FROM installed_apps WHERE app = ?1", [app])? == 1))
            .await
    }

    pub async fn setting(&self, key: String) -> Result<Option<String>, StoreError> {
        self.read(move |connection| {
            Ok(connection.query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| row.get(0)).optional()?)
        })
        .await
    }

    pub async fn put_setting_if_absent(&self, key: String, value: String) -> Result<String, StoreError> {
        self.write(move |connection| {
            connection.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![key, value],
            )?;
            Ok(connection.query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| row.get(0))?)
        })
        .await
    }

    pub async fn put_setting(&self, key: String, value: String) -> Result<(), StoreError> {
        self.write(move |connection| {
            connection.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn put_subscription(&self, subscription: Subscription) -> Result<(), StoreError> {
        let body = serde_json::to_string(&subscription).map_err(|error| StoreError::Database(error.to_string()))?;
        self.write(move |connection| {
            connection.execute(
                "INSERT INTO subscriptions (id, body, created_at_us) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                params![subscription.id, body, subscription.created_at.as_microsecond()],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn update_subscription(
        &self,
        id: String,
        change: impl FnOnce(&mut Subscription) + Send + 'static,
    ) -> Result<Option<Subscription>, StoreError> {
        self.write(move |connection| {
            let body: Option<String> = connection
                .prepare_cached("SELECT body FROM subscriptions WHERE id = ?1")?
                .query_row([&id], |row| row.get(0))
                .optional()?;
            let Some(body) = body else { return Ok(None) };
            let mut subscription: Subscription =
                serde_json::from_str(&body).map_err(|error| StoreError::Corrupt(error.to_string()))?;
            let before = subscription.status;
            change(&mut subscription);
            let body = serde_json::to_string(&subscription).map_err(|error| StoreError::Database(error.to_string()))?;
            connection
                .prepare_cached("UPDATE subscriptions SET body = ?2 WHERE id = ?1")?
                .execute(params![id, body])?;
            // Its pending deliveries follow a change of status: failed when disabled, parked (no
            // due time, so claims never look at them) while paused, due now when active again.
            if subscription.status != before {
                let pending = match subscription.status {
                    Status::Disabled => {
                        "UPDATE deliveries SET status = 'failed', next_attempt_at_us = NULL, updated_at_us = ?2
                         WHERE subscription_id = ?1 AND status = 'pending'"
                    }
                    Status::Paused => {
                        "UPDATE deliveries SET next_attempt_at_us = NULL, updated_at_us = ?2
                         WHERE subscription_id = ?1 AND status = 'pending'"
                    }
                    Status::Active => {
                        "UPDATE deliveries SET next_attempt_at_us = ?2, updated_at_us = ?2
                         WHERE subscription_id = ?1 AND status = 'pending' AND next_attempt_at_us IS NULL"
                    }
                };
                connection.prepare_cached(pending)?.execute(params![id, Timestamp::now().as_microsecond()])?;
            }
            Ok(Some(subscription))
        })
        .await
    }

    pub async fn subscription(&self, id: String) -> Result<Option<Subscription>, StoreError> {
        self.read(move |connection| {
            let body: Option<String> = connection
                .query_row("SELECT body FROM subscriptions WHERE id = ?1", [id], |row| row.get(0))
                .optional()?;
            body.map(|body| serde_json::from_str(&body).map_err(|error| StoreError::Corrupt(error.to_string())))
                .transpose()
        })
        .await
    }

    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        self.read(|connection| {
            let mut statement =
                connection.prepare_cached("SELECT body FROM subscriptions ORDER BY created_at_us, id")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            rows.map(|body| serde_json::from_str(&body?).map_err(|error| StoreError::Corrupt(error.to_string())))
                .collect()
        })
        .await
    }

    pub async fn delete_subscription(&self, id: String) -> Result<bool, StoreError> {
        self.write(move |connection| {
            connection.execute(
                "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE subscription_id = ?1)",
                [&id],
            )?;
            connection.execute("DELETE FROM deliveries WHERE subscription_id = ?1", [&id])?;
            Ok(connection.execute("DELETE FROM subscriptions WHERE id = ?1", [&id])? == 1)
        })
        .await
    }

    pub async fn claim_due_deliveries(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.write(move |connection| {
            let now_us = now.as_microsecond();
            // A paused subscription's deliveries are parked (no due time); the status check here
            // catches one whose retry was scheduled by an attempt in flight when it was paused. A
            // disabled one's were failed when it was disabled; one written just after (routed
            // by a table not yet rebuilt) is claimed, and the worker fails it.
            let mut select = connection.prepare_cached(
                "SELECT d.id, d.subscription_id, d.event_id, d.attempts FROM deliveries d
                 JOIN subscriptions s ON s.id = d.subscription_id
                 WHERE d.status = 'pending' AND d.next_attempt_at_us <= ?1
                   AND json_extract(s.body, '$.status') <> 'paused'
                 ORDER BY d.next_attempt_at_us LIMIT ?2",
            )?;
            let due: Vec<DueDelivery> = select
                .query_map(params![now_us, limit as i64], |row| {
                    Ok(DueDelivery {
                        id: row.get(0)?,
                        subscription_id: row.get(1)?,
                        event_id: row.get(2)?,
                        attempts: row.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let lease_until = now_us + i64::try_from(lease.as_micros()).unwrap_or(i64::MAX / 2);
            let mut claim = connection.prepare_cached("UPDATE deliveries SET next_attempt_at_us = ?2 WHERE id = ?1")?;
            for delivery in &due {
                claim.execute(params![delivery.id, lease_until])?;
            }
            Ok(due)
        })
        .await
    }

    pub async fn record_attempts(&self, records: Vec<AttemptRecord>) -> Result<(), StoreError> {
        self.write(move |connection| {
            let mut insert = connection.prepare_cached(
                "INSERT INTO delivery_attempts (delivery_id, attempt, at_us, status_code, latency_us, response_excerpt, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut update = connection.prepare_cached(
                "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at_us = ?4, updated_at_us = ?5 WHERE id = ?1",
            )?;
            for record in records {
                let at_us = record.at.as_microsecond();
                insert.execute(params![
                    record.delivery_id,
                    record.attempt,
                    at_us,
                    record.status_code,
                    i64::try_from(record.latency.as_micros()).unwrap_or(i64::MAX),
                    record.response_excerpt,
                    record.error,
                ])?;
                let (status, next) = match record.next {
                    NextStep::Delivered => ("delivered", None),
                    NextStep::RetryAt(at) => ("pending", Some(at.as_microsecond())),
                    NextStep::Failed => ("failed", None),
                };
                update.execute(params![record.delivery_id, status, record.attempt, next, at_us])?;
            }
            Ok(())
        })
        .await
    }

    pub async fn deliveries(&self, query: DeliveryQuery) -> Result<DeliveryPage, StoreError> {
        self.read(move |connection| {
            let mut conditions = vec!["subscription_id = ?1".to_owned()];
            let mut values: Vec<rusqlite::types::Value> = vec![query.subscription_id.clone().into()];
            if let Some(from) = query.from {
                values.push(from.as_microsecond().into());
                conditions.push(format!("created_at_us >= ?{}", values.len()));
            }
            if let Some(to) = query.to {
                values.push(to.as_microsecond().into());
                conditions.push(format!("created_at_us < ?{}", values.len()));
            }
            if let Some(status) = &query.status {
                values.push(status.clone().into());
                conditions.push(format!("status = ?{}", values.len()));
            }
            let filter = conditions.join(" AND ");
            let total: i64 = connection.query_row(
                &format!("SELECT count(*) FROM deliveries WHERE {filter}"),
                rusqlite::params_from_iter(values.iter()),
                |row| row.get(0),
            )?;
            let offset = query.page.saturating_sub(1) * query.per_page;
            let mut statement = connection.prepare(&format!(
                "SELECT id, event_id, status, attempts, next_attempt_at_us, created_at_us, updated_at_us FROM deliveries
                 WHERE {filter} ORDER BY created_at_us DESC, id DESC LIMIT {} OFFSET {offset}",
                query.per_page
            ))?;
            let rows = statement.query_map(rusqlite::params_from_iter(values.iter()), |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, u32>(3)?,
                    row.get::<_, Option<i64>>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                ))
            })?;
            let mut deliveries = Vec::new();
            for row in rows {
                let (id, event_id, status, attempts, next_us, created_us, updated_us) = row?;
                let mut attempts_statement = connection.prepare_cached(
                    "SELECT attempt, at_us, status_code, latency_us, response_excerpt, error FROM delivery_attempts
                     WHERE delivery_id = ?1 ORDER BY attempt",
                )?;
                let history = attempts_statement
                    .query_map([&id], |row| {
                        Ok((
                            row.get::<_, u32>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, Option<u16>>(2)?,
                            row.get::<_, i64>(3)?,
                            row.get::<_, Option<String>>(4)?,
                            row.get::<_, Option<String>>(5)?,
                        ))
                    })?
                    .map(|row| {
                        let (attempt, at_us, status_code, latency_us, response_excerpt, error) = row?;
                        Ok(Attempt {
                            attempt,
                            at: timestamp(at_us)?,
                            status_code,
                            latency_ms: latency_us as f64 / 1000.0,
                            response_excerpt,
                            error,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                let next_attempt_at = if status == "pending" { next_us.map(timestamp).transpose()? } else { None };
                deliveries.push(Delivery {
                    id,
                    subscription_id: query.subscription_id.clone(),
                    event_id,
                    status,
                    attempts,
                    next_attempt_at,
                    created_at: timestamp(created_us)?,
                    updated_at: timestamp(updated_us)?,
                    history,
                });
            }
            Ok(DeliveryPage { deliveries, total: total as u64 })
        })
        .await
    }

    pub async fn enqueue_deliveries(
        &self,
        event_id: String,
        subscription_ids: Vec<String>,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        self.write(move |connection| {
            let at = now.as_microsecond();
            let mut ids = Vec::new();
            for subscription_id in &subscription_ids {
                ids.extend(insert_delivery(connection, subscription_id, &event_id, at)?);
            }
            Ok(ids)
        })
        .await
    }

    pub async fn claim_publications(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.write(move |connection| {
            let now_us = now.as_microsecond();
            let due: Vec<(String, String)> = connection
                .prepare_cached(
                    "SELECT event_id, subject FROM publications WHERE next_attempt_at_us <= ?1
                     ORDER BY event_id LIMIT ?2",
                )?
                .query_map(params![now_us, limit as i64], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let lease_until = now_us + i64::try_from(lease.as_micros()).unwrap_or(i64::MAX / 2);
            let mut claim = connection.prepare_cached(
                "UPDATE publications SET next_attempt_at_us = ?2, attempts = attempts + 1 WHERE event_id = ?1",
            )?;
            for (event_id, _) in &due {
                claim.execute(params![event_id, lease_until])?;
            }
            Ok(due)
        })
        .await
    }

    pub async fn finish_publications(
        &self,
        published: Vec<String>,
        retry: Vec<String>,
        retry_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(move |connection| {
            let mut delete = connection.prepare_cached("DELETE FROM publications WHERE event_id = ?1")?;
            for event_id in &published {
                delete.execute([event_id])?;
            }
            let mut later =
                connection.prepare_cached("UPDATE publications SET next_attempt_at_us = ?2 WHERE event_id = ?1")?;
            for event_id in &retry {
                later.execute(params![event_id, retry_at.as_microsecond()])?;
            }
            Ok(())
        })
        .await
    }

    /// Makes a delivery of `subscription_id` due now; false when there is no such delivery.
    pub async fn retry_delivery(
        &self,
        subscription_id: String,
        delivery_id: String,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(move |connection| {
            // Due now, or parked until a paused subscription is resumed.
            Ok(connection.execute(
                "UPDATE deliveries SET status = 'pending', updated_at_us = ?3, next_attempt_at_us =
                   CASE WHEN (SELECT json_extract(body, '$.status') FROM subscriptions WHERE id = ?2) = 'paused'
                   THEN NULL ELSE ?3 END
                 WHERE id = ?1 AND subscription_id = ?2",
                params![delivery_id, subscription_id, now.as_microsecond()],
            )? == 1)
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|connection| Ok(connection.query_row("SELECT 1", [], |_| Ok(()))?)).await?;
        self.write(|_| Ok(())).await
    }
}

fn open_writer(path: &std::path::Path) -> Result<Connection, StoreError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|error| StoreError::Unavailable(format!("cannot create {}: {error}", parent.display())))?;
    }
    let mut connection = Connection::open(path)
        .map_err(|error| StoreError::Unavailable(format!("cannot open {}: {error}", path.display())))?;
    // Two processes setting up a new database at once: switching to WAL and migrating can find
    // the file locked without SQLite's busy handler waiting (a lock upgrade would deadlock), so
    // the whole set-up is tried again for a while.
    let mut tries = 0;
    loop {
        let set_up = configure(&connection)
            .and_then(|()| {
                connection
                    .execute_batch(
                        "PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=67108864; PRAGMA cache_size=-16384;",
                    )
                    .map_err(StoreError::from)
            })
            .and_then(|()| migrate(&mut connection));
        match set_up {
            Err(StoreError::Database(message)) if message.contains("locked") && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.map(|()| connection),
        }
    }
}

/// How often the background checkpointer copies the WAL into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Checkpoints the WAL from its own connection so that no commit waits for a checkpoint (the
/// writer's automatic checkpoint is off). PASSIVE never blocks the writer or readers.
fn start_checkpointer(path: PathBuf, running: mpsc::Receiver<()>) {
    let spawned = std::thread::Builder::new().name("hookgate-sqlite-checkpoint".into()).spawn(move || {
        let connection = match Connection::open(&path).map_err(StoreError::from).and_then(|c| configure(&c).map(|()| c))
        {
            Ok(connection) => connection,
            Err(error) => {
                tracing::error!(%error, "The WAL checkpointer could not open the database; the WAL will grow.");
                return;
            }
        };
        while let Err(mpsc::RecvTimeoutError::Timeout) = running.recv_timeout(CHECKPOINT_INTERVAL) {
            if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(%error, "A WAL checkpoint failed; the next one will retry.");
            }
        }
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "Cannot start the WAL checkpointer; the WAL will grow.");
    }
}

fn open_reader(path: &std::path::Path) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|error| StoreError::Unavailable(format!("cannot open {}: {error}", path.display())))?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(connection)
}

/// The writer thread's loop: take every queued job (up to `MAX_BATCH`), run them in one
/// transaction, commit, answer. It does not wait for more jobs: measured under a closed-loop
/// load, a wait window lowered throughput more than the larger commits saved.
fn write_loop(connection: &Connection, jobs: &mpsc::Receiver<Box<dyn WriteJob>>, wal: &WalLimit) {
    let mut commits: u64 = 0;
    while let Ok(first) = jobs.recv() {
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("hookgate_store_commit_batch_size").record(batch.len() as f64);
        let commit = run_batch(connection, &mut batch);
        if let Err(error) = &commit {
            tracing::error!(error = %error, jobs = batch.len(), "A store transaction failed; its writers get an error.");
        }
        for job in batch {
            job.finish(commit.clone());
        }
        commits += 1;
        if commits.is_multiple_of(WAL_CHECK_EVERY) {
            wal.catch_up(connection);
        }
    }
}

/// Past this size the writer checkpoints the WAL itself between two batches.
const WAL_CATCH_UP_BYTES: u64 = 32 * 1024 * 1024;
/// How many commits pass between two looks at the WAL's size.
const WAL_CHECK_EVERY: u64 = 64;

/// Keeps the WAL from growing without end under steady load. The background checkpointer
/// cannot finish while the writer keeps appending, so the WAL would never restart; a
/// checkpoint run by the writer between batches (nothing appends meanwhile, and the
/// checkpointer has already copied most frames) completes, and the next transaction restarts
/// the WAL from its beginning.
struct WalLimit {
    path: PathBuf,
    bytes: u64,
}

impl WalLimit {
    fn catch_up(&self, connection: &Connection) {
        let size = std::fs::metadata(&self.path).map(|metadata| metadata.len()).unwrap_or(0);
        if size <= self.bytes {
            return;
        }
        let outcome = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match outcome {
            Ok((_, frames, copied)) if frames == copied => {
                tracing::debug!(
                    wal_bytes = size,
                    frames,
                    "The writer caught the WAL up; it restarts with the next commit."
                );
            }
            Ok((_, frames, copied)) => {
                // Expected under read load (the delivery worker reads constantly); counted, and
                // tried again at the next catch-up.
                metrics::counter!("hookgate_wal_checkpoints_incomplete_total").increment(1);
                tracing::debug!(
                    wal_bytes = size,
                    frames,
                    copied,
                    "The WAL could not be fully checkpointed (readers still use it); it will be tried again."
                );
            }
            Err(error) => tracing::warn!(%error, "A WAL checkpoint by the writer failed."),
        }
    }
}

fn wal_path(database: &std::path::Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn run_batch(connection: &Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    connection.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    for job in batch.iter_mut() {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(connection)));
        if ran.is_err() {
            let _ = connection.execute_batch("ROLLBACK");
            return Err(StoreError::Database("a write panicked; its whole transaction was rolled back".into()));
        }
        if connection.is_autocommit() {
            // SQLite rolled the transaction back by itself: nothing of this batch is kept, and
            // no later job may run outside a transaction.
            return Err(StoreError::Database("SQLite rolled the transaction back (disk full or I/O error)".into()));
        }
    }
    if let Err(error) = connection.prepare_cached("COMMIT").and_then(|mut commit| commit.execute([])) {
        let _ = connection.execute_batch("ROLLBACK");
        return Err(error.into());
    }
    Ok(())
}

/// An event ready for INSERT: its JSON columns already serialized.
struct EventRow {
    new: NewEvent,
    source: String,
    /// `None` when the raw body is the data.
    data: Option<String>,
}

impl EventRow {
    fn new(new: NewEvent) -> Result<EventRow, StoreError> {
        let source = serde_json::to_string(&new.event.source).map_err(|e| StoreError::Database(e.to_string()))?;
        let data = if new.data_is_raw_json {
            None
        } else {
            Some(serde_json::to_string(&new.event.data).map_err(|e| StoreError::Database(e.to_string()))?)
        };
        Ok(EventRow { new, source, data })
    }
}

fn append_one(connection: &Connection, row: &EventRow) -> Result<Appended, StoreError> {
    let EventRow { new, source, data } = row;
    if let Some(key) = &new.idempotency_key {
        let existing: Option<(String, i64)> = connection
            .prepare_cached(
                "SELECT id, received_at_us FROM events WHERE idempotency_scope = ?1 AND idempotency_key = ?2",
            )?
            .query_row([&key.scope, &key.key], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        if let Some((id, received_at_us)) = existing {
            let window_us = i64::try_from(key.window.as_micros()).unwrap_or(i64::MAX);
            if new.event.received_at.as_microsecond().saturating_sub(received_at_us) <= window_us {
                connection
                    .prepare_cached("UPDATE events SET receive_count = receive_count + 1 WHERE id = ?1")?
                    .execute([&id])?;
                return Ok(Appended { id, duplicate: true });
            }
            // Past its window the key is released: the old event keeps its data, not the key.
            connection
                .prepare_cached("UPDATE events SET idempotency_scope = NULL, idempotency_key = NULL WHERE id = ?1")?
                .execute([&id])?;
        }
    }
    let event = &new.event;
    connection
        .prepare_cached(
            "INSERT INTO events (id, name, app, hook_type, received_at_us, source, data, raw_body,
                                 idempotency_scope, idempotency_key, receive_count, quarantined)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            event.id,
            event.name,
            event.app,
            event.hook_type.as_str(),
            event.received_at.as_microsecond(),
            source,
            data,
            new.raw_body.as_ref(),
            new.idempotency_key.as_ref().map(|k| &k.scope),
            new.idempotency_key.as_ref().map(|k| &k.key),
            event.receive_count,
            event.quarantined,
        ])?;
    if !event.quarantined {
        let at = event.received_at.as_microsecond();
        if let Some(subject) = &new.publish_to {
            connection
                .prepare_cached("INSERT INTO publications (event_id, subject, next_attempt_at_us) VALUES (?1, ?2, ?3)")?
                .execute(params![event.id, subject, at])?;
        }
        for subscription_id in &new.deliver_to {
            insert_delivery(connection, subscription_id, &event.id, at)?;
        }
    }
    Ok(Appended { id: event.id.clone(), duplicate: false })
}

/// A pending delivery, due at `at_us`, or parked (no due time) while its subscription is
/// paused; returns its id, or `None` when the subscription is gone.
fn insert_delivery(
    connection: &Connection,
    subscription_id: &str,
    event_id: &str,
    at_us: i64,
) -> Result<Option<String>, StoreError> {
    let id = format!("dlv_{}", uuid::Uuid::now_v7().simple());
    let inserted = connection
        .prepare_cached(
            "INSERT INTO deliveries (id, subscription_id, event_id, status, next_attempt_at_us, created_at_us, updated_at_us)
             SELECT ?1, id, ?3, 'pending', CASE WHEN json_extract(body, '$.status') = 'paused' THEN NULL ELSE ?4 END, ?4, ?4
             FROM subscriptions WHERE id = ?2",
        )?
        .execute(params![id, subscription_id, event_id, at_us])?;
    Ok((inserted == 1).then_some(id))
}

const EVENT_COLUMNS: &str = "id, name, app, hook_type, received_at_us, source, data, receive_count, CASE WHEN data IS NULL THEN raw_body END, quarantined";

fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Event, StoreError>> {
    let id: String = row.get(0)?;
    let name: String = row.get(1)?;
    let app: String = row.get(2)?;
    let hook_type: String = row.get(3)?;
    let received_at_us: i64 = row.get(4)?;
    let source: String = row.get(5)?;
    let data: Option<String> = row.get(6)?;
    let receive_count: u32 = row.get(7)?;
    let raw_json: Option<Vec<u8>> = row.get(8)?;
    let quarantined: bool = row.get(9)?;
    let corrupt = |error: serde_json::Error| StoreError::Corrupt(error.to_string());
    Ok((|| {
        let data = match (data, raw_json) {
            (Some(data), _) => serde_json::from_str(&data).map_err(corrupt)?,
            (None, Some(body)) => serde_json::from_slice(&body).map_err(corrupt)?,
            (None, None) => return Err(StoreError::Corrupt(format!("event {id} has no data"))),
        };
        Ok(Event {
            hook_type: HookType::parse(&hook_type)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown hook type {hook_type:?}")))?,
            received_at: timestamp(received_at_us)?,
            source: serde_json::from_str(&source).map_err(corrupt)?,
            data,
            id,
            name,
            app,
            receive_count,
            quarantined,
        })
    })())
}

const KEY_COLUMNS: &str = "id, name, prefix, sha256, apps, created_at_us, revoked_at_us, purpose, scopes";

fn key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ApiKeyRecord, StoreError>> {
    let id: String = row.get(0)?;
    let name: String = row.get(1)?;
    let prefix: String = row.get(2)?;
    let sha256: String = row.get(3)?;
    let apps: Option<String> = row.get(4)?;
    let created_at_us: i64 = row.get(5)?;
    let revoked_at_us: Option<i64> = row.get(6)?;
    let purpose: String = row.get(7)?;
    let scopes: Option<String> = row.get(8)?;
    let list = |text: Option<String>| -> Result<Option<Vec<String>>, StoreError> {
        text.map(|text| serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))).transpose()
    };
    Ok((|| {
        Ok(ApiKeyRecord {
            id,
            name,
            purpose: match purpose.as_str() {
                "ingest" => KeyPurpose::Ingest,
                "management" => KeyPurpose::Management,
                other => return Err(StoreError::Corrupt(format!("key purpose {other:?}"))),
            },
            prefix,
            sha256,
            apps: list(apps)?,
            scopes: list(scopes)?,
            created_at: timestamp(created_at_us)?,
            revoked_at: revoked_at_us.map(timestamp).transpose()?,
        })
    })())
}

fn timestamp(microseconds: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(microseconds).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn list_events(connection: &Connection, query: &EventQuery) -> Result<EventPage, StoreError> {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1 = 1");
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    let mut bind = |sql: &mut String, clause: &str, value: rusqlite::types::Value| {
        values.push(value);
        sql.push_str(&clause.replace('?', &format!("?{}", values.len())));
    };
    if let Some(name) = &query.name {
        bind(&mut sql, " AND name = ?", name.clone().into());
    }
    if let Some(app) = &query.app {
        bind(&mut sql, " AND app = ?", app.clone().into());
    }
    if let Some(since) = query.since {
        bind(&mut sql, " AND received_at_us >= ?", since.as_microsecond().into());
    }
    if let Some(until) = query.until {
        bind(&mut sql, " AND received_at_us < ?", until.as_microsecond().into());
    }
    if let Some(quarantined) = query.quarantined {
        bind(&mut sql, " AND quarantined = ?", i64::from(quarantined).into());
    }
    if let Some(before) = &query.before_id {
        bind(&mut sql, " AND id < ?", before.clone().into());
    }
    let limit = query.limit.max(1);
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", limit + 1));
    let mut statement = connection.prepare_cached(&sql)?;
    let mut events = statement
        .query_map(rusqlite::params_from_iter(values), event_from_row)?
        .map(|row| row?)
        .collect::<Result<Vec<Event>, StoreError>>()?;
    let next_cursor = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|event| event.id.clone())
    } else {
        None
    };
    Ok(EventPage { events, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open_in(dir: &tempfile::TempDir) -> crate::store::Store {
        crate::store::Store::Sqlite(SqliteStore::open(dir.path().join("hookgate.db")).await.unwrap())
    }

    #[tokio::test]
    async fn sqlite_passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir).await;
        crate::store::conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn sqlite_keeps_everything_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir).await;
        let tokens = store.hook_tokens(vec!["a.b".into()]).await.unwrap();
        let appended = store.append_events(vec![crate::store::conformance::sample_event("a.b", "app")]).await.unwrap();
        drop(store);
        let reopened = open_in(&dir).await;
        assert_eq!(reopened.hook_tokens(vec!["a.b".into()]).await.unwrap(), tokens);
        assert!(reopened.event(&appended[0].id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn sqlite_runs_in_wal_mode_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let _store = SqliteStore::open(path.clone()).await.unwrap();
        let connection = Connection::open(&path).unwrap();
        let mode: String = connection.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let writer = open_writer(&path).unwrap();
        let synchronous: i64 = writer.query_row("PRAGMA synchronous", [], |row| row.get(0)).unwrap();
        assert_eq!(synchronous, 2, "synchronous=FULL");
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_into_the_database_file_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir).await;
        let database = dir.path().join("hookgate.db");
        let empty_size = std::fs::metadata(&database).unwrap().len();
        let events: Vec<NewEvent> =
            (0..300).map(|_| crate::store::conformance::sample_event("checkpoint.test", "app")).collect();
        store.append_events(events).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::metadata(&database).unwrap().len() <= empty_size && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(std::fs::metadata(&database).unwrap().len() > empty_size, "the checkpointer copied the WAL");
    }

    /// A job that inserts a setting, with the receiver of its answer.
    fn setting_job(key: &str, value: String) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<(), StoreError>>) {
        let key = key.to_owned();
        let (reply, answer) = oneshot::channel();
        let work = move |connection: &Connection| -> Result<(), StoreError> {
            connection.execute("INSERT INTO settings (key, value) VALUES (?1, ?2)", params![key, value])?;
            Ok(())
        };
        (Box::new(Job { work: Some(work), result: None, reply }), answer)
    }

    #[test]
    fn a_batch_that_fills_the_disk_answers_every_job_truthfully() {
        let dir = tempfile::tempdir().unwrap();
        let connection = open_writer(&dir.path().join("hookgate.db")).unwrap();
        let pages: i64 = connection.query_row("PRAGMA page_count", [], |row| row.get(0)).unwrap();
        // The database may grow by two pages: a full disk, as SQLite sees one (SQLITE_FULL).
        connection.execute_batch(&format!("PRAGMA max_page_count = {}", pages + 2)).unwrap();
        let huge = "x".repeat(2_000_000);
        let jobs = [("before", "small".to_owned()), ("huge", huge.clone()), ("after", "small".to_owned())];
        let (mut batch, answers): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|(key, value)| setting_job(key, value)).unzip();
        let commit = run_batch(&connection, &mut batch);
        for job in batch {
            job.finish(commit.clone());
        }
        // The limit really is a full disk for the huge value, so the batch above did meet one.
        let full = connection.execute("INSERT INTO settings (key, value) VALUES ('probe', ?1)", [&huge]).unwrap_err();
        assert_eq!(full.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull), "{full}");
        connection.execute_batch("PRAGMA max_page_count = 1073741823").unwrap();
        for (key, mut answer) in ["before", "huge", "after"].into_iter().zip(answers) {
            let answer = answer.try_recv().unwrap();
            let stored: bool = connection
                .query_row("SELECT count(*) FROM settings WHERE key = ?1", [key], |row| row.get::<_, i64>(0))
                .unwrap()
                == 1;
            assert_eq!(answer.is_ok(), stored, "job {key:?}: answered {answer:?}, stored={stored}");
            if key == "huge" {
                let refusal = answer.expect_err("the value that does not fit is refused");
                assert!(refusal.to_string().contains("full"), "refused for a full disk: {refusal}");
            }
        }
        assert!(connection.is_autocommit(), "no transaction is left open");
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir).await;
        let crate::store::Store::Sqlite(sqlite) = store.clone();
        let failed = sqlite.write(|_| -> Result<(), StoreError> { panic!("a bug in a write job") }).await;
        assert!(failed.is_err());
        assert_eq!(store.put_setting_if_absent("after", "works").await.unwrap(), "works");
    }

    #[test]
    fn two_processes_opening_a_new_database_at_once_both_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || open_writer(&path).map(|_| ()))
            })
            .collect();
        for opener in openers {
            opener.join().unwrap().expect("every opener succeeds");
        }
    }

    #[tokio::test]
    async fn the_wal_stays_bounded_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let limit = 256 * 1024;
        let store = crate::store::Store::Sqlite(SqliteStore::open_with_wal_limit(path.clone(), limit).await.unwrap());
        for i in 0..600 {
            let mut event = crate::store::conformance::sample_event(&format!("wal.{}", i % 7), "app");
            event.raw_body = bytes::Bytes::from(format!("{{\"pad\": \"{}\"}}", "x".repeat(2000)));
            event.event.data = serde_json::from_slice(&event.raw_body).unwrap();
            store.append_events(vec![event]).await.unwrap();
        }
        let wal_size = std::fs::metadata(wal_path(&path)).unwrap().len();
        assert!(wal_size < 4 * 1024 * 1024, "600 commits of about 24 KiB each left a WAL of {wal_size} bytes");
    }

    /// Records the size of every commit the writer makes, as `hookgate_store_commit_batch_size`
    /// reports it; other metrics are dropped.
    #[derive(Default)]
    struct CommitSizes(Arc<Mutex<Vec<f64>>>);

    impl metrics::HistogramFn for CommitSizes {
        fn record(&self, value: f64) {
            self.0.lock().unwrap().push(value);
        }
    }

    impl metrics::Recorder for CommitSizes {
        fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
            metrics::Counter::noop()
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
            match key.name() {
                "hookgate_store_commit_batch_size" => {
                    metrics::Histogram::from_arc(Arc::new(CommitSizes(self.0.clone())))
                }
                _ => metrics::Histogram::noop(),
            }
        }
    }

    /// A store whose writer thread is started here, with `write_loop` under a recorder of its
    /// commits (metrics recorders are global or per thread, and the writer has a thread of its own).
    fn store_with_counted_commits(dir: &tempfile::TempDir) -> (SqliteStore, std::thread::JoinHandle<Vec<f64>>) {
        let path = dir.path().join("hookgate.db");
        let connection = open_writer(&path).unwrap();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Box<dyn WriteJob>>();
        let writer = std::thread::spawn(move || {
            let wal = WalLimit { path: wal_path(&path), bytes: WAL_CATCH_UP_BYTES };
            let sizes = CommitSizes::default();
            metrics::with_local_recorder(&sizes, || write_loop(&connection, &jobs_rx, &wal));
            sizes.0.lock().unwrap().clone()
        });
        let path = dir.path().join("hookgate.db");
        let inner = Inner { path, writer: Mutex::new(Some(jobs_tx)), readers: Mutex::new(Vec::new()) };
        (SqliteStore { inner: Arc::new(inner) }, writer)
    }

    #[tokio::test]
    async fn concurrent_writers_share_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = store_with_counted_commits(&dir);
        let store = crate::store::Store::Sqlite(store);
        let appends = 200;
        let writes: Vec<_> = (0..appends)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.append_events(vec![crate::store::conformance::sample_event(&format!("n.{i}"), "app")]).await
                })
            })
            .collect();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        let page = store.list_events(EventQuery { limit: 1000, ..Default::default() }).await.unwrap();
        assert_eq!(page.events.len(), appends);
        drop(store);
        let commits = writer.join().unwrap();
        assert_eq!(commits.iter().sum::<f64>(), appends as f64, "every append is in exactly one commit: {commits:?}");
        assert!(commits.len() < appends, "{appends} concurrent appends took {} commits: {commits:?}", commits.len());
    }

    #[test]
    fn the_writer_commits_every_queued_job_at_once_up_to_the_batch_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let connection = open_writer(&path).unwrap();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Box<dyn WriteJob>>();
        let answers: Vec<_> = (0..MAX_BATCH + 88)
            .map(|i| {
                let (job, answer) = setting_job(&format!("k{i}"), "v".into());
                jobs_tx.send(job).unwrap();
                answer
            })
            .collect();
        drop(jobs_tx);
        let sizes = CommitSizes::default();
        let wal = WalLimit { path: wal_path(&path), bytes: WAL_CATCH_UP_BYTES };
        metrics::with_local_recorder(&sizes, || write_loop(&connection, &jobs_rx, &wal));
        assert_eq!(*sizes.0.lock().unwrap(), [MAX_BATCH as f64, 88.0]);
        for mut answer in answers {
            answer.try_recv().unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_failing_write_does_not_undo_others_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir).await;
        let crate::store::Store::Sqlite(sqlite) = store.clone();
        let failing = sqlite.write(|connection| {
            connection.execute("INSERT INTO settings (key, value) VALUES ('x', 'partial')", [])?;
            Err::<(), _>(StoreError::Database("deliberate".into()))
        });
        let succeeding = store.put_setting_if_absent("y", "kept");
        let (failed, succeeded) = tokio::join!(failing, succeeding);
        assert!(failed.is_err());
        assert_eq!(succeeded.unwrap(), "kept");
        assert_eq!(store.setting("x").await.unwrap(), None, "the failed job's insert was rolled back");
    }
}
