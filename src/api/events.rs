//! `/api/events`: the event log, newest first, with filters and cursor pagination.
//!
//! A scoped management key reads only events within its scopes: it lists them by a `name` its
//! scopes cover, and any other event is not found for it. Replays go through
//! [`crate::pipeline::Replay`], as the command line's do. Erasing a resource's events
//! (`POST /api/events/purge`) takes the admin token (`api::router` puts it behind it).

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

use super::{Access, ApiError, ApiState};
use crate::pipeline::{Replay, ReplayError};
use crate::store::EventQuery;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

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
        })
    }
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    parameters: Result<Query<ListParameters>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(parameters) = parameters.map_err(|error| ApiError::BadRequest(error.body_text()))?;
    let page = list_events(&state, &access, parameters.into_query()?).await?;
    Ok(Json(json!({"data": page.events, "nextCursor": page.next_cursor})))
}

/// The events `query` asks for, when `access` may list them: a scoped key lists by a name its
/// scopes cover.
pub async fn list_events(
    state: &ApiState,
    access: &Access,
    query: EventQuery,
) -> Result<crate::store::EventPage, ApiError> {
    if !access.covers_event(query.name.as_deref().unwrap_or("*")) {
        return Err(ApiError::Forbidden(
            "this key is scoped: filter by a name its scopes cover (?name=<event name>)".into(),
        ));
    }
    Ok(state.store.list_events(query).await?)
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
    body: axum::body::Bytes,
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
pub async fn purge(State(state): State<Arc<ApiState>>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
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
