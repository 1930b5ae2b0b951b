//! Configuration in layers: built-in defaults, then a TOML file, then `HOOKGATE_*` environment
//! variables, then command-line flags. Unknown keys in the file are rejected. The result is
//! validated once into a typed [`Config`]; nothing else reads the environment for settings.
//!
//! Configuration is plain data: it builds none of its consumers' types and opens no file but its
//! own. The composition root (`lib.rs`) turns it into each module's settings.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::notice::NoticeKind;

/// The networks the deprecated `delivery_allow_private_networks` stands for: private, loopback,
/// link-local, shared and unique-local addresses (metadata addresses in them stay refused).
pub const PRIVATE_NETWORKS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// Every setting, with its default.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Folder of hook definition files.
    pub definitions: PathBuf,
    /// A definition file larger than this is refused (with its name).
    pub max_definition_file_bytes: u64,
    /// Address of the HTTP listener.
    pub http: SocketAddr,
    /// The store: the embedded database's file (a path, or `sqlite:` and a path), or a
    /// `postgres://` URL for a database several nodes share. See [`Config::database_target`].
    pub database: PathBuf,
    /// Base URL that hook URLs are shown with; defaults to `http://<bound address>`.
    pub public_url: Option<String>,
    /// TOML file of `NAME = "value"` secrets that `${NAME}` references resolve from.
    pub secrets_file: Option<PathBuf>,
    /// The admin bearer token for the management API; generated on first start if unset.
    /// `HOOKGATE_ADMIN_TOKEN` is read as raw text, never parsed, and never echoed in errors.
    #[serde(default, deserialize_with = "secret_text")]
    pub admin_token: Option<String>,
    /// The key subscription signing secrets are sealed with at rest: 32 bytes, as 64 hex digits
    /// or base64. Unset on SQLite: a key generated at first start, kept in a file beside the
    /// database (`<database>.secrets-key`, mode 0600). Required on PostgreSQL.
    /// `HOOKGATE_SECRETS_KEY` is read as raw text, never parsed as a number, never echoed.
    #[serde(default, deserialize_with = "secrets_key_text")]
    pub secrets_key: Option<String>,
    /// Keys secrets were sealed with before `secrets_key` (a rotation): still read, and their
    /// secrets resealed with `secrets_key` at start. `HOOKGATE_SECRETS_PREVIOUS_KEYS`: comma-separated.
    #[serde(default)]
    pub secrets_previous_keys: Vec<String>,
    /// Event names routed to workflows begin with `<event_prefix>.<app>.`.
    pub event_prefix: String,
    /// Body limit of hooks that do not set `maxBodyBytes`.
    pub max_body_bytes: u64,
    /// Multipart file content kept inline in the event, for hooks that do not set `maxFileBytes`.
    pub max_file_bytes: u64,
    /// Bytes of request bodies and SMTP messages held at once, all connections together; past
    /// it a request is answered 503 with `Retry-After` (SMTP: 452).
    pub max_body_bytes_in_flight: u64,
    /// Time allowed to send the request line and headers.
    pub header_read_timeout_secs: u64,
    /// Time allowed to send the whole body.
    pub body_timeout_secs: u64,
    /// Open HTTP connections at most; more are answered `503` and closed at once.
    pub max_connections: usize,
    /// Open HTTP connections from one client address (an IPv6 /64) at most; more are answered
    /// `429` and closed at once.
    pub max_connections_per_client: usize,
    /// HTTP requests per second one client address may send (`0`: unlimited); past the rate and
    /// its burst, `429` with `Retry-After`.
    pub client_requests_per_second: u32,
    pub client_request_burst: u32,
    /// Requests per second (a burst of one second's worth) for hooks, by event name.
    pub hook_rate_limits: BTreeMap<String, f64>,
    /// Requests per second (a burst of one second's worth) for platform sources, by the segment
    /// of their path (`/api/webhooks/<segment>`).
    pub source_rate_limits: BTreeMap<String, f64>,
    /// Reload when the definitions folder changes (SIGHUP always reloads).
    pub watch_definitions: bool,
    /// After SIGTERM or SIGINT: how long requests, SMTP sessions and deliveries in flight may
    /// take to finish before the process exits anyway.
    pub shutdown_timeout_secs: u64,
    /// Address of the SMTP listener for email hooks.
    pub smtp: SocketAddr,
    /// The domain of email hook addresses (`<token>@<mail_domain>`); point its MX here.
    pub mail_domain: String,
    /// Largest message accepted over SMTP (advertised in `SIZE`).
    pub smtp_max_message_bytes: u64,
    /// Time allowed for each SMTP command (and each chunk of a message).
    pub smtp_command_timeout_secs: u64,
    /// Time allowed for a whole SMTP session.
    pub smtp_session_timeout_secs: u64,
    /// Open SMTP connections at most; more are answered 421.
    pub smtp_max_connections: usize,
    /// Open SMTP connections from one client address (an IPv6 /64) at most; more are answered 421.
    pub smtp_max_connections_per_client: usize,
    /// Messages (`MAIL` commands) per minute one client address may send over SMTP (`0`:
    /// unlimited), with a burst of one minute's worth; past it, `421` and the session ends.
    pub smtp_client_messages_per_minute: u32,
    /// PEM certificate chain and private key: when both are set, SMTP offers STARTTLS.
    pub smtp_tls_certificate: Option<PathBuf>,
    pub smtp_tls_key: Option<PathBuf>,
    /// Check DKIM and SPF of received mail and record the results in the events.
    pub mail_authentication: bool,
    /// The nameserver for DKIM and SPF lookups (UDP, then TCP); the system's when unset.
    pub dns_resolver: Option<SocketAddr>,
    /// Subscriptions may deliver to `http://` URLs (else HTTPS only).
    pub delivery_allow_http: bool,
    /// Networks subscriptions may deliver to besides public addresses, in CIDR notation (or single
    /// addresses): a list, or one string of comma-separated items. A cloud metadata address is
    /// allowed only when listed exactly (`169.254.169.254/32`), never through a network around it.
    #[serde(default, deserialize_with = "one_or_many")]
    pub delivery_allow_networks: Vec<String>,
    /// Deprecated: adds the private, loopback, link-local and unique-local networks to
    /// `delivery_allow_networks` (metadata addresses in them stay refused).
    pub delivery_allow_private_networks: bool,
    /// Seconds to wait before each retry of a failed delivery; after the last, it has failed.
    pub delivery_retry_schedule_secs: Vec<u64>,
    /// A subscription whose deliveries have all failed for this long is disabled.
    pub delivery_disable_after_secs: u64,
    /// NATS server URL: when set, every committed event is also published to JetStream.
    pub nats: Option<String>,
    /// Events are published to `<nats_subject_prefix>.<event name>`.
    pub nats_subject_prefix: String,
    /// The JetStream stream that takes `<nats_subject_prefix>.>`, created when missing.
    pub nats_stream: String,
    /// Time allowed for one delivery request, answer included.
    pub delivery_timeout_secs: u64,
    /// Deliveries in flight at once, and at most per subscription.
    pub delivery_concurrency: usize,
    pub delivery_concurrency_per_subscription: usize,
    /// How long a claimed delivery is kept from other workers (and nodes) before it is due again:
    /// the time a crashed node's deliveries wait. Unset: long enough for a full claimed batch at
    /// `delivery_timeout_secs` each, plus a minute.
    pub delivery_lease_secs: Option<u64>,
    /// Time one call of a transformation may run (hooks' and subscriptions' `transform`).
    pub transform_time_limit_ms: u64,
    /// Memory one transformation's runtime may hold.
    pub transform_memory_limit_bytes: u64,
    /// Threads that run transformations (never tokio's workers).
    pub transform_threads: usize,
    /// Addresses that operator notices are mailed to (a list, or one string of comma-separated
    /// addresses); none: no mail.
    #[serde(default, deserialize_with = "one_or_many")]
    pub notify_email: Vec<String>,
    /// The relay notices are mailed through: `smtp://host:port` (STARTTLS when the relay offers
    /// it; `?tls=required` insists, `?tls=none` never), or `smtps://user:pass@host` (TLS from
    /// the start). Credentials in it are a secret: never shown.
    pub smtp_relay: Option<String>,
    /// PEM certificates trusted for the relay besides the public roots (a private relay's CA).
    pub smtp_relay_ca: Option<PathBuf>,
    /// The sender of notice mail; `hookgate@<mail_domain>` when unset.
    pub notify_mail_from: Option<String>,
    /// Which `hookgate.*` events are mailed.
    pub notify_mail_events: Vec<String>,
    /// At most one mail per subscription (or source, or hook) and kind within this long; what
    /// happens meanwhile is told in the next one.
    pub notify_mail_coalesce_secs: u64,
    /// A source refusing this many requests within `notify_rejections_window_secs` gives a
    /// `hookgate.source.rejections` event.
    pub notify_rejections_threshold: usize,
    pub notify_rejections_window_secs: u64,
    /// Events, and delivery history, older than this many days are deleted; none: kept forever.
    pub retention_days: Option<u64>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("definitions", &self.definitions)
            .field("http", &self.http)
            .field("database", &self.database_target())
            .field("public_url", &self.public_url)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("secrets_key", &self.secrets_key.as_ref().map(|_| "<set>"))
            .field("secrets_previous_keys", &self.secrets_previous_keys.len())
            .finish_non_exhaustive()
    }
}

/// What `database` names.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// The embedded SQLite database in this file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its `postgres://` (or `postgresql://`) URL.
    Postgres(String),
}

impl DatabaseTarget {
    /// Reads a `--database` value: a PostgreSQL URL, `sqlite:` and a path, or a plain path.
    pub fn parse(text: &str) -> DatabaseTarget {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            DatabaseTarget::Postgres(text.to_owned())
        } else {
            DatabaseTarget::Sqlite(PathBuf::from(text.strip_prefix("sqlite:").unwrap_or(text)))
        }
    }
}

/// Shows the URL without its password, so that a printed configuration leaks no secret.
impl std::fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseTarget::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            DatabaseTarget::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db` (and a `password=`
/// parameter likewise).
pub fn redact_password(url: &str) -> String {
    let mut shown = url.to_owned();
    if let Some(scheme_end) = shown.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = shown[authority_start..].find(['/', '?']).map_or(shown.len(), |end| authority_start + end);
        if let Some(at) = shown[authority_start..authority_end].rfind('@').map(|at| authority_start + at)
            && let Some(colon) = shown[authority_start..at].find(':').map(|colon| authority_start + colon)
        {
            shown.replace_range(colon + 1..at, "***");
        }
    }
    if let Some(start) = shown.find("password=") {
        let value = start + "password=".len();
        let end = shown[value..].find('&').map_or(shown.len(), |end| value + end);
        shown.replace_range(value..end, "***");
    }
    shown
}

impl Config {
    /// The store `database` names.
    pub fn database_target(&self) -> DatabaseTarget {
        DatabaseTarget::parse(&self.database.to_string_lossy())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            definitions: PathBuf::from("hook-definitions"),
            max_definition_file_bytes: crate::definitions::MAX_DEFINITION_FILE_BYTES,
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: PathBuf::from("data/hookgate.db"),
            public_url: None,
            secrets_file: None,
            admin_token: None,
            secrets_key: None,
            secrets_previous_keys: Vec::new(),
            event_prefix: "kustomer.app".into(),
            max_body_bytes: 1024 * 1024,
            max_file_bytes: 256 * 1024,
            max_body_bytes_in_flight: 256 * 1024 * 1024,
            header_read_timeout_secs: 10,
            body_timeout_secs: 30,
            max_connections: 4096,
            max_connections_per_client: 256,
            client_requests_per_second: 200,
            client_request_burst: 400,
            hook_rate_limits: BTreeMap::new(),
            source_rate_limits: BTreeMap::new(),
            watch_definitions: true,
            shutdown_timeout_secs: 30,
            smtp: SocketAddr::from(([127, 0, 0, 1], 2525)),
            mail_domain: "localhost".into(),
            smtp_max_message_bytes: 10 * 1024 * 1024,
            smtp_command_timeout_secs: 60,
            smtp_session_timeout_secs: 600,
            smtp_max_connections: 512,
            smtp_max_connections_per_client: 32,
            smtp_client_messages_per_minute: 600,
            smtp_tls_certificate: None,
            smtp_tls_key: None,
            mail_authentication: true,
            dns_resolver: None,
            delivery_allow_http: false,
            delivery_allow_networks: Vec::new(),
            delivery_allow_private_networks: false,
            // About 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
            delivery_retry_schedule_secs: vec![5, 300, 1800, 7200, 18_000, 36_000, 36_000],
            delivery_disable_after_secs: 5 * 24 * 3600,
            delivery_timeout_secs: 15,
            nats: None,
            nats_subject_prefix: "hookgate".into(),
            nats_stream: "HOOKGATE".into(),
            delivery_concurrency: 256,
            delivery_concurrency_per_subscription: 16,
            delivery_lease_secs: None,
            transform_time_limit_ms: 50,
            transform_memory_limit_bytes: 16 * 1024 * 1024,
            transform_threads: 2,
            notify_email: Vec::new(),
            smtp_relay: None,
            smtp_relay_ca: None,
            notify_mail_from: None,
            notify_mail_events: NoticeKind::ALL.iter().map(|kind| kind.event_name().to_owned()).collect(),
            notify_mail_coalesce_secs: 600,
            notify_rejections_threshold: 10,
            notify_rejections_window_secs: 60,
            retention_days: None,
        }
    }
}

/// Settings given on the command line; `None` leaves the lower layers in force.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definitions: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail_domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<String>,
}

/// The keys `HOOKGATE_*` variables may set (others, such as test settings, are left alone).
const ENVIRONMENT_KEYS: &[&str] = &[
    "definitions",
    "max_definition_file_bytes",
    "http",
    "database",
    "public_url",
    "secrets_file",
    "event_prefix",
    "max_body_bytes",
    "max_file_bytes",
    "max_body_bytes_in_flight",
    "header_read_timeout_secs",
    "body_timeout_secs",
    "max_connections",
    "max_connections_per_client",
    "client_requests_per_second",
    "client_request_burst",
    "hook_rate_limits",
    "source_rate_limits",
    "watch_definitions",
    "shutdown_timeout_secs",
    "smtp",
    "mail_domain",
    "smtp_max_message_bytes",
    "smtp_command_timeout_secs",
    "smtp_session_timeout_secs",
    "smtp_max_connections",
    "smtp_max_connections_per_client",
    "smtp_client_messages_per_minute",
    "smtp_tls_certificate",
    "smtp_tls_key",
    "mail_authentication",
    "dns_resolver",
    "delivery_allow_http",
    "delivery_allow_networks",
    "delivery_allow_private_networks",
    "delivery_retry_schedule_secs",
    "delivery_timeout_secs",
    "delivery_disable_after_secs",
    "nats",
    "nats_subject_prefix",
    "nats_stream",
    "delivery_concurrency",
    "delivery_concurrency_per_subscription",
    "delivery_lease_secs",
    "transform_time_limit_ms",
    "transform_memory_limit_bytes",
    "transform_threads",
    "notify_email",
    "smtp_relay",
    "smtp_relay_ca",
    "notify_mail_from",
    "notify_mail_events",
    "notify_mail_coalesce_secs",
    "notify_rejections_threshold",
    "notify_rejections_window_secs",
    "retention_days",
];

/// The longest retention accepted (about 100 years): longer is forever, so leave it unset.
pub const MAX_RETENTION_DAYS: u64 = 36_500;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Layers defaults, the file (when given), the environment and the flags.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!("the config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment =
            figment.merge(Env::prefixed("HOOKGATE_").only(ENVIRONMENT_KEYS)).merge(Serialized::defaults(overrides));
        let mut config: Config = figment.extract().map_err(|error| ConfigError::Invalid(error.to_string()))?;
        if let Some(token) = std::env::var_os("HOOKGATE_ADMIN_TOKEN") {
            let token = token
                .into_string()
                .map_err(|_| ConfigError::Invalid("HOOKGATE_ADMIN_TOKEN is not valid UTF-8".into()))?;
            config.admin_token = Some(token);
        }
        if let Some(key) = std::env::var_os("HOOKGATE_SECRETS_KEY") {
            let key = key
                .into_string()
                .map_err(|_| ConfigError::Invalid("HOOKGATE_SECRETS_KEY is not valid UTF-8".into()))?;
            // Empty is unset, as for a variable exported with no value.
            config.secrets_key = Some(key).filter(|key| !key.trim().is_empty());
        }
        if let Some(keys) = std::env::var_os("HOOKGATE_SECRETS_PREVIOUS_KEYS") {
            let keys = keys
                .into_string()
                .map_err(|_| ConfigError::Invalid("HOOKGATE_SECRETS_PREVIOUS_KEYS is not valid UTF-8".into()))?;
            config.secrets_previous_keys =
                keys.split(',').map(str::trim).filter(|key| !key.is_empty()).map(str::to_owned).collect();
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!("public_url must be an absolute http(s) URL, not {url:?}")));
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > crate::definitions::MAX_BODY_BYTES_CEILING {
            return Err(ConfigError::Invalid(format!(
                "max_body_bytes must be from 1 to {}",
                crate::definitions::MAX_BODY_BYTES_CEILING
            )));
        }
        if self.header_read_timeout_secs == 0 || self.body_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "header_read_timeout_secs and body_timeout_secs must be at least 1 second".into(),
            ));
        }
        if self.max_file_bytes > crate::definitions::MAX_BODY_BYTES_CEILING {
            return Err(ConfigError::Invalid(format!(
                "max_file_bytes must be at most {}",
                crate::definitions::MAX_BODY_BYTES_CEILING
            )));
        }
        if self.max_body_bytes_in_flight < 64 * 1024 || self.max_body_bytes_in_flight > u64::from(u32::MAX) {
            return Err(ConfigError::Invalid(format!("max_body_bytes_in_flight must be from 65536 to {}", u32::MAX)));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid("max_connections must be at least 1".into()));
        }
        if self.shutdown_timeout_secs == 0 || self.shutdown_timeout_secs > 3600 {
            return Err(ConfigError::Invalid("shutdown_timeout_secs must be from 1 to 3600".into()));
        }
        self.validate_fairness()?;
        if !crate::email::is_domain(self.mail_domain.trim_end()) {
            return Err(ConfigError::Invalid(format!("mail_domain must be a domain name, not {:?}", self.mail_domain)));
        }
        if self.smtp_max_message_bytes < 1024 || self.smtp_max_message_bytes > 100 * 1024 * 1024 {
            return Err(ConfigError::Invalid("smtp_max_message_bytes must be from 1024 to 104857600".into()));
        }
        if self.smtp_command_timeout_secs == 0 || self.smtp_session_timeout_secs == 0 || self.smtp_max_connections == 0
        {
            return Err(ConfigError::Invalid(
                "smtp_command_timeout_secs, smtp_session_timeout_secs and smtp_max_connections must be at least 1"
                    .into(),
            ));
        }
        if self.smtp_tls_certificate.is_some() != self.smtp_tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "smtp_tls_certificate and smtp_tls_key go together: set both to offer STARTTLS".into(),
            ));
        }
        if self.delivery_timeout_secs == 0
            || self.delivery_concurrency == 0
            || self.delivery_concurrency_per_subscription == 0
        {
            return Err(ConfigError::Invalid(
                "delivery_timeout_secs, delivery_concurrency and delivery_concurrency_per_subscription must be at least 1".into(),
            ));
        }
        if self.transform_time_limit_ms == 0 || self.transform_threads == 0 {
            return Err(ConfigError::Invalid(
                "transform_time_limit_ms and transform_threads must be at least 1".into(),
            ));
        }
        if self.transform_memory_limit_bytes < 1024 * 1024 {
            return Err(ConfigError::Invalid(
                "transform_memory_limit_bytes must be at least 1048576 (1 MiB): a JavaScript runtime needs that much to start".into(),
            ));
        }
        if self.delivery_lease_secs.is_some_and(|lease| lease < 2 * self.delivery_timeout_secs) {
            return Err(ConfigError::Invalid(
                "delivery_lease_secs must be at least twice delivery_timeout_secs, or a delivery still being sent could be sent again by another worker".into(),
            ));
        }
        self.delivery_networks()?;
        self.validate_notifications()?;
        if self.retention_days.is_some_and(|days| days == 0 || days > MAX_RETENTION_DAYS) {
            return Err(ConfigError::Invalid(format!(
                "retention_days must be from 1 to {MAX_RETENTION_DAYS}; leave it unset to keep events forever"
            )));
        }
        if self.admin_token.as_ref().is_some_and(|token| token.len() < 16) {
            return Err(ConfigError::Invalid("the admin token must be at least 16 characters long".into()));
        }
        Ok(())
    }

    /// The per-client shares and the rates.
    fn validate_fairness(&self) -> Result<(), ConfigError> {
        if self.max_connections_per_client == 0 || self.smtp_max_connections_per_client == 0 {
            return Err(ConfigError::Invalid(
                "max_connections_per_client and smtp_max_connections_per_client must be at least 1".into(),
            ));
        }
        if self.client_requests_per_second > 0 && self.client_request_burst == 0 {
            return Err(ConfigError::Invalid(
                "client_request_burst must be at least 1 (set client_requests_per_second to 0 for no limit)".into(),
            ));
        }
        let rates = self.hook_rate_limits.iter().map(|rate| ("hook_rate_limits", rate));
        let sources = self.source_rate_limits.iter().map(|rate| ("source_rate_limits", rate));
        if let Some((setting, (name, _))) =
            rates.chain(sources).find(|(_, (_, per_second))| !(per_second.is_finite() && **per_second > 0.0))
        {
            return Err(ConfigError::Invalid(format!(
                "{setting}: the rate of {name:?} must be a number of requests per second above 0"
            )));
        }
        Ok(())
    }

    fn validate_notifications(&self) -> Result<(), ConfigError> {
        if self.notify_email.is_empty() != self.smtp_relay.is_none() {
            return Err(ConfigError::Invalid(
                "notify_email and smtp_relay go together: set both to mail notices, or neither".into(),
            ));
        }
        if let Some(address) = self.notify_email.iter().chain(&self.notify_mail_from).find(|a| !is_mailbox(a)) {
            return Err(ConfigError::Invalid(format!("{address:?} is not a mail address (name@domain)")));
        }
        if let Some(relay) = &self.smtp_relay {
            let parsed = reqwest::Url::parse(relay).ok();
            let usable = parsed.is_some_and(|url| matches!(url.scheme(), "smtp" | "smtps") && url.host_str().is_some());
            if !usable {
                return Err(ConfigError::Invalid(
                    "smtp_relay must be an smtp:// or smtps:// URL with a host (its value is not shown)".into(),
                ));
            }
        }
        if let Some(name) = self.notify_mail_events.iter().find(|name| NoticeKind::from_event_name(name).is_none()) {
            let known: Vec<&str> = NoticeKind::ALL.iter().map(|kind| kind.event_name()).collect();
            return Err(ConfigError::Invalid(format!(
                "notify_mail_events: unknown event {name:?}; known are {}",
                known.join(", ")
            )));
        }
        if self.notify_rejections_threshold == 0 || self.notify_rejections_window_secs == 0 {
            return Err(ConfigError::Invalid(
                "notify_rejections_threshold and notify_rejections_window_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The networks deliveries may go to besides public addresses: `delivery_allow_networks`
    /// (a single address as its `/32` or `/128`), and the private ones when the deprecated
    /// `delivery_allow_private_networks` is set.
    pub fn delivery_networks(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        let deprecated = if self.delivery_allow_private_networks { PRIVATE_NETWORKS } else { &[] };
        let listed = self.delivery_allow_networks.iter().map(String::as_str);
        listed
            .chain(deprecated.iter().copied())
            .map(|text| {
                let text = text.trim();
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "delivery_allow_networks: {text:?} is not a network (like 10.0.0.0/8) or an address (like 127.0.0.1)"
                        ))
                    })
            })
            .collect()
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }

    /// How long a graceful shutdown may take.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// How long events and delivery history are kept; `None`: forever.
    pub fn retention(&self) -> Option<Duration> {
        self.retention_days.map(|days| Duration::from_secs(days * 86_400))
    }
}

/// `name@domain`, loosely: enough to catch a setting that is not an address at all.
fn is_mailbox(address: &str) -> bool {
    address.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !address.contains(char::is_whitespace) && !domain.contains('@')
    })
}

/// A list of strings, or one string of comma-separated items (as an environment variable gives).
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => {
            text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect()
        }
        OneOrMany::Many(items) => items,
    })
}

/// Reads the secrets key as text; any other kind of value is refused without showing it.
fn secrets_key_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error as _;
    match Option::<toml::Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(toml::Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(D::Error::custom("secrets_key must be a quoted string (its value is not shown)")),
    }
}

/// Reads a secret setting as text; any other kind of value is refused without showing it.
fn secret_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct SecretText;
    fn refuse<E: serde::de::Error>() -> E {
        E::custom("admin_token must be a quoted string (its value is not shown)")
    }
    impl<'de> serde::de::Visitor<'de> for SecretText {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a quoted string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(Some(text.to_owned()))
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, inner: D) -> Result<Self::Value, D::Error> {
            inner.deserialize_any(SecretText)
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(refuse())
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(refuse())
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(refuse())
        }
        fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Self::Value, E> {
            Err(refuse())
        }
        fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Self::Value, E> {
            Err(refuse())
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(refuse())
        }
    }
    deserializer.deserialize_any(SecretText)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_setting_names_a_postgres_url_or_a_sqlite_file() {
        assert_eq!(DatabaseTarget::parse("postgres://u@h/db"), DatabaseTarget::Postgres("postgres://u@h/db".into()));
        assert_eq!(
            DatabaseTarget::parse("postgresql://u@h/db"),
            DatabaseTarget::Postgres("postgresql://u@h/db".into())
        );
        assert_eq!(DatabaseTarget::parse("sqlite:/var/lib/h.db"), DatabaseTarget::Sqlite("/var/lib/h.db".into()));
        assert_eq!(DatabaseTarget::parse("data/hookgate.db"), DatabaseTarget::Sqlite("data/hookgate.db".into()));
    }

    #[test]
    fn a_printed_configuration_shows_no_database_password() {
        let config =
            Config { database: "postgres://hookgate:s3cret@db:5432/h?password=again".into(), ..Config::default() };
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret") && !printed.contains("again"), "{printed}");
        assert!(printed.contains("postgres://hookgate:***@db:5432/h?password=***"), "{printed}");
        assert_eq!(redact_password("postgres://u@db/x"), "postgres://u@db/x");
    }

    #[test]
    fn defaults_serve_on_loopback_8080_with_the_embedded_store() {
        let config = Config::default();
        assert_eq!(config.http.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database, PathBuf::from("data/hookgate.db"));
        assert_eq!(config.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookgate.toml");
        std::fs::write(&file, "http = \"127.0.0.1:9000\"\nevent_prefix = \"acme\"\n").unwrap();
        let overrides = Overrides { http: Some("127.0.0.1:9100".parse().unwrap()), ..Default::default() };
        let config = Config::load(Some(&file), &overrides).unwrap();
        assert_eq!(config.http.to_string(), "127.0.0.1:9100");
        assert_eq!(config.event_prefix, "acme");
    }

    #[test]
    fn unknown_keys_in_the_file_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookgate.toml");
        std::fs::write(&file, "htp = \"127.0.0.1:9000\"\n").unwrap();
        let error = Config::load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(error.contains("htp"), "{error}");
    }

    #[test]
    fn a_numeric_admin_token_in_the_file_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookgate.toml");
        std::fs::write(&file, "admin_token = 123456789012345678\n").unwrap();
        let error = Config::load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(error.contains("admin_token must be a quoted string"), "{error}");
        assert!(!error.contains("123456789012345678"), "{error}");
    }

    #[test]
    fn a_numeric_secrets_key_in_the_file_is_refused_without_showing_it_and_a_quoted_one_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookgate.toml");
        let digits = "1234567890".repeat(6) + "1234";
        std::fs::write(&file, format!("secrets_key = {}\n", &digits[..18])).unwrap();
        let error = Config::load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(error.contains("secrets_key must be a quoted string"), "{error}");
        assert!(!error.contains(&digits[..18]), "{error}");
        std::fs::write(&file, format!("secrets_key = \"{digits}\"\nsecrets_previous_keys = [\"{digits}\"]\n")).unwrap();
        let config = Config::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(config.secrets_key.as_deref(), Some(digits.as_str()));
        assert_eq!(config.secrets_previous_keys, vec![digits.clone()]);
        assert!(!format!("{config:?}").contains(&digits), "the debug form hides it");
    }

    #[test]
    fn zero_timeouts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookgate.toml");
        std::fs::write(&file, "body_timeout_secs = 0\n").unwrap();
        let error = Config::load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(error.contains("at least 1 second"), "{error}");
    }

    #[test]
    fn notices_are_mailed_only_with_both_an_address_and_a_relay_whose_credentials_are_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookgate.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Config::load(Some(&file), &Overrides::default())
        };
        let config =
            load("notify_email = \"ops@example.com, oncall@example.com\"\nsmtp_relay = \"smtp://relay.example:587\"\n")
                .unwrap();
        assert_eq!(config.notify_email, ["ops@example.com", "oncall@example.com"], "one string, comma-separated");
        let config =
            load("notify_email = [\"ops@example.com\"]\nsmtp_relay = \"smtps://u:p@relay.example\"\n").unwrap();
        assert_eq!(config.notify_email, ["ops@example.com"]);
        let error = load("notify_email = \"ops@example.com\"\n").unwrap_err().to_string();
        assert!(error.contains("notify_email and smtp_relay go together"), "{error}");
        let error = load("notify_email = \"ops@example.com\"\nsmtp_relay = \"http://user:hunter2@relay\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("smtp_relay must be") && !error.contains("hunter2"), "{error}");
        let error = load("notify_email = \"ops\"\nsmtp_relay = \"smtp://relay.example\"\n").unwrap_err().to_string();
        assert!(error.contains("\"ops\" is not a mail address"), "{error}");
        let error = load("notify_mail_events = [\"hookgate.subscription.gone\"]\n").unwrap_err().to_string();
        assert!(error.contains("unknown event \"hookgate.subscription.gone\""), "{error}");
    }

    #[test]
    fn notices_default_to_mailing_every_kind_coalesced_per_ten_minutes() {
        let config = Config::default();
        assert_eq!(
            config.notify_mail_events,
            [
                "hookgate.subscription.disabled",
                "hookgate.subscription.recovered",
                "hookgate.delivery.exhausted",
                "hookgate.source.rejections",
                "hookgate.quarantine.received"
            ]
        );
        assert_eq!(config.notify_mail_coalesce_secs, 600);
        assert_eq!((config.notify_rejections_threshold, config.notify_rejections_window_secs), (10, 60));
        assert!(config.notify_email.is_empty() && config.smtp_relay.is_none(), "no mail unless configured");
    }

    #[test]
    fn events_are_kept_forever_unless_retention_days_is_set_to_at_least_one_day() {
        assert_eq!(Config::default().retention_days, None);
        assert_eq!(Config::default().retention(), None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookgate.toml");
        std::fs::write(&file, "retention_days = 30\n").unwrap();
        let config = Config::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(config.retention(), Some(Duration::from_secs(30 * 86_400)));
        std::fs::write(&file, "retention_days = 0\n").unwrap();
        let error = Config::load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(error.contains("retention_days must be from 1") && error.contains("unset"), "{error}");
    }

    #[test]
    fn delivery_networks_are_cidr_or_single_addresses_and_the_deprecated_boolean_adds_the_private_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookgate.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Config::load(Some(&file), &Overrides::default())
        };
        assert!(Config::default().delivery_networks().unwrap().is_empty(), "nothing but public addresses by default");
        let config = load("delivery_allow_networks = [\"10.0.0.0/8\", \"127.0.0.1\", \"fd00::/8\"]\n").unwrap();
        let shown: Vec<String> = config.delivery_networks().unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]);
        let config = load("delivery_allow_networks = \"10.0.0.0/8, 192.168.0.0/16\"\n").unwrap();
        assert_eq!(config.delivery_networks().unwrap().len(), 2, "one comma-separated string");
        let error = load("delivery_allow_networks = [\"10.0.0.0/33\"]\n").unwrap_err().to_string();
        assert!(error.contains("\"10.0.0.0/33\" is not a network"), "{error}");
        let config = load("delivery_allow_private_networks = true\n").unwrap();
        let shown: Vec<String> = config.delivery_networks().unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(shown, PRIVATE_NETWORKS);
        assert!(!shown.iter().any(|net| net.ends_with("/32") || net.ends_with("/128") && net != "::1/128"));
    }

    #[test]
    fn fair_service_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookgate.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Config::load(Some(&file), &Overrides::default())
        };
        let config =
            load("[hook_rate_limits]\n\"kustomer.app.shop.order\" = 2.5\n[source_rate_limits]\nstripe = 100\n")
                .unwrap();
        assert_eq!(config.hook_rate_limits["kustomer.app.shop.order"], 2.5);
        assert_eq!(config.source_rate_limits["stripe"], 100.0);
        let error = load("[source_rate_limits]\nstripe = 0\n").unwrap_err().to_string();
        assert!(error.contains("source_rate_limits: the rate of \"stripe\" must be"), "{error}");
        let error = load("max_connections_per_client = 0\n").unwrap_err().to_string();
        assert!(error.contains("max_connections_per_client"), "{error}");
        let error = load("client_request_burst = 0\n").unwrap_err().to_string();
        assert!(error.contains("client_request_burst must be at least 1"), "{error}");
        load("client_requests_per_second = 0\nclient_request_burst = 0\n").expect("no limit needs no burst");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let error = Config::load(Some(Path::new("/nonexistent/hookgate.toml")), &Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("does not exist"));
    }
}
