//! The hook endpoint `/h/{token}`: one request in, one durable event out.
//!
//! Checks run cheapest first and nothing is stored unless all pass: the hook exists (404
//! without revealing what exists), the method (405), the origin for form hooks (403), the API
//! key for web hooks (401/403), the content type (415), the declared length (413), then the
//! body is read under its limit and deadline (413/408), parsed (400) and appended. The 202
//! reply, carrying the event id, goes out only after the store has committed.
//! [`IngressError`] is mapped to a reply in exactly one place, [`IngressError::into_response`].

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

use super::PeerAddr;
use super::payload::{self, PayloadError, PayloadLimits};
use crate::AppState;
use crate::definitions::catalog::Hook;
use crate::event::HookType;
use crate::event::{RequestMeta, normalize};
use crate::secrets::{constant_time_eq, sha256_hex};
use crate::shape::{Shape, Shaped};
use crate::store::StoreError;

/// Why a request to a hook did not become an event.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("no hook is defined at this URL")]
    UnknownHook,
    #[error("no source is defined at this URL")]
    UnknownSource,
    #[error("the subscription handshake was refused: the verify token does not match")]
    HandshakeRefused,
    #[error("the request is not verified: {0}")]
    Unverified(#[source] crate::verify::VerifyError),
    #[error("{method} is not allowed here; use POST")]
    MethodNotAllowed { method: Method, allow: &'static str },
    #[error("{0}")]
    MailRefused(crate::email::Refusal),
    #[error("origin {origin:?} may not post to this hook")]
    OriginNotAllowed { origin: String },
    #[error("this hook requires an API key: send it as \"Authorization: Bearer <key>\" or \"X-API-Key: <key>\"")]
    MissingApiKey,
    #[error("the API key is not valid (unknown or revoked)")]
    InvalidApiKey,
    #[error("this API key may not send to app {app:?}")]
    ApiKeyOutOfScope { app: String },
    #[error("this is a management key; web hooks take an ingest key (hookgate keys create)")]
    NotAnIngestKey,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body is larger than this hook's limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the request body was not received within {seconds} seconds")]
    BodyTimeout { seconds: u64 },
    #[error("the request body could not be read: {0}")]
    BodyUnreadable(String),
    #[error("{0}")]
    MalformedBody(String),
    #[error("the payload does not fit this hook's shape: {}", .0.reasons.join("; "))]
    Misfit(crate::shape::Misfit),
    #[error("the event could not be stored; retry later")]
    Store(#[source] StoreError),
}

impl IngressError {
    /// The machine-readable code, also the `outcome` label of the request metrics.
    pub fn code(&self) -> &'static str {
        match self {
            IngressError::UnknownHook => "hook_not_found",
            IngressError::UnknownSource => "source_not_found",
            IngressError::HandshakeRefused => "handshake_refused",
            IngressError::Unverified(error) => error.reason_class(),
            IngressError::MethodNotAllowed { .. } => "method_not_allowed",
            IngressError::MailRefused(refusal) => crate::email::refusal_label(refusal),
            IngressError::OriginNotAllowed { .. } => "origin_not_allowed",
            IngressError::MissingApiKey => "missing_api_key",
            IngressError::InvalidApiKey => "invalid_api_key",
            IngressError::ApiKeyOutOfScope { .. } => "api_key_out_of_scope",
            IngressError::NotAnIngestKey => "not_an_ingest_key",
            IngressError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngressError::BodyTooLarge { .. } => "body_too_large",
            IngressError::BodyTimeout { .. } => "body_timeout",
            IngressError::BodyUnreadable(_) => "body_unreadable",
            IngressError::MalformedBody(_) => "malformed_body",
            IngressError::Misfit(_) => "shape_mismatch",
            IngressError::Store(_) => "store_unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            IngressError::UnknownHook | IngressError::UnknownSource => StatusCode::NOT_FOUND,
            IngressError::Unverified(_) => StatusCode::UNAUTHORIZED,
            IngressError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            IngressError::MailRefused(refusal) => match refusal {
                crate::email::Refusal::Unreadable => StatusCode::BAD_REQUEST,
                crate::email::Refusal::SenderNotAllowed(_) => StatusCode::FORBIDDEN,
                crate::email::Refusal::MissingKey | crate::email::Refusal::KeyNotConfigured => StatusCode::UNAUTHORIZED,
                crate::email::Refusal::NotAuthenticated => StatusCode::FORBIDDEN,
                crate::email::Refusal::NothingToExtract(_) => StatusCode::UNPROCESSABLE_ENTITY,
            },
            IngressError::OriginNotAllowed { .. }
            | IngressError::ApiKeyOutOfScope { .. }
            | IngressError::NotAnIngestKey
            | IngressError::HandshakeRefused => StatusCode::FORBIDDEN,
            IngressError::MissingApiKey | IngressError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            IngressError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngressError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngressError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            IngressError::BodyUnreadable(_) | IngressError::MalformedBody(_) => StatusCode::BAD_REQUEST,
            IngressError::Misfit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            IngressError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        if let IngressError::Misfit(misfit) = &self {
            body["error"]["reasons"] = json!(misfit.reasons);
        }
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            IngressError::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            IngressError::MissingApiKey | IngressError::InvalidApiKey => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"hookgate\""));
            }
            IngressError::BodyTooLarge { .. } | IngressError::BodyTimeout { .. } => {
                // The rest of the body was not read: the connection cannot be reused.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            IngressError::Store(error) => {
                tracing::error!(%error, "A request could not be stored; the sender was told to retry.");
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// Handles every method on `/h/{token}`.
pub async fn receive(State(state): State<Arc<AppState>>, Path(token): Path<String>, request: Request) -> Response {
    let started = Instant::now();
    let catalog = state.catalog.current();
    let Some(hook) = catalog.hook_by_token(&token).cloned() else {
        return unknown().await;
    };
    drop(catalog);
    let cors = Cors::for_request(&hook, request.headers());
    let span =
        tracing::info_span!("hook_request", hook = %hook.definition.event_name, event_id = tracing::field::Empty);
    let outcome = handle(&state, &hook, &cors, request).instrument(span.clone()).await;
    let hook_label = hook.definition.event_name.clone();
    let mut response = match outcome {
        Ok(response) => {
            metrics::counter!("hookgate_requests_total", "hook" => hook_label.clone(), "outcome" => "accepted")
                .increment(1);
            metrics::histogram!("hookgate_ingest_duration_seconds", "hook" => hook_label)
                .record(started.elapsed().as_secs_f64());
            response
        }
        Err(error) => {
            metrics::counter!("hookgate_requests_total", "hook" => hook_label, "outcome" => error.code()).increment(1);
            tracing::debug!(parent: &span, error = %error, "A hook request was rejected.");
            error.into_response()
        }
    };
    cors.decorate(response.headers_mut());
    response
}

/// Any path under `/h/` that cannot be a hook URL: the same reply as an unknown token.
pub async fn unknown() -> Response {
    metrics::counter!("hookgate_requests_total", "hook" => "unknown", "outcome" => "hook_not_found").increment(1);
    IngressError::UnknownHook.into_response()
}

async fn handle(state: &AppState, hook: &Arc<Hook>, cors: &Cors, request: Request) -> Result<Response, IngressError> {
    let definition = &hook.definition;
    if definition.source.is_some() {
        return super::sources::handle(state, hook, request).await;
    }
    if definition.hook_type == HookType::Email {
        return super::mail::handle(state, hook, request).await;
    }
    let is_form = definition.hook_type == HookType::Form;
    let preflight = match *request.method() {
        Method::POST => false,
        Method::OPTIONS if is_form => true,
        ref method => {
            let allow = if is_form { "POST, OPTIONS" } else { "POST" };
            return Err(IngressError::MethodNotAllowed { method: method.clone(), allow });
        }
    };
    if let Cors::Refused { origin } = cors {
        return Err(IngressError::OriginNotAllowed { origin: origin.clone() });
    }
    if preflight {
        return Ok(cors.preflight(request.headers()));
    }
    if definition.hook_type == HookType::Web {
        authenticate(state, hook, request.headers()).await?;
    }
    let content_type =
        request.headers().get(header::CONTENT_TYPE).map(|value| value.to_str().unwrap_or("<not text>").to_owned());
    let media_kind = payload::media_kind(content_type.as_deref())
        .map_err(|error| IngressError::UnsupportedMediaType(error.to_string()))?;
    if let Some(encoding) = request.headers().get(header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        let encoding = String::from_utf8_lossy(encoding.as_bytes()).into_owned();
        return Err(IngressError::UnsupportedMediaType(format!(
            "Content-Encoding {encoding:?} is not supported; send the body uncompressed"
        )));
    }
    let limit = definition.max_body_bytes.unwrap_or(state.config.max_body_bytes);
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > limit) {
        return Err(IngressError::BodyTooLarge { limit });
    }
    let meta = request_meta(&request);
    let body = read_body(request.into_body(), limit, state.config.body_timeout()).await?;
    let limits = PayloadLimits {
        max_file_bytes_kept: definition.max_file_bytes.unwrap_or(state.config.max_file_bytes) as usize,
    };
    let data = payload::parse_payload(content_type.as_deref(), body.clone(), &limits).await.map_err(
        |error: PayloadError| {
            if error.is_unsupported_media_type() {
                IngressError::UnsupportedMediaType(error.to_string())
            } else {
                IngressError::MalformedBody(error.to_string())
            }
        },
    )?;
    let (data, quarantined) = apply_shape(definition, data)?;
    let mut new_event = normalize(hook.identity(), &meta, data, body, jiff::Timestamp::now());
    new_event.data_is_raw_json = media_kind.is_json() && !definition.shape.as_ref().is_some_and(Shape::projects);
    new_event.event.quarantined = quarantined;
    let received_at = new_event.event.received_at;
    let appended = state.committer.commit(vec![new_event]).await.map_err(IngressError::Store)?;
    let id = appended
        .into_iter()
        .next()
        .map(|appended| appended.id)
        .ok_or_else(|| IngressError::Store(StoreError::Unavailable("the store acknowledged no event".into())))?;
    tracing::Span::current().record("event_id", id.as_str());
    if let Some(redirect) = &definition.redirect_url
        && media_kind.is_html_form()
    {
        let mut response = StatusCode::SEE_OTHER.into_response();
        if let Ok(location) = HeaderValue::from_str(redirect) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return Ok(response);
    }
    let mut body = json!({"id": id, "name": definition.event_name, "receivedAt": received_at});
    if quarantined {
        body["quarantined"] = json!(true);
    }
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// Applies the hook's shape: the data to store and whether it is quarantined, or a 422.
pub(super) fn apply_shape(
    definition: &crate::definitions::HookDefinition,
    data: serde_json::Value,
) -> Result<(serde_json::Value, bool), IngressError> {
    let Some(shape) = &definition.shape else { return Ok((data, false)) };
    match shape.apply(data).map_err(IngressError::Misfit)? {
        Shaped::Fits(data) => Ok((data, false)),
        Shaped::Quarantined { data, misfit } => {
            tracing::info!(hook = %definition.event_name, reasons = ?misfit.reasons, "A payload that does not fit its hook's shape was quarantined.");
            Ok((data, true))
        }
    }
}

/// Checks a web hook's API key: a static key from the definition, or an issued key that is
/// active and in scope for the hook's app.
async fn authenticate(state: &AppState, hook: &Hook, headers: &HeaderMap) -> Result<(), IngressError> {
    let key = presented_key(headers).ok_or(IngressError::MissingApiKey)?;
    let hash = sha256_hex(key);
    let static_match = hook
        .definition
        .static_key_hashes
        .iter()
        .fold(false, |found, accepted| found | constant_time_eq(accepted.as_bytes(), hash.as_bytes()));
    if static_match {
        return Ok(());
    }
    let record = state
        .store
        .active_api_key_by_hash(&hash)
        .await
        .map_err(IngressError::Store)?
        .ok_or(IngressError::InvalidApiKey)?;
    if record.purpose != crate::store::KeyPurpose::Ingest {
        return Err(IngressError::NotAnIngestKey);
    }
    match &record.apps {
        Some(apps) if !apps.contains(&hook.app) => Err(IngressError::ApiKeyOutOfScope { app: hook.app.clone() }),
        _ => Ok(()),
    }
}

/// The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`. Another `Authorization`
/// scheme (a proxy's Basic auth, say) does not hide an `X-API-Key`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, credential)| scheme.eq_ignore_ascii_case("bearer") && !credential.trim().is_empty())
        .map(|(_, credential)| credential.trim());
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|key| !key.is_empty()))
}

pub(super) fn request_meta(request: &Request) -> RequestMeta {
    let peer = request.extensions().get::<PeerAddr>().map(|peer| peer.0.to_string());
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    RequestMeta { peer, headers }
}

pub(super) async fn read_body(
    body: Body,
    limit: u64,
    deadline: std::time::Duration,
) -> Result<bytes::Bytes, IngressError> {
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(deadline, limited.collect()).await {
        Err(_) => Err(IngressError::BodyTimeout { seconds: deadline.as_secs() }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(IngressError::BodyTooLarge { limit }),
        Ok(Err(error)) => Err(IngressError::BodyUnreadable(error.to_string())),
    }
}

/// The CORS decision for one request to a hook. Only form hooks take part in CORS.
#[derive(Debug)]
enum Cors {
    /// Not a cross-origin browser request, or not a form hook.
    NotApplicable,
    /// The origin may post; the reply carries this `Access-Control-Allow-Origin`.
    Allowed { allow_origin: HeaderValue, vary: bool },
    /// The hook lists its origins and this one is not among them.
    Refused { origin: String },
}

impl Cors {
    fn for_request(hook: &Hook, headers: &HeaderMap) -> Cors {
        if hook.definition.hook_type != HookType::Form {
            return Cors::NotApplicable;
        }
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return Cors::NotApplicable;
        };
        match &hook.definition.allowed_origins {
            None => Cors::Allowed { allow_origin: HeaderValue::from_static("*"), vary: false },
            Some(allowed) if allowed.iter().any(|a| a == "*") => {
                Cors::Allowed { allow_origin: HeaderValue::from_static("*"), vary: false }
            }
            Some(allowed) if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) => {
                match HeaderValue::from_str(origin) {
                    Ok(allow_origin) => Cors::Allowed { allow_origin, vary: true },
                    Err(_) => Cors::Refused { origin: origin.to_owned() },
                }
            }
            Some(_) => Cors::Refused { origin: origin.to_owned() },
        }
    }

    fn decorate(&self, headers: &mut HeaderMap) {
        if let Cors::Allowed { allow_origin, vary } = self {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin.clone());
            if *vary {
                headers.append(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
    }

    /// The reply to a preflight `OPTIONS` request.
    fn preflight(&self, request_headers: &HeaderMap) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
        if matches!(self, Cors::Allowed { .. }) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
            let requested = request_headers
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("content-type"));
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn keys_are_read_from_bearer_or_x_api_key() {
        assert_eq!(presented_key(&headers(&[("authorization", "Bearer abc")])), Some("abc"));
        assert_eq!(presented_key(&headers(&[("authorization", "bearer  abc ")])), Some("abc"));
        assert_eq!(presented_key(&headers(&[("x-api-key", "xyz")])), Some("xyz"));
        assert_eq!(presented_key(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(presented_key(&headers(&[("authorization", "Basic abc"), ("x-api-key", "xyz")])), Some("xyz"));
        assert_eq!(presented_key(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(presented_key(&headers(&[])), None);
    }

    #[test]
    fn every_rejection_has_its_status() {
        let check = |error: IngressError, status: u16| assert_eq!(error.status().as_u16(), status, "{error}");
        check(IngressError::UnknownHook, 404);
        check(IngressError::MethodNotAllowed { method: Method::GET, allow: "POST" }, 405);
        check(IngressError::MissingApiKey, 401);
        check(IngressError::InvalidApiKey, 401);
        check(IngressError::ApiKeyOutOfScope { app: "a".into() }, 403);
        check(IngressError::UnsupportedMediaType("x".into()), 415);
        check(IngressError::BodyTooLarge { limit: 1 }, 413);
        check(IngressError::BodyTimeout { seconds: 1 }, 408);
        check(IngressError::MalformedBody("x".into()), 400);
        check(IngressError::Store(StoreError::Unavailable("x".into())), 503);
    }
}
