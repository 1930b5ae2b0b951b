//! Every operation the OpenAPI document lists refuses a request that carries no credential, a
//! wrong one, a revoked management key or an ingest key; and a management key whose scopes do not
//! reach a resource is refused the admin's operations and sees nothing of what lies outside its
//! scopes. The routes are read from the document itself, so a new route is covered the day it is
//! documented (and `openapi.rs` proves every routed operation is documented). After every refusal
//! the resources are still there, unchanged: a refused request changed nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

/// Where the out-of-scope subscription delivers: a marker no refusal may show.
const HIDDEN_TARGET: &str = "http://127.0.0.1:9/hidden-crm-receiver";
/// A value inside the out-of-scope event's data: a marker no refusal may show.
const HIDDEN_DATA: &str = "hidden-lead-l-7731";

/// The resources the test's requests aim at, all outside the scoped key's reach
/// (`kustomer.app.shop.*` does not cover the crm app).
struct Targets {
    subscription: String,
    event: String,
    delivery: String,
    key: String,
}

impl Targets {
    /// `path` with every placeholder replaced by a real resource's id.
    fn concrete(&self, path: &str) -> String {
        path.replace("{delivery_id}", &self.delivery)
            .replace("{event_name}", LEAD_CREATED)
            .replace("{event}", LEAD_CREATED)
            .replace("{app}", "crm")
            .replace(
                "{id}",
                if path.starts_with("/api/events/") {
                    &self.event
                } else if path.starts_with("/api/keys/") {
                    &self.key
                } else {
                    &self.subscription
                },
            )
    }
}

/// A body for `method path` that, were it accepted, would reach outside the scoped key's reach.
fn body_for(method: &str, path: &str, targets: &Targets) -> Option<(&'static str, String)> {
    let json = "application/json";
    match (method, path) {
        ("post" | "put" | "patch", "/api/webhooks" | "/api/webhooks/{id}" | "/api/integrations/webhooks")
        | ("patch", "/api/integrations/webhooks/{id}") => {
            Some((json, json!({"url": HIDDEN_TARGET, "events": [LEAD_CREATED]}).to_string()))
        }
        ("delete", "/api/webhooks") => Some((json, json!({"id": targets.subscription}).to_string())),
        ("post", "/api/v1/hooks") => Some((
            "application/vnd.api+json",
            json!({"data": {"type": "hooks", "attributes": {"target_url": HIDDEN_TARGET, "event": LEAD_CREATED}}})
                .to_string(),
        )),
        ("post", "/api/keys") => Some((json, json!({"name": "escalation", "purpose": "management"}).to_string())),
        ("post", "/api/apps") => Some((json, crm_definition().to_string())),
        ("post", "/api/events/purge") => Some((json, json!({"resourceId": "l-7731"}).to_string())),
        ("post", path) if path.ends_with("/rotate-secret") => Some((json, "{}".to_owned())),
        ("post", path) if path.ends_with("/deliveries/retry") => Some((json, json!({"status": "failed"}).to_string())),
        ("post", _) => Some((json, json!({"event": LEAD_CREATED}).to_string())),
        _ => None,
    }
}

/// The error's `code`, in the API's own shape or seed 004's JSON:API one.
fn error_code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str().or_else(|| body["errors"][0]["code"].as_str())
}

/// Sends `method path` with `credential` (as `Authorization: Bearer`, when given), the body
/// [`body_for`] makes; returns the status and the body read (at most a second of a stream).
async fn send(
    gateway: &Gateway,
    method: &str,
    path: &str,
    targets: &Targets,
    credential: Option<&str>,
) -> (u16, String) {
    let mut request =
        gateway.http.request(method.to_uppercase().parse::<Method>().unwrap(), gateway.url(&targets.concrete(path)));
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    if let Some((content_type, body)) = body_for(method, path, targets) {
        request = request.header("content-type", content_type).body(body);
    }
    let mut response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, response.chunk()).await {
        body.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Every operation in the document, as `(method, path)`.
fn operations(document: &Value) -> Vec<(String, String)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.clone(), path.clone()));
        }
    }
    operations
}

/// The operations only the admin token may call: `x-hookgate-admin-only` in the document.
fn admin_only(document: &Value, method: &str, path: &str) -> bool {
    document["paths"][path][method]["x-hookgate-admin-only"] == json!(true)
}

async fn management_key(gateway: &Gateway, scopes: Option<Value>) -> (String, String) {
    let mut request = json!({"name": "route check", "purpose": "management"});
    if let Some(scopes) = scopes {
        request["scopes"] = scopes;
    }
    let issued = gateway.issue_key(request).await;
    (issued["id"].as_str().unwrap().to_owned(), issued["key"].as_str().unwrap().to_owned())
}

/// The resources outside the scoped key's reach: a crm subscription with a failed delivery, a
/// crm event, a spare management key.
async fn hidden_resources(gateway: &Gateway) -> Targets {
    let created = gateway
        .http
        .post(gateway.url("/api/webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"url": HIDDEN_TARGET, "events": [LEAD_CREATED]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let subscription = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let ingest = gateway.issue_key(json!({"name": "crm feed"})).await["key"].as_str().unwrap().to_owned();
    let posted = gateway
        .http
        .post(gateway.hook_url(LEAD_CREATED).await)
        .header("x-api-key", ingest)
        .json(&json!({"id": "l-7731", "note": HIDDEN_DATA}))
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_success(), "{}", posted.status());
    let event = posted.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let history = format!("/api/webhooks/{subscription}/deliveries");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let delivery = loop {
        let listed = gateway.admin_json(&history).await;
        if let Some(id) = listed["data"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "the hidden delivery is recorded: {listed}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (key, _) = management_key(gateway, None).await;
    Targets { subscription, event, delivery, key }
}

/// What the admin sees of the hidden resources and the keys, to compare after the refusals.
async fn admin_view(gateway: &Gateway, targets: &Targets) -> Value {
    let keys = gateway.admin_json("/api/keys").await;
    let keys: Vec<Value> = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| json!([key["id"], key["revokedAt"], key["scopes"]]))
        .collect();
    json!({
        "subscription": gateway.admin_json(&format!("/api/webhooks/{}", targets.subscription)).await,
        "event": gateway.admin_json(&format!("/api/events/{}", targets.event)).await["data"],
        "deliveries": gateway.admin_json(&format!("/api/webhooks/{}/deliveries", targets.subscription)).await["total"],
        "keys": keys,
        "apps": gateway.admin_json("/api/apps").await,
    })
}

/// A gateway whose subscriptions may deliver to loopback, with the hidden resources, a key
/// scoped to the shop app, a revoked key and an ingest key.
struct Setup {
    gateway: Gateway,
    document: Value,
    targets: Targets,
    scoped: String,
    revoked: String,
    ingest: String,
    before: Value,
}

async fn setup() -> Setup {
    let gateway = Gateway::start_with(
        Options::default()
            .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
            .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32"),
    )
    .await;
    let document = gateway.admin_json("/api/openapi.json").await;
    let targets = hidden_resources(&gateway).await;
    let (_, scoped) = management_key(&gateway, Some(json!(["kustomer.app.shop.*"]))).await;
    let (revoked_id, revoked) = management_key(&gateway, None).await;
    let revoke = gateway.http.delete(gateway.url(&format!("/api/keys/{revoked_id}"))).bearer_auth(ADMIN_TOKEN);
    assert_eq!(revoke.send().await.unwrap().status(), 204);
    let ingest = gateway.issue_key(json!({"name": "erp"})).await["key"].as_str().unwrap().to_owned();
    let before = admin_view(&gateway, &targets).await;
    assert_eq!(before["event"]["note"], HIDDEN_DATA);
    Setup { gateway, document, targets, scoped, revoked, ingest, before }
}

#[tokio::test]
async fn every_documented_operation_refuses_a_missing_wrong_revoked_or_ingest_credential() {
    let Setup { gateway, document, targets, revoked, ingest, before, .. } = setup().await;
    let operations = operations(&document);
    assert!(operations.len() >= 30, "the document lists the API: {operations:?}");
    let refusals: [(&str, Option<&str>, u16, &str); 5] = [
        ("no credential", None, 401, "unauthorized"),
        ("a wrong key", Some("hgm_0000000000000000000000000000000000000000"), 401, "invalid_credentials"),
        ("a wrong admin token", Some("test-admin-token-0123456780"), 401, "invalid_credentials"),
        ("a revoked management key", Some(revoked.as_str()), 401, "invalid_credentials"),
        ("an ingest key", Some(ingest.as_str()), 403, "forbidden"),
    ];
    for (what, credential, status, code) in refusals {
        for (method, path) in &operations {
            let (answered, body) = send(&gateway, method, path, &targets, credential).await;
            let reply: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            assert_eq!((answered, error_code(&reply)), (status, Some(code)), "{method} {path} with {what}: {body}");
            assert!(!body.contains(HIDDEN_DATA) && !body.contains(HIDDEN_TARGET), "{method} {path}: {body}");
        }
        assert_eq!(admin_view(&gateway, &targets).await, before, "{what} changed nothing");
    }
}

#[tokio::test]
async fn a_management_key_is_refused_the_admins_operations_and_sees_nothing_beyond_its_scopes() {
    let Setup { gateway, document, targets, scoped, before, .. } = setup().await;
    let operations = operations(&document);
    let admin_operations: Vec<_> = operations.iter().filter(|(m, p)| admin_only(&document, m, p)).collect();
    assert!(admin_operations.len() >= 9, "the document marks the admin's operations: {admin_operations:?}");
    for (method, path) in &operations {
        let (status, body) = send(&gateway, method, path, &targets, Some(&scoped)).await;
        let reply: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let seen = format!("{method} {path} with a key scoped to kustomer.app.shop.*: {status} {body}");
        assert!(!body.contains(HIDDEN_DATA) && !body.contains(HIDDEN_TARGET), "{seen}");
        if admin_only(&document, method, path) {
            assert_eq!((status, error_code(&reply)), (403, Some("forbidden")), "{seen}");
        } else if status < 300 && (method.as_str(), path.as_str()) == ("post", "/api/deliveries/retry") {
            // A bulk retry across subscriptions takes only what the key reaches: here, nothing.
            let job = gateway.admin_json(&format!("/api/jobs/{}", reply["id"].as_str().unwrap())).await;
            assert_eq!(job["total"], 0, "the hidden dead letter is out of the job's reach: {seen} {job}");
        } else if status < 300 {
            // Only listings (and the document) answer, and only with what is within reach.
            assert!(method == "get" && !path.contains('{'), "only a listing may succeed: {seen}");
            assert!(!body.contains(&targets.subscription) && !body.contains(&targets.event), "{seen}");
        } else {
            assert!([403, 404].contains(&status), "{seen}");
            assert!(!body.contains("takes the admin token"), "mark it x-hookgate-admin-only in the document: {seen}");
        }
    }
    assert_eq!(admin_view(&gateway, &targets).await, before, "the scoped key changed nothing");
}
