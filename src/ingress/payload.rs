//! Payload decoding: turns a request body and its `Content-Type` into the
//! JSON value that becomes an event's `data`.
//!
//! This module owns the supported media types (JSON, URL-encoded forms,
//! `multipart/form-data` and XML), the conversion convention for each, and the
//! limits that keep hostile bodies harmless: nesting depth for JSON and XML,
//! no expansion of XML entity declarations, and a cap on how much uploaded
//! file content is copied into the event.
//!
//! It must never do I/O (the body is already in memory and bounded by the
//! caller) and never know HTTP status codes: every failure is a
//! [`PayloadError`], and the caller maps it to a reply, using
//! [`PayloadError::is_unsupported_media_type`] to tell a 415 from a 400.
//! Field order of the input is kept (`serde_json` is built with
//! `preserve_order`).

use std::convert::Infallible;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use quick_xml::events::{BytesRef, BytesStart, Event};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The deepest element nesting accepted in an XML document (the root element
/// is level 1). JSON bodies rely on `serde_json`'s default recursion limit of
/// 128, which accepts at most 127 nested arrays or objects.
const MAX_XML_DEPTH: usize = 128;

/// The accepted media types, as listed in the unsupported-media-type error.
const ACCEPTED_MEDIA_TYPES: &str = "application/json, text/json, application/*+json, \
     application/x-www-form-urlencoded, multipart/form-data, \
     application/xml, text/xml, application/*+xml";

/// Limits on what a payload may carry into the event.
#[derive(Debug, Clone)]
pub struct PayloadLimits {
    /// Uploaded files up to this many bytes are kept as base64 `content`;
    /// larger ones keep only their size and SHA-256.
    pub max_file_bytes_kept: usize,
}

/// Why a body could not become event data.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The media type is not one this module decodes.
    #[error("unsupported content type \"{content_type}\"; accepted: {ACCEPTED_MEDIA_TYPES}")]
    UnsupportedMediaType { content_type: String },

    /// The `charset` parameter names an encoding other than UTF-8 or US-ASCII.
    #[error("unsupported charset {charset}")]
    UnsupportedCharset { charset: String },

    /// The body has no bytes and the media type needs some.
    #[error("request body is empty")]
    EmptyBody,

    /// The body is not valid JSON.
    #[error("malformed JSON at line {line} column {column}: {reason}")]
    MalformedJson { line: usize, column: usize, reason: String },

    /// `multipart/form-data` without the `boundary` parameter.
    #[error("multipart/form-data content type has no boundary parameter")]
    MissingBoundary,

    /// The multipart body does not follow the multipart grammar.
    #[error("malformed multipart body: {reason}")]
    MalformedMultipart { reason: String },

    /// A multipart part has no `name` in its `Content-Disposition`.
    #[error("multipart part has no field name")]
    UnnamedMultipartField,

    /// A multipart text field (one without a filename) is not UTF-8.
    #[error("multipart field \"{name}\" is not valid UTF-8 text")]
    NonUtf8MultipartField { name: String },

    /// The body is not well-formed XML; `position` is a byte offset.
    #[error("malformed XML at byte {position}: {reason}")]
    MalformedXml { position: u64, reason: String },

    /// The XML document nests elements more than 128 levels deep.
    #[error("XML nesting deeper than {MAX_XML_DEPTH} levels at byte {position}")]
    XmlTooDeep { position: u64 },

    /// The XML document declares entities, which are never expanded.
    #[error("XML document type declarations that declare entities are not accepted")]
    XmlEntityDeclaration,
}

impl PayloadError {
    /// True when the content type itself is the problem (the caller answers 415); otherwise the body is malformed (400).
    pub fn is_unsupported_media_type(&self) -> bool {
        match self {
            PayloadError::UnsupportedMediaType { .. } => true,
            PayloadError::UnsupportedCharset { .. }
            | PayloadError::EmptyBody
            | PayloadError::MalformedJson { .. }
            | PayloadError::MissingBoundary
            | PayloadError::MalformedMultipart { .. }
            | PayloadError::UnnamedMultipartField
            | PayloadError::NonUtf8MultipartField { .. }
            | PayloadError::MalformedXml { .. }
            | PayloadError::XmlTooDeep { .. }
            | PayloadError::XmlEntityDeclaration => false,
        }
    }
}

/// Classifies the content type alone, so the caller can answer 415 before reading the body.
/// A missing header counts as JSON.
pub fn media_kind(content_type: Option<&str>) -> Result<MediaKind, PayloadError> {
    ContentType::parse(content_type).map(|parsed| parsed.kind)
}

/// The parsed body, ready to become the event's `data`.
pub async fn parse_payload(
    content_type: Option<&str>,
    body: Bytes,
    limits: &PayloadLimits,
) -> Result<Value, PayloadError> {
    let content_type = ContentType::parse(content_type)?;
    if body.is_empty() {
        return match content_type.kind {
            MediaKind::FormUrlencoded => Ok(Value::Object(Map::new())),
            MediaKind::Json | MediaKind::Multipart | MediaKind::Xml => Err(PayloadError::EmptyBody),
        };
    }
    match content_type.kind {
        MediaKind::Json => parse_json(&body),
        MediaKind::FormUrlencoded => {
            require_utf8_charset(content_type.charset.as_deref())?;
            Ok(parse_form_urlencoded(&body))
        }
        MediaKind::Multipart => {
            let boundary = content_type.boundary.ok_or(PayloadError::MissingBoundary)?;
            parse_multipart(body, boundary, limits).await
        }
        MediaKind::Xml => {
            require_utf8_charset(content_type.charset.as_deref())?;
            parse_xml(&body)
        }
    }
}

/// Checks that a JSON body is one JSON value, as [`parse_payload`] would parse it, without
/// building it: for hooks whose events keep the body as their data and whose data nothing reads
/// before it is stored (the store parses the body again when the event is read). It accepts what
/// [`parse_payload`] accepts and refuses with the same errors.
pub fn validate_json(body: &[u8]) -> Result<(), PayloadError> {
    if body.is_empty() {
        return Err(PayloadError::EmptyBody);
    }
    match serde_json::from_slice::<ValidJson>(body) {
        Ok(_) => Ok(()),
        // A refusal is rare: parsed again, it gets the very message `parse_payload` gives (the
        // two ways of reading word some errors differently, a trailing comma among them).
        Err(error) => Err(parse_json(body).err().unwrap_or_else(|| json_error(error))),
    }
}

/// A JSON value read and dropped as it is read: every string is decoded (escapes checked, as
/// building a `Value` would), but nothing is kept. (serde's `IgnoredAny` skips strings without
/// checking their escapes, so it accepts a lone surrogate that the store could not read back.)
struct ValidJson;

impl<'de> serde::Deserialize<'de> for ValidJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValidJson)
    }
}

impl<'de> serde::de::Visitor<'de> for ValidJson {
    type Value = ValidJson;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<ValidJson, E> {
        Ok(ValidJson)
    }
    fn visit_i64<E>(self, _: i64) -> Result<ValidJson, E> {
        Ok(ValidJson)
    }
    fn visit_u64<E>(self, _: u64) -> Result<ValidJson, E> {
        Ok(ValidJson)
    }
    fn visit_f64<E>(self, _: f64) -> Result<ValidJson, E> {
        Ok(ValidJson)
    }
    fn visit_str<E>(self, _: &str) -> Result<ValidJson, E> {
        Ok(ValidJson)
    }
    fn visit_unit<E>(self) -> Result<ValidJson, E> {
        Ok(ValidJson)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<ValidJson, A::Error> {
        while items.next_element::<ValidJson>()?.is_some() {}
        Ok(ValidJson)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<ValidJson, A::Error> {
        while entries.next_entry::<ValidJson, ValidJson>()?.is_some() {}
        Ok(ValidJson)
    }
}

/// The supported media types, grouped by how their bodies are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Json,
    FormUrlencoded,
    Multipart,
    Xml,
}

impl MediaKind {
    /// What an HTML `<form>` posts: the posts a hook's `redirectUrl` answers with a redirect.
    pub fn is_html_form(self) -> bool {
        matches!(self, MediaKind::FormUrlencoded | MediaKind::Multipart)
    }

    /// For JSON the parsed data is exactly the body parsed by serde_json.
    pub fn is_json(self) -> bool {
        self == MediaKind::Json
    }
}

/// The parts of a `Content-Type` header this module looks at.
#[derive(Debug)]
struct ContentType {
    kind: MediaKind,
    charset: Option<String>,
    boundary: Option<String>,
}

impl ContentType {
    /// Classifies the header by its essence (`type/subtype`, case-insensitive)
    /// and keeps the `charset` and `boundary` parameters.
    fn parse(header: Option<&str>) -> Result<ContentType, PayloadError> {
        let Some(header) = header else {
            return Ok(ContentType { kind: MediaKind::Json, charset: None, boundary: None });
        };
        let (essence, parameters) = match header.split_once(';') {
            Some((essence, parameters)) => (essence.trim(), parameters),
            None => (header.trim(), ""),
        };
        let unsupported = || PayloadError::UnsupportedMediaType { content_type: essence.to_owned() };
        let kind = kind_of_essence(&essence.to_ascii_lowercase()).ok_or_else(unsupported)?;
        let mut charset = None;
        let mut boundary = None;
        for (name, value) in media_type_parameters(parameters) {
            if name.eq_ignore_ascii_case("charset") {
                charset = Some(value);
            } else if name.eq_ignore_ascii_case("boundary") {
                boundary = Some(value);
            }
        }
        Ok(ContentType { kind, charset, boundary: boundary.filter(|boundary| !boundary.is_empty()) })
    }
}

/// The kind of a lowercase `type/subtype` essence, or `None` if unsupported.
fn kind_of_essence(essence: &str) -> Option<MediaKind> {
    let (top_level, subtype) = essence.split_once('/')?;
    if !is_token(top_level) || !is_token(subtype) {
        return None;
    }
    let has_suffix = |suffix: &str| subtype.strip_suffix(suffix).is_some_and(|prefix| !prefix.is_empty());
    match (top_level, subtype) {
        ("application", "json") | ("text", "json") => Some(MediaKind::Json),
        ("application", _) if has_suffix("+json") => Some(MediaKind::Json),
        ("application", "x-www-form-urlencoded") => Some(MediaKind::FormUrlencoded),
        ("multipart", "form-data") => Some(MediaKind::Multipart),
        ("application", "xml") | ("text", "xml") => Some(MediaKind::Xml),
        ("application", _) if has_suffix("+xml") => Some(MediaKind::Xml),
        _ => None,
    }
}

/// True for a non-empty RFC 9110 token.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// The `name=value` pairs after the essence, with quoted values unquoted.
/// Malformed parameters are skipped: only `charset` and `boundary` matter.
fn media_type_parameters(parameters: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = parameters;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return pairs;
        }
        let name_end = rest.find(['=', ';']).unwrap_or(rest.len());
        let name = rest[..name_end].trim();
        rest = &rest[name_end..];
        let Some(after_equals) = rest.strip_prefix('=') else {
            continue;
        };
        let value;
        (value, rest) = match after_equals.strip_prefix('"') {
            Some(quoted) => split_quoted_string(quoted),
            None => {
                let value_end = after_equals.find(';').unwrap_or(after_equals.len());
                let (value, rest) = after_equals.split_at(value_end);
                (value.trim().to_owned(), rest)
            }
        };
        pairs.push((name.to_owned(), value));
    }
}

/// Splits the inside of a quoted string (after its opening quote) into its
/// unescaped value and the text after the closing quote.
fn split_quoted_string(quoted: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((index, ch)) = chars.next() {
        match ch {
            '"' => return (value, &quoted[index + 1..]),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            _ => value.push(ch),
        }
    }
    (value, "")
}

/// Rejects a `charset` parameter naming anything but UTF-8 or its ASCII subset.
fn require_utf8_charset(charset: Option<&str>) -> Result<(), PayloadError> {
    match charset {
        None => Ok(()),
        Some(charset) if is_utf8_compatible(charset) => Ok(()),
        Some(charset) => Err(PayloadError::UnsupportedCharset { charset: charset.to_owned() }),
    }
}

fn is_utf8_compatible(charset: &str) -> bool {
    ["utf-8", "utf8", "us-ascii"].iter().any(|accepted| charset.trim().eq_ignore_ascii_case(accepted))
}

/// Adds `value` under `key`; a key seen before collects its values in an array.
/// Callers only ever insert strings and objects, so an existing array always
/// means "already repeated".
fn insert_repeatable(map: &mut Map<String, Value>, key: String, value: Value) {
    match map.get_mut(&key) {
        None => {
            map.insert(key, value);
        }
        Some(Value::Array(values)) => values.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

// ---------------------------------------------------------------------------
// JSON

fn parse_json(body: &[u8]) -> Result<Value, PayloadError> {
    serde_json::from_slice(body).map_err(json_error)
}

fn json_error(error: serde_json::Error) -> PayloadError {
    let (line, column) = (error.line(), error.column());
    let message = error.to_string();
    let reason = message.strip_suffix(&format!(" at line {line} column {column}")).unwrap_or(&message).to_owned();
    PayloadError::MalformedJson { line, column, reason }
}

// ---------------------------------------------------------------------------
// application/x-www-form-urlencoded

/// Flat string fields in first-seen order; no bracket-syntax nesting.
fn parse_form_urlencoded(body: &[u8]) -> Value {
    let mut fields = Map::new();
    for (key, value) in form_urlencoded::parse(body) {
        insert_repeatable(&mut fields, key.into_owned(), Value::String(value.into_owned()));
    }
    Value::Object(fields)
}

// ---------------------------------------------------------------------------
// multipart/form-data

async fn parse_multipart(body: Bytes, boundary: String, limits: &PayloadLimits) -> Result<Value, PayloadError> {
    let stream = futures_util::stream::once(std::future::ready(Ok::<Bytes, Infallible>(body)));
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Map::new();
    while let Some(field) = multipart.next_field().await.map_err(malformed_multipart)? {
        let name = field.name().ok_or(PayloadError::UnnamedMultipartField)?.to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(ToString::to_string);
        let content = field.bytes().await.map_err(malformed_multipart)?;
        let value = match file_name {
            Some(file_name) => uploaded_file(file_name, content_type, &content, limits),
            None => match std::str::from_utf8(&content) {
                Ok(text) => Value::String(text.to_owned()),
                Err(_) => return Err(PayloadError::NonUtf8MultipartField { name }),
            },
        };
        insert_repeatable(&mut fields, name, value);
    }
    Ok(Value::Object(fields))
}

/// The JSON description of an uploaded file; its bytes are kept (as base64)
/// only up to `limits.max_file_bytes_kept`.
fn uploaded_file(file_name: String, content_type: Option<String>, content: &[u8], limits: &PayloadLimits) -> Value {
    let content_kept = content.len() <= limits.max_file_bytes_kept;
    let mut file = Map::new();
    file.insert("filename".to_owned(), Value::String(file_name));
    file.insert("contentType".to_owned(), content_type.map_or(Value::Null, Value::String));
    file.insert("size".to_owned(), Value::from(content.len()));
    file.insert("sha256".to_owned(), Value::String(hex::encode(Sha256::digest(content))));
    file.insert("content".to_owned(), if content_kept { Value::String(BASE64.encode(content)) } else { Value::Null });
    file.insert("contentKept".to_owned(), Value::Bool(content_kept));
    Value::Object(file)
}

/// Multer's message, followed by its causes (its own message for a bad part
/// header is only "failed to read headers").
fn malformed_multipart(error: multer::Error) -> PayloadError {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    PayloadError::MalformedMultipart { reason }
}

// ---------------------------------------------------------------------------
// XML

/// An element whose end tag has not been read yet.
struct OpenElement {
    name: String,
    /// Attributes (`@name`) then child elements, in document order.
    fields: Map<String, Value>,
    /// All character data, with references and CDATA decoded.
    text: String,
}

impl OpenElement {
    fn open(start: &BytesStart<'_>, position: u64) -> Result<OpenElement, PayloadError> {
        let malformed = |reason: String| PayloadError::MalformedXml { position, reason };
        let name = utf8_name(start.name().as_ref()).map_err(malformed)?;
        let mut fields = Map::new();
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|error| malformed(error.to_string()))?;
            let key = utf8_name(attribute.key.as_ref()).map_err(malformed)?;
            let value = attribute.unescape_value().map_err(|error| malformed(error.to_string()))?;
            fields.insert(format!("@{key}"), Value::String(value.into_owned()));
        }
        Ok(OpenElement { name, fields, text: String::new() })
    }

    /// The element's value: a plain string when it has only text, otherwise
    /// an object with its trimmed text (if any) under `#text`.
    fn close(self) -> (String, Value) {
        if self.fields.is_empty() {
            return (self.name, Value::String(self.text));
        }
        let mut fields = self.fields;
        let text = self.text.trim();
        if !text.is_empty() {
            fields.insert("#text".to_owned(), Value::String(text.to_owned()));
        }
        (self.name, Value::Object(fields))
    }
}

fn utf8_name(name: &[u8]) -> Result<String, String> {
    std::str::from_utf8(name).map(str::to_owned).map_err(|_| "name is not valid UTF-8".to_owned())
}

/// Converts the document to `{"<root>": <value>}`; see [`OpenElement::close`].
/// Entities declared in a DOCTYPE are rejected, never expanded.
fn parse_xml(body: &[u8]) -> Result<Value, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|error| PayloadError::MalformedXml {
        position: error.valid_up_to() as u64,
        reason: "invalid UTF-8".to_owned(),
    })?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut open: Vec<OpenElement> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        let position = reader.buffer_position();
        let malformed = |reason: String| PayloadError::MalformedXml { position, reason };
        let event = reader.read_event().map_err(|error| PayloadError::MalformedXml {
            position: reader.error_position(),
            reason: error.to_string(),
        })?;
        let mut closed = None;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(malformed("more than one root element".to_owned()));
            }
            Event::Start(start) => {
                if open.len() == MAX_XML_DEPTH {
                    return Err(PayloadError::XmlTooDeep { position });
                }
                open.push(OpenElement::open(&start, position)?);
            }
            Event::Empty(start) => {
                if open.len() == MAX_XML_DEPTH {
                    return Err(PayloadError::XmlTooDeep { position });
                }
                closed = Some(OpenElement::open(&start, position)?.close());
            }
            Event::End(_) => {
                // The reader checks that end tags match their start tags.
                let element = open.pop().ok_or_else(|| malformed("end tag without a start tag".to_owned()))?;
                closed = Some(element.close());
            }
            Event::Text(text) => {
                let text = text.xml10_content().map_err(|error| malformed(error.to_string()))?;
                push_text(open.last_mut(), &text).map_err(malformed)?;
            }
            Event::CData(cdata) => {
                let text = cdata.xml10_content().map_err(|error| malformed(error.to_string()))?;
                push_text(open.last_mut(), &text).map_err(malformed)?;
            }
            Event::GeneralRef(reference) => {
                let text = resolve_reference(&reference).map_err(malformed)?;
                push_text(open.last_mut(), &text).map_err(malformed)?;
            }
            Event::DocType(doctype) => {
                let declaration = doctype.decode().map_err(|error| malformed(error.to_string()))?;
                if declaration.contains("<!ENTITY") {
                    return Err(PayloadError::XmlEntityDeclaration);
                }
            }
            Event::Decl(declaration) => {
                if let Some(Ok(encoding)) = declaration.encoding() {
                    let encoding = String::from_utf8_lossy(&encoding);
                    if !is_utf8_compatible(&encoding) {
                        return Err(PayloadError::UnsupportedCharset { charset: encoding.into_owned() });
                    }
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => {
                if let Some(element) = open.last() {
                    return Err(malformed(format!(
                        "element <{}> is not closed at the end of the document",
                        element.name
                    )));
                }
                let (name, value) = root.ok_or_else(|| malformed("document has no root element".to_owned()))?;
                let mut document = Map::new();
                document.insert(name, value);
                return Ok(Value::Object(document));
            }
        }
        if let Some((name, value)) = closed {
            match open.last_mut() {
                Some(parent) => insert_repeatable(&mut parent.fields, name, value),
                None => root = Some((name, value)),
            }
        }
    }
}

/// Appends character data to the open element; outside the root element only
/// whitespace is allowed.
fn push_text(element: Option<&mut OpenElement>, text: &str) -> Result<(), String> {
    match element {
        Some(element) => {
            element.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err("text outside the root element".to_owned()),
    }
}

/// The text of a character reference or one of the five predefined entities;
/// any other entity is unknown, since declared entities are never expanded.
fn resolve_reference(reference: &BytesRef<'_>) -> Result<String, String> {
    if let Some(ch) = reference.resolve_char_ref().map_err(|error| error.to_string())? {
        return Ok(ch.to_string());
    }
    let name = reference.decode().map_err(|error| error.to_string())?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(str::to_owned)
        .ok_or_else(|| format!("unknown entity &{name};"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMITS: PayloadLimits = PayloadLimits { max_file_bytes_kept: 16 };

    /// Runs `parse_payload` to completion; the body is already in memory, so
    /// a current-thread runtime is all it needs.
    fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Value, PayloadError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds")
            .block_on(parse_payload(content_type, Bytes::copy_from_slice(body), &LIMITS))
    }

    #[test]
    fn checking_json_without_building_it_accepts_and_refuses_exactly_as_parsing_does() {
        let bodies: &[&[u8]] = &[
            br#"{"order": {"id": 7, "lines": [1, 2.5, "x", null, true]}}"#,
            b"[]",
            b"  \"text\"  ",
            b"null",
            b"",
            b"{",
            br#"{"a": 1,}"#,
            br#"{"a": 1} trailing"#,
            b"\xff\xfe",
            br#"{"a": "\ud800"}"#,
            &[b'['; 200],
            b"[1e400]",
            b"-0.0e-5",
            b"123456789012345678901234567890",
            br#"{"\u00e9\n": "line\nbreak \ud83d\ude00", "a": 1, "a": 2}"#,
            br#"{"a": "\x"}"#,
            b"\"\t\"",
        ];
        for body in bodies {
            let parsed = parse(Some("application/json"), body).map(|_| ()).map_err(|error| error.to_string());
            let checked = validate_json(body).map_err(|error| error.to_string());
            assert_eq!(checked, parsed, "body {:?}", String::from_utf8_lossy(body));
        }
    }

    #[track_caller]
    fn check(content_type: Option<&str>, body: &str, expected: Value) {
        match parse(content_type, body.as_bytes()) {
            // Compare the serialized text too: it shows the field order.
            Ok(actual) => assert_eq!(actual.to_string(), expected.to_string()),
            Err(error) => panic!("expected {expected}, got error: {error}"),
        }
    }

    /// Asserts the exact message and that the error is a body (400) problem.
    #[track_caller]
    fn check_bad_request(content_type: Option<&str>, body: &[u8], expected_message: &str) {
        match parse(content_type, body) {
            Ok(value) => panic!("expected error {expected_message:?}, got {value}"),
            Err(error) => {
                assert_eq!(error.to_string(), expected_message);
                assert!(!error.is_unsupported_media_type(), "{error:?} is not a 415");
            }
        }
    }

    /// Asserts that the error message starts with `expected_prefix` and that
    /// the error is a body (400) problem.
    #[track_caller]
    fn check_bad_request_starts_with(content_type: Option<&str>, body: &[u8], expected_prefix: &str) {
        match parse(content_type, body) {
            Ok(value) => panic!("expected error {expected_prefix:?}..., got {value}"),
            Err(error) => {
                let message = error.to_string();
                assert!(message.starts_with(expected_prefix), "{message:?} does not start with {expected_prefix:?}");
                assert!(!error.is_unsupported_media_type(), "{error:?} is not a 415");
            }
        }
    }

    #[track_caller]
    fn check_unsupported_media_type(content_type: &str, named: &str) {
        assert!(media_kind(Some(content_type)).is_err());
        match parse(Some(content_type), b"{}") {
            Ok(value) => panic!("expected 415 for {content_type:?}, got {value}"),
            Err(error) => {
                assert!(error.is_unsupported_media_type(), "{error:?} is a 415");
                assert_eq!(
                    error.to_string(),
                    format!(
                        "unsupported content type \"{named}\"; accepted: application/json, \
                         text/json, application/*+json, application/x-www-form-urlencoded, \
                         multipart/form-data, application/xml, text/xml, application/*+xml"
                    )
                );
            }
        }
    }

    // --- media types ---

    #[test]
    fn json_body_keeps_field_order() {
        check(
            Some("application/json"),
            r#"{"zeta": 1, "alpha": {"y": true, "b": null}, "list": [1, "two"]}"#,
            json!({"zeta": 1, "alpha": {"y": true, "b": null}, "list": [1, "two"]}),
        );
    }

    #[test]
    fn missing_content_type_is_treated_as_json() {
        assert!(media_kind(None).is_ok());
        check(None, r#"{"a": 1}"#, json!({"a": 1}));
    }

    #[test]
    fn text_json_and_json_suffix_types_are_json() {
        check(Some("text/json"), "[1]", json!([1]));
        check(Some("application/vnd.github+json"), r#"{"a": 1}"#, json!({"a": 1}));
        check(Some("application/cloudevents+json"), "true", json!(true));
    }

    #[test]
    fn media_types_match_case_insensitively_and_ignore_parameters() {
        check(Some("Application/JSON; charset=UTF-8"), "[]", json!([]));
        check(Some("APPLICATION/VND.API+JSON ; version=2"), "1", json!(1));
        check(Some("  text/XML;charset=\"utf-8\""), "<a>x</a>", json!({"a": "x"}));
        check(Some("Application/X-WWW-Form-Urlencoded; Charset=US-ASCII"), "a=1", json!({"a": "1"}));
        assert!(media_kind(Some("MULTIPART/FORM-DATA; BOUNDARY=x")).is_ok());
    }

    #[test]
    fn json_ignores_a_charset_parameter_but_still_requires_utf8() {
        check(Some("application/json; charset=iso-8859-1"), r#"{"a":"b"}"#, json!({"a": "b"}));
        check_bad_request_starts_with(Some("application/json"), b"\"\xff\"", "malformed JSON at line 1 column");
    }

    #[test]
    fn other_media_types_are_unsupported_and_named() {
        check_unsupported_media_type("text/plain", "text/plain");
        check_unsupported_media_type("Text/HTML; charset=utf-8", "Text/HTML");
        check_unsupported_media_type("application/octet-stream", "application/octet-stream");
        check_unsupported_media_type("multipart/mixed; boundary=x", "multipart/mixed");
        check_unsupported_media_type("image/svg+xml", "image/svg+xml");
        check_unsupported_media_type("text/vnd.foo+json", "text/vnd.foo+json");
    }

    #[test]
    fn malformed_media_types_are_unsupported() {
        check_unsupported_media_type("", "");
        check_unsupported_media_type("json", "json");
        check_unsupported_media_type("application/", "application/");
        check_unsupported_media_type("application/+json", "application/+json");
        check_unsupported_media_type("application/j son", "application/j son");
    }

    // --- empty bodies ---

    #[test]
    fn empty_body_is_an_error_for_every_type_but_urlencoded() {
        for content_type in
            [None, Some("application/json"), Some("application/xml"), Some("multipart/form-data; boundary=x")]
        {
            check_bad_request(content_type, b"", "request body is empty");
        }
        check(Some("application/x-www-form-urlencoded"), "", json!({}));
    }

    #[test]
    fn an_unsupported_type_is_reported_before_an_empty_body() {
        let error = parse(Some("text/plain"), b"").expect_err("text/plain is unsupported");
        assert!(error.is_unsupported_media_type());
    }

    // --- JSON ---

    #[test]
    fn malformed_json_names_the_line_and_column() {
        check_bad_request(
            Some("application/json"),
            b"{\n  \"a\": 1,\n  \"b\": }",
            "malformed JSON at line 3 column 8: expected value",
        );
        check_bad_request(None, br#"{"a": 1"#, "malformed JSON at line 1 column 7: EOF while parsing an object");
        check_bad_request(None, b"{} x", "malformed JSON at line 1 column 4: trailing characters");
    }

    /// `serde_json`'s default recursion limit of 128 counts the value being
    /// parsed, so 127 nested arrays are the most it accepts.
    #[test]
    fn json_nesting_is_limited_by_serde_json_recursion_limit() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(parse(None, nested(127).as_bytes()).is_ok());
        check_bad_request(
            None,
            nested(128).as_bytes(),
            "malformed JSON at line 1 column 128: recursion limit exceeded",
        );
    }

    // --- application/x-www-form-urlencoded ---

    #[test]
    fn form_fields_are_decoded_strings_in_first_seen_order() {
        check(
            Some("application/x-www-form-urlencoded"),
            "zeta=1&alpha=hello+world&email=a%40b.example&flag&empty=",
            json!({"zeta": "1", "alpha": "hello world", "email": "a@b.example", "flag": "", "empty": ""}),
        );
    }

    #[test]
    fn repeated_form_keys_become_arrays() {
        check(
            Some("application/x-www-form-urlencoded"),
            "tag=a&other=x&tag=b&tag=c",
            json!({"tag": ["a", "b", "c"], "other": "x"}),
        );
    }

    #[test]
    fn form_keys_with_brackets_are_not_nested() {
        check(
            Some("application/x-www-form-urlencoded"),
            "user%5Bname%5D=ann&list[]=1&list[]=2",
            json!({"user[name]": "ann", "list[]": ["1", "2"]}),
        );
    }

    #[test]
    fn form_with_a_non_utf8_charset_is_rejected() {
        check_bad_request(
            Some("application/x-www-form-urlencoded; charset=ISO-8859-1"),
            b"a=%E9",
            "unsupported charset ISO-8859-1",
        );
    }

    // --- multipart/form-data ---

    const MULTIPART: &str = "multipart/form-data; boundary=XyZ";

    fn multipart_body(parts: &[&str]) -> String {
        let mut body = String::new();
        for part in parts {
            body.push_str("--XyZ\r\n");
            body.push_str(part);
            body.push_str("\r\n");
        }
        body.push_str("--XyZ--\r\n");
        body
    }

    fn text_part(name: &str, value: &str) -> String {
        format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}")
    }

    #[test]
    fn multipart_text_fields_become_strings_and_repeated_names_arrays() {
        let body = multipart_body(&[
            &text_part("name", "Ann"),
            &text_part("tag", "a"),
            &text_part("note", "line one\r\nline two"),
            &text_part("tag", "b"),
        ]);
        check(Some(MULTIPART), &body, json!({"name": "Ann", "tag": ["a", "b"], "note": "line one\r\nline two"}));
    }

    #[test]
    fn multipart_small_file_keeps_its_content_as_base64() {
        let body = multipart_body(&[
            &text_part("kind", "receipt"),
            "Content-Disposition: form-data; name=\"file\"; filename=\"hello.txt\"\r\n\
             Content-Type: text/plain\r\n\r\nhello",
        ]);
        check(
            Some(MULTIPART),
            &body,
            json!({
                "kind": "receipt",
                "file": {
                    "filename": "hello.txt",
                    "contentType": "text/plain",
                    "size": 5,
                    "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
                    "content": "aGVsbG8=",
                    "contentKept": true,
                },
            }),
        );
    }

    #[test]
    fn multipart_file_over_the_limit_keeps_only_size_and_hash() {
        let content = "x".repeat(17);
        let body = multipart_body(&[&format!(
            "Content-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n{content}"
        )]);
        check(
            Some(MULTIPART),
            &body,
            json!({
                "file": {
                    "filename": "big.bin",
                    "contentType": null,
                    "size": 17,
                    "sha256": hex::encode(Sha256::digest(content.as_bytes())),
                    "content": null,
                    "contentKept": false,
                },
            }),
        );
    }

    #[test]
    fn multipart_file_exactly_at_the_limit_is_kept() {
        let content = "y".repeat(16);
        let body =
            multipart_body(&[&format!("Content-Disposition: form-data; name=\"f\"; filename=\"\"\r\n\r\n{content}")]);
        let data = parse(Some(MULTIPART), body.as_bytes()).expect("valid multipart");
        assert_eq!(data["f"]["filename"], json!(""));
        assert_eq!(data["f"]["contentKept"], json!(true));
        assert_eq!(data["f"]["content"], json!(BASE64.encode(&content)));
    }

    #[test]
    fn multipart_file_content_may_be_binary() {
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"b\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
            .to_vec();
        body.extend_from_slice(&[0, 0xff, 0xfe]);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        let data = parse(Some(MULTIPART), &body).expect("valid multipart");
        assert_eq!(data["f"]["content"], json!("AP/+"));
        assert_eq!(data["f"]["size"], json!(3));
    }

    #[test]
    fn multipart_boundary_may_be_quoted() {
        check(
            Some("multipart/form-data; charset=utf-8; boundary=\"XyZ\""),
            &multipart_body(&[&text_part("a", "1")]),
            json!({"a": "1"}),
        );
    }

    #[test]
    fn multipart_without_a_boundary_is_a_bad_request() {
        assert!(media_kind(Some("multipart/form-data")).is_ok());
        let body = multipart_body(&[&text_part("a", "1")]);
        for content_type in
            ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=\"\""]
        {
            check_bad_request(
                Some(content_type),
                body.as_bytes(),
                "multipart/form-data content type has no boundary parameter",
            );
        }
    }

    #[test]
    fn malformed_multipart_reports_the_reason() {
        check_bad_request(
            Some(MULTIPART),
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno closing boundary",
            "malformed multipart body: field \"a\" received with incomplete data",
        );
        check_bad_request(
            Some(MULTIPART),
            b"this is not multipart",
            "malformed multipart body: incomplete multipart stream",
        );
        check_bad_request_starts_with(
            Some(MULTIPART),
            b"--XyZ\r\nbad header line\r\n\r\nx\r\n--XyZ--\r\n",
            "malformed multipart body: failed to read headers",
        );
    }

    #[test]
    fn multipart_part_without_a_name_is_a_bad_request() {
        check_bad_request(
            Some(MULTIPART),
            b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--\r\n",
            "multipart part has no field name",
        );
    }

    #[test]
    fn multipart_text_field_must_be_utf8() {
        check_bad_request(
            Some(MULTIPART),
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\xff\xfe\r\n--XyZ--\r\n",
            "multipart field \"a\" is not valid UTF-8 text",
        );
    }

    // --- XML ---

    #[test]
    fn xml_root_with_only_text_becomes_a_string() {
        check(
            Some("application/xml"),
            "<?xml version=\"1.0\"?>\n<greeting>hello</greeting>\n",
            json!({"greeting": "hello"}),
        );
        check(Some("text/xml"), "<empty/>", json!({"empty": ""}));
        check(Some("application/atom+xml"), "<e></e>", json!({"e": ""}));
    }

    #[test]
    fn xml_may_start_with_a_byte_order_mark() {
        check(Some("application/xml"), "\u{feff}<a>x</a>", json!({"a": "x"}));
    }

    #[test]
    fn xml_attributes_become_at_fields_before_children() {
        check(
            Some("application/xml"),
            r#"<order id="42" status="paid"><total currency="EUR">9.50</total><note/></order>"#,
            json!({"order": {
                "@id": "42",
                "@status": "paid",
                "total": {"@currency": "EUR", "#text": "9.50"},
                "note": "",
            }}),
        );
    }

    #[test]
    fn repeated_xml_children_become_arrays_in_order() {
        check(
            Some("application/xml"),
            "<cart>\n  <item>a</item>\n  <count>2</count>\n  <item>b</item>\n  <item sku=\"c\"/>\n</cart>",
            json!({"cart": {"item": ["a", "b", {"@sku": "c"}], "count": "2"}}),
        );
    }

    #[test]
    fn xml_mixed_text_is_trimmed_and_whitespace_only_text_is_dropped() {
        check(
            Some("application/xml"),
            "<p lang=\"en\">\n  Hello <b>there</b>\n</p>",
            json!({"p": {"@lang": "en", "b": "there", "#text": "Hello"}}),
        );
        check(Some("application/xml"), "<a>  spaced  </a>", json!({"a": "  spaced  "}));
    }

    #[test]
    fn xml_cdata_and_entities_are_decoded() {
        check(
            Some("application/xml"),
            "<m title=\"a &amp; b &#x41;\">x &lt; y &amp;&amp; &quot;z&quot; &#169;<![CDATA[ <raw> & ]]></m>",
            json!({"m": {"@title": "a & b A", "#text": "x < y && \"z\" \u{a9} <raw> &"}}),
        );
        check(Some("application/xml"), "<c><![CDATA[<b>bold</b>]]></c>", json!({"c": "<b>bold</b>"}));
    }

    #[test]
    fn xml_namespace_prefixes_are_kept_as_written() {
        check(
            Some("application/soap+xml; charset=utf-8"),
            r#"<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body><m:Ping xmlns:m="urn:x">1</m:Ping></soap:Body></soap:Envelope>"#,
            json!({"soap:Envelope": {
                "@xmlns:soap": "http://www.w3.org/2003/05/soap-envelope",
                "soap:Body": {"m:Ping": {"@xmlns:m": "urn:x", "#text": "1"}},
            }}),
        );
    }

    #[test]
    fn malformed_xml_reports_the_byte_position() {
        check_bad_request(
            Some("application/xml"),
            b"<a><b></a>",
            "malformed XML at byte 6: ill-formed document: expected `</b>`, but `</a>` was found",
        );
        check_bad_request(
            Some("application/xml"),
            b"<a><b>x</b>",
            "malformed XML at byte 11: element <a> is not closed at the end of the document",
        );
        check_bad_request(Some("application/xml"), b"<a/><b/>", "malformed XML at byte 4: more than one root element");
        check_bad_request(
            Some("application/xml"),
            b"just text",
            "malformed XML at byte 0: text outside the root element",
        );
        check_bad_request(
            Some("application/xml"),
            b"<!-- only -->",
            "malformed XML at byte 13: document has no root element",
        );
        check_bad_request_starts_with(Some("application/xml"), b"<a x=1/>", "malformed XML at byte ");
        check_bad_request_starts_with(
            Some("application/xml"),
            b"<a>\xff</a>",
            "malformed XML at byte 3: invalid UTF-8",
        );
    }

    #[test]
    fn xml_nesting_is_limited_to_128_levels() {
        let nested = |depth: usize| format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
        assert!(parse(Some("application/xml"), nested(128).as_bytes()).is_ok());
        check_bad_request(
            Some("application/xml"),
            nested(129).as_bytes(),
            "XML nesting deeper than 128 levels at byte 384",
        );
        let empty_too_deep = format!("{}<a/>{}", "<a>".repeat(128), "</a>".repeat(128));
        check_bad_request(
            Some("application/xml"),
            empty_too_deep.as_bytes(),
            "XML nesting deeper than 128 levels at byte 384",
        );
    }

    #[test]
    fn xml_entity_declarations_are_rejected_not_expanded() {
        let billion_laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<lolz>&lol3;</lolz>"#;
        check_bad_request(
            Some("application/xml"),
            billion_laughs.as_bytes(),
            "XML document type declarations that declare entities are not accepted",
        );
        let external = "<!DOCTYPE r [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><r>&xxe;</r>";
        check_bad_request(
            Some("application/xml"),
            external.as_bytes(),
            "XML document type declarations that declare entities are not accepted",
        );
    }

    #[test]
    fn xml_doctype_without_entities_is_ignored() {
        check(Some("application/xml"), "<!DOCTYPE note SYSTEM \"note.dtd\"><note>hi</note>", json!({"note": "hi"}));
    }

    #[test]
    fn xml_unknown_entities_are_errors() {
        check_bad_request(Some("application/xml"), b"<a>&nbsp;</a>", "malformed XML at byte 3: unknown entity &nbsp;");
        check_bad_request_starts_with(Some("application/xml"), b"<a b=\"&nbsp;\"/>", "malformed XML at byte 0: ");
    }

    #[test]
    fn xml_with_a_non_utf8_charset_is_rejected() {
        check_bad_request(Some("application/xml; charset=windows-1252"), b"<a/>", "unsupported charset windows-1252");
        check_bad_request(
            Some("application/xml"),
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>",
            "unsupported charset ISO-8859-1",
        );
        check(Some("application/xml"), "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a/>", json!({"a": ""}));
    }

    #[tokio::test]
    async fn parse_payload_runs_inside_an_async_caller() {
        let data = parse_payload(Some("application/json"), Bytes::from_static(br#"{"ok": true}"#), &LIMITS)
            .await
            .expect("valid JSON");
        assert_eq!(data, json!({"ok": true}));
    }
}

#[cfg(test)]
#[path = "payload_properties.rs"]
mod properties;
