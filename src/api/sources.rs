//! `GET /api/sources/rejections`: the latest source requests that failed verification, newest
//! first, optionally of one source (`?source=stripe`). Reasons and header names, never secrets.

use axum::Json;
use axum::extract::{Extension, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

use super::{Access, ApiError, ApiState};
use crate::ingress::rejections::Rejection;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectionFilter {
    source: Option<String>,
}

pub async fn rejections(
    State(state): State<Arc<ApiState>>,
    Extension(access): Extension<Access>,
    Query(filter): Query<RejectionFilter>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"data": recent_rejections(&state, &access, filter.source.as_deref())?})))
}

/// The latest rejections, of `source` only when given, for the admin token only (the route
/// is behind `require_admin`; other callers ask here).
pub fn recent_rejections(state: &ApiState, access: &Access, source: Option<&str>) -> Result<Vec<Rejection>, ApiError> {
    access.admin_only()?;
    Ok(state.rejections.recent(source))
}
