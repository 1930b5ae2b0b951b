//! Delivery benchmark: signed deliveries per second to a local receiver, and ingest-to-delivery
//! latency at a steady load, with a baseline measured in the same run.
//!
//! # What it measures
//!
//! A receiver (hyper via axum, answering 200) counts deliveries and notes when each `webhook-id`
//! first arrived. It runs in this process, for the arrival times, but on a runtime and threads of
//! its own, so it never waits behind the load this process generates. The real binary (release
//! build, fresh SQLite database) has one subscription (`*`) to it.
//!
//! - **throughput**: the subscription is paused, `--events` events are posted (their deliveries
//!   wait in the outbox), then it is resumed: deliveries per second is the count over the time
//!   from the resume until the history shows none pending (every attempt recorded). The
//!   baseline is this process posting the same number of signed requests to the same receiver
//!   with the gateway's delivery concurrency: the ceiling of the receiver and loopback.
//! - **latency**: `--rate` events per second are posted for `--duration` seconds on an open
//!   loop; each event's latency is from the moment its post was sent to its delivery's arrival,
//!   so a delivery that arrives before the post's `202` counts its true, positive latency. An
//!   event not delivered within a minute of the last post counts with the latency it had then
//!   (so it weighs on the percentiles), and is reported as undelivered, which fails the run.
//!
//! # What it checks
//!
//! Every post that was not answered `202`, every baseline request not answered 2xx, and every
//! event not delivered fails the run (exit status 1). At the end hookgate is killed and its
//! database read: the events in the store must be exactly the posts it acknowledged, and the
//! deliveries recorded delivered exactly those events, which must also be exactly the distinct
//! deliveries the receiver saw; for the baseline, the receiver must have seen exactly the
//! requests it acknowledged.
//!
//! ```text
//! cargo bench --bench deliveries
//! cargo bench --bench deliveries -- --events 20000 --rate 1000 --duration 10
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-admin-token-0123456789";
const CONCURRENCY: usize = 64;
/// How long after the last post of the steady phase a delivery may still arrive.
const DELIVERY_WAIT: Duration = Duration::from_secs(60);
/// How long the backlog may take to be delivered.
const BACKLOG_WAIT: Duration = Duration::from_secs(300);

struct Options {
    events: usize,
    rate: u64,
    duration: u64,
}

fn options() -> Options {
    let mut options = Options { events: 20_000, rate: 1_000, duration: 10 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse::<u64>().ok()).expect("a number after the flag");
        match arg.as_str() {
            "--events" => options.events = value() as usize,
            "--rate" => options.rate = value(),
            "--duration" => options.duration = value(),
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

struct Gateway {
    child: Child,
    base: String,
    database: PathBuf,
    _directory: tempfile::TempDir,
}

impl Gateway {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills hookgate, then reads its database: the events, and the deliveries by status. Only
    /// what was committed survives a kill.
    fn stop_and_count(&mut self) -> rusqlite::Result<Stored> {
        self.kill();
        let database = rusqlite::Connection::open(&self.database)?;
        let events: i64 = database.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
        let mut statement = database.prepare("SELECT status, count(*) FROM deliveries GROUP BY status")?;
        let deliveries = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?
            .collect::<rusqlite::Result<HashMap<String, i64>>>()?;
        Ok(Stored { events: events as u64, deliveries })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What hookgate's database held after the run.
struct Stored {
    events: u64,
    /// Deliveries by status (`pending`, `delivered`, `failed`).
    deliveries: HashMap<String, i64>,
}

fn start_gateway() -> Gateway {
    let directory = tempfile::tempdir().unwrap();
    let definitions = directory.path().join("defs");
    std::fs::create_dir_all(&definitions).unwrap();
    std::fs::write(
        definitions.join("bench.json"),
        r#"{"app": "bench", "version": "1", "hooks": [{"eventName": "kustomer.app.bench.order", "type": "form"}]}"#,
    )
    .unwrap();
    let database = directory.path().join("hookgate.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["serve", "--http", "127.0.0.1:0", "--smtp", "127.0.0.1:0"])
        .arg("--definitions")
        .arg(&definitions)
        .arg("--database")
        .arg(&database)
        .current_dir(directory.path())
        .env("HOOKGATE_ADMIN_TOKEN", ADMIN)
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_PRIVATE_NETWORKS", "true")
        .env("HOOKGATE_DELIVERY_CONCURRENCY", CONCURRENCY.to_string())
        .env("HOOKGATE_DELIVERY_CONCURRENCY_PER_SUBSCRIPTION", CONCURRENCY.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("hookgate starts");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let base = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("hookgate: http listening on ").map(str::to_owned))
        .expect("a listening line");
    Gateway { child, base, database, _directory: directory }
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

/// Runs the bench; returns what failed.
async fn run(options: Options, receiver: String, seen: Arc<Seen>) -> Vec<String> {
    let mut failures = Vec::new();
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY).build().unwrap();

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

    let mut gateway = start_gateway();
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(ADMIN);
    let subscription: serde_json::Value = admin(client.post(format!("{}/api/webhooks", gateway.base)))
        .json(&serde_json::json!({"url": receiver, "status": "paused"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subscription_url = format!("{}/api/webhooks/{}", gateway.base, subscription["id"].as_str().unwrap());
    let hooks: serde_json::Value =
        admin(client.get(format!("{}/api/hooks", gateway.base))).send().await.unwrap().json().await.unwrap();
    let hook = hooks["data"][0]["url"].as_str().unwrap().to_owned();

    // Throughput: a backlog of deliveries, released at once.
    let backlog_acknowledged = Arc::new(AtomicU64::new(0));
    let (poster, backlog_hook, acknowledged) = (client.clone(), hook.clone(), backlog_acknowledged.clone());
    in_parallel(options.events as u64, move |n| {
        let (client, hook, acknowledged) = (poster.clone(), backlog_hook.clone(), acknowledged.clone());
        async move {
            let response = client.post(&hook).json(&serde_json::json!({"order": n})).send().await;
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
    let resumed = Instant::now();
    admin(client.patch(&subscription_url)).json(&serde_json::json!({"status": "active"})).send().await.unwrap();
    while (seen.distinct() as u64) < backlog_acknowledged && resumed.elapsed() < BACKLOG_WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last_arrival = seen.arrivals.lock().unwrap().values().max().copied();
    // A delivery counts once its history says delivered: the end is when none is pending.
    let pending_url = format!("{subscription_url}/deliveries?status=pending&per_page=1");
    loop {
        let page: serde_json::Value = admin(client.get(&pending_url)).send().await.unwrap().json().await.unwrap();
        if page["total"] == 0 || resumed.elapsed() > BACKLOG_WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recorded = resumed.elapsed();
    let backlog_delivered = seen.distinct() as u64;
    if backlog_delivered != backlog_acknowledged {
        failures.push(format!(
            "backlog: {backlog_delivered} of {backlog_acknowledged} acknowledged events were delivered within {BACKLOG_WAIT:?}"
        ));
    }
    let throughput = backlog_delivered as f64 / recorded.as_secs_f64();
    println!(
        "hookgate: {throughput:.0} deliveries/s ({backlog_delivered} signed and recorded delivered in {:.2} s, the last arrival at {:.2} s; ratio to the baseline {:.3})",
        recorded.as_secs_f64(),
        last_arrival.map_or(f64::NAN, |last| last.duration_since(resumed).as_secs_f64()),
        throughput / baseline
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
        let (client, hook, posted, failed) = (client.clone(), hook.clone(), posted.clone(), steady_failed.clone());
        in_flight.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = client.post(&hook).json(&serde_json::json!({"steady": n})).send().await;
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
    let deadline = Instant::now() + DELIVERY_WAIT;
    loop {
        let arrived = {
            let arrivals = seen.arrivals.lock().unwrap();
            posted.iter().all(|(id, _)| arrivals.contains_key(id))
        };
        if arrived || Instant::now() > deadline {
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
            "steady load: {undelivered} of {} acknowledged events were not delivered within {DELIVERY_WAIT:?} of the last post",
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
    match gateway.stop_and_count() {
        Ok(stored) => {
            let delivered = stored.deliveries.get("delivered").copied().unwrap_or(0) as u64;
            println!(
                "check: {acknowledged} posts acknowledged, {} events in the store, deliveries by status {:?}, \
                 {received} distinct deliveries received ({duplicates} repeated)",
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
        Err(error) => failures.push(format!("cannot read hookgate's database: {error}")),
    }

    println!(
        "{{\"baseline_rps\":{baseline:.0},\"deliveries_per_s\":{throughput:.0},\"ratio\":{:.3},\"rate\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"undelivered\":{undelivered},\"acknowledged\":{acknowledged},\"received\":{received}}}",
        throughput / baseline,
        options.rate,
        p(0.5),
        p(0.99)
    );
    failures
}
