//! The embedded SQLite backend: one file in WAL mode with `synchronous=FULL`.
//!
//! One writer thread owns the only write connection and does group commit (`writer`: the
//! reasoning is written there). Reads run on a small pool of read-only connections on tokio's
//! blocking threads; rusqlite is never called on a tokio worker thread. The queries are grouped
//! by what they keep: `events` (appends, where a duplicate is decided, with their outbox rows;
//! reads and listing), `deliveries` (the outbox's worker side: claims, attempts, history,
//! replays, and the NATS publications), `rate_limits` (the token buckets the claims take from),
//! `retry_jobs` (dead letters across subscriptions and bulk retries), `subscriptions`, and `records` (API keys, hook URL
//! tokens, installed apps, settings), `retention` (deleting old events and erasing a resource's,
//! in small batches). `migrations` holds the schema: raw bodies are stored in `bodies`, once
//! per append, numbered in order (so that inserts touch the b-trees' right edge), and events
//! reference them by number.

mod deliveries;
mod events;
mod migrations;
mod notice_mails;
mod rate_limits;
mod records;
mod retention;
mod retry_jobs;
mod subscriptions;
mod writer;

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

use super::StoreError;
use writer::{
    Job, RepeatableJob, WAL_CATCH_UP_BYTES, WalLimit, WriteJob, open_writer, start_checkpointer, wal_path, write_loop,
};

/// Adds `condition` to a `WHERE` clause being built, its one `?` numbered as `value`'s place in
/// `values`.
fn push_condition(
    conditions: &mut Vec<String>,
    values: &mut Vec<rusqlite::types::Value>,
    condition: &str,
    value: impl Into<rusqlite::types::Value>,
) {
    values.push(value.into());
    conditions.push(condition.replacen('?', &format!("?{}", values.len()), 1));
}

/// Read connections kept open between reads.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite store. Cloning shares the writer and the read pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Box<dyn WriteJob>>>>,
    readers: Mutex<Vec<Connection>>,
    /// Answered (by being dropped) when the writer thread has finished and checkpointed.
    writer_done: Mutex<Option<oneshot::Receiver<()>>>,
    /// What subscription secrets are sealed with, once installed (`Store::install_secrets_keys`).
    secrets: std::sync::OnceLock<Arc<crate::store::sealed::SecretsKeys>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the writer thread finish what is queued and exit.
        if let Ok(mut writer) = self.writer.lock() {
            writer.take();
        }
    }
}

impl SqliteStore {
    /// Opens or creates the database file (and its folder), migrates it and starts the writer.
    pub async fn open(path: PathBuf) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_wal_limit(path, WAL_CATCH_UP_BYTES).await
    }

    async fn open_with_wal_limit(path: PathBuf, wal_limit_bytes: u64) -> Result<SqliteStore, StoreError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel::<()>();
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
                // The checkpointer runs as long as the writer: it stops when `running` drops.
                let (running, checkpointer_runs) = mpsc::channel::<()>();
                start_checkpointer(writer_path.clone(), checkpointer_runs);
                let wal = WalLimit { path: wal_path(&writer_path), bytes: wal_limit_bytes };
                write_loop(&connection, &jobs_rx, &wal);
                drop(running);
                writer::checkpoint_at_close(&connection);
                drop(done_tx);
            })
            .map_err(|error| StoreError::Unavailable(format!("cannot start the writer thread: {error}")))?;
        ready_rx.await.map_err(|_| StoreError::Unavailable("the writer thread stopped while opening".into()))??;
        let store = SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(Some(jobs_tx)),
                readers: Mutex::new(Vec::new()),
                writer_done: Mutex::new(Some(done_rx)),
                secrets: std::sync::OnceLock::new(),
            }),
        };
        store.settle_all_deliveries().await?;
        Ok(store)
    }

    /// Runs `work` in the writer's next transaction and returns once it has committed.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send_job(Box::new(Job { work: Some(work), result: None, reply }))?;
        answer.await.map_err(|_| StoreError::Unavailable("the writer thread stopped before committing".into()))?
    }

    /// Like `write`, for work that can run again (it only reads what it captured): in a batch it
    /// runs without a savepoint of its own (`writer::RepeatableJob`).
    async fn write_repeatable<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send_job(Box::new(RepeatableJob { work, result: None, reply }))?;
        answer.await.map_err(|_| StoreError::Unavailable("the writer thread stopped before committing".into()))?
    }

    fn send_job(&self, job: Box<dyn WriteJob>) -> Result<(), StoreError> {
        let writer = self.inner.writer.lock().map_err(|_| StoreError::Unavailable("writer lock poisoned".into()))?;
        let sender = writer.as_ref().ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
        sender.send(job).map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))
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

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|connection| Ok(connection.query_row("SELECT 1", [], |_| Ok(()))?)).await?;
        self.write(|_| Ok(())).await
    }

    /// Lets the writer commit what is queued, copies the WAL into the database file and
    /// returns when the writer has stopped; later writes are refused (`Unavailable`).
    pub async fn close(&self) {
        if let Ok(mut writer) = self.inner.writer.lock() {
            writer.take();
        }
        if let Ok(mut readers) = self.inner.readers.lock() {
            readers.clear();
        }
        let done = self.inner.writer_done.lock().ok().and_then(|mut done| done.take());
        if let Some(done) = done {
            let _ = done.await;
        }
    }
}

/// A read-only connection to the database file (reads never write, nor create the file).
pub(super) fn open_reader(path: &std::path::Path) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|error| StoreError::Unavailable(format!("cannot open {}: {error}", path.display())))?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(connection)
}

/// The schema version (`PRAGMA user_version`) of a file this hookgate has brought up to date.
pub(super) fn schema_version() -> usize {
    migrations::schema_version()
}

fn timestamp(microseconds: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(microseconds).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
async fn open_in(dir: &tempfile::TempDir) -> crate::store::Store {
    crate::store::Store::Sqlite(SqliteStore::open(dir.path().join("hookgate.db")).await.unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir).await;
        crate::store::conformance::run_all(&store).await;
        let reopened = open_in(&dir).await;
        crate::store::conformance::a_wrong_secrets_key_is_refused_and_changes_nothing(&store, &reopened).await;
        let file = std::fs::read(dir.path().join("hookgate.db")).unwrap();
        let wal = std::fs::read(dir.path().join("hookgate.db-wal")).unwrap_or_default();
        // The newest subscription was created with the keys installed: its secret never
        // touched the disk in plaintext, neither in the database nor in its write-ahead log.
        let newest = store.subscriptions().await.unwrap().pop().expect("a subscription");
        let secret = newest.secrets[0].secret.as_bytes();
        for bytes in [&file, &wal] {
            assert!(!bytes.windows(secret.len()).any(|window| window == secret), "a plaintext secret on disk");
        }
        crate::store::conformance::closing_refuses_later_writes(&store).await;
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
    async fn closing_commits_what_is_queued_empties_the_wal_and_refuses_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir).await;
        let crate::store::Store::Sqlite(sqlite) = store.clone() else { unreachable!("a SQLite store") };
        let appends: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.append_events(vec![crate::store::conformance::sample_event(&format!("c.{i}"), "app")]).await
                })
            })
            .collect();
        for append in appends {
            append.await.unwrap().unwrap();
        }
        sqlite.close().await;
        let wal = writer::wal_path(&dir.path().join("hookgate.db"));
        let wal_bytes = std::fs::metadata(&wal).map(|metadata| metadata.len()).unwrap_or(0);
        assert_eq!(wal_bytes, 0, "the WAL was copied into the database file and truncated");
        let refused = store.put_setting_if_absent("late", "write").await.unwrap_err();
        assert!(matches!(refused, StoreError::Unavailable(_)), "{refused:?}");
        drop(store);
        let reopened = open_in(&dir).await;
        let page = reopened.list_events(crate::store::EventQuery { limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(page.events.len(), 50, "every acknowledged append is in the file");
    }
}
