//! The definition checker: documents validated into [`AppDefinition`]s.
//!
//! It walks `serde_json::Value` itself instead of deserializing, because serde stops at the
//! first error and the format requires every error at once, each with its origin and JSON
//! pointer. Each document is checked on its own, then the rules across the set (app names,
//! event names and source paths are unique). Secret references are resolved here: API keys are
//! kept only as SHA-256. Unknown app-level properties are ignored; unknown hook properties are
//! errors. Signature scheme names are `verify`'s (`verify::SCHEME_NAMES`).

use serde_json::{Map, Value};
use std::collections::HashMap;

use super::{
    AppDefinition, Concern, Diagnostic, HookDefinition, MAX_BODY_BYTES_CEILING, Origin, Severity, SourceDefinition,
    SourceDocument, Validated, ValidationOptions,
};
use crate::event::HookType;
use crate::secrets::reference_name;
use crate::verify::{NamedScheme, SCHEME_NAMES, Scheme};

const MAX_EVENT_NAME_LEN: usize = 200;

/// Escapes one JSON pointer segment (RFC 6901).
fn pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Validates a whole set of documents: each on its own, then the rules across the set
/// (app names and event names are unique).
pub fn validate(documents: &[SourceDocument], options: &ValidationOptions) -> Validated {
    let mut result = Validated::default();
    for document in documents {
        let mut checker =
            Checker { origin: document.origin.to_string(), diagnostics: &mut result.diagnostics, options };
        if let Some(app) = checker.app(&document.json, document.origin.clone()) {
            result.apps.push(app);
        }
    }
    check_uniqueness(&mut result);
    result
}

fn check_uniqueness(result: &mut Validated) {
    let mut apps: HashMap<&str, &Origin> = HashMap::new();
    let mut events: HashMap<&str, (&Origin, usize)> = HashMap::new();
    let mut sources: HashMap<&str, (&Origin, usize)> = HashMap::new();
    let mut found = Vec::new();
    for app in &result.apps {
        if let Some(first) = apps.insert(&app.app, &app.origin) {
            found.push(Diagnostic::error(
                &app.origin.to_string(),
                "/app",
                format!("app {:?} is already defined in {first}", app.app),
            ));
        }
        for (index, hook) in app.hooks.iter().enumerate() {
            if let Some(source) = &hook.source {
                if let Some((first, first_index)) = sources.get(source.path.as_str()) {
                    found.push(Diagnostic::error(
                        &app.origin.to_string(),
                        &format!("/hooks/{index}/source/path"),
                        format!(
                            "source path {:?} is already used at {first}: /hooks/{first_index}/source/path",
                            source.path
                        ),
                    ));
                } else {
                    sources.insert(&source.path, (&app.origin, index));
                }
            }
            if let Some((first, first_index)) = events.get(hook.event_name.as_str()) {
                found.push(Diagnostic::error(
                    &app.origin.to_string(),
                    &format!("/hooks/{index}/eventName"),
                    format!(
                        "eventName {:?} is already used at {first}: /hooks/{first_index}/eventName (event names are globally unique)",
                        hook.event_name
                    ),
                ));
            } else {
                events.insert(&hook.event_name, (&app.origin, index));
            }
        }
    }
    result.diagnostics.extend(found);
}

/// Walks one document, recording every problem.
struct Checker<'a> {
    origin: String,
    diagnostics: &'a mut Vec<Diagnostic>,
    options: &'a ValidationOptions,
}

const HOOK_PROPERTIES: &[&str] = &[
    "eventName",
    "displayEventName",
    "description",
    "type",
    "maxBodyBytes",
    "maxFileBytes",
    "redirectUrl",
    "allowedOrigins",
    "apiKeys",
    "source",
    "shape",
    "email",
    "sample",
    "transform",
];

impl Checker<'_> {
    fn error(&mut self, pointer: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(&self.origin, pointer, message.into()));
    }

    fn warning(&mut self, pointer: &str, message: impl Into<String>) {
        self.warning_about(Concern::Definition, pointer, message);
    }

    fn warning_about(&mut self, concern: Concern, pointer: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            origin: self.origin.clone(),
            pointer: pointer.to_owned(),
            message: message.into(),
            concern,
        });
    }

    fn app(&mut self, json: &Value, origin: Origin) -> Option<AppDefinition> {
        let Some(object) = json.as_object() else {
            self.error("", format!("expected an app definition object, found {}", kind_of(json)));
            return None;
        };
        let errors_before = self.error_count();
        let app = self.required_string(object, "", "app");
        if let Some(name) = &app
            && !is_app_name(name)
        {
            self.error("/app", format!("invalid app name {name:?}: use lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 64 characters"));
        }
        let version = self.required_string(object, "", "version");
        let title = self.optional_string(object, "", "title");
        // `$schema` is for editors and otherwise ignored, but the format gives it the type string.
        self.optional_string(object, "", "$schema");
        let mut hooks = Vec::new();
        match object.get("hooks") {
            None => {}
            Some(Value::Array(items)) => {
                for (index, item) in items.iter().enumerate() {
                    if let Some(hook) = self.hook(item, &format!("/hooks/{index}"), app.as_deref()) {
                        hooks.push(hook);
                    }
                }
            }
            Some(other) => self.error("/hooks", format!("expected an array of hooks, found {}", kind_of(other))),
        }
        let scopes = self.scopes(object);
        if self.error_count() > errors_before {
            return None;
        }
        Some(AppDefinition { app: app?, version: version?, title, hooks, scopes, origin })
    }

    /// The app's named scopes: each a name with a colon and a non-empty array of event patterns.
    fn scopes(&mut self, object: &Map<String, Value>) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut scopes = std::collections::BTreeMap::new();
        let Some(value) = object.get("scopes") else { return scopes };
        let Some(entries) = value.as_object() else {
            self.error(
                "/scopes",
                format!("expected an object of scope names and event patterns, found {}", kind_of(value)),
            );
            return scopes;
        };
        for (name, patterns) in entries {
            let pointer = format!("/scopes/{}", name.replace('~', "~0").replace('/', "~1"));
            if !super::is_scope_name(name) {
                self.error(&pointer, format!("invalid scope name {name:?}: use letters, digits, '_', '-', '.' and a ':' (view:contacts), at most 100 characters"));
                continue;
            }
            match patterns.as_array().filter(|items| !items.is_empty()) {
                None => self.error(&pointer, "expected a non-empty array of event names or patterns"),
                Some(items) => {
                    let mut checked = Vec::new();
                    for (index, item) in items.iter().enumerate() {
                        match item.as_str().filter(|pattern| crate::subscriptions::is_pattern(pattern)) {
                            Some(pattern) => checked.push(pattern.to_owned()),
                            None => self.error(
                                &format!("{pointer}/{index}"),
                                "expected an event name, \"*\", or a prefix ending in \".*\"",
                            ),
                        }
                    }
                    scopes.insert(name.clone(), checked);
                }
            }
        }
        scopes
    }

    fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error && d.origin == self.origin).count()
    }

    fn hook(&mut self, json: &Value, pointer: &str, app: Option<&str>) -> Option<HookDefinition> {
        let Some(object) = json.as_object() else {
            self.error(pointer, format!("expected a hook object, found {}", kind_of(json)));
            return None;
        };
        let errors_before = self.error_count();
        for key in object.keys() {
            if !HOOK_PROPERTIES.contains(&key.as_str()) {
                self.error(
                    &format!("{pointer}/{}", pointer_segment(key)),
                    format!("unknown hook property {key:?}; known properties are {}", HOOK_PROPERTIES.join(", ")),
                );
            }
        }
        let event_name = self.required_string(object, pointer, "eventName");
        if let Some(name) = &event_name {
            // A source's events are named by the platform (`stripe.…`), not by the routing prefix.
            let routed_app = if object.contains_key("source") { None } else { app };
            self.check_event_name(name, &format!("{pointer}/eventName"), routed_app);
        }
        let display_event_name = self.optional_string(object, pointer, "displayEventName");
        let description = self.optional_string(object, pointer, "description");
        let hook_type = match object.get("type") {
            None => {
                self.error(pointer, "missing required property \"type\" (form, web or email)");
                None
            }
            Some(Value::String(text)) => {
                // `internal` is hookgate's own events' type, never a hook's.
                let parsed = HookType::parse(text).filter(|parsed| *parsed != HookType::Internal);
                if parsed.is_none() {
                    self.error(
                        &format!("{pointer}/type"),
                        format!("unknown hook type {text:?}, expected form, web or email"),
                    );
                }
                parsed
            }
            Some(other) => {
                self.error(
                    &format!("{pointer}/type"),
                    format!("expected a string (form, web or email), found {}", kind_of(other)),
                );
                None
            }
        };
        let max_body_bytes = self.optional_size(object, pointer, "maxBodyBytes", 1);
        let max_file_bytes = self.optional_size(object, pointer, "maxFileBytes", 0);
        let redirect_url = self.optional_string(object, pointer, "redirectUrl");
        if let Some(url) = &redirect_url
            && !is_redirect_url(url)
        {
            self.error(
                &format!("{pointer}/redirectUrl"),
                format!("expected an absolute http or https URL, found {url:?}"),
            );
        }
        let allowed_origins = self.optional_string_array(object, pointer, "allowedOrigins");
        if let Some(origins) = &allowed_origins {
            for (index, origin) in origins.iter().enumerate() {
                if !is_cors_origin(origin) {
                    self.error(
                        &format!("{pointer}/allowedOrigins/{index}"),
                        format!("expected \"*\" or an origin like \"https://shop.example\", found {origin:?}"),
                    );
                }
            }
        }
        let api_keys = self.optional_string_array(object, pointer, "apiKeys");
        let static_key_hashes = self.resolve_keys(api_keys.as_deref().unwrap_or_default(), pointer);
        let source = object.get("source").and_then(|json| self.source(json, &format!("{pointer}/source")));
        let shape = object.get("shape").and_then(|json| match crate::shape::Shape::compile(json) {
            Ok(shape) => Some(shape),
            Err(problems) => {
                for (at, message) in problems {
                    self.error(&format!("{pointer}/shape{at}"), message);
                }
                None
            }
        });
        if object.contains_key("source") {
            if hook_type.is_some_and(|t| t != HookType::Web) {
                self.error(
                    &format!("{pointer}/source"),
                    "source applies to web hooks only: the signature is their authentication",
                );
            }
            if api_keys.is_some() {
                self.error(
                    &format!("{pointer}/apiKeys"),
                    "a hook with a source is verified by its signature, not by apiKeys",
                );
            }
        }

        if let Some(hook_type) = hook_type {
            let form_only = [("redirectUrl", redirect_url.is_some()), ("allowedOrigins", allowed_origins.is_some())];
            for (property, present) in form_only {
                if present && hook_type != HookType::Form {
                    self.error(
                        &format!("{pointer}/{property}"),
                        format!("{property} applies to form hooks only, not {}", hook_type.as_str()),
                    );
                }
            }
            if api_keys.is_some() && hook_type != HookType::Web {
                self.error(
                    &format!("{pointer}/apiKeys"),
                    format!("apiKeys applies to web hooks only, not {}", hook_type.as_str()),
                );
            }
            if max_file_bytes.is_some() && hook_type == HookType::Email {
                self.error(&format!("{pointer}/maxFileBytes"), "maxFileBytes applies to form and web hooks only");
            }
            if object.contains_key("email") && hook_type != HookType::Email {
                self.error(
                    &format!("{pointer}/email"),
                    format!("email applies to email hooks only, not {}", hook_type.as_str()),
                );
            }
        }
        let email = match object.get("email") {
            Some(json) => self.email(json, &format!("{pointer}/email")),
            None => Some(crate::email::EmailSettings::default()),
        };
        let transform = object.get("transform").and_then(|json| self.transform(json, &format!("{pointer}/transform")));
        if object.contains_key("transform") && hook_type == Some(HookType::Email) {
            self.error(&format!("{pointer}/transform"), "transform applies to form, web and source hooks, not email");
        }
        if self.error_count() > errors_before {
            return None;
        }
        Some(HookDefinition {
            event_name: event_name?,
            display_event_name,
            description,
            hook_type: hook_type?,
            max_body_bytes,
            max_file_bytes,
            redirect_url,
            allowed_origins,
            static_key_hashes,
            source,
            shape,
            email: email?,
            sample: object.get("sample").cloned(),
            transform,
        })
    }

    /// A hook's transformation: `{"source"}` (the definitions folder puts a named file's text
    /// there, with `file`), compiled once here to refuse what cannot run.
    fn transform(&mut self, json: &Value, pointer: &str) -> Option<crate::transform::Transformation> {
        let Some(object) = json.as_object() else {
            self.error(
                pointer,
                format!(
                    "expected the name of a JavaScript file beside the definition, or {{\"source\": ...}} for an installed app; found {}",
                    kind_of(json)
                ),
            );
            return None;
        };
        let file = object.get("file").and_then(Value::as_str);
        let named = file.map(|file| format!(" {file:?}")).unwrap_or_default();
        if let Some(error) = object.get("error").and_then(Value::as_str) {
            self.error(pointer, format!("the transformation file{named} cannot be read: {error}"));
            return None;
        }
        for key in object.keys() {
            if !["file", "source"].contains(&key.as_str()) {
                self.error(
                    &format!("{pointer}/{}", pointer_segment(key)),
                    format!("unknown property {key:?}; known properties are source and file"),
                );
            }
        }
        let Some(source) = object.get("source").and_then(Value::as_str) else {
            self.error(pointer, "missing required property \"source\" (JavaScript defining transform(event))");
            return None;
        };
        match crate::transform::Transformation::compile(source) {
            Ok(transformation) => Some(transformation),
            Err(error) => {
                self.error(pointer, format!("the transformation{named}: {error}"));
                None
            }
        }
    }

    /// An email hook's settings: key, sender allowlist, what plain text counts, one event per
    /// value or one with an array, and the event-name template.
    fn email(&mut self, json: &Value, pointer: &str) -> Option<crate::email::EmailSettings> {
        use crate::email::{EmailSettings, MailKey, SenderRule, extract::TextJson};
        const PROPERTIES: &[&str] =
            &["key", "allowedSenders", "textJson", "multiple", "eventName", "mailgunSigningKey", "requireDkim"];
        let Some(object) = json.as_object() else {
            self.error(pointer, format!("expected an object, found {}", kind_of(json)));
            return None;
        };
        // What a property left out means comes from one place, the settings' `Default`.
        let defaults = EmailSettings::default();
        let errors_before = self.error_count();
        for key in object.keys() {
            if !PROPERTIES.contains(&key.as_str()) {
                self.error(
                    &format!("{pointer}/{}", pointer_segment(key)),
                    format!("unknown email property {key:?}; known properties are {}", PROPERTIES.join(", ")),
                );
            }
        }
        let key = match self.optional_string(object, pointer, "key") {
            None => defaults.key,
            Some(reference) => match reference_name(&reference) {
                None => {
                    self.error(&format!("{pointer}/key"), "key must be a secret reference like \"${NAME}\"");
                    MailKey::Unset
                }
                Some(name) if name.starts_with("HOOKGATE_") => {
                    self.error(&format!("{pointer}/key"), own_setting(name));
                    MailKey::Unset
                }
                Some(name) => match self.options.secrets.resolve(name) {
                    Some(value) => MailKey::Required(value),
                    None => {
                        self.warning(
                            &format!("{pointer}/key"),
                            format!("secret ${{{name}}} is not set; mail to this hook is refused until it is"),
                        );
                        MailKey::Unset
                    }
                },
            },
        };
        let mut allowed_senders = Vec::new();
        for (index, text) in
            self.optional_string_array(object, pointer, "allowedSenders").unwrap_or_default().iter().enumerate()
        {
            match SenderRule::parse(text) {
                Some(rule) => allowed_senders.push(rule),
                None => self.error(
                    &format!("{pointer}/allowedSenders/{index}"),
                    format!("expected an address (orders@shop.example) or a domain (@shop.example), found {text:?}"),
                ),
            }
        }
        let text_json = match self.optional_string(object, pointer, "textJson").as_deref() {
            None => defaults.text_json,
            Some("first") => TextJson::First,
            Some("all") => TextJson::All,
            Some("none") => TextJson::None,
            Some(other) => {
                self.error(&format!("{pointer}/textJson"), format!("expected first, all or none, found {other:?}"));
                TextJson::First
            }
        };
        let one_event_each = match self.optional_string(object, pointer, "multiple").as_deref() {
            None => defaults.one_event_each,
            Some("events") => true,
            Some("array") => false,
            Some(other) => {
                self.error(&format!("{pointer}/multiple"), format!("expected events or array, found {other:?}"));
                true
            }
        };
        let event_name = self.template(object, pointer, "eventName");
        let mailgun_signing_key = self.optional_string(object, pointer, "mailgunSigningKey").and_then(|reference| {
            let at = format!("{pointer}/mailgunSigningKey");
            let Some(name) = reference_name(&reference) else {
                self.error(&at, "mailgunSigningKey must be a secret reference like \"${NAME}\"");
                return None;
            };
            if name.starts_with("HOOKGATE_") {
                self.error(&at, own_setting(name));
                return None;
            }
            let value = self.options.secrets.resolve(name);
            if value.is_none() {
                // Unset, the key would silently let unsigned posts in: refuse the definition.
                self.error(&at, format!("secret ${{{name}}} is not set in the environment or the secrets file"));
            }
            value
        });
        let require_dkim = match object.get("requireDkim") {
            None => defaults.require_dkim,
            Some(Value::Bool(flag)) => *flag,
            Some(other) => {
                self.error(
                    &format!("{pointer}/requireDkim"),
                    format!("expected true or false, found {}", kind_of(other)),
                );
                false
            }
        };
        if self.error_count() > errors_before {
            return None;
        }
        Some(EmailSettings {
            key,
            allowed_senders,
            text_json,
            one_event_each,
            event_name,
            mailgun_signing_key,
            require_dkim,
        })
    }

    fn source(&mut self, json: &Value, pointer: &str) -> Option<SourceDefinition> {
        const PROPERTIES: &[&str] = &[
            "path",
            "scheme",
            "secrets",
            "toleranceSeconds",
            "eventName",
            "deliveryId",
            "splitArrays",
            "allowLegacy",
            "hmac",
            "verifyToken",
            "dedupWindowSeconds",
        ];
        let Some(object) = json.as_object() else {
            self.error(pointer, format!("expected a source object, found {}", kind_of(json)));
            return None;
        };
        let errors_before = self.error_count();
        for key in object.keys().filter(|key| !PROPERTIES.contains(&key.as_str())) {
            self.error(
                &format!("{pointer}/{}", pointer_segment(key)),
                format!("unknown source property {key:?}; known properties are {}", PROPERTIES.join(", ")),
            );
        }
        let path = self.required_string(object, pointer, "path");
        if let Some(path) = &path
            && !is_app_name(path)
        {
            self.error(
                &format!("{pointer}/path"),
                format!("invalid source path {path:?}: use lower-case letters, digits, '-' and '_'"),
            );
        }
        if let Some(path) = &path
            && path.starts_with(crate::subscriptions::ID_PREFIX)
        {
            self.error(
                &format!("{pointer}/path"),
                format!("invalid source path {path:?}: paths starting with \"sub_\" are subscription ids"),
            );
        }
        let allow_legacy = match object.get("allowLegacy") {
            None => false,
            Some(Value::Bool(flag)) => *flag,
            Some(other) => {
                self.error(
                    &format!("{pointer}/allowLegacy"),
                    format!("expected true or false, found {}", kind_of(other)),
                );
                false
            }
        };
        let scheme_name = self.required_string(object, pointer, "scheme");
        let named = scheme_name.as_deref().map(|name| (name, crate::verify::scheme_named(name)));
        let scheme = named.and_then(|(name, named)| self.scheme(name, named, allow_legacy, object, pointer));
        let named = named.and_then(|(_, named)| named);
        if object.contains_key("allowLegacy") && !matches!(named, Some(NamedScheme::Legacy(_))) {
            self.error(
                &format!("{pointer}/allowLegacy"),
                "allowLegacy applies to the github (SHA-1) and hubspot (v1, v2) schemes only",
            );
        }
        if object.contains_key("hmac") && !matches!(named, Some(NamedScheme::Described)) {
            self.error(&format!("{pointer}/hmac"), "hmac applies to the generic-hmac scheme only");
        }
        let (secrets, secret_names) = self.source_secrets(object, pointer);
        let tolerance = match object.get("toleranceSeconds") {
            None => None,
            Some(value) => match value.as_u64().filter(|seconds| (1..=86_400).contains(seconds)) {
                Some(seconds) => Some(std::time::Duration::from_secs(seconds)),
                None => {
                    self.error(
                        &format!("{pointer}/toleranceSeconds"),
                        format!("expected whole seconds from 1 to 86400, found {value}"),
                    );
                    None
                }
            },
        };
        let (verify_token, verify_token_name) = self.verify_token(object, pointer).unzip();
        let verify_token = verify_token.flatten();
        let dedup_window = match object.get("dedupWindowSeconds") {
            None => crate::event::DEFAULT_DEDUP_WINDOW,
            Some(value) => match value.as_u64().filter(|seconds| (1..=90 * 86_400).contains(seconds)) {
                Some(seconds) => std::time::Duration::from_secs(seconds),
                None => {
                    self.error(
                        &format!("{pointer}/dedupWindowSeconds"),
                        format!("expected whole seconds from 1 to 7776000 (90 days), found {value}"),
                    );
                    crate::event::DEFAULT_DEDUP_WINDOW
                }
            },
        };
        let event_name = self.template(object, pointer, "eventName");
        let delivery_id = self.template(object, pointer, "deliveryId");
        let split_arrays = match object.get("splitArrays") {
            None => false,
            Some(Value::Bool(flag)) => *flag,
            Some(other) => {
                self.error(
                    &format!("{pointer}/splitArrays"),
                    format!("expected true or false, found {}", kind_of(other)),
                );
                false
            }
        };
        if self.error_count() > errors_before {
            return None;
        }
        let scheme = scheme?;
        let tolerance = tolerance.unwrap_or_else(|| scheme.default_tolerance());
        Some(SourceDefinition {
            path: path?,
            scheme_name: scheme_name?,
            secret_names,
            verify_token_name,
            verify: crate::verify::VerifyConfig { scheme, secrets, tolerance },
            event_name,
            delivery_id,
            split_arrays,
            verify_token,
            dedup_window,
        })
    }

    /// Meta's subscription handshake token, a secret reference (unset: a warning, and the GET
    /// handshake is refused): its value when set, and its name.
    fn verify_token(&mut self, object: &Map<String, Value>, pointer: &str) -> Option<(Option<String>, String)> {
        let reference = self.optional_string(object, pointer, "verifyToken")?;
        let at = format!("{pointer}/verifyToken");
        match reference_name(&reference) {
            None => {
                self.error(&at, "verifyToken must be a secret reference like \"${NAME}\"");
                None
            }
            Some(name) if name.starts_with("HOOKGATE_") => {
                self.error(&at, own_setting(name));
                None
            }
            Some(name) => {
                let value = self.options.secrets.resolve(name);
                if value.is_none() {
                    self.warning_about(
                        Concern::UnsetSourceSecret,
                        &at,
                        format!("secret ${{{name}}} is not set; the GET handshake is refused until it is"),
                    );
                }
                Some((value, name.to_owned()))
            }
        }
    }

    fn scheme(
        &mut self,
        name: &str,
        named: Option<&NamedScheme>,
        allow_legacy: bool,
        object: &Map<String, Value>,
        pointer: &str,
    ) -> Option<Scheme> {
        match named {
            Some(NamedScheme::Fixed(scheme)) => Some(scheme.clone()),
            Some(NamedScheme::Legacy(with_legacy)) => Some(with_legacy(allow_legacy)),
            Some(NamedScheme::Described) => {
                Some(Scheme::GenericHmac(Box::new(self.generic_hmac(object.get("hmac"), &format!("{pointer}/hmac"))?)))
            }
            None => {
                let known: Vec<&str> = SCHEME_NAMES.iter().map(|(name, _)| *name).collect();
                self.error(
                    &format!("{pointer}/scheme"),
                    format!("unknown scheme {name:?}; known schemes are {}", known.join(", ")),
                );
                None
            }
        }
    }

    fn generic_hmac(&mut self, json: Option<&Value>, pointer: &str) -> Option<crate::verify::GenericHmac> {
        use crate::verify::{GenericHmac, HmacAlgorithm, SignatureEncoding, SignedPart};
        let Some(object) = json.and_then(Value::as_object) else {
            self.error(pointer, "the generic-hmac scheme needs an hmac object: header, algorithm, encoding, signed");
            return None;
        };
        const PROPERTIES: &[&str] =
            &["header", "algorithm", "encoding", "prefix", "signed", "timestampHeader", "idHeader"];
        for key in object.keys().filter(|key| !PROPERTIES.contains(&key.as_str())) {
            self.error(
                &format!("{pointer}/{}", pointer_segment(key)),
                format!("unknown hmac property {key:?}; known properties are {}", PROPERTIES.join(", ")),
            );
        }
        let header = self.required_string(object, pointer, "header").map(|h| h.to_ascii_lowercase());
        let algorithm = match self.required_string(object, pointer, "algorithm").as_deref() {
            Some("sha1") => Some(HmacAlgorithm::Sha1),
            Some("sha256") => Some(HmacAlgorithm::Sha256),
            Some("sha512") => Some(HmacAlgorithm::Sha512),
            Some(other) => {
                self.error(
                    &format!("{pointer}/algorithm"),
                    format!("unknown algorithm {other:?}, expected sha1, sha256 or sha512"),
                );
                None
            }
            None => None,
        };
        let encoding = match self.required_string(object, pointer, "encoding").as_deref() {
            Some("hex") => Some(SignatureEncoding::Hex),
            Some("base64") => Some(SignatureEncoding::Base64),
            Some(other) => {
                self.error(
                    &format!("{pointer}/encoding"),
                    format!("unknown encoding {other:?}, expected hex or base64"),
                );
                None
            }
            None => None,
        };
        let template = self.optional_string(object, pointer, "signed").unwrap_or_else(|| "{body}".to_owned());
        let signed = match SignedPart::parse_template(&template) {
            Ok(parts) => Some(parts),
            Err(reason) => {
                self.error(&format!("{pointer}/signed"), reason);
                None
            }
        };
        let timestamp_header = self.optional_string(object, pointer, "timestampHeader").map(|h| h.to_ascii_lowercase());
        let id_header = self.optional_string(object, pointer, "idHeader").map(|h| h.to_ascii_lowercase());
        if let Some(parts) = &signed {
            let signs = |part: SignedPart| parts.contains(&part);
            if timestamp_header.is_some() != signs(SignedPart::Timestamp) {
                self.error(
                    &format!("{pointer}/signed"),
                    "timestampHeader and {timestamp} go together: a checked timestamp must be signed, and a signed one must come from a header",
                );
            }
            if id_header.is_some() != signs(SignedPart::Id) {
                self.error(&format!("{pointer}/signed"), "idHeader and {id} go together");
            }
        }
        Some(GenericHmac {
            header: header?,
            algorithm: algorithm?,
            encoding: encoding?,
            prefix: self.optional_string(object, pointer, "prefix").unwrap_or_default(),
            signed: signed?,
            timestamp_header,
            id_header,
        })
    }

    /// Secret references of a source: unresolved ones are a warning (the source then answers
    /// `no_secret_configured`), so shipped definitions never keep the gateway from starting.
    /// Returns the values that are set and the names of all of them.
    fn source_secrets(&mut self, object: &Map<String, Value>, pointer: &str) -> (Vec<String>, Vec<String>) {
        if !object.contains_key("secrets") {
            self.error(pointer, "missing required property \"secrets\"");
        }
        let references = self.optional_string_array(object, pointer, "secrets").unwrap_or_default();
        let mut secrets = Vec::new();
        let mut names = Vec::new();
        for (index, reference) in references.iter().enumerate() {
            let at = format!("{pointer}/secrets/{index}");
            match reference_name(reference) {
                None => {
                    self.error(&at, "secrets entries must be secret references like \"${NAME}\", never literal secrets")
                }
                Some(name) if name.starts_with("HOOKGATE_") => self.error(&at, own_setting(name)),
                Some(name) => {
                    names.push(name.to_owned());
                    match self.options.secrets.resolve(name) {
                        Some(value) => secrets.push(value),
                        None => self.warning_about(
                            Concern::UnsetSourceSecret,
                            &at,
                            format!(
                                "secret ${{{name}}} is not set; this source answers 401 no_secret_configured until it is"
                            ),
                        ),
                    }
                }
            }
        }
        (secrets, names)
    }

    fn template(&mut self, object: &Map<String, Value>, pointer: &str, key: &str) -> Option<crate::template::Template> {
        let text = self.optional_string(object, pointer, key)?;
        match crate::template::Template::parse(&text) {
            Ok(template) => Some(template),
            Err(reason) => {
                self.error(&format!("{pointer}/{key}"), reason);
                None
            }
        }
    }

    fn check_event_name(&mut self, name: &str, pointer: &str, app: Option<&str>) {
        let segments_valid = !name.is_empty()
            && name.split('.').all(|segment| {
                !segment.is_empty() && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !segments_valid {
            self.error(
                pointer,
                format!("invalid eventName {name:?}: use dot-separated segments of letters, digits, '_' and '-'"),
            );
        } else if name.len() > MAX_EVENT_NAME_LEN {
            self.error(
                pointer,
                format!("eventName is {} characters long; at most {MAX_EVENT_NAME_LEN} are allowed", name.len()),
            );
        } else if let Some(app) = app {
            let expected = format!("{}.{app}.", self.options.event_prefix);
            if !name.starts_with(&expected) {
                self.warning(
                    pointer,
                    format!(
                        "eventName {name:?} does not start with {expected:?}, so it will not be routed to workflows"
                    ),
                );
            }
        }
    }

    fn resolve_keys(&mut self, keys: &[String], pointer: &str) -> Vec<String> {
        let mut hashes = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            let at = format!("{pointer}/apiKeys/{index}");
            match reference_name(key) {
                None => {
                    self.error(&at, "apiKeys entries must be secret references like \"${NAME}\", never literal keys")
                }
                Some(name) if name.starts_with("HOOKGATE_") => self.error(&at, own_setting(name)),
                Some(name) => match self.options.secrets.resolve(name) {
                    Some(value) => hashes.push(crate::secrets::sha256_hex(&value)),
                    None => {
                        self.error(&at, format!("secret ${{{name}}} is not set in the environment or the secrets file"))
                    }
                },
            }
        }
        hashes
    }

    fn required_string(&mut self, object: &Map<String, Value>, pointer: &str, key: &str) -> Option<String> {
        match object.get(key) {
            None => {
                self.error(pointer, format!("missing required property {key:?}"));
                None
            }
            Some(Value::String(text)) if text.trim().is_empty() => {
                self.error(&format!("{pointer}/{key}"), format!("{key} must not be empty"));
                None
            }
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                self.error(&format!("{pointer}/{key}"), format!("expected a string, found {}", kind_of(other)));
                None
            }
        }
    }

    fn optional_string(&mut self, object: &Map<String, Value>, pointer: &str, key: &str) -> Option<String> {
        match object.get(key)? {
            Value::String(text) => Some(text.clone()),
            other => {
                self.error(&format!("{pointer}/{key}"), format!("expected a string, found {}", kind_of(other)));
                None
            }
        }
    }

    fn optional_string_array(&mut self, object: &Map<String, Value>, pointer: &str, key: &str) -> Option<Vec<String>> {
        match object.get(key)? {
            Value::Array(items) => {
                let mut strings = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    match item {
                        Value::String(text) => strings.push(text.clone()),
                        other => self.error(
                            &format!("{pointer}/{key}/{index}"),
                            format!("expected a string, found {}", kind_of(other)),
                        ),
                    }
                }
                Some(strings)
            }
            other => {
                self.error(
                    &format!("{pointer}/{key}"),
                    format!("expected an array of strings, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn optional_size(&mut self, object: &Map<String, Value>, pointer: &str, key: &str, minimum: u64) -> Option<u64> {
        let value = object.get(key)?;
        match value.as_u64() {
            Some(size) if (minimum..=MAX_BODY_BYTES_CEILING).contains(&size) => Some(size),
            _ => {
                self.error(
                    &format!("{pointer}/{key}"),
                    format!(
                        "expected a whole number of bytes from {minimum} to {MAX_BODY_BYTES_CEILING}, found {value}"
                    ),
                );
                None
            }
        }
    }
}

/// Why a reference to one of hookgate's own settings is refused.
fn own_setting(name: &str) -> String {
    format!("${{{name}}} names one of hookgate's own settings (HOOKGATE_*), never a secret reference")
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_app_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// An absolute http(s) URL with a host that can be sent as a `Location` header.
fn is_redirect_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else { return false };
    // The host is a name (letters, digits, `.`, `_`, `~`, `-`) or a bracketed IPv6 address; the
    // http crate alone also takes the URI grammar's other characters (`http://a[]`).
    let host_valid = |host: &str| match host.strip_prefix('[').and_then(|inner| inner.strip_suffix(']')) {
        Some(address) => {
            !address.is_empty() && address.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
        }
        None => {
            !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'))
        }
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(host_valid)
        && http::HeaderValue::from_str(url).is_ok()
}

fn is_cors_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    // scheme://host[:port]: the host a name or a bracketed IPv6 address, the port 1 to 5 digits.
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    let (host, port) = match rest.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((address, port)) if address.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.')) => {
                (address, port)
            }
            _ => return false,
        },
        None => rest.split_at(rest.find(':').unwrap_or(rest.len())),
    };
    let host_valid =
        !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    let port_valid = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| (1..=5).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()));
    matches!(scheme, "http" | "https") && host_valid && port_valid
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::secrets::SecretSource;
    use serde_json::json;

    pub(crate) const KUSTOMER_EXAMPLE: &str = r#"{
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

    fn options() -> ValidationOptions {
        ValidationOptions {
            event_prefix: "kustomer.app".into(),
            secrets: SecretSource::from_values([("PARTNER_KEY".to_string(), "s3cret-partner-key".to_string())]),
        }
    }

    fn document(origin: &str, json: Value) -> SourceDocument {
        SourceDocument { origin: Origin::File(origin.into()), json }
    }

    /// Validates the documents and checks the rendered diagnostics, in order.
    #[track_caller]
    fn check(documents: &[SourceDocument], expected: &[&str]) -> Validated {
        let validated = validate(documents, &options());
        let rendered: Vec<String> = validated.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(rendered, expected);
        validated
    }

    #[test]
    fn the_kustomer_example_loads_unchanged() {
        let json: Value = serde_json::from_str(KUSTOMER_EXAMPLE).unwrap();
        let validated = check(&[document("ecommstore.json", json)], &[]);
        let app = &validated.apps[0];
        assert_eq!(
            (app.app.as_str(), app.version.as_str(), app.title.as_deref()),
            ("ecommstore", "0.0.1", Some("E-comm Store"))
        );
        let hook = &app.hooks[0];
        assert_eq!(hook.event_name, "kustomer.app.ecommstore.order.update");
        assert_eq!(hook.display_event_name.as_deref(), Some("Order Update Event"));
        assert_eq!(hook.hook_type, HookType::Form);
    }

    #[test]
    fn the_shipped_ecommstore_file_is_the_kustomer_example() {
        let shipped: Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/hook-definitions/ecommstore.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(shipped, serde_json::from_str::<Value>(KUSTOMER_EXAMPLE).unwrap());
    }

    #[test]
    fn named_scopes_are_names_with_a_colon_for_event_patterns() {
        let json = json!({"app": "shop", "version": "1", "hooks": [], "scopes": {
            "view:orders": ["kustomer.app.shop.order.*", "kustomer.app.shop.refund"],
            "orders": ["kustomer.app.shop.order.*"],
            "view:nothing": [],
            "view:bad": ["ok.name", "bad*"]
        }});
        check(
            &[document("shop.json", json)],
            &[
                "shop.json: /scopes/orders: invalid scope name \"orders\": use letters, digits, '_', '-', '.' and a ':' (view:contacts), at most 100 characters",
                "shop.json: /scopes/view:nothing: expected a non-empty array of event names or patterns",
                "shop.json: /scopes/view:bad/1: expected an event name, \"*\", or a prefix ending in \".*\"",
            ],
        );
        let valid = json!({"app": "shop", "version": "1", "hooks": [], "scopes": {"view:orders": ["kustomer.app.shop.order.*"]}});
        let validated = check(&[document("shop.json", valid)], &[]);
        assert_eq!(validated.apps[0].scopes["view:orders"], ["kustomer.app.shop.order.*"]);
    }

    #[test]
    fn unknown_app_properties_are_ignored() {
        let json = json!({"app": "full", "version": "1", "iconUrl": "x", "settings": {"a": 1}, "hooks": []});
        check(&[document("full.json", json)], &[]);
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_pointer() {
        let json = json!({
            "app": "ecommstore",
            "version": "1",
            "hooks": [
                {"eventName": "kustomer.app.ecommstore.a", "type": "form", "colour": "red"},
                {"eventName": "kustomer.app.ecommstore.b", "type": "sms"},
                {"displayEventName": "no name", "type": "web"},
                {"eventName": "bad name!", "type": 3},
                "not an object"
            ]
        });
        check(
            &[document("ecommstore.json", json)],
            &[
                "ecommstore.json: /hooks/0/colour: unknown hook property \"colour\"; known properties are eventName, displayEventName, description, type, maxBodyBytes, maxFileBytes, redirectUrl, allowedOrigins, apiKeys, source, shape, email, sample, transform",
                "ecommstore.json: /hooks/1/type: unknown hook type \"sms\", expected form, web or email",
                "ecommstore.json: /hooks/2: missing required property \"eventName\"",
                "ecommstore.json: /hooks/3/eventName: invalid eventName \"bad name!\": use dot-separated segments of letters, digits, '_' and '-'",
                "ecommstore.json: /hooks/3/type: expected a string (form, web or email), found a number",
                "ecommstore.json: /hooks/4: expected a hook object, found a string",
            ],
        );
    }

    #[test]
    fn missing_app_and_version_are_errors() {
        check(
            &[document("x.json", json!({"hooks": []}))],
            &["x.json: missing required property \"app\"", "x.json: missing required property \"version\""],
        );
        check(&[document("y.json", json!([1]))], &["y.json: expected an app definition object, found an array"]);
    }

    #[test]
    fn event_names_are_globally_unique_across_files() {
        let a = json!({"app": "a", "version": "1", "hooks": [{"eventName": "kustomer.app.a.x", "type": "form"}]});
        let b = json!({"app": "b", "version": "1", "hooks": [
            {"eventName": "kustomer.app.b.y", "type": "form"},
            {"eventName": "kustomer.app.a.x", "type": "web"}
        ]});
        check(
            &[document("a.json", a), document("b.json", b)],
            &[
                "b.json: /hooks/1/eventName: warning: eventName \"kustomer.app.a.x\" does not start with \"kustomer.app.b.\", so it will not be routed to workflows",
                "b.json: /hooks/1/eventName: eventName \"kustomer.app.a.x\" is already used at a.json: /hooks/0/eventName (event names are globally unique)",
            ],
        );
    }

    #[test]
    fn the_same_app_in_two_files_is_an_error() {
        let a = json!({"app": "a", "version": "1"});
        check(
            &[document("one.json", a.clone()), document("two.json", a)],
            &["two.json: /app: app \"a\" is already defined in one.json"],
        );
    }

    #[test]
    fn names_outside_the_routing_prefix_are_warnings() {
        let json =
            json!({"app": "shop", "version": "1", "hooks": [{"eventName": "shop.order.created", "type": "form"}]});
        let validated = check(
            &[document("shop.json", json)],
            &[
                "shop.json: /hooks/0/eventName: warning: eventName \"shop.order.created\" does not start with \"kustomer.app.shop.\", so it will not be routed to workflows",
            ],
        );
        assert!(validated.is_valid());
        assert_eq!(validated.apps.len(), 1);
    }

    #[test]
    fn extensions_apply_to_their_hook_types_only() {
        let json = json!({"app": "a", "version": "1", "hooks": [
            {"eventName": "kustomer.app.a.web", "type": "web", "redirectUrl": "https://a.example/thanks"},
            {"eventName": "kustomer.app.a.form", "type": "form", "apiKeys": ["${PARTNER_KEY}"], "allowedOrigins": ["https://a.example", "ftp://x", "https://a.example/path"]},
            {"eventName": "kustomer.app.a.size", "type": "form", "maxBodyBytes": 0, "redirectUrl": "/relative"},
            {"eventName": "kustomer.app.a.crlf", "type": "form", "redirectUrl": "https://a.example/thanks\r\nX-Evil: 1"},
            {"eventName": "kustomer.app.a.bare", "type": "form", "redirectUrl": "https://"}
        ]});
        check(
            &[document("a.json", json)],
            &[
                "a.json: /hooks/0/redirectUrl: redirectUrl applies to form hooks only, not web",
                "a.json: /hooks/1/allowedOrigins/1: expected \"*\" or an origin like \"https://shop.example\", found \"ftp://x\"",
                "a.json: /hooks/1/allowedOrigins/2: expected \"*\" or an origin like \"https://shop.example\", found \"https://a.example/path\"",
                "a.json: /hooks/1/apiKeys: apiKeys applies to web hooks only, not form",
                "a.json: /hooks/2/maxBodyBytes: expected a whole number of bytes from 1 to 67108864, found 0",
                "a.json: /hooks/2/redirectUrl: expected an absolute http or https URL, found \"/relative\"",
                "a.json: /hooks/3/redirectUrl: expected an absolute http or https URL, found \"https://a.example/thanks\\r\\nX-Evil: 1\"",
                "a.json: /hooks/4/redirectUrl: expected an absolute http or https URL, found \"https://\"",
            ],
        );
    }

    #[test]
    fn api_keys_must_be_resolvable_secret_references() {
        let json = json!({"app": "a", "version": "1", "hooks": [
            {"eventName": "kustomer.app.a.web", "type": "web", "apiKeys": ["${PARTNER_KEY}", "literal-key", "${MISSING_KEY}"]}
        ]});
        let validated = check(
            &[document("a.json", json)],
            &[
                "a.json: /hooks/0/apiKeys/1: apiKeys entries must be secret references like \"${NAME}\", never literal keys",
                "a.json: /hooks/0/apiKeys/2: secret ${MISSING_KEY} is not set in the environment or the secrets file",
            ],
        );
        let rendered = format!("{:?}", validated.diagnostics);
        assert!(!rendered.contains("s3cret-partner-key"));
    }

    #[test]
    fn references_to_hookgates_own_settings_are_refused() {
        let json = json!({"app": "a", "version": "1", "hooks": [
            {"eventName": "kustomer.app.a.web", "type": "web", "apiKeys": ["${HOOKGATE_ADMIN_TOKEN}"]}
        ]});
        check(
            &[document("a.json", json)],
            &[
                "a.json: /hooks/0/apiKeys/0: ${HOOKGATE_ADMIN_TOKEN} names one of hookgate's own settings (HOOKGATE_*), never a secret reference",
            ],
        );
    }

    #[test]
    fn email_settings_are_checked_whole_and_located_by_pointer() {
        let json = json!({"app": "m", "version": "1", "hooks": [
            {"eventName": "kustomer.app.m.form", "type": "form", "email": {}},
            {"eventName": "kustomer.app.m.mail", "type": "email", "email": {
                "key": "literal-key", "allowedSenders": ["ops@partner.example", "partner"], "textJson": "some",
                "multiple": "batch", "eventName": "kustomer.app.m.{type}", "colour": "red",
                "mailgunSigningKey": "${MAILGUN_UNSET_FOR_THIS_TEST}"}},
            {"eventName": "kustomer.app.m.keyed", "type": "email", "email": {"key": "${MAIL_KEY_UNSET_FOR_THIS_TEST}"}}
        ]});
        check(
            &[document("m.json", json)],
            &[
                "m.json: /hooks/0/email: email applies to email hooks only, not form",
                "m.json: /hooks/1/email/colour: unknown email property \"colour\"; known properties are key, allowedSenders, textJson, multiple, eventName, mailgunSigningKey, requireDkim",
                "m.json: /hooks/1/email/key: key must be a secret reference like \"${NAME}\"",
                "m.json: /hooks/1/email/allowedSenders/1: expected an address (orders@shop.example) or a domain (@shop.example), found \"partner\"",
                "m.json: /hooks/1/email/textJson: expected first, all or none, found \"some\"",
                "m.json: /hooks/1/email/multiple: expected events or array, found \"batch\"",
                "m.json: /hooks/1/email/eventName: unknown placeholder {type}: use a JSONPath such as {$.type} or {header:Name}",
                "m.json: /hooks/1/email/mailgunSigningKey: secret ${MAILGUN_UNSET_FOR_THIS_TEST} is not set in the environment or the secrets file",
                "m.json: /hooks/2/email/key: warning: secret ${MAIL_KEY_UNSET_FOR_THIS_TEST} is not set; mail to this hook is refused until it is",
            ],
        );
    }

    #[test]
    fn a_source_is_checked_whole_and_located_by_pointer() {
        let json = json!({"app": "p", "version": "1", "hooks": [
            {"eventName": "stripe.event", "type": "form", "source": {"path": "stripe", "scheme": "stripe", "secrets": ["${PARTNER_KEY}"]}},
            {"eventName": "x.event", "type": "web", "source": {
                "path": "Bad Path", "scheme": "carrier-pigeon", "secrets": ["literal"], "eventName": "x.{type}",
                "toleranceSeconds": 0, "colour": "red"}},
            {"eventName": "g.event", "type": "web", "source": {"path": "g", "scheme": "generic-hmac", "secrets": [],
                "hmac": {"header": "X-Sig", "algorithm": "md5", "encoding": "hex", "signed": "{timestamp}"}}}
        ]});
        check(
            &[document("p.json", json)],
            &[
                "p.json: /hooks/0/source: source applies to web hooks only: the signature is their authentication",
                "p.json: /hooks/1/source/colour: unknown source property \"colour\"; known properties are path, scheme, secrets, toleranceSeconds, eventName, deliveryId, splitArrays, allowLegacy, hmac, verifyToken, dedupWindowSeconds",
                "p.json: /hooks/1/source/path: invalid source path \"Bad Path\": use lower-case letters, digits, '-' and '_'",
                "p.json: /hooks/1/source/scheme: unknown scheme \"carrier-pigeon\"; known schemes are standard-webhooks, svix, stripe, github, hubspot, shopify, slack, twilio, square, paddle, discord, zoom, meta, sendgrid, mailgun, intercom, zendesk, linear, typeform, calendly, gitlab, basic-auth, url-token, generic-hmac",
                "p.json: /hooks/1/source/secrets/0: secrets entries must be secret references like \"${NAME}\", never literal secrets",
                "p.json: /hooks/1/source/toleranceSeconds: expected whole seconds from 1 to 86400, found 0",
                "p.json: /hooks/1/source/eventName: unknown placeholder {type}: use a JSONPath such as {$.type} or {header:Name}",
                "p.json: /hooks/2/source/hmac/algorithm: unknown algorithm \"md5\", expected sha1, sha256 or sha512",
                "p.json: /hooks/2/source/hmac/signed: the template \"{timestamp}\" does not sign {body}",
            ],
        );
    }

    #[test]
    fn an_unset_source_secret_is_a_warning_and_paths_are_unique() {
        let a = json!({"app": "a", "version": "1", "hooks": [
            {"eventName": "a.event", "type": "web", "source": {"path": "shared", "scheme": "shopify", "secrets": ["${UNSET_SOURCE_SECRET}"]}}
        ]});
        let b = json!({"app": "b", "version": "1", "hooks": [
            {"eventName": "b.event", "type": "web", "source": {"path": "shared", "scheme": "shopify", "secrets": ["${PARTNER_KEY}"]}}
        ]});
        let validated = check(
            &[document("a.json", a), document("b.json", b)],
            &[
                "a.json: /hooks/0/source/secrets/0: warning: secret ${UNSET_SOURCE_SECRET} is not set; this source answers 401 no_secret_configured until it is",
                "b.json: /hooks/0/source/path: source path \"shared\" is already used at a.json: /hooks/0/source/path",
            ],
        );
        assert!(!validated.is_valid());
    }

    #[test]
    fn resolved_static_keys_are_kept_only_as_hashes() {
        let json = json!({"app": "a", "version": "1", "hooks": [
            {"eventName": "kustomer.app.a.web", "type": "web", "apiKeys": ["${PARTNER_KEY}"]}
        ]});
        let validated = check(&[document("a.json", json)], &[]);
        let hook = &validated.apps[0].hooks[0];
        assert_eq!(hook.static_key_hashes, vec![crate::secrets::sha256_hex("s3cret-partner-key")]);
        assert!(!format!("{hook:?}").contains("s3cret"));
    }
}
