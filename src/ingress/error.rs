//! [`IngressError`]: why a request did not become an event, mapped to a reply in exactly one
//! place, [`IngressError::into_response`]. Its [`IngressError::code`] is both the reply's code
//! and the `outcome` label of the request metrics. Client errors are not logged at error level;
//! a store failure gets a generic reply and a logged cause.

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::fairness::RateScope;
use crate::email::Refusal;
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
    MailRefused(Refusal),
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
    #[error("the gateway is receiving too many request bodies at once ({0}); retry shortly")]
    OverBudget(#[source] crate::ingress::budget::OverBudget),
    #[error("the request body could not be read: {0}")]
    BodyUnreadable(String),
    #[error("{0}")]
    MalformedBody(String),
    #[error("the payload does not fit this hook's shape: {}", .0.reasons.join("; "))]
    Misfit(crate::shape::Misfit),
    #[error("the hook's transformation (version {version}) failed: {error}")]
    Transformation { version: String, error: crate::transform::TransformError },
    #[error("{}", store_refusal(.0))]
    Store(#[source] StoreError),
    #[error("{}; retry after {retry_after_secs} seconds", rate_limited_reason(*.scope))]
    RateLimited { scope: RateScope, retry_after_secs: u64 },
}

fn rate_limited_reason(scope: RateScope) -> &'static str {
    match scope {
        RateScope::Client => "too many requests from your address",
        RateScope::Hook => "too many requests to this hook",
        RateScope::Source => "too many requests to this source",
    }
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
            IngressError::OverBudget(_) => "bodies_over_budget",
            IngressError::BodyUnreadable(_) => "body_unreadable",
            IngressError::MalformedBody(_) => "malformed_body",
            IngressError::Misfit(_) => "shape_mismatch",
            IngressError::Store(StoreError::Full(_)) => "storage_full",
            IngressError::Transformation { .. } => "transformation_failed",
            IngressError::Store(_) => "store_unavailable",
            IngressError::RateLimited { .. } => "rate_limited",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            IngressError::UnknownHook | IngressError::UnknownSource => StatusCode::NOT_FOUND,
            IngressError::Unverified(_) => StatusCode::UNAUTHORIZED,
            IngressError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            IngressError::MailRefused(refusal) => match refusal {
                Refusal::Unreadable => StatusCode::BAD_REQUEST,
                Refusal::SenderNotAllowed(_) => StatusCode::FORBIDDEN,
                Refusal::MissingKey | Refusal::KeyNotConfigured => StatusCode::UNAUTHORIZED,
                Refusal::NotAuthenticated => StatusCode::FORBIDDEN,
                Refusal::NothingToExtract(_) => StatusCode::UNPROCESSABLE_ENTITY,
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
            IngressError::Misfit(_) | IngressError::Transformation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            IngressError::Store(_) | IngressError::OverBudget(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngressError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
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
        if let IngressError::Transformation { version, error } = &self {
            body["error"]["transformVersion"] = json!(version);
            body["error"]["outcome"] = json!(error.code());
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
            IngressError::OverBudget(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            IngressError::BodyTooLarge { .. } | IngressError::BodyTimeout { .. } => {
                // The rest of the body was not read: the connection cannot be reused.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            IngressError::Store(error) => {
                tracing::error!(%error, "A request could not be stored; the sender was told to retry.");
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after_secs(error)));
            }
            IngressError::RateLimited { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                // The body, if any, was not read.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// What the sender is told when its event could not be stored: the cause's class, never the
/// store's own message (that is logged).
fn store_refusal(error: &StoreError) -> &'static str {
    match error {
        StoreError::Full(_) => "the gateway's storage is full, so the event was not stored; retry later",
        _ => "the event could not be stored; retry later",
    }
}

/// `Retry-After` of a store refusal: a full disk takes an operator, so a longer wait.
fn retry_after_secs(error: &StoreError) -> &'static str {
    match error {
        StoreError::Full(_) => "30",
        _ => "5",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        check(IngressError::OverBudget(crate::ingress::budget::OverBudget { total: 1 }), 503);
        check(IngressError::RateLimited { scope: RateScope::Client, retry_after_secs: 1 }, 429);
        check(IngressError::Store(StoreError::Full("x".into())), 503);
    }

    #[test]
    fn a_full_disk_is_told_apart_from_other_store_failures() {
        let full = IngressError::Store(StoreError::Full("database or disk is full".into()));
        assert_eq!(full.code(), "storage_full");
        assert!(full.to_string().contains("storage is full"), "{full}");
        let response = full.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
        let away = IngressError::Store(StoreError::Unavailable("connection refused".into()));
        assert_eq!(away.code(), "store_unavailable");
        assert_eq!(away.into_response().headers()[header::RETRY_AFTER], "5");
    }
}
