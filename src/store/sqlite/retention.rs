//! Deleting events: retention (`prune_before`: events received before a cutoff, and finished
//! deliveries older than it) and erasure (`purge_resource`: every event whose data names a
//! resource). An event goes with its deliveries, their attempts, its publication, and its raw
//! body when no other event still references that body.
//!
//! Both work in small write transactions so that ingest, which shares the one writer, is never
//! held up for long: `prune_before` deletes at most one batch per call (its caller loops), and
//! `purge_resource` finds the events on read connections, range by range, and deletes them in
//! batches. An event appended after a purge began is not looked at.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;

use super::SqliteStore;
use crate::store::{PruneCount, PurgeCount, StoreError};

/// Events deleted per write transaction by an erasure.
const PURGE_BATCH: usize = 500;
/// Events (by `seq`) looked at per read by an erasure.
const PURGE_SCAN: i64 = 5_000;

/// Events whose data names the resource `?3` at the top level (`resource_id`, `resourceId` or
/// `id`), among `seq` in `(?1, ?2]`: a superset of `routes::is_about` (every number written as a
/// real is taken, since SQLite and serde_json spell reals differently), which decides after.
const CANDIDATES: &str = "
    SELECT id, doc FROM (
        SELECT id, COALESCE(data, (SELECT CAST(bytes AS TEXT) FROM bodies WHERE id = body_id)) AS doc
        FROM events WHERE seq > ?1 AND seq <= ?2)
    WHERE CASE WHEN json_valid(doc) THEN
        json_type(doc, '$.resource_id') = 'real' OR CAST(json_extract(doc, '$.resource_id') AS TEXT) = ?3
        OR json_type(doc, '$.resourceId') = 'real' OR CAST(json_extract(doc, '$.resourceId') AS TEXT) = ?3
        OR json_type(doc, '$.id') = 'real' OR CAST(json_extract(doc, '$.id') AS TEXT) = ?3
    ELSE 0 END";

impl SqliteStore {
    pub async fn prune_before(&self, cutoff: Timestamp, batch: usize) -> Result<PruneCount, StoreError> {
        let cutoff_us = cutoff.as_microsecond();
        let limit = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        self.write(move |connection| {
            let old: Vec<String> = connection
                .prepare_cached("SELECT id FROM events WHERE received_at_us < ?1 ORDER BY received_at_us LIMIT ?2")?
                .query_map(params![cutoff_us, limit], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let events = delete_events(connection, &old)?;
            // Finished deliveries older than the cutoff, of events still kept (replays of old
            // events, history of subscriptions that keep their events longer).
            let finished: Vec<String> = connection
                .prepare_cached("SELECT id FROM deliveries WHERE status <> 'pending' AND updated_at_us < ?1 LIMIT ?2")?
                .query_map(params![cutoff_us, limit], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            super::deliveries::delete_deliveries(connection, &finished)?;
            Ok(PruneCount {
                events: events.events,
                deliveries: events.deliveries + finished.len() as u64,
                bodies: events.bodies,
            })
        })
        .await
    }

    pub async fn purge_resource(&self, resource_id: String) -> Result<PurgeCount, StoreError> {
        let last: i64 = self
            .read(|connection| {
                Ok(connection.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |row| row.get(0))?)
            })
            .await?;
        let mut purged = PurgeCount::default();
        let mut from = 0;
        while from < last {
            let to = from.saturating_add(PURGE_SCAN).min(last);
            let resource = resource_id.clone();
            let about: Vec<String> = self
                .read(move |connection| {
                    let mut candidates = connection.prepare_cached(CANDIDATES)?;
                    let rows = candidates.query_map(params![from, to, resource], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                    })?;
                    let mut about = Vec::new();
                    for row in rows {
                        let (id, doc) = row?;
                        let data: serde_json::Value =
                            serde_json::from_str(&doc).map_err(|error| StoreError::Corrupt(error.to_string()))?;
                        if crate::subscriptions::is_about(&data, &resource) {
                            about.push(id);
                        }
                    }
                    Ok(about)
                })
                .await?;
            for chunk in about.chunks(PURGE_BATCH) {
                let chunk = chunk.to_vec();
                let deleted = self.write(move |connection| delete_events(connection, &chunk)).await?;
                purged.events += deleted.events;
                purged.deliveries += deleted.deliveries;
                purged.bodies += deleted.bodies;
            }
            from = to;
        }
        Ok(purged)
    }

    /// How many raw bodies are stored (each once, however many events share it).
    #[cfg(test)]
    pub(crate) async fn stored_body_count(&self) -> Result<u64, StoreError> {
        let count: i64 = self
            .read(|connection| Ok(connection.query_row("SELECT count(*) FROM bodies", [], |row| row.get(0))?))
            .await?;
        Ok(count as u64)
    }
}

/// Deletes these events (those that still exist) with their deliveries, attempts and
/// publications, then their bodies that no remaining event references.
fn delete_events(connection: &Connection, ids: &[String]) -> Result<PurgeCount, StoreError> {
    let mut count = PurgeCount::default();
    let mut bodies = BTreeSet::new();
    let mut body_of = connection.prepare_cached("SELECT body_id FROM events WHERE id = ?1")?;
    let mut forget_attempts = connection.prepare_cached(
        "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id = ?1)",
    )?;
    let mut forget_deliveries = connection.prepare_cached("DELETE FROM deliveries WHERE event_id = ?1")?;
    let mut forget_publication = connection.prepare_cached("DELETE FROM publications WHERE event_id = ?1")?;
    let mut forget_event = connection.prepare_cached("DELETE FROM events WHERE id = ?1")?;
    for id in ids {
        // Gone already (deleted meanwhile by retention or another erasure): nothing to count.
        let Some(body) = body_of.query_row([id], |row| row.get::<_, i64>(0)).optional()? else { continue };
        forget_attempts.execute([id])?;
        count.deliveries += forget_deliveries.execute([id])? as u64;
        forget_publication.execute([id])?;
        count.events += forget_event.execute([id])? as u64;
        bodies.insert(body);
    }
    let mut forget_body = connection
        .prepare_cached("DELETE FROM bodies WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM events WHERE body_id = ?1)")?;
    for body in &bodies {
        count.bodies += forget_body.execute([body])? as u64;
    }
    Ok(count)
}
