//! `/api/keys` (admin token only): ingest keys for web hooks and management keys for this API.
//! The key text is in the creation reply only.

use crate::api::RequestBody;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

use super::{ApiError, ApiState};
use crate::keys::{KeyError, KeyRequest, issue};
use crate::store::KeyPurpose;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    /// `ingest` (the default) or `management`.
    #[serde(default = "ingest")]
    purpose: KeyPurpose,
    /// Ingest keys: apps the key may send to; all apps when absent.
    apps: Option<Vec<String>>,
    /// Management keys: event names and patterns the key may manage; all when absent.
    scopes: Option<Vec<String>>,
}

fn ingest() -> KeyPurpose {
    KeyPurpose::Ingest
}

pub async fn create(
    State(state): State<Arc<ApiState>>,
    RequestBody(body): RequestBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: CreateKey = serde_json::from_slice(&body).map_err(|error| ApiError::BadRequest(error.to_string()))?;
    let CreateKey { name, purpose, apps, scopes } = request;
    let issued = issue(&state.store, KeyRequest { name, purpose, apps, scopes }, jiff::Timestamp::now())
        .await
        .map_err(|error| match error {
            KeyError::Invalid(message) => ApiError::BadRequest(message),
            KeyError::Store(error) => ApiError::Store(error),
        })?;
    let mut view = serde_json::to_value(&issued.record).map_err(|e| ApiError::Internal(e.to_string()))?;
    view["key"] = json!(issued.key);
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn list(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let keys = state.store.api_keys().await?;
    Ok(Json(json!({"data": keys})))
}

pub async fn revoke(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if state.store.revoke_api_key(&id, jiff::Timestamp::now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no active key {id:?}")))
    }
}
