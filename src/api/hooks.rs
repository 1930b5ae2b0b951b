//! `GET /api/hooks`: the app directory, every serving hook with its URL.

use axum::Json;
use axum::extract::{Extension, State};
use serde::Serialize;
use std::sync::Arc;

use crate::api::{Access, ApiState};
use crate::definitions::Origin;
use crate::definitions::catalog::Catalog;
use crate::event::HookType;

/// One hook as the directory shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookView {
    pub app: String,
    pub event_name: String,
    pub display_event_name: Option<String>,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub hook_type: HookType,
    /// Where to POST: form and web hooks, and email hooks' inbound URL for raw MIME and the
    /// providers' inbound formats.
    pub url: Option<String>,
    /// The mail address of an email hook, once hookgate receives mail.
    pub address: Option<String>,
    pub origin: Origin,
}

/// The directory of every serving hook, with absolute URLs under `public_url`.
pub fn directory(catalog: &Catalog, public_url: &str, mail_domain: &str) -> Vec<HookView> {
    catalog
        .hooks()
        .iter()
        .map(|hook| {
            let definition = &hook.definition;
            let base = public_url.trim_end_matches('/');
            let url = match (&definition.source, definition.hook_type) {
                (Some(source), _) => Some(format!("{base}/api/webhooks/{}", source.path)),
                (None, _) => Some(format!("{base}{}", hook.path())),
            };
            HookView {
                app: hook.app.clone(),
                event_name: definition.event_name.clone(),
                display_event_name: definition.display_event_name.clone(),
                description: definition.description.clone(),
                hook_type: definition.hook_type,
                url,
                address: (definition.hook_type == HookType::Email)
                    .then(|| crate::email::address(&hook.token, &mail_domain.to_ascii_lowercase())),
                origin: hook.origin.clone(),
            }
        })
        .collect()
}

/// The directory; a scoped management key sees the hooks whose events its scopes cover.
pub async fn list(State(state): State<Arc<ApiState>>, Extension(access): Extension<Access>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "data": visible_directory(&state, &access) }))
}

/// The hooks serving now that `access` may see: those whose events it covers.
pub fn visible_directory(state: &ApiState, access: &Access) -> Vec<HookView> {
    let mut hooks = directory(&state.catalog.current(), &state.public_url, &state.mail_domain);
    hooks.retain(|hook| access.covers_event(&hook.event_name));
    hooks
}

/// `GET /api/hooks/{eventName}/sample`: a sample of the hook's events, always marked
/// `"sample": true`, with `from` saying where it comes from: `latest_event` (the hook's latest
/// real event; credentials are never stored with events), else `definition` (the `sample` it
/// declares), else `schema` (made up from its shape's JSON Schema), else `none` (empty `data`).
pub async fn sample(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    axum::extract::Path(event_name): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, crate::api::ApiError> {
    let sample = sample_of(&state, &access, &event_name).await?;
    let mut reply = serde_json::json!({"eventName": event_name, "from": sample.from, "sample": true});
    if let Some(id) = sample.event_id {
        reply["eventId"] = serde_json::json!(id);
    }
    reply["data"] = sample.data;
    Ok(Json(reply))
}

/// A sample of a hook's events and where it comes from.
pub struct Sample {
    /// `latest_event`, `definition`, `schema` or `none`.
    pub from: &'static str,
    /// The event's id, when the sample is a real event.
    pub event_id: Option<String>,
    pub data: serde_json::Value,
}

/// A sample of the events named `event_name`, for every hook within the caller's reach (404
/// for others): see [`sample`] for the order.
pub async fn sample_of(state: &ApiState, access: &Access, event_name: &str) -> Result<Sample, crate::api::ApiError> {
    let catalog = state.catalog.current();
    let hook = catalog
        .hook_by_event_name(event_name)
        .filter(|_| access.covers_event(event_name))
        .ok_or_else(|| crate::api::ApiError::NotFound(format!("no hook {event_name:?}")))?;
    let latest = state
        .store
        .list_events(crate::store::EventQuery {
            name: Some(event_name.to_owned()),
            quarantined: Some(false),
            limit: 1,
            ..Default::default()
        })
        .await?;
    if let Some(event) = latest.events.into_iter().next() {
        return Ok(Sample { from: "latest_event", event_id: Some(event.id), data: event.data });
    }
    let definition = &hook.definition;
    Ok(match (&definition.sample, definition.shape.as_ref().and_then(crate::shape::Shape::schema)) {
        (Some(sample), _) => Sample { from: "definition", event_id: None, data: sample.clone() },
        (None, Some(schema)) => Sample { from: "schema", event_id: None, data: crate::samples::from_schema(schema) },
        (None, None) => Sample { from: "none", event_id: None, data: serde_json::json!({}) },
    })
}
