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

/// How many reloads started by the folder watch or SIGHUP ended with `outcome` (`applied`,
/// `refused`, `failed`), from `/metrics`. Reloads through the API are not counted there.
async fn watched_reloads(gateway: &Gateway, outcome: &str) -> u64 {
    let metrics = gateway.http.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("hookgate_definition_reloads_total{{outcome=\"{outcome}\"}} ");
    metrics.lines().find_map(|line| line.strip_prefix(&prefix)).map_or(0, |count| count.parse().unwrap())
}

/// Waits until the folder watch has refused a reload: after that, what it refused is known
/// not to have been put in service.
async fn wait_for_a_refused_reload(gateway: &Gateway) {
    eventually(Duration::from_secs(10), "the watch to refuse the change", || async {
        watched_reloads(gateway, "refused").await >= 1
    })
    .await;
}

/// Posts JSON to a form hook and checks the 202 reply, returning the stored event.
async fn post_form(gateway: &Gateway, url: &str, event_name: &str, body: Value) -> Value {
    let response = gateway.http.post(url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 202, "POST to {event_name}");
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["name"], event_name, "{reply}");
    let event = gateway.event(reply["id"].as_str().expect("the reply carries the event id")).await;
    assert_eq!(event["data"], body);
    event
}

#[tokio::test]
async fn a_new_definition_file_is_served_without_a_restart() {
    let gateway = Gateway::start().await;
    std::fs::write(gateway.definitions_dir().join("billing.json"), billing_definition("form").to_string()).unwrap();
    wait_for_hook(&gateway, NEW_HOOK, true).await;
    let url = gateway.hook_url(NEW_HOOK).await;
    let event = post_form(&gateway, &url, NEW_HOOK, json!({"invoice": 7})).await;
    assert_eq!((&event["app"], &event["hookType"]), (&json!("billing"), &json!("form")));
    assert!(watched_reloads(&gateway, "applied").await >= 1);
}

#[tokio::test]
async fn an_invalid_change_is_refused_and_the_old_set_keeps_serving() {
    let gateway = Gateway::start().await;
    let before = gateway.hook_url(ORDER_UPDATE).await;
    let mut broken = billing_definition("sms");
    broken["hooks"][0]["colour"] = json!("red");
    std::fs::write(gateway.definitions_dir().join("billing.json"), broken.to_string()).unwrap();
    let response =
        gateway.http.post(gateway.url("/api/definitions/reload")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_definition", "{body}");
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

    wait_for_a_refused_reload(&gateway).await;
    assert_eq!(watched_reloads(&gateway, "applied").await, 0, "nothing of the broken folder was applied");
    assert!(!hook_names(&gateway).await.contains(&NEW_HOOK.to_owned()));
    post_form(&gateway, &before, ORDER_UPDATE, json!({"still": "served"})).await;

    std::fs::write(gateway.definitions_dir().join("billing.json"), billing_definition("form").to_string()).unwrap();
    wait_for_hook(&gateway, NEW_HOOK, true).await;
    assert_eq!(gateway.hook_url(ORDER_UPDATE).await, before, "a reload keeps existing URLs");
}

#[tokio::test]
async fn a_malformed_file_is_refused_too() {
    let gateway = Gateway::start().await;
    let before = gateway.hook_url(ORDER_UPDATE).await;
    std::fs::write(gateway.definitions_dir().join("billing.json"), "{\"app\": \"billing\",").unwrap();
    let response =
        gateway.http.post(gateway.url("/api/definitions/reload")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_definition", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("billing.json: malformed JSON at line 1"), "{body}");
    wait_for_a_refused_reload(&gateway).await;
    assert!(hook_names(&gateway).await.contains(&ORDER_UPDATE.to_owned()));
    post_form(&gateway, &before, ORDER_UPDATE, json!({"still": "served"})).await;
}

#[tokio::test]
async fn sighup_reloads_when_watching_is_off() {
    let gateway = Gateway::start_with(Options::default().env("HOOKGATE_WATCH_DEFINITIONS", "false")).await;
    // A gateway that watches its folder, changed after this one's: once it has reloaded, a
    // watch would have reloaded the first too.
    let watching = Gateway::start().await;
    std::fs::write(gateway.definitions_dir().join("billing.json"), billing_definition("web").to_string()).unwrap();
    std::fs::write(watching.definitions_dir().join("billing.json"), billing_definition("web").to_string()).unwrap();
    wait_for_hook(&watching, NEW_HOOK, true).await;
    assert!(!hook_names(&gateway).await.contains(&NEW_HOOK.to_owned()), "nothing reloads without a trigger");
    assert_eq!(watched_reloads(&gateway, "applied").await, 0);

    let status = std::process::Command::new("kill").args(["-HUP", &gateway.pid().to_string()]).status().unwrap();
    assert!(status.success());
    wait_for_hook(&gateway, NEW_HOOK, true).await;
    assert_eq!(watched_reloads(&gateway, "applied").await, 1, "one signal, one reload");
}

#[tokio::test]
async fn a_removed_hook_stops_answering() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(LEAD_CREATED).await;
    std::fs::remove_file(gateway.definitions_dir().join("crm.json")).unwrap();
    wait_for_hook(&gateway, LEAD_CREATED, false).await;
    let response = gateway.http.post(url).json(&json!({})).send().await.unwrap();
    let (code, _) = error_code(response, 404).await;
    assert_eq!(code, "hook_not_found");
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
