//! Shapes: a hook may project its payload into fixed fields (JSONPath) and validate the result
//! against a JSON Schema. A payload that does not fit is refused (422 with every reason) or
//! kept in quarantine (stored, flagged, not triggered), as the hook says. The schema and paths
//! are compiled once, when the definition loads. Pure: no I/O.

use crate::jsonpath::JsonPath;
use serde_json::{Map, Value};
use std::sync::Arc;

/// What to do with a payload that does not fit the shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    Reject,
    Quarantine,
}

/// A compiled shape.
#[derive(Clone)]
pub struct Shape {
    /// Output field name and the path it is read from, in order.
    fields: Vec<(String, JsonPath)>,
    schema: Option<(Value, Arc<jsonschema::Validator>)>,
    pub on_invalid: OnInvalid,
    /// The definition's text, for equality and debugging.
    source: Value,
}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shape({})", self.source)
    }
}

impl PartialEq for Shape {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Why a payload does not fit, one reason per failed rule, each located by JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    pub reasons: Vec<String>,
}

/// The outcome of applying a shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Shaped {
    /// The data to store, which fits.
    Fits(Value),
    /// The data does not fit and the hook keeps it in quarantine.
    Quarantined { data: Value, misfit: Misfit },
}

impl Shape {
    /// The JSON Schema the shaped data must fit, as the definition writes it.
    pub fn schema(&self) -> Option<&Value> {
        self.schema.as_ref().map(|(schema, _)| schema)
    }

    /// Compiles a shape definition; every problem is returned as (pointer suffix, message).
    pub fn compile(definition: &Value) -> Result<Shape, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let Some(object) = definition.as_object() else {
            return Err(vec![(String::new(), "expected a shape object: fields, schema, onInvalid".into())]);
        };
        for key in object.keys().filter(|key| !["fields", "schema", "onInvalid"].contains(&key.as_str())) {
            problems.push((
                format!("/{key}"),
                format!("unknown shape property {key:?}; known properties are fields, schema, onInvalid"),
            ));
        }
        let mut fields = Vec::new();
        match object.get("fields") {
            None => {}
            Some(Value::Object(map)) => {
                for (name, path) in map {
                    match path.as_str().map(JsonPath::parse) {
                        Some(Ok(path)) => fields.push((name.clone(), path)),
                        Some(Err(error)) => {
                            problems.push((format!("/fields/{name}"), format!("invalid JSONPath: {error}")))
                        }
                        None => problems.push((
                            format!("/fields/{name}"),
                            "expected a JSONPath string such as \"$.data.id\"".into(),
                        )),
                    }
                }
            }
            Some(_) => problems.push(("/fields".into(), "expected an object of field name to JSONPath".into())),
        }
        let schema = match object.get("schema") {
            None => None,
            Some(schema) => match jsonschema::validator_for(schema) {
                Ok(validator) => Some((schema.clone(), Arc::new(validator))),
                Err(error) => {
                    problems.push(("/schema".into(), format!("invalid JSON Schema: {error}")));
                    None
                }
            },
        };
        let on_invalid = match object.get("onInvalid") {
            None => OnInvalid::Reject,
            Some(Value::String(text)) if text == "reject" => OnInvalid::Reject,
            Some(Value::String(text)) if text == "quarantine" => OnInvalid::Quarantine,
            Some(other) => {
                problems.push(("/onInvalid".into(), format!("expected reject or quarantine, found {other}")));
                OnInvalid::Reject
            }
        };
        if problems.is_empty() {
            Ok(Shape { fields, schema, on_invalid, source: definition.clone() })
        } else {
            Err(problems)
        }
    }

    /// True when the shape replaces the payload with projected fields (the stored data is then
    /// no longer the body parsed).
    pub fn projects(&self) -> bool {
        !self.fields.is_empty()
    }

    /// Projects and validates `data`.
    pub fn apply(&self, data: Value) -> Result<Shaped, Misfit> {
        let data = if self.fields.is_empty() {
            data
        } else {
            let mut projected = Map::new();
            for (name, path) in &self.fields {
                if let Some(value) = path.first(&data) {
                    projected.insert(name.clone(), value.clone());
                }
            }
            Value::Object(projected)
        };
        let Some((_, validator)) = &self.schema else { return Ok(Shaped::Fits(data)) };
        let reasons: Vec<String> = validator
            .iter_errors(&data)
            .map(|error| {
                let at = error.instance_path.to_string();
                if at.is_empty() { error.to_string() } else { format!("{at}: {error}") }
            })
            .collect();
        match (reasons.is_empty(), self.on_invalid) {
            (true, _) => Ok(Shaped::Fits(data)),
            (false, OnInvalid::Reject) => Err(Misfit { reasons }),
            (false, OnInvalid::Quarantine) => Ok(Shaped::Quarantined { data, misfit: Misfit { reasons } }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order_shape(on_invalid: &str) -> Shape {
        Shape::compile(&json!({
            "fields": {"orderId": "$.data.object.id", "amount": "$.data.object.amount"},
            "schema": {"type": "object", "required": ["orderId", "amount"], "properties": {"amount": {"type": "integer", "minimum": 1}}},
            "onInvalid": on_invalid
        }))
        .unwrap()
    }

    #[test]
    fn fields_are_projected_and_validated() {
        let shaped =
            order_shape("reject").apply(json!({"data": {"object": {"id": "pi_1", "amount": 2000, "extra": true}}}));
        assert_eq!(shaped, Ok(Shaped::Fits(json!({"orderId": "pi_1", "amount": 2000}))));
    }

    #[test]
    fn a_misfit_is_rejected_with_every_reason() {
        let misfit = order_shape("reject").apply(json!({"data": {"object": {"amount": 0}}})).unwrap_err();
        assert_eq!(misfit.reasons.len(), 2, "{:?}", misfit.reasons);
        assert!(misfit.reasons.iter().any(|r| r.contains("orderId")), "{:?}", misfit.reasons);
        assert!(misfit.reasons.iter().any(|r| r.starts_with("/amount")), "{:?}", misfit.reasons);
    }

    #[test]
    fn a_misfit_can_be_kept_in_quarantine() {
        let shaped = order_shape("quarantine").apply(json!({"data": {}})).unwrap();
        assert!(matches!(shaped, Shaped::Quarantined { .. }));
    }

    #[test]
    fn bad_shapes_report_each_problem() {
        let problems = Shape::compile(
            &json!({"fields": {"a": "$[", "b": 3}, "schema": {"type": "nonsense"}, "onInvalid": "drop", "x": 1}),
        )
        .unwrap_err();
        let at: Vec<&str> = problems.iter().map(|(at, _)| at.as_str()).collect();
        assert_eq!(at, ["/x", "/fields/a", "/fields/b", "/schema", "/onInvalid"]);
    }
}
