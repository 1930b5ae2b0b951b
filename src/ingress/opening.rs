//! The opening steps every HTTP ingress path shares, written once and called by all of them:
//! hooks (`/h/{token}`, form and web), sources (`/api/webhooks/{source}` and a source hook's
//! `/h/` URL) and mail posted to an email hook's URL.
//!
//! [`observe`] wraps each request to a known hook in one tracing span (`hook_request`, with the
//! hook and, once stored, the event id) and records its metrics labelled by the hook's event
//! name, never by the request path: `hookgate_requests_total{hook, outcome}` and, for accepted
//! requests, `hookgate_ingest_duration_seconds{hook}`.
//!
//! [`open`] runs after a transport's own cheap checks (method, origin, key, content type), in
//! this order, cheapest first: the hook's and its source's request rates, when configuration
//! gives them one (429 with `Retry-After`), the content encoding (identity only, else 415), the declared
//! length against the hook's limit (413 before a byte of the body is read), then the body
//! itself, read into one buffer under the same limit (413) and the body deadline (408).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::future::Future;
use std::time::{Duration, Instant};
use tracing::Instrument;

use super::{IngressError, IngressSettings, PeerAddr};
use crate::definitions::catalog::Hook;
use crate::event::{HookType, RequestMeta};

/// A request whose opening steps passed: its head, what an event records of it, and its body.
pub(super) struct Opened {
    pub parts: http::request::Parts,
    pub meta: RequestMeta,
    pub body: Bytes,
}

/// Runs `handle` for a request to `hook` in the request's span, records the request's metrics
/// by hook and outcome, and turns a failure into its reply.
pub(super) async fn observe(hook: &Hook, handle: impl Future<Output = Result<Response, IngressError>>) -> Response {
    let started = Instant::now();
    let span =
        tracing::info_span!("hook_request", hook = %hook.definition.event_name, event_id = tracing::field::Empty);
    let outcome = handle.instrument(span.clone()).await;
    let hook_label = hook.definition.event_name.clone();
    match outcome {
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
    }
}

/// The reply to a request for no hook (an unknown token or source), counted as `hook="unknown"`.
pub(super) fn unknown(error: IngressError) -> Response {
    metrics::counter!("hookgate_requests_total", "hook" => "unknown", "outcome" => error.code()).increment(1);
    error.into_response()
}

/// The opening steps: content encoding, declared length, then the body under its limit and
/// deadline.
pub(super) async fn open(settings: &IngressSettings, hook: &Hook, request: Request) -> Result<Opened, IngressError> {
    let source = hook.definition.source.as_ref().map(|source| source.path.as_str());
    settings.hook_rates.take(&hook.definition.event_name, source).map_err(|(scope, wait)| {
        IngressError::RateLimited { scope, retry_after_secs: super::fairness::retry_after_secs(wait) }
    })?;
    refuse_content_encoding(request.headers())?;
    let limit = body_limit(settings, hook);
    if declared_length(request.headers()).is_some_and(|length| length > limit) {
        return Err(IngressError::BodyTooLarge { limit });
    }
    let meta = request_meta(&request);
    let (parts, body) = request.into_parts();
    let body = read_body(body, limit, settings.body_timeout).await?;
    Ok(Opened { parts, meta, body })
}

/// The hook's own limit, else the gateway's: the message size for email hooks, the body size
/// for the others.
fn body_limit(settings: &IngressSettings, hook: &Hook) -> u64 {
    let default = match hook.definition.hook_type {
        HookType::Email => settings.max_message_bytes,
        // No definition has the internal type.
        HookType::Form | HookType::Web | HookType::Internal => settings.max_body_bytes,
    };
    hook.definition.max_body_bytes.unwrap_or(default)
}

/// Bodies are taken as sent: a compressed body would be verified and stored as something other
/// than what it means.
fn refuse_content_encoding(headers: &HeaderMap) -> Result<(), IngressError> {
    match headers.get(header::CONTENT_ENCODING) {
        Some(encoding) if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") => {
            let encoding = String::from_utf8_lossy(encoding.as_bytes()).into_owned();
            Err(IngressError::UnsupportedMediaType(format!(
                "Content-Encoding {encoding:?} is not supported; send the body uncompressed"
            )))
        }
        _ => Ok(()),
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()).and_then(|value| value.parse().ok())
}

fn request_meta(request: &Request) -> RequestMeta {
    let peer = request.extensions().get::<PeerAddr>().map(|peer| peer.0.to_string());
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    RequestMeta { peer, headers }
}

/// Reads the whole body into one buffer, refusing it past `limit` bytes or `deadline`.
async fn read_body(body: Body, limit: u64, deadline: Duration) -> Result<Bytes, IngressError> {
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(deadline, limited.collect()).await {
        Err(_) => Err(IngressError::BodyTimeout { seconds: deadline.as_secs() }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(IngressError::BodyTooLarge { limit }),
        Ok(Err(error)) => Err(IngressError::BodyUnreadable(error.to_string())),
    }
}
