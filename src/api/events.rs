//! `/api/events`: the event log, newest first, with filters and cursor pagination.
//!
//! A listing is streamed: the reply's first bytes go out at once (after the first read, or
//! [`FIRST_READ_WAIT`] if it takes longer: a store failure before that is still a 503), and
//! events are read from the store a few at a time ([`READ_EVENTS`], [`READ_BYTES`]) and
//! written to the socket one by one, so that what the process holds for a listing does not grow
//! with the page. A page ends at `limit` events or once its events' JSON reaches
//! [`PAGE_MAX_BYTES`], whichever comes first; `nextCursor` continues after its last event. A
//! client that goes away drops the reply's stream, and with it the reading.
//!
//! A scoped management key reads only events within its scopes: it lists them by a `name` its
//! scopes cover, and any other event is not found for it. Replays go through
//! [`crate::pipeline::Replay`], as the command line's do. Erasing a resource's events
//! (`POST /api/events/purge`) takes the admin token (`api::router` puts it behind it).

use crate::api::RequestBody;
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

use super::{Access, ApiError, ApiState};
use crate::pipeline::{Replay, ReplayError};
use crate::store::{EventQuery, StoreError};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;
/// A page ends with the event that takes its events' JSON to this many bytes (8 MiB).
pub const PAGE_MAX_BYTES: usize = 8 * 1024 * 1024;
/// A listing reads the store at most this many events at a time...
const READ_EVENTS: usize = 16;
/// ...and at most about this many stored bytes (one event more at most).
const READ_BYTES: u64 = 1024 * 1024;
/// How long the reply's head waits for the first read, so that a store failure is a 503.
const FIRST_READ_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParameters {
    name: Option<String>,
    app: Option<String>,
    /// RFC 3339; events received at or after.
    since: Option<String>,
    /// RFC 3339; events received before.
    until: Option<String>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
    /// Only quarantined events, or only the others.
    quarantined: Option<bool>,
    limit: Option<usize>,
}

fn timestamp(field: &str, text: Option<String>) -> Result<Option<jiff::Timestamp>, ApiError> {
    text.map(|text| {
        text.parse::<jiff::Timestamp>().map_err(|error| {
            ApiError::BadRequest(format!("{field}: expected an RFC 3339 time such as 2026-11-23T10:00:00Z ({error})"))
        })
    })
    .transpose()
}

impl ListParameters {
    pub fn into_query(self) -> Result<EventQuery, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::BadRequest(format!("limit: expected 1 to {MAX_LIMIT}, got {limit}")));
        }
        Ok(EventQuery {
            name: self.name,
            app: self.app,
            since: timestamp("since", self.since)?,
            until: timestamp("until", self.until)?,
            before_id: self.cursor,
            after_id: None,
            quarantined: self.quarantined,
            limit,
            max_bytes: None,
        })
    }
}

/// `GET /api/events`: a page of events, streamed (see the module's header).
pub async fn list(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    parameters: Result<Query<ListParameters>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(parameters) = parameters.map_err(|error| ApiError::BadRequest(error.body_text()))?;
    let query = parameters.into_query()?;
    check_listing(&access, &query)?;
    let pieces = futures_util::stream::unfold(Listing::new(state, query), |mut listing| async move {
        let piece = listing.next_piece().await?;
        Some((piece, listing))
    });
    let mut pieces = Box::pin(pieces);
    let opening = pieces.next().await.transpose()?;
    // A store failure on the first read is still a 503; a slow first read does not hold back
    // the reply's first bytes.
    let first = match tokio::time::timeout(FIRST_READ_WAIT, pieces.next()).await {
        Ok(Some(Err(error))) => return Err(error.into()),
        Ok(Some(Ok(piece))) => Some(piece),
        Ok(None) | Err(_) => None,
    };
    let read = futures_util::stream::iter(opening.into_iter().chain(first).map(Ok)).chain(pieces);
    let body = Body::from_stream(read.map(|piece| piece.map_err(std::io::Error::other)));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// One page of a listing as it is written: `{"data": [`, the events a few at a time, then
/// `], "nextCursor": …}`.
struct Listing {
    state: Arc<ApiState>,
    query: EventQuery,
    /// Events written so far, and their JSON's bytes.
    written: usize,
    bytes: usize,
    /// Whether the head and the tail have been written.
    opened: bool,
    closed: bool,
}

impl Listing {
    fn new(state: Arc<ApiState>, query: EventQuery) -> Listing {
        Listing { state, query, written: 0, bytes: 0, opened: false, closed: false }
    }

    /// The next piece of the reply (events read in one go from the store, written one by one),
    /// or `None` after the tail.
    async fn next_piece(&mut self) -> Option<Result<Bytes, StoreError>> {
        if self.closed {
            return None;
        }
        if !self.opened {
            self.opened = true;
            return Some(Ok(Bytes::from_static(b"{\"data\":[")));
        }
        let mut piece = Vec::new();
        let read = EventQuery {
            limit: (self.query.limit - self.written).min(READ_EVENTS),
            max_bytes: Some(READ_BYTES),
            ..self.query.clone()
        };
        let page = match self.state.store.list_events(read).await {
            Ok(page) => page,
            Err(error) => return Some(Err(error)),
        };
        let read_all = page.events.len();
        let mut events = page.events.into_iter().peekable();
        while let Some(event) = events.next() {
            if self.written > 0 {
                piece.push(b',');
            }
            let before = piece.len();
            if let Err(error) = serde_json::to_writer(&mut piece, &event) {
                return Some(Err(StoreError::Corrupt(error.to_string())));
            }
            self.written += 1;
            self.bytes += piece.len() - before;
            self.query.before_id = Some(event.id);
            let full = self.written >= self.query.limit || self.bytes >= PAGE_MAX_BYTES;
            let more = events.peek().is_some() || page.next_cursor.is_some();
            if full || !more {
                let next_cursor = if more { self.query.before_id.clone() } else { None };
                piece.extend_from_slice(b"],\"nextCursor\":");
                // A string (an event id) or null: serializing it cannot fail.
                let _ = serde_json::to_writer(&mut piece, &next_cursor);
                piece.push(b'}');
                self.closed = true;
                return Some(Ok(Bytes::from(piece)));
            }
        }
        if read_all == 0 {
            // Nothing matched at all.
            piece.extend_from_slice(b"],\"nextCursor\":null}");
            self.closed = true;
        }
        Some(Ok(Bytes::from(piece)))
    }
}

/// Whether `access` may list what `query` asks for: a scoped key lists by a name its scopes
/// cover.
fn check_listing(access: &Access, query: &EventQuery) -> Result<(), ApiError> {
    if !access.covers_event(query.name.as_deref().unwrap_or("*")) {
        return Err(ApiError::Forbidden(
            "this key is scoped: filter by a name its scopes cover (?name=<event name>)".into(),
        ));
    }
    Ok(())
}

/// The events `query` asks for, when `access` may list them: a scoped key lists by a name its
/// scopes cover. The page is bounded by [`PAGE_MAX_BYTES`] of stored bytes as well as by count.
pub async fn list_events(
    state: &ApiState,
    access: &Access,
    query: EventQuery,
) -> Result<crate::store::EventPage, ApiError> {
    check_listing(access, &query)?;
    let max_bytes = query.max_bytes.unwrap_or(PAGE_MAX_BYTES as u64);
    Ok(state.store.list_events(EventQuery { max_bytes: Some(max_bytes), ..query }).await?)
}

/// The event `id`, if it exists and is within the caller's reach.
pub async fn find(state: &ApiState, access: &Access, id: &str) -> Result<crate::event::Event, ApiError> {
    state
        .store
        .event(id)
        .await?
        .filter(|event| access.covers_event(&event.name))
        .ok_or_else(|| ApiError::NotFound(format!("no event {id:?}")))
}

pub async fn show(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let event = find(&state, &access, &id).await?;
    Ok(Json(serde_json::to_value(event).map_err(|e| ApiError::Internal(e.to_string()))?))
}

/// The exact bytes the event was made from, with their original content type.
pub async fn raw(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    raw_download(&state, &access, &id).await
}

/// The bytes event `id` was made from, as a download, if the event is within reach.
pub async fn raw_download(state: &ApiState, access: &Access, id: &str) -> Result<Response, ApiError> {
    let raw = raw_body(state, access, id).await?;
    let content_type = raw.content_type.unwrap_or_else(|| "application/octet-stream".into());
    // Served as a download so that a stored HTML body can never run in an operator's browser.
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{id}.body\"")),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
    ];
    Ok((headers, raw.bytes).into_response())
}

/// The bytes event `id` was made from, if the event is within reach.
pub async fn raw_body(state: &ApiState, access: &Access, id: &str) -> Result<crate::store::RawBody, ApiError> {
    if access.is_scoped() {
        find(state, access, id).await?;
    }
    state.store.raw_body(id).await?.ok_or_else(|| ApiError::NotFound(format!("no event {id:?}")))
}

/// `POST /api/events/{id}/replay` with an optional `{"subscription_id": "sub_…"}`: new
/// deliveries of a stored event to every subscription it matches now, or to that one (202).
pub async fn replay(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    RequestBody(body): RequestBody,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let request: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|error| ApiError::BadRequest(format!("malformed JSON: {error}")))?
    };
    let subscription_id = match request.get("subscription_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(subscription_id)) => Some(subscription_id.as_str()),
        Some(_) => return Err(ApiError::BadRequest("subscription_id must be a subscription id".into())),
    };
    let deliveries = replay_event(&state, &access, &id, subscription_id).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(json!({"eventId": id, "deliveries": deliveries}))))
}

/// New deliveries of the stored event `id`, due now: to every subscription within the caller's
/// reach that it matches now, or to `subscription_id` only. Returns the deliveries' ids.
pub async fn replay_event(
    state: &ApiState,
    access: &Access,
    id: &str,
    subscription_id: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let event = find(state, access, id).await?;
    Replay::check(&event).map_err(replay_error)?;
    let store = state.store.clone();
    let replay = match subscription_id {
        None => {
            // A key replays only to the subscriptions it can see.
            let within = match access.is_scoped() {
                false => None,
                true => Some(
                    state
                        .store
                        .subscriptions()
                        .await?
                        .into_iter()
                        .filter(|subscription| access.reaches(subscription))
                        .map(|subscription| subscription.id)
                        .collect(),
                ),
            };
            Replay::matching(store, state.committer.routes(), within)
        }
        Some(subscription_id) => Replay::to_one(store, subscription_id, |subscription| access.reaches(subscription))
            .await
            .map_err(replay_error)?,
    };
    let deliveries = replay.event(&event, jiff::Timestamp::now()).await.map_err(replay_error)?;
    state.committer.wake_deliveries();
    Ok(deliveries)
}

fn replay_error(error: ReplayError) -> ApiError {
    match error {
        ReplayError::Quarantined | ReplayError::Disabled(_) => ApiError::Conflict(error.to_string()),
        ReplayError::NoSubscription(_) => ApiError::NotFound(error.to_string()),
        ReplayError::Store(error) => ApiError::Store(error),
    }
}

/// The body of `POST /api/events/purge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PurgeRequest {
    resource_id: String,
}

/// `POST /api/events/purge` with `{"resourceId": "…"}` (admin token only): erases every event
/// about the resource, for an erasure request, and answers what was deleted
/// (`{"events", "deliveries", "bodies"}`).
pub async fn purge(
    State(state): State<Arc<ApiState>>,
    RequestBody(body): RequestBody,
) -> Result<Json<Value>, ApiError> {
    let request: PurgeRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadRequest(format!("expected {{\"resourceId\": \"<the resource's id>\"}}: {error}"))
    })?;
    if request.resource_id.trim().is_empty() {
        return Err(ApiError::BadRequest("resourceId must not be empty".into()));
    }
    let purged = state.store.purge_resource(&request.resource_id).await?;
    // The resource's id is not logged: it may be the very personal data being erased.
    tracing::info!(
        events = purged.events,
        deliveries = purged.deliveries,
        bodies = purged.bodies,
        "Erased the events about a resource on request."
    );
    Ok(Json(json!(purged)))
}
