//! Rate limits on PostgreSQL: each rate-limited subscription's token bucket
//! (`store::rate_buckets`), kept in step with its `rateLimit` whenever the subscription is
//! written, and taken from by the claims (`deliveries`). A claim locks the buckets it reads
//! (`FOR UPDATE SKIP LOCKED`) for its transaction: a bucket another node's claim holds is left
//! alone, and that subscription's deliveries wait for the next claim, so no two nodes spend the
//! same tokens.

use std::collections::HashMap;

use super::pg_error;
use crate::store::StoreError;
use crate::store::rate_buckets::Bucket;
use crate::subscriptions::Subscription;

/// Writes the subscription's bucket, or removes it when it has no limit. A changed limit keeps
/// the tokens held (at most the new burst); a new one starts full.
pub(super) async fn keep(
    transaction: &deadpool_postgres::Transaction<'_>,
    subscription: &Subscription,
    now_us: i64,
) -> Result<(), StoreError> {
    match &subscription.rate_limit {
        None => {
            transaction
                .execute("DELETE FROM subscription_rate_limits WHERE subscription_id = $1", &[&subscription.id])
                .await
                .map_err(pg_error)?;
        }
        Some(limit) => {
            let bucket = Bucket::full(limit, now_us);
            let burst = bucket.burst as i32;
            transaction
                .execute(
                    "INSERT INTO subscription_rate_limits (subscription_id, per_second_milli, burst, tokens_milli, refilled_at_us)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (subscription_id) DO UPDATE SET per_second_milli = excluded.per_second_milli,
                         burst = excluded.burst,
                         tokens_milli = LEAST(subscription_rate_limits.tokens_milli, excluded.tokens_milli)",
                    &[&subscription.id, &bucket.per_second_milli, &burst, &bucket.tokens_milli, &bucket.refilled_at_us],
                )
                .await
                .map_err(pg_error)?;
        }
    }
    Ok(())
}

/// The buckets no other claim holds, locked until `transaction` ends.
pub(super) async fn lock_free_buckets(
    transaction: &deadpool_postgres::Transaction<'_>,
) -> Result<HashMap<String, Bucket>, StoreError> {
    let rows = transaction
        .query(
            "SELECT subscription_id, per_second_milli, burst, tokens_milli, refilled_at_us FROM subscription_rate_limits
             ORDER BY subscription_id FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|row| {
            let bucket = Bucket {
                per_second_milli: row.get(1),
                burst: i64::from(row.get::<_, i32>(2)),
                tokens_milli: row.get(3),
                refilled_at_us: row.get(4),
            };
            (row.get(0), bucket)
        })
        .collect())
}

/// Stores a bucket after a claim took from it.
pub(super) async fn store(
    transaction: &deadpool_postgres::Transaction<'_>,
    subscription_id: &str,
    bucket: &Bucket,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "UPDATE subscription_rate_limits SET tokens_milli = $2, refilled_at_us = $3 WHERE subscription_id = $1",
            &[&subscription_id, &bucket.tokens_milli, &bucket.refilled_at_us],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}
