//! Web hooks: an API key is required, as `Authorization: Bearer` or `X-API-Key`. Keys are
//! issued by hookgate, scoped to apps, revocable, several valid at once; static keys come from
//! secret references in the definition.

use serde_json::{Value, json};

use crate::support::*;

async fn post_with(gateway: &Gateway, hook: &str, header: (&str, String)) -> reqwest::Response {
    let url = gateway.hook_url(hook).await;
    gateway.http.post(url).header(header.0, header.1).json(&json!({"sku": "A-1", "stock": 3})).send().await.unwrap()
}

#[tokio::test]
async fn an_issued_key_is_accepted_as_bearer_and_as_x_api_key() {
    let gateway = Gateway::start().await;
    let key = gateway.issue_key(json!({"name": "erp"})).await["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("hgk_"));
    let bearer = post_with(&gateway, ORDER_SYNC, ("authorization", format!("Bearer {key}"))).await;
    assert_eq!(bearer.status(), 202);
    let header = post_with(&gateway, ORDER_SYNC, ("x-api-key", key.clone())).await;
    assert_eq!(header.status(), 202);
    let id = header.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let event = gateway.event(&id).await;
    assert_eq!(event["hookType"], "web");
    assert_eq!(event["data"], json!({"sku": "A-1", "stock": 3}));
    assert!(!event.to_string().contains(&key), "the key is never stored with the event");
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
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let gateway = Gateway::start().await;
    let issued = gateway.issue_key(json!({"name": "old"})).await;
    let key = issued["key"].as_str().unwrap().to_owned();
    assert_eq!(post_with(&gateway, ORDER_SYNC, ("x-api-key", key.clone())).await.status(), 202);
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
}

#[tokio::test]
async fn two_keys_are_valid_at_once_for_rotation() {
    let gateway = Gateway::start().await;
    let old = gateway.issue_key(json!({"name": "erp 2025"})).await["key"].as_str().unwrap().to_owned();
    let new = gateway.issue_key(json!({"name": "erp 2026"})).await["key"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    assert_eq!(post_with(&gateway, ORDER_SYNC, ("x-api-key", old)).await.status(), 202);
    assert_eq!(post_with(&gateway, ORDER_SYNC, ("x-api-key", new)).await.status(), 202);
}

#[tokio::test]
async fn a_key_scoped_to_an_app_cannot_send_to_another_app() {
    let gateway = Gateway::start().await;
    let key =
        gateway.issue_key(json!({"name": "shop only", "apps": ["shop"]})).await["key"].as_str().unwrap().to_owned();
    assert_eq!(post_with(&gateway, ORDER_SYNC, ("x-api-key", key.clone())).await.status(), 202);
    let (code, message) = error_code(post_with(&gateway, LEAD_CREATED, ("x-api-key", key)).await, 403).await;
    assert_eq!(code, "api_key_out_of_scope");
    assert!(message.contains("crm"));
}

#[tokio::test]
async fn a_static_key_from_a_secret_reference_is_accepted_on_its_hook_only() {
    let gateway = Gateway::start().await;
    let accepted = post_with(&gateway, PARTNER_FEED, ("authorization", format!("Bearer {PARTNER_KEY}"))).await;
    assert_eq!(accepted.status(), 202);
    let elsewhere = post_with(&gateway, ORDER_SYNC, ("authorization", format!("Bearer {PARTNER_KEY}"))).await;
    assert_eq!(elsewhere.status(), 401);
}

#[tokio::test]
async fn a_static_key_can_come_from_the_secrets_file() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, "SHOP_PARTNER_KEY = \"from-the-secrets-file\"\n").unwrap();
    let options = Options { env: vec![], ..Options::default() }.env("HOOKGATE_SECRETS_FILE", secrets.to_str().unwrap());
    let gateway = Gateway::start_with(options).await;
    let response = post_with(&gateway, PARTNER_FEED, ("x-api-key", "from-the-secrets-file".into())).await;
    assert_eq!(response.status(), 202);
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
