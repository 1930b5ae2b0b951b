//! The schema: migrations applied in order, `PRAGMA user_version` recording how many ran. Only
//! ever appended to; a database newer than this hookgate is refused.

use rusqlite::Connection;

use super::StoreError;

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    app TEXT NOT NULL,
    hook_type TEXT NOT NULL,
    received_at_us INTEGER NOT NULL,
    source TEXT NOT NULL,
    -- NULL when the data is the raw body parsed as JSON: the body is then kept only once.
    data TEXT,
    raw_body BLOB NOT NULL,
    idempotency_scope TEXT,
    idempotency_key TEXT,
    receive_count INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX events_by_idempotency_key ON events (idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_by_name ON events (name, id);
CREATE INDEX events_by_app ON events (app, id);
CREATE INDEX events_by_received_at ON events (received_at_us);
CREATE TABLE hook_tokens (
    event_name TEXT PRIMARY KEY NOT NULL,
    token TEXT NOT NULL UNIQUE
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    apps TEXT,
    created_at_us INTEGER NOT NULL,
    revoked_at_us INTEGER
);
CREATE TABLE installed_apps (
    app TEXT PRIMARY KEY NOT NULL,
    definition TEXT NOT NULL,
    installed_at_us INTEGER NOT NULL
);
CREATE TABLE settings (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE events ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- A subscription is a document (its shape is `subscriptions::Subscription`), secrets included.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    body TEXT NOT NULL,
    created_at_us INTEGER NOT NULL
);
"#,
    r#"
-- The outbox: one row per event and subscription, written with the event.
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    subscription_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- pending, delivered or failed
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- When a pending delivery is next tried (a claim pushes it out by the lease).
    next_attempt_at_us INTEGER,
    created_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at_us) WHERE status = 'pending';
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id, created_at_us);
CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at_us INTEGER NOT NULL,
    status_code INTEGER,
    latency_us INTEGER NOT NULL,
    response_excerpt TEXT,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
"#,
    r#"
-- Events still to publish to NATS JetStream, written with the event; removed on the ack.
CREATE TABLE publications (
    event_id TEXT PRIMARY KEY NOT NULL,
    subject TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_us INTEGER NOT NULL
);
CREATE INDEX publications_due ON publications (next_attempt_at_us);
"#,
    r#"
-- Management keys beside the web hooks' ingest keys; scopes limit the events they manage.
ALTER TABLE api_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'ingest';
ALTER TABLE api_keys ADD COLUMN scopes TEXT;
"#,
    r#"
-- A subscription's pending deliveries, found without reading its whole history (disabling fails them).
CREATE INDEX deliveries_pending_by_subscription ON deliveries (subscription_id) WHERE status = 'pending';
"#,
    r#"
-- The mail outbox of operator notices: one row per mail, holding the hookgate events it tells of.
CREATE TABLE notice_mails (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    event_ids TEXT NOT NULL,
    due_at_us INTEGER NOT NULL,
    created_at_us INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at_us INTEGER
);
CREATE INDEX notice_mails_due ON notice_mails (due_at_us) WHERE sent_at_us IS NULL;
CREATE INDEX notice_mails_by_subject ON notice_mails (kind, subject);
"#,
];

/// Applies the migrations not yet applied, each in an IMMEDIATE transaction that re-reads the
/// version, so two processes opening a new file at once do not both migrate it.
pub(super) fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let transaction = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let applied: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        let applied = usize::try_from(applied).map_err(|_| StoreError::Corrupt(format!("schema version {applied}")))?;
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "the database has schema version {applied}, newer than this hookgate ({}); upgrade hookgate",
                MIGRATIONS.len()
            )));
        }
        if applied > index {
            continue;
        }
        transaction.execute_batch(migration)?;
        transaction.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
        transaction.commit()?;
    }
    Ok(())
}
