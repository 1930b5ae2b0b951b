//! Transformations on a real gateway: a hook's (a JavaScript file beside its definition, run
//! before the event is stored) and a subscription's (inline in its JSON, run before each
//! delivery). Each way a transformation can end is shown on both: it renames fields, it drops
//! the event, it throws, it loops forever (stopped by the time limit while the gateway keeps
//! serving), it allocates without end (stopped by the memory limit). `hookgate transform test`
//! runs one on a stored event.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::deliveries::Receiver;
use crate::support::*;

const RENAMED: &str = "kustomer.app.transforms.renamed";
const DROPPED: &str = "kustomer.app.transforms.dropped";
const THROWS: &str = "kustomer.app.transforms.throws";
const SPINS: &str = "kustomer.app.transforms.spins";
const HOARDS: &str = "kustomer.app.transforms.hoards";

const RENAME: &str = "function transform(event) {
  const order = event.data;
  event.data = { orderId: order.id, total: order.amount, currency: order.currency };
  return event;
}";
const DROP_TESTS: &str = "function transform(event) { return event.data.test ? null : event; }";
const THROW: &str = "function transform(event) { throw new Error('no amount on order ' + event.data.id); }";
const SPIN: &str = "function transform(event) { for (;;) {} }";
const HOARD: &str =
    "function transform(event) { const kept = []; for (;;) { kept.push(new Array(1 << 16).fill(kept.length)); } }";

/// A gateway whose `transforms` app has one hook per transformation, each a `.js` file beside
/// the definition, put in service by a reload.
async fn gateway_with_hook_transforms(options: Options) -> Gateway {
    let gateway = Gateway::start_with(options).await;
    let dir = gateway.definitions_dir();
    let mut hooks = Vec::new();
    for (name, file, source) in [
        (RENAMED, "rename.js", RENAME),
        (DROPPED, "drop-tests.js", DROP_TESTS),
        (THROWS, "throw.js", THROW),
        (SPINS, "spin.js", SPIN),
        (HOARDS, "hoard.js", HOARD),
    ] {
        std::fs::write(dir.join(file), source).unwrap();
        hooks.push(json!({"eventName": name, "type": "form", "transform": file}));
    }
    let app = json!({"app": "transforms", "version": "1", "hooks": hooks});
    std::fs::write(dir.join("transforms.json"), app.to_string()).unwrap();
    let response =
        gateway.http.post(gateway.url("/api/definitions/reload")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    gateway
}

async fn post(gateway: &Gateway, event_name: &str, data: Value) -> reqwest::Response {
    let url = gateway.hook_url(event_name).await;
    gateway.http.post(url).json(&data).send().await.unwrap()
}

async fn stored_count(gateway: &Gateway, event_name: &str) -> usize {
    gateway.admin_json(&format!("/api/events?name={event_name}")).await["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_hooks_transformation_renames_fields_before_the_event_is_stored() {
    let gateway = gateway_with_hook_transforms(Options::default()).await;
    let response = post(&gateway, RENAMED, json!({"id": "o-1", "amount": 12, "currency": "eur"})).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let event = gateway.event(&id).await;
    assert_eq!(event["data"], json!({"orderId": "o-1", "total": 12, "currency": "eur"}));
    assert_eq!(event["name"], RENAMED, "the envelope stays hookgate's");
}

#[tokio::test]
async fn a_hooks_transformation_that_returns_null_stores_nothing_and_the_reply_says_so() {
    let gateway = gateway_with_hook_transforms(Options::default()).await;
    let response = post(&gateway, DROPPED, json!({"test": true})).await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["dropped"], true, "{reply}");
    assert_eq!(reply["reason"], "dropped by the hook's transformation");
    assert_eq!(reply["transformVersion"], hookgate::transform::version_of(DROP_TESTS));
    assert!(reply.get("id").is_none(), "no event exists to name: {reply}");
    assert_eq!(stored_count(&gateway, DROPPED).await, 0);
    assert_eq!(post(&gateway, DROPPED, json!({"test": false})).await.status(), 202, "the others are stored");
    assert_eq!(stored_count(&gateway, DROPPED).await, 1);
}

#[tokio::test]
async fn a_hooks_transformation_that_throws_refuses_the_request_with_422_and_its_message() {
    let gateway = gateway_with_hook_transforms(Options::default()).await;
    let response = post(&gateway, THROWS, json!({"id": "o-9"})).await;
    let (code, message) = error_code(response, 422).await;
    assert_eq!(code, "transformation_failed");
    assert!(message.contains("Error: no amount on order o-9"), "{message}");
    assert!(message.contains(&hookgate::transform::version_of(THROW)), "the version that ran: {message}");
    assert_eq!(stored_count(&gateway, THROWS).await, 0);
}

#[tokio::test]
async fn a_hooks_endless_loop_is_stopped_by_the_time_limit_while_the_gateway_keeps_serving() {
    // A long limit, so that "meanwhile" is long enough to serve many requests in.
    let options = Options::default().env("HOOKGATE_TRANSFORM_TIME_LIMIT_MS", "1500");
    let gateway = gateway_with_hook_transforms(options).await;
    let spin_url = gateway.hook_url(SPINS).await;
    let order_url = gateway.hook_url(ORDER_UPDATE).await;
    let started = Instant::now();
    let spinning = tokio::spawn({
        let http = gateway.http.clone();
        async move {
            let response = http.post(spin_url).json(&json!({})).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap(), started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 0..10 {
        let response = gateway.http.post(&order_url).json(&json!({"n": n})).send().await.unwrap();
        assert_eq!(response.status(), 202);
        let renamed = post(&gateway, RENAMED, json!({"id": n, "amount": n, "currency": "eur"})).await;
        assert_eq!(renamed.status(), 202, "another transformation runs meanwhile too");
    }
    let served_by = started.elapsed();
    let (status, reply, stopped_after) = spinning.await.unwrap();
    assert!(served_by < stopped_after, "served {served_by:?}, while the loop ran until {stopped_after:?}");
    assert_eq!(status, 422, "{reply}");
    assert_eq!(reply["error"]["code"], "transformation_failed");
    assert!(reply["error"]["message"].as_str().unwrap().contains("time limit of 1500 ms"), "{reply}");
    assert!(stopped_after < Duration::from_secs(5), "stopped at the limit: {stopped_after:?}");
}

#[tokio::test]
async fn a_hooks_endless_allocation_is_stopped_by_the_memory_limit() {
    // Time enough to reach the memory limit first, on a slow debug build.
    let options = Options::default().env("HOOKGATE_TRANSFORM_TIME_LIMIT_MS", "5000");
    let gateway = gateway_with_hook_transforms(options).await;
    let (code, message) = error_code(post(&gateway, HOARDS, json!({})).await, 422).await;
    assert_eq!(code, "transformation_failed");
    assert!(message.contains("memory limit of 16777216 bytes"), "{message}");
    assert_eq!(post(&gateway, RENAMED, json!({"id": 1})).await.status(), 202, "the gateway serves on");
}

#[tokio::test]
async fn a_hook_definition_whose_transformation_does_not_compile_is_refused_with_the_reason() {
    let gateway = Gateway::start().await;
    let dir = gateway.definitions_dir();
    std::fs::write(dir.join("broken.js"), "function transform(event) { return event").unwrap();
    let app = json!({"app": "broken", "version": "1", "hooks": [
        {"eventName": "kustomer.app.broken.x", "type": "form", "transform": "broken.js"},
        {"eventName": "kustomer.app.broken.y", "type": "form", "transform": "../outside.js"}
    ]});
    std::fs::write(dir.join("broken.json"), app.to_string()).unwrap();
    let response =
        gateway.http.post(gateway.url("/api/definitions/reload")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let messages: Vec<String> = body["error"]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}: {}", d["pointer"].as_str().unwrap(), d["message"].as_str().unwrap()))
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with("/hooks/0/transform: ") && m.contains("SyntaxError")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("/hooks/1/transform: ") && m.contains("only a file in the definition's folder")),
        "{messages:?}"
    );
}

fn open_targets() -> Options {
    Options::default()
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
        .env("HOOKGATE_DELIVERY_RETRY_SCHEDULE_SECS", "[1]")
}

async fn subscribe(gateway: &Gateway, url: &str, transform: &str) -> Value {
    let body = json!({"url": url, "events": [ORDER_UPDATE], "transform": transform});
    let response =
        gateway.http.post(gateway.url("/api/webhooks")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// The subscription's only delivery once it is no longer pending (at most 20 s).
async fn finished_delivery(gateway: &Gateway, subscription: &Value) -> Value {
    let path = format!("/api/webhooks/{}/deliveries", subscription["id"].as_str().unwrap());
    eventually(Duration::from_secs(20), "the delivery to finish", || async {
        let history = gateway.admin_json(&path).await;
        history["total"] == 1 && history["data"][0]["status"] != "pending"
    })
    .await;
    gateway.admin_json(&path).await["data"][0].clone()
}

async fn post_order(gateway: &Gateway) -> String {
    let response =
        post(gateway, ORDER_UPDATE, json!({"id": "o-7", "amount": 30, "currency": "eur", "test": false})).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_subscriptions_transformation_renames_fields_in_what_is_delivered_and_the_history_names_its_version() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[]).await;
    let subscription = subscribe(&gateway, &receiver.url, RENAME).await;
    assert_eq!(subscription["transform"], RENAME);
    assert_eq!(subscription["transformVersion"], hookgate::transform::version_of(RENAME));
    let id = post_order(&gateway).await;
    let delivered = receiver.wait_for(1).await;
    let body: Value = serde_json::from_str(&delivered[0].body).unwrap();
    assert_eq!(body["type"], ORDER_UPDATE);
    assert_eq!(body["data"]["id"], id, "the rest of the event is as stored");
    assert_eq!(body["data"]["data"], json!({"orderId": "o-7", "total": 30, "currency": "eur"}));
    let delivery = finished_delivery(&gateway, &subscription).await;
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attemptHistory"][0]["transformVersion"], hookgate::transform::version_of(RENAME));
    assert_eq!(gateway.event(&id).await["data"]["amount"], 30, "the stored event is unchanged");

    // The console shows the subscription's transformation version, and the version each attempt ran.
    let signed_in = gateway
        .http
        .post(gateway.url("/console/sign-in"))
        .form(&[("token", ADMIN_TOKEN), ("then", "/console/subscriptions")])
        .send()
        .await
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let path = format!("/console/subscriptions/{}", subscription["id"].as_str().unwrap());
    let page =
        gateway.http.get(gateway.url(&path)).header("cookie", cookie).send().await.unwrap().text().await.unwrap();
    let version = hookgate::transform::version_of(RENAME);
    assert!(page.contains(&format!("<code class=\"transform-version\">{version}</code>")), "{page}");
    assert!(page.contains(&format!("transformation <code>{version}</code>")), "the attempt's version: {page}");
}

#[tokio::test]
async fn a_subscriptions_transformation_that_returns_null_drops_the_delivery_on_the_record() {
    let gateway = Gateway::start_with(open_targets()).await;
    let (dropping, keeping) = tokio::join!(Receiver::start(&[]), Receiver::start(&[]));
    let dropped = subscribe(&gateway, &dropping.url, "function transform(event) { return null; }").await;
    let kept = subscribe(&gateway, &keeping.url, DROP_TESTS).await;
    post_order(&gateway).await;
    keeping.wait_for(1).await;
    let delivery = finished_delivery(&gateway, &dropped).await;
    assert_eq!(delivery["status"], "dropped", "{delivery}");
    assert_eq!(
        delivery["attemptHistory"][0]["transformVersion"],
        hookgate::transform::version_of("function transform(event) { return null; }")
    );
    assert_eq!(finished_delivery(&gateway, &kept).await["status"], "delivered");
    assert!(dropping.received().is_empty(), "nothing is sent for a dropped delivery");
    let path = format!("/api/webhooks/{}/deliveries?status=dropped", dropped["id"].as_str().unwrap());
    assert_eq!(gateway.admin_json(&path).await["total"], 1, "dropped deliveries are found by their status");
}

#[tokio::test]
async fn a_subscriptions_transformation_that_throws_loops_or_hoards_fails_the_attempt_with_the_message() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[]).await;
    let throws = subscribe(&gateway, &receiver.url, THROW).await;
    let spins = subscribe(&gateway, &receiver.url, SPIN).await;
    let hoards = subscribe(&gateway, &receiver.url, HOARD).await;
    let started = Instant::now();
    post_order(&gateway).await;
    for (subscription, source, expected) in [
        (&throws, THROW, "the transformation threw Error: no amount on order o-7"),
        (&spins, SPIN, "the transformation was stopped after its time limit of 50 ms"),
        // 50 ms may end a debug build's allocation before the memory does: either limit stops it.
        (&hoards, HOARD, "the transformation was stopped"),
    ] {
        let delivery = finished_delivery(&gateway, subscription).await;
        assert_eq!(delivery["status"], "failed", "{delivery}");
        let attempts = delivery["attemptHistory"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "the first attempt and the one retry: {delivery}");
        for attempt in attempts {
            assert!(attempt["error"].as_str().unwrap().contains(expected), "{attempt}");
            assert_eq!(attempt["transformVersion"], hookgate::transform::version_of(source));
        }
    }
    assert!(receiver.received().is_empty(), "a failed transformation sends nothing");
    assert!(started.elapsed() < Duration::from_secs(15), "each stopped at a limit");
    // The gateway keeps serving, and delivering.
    let plain = Receiver::start(&[]).await;
    subscribe(&gateway, &plain.url, "function transform(event) { return event; }").await;
    post_order(&gateway).await;
    plain.wait_for(1).await;
}

#[tokio::test]
async fn transform_test_runs_a_file_on_a_stored_event_and_prints_the_result() {
    let gateway = Gateway::start().await;
    let id = post_order(&gateway).await;
    let dir = gateway.dir.path();
    let file = |name: &str, source: &str| {
        let path = dir.join(name);
        std::fs::write(&path, source).unwrap();
        path.display().to_string()
    };
    let rename = file("rename.js", RENAME);
    let output = gateway.cli(&["transform", "test", &rename, "--event", &id]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["data"], json!({"orderId": "o-7", "total": 30, "currency": "eur"}));
    assert_eq!(printed["id"], id);
    assert!(String::from_utf8_lossy(&output.stderr).contains(&hookgate::transform::version_of(RENAME)));

    let drop = file("drop.js", "function transform(event) { return null; }");
    let output = gateway.cli(&["transform", "test", &drop, "--event", &id]);
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "null");
    assert!(String::from_utf8_lossy(&output.stderr).contains("dropped the event"));

    let throw = file("throw.js", THROW);
    let output = gateway.cli(&["transform", "test", &throw, "--event", &id]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Error: no amount on order o-7"));

    let output = gateway.cli(&["transform", "test", &rename, "--event", "evt_missing"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no event \"evt_missing\""));
}
