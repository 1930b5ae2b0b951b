//! Deliveries to real receivers on loopback: fan-out and patterns, paused and resumed, retries
//! on failure with the history of every attempt, 410 disabling a subscription, a manual retry,
//! the outbox surviving a crash between commit and send, a graceful stop finishing what is in
//! flight, and the SSRF check at send time. Signatures are checked as a receiver would: by the
//! suite's own Standard Webhooks verifier (`standard_webhooks`, written from the specification),
//! and also by the official library when `HOOKGATE_TEST_PYTHON` is set (a strict run requires it).
//!
//! No test sleeps and then looks: each waits, with a deadline, for the history to say that no
//! delivery is pending ([`settled`]) or for a request to arrive, and checks that something was
//! not sent only once nothing that could send it is pending or a later delivery has gone out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::standard_webhooks;
use crate::support::*;

/// In a receiver's script: answer 200 only after 3 seconds.
const HANG: u16 = 1;

/// A webhook receiver on 127.0.0.1: records every request and answers with the next status of
/// its script (200 once the script is empty; [`HANG`] waits 3 s first, past the client's timeout).
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) url: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) headers: std::collections::BTreeMap<String, String>,
    pub(crate) body: String,
}

impl Receiver {
    pub(crate) async fn start(script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver =
            Receiver { url, received: Arc::default(), script: Arc::new(Mutex::new(script.iter().copied().collect())) };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let headers = headers
                        .iter()
                        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or_default().to_owned()))
                        .collect();
                    state.received.lock().unwrap().push(Received { headers, body });
                    let mut status = state.script.lock().unwrap().pop_front().unwrap_or(200);
                    if status == HANG {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        status = 200;
                    }
                    (axum::http::StatusCode::from_u16(status).unwrap(), format!("answered {status}"))
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests arrived (at most 20 s).
    pub(crate) async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..400 {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} requests arrived at {}, not {count}", self.received().len(), self.url);
    }
}

fn open_targets() -> Options {
    Options::default()
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
        .env("HOOKGATE_DELIVERY_RETRY_SCHEDULE_SECS", "[1, 1]")
}

/// Creates a subscription as the admin; its reply (with the secret).
pub(crate) async fn subscribe(gateway: &Gateway, body: Value) -> Value {
    let response =
        gateway.http.post(gateway.url("/api/webhooks")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn post_order(gateway: &Gateway, order: Value) -> String {
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let response = gateway.http.post(url).json(&order).send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn history(gateway: &Gateway, subscription: &Value, query: &str) -> Value {
    gateway.admin_json(&format!("/api/webhooks/{}/deliveries{query}", subscription["id"].as_str().unwrap())).await
}

/// The subscription's history once none of its deliveries is pending (at most 20 s): each has
/// been delivered or has failed, and its attempts are written. Nothing more is sent to it after
/// that unless a delivery is retried or an event replayed.
async fn settled(gateway: &Gateway, subscription: &Value) -> Value {
    let what = format!("no pending delivery for {}", subscription["id"]);
    eventually(Duration::from_secs(20), &what, || async {
        history(gateway, subscription, "?status=pending").await["total"] == 0
    })
    .await;
    history(gateway, subscription, "").await
}

/// Checks the signature of every delivery as a receiver holding its secret would, now: always
/// with the suite's own verifier, and with the official Standard Webhooks library too when
/// `HOOKGATE_TEST_PYTHON` names a Python that has it (else said on stderr; a strict run fails).
#[track_caller]
fn assert_signed(test: &str, signed: &[(&str, &[Received])]) {
    let now = jiff::Timestamp::now().as_second();
    for (secret, deliveries) in signed {
        assert!(!deliveries.is_empty(), "{test}: no delivery to check");
        for delivery in *deliveries {
            let verdict = standard_webhooks::verify(secret, &delivery.headers, delivery.body.as_bytes(), now);
            assert_eq!(verdict, Ok(()), "the suite's verifier refuses {delivery:?}");
        }
    }
    let Some(python) = required_env(
        &format!("the standardwebhooks library's check in {test}"),
        "HOOKGATE_TEST_PYTHON",
        "a Python with the standardwebhooks library, which .ci/run installs",
    ) else {
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/verify_standardwebhooks.py");
    for (secret, deliveries) in signed {
        let input = json!({"secret": secret, "deliveries": deliveries.iter().map(|d| json!({"headers": d.headers, "body": d.body})).collect::<Vec<_>>()});
        let mut child = std::process::Command::new(&python)
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("HOOKGATE_TEST_PYTHON={python} cannot be run: {error}"));
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "the standardwebhooks library's check ran with {python}");
        let verdicts: Vec<&str> = std::str::from_utf8(&output.stdout).unwrap().lines().collect();
        assert_eq!(verdicts, vec!["ok"; deliveries.len()], "the official library accepts the signatures");
    }
}

#[tokio::test]
async fn an_event_reaches_every_matching_subscription_signed() {
    let gateway = Gateway::start_with(open_targets()).await;
    let (all, shop, stripe, resource) =
        tokio::join!(Receiver::start(&[]), Receiver::start(&[]), Receiver::start(&[]), Receiver::start(&[]));
    let everything = subscribe(&gateway, json!({"url": all.url, "events": ["*"]})).await;
    let shop_orders = subscribe(
        &gateway,
        json!({"url": shop.url, "events": ["kustomer.app.shop.*"], "headers": {"X-Team": "orders"}}),
    )
    .await;
    let stripe_only = subscribe(&gateway, json!({"url": stripe.url, "events": ["stripe.*"]})).await;
    let one_order =
        subscribe(&gateway, json!({"url": resource.url, "resource_id": "order-7", "filter": "$[?@.total > 100]"}))
            .await;

    let id = post_order(&gateway, json!({"id": "order-7", "total": 250})).await;
    post_order(&gateway, json!({"id": "order-8", "total": 250})).await;
    // Delivery rows are written with their event, before the 202: once none is pending, every
    // request that will ever be sent for these events has been.
    for subscription in [&everything, &shop_orders, &stripe_only, &one_order] {
        settled(&gateway, subscription).await;
    }
    assert_eq!(history(&gateway, &stripe_only, "").await["total"], 0, "stripe.* matches no shop event");
    assert!(stripe.received().is_empty(), "stripe.* matches no shop event");
    assert_eq!(history(&gateway, &one_order, "").await["total"], 1);
    assert_eq!(resource.received().len(), 1, "only the order about resource order-7 with total > 100");

    let delivered = all.received();
    assert_eq!(delivered.len(), 2);
    let first = delivered.iter().find(|d| d.headers["webhook-id"] == id).expect("the event's id is the message id");
    let body: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(body["type"], ORDER_UPDATE);
    assert_eq!(body["data"]["id"], id);
    assert_eq!(body["data"]["data"], json!({"id": "order-7", "total": 250}));
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(shop.received()[0].headers["x-team"], "orders");
    let test = "deliveries::an_event_reaches_every_matching_subscription_signed";
    let (all_secret, shop_secret) = (everything["secret"].as_str().unwrap(), shop_orders["secret"].as_str().unwrap());
    assert_signed(test, &[(all_secret, &delivered), (shop_secret, &shop.received())]);
    let now = jiff::Timestamp::now().as_second();
    let delivery = &delivered[0];
    assert_eq!(
        standard_webhooks::verify(shop_secret, &delivery.headers, delivery.body.as_bytes(), now),
        Err(standard_webhooks::Invalid::NoMatchingSignature),
        "each subscription has a secret of its own"
    );

    let page = history(&gateway, &everything, "?status=delivered").await;
    assert_eq!(page["total"], 2);
    let attempt = &page["data"][0]["attemptHistory"][0];
    assert_eq!(attempt["statusCode"], 200);
    assert_eq!(attempt["responseExcerpt"], "answered 200");
    assert!(attempt["latencyMs"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn a_json_post_is_delivered_as_it_came_not_rewritten() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[]).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url})).await;
    // Spacing, a trailing zero and an escape that a parse and a re-serialization would change.
    let posted = r#"{"id": "order-9",  "total": 1.50, "note": "caf\u00e9"}"#;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let response = gateway.http.post(url).header("content-type", "application/json").body(posted).send().await.unwrap();
    assert_eq!(response.status(), 202);
    settled(&gateway, &subscription).await;
    let delivered = receiver.wait_for(1).await;
    assert!(delivered[0].body.contains(&format!(r#""data":{posted},"#)), "{}", delivered[0].body);
    let body: Value = serde_json::from_str(&delivered[0].body).unwrap();
    assert_eq!(body["data"]["data"], json!({"id": "order-9", "total": 1.5, "note": "café"}));
    assert_signed(
        "deliveries::a_json_post_is_delivered_as_it_came_not_rewritten",
        &[(subscription["secret"].as_str().unwrap(), &delivered)],
    );
}

#[tokio::test]
async fn failures_are_retried_on_schedule_and_every_attempt_is_kept() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[500, 503]).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url})).await;
    post_order(&gateway, json!({"n": 1})).await;
    let page = settled(&gateway, &subscription).await;
    assert_eq!(page["total"], 1, "{page}");
    let delivery = &page["data"][0];
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    let statuses: Vec<&Value> =
        delivery["attemptHistory"].as_array().unwrap().iter().map(|a| &a["statusCode"]).collect();
    assert_eq!(statuses, [&json!(500), &json!(503), &json!(200)]);
    assert_eq!(receiver.received().len(), 3, "one request per attempt, none after the delivery");
}

#[tokio::test]
async fn exhausted_retries_fail_and_a_manual_retry_sends_again() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[500, 500, 500]).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url})).await;
    post_order(&gateway, json!({"n": 1})).await;
    let page = settled(&gateway, &subscription).await;
    assert_eq!(page["total"], 1, "{page}");
    let failed = &page["data"][0];
    assert_eq!((&failed["status"], &failed["attempts"]), (&json!("failed"), &json!(3)), "{failed}");
    let delivery_id = failed["id"].as_str().unwrap();

    let retry = gateway
        .http
        .post(
            gateway
                .url(&format!("/api/webhooks/{}/deliveries/{delivery_id}/retry", subscription["id"].as_str().unwrap())),
        )
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 202);
    // The retry made it pending before its 202: settled again means the new attempt is written.
    let page = settled(&gateway, &subscription).await;
    let delivered = &page["data"][0];
    assert_eq!((&delivered["id"], &delivered["status"]), (&json!(delivery_id), &json!("delivered")), "{page}");
    assert_eq!(delivered["attemptHistory"].as_array().unwrap().len(), 4);
    assert_eq!(receiver.received().len(), 4);
}

#[tokio::test]
async fn a_410_disables_the_subscription_with_the_reason() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[410]).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url})).await;
    post_order(&gateway, json!({"n": 1})).await;
    // The subscription is disabled before the attempt is written.
    let page = settled(&gateway, &subscription).await;
    assert_eq!(page["data"][0]["status"], "failed", "{page}");
    let shown = gateway.admin_json(&format!("/api/webhooks/{}", subscription["id"].as_str().unwrap())).await;
    assert_eq!(shown["status"], "disabled");
    assert_eq!(shown["disabledReason"], "the endpoint answered 410 Gone");

    let witness = Receiver::start(&[]).await;
    subscribe(&gateway, json!({"url": witness.url})).await;
    let later = post_order(&gateway, json!({"n": 2})).await;
    // The worker has handled the later event, and nothing is left pending for the disabled one.
    assert_eq!(witness.wait_for(1).await[0].headers["webhook-id"], later);
    settled(&gateway, &subscription).await;
    assert_eq!(receiver.received().len(), 1, "a disabled subscription gets nothing");
}

#[tokio::test]
async fn paused_deliveries_wait_in_the_outbox_across_a_crash_and_go_out_on_resume() {
    let mut gateway = Gateway::start_with(open_targets()).await;
    let (receiver, witness) = tokio::join!(Receiver::start(&[]), Receiver::start(&[]));
    let subscription = subscribe(&gateway, json!({"url": receiver.url, "status": "paused"})).await;
    subscribe(&gateway, json!({"url": witness.url})).await;
    let id = post_order(&gateway, json!({"n": 1})).await;
    // An active subscription got the event: the worker has been past it.
    assert_eq!(witness.wait_for(1).await[0].headers["webhook-id"], id);
    let parked = history(&gateway, &subscription, "").await;
    assert_eq!(parked["total"], 1, "{parked}");
    let delivery = &parked["data"][0];
    assert_eq!((&delivery["status"], &delivery["attempts"]), (&json!("pending"), &json!(0)), "{delivery}");
    assert!(delivery["nextAttemptAt"].is_null(), "parked, with no due time: {delivery}");
    assert!(receiver.received().is_empty(), "paused: nothing is sent");
    // SIGKILL: whatever was committed is all there is.
    gateway.restart().await;
    let path = format!("/api/webhooks/{}", subscription["id"].as_str().unwrap());
    let resumed = gateway.admin_patch(&path, &json!({"status": "active"})).await;
    assert_eq!(resumed.status(), 200);
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].headers["webhook-id"], id);
}

#[tokio::test]
async fn a_private_target_is_refused_at_send_time_too() {
    let mut options = open_targets();
    let mut gateway = Gateway::start_with(options.clone()).await;
    let receiver = Receiver::start(&[]).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url})).await;
    // The same database, now with the default policy: loopback is out of bounds.
    options.env.retain(|(name, _)| name != "HOOKGATE_DELIVERY_ALLOW_NETWORKS");
    gateway.restart_with(options).await;
    post_order(&gateway, json!({"n": 1})).await;
    // Every attempt is written after it was refused.
    let page = settled(&gateway, &subscription).await;
    let attempts = page["data"][0]["attemptHistory"].as_array().unwrap().clone();
    assert!(!attempts.is_empty(), "{page}");
    for attempt in &attempts {
        assert!(attempt["error"].as_str().is_some_and(|error| error.contains("loopback")), "{attempt}");
    }
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn a_stored_event_can_be_replayed_to_all_or_one_subscription() {
    let gateway = Gateway::start_with(open_targets()).await;
    let (first, later) = tokio::join!(Receiver::start(&[]), Receiver::start(&[]));
    subscribe(&gateway, json!({"url": first.url})).await;
    let id = post_order(&gateway, json!({"n": 1})).await;
    first.wait_for(1).await;
    let newcomer = subscribe(&gateway, json!({"url": later.url, "events": ["kustomer.app.shop.order.*"]})).await;

    let replay = |body: Value| {
        let gateway = &gateway;
        let id = id.clone();
        async move {
            let response = gateway
                .http
                .post(gateway.url(&format!("/api/events/{id}/replay")))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, to_one) = replay(json!({"subscription_id": newcomer["id"]})).await;
    assert_eq!(status, 202, "{to_one}");
    assert_eq!(to_one["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(later.wait_for(1).await[0].headers["webhook-id"], id);
    let (status, to_all) = replay(json!({})).await;
    assert_eq!(status, 202);
    assert_eq!(to_all["deliveries"].as_array().unwrap().len(), 2, "every subscription it matches now");
    first.wait_for(2).await;
    later.wait_for(2).await;
    let (status, _) = replay(json!({"subscription_id": "sub_none"})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_test_event_is_sent_now_marked_as_a_test() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[]).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url})).await;
    let response = gateway
        .http
        .post(gateway.url(&format!("/api/webhooks/{}/test", subscription["id"].as_str().unwrap())))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"event": ORDER_UPDATE}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.unwrap();
    assert_eq!((&result["delivered"], &result["statusCode"]), (&json!(true), &json!(200)), "{result}");
    let received = receiver.received();
    assert_eq!(received.len(), 1, "sent before the reply");
    let body: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!((&body["test"], &body["type"]), (&json!(true), &json!(ORDER_UPDATE)));
    let test = "deliveries::a_test_event_is_sent_now_marked_as_a_test";
    assert_signed(test, &[(subscription["secret"].as_str().unwrap(), &received)]);
    assert_eq!(history(&gateway, &subscription, "").await["total"], 0, "a test is not a delivery");
}

#[tokio::test]
async fn a_subscription_failing_for_too_long_is_disabled() {
    let gateway = Gateway::start_with(
        open_targets()
            .env("HOOKGATE_DELIVERY_DISABLE_AFTER_SECS", "1")
            .env("HOOKGATE_DELIVERY_RETRY_SCHEDULE_SECS", "[1, 1, 1]"),
    )
    .await;
    let receiver = Receiver::start(&[500, 500, 500, 500]).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url})).await;
    post_order(&gateway, json!({"n": 1})).await;
    let path = format!("/api/webhooks/{}", subscription["id"].as_str().unwrap());
    eventually(Duration::from_secs(10), "the subscription to be disabled", || async {
        gateway.admin_json(&path).await["status"] == "disabled"
    })
    .await;
    let shown = gateway.admin_json(&path).await;
    assert_eq!(shown["status"], "disabled", "{shown}");
    assert!(shown["disabledReason"].as_str().unwrap().contains("has failed since"), "{shown}");
}

#[tokio::test]
async fn a_request_that_times_out_is_retried() {
    let gateway = Gateway::start_with(open_targets().env("HOOKGATE_DELIVERY_TIMEOUT_SECS", "1")).await;
    let receiver = Receiver::start(&[HANG]).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url})).await;
    post_order(&gateway, json!({"n": 1})).await;
    let delivery = &settled(&gateway, &subscription).await["data"][0];
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(receiver.received().len(), 2);
    let first = &delivery["attemptHistory"][0];
    assert!(first["statusCode"].is_null() && first["error"].as_str().unwrap().contains("timed out"), "{first}");
}

#[tokio::test]
async fn the_cli_replays_every_event_matching_a_filter() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[]).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url})).await;
    for n in 0..3 {
        post_order(&gateway, json!({"n": n})).await;
    }
    settled(&gateway, &subscription).await;
    let database = gateway.database();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["events", "replay", "--name", ORDER_UPDATE, "--database"])
            .arg(database)
            .env("HOOKGATE_SECRETS_KEY", SECRETS_KEY)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed} {}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains("replayed 3 events: 3 deliveries queued"), "{printed}");
    receiver.wait_for(6).await;
    let page = settled(&gateway, &subscription).await;
    assert_eq!(page["total"], 6, "{page}");
    let mut times_sent = std::collections::BTreeMap::new();
    for request in receiver.received() {
        *times_sent.entry(request.headers["webhook-id"].clone()).or_insert(0) += 1;
    }
    assert_eq!(times_sent.values().collect::<Vec<_>>(), [&2, &2, &2], "three events, each sent twice: {times_sent:?}");
}

#[tokio::test]
async fn a_graceful_stop_lets_deliveries_in_flight_finish_and_records_them() {
    let receiver = Receiver::start(&[HANG]).await;
    let mut gateway = Gateway::start_with(open_targets()).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url, "events": [ORDER_UPDATE]})).await;
    post_order(&gateway, json!({"id": "o-1"})).await;
    receiver.wait_for(1).await;

    // SIGTERM while the receiver still holds the request (it answers after 3 s).
    assert!(gateway.stop().await, "the gateway exits cleanly");
    gateway.restart().await;
    let page = history(&gateway, &subscription, "").await;
    assert_eq!(page["data"][0]["status"], "delivered", "the answer was waited for and recorded: {page}");
    assert_eq!(page["data"][0]["attempts"], 1);
    // A later event is delivered by the restarted worker: the first was not sent again before it.
    let later = post_order(&gateway, json!({"id": "o-2"})).await;
    assert_eq!(settled(&gateway, &subscription).await["total"], 2);
    let received = receiver.received();
    assert_eq!(received.len(), 2, "so it is not sent again");
    assert_eq!(received[1].headers["webhook-id"], later);
}

#[tokio::test]
async fn a_graceful_stop_releases_what_it_claimed_but_did_not_send() {
    let receiver = Receiver::start(&[HANG, HANG]).await;
    let two_at_a_time = open_targets()
        .env("HOOKGATE_DELIVERY_CONCURRENCY", "2")
        .env("HOOKGATE_DELIVERY_CONCURRENCY_PER_SUBSCRIPTION", "2");
    let mut gateway = Gateway::start_with(two_at_a_time).await;
    // Paused while the four events come in, so that all four are due together on resume.
    let subscription =
        subscribe(&gateway, json!({"url": receiver.url, "events": [ORDER_UPDATE], "status": "paused"})).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(post_order(&gateway, json!({"id": n})).await);
    }
    let path = format!("/api/webhooks/{}", subscription["id"].as_str().unwrap());
    let resumed = gateway.admin_patch(&path, &json!({"status": "active"})).await;
    assert_eq!(resumed.status(), 200);

    // Checked before the stop: two in flight (held 3 s by the receiver), and the worker has
    // claimed the other two as well (a claim moves a delivery's due time out by its lease, 90 s
    // here) and waits for a free slot.
    receiver.wait_for(2).await;
    eventually(Duration::from_secs(10), "all four deliveries claimed", || async {
        let pending = history(&gateway, &subscription, "?status=pending").await;
        let claimed = |delivery: &Value| {
            delivery["nextAttemptAt"]
                .as_str()
                .and_then(|due| due.parse::<jiff::Timestamp>().ok())
                .is_some_and(|due| due > jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30))
        };
        pending["total"] == 4 && pending["data"].as_array().unwrap().iter().all(claimed)
    })
    .await;
    assert!(gateway.stop().await);
    assert_eq!(receiver.received().len(), 2, "the stop sent neither of the two waiting");

    gateway.restart().await;
    // Due at once, not when their claims' lease would have ended.
    receiver.wait_for(4).await;
    let page = settled(&gateway, &subscription).await;
    assert_eq!(page["total"], 4, "{page}");
    assert!(page["data"].as_array().unwrap().iter().all(|d| d["status"] == "delivered"), "{page}");
    let mut sent: Vec<String> = receiver.received().iter().map(|r| r.headers["webhook-id"].clone()).collect();
    sent.sort();
    ids.sort();
    assert_eq!(sent, ids, "each sent once");
}
