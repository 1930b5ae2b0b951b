//! Subscriptions on PostgreSQL: a JSON document per row (secrets sealed by `store::sealed` once
//! keys are installed) with its status in a column of its own. A change locks the row (`FOR NO KEY UPDATE`, which appends writing its
//! deliveries do not wait on), changes the document, moves its pending deliveries with its
//! status, and announces itself so that every node rebuilds its routes. A delete waits for the
//! appends writing deliveries for it, which hold its row `FOR KEY SHARE`, and then removes those
//! deliveries too.

use std::sync::Arc;

use jiff::Timestamp;

use super::{PostgresStore, announce, pg_error};
use crate::store::sealed::{SecretsKeys, decode_subscription, encode_subscription};
use crate::store::{StoreChange, StoreError};
use crate::subscriptions::{Status, Subscription};

fn status_column(status: Status) -> &'static str {
    match status {
        Status::Active => "active",
        Status::Paused => "paused",
        Status::Disabled => "disabled",
    }
}

/// What the routing table reads of a subscription.
fn routing(subscription: &Subscription) -> (Status, Vec<String>, Option<String>, Option<String>) {
    (subscription.status, subscription.events.clone(), subscription.resource_id.clone(), subscription.filter.clone())
}

impl PostgresStore {
    /// Seals subscription secrets with `keys` from now on; the first keys installed stay.
    pub fn install_secrets_keys(&self, keys: Arc<SecretsKeys>) {
        let _ = self.inner.secrets.set(keys);
    }

    pub fn secrets_keys(&self) -> Option<Arc<SecretsKeys>> {
        self.inner.secrets.get().cloned()
    }

    fn encode(&self, subscription: &Subscription) -> Result<String, StoreError> {
        encode_subscription(self.inner.secrets.get().map(Arc::as_ref), subscription)
    }

    fn decode(&self, body: &str) -> Result<Subscription, StoreError> {
        decode_subscription(self.inner.secrets.get().map(Arc::as_ref), body)
    }

    pub async fn put_subscription(&self, subscription: Subscription) -> Result<(), StoreError> {
        let body = self.encode(&subscription)?;
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        transaction
            .execute(
                "INSERT INTO subscriptions (id, body, status, created_at_us) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, status = excluded.status",
                &[
                    &subscription.id,
                    &body,
                    &status_column(subscription.status),
                    &subscription.created_at.as_microsecond(),
                ],
            )
            .await
            .map_err(pg_error)?;
        super::rate_limits::keep(&transaction, &subscription, Timestamp::now().as_microsecond()).await?;
        announce(&transaction, StoreChange::Subscriptions, self.node()).await.map_err(pg_error)?;
        transaction.commit().await.map_err(pg_error)
    }

    pub async fn update_subscription(
        &self,
        id: String,
        change: impl FnOnce(&mut Subscription) + Send + 'static,
    ) -> Result<Option<Subscription>, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        let row = transaction
            .query_opt("SELECT body FROM subscriptions WHERE id = $1 FOR NO KEY UPDATE", &[&id])
            .await
            .map_err(pg_error)?;
        let Some(row) = row else { return Ok(None) };
        let mut subscription = self.decode(row.get(0))?;
        let before = subscription.status;
        let routed_before = routing(&subscription);
        let routed_limit = subscription.rate_limit;
        change(&mut subscription);
        transaction
            .execute(
                "UPDATE subscriptions SET body = $2, status = $3 WHERE id = $1",
                &[&id, &self.encode(&subscription)?, &status_column(subscription.status)],
            )
            .await
            .map_err(pg_error)?;
        if subscription.rate_limit != routed_limit {
            super::rate_limits::keep(&transaction, &subscription, Timestamp::now().as_microsecond()).await?;
        }
        // Its pending deliveries follow a change of status: failed when disabled, parked (no
        // due time, so claims never look at them) while paused, due now when active again.
        if subscription.status != before {
            let pending = match subscription.status {
                Status::Disabled => {
                    "UPDATE deliveries SET status = 'failed', next_attempt_at_us = NULL, updated_at_us = $2
                     WHERE subscription_id = $1 AND status = 'pending'"
                }
                Status::Paused => {
                    "UPDATE deliveries SET next_attempt_at_us = NULL, updated_at_us = $2
                     WHERE subscription_id = $1 AND status = 'pending'"
                }
                Status::Active => {
                    "UPDATE deliveries SET next_attempt_at_us = $2, updated_at_us = $2
                     WHERE subscription_id = $1 AND status = 'pending' AND next_attempt_at_us IS NULL"
                }
            };
            transaction.execute(pending, &[&id, &Timestamp::now().as_microsecond()]).await.map_err(pg_error)?;
            if subscription.status == Status::Active {
                announce(&transaction, StoreChange::Deliveries, self.node()).await.map_err(pg_error)?;
            }
        }
        // Other nodes rebuild their routes only for what routes read (not for health marks).
        if routing(&subscription) != routed_before {
            announce(&transaction, StoreChange::Subscriptions, self.node()).await.map_err(pg_error)?;
        }
        transaction.commit().await.map_err(pg_error)?;
        Ok(Some(subscription))
    }

    pub async fn subscription(&self, id: String) -> Result<Option<Subscription>, StoreError> {
        let client = self.client().await?;
        let row = client.query_opt("SELECT body FROM subscriptions WHERE id = $1", &[&id]).await.map_err(pg_error)?;
        row.map(|row| self.decode(row.get(0))).transpose()
    }

    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let client = self.client().await?;
        let rows =
            client.query("SELECT body FROM subscriptions ORDER BY created_at_us, id", &[]).await.map_err(pg_error)?;
        rows.iter().map(|row| self.decode(row.get(0))).collect()
    }

    /// Every subscription's id and stored document, as it is at rest.
    pub async fn subscription_bodies(&self) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT id, body FROM subscriptions ORDER BY created_at_us, id", &[])
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    pub async fn delete_subscription(&self, id: String) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(pg_error)?;
        // The subscription first: an append writing deliveries for it holds its row (`FOR KEY
        // SHARE`, see `writer`), so this waits for that commit, and the deletes below, each
        // reading afresh, take those deliveries too; an append after this finds no subscription.
        let deleted = transaction.execute("DELETE FROM subscriptions WHERE id = $1", &[&id]).await.map_err(pg_error)?;
        transaction
            .execute(
                "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE subscription_id = $1)",
                &[&id],
            )
            .await
            .map_err(pg_error)?;
        transaction.execute("DELETE FROM deliveries WHERE subscription_id = $1", &[&id]).await.map_err(pg_error)?;
        transaction
            .execute("DELETE FROM subscription_rate_limits WHERE subscription_id = $1", &[&id])
            .await
            .map_err(pg_error)?;
        if deleted == 1 {
            announce(&transaction, StoreChange::Subscriptions, self.node()).await.map_err(pg_error)?;
        }
        transaction.commit().await.map_err(pg_error)?;
        Ok(deleted == 1)
    }
}
