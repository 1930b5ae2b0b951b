//! `/api/webhooks`: subscriptions. Create (201, with the signing secret shown this once), list,
//! show, replace (`PUT`), update (`PATCH`), delete (204) and rotate the secret (the old one stops
//! at once, or after the overlap asked for).
//!
//! `GET`, `PUT`, `PATCH` and `DELETE /api/webhooks/{id}` share their path with the platforms'
//! `/api/webhooks/{source}`: `ingress` serves the sources and passes `sub_…` ids on to this
//! API (behind a credential). No source path may start with `sub_`.
//!
//! A scoped management key sees only the subscriptions whose every pattern its scopes cover,
//! and may create or change one only within them (403 naming what is outside).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

use super::{Access, ApiError, ApiState};
use crate::subscriptions::{Subscription, from_request};

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::BadRequest(format!("malformed JSON at line {} column {}: {error}", error.line(), error.column()))
    })
}

/// The subscription `id`, if it exists and is within the caller's reach.
async fn find(state: &ApiState, access: &Access, id: &str) -> Result<Subscription, ApiError> {
    state
        .store
        .subscription(id)
        .await?
        .filter(|subscription| access.reaches(subscription))
        .ok_or_else(|| ApiError::NotFound(format!("no subscription {id:?}")))
}

pub async fn create(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let subscription = from_request(&parse(&body)?, None, false, state.delivery_policy, jiff::Timestamp::now())
        .await
        .map_err(ApiError::InvalidFields)?;
    access.check_patterns(&subscription.events)?;
    state.store.put_subscription(subscription.clone()).await?;
    state.committer.reload_routes().await?;
    let mut view = subscription.view();
    view["secret"] = json!(subscription.secrets[0].secret);
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
) -> Result<Json<Value>, ApiError> {
    let subscriptions = state.store.subscriptions().await?;
    let views: Vec<Value> = subscriptions.iter().filter(|s| access.reaches(s)).map(Subscription::view).collect();
    Ok(Json(json!({ "data": views })))
}

/// `GET`, `PUT`, `PATCH` and `DELETE /api/webhooks/{id}`. Platforms post to the same path with
/// a source's name; `ingress` sends only subscription ids (`sub_…`) here.
pub async fn by_id(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let method = request.method().clone();
    let body = match axum::body::to_bytes(request.into_body(), 1024 * 1024).await {
        Ok(body) => body,
        Err(_) => return ApiError::BadRequest("the body is over 1 MiB or could not be read".into()).into_response(),
    };
    let outcome = match method {
        Method::GET => find(&state, &access, &id).await.map(|subscription| Json(subscription.view()).into_response()),
        Method::PUT => change(&state, &access, &id, &body, false).await,
        Method::PATCH => change(&state, &access, &id, &body, true).await,
        Method::DELETE => remove(&state, &access, &id).await,
        _ => Err(ApiError::MethodNotAllowed("use GET, PUT, PATCH or DELETE on a subscription".into())),
    };
    outcome.unwrap_or_else(IntoResponse::into_response)
}

async fn change(state: &ApiState, access: &Access, id: &str, body: &[u8], merge: bool) -> Result<Response, ApiError> {
    let existing = find(state, access, id).await?;
    let request = parse(body)?;
    let edit = from_request(&request, Some(&existing), merge, state.delivery_policy, jiff::Timestamp::now())
        .await
        .map_err(ApiError::InvalidFields)?;
    access.check_patterns(&edit.events)?;
    // Applied to the subscription as it is at the write: the worker may have marked it since.
    let status_given = !merge || request.get("status").is_some();
    let changed = state
        .store
        .update_subscription(id, move |current| current.apply_edit(edit, status_given))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no subscription {id:?}")))?;
    state.committer.reload_routes().await?;
    if changed.status == crate::subscriptions::Status::Active {
        // Deliveries kept while paused go out now.
        state.committer.wake_deliveries();
    }
    Ok(Json(changed.view()).into_response())
}

/// `DELETE /api/webhooks` with `{"id": "sub_…"}`: the same as `DELETE /api/webhooks/{id}`, the
/// way seed 003's API deletes.
pub async fn delete_by_body(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = parse(&body)?;
    let Some(id) = request.get("id").and_then(Value::as_str) else {
        return Err(ApiError::InvalidFields(vec![crate::subscriptions::FieldError {
            field: "id".into(),
            message: "required: the id of the subscription to delete".into(),
        }]));
    };
    remove(&state, &access, id).await
}

async fn remove(state: &ApiState, access: &Access, id: &str) -> Result<Response, ApiError> {
    find(state, access, id).await?;
    if state.store.delete_subscription(id).await? {
        state.committer.reload_routes().await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound(format!("no subscription {id:?}")))
    }
}

/// The longest overlap a rotation may ask for: a week.
const MAX_OVERLAP_SECONDS: u64 = 7 * 24 * 3600;

/// `POST /api/webhooks/{id}/rotate-secret` with an optional `{"overlap_seconds": N}`.
pub async fn rotate_secret(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { parse(&body)? };
    let overlap = match request.get("overlap_seconds") {
        None | Some(Value::Null) => 0,
        Some(value) => value.as_u64().filter(|seconds| *seconds <= MAX_OVERLAP_SECONDS).ok_or_else(|| {
            ApiError::InvalidFields(vec![crate::subscriptions::FieldError {
                field: "overlap_seconds".into(),
                message: format!("expected whole seconds from 0 to {MAX_OVERLAP_SECONDS}"),
            }])
        })?,
    };
    if let Some(unknown) = request.as_object().and_then(|object| object.keys().find(|key| *key != "overlap_seconds")) {
        return Err(ApiError::InvalidFields(vec![crate::subscriptions::FieldError {
            field: unknown.clone(),
            message: "unknown field; the only field is overlap_seconds".into(),
        }]));
    }
    find(&state, &access, &id).await?;
    let now = jiff::Timestamp::now();
    let old_expires_at = now + jiff::SignedDuration::from_secs(overlap as i64);
    let secret = crate::subscriptions::new_secret();
    let rotated = secret.clone();
    state
        .store
        .update_subscription(&id, move |subscription| subscription.rotate_secret(rotated, now, old_expires_at))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no subscription {id:?}")))?;
    Ok(Json(json!({"secret": secret, "previousSecretsExpireAt": old_expires_at})))
}

/// `GET /api/webhooks/{id}/deliveries?from=&to=&status=&page=&per_page=`: newest first, each
/// with its attempts (time, HTTP status, latency, response excerpt, error).
pub async fn deliveries(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &access, &id).await?;
    let time = |name: &str| -> Result<Option<jiff::Timestamp>, ApiError> {
        query
            .get(name)
            .map(|text| {
                text.parse::<jiff::Timestamp>()
                    .map_err(|_| ApiError::BadRequest(format!("{name} must be an RFC 3339 time, not {text:?}")))
            })
            .transpose()
    };
    let number = |name: &str, default: usize, max: usize| -> Result<usize, ApiError> {
        match query.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|value| (1..=max).contains(value))
                .ok_or_else(|| ApiError::BadRequest(format!("{name} must be a whole number from 1 to {max}"))),
        }
    };
    let status = match query.get("status").map(String::as_str) {
        None => None,
        Some(status @ ("pending" | "delivered" | "failed")) => Some(status.to_owned()),
        Some(other) => {
            return Err(ApiError::BadRequest(format!("status must be pending, delivered or failed, not {other:?}")));
        }
    };
    let (page, per_page) = (number("page", 1, 1_000_000)?, number("per_page", 50, 500)?);
    let result = state
        .store
        .deliveries(crate::store::DeliveryQuery {
            subscription_id: id,
            from: time("from")?,
            to: time("to")?,
            status,
            page,
            per_page,
        })
        .await?;
    Ok(Json(json!({"data": result.deliveries, "page": page, "per_page": per_page, "total": result.total})))
}

/// `POST /api/webhooks/{id}/deliveries/{delivery_id}/retry`: due now (202).
pub async fn retry_delivery(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    find(&state, &access, &id).await?;
    if !state.store.retry_delivery(&id, &delivery_id, jiff::Timestamp::now()).await? {
        return Err(ApiError::NotFound(format!("subscription {id:?} has no delivery {delivery_id:?}")));
    }
    state.committer.wake_deliveries();
    Ok((StatusCode::ACCEPTED, Json(json!({"id": delivery_id, "status": "pending"}))))
}

/// `POST /api/webhooks/{id}/test` with `{"event": "<event name>"}`: a sample marked
/// `"test": true`, sent now; the reply says what the endpoint answered.
pub async fn send_test(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request = parse(&body)?;
    let Some(event_name) = request.get("event").and_then(Value::as_str) else {
        return Err(ApiError::InvalidFields(vec![crate::subscriptions::FieldError {
            field: "event".into(),
            message: "required: the event name to send a sample of".into(),
        }]));
    };
    let subscription = find(&state, &access, &id).await?;
    if !access.covers_event(event_name) {
        return Err(ApiError::Forbidden(format!("this key's scopes do not cover {event_name:?}")));
    }
    Ok(Json(state.sender.send_test(&subscription, event_name).await))
}
