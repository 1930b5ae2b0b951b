//! Property tests for signature verification through the public `verify(config, request, now)`.
//!
//! Requests are signed here by a signer written from each platform's documentation with the
//! `hmac`, `sha1`, `sha2`, `ed25519-dalek` and `p256` crates directly, never with the module's
//! own helpers. A correctly signed request verifies; a single changed byte in the body, the
//! timestamp or the signature does not, and reads as a signature failure (signatures are checked
//! before timestamps); a signature made with another key, or with an empty key, never verifies;
//! random signature headers never panic and never verify.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use jiff::Timestamp;
use proptest::prelude::*;

use super::{
    GenericHmac, HmacAlgorithm, Scheme, SignatureEncoding, SignedPart, SignedRequest, Verified, VerifyConfig,
    VerifyError, verify,
};

const TOLERANCE: Duration = Duration::from_secs(300);
const METHOD: &str = "POST";

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha1(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha512(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<sha2::Sha512> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The platforms, each signed as its documentation says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    StandardWebhooks,
    StandardWebhooksEd25519,
    Stripe,
    Calendly,
    Paddle,
    GitHub,
    GitHubSha1,
    HubSpotV3,
    HubSpotV2,
    Shopify,
    Slack,
    Zoom,
    TwilioForm,
    TwilioJson,
    Square,
    Discord,
    SendGrid,
    Mailgun,
    Intercom,
    Typeform,
    Zendesk,
    Linear,
    Generic,
}

const SYMMETRIC: &[Platform] = &[
    Platform::StandardWebhooks,
    Platform::Stripe,
    Platform::Calendly,
    Platform::Paddle,
    Platform::GitHub,
    Platform::GitHubSha1,
    Platform::HubSpotV3,
    Platform::HubSpotV2,
    Platform::Shopify,
    Platform::Slack,
    Platform::Zoom,
    Platform::TwilioForm,
    Platform::TwilioJson,
    Platform::Square,
    Platform::Mailgun,
    Platform::Intercom,
    Platform::Typeform,
    Platform::Zendesk,
    Platform::Linear,
    Platform::Generic,
];

/// Public-key schemes: slower to sign and check in a debug build, so they run fewer cases.
const ASYMMETRIC: &[Platform] = &[Platform::StandardWebhooksEd25519, Platform::Discord, Platform::SendGrid];

impl Platform {
    fn scheme(self) -> Scheme {
        match self {
            Platform::StandardWebhooks | Platform::StandardWebhooksEd25519 => Scheme::StandardWebhooks,
            Platform::Stripe => Scheme::Stripe,
            Platform::Calendly => Scheme::Calendly,
            Platform::Paddle => Scheme::Paddle,
            Platform::GitHub => Scheme::GitHub { allow_sha1: false },
            Platform::GitHubSha1 => Scheme::GitHub { allow_sha1: true },
            Platform::HubSpotV3 => Scheme::HubSpot { allow_v1_v2: false },
            Platform::HubSpotV2 => Scheme::HubSpot { allow_v1_v2: true },
            Platform::Shopify => Scheme::Shopify,
            Platform::Slack => Scheme::Slack,
            Platform::Zoom => Scheme::Zoom,
            Platform::TwilioForm | Platform::TwilioJson => Scheme::Twilio,
            Platform::Square => Scheme::Square,
            Platform::Discord => Scheme::Discord,
            Platform::SendGrid => Scheme::SendGridEcdsa,
            Platform::Mailgun => Scheme::Mailgun,
            Platform::Intercom => Scheme::Intercom,
            Platform::Typeform => Scheme::Typeform,
            Platform::Zendesk => Scheme::Zendesk,
            Platform::Linear => Scheme::Linear,
            Platform::Generic => Scheme::GenericHmac(Box::new(GenericHmac {
                header: "x-acme-signature".into(),
                algorithm: HmacAlgorithm::Sha512,
                encoding: SignatureEncoding::Base64,
                prefix: "sha512=".into(),
                signed: vec![
                    SignedPart::Timestamp,
                    SignedPart::Literal(".".into()),
                    SignedPart::Id,
                    SignedPart::Literal(".".into()),
                    SignedPart::Method,
                    SignedPart::Literal(".".into()),
                    SignedPart::Url,
                    SignedPart::Literal(".".into()),
                    SignedPart::Body,
                ],
                timestamp_header: Some("x-acme-timestamp".into()),
                id_header: Some("x-acme-delivery".into()),
            })),
        }
    }

    /// Whether the scheme signs a timestamp that `verify` reports as `signed_at`.
    fn is_timestamped(self) -> bool {
        !matches!(
            self,
            Platform::GitHub
                | Platform::GitHubSha1
                | Platform::HubSpotV2
                | Platform::Shopify
                | Platform::TwilioForm
                | Platform::TwilioJson
                | Platform::Square
                | Platform::Intercom
                | Platform::Typeform
        )
    }
}

/// What a request is signed with and what it carries, before it is signed.
#[derive(Debug, Clone)]
struct Material {
    /// Key bytes: the HMAC key of Standard Webhooks, the private key of the public-key schemes.
    key: [u8; 32],
    /// The shared secret as text, for the schemes keyed by the secret's bytes.
    secret: String,
    body: Vec<u8>,
    /// Form parameters (Twilio form requests).
    form: Vec<(String, String)>,
    /// `now` in Unix seconds, and the signed time's distance from it.
    now: i64,
    skew: i64,
    /// Milliseconds added to the signed time where a scheme signs milliseconds.
    millis: i64,
    id: String,
    /// Other `v1,` signatures listed before the real one (Standard Webhooks rotation lists).
    decoys: Vec<[u8; 32]>,
    /// Standard Webhooks: send the `svix-*` header names.
    svix_headers: bool,
}

fn material() -> impl Strategy<Value = Material> {
    (
        any::<[u8; 32]>(),
        "[A-Za-z0-9_+/=.-]{1,48}",
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(("[a-cA-C_]{1,3}", "[ -~]{0,6}"), 0..5),
        1_000_000_000..2_000_000_000i64,
        -299..=299i64,
        0..1000i64,
        "[a-z0-9_-]{1,24}",
        prop::collection::vec(any::<[u8; 32]>(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(key, secret, body, form, now, skew, millis, id, decoys, svix_headers)| Material {
            key,
            secret,
            body,
            form,
            now,
            skew,
            millis,
            id,
            decoys,
            svix_headers,
        })
}

/// Where a part of a signed request lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Header(usize),
    Body,
}

/// What a span holds, for deciding which changed bytes are equivalent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Body,
    Timestamp,
    Id,
    /// A signature; hexadecimal digits may change case without changing the signature.
    Signature {
        hex: bool,
    },
}

#[derive(Debug, Clone)]
struct Span {
    place: Place,
    range: Range<usize>,
    content: Content,
}

/// A signed request and the parts a single changed byte must break.
#[derive(Debug, Clone)]
struct Signed {
    platform: Platform,
    /// The configured secret (or trusted public key).
    secret: String,
    url: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    spans: Vec<Span>,
    signed_at: Option<i64>,
    now: i64,
}

impl Signed {
    fn header(&mut self, name: &'static str, value: impl Into<Vec<u8>>) -> usize {
        self.headers.push((name, value.into()));
        self.headers.len() - 1
    }

    /// Adds a header whose whole value is one span.
    fn spanned_header(&mut self, name: &'static str, value: impl Into<Vec<u8>>, content: Content) {
        let value = value.into();
        let range = 0..value.len();
        let index = self.header(name, value);
        self.spans.push(Span { place: Place::Header(index), range, content });
    }

    /// Adds a header and marks `content` spans at the given ranges of its value.
    fn header_with_spans(&mut self, name: &'static str, value: String, spans: &[(Range<usize>, Content)]) {
        let index = self.header(name, value);
        for (range, content) in spans {
            self.spans.push(Span { place: Place::Header(index), range: range.clone(), content: *content });
        }
    }

    fn body_span(&mut self) {
        self.spans.push(Span { place: Place::Body, range: 0..self.body.len(), content: Content::Body });
    }

    fn run_with(&self, secrets: Vec<String>, now: i64) -> Result<Verified, VerifyError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let value = HeaderValue::from_bytes(value).expect("the signer writes valid header values");
            headers.append(HeaderName::from_static(name), value);
        }
        let config = VerifyConfig { scheme: self.platform.scheme(), secrets, tolerance: TOLERANCE };
        let request = SignedRequest { method: METHOD, url: &self.url, headers: &headers, body: &self.body };
        verify(&config, &request, Timestamp::from_second(now).expect("a valid time"))
    }

    fn run(&self) -> Result<Verified, VerifyError> {
        self.run_with(vec![self.secret.clone()], self.now)
    }
}

/// Offsets of `needle` in `haystack` (the first occurrence after `from`).
fn find(haystack: &str, needle: &str, from: usize) -> Range<usize> {
    let start = haystack[from..].find(needle).expect("the signer wrote it") + from;
    start..start + needle.len()
}

fn form_encode(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        match byte {
            b' ' => encoded.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => encoded.push(byte as char),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

/// Twilio's signed parameter string: names sorted, each name's distinct values sorted, every
/// name and value appended without separators.
fn twilio_parameters(body: &[u8]) -> String {
    let mut parameters: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(body) {
        parameters.entry(name.into_owned()).or_default().insert(value.into_owned());
    }
    parameters.iter().flat_map(|(name, values)| values.iter().map(move |value| format!("{name}{value}"))).collect()
}

/// Signs `material` for `platform` as the platform documents it.
fn sign(platform: Platform, material: &Material) -> Signed {
    let signed_at = material.now + material.skew;
    let timestamp = signed_at.to_string();
    let mut signed = Signed {
        platform,
        secret: material.secret.clone(),
        url: "https://hooks.example/api/webhooks/source".into(),
        headers: Vec::new(),
        body: material.body.clone(),
        spans: Vec::new(),
        signed_at: platform.is_timestamped().then_some(signed_at),
        now: material.now,
    };
    let key = material.secret.as_bytes();
    let body = material.body.as_slice();
    match platform {
        Platform::StandardWebhooks | Platform::StandardWebhooksEd25519 => {
            // https://www.standardwebhooks.com: `{id}.{timestamp}.{body}`; v1 HMAC-SHA256 with the
            // base64 key after `whsec_`, v1a Ed25519 with the key after `whpk_`.
            let message = concat(&[material.id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
            let (version, signature) = if platform == Platform::StandardWebhooks {
                signed.secret = format!("whsec_{}", BASE64.encode(material.key));
                ("v1", hmac_sha256(&material.key, &message))
            } else {
                use ed25519_dalek::Signer;
                let key = ed25519_dalek::SigningKey::from_bytes(&material.key);
                signed.secret = format!("whpk_{}", BASE64.encode(key.verifying_key().to_bytes()));
                ("v1a", key.sign(&message).to_bytes().to_vec())
            };
            let decoys: Vec<String> =
                material.decoys.iter().map(|decoy| format!("{version},{}", BASE64.encode(decoy))).collect();
            let real = format!("{version},{}", BASE64.encode(signature));
            let mut value = decoys.join(" ");
            if !value.is_empty() {
                value.push(' ');
            }
            let start = value.len();
            value.push_str(&real);
            let (id, time, signature) = if material.svix_headers {
                ("svix-id", "svix-timestamp", "svix-signature")
            } else {
                ("webhook-id", "webhook-timestamp", "webhook-signature")
            };
            signed.spanned_header(id, material.id.clone(), Content::Id);
            signed.spanned_header(time, timestamp, Content::Timestamp);
            let range = start..value.len();
            signed.header_with_spans(signature, value, &[(range, Content::Signature { hex: false })]);
            signed.body_span();
        }
        Platform::Stripe | Platform::Calendly | Platform::Paddle => {
            // Stripe and Calendly: `t={t},v1={hex}` over `{t}.{body}`; Paddle: `ts={t};h1={hex}`
            // over `{t}:{body}`.
            let (name, time_key, signature_key, separator, joiner) = match platform {
                Platform::Stripe => ("stripe-signature", "t", "v1", ",", "."),
                Platform::Calendly => ("calendly-webhook-signature", "t", "v1", ",", "."),
                _ => ("paddle-signature", "ts", "h1", ";", ":"),
            };
            let mac = hex::encode(hmac_sha256(key, &concat(&[timestamp.as_bytes(), joiner.as_bytes(), body])));
            let time_item = format!("{time_key}={timestamp}");
            let signature_item = format!("{signature_key}={mac}");
            let value = format!("{time_item}{separator}{signature_item}");
            let spans = [
                (0..time_item.len(), Content::Timestamp),
                (time_item.len() + 1..value.len(), Content::Signature { hex: true }),
            ];
            signed.header_with_spans(name, value, &spans);
            signed.body_span();
        }
        Platform::GitHub => {
            let mac = hex::encode(hmac_sha256(key, body));
            signed.spanned_header("x-hub-signature-256", format!("sha256={mac}"), Content::Signature { hex: true });
            signed.body_span();
        }
        Platform::GitHubSha1 | Platform::Intercom => {
            let mac = hex::encode(hmac_sha1(key, body));
            signed.spanned_header("x-hub-signature", format!("sha1={mac}"), Content::Signature { hex: true });
            signed.body_span();
        }
        Platform::HubSpotV3 => {
            // method + URI + body + timestamp (milliseconds), HMAC-SHA256, base64.
            signed.url = "https://hooks.example/api/webhooks/hubspot?portalId=62515".into();
            let millis = (signed_at * 1000 + material.millis).to_string();
            let message = concat(&[METHOD.as_bytes(), signed.url.as_bytes(), body, millis.as_bytes()]);
            let mac = BASE64.encode(hmac_sha256(key, &message));
            signed.spanned_header("x-hubspot-signature-v3", mac, Content::Signature { hex: false });
            signed.spanned_header("x-hubspot-request-timestamp", millis, Content::Timestamp);
            signed.body_span();
        }
        Platform::HubSpotV2 => {
            // Legacy v2: hex SHA-256 of secret + method + URI + body.
            use sha2::Digest;
            let digest = sha2::Sha256::digest(concat(&[key, METHOD.as_bytes(), signed.url.as_bytes(), body]));
            signed.spanned_header("x-hubspot-signature", hex::encode(digest), Content::Signature { hex: true });
            signed.header("x-hubspot-signature-version", "v2");
            signed.body_span();
        }
        Platform::Shopify => {
            let mac = BASE64.encode(hmac_sha256(key, body));
            signed.spanned_header("x-shopify-hmac-sha256", mac, Content::Signature { hex: false });
            signed.body_span();
        }
        Platform::Slack | Platform::Zoom => {
            let (signature_name, time_name) = match platform {
                Platform::Slack => ("x-slack-signature", "x-slack-request-timestamp"),
                _ => ("x-zm-signature", "x-zm-request-timestamp"),
            };
            let mac = hex::encode(hmac_sha256(key, &concat(&[b"v0:", timestamp.as_bytes(), b":", body])));
            signed.spanned_header(signature_name, format!("v0={mac}"), Content::Signature { hex: true });
            signed.spanned_header(time_name, timestamp, Content::Timestamp);
            signed.body_span();
        }
        Platform::TwilioForm => {
            // URL followed by the sorted parameters, HMAC-SHA1 with the auth token, base64.
            signed.url = "https://hooks.example/api/webhooks/twilio?tenant=7".into();
            let form = material
                .form
                .iter()
                .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
                .collect::<Vec<_>>()
                .join("&");
            signed.body = form.into_bytes();
            let message = format!("{}{}", signed.url, twilio_parameters(&signed.body));
            let mac = BASE64.encode(hmac_sha1(key, message.as_bytes()));
            signed.spanned_header("x-twilio-signature", mac, Content::Signature { hex: false });
            signed.body_span();
        }
        Platform::TwilioJson => {
            // A JSON body's SHA-256 travels in the URL as `bodySHA256`; the URL alone is signed.
            signed.url = format!("https://hooks.example/api/webhooks/twilio?bodySHA256={}", sha256_hex(body));
            let mac = BASE64.encode(hmac_sha1(key, signed.url.as_bytes()));
            signed.spanned_header("x-twilio-signature", mac, Content::Signature { hex: false });
            signed.body_span();
        }
        Platform::Square => {
            let mac = BASE64.encode(hmac_sha256(key, &concat(&[signed.url.as_bytes(), body])));
            signed.spanned_header("x-square-hmacsha256-signature", mac, Content::Signature { hex: false });
            signed.body_span();
        }
        Platform::Discord => {
            use ed25519_dalek::Signer;
            let key = ed25519_dalek::SigningKey::from_bytes(&material.key);
            signed.secret = hex::encode(key.verifying_key().to_bytes());
            let signature = key.sign(&concat(&[timestamp.as_bytes(), body])).to_bytes();
            signed.spanned_header("x-signature-ed25519", hex::encode(signature), Content::Signature { hex: true });
            signed.spanned_header("x-signature-timestamp", timestamp, Content::Timestamp);
            signed.body_span();
        }
        Platform::SendGrid => {
            use p256::ecdsa::signature::Signer;
            use p256::pkcs8::EncodePublicKey;
            // Key bytes that are not a valid scalar are astronomically rare; fall back to a fixed one.
            let key = p256::ecdsa::SigningKey::from_slice(&material.key)
                .unwrap_or_else(|_| p256::ecdsa::SigningKey::from_slice(&[7; 32]).expect("a valid scalar"));
            let public = key.verifying_key().to_public_key_der().expect("an SPKI document");
            signed.secret = BASE64.encode(public.as_bytes());
            let signature: p256::ecdsa::Signature = key.sign(&concat(&[timestamp.as_bytes(), body]));
            let der = BASE64.encode(signature.to_der().as_bytes());
            signed.spanned_header("x-twilio-email-event-webhook-signature", der, Content::Signature { hex: false });
            signed.spanned_header("x-twilio-email-event-webhook-timestamp", timestamp, Content::Timestamp);
            signed.body_span();
        }
        Platform::Mailgun => {
            // The body's `signature` object: hex HMAC-SHA256 of timestamp and token. The rest of
            // the body is not signed, by Mailgun's design, so only the object's values are spans.
            let token = &material.id;
            let mac = hex::encode(hmac_sha256(key, &concat(&[timestamp.as_bytes(), token.as_bytes()])));
            let text = format!(
                r#"{{"signature":{{"timestamp":"{timestamp}","token":"{token}","signature":"{mac}"}},"event-data":{{"event":"delivered"}}}}"#
            );
            let time_range = find(&text, &timestamp, 0);
            let token_field = find(&text, &format!(r#""token":"{token}""#), time_range.end);
            let token_range = token_field.end - 1 - token.len()..token_field.end - 1;
            let mac_range = find(&text, &mac, token_range.end);
            signed.body = text.into_bytes();
            for (range, content) in [
                (time_range, Content::Timestamp),
                (token_range, Content::Id),
                (mac_range, Content::Signature { hex: true }),
            ] {
                signed.spans.push(Span { place: Place::Body, range, content });
            }
        }
        Platform::Typeform => {
            let mac = BASE64.encode(hmac_sha256(key, body));
            signed.spanned_header("typeform-signature", format!("sha256={mac}"), Content::Signature { hex: false });
            signed.body_span();
        }
        Platform::Zendesk => {
            // base64 HMAC-SHA256 of the RFC 3339 timestamp followed by the body.
            let time = Timestamp::from_second(signed_at).expect("a valid time").to_string();
            let mac = BASE64.encode(hmac_sha256(key, &concat(&[time.as_bytes(), body])));
            signed.spanned_header("x-zendesk-webhook-signature", mac, Content::Signature { hex: false });
            signed.spanned_header("x-zendesk-webhook-signature-timestamp", time, Content::Timestamp);
            signed.body_span();
        }
        Platform::Linear => {
            // Hex HMAC-SHA256 of the body, whose `webhookTimestamp` (milliseconds) is the signed time.
            let millis = (signed_at * 1000 + material.millis).to_string();
            let text = format!(r#"{{"webhookTimestamp":{millis},"data":{{"id":"{}"}}}}"#, material.id);
            signed.body = text.into_bytes();
            let mac = hex::encode(hmac_sha256(key, &signed.body));
            signed.spanned_header("linear-signature", mac, Content::Signature { hex: true });
            signed.body_span();
        }
        Platform::Generic => {
            let message = format!("{timestamp}.{}.{METHOD}.{}.", material.id, signed.url);
            let mac = BASE64.encode(hmac_sha512(key, &concat(&[message.as_bytes(), body])));
            signed.spanned_header("x-acme-signature", format!("sha512={mac}"), Content::Signature { hex: false });
            signed.spanned_header("x-acme-timestamp", timestamp, Content::Timestamp);
            signed.spanned_header("x-acme-delivery", material.id.clone(), Content::Id);
            signed.body_span();
        }
    }
    signed
}

/// One changed byte: which span, where in it, and what it becomes.
#[derive(Debug, Clone)]
struct Change {
    span: usize,
    at: usize,
    to: Replacement,
}

/// A replacement byte: any other byte, or one of the same kind (a digit for a digit, a letter
/// for a letter), the tampering that keeps a header well formed.
#[derive(Debug, Clone, Copy)]
enum Replacement {
    Xor(u8),
    SameKind(u8),
}

impl Replacement {
    fn apply(self, before: u8) -> u8 {
        let within = |first: u8, count: u8, pick: u8| first + (before - first + 1 + pick % (count - 1)) % count;
        match self {
            Replacement::Xor(flip) => before ^ flip,
            Replacement::SameKind(pick) if before.is_ascii_digit() => within(b'0', 10, pick),
            Replacement::SameKind(pick) if before.is_ascii_lowercase() => within(b'a', 26, pick),
            Replacement::SameKind(pick) if before.is_ascii_uppercase() => within(b'A', 26, pick),
            Replacement::SameKind(pick) => before ^ pick.max(1),
        }
    }
}

fn change() -> impl Strategy<Value = Change> {
    let to = prop_oneof![(1..=255u8).prop_map(Replacement::Xor), any::<u8>().prop_map(Replacement::SameKind)];
    (any::<usize>(), any::<usize>(), to).prop_map(|(span, at, to)| Change { span, at, to })
}

/// Applies `change`; `None` when the changed request is the same request (a hex digit changed
/// case, Twilio parameters that decode the same) or could not be sent (an invalid header value).
fn apply(signed: &Signed, change: &Change) -> Option<(Signed, Content)> {
    let spans: Vec<&Span> = signed.spans.iter().filter(|span| !span.range.is_empty()).collect();
    let span = spans.get(change.span % spans.len().max(1))?;
    let at = span.range.start + change.at % span.range.len();
    let mut changed = signed.clone();
    let bytes = match span.place {
        Place::Body => &mut changed.body,
        Place::Header(index) => &mut changed.headers[index].1,
    };
    let before = bytes[at];
    let after = change.to.apply(before);
    bytes[at] = after;
    let same_hex_digit = before.is_ascii_hexdigit() && after.is_ascii_hexdigit() && before.eq_ignore_ascii_case(&after);
    if span.content == (Content::Signature { hex: true }) && same_hex_digit {
        return None;
    }
    if signed.platform == Platform::TwilioForm
        && span.place == Place::Body
        && twilio_parameters(&signed.body) == twilio_parameters(&changed.body)
    {
        return None;
    }
    if let Place::Header(index) = span.place
        && HeaderValue::from_bytes(&changed.headers[index].1).is_err()
    {
        return None;
    }
    Some((changed, span.content))
}

fn platform(from: &'static [Platform]) -> impl Strategy<Value = Platform> {
    prop::sample::select(from)
}

/// Header text built from the pieces signature headers are made of, and noise.
fn header_text() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "t=",
                "v1=",
                "ts=",
                "h1=",
                ",",
                ";",
                " ",
                "=",
                "sha256=",
                "sha1=",
                "sha512=",
                "v0=",
                "v1,",
                "v1a,",
                "Basic ",
                "1700000000",
                "-1",
                "99999999999999999999",
                "0",
                "whsec_",
                "AAAA",
                "====",
                "%",
            ])
            .prop_map(|piece| piece.as_bytes().to_vec()),
            "[0-9a-f]{1,64}".prop_map(String::into_bytes),
            "[A-Za-z0-9+/]{1,88}={0,2}".prop_map(String::into_bytes),
            "[ -~]{0,12}".prop_map(String::into_bytes),
            prop::collection::vec(0x80..=0xffu8, 1..4),
        ],
        0..8,
    )
    .prop_map(|pieces| pieces.concat())
}

const HEADER_NAMES: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "stripe-signature",
    "calendly-webhook-signature",
    "paddle-signature",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-hubspot-signature-v3",
    "x-hubspot-request-timestamp",
    "x-hubspot-signature",
    "x-hubspot-signature-version",
    "x-shopify-hmac-sha256",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-zm-signature",
    "x-zm-request-timestamp",
    "x-twilio-signature",
    "x-twilio-webhooks-signature-settings",
    "x-square-hmacsha256-signature",
    "x-signature-ed25519",
    "x-signature-timestamp",
    "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp",
    "typeform-signature",
    "x-zendesk-webhook-signature",
    "x-zendesk-webhook-signature-timestamp",
    "linear-signature",
    "x-gitlab-token",
    "authorization",
    "x-acme-signature",
    "x-acme-timestamp",
    "x-acme-delivery",
];

/// Every scheme, with the secret kinds each takes.
fn any_scheme() -> impl Strategy<Value = Scheme> {
    let platforms: Vec<Platform> = SYMMETRIC.iter().chain(ASYMMETRIC).copied().collect();
    prop_oneof![
        prop::sample::select(platforms).prop_map(Platform::scheme),
        Just(Scheme::GitLabToken),
        Just(Scheme::BasicAuth),
        Just(Scheme::UrlToken),
        Just(Scheme::HubSpot { allow_v1_v2: true }),
    ]
}

fn check_signed_verifies(signed: &Signed) -> Result<(), TestCaseError> {
    let verified = signed.run().map_err(|error| TestCaseError::fail(format!("{error}; request {signed:?}")))?;
    prop_assert_eq!(verified.secret_index, 0);
    prop_assert_eq!(verified.signed_at.map(|time| time.as_second()), signed.signed_at);
    Ok(())
}

fn check_change_fails(signed: &Signed, change: &Change) -> Result<(), TestCaseError> {
    let Some((changed, content)) = apply(signed, change) else {
        return Ok(());
    };
    match changed.run() {
        Ok(_) => Err(TestCaseError::fail(format!("a changed {content:?} still verified: {changed:?}"))),
        // Signatures are checked before timestamps: a change never reads as a stale request.
        Err(VerifyError::TimestampOutsideTolerance { seconds }) => {
            Err(TestCaseError::fail(format!("a changed {content:?} read as a timestamp {seconds} s away: {changed:?}")))
        }
        Err(_) => Ok(()),
    }
}

/// A signature made with `other` key material must not verify under the real secret.
fn check_other_key_fails(platform: Platform, material: &Material, other: &Material) -> Result<(), TestCaseError> {
    let signed = sign(platform, material);
    let forged = Signed { secret: signed.secret.clone(), ..sign(platform, other) };
    prop_assume!(sign(platform, other).secret != signed.secret);
    prop_assert_eq!(forged.run(), Err(VerifyError::SignatureMismatch), "{:?}", forged);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A request signed as the platform documents verifies, with the signed time reported;
    /// as the second of two configured secrets (rotation) it verifies with index 1.
    #[test]
    fn a_correctly_signed_request_verifies(platform in platform(SYMMETRIC), material in material(), other in material()) {
        let signed = sign(platform, &material);
        check_signed_verifies(&signed)?;
        let decoy = sign(platform, &other).secret;
        prop_assume!(decoy != signed.secret);
        let rotated = signed.run_with(vec![decoy, signed.secret.clone()], signed.now);
        prop_assert_eq!(rotated.map(|verified| verified.secret_index), Ok(1));
    }

    /// One changed byte in the body, the timestamp, the id or the signature fails, as a
    /// signature failure or a malformed header, never as a stale request.
    #[test]
    fn a_single_changed_byte_fails(platform in platform(SYMMETRIC), material in material(), change in change()) {
        check_change_fails(&sign(platform, &material), &change)?;
    }

    /// A signature made with another key never verifies.
    #[test]
    fn another_keys_signature_never_verifies(platform in platform(SYMMETRIC), material in material(), other in material()) {
        check_other_key_fails(platform, &material, &other)?;
    }

    /// An empty or blank secret verifies nothing, not even a request signed with that empty key.
    #[test]
    fn an_empty_secret_verifies_nothing(platform in platform(SYMMETRIC), material in material(), blank in "[ \t]{0,3}") {
        let material = Material { secret: blank.clone(), key: [0; 32], ..material };
        let mut signed = sign(platform, &material);
        if platform == Platform::StandardWebhooks {
            // `whsec_` followed by nothing: the key is empty, and so is the HMAC key signed with.
            let message = concat(&[material.id.as_bytes(), b".", (material.now + material.skew).to_string().as_bytes(), b".", &material.body]);
            let signature = format!("v1,{}", BASE64.encode(hmac_sha256(b"", &message)));
            let index = signed.headers.iter().position(|(name, _)| name.ends_with("-signature")).expect("a signature header");
            signed.headers[index].1 = signature.into_bytes();
            signed.secret = format!("whsec_{blank}");
        }
        prop_assert_eq!(signed.run(), Err(VerifyError::SignatureMismatch), "{:?}", signed);
    }

    /// Outside the tolerance a correct signature reads as stale, with how far off it is; a
    /// forged one still reads as a signature failure (signatures first).
    #[test]
    fn stale_requests_are_refused_after_the_signature_check(
        platform in platform(SYMMETRIC),
        material in material(),
        other in material(),
        beyond in 1..100_000i64,
        future in any::<bool>(),
    ) {
        prop_assume!(platform.is_timestamped());
        let signed = sign(platform, &material);
        let signed_at = signed.signed_at.expect("a timestamped scheme");
        let tolerance = TOLERANCE.as_secs() as i64;
        let now = if future { signed_at - tolerance - beyond } else { signed_at + tolerance + beyond };
        prop_assert_eq!(
            signed.run_with(vec![signed.secret.clone()], now),
            Err(VerifyError::TimestampOutsideTolerance { seconds: now - signed_at })
        );
        let other = sign(platform, &Material { now: material.now, skew: material.skew, ..other });
        prop_assume!(other.secret != signed.secret);
        let forged = Signed { secret: signed.secret.clone(), ..other };
        prop_assert_eq!(forged.run_with(vec![signed.secret.clone()], now), Err(VerifyError::SignatureMismatch));
    }

    /// Random signature headers, bodies and URLs never panic and never verify.
    #[test]
    fn random_headers_never_verify(
        scheme in any_scheme(),
        secret in "[A-Za-z0-9]{16,32}",
        headers in prop::collection::vec((prop::sample::select(HEADER_NAMES), header_text()), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..64),
        url in prop_oneof![
            Just("https://hooks.example/api/webhooks/source".to_owned()),
            "https://hooks.example(:[0-9]{1,6})?/[ -~]{0,20}",
            "[ -~]{0,30}",
        ],
        now in 0..4_000_000_000i64,
    ) {
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                map.append(HeaderName::from_static(name), value);
            }
        }
        let config = VerifyConfig { scheme, secrets: vec![secret], tolerance: TOLERANCE };
        let request = SignedRequest { method: METHOD, url: &url, headers: &map, body: &body };
        let outcome = verify(&config, &request, Timestamp::from_second(now).expect("a valid time"));
        prop_assert!(outcome.is_err(), "random headers verified: {:?} {:?}", map, outcome);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The public-key schemes (Standard Webhooks v1a, Discord, SendGrid): a signed request
    /// verifies, one changed byte fails, another key's signature fails.
    #[test]
    fn public_key_signatures_verify_only_unchanged(
        platform in platform(ASYMMETRIC),
        material in material(),
        other in material(),
        change in change(),
    ) {
        let signed = sign(platform, &material);
        check_signed_verifies(&signed)?;
        check_change_fails(&signed, &change)?;
        check_other_key_fails(platform, &material, &other)?;
    }
}
