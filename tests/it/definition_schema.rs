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

/// Generated definitions: the loader (`hookgate::definitions::validate`, what `hookgate check`
/// and every reload run) and the schema must agree on accept or reject, for valid documents and
/// for documents with one thing changed (a wrong type, an unknown key, a missing key, an out of
/// range number, a near-valid string in any string field, a property on the wrong hook type).
///
/// Left out, because a schema cannot express them: uniqueness of app names, event names and
/// source paths across hooks and files (generated names are unique); whether a secret reference
/// resolves (in `apiKeys` and `mailgunSigningKey`, where an unset secret is an error, generated
/// references resolve); the syntax of JSONPath in templates (`source.eventName`,
/// `source.deliveryId`, `email.eventName`) and shape fields, and whether `shape.schema` is itself
/// a valid JSON Schema (generated ones are valid and never replaced by other strings); numbers
/// written with a fraction or an exponent that are whole (`1.0`, `1e3`): JSON Schema's data model
/// does not tell them from `1` and `1000`, and the loader refuses them.
mod properties {
    use hookgate::definitions::{Origin, SourceDocument, ValidationOptions, validate};
    use hookgate::secrets::SecretSource;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::{KUSTOMER_EXAMPLE, VALIDATOR, describe, errors};

    /// Secret names the loader can resolve, and one it cannot (a warning where allowed).
    const RESOLVED: &[&str] = &["ECOMMSTORE_API_KEY", "STRIPE_SECRET", "_K1", "MAIL_KEY"];
    const UNRESOLVED: &str = "NOT_SET_ANYWHERE";

    /// The scheme names docs/hook-definitions.md lists.
    const SCHEMES: &[&str] = &[
        "standard-webhooks",
        "svix",
        "stripe",
        "github",
        "hubspot",
        "shopify",
        "slack",
        "twilio",
        "square",
        "paddle",
        "discord",
        "zoom",
        "meta",
        "sendgrid",
        "mailgun",
        "intercom",
        "zendesk",
        "linear",
        "typeform",
        "calendly",
        "gitlab",
        "basic-auth",
        "url-token",
        "generic-hmac",
    ];

    fn options() -> ValidationOptions {
        ValidationOptions {
            event_prefix: "kustomer.app".into(),
            secrets: SecretSource::from_values(
                RESOLVED.iter().map(|name| (name.to_string(), format!("value-of-{name}"))),
            ),
        }
    }

    /// The loader's verdict and its diagnostics.
    fn loader_accepts(document: &Value) -> (bool, String) {
        let documents = [SourceDocument { origin: Origin::File("generated.json".into()), json: document.clone() }];
        let validated = validate(&documents, &options());
        let rendered = validated.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        (validated.is_valid(), rendered)
    }

    fn check_agreement(document: &Value) -> Result<(), TestCaseError> {
        let (loader, diagnostics) = loader_accepts(document);
        let schema = VALIDATOR.is_valid(document);
        prop_assert_eq!(
            loader,
            schema,
            "the loader {} and the schema {} this document:\n{}\nloader: {}\nschema: {}",
            if loader { "accepts" } else { "refuses" },
            if schema { "accepts" } else { "refuses" },
            serde_json::to_string_pretty(document).unwrap(),
            diagnostics,
            describe(&errors(document)),
        );
        Ok(())
    }

    #[test]
    fn the_kustomer_example_passes_the_loader_and_the_schema() {
        let example: Value = serde_json::from_str(KUSTOMER_EXAMPLE).expect("the example is JSON");
        let (loader, diagnostics) = loader_accepts(&example);
        assert!(loader, "{diagnostics}");
        assert!(diagnostics.is_empty(), "not even a warning: {diagnostics}");
        assert!(VALIDATOR.is_valid(&example));
    }

    /// The disagreements the properties below found, each settled: the verdict both now give.
    /// Where the loader was wrong it was fixed (`$schema` typed, `secrets` required, unknown
    /// `hmac` keys, `HOOKGATE_` names in every reference, origins as `scheme://host[:port]`);
    /// everywhere else the schema now says what the loader does.
    #[test]
    fn settled_disagreements_get_one_verdict() {
        let app = |hooks: Value| json!({"app": "shop", "version": "1.0.0", "hooks": hooks});
        let form = |extra: Value| {
            let mut hook = json!({"eventName": "shop.form", "type": "form"});
            hook.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            app(json!([hook]))
        };
        let source = |extra: Value| {
            let mut source = json!({"path": "acme", "scheme": "generic-hmac", "secrets": ["${STRIPE_SECRET}"],
                "hmac": {"header": "X-Sig", "algorithm": "sha256", "encoding": "hex"}});
            source.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            app(json!([{"eventName": "shop.source", "type": "web", "source": source}]))
        };
        let hmac = |hmac: Value| source(json!({"hmac": hmac}));
        let email = |email: Value| app(json!([{"eventName": "shop.mail", "type": "email", "email": email}]));
        let cases: Vec<(&str, Value, bool)> = vec![
            ("a blank version", json!({"app": "shop", "version": " \u{a0}"}), false),
            ("a $schema that is not a string", json!({"$schema": 5, "app": "shop", "version": "1"}), false),
            (
                "a source without secrets",
                app(json!([{"eventName": "e", "type": "web", "source": {"path": "p", "scheme": "github"}}])),
                false,
            ),
            (
                "an unknown hmac key",
                hmac(json!({"header": "X-Sig", "algorithm": "sha256", "encoding": "hex", "prefx": "v1="})),
                false,
            ),
            ("a blank hmac header", hmac(json!({"header": "\t", "algorithm": "sha256", "encoding": "hex"})), false),
            (
                "{timestamp} signed without its header",
                hmac(json!({"header": "X", "algorithm": "sha1", "encoding": "hex", "signed": "{timestamp}.{body}"})),
                false,
            ),
            (
                "a timestamp header not signed",
                hmac(json!({"header": "X", "algorithm": "sha1", "encoding": "hex", "timestampHeader": "X-T"})),
                false,
            ),
            (
                "both together",
                hmac(
                    json!({"header": "X", "algorithm": "sha1", "encoding": "hex", "signed": "{timestamp}.{body}", "timestampHeader": "X-T"}),
                ),
                true,
            ),
            (
                "an unknown placeholder",
                hmac(json!({"header": "X", "algorithm": "sha1", "encoding": "hex", "signed": "{body}{nonce}"})),
                false,
            ),
            (
                "generic-hmac without hmac",
                app(
                    json!([{"eventName": "e", "type": "web", "source": {"path": "p", "scheme": "generic-hmac", "secrets": []}}]),
                ),
                false,
            ),
            ("hmac beside another scheme", source(json!({"scheme": "stripe"})), false),
            (
                "allowLegacy beside stripe",
                app(
                    json!([{"eventName": "e", "type": "web", "source": {"path": "p", "scheme": "stripe", "secrets": [], "allowLegacy": true}}]),
                ),
                false,
            ),
            ("a source path like a subscription id", source(json!({"path": "sub_x"})), false),
            ("HOOKGATE_ as the mail key", email(json!({"key": "${HOOKGATE_ADMIN_TOKEN}"})), false),
            ("HOOKGATE_ as the Mailgun key", email(json!({"mailgunSigningKey": "${HOOKGATE_ADMIN_TOKEN}"})), false),
            ("HOOKGATE_ as the verify token", source(json!({"verifyToken": "${HOOKGATE_ADMIN_TOKEN}"})), false),
            ("an origin with two colons", form(json!({"allowedOrigins": ["http://a:b:c"]})), false),
            ("an origin with an empty port", form(json!({"allowedOrigins": ["https://a:"]})), false),
            ("an origin with an underscore", form(json!({"allowedOrigins": ["http://a_b"]})), false),
            ("an ftp origin", form(json!({"allowedOrigins": ["ftp://a"]})), false),
            ("an IPv6 origin with a port", form(json!({"allowedOrigins": ["https://[::1]:8080"]})), true),
            ("an upper-case redirect scheme", form(json!({"redirectUrl": "HTTP://shop.example/thanks"})), true),
            ("a redirect without a host", form(json!({"redirectUrl": "http://:80/"})), false),
            ("a redirect with <", form(json!({"redirectUrl": "https://a.example/<x>"})), false),
            ("a redirect with a non-ASCII host", form(json!({"redirectUrl": "https://é.example"})), false),
            ("a redirect with braces in the path", form(json!({"redirectUrl": "https://a.example/{x}"})), true),
            ("a sender with spaces around", email(json!({"allowedSenders": [" @shop.example "]})), true),
            ("a sender domain label starting with -", email(json!({"allowedSenders": ["@-shop.example"]})), false),
            ("a sender whose local part has a space", email(json!({"allowedSenders": ["a b@shop.example"]})), true),
        ];
        let mut wrong = Vec::new();
        for (what, document, valid) in &cases {
            let (loader, diagnostics) = loader_accepts(document);
            let schema = VALIDATOR.is_valid(document);
            if loader != *valid || schema != *valid {
                wrong.push(format!("{what}: expected {valid}, loader {loader} ({diagnostics}), schema {schema}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    // --- valid documents -------------------------------------------------------------------

    fn reference(resolvable: bool) -> BoxedStrategy<Value> {
        if resolvable {
            prop::sample::select(RESOLVED).prop_map(|name| json!(format!("${{{name}}}"))).boxed()
        } else {
            prop_oneof![
                prop::sample::select(RESOLVED).prop_map(|name| json!(format!("${{{name}}}"))),
                Just(json!(format!("${{{UNRESOLVED}}}"))),
            ]
            .boxed()
        }
    }

    fn event_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("kustomer.app.ecommstore".to_owned()),
            prop::collection::vec("[A-Za-z0-9_-]{1,8}", 1..5).prop_map(|segments| segments.join(".")),
        ]
    }

    fn origin() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!("*")),
            ("https?", "[a-z0-9-]{1,8}(\\.[a-z0-9-]{1,8}){0,2}", prop::option::of(1..65536u32)).prop_map(
                |(scheme, host, port)| json!(format!(
                    "{scheme}://{host}{}",
                    port.map(|p| format!(":{p}")).unwrap_or_default()
                ))
            ),
        ]
    }

    fn redirect_url() -> impl Strategy<Value = Value> {
        ("https?", "[a-z0-9-]{1,8}(\\.[a-z0-9-]{1,8}){0,2}", "(/[a-z0-9._~-]{0,8}){0,3}(\\?[a-z0-9=&]{1,8})?")
            .prop_map(|(scheme, host, rest)| json!(format!("{scheme}://{host}{rest}")))
    }

    fn template() -> impl Strategy<Value = Value> {
        prop::sample::select(vec![
            "stripe.{$.type}",
            "{$.id}",
            "github.{header:X-GitHub-Event}.{$.action}",
            "{header:webhook-id|header:svix-id}",
            "kustomer.app.orders.{$['@type']}",
            "plain.name",
        ])
        .prop_map(|text| json!(text))
    }

    fn shape() -> impl Strategy<Value = Value> {
        (
            prop::option::of(prop::collection::btree_map(
                "[a-z]{1,6}",
                prop::sample::select(vec!["$.a", "$.b[0]", "$..id", "$['@type']"]),
                0..3,
            )),
            prop::option::of(prop::sample::select(vec![
                json!({"type": "object"}),
                json!(true),
                json!({"required": ["a"]}),
            ])),
            prop::option::of(prop::sample::select(vec!["reject", "quarantine"])),
        )
            .prop_map(|(fields, schema, on_invalid)| {
                let mut shape = Map::new();
                if let Some(fields) = fields {
                    shape.insert("fields".into(), json!(fields));
                }
                if let Some(schema) = schema {
                    shape.insert("schema".into(), schema);
                }
                if let Some(on_invalid) = on_invalid {
                    shape.insert("onInvalid".into(), json!(on_invalid));
                }
                Value::Object(shape)
            })
    }

    fn hmac() -> impl Strategy<Value = Value> {
        (
            "[A-Za-z][A-Za-z0-9-]{0,11}",
            prop::sample::select(vec!["sha1", "sha256", "sha512"]),
            prop::sample::select(vec!["hex", "base64"]),
            prop::option::of("[a-z0-9]{1,6}="),
            any::<bool>(),
            any::<bool>(),
            prop::sample::select(vec!["", ".", ":", "v0:"]),
            any::<bool>(),
        )
            .prop_map(|(header, algorithm, encoding, prefix, timestamp, id, joiner, method_and_url)| {
                let mut object = Map::new();
                object.insert("header".into(), json!(header));
                object.insert("algorithm".into(), json!(algorithm));
                object.insert("encoding".into(), json!(encoding));
                if let Some(prefix) = prefix {
                    object.insert("prefix".into(), json!(prefix));
                }
                let mut signed = String::new();
                if timestamp {
                    signed.push_str(&format!("{{timestamp}}{joiner}"));
                    object.insert("timestampHeader".into(), json!("X-Timestamp"));
                }
                if id {
                    signed.push_str(&format!("{{id}}{joiner}"));
                    object.insert("idHeader".into(), json!("X-Delivery"));
                }
                if method_and_url {
                    signed.push_str(&format!("{{method}}{joiner}{{url}}{joiner}"));
                }
                signed.push_str("{body}");
                if signed != "{body}" || method_and_url {
                    object.insert("signed".into(), json!(signed));
                }
                Value::Object(object)
            })
    }

    fn source(index: usize) -> impl Strategy<Value = Value> {
        (
            "[a-z0-9][a-z0-9_-]{0,12}",
            prop::sample::select(SCHEMES),
            prop::collection::vec(reference(false), 0..3),
            prop::option::of(1..=86_400u32),
            prop::option::of(template()),
            prop::option::of(template()),
            prop::option::of(any::<bool>()),
            prop::option::of(any::<bool>()),
            hmac(),
            prop::option::of(reference(false)),
            prop::option::of(1..=7_776_000u32),
        )
            .prop_map(
                move |(
                    path,
                    scheme,
                    secrets,
                    tolerance,
                    event_name,
                    delivery_id,
                    split,
                    legacy,
                    hmac,
                    verify_token,
                    dedup,
                )| {
                    let mut source = Map::new();
                    // Paths are unique across hooks, and never subscription ids (`sub_`).
                    source.insert("path".into(), json!(format!("{path}-s{index}")));
                    source.insert("scheme".into(), json!(scheme));
                    source.insert("secrets".into(), Value::Array(secrets));
                    if let Some(tolerance) = tolerance {
                        source.insert("toleranceSeconds".into(), json!(tolerance));
                    }
                    if let Some(event_name) = event_name {
                        source.insert("eventName".into(), event_name);
                    }
                    if let Some(delivery_id) = delivery_id {
                        source.insert("deliveryId".into(), delivery_id);
                    }
                    if let Some(split) = split {
                        source.insert("splitArrays".into(), json!(split));
                    }
                    if let Some(legacy) = legacy
                        && matches!(scheme, "github" | "hubspot")
                    {
                        source.insert("allowLegacy".into(), json!(legacy));
                    }
                    if scheme == "generic-hmac" {
                        source.insert("hmac".into(), hmac);
                    }
                    if let Some(verify_token) = verify_token {
                        source.insert("verifyToken".into(), verify_token);
                    }
                    if let Some(dedup) = dedup {
                        source.insert("dedupWindowSeconds".into(), json!(dedup));
                    }
                    Value::Object(source)
                },
            )
    }

    fn email() -> impl Strategy<Value = Value> {
        (
            prop::option::of(reference(false)),
            prop::option::of(prop::collection::vec(
                prop_oneof![
                    Just(json!("orders@shop.example")),
                    Just(json!("@shop.example")),
                    "[a-z0-9._+-]{1,8}@[a-z0-9]{1,8}(\\.[a-z0-9]{1,5}){0,2}".prop_map(|text| json!(text)),
                    "@[a-z0-9]{1,8}(\\.[a-z0-9]{1,5}){0,2}".prop_map(|text| json!(text)),
                ],
                0..3,
            )),
            prop::option::of(prop::sample::select(vec!["first", "all", "none"])),
            prop::option::of(prop::sample::select(vec!["events", "array"])),
            prop::option::of(template()),
            prop::option::of(reference(true)),
            prop::option::of(any::<bool>()),
        )
            .prop_map(|(key, senders, text_json, multiple, event_name, mailgun, dkim)| {
                let mut email = Map::new();
                let entries = [
                    ("key", key),
                    ("allowedSenders", senders.map(Value::Array)),
                    ("textJson", text_json.map(|text| json!(text))),
                    ("multiple", multiple.map(|text| json!(text))),
                    ("eventName", event_name),
                    ("mailgunSigningKey", mailgun),
                    ("requireDkim", dkim.map(Value::Bool)),
                ];
                for (name, value) in entries {
                    if let Some(value) = value {
                        email.insert(name.into(), value);
                    }
                }
                Value::Object(email)
            })
    }

    fn sample() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({"orderId": "ORD-1", "items": [1, 2]})),
            Just(json!(null)),
            Just(json!("text")),
            Just(json!([]))
        ]
    }

    /// A valid hook of any type; `index` keeps its event name and source path unique.
    fn hook(index: usize) -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec!["form", "web", "email"]),
            event_name(),
            prop::option::of("\\PC{0,12}"),
            prop::option::of("\\PC{0,20}"),
            prop::option::of(prop_oneof![Just(1u32), Just(67_108_864), 1..=67_108_864u32]),
            prop::option::of(prop_oneof![Just(0u32), Just(67_108_864), 0..=67_108_864u32]),
            prop::option::of(redirect_url()),
            prop::option::of(prop::collection::vec(origin(), 0..3)),
            (prop::option::of(prop::collection::vec(reference(true), 0..3)), prop::option::of(source(index))),
            prop::option::of(shape()),
            prop::option::of(email()),
            prop::option::of(sample()),
        )
            .prop_map(
                move |(
                    hook_type,
                    name,
                    display,
                    description,
                    max_body,
                    max_file,
                    redirect,
                    origins,
                    (api_keys, source),
                    shape,
                    email,
                    sample,
                )| {
                    let mut hook = Map::new();
                    hook.insert("eventName".into(), json!(format!("{name}.h{index}")));
                    hook.insert("type".into(), json!(hook_type));
                    let mut put = |name: &str, value: Option<Value>| {
                        if let Some(value) = value {
                            hook.insert(name.into(), value);
                        }
                    };
                    put("displayEventName", display.map(Value::String));
                    put("description", description.map(Value::String));
                    put("maxBodyBytes", max_body.map(|bytes| json!(bytes)));
                    put("shape", shape);
                    put("sample", sample);
                    match hook_type {
                        "form" => {
                            put("maxFileBytes", max_file.map(|bytes| json!(bytes)));
                            put("redirectUrl", redirect);
                            put("allowedOrigins", origins.map(Value::Array));
                        }
                        "web" => {
                            put("maxFileBytes", max_file.map(|bytes| json!(bytes)));
                            match source {
                                Some(source) => put("source", Some(source)),
                                None => put("apiKeys", api_keys.map(Value::Array)),
                            }
                        }
                        _ => put("email", email),
                    }
                    Value::Object(hook)
                },
            )
    }

    fn app_document() -> impl Strategy<Value = Value> {
        (
            "[a-z0-9][a-z0-9_-]{0,20}",
            prop_oneof!["[0-9]\\.[0-9]\\.[0-9]", "[!-~][ -~]{0,6}"],
            prop::option::of("\\PC{0,12}"),
            prop::option::of(Just("https://hookgate.dev/schema/hook-definition.schema.json")),
            prop::option::weighted(0.85, (0..4usize).prop_flat_map(|count| (0..count).map(hook).collect::<Vec<_>>())),
            prop::collection::btree_map("x-[a-z]{1,6}", sample(), 0..2),
        )
            .prop_map(|(app, version, title, schema, hooks, extras)| {
                let mut document = Map::new();
                document.insert("app".into(), json!(app));
                document.insert("version".into(), json!(version));
                if let Some(title) = title {
                    document.insert("title".into(), json!(title));
                }
                if let Some(schema) = schema {
                    document.insert("$schema".into(), json!(schema));
                }
                if let Some(hooks) = hooks {
                    document.insert("hooks".into(), Value::Array(hooks));
                }
                for (name, value) in extras {
                    document.insert(name, value);
                }
                Value::Object(document)
            })
    }

    // --- mutations -------------------------------------------------------------------------

    /// A member of one of the format's objects, by its path.
    #[derive(Debug, Clone)]
    struct Slot {
        path: Vec<String>,
    }

    /// Whether the object at `path` is one the format defines (as opposed to a sample, an
    /// app-level extension, or a shape's JSON Schema, which hold anything).
    fn is_format_object(path: &[String]) -> bool {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        matches!(
            path.as_slice(),
            [] | ["hooks", _]
                | ["hooks", _, "source"]
                | ["hooks", _, "source", "hmac"]
                | ["hooks", _, "shape"]
                | ["hooks", _, "email"]
        )
    }

    /// Every member of a format object, and every element of a format array of strings.
    fn slots(document: &Value) -> Vec<Slot> {
        fn walk(value: &Value, path: &mut Vec<String>, found: &mut Vec<Slot>) {
            if !is_format_object(path) {
                return;
            }
            let Some(object) = value.as_object() else { return };
            for (key, member) in object {
                path.push(key.clone());
                // App-level members other than the format's own are extensions: anything goes.
                let known = path.len() != 1 || ["app", "version", "title", "hooks", "$schema"].contains(&key.as_str());
                if known {
                    found.push(Slot { path: path.clone() });
                    match member {
                        Value::Array(items) if key != "sample" => {
                            for (index, item) in items.iter().enumerate() {
                                path.push(index.to_string());
                                found.push(Slot { path: path.clone() });
                                walk(item, path, found);
                                path.pop();
                            }
                        }
                        Value::Object(_) => walk(member, path, found),
                        _ => {}
                    }
                }
                path.pop();
            }
        }
        let mut found = Vec::new();
        walk(document, &mut Vec::new(), &mut found);
        found
    }

    fn get_mut<'a>(document: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
        path.iter().try_fold(document, |value, segment| match value {
            Value::Object(object) => object.get_mut(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|index| items.get_mut(index)),
            _ => None,
        })
    }

    /// Strings near the edges of every string rule in the format.
    fn tricky_string() -> impl Strategy<Value = String> {
        let pool = vec![
            "",
            " ",
            "\t",
            "\u{a0}",
            "\u{feff}",
            "a",
            "A",
            "0",
            "-a",
            "_a",
            "a-",
            "sub_x",
            "Sub_x",
            "kustomer.app.x",
            "a..b",
            ".a",
            "a.",
            "a b",
            "a/b",
            "é",
            "a\u{0}b",
            "${X}",
            "${x}",
            "${1X}",
            "${_}",
            "${X-Y}",
            "$X",
            "${X} ",
            " ${X}",
            "${HOOKGATE_X}",
            "${HOOKGATE_ADMIN_TOKEN}",
            "${ECOMMSTORE_API_KEY}",
            "${NOT_SET_ANYWHERE}",
            "https://a",
            "http://a:1",
            "https://a:65535",
            "https://a:99999",
            "https://a:",
            "http://:80",
            "https://[::1]",
            "https://[::1]:8080",
            "ftp://a",
            "HTTP://a",
            "http://a_b",
            "http://a/",
            "http://a b",
            "https://a.example/x?y#z",
            "https://user@a.example/",
            "https://a.example/{x}",
            "https://a.example/<x>",
            "http://a.",
            "http://-a",
            "http://a:b:c",
            "http://[",
            "http://]",
            "chrome-extension://abc",
            "https://é.example",
            "//a",
            "https:a",
            "*",
            "**",
            "https://*",
            "https://shop.example",
            "@shop.example",
            "a@b",
            "a@-b",
            "a@b-",
            "a@b..c",
            "orders@shop.example",
            " @x.y",
            "a b@x.y",
            "a@b@c",
            "@",
            "A@B.EXAMPLE",
            "@-x.y",
            "@x_y.z",
            "form",
            "web",
            "email",
            "Form",
            "WEB",
            "sms",
            "stripe",
            "generic-hmac",
            "Stripe",
            "svix",
            "meta",
            "slack ",
            "sha1",
            "sha256",
            "sha512",
            "SHA256",
            "md5",
            "hex",
            "base64",
            "Hex",
            "{body}",
            "{timestamp}.{body}",
            "{id}.{body}",
            "{method} {url} {body}",
            "{body}{x}",
            "{body",
            "body",
            "{Body}",
            "{timestamp}",
            "x{body}y",
            "{{body}}",
            "}{body}",
            "{body}}",
            "first",
            "all",
            "none",
            "array",
            "events",
            "reject",
            "quarantine",
            "Reject",
            "$.a",
            "$$",
            "$",
        ];
        // Random text in the alphabets of URLs, origins and addresses, for the rules the schema
        // spells out character by character.
        let url = ("[Hh][Tt]{2}[Pp][Ss]?://", "[A-Za-z0-9:/?#\\[\\]@!$&'()*+,;=%._~\"{}|\\\\^`<> \t-]{0,10}")
            .prop_map(|(scheme, rest)| format!("{scheme}{rest}"));
        let origin = ("(https?|ftp|HTTP)://", "[a-zA-Z0-9:\\[\\]._/-]{0,10}")
            .prop_map(|(scheme, rest)| format!("{scheme}{rest}"));
        let address = "[ a-zA-Z0-9@._\t\u{a0}-]{0,10}";
        prop_oneof![
            8 => prop::sample::select(pool).prop_map(str::to_owned),
            2 => url,
            2 => origin,
            1 => address,
            1 => "[ -~]{0,12}",
            1 => Just("a".repeat(200)),
            1 => Just(format!("{}.b", "a".repeat(198))),
            1 => Just("a".repeat(201)),
            1 => Just("a".repeat(64)),
            1 => Just("a".repeat(65)),
        ]
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        /// Another JSON type where the slot's type is fixed.
        WrongType(prop::sample::Index, Value),
        /// The member removed.
        Remove(prop::sample::Index),
        /// An unknown member added to one of the format's objects.
        AddUnknown(prop::sample::Index, String),
        /// Any string slot given a near-valid string.
        ReplaceString(prop::sample::Index, String),
        /// Any number slot given a number at or past a limit.
        ReplaceNumber(prop::sample::Index, Value),
        /// A known hook property added to a hook, maybe of another type.
        AddHookProperty(prop::sample::Index, String, Value),
        /// A known source property added to a source, maybe for another scheme.
        AddSourceProperty(prop::sample::Index, String, Value),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let index = any::<prop::sample::Index>();
        prop_oneof![
            1 => (index.clone(), prop::sample::select(vec![json!(null), json!(true), json!(1.5), json!(-3), json!("x"), json!([]), json!({}), json!(["x"]), json!([1])]))
                .prop_map(|(at, value)| Mutation::WrongType(at, value)),
            1 => index.clone().prop_map(Mutation::Remove),
            1 => (index.clone(), "x_[a-z]{1,6}|color|\\$comment").prop_map(|(at, key)| Mutation::AddUnknown(at, key)),
            4 => (index.clone(), tricky_string()).prop_map(|(at, text)| Mutation::ReplaceString(at, text)),
            1 => (
                index.clone(),
                prop::sample::select(vec![
                    json!(-1), json!(0), json!(1), json!(5), json!(86_400), json!(86_401), json!(7_776_000), json!(7_776_001),
                    json!(67_108_864), json!(67_108_865), json!(9_007_199_254_740_993_u64), json!(u64::MAX), json!(i64::MIN), json!(2.5),
                ]),
            )
                .prop_map(|(at, value)| Mutation::ReplaceNumber(at, value)),
            1 => (
                index.clone(),
                prop::sample::select(vec![
                    ("redirectUrl", json!("https://shop.example/thanks")),
                    ("allowedOrigins", json!(["*"])),
                    ("apiKeys", json!(["${ECOMMSTORE_API_KEY}"])),
                    ("maxFileBytes", json!(1024)),
                    ("maxBodyBytes", json!(1024)),
                    ("email", json!({})),
                    ("source", json!({"path": "added", "scheme": "github", "secrets": ["${STRIPE_SECRET}"]})),
                    ("shape", json!({})),
                    ("sample", json!({"a": 1})),
                    ("displayEventName", json!("Shown")),
                ]),
            )
                .prop_map(|(at, (key, value))| Mutation::AddHookProperty(at, key.to_owned(), value)),
            1 => (
                index,
                prop::sample::select(vec![
                    ("allowLegacy", json!(true)),
                    ("hmac", json!({"header": "X-Sig", "algorithm": "sha256", "encoding": "hex"})),
                    ("verifyToken", json!("${STRIPE_SECRET}")),
                    ("splitArrays", json!(false)),
                    ("toleranceSeconds", json!(60)),
                    ("dedupWindowSeconds", json!(60)),
                    ("eventName", json!("x.{$.type}")),
                ]),
            )
                .prop_map(|(at, (key, value))| Mutation::AddSourceProperty(at, key.to_owned(), value)),
        ]
    }

    /// Slots whose strings are JSONPath or templates (their syntax is left out, see above).
    fn holds_jsonpath(path: &[String]) -> bool {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        matches!(
            path.as_slice(),
            ["hooks", _, "source", "eventName" | "deliveryId"]
                | ["hooks", _, "email", "eventName"]
                | ["hooks", _, "shape", "fields", ..]
        )
    }

    /// Slots where a reference that resolves to nothing is an error (`apiKeys`,
    /// `mailgunSigningKey`): whether it resolves depends on the environment, not the document.
    fn must_resolve(path: &[String]) -> bool {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        matches!(path.as_slice(), ["hooks", _, "apiKeys", _] | ["hooks", _, "email", "mailgunSigningKey"])
    }

    /// A well-formed reference to a name that is neither resolvable here nor one of hookgate's own.
    fn is_unresolved_reference(text: &str) -> bool {
        let Some(name) = text.strip_prefix("${").and_then(|rest| rest.strip_suffix('}')) else { return false };
        let well_formed = name.chars().next().is_some_and(|first| first.is_ascii_uppercase() || first == '_')
            && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        well_formed && !RESOLVED.contains(&name) && !name.starts_with("HOOKGATE_")
    }

    /// Applies `mutation`; `None` when it does not apply to this document.
    fn apply(document: &Value, mutation: &Mutation) -> Option<Value> {
        let mut document = document.clone();
        let all = slots(&document);
        let pick =
            |at: &prop::sample::Index, filter: &dyn Fn(&Slot, &Value) -> bool, document: &Value| -> Option<Slot> {
                let candidates: Vec<&Slot> = all
                    .iter()
                    .filter(|slot| {
                        let mut copy = document.clone();
                        get_mut(&mut copy, &slot.path).is_some_and(|value| filter(slot, value))
                    })
                    .collect();
                (!candidates.is_empty()).then(|| at.get(&candidates).to_owned().clone())
            };
        match mutation {
            Mutation::WrongType(at, replacement) => {
                let same_type = |value: &Value| match (value, replacement) {
                    (Value::Number(a), Value::Number(b)) => a.is_f64() == b.is_f64() || a.as_f64() == b.as_f64(),
                    (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
                };
                let slot = pick(
                    at,
                    &|slot, value| {
                        let last = slot.path.last().map(String::as_str);
                        // Anything is a sample; a shape's schema may be an object or a boolean.
                        !same_type(value)
                            && last != Some("sample")
                            && !(last == Some("schema") && slot.path.len() == 4 && replacement.is_boolean())
                    },
                    &document,
                )?;
                *get_mut(&mut document, &slot.path)? = replacement.clone();
            }
            Mutation::Remove(at) => {
                let slot = pick(
                    at,
                    &|slot, _| slot.path.last().is_some_and(|last| last.parse::<usize>().is_err()),
                    &document,
                )?;
                let (last, parent) = slot.path.split_last()?;
                get_mut(&mut document, parent)?.as_object_mut()?.remove(last);
            }
            Mutation::AddUnknown(at, key) => {
                let targets: Vec<Vec<String>> = std::iter::once(Vec::new())
                    .chain(all.iter().filter(|slot| is_format_object(&slot.path)).map(|slot| slot.path.clone()))
                    .filter(|path| {
                        let mut copy = document.clone();
                        get_mut(&mut copy, path).is_some_and(|value| value.is_object())
                    })
                    .collect();
                let path = at.get(&targets).clone();
                get_mut(&mut document, &path)?.as_object_mut()?.insert(key.clone(), json!("unknown"));
            }
            Mutation::ReplaceString(at, text) => {
                let slot = pick(
                    at,
                    &|slot, value| {
                        value.is_string()
                            && !holds_jsonpath(&slot.path)
                            && slot.path.last().map(String::as_str) != Some("sample")
                            && !(must_resolve(&slot.path) && is_unresolved_reference(text))
                    },
                    &document,
                )?;
                *get_mut(&mut document, &slot.path)? = json!(text);
            }
            Mutation::ReplaceNumber(at, number) => {
                let slot = pick(at, &|_, value| value.is_number(), &document)?;
                *get_mut(&mut document, &slot.path)? = number.clone();
            }
            Mutation::AddHookProperty(at, key, value) => {
                let hooks = document.get_mut("hooks")?.as_array_mut()?;
                if hooks.is_empty() {
                    return None;
                }
                let hook = at.get_mut(hooks.as_mut_slice()).as_object_mut()?;
                hook.insert(key.clone(), value.clone());
            }
            Mutation::AddSourceProperty(at, key, value) => {
                let hooks = document.get_mut("hooks")?.as_array_mut()?;
                let mut sources: Vec<&mut Map<String, Value>> =
                    hooks.iter_mut().filter_map(|hook| hook.get_mut("source")?.as_object_mut()).collect();
                if sources.is_empty() {
                    return None;
                }
                let source = at.get_mut(sources.as_mut_slice());
                source.insert(key.clone(), value.clone());
            }
        }
        Some(document)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every generated valid document passes both.
        #[test]
        fn valid_documents_pass_the_loader_and_the_schema(document in app_document()) {
            let (loader, diagnostics) = loader_accepts(&document);
            prop_assert!(loader, "the loader refuses a valid document:\n{}\n{}", serde_json::to_string_pretty(&document).unwrap(), diagnostics);
            check_agreement(&document)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// With one thing changed, the loader and the schema still agree on accept or reject.
        #[test]
        fn one_change_gets_the_same_verdict_from_the_loader_and_the_schema(document in app_document(), mutation in mutation()) {
            let Some(changed) = apply(&document, &mutation) else { return Ok(()) };
            check_agreement(&changed)?;
        }
    }
}
