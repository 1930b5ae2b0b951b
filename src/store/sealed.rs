//! Subscription signing secrets sealed at rest. A subscription's secrets must be readable to sign
//! its deliveries, so they cannot be hashed like API keys; instead each is encrypted with a key
//! from the configuration before it reaches a backend, and opened when read back. Both backends
//! encode and decode subscriptions through [`encode_subscription`] and [`decode_subscription`],
//! so what is sealed, and how, is decided here once.
//!
//! A sealed secret reads `enc:v1:<key id>:<base64url of nonce, ciphertext and tag>`: ChaCha20-
//! Poly1305 (ring's AEAD, already in the tree through rustls) with a random 96-bit nonce, and the
//! subscription's id as associated data, so a sealed secret copied onto another subscription does
//! not open. The key id is the first 8 hex digits of a SHA-256 over the key: it names which key a
//! row needs without revealing it, so a wrong or missing key is reported as such. Earlier keys
//! may be configured beside the current one (rotation): secrets sealed with them still open, and
//! [`seal_stored_secrets`] reseals them (and any plaintext secret from before sealing) with the
//! current key when the gateway starts.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use super::{Store, StoreError};
use crate::subscriptions::Subscription;

/// What every sealed secret starts with; the version names the format and the algorithm.
pub const SEALED_PREFIX: &str = "enc:v1:";

/// Bytes in a secrets key.
pub const KEY_BYTES: usize = 32;

/// One key secrets are sealed or opened with.
struct SecretsKey {
    id: String,
    key: LessSafeKey,
}

impl SecretsKey {
    fn new(bytes: &[u8; KEY_BYTES]) -> SecretsKey {
        let digest = Sha256::new().chain_update(b"hookgate secrets key id\0").chain_update(bytes).finalize();
        let id = hex::encode(&digest[..4]);
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte ChaCha20 key"));
        SecretsKey { id, key }
    }
}

/// The current key, and earlier ones still accepted for opening.
pub struct SecretsKeys {
    current: SecretsKey,
    previous: Vec<SecretsKey>,
}

impl fmt::Debug for SecretsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous: Vec<&str> = self.previous.iter().map(|key| key.id.as_str()).collect();
        f.debug_struct("SecretsKeys").field("current", &self.current.id).field("previous", &previous).finish()
    }
}

/// Why a configured key was refused. Never carries the key's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{setting} must be {KEY_BYTES} bytes written as 64 hex digits or in base64 ({problem}; the value is not shown)"
)]
pub struct KeyError {
    pub setting: &'static str,
    pub problem: String,
}

/// Why a sealed secret did not open. Names the key id, never a key or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("it was sealed with key {0}, which is not configured")]
    UnknownKey(String),
    #[error(
        "it does not open with key {0}: the key is not the one it was sealed with, or the stored value was changed"
    )]
    DoesNotOpen(String),
    #[error("it is not in the sealed format")]
    Malformed,
}

impl SecretsKeys {
    /// Keys from configuration text: `current` seals and opens, `previous` only open.
    pub fn parse(current: &str, previous: &[String]) -> Result<SecretsKeys, KeyError> {
        let current = SecretsKey::new(&key_bytes(current, "secrets_key")?);
        let previous = previous
            .iter()
            .map(|text| key_bytes(text, "secrets_previous_keys").map(|bytes| SecretsKey::new(&bytes)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SecretsKeys { current, previous })
    }

    /// A new random key, and its text (64 hex digits) to keep.
    pub fn generate() -> (SecretsKeys, String) {
        let mut bytes = [0u8; KEY_BYTES];
        SystemRandom::new().fill(&mut bytes).expect("the system's random generator");
        (SecretsKeys { current: SecretsKey::new(&bytes), previous: Vec::new() }, hex::encode(bytes))
    }

    /// The id of the key secrets are sealed with.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// `secret` sealed for the subscription `subscription_id`.
    pub fn seal(&self, subscription_id: &str, secret: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("the system's random generator");
        let mut sealed = secret.as_bytes().to_vec();
        self.current
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad(subscription_id), &mut sealed)
            .expect("ChaCha20-Poly1305 seals any secret of a sane length");
        let mut payload = nonce.to_vec();
        payload.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}:{}", self.current.id, URL_SAFE_NO_PAD.encode(payload))
    }

    /// The secret `sealed` holds, when it was sealed for `subscription_id` with a configured key.
    pub fn open(&self, subscription_id: &str, sealed: &str) -> Result<String, OpenError> {
        let (key_id, payload) = sealed_parts(sealed).ok_or(OpenError::Malformed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == key_id)
            .ok_or_else(|| OpenError::UnknownKey(key_id.to_owned()))?;
        let mut payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| OpenError::Malformed)?;
        if payload.len() < NONCE_LEN {
            return Err(OpenError::Malformed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&payload[..NONCE_LEN]);
        let opened = key
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), aad(subscription_id), &mut payload[NONCE_LEN..])
            .map_err(|_| OpenError::DoesNotOpen(key.id.clone()))?;
        String::from_utf8(opened.to_vec()).map_err(|_| OpenError::Malformed)
    }
}

/// The associated data: the subscription a secret belongs to.
fn aad(subscription_id: &str) -> Aad<Vec<u8>> {
    Aad::from(format!("hookgate subscription secret\0{subscription_id}").into_bytes())
}

/// The key id and payload of a sealed secret; `None` for anything else.
fn sealed_parts(text: &str) -> Option<(&str, &str)> {
    text.strip_prefix(SEALED_PREFIX)?.split_once(':')
}

/// True when `text` is in the sealed format (of any key).
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(SEALED_PREFIX)
}

fn key_bytes(text: &str, setting: &'static str) -> Result<[u8; KEY_BYTES], KeyError> {
    let text = text.trim();
    let refuse = |problem: String| KeyError { setting, problem };
    let decoded = if text.len() == 2 * KEY_BYTES && text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| refuse("not hex".into()))?
    } else {
        [&STANDARD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .or_else(|| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text).ok())
            .ok_or_else(|| refuse("it is neither 64 hex digits nor base64".into()))?
    };
    <[u8; KEY_BYTES]>::try_from(decoded.as_slice())
        .map_err(|_| refuse(format!("it decodes to {} bytes", decoded.len())))
}

/// A subscription as a backend stores it: its secrets sealed when keys are configured (a secret
/// already sealed is kept as it is).
pub(crate) fn encode_subscription(
    keys: Option<&SecretsKeys>,
    subscription: &Subscription,
) -> Result<String, StoreError> {
    let encode = |subscription: &Subscription| {
        serde_json::to_string(subscription).map_err(|error| StoreError::Database(error.to_string()))
    };
    let Some(keys) = keys else { return encode(subscription) };
    let mut sealed = subscription.clone();
    for secret in &mut sealed.secrets {
        if !is_sealed(&secret.secret) {
            secret.secret = keys.seal(&subscription.id, &secret.secret);
        }
    }
    encode(&sealed)
}

/// A stored subscription with its secrets opened. A sealed secret without keys, or one that does
/// not open, is an error naming the subscription and the key id.
pub(crate) fn decode_subscription(keys: Option<&SecretsKeys>, body: &str) -> Result<Subscription, StoreError> {
    let mut subscription: Subscription =
        serde_json::from_str(body).map_err(|error| StoreError::Corrupt(error.to_string()))?;
    for secret in &mut subscription.secrets {
        if !is_sealed(&secret.secret) {
            continue;
        }
        let opened = match keys {
            None => Err(StoreError::Corrupt(format!(
                "the signing secrets of subscription {} are sealed, and no secrets key is configured",
                subscription.id
            ))),
            Some(keys) => keys.open(&subscription.id, &secret.secret).map_err(|error| {
                StoreError::Corrupt(format!(
                    "a signing secret of subscription {} cannot be read: {error}",
                    subscription.id
                ))
            }),
        }?;
        secret.secret = opened;
    }
    Ok(subscription)
}

/// Where the generated key of a SQLite database is kept when none is configured: beside it, as
/// `<file name>.secrets-key`.
pub fn key_file_beside(database: &Path) -> PathBuf {
    let mut name = database.file_name().map(|name| name.to_os_string()).unwrap_or_else(|| "hookgate.db".into());
    name.push(".secrets-key");
    database.with_file_name(name)
}

/// Why the key file could not be used. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the secrets key file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot create the secrets key file {path}: {reason}")]
    Create { path: String, reason: String },
    #[error("the secrets key file {path} does not hold a key: {reason}")]
    Invalid { path: String, reason: KeyError },
}

/// The keys in `path`, when the file exists.
pub fn read_key_file(path: &Path) -> Result<Option<SecretsKeys>, KeyFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(KeyFileError::Read { path: path.display().to_string(), reason: error.to_string() }),
    };
    SecretsKeys::parse(&text, &[])
        .map(Some)
        .map_err(|reason| KeyFileError::Invalid { path: path.display().to_string(), reason })
}

/// Generates a key and writes it to `path` (a new file, readable by its owner only).
pub fn create_key_file(path: &Path) -> Result<SecretsKeys, KeyFileError> {
    use std::io::Write as _;
    let (keys, text) = SecretsKeys::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let refuse =
        |error: std::io::Error| KeyFileError::Create { path: path.display().to_string(), reason: error.to_string() };
    let mut file = options.open(path).map_err(refuse)?;
    file.write_all(format!("{text}\n").as_bytes()).map_err(refuse)?;
    file.sync_all().map_err(refuse)?;
    Ok(keys)
}

/// What [`seal_stored_secrets`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealing {
    /// Subscriptions whose secrets were plaintext, or sealed with an earlier key, and are now
    /// sealed with the current one.
    pub resealed: usize,
    /// Subscriptions whose secrets were already sealed with the current key.
    pub sealed: usize,
}

/// Why the stored secrets could not be brought under the configured keys.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SealingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "a signing secret of subscription {subscription} cannot be read: {reason}. Configure the key it was sealed with (secrets_key, or secrets_previous_keys during a rotation); nothing was changed"
    )]
    WrongKey { subscription: String, reason: OpenError },
}

/// Checks that every stored secret opens with the configured keys (a wrong key is reported here,
/// at start, not as deliveries that cannot be signed), then seals plaintext secrets and reseals
/// those of earlier keys with the current one, each subscription in one write.
pub async fn seal_stored_secrets(store: &Store) -> Result<Sealing, SealingError> {
    let keys = store
        .secrets_keys()
        .ok_or_else(|| SealingError::Store(StoreError::Database("no secrets key is installed in the store".into())))?;
    let bodies = store.subscription_bodies().await?;
    let mut stale = Vec::new();
    let mut sealing = Sealing::default();
    for (id, body) in &bodies {
        let stored: Subscription =
            serde_json::from_str(body).map_err(|error| StoreError::Corrupt(error.to_string()))?;
        let mut current = true;
        for secret in &stored.secrets {
            if let Some((key_id, _)) = sealed_parts(&secret.secret) {
                keys.open(id, &secret.secret)
                    .map_err(|reason| SealingError::WrongKey { subscription: id.clone(), reason })?;
                current &= key_id == keys.current_id();
            } else {
                current = false;
            }
        }
        if current {
            sealing.sealed += 1;
        } else {
            stale.push(id.clone());
        }
    }
    for id in stale {
        // Read, opened and written back sealed with the current key, in the backend's one write.
        if store.update_subscription(&id, |_| {}).await?.is_some() {
            sealing.resealed += 1;
        }
    }
    Ok(sealing)
}

/// True when some stored subscription holds a sealed secret: a store that must not be given a
/// fresh key.
pub async fn any_sealed(store: &Store) -> Result<bool, StoreError> {
    let bodies = store.subscription_bodies().await?;
    Ok(bodies.iter().any(|(_, body)| body.contains(SEALED_PREFIX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(byte: u8) -> SecretsKeys {
        SecretsKeys::parse(&hex::encode([byte; KEY_BYTES]), &[]).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_with_its_key_for_its_subscription_only() {
        let keys = keys(7);
        let sealed = keys.seal("sub_a", "whsec_plain");
        assert!(sealed.starts_with(SEALED_PREFIX) && !sealed.contains("whsec_plain"), "{sealed}");
        assert_eq!(keys.open("sub_a", &sealed).unwrap(), "whsec_plain");
        assert_eq!(keys.open("sub_b", &sealed), Err(OpenError::DoesNotOpen(keys.current_id().to_owned())));
        assert_ne!(keys.seal("sub_a", "whsec_plain"), sealed, "a fresh nonce each time");
    }

    #[test]
    fn another_key_names_the_key_the_secret_needs() {
        let sealed = keys(7).seal("sub_a", "whsec_plain");
        let error = keys(8).open("sub_a", &sealed).unwrap_err();
        assert_eq!(error, OpenError::UnknownKey(keys(7).current_id().to_owned()));
    }

    #[test]
    fn a_previous_key_still_opens_what_it_sealed() {
        let old = hex::encode([7u8; KEY_BYTES]);
        let rotated = SecretsKeys::parse(&hex::encode([8u8; KEY_BYTES]), &[old]).unwrap();
        let sealed = keys(7).seal("sub_a", "whsec_plain");
        assert_eq!(rotated.open("sub_a", &sealed).unwrap(), "whsec_plain");
    }

    #[test]
    fn a_changed_byte_does_not_open() {
        let keys = keys(7);
        let sealed = keys.seal("sub_a", "whsec_plain");
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(matches!(keys.open("sub_a", &tampered), Err(OpenError::DoesNotOpen(_) | OpenError::Malformed)));
    }

    #[test]
    fn keys_are_read_as_hex_or_base64_and_refused_without_showing_them() {
        let bytes = [42u8; KEY_BYTES];
        let from_hex = SecretsKeys::parse(&hex::encode(bytes), &[]).unwrap();
        let from_base64 = SecretsKeys::parse(&STANDARD.encode(bytes), &[]).unwrap();
        let from_url_safe = SecretsKeys::parse(&URL_SAFE_NO_PAD.encode(bytes), &[]).unwrap();
        assert_eq!(from_hex.current_id(), from_base64.current_id());
        assert_eq!(from_hex.current_id(), from_url_safe.current_id());
        let short = "c2hvcnQta2V5LXRleHQ";
        let error = SecretsKeys::parse(short, &[]).unwrap_err().to_string();
        assert!(error.contains("secrets_key must be 32 bytes") && !error.contains(short), "{error}");
        let error = SecretsKeys::parse(&hex::encode(bytes), &["not a key!".into()]).unwrap_err().to_string();
        assert!(error.starts_with("secrets_previous_keys") && !error.contains("not a key!"), "{error}");
    }

    #[test]
    fn generated_keys_differ_and_their_text_reads_back_as_the_same_key() {
        let (first, text) = SecretsKeys::generate();
        let (second, _) = SecretsKeys::generate();
        assert_ne!(first.current_id(), second.current_id());
        assert_eq!(SecretsKeys::parse(&text, &[]).unwrap().current_id(), first.current_id());
    }

    #[test]
    fn the_debug_form_shows_key_ids_only() {
        let text = hex::encode([9u8; KEY_BYTES]);
        let shown = format!("{:?}", SecretsKeys::parse(&text, &[]).unwrap());
        assert!(!shown.contains(&text) && shown.contains("current"), "{shown}");
    }
}
