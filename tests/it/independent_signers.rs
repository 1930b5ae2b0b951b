//! The schemes without published test vectors, checked against a second reading of each
//! platform's documentation: `tests/interop/sign_documented.py` (Python's standard library
//! only: `hmac`, `hashlib`, `base64`) and `tests/interop/sign_documented.mjs` (Node's built-in
//! Ed25519 and ECDSA, with key pairs it generates) sign each request as the platform's own
//! pages describe, sharing no code with hookgate. The shipped definition in
//! `hook-definitions/sources/` receives it through the real gateway and must accept it and
//! name it; the same request signed with another secret (another key pair for the public-key
//! schemes), and the request with a signed value changed, must be refused with
//! `signature_mismatch` and store nothing.
//!
//! Python (`HOOKGATE_TEST_PYTHON`, else `python3`) and Node (`node`) are on every machine of the
//! project's kind; where one is missing the test goes through `support::skip`, a failure under
//! `HOOKGATE_TEST_STRICT=1`.

use serde_json::{Value, json};

use crate::interop::{Signer, run_signer};
use crate::support::*;

/// The shipped definition of one platform.
fn shipped(source: &str) -> Value {
    let path = format!("{}/hook-definitions/sources/{source}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The `source` object of a definition's only hook.
fn source_of(definition: &Value) -> &Value {
    &definition["hooks"][0]["source"]
}

/// A gateway serving `definition`, whose first secret reference (`${NAME}`) is set to `secret`
/// (and a Meta `verifyToken` reference to a token of its own).
async fn gateway_with(definition: &Value, secret: &str) -> Gateway {
    let variable =
        |reference: &Value| reference.as_str().unwrap().trim_start_matches("${").trim_end_matches('}').to_owned();
    let source = source_of(definition);
    let mut env = vec![(variable(&source["secrets"][0]), secret.to_owned())];
    if let Some(reference) = source.get("verifyToken") {
        env.push((variable(reference), "a-verify-token".to_owned()));
    }
    Gateway::start_with(Options { definitions: vec![("platform.json".into(), definition.clone())], env }).await
}

/// A request as the platform sends it, as the signing script printed it.
#[derive(Clone, Debug)]
struct Signed {
    url: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Signed {
    fn from_printed(printed: &Value) -> Signed {
        let headers = printed["headers"].as_object().unwrap_or_else(|| panic!("no headers in {printed}"));
        Signed {
            url: printed["url"].as_str().unwrap().to_owned(),
            headers: headers.iter().map(|(name, value)| (name.clone(), value.as_str().unwrap().to_owned())).collect(),
            body: printed["body"].as_str().unwrap().to_owned(),
        }
    }

    /// The same request with `from` replaced by `to` in the body, after signing.
    #[track_caller]
    fn body_replaced(&self, from: &str, to: &str) -> Signed {
        assert!(self.body.contains(from), "{from:?} is not in the signed body {}", self.body);
        Signed { body: self.body.replace(from, to), ..self.clone() }
    }
}

/// What hookgate is configured with and what the platform signs with.
struct Keys {
    /// The source's secret: a shared secret, or the platform's public key.
    configured: String,
    /// What the platform signs with: the same shared secret, or the private key.
    signing: String,
    /// A secret or private key that is not the configured one's.
    other: String,
}

impl Keys {
    fn shared(secret: &str) -> Keys {
        Keys { configured: secret.to_owned(), signing: secret.to_owned(), other: format!("{secret}-other") }
    }

    /// Two fresh key pairs from the Node signer: the first is configured and signs, the
    /// second's private key is the other.
    fn generated(scheme: &str) -> Option<Keys> {
        let keypair = || run_signer(Signer::NodeCrypto, &json!({"scheme": scheme, "operation": "keypair"}));
        let (first, second) = (keypair()?, keypair()?);
        let text = |pair: &Value, name: &str| pair[name].as_str().unwrap().to_owned();
        assert_ne!(text(&first, "publicKey"), text(&second, "publicKey"), "two fresh key pairs");
        Some(Keys {
            configured: text(&first, "publicKey"),
            signing: text(&first, "privateKey"),
            other: text(&second, "privateKey"),
        })
    }
}

/// One platform's check.
struct Case<'a> {
    /// A definition with one hook whose source names the scheme.
    definition: Value,
    signer: Signer,
    /// The scheme as the signing script names it.
    scheme: String,
    keys: Keys,
    content_type: &'a str,
    body: &'a str,
    /// Headers the platform sends that no signature covers.
    other_headers: &'a [(&'a str, &'a str)],
    /// The signed request with a signed value changed; `None` for the schemes that sign no
    /// content (a token or credentials in the request), where only another secret is refused.
    tamper: Option<fn(&Signed) -> Signed>,
}

impl Case<'_> {
    /// The request the signing script makes for `url` with `key`, or `None` after a skip.
    fn sign(&self, url: &str, key: &str) -> Option<Signed> {
        let mut request = json!({"scheme": self.scheme, "secret": key, "url": url, "body": self.body});
        if let Some(hmac) = source_of(&self.definition).get("hmac") {
            request["hmac"] = hmac.clone();
        }
        run_signer(self.signer, &request).map(|printed| Signed::from_printed(&printed))
    }

    async fn post(&self, gateway: &Gateway, signed: &Signed) -> reqwest::Response {
        post(gateway, self.content_type, signed, self.other_headers).await
    }

    /// Posts the independently signed request and expects 200; then the request signed with
    /// the other key, and the tampered one, each expecting 401 `signature_mismatch` and nothing
    /// more stored. Returns the gateway and the reply to the accepted request, or `None` when
    /// the signer cannot run here.
    async fn accepted_and_forgeries_refused(self) -> Option<(Gateway, Value)> {
        let gateway = gateway_with(&self.definition, &self.keys.configured).await;
        let path = source_of(&self.definition)["path"].as_str().unwrap();
        let url = gateway.url(&format!("/api/webhooks/{path}"));
        let signed = self.sign(&url, &self.keys.signing)?;
        let response = self.post(&gateway, &signed).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(
            status, 200,
            "hookgate refused the documented {} signature\n{signed:#?}\nreply: {text}",
            self.scheme
        );
        let reply: Value = serde_json::from_str(&text).unwrap();
        let stored = stored_events(&gateway).await;

        let mut forgeries = vec![("signed with another key", self.sign(&url, &self.keys.other)?)];
        if let Some(tamper) = self.tamper {
            forgeries.push(("changed after signing", tamper(&signed)));
        }
        for (what, forged) in forgeries {
            let response = self.post(&gateway, &forged).await;
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 401, "{} {what}: {body}\n{forged:#?}", self.scheme);
            assert_eq!(body["error"]["code"], "signature_mismatch", "{} {what}", self.scheme);
        }
        assert_eq!(stored_events(&gateway).await, stored, "a refused {} request stored nothing", self.scheme);
        Some((gateway, reply))
    }
}

/// Posts `signed` as `content_type`, with `other_headers` beside its own.
async fn post(
    gateway: &Gateway,
    content_type: &str,
    signed: &Signed,
    other_headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = gateway.http.post(&signed.url).header("content-type", content_type);
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    for (name, value) in other_headers {
        request = request.header(*name, *value);
    }
    request.body(signed.body.clone()).send().await.unwrap()
}

async fn stored_events(gateway: &Gateway) -> usize {
    gateway.admin_json("/api/events").await["data"].as_array().unwrap().len()
}

/// The stored event a single-event reply names.
async fn stored_event(gateway: &Gateway, reply: &Value) -> Value {
    gateway.event(reply["id"].as_str().unwrap_or_else(|| panic!("no id in {reply}"))).await
}

/// A platform with a shared secret (a MAC key, a token or credentials), signed by the Python
/// reading of its documentation.
fn shared_secret_case<'a>(
    source: &str,
    secret: &str,
    body: &'a str,
    tamper: Option<fn(&Signed) -> Signed>,
) -> Case<'a> {
    let definition = shipped(source);
    let scheme = source_of(&definition)["scheme"].as_str().unwrap().to_owned();
    Case {
        definition,
        signer: Signer::PythonStandardLibrary,
        scheme,
        keys: Keys::shared(secret),
        content_type: "application/json",
        body,
        other_headers: &[],
        tamper,
    }
}

#[tokio::test]
async fn calendly_accepts_what_calendlys_documentation_signs() {
    let body = json!({"event": "invitee.created", "created_at": "2024-05-01T12:00:00.000000Z",
        "payload": {"email": "ada@example.com", "name": "Ada Lovelace", "status": "active"}})
    .to_string();
    let case = shared_secret_case(
        "calendly",
        "calendly-signing-key-9f2c",
        &body,
        Some(|signed| signed.body_replaced("ada@example.com", "eve@example.com")),
    );
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "calendly.invitee.created");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["payload"]["email"], "ada@example.com");
}

#[tokio::test]
async fn zoom_accepts_what_zooms_documentation_signs() {
    let body = json!({"event": "meeting.started", "event_ts": 1_715_000_000_000_i64,
        "payload": {"account_id": "AAAAAABBBB", "object": {"id": "85743621", "topic": "Standup"}}})
    .to_string();
    let case = shared_secret_case(
        "zoom",
        "zoom-secret-token-41a7",
        &body,
        Some(|signed| signed.body_replaced("Standup", "Retro")),
    );
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "zoom.meeting.started");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["payload"]["object"]["topic"], "Standup");
}

#[tokio::test]
async fn zoom_url_validation_is_answered_with_the_token_zooms_documentation_expects() {
    let secret = "zoom-secret-token-41a7";
    let definition = shipped("zoom");
    let gateway = gateway_with(&definition, secret).await;
    let url = gateway.url("/api/webhooks/zoom");
    let body = json!({"event": "endpoint.url_validation", "event_ts": 1_715_000_000_000_i64,
        "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}})
    .to_string();
    let sign = |key: &str| {
        let request = json!({"scheme": "zoom-url-validation", "secret": key, "url": url, "body": body});
        run_signer(Signer::PythonStandardLibrary, &request)
    };
    let Some(printed) = sign(secret) else { return };
    let response = post(&gateway, "application/json", &Signed::from_printed(&printed), &[]).await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply, printed["reply"], "the answer Zoom's documentation computes");

    let Some(forged) = sign("another-secret-token") else { return };
    let (code, _) =
        error_code(post(&gateway, "application/json", &Signed::from_printed(&forged), &[]).await, 401).await;
    assert_eq!(code, "signature_mismatch", "a validation request signed with another secret token is not answered");
    assert_eq!(stored_events(&gateway).await, 0, "a handshake is not an event");
}

#[tokio::test]
async fn mailgun_accepts_what_mailguns_documentation_signs() {
    let body = json!({"event-data": {"event": "delivered", "id": "CPgfbmQMTCKtHW6uIWtuVe",
        "timestamp": 1_715_000_000.5, "recipient": "ada@example.com",
        "message": {"headers": {"message-id": "20240501.1@mg.example.com"}}}})
    .to_string();
    // Mailgun signs its timestamp and token, not the event data: the forgery changes the token.
    let tamper: fn(&Signed) -> Signed = |signed| {
        let mut body: Value = serde_json::from_str(&signed.body).unwrap();
        body["signature"]["token"] = json!("a-token-mailgun-never-signed-0000000000000000000000");
        Signed { body: body.to_string(), ..signed.clone() }
    };
    let case = shared_secret_case("mailgun", "key-mailgun-signing-7d3e", &body, Some(tamper));
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "mailgun.delivered");
    let event = stored_event(&gateway, &reply).await;
    assert_eq!(event["data"]["event-data"]["recipient"], "ada@example.com");
}

#[tokio::test]
async fn intercom_accepts_what_intercoms_documentation_signs() {
    let body = json!({"type": "notification_event", "id": "notif_78c122d0-23ba-11e4-9464-79b01267cc2e",
        "topic": "conversation.user.created", "app_id": "a86dr8yl",
        "data": {"type": "notification_event_data", "item": {"type": "conversation", "id": "147"}}})
    .to_string();
    let case = shared_secret_case(
        "intercom",
        "intercom-client-secret-0c5a",
        &body,
        Some(|signed| signed.body_replaced("147", "148")),
    );
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "intercom.conversation.user.created");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["data"]["item"]["id"], "147");
}

#[tokio::test]
async fn zendesk_accepts_what_zendesks_documentation_signs() {
    let body = json!({"id": "01HXZ3S1K2", "type": "zen:event-type:ticket.created", "subject": "zen:ticket:35",
        "detail": {"id": "35", "priority": "HIGH", "subject": "Printer on fire"}})
    .to_string();
    // Zendesk's signing secrets look like base64; the HMAC key is the text as shown, not decoded.
    let case = shared_secret_case(
        "zendesk",
        "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==",
        &body,
        Some(|signed| signed.body_replaced("HIGH", "LOW")),
    );
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "zendesk.zen.event-type.ticket.created");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["detail"]["priority"], "HIGH");
}

#[tokio::test]
async fn linear_accepts_what_linears_documentation_signs() {
    // The signer sets webhookTimestamp to its own clock, as Linear does.
    let body = json!({"action": "create", "type": "Issue", "createdAt": "2024-05-01T12:00:00.000Z",
        "data": {"id": "9f1b6c1e", "identifier": "ENG-42", "title": "Flaky deploy"}, "url": "https://linear.app/acme/issue/ENG-42"})
    .to_string();
    let mut case = shared_secret_case(
        "linear",
        "lin_wh_signing_secret_51be",
        &body,
        Some(|signed| signed.body_replaced("Flaky", "Fixed")),
    );
    case.other_headers = &[("linear-delivery", "234d1a4e-b617-4388-90fe-adc3633d6b72"), ("linear-event", "Issue")];
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "linear.Issue.create");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["data"]["identifier"], "ENG-42");
}

#[tokio::test]
async fn typeform_accepts_what_typeforms_documentation_signs() {
    let body = json!({"event_id": "01HXZ4ABCD", "event_type": "form_response",
        "form_response": {"form_id": "lT4Z3j", "answers": [{"type": "text", "text": "Lovely"}]}})
    .to_string();
    let case = shared_secret_case(
        "typeform",
        "typeform-secret-e81f",
        &body,
        Some(|signed| signed.body_replaced("Lovely", "Awful")),
    );
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "typeform.form_response");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["form_response"]["answers"][0]["text"], "Lovely");
}

#[tokio::test]
async fn meta_accepts_what_metas_documentation_signs_over_the_escaped_payload() {
    // Meta sends non-ASCII characters escaped, and signs the payload as sent.
    let body = r#"{"object":"page","entry":[{"id":"1234","time":1715000000,"messaging":[{"message":{"text":"Caf\u00e9 ouvert?"}}]}]}"#;
    let case = shared_secret_case(
        "meta",
        "meta-app-secret-3b9d",
        body,
        Some(|signed| signed.body_replaced("ouvert", "ferme")),
    );
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "meta.page");
    let event = stored_event(&gateway, &reply).await;
    assert_eq!(event["data"]["entry"][0]["messaging"][0]["message"]["text"], "Café ouvert?");
}

#[tokio::test]
async fn gitlab_accepts_the_secret_token_header_gitlabs_documentation_describes() {
    let body = json!({"object_kind": "merge_request", "event_type": "merge_request",
        "object_attributes": {"iid": 7, "title": "Add interop tests"}})
    .to_string();
    let mut case = shared_secret_case("gitlab", "gitlab-secret-token-6e02", &body, None);
    case.other_headers =
        &[("x-gitlab-event", "Merge Request Hook"), ("x-gitlab-event-uuid", "13792a34-cac6-4fda-95a8")];
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "gitlab.merge_request");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["object_attributes"]["iid"], 7);
}

#[tokio::test]
async fn postmark_accepts_the_basic_credentials_of_its_documented_webhook_url() {
    let body = json!({"RecordType": "Delivery", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": "ada@example.com", "DeliveredAt": "2024-05-01T12:00:00Z"})
    .to_string();
    let case = shared_secret_case("postmark", "postmark-hooks:p4ss:w0rd with spaces", &body, None);
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "postmark.Delivery");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["Recipient"], "ada@example.com");
}

#[tokio::test]
async fn url_token_accepts_a_token_with_reserved_characters_as_a_client_encodes_it() {
    let body = json!({"id": "r1", "event": "purchase", "payload": [{"sku": "TEA-1"}]}).to_string();
    let case = shared_secret_case("commerce", "t0k+en/=&?x y%", &body, None);
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "commerce.purchase");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["payload"][0]["sku"], "TEA-1");
}

#[tokio::test]
async fn generic_hmac_accepts_the_shipped_apex_format_as_documented() {
    let body = json!({"id": "ld_51", "event": "lead.created", "lead": {"email": "ada@example.com"}}).to_string();
    let case =
        shared_secret_case("apex", "apex-shared-secret-2d4f", &body, Some(|signed| signed.body_replaced("ada", "eve")));
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "apex.lead.created");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["lead"]["email"], "ada@example.com");
}

#[tokio::test]
async fn generic_hmac_accepts_every_template_placeholder_as_documented() {
    let definition = json!({"app": "acme", "version": "1", "hooks": [{"eventName": "acme.event", "type": "web",
        "source": {"path": "acme", "scheme": "generic-hmac", "secrets": ["${ACME_SECRET}"], "eventName": "acme.{$.kind}",
            "hmac": {"header": "X-Acme-Signature", "algorithm": "sha512", "encoding": "base64", "prefix": "v1=",
                "signed": "{id}|{timestamp}|{method} {url}|{body}",
                "timestampHeader": "X-Acme-Timestamp", "idHeader": "X-Acme-Delivery"}}}]});
    // The body holds a placeholder's text: it is signed as written, not expanded.
    let body = json!({"kind": "order.paid", "note": "literal {timestamp} text", "total": 4200}).to_string();
    let case = Case {
        definition,
        signer: Signer::PythonStandardLibrary,
        scheme: "generic-hmac".to_owned(),
        keys: Keys::shared("acme-secret-88c1"),
        content_type: "application/json",
        body: &body,
        other_headers: &[],
        tamper: Some(|signed| signed.body_replaced("4200", "42")),
    };
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "acme.order.paid");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["note"], "literal {timestamp} text");
}

/// A public-key platform, signed by the Node reading of its documentation with a fresh key pair.
fn public_key_case<'a>(source: &str, scheme: &str, body: &'a str, tamper: fn(&Signed) -> Signed) -> Option<Case<'a>> {
    Some(Case {
        definition: shipped(source),
        signer: Signer::NodeCrypto,
        scheme: scheme.to_owned(),
        keys: Keys::generated(scheme)?,
        content_type: "application/json",
        body,
        other_headers: &[],
        tamper: Some(tamper),
    })
}

#[tokio::test]
async fn discord_accepts_a_fresh_key_pair_signed_as_documented_and_refuses_another() {
    let body = json!({"type": 2, "id": "1234567890", "application_id": "42",
        "data": {"id": "77", "name": "roll", "options": [{"name": "sides", "value": 20}]}, "token": "interaction-token", "version": 1})
    .to_string();
    let Some(case) = public_key_case("discord", "discord", &body, |signed| signed.body_replaced("20", "6")) else {
        return;
    };
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "discord.interaction.2");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["data"]["options"][0]["value"], 20);
}

#[tokio::test]
async fn sendgrid_accepts_a_fresh_key_pair_signed_as_documented_and_refuses_another() {
    // SendGrid's event batches end with CR LF, and the signature covers them.
    let body = format!(
        "{}\r\n",
        json!([
            {"email": "ada@example.com", "event": "delivered", "sg_event_id": "ZGVsaXZlcmVkLTA", "timestamp": 1_715_000_000},
            {"email": "ada@example.com", "event": "open", "sg_event_id": "b3Blbi0x", "timestamp": 1_715_000_060}
        ])
    );
    let Some(case) = public_key_case("sendgrid", "sendgrid", &body, |signed| signed.body_replaced("open", "click"))
    else {
        return;
    };
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    let names: Vec<&str> = reply["events"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sendgrid.delivered", "sendgrid.open"]);
    assert_eq!(stored_event(&gateway, &reply["events"][1]).await["data"]["sg_event_id"], "b3Blbi0x");
}

#[tokio::test]
async fn standard_webhooks_accepts_a_fresh_v1a_key_pair_signed_as_specified_and_refuses_another() {
    let body = json!({"type": "invoice.paid", "timestamp": "2024-05-01T12:00:00Z", "data": {"invoice": "in_7", "total": 4200}})
        .to_string();
    let Some(case) = public_key_case("standard-webhooks", "standard-webhooks-v1a", &body, |signed| {
        signed.body_replaced("4200", "1")
    }) else {
        return;
    };
    let Some((gateway, reply)) = case.accepted_and_forgeries_refused().await else { return };
    assert_eq!(reply["name"], "standardwebhooks.invoice.paid");
    assert_eq!(stored_event(&gateway, &reply).await["data"]["data"]["total"], 4200);
}
