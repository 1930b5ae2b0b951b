//! Subscriptions, kept as a JSON document per row (secrets included), with the status also in a
//! column of its own for the claims (never read from the JSON there). A change is one write that
//! reads, changes and stores the document and the status, and moves its pending deliveries with
//! the status.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::store::StoreError;
use crate::subscriptions::{Status, Subscription};

impl SqliteStore {
    pub async fn put_subscription(&self, subscription: Subscription) -> Result<(), StoreError> {
        let body = serde_json::to_string(&subscription).map_err(|error| StoreError::Database(error.to_string()))?;
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
        self.write(move |connection| {
            let body: Option<String> = connection
                .prepare_cached("SELECT body FROM subscriptions WHERE id = ?1")?
                .query_row([&id], |row| row.get(0))
                .optional()?;
            let Some(body) = body else { return Ok(None) };
            let mut subscription: Subscription =
                serde_json::from_str(&body).map_err(|error| StoreError::Corrupt(error.to_string()))?;
            let before = subscription.status;
            change(&mut subscription);
            let body = serde_json::to_string(&subscription).map_err(|error| StoreError::Database(error.to_string()))?;
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
        self.read(move |connection| {
            let body: Option<String> = connection
                .query_row("SELECT body FROM subscriptions WHERE id = ?1", [id], |row| row.get(0))
                .optional()?;
            body.map(|body| serde_json::from_str(&body).map_err(|error| StoreError::Corrupt(error.to_string())))
                .transpose()
        })
        .await
    }

    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        self.read(|connection| {
            let mut statement =
                connection.prepare_cached("SELECT body FROM subscriptions ORDER BY created_at_us, id")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            rows.map(|body| serde_json::from_str(&body?).map_err(|error| StoreError::Corrupt(error.to_string())))
                .collect()
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
