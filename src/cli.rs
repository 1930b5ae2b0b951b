//! The command line: flags are parsed into `Overrides` (no I/O), layered into a `Config`, then
//! each subcommand runs. `serve` runs the gateway; the others work on the same store and
//! definitions directly, so they work whether or not a gateway is running.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use hookgate::api::AdminToken;
use hookgate::config::DatabaseTarget;
use hookgate::config::{Config, Overrides};
use hookgate::definitions::catalog::{CatalogManager, ReloadError};
use hookgate::definitions::sources::SecretUse;
use hookgate::definitions::{Severity, ValidationOptions, read_folder, validate};
use hookgate::pipeline::Replay;
use hookgate::secrets::SecretSource;
use hookgate::store::KeyPurpose;
use hookgate::store::copy::CopyProgress;
use hookgate::store::{EventQuery, Store};
use hookgate::{Gateway, Listeners};

#[derive(Debug, Parser)]
#[command(name = "hookgate", version, about = "An inbound webhook gateway")]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Settings every command shares; each can also come from `HOOKGATE_*` or the config file.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// TOML config file.
    #[arg(long, global = true, env = "HOOKGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Folder of hook definition files [default: hook-definitions].
    #[arg(long, global = true)]
    definitions: Option<PathBuf>,
    /// The store: the embedded database's file, or a postgres:// URL [default: data/hookgate.db].
    #[arg(long, global = true)]
    database: Option<PathBuf>,
    /// Base URL that hook URLs are shown with [default: http://<http address>].
    #[arg(long, global = true)]
    public_url: Option<String>,
    /// TOML file of NAME = "value" secrets for ${NAME} references.
    #[arg(long, global = true)]
    secrets_file: Option<PathBuf>,
    /// Address of the HTTP listener (other commands use it for the URLs they show)
    /// [default: 127.0.0.1:8080].
    #[arg(long, global = true)]
    http: Option<SocketAddr>,
    /// Address of the SMTP listener for email hooks [default: 127.0.0.1:2525].
    #[arg(long, global = true)]
    smtp: Option<SocketAddr>,
    /// The domain of email hook addresses, <token>@<domain> [default: localhost].
    #[arg(long, global = true)]
    mail_domain: Option<String>,
    /// NATS server URL: also publish every committed event to JetStream [default: off].
    #[arg(long, global = true)]
    nats: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve,
    /// Validate a folder of hook definitions; exits 1 when any is invalid.
    Check {
        /// The folder [default: the configured definitions folder].
        dir: Option<PathBuf>,
    },
    /// Show every hook with its URL.
    Hooks {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show every platform source with its URL, scheme and the secrets it reads, and whether
    /// each is set in this command's environment and secrets file (never their values).
    Sources {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Manage issued keys: ingest keys for web hooks, management keys for the API.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Read the event log, replay events, erase a resource's events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Apps installed through the management API (apps from files are changed by editing files).
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Try JavaScript transformations on stored events.
    #[command(subcommand)]
    Transform(TransformCommand),
    /// Deliveries across subscriptions: list the dead letters, retry them in bulk.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Copy a SQLite store into an empty PostgreSQL database, then compare every table's row
    /// count; exits 1 unless they all match. Stop the gateway first: the copy is a snapshot.
    Migrate {
        /// The SQLite store: `sqlite:PATH` or a path. It is only read, never written.
        #[arg(long)]
        from: String,
        /// The PostgreSQL database: a `postgres://` URL. It must hold no hookgate data yet.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum TransformCommand {
    /// Run the transformation in FILE on a stored event, with the configured limits, and print
    /// what it returns (exit 0), that it dropped the event (exit 0), or why it failed (exit 1).
    /// Nothing is stored or sent.
    Test {
        /// A JavaScript file defining `transform(event)`.
        file: PathBuf,
        /// The stored event to run it on (`evt_…`).
        #[arg(long)]
        event: String,
    },
}

#[derive(Debug, Subcommand)]
enum AppsCommand {
    /// List installed apps.
    List,
    /// Remove an installed app, for instance one that keeps `serve` from starting.
    Remove { app: String },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Issue a key; it is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        name: String,
        /// An ingest key (the default): limit it to this app (repeat for several); all apps
        /// when absent.
        #[arg(long = "app", conflicts_with = "management")]
        apps: Vec<String>,
        /// A management key for the API instead of an ingest key for web hooks.
        #[arg(long)]
        management: bool,
        /// A management key: limit it to events matching this name or pattern (`stripe.*`;
        /// repeat for several); every event when absent.
        #[arg(long = "scope", requires = "management")]
        scopes: Vec<String>,
    },
    /// List keys (never their text).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// List events, newest first.
    List {
        #[command(flatten)]
        filter: EventFilter,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The cursor printed after the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Print one event as JSON.
    Show { id: String },
    /// Deliver the events that match the filters again: to every subscription each matches now,
    /// or to one. A running gateway sends them (they are queued in the store).
    Replay {
        #[command(flatten)]
        filter: EventFilter,
        /// Only to this subscription.
        #[arg(long)]
        subscription: Option<String>,
    },
    /// Erase every event about a resource (for an erasure request): events whose data has a
    /// top-level `resource_id`, `resourceId` or `id` equal to it, with their deliveries and the
    /// raw bodies no other event shares.
    Purge {
        #[arg(long)]
        resource_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeliveriesCommand {
    /// List deliveries across subscriptions, newest first, with their last error: by default the
    /// dead letters (deliveries that failed after their last retry).
    List {
        #[command(flatten)]
        filter: DeliveryFilter,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The cursor printed after the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Queue every delivery matching the filters again (by default the failed ones), with a
    /// progress bar; a running gateway sends them. The retry is a stored job: one cut short goes
    /// on in the gateway.
    Retry {
        #[command(flatten)]
        filter: DeliveryFilter,
    },
}

/// Which deliveries a command takes.
#[derive(Debug, Args)]
struct DeliveryFilter {
    /// Only this subscription's.
    #[arg(long)]
    subscription: Option<String>,
    /// pending, delivered or failed.
    #[arg(long, default_value = "failed")]
    status: String,
    /// RFC 3339 time; deliveries created at or after it.
    #[arg(long)]
    from: Option<jiff::Timestamp>,
    /// RFC 3339 time; deliveries created before it.
    #[arg(long)]
    to: Option<jiff::Timestamp>,
}

impl DeliveryFilter {
    fn selection(self) -> anyhow::Result<hookgate::store::DeliverySelection> {
        if !["pending", "delivered", "failed"].contains(&self.status.as_str()) {
            bail!("--status must be pending, delivered or failed");
        }
        Ok(hookgate::store::DeliverySelection {
            subscription_ids: self.subscription.map(|id| vec![id]),
            status: Some(self.status),
            from: self.from,
            to: self.to,
        })
    }
}

/// Which events a command takes.
#[derive(Debug, Args)]
struct EventFilter {
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    app: Option<String>,
    /// RFC 3339 time; events received at or after it.
    #[arg(long)]
    since: Option<jiff::Timestamp>,
    /// RFC 3339 time; events received before it.
    #[arg(long)]
    until: Option<jiff::Timestamp>,
}

impl EventFilter {
    fn query(self, limit: usize, cursor: Option<String>) -> EventQuery {
        EventQuery {
            name: self.name,
            app: self.app,
            since: self.since,
            until: self.until,
            before_id: cursor,
            after_id: None,
            quarantined: None,
            limit,
            // Pages as the API's: bounded in bytes too, so that large events are read a few at a time.
            max_bytes: Some(hookgate::api::events::PAGE_MAX_BYTES as u64),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hookgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Whatever still runs was given its chance (`serve` ends within its shutdown deadline): a
    // blocking task must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hookgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let http = cli.global.http;
    let overrides = Overrides {
        definitions: cli.global.definitions.clone(),
        http,
        database: cli.global.database.clone(),
        public_url: cli.global.public_url.clone(),
        secrets_file: cli.global.secrets_file.clone(),
        smtp: cli.global.smtp,
        mail_domain: cli.global.mail_domain.clone(),
        nats: cli.global.nats.clone(),
    };
    let config = Config::load(cli.global.config.as_deref(), &overrides)?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Check { dir } => check(&config, dir.unwrap_or_else(|| config.definitions.clone())),
        Command::Hooks { json } => hooks(config, json).await,
        Command::Sources { json } => sources(config, json).await,
        Command::Keys(command) => keys(config, command).await,
        Command::Events(command) => events(config, command).await,
        Command::Apps(command) => apps(config, command).await,
        Command::Transform(command) => transform(config, command).await,
        Command::Deliveries(command) => deliveries(config, command).await,
        Command::Migrate { from, to } => migrate(&from, &to).await,
    }
}

/// Whether a gateway has run on this database: its file exists (a PostgreSQL database is
/// always taken to exist; opening it says otherwise).
fn database_exists(config: &Config) -> bool {
    match config.database_target() {
        hookgate::config::DatabaseTarget::Sqlite(path) => path.exists(),
        hookgate::config::DatabaseTarget::Postgres(_) => true,
    }
}

/// Opens the store of a gateway that has run before. Commands other than `serve` never create
/// a database: a mistyped path would otherwise issue keys nobody can use.
async fn open_existing_store(config: &Config) -> anyhow::Result<Store> {
    if !database_exists(config) {
        bail!(
            "no database at {} (run `hookgate serve` once to create it, or pass --database)",
            config.database.display()
        );
    }
    Ok(hookgate::open_store(config).await?)
}

async fn apps(config: Config, command: AppsCommand) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(&config).await?;
    match command {
        AppsCommand::List => {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header(["APP", "INSTALLED AT"]);
            for app in store.apps().await? {
                table.add_row([app.app, app.installed_at.to_string()]);
            }
            println!("{table}");
        }
        AppsCommand::Remove { app } => {
            if !store.delete_app(&app).await? {
                bail!("no installed app {app:?}");
            }
            println!("removed {app}; a running gateway drops its hooks at its next reload (SIGHUP)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_diagnostics(error: &ReloadError) {
    if let ReloadError::Invalid(diagnostics) = error {
        for diagnostic in diagnostics {
            eprintln!("{diagnostic}");
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    hookgate::telemetry::init_logging();
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("cannot listen on {}", config.http))?;
    let address = listener.local_addr()?;
    let smtp_settings = hookgate::smtp_settings(&config)?;
    let smtp_listener = tokio::net::TcpListener::bind(config.smtp)
        .await
        .with_context(|| format!("cannot listen for SMTP on {} (set --smtp)", config.smtp))?;
    let smtp_address = smtp_listener.local_addr()?;
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{address}"));
    let (gateway, admin_token) = match Gateway::start(config, public_url).await {
        Ok(started) => started,
        Err(hookgate::StartError::Definitions(error)) => {
            print_diagnostics(&error);
            bail!("refusing to start: {error}");
        }
        Err(error) => return Err(error.into()),
    };
    let mut stdout = std::io::stdout().lock();
    if let AdminToken::Generated(token) = admin_token {
        writeln!(stdout, "hookgate: generated the admin token; it is shown only this once, keep it: {token}")?;
    }
    let starttls = if smtp_settings.tls.is_some() { ", STARTTLS offered" } else { "" };
    writeln!(stdout, "hookgate: smtp listening on {smtp_address} for @{}{starttls}", smtp_settings.domain)?;
    writeln!(stdout, "hookgate: http listening on http://{address}")?;
    match gateway.sources_waiting_for_a_secret() {
        0 => {}
        1 => writeln!(
            stdout,
            "hookgate: 1 source waits for its secret (it answers 401 until then); `hookgate sources` lists it"
        )?,
        waiting => writeln!(
            stdout,
            "hookgate: {waiting} sources wait for their secrets (they answer 401 until then); `hookgate sources` lists them"
        )?,
    }
    stdout.flush()?;
    drop(stdout);
    gateway.run(Listeners { http: listener, smtp: Some((smtp_listener, smtp_settings)) }, shutdown_signal()).await?;
    tracing::info!("hookgate stopped.");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "Cannot listen for SIGTERM; only Ctrl-C stops the gateway.");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("Shutting down: no new connections; open requests and SMTP sessions may finish.");
}

fn check(config: &Config, dir: PathBuf) -> anyhow::Result<ExitCode> {
    let (documents, mut diagnostics) = read_folder(&dir, config.max_definition_file_bytes);
    let options = ValidationOptions {
        event_prefix: config.event_prefix.clone(),
        secrets: SecretSource::load(config.secrets_file.as_deref())?,
    };
    let validated = validate(&documents, &options);
    diagnostics.extend(validated.diagnostics.iter().cloned());
    for diagnostic in &diagnostics {
        println!("{diagnostic}");
    }
    let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    let warnings = diagnostics.len() - errors;
    let hooks: usize = validated.apps.iter().map(|app| app.hooks.len()).sum();
    if errors == 0 {
        println!("{}: {} apps, {hooks} hooks, valid ({warnings} warnings)", dir.display(), validated.apps.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{}: invalid: {errors} errors, {warnings} warnings", dir.display());
        Ok(ExitCode::FAILURE)
    }
}

async fn hooks(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(&config).await?;
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{}", config.http));
    let manager = match CatalogManager::start(store, hookgate::catalog_settings(&config)).await {
        Ok((manager, _)) => manager,
        Err(error) => {
            print_diagnostics(&error);
            bail!("{error}");
        }
    };
    let directory = hookgate::api::hooks::directory(&manager.current(), &public_url, &config.mail_domain);
    if json {
        println!("{}", serde_json::to_string_pretty(&directory)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(["APP", "EVENT NAME", "TYPE", "URL / ADDRESS"]);
    for hook in directory {
        table.add_row([
            hook.app,
            hook.event_name,
            hook.hook_type.as_str().to_owned(),
            hook.url.or(hook.address).unwrap_or_default(),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// Lists the sources of the definitions folder, and of the installed apps when a gateway has run
/// here before (this command never creates a database).
async fn sources(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{}", config.http));
    let secrets = SecretSource::load(config.secrets_file.as_deref())?;
    let listed = if database_exists(&config) {
        let store = open_existing_store(&config).await?;
        let manager = match CatalogManager::start(store, hookgate::catalog_settings(&config)).await {
            Ok((manager, _)) => manager,
            Err(error) => {
                print_diagnostics(&error);
                bail!("{error}");
            }
        };
        let catalog = manager.current();
        hookgate::definitions::sources::sources(
            catalog.hooks().iter().map(|hook| (hook.app.as_str(), &hook.definition)),
            &public_url,
            &secrets,
        )
    } else {
        let (documents, diagnostics) = read_folder(&config.definitions, config.max_definition_file_bytes);
        let options = ValidationOptions { event_prefix: config.event_prefix.clone(), secrets: secrets.clone() };
        let validated = validate(&documents, &options);
        let errors: Vec<_> = diagnostics.iter().chain(validated.errors()).collect();
        if !errors.is_empty() {
            for diagnostic in &errors {
                eprintln!("{diagnostic}");
            }
            bail!("the definitions in {} are invalid", config.definitions.display());
        }
        let hooks = validated.apps.iter().flat_map(|app| app.hooks.iter().map(|hook| (app.app.as_str(), hook)));
        hookgate::definitions::sources::sources(hooks, &public_url, &secrets)
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(["APP", "URL", "SCHEME", "SECRETS"]);
    for source in &listed {
        let secrets: Vec<String> = source
            .secrets
            .iter()
            .map(|secret| {
                let role = match secret.used_for {
                    SecretUse::Signature => "",
                    SecretUse::VerifyToken => " (verify token)",
                };
                let state = if secret.set { "set" } else { "NOT SET" };
                format!("{}{role}: {state}", secret.name)
            })
            .collect();
        table.add_row([source.app.clone(), source.url.clone(), source.scheme.clone(), secrets.join("\n")]);
    }
    println!("{table}");
    let waiting = listed.iter().filter(|source| source.waits_for_a_secret()).count();
    println!(
        "{} sources, {waiting} waiting for a secret (they answer 401 no_secret_configured until one is set)",
        listed.len()
    );
    Ok(ExitCode::SUCCESS)
}

async fn keys(config: Config, command: KeysCommand) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(&config).await?;
    match command {
        KeysCommand::Create { name, apps, management, scopes } => {
            let purpose = if management { KeyPurpose::Management } else { KeyPurpose::Ingest };
            let request = hookgate::keys::KeyRequest {
                name,
                purpose,
                apps: (!apps.is_empty()).then_some(apps),
                scopes: (!scopes.is_empty()).then_some(scopes),
            };
            let issued = hookgate::keys::issue(&store, request, jiff::Timestamp::now()).await?;
            println!("id:  {}", issued.record.id);
            println!("key: {}", issued.key);
            eprintln!("The key is shown only this once; hookgate keeps only its hash.");
        }
        KeysCommand::List => {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header([
                "ID",
                "NAME",
                "PURPOSE",
                "PREFIX",
                "LIMITED TO",
                "CREATED",
                "REVOKED",
            ]);
            for key in store.api_keys().await? {
                let limits = match key.purpose {
                    KeyPurpose::Ingest => key.apps.map(|apps| format!("apps {}", apps.join(", "))),
                    KeyPurpose::Management => key.scopes.map(|scopes| format!("events {}", scopes.join(", "))),
                };
                table.add_row([
                    key.id,
                    key.name,
                    key.purpose.as_str().to_owned(),
                    format!("{}…", key.prefix),
                    limits.unwrap_or_else(|| "everything".into()),
                    key.created_at.to_string(),
                    key.revoked_at.map(|at| at.to_string()).unwrap_or_default(),
                ]);
            }
            println!("{table}");
        }
        KeysCommand::Revoke { id } => {
            if !store.revoke_api_key(&id, jiff::Timestamp::now()).await? {
                bail!("no active key {id:?}");
            }
            println!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn events(config: Config, command: EventsCommand) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(&config).await?;
    match command {
        EventsCommand::List { filter, limit, cursor } => {
            if limit == 0 || limit > 1000 {
                bail!("--limit must be from 1 to 1000");
            }
            let page = store.list_events(filter.query(limit, cursor)).await?;
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header(["ID", "RECEIVED AT", "NAME", "APP"]);
            for event in page.events {
                table.add_row([event.id, event.received_at.to_string(), event.name, event.app]);
            }
            println!("{table}");
            if let Some(cursor) = page.next_cursor {
                println!("more: --cursor {cursor}");
            }
        }
        EventsCommand::Show { id } => match store.event(&id).await? {
            Some(event) => println!("{}", serde_json::to_string_pretty(&event)?),
            None => bail!("no event {id:?}"),
        },
        EventsCommand::Replay { filter, subscription } => {
            let query = EventQuery { quarantined: Some(false), ..filter.query(500, None) };
            replay(&store, query, subscription).await?
        }
        EventsCommand::Purge { resource_id } => {
            if resource_id.trim().is_empty() {
                bail!("--resource-id must not be empty");
            }
            let purged = store.purge_resource(&resource_id).await?;
            println!(
                "erased {} events, {} deliveries and {} raw bodies about {resource_id:?}",
                purged.events, purged.deliveries, purged.bodies
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn transform(config: Config, command: TransformCommand) -> anyhow::Result<ExitCode> {
    use hookgate::transform::{Limits, Transformation, Transformed, Transformer};
    let TransformCommand::Test { file, event } = command;
    let source = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let store = open_existing_store(&config).await?;
    let Some(stored) = store.event(&event).await? else { bail!("no event {event:?}") };
    // The same threads and limits a gateway runs transformations with.
    let limits = Limits {
        time: std::time::Duration::from_millis(config.transform_time_limit_ms),
        memory_bytes: usize::try_from(config.transform_memory_limit_bytes).unwrap_or(usize::MAX),
    };
    let transformation = Transformation::stored(&source);
    let transformer = Transformer::start(1, limits);
    let input = serde_json::to_value(&stored)?;
    let version = transformation.version().to_owned();
    match transformer.run(&transformation, input).await {
        Ok(Transformed::Changed(result)) => {
            println!("{}", serde_json::to_string_pretty(&result)?);
            eprintln!("transformation {version}: changed the event");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Transformed::Dropped) => {
            println!("null");
            eprintln!("transformation {version}: dropped the event (it returned null)");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("transformation {version}: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn deliveries(config: Config, command: DeliveriesCommand) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(&config).await?;
    match command {
        DeliveriesCommand::List { filter, limit, cursor } => {
            if limit == 0 || limit > 500 {
                bail!("--limit must be from 1 to 500");
            }
            let query = hookgate::store::DeliveryListQuery { selection: filter.selection()?, before_id: cursor, limit };
            let page = store.list_deliveries(query).await?;
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header([
                "ID",
                "SUBSCRIPTION",
                "EVENT",
                "STATUS",
                "ATTEMPTS",
                "UPDATED AT",
                "LAST ERROR",
            ]);
            for delivery in page.deliveries {
                let last_error = delivery.last_attempt.map_or_else(String::new, |attempt| {
                    match (attempt.status_code, attempt.error) {
                        (_, Some(error)) => error,
                        (Some(code), None) => format!("HTTP {code}"),
                        (None, None) => String::new(),
                    }
                });
                table.add_row([
                    delivery.id,
                    delivery.subscription_id,
                    delivery.event_id,
                    delivery.status,
                    delivery.attempts.to_string(),
                    delivery.updated_at.to_string(),
                    last_error,
                ]);
            }
            println!("{table}");
            if let Some(cursor) = page.next_cursor {
                println!("more: --cursor {cursor}");
            }
        }
        DeliveriesCommand::Retry { filter } => {
            let selection = filter.selection()?;
            if selection.status.as_deref() == Some("pending") {
                bail!("pending deliveries are queued already; retry failed or delivered ones");
            }
            bulk_retry(&store, selection).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Stores a bulk retry and works it off here, a batch at a time, with a progress bar. A gateway
/// running on the same store may take batches of it too; each batch is taken once.
async fn bulk_retry(store: &Store, selection: hookgate::store::DeliverySelection) -> anyhow::Result<()> {
    let job = store.create_retry_job(selection, jiff::Timestamp::now()).await?;
    let progress = indicatif::ProgressBar::new(job.total).with_style(
        indicatif::ProgressStyle::with_template("{wide_bar} {pos}/{len} deliveries queued again ({elapsed})")
            .expect("a valid template"),
    );
    let mut current = job.clone();
    while current.state != "done" {
        // This job's next batch, or an older job's (jobs go oldest first), or none while another
        // worker holds the batch: the read after says how far this one is.
        let advanced = store.advance_retry_job(jiff::Timestamp::now(), hookgate::deliver::retry_jobs::BATCH).await?;
        current = store.retry_job(&job.id).await?.context("the bulk retry's job is gone")?;
        progress.set_position(current.queued + current.skipped);
        if advanced.is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    progress.finish();
    println!(
        "bulk retry {}: {} deliveries queued again, {} skipped (no longer matching); a running gateway sends them",
        current.id, current.queued, current.skipped
    );
    Ok(())
}

/// Copies the SQLite store `from` into the PostgreSQL database `to`, with a progress bar per
/// table, and prints both stores' row counts.
async fn migrate(from: &str, to: &str) -> anyhow::Result<ExitCode> {
    let DatabaseTarget::Sqlite(source) = DatabaseTarget::parse(from) else {
        bail!("--from names the SQLite store to copy (sqlite:PATH or a path), not a PostgreSQL URL");
    };
    let DatabaseTarget::Postgres(target) = DatabaseTarget::parse(to) else {
        bail!("--to must be a postgres:// URL");
    };
    let shown_target = hookgate::config::redact_password(&target);
    let bars = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template("{prefix:>17} {wide_bar} {pos}/{len} rows ({elapsed})")
        .expect("a valid template");
    let mut bar: Option<indicatif::ProgressBar> = None;
    let report = hookgate::store::copy::sqlite_to_postgres(&source, &target, |step| match step {
        CopyProgress::Table { table, rows } => {
            if let Some(done) = bar.take() {
                done.finish();
            }
            bar = Some(bars.add(indicatif::ProgressBar::new(rows).with_style(style.clone()).with_prefix(table)));
        }
        CopyProgress::Copied { rows } => {
            if let Some(bar) = &bar {
                bar.inc(rows);
            }
        }
    })
    .await
    .with_context(|| format!("cannot copy {} to {shown_target}", source.display()))?;
    if let Some(done) = bar.take() {
        done.finish();
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(["TABLE", "SQLITE", "POSTGRESQL", "CHECK"]);
    for count in &report.tables {
        let check = if count.sqlite == count.postgres { "same" } else { "DIFFERS" };
        table.add_row([count.table.to_owned(), count.sqlite.to_string(), count.postgres.to_string(), check.to_owned()]);
    }
    println!("{table}");
    if !report.committed {
        eprintln!("hookgate: the row counts differ; the copy was rolled back and {shown_target} is left as it was");
        return Ok(ExitCode::FAILURE);
    }
    println!("copied {} to {shown_target}: every table has the same number of rows", source.display());
    Ok(ExitCode::SUCCESS)
}

/// Queues new deliveries of every event matching `query`, page by page, with a progress bar.
async fn replay(store: &hookgate::store::Store, mut query: EventQuery, only: Option<String>) -> anyhow::Result<()> {
    let replay = match &only {
        Some(id) => Replay::to_one(store.clone(), id, |_| true).await?,
        None => {
            let routes = hookgate::subscriptions::Routes::new(&store.subscriptions().await?);
            Replay::matching(store.clone(), std::sync::Arc::new(routes), None)
        }
    };
    let progress = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} events replayed, {msg} deliveries queued ({elapsed})")
            .expect("a valid template"),
    );
    let (mut events, mut deliveries) = (0u64, 0u64);
    loop {
        let page = store.list_events(query.clone()).await?;
        for event in &page.events {
            deliveries += replay.event(event, jiff::Timestamp::now()).await?.len() as u64;
            events += 1;
            progress.set_position(events);
            progress.set_message(deliveries.to_string());
        }
        match page.next_cursor {
            Some(cursor) => query.before_id = Some(cursor),
            None => break,
        }
    }
    progress.finish();
    println!("replayed {events} events: {deliveries} deliveries queued; a running gateway sends them");
    Ok(())
}
