//! Delivery control through the management API, against real receivers on loopback: dead
//! letters listed across subscriptions and replayed one by one and in bulk (by the API and the
//! CLI), a bulk retry of a thousand failed deliveries followed to the end, a subscription's rate
//! limit holding over 20 seconds while another subscription is not slowed, and a receiver's
//! `429` with `Retry-After` honoured without counting against the subscription.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// A reply of a receiver's script: a status, and a `Retry-After` when given.
type Reply = (u16, Option<&'static str>);

/// A receiver on 127.0.0.1 that records when each request arrived and answers the next reply of
/// its script (status, and a `Retry-After` when given); 200 once the script is empty.
#[derive(Clone)]
struct Receiver {
    url: String,
    arrivals: Arc<Mutex<Vec<(Instant, String)>>>,
    script: Arc<Mutex<std::collections::VecDeque<Reply>>>,
}

impl Receiver {
    async fn start(script: Vec<Reply>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver =
            Receiver { url, arrivals: Arc::default(), script: Arc::new(Mutex::new(script.into_iter().collect())) };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                let state = state.clone();
                async move {
                    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    state.arrivals.lock().unwrap().push((Instant::now(), id));
                    let (status, retry_after) = state.script.lock().unwrap().pop_front().unwrap_or((200, None));
                    let mut response = axum::response::Response::new(axum::body::Body::from("answered"));
                    *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                    if let Some(wait) = retry_after {
                        response.headers_mut().insert("retry-after", wait.parse().unwrap());
                    }
                    response
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    /// Fails the first `count` requests with a 500.
    async fn failing_first(count: usize) -> Receiver {
        Receiver::start(vec![(500, None); count]).await
    }

    fn arrivals(&self) -> Vec<(Instant, String)> {
        self.arrivals.lock().unwrap().clone()
    }
}

/// Open targets; a failed attempt gives up at once (no retries), unless `schedule` says more.
fn options(schedule: &str) -> Options {
    Options::default()
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
        .env("HOOKGATE_DELIVERY_RETRY_SCHEDULE_SECS", schedule)
        // A thousand posts from one address in a moment: no per-client rate in the way.
        .env("HOOKGATE_CLIENT_REQUESTS_PER_SECOND", "0")
}

async fn subscribe(gateway: &Gateway, body: Value) -> String {
    let response =
        gateway.http.post(gateway.url("/api/webhooks")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// Posts `count` orders, 25 at a time.
async fn post_orders(gateway: &Gateway, count: usize) {
    let url = gateway.hook_url(ORDER_UPDATE).await;
    for chunk in (0..count).collect::<Vec<_>>().chunks(25) {
        let posts = chunk.iter().map(|n| gateway.http.post(&url).json(&json!({"n": n})).send());
        for response in futures_util::future::join_all(posts).await {
            assert_eq!(response.unwrap().status(), 202);
        }
    }
}

async fn post_admin(gateway: &Gateway, path: &str, body: Option<Value>) -> reqwest::Response {
    let request = gateway.http.post(gateway.url(path)).bearer_auth(ADMIN_TOKEN);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.unwrap()
}

/// How many of the subscription's deliveries have `status`.
async fn count(gateway: &Gateway, subscription: &str, status: &str) -> u64 {
    let page = gateway.admin_json(&format!("/api/webhooks/{subscription}/deliveries?status={status}&per_page=1")).await;
    page["total"].as_u64().unwrap()
}

/// Waits until `expected` of the subscription's deliveries have `status` (at most `seconds`).
async fn wait_for(gateway: &Gateway, subscription: &str, status: &str, expected: u64, seconds: u64) {
    let what = format!("{expected} {status} deliveries of {subscription}");
    eventually(Duration::from_secs(seconds), &what, || async {
        count(gateway, subscription, status).await == expected
    })
    .await;
}

/// Follows a job until it is done (at most 60 s); returns every `done` figure seen on the way.
async fn follow(gateway: &Gateway, job: &Value) -> (Value, Vec<u64>) {
    let url = job["url"].as_str().unwrap().to_owned();
    let mut seen = vec![job["done"].as_u64().unwrap()];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let current = gateway.admin_json(&url).await;
        seen.push(current["done"].as_u64().unwrap());
        if current["state"] == "done" {
            return (current, seen);
        }
        assert!(Instant::now() < deadline, "the job did not finish: {current}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn dead_letters_are_listed_across_subscriptions_and_replayed_one_by_one_and_in_bulk() {
    let gateway = Gateway::start_with(options("[]")).await;
    let (first_receiver, second_receiver) = (Receiver::failing_first(3).await, Receiver::failing_first(3).await);
    let first = subscribe(&gateway, json!({"url": first_receiver.url})).await;
    let second = subscribe(&gateway, json!({"url": second_receiver.url})).await;
    post_orders(&gateway, 3).await;
    wait_for(&gateway, &first, "failed", 3, 20).await;
    wait_for(&gateway, &second, "failed", 3, 20).await;

    let dead = gateway.admin_json("/api/deliveries").await;
    let letters = dead["data"].as_array().unwrap();
    assert_eq!(letters.len(), 6, "failed is the default status: {dead}");
    assert!(letters.iter().all(|letter| letter["status"] == "failed" && letter["lastAttempt"]["statusCode"] == 500));
    assert!(letters.iter().all(|letter| letter["lastAttempt"]["responseExcerpt"] == "answered"), "the last error");
    let first_page = gateway.admin_json("/api/deliveries?status=failed&limit=4").await;
    let cursor = first_page["next_cursor"].as_str().expect("a cursor to the rest").to_owned();
    let rest = gateway.admin_json(&format!("/api/deliveries?status=failed&limit=4&cursor={cursor}")).await;
    assert_eq!((first_page["data"].as_array().unwrap().len(), rest["data"].as_array().unwrap().len()), (4, 2));
    assert!(rest["next_cursor"].is_null());
    let only_first = gateway.admin_json(&format!("/api/deliveries?subscription_id={first}")).await;
    assert_eq!(only_first["data"].as_array().unwrap().len(), 3);
    let bad = gateway.admin_get("/api/deliveries?status=lost").await;
    assert_eq!(error_code(bad, 400).await.0, "bad_request");
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
    let none = gateway.admin_json(&format!("/api/deliveries?from={later}")).await;
    assert!(none["data"].as_array().unwrap().is_empty(), "from and to bound the creation time");

    // One by one: the subscription's own retry route.
    let one = only_first["data"][0]["id"].as_str().unwrap();
    let retried = post_admin(&gateway, &format!("/api/webhooks/{first}/deliveries/{one}/retry"), None).await;
    assert_eq!(retried.status(), 202);
    wait_for(&gateway, &first, "delivered", 1, 20).await;

    // In bulk across subscriptions: the five left.
    let response = post_admin(&gateway, "/api/deliveries/retry", Some(json!({}))).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = response.json().await.unwrap();
    assert_eq!((job["total"].as_u64(), location.as_str()), (Some(5), job["url"].as_str().unwrap()), "{job}");
    let (done, _) = follow(&gateway, &job).await;
    assert_eq!((done["queued"].as_u64(), done["skipped"].as_u64()), (Some(5), Some(0)), "{done}");
    wait_for(&gateway, &first, "delivered", 3, 20).await;
    wait_for(&gateway, &second, "delivered", 3, 20).await;
    assert!(gateway.admin_json("/api/deliveries").await["data"].as_array().unwrap().is_empty(), "no dead letter left");

    let pending = post_admin(&gateway, "/api/deliveries/retry?status=pending", None).await;
    assert_eq!(error_code(pending, 400).await.0, "bad_request");
    let missing = gateway.admin_get("/api/jobs/job_missing").await;
    assert_eq!(error_code(missing, 404).await.0, "not_found");
}

#[tokio::test]
async fn a_scoped_key_sees_and_retries_only_the_dead_letters_of_subscriptions_it_reaches() {
    let gateway = Gateway::start_with(options("[]")).await;
    let receiver = Receiver::failing_first(2).await;
    let orders = subscribe(&gateway, json!({"url": receiver.url, "events": ["kustomer.app.shop.*"]})).await;
    let everything = subscribe(&gateway, json!({"url": receiver.url})).await;
    post_orders(&gateway, 1).await;
    wait_for(&gateway, &orders, "failed", 1, 20).await;
    wait_for(&gateway, &everything, "failed", 1, 20).await;
    let key =
        gateway.issue_key(json!({"name": "shop", "purpose": "management", "scopes": ["kustomer.app.shop.*"]})).await;
    let key = key["key"].as_str().unwrap().to_owned();
    let as_key = |path: &str| gateway.http.get(gateway.url(path)).bearer_auth(&key).send();
    let seen: Value = as_key("/api/deliveries").await.unwrap().json().await.unwrap();
    let ids: Vec<&str> =
        seen["data"].as_array().unwrap().iter().map(|d| d["subscriptionId"].as_str().unwrap()).collect();
    assert_eq!(ids, [orders.as_str()], "only the subscription within its scopes: {seen}");
    let hidden = as_key(&format!("/api/deliveries?subscription_id={everything}")).await.unwrap();
    assert_eq!(error_code(hidden, 404).await.0, "not_found");
    let response = gateway.http.post(gateway.url("/api/deliveries/retry")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["total"], 1, "{job}");
    let followed = as_key(job["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(followed.status(), 200, "its own job");
    let admin_job: Value =
        post_admin(&gateway, &format!("/api/webhooks/{everything}/deliveries/retry"), None).await.json().await.unwrap();
    let others = as_key(admin_job["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(error_code(others, 404).await.0, "not_found", "a job over a subscription out of reach");
}

#[tokio::test]
async fn a_bulk_retry_of_a_thousand_failed_deliveries_shows_its_progress_and_delivers_them_all() {
    let gateway = Gateway::start_with(options("[]")).await;
    let receiver = Receiver::failing_first(1000).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url})).await;
    post_orders(&gateway, 1000).await;
    wait_for(&gateway, &subscription, "failed", 1000, 120).await;

    let response =
        post_admin(&gateway, &format!("/api/webhooks/{subscription}/deliveries/retry?status=failed"), None).await;
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    assert_eq!((job["total"].as_u64(), job["state"].as_str()), (Some(1000), Some("running")), "{job}");
    let (done, seen) = follow(&gateway, &job).await;
    assert!(seen.windows(2).all(|pair| pair[0] <= pair[1]), "progress only goes forward: {seen:?}");
    assert_eq!((done["queued"].as_u64(), done["done"].as_u64()), (Some(1000), Some(1000)), "{done}");
    let mut steps = seen.clone();
    steps.dedup();
    eprintln!("bulk retry of 1000: done went {steps:?}");
    wait_for(&gateway, &subscription, "delivered", 1000, 120).await;
    assert_eq!(receiver.arrivals().len(), 2000, "each failed once, then delivered once");
}

#[tokio::test]
async fn the_cli_lists_dead_letters_and_retries_them_with_a_progress_bar() {
    let gateway = Gateway::start_with(options("[]")).await;
    let receiver = Receiver::failing_first(4).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url})).await;
    post_orders(&gateway, 4).await;
    wait_for(&gateway, &subscription, "failed", 4, 20).await;
    let listed = gateway.cli(&["deliveries", "list"]);
    let printed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{printed} {}", String::from_utf8_lossy(&listed.stderr));
    assert_eq!(printed.matches("HTTP 500").count(), 4, "each with its last error: {printed}");
    let output = gateway.cli(&["deliveries", "retry", "--subscription", &subscription]);
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed} {}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains("4 deliveries queued again, 0 skipped"), "{printed}");
    wait_for(&gateway, &subscription, "delivered", 4, 20).await;
}

#[tokio::test]
async fn a_rate_limit_of_5_a_second_holds_over_20_seconds_while_another_subscription_is_not_slowed() {
    let gateway = Gateway::start_with(options("[1, 1]")).await;
    let (limited_receiver, free_receiver) = (Receiver::start(Vec::new()).await, Receiver::start(Vec::new()).await);
    let limited =
        subscribe(&gateway, json!({"url": limited_receiver.url, "rate_limit": {"per_second": 5, "burst": 5}})).await;
    let shown = gateway.admin_json(&format!("/api/webhooks/{limited}")).await;
    assert_eq!(shown["rateLimit"], json!({"perSecond": 5.0, "burst": 5}), "{shown}");
    let free = subscribe(&gateway, json!({"url": free_receiver.url})).await;
    let posted = Instant::now();
    post_orders(&gateway, 140).await;
    wait_for(&gateway, &free, "delivered", 140, 20).await;
    let free_took = posted.elapsed();
    let limited_so_far = limited_receiver.arrivals().len();
    assert!(free_took < Duration::from_secs(10), "the other subscription is not slowed: {free_took:?}");
    assert!(limited_so_far < 140, "while the limited one is paced: {limited_so_far} in {free_took:?}");

    tokio::time::sleep(Duration::from_secs(22).saturating_sub(posted.elapsed())).await;
    let arrivals = limited_receiver.arrivals();
    let start = arrivals[0].0;
    let in_window = arrivals.iter().filter(|(at, _)| at.duration_since(start) <= Duration::from_secs(20)).count();
    // The burst goes at once; after it, 5 a second.
    let rate = (in_window - 5) as f64 / 20.0;
    assert!((4.5..=5.5).contains(&rate), "{in_window} deliveries in 20 s after the first: {rate:.2}/s");
    eprintln!(
        "rate limit 5/s: {in_window} deliveries in 20 s ({rate:.2}/s after the burst); the other took {free_took:?}"
    );
    let mut ids: Vec<&String> = arrivals.iter().map(|(_, id)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), arrivals.len(), "nothing sent twice");

    // Nothing above the limit is lost or failed: it waits, and the history says how long.
    wait_for(&gateway, &limited, "delivered", 140, 30).await;
    assert_eq!(count(&gateway, &limited, "failed").await, 0);
    let history = gateway.admin_json(&format!("/api/webhooks/{limited}/deliveries?per_page=1")).await;
    let attempt = &history["data"][0]["attemptHistory"][0];
    let (due, sent): (jiff::Timestamp, jiff::Timestamp) =
        (attempt["dueAt"].as_str().unwrap().parse().unwrap(), attempt["at"].as_str().unwrap().parse().unwrap());
    assert!(sent.duration_since(due).as_secs() >= 15, "the newest waited for the limit: due {due}, sent {sent}");
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_for_and_not_counted_as_failing() {
    let gateway = Gateway::start_with(options("[1, 1]")).await;
    let receiver = Receiver::start(vec![(429, Some("3"))]).await;
    let subscription = subscribe(&gateway, json!({"url": receiver.url})).await;
    post_orders(&gateway, 1).await;
    eventually(Duration::from_secs(5), "the first attempt", || async { !receiver.arrivals().is_empty() }).await;
    let shown = gateway.admin_json(&format!("/api/webhooks/{subscription}")).await;
    assert!(shown["failingSince"].is_null(), "a 429 paces, it does not fail the subscription: {shown}");
    wait_for(&gateway, &subscription, "delivered", 1, 20).await;
    let arrivals = receiver.arrivals();
    let waited = arrivals[1].0.duration_since(arrivals[0].0);
    assert!(
        waited >= Duration::from_secs(3),
        "the retry waited for Retry-After (3 s), not the schedule's 1 s: {waited:?}"
    );
}

#[tokio::test]
async fn ordered_deliveries_arrive_in_order_per_key_while_a_failing_key_holds_back_only_itself() {
    let gateway = Gateway::start_with(options("[2, 2]")).await;
    // Answers 500 to the first request of key A, 200 to everything else; keeps (key, n) in arrival order.
    let arrivals: Arc<Mutex<Vec<(Instant, String, u64)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let seen = seen.clone();
            async move {
                let body: Value = serde_json::from_str(&body).unwrap();
                let data = &body["data"]["data"];
                let (key, n) = (data["key"].as_str().unwrap().to_owned(), data["n"].as_u64().unwrap());
                let mut seen = seen.lock().unwrap();
                let first_of_a = key == "A" && !seen.iter().any(|(_, seen_key, _)| seen_key == "A");
                seen.push((Instant::now(), key, n));
                if first_of_a { axum::http::StatusCode::INTERNAL_SERVER_ERROR } else { axum::http::StatusCode::OK }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let subscription = subscribe(&gateway, json!({"url": url, "ordering": {"key": "$.data.key"}})).await;
    let shown = gateway.admin_json(&format!("/api/webhooks/{subscription}")).await;
    assert_eq!(shown["ordering"], json!({"key": "$.data.key"}));
    let hook = gateway.hook_url(ORDER_UPDATE).await;
    for n in 1..=5 {
        for key in ["A", "B"] {
            let response = gateway.http.post(&hook).json(&json!({"key": key, "n": n})).send().await.unwrap();
            assert_eq!(response.status(), 202);
        }
    }
    // While A's first waits for its retry, the history says what waits behind it.
    eventually(Duration::from_secs(5), "A's next waiting behind A's first", || async {
        let pending = gateway.admin_json(&format!("/api/webhooks/{subscription}/deliveries?status=pending")).await;
        let waiting = pending["data"].as_array().unwrap().iter().filter(|d| d["waitingBehind"].is_string()).count();
        waiting == 4 && pending["data"].as_array().unwrap().iter().all(|d| d["orderingKey"] == "A")
    })
    .await;
    wait_for(&gateway, &subscription, "delivered", 10, 30).await;

    let arrivals = arrivals.lock().unwrap().clone();
    let order = |key: &str| arrivals.iter().filter(|(_, k, _)| k == key).map(|(_, _, n)| *n).collect::<Vec<_>>();
    assert_eq!(order("A"), [1, 1, 2, 3, 4, 5], "A in order, its first tried twice");
    assert_eq!(order("B"), [1, 2, 3, 4, 5], "B in order");
    let last_b = arrivals.iter().filter(|(_, k, _)| k == "B").map(|(at, _, _)| *at).max().unwrap();
    let a_retried = arrivals.iter().filter(|(_, k, _)| k == "A").nth(1).unwrap().0;
    assert!(last_b < a_retried, "B flowed while A waited for its retry");
}

#[tokio::test]
async fn the_history_and_the_console_show_what_waits_behind_what_and_the_limits() {
    let gateway = Gateway::start_with(options("[1]")).await;
    let receiver = Receiver::start(Vec::new()).await;
    let subscription = subscribe(
        &gateway,
        json!({"url": receiver.url, "status": "paused", "ordering": {"key": "resource_id"},
               "rate_limit": {"per_second": 0.5}}),
    )
    .await;
    let hook = gateway.hook_url(ORDER_UPDATE).await;
    for n in 0..3 {
        let order = json!({"resource_id": if n == 1 { "ord_2" } else { "ord_1" }, "n": n});
        assert_eq!(gateway.http.post(&hook).json(&order).send().await.unwrap().status(), 202);
    }
    let history = gateway.admin_json(&format!("/api/webhooks/{subscription}/deliveries")).await;
    let rows: Vec<(&str, Option<&str>)> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|d| (d["orderingKey"].as_str().unwrap(), d["waitingBehind"].as_str()))
        .collect();
    let first = history["data"][2]["id"].as_str().unwrap();
    assert_eq!(rows, [("ord_1", None), ("ord_2", None), ("ord_1", Some(first))], "{history}");

    // The console, signed in with the admin token, shows the same.
    let response = gateway
        .http
        .post(gateway.url("/console/sign-in"))
        .form(&[("token", ADMIN_TOKEN), ("then", "/console/subscriptions")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = gateway
        .http
        .get(gateway.url(&format!("/console/subscriptions/{subscription}")))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("waiting behind <code>{first}</code>")), "{page}");
    assert!(page.contains("0.5 a second, bursts of 1"), "the rate limit is shown");
    assert!(page.contains("one at a time per key <code>resource_id</code>"), "the ordering is shown");
}
