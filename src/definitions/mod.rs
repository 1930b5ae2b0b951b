//! Hook definitions: the app JSON files app authors ship, read and validated as data.
//!
//! The format is the Kustomer app definition (`app`, `version`, `title`, `hooks[]` with
//! `eventName`, `displayEventName`, `description`, `type`) plus hookgate's additive extensions
//! (see `docs/hook-definitions.md` and `schema/hook-definition.schema.json`). This file is the
//! model: a validated [`HookDefinition`] and its app, and the [`Diagnostic`]s that locate every
//! problem by origin and JSON pointer. Beside it: `read` (the folder's files into documents),
//! `checker` (documents validated into definitions, every problem at once), `sources` (the
//! platform sources listed with their secrets' names, set or not), `catalog` (the
//! validated set serving now, by URL token, swapped atomically) and `watch` (reload on change).
//! This module reads files but never touches the network; only `catalog` uses the store.

pub mod catalog;
mod checker;
mod read;
pub mod sources;
pub mod watch;

#[cfg(test)]
mod properties;

pub use checker::validate;
pub use read::{MAX_DEFINITION_FILE_BYTES, json_reason, read_folder};

use serde::Serialize;
use serde_json::Value;
use std::fmt;

use crate::event::HookType;
use crate::secrets::SecretSource;

/// The largest body limit a definition may ask for.
pub const MAX_BODY_BYTES_CEILING: u64 = 64 * 1024 * 1024;

/// A validated hook, with secret references resolved.
#[derive(Clone, PartialEq)]
pub struct HookDefinition {
    pub event_name: String,
    pub display_event_name: Option<String>,
    pub description: Option<String>,
    pub hook_type: HookType,
    pub max_body_bytes: Option<u64>,
    pub max_file_bytes: Option<u64>,
    pub redirect_url: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    /// SHA-256 (hex) of the static keys named by `apiKeys`; the keys themselves are not kept.
    pub static_key_hashes: Vec<String>,
    /// A source-specific endpoint (`/api/webhooks/{path}`) verified by the platform's signature.
    pub source: Option<SourceDefinition>,
    /// Projection and validation of the payload.
    pub shape: Option<crate::shape::Shape>,
    /// How an email hook reads mail (defaults for other hooks, where it is unused).
    pub email: crate::email::EmailSettings,
    /// An example payload, served as the hook's sample until a real event arrives.
    pub sample: Option<Value>,
    /// JavaScript `transform(event)` run on each event before it is stored (`crate::transform`).
    pub transform: Option<crate::transform::Transformation>,
}

/// A platform source: how its requests are verified, named and de-duplicated.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDefinition {
    /// The last segment of `/api/webhooks/{path}`.
    pub path: String,
    /// The scheme as the definition names it (`stripe`, `meta`, `generic-hmac`).
    pub scheme_name: String,
    /// The names of the secrets it reads (`secrets` references, in order), set or not.
    pub secret_names: Vec<String>,
    /// The name of Meta's `verifyToken` secret, when it has one.
    pub verify_token_name: Option<String>,
    /// Scheme, resolved secrets (none when none is set: requests then get `no_secret_configured`)
    /// and tolerance.
    pub verify: crate::verify::VerifyConfig,
    /// The event name; the hook's `eventName` when absent or when it finds nothing.
    pub event_name: Option<crate::template::Template>,
    /// The platform's delivery id, the idempotency key.
    pub delivery_id: Option<crate::template::Template>,
    /// A JSON array body becomes one event per element.
    pub split_arrays: bool,
    /// Meta's `hub.verify_token` for the GET subscription handshake (resolved).
    pub verify_token: Option<String>,
    /// How long a delivery id is remembered.
    pub dedup_window: std::time::Duration,
}

impl fmt::Debug for HookDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookDefinition")
            .field("event_name", &self.event_name)
            .field("hook_type", &self.hook_type)
            .field("static_keys", &self.static_key_hashes.len())
            .field("source", &self.source)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// A validated app.
#[derive(Debug, Clone, PartialEq)]
pub struct AppDefinition {
    pub app: String,
    pub version: String,
    pub title: Option<String>,
    pub hooks: Vec<HookDefinition>,
    /// Named scopes (`"view:orders": ["kustomer.app.shop.order.*"]`): names a management key
    /// may carry for sets of event patterns, the way seed 004's permission names work.
    pub scopes: std::collections::BTreeMap<String, Vec<String>>,
    pub origin: Origin,
}

/// Whether `name` can name a scope: letters, digits, `_`, `-`, `.` and at least one `:`
/// (`view:contacts`), so that it is never also an event pattern.
pub fn is_scope_name(name: &str) -> bool {
    name.len() <= 100
        && name.contains(':')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.'))
        && !name.starts_with(':')
        && !name.ends_with(':')
}

/// Where a definition came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "path")]
pub enum Origin {
    /// A file, by its path relative to the definitions folder.
    File(String),
    /// Installed through the management API, by app name.
    Installed(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => f.write_str(path),
            Origin::Installed(app) => write!(f, "installed app {app:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a definition, located by origin and JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    pub severity: Severity,
    pub origin: String,
    pub pointer: String,
    pub message: String,
    /// What the finding is about, for callers that report some kinds together.
    #[serde(skip)]
    pub concern: Concern,
}

/// What a [`Diagnostic`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concern {
    /// The definition itself.
    #[default]
    Definition,
    /// A secret a platform source reads is not set (a warning: the source answers 401 until it
    /// is). `serve` reports these as one count; `hookgate sources` lists them.
    UnsetSourceSecret,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        if self.pointer.is_empty() {
            write!(f, "{}: {label}{}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {label}{}", self.origin, self.pointer, self.message)
        }
    }
}

/// A definition document before validation: its origin and its JSON.
#[derive(Debug, Clone)]
pub struct SourceDocument {
    pub origin: Origin,
    pub json: Value,
}

/// What validation needs besides the documents.
#[derive(Debug, Clone)]
pub struct ValidationOptions {
    /// Event names routed to workflows start with `<prefix>.<app>.` (a warning otherwise).
    pub event_prefix: String,
    pub secrets: SecretSource,
}

/// The result of validating a set of documents: usable only when it has no errors.
#[derive(Debug, Clone, Default)]
pub struct Validated {
    pub apps: Vec<AppDefinition>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Validated {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Warning)
    }

    pub fn is_valid(&self) -> bool {
        self.errors().next().is_none()
    }
}

impl Diagnostic {
    /// An error at `pointer` of the document from `origin`.
    fn error(origin: &str, pointer: &str, message: String) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            origin: origin.to_owned(),
            pointer: pointer.to_owned(),
            message,
            concern: Concern::Definition,
        }
    }
}
