//! The console (`/console`) end to end. In a real headless Chromium driven over WebDriver
//! (chromedriver, through fantoccini): sign in with the admin token, see the directory, post to
//! a hook and watch the event appear without a reload, open it, create a subscription and see
//! its secret once, see a delivery fail against a receiver answering 500 and retry it, find a
//! rejected source request, see the health charts, sign out; and a management key with scopes
//! seeing and doing only what its scopes cover. With plain HTTP: the session cookie's
//! attributes, CSRF and cross-site refusals, sign-out and a revoked key ending sessions, the
//! sign-in rate limit.
//!
//! The browser tests save a screenshot of each view, 1280 and 390 pixels wide, into
//! `HOOKGATE_TEST_SCREENSHOTS` (`docs/console` refreshes the README's pictures), else into the
//! target directory; at 390 pixels every page must fit without sideways scrolling. They need
//! Chromium (`HOOKGATE_TEST_CHROMIUM` or /usr/bin/chromium) and chromedriver
//! (`HOOKGATE_TEST_CHROMEDRIVER` or /usr/bin/chromedriver), which `.ci/run` installs; without
//! them they are skipped, and a strict run fails.

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

use crate::deliveries::Receiver;
use crate::support::*;

const STRIPE_SECRET: &str = "whsec_console_test_secret";
const STRIPE_EVENT: &str = "kustomer.app.payments.stripe";

/// The definitions of the console tests: the shop and crm apps, and a Stripe source.
fn console_options() -> Options {
    let payments = json!({"app": "payments", "version": "3", "title": "Payments", "hooks": [
        {"eventName": STRIPE_EVENT, "displayEventName": "Stripe", "description": "Stripe's events, verified by their signature",
         "type": "web", "source": {"path": "stripe", "scheme": "stripe", "secrets": ["${CONSOLE_STRIPE_SECRET}", "${CONSOLE_STRIPE_NEXT}"]}}
    ]});
    let mut options = Options::default()
        .env("CONSOLE_STRIPE_SECRET", STRIPE_SECRET)
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_NETWORKS", "127.0.0.1/32")
        .env("HOOKGATE_DELIVERY_RETRY_SCHEDULE_SECS", "[]");
    options.definitions.push(("payments.json".into(), payments));
    options
}

/// chromedriver for `test`: `HOOKGATE_TEST_CHROMEDRIVER`, which must name a file, or
/// /usr/bin/chromedriver; without either the test is skipped (a strict run fails).
fn chromedriver(test: &str) -> Option<PathBuf> {
    if let Some(named) = std::env::var_os("HOOKGATE_TEST_CHROMEDRIVER").filter(|value| !value.is_empty()) {
        let path = PathBuf::from(named);
        assert!(path.is_file(), "HOOKGATE_TEST_CHROMEDRIVER names {}, which is not a file", path.display());
        return Some(path);
    }
    let path = PathBuf::from("/usr/bin/chromedriver");
    if path.is_file() {
        Some(path)
    } else {
        skip(
            test,
            "no chromedriver: HOOKGATE_TEST_CHROMEDRIVER is not set and /usr/bin/chromedriver is missing (.ci/run installs chromium-driver)",
        );
        None
    }
}

/// Where screenshots go.
fn screenshot_dir() -> PathBuf {
    match std::env::var_os("HOOKGATE_TEST_SCREENSHOTS").filter(|value| !value.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"),
    }
}

const WIDE: (u32, u32) = (1280, 900);
const NARROW: (u32, u32) = (390, 844);

/// Headless Chromium under chromedriver, with a fresh profile; stopped when dropped.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
    base: String,
}

impl Browser {
    /// Starts chromedriver on a port of its choosing, then a session; `None` when the test is
    /// skipped for want of a browser.
    async fn start(test: &str, base: &str) -> Option<Browser> {
        let chromium = crate::browser::chromium(test)?;
        let driver_path = chromedriver(test)?;
        let mut driver = tokio::process::Command::new(&driver_path)
            .arg("--port=0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("{} cannot be run: {error}", driver_path.display()));
        let stdout = driver.stdout.take().unwrap();
        let port = tokio::time::timeout(Duration::from_secs(20), async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // "ChromeDriver was started successfully on port 38061."
                if let Some(rest) = line.split("on port ").nth(1).filter(|_| line.contains("started successfully")) {
                    return rest.trim_end_matches('.').parse::<u16>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("chromedriver says which port it listens on");
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={},{}", WIDE.0, WIDE.1),
                ]
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        client.set_window_size(WIDE.0, WIDE.1).await.unwrap();
        Some(Browser { client, _driver: driver, _profile: profile, base: base.to_owned() })
    }

    async fn go(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no {css} on this page: {error}"))
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    async fn has(&self, css: &str) -> bool {
        !self.client.find_all(Locator::Css(css)).await.unwrap().is_empty()
    }

    async fn script(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Types into the field `css` (after clearing it).
    async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks `css` where that stays on the page.
    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Clicks the link or button `css` and waits for the page it leads to.
    async fn follow(&self, css: &str) {
        self.script("window.leftBehind = true; return true").await;
        self.click(css).await;
        for _ in 0..300 {
            let arrived =
                self.script("return window.leftBehind === undefined && document.readyState === 'complete'").await;
            if arrived == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clicking {css} led to no new page within 15 s");
    }

    /// Reloads the page until `css` is on it (at most 20 s): for views that are not live.
    async fn reload_until(&self, css: &str, what: &str) {
        for _ in 0..80 {
            if self.has(css).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            self.client.refresh().await.unwrap();
        }
        panic!("{what}: no {css} on {} after 20 s", self.path().await);
    }

    /// Saves the page as `name-wide.png` and `name-narrow.png`, checking that at 390 pixels
    /// nothing is wider than the screen.
    async fn shoot(&self, name: &str) {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let wide = self.whole_page(WIDE).await;
        assert_eq!(png_width(&wide), WIDE.0, "{name}: the wide screenshot's width");
        self.client.set_window_size(NARROW.0, NARROW.1).await.unwrap();
        let overflow = self.script("return document.documentElement.scrollWidth - window.innerWidth").await;
        if overflow.as_i64().is_none_or(|overflow| overflow > 0) {
            let wide = self
                .script(
                    "return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5 \
                     || (e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)).slice(0, 8).map(e => e.tagName + '.' + e.className + ' ' \
                     + Math.round(e.getBoundingClientRect().right) + ' ' + e.scrollWidth + '/' + e.clientWidth)",
                )
                .await;
            panic!("{name} is wider than 390 px by {overflow}: {wide}");
        }
        let narrow = self.whole_page(NARROW).await;
        assert_eq!(png_width(&narrow), NARROW.0, "{name}: the narrow screenshot's width");
        self.client.set_window_size(WIDE.0, WIDE.1).await.unwrap();
        std::fs::write(dir.join(format!("{name}-wide.png")), wide).unwrap();
        std::fs::write(dir.join(format!("{name}-narrow.png")), narrow).unwrap();
    }

    /// Ends the session, then fails the test if the journey did.
    /// A screenshot of the page `size` wide, as tall as the page (up to 2400 pixels).
    async fn whole_page(&self, size: (u32, u32)) -> Vec<u8> {
        self.client.set_window_size(size.0, size.1).await.unwrap();
        let heights = self
            .script("return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
            .await;
        let page = heights[0].as_u64().unwrap_or(u64::from(size.1)).clamp(u64::from(size.1), 2400) as u32;
        let frame = heights[1].as_u64().unwrap_or(0) as u32;
        self.client.set_window_size(size.0, page + frame).await.unwrap();
        let png = self.client.screenshot().await.unwrap();
        self.client.set_window_size(size.0, size.1).await.unwrap();
        png
    }

    async fn finish(self, outcome: std::thread::Result<()>) {
        let _ = self.client.close().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// A PNG's width, from its IHDR chunk.
fn png_width(png: &[u8]) -> u32 {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    u32::from_be_bytes(png[16..20].try_into().unwrap())
}

/// Signs in through the sign-in page with `token`.
async fn sign_in(browser: &Browser, token: &str) {
    browser.go("/console/").await;
    browser.find("#token").await;
    assert_eq!(browser.path().await, "/console/sign-in", "a visitor is sent to sign in");
    browser.fill("#token", token).await;
    browser.follow(".sign-in button[type=submit]").await;
    browser.find("nav[aria-label=Views]").await;
}

async fn post_order(gateway: &Gateway, order: u64) -> String {
    let response = gateway
        .post_raw(ORDER_UPDATE, "application/json", json!({"order": order, "status": "shipped"}).to_string())
        .await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

const ORDER_MAIL: &str = "From: Orders <orders@shop.example>\r\nTo: inbox@example.com\r\nSubject: Order 42 shipped\r\n\
Message-ID: <order-42@shop.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=part\r\n\r\n\
--part\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYour order 42 has shipped.\r\n\
--part\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><head><script type=\"application/ld+json\">\
{\"@context\": \"https://schema.org\", \"@type\": \"Order\", \"orderNumber\": \"42\", \"orderStatus\": \"https://schema.org/OrderShipped\"}\
</script></head><body><p>Your order 42 has shipped.</p></body></html>\r\n--part--\r\n";

#[tokio::test]
async fn an_operator_signs_in_watches_events_arrive_and_fixes_a_failing_delivery() {
    let test = "console::an_operator_signs_in_watches_events_arrive_and_fixes_a_failing_delivery";
    let gateway = Gateway::start_with(console_options()).await;
    // The first delivery fails with 500; the retry succeeds.
    let receiver = Receiver::start(&[500]).await;
    let Some(browser) = Browser::start(test, &gateway.base).await else { return };
    let outcome = std::panic::AssertUnwindSafe(operator_journey(&browser, &gateway, &receiver)).catch_unwind().await;
    browser.finish(outcome).await;
}

async fn operator_journey(browser: &Browser, gateway: &Gateway, receiver: &Receiver) {
    // Sign in.
    browser.go("/console/").await;
    browser.find("#token").await;
    browser.shoot("sign-in").await;
    sign_in(browser, ADMIN_TOKEN).await;

    // Some history: a rejected Stripe request, a verified one, an order and a mail.
    let body =
        json!({"id": "evt_stripe_1", "type": "charge.succeeded", "data": {"object": {"amount": 1200}}}).to_string();
    assert_eq!(post_stripe(gateway, &body, &stripe_signature("whsec_not_the_secret", &body)).await.status(), 401);
    assert_eq!(post_stripe(gateway, &body, &stripe_signature(STRIPE_SECRET, &body)).await.status(), 200);
    let mail = gateway.post_raw(SHOP_MAIL, "message/rfc822", ORDER_MAIL).await;
    assert_eq!(mail.status(), 202);
    let mail_id = mail.json::<Value>().await.unwrap()["events"][0]["id"].as_str().unwrap().to_owned();
    post_order(gateway, 41).await;

    // The directory.
    browser.follow("nav a[href='/console/directory']").await;
    let directory = browser.text("main").await;
    for expected in [
        "Order Update",
        "An order changed",
        "Payments",
        "Stripe",
        "stripe signature",
        "CONSOLE_STRIPE_SECRET",
        "CONSOLE_STRIPE_NEXT",
        "crm",
        "API key",
    ] {
        assert!(directory.contains(expected), "the directory shows {expected:?}: {directory}");
    }
    assert!(browser.has("article[aria-label='Stripe'] .badge.good").await, "a set secret is marked set");
    assert!(browser.has("article[aria-label='Stripe'] .badge.bad").await, "an unset one is marked not set");
    let order_url = gateway.hook_url(ORDER_UPDATE).await;
    assert!(browser.has(&format!("button[data-copy='{order_url}']")).await, "the hook URL has a copy button");
    assert!(browser.text("article[aria-label='Order Update']").await.contains("1 event"), "the last 24 hours' count");
    browser.shoot("directory").await;

    // Live events: a new one appears without a reload.
    browser.follow("nav a[href='/console/events']").await;
    browser.find(".live-status.live").await;
    browser.script("window.stillTheSamePage = true; return true").await;
    let order = post_order(gateway, 42).await;
    browser.find(&format!("#event-rows tr[data-id='{order}']")).await;
    assert_eq!(browser.script("return window.stillTheSamePage === true").await, json!(true), "no reload");
    assert!(browser.text(".live-status").await.contains("1 new event"));
    browser.shoot("events").await;

    // The event in full.
    browser.follow(&format!("#event-rows tr[data-id='{order}'] a")).await;
    browser.find("pre.json").await;
    let detail = browser.text("main").await;
    assert!(detail.contains("\"order\": 42"), "the data, pretty: {detail}");
    assert!(detail.contains("public form"), "how it was checked: {detail}");
    assert!(detail.contains("content-type"), "its headers: {detail}");
    browser.shoot("event").await;

    // A mail event: the values beside the message's parts.
    browser.go(&format!("/console/events/{mail_id}")).await;
    browser.find("table.parts").await;
    let mail_detail = browser.text("main").await;
    for expected in ["Order 42 shipped", "orders@shop.example", "text/html", "OrderShipped", "DKIM"] {
        assert!(mail_detail.contains(expected), "the mail event shows {expected:?}: {mail_detail}");
    }
    browser.shoot("event-email").await;

    // A subscription; its secret is shown once.
    browser.follow("nav a[href='/console/subscriptions']").await;
    browser.fill("#subscription-url", &receiver.url).await;
    browser.fill("#subscription-name", "Order desk").await;
    browser.fill("#subscription-events", ORDER_UPDATE).await;
    browser.follow("form.stacked button[type=submit]").await;
    let secret = browser.find("#secret-once").await.prop("value").await.unwrap().unwrap_or_default();
    assert!(secret.starts_with("whsec_"), "the new secret: {secret:?}");
    let subscription_path = browser.path().await;
    assert!(subscription_path.starts_with("/console/subscriptions/sub_"), "{subscription_path}");
    browser.client.refresh().await.unwrap();
    browser.find("dl.summary").await;
    assert!(!browser.has("#secret-once").await, "the secret is not shown again");

    // A delivery fails (the receiver answers 500), then a retry succeeds.
    let failing = post_order(gateway, 43).await;
    browser.reload_until("tr[data-delivery] .badge.bad", "the failed delivery").await;
    let row = browser.text("tr[data-delivery]").await;
    assert!(row.contains("500") && row.contains(&failing), "status, answer and event: {row}");
    browser.shoot("subscription").await;
    browser.follow("tr[data-delivery] form button").await;
    assert!(browser.text(".notes").await.contains("due again"));
    browser.reload_until("tr[data-delivery] .badge.good", "the retried delivery").await;
    assert_eq!(receiver.wait_for(2).await.len(), 2, "sent twice: the failure and the retry");

    // The rejected Stripe request, with its reason.
    browser.follow("nav a[href='/console/rejections']").await;
    let rejections = browser.text("main").await;
    assert!(rejections.contains("stripe") && rejections.contains("signature"), "{rejections}");
    browser.shoot("rejections").await;

    // Health: the charts count what happened.
    browser.follow("nav a[href='/console/health']").await;
    browser.find("figure.chart svg").await;
    let health = browser.text("main").await;
    assert!(health.contains("answers"), "the store answers: {health}");
    assert!(!health.contains("0 accepted"), "accepted requests are counted: {health}");
    assert!(health.contains("1 failed"), "the failed delivery is counted: {health}");
    browser.shoot("health").await;

    // Keyboard: the first Tab reaches the skip link, and focus is visible.
    browser.go("/console/directory").await;
    browser.find("main").await;
    browser.find("body").await.send_keys("\u{E004}").await.unwrap();
    let focused =
        browser.script("var e = document.activeElement; return [e.className, getComputedStyle(e).outlineStyle]").await;
    assert_eq!(focused[0], "skip-link", "{focused}");
    assert_ne!(focused[1], "none", "the focused link shows its focus: {focused}");

    // Sign out: back to sign-in, and the pages are closed again.
    browser.follow(".who button[type=submit]").await;
    assert!(browser.text("main").await.contains("signed out"));
    browser.go("/console/subscriptions").await;
    browser.find("#token").await;
    assert_eq!(browser.path().await, "/console/sign-in");
}

#[tokio::test]
async fn a_management_key_sees_and_changes_only_what_its_scopes_cover() {
    let test = "console::a_management_key_sees_and_changes_only_what_its_scopes_cover";
    let gateway = Gateway::start_with(console_options()).await;
    let issued = gateway
        .issue_key(json!({"name": "order desk", "purpose": "management", "scopes": ["kustomer.app.shop.order.*"]}))
        .await;
    let key = issued["key"].as_str().unwrap().to_owned();
    let everything = gateway
        .http
        .post(gateway.url("/api/webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"url": "http://127.0.0.1:9/all", "name": "Everything", "events": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(everything.status(), 201);
    let order = post_order(&gateway, 7).await;
    let mail = gateway.post_raw(SHOP_MAIL, "message/rfc822", ORDER_MAIL).await;
    let mail_id = mail.json::<Value>().await.unwrap()["events"][0]["id"].as_str().unwrap().to_owned();
    let Some(browser) = Browser::start(test, &gateway.base).await else { return };
    let journey = scoped_journey(&browser, &key, &order, &mail_id);
    let outcome = std::panic::AssertUnwindSafe(journey).catch_unwind().await;
    browser.finish(outcome).await;
    let listed = gateway.admin_json("/api/webhooks").await;
    let urls: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|s| s["url"].as_str().unwrap()).collect();
    assert_eq!(urls, ["http://127.0.0.1:9/all", "http://127.0.0.1:9/everything"], "only the covered one was created");
}

async fn scoped_journey(browser: &Browser, key: &str, order: &str, mail_id: &str) {
    sign_in(browser, key).await;
    assert!(browser.text(".who").await.contains("order desk"), "who is signed in");
    let navigation = browser.text("nav[aria-label=Views]").await;
    assert!(!navigation.contains("Rejections"), "rejections are the admin's: {navigation}");

    browser.go("/console/directory").await;
    let directory = browser.text("main").await;
    assert!(directory.contains("Order Update") && directory.contains(ORDER_SYNC), "{directory}");
    for hidden in [SHOP_MAIL, LEAD_CREATED, STRIPE_EVENT, "CONSOLE_STRIPE_SECRET"] {
        assert!(!directory.contains(hidden), "{hidden} is outside the key's scopes: {directory}");
    }
    browser.shoot("directory-scoped").await;

    browser.go(&format!("/console/events?name={ORDER_UPDATE}")).await;
    browser.find(&format!("tr[data-id='{order}']")).await;
    browser.go(&format!("/console/events/{mail_id}")).await;
    assert!(browser.text("main").await.contains("no event"), "another scope's event is not found");
    browser.go("/console/rejections").await;
    assert!(browser.text("main").await.contains("admin token"), "refused, saying why");

    browser.go("/console/subscriptions").await;
    assert!(!browser.text("main").await.contains("Everything"), "the admin's catch-all is out of sight");
    browser.fill("#subscription-url", "http://127.0.0.1:9/everything").await;
    browser.fill("#subscription-events", "*").await;
    browser.follow("form.stacked button[type=submit]").await;
    let refused = browser.text(".problem").await;
    assert!(refused.contains("do not cover"), "{refused}");
    browser.fill("#subscription-events", "kustomer.app.shop.order.*").await;
    browser.follow("form.stacked button[type=submit]").await;
    browser.find("#secret-once").await;
}

// Plain HTTP: sessions, cookies and CSRF.

/// A signed-in session: its cookie, and a CSRF token read from a page.
async fn session(gateway: &Gateway, token: &str) -> (String, String) {
    let response = gateway
        .http
        .post(gateway.url("/console/sign-in"))
        .form(&[("token", token), ("then", "/console/subscriptions")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/console/subscriptions");
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = page(gateway, &cookie, "/console/subscriptions").await;
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap().to_owned();
    (cookie, csrf)
}

async fn page(gateway: &Gateway, cookie: &str, path: &str) -> String {
    let response = gateway.http.get(gateway.url(path)).header("cookie", cookie).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.unwrap()
}

async fn create(gateway: &Gateway, cookie: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = gateway.http.post(gateway.url("/console/subscriptions")).header("cookie", cookie).form(form);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn subscription_count(gateway: &Gateway) -> usize {
    gateway.admin_json("/api/webhooks").await["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_same_site_strict() {
    let gateway = Gateway::start().await;
    let response =
        gateway.http.post(gateway.url("/console/sign-in")).form(&[("token", ADMIN_TOKEN)]).send().await.unwrap();
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("hookgate_console="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attribute), "{cookie} has {attribute}");
    }
    assert!(!cookie.contains("Secure"), "plain http: a Secure cookie would never come back");
    let page = gateway.http.get(gateway.url("/console/directory")).send().await.unwrap();
    assert_eq!(page.status(), 303, "no cookie, no page");
    let headers = page.headers();
    assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
}

#[tokio::test]
async fn behind_https_the_cookie_is_secure_and_host_bound() {
    let gateway = Gateway::start_with(Options::default().env("HOOKGATE_PUBLIC_URL", "https://hooks.example")).await;
    let response =
        gateway.http.post(gateway.url("/console/sign-in")).form(&[("token", ADMIN_TOKEN)]).send().await.unwrap();
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-hookgate_console="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} has {attribute}");
    }
}

#[tokio::test]
async fn an_action_without_the_sessions_csrf_token_is_refused_and_changes_nothing() {
    let gateway = Gateway::start_with(console_options()).await;
    let (cookie, csrf) = session(&gateway, ADMIN_TOKEN).await;
    let url = "http://127.0.0.1:9/hook";
    let without = create(&gateway, &cookie, &[("url", url), ("events", "*")], &[]).await;
    assert_eq!(without.status(), 403);
    assert!(without.text().await.unwrap().contains("CSRF token"), "says why");
    let wrong = create(&gateway, &cookie, &[("url", url), ("csrf", "not-the-token")], &[]).await;
    assert_eq!(wrong.status(), 403);
    let (_, other_csrf) = session(&gateway, ADMIN_TOKEN).await;
    let anothers = create(&gateway, &cookie, &[("url", url), ("csrf", &other_csrf)], &[]).await;
    assert_eq!(anothers.status(), 403, "another session's token is not this one's");
    let cross_site =
        create(&gateway, &cookie, &[("url", url), ("csrf", &csrf)], &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(cross_site.status(), 403);
    let other_origin =
        create(&gateway, &cookie, &[("url", url), ("csrf", &csrf)], &[("origin", "https://evil.example")]).await;
    assert_eq!(other_origin.status(), 403);
    let sign_out = gateway.http.post(gateway.url("/console/sign-out")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(sign_out.status(), 403, "signing out is an action too");
    assert_eq!(subscription_count(&gateway).await, 0, "nothing was created");

    let with = create(&gateway, &cookie, &[("url", url), ("events", ORDER_UPDATE), ("csrf", &csrf)], &[]).await;
    assert_eq!(with.status(), 303, "{}", with.text().await.unwrap());
    assert_eq!(subscription_count(&gateway).await, 1);
}

#[tokio::test]
async fn signing_out_or_revoking_the_key_ends_the_session() {
    let gateway = Gateway::start().await;
    let (cookie, csrf) = session(&gateway, ADMIN_TOKEN).await;
    let out = gateway
        .http
        .post(gateway.url("/console/sign-out"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"), "the cookie is cleared");
    let after = gateway.http.get(gateway.url("/console/directory")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(after.status(), 303, "the old cookie opens nothing");

    let issued = gateway.issue_key(json!({"name": "temp", "purpose": "management"})).await;
    let (cookie, _) = session(&gateway, issued["key"].as_str().unwrap()).await;
    page(&gateway, &cookie, "/console/directory").await;
    let revoked = gateway
        .http
        .delete(gateway.url(&format!("/api/keys/{}", issued["id"].as_str().unwrap())))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let after = gateway.http.get(gateway.url("/console/directory")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(after.status(), 303);
    assert!(after.headers()["location"].to_str().unwrap().contains("reason=revoked"));
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_repeated_failures_are_slowed() {
    let gateway = Gateway::start().await;
    let ingest = gateway.issue_key(json!({"name": "ingest"})).await;
    for (token, says) in [("hgm_not-a-key", "not valid"), (ingest["key"].as_str().unwrap(), "ingest key")] {
        let response =
            gateway.http.post(gateway.url("/console/sign-in")).form(&[("token", token)]).send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(response.headers().get("set-cookie").is_none());
        assert!(response.text().await.unwrap().contains(says), "{token}: says {says:?}");
    }
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response =
            gateway.http.post(gateway.url("/console/sign-in")).form(&[("token", "wrong-token")]).send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "ten failures a minute, then a pause: {statuses:?}");
}

#[tokio::test]
async fn the_console_pages_and_assets_need_nothing_from_elsewhere() {
    let gateway = Gateway::start().await;
    let (cookie, _) = session(&gateway, ADMIN_TOKEN).await;
    for path in
        ["/console/directory", "/console/events", "/console/subscriptions", "/console/rejections", "/console/health"]
    {
        let html = page(&gateway, &cookie, path).await;
        // What a browser would load or go to: src, href and form actions.
        for attribute in ["src=\"", "href=\"", "action=\""] {
            for reference in html.split(attribute).skip(1).filter_map(|rest| rest.split('"').next()) {
                let here = reference.starts_with('#') || (reference.starts_with('/') && !reference.starts_with("//"));
                assert!(here, "{path} refers to {reference}");
            }
        }
        assert!(!html.contains("<script>") && !html.contains(" style="), "{path}: no inline script or style");
    }
    for asset in ["/console/assets/console.css", "/console/assets/console.js"] {
        let response = gateway.http.get(gateway.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}, before signing in too");
        let text = response.text().await.unwrap();
        assert!(!text.contains("http://") && !text.contains("https://"), "{asset} fetches nothing");
    }
}

/// Posts a console form with the session's CSRF token; returns the page it leads to (after
/// the 303), which shows what came of it.
async fn act(gateway: &Gateway, cookie: &str, csrf: &str, path: &str, fields: &[(&str, &str)]) -> String {
    let mut form: Vec<(&str, &str)> = fields.to_vec();
    form.push(("csrf", csrf));
    let response = gateway.http.post(gateway.url(path)).header("cookie", cookie).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 303, "{path}: {}", response.text().await.unwrap());
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    page(gateway, cookie, &location).await
}

async fn subscription(gateway: &Gateway, id: &str) -> Value {
    gateway.admin_json(&format!("/api/webhooks/{id}")).await
}

/// The secret shown once on a page, if any.
fn shown_secret(page: &str) -> Option<String> {
    let rest = page.split("id=\"secret-once\"").nth(1)?;
    rest.split("value=\"").nth(1)?.split('"').next().map(str::to_owned)
}

#[tokio::test]
async fn every_subscription_action_of_the_console_does_what_the_api_does() {
    let gateway = Gateway::start_with(console_options()).await;
    let receiver = Receiver::start(&[]).await;
    let (cookie, csrf) = session(&gateway, ADMIN_TOKEN).await;

    // Create: a problem is named by its field and nothing is stored.
    let refused =
        create(&gateway, &cookie, &[("url", "ftp://nowhere"), ("events", "not a pattern!"), ("csrf", &csrf)], &[])
            .await;
    assert_eq!(refused.status(), 422);
    let refused = refused.text().await.unwrap();
    assert!(refused.contains("subscription-url-error") && refused.contains("subscription-events-error"), "{refused}");
    assert!(refused.contains("ftp://nowhere"), "what was entered is kept");
    assert_eq!(subscription_count(&gateway).await, 0);
    let created = act(
        &gateway,
        &cookie,
        &csrf,
        "/console/subscriptions",
        &[("url", &receiver.url), ("name", "Desk"), ("events", ORDER_UPDATE)],
    )
    .await;
    let secret = shown_secret(&created).expect("the secret, once");
    let listed = gateway.admin_json("/api/webhooks").await;
    let id = listed["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (listed["data"][0]["name"].as_str(), listed["data"][0]["events"].clone()),
        (Some("Desk"), json!([ORDER_UPDATE]))
    );
    let base = format!("/console/subscriptions/{id}");
    assert!(shown_secret(&page(&gateway, &cookie, &base).await).is_none(), "not shown again");

    // Edit, pause, resume.
    let edited = act(
        &gateway,
        &cookie,
        &csrf,
        &base,
        &[("url", &receiver.url), ("name", "Order desk"), ("events", "kustomer.app.shop.order.*, kustomer.app.crm.*")],
    )
    .await;
    assert!(edited.contains("Saved."));
    let changed = subscription(&gateway, &id).await;
    assert_eq!(
        (changed["name"].as_str(), changed["events"].clone()),
        (Some("Order desk"), json!(["kustomer.app.shop.order.*", "kustomer.app.crm.*"]))
    );
    act(&gateway, &cookie, &csrf, &format!("{base}/pause"), &[]).await;
    assert_eq!(subscription(&gateway, &id).await["status"], "paused");
    act(&gateway, &cookie, &csrf, &format!("{base}/resume"), &[]).await;
    assert_eq!(subscription(&gateway, &id).await["status"], "active");

    // Rotate: a new secret, shown once, and the deliveries are signed with it.
    let rotated = act(&gateway, &cookie, &csrf, &format!("{base}/rotate-secret"), &[("overlap_seconds", "0")]).await;
    let new_secret = shown_secret(&rotated).expect("the new secret, once");
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);

    // A test event: the endpoint's answer is told.
    let tested = act(&gateway, &cookie, &csrf, &format!("{base}/test"), &[("event", ORDER_UPDATE)]).await;
    assert!(tested.contains("answered 200"), "{tested}");
    let test_delivery = receiver.wait_for(1).await.remove(0);
    let now = jiff::Timestamp::now().as_second();
    assert_eq!(
        crate::standard_webhooks::verify(&new_secret, &test_delivery.headers, test_delivery.body.as_bytes(), now),
        Ok(())
    );

    // Replay an event to it from the event's page.
    let order = post_order(&gateway, 5).await;
    receiver.wait_for(2).await;
    let replayed =
        act(&gateway, &cookie, &csrf, &format!("/console/events/{order}/replay"), &[("subscription", &id)]).await;
    assert!(replayed.contains("is queued"), "{replayed}");
    assert_eq!(receiver.wait_for(3).await.len(), 3, "the test, the order, and its replay");

    // Delete.
    let deleted = act(&gateway, &cookie, &csrf, &format!("{base}/delete"), &[]).await;
    assert!(deleted.contains("deleted"));
    assert_eq!(subscription_count(&gateway).await, 0);
    let gone = gateway.http.get(gateway.url(&base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn an_event_page_masks_signatures_and_says_how_the_event_was_verified() {
    let gateway = Gateway::start_with(console_options()).await;
    let body = json!({"id": "evt_stripe_9", "type": "charge.refunded"}).to_string();
    let signature = stripe_signature(STRIPE_SECRET, &body);
    let stored = post_stripe(&gateway, &body, &signature).await;
    assert_eq!(stored.status(), 200);
    let id = stored.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let (cookie, _) = session(&gateway, ADMIN_TOKEN).await;
    let html = page(&gateway, &cookie, &format!("/console/events/{id}")).await;
    assert!(html.contains("stripe signature over the raw body was valid"), "{html}");
    assert!(html.contains("stripe-signature"), "the header is listed");
    assert!(!html.contains(&signature), "its value is not shown");
    assert!(html.contains("characters, masked"));
    let raw = gateway
        .http
        .get(gateway.url(&format!("/console/events/{id}/raw")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-disposition"].to_str().unwrap(), format!("attachment; filename=\"{id}.body\""));
    assert_eq!(raw.text().await.unwrap(), body, "the exact bytes");
}

#[tokio::test]
async fn the_directory_shows_a_refused_reload_with_its_errors_beside_the_serving_set() {
    let gateway = Gateway::start().await;
    let broken =
        json!({"app": "broken", "version": "1", "hooks": [{"eventName": "kustomer.app.broken.x", "type": "fax"}]});
    std::fs::write(gateway.definitions_dir().join("broken.json"), broken.to_string()).unwrap();
    let reload =
        gateway.http.post(gateway.url("/api/definitions/reload")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(reload.status(), 422);
    let (cookie, _) = session(&gateway, ADMIN_TOKEN).await;
    let html = page(&gateway, &cookie, "/console/directory").await;
    assert!(html.contains("The latest reload was refused"), "{html}");
    assert!(html.contains("broken.json") && html.contains("/hooks/0/type"), "the error, located: {html}");
    assert!(html.contains("Order Update"), "the serving set is still listed");

    let issued =
        gateway.issue_key(json!({"name": "k", "purpose": "management", "scopes": ["kustomer.app.shop.*"]})).await;
    let (cookie, _) = session(&gateway, issued["key"].as_str().unwrap()).await;
    let html = page(&gateway, &cookie, "/console/directory").await;
    assert!(!html.contains("broken.json"), "definition problems are the admin's");

    std::fs::remove_file(gateway.definitions_dir().join("broken.json")).unwrap();
    let reload =
        gateway.http.post(gateway.url("/api/definitions/reload")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(reload.status(), 200);
    let (cookie, _) = session(&gateway, ADMIN_TOKEN).await;
    assert!(!page(&gateway, &cookie, "/console/directory").await.contains("refused"), "a good reload clears it");
}
