//! hookgate: an inbound webhook gateway.
//!
//! # Layout
//!
//! Data flows one way:
//!
//! ```text
//! HTTP request | SMTP message
//!   -> ingress      transports only: accept loops, routes, opening steps, replies
//!   -> definitions  which hook is this? (the catalog, swapped atomically on reload)
//!   -> verify       a source's signature over the raw bytes (pure)
//!   -> email        MIME -> JSON and JSON-LD values (pure; email hooks only)
//!   -> event        -> Event, the one versioned type that leaves the process (pure)
//!   -> pipeline     the commit: event, deliveries and publication in one transaction
//!   -> store        durable and idempotent; the reply waits for the commit
//!   -> deliver      outbox workers: subscriptions (signed webhooks) and NATS
//! api reads, replays and manages through store, pipeline and the catalog manager.
//! ```
//!
//! This file is the composition root and nothing else: [`Gateway::start`] turns a [`Config`]
//! into each module's own state (ingress, the management API, the delivery worker, the NATS
//! publisher, retention) and [`Gateway::run`] serves until shutdown. No module uses a name defined here;
//! `main.rs` only parses the command line (see `cli`).

pub mod api;
pub mod config;
pub mod console;
pub mod definitions;
pub mod deliver;
pub mod email;
pub mod event;
pub mod ingress;
pub mod jsonpath;
pub mod keys;
pub mod notice;
pub mod notify;
pub mod pipeline;
pub mod samples;
pub mod secrets;
pub mod shape;
pub mod store;
pub mod subscriptions;
pub mod telemetry;
pub mod template;
pub mod transform;
pub mod verify;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use api::{AdminToken, ApiState};
use config::{Config, ConfigError};
use definitions::Concern;
use definitions::catalog::{CatalogManager, CatalogSettings, ReloadError};
use deliver::nats::{NatsSettings, Publisher};
use deliver::{DeliverySettings, Sender, Worker};
use ingress::smtp::SmtpSettings;
use ingress::{ConnectionLimits, IngressSettings, IngressState};
use pipeline::Committer;
use pipeline::authenticate::MailAuthenticator;
use pipeline::mail::MailAcceptor;
use store::retention::{Retention, RetentionSettings};
use store::{Store, StoreConfig, StoreError};
use subscriptions::TargetPolicy;

/// Listeners bound by the caller, so that tests can bind port 0 and read the address.
pub struct Listeners {
    pub http: TcpListener,
    /// The SMTP listener for email hooks.
    pub smtp: Option<(TcpListener, SmtpSettings)>,
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
    #[error(transparent)]
    Mail(#[from] notify::MailSetupError),
    #[error("{0}")]
    SecretsKey(String),
}

/// The store the configuration names.
pub fn store_config(config: &Config) -> StoreConfig {
    match config.database_target() {
        config::DatabaseTarget::Sqlite(path) => StoreConfig::Sqlite { path },
        config::DatabaseTarget::Postgres(url) => StoreConfig::Postgres { url },
    }
}

/// Opens the configured store with the key subscription secrets are sealed with installed, and
/// every stored secret checked against it (sealing plaintext ones, resealing those of a previous
/// key). The key is `secrets_key`; without one, a SQLite database uses the key file beside it,
/// generated at its first start, and PostgreSQL refuses to start (every node needs the same key).
pub async fn open_store(config: &Config) -> Result<Store, StartError> {
    use store::sealed::{SecretsKeys, any_sealed, create_key_file, key_file_beside, read_key_file};
    let store = Store::open(&store_config(config)).await?;
    let refuse = |reason: String| StartError::SecretsKey(reason);
    let keys = match (&config.secrets_key, config.database_target()) {
        (Some(key), _) => {
            SecretsKeys::parse(key, &config.secrets_previous_keys).map_err(|error| refuse(error.to_string()))?
        }
        (None, _) if !config.secrets_previous_keys.is_empty() => {
            return Err(refuse(
                "secrets_previous_keys is set without secrets_key: set the key that secrets are sealed with now".into(),
            ));
        }
        (None, config::DatabaseTarget::Postgres(_)) => {
            return Err(refuse(
                "secrets_key (or HOOKGATE_SECRETS_KEY) is required with PostgreSQL: every node seals and opens subscription secrets with the same key. Make one with `openssl rand -hex 32` and keep it like a password"
                    .into(),
            ));
        }
        (None, config::DatabaseTarget::Sqlite(database)) => {
            let file = key_file_beside(&database);
            match read_key_file(&file).map_err(|error| refuse(error.to_string()))? {
                Some(keys) => keys,
                None if any_sealed(&store).await? => {
                    return Err(refuse(format!(
                        "subscription secrets in {} are sealed, but their key file {} is missing: restore it from the backup of the database, or set secrets_key to the key they were sealed with",
                        database.display(),
                        file.display()
                    )));
                }
                None => {
                    let keys = create_key_file(&file).map_err(|error| refuse(error.to_string()))?;
                    tracing::info!(
                        file = %file.display(),
                        "Generated the key that subscription secrets are sealed with; back it up with the database."
                    );
                    keys
                }
            }
        }
    };
    store.install_secrets_keys(Arc::new(keys));
    let sealing = store::sealed::seal_stored_secrets(&store).await.map_err(|error| match error {
        store::sealed::SealingError::Store(error) => StartError::Store(error),
        wrong => refuse(wrong.to_string()),
    })?;
    if sealing.resealed > 0 {
        tracing::info!(subscriptions = sealing.resealed, "Sealed subscription secrets with the current secrets key.");
    }
    Ok(store)
}

/// Acts on what other nodes sharing the store changed: their deliveries and publications wake
/// this node's workers too (whichever claims first sends), their subscriptions rebuild the
/// routing table, their installed apps reload the catalog.
async fn follow_other_nodes(
    mut changes: tokio::sync::broadcast::Receiver<store::StoreChange>,
    catalog: Arc<CatalogManager>,
    committer: Arc<Committer>,
) {
    use store::StoreChange;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let change = match changes.recv().await {
            Ok(change) => Some(change),
            // Changes were missed: act on every kind.
            Err(RecvError::Lagged(_)) => None,
            Err(RecvError::Closed) => return,
        };
        let all = change.is_none();
        if all || change == Some(StoreChange::Deliveries) {
            committer.wake_deliveries();
        }
        if all || change == Some(StoreChange::Publications) {
            committer.wake_publications();
        }
        if (all || change == Some(StoreChange::Subscriptions))
            && let Err(error) = committer.reload_routes().await
        {
            tracing::warn!(%error, "Another node changed the subscriptions; the routes could not be reloaded yet.");
        }
        if (all || change == Some(StoreChange::Apps))
            && let Err(error) = catalog.reload().await
        {
            tracing::warn!(%error, "Another node changed the installed apps; the catalog could not be reloaded.");
        }
    }
}

/// What the catalog is built from.
pub fn catalog_settings(config: &Config) -> CatalogSettings {
    CatalogSettings {
        folder: config.definitions.clone(),
        max_file_bytes: config.max_definition_file_bytes,
        secrets_file: config.secrets_file.clone(),
        event_prefix: config.event_prefix.clone(),
    }
}

/// The SMTP listener's settings, with the TLS certificate loaded when one is configured.
pub fn smtp_settings(config: &Config) -> Result<SmtpSettings, ConfigError> {
    let tls = match (&config.smtp_tls_certificate, &config.smtp_tls_key) {
        (Some(certificate), Some(key)) => {
            Some(ingress::smtp::tls_acceptor(certificate, key).map_err(ConfigError::Invalid)?)
        }
        _ => None,
    };
    Ok(SmtpSettings {
        domain: config.mail_domain.to_ascii_lowercase(),
        max_message_bytes: config.smtp_max_message_bytes as usize,
        command_timeout: Duration::from_secs(config.smtp_command_timeout_secs),
        session_timeout: Duration::from_secs(config.smtp_session_timeout_secs),
        max_connections: config.smtp_max_connections,
        max_connections_per_client: config.smtp_max_connections_per_client,
        client_messages: (config.smtp_client_messages_per_minute > 0)
            .then(|| ingress::fairness::Rate::per_minute(f64::from(config.smtp_client_messages_per_minute))),
        max_recipients: 100,
        max_errors: 10,
        tls,
    })
}

fn ingress_settings(config: &Config, public_url: String) -> IngressSettings {
    IngressSettings {
        public_url,
        mail_domain: config.mail_domain.to_ascii_lowercase(),
        max_body_bytes: config.max_body_bytes,
        max_file_bytes: config.max_file_bytes,
        max_message_bytes: config.smtp_max_message_bytes,
        body_timeout: config.body_timeout(),
        hook_rates: Arc::new(ingress::fairness::HookRates::new(&config.hook_rate_limits, &config.source_rate_limits)),
    }
}

/// The HTTP listener's caps and shares.
fn connection_limits(config: &Config) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: config.header_read_timeout(),
        max_connections: config.max_connections,
        max_connections_per_client: config.max_connections_per_client,
        client_requests: (config.client_requests_per_second > 0).then(|| ingress::fairness::Rate {
            per_second: f64::from(config.client_requests_per_second),
            burst: f64::from(config.client_request_burst),
        }),
    }
}

/// The threads that run hooks' and subscriptions' transformations, with their limits.
fn transformer(config: &Config) -> transform::Transformer {
    let limits = transform::Limits {
        time: std::time::Duration::from_millis(config.transform_time_limit_ms),
        memory_bytes: usize::try_from(config.transform_memory_limit_bytes).unwrap_or(usize::MAX),
    };
    transform::Transformer::start(config.transform_threads, limits)
}

fn delivery_policy(config: &Config) -> TargetPolicy {
    // Validated when the configuration was loaded.
    TargetPolicy::new(config.delivery_allow_http, config.delivery_networks().unwrap_or_default())
}

fn delivery_settings(config: &Config) -> DeliverySettings {
    DeliverySettings {
        retry_schedule_secs: config.delivery_retry_schedule_secs.clone(),
        disable_after_secs: config.delivery_disable_after_secs,
        timeout_secs: config.delivery_timeout_secs,
        concurrency: config.delivery_concurrency,
        concurrency_per_subscription: config.delivery_concurrency_per_subscription,
        lease_secs: config.delivery_lease_secs,
        policy: delivery_policy(config),
    }
}

/// When a source's rejections become a `hookgate.source.rejections` event.
fn rejection_alarm(config: &Config) -> ingress::rejections::RejectionAlarm {
    ingress::rejections::RejectionAlarm {
        threshold: config.notify_rejections_threshold,
        window: Duration::from_secs(config.notify_rejections_window_secs),
    }
}

/// Where notices are mailed, when they are.
fn mail_settings(config: &Config, public_url: &str) -> Option<notify::MailSettings> {
    let relay = config.smtp_relay.clone()?;
    (!config.notify_email.is_empty()).then(|| notify::MailSettings {
        to: config.notify_email.clone(),
        from: config.notify_mail_from.clone().unwrap_or_else(|| format!("hookgate@{}", config.mail_domain)),
        relay,
        relay_ca: config.smtp_relay_ca.clone(),
        events: config.notify_mail_events.clone(),
        coalesce: Duration::from_secs(config.notify_mail_coalesce_secs),
        public_url: public_url.to_owned(),
    })
}

/// Deleting old events, when a retention is configured.
fn retention(config: &Config, store: &Store) -> Option<Retention> {
    config.retention().map(|keep| Retention {
        store: store.clone(),
        settings: RetentionSettings { keep, every: store::retention::EVERY, batch: store::retention::BATCH },
    })
}

fn nats_settings(config: &Config) -> Option<NatsSettings> {
    config.nats.clone().map(|url| NatsSettings {
        url,
        stream: config.nats_stream.clone(),
        subject_prefix: config.nats_subject_prefix.clone(),
    })
}

/// A gateway ready to serve: store open, catalog loaded, every module's state built.
pub struct Gateway {
    catalog: Arc<CatalogManager>,
    ingress: Arc<IngressState>,
    api: Arc<ApiState>,
    worker: Arc<Worker>,
    publisher: Option<Arc<Publisher>>,
    mailer: Option<Arc<notify::Mailer>>,
    retention: Option<Retention>,
    limits: ConnectionLimits,
    /// How long a graceful shutdown may take, from the signal to the exit.
    shutdown_timeout: Duration,
    /// Closed last, once nothing writes any more.
    store: Store,
    watch: definitions::watch::DefinitionWatch,
    /// What other nodes sharing the store change (PostgreSQL); `None` on an embedded store.
    other_nodes: Option<tokio::sync::broadcast::Receiver<store::StoreChange>>,
}

impl Gateway {
    /// Opens the store and loads the definitions; refuses an invalid set.
    pub async fn start(config: Config, public_url: String) -> Result<(Gateway, AdminToken), StartError> {
        if !config.definitions.is_dir() {
            return Err(StartError::NoDefinitionsFolder(config.definitions.clone()));
        }
        let metrics = telemetry::metrics_handle();
        let store = open_store(&config).await?;
        let (admin_token_sha256, admin_token) = api::admin_token(&store, config.admin_token.as_deref()).await?;
        let watch = definitions::watch::DefinitionWatch::start(&config.definitions, config.watch_definitions)
            .map_err(|error| StartError::Watch(error.to_string()))?;
        let (catalog, reloaded) =
            CatalogManager::start(store.clone(), catalog_settings(&config)).await.map_err(StartError::Definitions)?;
        // Unset platform secrets are the normal state of a fresh install: `serve` reports them
        // as one count (see `sources_waiting_for_a_secret`), `hookgate sources` lists them.
        let concerning = reloaded.warnings.iter().filter(|warning| warning.concern != Concern::UnsetSourceSecret);
        for warning in concerning {
            tracing::warn!(%warning, "A hook definition has a warning.");
        }
        tracing::info!(apps = reloaded.apps, hooks = reloaded.hooks, "Hook definitions loaded.");
        let catalog = Arc::new(catalog);
        let mail_authenticator = if config.mail_authentication {
            Some(
                MailAuthenticator::new(config.dns_resolver, &config.mail_domain)
                    .map_err(StartError::MailAuthentication)?,
            )
        } else {
            None
        };
        let nats = nats_settings(&config);
        let committer =
            Arc::new(Committer::start(store.clone(), nats.as_ref().map(|nats| nats.subject_prefix.clone())).await?);
        let mailer = match mail_settings(&config, &public_url) {
            Some(settings) => {
                let events = settings.events.clone();
                let mailer = notify::Mailer::new(store.clone(), settings)?;
                // The first start mails what happens from now on (this sets the outbox's cursor).
                let coalesce = Duration::from_secs(config.notify_mail_coalesce_secs);
                store.queue_notice_mails(events, coalesce, jiff::Timestamp::now()).await?;
                Some(Arc::new(mailer))
            }
            None => None,
        };
        if config.delivery_allow_private_networks {
            tracing::warn!(
                "delivery_allow_private_networks is deprecated: list the networks in delivery_allow_networks instead (metadata addresses stay refused either way)."
            );
        }
        let deliveries = delivery_settings(&config);
        let sender = Sender::new(&deliveries).map_err(StartError::DeliveryClient)?;
        let rejections = Arc::new(ingress::rejections::RejectionLog::with_alarm(rejection_alarm(&config)));
        let transformer = transformer(&config);
        let body_budget = ingress::budget::BodyBudget::new(config.max_body_bytes_in_flight);
        let ingress = IngressState {
            transformer: transformer.clone(),
            catalog: catalog.clone(),
            committer: committer.clone(),
            mail: MailAcceptor::new(committer.clone(), mail_authenticator),
            store: store.clone(),
            rejections: rejections.clone(),
            settings: ingress_settings(&config, public_url.clone()),
            body_budget: body_budget.clone(),
        };
        let api = ApiState {
            catalog: catalog.clone(),
            store: store.clone(),
            committer: committer.clone(),
            sender: sender.clone(),
            rejections,
            admin_token_sha256,
            metrics,
            public_url,
            mail_domain: config.mail_domain.clone(),
            delivery_policy: delivery_policy(&config),
            streams: api::stream::EventStreams::new(api::stream::MAX_STREAMS),
            body_budget,
        };
        let other_nodes = store.changes();
        let retention = retention(&config, &store);
        let worker = Worker {
            store: store.clone(),
            committer: committer.clone(),
            sender,
            settings: deliveries,
            transformer: transformer.clone(),
        };
        let publisher = nats.map(|settings| Arc::new(Publisher { store: store.clone(), committer, settings }));
        let limits = connection_limits(&config);
        let gateway = Gateway {
            catalog,
            ingress: Arc::new(ingress),
            api: Arc::new(api),
            worker: Arc::new(worker),
            publisher,
            mailer,
            retention,
            limits,
            shutdown_timeout: config.shutdown_timeout(),
            store,
            watch,
            other_nodes,
        };
        Ok((gateway, admin_token))
    }

    /// How many platform sources have none of their secrets set, and so answer every request
    /// with 401 `no_secret_configured` until one is.
    pub fn sources_waiting_for_a_secret(&self) -> usize {
        let catalog = self.catalog.current();
        let waiting = |hook: &&Arc<definitions::catalog::Hook>| {
            hook.definition.source.as_ref().is_some_and(|source| source.verify.secrets.is_empty())
        };
        catalog.hooks().iter().filter(waiting).count()
    }

    /// Serves until `shutdown` resolves, reloading definitions on change and on SIGHUP; then
    /// shuts down gracefully within the configured `shutdown_timeout_secs`:
    ///
    /// 1. the HTTP listener closes (new connections are refused), idle connections close, and
    ///    requests in flight finish and are answered; the SMTP listener answers new connections
    ///    `421`, and sessions finish the message they are in;
    /// 2. the delivery worker and the NATS publisher send nothing new: what they claimed and
    ///    did not start is released to be claimed again, what is in flight finishes and is
    ///    recorded (or, cut off, is sent again after its lease: at least once);
    /// 3. the store commits what is queued and closes.
    ///
    /// Past the deadline it returns anyway; nothing acknowledged is lost by that, since every
    /// success reply waited for its commit.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        };
        let grace = self.shutdown_timeout;
        let watcher = tokio::spawn(self.watch.run(self.catalog.clone(), stopped(stop_rx.clone())));
        if let Some(changes) = self.other_nodes {
            let follower = follow_other_nodes(changes, self.catalog.clone(), self.api.committer.clone());
            let stop = stopped(stop_rx.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = follower => {}
                    () = stop => {}
                }
            });
        }
        let streams = {
            let api = self.api.clone();
            let stopping = stopped(stop_rx.clone());
            tokio::spawn(async move {
                stopping.await;
                api.streams.close();
            })
        };
        let management = console::router(self.api.clone()).merge(api::router(self.api));
        let router = ingress::router(self.ingress.clone(), management);
        let deliveries = tokio::spawn(deliver::run(self.worker, stopped(stop_rx.clone())));
        let publisher =
            self.publisher.map(|publisher| tokio::spawn(deliver::nats::run(publisher, stopped(stop_rx.clone()))));
        let mailer = self.mailer.map(|mailer| tokio::spawn(notify::run(mailer, stopped(stop_rx.clone()))));
        let retention =
            self.retention.map(|retention| tokio::spawn(store::retention::run(retention, stopped(stop_rx.clone()))));
        let smtp = listeners.smtp.map(|(listener, settings)| {
            let ingress = self.ingress.clone();
            let stop = stopped(stop_rx.clone());
            tokio::spawn(ingress::smtp::serve(listener, ingress, Arc::new(settings), stop, grace))
        });
        let (stopped_at_tx, stopped_at) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stopped_at_tx.send(tokio::time::Instant::now());
            let _ = stop_tx.send(true);
        });
        ingress::serve(listeners.http, router, self.limits, stopped(stop_rx), grace).await;
        let deadline = stopped_at.await.unwrap_or_else(|_| tokio::time::Instant::now()) + grace;
        let finishing = async {
            if let Some(smtp) = smtp {
                let _ = smtp.await;
            }
            let _ = deliveries.await;
            if let Some(publisher) = publisher {
                let _ = publisher.await;
            }
            if let Some(mailer) = mailer {
                let _ = mailer.await;
            }
            if let Some(retention) = retention {
                let _ = retention.await;
            }
            let _ = watcher.await;
            let _ = streams.await;
            self.store.close().await;
        };
        if tokio::time::timeout_at(deadline, finishing).await.is_err() {
            tracing::warn!(
                seconds = grace.as_secs(),
                "The shutdown deadline (shutdown_timeout_secs) passed; exiting with work still in flight."
            );
        }
        Ok(())
    }
}
