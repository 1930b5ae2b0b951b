//! Email hooks over SMTP: real mail from lettre (plain and STARTTLS) and raw SMTP conversations
//! to the running listener, read back as events. Every refusal is tested: unknown recipient,
//! relaying, missing key, sender not allowed, over size, nothing to extract, a store failure.
//! The fixture corpus (`fixtures/email/`, real messages stored as received) is held to reviewed
//! snapshots, and each fixture's notable outcomes are stated by name in a test of its own.

use lettre::AsyncTransport;
use lettre::address::Envelope;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::*;

pub const ORDERS: &str = "kustomer.app.mailbox.received";
const KEYED: &str = "kustomer.app.mailbox.keyed";
const PARTNERS: &str = "kustomer.app.mailbox.partners";
const BUNDLED: &str = "kustomer.app.mailbox.bundled";
const ROUTED: &str = "kustomer.app.mailbox.routed";
const SIGNED_ONLY: &str = "kustomer.app.mailbox.signed";
const MAILGUN_KEY: &str = "mailgun-signing-key";
pub const MAIL_DOMAIN: &str = "in.hookgate.test";
const MAIL_KEY: &str = "k3y-for-mail";

pub fn mailbox_app() -> Value {
    json!({"app": "mailbox", "version": "1", "hooks": [
        {"eventName": ORDERS, "type": "email", "email": {"eventName": "kustomer.app.mailbox.{$['@type']}"}},
        {"eventName": KEYED, "type": "email", "email": {"key": "${MAILBOX_KEY}"}},
        {"eventName": PARTNERS, "type": "email", "email": {"allowedSenders": ["ops@partner.example", "@trusted.example"]}},
        {"eventName": BUNDLED, "type": "email", "email": {"multiple": "array", "textJson": "none"}},
        {"eventName": ROUTED, "type": "email", "email": {"mailgunSigningKey": "${MAILBOX_MAILGUN_KEY}"}},
        {"eventName": SIGNED_ONLY, "type": "email", "email": {"requireDkim": true}}
    ]})
}

pub fn mail_options() -> Options {
    Options { definitions: vec![("mailbox.json".into(), mailbox_app())], env: vec![] }
        .env("MAILBOX_KEY", MAIL_KEY)
        .env("MAILBOX_MAILGUN_KEY", MAILGUN_KEY)
        .env("HOOKGATE_MAIL_DOMAIN", MAIL_DOMAIN)
}

/// The address `GET /api/hooks` shows for an email hook.
pub async fn address_of(gateway: &Gateway, event_name: &str) -> String {
    let hooks = gateway.admin_json("/api/hooks").await;
    let hook = hooks["data"].as_array().unwrap().iter().find(|hook| hook["eventName"] == event_name).unwrap();
    assert_eq!(hook["type"], "email");
    assert!(hook["url"].as_str().unwrap().contains("/h/"), "an email hook also has an inbound URL");
    hook["address"].as_str().unwrap().to_owned()
}

fn transport(gateway: &Gateway) -> AsyncSmtpTransport<lettre::Tokio1Executor> {
    AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(gateway.smtp.ip().to_string())
        .port(gateway.smtp.port())
        .tls(Tls::None)
        .timeout(Some(std::time::Duration::from_secs(20)))
        .build()
}

/// Sends `raw` from `from` to `to` with lettre.
pub async fn send_raw(gateway: &Gateway, from: &str, to: &str, raw: &[u8]) -> Result<String, String> {
    let envelope = Envelope::new(Some(from.parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
    transport(gateway)
        .send_raw(&envelope, raw)
        .await
        .map(|response| response.message().collect::<Vec<_>>().join(" "))
        .map_err(|error| error.to_string())
}

pub fn html_mail(from: &str, to: &str, html: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Your order\r\nMessage-ID: <order-1@shop.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
    )
    .into_bytes()
}

const ORDER_HTML: &str = r#"<html><body><p>Thanks!</p><script type="application/ld+json">{"@context":"https://schema.org","@type":"Order","orderNumber":"A-1001","price":"42.50"}</script></body></html>"#;

async fn events(gateway: &Gateway) -> Vec<Value> {
    gateway.admin_json("/api/events").await["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn mail_with_json_ld_becomes_an_event_named_by_its_type() {
    let gateway = Gateway::start_with(mail_options()).await;
    let to = address_of(&gateway, ORDERS).await;
    assert!(to.ends_with(&format!("@{MAIL_DOMAIN}")), "{to}");
    let reply =
        send_raw(&gateway, "orders@shop.example", &to, &html_mail("Shop <orders@shop.example>", &to, ORDER_HTML))
            .await
            .unwrap();
    assert!(reply.contains("queued as evt_"), "{reply}");

    let stored = events(&gateway).await;
    assert_eq!(stored.len(), 1);
    let event = &stored[0];
    assert_eq!(event["name"], "kustomer.app.mailbox.Order");
    assert_eq!(event["hookType"], "email");
    assert_eq!(
        event["data"],
        json!({"@context": "https://schema.org", "@type": "Order", "orderNumber": "A-1001", "price": "42.50"})
    );
    let mail = &event["source"]["mail"];
    assert_eq!(mail["envelopeFrom"], "orders@shop.example");
    assert_eq!(mail["envelopeTo"], to);
    assert_eq!(mail["from"], "orders@shop.example");
    assert_eq!(mail["subject"], "Your order");
    assert_eq!(mail["messageId"], "order-1@shop.example");
    assert_eq!(mail["date"], "2026-11-23T10:00:00Z");
    assert_eq!(mail["foundIn"], json!(["jsonLd"]));
    assert!(reply.contains(event["id"].as_str().unwrap()), "the reply names the stored event: {reply}");

    // The exact message is kept for replay.
    let raw = gateway.admin_get(&format!("/api/events/{}/raw", event["id"].as_str().unwrap())).await;
    assert_eq!(raw.status(), 200);
    assert!(raw.text().await.unwrap().contains("A-1001"));
}

#[tokio::test]
async fn the_address_is_found_in_any_letter_case_and_with_a_plus_tag() {
    let gateway = Gateway::start_with(mail_options()).await;
    let to = address_of(&gateway, ORDERS).await;
    let (token, domain) = to.split_once('@').unwrap();
    let shouted = format!("{}+campaign-7@{}", token.to_ascii_uppercase(), domain.to_ascii_uppercase());
    send_raw(&gateway, "a@shop.example", &shouted, &html_mail("a@shop.example", &shouted, ORDER_HTML)).await.unwrap();
    assert_eq!(events(&gateway).await.len(), 1);
}

#[tokio::test]
async fn an_unknown_recipient_is_refused_at_rcpt_and_nothing_is_relayed() {
    let gateway = Gateway::start_with(mail_options()).await;
    let unknown = format!("nobody@{MAIL_DOMAIN}");
    let error = send_raw(&gateway, "a@shop.example", &unknown, &html_mail("a@shop.example", &unknown, ORDER_HTML))
        .await
        .unwrap_err();
    assert!(error.contains("550"), "{error}");

    let to = address_of(&gateway, ORDERS).await;
    let elsewhere = format!("{}@elsewhere.example", to.split_once('@').unwrap().0);
    let mut smtp = Conversation::open(&gateway).await;
    smtp.command("EHLO client.example", 250).await;
    smtp.command("MAIL FROM:<a@shop.example>", 250).await;
    let refused = smtp.command(&format!("RCPT TO:<{elsewhere}>"), 550).await;
    assert!(refused.contains("5.7.1") && refused.contains("Relaying denied"), "{refused}");
    let refused = smtp.command(&format!("RCPT TO:<nobody@{MAIL_DOMAIN}>"), 550).await;
    assert!(refused.contains("5.1.1"), "{refused}");
    smtp.command("DATA", 554).await;
    assert!(events(&gateway).await.is_empty());
}

#[tokio::test]
async fn a_keyed_hook_takes_the_key_in_the_address_or_in_the_script_tag() {
    let gateway = Gateway::start_with(mail_options()).await;
    let to = address_of(&gateway, KEYED).await;
    let error =
        send_raw(&gateway, "a@shop.example", &to, &html_mail("a@shop.example", &to, ORDER_HTML)).await.unwrap_err();
    assert!(error.contains("550") && error.contains("requires a key"), "{error}");
    let (token, domain) = to.split_once('@').unwrap();
    let wrong = format!("{token}+guess@{domain}");
    let error = send_raw(&gateway, "a@shop.example", &wrong, &html_mail("a@shop.example", &wrong, ORDER_HTML))
        .await
        .unwrap_err();
    assert!(error.contains("550"), "{error}");
    assert!(events(&gateway).await.is_empty());

    let keyed_address = format!("{token}+{MAIL_KEY}@{domain}");
    send_raw(&gateway, "a@shop.example", &keyed_address, &html_mail("a@shop.example", &keyed_address, ORDER_HTML))
        .await
        .unwrap();
    let keyed_tag = ORDER_HTML.replace(
        r#"<script type="application/ld+json">"#,
        &format!(r#"<script type="application/ld+json" data-key="{MAIL_KEY}">"#),
    );
    send_raw(&gateway, "a@shop.example", &to, &html_mail("a@shop.example", &to, &keyed_tag)).await.unwrap();
    assert_eq!(events(&gateway).await.len(), 2);
}

#[tokio::test]
async fn a_block_left_out_for_want_of_the_key_is_named_in_the_event() {
    let gateway = Gateway::start_with(mail_options()).await;
    let to = address_of(&gateway, KEYED).await;
    let html = format!(
        r#"<script type="application/ld+json" data-key="{MAIL_KEY}">{{"@type":"Order","orderNumber":"A-1001"}}</script>
        <script type="application/ld+json" data-key="guess">{{"@type":"Order","orderNumber":"A-6666"}}</script>"#
    );
    send_raw(&gateway, "a@shop.example", &to, &html_mail("a@shop.example", &to, &html)).await.unwrap();
    let stored = events(&gateway).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["data"]["orderNumber"], "A-1001");
    assert_eq!(
        stored[0]["source"]["mail"]["skipped"],
        json!([{"kind": "jsonLd", "part": "1", "contentType": "text/html", "block": 2, "reason": "keyMissing"}]),
        "the wrong key itself is not repeated"
    );
}

#[tokio::test]
async fn senders_outside_the_allowlist_are_refused() {
    let gateway = Gateway::start_with(mail_options()).await;
    let to = address_of(&gateway, PARTNERS).await;
    let error =
        send_raw(&gateway, "eve@evil.example", &to, &html_mail("eve@evil.example", &to, ORDER_HTML)).await.unwrap_err();
    assert!(error.contains("550") && error.contains("not allowed"), "{error}");
    send_raw(&gateway, "ops@partner.example", &to, &html_mail("ops@partner.example", &to, ORDER_HTML)).await.unwrap();
    send_raw(&gateway, "any@trusted.example", &to, &html_mail("Any <any@trusted.example>", &to, ORDER_HTML))
        .await
        .unwrap();
    assert_eq!(events(&gateway).await.len(), 2);
}

#[tokio::test]
async fn mail_with_nothing_to_extract_is_refused_with_the_reason() {
    let gateway = Gateway::start_with(mail_options()).await;
    let to = address_of(&gateway, ORDERS).await;
    let newsletter = html_mail("a@shop.example", &to, "<p>Our autumn collection is here.</p>");
    let error = send_raw(&gateway, "a@shop.example", &to, &newsletter).await.unwrap_err();
    assert!(error.contains("550") && error.contains("no JSON or JSON-LD"), "{error}");
    let broken = html_mail("a@shop.example", &to, r#"<script type="application/ld+json">{"@type": "Order",</script>"#);
    let error = send_raw(&gateway, "a@shop.example", &to, &broken).await.unwrap_err();
    assert!(error.contains("JSON-LD block 1 of part 1 is not JSON: EOF"), "the reason says what was wrong: {error}");
    assert!(events(&gateway).await.is_empty());
    let metrics = gateway.http.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"hookgate_email_messages_total{transport="smtp",outcome="nothing_to_extract"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn several_values_become_one_event_with_an_array_when_the_hook_says_so() {
    let gateway = Gateway::start_with(mail_options()).await;
    let to = address_of(&gateway, BUNDLED).await;
    let html = r#"<script type="application/ld+json">[{"@type":"ParcelDelivery","trackingNumber":"1Z1"},{"@type":"ParcelDelivery","trackingNumber":"1Z2"}]</script>"#;
    send_raw(&gateway, "a@shop.example", &to, &html_mail("a@shop.example", &to, html)).await.unwrap();
    let stored = events(&gateway).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["name"], BUNDLED);
    assert_eq!(stored[0]["data"].as_array().unwrap().len(), 2);
    assert_eq!(stored[0]["source"]["mail"]["foundIn"], json!(["jsonLd", "jsonLd"]));

    let orders = address_of(&gateway, ORDERS).await;
    send_raw(&gateway, "a@shop.example", &orders, &html_mail("a@shop.example", &orders, html)).await.unwrap();
    assert_eq!(events(&gateway).await.len(), 3, "the other hook makes one event per value");
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_with_552() {
    let gateway = Gateway::start_with(mail_options().env("HOOKGATE_SMTP_MAX_MESSAGE_BYTES", "2048")).await;
    let to = address_of(&gateway, ORDERS).await;
    let mut smtp = Conversation::open(&gateway).await;
    let ehlo = smtp.command("EHLO client.example", 250).await;
    assert!(ehlo.contains("SIZE 2048"), "the limit is advertised: {ehlo}");
    smtp.command("MAIL FROM:<a@shop.example> SIZE=4096", 552).await;
    // A client that does not declare the size is stopped while the message is read.
    smtp.command("MAIL FROM:<a@shop.example>", 250).await;
    smtp.command(&format!("RCPT TO:<{to}>"), 250).await;
    smtp.command("DATA", 354).await;
    let padding = format!("<p>{}</p>", "x".repeat(4096));
    let message = String::from_utf8(html_mail("a@shop.example", &to, &format!("{padding}{ORDER_HTML}"))).unwrap();
    let refused = smtp.command(&format!("{message}\r\n."), 552).await;
    assert!(refused.contains("5.3.4"), "{refused}");
    smtp.command("NOOP", 250).await;
    assert!(events(&gateway).await.is_empty());
}

#[tokio::test]
async fn a_declared_size_too_large_for_any_integer_is_refused_with_552_not_accepted() {
    let gateway = Gateway::start_with(mail_options().env("HOOKGATE_SMTP_MAX_MESSAGE_BYTES", "2048")).await;
    let mut smtp = Conversation::open(&gateway).await;
    smtp.command("EHLO client.example", 250).await;
    for size in ["999999999999999999999999", "18446744073709551616", "18446744073709551615", "99999999999999999999"] {
        let refused = smtp.command(&format!("MAIL FROM:<a@shop.example> SIZE={size}"), 552).await;
        assert!(refused.contains("5.3.4") && refused.contains("2048"), "SIZE={size}: {refused}");
    }
    smtp.command("MAIL FROM:<a@shop.example> SIZE=2048", 250).await;
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let gateway = Gateway::start_with(mail_options()).await;
    let to = address_of(&gateway, ORDERS).await;
    let mut smtp = Conversation::open(&gateway).await;
    let ehlo = smtp.command("EHLO client.example", 250).await;
    for extension in ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE"] {
        assert!(ehlo.contains(extension), "{extension} is advertised: {ehlo}");
    }
    assert!(!ehlo.contains("STARTTLS"), "no STARTTLS without a certificate: {ehlo}");
    smtp.write(&format!("MAIL FROM:<a@shop.example>\r\nRCPT TO:<nobody@{MAIL_DOMAIN}>\r\nRCPT TO:<{to}>\r\nDATA\r\n"))
        .await;
    smtp.expect(250).await;
    smtp.expect(550).await;
    smtp.expect(250).await;
    smtp.expect(354).await;
    let message = String::from_utf8(html_mail("a@shop.example", &to, ORDER_HTML)).unwrap();
    smtp.command(&format!("{message}\r\n."), 250).await;
    smtp.command("QUIT", 221).await;
    assert_eq!(events(&gateway).await.len(), 1);
}

#[tokio::test]
async fn commands_out_of_order_and_garbage_get_clear_replies_then_the_door() {
    let gateway = Gateway::start_with(mail_options()).await;
    let mut smtp = Conversation::open(&gateway).await;
    smtp.command("MAIL FROM:<a@shop.example>", 503).await;
    smtp.command("EHLO client.example", 250).await;
    smtp.command("RCPT TO:<a@b.example>", 503).await;
    smtp.command("STARTTLS", 502).await;
    smtp.command("AUTH PLAIN AGFhAGI=", 502).await;
    smtp.command("VRFY someone", 252).await;
    smtp.command("RSET", 250).await;
    let mut last = String::new();
    for _ in 0..10 {
        smtp.write("FROBNICATE\r\n").await;
        last = smtp.read_reply().await;
        if last.starts_with("421") {
            break;
        }
    }
    assert!(last.starts_with("500") || last.starts_with("421"), "{last}");
    let closing = if last.starts_with("421") { last } else { smtp.read_reply().await };
    assert!(closing.starts_with("421 4.7.0"), "too many errors close the session: {closing}");
}

#[tokio::test]
async fn an_idle_client_is_disconnected() {
    let gateway = Gateway::start_with(mail_options().env("HOOKGATE_SMTP_COMMAND_TIMEOUT_SECS", "1")).await;
    let mut smtp = Conversation::open(&gateway).await;
    smtp.command("EHLO client.example", 250).await;
    let reply = smtp.read_reply().await;
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert_eq!(smtp.read_reply().await, "", "the connection is closed");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_told_to_come_back_later() {
    let gateway = Gateway::start_with(mail_options().env("HOOKGATE_SMTP_MAX_CONNECTIONS", "1")).await;
    let mut first = Conversation::open(&gateway).await;
    let stream = TcpStream::connect(gateway.smtp).await.unwrap();
    let mut second = BufReader::new(stream);
    let mut line = String::new();
    second.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("421 4.3.2"), "{line}");
    first.command("QUIT", 221).await;
    // The slot is freed when the first session's task ends, a moment after its 221: until then a
    // new connection may still be turned away, so ask again until one is greeted.
    let smtp = gateway.smtp;
    eventually(std::time::Duration::from_secs(10), "a new session to be greeted after the first ends", || async move {
        let Ok(stream) = TcpStream::connect(smtp).await else { return false };
        let mut greeting = String::new();
        BufReader::new(stream).read_line(&mut greeting).await.is_ok() && greeting.starts_with("220 ")
    })
    .await;
}

#[tokio::test]
async fn when_the_store_cannot_commit_the_sender_is_told_to_retry() {
    let gateway = Gateway::start_with(mail_options()).await;
    let to = address_of(&gateway, ORDERS).await;
    let locker = rusqlite::Connection::open(gateway.database_file()).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let error =
        send_raw(&gateway, "a@shop.example", &to, &html_mail("a@shop.example", &to, ORDER_HTML)).await.unwrap_err();
    assert!(error.contains("transient error (451)"), "{error}");
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    assert!(events(&gateway).await.is_empty());
    send_raw(&gateway, "a@shop.example", &to, &html_mail("a@shop.example", &to, ORDER_HTML)).await.unwrap();
    assert_eq!(events(&gateway).await.len(), 1, "the retry succeeds once the store recovers");
}

#[tokio::test]
async fn starttls_carries_mail_and_drops_what_was_sent_before_the_handshake() {
    let certificates = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let certificate_path = certificates.path().join("smtp.crt");
    let key_path = certificates.path().join("smtp.key");
    std::fs::write(&certificate_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let gateway = Gateway::start_with(
        mail_options()
            .env("HOOKGATE_SMTP_TLS_CERTIFICATE", certificate_path.to_str().unwrap())
            .env("HOOKGATE_SMTP_TLS_KEY", key_path.to_str().unwrap()),
    )
    .await;
    let to = address_of(&gateway, ORDERS).await;

    // lettre with TLS required, trusting only the test certificate.
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap())
        .build_rustls()
        .unwrap();
    let transport = AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(gateway.smtp.ip().to_string())
        .port(gateway.smtp.port())
        .tls(Tls::Required(tls))
        .build();
    let envelope = Envelope::new(Some("a@shop.example".parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
    transport.send_raw(&envelope, &html_mail("a@shop.example", &to, ORDER_HTML)).await.unwrap();
    assert_eq!(events(&gateway).await.len(), 1);

    // A command injected after STARTTLS in the same packet is never answered.
    let mut smtp = Conversation::open(&gateway).await;
    let ehlo = smtp.command("EHLO client.example", 250).await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    smtp.write("STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n").await;
    smtp.expect(220).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(certified.cert.der().to_vec())).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = smtp.into_inner();
    let tls = connector.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let mut tls = BufReader::new(tls);
    // The session starts over: MAIL before EHLO is out of order, so the injected MAIL did nothing.
    tls.get_mut().write_all(b"MAIL FROM:<a@shop.example>\r\n").await.unwrap();
    let mut line = String::new();
    tls.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("503"), "{line}");
    tls.get_mut().write_all(b"EHLO client.example\r\n").await.unwrap();
    let mut ehlo = String::new();
    loop {
        let mut line = String::new();
        tls.read_line(&mut line).await.unwrap();
        ehlo.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    }
    assert!(ehlo.starts_with("250") && !ehlo.contains("STARTTLS"), "{ehlo}");
}

/// A raw SMTP client for the protocol's corners.
pub struct Conversation {
    stream: BufReader<TcpStream>,
}

impl Conversation {
    pub async fn open(gateway: &Gateway) -> Conversation {
        let stream = TcpStream::connect(gateway.smtp).await.unwrap();
        let mut conversation = Conversation { stream: BufReader::new(stream) };
        let greeting = conversation.read_reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        conversation
    }

    pub async fn write(&mut self, text: &str) {
        self.stream.get_mut().write_all(text.as_bytes()).await.unwrap();
    }

    /// One whole reply, continuation lines included; empty when the server closed.
    pub async fn read_reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(std::time::Duration::from_secs(20), self.stream.read_line(&mut line))
                .await
                .expect("a reply within 20 s")
                .unwrap_or(0);
            reply.push_str(&line);
            if read == 0 || line.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
        }
    }

    pub async fn expect(&mut self, code: u16) -> String {
        let reply = self.read_reply().await;
        assert!(reply.starts_with(&code.to_string()), "expected {code}, got {reply:?}");
        reply
    }

    pub async fn command(&mut self, line: &str, code: u16) -> String {
        self.write(&format!("{line}\r\n")).await;
        self.expect(code).await
    }

    fn into_inner(self) -> TcpStream {
        self.stream.into_inner()
    }
}

// ---------------------------------------------------------------------------
// The fixture corpus: real messages stored as received, each with a reviewed snapshot of what it
// makes, and a test of its own that states its notable outcomes by name.

/// Every fixture in `fixtures/email/`; each has a test below named for its behaviour. A new
/// fixture needs one too (the corpus test fails until it is listed here).
const FIXTURES: [&str; 9] = [
    "apple-mail-json-attachment.eml",
    "broken-html.eml",
    "flight-reservation-graph-latin1.eml",
    "forwarded-event-reservation.eml",
    "gmail-order-quoted-printable.eml",
    "jsonld-attachment-array.eml",
    "newsletter-no-data.eml",
    "outlook-parcel-related-entities.eml",
    "plain-text-json-windows-1252.eml",
];

fn fixtures_folder() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/email")
}

/// The SMTP reply to one fixture and the events it made, in message order.
struct FixtureOutcome {
    reply: Result<String, String>,
    events: Vec<Value>,
}

/// Sends the fixture `file` over SMTP to the hook that names each event by its `@type`.
async fn send_fixture(gateway: &Gateway, file: &str) -> FixtureOutcome {
    let raw = std::fs::read(fixtures_folder().join(file)).unwrap();
    let to = address_of(gateway, ORDERS).await;
    let before = events(gateway).await;
    let reply = send_raw(gateway, "sender@fixtures.example", &to, &raw).await;
    let mut made: Vec<Value> =
        events(gateway).await.into_iter().filter(|event| !before.iter().any(|old| old["id"] == event["id"])).collect();
    made.reverse(); // The listing is newest first.
    FixtureOutcome { reply, events: made }
}

/// An attachment as `source.mail.attachments` describes it.
fn attachment(name: Option<&str>, content_type: &str, size: usize, sha256: &str) -> Value {
    json!({"name": name, "contentType": content_type, "size": size, "sha256": sha256})
}

/// Whether the corpus test compares with its snapshots or writes them.
#[derive(Debug, PartialEq)]
enum Snapshots {
    Compare,
    Rewrite,
}

/// `HOOKGATE_UPDATE_SNAPSHOTS=1`, exactly, rewrites the snapshots; unset or any other value
/// compares. Where `CI` is set nothing is rewritten: asking for it there is an error.
fn snapshot_mode(update: Option<&std::ffi::OsStr>, ci: Option<&std::ffi::OsStr>) -> Result<Snapshots, String> {
    match (update.is_some_and(|value| value == "1"), ci) {
        (false, _) => Ok(Snapshots::Compare),
        (true, None) => Ok(Snapshots::Rewrite),
        (true, Some(ci)) => Err(format!(
            "HOOKGATE_UPDATE_SNAPSHOTS=1 but CI={ci:?} is set: snapshots are not rewritten in CI; \
             rewrite them locally, review the diff and commit it"
        )),
    }
}

#[test]
fn snapshots_are_rewritten_only_with_update_set_to_1_and_never_in_ci() {
    use std::ffi::OsStr;
    let set = |value: &'static str| Some(OsStr::new(value));
    assert_eq!(snapshot_mode(None, None), Ok(Snapshots::Compare));
    assert_eq!(snapshot_mode(set("1"), None), Ok(Snapshots::Rewrite));
    for other in ["0", "", "true", "yes", " 1", "1 ", "01"] {
        assert_eq!(snapshot_mode(set(other), None), Ok(Snapshots::Compare), "HOOKGATE_UPDATE_SNAPSHOTS={other:?}");
        assert_eq!(snapshot_mode(set(other), set("true")), Ok(Snapshots::Compare), "{other:?} in CI");
    }
    assert_eq!(snapshot_mode(None, set("true")), Ok(Snapshots::Compare));
    for ci in ["true", "1", "", "false"] {
        let refused = snapshot_mode(set("1"), set(ci)).unwrap_err();
        assert!(refused.contains("snapshots are not rewritten in CI"), "CI={ci:?}: {refused}");
    }
}

/// The corpus test itself, run as its own process with `CI` and `HOOKGATE_UPDATE_SNAPSHOTS=1`:
/// it fails, saying why, before it sends anything.
#[test]
fn the_corpus_test_refuses_to_rewrite_snapshots_in_ci() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["email::every_fixture_message_makes_the_events_of_its_snapshot", "--exact", "--nocapture"])
        .env("CI", "true")
        .env("HOOKGATE_UPDATE_SNAPSHOTS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("1 failed"), "the test fails: {stdout}\n{stderr}");
    assert!(stderr.contains("snapshots are not rewritten in CI"), "and says why: {stderr}");
}

/// Every message in `fixtures/email/` sent over SMTP to one hook; the reply and the events it
/// made must equal `<name>.expected.json`. With `HOOKGATE_UPDATE_SNAPSHOTS=1` (and not in CI)
/// the snapshots are written instead: review every changed one by hand before committing it.
#[tokio::test]
async fn every_fixture_message_makes_the_events_of_its_snapshot() {
    let mode =
        snapshot_mode(std::env::var_os("HOOKGATE_UPDATE_SNAPSHOTS").as_deref(), std::env::var_os("CI").as_deref())
            .unwrap_or_else(|refusal| panic!("{refusal}"));
    let folder = fixtures_folder();
    let mut fixtures: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".eml"))
        .collect();
    fixtures.sort();
    assert_eq!(fixtures, FIXTURES, "each fixture is listed in FIXTURES and has a test of its own");
    let gateway = Gateway::start_with(mail_options()).await;
    let mut mismatches = Vec::new();
    for file in FIXTURES {
        let FixtureOutcome { reply, events } = send_fixture(&gateway, file).await;
        let made: Vec<Value> = events
            .iter()
            .map(|event| {
                let mail = &event["source"]["mail"];
                json!({
                    "name": event["name"],
                    "data": event["data"],
                    "foundIn": mail["foundIn"],
                    "skipped": mail["skipped"],
                    "from": mail["from"],
                    "subject": mail["subject"],
                    "messageId": mail["messageId"],
                    "date": mail["date"],
                    "attachments": mail["attachments"],
                })
            })
            .collect();
        let reply = match &reply {
            Ok(_) => "accepted".to_owned(),
            // lettre's text, e.g. "permanent error (550): no JSON or JSON-LD ...".
            Err(error) => error.clone(),
        };
        let actual = json!({"reply": reply, "events": made});
        let snapshot = folder.join(file).with_extension("expected.json");
        if mode == Snapshots::Rewrite {
            std::fs::write(&snapshot, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
            continue;
        }
        let expected: Value = serde_json::from_str(&std::fs::read_to_string(&snapshot).unwrap_or_else(|_| {
            panic!("{file} has no snapshot; write it with HOOKGATE_UPDATE_SNAPSHOTS=1 and review it")
        }))
        .unwrap();
        if actual != expected {
            mismatches.push(format!("{file}:\n  expected {expected}\n  actual   {actual}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[tokio::test]
async fn broken_html_keeps_the_two_valid_blocks_and_names_the_malformed_third() {
    let gateway = Gateway::start_with(mail_options()).await;
    let FixtureOutcome { reply, events } = send_fixture(&gateway, "broken-html.eml").await;
    reply.unwrap();
    assert_eq!(events.len(), 2, "{events:#?}");
    // Block 1 is wrapped in an HTML comment, block 2 in CDATA: both read.
    assert_eq!(events[0]["name"], "kustomer.app.mailbox.Person");
    assert_eq!(events[0]["data"]["name"], "Ada Lovelace");
    assert_eq!(events[1]["name"], "kustomer.app.mailbox.UpdateAction");
    assert_eq!(events[1]["data"]["object"]["email"], "ada@legacy.example");
    // Block 3, `{"@type": "Person", "name": ` cut short, is named in each event with the reason.
    for event in &events {
        let mail = &event["source"]["mail"];
        assert_eq!(mail["foundIn"], json!(["jsonLd"]));
        let skipped = mail["skipped"].as_array().unwrap();
        assert_eq!(skipped.len(), 1, "{skipped:#?}");
        let third = &skipped[0];
        assert_eq!(third["kind"], "jsonLd");
        assert_eq!(third["part"], "1");
        assert_eq!(third["contentType"], "text/html");
        assert_eq!(third["block"], 3);
        assert_eq!(third["reason"], "notJson");
        let error = third["error"].as_str().unwrap();
        assert!(error.starts_with("EOF while parsing a value at line 1"), "the parser's words: {error}");
        assert!(mail.get("skippedNotListed").is_none(), "{mail}");
    }
}

#[tokio::test]
async fn apple_mail_json_attachment_becomes_one_event_and_is_described_not_copied() {
    let gateway = Gateway::start_with(mail_options()).await;
    let FixtureOutcome { reply, events } = send_fixture(&gateway, "apple-mail-json-attachment.eml").await;
    reply.unwrap();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["name"], ORDERS, "no @type: the hook's own name");
    assert_eq!(event["data"]["invoice"], "INV-2026-0042");
    assert_eq!(event["data"]["customer"]["email"], "buyer@corp.example");
    assert_eq!(event["data"]["lines"].as_array().unwrap().len(), 2);
    assert_eq!(event["data"]["total"], 43.0);
    let mail = &event["source"]["mail"];
    assert_eq!(mail["foundIn"], json!(["attachment"]));
    assert_eq!(mail["skipped"], json!([]), "the covering text has no JSON, and none is expected of it");
    assert_eq!(mail["date"], "2026-11-26T11:22:33+01:00", "the sender's offset is kept");
    // Size and SHA-256 of the decoded attachment, computed with Python's email package.
    assert_eq!(
        mail["attachments"],
        json!([attachment(
            Some("invoice.json"),
            "application/json",
            279,
            "4b581e877f28f502f240176253c9e0b51c4ff6d8bd19491ba4373437dab651de"
        )])
    );
}

#[tokio::test]
async fn latin1_flight_graph_gives_one_event_per_passenger_with_accents_decoded() {
    let gateway = Gateway::start_with(mail_options()).await;
    let FixtureOutcome { reply, events } = send_fixture(&gateway, "flight-reservation-graph-latin1.eml").await;
    reply.unwrap();
    assert_eq!(events.len(), 2, "one per @graph node: {events:#?}");
    let passengers: Vec<&Value> = events.iter().map(|event| &event["data"]["underName"]["name"]).collect();
    assert_eq!(passengers, ["José Müller", "Françoise Müller"], "ISO-8859-1 in base64, decoded");
    for event in &events {
        assert_eq!(event["name"], "kustomer.app.mailbox.FlightReservation");
        assert_eq!(event["data"]["@context"], "http://schema.org", "each node keeps the graph's @context");
        assert_eq!(event["data"]["reservationNumber"], "RXJ34P");
        assert_eq!(event["data"]["reservationFor"]["departureAirport"]["name"], "Zürich");
        assert_eq!(event["source"]["mail"]["skipped"], json!([]));
    }
}

#[tokio::test]
async fn a_forwarded_ticket_is_found_inside_the_forwarded_message_which_is_listed_as_attached() {
    let gateway = Gateway::start_with(mail_options()).await;
    let FixtureOutcome { reply, events } = send_fixture(&gateway, "forwarded-event-reservation.eml").await;
    reply.unwrap();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["name"], "kustomer.app.mailbox.EventReservation");
    assert_eq!(event["data"]["reservationNumber"], "E123456789");
    assert_eq!(event["data"]["reservationFor"]["location"]["address"]["addressLocality"], "Lisbon");
    let mail = &event["source"]["mail"];
    assert_eq!(mail["from"], "ana@people.example", "the facts are the forwarding message's");
    assert_eq!(mail["subject"], "Fwd: Your ticket for Rust Conference 2026");
    // The forwarded message's bytes between its part headers and the closing boundary, measured
    // with Python.
    assert_eq!(
        mail["attachments"],
        json!([attachment(
            None,
            "message/rfc822",
            707,
            "5ba0a61742c4598c506a48dbb08816b2657d383b5ce3b24edd718ea387d3b2d3"
        )])
    );
    assert_eq!(mail["skipped"], json!([]));
}

#[tokio::test]
async fn gmail_quoted_printable_order_decodes_the_dash_and_the_encoded_subject() {
    let gateway = Gateway::start_with(mail_options()).await;
    let FixtureOutcome { reply, events } = send_fixture(&gateway, "gmail-order-quoted-printable.eml").await;
    reply.unwrap();
    assert_eq!(events.len(), 1, "the plain-text alternative holds no JSON: {events:#?}");
    let event = &events[0];
    assert_eq!(event["name"], "kustomer.app.mailbox.Order");
    assert_eq!(event["data"]["orderNumber"], "ES-100234");
    assert_eq!(event["data"]["price"], "129.90");
    assert_eq!(event["data"]["acceptedOffer"]["itemOffered"]["name"], "Trail Running Shoes \u{2014} size 42");
    let mail = &event["source"]["mail"];
    assert_eq!(mail["subject"], "Your order ES-100234 is confirmed \u{2714}", "RFC 2047 Q-encoded UTF-8");
    assert_eq!(mail["messageId"], "CAF=order-ES-100234@shop.example");
    assert_eq!(mail["foundIn"], json!(["jsonLd"]));
    assert_eq!(mail["attachments"], json!([]));
    assert_eq!(mail["skipped"], json!([]));
}

#[tokio::test]
async fn a_jsonld_attachment_holding_an_array_gives_one_event_per_product() {
    let gateway = Gateway::start_with(mail_options()).await;
    let FixtureOutcome { reply, events } = send_fixture(&gateway, "jsonld-attachment-array.eml").await;
    reply.unwrap();
    assert_eq!(events.len(), 2, "{events:#?}");
    let products: Vec<(&Value, &Value)> =
        events.iter().map(|event| (&event["data"]["sku"], &event["data"]["name"])).collect();
    assert_eq!(products, [(&json!("SKU-1"), &json!("Lamp")), (&json!("SKU-2"), &json!("Desk"))]);
    for event in &events {
        assert_eq!(event["name"], "kustomer.app.mailbox.Product");
        let mail = &event["source"]["mail"];
        assert_eq!(mail["foundIn"], json!(["attachment"]));
        // Read as JSON-LD for its .jsonld name, though declared application/octet-stream.
        assert_eq!(
            mail["attachments"],
            json!([attachment(
                Some("products.jsonld"),
                "application/octet-stream",
                176,
                "89b796d21d2e977c2f4622c92414cc6631b65bae1f9f636cd238a513204dd979"
            )])
        );
        assert_eq!(mail["skipped"], json!([]));
    }
}

#[tokio::test]
async fn a_newsletter_without_data_is_refused_with_550_and_stores_nothing() {
    let gateway = Gateway::start_with(mail_options()).await;
    let FixtureOutcome { reply, events } = send_fixture(&gateway, "newsletter-no-data.eml").await;
    let refused = reply.unwrap_err();
    // Neither the tracking script (not JSON-LD) nor `{AUTUMN}` (prose) is data, and neither is
    // reported as a broken block: the reason ends where the sentence does.
    assert_eq!(refused, "permanent error (550): 5.6.0 no JSON or JSON-LD was found in the message");
    assert_eq!(events, Vec::<Value>::new(), "the 550 came after the message was read: nothing to wait for");
}

#[tokio::test]
async fn outlook_entity_escaped_json_ld_is_read_once_unescaped_and_the_inline_image_listed() {
    let gateway = Gateway::start_with(mail_options()).await;
    let FixtureOutcome { reply, events } = send_fixture(&gateway, "outlook-parcel-related-entities.eml").await;
    reply.unwrap();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["name"], "kustomer.app.mailbox.ParcelDelivery");
    assert_eq!(event["data"]["trackingNumber"], "1Z999AA10123456784");
    assert_eq!(event["data"]["deliveryAddress"]["streetAddress"], "1 Main St & Co", "&amp; decoded once");
    assert_eq!(event["data"]["partOfOrder"]["orderNumber"], "ES-100234");
    let mail = &event["source"]["mail"];
    assert_eq!(mail["foundIn"], json!(["jsonLd"]));
    assert_eq!(
        mail["attachments"],
        json!([attachment(
            Some("image001.png"),
            "image/png",
            29,
            "71fde3856a298a052c6edb5155638d8422114e55bf0e28374d90dea8be99ef6c"
        )])
    );
    assert_eq!(mail["skipped"], json!([]));
}

#[tokio::test]
async fn windows_1252_plain_text_json_decodes_the_euro_sign_and_the_accents() {
    let gateway = Gateway::start_with(mail_options()).await;
    let FixtureOutcome { reply, events } = send_fixture(&gateway, "plain-text-json-windows-1252.eml").await;
    reply.unwrap();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["name"], ORDERS, "no @type: the hook's own name");
    // 0x80 is the euro sign in windows-1252 (in ISO-8859-1 it is a control character).
    assert_eq!(event["data"], json!({"name": "Renée Zoë", "message": "Prices in € please", "consent": true}));
    let mail = &event["source"]["mail"];
    assert_eq!(mail["foundIn"], json!(["text"]));
    assert_eq!(mail["attachments"], json!([]));
    assert_eq!(mail["skipped"], json!([]), "the quoted \u{201c}Contact us\u{201d} before it is no JSON attempt");
}

/// Property: whatever a client sends, each connection ends (the listener neither panics nor
/// hangs on it) and the listener keeps serving. 64 random conversations mixing valid commands,
/// a real hook address, message data, garbage, bare bytes and over-long lines.
#[tokio::test(flavor = "multi_thread")]
async fn no_input_crashes_or_hangs_the_listener() {
    use proptest::prelude::*;
    let gateway = Gateway::start_with(mail_options().env("HOOKGATE_SMTP_COMMAND_TIMEOUT_SECS", "3")).await;
    let to = address_of(&gateway, ORDERS).await;
    let smtp = gateway.smtp;
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let chunk = prop_oneof![
            Just("EHLO fuzz.example\r\n".to_owned()),
            Just("HELO fuzz.example\r\n".to_owned()),
            Just("MAIL FROM:<a@fuzz.example> SIZE=100\r\n".to_owned()),
            Just(format!("RCPT TO:<{to}>\r\n")),
            Just("RCPT TO:<x@elsewhere.example>\r\n".to_owned()),
            Just("DATA\r\n".to_owned()),
            Just(
                "Subject: x\r\n\r\n<script type=\"application/ld+json\">{\"@type\":\"Order\"}</script>\r\n".to_owned()
            ),
            Just("\r\n.\r\n".to_owned()),
            Just("..leading dot\r\n".to_owned()),
            Just("RSET\r\nNOOP\r\n".to_owned()),
            Just("STARTTLS\r\n".to_owned()),
            Just("BDAT 10 LAST\r\n".to_owned()),
            Just("A".repeat(5000)),
            "[ -~]{0,64}\r\n",
            prop::collection::vec(any::<u8>(), 0..128).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        ];
        let conversation = prop::collection::vec(chunk, 1..24);
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config::with_cases(64));
        runner
            .run(&conversation, |chunks| {
                let mut stream = std::net::TcpStream::connect(smtp).unwrap();
                stream.set_read_timeout(Some(std::time::Duration::from_secs(15))).unwrap();
                for chunk in &chunks {
                    if stream.write_all(chunk.as_bytes()).is_err() {
                        break; // The server may close first (QUIT, too many errors).
                    }
                }
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let mut replies = Vec::new();
                let ended = stream.read_to_end(&mut replies);
                prop_assert!(
                    ended.is_ok() || ended.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
                    "the connection ends: {ended:?}"
                );
                prop_assert!(replies.starts_with(b"220 "), "greeted: {:?}", String::from_utf8_lossy(&replies));
                Ok(())
            })
            .unwrap();
    })
    .await
    .unwrap();
    let mut after = Conversation::open(&gateway).await;
    after.command("EHLO still.example", 250).await;
}

// ---------------------------------------------------------------------------
// The same extraction over HTTP, for teams whose MX points at a provider.

#[tokio::test]
async fn raw_mime_posted_to_the_hook_url_becomes_events() {
    let gateway = Gateway::start_with(mail_options()).await;
    let url = gateway.hook_url(KEYED).await;
    let message = html_mail("a@shop.example", "whoever@example", ORDER_HTML);
    let refused =
        gateway.http.post(&url).header("content-type", "message/rfc822").body(message.clone()).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "missing_key");

    let accepted = gateway
        .http
        .post(format!("{url}?key={MAIL_KEY}"))
        .header("content-type", "message/rfc822")
        .body(message.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let id = accepted.json::<Value>().await.unwrap()["events"][0]["id"].as_str().unwrap().to_owned();
    let event = gateway.event(&id).await;
    assert_eq!(event["data"]["orderNumber"], "A-1001");
    assert_eq!(event["source"]["mail"]["subject"], "Your order");
    let raw = gateway.admin_get(&format!("/api/events/{id}/raw")).await;
    assert_eq!(raw.headers()["content-type"], "message/rfc822");
    assert_eq!(raw.bytes().await.unwrap().to_vec(), message, "the exact message is kept");

    let nothing = gateway
        .http
        .post(gateway.hook_url(ORDERS).await)
        .header("content-type", "message/rfc822")
        .body(html_mail("a@shop.example", "x@example", "<p>hello</p>"))
        .send()
        .await
        .unwrap();
    assert_eq!(nothing.status(), 422);
    assert_eq!(nothing.json::<Value>().await.unwrap()["error"]["code"], "nothing_to_extract");
}

#[tokio::test]
async fn sendgrid_inbound_parse_in_raw_mode_is_read_with_its_envelope() {
    let gateway = Gateway::start_with(mail_options()).await;
    let url = gateway.hook_url(KEYED).await;
    let message = html_mail("Shop <orders@shop.example>", "orders@parse.example", ORDER_HTML);
    let form = reqwest::multipart::Form::new()
        .text("headers", "From: Shop <orders@shop.example>")
        .text("envelope", format!(r#"{{"to":["orders+{MAIL_KEY}@parse.example"],"from":"bounce@shop.example"}}"#))
        .text("SPF", "pass")
        .text("email", String::from_utf8(message).unwrap());
    let response = gateway.http.post(&url).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 202, "the key is the plus tag of the envelope's recipient");
    let id = response.json::<Value>().await.unwrap()["events"][0]["id"].as_str().unwrap().to_owned();
    let event = gateway.event(&id).await;
    assert_eq!(event["source"]["mail"]["envelopeFrom"], "bounce@shop.example");
    assert_eq!(event["source"]["mail"]["from"], "orders@shop.example");
    assert_eq!(event["data"]["@type"], "Order");
}

fn mailgun_form(message: &[u8], timestamp: i64, key: &str) -> reqwest::multipart::Form {
    use hmac::{KeyInit, Mac};
    let token = "e6a8c3e0f7f4a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9";
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{timestamp}{token}").as_bytes());
    reqwest::multipart::Form::new()
        .text("recipient", "orders@mg.example")
        .text("sender", "orders@shop.example")
        .text("timestamp", timestamp.to_string())
        .text("token", token)
        .text("signature", hex::encode(mac.finalize().into_bytes()))
        .text("body-mime", String::from_utf8(message.to_vec()).unwrap())
}

#[tokio::test]
async fn mailgun_routes_must_carry_mailguns_signature_when_the_hook_has_the_key() {
    let gateway = Gateway::start_with(mail_options()).await;
    let url = gateway.hook_url(ROUTED).await;
    let message = html_mail("orders@shop.example", "orders@mg.example", ORDER_HTML);
    let now = jiff::Timestamp::now().as_second();

    let forged = gateway.http.post(&url).multipart(mailgun_form(&message, now, "not-the-key")).send().await.unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(forged.json::<Value>().await.unwrap()["error"]["code"], "signature_mismatch");
    let stale =
        gateway.http.post(&url).multipart(mailgun_form(&message, now - 3600, MAILGUN_KEY)).send().await.unwrap();
    assert_eq!(stale.status(), 401);
    assert_eq!(stale.json::<Value>().await.unwrap()["error"]["code"], "timestamp_outside_tolerance");
    let raw =
        gateway.http.post(&url).header("content-type", "message/rfc822").body(message.clone()).send().await.unwrap();
    assert_eq!(raw.status(), 401, "raw MIME carries no Mailgun signature");
    assert_eq!(raw.json::<Value>().await.unwrap()["error"]["code"], "missing_header");
    assert!(events(&gateway).await.is_empty());

    let signed = gateway.http.post(&url).multipart(mailgun_form(&message, now, MAILGUN_KEY)).send().await.unwrap();
    assert_eq!(signed.status(), 202);
    let stored = events(&gateway).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["source"]["mail"]["envelopeFrom"], "orders@shop.example");
}

#[tokio::test]
async fn postmark_inbound_json_is_read_like_the_message_it_describes() {
    use base64::Engine;
    let gateway = Gateway::start_with(mail_options()).await;
    let url = gateway.hook_url(KEYED).await;
    let attachment = base64::engine::general_purpose::STANDARD.encode(br#"{"invoice":"INV-7","total":12.5}"#);
    let postmark = json!({
        "From": "billing@corp.example",
        "FromFull": {"Email": "billing@corp.example", "Name": "Billing"},
        "To": "inbound+ignored@inbound.postmarkapp.example",
        "ToFull": [{"Email": "inbound+ignored@inbound.postmarkapp.example", "Name": "", "MailboxHash": "ignored"}],
        "Subject": "Invoice\r\nBcc: injected@evil.example",
        "MessageID": "73e6d360-66eb-11e1-8e72-a8904824019b",
        "Date": "Fri, 1 Aug 2026 16:45:32 -04:00",
        "MailboxHash": MAIL_KEY,
        "TextBody": "Invoice attached.",
        "HtmlBody": "<p>Invoice attached.</p>",
        "Attachments": [{"Name": "invoice.json", "Content": attachment, "ContentType": "application/json", "ContentLength": 31}]
    });
    let response = gateway.http.post(&url).json(&postmark).send().await.unwrap();
    assert_eq!(response.status(), 202, "MailboxHash carries the key");
    let id = response.json::<Value>().await.unwrap()["events"][0]["id"].as_str().unwrap().to_owned();
    let event = gateway.event(&id).await;
    assert_eq!(event["data"], json!({"invoice": "INV-7", "total": 12.5}));
    let mail = &event["source"]["mail"];
    assert_eq!(mail["from"], "billing@corp.example");
    assert_eq!(mail["subject"], "Invoice  Bcc: injected@evil.example", "a posted value cannot add a header");
    assert_eq!(mail["attachments"][0]["name"], "invoice.json");
    assert_eq!(mail["foundIn"], json!(["attachment"]));
    let raw = gateway.admin_get(&format!("/api/events/{id}/raw")).await;
    assert_eq!(raw.headers()["content-type"], "application/json", "the provider's JSON is what is kept");
}

// ---------------------------------------------------------------------------
// DKIM and SPF, against records published on the test DNS server.

/// A sending domain of this test's own, with an Ed25519 DKIM key (selector `s1`) and an SPF
/// record that allows 127.0.0.1, published on the test DNS server.
struct SendingDomain {
    domain: String,
    /// The private key, PKCS #8.
    pkcs8: Vec<u8>,
}

impl SendingDomain {
    fn publish(spf: &str) -> SendingDomain {
        use base64::Engine;
        let domain = format!("d{}.example", hex::encode(rand::random::<[u8; 6]>()));
        let pkcs8 = mail_auth::common::crypto::Ed25519Key::generate_pkcs8().unwrap();
        let key = mail_auth::common::crypto::Ed25519Key::from_pkcs8_der(&pkcs8).unwrap();
        let public = base64::engine::general_purpose::STANDARD.encode(key.public_key());
        crate::dns::add_txt(&format!("s1._domainkey.{domain}"), &format!("v=DKIM1; k=ed25519; p={public}"));
        crate::dns::add_txt(&domain, spf);
        SendingDomain { domain, pkcs8 }
    }

    fn sender(&self) -> String {
        format!("orders@{}", self.domain)
    }

    /// `message` with a DKIM-Signature header of this domain prepended.
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        use mail_auth::common::headers::HeaderWriter;
        let key = mail_auth::common::crypto::Ed25519Key::from_pkcs8_der(&self.pkcs8).unwrap();
        let signature = mail_auth::dkim::DkimSigner::from_key(key)
            .domain(&self.domain)
            .selector("s1")
            .headers(["From", "To", "Subject", "Date", "Message-ID"])
            .sign(message)
            .unwrap();
        let mut signed = signature.to_header().into_bytes();
        signed.extend_from_slice(message);
        signed
    }
}

#[tokio::test]
async fn dkim_and_spf_results_are_recorded_with_the_event() {
    let gateway = Gateway::start_with(mail_options()).await;
    let to = address_of(&gateway, ORDERS).await;
    let shop = SendingDomain::publish("v=spf1 ip4:127.0.0.1 -all");
    let sender = shop.sender();
    let signed = shop.sign(&html_mail(&sender, &to, ORDER_HTML));
    send_raw(&gateway, &sender, &to, &signed).await.unwrap();
    let event = &events(&gateway).await[0];
    let authentication = &event["source"]["mail"]["authentication"];
    assert_eq!(
        authentication["dkim"],
        json!([{"domain": shop.domain, "selector": "s1", "result": "pass"}]),
        "{authentication}"
    );
    assert_eq!(authentication["spf"], json!({"domain": shop.domain, "result": "pass"}));

    // A message altered after signing, from an address SPF does not allow.
    let strict = SendingDomain::publish("v=spf1 ip4:192.0.2.1 -all");
    let sender = strict.sender();
    let mut tampered = strict.sign(&html_mail(&sender, &to, ORDER_HTML));
    let at = tampered.windows(6).position(|window| window == b"A-1001").unwrap();
    tampered[at..at + 6].copy_from_slice(b"A-6666");
    send_raw(&gateway, &sender, &to, &tampered).await.unwrap();
    let event = &events(&gateway).await[0];
    assert_eq!(event["data"]["orderNumber"], "A-6666");
    let authentication = &event["source"]["mail"]["authentication"];
    // mail-auth calls a body that no longer matches its signed hash "neutral", with the reason.
    assert_eq!(authentication["dkim"][0]["result"], "neutral", "{authentication}");
    assert!(authentication["dkim"][0]["reason"].as_str().unwrap().contains("body hash"), "{authentication}");
    assert_eq!(authentication["spf"]["result"], "fail");

    // Unsigned mail from a domain without records.
    send_raw(&gateway, "a@unknown-domain.example", &to, &html_mail("a@unknown-domain.example", &to, ORDER_HTML))
        .await
        .unwrap();
    let authentication = events(&gateway).await[0]["source"]["mail"]["authentication"].clone();
    assert_eq!(authentication, json!({"dkim": [], "spf": {"domain": "unknown-domain.example", "result": "none"}}));
}

#[tokio::test]
async fn a_hook_can_take_only_mail_signed_by_the_from_domain() {
    let gateway = Gateway::start_with(mail_options()).await;
    let to = address_of(&gateway, SIGNED_ONLY).await;
    let shop = SendingDomain::publish("v=spf1 -all");
    let sender = shop.sender();
    let unsigned = html_mail(&sender, &to, ORDER_HTML);
    let error = send_raw(&gateway, &sender, &to, &unsigned).await.unwrap_err();
    assert!(error.contains("550") && error.contains("DKIM"), "{error}");
    // Signed by another domain than the From header's: not aligned.
    let other = SendingDomain::publish("v=spf1 -all");
    let error = send_raw(&gateway, &sender, &to, &other.sign(&unsigned)).await.unwrap_err();
    assert!(error.contains("550"), "{error}");
    assert!(events(&gateway).await.is_empty());

    send_raw(&gateway, &sender, &to, &shop.sign(&unsigned)).await.unwrap();
    assert_eq!(events(&gateway).await.len(), 1);

    // Over HTTP the signature travels with the message; SPF has no client to check.
    let url = gateway.hook_url(SIGNED_ONLY).await;
    let response = gateway
        .http
        .post(&url)
        .header("content-type", "message/rfc822")
        .body(shop.sign(&unsigned))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["events"][0]["id"].as_str().unwrap().to_owned();
    let authentication = gateway.event(&id).await["source"]["mail"]["authentication"].clone();
    assert_eq!(authentication["dkim"][0]["result"], "pass");
    assert!(authentication.get("spf").is_none(), "{authentication}");
    let refused = gateway.http.post(&url).header("content-type", "message/rfc822").body(unsigned).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "not_authenticated");
}
