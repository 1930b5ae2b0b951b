//! The normalized event: the one versioned type that leaves the process.
//!
//! Every accepted request, and every value an email hook takes from a message, becomes one
//! [`Event`] here. This module also holds the model types others build on: [`HookType`], the
//! event's source (with the mail facts and authentication results), [`NewEvent`] with its
//! idempotency key and outbox targets. It is pure: no I/O, no clock (the caller passes the
//! receive time in); it must never know HTTP status codes or SQL, and imports no other module.

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The three kinds of hook of the Kustomer format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookType {
    /// Public: anyone with the URL may post.
    Form,
    /// Requires an API key.
    Web,
    /// Receives email at an address.
    Email,
    /// No hook: hookgate's own events (`hookgate.*`, see `notice`). Never a definition's type.
    Internal,
}

impl HookType {
    pub fn as_str(self) -> &'static str {
        match self {
            HookType::Form => "form",
            HookType::Web => "web",
            HookType::Email => "email",
            HookType::Internal => "internal",
        }
    }

    pub fn parse(text: &str) -> Option<HookType> {
        match text {
            "form" => Some(HookType::Form),
            "web" => Some(HookType::Web),
            "email" => Some(HookType::Email),
            "internal" => Some(HookType::Internal),
            _ => None,
        }
    }
}

/// Request headers that carry credentials and so are never stored with an event.
/// `x-gitlab-token` carries GitLab's shared secret itself.
const SECRET_HEADERS: &[&str] =
    &["authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie", "x-gitlab-token"];

/// A stored event as the API and later triggers see it. Field names are camelCase, like the
/// definition files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Time-ordered id: `evt_` and a UUIDv7 in hex, so ids sort by time as strings.
    pub id: String,
    /// The hook's `eventName`.
    pub name: String,
    pub app: String,
    pub hook_type: HookType,
    pub received_at: Timestamp,
    pub source: EventSource,
    /// The parsed payload.
    pub data: serde_json::Value,
    /// How many times this event was received: a provider's repeated delivery increments it
    /// instead of creating a second event.
    pub receive_count: u32,
    /// Stored but held back: its payload did not fit the hook's shape. Never triggered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
}

/// A stored event as deliveries send it: the JSON of its [`Event`], field for field, with the
/// source and the data written as the store holds them (JSON text; for a JSON post, the data is
/// the body as it came) instead of being parsed into trees and serialized again.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub id: String,
    pub name: String,
    pub app: String,
    pub hook_type: HookType,
    pub received_at: Timestamp,
    pub source: Box<serde_json::value::RawValue>,
    pub data: Box<serde_json::value::RawValue>,
    pub receive_count: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
}

/// Where an event came from, minus anything secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSource {
    /// The peer's socket address as seen by hookgate.
    pub peer: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    /// Request headers by lower-case name, repeated headers joined with ", ", credentials removed.
    pub headers: BTreeMap<String, String>,
    /// For events that came by email: the envelope and the message's facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<MailSource>,
}

/// Where an emailed event came from: the SMTP envelope (or the HTTP format's equivalent) and
/// the message's headers. Attachments are described, never copied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailSource {
    /// `MAIL FROM`, the envelope sender (empty for bounces).
    pub envelope_from: Option<String>,
    /// The hook address the message was accepted for (`RCPT TO`).
    pub envelope_to: String,
    #[serde(flatten)]
    pub facts: MailFacts,
    /// Where in the message the data was found: `jsonLd`, `text` or `attachment`.
    pub found_in: Vec<String>,
    /// What looked like data but became no value, and why: at most 16, in message order.
    #[serde(default)]
    pub skipped: Vec<MailSkipped>,
    /// How many more were skipped than `skipped` lists.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_not_listed: usize,
    /// DKIM and SPF results, when hookgate checks them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<MailAuthentication>,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// Something in a message that looked like data but became no value: what and where it is, and
/// why it was left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailSkipped {
    pub kind: SkippedKind,
    #[serde(flatten)]
    pub place: MailPlace,
    pub reason: SkipReason,
    /// The parser's own words, when a parser refused it (for JSON, the line and column within
    /// the block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What kind of thing was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SkippedKind {
    /// A `<script type="application/ld+json">` block.
    JsonLd,
    /// JSON in a plain-text part.
    Text,
    /// An attachment that is JSON by its type or name.
    Attachment,
    /// An HTML part as a whole.
    Html,
    /// A forwarded message (`message/rfc822`).
    ForwardedMessage,
}

/// Why it was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SkipReason {
    /// It does not parse as JSON.
    NotJson,
    /// It is JSON, but holds no object or array (a JSON-LD block: no node).
    NoObject,
    /// It could not be read to its end.
    Unreadable,
    /// The hook requires a key, and neither the address nor this block's `data-key` carries it.
    KeyMissing,
    /// It is forwarded more deeply than hookgate searches.
    NestedTooDeep,
    /// So many attempts to read JSON in it failed that the rest of it was not searched.
    TooManyFailedAttempts,
}

/// Where in a message something is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailPlace {
    /// The MIME part, numbered as IMAP numbers parts (RFC 3501): `1` is a single-part message's
    /// body, `1.2` the second part inside the first; a forwarded message's parts are numbered
    /// under its own (`2.1`).
    pub part: String,
    /// The part's media type, e.g. `text/html`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// A JSON-LD block's position among the JSON-LD blocks of its part, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<usize>,
    /// An attachment's file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What DKIM and SPF said about a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailAuthentication {
    /// One entry per DKIM signature (none for an unsigned message).
    pub dkim: Vec<DkimCheck>,
    /// SPF for the SMTP client and envelope sender; absent for mail that came over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spf: Option<SpfCheck>,
}

/// One DKIM signature's result: `pass`, `fail`, `neutral`, `permerror`, `temperror` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DkimCheck {
    /// The signing domain (`d=`).
    pub domain: Option<String>,
    pub selector: Option<String>,
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The SPF result for a domain: `pass`, `fail`, `softfail`, `neutral`, `permerror`, `temperror`
/// or `none`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpfCheck {
    pub domain: String,
    pub result: String,
}

impl MailAuthentication {
    /// Whether a DKIM signature passed for `from`'s domain or a parent of it (relaxed alignment).
    pub fn dkim_passes_for(&self, from: &str) -> bool {
        let Some((_, from_domain)) = from.rsplit_once('@') else { return false };
        let from_domain = from_domain.to_ascii_lowercase();
        self.dkim.iter().any(|check| {
            check.result == "pass"
                && check.domain.as_deref().is_some_and(|domain| {
                    from_domain == domain || from_domain.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
                })
        })
    }
}

/// What a message says of itself, from its headers, and what it carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailFacts {
    /// The `From` header's address.
    pub from: Option<String>,
    pub to: Vec<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    /// The `Date` header in RFC 3339.
    pub date: Option<String>,
    pub attachments: Vec<MailAttachment>,
}

/// An attachment of an emailed event: described, never its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailAttachment {
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub size: usize,
    pub sha256: String,
}

/// An event ready to be appended to the store, with the exact bytes it was made from.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: Event,
    /// The request body exactly as received, for replay and re-verification.
    pub raw_body: Bytes,
    /// The provider's delivery id, when the hook declares one: a repeat is not a new event.
    pub idempotency_key: Option<IdempotencyKey>,
    /// True when `data` is exactly `serde_json::from_slice(&raw_body)`, so a store may keep
    /// the body once and parse it again on read.
    pub data_is_raw_json: bool,
    /// True when the body was only checked to be JSON, not parsed (`data_is_raw_json` is true
    /// and `data` is null until then): whoever reads `data` before the store calls
    /// [`NewEvent::parse_deferred_data`] first. Stores never need it.
    pub data_deferred: bool,
    /// Subscriptions that get a delivery of this event, written in the same transaction as the
    /// event (the outbox). Ignored for a duplicate.
    pub deliver_to: Vec<String>,
    /// The ordering key of the delivery to each subscription of `deliver_to` that orders its
    /// deliveries: `(subscription id, key)`.
    pub ordering_keys: Vec<(String, String)>,
    /// The NATS subject to publish this event to, through the same outbox; `None` without NATS.
    pub publish_to: Option<String>,
}

impl NewEvent {
    /// Parses the raw body into `data` if that was deferred (`data_deferred`); otherwise does
    /// nothing. The body was checked with the same parser, so this fails only if it changed.
    pub fn parse_deferred_data(&mut self) -> Result<(), serde_json::Error> {
        if self.data_deferred {
            self.event.data = serde_json::from_slice(&self.raw_body)?;
            self.data_deferred = false;
        }
        Ok(())
    }
}

/// A provider delivery id, unique within its scope (the hook that received it) for as long as
/// its retention window: a repeat received later than `window` after the original is a new event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub scope: String,
    pub key: String,
    pub window: std::time::Duration,
}

/// How long a delivery id is remembered when the definition says nothing: longer than the
/// platforms' retry schedules (Stripe retries for three days).
pub const DEFAULT_DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Creates a new time-ordered event id.
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

/// Truncates a timestamp to whole microseconds, the precision every store keeps.
pub fn to_store_precision(at: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(at.as_microsecond()).unwrap_or(at)
}

/// What ingress knows about a request, transport-neutral.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub peer: Option<String>,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl RequestMeta {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The identity of the hook an event is for.
#[derive(Debug, Clone, Copy)]
pub struct HookIdentity<'a> {
    pub app: &'a str,
    pub event_name: &'a str,
    pub hook_type: HookType,
}

/// Builds the normalized event for one accepted request.
pub fn normalize(
    hook: HookIdentity<'_>,
    request: &RequestMeta,
    data: serde_json::Value,
    raw_body: Bytes,
    received_at: Timestamp,
) -> NewEvent {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &request.headers {
        if SECRET_HEADERS.contains(&name.as_str()) {
            continue;
        }
        headers
            .entry(name.clone())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    let source = EventSource {
        peer: request.peer.clone(),
        user_agent: request.header("user-agent").map(str::to_owned),
        content_type: request.header("content-type").map(str::to_owned),
        headers,
        mail: None,
    };
    NewEvent {
        event: Event {
            id: new_event_id(),
            name: hook.event_name.to_owned(),
            app: hook.app.to_owned(),
            hook_type: hook.hook_type,
            received_at: to_store_precision(received_at),
            source,
            data,
            receive_count: 1,
            quarantined: false,
        },
        raw_body,
        idempotency_key: None,
        data_is_raw_json: false,
        data_deferred: false,
        deliver_to: Vec::new(),
        ordering_keys: Vec::new(),
        publish_to: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestMeta {
        RequestMeta {
            peer: Some("127.0.0.1:5000".into()),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        }
    }

    const HOOK: HookIdentity<'static> = HookIdentity {
        app: "ecommstore",
        event_name: "kustomer.app.ecommstore.order.update",
        hook_type: HookType::Form,
    };

    #[test]
    fn event_ids_sort_by_creation_time() {
        let ids: Vec<String> = (0..1000).map(|_| new_event_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids[0].starts_with("evt_") && ids[0].len() == 36);
    }

    #[test]
    fn credentials_never_reach_the_event() {
        let meta = request(&[
            ("authorization", "Bearer secret"),
            ("x-api-key", "secret"),
            ("cookie", "session=secret"),
            ("user-agent", "curl/8"),
            ("content-type", "application/json"),
        ]);
        let event = normalize(HOOK, &meta, serde_json::json!({}), Bytes::new(), Timestamp::UNIX_EPOCH);
        let rendered = serde_json::to_string(&event.event).unwrap();
        assert!(!rendered.contains("secret"), "{rendered}");
        assert_eq!(event.event.source.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(event.event.source.content_type.as_deref(), Some("application/json"));
    }

    #[test]
    fn repeated_headers_are_joined() {
        let meta = request(&[("x-tag", "a"), ("x-tag", "b")]);
        let event = normalize(HOOK, &meta, serde_json::Value::Null, Bytes::new(), Timestamp::UNIX_EPOCH);
        assert_eq!(event.event.source.headers["x-tag"], "a, b");
    }

    #[test]
    fn event_serializes_with_camel_case_fields() {
        let meta = request(&[]);
        let at: Timestamp = "2026-11-23T10:00:00.123456789Z".parse().unwrap();
        let event = normalize(HOOK, &meta, serde_json::json!({"a": 1}), Bytes::new(), at).event;
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["hookType"], "form");
        assert_eq!(value["receivedAt"], "2026-11-23T10:00:00.123456Z");
        assert_eq!(value["receiveCount"], 1);
        assert_eq!(value["source"]["peer"], "127.0.0.1:5000");
    }
}
