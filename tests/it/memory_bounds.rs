//! Memory is bounded by what is allowed, not by how a client sends it.
//!
//! Bodies: a client that declares a large body and sends it a byte at a time (or in one-byte
//! chunks) must cost the process about the bytes it sent, never a buffer per write; bodies in
//! flight share one budget in bytes, and past it a request is answered `503` with
//! `Retry-After` (SMTP: `452`). A request refused for its size gets its `413` even when the
//! client sends the whole body first (lingering close). The gateway's memory is read from
//! `/proc/<pid>/status` (`VmHWM`, the peak resident set, and `VmRSS`).

use serde_json::{Value, json};
use std::time::{Duration, Instant};

use crate::support::*;

const FORM: &str = "kustomer.app.memory.form";
const SMALL: &str = "kustomer.app.memory.small";
/// What the trickling clients declare (under the form hook's limit of 1 MiB).
const DECLARED: usize = 1_000_000;
/// Bytes each trickling client sends, one write at a time.
const TRICKLED: usize = 60_000;
const CLIENTS: usize = 4;
/// Between two writes of a trickling client.
const PAUSE_MICROS: u64 = 50;
const RSS_CEILING_KB: u64 = 300 * 1024;

fn memory_app() -> Value {
    json!({"app": "memory", "version": "1", "hooks": [
        {"eventName": FORM, "type": "form"},
        {"eventName": SMALL, "type": "form", "maxBodyBytes": 1_048_576}
    ]})
}

fn options() -> Options {
    Options { definitions: vec![("memory.json".into(), memory_app())], env: vec![] }
}

/// The path of a hook's URL, from the directory.
async fn hook_path(gateway: &Gateway, event_name: &str) -> String {
    let url = gateway.hook_url(event_name).await;
    url.strip_prefix(&gateway.base).expect("hook URLs are under the base URL").to_owned()
}

/// How a trickling client frames its body.
#[derive(Clone, Copy, Debug)]
enum Framing {
    /// `Content-Length: 1000000`, then one byte per write.
    Declared,
    /// `Transfer-Encoding: chunked`, one chunk of one byte per write.
    Chunked,
}

/// Opens a connection, sends the head and then `bytes` bytes of body one write at a time,
/// a moment apart so that each arrives on its own (as a slow client's do); returns the
/// connection, still open, with the body unfinished.
async fn trickle(gateway: &Gateway, path: &str, framing: Framing, bytes: usize) -> std::net::TcpStream {
    let address = gateway.base.strip_prefix("http://").unwrap().to_owned();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.set_nodelay(true).unwrap();
        let framing_header = match framing {
            Framing::Declared => format!("Content-Length: {DECLARED}"),
            Framing::Chunked => "Transfer-Encoding: chunked".to_owned(),
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n{framing_header}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let piece: &[u8] = match framing {
            Framing::Declared => b"a",
            Framing::Chunked => b"1\r\na\r\n",
        };
        for sent in 0..bytes {
            if let Err(error) = stream.write_all(piece) {
                panic!("{framing:?}: the gateway stopped reading after {sent} bytes: {error}");
            }
            std::thread::sleep(Duration::from_micros(PAUSE_MICROS));
        }
        stream
    })
    .await
    .unwrap()
}

async fn trickling_clients_stay_under_the_ceiling(framing: Framing) {
    let gateway = Gateway::start_with(options().env("HOOKGATE_BODY_TIMEOUT_SECS", "60")).await;
    let path = hook_path(&gateway, FORM).await;
    trickling_clients_to_stay_under_the_ceiling(&gateway, &path, framing, TRICKLED).await;
    // The gateway still serves.
    let response = gateway.http.post(gateway.url(&path)).form(&[("after", "trickle")]).send().await.unwrap();
    assert_eq!(response.status(), 202);
}

/// `CLIENTS` clients trickle `bytes` of a body to `path` at once; the gateway's peak resident memory must
/// stay under the ceiling.
async fn trickling_clients_to_stay_under_the_ceiling(gateway: &Gateway, path: &str, framing: Framing, bytes: usize) {
    let before = status_kb(gateway.pid(), "VmRSS");
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS).map(|_| trickle(gateway, path, framing, bytes)).collect();
    let connections = futures::future::join_all(clients).await;
    // Let the gateway read what is still in flight before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = status_kb(gateway.pid(), "VmHWM");
    let during = status_kb(gateway.pid(), "VmRSS");
    let trickled_for = started.elapsed();
    drop(connections);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let closed = status_kb(gateway.pid(), "VmRSS");
    println!(
        "{framing:?} to {path}: {CLIENTS} clients trickled {bytes} bytes each in {trickled_for:?}; RSS before {before} kB, \
         while open {during} kB (peak {peak} kB), 1 s after closing {closed} kB"
    );
    assert!(
        peak < RSS_CEILING_KB,
        "{framing:?} to {path}: the gateway peaked at {peak} kB of resident memory (ceiling {RSS_CEILING_KB} kB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_clients_trickling_a_declared_body_byte_by_byte_stay_under_300_mb() {
    trickling_clients_stay_under_the_ceiling(Framing::Declared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_clients_trickling_the_consoles_sign_in_form_without_credentials_stay_under_300_mb() {
    let gateway = Gateway::start_with(options()).await;
    // Within the form's limit (64 KiB) and its deadline (10 s).
    trickling_clients_to_stay_under_the_ceiling(&gateway, "/console/sign-in", Framing::Chunked, 30_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_clients_trickling_one_byte_chunks_stay_under_300_mb() {
    trickling_clients_stay_under_the_ceiling(Framing::Chunked).await;
}

/// Opens a connection and sends a request head declaring `declared` bytes and a little of the
/// body, leaving the rest unsent: a body in flight.
async fn body_in_flight(gateway: &Gateway, path: &str, declared: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let address = gateway.base.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {declared}\r\n\r\na=b"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Waits (up to 60 s) until `/metrics` shows `bytes` of bodies in flight.
async fn bytes_in_flight_become(gateway: &Gateway, bytes: u64) {
    let expected = format!("hookgate_body_bytes_in_flight {bytes}\n");
    let mut shown = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let metrics = gateway.http.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if metrics.contains(&expected) {
            return;
        }
        shown = metrics.lines().filter(|line| line.starts_with("hookgate_body_bytes_in_flight")).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("bodies in flight did not become {bytes} bytes in 60 s; /metrics shows {shown:?}");
}

#[tokio::test]
async fn past_the_budget_for_bodies_in_flight_http_is_503_with_retry_after_and_smtp_data_is_452() {
    use crate::email::{Conversation, MAIL_DOMAIN};
    let definitions = vec![
        ("memory.json".into(), memory_app()),
        (
            "mailbox.json".into(),
            json!({"app": "mailbox", "version": "1", "hooks": [
            {"eventName": "kustomer.app.mailbox.received", "type": "email"}]}),
        ),
    ];
    let options = Options { definitions, env: vec![] }
        .env("HOOKGATE_MAX_BODY_BYTES_IN_FLIGHT", "2200000")
        .env("HOOKGATE_MAIL_DOMAIN", MAIL_DOMAIN);
    let gateway = Gateway::start_with(options).await;
    let path = hook_path(&gateway, FORM).await;
    // Two bodies of 1,000,000 declared bytes hold 2,000,000 of the 2,200,000, once both heads
    // have been read (on a loaded machine, seconds later): a request sent before that could take
    // the room one of them needs.
    let first = body_in_flight(&gateway, &path, DECLARED).await;
    let second = body_in_flight(&gateway, &path, DECLARED).await;
    bytes_in_flight_become(&gateway, 2 * DECLARED as u64).await;
    let url = gateway.url(&path);
    let over = async || gateway.http.post(&url).form(&[("a", "x".repeat(300_000))]).send().await.unwrap();
    let response = over().await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let (code, message) = error_code(response, 503).await;
    assert_eq!(code, "bodies_over_budget");
    assert!(message.contains("2200000 bytes"), "{message}");
    let small = gateway.http.post(&url).form(&[("small", "fits")]).send().await.unwrap();
    assert_eq!(small.status(), 202, "a body that fits in what is left is taken");

    let address = crate::email::address_of(&gateway, "kustomer.app.mailbox.received").await;
    let mut smtp = Conversation::open(&gateway).await;
    smtp.command("EHLO client.example", 250).await;
    smtp.command("MAIL FROM:<a@sender.example> SIZE=500000", 250).await;
    smtp.command(&format!("RCPT TO:<{address}>"), 250).await;
    let reply = smtp.command("DATA", 452).await;
    assert!(reply.contains("try again later"), "{reply}");
    // Without a declared size, a message that outgrows the room left is read to its end and
    // answered 452.
    smtp.command("RSET", 250).await;
    smtp.command("MAIL FROM:<a@sender.example>", 250).await;
    smtp.command(&format!("RCPT TO:<{address}>"), 250).await;
    smtp.command("DATA", 354).await;
    let line = format!("{}\r\n", "y".repeat(998));
    smtp.write(&format!("Subject: large\r\n\r\n{}.\r\n", line.repeat(300))).await;
    let reply = smtp.expect(452).await;
    assert!(reply.contains("try again later"), "{reply}");

    drop((first, second));
    bytes_in_flight_become(&gateway, 0).await;
    assert_eq!(over().await.status(), 202, "the budget is free again");
    smtp.command("RSET", 250).await;
    smtp.command("MAIL FROM:<a@sender.example> SIZE=500000", 250).await;
    smtp.command(&format!("RCPT TO:<{address}>"), 250).await;
    smtp.command("DATA", 354).await;
}

#[tokio::test]
async fn a_client_that_sends_a_whole_2_mib_body_to_a_1_mib_hook_reads_the_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gateway = Gateway::start_with(options()).await;
    let path = hook_path(&gateway, SMALL).await;
    let address = gateway.base.strip_prefix("http://").unwrap().to_owned();
    let body = vec![b'a'; 2 * 1024 * 1024];
    for framing in [Framing::Declared, Framing::Chunked] {
        for attempt in 0..5 {
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            let framing_header = match framing {
                Framing::Declared => format!("Content-Length: {}", body.len()),
                Framing::Chunked => "Transfer-Encoding: chunked".to_owned(),
            };
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 {framing_header}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            // The whole body is sent before the reply is read, as simple clients do, in pieces
            // a moment apart, as over a link slower than loopback.
            let mut sent = Ok(());
            for piece in body.chunks(64 * 1024) {
                match framing {
                    Framing::Declared => sent = sent.and(stream.write_all(piece).await),
                    Framing::Chunked => {
                        sent = sent.and(stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await);
                        sent = sent.and(stream.write_all(piece).await);
                        sent = sent.and(stream.write_all(b"\r\n").await);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if let Framing::Chunked = framing {
                sent = sent.and(stream.write_all(b"0\r\n\r\n").await);
            }
            sent.unwrap_or_else(|error| panic!("{framing:?}, attempt {attempt}: sending the body failed: {error}"));
            let mut reply = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut reply))
                .await
                .expect("the connection ends within 20 s")
                .unwrap_or_else(|error| panic!("{framing:?}, attempt {attempt}: reading the reply failed: {error}"));
            let reply = String::from_utf8_lossy(&reply);
            assert!(reply.starts_with("HTTP/1.1 413"), "{framing:?}, attempt {attempt}: {reply}");
        }
    }
}

/// Parked deliveries put back in the backlog of the test below: far more than any batch.
const PARKED: u32 = 150_000;
/// What changing them all may add to the gateway's peak memory: the writer's page cache fills
/// (16 MiB), with its bookkeeping and one chunk's journal. Changed in one statement, they took
/// 60 MB at 150,000 deliveries, and more with a larger backlog: SQLite journals in memory every
/// page a statement changes.
const STATUS_CHANGE_CEILING_KB: u64 = 32 * 1024;

/// Disabling, pausing or resuming a subscription moves every one of its pending deliveries. They
/// are moved a chunk per write, so what SQLite journals in memory for a statement stays bounded,
/// whatever the backlog. (Disabling is measured: nothing is sent afterwards, so all that moves is
/// the change.)
#[tokio::test]
async fn a_status_change_over_a_large_backlog_does_not_hold_it_in_memory() {
    let options = Options::default()
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32");
    let mut gateway = Gateway::start_with(options).await;
    // Paused, then disabled: nothing is ever sent to it.
    let subscription =
        crate::deliveries::subscribe(&gateway, json!({"url": "http://127.0.0.1:9/hooks", "status": "paused"})).await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    assert_eq!(gateway.http.post(url).json(&json!({"id": "order-1"})).send().await.unwrap().status(), 202);
    assert!(gateway.stop().await, "the gateway stops");

    // The one parked delivery, copied under new ids while the gateway is stopped.
    let database = rusqlite::Connection::open(gateway.database_file()).unwrap();
    let columns: Vec<String> = database
        .prepare("SELECT name FROM pragma_table_info('deliveries') WHERE name <> 'id'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let columns = columns.join(", ");
    let copied = database
        .execute(
            &format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {PARKED})
                 INSERT INTO deliveries (id, {columns}) SELECT printf('dlv_parked_%08d', i), {columns} FROM deliveries, n"
            ),
            [],
        )
        .unwrap();
    assert_eq!(copied, PARKED as usize);
    drop(database);

    gateway.restart().await;
    // The peak so far is the start's; from here on, only what the change adds.
    std::fs::write(format!("/proc/{}/clear_refs", gateway.pid()), "5").expect("the peak can be reset (Linux)");
    let before = status_kb(gateway.pid(), "VmHWM");
    let started = Instant::now();
    let id = subscription["id"].as_str().unwrap();
    let disabled = gateway.admin_patch(&format!("/api/webhooks/{id}"), &json!({"status": "disabled"})).await;
    assert_eq!(disabled.status(), 200);
    let peak = status_kb(gateway.pid(), "VmHWM");
    println!(
        "disabling with {} pending deliveries took {:?}; peak resident memory {before} kB before, {peak} kB after",
        PARKED + 1,
        started.elapsed()
    );
    let pending = gateway.admin_json(&format!("/api/webhooks/{id}/deliveries?status=pending")).await;
    assert_eq!(pending["total"], 0, "every pending delivery failed with the subscription");
    assert!(
        peak < before + STATUS_CHANGE_CEILING_KB,
        "changing {PARKED} deliveries raised the peak from {before} kB to {peak} kB (allowed: {STATUS_CHANGE_CEILING_KB} kB more)"
    );
    gateway.kill();
}
