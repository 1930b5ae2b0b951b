//! The hook endpoint `/h/{token}`: one request in, one durable event out.
//!
//! The token names the hook (404 without revealing what exists). A source hook's URL is served
//! as its source, an email hook's as mail over HTTP; form and web hooks are handled here. Checks
//! run cheapest first and nothing is stored unless all pass: the method (405), the origin for
//! form hooks (403), the API key for web hooks (401/403), the content type (415), then the
//! shared opening steps (`opening`: encoding, declared length, body under its limit and
//! deadline), the payload (400) and the shape (422). The 202 reply, carrying the event id, goes
//! out only after the store has committed.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

use super::opening::{self, Opened};
use super::{IngressError, IngressState, decode};
use crate::definitions::catalog::Hook;
use crate::event::{HookType, normalize};
use crate::secrets::{constant_time_eq, sha256_hex};
use crate::shape::Shape;
use crate::store::StoreError;

/// Handles every method on `/h/{token}`.
pub(super) async fn receive(
    State(state): State<Arc<IngressState>>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let Some(hook) = state.catalog.current().hook_by_token(&token).cloned() else {
        return opening::unknown(IngressError::UnknownHook);
    };
    let cors = Cors::for_request(&hook, request.headers());
    let mut response = opening::observe(&hook, dispatch(&state, &hook, &cors, request)).await;
    cors.decorate(response.headers_mut());
    response
}

/// Any path under `/h/` that cannot be a hook URL: the same reply as an unknown token.
pub(super) async fn unknown() -> Response {
    opening::unknown(IngressError::UnknownHook)
}

/// A hook's URL serves the hook as its kind asks.
async fn dispatch(
    state: &IngressState,
    hook: &Arc<Hook>,
    cors: &Cors,
    request: Request,
) -> Result<Response, IngressError> {
    if hook.definition.source.is_some() {
        return super::sources::handle(state, hook, request).await;
    }
    match hook.definition.hook_type {
        HookType::Email => super::mail::handle(state, hook, request).await,
        // No definition has the internal type.
        HookType::Form | HookType::Web | HookType::Internal => handle(state, hook, cors, request).await,
    }
}

/// A form or web hook's request.
async fn handle(state: &IngressState, hook: &Hook, cors: &Cors, request: Request) -> Result<Response, IngressError> {
    let definition = &hook.definition;
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
    let (content_type, media_kind) = decode::content_type(request.headers())?;
    let Opened { meta, body, reservation: _reservation, .. } =
        opening::open(&state.settings, &state.body_budget, hook, request).await?;
    // A JSON body that is stored as it came, with no shape or transformation to read it, is only
    // checked here; the committer parses it if a subscription's routing reads the data.
    let defer_data = media_kind.is_json() && definition.shape.is_none() && definition.transform.is_none();
    let (data, quarantined) = if defer_data {
        decode::validate_json(&body)?;
        (serde_json::Value::Null, false)
    } else {
        let max_file_bytes = definition.max_file_bytes.unwrap_or(state.settings.max_file_bytes);
        let data = decode::parse(content_type.as_deref(), body.clone(), max_file_bytes).await?;
        decode::apply_shape(definition, data)?
    };
    let mut new_event = normalize(hook.identity(), &meta, data, body, jiff::Timestamp::now());
    new_event.data_is_raw_json = media_kind.is_json() && !definition.shape.as_ref().is_some_and(Shape::projects);
    new_event.data_deferred = defer_data;
    new_event.event.quarantined = quarantined;
    let received_at = new_event.event.received_at;
    let kept = super::transform::apply(state, hook, vec![new_event]).await?;
    if let Some(dropped) = kept.note(hook) {
        // Nothing is stored, and the reply says why.
        let body = json!({"dropped": true, "name": definition.event_name, "reason": dropped["reason"], "transformVersion": dropped["transformVersion"]});
        return Ok((StatusCode::OK, axum::Json(body)).into_response());
    }
    let appended = state.committer.commit(kept.events).await.map_err(IngressError::Store)?;
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

/// Checks a web hook's API key: a static key from the definition, or an issued key that is
/// active and in scope for the hook's app.
async fn authenticate(state: &IngressState, hook: &Hook, headers: &HeaderMap) -> Result<(), IngressError> {
    let key = crate::keys::presented_key(headers).ok_or(IngressError::MissingApiKey)?;
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
