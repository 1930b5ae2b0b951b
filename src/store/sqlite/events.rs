//! Events: appends (where a duplicate is decided, and the outbox rows are written with the
//! event), reads and listing.
//!
//! `append_one` is where "a duplicate gets success and no second event" is decided: an event
//! whose idempotency key (scope and the platform's delivery id) was stored within its window is
//! not stored again; the original's receive count goes up and its id is returned as a
//! duplicate. Past the window the key is released and the event is new. A new event that is not
//! quarantined gets its deliveries and its NATS publication in the same savepoint, so nothing
//! triggered is lost between the commit and the send.
//!
//! Raw bodies are stored in `bodies`, numbered in the order they come (so that their b-trees
//! grow at the right edge; see `migrations::bodies_by_id`), each once per append however many of
//! its events share it (`StoredBodies`), and not hashed (see `migrations::keys_by_hash`). Events
//! reference their body by its number, and reads join it back. Duplicates are found through an
//! 8-byte hash of the idempotency key, computed on the caller's task (`EventRow::new`), and the
//! row's scope and key are compared.

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::deliveries::insert_delivery;
use super::migrations::idempotency_hash;
use crate::event::{Event, EventSource, NewEvent, StoredEvent};
use crate::store::{Appended, EventPage, EventQuery, PageCut, RawBody, StoreError, StoredRow, stored_event_bytes};

impl SqliteStore {
    pub async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        // Serialize and hash here, on the caller's task, so the single writer thread only writes.
        let rows = events.into_iter().map(EventRow::new).collect::<Result<Vec<_>, _>>()?;
        // The writer lets go of its reference before answering, so the rows are freed here, off
        // the one writer thread.
        let rows = std::sync::Arc::new(rows);
        let written = rows.clone();
        let appended = self
            .write_repeatable(move |connection| {
                let mut stored_bodies = StoredBodies::default();
                written.iter().map(|row| append_one(connection, row, &mut stored_bodies)).collect()
            })
            .await;
        drop(rows);
        appended
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
        self.events_by_id(ids, event_from_row).await
    }

    pub async fn stored_events(&self, ids: Vec<String>) -> Result<Vec<StoredEvent>, StoreError> {
        self.events_by_id(ids, stored_event_from_row).await
    }

    /// The events with these ids that exist, each made by `from_row` from `EVENT_COLUMNS`.
    async fn events_by_id<T: Send + 'static>(
        &self,
        ids: Vec<String>,
        from_row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<Result<T, StoreError>>,
    ) -> Result<Vec<T>, StoreError> {
        self.read(move |connection| {
            let placeholders = vec!["?"; ids.len()].join(", ");
            let mut statement =
                connection.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id IN ({placeholders})"))?;
            let rows = statement.query_map(rusqlite::params_from_iter(ids.iter()), from_row)?;
            rows.map(|row| row?).collect()
        })
        .await
    }

    pub async fn raw_body(&self, id: &str) -> Result<Option<RawBody>, StoreError> {
        let id = id.to_owned();
        self.read(move |connection| {
            let row = connection
                .query_row(
                    "SELECT e.source, b.bytes FROM events e JOIN bodies b ON b.id = e.body_id WHERE e.id = ?1",
                    [id],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?)),
                )
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

    pub async fn count_events_by_name(
        &self,
        since: jiff::Timestamp,
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached("SELECT name, COUNT(*) FROM events WHERE received_at_us >= ?1 GROUP BY name")?;
            let rows = statement
                .query_map([since.as_microsecond()], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
            rows.map(|row| row.map(|(name, count)| (name, count as u64)).map_err(StoreError::from)).collect()
        })
        .await
    }
}

/// An event ready for INSERT: its JSON columns already serialized, its idempotency key hashed.
struct EventRow {
    new: NewEvent,
    source: String,
    /// `None` when the raw body is the data.
    data: Option<String>,
    /// See [`idempotency_hash`]; `None` without a key.
    idempotency_hash: Option<i64>,
}

impl EventRow {
    fn new(new: NewEvent) -> Result<EventRow, StoreError> {
        let source = serde_json::to_string(&new.event.source).map_err(|e| StoreError::Database(e.to_string()))?;
        let data = if new.data_is_raw_json {
            None
        } else {
            Some(serde_json::to_string(&new.event.data).map_err(|e| StoreError::Database(e.to_string()))?)
        };
        let idempotency_hash = new.idempotency_key.as_ref().map(|key| idempotency_hash(&key.scope, &key.key));
        Ok(EventRow { new, source, data, idempotency_hash })
    }
}

/// The bodies one append has stored so far: an append's events that share a body (a split
/// batch, or one mail to several hooks) reference one row. Every ingress path appends the events
/// of one request or one message, which share its buffer, so the address decides at once and
/// the list holds one body; equal bytes in another buffer (a caller that made copies) are
/// compared and count as the same body too.
#[derive(Default)]
struct StoredBodies<'a>(Vec<(&'a [u8], i64)>);

impl<'a> StoredBodies<'a> {
    /// The number of the body with these bytes, stored now if this append has not stored it.
    fn id_of(&mut self, connection: &Connection, bytes: &'a [u8]) -> Result<i64, StoreError> {
        let same = |stored: &[u8]| {
            stored.len() == bytes.len() && (std::ptr::eq(stored.as_ptr(), bytes.as_ptr()) || stored == bytes)
        };
        if let Some((_, id)) = self.0.iter().rev().find(|(stored, _)| same(stored)) {
            return Ok(*id);
        }
        // The hash column is left empty: see `migrations::keys_by_hash`.
        connection.prepare_cached("INSERT INTO bodies (sha256, bytes) VALUES (x'', ?1)")?.execute([bytes])?;
        let id = connection.last_insert_rowid();
        self.0.push((bytes, id));
        Ok(id)
    }
}

/// Appends one event of an append; `stored_bodies` are the bodies this append has stored, so
/// that events sharing a body insert it once.
fn append_one<'a>(
    connection: &Connection,
    row: &'a EventRow,
    stored_bodies: &mut StoredBodies<'a>,
) -> Result<Appended, StoreError> {
    let EventRow { new, source, data, idempotency_hash } = row;
    if let Some(key) = &new.idempotency_key {
        let existing: Option<(String, i64, String)> = connection
            .prepare_cached(
                "SELECT id, received_at_us, name FROM events
                 WHERE idempotency_hash = ?1 AND idempotency_scope = ?2 AND idempotency_key = ?3",
            )?
            .query_row(params![idempotency_hash, &key.scope, &key.key], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        if let Some((id, received_at_us, name)) = existing {
            let window_us = i64::try_from(key.window.as_micros()).unwrap_or(i64::MAX);
            if new.event.received_at.as_microsecond().saturating_sub(received_at_us) <= window_us {
                connection
                    .prepare_cached("UPDATE events SET receive_count = receive_count + 1 WHERE id = ?1")?
                    .execute([&id])?;
                return Ok(Appended { id, name, duplicate: true });
            }
            // Past its window the key is released: the old event keeps its data, not the key.
            connection
                .prepare_cached(
                    "UPDATE events SET idempotency_scope = NULL, idempotency_key = NULL, idempotency_hash = NULL
                     WHERE id = ?1",
                )?
                .execute([&id])?;
        }
    }
    let event = &new.event;
    let body_id = stored_bodies.id_of(connection, &new.raw_body)?;
    connection
        .prepare_cached(
            "INSERT INTO events (id, name, app, hook_type, received_at_us, source, data, body_id,
                                 idempotency_scope, idempotency_key, idempotency_hash, receive_count, quarantined)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            event.id,
            event.name,
            event.app,
            event.hook_type.as_str(),
            event.received_at.as_microsecond(),
            source,
            data,
            body_id,
            new.idempotency_key.as_ref().map(|k| &k.scope),
            new.idempotency_key.as_ref().map(|k| &k.key),
            idempotency_hash,
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
            let key = new.ordering_keys.iter().find(|(id, _)| id == subscription_id).map(|(_, key)| key.as_str());
            insert_delivery(connection, subscription_id, &event.id, at, key)?;
        }
    }
    Ok(Appended { id: event.id.clone(), name: event.name.clone(), duplicate: false })
}

/// An event's columns for `event_from_row`; its body is read only when it is the data.
const EVENT_COLUMNS: &str = "id, name, app, hook_type, received_at_us, source, data, receive_count,
    CASE WHEN data IS NULL THEN (SELECT bytes FROM bodies WHERE id = body_id) END, quarantined";

/// An event's columns, in the order of `EVENT_COLUMNS`.
fn event_columns<'r>(row: &'r rusqlite::Row<'_>) -> rusqlite::Result<StoredRow<'r>> {
    Ok(StoredRow {
        id: row.get(0)?,
        name: row.get(1)?,
        app: row.get(2)?,
        hook_type: row.get_ref(3)?.as_str()?,
        received_at_us: row.get(4)?,
        source: row.get_ref(5)?.as_bytes()?,
        data: row.get_ref(6)?.as_bytes_or_null()?,
        receive_count: row.get(7)?,
        body: row.get_ref(8)?.as_bytes_or_null()?,
        quarantined: row.get(9)?,
    })
}

/// An event as deliveries send it: the source and the data stay JSON text.
fn stored_event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredEvent, StoreError>> {
    Ok(event_columns(row)?.into_stored())
}

fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Event, StoreError>> {
    Ok(event_columns(row)?.into_event())
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
    if let Some(after) = &query.after_id {
        bind(&mut sql, " AND id > ?", after.clone().into());
    }
    let mut cut = PageCut::new(query);
    let order = if query.after_id.is_some() { "ASC" } else { "DESC" };
    sql.push_str(&format!(" ORDER BY id {order} LIMIT {}", cut.rows_to_read()));
    let mut statement = connection.prepare_cached(&sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(values))?;
    let mut events = Vec::new();
    let mut more = false;
    // Row by row: a row past the page's count or bytes is only looked at, never decoded.
    while let Some(row) = rows.next()? {
        let length = |index: usize| row.get_ref(index).map(|value| value.as_bytes().map_or(0, <[u8]>::len));
        let data = if row.get_ref(6)?.as_bytes().is_ok() { length(6)? } else { length(8)? };
        if !cut.takes(stored_event_bytes(data, length(5)?)) {
            more = true;
            break;
        }
        events.push(event_from_row(row)??);
    }
    let next_cursor = if more { events.last().map(|event| event.id.clone()) } else { None };
    Ok(EventPage { events, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_sharing_one_body_store_it_once_whether_one_buffer_or_equal_bytes() {
        let connection = Connection::open_in_memory().unwrap();
        connection
            .execute_batch("CREATE TABLE bodies (id INTEGER PRIMARY KEY, sha256 BLOB NOT NULL, bytes BLOB NOT NULL)")
            .unwrap();
        let body = bytes::Bytes::from_static(br#"[{"sku": "a"}, {"sku": "b"}]"#);
        let (same_buffer, copy) = (body.clone(), bytes::Bytes::copy_from_slice(&body));
        let mut stored = StoredBodies::default();
        let first = stored.id_of(&connection, &body).unwrap();
        assert_eq!(stored.id_of(&connection, &same_buffer).unwrap(), first, "the same buffer");
        assert_eq!(stored.id_of(&connection, &copy).unwrap(), first, "equal bytes in another buffer");
        let part = stored.id_of(&connection, &body[..5]).unwrap();
        assert_ne!(part, first, "a shorter view of the buffer is another body");
        let count: i64 = connection.query_row("SELECT count(*) FROM bodies", [], |row| row.get(0)).unwrap();
        assert_eq!(count, 2);
    }
}
