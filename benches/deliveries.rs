//! Delivery benchmark: signed deliveries per second to a local receiver, and ingest-to-delivery
//! latency at a steady load, on each of hookgate's stores (SQLite; PostgreSQL with one node;
//! PostgreSQL with two nodes on one database), with a baseline measured in the same run and the
//! CPU time each store's drain cost.
//!
//! # What it measures
//!
//! A receiver (hyper via axum, answering 200) counts deliveries and notes when each `webhook-id`
//! first arrived. It runs in this process, for the arrival times, but on a runtime and threads of
//! its own, so it never waits behind the load this process generates. The baseline is this
//! process posting `--events` signed requests to the receiver, 64 at a time: the ceiling of the
//! receiver and loopback. Then, for each backend of `--backends` in turn, the real binary
//! (release build) on a fresh store, with one subscription (`*`) to the receiver:
//!
//! - `sqlite`: one node on a fresh SQLite file;
//! - `postgres`: one node on a fresh schema of the server named by `HOOKGATE_BENCH_POSTGRES_URL`;
//! - `postgres-2`: two nodes on one fresh schema. The subscription is made on the first node
//!   before the second starts (so both route to it from their first event); posts alternate
//!   between the nodes, and both nodes' workers claim from the one outbox.
//!
//! Each store is measured three times in the same run: `plain`, the subscription as above;
//! `transform`, the same subscription with a trivial JavaScript transformation ([`TRIVIAL`]: it
//! marks the event and returns it); and `ordered`, the subscription ordering its deliveries per
//! key (`ordering: {"key": "$.data.key"}`) over events spread across [`ORDERED_KEYS`] (100) keys,
//! so that each key's deliveries go one at a time. What each costs is read as the ratio of its
//! row to `plain` (`--variants plain,ordered` measures those two).
//!
//! Each node delivers with a concurrency of 64 divided by the number of nodes, so the receiver
//! never has more requests in flight from hookgate than from the baseline. Without
//! `HOOKGATE_BENCH_POSTGRES_URL` the PostgreSQL backends are skipped, saying so (named in
//! `--backends`, they are an error instead); each schema is dropped after its run.
//!
//! - **throughput**: the subscription is paused, `--events` events are posted (their deliveries
//!   wait in the outbox), then it is resumed: deliveries per second is the count over the time
//!   from the resume until the history shows none pending (every attempt recorded). The bench asks
//!   for the pending count every 5 ms once the receiver has seen every delivery, and only every
//!   250 ms before, so that its own questions cost the nodes and the database little of the
//!   drain's CPU time.
//! - **CPU**: `utime + stime` of the nodes' processes over that drain (from `/proc/<pid>/stat`),
//!   per 10,000 deliveries; for PostgreSQL also the server processes serving the nodes (by the
//!   `application_name` the nodes' URL sets) and, apart, the server's auxiliary processes (WAL
//!   writer, checkpointer, ...), which serve everyone on that server.
//! - **latency**: `--rate` events per second are posted for `--duration` seconds on an open
//!   loop; each event's latency is from the moment its post was sent to its delivery's arrival,
//!   so a delivery that arrives before the post's `202` counts its true, positive latency. An
//!   event not delivered once the history shows none pending (or a minute after the last post)
//!   counts with the latency it had then (so it weighs on the percentiles), and is reported as
//!   undelivered, which fails the run.
//!
//! # What it checks
//!
//! Every post that was not answered `202`, every baseline request not answered 2xx, and every
//! event not delivered fails the run (exit status 1). At the end of each backend's run its nodes
//! are killed and its store read: the events in the store must be exactly the posts it
//! acknowledged, and the deliveries recorded delivered exactly those events, which must also be
//! exactly the distinct deliveries the receiver saw; for the baseline, the receiver must have
//! seen exactly the requests it acknowledged.
//!
//! ```text
//! cargo bench --bench deliveries
//! HOOKGATE_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench deliveries
//! cargo bench --bench deliveries -- --events 20000 --rate 1000 --duration 10 --backends sqlite,postgres-2
//! cargo bench --bench deliveries -- --backends sqlite --variants plain,transform,ordered
//! ```
//!
//! `HOOKGATE_BENCH_BINARY` names another hookgate binary to measure instead of this build's (to
//! compare two builds in turn). Stdout ends with a table (a row per store) and one JSON line with the same figures.

#[path = "support/backend.rs"]
mod backend;
#[path = "support/machine.rs"]
mod machine;
#[path = "support/postgres.rs"]
mod postgres;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend::Backend;
use machine::CpuSample;

const ADMIN: &str = "bench-admin-token-0123456789";
/// Requests in flight to the receiver: the baseline's, and all of hookgate's nodes' together.
const CONCURRENCY: usize = 64;
/// How long after the last post of the steady phase a delivery may still arrive.
const DELIVERY_WAIT: Duration = Duration::from_secs(60);
/// How long the backlog may take to be delivered.
const BACKLOG_WAIT: Duration = Duration::from_secs(300);
/// How often the drain asks for the pending count while deliveries are still arriving.
const PENDING_POLL_WHILE_ARRIVING: Duration = Duration::from_millis(250);
/// The `transform` variant's subscription transformation: as little as a transformation does.
const TRIVIAL: &str = "function transform(event) { event.data.transformed = true; return event; }";

/// How the subscription is set up: plain, or with [`TRIVIAL`] as its transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    Transform,
    /// The subscription orders its deliveries by a key (`ordering: {"key": "$.data.key"}`), each
    /// event carrying one of [`ORDERED_KEYS`] keys, so each key's deliveries go one at a time.
    Ordered,
}

/// How many keys the ordered variant's events are spread over.
const ORDERED_KEYS: u64 = 100;

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Transform => "transform",
            Variant::Ordered => "ordered",
        }
    }

    fn parse_list(list: &str) -> Vec<Variant> {
        list.split(',')
            .map(|name| match name.trim() {
                "plain" => Variant::Plain,
                "transform" => Variant::Transform,
                "ordered" => Variant::Ordered,
                other => panic!("--variants: unknown variant {other:?} (plain, transform, ordered)"),
            })
            .collect()
    }
}

struct Options {
    events: usize,
    rate: u64,
    duration: u64,
    backends: Vec<Backend>,
    variants: Vec<Variant>,
    /// Whether `--backends` was given (a missing PostgreSQL URL is then an error, not a skip).
    backends_asked: bool,
}

fn options() -> Options {
    let mut options = Options {
        events: 20_000,
        rate: 1_000,
        duration: 10,
        backends: Backend::DEFAULT.to_vec(),
        variants: vec![Variant::Plain, Variant::Transform, Variant::Ordered],
        backends_asked: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = || args.next().and_then(|v| v.parse::<u64>().ok()).expect("a number after the flag");
        match arg.as_str() {
            "--events" => options.events = number() as usize,
            "--rate" => options.rate = number(),
            "--duration" => options.duration = number(),
            "--variants" => options.variants = Variant::parse_list(&args.next().expect("a list after --variants")),
            "--backends" => {
                let list = args.next().expect("a list of backends after --backends");
                options.backends = Backend::parse_list(&list).unwrap_or_else(|error| panic!("--backends: {error}"));
                options.backends_asked = true;
            }
            _ => {}
        }
    }
    options
}

/// Deliveries seen by the receiver.
#[derive(Default)]
struct Seen {
    /// Every request, duplicates included.
    count: AtomicU64,
    /// `webhook-id` -> first arrival.
    arrivals: Mutex<HashMap<String, Instant>>,
}

impl Seen {
    fn distinct(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    fn clear(&self) {
        self.count.store(0, Ordering::SeqCst);
        self.arrivals.lock().unwrap().clear();
    }
}

/// Starts the receiver on a runtime of its own (two worker threads); returns its URL and the
/// runtime, which serves until dropped.
fn start_receiver(seen: Arc<Seen>) -> (String, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("receiver")
        .enable_all()
        .build()
        .expect("the receiver's runtime starts");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, _body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let now = Instant::now();
                seen.count.fetch_add(1, Ordering::SeqCst);
                if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                    seen.arrivals.lock().unwrap().entry(id.to_owned()).or_insert(now);
                }
                "ok"
            }
        }),
    );
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, app).await.unwrap()
    });
    (url, runtime)
}

/// Where the nodes keep their events.
enum Database<'a> {
    /// A fresh SQLite file in the gateway's temporary directory.
    Sqlite,
    /// A fresh schema of the PostgreSQL server.
    Postgres(&'a postgres::BenchSchema),
}

/// hookgate's nodes (running processes) on one store, in a temporary directory; killed when dropped.
struct Gateway {
    nodes: Vec<Child>,
    definitions: PathBuf,
    database: std::ffi::OsString,
    /// Deliveries each node has in flight at most.
    concurrency: usize,
    sqlite_file: PathBuf,
    directory: tempfile::TempDir,
}

impl Gateway {
    /// A gateway with no node running yet.
    fn new(database: &Database<'_>, concurrency: usize) -> Gateway {
        let directory = tempfile::tempdir().unwrap();
        let definitions = directory.path().join("defs");
        std::fs::create_dir_all(&definitions).unwrap();
        std::fs::write(
            definitions.join("bench.json"),
            r#"{"app": "bench", "version": "1", "hooks": [{"eventName": "kustomer.app.bench.order", "type": "form"}]}"#,
        )
        .unwrap();
        let sqlite_file = directory.path().join("hookgate.db");
        let database = match database {
            Database::Sqlite => sqlite_file.clone().into(),
            Database::Postgres(schema) => schema.url.clone().into(),
        };
        Gateway { nodes: Vec::new(), definitions, database, concurrency, sqlite_file, directory }
    }

    /// Starts one more node and waits until it listens; returns its base URL.
    fn start_node(&mut self) -> String {
        let home = self.directory.path().join(format!("node-{}", self.nodes.len()));
        std::fs::create_dir_all(&home).unwrap();
        let mut child = Command::new(machine::hookgate_binary())
            .args(["serve", "--http", "127.0.0.1:0", "--smtp", "127.0.0.1:0"])
            .arg("--definitions")
            .arg(&self.definitions)
            .arg("--database")
            .arg(&self.database)
            .current_dir(&home)
            .env("HOOKGATE_ADMIN_TOKEN", ADMIN)
            // The load comes from one address: per-client rates would measure the limit.
            .env("HOOKGATE_CLIENT_REQUESTS_PER_SECOND", "0")
            .env("HOOKGATE_SECRETS_KEY", backend::SECRETS_KEY)
            .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
            .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
            .env("HOOKGATE_DELIVERY_CONCURRENCY", self.concurrency.to_string())
            .env("HOOKGATE_DELIVERY_CONCURRENCY_PER_SUBSCRIPTION", self.concurrency.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("hookgate starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let base = loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("hookgate exited before saying where it listens");
            }
            if let Some(base) = line.trim().strip_prefix("hookgate: http listening on ") {
                break base.to_owned();
            }
        };
        // The rest of its output is not read: keep the pipe from filling.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        self.nodes.push(child);
        base.to_owned()
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(Child::id).collect()
    }

    fn kill(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }

    /// Kills every node, then reads the store: the events, and the deliveries by status. Only
    /// what was committed survives a kill.
    async fn stop_and_count(&mut self, database: &Database<'_>) -> anyhow::Result<Stored> {
        self.kill();
        match database {
            Database::Sqlite => {
                let file = rusqlite::Connection::open(&self.sqlite_file)?;
                let events: i64 = file.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
                let mut statement = file.prepare("SELECT status, count(*) FROM deliveries GROUP BY status")?;
                let deliveries = statement
                    .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?
                    .collect::<rusqlite::Result<HashMap<String, i64>>>()?;
                Ok(Stored { events: events as u64, deliveries })
            }
            Database::Postgres(schema) => {
                Ok(Stored { events: schema.count("events").await?, deliveries: schema.deliveries_by_status().await? })
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What hookgate's store held after the run.
struct Stored {
    events: u64,
    /// Deliveries by status (`pending`, `delivered`, `failed`).
    deliveries: HashMap<String, i64>,
}

/// How many deliveries the history at `url` (a `?status=pending` page) shows pending.
async fn pending(client: &reqwest::Client, url: &str) -> u64 {
    let page: serde_json::Value = client.get(url).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    page["total"].as_u64().unwrap_or_else(|| panic!("GET {url} answered no total: {page}"))
}

/// Runs `job(n)` for every `n` below `total`, `CONCURRENCY` at a time.
async fn in_parallel<F, Fut>(total: u64, job: F)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, job) = (next.clone(), job.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    job(n).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = options();
    let seen = Arc::new(Seen::default());
    // Started (and, at the end, dropped) outside the load's runtime.
    let (receiver, receiver_runtime) = start_receiver(seen.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let failures = runtime.block_on(run(options, receiver, seen));
    drop(runtime);
    drop(receiver_runtime);
    for failure in &failures {
        eprintln!("error: {failure}");
    }
    match failures.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

/// An event's body in a run: `{field: n}`, with its ordering key in the ordered variant.
fn event_body(field: &str, n: u64, variant: Variant) -> serde_json::Value {
    let mut body = serde_json::json!({ field: n });
    if variant == Variant::Ordered {
        body["key"] = serde_json::json!(format!("k{}", n % ORDERED_KEYS));
    }
    body
}

/// One backend's figures.
struct Measured {
    backend: Backend,
    variant: Variant,
    /// Deliveries of the backlog per second, and the drain's length.
    throughput: f64,
    drained: Duration,
    delivered: u64,
    /// CPU time over the drain: the nodes', and PostgreSQL's (backends, auxiliary processes).
    cpu: Duration,
    database_cpu: Option<(Duration, Duration)>,
    load: f64,
    /// Ingest-to-delivery latency at the steady rate, in milliseconds: p50, p99, max.
    latency: (f64, f64, f64),
}

impl Measured {
    fn cpu_per_10k(&self) -> (f64, Option<f64>, Option<f64>) {
        let (backends, auxiliary) = self.database_cpu.unzip();
        (
            machine::per_10k(self.cpu, self.delivered),
            backends.map(|spent| machine::per_10k(spent, self.delivered)),
            auxiliary.map(|spent| machine::per_10k(spent, self.delivered)),
        )
    }

    fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.drained.as_secs_f64()
    }
}

/// Runs the bench; returns what failed.
async fn run(options: Options, receiver: String, seen: Arc<Seen>) -> Vec<String> {
    let mut failures = Vec::new();
    let postgres_server = postgres::server_url();
    let (backends, skipped) =
        match backend::available(&options.backends, options.backends_asked, postgres_server.as_deref()) {
            Ok(available) => available,
            Err(error) => return vec![error.to_string()],
        };
    skipped.iter().for_each(|skipped| println!("{skipped}"));
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY).build().unwrap();
    let fsync = tempfile::tempdir().and_then(|directory| machine::fsync_time(directory.path(), 200));
    println!(
        "machine: {} cores, load average {:.2}, 4 KiB write + fdatasync {}",
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
        machine::load_average(),
        match fsync {
            Ok((median, slowest)) => format!(
                "{:.2} ms median ({:.2} ms slowest of 200)",
                median.as_secs_f64() * 1000.0,
                slowest.as_secs_f64() * 1000.0
            ),
            Err(error) => format!("not measured ({error})"),
        }
    );
    println!("hookgate binary: {}", machine::hookgate_binary().to_string_lossy());

    // Baseline: the same number of signed requests straight to the receiver.
    let client_for_jobs = client.clone();
    let body =
        serde_json::to_vec(&serde_json::json!({"type": "kustomer.app.bench.order", "data": {"order": 1}})).unwrap();
    let baseline_acknowledged = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (body, signed_receiver, acknowledged) = (Arc::new(body), receiver.clone(), baseline_acknowledged.clone());
    in_parallel(options.events as u64, move |n| {
        let (client, receiver, body, acknowledged) =
            (client_for_jobs.clone(), signed_receiver.clone(), body.clone(), acknowledged.clone());
        async move {
            let timestamp = jiff::Timestamp::now().as_second();
            let signature = hookgate::deliver::sign::signature(
                &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
                "base",
                timestamp,
                &body,
            );
            let response = client
                .post(&receiver)
                .header("content-type", "application/json")
                .header("webhook-id", format!("base_{n}"))
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body.to_vec())
                .send()
                .await;
            if response.is_ok_and(|response| response.status().is_success()) {
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .await;
    let baseline = options.events as f64 / started.elapsed().as_secs_f64();
    let baseline_acknowledged = baseline_acknowledged.load(Ordering::SeqCst);
    println!(
        "baseline: {baseline:.0} signed requests/s straight to the receiver ({} requests, {CONCURRENCY} at once; \
         {baseline_acknowledged} acknowledged, {} seen by the receiver)",
        options.events,
        seen.distinct()
    );
    if baseline_acknowledged != options.events as u64 {
        failures.push(format!(
            "baseline: {} of {} requests were not answered 2xx",
            options.events as u64 - baseline_acknowledged,
            options.events
        ));
    }
    if seen.distinct() as u64 != baseline_acknowledged {
        failures.push(format!(
            "baseline: the receiver saw {} distinct requests but {baseline_acknowledged} were acknowledged",
            seen.distinct()
        ));
    }
    seen.clear();

    let mut measured = Vec::new();
    let runs = backends.into_iter().flat_map(|backend| options.variants.iter().map(move |variant| (backend, *variant)));
    for (backend, variant) in runs {
        let schema = match backend {
            Backend::Sqlite => None,
            Backend::Postgres { .. } => {
                let server = postgres_server.as_deref().expect("available only with a server");
                match postgres::BenchSchema::create(server).await {
                    Ok(schema) => Some(schema),
                    Err(error) => {
                        failures.push(format!("{}: {error:#}", backend.name()));
                        continue;
                    }
                }
            }
        };
        let database = match &schema {
            Some(schema) => Database::Postgres(schema),
            None => Database::Sqlite,
        };
        println!("-- {} {}", backend.name(), variant.name());
        let (figures, failed) =
            run_backend(backend, variant, &database, &options, &client, &receiver, &seen, baseline).await;
        failures.extend(failed.into_iter().map(|failure| format!("{} {}: {failure}", backend.name(), variant.name())));
        measured.push(figures);
        if let Some(schema) = schema {
            let name = schema.name().to_owned();
            match schema.drop().await {
                Ok(()) => eprintln!("dropped the schema {name}"),
                Err(error) => eprintln!("warning: {error:#}"),
            }
        }
        seen.clear();
    }

    print_table(&options, baseline, &measured);
    failures
}

/// The backlog and the steady load on one backend; returns its figures and what failed.
#[allow(clippy::too_many_arguments, reason = "one call, each argument a different part of the run")]
async fn run_backend(
    backend: Backend,
    variant: Variant,
    database: &Database<'_>,
    options: &Options,
    client: &reqwest::Client,
    receiver: &str,
    seen: &Arc<Seen>,
    baseline: f64,
) -> (Measured, Vec<String>) {
    let mut failures = Vec::new();
    let mut gateway = Gateway::new(database, (CONCURRENCY / backend.nodes()).max(1));
    let first = gateway.start_node();
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(ADMIN);
    let subscription: serde_json::Value = admin(client.post(format!("{first}/api/webhooks")))
        .json(&match variant {
            Variant::Plain => serde_json::json!({"url": receiver, "status": "paused"}),
            Variant::Transform => serde_json::json!({"url": receiver, "status": "paused", "transform": TRIVIAL}),
            Variant::Ordered => {
                serde_json::json!({"url": receiver, "status": "paused", "ordering": {"key": "$.data.key"}})
            }
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subscription_url = format!("{first}/api/webhooks/{}", subscription["id"].as_str().unwrap());
    // The other nodes start knowing the subscription, so they route to it from their first event.
    let mut bases = vec![first.clone()];
    for _ in 1..backend.nodes() {
        bases.push(gateway.start_node());
    }
    let hooks: serde_json::Value =
        admin(client.get(format!("{first}/api/hooks"))).send().await.unwrap().json().await.unwrap();
    let hook_url: reqwest::Url = hooks["data"][0]["url"].as_str().unwrap().parse().unwrap();
    // The hook's path on every node; posts take them in turn.
    let hooks: Arc<Vec<String>> = Arc::new(bases.iter().map(|base| format!("{base}{}", hook_url.path())).collect());

    // Throughput: a backlog of deliveries, released at once.
    let backlog_acknowledged = Arc::new(AtomicU64::new(0));
    let (poster, backlog_hooks, acknowledged) = (client.clone(), hooks.clone(), backlog_acknowledged.clone());
    in_parallel(options.events as u64, move |n| {
        let (client, hooks, acknowledged) = (poster.clone(), backlog_hooks.clone(), acknowledged.clone());
        async move {
            let hook = &hooks[n as usize % hooks.len()];
            let response = client.post(hook).json(&event_body("order", n, variant)).send().await;
            if response.is_ok_and(|response| response.status() == 202) {
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .await;
    let backlog_acknowledged = backlog_acknowledged.load(Ordering::SeqCst);
    if backlog_acknowledged != options.events as u64 {
        failures.push(format!(
            "backlog: {} of {} posts were not answered 202",
            options.events as u64 - backlog_acknowledged,
            options.events
        ));
    }
    let pids = gateway.pids();
    let schema = match database {
        Database::Postgres(schema) => Some(*schema),
        Database::Sqlite => None,
    };
    let load = machine::load_average();
    let database_before = match schema {
        Some(schema) => Some(schema.sample().await.expect("the database's CPU time can be read")),
        None => None,
    };
    let cpu_before = CpuSample::of(pids.iter().copied());
    let resumed = Instant::now();
    admin(client.patch(&subscription_url)).json(&serde_json::json!({"status": "active"})).send().await.unwrap();
    // A delivery counts once its history says delivered: the end is when none is pending. A
    // delivery is recorded only after the receiver answered, so by then every one has arrived.
    // Asking costs the nodes and the database a count of the pending rows, which is charged to
    // the drain's CPU time: until every delivery has arrived it is asked only now and then (to
    // see a drain that ends with some missing), then every few milliseconds.
    let pending_url = format!("{subscription_url}/deliveries?status=pending&per_page=1");
    let mut last_asked = Instant::now();
    while resumed.elapsed() < BACKLOG_WAIT {
        let all_arrived = seen.distinct() as u64 >= backlog_acknowledged;
        if all_arrived || last_asked.elapsed() >= PENDING_POLL_WHILE_ARRIVING {
            last_asked = Instant::now();
            if pending(client, &pending_url).await == 0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recorded = resumed.elapsed();
    let cpu = CpuSample::of(pids.iter().copied()).since(&cpu_before);
    let database_cpu = match (schema, &database_before) {
        (Some(schema), Some(before)) => {
            Some(schema.sample().await.expect("the database's CPU time can be read").since(before))
        }
        _ => None,
    };
    let last_arrival = seen.arrivals.lock().unwrap().values().max().copied();
    let backlog_delivered = seen.distinct() as u64;
    if backlog_delivered != backlog_acknowledged {
        failures.push(format!(
            "backlog: the receiver saw {backlog_delivered} of {backlog_acknowledged} acknowledged events \
             when none was pending any more (or after {BACKLOG_WAIT:?})"
        ));
    }
    let throughput = backlog_delivered as f64 / recorded.as_secs_f64();
    println!(
        "hookgate on {}: {throughput:.0} deliveries/s ({backlog_delivered} signed and recorded delivered in {:.2} s, \
         the last arrival at {:.2} s; ratio to the baseline {:.3}; {:.3} CPU s per 10,000 deliveries)",
        backend.name(),
        recorded.as_secs_f64(),
        last_arrival.map_or(f64::NAN, |last| last.duration_since(resumed).as_secs_f64()),
        throughput / baseline,
        machine::per_10k(cpu, backlog_delivered),
    );

    // Latency at a steady rate, open loop, from each post's send to its delivery's arrival.
    let posted: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let steady_failed = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / options.rate as f64);
    let total = options.rate * options.duration;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut in_flight = Vec::with_capacity(total as usize);
    for n in 0..total {
        ticker.tick().await;
        let (client, hooks, posted, failed) = (client.clone(), hooks.clone(), posted.clone(), steady_failed.clone());
        in_flight.push(tokio::spawn(async move {
            let hook = &hooks[n as usize % hooks.len()];
            let sent = Instant::now();
            let response = client.post(hook).json(&event_body("steady", n, variant)).send().await;
            let id = match response {
                Ok(response) if response.status() == 202 => response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|reply| reply["id"].as_str().map(str::to_owned)),
                _ => None,
            };
            match id {
                Some(id) => posted.lock().unwrap().push((id, sent)),
                None => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in in_flight {
        task.await.unwrap();
    }
    let steady_failed = steady_failed.load(Ordering::SeqCst);
    if steady_failed > 0 {
        failures.push(format!("steady load: {steady_failed} of {total} posts were not answered 202 with an id"));
    }
    let posted = std::mem::take(&mut *posted.lock().unwrap());
    // Until every delivery has arrived, or none is pending any more (nothing more will come), or
    // the wait ends.
    let deadline = Instant::now() + DELIVERY_WAIT;
    loop {
        let arrived = {
            let arrivals = seen.arrivals.lock().unwrap();
            posted.iter().all(|(id, _)| arrivals.contains_key(id))
        };
        if arrived || Instant::now() > deadline {
            break;
        }
        if pending(client, &pending_url).await == 0 {
            // Each delivery is recorded after its arrival: what has not arrived now never will.
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited_until = Instant::now();
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let mut undelivered = 0u64;
    {
        let arrivals = seen.arrivals.lock().unwrap();
        for (id, sent) in &posted {
            let arrived = match arrivals.get(id) {
                Some(arrived) => *arrived,
                None => {
                    // Not delivered: it counts with the latency it had when the wait ended.
                    undelivered += 1;
                    waited_until
                }
            };
            latencies.record(arrived.saturating_duration_since(*sent).as_micros() as u64).unwrap();
        }
    }
    if undelivered > 0 {
        failures.push(format!(
            "steady load: {undelivered} of {} acknowledged events had not arrived when none was pending any more \
             (or {DELIVERY_WAIT:?} after the last post)",
            posted.len()
        ));
    }
    let p = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "ingest-to-delivery (from each post's send) at {} events/s for {} s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
         ({} acknowledged, {undelivered} undelivered, {steady_failed} posts failed)",
        options.rate,
        options.duration,
        p(0.5),
        p(0.99),
        latencies.max() as f64 / 1000.0,
        posted.len(),
    );

    // What was acknowledged must be exactly what was stored and delivered.
    let acknowledged = backlog_acknowledged + posted.len() as u64;
    let received = seen.distinct() as u64;
    let duplicates = seen.count.load(Ordering::SeqCst) - received;
    match gateway.stop_and_count(database).await {
        Ok(stored) => {
            let delivered = stored.deliveries.get("delivered").copied().unwrap_or(0) as u64;
            println!(
                "check: {acknowledged} posts acknowledged, {} events in the store, deliveries by status {:?}, \
                 {received} distinct deliveries received ({duplicates} requests beyond those)",
                stored.events, stored.deliveries
            );
            if stored.events != acknowledged {
                failures.push(format!(
                    "hookgate acknowledged {acknowledged} posts but has {} events in its store ({:+}): \
                     what was acknowledged must be exactly what was stored",
                    stored.events,
                    stored.events as i128 - acknowledged as i128
                ));
            }
            if delivered != acknowledged || received != acknowledged {
                failures.push(format!(
                    "{acknowledged} events were acknowledged, {delivered} deliveries are recorded delivered \
                     and the receiver saw {received}: each must be exactly the acknowledged events"
                ));
            }
        }
        Err(error) => failures.push(format!("cannot read hookgate's store: {error:#}")),
    }
    let measured = Measured {
        backend,
        variant,
        throughput,
        drained: recorded,
        delivered: backlog_delivered,
        cpu,
        database_cpu,
        load,
        latency: (p(0.5), p(0.99), latencies.max() as f64 / 1000.0),
    };
    (measured, failures)
}

/// The table of every backend's figures, then one JSON line with the same.
fn print_table(options: &Options, baseline: f64, measured: &[Measured]) {
    println!();
    println!(
        "deliveries bench: a backlog of {} events drained to a local receiver ({CONCURRENCY} in flight in all), \
         then {} events/s for {} s; baseline {baseline:.0} signed requests/s",
        options.events, options.rate, options.duration
    );
    println!(
        "{:<11} {:<9} {:>5} {:>12} {:>6} {:>8} {:>8} {:>9} {:>8} {:>9} {:>6} {:>5} {:>9} {:>9} {:>9}",
        "store",
        "variant",
        "nodes",
        "deliveries/s",
        "ratio",
        "vs plain",
        "drain s",
        "cpu s/10k",
        "db s/10k",
        "aux s/10k",
        "cores",
        "load",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    let optional = |value: Option<f64>| value.map_or("-".to_owned(), |value| format!("{value:.3}"));
    let mut json = serde_json::Map::new();
    for figures in measured {
        let (cpu, backends, auxiliary) = figures.cpu_per_10k();
        // The same store's plain row in this run: what a transformation costs is the ratio to it.
        let plain = measured
            .iter()
            .find(|other| other.backend.name() == figures.backend.name() && other.variant == Variant::Plain)
            .map(|plain| figures.throughput / plain.throughput);
        println!(
            "{:<11} {:<9} {:>5} {:>12.0} {:>6.3} {:>8} {:>8.2} {:>9.3} {:>8} {:>9} {:>6.2} {:>5.2} {:>9.2} {:>9.2} {:>9.2}",
            figures.backend.name(),
            figures.variant.name(),
            figures.backend.nodes(),
            figures.throughput,
            figures.throughput / baseline,
            optional(plain),
            figures.drained.as_secs_f64(),
            cpu,
            optional(backends),
            optional(auxiliary),
            figures.cores(),
            figures.load,
            figures.latency.0,
            figures.latency.1,
            figures.latency.2,
        );
        json.insert(
            format!("{}/{}", figures.backend.name(), figures.variant.name()),
            serde_json::json!({
                "nodes": figures.backend.nodes(),
                "variant": figures.variant.name(),
                "ratio_to_plain": plain.map(|ratio| (ratio * 1000.0).round() / 1000.0),
                "deliveries_per_s": figures.throughput.round(),
                "ratio": (figures.throughput / baseline * 1000.0).round() / 1000.0,
                "cpu_s_per_10k": (cpu * 1000.0).round() / 1000.0,
                "db_backends_cpu_s_per_10k": backends.map(|value| (value * 1000.0).round() / 1000.0),
                "db_auxiliary_cpu_s_per_10k": auxiliary.map(|value| (value * 1000.0).round() / 1000.0),
                "drain_secs": (figures.drained.as_secs_f64() * 1000.0).round() / 1000.0,
                "cores": (figures.cores() * 100.0).round() / 100.0,
                "load_average": figures.load,
                "p50_ms": figures.latency.0,
                "p99_ms": figures.latency.1,
                "max_ms": figures.latency.2,
            }),
        );
    }
    println!("(ratio: deliveries/s over the baseline's requests/s; vs plain: over the same store's plain row, without");
    println!(" a transformation; cpu s/10k: CPU seconds of the nodes' processes");
    println!(" over the drain per 10,000 deliveries; db s/10k: the PostgreSQL processes serving the nodes; aux s/10k:");
    println!(" PostgreSQL's auxiliary processes, shared with whatever else uses the server; cores: the nodes' CPU");
    println!(" time over the drain's wall time; p50/p99/max: ingest-to-delivery latency at the steady rate)");
    println!(
        "{}",
        serde_json::json!({
            "baseline_rps": baseline.round(),
            "events": options.events,
            "rate": options.rate,
            "backends": json,
        })
    );
}
