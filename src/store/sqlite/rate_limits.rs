//! Rate limits on SQLite: each rate-limited subscription's token bucket
//! (`store::rate_buckets`), kept in step with its `rateLimit` whenever the subscription is
//! written, and taken from by the claims (`deliveries`), in the writer's one transaction: the
//! limit holds however many workers claim.

use rusqlite::{Connection, params};
use std::collections::HashMap;

use crate::store::StoreError;
use crate::store::rate_buckets::Bucket;
use crate::subscriptions::Subscription;

/// Writes the subscription's bucket, or removes it when it has no limit. A changed limit keeps
/// the tokens held (at most the new burst); a new one starts full.
pub(super) fn keep(connection: &Connection, subscription: &Subscription, now_us: i64) -> Result<(), StoreError> {
    match &subscription.rate_limit {
        None => {
            connection
                .prepare_cached("DELETE FROM subscription_rate_limits WHERE subscription_id = ?1")?
                .execute([&subscription.id])?;
        }
        Some(limit) => {
            let bucket = Bucket::full(limit, now_us);
            connection
                .prepare_cached(
                    "INSERT INTO subscription_rate_limits (subscription_id, per_second_milli, burst, tokens_milli, refilled_at_us)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (subscription_id) DO UPDATE SET per_second_milli = excluded.per_second_milli,
                         burst = excluded.burst, tokens_milli = MIN(tokens_milli, excluded.tokens_milli)",
                )?
                .execute(params![
                    subscription.id,
                    bucket.per_second_milli,
                    bucket.burst,
                    bucket.tokens_milli,
                    bucket.refilled_at_us
                ])?;
        }
    }
    Ok(())
}

/// Every rate-limited subscription's bucket.
pub(super) fn buckets(connection: &Connection) -> Result<HashMap<String, Bucket>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT subscription_id, per_second_milli, burst, tokens_milli, refilled_at_us FROM subscription_rate_limits",
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            Bucket {
                per_second_milli: row.get(1)?,
                burst: row.get(2)?,
                tokens_milli: row.get(3)?,
                refilled_at_us: row.get(4)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stores a bucket after a claim took from it.
pub(super) fn store(connection: &Connection, subscription_id: &str, bucket: &Bucket) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "UPDATE subscription_rate_limits SET tokens_milli = ?2, refilled_at_us = ?3 WHERE subscription_id = ?1",
        )?
        .execute(params![subscription_id, bucket.tokens_milli, bucket.refilled_at_us])?;
    Ok(())
}
