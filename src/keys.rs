//! Issued keys: ingest keys for web hooks and management keys for the API, shown once and
//! stored as SHA-256 only.
//!
//! A key is `hgk_` (ingest) or `hgm_` (management) plus 32 random bytes (base64url), so its
//! hash is enough to find it and a slow password hash would add nothing. Several keys can be
//! active at once, which is how keys are rotated: issue the new one, move callers, revoke the
//! old one. Ingest keys are limited to apps; management keys to event scopes, the way seed 004's
//! API key scopes limit which events may be subscribed. Used by the management API and the CLI.
//! [`presented_key`] reads a key the way both ingress (web hooks) and the API take it.

use jiff::Timestamp;

use crate::secrets::{random_token, sha256_hex};
use crate::store::{ApiKeyRecord, KeyPurpose, Store, StoreError};
use crate::subscriptions::is_pattern;

/// A newly issued key: the only moment its text exists outside the caller's hands.
#[derive(Debug)]
pub struct IssuedKey {
    pub record: ApiKeyRecord,
    pub key: String,
}

/// What an operator asks for when issuing a key.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub name: String,
    pub purpose: KeyPurpose,
    /// Ingest keys: apps the key may send to; `None` for every app.
    pub apps: Option<Vec<String>>,
    /// Management keys: event names and patterns the key may manage; `None` for every event.
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`. Another `Authorization`
/// scheme (a proxy's Basic auth, say) does not hide an `X-API-Key`.
pub fn presented_key(headers: &http::HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, credential)| scheme.eq_ignore_ascii_case("bearer") && !credential.trim().is_empty())
        .map(|(_, credential)| credential.trim());
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|key| !key.is_empty()))
}

/// Issues a key and stores its hash.
pub async fn issue(store: &Store, request: KeyRequest, now: Timestamp) -> Result<IssuedKey, KeyError> {
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.len() > 200 {
        return Err(KeyError::Invalid("name: give the key a name of 1 to 200 characters".into()));
    }
    match request.purpose {
        KeyPurpose::Ingest if request.scopes.is_some() => {
            return Err(KeyError::Invalid(
                "scopes: only management keys have event scopes; an ingest key is limited by apps".into(),
            ));
        }
        KeyPurpose::Management if request.apps.is_some() => {
            return Err(KeyError::Invalid(
                "apps: only ingest keys are limited to apps; a management key is limited by scopes".into(),
            ));
        }
        _ => {}
    }
    if let Some(apps) = &request.apps
        && (apps.is_empty() || apps.iter().any(|app| app.trim().is_empty()))
    {
        return Err(KeyError::Invalid("apps: list at least one app name, or leave it out for every app".into()));
    }
    if let Some(scopes) = &request.scopes {
        if scopes.is_empty() {
            return Err(KeyError::Invalid(
                "scopes: list at least one event pattern, or leave it out for every event".into(),
            ));
        }
        if let Some(bad) = scopes.iter().find(|scope| !is_pattern(scope) && !crate::definitions::is_scope_name(scope)) {
            return Err(KeyError::Invalid(format!(
                "scopes: {bad:?} is not an event name, \"*\", a prefix ending in \".*\" (stripe.*), or a scope name an app declares (view:contacts)"
            )));
        }
    }
    let key = match request.purpose {
        KeyPurpose::Ingest => format!("hgk_{}", random_token(32)),
        KeyPurpose::Management => format!("hgm_{}", random_token(32)),
    };
    let record = ApiKeyRecord {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        name,
        purpose: request.purpose,
        prefix: key[..12].to_owned(),
        sha256: sha256_hex(&key),
        apps: request.apps,
        scopes: request.scopes,
        created_at: crate::event::to_store_precision(now),
        revoked_at: None,
    };
    store.insert_api_key(record.clone()).await?;
    Ok(IssuedKey { record, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn keys_are_read_from_bearer_or_x_api_key() {
        assert_eq!(presented_key(&headers(&[("authorization", "Bearer abc")])), Some("abc"));
        assert_eq!(presented_key(&headers(&[("authorization", "bearer  abc ")])), Some("abc"));
        assert_eq!(presented_key(&headers(&[("x-api-key", "xyz")])), Some("xyz"));
        assert_eq!(presented_key(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(presented_key(&headers(&[("authorization", "Basic abc"), ("x-api-key", "xyz")])), Some("xyz"));
        assert_eq!(presented_key(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(presented_key(&headers(&[])), None);
    }
}
