//! The opening steps every transport shares, proved once per transport.
//!
//! Every HTTP path to a hook runs the same sequence before its own work: the content encoding
//! (identity only, 415), the declared length against the hook's limit (413 before any of the
//! body is read), the body read under that limit (413) and under the body deadline (408). Each
//! step is tested here on the three HTTP transports: a form hook's URL, a source endpoint
//! (`/api/webhooks/{source}`) and an email hook's URL (mail posted over HTTP); each hook has a
//! limit of its own (64 bytes), and a body of exactly that size is accepted first, so that a
//! refusal is the step's and not something else's. Every refusal stores nothing and is counted
//! by hook (`hookgate_requests_total{hook, outcome}`), never by path. The SMTP listener's
//! equivalents follow: the declared `SIZE`, the message read under the size limit, and the
//! command and session deadlines.

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::email::Conversation;
use crate::support::*;

const LIMIT: usize = 64;
const FORM: &str = "kustomer.app.edge.form";
const SOURCE: &str = "edge.source";
const SOURCE_PATH: &str = "edge";
const MAIL: &str = "kustomer.app.edge.mail";
const SOURCE_TOKEN: &str = "edge-source-token-0123";

fn edge_app() -> Value {
    json!({"app": "edge", "version": "1", "hooks": [
        {"eventName": FORM, "type": "form", "maxBodyBytes": LIMIT},
        {"eventName": SOURCE, "type": "web", "maxBodyBytes": LIMIT,
         "source": {"path": SOURCE_PATH, "scheme": "gitlab", "secrets": ["${EDGE_SOURCE_TOKEN}"]}},
        {"eventName": MAIL, "type": "email", "maxBodyBytes": LIMIT}
    ]})
}

fn options() -> Options {
    Options { definitions: vec![("edge.json".into(), edge_app())], env: vec![] }
        .env("EDGE_SOURCE_TOKEN", SOURCE_TOKEN)
        .env("HOOKGATE_MAIL_DOMAIN", "in.edge.test")
}

/// One HTTP way to reach a hook.
#[derive(Debug, Clone, Copy)]
enum Transport {
    /// A form hook's `/h/{token}` URL.
    FormHook,
    /// A platform's source endpoint, `/api/webhooks/{source}`.
    Source,
    /// An email hook's `/h/{token}` URL, taking a raw message.
    MailOverHttp,
}

const TRANSPORTS: [Transport; 3] = [Transport::FormHook, Transport::Source, Transport::MailOverHttp];

impl Transport {
    /// The hook's event name: the `hook` label of its metrics.
    fn hook(self) -> &'static str {
        match self {
            Transport::FormHook => FORM,
            Transport::Source => SOURCE,
            Transport::MailOverHttp => MAIL,
        }
    }

    async fn url(self, gateway: &Gateway) -> String {
        match self {
            Transport::Source => gateway.url(&format!("/api/webhooks/{SOURCE_PATH}")),
            Transport::FormHook | Transport::MailOverHttp => gateway.hook_url(self.hook()).await,
        }
    }

    /// The request's headers besides the length: its content type and, for the source, its
    /// credential.
    fn headers(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Transport::FormHook => vec![("content-type", "application/json")],
            Transport::Source => vec![("content-type", "application/json"), ("x-gitlab-token", SOURCE_TOKEN)],
            Transport::MailOverHttp => vec![("content-type", "message/rfc822")],
        }
    }

    /// A valid body of exactly `size` bytes: JSON, or a message whose text is JSON.
    fn body(self, size: usize) -> Vec<u8> {
        let (head, tail) = match self {
            Transport::FormHook | Transport::Source => ("{\"pad\":\"", "\"}"),
            Transport::MailOverHttp => ("From: a@shop.example\r\n\r\n{\"pad\":\"", "\"}"),
        };
        let padding = size.checked_sub(head.len() + tail.len()).expect("room for the padding");
        format!("{head}{}{tail}", "x".repeat(padding)).into_bytes()
    }

    /// The status of an accepted request.
    fn accepted(self) -> u16 {
        match self {
            Transport::Source => 200,
            Transport::FormHook | Transport::MailOverHttp => 202,
        }
    }

    async fn post(self, gateway: &Gateway, body: impl Into<reqwest::Body>) -> reqwest::Response {
        let mut request = gateway.http.post(self.url(gateway).await);
        for (name, value) in self.headers() {
            request = request.header(name, value);
        }
        request.body(body).send().await.unwrap()
    }

    /// The request line and headers, as raw HTTP, declaring `length` bytes of body.
    async fn head(self, gateway: &Gateway, length: usize) -> String {
        let url = self.url(gateway).await;
        let path = url.trim_start_matches(&gateway.base);
        let mut head = format!("POST {path} HTTP/1.1\r\nHost: hookgate.test\r\nContent-Length: {length}\r\n");
        for (name, value) in self.headers() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head
    }
}

/// Posts a body of exactly the limit: the transport works and takes that much.
async fn accept_one_at_the_limit(gateway: &Gateway, transport: Transport) {
    let response = transport.post(gateway, transport.body(LIMIT)).await;
    assert_eq!(response.status().as_u16(), transport.accepted(), "{transport:?}: a body of exactly the limit");
}

/// The ids of the stored events, newest first.
async fn stored(gateway: &Gateway) -> Vec<String> {
    let events = gateway.admin_json("/api/events").await;
    events["data"].as_array().unwrap().iter().map(|event| event["id"].as_str().unwrap().to_owned()).collect()
}

/// The value of `hookgate_requests_total{hook, outcome}`, zero when the series does not exist.
async fn requests_counted(gateway: &Gateway, hook: &str, outcome: &str) -> u64 {
    let metrics = gateway.http.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let series = format!("hookgate_requests_total{{hook=\"{hook}\",outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(|value| value.trim().parse().expect("a counter value"))
        .unwrap_or(0)
}

/// Checks a refusal: its status and code, nothing stored beyond the controls, and the request
/// counted by hook, never by path.
async fn assert_refused(
    gateway: &Gateway,
    transport: Transport,
    response: reqwest::Response,
    status: u16,
    code: &str,
    controls: usize,
) {
    let (found, message) = error_code(response, status).await;
    assert_eq!(found, code, "{transport:?}: {message}");
    assert_eq!(stored(gateway).await.len(), controls, "{transport:?}: a refused request stores nothing");
    assert_eq!(requests_counted(gateway, transport.hook(), code).await, 1, "{transport:?}: counted by hook");
    if let Transport::Source = transport {
        assert_eq!(requests_counted(gateway, SOURCE_PATH, code).await, 0, "never labelled by the path");
    }
}

/// Sends `bytes` on a new connection and reads what comes back until the server ends the
/// connection; fails the test if that takes longer than `wait`. Returns the reply and how long
/// it took.
async fn send_raw_http(gateway: &Gateway, bytes: &[u8], wait: Duration) -> (String, Duration) {
    let address = gateway.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    stream.write_all(bytes).await.unwrap();
    let mut reply = Vec::new();
    let ended = tokio::time::timeout(wait, stream.read_to_end(&mut reply)).await;
    // A reset counts as ended too.
    assert!(ended.is_ok(), "the server kept the connection open for {wait:?}");
    (String::from_utf8_lossy(&reply).into_owned(), started.elapsed())
}

#[tokio::test]
async fn a_body_past_the_hooks_limit_is_413_on_every_transport() {
    let gateway = Gateway::start_with(options()).await;
    for (controls, transport) in (1..).zip(TRANSPORTS) {
        accept_one_at_the_limit(&gateway, transport).await;
        // Sent in chunks with no declared length: the limit stops the body as it is read.
        let body = transport.body(LIMIT + 1);
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(16).map(|chunk| Ok(chunk.to_vec())).collect();
        let response = transport.post(&gateway, reqwest::Body::wrap_stream(futures::stream::iter(chunks))).await;
        assert_refused(&gateway, transport, response, 413, "body_too_large", controls).await;
    }
}

#[tokio::test]
async fn a_declared_length_past_the_limit_is_413_before_the_body_is_read() {
    let gateway = Gateway::start_with(options()).await;
    for transport in TRANSPORTS {
        // The body never comes: only the declared length can be refused, and at once, well
        // before the body deadline (30 s by default) would end the wait.
        let head = transport.head(&gateway, 1_000_000).await;
        let (reply, took) = send_raw_http(&gateway, head.as_bytes(), Duration::from_secs(10)).await;
        assert!(reply.starts_with("HTTP/1.1 413"), "{transport:?}: {reply}");
        assert!(reply.contains("\"body_too_large\""), "{transport:?}: {reply}");
        assert!(took < Duration::from_secs(5), "{transport:?}: refused after {took:?}, as if the body were awaited");
        assert!(stored(&gateway).await.is_empty(), "{transport:?}: nothing is stored");
        assert_eq!(requests_counted(&gateway, transport.hook(), "body_too_large").await, 1, "{transport:?}");
    }
}

#[tokio::test]
async fn a_compressed_body_is_415_on_every_transport() {
    let gateway = Gateway::start_with(options()).await;
    for (controls, transport) in (1..).zip(TRANSPORTS) {
        accept_one_at_the_limit(&gateway, transport).await;
        let mut request = gateway.http.post(transport.url(&gateway).await).header("content-encoding", "gzip");
        for (name, value) in transport.headers() {
            request = request.header(name, value);
        }
        let response = request.body(transport.body(LIMIT)).send().await.unwrap();
        assert_eq!(response.status(), 415, "{transport:?}");
        let reply: Value = response.json().await.unwrap();
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains("Content-Encoding \"gzip\" is not supported"), "{transport:?}: {message}");
        assert_eq!(stored(&gateway).await.len(), controls, "{transport:?}: nothing more is stored");
        assert_eq!(requests_counted(&gateway, transport.hook(), "unsupported_media_type").await, 1, "{transport:?}");
    }
}

#[tokio::test]
async fn a_body_slower_than_the_deadline_is_408_on_every_transport() {
    let gateway = Gateway::start_with(options().env("HOOKGATE_BODY_TIMEOUT_SECS", "1")).await;
    for transport in TRANSPORTS {
        // Within the limit, but only half of it ever arrives.
        let body = transport.body(LIMIT);
        let mut request = transport.head(&gateway, body.len()).await.into_bytes();
        request.extend_from_slice(&body[..LIMIT / 2]);
        let (reply, took) = send_raw_http(&gateway, &request, Duration::from_secs(10)).await;
        assert!(reply.starts_with("HTTP/1.1 408"), "{transport:?}: {reply}");
        assert!(reply.contains("\"body_timeout\""), "{transport:?}: {reply}");
        assert!(took >= Duration::from_millis(900), "{transport:?}: cut off after {took:?}, before the 1 s allowed");
        assert!(stored(&gateway).await.is_empty(), "{transport:?}: nothing is stored");
        assert_eq!(requests_counted(&gateway, transport.hook(), "body_timeout").await, 1, "{transport:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The SMTP listener's equivalents: the size limit (declared, then while reading) and deadlines.

const SMTP_LIMIT: usize = 2048;

/// A message of about `size` bytes whose text is JSON, to `to`.
fn message(to: &str, size: usize) -> String {
    let head = format!("From: a@shop.example\r\nTo: {to}\r\nSubject: order\r\n\r\n{{\"pad\":\"");
    format!("{head}{}\"}}", "x".repeat(size.saturating_sub(head.len() + 2)))
}

/// The address `GET /api/hooks` shows for the email hook.
async fn mail_address(gateway: &Gateway) -> String {
    let hooks = gateway.admin_json("/api/hooks").await;
    let hook = hooks["data"].as_array().unwrap().iter().find(|hook| hook["eventName"] == MAIL).unwrap();
    hook["address"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn smtp_refuses_a_declared_size_and_a_message_past_the_limit_with_552() {
    let gateway = Gateway::start_with(options().env("HOOKGATE_SMTP_MAX_MESSAGE_BYTES", &SMTP_LIMIT.to_string())).await;
    let to = mail_address(&gateway).await;
    let mut smtp = Conversation::open(&gateway).await;
    let ehlo = smtp.command("EHLO client.example", 250).await;
    assert!(ehlo.contains(&format!("SIZE {SMTP_LIMIT}")), "the limit is advertised: {ehlo}");
    // Declared: refused at MAIL, before any of the message is sent.
    let refused = smtp.command(&format!("MAIL FROM:<a@shop.example> SIZE={}", SMTP_LIMIT + 1), 552).await;
    assert!(refused.contains("5.3.4"), "{refused}");
    // Within the limit: accepted.
    smtp.command("MAIL FROM:<a@shop.example>", 250).await;
    smtp.command(&format!("RCPT TO:<{to}>"), 250).await;
    smtp.command("DATA", 354).await;
    smtp.command(&format!("{}\r\n.", message(&to, SMTP_LIMIT - 100)), 250).await;
    assert_eq!(stored(&gateway).await.len(), 1);
    // Not declared: stopped while the message is read, the rest read and dropped.
    smtp.command("MAIL FROM:<a@shop.example>", 250).await;
    smtp.command(&format!("RCPT TO:<{to}>"), 250).await;
    smtp.command("DATA", 354).await;
    let refused = smtp.command(&format!("{}\r\n.", message(&to, SMTP_LIMIT + 100)), 552).await;
    assert!(refused.contains("5.3.4"), "{refused}");
    smtp.command("NOOP", 250).await;
    assert_eq!(stored(&gateway).await.len(), 1, "the message past the limit stored nothing");
}

#[tokio::test]
async fn smtp_ends_a_message_that_stops_arriving_at_the_command_deadline() {
    let gateway = Gateway::start_with(options().env("HOOKGATE_SMTP_COMMAND_TIMEOUT_SECS", "1")).await;
    let to = mail_address(&gateway).await;
    let mut smtp = Conversation::open(&gateway).await;
    smtp.command("EHLO client.example", 250).await;
    smtp.command("MAIL FROM:<a@shop.example>", 250).await;
    smtp.command(&format!("RCPT TO:<{to}>"), 250).await;
    smtp.command("DATA", 354).await;
    let started = Instant::now();
    smtp.write(&message(&to, 200)[..100]).await;
    let reply = smtp.read_reply().await;
    let took = started.elapsed();
    assert!(reply.starts_with("421 4.4.2") && reply.contains("Idle timeout"), "{reply}");
    assert!(took >= Duration::from_millis(900), "cut off after {took:?}, before the 1 s allowed");
    assert_eq!(smtp.read_reply().await, "", "the connection is closed");
    assert!(stored(&gateway).await.is_empty(), "the unfinished message stored nothing");
}

#[tokio::test]
async fn smtp_ends_a_session_that_outlives_its_deadline_however_busy() {
    let gateway = Gateway::start_with(options().env("HOOKGATE_SMTP_SESSION_TIMEOUT_SECS", "2")).await;
    let stream = tokio::net::TcpStream::connect(gateway.smtp).await.unwrap();
    let started = Instant::now();
    let mut smtp = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    smtp.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220 "), "{line}");
    // Never idle: a command every 200 ms, each answered, until the session's time is up. The
    // server ends the session on its own while the client waits, and that is read before the
    // client writes again.
    let ending = loop {
        assert!(started.elapsed() < Duration::from_secs(10), "the session outlived its 2 s deadline");
        smtp.get_mut().write_all(b"NOOP\r\n").await.unwrap();
        line.clear();
        smtp.read_line(&mut line).await.unwrap();
        if !line.starts_with("250") {
            break line.clone();
        }
        line.clear();
        match tokio::time::timeout(Duration::from_millis(200), smtp.read_line(&mut line)).await {
            Err(_) => continue,
            Ok(_) => break line.clone(),
        }
    };
    let took = started.elapsed();
    assert!(ending.starts_with("421 4.4.2") && ending.contains("Session time limit"), "{ending}");
    assert!(took >= Duration::from_millis(1900), "ended after {took:?}, before the 2 s allowed");
    line.clear();
    assert_eq!(smtp.read_line(&mut line).await.unwrap_or(0), 0, "the connection is closed: {line}");
}
