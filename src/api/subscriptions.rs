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

use crate::api::RequestBody;
use axum::Json;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

use super::{Access, ApiError, ApiState};
use crate::subscriptions::{Subscription, from_request};

pub(crate) fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::BadRequest(format!("malformed JSON at line {} column {}: {error}", error.line(), error.column()))
    })
}

/// The subscription `id`, if it exists and is within the caller's reach.
pub(crate) async fn find(state: &ApiState, access: &Access, id: &str) -> Result<Subscription, ApiError> {
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
    RequestBody(body): RequestBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let subscription = create_subscription(&state, &access, &parse(&body)?, |_| {}).await?;
    let mut view = subscription.view();
    view["secret"] = json!(subscription.secrets[0].secret);
    Ok((StatusCode::CREATED, Json(view)))
}

/// Creates the subscription `request` asks for, in hookgate's fields or the seeds' aliases;
/// `keep` sets what a face keeps beside them. Every face creates through here.
pub(crate) async fn create_subscription(
    state: &ApiState,
    access: &Access,
    request: &Value,
    keep: impl FnOnce(&mut Subscription),
) -> Result<Subscription, ApiError> {
    let canonical = crate::subscriptions::canonical(request).map_err(ApiError::InvalidFields)?;
    let mut subscription =
        from_request(&canonical.request, None, false, &state.delivery_policy, jiff::Timestamp::now())
            .await
            .map_err(|errors| ApiError::InvalidFields(canonical.rename_errors(errors)))?;
    access.check_patterns(&subscription.events)?;
    keep(&mut subscription);
    state.store.put_subscription(subscription.clone()).await?;
    state.committer.reload_routes().await?;
    Ok(subscription)
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
) -> Result<Json<Value>, ApiError> {
    let views: Vec<Value> = visible(&state, &access).await?.iter().map(Subscription::view).collect();
    Ok(Json(json!({ "data": views })))
}

/// Every subscription within the caller's reach, oldest first.
pub(crate) async fn visible(state: &ApiState, access: &Access) -> Result<Vec<Subscription>, ApiError> {
    let mut subscriptions = state.store.subscriptions().await?;
    subscriptions.retain(|subscription| access.reaches(subscription));
    Ok(subscriptions)
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
    let body = match crate::ingress::body::read_to_limit(request.into_body(), 1024 * 1024).await {
        Ok(body) => body,
        Err(_) => return ApiError::BadRequest("the body is over 1 MiB or could not be read".into()).into_response(),
    };
    let outcome = match method {
        Method::GET => find(&state, &access, &id).await.map(|subscription| Json(subscription.view()).into_response()),
        Method::PUT => change(&state, &access, &id, &body, false).await,
        Method::PATCH => change(&state, &access, &id, &body, true).await,
        Method::DELETE => remove(&state, &access, &id).await.map(|()| StatusCode::NO_CONTENT.into_response()),
        _ => Err(ApiError::MethodNotAllowed("use GET, PUT, PATCH or DELETE on a subscription".into())),
    };
    outcome.unwrap_or_else(IntoResponse::into_response)
}

async fn change(state: &ApiState, access: &Access, id: &str, body: &[u8], merge: bool) -> Result<Response, ApiError> {
    let request = parse(body)?;
    let changed = change_subscription(state, access, id, &request, merge).await?;
    Ok(Json(changed.view()).into_response())
}

/// Replaces (`merge` false) or updates a subscription as `request` asks, in hookgate's fields or
/// the seeds' aliases. Every face changes through here.
pub(crate) async fn change_subscription(
    state: &ApiState,
    access: &Access,
    id: &str,
    request: &Value,
    merge: bool,
) -> Result<Subscription, ApiError> {
    let existing = find(state, access, id).await?;
    let canonical = crate::subscriptions::canonical(request).map_err(ApiError::InvalidFields)?;
    let request = &canonical.request;
    let edit = from_request(request, Some(&existing), merge, &state.delivery_policy, jiff::Timestamp::now())
        .await
        .map_err(|errors| ApiError::InvalidFields(canonical.rename_errors(errors)))?;
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
    Ok(changed)
}

/// `DELETE /api/webhooks` with `{"id": "sub_…"}`: the same as `DELETE /api/webhooks/{id}`, the
/// way seed 003's API deletes.
pub async fn delete_by_body(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    RequestBody(body): RequestBody,
) -> Result<Response, ApiError> {
    let request = parse(&body)?;
    let Some(id) = request.get("id").and_then(Value::as_str) else {
        return Err(ApiError::InvalidFields(vec![crate::subscriptions::FieldError {
            field: "id".into(),
            message: "required: the id of the subscription to delete".into(),
        }]));
    };
    remove(&state, &access, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes a subscription with its delivery history.
pub(crate) async fn remove(state: &ApiState, access: &Access, id: &str) -> Result<(), ApiError> {
    find(state, access, id).await?;
    if state.store.delete_subscription(id).await? {
        state.committer.reload_routes().await?;
        Ok(())
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
    RequestBody(body): RequestBody,
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
    let (secret, old_expires_at) = rotate(&state, &access, &id, overlap).await?;
    Ok(Json(json!({"secret": secret, "previousSecretsExpireAt": old_expires_at})))
}

/// Gives a subscription a new secret; the old ones stop after `overlap_seconds` (0: at once).
/// Returns the new secret and when the old ones stop.
pub(crate) async fn rotate(
    state: &ApiState,
    access: &Access,
    id: &str,
    overlap_seconds: u64,
) -> Result<(String, jiff::Timestamp), ApiError> {
    find(state, access, id).await?;
    let now = jiff::Timestamp::now();
    let old_expires_at = now + jiff::SignedDuration::from_secs(overlap_seconds as i64);
    let secret = crate::subscriptions::new_secret();
    let rotated = secret.clone();
    state
        .store
        .update_subscription(id, move |subscription| subscription.rotate_secret(rotated, now, old_expires_at))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no subscription {id:?}")))?;
    Ok((secret, old_expires_at))
}

/// `GET /api/webhooks/{id}/deliveries?from=&to=&status=&page=&per_page=`: newest first, each
/// with its attempts (time, HTTP status, latency, response excerpt, error).
pub async fn deliveries(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (result, page, per_page) = delivery_page(&state, &access, &id, &query).await?;
    Ok(Json(json!({"data": result.deliveries, "page": page, "per_page": per_page, "total": result.total})))
}

/// The page of a subscription's delivery history that `query` asks for (`from`, `to`,
/// `status`, `page`, `per_page`), with the page number and size used.
pub(crate) async fn delivery_page(
    state: &ApiState,
    access: &Access,
    id: &str,
    query: &std::collections::HashMap<String, String>,
) -> Result<(crate::store::DeliveryPage, usize, usize), ApiError> {
    find(state, access, id).await?;
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
        Some(status @ ("pending" | "delivered" | "failed" | "dropped")) => Some(status.to_owned()),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "status must be pending, delivered, failed or dropped, not {other:?}"
            )));
        }
    };
    let (page, per_page) = (number("page", 1, 1_000_000)?, number("per_page", 50, 500)?);
    let result = state
        .store
        .deliveries(crate::store::DeliveryQuery {
            subscription_id: id.to_owned(),
            from: time("from")?,
            to: time("to")?,
            status,
            page,
            per_page,
        })
        .await?;
    Ok((result, page, per_page))
}

/// `POST /api/webhooks/{id}/deliveries/{delivery_id}/retry`: due now (202).
pub async fn retry_delivery(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    retry(&state, &access, &id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": delivery_id, "status": "pending"}))))
}

/// Makes a delivery due now and wakes the worker.
pub(crate) async fn retry(state: &ApiState, access: &Access, id: &str, delivery_id: &str) -> Result<(), ApiError> {
    find(state, access, id).await?;
    if !state.store.retry_delivery(id, delivery_id, jiff::Timestamp::now()).await? {
        return Err(ApiError::NotFound(format!("subscription {id:?} has no delivery {delivery_id:?}")));
    }
    state.committer.wake_deliveries();
    Ok(())
}

/// `POST /api/webhooks/{id}/test` with `{"event": "<event name>"}`: a sample marked
/// `"test": true`, sent now; the reply says what the endpoint answered.
pub async fn send_test(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    RequestBody(body): RequestBody,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(test_send(&state, &access, &id, &parse(&body)?).await?))
}

/// Sends a sample of the event `request` names (`{"event": …}`) to a subscription now.
pub(crate) async fn test_send(state: &ApiState, access: &Access, id: &str, request: &Value) -> Result<Value, ApiError> {
    let Some(event_name) = request.get("event").and_then(Value::as_str) else {
        return Err(ApiError::InvalidFields(vec![crate::subscriptions::FieldError {
            field: "event".into(),
            message: "required: the event name to send a sample of".into(),
        }]));
    };
    let subscription = find(state, access, id).await?;
    if !access.covers_event(event_name) {
        return Err(ApiError::Forbidden(format!("this key's scopes do not cover {event_name:?}")));
    }
    Ok(state.sender.send_test(&subscription, event_name).await)
}
