//! The schema: migrations applied in order, `PRAGMA user_version` recording how many ran. Only
//! ever appended to; a database newer than this hookgate is refused. Most are SQL; one that SQL
//! alone cannot take (hashing every stored body) is a Rust step, versioned the same way and run
//! in the same kind of transaction.

use rusqlite::{Connection, Transaction, params};
use sha2::{Digest, Sha256};

use super::StoreError;

/// One schema change.
enum Migration {
    Sql(&'static str),
    /// A change that needs Rust: it runs inside the migration's transaction.
    Rust(fn(&Transaction<'_>) -> Result<(), StoreError>),
}

use Migration::{Rust, Sql};

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[Migration] = &[
    Sql(r#"
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
"#),
    Sql(r#"
ALTER TABLE events ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0;
"#),
    Sql(r#"
-- A subscription is a document (its shape is `subscriptions::Subscription`), secrets included.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    body TEXT NOT NULL,
    created_at_us INTEGER NOT NULL
);
"#),
    Sql(r#"
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
"#),
    Sql(r#"
-- Events still to publish to NATS JetStream, written with the event; removed on the ack.
CREATE TABLE publications (
    event_id TEXT PRIMARY KEY NOT NULL,
    subject TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_us INTEGER NOT NULL
);
CREATE INDEX publications_due ON publications (next_attempt_at_us);
"#),
    Sql(r#"
-- Management keys beside the web hooks' ingest keys; scopes limit the events they manage.
ALTER TABLE api_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'ingest';
ALTER TABLE api_keys ADD COLUMN scopes TEXT;
"#),
    Sql(r#"
-- A subscription's pending deliveries, found without reading its whole history (disabling fails them).
CREATE INDEX deliveries_pending_by_subscription ON deliveries (subscription_id) WHERE status = 'pending';
"#),
    Sql(r#"
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
"#),
    // Raw bodies stored once, keyed by their SHA-256 (see `bodies_by_sha256`).
    Rust(bodies_by_sha256),
    Sql(r#"
-- A subscription's status as a column, so that claims never read its JSON; every write of the
-- subscription keeps it in step with the document.
ALTER TABLE subscriptions ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
UPDATE subscriptions SET status = COALESCE(json_extract(body, '$.status'), 'active');
"#),
    Sql(r#"
-- Retention and erasure find an event's deliveries, and finished deliveries by age, without a scan.
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE INDEX deliveries_finished ON deliveries (updated_at_us) WHERE status <> 'pending';
"#),
    Sql(r#"
-- Which version of the subscription's transformation ran for an attempt (NULL: none ran).
ALTER TABLE delivery_attempts ADD COLUMN transform_version TEXT;
"#),
    Sql(r#"
-- Delivery control: rate limits, when each attempt was due, dead letters and bulk retries.
-- A rate-limited subscription's token bucket, taken from by the claims (milli-tokens, so that
-- fractions of a token add up exactly); kept in step with the subscription's `rateLimit`.
CREATE TABLE subscription_rate_limits (
    subscription_id TEXT PRIMARY KEY NOT NULL,
    per_second_milli INTEGER NOT NULL,
    burst INTEGER NOT NULL,
    tokens_milli INTEGER NOT NULL,
    refilled_at_us INTEGER NOT NULL
);
-- When the attempt was due: it went out at `at_us`, later by a rate limit or a busy worker.
ALTER TABLE delivery_attempts ADD COLUMN due_at_us INTEGER;
-- The dead letters (and any status) across subscriptions, newest first.
CREATE INDEX deliveries_by_status ON deliveries (status, id);
-- Bulk retries: the deliveries a selection matched at creation (ids up to `until_id`), taken a
-- batch at a time after `cursor_id`.
CREATE TABLE retry_jobs (
    id TEXT PRIMARY KEY NOT NULL,
    selection TEXT NOT NULL,
    state TEXT NOT NULL,
    total INTEGER NOT NULL,
    queued INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    cursor_id TEXT NOT NULL DEFAULT '',
    until_id TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL,
    finished_at_us INTEGER
);
CREATE INDEX retry_jobs_running ON retry_jobs (created_at_us) WHERE state = 'running';
-- Ordered delivery per key: the key computed when the event was committed; a claim takes a
-- delivery only when no earlier one of its subscription and key is pending.
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
CREATE INDEX deliveries_pending_by_key ON deliveries (subscription_id, ordering_key, id)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
"#),
    // Raw bodies by a number given in order instead of by their SHA-256 (see `bodies_by_id`).
    Rust(bodies_by_id),
    // Idempotency keys found by an 8-byte hash; bodies no longer hashed (see `keys_by_hash`).
    Rust(keys_by_hash),
    Sql(r#"
-- A rate-limited subscription's claim takes its due deliveries in due order from an index (it
-- used to sort all of the subscription's pending ones); the index also finds a subscription's
-- pending deliveries, which the one it replaces did.
CREATE INDEX deliveries_due_by_subscription ON deliveries (subscription_id, next_attempt_at_us)
    WHERE status = 'pending';
DROP INDEX deliveries_pending_by_subscription;
"#),
];

/// Moves every raw body into `bodies`, once per SHA-256 (computed here, in Rust), and rebuilds
/// `events` to reference it: SQLite cannot add a `NOT NULL` column that references another
/// table, so the table is copied into a new one (which also drops `raw_body`). Each event keeps
/// its rowid as `seq`, the commit order the notice mail outbox reads by.
fn bodies_by_sha256(transaction: &Transaction<'_>) -> Result<(), StoreError> {
    transaction.execute_batch(
        r#"
-- Raw bodies, each stored once: the events of a split batch, or of one mail to several hooks,
-- share a row. A rowid table rather than WITHOUT ROWID, because bodies run to megabytes and
-- SQLite keeps large rows best outside the key's b-tree.
CREATE TABLE bodies (
    sha256 BLOB PRIMARY KEY NOT NULL,
    bytes BLOB NOT NULL
);
-- `seq` is AUTOINCREMENT so that a number is never given twice, even after retention or an
-- erasure deleted the newest events (the notice mail outbox's cursor is a `seq`).
CREATE TABLE events_rebuilt (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    app TEXT NOT NULL,
    hook_type TEXT NOT NULL,
    received_at_us INTEGER NOT NULL,
    source TEXT NOT NULL,
    -- NULL when the data is the raw body parsed as JSON: it is then read from the body.
    data TEXT,
    body_sha256 BLOB NOT NULL REFERENCES bodies (sha256),
    idempotency_scope TEXT,
    idempotency_key TEXT,
    receive_count INTEGER NOT NULL DEFAULT 1,
    quarantined INTEGER NOT NULL DEFAULT 0
);
"#,
    )?;
    {
        let mut bodies = transaction.prepare("SELECT rowid, raw_body FROM events ORDER BY rowid")?;
        let mut keep_body = transaction.prepare("INSERT OR IGNORE INTO bodies (sha256, bytes) VALUES (?1, ?2)")?;
        let mut copy_event = transaction.prepare(
            "INSERT INTO events_rebuilt (seq, id, name, app, hook_type, received_at_us, source, data, body_sha256,
                                         idempotency_scope, idempotency_key, receive_count, quarantined)
             SELECT rowid, id, name, app, hook_type, received_at_us, source, data, ?2,
                    idempotency_scope, idempotency_key, receive_count, quarantined
             FROM events WHERE rowid = ?1",
        )?;
        let mut rows = bodies.query([])?;
        while let Some(row) = rows.next()? {
            let rowid: i64 = row.get(0)?;
            let bytes = match row.get_ref(1)? {
                rusqlite::types::ValueRef::Blob(bytes) | rusqlite::types::ValueRef::Text(bytes) => bytes,
                _ => return Err(StoreError::Corrupt(format!("the event in row {rowid} has no raw body"))),
            };
            let sha256 = body_sha256(bytes);
            keep_body.execute(params![&sha256[..], bytes])?;
            copy_event.execute(params![rowid, &sha256[..]])?;
        }
    }
    transaction.execute_batch(
        r#"
DROP TABLE events;
ALTER TABLE events_rebuilt RENAME TO events;
CREATE UNIQUE INDEX events_by_idempotency_key ON events (idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_by_name ON events (name, id);
CREATE INDEX events_by_app ON events (app, id);
CREATE INDEX events_by_received_at ON events (received_at_us);
-- Whether a body is still referenced, when events are deleted.
CREATE INDEX events_by_body ON events (body_sha256);
"#,
    )?;
    Ok(())
}

/// Keys `bodies` by a number given in order, and has events reference a body by it.
///
/// Keyed by their SHA-256, every new body went to a random leaf of two large b-trees (the key of
/// `bodies` and `events_by_body`): a commit of 64 events dirtied about 128 pages scattered over
/// the file, and wrote each of them to the WAL (4 KiB for every ~500-byte event). Numbered in
/// order, both b-trees grow at their right edge, and a commit writes a few pages. The SHA-256
/// stays in each row (the copy to PostgreSQL keys bodies by it), unindexed: an append still
/// stores each body once, however many of its events share it (a split batch, one mail to
/// several hooks), by hash within the append; equal bodies of separate appends are kept apart.
///
/// The tables are rebuilt (SQLite cannot change a column's reference in place). Every event
/// keeps its `seq`, and the highest `seq` ever given stays the highest.
fn bodies_by_id(transaction: &Transaction<'_>) -> Result<(), StoreError> {
    transaction.execute_batch(
        r#"
CREATE TABLE bodies_numbered (
    id INTEGER PRIMARY KEY,
    sha256 BLOB NOT NULL,
    bytes BLOB NOT NULL
);
INSERT INTO bodies_numbered (sha256, bytes) SELECT sha256, bytes FROM bodies ORDER BY rowid;
CREATE INDEX bodies_numbered_by_sha256 ON bodies_numbered (sha256);
CREATE TABLE events_rebuilt (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    app TEXT NOT NULL,
    hook_type TEXT NOT NULL,
    received_at_us INTEGER NOT NULL,
    source TEXT NOT NULL,
    -- NULL when the data is the raw body parsed as JSON: it is then read from the body.
    data TEXT,
    body_id INTEGER NOT NULL REFERENCES bodies_numbered (id),
    idempotency_scope TEXT,
    idempotency_key TEXT,
    receive_count INTEGER NOT NULL DEFAULT 1,
    quarantined INTEGER NOT NULL DEFAULT 0
);
INSERT INTO events_rebuilt (seq, id, name, app, hook_type, received_at_us, source, data, body_id,
                            idempotency_scope, idempotency_key, receive_count, quarantined)
SELECT e.seq, e.id, e.name, e.app, e.hook_type, e.received_at_us, e.source, e.data,
       (SELECT b.id FROM bodies_numbered b WHERE b.sha256 = e.body_sha256),
       e.idempotency_scope, e.idempotency_key, e.receive_count, e.quarantined
FROM events e ORDER BY e.seq;
-- The highest number ever given, even when its event is gone (the notice outbox's cursor).
INSERT INTO sqlite_sequence (name, seq) SELECT 'events_rebuilt', 0
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events_rebuilt');
UPDATE sqlite_sequence
    SET seq = max(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))
    WHERE name = 'events_rebuilt';
DROP TABLE events;
DROP TABLE bodies;
DROP INDEX bodies_numbered_by_sha256;
ALTER TABLE bodies_numbered RENAME TO bodies;
ALTER TABLE events_rebuilt RENAME TO events;
CREATE UNIQUE INDEX events_by_idempotency_key ON events (idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_by_name ON events (name, id);
CREATE INDEX events_by_app ON events (app, id);
CREATE INDEX events_by_received_at ON events (received_at_us);
-- Whether a body is still referenced, when events are deleted.
CREATE INDEX events_by_body ON events (body_id);
"#,
    )?;
    Ok(())
}

/// Idempotency keys are found by an 8-byte hash of their scope and key (the row is then
/// compared): the index on the platforms' random delivery ids was as wide as the ids and outgrew
/// the page cache, and an event cost a lookup in it that read from the file.
///
/// New bodies are stored without their SHA-256 (`sha256` is empty): an append finds the bodies
/// its events share by their bytes, and `hookgate migrate` hashes the bodies it copies. The
/// version changes so that an older hookgate, which would read the empty hashes as one body,
/// refuses the file.
fn keys_by_hash(transaction: &Transaction<'_>) -> Result<(), StoreError> {
    transaction.execute_batch("ALTER TABLE events ADD COLUMN idempotency_hash INTEGER;")?;
    {
        let mut keyed = transaction.prepare(
            "SELECT rowid, idempotency_scope, idempotency_key FROM events WHERE idempotency_key IS NOT NULL",
        )?;
        let mut set_hash = transaction.prepare("UPDATE events SET idempotency_hash = ?1 WHERE rowid = ?2")?;
        let mut rows = keyed.query([])?;
        while let Some(row) = rows.next()? {
            let (rowid, scope, key): (i64, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            set_hash.execute(rusqlite::params![idempotency_hash(&scope, &key), rowid])?;
        }
    }
    transaction.execute_batch(
        "DROP INDEX events_by_idempotency_key;
         CREATE INDEX events_by_idempotency_hash ON events (idempotency_hash) WHERE idempotency_hash IS NOT NULL;",
    )?;
    Ok(())
}

/// The 8-byte hash an idempotency key is indexed by: the first 8 bytes of the SHA-256 of its
/// scope, a zero byte and the key. Stable across versions and machines, as the index is stored.
pub(super) fn idempotency_hash(scope: &str, key: &str) -> i64 {
    let digest = Sha256::new().chain_update(scope).chain_update([0]).chain_update(key).finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"))
}

/// The `user_version` of a file every migration has run on.
pub(super) fn schema_version() -> usize {
    MIGRATIONS.len()
}

/// The key a raw body is stored under.
pub(super) fn body_sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Applies the migrations not yet applied, each in an IMMEDIATE transaction that re-reads the
/// version, so two processes opening a new file at once do not both migrate it.
pub(super) fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    migrate_through(connection, MIGRATIONS)
}

/// Applies `migrations`, the first of [`MIGRATIONS`] (all of them, except in tests that build
/// an older schema).
fn migrate_through(connection: &mut Connection, migrations: &[Migration]) -> Result<(), StoreError> {
    for (index, migration) in migrations.iter().enumerate() {
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
        match migration {
            Sql(sql) => transaction.execute_batch(sql)?,
            Rust(step) => step(&transaction)?,
        }
        transaction.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
        transaction.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;
    use crate::store::conformance::sample_event;
    use crate::store::{SqliteStore, Store};
    use bytes::Bytes;

    /// How many migrations ran before raw bodies moved to `bodies`.
    const BEFORE_BODIES: usize = 8;
    /// How many ran before bodies were numbered (`bodies_by_id`), and before keys were hashed.
    const BEFORE_BODIES_BY_ID: usize = 13;
    const BEFORE_KEYS_BY_HASH: usize = 14;

    /// Inserts `event` as hookgate did before `bodies`: the raw body in the event's row.
    fn insert_in_previous_schema(connection: &Connection, new: &NewEvent) {
        let event = &new.event;
        let data = (!new.data_is_raw_json).then(|| serde_json::to_string(&event.data).unwrap());
        connection
            .execute(
                "INSERT INTO events (id, name, app, hook_type, received_at_us, source, data, raw_body,
                                     idempotency_scope, idempotency_key, receive_count, quarantined)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    event.id,
                    event.name,
                    event.app,
                    event.hook_type.as_str(),
                    event.received_at.as_microsecond(),
                    serde_json::to_string(&event.source).unwrap(),
                    data,
                    new.raw_body.as_ref(),
                    new.idempotency_key.as_ref().map(|key| &key.scope),
                    new.idempotency_key.as_ref().map(|key| &key.key),
                    event.receive_count,
                    event.quarantined,
                ],
            )
            .unwrap();
    }

    fn with_body(name: &str, body: &'static [u8], data: Option<serde_json::Value>) -> NewEvent {
        let mut event = sample_event(name, "migration");
        event.raw_body = Bytes::from_static(body);
        match data {
            Some(data) => {
                event.event.data = data;
                event.data_is_raw_json = false;
            }
            None => event.event.data = serde_json::from_slice(body).unwrap(),
        }
        event
    }

    #[tokio::test]
    async fn a_store_of_the_previous_schema_opens_with_every_event_and_body_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let split = br#"[{"sku": "a"}, {"sku": "b"}]"#;
        let mut quarantined = with_body("migration.json", br#"{"held": true}"#, None);
        quarantined.event.quarantined = true;
        quarantined.event.receive_count = 3;
        quarantined.idempotency_key = Some(crate::event::IdempotencyKey {
            scope: "migration".into(),
            key: "delivery-1".into(),
            window: crate::event::DEFAULT_DEDUP_WINDOW,
        });
        let events = vec![
            with_body("migration.json", br#"{"orderId": "ORD-1"}"#, None),
            with_body("migration.deleted", br#"{"gone": true}"#, None),
            with_body("migration.form", b"orderId=ORD-2&total=3", Some(serde_json::json!({"orderId": "ORD-2"}))),
            with_body("migration.split", split, Some(serde_json::json!({"sku": "a"}))),
            with_body("migration.split", split, Some(serde_json::json!({"sku": "b"}))),
            quarantined,
            with_body(
                "migration.mail",
                b"From: a@example.com\r\n\r\n\xff\xfe binary \x00 tail",
                Some(serde_json::json!({})),
            ),
        ];
        let mut paused = crate::subscriptions::from_request(
            &serde_json::json!({"url": "http://127.0.0.1:9/paused"}),
            None,
            false,
            &crate::subscriptions::TargetPolicy::new(true, ["127.0.0.0/8".parse().unwrap()]),
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
        paused.status = crate::subscriptions::Status::Paused;
        let rowids: Vec<(i64, String)> = {
            let mut connection = Connection::open(&path).unwrap();
            migrate_through(&mut connection, &MIGRATIONS[..BEFORE_BODIES]).unwrap();
            for event in &events {
                insert_in_previous_schema(&connection, event);
            }
            // A gap in the rowids, as a deleted row leaves: they must survive as they are.
            connection.execute("DELETE FROM events WHERE name = 'migration.deleted'", []).unwrap();
            connection
                .execute(
                    "INSERT INTO subscriptions (id, body, created_at_us) VALUES (?1, ?2, 0)",
                    params![paused.id, serde_json::to_string(&paused).unwrap()],
                )
                .unwrap();
            connection
                .execute(
                    "INSERT INTO deliveries (id, subscription_id, event_id, status, next_attempt_at_us, created_at_us, updated_at_us)
                     VALUES ('dlv_migration', ?1, ?2, 'pending', 0, 0, 0)",
                    params![paused.id, events[0].event.id],
                )
                .unwrap();
            let mut statement = connection.prepare("SELECT rowid, id FROM events ORDER BY rowid").unwrap();
            statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
        };

        let store = Store::Sqlite(SqliteStore::open(path.clone()).await.unwrap());
        for new in events.iter().filter(|event| event.event.name != "migration.deleted") {
            assert_eq!(store.event(&new.event.id).await.unwrap().as_ref(), Some(&new.event), "{}", new.event.name);
            let raw = store.raw_body(&new.event.id).await.unwrap().unwrap();
            assert_eq!(raw.bytes, new.raw_body.to_vec(), "{}", new.event.name);
            assert_eq!(raw.content_type.as_deref(), Some("application/json"));
        }
        assert_eq!(store.stored_body_count().await.unwrap(), 5, "the split batch's two events share their body");

        let connection = Connection::open(&path).unwrap();
        let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let mut statement = connection.prepare("SELECT seq, id FROM events ORDER BY seq").unwrap();
        let seqs: Vec<(i64, String)> =
            statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(seqs, rowids, "every event keeps its place in the commit order");
        let status: String = connection
            .query_row("SELECT status FROM subscriptions WHERE id = ?1", [&paused.id], |row| row.get(0))
            .unwrap();
        assert_eq!(status, "paused", "the status column is filled from the document");
        let due = store.claim_due_deliveries(jiff::Timestamp::now(), std::time::Duration::from_secs(60), 10).await;
        assert!(due.unwrap().is_empty(), "a paused subscription's delivery is not claimed");

        // The duplicate check still finds a migrated event by its key.
        let mut repeat = sample_event("migration.json", "migration");
        repeat.idempotency_key = events[5].idempotency_key.clone();
        let appended = store.append_events(vec![repeat, sample_event("migration.after", "migration")]).await.unwrap();
        assert_eq!((appended[0].id.as_str(), appended[0].duplicate), (events[5].event.id.as_str(), true));
        let newest: i64 = connection.query_row("SELECT MAX(seq) FROM events", [], |row| row.get(0)).unwrap();
        assert_eq!(newest, rowids.last().unwrap().0 + 1, "new events come after the migrated ones");
    }

    #[tokio::test]
    async fn a_sequence_number_is_never_given_twice_even_after_the_newest_events_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let store = Store::Sqlite(SqliteStore::open(path.clone()).await.unwrap());
        let first = sample_event("seq.first", "seq");
        store.append_events(vec![first.clone()]).await.unwrap();
        let seq_of = |id: &str| -> i64 {
            let connection = Connection::open(&path).unwrap();
            connection.query_row("SELECT seq FROM events WHERE id = ?1", [id], |row| row.get(0)).unwrap()
        };
        let erased = seq_of(&first.event.id);
        let far_future: jiff::Timestamp = "2100-01-01T00:00:00Z".parse().unwrap();
        store.prune_before(far_future, 10).await.unwrap();
        let second = sample_event("seq.second", "seq");
        store.append_events(vec![second.clone()]).await.unwrap();
        assert!(seq_of(&second.event.id) > erased, "the notice outbox's cursor never skips a new event");
    }

    #[tokio::test]
    async fn bodies_keyed_by_sha256_are_numbered_and_every_event_reads_back_with_its_sequence_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let mut connection = Connection::open(&path).unwrap();
        migrate_through(&mut connection, &MIGRATIONS[..BEFORE_BODIES_BY_ID]).unwrap();
        // The schema before: bodies keyed by SHA-256, shared by the events of any append.
        let shared = with_body("numbered.shared", br#"{"shared": true}"#, None);
        let also_shared = with_body("numbered.also", br#"{"shared": true}"#, Some(serde_json::json!({"x": 1})));
        let own = with_body("numbered.own", br#"{"own": true}"#, None);
        let erased = with_body("numbered.erased", br#"{"erased": true}"#, None);
        for new in [&shared, &also_shared, &own, &erased] {
            let sha256 = body_sha256(&new.raw_body);
            connection
                .execute(
                    "INSERT OR IGNORE INTO bodies (sha256, bytes) VALUES (?1, ?2)",
                    params![&sha256[..], new.raw_body.as_ref()],
                )
                .unwrap();
            let event = &new.event;
            let data = (!new.data_is_raw_json).then(|| serde_json::to_string(&event.data).unwrap());
            connection
                .execute(
                    "INSERT INTO events (id, name, app, hook_type, received_at_us, source, data, body_sha256)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        event.id,
                        event.name,
                        event.app,
                        event.hook_type.as_str(),
                        event.received_at.as_microsecond(),
                        serde_json::to_string(&event.source).unwrap(),
                        data,
                        &sha256[..]
                    ],
                )
                .unwrap();
        }
        // The newest event was erased: its number must never be given again.
        connection.execute("DELETE FROM events WHERE id = ?1", [&erased.event.id]).unwrap();
        let highest: i64 = connection
            .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |row| row.get(0))
            .unwrap();
        let seqs_before: Vec<(String, i64)> = connection
            .prepare("SELECT id, seq FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        drop(connection);

        let store = Store::Sqlite(SqliteStore::open(path.clone()).await.unwrap());
        for new in [&shared, &also_shared, &own] {
            assert_eq!(store.event(&new.event.id).await.unwrap().as_ref(), Some(&new.event));
            assert_eq!(store.raw_body(&new.event.id).await.unwrap().unwrap().bytes, new.raw_body.to_vec());
        }
        let connection = Connection::open(&path).unwrap();
        let seqs_after: Vec<(String, i64)> = connection
            .prepare("SELECT id, seq FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(seqs_after, seqs_before, "every event keeps its sequence number");
        let shared_rows: i64 = connection
            .query_row(
                "SELECT count(DISTINCT body_id) FROM events WHERE id IN (?1, ?2)",
                [&shared.event.id, &also_shared.event.id],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(shared_rows, 1, "events that shared a body still share one row");
        let next = sample_event("numbered.next", "migration");
        store.append_events(vec![next.clone()]).await.unwrap();
        let next_seq: i64 =
            connection.query_row("SELECT seq FROM events WHERE id = ?1", [&next.event.id], |row| row.get(0)).unwrap();
        assert!(next_seq > highest, "the erased event's number {highest} is not given again (got {next_seq})");
    }

    #[tokio::test]
    async fn keys_stored_before_they_were_hashed_still_make_a_repeat_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let mut connection = Connection::open(&path).unwrap();
        migrate_through(&mut connection, &MIGRATIONS[..BEFORE_KEYS_BY_HASH]).unwrap();
        let mut original = with_body("keyed.original", br#"{"id": "evt_1"}"#, None);
        original.idempotency_key = Some(crate::event::IdempotencyKey {
            scope: "source:stripe".into(),
            key: "evt_1".into(),
            window: std::time::Duration::from_secs(3600),
        });
        let event = &original.event;
        connection
            .execute(
                "INSERT INTO bodies (sha256, bytes) VALUES (?1, ?2)",
                params![&body_sha256(&original.raw_body)[..], original.raw_body.as_ref()],
            )
            .unwrap();
        connection
            .execute(
                "INSERT INTO events (id, name, app, hook_type, received_at_us, source, body_id,
                                     idempotency_scope, idempotency_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, last_insert_rowid(), 'source:stripe', 'evt_1')",
                params![
                    event.id,
                    event.name,
                    event.app,
                    event.hook_type.as_str(),
                    event.received_at.as_microsecond(),
                    serde_json::to_string(&event.source).unwrap(),
                ],
            )
            .unwrap();
        drop(connection);

        let store = Store::Sqlite(SqliteStore::open(path.clone()).await.unwrap());
        let mut repeat = with_body("keyed.repeat", br#"{"id": "evt_1"}"#, None);
        repeat.idempotency_key = original.idempotency_key.clone();
        let mut other = with_body("keyed.other", br#"{"id": "evt_2"}"#, None);
        other.idempotency_key =
            original.idempotency_key.clone().map(|key| crate::event::IdempotencyKey { key: "evt_2".into(), ..key });
        let appended = store.append_events(vec![repeat, other.clone()]).await.unwrap();
        assert_eq!((appended[0].id.as_str(), appended[0].duplicate), (original.event.id.as_str(), true));
        assert_eq!((appended[1].id.as_str(), appended[1].duplicate), (other.event.id.as_str(), false));
        let connection = Connection::open(&path).unwrap();
        let indexes: Vec<String> = connection
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(indexes.contains(&"events_by_idempotency_hash".to_owned()), "{indexes:?}");
        assert!(!indexes.contains(&"events_by_idempotency_key".to_owned()), "the wide index is gone: {indexes:?}");
    }

    #[test]
    fn a_database_newer_than_this_hookgate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut connection = Connection::open(dir.path().join("hookgate.db")).unwrap();
        connection.execute_batch(&format!("PRAGMA user_version = {}", MIGRATIONS.len() + 1)).unwrap();
        let refusal = migrate(&mut connection).unwrap_err().to_string();
        assert!(refusal.contains("newer than this hookgate"), "{refusal}");
    }
}
