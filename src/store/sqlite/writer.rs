//! The writer thread and group commit.
//!
//! One thread owns the only write connection. Writers send it jobs over a channel; it takes
//! every job that is queued (up to `MAX_BATCH`), runs each inside its own savepoint of one
//! transaction, commits once, and only then answers every waiter. A failing job undoes only its
//! own savepoint; a failed commit (or SQLite rolling the transaction back by itself, on a full
//! disk or an I/O error) fails every job of the batch, so nothing is acknowledged that was not
//! kept. It does not wait for more jobs: measured under a closed-loop load, a wait window
//! lowered throughput more than the larger commits saved.
//!
//! WAL checkpoints run on a background connection every 500 ms (automatic checkpoints are off)
//! so that no commit pays for one; every 64 commits the writer looks at the WAL and, past
//! 32 MiB, checkpoints it itself between two batches, so that the WAL restarts instead of
//! growing (a growing WAL made every fsync extend the file).

use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::mpsc;
use tokio::sync::oneshot;

use super::StoreError;
use super::migrations::migrate;

/// The most jobs one transaction takes.
const MAX_BATCH: usize = 512;

/// A unit of work for the writer thread: it runs inside the batch's transaction, and is told
/// afterwards whether the transaction committed.
pub(super) trait WriteJob: Send {
    /// Runs the job in a savepoint of its own.
    fn run(&mut self, connection: &Connection);
    /// Runs the job without a savepoint, if it can run again after its transaction is rolled
    /// back ([`RepeatableJob`]); returns whether it succeeded. A job that cannot does nothing
    /// and returns false.
    fn run_bare(&mut self, _connection: &Connection) -> bool {
        false
    }
    fn repeatable(&self) -> bool {
        false
    }
    /// Whether the job's own work failed because the disk is full.
    fn found_the_disk_full(&self) -> bool;
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

pub(super) struct Job<T, F> {
    pub(super) work: Option<F>,
    pub(super) result: Option<Result<T, StoreError>>,
    pub(super) reply: oneshot::Sender<Result<T, StoreError>>,
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

    fn found_the_disk_full(&self) -> bool {
        found_the_disk_full(&self.result)
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        // The waiter may have gone away (client disconnected); the write stands regardless.
        let _ = self.reply.send(outcome(commit, self.result));
    }
}

fn found_the_disk_full<T>(result: &Option<Result<T, StoreError>>) -> bool {
    matches!(result, Some(Err(StoreError::Full(_))))
}

/// What a job's writer is told: the commit's failure, else the job's own result.
fn outcome<T>(commit: Result<(), StoreError>, result: Option<Result<T, StoreError>>) -> Result<T, StoreError> {
    match (commit, result) {
        (Err(error), _) => Err(error),
        (Ok(()), Some(result)) => result,
        (Ok(()), None) => Err(StoreError::Unavailable("the write was not run".into())),
    }
}

/// A job whose work only reads what it captured, so it can run again: the appends. In a batch,
/// such jobs first run without savepoints (a savepoint copies every page a job first touches
/// into the statement journal, about a tenth of the writer's work); only when one of them fails
/// is the transaction rolled back and the batch run again with a savepoint for every job.
pub(super) struct RepeatableJob<T, F> {
    pub(super) work: F,
    pub(super) result: Option<Result<T, StoreError>>,
    pub(super) reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for RepeatableJob<T, F>
where
    T: Send,
    F: Fn(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, connection: &Connection) {
        self.result = Some(in_savepoint(connection, &self.work));
    }

    fn run_bare(&mut self, connection: &Connection) -> bool {
        let result = (self.work)(connection);
        let succeeded = result.is_ok();
        self.result = Some(result);
        succeeded
    }

    fn repeatable(&self) -> bool {
        true
    }

    fn found_the_disk_full(&self) -> bool {
        found_the_disk_full(&self.result)
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let RepeatableJob { work, result, reply } = *self;
        // What the work holds is let go before the waiter wakes, so that the waiter (holding
        // its own references) frees it, off the writer thread.
        drop(work);
        let _ = reply.send(outcome(commit, result));
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

pub(super) fn configure(connection: &Connection) -> Result<(), StoreError> {
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    connection.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    Ok(())
}

pub(super) fn open_writer(path: &std::path::Path) -> Result<Connection, StoreError> {
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
                        "PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=67108864; PRAGMA cache_size=-16384; \
                         PRAGMA temp_store=MEMORY;",
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
pub(super) fn start_checkpointer(path: PathBuf, running: mpsc::Receiver<()>) {
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

/// The writer thread's loop: take every queued job (up to `MAX_BATCH`), run them in one
/// transaction, commit, answer. It does not wait for more jobs: measured under a closed-loop
/// load, a wait window lowered throughput more than the larger commits saved.
pub(super) fn write_loop(connection: &Connection, jobs: &mpsc::Receiver<Box<dyn WriteJob>>, wal: &WalLimit) {
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
pub(super) const WAL_CATCH_UP_BYTES: u64 = 32 * 1024 * 1024;
/// How many commits pass between two looks at the WAL's size.
const WAL_CHECK_EVERY: u64 = 64;

/// Keeps the WAL from growing without end under steady load. The background checkpointer
/// cannot finish while the writer keeps appending, so the WAL would never restart; a
/// checkpoint run by the writer between batches (nothing appends meanwhile, and the
/// checkpointer has already copied most frames) completes, and the next transaction restarts
/// the WAL from its beginning.
pub(super) struct WalLimit {
    pub(super) path: PathBuf,
    pub(super) bytes: u64,
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

/// The writer's last act: copy the whole WAL into the database file and truncate it, so that a
/// stopped gateway leaves one self-contained file. A failure only leaves the WAL for the next
/// start to recover from.
pub(super) fn checkpoint_at_close(connection: &Connection) {
    if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(%error, "The WAL could not be checkpointed at close; the next start recovers it.");
    }
}

pub(super) fn wal_path(database: &std::path::Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Runs a batch in one transaction and commits it. The repeatable jobs run first, without
/// savepoints; if one of them fails (or panics), nothing of the batch has been kept or answered
/// yet, so the transaction is rolled back and the whole batch runs again, every job in a
/// savepoint of its own. The other jobs always run in savepoints (their work runs only once).
fn run_batch(connection: &Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    if batch.iter().any(|job| job.repeatable()) {
        connection.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let bare = batch.iter_mut().filter(|job| job.repeatable()).all(|job| {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run_bare(connection)));
            matches!(ran, Ok(true)) && !connection.is_autocommit()
        });
        if bare {
            let others = batch.iter_mut().filter(|job| !job.repeatable());
            return run_in_savepoints(connection, others).and_then(|()| commit(connection));
        }
        if !connection.is_autocommit() {
            connection.execute_batch("ROLLBACK")?;
        }
        metrics::counter!("hookgate_store_batches_run_again_total").increment(1);
    }
    connection.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    run_in_savepoints(connection, batch.iter_mut())?;
    commit(connection)
}

fn commit(connection: &Connection) -> Result<(), StoreError> {
    if let Err(error) = connection.prepare_cached("COMMIT").and_then(|mut commit| commit.execute([])) {
        let _ = connection.execute_batch("ROLLBACK");
        return Err(error.into());
    }
    Ok(())
}

/// Runs jobs in the open transaction, each in a savepoint of its own. Fails (with the
/// transaction rolled back) when a job panics or SQLite rolled the transaction back by itself.
fn run_in_savepoints<'a>(
    connection: &Connection,
    jobs: impl Iterator<Item = &'a mut Box<dyn WriteJob>>,
) -> Result<(), StoreError> {
    for job in jobs {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(connection)));
        if ran.is_err() {
            let _ = connection.execute_batch("ROLLBACK");
            return Err(StoreError::Database("a write panicked; its whole transaction was rolled back".into()));
        }
        if connection.is_autocommit() {
            // SQLite rolled the transaction back by itself: nothing of this batch is kept, and
            // no later job may run outside a transaction.
            if job.found_the_disk_full() {
                return Err(StoreError::Full("SQLite rolled the transaction back: no room left on the disk".into()));
            }
            return Err(StoreError::Database("SQLite rolled the transaction back (I/O error)".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Inner, SqliteStore, open_in};
    use super::*;
    use crate::event::NewEvent;
    use crate::store::EventQuery;
    use rusqlite::params;
    use std::sync::{Arc, Mutex};

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
                assert!(matches!(refusal, StoreError::Full(_)), "refused for a full disk: {refusal:?}");
            }
        }
        assert!(connection.is_autocommit(), "no transaction is left open");
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir).await;
        let crate::store::Store::Sqlite(sqlite) = store.clone() else { unreachable!("a SQLite store") };
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
        let inner = Inner {
            path,
            writer: Mutex::new(Some(jobs_tx)),
            readers: Mutex::new(Vec::new()),
            writer_done: Mutex::new(None),
            secrets: std::sync::OnceLock::new(),
        };
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

    /// A repeatable job that inserts a setting, failing after its insert when `fail` is set.
    fn repeatable_setting_job(key: &str, fail: bool) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<(), StoreError>>) {
        let key = key.to_owned();
        let (reply, answer) = oneshot::channel();
        let work = move |connection: &Connection| -> Result<(), StoreError> {
            connection.execute("INSERT INTO settings (key, value) VALUES (?1, 'v')", [&key])?;
            if fail { Err(StoreError::Database("deliberate".into())) } else { Ok(()) }
        };
        (Box::new(RepeatableJob { work, result: None, reply }), answer)
    }

    #[test]
    fn when_a_job_run_without_a_savepoint_fails_the_batch_runs_again_and_only_that_job_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let connection = open_writer(&dir.path().join("hookgate.db")).unwrap();
        let jobs = [
            repeatable_setting_job("first", false),
            setting_job("once", "v".into()),
            repeatable_setting_job("failing", true),
            repeatable_setting_job("last", false),
        ];
        let (mut batch, answers): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
        let commit = run_batch(&connection, &mut batch);
        assert!(commit.is_ok(), "{commit:?}");
        for job in batch {
            job.finish(commit.clone());
        }
        for (key, mut answer) in ["first", "once", "failing", "last"].into_iter().zip(answers) {
            let answer = answer.try_recv().unwrap();
            let stored: i64 =
                connection.query_row("SELECT count(*) FROM settings WHERE key = ?1", [key], |row| row.get(0)).unwrap();
            assert_eq!(answer.is_ok(), key != "failing", "job {key:?} answered {answer:?}");
            assert_eq!(stored, i64::from(key != "failing"), "job {key:?} is stored once, or not at all when it failed");
        }
    }

    #[test]
    fn a_batch_of_repeatable_jobs_that_all_succeed_runs_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let connection = open_writer(&dir.path().join("hookgate.db")).unwrap();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (mut batch, answers): (Vec<Box<dyn WriteJob>>, Vec<_>) = (0..10)
            .map(|i| {
                let (reply, answer) = oneshot::channel::<Result<(), StoreError>>();
                let runs = runs.clone();
                let work = move |connection: &Connection| -> Result<(), StoreError> {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    connection.execute("INSERT INTO settings (key, value) VALUES (?1, 'v')", [format!("k{i}")])?;
                    Ok(())
                };
                (Box::new(RepeatableJob { work, result: None, reply }) as Box<dyn WriteJob>, answer)
            })
            .unzip();
        let commit = run_batch(&connection, &mut batch);
        assert!(commit.is_ok(), "{commit:?}");
        for job in batch {
            job.finish(commit.clone());
        }
        for mut answer in answers {
            answer.try_recv().unwrap().unwrap();
        }
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 10, "no job ran twice");
        let stored: i64 =
            connection.query_row("SELECT count(*) FROM settings WHERE key LIKE 'k%'", [], |row| row.get(0)).unwrap();
        assert_eq!(stored, 10);
    }

    #[tokio::test]
    async fn a_failing_write_does_not_undo_others_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir).await;
        let crate::store::Store::Sqlite(sqlite) = store.clone() else { unreachable!("a SQLite store") };
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
