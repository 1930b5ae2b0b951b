//! `hookgate migrate`: a gateway's SQLite store, made through the API and the hooks, copied into
//! PostgreSQL by the real binary; a gateway on the copy serves the same hook URLs, events,
//! subscriptions with their delivery history, keys and admin token, and still knows a platform's
//! retry. A target that holds data and a missing source are refused, and change nothing.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::deliveries::Receiver;
use crate::support::*;

/// Every table of a store, as `hookgate migrate` prints them.
const TABLES: &[&str] = &[
    "bodies",
    "events",
    "hook_tokens",
    "api_keys",
    "installed_apps",
    "settings",
    "subscriptions",
    "deliveries",
    "delivery_attempts",
    "subscription_rate_limits",
    "retry_jobs",
    "publications",
    "notice_mails",
];

const STRIPE_SECRET: &str = "whsec_test_migrate";
const BLOG_COMMENT: &str = "kustomer.app.blog.comment";

fn options() -> Options {
    let mut options = Options::default()
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
        .env("HOOKGATE_DELIVERY_RETRY_SCHEDULE_SECS", "[1, 1]")
        .env("TEST_STRIPE_SECRET", STRIPE_SECRET);
    let stripe = json!({"app": "platforms", "version": "1", "hooks": [
        {"eventName": "stripe.event", "type": "web", "source": {
            "path": "stripe", "scheme": "stripe", "secrets": ["${TEST_STRIPE_SECRET}"],
            "eventName": "stripe.{$.type}", "deliveryId": "{$.id}"}}
    ]});
    options.definitions.push(("platforms.json".into(), stripe));
    options
}

/// Runs `hookgate migrate --from FROM --to TO`.
fn migrate(from: &str, to: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["migrate", "--from", from, "--to", to])
        .output()
        .expect("hookgate migrate runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The counts `hookgate migrate` printed: table -> (SQLite, PostgreSQL).
fn printed_counts(stdout: &str) -> BTreeMap<String, (u64, u64)> {
    stdout
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim_matches(['│', ' ']).split('┆').map(str::trim).collect();
            match cells[..] {
                [table, sqlite, postgres, _] => {
                    Some((table.to_owned(), (sqlite.parse().ok()?, postgres.parse().ok()?)))
                }
                _ => None,
            }
        })
        .collect()
}

fn sqlite_counts(file: &Path) -> BTreeMap<String, u64> {
    let connection = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let count = |table: &str| -> u64 {
        connection.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get::<_, i64>(0)).unwrap() as u64
    };
    TABLES.iter().map(|table| (table.to_string(), count(table))).collect()
}

async fn postgres_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn postgres_counts(url: &str) -> BTreeMap<String, u64> {
    let client = postgres_client(url).await;
    let mut counts = BTreeMap::new();
    for table in TABLES {
        let row = client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap();
        counts.insert(table.to_string(), row.get::<_, i64>(0) as u64);
    }
    counts
}

/// The SHA-256 of the database file and its WAL: what a writer would change. (The `-shm` file is
/// SQLite's shared index of the WAL, which every reader updates.)
fn source_fingerprint(file: &Path) -> String {
    let mut bytes = std::fs::read(file).unwrap();
    bytes.extend(std::fs::read(file.with_extension("db-wal")).unwrap_or_default());
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
    hex::encode(digest)
}

/// Sends Stripe's event `id`, signed; returns the reply.
async fn post_stripe_event(gateway: &Gateway, id: &str) -> Value {
    let body = json!({"id": id, "object": "event", "type": "charge.succeeded", "data": {"object": {"amount": 700}}})
        .to_string();
    let response = post_stripe(gateway, &body, &stripe_signature(STRIPE_SECRET, &body)).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn admin_send(gateway: &Gateway, method: reqwest::Method, path: &str, body: Value) -> reqwest::Response {
    gateway.http.request(method, gateway.url(path)).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap()
}

async fn subscribe(gateway: &Gateway, body: Value) -> String {
    let response = admin_send(gateway, reqwest::Method::POST, "/api/webhooks", body).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// Posts to a hook's URL path on this gateway; returns the new event's id.
async fn post_to(gateway: &Gateway, path: &str, content_type: &str, body: &str, key: Option<&str>) -> String {
    let mut request = gateway.http.post(gateway.url(path)).header("content-type", content_type).body(body.to_owned());
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202, "POST {path}");
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// What the API shows of the store: every event with its raw body, subscriptions with their
/// delivery history, keys and apps.
async fn everything_shown(gateway: &Gateway, subscriptions: &[&str]) -> Value {
    let events = gateway.admin_json("/api/events?limit=1000").await;
    assert_eq!(events["nextCursor"], Value::Null, "one page holds them all");
    let mut raw = Vec::new();
    for event in events["data"].as_array().unwrap() {
        let response = gateway.admin_get(&format!("/api/events/{}/raw", event["id"].as_str().unwrap())).await;
        assert_eq!(response.status(), 200);
        raw.push(hex::encode(response.bytes().await.unwrap()));
    }
    let mut histories = Vec::new();
    for id in subscriptions {
        histories.push(gateway.admin_json(&format!("/api/webhooks/{id}/deliveries?per_page=500")).await);
    }
    json!({
        "events": events["data"],
        "raw": raw,
        "subscriptions": gateway.admin_json("/api/webhooks").await,
        "histories": histories,
        "keys": gateway.admin_json("/api/keys").await,
        "apps": gateway.admin_json("/api/apps").await,
    })
}

/// Waits until none of the subscription's deliveries is pending.
async fn settled(gateway: &Gateway, subscription: &str) -> Value {
    let path = format!("/api/webhooks/{subscription}/deliveries");
    eventually(Duration::from_secs(20), "no pending delivery", || async {
        gateway.admin_json(&format!("{path}?status=pending")).await["total"] == 0
    })
    .await;
    gateway.admin_json(&path).await
}

#[tokio::test]
async fn a_sqlite_store_moved_to_postgres_serves_the_same_hooks_events_subscriptions_and_keys() {
    let target = fresh_postgres_schema().await;
    let (delivered, failing, paused_receiver) =
        tokio::join!(Receiver::start(&[500]), Receiver::start(&[500, 500, 500]), Receiver::start(&[]));
    let mut gateway = Gateway::start_on_backend(Backend::Sqlite, options()).await;

    // Made through the API and the hooks, as a running gateway makes them.
    let orders = subscribe(&gateway, json!({"url": delivered.url, "events": [ORDER_UPDATE]})).await;
    let syncs = subscribe(&gateway, json!({"url": failing.url, "events": [ORDER_SYNC]})).await;
    let paused =
        subscribe(&gateway, json!({"url": paused_receiver.url, "events": [ORDER_UPDATE], "status": "paused"})).await;
    let ingest_key = gateway.issue_key(json!({"name": "sender"})).await["key"].as_str().unwrap().to_owned();
    let management_key = gateway.issue_key(json!({"name": "automation", "purpose": "management"})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let blog = json!({"app": "blog", "version": "1", "hooks": [{"eventName": BLOG_COMMENT, "type": "form"}]});
    assert_eq!(admin_send(&gateway, reqwest::Method::POST, "/api/apps", blog).await.status(), 201);
    let paths = hook_paths(&gateway).await;
    let form = "application/x-www-form-urlencoded";
    let first_order = post_to(&gateway, &paths[ORDER_UPDATE], form, "orderId=ORD-1&total=30", None).await;
    let second_order =
        post_to(&gateway, &paths[ORDER_UPDATE], "application/json", r#"{"orderId": "ORD-2", "total": 12}"#, None).await;
    post_to(&gateway, &paths[ORDER_SYNC], "application/json", r#"{"sync": 1}"#, Some(&ingest_key)).await;
    post_to(&gateway, &paths[BLOG_COMMENT], form, "comment=first%21", None).await;
    let charge = post_stripe_event(&gateway, "evt_charge_1").await;
    assert_eq!(post_stripe_event(&gateway, "evt_charge_1").await["duplicate"], true);

    let history = settled(&gateway, &orders).await;
    let statuses: Vec<&Value> = history["data"].as_array().unwrap().iter().map(|d| &d["status"]).collect();
    assert_eq!(statuses, [&json!("delivered"), &json!("delivered")], "{history}");
    let history = settled(&gateway, &syncs).await;
    assert_eq!((&history["data"][0]["status"], &history["data"][0]["attempts"]), (&json!("failed"), &json!(3)));
    let subscriptions = [orders.as_str(), syncs.as_str(), paused.as_str()];
    let before = everything_shown(&gateway, &subscriptions).await;
    assert!(gateway.stop().await, "the SQLite gateway stops cleanly");

    let file = gateway.database_file();
    let source = sqlite_counts(&file);
    let fingerprint = source_fingerprint(&file);
    let copied = migrate(&format!("sqlite:{}", file.display()), &target);
    let stdout = text(&copied.stdout);
    assert!(copied.status.success(), "{stdout}\n{}", text(&copied.stderr));
    let printed = printed_counts(&stdout);
    let target_counts = postgres_counts(&target).await;
    for table in TABLES {
        assert_eq!(printed[*table], (source[*table], target_counts[*table]), "{table} in\n{stdout}");
        assert_eq!(source[*table], target_counts[*table], "{table}");
    }
    assert_eq!(printed.len(), TABLES.len(), "{stdout}");
    assert_eq!(source["events"], before["events"].as_array().unwrap().len() as u64);
    assert_eq!((source["subscriptions"], source["api_keys"], source["installed_apps"]), (3, 2, 1));
    assert_eq!(
        (source["deliveries"], source["delivery_attempts"]),
        (5, 6),
        "2 delivered in 3 tries, 1 failed, 2 parked"
    );
    assert_eq!(source_fingerprint(&file), fingerprint, "the SQLite store is only read");

    // A second run finds the target holding data, and changes nothing.
    let again = migrate(&format!("sqlite:{}", file.display()), &target);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already holds hookgate data"), "{}", text(&again.stderr));
    assert_eq!(postgres_counts(&target).await, target_counts);

    // The same folder of definitions, on the copy, deciding the admin token from the stored hash.
    gateway.move_to(Backend::Postgres, target.clone());
    gateway.use_stored_admin_token();
    gateway.restart().await;
    assert_eq!(hook_paths(&gateway).await, paths, "every hook URL is the same");
    assert_eq!(everything_shown(&gateway, &subscriptions).await, before, "events, bodies, subscriptions, history");
    let with_key = gateway.http.get(gateway.url("/api/webhooks")).header("x-api-key", &management_key).send().await;
    assert_eq!(with_key.unwrap().status(), 200, "the management key still works");
    post_to(&gateway, &paths[ORDER_SYNC], "application/json", r#"{"sync": 2}"#, Some(&ingest_key)).await;
    let retried = post_stripe_event(&gateway, "evt_charge_1").await;
    assert_eq!((&retried["id"], &retried["duplicate"]), (&charge["id"], &json!(true)), "a platform's retry");
    assert_eq!(gateway.event(charge["id"].as_str().unwrap()).await["receiveCount"], 3);

    // What waited in the outbox goes out from the new store.
    let path = format!("/api/webhooks/{paused}");
    let resume = admin_send(&gateway, reqwest::Method::PATCH, &path, json!({"status": "active"})).await;
    assert_eq!(resume.status(), 200);
    let mut sent: Vec<String> =
        paused_receiver.wait_for(2).await.iter().map(|request| request.headers["webhook-id"].clone()).collect();
    sent.sort();
    let mut parked = vec![first_order, second_order];
    parked.sort();
    assert_eq!(sent, parked, "the paused subscription's parked deliveries");
    let third_order = post_to(&gateway, &paths[ORDER_UPDATE], form, "orderId=ORD-3", None).await;
    assert_eq!(
        delivered.wait_for(4).await[3].headers["webhook-id"],
        third_order,
        "a new event reaches a copied subscription"
    );
}

#[tokio::test]
async fn migrating_into_a_database_a_gateway_already_uses_is_refused_and_changes_nothing() {
    let mut source = Gateway::start_on_backend(Backend::Sqlite, Options::default()).await;
    let source_paths = hook_paths(&source).await;
    post_to(&source, &source_paths[ORDER_UPDATE], "application/json", r#"{"from": "sqlite"}"#, None).await;
    assert!(source.stop().await);
    let target = Gateway::start_on_backend(Backend::Postgres, Options::default()).await;
    let paths = hook_paths(&target).await;
    post_to(&target, &paths[ORDER_UPDATE], "application/json", r#"{"from": "postgres"}"#, None).await;
    let events = target.admin_json("/api/events").await;
    let counts = postgres_counts(&target.database()).await;

    let refused = migrate(&source.database(), &target.database());
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("already holds hookgate data") && stderr.contains("nothing was copied"), "{stderr}");
    let held = format!("events: 1 row, hook_tokens: {} rows", counts["hook_tokens"]);
    assert!(stderr.contains(&held), "it says what the target holds: {stderr}");
    assert_eq!(postgres_counts(&target.database()).await, counts);
    assert_eq!(target.admin_json("/api/events").await, events);
    assert_eq!(hook_paths(&target).await, paths);
}

#[tokio::test]
async fn a_missing_sqlite_file_is_refused_before_the_target_is_touched() {
    let target = fresh_postgres_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("hookgate.db");
    let refused = migrate(&format!("sqlite:{}", absent.display()), &target);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(stderr.contains(&format!("no SQLite database at {}", absent.display())), "{stderr}");
    assert!(!absent.exists(), "the source is not created");
    let client = postgres_client(&target).await;
    let tables: i64 = client
        .query_one("SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "the target is not even migrated");

    let backwards = migrate(&target, &format!("sqlite:{}", absent.display()));
    assert!(!backwards.status.success());
    assert!(text(&backwards.stderr).contains("--from names the SQLite store"), "{}", text(&backwards.stderr));
}
