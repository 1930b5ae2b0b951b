//! Subscriptions through the management API: created with a secret shown once, listed and read
//! without it, changed by `PUT` (whole) and `PATCH` (merge), deleted, their secret rotated; every
//! invalid field named; targets checked against SSRF; the platforms' `/api/webhooks/{source}`
//! still served on the same path.

use serde_json::{Value, json};

use crate::support::*;

fn open_targets() -> Options {
    Options::default()
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
}

async fn send(gateway: &Gateway, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = gateway.http.request(method, gateway.url(path)).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

#[tokio::test]
async fn a_subscription_is_created_with_its_secret_shown_once() {
    let gateway = Gateway::start_with(open_targets()).await;
    let (status, created) = send(
        &gateway,
        reqwest::Method::POST,
        "/api/webhooks",
        Some(json!({"url": "http://127.0.0.1:9/orders", "name": "orders", "subscribed_events": ["kustomer.app.ecommstore.*"],
                    "resource_id": "order-42", "headers": {"X-Team": "fulfilment"}})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sub_"));
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["events"], json!(["kustomer.app.ecommstore.*"]), "subscribed_events is an alias of events");
    assert_eq!(created["status"], "active");
    assert_eq!(created["resourceId"], "order-42");
    assert_eq!(created["headers"], json!({"x-team": "fulfilment"}));

    let (status, listed) = send(&gateway, reqwest::Method::GET, "/api/webhooks", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(listed["data"][0].get("secret").is_none() && listed["data"][0].get("secrets").is_none());
    let (status, shown) = send(&gateway, reqwest::Method::GET, &format!("/api/webhooks/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(shown["name"], "orders");
    assert!(shown.get("secrets").is_none(), "{shown}");

    // Kept across a restart.
    let mut gateway = gateway;
    gateway.restart().await;
    let (status, shown) = send(&gateway, reqwest::Method::GET, &format!("/api/webhooks/{id}"), None).await;
    assert_eq!((status, &shown["url"]), (200, &json!("http://127.0.0.1:9/orders")));
}

#[tokio::test]
async fn put_replaces_patch_merges_and_delete_removes() {
    let gateway = Gateway::start_with(open_targets()).await;
    let (_, created) = send(
        &gateway,
        reqwest::Method::POST,
        "/api/webhooks",
        Some(json!({"url": "http://127.0.0.1:9/a", "events": ["stripe.*"], "name": "payments"})),
    )
    .await;
    let path = format!("/api/webhooks/{}", created["id"].as_str().unwrap());

    let (status, patched) = send(&gateway, reqwest::Method::PATCH, &path, Some(json!({"status": "paused"}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (&patched["status"], &patched["events"], &patched["name"]),
        (&json!("paused"), &json!(["stripe.*"]), &json!("payments"))
    );

    let (status, replaced) =
        send(&gateway, reqwest::Method::PUT, &path, Some(json!({"url": "http://127.0.0.1:9/b"}))).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(
        (&replaced["events"], &replaced["name"], &replaced["status"]),
        (&json!(["*"]), &json!(""), &json!("active"))
    );
    assert_eq!(replaced["createdAt"], created["createdAt"]);

    let (status, _) = send(&gateway, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    let (status, error) = send(&gateway, reqwest::Method::GET, &path, None).await;
    assert_eq!((status, &error["error"]["code"]), (404, &json!("not_found")));
    let (status, error) = send(&gateway, reqwest::Method::DELETE, &path, None).await;
    assert_eq!((status, &error["error"]["code"]), (404, &json!("not_found")));
    assert_eq!(send(&gateway, reqwest::Method::GET, "/api/webhooks", None).await, (200, json!({"data": []})));
}

#[tokio::test]
async fn a_subscription_can_also_be_deleted_by_naming_it_in_the_body() {
    let gateway = Gateway::start_with(open_targets()).await;
    let (_, created) =
        send(&gateway, reqwest::Method::POST, "/api/webhooks", Some(json!({"url": "http://127.0.0.1:9/a"}))).await;
    let id = created["id"].clone();
    assert!(id.as_str().is_some_and(|id| id.starts_with("sub_")), "{created}");
    let (status, _) = send(&gateway, reqwest::Method::DELETE, "/api/webhooks", Some(json!({"id": id}))).await;
    assert_eq!(status, 204, "seed 003's style");
    assert_eq!(send(&gateway, reqwest::Method::GET, "/api/webhooks", None).await, (200, json!({"data": []})));
    let (status, error) = send(&gateway, reqwest::Method::DELETE, "/api/webhooks", Some(json!({"id": id}))).await;
    assert_eq!((status, &error["error"]["code"]), (404, &json!("not_found")));
    let (status, error) = send(&gateway, reqwest::Method::DELETE, "/api/webhooks", Some(json!({}))).await;
    assert_eq!((status, &error["error"]["fields"][0]["field"]), (422, &json!("id")));
}

#[tokio::test]
async fn every_invalid_field_is_named() {
    let gateway = Gateway::start_with(open_targets()).await;
    let (status, error) = send(
        &gateway,
        reqwest::Method::POST,
        "/api/webhooks",
        Some(json!({"name": 7, "events": [], "status": "asleep", "filter": "$[", "headers": {"Webhook-Id": "x"}})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(error["error"]["code"], "invalid_request");
    let fields: Vec<&str> =
        error["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["url", "name", "events", "status", "filter", "headers.Webhook-Id"]);
    let (status, error) = send(&gateway, reqwest::Method::POST, "/api/webhooks", None).await;
    assert_eq!((status, &error["error"]["code"]), (400, &json!("bad_request")), "{error}");
    assert!(send(&gateway, reqwest::Method::GET, "/api/webhooks", None).await.1["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn private_and_plain_http_targets_are_refused_by_default() {
    let gateway = Gateway::start().await;
    for (url, expected) in [
        ("http://93.184.216.34/hook", "https"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://[::ffff:192.168.0.1]/", "private"),
        ("https://localhost/", "resolves to"),
    ] {
        let (status, error) = send(&gateway, reqwest::Method::POST, "/api/webhooks", Some(json!({"url": url}))).await;
        assert_eq!(status, 422, "{url}: {error}");
        assert_eq!(error["error"]["fields"][0]["field"], "url", "{url}: {error}");
        let message = error["error"]["fields"][0]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{url}: {message}");
    }
    assert_eq!(send(&gateway, reqwest::Method::GET, "/api/webhooks", None).await, (200, json!({"data": []})));
}

/// The `url` field's message when creating a subscription to `url` is refused.
async fn refusal(gateway: &Gateway, url: &str) -> String {
    let (status, error) = send(gateway, reqwest::Method::POST, "/api/webhooks", Some(json!({"url": url}))).await;
    assert_eq!(status, 422, "{url}: {error}");
    assert_eq!(error["error"]["fields"][0]["field"], "url", "{url}: {error}");
    error["error"]["fields"][0]["message"].as_str().unwrap().to_owned()
}

async fn created(gateway: &Gateway, url: &str) {
    let (status, body) = send(gateway, reqwest::Method::POST, "/api/webhooks", Some(json!({"url": url}))).await;
    assert_eq!(status, 201, "{url}: {body}");
}

#[tokio::test]
async fn every_ipv6_form_of_an_inside_address_is_refused_by_default_naming_the_address_inside() {
    let gateway = Gateway::start().await;
    for (url, words) in [
        ("https://[2002:7f00:1::]/", ["127.0.0.1", "6to4", "loopback"]),
        ("https://[::127.0.0.1]/", ["127.0.0.1", "IPv4-compatible", "loopback"]),
        ("https://[::ffff:10.0.0.1]/", ["10.0.0.1", "IPv4-mapped", "private"]),
        ("https://[64:ff9b::c0a8:101]/", ["192.168.1.1", "NAT64", "private"]),
        ("https://[64:ff9b:1::7f00:1]/", ["127.0.0.1", "NAT64 local-use", "delivery_allow_networks"]),
        ("https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", ["127.0.0.1", "Teredo", "loopback"]),
        ("https://[::ffff:169.254.169.254]/", ["169.254.169.254", "IPv4-mapped", "cloud metadata address"]),
        ("https://[fd00:ec2::254]/", ["fd00:ec2::254", "cloud metadata address", "fd00:ec2::254/128"]),
    ] {
        let message = refusal(&gateway, url).await;
        for word in words {
            assert!(message.contains(word), "{url}: {message:?} lacks {word:?}");
        }
    }
    assert_eq!(send(&gateway, reqwest::Method::GET, "/api/webhooks", None).await, (200, json!({"data": []})));
}

#[tokio::test]
async fn allowed_networks_take_targets_but_metadata_addresses_only_when_listed_exactly() {
    let allowing = |networks: &str| {
        Options::default().env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true").env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", networks)
    };
    let mut gateway = Gateway::start_with(allowing("169.254.0.0/16, 10.0.0.0/8, 127.0.0.1")).await;
    created(&gateway, "http://169.254.10.10/hook").await;
    created(&gateway, "http://10.1.2.3/hook").await;
    created(&gateway, "http://[::ffff:10.9.9.9]/hook").await;
    let message = refusal(&gateway, "http://169.254.169.254/latest/meta-data?token=s3cr3t-in-query").await;
    assert!(message.contains("cloud metadata address"), "{message}");
    assert!(message.contains("unless delivery_allow_networks lists it exactly (169.254.169.254/32)"), "{message}");
    assert!(!message.contains("s3cr3t") && !message.contains("meta-data"), "the URL is not echoed: {message}");
    for metadata in ["http://169.254.170.2/v2/credentials", "http://[::ffff:a9fe:a9fe]/", "http://[2002:a9fe:a9fe::]/"]
    {
        assert!(refusal(&gateway, metadata).await.contains("cloud metadata address"), "{metadata}");
    }
    let outside = refusal(&gateway, "http://192.168.1.1/hook").await;
    assert!(outside.contains("192.168.1.1, a private address not in delivery_allow_networks"), "{outside}");

    // The deprecated boolean stands for the private networks, never for metadata.
    gateway
        .restart_with(
            Options::default()
                .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
                .env("HOOKGATE_DELIVERY_ALLOW_PRIVATE_NETWORKS", "true"),
        )
        .await;
    created(&gateway, "http://192.168.1.1/hook").await;
    assert!(refusal(&gateway, "http://169.254.169.254/latest/meta-data").await.contains("cloud metadata address"));

    gateway.restart_with(allowing("169.254.169.254/32")).await;
    created(&gateway, "http://169.254.169.254/latest/meta-data").await;
}

#[tokio::test]
async fn rotating_the_secret_keeps_the_old_one_only_for_the_overlap_asked_for() {
    let gateway = Gateway::start_with(open_targets()).await;
    let (_, created) =
        send(&gateway, reqwest::Method::POST, "/api/webhooks", Some(json!({"url": "http://127.0.0.1:9/a"}))).await;
    let id = created["id"].as_str().unwrap();
    let (status, rotated) = send(
        &gateway,
        reqwest::Method::POST,
        &format!("/api/webhooks/{id}/rotate-secret"),
        Some(json!({"overlap_seconds": 3600})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let secret = rotated["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret != created["secret"].as_str().unwrap());
    let expires: jiff::Timestamp = rotated["previousSecretsExpireAt"].as_str().unwrap().parse().unwrap();
    let overlap = expires.duration_since(jiff::Timestamp::now()).as_secs();
    assert!((3500..=3600).contains(&overlap), "{overlap}");
    let (status, error) = send(
        &gateway,
        reqwest::Method::POST,
        &format!("/api/webhooks/{id}/rotate-secret"),
        Some(json!({"overlap_seconds": -1})),
    )
    .await;
    assert_eq!((status, &error["error"]["fields"][0]["field"]), (422, &json!("overlap_seconds")));
    let (status, error) =
        send(&gateway, reqwest::Method::POST, "/api/webhooks/sub_unknown/rotate-secret", Some(json!({}))).await;
    assert_eq!((status, &error["error"]["code"]), (404, &json!("not_found")));
}

#[tokio::test]
async fn subscriptions_need_the_admin_token_and_sources_keep_their_path() {
    let gateway = Gateway::start_with(open_targets()).await;
    for (method, path) in [
        (reqwest::Method::GET, "/api/webhooks"),
        (reqwest::Method::POST, "/api/webhooks"),
        (reqwest::Method::GET, "/api/webhooks/sub_0123"),
        (reqwest::Method::PATCH, "/api/webhooks/sub_0123"),
        (reqwest::Method::DELETE, "/api/webhooks/sub_0123"),
        (reqwest::Method::POST, "/api/webhooks/sub_0123/rotate-secret"),
    ] {
        let response = gateway.http.request(method.clone(), gateway.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}: {body}");
    }
    // Not a subscription id: the platforms' endpoints, as before.
    let unknown = gateway.http.post(gateway.url("/api/webhooks/nosuchsource")).body("{}").send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.json::<Value>().await.unwrap()["error"]["code"], "source_not_found");
    let put = gateway.http.put(gateway.url("/api/webhooks/nosuchsource")).send().await.unwrap();
    let (code, _) = error_code(put, 405).await;
    assert_eq!(code, "method_not_allowed");
}

#[tokio::test]
async fn a_hook_sample_is_its_latest_event_or_the_declared_one_or_empty_data() {
    let mut options = open_targets();
    options.definitions.push((
        "samples.json".into(),
        json!({"app": "samples", "version": "1", "hooks": [
            {"eventName": "kustomer.app.samples.declared", "type": "form", "sample": {"orderId": "ORD-1"}},
            {"eventName": "kustomer.app.samples.none", "type": "form"}
        ]}),
    ));
    let gateway = Gateway::start_with(options).await;
    let declared = gateway.admin_json("/api/hooks/kustomer.app.samples.declared/sample").await;
    assert_eq!((&declared["from"], &declared["data"]), (&json!("definition"), &json!({"orderId": "ORD-1"})));
    assert_eq!(declared["sample"], true);
    let (status, none) =
        send(&gateway, reqwest::Method::GET, "/api/hooks/kustomer.app.samples.none/sample", None).await;
    assert_eq!(
        (status, none),
        (200, json!({"eventName": "kustomer.app.samples.none", "from": "none", "sample": true, "data": {}})),
        "no event yet and nothing declared: the envelope with empty data"
    );
    let (status, error) = send(&gateway, reqwest::Method::GET, "/api/hooks/kustomer.app.nope/sample", None).await;
    assert_eq!((status, &error["error"]["code"]), (404, &json!("not_found")));

    let url = gateway.hook_url("kustomer.app.samples.declared").await;
    let posted = gateway.http.post(url).json(&json!({"orderId": "ORD-real"})).send().await.unwrap();
    assert_eq!(posted.status(), 202);
    let latest = gateway.admin_json("/api/hooks/kustomer.app.samples.declared/sample").await;
    assert_eq!((&latest["from"], &latest["data"]), (&json!("latest_event"), &json!({"orderId": "ORD-real"})));
    assert_eq!(latest["sample"], true);
}
