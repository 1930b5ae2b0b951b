//! Form hooks: public URLs that take JSON, urlencoded forms, multipart uploads and XML, and
//! work for HTML forms in browsers (CORS, redirect after post).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/fixtures/http/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Checks that `response` is the 202 reply for a new event of `hook` (its id, name and receive
/// time, nothing else) and returns the stored event.
async fn stored_from_reply(gateway: &Gateway, response: reqwest::Response, hook: &str) -> Value {
    assert_eq!(response.status(), 202);
    let reply: Value = response.json().await.unwrap();
    let id = reply["id"].as_str().unwrap_or_else(|| panic!("no event id in {reply}"));
    let event = gateway.event(id).await;
    assert_eq!(reply, json!({"id": id, "name": hook, "receivedAt": event["receivedAt"]}));
    assert_eq!(event["name"], hook);
    event
}

/// Posts `body` with `content_type` and returns the stored event.
async fn post_and_read_back(gateway: &Gateway, hook: &str, content_type: &str, body: Vec<u8>) -> Value {
    let url = gateway.hook_url(hook).await;
    let response = gateway.http.post(url).header("content-type", content_type).body(body).send().await.unwrap();
    stored_from_reply(gateway, response, hook).await
}

async fn events_of(gateway: &Gateway, hook: &str) -> Vec<Value> {
    gateway.admin_json(&format!("/api/events?name={hook}")).await["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn json_post_becomes_an_event_with_the_payload_as_data() {
    let gateway = Gateway::start().await;
    let event = post_and_read_back(&gateway, ORDER_UPDATE, "application/json", fixture("order-update.json")).await;
    let expected: Value = serde_json::from_slice(&fixture("order-update.json")).unwrap();
    assert_eq!(event["data"], expected);
    assert_eq!(event["name"], ORDER_UPDATE);
    assert_eq!(event["app"], "shop");
    assert_eq!(event["hookType"], "form");
    assert_eq!(event["receiveCount"], 1);
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert!(event["receivedAt"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok());
    assert_eq!(event["source"]["contentType"], "application/json");
    assert!(event["source"]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn json_field_order_is_kept() {
    let gateway = Gateway::start().await;
    let event =
        post_and_read_back(&gateway, ORDER_UPDATE, "application/json", br#"{"z": 1, "a": 2, "m": 3}"#.to_vec()).await;
    let keys: Vec<&String> = event["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["z", "a", "m"]);
}

#[tokio::test]
async fn urlencoded_form_becomes_an_object_with_repeated_keys_as_arrays() {
    let gateway = Gateway::start().await;
    let event =
        post_and_read_back(&gateway, ORDER_UPDATE, "application/x-www-form-urlencoded", fixture("contact-form.txt"))
            .await;
    assert_eq!(
        event["data"],
        json!({"name": "Ana Pérez", "email": "ana@example.com", "topics": ["billing", "shipping"], "message": "Where is my order?"})
    );
}

#[tokio::test]
async fn multipart_upload_records_fields_and_files_with_digest() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let invoice = b"%PDF-1.7 invoice bytes".to_vec();
    let form = reqwest::multipart::Form::new().text("orderId", "ORD-1042").part(
        "invoice",
        reqwest::multipart::Part::bytes(invoice.clone()).file_name("invoice.pdf").mime_str("application/pdf").unwrap(),
    );
    let response = gateway.http.post(url).multipart(form).send().await.unwrap();
    let data = stored_from_reply(&gateway, response, ORDER_UPDATE).await["data"].clone();
    assert_eq!(data["orderId"], "ORD-1042");
    let file = &data["invoice"];
    assert_eq!(file["filename"], "invoice.pdf");
    assert_eq!(file["contentType"], "application/pdf");
    assert_eq!(file["size"], invoice.len());
    assert_eq!(file["sha256"], hex::encode(Sha256::digest(&invoice)));
    assert_eq!(file["contentKept"], true);
    use base64::Engine;
    assert_eq!(file["content"], base64::engine::general_purpose::STANDARD.encode(&invoice));
}

#[tokio::test]
async fn multipart_file_over_the_hooks_file_limit_keeps_only_its_digest() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(PHOTO_FORM).await;
    let form = reqwest::multipart::Form::new()
        .part("photo", reqwest::multipart::Part::bytes(b"0123456789".to_vec()).file_name("p.bin"));
    let response = gateway.http.post(url).multipart(form).send().await.unwrap();
    let file = stored_from_reply(&gateway, response, PHOTO_FORM).await["data"]["photo"].clone();
    assert_eq!(file["filename"], "p.bin");
    assert_eq!(file["sha256"], hex::encode(Sha256::digest(b"0123456789")));
    assert_eq!(file["size"], 10);
    assert_eq!(file["contentKept"], false);
    assert_eq!(file["content"], Value::Null);
}

#[tokio::test]
async fn xml_is_converted_to_json() {
    let gateway = Gateway::start().await;
    let event = post_and_read_back(&gateway, ORDER_UPDATE, "application/xml", fixture("order-update.xml")).await;
    assert_eq!(
        event["data"],
        json!({"order": {
            "@id": "ORD-1042",
            "@currency": "EUR",
            "status": "shipped",
            "customer": {"email": "ana@example.com", "name": "Ana Pérez"},
            "item": [{"@sku": "TSHIRT-M", "#text": "2"}, {"@sku": "CAP", "#text": "1"}],
            "note": "Leave at the <front> door"
        }})
    );
}

#[tokio::test]
async fn the_raw_body_is_kept_byte_for_byte() {
    let gateway = Gateway::start().await;
    let body = b"{ \"spacing\" :  \"kept\" ,\n\"n\": 1.50 }".to_vec();
    let event = post_and_read_back(&gateway, ORDER_UPDATE, "application/json; charset=utf-8", body.clone()).await;
    let raw = gateway.admin_get(&format!("/api/events/{}/raw", event["id"].as_str().unwrap())).await;
    assert_eq!(raw.headers()["content-type"], "application/json; charset=utf-8");
    assert_eq!(raw.bytes().await.unwrap().to_vec(), body);
}

#[tokio::test]
async fn browser_preflight_is_answered_for_an_allowed_origin() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(CONTACT_FORM).await;
    let response = gateway
        .http
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://shop.example");
    assert!(response.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert_eq!(response.headers()["access-control-allow-headers"], "content-type");
}

#[tokio::test]
async fn hooks_without_allowed_origins_accept_any_origin() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let response = gateway
        .http
        .post(url)
        .header("origin", "https://anywhere.example")
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let event = stored_from_reply(&gateway, response, ORDER_UPDATE).await;
    assert_eq!(event["data"], json!({"a": 1}));
}

#[tokio::test]
async fn a_post_from_an_origin_not_allowed_is_refused_and_not_stored() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(CONTACT_FORM).await;
    let response = gateway
        .http
        .post(url)
        .header("origin", "https://evil.example")
        .form(&[("email", "x@example.com")])
        .send()
        .await
        .unwrap();
    let (code, message) = error_code(response, 403).await;
    assert_eq!(code, "origin_not_allowed");
    assert!(message.contains("https://evil.example"));
    assert_eq!(events_of(&gateway, CONTACT_FORM).await, Vec::<Value>::new());
}

#[tokio::test]
async fn an_html_form_post_is_redirected_after_it_is_stored() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(CONTACT_FORM).await;
    let response = gateway
        .http
        .post(url)
        .header("origin", "https://shop.example")
        .form(&[("email", "ana@example.com"), ("message", "hello")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "https://shop.example/thanks");
    let stored: Vec<Value> =
        events_of(&gateway, CONTACT_FORM).await.iter().map(|event| event["data"].clone()).collect();
    assert_eq!(stored, [json!({"email": "ana@example.com", "message": "hello"})]);
}

#[tokio::test]
async fn a_json_post_to_a_redirecting_hook_gets_json_not_a_redirect() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(CONTACT_FORM).await;
    let response = gateway.http.post(url).json(&json!({"email": "ana@example.com"})).send().await.unwrap();
    assert!(response.headers().get("location").is_none(), "{:?}", response.headers());
    let event = stored_from_reply(&gateway, response, CONTACT_FORM).await;
    assert_eq!(event["data"], json!({"email": "ana@example.com"}));
}

#[tokio::test]
async fn form_hooks_need_no_credentials_and_never_store_them() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let response = gateway
        .http
        .post(url)
        .header("authorization", "Bearer sender-secret-token")
        .header("cookie", "session=sender-secret-cookie")
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    let event = stored_from_reply(&gateway, response, ORDER_UPDATE).await;
    assert_eq!(event["data"], json!({"a": 1}));
    let headers = event["source"]["headers"].as_object().unwrap();
    assert_eq!(headers["content-type"], "application/json", "the other headers are kept");
    assert!(!headers.contains_key("authorization") && !headers.contains_key("cookie"), "{headers:?}");
    assert!(!event.to_string().contains("sender-secret"), "{event}");
}
