//! The other seed platforms' names for subscription fields, turned into hookgate's before a
//! request is validated: seed 001's `enabled` (a boolean) for `status`, seed 004's `target_url`
//! for `url` and `event` (one name or pattern) for `events`.
//!
//! `enabled: true` is `status: "active"`; `enabled: false` is `status: "disabled"` (nothing is
//! delivered or kept, as seed 001 says of a disabled endpoint). A field and its alias together
//! are refused. Problems that validation finds in an aliased field are named by the alias the
//! caller sent, so that a client sees its own field names. Pure: no I/O.

use serde_json::{Map, Value};

use super::FieldError;

/// `(alias, hookgate's field)`.
const ALIASES: &[(&str, &str)] = &[("enabled", "status"), ("target_url", "url"), ("event", "events")];

/// A request in hookgate's field names, and which of them the caller named otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Canonical {
    pub request: Value,
    /// `(hookgate's field, the alias sent)`.
    renamed: Vec<(&'static str, &'static str)>,
}

impl Canonical {
    /// Names each problem by the field the caller sent (`target_url`, not `url`).
    pub fn rename_errors(&self, errors: Vec<FieldError>) -> Vec<FieldError> {
        errors
            .into_iter()
            .map(|mut error| {
                for (field, alias) in &self.renamed {
                    if error.field == *field {
                        error.field = (*alias).to_owned();
                    } else if error.field.strip_prefix(field).is_some_and(|rest| rest.starts_with('[')) {
                        // `events[0]` from `event`: the one value the caller sent.
                        error.field = (*alias).to_owned();
                    }
                }
                error
            })
            .collect()
    }
}

/// Rewrites the aliases of `request` into hookgate's fields, or names every misused alias.
/// Anything that is not a JSON object is passed on for validation to refuse.
pub fn canonical(request: &Value) -> Result<Canonical, Vec<FieldError>> {
    let Some(object) = request.as_object() else {
        return Ok(Canonical { request: request.clone(), renamed: Vec::new() });
    };
    let mut errors = Vec::new();
    let mut rewritten = Map::new();
    let mut renamed = Vec::new();
    for (key, value) in object {
        let Some((alias, field)) = ALIASES.iter().find(|(alias, _)| alias == key) else {
            rewritten.insert(key.clone(), value.clone());
            continue;
        };
        let taken = object.contains_key(*field) || (*field == "events" && object.contains_key("subscribed_events"));
        if taken {
            errors.push(FieldError {
                field: (*alias).to_owned(),
                message: format!("give {field} or its alias {alias}, not both"),
            });
            continue;
        }
        let translated = match (*alias, value) {
            ("enabled", Value::Bool(true)) => Ok(Value::from("active")),
            ("enabled", Value::Bool(false)) => Ok(Value::from("disabled")),
            ("enabled", _) => Err("expected true (status active) or false (status disabled)"),
            ("target_url", url) => Ok(url.clone()),
            ("event", Value::String(name)) => Ok(Value::Array(vec![Value::String(name.clone())])),
            ("event", _) => Err("expected one event name or pattern (a string)"),
            _ => unreachable!("every alias is matched above"),
        };
        match translated {
            Ok(value) => {
                rewritten.insert((*field).to_owned(), value);
                renamed.push((*field, *alias));
            }
            Err(message) => errors.push(FieldError { field: (*alias).to_owned(), message: message.to_owned() }),
        }
    }
    if errors.is_empty() { Ok(Canonical { request: Value::Object(rewritten), renamed }) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[track_caller]
    fn check(request: Value, expected: Value) {
        assert_eq!(canonical(&request).unwrap().request, expected);
    }

    #[test]
    fn aliases_become_hookgates_fields() {
        check(
            json!({"url": "https://a.example", "events": ["x.y"], "enabled": true}),
            json!({"url": "https://a.example", "events": ["x.y"], "status": "active"}),
        );
        check(json!({"enabled": false}), json!({"status": "disabled"}));
        check(
            json!({"target_url": "https://a.example", "event": "x.y", "resource_id": "123"}),
            json!({"url": "https://a.example", "events": ["x.y"], "resource_id": "123"}),
        );
        check(json!({"name": "n", "status": "paused"}), json!({"name": "n", "status": "paused"}));
    }

    #[test]
    fn an_alias_beside_its_field_or_of_the_wrong_type_is_named() {
        let errors = canonical(&json!({"enabled": "yes", "status": "active", "event": ["a"], "target_url": 1}))
            .err()
            .unwrap_or_default();
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["enabled", "event"], "target_url's type is validation's to check, as url: {errors:?}");
        let both = canonical(&json!({"event": "a", "subscribed_events": ["b"]})).err().unwrap_or_default();
        assert_eq!(both[0].field, "event");
        assert!(both[0].message.contains("not both"), "{both:?}");
    }

    #[test]
    fn validation_problems_are_named_by_the_alias_sent() {
        let request = canonical(&json!({"target_url": 1, "event": "bad*", "name": 5})).unwrap();
        let errors = request.rename_errors(vec![
            FieldError { field: "url".into(), message: "expected a string".into() },
            FieldError { field: "events[0]".into(), message: "not a pattern".into() },
            FieldError { field: "name".into(), message: "expected a string".into() },
        ]);
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["target_url", "event", "name"]);
    }
}
