//! Every default docs/hook-definitions.md states, held to two things: the docs' own table says
//! it, and a hook that leaves the property out behaves exactly as a twin hook that writes the
//! documented default out. (And `retention_days`, `shutdown_timeout_secs`, the fair-service
//! limits and the delivery targets, the README's: the table and `Config` agree.) A `Default` that disagrees with the docs (a seed-format email hook
//! once turned each value into a one-element array) fails here.
//!
//! One gateway serves a pair of hooks per type, `plain` (the property left out, as the seed
//! format writes hooks) and `written` (the documented default written out); each probe sends the
//! same request to both and compares what was answered and stored.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::email::{MAIL_DOMAIN, html_mail, send_raw};
use crate::support::*;

const FORM_PLAIN: &str = "kustomer.app.defaults.form.plain";
const FORM_WRITTEN: &str = "kustomer.app.defaults.form.written";
const WEB_PLAIN: &str = "kustomer.app.defaults.web.plain";
const WEB_WRITTEN: &str = "kustomer.app.defaults.web.written";
const MAIL_PLAIN: &str = "kustomer.app.defaults.mail.plain";
const MAIL_WRITTEN: &str = "kustomer.app.defaults.mail.written";

/// The server's body limit and the file limit, as documented.
const ONE_MIB: u64 = 1_048_576;
const FILE_LIMIT: u64 = 262_144;

fn defaults_app() -> Value {
    json!({"app": "defaults", "version": "1", "title": "Defaults", "hooks": [
        {"eventName": FORM_PLAIN, "displayEventName": "Plain form", "description": "Every property left out", "type": "form"},
        {"eventName": FORM_WRITTEN, "type": "form",
            "maxBodyBytes": ONE_MIB, "maxFileBytes": FILE_LIMIT, "allowedOrigins": ["*"]},
        {"eventName": WEB_PLAIN, "displayEventName": "Plain web hook", "description": "Every property left out", "type": "web"},
        {"eventName": WEB_WRITTEN, "type": "web", "maxBodyBytes": ONE_MIB, "maxFileBytes": FILE_LIMIT, "apiKeys": []},
        {"eventName": MAIL_PLAIN, "displayEventName": "Order confirmation", "description": "Mail with an order in it", "type": "email"},
        {"eventName": MAIL_WRITTEN, "type": "email", "email": {
            "allowedSenders": [], "textJson": "first", "multiple": "events", "requireDkim": false}}
    ]})
}

async fn gateway() -> Gateway {
    Gateway::start_with(
        Options { definitions: vec![("defaults.json".into(), defaults_app())], env: vec![] }
            .env("HOOKGATE_MAIL_DOMAIN", MAIL_DOMAIN),
    )
    .await
}

fn docs() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/hook-definitions.md")).unwrap()
}

/// The docs' text under `heading`, up to the next heading.
fn section<'a>(docs: &'a str, heading: &str) -> &'a str {
    let start = docs.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("the docs have {heading:?}"));
    let body = &docs[start + heading.len() + 2..];
    let end = body.find("\n#").unwrap_or(body.len());
    &body[..end]
}

/// The row of a Markdown table in `docs` whose first cell is `` `property` ``.
fn docs_row(docs: &str, property: &str) -> String {
    let start = format!("| `{property}`");
    let rows: Vec<&str> = docs
        .lines()
        .filter(|line| line.strip_prefix(&start).is_some_and(|rest| rest.trim_start().starts_with('|')))
        .collect();
    assert_eq!(rows.len(), 1, "one table row documents {property}: {rows:?}");
    rows[0].to_owned()
}

#[test]
fn the_readme_states_that_events_are_kept_forever_unless_retention_days_is_set() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let row = docs_row(section(&readme, "## Configuration"), "retention_days");
    assert!(row.contains("| none: events are kept forever"), "the README's row for retention_days: {row}");
    assert_eq!(hookgate::config::Config::default().retention_days, None, "and so does the configuration's default");
}

#[test]
fn the_readme_states_the_shutdown_deadline_that_the_configuration_applies() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let row = docs_row(section(&readme, "## Configuration"), "shutdown_timeout_secs");
    assert!(row.contains("| 30: after SIGTERM"), "the README's row for shutdown_timeout_secs: {row}");
    assert_eq!(
        hookgate::config::Config::default().shutdown_timeout_secs,
        30,
        "and so does the configuration's default"
    );
    let stopping = section(&readme, "## Stopping");
    assert!(stopping.contains("`shutdown_timeout_secs` (default 30)"), "the Stopping section: {stopping}");
}

#[test]
fn the_readme_states_the_fair_service_defaults_the_configuration_has() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = section(&readme, "## Configuration");
    let config = hookgate::config::Config::default();
    let numbers = [
        ("max_connections", config.max_connections.to_string()),
        ("max_connections_per_client", config.max_connections_per_client.to_string()),
        ("client_requests_per_second", config.client_requests_per_second.to_string()),
        ("client_request_burst", config.client_request_burst.to_string()),
        ("smtp_max_connections_per_client", config.smtp_max_connections_per_client.to_string()),
        ("smtp_client_messages_per_minute", config.smtp_client_messages_per_minute.to_string()),
    ];
    for (key, default) in numbers {
        let row = docs_row(table, key);
        assert!(row.contains(&format!("| {default}:")), "the README's row for {key} states {default}: {row}");
    }
    for (key, rates) in
        [("hook_rate_limits", &config.hook_rate_limits), ("source_rate_limits", &config.source_rate_limits)]
    {
        let row = docs_row(table, key);
        assert!(rates.is_empty() && row.contains("| none;"), "the README's row for {key} states none: {row}");
    }
    let fair_service = section(&readme, "### Fair service").replace('\n', " ");
    for (key, default) in [
        ("max_connections_per_client", config.max_connections_per_client),
        ("max_connections", config.max_connections),
        ("client_requests_per_second", config.client_requests_per_second as usize),
        ("client_request_burst", config.client_request_burst as usize),
        ("smtp_max_connections_per_client", config.smtp_max_connections_per_client),
        ("smtp_client_messages_per_minute", config.smtp_client_messages_per_minute as usize),
    ] {
        assert!(
            fair_service.contains(&format!("`{key}`, {default}"))
                || fair_service.contains(&format!("`{key}` ({default}")),
            "the Fair service section states {key} = {default}"
        );
    }
    assert!(fair_service.contains(&format!("{} addresses", thousands(hookgate::ingress::fairness::CLIENTS_TRACKED))));
}

#[test]
fn the_readme_states_that_deliveries_go_to_public_https_addresses_unless_configured() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = section(&readme, "## Configuration");
    let config = hookgate::config::Config::default();
    assert!(
        !config.delivery_allow_http
            && docs_row(table, "delivery_allow_http").contains("| `false`: deliveries go to `https://` URLs only")
    );
    assert!(config.delivery_allow_networks.is_empty());
    assert!(docs_row(table, "delivery_allow_networks").contains("| none: public addresses only"));
    assert!(!config.delivery_allow_private_networks);
    assert!(docs_row(table, "delivery_allow_private_networks").contains("| `false`; deprecated"));
}

/// `65536` as `65,536`.
fn thousands(number: usize) -> String {
    let digits = number.to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[test]
fn the_docs_state_each_default_this_module_checks() {
    let docs = docs();
    let hook_level = [
        ("displayEventName", "| none |"),
        ("description", "| none |"),
        ("maxBodyBytes", "1 MiB unless changed"),
        ("maxFileBytes", "`262144` (256 KiB)"),
        ("redirectUrl", "none: reply with JSON"),
        ("allowedOrigins", "`[\"*\"]`"),
        ("apiKeys", "`[]`"),
        ("email", "defaults below"),
    ];
    let hook_table = section(&docs, "### Hook level");
    for (property, default) in hook_level {
        let row = docs_row(hook_table, property);
        assert!(row.contains(default), "the docs' row for {property} states {default:?}: {row}");
    }
    let email = [
        ("textJson", "`first` (default)"),
        ("multiple", "`events` (default, one event each)"),
        ("allowedSenders", "absent: anyone"),
        ("eventName", "When absent, or when none of its placeholders finds a value, the hook's `eventName`"),
        ("requireDkim", "`true`: only mail"),
        ("key", "a secret reference. Only senders who know the key"),
    ];
    let email_table = section(&docs, "### Email hooks");
    for (property, default) in email {
        let row = docs_row(email_table, property);
        assert!(row.contains(default), "the docs' row for email.{property} states {default:?}: {row}");
    }
    assert_eq!(FILE_LIMIT, 262_144);
    assert!(hook_table.contains("Default: `262144`."), "maxFileBytes' paragraph states 262144");
    assert!(hook_table.contains("Default: `[\"*\"]`."), "allowedOrigins' paragraph states [\"*\"]");
}

/// What a reply and the event it stored say, without what differs between two hooks anyway (ids,
/// times, names, tokens).
async fn outcome(gateway: &Gateway, response: reqwest::Response) -> Value {
    let status = response.status().as_u16();
    let allow_origin =
        response.headers().get("access-control-allow-origin").map(|value| value.to_str().unwrap().to_owned());
    let location = response.headers().get("location").map(|value| value.to_str().unwrap().to_owned());
    let content_type = response.headers().get("content-type").map(|value| value.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let data = match body["id"].as_str() {
        Some(id) => gateway.event(id).await["data"].clone(),
        None => Value::Null,
    };
    json!({"status": status, "allowOrigin": allow_origin, "location": location, "contentType": content_type,
           "error": body["error"]["code"], "data": data})
}

/// Sends the request `build` makes to the plain and the written hook; asserts both came out
/// the same and returns that outcome.
async fn same_for_both<F>(gateway: &Gateway, plain: &str, written: &str, build: F) -> Value
where
    F: Fn(&reqwest::Client, String) -> reqwest::RequestBuilder,
{
    let mut outcomes = Vec::new();
    for event_name in [plain, written] {
        let url = gateway.hook_url(event_name).await;
        let response = build(&gateway.http, url).send().await.unwrap();
        outcomes.push(outcome(gateway, response).await);
    }
    assert_eq!(outcomes[0], outcomes[1], "{plain} (left out) and {written} (the documented default) differ");
    outcomes.remove(0)
}

/// The status code of the reply to a post declaring `length` bytes of JSON, read before any of
/// the body is sent (a client sending the whole body may see the connection closed under it, the
/// refusal already written).
async fn declared_length_status(gateway: &Gateway, event_name: &str, extra_headers: &str, length: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = gateway.hook_url(event_name).await;
    let path = url.trim_start_matches(&gateway.base).to_owned();
    let mut stream = tokio::net::TcpStream::connect(gateway.base.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 12];
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_exact(&mut reply))
        .await
        .expect("the gateway answers a declared length without waiting for the body")
        .expect("a reply");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    reply.strip_prefix("HTTP/1.1 ").unwrap_or_else(|| panic!("an HTTP reply: {reply:?}"))[..3].to_owned()
}

fn json_of_exact_size(size: u64) -> Vec<u8> {
    let frame = br#"{"pad":""}"#.len() as u64;
    format!(r#"{{"pad":"{}"}}"#, "x".repeat((size - frame) as usize)).into_bytes()
}

fn file_form(size: u64) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().text("order", "A-1").part(
        "scan",
        reqwest::multipart::Part::bytes(vec![7u8; size as usize]).file_name("scan.bin").mime_str("image/png").unwrap(),
    )
}

#[tokio::test]
async fn a_form_hook_that_leaves_its_limits_and_origins_out_behaves_as_the_documented_defaults() {
    let gateway = gateway().await;

    // maxBodyBytes: the server's 1 MiB.
    let at_limit = same_for_both(&gateway, FORM_PLAIN, FORM_WRITTEN, |http, url| {
        http.post(url).header("content-type", "application/json").body(json_of_exact_size(ONE_MIB))
    })
    .await;
    assert_eq!(at_limit["status"], 202, "a body of exactly 1 MiB is taken: {at_limit}");
    for event_name in [FORM_PLAIN, FORM_WRITTEN] {
        let status = declared_length_status(&gateway, event_name, "", ONE_MIB + 1).await;
        assert_eq!(status, "413", "{event_name}: one byte over 1 MiB is refused");
    }

    // maxFileBytes: 262144, a file of that size is kept, one byte more keeps only its digest.
    let kept =
        same_for_both(&gateway, FORM_PLAIN, FORM_WRITTEN, |http, url| http.post(url).multipart(file_form(FILE_LIMIT)))
            .await;
    assert_eq!(kept["data"]["scan"]["contentKept"], true, "{kept}");
    assert_eq!(kept["data"]["scan"]["size"], FILE_LIMIT);
    let digest_only = same_for_both(&gateway, FORM_PLAIN, FORM_WRITTEN, |http, url| {
        http.post(url).multipart(file_form(FILE_LIMIT + 1))
    })
    .await;
    let scan = &digest_only["data"]["scan"];
    assert_eq!(scan["contentKept"], false, "{digest_only}");
    assert_eq!(scan["content"], Value::Null);
    assert_eq!(scan["sha256"], hex::encode(Sha256::digest(vec![7u8; FILE_LIMIT as usize + 1])));

    // allowedOrigins: ["*"], any page may post from script.
    let cross_origin = same_for_both(&gateway, FORM_PLAIN, FORM_WRITTEN, |http, url| {
        http.post(url).header("origin", "https://anywhere.example").json(&json!({"a": 1}))
    })
    .await;
    assert_eq!(cross_origin["status"], 202);
    assert_eq!(cross_origin["allowOrigin"], "*");

    // redirectUrl: none, so an HTML form post is answered with JSON, not a redirect.
    let plain_url = gateway.hook_url(FORM_PLAIN).await;
    let response = gateway.http.post(plain_url).form(&[("name", "Ada")]).send().await.unwrap();
    let html_form = outcome(&gateway, response).await;
    assert_eq!(html_form["status"], 202, "{html_form}");
    assert_eq!(html_form["location"], Value::Null);
    assert_eq!(html_form["contentType"], "application/json");
    assert_eq!(html_form["data"], json!({"name": "Ada"}));
}

#[tokio::test]
async fn a_web_hook_that_leaves_its_keys_and_limits_out_behaves_as_the_documented_defaults() {
    let gateway = gateway().await;
    let key = gateway.issue_key(json!({"name": "defaults"})).await["key"].as_str().unwrap().to_owned();

    // apiKeys: [], so only issued keys are taken and nothing else.
    let unknown = same_for_both(&gateway, WEB_PLAIN, WEB_WRITTEN, |http, url| {
        http.post(url).header("x-api-key", "hgk_not-a-key-anyone-issued").json(&json!({"a": 1}))
    })
    .await;
    assert_eq!(unknown["status"], 401, "{unknown}");
    let issued = same_for_both(&gateway, WEB_PLAIN, WEB_WRITTEN, |http, url| {
        http.post(url).header("x-api-key", &key).json(&json!({"a": 1}))
    })
    .await;
    assert_eq!(issued["status"], 202, "{issued}");
    assert_eq!(issued["data"], json!({"a": 1}));

    // maxBodyBytes and maxFileBytes as on form hooks.
    for event_name in [WEB_PLAIN, WEB_WRITTEN] {
        let status = declared_length_status(&gateway, event_name, &format!("X-API-Key: {key}\r\n"), ONE_MIB + 1).await;
        assert_eq!(status, "413", "{event_name}: one byte over 1 MiB is refused");
    }
    let digest_only = same_for_both(&gateway, WEB_PLAIN, WEB_WRITTEN, |http, url| {
        http.post(url).header("x-api-key", &key).multipart(file_form(FILE_LIMIT + 1))
    })
    .await;
    assert_eq!(digest_only["data"]["scan"]["contentKept"], false, "{digest_only}");
}

const ORDER: &str = r#"{"@context":"https://schema.org","@type":"Order","orderNumber":"P-77","price":"12.00"}"#;
const RETURN: &str = r#"{"@context":"https://schema.org","@type":"Order","orderNumber":"P-78","price":"3.00"}"#;

/// The three places JSON is found in mail, each holding the order `P-77`.
fn messages_with_one_order(to: &str) -> Vec<(&'static str, Vec<u8>)> {
    let from = "shop@orders.example";
    let json_ld = html_mail(from, to, &format!(r#"<p>Thanks</p><script type="application/ld+json">{ORDER}</script>"#));
    let text = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Order\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYour order:\r\n{ORDER}\r\nand later {RETURN}\r\n"
    )
    .into_bytes();
    let attachment = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Order\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=order.json\r\n\r\n{ORDER}\r\n--b1--\r\n"
    )
    .into_bytes();
    vec![("jsonLd", json_ld), ("text", text), ("attachment", attachment)]
}

/// What one message made of a hook: each event's name, data and where the value was found.
async fn events_of(gateway: &Gateway, ids: &[String]) -> Vec<Value> {
    let mut made = Vec::new();
    for id in ids {
        let event = gateway.event(id).await;
        made.push(json!({"data": event["data"], "foundIn": event["source"]["mail"]["foundIn"]}));
    }
    made
}

/// The ids of the events the gateway made since it held `before` (the listing is newest first).
async fn new_event_ids(gateway: &Gateway, before: usize) -> Vec<String> {
    let listing = gateway.admin_json("/api/events?limit=200").await;
    let all = listing["data"].as_array().unwrap();
    let mut ids: Vec<String> =
        all[..all.len() - before].iter().map(|event| event["id"].as_str().unwrap().to_owned()).collect();
    ids.reverse();
    ids
}

async fn event_count(gateway: &Gateway) -> usize {
    gateway.admin_json("/api/events?limit=200").await["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_seed_format_email_hook_gives_one_event_per_value_over_smtp_and_http_from_each_place() {
    let gateway = gateway().await;
    for event_name in [MAIL_PLAIN, MAIL_WRITTEN] {
        let address = crate::email::address_of(&gateway, event_name).await;
        let url = gateway.hook_url(event_name).await;
        for (place, message) in messages_with_one_order(&address) {
            let before = event_count(&gateway).await;
            let reply = send_raw(&gateway, "shop@orders.example", &address, &message).await;
            assert!(reply.is_ok(), "{event_name}: mail with JSON in {place} is taken over SMTP: {reply:?}");
            let over_smtp = events_of(&gateway, &new_event_ids(&gateway, before).await).await;

            let before = event_count(&gateway).await;
            let response =
                gateway.http.post(&url).header("content-type", "message/rfc822").body(message).send().await.unwrap();
            assert_eq!(response.status(), 202, "{event_name}: mail with JSON in {place} is taken over HTTP");
            let over_http = events_of(&gateway, &new_event_ids(&gateway, before).await).await;

            // One event per value, the value itself as data (never an array holding it); the text
            // part's second JSON object is left alone (textJson "first").
            let expected = vec![json!({"data": serde_json::from_str::<Value>(ORDER).unwrap(), "foundIn": [place]})];
            assert_eq!(over_smtp, expected, "{event_name}, {place}, over SMTP");
            assert_eq!(over_http, expected, "{event_name}, {place}, over HTTP");
        }
    }
}

#[tokio::test]
async fn an_email_hook_without_an_email_block_takes_any_sender_no_key_and_names_events_after_itself() {
    let gateway = gateway().await;
    let two_orders = |to: &str| {
        html_mail(
            "anyone@unlisted.example",
            to,
            &format!(
                r#"<script type="application/ld+json">{ORDER}</script><script type="application/ld+json">{RETURN}</script>"#
            ),
        )
    };
    let mut made = Vec::new();
    for event_name in [MAIL_PLAIN, MAIL_WRITTEN] {
        let address = crate::email::address_of(&gateway, event_name).await;
        let before = event_count(&gateway).await;
        let reply = send_raw(&gateway, "anyone@unlisted.example", &address, &two_orders(&address)).await;
        assert!(reply.is_ok(), "{event_name}: any sender, no key, no DKIM signature: {reply:?}");
        let ids = new_event_ids(&gateway, before).await;
        let mut outcome = Vec::new();
        for id in &ids {
            let event = gateway.event(id).await;
            assert_eq!(event["name"], event_name, "named after the hook");
            outcome.push(event["data"]["orderNumber"].clone());
        }
        outcome.sort_by_key(|number| number.to_string());
        made.push(outcome);
    }
    assert_eq!(made[0], vec![json!("P-77"), json!("P-78")], "two values, two events");
    assert_eq!(made[0], made[1], "the plain hook and the written-out defaults agree");
}
