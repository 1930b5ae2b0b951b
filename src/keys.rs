//! API keys for web hooks: issued by hookgate, shown once, stored as SHA-256 only.
//!
//! A key is `hgk_` plus 32 random bytes (base64url), so its hash is enough to find it and a
//! slow password hash would add nothing. Several keys can be active at once, which is how keys
//! are rotated: issue the new one, move senders, revoke the old one. Used by the management API
//! and the CLI alike.

use jiff::Timestamp;

use crate::secrets::{random_token, sha256_hex};
use crate::store::{ApiKeyRecord, Store, StoreError};

/// A newly issued key: the only moment its text exists outside the sender's hands.
#[derive(Debug)]
pub struct IssuedKey {
    pub record: ApiKeyRecord,
    pub key: String,
}

/// What an operator asks for when issuing a key.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub name: String,
    /// Apps the key may send to; `None` for every app.
    pub apps: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Issues a key and stores its hash.
pub async fn issue(store: &Store, request: KeyRequest, now: Timestamp) -> Result<IssuedKey, KeyError> {
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.len() > 200 {
        return Err(KeyError::Invalid("name: give the key a name of 1 to 200 characters".into()));
    }
    if let Some(apps) = &request.apps
        && (apps.is_empty() || apps.iter().any(|app| app.trim().is_empty()))
    {
        return Err(KeyError::Invalid("apps: list at least one app name, or leave it out for every app".into()));
    }
    let key = format!("hgk_{}", random_token(32));
    let record = ApiKeyRecord {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        name,
        prefix: key[..12].to_owned(),
        sha256: sha256_hex(&key),
        apps: request.apps,
        created_at: crate::event::to_store_precision(now),
        revoked_at: None,
    };
    store.insert_api_key(record.clone()).await?;
    Ok(IssuedKey { record, key })
}
