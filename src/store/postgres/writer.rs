//! Group commit of appends on PostgreSQL.
//!
//! A few writer tasks share one queue of append jobs. Each takes every job queued (up to
//! `MAX_ROWS` events), writes them in one transaction, commits, and only then answers every
//! waiter: nothing is acknowledged that is not committed. While one transaction commits, the
//! next writer is already gathering the jobs that arrived meanwhile, so the wait for the disk
//! is shared the way SQLite's single writer shares it.
//!
//! In the transaction, bodies go in first (once per SHA-256, `ON CONFLICT DO NOTHING`), then
//! every event of the batch in one INSERT over arrays (one round trip and one statement for the
//! server, whatever the batch's size), with `ON CONFLICT DO NOTHING` on the unique index of
//! idempotency keys, so the same platform retry reaching two nodes at once makes one event (the
//! second insert waits for the first transaction, then finds its row); the rows it returns are
//! the events that are new, and each keyed event left out is then looked up by its key.
//! Rows go in sorted by key, so two batches never take the same keys in opposite orders; a
//! deadlock or serialization failure all the same runs the batch again. A body this transaction
//! wrote only for duplicates is taken out again before the commit (nothing would ever delete it).
//! Then the deliveries and publications of the new events, one statement each. After the commit,
//! a NOTIFY wakes idle workers on the other nodes: sent outside the transaction, because a
//! transaction that notifies holds a lock of the whole server through its commit, which would
//! make every node's commits wait on each other; and at most every `WAKE_INTERVAL`, since the
//! workers poll as well. A batch that fails for a reason of its own (not the database being
//! away) is split, and each job is committed alone, so one bad event does not fail its
//! neighbours.
//!
//! Every append is answered about `CONNECTION_WAIT` after its arrival at the latest, committed or
//! not: a job taken from the queue with less than `MIN_TIME_LEFT` before its deadline is answered
//! `Unavailable` without being written, and a batch not committed by the latest deadline of its
//! jobs is answered `Unavailable` (its connection, which may be stalled, leaves the pool). One job
//! close to its deadline does not cut short the batch it joined. Whether a batch cut off at its
//! `COMMIT` was committed cannot be known; its senders are told to retry, as when the connection
//! is lost at that moment.

use deadpool_postgres::{Object, Pool};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

use super::events::{EventColumns, EventRow};
use super::{CONNECTION_WAIT, Node, is_conflict, pg_error, within};
use crate::store::{Appended, StoreChange, StoreError};

/// Jobs waiting for a writer before callers wait to queue.
pub(super) const QUEUE: usize = 8192;
/// The most events one transaction takes.
const MAX_ROWS: usize = 512;
/// Writer tasks per node: one gathers while another commits.
const WRITERS: usize = 2;
/// Runs of a batch that met a deadlock or serialization failure.
const CONFLICT_TRIES: usize = 5;
/// A job with less time than this before its deadline is not started.
const MIN_TIME_LEFT: std::time::Duration = std::time::Duration::from_secs(1);
/// The most often one node wakes the others' workers.
pub(super) const WAKE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// One caller's events and where its answer goes.
pub(super) struct AppendJob {
    pub(super) rows: Vec<EventRow>,
    pub(super) reply: oneshot::Sender<Result<Vec<Appended>, StoreError>>,
    /// When the caller must have its answer (`CONNECTION_WAIT` after it asked).
    pub(super) deadline: Instant,
}

/// Runs the writers until every sender is gone.
pub(super) async fn run(pool: Pool, jobs: mpsc::Receiver<AppendJob>, node: Arc<Node>) {
    let jobs = Arc::new(Mutex::new(jobs));
    let writers = (0..WRITERS).map(|_| tokio::spawn(write_loop(pool.clone(), jobs.clone(), node.clone())));
    futures_util::future::join_all(writers).await;
}

async fn write_loop(pool: Pool, jobs: Arc<Mutex<mpsc::Receiver<AppendJob>>>, node: Arc<Node>) {
    loop {
        let batch = {
            let mut jobs = jobs.lock().await;
            let Some(first) = jobs.recv().await else { return };
            let mut rows = first.rows.len();
            let mut batch = vec![first];
            while rows < MAX_ROWS {
                match jobs.try_recv() {
                    Ok(job) => {
                        rows += job.rows.len();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        // Jobs that waited in the queue past their deadline are answered without being written.
        let now = Instant::now();
        let (batch, expired): (Vec<AppendJob>, Vec<AppendJob>) =
            batch.into_iter().partition(|job| job.deadline > now + MIN_TIME_LEFT);
        for job in expired {
            let _ = job.reply.send(Err(late()));
        }
        let Some(deadline) = batch.iter().map(|job| job.deadline).max() else { continue };
        metrics::histogram!("hookgate_store_commit_batch_size").record(batch.len() as f64);
        match commit_batch(&pool, &batch, &node, deadline).await {
            Ok(answers) => {
                for (job, answer) in batch.into_iter().zip(answers) {
                    // The waiter may have gone away (client disconnected); the write stands.
                    let _ = job.reply.send(Ok(answer));
                }
            }
            Err(error) if batch.len() > 1 && !matches!(error, StoreError::Unavailable(_)) => {
                tracing::warn!(%error, jobs = batch.len(), "A batch of appends failed; committing its jobs one by one.");
                for job in batch {
                    let answer = commit_batch(&pool, std::slice::from_ref(&job), &node, job.deadline).await;
                    let _ = job.reply.send(answer.map(|mut answers| answers.pop().unwrap_or_default()));
                }
            }
            Err(error) => {
                tracing::error!(%error, jobs = batch.len(), "A store transaction failed; its writers get an error.");
                for job in batch {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Commits the jobs' events in one transaction by `deadline`, run again on a deadlock or
/// serialization failure; returns each job's outcomes.
async fn commit_batch(
    pool: &Pool,
    jobs: &[AppendJob],
    node: &Node,
    deadline: Instant,
) -> Result<Vec<Vec<Appended>>, StoreError> {
    within(pool, deadline, async |client| {
        let mut tries = 0;
        loop {
            match write_batch(client, jobs).await {
                Err(error) if is_conflict(&error) && tries + 1 < CONFLICT_TRIES => tries += 1,
                Err(error) => return Err(pg_error(error)),
                Ok((answers, woken)) => {
                    for change in woken {
                        node.wake_others(client, change).await;
                    }
                    return Ok(answers);
                }
            }
        }
    })
    .await
}

/// The answer to a job whose deadline passed before a writer could take it.
fn late() -> StoreError {
    StoreError::Unavailable(format!("the database did not commit within {} s", CONNECTION_WAIT.as_secs()))
}

/// Writes and commits a batch; returns each job's outcomes and what the other nodes' workers
/// should hear of.
async fn write_batch(
    client: &mut Object,
    jobs: &[AppendJob],
) -> Result<(Vec<Vec<Appended>>, Vec<StoreChange>), tokio_postgres::Error> {
    let rows: Vec<&EventRow> = jobs.iter().flat_map(|job| job.rows.iter()).collect();
    let transaction = client.transaction().await?;

    // Bodies first, each once, in hash order (two batches never wait on each other in a circle).
    let mut seen = HashSet::new();
    let mut bodies: Vec<(&[u8], &[u8])> = rows
        .iter()
        .filter(|row| seen.insert(row.sha256.as_slice()))
        .map(|row| (&row.sha256[..], row.new.raw_body.as_ref()))
        .collect();
    bodies.sort_unstable_by_key(|(sha256, _)| *sha256);
    let (hashes, bytes): (Vec<&[u8]>, Vec<&[u8]>) = bodies.into_iter().unzip();
    let new_bodies: Vec<Vec<u8>> = transaction
        .query(
            "INSERT INTO bodies (sha256, bytes) SELECT * FROM unnest($1::bytea[], $2::bytea[])
             ON CONFLICT DO NOTHING RETURNING sha256",
            &[&hashes, &bytes],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();

    // Events in one statement over arrays, keyed ones in key order (the rows go in in the
    // arrays' order); a keyed event whose key is taken is left out and answered below.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|a, b| {
        let key = |index: &usize| rows[*index].new.idempotency_key.as_ref().map(|key| (&key.scope, &key.key));
        key(a).cmp(&key(b))
    });
    let columns = EventColumns::of(order.iter().map(|&index| rows[index]));
    let insert_all = transaction.prepare_cached(INSERT_EVENTS).await?;
    let inserted: HashSet<String> =
        transaction.query(&insert_all, &columns.params()).await?.iter().map(|row| row.get(0)).collect();

    let mut outcomes: Vec<Option<Appended>> = vec![None; rows.len()];
    for &index in &order {
        let id = &rows[index].new.event.id;
        if inserted.contains(id) {
            outcomes[index] =
                Some(Appended { id: id.clone(), name: rows[index].new.event.name.clone(), duplicate: false });
        }
    }
    let plain = transaction.prepare_cached(INSERT_EVENT).await?;
    // Keyed events whose key was taken: a duplicate within the window, else the key moves on.
    for &index in &order {
        if outcomes[index].is_some() {
            continue;
        }
        let row = rows[index];
        let key = row.new.idempotency_key.as_ref().expect("only keyed inserts can conflict");
        let existing = transaction
            .query_opt(
                "SELECT id, received_at_us, name FROM events WHERE idempotency_scope = $1 AND idempotency_key = $2 FOR UPDATE",
                &[&key.scope, &key.key],
            )
            .await?;
        if let Some(existing) = existing {
            let id: String = existing.get(0);
            let received_at_us: i64 = existing.get(1);
            let name: String = existing.get(2);
            let window_us = i64::try_from(key.window.as_micros()).unwrap_or(i64::MAX);
            if row.new.event.received_at.as_microsecond().saturating_sub(received_at_us) <= window_us {
                transaction
                    .execute("UPDATE events SET receive_count = receive_count + 1 WHERE id = $1", &[&id])
                    .await?;
                outcomes[index] = Some(Appended { id, name, duplicate: true });
                continue;
            }
            // Past its window the key is released: the old event keeps its data, not the key.
            transaction
                .execute("UPDATE events SET idempotency_scope = NULL, idempotency_key = NULL WHERE id = $1", &[&id])
                .await?;
        }
        transaction.execute(&plain, &row.params()).await?;
        outcomes[index] =
            Some(Appended { id: row.new.event.id.clone(), name: row.new.event.name.clone(), duplicate: false });
    }

    // A body written here only for duplicates would be kept by nothing: out again.
    if outcomes.iter().any(|outcome| outcome.as_ref().is_some_and(|outcome| outcome.duplicate)) {
        let used: HashSet<&[u8]> = rows
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.as_ref().is_some_and(|outcome| !outcome.duplicate))
            .map(|(row, _)| row.sha256.as_slice())
            .collect();
        let unused: Vec<&Vec<u8>> = new_bodies.iter().filter(|sha256| !used.contains(sha256.as_slice())).collect();
        if !unused.is_empty() {
            transaction.execute("DELETE FROM bodies WHERE sha256 = ANY($1)", &[&unused]).await?;
        }
    }

    // The outbox rows of the new events that are not quarantined.
    let mut woken = Vec::new();
    let mut deliveries: DeliveryColumns<'_> = Default::default();
    let mut publications: (Vec<&str>, Vec<&str>, Vec<i64>) = Default::default();
    for (row, outcome) in rows.iter().zip(&outcomes) {
        let event = &row.new.event;
        if outcome.as_ref().is_none_or(|outcome| outcome.duplicate) || event.quarantined {
            continue;
        }
        let at = event.received_at.as_microsecond();
        for subscription_id in &row.new.deliver_to {
            deliveries.0.push(super::deliveries::new_delivery_id());
            deliveries.1.push(subscription_id);
            deliveries.2.push(&event.id);
            deliveries.3.push(at);
            let key = row.new.ordering_keys.iter().find(|(id, _)| id == subscription_id).map(|(_, key)| key.as_str());
            deliveries.4.push(key);
        }
        if let Some(subject) = &row.new.publish_to {
            publications.0.push(&event.id);
            publications.1.push(subject);
            publications.2.push(at);
        }
    }
    if !deliveries.0.is_empty() {
        let written = transaction
            .execute(
                "INSERT INTO deliveries (id, subscription_id, event_id, status, next_attempt_at_us, created_at_us, updated_at_us, ordering_key)
                 SELECT d.id, d.subscription_id, d.event_id, 'pending',
                        CASE WHEN s.status = 'paused' THEN NULL ELSE d.at END, d.at, d.at, d.ordering_key
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[])
                     AS d (id, subscription_id, event_id, at, ordering_key)
                 JOIN subscriptions s ON s.id = d.subscription_id
                 FOR KEY SHARE OF s",
                &[&deliveries.0, &deliveries.1, &deliveries.2, &deliveries.3, &deliveries.4],
            )
            .await?;
        if written > 0 {
            woken.push(StoreChange::Deliveries);
        }
    }
    if !publications.0.is_empty() {
        transaction
            .execute(
                "INSERT INTO publications (event_id, subject, next_attempt_at_us)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])",
                &[&publications.0, &publications.1, &publications.2],
            )
            .await?;
        woken.push(StoreChange::Publications);
    }
    transaction.commit().await?;

    let mut outcomes = outcomes.into_iter().map(|outcome| outcome.expect("every row has an outcome"));
    Ok((jobs.iter().map(|job| outcomes.by_ref().take(job.rows.len()).collect()).collect(), woken))
}

/// The delivery rows of a batch, one array per column: ids, subscription ids, event ids, due
/// times and ordering keys.
type DeliveryColumns<'a> = (Vec<String>, Vec<&'a str>, Vec<&'a str>, Vec<i64>, Vec<Option<&'a str>>);

/// Every event of a batch, from one array per column (`EventColumns`).
const INSERT_EVENTS: &str = "INSERT INTO events (id, name, app, hook_type, received_at_us, source, data, body_sha256,
                            idempotency_scope, idempotency_key, receive_count, quarantined)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[],
                          $8::bytea[], $9::text[], $10::text[], $11::int4[], $12::bool[])
     ON CONFLICT (idempotency_scope, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
     RETURNING id";
/// One event, for a key that moved on past its window.
const INSERT_EVENT: &str = "INSERT INTO events (id, name, app, hook_type, received_at_us, source, data, body_sha256,
                            idempotency_scope, idempotency_key, receive_count, quarantined)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
