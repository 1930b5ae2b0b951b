//! Deliveries across subscriptions on SQLite: the dead letter listing (any status, newest first,
//! with the last attempt) and bulk retries, stored as jobs that the workers take a batch at a
//! time, each batch one write that makes its deliveries due and moves the job's cursor.

use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::deliveries::{ATTEMPT_COLUMNS, attempt_from_row};
use super::{SqliteStore, push_condition, timestamp};
use crate::store::{
    Attempt, DeliveryListQuery, DeliverySelection, DeliverySummary, DeliverySummaryPage, RetryJob, StoreError,
};

/// The SQL condition for `selection` over `deliveries`, its values appended to `values`.
fn selection_filter(selection: &DeliverySelection, values: &mut Vec<Value>) -> Result<String, StoreError> {
    let mut conditions = vec!["1 = 1".to_owned()];
    if let Some(ids) = &selection.subscription_ids {
        let ids = serde_json::to_string(ids).map_err(|error| StoreError::Database(error.to_string()))?;
        push_condition(&mut conditions, values, "subscription_id IN (SELECT value FROM json_each(?))", ids);
    }
    if let Some(status) = &selection.status {
        push_condition(&mut conditions, values, "status = ?", status.clone());
    }
    if let Some(from) = selection.from {
        push_condition(&mut conditions, values, "created_at_us >= ?", from.as_microsecond());
    }
    if let Some(to) = selection.to {
        push_condition(&mut conditions, values, "created_at_us < ?", to.as_microsecond());
    }
    Ok(conditions.join(" AND "))
}

fn last_attempt(connection: &Connection, delivery_id: &str) -> Result<Option<Attempt>, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts WHERE delivery_id = ?1 ORDER BY attempt DESC LIMIT 1"
    ))?;
    let mut rows = statement.query([delivery_id])?;
    rows.next()?.map(attempt_from_row).transpose()
}

const JOB_COLUMNS: &str =
    "id, selection, state, total, queued, skipped, created_at_us, updated_at_us, finished_at_us, cursor_id, until_id";

/// A job and its cursor (`cursor_id`, `until_id`) from a row of [`JOB_COLUMNS`].
fn read_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Result<RetryJob, StoreError>, String, String)> {
    let selection: String = row.get(1)?;
    let (created_us, updated_us, finished_us): (i64, i64, Option<i64>) = (row.get(6)?, row.get(7)?, row.get(8)?);
    let (id, state, total, queued, skipped): (String, String, i64, i64, i64) =
        (row.get(0)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?);
    let job = (|| {
        Ok(RetryJob {
            id,
            selection: serde_json::from_str(&selection).map_err(|error| StoreError::Corrupt(error.to_string()))?,
            state,
            total: total as u64,
            queued: queued as u64,
            skipped: skipped as u64,
            created_at: timestamp(created_us)?,
            updated_at: timestamp(updated_us)?,
            finished_at: finished_us.map(timestamp).transpose()?,
        })
    })();
    Ok((job, row.get(9)?, row.get(10)?))
}

fn job_by_id(connection: &Connection, id: &str) -> Result<Option<RetryJob>, StoreError> {
    let found = connection
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM retry_jobs WHERE id = ?1"))?
        .query_row([id], read_job)
        .optional()?;
    found.map(|(job, _, _)| job).transpose()
}

impl SqliteStore {
    pub async fn list_deliveries(&self, query: DeliveryListQuery) -> Result<DeliverySummaryPage, StoreError> {
        self.read(move |connection| {
            let mut values = Vec::new();
            let mut filter = selection_filter(&query.selection, &mut values)?;
            if let Some(before) = &query.before_id {
                values.push(before.clone().into());
                filter.push_str(&format!(" AND id < ?{}", values.len()));
            }
            let mut statement = connection.prepare(&format!(
                "SELECT id, subscription_id, event_id, status, attempts, created_at_us, updated_at_us FROM deliveries
                 WHERE {filter} ORDER BY id DESC LIMIT {}",
                query.limit + 1
            ))?;
            let rows = statement.query_map(params_from_iter(values.iter()), |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, u32>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                ))
            })?;
            let mut deliveries = Vec::new();
            for row in rows {
                let (id, subscription_id, event_id, status, attempts, created_us, updated_us) = row?;
                deliveries.push(DeliverySummary {
                    last_attempt: last_attempt(connection, &id)?,
                    id,
                    subscription_id,
                    event_id,
                    status,
                    attempts,
                    created_at: timestamp(created_us)?,
                    updated_at: timestamp(updated_us)?,
                });
            }
            let next_cursor = if deliveries.len() > query.limit {
                deliveries.truncate(query.limit);
                deliveries.last().map(|delivery| delivery.id.clone())
            } else {
                None
            };
            Ok(DeliverySummaryPage { deliveries, next_cursor })
        })
        .await
    }

    pub async fn create_retry_job(&self, selection: DeliverySelection, now: Timestamp) -> Result<RetryJob, StoreError> {
        let stored = serde_json::to_string(&selection).map_err(|error| StoreError::Database(error.to_string()))?;
        self.write(move |connection| {
            let mut values = Vec::new();
            let filter = selection_filter(&selection, &mut values)?;
            let (total, until_id): (i64, Option<String>) = connection.query_row(
                &format!("SELECT count(*), max(id) FROM deliveries WHERE {filter} AND status <> 'pending'"),
                params_from_iter(values.iter()),
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            let id = format!("job_{}", uuid::Uuid::now_v7().simple());
            let now_us = now.as_microsecond();
            let (state, finished) = if total == 0 { ("done", Some(now_us)) } else { ("running", None) };
            connection.execute(
                "INSERT INTO retry_jobs (id, selection, state, total, until_id, created_at_us, updated_at_us, finished_at_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
                params![id, stored, state, total, until_id.unwrap_or_default(), now_us, finished],
            )?;
            job_by_id(connection, &id)?.ok_or_else(|| StoreError::Database("the job just stored is missing".into()))
        })
        .await
    }

    pub async fn retry_job(&self, id: String) -> Result<Option<RetryJob>, StoreError> {
        self.read(move |connection| job_by_id(connection, &id)).await
    }

    pub async fn advance_retry_job(&self, now: Timestamp, batch: usize) -> Result<Option<RetryJob>, StoreError> {
        self.write(move |connection| {
            let running = connection
                .prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM retry_jobs WHERE state = 'running' ORDER BY created_at_us, id LIMIT 1"
                ))?
                .query_row([], read_job)
                .optional()?;
            let Some((job, cursor_id, until_id)) = running else { return Ok(None) };
            let job = job?;
            let mut values = Vec::new();
            let filter = selection_filter(&job.selection, &mut values)?;
            values.push(cursor_id.into());
            let after = values.len();
            values.push(until_id.into());
            let until = values.len();
            let ids: Vec<String> = connection
                .prepare(&format!(
                    "SELECT id FROM deliveries WHERE {filter} AND status <> 'pending' AND id > ?{after} AND id <= ?{until}
                     ORDER BY id LIMIT {batch}"
                ))?
                .query_map(params_from_iter(values.iter()), |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let now_us = now.as_microsecond();
            // Due now, or parked until a paused subscription is resumed.
            let mut queue = connection.prepare_cached(
                "UPDATE deliveries SET status = 'pending', updated_at_us = ?2, next_attempt_at_us =
                   CASE WHEN (SELECT status FROM subscriptions s WHERE s.id = deliveries.subscription_id) = 'paused'
                   THEN NULL ELSE ?2 END
                 WHERE id = ?1",
            )?;
            for id in &ids {
                queue.execute(params![id, now_us])?;
            }
            let queued = job.queued + ids.len() as u64;
            if ids.len() < batch {
                let skipped = job.total.saturating_sub(queued);
                connection.execute(
                    "UPDATE retry_jobs SET state = 'done', queued = ?2, skipped = ?3, updated_at_us = ?4, finished_at_us = ?4
                     WHERE id = ?1",
                    params![job.id, queued as i64, skipped as i64, now_us],
                )?;
            } else {
                connection.execute(
                    "UPDATE retry_jobs SET queued = ?2, cursor_id = ?3, updated_at_us = ?4 WHERE id = ?1",
                    params![job.id, queued as i64, ids.last(), now_us],
                )?;
            }
            job_by_id(connection, &job.id)
        })
        .await
    }
}
