//! Secrets: random tokens, hashes of credentials, and `${NAME}` references in definitions.
//!
//! Shipped definition files never hold a secret; they name it as `${NAME}`, and
//! [`SecretSource`] resolves the name from the environment or from the secrets file (a TOML
//! table of `NAME = "value"`). Nothing here logs or formats a secret's value.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use subtle::ConstantTimeEq;

/// A URL-safe random token of `bytes` random bytes (43 characters for 32 bytes).
pub fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer)
}

/// The lower-case hex SHA-256 of a credential, which is what hookgate stores.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Compares two byte strings in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The name inside a `${NAME}` reference, or `None` when `text` is not a reference.
pub fn reference_name(text: &str) -> Option<&str> {
    let name = text.strip_prefix("${")?.strip_suffix('}')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    let valid = (first.is_ascii_uppercase() || first == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    valid.then_some(name)
}

/// Why the secrets file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretsFileError {
    #[error("cannot read the secrets file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the secrets file {path} is not a TOML table of NAME = \"value\": {reason}")]
    Format { path: String, reason: String },
}

/// Reads `NAME = "value"` lines. Errors name the line or the secret, never a value.
fn parse_secrets_file(text: &str) -> Result<HashMap<String, String>, String> {
    let table = text.parse::<toml::Table>().map_err(|error| {
        let line = error.span().map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        match line {
            Some(line) => format!("TOML syntax error on line {line}"),
            None => "TOML syntax error".to_owned(),
        }
    })?;
    table
        .into_iter()
        .map(|(name, value)| match value {
            toml::Value::String(text) => Ok((name, text)),
            _ => Err(format!("secret {name} must be a quoted string (its value is not shown)")),
        })
        .collect()
}

/// Where `${NAME}` references are resolved: the secrets file first, then the environment.
#[derive(Clone, Default)]
pub struct SecretSource {
    file: HashMap<String, String>,
    use_environment: bool,
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSource")
            .field("names_in_file", &self.file.keys().collect::<Vec<_>>())
            .field("use_environment", &self.use_environment)
            .finish()
    }
}

impl SecretSource {
    /// Resolves from the process environment and, when given, the secrets file.
    pub fn load(secrets_file: Option<&Path>) -> Result<SecretSource, SecretsFileError> {
        let file = match secrets_file {
            None => HashMap::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| SecretsFileError::Read {
                    path: path.display().to_string(),
                    reason: error.to_string(),
                })?;
                parse_secrets_file(&text)
                    .map_err(|reason| SecretsFileError::Format { path: path.display().to_string(), reason })?
            }
        };
        Ok(SecretSource { file, use_environment: true })
    }

    /// A source holding exactly these values and nothing from the environment.
    pub fn from_values(values: impl IntoIterator<Item = (String, String)>) -> SecretSource {
        SecretSource { file: values.into_iter().collect(), use_environment: false }
    }

    pub fn resolve(&self, name: &str) -> Option<String> {
        if let Some(value) = self.file.get(name) {
            // An empty secret would let anyone sign: it counts as not set.
            return (!value.trim().is_empty()).then(|| value.clone());
        }
        if self.use_environment {
            return std::env::var(name).ok().filter(|value| !value.trim().is_empty());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_dollar_brace_upper_case_names() {
        assert_eq!(reference_name("${STRIPE_SECRET}"), Some("STRIPE_SECRET"));
        assert_eq!(reference_name("${_X1}"), Some("_X1"));
        assert_eq!(reference_name("whsec_literal"), None);
        assert_eq!(reference_name("${lower}"), None);
        assert_eq!(reference_name("${1ABC}"), None);
        assert_eq!(reference_name("${}"), None);
        assert_eq!(reference_name("prefix ${A}"), None);
    }

    #[test]
    fn secrets_file_wins_over_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        std::fs::write(&path, "PATH = \"from-file\"\nONLY_FILE = \"x\"\n").unwrap();
        let source = SecretSource::load(Some(&path)).unwrap();
        assert_eq!(source.resolve("PATH").as_deref(), Some("from-file"));
        assert_eq!(source.resolve("ONLY_FILE").as_deref(), Some("x"));
        assert!(source.resolve("HOOKGATE_SURELY_UNSET_SECRET").is_none());
    }

    #[test]
    fn an_empty_secret_counts_as_not_set() {
        let source =
            SecretSource::from_values([("EMPTY".to_string(), "".to_string()), ("BLANK".to_string(), "  ".to_string())]);
        assert_eq!(source.resolve("EMPTY"), None);
        assert_eq!(source.resolve("BLANK"), None);
    }

    #[test]
    fn a_malformed_secrets_file_is_reported_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        std::fs::write(&path, "KEY = 42\nhunter2").unwrap();
        let error = SecretSource::load(Some(&path)).unwrap_err().to_string();
        assert!(error.contains("not a TOML table"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        std::fs::write(&path, "PARTNER_KEY = 98765432123456789\n").unwrap();
        let error = SecretSource::load(Some(&path)).unwrap_err().to_string();
        assert!(error.contains("secret PARTNER_KEY must be a quoted string"), "{error}");
        assert!(!error.contains("98765432123456789"), "{error}");
    }

    #[test]
    fn tokens_are_url_safe_and_distinct() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, random_token(32));
    }
}
