//! The editor schema for hook definitions, `schema/hook-definition.schema.json`.
//!
//! The schema must be a valid draft 2020-12 schema, accept the shipped definitions and the
//! Kustomer example unchanged, and reject each kind of invalid hook at the JSON pointer an editor
//! would underline. The definitions loader stays the authority: these tests only cover the rules
//! a schema can express, and they never start the server.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::{Value, json};

/// The example app definition from the Kustomer "Inbound Webhooks" page, byte for byte.
const KUSTOMER_EXAMPLE: &str = r#"{
  "app": "ecommstore",
  "version": "0.0.1",
  "title": "E-comm Store",
  "hooks": [{
    "eventName": "kustomer.app.ecommstore.order.update",
    "displayEventName": "Order Update Event",
    "description": "A hook triggered when an order is updated in Ecommerce Store",
    "type": "form"
  }]
}"#;

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| {
    jsonschema::draft202012::new(&schema())
        .unwrap_or_else(|error| panic!("the hook definition schema does not compile: {error}"))
});

fn project_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
}

fn schema() -> Value {
    read_json(&project_path("schema/hook-definition.schema.json"))
}

fn errors(definition: &Value) -> Vec<ValidationError<'static>> {
    VALIDATOR.iter_errors(definition).map(ValidationError::to_owned).collect()
}

fn describe(errors: &[ValidationError<'_>]) -> String {
    errors.iter().map(|error| format!("{}: {error}", error.instance_path)).collect::<Vec<_>>().join("\n")
}

/// An app holding one hook, so that only the hook decides whether the definition is valid.
fn app_with_hook(hook: Value) -> Value {
    json!({ "app": "ecommstore", "version": "0.0.1", "hooks": [hook] })
}

#[track_caller]
fn check_valid(definition: &Value) {
    let errors = errors(definition);
    assert!(errors.is_empty(), "expected a valid definition, got:\n{}", describe(&errors));
}

/// Asserts that `hook` is rejected with an error at `pointer` whose kind satisfies `expected`.
#[track_caller]
fn check_rejected(hook: Value, pointer: &str, expected: impl Fn(&ValidationErrorKind) -> bool) {
    let errors = errors(&app_with_hook(hook));
    assert!(
        errors.iter().any(|error| error.instance_path.as_str() == pointer && expected(&error.kind)),
        "expected a matching error at {pointer}, got:\n{}",
        describe(&errors)
    );
}

#[test]
fn schema_is_a_valid_draft_2020_12_schema() {
    let schema = schema();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["$id"], "https://hookgate.dev/schema/hook-definition.schema.json");
    if let Err(error) = jsonschema::draft202012::meta::validate(&schema) {
        panic!("the schema fails the 2020-12 meta-schema at {}: {error}", error.instance_path);
    }
    // Compiling also checks that every pattern is a valid regular expression.
    LazyLock::force(&VALIDATOR);
}

#[test]
fn schema_accepts_its_own_examples() {
    let schema = schema();
    let examples = schema["examples"].as_array().expect("app-level examples");
    assert!(!examples.is_empty());
    for example in examples {
        check_valid(example);
    }
    let hook_examples = schema["$defs"]["hook"]["examples"].as_array().expect("hook-level examples");
    for hook in hook_examples {
        check_valid(&app_with_hook(hook.clone()));
    }
}

#[test]
fn schema_accepts_every_shipped_definition() {
    // The loader reads subfolders too (the platform sources live in hook-definitions/sources/).
    let mut folders = vec![project_path("hook-definitions")];
    let mut checked = Vec::new();
    while let Some(folder) = folders.pop() {
        let entries = fs::read_dir(&folder).unwrap_or_else(|error| panic!("cannot list {}: {error}", folder.display()));
        for entry in entries {
            let path = entry.expect("a readable folder entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|extension| extension == "json") {
                let errors = errors(&read_json(&path));
                assert!(errors.is_empty(), "{} does not match the schema:\n{}", path.display(), describe(&errors));
                checked.push(path);
            }
        }
    }
    assert!(checked.iter().any(|path| path.ends_with("sources/stripe.json")), "the platform sources are checked too");
    assert!(
        checked.iter().any(|path| path.ends_with("ecommstore.json")),
        "expected hook-definitions/ecommstore.json among {checked:?}"
    );
}

#[test]
fn schema_accepts_the_kustomer_example_unchanged() {
    let example: Value = serde_json::from_str(KUSTOMER_EXAMPLE).expect("the example is JSON");
    check_valid(&example);
}

#[test]
fn schema_accepts_unknown_app_level_properties() {
    check_valid(&json!({
        "$schema": "https://hookgate.dev/schema/hook-definition.schema.json",
        "app": "ecommstore",
        "version": "0.0.1",
        "dependencies": [],
        "settings": { "default": { "apiBaseUrl": { "type": "string" } } },
    }));
}

#[test]
fn schema_accepts_each_extension_on_its_hook_types() {
    check_valid(&json!({
        "app": "ecommstore",
        "version": "0.0.1",
        "hooks": [
            {
                "eventName": "kustomer.app.ecommstore.contact.submit",
                "type": "form",
                "maxBodyBytes": 67_108_864,
                "maxFileBytes": 0,
                "redirectUrl": "https://shop.example/thanks?from=contact",
                "allowedOrigins": ["https://shop.example", "http://localhost:3000", "*"],
            },
            {
                "eventName": "kustomer.app.ecommstore.order.paid",
                "type": "web",
                "maxBodyBytes": 1,
                "maxFileBytes": 67_108_864,
                "apiKeys": ["${ECOMMSTORE_API_KEY}", "${_LEGACY_KEY_2}"],
            },
            {
                "eventName": "kustomer.app.ecommstore.mail.received",
                "type": "email",
                "maxBodyBytes": 1_048_576,
            },
        ],
    }));
}

#[test]
fn schema_rejects_unknown_hook_property() {
    check_rejected(
        json!({
            "eventName": "kustomer.app.ecommstore.order.update",
            "type": "form",
            "color": "red",
        }),
        "/hooks/0",
        |kind| {
            matches!(kind, ValidationErrorKind::AdditionalProperties { unexpected }
                if unexpected == &["color"])
        },
    );
}

#[test]
fn schema_rejects_unknown_hook_type() {
    check_rejected(
        json!({ "eventName": "kustomer.app.ecommstore.order.update", "type": "sms" }),
        "/hooks/0/type",
        |kind| matches!(kind, ValidationErrorKind::Enum { .. }),
    );
}

#[test]
fn schema_rejects_hook_without_event_name() {
    check_rejected(json!({ "displayEventName": "Order Update Event", "type": "form" }), "/hooks/0", |kind| {
        matches!(kind, ValidationErrorKind::Required { property }
                if property == "eventName")
    });
}

#[test]
fn schema_rejects_redirect_url_on_web_hook() {
    check_rejected(
        json!({
            "eventName": "kustomer.app.ecommstore.order.paid",
            "type": "web",
            "redirectUrl": "https://shop.example/thanks",
        }),
        "/hooks/0/redirectUrl",
        |kind| matches!(kind, ValidationErrorKind::FalseSchema),
    );
}

#[test]
fn schema_rejects_allowed_origins_on_email_hook() {
    check_rejected(
        json!({
            "eventName": "kustomer.app.ecommstore.mail.received",
            "type": "email",
            "allowedOrigins": ["*"],
        }),
        "/hooks/0/allowedOrigins",
        |kind| matches!(kind, ValidationErrorKind::FalseSchema),
    );
}

#[test]
fn schema_rejects_api_keys_on_form_hook() {
    check_rejected(
        json!({
            "eventName": "kustomer.app.ecommstore.order.update",
            "type": "form",
            "apiKeys": ["${ECOMMSTORE_API_KEY}"],
        }),
        "/hooks/0/apiKeys",
        |kind| matches!(kind, ValidationErrorKind::FalseSchema),
    );
}

#[test]
fn schema_rejects_max_file_bytes_on_email_hook() {
    check_rejected(
        json!({
            "eventName": "kustomer.app.ecommstore.mail.received",
            "type": "email",
            "maxFileBytes": 1024,
        }),
        "/hooks/0/maxFileBytes",
        |kind| matches!(kind, ValidationErrorKind::FalseSchema),
    );
}

#[test]
fn schema_rejects_literal_api_key() {
    check_rejected(
        json!({
            "eventName": "kustomer.app.ecommstore.order.paid",
            "type": "web",
            "apiKeys": ["sk_live_4f9a2c"],
        }),
        "/hooks/0/apiKeys/0",
        |kind| matches!(kind, ValidationErrorKind::Pattern { .. }),
    );
}

#[test]
fn schema_rejects_event_name_with_empty_segment() {
    check_rejected(
        json!({ "eventName": "kustomer.app..order.update", "type": "form" }),
        "/hooks/0/eventName",
        |kind| matches!(kind, ValidationErrorKind::Pattern { .. }),
    );
}

#[test]
fn schema_rejects_event_name_over_200_characters() {
    let long_name = format!("kustomer.app.ecommstore.{}", "a".repeat(200));
    check_rejected(json!({ "eventName": long_name, "type": "form" }), "/hooks/0/eventName", |kind| {
        matches!(kind, ValidationErrorKind::MaxLength { limit: 200 })
    });
}

#[test]
fn schema_rejects_origin_with_path() {
    check_rejected(
        json!({
            "eventName": "kustomer.app.ecommstore.order.update",
            "type": "form",
            "allowedOrigins": ["https://shop.example/"],
        }),
        "/hooks/0/allowedOrigins/0",
        |kind| matches!(kind, ValidationErrorKind::Pattern { .. }),
    );
}

#[test]
fn schema_rejects_app_name_with_uppercase_letters() {
    let errors = errors(&json!({ "app": "EcommStore", "version": "0.0.1" }));
    assert!(
        errors
            .iter()
            .any(|error| error.instance_path.as_str() == "/app"
                && matches!(error.kind, ValidationErrorKind::Pattern { .. })),
        "expected a pattern error at /app, got:\n{}",
        describe(&errors)
    );
}
