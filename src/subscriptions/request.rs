//! Subscription requests of the management API (create, replace, update) validated into a
//! [`Subscription`], or every problem with them, each named by its field.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::target::{TargetPolicy, check_target};
use super::{ID_PREFIX, SigningSecret, Status, Subscription, is_pattern, new_secret};

/// One problem with a request, named by its field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

pub(super) fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: field.to_owned(), message: message.into() }
}

/// A field holding an object of a few known keys, or `null` for none: its map, `None` for
/// `null`; otherwise a refusal saying what was `expected`, or naming the first key not `known`
/// (as `field.key`, with `unknown_message`).
pub(super) fn optional_object<'a>(
    value: &'a serde_json::Value,
    field: &str,
    expected: &str,
    known: &[&str],
    unknown_message: &str,
) -> Result<Option<&'a serde_json::Map<String, serde_json::Value>>, FieldError> {
    let object = match value {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::Object(object) => object,
        _ => return Err(field_error(field, expected)),
    };
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(unknown) => Err(field_error(&format!("{field}.{unknown}"), unknown_message)),
        None => Ok(Some(object)),
    }
}

const FIELDS: &[&str] = &[
    "url",
    "name",
    "events",
    "subscribed_events",
    "status",
    "resource_id",
    "filter",
    "headers",
    "transform",
    "rate_limit",
    "ordering",
];

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
    policy: &TargetPolicy,
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
        && let Err(error) = super::filter::compile(filter)
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
    let transform =
        optional_string(object, "transform", existing.filter(|_| merge).and_then(|s| s.transform.clone()), &mut errors);
    let transform_version = match transform.clone() {
        None => None,
        // Compiled once here to refuse what cannot run; never on a tokio worker.
        Some(source) => {
            match tokio::task::spawn_blocking(move || crate::transform::Transformation::compile(&source)).await {
                Ok(Ok(transformation)) => Some(transformation.version().to_owned()),
                Ok(Err(error)) => {
                    errors.push(field_error("transform", error.to_string()));
                    None
                }
                Err(_) => {
                    errors.push(field_error("transform", "the transformation could not be checked"));
                    None
                }
            }
        }
    };
    let rate_limit = match object.get("rate_limit") {
        None => existing.filter(|_| merge).and_then(|s| s.rate_limit),
        Some(value) => super::rate_limit::parse(value).unwrap_or_else(|error| {
            errors.push(error);
            None
        }),
    };
    let ordering = match object.get("ordering") {
        None => existing.filter(|_| merge).and_then(|s| s.ordering.clone()),
        Some(value) => super::ordering::parse(value).unwrap_or_else(|error| {
            errors.push(error);
            None
        }),
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
        transform,
        transform_version,
        rate_limit,
        ordering,
        created_at,
        updated_at: now,
        disabled_reason,
        failing_since: existing.and_then(|existing| existing.failing_since),
        relationships: existing.and_then(|existing| existing.relationships.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn open() -> TargetPolicy {
        TargetPolicy::new(true, ["127.0.0.0/8".parse().unwrap()])
    }

    fn now() -> Timestamp {
        "2026-11-23T10:00:00Z".parse().unwrap()
    }

    #[tokio::test]
    async fn a_create_request_gets_defaults_and_a_secret() {
        let body = json!({"url": "http://127.0.0.1:9/hook", "name": "orders"});
        let created = from_request(&body, None, false, &open(), now()).await.unwrap();
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
        let errors = from_request(&body, None, false, &TargetPolicy::default(), now()).await.unwrap_err();
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
    async fn a_transform_is_compiled_when_saved_and_versioned_by_its_source() {
        let source = "function transform(event) { return event; }";
        let body = json!({"url": "http://127.0.0.1:9/hook", "transform": source});
        let created = from_request(&body, None, false, &open(), now()).await.unwrap();
        assert_eq!(created.transform.as_deref(), Some(source));
        assert_eq!(created.transform_version, Some(crate::transform::version_of(source)));
        assert_eq!(created.view()["transformVersion"], json!(crate::transform::version_of(source)));
        let removed = from_request(&json!({"transform": null}), Some(&created), true, &open(), now()).await.unwrap();
        assert_eq!((removed.transform, removed.transform_version), (None, None));
        let broken = json!({"url": "http://127.0.0.1:9/hook", "transform": "function transform(event) {"});
        let errors = from_request(&broken, None, false, &open(), now()).await.unwrap_err();
        assert_eq!(errors[0].field, "transform");
        assert!(errors[0].message.contains("SyntaxError"), "{}", errors[0].message);
    }

    #[tokio::test]
    async fn patch_merges_and_put_replaces() {
        let created = from_request(
            &json!({"url": "http://127.0.0.1:9/a", "events": ["stripe.*"], "resource_id": "r1"}),
            None,
            false,
            &open(),
            now(),
        )
        .await
        .unwrap();
        let patched = from_request(&json!({"status": "paused"}), Some(&created), true, &open(), now()).await.unwrap();
        assert_eq!(
            (patched.status, patched.events.clone(), patched.resource_id.clone()),
            (Status::Paused, vec!["stripe.*".to_owned()], Some("r1".to_owned()))
        );
        assert_eq!(patched.secrets, created.secrets, "a change keeps the secret");
        let replaced =
            from_request(&json!({"url": "http://127.0.0.1:9/b"}), Some(&created), false, &open(), now()).await.unwrap();
        assert_eq!((replaced.events.clone(), replaced.resource_id.clone()), (vec!["*".to_owned()], None));
        assert_eq!(replaced.id, created.id);
        let missing_url = from_request(&json!({"name": "x"}), Some(&created), false, &open(), now()).await.unwrap_err();
        assert_eq!(missing_url[0].field, "url", "PUT needs the whole subscription");
    }
}
