//! The schemes, one function each, written from the platforms' documentation and checked
//! against their published vectors. Signatures are checked before timestamps, so a forged
//! request always reads as `signature_mismatch`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use jiff::Timestamp;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::time::Duration;

use super::{
    GenericHmac, HmacAlgorithm, Scheme, SignatureEncoding, SignedPart, SignedRequest, Verified, VerifyConfig,
    VerifyError,
};

pub(super) fn verify(
    config: &VerifyConfig,
    request: &SignedRequest<'_>,
    now: Timestamp,
) -> Result<Verified, VerifyError> {
    let window = Window { now, tolerance: config.tolerance };
    let secrets = &config.secrets;
    match &config.scheme {
        Scheme::StandardWebhooks => standard_webhooks(secrets, request, window),
        Scheme::Stripe => timestamped_hex(&STRIPE_HEADER, secrets, request, window),
        Scheme::GitHub { allow_sha1 } => github(secrets, request, *allow_sha1),
        Scheme::HubSpot { allow_v1_v2 } => hubspot(secrets, request, window, *allow_v1_v2),
        Scheme::Shopify => shopify(secrets, request),
        Scheme::Slack => v0(&SLACK_HEADERS, secrets, request, window),
        Scheme::Twilio => twilio(secrets, request),
        Scheme::Square => square(secrets, request),
        Scheme::Paddle => timestamped_hex(&PADDLE_HEADER, secrets, request, window),
        Scheme::Discord => discord(secrets, request, window),
        Scheme::Zoom => v0(&ZOOM_HEADERS, secrets, request, window),
        Scheme::SendGridEcdsa => sendgrid(secrets, request, window),
        Scheme::Mailgun => mailgun(secrets, request, window),
        Scheme::Intercom => intercom(secrets, request),
        Scheme::Zendesk => zendesk(secrets, request, window),
        Scheme::Linear => linear(secrets, request, window),
        Scheme::Typeform => typeform(secrets, request),
        Scheme::Calendly => timestamped_hex(&CALENDLY_HEADER, secrets, request, window),
        Scheme::GitLabToken => gitlab(secrets, request),
        Scheme::BasicAuth => basic_auth(secrets, request),
        Scheme::UrlToken => url_token(secrets, request),
        Scheme::GenericHmac(generic) => generic_hmac(generic, secrets, request, window),
    }
}

/// The replay window: `now` and how far a signed time may be from it.
#[derive(Clone, Copy)]
struct Window {
    now: Timestamp,
    tolerance: Duration,
}

impl Window {
    fn check(self, signed_at: Timestamp) -> Result<Timestamp, VerifyError> {
        let seconds = self.now.as_second() - signed_at.as_second();
        if seconds.unsigned_abs() > self.tolerance.as_secs() {
            return Err(VerifyError::TimestampOutsideTolerance { seconds });
        }
        Ok(signed_at)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, VerifyError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.trim()))
            .map_err(|_| VerifyError::MalformedHeader { header: name.into(), reason: "not visible ASCII" }),
    }
}

fn required<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, VerifyError> {
    header(headers, name)?.ok_or(VerifyError::MissingHeader(name.into()))
}

fn unix_seconds(text: &str, header: &str) -> Result<Timestamp, VerifyError> {
    text.parse::<i64>()
        .ok()
        .and_then(|seconds| Timestamp::from_second(seconds).ok())
        .ok_or(VerifyError::MalformedHeader { header: header.into(), reason: "expected a Unix time in seconds" })
}

/// HMAC of `parts`, in order, with `algorithm`: the one MAC every scheme here computes.
fn hmac(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn compute<D: hmac::EagerHash>(key: &[u8], parts: &[&[u8]]) -> Vec<u8>
    where
        Hmac<D>: KeyInit + Mac,
    {
        let mut mac = <Hmac<D> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        HmacAlgorithm::Sha1 => compute::<Sha1>(key, parts),
        HmacAlgorithm::Sha256 => compute::<Sha256>(key, parts),
        HmacAlgorithm::Sha512 => compute::<sha2::Sha512>(key, parts),
    }
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update(part);
    }
    digest.finalize().to_vec()
}

/// The index of the first secret whose expected signature equals one of `presented`, compared
/// in constant time. `expected` may give several forms per secret (URL variants).
fn match_secret(
    secrets: &[String],
    presented: &[Vec<u8>],
    expected: impl Fn(&str) -> Vec<Vec<u8>>,
) -> Result<usize, VerifyError> {
    for (index, secret) in secrets.iter().enumerate() {
        if secret.trim().is_empty() {
            // An empty secret would let anyone sign; configuration refuses them, and so does this.
            continue;
        }
        let mut matched = false;
        for candidate in expected(secret) {
            for signature in presented {
                matched |= crate::secrets::constant_time_eq(signature, &candidate);
            }
        }
        if matched {
            return Ok(index);
        }
    }
    Err(VerifyError::SignatureMismatch)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    BASE64.decode(text).ok()
}

/// Standard Webhooks: `{id}.{timestamp}.{body}`, signed with HMAC-SHA256 (`v1`, secret base64
/// after `whsec_`) or Ed25519 (`v1a`, trusted public key base64 after `whpk_`).
fn standard_webhooks(secrets: &[String], request: &SignedRequest<'_>, window: Window) -> Result<Verified, VerifyError> {
    let headers = request.headers;
    let either = |primary: &'static str, alias: &'static str| -> Result<&str, VerifyError> {
        header(headers, primary)?.or(header(headers, alias)?).ok_or(VerifyError::MissingHeader(primary.into()))
    };
    let id = either("webhook-id", "svix-id")?;
    let timestamp_text = either("webhook-timestamp", "svix-timestamp")?;
    let signature = either("webhook-signature", "svix-signature")?;
    let signed_at = unix_seconds(timestamp_text, "webhook-timestamp")?;
    let entries = |version: &str| -> Vec<Vec<u8>> {
        signature
            .split(' ')
            .filter_map(|entry| entry.strip_prefix(version).and_then(|rest| rest.strip_prefix(',')))
            .filter_map(decode_base64)
            .collect()
    };
    let (symmetric, asymmetric) = (entries("v1"), entries("v1a"));
    if symmetric.is_empty() && asymmetric.is_empty() {
        return Err(VerifyError::MalformedHeader {
            header: "webhook-signature".into(),
            reason: "no v1 or v1a signature",
        });
    }
    let signed: Vec<u8> = [id.as_bytes(), b".", timestamp_text.as_bytes(), b".", request.body].concat();
    let mut secret_index = None;
    for (index, secret) in secrets.iter().enumerate() {
        let matched = if let Some(public_key) = secret.strip_prefix("whpk_") {
            asymmetric
                .iter()
                .any(|signature| ed25519_verifies(decode_base64(public_key).as_deref(), &signed, signature))
        } else {
            decode_base64(secret.strip_prefix("whsec_").unwrap_or(secret)).filter(|key| !key.is_empty()).is_some_and(
                |key| {
                    let expected = hmac(HmacAlgorithm::Sha256, &key, &[&signed]);
                    symmetric
                        .iter()
                        .fold(false, |found, signature| found | crate::secrets::constant_time_eq(signature, &expected))
                },
            )
        };
        if matched {
            secret_index = Some(index);
            break;
        }
    }
    let secret_index = secret_index.ok_or(VerifyError::SignatureMismatch)?;
    Ok(Verified { secret_index, signed_at: Some(window.check(signed_at)?) })
}

/// True when `signature` is a valid Ed25519 signature of `message` by `public_key` (32 bytes).
fn ed25519_verifies(public_key: Option<&[u8]>, message: &[u8], signature: &[u8]) -> bool {
    let Some(Ok(key_bytes)) = public_key.map(<[u8; 32]>::try_from) else { return false };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes) else { return false };
    let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else { return false };
    key.verify_strict(message, &signature).is_ok()
}

/// The header layout shared by Stripe, Calendly and Paddle: items `key=value` separated by
/// `separator`, one timestamp item and one or more hex signature items, signed as hex
/// HMAC-SHA256 over `{timestamp}{joiner}{body}`.
struct TimestampedHexHeader {
    header: &'static str,
    separator: char,
    timestamp_key: &'static str,
    signature_key: &'static str,
    joiner: &'static [u8],
}

const STRIPE_HEADER: TimestampedHexHeader = TimestampedHexHeader {
    header: "stripe-signature",
    separator: ',',
    timestamp_key: "t",
    signature_key: "v1",
    joiner: b".",
};
const CALENDLY_HEADER: TimestampedHexHeader = TimestampedHexHeader {
    header: "calendly-webhook-signature",
    separator: ',',
    timestamp_key: "t",
    signature_key: "v1",
    joiner: b".",
};
const PADDLE_HEADER: TimestampedHexHeader = TimestampedHexHeader {
    header: "paddle-signature",
    separator: ';',
    timestamp_key: "ts",
    signature_key: "h1",
    joiner: b":",
};

/// Stripe (`t=..,v1=..`, keyed by the whole `whsec_` string), Calendly (`t=..,v1=..`) and
/// Paddle Billing (`ts=..;h1=..`): any of several signatures may match (secret rolls).
fn timestamped_hex(
    layout: &TimestampedHexHeader,
    secrets: &[String],
    request: &SignedRequest<'_>,
    window: Window,
) -> Result<Verified, VerifyError> {
    let value = required(request.headers, layout.header)?;
    let mut timestamp = None;
    let mut presented = Vec::new();
    for item in value.split(layout.separator) {
        match item.trim().split_once('=') {
            Some((key, text)) if key == layout.timestamp_key => timestamp = Some(text),
            Some((key, signature)) if key == layout.signature_key => presented.extend(decode_hex(signature)),
            _ => {}
        }
    }
    let malformed = |reason| VerifyError::MalformedHeader { header: layout.header.into(), reason };
    let timestamp = timestamp.ok_or_else(|| malformed("no timestamp item"))?;
    if presented.is_empty() {
        return Err(malformed("no signature item"));
    }
    let signed_at = unix_seconds(timestamp, layout.header)?;
    let secret_index = match_secret(secrets, &presented, |secret| {
        vec![hmac(HmacAlgorithm::Sha256, secret.as_bytes(), &[timestamp.as_bytes(), layout.joiner, request.body])]
    })?;
    Ok(Verified { secret_index, signed_at: Some(window.check(signed_at)?) })
}

/// GitHub: `X-Hub-Signature-256: sha256={hex}`; legacy `X-Hub-Signature: sha1={hex}` if allowed.
fn github(secrets: &[String], request: &SignedRequest<'_>, allow_sha1: bool) -> Result<Verified, VerifyError> {
    let unsigned = Verified { secret_index: 0, signed_at: None };
    if let Some(value) = header(request.headers, "x-hub-signature-256")? {
        let presented = value.strip_prefix("sha256=").and_then(decode_hex).ok_or(VerifyError::MalformedHeader {
            header: "x-hub-signature-256".into(),
            reason: "expected sha256=<hex>",
        })?;
        let secret_index = match_secret(secrets, &[presented], |secret| {
            vec![hmac(HmacAlgorithm::Sha256, secret.as_bytes(), &[request.body])]
        })?;
        return Ok(Verified { secret_index, ..unsigned });
    }
    if allow_sha1 && let Some(value) = header(request.headers, "x-hub-signature")? {
        let presented = value
            .strip_prefix("sha1=")
            .and_then(decode_hex)
            .ok_or(VerifyError::MalformedHeader { header: "x-hub-signature".into(), reason: "expected sha1=<hex>" })?;
        let secret_index = match_secret(secrets, &[presented], |secret| {
            vec![hmac(HmacAlgorithm::Sha1, secret.as_bytes(), &[request.body])]
        })?;
        return Ok(Verified { secret_index, ..unsigned });
    }
    Err(VerifyError::MissingHeader("x-hub-signature-256".into()))
}

/// The forms of a URL HubSpot may have signed for v3: as sent, and with the percent-escapes
/// its documentation decodes (the official SDKs do not decode, so both are accepted).
fn hubspot_uri_forms(url: &str) -> Vec<String> {
    const DECODED: &[(&str, &str)] = &[
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    let mut decoded = url.to_owned();
    for (escape, character) in DECODED {
        decoded = decoded.replace(escape, character).replace(&escape.to_ascii_lowercase(), character);
    }
    if decoded == url { vec![url.to_owned()] } else { vec![url.to_owned(), decoded] }
}

/// HubSpot v3 (HMAC with a millisecond timestamp), else v2 or v1 (plain SHA-256 of the secret
/// and the request), as the headers say.
fn hubspot(
    secrets: &[String],
    request: &SignedRequest<'_>,
    window: Window,
    allow_v1_v2: bool,
) -> Result<Verified, VerifyError> {
    let headers = request.headers;
    if let Some(signature) = header(headers, "x-hubspot-signature-v3")? {
        const TIMESTAMP: &str = "x-hubspot-request-timestamp";
        let millis_text = required(headers, TIMESTAMP)?;
        let signed_at =
            millis_text.parse::<i64>().ok().and_then(|millis| Timestamp::from_millisecond(millis).ok()).ok_or(
                VerifyError::MalformedHeader {
                    header: TIMESTAMP.into(),
                    reason: "expected a Unix time in milliseconds",
                },
            )?;
        let presented = decode_base64(signature).ok_or(VerifyError::MalformedHeader {
            header: "x-hubspot-signature-v3".into(),
            reason: "expected base64",
        })?;
        let uris = hubspot_uri_forms(request.url);
        let secret_index = match_secret(secrets, &[presented], |secret| {
            uris.iter()
                .map(|uri| {
                    hmac(
                        HmacAlgorithm::Sha256,
                        secret.as_bytes(),
                        &[request.method.as_bytes(), uri.as_bytes(), request.body, millis_text.as_bytes()],
                    )
                })
                .collect()
        })?;
        return Ok(Verified { secret_index, signed_at: Some(window.check(signed_at)?) });
    }
    if !allow_v1_v2 {
        return Err(VerifyError::MissingHeader("x-hubspot-signature-v3".into()));
    }
    let signature = required(headers, "x-hubspot-signature")?;
    let presented = decode_hex(signature)
        .ok_or(VerifyError::MalformedHeader { header: "x-hubspot-signature".into(), reason: "expected hex" })?;
    let version = header(headers, "x-hubspot-signature-version")?.unwrap_or("v1");
    let secret_index = match version {
        "v1" => match_secret(secrets, &[presented], |secret| vec![sha256(&[secret.as_bytes(), request.body])])?,
        "v2" => match_secret(secrets, &[presented], |secret| {
            vec![sha256(&[secret.as_bytes(), request.method.as_bytes(), request.url.as_bytes(), request.body])]
        })?,
        _ => {
            return Err(VerifyError::MalformedHeader {
                header: "x-hubspot-signature-version".into(),
                reason: "expected v1 or v2",
            });
        }
    };
    Ok(Verified { secret_index, signed_at: None })
}

/// Shopify: base64 HMAC-SHA256 of the body.
fn shopify(secrets: &[String], request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
    const HEADER: &str = "x-shopify-hmac-sha256";
    let presented = decode_base64(required(request.headers, HEADER)?)
        .ok_or(VerifyError::MalformedHeader { header: HEADER.into(), reason: "expected base64" })?;
    let secret_index = match_secret(secrets, &[presented], |secret| {
        vec![hmac(HmacAlgorithm::Sha256, secret.as_bytes(), &[request.body])]
    })?;
    Ok(Verified { secret_index, signed_at: None })
}

/// The header names of a `v0` scheme: Slack and Zoom sign the same way under other names.
struct V0Headers {
    signature: &'static str,
    timestamp: &'static str,
}

const SLACK_HEADERS: V0Headers = V0Headers { signature: "x-slack-signature", timestamp: "x-slack-request-timestamp" };
const ZOOM_HEADERS: V0Headers = V0Headers { signature: "x-zm-signature", timestamp: "x-zm-request-timestamp" };

/// Slack, and Zoom with the app's secret token: `v0={hex}` over `v0:{timestamp}:{body}`.
fn v0(
    headers: &V0Headers,
    secrets: &[String],
    request: &SignedRequest<'_>,
    window: Window,
) -> Result<Verified, VerifyError> {
    let timestamp = required(request.headers, headers.timestamp)?;
    let presented = required(request.headers, headers.signature)?
        .strip_prefix("v0=")
        .and_then(decode_hex)
        .ok_or(VerifyError::MalformedHeader { header: headers.signature.into(), reason: "expected v0=<hex>" })?;
    let signed_at = unix_seconds(timestamp, headers.timestamp)?;
    let secret_index = match_secret(secrets, &[presented], |secret| {
        vec![hmac(HmacAlgorithm::Sha256, secret.as_bytes(), &[b"v0:", timestamp.as_bytes(), b":", request.body])]
    })?;
    Ok(Verified { secret_index, signed_at: Some(window.check(signed_at)?) })
}

/// The URL as given, and with its default port added or removed: Twilio's validators try both.
fn twilio_url_forms(url: &str) -> Vec<String> {
    let mut forms = vec![url.to_owned()];
    let Ok(uri) = url.parse::<http::Uri>() else { return forms };
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else { return forms };
    let default_port = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return forms,
    };
    let rest = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    match uri.port_u16() {
        Some(port) if port == default_port => forms.push(format!("{scheme}://{host}{rest}")),
        None => forms.push(format!("{scheme}://{host}:{default_port}{rest}")),
        Some(_) => {}
    }
    forms
}

/// Twilio: base64 HMAC of the URL followed by the sorted form parameters; for JSON bodies the
/// URL carries `bodySHA256` and the parameters are empty. SHA-1 by default; HMAC-SHA256 when
/// `X-Twilio-Webhooks-Signature-Settings` says `algorithm=HMAC_SHA256` (shared-key webhooks).
fn twilio(secrets: &[String], request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
    const HEADER: &str = "x-twilio-signature";
    const SETTINGS: &str = "x-twilio-webhooks-signature-settings";
    let sha256_signed = header(request.headers, SETTINGS)?.is_some_and(|settings| {
        settings.split(',').any(|item| item.trim().eq_ignore_ascii_case("algorithm=HMAC_SHA256"))
    });
    let algorithm = if sha256_signed { HmacAlgorithm::Sha256 } else { HmacAlgorithm::Sha1 };
    let presented = decode_base64(required(request.headers, HEADER)?)
        .ok_or(VerifyError::MalformedHeader { header: HEADER.into(), reason: "expected base64" })?;
    let body_sha256 = request
        .url
        .split_once('?')
        .and_then(|(_, query)| form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "bodySHA256"))
        .map(|(_, value)| value.into_owned());
    let parameters = match body_sha256 {
        Some(expected) => {
            let actual = hex::encode(sha256(&[request.body]));
            if !crate::secrets::constant_time_eq(actual.as_bytes(), expected.to_ascii_lowercase().as_bytes()) {
                return Err(VerifyError::SignatureMismatch);
            }
            String::new()
        }
        None => sorted_parameters(request.body),
    };
    let urls = twilio_url_forms(request.url);
    let secret_index = match_secret(secrets, &[presented], |secret| {
        urls.iter().map(|url| hmac(algorithm, secret.as_bytes(), &[url.as_bytes(), parameters.as_bytes()])).collect()
    })?;
    Ok(Verified { secret_index, signed_at: None })
}

/// Form parameters as Twilio signs them: keys sorted, each key's values de-duplicated and
/// sorted, then `key` + `value` for every value.
fn sorted_parameters(body: &[u8]) -> String {
    let mut parameters: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for (key, value) in form_urlencoded::parse(body) {
        parameters.entry(key.into_owned()).or_default().insert(value.into_owned());
    }
    let mut signed = String::new();
    for (key, values) in parameters {
        for value in values {
            signed.push_str(&key);
            signed.push_str(&value);
        }
    }
    signed
}

/// Square: base64 HMAC-SHA256 of the notification URL followed by the body.
fn square(secrets: &[String], request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
    const HEADER: &str = "x-square-hmacsha256-signature";
    let presented = decode_base64(required(request.headers, HEADER)?)
        .ok_or(VerifyError::MalformedHeader { header: HEADER.into(), reason: "expected base64" })?;
    let secret_index = match_secret(secrets, &[presented], |secret| {
        vec![hmac(HmacAlgorithm::Sha256, secret.as_bytes(), &[request.url.as_bytes(), request.body])]
    })?;
    Ok(Verified { secret_index, signed_at: None })
}

/// Discord: Ed25519 (hex) over `{timestamp}{body}` with the application's public key (hex).
fn discord(secrets: &[String], request: &SignedRequest<'_>, window: Window) -> Result<Verified, VerifyError> {
    const SIGNATURE: &str = "x-signature-ed25519";
    const TIMESTAMP: &str = "x-signature-timestamp";
    let timestamp = required(request.headers, TIMESTAMP)?;
    let signature = decode_hex(required(request.headers, SIGNATURE)?)
        .ok_or(VerifyError::MalformedHeader { header: SIGNATURE.into(), reason: "expected hex" })?;
    let signed_at = unix_seconds(timestamp, TIMESTAMP)?;
    let message = [timestamp.as_bytes(), request.body].concat();
    let secret_index = secrets
        .iter()
        .position(|public_key| ed25519_verifies(decode_hex(public_key).as_deref(), &message, &signature))
        .ok_or(VerifyError::SignatureMismatch)?;
    Ok(Verified { secret_index, signed_at: Some(window.check(signed_at)?) })
}

/// Zoom's answer to `endpoint.url_validation`: the hex HMAC-SHA256 of the plain token.
pub(super) fn zoom_encrypted_token(secret: &str, plain_token: &str) -> String {
    hex::encode(hmac(HmacAlgorithm::Sha256, secret.as_bytes(), &[plain_token.as_bytes()]))
}

/// SendGrid Event Webhook: ECDSA P-256 with SHA-256 over `{timestamp}{body}`; the signature is
/// base64 DER and the configured key is base64 SPKI DER. SendGrid's signers emit high-S
/// signatures (the published vector has one); p256's verifier accepts them as ECDSA allows.
fn sendgrid(secrets: &[String], request: &SignedRequest<'_>, window: Window) -> Result<Verified, VerifyError> {
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::DecodePublicKey;
    const SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
    const TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";
    let timestamp = required(request.headers, TIMESTAMP)?;
    let signature = decode_base64(required(request.headers, SIGNATURE)?)
        .and_then(|der| p256::ecdsa::Signature::from_der(&der).ok())
        .ok_or(VerifyError::MalformedHeader {
            header: SIGNATURE.into(),
            reason: "expected a base64 DER ECDSA signature",
        })?;
    let signed_at = unix_seconds(timestamp, TIMESTAMP)?;
    let message = [timestamp.as_bytes(), request.body].concat();
    let secret_index = secrets
        .iter()
        .position(|public_key| {
            decode_base64(public_key)
                .and_then(|der| p256::ecdsa::VerifyingKey::from_public_key_der(&der).ok())
                .is_some_and(|key| key.verify(&message, &signature).is_ok())
        })
        .ok_or(VerifyError::SignatureMismatch)?;
    Ok(Verified { secret_index, signed_at: Some(window.check(signed_at)?) })
}

/// Mailgun: the JSON body's `signature` object; hex HMAC-SHA256 of `{timestamp}{token}`.
fn mailgun(secrets: &[String], request: &SignedRequest<'_>, window: Window) -> Result<Verified, VerifyError> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        signature: MailgunSignature,
    }
    #[derive(serde::Deserialize)]
    struct MailgunSignature {
        timestamp: String,
        token: String,
        signature: String,
    }
    let envelope: Envelope = serde_json::from_slice(request.body)
        .map_err(|_| VerifyError::MissingHeader("signature (the body's signature object)".into()))?;
    let MailgunSignature { timestamp, token, signature } = envelope.signature;
    mailgun_fields(
        secrets,
        MailgunFields { timestamp: &timestamp, token: &token, signature: &signature },
        "signature.",
        window,
    )
}

/// Mailgun's three signature fields, wherever they travel: a webhook's JSON `signature` object
/// or a route's form fields.
pub(super) struct MailgunFields<'a> {
    pub timestamp: &'a str,
    pub token: &'a str,
    pub signature: &'a str,
}

/// HMAC-SHA256 of timestamp and token, then the timestamp's window. `place` prefixes the field
/// names in errors (`signature.` for the JSON object).
fn mailgun_fields(
    secrets: &[String],
    fields: MailgunFields<'_>,
    place: &str,
    window: Window,
) -> Result<Verified, VerifyError> {
    let presented = decode_hex(fields.signature)
        .ok_or(VerifyError::MalformedHeader { header: format!("{place}signature"), reason: "expected hex" })?;
    let signed_at = unix_seconds(fields.timestamp, &format!("{place}timestamp"))?;
    let secret_index = match_secret(secrets, &[presented], |key| {
        vec![hmac(HmacAlgorithm::Sha256, key.as_bytes(), &[fields.timestamp.as_bytes(), fields.token.as_bytes()])]
    })?;
    Ok(Verified { secret_index, signed_at: Some(window.check(signed_at)?) })
}

/// Mailgun's signature as a route posts it (form fields `timestamp`, `token`, `signature`).
pub(super) fn mailgun_form(
    secrets: &[String],
    fields: MailgunFields<'_>,
    now: Timestamp,
    tolerance: Duration,
) -> Result<Verified, VerifyError> {
    mailgun_fields(secrets, fields, "", Window { now, tolerance })
}

/// A header of `prefix` followed by an encoded HMAC of the body.
fn body_hmac(
    secrets: &[String],
    request: &SignedRequest<'_>,
    header_name: &'static str,
    prefix: &str,
    decode: fn(&str) -> Option<Vec<u8>>,
    algorithm: HmacAlgorithm,
) -> Result<Verified, VerifyError> {
    let presented = required(request.headers, header_name)?
        .strip_prefix(prefix)
        .and_then(decode)
        .ok_or(VerifyError::MalformedHeader { header: header_name.into(), reason: "not the documented format" })?;
    let secret_index =
        match_secret(secrets, &[presented], |secret| vec![hmac(algorithm, secret.as_bytes(), &[request.body])])?;
    Ok(Verified { secret_index, signed_at: None })
}

/// Intercom: `X-Hub-Signature: sha1=<hex>` of the body.
fn intercom(secrets: &[String], request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
    body_hmac(secrets, request, "x-hub-signature", "sha1=", decode_hex, HmacAlgorithm::Sha1)
}

/// Typeform: `Typeform-Signature: sha256=<base64>` of the body.
fn typeform(secrets: &[String], request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
    body_hmac(secrets, request, "typeform-signature", "sha256=", decode_base64, HmacAlgorithm::Sha256)
}

/// Zendesk: base64 HMAC-SHA256 of `{timestamp}{body}`, the timestamp as its header carries it.
fn zendesk(secrets: &[String], request: &SignedRequest<'_>, window: Window) -> Result<Verified, VerifyError> {
    const SIGNATURE: &str = "x-zendesk-webhook-signature";
    const TIMESTAMP: &str = "x-zendesk-webhook-signature-timestamp";
    let timestamp = required(request.headers, TIMESTAMP)?;
    let presented = decode_base64(required(request.headers, SIGNATURE)?)
        .ok_or(VerifyError::MalformedHeader { header: SIGNATURE.into(), reason: "expected base64" })?;
    let secret_index = match_secret(secrets, &[presented], |secret| {
        vec![hmac(HmacAlgorithm::Sha256, secret.as_bytes(), &[timestamp.as_bytes(), request.body])]
    })?;
    let signed_at = timestamp
        .parse::<Timestamp>()
        .map_err(|_| VerifyError::MalformedHeader { header: TIMESTAMP.into(), reason: "expected an RFC 3339 time" })?;
    Ok(Verified { secret_index, signed_at: Some(window.check(signed_at)?) })
}

/// Linear: `linear-signature` hex HMAC-SHA256 of the body; `webhookTimestamp` (ms) in the body.
fn linear(secrets: &[String], request: &SignedRequest<'_>, window: Window) -> Result<Verified, VerifyError> {
    const HEADER: &str = "linear-signature";
    let presented = decode_hex(required(request.headers, HEADER)?)
        .ok_or(VerifyError::MalformedHeader { header: HEADER.into(), reason: "expected hex" })?;
    let secret_index = match_secret(secrets, &[presented], |secret| {
        vec![hmac(HmacAlgorithm::Sha256, secret.as_bytes(), &[request.body])]
    })?;
    let millis = serde_json::from_slice::<serde_json::Value>(request.body)
        .ok()
        .and_then(|body| body.get("webhookTimestamp").and_then(serde_json::Value::as_i64))
        .and_then(|millis| Timestamp::from_millisecond(millis).ok())
        .ok_or(VerifyError::MissingHeader("webhookTimestamp (in the body)".into()))?;
    Ok(Verified { secret_index, signed_at: Some(window.check(millis)?) })
}

/// GitLab: the `X-Gitlab-Token` header is the secret itself.
fn gitlab(secrets: &[String], request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
    let token = required(request.headers, "x-gitlab-token")?;
    let secret_index = match_secret(secrets, &[token.as_bytes().to_vec()], |secret| vec![secret.as_bytes().to_vec()])?;
    Ok(Verified { secret_index, signed_at: None })
}

/// HTTP Basic auth: `Authorization: Basic base64(user:password)`, the secret being `user:password`.
fn basic_auth(secrets: &[String], request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
    let credentials = required(request.headers, "authorization")?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, encoded)| decode_base64(encoded.trim()))
        .ok_or(VerifyError::MalformedHeader { header: "authorization".into(), reason: "expected Basic credentials" })?;
    let secret_index = match_secret(secrets, &[credentials], |secret| vec![secret.as_bytes().to_vec()])?;
    Ok(Verified { secret_index, signed_at: None })
}

/// A `token` query parameter carrying the secret itself.
fn url_token(secrets: &[String], request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
    let token = request
        .url
        .split_once('?')
        .and_then(|(_, query)| form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "token"))
        .map(|(_, value)| value.into_owned())
        .ok_or(VerifyError::MissingHeader("token (query parameter)".into()))?;
    let secret_index = match_secret(secrets, &[token.into_bytes()], |secret| vec![secret.as_bytes().to_vec()])?;
    Ok(Verified { secret_index, signed_at: None })
}

/// A scheme described as data: header, algorithm, encoding, prefix and signed template.
fn generic_hmac(
    scheme: &GenericHmac,
    secrets: &[String],
    request: &SignedRequest<'_>,
    window: Window,
) -> Result<Verified, VerifyError> {
    let value = required(request.headers, &scheme.header)?;
    let decode = match scheme.encoding {
        SignatureEncoding::Hex => decode_hex,
        SignatureEncoding::Base64 => decode_base64,
    };
    let presented = value
        .strip_prefix(scheme.prefix.as_str())
        .and_then(decode)
        .ok_or(VerifyError::MalformedHeader { header: scheme.header.clone(), reason: "not the configured format" })?;
    let timestamp = scheme.timestamp_header.as_deref().map(|name| required(request.headers, name)).transpose()?;
    let id = scheme.id_header.as_deref().map(|name| required(request.headers, name)).transpose()?;
    let mut signed: Vec<&[u8]> = Vec::with_capacity(scheme.signed.len());
    for part in &scheme.signed {
        signed.push(match part {
            SignedPart::Literal(text) => text.as_bytes(),
            SignedPart::Body => request.body,
            SignedPart::Timestamp => timestamp.unwrap_or_default().as_bytes(),
            SignedPart::Id => id.unwrap_or_default().as_bytes(),
            SignedPart::Method => request.method.as_bytes(),
            SignedPart::Url => request.url.as_bytes(),
        });
    }
    let secret_index =
        match_secret(secrets, &[presented], |secret| vec![hmac(scheme.algorithm, secret.as_bytes(), &signed)])?;
    let signed_at = match (timestamp, &scheme.timestamp_header) {
        (Some(text), Some(name)) => Some(window.check(unix_seconds(text, name)?)?),
        _ => None,
    };
    Ok(Verified { secret_index, signed_at })
}

/// The MAC, for tests that sign requests themselves.
#[cfg(test)]
pub(super) mod test_support {
    use super::HmacAlgorithm;

    pub fn hmac(algorithm: HmacAlgorithm, key: &[u8], message: &[u8]) -> Vec<u8> {
        super::hmac(algorithm, key, &[message])
    }
}
