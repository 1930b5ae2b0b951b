//! Source-specific endpoints, `POST /api/webhooks/{source}`: only requests signed by the
//! platform become events; names come from the platform's own type; a repeated delivery is
//! not a second event; batches become one event per element.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::*;

const STRIPE_SECRET: &str = "whsec_test_stripe_current";
const STRIPE_PREVIOUS: &str = "whsec_test_stripe_previous";
const GITHUB_SECRET: &str = "github-webhook-secret";
const HUBSPOT_SECRET: &str = "hubspot-client-secret";
const SLACK_SECRET: &str = "slack-signing-secret";

fn platforms() -> Value {
    json!({"app": "platforms", "version": "1", "hooks": [
        {"eventName": "stripe.event", "type": "web", "source": {
            "path": "stripe", "scheme": "stripe",
            "secrets": ["${TEST_STRIPE_SECRET}", "${TEST_STRIPE_PREVIOUS}"],
            "eventName": "stripe.{$.type}", "deliveryId": "{$.id}"}},
        {"eventName": "github.event", "type": "web", "source": {
            "path": "github", "scheme": "github", "secrets": ["${TEST_GITHUB_SECRET}"],
            "eventName": "github.{header:X-GitHub-Event}.{$.action}", "deliveryId": "{header:X-GitHub-Delivery}"}},
        {"eventName": "hubspot.event", "type": "web", "source": {
            "path": "hubspot", "scheme": "hubspot", "secrets": ["${TEST_HUBSPOT_SECRET}"],
            "eventName": "hubspot.{$.subscriptionType}", "deliveryId": "{$.eventId}", "splitArrays": true}},
        {"eventName": "slack.event", "type": "web", "source": {
            "path": "slack", "scheme": "slack", "secrets": ["${TEST_SLACK_SECRET}"],
            "eventName": "slack.{$.event.type}", "deliveryId": "{$.event_id}"}},
        {"eventName": "shopify.event", "type": "web", "source": {
            "path": "shopify", "scheme": "shopify", "secrets": ["${TEST_SHOPIFY_SECRET_NOT_SET}"]}}
    ]})
}

async fn gateway() -> Gateway {
    Gateway::start_with(Options {
        definitions: vec![("platforms.json".into(), platforms())],
        env: vec![
            ("TEST_STRIPE_SECRET".into(), STRIPE_SECRET.into()),
            ("TEST_STRIPE_PREVIOUS".into(), STRIPE_PREVIOUS.into()),
            ("TEST_GITHUB_SECRET".into(), GITHUB_SECRET.into()),
            ("TEST_HUBSPOT_SECRET".into(), HUBSPOT_SECRET.into()),
            ("TEST_SLACK_SECRET".into(), SLACK_SECRET.into()),
        ],
    })
    .await
}

fn hmac_sha256(key: &str, message: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn stripe_event(id: &str) -> String {
    json!({"id": id, "object": "event", "type": "payment_intent.succeeded", "data": {"object": {"amount": 2000}}})
        .to_string()
}

/// Checks that `response` is the 200 reply for one new, stored event named `name` with `data`,
/// and returns its id.
async fn assert_stored(gateway: &Gateway, response: reqwest::Response, name: &str, data: &Value) -> String {
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    let id = reply["id"].as_str().unwrap_or_else(|| panic!("no event id in {reply}")).to_owned();
    assert_eq!(reply, json!({"id": id, "name": name, "duplicate": false}));
    let event = gateway.event(&id).await;
    assert_eq!((&event["name"], &event["data"]), (&json!(name), data));
    id
}

async fn stored_count(gateway: &Gateway) -> usize {
    gateway.admin_json("/api/events").await["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_signed_stripe_event_is_stored_under_its_type() {
    let gateway = gateway().await;
    let body = stripe_event("evt_1");
    let response = post_stripe(&gateway, &body, &stripe_signature_at(STRIPE_SECRET, now(), &body)).await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["name"], "stripe.payment_intent.succeeded");
    assert_eq!(reply["duplicate"], false);
    let event = gateway.event(reply["id"].as_str().unwrap()).await;
    assert_eq!(event["name"], "stripe.payment_intent.succeeded");
    assert_eq!(event["data"]["data"]["object"]["amount"], 2000);
    let raw = gateway.admin_get(&format!("/api/events/{}/raw", reply["id"].as_str().unwrap())).await;
    assert_eq!(raw.text().await.unwrap(), body, "the exact bytes are kept for re-verification");
}

#[tokio::test]
async fn a_repeated_stripe_delivery_is_not_a_second_event() {
    let gateway = gateway().await;
    let body = stripe_event("evt_repeat");
    let first: Value =
        post_stripe(&gateway, &body, &stripe_signature_at(STRIPE_SECRET, now(), &body)).await.json().await.unwrap();
    let again = post_stripe(&gateway, &body, &stripe_signature_at(STRIPE_SECRET, now(), &body)).await;
    assert_eq!(again.status(), 200, "a retry gets the same success reply");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);
    let events = gateway.admin_json("/api/events?name=stripe.payment_intent.succeeded").await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1);
    assert_eq!(events["data"][0]["receiveCount"], 2);
}

#[tokio::test]
async fn a_repeated_delivery_named_otherwise_is_answered_with_the_stored_events_name() {
    let gateway = gateway().await;
    let body = json!({"id": "evt_renamed", "type": "invoice.created", "data": {}}).to_string();
    let first: Value =
        post_stripe(&gateway, &body, &stripe_signature_at(STRIPE_SECRET, now(), &body)).await.json().await.unwrap();
    assert_eq!(first["name"], "stripe.invoice.created");
    // The same delivery id, with a type that names the event otherwise.
    let renamed = json!({"id": "evt_renamed", "type": "invoice.updated", "data": {}}).to_string();
    let again = post_stripe(&gateway, &renamed, &stripe_signature_at(STRIPE_SECRET, now(), &renamed)).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, json!({"id": first["id"], "name": "stripe.invoice.created", "duplicate": true}));
    assert_eq!(gateway.event(first["id"].as_str().unwrap()).await["name"], "stripe.invoice.created");
}

#[tokio::test]
async fn the_previous_stripe_secret_works_while_both_are_configured() {
    let gateway = gateway().await;
    let body = stripe_event("evt_rotated");
    let response = post_stripe(&gateway, &body, &stripe_signature_at(STRIPE_PREVIOUS, now(), &body)).await;
    let data: Value = serde_json::from_str(&body).unwrap();
    assert_stored(&gateway, response, "stripe.payment_intent.succeeded", &data).await;
}

/// Checks a 401 with its reason class, that nothing was stored, and that no signature leaked.
async fn assert_refused(gateway: &Gateway, response: reqwest::Response, reason: &str) {
    assert_eq!(response.status(), 401);
    let body = response.text().await.unwrap();
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["error"]["code"], reason, "{body}");
    assert!(!body.contains("v1="), "the reply never carries a signature: {body}");
    assert_eq!(gateway.admin_json("/api/events").await["data"], json!([]));
}

#[tokio::test]
async fn stripe_rejects_a_wrong_signature() {
    let gateway = gateway().await;
    let body = stripe_event("evt_forged");
    let response = post_stripe(&gateway, &body, &stripe_signature_at("whsec_wrong", now(), &body)).await;
    assert_refused(&gateway, response, "signature_mismatch").await;
    let metrics = gateway.http.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|line| line.starts_with("hookgate_source_rejections_total")
            && line.contains("source=\"stripe\"")
            && line.contains("reason=\"signature_mismatch\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn stripe_rejects_an_altered_body() {
    let gateway = gateway().await;
    let body = stripe_event("evt_altered");
    let signature = stripe_signature_at(STRIPE_SECRET, now(), &body);
    let response = post_stripe(&gateway, &body.replace("2000", "9000"), &signature).await;
    assert_refused(&gateway, response, "signature_mismatch").await;
}

#[tokio::test]
async fn stripe_rejects_signature_outside_tolerance() {
    let gateway = gateway().await;
    let body = stripe_event("evt_stale");
    let response = post_stripe(&gateway, &body, &stripe_signature_at(STRIPE_SECRET, now() - 600, &body)).await;
    assert_refused(&gateway, response, "timestamp_outside_tolerance").await;
}

#[tokio::test]
async fn a_missing_signature_header_is_refused() {
    let gateway = gateway().await;
    let response =
        gateway.http.post(gateway.url("/api/webhooks/stripe")).json(&json!({"id": "evt_x"})).send().await.unwrap();
    assert_refused(&gateway, response, "missing_header").await;
}

#[tokio::test]
async fn a_source_without_its_secret_refuses_everything() {
    let gateway = gateway().await;
    let response = gateway
        .http
        .post(gateway.url("/api/webhooks/shopify"))
        .header("x-shopify-hmac-sha256", "AAAA")
        .json(&json!({"id": 1}))
        .send()
        .await
        .unwrap();
    assert_refused(&gateway, response, "no_secret_configured").await;
}

#[tokio::test]
async fn an_unknown_source_is_404() {
    let gateway = gateway().await;
    let response = gateway.http.post(gateway.url("/api/webhooks/nope")).json(&json!({})).send().await.unwrap();
    let (code, _) = error_code(response, 404).await;
    assert_eq!(code, "source_not_found");
}

#[tokio::test]
async fn github_events_are_named_by_event_and_action_and_keyed_by_delivery() {
    let gateway = gateway().await;
    let body = json!({"action": "opened", "pull_request": {"number": 7}}).to_string();
    let signature = format!("sha256={}", hex::encode(hmac_sha256(GITHUB_SECRET, &body)));
    let send = || {
        gateway
            .http
            .post(gateway.url("/api/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", "pull_request")
            .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .header("x-hub-signature-256", signature.clone())
            .body(body.clone())
            .send()
    };
    let data: Value = serde_json::from_str(&body).unwrap();
    let first = assert_stored(&gateway, send().await.unwrap(), "github.pull_request.opened", &data).await;
    let again = send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"id": first, "name": "github.pull_request.opened", "duplicate": true})
    );
    assert_eq!(stored_count(&gateway).await, 1);
}

#[tokio::test]
async fn a_hubspot_batch_becomes_one_event_per_element_in_one_reply() {
    let gateway = gateway().await;
    let body = json!([
        {"eventId": 100, "subscriptionType": "contact.creation", "objectId": 1},
        {"eventId": 101, "subscriptionType": "contact.propertyChange", "objectId": 1, "propertyName": "email"}
    ])
    .to_string();
    let url = gateway.url("/api/webhooks/hubspot");
    let millis = jiff::Timestamp::now().as_millisecond().to_string();
    let signature = base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256(HUBSPOT_SECRET, &format!("POST{url}{body}{millis}")));
    let send = || {
        gateway
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-hubspot-signature-v3", signature.clone())
            .header("x-hubspot-request-timestamp", millis.clone())
            .body(body.clone())
            .send()
    };
    let response = send().await.unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    let ids: Vec<&str> = reply["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    let names = ["hubspot.contact.creation", "hubspot.contact.propertyChange"];
    let events = |duplicate: bool| -> Value {
        ids.iter().zip(names).map(|(id, name)| json!({"id": id, "name": name, "duplicate": duplicate})).collect()
    };
    assert_eq!(reply, json!({"events": events(false)}));
    let elements: Value = serde_json::from_str(&body).unwrap();
    for (index, id) in ids.iter().enumerate() {
        assert_eq!(gateway.event(id).await["data"], elements[index], "each event carries its own element");
    }

    let again = send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), json!({"events": events(true)}));
    assert_eq!(stored_count(&gateway).await, 2);
}

#[tokio::test]
async fn slack_url_verification_is_answered_after_the_signature_checks() {
    let gateway = gateway().await;
    let body = json!({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "token": "x"}).to_string();
    let timestamp = now().to_string();
    let signature = format!("v0={}", hex::encode(hmac_sha256(SLACK_SECRET, &format!("v0:{timestamp}:{body}"))));
    let response = gateway
        .http
        .post(gateway.url("/api/webhooks/slack"))
        .header("content-type", "application/json")
        .header("x-slack-signature", signature)
        .header("x-slack-request-timestamp", timestamp)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["challenge"], "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P");
    assert_eq!(gateway.admin_json("/api/events").await["data"], json!([]), "a handshake is not an event");
}

#[tokio::test]
async fn the_directory_shows_source_urls_and_get_is_not_allowed() {
    let gateway = gateway().await;
    assert_eq!(gateway.hook_url("stripe.event").await, gateway.url("/api/webhooks/stripe"));
    let response = gateway.http.get(gateway.url("/api/webhooks/stripe")).send().await.unwrap();
    let (code, message) = error_code(response, 405).await;
    assert_eq!(code, "method_not_allowed");
    assert!(message.contains("GET"), "{message}");
}

fn shipped(name: &str) -> (String, Value) {
    let path = format!("{}/hook-definitions/sources/{name}", env!("CARGO_MANIFEST_DIR"));
    (name.to_owned(), serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
}

#[tokio::test]
async fn the_shipped_commerce_and_enafeedback_definitions_work_as_documented() {
    let gateway = Gateway::start_with(Options {
        definitions: vec![shipped("commerce.json"), shipped("enafeedback.json")],
        env: vec![
            ("COMMERCE_WEBHOOK_TOKEN".into(), "commerce-url-token".into()),
            ("ENAFEEDBACK_WEBHOOK_SECRET".into(), "whs_enafeedback_secret".into()),
        ],
    })
    .await;
    let delivery = json!({"id": "hash_id", "event": "tag_added", "payload": [{"tag": "vip"}]});
    let with_token = gateway
        .http
        .post(gateway.url("/api/webhooks/commerce?token=commerce-url-token"))
        .json(&delivery)
        .send()
        .await
        .unwrap();
    assert_stored(&gateway, with_token, "commerce.tag_added", &delivery).await;
    let without =
        gateway.http.post(gateway.url("/api/webhooks/commerce?token=guess")).json(&delivery).send().await.unwrap();
    let (code, _) = error_code(without, 401).await;
    assert_eq!(code, "signature_mismatch");
    assert_eq!(stored_count(&gateway).await, 1);

    let delivery = json!({"id": "del_001", "event": "survey.response.created", "test": true});
    let body = delivery.to_string();
    let signature = format!("sha256={}", hex::encode(hmac_sha256("whs_enafeedback_secret", &body)));
    let response = gateway
        .http
        .post(gateway.url("/api/webhooks/enafeedback"))
        .header("content-type", "application/json")
        .header("x-webhook-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_stored(&gateway, response, "enafeedback.survey.response.created", &delivery).await;
}

#[tokio::test]
async fn refused_requests_are_kept_for_inspection_without_signatures() {
    let gateway = gateway().await;
    let body = stripe_event("evt_inspect");
    let forged = stripe_signature_at("whsec_wrong", now(), &body);
    assert_eq!(post_stripe(&gateway, &body, &forged).await.status(), 401);
    let log = gateway.admin_json("/api/sources/rejections?source=stripe").await;
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log}");
    let entry = &log["data"][0];
    assert_eq!(entry["source"], "stripe");
    assert_eq!(entry["reason"], "signature_mismatch");
    assert!(entry["headerNames"].as_array().unwrap().iter().any(|name| name == "stripe-signature"));
    assert!(entry["bodyExcerpt"].as_str().unwrap().contains("evt_inspect"));
    let rendered = log.to_string();
    assert!(!rendered.contains(forged.split("v1=").nth(1).unwrap()), "the signature is not kept");
    assert!(!rendered.contains(STRIPE_SECRET));
}

async fn handshake_gateway() -> (Gateway, ed25519_dalek::SigningKey) {
    let discord_key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let definitions = json!({"app": "handshakes", "version": "1", "hooks": [
        {"eventName": "meta.event", "type": "web", "source": {
            "path": "meta", "scheme": "meta", "secrets": ["${TEST_META_APP_SECRET}"],
            "verifyToken": "${TEST_META_VERIFY_TOKEN}", "eventName": "meta.{$.object}"}},
        {"eventName": "zoom.event", "type": "web", "source": {
            "path": "zoom", "scheme": "zoom", "secrets": ["${TEST_ZOOM_SECRET}"], "eventName": "zoom.{$.event}"}},
        {"eventName": "discord.event", "type": "web", "source": {
            "path": "discord", "scheme": "discord", "secrets": ["${TEST_DISCORD_PUBLIC_KEY}"]}}
    ]});
    let gateway = Gateway::start_with(Options {
        definitions: vec![("handshakes.json".into(), definitions)],
        env: vec![
            ("TEST_META_APP_SECRET".into(), "meta-app-secret".into()),
            ("TEST_META_VERIFY_TOKEN".into(), "meta-verify-token".into()),
            ("TEST_ZOOM_SECRET".into(), "zoom-secret-token".into()),
            ("TEST_DISCORD_PUBLIC_KEY".into(), hex::encode(discord_key.verifying_key().to_bytes())),
        ],
    })
    .await;
    (gateway, discord_key)
}

#[tokio::test]
async fn meta_subscription_handshake_and_signed_deliveries() {
    let (gateway, _) = handshake_gateway().await;
    let handshake = |token: &str| {
        gateway
            .http
            .get(gateway.url(&format!(
                "/api/webhooks/meta?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
            )))
            .send()
    };
    let accepted = handshake("meta-verify-token").await.unwrap();
    assert_eq!(accepted.status(), 200);
    assert_eq!(accepted.text().await.unwrap(), "1158201444");
    let (code, _) = error_code(handshake("guess").await.unwrap(), 403).await;
    assert_eq!(code, "handshake_refused");

    assert_eq!(stored_count(&gateway).await, 0, "a handshake is not an event");

    let delivery = json!({"object": "page", "entry": [{"id": "1", "time": 1}]});
    let body = delivery.to_string();
    let response = gateway
        .http
        .post(gateway.url("/api/webhooks/meta"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", format!("sha256={}", hex::encode(hmac_sha256("meta-app-secret", &body))))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_stored(&gateway, response, "meta.page", &delivery).await;
}

#[tokio::test]
async fn zoom_url_validation_is_answered_with_the_encrypted_token() {
    let (gateway, _) = handshake_gateway().await;
    let body =
        json!({"event": "endpoint.url_validation", "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}, "event_ts": 1})
            .to_string();
    let timestamp = now().to_string();
    let signature = format!("v0={}", hex::encode(hmac_sha256("zoom-secret-token", &format!("v0:{timestamp}:{body}"))));
    let response = gateway
        .http
        .post(gateway.url("/api/webhooks/zoom"))
        .header("content-type", "application/json")
        .header("x-zm-signature", signature)
        .header("x-zm-request-timestamp", timestamp)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(reply["encryptedToken"], hex::encode(hmac_sha256("zoom-secret-token", "qgg8vlvZRS6UYooatFL8Aw")));
    assert_eq!(gateway.admin_json("/api/events").await["data"], json!([]));
}

#[tokio::test]
async fn discord_ping_is_answered_with_a_pong() {
    use ed25519_dalek::Signer;
    let (gateway, key) = handshake_gateway().await;
    let body = json!({"type": 1, "id": "1", "application_id": "2"}).to_string();
    let timestamp = now().to_string();
    let signature = key.sign(format!("{timestamp}{body}").as_bytes());
    let send = |signature: String| {
        gateway
            .http
            .post(gateway.url("/api/webhooks/discord"))
            .header("content-type", "application/json")
            .header("x-signature-ed25519", signature)
            .header("x-signature-timestamp", timestamp.clone())
            .body(body.clone())
            .send()
    };
    let response = send(hex::encode(signature.to_bytes())).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"type": 1}));
    let forged = send(hex::encode([0u8; 64])).await.unwrap();
    let (code, _) = error_code(forged, 401).await;
    assert_eq!(code, "signature_mismatch", "Discord checks that endpoints refuse bad signatures");
    assert_eq!(stored_count(&gateway).await, 0, "a ping is not an event");
}
