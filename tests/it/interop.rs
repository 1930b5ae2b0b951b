//! Interoperability with the platforms' official libraries: a request signed by the library a
//! platform publishes (Stripe's, Svix's Standard Webhooks, Slack's, Twilio's and HubSpot's
//! Python SDKs, Octokit for GitHub) is accepted by `POST /api/webhooks/{source}`, and the same
//! headers on a tampered body are refused. The signing happens in `tests/interop/sign.py` and
//! `tests/interop/sign.mjs`, which only call the libraries; hookgate's own code signs nothing
//! here. [`run_signer`] also runs the standard-library signers of `independent_signers`.
//!
//! The libraries are found through `HOOKGATE_TEST_PYTHON` (a Python with the libraries) and
//! `HOOKGATE_TEST_NODE_MODULES` (a `node_modules` folder), which `.ci/run` sets. A test whose
//! variable is not set, whose runtime cannot be run or whose library is missing goes through
//! [`skip`]: a line on stderr, or a failure naming what is missing under
//! `HOOKGATE_TEST_STRICT=1`.

use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::*;

const STRIPE_SECRET: &str = "whsec_interop_stripe_0123456789";
const STANDARD_WEBHOOKS_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const TWILIO_AUTH_TOKEN: &str = "twilio-auth-token-0123456789abcdef";
const HUBSPOT_SECRET: &str = "hubspot-client-secret-interop";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";

fn platforms() -> Value {
    json!({"app": "interop", "version": "1", "hooks": [
        {"eventName": "stripe.event", "type": "web", "source": {
            "path": "stripe", "scheme": "stripe", "secrets": ["${TEST_STRIPE_SECRET}"],
            "eventName": "stripe.{$.type}", "deliveryId": "{$.id}"}},
        {"eventName": "standardwebhooks.event", "type": "web", "source": {
            "path": "standard-webhooks", "scheme": "standard-webhooks",
            "secrets": ["${TEST_STANDARD_WEBHOOKS_SECRET}"],
            "eventName": "standardwebhooks.{$.type}", "deliveryId": "{header:webhook-id|header:svix-id}"}},
        {"eventName": "slack.event", "type": "web", "source": {
            "path": "slack", "scheme": "slack", "secrets": ["${TEST_SLACK_SECRET}"],
            "eventName": "slack.{$.event.type}", "deliveryId": "{$.event_id}"}},
        {"eventName": "twilio.event", "type": "web", "source": {
            "path": "twilio", "scheme": "twilio", "secrets": ["${TEST_TWILIO_AUTH_TOKEN}"],
            "eventName": "twilio.{$.SmsStatus}", "deliveryId": "{$.MessageSid}"}},
        {"eventName": "hubspot.event", "type": "web", "source": {
            "path": "hubspot", "scheme": "hubspot", "secrets": ["${TEST_HUBSPOT_SECRET}"],
            "eventName": "hubspot.{$.subscriptionType}", "deliveryId": "{$.eventId}", "splitArrays": true, "allowLegacy": true}},
        {"eventName": "github.event", "type": "web", "source": {
            "path": "github", "scheme": "github", "secrets": ["${TEST_GITHUB_SECRET}"],
            "eventName": "github.{header:X-GitHub-Event}.{$.action}", "deliveryId": "{header:X-GitHub-Delivery}"}}
    ]})
}

async fn gateway() -> Gateway {
    Gateway::start_with(Options {
        definitions: vec![("interop.json".into(), platforms())],
        env: vec![
            ("TEST_STRIPE_SECRET".into(), STRIPE_SECRET.into()),
            ("TEST_STANDARD_WEBHOOKS_SECRET".into(), STANDARD_WEBHOOKS_SECRET.into()),
            ("TEST_SLACK_SECRET".into(), SLACK_SECRET.into()),
            ("TEST_TWILIO_AUTH_TOKEN".into(), TWILIO_AUTH_TOKEN.into()),
            ("TEST_HUBSPOT_SECRET".into(), HUBSPOT_SECRET.into()),
            ("TEST_GITHUB_SECRET".into(), GITHUB_SECRET.into()),
        ],
    })
    .await
}

/// A signing script and the runtime that runs it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Signer {
    /// `sign.py`: the platforms' official Python libraries, in `HOOKGATE_TEST_PYTHON`.
    PythonLibraries,
    /// `sign.mjs`: the platforms' official Node libraries, in `HOOKGATE_TEST_NODE_MODULES`.
    NodeLibraries,
    /// `sign_documented.py`: the platforms' documentation read with Python's standard library
    /// only, run by `HOOKGATE_TEST_PYTHON` or else `python3`.
    PythonStandardLibrary,
    /// `sign_documented.mjs`: the platforms' documentation read with Node's built-in crypto.
    NodeCrypto,
}

impl Signer {
    /// The command that runs this signer's script, or why it cannot run here.
    fn command(self, test: &str) -> Option<Command> {
        let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
        let (program, script) = match self {
            Signer::PythonLibraries => {
                let python = required_env(test, "HOOKGATE_TEST_PYTHON", "a Python with the platforms' libraries")?;
                (python, "sign.py")
            }
            Signer::NodeLibraries => {
                let modules =
                    required_env(test, "HOOKGATE_TEST_NODE_MODULES", "a node_modules folder with the libraries")?;
                let mut command = Command::new("node");
                command.arg(scripts.join("sign.mjs")).env("HOOKGATE_TEST_NODE_MODULES", modules);
                return Some(command);
            }
            Signer::PythonStandardLibrary => {
                let python = std::env::var("HOOKGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
                (python, "sign_documented.py")
            }
            Signer::NodeCrypto => ("node".to_owned(), "sign_documented.mjs"),
        };
        let mut command = Command::new(program);
        command.arg(scripts.join(script));
        Some(command)
    }
}

/// The exit status the signing scripts use for "this library is not installed".
const MISSING_LIBRARY: i32 = 3;

/// The name of the running test: the harness names each test's thread after it.
pub(crate) fn current_test() -> String {
    std::thread::current().name().unwrap_or("this test").to_owned()
}

/// Runs `signer` with `request` as JSON on its stdin and returns the JSON it printed, or `None`
/// after [`skip`] when the runtime or a library it needs is not on this machine.
pub(crate) fn run_signer(signer: Signer, request: &Value) -> Option<Value> {
    let test = current_test();
    let mut command = signer.command(&test)?;
    let child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            skip(&test, &format!("{:?} cannot be run ({error}), needed for {signer:?}", command.get_program()));
            return None;
        }
    };
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(MISSING_LIBRARY) {
        skip(&test, stderr.trim());
        return None;
    }
    assert!(output.status.success(), "{signer:?} failed ({}): {stderr}", output.status);
    let printed = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("{signer:?} printed no JSON ({error}): {}", String::from_utf8_lossy(&output.stdout))
    });
    Some(printed)
}

/// What the official library is asked to sign.
struct Signing<'a> {
    signer: Signer,
    /// The scheme as the signing script names it.
    scheme: &'a str,
    secret: &'a str,
    url: &'a str,
    body: &'a str,
}

/// The headers the library computed, or `None` (after [`skip`]) when the runtime or the
/// library is not on this machine.
fn sign_with_library(signing: &Signing<'_>) -> Option<Vec<(String, String)>> {
    let request = json!({"scheme": signing.scheme, "secret": signing.secret, "url": signing.url, "body": signing.body});
    let printed = run_signer(signing.signer, &request)?;
    let headers = printed["headers"].as_object().unwrap_or_else(|| panic!("no headers in {printed}"));
    Some(headers.iter().map(|(name, value)| (name.clone(), value.as_str().unwrap().to_owned())).collect())
}

/// A delivery as the platform sends it: the library's headers plus the platform's own.
struct Delivery<'a> {
    signing: Signing<'a>,
    content_type: &'a str,
    /// Headers the platform sends that are not part of the signature.
    other_headers: &'a [(&'a str, &'a str)],
    /// The body with one value changed after signing.
    tampered: &'a str,
}

async fn post(
    gateway: &Gateway,
    delivery: &Delivery<'_>,
    headers: &[(String, String)],
    body: &str,
) -> reqwest::Response {
    let mut request = gateway.http.post(delivery.signing.url).header("content-type", delivery.content_type);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    for (name, value) in delivery.other_headers {
        request = request.header(*name, *value);
    }
    request.body(body.to_owned()).send().await.unwrap()
}

/// Posts the library-signed delivery and expects 200, then the tampered body with the same
/// headers and expects 401 `signature_mismatch` with nothing more stored. Returns the reply to
/// the accepted request, or `None` when the library is not here.
async fn accepted_and_tampering_refused(gateway: &Gateway, delivery: Delivery<'_>) -> Option<Value> {
    let headers = sign_with_library(&delivery.signing)?;
    let response = post(gateway, &delivery, &headers, delivery.signing.body).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(
        status, 200,
        "hookgate refused what the {} library signed\nPOST {}\nheaders: {headers:?} {:?}\nbody: {}\nreply: {text}",
        delivery.signing.scheme, delivery.signing.url, delivery.other_headers, delivery.signing.body
    );
    let reply: Value = serde_json::from_str(&text).unwrap();
    let stored = gateway.admin_json("/api/events").await["data"].as_array().unwrap().len();

    let tampered = post(gateway, &delivery, &headers, delivery.tampered).await;
    let (code, _) = error_code(tampered, 401).await;
    assert_eq!(code, "signature_mismatch", "a tampered {} body", delivery.signing.scheme);
    assert_eq!(gateway.admin_json("/api/events").await["data"].as_array().unwrap().len(), stored);
    Some(reply)
}

#[tokio::test]
async fn stripe_accepts_what_the_stripe_library_signs() {
    let gateway = gateway().await;
    let url = gateway.url("/api/webhooks/stripe");
    let body = json!({"id": "evt_interop_1", "object": "event", "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_1", "amount": 2000, "currency": "eur"}}})
    .to_string();
    let delivery = Delivery {
        signing: Signing {
            signer: Signer::PythonLibraries,
            scheme: "stripe",
            secret: STRIPE_SECRET,
            url: &url,
            body: &body,
        },
        content_type: "application/json; charset=utf-8",
        other_headers: &[],
        tampered: &body.replace("2000", "2"),
    };
    let Some(reply) = accepted_and_tampering_refused(&gateway, delivery).await else { return };
    assert_eq!(reply["name"], "stripe.payment_intent.succeeded");
    let event = gateway.event(reply["id"].as_str().unwrap()).await;
    assert_eq!(event["data"]["data"]["object"]["amount"], 2000);
}

#[tokio::test]
async fn standard_webhooks_accepts_what_the_standardwebhooks_library_signs() {
    let gateway = gateway().await;
    let url = gateway.url("/api/webhooks/standard-webhooks");
    let body = json!({"type": "invoice.paid", "timestamp": "2024-05-01T12:00:00Z", "data": {"invoice": "in_7", "total": 4200}})
        .to_string();
    let delivery = Delivery {
        signing: Signing {
            signer: Signer::PythonLibraries,
            scheme: "standard-webhooks",
            secret: STANDARD_WEBHOOKS_SECRET,
            url: &url,
            body: &body,
        },
        content_type: "application/json",
        other_headers: &[],
        tampered: &body.replace("4200", "1"),
    };
    let Some(reply) = accepted_and_tampering_refused(&gateway, delivery).await else { return };
    assert_eq!(reply["name"], "standardwebhooks.invoice.paid");
    let event = gateway.event(reply["id"].as_str().unwrap()).await;
    assert_eq!(event["data"]["data"]["total"], 4200);
}

#[tokio::test]
async fn slack_accepts_what_the_slack_sdk_signs() {
    let gateway = gateway().await;
    let url = gateway.url("/api/webhooks/slack");
    let body = json!({"token": "XXYYZZ", "team_id": "T061EG9R6", "type": "event_callback", "event_id": "Ev0PV52K21",
        "event_time": 1_715_000_000, "event": {"type": "app_mention", "user": "U061F7AUR", "text": "<@U0LAN0Z89> is it everything a river should be?",
        "channel": "C0LAN2Q65"}})
    .to_string();
    let delivery = Delivery {
        signing: Signing {
            signer: Signer::PythonLibraries,
            scheme: "slack",
            secret: SLACK_SECRET,
            url: &url,
            body: &body,
        },
        content_type: "application/json",
        other_headers: &[],
        tampered: &body.replace("river", "ocean"),
    };
    let Some(reply) = accepted_and_tampering_refused(&gateway, delivery).await else { return };
    assert_eq!(reply["name"], "slack.app_mention");
    let event = gateway.event(reply["id"].as_str().unwrap()).await;
    assert_eq!(event["data"]["event"]["channel"], "C0LAN2Q65");
}

#[tokio::test]
async fn twilio_accepts_what_the_twilio_request_validator_signs() {
    let gateway = gateway().await;
    let url = gateway.url("/api/webhooks/twilio?tenant=shop");
    let body = "MessageSid=SM1f0e8ae6ade43cb3c0ce4525424e404f&AccountSid=AC00000000000000000000000000000000\
                &From=%2B15017122661&To=%2B15558675310&Body=Hello+%26+welcome%21&SmsStatus=delivered\
                &MessageStatus=delivered&ApiVersion=2010-04-01";
    let delivery = Delivery {
        signing: Signing {
            signer: Signer::PythonLibraries,
            scheme: "twilio",
            secret: TWILIO_AUTH_TOKEN,
            url: &url,
            body,
        },
        content_type: "application/x-www-form-urlencoded",
        other_headers: &[("i-twilio-idempotency-token", "7c9f4d2b-3e1a-4b8c-9d0e-1f2a3b4c5d6e")],
        tampered: &body.replace("SmsStatus=delivered", "SmsStatus=failed"),
    };
    let Some(reply) = accepted_and_tampering_refused(&gateway, delivery).await else { return };
    assert_eq!(reply["name"], "twilio.delivered");
    let event = gateway.event(reply["id"].as_str().unwrap()).await;
    assert_eq!(event["data"]["Body"], "Hello & welcome!");
    assert_eq!(event["data"]["From"], "+15017122661");
}

#[tokio::test]
async fn twilio_accepts_the_hmac_sha256_shared_key_signature() {
    let gateway = gateway().await;
    let url = gateway.url("/api/webhooks/twilio");
    let body = "MessageSid=SM1&SmsStatus=delivered&Body=Hi";
    let delivery = Delivery {
        signing: Signing {
            signer: Signer::PythonLibraries,
            scheme: "twilio-hmac-sha256",
            secret: TWILIO_AUTH_TOKEN,
            url: &url,
            body,
        },
        content_type: "application/x-www-form-urlencoded",
        other_headers: &[],
        tampered: &body.replace("Body=Hi", "Body=Ho"),
    };
    let Some(reply) = accepted_and_tampering_refused(&gateway, delivery).await else { return };
    assert_eq!(reply["name"], "twilio.delivered");
}

/// A HubSpot batch as its webhooks send them, signed with `version` by HubSpot's Python SDK.
async fn hubspot_accepts(version: &str, scheme: &str) {
    let gateway = gateway().await;
    let url = gateway.url("/api/webhooks/hubspot?portalId=62515");
    let body = json!([
        {"eventId": 1001, "subscriptionId": 25, "portalId": 62515, "appId": 7, "occurredAt": 1_715_000_000_000_i64,
         "subscriptionType": "contact.creation", "attemptNumber": 0, "objectId": 123, "changeSource": "CRM"},
        {"eventId": 1002, "subscriptionId": 26, "portalId": 62515, "appId": 7, "occurredAt": 1_715_000_000_500_i64,
         "subscriptionType": "contact.propertyChange", "attemptNumber": 0, "objectId": 123,
         "propertyName": "email", "propertyValue": "ada@example.com", "changeSource": "CRM"}
    ])
    .to_string();
    let delivery = Delivery {
        signing: Signing { signer: Signer::PythonLibraries, scheme, secret: HUBSPOT_SECRET, url: &url, body: &body },
        content_type: "application/json",
        other_headers: &[],
        tampered: &body.replace("ada@example.com", "eve@example.com"),
    };
    let Some(reply) = accepted_and_tampering_refused(&gateway, delivery).await else { return };
    let names: Vec<&str> = reply["events"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hubspot.contact.creation", "hubspot.contact.propertyChange"], "signature {version}");
    let second = gateway.event(reply["events"][1]["id"].as_str().unwrap()).await;
    assert_eq!(second["data"]["propertyValue"], "ada@example.com");
}

#[tokio::test]
async fn hubspot_accepts_what_the_hubspot_sdk_signs_with_v3() {
    hubspot_accepts("v3", "hubspot").await;
}

#[tokio::test]
async fn hubspot_accepts_what_the_hubspot_sdk_signs_with_v2() {
    hubspot_accepts("v2", "hubspot-v2").await;
}

#[tokio::test]
async fn hubspot_accepts_what_the_hubspot_sdk_signs_with_v1() {
    hubspot_accepts("v1", "hubspot-v1").await;
}

#[tokio::test]
async fn github_accepts_what_octokit_webhooks_methods_signs() {
    let gateway = gateway().await;
    let url = gateway.url("/api/webhooks/github");
    let body = json!({"action": "opened", "number": 7, "pull_request": {"number": 7, "title": "Add interop tests"},
        "repository": {"full_name": "octo-org/hookgate"}, "sender": {"login": "octocat"}})
    .to_string();
    let delivery = Delivery {
        signing: Signing {
            signer: Signer::NodeLibraries,
            scheme: "github",
            secret: GITHUB_SECRET,
            url: &url,
            body: &body,
        },
        content_type: "application/json",
        other_headers: &[
            ("x-github-event", "pull_request"),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("x-github-hook-id", "292430182"),
            ("user-agent", "GitHub-Hookshot/044aadd"),
        ],
        tampered: &body.replace("opened", "closed"),
    };
    let Some(reply) = accepted_and_tampering_refused(&gateway, delivery).await else { return };
    assert_eq!(reply["name"], "github.pull_request.opened");
    let event = gateway.event(reply["id"].as_str().unwrap()).await;
    assert_eq!(event["data"]["pull_request"]["title"], "Add interop tests");
}
