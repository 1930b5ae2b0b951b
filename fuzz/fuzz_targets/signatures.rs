//! Fuzzes every signature-header parser (`verify`): the first byte picks a scheme (each named
//! scheme, the legacy variants, and generic HMAC schemes described by the second byte), then
//! `Name: value` header lines up to an empty line, then the body. Also Mailgun's route fields,
//! and generic signed-content templates.
//!
//! Oracles: no panic; a scheme whose proof is a signature never verifies (the fuzzer does not
//! know the secrets, so a success would be a forgery); no error's text carries a secret.

#![no_main]

use std::time::Duration;

use hookgate::verify::{
    GenericHmac, HmacAlgorithm, Scheme, SignatureEncoding, SignedPart, SignedRequest, VerifyConfig, mailgun_route,
    verify,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const HMAC_SECRET: &str = "fuzz-secret-for-hookgate-0123456789";
/// base64 of "fuzz-secret-for-hookgate".
const STANDARD_WEBHOOKS_SECRET: &str = "whsec_ZnV6ei1zZWNyZXQtZm9yLWhvb2tnYXRl";
/// RFC 8032's first test public key.
const ED25519_PUBLIC_KEY_HEX: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
/// SendGrid's published test key (fixtures/signatures/published-vectors.json).
const P256_PUBLIC_KEY_B64: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";
const BASIC_AUTH_SECRET: &str = "fuzz-user:fuzz-password-0123456789";
const URL: &str = "https://hooks.example/api/webhooks/fuzz?token=t0ken&x=1";

const TEMPLATES: &[&str] =
    &["{body}", "{timestamp}.{body}", "v0:{timestamp}:{body}", "{id}.{timestamp}.{body}", "{method}{url}{body}"];

fn generic(selector: u8) -> Scheme {
    let algorithm = [HmacAlgorithm::Sha1, HmacAlgorithm::Sha256, HmacAlgorithm::Sha512][usize::from(selector % 3)];
    let encoding = if selector & 0x04 == 0 { SignatureEncoding::Hex } else { SignatureEncoding::Base64 };
    let prefix = if selector & 0x08 == 0 { String::new() } else { "sha256=".to_owned() };
    let template = TEMPLATES[usize::from(selector >> 4) % TEMPLATES.len()];
    let signed = SignedPart::parse_template(template).expect("the templates above are valid");
    Scheme::GenericHmac(Box::new(GenericHmac {
        header: "x-signature".into(),
        algorithm,
        encoding,
        prefix,
        signed,
        timestamp_header: (selector & 0x40 != 0 || template.contains("{timestamp}")).then(|| "x-timestamp".into()),
        id_header: template.contains("{id}").then(|| "x-id".into()),
    }))
}

fn scheme(selector: u8, detail: u8) -> Scheme {
    match selector % 24 {
        0 => Scheme::StandardWebhooks,
        1 => Scheme::Stripe,
        2 => Scheme::GitHub { allow_sha1: detail & 1 == 1 },
        3 => Scheme::HubSpot { allow_v1_v2: detail & 1 == 1 },
        4 => Scheme::Shopify,
        5 => Scheme::Slack,
        6 => Scheme::Twilio,
        7 => Scheme::Square,
        8 => Scheme::Paddle,
        9 => Scheme::Discord,
        10 => Scheme::Zoom,
        11 => Scheme::SendGridEcdsa,
        12 => Scheme::Mailgun,
        13 => Scheme::Intercom,
        14 => Scheme::Zendesk,
        15 => Scheme::Linear,
        16 => Scheme::Typeform,
        17 => Scheme::Calendly,
        18 => Scheme::GitLabToken,
        19 => Scheme::BasicAuth,
        20 => Scheme::UrlToken,
        _ => generic(detail),
    }
}

fn secrets(scheme: &Scheme) -> Vec<String> {
    let secrets: &[&str] = match scheme {
        Scheme::StandardWebhooks => &[STANDARD_WEBHOOKS_SECRET, "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
        Scheme::Discord => &[ED25519_PUBLIC_KEY_HEX],
        Scheme::SendGridEcdsa => &[P256_PUBLIC_KEY_B64],
        Scheme::BasicAuth => &[BASIC_AUTH_SECRET],
        _ => &[HMAC_SECRET, "an-older-rotated-secret-9876543210"],
    };
    secrets.iter().map(|secret| (*secret).to_owned()).collect()
}

/// Schemes whose proof is the secret itself: a request may legitimately carry it.
fn carries_the_secret(scheme: &Scheme) -> bool {
    matches!(scheme, Scheme::GitLabToken | Scheme::BasicAuth | Scheme::UrlToken)
}

fn split_request(text: &[u8]) -> (HeaderMap, &[u8]) {
    let mut headers = HeaderMap::new();
    let mut rest = text;
    while let Some(end) = rest.iter().position(|&byte| byte == b'\n') {
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&byte| byte == b':') else { continue };
        let value = line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    (headers, rest)
}

fuzz_target!(|data: &[u8]| {
    let [selector, detail, text @ ..] = data else { return };
    let scheme = scheme(*selector, *detail);
    let config = VerifyConfig { secrets: secrets(&scheme), tolerance: scheme.default_tolerance(), scheme };
    let (headers, body) = split_request(text);
    let request = SignedRequest { method: "POST", url: URL, headers: &headers, body };
    // The clock sits where most published vectors were signed, so stale-timestamp paths are reached.
    let now = jiff::Timestamp::from_second(1_614_265_330).expect("a valid time");
    match verify(&config, &request, now) {
        Ok(_) => {
            assert!(carries_the_secret(&config.scheme), "a signature verified without the secret: {:?}", config.scheme)
        }
        Err(error) => {
            let text = error.to_string();
            for secret in &config.secrets {
                assert!(!text.contains(secret.as_str()), "an error names a secret: {text}");
            }
            let _ = error.reason_class();
        }
    }
    // Mailgun's route fields: the first three header values, as the form would carry them.
    let mut values = headers.values().filter_map(|value| value.to_str().ok());
    if let (Some(timestamp), Some(token), Some(signature)) = (values.next(), values.next(), values.next()) {
        let secrets = vec![HMAC_SECRET.to_owned()];
        assert!(mailgun_route(&secrets, timestamp, token, signature, now, Duration::from_secs(300)).is_err());
    }
    if let Ok(template) = std::str::from_utf8(body) {
        if let Ok(parts) = SignedPart::parse_template(template) {
            assert!(parts.contains(&SignedPart::Body));
        }
    }
});
