//! Every platform definition shipped in `hook-definitions/sources/` works as shipped: a request
//! signed the way the platform documents it is accepted and named as documented, and the same
//! request signed with a wrong secret (for the public-key schemes, Discord and SendGrid, with
//! another key pair) is refused with `signature_mismatch`. The key pairs are fresh for each run.
//! The requests are signed here with the primitives' crates, not with hookgate's code;
//! `independent_signers` checks the schemes without published vectors against a second
//! reading of the documentation in Python and Node.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

use crate::support::*;

fn mac<D: hmac::digest::Digest + hmac::digest::block_api::EagerHash>(key: &[u8], message: &[u8]) -> Vec<u8>
where
    Hmac<D>: KeyInit + Mac,
{
    let mut mac = <Hmac<D> as KeyInit>::new_from_slice(key).unwrap();
    Mac::update(&mut mac, message);
    mac.finalize().into_bytes().to_vec()
}

fn sha256(key: &str, message: &str) -> Vec<u8> {
    mac::<sha2::Sha256>(key.as_bytes(), message.as_bytes())
}

fn sha1(key: &str, message: &str) -> Vec<u8> {
    mac::<sha1::Sha1>(key.as_bytes(), message.as_bytes())
}

/// A request to one shipped source.
struct Signed {
    /// Path and query after the gateway's base URL.
    path: String,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

/// One platform: the secret variable its definition names, a secret, a payload, how the
/// platform signs it, and the event name the definition gives it.
struct Platform {
    source: &'static str,
    variable: &'static str,
    secret: String,
    sign: fn(&str, &Context) -> Signed,
    expected_name: &'static str,
}

/// What a signer needs to know: the gateway, the time, and the private keys of the platforms
/// that sign with a key pair.
struct Context {
    base: String,
    now: i64,
    discord: ed25519_dalek::SigningKey,
    sendgrid: p256::ecdsa::SigningKey,
}

impl Context {
    /// Fresh key pairs for the public-key platforms.
    fn with_fresh_keys(base: String, now: i64) -> Context {
        Context {
            base,
            now,
            discord: ed25519_dalek::SigningKey::from_bytes(&rand::random()),
            // A random 32-byte scalar is below P-256's order but for a chance of about 2^-32.
            sendgrid: p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>()).expect("a P-256 scalar"),
        }
    }
}

fn json_request(path: &str, body: Value, headers: Vec<(&'static str, String)>) -> Signed {
    Signed { path: path.to_owned(), content_type: "application/json", headers, body: body.to_string() }
}

fn platforms(context: &Context) -> Vec<Platform> {
    let discord_public = hex::encode(context.discord.verifying_key().to_bytes());
    // SubjectPublicKeyInfo for a P-256 key is a fixed prefix and the uncompressed point.
    let point = context.sendgrid.verifying_key().to_sec1_point(false);
    let spki =
        [hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap(), point.as_bytes().to_vec()]
            .concat();
    let sendgrid_public = BASE64.encode(spki);
    let whsec = format!("whsec_{}", BASE64.encode(b"standard-webhooks-key-bytes-0001"));
    vec![
        Platform {
            source: "stripe",
            variable: "STRIPE_WEBHOOK_SECRET",
            secret: "whsec_stripe".into(),
            expected_name: "stripe.invoice.paid",
            sign: |secret, c| {
                let body = json!({"id": "evt_1", "type": "invoice.paid"}).to_string();
                let signature = format!("t={},v1={}", c.now, hex::encode(sha256(secret, &format!("{}.{body}", c.now))));
                Signed {
                    path: "/api/webhooks/stripe".into(),
                    content_type: "application/json",
                    headers: vec![("stripe-signature", signature)],
                    body,
                }
            },
        },
        Platform {
            source: "github",
            variable: "GITHUB_WEBHOOK_SECRET",
            secret: "gh".into(),
            expected_name: "github.issues.opened",
            sign: |secret, _| {
                let body = json!({"action": "opened"}).to_string();
                let signature = format!("sha256={}", hex::encode(sha256(secret, &body)));
                json_request(
                    "/api/webhooks/github",
                    json!({"action": "opened"}),
                    vec![
                        ("x-hub-signature-256", signature),
                        ("x-github-event", "issues".into()),
                        ("x-github-delivery", "d-1".into()),
                    ],
                )
            },
        },
        Platform {
            source: "hubspot",
            variable: "HUBSPOT_CLIENT_SECRET",
            secret: "hs".into(),
            expected_name: "hubspot.deal.creation",
            sign: |secret, c| {
                let body = json!([{"eventId": 1, "subscriptionType": "deal.creation"}]).to_string();
                let millis = (c.now * 1000).to_string();
                let signature =
                    BASE64.encode(sha256(secret, &format!("POST{}/api/webhooks/hubspot{body}{millis}", c.base)));
                Signed {
                    path: "/api/webhooks/hubspot".into(),
                    content_type: "application/json",
                    headers: vec![("x-hubspot-signature-v3", signature), ("x-hubspot-request-timestamp", millis)],
                    body,
                }
            },
        },
        Platform {
            source: "shopify",
            variable: "SHOPIFY_WEBHOOK_SECRET",
            secret: "shp".into(),
            expected_name: "shopify.orders.paid",
            sign: |secret, _| {
                let body = json!({"id": 1}).to_string();
                json_request(
                    "/api/webhooks/shopify",
                    json!({"id": 1}),
                    vec![
                        ("x-shopify-hmac-sha256", BASE64.encode(sha256(secret, &body))),
                        ("x-shopify-topic", "orders/paid".into()),
                        ("x-shopify-webhook-id", "w-1".into()),
                    ],
                )
            },
        },
        Platform {
            source: "slack",
            variable: "SLACK_SIGNING_SECRET",
            secret: "sl".into(),
            expected_name: "slack.app_mention",
            sign: |secret, c| {
                let body =
                    json!({"type": "event_callback", "event_id": "Ev1", "event": {"type": "app_mention"}}).to_string();
                let signature = format!("v0={}", hex::encode(sha256(secret, &format!("v0:{}:{body}", c.now))));
                Signed {
                    path: "/api/webhooks/slack".into(),
                    content_type: "application/json",
                    headers: vec![("x-slack-signature", signature), ("x-slack-request-timestamp", c.now.to_string())],
                    body,
                }
            },
        },
        Platform {
            source: "standard-webhooks",
            variable: "STANDARD_WEBHOOKS_SECRET",
            secret: whsec,
            expected_name: "standardwebhooks.user.created",
            sign: |secret, c| {
                let body = json!({"type": "user.created"}).to_string();
                let key =
                    BASE64.decode(secret.trim_start_matches("whsec_")).unwrap_or_else(|_| secret.as_bytes().to_vec());
                let signature = format!(
                    "v1,{}",
                    BASE64.encode(mac::<sha2::Sha256>(&key, format!("msg_1.{}.{body}", c.now).as_bytes()))
                );
                Signed {
                    path: "/api/webhooks/standard-webhooks".into(),
                    content_type: "application/json",
                    headers: vec![
                        ("webhook-id", "msg_1".into()),
                        ("webhook-timestamp", c.now.to_string()),
                        ("webhook-signature", signature),
                    ],
                    body,
                }
            },
        },
        Platform {
            source: "twilio",
            variable: "TWILIO_AUTH_TOKEN",
            secret: "tw".into(),
            expected_name: "twilio.delivered",
            sign: |secret, c| {
                let body = "MessageSid=SM1&SmsStatus=delivered".to_owned();
                let signature = BASE64.encode(sha1(
                    secret,
                    &format!("{}/api/webhooks/twilio{}", c.base, "MessageSidSM1SmsStatusdelivered"),
                ));
                Signed {
                    path: "/api/webhooks/twilio".into(),
                    content_type: "application/x-www-form-urlencoded",
                    headers: vec![("x-twilio-signature", signature)],
                    body,
                }
            },
        },
        Platform {
            source: "square",
            variable: "SQUARE_SIGNATURE_KEY",
            secret: "sq".into(),
            expected_name: "square.payment.updated",
            sign: |secret, c| {
                let body = json!({"type": "payment.updated", "event_id": "e1"}).to_string();
                let signature = BASE64.encode(sha256(secret, &format!("{}/api/webhooks/square{body}", c.base)));
                Signed {
                    path: "/api/webhooks/square".into(),
                    content_type: "application/json",
                    headers: vec![("x-square-hmacsha256-signature", signature)],
                    body,
                }
            },
        },
        Platform {
            source: "paddle",
            variable: "PADDLE_WEBHOOK_SECRET",
            secret: "pd".into(),
            expected_name: "paddle.transaction.completed",
            sign: |secret, c| {
                let body = json!({"event_id": "evt_1", "event_type": "transaction.completed"}).to_string();
                let signature =
                    format!("ts={};h1={}", c.now, hex::encode(sha256(secret, &format!("{}:{body}", c.now))));
                Signed {
                    path: "/api/webhooks/paddle".into(),
                    content_type: "application/json",
                    headers: vec![("paddle-signature", signature)],
                    body,
                }
            },
        },
        Platform {
            source: "sendgrid",
            variable: "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY",
            secret: sendgrid_public,
            expected_name: "sendgrid.delivered",
            sign: |_, c| {
                use p256::ecdsa::signature::Signer;
                let body = json!([{"event": "delivered", "sg_event_id": "sg1"}]).to_string();
                let signature: p256::ecdsa::Signature = c.sendgrid.sign(format!("{}{body}", c.now).as_bytes());
                Signed {
                    path: "/api/webhooks/sendgrid".into(),
                    content_type: "application/json",
                    headers: vec![
                        ("x-twilio-email-event-webhook-signature", BASE64.encode(signature.to_der().as_bytes())),
                        ("x-twilio-email-event-webhook-timestamp", c.now.to_string()),
                    ],
                    body,
                }
            },
        },
        Platform {
            source: "mailgun",
            variable: "MAILGUN_WEBHOOK_SIGNING_KEY",
            secret: "mg".into(),
            expected_name: "mailgun.delivered",
            sign: |secret, c| {
                let signature = hex::encode(sha256(secret, &format!("{}tok", c.now)));
                json_request(
                    "/api/webhooks/mailgun",
                    json!({"signature": {"timestamp": c.now.to_string(), "token": "tok", "signature": signature}, "event-data": {"event": "delivered", "id": "m1"}}),
                    vec![],
                )
            },
        },
        Platform {
            source: "intercom",
            variable: "INTERCOM_CLIENT_SECRET",
            secret: "ic".into(),
            expected_name: "intercom.conversation.user.created",
            sign: |secret, _| {
                let body = json!({"id": "n1", "topic": "conversation.user.created"});
                json_request(
                    "/api/webhooks/intercom",
                    body.clone(),
                    vec![("x-hub-signature", format!("sha1={}", hex::encode(sha1(secret, &body.to_string()))))],
                )
            },
        },
        Platform {
            source: "zendesk",
            variable: "ZENDESK_WEBHOOK_SECRET",
            secret: "zd".into(),
            expected_name: "zendesk.zen.ticket.created",
            sign: |secret, c| {
                let body = json!({"id": "z1", "type": "zen:ticket:created"});
                let at = jiff::Timestamp::from_second(c.now).unwrap().to_string();
                json_request(
                    "/api/webhooks/zendesk",
                    body.clone(),
                    vec![
                        ("x-zendesk-webhook-signature", BASE64.encode(sha256(secret, &format!("{at}{body}")))),
                        ("x-zendesk-webhook-signature-timestamp", at),
                    ],
                )
            },
        },
        Platform {
            source: "linear",
            variable: "LINEAR_WEBHOOK_SECRET",
            secret: "ln".into(),
            expected_name: "linear.Issue.create",
            sign: |secret, c| {
                let body = json!({"type": "Issue", "action": "create", "webhookTimestamp": c.now * 1000});
                json_request(
                    "/api/webhooks/linear",
                    body.clone(),
                    vec![
                        ("linear-signature", hex::encode(sha256(secret, &body.to_string()))),
                        ("linear-delivery", "l1".into()),
                    ],
                )
            },
        },
        Platform {
            source: "typeform",
            variable: "TYPEFORM_WEBHOOK_SECRET",
            secret: "tf".into(),
            expected_name: "typeform.form_response",
            sign: |secret, _| {
                let body = json!({"event_id": "t1", "event_type": "form_response"});
                json_request(
                    "/api/webhooks/typeform",
                    body.clone(),
                    vec![(
                        "typeform-signature",
                        format!("sha256={}", BASE64.encode(sha256(secret, &body.to_string()))),
                    )],
                )
            },
        },
        Platform {
            source: "calendly",
            variable: "CALENDLY_WEBHOOK_SIGNING_KEY",
            secret: "cl".into(),
            expected_name: "calendly.invitee.created",
            sign: |secret, c| {
                let body = json!({"event": "invitee.created"}).to_string();
                let signature = format!("t={},v1={}", c.now, hex::encode(sha256(secret, &format!("{}.{body}", c.now))));
                Signed {
                    path: "/api/webhooks/calendly".into(),
                    content_type: "application/json",
                    headers: vec![("calendly-webhook-signature", signature)],
                    body,
                }
            },
        },
        Platform {
            source: "gitlab",
            variable: "GITLAB_WEBHOOK_TOKEN",
            secret: "gl".into(),
            expected_name: "gitlab.merge_request",
            sign: |secret, _| {
                json_request(
                    "/api/webhooks/gitlab",
                    json!({"object_kind": "merge_request"}),
                    vec![("x-gitlab-token", secret.into()), ("x-gitlab-event-uuid", "u1".into())],
                )
            },
        },
        Platform {
            source: "postmark",
            variable: "POSTMARK_WEBHOOK_CREDENTIALS",
            secret: "pm:pass".into(),
            expected_name: "postmark.Delivery",
            sign: |secret, _| {
                json_request(
                    "/api/webhooks/postmark",
                    json!({"RecordType": "Delivery", "MessageID": "m1"}),
                    vec![("authorization", format!("Basic {}", BASE64.encode(secret)))],
                )
            },
        },
        Platform {
            source: "customerhub",
            variable: "CUSTOMERHUB_WEBHOOK_TOKEN",
            secret: "ch".into(),
            expected_name: "customerhub.UserLogin",
            sign: |secret, _| {
                json_request(
                    &format!("/api/webhooks/customerhub?token={secret}"),
                    json!({"event": "UserLogin"}),
                    vec![],
                )
            },
        },
        Platform {
            source: "enafeedback",
            variable: "ENAFEEDBACK_WEBHOOK_SECRET",
            secret: "whs_ena".into(),
            expected_name: "enafeedback.feedback.ticket.created",
            sign: |secret, _| {
                let body = json!({"id": "d1", "event": "feedback.ticket.created"});
                json_request(
                    "/api/webhooks/enafeedback",
                    body.clone(),
                    vec![("x-webhook-signature", format!("sha256={}", hex::encode(sha256(secret, &body.to_string()))))],
                )
            },
        },
        Platform {
            source: "apex",
            variable: "APEX_WEBHOOK_SECRET",
            secret: "apex".into(),
            expected_name: "apex.lead.created",
            sign: |secret, _| {
                let body = json!({"id": "a1", "event": "lead.created"});
                json_request(
                    "/api/webhooks/apex",
                    body.clone(),
                    vec![("x-webhook-signature", format!("sha256={}", hex::encode(sha256(secret, &body.to_string()))))],
                )
            },
        },
        Platform {
            source: "commerce",
            variable: "COMMERCE_WEBHOOK_TOKEN",
            secret: "cm".into(),
            expected_name: "commerce.purchase",
            sign: |secret, _| {
                json_request(
                    &format!("/api/webhooks/commerce?token={secret}"),
                    json!({"id": "r1", "event": "purchase", "payload": []}),
                    vec![],
                )
            },
        },
        Platform {
            source: "meta",
            variable: "META_APP_SECRET",
            secret: "mt".into(),
            expected_name: "meta.page",
            sign: |secret, _| {
                let body = json!({"object": "page", "entry": []});
                json_request(
                    "/api/webhooks/meta",
                    body.clone(),
                    vec![("x-hub-signature-256", format!("sha256={}", hex::encode(sha256(secret, &body.to_string()))))],
                )
            },
        },
        Platform {
            source: "zoom",
            variable: "ZOOM_WEBHOOK_SECRET_TOKEN",
            secret: "zm".into(),
            expected_name: "zoom.meeting.started",
            sign: |secret, c| {
                let body = json!({"event": "meeting.started"}).to_string();
                let signature = format!("v0={}", hex::encode(sha256(secret, &format!("v0:{}:{body}", c.now))));
                Signed {
                    path: "/api/webhooks/zoom".into(),
                    content_type: "application/json",
                    headers: vec![("x-zm-signature", signature), ("x-zm-request-timestamp", c.now.to_string())],
                    body,
                }
            },
        },
        Platform {
            source: "discord",
            variable: "DISCORD_APPLICATION_PUBLIC_KEY",
            secret: discord_public,
            expected_name: "discord.interaction.2",
            sign: |_, c| {
                use ed25519_dalek::Signer;
                let body = json!({"type": 2, "id": "i1"}).to_string();
                let signature = c.discord.sign(format!("{}{body}", c.now).as_bytes());
                Signed {
                    path: "/api/webhooks/discord".into(),
                    content_type: "application/json",
                    headers: vec![
                        ("x-signature-ed25519", hex::encode(signature.to_bytes())),
                        ("x-signature-timestamp", c.now.to_string()),
                    ],
                    body,
                }
            },
        },
    ]
}

async fn send(gateway: &Gateway, signed: &Signed) -> reqwest::Response {
    let mut request = gateway.http.post(gateway.url(&signed.path)).header("content-type", signed.content_type);
    for (name, value) in &signed.headers {
        request = request.header(*name, value);
    }
    request.body(signed.body.clone()).send().await.unwrap()
}

#[tokio::test]
async fn every_shipped_source_accepts_its_platforms_signature_and_refuses_another_secret_or_key() {
    let folder = format!("{}/hook-definitions/sources", env!("CARGO_MANIFEST_DIR"));
    let definitions: Vec<(String, Value)> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap())
        })
        .collect();
    let now = jiff::Timestamp::now().as_second();
    let mut context = Context::with_fresh_keys(String::new(), now);
    let platforms = platforms(&context);
    let shipped: std::collections::BTreeSet<String> =
        definitions.iter().map(|(name, _)| name.trim_end_matches(".json").to_owned()).collect();
    let covered: std::collections::BTreeSet<String> = platforms.iter().map(|p| p.source.to_owned()).collect();
    assert_eq!(shipped, covered, "every shipped source has a case here");

    let env = platforms.iter().map(|p| (p.variable.to_owned(), p.secret.clone())).collect();
    let gateway = Gateway::start_with(Options { definitions, env }).await;
    context.base = gateway.base.clone();
    // The configured public keys are `context`'s: these are other key pairs.
    let other_keys = Context::with_fresh_keys(gateway.base.clone(), now);
    for platform in &platforms {
        let accepted = send(&gateway, &(platform.sign)(&platform.secret, &context)).await;
        let status = accepted.status();
        let reply: Value = accepted.json().await.unwrap();
        assert_eq!(status, 200, "{}: {reply}", platform.source);
        let name = reply.get("name").or_else(|| reply["events"][0].get("name")).cloned().unwrap_or_default();
        assert_eq!(name, platform.expected_name, "{}", platform.source);

        let refused = send(&gateway, &(platform.sign)("not-the-secret", &other_keys)).await;
        let status = refused.status();
        let reply: Value = refused.json().await.unwrap();
        assert_eq!(status, 401, "{}: {reply}", platform.source);
        assert_eq!(reply["error"]["code"], "signature_mismatch", "{}", platform.source);
    }
}
