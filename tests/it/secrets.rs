//! Secrets never leave: one gateway, logging at debug level, is taken through every flow that
//! carries a secret (management and ingest keys issued and used, right and wrong; subscriptions
//! created with secrets, rotated and failing their deliveries; a signed source with right, wrong
//! and missing signatures; console sign-ins; the metrics, hooks, events and sources views; the
//! CLI; a restart). Every reply after a secret's creation (status, headers, body), everything the
//! process printed, and the database files are then searched for every secret the test used: the
//! admin token, the secrets key, the static partner key, the Stripe signing secret, the `hgk_` and
//! `hgm_` keys and the subscriptions' `whsec_` secrets. Only the reply that created a key or a
//! secret may show it.

use serde_json::{Value, json};
use std::time::Duration;

use crate::deliveries::{Receiver, subscribe};
use crate::support::*;

const STRIPE_SECRET: &str = "whsec_secrets-test-stripe-0123456789";
const URL_TOKEN: &str = "url-token-secret-8c1f5e2a9d";
const BASIC_AUTH: &str = "postmark:basic-password-4b7e0c";
const GITLAB_TOKEN: &str = "gitlab-token-secret-61d0aa93";

fn options() -> Options {
    let mut options = Options::default()
        .env("RUST_LOG", "debug")
        .env("HOOKGATE_DELIVERY_ALLOW_HTTP", "true")
        .env("HOOKGATE_DELIVERY_ALLOW_PRIVATE_NETWORKS", "true")
        .env("HOOKGATE_DELIVERY_RETRY_SCHEDULE_SECS", "[1, 1]")
        .env("TEST_STRIPE_SECRET", STRIPE_SECRET)
        .env("TEST_URL_TOKEN", URL_TOKEN)
        .env("TEST_BASIC_AUTH", BASIC_AUTH)
        .env("TEST_GITLAB_TOKEN", GITLAB_TOKEN);
    let stripe = json!({"app": "platforms", "version": "1", "hooks": [
        {"eventName": "stripe.event", "type": "web", "source": {
            "path": "stripe", "scheme": "stripe", "secrets": ["${TEST_STRIPE_SECRET}"],
            "eventName": "stripe.{$.type}", "deliveryId": "{$.id}"}},
        {"eventName": "tokened.event", "type": "web", "source": {
            "path": "tokened", "scheme": "url-token", "secrets": ["${TEST_URL_TOKEN}"]}},
        {"eventName": "basic.event", "type": "web", "source": {
            "path": "basic", "scheme": "basic-auth", "secrets": ["${TEST_BASIC_AUTH}"]}},
        {"eventName": "gitlab.event", "type": "web", "source": {
            "path": "gitlab", "scheme": "gitlab", "secrets": ["${TEST_GITLAB_TOKEN}"]}}
    ]});
    options.definitions.push(("platforms.json".into(), stripe));
    options
}

/// Every reply the test got, as text, with what was asked.
#[derive(Default)]
struct Transcript {
    replies: Vec<String>,
}

impl Transcript {
    /// Keeps the reply (status, headers, body) and returns its status and body.
    async fn keep(&mut self, asked: &str, response: reqwest::Response) -> (u16, String) {
        let status = response.status().as_u16();
        let mut text = format!("{asked} -> {status}\n");
        for (name, value) in response.headers() {
            text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
        }
        let body = response.text().await.unwrap_or_default();
        text.push('\n');
        text.push_str(&body);
        self.replies.push(text);
        (status, body)
    }

    async fn get(&mut self, gateway: &Gateway, path: &str, credential: &str) -> (u16, String) {
        let response = gateway.http.get(gateway.url(path)).bearer_auth(credential).send().await.unwrap();
        self.keep(&format!("GET {path}"), response).await
    }

    async fn post(&mut self, gateway: &Gateway, path: &str, credential: &str, body: Value) -> (u16, String) {
        let response = gateway.http.post(gateway.url(path)).bearer_auth(credential).json(&body).send().await.unwrap();
        self.keep(&format!("POST {path}"), response).await
    }
}

/// A console session: signs in with `credential`, then reads `pages`.
async fn console_pages(gateway: &Gateway, transcript: &mut Transcript, credential: &str, pages: &[String]) {
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = browser
        .post(gateway.url("/console/sign-in"))
        .header("origin", gateway.base.clone())
        .form(&[("token", credential), ("then", "/console/events")])
        .send()
        .await
        .unwrap();
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let (status, _) = transcript.keep("POST /console/sign-in", response).await;
    assert!(status == 303 || status == 302, "signed in: {status}");
    for page in pages {
        let response = browser.get(gateway.url(page)).header("cookie", &cookie).send().await.unwrap();
        let (status, _) = transcript.keep(&format!("console GET {page}"), response).await;
        // A management key may not see every page (the rejections are the admin's).
        assert!(status == 200 || status == 403, "{page}: {status}");
    }
}

/// Where the first of `secrets` appears in `places`, with the text around it; `None` when none
/// does. A secret is also looked for without its prefix (`whsec_`, `hgk_`, ...).
fn first_appearance(secrets: &[(&str, String)], places: &[(&str, &[u8])]) -> Option<String> {
    for (secret_name, secret) in secrets {
        let random = secret.split_once('_').map(|(_, rest)| rest).filter(|rest| rest.len() >= 12);
        for needle in std::iter::once(secret.as_str()).chain(random) {
            for (place, haystack) in places {
                let found = haystack.windows(needle.len()).position(|window| window == needle.as_bytes());
                if let Some(at) = found {
                    let start = at.saturating_sub(200);
                    let end = (at + needle.len() + 200).min(haystack.len());
                    let around = String::from_utf8_lossy(&haystack[start..end]);
                    return Some(format!("the {secret_name} appears in {place}:\n…{around}…"));
                }
            }
        }
    }
    None
}

/// Standard Webhooks' signature of a delivery: base64 HMAC-SHA256, keyed by the secret's bytes
/// after `whsec_`, over `{id}.{timestamp}.{body}`.
fn standard_webhooks_signature(secret: &str, id: &str, timestamp: &str, body: &str) -> String {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let engine = base64::engine::general_purpose::STANDARD;
    let key = engine.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", engine.encode(mac.finalize().into_bytes()))
}

/// Whether `request` was signed with `secret`.
fn signed_with(request: &crate::deliveries::Received, secret: &str) -> bool {
    let expected = standard_webhooks_signature(
        secret,
        &request.headers["webhook-id"],
        &request.headers["webhook-timestamp"],
        &request.body,
    );
    request.headers["webhook-signature"].split(' ').any(|signature| signature == expected)
}

#[tokio::test]
async fn no_secret_appears_in_any_reply_after_its_creation_in_the_logs_or_in_the_database() {
    let mut gateway = Gateway::start_with(options()).await;
    let mut transcript = Transcript::default();
    let receiver = Receiver::start(&[500, 500, 500, 500, 500, 500]).await;

    // Created: these replies alone may show what they create.
    let ingest = gateway.issue_key(json!({"name": "secrets ingest"})).await;
    let ingest_key = ingest["key"].as_str().unwrap().to_owned();
    let management = gateway.issue_key(json!({"name": "secrets management", "purpose": "management"})).await;
    let management_key = management["key"].as_str().unwrap().to_owned();
    let created = gateway
        .http
        .post(gateway.url("/api/webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"url": receiver.url, "name": "failing receiver"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let subscription: Value = created.json().await.unwrap();
    let id = subscription["id"].as_str().unwrap().to_owned();
    let first_secret = subscription["secret"].as_str().expect("the secret, shown at creation").to_owned();
    let rotated = gateway
        .http
        .post(gateway.url(&format!("/api/webhooks/{id}/rotate-secret")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let second_secret = rotated["secret"].as_str().expect("the new secret, shown once").to_owned();
    assert_ne!(first_secret, second_secret);

    // Ingest: a form event (its deliveries fail), web hooks with right and wrong keys, a signed
    // source with right, wrong and missing signatures.
    let form = gateway.hook_url(ORDER_UPDATE).await;
    let response = gateway.http.post(&form).json(&json!({"order": 1})).send().await.unwrap();
    let (status, body) = transcript.keep("POST form", response).await;
    assert_eq!(status, 202, "{body}");
    let event_id = serde_json::from_str::<Value>(&body).unwrap()["id"].as_str().unwrap().to_owned();
    let web = gateway.hook_url(ORDER_SYNC).await;
    for (header, key) in [
        ("x-api-key", ingest_key.clone()),
        ("authorization", format!("Bearer {ingest_key}")),
        ("x-api-key", management_key.clone()),
        ("x-api-key", ADMIN_TOKEN.to_owned()),
        ("x-api-key", format!("{ingest_key}x")),
    ] {
        let response = gateway.http.post(&web).header(header, key).json(&json!({"sync": true})).send().await.unwrap();
        transcript.keep("POST web hook", response).await;
    }
    let partner = gateway.hook_url(PARTNER_FEED).await;
    for key in [PARTNER_KEY.to_owned(), format!("{PARTNER_KEY}-wrong")] {
        let response = gateway.http.post(&partner).header("x-api-key", key).json(&json!({"feed": 1})).send().await;
        transcript.keep("POST partner feed", response.unwrap()).await;
    }
    let stripe_body = json!({"id": "evt_secrets", "object": "event", "type": "charge.succeeded"}).to_string();
    for signature in [
        Some(stripe_signature(STRIPE_SECRET, &stripe_body)),
        Some(stripe_signature("whsec_someone-else", &stripe_body)),
        Some(format!("t=1,v1={}", hex::encode(STRIPE_SECRET))),
        None,
    ] {
        let mut request = gateway
            .http
            .post(gateway.url("/api/webhooks/stripe"))
            .header("content-type", "application/json")
            .body(stripe_body.clone());
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        transcript.keep("POST stripe", request.send().await.unwrap()).await;
    }

    // Sources whose proof is the secret itself: in the URL, in Basic auth, in GitLab's header.
    for token in [URL_TOKEN.to_owned(), format!("{URL_TOKEN}x")] {
        let url = gateway.url(&format!("/api/webhooks/tokened?token={token}&other=1"));
        let response = gateway.http.post(url).json(&json!({"tokened": 1})).send().await.unwrap();
        transcript.keep("POST url-token source", response).await;
    }
    for credential in [BASIC_AUTH.to_owned(), format!("{BASIC_AUTH}x")] {
        let (user, password) = credential.split_once(':').unwrap();
        let request = gateway.http.post(gateway.url("/api/webhooks/basic")).basic_auth(user, Some(password));
        transcript.keep("POST basic-auth source", request.json(&json!({"basic": 1})).send().await.unwrap()).await;
    }
    for token in [GITLAB_TOKEN.to_owned(), format!("{GITLAB_TOKEN}x")] {
        let request = gateway.http.post(gateway.url("/api/webhooks/gitlab")).header("x-gitlab-token", token);
        transcript.keep("POST gitlab source", request.json(&json!({"gitlab": 1})).send().await.unwrap()).await;
    }
    let accepted = transcript.replies.iter().filter(|reply| reply.contains("source -> 20")).count();
    assert_eq!(accepted, 3, "each source accepted its right secret: {:#?}", transcript.replies);

    // Management: every view of what was made, with each credential, and refusals.
    let deliveries = format!("/api/webhooks/{id}/deliveries");
    eventually(Duration::from_secs(20), "two failed attempts", || {
        let gateway = &gateway;
        let deliveries = deliveries.clone();
        async move {
            let page = gateway.admin_json(&deliveries).await;
            page["data"].as_array().is_some_and(|data| {
                data.iter().any(|delivery| delivery["attemptHistory"].as_array().is_some_and(|a| a.len() >= 2))
            })
        }
    })
    .await;
    for path in [
        "/api/hooks".to_owned(),
        "/api/keys".to_owned(),
        "/api/webhooks".to_owned(),
        format!("/api/webhooks/{id}"),
        deliveries.clone(),
        "/api/events?limit=50".to_owned(),
        format!("/api/events/{event_id}"),
        format!("/api/events/{event_id}/raw"),
        "/api/sources/rejections".to_owned(),
        "/api/apps".to_owned(),
        "/api/integrations/webhooks".to_owned(),
        "/api/v1/hooks".to_owned(),
        "/metrics".to_owned(),
        "/readyz".to_owned(),
    ] {
        transcript.get(&gateway, &path, ADMIN_TOKEN).await;
        transcript.get(&gateway, &path, &management_key).await;
        transcript.get(&gateway, &path, &ingest_key).await;
    }
    transcript.post(&gateway, &format!("/api/webhooks/{id}/test"), ADMIN_TOKEN, json!({})).await;
    transcript.post(&gateway, "/api/keys", &management_key, json!({"name": "not allowed"})).await;
    transcript.post(&gateway, "/api/webhooks", ADMIN_TOKEN, json!({"url": "http://169.254.169.254/"})).await;
    transcript
        .post(&gateway, "/api/webhooks", ADMIN_TOKEN, json!({"url": receiver.url, "secret": "whsec_short"}))
        .await;
    let pages = [
        "/console/events".to_owned(),
        format!("/console/events/{event_id}"),
        "/console/subscriptions".to_owned(),
        format!("/console/subscriptions/{id}"),
        "/console/rejections".to_owned(),
        "/console/directory".to_owned(),
        "/console/health".to_owned(),
    ];
    console_pages(&gateway, &mut transcript, ADMIN_TOKEN, &pages).await;
    console_pages(&gateway, &mut transcript, &management_key, &pages).await;
    for wrong in [ingest_key.clone(), format!("{ADMIN_TOKEN}x")] {
        let response = gateway
            .http
            .post(gateway.url("/console/sign-in"))
            .header("origin", gateway.base.clone())
            .form(&[("token", wrong.as_str())])
            .send()
            .await
            .unwrap();
        transcript.keep("POST /console/sign-in (refused)", response).await;
    }

    // The CLI, and a restart (what the process prints when it starts on a store with secrets).
    let mut cli_output = Vec::new();
    for args in [&["keys", "list"][..], &["hooks"][..], &["events", "list"][..]] {
        let output = gateway.cli(args);
        cli_output.extend_from_slice(&output.stdout);
        cli_output.extend_from_slice(&output.stderr);
    }
    gateway.restart().await;
    transcript.get(&gateway, &format!("/api/webhooks/{id}"), ADMIN_TOKEN).await;
    let delivered_after_restart = receiver.received().len();

    let secrets = [
        ("admin token", ADMIN_TOKEN.to_owned()),
        ("secrets key", SECRETS_KEY.to_owned()),
        ("partner key", PARTNER_KEY.to_owned()),
        ("Stripe signing secret", STRIPE_SECRET.to_owned()),
        ("URL token", URL_TOKEN.to_owned()),
        ("Basic auth password", BASIC_AUTH.split_once(':').unwrap().1.to_owned()),
        ("Basic auth credential", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, BASIC_AUTH)),
        ("GitLab token", GITLAB_TOKEN.to_owned()),
        ("ingest key", ingest_key),
        ("management key", management_key),
        ("first subscription secret", first_secret.clone()),
        ("rotated subscription secret", second_secret.clone()),
    ];
    let replies = transcript.replies.join("\n\n");
    let printed = gateway.output();
    assert!(printed.contains("listening on"), "the log is kept: {printed}");
    assert!(printed.contains("DEBUG") || printed.contains("debug"), "at debug level: {printed}");
    let database = std::fs::read(gateway.database_file()).unwrap();
    let wal = std::fs::read(gateway.database_file().with_extension("db-wal")).unwrap_or_default();
    let places: [(&str, &[u8]); 5] = [
        ("a reply", replies.as_bytes()),
        ("the gateway's output", printed.as_bytes()),
        ("the CLI's output", &cli_output),
        ("the database file", &database),
        ("the write-ahead log", &wal),
    ];
    if let Some(found) = first_appearance(&secrets, &places) {
        panic!("{found}");
    }
    // The search finds what is there: the replies that created them show them.
    let creations = format!("{ingest}{management}{subscription}{rotated}");
    for name in ["ingest key", "management key", "first subscription secret", "rotated subscription secret"] {
        let secret: Vec<(&str, String)> = secrets.iter().filter(|(known, _)| *known == name).cloned().collect();
        assert!(first_appearance(&secret, &[("a creation reply", creations.as_bytes())]).is_some(), "{name}");
    }
    // What was delivered was signed with the secrets (they are kept, sealed, and used).
    let received = receiver.received();
    assert!(delivered_after_restart >= 2, "{received:?}");
    assert!(received.iter().all(|request| signed_with(request, &second_secret)), "{received:?}");
}

/// `hookgate serve` in `dir` on its SQLite file, expected to refuse to start: what it printed.
fn refused_start(dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .current_dir(dir)
        .args(SERVE)
        .env("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("HOOKGATE_SECRETS_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success(), "it started");
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn without_a_configured_key_sqlite_keeps_a_generated_one_beside_the_database_and_needs_it() {
    use std::os::unix::fs::PermissionsExt;
    let mut gateway = Gateway::start_with(options().env("HOOKGATE_SECRETS_KEY", "")).await;
    let key_file = gateway.database_file().with_file_name("hookgate.db.secrets-key");
    let mode = std::fs::metadata(&key_file).expect("the key file, made at first start").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
    let receiver = Receiver::start(&[]).await;
    let created = subscribe(&gateway, json!({"url": receiver.url})).await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    gateway.restart().await;
    let response = gateway.http.post(gateway.hook_url(ORDER_UPDATE).await).json(&json!({"n": 1})).send().await;
    assert_eq!(response.unwrap().status(), 202);
    let delivered = receiver.wait_for(1).await;
    assert!(signed_with(&delivered[0], &secret), "signed after a restart, with the key from the file");
    gateway.kill();

    let key = std::fs::read_to_string(&key_file).unwrap();
    let other = "a".repeat(64);
    let printed = refused_start(gateway.dir.path(), &[("HOOKGATE_SECRETS_KEY", other.as_str())]);
    assert!(printed.contains("which is not configured") && printed.contains("secrets_key"), "{printed}");
    assert!(!printed.contains(key.trim()) && !printed.contains(&other), "no key is shown: {printed}");
    let printed = refused_start(gateway.dir.path(), &[("HOOKGATE_SECRETS_KEY", "too-short")]);
    assert!(printed.contains("secrets_key must be 32 bytes") && !printed.contains("too-short"), "{printed}");
    std::fs::remove_file(&key_file).unwrap();
    let printed = refused_start(gateway.dir.path(), &[]);
    assert!(printed.contains("key file") && printed.contains("is missing"), "{printed}");
    assert!(!key_file.exists(), "no new key replaces the lost one");
}

#[tokio::test]
async fn plaintext_secrets_from_before_sealing_are_sealed_at_start_and_still_sign() {
    let mut gateway = Gateway::start_with(options()).await;
    let receiver = Receiver::start(&[]).await;
    let created = subscribe(&gateway, json!({"url": receiver.url})).await;
    let (id, secret) = (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());
    gateway.kill();
    // As an earlier hookgate stored it: the document with the secret in plaintext.
    let database = rusqlite::Connection::open(gateway.database_file()).unwrap();
    let body: String =
        database.query_row("SELECT body FROM subscriptions WHERE id = ?1", [&id], |row| row.get(0)).unwrap();
    let mut document: Value = serde_json::from_str(&body).unwrap();
    let sealed = document["secrets"][0]["secret"].as_str().unwrap().to_owned();
    assert!(sealed.starts_with("enc:v1:") && !body.contains(&secret), "sealed when created: {body}");
    document["secrets"][0]["secret"] = json!(secret);
    database.execute("UPDATE subscriptions SET body = ?2 WHERE id = ?1", [&id, &document.to_string()]).unwrap();
    drop(database);

    gateway.restart().await;
    let database = rusqlite::Connection::open(gateway.database_file()).unwrap();
    let body: String =
        database.query_row("SELECT body FROM subscriptions WHERE id = ?1", [&id], |row| row.get(0)).unwrap();
    assert!(body.contains("enc:v1:") && !body.contains(&secret), "sealed in place at start: {body}");
    assert!(gateway.output().contains("Sealed subscription secrets"), "{}", gateway.output());
    let response = gateway.http.post(gateway.hook_url(ORDER_UPDATE).await).json(&json!({"n": 1})).send().await;
    assert_eq!(response.unwrap().status(), 202);
    let delivered = receiver.wait_for(1).await;
    assert!(signed_with(&delivered[0], &secret), "the same secret signs");
}

#[tokio::test]
async fn postgresql_refuses_to_start_without_a_configured_key() {
    if std::env::var("HOOKGATE_TEST_POSTGRES_URL").is_err() {
        skip("postgresql_refuses_to_start_without_a_configured_key", "HOOKGATE_TEST_POSTGRES_URL is not set");
        return;
    }
    let database = fresh_postgres_schema().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("defs")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .current_dir(dir.path())
        .args(SERVE.iter().map(|arg| if *arg == "data/hookgate.db" { database.as_str() } else { arg }))
        .env("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("HOOKGATE_SECRETS_KEY")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it started");
    assert!(printed.contains("secrets_key (or HOOKGATE_SECRETS_KEY) is required with PostgreSQL"), "{printed}");
}
