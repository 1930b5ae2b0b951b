//! Seed 001's face, `/api/integrations/webhooks`: list, create (201 with the secret this once),
//! read, `PATCH` (every field optional), rotate the secret (the old one stops at once, as seed
//! 001 says), delete (204, with the delivery history), the delivery history in seed 001's item
//! shape (`id`, `event`, `delivered_at`, `http_status`, `attempt_count`, `status`), retry (202)
//! and a test send marked `"test": true`.
//!
//! A subscription shows as `id`, `url`, `events`, `enabled` and `created_at`. `enabled` is
//! whether it is active: a paused or disabled subscription is not enabled. Setting `enabled` to
//! true makes it active, false disables it (see `subscriptions::aliases`).

use crate::api::RequestBody;
use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

use crate::api::subscriptions::{
    change_subscription, create_subscription, delivery_page, find, parse, remove, rotate, test_send,
};
use crate::api::{Access, ApiError, ApiState};
use crate::subscriptions::{Status, Subscription};

/// A subscription in seed 001's shape.
pub fn view(subscription: &Subscription) -> Value {
    json!({
        "id": subscription.id,
        "url": subscription.url,
        "events": subscription.events,
        "enabled": subscription.status == Status::Active,
        "created_at": subscription.created_at,
    })
}

/// `GET /api/integrations/webhooks`.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
) -> Result<Json<Value>, ApiError> {
    let subscriptions = state.store.subscriptions().await?;
    let views: Vec<Value> = subscriptions.iter().filter(|s| access.reaches(s)).map(view).collect();
    Ok(Json(json!({ "data": views })))
}

/// `POST /api/integrations/webhooks` with `{"url", "events", "enabled"}`.
pub async fn create(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    RequestBody(body): RequestBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let subscription = create_subscription(&state, &access, &parse(&body)?, |_| {}).await?;
    let mut created = view(&subscription);
    created["secret"] = json!(subscription.secrets[0].secret);
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /api/integrations/webhooks/{id}`.
pub async fn show(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&find(&state, &access, &id).await?)))
}

/// `PATCH /api/integrations/webhooks/{id}`: every field optional.
pub async fn update(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    RequestBody(body): RequestBody,
) -> Result<Json<Value>, ApiError> {
    let changed = change_subscription(&state, &access, &id, &parse(&body)?, true).await?;
    Ok(Json(view(&changed)))
}

/// `DELETE /api/integrations/webhooks/{id}`: 204; the delivery history goes with it.
pub async fn delete(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(&state, &access, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/integrations/webhooks/{id}/rotate-secret`: a new secret, the old one invalid at
/// once.
pub async fn rotate_secret(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (secret, _) = rotate(&state, &access, &id, 0).await?;
    let mut rotated = view(&find(&state, &access, &id).await?);
    rotated["secret"] = json!(secret);
    Ok(Json(rotated))
}

/// `GET /api/integrations/webhooks/{id}/deliveries?from=&to=&status=&page=&per_page=`, newest
/// first, in seed 001's item shape. `delivered_at` is the time of the successful attempt (null
/// until there is one), `http_status` the last attempt's.
pub async fn deliveries(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (page, number, per_page) = delivery_page(&state, &access, &id, &query).await?;
    let event_ids: Vec<String> = page.deliveries.iter().map(|delivery| delivery.event_id.clone()).collect();
    let names: HashMap<String, String> =
        state.store.events(event_ids).await?.into_iter().map(|event| (event.id, event.name)).collect();
    let items: Vec<Value> = page
        .deliveries
        .iter()
        .map(|delivery| {
            let last = delivery.history.iter().max_by_key(|attempt| attempt.attempt);
            let delivered_at = delivery
                .history
                .iter()
                .filter(|attempt| attempt.status_code.is_some_and(|code| (200..300).contains(&code)))
                .map(|attempt| attempt.at)
                .max();
            json!({
                "id": delivery.id,
                "event": names.get(&delivery.event_id),
                "delivered_at": delivered_at,
                "http_status": last.and_then(|attempt| attempt.status_code),
                "attempt_count": delivery.attempts,
                "status": delivery.status,
            })
        })
        .collect();
    Ok(Json(json!({"data": items, "page": number, "per_page": per_page, "total": page.total})))
}

/// `POST /api/integrations/webhooks/{id}/test` with `{"event": …}`: a sample marked
/// `"test": true`, sent now; the reply says what the endpoint answered.
pub async fn send_test(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    RequestBody(body): RequestBody,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(test_send(&state, &access, &id, &parse(&body)?).await?))
}
