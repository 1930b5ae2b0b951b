//! Standard Webhooks signatures for outgoing deliveries: `v1,` and base64 of HMAC-SHA256 over
//! `{id}.{timestamp}.{body}`, keyed by the base64 after `whsec_`; one per valid secret, separated
//! by spaces, so that receivers verify across a rotation. Pure.

use base64::Engine;
use hmac::{KeyInit, Mac};

/// The `webhook-signature` header value for `secrets` (newest first).
pub fn signature(secrets: &[&str], message_id: &str, timestamp: i64, body: &[u8]) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    secrets
        .iter()
        .filter_map(|secret| engine.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).ok())
        .map(|key| {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key");
            mac.update(message_id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", engine.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published example.
    #[test]
    fn the_published_standard_webhooks_example_signs_the_same() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn every_valid_secret_signs() {
        let signed = signature(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_AAAA"], "m", 1, b"{}");
        assert_eq!(signed.split(' ').count(), 2);
        assert!(signed.split(' ').all(|part| part.starts_with("v1,")));
    }
}
