//! Seed 004's face, `/api/v1/hooks`: JSON:API documents in and out (`application/vnd.api+json`).
//! A hook is `{"data": {"type": "hooks", "attributes": {"target_url", "event", "resource_id"},
//! "relationships": {...}}}`; `relationships` are kept as sent and shown back. List, create
//! (201, the secret in `attributes.secret` this once), read and delete (204); errors are JSON:API
//! `errors`, each invalid attribute pointed at (`/data/attributes/target_url`).
//!
//! `GET /api/v1/hooks/{event}_sample` answers a sample payload for every event in seed 004's
//! payload shape (`id`, `event`, `payload`), marked `"sample": true` (see `api::hooks::sample_of`).
//! Subscription ids (`sub_…`) never end in `_sample`, so both share `/api/v1/hooks/{id}`.

use crate::api::RequestBody;
use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;

use crate::api::subscriptions::{create_subscription, find, remove};
use crate::api::{Access, ApiError, ApiState};
use crate::subscriptions::{FieldError, Subscription};

/// The media type of JSON:API documents.
const MEDIA_TYPE: &str = "application/vnd.api+json";

/// The attributes a hook may be created with.
const ATTRIBUTES: &[&str] = &["target_url", "event", "resource_id"];

/// An [`ApiError`] as a JSON:API error document, with the same status and code.
pub struct JsonApiError(ApiError);

impl From<ApiError> for JsonApiError {
    fn from(error: ApiError) -> Self {
        JsonApiError(error)
    }
}

impl IntoResponse for JsonApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.0.status_and_code();
        self.0.log_cause();
        let error = |detail: String, pointer: Option<String>| {
            let mut error =
                json!({"status": status.as_u16().to_string(), "code": code, "title": title(status), "detail": detail});
            if let Some(pointer) = pointer {
                error["source"] = json!({"pointer": pointer});
            }
            error
        };
        let errors: Vec<Value> = match &self.0 {
            ApiError::InvalidFields(fields) => {
                fields.iter().map(|field| error(field.message.clone(), Some(pointer(&field.field)))).collect()
            }
            other => vec![error(other.to_string(), None)],
        };
        document(status, json!({"errors": errors}))
    }
}

fn title(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// Where an invalid field is in the request document.
fn pointer(field: &str) -> String {
    match field {
        "" | "data" => "/data".to_owned(),
        "type" | "relationships" | "attributes" => format!("/data/{field}"),
        field => format!("/data/attributes/{field}"),
    }
}

fn document(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    response
}

/// A subscription as a JSON:API resource of type `hooks`.
pub fn resource(subscription: &Subscription) -> Value {
    let mut resource = json!({
        "type": "hooks",
        "id": subscription.id,
        "attributes": {
            "target_url": subscription.url,
            "event": subscription.events.first(),
            "events": subscription.events,
            "resource_id": subscription.resource_id,
            "status": subscription.status,
            "created_at": subscription.created_at,
        },
    });
    if let Some(relationships) = &subscription.relationships {
        resource["relationships"] = relationships.clone();
    }
    resource
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::InvalidFields(vec![FieldError { field: field.to_owned(), message: message.to_owned() }])
}

/// The attributes and relationships of a `hooks` document, or why it is not one.
fn read_document(body: &[u8]) -> Result<(Value, Option<Value>), ApiError> {
    let document: Value = crate::api::subscriptions::parse(body)?;
    let Some(data) = document.get("data").and_then(Value::as_object) else {
        return Err(invalid(
            "data",
            "expected a JSON:API document: {\"data\": {\"type\": \"hooks\", \"attributes\": {...}}}",
        ));
    };
    if data.get("type").and_then(Value::as_str) != Some("hooks") {
        return Err(invalid("type", "expected \"hooks\""));
    }
    let attributes = match data.get("attributes") {
        Some(Value::Object(attributes)) => attributes.clone(),
        None => Map::new(),
        Some(_) => return Err(invalid("attributes", "expected an object")),
    };
    let unknown: Vec<FieldError> = attributes
        .keys()
        .filter(|key| !ATTRIBUTES.contains(&key.as_str()))
        .map(|key| FieldError {
            field: key.clone(),
            message: format!("unknown attribute; known attributes are {}", ATTRIBUTES.join(", ")),
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::InvalidFields(unknown));
    }
    let mut missing = Vec::new();
    for required in ["target_url", "event"] {
        if !attributes.contains_key(required) {
            missing.push(FieldError { field: required.to_owned(), message: "required".to_owned() });
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::InvalidFields(missing));
    }
    let relationships = match data.get("relationships") {
        None | Some(Value::Null) => None,
        Some(Value::Object(relationships)) => Some(Value::Object(relationships.clone())),
        Some(_) => return Err(invalid("relationships", "expected an object")),
    };
    Ok((Value::Object(attributes), relationships))
}

/// `GET /api/v1/hooks`.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
) -> Result<Response, JsonApiError> {
    let subscriptions = state.store.subscriptions().await.map_err(ApiError::from)?;
    let resources: Vec<Value> = subscriptions.iter().filter(|s| access.reaches(s)).map(resource).collect();
    Ok(document(StatusCode::OK, json!({"data": resources})))
}

/// `POST /api/v1/hooks`: 201 with the hook, its secret in `attributes.secret` this once.
pub async fn create(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    RequestBody(body): RequestBody,
) -> Result<Response, JsonApiError> {
    let (attributes, relationships) = read_document(&body)?;
    let subscription = create_subscription(&state, &access, &attributes, |subscription| {
        subscription.relationships = relationships;
    })
    .await?;
    let mut created = resource(&subscription);
    created["attributes"]["secret"] = json!(subscription.secrets[0].secret);
    Ok(document(StatusCode::CREATED, json!({"data": created})))
}

/// `GET /api/v1/hooks/{id}`, and `GET /api/v1/hooks/{event}_sample`.
pub async fn show(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Result<Response, JsonApiError> {
    if let Some(event_name) = id.strip_suffix("_sample") {
        let sample = crate::api::hooks::sample_of(&state, &access, event_name).await?;
        let payload = json!({
            "id": sample.event_id,
            "event": event_name,
            "payload": sample.data,
            "sample": true,
            "from": sample.from,
        });
        return Ok(document(StatusCode::OK, payload));
    }
    let subscription = find(&state, &access, &id).await?;
    Ok(document(StatusCode::OK, json!({"data": resource(&subscription)})))
}

/// `DELETE /api/v1/hooks/{id}`: 204.
pub async fn delete(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Result<StatusCode, JsonApiError> {
    remove(&state, &access, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
