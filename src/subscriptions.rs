//! Subscriptions: who wants which events, delivered where. The shape users of the seed platforms
//! know: `url`, `name`, `events` (exact names, `*`, prefixes like `stripe.*`; `subscribed_events`
//! accepted as an alias), `status` (`active`, `paused`, `disabled`), an optional `resource_id`,
//! an optional JSONPath `filter`, custom `headers`, and a signing secret (`whsec_…`, Standard
//! Webhooks) shown only when it is created or rotated.
//!
//! This module validates requests into [`Subscription`]s (every problem named by its field) and
//! checks target URLs against SSRF (after DNS resolution, and for literal addresses). It does no
//! I/O besides that resolution; the store keeps subscriptions, `api::subscriptions` serves them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Subscription ids start with this; source paths may not.
pub const ID_PREFIX: &str = "sub_";

/// A subscription as stored, secrets included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// `sub_` and a UUIDv7 in hex.
    pub id: String,
    pub name: String,
    pub url: String,
    /// Event name patterns: exact names, `*`, or prefixes ending in `.*`.
    pub events: Vec<String>,
    pub status: Status,
    /// Only events about this resource (seed 004); every event when absent.
    pub resource_id: Option<String>,
    /// A JSONPath that must find something in the event for it to be delivered.
    pub filter: Option<String>,
    /// Sent with every delivery.
    pub headers: BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Why the subscription was disabled, when hookgate disabled it.
    pub disabled_reason: Option<String>,
    /// Since when every delivery attempt has failed; cleared by a success.
    #[serde(default)]
    pub failing_since: Option<Timestamp>,
    /// Signing secrets, newest first; an old one stays valid until its `expires_at`.
    pub secrets: Vec<SigningSecret>,
}

/// A secret deliveries are signed with (Standard Webhooks: `whsec_` and base64 of 24 bytes).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningSecret {
    pub secret: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSecret").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// Whether a subscription receives deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Deliveries are made.
    Active,
    /// Deliveries accumulate and are sent when the subscription is active again.
    Paused,
    /// Nothing is delivered or kept.
    Disabled,
}

impl Subscription {
    /// The secrets valid at `now`, newest first.
    pub fn signing_secrets(&self, now: Timestamp) -> impl Iterator<Item = &str> {
        self.secrets
            .iter()
            .filter(move |secret| secret.expires_at.is_none_or(|at| at > now))
            .map(|secret| secret.secret.as_str())
    }

    /// Whether an event named `name` matches this subscription's patterns.
    pub fn wants(&self, name: &str) -> bool {
        self.events.iter().any(|pattern| pattern_matches(pattern, name))
    }

    /// The subscription as the API shows it: everything but the secrets.
    pub fn view(&self) -> Value {
        let mut view = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(object) = &mut view {
            object.remove("secrets");
        }
        view
    }

    /// Replaces the signing secret with `secret` (a [`new_secret`]); the others stop at
    /// `old_expires_at` (now, or after an overlap the caller asked for).
    pub fn rotate_secret(&mut self, secret: String, now: Timestamp, old_expires_at: Timestamp) {
        for secret in &mut self.secrets {
            if secret.expires_at.is_none_or(|at| at > old_expires_at) {
                secret.expires_at = Some(old_expires_at);
            }
        }
        self.secrets.retain(|secret| secret.expires_at.is_none_or(|at| at > now));
        self.secrets.insert(0, SigningSecret { secret, created_at: now, expires_at: None });
        self.updated_at = now;
    }

    /// Applies an edit made from an earlier snapshot onto the subscription as it is now: the
    /// caller's fields win, while what the delivery worker keeps (`failing_since`, and a status it
    /// set) stands unless the edit names a status. Enabling a disabled subscription starts its
    /// health afresh.
    pub fn apply_edit(&mut self, edit: Subscription, status_given: bool) {
        let was_disabled = self.status == Status::Disabled;
        let (status, disabled_reason, failing_since) = (self.status, self.disabled_reason.take(), self.failing_since);
        *self = Subscription { failing_since, secrets: std::mem::take(&mut self.secrets), ..edit };
        if !status_given {
            self.status = status;
            self.disabled_reason = disabled_reason;
        } else if was_disabled && self.status != Status::Disabled {
            self.failing_since = None;
        }
    }
}

/// Which subscriptions an event goes to: every active or paused subscription, with its filter
/// compiled once. Rebuilt whenever a subscription changes.
#[derive(Default)]
pub struct Routes {
    entries: Vec<Route>,
}

struct Route {
    id: String,
    events: Vec<String>,
    resource_id: Option<String>,
    filter: Option<crate::jsonpath::JsonPath>,
}

impl Routes {
    pub fn new(subscriptions: &[Subscription]) -> Routes {
        let entries = subscriptions
            .iter()
            .filter(|subscription| subscription.status != Status::Disabled)
            .map(|subscription| Route {
                id: subscription.id.clone(),
                events: subscription.events.clone(),
                resource_id: subscription.resource_id.clone(),
                filter: subscription.filter.as_deref().and_then(|filter| crate::jsonpath::JsonPath::parse(filter).ok()),
            })
            .collect();
        Routes { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The ids of the subscriptions `event` goes to.
    pub fn matching(&self, event: &crate::event::Event) -> Vec<String> {
        let mut envelope: Option<Value> = None;
        self.entries
            .iter()
            .filter(|route| route.events.iter().any(|pattern| pattern_matches(pattern, &event.name)))
            .filter(|route| route.resource_id.as_deref().is_none_or(|resource| is_about(&event.data, resource)))
            .filter(|route| match &route.filter {
                None => true,
                Some(path) => {
                    let envelope = envelope.get_or_insert_with(|| serde_json::to_value(event).unwrap_or(Value::Null));
                    !path.query(envelope).is_empty()
                }
            })
            .map(|route| route.id.clone())
            .collect()
    }
}

/// Whether event data is about `resource`: its `resource_id`, `resourceId` or `id` is it.
fn is_about(data: &Value, resource: &str) -> bool {
    ["resource_id", "resourceId", "id"].iter().any(|field| match data.get(*field) {
        Some(Value::String(text)) => text == resource,
        Some(Value::Number(number)) => number.to_string() == resource,
        _ => false,
    })
}

/// `*` matches every name; `stripe.*` every name under `stripe.`; anything else is exact.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether every name `pattern` matches is also matched by `scope`: how a management key's
/// scopes bound the subscriptions it may make (`stripe.*` covers `stripe.charge.*` and
/// `stripe.invoice.paid`, not `*`).
pub fn pattern_covers(scope: &str, pattern: &str) -> bool {
    match scope.strip_suffix('*') {
        Some(prefix) => pattern.strip_suffix('*').unwrap_or(pattern).starts_with(prefix),
        None => scope == pattern,
    }
}

/// A new Standard Webhooks secret.
pub fn new_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Where deliveries may go.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetPolicy {
    /// `http://` URLs are allowed (else HTTPS only).
    pub allow_http: bool,
    /// Private, loopback, link-local and metadata addresses are allowed (tests, closed networks).
    pub allow_private: bool,
}

/// One problem with a request, named by its field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: field.to_owned(), message: message.into() }
}

const FIELDS: &[&str] = &["url", "name", "events", "subscribed_events", "status", "resource_id", "filter", "headers"];

/// Headers a subscription may not set: hookgate's own, and those HTTP manages.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "connection",
    "transfer-encoding",
    "user-agent",
];

/// Builds the subscription a create (`existing` is `None`), replace (`PUT`) or update
/// (`PATCH`, `merge`) request asks for, or every problem with it.
pub async fn from_request(
    body: &Value,
    existing: Option<&Subscription>,
    merge: bool,
    policy: TargetPolicy,
    now: Timestamp,
) -> Result<Subscription, Vec<FieldError>> {
    let Some(object) = body.as_object() else {
        return Err(vec![field_error("", "expected a JSON object")]);
    };
    let mut errors = Vec::new();
    for key in object.keys() {
        if !FIELDS.contains(&key.as_str()) {
            errors.push(field_error(key, format!("unknown field; known fields are {}", FIELDS.join(", "))));
        }
    }
    if object.contains_key("events") && object.contains_key("subscribed_events") {
        errors.push(field_error("subscribed_events", "give events or its alias subscribed_events, not both"));
    }
    let keep = |field: &str| merge && !object.contains_key(field);

    let url = match (object.get("url"), existing) {
        (None, Some(existing)) if merge => Some(existing.url.clone()),
        (None, _) => {
            errors.push(field_error("url", "required"));
            None
        }
        (Some(Value::String(url)), _) => match check_target(url, policy).await {
            Ok(()) => Some(url.clone()),
            Err(message) => {
                errors.push(field_error("url", message));
                None
            }
        },
        (Some(_), _) => {
            errors.push(field_error("url", "expected a string"));
            None
        }
    };
    let name = match object.get("name") {
        None => existing.filter(|_| merge).map(|s| s.name.clone()).unwrap_or_default(),
        Some(Value::String(name)) if name.len() <= 200 => name.clone(),
        Some(Value::String(_)) => {
            errors.push(field_error("name", "at most 200 characters"));
            String::new()
        }
        Some(_) => {
            errors.push(field_error("name", "expected a string"));
            String::new()
        }
    };
    let events_field = if object.contains_key("subscribed_events") { "subscribed_events" } else { "events" };
    let events = match object.get(events_field) {
        None if keep("events") && keep("subscribed_events") => existing.map(|s| s.events.clone()).unwrap_or_default(),
        None => vec!["*".to_owned()],
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut events = Vec::new();
            for (index, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(pattern) if is_pattern(pattern) => events.push(pattern.to_owned()),
                    _ => errors.push(field_error(
                        &format!("{events_field}[{index}]"),
                        "expected an event name, \"*\", or a prefix ending in \".*\" (stripe.*)",
                    )),
                }
            }
            events
        }
        Some(_) => {
            errors.push(field_error(events_field, "expected a non-empty array of event names or patterns"));
            Vec::new()
        }
    };
    let status = match object.get("status") {
        None => existing.filter(|_| merge).map_or(Status::Active, |s| s.status),
        Some(value) => match serde_json::from_value::<Status>(value.clone()) {
            Ok(status) => status,
            Err(_) => {
                errors.push(field_error("status", "expected active, paused or disabled"));
                Status::Active
            }
        },
    };
    let resource_id = optional_string(
        object,
        "resource_id",
        existing.filter(|_| merge).and_then(|s| s.resource_id.clone()),
        &mut errors,
    );
    let filter =
        optional_string(object, "filter", existing.filter(|_| merge).and_then(|s| s.filter.clone()), &mut errors);
    if let Some(filter) = &filter
        && let Err(error) = crate::jsonpath::JsonPath::parse(filter)
    {
        errors.push(field_error("filter", format!("invalid JSONPath: {error}")));
    }
    let headers = match object.get("headers") {
        None => existing.filter(|_| merge).map(|s| s.headers.clone()).unwrap_or_default(),
        Some(Value::Object(headers)) => {
            let mut checked = BTreeMap::new();
            for (name, value) in headers {
                let lower = name.to_ascii_lowercase();
                let field = format!("headers.{name}");
                if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                    errors.push(field_error(&field, "not a valid header name"));
                } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                    errors.push(field_error(&field, "set by hookgate; a subscription cannot override it"));
                } else {
                    match value.as_str().filter(|text| http::HeaderValue::from_str(text).is_ok()) {
                        Some(text) => {
                            checked.insert(lower, text.to_owned());
                        }
                        None => errors.push(field_error(&field, "expected a header value string")),
                    }
                }
            }
            checked
        }
        Some(_) => {
            errors.push(field_error("headers", "expected an object of header names and values"));
            BTreeMap::new()
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let (id, created_at, secrets, disabled_reason) = match existing {
        Some(existing) => (
            existing.id.clone(),
            existing.created_at,
            existing.secrets.clone(),
            if status == Status::Disabled { existing.disabled_reason.clone() } else { None },
        ),
        None => (
            format!("{ID_PREFIX}{}", uuid::Uuid::now_v7().simple()),
            now,
            vec![SigningSecret { secret: new_secret(), created_at: now, expires_at: None }],
            None,
        ),
    };
    Ok(Subscription {
        id,
        name,
        url: url.unwrap_or_default(),
        events,
        status,
        resource_id,
        filter,
        headers,
        created_at,
        updated_at: now,
        disabled_reason,
        failing_since: existing.and_then(|existing| existing.failing_since),
        secrets,
    })
}

fn optional_string(
    object: &Map<String, Value>,
    field: &str,
    kept: Option<String>,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match object.get(field) {
        None => kept,
        Some(Value::Null) => None,
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        Some(_) => {
            errors.push(field_error(field, "expected a non-empty string or null"));
            None
        }
    }
}

/// An event name, `*`, or a prefix pattern ending in `.*`.
pub fn is_pattern(pattern: &str) -> bool {
    let name = pattern.strip_suffix(".*").unwrap_or(pattern);
    pattern == "*"
        || (!name.is_empty()
            && name.len() <= 200
            && name.split('.').all(|segment| {
                !segment.is_empty() && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            }))
}

/// Checks that deliveries to `url` may be made: an absolute `https` URL (or `http` when
/// allowed), whose host resolves only to public addresses unless private ones are allowed.
pub async fn check_target(url: &str, policy: TargetPolicy) -> Result<(), String> {
    let (host, port) = check_url(url, policy)?;
    if host.parse::<IpAddr>().is_ok() {
        return Ok(()); // A literal address was checked with the URL.
    }
    let addresses: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|error| format!("the host {host:?} does not resolve: {error}"))?
        .map(|address| address.ip())
        .collect();
    if addresses.is_empty() {
        return Err(format!("the host {host:?} does not resolve"));
    }
    if !policy.allow_private
        && let Some(ip) = addresses.iter().find(|ip| !is_public(**ip))
    {
        return Err(format!(
            "{host:?} resolves to {ip}, a private, loopback, link-local or metadata address; deliveries never go there"
        ));
    }
    Ok(())
}

/// What can be checked without DNS: the scheme, no credentials, and a literal address in the
/// URL. Returns the host and port. The delivery client checks this before every request (its
/// resolver checks the names).
pub fn check_url(url: &str, policy: TargetPolicy) -> Result<(String, u16), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if policy.allow_http => {}
        Some("http") => return Err("must be an https URL (http is not allowed by this gateway's configuration)".into()),
        _ => return Err("must be an absolute https URL".into()),
    }
    let host = uri.host().ok_or("has no host")?.trim_start_matches('[').trim_end_matches(']');
    if uri.authority().is_some_and(|authority| authority.as_str().contains('@')) {
        return Err("must not carry credentials".into());
    }
    if let Ok(ip) = host.parse::<IpAddr>()
        && !policy.allow_private
        && !is_public(ip)
    {
        return Err(format!(
            "{host:?} resolves to {ip}, a private, loopback, link-local or metadata address; deliveries never go there"
        ));
    }
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    Ok((host.to_owned(), port))
}

/// Whether `ip` is a public unicast address (not private, loopback, link-local, metadata,
/// shared, documentation, multicast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => is_public_v4(mapped),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, including fd00:ec2::254 (metadata)
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 maps to IPv4 behind it
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OPEN: TargetPolicy = TargetPolicy { allow_http: true, allow_private: true };
    const STRICT: TargetPolicy = TargetPolicy { allow_http: false, allow_private: false };

    fn now() -> Timestamp {
        "2026-11-23T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn patterns_are_exact_names_star_or_prefixes() {
        assert!(pattern_matches("*", "stripe.charge.succeeded"));
        assert!(pattern_matches("stripe.*", "stripe.charge.succeeded"));
        assert!(!pattern_matches("stripe.*", "stripes.charge"));
        assert!(pattern_matches("github.push", "github.push"));
        assert!(!pattern_matches("github.push", "github.push.x"));
        assert!(is_pattern("stripe.*") && is_pattern("*") && is_pattern("a.b-c_d"));
        assert!(!is_pattern("stripe*") && !is_pattern("a..b") && !is_pattern(".*") && !is_pattern("a b"));
    }

    #[test]
    fn a_scope_covers_the_patterns_whose_every_match_it_matches() {
        assert!(pattern_covers("*", "*") && pattern_covers("*", "stripe.*") && pattern_covers("*", "a.b"));
        assert!(pattern_covers("stripe.*", "stripe.*"));
        assert!(pattern_covers("stripe.*", "stripe.charge.*"));
        assert!(pattern_covers("stripe.*", "stripe.invoice.paid"));
        assert!(!pattern_covers("stripe.*", "*"), "all events reach beyond stripe");
        assert!(!pattern_covers("stripe.*", "stripes.charge"));
        assert!(!pattern_covers("stripe.*", "stripe"), "the name stripe is not under stripe.");
        assert!(pattern_covers("github.push", "github.push"));
        assert!(!pattern_covers("github.push", "github.*"));
        assert!(!pattern_covers("github.push", "github.push_request"));
    }

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "64:ff9b::7f00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn targets_are_https_and_public_unless_configured() {
        assert!(check_target("https://93.184.216.34/hook", STRICT).await.is_ok());
        let http = check_target("http://93.184.216.34/hook", STRICT).await.unwrap_err();
        assert!(http.contains("https"), "{http}");
        let metadata = check_target("https://169.254.169.254/latest/meta-data", STRICT).await.unwrap_err();
        assert!(metadata.contains("metadata address"), "{metadata}");
        let mapped = check_target("https://[::ffff:10.0.0.1]/", STRICT).await.unwrap_err();
        assert!(mapped.contains("private"), "{mapped}");
        let localhost = check_target("https://localhost:8443/", STRICT).await.unwrap_err();
        assert!(localhost.contains("loopback"), "checked after resolution: {localhost}");
        assert!(check_target("https://user:pass@93.184.216.34/", STRICT).await.unwrap_err().contains("credentials"));
        assert!(check_target("ftp://93.184.216.34/", STRICT).await.is_err());
        assert!(check_target("http://127.0.0.1:9/hook", OPEN).await.is_ok());
    }

    #[tokio::test]
    async fn a_create_request_gets_defaults_and_a_secret() {
        let body = json!({"url": "http://127.0.0.1:9/hook", "name": "orders"});
        let created = from_request(&body, None, false, OPEN, now()).await.unwrap();
        assert!(created.id.starts_with("sub_"));
        assert_eq!(created.events, vec!["*"]);
        assert_eq!(created.status, Status::Active);
        assert_eq!(created.secrets.len(), 1);
        assert!(created.secrets[0].secret.starts_with("whsec_"));
        assert!(created.view().get("secrets").is_none(), "the view never shows secrets");
    }

    #[tokio::test]
    async fn every_problem_is_named_by_its_field() {
        let body = json!({
            "url": "https://10.0.0.1/x", "name": 5, "subscribed_events": ["ok.name", "bad*"], "status": "sleeping",
            "filter": "$[", "headers": {"Webhook-Signature": "x", "X-Team": 7}, "colour": "red"
        });
        let errors = from_request(&body, None, false, STRICT, now()).await.unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "colour",
                "url",
                "name",
                "subscribed_events[1]",
                "status",
                "filter",
                "headers.Webhook-Signature",
                "headers.X-Team"
            ]
        );
    }

    #[tokio::test]
    async fn patch_merges_and_put_replaces() {
        let created = from_request(
            &json!({"url": "http://127.0.0.1:9/a", "events": ["stripe.*"], "resource_id": "r1"}),
            None,
            false,
            OPEN,
            now(),
        )
        .await
        .unwrap();
        let patched = from_request(&json!({"status": "paused"}), Some(&created), true, OPEN, now()).await.unwrap();
        assert_eq!(
            (patched.status, patched.events.clone(), patched.resource_id.clone()),
            (Status::Paused, vec!["stripe.*".to_owned()], Some("r1".to_owned()))
        );
        assert_eq!(patched.secrets, created.secrets, "a change keeps the secret");
        let replaced =
            from_request(&json!({"url": "http://127.0.0.1:9/b"}), Some(&created), false, OPEN, now()).await.unwrap();
        assert_eq!((replaced.events.clone(), replaced.resource_id.clone()), (vec!["*".to_owned()], None));
        assert_eq!(replaced.id, created.id);
        let missing_url = from_request(&json!({"name": "x"}), Some(&created), false, OPEN, now()).await.unwrap_err();
        assert_eq!(missing_url[0].field, "url", "PUT needs the whole subscription");
    }

    fn stored() -> Subscription {
        Subscription {
            id: "sub_1".into(),
            name: String::new(),
            url: "https://x.example".into(),
            events: vec!["*".into()],
            status: Status::Active,
            resource_id: None,
            filter: None,
            headers: BTreeMap::new(),
            created_at: now(),
            updated_at: now(),
            disabled_reason: None,
            failing_since: None,
            secrets: vec![SigningSecret { secret: "whsec_old".into(), created_at: now(), expires_at: None }],
        }
    }

    #[test]
    fn an_edit_from_a_snapshot_keeps_what_the_worker_and_a_rotation_changed_since() {
        let snapshot = stored();
        let mut edit = snapshot.clone();
        edit.name = "renamed".into();
        // Meanwhile the worker disabled it after a 410, and the secret was rotated.
        let mut current = snapshot.clone();
        current.status = Status::Disabled;
        current.disabled_reason = Some("the endpoint answered 410 Gone".into());
        current.failing_since = Some(now());
        current.rotate_secret("whsec_new".into(), now(), now());

        let mut renamed = current.clone();
        renamed.apply_edit(edit.clone(), false);
        assert_eq!(renamed.name, "renamed");
        assert_eq!(
            (renamed.status, renamed.disabled_reason.as_deref()),
            (Status::Disabled, Some("the endpoint answered 410 Gone"))
        );
        assert_eq!(renamed.failing_since, Some(now()));
        assert_eq!(renamed.secrets, current.secrets, "the rotation stands");

        let mut enabled = current.clone();
        enabled.apply_edit(Subscription { status: Status::Active, disabled_reason: None, ..edit }, true);
        assert_eq!(
            (enabled.status, enabled.disabled_reason.clone(), enabled.failing_since),
            (Status::Active, None, None),
            "enabling starts the subscription's health afresh"
        );
    }

    #[test]
    fn rotation_keeps_the_old_secret_only_for_the_overlap() {
        let mut subscription = stored();
        let later = now() + jiff::SignedDuration::from_secs(3600);
        let new = new_secret();
        subscription.rotate_secret(new.clone(), now(), later);
        assert_eq!(subscription.signing_secrets(now()).collect::<Vec<_>>(), [new.as_str(), "whsec_old"]);
        assert_eq!(subscription.signing_secrets(later).collect::<Vec<_>>(), [new.as_str()]);
        let newest = new_secret();
        subscription.rotate_secret(newest.clone(), now(), now());
        assert_eq!(
            subscription.signing_secrets(now()).collect::<Vec<_>>(),
            [newest.as_str()],
            "no overlap: the old stop at once"
        );
    }
}
