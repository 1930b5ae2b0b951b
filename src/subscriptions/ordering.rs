//! Ordered delivery per key: a subscription's `ordering: {"key": …}` names what groups its
//! deliveries, `resource_id` (the event data's top-level `resource_id`, `resourceId` or `id`, as
//! routes read it) or a JSONPath over the event as filters see it (`$.data.customer.id`). The
//! key is computed when the event is committed and kept on the delivery row; the store's claims
//! then hand out a delivery only when no earlier delivery of the same subscription and key is
//! still pending, so each key's deliveries go one at a time in event order, and a failing one
//! holds back only its own key. An event with no key (nothing found) is delivered unordered.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::FieldError;

/// The longest key kept, in bytes: a longer one is cut (keys that share their first bytes are
/// then ordered together, which only serializes more).
pub const MAX_KEY_BYTES: usize = 200;

/// What groups a subscription's deliveries into ordered sequences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ordering {
    /// `resource_id`, or a JSONPath over the event.
    pub key: String,
}

/// An [`Ordering`] compiled once, for the routing table.
#[derive(Debug)]
pub enum OrderingKey {
    ResourceId,
    Path(crate::jsonpath::JsonPath),
}

impl OrderingKey {
    /// `None` for a key that does not compile (the request check refuses those).
    pub fn compile(ordering: &Ordering) -> Option<OrderingKey> {
        match ordering.key.as_str() {
            "resource_id" => Some(OrderingKey::ResourceId),
            path => crate::jsonpath::JsonPath::parse(path).ok().map(OrderingKey::Path),
        }
    }

    /// The key of an event (`envelope` is the event as JSON, as filters see it): text as is,
    /// other values as JSON; `None` when there is none.
    pub fn key_of(&self, data: &Value, envelope: &Value) -> Option<String> {
        let found = match self {
            OrderingKey::ResourceId => ["resource_id", "resourceId", "id"].iter().find_map(|field| data.get(*field)),
            OrderingKey::Path(path) => path.query(envelope).into_iter().next(),
        }?;
        let mut key = match found {
            Value::String(text) => text.clone(),
            Value::Null => return None,
            other => other.to_string(),
        };
        if key.len() > MAX_KEY_BYTES {
            let mut end = MAX_KEY_BYTES;
            while !key.is_char_boundary(end) {
                end -= 1;
            }
            key.truncate(end);
        }
        Some(key)
    }
}

/// The `ordering` field of a request: `{"key": "resource_id"}` or `{"key": "$.data.customer"}`,
/// or `null` for none.
pub(super) fn parse(value: &Value) -> Result<Option<Ordering>, FieldError> {
    let error = |field: &str, message: String| super::request::field_error(field, message);
    let Some(object) = super::request::optional_object(
        value,
        "ordering",
        "expected {\"key\": \"resource_id\"} or {\"key\": \"<JSONPath over the event>\"}, or null",
        &["key"],
        "unknown field; the only field is key",
    )?
    else {
        return Ok(None);
    };
    let Some(Value::String(key)) = object.get("key") else {
        return Err(error("ordering.key", "required: resource_id or a JSONPath over the event".into()));
    };
    if key != "resource_id"
        && let Err(invalid) = crate::jsonpath::JsonPath::parse(key)
    {
        return Err(error("ordering.key", format!("expected resource_id or a JSONPath: {invalid}")));
    }
    Ok(Some(Ordering { key: key.clone() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_key_is_the_resource_or_what_the_path_finds_first() {
        let data = json!({"resourceId": "cus_1", "customer": {"id": 42}});
        let envelope = json!({"name": "shop.order", "data": data});
        let by_resource = OrderingKey::compile(&Ordering { key: "resource_id".into() }).unwrap();
        assert_eq!(by_resource.key_of(&data, &envelope).as_deref(), Some("cus_1"));
        let by_path = OrderingKey::compile(&Ordering { key: "$.data.customer.id".into() }).unwrap();
        assert_eq!(by_path.key_of(&data, &envelope).as_deref(), Some("42"), "a number as JSON");
        let missing = OrderingKey::compile(&Ordering { key: "$.data.nothing".into() }).unwrap();
        assert_eq!(missing.key_of(&data, &envelope), None, "no key: unordered");
        let long = json!({"id": "é".repeat(150)});
        assert!(by_resource.key_of(&long, &envelope).unwrap().len() <= MAX_KEY_BYTES, "cut on a character");
    }

    #[test]
    fn the_field_takes_resource_id_or_a_jsonpath() {
        assert_eq!(parse(&json!({"key": "resource_id"})).unwrap(), Some(Ordering { key: "resource_id".into() }));
        assert!(parse(&json!({"key": "$.data.customer"})).unwrap().is_some());
        assert_eq!(parse(&json!(null)).unwrap(), None);
        assert_eq!(parse(&json!({"key": "$["})).unwrap_err().field, "ordering.key");
        assert_eq!(parse(&json!({"key": 5})).unwrap_err().field, "ordering.key");
        assert_eq!(parse(&json!({"by": "x"})).unwrap_err().field, "ordering.by");
        assert_eq!(parse(&json!("resource_id")).unwrap_err().field, "ordering");
    }
}
