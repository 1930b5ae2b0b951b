//! From an opened body to an event's data, for form and web hooks and for sources: the content
//! type read up front (415 for a type hookgate cannot read), the payload parsed by it (`payload`,
//! 400 for a malformed body), then the hook's shape applied (422, or the event quarantined).

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde_json::Value;

use super::IngressError;
use super::payload::{self, MediaKind, PayloadLimits};
use crate::definitions::HookDefinition;
use crate::shape::Shaped;

/// The request's `Content-Type` as text, and what kind of payload it announces.
pub(super) fn content_type(headers: &HeaderMap) -> Result<(Option<String>, MediaKind), IngressError> {
    let content_type = headers.get(header::CONTENT_TYPE).map(|value| value.to_str().unwrap_or("<not text>").to_owned());
    let kind = payload::media_kind(content_type.as_deref())
        .map_err(|error| IngressError::UnsupportedMediaType(error.to_string()))?;
    Ok((content_type, kind))
}

/// Parses the body by its content type; multipart file content is kept up to `max_file_bytes`.
pub(super) async fn parse(content_type: Option<&str>, body: Bytes, max_file_bytes: u64) -> Result<Value, IngressError> {
    let limits = PayloadLimits { max_file_bytes_kept: max_file_bytes as usize };
    payload::parse_payload(content_type, body, &limits).await.map_err(|error| {
        if error.is_unsupported_media_type() {
            IngressError::UnsupportedMediaType(error.to_string())
        } else {
            IngressError::MalformedBody(error.to_string())
        }
    })
}

/// Checks a JSON body without building its value (see `payload::validate_json`).
pub(super) fn validate_json(body: &[u8]) -> Result<(), IngressError> {
    payload::validate_json(body).map_err(|error| IngressError::MalformedBody(error.to_string()))
}

/// Applies the hook's shape: the data to store and whether it is quarantined, or a 422.
pub(super) fn apply_shape(definition: &HookDefinition, data: Value) -> Result<(Value, bool), IngressError> {
    let Some(shape) = &definition.shape else { return Ok((data, false)) };
    match shape.apply(data).map_err(IngressError::Misfit)? {
        Shaped::Fits(data) => Ok((data, false)),
        Shaped::Quarantined { data, misfit } => {
            tracing::info!(hook = %definition.event_name, reasons = ?misfit.reasons, "A payload that does not fit its hook's shape was quarantined.");
            Ok((data, true))
        }
    }
}
