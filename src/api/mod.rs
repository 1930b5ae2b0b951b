//! The management API (`/api/...`) and the operational endpoints (`/healthz`, `/readyz`,
//! `/metrics`).
//!
//! Every `/api` request carries `Authorization: Bearer <admin token>`, checked in one
//! middleware. Resources live one per file. The API reads and changes state only through the
//! store and the catalog manager; [`ApiError`] is mapped to a reply in exactly one place.
//! Secrets appear in a response only once: the body that creates them.

mod apps;
mod events;
pub mod hooks;
mod keys;
mod sources;
pub mod subscriptions;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

use crate::AppState;
use crate::definitions::Diagnostic;
use crate::secrets::{constant_time_eq, sha256_hex};
use crate::store::StoreError;

/// Why a management request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("send the admin token as \"Authorization: Bearer <token>\"")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the definition is invalid")]
    InvalidDefinition(Vec<Diagnostic>),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("the request is invalid: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    InvalidFields(Vec<crate::subscriptions::FieldError>),
    #[error("the store is not available; retry later")]
    Store(#[from] StoreError),
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::InvalidDefinition(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_definition"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::InvalidFields(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        match &self {
            ApiError::Store(error) => tracing::error!(%error, "A management request failed in the store."),
            ApiError::Internal(cause) => tracing::error!(%cause, "A management request failed."),
            _ => {}
        }
        let mut error = json!({"code": code, "message": self.to_string()});
        if let ApiError::InvalidFields(fields) = &self {
            error["fields"] = json!(fields);
        }
        if let ApiError::InvalidDefinition(diagnostics) = &self {
            error["diagnostics"] = json!(diagnostics);
            error["message"] = json!(diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
        }
        let mut response = (status, Json(json!({"error": error}))).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"hookgate-admin\""));
        }
        response
    }
}

/// The management routes, behind the admin token, plus the unauthenticated probes.
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    // `layer` (not `route_layer`) so that unknown /api paths are behind the token too.
    let api = Router::new()
        .route("/hooks", get(hooks::list))
        .route("/hooks/{event_name}/sample", get(hooks::sample))
        .route("/apps", get(apps::list).post(apps::install))
        .route("/apps/{app}", get(apps::show).delete(apps::remove))
        .route("/definitions/reload", post(apps::reload))
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/events", get(events::list))
        .route("/events/{id}", get(events::show))
        .route("/events/{id}/raw", get(events::raw))
        .route("/events/{id}/replay", post(events::replay))
        .route("/sources/rejections", get(sources::rejections))
        .route("/webhooks", get(subscriptions::list).post(subscriptions::create))
        .route("/webhooks/{id}/rotate-secret", post(subscriptions::rotate_secret))
        .route("/webhooks/{id}/deliveries", get(subscriptions::deliveries))
        .route("/webhooks/{id}/test", post(subscriptions::send_test))
        .route("/openapi.json", get(openapi))
        .route("/webhooks/{id}/deliveries/{delivery_id}/retry", post(subscriptions::retry_delivery))
        .fallback(|| async { ApiError::NotFound("no such management endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(state, require_admin));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .nest("/api", api)
        .fallback(|| async { ApiError::NotFound("nothing here; hooks are under /h/ and the API under /api/".into()) })
}

async fn require_admin(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if is_admin(&state, request.headers()) { next.run(request).await } else { ApiError::Unauthorized.into_response() }
}

/// Whether the request carries the admin token as a bearer token.
pub(crate) fn is_admin(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    presented.is_some_and(|token| constant_time_eq(sha256_hex(token).as_bytes(), state.admin_token_sha256.as_bytes()))
}

/// The OpenAPI document of the management API (`docs/openapi.json`, kept true by a test).
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("../../docs/openapi.json")).into_response()
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({"status": "ready", "hooks": state.catalog.current().hooks().len()})).into_response(),
        Err(error) => {
            tracing::warn!(%error, "Readiness check failed: the store does not answer.");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "reason": "store"}))).into_response()
        }
    }
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> Response {
    let body = state.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
