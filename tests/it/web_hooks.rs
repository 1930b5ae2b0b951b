//! Web hooks: an API key is required, as `Authorization: Bearer` or `X-API-Key`. Keys are
//! issued by hookgate, scoped to apps, revocable, several valid at once; static keys come from
//! secret references in the definition.

use serde_json::{Value, json};

use crate::support::*;

fn payload() -> Value {
    json!({"sku": "A-1", "stock": 3})
}

async fn post_with(gateway: &Gateway, hook: &str, header: (&str, String)) -> reqwest::Response {
    let url = gateway.hook_url(hook).await;
    gateway.http.post(url).header(header.0, header.1).json(&payload()).send().await.unwrap()
}

/// Checks that `response` is the 202 of a stored event of `hook` carrying the payload, and
/// returns the stored event.
async fn assert_stored(gateway: &Gateway, response: reqwest::Response, hook: &str) -> Value {
    assert_eq!(response.status(), 202);
    let reply: Value = response.json().await.unwrap();
    let id = reply["id"].as_str().unwrap_or_else(|| panic!("no event id in {reply}"));
    let event = gateway.event(id).await;
    assert_eq!(reply, json!({"id": id, "name": hook, "receivedAt": event["receivedAt"]}));
    assert_eq!((&event["name"], &event["hookType"], &event["data"]), (&json!(hook), &json!("web"), &payload()));
    event
}

async fn stored_count(gateway: &Gateway) -> usize {
    gateway.admin_json("/api/events").await["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn an_issued_key_is_accepted_as_bearer_and_as_x_api_key() {
    let gateway = Gateway::start().await;
    let key = gateway.issue_key(json!({"name": "erp"})).await["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("hgk_"));
    for header in [("authorization", format!("Bearer {key}")), ("x-api-key", key.clone())] {
        let event = assert_stored(&gateway, post_with(&gateway, ORDER_SYNC, header).await, ORDER_SYNC).await;
        assert!(!event.to_string().contains(&key), "the key is never stored with the event: {event}");
    }
    assert_eq!(stored_count(&gateway).await, 2);
}

#[tokio::test]
async fn a_missing_key_is_refused_with_401_and_nothing_is_stored() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_SYNC).await;
    let response = gateway.http.post(url).json(&json!({"a": 1})).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"hookgate\"");
    let (code, message) = error_code(response, 401).await;
    assert_eq!(code, "missing_api_key");
    assert!(message.contains("X-API-Key"));
    let events = gateway.admin_json("/api/events").await;
    assert_eq!(events["data"], json!([]));
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_401() {
    let gateway = Gateway::start().await;
    let response = post_with(&gateway, ORDER_SYNC, ("x-api-key", "hgk_not-a-real-key".into())).await;
    let (code, _) = error_code(response, 401).await;
    assert_eq!(code, "invalid_api_key");
    let basic = post_with(&gateway, ORDER_SYNC, ("authorization", "Basic dXNlcjpwYXNz".into())).await;
    let (code, _) = error_code(basic, 401).await;
    assert_eq!(code, "missing_api_key");
    assert_eq!(stored_count(&gateway).await, 0);
}

#[tokio::test]
async fn a_proxys_basic_auth_does_not_hide_the_x_api_key() {
    let gateway = Gateway::start().await;
    let key = gateway.issue_key(json!({"name": "behind a proxy"})).await["key"].as_str().unwrap().to_owned();
    let url = gateway.hook_url(ORDER_SYNC).await;
    let response = gateway
        .http
        .post(url)
        .header("authorization", "Basic cHJveHk6cGFzcw==")
        .header("x-api-key", key)
        .json(&payload())
        .send()
        .await
        .unwrap();
    assert_stored(&gateway, response, ORDER_SYNC).await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let gateway = Gateway::start().await;
    let issued = gateway.issue_key(json!({"name": "old"})).await;
    let key = issued["key"].as_str().unwrap().to_owned();
    assert_stored(&gateway, post_with(&gateway, ORDER_SYNC, ("x-api-key", key.clone())).await, ORDER_SYNC).await;
    let revoke = gateway
        .http
        .delete(gateway.url(&format!("/api/keys/{}", issued["id"].as_str().unwrap())))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    let (code, _) = error_code(post_with(&gateway, ORDER_SYNC, ("x-api-key", key)).await, 401).await;
    assert_eq!(code, "invalid_api_key");
    assert_eq!(stored_count(&gateway).await, 1, "only the post before the revocation");
}

#[tokio::test]
async fn two_keys_are_valid_at_once_for_rotation() {
    let gateway = Gateway::start().await;
    let old = gateway.issue_key(json!({"name": "erp 2025"})).await["key"].as_str().unwrap().to_owned();
    let new = gateway.issue_key(json!({"name": "erp 2026"})).await["key"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    assert_stored(&gateway, post_with(&gateway, ORDER_SYNC, ("x-api-key", old)).await, ORDER_SYNC).await;
    assert_stored(&gateway, post_with(&gateway, ORDER_SYNC, ("x-api-key", new)).await, ORDER_SYNC).await;
}

#[tokio::test]
async fn a_key_scoped_to_an_app_cannot_send_to_another_app() {
    let gateway = Gateway::start().await;
    let key =
        gateway.issue_key(json!({"name": "shop only", "apps": ["shop"]})).await["key"].as_str().unwrap().to_owned();
    assert_stored(&gateway, post_with(&gateway, ORDER_SYNC, ("x-api-key", key.clone())).await, ORDER_SYNC).await;
    let (code, message) = error_code(post_with(&gateway, LEAD_CREATED, ("x-api-key", key)).await, 403).await;
    assert_eq!(code, "api_key_out_of_scope");
    assert!(message.contains("crm"), "{message}");
    assert_eq!(stored_count(&gateway).await, 1, "nothing was stored for the other app");
}

#[tokio::test]
async fn a_static_key_from_a_secret_reference_is_accepted_on_its_hook_only() {
    let gateway = Gateway::start().await;
    let accepted = post_with(&gateway, PARTNER_FEED, ("authorization", format!("Bearer {PARTNER_KEY}"))).await;
    assert_stored(&gateway, accepted, PARTNER_FEED).await;
    let elsewhere = post_with(&gateway, ORDER_SYNC, ("authorization", format!("Bearer {PARTNER_KEY}"))).await;
    let (code, _) = error_code(elsewhere, 401).await;
    assert_eq!(code, "invalid_api_key");
    assert_eq!(stored_count(&gateway).await, 1);
}

#[tokio::test]
async fn a_static_key_can_come_from_the_secrets_file() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, "SHOP_PARTNER_KEY = \"from-the-secrets-file\"\n").unwrap();
    let options = Options { env: vec![], ..Options::default() }.env("HOOKGATE_SECRETS_FILE", secrets.to_str().unwrap());
    let gateway = Gateway::start_with(options).await;
    let response = post_with(&gateway, PARTNER_FEED, ("x-api-key", "from-the-secrets-file".into())).await;
    assert_stored(&gateway, response, PARTNER_FEED).await;
}

#[tokio::test]
async fn a_web_hook_does_not_answer_preflight() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_SYNC).await;
    let response =
        gateway.http.request(reqwest::Method::OPTIONS, url).header("origin", "https://x.example").send().await.unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    let (code, _) = error_code(response, 405).await;
    assert_eq!(code, "method_not_allowed");
}
