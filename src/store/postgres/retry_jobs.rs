//! Deliveries across subscriptions on PostgreSQL: the dead letter listing (any status, newest
//! first, with the last attempt) and bulk retries, stored as jobs that any node's worker takes a
//! batch at a time: the batch's transaction locks the job row (`FOR UPDATE SKIP LOCKED`), makes
//! its deliveries due, moves the job's cursor and announces the deliveries, so two nodes never
//! take the same batch and a restart goes on from the cursor.

use jiff::Timestamp;
use std::collections::HashMap;
use tokio_postgres::types::ToSql;

use super::deliveries::ATTEMPT_COLUMNS;
use super::{PostgresStore, announce, pg_error, timestamp};
use crate::store::{
    Attempt, DeliveryListQuery, DeliverySelection, DeliverySummary, DeliverySummaryPage, RetryJob, StoreChange,
    StoreError,
};

/// The condition a selection puts on `deliveries`, over parameters `$1` to `$4` ([`selection_params`]).
const SELECTION_FILTER: &str = "($1::text[] IS NULL OR subscription_id = ANY($1)) AND ($2::text IS NULL OR status = $2)
     AND ($3::int8 IS NULL OR created_at_us >= $3) AND ($4::int8 IS NULL OR created_at_us < $4)";

/// `$1` to `$4` of [`SELECTION_FILTER`].
struct SelectionParams {
    subscription_ids: Option<Vec<String>>,
    status: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
}

impl SelectionParams {
    fn new(selection: &DeliverySelection) -> SelectionParams {
        SelectionParams {
            subscription_ids: selection.subscription_ids.clone(),
            status: selection.status.clone(),
            from: selection.from.map(|at| at.as_microsecond()),
            to: selection.to.map(|at| at.as_microsecond()),
        }
    }

    fn with<'a>(&'a self, more: &[&'a (dyn ToSql + Sync)]) -> Vec<&'a (dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.subscription_ids, &self.status, &self.from, &self.to];
        params.extend_from_slice(more);
        params
    }
}

const JOB_COLUMNS: &str =
    "id, selection, state, total, queued, skipped, created_at_us, updated_at_us, finished_at_us, cursor_id, until_id";

fn read_job(row: &tokio_postgres::Row) -> Result<RetryJob, StoreError> {
    Ok(RetryJob {
        id: row.get(0),
        selection: serde_json::from_str(row.get(1)).map_err(|error| StoreError::Corrupt(error.to_string()))?,
        state: row.get(2),
        total: row.get::<_, i64>(3) as u64,
        queued: row.get::<_, i64>(4) as u64,
        skipped: row.get::<_, i64>(5) as u64,
        created_at: timestamp(row.get(6))?,
        updated_at: timestamp(row.get(7))?,
        finished_at: row.get::<_, Option<i64>>(8).map(timestamp).transpose()?,
    })
}

impl PostgresStore {
    pub async fn list_deliveries(&self, query: DeliveryListQuery) -> Result<DeliverySummaryPage, StoreError> {
        let client = self.client().await?;
        let selection = SelectionParams::new(&query.selection);
        let limit = query.limit as i64 + 1;
        let rows = client
            .query(
                &format!(
                    "SELECT id, subscription_id, event_id, status, attempts, created_at_us, updated_at_us FROM deliveries
                     WHERE {SELECTION_FILTER} AND ($5::text IS NULL OR id < $5) ORDER BY id DESC LIMIT $6"
                ),
                &selection.with(&[&query.before_id, &limit]),
            )
            .await
            .map_err(pg_error)?;
        let ids: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        let mut last_attempts: HashMap<String, Attempt> = HashMap::new();
        for row in client
            .query(
                &format!(
                    "SELECT DISTINCT ON (delivery_id) delivery_id, {ATTEMPT_COLUMNS}
                     FROM delivery_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt DESC"
                ),
                &[&ids],
            )
            .await
            .map_err(pg_error)?
        {
            last_attempts.insert(row.get(0), super::deliveries::attempt_from_row(&row, 1)?);
        }
        let mut deliveries = rows
            .iter()
            .map(|row| {
                let id: String = row.get(0);
                Ok(DeliverySummary {
                    last_attempt: last_attempts.remove(&id),
                    id,
                    subscription_id: row.get(1),
                    event_id: row.get(2),
                    status: row.get(3),
                    attempts: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
                    created_at: timestamp(row.get(5))?,
                    updated_at: timestamp(row.get(6))?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next_cursor = if deliveries.len() > query.limit {
            deliveries.truncate(query.limit);
            deliveries.last().map(|delivery| delivery.id.clone())
        } else {
            None
        };
        Ok(DeliverySummaryPage { deliveries, next_cursor })
    }

    pub async fn create_retry_job(&self, selection: DeliverySelection, now: Timestamp) -> Result<RetryJob, StoreError> {
        let stored = serde_json::to_string(&selection).map_err(|error| StoreError::Database(error.to_string()))?;
        let params = SelectionParams::new(&selection);
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        let counted = transaction
            .query_one(
                &format!("SELECT count(*), max(id) FROM deliveries WHERE {SELECTION_FILTER} AND status <> 'pending'"),
                &params.with(&[]),
            )
            .await
            .map_err(pg_error)?;
        let (total, until_id): (i64, Option<String>) = (counted.get(0), counted.get(1));
        let id = format!("job_{}", uuid::Uuid::now_v7().simple());
        let now_us = now.as_microsecond();
        let (state, finished) = if total == 0 { ("done", Some(now_us)) } else { ("running", None) };
        let row = transaction
            .query_one(
                &format!(
                    "INSERT INTO retry_jobs (id, selection, state, total, until_id, created_at_us, updated_at_us, finished_at_us)
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $7) RETURNING {JOB_COLUMNS}"
                ),
                &[&id, &stored, &state, &total, &until_id.unwrap_or_default(), &now_us, &finished],
            )
            .await
            .map_err(pg_error)?;
        let job = read_job(&row)?;
        if total > 0 {
            // Other nodes' workers take batches too.
            announce(&transaction, StoreChange::Deliveries, self.node()).await.map_err(pg_error)?;
        }
        transaction.commit().await.map_err(pg_error)?;
        Ok(job)
    }

    pub async fn retry_job(&self, id: String) -> Result<Option<RetryJob>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {JOB_COLUMNS} FROM retry_jobs WHERE id = $1"), &[&id])
            .await
            .map_err(pg_error)?;
        row.as_ref().map(read_job).transpose()
    }

    pub async fn advance_retry_job(&self, now: Timestamp, batch: usize) -> Result<Option<RetryJob>, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        let Some(row) = transaction
            .query_opt(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM retry_jobs WHERE state = 'running' ORDER BY created_at_us, id LIMIT 1
                     FOR UPDATE SKIP LOCKED"
                ),
                &[],
            )
            .await
            .map_err(pg_error)?
        else {
            return Ok(None);
        };
        let job = read_job(&row)?;
        let (cursor_id, until_id): (String, String) = (row.get(9), row.get(10));
        let params = SelectionParams::new(&job.selection);
        let now_us = now.as_microsecond();
        let limit = batch as i64;
        // Due now, or parked until a paused subscription is resumed; in id order, so that two
        // jobs touching the same deliveries lock them in one order.
        let queued: Vec<String> = transaction
            .query(
                &format!(
                    "WITH batch AS (
                         SELECT id FROM deliveries
                         WHERE {SELECTION_FILTER} AND status <> 'pending' AND id > $5 AND id <= $6
                         ORDER BY id LIMIT $7 FOR UPDATE)
                     UPDATE deliveries d SET status = 'pending', updated_at_us = $8::int8, next_attempt_at_us =
                         CASE WHEN (SELECT s.status FROM subscriptions s WHERE s.id = d.subscription_id) = 'paused'
                         THEN NULL ELSE $8::int8 END
                     FROM batch WHERE d.id = batch.id
                     RETURNING d.id"
                ),
                &params.with(&[&cursor_id, &until_id, &limit, &now_us]),
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let total_queued = (job.queued + queued.len() as u64) as i64;
        let row = if queued.len() < batch {
            let skipped = (job.total as i64 - total_queued).max(0);
            transaction
                .query_one(
                    &format!(
                        "UPDATE retry_jobs SET state = 'done', queued = $2, skipped = $3, updated_at_us = $4,
                             finished_at_us = $4
                         WHERE id = $1 RETURNING {JOB_COLUMNS}"
                    ),
                    &[&job.id, &total_queued, &skipped, &now_us],
                )
                .await
        } else {
            let cursor = queued.iter().max().cloned().unwrap_or_default();
            transaction
                .query_one(
                    &format!(
                        "UPDATE retry_jobs SET queued = $2, cursor_id = $3, updated_at_us = $4
                         WHERE id = $1 RETURNING {JOB_COLUMNS}"
                    ),
                    &[&job.id, &total_queued, &cursor, &now_us],
                )
                .await
        }
        .map_err(pg_error)?;
        if !queued.is_empty() {
            announce(&transaction, StoreChange::Deliveries, self.node()).await.map_err(pg_error)?;
        }
        transaction.commit().await.map_err(pg_error)?;
        read_job(&row).map(Some)
    }
}
