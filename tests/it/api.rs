//! The management API over real HTTP: the admin token, the probes and metrics, the hook
//! directory, the event log, apps installed at run time, API keys and reloads.

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;

/// Posts JSON to a form hook and returns the 202 reply (`id`, `name`, `receivedAt`).
async fn post_form(gateway: &Gateway, event_name: &str, body: Value) -> Value {
    let url = gateway.hook_url(event_name).await;
    accepted(gateway.http.post(url).json(&body).send().await.unwrap(), event_name).await
}

/// Checks that `response` is the 202 reply for a new event of `event_name` and returns it.
async fn accepted(response: reqwest::Response, event_name: &str) -> Value {
    assert_eq!(response.status(), 202, "POST to {event_name}");
    let reply: Value = response.json().await.unwrap();
    assert!(reply["id"].as_str().is_some_and(|id| id.starts_with("evt_")), "{reply}");
    assert!(reply["receivedAt"].as_str().is_some_and(|at| at.parse::<jiff::Timestamp>().is_ok()), "{reply}");
    assert_eq!(reply.as_object().unwrap().len(), 3, "id, name and receivedAt: {reply}");
    assert_eq!(reply["name"], event_name, "{reply}");
    reply
}

/// Posts JSON to a web hook with an API key in `X-API-Key` and returns the response.
async fn post_web(gateway: &Gateway, event_name: &str, key: &str, body: Value) -> reqwest::Response {
    let url = gateway.hook_url(event_name).await;
    gateway.http.post(url).header("x-api-key", key).json(&body).send().await.unwrap()
}

/// An admin request with any method and an optional JSON body.
async fn admin(gateway: &Gateway, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = gateway.http.request(method, gateway.url(path)).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// `GET /api/events` with query parameters, expecting 200.
async fn events(gateway: &Gateway, query: &[(&str, &str)]) -> Value {
    let response =
        gateway.http.get(gateway.url("/api/events")).bearer_auth(ADMIN_TOKEN).query(query).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET /api/events {query:?}");
    response.json().await.unwrap()
}

/// The ids of a page of events, in order.
fn ids(page: &Value) -> Vec<String> {
    page["data"].as_array().unwrap().iter().map(|event| event["id"].as_str().unwrap().to_owned()).collect()
}

/// The `data` of each event of a page, in order.
fn payloads(page: &Value) -> Vec<Value> {
    page["data"].as_array().unwrap().iter().map(|event| event["data"].clone()).collect()
}

async fn event_names(gateway: &Gateway) -> Vec<String> {
    let hooks = gateway.admin_json("/api/hooks").await;
    hooks["data"].as_array().unwrap().iter().map(|hook| hook["eventName"].as_str().unwrap().to_owned()).collect()
}

async fn app_names(gateway: &Gateway) -> Vec<String> {
    let apps = gateway.admin_json("/api/apps").await;
    apps["data"].as_array().unwrap().iter().map(|app| app["app"].as_str().unwrap().to_owned()).collect()
}

/// Every hook the default gateway serves, as its definition files declare them.
fn defined_hooks() -> Vec<Value> {
    [shop_definition(), crm_definition()].iter().flat_map(|app| app["hooks"].as_array().unwrap().clone()).collect()
}

/// The event names the definition file of `app` declares, in order.
fn defined_event_names(app: &Value) -> Value {
    app["hooks"].as_array().unwrap().iter().map(|hook| hook["eventName"].clone()).collect()
}

/// How many of the default gateway's hooks have URLs (all but email hooks).
/// Every hook has a URL: email hooks take raw MIME and providers' inbound formats there.
fn hooks_with_urls() -> usize {
    defined_hooks().len()
}

const BLOG_COMMENT: &str = "kustomer.app.blog.comment";
const BLOG_LIKE: &str = "kustomer.app.blog.like";

fn blog_app() -> Value {
    json!({
        "app": "blog",
        "version": "1.0.0",
        "title": "Blog",
        "hooks": [{"eventName": BLOG_COMMENT, "displayEventName": "Comment", "type": "form"}]
    })
}

async fn install(gateway: &Gateway, definition: Value) -> reqwest::Response {
    admin(gateway, Method::POST, "/api/apps", Some(definition)).await
}

// ---------------------------------------------------------------------------------------------
// The admin token, probes and metrics

#[tokio::test]
async fn every_api_route_refuses_a_missing_or_wrong_credential() {
    let gateway = Gateway::start().await;
    let routes: &[(Method, &str, Option<Value>)] = &[
        (Method::GET, "/api/hooks", None),
        (Method::GET, "/api/apps", None),
        (Method::POST, "/api/apps", Some(blog_app())),
        (Method::GET, "/api/apps/shop", None),
        (Method::DELETE, "/api/apps/shop", None),
        (Method::POST, "/api/definitions/reload", None),
        (Method::GET, "/api/keys", None),
        (Method::POST, "/api/keys", Some(json!({"name": "sneaky"}))),
        (Method::DELETE, "/api/keys/key_0123", None),
        (Method::GET, "/api/events", None),
        (Method::GET, "/api/events/stream", None),
        (Method::GET, "/api/events/evt_0123", None),
        (Method::GET, "/api/events/evt_0123/raw", None),
    ];
    let wrong_credentials: &[Option<String>] = &[
        None,
        Some("Bearer not-the-admin-token-at-all".into()),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        Some(ADMIN_TOKEN.into()),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some("Bearer ".into()),
    ];
    for (method, path, body) in routes {
        for credential in wrong_credentials {
            let mut request = gateway.http.request(method.clone(), gateway.url(path));
            if let Some(credential) = credential {
                request = request.header("authorization", credential);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            let what = format!("{method} {path} with {credential:?}");
            assert_eq!(response.status(), 401, "{what}");
            let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
            assert!(challenge.as_deref().is_some_and(|c| c.starts_with("Bearer")), "{what}: {challenge:?}");
            let body: Value = response.json().await.unwrap_or_else(|_| panic!("{what}: a JSON error body"));
            let presents_a_token = credential.as_deref().is_some_and(|c| c.starts_with("Bearer ") && c.len() > 7);
            let (code, says) =
                if presents_a_token { ("invalid_credentials", "not valid") } else { ("unauthorized", "Bearer") };
            assert_eq!(body["error"]["code"], code, "{what}");
            assert!(body["error"]["message"].as_str().unwrap().contains(says), "{what}");
        }
    }
    // Nothing the refused requests asked for happened.
    assert_eq!(gateway.admin_json("/api/keys").await["data"], json!([]));
    assert_eq!(app_names(&gateway).await, ["crm", "shop"]);
}

#[tokio::test]
async fn probes_and_metrics_need_no_token() {
    let gateway = Gateway::start().await;
    let health = gateway.http.get(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");

    let ready = gateway.http.get(gateway.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["hooks"], defined_hooks().len());

    let metrics = gateway.http.get(gateway.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let content_type = metrics.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
}

#[tokio::test]
async fn metrics_count_accepted_posts_and_time_ingest_and_commits() {
    let gateway = Gateway::start().await;
    post_form(&gateway, ORDER_UPDATE, json!({"order": 1})).await;

    let response = gateway.http.get(gateway.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let hook_label = format!("hook=\"{ORDER_UPDATE}\"");

    let accepted = lines.iter().find(|line| {
        line.starts_with("hookgate_requests_total{")
            && line.contains(&hook_label)
            && line.contains("outcome=\"accepted\"")
    });
    assert!(accepted.is_some_and(|line| line.ends_with(" 1")), "no accepted request counted in:\n{text}");

    assert!(lines.contains(&"# TYPE hookgate_ingest_duration_seconds histogram"), "{text}");
    let ingest_buckets = lines
        .iter()
        .filter(|line| line.starts_with("hookgate_ingest_duration_seconds_bucket{") && line.contains(&hook_label))
        .count();
    assert!(ingest_buckets > 1, "no ingest histogram buckets in:\n{text}");
    assert!(
        lines.iter().any(|line| line.starts_with("hookgate_ingest_duration_seconds_count{")
            && line.contains(&hook_label)
            && line.ends_with(" 1")),
        "{text}"
    );

    assert!(lines.contains(&"# TYPE hookgate_store_commit_batch_size histogram"), "{text}");
    assert!(lines.iter().any(|line| line.starts_with("hookgate_store_commit_batch_size_bucket")), "{text}");
}

// ---------------------------------------------------------------------------------------------
// The hook directory

#[tokio::test]
async fn hooks_lists_every_hook_with_its_details_and_url() {
    let gateway = Gateway::start().await;
    let hooks = gateway.admin_json("/api/hooks").await;
    let hooks = hooks["data"].as_array().unwrap();
    let by_name = |name: &str| hooks.iter().find(|hook| hook["eventName"] == name).unwrap().clone();

    let mut names: Vec<&str> = hooks.iter().map(|hook| hook["eventName"].as_str().unwrap()).collect();
    names.sort_unstable();
    let defined = defined_hooks();
    let mut expected: Vec<&str> = defined.iter().map(|hook| hook["eventName"].as_str().unwrap()).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);

    let order_update = by_name(ORDER_UPDATE);
    assert_eq!(order_update["app"], "shop");
    assert_eq!(order_update["displayEventName"], "Order Update");
    assert_eq!(order_update["description"], "An order changed");
    assert_eq!(order_update["type"], "form");
    let contact = by_name(CONTACT_FORM);
    assert_eq!(contact["displayEventName"], Value::Null);
    assert_eq!(contact["description"], Value::Null);
    assert_eq!(by_name(ORDER_SYNC)["type"], "web");
    let lead = by_name(LEAD_CREATED);
    assert_eq!((&lead["app"], &lead["type"]), (&json!("crm"), &json!("web")));
    let mail = by_name(SHOP_MAIL);
    assert_eq!(mail["type"], "email");
    let address = mail["address"].as_str().unwrap();
    let mail_url = mail["url"].as_str().unwrap();
    assert_eq!(
        address,
        format!("{}@localhost", mail_url.rsplit('/').next().unwrap()),
        "an email hook's address is its token at the mail domain, and its URL takes raw MIME"
    );

    let mut tokens = HashSet::new();
    for hook in hooks.iter() {
        let url = hook["url"].as_str().unwrap_or_else(|| panic!("{hook} has a URL"));
        let token = url
            .strip_prefix(&format!("{}/h/", gateway.base))
            .unwrap_or_else(|| panic!("{url} is under {}/h/", gateway.base));
        assert_eq!(token.len(), 43, "{url}");
        assert!(token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{url}");
        assert!(tokens.insert(token.to_owned()), "{url} is shared by two hooks");
    }
    assert_eq!(tokens.len(), hooks_with_urls());
}

#[tokio::test]
async fn hook_urls_stay_the_same_after_a_restart() {
    let mut gateway = Gateway::start().await;
    let before = hook_paths(&gateway).await;
    assert_eq!(before.len(), hooks_with_urls());

    gateway.restart().await;
    assert_eq!(hook_paths(&gateway).await, before);
    let response =
        gateway.http.post(gateway.url(&before[ORDER_UPDATE])).json(&json!({"after": "restart"})).send().await.unwrap();
    let reply = accepted(response, ORDER_UPDATE).await;
    assert_eq!(gateway.event(reply["id"].as_str().unwrap()).await["data"], json!({"after": "restart"}));
}

// ---------------------------------------------------------------------------------------------
// The event log

#[tokio::test]
async fn events_are_listed_newest_first() {
    let gateway = Gateway::start().await;
    for n in 0..3 {
        post_form(&gateway, ORDER_UPDATE, json!({"n": n})).await;
    }
    let page = events(&gateway, &[]).await;
    assert_eq!(payloads(&page), [json!({"n": 2}), json!({"n": 1}), json!({"n": 0})]);
    assert_eq!(page["nextCursor"], Value::Null);
}

#[tokio::test]
async fn events_are_filtered_by_name_and_app() {
    let gateway = Gateway::start().await;
    let key = gateway.issue_key(json!({"name": "all apps"})).await["key"].as_str().unwrap().to_owned();
    let order = post_form(&gateway, ORDER_UPDATE, json!({"order": 1})).await["id"].as_str().unwrap().to_owned();
    let sync = post_web(&gateway, ORDER_SYNC, &key, json!({"sync": 1})).await;
    assert_eq!(sync.status(), 202);
    let sync = sync.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let lead = post_web(&gateway, LEAD_CREATED, &key, json!({"lead": 1})).await;
    assert_eq!(lead.status(), 202);
    let lead = lead.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    let (order, sync, lead) = (order.as_str(), sync.as_str(), lead.as_str());
    assert_eq!(ids(&events(&gateway, &[("name", ORDER_UPDATE)]).await), [order]);
    assert_eq!(ids(&events(&gateway, &[("name", LEAD_CREATED)]).await), [lead]);
    assert_eq!(ids(&events(&gateway, &[("app", "shop")]).await), [sync, order]);
    assert_eq!(ids(&events(&gateway, &[("app", "crm")]).await), [lead]);
    assert_eq!(ids(&events(&gateway, &[("app", "shop"), ("name", ORDER_SYNC)]).await), [sync]);
    assert!(ids(&events(&gateway, &[("app", "crm"), ("name", ORDER_UPDATE)]).await).is_empty());
    assert!(ids(&events(&gateway, &[("name", "kustomer.app.shop.nothing")]).await).is_empty());
}

#[tokio::test]
async fn events_are_filtered_by_receive_time_since_inclusive_until_exclusive() {
    let gateway = Gateway::start().await;
    let first = post_form(&gateway, ORDER_UPDATE, json!({"n": 1})).await;
    let first_at = first["receivedAt"].as_str().unwrap();
    let first_time: jiff::Timestamp = first_at.parse().unwrap();
    // The gateway reads the same clock: once it has passed the first time, the second differs.
    eventually(Duration::from_secs(5), "the clock to pass the first receive time", || async {
        jiff::Timestamp::now() > first_time
    })
    .await;
    let second = post_form(&gateway, ORDER_UPDATE, json!({"n": 2})).await;
    let second_at = second["receivedAt"].as_str().unwrap();
    assert!(second_at.parse::<jiff::Timestamp>().unwrap() > first_time, "{first_at} then {second_at}");
    let (first, second) = (first["id"].as_str().unwrap(), second["id"].as_str().unwrap());

    assert_eq!(ids(&events(&gateway, &[("since", first_at)]).await), [second, first]);
    assert_eq!(ids(&events(&gateway, &[("since", second_at)]).await), [second]);
    assert_eq!(ids(&events(&gateway, &[("until", second_at)]).await), [first]);
    assert_eq!(ids(&events(&gateway, &[("since", first_at), ("until", second_at)]).await), [first]);
    assert!(ids(&events(&gateway, &[("until", first_at)]).await).is_empty());
    assert!(ids(&events(&gateway, &[("since", "2999-01-01T00:00:00Z")]).await).is_empty());
}

#[tokio::test]
async fn event_pages_walk_every_event_exactly_once() {
    let gateway = Gateway::start().await;
    for n in 0..7 {
        post_form(&gateway, ORDER_UPDATE, json!({"n": n})).await;
    }
    // Another hook's event, which the name filter leaves out of every page.
    post_form(&gateway, CONTACT_FORM, json!({"other": true})).await;

    let mut walked = Vec::new();
    let mut page_sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("name", ORDER_UPDATE), ("limit", "3")];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor));
        }
        let page = events(&gateway, &query).await;
        page_sizes.push(page["data"].as_array().unwrap().len());
        walked.extend(payloads(&page));
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(page_sizes.len() < 10, "the pages never end");
    }
    assert_eq!(page_sizes, [3, 3, 1]);
    let expected: Vec<Value> = (0..7).rev().map(|n| json!({"n": n})).collect();
    assert_eq!(walked, expected);
}

#[tokio::test]
async fn event_list_refuses_bad_parameters_naming_the_field() {
    let gateway = Gateway::start().await;
    let cases: &[(&str, &str)] = &[
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=many", "limit"),
        ("since=yesterday", "since"),
        ("until=2026-13-45", "until"),
        ("colour=red", "colour"),
    ];
    for (query, field) in cases {
        let response = gateway.admin_get(&format!("/api/events?{query}")).await;
        let (code, message) = error_code(response, 400).await;
        assert_eq!(code, "bad_request", "{query}");
        assert!(message.contains(field), "{query}: {message:?} names {field}");
    }
    assert_eq!(events(&gateway, &[("limit", "1000")]).await["data"], json!([]));
}

#[tokio::test]
async fn an_event_shows_its_source_without_credentials() {
    let gateway = Gateway::start().await;
    let key = gateway.issue_key(json!({"name": "sender"})).await["key"].as_str().unwrap().to_owned();
    let url = gateway.hook_url(ORDER_SYNC).await;
    let payload = json!({"order": {"id": 42, "status": "paid"}});
    for credential in [("authorization", format!("Bearer {key}")), ("x-api-key", key.clone())] {
        let response = gateway
            .http
            .post(&url)
            .header(credential.0, &credential.1)
            .header("user-agent", "hookgate-tests/1.0")
            .header("x-trace-id", "trace-7")
            .json(&payload)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "key sent as {}", credential.0);
        let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

        let event = gateway.event(&id).await;
        assert_eq!(event["id"], id);
        assert_eq!(event["name"], ORDER_SYNC);
        assert_eq!(event["app"], "shop");
        assert_eq!(event["hookType"], "web");
        assert!(event["receivedAt"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok(), "{event}");
        assert_eq!(event["data"], payload);
        assert_eq!(event["receiveCount"], 1);
        let source = &event["source"];
        assert!(source["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{source}");
        assert_eq!(source["userAgent"], "hookgate-tests/1.0");
        assert_eq!(source["contentType"], "application/json");
        let headers = source["headers"].as_object().unwrap();
        assert_eq!(headers["x-trace-id"], "trace-7");
        assert_eq!(headers["content-type"], "application/json");
        assert!(!headers.contains_key("authorization") && !headers.contains_key("x-api-key"), "{source}");
        assert!(!event.to_string().contains(&key), "the key is stored with the event: {event}");
    }
}

#[tokio::test]
async fn an_unknown_event_is_not_found() {
    let gateway = Gateway::start().await;
    let (code, message) = error_code(gateway.admin_get("/api/events/evt_missing").await, 404).await;
    assert_eq!(code, "not_found");
    assert!(message.contains("evt_missing"), "{message}");
    let (code, _) = error_code(gateway.admin_get("/api/events/evt_missing/raw").await, 404).await;
    assert_eq!(code, "not_found");
}

#[tokio::test]
async fn the_raw_body_is_the_exact_bytes_posted_served_as_an_attachment() {
    let gateway = Gateway::start().await;
    let url = gateway.hook_url(ORDER_UPDATE).await;
    let bodies: &[(&str, &[u8])] = &[
        ("application/json; charset=utf-8", b"{ \"z\" : 1,\n  \"a\":[1,2.50, \"\\u00e9\"] }\n"),
        ("application/x-www-form-urlencoded", b"b=2&a=1&a=%C3%A9+x"),
        ("text/xml", b"<order id=\"7\"><script>alert(1)</script></order>"),
    ];
    for (content_type, bytes) in bodies {
        let response =
            gateway.http.post(&url).header("content-type", *content_type).body(bytes.to_vec()).send().await.unwrap();
        assert_eq!(response.status(), 202, "{content_type}");
        let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

        let raw = gateway.admin_get(&format!("/api/events/{id}/raw")).await;
        assert_eq!(raw.status(), 200);
        let headers = raw.headers().clone();
        assert_eq!(headers["content-type"], *content_type);
        assert!(headers["content-disposition"].to_str().unwrap().starts_with("attachment"), "{headers:?}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(raw.bytes().await.unwrap().as_ref(), *bytes, "{content_type}");
    }
}

// ---------------------------------------------------------------------------------------------
// Apps

#[tokio::test]
async fn apps_lists_the_file_apps_with_their_origin() {
    let gateway = Gateway::start().await;
    let apps = gateway.admin_json("/api/apps").await;
    assert_eq!(
        apps["data"],
        json!([
            {
                "app": "crm",
                "version": "2",
                "title": null,
                "origin": {"kind": "file", "path": "crm.json"},
                "eventNames": defined_event_names(&crm_definition())
            },
            {
                "app": "shop",
                "version": "1.0.0",
                "title": "Shop",
                "origin": {"kind": "file", "path": "shop.json"},
                "eventNames": defined_event_names(&shop_definition())
            }
        ])
    );
    let shop = gateway.admin_json("/api/apps/shop").await;
    assert_eq!(shop["origin"], json!({"kind": "file", "path": "shop.json"}));
    let (code, _) = error_code(gateway.admin_get("/api/apps/nothing").await, 404).await;
    assert_eq!(code, "not_found");
}

#[tokio::test]
async fn an_installed_app_serves_at_once_and_can_be_replaced() {
    let gateway = Gateway::start().await;
    let response = install(&gateway, blog_app()).await;
    assert_eq!(response.status(), 201);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["app"]["app"], "blog");
    assert_eq!(reply["app"]["origin"], json!({"kind": "installed", "path": "blog"}));
    assert_eq!(reply["app"]["eventNames"], json!([BLOG_COMMENT]));
    assert_eq!(reply["warnings"], json!([]));

    let hooks = gateway.admin_json("/api/hooks").await;
    let comment = hooks["data"].as_array().unwrap().iter().find(|hook| hook["eventName"] == BLOG_COMMENT).unwrap();
    assert_eq!((&comment["app"], &comment["type"]), (&json!("blog"), &json!("form")));
    assert_eq!(comment["displayEventName"], "Comment");
    let comment_url = comment["url"].as_str().unwrap().to_owned();
    let posted = post_form(&gateway, BLOG_COMMENT, json!({"text": "first!"})).await;
    assert_eq!(gateway.event(posted["id"].as_str().unwrap()).await["app"], "blog");

    let mut replacement = blog_app();
    replacement["version"] = json!("1.1.0");
    replacement["hooks"].as_array_mut().unwrap().push(json!({"eventName": BLOG_LIKE, "type": "form"}));
    let response = install(&gateway, replacement).await;
    assert_eq!(response.status(), 200, "replacing an installed app");
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["app"]["version"], "1.1.0");
    assert_eq!(reply["app"]["eventNames"], json!([BLOG_COMMENT, BLOG_LIKE]));
    assert_eq!(gateway.hook_url(BLOG_COMMENT).await, comment_url, "a kept hook keeps its URL");
    post_form(&gateway, BLOG_LIKE, json!({"post": 1})).await;
    assert_eq!(app_names(&gateway).await, ["blog", "crm", "shop"]);
}

#[tokio::test]
async fn an_invalid_app_is_refused_with_pointers_and_changes_nothing() {
    let gateway = Gateway::start().await;
    assert_eq!(install(&gateway, blog_app()).await.status(), 201);
    let hooks_before = gateway.admin_json("/api/hooks").await;
    let apps_before = gateway.admin_json("/api/apps").await;

    let invalid = json!({
        "app": "blog",
        "version": "2.0.0",
        "hooks": [
            {"eventName": "kustomer.app.blog.sms", "type": "sms"},
            {"eventName": BLOG_LIKE, "type": "form", "colour": "red"},
            {"type": "web"}
        ]
    });
    let response = install(&gateway, invalid).await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_definition");
    let diagnostics = body["error"]["diagnostics"].as_array().unwrap();
    let pointers: Vec<&str> = diagnostics.iter().map(|d| d["pointer"].as_str().unwrap()).collect();
    assert_eq!(pointers, ["/hooks/0/type", "/hooks/1/colour", "/hooks/2"], "{body}");
    assert_eq!(diagnostics[0]["severity"], "error");
    assert_eq!(diagnostics[0]["message"], "unknown hook type \"sms\", expected form, web or email");
    assert!(body["error"]["message"].as_str().unwrap().contains("/hooks/0/type"), "{body}");

    assert_eq!(gateway.admin_json("/api/hooks").await, hooks_before);
    assert_eq!(gateway.admin_json("/api/apps").await, apps_before);
}

#[tokio::test]
async fn an_installed_app_may_not_reuse_an_event_name_of_a_file_app() {
    let gateway = Gateway::start().await;
    let stealing = json!({"app": "blog", "version": "1", "hooks": [{"eventName": ORDER_UPDATE, "type": "form"}]});
    let response = install(&gateway, stealing).await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let diagnostics = body["error"]["diagnostics"].as_array().unwrap();
    let duplicate = diagnostics
        .iter()
        .find(|d| d["severity"] == "error" && d["pointer"] == "/hooks/0/eventName")
        .unwrap_or_else(|| panic!("no error at /hooks/0/eventName in {body}"));
    assert!(duplicate["message"].as_str().unwrap().contains("shop.json"), "{duplicate}");
    assert_eq!(app_names(&gateway).await, ["crm", "shop"]);
    let owner = gateway.admin_json("/api/hooks").await["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|hook| hook["eventName"] == ORDER_UPDATE)
        .unwrap()["app"]
        .clone();
    assert_eq!(owner, "shop");
}

#[tokio::test]
async fn installing_an_app_named_like_a_file_app_is_a_conflict() {
    let gateway = Gateway::start().await;
    let hooks_before = gateway.admin_json("/api/hooks").await;
    let shadow =
        json!({"app": "shop", "version": "9", "hooks": [{"eventName": "kustomer.app.shop.other", "type": "form"}]});
    let (code, message) = error_code(install(&gateway, shadow).await, 409).await;
    assert_eq!(code, "conflict");
    assert!(message.contains("shop.json"), "{message}");
    assert_eq!(gateway.admin_json("/api/hooks").await, hooks_before);
}

#[tokio::test]
async fn malformed_app_json_is_a_bad_request_naming_line_and_column() {
    let gateway = Gateway::start().await;
    let response = gateway
        .http
        .post(gateway.url("/api/apps"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\n  \"app\": \"blog\",\n  version: 1\n}")
        .send()
        .await
        .unwrap();
    let (code, message) = error_code(response, 400).await;
    assert_eq!(code, "bad_request");
    assert!(message.contains("line 3 column 3"), "{message}");
    assert_eq!(app_names(&gateway).await, ["crm", "shop"]);
}

#[tokio::test]
async fn deleting_an_installed_app_takes_its_hooks_out_of_service() {
    let gateway = Gateway::start().await;
    assert_eq!(install(&gateway, blog_app()).await.status(), 201);
    let url = gateway.hook_url(BLOG_COMMENT).await;

    let response = admin(&gateway, Method::DELETE, "/api/apps/blog", None).await;
    assert_eq!(response.status(), 204);
    assert!(!event_names(&gateway).await.contains(&BLOG_COMMENT.to_owned()));
    assert_eq!(app_names(&gateway).await, ["crm", "shop"]);
    let response = gateway.http.post(&url).json(&json!({"late": true})).send().await.unwrap();
    let (code, _) = error_code(response, 404).await;
    assert_eq!(code, "hook_not_found");

    let (code, _) = error_code(admin(&gateway, Method::DELETE, "/api/apps/blog", None).await, 404).await;
    assert_eq!(code, "not_found");
}

#[tokio::test]
async fn a_deletion_refused_for_an_invalid_definitions_folder_leaves_the_app_installed() {
    let gateway = Gateway::start().await;
    assert_eq!(install(&gateway, blog_app()).await.status(), 201);
    let broken = gateway.definitions_dir().join("broken.json");
    std::fs::write(&broken, "{\"app\": ").unwrap();

    let response = admin(&gateway, Method::DELETE, "/api/apps/blog", None).await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["diagnostics"][0]["origin"], "broken.json", "{body}");
    assert!(app_names(&gateway).await.contains(&"blog".to_owned()));

    // Once the folder is valid again, the app whose deletion was refused is still installed.
    std::fs::remove_file(&broken).unwrap();
    let response = admin(&gateway, Method::POST, "/api/definitions/reload", None).await;
    assert_eq!(response.status(), 200);
    let hooks = defined_hooks().len() + 1;
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"apps": 3, "hooks": hooks, "warnings": []}));
    assert_eq!(app_names(&gateway).await, ["blog", "crm", "shop"], "the refused deletion removed the app");
    post_form(&gateway, BLOG_COMMENT, json!({"still": "here"})).await;
}

#[tokio::test]
async fn file_apps_cannot_be_deleted_and_unknown_apps_are_not_found() {
    let gateway = Gateway::start().await;
    let (code, message) = error_code(admin(&gateway, Method::DELETE, "/api/apps/shop", None).await, 409).await;
    assert_eq!(code, "conflict");
    assert!(message.contains("shop.json"), "{message}");
    assert!(event_names(&gateway).await.contains(&ORDER_UPDATE.to_owned()));

    let (code, _) = error_code(admin(&gateway, Method::DELETE, "/api/apps/nothing", None).await, 404).await;
    assert_eq!(code, "not_found");
}

#[tokio::test]
async fn installed_apps_survive_a_restart_with_their_urls() {
    let mut gateway = Gateway::start().await;
    assert_eq!(install(&gateway, blog_app()).await.status(), 201);
    let path = hook_paths(&gateway).await[BLOG_COMMENT].clone();

    gateway.restart().await;
    let blog = gateway.admin_json("/api/apps/blog").await;
    assert_eq!(blog["origin"], json!({"kind": "installed", "path": "blog"}));
    assert_eq!(hook_paths(&gateway).await[BLOG_COMMENT], path);
    let response = gateway.http.post(gateway.url(&path)).json(&json!({"after": "restart"})).send().await.unwrap();
    let reply = accepted(response, BLOG_COMMENT).await;
    let event = gateway.event(reply["id"].as_str().unwrap()).await;
    assert_eq!((&event["app"], &event["data"]), (&json!("blog"), &json!({"after": "restart"})));
}

// ---------------------------------------------------------------------------------------------
// API keys

#[tokio::test]
async fn a_new_key_is_shown_once_and_opens_web_hooks() {
    let gateway = Gateway::start().await;
    let response = admin(&gateway, Method::POST, "/api/keys", Some(json!({"name": "ci"}))).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("hgk_"), "{key}");
    assert_eq!(created["name"], "ci");
    assert_eq!(created["apps"], Value::Null);
    assert_eq!(created["revokedAt"], Value::Null);
    assert!(key.starts_with(created["prefix"].as_str().unwrap()), "{created}");
    assert!(created["prefix"].as_str().unwrap().len() < key.len() / 2, "{created}");

    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let listed = gateway.admin_get("/api/keys").await.text().await.unwrap();
    assert!(listed.contains(&id), "{listed}");
    assert!(!listed.contains(&key), "the key text is listed: {listed}");
    assert!(!listed.contains(&key[12..]), "part of the secret is listed: {listed}");
    assert!(!listed.contains(&hash), "the key hash is listed: {listed}");
    assert!(!listed.to_lowercase().contains("sha256"), "{listed}");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["data"][0]["name"], "ci");
    assert!(listed["data"][0].get("key").is_none(), "{listed}");

    accepted(post_web(&gateway, ORDER_SYNC, &key, json!({"n": 1})).await, ORDER_SYNC).await;
    accepted(post_web(&gateway, LEAD_CREATED, &key, json!({"n": 1})).await, LEAD_CREATED).await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once() {
    let gateway = Gateway::start().await;
    let created = gateway.issue_key(json!({"name": "old"})).await;
    let key = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    accepted(post_web(&gateway, ORDER_SYNC, key, json!({"n": 1})).await, ORDER_SYNC).await;

    let response = admin(&gateway, Method::DELETE, &format!("/api/keys/{id}"), None).await;
    assert_eq!(response.status(), 204);
    let (code, _) = error_code(post_web(&gateway, ORDER_SYNC, key, json!({"n": 2})).await, 401).await;
    assert_eq!(code, "invalid_api_key");
    let listed = gateway.admin_json("/api/keys").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["data"][0]["id"], id, "{listed}");
    assert!(listed["data"][0]["revokedAt"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok(), "{listed}");
    assert_eq!(ids(&events(&gateway, &[]).await).len(), 1, "only the post before the revocation was stored");

    let (code, _) = error_code(admin(&gateway, Method::DELETE, &format!("/api/keys/{id}"), None).await, 404).await;
    assert_eq!(code, "not_found");
    let (code, _) = error_code(admin(&gateway, Method::DELETE, "/api/keys/key_missing", None).await, 404).await;
    assert_eq!(code, "not_found");
}

#[tokio::test]
async fn a_key_request_with_an_unknown_field_or_no_name_is_a_bad_request() {
    let gateway = Gateway::start().await;
    let cases = [
        (json!({"name": "x", "colour": "red"}), "colour"),
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({}), "name"),
    ];
    for (body, field) in cases {
        let response = admin(&gateway, Method::POST, "/api/keys", Some(body.clone())).await;
        let (code, message) = error_code(response, 400).await;
        assert_eq!(code, "bad_request", "{body}");
        assert!(message.contains(field), "{body}: {message:?} names {field}");
    }
    assert_eq!(gateway.admin_json("/api/keys").await["data"], json!([]));
}

// ---------------------------------------------------------------------------------------------
// Reloads

#[tokio::test]
async fn a_reload_answers_with_what_now_serves() {
    let gateway = Gateway::start().await;
    let response = admin(&gateway, Method::POST, "/api/definitions/reload", None).await;
    assert_eq!(response.status(), 200);
    let hooks = defined_hooks().len();
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"apps": 2, "hooks": hooks, "warnings": []}));

    let extra = json!({"app": "extra", "version": "1", "hooks": [
        {"eventName": "extra.ping", "type": "form"},
        {"eventName": "kustomer.app.extra.pong", "type": "web"}
    ]});
    std::fs::write(gateway.definitions_dir().join("extra.json"), serde_json::to_vec(&extra).unwrap()).unwrap();
    let response = admin(&gateway, Method::POST, "/api/definitions/reload", None).await;
    assert_eq!(response.status(), 200);
    let reloaded: Value = response.json().await.unwrap();
    assert_eq!((&reloaded["apps"], &reloaded["hooks"]), (&json!(3), &json!(hooks + 2)), "{reloaded}");
    let warnings = reloaded["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{reloaded}");
    assert!(warnings[0].as_str().unwrap().starts_with("extra.json: /hooks/0/eventName: warning:"), "{reloaded}");
    assert!(event_names(&gateway).await.contains(&"extra.ping".to_owned()));
}

#[tokio::test]
async fn unknown_api_paths_are_behind_the_admin_token_too() {
    let gateway = Gateway::start().await;
    let anonymous = gateway.http.get(gateway.url("/api/nope")).send().await.unwrap();
    let (code, _) = error_code(anonymous, 401).await;
    assert_eq!(code, "unauthorized", "no endpoint discovery without the token");
    let (code, message) = error_code(gateway.admin_get("/api/nope").await, 404).await;
    assert_eq!(code, "not_found");
    assert!(message.contains("no such management endpoint"), "{message}");
    let outside = gateway.http.get(gateway.url("/nope")).send().await.unwrap();
    assert_eq!(outside.status(), 404);
}

#[tokio::test]
async fn a_configured_admin_token_retires_a_generated_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("defs")).unwrap();
    let serve = |token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"));
        command
            .current_dir(dir.path())
            .args(SERVE)
            .env_remove("HOOKGATE_ADMIN_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if let Some(token) = token {
            command.env("HOOKGATE_ADMIN_TOKEN", token);
        }
        let mut child = command.spawn().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let mut generated = None;
        let base = loop {
            let line = lines.next().expect("a line").unwrap();
            if let Some(token) = line.split("keep it: ").nth(1) {
                generated = Some(token.to_owned());
            }
            if let Some(base) = line.strip_prefix("hookgate: http listening on ") {
                break base.to_owned();
            }
        };
        (child, base, generated)
    };
    let http = client();
    let status = |base: String, token: String| {
        let http = http.clone();
        async move { http.get(format!("{base}/api/hooks")).bearer_auth(token).send().await.unwrap().status().as_u16() }
    };

    let (mut first, base, generated) = serve(None);
    let generated = generated.expect("the first start prints a generated token once");
    assert_eq!(status(base, generated.clone()).await, 200);
    first.kill().unwrap();
    first.wait().unwrap();

    let (mut second, base, shown) = serve(None);
    assert!(shown.is_none(), "the token is printed only once");
    assert_eq!(status(base, generated.clone()).await, 200, "the generated token survives restarts");
    second.kill().unwrap();
    second.wait().unwrap();

    let (mut third, base, _) = serve(Some(ADMIN_TOKEN));
    assert_eq!(status(base.clone(), ADMIN_TOKEN.to_owned()).await, 200);
    assert_eq!(status(base, generated.clone()).await, 401);
    third.kill().unwrap();
    third.wait().unwrap();

    let (mut fourth, base, _) = serve(None);
    assert_eq!(status(base, generated).await, 401, "a replaced generated token never comes back");
    fourth.kill().unwrap();
    fourth.wait().unwrap();
}
