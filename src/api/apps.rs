//! `/api/apps`: apps installed through the API, beside those in the definitions folder.
//!
//! An installed app passes the same validation as a file, against everything else that
//! serves, and is kept in the store. Apps from files are listed but can only be changed by
//! editing their files.

use crate::api::RequestBody;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

use super::{ApiError, ApiState};
use crate::definitions::Origin;
use crate::definitions::catalog::{AppSummary, ReloadError, Reloaded};

fn view(app: &AppSummary) -> Value {
    json!({
        "app": app.app,
        "version": app.version,
        "title": app.title,
        "origin": app.origin,
        "eventNames": app.event_names,
    })
}

fn reload_error(error: ReloadError) -> ApiError {
    match error {
        ReloadError::Invalid(diagnostics) => ApiError::InvalidDefinition(diagnostics),
        ReloadError::Store(error) => ApiError::Store(error),
        ReloadError::Secrets(error) => ApiError::Internal(error.to_string()),
    }
}

fn warnings(reloaded: &Reloaded) -> Vec<String> {
    reloaded.warnings.iter().map(ToString::to_string).collect()
}

pub async fn list(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let catalog = state.catalog.current();
    Json(json!({"data": catalog.apps().iter().map(view).collect::<Vec<_>>()}))
}

pub async fn show(State(state): State<Arc<ApiState>>, Path(app): Path<String>) -> Result<Json<Value>, ApiError> {
    let catalog = state.catalog.current();
    let found =
        catalog.apps().iter().find(|a| a.app == app).ok_or_else(|| ApiError::NotFound(format!("no app {app:?}")))?;
    Ok(Json(view(found)))
}

pub async fn install(State(state): State<Arc<ApiState>>, RequestBody(body): RequestBody) -> Result<Response, ApiError> {
    let definition: Value = serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadRequest(format!(
            "malformed JSON at line {} column {}: {}",
            error.line(),
            error.column(),
            crate::definitions::json_reason(&error)
        ))
    })?;
    let app = definition.get("app").and_then(Value::as_str).unwrap_or_default().to_owned();
    let catalog = state.catalog.current();
    if let Some(existing) = catalog.apps().iter().find(|a| a.app == app)
        && let Origin::File(path) = &existing.origin
    {
        return Err(ApiError::Conflict(format!("app {app:?} is defined by the file {path}; edit the file instead")));
    }
    drop(catalog);
    let (reloaded, replaced) = state.catalog.install_app(definition).await.map_err(reload_error)?;
    let catalog = state.catalog.current();
    let installed = catalog.apps().iter().find(|a| a.app == app).map(view);
    let status = if replaced { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!({"app": installed, "warnings": warnings(&reloaded)}))).into_response())
}

pub async fn remove(State(state): State<Arc<ApiState>>, Path(app): Path<String>) -> Result<StatusCode, ApiError> {
    let catalog = state.catalog.current();
    if let Some(AppSummary { origin: Origin::File(path), .. }) = catalog.apps().iter().find(|a| a.app == app) {
        return Err(ApiError::Conflict(format!("app {app:?} is defined by the file {path}; remove the file instead")));
    }
    drop(catalog);
    match state.catalog.remove_app(&app).await.map_err(reload_error)? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::NotFound(format!("no installed app {app:?}"))),
    }
}

/// `POST /api/definitions/reload`: reload now, answering with the result.
pub async fn reload(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let reloaded = state.catalog.reload().await.map_err(reload_error)?;
    Ok(Json(json!({"apps": reloaded.apps, "hooks": reloaded.hooks, "warnings": warnings(&reloaded)})))
}
