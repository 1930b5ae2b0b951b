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

use super::{Scheme, SignedRequest, Verified, VerifyConfig, VerifyError};

pub(super) fn verify(
    config: &VerifyConfig,
    request: &SignedRequest<'_>,
    now: Timestamp,
) -> Result<Verified, VerifyError> {
    let window = Window { now, tolerance: config.tolerance };
    let secrets = &config.secrets;
    match config.scheme {
        Scheme::StandardWebhooks => standard_webhooks(secrets, request, window),
        Scheme::Stripe => stripe(secrets, request, window),
        Scheme::GitHub { allow_sha1 } => github(secrets, request, allow_sha1),
        Scheme::HubSpot => hubspot(secrets, request, window),
        Scheme::Shopify => shopify(secrets, request),
        Scheme::Slack => slack(secrets, request, window),
        Scheme::Twilio => twilio(secrets, request),
        Scheme::Square => square(secrets, request),
        Scheme::Paddle => paddle(secrets, request, window),
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

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, VerifyError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.trim()))
            .map_err(|_| VerifyError::MalformedHeader { header: name, reason: "not visible ASCII" }),
    }
}

fn required<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    header(headers, name)?.ok_or(VerifyError::MissingHeader(name))
}

fn unix_seconds(text: &str, header: &'static str) -> Result<Timestamp, VerifyError> {
    text.parse::<i64>()
        .ok()
        .and_then(|seconds| Timestamp::from_second(seconds).ok())
        .ok_or(VerifyError::MalformedHeader { header, reason: "expected a Unix time in seconds" })
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
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

/// Standard Webhooks v1: `{id}.{timestamp}.{body}`, secret base64 after `whsec_`.
fn standard_webhooks(secrets: &[String], request: &SignedRequest<'_>, window: Window) -> Result<Verified, VerifyError> {
    let headers = request.headers;
    let either = |primary: &'static str, alias: &'static str| -> Result<&str, VerifyError> {
        header(headers, primary)?.or(header(headers, alias)?).ok_or(VerifyError::MissingHeader(primary))
    };
    let id = either("webhook-id", "svix-id")?;
    let timestamp_text = either("webhook-timestamp", "svix-timestamp")?;
    let signature = either("webhook-signature", "svix-signature")?;
    let signed_at = unix_seconds(timestamp_text, "webhook-timestamp")?;
    let presented: Vec<Vec<u8>> =
        signature.split(' ').filter_map(|entry| entry.strip_prefix("v1,")).filter_map(decode_base64).collect();
    if presented.is_empty() {
        return Err(VerifyError::MalformedHeader { header: "webhook-signature", reason: "no v1 signature" });
    }
    let secret_index = match_secret(secrets, &presented, |secret| {
        let key = decode_base64(secret.strip_prefix("whsec_").unwrap_or(secret));
        key.map(|key| vec![hmac_sha256(&key, &[id.as_bytes(), b".", timestamp_text.as_bytes(), b".", request.body])])
            .unwrap_or_default()
    })?;
    Ok(Verified { secret_index, signed_at: Some(window.check(signed_at)?) })
}

/// Stripe: `t={unix},v1={hex}[,v1=...]` over `{t}.{body}`, keyed by the whole `whsec_` string.
fn stripe(secrets: &[String], request: &SignedRequest<'_>, window: Window) -> Result<Verified, VerifyError> {
    const HEADER: &str = "stripe-signature";
    let value = required(request.headers, HEADER)?;
    let mut timestamp = None;
    let mut presented = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", text)) => timestamp = Some(text),
            Some(("v1", signature)) => presented.extend(decode_hex(signature)),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::MalformedHeader { header: HEADER, reason: "no t= timestamp" })?;
    if presented.is_empty() {
        return Err(VerifyError::MalformedHeader { header: HEADER, reason: "no v1 signature" });
    }
    let signed_at = unix_seconds(timestamp, HEADER)?;
    let secret_index = match_secret(secrets, &presented, |secret| {
        vec![hmac_sha256(secret.as_bytes(), &[timestamp.as_bytes(), b".", request.body])]
    })?;
    Ok(Verified { secret_index, signed_at: Some(window.check(signed_at)?) })
}

/// GitHub: `X-Hub-Signature-256: sha256={hex}`; legacy `X-Hub-Signature: sha1={hex}` if allowed.
fn github(secrets: &[String], request: &SignedRequest<'_>, allow_sha1: bool) -> Result<Verified, VerifyError> {
    let unsigned = Verified { secret_index: 0, signed_at: None };
    if let Some(value) = header(request.headers, "x-hub-signature-256")? {
        let presented = value
            .strip_prefix("sha256=")
            .and_then(decode_hex)
            .ok_or(VerifyError::MalformedHeader { header: "x-hub-signature-256", reason: "expected sha256=<hex>" })?;
        let secret_index =
            match_secret(secrets, &[presented], |secret| vec![hmac_sha256(secret.as_bytes(), &[request.body])])?;
        return Ok(Verified { secret_index, ..unsigned });
    }
    if allow_sha1 && let Some(value) = header(request.headers, "x-hub-signature")? {
        let presented = value
            .strip_prefix("sha1=")
            .and_then(decode_hex)
            .ok_or(VerifyError::MalformedHeader { header: "x-hub-signature", reason: "expected sha1=<hex>" })?;
        let secret_index =
            match_secret(secrets, &[presented], |secret| vec![hmac_sha1(secret.as_bytes(), &[request.body])])?;
        return Ok(Verified { secret_index, ..unsigned });
    }
    Err(VerifyError::MissingHeader("x-hub-signature-256"))
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
fn hubspot(secrets: &[String], request: &SignedRequest<'_>, window: Window) -> Result<Verified, VerifyError> {
    let headers = request.headers;
    if let Some(signature) = header(headers, "x-hubspot-signature-v3")? {
        const TIMESTAMP: &str = "x-hubspot-request-timestamp";
        let millis_text = required(headers, TIMESTAMP)?;
        let signed_at =
            millis_text.parse::<i64>().ok().and_then(|millis| Timestamp::from_millisecond(millis).ok()).ok_or(
                VerifyError::MalformedHeader { header: TIMESTAMP, reason: "expected a Unix time in milliseconds" },
            )?;
        let presented = decode_base64(signature)
            .ok_or(VerifyError::MalformedHeader { header: "x-hubspot-signature-v3", reason: "expected base64" })?;
        let uris = hubspot_uri_forms(request.url);
        let secret_index = match_secret(secrets, &[presented], |secret| {
            uris.iter()
                .map(|uri| {
                    hmac_sha256(
                        secret.as_bytes(),
                        &[request.method.as_bytes(), uri.as_bytes(), request.body, millis_text.as_bytes()],
                    )
                })
                .collect()
        })?;
        return Ok(Verified { secret_index, signed_at: Some(window.check(signed_at)?) });
    }
    let signature = required(headers, "x-hubspot-signature")?;
    let presented = decode_hex(signature)
        .ok_or(VerifyError::MalformedHeader { header: "x-hubspot-signature", reason: "expected hex" })?;
    let version = header(headers, "x-hubspot-signature-version")?.unwrap_or("v1");
    let secret_index = match version {
        "v1" => match_secret(secrets, &[presented], |secret| vec![sha256(&[secret.as_bytes(), request.body])])?,
        "v2" => match_secret(secrets, &[presented], |secret| {
            vec![sha256(&[secret.as_bytes(), request.method.as_bytes(), request.url.as_bytes(), request.body])]
        })?,
        _ => {
            return Err(VerifyError::MalformedHeader {
                header: "x-hubspot-signature-version",
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
        .ok_or(VerifyError::MalformedHeader { header: HEADER, reason: "expected base64" })?;
    let secret_index =
        match_secret(secrets, &[presented], |secret| vec![hmac_sha256(secret.as_bytes(), &[request.body])])?;
    Ok(Verified { secret_index, signed_at: None })
}

/// Slack: `v0={hex}` over `v0:{timestamp}:{body}`.
fn slack(secrets: &[String], request: &SignedRequest<'_>, window: Window) -> Result<Verified, VerifyError> {
    const SIGNATURE: &str = "x-slack-signature";
    const TIMESTAMP: &str = "x-slack-request-timestamp";
    let timestamp = required(request.headers, TIMESTAMP)?;
    let presented = required(request.headers, SIGNATURE)?
        .strip_prefix("v0=")
        .and_then(decode_hex)
        .ok_or(VerifyError::MalformedHeader { header: SIGNATURE, reason: "expected v0=<hex>" })?;
    let signed_at = unix_seconds(timestamp, TIMESTAMP)?;
    let secret_index = match_secret(secrets, &[presented], |secret| {
        vec![hmac_sha256(secret.as_bytes(), &[b"v0:", timestamp.as_bytes(), b":", request.body])]
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

/// Twilio: base64 HMAC-SHA1 of the URL followed by the sorted form parameters; for JSON bodies
/// the URL carries `bodySHA256` and the parameters are empty.
fn twilio(secrets: &[String], request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
    const HEADER: &str = "x-twilio-signature";
    let presented = decode_base64(required(request.headers, HEADER)?)
        .ok_or(VerifyError::MalformedHeader { header: HEADER, reason: "expected base64" })?;
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
        urls.iter().map(|url| hmac_sha1(secret.as_bytes(), &[url.as_bytes(), parameters.as_bytes()])).collect()
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
        .ok_or(VerifyError::MalformedHeader { header: HEADER, reason: "expected base64" })?;
    let secret_index = match_secret(secrets, &[presented], |secret| {
        vec![hmac_sha256(secret.as_bytes(), &[request.url.as_bytes(), request.body])]
    })?;
    Ok(Verified { secret_index, signed_at: None })
}

/// Paddle Billing: `ts={unix};h1={hex}[;h1=...]` over `{ts}:{body}`.
fn paddle(secrets: &[String], request: &SignedRequest<'_>, window: Window) -> Result<Verified, VerifyError> {
    const HEADER: &str = "paddle-signature";
    let value = required(request.headers, HEADER)?;
    let mut timestamp = None;
    let mut presented = Vec::new();
    for item in value.split(';') {
        match item.trim().split_once('=') {
            Some(("ts", text)) => timestamp = Some(text),
            Some(("h1", signature)) => presented.extend(decode_hex(signature)),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::MalformedHeader { header: HEADER, reason: "no ts= timestamp" })?;
    if presented.is_empty() {
        return Err(VerifyError::MalformedHeader { header: HEADER, reason: "no h1 signature" });
    }
    let signed_at = unix_seconds(timestamp, HEADER)?;
    let secret_index = match_secret(secrets, &presented, |secret| {
        vec![hmac_sha256(secret.as_bytes(), &[timestamp.as_bytes(), b":", request.body])]
    })?;
    Ok(Verified { secret_index, signed_at: Some(window.check(signed_at)?) })
}

/// The primitives, for tests that sign requests themselves.
#[cfg(test)]
pub(super) mod test_support {
    pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
        super::hmac_sha256(key, &[message])
    }

    pub fn hmac_sha1(key: &[u8], message: &[u8]) -> Vec<u8> {
        super::hmac_sha1(key, &[message])
    }
}
