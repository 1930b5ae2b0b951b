//! Verification of platform signatures over the exact raw bytes of a request.
//!
//! Each [`Scheme`] is implemented as its platform documents it (the published vectors in
//! `fixtures/signatures/published-vectors.json` are unit tests). Verification returns
//! `Result<Verified, VerifyError>`: a failure keeps its reason class, never the expected value.
//! Every comparison is constant-time. Several secrets may be configured at once (rotation): any
//! one that matches is accepted. This module is pure: no I/O, no clock (`now` is passed in),
//! no HTTP status codes; ingress maps [`VerifyError`] to a reply.

mod schemes;

#[cfg(test)]
use schemes::test_support as schemes_test_support;

use http::HeaderMap;
use jiff::Timestamp;
use std::time::Duration;

/// The signature schemes hookgate verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// Standard Webhooks: v1 (HMAC-SHA256, secrets `whsec_…`) and v1a (Ed25519, trusted public
    /// keys `whpk_…`), with the `svix-*` header aliases.
    StandardWebhooks,
    /// `Stripe-Signature: t=..,v1=..`.
    Stripe,
    /// `X-Hub-Signature-256`, and the legacy SHA-1 `X-Hub-Signature` when allowed.
    GitHub { allow_sha1: bool },
    /// HubSpot v3 (HMAC with a timestamp). The legacy v1 and v2 (plain SHA-256 of secret and
    /// content, open to length extension) only when `allow_v1_v2`.
    HubSpot { allow_v1_v2: bool },
    /// `X-Shopify-Hmac-Sha256`.
    Shopify,
    /// `X-Slack-Signature: v0=..` with `X-Slack-Request-Timestamp`.
    Slack,
    /// `X-Twilio-Signature`: form parameters, or `bodySHA256` for JSON bodies.
    Twilio,
    /// `x-square-hmacsha256-signature` over the notification URL and body.
    Square,
    /// `Paddle-Signature: ts=..;h1=..`.
    Paddle,
    /// Discord interactions: Ed25519 over timestamp and body, the application's public key (hex).
    Discord,
    /// Zoom: `x-zm-signature: v0=<hex>` over `v0:{x-zm-request-timestamp}:{body}`.
    Zoom,
    /// SendGrid Event Webhook: ECDSA P-256 over timestamp and body, the public key (base64 SPKI).
    SendGridEcdsa,
    /// Mailgun: the body's `signature` object, HMAC-SHA256 of timestamp and token.
    Mailgun,
    /// Intercom: `X-Hub-Signature: sha1=<hex>` of the body.
    Intercom,
    /// Zendesk: base64 HMAC-SHA256 of timestamp and body.
    Zendesk,
    /// Linear: hex HMAC-SHA256 of the body; the body's `webhookTimestamp` (ms) within tolerance.
    Linear,
    /// Typeform: `Typeform-Signature: sha256=<base64>` of the body.
    Typeform,
    /// Calendly: `Calendly-Webhook-Signature: t=..,v1=..` over `{t}.{body}`.
    Calendly,
    /// GitLab: `X-Gitlab-Token` carries the secret itself.
    GitLabToken,
    /// HTTP Basic auth (Postmark and platforms without signatures); the secret is `user:password`.
    BasicAuth,
    /// A secret `token` query parameter in the URL the platform posts to (platforms without
    /// signatures or Basic auth).
    UrlToken,
    /// Any other HMAC scheme, described as data.
    GenericHmac(Box<GenericHmac>),
}

/// What a scheme's name stands for in a source definition.
#[derive(Debug)]
pub enum NamedScheme {
    /// One scheme; the name says everything.
    Fixed(Scheme),
    /// A scheme whose legacy signatures a definition may allow (`allowLegacy`).
    Legacy(fn(bool) -> Scheme),
    /// The generic HMAC scheme, described by the definition's `hmac` object.
    Described,
}

/// The scheme names a source definition may use, in the order they are listed to users; the
/// definition checker reads names here and nowhere else.
pub const SCHEME_NAMES: &[(&str, NamedScheme)] = &[
    ("standard-webhooks", NamedScheme::Fixed(Scheme::StandardWebhooks)),
    ("svix", NamedScheme::Fixed(Scheme::StandardWebhooks)),
    ("stripe", NamedScheme::Fixed(Scheme::Stripe)),
    ("github", NamedScheme::Legacy(|allow_sha1| Scheme::GitHub { allow_sha1 })),
    ("hubspot", NamedScheme::Legacy(|allow_v1_v2| Scheme::HubSpot { allow_v1_v2 })),
    ("shopify", NamedScheme::Fixed(Scheme::Shopify)),
    ("slack", NamedScheme::Fixed(Scheme::Slack)),
    ("twilio", NamedScheme::Fixed(Scheme::Twilio)),
    ("square", NamedScheme::Fixed(Scheme::Square)),
    ("paddle", NamedScheme::Fixed(Scheme::Paddle)),
    ("discord", NamedScheme::Fixed(Scheme::Discord)),
    ("zoom", NamedScheme::Fixed(Scheme::Zoom)),
    // Meta signs like GitHub, without the legacy SHA-1 header.
    ("meta", NamedScheme::Fixed(Scheme::GitHub { allow_sha1: false })),
    ("sendgrid", NamedScheme::Fixed(Scheme::SendGridEcdsa)),
    ("mailgun", NamedScheme::Fixed(Scheme::Mailgun)),
    ("intercom", NamedScheme::Fixed(Scheme::Intercom)),
    ("zendesk", NamedScheme::Fixed(Scheme::Zendesk)),
    ("linear", NamedScheme::Fixed(Scheme::Linear)),
    ("typeform", NamedScheme::Fixed(Scheme::Typeform)),
    ("calendly", NamedScheme::Fixed(Scheme::Calendly)),
    ("gitlab", NamedScheme::Fixed(Scheme::GitLabToken)),
    ("basic-auth", NamedScheme::Fixed(Scheme::BasicAuth)),
    ("url-token", NamedScheme::Fixed(Scheme::UrlToken)),
    ("generic-hmac", NamedScheme::Described),
];

/// What `name` stands for; `None` for a name that is not a scheme.
pub fn scheme_named(name: &str) -> Option<&'static NamedScheme> {
    SCHEME_NAMES.iter().find(|(known, _)| *known == name).map(|(_, scheme)| scheme)
}

/// A generic HMAC scheme: which header, algorithm, encoding and prefix, and what is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericHmac {
    /// The header carrying the signature (lower case).
    pub header: String,
    pub algorithm: HmacAlgorithm,
    pub encoding: SignatureEncoding,
    /// Text before the encoded signature in the header, such as `sha256=`.
    pub prefix: String,
    /// What is signed, in order.
    pub signed: Vec<SignedPart>,
    /// The header whose value `{timestamp}` stands for (Unix seconds), checked against the tolerance.
    pub timestamp_header: Option<String>,
    /// The header whose value `{id}` stands for.
    pub id_header: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

/// One piece of the signed content of a generic scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedPart {
    Literal(String),
    Body,
    Timestamp,
    Id,
    Method,
    Url,
}

impl SignedPart {
    /// Parses a template such as `{timestamp}.{body}` (placeholders: body, timestamp, id,
    /// method, url; anything else is literal text).
    pub fn parse_template(template: &str) -> Result<Vec<SignedPart>, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(SignedPart::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or_else(|| format!("unclosed {{ in {template:?}"))? + open;
            parts.push(match &rest[open + 1..close] {
                "body" => SignedPart::Body,
                "timestamp" => SignedPart::Timestamp,
                "id" => SignedPart::Id,
                "method" => SignedPart::Method,
                "url" => SignedPart::Url,
                other => {
                    return Err(format!("unknown placeholder {{{other}}}; use body, timestamp, id, method or url"));
                }
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(SignedPart::Literal(rest.to_owned()));
        }
        if !parts.contains(&SignedPart::Body) {
            return Err(format!("the template {template:?} does not sign {{body}}"));
        }
        Ok(parts)
    }
}

impl Scheme {
    /// The default replay window of the scheme (for schemes without timestamps, unused).
    pub fn default_tolerance(&self) -> Duration {
        match self {
            Scheme::Paddle => Duration::from_secs(5),
            Scheme::Linear => Duration::from_secs(60),
            _ => Duration::from_secs(300),
        }
    }
}

/// What one request is verified with.
#[derive(Clone, PartialEq)]
pub struct VerifyConfig {
    pub scheme: Scheme,
    /// Every secret currently valid for this source; several during a rotation.
    pub secrets: Vec<String>,
    /// How far a signed timestamp may be from `now`, in either direction.
    pub tolerance: Duration,
}

impl std::fmt::Debug for VerifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyConfig")
            .field("scheme", &self.scheme)
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// The parts of a request a signature can cover.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The full URL the platform sent to, as it sees it (scheme, host, path and query).
    pub url: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// A request whose signature matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Which configured secret matched (0 is the first): shows when an old one is still used.
    pub secret_index: usize,
    /// The signed timestamp, for schemes that sign one.
    pub signed_at: Option<Timestamp>,
}

/// Why a request was not verified. The reason class is safe to send back; details never
/// include an expected signature or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no secret is configured for this source")]
    NoSecretConfigured,
    #[error("the {0} header is missing")]
    MissingHeader(String),
    #[error("the {header} header is malformed: {reason}")]
    MalformedHeader { header: String, reason: &'static str },
    #[error("the signed timestamp is {seconds} seconds away from now, beyond the tolerance")]
    TimestampOutsideTolerance { seconds: i64 },
    #[error("the signature does not match")]
    SignatureMismatch,
}

impl VerifyError {
    /// The reason class a 401 names, also the metrics label.
    pub fn reason_class(&self) -> &'static str {
        match self {
            VerifyError::NoSecretConfigured => "no_secret_configured",
            VerifyError::MissingHeader(_) | VerifyError::MalformedHeader { .. } => "missing_header",
            VerifyError::TimestampOutsideTolerance { .. } => "timestamp_outside_tolerance",
            VerifyError::SignatureMismatch => "signature_mismatch",
        }
    }
}

/// Mailgun's route signature (form fields `timestamp`, `token`, `signature`), checked like its
/// webhooks': with any of `secrets`, within `tolerance` of `now`.
pub fn mailgun_route(
    secrets: &[String],
    timestamp: &str,
    token: &str,
    signature: &str,
    now: jiff::Timestamp,
    tolerance: std::time::Duration,
) -> Result<Verified, VerifyError> {
    schemes::mailgun_form(secrets, schemes::MailgunFields { timestamp, token, signature }, now, tolerance)
}

/// Zoom's `encryptedToken` for an `endpoint.url_validation` request, with the secret that
/// verified the request (so that the handshake also works during a rotation).
pub fn zoom_encrypted_token(config: &VerifyConfig, verified: &Verified, plain_token: &str) -> Option<String> {
    config.secrets.get(verified.secret_index).map(|secret| schemes::zoom_encrypted_token(secret, plain_token))
}

/// Verifies `request` under `config` at time `now`.
pub fn verify(config: &VerifyConfig, request: &SignedRequest<'_>, now: Timestamp) -> Result<Verified, VerifyError> {
    if config.secrets.is_empty() {
        return Err(VerifyError::NoSecretConfigured);
    }
    schemes::verify(config, request, now)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
