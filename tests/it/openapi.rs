//! The OpenAPI document at `/api/openapi.json` stays true: every operation it lists is routed
//! (a request reaches a handler, not the fallback, and gets a status the document lists for it),
//! and every management route in `src/api/mod.rs` is in it.

use serde_json::Value;
use std::collections::BTreeSet;

use crate::support::*;

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// `(method, path)` of every `.route(...)` of the management router, read from its source.
fn routed() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/mod.rs")).unwrap();
    // Each `.route(` call whole, however rustfmt wrapped it: up to its closing parenthesis.
    let source = source.split_whitespace().collect::<Vec<_>>().join(" ").replace(".route( \"", ".route(\"");
    let mut routes = BTreeSet::new();
    for call in source.split(".route(\"/").skip(1) {
        let mut depth = 1;
        let end = call
            .char_indices()
            .find(|(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(call.len(), |(at, _)| at);
        let line = &call[..end];
        let path = format!("/{}", line.split('"').next().unwrap());
        let path = path.as_str();
        if ["/healthz", "/readyz", "/metrics"].contains(&path) {
            continue;
        }
        for method in METHODS {
            if line.contains(&format!("{method}(")) {
                routes.insert((method.to_string(), format!("/api{path}")));
            }
        }
    }
    // Seed 004's samples share /api/v1/hooks/{id}, told apart by the suffix (src/api/faces/jsonapi.rs).
    routes.insert(("get".to_owned(), "/api/v1/hooks/{event}_sample".to_owned()));
    // Shared with the sources' path and dispatched by id (src/api/subscriptions.rs).
    for method in ["get", "put", "patch", "delete"] {
        routes.insert((method.to_owned(), "/api/webhooks/{id}".to_owned()));
    }
    routes
}

fn documented(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.insert((method.clone(), path.clone()));
        }
    }
    operations
}

#[tokio::test]
async fn the_document_lists_exactly_the_routed_operations_and_each_answers_as_documented() {
    let gateway = Gateway::start().await;
    let document = gateway.admin_json("/api/openapi.json").await;
    assert_eq!(document["openapi"], "3.1.0");
    let operations = documented(&document);
    assert_eq!(operations, routed(), "docs/openapi.json and src/api/mod.rs disagree");
    for known in [("get", "/api/events/{id}/raw"), ("post", "/api/webhooks"), ("post", "/api/definitions/reload")] {
        let known = (known.0.to_owned(), known.1.to_owned());
        assert!(operations.contains(&known), "{known:?} is read from both: {operations:?}");
    }

    for (method, path) in operations {
        let concrete = path
            .replace("{id}", "sub_none")
            .replace("{delivery_id}", "dlv_none")
            .replace("{app}", "none")
            .replace("{event_name}", "kustomer.app.none")
            .replace("{event}", "kustomer.app.none");
        let response = gateway
            .http
            .request(method.to_uppercase().parse().unwrap(), gateway.url(&concrete))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let streams = response
            .headers()
            .get("content-type")
            .is_some_and(|content_type| content_type.as_bytes().starts_with(b"text/event-stream"));
        // A stream does not end: its status and type are what it answers.
        let body = if streams { String::new() } else { response.text().await.unwrap() };
        assert_ne!(status, 405, "{method} {path} is not routed: {body}");
        assert!(!body.contains("no such management endpoint"), "{method} {path} reaches the fallback");
        let responses = document["paths"][&path][&method]["responses"].as_object().unwrap();
        assert!(
            responses.contains_key(&status.to_string()),
            "{method} {path} answered {status}, not one of {:?}: {body}",
            responses.keys().collect::<Vec<_>>()
        );
        if status >= 400 {
            let error: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{method} {path}: {body}"));
            // Seed 004's face answers JSON:API errors; the rest the API's own error shape.
            let (code, message) = if path.starts_with("/api/v1/") {
                (error["errors"][0]["code"].as_str(), error["errors"][0]["detail"].as_str())
            } else {
                (error["error"]["code"].as_str(), error["error"]["message"].as_str())
            };
            assert!(code.is_some_and(|code| !code.is_empty()), "{method} {path}: {body}");
            assert!(message.is_some_and(|message| !message.is_empty()), "{method} {path}: {body}");
        }
    }
}

/// Schemathesis (from PyPI; `HOOKGATE_TEST_SCHEMATHESIS` names its executable, which `.ci/run`
/// installs) generates requests for every operation from the document, valid and invalid, with
/// the admin token, and checks every reply: no 5xx, a status the document lists, the documented
/// content type, and a body the operation's schema accepts. The event stream never ends, so it is
/// left to its own tests (`event_stream.rs`).
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_reply_outside_the_documented_schemas() {
    let test = "schemathesis_finds_no_server_error_and_no_reply_outside_the_documented_schemas";
    let Some(schemathesis) = required_env(test, "HOOKGATE_TEST_SCHEMATHESIS", "the schemathesis executable") else {
        return;
    };
    let gateway = Gateway::start_with(
        Options::default()
            .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
            .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32"),
    )
    .await;
    // Something in every list: a subscription, an event with a delivery history, a key.
    let subscription = serde_json::json!({"url": "http://127.0.0.1:9/receiver", "events": ["*"]});
    let created = gateway.http.post(gateway.url("/api/webhooks")).bearer_auth(ADMIN_TOKEN).json(&subscription);
    assert_eq!(created.send().await.unwrap().status(), 201);
    let posted = gateway.post_raw(ORDER_UPDATE, "application/json", r#"{"orderId": "o-1"}"#).await;
    assert!(posted.status().is_success(), "{}", posted.status());
    gateway.issue_key(serde_json::json!({"name": "contract", "purpose": "management"})).await;
    let reports = gateway.dir.path().join("schemathesis");
    let gateway_url = gateway.url("");
    let output = tokio::process::Command::new(&schemathesis)
        .args(["run", &gateway.url("/api/openapi.json"), "--url", &gateway_url])
        .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--exclude-path", "/api/events/stream"])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "25", "--seed", "20261207"])
        .args(["--workers", "2", "--request-timeout", "10", "--no-color", "--warnings", "off"])
        .arg("--report-dir")
        .arg(&reports)
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache (.schemathesis/) goes with the gateway's temporary directory.
        .current_dir(gateway.dir.path())
        .output()
        .await
        .unwrap_or_else(|error| panic!("{schemathesis} does not run: {error}"));
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found problems:\n{printed}");
    assert!(printed.contains("passed"), "schemathesis ran its checks:\n{printed}");
}
