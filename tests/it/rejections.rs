//! Bad requests get a clear, specific error and create nothing: unknown hook 404, wrong method
//! 405, unsupported content type 415, malformed body 400 naming the position, body over the
//! limit 413, slow body 408, slow headers cut off.

use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn assert_no_events(gateway: &Gateway) {
    let events = gateway.admin_json("/api/events").await;
    assert_eq!(events["data"], json!([]), "a rejected request must store nothing");
}

#[tokio::test]
async fn an_unknown_hook_is_404_and_reveals_nothing() {
    let gateway = Gateway::start().await;
    let real = gateway.hook_url(ORDER_UPDATE).await;
    let mut replies = Vec::new();
    for path in ["/h/not-a-token", "/h/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let response = gateway.http.post(gateway.url(path)).json(&json!({})).send().await.unwrap();
        assert_eq!(response.status(), 404);
        replies.push(response.text().await.unwrap());
    }
    for path in ["/h", "/h/"] {
        let response = gateway.http.post(gateway.url(path)).json(&json!({})).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        replies.push(response.text().await.unwrap());
    }
    for suffix in ["/", "/extra", "/extra/more"] {
        let response = gateway.http.post(format!("{real}{suffix}")).json(&json!({})).send().await.unwrap();
        assert_eq!(response.status(), 404, "{suffix}");
        replies.push(response.text().await.unwrap());
    }
    let truncated = &real[..real.len() - 1];
    let response = gateway.http.post(truncated).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status(), 404);
    replies.push(response.text().await.unwrap());
    assert!(replies.iter().all(|reply| reply == &replies[0]), "every unknown hook gets the same reply: {replies:?}");
    assert!(replies[0].contains("hook_not_found"));
    assert_no_events(&gateway).await;
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    for method in [reqwest::Method::GET, reqwest::Method::PUT, reqwest::Method::DELETE] {
        let response = gateway.http.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.headers()["allow"], "POST, OPTIONS");
        let (code, message) = error_code(response, 405).await;
        assert_eq!(code, "method_not_allowed");
        assert!(message.contains(method.as_str()));
    }
    assert_no_events(&gateway).await;
}

#[tokio::test]
async fn the_method_is_checked_before_the_origin() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(CONTACT_FORM).await;
    let response = gateway.http.get(url).header("origin", "https://evil.example").send().await.unwrap();
    let (code, _) = error_code(response, 405).await;
    assert_eq!(code, "method_not_allowed");
}

#[tokio::test]
async fn a_post_to_an_email_hook_that_is_not_mail_is_415_naming_what_is_accepted() {
    let gateway = Gateway::start().await;
    let response = gateway.post_raw(SHOP_MAIL, "text/csv", "a,b\n1,2").await;
    let (code, message) = error_code(response, 415).await;
    assert_eq!(code, "unsupported_media_type");
    assert!(message.contains("message/rfc822") && message.contains("text/csv"), "{message}");
    assert_no_events(&gateway).await;
}

#[tokio::test]
async fn an_unsupported_content_type_is_415_naming_what_is_accepted() {
    let gateway = Gateway::start().await;
    let response = gateway.post_raw(ORDER_UPDATE, "text/plain", "hello").await;
    let (code, message) = error_code(response, 415).await;
    assert_eq!(code, "unsupported_media_type");
    assert!(message.contains("text/plain") && message.contains("application/json"), "{message}");
    assert_no_events(&gateway).await;
}

#[tokio::test]
async fn malformed_json_is_400_naming_line_and_column() {
    let gateway = Gateway::start().await;
    let response =
        gateway.post_raw(ORDER_UPDATE, "application/json", "{\n  \"order\": 42,\n  \"status\": shipped\n}").await;
    let (code, message) = error_code(response, 400).await;
    assert_eq!(code, "malformed_body");
    assert!(message.starts_with("malformed JSON at line 3 column 13"), "{message}");
    assert_no_events(&gateway).await;
}

#[tokio::test]
async fn an_empty_json_body_is_400() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let response = gateway.http.post(url).header("content-type", "application/json").send().await.unwrap();
    let (_, message) = error_code(response, 400).await;
    assert_eq!(message, "request body is empty");
    assert_no_events(&gateway).await;
}

#[tokio::test]
async fn malformed_xml_is_400() {
    let gateway = Gateway::start().await;
    let response = gateway.post_raw(ORDER_UPDATE, "application/xml", "<order><id>1</order>").await;
    let (_, message) = error_code(response, 400).await;
    assert!(message.starts_with("malformed XML"), "{message}");
    assert_no_events(&gateway).await;
}

#[tokio::test]
async fn a_declared_length_over_the_hooks_limit_is_413() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(SMALL_FORM).await;
    let body = json!({"text": "x".repeat(100)}).to_string();
    let response = gateway.http.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
    let (code, message) = error_code(response, 413).await;
    assert_eq!(code, "body_too_large");
    assert!(message.contains("64 bytes"), "{message}");
    assert_no_events(&gateway).await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(SMALL_FORM).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..10).map(|_| Ok(b"0123456789abcdef".to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let response = gateway.http.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
    let (code, _) = error_code(response, 413).await;
    assert_eq!(code, "body_too_large");
    assert_no_events(&gateway).await;
}

#[tokio::test]
async fn the_default_limit_is_one_mebibyte() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let just_under = json!({"blob": "x".repeat(1024 * 1024 - 20)}).to_string();
    assert!(just_under.len() <= 1024 * 1024);
    let response =
        gateway.http.post(&url).header("content-type", "application/json").body(just_under).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let reply: serde_json::Value = response.json().await.unwrap();
    assert_eq!(reply["name"], ORDER_UPDATE, "{reply}");
    let over = json!({"blob": "x".repeat(1024 * 1024)}).to_string();
    let response = gateway.http.post(&url).header("content-type", "application/json").body(over).send().await.unwrap();
    let (code, message) = error_code(response, 413).await;
    assert_eq!(code, "body_too_large");
    assert!(message.contains("1048576 bytes"), "{message}");
    let events = gateway.admin_json("/api/events").await;
    let ids: Vec<&str> = events["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [reply["id"].as_str().unwrap()], "only the body within the limit was stored");
}

/// Sends the start of a request on a new connection and nothing more; returns what the server
/// sent back before it ended the connection. Fails the test if the server did not end it within
/// `wait`.
async fn send_and_stall(gateway: &Gateway, request: &[u8], wait: Duration) -> String {
    let address = gateway.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let ended = tokio::time::timeout(wait, stream.read_to_end(&mut reply)).await;
    // A reset counts as ended too.
    assert!(ended.is_ok(), "the server kept a stalled connection open for {wait:?}");
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn a_body_that_arrives_too_slowly_is_408() {
    let gateway = Gateway::start_with(Options::default().env("HOOKGATE_BODY_TIMEOUT_SECS", "1")).await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let path = url.trim_start_matches(&gateway.base).to_owned();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\":"
    );
    let reply = send_and_stall(&gateway, head.as_bytes(), Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("body_timeout"), "{reply}");
    assert_no_events(&gateway).await;
}

#[tokio::test]
async fn headers_that_arrive_too_slowly_end_the_connection() {
    let mut gateway = Gateway::start_with(Options::default().env("HOOKGATE_HEADER_READ_TIMEOUT_SECS", "1")).await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let path = url.trim_start_matches(&gateway.base).to_owned();
    let started = std::time::Instant::now();
    let first = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n");
    let reply = send_and_stall(&gateway, first.as_bytes(), Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "cut off after {waited:?}, before the 1 s allowed");
    assert!(!reply.contains("HTTP/1.1 2"), "a slow client must not be served: {reply}");
    // The 1 s header deadline also ends the client's idle kept-alive connection from the lookup
    // above; a fresh client does not race to reuse it.
    gateway.http = client();
    assert_no_events(&gateway).await;
}

#[tokio::test]
async fn when_the_store_cannot_commit_the_client_gets_503_and_no_acknowledgement() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    // Another process holds the database's write lock longer than the gateway waits for it.
    let locker = rusqlite::Connection::open(gateway.database_file()).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let response = gateway.http.post(&url).json(&json!({"lost": false})).send().await.unwrap();
    assert_eq!(response.headers()["retry-after"], "5");
    let (code, message) = error_code(response, 503).await;
    assert_eq!(code, "store_unavailable");
    assert!(!message.contains("database"), "internal causes are logged, not sent: {message}");
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    assert_no_events(&gateway).await;
    let retried = gateway.http.post(&url).json(&json!({"lost": false})).send().await.unwrap();
    assert_eq!(retried.status(), 202, "the sender's retry succeeds once the store recovers");
    let id = retried.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(gateway.event(&id).await["data"], json!({"lost": false}));
}

#[tokio::test]
async fn a_compressed_body_is_415_naming_the_encoding() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let response = gateway
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0x08, 0x00])
        .send()
        .await
        .unwrap();
    let (code, message) = error_code(response, 415).await;
    assert_eq!(code, "unsupported_media_type");
    assert!(message.contains("gzip"), "{message}");
    assert_no_events(&gateway).await;
}
