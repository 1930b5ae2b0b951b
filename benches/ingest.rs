//! Ingest benchmark: how many small webhook posts per second hookgate commits,
//! and how long each one waits, next to a bare-hyper server measured in the
//! same run on the same machine.
//!
//! # What it measures
//!
//! Two servers run in child processes, so neither shares a runtime with the
//! load generator, which runs in this (the parent) process:
//!
//! - **baseline**: this bench binary re-executed with
//!   `HOOKGATE_BENCH_ROLE=baseline`, a bare hyper 1.x HTTP/1 server that reads
//!   the whole request body and answers `202 {"id":"evt_..."}`. It is the
//!   ceiling: HTTP parsing and loopback networking on this machine, nothing
//!   else.
//! - **hookgate**: the real binary (`CARGO_BIN_EXE_hookgate`), started with
//!   `serve` on a fresh SQLite database in a temporary directory and one hook
//!   definition file. Its reply waits for the durable commit of the event.
//!
//! Each server gets the same load: `--connections` HTTP/1.1 keep-alive
//! connections (exactly one per task, opened before the warm-up), each in a
//! closed loop that sends its next request as soon as the previous reply has
//! been read in full. The scenario decides what is posted; `form_json` posts
//! an order update of about 300 bytes of JSON to a `form` hook; `stripe_signed`
//! posts a Stripe event signed with `Stripe-Signature` (the signature is
//! computed per request, as a sender does) to the `stripe` source endpoint.
//! Every request carries a different body and event id (built from a
//! per-request counter), so duplicate detection never short-circuits. Only
//! requests sent after the warm-up count. Requests per second are the
//! successful measured requests over the time from the end of the warm-up to
//! the last measured reply; latency is from sending the request to reading the
//! last byte of the reply, recorded in microseconds in an HDR histogram. Being
//! a closed loop, a stalled server also stalls the load, so tail latencies are
//! a lower bound (coordinated omission), which is fine for comparing runs.
//!
//! The baseline is measured first, then hookgate. Both children are killed at
//! the end, also when the bench fails or is interrupted with Ctrl-C.
//!
//! # How to run it
//!
//! ```text
//! cargo bench --bench ingest
//! cargo bench --bench ingest -- --duration 30 --connections 128
//! HOOKGATE_BENCH_DURATION=30 cargo bench --bench ingest
//! cargo bench --bench ingest -- --only baseline
//! ```
//!
//! The machine is small and shared, so run it while nothing else is busy and
//! compare runs made on the same machine only.
//!
//! # Options
//!
//! Each option can also be set with an environment variable; a flag wins over
//! the variable. `--bench`, which cargo passes, is ignored.
//!
//! | flag                 | variable                    | default          |
//! |----------------------|-----------------------------|------------------|
//! | `--duration SECS`    | `HOOKGATE_BENCH_DURATION`   | 10               |
//! | `--warmup SECS`      | `HOOKGATE_BENCH_WARMUP`     | 2                |
//! | `--connections N`    | `HOOKGATE_BENCH_CONNECTIONS`| 64               |
//! | `--scenario NAME`    | `HOOKGATE_BENCH_SCENARIO`   | `form_json`      |
//! | `--only SERVER`      | `HOOKGATE_BENCH_ONLY`       | both (`baseline` or `hookgate`) |
//!
//! Without `--bench` (that is, when `cargo test --benches` or
//! `cargo test --all-targets` runs this file) it is a smoke test: the duration
//! defaults to 1 s and the warm-up to 0 s, so the whole path is exercised
//! quickly.
//!
//! # Output and exit status
//!
//! Progress goes to stderr. Stdout gets a table, the ratios against the
//! targets stated in the issue (hookgate at least 30% of the baseline's
//! requests per second, hookgate p99 under 10 ms), and as its last line one
//! JSON object to compare later runs with:
//! `{"scenario":"form_json","connections":64,...,"baseline":{...},"hookgate":{...},"rps_ratio":...}`.
//! Missing a target is reported, not an error. The exit status is 1 if any
//! request failed (a non-2xx reply, a connection error or a timeout, counted
//! over the warm-up and the measurement alike), 2 if the bench could not run
//! at all, 0 otherwise.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Set to `baseline` in the environment of the child that serves the baseline.
const ROLE_VAR: &str = "HOOKGATE_BENCH_ROLE";
const BASELINE_LISTENING: &str = "baseline listening on ";
const HOOKGATE_LISTENING: &str = "hookgate: http listening on ";

/// How long a server may take to announce its address and list its hooks.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// A request without a complete reply after this long counts as failed, and
/// its connection is replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause before retrying when a connection cannot be opened.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// The targets stated in the issue.
const TARGET_RPS_RATIO: f64 = 0.30;
const TARGET_P99: Duration = Duration::from_millis(10);

/// Latencies are recorded in microseconds, up to a minute.
const HISTOGRAM_MAX_MICROS: u64 = 60_000_000;

fn main() -> ExitCode {
    match std::env::var_os(ROLE_VAR) {
        None => run_bench(),
        Some(role) if role == "baseline" => match run_baseline_server() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("baseline: {error:#}");
                ExitCode::from(2)
            }
        },
        Some(role) => {
            eprintln!("error: unknown {ROLE_VAR} {role:?}; the only role is `baseline`");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

const USAGE: &str = "\
usage: cargo bench --bench ingest -- [OPTIONS]

  --duration SECS    measured time per server (HOOKGATE_BENCH_DURATION, default 10)
  --warmup SECS      warm-up before measuring (HOOKGATE_BENCH_WARMUP, default 2)
  --connections N    concurrent keep-alive connections (HOOKGATE_BENCH_CONNECTIONS, default 64)
  --scenario NAME    what is posted: form_json or stripe_signed (HOOKGATE_BENCH_SCENARIO, default form_json)
  --only SERVER      measure only `baseline` or only `hookgate` (HOOKGATE_BENCH_ONLY)
  --help             print this";

#[derive(Debug, Clone)]
struct Options {
    duration: Duration,
    warmup: Duration,
    connections: usize,
    scenario: Scenario,
    servers: Servers,
    /// Whether cargo ran this as a benchmark (`--bench`) rather than as a test.
    mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bench,
    Smoke,
}

/// Which servers are started and measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Servers {
    Both,
    BaselineOnly,
    HookgateOnly,
}

impl Servers {
    fn parse(value: &str) -> anyhow::Result<Servers> {
        match value {
            "baseline" => Ok(Servers::BaselineOnly),
            "hookgate" => Ok(Servers::HookgateOnly),
            "both" => Ok(Servers::Both),
            _ => bail!("unknown server {value:?}; expected baseline, hookgate or both"),
        }
    }

    fn baseline(self) -> bool {
        matches!(self, Servers::Both | Servers::BaselineOnly)
    }

    fn hookgate(self) -> bool {
        matches!(self, Servers::Both | Servers::HookgateOnly)
    }
}

/// The outcome of reading the command line: run, or print the usage.
enum Parsed {
    Run(Options),
    Help,
}

impl Options {
    /// Defaults first, then environment variables, then flags.
    fn parse(args: impl IntoIterator<Item = String>, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Parsed> {
        let args: Vec<String> = args.into_iter().collect();
        let mode = if args.iter().any(|arg| arg == "--bench") { Mode::Bench } else { Mode::Smoke };
        let mut options = Options {
            duration: Duration::from_secs(match mode {
                Mode::Bench => 10,
                Mode::Smoke => 1,
            }),
            warmup: Duration::from_secs(match mode {
                Mode::Bench => 2,
                Mode::Smoke => 0,
            }),
            connections: 64,
            scenario: Scenario::FormJson,
            servers: Servers::Both,
            mode,
        };

        for (name, var_name) in [
            ("--duration", "HOOKGATE_BENCH_DURATION"),
            ("--warmup", "HOOKGATE_BENCH_WARMUP"),
            ("--connections", "HOOKGATE_BENCH_CONNECTIONS"),
            ("--scenario", "HOOKGATE_BENCH_SCENARIO"),
            ("--only", "HOOKGATE_BENCH_ONLY"),
        ] {
            if let Some(value) = var(var_name) {
                options.set(name, &value).with_context(|| format!("in the environment variable {var_name}"))?;
            }
        }

        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                continue;
            }
            if arg == "--help" || arg == "-h" {
                return Ok(Parsed::Help);
            }
            if !arg.starts_with("--") {
                bail!("unexpected argument {arg:?}\n{USAGE}");
            }
            let (name, value) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => {
                    let value = args.next().ok_or_else(|| anyhow!("{arg} needs a value"))?;
                    (arg, value)
                }
            };
            options.set(&name, &value)?;
        }
        Ok(Parsed::Run(options))
    }

    fn set(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        match name {
            "--duration" => {
                self.duration = parse_seconds(value)?;
                ensure!(!self.duration.is_zero(), "--duration must be more than 0");
            }
            "--warmup" => self.warmup = parse_seconds(value)?,
            "--connections" => {
                self.connections = value.parse().with_context(|| format!("--connections {value:?} is not a count"))?;
                ensure!(self.connections > 0, "--connections must be at least 1");
            }
            "--scenario" => self.scenario = Scenario::parse(value)?,
            "--only" => self.servers = Servers::parse(value)?,
            _ => bail!("unknown option {name:?}\n{USAGE}"),
        }
        Ok(())
    }
}

fn parse_seconds(value: &str) -> anyhow::Result<Duration> {
    let seconds: f64 = value.parse().with_context(|| format!("{value:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).with_context(|| format!("{value:?} seconds is out of range"))
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// What is posted, and to which kind of hook. Each scenario builds request
/// `n` from the per-request counter, so bodies (and, for providers that send
/// one, event ids) can differ per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// A JSON order update of about 300 bytes to a `form` hook.
    FormJson,
    /// A Stripe event (a distinct `evt_` id per request, so duplicates never short-circuit)
    /// signed with `Stripe-Signature`, to the `stripe` source endpoint.
    StripeSigned,
}

/// The Stripe endpoint secret of the `stripe_signed` scenario.
const BENCH_STRIPE_SECRET: &str = "whsec_bench_secret";

impl Scenario {
    const ALL: &[Scenario] = &[Scenario::FormJson, Scenario::StripeSigned];

    fn name(self) -> &'static str {
        match self {
            Scenario::FormJson => "form_json",
            Scenario::StripeSigned => "stripe_signed",
        }
    }

    fn parse(name: &str) -> anyhow::Result<Scenario> {
        Scenario::ALL.iter().copied().find(|scenario| scenario.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
            anyhow!("unknown scenario {name:?}; known: {}", known.join(", "))
        })
    }

    /// The event name of the hook this scenario posts to.
    fn event_name(self) -> &'static str {
        match self {
            Scenario::FormJson => "kustomer.app.bench.order.update",
            Scenario::StripeSigned => "stripe.event",
        }
    }

    /// The hook definition file hookgate is started with.
    fn definitions(self) -> Value {
        match self {
            Scenario::FormJson => json!({
                "app": "bench",
                "version": "1",
                "hooks": [{ "eventName": self.event_name(), "type": "form" }],
            }),
            Scenario::StripeSigned => json!({
                "app": "bench",
                "version": "1",
                "hooks": [{
                    "eventName": self.event_name(),
                    "type": "web",
                    "source": {
                        "path": "stripe",
                        "scheme": "stripe",
                        "secrets": ["${BENCH_STRIPE_SECRET}"],
                        "eventName": "stripe.{$.type}",
                        "deliveryId": "{$.id}"
                    }
                }],
            }),
        }
    }

    /// Request number `n` of this scenario, to `target`.
    fn request(self, target: &Target, n: u64) -> Request<Full<Bytes>> {
        match self {
            Scenario::FormJson => {
                let mut request = target.post(Bytes::from(order_update(n)));
                request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                request
            }
            Scenario::StripeSigned => {
                let body = format!(
                    r#"{{"id":"evt_bench_{n:012}","object":"event","type":"payment_intent.succeeded","data":{{"object":{}}}}}"#,
                    order_update(n)
                );
                let timestamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_secs())
                    .unwrap_or_default();
                let signature = stripe_signature(BENCH_STRIPE_SECRET, timestamp, &body);
                let mut request = target.post(Bytes::from(body));
                let headers = request.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert("stripe-signature", HeaderValue::from_str(&signature).expect("the signature is ASCII"));
                request
            }
        }
    }
}

/// `Stripe-Signature` as Stripe's SDKs generate it: `t={unix},v1={hex HMAC-SHA256 of "{t}.{body}"}`.
fn stripe_signature(secret: &str, timestamp: u64, body: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// An order update of about 300 bytes whose fields vary with `n`.
fn order_update(n: u64) -> String {
    const STATUSES: [&str; 4] = ["paid", "packed", "shipped", "delivered"];
    let status = STATUSES[(n % 4) as usize];
    let customer = n % 9_973;
    let sku = n % 997;
    let quantity = n % 5 + 1;
    let total = quantity * 1_999;
    let (minute, second) = (n / 60 % 60, n % 60);
    format!(
        r#"{{"type":"order.updated","sequence":{n},"order":{{"id":"ord_{n:012}","status":"{status}","updatedAt":"2025-06-01T12:{minute:02}:{second:02}Z","customer":{{"id":"cus_{customer:06}","email":"customer{customer}@example.com"}},"lines":[{{"sku":"SKU-{sku:04}","quantity":{quantity},"unitPrice":1999}}],"shipping":"ground","total":{total},"currency":"USD"}}}}"#
    )
}

// ---------------------------------------------------------------------------
// The bench
// ---------------------------------------------------------------------------

fn run_bench() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1), |name| std::env::var(name).ok()) {
        Ok(Parsed::Run(options)) => options,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the tokio runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = bench(&options) => outcome,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    // Stop the connection tasks before the process exits.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(report) if report.failed() == 0 => ExitCode::SUCCESS,
        Ok(report) => {
            eprintln!("error: {} request(s) failed; see the failures above", report.failed());
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Starts the servers, measures them in turn and prints the report. The
/// servers are killed when this returns or is dropped.
async fn bench(options: &Options) -> anyhow::Result<Report> {
    let scenario = options.scenario;
    if options.mode == Mode::Smoke {
        eprintln!("smoke run (no --bench): short defaults, figures are not comparable");
    }

    // Start both before measuring either, so a server that cannot start fails
    // the run at once and neither one's start-up overlaps a measurement.
    let mut baseline = options.servers.baseline().then(Baseline::start).transpose()?;
    let mut hookgate = options.servers.hookgate().then(|| Hookgate::start(scenario)).transpose()?;
    let baseline_target = match &mut baseline {
        Some(server) => Some(server.target().await?),
        None => None,
    };
    let hookgate_target = match &mut hookgate {
        Some(server) => Some(server.target(scenario).await?),
        None => None,
    };

    eprintln!(
        "scenario {}, {} connections, {:.1} s warm-up, {:.1} s measured per server",
        scenario.name(),
        options.connections,
        options.warmup.as_secs_f64(),
        options.duration.as_secs_f64(),
    );
    let mut report = Report { options: options.clone(), baseline: None, hookgate: None };
    if let Some(target) = baseline_target {
        eprintln!("measuring baseline at {}", target.url);
        let stats = load(Arc::new(target), options).await;
        report.baseline = Some(stats.context("measuring the baseline")?);
    }
    if let Some(target) = hookgate_target {
        eprintln!("measuring hookgate at {}", target.url);
        let stats = load(Arc::new(target), options).await;
        report.hookgate = Some(stats.context("measuring hookgate")?);
    }
    drop((baseline, hookgate));

    report.print();
    Ok(report)
}

// ---------------------------------------------------------------------------
// Targets and the HTTP client
// ---------------------------------------------------------------------------

/// Where requests go: a loopback address, and the path and `Host` header of
/// the URL it came from.
#[derive(Debug)]
struct Target {
    url: String,
    address: SocketAddr,
    host: HeaderValue,
    path: Uri,
}

impl Target {
    async fn from_url(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
        ensure!(uri.scheme_str() == Some("http"), "{url:?} is not an http:// URL");
        let authority = uri.authority().ok_or_else(|| anyhow!("{url:?} has no host"))?;
        let host_port = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{}:80", authority.host()),
        };
        let address = tokio::net::lookup_host(&host_port)
            .await
            .with_context(|| format!("cannot resolve {host_port}"))?
            .next()
            .ok_or_else(|| anyhow!("{host_port} resolves to no address"))?;
        // The load only ever goes to this machine.
        ensure!(address.ip().is_loopback(), "{url:?} is not on a loopback address; the bench only loads local servers");
        let path = uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .parse()
            .with_context(|| format!("{url:?} has a bad path"))?;
        Ok(Target { url: url.to_owned(), address, host: HeaderValue::from_str(authority.as_str())?, path })
    }

    /// A POST of `body` to this target, without a content type.
    fn post(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.path.clone();
        request.headers_mut().insert(HOST, self.host.clone());
        request
    }
}

/// Opens one HTTP/1.1 connection; its driver runs in its own task.
async fn connect<B>(address: SocketAddr) -> anyhow::Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(address).await.with_context(|| format!("cannot connect to {address}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // A connection error also fails the request in flight, which is where
        // it is counted.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole reply.
async fn exchange<B>(sender: &mut SendRequest<B>, request: Request<B>) -> anyhow::Result<(StatusCode, Bytes)>
where
    B: hyper::body::Body + 'static,
{
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// One request on a connection of its own, for setting up and checking.
async fn one_request<B>(address: SocketAddr, request: Request<B>) -> anyhow::Result<(StatusCode, Bytes)>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut sender = connect(address).await?;
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut sender, request))
        .await
        .map_err(|_| anyhow!("no reply within {REQUEST_TIMEOUT:?}"))?
}

/// Posts request 0 of the scenario once, so that a server that rejects it
/// fails the run with its reply rather than with a count of failures.
async fn probe(target: &Target, scenario: Scenario) -> anyhow::Result<()> {
    let (status, body) = one_request(target.address, scenario.request(target, 0))
        .await
        .with_context(|| format!("probe POST to {}", target.url))?;
    ensure!(status.is_success(), "probe POST to {} answered {status}: {}", target.url, String::from_utf8_lossy(&body));
    Ok(())
}

// ---------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------

/// When the warm-up ends and the measurement begins, and when it ends.
#[derive(Debug, Clone, Copy)]
struct Phases {
    measure_start: Instant,
    measure_end: Instant,
}

/// Drives `options.connections` closed-loop connections against `target`
/// through the warm-up and the measurement.
async fn load(target: Arc<Target>, options: &Options) -> anyhow::Result<RunStats> {
    let scenario = options.scenario;
    probe(&target, scenario).await?;

    let mut senders = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        senders.push(connect(target.address).await?);
    }
    // Request 0 was the probe.
    let counter = Arc::new(AtomicU64::new(1));
    let measure_start = Instant::now() + options.warmup;
    let phases = Phases { measure_start, measure_end: measure_start + options.duration };
    let mut tasks = tokio::task::JoinSet::new();
    for sender in senders {
        tasks.spawn(drive_connection(target.clone(), scenario, counter.clone(), phases, sender));
    }

    let mut total = RunStats::new(phases);
    while let Some(stats) = tasks.join_next().await {
        total.merge(stats.context("a connection task panicked")?);
    }
    Ok(total)
}

/// One connection's closed loop: send, read the whole reply, repeat, until
/// the measurement ends. A broken connection is replaced.
async fn drive_connection(
    target: Arc<Target>,
    scenario: Scenario,
    counter: Arc<AtomicU64>,
    phases: Phases,
    sender: SendRequest<Full<Bytes>>,
) -> RunStats {
    let mut stats = RunStats::new(phases);
    let mut connection = Some(sender);
    while Instant::now() < phases.measure_end {
        let mut sender = match connection.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => match connect(target.address).await {
                Ok(sender) => sender,
                Err(error) => {
                    stats.failures.add(FailureKind::Connect, &error);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        let request = scenario.request(&target, counter.fetch_add(1, Ordering::Relaxed));
        let sent = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut sender, request)).await;
        let done = Instant::now();
        match outcome {
            Ok(Ok((status, _))) if status.is_success() => {
                stats.record_success(sent, done);
                connection = Some(sender);
            }
            Ok(Ok((status, body))) => {
                let error = anyhow!("{status}: {}", String::from_utf8_lossy(&body));
                stats.failures.add(FailureKind::Status(status.as_u16()), &error);
                stats.record_end(sent, done);
                connection = Some(sender);
            }
            Ok(Err(error)) => {
                stats.failures.add(FailureKind::Connection, &error);
                stats.record_end(sent, done);
            }
            Err(_) => {
                let error = anyhow!("no reply within {REQUEST_TIMEOUT:?}");
                stats.failures.add(FailureKind::Timeout, &error);
                stats.record_end(sent, done);
            }
        }
    }
    stats
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

/// What went wrong with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// A reply outside 2xx.
    Status(u16),
    /// A connection could not be opened.
    Connect,
    /// The connection broke while sending or reading.
    Connection,
    /// No complete reply within `REQUEST_TIMEOUT`.
    Timeout,
}

/// Failed requests by kind, over the warm-up and the measurement.
#[derive(Debug, Default)]
struct Failures {
    statuses: BTreeMap<u16, u64>,
    connect: u64,
    connection: u64,
    timeout: u64,
    /// The first failure's message, to tell what happened.
    first: Option<String>,
}

impl Failures {
    fn add(&mut self, kind: FailureKind, error: &anyhow::Error) {
        match kind {
            FailureKind::Status(status) => *self.statuses.entry(status).or_default() += 1,
            FailureKind::Connect => self.connect += 1,
            FailureKind::Connection => self.connection += 1,
            FailureKind::Timeout => self.timeout += 1,
        }
        if self.first.is_none() {
            self.first = Some(format!("{error:#}").chars().take(300).collect());
        }
    }

    fn total(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.connect + self.connection + self.timeout
    }

    fn merge(&mut self, other: Failures) {
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.connect += other.connect;
        self.connection += other.connection;
        self.timeout += other.timeout;
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    fn to_json(&self) -> Value {
        let statuses: serde_json::Map<String, Value> =
            self.statuses.iter().map(|(status, count)| (status.to_string(), json!(count))).collect();
        json!({
            "status": statuses,
            "connect": self.connect,
            "connection": self.connection,
            "timeout": self.timeout,
        })
    }
}

/// One server's measured requests, of one connection or merged.
#[derive(Debug)]
struct RunStats {
    phases: Phases,
    /// Latencies of the successful measured requests, in microseconds.
    latencies: Histogram<u64>,
    /// When the last measured request ended, successful or not.
    last_end: Option<Instant>,
    failures: Failures,
}

impl RunStats {
    fn new(phases: Phases) -> RunStats {
        RunStats {
            phases,
            latencies: Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3).expect("the histogram bounds are valid"),
            last_end: None,
            failures: Failures::default(),
        }
    }

    fn is_measured(&self, sent: Instant) -> bool {
        sent >= self.phases.measure_start
    }

    fn record_success(&mut self, sent: Instant, done: Instant) {
        if self.is_measured(sent) {
            let micros = u64::try_from(done.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
            self.latencies.saturating_record(micros.max(1));
        }
        self.record_end(sent, done);
    }

    fn record_end(&mut self, sent: Instant, done: Instant) {
        if self.is_measured(sent) {
            self.last_end = self.last_end.max(Some(done));
        }
    }

    fn merge(&mut self, other: RunStats) {
        self.latencies.add(&other.latencies).expect("all histograms share bounds");
        self.last_end = self.last_end.max(other.last_end);
        self.failures.merge(other.failures);
    }

    fn summary(&self) -> Summary {
        // The last requests are sent just before the end and answered just
        // after it; the measured time runs until the last answer.
        let end = self.last_end.unwrap_or(self.phases.measure_end);
        let elapsed = end.max(self.phases.measure_end) - self.phases.measure_start;
        let requests = self.latencies.len();
        let micros = |quantile: f64| self.latencies.value_at_quantile(quantile);
        Summary {
            requests,
            rps: requests as f64 / elapsed.as_secs_f64(),
            p50: micros(0.50),
            p90: micros(0.90),
            p99: micros(0.99),
            max: self.latencies.max(),
            failed: self.failures.total(),
        }
    }
}

/// The figures printed for one server; latencies in microseconds.
#[derive(Debug, Clone, Copy)]
struct Summary {
    requests: u64,
    rps: f64,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    failed: u64,
}

impl Summary {
    fn to_json(self, failures: &Failures) -> Value {
        json!({
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "p50_us": self.p50,
            "p90_us": self.p90,
            "p99_us": self.p99,
            "max_us": self.max,
            "failed": self.failed,
            "failures": failures.to_json(),
        })
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

struct Report {
    options: Options,
    baseline: Option<RunStats>,
    hookgate: Option<RunStats>,
}

impl Report {
    fn failed(&self) -> u64 {
        [&self.baseline, &self.hookgate].into_iter().flatten().map(|stats| stats.failures.total()).sum()
    }

    fn print(&self) {
        let options = &self.options;
        let baseline = self.baseline.as_ref().map(RunStats::summary);
        let hookgate = self.hookgate.as_ref().map(RunStats::summary);

        println!();
        println!(
            "ingest bench: scenario {}, {} connections (HTTP/1.1 keep-alive, closed loop), \
             {:.1} s warm-up, {:.1} s measured per server, {} build",
            options.scenario.name(),
            options.connections,
            options.warmup.as_secs_f64(),
            options.duration.as_secs_f64(),
            build_profile(),
        );
        println!();
        println!(
            "{:<10} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "server", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "failed"
        );
        for (name, summary) in [("baseline", baseline), ("hookgate", hookgate)] {
            if let Some(s) = summary {
                println!(
                    "{:<10} {:>10} {:>11.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8}",
                    name,
                    s.requests,
                    s.rps,
                    millis(s.p50),
                    millis(s.p90),
                    millis(s.p99),
                    millis(s.max),
                    s.failed,
                );
            }
        }
        println!();

        let rps_ratio = baseline.zip(hookgate).map(|(baseline, hookgate)| hookgate.rps / baseline.rps);
        let p99_ratio = baseline.zip(hookgate).map(|(baseline, hookgate)| hookgate.p99 as f64 / baseline.p99 as f64);
        if let Some(ratio) = rps_ratio {
            println!(
                "hookgate / baseline req/s: {ratio:.3} (target >= {TARGET_RPS_RATIO:.2}: {})",
                met(ratio >= TARGET_RPS_RATIO)
            );
        }
        if let Some(hookgate) = hookgate {
            let target_micros = TARGET_P99.as_micros() as u64;
            let versus = match (baseline, p99_ratio) {
                (Some(baseline), Some(ratio)) => {
                    format!(" vs baseline {:.2} ms ({ratio:.1}x)", millis(baseline.p99))
                }
                _ => String::new(),
            };
            println!(
                "hookgate p99: {:.2} ms{versus} (target < {:.0} ms: {})",
                millis(hookgate.p99),
                millis(target_micros),
                met(hookgate.p99 < target_micros)
            );
        }
        for (name, stats) in [("baseline", &self.baseline), ("hookgate", &self.hookgate)] {
            let Some(stats) = stats else { continue };
            let failures = &stats.failures;
            if failures.total() == 0 {
                continue;
            }
            let statuses: Vec<String> =
                failures.statuses.iter().map(|(status, count)| format!("{count} x {status}")).collect();
            println!(
                "{name}: {} failed request(s): statuses [{}], {} connect error(s), \
                 {} connection error(s), {} timeout(s); first: {}",
                failures.total(),
                statuses.join(", "),
                failures.connect,
                failures.connection,
                failures.timeout,
                failures.first.as_deref().unwrap_or("-"),
            );
        }

        let server_json = |stats: &Option<RunStats>| {
            stats.as_ref().map_or(Value::Null, |stats| stats.summary().to_json(&stats.failures))
        };
        let line = json!({
            "scenario": options.scenario.name(),
            "connections": options.connections,
            "baseline": server_json(&self.baseline),
            "hookgate": server_json(&self.hookgate),
            "rps_ratio": rps_ratio.map(|ratio| round(ratio, 4)),
            "p99_ratio": p99_ratio.map(|ratio| round(ratio, 3)),
            "duration_secs": options.duration.as_secs_f64(),
            "warmup_secs": options.warmup.as_secs_f64(),
            "build": build_profile(),
        });
        println!("{line}");
    }
}

fn met(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn build_profile() -> &'static str {
    if cfg!(debug_assertions) { "debug" } else { "release" }
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// A server in a child process, killed when dropped.
struct ChildServer {
    name: &'static str,
    child: Child,
    /// The base URL the server announced on stdout.
    announced: Option<oneshot::Receiver<String>>,
}

impl ChildServer {
    /// Spawns `command` with stdout piped, and reads its stdout in a thread
    /// until the line starting with `prefix`, then discards the rest so the
    /// child never blocks on a full pipe.
    fn spawn(name: &'static str, mut command: Command, prefix: &'static str) -> anyhow::Result<ChildServer> {
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child =
            command.spawn().with_context(|| format!("cannot start {name} ({:?})", command.get_program()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || read_announcement(stdout, prefix, sender))?;
        Ok(ChildServer { name, child, announced: Some(receiver) })
    }

    /// Waits for the server's announced base URL.
    async fn base_url(&mut self) -> anyhow::Result<String> {
        let receiver = self.announced.take().expect("base_url is asked once");
        match tokio::time::timeout(STARTUP_TIMEOUT, receiver).await {
            Ok(Ok(url)) => Ok(url),
            Ok(Err(_)) => {
                let status = self.child.wait()?;
                bail!("{} exited ({status}) before announcing its address", self.name)
            }
            Err(_) => bail!("{} did not announce its address within {STARTUP_TIMEOUT:?}", self.name),
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_announcement(stdout: ChildStdout, prefix: &str, sender: oneshot::Sender<String>) {
    let mut sender = Some(sender);
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    while let Some(waiting) = sender.take() {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        match text.trim().strip_prefix(prefix) {
            Some(rest) => {
                let url = rest.split_whitespace().next().unwrap_or_default();
                let _ = waiting.send(url.to_owned());
            }
            None => sender = Some(waiting),
        }
    }
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
}

/// The baseline server: this binary re-executed in the baseline role.
struct Baseline {
    server: ChildServer,
}

impl Baseline {
    fn start() -> anyhow::Result<Baseline> {
        let exe = std::env::current_exe().context("cannot find the bench binary")?;
        let mut command = Command::new(exe);
        // The baseline exits when its stdin closes, should this process die
        // without killing it.
        command.env(ROLE_VAR, "baseline").stdin(Stdio::piped());
        let server = ChildServer::spawn("baseline", command, BASELINE_LISTENING)?;
        Ok(Baseline { server })
    }

    async fn target(&mut self) -> anyhow::Result<Target> {
        let base = self.server.base_url().await?;
        Target::from_url(&format!("{}/h/baseline", base.trim_end_matches('/'))).await
    }
}

/// The real hookgate in a temporary directory, with one hook definition.
struct Hookgate {
    // Fields drop in order: the server is killed before its directory goes.
    server: ChildServer,
    admin_token: String,
    _directory: tempfile::TempDir,
}

impl Hookgate {
    fn start(scenario: Scenario) -> anyhow::Result<Hookgate> {
        let directory = tempfile::Builder::new()
            .prefix("hookgate-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let data = directory.path().join("data");
        let definitions = directory.path().join("defs");
        std::fs::create_dir_all(&data)?;
        std::fs::create_dir_all(&definitions)?;
        write_json(&definitions.join("bench.json"), &scenario.definitions())?;
        let admin_token = hex::encode(rand::random::<[u8; 24]>());

        let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
        command
            .arg("serve")
            .arg("--http")
            .arg("127.0.0.1:0")
            .arg("--smtp")
            .arg("127.0.0.1:0")
            .arg("--database")
            .arg(data.join("hookgate.db"))
            .arg("--definitions")
            .arg(&definitions)
            .current_dir(directory.path())
            .stdin(Stdio::null())
            .env("HOOKGATE_ADMIN_TOKEN", &admin_token)
            .env("BENCH_STRIPE_SECRET", BENCH_STRIPE_SECRET)
            .env("RUST_LOG", "warn");
        // The bench's own variables are not hookgate configuration.
        for name in bench_variables() {
            command.env_remove(name);
        }
        let server = ChildServer::spawn("hookgate", command, HOOKGATE_LISTENING)?;
        Ok(Hookgate { server, admin_token, _directory: directory })
    }

    /// Waits for hookgate to listen, then asks it for the scenario's hook URL
    /// and aims at that URL's path on the address hookgate announced.
    async fn target(&mut self, scenario: Scenario) -> anyhow::Result<Target> {
        let base = self.server.base_url().await?;
        let base = base.trim_end_matches('/');
        let api = Target::from_url(&format!("{base}/api/hooks")).await?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let url = self.hook_url(&api, scenario).await;
            match url {
                Ok(Some(url)) => {
                    // The hook URL's host is hookgate's public URL, which need
                    // not be where it listens here; only its path is used.
                    let uri: Uri = url.parse().with_context(|| format!("the hook URL {url:?} is not a URL"))?;
                    let path = uri.path_and_query().map_or("/", |path| path.as_str());
                    return Target::from_url(&format!("{base}{path}")).await;
                }
                Ok(None) if Instant::now() < deadline => {}
                Ok(None) => {
                    bail!("GET {} lists no hook for {} after {STARTUP_TIMEOUT:?}", api.url, scenario.event_name())
                }
                Err(error) => return Err(error),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn hook_url(&self, api: &Target, scenario: Scenario) -> anyhow::Result<Option<String>> {
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.uri_mut() = api.path.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, api.host.clone());
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", self.admin_token))?);
        let (status, body) = one_request(api.address, request).await.with_context(|| format!("GET {}", api.url))?;
        ensure!(status == StatusCode::OK, "GET {} answered {status}: {}", api.url, String::from_utf8_lossy(&body));
        let hooks: Value =
            serde_json::from_slice(&body).with_context(|| format!("GET {} did not answer JSON", api.url))?;
        let hooks =
            hooks["data"].as_array().ok_or_else(|| anyhow!("GET {} answered no `data` array: {hooks}", api.url))?;
        let url = hooks
            .iter()
            .find(|hook| hook["eventName"] == scenario.event_name())
            .map(|hook| hook["url"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("the hook has no `url`: {hook}")))
            .transpose()?;
        Ok(url)
    }
}

fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The names of this process's `HOOKGATE_BENCH_*` environment variables.
fn bench_variables() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.to_string_lossy().starts_with("HOOKGATE_BENCH_"))
        .collect()
}

// ---------------------------------------------------------------------------
// The baseline server (child role)
// ---------------------------------------------------------------------------

/// Serves the baseline until killed or until stdin closes.
fn run_baseline_server() -> anyhow::Result<()> {
    std::thread::spawn(|| {
        let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{BASELINE_LISTENING}http://{}", listener.local_addr()?);
        let ids = Arc::new(AtomicU64::new(0));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    eprintln!("baseline: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            stream.set_nodelay(true)?;
            let ids = ids.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| baseline_reply(request, ids.clone()));
                // Connections closed by the client end here; nothing to report.
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

/// Reads the whole body and answers 202 with a fresh event id.
async fn baseline_reply(
    request: Request<Incoming>,
    ids: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    request.into_body().collect().await?;
    let id = ids.fetch_add(1, Ordering::Relaxed);
    let mut response = Response::new(Full::new(Bytes::from(format!(r#"{{"id":"evt_{id:016x}"}}"#))));
    *response.status_mut() = StatusCode::ACCEPTED;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
