//! The outbox's worker side: deliveries claimed with a lease, attempts recorded with the next
//! step, the history, replays and manual retries; and the NATS publications, claimed and
//! finished the same way. A delivery is written only for a subscription that still exists, and
//! parked (no due time) while its subscription is paused.

use jiff::Timestamp;
use rusqlite::{Connection, params};

use super::{SqliteStore, push_condition, timestamp};
use crate::store::{Attempt, AttemptRecord, Delivery, DeliveryPage, DeliveryQuery, DueDelivery, NextStep, StoreError};

/// The due deliveries of one rate-limited subscription (`?3`), oldest due first, at most `?2`.
///
/// Both claims name their index: without statistics SQLite would take `deliveries_by_status`
/// (equality on `status`) and sort every pending delivery for each claim, so a backlog of
/// 80,000 drained at 7,000 a second. On the due-time index a claim reads only what it takes.
const CLAIM_LIMITED: &str = "SELECT d.id, d.subscription_id, d.event_id, d.attempts, d.next_attempt_at_us
     FROM deliveries d INDEXED BY deliveries_due_by_subscription
     JOIN subscriptions s ON s.id = d.subscription_id
     WHERE d.subscription_id = ?3 AND d.status = 'pending' AND d.next_attempt_at_us <= ?1
       AND s.status <> 'paused'
       AND (d.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries e
            WHERE e.subscription_id = d.subscription_id AND e.ordering_key = d.ordering_key
              AND e.status = 'pending' AND e.id < d.id))
     ORDER BY d.next_attempt_at_us LIMIT ?2";

/// The due deliveries of every subscription without a rate limit, oldest due first, at most `?2`.
const CLAIM_UNLIMITED: &str = "SELECT d.id, d.subscription_id, d.event_id, d.attempts, d.next_attempt_at_us
     FROM deliveries d INDEXED BY deliveries_due
     JOIN subscriptions s ON s.id = d.subscription_id
     WHERE d.status = 'pending' AND d.next_attempt_at_us <= ?1
       AND s.status <> 'paused'
       AND NOT EXISTS (SELECT 1 FROM subscription_rate_limits r WHERE r.subscription_id = d.subscription_id)
       AND (d.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries e
            WHERE e.subscription_id = d.subscription_id AND e.ordering_key = d.ordering_key
              AND e.status = 'pending' AND e.id < d.id))
     ORDER BY d.next_attempt_at_us LIMIT ?2";

impl SqliteStore {
    pub async fn claim_due_deliveries(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.write(move |connection| {
            let now_us = now.as_microsecond();
            // A paused subscription's deliveries are parked (no due time); the status check here
            // catches one whose retry was scheduled by an attempt in flight when it was paused. A
            // disabled one's were failed when it was disabled; one written just after (routed
            // by a table not yet rebuilt) is claimed, and the worker fails it.
            // An ordered delivery waits while an earlier one of its key is pending (in flight or
            // due for a retry): each key's deliveries go one at a time, in order.
            // Rate-limited subscriptions first, each up to the whole tokens its bucket holds (they
            // are few, and capped): a backlog of unlimited ones never starves them.
            let mut due = Vec::new();
            let mut limited = connection.prepare_cached(CLAIM_LIMITED)?;
            for (subscription_id, bucket) in super::rate_limits::buckets(connection)? {
                let tokens = bucket.whole_tokens_at(now_us).min((limit - due.len()) as i64);
                if tokens <= 0 {
                    continue;
                }
                let taken: Vec<DueDelivery> = limited
                    .query_map(params![now_us, tokens, subscription_id], due_delivery)?
                    .collect::<Result<_, _>>()?;
                if !taken.is_empty() {
                    super::rate_limits::store(
                        connection,
                        &subscription_id,
                        &bucket.after_taking(taken.len() as i64, now_us),
                    )?;
                    due.extend(taken);
                }
            }
            let mut unlimited = connection.prepare_cached(CLAIM_UNLIMITED)?;
            let room = (limit - due.len()) as i64;
            if room > 0 {
                let rows = unlimited.query_map(params![now_us, room], due_delivery)?;
                for row in rows {
                    due.push(row?);
                }
            }
            let lease_until = now_us + i64::try_from(lease.as_micros()).unwrap_or(i64::MAX / 2);
            let mut claim = connection.prepare_cached("UPDATE deliveries SET next_attempt_at_us = ?2 WHERE id = ?1")?;
            for delivery in &due {
                claim.execute(params![delivery.id, lease_until])?;
            }
            Ok(due)
        })
        .await
    }

    pub async fn record_attempts(&self, records: Vec<AttemptRecord>) -> Result<(), StoreError> {
        self.write(move |connection| {
            // Only for a delivery that still exists: one deleted while its attempt was in flight
            // (retention, an erasure, its subscription deleted) leaves no attempt behind.
            let mut insert = connection.prepare_cached(
                "INSERT INTO delivery_attempts (delivery_id, attempt, at_us, status_code, latency_us, response_excerpt, error, transform_version, due_at_us)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = ?1)",
            )?;
            let mut update = connection.prepare_cached(
                "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at_us = ?4, updated_at_us = ?5 WHERE id = ?1",
            )?;
            for record in records {
                let at_us = record.at.as_microsecond();
                insert.execute(params![
                    record.delivery_id,
                    record.attempt,
                    at_us,
                    record.status_code,
                    i64::try_from(record.latency.as_micros()).unwrap_or(i64::MAX),
                    record.response_excerpt,
                    record.error,
                    record.transform_version,
                    record.due_at.map(|at| at.as_microsecond()),
                ])?;
                let status = record.next.status();
                let next = match record.next {
                    NextStep::RetryAt(at) => Some(at.as_microsecond()),
                    NextStep::Delivered | NextStep::Failed | NextStep::Dropped => None,
                };
                update.execute(params![record.delivery_id, status, record.attempt, next, at_us])?;
            }
            Ok(())
        })
        .await
    }

    pub async fn deliveries(&self, query: DeliveryQuery) -> Result<DeliveryPage, StoreError> {
        self.read(move |connection| {
            let mut conditions = vec!["subscription_id = ?1".to_owned()];
            let mut values: Vec<rusqlite::types::Value> = vec![query.subscription_id.clone().into()];
            if let Some(from) = query.from {
                push_condition(&mut conditions, &mut values, "created_at_us >= ?", from.as_microsecond());
            }
            if let Some(to) = query.to {
                push_condition(&mut conditions, &mut values, "created_at_us < ?", to.as_microsecond());
            }
            if let Some(status) = &query.status {
                push_condition(&mut conditions, &mut values, "status = ?", status.clone());
            }
            let filter = conditions.join(" AND ");
            let total: i64 = connection.query_row(
                &format!("SELECT count(*) FROM deliveries WHERE {filter}"),
                rusqlite::params_from_iter(values.iter()),
                |row| row.get(0),
            )?;
            let offset = query.page.saturating_sub(1) * query.per_page;
            let mut statement = connection.prepare(&format!(
                "SELECT id, event_id, status, attempts, next_attempt_at_us, created_at_us, updated_at_us, ordering_key,
                        CASE WHEN status = 'pending' AND ordering_key IS NOT NULL THEN
                          (SELECT min(e.id) FROM deliveries e WHERE e.subscription_id = deliveries.subscription_id
                             AND e.ordering_key = deliveries.ordering_key AND e.status = 'pending' AND e.id < deliveries.id)
                        END
                 FROM deliveries WHERE {filter} ORDER BY created_at_us DESC, id DESC LIMIT {} OFFSET {offset}",
                query.per_page
            ))?;
            let rows = statement.query_map(rusqlite::params_from_iter(values.iter()), |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, u32>(3)?,
                    row.get::<_, Option<i64>>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                    row.get::<_, Option<String>>(7)?,
                    row.get::<_, Option<String>>(8)?,
                ))
            })?;
            let mut deliveries = Vec::new();
            for row in rows {
                let (id, event_id, status, attempts, next_us, created_us, updated_us, ordering_key, waiting_behind) = row?;
                let mut attempts_statement = connection.prepare_cached(&format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts WHERE delivery_id = ?1 ORDER BY attempt"
                ))?;
                let mut attempt_rows = attempts_statement.query([&id])?;
                let mut history = Vec::new();
                while let Some(row) = attempt_rows.next()? {
                    history.push(attempt_from_row(row)?);
                }
                let next_attempt_at = if status == "pending" { next_us.map(timestamp).transpose()? } else { None };
                deliveries.push(Delivery {
                    id,
                    subscription_id: query.subscription_id.clone(),
                    event_id,
                    status,
                    attempts,
                    next_attempt_at,
                    created_at: timestamp(created_us)?,
                    updated_at: timestamp(updated_us)?,
                    ordering_key,
                    waiting_behind,
                    history,
                });
            }
            Ok(DeliveryPage { deliveries, total: total as u64 })
        })
        .await
    }

    pub async fn enqueue_deliveries(
        &self,
        event_id: String,
        subscription_ids: Vec<String>,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        self.write(move |connection| {
            let at = now.as_microsecond();
            let mut ids = Vec::new();
            for subscription_id in &subscription_ids {
                ids.extend(insert_delivery(connection, subscription_id, &event_id, at, None)?);
            }
            Ok(ids)
        })
        .await
    }

    pub async fn claim_publications(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.write(move |connection| {
            let now_us = now.as_microsecond();
            let due: Vec<(String, String)> = connection
                .prepare_cached(
                    "SELECT event_id, subject FROM publications WHERE next_attempt_at_us <= ?1
                     ORDER BY event_id LIMIT ?2",
                )?
                .query_map(params![now_us, limit as i64], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let lease_until = now_us + i64::try_from(lease.as_micros()).unwrap_or(i64::MAX / 2);
            let mut claim = connection.prepare_cached(
                "UPDATE publications SET next_attempt_at_us = ?2, attempts = attempts + 1 WHERE event_id = ?1",
            )?;
            for (event_id, _) in &due {
                claim.execute(params![event_id, lease_until])?;
            }
            Ok(due)
        })
        .await
    }

    pub async fn finish_publications(
        &self,
        published: Vec<String>,
        retry: Vec<String>,
        retry_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(move |connection| {
            let mut delete = connection.prepare_cached("DELETE FROM publications WHERE event_id = ?1")?;
            for event_id in &published {
                delete.execute([event_id])?;
            }
            let mut later =
                connection.prepare_cached("UPDATE publications SET next_attempt_at_us = ?2 WHERE event_id = ?1")?;
            for event_id in &retry {
                later.execute(params![event_id, retry_at.as_microsecond()])?;
            }
            Ok(())
        })
        .await
    }

    /// Makes a delivery of `subscription_id` due now; false when there is no such delivery.
    pub async fn retry_delivery(
        &self,
        subscription_id: String,
        delivery_id: String,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(move |connection| {
            // Due now, or parked until a paused subscription is resumed.
            Ok(connection.execute(
                "UPDATE deliveries SET status = 'pending', updated_at_us = ?3, next_attempt_at_us =
                   CASE WHEN (SELECT status FROM subscriptions WHERE id = ?2) = 'paused'
                   THEN NULL ELSE ?3 END
                 WHERE id = ?1 AND subscription_id = ?2",
                params![delivery_id, subscription_id, now.as_microsecond()],
            )? == 1)
        })
        .await
    }
}

/// A claimed delivery from a row of `id, subscription_id, event_id, attempts, next_attempt_at_us`.
/// The columns of `delivery_attempts` that [`attempt_from_row`] reads, in its order.
pub(super) const ATTEMPT_COLUMNS: &str =
    "attempt, at_us, status_code, latency_us, response_excerpt, error, transform_version, due_at_us";

/// One attempt from a row of [`ATTEMPT_COLUMNS`].
pub(super) fn attempt_from_row(row: &rusqlite::Row<'_>) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        attempt: row.get(0)?,
        at: timestamp(row.get(1)?)?,
        status_code: row.get(2)?,
        latency_ms: row.get::<_, i64>(3)? as f64 / 1000.0,
        response_excerpt: row.get(4)?,
        error: row.get(5)?,
        transform_version: row.get(6)?,
        due_at: row.get::<_, Option<i64>>(7)?.map(timestamp).transpose()?,
    })
}

fn due_delivery(row: &rusqlite::Row<'_>) -> rusqlite::Result<DueDelivery> {
    let due_at_us: i64 = row.get(4)?;
    Ok(DueDelivery {
        id: row.get(0)?,
        subscription_id: row.get(1)?,
        event_id: row.get(2)?,
        attempts: row.get(3)?,
        due_at: Timestamp::from_microsecond(due_at_us).unwrap_or(Timestamp::UNIX_EPOCH),
    })
}

/// Deletes these deliveries with their attempts.
pub(super) fn delete_deliveries(connection: &Connection, ids: &[String]) -> rusqlite::Result<()> {
    let mut forget_attempts = connection.prepare_cached("DELETE FROM delivery_attempts WHERE delivery_id = ?1")?;
    let mut forget = connection.prepare_cached("DELETE FROM deliveries WHERE id = ?1")?;
    for id in ids {
        forget_attempts.execute([id])?;
        forget.execute([id])?;
    }
    Ok(())
}

/// A pending delivery, due at `at_us`, or parked (no due time) while its subscription is
/// paused; returns its id, or `None` when the subscription is gone.
pub(super) fn insert_delivery(
    connection: &Connection,
    subscription_id: &str,
    event_id: &str,
    at_us: i64,
    ordering_key: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let id = format!("dlv_{}", uuid::Uuid::now_v7().simple());
    let inserted = connection
        .prepare_cached(
            "INSERT INTO deliveries (id, subscription_id, event_id, status, next_attempt_at_us, created_at_us, updated_at_us, ordering_key)
             SELECT ?1, id, ?3, 'pending', CASE WHEN status = 'paused' THEN NULL ELSE ?4 END, ?4, ?4, ?5
             FROM subscriptions WHERE id = ?2",
        )?
        .execute(params![id, subscription_id, event_id, at_us, ordering_key])?;
    Ok((inserted == 1).then_some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What SQLite's plan for `sql` does, one line a step.
    fn plan(connection: &Connection, sql: &str, parameters: impl rusqlite::Params) -> Vec<String> {
        let mut statement = connection.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        statement.query_map(parameters, |row| row.get::<_, String>(3)).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn a_claim_reads_due_deliveries_in_due_order_from_an_index_and_never_sorts_the_backlog() {
        let mut connection = Connection::open_in_memory().unwrap();
        super::super::migrations::migrate(&mut connection).unwrap();
        for (sql, index, parameters) in [
            (CLAIM_UNLIMITED, "deliveries_due", params![0, 10].to_vec()),
            (CLAIM_LIMITED, "deliveries_due_by_subscription", params![0, 10, "sub"].to_vec()),
        ] {
            let steps = plan(&connection, sql, parameters.as_slice());
            assert!(steps.iter().any(|step| step.contains(&format!("USING INDEX {index} "))), "{steps:#?}");
            assert!(!steps.iter().any(|step| step.contains("TEMP B-TREE")), "{steps:#?}");
        }
    }
}
