//! The seed platforms' subscription APIs served by hookgate, each request sent as the seed's
//! documentation writes it (path, headers, body) and each reply checked against the shape the
//! seed documents. Two things are replaced: event names by hookgate's (`survey.response.created`
//! is [`ORDER_UPDATE`], `hygiene.submission.created` [`CONTACT_FORM`], `feedback.ticket.created`
//! [`LEAD_CREATED`]), and target URLs by receivers on loopback, since tests never reach outside
//! the machine.
//!
//! Seeds 000 and 003 are `/api/webhooks` (seed 000 with its `X-API-KEY` + `X-API-SECRET` pair,
//! seed 003 with `x-api-key` and deleting by `{"id"}` in the body); seed 001 is
//! `/api/integrations/webhooks`; seed 004 is `/api/v1/hooks` with its JSON:API documents and
//! `{event}_sample`. `/api/webhooks` also takes seed 001's `enabled` and seed 004's `target_url`
//! and `event`. One subscription is made, seen, changed and deleted through different faces.

use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

use crate::deliveries::Receiver;
use crate::standard_webhooks;
use crate::support::*;

fn open_targets() -> Options {
    Options::default()
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
        .env("HOOKGATE_DELIVERY_RETRY_SCHEDULE_SECS", "[1, 1]")
}

/// Sends a request with the admin token; the status and the JSON body (null when empty).
async fn call(gateway: &Gateway, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = gateway.http.request(method, gateway.url(path)).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

/// The names of an object's fields, sorted.
#[track_caller]
fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> =
        object.as_object().unwrap_or_else(|| panic!("not an object: {object}")).keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

/// Posts an order update to the shop's form hook; the new event's id.
async fn post_order(gateway: &Gateway, order: Value) -> String {
    let response = gateway.http.post(gateway.hook_url(ORDER_UPDATE).await).json(&order).send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// Seed 001's delivery history of `id` once nothing is pending (at most 20 s).
async fn settled_001(gateway: &Gateway, id: &str) -> Value {
    let pending = format!("/api/integrations/webhooks/{id}/deliveries?status=pending");
    eventually(Duration::from_secs(20), "no pending delivery", || async {
        call(gateway, Method::GET, &pending, None).await.1["total"] == 0
    })
    .await;
    let (status, page) = call(gateway, Method::GET, &format!("/api/integrations/webhooks/{id}/deliveries"), None).await;
    assert_eq!(status, 200, "{page}");
    page
}

#[tokio::test]
async fn seed_001_endpoints_are_created_listed_changed_and_deleted_as_its_docs_show() {
    let gateway = Gateway::start_with(open_targets()).await;
    let (first, second) = (Receiver::start(&[]).await, Receiver::start(&[]).await);

    // Create webhook endpoint.
    let (status, created) = call(
        &gateway,
        Method::POST,
        "/api/integrations/webhooks",
        Some(json!({"url": first.url, "events": [ORDER_UPDATE, CONTACT_FORM], "enabled": true})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(keys(&created), ["created_at", "enabled", "events", "id", "secret", "url"]);
    assert_eq!(
        (&created["url"], &created["events"], &created["enabled"]),
        (&json!(first.url), &json!([ORDER_UPDATE, CONTACT_FORM]), &json!(true))
    );
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"), "{created}");
    let created_at: jiff::Timestamp = created["created_at"].as_str().unwrap().parse().unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    // List webhook endpoints: the seed's item shape, the secret never again.
    let (status, listed) = call(&gateway, Method::GET, "/api/integrations/webhooks", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed,
        json!({"data": [{"id": id, "url": first.url, "events": [ORDER_UPDATE, CONTACT_FORM], "enabled": true,
                         "created_at": created["created_at"]}]})
    );

    // Update webhook endpoint, with the seed's body: all fields optional.
    let path = format!("/api/integrations/webhooks/{id}");
    let (status, updated) =
        call(&gateway, Method::PATCH, &path, Some(json!({"url": second.url, "events": ["*"], "enabled": false}))).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        updated,
        json!({"id": id, "url": second.url, "events": ["*"], "enabled": false, "created_at": created["created_at"]})
    );
    let (_, canonical) = call(&gateway, Method::GET, &format!("/api/webhooks/{id}"), None).await;
    assert_eq!(canonical["status"], "disabled", "enabled false is status disabled: {canonical}");
    let (status, enabled) = call(&gateway, Method::PATCH, &path, Some(json!({"enabled": true}))).await;
    assert_eq!((status, &enabled["enabled"], &enabled["url"]), (200, &json!(true), &json!(second.url)));
    let (_, canonical) = call(&gateway, Method::GET, &format!("/api/webhooks/{id}"), None).await;
    assert_eq!(canonical["status"], "active", "{canonical}");
    let (status, paused) =
        call(&gateway, Method::PATCH, &format!("/api/webhooks/{id}"), Some(json!({"status": "paused"}))).await;
    assert_eq!(status, 200, "{paused}");
    let (_, shown) = call(&gateway, Method::GET, &path, None).await;
    assert_eq!(shown["enabled"], false, "a paused subscription is not enabled: {shown}");
    assert!(created_at <= jiff::Timestamp::now());

    let (status, error) = call(&gateway, Method::PATCH, &path, Some(json!({"enabled": "no"}))).await;
    assert_eq!((status, &error["error"]["fields"][0]["field"]), (422, &json!("enabled")), "{error}");

    // Delete webhook endpoint.
    let (status, body) = call(&gateway, Method::DELETE, &path, None).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(call(&gateway, Method::GET, "/api/integrations/webhooks", None).await, (200, json!({"data": []})));
    let (status, error) = call(&gateway, Method::GET, &path, None).await;
    assert_eq!((status, &error["error"]["code"]), (404, &json!("not_found")));
}

#[tokio::test]
async fn seed_001_rotation_invalidates_the_old_secret_at_once() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[]).await;
    let (_, created) = call(
        &gateway,
        Method::POST,
        "/api/integrations/webhooks",
        Some(json!({"url": receiver.url, "events": [ORDER_UPDATE], "enabled": true})),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let old = created["secret"].as_str().unwrap();

    let (status, rotated) =
        call(&gateway, Method::POST, &format!("/api/integrations/webhooks/{id}/rotate-secret"), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap();
    assert!(new.starts_with("whsec_") && new != old, "{rotated}");
    assert_eq!((&rotated["id"], &rotated["enabled"]), (&json!(id), &json!(true)));

    let (status, sent) = call(
        &gateway,
        Method::POST,
        &format!("/api/integrations/webhooks/{id}/test"),
        Some(json!({"event": ORDER_UPDATE})),
    )
    .await;
    assert_eq!((status, &sent["delivered"]), (200, &json!(true)), "{sent}");
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let now = jiff::Timestamp::now().as_second();
    let delivery = &received[0];
    assert_eq!(standard_webhooks::verify(new, &delivery.headers, delivery.body.as_bytes(), now), Ok(()));
    assert!(
        standard_webhooks::verify(old, &delivery.headers, delivery.body.as_bytes(), now).is_err(),
        "no signature by the old secret: {:?}",
        delivery.headers.get("webhook-signature")
    );
}

#[tokio::test]
async fn seed_001_delivery_history_has_its_item_shape_filters_and_retry() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[500, 500, 500]).await;
    let (_, created) = call(
        &gateway,
        Method::POST,
        "/api/integrations/webhooks",
        Some(json!({"url": receiver.url, "events": [ORDER_UPDATE], "enabled": true})),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let before = jiff::Timestamp::now();
    post_order(&gateway, json!({"orderId": "ORD-1"})).await;

    // List webhook deliveries: three failed attempts.
    let page = settled_001(&gateway, &id).await;
    assert_eq!(page["total"], 1, "{page}");
    let failed = &page["data"][0];
    assert_eq!(keys(failed), ["attempt_count", "delivered_at", "event", "http_status", "id", "status"]);
    assert_eq!(
        (
            &failed["event"],
            &failed["delivered_at"],
            &failed["http_status"],
            &failed["attempt_count"],
            &failed["status"]
        ),
        (&json!(ORDER_UPDATE), &Value::Null, &json!(500), &json!(3), &json!("failed"))
    );
    let delivery_id = failed["id"].as_str().unwrap().to_owned();
    let deliveries = format!("/api/integrations/webhooks/{id}/deliveries");
    let filtered = |query: String| {
        let path = format!("{deliveries}{query}");
        let gateway = &gateway;
        async move {
            let (status, page) = call(gateway, Method::GET, &path, None).await;
            assert_eq!(status, 200, "{path}: {page}");
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(filtered("?status=failed".into()).await, [delivery_id.as_str()]);
    assert!(filtered("?status=delivered".into()).await.is_empty());
    assert_eq!(filtered(format!("?from={before}&to={}", jiff::Timestamp::now())).await, [delivery_id.as_str()]);
    assert!(
        filtered(format!("?from={}", jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60))).await.is_empty()
    );
    assert_eq!(filtered("?page=1&per_page=1".into()).await, [delivery_id.as_str()]);
    assert!(filtered("?page=2&per_page=1".into()).await.is_empty());
    let (status, error) = call(&gateway, Method::GET, &format!("{deliveries}?status=lost"), None).await;
    assert_eq!((status, &error["error"]["code"]), (400, &json!("bad_request")));

    // Retry a delivery: 202, then delivered.
    let (status, _) = call(&gateway, Method::POST, &format!("{deliveries}/{delivery_id}/retry"), None).await;
    assert_eq!(status, 202);
    let page = settled_001(&gateway, &id).await;
    let delivered = &page["data"][0];
    assert_eq!(
        (&delivered["id"], &delivered["http_status"], &delivered["attempt_count"], &delivered["status"]),
        (&json!(delivery_id), &json!(200), &json!(4), &json!("delivered")),
        "{page}"
    );
    let delivered_at: jiff::Timestamp = delivered["delivered_at"].as_str().unwrap().parse().unwrap();
    assert!(before <= delivered_at && delivered_at <= jiff::Timestamp::now(), "{delivered_at}");
    assert_eq!(receiver.received().len(), 4);
    let (status, error) = call(&gateway, Method::POST, &format!("{deliveries}/dlv_unknown/retry"), None).await;
    assert_eq!((status, &error["error"]["code"]), (404, &json!("not_found")));

    // Deleting the endpoint deletes its history.
    assert_eq!(call(&gateway, Method::DELETE, &format!("/api/integrations/webhooks/{id}"), None).await.0, 204);
    let (status, error) = call(&gateway, Method::GET, &deliveries, None).await;
    assert_eq!((status, &error["error"]["code"]), (404, &json!("not_found")));
}

#[tokio::test]
async fn seed_001_test_event_is_sent_now_marked_as_a_test() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[]).await;
    let (_, created) = call(
        &gateway,
        Method::POST,
        "/api/integrations/webhooks",
        Some(json!({"url": receiver.url, "events": [ORDER_UPDATE], "enabled": true})),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let (status, sent) = call(
        &gateway,
        Method::POST,
        &format!("/api/integrations/webhooks/{id}/test"),
        Some(json!({"event": ORDER_UPDATE})),
    )
    .await;
    assert_eq!((status, &sent["statusCode"]), (200, &json!(200)), "{sent}");
    let received = receiver.received();
    assert_eq!(received.len(), 1, "sent before the reply");
    let body: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!((&body["test"], &body["type"]), (&json!(true), &json!(ORDER_UPDATE)), "{body}");
    let page = settled_001(&gateway, id).await;
    assert_eq!(page["total"], 0, "a test is not a delivery: {page}");
}

#[tokio::test]
async fn api_webhooks_also_takes_seed_001_and_seed_004_field_names() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[]).await;

    let (status, created) = call(
        &gateway,
        Method::POST,
        "/api/webhooks",
        Some(json!({"url": receiver.url, "events": [ORDER_UPDATE], "enabled": true})),
    )
    .await;
    assert_eq!((status, &created["status"]), (201, &json!("active")), "{created}");
    let path = format!("/api/webhooks/{}", created["id"].as_str().unwrap());
    let (status, disabled) = call(&gateway, Method::PATCH, &path, Some(json!({"enabled": false}))).await;
    assert_eq!((status, &disabled["status"], &disabled["events"]), (200, &json!("disabled"), &json!([ORDER_UPDATE])));

    let (status, created) = call(
        &gateway,
        Method::POST,
        "/api/webhooks",
        Some(json!({"target_url": receiver.url, "event": ORDER_UPDATE, "resource_id": "123"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (&created["url"], &created["events"], &created["resourceId"], &created["status"]),
        (&json!(receiver.url), &json!([ORDER_UPDATE]), &json!("123"), &json!("active"))
    );

    for (body, field) in [
        (json!({"url": receiver.url, "target_url": receiver.url}), "target_url"),
        (json!({"url": receiver.url, "enabled": "yes"}), "enabled"),
        (json!({"url": receiver.url, "event": [ORDER_UPDATE]}), "event"),
        (json!({"target_url": "ftp://127.0.0.1/x"}), "target_url"),
        (json!({"url": receiver.url, "event": "bad*"}), "event"),
    ] {
        let (status, error) = call(&gateway, Method::POST, "/api/webhooks", Some(body.clone())).await;
        assert_eq!((status, &error["error"]["fields"][0]["field"]), (422, &json!(field)), "{body}: {error}");
    }
    let (_, listed) = call(&gateway, Method::GET, "/api/webhooks", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "nothing refused was kept: {listed}");
}

/// Sends a JSON:API request to seed 004's face with `Authorization: Bearer <key>`; the status,
/// the reply's content type and its JSON body (null when empty).
async fn jsonapi(
    gateway: &Gateway,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, String, Value) {
    let mut request = gateway.http.request(method, gateway.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.header("content-type", "application/vnd.api+json").body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default();
    let text = response.text().await.unwrap();
    (status, content_type, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

/// Seed 004's request body, with `resource_id` when given.
fn seed_004_hook(target_url: &str, event: &str, resource_id: Option<&str>) -> Value {
    let mut attributes = json!({"target_url": target_url, "event": event});
    if let Some(resource_id) = resource_id {
        attributes["resource_id"] = json!(resource_id);
    }
    json!({"data": {"type": "hooks", "attributes": attributes,
                    "relationships": {"site": {"data": {"id": "456", "type": "sites"}}}}})
}

#[tokio::test]
async fn seed_004_hooks_are_created_from_its_json_api_examples_and_filter_by_resource() {
    let gateway = Gateway::start_with(open_targets()).await;
    let key = gateway.issue_key(json!({"name": "seed 004", "purpose": "management"})).await;
    let key = key["key"].as_str().unwrap();
    let (specific, wildcard) = (Receiver::start(&[]).await, Receiver::start(&[]).await);
    let relationships = json!({"site": {"data": {"id": "456", "type": "sites"}}});

    // Example request targeting a specific resource.
    let (status, content_type, created) = jsonapi(
        &gateway,
        key,
        Method::POST,
        "/api/v1/hooks",
        Some(seed_004_hook(&specific.url, ORDER_UPDATE, Some("123"))),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (201, "application/vnd.api+json"), "{created}");
    let data = &created["data"];
    assert_eq!((&data["type"], &data["relationships"]), (&json!("hooks"), &relationships), "{created}");
    assert_eq!(
        (&data["attributes"]["target_url"], &data["attributes"]["event"], &data["attributes"]["resource_id"]),
        (&json!(specific.url), &json!(ORDER_UPDATE), &json!("123"))
    );
    assert!(data["attributes"]["secret"].as_str().unwrap().starts_with("whsec_"), "{created}");
    let specific_id = data["id"].as_str().unwrap().to_owned();

    // Example request using a wildcard webhook.
    let (status, _, created) =
        jsonapi(&gateway, key, Method::POST, "/api/v1/hooks", Some(seed_004_hook(&wildcard.url, ORDER_UPDATE, None)))
            .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (&created["data"]["attributes"]["resource_id"], &created["data"]["relationships"]),
        (&Value::Null, &relationships)
    );
    let wildcard_id = created["data"]["id"].as_str().unwrap().to_owned();

    let (status, content_type, listed) = jsonapi(&gateway, key, Method::GET, "/api/v1/hooks", None).await;
    assert_eq!((status, content_type.as_str()), (200, "application/vnd.api+json"));
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|hook| hook["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [specific_id.as_str(), wildcard_id.as_str()]);
    assert!(listed["data"].as_array().unwrap().iter().all(|hook| hook.get("relationships") == Some(&relationships)));
    let (status, _, shown) = jsonapi(&gateway, key, Method::GET, &format!("/api/v1/hooks/{specific_id}"), None).await;
    assert_eq!((status, &shown["data"]["attributes"]["resource_id"]), (200, &json!("123")));
    assert!(shown["data"]["attributes"].get("secret").is_none(), "{shown}");

    // The payload about resource 123 goes to both, the other only to the wildcard hook.
    post_order(&gateway, json!({"id": "123"})).await;
    post_order(&gateway, json!({"id": "999"})).await;
    eventually(Duration::from_secs(20), "both deliveries to the wildcard hook", || async {
        wildcard.received().len() == 2
    })
    .await;
    let history = format!("/api/webhooks/{specific_id}/deliveries");
    eventually(Duration::from_secs(20), "no pending delivery to the specific hook", || async {
        call(&gateway, Method::GET, &format!("{history}?status=pending"), None).await.1["total"] == 0
    })
    .await;
    assert_eq!(call(&gateway, Method::GET, &history, None).await.1["total"], 1);
    let received = specific.wait_for(1).await;
    let delivered: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(delivered["data"]["data"], json!({"id": "123"}), "{delivered}");

    let (status, _, _) = jsonapi(&gateway, key, Method::DELETE, &format!("/api/v1/hooks/{specific_id}"), None).await;
    assert_eq!(status, 204);
    let (status, content_type, error) =
        jsonapi(&gateway, key, Method::GET, &format!("/api/v1/hooks/{specific_id}"), None).await;
    assert_eq!((status, content_type.as_str()), (404, "application/vnd.api+json"));
    assert_eq!(
        (&error["errors"][0]["status"], &error["errors"][0]["code"]),
        (&json!("404"), &json!("not_found")),
        "{error}"
    );
}

#[tokio::test]
async fn seed_004_errors_are_json_api_errors_pointing_at_the_attribute() {
    let gateway = Gateway::start_with(open_targets()).await;
    let receiver = Receiver::start(&[]).await;
    let pointers = |error: &Value| -> Vec<String> {
        error["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["source"]["pointer"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    for (body, expected) in [
        (
            seed_004_hook("ftp://127.0.0.1/x", "bad*", None),
            vec!["/data/attributes/target_url", "/data/attributes/event"],
        ),
        (
            json!({"data": {"type": "sites", "attributes": {"target_url": receiver.url, "event": ORDER_UPDATE}}}),
            vec!["/data/type"],
        ),
        (
            json!({"data": {"type": "hooks", "attributes": {"target_url": receiver.url}}}),
            vec!["/data/attributes/event"],
        ),
        (
            json!({"data": {"type": "hooks", "attributes": {"target_url": receiver.url, "event": ORDER_UPDATE, "colour": "red"}}}),
            vec!["/data/attributes/colour"],
        ),
        (json!({"target_url": receiver.url, "event": ORDER_UPDATE}), vec!["/data"]),
    ] {
        let (status, content_type, error) =
            jsonapi(&gateway, ADMIN_TOKEN, Method::POST, "/api/v1/hooks", Some(body.clone())).await;
        assert_eq!((status, content_type.as_str()), (422, "application/vnd.api+json"), "{body}: {error}");
        assert_eq!(pointers(&error), expected, "{body}: {error}");
        assert_eq!(
            (&error["errors"][0]["status"], &error["errors"][0]["code"]),
            (&json!("422"), &json!("invalid_request"))
        );
    }
    let (_, _, listed) = jsonapi(&gateway, ADMIN_TOKEN, Method::GET, "/api/v1/hooks", None).await;
    assert_eq!(listed, json!({"data": []}), "nothing refused was kept");

    // Scopes as now: 403 naming what is outside.
    let key = gateway.issue_key(json!({"name": "crm only", "purpose": "management", "scopes": [LEAD_CREATED]})).await;
    let (status, _, error) = jsonapi(
        &gateway,
        key["key"].as_str().unwrap(),
        Method::POST,
        "/api/v1/hooks",
        Some(seed_004_hook(&receiver.url, ORDER_UPDATE, None)),
    )
    .await;
    assert_eq!((status, &error["errors"][0]["code"]), (403, &json!("forbidden")), "{error}");
    assert!(error["errors"][0]["detail"].as_str().unwrap().contains(ORDER_UPDATE), "{error}");
}

#[tokio::test]
async fn every_event_has_a_sample_on_both_sample_routes() {
    let mut options = open_targets();
    options.definitions.push((
        "samples.json".into(),
        json!({"app": "samples", "version": "1", "hooks": [
            {"eventName": "kustomer.app.samples.declared", "type": "form", "sample": {"orderId": "ORD-1"}},
            {"eventName": "kustomer.app.samples.schema", "type": "form", "shape": {"schema": {
                "type": "object", "required": ["orderId", "amount"],
                "properties": {"orderId": {"type": "string", "examples": ["ORD-9"]}, "amount": {"type": "integer", "minimum": 1},
                               "email": {"type": "string", "format": "email"}}}}},
            {"eventName": "kustomer.app.samples.none", "type": "form"}
        ]}),
    ));
    let gateway = Gateway::start_with(options).await;
    let expected = [
        ("kustomer.app.samples.declared", "definition", json!({"orderId": "ORD-1"})),
        (
            "kustomer.app.samples.schema",
            "schema",
            json!({"orderId": "ORD-9", "amount": 1, "email": "user@example.com"}),
        ),
        ("kustomer.app.samples.none", "none", json!({})),
    ];
    for (event, from, data) in &expected {
        let (status, sample) = call(&gateway, Method::GET, &format!("/api/hooks/{event}/sample"), None).await;
        assert_eq!(status, 200, "{event}: {sample}");
        assert_eq!(sample, json!({"eventName": event, "from": from, "sample": true, "data": data}));
        let (status, content_type, sample) =
            jsonapi(&gateway, ADMIN_TOKEN, Method::GET, &format!("/api/v1/hooks/{event}_sample"), None).await;
        assert_eq!((status, content_type.as_str()), (200, "application/vnd.api+json"), "{event}: {sample}");
        assert_eq!(sample, json!({"id": null, "event": event, "payload": data, "sample": true, "from": from}));
    }

    // Every hook in the directory answers both, with no traffic yet.
    let hooks = gateway.admin_json("/api/hooks").await;
    let names: Vec<&str> =
        hooks["data"].as_array().unwrap().iter().map(|hook| hook["eventName"].as_str().unwrap()).collect();
    assert!(names.contains(&ORDER_UPDATE) && names.contains(&SHOP_MAIL) && names.len() >= 11, "{names:?}");
    for name in names {
        let (status, sample) = call(&gateway, Method::GET, &format!("/api/hooks/{name}/sample"), None).await;
        assert_eq!((status, &sample["sample"]), (200, &json!(true)), "{name}: {sample}");
        let (status, _, sample) =
            jsonapi(&gateway, ADMIN_TOKEN, Method::GET, &format!("/api/v1/hooks/{name}_sample"), None).await;
        assert_eq!((status, &sample["sample"]), (200, &json!(true)), "{name}: {sample}");
    }

    // Once there is traffic, the latest event.
    let event_id = post_order(&gateway, json!({"orderId": "ORD-real"})).await;
    let (_, _, sample) =
        jsonapi(&gateway, ADMIN_TOKEN, Method::GET, &format!("/api/v1/hooks/{ORDER_UPDATE}_sample"), None).await;
    assert_eq!(
        sample,
        json!({"id": event_id, "event": ORDER_UPDATE, "payload": {"orderId": "ORD-real"}, "sample": true, "from": "latest_event"})
    );
    let (status, error) = call(&gateway, Method::GET, "/api/v1/hooks/kustomer.app.nope_sample", None).await;
    assert_eq!((status, &error["errors"][0]["code"]), (404, &json!("not_found")));
}

/// A management key for every event: `(id, key)`.
async fn management_key(gateway: &Gateway) -> (String, String) {
    let issued = gateway.issue_key(json!({"name": "seed client", "purpose": "management"})).await;
    (issued["id"].as_str().unwrap().to_owned(), issued["key"].as_str().unwrap().to_owned())
}

/// Sends a request with seed 000's header pair, `X-API-KEY` (the key's id) and `X-API-SECRET`.
async fn seed_000(
    gateway: &Gateway,
    (id, key): &(String, String),
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request =
        gateway.http.request(method, gateway.url(path)).header("X-API-KEY", id).header("X-API-SECRET", key);
    if let Some(body) = body {
        request = request.header("Content-Type", "application/json").body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

#[tokio::test]
async fn seed_000_webhooks_are_managed_as_its_curl_examples_show() {
    let gateway = Gateway::start_with(open_targets()).await;
    let credentials = management_key(&gateway).await;
    let (first, second) = (Receiver::start(&[]).await, Receiver::start(&[]).await);

    // 1. Create a Webhook.
    let (status, created) = seed_000(
        &gateway,
        &credentials,
        Method::POST,
        "/api/webhooks",
        Some(json!({"url": first.url, "name": "Test Webhook", "subscribed_events": [ORDER_UPDATE]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (&created["url"], &created["name"], &created["events"], &created["status"]),
        (&json!(first.url), &json!("Test Webhook"), &json!([ORDER_UPDATE]), &json!("active"))
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, every) =
        seed_000(&gateway, &credentials, Method::POST, "/api/webhooks", Some(json!({"url": first.url}))).await;
    assert_eq!((status, &every["events"]), (201, &json!(["*"])), "no subscribed_events: every event");

    // 2. Get All Webhooks; 3. Get a Specific Webhook.
    let (status, listed) = seed_000(&gateway, &credentials, Method::GET, "/api/webhooks", None).await;
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|hook| hook["id"].as_str().unwrap()).collect();
    assert_eq!((status, ids), (200, vec![id.as_str(), every["id"].as_str().unwrap()]));
    let (status, shown) = seed_000(&gateway, &credentials, Method::GET, &format!("/api/webhooks/{id}"), None).await;
    assert_eq!((status, &shown["name"]), (200, &json!("Test Webhook")));

    // 4. Update a Webhook.
    let (status, updated) = seed_000(
        &gateway,
        &credentials,
        Method::PUT,
        &format!("/api/webhooks/{id}"),
        Some(json!({"url": second.url, "name": "Updated Webhook Name", "subscribed_events": [CONTACT_FORM]})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (&updated["url"], &updated["name"], &updated["events"]),
        (&json!(second.url), &json!("Updated Webhook Name"), &json!([CONTACT_FORM]))
    );

    // 5. Delete a Webhook.
    let (status, body) = seed_000(&gateway, &credentials, Method::DELETE, &format!("/api/webhooks/{id}"), None).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _) = seed_000(&gateway, &credentials, Method::GET, &format!("/api/webhooks/{id}"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn seed_003_webhooks_are_listed_created_and_deleted_by_body_as_its_curl_examples_show() {
    let gateway = Gateway::start_with(open_targets()).await;
    let (_, key) = management_key(&gateway).await;
    let receiver = Receiver::start(&[]).await;
    let send = |method: Method, body: Option<Value>| {
        let mut request = gateway.http.request(method, gateway.url("/api/webhooks")).header("x-api-key", &key);
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, if text.is_empty() { Value::Null } else { serde_json::from_str::<Value>(&text).unwrap() })
        }
    };

    // Create Webhook: the secret is returned once.
    let (status, created) =
        send(Method::POST, Some(json!({"url": receiver.url, "events": [ORDER_UPDATE, CONTACT_FORM, LEAD_CREATED]})))
            .await;
    assert_eq!(status, 201, "{created}");
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let id = created["id"].as_str().unwrap().to_owned();

    // List Webhooks: id, url, events, status, createdAt.
    let (status, listed) = send(Method::GET, None).await;
    assert_eq!(status, 200);
    let hook = &listed["data"][0];
    assert_eq!(
        (&hook["id"], &hook["url"], &hook["events"], &hook["status"], &hook["createdAt"]),
        (
            &json!(id),
            &json!(receiver.url),
            &json!([ORDER_UPDATE, CONTACT_FORM, LEAD_CREATED]),
            &json!("active"),
            &created["createdAt"]
        )
    );
    assert!(hook.get("secret").is_none());

    // Delete Webhook, by id in the body.
    let (status, _) = send(Method::DELETE, Some(json!({"id": id}))).await;
    assert_eq!(status, 204);
    assert_eq!(send(Method::GET, None).await, (200, json!({"data": []})));
}

#[tokio::test]
async fn a_subscription_made_through_one_face_is_seen_and_deleted_through_the_others() {
    let gateway = Gateway::start_with(open_targets()).await;
    let credentials = management_key(&gateway).await;
    let receiver = Receiver::start(&[]).await;

    // Created through seed 004's face.
    let (status, _, created) = jsonapi(
        &gateway,
        &credentials.1,
        Method::POST,
        "/api/v1/hooks",
        Some(seed_004_hook(&receiver.url, ORDER_UPDATE, Some("123"))),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    let created_at = created["data"]["attributes"]["created_at"].clone();

    // Listed through seed 001's face and /api/webhooks, each in its shape.
    let (status, integrations) = call(&gateway, Method::GET, "/api/integrations/webhooks", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        integrations,
        json!({"data": [{"id": id, "url": receiver.url, "events": [ORDER_UPDATE], "enabled": true, "created_at": created_at}]})
    );
    let (status, webhooks) = seed_000(&gateway, &credentials, Method::GET, "/api/webhooks", None).await;
    assert_eq!(status, 200);
    let hook = &webhooks["data"][0];
    assert_eq!(
        (&hook["id"], &hook["url"], &hook["events"], &hook["resourceId"], &hook["status"], &hook["createdAt"]),
        (&json!(id), &json!(receiver.url), &json!([ORDER_UPDATE]), &json!("123"), &json!("active"), &created_at)
    );

    // Changed through seed 001's face, seen through seed 004's.
    let (status, _) =
        call(&gateway, Method::PATCH, &format!("/api/integrations/webhooks/{id}"), Some(json!({"enabled": false})))
            .await;
    assert_eq!(status, 200);
    let (_, _, shown) = jsonapi(&gateway, &credentials.1, Method::GET, &format!("/api/v1/hooks/{id}"), None).await;
    assert_eq!(shown["data"]["attributes"]["status"], "disabled", "{shown}");

    // Deleted through seed 000's.
    let (status, _) = seed_000(&gateway, &credentials, Method::DELETE, &format!("/api/webhooks/{id}"), None).await;
    assert_eq!(status, 204);
    let (_, _, listed) = jsonapi(&gateway, &credentials.1, Method::GET, "/api/v1/hooks", None).await;
    assert_eq!(listed, json!({"data": []}));
    assert_eq!(call(&gateway, Method::GET, "/api/integrations/webhooks", None).await, (200, json!({"data": []})));
}

#[tokio::test]
async fn a_named_scope_declared_by_an_app_limits_a_key_to_its_event_patterns() {
    let mut options = open_targets();
    options.definitions.push((
        "scoped.json".into(),
        json!({"app": "scoped", "version": "1", "hooks": [],
               "scopes": {"view:orders": [ORDER_UPDATE, "kustomer.app.shop.contact.*"]}}),
    ));
    let gateway = Gateway::start_with(options).await;
    let receiver = Receiver::start(&[]).await;
    let issued = gateway.issue_key(json!({"name": "orders", "purpose": "management", "scopes": ["view:orders"]})).await;
    assert_eq!(issued["scopes"], json!(["view:orders"]), "the key carries the name");
    let key = issued["key"].as_str().unwrap();

    let (status, _, created) =
        jsonapi(&gateway, key, Method::POST, "/api/v1/hooks", Some(seed_004_hook(&receiver.url, ORDER_UPDATE, None)))
            .await;
    assert_eq!(status, 201, "{created}");
    let (status, _, error) =
        jsonapi(&gateway, key, Method::POST, "/api/v1/hooks", Some(seed_004_hook(&receiver.url, LEAD_CREATED, None)))
            .await;
    assert_eq!((status, &error["errors"][0]["code"]), (403, &json!("forbidden")), "{error}");
    assert!(error["errors"][0]["detail"].as_str().unwrap().contains(LEAD_CREATED), "names what is missing: {error}");

    let hooks = gateway.http.get(gateway.url("/api/hooks")).bearer_auth(key).send().await.unwrap();
    let hooks: Value = hooks.json().await.unwrap();
    let mut names: Vec<&str> =
        hooks["data"].as_array().unwrap().iter().map(|hook| hook["eventName"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, [CONTACT_FORM, ORDER_UPDATE], "the hooks the scope's patterns cover");

    // A name no app declares covers nothing; what is neither a pattern nor a name is refused.
    let unknown = gateway.issue_key(json!({"name": "none", "purpose": "management", "scopes": ["view:nothing"]})).await;
    let (status, _, _) = jsonapi(
        &gateway,
        unknown["key"].as_str().unwrap(),
        Method::POST,
        "/api/v1/hooks",
        Some(seed_004_hook(&receiver.url, ORDER_UPDATE, None)),
    )
    .await;
    assert_eq!(status, 403);
    let refused = gateway
        .http
        .post(gateway.url("/api/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "bad", "purpose": "management", "scopes": ["view contacts"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}
