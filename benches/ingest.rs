//! Ingest benchmark: how many small webhook posts per second hookgate commits,
//! and how long each one waits, next to a bare-hyper server measured in the
//! same run on the same machine, both loaded by wrk from outside.
//!
//! # What it measures
//!
//! Three processes besides this one, so that no server shares a process or a
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
//!   under `cargo bench`), started with `serve` on a fresh SQLite database in a
//!   temporary directory and one hook definition file. Its reply waits for the
//!   durable commit of the event.
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
//! # What it checks
//!
//! After both servers have been measured, what each kept is compared with what
//! wrk counted as acknowledged over the probe, the warm-up and the measured run:
//! the baseline's count of answered posts, and the events in hookgate's store
//! (hookgate is killed first, so only committed events count, and the database
//! is read with SQLite). Any difference, any failed request, and any request
//! wrk sent but never saw answered fail the bench.
//!
//! # How to run it
//!
//! ```text
//! apt-get install wrk
//! cargo bench --bench ingest
//! cargo bench --bench ingest -- --duration 30 --connections 128
//! HOOKGATE_BENCH_DURATION=30 cargo bench --bench ingest
//! cargo bench --bench ingest -- --only baseline
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
//!
//! Without `--bench` (that is, when `cargo test --benches` or
//! `cargo test --all-targets` runs this file) it is a smoke test: the duration
//! defaults to 1 s and the warm-up to 0 s, so the whole path is exercised
//! quickly.
//!
//! # Output and exit status
//!
//! Progress and wrk's own reports go to stderr. Stdout gets a table, the ratios
//! against the targets stated in the issue (hookgate at least 30% of the
//! baseline's requests per second, hookgate p99 under 10 ms), the store check,
//! and as its last line one JSON object to compare later runs with:
//! `{"scenario":"form_json","connections":64,...,"baseline":{...},"hookgate":{...},"rps_ratio":...}`.
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
  --help             print this

Needs wrk (apt-get install wrk).";

#[derive(Debug, Clone)]
struct Options {
    duration: Duration,
    warmup: Duration,
    connections: usize,
    threads: usize,
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
            threads: std::thread::available_parallelism().map_or(2, |cores| cores.get()),
            scenario: Scenario::FormJson,
            servers: Servers::Both,
            mode,
        };

        for (name, var_name) in [
            ("--duration", "HOOKGATE_BENCH_DURATION"),
            ("--warmup", "HOOKGATE_BENCH_WARMUP"),
            ("--connections", "HOOKGATE_BENCH_CONNECTIONS"),
            ("--threads", "HOOKGATE_BENCH_THREADS"),
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

/// Starts the servers, measures them in turn, compares what each kept with
/// what it acknowledged, and prints the report. The servers are killed when
/// this returns or is dropped.
async fn bench(options: &Options) -> anyhow::Result<Report> {
    let scenario = options.scenario;
    if options.mode == Mode::Smoke {
        eprintln!("smoke run (no --bench): short defaults, figures are not comparable");
    }
    check_wrk().await?;

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
        "scenario {}, {} connections over {} wrk threads, {:.1} s warm-up, {:.1} s measured per server",
        scenario.name(),
        options.connections,
        options.threads,
        options.warmup.as_secs_f64(),
        options.duration.as_secs_f64(),
    );
    let mut report = Report { options: options.clone(), baseline: None, hookgate: None };
    let baseline_runs = match &baseline_target {
        Some(target) => Some(measure("baseline", target, options).await.context("measuring the baseline")?),
        None => None,
    };
    let hookgate_runs = match &hookgate_target {
        Some(target) => Some(measure("hookgate", target, options).await.context("measuring hookgate")?),
        None => None,
    };

    if let (Some(runs), Some(server), Some(target)) = (baseline_runs, &baseline, &baseline_target) {
        let kept = server.answered(target).await.context("asking the baseline how many posts it answered")?;
        report.baseline = Some(Measured { runs, kept });
    }
    if let (Some(runs), Some(server)) = (hookgate_runs, hookgate.take()) {
        let kept = server.stored_events().context("counting the events in hookgate's store")?;
        report.hookgate = Some(Measured { runs, kept });
    }
    drop(baseline);

    report.print();
    Ok(report)
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

/// Runs wrk once against `target` and reads the script's counts.
async fn wrk(target: &Target, options: &Options, run: Run) -> anyhow::Result<(Counts, Option<String>)> {
    let (connections, threads, seconds, wrk_seconds) = match run {
        // One request; wrk's shortest run is a second.
        Run::Probe => (1, 1, 1.0, 1),
        Run::Warmup | Run::Measure => {
            let seconds = if run == Run::Warmup { options.warmup } else { options.duration };
            (options.connections, options.threads, seconds.as_secs_f64(), (seconds + GRACE).as_secs_f64().ceil() as u64)
        }
    };
    let output = tokio::process::Command::new("wrk")
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
        .arg(&target.url)
        .arg("--")
        .arg(options.scenario.name())
        .arg(run.name())
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run wrk")?;
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

/// The probe, the warm-up (unless it is 0 s) and the measured run against `target`.
async fn measure(name: &str, target: &Target, options: &Options) -> anyhow::Result<Runs> {
    eprintln!("measuring {name} at {}", target.url);
    let (probe, reply) = wrk(target, options, Run::Probe).await?;
    ensure!(
        probe.sent == 1 && probe.acknowledged() == 1 && probe.failed() == 0,
        "the probe POST to {} was not acknowledged: reply {}; {}",
        target.url,
        reply.as_deref().unwrap_or("none"),
        probe.failure_text()
    );
    let warmup = match options.warmup.is_zero() {
        true => None,
        false => Some(wrk(target, options, Run::Warmup).await?.0),
    };
    let (measured, _) = wrk(target, options, Run::Measure).await?;
    Ok(Runs { probe, warmup, measured })
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

/// A server's runs, and what it kept: the posts the baseline counted, or the
/// events in hookgate's store.
#[derive(Debug)]
struct Measured {
    runs: Runs,
    kept: u64,
}

impl Measured {
    fn rps(&self, duration: Duration) -> f64 {
        self.runs.measured.acknowledged() as f64 / duration.as_secs_f64()
    }

    fn to_json(&self, duration: Duration) -> Value {
        let measured = &self.runs.measured;
        json!({
            "requests": measured.acknowledged(),
            "rps": round(self.rps(duration), 1),
            "p50_us": measured.p50_us,
            "p90_us": measured.p90_us,
            "p99_us": measured.p99_us,
            "max_us": measured.max_us,
            "mean_us": round(measured.mean_us, 1),
            "failed": self.runs.failed(),
            "acknowledged": self.runs.acknowledged(),
            "kept": self.kept,
        })
    }
}

struct Report {
    options: Options,
    baseline: Option<Measured>,
    hookgate: Option<Measured>,
}

impl Report {
    fn servers(&self) -> impl Iterator<Item = (&'static str, &Measured)> {
        [("baseline", self.baseline.as_ref()), ("hookgate", self.hookgate.as_ref())]
            .into_iter()
            .filter_map(|(name, measured)| Some((name, measured?)))
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
                let kept = match name {
                    "hookgate" => "events in its store",
                    _ => "posts it counted as answered",
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
        println!();
        println!(
            "{:<10} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>8} {:>12} {:>12}",
            "server", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "failed", "acknowledged", "kept"
        );
        for (name, measured) in self.servers() {
            let counts = &measured.runs.measured;
            println!(
                "{:<10} {:>10} {:>11.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>12} {:>12}",
                name,
                counts.acknowledged(),
                measured.rps(options.duration),
                millis(counts.p50_us),
                millis(counts.p90_us),
                millis(counts.p99_us),
                millis(counts.max_us),
                measured.runs.failed(),
                measured.runs.acknowledged(),
                measured.kept,
            );
        }
        println!("(acknowledged: successful replies over the probe, warm-up and measured run; kept: the posts the");
        println!(" baseline counted, the events in hookgate's store after it was killed)");
        println!();

        let both = self.baseline.as_ref().zip(self.hookgate.as_ref());
        let rps_ratio =
            both.map(|(baseline, hookgate)| hookgate.rps(options.duration) / baseline.rps(options.duration));
        let p99_ratio = both.map(|(baseline, hookgate)| {
            hookgate.runs.measured.p99_us as f64 / baseline.runs.measured.p99_us.max(1) as f64
        });
        if let Some(ratio) = rps_ratio {
            println!(
                "hookgate / baseline req/s: {ratio:.3} (target >= {TARGET_RPS_RATIO:.2}: {})",
                met(ratio >= TARGET_RPS_RATIO)
            );
        }
        if let Some(hookgate) = &self.hookgate {
            let p99 = hookgate.runs.measured.p99_us;
            let versus = match (&self.baseline, p99_ratio) {
                (Some(baseline), Some(ratio)) => {
                    format!(" vs baseline {:.2} ms ({ratio:.1}x)", millis(baseline.runs.measured.p99_us))
                }
                _ => String::new(),
            };
            let target_micros = TARGET_P99.as_micros() as u64;
            println!(
                "hookgate p99: {:.2} ms{versus} (target < {:.0} ms: {})",
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

        let server_json = |measured: &Option<Measured>| {
            measured.as_ref().map_or(Value::Null, |measured| measured.to_json(options.duration))
        };
        let line = json!({
            "scenario": options.scenario.name(),
            "connections": options.connections,
            "threads": options.threads,
            "generator": "wrk",
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

/// The real hookgate in a temporary directory, with one hook definition.
struct Hookgate {
    // Fields drop in order: the server is killed before its directory goes.
    server: ChildServer,
    admin_token: String,
    database: PathBuf,
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
        let database = data.join("hookgate.db");

        let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
        command
            .arg("serve")
            .arg("--http")
            .arg("127.0.0.1:0")
            .arg("--smtp")
            .arg("127.0.0.1:0")
            .arg("--database")
            .arg(&database)
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
        Ok(Hookgate { server, admin_token, database, _directory: directory })
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

    /// Kills hookgate, then counts the events in its database: only what was
    /// committed survives a kill.
    fn stored_events(mut self) -> anyhow::Result<u64> {
        self.server.kill();
        let database = rusqlite::Connection::open(&self.database)
            .with_context(|| format!("cannot open {}", self.database.display()))?;
        let count: i64 = database.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
        Ok(u64::try_from(count)?)
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
