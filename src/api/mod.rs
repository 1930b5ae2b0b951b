//! The management API (`/api/...`) and the operational endpoints (`/healthz`, `/readyz`,
//! `/metrics`).
//!
//! Every `/api` request carries a credential, resolved in one middleware into an [`Access`]:
//! the admin token (everything), or a management key in any of the header styles the seed
//! platforms use (`Authorization: Bearer`, `X-API-Key`, or the `X-API-KEY` + `X-API-SECRET`
//! pair), limited to subscriptions, hooks and events within its scopes. Apps, keys, definition
//! reloads, source rejections and erasing a resource's events take the admin token. Resources live one per file. The API
//! reads and changes state only through the store, the catalog manager and the pipeline (routes
//! rebuilt after a subscription changes, replays, waking the delivery worker); [`ApiError`] is
//! mapped to a reply in exactly one place. Its state is [`ApiState`]; the public routes (hook
//! URLs, sources) are served in front of it by `ingress`, which passes subscription ids under
//! `/api/webhooks/` on to it.
//! Secrets appear in a response only once: the body that creates them.

mod apps;
pub mod deliveries;
pub mod events;
mod faces;
pub mod hooks;
mod keys;
pub mod sources;
pub mod stream;
pub mod subscriptions;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use faces::{integrations, jsonapi};
use serde_json::json;
use std::sync::Arc;

use crate::definitions::Diagnostic;
use crate::definitions::catalog::CatalogManager;
use crate::ingress::rejections::RejectionLog;
use crate::pipeline::Committer;
use crate::secrets::{constant_time_eq, sha256_hex};
use crate::store::{Store, StoreError};
use crate::subscriptions::TargetPolicy;

/// What the management API works with.
pub struct ApiState {
    pub catalog: Arc<CatalogManager>,
    pub store: Store,
    /// Rebuilds the routes after a subscription changes; wakes the worker for retries and replays.
    pub committer: Arc<Committer>,
    /// Test sends go out through the deliveries' own client.
    pub sender: crate::deliver::Sender,
    /// The latest source requests that failed verification.
    pub rejections: Arc<RejectionLog>,
    /// SHA-256 (hex) of the admin token; the token itself is not kept.
    pub admin_token_sha256: String,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Base of the hook URLs shown to users.
    pub public_url: String,
    /// The domain of email hook addresses.
    pub mail_domain: String,
    /// Where subscriptions may deliver.
    pub delivery_policy: TargetPolicy,
    /// The open event streams, bounded in number, all ended at shutdown.
    pub streams: stream::EventStreams,
    /// The bytes of bodies in flight, shown by `/metrics`.
    pub body_budget: crate::ingress::budget::BodyBudget,
}

/// A management request's body, read whole into one buffer of at most [`RequestBody::LIMIT`]
/// bytes (axum's `Bytes` extractor keeps the frames as they came, so a body trickled a byte at
/// a time would cost thousands of times its size). Over the limit: 413.
pub struct RequestBody(pub axum::body::Bytes);

impl RequestBody {
    /// 2 MiB, axum's default limit for a body.
    pub const LIMIT: usize = 2 * 1024 * 1024;
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for RequestBody {
    type Rejection = Response;

    async fn from_request(request: Request, _: &S) -> Result<RequestBody, Response> {
        match crate::ingress::body::read_to_limit(request.into_body(), RequestBody::LIMIT).await {
            Ok(body) => Ok(RequestBody(body)),
            Err(error @ crate::ingress::body::BodyReadError::TooLarge { .. }) => {
                Err((StatusCode::PAYLOAD_TOO_LARGE, error.to_string()).into_response())
            }
            Err(error) => Err(ApiError::BadRequest(error.to_string()).into_response()),
        }
    }
}

/// The admin token to require, and whether it was just generated (and so must be shown once).
pub enum AdminToken {
    Configured,
    Stored,
    Generated(String),
}

const ADMIN_TOKEN_SETTING: &str = "admin_token_sha256";

/// Decides the admin token: the configured one, else the one generated on an earlier start,
/// else a new one (stored as a hash, shown once). A configured token's hash replaces the stored
/// one, so a generated token, once replaced, never works again. Returns the token's SHA-256.
pub async fn admin_token(store: &Store, configured: Option<&str>) -> Result<(String, AdminToken), StoreError> {
    if let Some(token) = configured {
        let hash = sha256_hex(token);
        store.put_setting(ADMIN_TOKEN_SETTING, &hash).await?;
        return Ok((hash, AdminToken::Configured));
    }
    if let Some(hash) = store.setting(ADMIN_TOKEN_SETTING).await? {
        return Ok((hash, AdminToken::Stored));
    }
    let token = format!("hgat_{}", crate::secrets::random_token(32));
    let hash = sha256_hex(&token);
    let stored = store.put_setting_if_absent(ADMIN_TOKEN_SETTING, &hash).await?;
    if stored == hash { Ok((hash, AdminToken::Generated(token))) } else { Ok((stored, AdminToken::Stored)) }
}

/// Why a management request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "send the admin token or a management key as \"Authorization: Bearer <key>\" or \"X-API-Key: <key>\", or the pair \"X-API-KEY: <key id>\" and \"X-API-SECRET: <key>\""
    )]
    Unauthorized,
    #[error("{0}")]
    InvalidCredentials(String),
    #[error("{0}")]
    Forbidden(String),
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
    #[error("{0}")]
    TooManyStreams(String),
    #[error("the store is not available; retry later")]
    Store(#[from] StoreError),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The reply's status and the error's code: one table for every face of the API.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::InvalidCredentials(_) => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::InvalidDefinition(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_definition"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::InvalidFields(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::TooManyStreams(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_streams"),
            ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Logs the cause the reply does not tell (store and internal failures); client errors are
    /// not logged.
    pub fn log_cause(&self) {
        match self {
            ApiError::Store(error) => tracing::error!(%error, "A management request failed in the store."),
            ApiError::Internal(cause) => tracing::error!(%cause, "A management request failed."),
            _ => {}
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        self.log_cause();
        let mut error = json!({"code": code, "message": self.to_string()});
        if let ApiError::InvalidFields(fields) = &self {
            error["fields"] = json!(fields);
        }
        if let ApiError::InvalidDefinition(diagnostics) = &self {
            error["diagnostics"] = json!(diagnostics);
            error["message"] = json!(diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
        }
        let mut response = (status, Json(json!({"error": error}))).into_response();
        if matches!(self, ApiError::TooManyStreams(_)) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if matches!(self, ApiError::Unauthorized | ApiError::InvalidCredentials(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"hookgate-admin\""));
        }
        response
    }
}

/// The management routes, behind a credential, plus the unauthenticated probes. The public
/// routes (hooks and sources) are served in front of it by `ingress`.
pub fn router(state: Arc<ApiState>) -> Router {
    let admin_only = Router::new()
        .route("/apps", get(apps::list).post(apps::install))
        .route("/apps/{app}", get(apps::show).delete(apps::remove))
        .route("/definitions/reload", post(apps::reload))
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/sources/rejections", get(sources::rejections))
        .route("/events/purge", post(events::purge))
        .route_layer(axum::middleware::from_fn(require_admin));
    // `layer` (not `route_layer`) so that unknown /api paths are behind a credential too.
    let api = Router::new()
        .merge(admin_only)
        .route("/hooks", get(hooks::list))
        .route("/hooks/{event_name}/sample", get(hooks::sample))
        .route("/events", get(events::list))
        .route("/events/stream", get(stream::stream))
        .route("/events/{id}", get(events::show))
        .route("/events/{id}/raw", get(events::raw))
        .route("/events/{id}/replay", post(events::replay))
        .route("/webhooks", get(subscriptions::list).post(subscriptions::create).delete(subscriptions::delete_by_body))
        .route("/webhooks/{id}", any(subscriptions::by_id))
        .route("/webhooks/{id}/rotate-secret", post(subscriptions::rotate_secret))
        .route("/webhooks/{id}/deliveries", get(subscriptions::deliveries))
        .route("/webhooks/{id}/test", post(subscriptions::send_test))
        .route("/openapi.json", get(openapi))
        .route("/webhooks/{id}/deliveries/{delivery_id}/retry", post(subscriptions::retry_delivery))
        .route("/webhooks/{id}/deliveries/retry", post(deliveries::retry_subscription))
        .route("/deliveries", get(deliveries::list))
        .route("/deliveries/retry", post(deliveries::retry_all))
        .route("/jobs/{id}", get(deliveries::show_job))
        // Seed 001's face (faces::integrations).
        .route("/integrations/webhooks", get(integrations::list).post(integrations::create))
        .route(
            "/integrations/webhooks/{id}",
            get(integrations::show).patch(integrations::update).delete(integrations::delete),
        )
        .route("/integrations/webhooks/{id}/rotate-secret", post(integrations::rotate_secret))
        .route("/integrations/webhooks/{id}/deliveries", get(integrations::deliveries))
        .route("/integrations/webhooks/{id}/deliveries/{delivery_id}/retry", post(subscriptions::retry_delivery))
        .route("/integrations/webhooks/{id}/test", post(integrations::send_test))
        // Seed 004's face (faces::jsonapi); {id} is also {event}_sample.
        .route("/v1/hooks", get(jsonapi::list).post(jsonapi::create))
        .route("/v1/hooks/{id}", get(jsonapi::show).delete(jsonapi::delete))
        .fallback(|| async { ApiError::NotFound("no such management endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_credential));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .nest("/api", api)
        .fallback(|| async { ApiError::NotFound("nothing here; hooks are under /h/ and the API under /api/".into()) })
        .with_state(state)
}

/// Who is calling the management API, and so what it may touch.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// The admin token: everything.
    Admin,
    /// A management key: subscriptions, hooks and events within its scopes (all when `None`).
    Key { scopes: Option<Vec<String>> },
}

impl Access {
    /// Whether anything is out of reach: only a key with scopes is limited.
    pub fn is_scoped(&self) -> bool {
        matches!(self, Access::Key { scopes: Some(_) })
    }

    /// Whether a subscription to `pattern` is within reach.
    pub fn covers_pattern(&self, pattern: &str) -> bool {
        match self {
            Access::Admin | Access::Key { scopes: None } => true,
            Access::Key { scopes: Some(scopes) } => {
                scopes.iter().any(|scope| crate::subscriptions::pattern_covers(scope, pattern))
            }
        }
    }

    /// Whether events named `name` are within reach.
    pub fn covers_event(&self, name: &str) -> bool {
        match self {
            Access::Admin | Access::Key { scopes: None } => true,
            Access::Key { scopes: Some(scopes) } => {
                scopes.iter().any(|scope| crate::subscriptions::pattern_matches(scope, name))
            }
        }
    }

    /// Whether a subscription is within reach: every pattern it subscribes to is. Others are
    /// invisible to the key (404), as if they did not exist.
    pub fn reaches(&self, subscription: &crate::subscriptions::Subscription) -> bool {
        subscription.events.iter().all(|pattern| self.covers_pattern(pattern))
    }

    /// Refuses (403) anything but the admin token: apps, keys, definition reloads and source
    /// rejections are the operator's.
    pub fn admin_only(&self) -> Result<(), ApiError> {
        match self {
            Access::Admin => Ok(()),
            Access::Key { .. } => Err(ApiError::Forbidden(
                "this endpoint takes the admin token; management keys manage subscriptions, hooks and events".into(),
            )),
        }
    }

    /// Refuses (403) the patterns out of reach, naming them and the key's scopes.
    pub fn check_patterns<'a>(&self, patterns: impl IntoIterator<Item = &'a String>) -> Result<(), ApiError> {
        let outside: Vec<String> =
            patterns.into_iter().filter(|pattern| !self.covers_pattern(pattern)).map(|p| format!("{p:?}")).collect();
        match self {
            Access::Key { scopes: Some(scopes) } if !outside.is_empty() => Err(ApiError::Forbidden(format!(
                "this key's scopes ({}) do not cover {}",
                scopes.join(", "),
                outside.join(", ")
            ))),
            _ => Ok(()),
        }
    }
}

/// Resolves the request's credential into an [`Access`] for the handlers, or refuses it.
async fn require_credential(State(state): State<Arc<ApiState>>, mut request: Request, next: Next) -> Response {
    match authenticate(&state, request.headers()).await {
        Ok(access) => {
            request.extensions_mut().insert(access);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

/// Behind [`require_credential`]: lets only the admin token through.
async fn require_admin(request: Request, next: Next) -> Response {
    let access = request.extensions().get::<Access>().cloned().unwrap_or(Access::Key { scopes: Some(Vec::new()) });
    match access.admin_only() {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// Who the request's credential is: the admin token or an active management key, in any of
/// the accepted header styles.
async fn authenticate(state: &ApiState, headers: &axum::http::HeaderMap) -> Result<Access, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    let (key, claimed_id) = match header("x-api-secret") {
        Some(secret) => {
            let id = header("x-api-key").filter(|id| !id.is_empty()).ok_or_else(|| {
                ApiError::InvalidCredentials("X-API-SECRET needs the key's id in X-API-KEY beside it".into())
            })?;
            (secret, Some(id))
        }
        None => (crate::keys::presented_key(headers).ok_or(ApiError::Unauthorized)?, None),
    };
    access_for_key_hash(state, &sha256_hex(key), claimed_id).await
}

/// Who holds the key whose SHA-256 (hex) is `hash`: the admin token, or an active management
/// key (whose id must be `claimed_id` when one is claimed) with its scopes resolved now. The
/// console resolves its sessions' credential through here on every request, so a revoked key
/// or a changed named scope takes effect at once there too.
pub async fn access_for_key_hash(state: &ApiState, hash: &str, claimed_id: Option<&str>) -> Result<Access, ApiError> {
    if claimed_id.is_none() && constant_time_eq(hash.as_bytes(), state.admin_token_sha256.as_bytes()) {
        return Ok(Access::Admin);
    }
    let invalid = || ApiError::InvalidCredentials("the key is not valid (unknown or revoked)".into());
    let record = state.store.active_api_key_by_hash(hash).await?.ok_or_else(invalid)?;
    if claimed_id.is_some_and(|id| id != record.id) {
        return Err(invalid());
    }
    match record.purpose {
        crate::store::KeyPurpose::Management => {
            // Named scopes stand for the patterns the serving apps declare for them (none when
            // no app does), so a key follows its apps' definitions as they change.
            let catalog = state.catalog.current();
            let scopes = record.scopes.map(|scopes| {
                scopes
                    .into_iter()
                    .flat_map(|scope| match catalog.scope(&scope) {
                        Some(patterns) => patterns.to_vec(),
                        None if crate::definitions::is_scope_name(&scope) => Vec::new(),
                        None => vec![scope],
                    })
                    .collect()
            });
            Ok(Access::Key { scopes })
        }
        crate::store::KeyPurpose::Ingest => Err(ApiError::Forbidden(
            "this is an ingest key for sending to web hooks; the management API takes a management key".into(),
        )),
    }
}

/// The OpenAPI document of the management API (`docs/openapi.json`, kept true by a test).
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("../../docs/openapi.json")).into_response()
}

async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({"status": "ready", "hooks": state.catalog.current().hooks().len()})).into_response(),
        Err(error) => {
            tracing::warn!(%error, "Readiness check failed: the store does not answer.");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "reason": "store"}))).into_response()
        }
    }
}

async fn render_metrics(State(state): State<Arc<ApiState>>) -> Response {
    // Read when scraped: the budget counts its bytes itself, whatever the number of bodies.
    metrics::gauge!("hookgate_body_bytes_in_flight").set(state.body_budget.in_use() as f64);
    let body = state.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
