//! Several gateway nodes on one PostgreSQL database: a mixed load (form posts, Stripe-signed
//! source requests, email over SMTP) split across three nodes, one of them killed with SIGKILL
//! in the middle, loses nothing and stores nothing twice; every event is delivered, never by two
//! nodes at once; the same signed request reaching two nodes at once is one event; and a change
//! made on one node is in force on the others within a second.

use axum::http::{HeaderMap, StatusCode};
use lettre::AsyncTransport;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

const STRIPE_SECRET: &str = "whsec_nodes_test_secret";
const MAIL_DOMAIN: &str = "hooks.nodes.example";

fn definitions() -> Vec<(String, Value)> {
    let stripe = json!({"app": "platforms", "version": "1", "hooks": [
        {"eventName": "stripe.event", "type": "web", "source": {
            "path": "stripe", "scheme": "stripe", "secrets": ["${TEST_STRIPE_SECRET}"],
            "eventName": "stripe.{$.type}", "deliveryId": "{$.id}"}}]});
    vec![("shop.json".into(), shop_definition()), ("platforms.json".into(), stripe)]
}

/// A node's settings: deliveries to the local receiver, short timeouts and leases so that a
/// killed node's claimed deliveries come back within seconds.
fn node_options() -> Options {
    Options { definitions: definitions(), ..Options::default() }
        .env("TEST_STRIPE_SECRET", STRIPE_SECRET)
        .env("HOOKGATE_MAIL_DOMAIN", MAIL_DOMAIN)
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
        .env("HOOKGATE_DELIVERY_TIMEOUT_SECS", "2")
        .env("HOOKGATE_DELIVERY_LEASE_SECS", "4")
        .env("HOOKGATE_DELIVERY_RETRY_SCHEDULE_SECS", "[1, 1, 1, 1, 1]")
}

/// A receiver that answers every delivery after a short pause, counting each event's requests
/// and every time a request for an event arrived while another for the same event was still
/// being answered (two nodes sending one delivery at once).
#[derive(Clone, Default)]
struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
}

#[derive(Default)]
struct ReceiverState {
    in_flight: HashMap<String, usize>,
    received: BTreeMap<String, usize>,
    overlaps: Vec<String>,
}

/// One request being answered; dropping it ends its time in flight.
struct InFlight {
    state: Arc<Mutex<ReceiverState>>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.lock()
            && let Some(count) = state.in_flight.get_mut(&self.id)
        {
            *count -= 1;
        }
    }
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = Receiver::default();
        let state = receiver.state.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap| {
                let state = state.clone();
                async move {
                    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    {
                        let mut state = state.lock().unwrap();
                        let in_flight = state.in_flight.entry(id.clone()).or_default();
                        *in_flight += 1;
                        if *in_flight > 1 {
                            state.overlaps.push(id.clone());
                        }
                    }
                    // Ends the request's time in flight however it ends: answered, or dropped
                    // when the sending node dies and its connection closes.
                    let _answering = InFlight { state: state.clone(), id: id.clone() };
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    *state.lock().unwrap().received.entry(id).or_default() += 1;
                    StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn received(&self) -> BTreeMap<String, usize> {
        self.state.lock().unwrap().received.clone()
    }

    fn overlaps(&self) -> Vec<String> {
        self.state.lock().unwrap().overlaps.clone()
    }
}

fn stripe_request(id: &str) -> (String, String) {
    let body =
        json!({"id": id, "object": "event", "type": "payment_intent.succeeded", "data": {"object": {"amount": 2000}}})
            .to_string();
    let signature = stripe_signature(STRIPE_SECRET, &body);
    (body, signature)
}

/// The reply to a signed Stripe request to the node at `base`, when it acknowledged it.
async fn acknowledged_stripe(http: &reqwest::Client, base: &str, body: &str, signature: &str) -> Option<Value> {
    let response = post_stripe_to(http, base, body, signature).await.ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

async fn send_mail(smtp: std::net::SocketAddr, to: &str, order: &str) -> bool {
    let transport = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(smtp.ip().to_string())
        .port(smtp.port())
        .tls(lettre::transport::smtp::client::Tls::None)
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let raw = format!(
        "From: orders@shop.example\r\nTo: {to}\r\nSubject: Order {order}\r\nMessage-ID: <{order}@shop.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><script type=\"application/ld+json\">{{\"@type\":\"Order\",\"orderNumber\":\"{order}\"}}</script></body></html>\r\n"
    );
    let envelope =
        lettre::address::Envelope::new(Some("orders@shop.example".parse().unwrap()), vec![to.parse().unwrap()])
            .unwrap();
    transport.send_raw(&envelope, raw.as_bytes()).await.is_ok()
}

/// What a client saw acknowledged, by the marker each request carried.
#[derive(Default)]
struct Acknowledged {
    forms: BTreeSet<u64>,
    stripe: BTreeSet<String>,
    mails: BTreeSet<String>,
}

/// The events stored in the shared database, hookgate's own left out: (id, name, data).
async fn stored_events(database: &str) -> Vec<(String, String, Value)> {
    let (client, connection) = tokio_postgres::connect(database, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .query(
            "SELECT e.id, e.name, COALESCE(e.data, convert_from(b.bytes, 'UTF8'))
             FROM events e JOIN bodies b ON b.sha256 = e.body_sha256 WHERE e.name NOT LIKE 'hookgate.%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), serde_json::from_str(row.get::<_, &str>(2)).unwrap()))
        .collect()
}

#[tokio::test]
async fn three_nodes_under_mixed_load_lose_nothing_when_one_is_killed() {
    let database = fresh_postgres_schema().await;
    let (receiver, receiver_url) = Receiver::start().await;
    let first = Gateway::start_on(Some(database.clone()), node_options()).await;
    let subscription = first
        .http
        .post(first.url("/api/webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"url": receiver_url, "events": ["kustomer.app.shop.*", "stripe.*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(subscription.status(), 201);
    let second = Gateway::start_on(Some(database.clone()), node_options()).await;
    let mut third = Gateway::start_on(Some(database.clone()), node_options()).await;
    // Hook URLs and addresses are the same on every node (their tokens are in the database).
    let form_path = first.hook_url(ORDER_UPDATE).await.split_once("/h/").unwrap().1.to_owned();
    assert_eq!(third.hook_url(ORDER_UPDATE).await, third.url(&format!("/h/{form_path}")));
    let hooks = first.admin_json("/api/hooks").await;
    let address =
        hooks["data"].as_array().unwrap().iter().find(|hook| hook["eventName"] == SHOP_MAIL).unwrap()["address"]
            .as_str()
            .unwrap()
            .to_owned();

    let bases = [first.base.clone(), second.base.clone(), third.base.clone()];
    let smtps = [first.smtp, second.smtp, third.smtp];
    let http = client();
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let third_alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let rounds: u64 = 240;
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<()>();
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut clients = Vec::new();
    for worker in 0..6u64 {
        let (http, bases, acknowledged, form_path, address, progress) =
            (http.clone(), bases.clone(), acknowledged.clone(), form_path.clone(), address.clone(), progress.clone());
        clients.push(tokio::spawn(async move {
            let mut round = worker;
            while round < rounds {
                let node = (round % 3) as usize;
                match round % 4 {
                    0 | 1 => {
                        let sent = http
                            .post(format!("{}/h/{form_path}", bases[node]))
                            .json(&json!({"n": round, "load": "nodes"}))
                            .send()
                            .await;
                        if let Ok(response) = sent
                            && response.status().is_success()
                        {
                            acknowledged.lock().unwrap().forms.insert(round);
                        }
                    }
                    2 => {
                        let id = format!("evt_nodes_{round}");
                        let (body, signature) = stripe_request(&id);
                        if acknowledged_stripe(&http, &bases[node], &body, &signature).await.is_some() {
                            acknowledged.lock().unwrap().stripe.insert(id);
                        }
                    }
                    _ => {
                        let order = format!("M-{round}");
                        if send_mail(smtps[node], &address, &order).await {
                            acknowledged.lock().unwrap().mails.insert(order);
                        }
                    }
                }
                progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                round += 6;
            }
        }));
    }
    // A third of the way in, the third node dies without any shutdown code running.
    let killer = {
        let (progress, third_alive) = (progress.clone(), third_alive.clone());
        tokio::spawn(async move {
            while progress.load(std::sync::atomic::Ordering::SeqCst) < rounds / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            third_alive.store(false, std::sync::atomic::Ordering::SeqCst);
            let _ = killed_tx.send(());
        })
    };
    killed_rx.await.unwrap();
    third.kill();
    killer.await.unwrap();
    for client in clients {
        client.await.unwrap();
    }

    // The same signed request reaching two nodes at once makes one event; both replies name it.
    for n in 0..10 {
        let (body, signature) = stripe_request(&format!("evt_twice_{n}"));
        let (a, b) = tokio::join!(
            acknowledged_stripe(&http, &bases[0], &body, &signature),
            acknowledged_stripe(&http, &bases[1], &body, &signature)
        );
        let (a, b) = (a.expect("node 1 acknowledges"), b.expect("node 2 acknowledges"));
        assert_eq!(a["id"], b["id"], "one event for one platform delivery: {a} {b}");
        assert!(a["duplicate"] != b["duplicate"], "exactly one reply is the original: {a} {b}");
        acknowledged.lock().unwrap().stripe.insert(format!("evt_twice_{n}"));
    }

    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(acknowledged.forms.len() > 60 && acknowledged.stripe.len() > 30 && acknowledged.mails.len() > 20);

    // Every acknowledged event is stored exactly once, and nothing is stored twice.
    let stored = stored_events(&database).await;
    let mut forms: BTreeMap<u64, usize> = BTreeMap::new();
    let mut stripe: BTreeMap<String, usize> = BTreeMap::new();
    let mut mails: BTreeMap<String, usize> = BTreeMap::new();
    for (_, name, data) in &stored {
        match name.as_str() {
            ORDER_UPDATE => *forms.entry(data["n"].as_u64().unwrap()).or_default() += 1,
            "stripe.payment_intent.succeeded" => {
                *stripe.entry(data["id"].as_str().unwrap().to_owned()).or_default() += 1
            }
            SHOP_MAIL => *mails.entry(data["orderNumber"].as_str().unwrap().to_owned()).or_default() += 1,
            other => panic!("an event nobody sent: {other}"),
        }
    }
    for n in &acknowledged.forms {
        assert_eq!(forms.get(n), Some(&1), "form post {n} was acknowledged: stored once");
    }
    for id in &acknowledged.stripe {
        assert_eq!(stripe.get(id), Some(&1), "Stripe event {id} was acknowledged: stored once");
    }
    for order in &acknowledged.mails {
        assert_eq!(mails.get(order), Some(&1), "mail {order} was acknowledged: stored once");
    }
    let twice: Vec<String> = forms
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(n, _)| n.to_string())
        .chain(stripe.iter().chain(&mails).filter(|(_, count)| **count > 1).map(|(id, _)| id.clone()))
        .collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");

    // Every stored event is delivered at least once, the killed node's claims included once
    // their lease ends, and never by two nodes at the same time.
    let ids: BTreeSet<String> = stored.iter().map(|(id, ..)| id.clone()).collect();
    let started = Instant::now();
    eventually(Duration::from_secs(60), "every stored event delivered", || async {
        let received = receiver.received();
        ids.iter().all(|id| received.contains_key(id))
    })
    .await;
    eprintln!(
        "{} events stored ({} forms, {} Stripe, {} mails acknowledged); all delivered {:?} after the load",
        ids.len(),
        acknowledged.forms.len(),
        acknowledged.stripe.len(),
        acknowledged.mails.len(),
        started.elapsed()
    );
    assert!(receiver.overlaps().is_empty(), "sent by two nodes at once: {:?}", receiver.overlaps());
    assert!(!third_alive.load(std::sync::atomic::Ordering::SeqCst));
}

#[tokio::test]
async fn a_subscription_made_on_one_node_routes_on_the_others_within_a_second() {
    let database = fresh_postgres_schema().await;
    let (receiver, receiver_url) = Receiver::start().await;
    let first = Gateway::start_on(Some(database.clone()), node_options()).await;
    let second = Gateway::start_on(Some(database.clone()), node_options()).await;
    let form = second.hook_url(ORDER_UPDATE).await;
    let made = first
        .http
        .post(first.url("/api/webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"url": receiver_url, "events": [ORDER_UPDATE]}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let made_at = Instant::now();
    // Post to the other node until one of its events is routed to the new subscription.
    let mut posted: Vec<(String, Duration)> = Vec::new();
    while made_at.elapsed() < Duration::from_secs(5) {
        let reply: Value =
            second.http.post(&form).json(&json!({"n": posted.len()})).send().await.unwrap().json().await.unwrap();
        posted.push((reply["id"].as_str().unwrap().to_owned(), made_at.elapsed()));
        if !receiver.received().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(Duration::from_secs(10), "a delivery from the other node", || async { !receiver.received().is_empty() })
        .await;
    let received = receiver.received();
    let first_routed = posted.iter().find(|(id, _)| received.contains_key(id)).expect("a posted event was delivered");
    assert!(first_routed.1 <= Duration::from_secs(1), "routed on the other node {:?} after the change", first_routed.1);
}

#[tokio::test]
async fn an_app_installed_on_one_node_is_served_by_the_others_within_a_second() {
    let database = fresh_postgres_schema().await;
    let first = Gateway::start_on(Some(database.clone()), node_options()).await;
    let second = Gateway::start_on(Some(database.clone()), node_options()).await;
    let app =
        json!({"app": "extra", "version": "1", "hooks": [{"eventName": "kustomer.app.extra.ping", "type": "form"}]});
    let installed = first.http.post(first.url("/api/apps")).bearer_auth(ADMIN_TOKEN).json(&app).send().await.unwrap();
    assert!(installed.status().is_success(), "{}", installed.text().await.unwrap());
    let installed_at = Instant::now();
    eventually(Duration::from_secs(5), "the other node lists the new hook", || async {
        let hooks = second.admin_json("/api/hooks").await;
        hooks["data"].as_array().unwrap().iter().any(|hook| hook["eventName"] == "kustomer.app.extra.ping")
    })
    .await;
    assert!(installed_at.elapsed() <= Duration::from_secs(1), "served after {:?}", installed_at.elapsed());
    let url = second.hook_url("kustomer.app.extra.ping").await;
    let posted = second.http.post(url).json(&json!({"ping": 1})).send().await.unwrap();
    assert!(posted.status().is_success());
}
