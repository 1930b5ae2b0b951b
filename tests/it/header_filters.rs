//! Subscription filters on the event's source headers, on a real gateway: a GitHub-signed request
//! routed by `X-GitHub-Event` (with the data's `action` in the same filter), and a form post
//! routed by a header of its own; header names match whatever their case.

use serde_json::{Value, json};

use crate::deliveries::Receiver;
use crate::support::*;

const GITHUB_SECRET: &str = "header-filter-github-secret";

fn options() -> Options {
    let github = json!({"app": "github", "version": "1", "hooks": [
        {"eventName": "github.event", "type": "web", "source": {
            "path": "github", "scheme": "github", "secrets": ["${TEST_GITHUB_SECRET}"],
            "eventName": "github.{header:X-GitHub-Event}.{$.action}", "deliveryId": "{header:X-GitHub-Delivery}"}}
    ]});
    let mut options = Options::default()
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
        .env("TEST_GITHUB_SECRET", GITHUB_SECRET);
    options.definitions.push(("github.json".into(), github));
    options
}

async fn subscribe(gateway: &Gateway, url: &str, events: &str, filter: &str) -> Value {
    let body = json!({"url": url, "events": [events], "filter": filter});
    let response =
        gateway.http.post(gateway.url("/api/webhooks")).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

async fn delivery_count(gateway: &Gateway, subscription: &Value) -> u64 {
    let path = format!("/api/webhooks/{}/deliveries", subscription["id"].as_str().unwrap());
    gateway.admin_json(&path).await["total"].as_u64().unwrap()
}

/// Posts `body` to the GitHub source as GitHub signs it (`X-Hub-Signature-256`).
async fn post_github(gateway: &Gateway, kind: &str, delivery: &str, body: &Value) {
    use hmac::{KeyInit, Mac};
    let body = body.to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let response = gateway
        .http
        .post(gateway.url("/api/webhooks/github"))
        .header("content-type", "application/json")
        .header("X-GitHub-Event", kind)
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn a_filter_routes_github_events_by_the_x_github_event_header_and_the_data_together() {
    let gateway = Gateway::start_with(options()).await;
    let (opened_prs, pushes) = tokio::join!(Receiver::start(&[]), Receiver::start(&[]));
    // Written as GitHub documents the header; stored (and matched) in lower case.
    let opened = subscribe(
        &gateway,
        &opened_prs.url,
        "github.*",
        "$[?$.source.headers['X-GitHub-Event'] == 'pull_request' && $.data.action == 'opened']",
    )
    .await;
    let push = subscribe(&gateway, &pushes.url, "github.*", "$[?$.source.headers['x-github-event'] == 'push']").await;

    post_github(&gateway, "pull_request", "d-1", &json!({"action": "opened", "number": 7})).await;
    post_github(&gateway, "pull_request", "d-2", &json!({"action": "closed", "number": 7})).await;
    post_github(&gateway, "push", "d-3", &json!({"ref": "refs/heads/main"})).await;

    let delivered = opened_prs.wait_for(1).await;
    let body: Value = serde_json::from_str(&delivered[0].body).unwrap();
    assert_eq!(body["type"], "github.pull_request.opened");
    assert_eq!(pushes.wait_for(1).await.len(), 1);
    // Deliveries are written with their events, before the replies: the counts are final.
    assert_eq!(delivery_count(&gateway, &opened).await, 1, "only the opened pull request");
    assert_eq!(delivery_count(&gateway, &push).await, 1, "only the push");
}

#[tokio::test]
async fn a_filter_routes_form_posts_by_a_header_whatever_the_case_of_its_name() {
    let gateway = Gateway::start_with(options()).await;
    let receiver = Receiver::start(&[]).await;
    let contact =
        subscribe(&gateway, &receiver.url, ORDER_UPDATE, "$[?$.source.headers['X-FORM-KIND'] == 'contact']").await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    for kind in ["contact", "newsletter"] {
        let response = gateway
            .http
            .post(&url)
            .header("x-form-kind", kind)
            .form(&[("email", "ada@example.com"), ("kind", kind)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let response = gateway.http.post(&url).form(&[("email", "no-header@example.com")]).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let delivered = receiver.wait_for(1).await;
    let body: Value = serde_json::from_str(&delivered[0].body).unwrap();
    assert_eq!(body["data"]["data"]["kind"], "contact");
    assert_eq!(delivery_count(&gateway, &contact).await, 1, "neither the newsletter nor the post without the header");
}
