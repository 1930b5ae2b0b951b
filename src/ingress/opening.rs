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
//!
//! The buffer is one allocation sized by the declared length (capped by the limit), or, for a
//! body of unknown length, grown by doubling: never a list of the frames as they came, since a
//! frame of one byte can pin a whole read buffer of the connection's. Its bytes are reserved in
//! the process's [`BodyBudget`] before it grows (`503` with `Retry-After` when there is no room)
//! and held until the request's work is over ([`Opened::reservation`]). A body refused for its
//! size (or for the budget) is read on and discarded for a while after the reply (`linger`),
//! as nginx's lingering close does, so that a client still sending reads the reply instead of a
//! reset connection.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::future::Future;
use std::time::{Duration, Instant};
use tracing::Instrument;

use super::budget::{BodyBudget, Reservation};
use super::{IngressError, IngressSettings, PeerAddr};
use crate::definitions::catalog::Hook;
use crate::event::{HookType, RequestMeta};

/// A request whose opening steps passed: its head, what an event records of it, and its body.
pub(super) struct Opened {
    pub parts: http::request::Parts,
    pub meta: RequestMeta,
    pub body: Bytes,
    /// The body's bytes in the process's budget: keep it until the request's work is over.
    pub reservation: Reservation,
}

/// The buffer of a body of unknown length starts at this size, then doubles.
const FIRST_BUFFER_BYTES: u64 = 16 * 1024;
/// After a body is refused, the rest of it is read and discarded for at most this long...
const LINGER_TIME: Duration = Duration::from_secs(10);
/// ...and at most this many bytes, before the connection is closed...
const LINGER_BYTES: u64 = 64 * 1024 * 1024;
/// ...and no longer than this after the client last sent something (nginx's
/// `lingering_timeout`): a client that sends no more is not waited for.
const LINGER_IDLE: Duration = Duration::from_secs(2);

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
pub(super) async fn open(
    settings: &IngressSettings,
    budget: &BodyBudget,
    hook: &Hook,
    request: Request,
) -> Result<Opened, IngressError> {
    let source = hook.definition.source.as_ref().map(|source| source.path.as_str());
    settings.hook_rates.take(&hook.definition.event_name, source).map_err(|(scope, wait)| {
        IngressError::RateLimited { scope, retry_after_secs: super::fairness::retry_after_secs(wait) }
    })?;
    refuse_content_encoding(request.headers())?;
    let limit = body_limit(settings, hook);
    let declared = declared_length(request.headers());
    let meta = request_meta(&request);
    let (parts, mut body) = request.into_parts();
    if declared.is_some_and(|length| length > limit) {
        tokio::spawn(linger(body));
        return Err(IngressError::BodyTooLarge { limit });
    }
    let mut reservation = budget.reservation();
    match read_body(&mut body, limit, declared, &mut reservation, settings.body_timeout).await {
        Ok(body) => Ok(Opened { parts, meta, body, reservation }),
        Err(error) => {
            if matches!(error, IngressError::BodyTooLarge { .. } | IngressError::OverBudget(_)) {
                drop(reservation);
                tokio::spawn(linger(body));
            }
            Err(error)
        }
    }
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

/// Reads the whole body into one buffer: sized by the `declared` length, else grown by
/// doubling, each growth reserved in the budget first. Refuses the body past `limit` bytes, past
/// the budget, or past `deadline`.
async fn read_body(
    body: &mut Body,
    limit: u64,
    declared: Option<u64>,
    reservation: &mut Reservation,
    deadline: Duration,
) -> Result<Bytes, IngressError> {
    let read = async {
        let mut buffer = Vec::new();
        grow(&mut buffer, reservation, declared.unwrap_or(FIRST_BUFFER_BYTES).min(limit))?;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| IngressError::BodyUnreadable(error.to_string()))?;
            // Trailers are not part of the body.
            let Ok(data) = frame.into_data() else { continue };
            let needed = (buffer.len() + data.len()) as u64;
            if needed > limit {
                return Err(IngressError::BodyTooLarge { limit });
            }
            let capacity = buffer.capacity() as u64;
            if needed > capacity {
                grow(&mut buffer, reservation, needed.max(capacity * 2).min(limit))?;
            }
            buffer.extend_from_slice(&data);
        }
        Ok(Bytes::from(buffer))
    };
    tokio::time::timeout(deadline, read).await.unwrap_or(Err(IngressError::BodyTimeout { seconds: deadline.as_secs() }))
}

/// Makes room for `capacity` bytes in all, reserving them in the budget first.
fn grow(buffer: &mut Vec<u8>, reservation: &mut Reservation, capacity: u64) -> Result<(), IngressError> {
    reservation.grow_to(capacity).map_err(IngressError::OverBudget)?;
    let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
    buffer.reserve_exact(capacity.saturating_sub(buffer.len()));
    Ok(())
}

/// Reads and discards what is left of a refused body, for a bounded time and number of bytes,
/// so that the client reads the reply before the connection closes (nginx's lingering close).
async fn linger(mut body: Body) {
    let discard = async {
        let mut discarded = 0u64;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(LINGER_IDLE, body.frame()).await {
            discarded += frame.data_ref().map_or(0, |data| data.len() as u64);
            if discarded > LINGER_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, discard).await;
}
