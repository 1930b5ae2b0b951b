//! A receiver's check of Standard Webhooks signatures, written for the tests from the
//! specification (<https://www.standardwebhooks.com>) and apart from the gateway's signer
//! (`deliver::sign`, neither called nor copied), so that a delivery test never checks the
//! gateway against itself. What a receiver does: the `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` headers must be present; the secret is `whsec_` and the base64 of the
//! key; the signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the signature is the
//! base64 of its HMAC-SHA256; the header holds space-separated `v1,<signature>` entries (other
//! versions are skipped) and one must match; the timestamp must be within five minutes of now.
//! Its own tests hold it to the published example and a tampered twin of each part.

use std::collections::BTreeMap;

use base64::Engine;
use hmac::{KeyInit, Mac};

/// How far a timestamp may be from now, either way: the five minutes the specification's
/// libraries allow.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Why a receiver refuses a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    MissingHeader(&'static str),
    /// The secret is not `whsec_` followed by base64.
    Secret(String),
    /// The timestamp is not a whole number of seconds.
    Timestamp(String),
    /// No `v1` entry of the header is the signature of this request with this secret.
    NoMatchingSignature,
    /// Signed more than [`TOLERANCE_SECS`] before `now`.
    TooOld,
    /// Signed more than [`TOLERANCE_SECS`] after `now`.
    TooNew,
}

/// Checks a request as a receiver holding `secret` would, at `now` (Unix seconds). `headers`
/// are keyed by lower-case name.
pub fn verify(secret: &str, headers: &BTreeMap<String, String>, body: &[u8], now: i64) -> Result<(), Invalid> {
    let header = |name: &'static str| headers.get(name).map(String::as_str).ok_or(Invalid::MissingHeader(name));
    let (id, timestamp, signatures) =
        (header("webhook-id")?, header("webhook-timestamp")?, header("webhook-signature")?);
    let key =
        secret.strip_prefix("whsec_").ok_or_else(|| Invalid::Secret("no whsec_ prefix".into())).and_then(|key| {
            base64::engine::general_purpose::STANDARD.decode(key).map_err(|e| Invalid::Secret(e.to_string()))
        })?;

    let mut signed = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC-SHA256 takes a key of any length");
    signed.update(format!("{id}.{timestamp}.").as_bytes());
    signed.update(body);
    let matches = signatures.split(' ').filter_map(|entry| entry.split_once(',')).any(|(version, signature)| {
        version == "v1"
            && base64::engine::general_purpose::STANDARD
                .decode(signature)
                .is_ok_and(|signature| signed.clone().verify_slice(&signature).is_ok())
    });
    if !matches {
        return Err(Invalid::NoMatchingSignature);
    }

    let signed_at: i64 = timestamp.parse().map_err(|_| Invalid::Timestamp(timestamp.to_owned()))?;
    if signed_at < now - TOLERANCE_SECS {
        return Err(Invalid::TooOld);
    }
    if signed_at > now + TOLERANCE_SECS {
        return Err(Invalid::TooNew);
    }
    Ok(())
}

/// The example the specification's libraries test against: a secret, a message and its
/// signature.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TIMESTAMP: i64 = 1614265330;
const BODY: &str = r#"{"test": 2432232314}"#;
const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn headers(id: &str, timestamp: &str, signature: &str) -> BTreeMap<String, String> {
    [("webhook-id", id), ("webhook-timestamp", timestamp), ("webhook-signature", signature)]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[track_caller]
fn check(secret: &str, headers: BTreeMap<String, String>, body: &str, now: i64, expected: Result<(), Invalid>) {
    assert_eq!(verify(secret, &headers, body.as_bytes(), now), expected);
}

#[test]
fn the_published_example_verifies() {
    check(SECRET, headers(ID, &TIMESTAMP.to_string(), SIGNATURE), BODY, TIMESTAMP, Ok(()));
}

#[test]
fn a_change_to_any_signed_part_or_the_secret_is_refused() {
    let timestamp = &TIMESTAMP.to_string();
    let refused = || Err(Invalid::NoMatchingSignature);
    check(SECRET, headers(ID, timestamp, SIGNATURE), r#"{"test": 2432232315}"#, TIMESTAMP, refused());
    check(SECRET, headers("msg_p5jXN8AQM9LWM0D4loKWxJeK", timestamp, SIGNATURE), BODY, TIMESTAMP, refused());
    check(SECRET, headers(ID, &(TIMESTAMP + 1).to_string(), SIGNATURE), BODY, TIMESTAMP, refused());
    let other_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx";
    check(other_secret, headers(ID, timestamp, SIGNATURE), BODY, TIMESTAMP, refused());
    let altered = "v1,g1hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    check(SECRET, headers(ID, timestamp, altered), BODY, TIMESTAMP, refused());
}

#[test]
fn one_matching_v1_entry_among_several_is_enough_and_other_versions_do_not_count() {
    let timestamp = &TIMESTAMP.to_string();
    let several = format!("v1a,c2lnbmF0dXJl v1,AAAA {SIGNATURE}");
    check(SECRET, headers(ID, timestamp, &several), BODY, TIMESTAMP, Ok(()));
    let other_version = SIGNATURE.replacen("v1,", "v2,", 1);
    check(SECRET, headers(ID, timestamp, &other_version), BODY, TIMESTAMP, Err(Invalid::NoMatchingSignature));
}

#[test]
fn a_timestamp_more_than_five_minutes_away_is_refused() {
    let signed = headers(ID, &TIMESTAMP.to_string(), SIGNATURE);
    check(SECRET, signed.clone(), BODY, TIMESTAMP + TOLERANCE_SECS, Ok(()));
    check(SECRET, signed.clone(), BODY, TIMESTAMP + TOLERANCE_SECS + 1, Err(Invalid::TooOld));
    check(SECRET, signed.clone(), BODY, TIMESTAMP - TOLERANCE_SECS, Ok(()));
    check(SECRET, signed, BODY, TIMESTAMP - TOLERANCE_SECS - 1, Err(Invalid::TooNew));
}

#[test]
fn a_missing_header_or_a_malformed_secret_is_refused() {
    let mut unsigned = headers(ID, &TIMESTAMP.to_string(), SIGNATURE);
    unsigned.remove("webhook-signature");
    check(SECRET, unsigned, BODY, TIMESTAMP, Err(Invalid::MissingHeader("webhook-signature")));
    let signed = headers(ID, &TIMESTAMP.to_string(), SIGNATURE);
    let unprefixed = SECRET.trim_start_matches("whsec_");
    check(unprefixed, signed, BODY, TIMESTAMP, Err(Invalid::Secret("no whsec_ prefix".into())));
}
