//! Delivery benchmark: signed deliveries per second to a local receiver, and ingest-to-delivery
//! latency at a steady load, with a baseline measured in the same run.
//!
//! # What it measures
//!
//! A receiver in this process (hyper via axum, answering 200) counts deliveries and notes when
//! each `webhook-id` arrived. The real binary (release build, fresh SQLite database) has one
//! subscription (`*`) to it.
//!
//! - **throughput**: the subscription is paused, `--events` events are posted (their deliveries
//!   wait in the outbox), then it is resumed: deliveries per second is the count over the time
//!   from the resume until the history shows none pending (every attempt recorded). The
//!   baseline is this process posting the same number of signed requests to the same receiver
//!   with the gateway's delivery concurrency: the ceiling of the receiver and loopback.
//! - **latency**: `--rate` events per second are posted for `--duration` seconds on an open
//!   loop; each event's latency is from the moment its post was answered (committed) to its
//!   delivery's arrival. p50 and p99.
//!
//! ```text
//! cargo bench --bench deliveries
//! cargo bench --bench deliveries -- --events 20000 --rate 1000 --duration 10
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-admin-token-0123456789";
const CONCURRENCY: usize = 64;

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
    count: AtomicU64,
    /// `webhook-id` -> arrival.
    arrivals: Mutex<HashMap<String, Instant>>,
    last: Mutex<Option<Instant>>,
}

async fn start_receiver(seen: Arc<Seen>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, _body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let now = Instant::now();
                seen.count.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                    seen.arrivals.lock().unwrap().insert(id.to_owned(), now);
                }
                *seen.last.lock().unwrap() = Some(now);
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

struct Gateway {
    child: Child,
    base: String,
    _directory: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["serve", "--http", "127.0.0.1:0", "--smtp", "127.0.0.1:0"])
        .arg("--definitions")
        .arg(&definitions)
        .arg("--database")
        .arg(directory.path().join("hookgate.db"))
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
    Gateway { child, base, _directory: directory }
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

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(options));
}

async fn run(options: Options) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY).build().unwrap();
    let seen = Arc::new(Seen::default());
    let receiver = start_receiver(seen.clone()).await;

    // Baseline: the same number of signed requests straight to the receiver.
    let client_for_jobs = client.clone();
    let body =
        serde_json::to_vec(&serde_json::json!({"type": "kustomer.app.bench.order", "data": {"order": 1}})).unwrap();
    let started = Instant::now();
    let (body, signed_receiver) = (Arc::new(body), receiver.clone());
    in_parallel(options.events as u64, move |n| {
        let (client, receiver, body) = (client_for_jobs.clone(), signed_receiver.clone(), body.clone());
        async move {
            let timestamp = jiff::Timestamp::now().as_second();
            let signature = hookgate::deliver::sign::signature(
                &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
                "base",
                timestamp,
                &body,
            );
            client
                .post(&receiver)
                .header("content-type", "application/json")
                .header("webhook-id", format!("base_{n}"))
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
        }
    })
    .await;
    let baseline = options.events as f64 / started.elapsed().as_secs_f64();
    println!(
        "baseline: {baseline:.0} signed requests/s straight to the receiver ({} requests, {CONCURRENCY} at once)",
        options.events
    );
    seen.count.store(0, Ordering::Relaxed);
    seen.arrivals.lock().unwrap().clear();

    let gateway = start_gateway();
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
    let (poster, backlog_hook) = (client.clone(), hook.clone());
    in_parallel(options.events as u64, move |n| {
        let (client, hook) = (poster.clone(), backlog_hook.clone());
        async move {
            let response = client.post(&hook).json(&serde_json::json!({"order": n})).send().await.unwrap();
            assert_eq!(response.status(), 202);
        }
    })
    .await;
    let resumed = Instant::now();
    admin(client.patch(&subscription_url)).json(&serde_json::json!({"status": "active"})).send().await.unwrap();
    while seen.count.load(Ordering::Relaxed) < options.events as u64 {
        if resumed.elapsed() > Duration::from_secs(300) {
            panic!("only {} of {} deliveries arrived", seen.count.load(Ordering::Relaxed), options.events);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = seen.last.lock().unwrap().unwrap();
    // A delivery counts once its history says delivered: the end is when none is pending.
    let pending_url = format!("{subscription_url}/deliveries?status=pending&per_page=1");
    loop {
        let page: serde_json::Value = admin(client.get(&pending_url)).send().await.unwrap().json().await.unwrap();
        if page["total"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recorded = resumed.elapsed();
    let throughput = options.events as f64 / recorded.as_secs_f64();
    println!(
        "hookgate: {throughput:.0} deliveries/s ({} signed and recorded delivered in {:.2} s, the last arrival at {:.2} s; ratio to the baseline {:.3})",
        options.events,
        recorded.as_secs_f64(),
        last.duration_since(resumed).as_secs_f64(),
        throughput / baseline
    );

    // Latency at a steady rate, open loop.
    let committed: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let interval = Duration::from_secs_f64(1.0 / options.rate as f64);
    let total = options.rate * options.duration;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut in_flight = Vec::with_capacity(total as usize);
    for n in 0..total {
        ticker.tick().await;
        let (client, hook, committed) = (client.clone(), hook.clone(), committed.clone());
        in_flight.push(tokio::spawn(async move {
            let response = client.post(&hook).json(&serde_json::json!({"steady": n})).send().await.unwrap();
            let at = Instant::now();
            let id = response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            committed.lock().unwrap().push((id, at));
        }));
    }
    for task in in_flight {
        task.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    loop {
        let done = {
            let arrivals = seen.arrivals.lock().unwrap();
            let committed = committed.lock().unwrap();
            let done = committed.iter().all(|(id, _)| arrivals.contains_key(id)) || Instant::now() > deadline;
            if done {
                for (id, at) in committed.iter() {
                    if let Some(arrived) = arrivals.get(id) {
                        latencies.record(arrived.saturating_duration_since(*at).as_micros() as u64).unwrap();
                    }
                }
            }
            done
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "ingest-to-delivery at {} events/s for {} s: p50 {:.2} ms, p99 {:.2} ms ({} of {} delivered)",
        options.rate,
        options.duration,
        p(0.5),
        p(0.99),
        latencies.len(),
        total
    );
    println!(
        "{{\"baseline_rps\":{baseline:.0},\"deliveries_per_s\":{throughput:.0},\"ratio\":{:.3},\"rate\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
        throughput / baseline,
        options.rate,
        p(0.5),
        p(0.99)
    );
    drop(gateway);
}
