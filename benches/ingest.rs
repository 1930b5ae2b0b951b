//! Ingest benchmark: how many small webhook posts per second hookgate commits,
//! and how long each one waits, on each of its stores (SQLite; PostgreSQL with
//! one node; PostgreSQL with two nodes on one database), next to a bare-hyper
//! server measured in the same run on the same machine, all loaded by wrk from
//! outside, with the CPU time each one cost.
//!
//! # What it measures
//!
//! Each server runs in a process of its own, so that none shares a process or a
//! runtime with the load:
//!
//! - **wrk** (the Debian package: `apt-get install wrk`) generates the load,
//!   driven by `benches/ingest.lua`, which builds every request.
//! - **baseline**: this bench binary re-executed with
//!   `HOOKGATE_BENCH_ROLE=baseline`, a bare hyper 1.x HTTP/1 server that reads
//!   the whole request body and answers `202 {"id":"evt_..."}`, and counts the
//!   posts it answered. It is the ceiling: HTTP parsing and loopback
//!   networking on this machine, nothing else.
//! - **hookgate**: the real binary (`CARGO_BIN_EXE_hookgate`, a release build
//!   under `cargo bench`), started with `serve` and one hook definition file, on
//!   each backend of `--backends` in turn: `sqlite` (a fresh SQLite file in a
//!   temporary directory), `postgres` (one node on a fresh schema of the server
//!   named by `HOOKGATE_BENCH_POSTGRES_URL`) and `postgres-2` (two nodes on one
//!   fresh schema; wrk's threads are spread over them, so each node takes half
//!   the connections, and one latency distribution covers both). Its reply
//!   waits for the durable commit of the event. Each backend's nodes start just
//!   before it is measured and are killed after, and its schema is dropped.
//!   Without `HOOKGATE_BENCH_POSTGRES_URL` the PostgreSQL backends are skipped,
//!   saying so (named in `--backends`, they are an error instead).
//!
//! Each server gets the same three wrk runs: a probe (one request, whose reply
//! is shown if it is not a success), a warm-up of `--warmup` seconds, and the
//! measured run of `--duration` seconds, each with `--connections` HTTP/1.1
//! keep-alive connections over `--threads` wrk threads, every connection in a
//! closed loop (its next request leaves when the previous reply has been read).
//! The scenario decides what is posted: `form_json` posts an order update of
//! about 300 bytes of JSON to a `form` hook; `stripe_signed` posts a Stripe
//! event signed with `Stripe-Signature` (the signature computed per request,
//! as a sender does) to the `stripe` source endpoint. Every request carries a
//! different body and event id, so duplicate detection never short-circuits.
//!
//! At the end of its seconds, the script stops sending; wrk runs a little
//! longer (`GRACE`), so the last replies are read and no request is left in
//! flight when it exits. Requests per second are the measured run's
//! acknowledged (2xx) replies over its seconds; the requests still answered
//! after the deadline (at most one per connection) count too. Latency is wrk's:
//! from writing a request to reading its reply, with wrk's own correction for
//! coordinated omission. Being a closed loop, a stalled server also stalls the
//! load, so tail latencies are a lower bound, which is fine for comparing runs.
//!
//! CPU: `utime + stime` of the server's processes (every node) from
//! `/proc/<pid>/stat`, read just before and just after the measured run,
//! divided by its acknowledged requests, as CPU seconds per 10,000 events. For
//! PostgreSQL also the server processes serving the nodes (found in
//! `pg_stat_activity` by the `application_name` the nodes' URL sets), and
//! apart, the server's auxiliary processes (WAL writer, checkpointer, ...),
//! which serve everyone on that server. On a machine with few cores the nodes,
//! the database and wrk compete for the same cores, so the CPU per event says
//! more about a backend's cost than its rate does.
//!
//! # What it checks
//!
//! After each server has been measured, what it kept is compared with what wrk
//! counted as acknowledged over the probe, the warm-up and the measured run:
//! the baseline's count of answered posts, and the events in hookgate's store
//! (its nodes are killed first, so only committed events count; SQLite's file
//! or the PostgreSQL schema is then read). Any difference, any failed request,
//! and any request wrk sent but never saw answered fail the bench.
//!
//! # How to run it
//!
//! ```text
//! apt-get install wrk
//! cargo bench --bench ingest
//! HOOKGATE_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench ingest
//! cargo bench --bench ingest -- --duration 30 --connections 128
//! HOOKGATE_BENCH_DURATION=30 cargo bench --bench ingest
//! cargo bench --bench ingest -- --only baseline
//! cargo bench --bench ingest -- --backends sqlite
//! ```
//!
//! The machine is small and shared, so run it while nothing else is busy and
//! compare ratios from the same run only.
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
//! | `--threads N`        | `HOOKGATE_BENCH_THREADS`    | the machine's cores (wrk threads) |
//! | `--scenario NAME`    | `HOOKGATE_BENCH_SCENARIO`   | `form_json`      |
//! | `--only SERVER`      | `HOOKGATE_BENCH_ONLY`       | both (`baseline` or `hookgate`) |
//! | `--backends LIST`    | `HOOKGATE_BENCH_BACKENDS`   | `sqlite,postgres,postgres-2` (`postgres-N`: N nodes) |
//! |                      | `HOOKGATE_BENCH_POSTGRES_URL` | none: the PostgreSQL backends are skipped |
//! |                      | `HOOKGATE_BENCH_BINARY`     | this build's `hookgate`; another build to measure instead (to compare two builds in turn) |
//!
//! Without `--bench` (that is, when `cargo test --benches` or
//! `cargo test --all-targets` runs this file) it is a smoke test: the duration
//! defaults to 1 s and the warm-up to 0 s, so the whole path is exercised
//! quickly.
//!
//! # Output and exit status
//!
//! Progress and wrk's own reports go to stderr. Stdout gets the machine's facts
//! (cores, load average, the time of a 4 KiB write with `fdatasync`), a table
//! with a row per server, the ratios against the targets stated in the issue
//! (hookgate at least 30% of the baseline's requests per second, hookgate p99
//! under 10 ms), the store check, and as its last line one JSON object to
//! compare later runs with:
//! `{"scenario":"form_json","connections":64,...,"baseline":{...},"hookgate":{"sqlite":{...},...},"rps_ratio":{...}}`.
//! Missing a target is reported, not an error. The exit status is 1 if any
//! request failed (a non-2xx reply, a socket error, a timeout, or no reply),
//! or if what a server kept differs from what it acknowledged; 2 if the bench
//! could not run at all (wrk missing, a server that did not start or refused
//! the probe); 0 otherwise.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

#[path = "support/backend.rs"]
mod backend;
#[path = "support/machine.rs"]
mod machine;
#[path = "support/postgres.rs"]
#[allow(dead_code, reason = "shared with the deliveries bench, which reads more of the store")]
mod postgres;

use backend::Backend;
use machine::CpuSample;

/// Set to `baseline` in the environment of the child that serves the baseline.
const ROLE_VAR: &str = "HOOKGATE_BENCH_ROLE";
const BASELINE_LISTENING: &str = "baseline listening on ";
const HOOKGATE_LISTENING: &str = "hookgate: http listening on ";
/// `GET` on this path of the baseline answers `{"answered": N}`, the posts it answered.
const BASELINE_COUNT_PATH: &str = "/count";

/// The wrk script that builds the requests and reports the counts.
const WRK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ingest.lua");
/// The script's line of counts and latencies, and the probe's reply, on wrk's stdout.
const WRK_COUNTS: &str = "HOOKGATE_BENCH_WRK ";
const WRK_REPLY: &str = "HOOKGATE_BENCH_REPLY ";
/// Set for wrk when a run loads several nodes: their `host:port` addresses, space-separated.
const WRK_ADDRESSES: &str = "HOOKGATE_BENCH_WRK_ADDRESSES";
/// How long wrk runs past a run's seconds, for the replies to the last requests. A request still
/// unanswered then counts as failed.
const GRACE: Duration = Duration::from_secs(1);

/// How long a server may take to announce its address and list its hooks.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// A request without a complete reply after this long counts as failed (wrk's `--timeout`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The targets stated in the issue.
const TARGET_RPS_RATIO: f64 = 0.30;
const TARGET_P99: Duration = Duration::from_millis(10);

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
  --threads N        wrk threads (HOOKGATE_BENCH_THREADS, default: the machine's cores)
  --scenario NAME    what is posted: form_json or stripe_signed (HOOKGATE_BENCH_SCENARIO, default form_json)
  --only SERVER      measure only `baseline` or only `hookgate` (HOOKGATE_BENCH_ONLY)
  --backends LIST    hookgate's stores, in order: sqlite, postgres (one node), postgres-2 (two
                     nodes on one database) (HOOKGATE_BENCH_BACKENDS, default all three)
  --help             print this

Needs wrk (apt-get install wrk). The PostgreSQL backends need HOOKGATE_BENCH_POSTGRES_URL
(e.g. postgres://postgres@127.0.0.1:5432/test); without it they are skipped.";

#[derive(Debug, Clone)]
struct Options {
    duration: Duration,
    warmup: Duration,
    connections: usize,
    threads: usize,
    scenario: Scenario,
    servers: Servers,
    /// The stores hookgate is measured on, in order.
    backends: Vec<Backend>,
    /// Whether `backends` was asked for (a missing PostgreSQL URL is then an error, not a skip).
    backends_asked: bool,
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
            threads: std::thread::available_parallelism().map_or(2, |cores| cores.get()),
            scenario: Scenario::FormJson,
            servers: Servers::Both,
            backends: Backend::DEFAULT.to_vec(),
            backends_asked: false,
            mode,
        };

        for (name, var_name) in [
            ("--duration", "HOOKGATE_BENCH_DURATION"),
            ("--warmup", "HOOKGATE_BENCH_WARMUP"),
            ("--connections", "HOOKGATE_BENCH_CONNECTIONS"),
            ("--threads", "HOOKGATE_BENCH_THREADS"),
            ("--scenario", "HOOKGATE_BENCH_SCENARIO"),
            ("--only", "HOOKGATE_BENCH_ONLY"),
            ("--backends", "HOOKGATE_BENCH_BACKENDS"),
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
        // wrk wants at least one connection per thread.
        options.threads = options.threads.min(options.connections);
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
            "--threads" => {
                self.threads = value.parse().with_context(|| format!("--threads {value:?} is not a count"))?;
                ensure!(self.threads > 0, "--threads must be at least 1");
            }
            "--scenario" => self.scenario = Scenario::parse(value)?,
            "--only" => self.servers = Servers::parse(value)?,
            "--backends" => {
                self.backends = Backend::parse_list(value)?;
                self.backends_asked = true;
            }
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

/// What is posted, and to which kind of hook. `benches/ingest.lua` builds the
/// requests; this side writes the hook definition they are posted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// A JSON order update of about 300 bytes to a `form` hook.
    FormJson,
    /// A Stripe event (a distinct `evt_` id per request, so duplicates never short-circuit)
    /// signed with `Stripe-Signature`, to the `stripe` source endpoint.
    StripeSigned,
}

/// The Stripe endpoint secret of the `stripe_signed` scenario (also in `ingest.lua`).
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
    match outcome {
        Ok(report) if report.failures().is_empty() => ExitCode::SUCCESS,
        Ok(report) => {
            for failure in report.failures() {
                eprintln!("error: {failure}");
            }
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Measures the baseline, then hookgate on each backend in turn (each started just before its
/// measurement and stopped after it, so no idle server shares the machine with another's run),
/// compares what each kept with what it acknowledged, and prints the report.
async fn bench(options: &Options) -> anyhow::Result<Report> {
    let scenario = options.scenario;
    if options.mode == Mode::Smoke {
        eprintln!("smoke run (no --bench): short defaults, figures are not comparable");
    }
    check_wrk().await?;

    let postgres_server = postgres::server_url();
    let hookgate_backends = if options.servers.hookgate() { options.backends.as_slice() } else { &[] };
    let (backends, skipped) =
        backend::available(hookgate_backends, options.backends_asked, postgres_server.as_deref())?;
    skipped.iter().for_each(|skipped| eprintln!("{skipped}"));
    // Each wrk thread loads one node, so every node gets the same share of the connections.
    for backend in &backends {
        ensure!(
            options.threads.is_multiple_of(backend.nodes()),
            "{} needs a number of wrk threads divisible by its {} nodes (--threads {})",
            backend.name(),
            backend.nodes(),
            options.threads
        );
    }

    let machine = Machine::read()?;
    eprintln!(
        "scenario {}, {} connections over {} wrk threads, {:.1} s warm-up, {:.1} s measured per server; {}",
        scenario.name(),
        options.connections,
        options.threads,
        options.warmup.as_secs_f64(),
        options.duration.as_secs_f64(),
        machine.describe(),
    );
    let mut report = Report { options: options.clone(), machine, baseline: None, hookgate: Vec::new(), skipped };

    if options.servers.baseline() {
        let mut baseline = Baseline::start()?;
        let target = baseline.target().await?;
        let meter = Meter { pids: vec![baseline.server.pid()], database: None };
        let (runs, spent) = measure("baseline", std::slice::from_ref(&target), options, &meter)
            .await
            .context("measuring the baseline")?;
        let kept = baseline.answered(&target).await.context("asking the baseline how many posts it answered")?;
        report.baseline = Some(Measured { runs, kept, spent, nodes: 1 });
    }
    for backend in backends {
        let measured = measure_hookgate(backend, options, postgres_server.as_deref())
            .await
            .with_context(|| format!("measuring hookgate on {}", backend.name()))?;
        report.hookgate.push((backend, measured));
    }

    report.print();
    Ok(report)
}

/// Starts hookgate's nodes on a fresh store of `backend`, measures them, stops them and counts
/// the events they stored; a PostgreSQL schema is dropped afterwards, whatever happened.
async fn measure_hookgate(backend: Backend, options: &Options, server: Option<&str>) -> anyhow::Result<Measured> {
    let schema = match (backend, server) {
        (Backend::Sqlite, _) => None,
        (Backend::Postgres { .. }, Some(server)) => Some(postgres::BenchSchema::create(server).await?),
        (Backend::Postgres { .. }, None) => bail!("{} is not set", postgres::URL_VARIABLE),
    };
    let measured = async {
        let database = match &schema {
            Some(schema) => Database::Postgres(schema),
            None => Database::Sqlite,
        };
        let mut hookgate = Hookgate::start(options.scenario, &database, backend.nodes())?;
        let targets = hookgate.targets(options.scenario).await?;
        let meter = Meter { pids: hookgate.pids(), database: schema.as_ref() };
        let (runs, spent) = measure(&format!("hookgate on {}", backend.name()), &targets, options, &meter).await?;
        let kept = hookgate.stored_events(&database).await.context("counting the events in hookgate's store")?;
        anyhow::Ok(Measured { runs, kept, spent, nodes: backend.nodes() })
    }
    .await;
    if let Some(schema) = schema {
        let name = schema.name().to_owned();
        match schema.drop().await {
            Ok(()) => eprintln!("dropped the schema {name}"),
            Err(error) => eprintln!("warning: {error:#}"),
        }
    }
    measured
}

/// The machine's facts printed beside the figures.
#[derive(Debug, Clone)]
struct Machine {
    cores: usize,
    /// Median and slowest of 200 durable 4 KiB writes in the temporary directory.
    fsync: (Duration, Duration),
    load_at_start: f64,
}

impl Machine {
    fn read() -> anyhow::Result<Machine> {
        let directory = tempfile::Builder::new().prefix("hookgate-bench-fsync-").tempdir()?;
        let fsync = machine::fsync_time(directory.path(), 200).context("cannot time fdatasync")?;
        Ok(Machine {
            cores: std::thread::available_parallelism().map_or(0, |cores| cores.get()),
            fsync,
            load_at_start: machine::load_average(),
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} cores, load average {:.2}, 4 KiB write + fdatasync {:.2} ms median ({:.2} ms slowest of 200)",
            self.cores,
            self.load_at_start,
            self.fsync.0.as_secs_f64() * 1000.0,
            self.fsync.1.as_secs_f64() * 1000.0,
        )
    }
}

/// Fails with the way to install wrk when it is missing.
async fn check_wrk() -> anyhow::Result<()> {
    let output = tokio::process::Command::new("wrk").arg("--version").stdin(Stdio::null()).output().await;
    match output {
        Ok(output) if String::from_utf8_lossy(&output.stdout).starts_with("wrk ") => Ok(()),
        Ok(output) => bail!(
            "`wrk --version` printed {:?}; the bench needs wrk 4 (apt-get install wrk)",
            String::from_utf8_lossy(&output.stdout)
        ),
        Err(error) => bail!("cannot run wrk ({error}); the bench needs it as its load generator: apt-get install wrk"),
    }
}

// ---------------------------------------------------------------------------
// wrk
// ---------------------------------------------------------------------------

/// One of the three wrk runs each server gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Probe,
    Warmup,
    Measure,
}

impl Run {
    /// The name `ingest.lua` knows the run by.
    fn name(self) -> &'static str {
        match self {
            Run::Probe => "probe",
            Run::Warmup => "warmup",
            Run::Measure => "measure",
        }
    }
}

/// What `ingest.lua` counted in one wrk run; latencies in microseconds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Counts {
    /// Requests the script built, all written by wrk.
    sent: u64,
    /// Replies wrk read in full.
    completed: u64,
    /// Replies with a status above 399.
    status_errors: u64,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    timeouts: u64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
    mean_us: f64,
}

impl Counts {
    /// Successful replies: those wrk read that were not status errors.
    fn acknowledged(&self) -> u64 {
        self.completed.saturating_sub(self.status_errors)
    }

    /// Requests sent whose reply never came before wrk stopped.
    fn unanswered(&self) -> u64 {
        self.sent.saturating_sub(self.completed)
    }

    fn failed(&self) -> u64 {
        self.status_errors
            + self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.timeouts
            + self.unanswered()
    }

    fn failure_text(&self) -> String {
        format!(
            "{} non-2xx/3xx repl(ies), {} connect, {} read and {} write error(s), {} timeout(s), \
             {} request(s) unanswered when wrk stopped",
            self.status_errors,
            self.connect_errors,
            self.read_errors,
            self.write_errors,
            self.timeouts,
            self.unanswered()
        )
    }
}

/// Runs wrk once against `targets` and reads the script's counts. With several targets (the
/// nodes of one store), wrk's threads take them in turn; the probe goes to the first only.
async fn wrk(targets: &[Target], options: &Options, run: Run) -> anyhow::Result<(Counts, Option<String>)> {
    let (connections, threads, seconds, wrk_seconds) = match run {
        // One request; wrk's shortest run is a second.
        Run::Probe => (1, 1, 1.0, 1),
        Run::Warmup | Run::Measure => {
            let seconds = if run == Run::Warmup { options.warmup } else { options.duration };
            (options.connections, options.threads, seconds.as_secs_f64(), (seconds + GRACE).as_secs_f64().ceil() as u64)
        }
    };
    let first = targets.first().ok_or_else(|| anyhow!("no target to load"))?;
    let mut command = tokio::process::Command::new("wrk");
    command
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--connections")
        .arg(connections.to_string())
        .arg("--duration")
        .arg(format!("{wrk_seconds}s"))
        .arg("--timeout")
        .arg(format!("{}s", REQUEST_TIMEOUT.as_secs()))
        .arg("--script")
        .arg(WRK_SCRIPT)
        .arg(&first.url)
        .arg("--")
        .arg(options.scenario.name())
        .arg(run.name())
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if run != Run::Probe && targets.len() > 1 {
        let addresses: Vec<String> = targets.iter().map(|target| target.address.to_string()).collect();
        command.env(WRK_ADDRESSES, addresses.join(" "));
    }
    let output = command.output().await.context("cannot run wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines().filter(|line| !line.starts_with(WRK_COUNTS) && !line.starts_with(WRK_REPLY)) {
        eprintln!("  wrk {}: {line}", run.name());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stderr.lines() {
        eprintln!("  wrk {} (stderr): {line}", run.name());
    }
    ensure!(output.status.success(), "wrk exited with {}", output.status);
    let counts = stdout
        .lines()
        .find_map(|line| line.strip_prefix(WRK_COUNTS))
        .ok_or_else(|| anyhow!("wrk printed no {WRK_COUNTS:?} line; did {WRK_SCRIPT} fail?"))?;
    let counts: Counts =
        serde_json::from_str(counts).with_context(|| format!("the script's counts {counts:?} are not as expected"))?;
    let reply = stdout.lines().find_map(|line| line.strip_prefix(WRK_REPLY)).map(str::to_owned);
    Ok((counts, reply))
}

/// Whose CPU time a measured run is charged with: the server's processes and, for PostgreSQL,
/// the database's processes serving them.
struct Meter<'a> {
    pids: Vec<u32>,
    database: Option<&'a postgres::BenchSchema>,
}

impl Meter<'_> {
    async fn sample(&self) -> anyhow::Result<(CpuSample, Option<postgres::DatabaseSample>)> {
        let database = match self.database {
            Some(schema) => Some(schema.sample().await.context("reading the database's CPU time")?),
            None => None,
        };
        Ok((CpuSample::of(self.pids.iter().copied()), database))
    }
}

/// The probe, the warm-up (unless it is 0 s) and the measured run against `targets`, with the
/// CPU time spent over the measured run.
async fn measure(
    name: &str,
    targets: &[Target],
    options: &Options,
    meter: &Meter<'_>,
) -> anyhow::Result<(Runs, Spent)> {
    let first = targets.first().ok_or_else(|| anyhow!("no target to load"))?;
    let addresses: Vec<String> = targets.iter().map(|target| target.address.to_string()).collect();
    eprintln!("measuring {name} at {} (on {})", first.url, addresses.join(", "));
    let (probe, reply) = wrk(targets, options, Run::Probe).await?;
    ensure!(
        probe.sent == 1 && probe.acknowledged() == 1 && probe.failed() == 0,
        "the probe POST to {} was not acknowledged: reply {}; {}",
        first.url,
        reply.as_deref().unwrap_or("none"),
        probe.failure_text()
    );
    let warmup = match options.warmup.is_zero() {
        true => None,
        false => Some(wrk(targets, options, Run::Warmup).await?.0),
    };
    let load = machine::load_average();
    let (server_before, database_before) = meter.sample().await?;
    let (measured, _) = wrk(targets, options, Run::Measure).await?;
    let (server_after, database_after) = meter.sample().await?;
    let spent = Spent {
        server: server_after.since(&server_before),
        database: database_after.zip(database_before).map(|(after, before)| after.since(&before)),
        load,
    };
    Ok((Runs { probe, warmup, measured }, spent))
}

// ---------------------------------------------------------------------------
// Targets and the HTTP client for setting up and checking
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

    /// A GET of `path` on this target's server.
    fn get(&self, path: &str) -> anyhow::Result<Request<Empty<Bytes>>> {
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = path.parse().with_context(|| format!("{path:?} is not a path"))?;
        request.headers_mut().insert(HOST, self.host.clone());
        Ok(request)
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
        // A connection error also fails the request in flight, which reports it.
        let _ = connection.await;
    });
    Ok(sender)
}

/// One request on a connection of its own, for setting up and checking.
async fn one_request<B>(address: SocketAddr, request: Request<B>) -> anyhow::Result<(StatusCode, Bytes)>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let exchange = async {
        let mut sender = connect(address).await?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| anyhow!("no reply within {REQUEST_TIMEOUT:?}"))?
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

/// One server's three wrk runs.
#[derive(Debug, Clone, Copy)]
struct Runs {
    probe: Counts,
    warmup: Option<Counts>,
    measured: Counts,
}

impl Runs {
    fn all(&self) -> impl Iterator<Item = &Counts> {
        [Some(&self.probe), self.warmup.as_ref(), Some(&self.measured)].into_iter().flatten()
    }

    /// Successful replies over the three runs.
    fn acknowledged(&self) -> u64 {
        self.all().map(Counts::acknowledged).sum()
    }

    fn failed(&self) -> u64 {
        self.all().map(Counts::failed).sum()
    }
}

/// A server's runs, what it kept (the posts the baseline counted, or the events in hookgate's
/// store) and the CPU time its measured run cost.
#[derive(Debug)]
struct Measured {
    runs: Runs,
    kept: u64,
    spent: Spent,
    /// Processes serving the load.
    nodes: usize,
}

/// The CPU time spent over a measured run.
#[derive(Debug, Clone, Copy)]
struct Spent {
    /// The server's processes (all of hookgate's nodes).
    server: Duration,
    /// PostgreSQL: the processes serving this run's nodes, and the server's auxiliary processes.
    database: Option<(Duration, Duration)>,
    /// The one-minute load average as the run started.
    load: f64,
}

impl Measured {
    fn rps(&self, duration: Duration) -> f64 {
        self.runs.measured.acknowledged() as f64 / duration.as_secs_f64()
    }

    /// CPU seconds per 10,000 acknowledged requests of the measured run: the server's, the
    /// database's backends', the database's auxiliary processes'.
    fn cpu_per_10k(&self) -> (f64, Option<f64>, Option<f64>) {
        let events = self.runs.measured.acknowledged();
        let (backends, auxiliary) = self.spent.database.unzip();
        (
            machine::per_10k(self.spent.server, events),
            backends.map(|spent| machine::per_10k(spent, events)),
            auxiliary.map(|spent| machine::per_10k(spent, events)),
        )
    }

    /// Cores the server's processes kept busy on average over the measured run's seconds (the
    /// load stops at their end; the grace that follows costs the server next to nothing).
    fn cores(&self, duration: Duration) -> f64 {
        self.spent.server.as_secs_f64() / duration.as_secs_f64()
    }

    fn to_json(&self, duration: Duration) -> Value {
        let measured = &self.runs.measured;
        let (server, backends, auxiliary) = self.cpu_per_10k();
        json!({
            "nodes": self.nodes,
            "requests": measured.acknowledged(),
            "rps": round(self.rps(duration), 1),
            "p50_us": measured.p50_us,
            "p90_us": measured.p90_us,
            "p99_us": measured.p99_us,
            "max_us": measured.max_us,
            "mean_us": round(measured.mean_us, 1),
            "cpu_s_per_10k": round(server, 3),
            "db_backends_cpu_s_per_10k": backends.map(|value| round(value, 3)),
            "db_auxiliary_cpu_s_per_10k": auxiliary.map(|value| round(value, 3)),
            "cores": round(self.cores(duration), 2),
            "load_average": round(self.spent.load, 2),
            "failed": self.runs.failed(),
            "acknowledged": self.runs.acknowledged(),
            "kept": self.kept,
        })
    }
}

struct Report {
    options: Options,
    machine: Machine,
    baseline: Option<Measured>,
    hookgate: Vec<(Backend, Measured)>,
    /// Backends left out, and why.
    skipped: Vec<String>,
}

impl Report {
    /// Every measured server, by its name in the report.
    fn servers(&self) -> impl Iterator<Item = (String, &Measured)> {
        let baseline = self.baseline.iter().map(|measured| ("baseline".to_owned(), measured));
        baseline.chain(self.hookgate.iter().map(|(backend, measured)| (backend.name(), measured)))
    }

    /// What makes the bench fail: failed requests, and a server that kept
    /// other than what it acknowledged.
    fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for (name, measured) in self.servers() {
            for (run, counts) in [("probe", Some(&measured.runs.probe)), ("warm-up", measured.runs.warmup.as_ref())]
                .into_iter()
                .chain([("measured run", Some(&measured.runs.measured))])
            {
                if let Some(counts) = counts.filter(|counts| counts.failed() > 0) {
                    failures.push(format!("{name}, {run}: {}", counts.failure_text()));
                }
            }
            let acknowledged = measured.runs.acknowledged();
            if measured.kept != acknowledged {
                let kept = match name.as_str() {
                    "baseline" => "posts it counted as answered",
                    _ => "events in its store",
                };
                failures.push(format!(
                    "{name} acknowledged {acknowledged} post(s) to wrk but has {} {kept} ({:+}): \
                     what was acknowledged must be exactly what was kept",
                    measured.kept,
                    measured.kept as i128 - acknowledged as i128,
                ));
            }
        }
        failures
    }

    fn print(&self) {
        let options = &self.options;
        println!();
        println!(
            "ingest bench: scenario {}, wrk with {} connections over {} threads (HTTP/1.1 keep-alive, closed loop), \
             {:.1} s warm-up, {:.1} s measured per server, {} build",
            options.scenario.name(),
            options.connections,
            options.threads,
            options.warmup.as_secs_f64(),
            options.duration.as_secs_f64(),
            build_profile(),
        );
        println!("machine: {}", self.machine.describe());
        println!("hookgate binary: {}", machine::hookgate_binary().to_string_lossy());
        for skipped in &self.skipped {
            println!("{skipped}");
        }
        println!();
        println!(
            "{:<11} {:>5} {:>9} {:>10} {:>6} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>6} {:>5} {:>6} {:>9} {:>9}",
            "server",
            "nodes",
            "requests",
            "req/s",
            "ratio",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "cpu s/10k",
            "db s/10k",
            "aux s/10k",
            "cores",
            "load",
            "failed",
            "acked",
            "kept"
        );
        let baseline_rps = self.baseline.as_ref().map(|baseline| baseline.rps(options.duration));
        let optional = |value: Option<f64>| value.map_or("-".to_owned(), |value| format!("{value:.3}"));
        for (name, measured) in self.servers() {
            let counts = &measured.runs.measured;
            let rps = measured.rps(options.duration);
            let (server, backends, auxiliary) = measured.cpu_per_10k();
            println!(
                "{:<11} {:>5} {:>9} {:>10.1} {:>6} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>8.3} {:>8} {:>8} {:>6.2} {:>5.2} {:>6} {:>9} {:>9}",
                name,
                measured.nodes,
                counts.acknowledged(),
                rps,
                optional(baseline_rps.map(|baseline| rps / baseline)),
                millis(counts.p50_us),
                millis(counts.p90_us),
                millis(counts.p99_us),
                millis(counts.max_us),
                server,
                optional(backends),
                optional(auxiliary),
                measured.cores(options.duration),
                measured.spent.load,
                measured.runs.failed(),
                measured.runs.acknowledged(),
                measured.kept,
            );
        }
        println!(
            "(ratio: req/s over the baseline's; cpu s/10k: CPU seconds (user + system) of the server's processes,"
        );
        println!(" all nodes together, per 10,000 acknowledged requests of the measured run; db s/10k: the PostgreSQL");
        println!(
            " processes serving those nodes; aux s/10k: PostgreSQL's WAL writer, checkpointer and other auxiliary"
        );
        println!(" processes, shared with whatever else uses the server; cores: the server's CPU time over the run's");
        println!(" seconds; load: the load average as the run started; acked: successful replies over the probe,");
        println!(" warm-up and measured run; kept: the posts the baseline counted, or the events in hookgate's store");
        println!(" after its nodes were killed)");
        println!();

        let mut rps_ratios = serde_json::Map::new();
        for (backend, hookgate) in &self.hookgate {
            let name = backend.name();
            if let Some(baseline) = &self.baseline {
                let ratio = hookgate.rps(options.duration) / baseline.rps(options.duration);
                rps_ratios.insert(name.clone(), json!(round(ratio, 4)));
                println!(
                    "hookgate on {name} / baseline req/s: {ratio:.3} (target >= {TARGET_RPS_RATIO:.2}: {})",
                    met(ratio >= TARGET_RPS_RATIO)
                );
            }
            let p99 = hookgate.runs.measured.p99_us;
            let target_micros = TARGET_P99.as_micros() as u64;
            println!(
                "hookgate on {name} p99: {:.2} ms (target < {:.0} ms: {})",
                millis(p99),
                millis(target_micros),
                met(p99 < target_micros)
            );
        }
        let failures = self.failures();
        match failures.is_empty() {
            true => println!("every acknowledged post was kept, and nothing more; no request failed"),
            false => failures.iter().for_each(|failure| println!("FAILED: {failure}")),
        }

        let hookgate: serde_json::Map<String, Value> = self
            .hookgate
            .iter()
            .map(|(backend, measured)| (backend.name(), measured.to_json(options.duration)))
            .collect();
        let line = json!({
            "scenario": options.scenario.name(),
            "connections": options.connections,
            "threads": options.threads,
            "generator": "wrk",
            "cores": self.machine.cores,
            "fsync_median_ms": round(self.machine.fsync.0.as_secs_f64() * 1000.0, 3),
            "baseline": self.baseline.as_ref().map_or(Value::Null, |measured| measured.to_json(options.duration)),
            "hookgate": hookgate,
            "rps_ratio": rps_ratios,
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

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
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

impl ChildServer {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server and waits for it to exit; a second call does nothing.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill();
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

    /// How many posts the baseline answered, by its own count.
    async fn answered(&self, target: &Target) -> anyhow::Result<u64> {
        let (status, body) = one_request(target.address, target.get(BASELINE_COUNT_PATH)?).await?;
        ensure!(status == StatusCode::OK, "GET {BASELINE_COUNT_PATH} answered {status}");
        let count: Value = serde_json::from_slice(&body)?;
        count["answered"].as_u64().ok_or_else(|| anyhow!("GET {BASELINE_COUNT_PATH} answered {count}"))
    }
}

/// Where hookgate's nodes keep their events.
enum Database<'a> {
    /// A fresh SQLite file in hookgate's temporary directory.
    Sqlite,
    /// A fresh schema of the PostgreSQL server.
    Postgres(&'a postgres::BenchSchema),
}

/// The real hookgate in a temporary directory, with one hook definition: one node, or several
/// on one PostgreSQL schema (each in a directory of its own, loading the same definitions).
struct Hookgate {
    // Fields drop in order: the nodes are killed before their directory goes.
    nodes: Vec<ChildServer>,
    admin_token: String,
    sqlite_file: PathBuf,
    _directory: tempfile::TempDir,
}

impl Hookgate {
    fn start(scenario: Scenario, database: &Database<'_>, nodes: usize) -> anyhow::Result<Hookgate> {
        let directory = tempfile::Builder::new()
            .prefix("hookgate-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let definitions = directory.path().join("defs");
        std::fs::create_dir_all(&definitions)?;
        write_json(&definitions.join("bench.json"), &scenario.definitions())?;
        let admin_token = hex::encode(rand::random::<[u8; 24]>());
        std::fs::create_dir_all(directory.path().join("data"))?;
        let sqlite_file = directory.path().join("data").join("hookgate.db");
        let database_arg: OsString = match database {
            Database::Sqlite => sqlite_file.clone().into(),
            Database::Postgres(schema) => schema.url.clone().into(),
        };

        let mut started = Vec::with_capacity(nodes);
        for node in 0..nodes {
            let home = directory.path().join(format!("node-{node}"));
            std::fs::create_dir_all(home.join("data"))?;
            let mut command = Command::new(machine::hookgate_binary());
            command
                .arg("serve")
                .arg("--http")
                .arg("127.0.0.1:0")
                .arg("--smtp")
                .arg("127.0.0.1:0")
                .arg("--database")
                .arg(&database_arg)
                .arg("--definitions")
                .arg(&definitions)
                .current_dir(&home)
                .stdin(Stdio::null())
                .env("HOOKGATE_ADMIN_TOKEN", &admin_token)
                // The load comes from one address: per-client rates would measure the limit.
                .env("HOOKGATE_CLIENT_REQUESTS_PER_SECOND", "0")
                .env("HOOKGATE_MAX_CONNECTIONS_PER_CLIENT", "4096")
                .env("HOOKGATE_SECRETS_KEY", backend::SECRETS_KEY)
                .env("BENCH_STRIPE_SECRET", BENCH_STRIPE_SECRET)
                .env("RUST_LOG", "warn");
            // The bench's own variables are not hookgate configuration.
            for name in bench_variables() {
                command.env_remove(name);
            }
            started.push(ChildServer::spawn("hookgate", command, HOOKGATE_LISTENING)?);
        }
        Ok(Hookgate { nodes: started, admin_token, sqlite_file, _directory: directory })
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(ChildServer::pid).collect()
    }

    /// Waits for every node to listen and list the scenario's hook; returns the hook's URL on
    /// each node, which must all have the same path (one store, one hook token).
    async fn targets(&mut self, scenario: Scenario) -> anyhow::Result<Vec<Target>> {
        let mut targets = Vec::with_capacity(self.nodes.len());
        for node in 0..self.nodes.len() {
            let target = self.target(node, scenario).await?;
            if let Some(first) = targets.first() {
                let first: &Target = first;
                ensure!(
                    first.path == target.path,
                    "the nodes list the hook at different paths: {} and {}",
                    first.path,
                    target.path
                );
            }
            targets.push(target);
        }
        Ok(targets)
    }

    /// Waits for node `node` to listen, then asks it for the scenario's hook URL
    /// and aims at that URL's path on the address the node announced.
    async fn target(&mut self, node: usize, scenario: Scenario) -> anyhow::Result<Target> {
        let base = self.nodes[node].base_url().await?;
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
        let mut request = api.get(&api.path.to_string())?;
        request.headers_mut().insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", self.admin_token))?);
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

    /// Kills every node, then counts the events in the store: only what was committed survives
    /// a kill.
    async fn stored_events(mut self, database: &Database<'_>) -> anyhow::Result<u64> {
        for node in &mut self.nodes {
            node.kill();
        }
        match database {
            Database::Sqlite => {
                let file = rusqlite::Connection::open(&self.sqlite_file)
                    .with_context(|| format!("cannot open {}", self.sqlite_file.display()))?;
                let count: i64 = file.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
                Ok(u64::try_from(count)?)
            }
            Database::Postgres(schema) => schema.count("events").await,
        }
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
        let answered = Arc::new(AtomicU64::new(0));
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
            let answered = answered.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| baseline_reply(request, answered.clone()));
                // Connections closed by the client end here; nothing to report.
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

/// Reads the whole body of a post and answers 202 with a fresh event id; a
/// `GET /count` answers how many posts were answered so far.
async fn baseline_reply(
    request: Request<Incoming>,
    answered: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if request.method() == Method::GET && request.uri().path() == BASELINE_COUNT_PATH {
        let count = answered.load(Ordering::SeqCst);
        return Ok(json_reply(StatusCode::OK, format!(r#"{{"answered":{count}}}"#)));
    }
    request.into_body().collect().await?;
    let id = answered.fetch_add(1, Ordering::SeqCst);
    Ok(json_reply(StatusCode::ACCEPTED, format!(r#"{{"id":"evt_{id:016x}"}}"#)))
}

fn json_reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
