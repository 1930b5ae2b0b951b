//! Subscriptions, kept as a JSON document per row (secrets sealed by `store::sealed` once keys
//! are installed), with the status also in a column of its own for the claims (never read from
//! the JSON there). A change is one write that reads, changes and stores the document and the
//! status, and starts moving its pending deliveries with the status; a backlog larger than
//! [`SETTLE_CHUNK`] is moved a chunk per write after it ([`settle_deliveries`]), so that what
//! SQLite journals in memory for one statement (every page it changes) stays bounded. Claims skip
//! a paused subscription's deliveries whether parked yet or not, and the worker fails a disabled
//! one's. A deletion deletes the subscription first, then its deliveries a chunk per write (claims
//! join the subscription, so none is sent meanwhile). A start finishes a move or a deletion that a
//! crash cut short ([`SqliteStore::settle_all_deliveries`]).

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
        let subscription_id = id.clone();
        let changed = self
            .write(move |connection| {
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
                // Its pending deliveries follow a change of status, the first chunk in this write.
                let more = subscription.status != before
                    && settle_deliveries(connection, &id, Timestamp::now().as_microsecond())? == SETTLE_CHUNK;
                Ok(Some((subscription, more)))
            })
            .await?;
        let Some((subscription, more)) = changed else { return Ok(None) };
        if more {
            self.settle_deliveries_of(subscription_id).await?;
        }
        Ok(Some(subscription))
    }

    /// Settles the subscription's deliveries ([`settle_deliveries`]) a chunk per write until
    /// every one follows its status (or, deleted, none is left).
    async fn settle_deliveries_of(&self, id: String) -> Result<(), StoreError> {
        loop {
            let id = id.clone();
            let moved = self
                .write(move |connection| Ok(settle_deliveries(connection, &id, Timestamp::now().as_microsecond())?))
                .await?;
            if moved < SETTLE_CHUNK {
                return Ok(());
            }
        }
    }

    /// Finishes what a crash cut short: every subscription's pending deliveries follow its status,
    /// and a deleted subscription's deliveries are deleted, a chunk per subscription per write (one
    /// write in all when nothing is left to do). Run when the store opens.
    pub(super) async fn settle_all_deliveries(&self) -> Result<(), StoreError> {
        // Every subscription id the deliveries name, found by skipping from one to the next over
        // their index (a probe each, whatever the backlog), and every subscription.
        let mut unsettled: Vec<String> = self
            .read(|connection| {
                let mut statement = connection.prepare(
                    "WITH RECURSIVE named(id) AS (
                       SELECT min(subscription_id) FROM deliveries
                       UNION ALL
                       SELECT (SELECT min(subscription_id) FROM deliveries WHERE subscription_id > named.id)
                       FROM named WHERE named.id IS NOT NULL)
                     SELECT id FROM named WHERE id IS NOT NULL UNION SELECT id FROM subscriptions",
                )?;
                Ok(statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?)
            })
            .await?;
        while !unsettled.is_empty() {
            unsettled = self
                .write(move |connection| {
                    let now_us = Timestamp::now().as_microsecond();
                    let mut more = Vec::new();
                    for id in unsettled {
                        if settle_deliveries(connection, &id, now_us)? == SETTLE_CHUNK {
                            more.push(id);
                        }
                    }
                    Ok(more)
                })
                .await?;
        }
        Ok(())
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

    /// Deletes the subscription, then its deliveries and their attempts a chunk per write (claims
    /// join the subscription, so none of them is sent meanwhile); a start finishes what a crash
    /// cut short ([`SqliteStore::settle_all_deliveries`]).
    pub async fn delete_subscription(&self, id: String) -> Result<bool, StoreError> {
        let subscription_id = id.clone();
        let deleted = self
            .write(move |connection| {
                connection.execute("DELETE FROM subscription_rate_limits WHERE subscription_id = ?1", [&id])?;
                Ok(connection.execute("DELETE FROM subscriptions WHERE id = ?1", [&id])? == 1)
            })
            .await?;
        self.settle_deliveries_of(subscription_id).await?;
        Ok(deleted)
    }
}

/// How many deliveries one write moves to follow their subscription's status.
pub(super) const SETTLE_CHUNK: usize = 4096;

/// Moves up to [`SETTLE_CHUNK`] of the subscription's pending deliveries to follow its status as
/// stored now: failed when disabled, parked (no due time, so claims never look at them) while
/// paused, due at `now_us` when active again. Returns how many moved; fewer than a chunk means
/// every one follows it. Each chunk is found through the subscription's due-time index.
pub(super) fn settle_deliveries(connection: &rusqlite::Connection, id: &str, now_us: i64) -> rusqlite::Result<usize> {
    let status: Option<String> = connection
        .prepare_cached("SELECT status FROM subscriptions WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?;
    let (change, which) = match status.as_deref() {
        // Deleted: what is left of its deliveries goes.
        None => return forget_deliveries(connection, id),
        Some("disabled") => ("status = 'failed', next_attempt_at_us = NULL", ""),
        Some("paused") => ("next_attempt_at_us = NULL", "AND next_attempt_at_us IS NOT NULL"),
        Some(_) => ("next_attempt_at_us = ?2", "AND next_attempt_at_us IS NULL"),
    };
    connection
        .prepare_cached(&format!(
            "UPDATE deliveries SET {change}, updated_at_us = ?2 WHERE rowid IN (
               SELECT rowid FROM deliveries INDEXED BY deliveries_due_by_subscription
               WHERE subscription_id = ?1 AND status = 'pending' {which} LIMIT ?3)"
        ))?
        .execute(params![id, now_us, SETTLE_CHUNK as i64])
}

/// Deletes up to [`SETTLE_CHUNK`] of the subscription's deliveries, with their attempts; returns
/// how many. Found through the subscription's index of deliveries.
fn forget_deliveries(connection: &rusqlite::Connection, id: &str) -> rusqlite::Result<usize> {
    let ids: Vec<String> = connection
        .prepare_cached(
            "SELECT id FROM deliveries INDEXED BY deliveries_by_subscription WHERE subscription_id = ?1 LIMIT ?2",
        )?
        .query_map(params![id, SETTLE_CHUNK as i64], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    super::deliveries::delete_deliveries(connection, &ids)?;
    Ok(ids.len())
}

/// The `status` column's value: the same word as the document's `status`.
fn status_column(status: Status) -> &'static str {
    match status {
        Status::Active => "active",
        Status::Paused => "paused",
        Status::Disabled => "disabled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// More than two chunks' worth.
    const BACKLOG: i64 = 2 * SETTLE_CHUNK as i64 + 100;

    /// A store holding a subscription with `BACKLOG` pending deliveries, and a connection of its own.
    async fn store_with_backlog(dir: &std::path::Path) -> (Store, rusqlite::Connection, Subscription) {
        let store = Store::Sqlite(SqliteStore::open(dir.join("hookgate.db")).await.unwrap());
        let policy = crate::subscriptions::TargetPolicy::new(true, ["127.0.0.0/8".parse().unwrap()]);
        let body = serde_json::json!({"url": "http://127.0.0.1:9/kept"});
        let subscription =
            crate::subscriptions::from_request(&body, None, false, &policy, Timestamp::now()).await.unwrap();
        store.put_subscription(subscription.clone()).await.unwrap();
        let mut event = crate::store::conformance::sample_event("settle.backlog", "settle");
        event.deliver_to = vec![subscription.id.clone()];
        store.append_events(vec![event]).await.unwrap();
        let connection = rusqlite::Connection::open(dir.join("hookgate.db")).unwrap();
        connection.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        connection
            .execute(
                &format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
                     INSERT INTO deliveries (id, subscription_id, event_id, status, next_attempt_at_us, created_at_us, updated_at_us)
                     SELECT printf('dlv_copy_%08d', i), subscription_id, event_id, status, next_attempt_at_us, created_at_us, updated_at_us
                     FROM deliveries, n",
                    BACKLOG - 1
                ),
                [],
            )
            .unwrap();
        (store, connection, subscription)
    }

    /// How many of the backlog are pending and parked, pending and due, and failed.
    fn counts(connection: &rusqlite::Connection) -> (i64, i64, i64) {
        connection
            .query_row(
                "SELECT count(*) FILTER (WHERE status = 'pending' AND next_attempt_at_us IS NULL),
                        count(*) FILTER (WHERE status = 'pending' AND next_attempt_at_us IS NOT NULL),
                        count(*) FILTER (WHERE status = 'failed')
                 FROM deliveries",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap()
    }

    #[tokio::test]
    async fn a_backlog_larger_than_a_chunk_follows_every_change_of_status() {
        let dir = tempfile::tempdir().unwrap();
        let (store, connection, subscription) = store_with_backlog(dir.path()).await;
        assert_eq!(counts(&connection), (0, BACKLOG, 0), "an active subscription's deliveries are due");
        let set = |status| move |subscription: &mut Subscription| subscription.status = status;
        store.update_subscription(&subscription.id, set(Status::Paused)).await.unwrap();
        assert_eq!(counts(&connection), (BACKLOG, 0, 0), "paused: every one parked");
        store.update_subscription(&subscription.id, set(Status::Active)).await.unwrap();
        assert_eq!(counts(&connection), (0, BACKLOG, 0), "resumed: every one due again");
        store.update_subscription(&subscription.id, set(Status::Disabled)).await.unwrap();
        assert_eq!(counts(&connection), (0, 0, BACKLOG), "disabled: every one failed");
    }

    #[tokio::test]
    async fn deleting_a_subscription_deletes_a_backlog_larger_than_a_chunk_with_its_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let (store, connection, subscription) = store_with_backlog(dir.path()).await;
        connection
            .execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, at_us, latency_us) SELECT id, 1, 0, 0 FROM deliveries",
                [],
            )
            .unwrap();
        assert!(store.delete_subscription(&subscription.id).await.unwrap());
        let left = |table: &str| {
            connection.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get::<_, i64>(0)).unwrap()
        };
        assert_eq!((left("deliveries"), left("delivery_attempts")), (0, 0));
        assert!(!store.delete_subscription(&subscription.id).await.unwrap(), "deleted once");
    }

    #[tokio::test]
    async fn a_start_deletes_what_a_crash_left_of_a_deleted_subscriptions_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let (store, connection, subscription) = store_with_backlog(dir.path()).await;
        // As the first write of a deletion leaves it: the subscription gone, its deliveries not yet.
        connection.execute("DELETE FROM subscriptions WHERE id = ?1", [&subscription.id]).unwrap();
        drop(store);
        let _reopened = SqliteStore::open(dir.path().join("hookgate.db")).await.unwrap();
        assert_eq!(connection.query_row("SELECT count(*) FROM deliveries", [], |row| row.get::<_, i64>(0)).unwrap(), 0);
    }

    #[tokio::test]
    async fn a_start_finishes_a_move_that_a_crash_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let (store, connection, subscription) = store_with_backlog(dir.path()).await;
        // Paused, as the first write of a pause leaves it: the status stored, the deliveries not yet parked.
        connection.execute("UPDATE subscriptions SET status = 'paused' WHERE id = ?1", [&subscription.id]).unwrap();
        drop(store);
        let _reopened = SqliteStore::open(dir.path().join("hookgate.db")).await.unwrap();
        assert_eq!(counts(&connection), (BACKLOG, 0, 0));
    }
}
