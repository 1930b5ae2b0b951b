//! Reload without a restart: a change in the definitions folder or SIGHUP puts a new valid set
//! in service atomically; an invalid set is refused and the old one keeps serving. Hook URLs
//! never change for an event name.

use serde_json::{Value, json};
use std::time::Duration;

use crate::support::*;

const NEW_HOOK: &str = "kustomer.app.billing.invoice.paid";

fn billing_definition(hook_type: &str) -> Value {
    json!({"app": "billing", "version": "1", "hooks": [{"eventName": NEW_HOOK, "type": hook_type}]})
}

async fn hook_names(gateway: &Gateway) -> Vec<String> {
    let hooks = gateway.admin_json("/api/hooks").await;
    hooks["data"].as_array().unwrap().iter().map(|h| h["eventName"].as_str().unwrap().to_owned()).collect()
}

async fn wait_for_hook(gateway: &Gateway, name: &str, present: bool) {
    eventually(Duration::from_secs(10), &format!("hook {name} present={present}"), || async {
        hook_names(gateway).await.iter().any(|n| n == name) == present
    })
    .await;
}

#[tokio::test]
async fn a_new_definition_file_is_served_without_a_restart() {
    let gateway = Gateway::start().await;
    std::fs::write(gateway.definitions_dir().join("billing.json"), billing_definition("form").to_string()).unwrap();
    wait_for_hook(&gateway, NEW_HOOK, true).await;
    let url = gateway.hook_url(NEW_HOOK).await;
    let response = gateway.http.post(url).json(&json!({"invoice": 7})).send().await.unwrap();
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn an_invalid_change_is_refused_and_the_old_set_keeps_serving() {
    let gateway = Gateway::start().await;
    let before = gateway.hook_url(ORDER_UPDATE).await;
    let mut broken = billing_definition("sms");
    broken["hooks"][0]["colour"] = json!("red");
    std::fs::write(gateway.definitions_dir().join("billing.json"), broken.to_string()).unwrap();
    // The watcher has seen the change once the explicit reload reports the same refusal.
    let response =
        gateway.http.post(gateway.url("/api/definitions/reload")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let messages: Vec<String> = body["error"]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}: {}", d["pointer"].as_str().unwrap(), d["message"].as_str().unwrap()))
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("/hooks/0/type") && m.contains("unknown hook type \"sms\"")),
        "{messages:?}"
    );
    assert!(messages.iter().any(|m| m.contains("/hooks/0/colour")), "every error is reported: {messages:?}");

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!hook_names(&gateway).await.contains(&NEW_HOOK.to_owned()));
    let response = gateway.http.post(&before).json(&json!({"still": "served"})).send().await.unwrap();
    assert_eq!(response.status(), 202, "the previous set keeps serving");

    std::fs::write(gateway.definitions_dir().join("billing.json"), billing_definition("form").to_string()).unwrap();
    wait_for_hook(&gateway, NEW_HOOK, true).await;
    assert_eq!(gateway.hook_url(ORDER_UPDATE).await, before, "a reload keeps existing URLs");
}

#[tokio::test]
async fn a_malformed_file_is_refused_too() {
    let gateway = Gateway::start().await;
    std::fs::write(gateway.definitions_dir().join("billing.json"), "{\"app\": \"billing\",").unwrap();
    let response =
        gateway.http.post(gateway.url("/api/definitions/reload")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("billing.json: malformed JSON at line 1"), "{body}");
    assert!(hook_names(&gateway).await.contains(&ORDER_UPDATE.to_owned()));
}

#[tokio::test]
async fn sighup_reloads_when_watching_is_off() {
    let gateway = Gateway::start_with(Options::default().env("HOOKGATE_WATCH_DEFINITIONS", "false")).await;
    std::fs::write(gateway.definitions_dir().join("billing.json"), billing_definition("web").to_string()).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!hook_names(&gateway).await.contains(&NEW_HOOK.to_owned()), "nothing reloads without a trigger");
    let status = std::process::Command::new("kill").args(["-HUP", &gateway.pid().to_string()]).status().unwrap();
    assert!(status.success());
    wait_for_hook(&gateway, NEW_HOOK, true).await;
}

#[tokio::test]
async fn a_removed_hook_stops_answering() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(LEAD_CREATED).await;
    std::fs::remove_file(gateway.definitions_dir().join("crm.json")).unwrap();
    wait_for_hook(&gateway, LEAD_CREATED, false).await;
    let response = gateway.http.post(url).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn hook_urls_survive_a_restart() {
    let mut gateway = Gateway::start().await;
    let before = gateway.hook_url(ORDER_UPDATE).await;
    let before_path = before.trim_start_matches(&gateway.base).to_owned();
    gateway.restart().await;
    let after = gateway.hook_url(ORDER_UPDATE).await;
    assert_eq!(after.trim_start_matches(&gateway.base), before_path);
    assert_eq!(before_path.len(), "/h/".len() + 43);
}
