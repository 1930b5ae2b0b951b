//! Fair service under abuse: one client address holding connections open, or sending too fast,
//! is refused at once and alone, while other addresses are served; hooks and sources keep the
//! rates configuration gives them. Other clients come from other loopback addresses (127.0.0.2
//! and up, which reach a listener on 127.0.0.1 on Linux).

use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::email::{MAIL_DOMAIN, mail_options};
use crate::support::*;

/// The slow connections one address opens in the main test.
const SLOW_CONNECTIONS: usize = 5_000;

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A TCP connection to `to` from the loopback address `127.0.0.<from>`.
async fn connect_from(from: u8, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(loopback(from), 0))?;
    socket.connect(to).await
}

/// An HTTP client whose connections come from `127.0.0.<from>`.
fn client_from(from: u8, timeout: Duration) -> reqwest::Client {
    let _ = client();
    reqwest::Client::builder().local_address(loopback(from)).timeout(timeout).build().unwrap()
}

fn listening_address(gateway: &Gateway) -> SocketAddr {
    gateway.base.strip_prefix("http://").unwrap().parse().unwrap()
}

/// What the server sent on `stream` within a second, as text (empty when it sent nothing).
async fn first_reply(stream: &mut TcpStream) -> String {
    let mut reply = vec![0u8; 2048];
    let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut reply)).await;
    let read = read.ok().and_then(Result::ok).unwrap_or(0);
    String::from_utf8_lossy(&reply[..read]).into_owned()
}

/// Opens a connection from 127.0.0.1 that sends the start of a request and then nothing more.
async fn slow_connection(to: SocketAddr, path: String) -> Option<TcpStream> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), connect_from(1, to)).await.ok()?.ok()?;
    let _ = stream.write_all(format!("POST {path} HTTP/1.1\r\nhost: shop.example\r\n").as_bytes()).await;
    Some(stream)
}

#[tokio::test]
async fn slow_connections_from_one_address_leave_another_address_answered_within_a_second() {
    // The header deadline outlasts the test, so that no slow connection ends on its own.
    let gateway = Gateway::start_with(Options::default().env("HOOKGATE_HEADER_READ_TIMEOUT_SECS", "120")).await;
    let hook = gateway.hook_url(ORDER_UPDATE).await;
    let path = hook.strip_prefix(&gateway.base).unwrap().to_owned();
    let to = listening_address(&gateway);

    let opening_started = Instant::now();
    let mut slow = Vec::with_capacity(SLOW_CONNECTIONS);
    for batch in 0..SLOW_CONNECTIONS / 500 {
        let opening = (0..500).map(|_| slow_connection(to, path.clone()));
        let opened = futures::future::join_all(opening).await;
        assert!(batch > 0 || opened.iter().all(Option::is_some), "the first connections are accepted");
        slow.extend(opened.into_iter().flatten());
    }

    let opening = opening_started.elapsed();
    let normal = client_from(2, Duration::from_secs(5));
    let started = Instant::now();
    let response = normal
        .post(&hook)
        .header("content-type", "application/json")
        .body(r#"{"order": 1}"#)
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    let elapsed = started.elapsed();
    let response = response.unwrap_or_else(|error| {
        panic!("with {} slow connections open from 127.0.0.1, 127.0.0.2 was not answered: {error}", slow.len())
    });
    assert_eq!(response.status(), 202, "the normal request is accepted");
    eprintln!(
        "{} slow connections from 127.0.0.1 opened in {opening:?}; 127.0.0.2 answered in {elapsed:?}",
        slow.len()
    );
    assert!(elapsed < Duration::from_secs(1), "answered in {elapsed:?}");

    // The slow address was turned away at once past its share, not queued.
    let last = slow.last_mut().expect("the slow connections were made");
    let refused = first_reply(last).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "the last slow connection was refused: {refused:?}");
    assert!(refused.contains("retry-after: 1") && refused.contains("too_many_connections"), "{refused}");
}

#[tokio::test]
async fn connections_past_a_clients_share_get_429_and_past_the_cap_503_at_once() {
    let gateway = Gateway::start_with(
        Options::default().env("HOOKGATE_MAX_CONNECTIONS", "3").env("HOOKGATE_MAX_CONNECTIONS_PER_CLIENT", "2"),
    )
    .await;
    let to = listening_address(&gateway);
    let _held = [connect_from(3, to).await.unwrap(), connect_from(3, to).await.unwrap()];
    let mut third = connect_from(3, to).await.unwrap();
    let refused = first_reply(&mut third).await;
    assert!(refused.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{refused:?}");
    assert!(refused.contains("retry-after: 1\r\n"), "{refused}");
    let body: Value = serde_json::from_str(refused.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");

    let mut other = connect_from(4, to).await.unwrap();
    other.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let served = first_reply(&mut other).await;
    assert!(served.starts_with("HTTP/1.1 200"), "another address is served: {served:?}");

    let mut past_the_cap = connect_from(5, to).await.unwrap();
    let full = first_reply(&mut past_the_cap).await;
    assert!(full.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{full:?}");
    assert!(full.contains("retry-after: 1\r\n") && full.contains("gateway_busy"), "{full}");
}

#[tokio::test]
async fn a_client_past_its_request_rate_gets_429_with_retry_after_while_others_are_served() {
    let gateway = Gateway::start_with(
        Options::default().env("HOOKGATE_CLIENT_REQUESTS_PER_SECOND", "1").env("HOOKGATE_CLIENT_REQUEST_BURST", "3"),
    )
    .await;
    let hook = gateway.hook_url(ORDER_UPDATE).await;
    let hasty = client_from(6, Duration::from_secs(10));
    for _ in 0..3 {
        assert_eq!(hasty.get(gateway.url("/healthz")).send().await.unwrap().status(), 200);
    }
    let limited = hasty.post(&hook).header("content-type", "application/json").body("{}").send().await.unwrap();
    assert_eq!(limited.headers()["retry-after"], "1");
    let (code, message) = error_code(limited, 429).await;
    assert_eq!(code, "rate_limited");
    assert!(message.contains("too many requests from your address"), "{message}");

    let other = client_from(7, Duration::from_secs(10));
    let served = other.post(&hook).header("content-type", "application/json").body("{}").send().await.unwrap();
    assert_eq!(served.status(), 202, "another address has its own rate");
    let events = gateway.admin_json("/api/events").await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1, "the limited request stored nothing");
}

#[tokio::test]
async fn a_hook_and_a_source_keep_the_rates_configuration_gives_them() {
    let stripe = "whsec_fairness_stripe";
    let definitions = json!({"app": "rated", "version": "1", "hooks": [
        {"eventName": "stripe.event", "type": "web", "source": {
            "path": "stripe", "scheme": "stripe", "secrets": ["${FAIRNESS_STRIPE_SECRET}"],
            "eventName": "stripe.{$.type}", "deliveryId": "{$.id}"}}
    ]});
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookgate.toml");
    std::fs::write(&config, format!("[hook_rate_limits]\n\"{ORDER_UPDATE}\" = 0.5\n")).unwrap();
    let mut options = Options::default()
        .env("HOOKGATE_CONFIG", config.to_str().unwrap())
        .env("HOOKGATE_SOURCE_RATE_LIMITS", "{stripe=0.5}")
        .env("FAIRNESS_STRIPE_SECRET", stripe);
    options.definitions.push(("rated.json".into(), definitions));
    let gateway = Gateway::start_with(options).await;

    let post = || gateway.post_raw(ORDER_UPDATE, "application/json", "{}");
    assert_eq!(post().await.status(), 202);
    let limited = post().await;
    assert_eq!(limited.headers()["retry-after"], "2", "one request every two seconds");
    let (code, message) = error_code(limited, 429).await;
    assert_eq!(code, "rate_limited");
    assert!(message.contains("too many requests to this hook"), "{message}");
    assert_eq!(gateway.post_raw(CONTACT_FORM, "application/json", "{}").await.status(), 202, "other hooks are not");

    let event = |id: &str| json!({"id": id, "type": "charge.succeeded"}).to_string();
    let first = event("evt_fair_1");
    assert_eq!(post_stripe(&gateway, &first, &stripe_signature(stripe, &first)).await.status(), 200);
    let second = event("evt_fair_2");
    let limited = post_stripe(&gateway, &second, &stripe_signature(stripe, &second)).await;
    assert!(limited.headers().contains_key("retry-after"));
    let (code, message) = error_code(limited, 429).await;
    assert_eq!(code, "rate_limited");
    assert!(message.contains("too many requests to this source"), "{message}");
}

/// Reads one SMTP reply line within five seconds; empty when the server closed.
async fn smtp_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    line
}

#[tokio::test]
async fn an_smtp_client_past_its_share_of_connections_or_its_rate_of_messages_gets_421() {
    let gateway = Gateway::start_with(
        mail_options()
            .env("HOOKGATE_SMTP_MAX_CONNECTIONS_PER_CLIENT", "1")
            .env("HOOKGATE_SMTP_CLIENT_MESSAGES_PER_MINUTE", "1"),
    )
    .await;
    let mut first = BufReader::new(connect_from(8, gateway.smtp).await.unwrap());
    assert!(smtp_line(&mut first).await.starts_with("220 "));
    let mut second = BufReader::new(connect_from(8, gateway.smtp).await.unwrap());
    let refused = smtp_line(&mut second).await;
    assert!(refused.starts_with("421 4.7.0 Too many connections from your address"), "{refused}");
    let mut other = BufReader::new(connect_from(9, gateway.smtp).await.unwrap());
    assert!(smtp_line(&mut other).await.starts_with("220 "), "another address is greeted");

    let mut command = async |line: &str| {
        first.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        let mut reply = smtp_line(&mut first).await;
        while reply.as_bytes().get(3) == Some(&b'-') {
            reply = smtp_line(&mut first).await;
        }
        reply
    };
    assert!(command(&format!("EHLO client.{MAIL_DOMAIN}")).await.starts_with("250 "));
    assert!(command("MAIL FROM:<a@shop.example>").await.starts_with("250 "));
    assert!(command("RSET").await.starts_with("250 "));
    let limited = command("MAIL FROM:<a@shop.example>").await;
    assert!(limited.starts_with("421 4.7.0 Too many messages from your address"), "{limited}");
    assert_eq!(smtp_line(&mut first).await, "", "the session ends");
}
