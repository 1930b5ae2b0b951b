//! The durable store: events, hook URL tokens, API keys, installed apps, subscriptions and
//! settings.
//!
//! [`Store`] is the one interface the rest of hookgate uses; it is a closed enum of backends
//! picked once from configuration: SQLite embedded in the process (`sqlite`), or PostgreSQL
//! shared by several nodes (`postgres`). Every backend must pass the shared suite in
//! `conformance`. Only this module speaks SQL. A write method
//! returns only after its transaction has committed: callers reply to clients after that.
//! Whether an event is a duplicate (its idempotency key seen within its window) is decided in
//! the append's own transaction (`sqlite::events`), never by a read before it.
//!
//! Raw bodies are stored once per append, however many of its events share one (PostgreSQL keys
//! them by their SHA-256 and so also keeps equal bodies of separate appends once; SQLite numbers
//! them in order, so that its b-trees grow at the right edge). Old
//! events leave by retention (`prune_before`, driven by `retention`) and a resource's events by
//! erasure (`purge_resource`), each with what it triggered and its body when no event is left
//! that references it.

pub mod copy;
mod postgres;
mod rate_buckets;
pub mod retention;
pub mod sealed;
mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

use crate::event::{Event, HookType, NewEvent, StoredEvent};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Why a store operation failed. Cloneable because one failed group commit answers many
/// waiting writers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store is not available: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    /// The disk under the store has no room for the write (SQLite's `SQLITE_FULL`): nothing of
    /// it was kept, and it can succeed once there is room again.
    #[error("the store's disk is full: {0}")]
    Full(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(error.to_string()),
            _ => StoreError::Database(error.to_string()),
        }
    }
}

/// Which backend to open, decided once from configuration.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite { path: PathBuf },
    Postgres { url: String },
}

/// Something another node changed that this one must act on (PostgreSQL announces them; an
/// embedded store has no other node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreChange {
    /// Deliveries were written or came due: wake the delivery worker.
    Deliveries,
    /// Events to publish to NATS were written: wake the publisher.
    Publications,
    /// Subscriptions changed: rebuild the routing table.
    Subscriptions,
    /// Installed apps changed: reload the catalog.
    Apps,
}

impl StoreChange {
    pub const ALL: [StoreChange; 4] =
        [StoreChange::Deliveries, StoreChange::Publications, StoreChange::Subscriptions, StoreChange::Apps];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreChange::Deliveries => "deliveries",
            StoreChange::Publications => "publications",
            StoreChange::Subscriptions => "subscriptions",
            StoreChange::Apps => "apps",
        }
    }

    pub fn parse(text: &str) -> Option<StoreChange> {
        StoreChange::ALL.into_iter().find(|change| change.as_str() == text)
    }
}

/// The outcome of appending one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The id of the stored event: the new one, or for a duplicate the original's.
    pub id: String,
    /// The stored event's name: the new one's, or for a duplicate the original's (which a
    /// repeated request may name otherwise).
    pub name: String,
    /// True when the idempotency key had been seen: nothing new was stored.
    pub duplicate: bool,
}

/// A notice mail waiting in the outbox: the hookgate events it tells of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeMail {
    pub id: i64,
    /// The events' name, `hookgate.…`.
    pub kind: String,
    /// What they are about (a subscription id, a source, a hook).
    pub subject: String,
    pub event_ids: Vec<String>,
    /// Attempts so far.
    pub attempts: u32,
}

/// What one round of retention deleted (`Store::prune_before`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCount {
    pub events: u64,
    /// The deleted events' deliveries, and finished deliveries older than the cutoff.
    pub deliveries: u64,
    /// Raw bodies no event references any more.
    pub bodies: u64,
}

impl PruneCount {
    /// True when nothing was left to delete.
    pub fn is_empty(&self) -> bool {
        self.events == 0 && self.deliveries == 0 && self.bodies == 0
    }
}

/// What an erasure deleted (`Store::purge_resource`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PurgeCount {
    pub events: u64,
    /// The erased events' deliveries (their attempts and publications go too).
    pub deliveries: u64,
    /// Raw bodies no event references any more.
    pub bodies: u64,
}

/// Filters and cursor for listing events: newest first, or oldest first after `after_id`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub name: Option<String>,
    pub app: Option<String>,
    /// Inclusive lower bound on `receivedAt`.
    pub since: Option<Timestamp>,
    /// Exclusive upper bound on `receivedAt`.
    pub until: Option<Timestamp>,
    /// Only events older than this id (the previous page's `next_cursor`).
    pub before_id: Option<String>,
    /// Only events with an id greater than this one, returned oldest first (ids sort by time):
    /// what a stream resuming after the last event it sent asks for.
    pub after_id: Option<String>,
    /// Only quarantined events (`Some(true)`) or only the others (`Some(false)`).
    pub quarantined: Option<bool>,
    /// At most this many events.
    pub limit: usize,
    /// A bound on the page's stored bytes as well: an event is added while the events before it
    /// hold fewer than this many bytes of data and source (so a page has at least one event,
    /// and passes the bound by at most its last). `None`: only `limit` bounds the page.
    pub max_bytes: Option<u64>,
}

/// How an event counts against [`EventQuery::max_bytes`]: its stored data (or the body that is
/// its data) and its source.
pub fn stored_event_bytes(data: usize, source: usize) -> u64 {
    (data + source) as u64
}

/// An event's columns as both backends read them, borrowed from the row: made into an
/// [`Event`] (its JSON parsed, for the API and triggers) or a [`StoredEvent`] (its JSON kept as
/// text, for deliveries) here, so that the two backends and the two shapes read them alike.
pub(crate) struct StoredRow<'r> {
    pub id: String,
    pub name: String,
    pub app: String,
    pub hook_type: &'r str,
    pub received_at_us: i64,
    pub source: &'r [u8],
    /// `None` when the data is the raw body parsed as JSON: then `body` holds it.
    pub data: Option<&'r [u8]>,
    pub body: Option<&'r [u8]>,
    pub receive_count: u32,
    pub quarantined: bool,
}

impl StoredRow<'_> {
    /// The hook type, the time received and the data's JSON text, checked as far as columns go.
    fn checked(&self) -> Result<(HookType, Timestamp, &[u8]), StoreError> {
        let hook_type = HookType::parse(self.hook_type)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown hook type {:?}", self.hook_type)))?;
        let received_at =
            Timestamp::from_microsecond(self.received_at_us).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let data =
            self.data.or(self.body).ok_or_else(|| StoreError::Corrupt(format!("event {} has no data", self.id)))?;
        Ok((hook_type, received_at, data))
    }

    pub(crate) fn into_event(self) -> Result<Event, StoreError> {
        let (hook_type, received_at, data) = self.checked()?;
        let corrupt = |error: serde_json::Error| StoreError::Corrupt(error.to_string());
        Ok(Event {
            data: serde_json::from_slice(data).map_err(corrupt)?,
            source: serde_json::from_slice(self.source).map_err(corrupt)?,
            hook_type,
            received_at,
            id: self.id,
            name: self.name,
            app: self.app,
            receive_count: self.receive_count,
            quarantined: self.quarantined,
        })
    }

    pub(crate) fn into_stored(self) -> Result<StoredEvent, StoreError> {
        let (hook_type, received_at, data) = self.checked()?;
        Ok(StoredEvent {
            data: raw_json(&self.id, "data", data)?,
            source: raw_json(&self.id, "source", self.source)?,
            hook_type,
            received_at,
            id: self.id,
            name: self.name,
            app: self.app,
            receive_count: self.receive_count,
            quarantined: self.quarantined,
        })
    }
}

/// A stored JSON column of event `id` (`what`: its source or data) as a raw value: checked to be
/// one JSON value, the whitespace around it left out, but not parsed into a tree.
fn raw_json(id: &str, what: &str, text: &[u8]) -> Result<Box<serde_json::value::RawValue>, StoreError> {
    let corrupt = |error: String| StoreError::Corrupt(format!("event {id}'s {what}: {error}"));
    let text = std::str::from_utf8(text).map_err(|error| corrupt(error.to_string()))?;
    serde_json::from_str::<&serde_json::value::RawValue>(text)
        .map(serde_json::value::RawValue::to_owned)
        .map_err(|error| corrupt(error.to_string()))
}

/// Decides, row by row in the order a listing reads them, where a page ends: by count and by
/// stored bytes. Both backends list through it, so that they cut pages at the same event.
#[derive(Debug)]
pub(crate) struct PageCut {
    limit: usize,
    max_bytes: u64,
    taken: usize,
    bytes: u64,
}

impl PageCut {
    pub(crate) fn new(query: &EventQuery) -> PageCut {
        PageCut { limit: query.limit.max(1), max_bytes: query.max_bytes.unwrap_or(u64::MAX), taken: 0, bytes: 0 }
    }

    /// Whether the next row, of `bytes` stored bytes, belongs to the page; once it does not,
    /// the row only shows that more events match.
    pub(crate) fn takes(&mut self, bytes: u64) -> bool {
        if self.taken >= self.limit || self.bytes >= self.max_bytes {
            return false;
        }
        self.taken += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        true
    }

    /// The SQL `LIMIT`: one row more than a full page, to know whether more match.
    pub(crate) fn rows_to_read(&self) -> usize {
        self.limit + 1
    }
}

/// One page of events, newest first (oldest first for a query by `after_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Present when more events match: the last event's id, to pass as `before_id` (as
    /// `after_id` for a query by `after_id`) to get the next page.
    pub next_cursor: Option<String>,
}

/// The exact bytes an event was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct RawBody {
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// An API key as stored: never the key itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// What the key is for: sending to web hooks, or the management API.
    pub purpose: KeyPurpose,
    /// The first characters of the key, enough for a person to recognise it.
    pub prefix: String,
    #[serde(skip)]
    pub sha256: String,
    /// Ingest keys: apps this key may send to; `None` means every app.
    pub apps: Option<Vec<String>>,
    /// Management keys: the event names and patterns (`stripe.*`) whose subscriptions and
    /// events the key may manage; `None` means every event.
    pub scopes: Option<Vec<String>>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// The two kinds of issued key. They never stand in for each other: a key handed to a platform
/// to send web hooks must not manage subscriptions, and a management key does not send events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPurpose {
    /// Sends events to `web` hooks (`hgk_…`).
    Ingest,
    /// Calls the management API within its scopes (`hgm_…`).
    Management,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Ingest => "ingest",
            KeyPurpose::Management => "management",
        }
    }
}

/// An app definition installed through the management API.
#[derive(Debug, Clone, PartialEq)]
pub struct InstalledApp {
    pub app: String,
    /// The definition exactly as submitted (JSON text).
    pub definition: String,
    pub installed_at: Timestamp,
}

/// A delivery a worker has claimed: it is not claimed again until the lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub id: String,
    pub subscription_id: String,
    pub event_id: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When it came due (before the claim pushed it out by the lease): the attempt records it, so
    /// the history shows how long a delivery waited for its rate limit or a free worker.
    pub due_at: Timestamp,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(Timestamp),
    Failed,
    /// The subscription's transformation returned `null`: nothing is sent, ever.
    Dropped,
}

impl NextStep {
    /// The delivery's status after this step: `pending`, `delivered`, `failed` or `dropped`.
    pub fn status(self) -> &'static str {
        match self {
            NextStep::Delivered => "delivered",
            NextStep::RetryAt(_) => "pending",
            NextStep::Failed => "failed",
            NextStep::Dropped => "dropped",
        }
    }
}

/// One attempt, to record with the delivery's next step.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: Timestamp,
    pub status_code: Option<u16>,
    pub latency: std::time::Duration,
    /// The start of the response body, bounded.
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    /// The version of the subscription's transformation that ran for this attempt, if any.
    pub transform_version: Option<String>,
    pub next: NextStep,
    /// When the delivery was due ([`DueDelivery::due_at`]); `at` minus this is how long it waited.
    pub due_at: Option<Timestamp>,
}

/// An attempt as the history shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub attempt: u32,
    pub at: Timestamp,
    pub status_code: Option<u16>,
    pub latency_ms: f64,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    /// The version of the subscription's transformation that ran, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transform_version: Option<String>,
    /// When the attempt was due: it went out at `at`, later by a rate limit or a busy worker.
    pub due_at: Option<Timestamp>,
}

/// A delivery with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: String,
    pub subscription_id: String,
    pub event_id: String,
    /// `pending`, `delivered`, `failed` or `dropped` (by the subscription's transformation).
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The key its subscription orders deliveries by, when it does and the event has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// A pending ordered delivery waits for this earlier pending delivery of its key (the oldest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_behind: Option<String>,
    #[serde(rename = "attemptHistory")]
    pub history: Vec<Attempt>,
}

/// Filters and page of a subscription's delivery history, newest first.
#[derive(Debug, Clone)]
pub struct DeliveryQuery {
    pub subscription_id: String,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub status: Option<String>,
    /// From 1.
    pub page: usize,
    pub per_page: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    pub total: u64,
}

/// Which deliveries, across subscriptions: what the dead letter listing and a bulk retry select.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySelection {
    /// Only these subscriptions' deliveries; every subscription's when `None`.
    pub subscription_ids: Option<Vec<String>>,
    /// `pending`, `delivered` or `failed`; any when `None`.
    pub status: Option<String>,
    /// Inclusive lower bound on when the delivery was created.
    pub from: Option<Timestamp>,
    /// Exclusive upper bound on when the delivery was created.
    pub to: Option<Timestamp>,
}

/// A page of deliveries across subscriptions, newest first (`Store::list_deliveries`).
#[derive(Debug, Clone)]
pub struct DeliveryListQuery {
    pub selection: DeliverySelection,
    /// Only deliveries older than this id (the previous page's `next_cursor`).
    pub before_id: Option<String>,
    pub limit: usize,
}

/// A delivery with only its last attempt: what the dead letter listing shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySummary {
    pub id: String,
    pub subscription_id: String,
    pub event_id: String,
    pub status: String,
    pub attempts: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The last attempt, with its status code and error; `None` before the first.
    pub last_attempt: Option<Attempt>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySummaryPage {
    pub deliveries: Vec<DeliverySummary>,
    /// Present when more match: pass it as `before_id` for the next page.
    pub next_cursor: Option<String>,
}

/// A bulk retry: every delivery its selection matched when it was created (pending ones are
/// queued already and left alone) is made due again, a batch at a time, by whichever node's
/// worker takes the next batch. Stored, so it goes on after a restart.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryJob {
    /// `job_` and a UUIDv7.
    pub id: String,
    pub selection: DeliverySelection,
    /// `running` until every matched delivery was taken, then `done`.
    pub state: String,
    /// Deliveries the selection matched at creation.
    pub total: u64,
    /// Made due again.
    pub queued: u64,
    /// Matched at creation but not when their turn came (delivered or retried meanwhile, or
    /// deleted): counted when the job is done.
    pub skipped: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// The store, one backend chosen at start.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Store {
    /// Opens (creating and migrating if needed) the configured backend.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        match config {
            StoreConfig::Sqlite { path } => Ok(Store::Sqlite(SqliteStore::open(path.clone()).await?)),
            StoreConfig::Postgres { url } => Ok(Store::Postgres(PostgresStore::open(url).await?)),
        }
    }

    /// Appends events in one transaction and returns after it has committed. Events whose
    /// idempotency key was already stored are not stored again; their original's receive count
    /// goes up and its id is returned.
    pub async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        match self {
            Store::Sqlite(store) => store.append_events(events).await,
            Store::Postgres(store) => store.append_events(events).await,
        }
    }

    pub async fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
        match self {
            Store::Sqlite(store) => store.event(id).await,
            Store::Postgres(store) => store.event(id).await,
        }
    }

    /// The events with these ids that exist, in no particular order: one read for a batch.
    pub async fn events(&self, ids: Vec<String>) -> Result<Vec<Event>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Sqlite(store) => store.events(ids).await,
            Store::Postgres(store) => store.events(ids).await,
        }
    }

    /// The events with these ids that exist, as deliveries send them, in no particular order:
    /// one read for a batch, the source and the data kept as stored JSON text.
    pub async fn stored_events(&self, ids: Vec<String>) -> Result<Vec<StoredEvent>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Sqlite(store) => store.stored_events(ids).await,
            Store::Postgres(store) => store.stored_events(ids).await,
        }
    }

    pub async fn raw_body(&self, id: &str) -> Result<Option<RawBody>, StoreError> {
        match self {
            Store::Sqlite(store) => store.raw_body(id).await,
            Store::Postgres(store) => store.raw_body(id).await,
        }
    }

    pub async fn list_events(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        match self {
            Store::Sqlite(store) => store.list_events(query).await,
            Store::Postgres(store) => store.list_events(query).await,
        }
    }

    /// How many events of each name were received at or after `since`; names with none are
    /// left out.
    pub async fn count_events_by_name(&self, since: Timestamp) -> Result<HashMap<String, u64>, StoreError> {
        match self {
            Store::Sqlite(store) => store.count_events_by_name(since).await,
            Store::Postgres(store) => store.count_events_by_name(since).await,
        }
    }

    /// Returns each hook's URL token, creating tokens for hooks seen for the first time.
    /// A token never changes once created, so hook URLs survive restarts.
    pub async fn hook_tokens(&self, event_names: Vec<String>) -> Result<HashMap<String, String>, StoreError> {
        match self {
            Store::Sqlite(store) => store.hook_tokens(event_names).await,
            Store::Postgres(store) => store.hook_tokens(event_names).await,
        }
    }

    pub async fn insert_api_key(&self, key: ApiKeyRecord) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.insert_api_key(key).await,
            Store::Postgres(store) => store.insert_api_key(key).await,
        }
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        match self {
            Store::Sqlite(store) => store.api_keys().await,
            Store::Postgres(store) => store.api_keys().await,
        }
    }

    /// Finds a key that has not been revoked by the SHA-256 of its text.
    pub async fn active_api_key_by_hash(&self, sha256: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        match self {
            Store::Sqlite(store) => store.active_api_key_by_hash(sha256.to_owned()).await,
            Store::Postgres(store) => store.active_api_key_by_hash(sha256.to_owned()).await,
        }
    }

    /// Revokes a key; false when no active key has this id.
    pub async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(store) => store.revoke_api_key(id.to_owned(), at).await,
            Store::Postgres(store) => store.revoke_api_key(id.to_owned(), at).await,
        }
    }

    /// Installs or replaces an app definition.
    pub async fn put_app(&self, app: InstalledApp) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.put_app(app).await,
            Store::Postgres(store) => store.put_app(app).await,
        }
    }

    pub async fn apps(&self) -> Result<Vec<InstalledApp>, StoreError> {
        match self {
            Store::Sqlite(store) => store.apps().await,
            Store::Postgres(store) => store.apps().await,
        }
    }

    /// Removes an installed app; false when it was not installed.
    pub async fn delete_app(&self, app: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(store) => store.delete_app(app.to_owned()).await,
            Store::Postgres(store) => store.delete_app(app.to_owned()).await,
        }
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Sqlite(store) => store.setting(key.to_owned()).await,
            Store::Postgres(store) => store.setting(key.to_owned()).await,
        }
    }

    /// Stores a setting unless one exists; returns the value now stored.
    pub async fn put_setting_if_absent(&self, key: &str, value: &str) -> Result<String, StoreError> {
        match self {
            Store::Sqlite(store) => store.put_setting_if_absent(key.to_owned(), value.to_owned()).await,
            Store::Postgres(store) => store.put_setting_if_absent(key.to_owned(), value.to_owned()).await,
        }
    }

    /// Stores a setting, replacing any value it had.
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.put_setting(key.to_owned(), value.to_owned()).await,
            Store::Postgres(store) => store.put_setting(key.to_owned(), value.to_owned()).await,
        }
    }

    /// Creates or replaces a subscription.
    pub async fn put_subscription(&self, subscription: crate::subscriptions::Subscription) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.put_subscription(subscription).await,
            Store::Postgres(store) => store.put_subscription(subscription).await,
        }
    }

    /// Changes a stored subscription in one step; disabling it fails its pending deliveries, so that no other write lands between the read
    /// and the write (the delivery worker's health marks and an API edit cannot undo each
    /// other). `None` when there is no such subscription.
    pub async fn update_subscription(
        &self,
        id: &str,
        change: impl FnOnce(&mut crate::subscriptions::Subscription) + Send + 'static,
    ) -> Result<Option<crate::subscriptions::Subscription>, StoreError> {
        match self {
            Store::Sqlite(store) => store.update_subscription(id.to_owned(), change).await,
            Store::Postgres(store) => store.update_subscription(id.to_owned(), change).await,
        }
    }

    pub async fn subscription(&self, id: &str) -> Result<Option<crate::subscriptions::Subscription>, StoreError> {
        match self {
            Store::Sqlite(store) => store.subscription(id.to_owned()).await,
            Store::Postgres(store) => store.subscription(id.to_owned()).await,
        }
    }

    /// Every subscription, oldest first.
    pub async fn subscriptions(&self) -> Result<Vec<crate::subscriptions::Subscription>, StoreError> {
        match self {
            Store::Sqlite(store) => store.subscriptions().await,
            Store::Postgres(store) => store.subscriptions().await,
        }
    }

    /// Seals subscription secrets with `keys` from now on (see `sealed`); the first keys
    /// installed stay. Until then secrets are stored as they are given.
    pub fn install_secrets_keys(&self, keys: std::sync::Arc<sealed::SecretsKeys>) {
        match self {
            Store::Sqlite(store) => store.install_secrets_keys(keys),
            Store::Postgres(store) => store.install_secrets_keys(keys),
        }
    }

    /// The keys installed with [`Store::install_secrets_keys`].
    pub fn secrets_keys(&self) -> Option<std::sync::Arc<sealed::SecretsKeys>> {
        match self {
            Store::Sqlite(store) => store.secrets_keys(),
            Store::Postgres(store) => store.secrets_keys(),
        }
    }

    /// Every subscription's id and stored document as it is at rest (secrets as stored), oldest
    /// first: for sealing at start, and for proving that no plaintext secret is kept.
    pub async fn subscription_bodies(&self) -> Result<Vec<(String, String)>, StoreError> {
        match self {
            Store::Sqlite(store) => store.subscription_bodies().await,
            Store::Postgres(store) => store.subscription_bodies().await,
        }
    }

    /// Removes a subscription; false when there was none with this id.
    pub async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(store) => store.delete_subscription(id.to_owned()).await,
            Store::Postgres(store) => store.delete_subscription(id.to_owned()).await,
        }
    }

    /// Claims up to `limit` pending deliveries that are due, of subscriptions not paused,
    /// pushing each out by `lease` so that no other worker takes it meanwhile. (Disabling a
    /// subscription fails its pending deliveries; one that slipped in after is claimed for the
    /// worker to fail.) A subscription with a rate limit gives at most the whole tokens its
    /// bucket holds at `now`, and the claim takes them, in the same transaction: the limit holds
    /// across workers and nodes, and what is over it stays due for a later claim.
    pub async fn claim_due_deliveries(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        match self {
            Store::Sqlite(store) => store.claim_due_deliveries(now, lease, limit).await,
            Store::Postgres(store) => store.claim_due_deliveries(now, lease, limit).await,
        }
    }

    /// Records attempts and each delivery's next step, in one transaction.
    pub async fn record_attempts(&self, records: Vec<AttemptRecord>) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.record_attempts(records).await,
            Store::Postgres(store) => store.record_attempts(records).await,
        }
    }

    pub async fn deliveries(&self, query: DeliveryQuery) -> Result<DeliveryPage, StoreError> {
        match self {
            Store::Sqlite(store) => store.deliveries(query).await,
            Store::Postgres(store) => store.deliveries(query).await,
        }
    }

    /// Deliveries across subscriptions matching `query`, newest first, each with its last
    /// attempt: the dead letters when the status is `failed`.
    pub async fn list_deliveries(&self, query: DeliveryListQuery) -> Result<DeliverySummaryPage, StoreError> {
        match self {
            Store::Sqlite(store) => store.list_deliveries(query).await,
            Store::Postgres(store) => store.list_deliveries(query).await,
        }
    }

    /// Stores a bulk retry of every delivery `selection` matches now (but the pending ones);
    /// workers then take it a batch at a time (`advance_retry_job`).
    pub async fn create_retry_job(&self, selection: DeliverySelection, now: Timestamp) -> Result<RetryJob, StoreError> {
        match self {
            Store::Sqlite(store) => store.create_retry_job(selection, now).await,
            Store::Postgres(store) => store.create_retry_job(selection, now).await,
        }
    }

    pub async fn retry_job(&self, id: &str) -> Result<Option<RetryJob>, StoreError> {
        match self {
            Store::Sqlite(store) => store.retry_job(id.to_owned()).await,
            Store::Postgres(store) => store.retry_job(id.to_owned()).await,
        }
    }

    /// Takes the next batch (at most `batch` deliveries) of the oldest running bulk retry no
    /// other worker is working on, makes them due at `now` (parked if their subscription is
    /// paused) and moves the job on, in one transaction. Returns the job as it is after, or
    /// `None` when there was nothing to do.
    pub async fn advance_retry_job(&self, now: Timestamp, batch: usize) -> Result<Option<RetryJob>, StoreError> {
        match self {
            Store::Sqlite(store) => store.advance_retry_job(now, batch).await,
            Store::Postgres(store) => store.advance_retry_job(now, batch).await,
        }
    }

    /// Claims up to `limit` events due for publishing to NATS, oldest first, pushing each out by
    /// `lease`: `(event id, subject)`.
    pub async fn claim_publications(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        match self {
            Store::Sqlite(store) => store.claim_publications(now, lease, limit).await,
            Store::Postgres(store) => store.claim_publications(now, lease, limit).await,
        }
    }

    /// Forgets the published events and makes the others due again at `retry_at`.
    pub async fn finish_publications(
        &self,
        published: Vec<String>,
        retry: Vec<String>,
        retry_at: Timestamp,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.finish_publications(published, retry, retry_at).await,
            Store::Postgres(store) => store.finish_publications(published, retry, retry_at).await,
        }
    }

    /// New deliveries of a stored event (a replay), due now; returns their ids.
    pub async fn enqueue_deliveries(
        &self,
        event_id: &str,
        subscription_ids: Vec<String>,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Sqlite(store) => store.enqueue_deliveries(event_id.to_owned(), subscription_ids, now).await,
            Store::Postgres(store) => store.enqueue_deliveries(event_id.to_owned(), subscription_ids, now).await,
        }
    }

    /// Makes a delivery due now (a manual retry); false when the subscription has no such delivery.
    pub async fn retry_delivery(
        &self,
        subscription_id: &str,
        delivery_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(store) => store.retry_delivery(subscription_id.to_owned(), delivery_id.to_owned(), now).await,
            Store::Postgres(store) => {
                store.retry_delivery(subscription_id.to_owned(), delivery_id.to_owned(), now).await
            }
        }
    }

    /// Queues mails for the hookgate events named `names` committed since the last call (see
    /// `sqlite::notice_mails`): each joins the unsent mail of its kind and subject, or starts one,
    /// due at once or `coalesce` after the last one sent. The first call only sets the cursor.
    pub async fn queue_notice_mails(
        &self,
        names: Vec<String>,
        coalesce: std::time::Duration,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(store) => store.queue_notice_mails(names, coalesce, now).await,
            Store::Postgres(store) => store.queue_notice_mails(names, coalesce, now).await,
        }
    }

    /// Unsent notice mails due at `now`, oldest first.
    pub async fn due_notice_mails(&self, now: Timestamp, limit: usize) -> Result<Vec<NoticeMail>, StoreError> {
        match self {
            Store::Sqlite(store) => store.due_notice_mails(now, limit).await,
            Store::Postgres(store) => store.due_notice_mails(now, limit).await,
        }
    }

    /// Records a notice mail sent, or failed and due again at the given time.
    pub async fn finish_notice_mail(
        &self,
        id: i64,
        outcome: Result<Timestamp, (String, Timestamp)>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.finish_notice_mail(id, outcome).await,
            Store::Postgres(store) => store.finish_notice_mail(id, outcome).await,
        }
    }

    /// Whether other nodes may write to this store at the same time (PostgreSQL).
    pub fn shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Ends the store's use by this process, at shutdown: what is queued is committed (SQLite
    /// also copies its WAL into the database file) and later calls are refused.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(store) => store.close().await,
            Store::Postgres(store) => store.close(),
        }
    }

    /// Changes other nodes made, to act on here; `None` for a store no other node shares.
    pub fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<StoreChange>> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(store) => Some(store.changes()),
        }
    }

    /// Deletes, in one short transaction, at most `batch` events received before `cutoff` (with
    /// their deliveries, attempts and publications, and their raw bodies no event references any
    /// more) and at most `batch` finished deliveries (delivered or failed) last changed before
    /// `cutoff`, with their attempts. Call it again until it returns an empty count.
    pub async fn prune_before(&self, cutoff: Timestamp, batch: usize) -> Result<PruneCount, StoreError> {
        match self {
            Store::Sqlite(store) => store.prune_before(cutoff, batch).await,
            Store::Postgres(store) => store.prune_before(cutoff, batch).await,
        }
    }

    /// Erases every event whose data names `resource_id` by the rule routes use
    /// ([`crate::subscriptions::is_about`]: a top-level `resource_id`, `resourceId` or `id` equal
    /// to it, as a string or a number), with its deliveries, attempts and publication, and the
    /// raw bodies no remaining event references. Works in batches; returns what it deleted.
    pub async fn purge_resource(&self, resource_id: &str) -> Result<PurgeCount, StoreError> {
        match self {
            Store::Sqlite(store) => store.purge_resource(resource_id.to_owned()).await,
            Store::Postgres(store) => store.purge_resource(resource_id.to_owned()).await,
        }
    }

    /// How many raw bodies are stored: each once per append, however many events share it.
    #[cfg(test)]
    pub(crate) async fn stored_body_count(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(store) => store.stored_body_count().await,
            Store::Postgres(store) => store.stored_body_count().await,
        }
    }

    /// Checks that the store answers reads and writes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => store.ping().await,
            Store::Postgres(store) => store.ping().await,
        }
    }
}
