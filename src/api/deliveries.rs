//! Deliveries across subscriptions: `GET /api/deliveries` lists them (the dead letters with the
//! default `status=failed`), newest first with their last attempt, a bounded page at a time
//! behind a cursor; bulk retries queue every delivery a filter matches again, as a stored job
//! worked off in the background (`deliver::retry_jobs`): `POST /api/webhooks/{id}/deliveries/retry`
//! for one subscription's history, `POST /api/deliveries/retry` across subscriptions, and
//! `GET /api/jobs/{id}` for a job's progress.
//!
//! A scoped management key lists, retries and follows only the deliveries of the subscriptions it
//! reaches (the others are as if they did not exist), as for a subscription's own history.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

use super::subscriptions::{find, parse, visible};
use super::{Access, ApiError, ApiState};
use crate::store::{DeliveryListQuery, DeliverySelection, RetryJob};

/// The most deliveries on one page of the listing.
const MAX_LIMIT: usize = 500;
/// The filters a bulk retry takes beside the subscription.
const RETRY_FILTERS: &[&str] = &["status", "from", "to"];

/// `GET /api/deliveries?status=failed&from=&to=&subscription_id=&cursor=&limit=`.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let known = ["status", "from", "to", "subscription_id", "cursor", "limit"];
    if let Some(unknown) = query.keys().find(|key| !known.contains(&key.as_str())) {
        return Err(ApiError::BadRequest(format!("unknown parameter {unknown:?}; known are {}", known.join(", "))));
    }
    let limit = match query.get("limit") {
        None => 50,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be a whole number from 1 to {MAX_LIMIT}")))?,
    };
    let mut selection = selection(&state, &access, query.get("subscription_id").map(String::as_str), &query).await?;
    selection.status.get_or_insert_with(|| "failed".to_owned());
    let page = state
        .store
        .list_deliveries(DeliveryListQuery { selection, before_id: query.get("cursor").cloned(), limit })
        .await?;
    Ok(Json(json!({"data": page.deliveries, "next_cursor": page.next_cursor})))
}

/// `POST /api/webhooks/{id}/deliveries/retry` with the history's filters (`status`, `from`,
/// `to`) in the query or a JSON body: 202 with the job.
pub async fn retry_subscription(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let filters = filters(query, &body, RETRY_FILTERS)?;
    let selection = selection(&state, &access, Some(&id), &filters).await?;
    start(&state, selection).await
}

/// `POST /api/deliveries/retry` with `status` (default `failed`: the dead letters), `from`, `to`
/// and `subscription_id`, in the query or a JSON body: 202 with the job.
pub async fn retry_all(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let filters = filters(query, &body, &["status", "from", "to", "subscription_id"])?;
    let mut selection =
        selection(&state, &access, filters.get("subscription_id").map(String::as_str), &filters).await?;
    selection.status.get_or_insert_with(|| "failed".to_owned());
    start(&state, selection).await
}

/// `GET /api/jobs/{id}`: a bulk retry's progress.
pub async fn show_job(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = state.store.retry_job(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    if access.is_scoped() {
        // Only a job over subscriptions the key reaches, every one of them.
        let reachable: Vec<String> = visible(&state, &access).await?.into_iter().map(|s| s.id).collect();
        let within =
            job.selection.subscription_ids.as_ref().is_some_and(|ids| ids.iter().all(|id| reachable.contains(id)));
        if !within {
            return Err(ApiError::NotFound(format!("no job {id:?}")));
        }
    }
    Ok(Json(job_view(&job)))
}

/// Stores the job and answers 202 with it and where to follow it.
async fn start(state: &ApiState, selection: DeliverySelection) -> Result<Response, ApiError> {
    if selection.status.as_deref() == Some("pending") {
        return Err(ApiError::BadRequest(
            "pending deliveries are queued already; retry failed or delivered ones (status=failed or status=delivered)"
                .into(),
        ));
    }
    let job = state.store.create_retry_job(selection, jiff::Timestamp::now()).await?;
    let mut response = (StatusCode::ACCEPTED, Json(job_view(&job))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/jobs/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// A job as the API shows it: its fields, `done` (queued and skipped) and where to follow it.
pub(crate) fn job_view(job: &RetryJob) -> Value {
    let mut view = serde_json::to_value(job).unwrap_or(Value::Null);
    view["done"] = json!(job.queued + job.skipped);
    view["url"] = json!(format!("/api/jobs/{}", job.id));
    view
}

/// The filters of a bulk retry: the query's, or a JSON body's (strings), not the same in both.
fn filters(
    mut query: HashMap<String, String>,
    body: &[u8],
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        let Value::Object(fields) = parse(body)? else {
            return Err(ApiError::BadRequest("the body must be a JSON object of filters".into()));
        };
        for (name, value) in fields {
            let Value::String(text) = value else {
                return Err(ApiError::BadRequest(format!("{name} must be a string")));
            };
            if query.insert(name.clone(), text).is_some() {
                return Err(ApiError::BadRequest(format!("{name} is given in both the query and the body")));
            }
        }
    }
    if let Some(unknown) = query.keys().find(|key| !known.contains(&key.as_str())) {
        return Err(ApiError::BadRequest(format!("unknown filter {unknown:?}; the filters are {}", known.join(", "))));
    }
    Ok(query)
}

/// The deliveries `filters` select (`status`, `from`, `to`), of `subscription` when one is named
/// (404 when the caller does not reach it), else of every subscription the caller reaches.
async fn selection(
    state: &ApiState,
    access: &Access,
    subscription: Option<&str>,
    filters: &HashMap<String, String>,
) -> Result<DeliverySelection, ApiError> {
    let time = |name: &str| -> Result<Option<jiff::Timestamp>, ApiError> {
        filters
            .get(name)
            .map(|text| {
                text.parse::<jiff::Timestamp>()
                    .map_err(|_| ApiError::BadRequest(format!("{name} must be an RFC 3339 time, not {text:?}")))
            })
            .transpose()
    };
    let status = match filters.get("status").map(String::as_str) {
        None => None,
        Some(status @ ("pending" | "delivered" | "failed")) => Some(status.to_owned()),
        Some(other) => {
            return Err(ApiError::BadRequest(format!("status must be pending, delivered or failed, not {other:?}")));
        }
    };
    let subscription_ids = match subscription {
        Some(id) => Some(vec![find(state, access, id).await?.id]),
        None if access.is_scoped() => Some(visible(state, access).await?.into_iter().map(|s| s.id).collect()),
        None => None,
    };
    Ok(DeliverySelection { subscription_ids, status, from: time("from")?, to: time("to")? })
}
