//! `GET /api/sources/rejections`: the latest source requests that failed verification, newest
//! first, optionally of one source (`?source=stripe`). Reasons and header names, never secrets.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

use super::ApiState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectionFilter {
    source: Option<String>,
}

pub async fn rejections(State(state): State<Arc<ApiState>>, Query(filter): Query<RejectionFilter>) -> Json<Value> {
    Json(json!({"data": state.rejections.recent(filter.source.as_deref())}))
}
