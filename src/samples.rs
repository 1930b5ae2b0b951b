//! Sample data for a hook that has neither had an event nor declares a `sample`: made up from
//! the JSON Schema of its shape, so that a subscriber sees the fields it will get.
//!
//! What the schema gives is used first (`examples`, `example`, `const`, `default`, the first of
//! an `enum`), then a value of the type it asks for, within its bounds (`minimum`, `minLength`,
//! `minItems`, common string `format`s). Local `$ref`s (`#/...`) are followed, `allOf` merged,
//! the first of `anyOf` / `oneOf` taken; past a depth of 16 a value is `null`. Pure: no I/O.

use serde_json::{Map, Value, json};

const MAX_DEPTH: usize = 16;

/// A value that fits `schema` as far as the rules above can tell.
pub fn from_schema(schema: &Value) -> Value {
    generate(schema, schema, 0)
}

fn generate(schema: &Value, root: &Value, depth: usize) -> Value {
    let Some(object) = schema.as_object() else {
        // `true` (anything) or `false` (nothing): null is as good as any.
        return Value::Null;
    };
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(Value::Array(examples)) = object.get("examples")
        && let Some(first) = examples.first()
    {
        return first.clone();
    }
    for given in ["example", "const", "default"] {
        if let Some(value) = object.get(given) {
            return value.clone();
        }
    }
    if let Some(Value::Array(choices)) = object.get("enum")
        && let Some(first) = choices.first()
    {
        return first.clone();
    }
    if let Some(target) = object.get("$ref").and_then(Value::as_str).and_then(|pointer| resolve(root, pointer)) {
        return generate(target, root, depth + 1);
    }
    if let Some(Value::Array(parts)) = object.get("allOf") {
        let mut merged = Map::new();
        let mut last = Value::Null;
        for part in parts {
            match generate(part, root, depth + 1) {
                Value::Object(fields) => merged.extend(fields),
                other => last = other,
            }
        }
        if !merged.is_empty() || last.is_null() {
            if let Value::Object(own) = generate_typed(object, root, depth) {
                merged.extend(own);
            }
            return Value::Object(merged);
        }
        return last;
    }
    for alternatives in ["anyOf", "oneOf"] {
        if let Some(Value::Array(choices)) = object.get(alternatives)
            && let Some(first) = choices.first()
        {
            return generate(first, root, depth + 1);
        }
    }
    generate_typed(object, root, depth)
}

/// A value of the type `object` asks for (the first that is not `null` when it lists several).
fn generate_typed(object: &Map<String, Value>, root: &Value, depth: usize) -> Value {
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => {
            kinds.iter().filter_map(Value::as_str).find(|kind| *kind != "null").unwrap_or("null")
        }
        _ if object.contains_key("properties") => "object",
        _ if object.contains_key("items") => "array",
        _ => "none",
    };
    let number = |name: &str| object.get(name).and_then(Value::as_f64);
    match kind {
        "object" => {
            let mut fields = Map::new();
            if let Some(Value::Object(properties)) = object.get("properties") {
                for (name, property) in properties {
                    fields.insert(name.clone(), generate(property, root, depth + 1));
                }
            }
            Value::Object(fields)
        }
        "array" => {
            let count = object.get("minItems").and_then(Value::as_u64).unwrap_or(1).max(1);
            let item = object.get("items").map_or(Value::Null, |items| generate(items, root, depth + 1));
            Value::Array(vec![item; count.min(16) as usize])
        }
        "string" => Value::String(string(object)),
        "integer" => {
            let low = number("minimum").or(number("exclusiveMinimum").map(|m| m.floor() + 1.0)).unwrap_or(0.0);
            let high = number("maximum").or(number("exclusiveMaximum").map(|m| m.ceil() - 1.0));
            json!(high.map_or(low.max(0.0), |high| low.max(0.0).min(high)) as i64)
        }
        "number" => {
            let low = number("minimum").or(number("exclusiveMinimum").map(|m| m + 1.0)).unwrap_or(0.0);
            let high = number("maximum");
            json!(high.map_or(low.max(0.0), |high| low.max(0.0).min(high)))
        }
        "boolean" => Value::Bool(false),
        _ => Value::Null,
    }
}

fn string(object: &Map<String, Value>) -> String {
    let mut text = match object.get("format").and_then(Value::as_str) {
        Some("date-time") => "2026-01-01T00:00:00Z",
        Some("date") => "2026-01-01",
        Some("time") => "00:00:00Z",
        Some("email" | "idn-email") => "user@example.com",
        Some("uri" | "url" | "iri") => "https://example.com/",
        Some("hostname" | "idn-hostname") => "example.com",
        Some("uuid") => "00000000-0000-4000-8000-000000000000",
        Some("ipv4") => "192.0.2.1",
        Some("ipv6") => "2001:db8::1",
        _ => "string",
    }
    .to_owned();
    let min = object.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    while text.chars().count() < min {
        text.push('x');
    }
    if let Some(max) = object.get("maxLength").and_then(Value::as_u64) {
        text = text.chars().take(max as usize).collect();
    }
    text
}

/// The schema a local reference (`#/$defs/order`) points to.
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(&pointer.replace("%24", "$"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample is `expected`, and it fits the schema.
    #[track_caller]
    fn check(schema: Value, expected: Value) {
        let sample = from_schema(&schema);
        assert_eq!(sample, expected);
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator.iter_errors(&sample).map(|error| error.to_string()).collect();
        assert!(errors.is_empty(), "{sample} does not fit {schema}: {errors:?}");
    }

    #[test]
    fn an_object_gets_every_property_by_its_type() {
        check(
            json!({"type": "object", "required": ["orderId", "amount"], "properties": {
                "orderId": {"type": "string"}, "amount": {"type": "integer", "minimum": 1},
                "paid": {"type": "boolean"}, "total": {"type": "number"}, "note": {"type": ["null", "string"]},
                "lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}}
            }}),
            json!({"orderId": "string", "amount": 1, "paid": false, "total": 0.0, "note": "string",
                   "lines": [{"sku": "string"}]}),
        );
    }

    #[test]
    fn what_the_schema_gives_comes_first() {
        check(json!({"type": "string", "examples": ["ORD-1"]}), json!("ORD-1"));
        check(json!({"type": "string", "enum": ["paid", "refunded"]}), json!("paid"));
        check(json!({"const": 7}), json!(7));
        check(json!({"type": "integer", "default": 3}), json!(3));
    }

    #[test]
    fn bounds_and_formats_are_kept() {
        check(json!({"type": "string", "minLength": 10}), json!("stringxxxx"));
        check(json!({"type": "string", "maxLength": 3}), json!("str"));
        check(json!({"type": "string", "format": "date-time"}), json!("2026-01-01T00:00:00Z"));
        check(json!({"type": "string", "format": "email"}), json!("user@example.com"));
        check(json!({"type": "integer", "exclusiveMinimum": 4, "maximum": 9}), json!(5));
        check(json!({"type": "integer", "maximum": -2}), json!(-2));
        check(json!({"type": "array", "items": {"type": "integer"}, "minItems": 2}), json!([0, 0]));
    }

    #[test]
    fn references_and_combinations_are_followed() {
        check(
            json!({"$defs": {"money": {"type": "object", "properties": {"cents": {"type": "integer"}}}},
                   "type": "object", "properties": {"price": {"$ref": "#/$defs/money"}}}),
            json!({"price": {"cents": 0}}),
        );
        check(
            json!({"allOf": [{"properties": {"a": {"type": "string"}}}, {"properties": {"b": {"type": "integer"}}}]}),
            json!({"a": "string", "b": 0}),
        );
        check(json!({"oneOf": [{"type": "boolean"}, {"type": "string"}]}), json!(false));
    }

    #[test]
    fn a_schema_that_refers_to_itself_ends() {
        let schema = json!({"type": "object", "properties": {"child": {"$ref": "#"}}});
        let sample = from_schema(&schema);
        let mut depth = 0;
        let mut node = &sample;
        while let Some(child) = node.get("child") {
            depth += 1;
            node = child;
        }
        assert!((1..=MAX_DEPTH + 1).contains(&depth), "{depth}");
    }
}
