//! Shapes: a hook projects its payload into fixed fields and validates them against a JSON
//! Schema; a misfit is refused with 422 and every reason, or stored in quarantine (visible, flagged).

use serde_json::{Value, json};

use crate::support::*;

const STRICT: &str = "kustomer.app.shaped.order.strict";
const LENIENT: &str = "kustomer.app.shaped.order.lenient";

fn schema() -> Value {
    json!({"type": "object", "required": ["orderId", "total"], "properties": {"total": {"type": "number", "minimum": 0}}})
}

async fn gateway() -> Gateway {
    let shaped = json!({"app": "shaped", "version": "1", "hooks": [
        {"eventName": STRICT, "type": "form", "shape": {
            "fields": {"orderId": "$.order.id", "total": "$.order.total"}, "schema": schema()}},
        {"eventName": LENIENT, "type": "form", "shape": {"schema": schema(), "onInvalid": "quarantine"}}
    ]});
    Gateway::start_with(Options { definitions: vec![("shaped.json".into(), shaped)], env: vec![] }).await
}

#[tokio::test]
async fn a_fitting_payload_is_stored_as_its_projection() {
    let gateway = gateway().await;
    let url = gateway.hook_url(STRICT).await;
    let response = gateway
        .http
        .post(url)
        .json(&json!({"order": {"id": "o-1", "total": 42.5, "noise": [1, 2]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let event = gateway.event(&id).await;
    assert_eq!(event["data"], json!({"orderId": "o-1", "total": 42.5}));
    assert!(event.get("quarantined").is_none());
}

#[tokio::test]
async fn a_misfit_is_refused_with_422_and_every_reason() {
    let gateway = gateway().await;
    let url = gateway.hook_url(STRICT).await;
    let response = gateway.http.post(url).json(&json!({"order": {"total": -1}})).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "shape_mismatch");
    let reasons: Vec<&str> = body["error"]["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("orderId")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.starts_with("/total")), "{reasons:?}");
    assert_eq!(gateway.admin_json("/api/events").await["data"], json!([]));
}

#[tokio::test]
async fn a_misfit_can_be_kept_in_quarantine_and_listed_apart() {
    let gateway = gateway().await;
    let url = gateway.hook_url(LENIENT).await;
    let misfit = gateway.http.post(&url).json(&json!({"orderId": "o-2"})).send().await.unwrap();
    assert_eq!(misfit.status(), 202, "the sender is not asked to retry");
    assert_eq!(misfit.json::<Value>().await.unwrap()["quarantined"], true);
    let fits = gateway.http.post(&url).json(&json!({"orderId": "o-3", "total": 1})).send().await.unwrap();
    assert_eq!(fits.status(), 202);

    let held = gateway.admin_json("/api/events?quarantined=true").await;
    assert_eq!(held["data"].as_array().unwrap().len(), 1);
    assert_eq!(held["data"][0]["data"], json!({"orderId": "o-2"}));
    assert_eq!(held["data"][0]["quarantined"], true);
    // Named, since the gateway's own hookgate.quarantine.received notice is not quarantined either.
    let clear = gateway.admin_json(&format!("/api/events?quarantined=false&name={LENIENT}")).await;
    assert_eq!(clear["data"].as_array().unwrap().len(), 1);
    assert_eq!(clear["data"][0]["data"]["orderId"], "o-3");
}

#[tokio::test]
async fn a_misfit_in_a_batch_names_the_element_and_creates_nothing() {
    let batched = json!({"app": "batched", "version": "1", "hooks": [
        {"eventName": "batched.item", "type": "web",
         "source": {"path": "batched", "scheme": "url-token", "secrets": ["${BATCH_TOKEN}"], "splitArrays": true},
         "shape": {"schema": {"type": "object", "required": ["id"]}}}
    ]});
    let gateway = Gateway::start_with(Options {
        definitions: vec![("batched.json".into(), batched)],
        env: vec![("BATCH_TOKEN".into(), "batch-url-token".into())],
    })
    .await;
    let url = gateway.url("/api/webhooks/batched?token=batch-url-token");
    let response =
        gateway.http.post(&url).json(&json!([{"id": 1}, {"id": 2}, {"name": "no id"}])).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let reasons: Vec<&str> = body["error"]["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with("/2"), "the reason points at the third element: {reasons:?}");
    assert_eq!(gateway.admin_json("/api/events").await["data"], json!([]), "one misfit refuses the whole batch");

    let fits = gateway.http.post(&url).json(&json!([{"id": 1}, {"id": 2}])).send().await.unwrap();
    assert_eq!(fits.status(), 200);
    assert_eq!(fits.json::<Value>().await.unwrap()["events"].as_array().unwrap().len(), 2);
}
