//! Management keys: issued by the admin, accepted in the header styles of the seed platforms
//! (`Authorization: Bearer`, `X-API-Key`, the `X-API-KEY` + `X-API-SECRET` pair), limited to
//! the subscriptions, hooks and events within their scopes (403 outside, seed 004), and never
//! standing in for the admin token or for an ingest key.

use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::support::*;

fn open_targets() -> Options {
    Options::default()
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
}

/// A management key: `(id, key)`.
async fn management_key(gateway: &Gateway, scopes: Option<Value>) -> (String, String) {
    let mut request = json!({"name": "automation", "purpose": "management"});
    if let Some(scopes) = scopes {
        request["scopes"] = scopes;
    }
    let issued = gateway.issue_key(request).await;
    assert_eq!(issued["purpose"], "management");
    (issued["id"].as_str().unwrap().to_owned(), issued["key"].as_str().unwrap().to_owned())
}

async fn reply(request: RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

/// Calls the API with `X-API-Key: key`.
async fn with_key(gateway: &Gateway, key: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = gateway.http.request(method, gateway.url(path)).header("x-api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    reply(request).await
}

async fn as_admin(gateway: &Gateway, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = gateway.http.request(method, gateway.url(path)).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    reply(request).await
}

#[tokio::test]
async fn a_management_key_is_accepted_in_every_header_style_until_revoked() {
    let gateway = Gateway::start().await;
    let (id, key) = management_key(&gateway, None).await;
    assert!(key.starts_with("hgm_"), "{key}");
    let list = || gateway.http.get(gateway.url("/api/webhooks"));
    let listed = (200, json!({"data": []}));

    assert_eq!(reply(list().bearer_auth(&key)).await, listed, "Authorization: Bearer");
    assert_eq!(reply(list().header("x-api-key", &key)).await, listed, "X-API-Key");
    let pair = reply(list().header("X-API-KEY", &id).header("X-API-SECRET", &key)).await;
    assert_eq!(pair, listed, "the X-API-KEY (key id) and X-API-SECRET (key) pair");

    let (status, body) = reply(list().header("X-API-KEY", "key_someone_else").header("X-API-SECRET", &key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")), "the pair must match");
    let (status, body) = reply(list().header("X-API-SECRET", &key)).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("X-API-KEY"), "{body}");
    let (status, body) = reply(list().header("x-api-key", "hgm_not-a-key")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")));
    let (status, body) = reply(list()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    assert!(body["error"]["message"].as_str().unwrap().contains("X-API-SECRET"), "names every style: {body}");

    assert_eq!(as_admin(&gateway, Method::DELETE, &format!("/api/keys/{id}"), None).await.0, 204);
    let (status, body) = reply(list().bearer_auth(&key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")), "revoked at once");
}

#[tokio::test]
async fn a_scoped_key_subscribes_only_within_its_scopes() {
    let gateway = Gateway::start_with(open_targets()).await;
    let (_, key) = management_key(&gateway, Some(json!(["kustomer.app.shop.*", LEAD_CREATED]))).await;
    let target = "http://127.0.0.1:9/hooks";

    let (status, created) = with_key(
        &gateway,
        &key,
        Method::POST,
        "/api/webhooks",
        Some(json!({"url": target, "events": [ORDER_UPDATE, "kustomer.app.shop.contact.*", LEAD_CREATED]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let own = created["id"].as_str().unwrap().to_owned();

    for (events, outside) in [
        (json!(["stripe.*"]), "\"stripe.*\""),
        (json!([ORDER_UPDATE, "kustomer.*"]), "\"kustomer.*\""),
        (json!(["kustomer.app.crm.*"]), "\"kustomer.app.crm.*\""),
    ] {
        let (status, body) =
            with_key(&gateway, &key, Method::POST, "/api/webhooks", Some(json!({"url": target, "events": events})))
                .await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{events}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(outside) && message.contains("kustomer.app.shop.*"), "{message}");
    }
    let (status, body) = with_key(&gateway, &key, Method::POST, "/api/webhooks", Some(json!({"url": target}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "no events is every event");
    let (status, body) =
        with_key(&gateway, &key, Method::PATCH, &format!("/api/webhooks/{own}"), Some(json!({"events": ["*"]}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "nor may a change widen it");
    assert!(body["error"]["message"].as_str().unwrap().contains("\"*\""), "{body}");
    let (status, patched) =
        with_key(&gateway, &key, Method::PATCH, &format!("/api/webhooks/{own}"), Some(json!({"status": "paused"})))
            .await;
    assert_eq!((status, &patched["status"]), (200, &json!("paused")));

    // The admin's subscription to everything is out of the key's sight.
    let (_, everything) = as_admin(&gateway, Method::POST, "/api/webhooks", Some(json!({"url": target}))).await;
    let theirs = everything["id"].as_str().unwrap();
    let (_, listed) = with_key(&gateway, &key, Method::GET, "/api/webhooks", None).await;
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![own.as_str()]);
    for (method, path) in [
        (Method::GET, format!("/api/webhooks/{theirs}")),
        (Method::DELETE, format!("/api/webhooks/{theirs}")),
        (Method::GET, format!("/api/webhooks/{theirs}/deliveries")),
        (Method::POST, format!("/api/webhooks/{theirs}/rotate-secret")),
    ] {
        let (status, body) = with_key(&gateway, &key, method.clone(), &path, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{method} {path}");
    }
    let admin_ids = || async {
        let (_, all) = as_admin(&gateway, Method::GET, "/api/webhooks", None).await;
        let mut ids: Vec<String> =
            all["data"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    let mut both = vec![own.clone(), theirs.to_owned()];
    both.sort();
    assert_eq!(admin_ids().await, both, "the admin sees both, and the key's refused calls changed nothing");
    assert_eq!(with_key(&gateway, &key, Method::DELETE, &format!("/api/webhooks/{own}"), None).await.0, 204);
    assert_eq!(admin_ids().await, [theirs], "the key deleted its own");
}

#[tokio::test]
async fn a_scoped_key_reads_only_the_hooks_and_events_within_its_scopes() {
    let gateway = Gateway::start().await;
    let (_, key) = management_key(&gateway, Some(json!(["kustomer.app.shop.order.*"]))).await;
    let order = gateway.post_raw(ORDER_UPDATE, "application/json", r#"{"id": "o-1"}"#).await;
    let order_id = order.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let ingest = gateway.issue_key(json!({"name": "crm"})).await["key"].as_str().unwrap().to_owned();
    let lead_url = gateway.hook_url(LEAD_CREATED).await;
    let lead =
        gateway.http.post(lead_url).header("x-api-key", ingest).json(&json!({"id": "l-1"})).send().await.unwrap();
    let lead_id = lead.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    let (_, hooks) = with_key(&gateway, &key, Method::GET, "/api/hooks", None).await;
    let mut names: Vec<&str> =
        hooks["data"].as_array().unwrap().iter().map(|h| h["eventName"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, [ORDER_SYNC, ORDER_UPDATE], "exactly the hooks within kustomer.app.shop.order.*");

    let (status, event) = with_key(&gateway, &key, Method::GET, &format!("/api/events/{order_id}"), None).await;
    assert_eq!((status, &event["id"], &event["data"]), (200, &json!(order_id), &json!({"id": "o-1"})));
    let raw = gateway
        .http
        .get(gateway.url(&format!("/api/events/{order_id}/raw")))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.text().await.unwrap(), r#"{"id": "o-1"}"#);
    for path in [
        format!("/api/events/{lead_id}"),
        format!("/api/events/{lead_id}/raw"),
        format!("/api/hooks/{LEAD_CREATED}/sample"),
    ] {
        let (status, body) = with_key(&gateway, &key, Method::GET, &path, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{path}");
    }
    let (status, body) = with_key(&gateway, &key, Method::GET, "/api/events", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "a name within its scopes: {body}");
    let (status, listed) =
        with_key(&gateway, &key, Method::GET, &format!("/api/events?name={ORDER_UPDATE}"), None).await;
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!((status, ids), (200, vec![order_id.as_str()]));
    let (status, body) = with_key(&gateway, &key, Method::POST, &format!("/api/events/{lead_id}/replay"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn keys_never_stand_in_for_each_other_or_for_the_admin_token() {
    let gateway = Gateway::start().await;
    let (_, management) = management_key(&gateway, None).await;
    let ingest = gateway.issue_key(json!({"name": "erp"})).await["key"].as_str().unwrap().to_owned();

    let (status, body) = with_key(&gateway, &ingest, Method::GET, "/api/webhooks", None).await;
    assert_eq!(status, 403);
    assert!(body["error"]["message"].as_str().unwrap().contains("ingest key"), "{body}");

    let url = gateway.hook_url(ORDER_SYNC).await;
    let response = gateway.http.post(url).header("x-api-key", &management).json(&json!({"a": 1})).send().await.unwrap();
    let (code, _) = error_code(response, 403).await;
    assert_eq!(code, "not_an_ingest_key");

    for (method, path) in [
        (Method::GET, "/api/keys"),
        (Method::POST, "/api/keys"),
        (Method::GET, "/api/apps"),
        (Method::POST, "/api/definitions/reload"),
        (Method::GET, "/api/sources/rejections"),
    ] {
        let (status, body) = with_key(&gateway, &management, method.clone(), path, Some(json!({}))).await;
        assert_eq!(status, 403, "{method} {path} takes the admin token");
        assert!(body["error"]["message"].as_str().unwrap().contains("admin token"), "{body}");
    }
    let (status, document) = with_key(&gateway, &management, Method::GET, "/api/openapi.json", None).await;
    assert_eq!((status, &document["openapi"]), (200, &json!("3.1.0")));
    let (status, body) = with_key(&gateway, &management, Method::GET, "/api/no-such-thing", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, body) = reply(gateway.http.get(gateway.url("/api/no-such-thing"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "behind a credential too");
}

#[tokio::test]
async fn issuing_a_key_checks_its_purpose_and_scopes() {
    let gateway = Gateway::start().await;
    for (request, field) in [
        (json!({"name": "x", "scopes": ["stripe.*"]}), "scopes"),
        (json!({"name": "x", "purpose": "management", "apps": ["shop"]}), "apps"),
        (json!({"name": "x", "purpose": "management", "scopes": []}), "scopes"),
        (json!({"name": "x", "purpose": "management", "scopes": ["stripe*"]}), "scopes"),
    ] {
        let (status, body) = as_admin(&gateway, Method::POST, "/api/keys", Some(request.clone())).await;
        assert_eq!(status, 400, "{request}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with(field), "{body}");
    }
    let (status, body) =
        as_admin(&gateway, Method::POST, "/api/keys", Some(json!({"name": "x", "purpose": "root"}))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`root`") && message.contains("`ingest` or `management`"), "{body}");

    let (_, listed) = as_admin(&gateway, Method::GET, "/api/keys", None).await;
    assert_eq!(listed["data"], json!([]), "nothing was issued");
}

#[tokio::test]
async fn the_cli_issues_scoped_management_keys() {
    let gateway = Gateway::start().await;
    let output = gateway.cli(&["keys", "create", "--name", "ci", "--management", "--scope", "kustomer.app.shop.*"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let key = stdout.lines().find_map(|line| line.strip_prefix("key: ")).unwrap().trim().to_owned();
    assert!(key.starts_with("hgm_"));
    let (status, hooks) = with_key(&gateway, &key, Method::GET, "/api/hooks", None).await;
    assert_eq!(status, 200);
    let mut names: Vec<&str> =
        hooks["data"].as_array().unwrap().iter().map(|h| h["eventName"].as_str().unwrap()).collect();
    names.sort_unstable();
    let shop = shop_definition();
    let mut expected: Vec<&str> =
        shop["hooks"].as_array().unwrap().iter().map(|h| h["eventName"].as_str().unwrap()).collect();
    expected.sort_unstable();
    assert_eq!(names, expected, "exactly the shop's hooks");

    let listed = gateway.cli(&["keys", "list"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let table = String::from_utf8(listed.stdout).unwrap();
    assert!(table.contains("management") && table.contains("events kustomer.app.shop.*"), "{table}");
    let refused = gateway.cli(&["keys", "create", "--name", "x", "--scope", "stripe.*"]);
    assert!(!refused.status.success(), "a scope needs --management");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--management"), "{stderr}");
}
