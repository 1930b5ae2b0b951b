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
        .env("HOOKGATE_DELIVERY_ALLOW_PRIVATE_NETWORKS", "true")
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
