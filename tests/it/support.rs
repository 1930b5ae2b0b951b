//! Runs the real `hookgate` binary for a test: a fresh folder of definitions and a fresh
//! database in a temporary directory, HTTP on 127.0.0.1 port 0, the bound address read from
//! the line the binary prints. The process is killed when the [`Gateway`] is dropped.
//!
//! The database is the test binary's `crate::BACKEND` (or the backend a test picks with
//! [`Gateway::start_on`]): a SQLite file in the temporary directory, or a fresh schema of the
//! PostgreSQL database at `HOOKGATE_TEST_POSTGRES_URL` (the `postgres` test binary runs the API
//! suite that way).
//!
//! Everything a gateway prints, on stdout and stderr, is also kept in `gateway.log` in its
//! temporary directory ([`Gateway::output`]), so that a test can read what it wrote (the secrets
//! test greps it). Every gateway and CLI run is given [`SECRETS_KEY`] as `HOOKGATE_SECRETS_KEY`
//! (an option's own value replaces it; an empty one leaves a SQLite store to its key file).

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `hookgate serve` on ports chosen by the system, with the definitions in `defs/` and the
/// database in `data/`, relative to the working directory: how every test starts the gateway.
pub const SERVE: &[&str] = &[
    "serve",
    "--http",
    "127.0.0.1:0",
    "--smtp",
    "127.0.0.1:0",
    "--definitions",
    "defs",
    "--database",
    "data/hookgate.db",
];

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The key subscription secrets are sealed with, for every gateway a test starts.
pub const SECRETS_KEY: &str = "5e4a1d7c0b9f8e2d3c6a5b4f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d";
pub const PARTNER_KEY: &str = "partner-static-key-abcdef";

pub const ORDER_UPDATE: &str = "kustomer.app.shop.order.update";
pub const CONTACT_FORM: &str = "kustomer.app.shop.contact.form";
pub const SMALL_FORM: &str = "kustomer.app.shop.small";
pub const PHOTO_FORM: &str = "kustomer.app.shop.photo";
pub const ORDER_SYNC: &str = "kustomer.app.shop.order.sync";
pub const PARTNER_FEED: &str = "kustomer.app.shop.partner.feed";
pub const SHOP_MAIL: &str = "kustomer.app.shop.mail";
pub const LEAD_CREATED: &str = "kustomer.app.crm.lead.created";

/// The definitions most tests run with: every hook type and extension.
pub fn shop_definition() -> Value {
    json!({
        "app": "shop",
        "version": "1.0.0",
        "title": "Shop",
        "hooks": [
            {"eventName": ORDER_UPDATE, "displayEventName": "Order Update", "description": "An order changed", "type": "form"},
            {"eventName": CONTACT_FORM, "type": "form", "redirectUrl": "https://shop.example/thanks", "allowedOrigins": ["https://shop.example"]},
            {"eventName": SMALL_FORM, "type": "form", "maxBodyBytes": 64},
            {"eventName": PHOTO_FORM, "type": "form", "maxFileBytes": 4},
            {"eventName": ORDER_SYNC, "type": "web"},
            {"eventName": PARTNER_FEED, "type": "web", "apiKeys": ["${SHOP_PARTNER_KEY}"]},
            {"eventName": SHOP_MAIL, "type": "email"}
        ]
    })
}

pub fn crm_definition() -> Value {
    json!({"app": "crm", "version": "2", "hooks": [{"eventName": LEAD_CREATED, "type": "web"}]})
}

/// Which store the gateways of a test binary use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The `--database` value for a new gateway in `dir` on `backend`: the SQLite file there, or a
/// new schema.
pub async fn new_database(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => dir.join("data/hookgate.db").to_string_lossy().into_owned(),
        Backend::Postgres => fresh_postgres_schema().await,
    }
}

/// The test server's URL, `HOOKGATE_TEST_POSTGRES_URL`. Without it the whole PostgreSQL suite
/// is skipped: this says so and ends the test process successfully, before any test of the
/// suite runs on another backend by mistake; a strict run fails instead.
pub fn postgres_server() -> String {
    match std::env::var("HOOKGATE_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty()) {
        Some(url) => url,
        None if strict() => {
            panic!("HOOKGATE_TEST_POSTGRES_URL is not set and this run is strict (HOOKGATE_TEST_STRICT=1)")
        }
        None => {
            let mut stderr = std::fs::OpenOptions::new().write(true).open("/dev/stderr").ok();
            let message = "skipped: the PostgreSQL suite (HOOKGATE_TEST_POSTGRES_URL is not set)\n";
            if let Some(stderr) = stderr.as_mut() {
                let _ = std::io::Write::write_all(stderr, message.as_bytes());
            }
            std::process::exit(0);
        }
    }
}

/// A new, empty schema in the test database, as a URL whose connections use it.
pub async fn fresh_postgres_schema() -> String {
    let server = postgres_server();
    let schema = format!("hg_it_{}", uuid_like());
    let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("HOOKGATE_TEST_POSTGRES_URL does not answer: {error}"));
    tokio::spawn(connection);
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
    let separator = if server.contains('?') { '&' } else { '?' };
    format!("{server}{separator}options=-csearch_path%3D{schema}")
}

/// 32 random hex digits.
fn uuid_like() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap()).collect()
}

/// How to start a gateway.
#[derive(Clone)]
pub struct Options {
    pub definitions: Vec<(String, Value)>,
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            definitions: vec![("shop.json".into(), shop_definition()), ("crm.json".into(), crm_definition())],
            env: vec![("SHOP_PARTNER_KEY".into(), PARTNER_KEY.into())],
        }
    }
}

impl Options {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

/// Appends `line` to the gateway's log in `dir`.
fn keep_line(dir: &Path, line: &str) {
    use std::io::Write;
    let file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(LOG_FILE));
    if let Ok(mut file) = file {
        let _ = writeln!(file, "{line}");
    }
}

/// Where everything a gateway printed is kept, in its directory.
const LOG_FILE: &str = "gateway.log";

pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub base: String,
    /// The SMTP listener's address (`127.0.0.1:port`).
    pub smtp: std::net::SocketAddr,
    pub http: reqwest::Client,
    child: Child,
    env: Vec<(String, String)>,
    /// The `--database` value: the SQLite file, or the PostgreSQL URL of the test's schema.
    database: String,
    /// Which store `database` is.
    backend: Backend,
    /// Whether the process is given `HOOKGATE_ADMIN_TOKEN` ([`ADMIN_TOKEN`], the default), or
    /// decides the admin token from what its store keeps.
    configured_admin_token: bool,
    /// Lines the process printed on stdout, after the listening line.
    pub stdout: mpsc::Receiver<String>,
}

impl Gateway {
    pub async fn start() -> Gateway {
        Gateway::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Gateway {
        Gateway::start_in(crate::BACKEND, None, options).await
    }

    /// A gateway on the database `database` (a `--database` value) that other gateways may
    /// share, or on a new one. (Used by the PostgreSQL binary only.)
    #[allow(dead_code)]
    pub async fn start_on(database: Option<String>, options: Options) -> Gateway {
        Gateway::start_in(crate::BACKEND, database, options).await
    }

    /// A gateway on `backend`, whatever the test binary's `BACKEND` (to start on SQLite and move
    /// to PostgreSQL, say). (Used by the PostgreSQL binary only.)
    #[allow(dead_code)]
    pub async fn start_on_backend(backend: Backend, options: Options) -> Gateway {
        Gateway::start_in(backend, None, options).await
    }

    async fn start_in(backend: Backend, database: Option<String>, options: Options) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("defs")).unwrap();
        for (name, json) in &options.definitions {
            std::fs::write(dir.path().join("defs").join(name), serde_json::to_vec_pretty(json).unwrap()).unwrap();
        }
        let database = match database {
            Some(database) => database,
            None => new_database(backend, dir.path()).await,
        };
        let (child, base, smtp, stdout) =
            spawn(dir.path(), &database, &options.env, Some(ADMIN_TOKEN)).await.expect("the gateway starts");
        Gateway {
            dir,
            base,
            smtp,
            http: client(),
            child,
            env: options.env,
            database,
            backend,
            configured_admin_token: true,
            stdout,
        }
    }

    pub fn definitions_dir(&self) -> PathBuf {
        self.dir.path().join("defs")
    }

    /// Everything the gateway printed so far (every run of it), stdout and stderr.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
    }

    /// The `--database` value of this gateway (a file, or a PostgreSQL URL).
    pub fn database(&self) -> String {
        self.database.clone()
    }

    /// Points this gateway at another database (where `hookgate migrate` copied its store): the
    /// next [`Gateway::restart`] runs on it, with the same folder of definitions.
    #[allow(dead_code, reason = "the postgres binary's migration tests use it")]
    pub fn move_to(&mut self, backend: Backend, database: String) {
        self.backend = backend;
        self.database = database;
    }

    /// From the next [`Gateway::restart`] on, the process is not given `HOOKGATE_ADMIN_TOKEN`:
    /// it uses the admin token whose hash its store keeps.
    #[allow(dead_code, reason = "the postgres binary's migration tests use it")]
    pub fn use_stored_admin_token(&mut self) {
        self.configured_admin_token = false;
    }

    /// Moves a stored event's receive time, straight in the database (what happens to old
    /// events cannot wait for them to age).
    pub async fn backdate_event(&self, id: &str, received_at: jiff::Timestamp) {
        let at = received_at.as_microsecond();
        let changed = match self.backend {
            Backend::Sqlite => rusqlite::Connection::open(self.database_file())
                .unwrap()
                .execute("UPDATE events SET received_at_us = ?1 WHERE id = ?2", rusqlite::params![at, id])
                .unwrap() as u64,
            Backend::Postgres => {
                let (client, connection) =
                    tokio_postgres::connect(&self.database, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                client.execute("UPDATE events SET received_at_us = $1 WHERE id = $2", &[&at, &id]).await.unwrap()
            }
        };
        assert_eq!(changed, 1, "event {id} is stored");
    }

    /// The SQLite file, for tests of the embedded store itself.
    #[allow(dead_code)]
    pub fn database_file(&self) -> PathBuf {
        assert_eq!(self.backend, Backend::Sqlite, "only a SQLite gateway has a database file");
        self.dir.path().join("data/hookgate.db")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the process ended, or `None` while it runs.
    #[allow(dead_code, reason = "the outage tests of the postgres binary use it")]
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("the process can be waited for")
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process with SIGTERM, as an operator would, and waits for it to exit (at most
    /// 20 s, without blocking the test's own servers); returns whether it exited successfully.
    pub async fn stop(&mut self) -> bool {
        self.terminate();
        match self.exit_within(Duration::from_secs(20)).await {
            Some(status) => status.success(),
            None => panic!("the gateway did not stop within 20 s of SIGTERM"),
        }
    }

    /// Sends SIGTERM and returns at once: the gateway starts its graceful shutdown.
    pub fn terminate(&self) {
        let sent = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("kill runs");
        assert!(sent.success(), "SIGTERM was sent");
    }

    /// How the process ended, if it did within `limit` (polled without blocking the test's own
    /// servers).
    pub async fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("the process can be waited for") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The HTTP listener's address (`127.0.0.1:port`), for raw connections.
    pub fn http_address(&self) -> std::net::SocketAddr {
        self.base.strip_prefix("http://").and_then(|address| address.parse().ok()).expect("an http://ip:port base")
    }

    /// Starts the binary again on the same folder and database with other environment settings.
    pub async fn restart_with(&mut self, options: Options) {
        self.env = options.env;
        self.restart().await;
    }

    /// Starts the binary again on the same folder and database (on a new port).
    pub async fn restart(&mut self) {
        self.kill();
        let admin_token = self.configured_admin_token.then_some(ADMIN_TOKEN);
        let (child, base, smtp, stdout) =
            spawn(self.dir.path(), &self.database, &self.env, admin_token).await.expect("the gateway restarts");
        self.child = child;
        self.base = base;
        self.smtp = smtp;
        self.stdout = stdout;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap()
    }

    pub async fn admin_patch(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http.patch(self.url(path)).bearer_auth(ADMIN_TOKEN).json(body).send().await.unwrap()
    }

    pub async fn admin_json(&self, path: &str) -> Value {
        let response = self.admin_get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// The URL of the hook with this event name, from the directory.
    pub async fn hook_url(&self, event_name: &str) -> String {
        let hooks = self.admin_json("/api/hooks").await;
        hooks["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|hook| hook["eventName"] == event_name)
            .and_then(|hook| hook["url"].as_str())
            .unwrap_or_else(|| panic!("no hook {event_name} in {hooks}"))
            .to_owned()
    }

    /// Posts `body` as `content_type` to the hook with this event name.
    pub async fn post_raw(
        &self,
        event_name: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let url = self.hook_url(event_name).await;
        self.http.post(url).header("content-type", content_type).body(body).send().await.unwrap()
    }

    /// Issues an API key through the management API and returns its text.
    pub async fn issue_key(&self, body: Value) -> Value {
        let response = self.http.post(self.url("/api/keys")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    pub async fn event(&self, id: &str) -> Value {
        self.admin_json(&format!("/api/events/{id}")).await
    }

    /// Runs a CLI command of the same binary on this gateway's folder and database.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(args)
            .arg("--definitions")
            .arg(self.definitions_dir())
            .arg("--database")
            .arg(self.database())
            .env("HOOKGATE_SECRETS_KEY", SECRETS_KEY)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("the CLI runs")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn client() -> reqwest::Client {
    // reqwest is built without a crypto provider of its own (hookgate uses ring): install it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Starts `hookgate serve` in `dir` and waits for its listening line. Without `admin_token`,
/// no `HOOKGATE_ADMIN_TOKEN` reaches the process.
async fn spawn(
    dir: &Path,
    database: &str,
    env: &[(String, String)],
    admin_token: Option<&str>,
) -> Result<(Child, String, std::net::SocketAddr, mpsc::Receiver<String>), String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    command.current_dir(dir).args(SERVE.iter().map(|arg| if *arg == "data/hookgate.db" { database } else { arg }));
    match admin_token {
        Some(token) => command.env("HOOKGATE_ADMIN_TOKEN", token),
        None => command.env_remove("HOOKGATE_ADMIN_TOKEN"),
    };
    command
        .env("RUST_LOG", "warn")
        // DKIM and SPF lookups go to the test DNS server, never outside the machine.
        .env("HOOKGATE_DNS_RESOLVER", crate::dns::address().to_string())
        .env("HOOKGATE_SECRETS_KEY", SECRETS_KEY)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    let log_dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            keep_line(&log_dir, &line);
            // The test may have stopped listening; the log still keeps every line.
            let _ = lines_tx.send(line);
        }
    });
    let log_dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            keep_line(&log_dir, &line);
            // Shown as before, when stderr was the test's own.
            eprintln!("{line}");
        }
    });
    let lines = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut smtp = None;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    // "hookgate: smtp listening on 127.0.0.1:PORT for @domain" comes first.
                    if let Some(rest) = line.strip_prefix("hookgate: smtp listening on ") {
                        smtp = rest.split_whitespace().next().and_then(|address| address.parse().ok());
                    }
                    if let Some(base) = line.strip_prefix("hookgate: http listening on ") {
                        let smtp = smtp.ok_or("the gateway printed no SMTP listening line")?;
                        return Ok((base.to_owned(), smtp, lines_rx));
                    }
                }
                Err(_) => return Err("the gateway printed no listening line".to_owned()),
            }
        }
    })
    .await
    .unwrap();
    match lines {
        Ok((base, smtp, receiver)) => Ok((child, base, smtp, receiver)),
        Err(error) => {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(format!("{error} ({status})"))
        }
    }
}

/// A field of `/proc/<pid>/status`, in kB.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the gateway's status is readable");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A `Stripe-Signature` header as Stripe's SDKs build it: `body` signed with `secret` at
/// `timestamp` (seconds).
pub fn stripe_signature_at(secret: &str, timestamp: i64, body: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The same, signed now.
pub fn stripe_signature(secret: &str, body: &str) -> String {
    stripe_signature_at(secret, jiff::Timestamp::now().as_second(), body)
}

/// POSTs `body` as Stripe would to the `stripe` source of the gateway at `base`.
pub async fn post_stripe_to(
    http: &reqwest::Client,
    base: &str,
    body: &str,
    signature: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    http.post(format!("{base}/api/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body.to_owned())
        .send()
        .await
}

/// POSTs `body` as Stripe would to this gateway's `stripe` source.
pub async fn post_stripe(gateway: &Gateway, body: &str, signature: &str) -> reqwest::Response {
    post_stripe_to(&gateway.http, &gateway.base, body, signature).await.unwrap()
}

/// Each form and web hook's URL path (`/h/…`) by event name: the part that must never change.
pub async fn hook_paths(gateway: &Gateway) -> std::collections::BTreeMap<String, String> {
    let hooks = gateway.admin_json("/api/hooks").await;
    hooks["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|hook| {
            let url = hook["url"].as_str()?;
            let path = url.strip_prefix(&gateway.base).unwrap_or_else(|| panic!("{url} is not under the base"));
            Some((hook["eventName"].as_str().unwrap().to_owned(), path.to_owned()))
        })
        .collect()
}

/// Waits until `check` is true, polling; fails the test after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The `error.code` of a JSON error reply, checking the status first.
pub async fn error_code(response: reqwest::Response, status: u16) -> (String, String) {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.expect("a JSON error body");
    (body["error"]["code"].as_str().unwrap().to_owned(), body["error"]["message"].as_str().unwrap().to_owned())
}

/// Whether this run is strict (`HOOKGATE_TEST_STRICT=1`, which `.ci/run` sets): then a tool or
/// service a test needs and cannot find fails the test instead of skipping it.
pub fn strict() -> bool {
    std::env::var("HOOKGATE_TEST_STRICT").is_ok_and(|value| value == "1")
}

/// Says that a test does not run here because `missing` is not available, and returns so the
/// test can end early. The line goes to the process's real stderr, past the harness's capture, so
/// `cargo test` shows it even for a passing test. In a strict run it fails the test, naming what
/// is missing, instead.
#[track_caller]
pub fn skip(test: &str, missing: &str) {
    if strict() {
        panic!("HOOKGATE_TEST_STRICT=1 and {test} cannot run: {missing}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {missing} (HOOKGATE_TEST_STRICT=1 makes this a failure)");
}

/// The value of the environment variable `name`, or `None` after [`skip`]ping `test`.
#[track_caller]
pub fn required_env(test: &str, name: &str, what: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            skip(test, &format!("{name} is not set ({what})"));
            None
        }
    }
}
