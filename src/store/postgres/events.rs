//! Events on PostgreSQL: rows prepared on the caller's task for the writer (`writer` decides
//! duplicates and writes the outbox rows), reads and listing. A body is kept once in `bodies`
//! under its SHA-256; an event whose data is its body parsed as JSON keeps no data of its own.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;

use super::writer::AppendJob;
use super::{PostgresStore, pg_error};
use crate::event::{Event, EventSource, NewEvent, StoredEvent};
use crate::store::{Appended, EventPage, EventQuery, PageCut, RawBody, StoreError, StoredRow, stored_event_bytes};

impl PostgresStore {
    pub async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        // Serialize and hash here, on the caller's task, so the writers only write.
        let rows = EventRow::prepare(events)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .appends
            .send(AppendJob { rows, reply, deadline: super::deadline() })
            .await
            .map_err(|_| StoreError::Unavailable("the store's writers have stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the store's writer stopped before committing".into()))?
    }

    pub async fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&format!("{SELECT_EVENTS} WHERE e.id = $1")).await.map_err(pg_error)?;
        client.query_opt(&statement, &[&id]).await.map_err(pg_error)?.map(|row| event_from_row(&row)).transpose()
    }

    pub async fn events(&self, ids: Vec<String>) -> Result<Vec<Event>, StoreError> {
        let client = self.client().await?;
        let statement =
            client.prepare_cached(&format!("{SELECT_EVENTS} WHERE e.id = ANY($1)")).await.map_err(pg_error)?;
        client.query(&statement, &[&ids]).await.map_err(pg_error)?.iter().map(event_from_row).collect()
    }

    pub async fn stored_events(&self, ids: Vec<String>) -> Result<Vec<StoredEvent>, StoreError> {
        let client = self.client().await?;
        let statement =
            client.prepare_cached(&format!("{SELECT_EVENTS} WHERE e.id = ANY($1)")).await.map_err(pg_error)?;
        client.query(&statement, &[&ids]).await.map_err(pg_error)?.iter().map(stored_event_from_row).collect()
    }

    pub async fn raw_body(&self, id: &str) -> Result<Option<RawBody>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT e.source, b.bytes FROM events e JOIN bodies b ON b.sha256 = e.body_sha256 WHERE e.id = $1",
                &[&id],
            )
            .await
            .map_err(pg_error)?;
        row.map(|row| {
            let source: EventSource =
                serde_json::from_str(row.get(0)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(RawBody { content_type: source.content_type, bytes: row.get(1) })
        })
        .transpose()
    }

    pub async fn list_events(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        let mut sql = format!("{SELECT_EVENTS} WHERE true");
        let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut bind = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Sync + Send>| {
            values.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", values.len())));
        };
        if let Some(name) = &query.name {
            bind(&mut sql, " AND e.name = ?", Box::new(name.clone()));
        }
        if let Some(app) = &query.app {
            bind(&mut sql, " AND e.app = ?", Box::new(app.clone()));
        }
        if let Some(since) = query.since {
            bind(&mut sql, " AND e.received_at_us >= ?", Box::new(since.as_microsecond()));
        }
        if let Some(until) = query.until {
            bind(&mut sql, " AND e.received_at_us < ?", Box::new(until.as_microsecond()));
        }
        if let Some(quarantined) = query.quarantined {
            bind(&mut sql, " AND e.quarantined = ?", Box::new(quarantined));
        }
        if let Some(before) = &query.before_id {
            bind(&mut sql, " AND e.id < ?", Box::new(before.clone()));
        }
        if let Some(after) = &query.after_id {
            bind(&mut sql, " AND e.id > ?", Box::new(after.clone()));
        }
        let mut cut = PageCut::new(&query);
        // Newest first; oldest first after an id, for followers of the log.
        let order = if query.after_id.is_some() { "ASC" } else { "DESC" };
        // The limit is a parameter, so that each filter combination is one cached statement.
        bind(
            &mut sql,
            &format!(" ORDER BY e.id {order} LIMIT ?"),
            Box::new(i64::try_from(cut.rows_to_read()).unwrap_or(i64::MAX)),
        );
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
        let params = values.iter().map(|value| value.as_ref() as &(dyn ToSql + Sync));
        // Row by row as they arrive: a row past the page's count or bytes ends the read.
        let rows = client.query_raw(&statement, params).await.map_err(pg_error)?;
        futures_util::pin_mut!(rows);
        let mut events = Vec::new();
        let mut more = false;
        while let Some(row) = futures_util::StreamExt::next(&mut rows).await {
            let row = row.map_err(pg_error)?;
            let data = match row.get::<_, Option<&str>>(6) {
                Some(data) => data.len(),
                None => row.get::<_, Option<&[u8]>>(8).map_or(0, <[u8]>::len),
            };
            if !cut.takes(stored_event_bytes(data, row.get::<_, &str>(5).len())) {
                more = true;
                break;
            }
            events.push(event_from_row(&row)?);
        }
        let next_cursor = if more { events.last().map(|event| event.id.clone()) } else { None };
        Ok(EventPage { events, next_cursor })
    }
}

impl PostgresStore {
    pub async fn count_events_by_name(
        &self,
        since: jiff::Timestamp,
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, count(*) FROM events WHERE received_at_us >= $1 GROUP BY name",
                &[&since.as_microsecond()],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|row| (row.get(0), row.get::<_, i64>(1) as u64)).collect())
    }
}

/// An event ready for INSERT: its JSON columns serialized, its body hashed.
pub(super) struct EventRow {
    pub(super) new: NewEvent,
    hook_type: &'static str,
    received_at_us: i64,
    source: String,
    /// `None` when the raw body is the data.
    data: Option<String>,
    pub(super) sha256: Vec<u8>,
    scope: Option<String>,
    key: Option<String>,
    receive_count: i32,
}

impl EventRow {
    /// Rows for a batch. The events of one request share one body (`Bytes` clones of one
    /// buffer): it is hashed once.
    fn prepare(events: Vec<NewEvent>) -> Result<Vec<EventRow>, StoreError> {
        let mut last: Option<(*const u8, usize, Vec<u8>)> = None;
        let json = |value: &serde_json::Value| serde_json::to_string(value);
        events
            .into_iter()
            .map(|new| {
                let body: &Bytes = &new.raw_body;
                let sha256 = match &last {
                    Some((pointer, length, hash)) if *pointer == body.as_ptr() && *length == body.len() => hash.clone(),
                    _ => {
                        let hash = Sha256::digest(body).to_vec();
                        last = Some((body.as_ptr(), body.len(), hash.clone()));
                        hash
                    }
                };
                let invalid = |error: serde_json::Error| StoreError::Database(error.to_string());
                let source = serde_json::to_string(&new.event.source).map_err(invalid)?;
                let data = if new.data_is_raw_json { None } else { Some(json(&new.event.data).map_err(invalid)?) };
                Ok(EventRow {
                    hook_type: new.event.hook_type.as_str(),
                    received_at_us: new.event.received_at.as_microsecond(),
                    scope: new.idempotency_key.as_ref().map(|key| key.scope.clone()),
                    key: new.idempotency_key.as_ref().map(|key| key.key.clone()),
                    receive_count: i32::try_from(new.event.receive_count).unwrap_or(i32::MAX),
                    new,
                    source,
                    data,
                    sha256,
                })
            })
            .collect()
    }

    /// The parameters of `writer::INSERT_EVENT` (one row), in order.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        let event = &self.new.event;
        [
            &event.id,
            &event.name,
            &event.app,
            &self.hook_type,
            &self.received_at_us,
            &self.source,
            &self.data,
            &self.sha256,
            &self.scope,
            &self.key,
            &self.receive_count,
            &event.quarantined,
        ]
    }
}

/// A batch of rows as one array per column, the parameters of `writer::INSERT_EVENTS`.
pub(super) struct EventColumns<'a> {
    ids: Vec<&'a str>,
    names: Vec<&'a str>,
    apps: Vec<&'a str>,
    hook_types: Vec<&'static str>,
    received_at_us: Vec<i64>,
    sources: Vec<&'a str>,
    data: Vec<Option<&'a str>>,
    sha256: Vec<&'a [u8]>,
    scopes: Vec<Option<&'a str>>,
    keys: Vec<Option<&'a str>>,
    receive_counts: Vec<i32>,
    quarantined: Vec<bool>,
}

impl<'a> EventColumns<'a> {
    /// The rows' columns, in the rows' order.
    pub(super) fn of(rows: impl ExactSizeIterator<Item = &'a EventRow>) -> EventColumns<'a> {
        let length = rows.len();
        let mut columns = EventColumns {
            ids: Vec::with_capacity(length),
            names: Vec::with_capacity(length),
            apps: Vec::with_capacity(length),
            hook_types: Vec::with_capacity(length),
            received_at_us: Vec::with_capacity(length),
            sources: Vec::with_capacity(length),
            data: Vec::with_capacity(length),
            sha256: Vec::with_capacity(length),
            scopes: Vec::with_capacity(length),
            keys: Vec::with_capacity(length),
            receive_counts: Vec::with_capacity(length),
            quarantined: Vec::with_capacity(length),
        };
        for row in rows {
            let event = &row.new.event;
            columns.ids.push(&event.id);
            columns.names.push(&event.name);
            columns.apps.push(&event.app);
            columns.hook_types.push(row.hook_type);
            columns.received_at_us.push(row.received_at_us);
            columns.sources.push(&row.source);
            columns.data.push(row.data.as_deref());
            columns.sha256.push(&row.sha256);
            columns.scopes.push(row.scope.as_deref());
            columns.keys.push(row.key.as_deref());
            columns.receive_counts.push(row.receive_count);
            columns.quarantined.push(event.quarantined);
        }
        columns
    }

    /// The parameters of `writer::INSERT_EVENTS`, in order.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.ids,
            &self.names,
            &self.apps,
            &self.hook_types,
            &self.received_at_us,
            &self.sources,
            &self.data,
            &self.sha256,
            &self.scopes,
            &self.keys,
            &self.receive_counts,
            &self.quarantined,
        ]
    }
}

/// Every event read selects these columns, in this order (`event_from_row`).
const SELECT_EVENTS: &str = "SELECT e.id, e.name, e.app, e.hook_type, e.received_at_us, e.source, e.data, e.receive_count,
            CASE WHEN e.data IS NULL THEN (SELECT b.bytes FROM bodies b WHERE b.sha256 = e.body_sha256) END, e.quarantined
     FROM events e";

/// An event's columns, in the order of `SELECT_EVENTS`.
fn event_columns(row: &tokio_postgres::Row) -> StoredRow<'_> {
    StoredRow {
        id: row.get(0),
        name: row.get(1),
        app: row.get(2),
        hook_type: row.get(3),
        received_at_us: row.get(4),
        source: row.get::<_, &str>(5).as_bytes(),
        data: row.get::<_, Option<&str>>(6).map(str::as_bytes),
        receive_count: u32::try_from(row.get::<_, i32>(7)).unwrap_or(0),
        body: row.get(8),
        quarantined: row.get(9),
    }
}

/// An event as deliveries send it: the source and the data stay JSON text.
fn stored_event_from_row(row: &tokio_postgres::Row) -> Result<StoredEvent, StoreError> {
    event_columns(row).into_stored()
}

fn event_from_row(row: &tokio_postgres::Row) -> Result<Event, StoreError> {
    event_columns(row).into_event()
}
