//! Retention and erasure on PostgreSQL: events older than a cutoff and finished delivery
//! history deleted in small batches (rows another node is working on are skipped, `SKIP
//! LOCKED`), and every event that names a resource erased (see `Store::purge_resource`).
//!
//! Bodies are deleted apart from their events, one statement each, after the events'
//! transaction has committed: `events.body_sha256` references `bodies`, so a body that an append
//! on another node is just referencing again is kept (its delete fails the reference check, and
//! is left), and a body deleted just before such an append makes the append's reference check
//! fail, which the writer retries with the body written again.

use jiff::Timestamp;

use super::{PostgresStore, pg_error};
use crate::store::{PruneCount, PurgeCount, StoreError};

/// Events erased per transaction.
const PURGE_BATCH: usize = 500;
/// Events (by `seq`) looked at per read by an erasure.
const PURGE_SCAN: i64 = 5_000;

impl PostgresStore {
    pub async fn prune_before(&self, cutoff: Timestamp, batch: usize) -> Result<PruneCount, StoreError> {
        let cutoff_us = cutoff.as_microsecond();
        let limit = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        let old = ids(
            &transaction,
            "SELECT id FROM events WHERE received_at_us < $1 ORDER BY received_at_us LIMIT $2 FOR UPDATE SKIP LOCKED",
            cutoff_us,
            limit,
        )
        .await?;
        let (events, deliveries, bodies) = delete_events(&transaction, &old).await?;
        // Finished deliveries older than the cutoff, of events still kept (replays of old events).
        let finished = ids(
            &transaction,
            "SELECT id FROM deliveries WHERE status <> 'pending' AND updated_at_us < $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
            cutoff_us,
            limit,
        )
        .await?;
        transaction
            .execute("DELETE FROM delivery_attempts WHERE delivery_id = ANY($1)", &[&finished])
            .await
            .map_err(pg_error)?;
        let history =
            transaction.execute("DELETE FROM deliveries WHERE id = ANY($1)", &[&finished]).await.map_err(pg_error)?;
        transaction.commit().await.map_err(pg_error)?;
        let bodies = delete_unreferenced_bodies(&client, bodies).await?;
        Ok(PruneCount { events, deliveries: deliveries + history, bodies })
    }

    pub async fn purge_resource(&self, resource_id: String) -> Result<PurgeCount, StoreError> {
        let mut client = self.client().await?;
        let last: i64 =
            client.query_one("SELECT COALESCE(max(seq), 0) FROM events", &[]).await.map_err(pg_error)?.get(0);
        let mut purged = PurgeCount::default();
        let mut from = 0;
        while from < last {
            let to = from.saturating_add(PURGE_SCAN).min(last);
            // Read as text and judged in Rust by the routes' own rule: a cast to jsonb in SQL
            // would refuse data holding `\u0000` (which anyone can post to a form), and numbers
            // print differently there.
            let rows = client
                .query(
                    "SELECT e.id, e.data, CASE WHEN e.data IS NULL THEN
                         (SELECT b.bytes FROM bodies b WHERE b.sha256 = e.body_sha256) END
                     FROM events e WHERE e.seq > $1 AND e.seq <= $2",
                    &[&from, &to],
                )
                .await
                .map_err(pg_error)?;
            let mut about = Vec::new();
            for row in rows {
                let data: Option<&str> = row.get(1);
                let body: Option<&[u8]> = row.get(2);
                let parsed: Result<serde_json::Value, _> = match (data, body) {
                    (Some(data), _) => serde_json::from_str(data),
                    (None, Some(body)) => serde_json::from_slice(body),
                    (None, None) => continue,
                };
                let data = parsed.map_err(|error| StoreError::Corrupt(error.to_string()))?;
                if crate::subscriptions::is_about(&data, &resource_id) {
                    about.push(row.get::<_, String>(0));
                }
            }
            for chunk in about.chunks(PURGE_BATCH) {
                let transaction = client.transaction().await.map_err(pg_error)?;
                let (events, deliveries, bodies) = delete_events(&transaction, chunk).await?;
                transaction.commit().await.map_err(pg_error)?;
                purged.events += events;
                purged.deliveries += deliveries;
                purged.bodies += delete_unreferenced_bodies(&client, bodies).await?;
            }
            from = to;
        }
        Ok(purged)
    }

    /// How many raw bodies are stored (each once, however many events share it).
    #[cfg(test)]
    pub(crate) async fn stored_body_count(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let count: i64 = client.query_one("SELECT count(*) FROM bodies", &[]).await.map_err(pg_error)?.get(0);
        Ok(count as u64)
    }
}

/// The ids `select` finds older than `cutoff_us`, at most `limit` of them, locked.
async fn ids(
    transaction: &deadpool_postgres::Transaction<'_>,
    select: &str,
    cutoff_us: i64,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let rows = transaction.query(select, &[&cutoff_us, &limit]).await.map_err(pg_error)?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Deletes these events (those that still exist) with their deliveries, attempts and
/// publications; returns the counts of events and deliveries, and the bodies they used.
async fn delete_events(
    transaction: &deadpool_postgres::Transaction<'_>,
    ids: &[String],
) -> Result<(u64, u64, Vec<Vec<u8>>), StoreError> {
    if ids.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    transaction
        .execute(
            "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id = ANY($1))",
            &[&ids],
        )
        .await
        .map_err(pg_error)?;
    let deliveries =
        transaction.execute("DELETE FROM deliveries WHERE event_id = ANY($1)", &[&ids]).await.map_err(pg_error)?;
    transaction.execute("DELETE FROM publications WHERE event_id = ANY($1)", &[&ids]).await.map_err(pg_error)?;
    let deleted = transaction
        .query("DELETE FROM events WHERE id = ANY($1) RETURNING body_sha256", &[&ids])
        .await
        .map_err(pg_error)?;
    let mut bodies: Vec<Vec<u8>> = deleted.iter().map(|row| row.get(0)).collect();
    bodies.sort();
    bodies.dedup();
    Ok((deleted.len() as u64, deliveries, bodies))
}

/// Deletes each of these bodies that no event references, one statement each; one an append is
/// referencing again at this moment is kept.
async fn delete_unreferenced_bodies(client: &tokio_postgres::Client, bodies: Vec<Vec<u8>>) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for sha256 in bodies {
        let outcome = client
            .execute(
                "DELETE FROM bodies WHERE sha256 = $1 AND NOT EXISTS (SELECT 1 FROM events WHERE body_sha256 = $1)",
                &[&sha256],
            )
            .await;
        match outcome {
            Ok(count) => deleted += count,
            Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {}
            Err(error) => return Err(pg_error(error)),
        }
    }
    Ok(deleted)
}
