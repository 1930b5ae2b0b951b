//! Source-specific endpoints, `POST /api/webhooks/{source}`: a platform's request becomes
//! events only when its signature verifies over the exact raw bytes.
//!
//! Order: the source exists (404), the method (405), the content type (415), the shared opening
//! steps (`opening`: encoding, declared length, body under its limit and deadline), then the
//! signature and timestamp are verified (401 naming the reason class, never an expected value;
//! the request is kept in the rejection log and counted by source and reason), then the body is
//! parsed, split into one event per element when the source says so, named by its template,
//! keyed by the platform's delivery id, and committed in one transaction. A repeated delivery
//! gets the same success reply with the original event id and stores nothing new. Platform
//! handshakes (Slack, Zoom, Discord) are answered after verification; Meta's `GET` handshake
//! checks its verify token.
//!
//! The path is shared with the management API's `/api/webhooks/{id}`: a segment that is a
//! subscription id (`sub_…`) is passed on to the management router.

use axum::Json;
use axum::Router;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

use super::opening::{self, Opened};
use super::rejections::Rejection;
use super::{IngressError, IngressState, decode};
use crate::definitions::SourceDefinition;
use crate::definitions::catalog::Hook;
use crate::event::{HookIdentity, IdempotencyKey, normalize};
use crate::subscriptions::ID_PREFIX;
use crate::verify::{Scheme, SignedRequest};

/// Every method on `/api/webhooks/{segment}`: a subscription id goes to `management`, `GET` is
/// a platform's subscription handshake and `POST` a platform's delivery.
pub(super) async fn endpoint(
    state: Arc<IngressState>,
    segment: String,
    query: Option<String>,
    request: Request,
    management: Router,
) -> Response {
    if segment.starts_with(ID_PREFIX) {
        // Passed on as it came: this router's matched path and parameters are not the API's.
        let (mut parts, body) = request.into_parts();
        parts.extensions = http::Extensions::new();
        let request = Request::from_parts(parts, body);
        return management.oneshot(request).await.unwrap_or_else(|never| match never {});
    }
    match request.method().clone() {
        Method::GET => handshake(&state, &segment, query).await,
        Method::POST => {
            let Some(hook) = state.catalog.current().hook_by_source(&segment).cloned() else {
                return opening::unknown(IngressError::UnknownSource);
            };
            opening::observe(&hook, handle(&state, &hook, request)).await
        }
        method => IngressError::MethodNotAllowed { method, allow: "GET, POST" }.into_response(),
    }
}

/// Verifies, splits, names and commits one source request. Also serves the source hook's
/// `/h/{token}` URL.
pub(super) async fn handle(state: &IngressState, hook: &Hook, request: Request) -> Result<Response, IngressError> {
    let Some(source) = &hook.definition.source else { return Err(IngressError::UnknownSource) };
    if request.method() != Method::POST {
        return Err(IngressError::MethodNotAllowed { method: request.method().clone(), allow: "POST" });
    }
    let (content_type, media_kind) = decode::content_type(request.headers())?;
    let Opened { parts, meta, body, reservation: _reservation } =
        opening::open(&state.settings, &state.body_budget, hook, request).await?;
    let headers = &parts.headers;
    let url = format!(
        "{}{}",
        state.settings.public_url.trim_end_matches('/'),
        parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let signed = SignedRequest { method: parts.method.as_str(), url: &url, headers, body: &body };
    let verified = match crate::verify::verify(&source.verify, &signed, jiff::Timestamp::now()) {
        Ok(verified) => verified,
        Err(error) => {
            metrics::counter!("hookgate_source_rejections_total", "source" => source.path.clone(), "reason" => error.reason_class())
                .increment(1);
            tracing::info!(source = %source.path, reason = %error, "A source request failed verification.");
            let rejection = Rejection::new(&source.path, &error, meta.peer.clone(), headers, &body);
            if let Some(notice) = state.rejections.record(rejection) {
                state.committer.notify(notice);
            }
            return Err(IngressError::Unverified(error));
        }
    };

    let max_file_bytes = hook.definition.max_file_bytes.unwrap_or(state.settings.max_file_bytes);
    let data = decode::parse(content_type.as_deref(), body.clone(), max_file_bytes).await?;
    if let Some(reply) = handshake_reply(source, &verified, &data) {
        return Ok(Json(reply).into_response());
    }

    let split = source.split_arrays && data.is_array();
    let elements = match data {
        Value::Array(elements) if split => elements,
        data => vec![data],
    };
    let received_at = jiff::Timestamp::now();
    let projects = hook.definition.shape.as_ref().is_some_and(crate::shape::Shape::projects);
    let new_events = elements
        .into_iter()
        .enumerate()
        .map(|(index, element)| {
            // Names and delivery ids come from the platform's payload, before any projection.
            let name = event_name(hook, source, &element, headers);
            let key = source.delivery_id.as_ref().and_then(|template| template.render_id(&element, headers));
            let (data, quarantined) = decode::apply_shape(&hook.definition, element).map_err(|error| match error {
                // In a batch, each reason points into the delivered array.
                IngressError::Misfit(mut misfit) if split => {
                    for reason in &mut misfit.reasons {
                        let separator = if reason.starts_with('/') { "" } else { ": " };
                        *reason = format!("/{index}{separator}{reason}");
                    }
                    IngressError::Misfit(misfit)
                }
                other => other,
            })?;
            let identity = HookIdentity { app: &hook.app, event_name: &name, hook_type: hook.definition.hook_type };
            let mut event = normalize(identity, &meta, data, body.clone(), received_at);
            event.data_is_raw_json = !split && !projects && media_kind.is_json();
            event.event.quarantined = quarantined;
            event.idempotency_key = key.map(|key| IdempotencyKey {
                scope: format!("source:{}", source.path),
                key,
                window: source.dedup_window,
            });
            Ok(event)
        })
        .collect::<Result<Vec<_>, IngressError>>()?;
    let kept = super::transform::apply(state, hook, new_events).await?;
    let dropped = kept.note(hook);
    let new_events = kept.events;
    if new_events.is_empty()
        && let Some(dropped) = dropped
    {
        // Nothing to store: the reply says so rather than naming an event that does not exist.
        let body = if split {
            json!({"events": [], "dropped": dropped})
        } else {
            json!({"dropped": true, "reason": dropped["reason"], "transformVersion": dropped["transformVersion"]})
        };
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let quarantined: Vec<bool> = new_events.iter().map(|event| event.event.quarantined).collect();
    // A repeated delivery id is decided in the store's transaction: the original's id comes
    // back with `duplicate`, and the platform gets the same success reply.
    let appended = state.committer.commit(new_events).await.map_err(IngressError::Store)?;
    if let Some(first) = appended.first() {
        tracing::Span::current().record("event_id", first.id.as_str());
    }
    // A duplicate's name is the stored event's, whatever the repeated request would be named.
    let events: Vec<Value> = appended
        .iter()
        .zip(&quarantined)
        .map(|(appended, quarantined)| {
            let mut reply = json!({"id": appended.id, "name": appended.name, "duplicate": appended.duplicate});
            if *quarantined {
                reply["quarantined"] = json!(true);
            }
            reply
        })
        .collect();
    let mut body = if split { json!({"events": events}) } else { events.into_iter().next().unwrap_or(Value::Null) };
    if let Some(dropped) = dropped {
        body["dropped"] = dropped;
    }
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// The answer to a platform's signed handshake request, which is not an event: Slack's
/// `url_verification`, Zoom's `endpoint.url_validation`, Discord's PING.
fn handshake_reply(source: &SourceDefinition, verified: &crate::verify::Verified, data: &Value) -> Option<Value> {
    match source.verify.scheme {
        Scheme::Slack if data.get("type").and_then(Value::as_str) == Some("url_verification") => {
            Some(json!({"challenge": data.get("challenge").cloned().unwrap_or(Value::Null)}))
        }
        Scheme::Zoom if data.get("event").and_then(Value::as_str) == Some("endpoint.url_validation") => {
            let plain = data.pointer("/payload/plainToken").and_then(Value::as_str)?;
            let encrypted = crate::verify::zoom_encrypted_token(&source.verify, verified, plain)?;
            Some(json!({"plainToken": plain, "encryptedToken": encrypted}))
        }
        Scheme::Discord if data.get("type").and_then(Value::as_i64) == Some(1) => Some(json!({"type": 1})),
        _ => None,
    }
}

/// `GET /api/webhooks/{source}`: Meta's subscription handshake (`hub.mode=subscribe`,
/// `hub.verify_token`, `hub.challenge`), for sources that declare a `verifyToken`.
async fn handshake(state: &IngressState, path: &str, query: Option<String>) -> Response {
    let catalog = state.catalog.current();
    let Some(source) = catalog.hook_by_source(path).and_then(|hook| hook.definition.source.clone()) else {
        return IngressError::UnknownSource.into_response();
    };
    let Some(expected) = &source.verify_token else {
        return IngressError::MethodNotAllowed { method: Method::GET, allow: "POST" }.into_response();
    };
    let parameters: std::collections::HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let token_matches = parameters
        .get("hub.verify_token")
        .is_some_and(|token| crate::secrets::constant_time_eq(token.as_bytes(), expected.as_bytes()));
    match (parameters.get("hub.mode").map(String::as_str), parameters.get("hub.challenge")) {
        (Some("subscribe"), Some(challenge)) if token_matches => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], challenge.clone()).into_response()
        }
        _ => IngressError::HandshakeRefused.into_response(),
    }
}

/// The event's name from the source's template, or the hook's `eventName`.
fn event_name(hook: &Hook, source: &SourceDefinition, element: &Value, headers: &http::HeaderMap) -> String {
    source
        .event_name
        .as_ref()
        .and_then(|template| template.render_name(element, headers))
        .unwrap_or_else(|| hook.definition.event_name.clone())
}
