//! Form hooks in a real browser: headless Chromium loads a page from another origin (a small
//! page server on 127.0.0.1) that posts an HTML form, or calls `fetch` with a JSON body (which
//! makes the browser send a CORS preflight). The browser is found at `HOOKGATE_TEST_CHROMIUM`
//! or /usr/bin/chromium; `.ci/run` installs it. Without it these tests say they were skipped
//! (`support::skip`), and fail in a strict run; a `HOOKGATE_TEST_CHROMIUM` naming no file fails.

use axum::response::Html;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

use crate::support::*;

const BROWSER_FORM: &str = "kustomer.app.site.contact";
const LOCKED_FORM: &str = "kustomer.app.site.locked";

/// The browser for `test`: `HOOKGATE_TEST_CHROMIUM`, which must name a file (a missing one is a
/// mistake, and fails the test), or else /usr/bin/chromium when it is there; without either the
/// test is skipped, which a strict run turns into a failure.
pub(crate) fn chromium(test: &str) -> Option<PathBuf> {
    if let Some(named) = std::env::var_os("HOOKGATE_TEST_CHROMIUM").filter(|value| !value.is_empty()) {
        let path = PathBuf::from(named);
        assert!(path.is_file(), "HOOKGATE_TEST_CHROMIUM names {}, which is not a file", path.display());
        return Some(path);
    }
    let path = PathBuf::from("/usr/bin/chromium");
    if path.is_file() {
        Some(path)
    } else {
        skip(
            test,
            "no Chromium: HOOKGATE_TEST_CHROMIUM is not set and /usr/bin/chromium is missing (.ci/run installs it)",
        );
        None
    }
}

/// Loads `url` in headless Chromium, lets scripts and navigations run, returns the final DOM.
async fn load_in_browser(browser: &PathBuf, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("Chromium finishes within 60 s")
        .unwrap_or_else(|error| panic!("{} cannot be run: {error}", browser.display()));
    assert!(
        output.status.success(),
        "{} failed ({}): {}",
        browser.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A gateway with two browser-facing form hooks: one allowing `origin`, one allowing only
/// another origin.
async fn gateway_for(origin: &str) -> Gateway {
    let site = json!({"app": "site", "version": "1", "hooks": [
        {"eventName": BROWSER_FORM, "type": "form", "redirectUrl": format!("{origin}/thanks"), "allowedOrigins": [origin]},
        {"eventName": LOCKED_FORM, "type": "form", "allowedOrigins": ["https://only.example"]}
    ]});
    Gateway::start_with(Options { definitions: vec![("site.json".into(), site)], env: vec![] }).await
}

async fn events_of(gateway: &Gateway, name: &str) -> Vec<Value> {
    gateway.admin_json(&format!("/api/events?name={name}")).await["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_browser_form_submission_is_stored_then_redirected() {
    let Some(browser) = chromium("browser::a_browser_form_submission_is_stored_then_redirected") else { return };
    // The site's origin is in the definition, and its form needs the hook URL: bind first.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = format!("http://{}", listener.local_addr().unwrap());
    let gateway = gateway_for(&site).await;
    let hook = gateway.hook_url(BROWSER_FORM).await;
    let form = format!(
        r#"<html><body>
        <form id="contact" method="post" action="{hook}">
          <input name="email" value="ana@example.com">
          <input name="name" value="Ana Pérez">
          <textarea name="message">Where is my order?</textarea>
        </form>
        <script>document.getElementById('contact').submit();</script>
        </body></html>"#
    );
    let router = axum::Router::new().route("/form", axum::routing::get(move || async move { Html(form) })).route(
        "/thanks",
        axum::routing::get(|| async { Html("<html><body><p id=\"thanks\">Thank you</p></body></html>") }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    let dom = load_in_browser(&browser, &format!("{site}/form")).await;
    assert!(dom.contains("id=\"thanks\""), "the browser followed the 303 to the thank-you page: {dom}");
    let events = events_of(&gateway, BROWSER_FORM).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["data"],
        json!({"email": "ana@example.com", "name": "Ana Pérez", "message": "Where is my order?"})
    );
    assert_eq!(events[0]["source"]["contentType"], "application/x-www-form-urlencoded");
}

fn fetch_page(hook: &str) -> String {
    format!(
        r#"<html><body><p id="status">pending</p>
        <script>
        fetch("{hook}", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: JSON.stringify({{cart: 3, note: "été"}})}})
          .then(reply => reply.json())
          .then(body => {{ document.getElementById("status").textContent = "stored " + body.id; }})
          .catch(error => {{ document.getElementById("status").textContent = "refused " + error; }});
        </script></body></html>"#
    )
}

#[tokio::test]
async fn a_cross_origin_fetch_from_an_allowed_origin_passes_preflight() {
    let Some(browser) = chromium("browser::a_cross_origin_fetch_from_an_allowed_origin_passes_preflight") else {
        return;
    };
    // The fetch page's origin must be the allowed one: bind first, then name it in the definition.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let gateway = gateway_for(&origin).await;
    let hook = gateway.hook_url(BROWSER_FORM).await;
    let html = fetch_page(&hook);
    let router = axum::Router::new().route("/fetch", axum::routing::get(move || async move { Html(html) }));
    tokio::spawn(async move { axum::serve(listener, router).await });

    let dom = load_in_browser(&browser, &format!("{origin}/fetch")).await;
    assert!(dom.contains("stored evt_"), "the browser's fetch succeeded after its preflight: {dom}");
    let events = events_of(&gateway, BROWSER_FORM).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"], json!({"cart": 3, "note": "été"}));
}

#[tokio::test]
async fn a_cross_origin_fetch_from_another_origin_is_refused_and_not_stored() {
    let Some(browser) = chromium("browser::a_cross_origin_fetch_from_another_origin_is_refused_and_not_stored") else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let gateway = gateway_for(&origin).await;
    let hook = gateway.hook_url(LOCKED_FORM).await;
    let html = fetch_page(&hook);
    let router = axum::Router::new().route("/fetch", axum::routing::get(move || async move { Html(html) }));
    tokio::spawn(async move { axum::serve(listener, router).await });

    let dom = load_in_browser(&browser, &format!("{origin}/fetch")).await;
    assert!(dom.contains("refused"), "the browser blocked the call: {dom}");
    assert!(events_of(&gateway, LOCKED_FORM).await.is_empty());
}
