//! Graceful shutdown: on SIGTERM the gateway stops accepting (a new HTTP connection is refused,
//! a new SMTP session is answered `421`), lets the requests and the SMTP message in flight finish
//! with their success reply and their event stored, and exits within `shutdown_timeout_secs` even
//! when clients hold connections open.

use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::*;

/// Waits until a new connection to `address` is refused (at most 5 s).
async fn refused_soon(address: std::net::SocketAddr) {
    eventually(Duration::from_secs(5), &format!("a new connection to {address} is refused"), || async {
        TcpStream::connect(address).await.is_err()
    })
    .await;
}

/// The first line a new SMTP connection to `address` is answered with (empty when it closed
/// without one), or the error of connecting.
async fn smtp_greeting(address: std::net::SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect(address).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await??;
    Ok(line)
}

/// One line of a raw SMTP exchange; the reply must start with `code`.
async fn smtp_command(reader: &mut BufReader<TcpStream>, line: &str, code: &str) -> String {
    reader.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
    smtp_reply(reader, code).await
}

/// The next whole reply (continuation lines included), which must start with `code`.
async fn smtp_reply(reader: &mut BufReader<TcpStream>, code: &str) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .expect("a reply within 10 s")
            .unwrap_or(0);
        reply.push_str(&line);
        if read == 0 || line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    assert!(reply.starts_with(code), "expected {code}, got {reply:?}");
    reply
}

#[tokio::test]
async fn a_request_in_flight_at_sigterm_is_answered_and_stored_while_new_connections_are_refused() {
    let mut gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let path = url.strip_prefix(&gateway.base).unwrap().to_owned();
    let body = r#"{"order": "slow-1", "note": "sent in two halves around the SIGTERM"}"#;
    let (first, second) = body.split_at(body.len() / 2);
    let mut slow = TcpStream::connect(gateway.http_address()).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(first.as_bytes()).await.unwrap();
    // The request is being read when the signal comes.
    tokio::time::sleep(Duration::from_millis(200)).await;

    gateway.terminate();
    refused_soon(gateway.http_address()).await;
    slow.write_all(second.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut reply))
        .await
        .expect("the reply, and the connection closed, within 10 s")
        .unwrap();
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 202 "), "the request in flight is answered: {reply}");
    let (_, json) = reply.split_once("\r\n\r\n").expect("a reply body");
    let id = serde_json::from_str::<Value>(json).unwrap()["id"].as_str().unwrap().to_owned();
    let exited = gateway.exit_within(Duration::from_secs(10)).await.expect("the gateway exits once it is answered");
    assert!(exited.success(), "a graceful stop exits successfully: {exited}");

    gateway.restart().await;
    assert_eq!(gateway.event(&id).await["data"]["order"], "slow-1", "the answered event is stored");
}

#[tokio::test]
async fn an_smtp_message_in_flight_at_sigterm_gets_its_250_and_new_sessions_get_421() {
    let mut gateway = Gateway::start().await;
    let to = crate::email::address_of(&gateway, SHOP_MAIL).await;
    let stream = TcpStream::connect(gateway.smtp).await.unwrap();
    let mut smtp = BufReader::new(stream);
    smtp_reply(&mut smtp, "220").await;
    smtp_command(&mut smtp, "EHLO sender.example", "250").await;
    smtp_command(&mut smtp, "MAIL FROM:<orders@shop.example>", "250").await;
    smtp_command(&mut smtp, &format!("RCPT TO:<{to}>"), "250").await;
    smtp_command(&mut smtp, "DATA", "354").await;
    let message = format!(
        "From: orders@shop.example\r\nTo: {to}\r\nSubject: Order\r\nMessage-ID: <inflight-1@shop.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{{\"order\": \"mail-1\"}}\r\n"
    );
    let (first, second) = message.split_at(message.len() / 2);
    smtp.get_mut().write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    gateway.terminate();
    // While the session drains, a new one is told the service is going away.
    eventually(Duration::from_secs(5), "a new SMTP session is answered 421", || async {
        smtp_greeting(gateway.smtp).await.is_ok_and(|greeting| greeting.starts_with("421 "))
    })
    .await;
    refused_soon(gateway.http_address()).await;
    smtp.get_mut().write_all(second.as_bytes()).await.unwrap();
    let accepted = smtp_command(&mut smtp, ".", "250").await;
    let id = accepted.split_whitespace().find(|word| word.starts_with("evt_")).expect("the event id").to_owned();
    // Between messages now: the session is closed with 421 at once.
    smtp_reply(&mut smtp, "421").await;
    let exited = gateway.exit_within(Duration::from_secs(10)).await.expect("the gateway exits once the session ended");
    assert!(exited.success(), "a graceful stop exits successfully: {exited}");

    gateway.restart().await;
    assert_eq!(gateway.event(&id).await["data"]["order"], "mail-1", "the accepted message is stored");
}

#[tokio::test]
async fn the_process_exits_within_the_shutdown_deadline_while_clients_hold_connections_open() {
    let mut gateway = Gateway::start_with(Options::default().env("HOOKGATE_SHUTDOWN_TIMEOUT_SECS", "2")).await;
    let to = crate::email::address_of(&gateway, SHOP_MAIL).await;
    // A connection that says nothing, one stuck in its headers (the header deadline is 10 s),
    // a keep-alive connection after a request, and an SMTP session inside a transaction (its
    // command deadline is 60 s): none of them may hold the exit past 2 s.
    let _silent = TcpStream::connect(gateway.http_address()).await.unwrap();
    let mut stuck = TcpStream::connect(gateway.http_address()).await.unwrap();
    stuck.write_all(b"POST /h/anything HTTP/1.1\r\nHost: gateway\r\n").await.unwrap();
    let kept_alive = gateway.http.get(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(kept_alive.status(), 200);
    let mut smtp = BufReader::new(TcpStream::connect(gateway.smtp).await.unwrap());
    smtp_reply(&mut smtp, "220").await;
    smtp_command(&mut smtp, "EHLO sender.example", "250").await;
    smtp_command(&mut smtp, "MAIL FROM:<orders@shop.example>", "250").await;
    smtp_command(&mut smtp, &format!("RCPT TO:<{to}>"), "250").await;

    let signalled = Instant::now();
    gateway.terminate();
    let exited = gateway.exit_within(Duration::from_secs(10)).await.expect("the gateway exits");
    let took = signalled.elapsed();
    assert!(took < Duration::from_millis(3500), "exited {took:?} after SIGTERM with a 2 s deadline");
    assert!(took >= Duration::from_millis(1500), "the open SMTP transaction was given its grace: {took:?}");
    assert!(exited.success(), "the deadline is a normal exit: {exited}");
}
