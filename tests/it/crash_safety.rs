//! Crash safety under mixed load: form posts, Stripe-signed source requests and SMTP mail run
//! together against the real binary while it is killed with SIGKILL at random moments, six times,
//! and started again on the same database file (on new ports) each time. Two subscriptions
//! deliver every event to receivers in the test, and with `HOOKGATE_TEST_NATS_URL` every event
//! is also published to JetStream. Afterwards, what the clients saw acknowledged
//! (a 2xx with an event id, or SMTP `250`) is compared with what is stored and what was
//! delivered: no acknowledged event is lost, a Stripe event retried after a kill with the same
//! delivery id stays one event, and every stored event reaches each subscription at least once
//! (and the stream exactly once).
//!
//! `durability::acknowledged_events_survive_sigkill` proves one kill under a single kind of
//! load; this one proves the whole path, deliveries included, across repeated kills.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use lettre::AsyncTransport;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::client::Tls;
use rand::Rng;
use serde_json::{Value, json};

use crate::deliveries::Receiver;
use crate::support::*;

const STRIPE_SECRET: &str = "whsec_crash_safety_secret";
const KILLS: usize = 6;

fn stripe_app() -> Value {
    json!({"app": "platforms", "version": "1", "hooks": [
        {"eventName": "stripe.event", "type": "web", "source": {
            "path": "stripe", "scheme": "stripe", "secrets": ["${CRASH_STRIPE_SECRET}"],
            "eventName": "stripe.{$.type}", "deliveryId": "{$.id}"}}
    ]})
}

fn options() -> Options {
    let mut options = Options::default()
        .env("CRASH_STRIPE_SECRET", STRIPE_SECRET)
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
        .env("HOOKGATE_DELIVERY_RETRY_SCHEDULE_SECS", "[1, 1, 1, 1, 1, 1, 1, 1]")
        // What a killed process had claimed comes due again after the lease: keep it short.
        .env("HOOKGATE_DELIVERY_TIMEOUT_SECS", "2")
        .env("HOOKGATE_DELIVERY_LEASE_SECS", "4")
        // The load comes from one address: no per-client rate in the way.
        .env("HOOKGATE_CLIENT_REQUESTS_PER_SECOND", "0")
        .env("HOOKGATE_SMTP_CLIENT_MESSAGES_PER_MINUTE", "0");
    options.definitions.push(("platforms.json".into(), stripe_app()));
    options
}

/// Where the running gateway listens; it moves with every restart.
#[derive(Clone)]
struct Endpoints {
    base: String,
    smtp: SocketAddr,
}

/// What the clients were told.
#[derive(Default)]
struct Ledger {
    /// Event ids of acknowledged form posts.
    forms: Vec<String>,
    /// Per Stripe delivery id, the event id of every acknowledgement it got.
    stripe: HashMap<String, Vec<String>>,
    /// Per message (its order number), the event ids of its `250`s.
    mail: HashMap<String, Vec<String>>,
    /// Messages of which an attempt ended without any answer (the kill came first): the
    /// message may have been stored without its `250`, and the sender's retry stores it again.
    mail_unanswered: HashSet<String>,
    /// Attempts that were not acknowledged: cut off by a kill, or sent while no process ran.
    cut_off: usize,
}

impl Ledger {
    fn acknowledged(&self) -> HashSet<String> {
        let stripe = self.stripe.values().flatten();
        let mail = self.mail.values().flatten();
        self.forms.iter().chain(stripe).chain(mail).cloned().collect()
    }
}

struct Load {
    endpoints: Arc<RwLock<Endpoints>>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    http: reqwest::Client,
}

impl Load {
    fn endpoints(&self) -> Endpoints {
        self.endpoints.read().unwrap().clone()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Form posts, each a new event (a form has no delivery id, so a cut-off post is not retried).
    async fn forms(self: Arc<Self>, url_path: String, client: usize) {
        for n in 0.. {
            if self.stopping() {
                return;
            }
            let url = format!("{}{url_path}", self.endpoints().base);
            let sent = self.http.post(url).json(&json!({"client": client, "n": n})).send().await;
            let acknowledged = match sent {
                Ok(response) if response.status() == 202 => response.json::<Value>().await.ok(),
                _ => None,
            };
            match acknowledged.and_then(|reply| reply["id"].as_str().map(str::to_owned)) {
                Some(id) => self.ledger.lock().unwrap().forms.push(id),
                None => {
                    self.ledger.lock().unwrap().cut_off += 1;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
        }
    }

    /// Stripe events, each sent (freshly signed) until it is acknowledged, as Stripe retries.
    async fn stripe(self: Arc<Self>, client: usize) {
        for n in 0.. {
            let delivery = format!("evt_crash_{client}_{n}");
            let body = json!({"id": delivery, "object": "event", "type": "invoice.paid", "data": {"object": {"n": n}}})
                .to_string();
            loop {
                if self.stopping() {
                    return;
                }
                let base = self.endpoints().base;
                let sent = post_stripe_to(&self.http, &base, &body, &stripe_signature(STRIPE_SECRET, &body)).await;
                let acknowledged = match sent {
                    Ok(response) if response.status() == 200 => response.json::<Value>().await.ok(),
                    _ => None,
                };
                if let Some(id) = acknowledged.and_then(|reply| reply["id"].as_str().map(str::to_owned)) {
                    self.ledger.lock().unwrap().stripe.entry(delivery.clone()).or_default().push(id);
                    break;
                }
                self.ledger.lock().unwrap().cut_off += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    }

    /// Mail over SMTP with lettre, each message sent until it gets `250`, as an MTA retries.
    async fn mail(self: Arc<Self>, to: String, client: usize) {
        for n in 0.. {
            let order = format!("M-{client}-{n}");
            let message = format!(
                "From: orders@shop.example\r\nTo: {to}\r\nSubject: Order {order}\r\nMessage-ID: <{order}@shop.example>\r\n\
                 MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
                json!({"order": order})
            );
            loop {
                if self.stopping() {
                    return;
                }
                let smtp = self.endpoints().smtp;
                match send_mail(smtp, &to, message.as_bytes()).await {
                    Ok(id) => {
                        self.ledger.lock().unwrap().mail.entry(order.clone()).or_default().push(id);
                        break;
                    }
                    Err(answered) => {
                        let mut ledger = self.ledger.lock().unwrap();
                        ledger.cut_off += 1;
                        if !answered {
                            ledger.mail_unanswered.insert(order.clone());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    }
}

/// Sends one message; its event id on `250`, else whether the server answered at all (a refusal
/// with a code) rather than the connection failing or being cut.
async fn send_mail(smtp: SocketAddr, to: &str, raw: &[u8]) -> Result<String, bool> {
    let transport = AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(smtp.ip().to_string())
        .port(smtp.port())
        .tls(Tls::None)
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let envelope =
        lettre::address::Envelope::new(Some("orders@shop.example".parse().unwrap()), vec![to.parse().unwrap()])
            .unwrap();
    match transport.send_raw(&envelope, raw).await {
        Ok(response) => {
            let text = response.message().collect::<Vec<_>>().join(" ");
            Ok(text
                .split_whitespace()
                .find(|word| word.starts_with("evt_"))
                .expect("an event id in the 250")
                .to_owned())
        }
        Err(error) => Err(error.is_transient() || error.is_permanent()),
    }
}

/// Every stored event, read page by page.
async fn stored_events(gateway: &Gateway) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/events?limit=500&cursor={cursor}"),
            None => "/api/events?limit=500".to_owned(),
        };
        let page = gateway.admin_json(&path).await;
        events.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return events,
        }
    }
}

/// The event ids a receiver was sent (the Standard Webhooks `webhook-id`), with how many times.
fn delivered_ids(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in receiver.received() {
        *counts.entry(request.headers["webhook-id"].clone()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn acknowledged_events_survive_repeated_sigkills_under_mixed_load_once_each_and_are_delivered() {
    let started = Instant::now();
    let test =
        "crash_safety::acknowledged_events_survive_repeated_sigkills_under_mixed_load_once_each_and_are_delivered";
    // With a NATS server, every event is published too (else that part alone is skipped).
    let nats = crate::nats::nats_url(&format!("{test} (its NATS part)")).await;
    let (stream, prefix) = crate::nats::unique();
    let mut options = options();
    if let Some(url) = &nats {
        options = options
            .env("HOOKGATE_NATS", url)
            .env("HOOKGATE_NATS_STREAM", &stream)
            .env("HOOKGATE_NATS_SUBJECT_PREFIX", &prefix);
    }
    let mut gateway = Gateway::start_with(options).await;
    let (first, second) = tokio::join!(Receiver::start(&[]), Receiver::start(&[]));
    for receiver in [&first, &second] {
        let body = json!({"url": receiver.url, "events": ["*"]});
        let response =
            gateway.http.post(gateway.url("/api/webhooks")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201, "the subscription to {} is created", receiver.url);
    }
    let form_path = gateway.hook_url(ORDER_UPDATE).await.strip_prefix(&gateway.base).unwrap().to_owned();
    let hooks = gateway.admin_json("/api/hooks").await;
    let to = hooks["data"].as_array().unwrap().iter().find(|hook| hook["eventName"] == SHOP_MAIL).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();

    let load = Arc::new(Load {
        endpoints: Arc::new(RwLock::new(Endpoints { base: gateway.base.clone(), smtp: gateway.smtp })),
        ledger: Arc::default(),
        stop: Arc::default(),
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
    });
    let mut clients = Vec::new();
    for client in 0..3 {
        clients.push(tokio::spawn(load.clone().forms(form_path.clone(), client)));
        clients.push(tokio::spawn(load.clone().stripe(client)));
    }
    for client in 0..2 {
        clients.push(tokio::spawn(load.clone().mail(to.clone(), client)));
    }

    let mut rng = rand::rng();
    for _ in 0..KILLS {
        let before = load.ledger.lock().unwrap().acknowledged().len();
        // Some of everything is acknowledged by each process before it is killed, at a moment
        // that differs from run to run.
        eventually(Duration::from_secs(20), "acknowledgements from the new process", || async {
            let ledger = load.ledger.lock().unwrap();
            ledger.acknowledged().len() >= before + 20
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
        gateway.kill();
        gateway.restart().await;
        *load.endpoints.write().unwrap() = Endpoints { base: gateway.base.clone(), smtp: gateway.smtp };
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let ledger = std::mem::take(&mut *load.ledger.lock().unwrap());
    let acknowledged = ledger.acknowledged();

    // Nothing acknowledged is lost.
    let events = stored_events(&gateway).await;
    let stored: HashSet<String> = events.iter().map(|event| event["id"].as_str().unwrap().to_owned()).collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged events were lost: {:?}", lost.len(), acknowledged.len(), lost);

    // A Stripe delivery id is one event, however often it was sent.
    for (delivery, ids) in &ledger.stripe {
        assert!(ids.iter().all(|id| *id == ids[0]), "{delivery} was acknowledged as several events: {ids:?}");
    }
    let mut per_delivery: HashMap<String, usize> = HashMap::new();
    let mut per_order: HashMap<String, usize> = HashMap::new();
    for event in &events {
        let name = event["name"].as_str().unwrap();
        if name.starts_with("stripe.") {
            *per_delivery.entry(event["data"]["id"].as_str().unwrap().to_owned()).or_default() += 1;
        } else if name == SHOP_MAIL {
            *per_order.entry(event["data"]["order"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    let repeated: Vec<_> = per_delivery.iter().filter(|(_, count)| **count > 1).collect();
    assert!(repeated.is_empty(), "Stripe deliveries stored more than once: {repeated:?}");
    // Mail has no delivery id: a message is stored once, unless an attempt of it was cut off
    // before its answer (then the sender's retry is a second event, as with any MTA).
    let repeated_mail: Vec<_> =
        per_order.iter().filter(|(order, count)| **count > 1 && !ledger.mail_unanswered.contains(*order)).collect();
    assert!(repeated_mail.is_empty(), "messages stored more than once without a cut-off attempt: {repeated_mail:?}");

    // Every stored event reaches each subscription at least once (hookgate's own notices go
    // only to subscriptions that name them).
    let to_deliver: HashSet<&str> = events
        .iter()
        .filter(|event| !event["name"].as_str().unwrap().starts_with("hookgate."))
        .map(|event| event["id"].as_str().unwrap())
        .collect();
    for receiver in [&first, &second] {
        let what = format!("every stored event delivered to {}", receiver.url);
        eventually(Duration::from_secs(40), &what, || async {
            let sent = delivered_ids(receiver);
            to_deliver.iter().all(|id| sent.contains_key(*id))
        })
        .await;
    }
    // And is published to JetStream once: its id is the message id, which JetStream dedups.
    let mut published = HashSet::new();
    if let Some(url) = &nats {
        let jetstream = crate::nats::jetstream(url).await;
        let what = format!("{} events in the stream {stream}", to_deliver.len());
        eventually(Duration::from_secs(40), &what, || async {
            crate::nats::stream_messages(&jetstream, &stream).await >= to_deliver.len() as u64
        })
        .await;
        let handle = jetstream.get_stream(&stream).await.unwrap();
        for sequence in 1..=crate::nats::stream_messages(&jetstream, &stream).await {
            let message = handle.get_raw_message(sequence).await.unwrap();
            let id = message.headers.get("Nats-Msg-Id").expect("a message id").as_str().to_owned();
            assert!(published.insert(id.clone()), "{id} was published twice");
        }
        let unpublished: Vec<_> = to_deliver.iter().filter(|id| !published.contains(**id)).collect();
        assert!(unpublished.is_empty(), "stored events never published: {unpublished:?}");
    }
    let resent: usize =
        [&first, &second].iter().map(|receiver| delivered_ids(receiver).values().sum::<usize>()).sum::<usize>()
            - 2 * to_deliver.len();
    eprintln!(
        "crash_safety: {KILLS} kills in {:?}; acknowledged {} (forms {}, stripe {}, mail {}), stored {}, \
         cut-off attempts {}, mail stored twice after a cut-off {}, deliveries sent again {resent}, \
         published to NATS {}",
        started.elapsed(),
        acknowledged.len(),
        ledger.forms.len(),
        ledger.stripe.len(),
        ledger.mail.len(),
        stored.len(),
        ledger.cut_off,
        per_order.values().filter(|count| **count > 1).count(),
        published.len(),
    );
}
