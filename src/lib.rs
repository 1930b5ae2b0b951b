//! hookgate: an inbound webhook gateway.
//!
//! # Layout
//!
//! Data flows one way:
//!
//! ```text
//! HTTP request
//!   -> ingress      transport: accept loop, limits, routing, web-hook keys, replies
//!      (or email::smtp: mail to a hook address, and email::extract: its JSON and JSON-LD)
//!   -> definitions  which hook is this? (the catalog, reloaded atomically)
//!   -> ingress::payload  body + content type -> JSON data (no I/O)
//!   -> event        -> Event, the one versioned type that leaves the process (no I/O)
//!   -> store        durable; the 2xx reply waits for the commit
//! api reads and manages through store and the catalog manager.
//! ```
//!
//! [`run`] serves until shutdown; `main.rs` only parses the command line (see `cli`).

pub mod api;
pub mod config;
pub mod definitions;
pub mod deliver;
pub mod email;
pub mod event;
pub mod ingress;
pub mod jsonpath;
pub mod keys;
pub mod pipeline;
pub mod secrets;
pub mod shape;
pub mod store;
pub mod subscriptions;
pub mod telemetry;
pub mod template;
pub mod verify;

use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

use config::Config;
use definitions::catalog::{CatalogManager, ReloadError};
use store::{Store, StoreError};

/// Everything a request handler may use.
pub struct AppState {
    pub catalog: Arc<CatalogManager>,
    pub store: Store,
    pub config: Arc<Config>,
    /// Base of the hook URLs shown to users.
    pub public_url: String,
    /// SHA-256 (hex) of the admin token; the token itself is not kept.
    pub admin_token_sha256: String,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The latest source requests that failed verification.
    pub rejections: ingress::rejections::RejectionLog,
    /// Every ingress commits through here.
    pub committer: Arc<pipeline::Committer>,
    /// Received mail: authentication lookups, then the commit.
    pub mail: pipeline::mail::MailAcceptor,
    /// The outbound client for deliveries and test sends (SSRF-guarded, no redirects).
    pub delivery_client: reqwest::Client,
    /// Where subscriptions may deliver.
    pub delivery_policy: subscriptions::TargetPolicy,
}

/// The store the configuration names.
pub fn store_config(config: &Config) -> store::StoreConfig {
    store::StoreConfig::Sqlite { path: config.database.clone() }
}

/// What the catalog is built from.
pub fn catalog_settings(config: &Config) -> definitions::catalog::CatalogSettings {
    definitions::catalog::CatalogSettings {
        folder: config.definitions.clone(),
        secrets_file: config.secrets_file.clone(),
        event_prefix: config.event_prefix.clone(),
    }
}

/// The SMTP listener's settings, with the TLS certificate loaded when one is configured.
pub fn smtp_settings(config: &Config) -> Result<ingress::smtp::SmtpSettings, config::ConfigError> {
    let tls = match (&config.smtp_tls_certificate, &config.smtp_tls_key) {
        (Some(certificate), Some(key)) => {
            Some(ingress::smtp::tls_acceptor(certificate, key).map_err(config::ConfigError::Invalid)?)
        }
        _ => None,
    };
    Ok(ingress::smtp::SmtpSettings {
        domain: config.mail_domain.to_ascii_lowercase(),
        max_message_bytes: config.smtp_max_message_bytes as usize,
        command_timeout: std::time::Duration::from_secs(config.smtp_command_timeout_secs),
        session_timeout: std::time::Duration::from_secs(config.smtp_session_timeout_secs),
        max_connections: config.smtp_max_connections,
        max_recipients: 100,
        max_errors: 10,
        tls,
    })
}

/// Where subscriptions may deliver.
pub fn delivery_policy(config: &Config) -> subscriptions::TargetPolicy {
    subscriptions::TargetPolicy {
        allow_http: config.delivery_allow_http,
        allow_private: config.delivery_allow_private_networks,
    }
}

/// Listeners bound by the caller, so that tests can bind port 0 and read the address.
pub struct Listeners {
    pub http: TcpListener,
    /// The SMTP listener for email hooks.
    pub smtp: Option<(TcpListener, ingress::smtp::SmtpSettings)>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the hook definitions are invalid")]
    Definitions(#[source] ReloadError),
    #[error("the definitions folder {} does not exist (create it, or pass --definitions)", .0.display())]
    NoDefinitionsFolder(std::path::PathBuf),
    #[error("cannot watch the definitions folder: {0}")]
    Watch(String),
    #[error("cannot read the listener address: {0}")]
    Listener(#[from] std::io::Error),
    #[error("{0}")]
    MailAuthentication(String),
    #[error("the delivery client could not be built: {0}")]
    DeliveryClient(String),
}

/// The admin token to require, and whether it was just generated (and so must be shown once).
pub enum AdminToken {
    Configured,
    Stored,
    Generated(String),
}

const ADMIN_TOKEN_SETTING: &str = "admin_token_sha256";

/// Decides the admin token: the configured one, else the one generated on an earlier start,
/// else a new one (stored as a hash, shown once). A configured token's hash replaces the stored
/// one, so a generated token, once replaced, never works again.
pub async fn admin_token(store: &Store, config: &Config) -> Result<(String, AdminToken), StoreError> {
    if let Some(token) = &config.admin_token {
        let hash = secrets::sha256_hex(token);
        store.put_setting(ADMIN_TOKEN_SETTING, &hash).await?;
        return Ok((hash, AdminToken::Configured));
    }
    if let Some(hash) = store.setting(ADMIN_TOKEN_SETTING).await? {
        return Ok((hash, AdminToken::Stored));
    }
    let token = format!("hgat_{}", secrets::random_token(32));
    let hash = secrets::sha256_hex(&token);
    let stored = store.put_setting_if_absent(ADMIN_TOKEN_SETTING, &hash).await?;
    if stored == hash { Ok((hash, AdminToken::Generated(token))) } else { Ok((stored, AdminToken::Stored)) }
}

/// A gateway ready to serve: store open, catalog loaded.
pub struct Gateway {
    state: Arc<AppState>,
    watch: definitions::watch::DefinitionWatch,
}

impl Gateway {
    /// Opens the store and loads the definitions; refuses an invalid set.
    pub async fn start(config: Config, public_url: String) -> Result<(Gateway, AdminToken), StartError> {
        if !config.definitions.is_dir() {
            return Err(StartError::NoDefinitionsFolder(config.definitions.clone()));
        }
        let metrics = telemetry::metrics_handle();
        let store = Store::open(&store_config(&config)).await?;
        let (admin_token_sha256, admin_token) = admin_token(&store, &config).await?;
        let watch = definitions::watch::DefinitionWatch::start(&config.definitions, config.watch_definitions)
            .map_err(|error| StartError::Watch(error.to_string()))?;
        let (catalog, reloaded) =
            CatalogManager::start(store.clone(), catalog_settings(&config)).await.map_err(StartError::Definitions)?;
        for warning in &reloaded.warnings {
            tracing::warn!(%warning, "A hook definition has a warning.");
        }
        tracing::info!(apps = reloaded.apps, hooks = reloaded.hooks, "Hook definitions loaded.");
        let mail_authenticator = if config.mail_authentication {
            Some(
                pipeline::authenticate::MailAuthenticator::new(config.dns_resolver, &config.mail_domain)
                    .map_err(StartError::MailAuthentication)?,
            )
        } else {
            None
        };
        let nats_subject_prefix = config.nats.is_some().then(|| config.nats_subject_prefix.clone());
        let committer = Arc::new(pipeline::Committer::start(store.clone(), nats_subject_prefix).await?);
        let mail = pipeline::mail::MailAcceptor::new(committer.clone(), mail_authenticator);
        let delivery_client = deliver::client(&config).map_err(StartError::DeliveryClient)?;
        let delivery_policy = delivery_policy(&config);
        let state = AppState {
            delivery_policy,
            catalog: Arc::new(catalog),
            store,
            config: Arc::new(config),
            public_url,
            admin_token_sha256,
            metrics,
            rejections: Default::default(),
            committer,
            mail,
            delivery_client,
        };
        Ok((Gateway { state: Arc::new(state), watch }, admin_token))
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `shutdown` resolves, reloading definitions on change and on SIGHUP.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let state = self.state;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        };
        let watcher = tokio::spawn(self.watch.run(state.catalog.clone(), stopped(stop_rx.clone())));
        let router = axum::Router::new()
            .route("/h/{token}", axum::routing::any(ingress::hooks::receive))
            // Platforms post here; outside the admin token: the signature is the authentication.
            // Platforms post here; subscriptions (`sub_…` ids, behind the admin token) share the path.
            .route("/api/webhooks/{segment}", axum::routing::any(api::subscriptions::segment))
            // Every other path under /h/ gets the same reply as an unknown token.
            .route("/h", axum::routing::any(ingress::hooks::unknown))
            .route("/h/", axum::routing::any(ingress::hooks::unknown))
            .route("/h/{token}/", axum::routing::any(ingress::hooks::unknown))
            .route("/h/{token}/{*rest}", axum::routing::any(ingress::hooks::unknown))
            .merge(api::router(state.clone()))
            .with_state(state.clone());
        let limits = ingress::ConnectionLimits {
            header_read_timeout: state.config.header_read_timeout(),
            max_connections: state.config.max_connections,
        };
        let deliveries = tokio::spawn(deliver::run(state.clone(), stopped(stop_rx.clone())));
        let publisher = state
            .config
            .nats
            .clone()
            .map(|url| tokio::spawn(deliver::nats::run(state.clone(), url, stopped(stop_rx.clone()))));
        let smtp = listeners.smtp.map(|(listener, settings)| {
            tokio::spawn(ingress::smtp::serve(listener, state.clone(), Arc::new(settings), stopped(stop_rx.clone())))
        });
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        ingress::serve(listeners.http, router, limits, stopped(stop_rx)).await;
        if let Some(smtp) = smtp {
            let _ = smtp.await;
        }
        let _ = deliveries.await;
        if let Some(publisher) = publisher {
            let _ = publisher.await;
        }
        let _ = watcher.await;
        Ok(())
    }
}
