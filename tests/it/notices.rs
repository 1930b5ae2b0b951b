//! hookgate's own events (`hookgate.*`) end to end: a subscription disabled by a 410, one that
//! recovers, a delivery that gives up, a source refusing requests past the threshold, a
//! quarantined payload. Each is an ordinary event: listed by `/api/events`, delivered to a
//! subscription asking for `hookgate.*`, never to a catch-all `*` one, and never to the
//! subscription it is about once that one is disabled.
//!
//! Absences are checked after a barrier: once the operator's receiver got the notice, every
//! delivery of it was written in the same commit, and `settled` waits for none to be pending.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// A webhook receiver on 127.0.0.1 answering each request with the next status of its script
/// (200 once it is empty); keeps the bodies.
#[derive(Clone)]
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = Receiver { url, bodies: Arc::default() };
        let script = Arc::new(Mutex::new(script.to_vec()));
        let bodies = receiver.bodies.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| {
                let (bodies, script) = (bodies.clone(), script.clone());
                async move {
                    bodies.lock().unwrap().push(serde_json::from_str(&body).unwrap());
                    let mut script = script.lock().unwrap();
                    let status = if script.is_empty() { 200 } else { script.remove(0) };
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    /// The `type` of every request received so far.
    fn types(&self) -> Vec<String> {
        self.bodies.lock().unwrap().iter().map(|body| body["type"].as_str().unwrap().to_owned()).collect()
    }

    /// The first request of this type, once it came (at most 20 s).
    async fn first_of(&self, kind: &str) -> Value {
        eventually(Duration::from_secs(20), &format!("a {kind} request at {}", self.url), || async {
            self.types().iter().any(|received| received == kind)
        })
        .await;
        self.bodies.lock().unwrap().iter().find(|body| body["type"] == kind).unwrap().clone()
    }
}

fn open_targets() -> Options {
    Options::default()
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
}

async fn subscribe(gateway: &Gateway, url: &str, events: &[&str]) -> String {
    let body = json!({"url": url, "events": events});
    let response =
        gateway.http.post(gateway.url("/api/webhooks")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn post_order(gateway: &Gateway, n: u32) {
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let response = gateway.http.post(url).json(&json!({"n": n})).send().await.unwrap();
    assert_eq!(response.status(), 202);
}

/// The listed events of this name, newest first.
async fn listed(gateway: &Gateway, name: &str) -> Vec<Value> {
    gateway.admin_json(&format!("/api/events?name={name}")).await["data"].as_array().unwrap().clone()
}

/// The subscription's deliveries once none is pending (at most 20 s).
async fn settled(gateway: &Gateway, subscription: &str) -> Vec<Value> {
    let path = format!("/api/webhooks/{subscription}/deliveries");
    eventually(Duration::from_secs(20), &format!("no pending delivery for {subscription}"), || async {
        gateway.admin_json(&format!("{path}?status=pending")).await["total"] == 0
    })
    .await;
    gateway.admin_json(&path).await["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_410_gives_a_disabled_event_for_hookgate_subscribers_never_for_the_disabled_one_nor_a_catch_all() {
    let gateway = Gateway::start_with(open_targets()).await;
    let (gone, operator, catch_all) = tokio::join!(Receiver::start(&[410]), Receiver::start(&[]), Receiver::start(&[]));
    let gone_id = subscribe(&gateway, &gone.url, &["*"]).await;
    subscribe(&gateway, &operator.url, &["hookgate.*"]).await;
    let catch_all_id = subscribe(&gateway, &catch_all.url, &["*"]).await;
    post_order(&gateway, 1).await;

    let delivered = operator.first_of("hookgate.subscription.disabled").await;
    let data = &delivered["data"]["data"];
    assert_eq!(data["subscriptionId"], gone_id.as_str());
    assert_eq!(data["reason"], "gone");
    assert_eq!(data["url"], gone.url.as_str());
    assert!(data["fix"].as_str().unwrap().contains(&format!("PATCH /api/webhooks/{gone_id}")), "{data}");
    let events = listed(&gateway, "hookgate.subscription.disabled").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!((&events[0]["app"], &events[0]["hookType"]), (&json!("hookgate"), &json!("internal")));
    assert_eq!(events[0]["id"], delivered["data"]["id"]);

    // The notice's deliveries were written with it: none is pending for either catch-all.
    assert_eq!(settled(&gateway, &gone_id).await.len(), 1, "only the order, never the notice about it");
    assert_eq!(settled(&gateway, &catch_all_id).await.len(), 1, "a catch-all does not get hookgate events");
    assert_eq!(gone.types(), [ORDER_UPDATE]);
    assert_eq!(catch_all.types(), [ORDER_UPDATE]);
    assert_eq!(operator.types(), ["hookgate.subscription.disabled"], "the operator asked for hookgate.* only");
}

#[tokio::test]
async fn a_first_success_after_failures_is_a_recovery_and_a_delivery_out_of_retries_is_exhausted() {
    let gateway = Gateway::start_with(open_targets().env("HOOKGATE_DELIVERY_RETRY_SCHEDULE_SECS", "[1]")).await;
    let (flaky, down, operator) =
        tokio::join!(Receiver::start(&[500]), Receiver::start(&[503, 503]), Receiver::start(&[]));
    let flaky_id = subscribe(&gateway, &flaky.url, &[ORDER_UPDATE]).await;
    let down_id = subscribe(&gateway, &down.url, &[ORDER_UPDATE]).await;
    subscribe(&gateway, &operator.url, &["hookgate.subscription.*", "hookgate.delivery.exhausted"]).await;
    post_order(&gateway, 1).await;

    let recovered = operator.first_of("hookgate.subscription.recovered").await["data"]["data"].clone();
    assert_eq!(recovered["subscriptionId"], flaky_id.as_str());
    assert!(recovered["failingSince"].as_str().is_some(), "{recovered}");
    let exhausted = operator.first_of("hookgate.delivery.exhausted").await["data"]["data"].clone();
    let down_deliveries = settled(&gateway, &down_id).await;
    assert_eq!(exhausted["subscriptionId"], down_id.as_str());
    assert_eq!(exhausted["deliveryId"], down_deliveries[0]["id"]);
    assert_eq!(exhausted["eventName"], ORDER_UPDATE);
    assert_eq!((exhausted["attempts"].as_u64(), exhausted["statusCode"].as_u64()), (Some(2), Some(503)));
    assert_eq!(listed(&gateway, "hookgate.subscription.recovered").await.len(), 1);
    assert_eq!(listed(&gateway, "hookgate.delivery.exhausted").await.len(), 1);
    assert!(listed(&gateway, "hookgate.subscription.disabled").await.is_empty());
}

#[tokio::test]
async fn a_source_refusing_requests_past_the_threshold_gives_one_event_and_a_quarantine_gives_another() {
    let app = json!({"app": "ops", "version": "1", "hooks": [
        {"eventName": "stripe.event", "type": "web", "source": {
            "path": "stripe", "scheme": "stripe", "secrets": ["${NOTICES_STRIPE_SECRET}"]}},
        {"eventName": "kustomer.app.ops.order", "type": "form", "shape": {
            "schema": {"type": "object", "required": ["orderId"]}, "onInvalid": "quarantine"}}
    ]});
    let options = Options { definitions: vec![("ops.json".into(), app)], env: vec![] }
        .env("NOTICES_STRIPE_SECRET", "whsec_notices")
        .env("HOOKGATE_NOTIFY_REJECTIONS_THRESHOLD", "3");
    let gateway = Gateway::start_with(options).await;
    for n in 0..5 {
        let response = gateway
            .http
            .post(gateway.url("/api/webhooks/stripe"))
            .header("stripe-signature", format!("t={},v1=00", jiff::Timestamp::now().as_second()))
            .body(format!("{{\"id\": \"evt_{n}\"}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    eventually(Duration::from_secs(10), "the rejections event", || async {
        !listed(&gateway, "hookgate.source.rejections").await.is_empty()
    })
    .await;

    // A later notice is the barrier: the last two rejections, in the quiet window, gave none.
    let response = gateway.post_raw("kustomer.app.ops.order", "application/json", r#"{"no": "orderId"}"#).await;
    assert_eq!(response.status(), 202);
    let quarantined = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "the quarantine event", || async {
        !listed(&gateway, "hookgate.quarantine.received").await.is_empty()
    })
    .await;
    let notice = &listed(&gateway, "hookgate.quarantine.received").await[0]["data"];
    assert_eq!((&notice["eventId"], &notice["eventName"]), (&json!(quarantined), &json!("kustomer.app.ops.order")));

    let rejections = listed(&gateway, "hookgate.source.rejections").await;
    assert_eq!(rejections.len(), 1, "{rejections:#?}");
    let data = &rejections[0]["data"];
    assert_eq!((&data["source"], &data["count"], &data["windowSecs"]), (&json!("stripe"), &json!(3), &json!(60)));
    assert_eq!(data["reasons"], json!({"signature_mismatch": 3}));
}

// ---------------------------------------------------------------------------------------------
// Mail

/// An SMTP server on 127.0.0.1 speaking the real protocol (greeting, EHLO, MAIL, RCPT, DATA,
/// QUIT), keeping each message. Its first `refuse` connections are answered `421` and closed,
/// as a relay that is down for maintenance does.
#[derive(Clone)]
struct SmtpSink {
    address: std::net::SocketAddr,
    messages: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<usize>>,
}

impl SmtpSink {
    async fn start(refuse: usize) -> SmtpSink {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink =
            SmtpSink { address: listener.local_addr().unwrap(), messages: Arc::default(), refused: Arc::default() };
        let state = sink.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let state = state.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let refusing = {
                        let mut refused = state.refused.lock().unwrap();
                        let refusing = *refused < refuse;
                        *refused += usize::from(refusing);
                        refusing
                    };
                    if refusing {
                        let _ = write.write_all(b"421 sink.test down for maintenance\r\n").await;
                        return;
                    }
                    let _ = write.write_all(b"220 sink.test ESMTP\r\n").await;
                    let mut lines = BufReader::new(read);
                    let mut line = String::new();
                    while lines.read_line(&mut line).await.is_ok_and(|read| read > 0) {
                        let command = line.trim_end().to_ascii_uppercase();
                        let reply: &[u8] = if command.starts_with("EHLO") || command.starts_with("HELO") {
                            b"250 sink.test\r\n"
                        } else if command == "DATA" {
                            let _ = write.write_all(b"354 go ahead\r\n").await;
                            let mut message = String::new();
                            loop {
                                line.clear();
                                if lines.read_line(&mut line).await.unwrap_or(0) == 0 || line == ".\r\n" {
                                    break;
                                }
                                // RFC 5321 4.5.2: the client doubles a line's leading dot; undo it.
                                message.push_str(line.strip_prefix('.').unwrap_or(&line));
                            }
                            state.messages.lock().unwrap().push(message);
                            b"250 queued\r\n"
                        } else if command == "QUIT" {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        let _ = write.write_all(reply).await;
                        line.clear();
                    }
                });
            }
        });
        sink
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until `count` messages arrived (at most 30 s).
    async fn wait_for(&self, count: usize) -> Vec<String> {
        eventually(Duration::from_secs(30), &format!("{count} mails at {}", self.address), || async {
            self.messages().len() >= count
        })
        .await;
        self.messages()
    }
}

fn mailing(sink: &SmtpSink) -> Options {
    open_targets()
        .env("HOOKGATE_NOTIFY_EMAIL", "ops@example.com, oncall@example.com")
        .env("HOOKGATE_SMTP_RELAY", &format!("smtp://{}", sink.address))
}

/// A received mail, parsed: its subject, recipients, sender, and its text and HTML parts.
struct Mail {
    subject: String,
    to: Vec<String>,
    from: String,
    text: String,
    html: String,
}

fn parse(message: &str) -> Mail {
    let parsed = mail_parser::MessageParser::default().parse(message.as_bytes()).expect("a MIME message");
    let addresses = |address: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        address
            .map(|address| address.iter().filter_map(|a| a.address()).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    Mail {
        subject: parsed.subject().unwrap_or_default().to_owned(),
        to: addresses(parsed.to()),
        from: addresses(parsed.from()).join(","),
        text: parsed.body_text(0).expect("a text part").into_owned(),
        html: parsed.body_html(0).expect("an HTML part").into_owned(),
    }
}

#[tokio::test]
async fn a_410_is_mailed_once_in_text_and_html_with_the_command_that_fixes_it() {
    let sink = SmtpSink::start(0).await;
    let gateway = Gateway::start_with(mailing(&sink)).await;
    let gone = Receiver::start(&[410]).await;
    let gone_id = subscribe(&gateway, &gone.url, &[ORDER_UPDATE]).await;
    post_order(&gateway, 1).await;

    let messages = sink.wait_for(1).await;
    let mail = parse(&messages[0]);
    assert_eq!(mail.to, ["ops@example.com", "oncall@example.com"]);
    assert_eq!(mail.from, "hookgate@localhost");
    assert_eq!(
        mail.subject,
        format!("[hookgate] Subscription {gone_id} ({}) was disabled: its endpoint answered 410 Gone.", gone.url)
    );
    let fix = format!("PATCH {}/api/webhooks/{gone_id} with {{\"status\": \"active\"}}", gateway.base);
    let event = &listed(&gateway, "hookgate.subscription.disabled").await[0];
    let link = format!("{}/api/events/{}", gateway.base, event["id"].as_str().unwrap());
    for part in [&mail.text, &mail.html] {
        assert!(
            part.contains(&fix.replace('"', if part == &mail.html { "&quot;" } else { "\"" })) || part.contains(&fix),
            "{fix} in {part}"
        );
        assert!(part.contains(&link) && part.contains("hookgate.subscription.disabled"), "{part}");
        assert!(part.contains(&event["receivedAt"].as_str().unwrap()[..19]), "when it happened: {part}");
    }
    assert_eq!(messages.len(), 1);
}

#[tokio::test]
async fn a_burst_of_failures_is_one_mail_per_subscription_and_kind() {
    let sink = SmtpSink::start(0).await;
    let gateway = Gateway::start_with(mailing(&sink).env("HOOKGATE_DELIVERY_RETRY_SCHEDULE_SECS", "[]")).await;
    let down = Receiver::start(&[500; 10]).await;
    let down_id = subscribe(&gateway, &down.url, &[ORDER_UPDATE]).await;
    for n in 0..10 {
        post_order(&gateway, n).await;
    }
    eventually(Duration::from_secs(20), "ten exhausted deliveries", || async {
        listed(&gateway, "hookgate.delivery.exhausted").await.len() == 10
    })
    .await;
    // The barrier: a later notice of another kind and subscription. The outbox takes events in
    // commit order and sends the oldest due mail first, so when this mail is in, any exhausted
    // mail that was due went before it.
    let gone = Receiver::start(&[410]).await;
    let gone_id = subscribe(&gateway, &gone.url, &[SMALL_FORM]).await;
    let small = gateway.http.post(gateway.hook_url(SMALL_FORM).await).json(&json!({"n": 0})).send().await.unwrap();
    assert_eq!(small.status(), 202);
    eventually(Duration::from_secs(30), "the disabled mail", || async {
        sink.messages().iter().any(|message| message.contains(&gone_id))
    })
    .await;

    let messages = sink.messages();
    assert_eq!(messages.len(), 2, "one exhausted mail and one disabled mail: {messages:#?}");
    let exhausted: Vec<Mail> =
        messages.iter().map(|message| parse(message)).filter(|mail| mail.text.contains(&down_id)).collect();
    assert_eq!(exhausted.len(), 1);
    // The first mail tells of what had come by the time it went; the rest waits for the next.
    let told = exhausted[0].text.matches("  Delivery dlv_").count();
    assert!((1..=10).contains(&told), "{}", exhausted[0].text);
    let expected = match told {
        1 => "gave up after 1 attempts".to_owned(),
        n => format!("[hookgate] {n} × hookgate.delivery.exhausted for {down_id}"),
    };
    assert!(exhausted[0].subject.contains(&expected), "{expected} in {}", exhausted[0].subject);
}

#[tokio::test]
async fn a_relay_that_is_down_delays_the_mail_and_does_not_lose_it() {
    let sink = SmtpSink::start(2).await;
    let gateway = Gateway::start_with(mailing(&sink)).await;
    let gone = Receiver::start(&[410]).await;
    let gone_id = subscribe(&gateway, &gone.url, &[ORDER_UPDATE]).await;
    post_order(&gateway, 1).await;
    let messages = sink.wait_for(1).await;
    assert_eq!(*sink.refused.lock().unwrap(), 2, "the relay refused twice before it took the mail");
    assert_eq!(messages.len(), 1);
    assert!(parse(&messages[0]).subject.contains(&gone_id), "{}", messages[0]);
}
