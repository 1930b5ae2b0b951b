//! Retention and erasure through the real binary: `retention_days` deletes old events at start
//! (and every few minutes after); `POST /api/events/purge` (admin token only) and `hookgate
//! events purge --resource-id` erase every event about a resource and keep every other.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

use crate::support::*;

/// Posts JSON to the order form hook and returns the new event's id.
async fn post_order(gateway: &Gateway, order: Value) -> String {
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let response = gateway.http.post(url).json(&order).send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn event_status(gateway: &Gateway, id: &str) -> StatusCode {
    gateway.admin_get(&format!("/api/events/{id}")).await.status()
}

async fn purge(gateway: &Gateway, credential: Option<&str>, body: Value) -> reqwest::Response {
    let request = gateway.http.post(gateway.url("/api/events/purge")).json(&body);
    let request = match credential {
        Some(credential) => request.bearer_auth(credential),
        None => request,
    };
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_admin_erases_a_resources_events_over_http_and_every_other_event_is_kept() {
    let gateway = Gateway::start_with(
        Options::default()
            .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
            .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32"),
    )
    .await;
    // Nothing listens on port 9: the deliveries stay in the outbox, to be erased with their events.
    let subscribed = gateway
        .http
        .post(gateway.url("/api/webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"url": "http://127.0.0.1:9/orders", "events": [ORDER_UPDATE]}))
        .send()
        .await
        .unwrap();
    assert_eq!(subscribed.status(), 201);
    let erased = [
        post_order(&gateway, json!({"resourceId": "cust-1", "total": 12})).await,
        post_order(&gateway, json!({"id": "cust-1", "name": "Ada"})).await,
    ];
    let kept = [
        post_order(&gateway, json!({"resourceId": "cust-2", "total": 7})).await,
        post_order(&gateway, json!({"customer": {"id": "cust-1"}})).await,
    ];

    let response = purge(&gateway, Some(ADMIN_TOKEN), json!({"resourceId": "cust-1"})).await;
    assert_eq!(response.status(), 200);
    let counts: Value = response.json().await.unwrap();
    assert_eq!(counts, json!({"events": 2, "deliveries": 2, "bodies": 2}));
    for id in &erased {
        assert_eq!(event_status(&gateway, id).await, 404, "{id} is erased");
        assert_eq!(gateway.admin_get(&format!("/api/events/{id}/raw")).await.status(), 404, "with its body");
    }
    for id in &kept {
        assert_eq!(event_status(&gateway, id).await, 200, "{id} is kept");
    }
    let listed = gateway.admin_json(&format!("/api/events?name={ORDER_UPDATE}")).await;
    let mut ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = kept.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let again = purge(&gateway, Some(ADMIN_TOKEN), json!({"resourceId": "cust-1"})).await;
    assert_eq!(again.json::<Value>().await.unwrap(), json!({"events": 0, "deliveries": 0, "bodies": 0}));
}

#[tokio::test]
async fn erasure_takes_the_admin_token_and_a_resource_id() {
    let gateway = Gateway::start().await;
    let id = post_order(&gateway, json!({"resourceId": "cust-1"})).await;
    let issued = gateway.issue_key(json!({"name": "automation", "purpose": "management"})).await;
    let management = issued["key"].as_str().unwrap();

    let response = purge(&gateway, Some(management), json!({"resourceId": "cust-1"})).await;
    let (code, message) = error_code(response, 403).await;
    assert_eq!(code, "forbidden");
    assert!(message.contains("admin token"), "even an unscoped management key: {message}");
    let (code, _) = error_code(purge(&gateway, None, json!({"resourceId": "cust-1"})).await, 401).await;
    assert_eq!(code, "unauthorized");
    let (code, _) = error_code(purge(&gateway, Some("not-a-key"), json!({"resourceId": "cust-1"})).await, 401).await;
    assert_eq!(code, "invalid_credentials");
    for body in [json!({}), json!({"resourceId": ""}), json!({"resourceId": 7}), json!({"resource": "cust-1"})] {
        let (code, message) = error_code(purge(&gateway, Some(ADMIN_TOKEN), body.clone()).await, 400).await;
        assert_eq!(code, "bad_request", "{body}");
        assert!(message.contains("resourceId"), "{body}: {message}");
    }
    assert_eq!(event_status(&gateway, &id).await, 200, "nothing refused erased anything");
}

#[tokio::test]
async fn the_cli_erases_a_resources_events_and_prints_what_it_deleted() {
    let gateway = Gateway::start().await;
    let erased = post_order(&gateway, json!({"resource_id": "cust-9"})).await;
    let kept = post_order(&gateway, json!({"resource_id": "cust-10"})).await;
    let output = gateway.cli(&["events", "purge", "--resource-id", "cust-9"]);
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains("erased 1 events, 0 deliveries and 1 raw bodies about \"cust-9\""), "{printed}");
    assert_eq!(event_status(&gateway, &erased).await, 404);
    assert_eq!(event_status(&gateway, &kept).await, 200);
}

#[tokio::test]
async fn with_retention_days_events_older_than_that_are_deleted_at_start_and_newer_ones_kept() {
    let mut gateway = Gateway::start().await;
    let old = post_order(&gateway, json!({"age": "forty days"})).await;
    let recent = post_order(&gateway, json!({"age": "today"})).await;
    assert!(gateway.stop().await);
    let forty_days_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(40 * 24);
    gateway.backdate_event(&old, forty_days_ago).await;

    gateway.restart_with(Options::default().env("HOOKGATE_RETENTION_DAYS", "30")).await;
    eventually(Duration::from_secs(20), "the forty-day-old event is deleted", || async {
        event_status(&gateway, &old).await == 404
    })
    .await;
    assert_eq!(event_status(&gateway, &recent).await, 200, "the recent event is kept");
}
