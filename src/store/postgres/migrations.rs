//! The PostgreSQL schema: migrations applied in order, `hookgate_schema.version` recording how
//! many ran. Only ever appended to; a database newer than this hookgate is refused.
//!
//! Several nodes may start at once: each migration runs in its own transaction under a
//! transaction-level advisory lock keyed by the schema's name, and re-reads the version inside
//! it, so exactly one node applies each migration and the others find it applied.
//!
//! The tables mirror SQLite's (`store::sqlite::migrations`): times are microseconds since the
//! epoch in `bigint`, JSON documents are text (kept byte for byte: `jsonb` would reorder keys),
//! ids are `text COLLATE "C"` so that they sort bytewise, as `evt_` + UUIDv7 ids must to sort by
//! time. Differences, each for a reason:
//! - `events.txid` and `events.seq`: the notice mails read hookgate's own events in commit order,
//!   which a sequence alone does not give when transactions commit out of order (`notice_mails`);
//! - `config_version`: a counter every configuration change moves, which each node polls as the
//!   fallback to LISTEN/NOTIFY (`changes`).

use deadpool_postgres::Object;

use super::pg_error;
use crate::store::StoreError;

/// Migrations, applied in order.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE bodies (
    sha256 bytea PRIMARY KEY,
    bytes bytea NOT NULL
);
CREATE TABLE events (
    id text COLLATE "C" PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    name text COLLATE "C" NOT NULL,
    app text COLLATE "C" NOT NULL,
    hook_type text NOT NULL,
    received_at_us bigint NOT NULL,
    source text NOT NULL,
    -- NULL when the data is the raw body parsed as JSON: the body is then kept only once.
    data text,
    body_sha256 bytea NOT NULL REFERENCES bodies (sha256),
    idempotency_scope text,
    idempotency_key text,
    receive_count integer NOT NULL DEFAULT 1,
    quarantined boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX events_by_idempotency_key ON events (idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_by_name ON events (name, id);
CREATE INDEX events_by_app ON events (app, id);
CREATE INDEX events_by_received_at ON events (received_at_us);
CREATE INDEX events_by_body ON events (body_sha256);
CREATE INDEX events_by_seq ON events (seq);
CREATE INDEX events_own_in_commit_order ON events (txid, seq) WHERE name LIKE 'hookgate.%';
CREATE TABLE hook_tokens (
    event_name text PRIMARY KEY,
    token text NOT NULL UNIQUE
);
CREATE TABLE api_keys (
    id text PRIMARY KEY,
    name text NOT NULL,
    prefix text NOT NULL,
    sha256 text NOT NULL UNIQUE,
    apps text,
    created_at_us bigint NOT NULL,
    revoked_at_us bigint,
    purpose text NOT NULL DEFAULT 'ingest',
    scopes text
);
CREATE TABLE installed_apps (
    app text COLLATE "C" PRIMARY KEY,
    definition text NOT NULL,
    installed_at_us bigint NOT NULL
);
CREATE TABLE settings (
    key text PRIMARY KEY,
    value text NOT NULL
);
-- A subscription is a document (its shape is `subscriptions::Subscription`), secrets included;
-- its status is a column as well, so that claims never look inside the document.
CREATE TABLE subscriptions (
    id text COLLATE "C" PRIMARY KEY,
    body text NOT NULL,
    status text NOT NULL,
    created_at_us bigint NOT NULL
);
-- The outbox: one row per event and subscription, written with the event.
CREATE TABLE deliveries (
    id text COLLATE "C" PRIMARY KEY,
    subscription_id text COLLATE "C" NOT NULL,
    event_id text COLLATE "C" NOT NULL,
    -- pending, delivered or failed
    status text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    -- When a pending delivery is next tried (a claim pushes it out by the lease).
    next_attempt_at_us bigint,
    created_at_us bigint NOT NULL,
    updated_at_us bigint NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at_us) WHERE status = 'pending';
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id, created_at_us);
CREATE INDEX deliveries_pending_by_subscription ON deliveries (subscription_id) WHERE status = 'pending';
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE TABLE delivery_attempts (
    delivery_id text COLLATE "C" NOT NULL,
    attempt integer NOT NULL,
    at_us bigint NOT NULL,
    status_code integer,
    latency_us bigint NOT NULL,
    response_excerpt text,
    error text,
    PRIMARY KEY (delivery_id, attempt)
);
-- Events still to publish to NATS JetStream, written with the event; removed on the ack.
CREATE TABLE publications (
    event_id text COLLATE "C" PRIMARY KEY,
    subject text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at_us bigint NOT NULL
);
CREATE INDEX publications_due ON publications (next_attempt_at_us);
-- The mail outbox of operator notices: one row per mail, holding the hookgate events it tells of.
CREATE TABLE notice_mails (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    subject text NOT NULL,
    event_ids text NOT NULL,
    due_at_us bigint NOT NULL,
    created_at_us bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    sent_at_us bigint
);
CREATE INDEX notice_mails_due ON notice_mails (due_at_us) WHERE sent_at_us IS NULL;
CREATE INDEX notice_mails_by_subject ON notice_mails (kind, subject);
-- Moved by every configuration change (subscriptions, apps): the nodes' fallback to NOTIFY.
CREATE TABLE config_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version bigint NOT NULL
);
INSERT INTO config_version (version) VALUES (0);
"#,
    r#"
-- Which version of the subscription's transformation ran for an attempt (NULL: none ran).
ALTER TABLE delivery_attempts ADD COLUMN transform_version text;
"#,
    r#"
-- Delivery control: rate limits, when each attempt was due, dead letters and bulk retries.
-- A rate-limited subscription's token bucket, taken from by the claims (milli-tokens, as on
-- SQLite); a claim locks the row (SKIP LOCKED: another node's claim leaves it alone meanwhile).
CREATE TABLE subscription_rate_limits (
    subscription_id text COLLATE "C" PRIMARY KEY,
    per_second_milli bigint NOT NULL,
    burst integer NOT NULL,
    tokens_milli bigint NOT NULL,
    refilled_at_us bigint NOT NULL
);
ALTER TABLE delivery_attempts ADD COLUMN due_at_us bigint;
CREATE INDEX deliveries_by_status ON deliveries (status, id);
CREATE TABLE retry_jobs (
    id text COLLATE "C" PRIMARY KEY,
    selection text NOT NULL,
    state text NOT NULL,
    total bigint NOT NULL,
    queued bigint NOT NULL DEFAULT 0,
    skipped bigint NOT NULL DEFAULT 0,
    cursor_id text COLLATE "C" NOT NULL DEFAULT '',
    until_id text COLLATE "C" NOT NULL,
    created_at_us bigint NOT NULL,
    updated_at_us bigint NOT NULL,
    finished_at_us bigint
);
CREATE INDEX retry_jobs_running ON retry_jobs (created_at_us) WHERE state = 'running';
-- Ordered delivery per key: the key computed when the event was committed; a claim takes a
-- delivery only when no earlier one of its subscription and key is pending.
ALTER TABLE deliveries ADD COLUMN ordering_key text COLLATE "C";
CREATE INDEX deliveries_pending_by_key ON deliveries (subscription_id, ordering_key, id)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
"#,
    r#"
-- The claim takes ordered deliveries only at each key's head (found over deliveries_pending_by_key)
-- and the unordered due ones from this index, so that it never walks the blocked rows of a
-- backlog waiting behind their keys' heads.
CREATE INDEX deliveries_due_unordered ON deliveries (next_attempt_at_us)
    WHERE status = 'pending' AND ordering_key IS NULL;
"#,
];

/// Applies the migrations not yet applied, one transaction each, under an advisory lock.
pub(super) async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let transaction = client.transaction().await.map_err(pg_error)?;
        transaction
            .execute("SELECT pg_advisory_xact_lock(728419, hashtext(current_schema()))", &[])
            .await
            .map_err(pg_error)?;
        // Under the lock, so that two nodes never race to create it.
        transaction
            .batch_execute("CREATE TABLE IF NOT EXISTS hookgate_schema (version integer NOT NULL)")
            .await
            .map_err(pg_error)?;
        let applied: Option<i32> = transaction
            .query_opt("SELECT version FROM hookgate_schema", &[])
            .await
            .map_err(pg_error)?
            .map(|row| row.get(0));
        let applied = applied.unwrap_or(0) as usize;
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "the database has schema version {applied}, newer than this hookgate ({}); upgrade hookgate",
                MIGRATIONS.len()
            )));
        }
        if applied > index {
            continue;
        }
        transaction.batch_execute(migration).await.map_err(pg_error)?;
        transaction.execute("DELETE FROM hookgate_schema", &[]).await.map_err(pg_error)?;
        transaction
            .execute("INSERT INTO hookgate_schema (version) VALUES ($1)", &[&((index + 1) as i32)])
            .await
            .map_err(pg_error)?;
        transaction.commit().await.map_err(pg_error)?;
    }
    Ok(())
}
