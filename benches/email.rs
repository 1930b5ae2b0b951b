//! Email benchmark: extraction throughput, and durable SMTP ingest, each next to a baseline
//! measured in the same run.
//!
//! # What it measures
//!
//! - **extraction**: `hookgate::email::extract::extract` on a ~50 kB HTML message carrying a
//!   schema.org `Order` in JSON-LD, in a loop on one thread, reported as MB/s of message. The
//!   baseline is mail-parser alone parsing the same message (the floor of any MIME reader), so
//!   the ratio shows what finding and parsing the JSON-LD costs on top. The block is in the
//!   head, where order mails carry it; the same message with the block at the end of the body
//!   (every tag of the document read to reach it) is measured too, as the slowest case.
//! - **smtp**: the real binary (`serve`, release build, a fresh SQLite database, one email hook,
//!   DKIM and SPF checked against a DNS server in this process) receives that message over SMTP from `--connections` clients, each in a closed loop on one
//!   connection (`MAIL`, `RCPT`, `DATA` pipelined, then the message), 2 s of warm-up then the
//!   measured seconds; a message counts when its `250` arrives, which hookgate sends only after
//!   the event is committed. The baseline is a bare SMTP sink that answers the same commands
//!   without parsing or storing anything: the ceiling of loopback SMTP on this machine. Like
//!   hookgate, it runs in a process of its own (this bench binary re-executed with
//!   `HOOKGATE_BENCH_ROLE=sink`, with its own tokio runtime), so neither server shares a process,
//!   a runtime or its threads with the clients; the clients are the same for both.
//!
//! # What it checks
//!
//! Every client finishes the message it is sending before it stops, so no message is left in
//! flight. Then what each server kept is compared with the messages it acknowledged with a `250`
//! over the warm-up and the measurement: the messages the sink counted (it answers `XCOUNT`),
//! and the events in hookgate's store (read with SQLite after hookgate is killed, so only what
//! was committed counts). Any difference fails the bench (exit status 1).
//!
//! # How to run it
//!
//! ```text
//! cargo bench --bench email
//! cargo bench --bench email -- --duration 20 --connections 32
//! ```
//!
//! | flag              | variable                     | default |
//! |-------------------|------------------------------|---------|
//! | `--duration SECS` | `HOOKGATE_BENCH_DURATION`    | 10      |
//! | `--connections N` | `HOOKGATE_BENCH_CONNECTIONS` | 16      |
//!
//! The machine is small and shared: compare ratios from one run, not absolute figures.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The tests' DNS server: DKIM and SPF lookups stay on this machine. The sender's domain has an
/// SPF record that passes; the message is not DKIM-signed.
#[path = "../tests/it/dns.rs"]
mod dns;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::{TcpListener, TcpStream};

/// Set to `sink` in the environment of the child that serves the baseline.
const ROLE_VAR: &str = "HOOKGATE_BENCH_ROLE";
const SINK_LISTENING: &str = "sink listening on ";

struct Options {
    duration: Duration,
    connections: usize,
}

fn options() -> Result<Options, String> {
    let mut duration: u64 = std::env::var("HOOKGATE_BENCH_DURATION").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut connections: usize =
        std::env::var("HOOKGATE_BENCH_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--duration" => duration = value("--duration")?.parse().map_err(|e| format!("--duration: {e}"))?,
            "--connections" => {
                connections = value("--connections")?.parse().map_err(|e| format!("--connections: {e}"))?
            }
            other => return Err(format!("unknown option {other:?}; see the file's header")),
        }
    }
    Ok(Options { duration: Duration::from_secs(duration.max(1)), connections: connections.max(1) })
}

/// A ~50 kB HTML order confirmation with one JSON-LD block in its head, as order mails carry
/// it, as mail (CRLF, no line starting with a dot).
fn message(to: &str) -> Vec<u8> {
    message_with_block(to, BlockPlace::Head)
}

/// Where the message's JSON-LD block is.
#[derive(Clone, Copy)]
enum BlockPlace {
    Head,
    /// At the end of the body: the whole document is read to find it (the slowest case).
    EndOfBody,
}

fn message_with_block(to: &str, place: BlockPlace) -> Vec<u8> {
    let mut rows = String::new();
    for line in 0..400 {
        rows.push_str(&format!(
            "<tr><td class=\"item\" style=\"padding:4px;font-family:Arial\">Item {line}: trail running shoes</td><td>1</td><td>129,90 &euro;</td></tr>\r\n"
        ));
    }
    let json_ld = r#"{"@context":"https://schema.org","@type":"Order","merchant":{"@type":"Organization","name":"Ecommerce Store"},"orderNumber":"ES-100234","priceCurrency":"EUR","price":"129.90","acceptedOffer":{"@type":"Offer","itemOffered":{"@type":"Product","name":"Trail Running Shoes"},"price":"129.90","priceCurrency":"EUR"}}"#;
    let block = format!("<script type=\"application/ld+json\">{json_ld}</script>");
    let (in_head, at_end) = match place {
        BlockPlace::Head => (block.as_str(), ""),
        BlockPlace::EndOfBody => ("", block.as_str()),
    };
    format!(
        "From: Ecommerce Store <orders@shop.example>\r\nTo: {to}\r\nSubject: Your order ES-100234\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@shop.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<!DOCTYPE html>\r\n<html><head><meta charset=\"utf-8\"><title>Order</title>\r\n{in_head}</head>\r\n<body><table>\r\n{rows}</table>{at_end}</body></html>\r\n"
    )
    .into_bytes()
}

fn main() -> ExitCode {
    match std::env::var_os(ROLE_VAR) {
        None => {}
        Some(role) if role == "sink" => return run_sink_process(),
        Some(role) => {
            eprintln!("error: unknown {ROLE_VAR} {role:?}; the only role is `sink`");
            return ExitCode::from(2);
        }
    }
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let extraction = measure_extraction(options.duration);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let smtp = match runtime.block_on(measure_smtp(&options)) {
        Ok(result) => result,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "extraction": {
                "message_bytes": extraction.bytes,
                "mail_parser_mb_s": round(extraction.baseline_mb_s, 1),
                "extract_mb_s": round(extraction.extract_mb_s, 1),
                "block_last_extract_mb_s": round(extraction.block_last_mb_s, 1),
                "ratio": round(extraction.extract_mb_s / extraction.baseline_mb_s, 3),
            },
            "smtp": {
                "connections": options.connections,
                "baseline_msgs_s": round(smtp.baseline.rate, 0),
                "hookgate_msgs_s": round(smtp.hookgate.rate, 0),
                "ratio": round(smtp.hookgate.rate / smtp.baseline.rate, 3),
                "hookgate_p50_ms": round(smtp.p50_ms, 2),
                "hookgate_p99_ms": round(smtp.p99_ms, 2),
                "baseline_acknowledged": smtp.baseline.acknowledged,
                "baseline_kept": smtp.baseline_kept,
                "hookgate_acknowledged": smtp.hookgate.acknowledged,
                "hookgate_stored": smtp.hookgate_stored,
            },
        })
    );
    let meets = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "extraction: {:.0} MB/s (target >= 200: {}); smtp: {:.0} durable messages/s (target >= 1000: {})",
        extraction.extract_mb_s,
        meets(extraction.extract_mb_s >= 200.0),
        smtp.hookgate.rate,
        meets(smtp.hookgate.rate >= 1000.0)
    );
    let mismatches = smtp.mismatches();
    for mismatch in &mismatches {
        eprintln!("error: {mismatch}");
    }
    match mismatches.is_empty() {
        true => {
            println!("every acknowledged message was kept, and nothing more");
            ExitCode::SUCCESS
        }
        false => ExitCode::FAILURE,
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

struct Extraction {
    bytes: usize,
    baseline_mb_s: f64,
    extract_mb_s: f64,
    block_last_mb_s: f64,
}

fn measure_extraction(duration: Duration) -> Extraction {
    let raw = message("bench@localhost");
    let block_last = message_with_block("bench@localhost", BlockPlace::EndOfBody);
    let rate = |raw: &[u8], work: &dyn Fn()| {
        let started = Instant::now();
        let mut rounds = 0u64;
        while started.elapsed() < duration / 2 {
            work();
            rounds += 1;
        }
        (rounds as f64 * raw.len() as f64) / started.elapsed().as_secs_f64() / 1e6
    };
    let baseline_mb_s = rate(&raw, &|| {
        std::hint::black_box(mail_parser::MessageParser::default().parse(std::hint::black_box(&raw[..])));
    });
    let extract = |raw: &[u8]| {
        let extracted =
            hookgate::email::extract::extract(std::hint::black_box(raw), hookgate::email::extract::TextJson::First)
                .unwrap();
        assert_eq!(extracted.found.len(), 1);
    };
    let extract_mb_s = rate(&raw, &|| extract(&raw));
    let block_last_mb_s = rate(&block_last, &|| extract(&block_last));
    println!(
        "extraction of a {} byte message: mail-parser alone {baseline_mb_s:.1} MB/s, hookgate extract \
         {extract_mb_s:.1} MB/s (JSON-LD in the head), {block_last_mb_s:.1} MB/s (JSON-LD at the end of the body)",
        raw.len()
    );
    Extraction { bytes: raw.len(), baseline_mb_s, extract_mb_s, block_last_mb_s }
}

struct SmtpResult {
    baseline: Load,
    /// The messages the sink counted.
    baseline_kept: u64,
    hookgate: Load,
    /// The events in hookgate's store.
    hookgate_stored: u64,
    p50_ms: f64,
    p99_ms: f64,
}

impl SmtpResult {
    /// Each server must have kept exactly what it acknowledged.
    fn mismatches(&self) -> Vec<String> {
        let mut mismatches = Vec::new();
        for (name, acknowledged, kept, what) in [
            ("the SMTP sink", self.baseline.acknowledged, self.baseline_kept, "messages it counted"),
            ("hookgate", self.hookgate.acknowledged, self.hookgate_stored, "events in its store"),
        ] {
            if acknowledged != kept {
                mismatches.push(format!(
                    "{name} acknowledged {acknowledged} message(s) with a 250 but has {kept} {what} ({:+}): \
                     what was acknowledged must be exactly what was kept",
                    kept as i128 - acknowledged as i128
                ));
            }
        }
        mismatches
    }
}

async fn measure_smtp(options: &Options) -> Result<SmtpResult, String> {
    let sink = Sink::start()?;
    let baseline = load(sink.address, "bench@localhost", options).await?;
    let baseline_kept = sink.count().await?;
    drop(sink);
    println!(
        "baseline SMTP sink (a process of its own): {:.0} messages/s ({} acknowledged, {baseline_kept} counted by the sink)",
        baseline.rate, baseline.acknowledged
    );

    let mut gateway = Gateway::start().await?;
    let result = load(gateway.smtp, &gateway.address, options).await;
    let stored = gateway.stop_and_count();
    let hookgate = result?;
    let hookgate_stored = stored?;
    let p = |q: f64| hookgate.latencies.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "hookgate: {:.0} durable messages/s, p50 {:.2} ms, p99 {:.2} ms ({} acknowledged, {hookgate_stored} events in the store)",
        hookgate.rate,
        p(0.5),
        p(0.99),
        hookgate.acknowledged,
    );
    Ok(SmtpResult { baseline, baseline_kept, p50_ms: p(0.5), p99_ms: p(0.99), hookgate, hookgate_stored })
}

/// What the clients saw of one server.
struct Load {
    /// Messages per second acknowledged during the measurement.
    rate: f64,
    /// Latencies of the measured messages, in microseconds.
    latencies: hdrhistogram::Histogram<u64>,
    /// Every message acknowledged with a `250`, over the warm-up and the measurement.
    acknowledged: u64,
}

/// Runs `options.connections` closed-loop SMTP clients for the duration after a 2 s warm-up.
/// Each client finishes the message it is sending before it stops.
async fn load(address: SocketAddr, to: &str, options: &Options) -> Result<Load, String> {
    let message = Arc::new(message(to));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..options.connections {
        let (message, counting, stop, delivered, acknowledged, to) =
            (message.clone(), counting.clone(), stop.clone(), delivered.clone(), acknowledged.clone(), to.to_owned());
        clients.push(tokio::spawn(async move {
            let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
            let stream = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let mut stream = AsyncBufReader::new(stream);
            expect(&mut stream, "220").await?;
            stream.get_mut().write_all(b"EHLO bench.example\r\n").await.map_err(|e| e.to_string())?;
            expect(&mut stream, "250").await?;
            let envelope = format!("MAIL FROM:<bench@shop.example>\r\nRCPT TO:<{to}>\r\nDATA\r\n");
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                stream.get_mut().write_all(envelope.as_bytes()).await.map_err(|e| e.to_string())?;
                expect(&mut stream, "250").await?;
                expect(&mut stream, "250").await?;
                expect(&mut stream, "354").await?;
                stream.get_mut().write_all(&message).await.map_err(|e| e.to_string())?;
                stream.get_mut().write_all(b".\r\n").await.map_err(|e| e.to_string())?;
                expect(&mut stream, "250").await?;
                acknowledged.fetch_add(1, Ordering::Relaxed);
                if counting.load(Ordering::Relaxed) {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    histogram.record(started.elapsed().as_micros() as u64).unwrap();
                }
            }
            Ok::<_, String>(histogram)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(options.duration).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let count = delivered.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut all = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for client in clients {
        let histogram = client.await.map_err(|e| e.to_string())??;
        all.add(histogram).unwrap();
    }
    Ok(Load { rate: count as f64 / elapsed, latencies: all, acknowledged: acknowledged.load(Ordering::Relaxed) })
}

async fn expect(stream: &mut AsyncBufReader<TcpStream>, code: &str) -> Result<(), String> {
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
            return Err(format!("the server closed the connection while {code} was expected"));
        }
        if !line.starts_with(code) {
            return Err(format!("expected {code}, got {line:?}"));
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}

/// The baseline in a child process: this binary in the `sink` role.
struct Sink {
    child: Child,
    address: SocketAddr,
}

impl Sink {
    fn start() -> Result<Sink, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the bench binary: {e}"))?;
        let mut child = Command::new(exe)
            .env(ROLE_VAR, "sink")
            // The sink exits when its stdin closes, should this process die without killing it.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the sink: {e}"))?;
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let address = line.trim().strip_prefix(SINK_LISTENING).and_then(|address| address.parse().ok());
        match (read, address) {
            (Ok(_), Some(address)) => Ok(Sink { child, address }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("the sink printed {line:?} instead of its address"))
            }
        }
    }

    /// The messages the sink accepted, by its own count (`XCOUNT`).
    async fn count(&self) -> Result<u64, String> {
        let stream = TcpStream::connect(self.address).await.map_err(|e| e.to_string())?;
        let mut stream = AsyncBufReader::new(stream);
        expect(&mut stream, "220").await?;
        stream.get_mut().write_all(b"XCOUNT\r\n").await.map_err(|e| e.to_string())?;
        let mut line = String::new();
        stream.read_line(&mut line).await.map_err(|e| e.to_string())?;
        line.trim().strip_prefix("250 ").and_then(|count| count.parse().ok()).ok_or(format!("XCOUNT answered {line:?}"))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sink role: serves on its own multi-threaded runtime until killed or until stdin closes.
fn run_sink_process() -> ExitCode {
    std::thread::spawn(|| {
        let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let served = tokio::runtime::Builder::new_multi_thread().enable_all().build().and_then(|runtime| {
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            println!("{SINK_LISTENING}{}", listener.local_addr()?);
            run_sink(listener).await;
            Ok(())
        })
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sink: {error}");
            ExitCode::from(2)
        }
    }
}

/// The baseline: answers SMTP without parsing addresses, reading MIME or storing anything, and
/// counts the messages it accepted; `XCOUNT` answers `250 <count>`.
async fn run_sink(listener: TcpListener) {
    let accepted = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let _ = stream.set_nodelay(true);
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = AsyncBufReader::new(read);
            let _ = write.write_all(b"220 sink ESMTP\r\n").await;
            let mut in_data = false;
            let mut line = Vec::new();
            loop {
                line.clear();
                match lines.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let reply: Vec<u8> = if in_data {
                    if line != b".\r\n" {
                        continue;
                    }
                    in_data = false;
                    accepted.fetch_add(1, Ordering::SeqCst);
                    b"250 2.0.0 OK\r\n".to_vec()
                } else if line.starts_with(b"DATA") {
                    in_data = true;
                    b"354 go ahead\r\n".to_vec()
                } else if line.starts_with(b"XCOUNT") {
                    format!("250 {}\r\n", accepted.load(Ordering::SeqCst)).into_bytes()
                } else if line.starts_with(b"QUIT") {
                    return;
                } else {
                    b"250 OK\r\n".to_vec()
                };
                if write.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The real binary on a fresh database with one email hook.
struct Gateway {
    child: Child,
    _directory: tempfile::TempDir,
    database: std::path::PathBuf,
    smtp: SocketAddr,
    address: String,
}

impl Gateway {
    async fn start() -> Result<Gateway, String> {
        let directory = tempfile::tempdir().map_err(|e| e.to_string())?;
        let definitions = directory.path().join("defs");
        std::fs::create_dir_all(&definitions).map_err(|e| e.to_string())?;
        std::fs::write(
            definitions.join("bench.json"),
            r#"{"app": "bench", "version": "1", "hooks": [{"eventName": "kustomer.app.bench.mail", "type": "email"}]}"#,
        )
        .map_err(|e| e.to_string())?;
        let database = directory.path().join("hookgate.db");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["serve", "--http", "127.0.0.1:0", "--smtp", "127.0.0.1:0", "--mail-domain", "bench.example"])
            .arg("--definitions")
            .arg(&definitions)
            .arg("--database")
            .arg(&database)
            .current_dir(directory.path())
            .env("HOOKGATE_ADMIN_TOKEN", "bench-admin-token-0123456789")
            // The load comes from one address: per-client rates would measure the limit.
            .env("HOOKGATE_SMTP_CLIENT_MESSAGES_PER_MINUTE", "0")
            .env("HOOKGATE_SMTP_MAX_CONNECTIONS_PER_CLIENT", "4096")
            .env("HOOKGATE_DNS_RESOLVER", {
                dns::add_txt("shop.example", "v=spf1 ip4:127.0.0.1 -all");
                dns::address().to_string()
            })
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start hookgate: {e}"))?;
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut smtp = None;
        let mut base = None;
        for line in stdout.lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("hookgate: smtp listening on ") {
                smtp = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            if let Some(rest) = line.strip_prefix("hookgate: http listening on ") {
                base = Some(rest.to_owned());
                break;
            }
        }
        let (Some(smtp), Some(base)) = (smtp, base) else {
            let _ = child.kill();
            return Err("hookgate printed no listening lines".into());
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let hooks: serde_json::Value = reqwest::Client::new()
            .get(format!("{base}/api/hooks"))
            .bearer_auth("bench-admin-token-0123456789")
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let address = hooks["data"][0]["address"].as_str().ok_or("the hook has no address")?.to_owned();
        Ok(Gateway { child, _directory: directory, database, smtp, address })
    }

    /// Kills hookgate, then counts the events in its database: only what was committed survives
    /// a kill.
    fn stop_and_count(&mut self) -> Result<u64, String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let count: i64 = rusqlite::Connection::open(&self.database)
            .and_then(|db| db.query_row("SELECT count(*) FROM events", [], |row| row.get(0)))
            .map_err(|e| format!("cannot count the events in {}: {e}", self.database.display()))?;
        u64::try_from(count).map_err(|e| e.to_string())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
