//! Property tests for the definition checker over JSON it was never meant to see: any JSON
//! value as a whole document, and any JSON value put in place of one part of a valid document
//! (every hook type, a platform source, shapes, templates). The checker never panics, accepts a
//! document only with no error, locates every error by a JSON pointer that resolves in the
//! document (or names the document's root), and gives the same verdict twice.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{Origin, Severity, SourceDocument, ValidationOptions, validate};
use crate::secrets::SecretSource;

fn options() -> ValidationOptions {
    ValidationOptions {
        event_prefix: "kustomer.app".into(),
        secrets: SecretSource::from_values([("STRIPE_SECRET".to_owned(), "whsec_property".to_owned())]),
    }
}

/// A document that passes, touching most of what the checker reads.
fn valid_document() -> Value {
    json!({
        "app": "props",
        "version": "1.0.0",
        "title": "Properties",
        "hooks": [
            {"eventName": "kustomer.app.props.form", "type": "form", "maxBodyBytes": 1024,
             "allowedOrigins": ["https://shop.example"], "redirectUrl": "https://shop.example/thanks"},
            {"eventName": "kustomer.app.props.web", "type": "web", "shape": {"fields": {"id": "$.order.id"}, "schema": {"type": "object"}}},
            {"eventName": "kustomer.app.props.mail", "type": "email",
             "email": {"eventName": "kustomer.app.props.{$['@type']}", "textJson": "all"}},
            {"eventName": "stripe.event", "type": "web", "source": {
                "path": "stripe-props", "scheme": "stripe", "secrets": ["${STRIPE_SECRET}"],
                "eventName": "stripe.{$.type}", "deliveryId": "{$.id}"}}
        ]
    })
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |number| number.is_finite()).prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::String),
        prop_oneof![
            Just("form"),
            Just("web"),
            Just("email"),
            Just("stripe"),
            Just("generic-hmac"),
            Just("{$.id}"),
            Just("${STRIPE_SECRET}"),
            Just("$..*"),
            Just("kustomer.app.props.x")
        ]
        .prop_map(|text| Value::String(text.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-zA-Z]{1,12}", inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer into `value`, the root included.
fn pointers(value: &Value, at: String, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                pointers(child, format!("{at}/{escaped}"), into);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{index}"), into);
            }
        }
        _ => {}
    }
    into.push(at);
}

/// Validates `json` twice, checks what every verdict must satisfy, and returns whether it passed.
fn check(json: Value) -> Result<bool, TestCaseError> {
    let documents = [SourceDocument { origin: Origin::File("props.json".into()), json: json.clone() }];
    let first = validate(&documents, &options());
    let second = validate(&documents, &options());
    prop_assert_eq!(first.is_valid(), second.is_valid(), "the same verdict twice");
    prop_assert_eq!(first.diagnostics.len(), second.diagnostics.len());
    prop_assert_eq!(first.is_valid(), first.errors().next().is_none());
    for diagnostic in &first.diagnostics {
        prop_assert!(!diagnostic.message.is_empty());
        if diagnostic.severity == Severity::Error && !diagnostic.pointer.is_empty() {
            // The pointer names a place in the document, or a member that is missing there.
            let parent = diagnostic.pointer.rsplit_once('/').map_or("", |(parent, _)| parent);
            prop_assert!(
                json.pointer(&diagnostic.pointer).is_some() || json.pointer(parent).is_some(),
                "{} does not point into the document: {}",
                diagnostic.pointer,
                diagnostic
            );
        }
    }
    Ok(first.is_valid())
}

#[test]
fn the_valid_document_passes() {
    assert!(check(valid_document()).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_json_document_gets_a_verdict_without_panicking(json in any_json()) {
        check(json)?;
    }

    #[test]
    fn any_json_in_place_of_one_part_of_a_valid_document_gets_a_verdict(
        choice in any::<prop::sample::Index>(),
        replacement in any_json(),
    ) {
        let mut document = valid_document();
        let mut places = Vec::new();
        pointers(&document, String::new(), &mut places);
        let place = choice.get(&places).clone();
        if place.is_empty() {
            document = replacement;
        } else if let Some(slot) = document.pointer_mut(&place) {
            *slot = replacement;
        }
        check(document)?;
    }
}
