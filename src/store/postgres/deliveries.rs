//! The outbox's worker side on PostgreSQL: deliveries and NATS publications claimed by any node
//! with `FOR UPDATE SKIP LOCKED` and a lease (a claim pushes the row's due time out by the
//! lease; a node that dies leaves it to come due again), attempts recorded with the next step,
//! the history, replays and manual retries.
//!
//! An attempt is recorded at most once per number: a node that outlived its lease and sends the
//! same attempt as the node that took the row over finds the record written and changes
//! nothing.

use jiff::Timestamp;
use std::collections::{HashMap, HashSet};

use super::{PostgresStore, announce, micros, pg_error, timestamp};
use crate::store::{
    Attempt, AttemptRecord, Delivery, DeliveryPage, DeliveryQuery, DueDelivery, NextStep, StoreChange, StoreError,
};

/// A claimed delivery from a row of `id, subscription_id, event_id, attempts, due time`.
/// The columns of `delivery_attempts` that [`attempt_from_row`] reads, in its order.
pub(super) const ATTEMPT_COLUMNS: &str =
    "attempt, at_us, status_code, latency_us, response_excerpt, error, transform_version, due_at_us";

/// One attempt from a row whose [`ATTEMPT_COLUMNS`] start at column `first`.
pub(super) fn attempt_from_row(row: &tokio_postgres::Row, first: usize) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        attempt: u32::try_from(row.get::<_, i32>(first)).unwrap_or(0),
        at: timestamp(row.get(first + 1))?,
        status_code: row.get::<_, Option<i32>>(first + 2).and_then(|code| u16::try_from(code).ok()),
        latency_ms: row.get::<_, i64>(first + 3) as f64 / 1000.0,
        response_excerpt: row.get(first + 4),
        error: row.get(first + 5),
        transform_version: row.get(first + 6),
        due_at: row.get::<_, Option<i64>>(first + 7).map(timestamp).transpose()?,
    })
}

fn due_delivery(row: &tokio_postgres::Row) -> DueDelivery {
    DueDelivery {
        id: row.get(0),
        subscription_id: row.get(1),
        event_id: row.get(2),
        attempts: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
        due_at: Timestamp::from_microsecond(row.get::<_, Option<i64>>(4).unwrap_or(0)).unwrap_or(Timestamp::UNIX_EPOCH),
    }
}

pub(super) fn new_delivery_id() -> String {
    format!("dlv_{}", uuid::Uuid::now_v7().simple())
}

impl PostgresStore {
    pub async fn claim_due_deliveries(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        let now_us = now.as_microsecond();
        let lease_until = now_us + micros(lease);
        // A paused subscription's deliveries are parked (no due time); the status check catches
        // one whose retry was scheduled by an attempt in flight when it was paused.
        // An ordered delivery waits while an earlier one of its key is pending (in flight or due
        // for a retry): each key's deliveries go one at a time, in order. Only each key's head
        // (its first pending delivery) is a candidate: the heads are found by skipping from key
        // to key over the pending-by-key index (one probe per key, however long each key's
        // backlog), then the due ones among them are taken along with the due unordered
        // deliveries. Probing each due row for an earlier one of its key instead walked every
        // blocked row of the backlog on every claim.
        // Rate-limited subscriptions first, each up to the whole tokens of its bucket, which this
        // transaction holds (a bucket another node's claim holds is skipped: its subscription
        // waits for the next claim); then the unlimited ones.
        let mut due = Vec::new();
        let limited = transaction
            .prepare_cached(
                "WITH RECURSIVE heads AS (
                     (SELECT e.ordering_key, e.id FROM deliveries e
                      WHERE e.subscription_id = $4 AND e.status = 'pending' AND e.ordering_key IS NOT NULL
                      ORDER BY e.ordering_key, e.id LIMIT 1)
                     UNION ALL
                     SELECT next.ordering_key, next.id FROM heads h, LATERAL (
                         SELECT e.ordering_key, e.id FROM deliveries e
                         WHERE e.subscription_id = $4 AND e.status = 'pending' AND e.ordering_key IS NOT NULL
                           AND e.ordering_key > h.ordering_key
                         ORDER BY e.ordering_key, e.id LIMIT 1) next),
                 unordered AS (
                     SELECT d.id, d.next_attempt_at_us FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
                     WHERE d.subscription_id = $4 AND d.status = 'pending' AND d.next_attempt_at_us <= $1
                       AND s.status <> 'paused' AND d.ordering_key IS NULL
                     ORDER BY d.next_attempt_at_us LIMIT $2
                     FOR UPDATE OF d SKIP LOCKED),
                 ordered AS (
                     SELECT d.id, d.next_attempt_at_us FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
                     WHERE d.id = ANY (ARRAY(SELECT id FROM heads)) AND d.status = 'pending' AND d.next_attempt_at_us <= $1
                       AND s.status <> 'paused'
                     ORDER BY d.next_attempt_at_us LIMIT $2
                     FOR UPDATE OF d SKIP LOCKED),
                 due AS (SELECT * FROM unordered UNION ALL SELECT * FROM ordered ORDER BY next_attempt_at_us LIMIT $2)
                 UPDATE deliveries d SET next_attempt_at_us = $3 FROM due WHERE d.id = due.id
                 RETURNING d.id, d.subscription_id, d.event_id, d.attempts, due.next_attempt_at_us",
            )
            .await
            .map_err(pg_error)?;
        for (subscription_id, bucket) in super::rate_limits::lock_free_buckets(&transaction).await? {
            let tokens = bucket.whole_tokens_at(now_us).min((limit - due.len()) as i64);
            if tokens <= 0 {
                continue;
            }
            let rows = transaction
                .query(&limited, &[&now_us, &tokens, &lease_until, &subscription_id])
                .await
                .map_err(pg_error)?;
            if !rows.is_empty() {
                let taken = bucket.after_taking(rows.len() as i64, now_us);
                super::rate_limits::store(&transaction, &subscription_id, &taken).await?;
                due.extend(rows.iter().map(due_delivery));
            }
        }
        let room = (limit - due.len()) as i64;
        if room > 0 {
            let unlimited = transaction
                .prepare_cached(
                    "WITH RECURSIVE heads AS (
                         (SELECT e.subscription_id, e.ordering_key, e.id FROM deliveries e
                          WHERE e.status = 'pending' AND e.ordering_key IS NOT NULL
                          ORDER BY e.subscription_id, e.ordering_key, e.id LIMIT 1)
                         UNION ALL
                         SELECT next.subscription_id, next.ordering_key, next.id FROM heads h, LATERAL (
                             SELECT e.subscription_id, e.ordering_key, e.id FROM deliveries e
                             WHERE e.status = 'pending' AND e.ordering_key IS NOT NULL
                               AND (e.subscription_id, e.ordering_key) > (h.subscription_id, h.ordering_key)
                             ORDER BY e.subscription_id, e.ordering_key, e.id LIMIT 1) next),
                     unordered AS (
                         SELECT d.id, d.next_attempt_at_us FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
                         WHERE d.status = 'pending' AND d.next_attempt_at_us <= $1 AND s.status <> 'paused'
                           AND d.ordering_key IS NULL
                           AND NOT EXISTS (SELECT 1 FROM subscription_rate_limits r WHERE r.subscription_id = d.subscription_id)
                         ORDER BY d.next_attempt_at_us LIMIT $2
                         FOR UPDATE OF d SKIP LOCKED),
                     ordered AS (
                         SELECT d.id, d.next_attempt_at_us FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
                         WHERE d.id = ANY (ARRAY(SELECT id FROM heads)) AND d.status = 'pending' AND d.next_attempt_at_us <= $1
                           AND s.status <> 'paused'
                           AND NOT EXISTS (SELECT 1 FROM subscription_rate_limits r WHERE r.subscription_id = d.subscription_id)
                         ORDER BY d.next_attempt_at_us LIMIT $2
                         FOR UPDATE OF d SKIP LOCKED),
                     due AS (SELECT * FROM unordered UNION ALL SELECT * FROM ordered ORDER BY next_attempt_at_us LIMIT $2)
                     UPDATE deliveries d SET next_attempt_at_us = $3 FROM due WHERE d.id = due.id
                     RETURNING d.id, d.subscription_id, d.event_id, d.attempts, due.next_attempt_at_us",
                )
                .await
                .map_err(pg_error)?;
            let rows = transaction.query(&unlimited, &[&now_us, &room, &lease_until]).await.map_err(pg_error)?;
            due.extend(rows.iter().map(due_delivery));
        }
        transaction.commit().await.map_err(pg_error)?;
        Ok(due)
    }

    /// Records a batch of attempts in two statements, whatever its size: the attempts (each
    /// only for a delivery that still exists, and at most once per delivery and number), then
    /// each delivery's next step from the latest of its attempts written now.
    pub async fn record_attempts(&self, records: Vec<AttemptRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        // The first record of a delivery and number counts, as it would written one at a time;
        // in delivery order, so two nodes recording the same deliveries take their rows in one order.
        let mut seen = HashSet::new();
        let mut records: Vec<AttemptRecord> =
            records.into_iter().filter(|record| seen.insert((record.delivery_id.clone(), record.attempt))).collect();
        records.sort_by(|a, b| (&a.delivery_id, a.attempt).cmp(&(&b.delivery_id, b.attempt)));
        let attempt_number = |record: &AttemptRecord| i32::try_from(record.attempt).unwrap_or(i32::MAX);
        let ids: Vec<&str> = records.iter().map(|record| record.delivery_id.as_str()).collect();
        let attempts: Vec<i32> = records.iter().map(attempt_number).collect();
        let at_us: Vec<i64> = records.iter().map(|record| record.at.as_microsecond()).collect();
        let status_codes: Vec<Option<i32>> = records.iter().map(|record| record.status_code.map(i32::from)).collect();
        let latencies_us: Vec<i64> = records.iter().map(|record| micros(record.latency)).collect();
        let excerpts: Vec<Option<&str>> = records.iter().map(|record| record.response_excerpt.as_deref()).collect();
        let errors: Vec<Option<&str>> = records.iter().map(|record| record.error.as_deref()).collect();
        let versions: Vec<Option<&str>> = records.iter().map(|record| record.transform_version.as_deref()).collect();
        let due_at_us: Vec<Option<i64>> =
            records.iter().map(|record| record.due_at.map(|at| at.as_microsecond())).collect();

        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        let insert = transaction
            .prepare_cached(
                // Only for a delivery that still exists (retention, an erasure or a deleted
                // subscription may have taken it while the attempt was in flight).
                "INSERT INTO delivery_attempts (delivery_id, attempt, at_us, status_code, latency_us, response_excerpt, error, transform_version, due_at_us)
                 SELECT * FROM unnest($1::text[], $2::int4[], $3::int8[], $4::int4[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::int8[])
                     AS r (delivery_id, attempt, at_us, status_code, latency_us, response_excerpt, error, transform_version, due_at_us)
                 WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = r.delivery_id)
                 ON CONFLICT (delivery_id, attempt) DO NOTHING
                 RETURNING delivery_id, attempt",
            )
            .await
            .map_err(pg_error)?;
        let written: HashSet<(String, i32)> = transaction
            .query(
                &insert,
                &[&ids, &attempts, &at_us, &status_codes, &latencies_us, &excerpts, &errors, &versions, &due_at_us],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();

        // A delivery moves to the step of its latest attempt written now, unless a later attempt
        // is already recorded (a node that outlived its lease reports an older one).
        let mut latest: HashMap<&str, &AttemptRecord> = HashMap::new();
        for record in &records {
            if written.contains(&(record.delivery_id.clone(), attempt_number(record))) {
                let entry = latest.entry(record.delivery_id.as_str()).or_insert(record);
                if record.attempt > entry.attempt {
                    *entry = record;
                }
            }
        }
        let mut steps: Vec<&AttemptRecord> = latest.into_values().collect();
        steps.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
        let ids: Vec<&str> = steps.iter().map(|record| record.delivery_id.as_str()).collect();
        let attempts: Vec<i32> = steps.iter().map(|record| attempt_number(record)).collect();
        let at_us: Vec<i64> = steps.iter().map(|record| record.at.as_microsecond()).collect();
        let (statuses, nexts): (Vec<&str>, Vec<Option<i64>>) = steps
            .iter()
            .map(|record| match record.next {
                NextStep::RetryAt(at) => (record.next.status(), Some(at.as_microsecond())),
                NextStep::Delivered | NextStep::Failed | NextStep::Dropped => (record.next.status(), None),
            })
            .unzip();
        if !steps.is_empty() {
            let update = transaction
                .prepare_cached(
                    "UPDATE deliveries d
                     SET status = s.status, attempts = s.attempt, next_attempt_at_us = s.next_at_us, updated_at_us = s.at_us
                     FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[], $5::int8[])
                         AS s (id, status, attempt, next_at_us, at_us)
                     WHERE d.id = s.id AND d.attempts < s.attempt",
                )
                .await
                .map_err(pg_error)?;
            transaction.execute(&update, &[&ids, &statuses, &attempts, &nexts, &at_us]).await.map_err(pg_error)?;
        }
        transaction.commit().await.map_err(pg_error)
    }

    pub async fn deliveries(&self, query: DeliveryQuery) -> Result<DeliveryPage, StoreError> {
        let client = self.client().await?;
        let from = query.from.map(|at| at.as_microsecond());
        let to = query.to.map(|at| at.as_microsecond());
        let filter = "subscription_id = $1 AND ($2::int8 IS NULL OR created_at_us >= $2)
                      AND ($3::int8 IS NULL OR created_at_us < $3) AND ($4::text IS NULL OR status = $4)";
        let total: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM deliveries WHERE {filter}"),
                &[&query.subscription_id, &from, &to, &query.status],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        let offset = (query.page.saturating_sub(1) * query.per_page) as i64;
        let rows = client
            .query(
                &format!(
                    "SELECT id, event_id, status, attempts, next_attempt_at_us, created_at_us, updated_at_us, ordering_key,
                            CASE WHEN status = 'pending' AND ordering_key IS NOT NULL THEN
                              (SELECT min(e.id) FROM deliveries e WHERE e.subscription_id = deliveries.subscription_id
                                 AND e.ordering_key = deliveries.ordering_key AND e.status = 'pending' AND e.id < deliveries.id)
                            END
                     FROM deliveries WHERE {filter} ORDER BY created_at_us DESC, id DESC LIMIT $5 OFFSET $6"
                ),
                &[&query.subscription_id, &from, &to, &query.status, &(query.per_page as i64), &offset],
            )
            .await
            .map_err(pg_error)?;
        let ids: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        let mut histories: HashMap<String, Vec<Attempt>> = HashMap::new();
        for row in client
            .query(
                &format!(
                    "SELECT delivery_id, {ATTEMPT_COLUMNS}
                     FROM delivery_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt"
                ),
                &[&ids],
            )
            .await
            .map_err(pg_error)?
        {
            histories.entry(row.get(0)).or_default().push(attempt_from_row(&row, 1)?);
        }
        let deliveries = rows
            .iter()
            .map(|row| {
                let id: String = row.get(0);
                let status: String = row.get(2);
                let next: Option<i64> = row.get(4);
                Ok(Delivery {
                    history: histories.remove(&id).unwrap_or_default(),
                    id,
                    subscription_id: query.subscription_id.clone(),
                    event_id: row.get(1),
                    next_attempt_at: if status == "pending" { next.map(timestamp).transpose()? } else { None },
                    status,
                    attempts: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
                    created_at: timestamp(row.get(5))?,
                    updated_at: timestamp(row.get(6))?,
                    ordering_key: row.get(7),
                    waiting_behind: row.get(8),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(DeliveryPage { deliveries, total: total as u64 })
    }

    pub async fn enqueue_deliveries(
        &self,
        event_id: String,
        subscription_ids: Vec<String>,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        let ids: Vec<String> = subscription_ids.iter().map(|_| new_delivery_id()).collect();
        let rows = transaction
            .query(
                "INSERT INTO deliveries (id, subscription_id, event_id, status, next_attempt_at_us, created_at_us, updated_at_us)
                 SELECT d.id, d.subscription_id, $3, 'pending', CASE WHEN s.status = 'paused' THEN NULL ELSE $4::int8 END, $4::int8, $4::int8
                 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS d (id, subscription_id, position)
                 JOIN subscriptions s ON s.id = d.subscription_id
                 ORDER BY d.position
                 FOR KEY SHARE OF s
                 RETURNING id",
                &[&ids, &subscription_ids, &event_id, &now.as_microsecond()],
            )
            .await
            .map_err(pg_error)?;
        let written: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        // In the order asked for, whatever order the rows came back in.
        let written: Vec<String> = ids.into_iter().filter(|id| written.contains(id)).collect();
        if !written.is_empty() {
            announce(&transaction, StoreChange::Deliveries, self.node()).await.map_err(pg_error)?;
        }
        transaction.commit().await.map_err(pg_error)?;
        Ok(written)
    }

    pub async fn claim_publications(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.client().await?;
        let now_us = now.as_microsecond();
        let statement = client
            .prepare_cached(
                "WITH due AS (
                     SELECT event_id FROM publications WHERE next_attempt_at_us <= $1
                     ORDER BY event_id LIMIT $2 FOR UPDATE SKIP LOCKED)
                 UPDATE publications p SET next_attempt_at_us = $3, attempts = p.attempts + 1
                 FROM due WHERE p.event_id = due.event_id
                 RETURNING p.event_id, p.subject",
            )
            .await
            .map_err(pg_error)?;
        let mut rows: Vec<(String, String)> = client
            .query(&statement, &[&now_us, &(limit as i64), &(now_us + micros(lease))])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        // Oldest first, as the publisher sends them.
        rows.sort();
        Ok(rows)
    }

    pub async fn finish_publications(
        &self,
        published: Vec<String>,
        retry: Vec<String>,
        retry_at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        transaction
            .execute("DELETE FROM publications WHERE event_id = ANY($1)", &[&published])
            .await
            .map_err(pg_error)?;
        transaction
            .execute(
                "UPDATE publications SET next_attempt_at_us = $2 WHERE event_id = ANY($1)",
                &[&retry, &retry_at.as_microsecond()],
            )
            .await
            .map_err(pg_error)?;
        transaction.commit().await.map_err(pg_error)
    }

    pub async fn retry_delivery(
        &self,
        subscription_id: String,
        delivery_id: String,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        // Due now, or parked until a paused subscription is resumed.
        let changed = transaction
            .execute(
                "UPDATE deliveries SET status = 'pending', updated_at_us = $3::int8, next_attempt_at_us =
                   CASE WHEN (SELECT status FROM subscriptions WHERE id = $2) = 'paused' THEN NULL ELSE $3::int8 END
                 WHERE id = $1 AND subscription_id = $2",
                &[&delivery_id, &subscription_id, &now.as_microsecond()],
            )
            .await
            .map_err(pg_error)?;
        if changed == 1 {
            announce(&transaction, StoreChange::Deliveries, self.node()).await.map_err(pg_error)?;
        }
        transaction.commit().await.map_err(pg_error)?;
        Ok(changed == 1)
    }
}
