//! Subscriptions, kept as a JSON document per row (secrets sealed by `store::sealed` once keys
//! are installed), with the status also in a column of its own for the claims (never read from
//! the JSON there). A change is one write that reads, changes and stores the document and the
//! status, and moves its pending deliveries with the status.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};

use std::sync::Arc;

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::sealed::{SecretsKeys, decode_subscription, encode_subscription};
use crate::subscriptions::{Status, Subscription};

impl SqliteStore {
    /// Seals subscription secrets with `keys` from now on; the first keys installed stay.
    pub fn install_secrets_keys(&self, keys: Arc<SecretsKeys>) {
        let _ = self.inner.secrets.set(keys);
    }

    pub fn secrets_keys(&self) -> Option<Arc<SecretsKeys>> {
        self.inner.secrets.get().cloned()
    }

    pub async fn put_subscription(&self, subscription: Subscription) -> Result<(), StoreError> {
        let body = encode_subscription(self.secrets_keys().as_deref(), &subscription)?;
        self.write(move |connection| {
            connection.execute(
                "INSERT INTO subscriptions (id, body, created_at_us, status) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, status = excluded.status",
                params![
                    subscription.id,
                    body,
                    subscription.created_at.as_microsecond(),
                    status_column(subscription.status)
                ],
            )?;
            super::rate_limits::keep(connection, &subscription, Timestamp::now().as_microsecond())?;
            Ok(())
        })
        .await
    }

    pub async fn update_subscription(
        &self,
        id: String,
        change: impl FnOnce(&mut Subscription) + Send + 'static,
    ) -> Result<Option<Subscription>, StoreError> {
        let keys = self.secrets_keys();
        self.write(move |connection| {
            let body: Option<String> = connection
                .prepare_cached("SELECT body FROM subscriptions WHERE id = ?1")?
                .query_row([&id], |row| row.get(0))
                .optional()?;
            let Some(body) = body else { return Ok(None) };
            let mut subscription = decode_subscription(keys.as_deref(), &body)?;
            let before = subscription.status;
            change(&mut subscription);
            let body = encode_subscription(keys.as_deref(), &subscription)?;
            connection
                .prepare_cached("UPDATE subscriptions SET body = ?2, status = ?3 WHERE id = ?1")?
                .execute(params![id, body, status_column(subscription.status)])?;
            super::rate_limits::keep(connection, &subscription, Timestamp::now().as_microsecond())?;
            // Its pending deliveries follow a change of status: failed when disabled, parked (no
            // due time, so claims never look at them) while paused, due now when active again.
            if subscription.status != before {
                let pending = match subscription.status {
                    Status::Disabled => {
                        "UPDATE deliveries SET status = 'failed', next_attempt_at_us = NULL, updated_at_us = ?2
                         WHERE subscription_id = ?1 AND status = 'pending'"
                    }
                    Status::Paused => {
                        "UPDATE deliveries SET next_attempt_at_us = NULL, updated_at_us = ?2
                         WHERE subscription_id = ?1 AND status = 'pending'"
                    }
                    Status::Active => {
                        "UPDATE deliveries SET next_attempt_at_us = ?2, updated_at_us = ?2
                         WHERE subscription_id = ?1 AND status = 'pending' AND next_attempt_at_us IS NULL"
                    }
                };
                connection.prepare_cached(pending)?.execute(params![id, Timestamp::now().as_microsecond()])?;
            }
            Ok(Some(subscription))
        })
        .await
    }

    pub async fn subscription(&self, id: String) -> Result<Option<Subscription>, StoreError> {
        let keys = self.secrets_keys();
        self.read(move |connection| {
            let body: Option<String> = connection
                .query_row("SELECT body FROM subscriptions WHERE id = ?1", [id], |row| row.get(0))
                .optional()?;
            body.map(|body| decode_subscription(keys.as_deref(), &body)).transpose()
        })
        .await
    }

    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let keys = self.secrets_keys();
        self.read(move |connection| {
            let mut statement =
                connection.prepare_cached("SELECT body FROM subscriptions ORDER BY created_at_us, id")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            rows.map(|body| decode_subscription(keys.as_deref(), &body?)).collect()
        })
        .await
    }

    /// Every subscription's id and stored document, as it is at rest.
    pub async fn subscription_bodies(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|connection| {
            let mut statement =
                connection.prepare_cached("SELECT id, body FROM subscriptions ORDER BY created_at_us, id")?;
            let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn delete_subscription(&self, id: String) -> Result<bool, StoreError> {
        self.write(move |connection| {
            connection.execute(
                "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE subscription_id = ?1)",
                [&id],
            )?;
            connection.execute("DELETE FROM deliveries WHERE subscription_id = ?1", [&id])?;
            connection.execute("DELETE FROM subscription_rate_limits WHERE subscription_id = ?1", [&id])?;
            Ok(connection.execute("DELETE FROM subscriptions WHERE id = ?1", [&id])? == 1)
        })
        .await
    }
}

/// The `status` column's value: the same word as the document's `status`.
fn status_column(status: Status) -> &'static str {
    match status {
        Status::Active => "active",
        Status::Paused => "paused",
        Status::Disabled => "disabled",
    }
}
