//! Templates that name events and find delivery ids in a platform's request:
//! `stripe.{$.type}`, `github.{header:X-GitHub-Event}.{$.action}`, `{header:X-GitHub-Delivery}`.
//!
//! A placeholder is a JSONPath (RFC 9535, compiled once when the definition loads) into the
//! payload, or `header:Name`, or several of these separated by `|`, the first that finds a
//! value winning (`{header:webhook-id|header:svix-id}`). Pure: no I/O.

use crate::jsonpath::JsonPath;
use http::HeaderMap;
use serde_json::Value;

#[derive(Clone)]
enum Part {
    Literal(String),
    /// Alternatives, tried in order.
    Placeholder(Vec<Lookup>),
}

#[derive(Clone)]
enum Lookup {
    Path(JsonPath),
    Header(http::HeaderName),
}

impl Lookup {
    fn parse(text: &str) -> Result<Lookup, String> {
        if let Some(name) = text.strip_prefix("header:") {
            http::HeaderName::from_bytes(name.trim().as_bytes())
                .map(Lookup::Header)
                .map_err(|_| format!("{name:?} is not a header name"))
        } else if text.starts_with('$') {
            JsonPath::parse(text).map(Lookup::Path).map_err(|error| format!("invalid JSONPath {text:?}: {error}"))
        } else {
            Err(format!("unknown placeholder {{{text}}}: use a JSONPath such as {{$.type}} or {{header:Name}}"))
        }
    }

    fn find(&self, data: &Value, headers: &HeaderMap) -> Option<String> {
        match self {
            Lookup::Path(path) => path.first(data).and_then(scalar_text),
            Lookup::Header(name) => headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned),
        }
    }
}

/// Splits a placeholder at `|`, leaving JSONPath's `||` (logical or in filters) alone.
fn alternatives(placeholder: &str) -> Vec<&str> {
    let bytes = placeholder.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'|' {
            if bytes.get(index + 1) == Some(&b'|') {
                index += 2;
                continue;
            }
            pieces.push(placeholder[start..index].trim());
            start = index + 1;
        }
        index += 1;
    }
    pieces.push(placeholder[start..].trim());
    pieces
}

/// A parsed template.
#[derive(Clone)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Template({:?})", self.text)
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Template {
    /// Parses `text`; the error says which placeholder is wrong and why.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or_else(|| format!("unclosed {{ in {text:?}"))? + open;
            let placeholder = rest[open + 1..close].trim();
            let lookups = alternatives(placeholder).into_iter().map(Lookup::parse).collect::<Result<Vec<_>, _>>()?;
            parts.push(Part::Placeholder(lookups));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { text: text.to_owned(), parts })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Renders each placeholder; `None` for a placeholder that finds nothing (or an object or array).
    fn pieces<'a>(&'a self, data: &'a Value, headers: &'a HeaderMap) -> impl Iterator<Item = Option<String>> + 'a {
        self.parts.iter().map(move |part| match part {
            Part::Literal(text) => Some(text.clone()),
            Part::Placeholder(lookups) => lookups.iter().find_map(|lookup| lookup.find(data, headers)),
        })
    }

    /// An event name: placeholders that find nothing are left out, characters other than
    /// letters, digits, `_` and `-` separate segments, and empty segments are dropped
    /// (`shopify.{header:X-Shopify-Topic}` with `orders/create` gives `shopify.orders.create`).
    pub fn render_name(&self, data: &Value, headers: &HeaderMap) -> Option<String> {
        let text: String = self.pieces(data, headers).flatten().collect();
        let name = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .filter(|segment| !segment.is_empty())
            .collect::<Vec<_>>()
            .join(".");
        (!name.is_empty()).then_some(name)
    }

    /// Like [`Template::render_name`], but `None` when the template has placeholders and none
    /// of them finds a value: `kustomer.app.mail.{$['@type']}` names nothing for a value without
    /// a type, instead of `kustomer.app.mail`.
    pub fn render_name_if_found(&self, data: &Value, headers: &HeaderMap) -> Option<String> {
        let mut placeholders = self.parts.iter().filter(|part| matches!(part, Part::Placeholder(_))).peekable();
        if placeholders.peek().is_some()
            && placeholders.all(|part| match part {
                Part::Placeholder(lookups) => lookups.iter().all(|lookup| lookup.find(data, headers).is_none()),
                Part::Literal(_) => true,
            })
        {
            return None;
        }
        self.render_name(data, headers)
    }

    /// A delivery id: `None` unless every placeholder finds a value.
    pub fn render_id(&self, data: &Value, headers: &HeaderMap) -> Option<String> {
        let id = self.pieces(data, headers).collect::<Option<String>>()?;
        (!id.trim().is_empty()).then_some(id)
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[track_caller]
    fn check_name(template: &str, data: Value, header_pairs: &[(&'static str, &'static str)], expected: Option<&str>) {
        let template = Template::parse(template).unwrap();
        assert_eq!(template.render_name(&data, &headers(header_pairs)).as_deref(), expected);
    }

    #[test]
    fn names_come_from_the_payload_and_headers() {
        check_name(
            "stripe.{$.type}",
            json!({"type": "payment_intent.succeeded"}),
            &[],
            Some("stripe.payment_intent.succeeded"),
        );
        check_name(
            "github.{header:X-GitHub-Event}.{$.action}",
            json!({"action": "opened"}),
            &[("x-github-event", "pull_request")],
            Some("github.pull_request.opened"),
        );
        check_name(
            "github.{header:X-GitHub-Event}.{$.action}",
            json!({}),
            &[("x-github-event", "push")],
            Some("github.push"),
        );
        check_name(
            "shopify.{header:X-Shopify-Topic}",
            json!({}),
            &[("x-shopify-topic", "orders/create")],
            Some("shopify.orders.create"),
        );
        check_name(
            "hubspot.{$.subscriptionType}",
            json!({"subscriptionType": "contact.creation"}),
            &[],
            Some("hubspot.contact.creation"),
        );
        check_name("{$.missing}", json!({}), &[], None);
    }

    #[test]
    fn a_name_template_can_insist_on_finding_something() {
        let template = Template::parse("kustomer.app.mail.{$['@type']}").unwrap();
        assert_eq!(
            template.render_name_if_found(&json!({"@type": "Order"}), &HeaderMap::new()).as_deref(),
            Some("kustomer.app.mail.Order")
        );
        assert_eq!(template.render_name_if_found(&json!({"name": "x"}), &HeaderMap::new()), None);
        assert_eq!(
            template.render_name(&json!({"name": "x"}), &HeaderMap::new()).as_deref(),
            Some("kustomer.app.mail")
        );
    }

    #[test]
    fn ids_need_every_placeholder() {
        let template = Template::parse("{header:X-GitHub-Delivery}").unwrap();
        assert_eq!(
            template.render_id(&json!({}), &headers(&[("x-github-delivery", "72d3162e")])).as_deref(),
            Some("72d3162e")
        );
        assert_eq!(template.render_id(&json!({}), &headers(&[])), None);
        let numeric = Template::parse("{$.eventId}").unwrap();
        assert_eq!(numeric.render_id(&json!({"eventId": 100}), &HeaderMap::new()).as_deref(), Some("100"));
        assert_eq!(numeric.render_id(&json!({"eventId": {"nested": 1}}), &HeaderMap::new()), None);
    }

    #[test]
    fn alternatives_take_the_first_that_finds_a_value() {
        let template = Template::parse("{header:webhook-id|header:svix-id}").unwrap();
        assert_eq!(template.render_id(&json!({}), &headers(&[("svix-id", "msg_svix")])).as_deref(), Some("msg_svix"));
        assert_eq!(
            template.render_id(&json!({}), &headers(&[("webhook-id", "msg_std"), ("svix-id", "msg_svix")])).as_deref(),
            Some("msg_std")
        );
        assert_eq!(template.render_id(&json!({}), &headers(&[])), None);
        let mixed = Template::parse("{$.id | header:x-request-id}").unwrap();
        assert_eq!(mixed.render_id(&json!({"id": "evt_1"}), &HeaderMap::new()).as_deref(), Some("evt_1"));
        // A filter's `||` is JSONPath, not a separator.
        let filter = Template::parse("{$.items[?@.a == 1 || @.b == 2].id}").unwrap();
        assert_eq!(filter.render_id(&json!({"items": [{"b": 2, "id": "x"}]}), &HeaderMap::new()).as_deref(), Some("x"));
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert!(Template::parse("stripe.{$.type").unwrap_err().contains("unclosed"));
        assert!(Template::parse("{type}").unwrap_err().contains("unknown placeholder {type}"));
        assert!(Template::parse("{$[?}").unwrap_err().contains("invalid JSONPath"));
        assert!(Template::parse("{header:bad header}").unwrap_err().contains("not a header name"));
        assert!(Template::parse("{$.id|}").unwrap_err().contains("unknown placeholder {}"));
    }
}

#[cfg(test)]
mod properties;
