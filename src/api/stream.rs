//! `GET /api/events/stream`: the event log as Server-Sent Events, oldest first, as it grows.
//!
//! Each message is one event: `id:` its id, `event: event`, and as `data:` the event as
//! `/api/events/{id}` shows it, or without its `data` (and with `"dataOmitted": true`) when
//! the message would be over [`MAX_MESSAGE_BYTES`]. A client that reconnects with
//! `Last-Event-ID` (a browser's `EventSource` does so by itself) gets every event after that
//! one, and none twice; `?after=<event id>` does the same for a first connection. Without
//! either the stream starts now, with the events not yet settled (see below) when it opens. Filters: `name`, `app` and `type` (the hook type). A scoped
//! management key streams only the events its scopes cover, as `/api/events` lists them, and is
//! refused a `name` outside them.
//!
//! Ids are minted before the commit, so an event can be stored after one with a greater id.
//! The stream therefore sends an event only once every event with a smaller id has had its
//! chance to commit: below the oldest id this process is committing now
//! (`Committer::oldest_in_flight`), and older than [`SETTLE`] on an embedded store, or
//! [`SHARED_SETTLE`] on a store other nodes write to (longer than the longest an append may take
//! there, `CONNECTION_WAIT`, with room for the nodes' clocks to differ). Its cursor never passes
//! an event still on its way, which is what makes a resume lose nothing; the price is that an
//! event shows up that long after it was received. Only settled events are read. New events are
//! noticed by the committer's word after each local commit (`Committer::commits`) and by a read
//! at least every [`POLL`], but a stream reads at most every [`MIN_READ_GAP`], however busy
//! ingest is.
//!
//! Bounded: at most [`EventStreams`]' limit of streams at once (503 beyond it), events read
//! [`BATCH`] at a time, a keep-alive comment every [`KEEP_ALIVE`], a client that takes nothing
//! for [`SEND_TIMEOUT`] is dropped, and every stream ends at shutdown and after
//! [`MAX_LIFETIME`]: the client reconnects with its `Last-Event-ID`, loses nothing, and its
//! credential is checked again (a revoked key or an ended console session gets no more events).
//! A failed read of the store ends the stream too, and the client resumes the same way.

use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as Message, Sse};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::{Access, ApiError, ApiState};
use crate::event::{Event, HookType};
use crate::pipeline::Committer;
use crate::store::EventQuery;

/// How long an event waits before it is sent, for events with smaller ids to commit.
pub const SETTLE: Duration = Duration::from_millis(750);
/// The same on a store that other nodes write to (PostgreSQL).
pub const SHARED_SETTLE: Duration = Duration::from_secs(7);
/// The shortest time between two reads of the store by one stream.
pub const MIN_READ_GAP: Duration = Duration::from_millis(250);
/// A stream ends after this long; the client resumes with `Last-Event-ID`.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// How often the store is read when no local commit says there is something new.
pub const POLL: Duration = Duration::from_secs(2);
/// Events read at a time.
pub const BATCH: usize = 100;
/// A comment is sent this often, so that proxies keep the connection and dead clients show.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A client that takes no message for this long is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// A message's largest size: an event bigger than this is sent without its `data`.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Streams open at once, across every client.
pub const MAX_STREAMS: usize = 64;
/// Streams open at once with one credential, so that one client cannot take every slot.
pub const MAX_STREAMS_PER_CREDENTIAL: usize = 8;
/// What clients are told to wait before reconnecting.
const RETRY: Duration = Duration::from_secs(2);
/// Messages waiting for a slow client.
const BUFFERED_MESSAGES: usize = 16;

/// The open streams: how many may be open at once, and the signal that ends them all.
pub struct EventStreams {
    permits: Arc<Semaphore>,
    closing: watch::Sender<bool>,
    /// Streams open per credential (by the SHA-256 of the key or session credential).
    per_credential: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

/// One stream's place in its credential's count; giving it back when the stream ends.
struct CredentialSlot {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    credential: String,
}

impl Drop for CredentialSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock()
            && let Some(count) = counts.get_mut(&self.credential)
        {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.credential);
            }
        }
    }
}

impl EventStreams {
    /// At most `max` streams at once.
    pub fn new(max: usize) -> EventStreams {
        EventStreams {
            permits: Arc::new(Semaphore::new(max)),
            closing: watch::Sender::new(false),
            per_credential: Arc::default(),
        }
    }

    /// Ends every stream, and refuses new ones (at shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.permits.close();
    }
}

/// What a stream sends: the filters, and where it starts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParameters {
    pub name: Option<String>,
    pub app: Option<String>,
    /// The hook type: `form`, `web`, `email` or `internal` (hookgate's own events).
    #[serde(rename = "type")]
    pub hook_type: Option<String>,
    /// Start after this event (a first connection's `Last-Event-ID`).
    pub after: Option<String>,
}

/// `GET /api/events/stream`.
pub async fn stream(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    parameters: Result<Query<StreamParameters>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(parameters) = parameters.map_err(|error| ApiError::BadRequest(error.body_text()))?;
    let last_event_id = headers.get("last-event-id").and_then(|value| value.to_str().ok()).map(str::trim);
    let credential = crate::keys::presented_key(&headers).map(crate::secrets::sha256_hex).unwrap_or_default();
    open(state, access, &credential, parameters, last_event_id).await
}

/// Opens a stream of the events `access` may read that `parameters` ask for, after
/// `last_event_id` (a reconnecting client's) or `parameters.after`, else from now.
/// `credential` (the SHA-256 of the key it was opened with) counts it against
/// [`MAX_STREAMS_PER_CREDENTIAL`].
pub async fn open(
    state: Arc<ApiState>,
    access: Access,
    credential: &str,
    parameters: StreamParameters,
    last_event_id: Option<&str>,
) -> Result<Response, ApiError> {
    if parameters.name.as_deref().is_some_and(|name| !access.covers_event(name)) {
        return Err(ApiError::Forbidden("this key's scopes do not cover the name asked for".into()));
    }
    let hook_type = parameters
        .hook_type
        .as_deref()
        .map(|text| {
            HookType::parse(text).ok_or_else(|| {
                ApiError::BadRequest(format!("type: expected form, web, email or internal, not {text:?}"))
            })
        })
        .transpose()?;
    let resume = last_event_id.filter(|id| !id.is_empty()).or(parameters.after.as_deref());
    let cursor = match resume {
        Some(id) if is_event_id(id) => id.to_owned(),
        Some(id) => {
            return Err(ApiError::BadRequest(format!(
                "Last-Event-ID and after take an event id (evt_ and 32 hex digits), not {id:?}"
            )));
        }
        None => start_cursor(&state.committer, state.store.shared(), Timestamp::now()),
    };
    let slot = {
        let counts = state.streams.per_credential.clone();
        let mut open = counts.lock().map_err(|_| ApiError::TooManyStreams("the stream count is unavailable".into()))?;
        let count = open.entry(credential.to_owned()).or_default();
        if *count >= MAX_STREAMS_PER_CREDENTIAL {
            return Err(ApiError::TooManyStreams(format!(
                "this credential has {MAX_STREAMS_PER_CREDENTIAL} event streams open already; close one, or retry in a few seconds"
            )));
        }
        *count += 1;
        drop(open);
        CredentialSlot { counts, credential: credential.to_owned() }
    };
    let permit = state
        .streams
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyStreams("too many event streams are open; retry in a few seconds".into()))?;
    let follow = Follow {
        filter: Filter { name: parameters.name, app: parameters.app, hook_type, access },
        cursor,
        closing: state.streams.closing.subscribe(),
        state,
    };
    let (sender, receiver) = mpsc::channel(BUFFERED_MESSAGES);
    tokio::spawn(async move {
        follow.run(sender, permit).await;
        drop(slot);
    });
    let messages = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|message| (Ok::<_, Infallible>(message), receiver))
    });
    let mut response = Sse::new(messages).into_response();
    // Proxies that buffer responses (nginx) would hold the events back.
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Whether `id` has the shape of an event id: `evt_` and 32 lower-case hex digits.
fn is_event_id(id: &str) -> bool {
    id.strip_prefix("evt_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The smallest id an event minted at `millisecond` (since the Unix epoch) can have: a
/// UUIDv7's first 48 bits are its time, and its version digit after them is never 0.
fn first_id_of(millisecond: i64) -> String {
    format!("evt_{:012x}{}", millisecond.max(0), "0".repeat(20))
}

/// Every event with an id below the returned one is stored, or will never be: older than
/// [`SETTLE`], and older than what this process is committing now.
fn settled_below(committer: &Committer, shared: bool, now: Timestamp) -> String {
    let settle = if shared { SHARED_SETTLE } else { SETTLE };
    let settled = first_id_of(now.as_millisecond() - settle.as_millis() as i64);
    match committer.oldest_in_flight() {
        Some(in_flight) if in_flight < settled => in_flight,
        _ => settled,
    }
}

/// Where a stream that starts at `now` starts: after every event stored for good by then, so
/// that it sends each later one. A page that lists the log and then follows it passes this,
/// taken before its read, as `after`: an event in both comes twice, none goes missing.
pub fn start_cursor(committer: &Committer, shared: bool, now: Timestamp) -> String {
    position_of(settled_below(committer, shared, now))
}

/// A cursor from which every id at or above `id`'s millisecond is still to come: below
/// every real id minted in that millisecond.
fn position_of(id: String) -> String {
    match id.get(4..16).and_then(|hex| i64::from_str_radix(hex, 16).ok()) {
        Some(millisecond) => first_id_of(millisecond),
        None => id,
    }
}

/// Which events a stream sends.
struct Filter {
    name: Option<String>,
    app: Option<String>,
    hook_type: Option<HookType>,
    access: Access,
}

impl Filter {
    fn wants(&self, event: &Event) -> bool {
        self.hook_type.is_none_or(|hook_type| hook_type == event.hook_type) && self.access.covers_event(&event.name)
    }
}

/// One stream's reader of the log.
struct Follow {
    state: Arc<ApiState>,
    filter: Filter,
    /// The last event passed (sent, or not wanted); the next read is after it.
    cursor: String,
    closing: watch::Receiver<bool>,
}

/// Why a stream stops.
enum Stop {
    /// The client went away or stopped reading.
    Client,
    /// Shutdown, or the store failed: the client may reconnect.
    Server,
}

impl Follow {
    async fn run(mut self, sender: mpsc::Sender<Message>, _permit: OwnedSemaphorePermit) {
        let mut commits = self.state.committer.commits();
        let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        let ends = tokio::time::Instant::now() + MAX_LIFETIME;
        let shared = self.state.store.shared();
        // Events wait this long to settle; a quiet stream looks again when the latest may have.
        let wait = if shared { POLL } else { SETTLE.min(POLL) };
        if send(&sender, Message::default().retry(RETRY)).await.is_err() {
            return;
        }
        loop {
            match self.send_settled(&sender, shared).await {
                // A full batch: read on at once.
                Ok(true) => continue,
                Ok(false) => {}
                Err(Stop::Client | Stop::Server) => return,
            }
            // At most one read per gap, however many commits come; then a commit, the poll, or
            // the end.
            tokio::select! {
                () = tokio::time::sleep(MIN_READ_GAP) => {}
                () = closed(&mut self.closing) => return,
                () = sender.closed() => return,
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wait) => {}
                _ = keep_alive.tick() => {
                    if send(&sender, Message::default().comment("keep-alive")).await.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(ends) => return,
                () = closed(&mut self.closing) => return,
                () = sender.closed() => return,
            }
        }
    }

    /// Sends the settled events after the cursor, one batch (events not yet settled are not
    /// read); true when the batch was full, so that there may be more to read at once.
    async fn send_settled(&mut self, sender: &mpsc::Sender<Message>, shared: bool) -> Result<bool, Stop> {
        let below = settled_below(&self.state.committer, shared, Timestamp::now());
        if below <= self.cursor {
            return Ok(false);
        }
        let query = EventQuery {
            name: self.filter.name.clone(),
            app: self.filter.app.clone(),
            after_id: Some(self.cursor.clone()),
            before_id: Some(below),
            limit: BATCH,
            // Large events are read a few at a time.
            max_bytes: Some(super::events::PAGE_MAX_BYTES as u64),
            ..EventQuery::default()
        };
        let page = self.state.store.list_events(query).await.map_err(|error| {
            tracing::warn!(%error, "An event stream could not read the store and ends; its client will resume.");
            Stop::Server
        })?;
        let more = page.next_cursor.is_some();
        for event in page.events {
            self.cursor.clone_from(&event.id);
            if self.filter.wants(&event) {
                send(sender, message(&event)).await.map_err(|()| Stop::Client)?;
            }
        }
        Ok(more)
    }
}

/// Resolves once the streams are closing (at once if they already are).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await.is_ok();
}

/// Queues a message for the client; fails when it is gone or has taken nothing for
/// [`SEND_TIMEOUT`].
async fn send(sender: &mpsc::Sender<Message>, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, sender.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The message for one event, within [`MAX_MESSAGE_BYTES`].
fn message(event: &Event) -> Message {
    let mut json = serde_json::to_string(event).unwrap_or_default();
    if json.len() > MAX_MESSAGE_BYTES {
        let mut view = serde_json::to_value(event).unwrap_or_default();
        view["data"] = serde_json::Value::Null;
        view["dataOmitted"] = serde_json::Value::Bool(true);
        json = view.to_string();
    }
    Message::default().id(event.id.clone()).event("event").data(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_of_a_millisecond_sorts_below_every_id_minted_in_it_and_above_earlier_ones() {
        let id = crate::event::new_event_id();
        let millisecond = i64::from_str_radix(&id[4..16], 16).unwrap();
        assert!(first_id_of(millisecond) < id);
        assert!(first_id_of(millisecond + 1) > id);
        assert_eq!(position_of(id.clone()), first_id_of(millisecond));
        assert!(is_event_id(&id) && is_event_id(&first_id_of(millisecond)));
    }

    #[test]
    fn only_event_ids_are_cursors() {
        for bad in
            ["", "evt_", "evt_123", "sub_0192a0b4c5d6e7f8091a2b3c4d5e6f70", "evt_0192A0B4C5D6E7F8091A2B3C4D5E6F70"]
        {
            assert!(!is_event_id(bad), "{bad:?}");
        }
    }
}
