//! Property tests for payload decoding, the part of ingress that reads bytes from anyone.
//!
//! Well-formed URL-encoded, multipart and XML bodies are generated from a value, so the decoded
//! JSON each must give is known without asking the decoder (round trips). Arbitrary and mutated
//! bodies must never panic, and every failure must be a body problem (a 400), never a 415 for a
//! supported type. Nesting deeper than the limits is refused, not a stack overflow.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{MAX_XML_DEPTH, PayloadError, PayloadLimits, media_kind, parse_payload};

const FORM: &str = "application/x-www-form-urlencoded";
const XML: &str = "application/xml";

/// Runs `parse_payload` to completion on a current-thread runtime (the body is in memory).
fn parse(content_type: Option<&str>, body: &[u8], max_file_bytes_kept: usize) -> Result<Value, PayloadError> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds")
        .block_on(parse_payload(content_type, Bytes::copy_from_slice(body), &PayloadLimits { max_file_bytes_kept }))
}

/// The expected object for fields in arrival order: a repeated name collects its values in an
/// array at the place it was first seen (the documented convention for forms and XML children).
fn grouped(fields: impl IntoIterator<Item = (String, Value)>) -> Map<String, Value> {
    let mut names: Vec<String> = Vec::new();
    let mut values: Vec<Vec<Value>> = Vec::new();
    for (name, value) in fields {
        match names.iter().position(|seen| *seen == name) {
            Some(index) => values[index].push(value),
            None => {
                names.push(name);
                values.push(vec![value]);
            }
        }
    }
    names
        .into_iter()
        .zip(values)
        .map(|(name, mut values)| {
            let value = if values.len() == 1 { values.remove(0) } else { Value::Array(values) };
            (name, value)
        })
        .collect()
}

/// Asserts the outcome of a body that may be anything: a value, or an error that is the body's
/// fault (400), never a 415 for a supported content type.
fn check_client_error_or_value(outcome: &Result<Value, PayloadError>, body: &[u8]) -> Result<(), TestCaseError> {
    if let Err(error) = outcome {
        prop_assert!(!error.is_unsupported_media_type(), "a supported type answered 415: {error}");
        prop_assert!(!error.to_string().is_empty());
        if let PayloadError::MalformedXml { position, .. } | PayloadError::XmlTooDeep { position } = error {
            prop_assert!(*position as usize <= body.len(), "{error} points past the {}-byte body", body.len());
        }
    }
    Ok(())
}

/// Changes to a well-formed body: the kinds of damage truncation, proxies and attackers cause.
#[derive(Debug, Clone)]
enum Mutation {
    Replace { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
    Repeat { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Replace { at, byte }),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                prop::sample::select(vec![
                    b"<".to_vec(),
                    b"</".to_vec(),
                    b"&".to_vec(),
                    b"&#".to_vec(),
                    b"<![CDATA[".to_vec(),
                    b"<!DOCTYPE x [<!ENTITY e \"e\">]>".to_vec(),
                    b"\r\n".to_vec(),
                    b"\r\n\r\n".to_vec(),
                    b"--".to_vec(),
                    b"\"".to_vec(),
                    b"%".to_vec(),
                    b"%zz".to_vec(),
                    b"\xff\xfe".to_vec(),
                ]),
            ]
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..16usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), 1..32usize).prop_map(|(at, len)| Mutation::Repeat { at, len }),
    ]
}

fn mutate(mut body: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let position = |at: usize, len: usize| if len == 0 { 0 } else { at % (len + 1) };
        match mutation {
            Mutation::Replace { at, byte } if !body.is_empty() => {
                let at = at % body.len();
                body[at] = *byte;
            }
            Mutation::Replace { .. } => {}
            Mutation::Insert { at, bytes } => {
                let at = position(*at, body.len());
                body.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete { at, len } => {
                let at = position(*at, body.len());
                let end = (at + len).min(body.len());
                body.drain(at..end);
            }
            Mutation::Truncate { at } => body.truncate(position(*at, body.len())),
            Mutation::Repeat { at, len } => {
                let at = position(*at, body.len());
                let end = (at + len).min(body.len());
                let slice = body[at..end].to_vec();
                body.splice(end..end, slice);
            }
        }
    }
    body
}

// ---------------------------------------------------------------------------
// application/x-www-form-urlencoded

/// How one byte of a form key or value is written: encoded the way browsers do, or
/// percent-encoded although it need not be (decoders must accept both).
fn form_encode(text: &str, escape_everything: bool, space_as_plus: bool) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        match byte {
            b' ' if space_as_plus => encoded.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' if !escape_everything => {
                encoded.push(byte as char)
            }
            _ => write!(encoded, "%{byte:02X}").expect("writing to a String cannot fail"),
        }
    }
    encoded
}

/// Keys and values that exercise the encoding: separators, `+`, `%`, brackets, non-ASCII.
fn form_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,6}",
        "[ &=+%;#\\[\\]a-c]{0,8}",
        "\\PC{0,10}",
        Just("tag[]".to_owned()),
        Just("user[name]".to_owned()),
    ]
}

// ---------------------------------------------------------------------------
// multipart/form-data

/// One part of a generated multipart body.
#[derive(Debug, Clone)]
enum Part {
    Text { name: String, value: String },
    File { name: String, file_name: String, content_type: Option<String>, content: Vec<u8> },
}

impl Part {
    fn name(&self) -> &str {
        match self {
            Part::Text { name, .. } | Part::File { name, .. } => name,
        }
    }

    fn content(&self) -> &[u8] {
        match self {
            Part::Text { value, .. } => value.as_bytes(),
            Part::File { content, .. } => content,
        }
    }

    /// The JSON the documented convention gives this part.
    fn expected(&self, max_file_bytes_kept: usize) -> Value {
        match self {
            Part::Text { value, .. } => Value::String(value.clone()),
            Part::File { file_name, content_type, content, .. } => {
                let kept = content.len() <= max_file_bytes_kept;
                json!({
                    "filename": file_name,
                    "contentType": content_type,
                    "size": content.len(),
                    "sha256": hex::encode(Sha256::digest(content)),
                    "content": if kept { Value::String(BASE64.encode(content)) } else { Value::Null },
                    "contentKept": kept,
                })
            }
        }
    }
}

/// Field and file names as a browser quotes them: anything printable but `"`, `\\` and line
/// breaks (which browsers escape), with parameter-like text mixed in. Left out: `filename`
/// after a space or `;` inside a quoted name. multer 3.1 looks for the `filename` parameter
/// without skipping quoted text, so `name=" filename=x"` makes a text field a file named `x`,
/// and `name=" filename"` hides a part's real file name (reported, not ours to fix).
fn disposition_name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[^\"\\\\\\p{C}]{0,6}",
            1 => prop::sample::select(vec![" name=", ";name=x", "filename", "; file", "name", "filename="]).prop_map(str::to_owned),
        ],
        0..3,
    )
    .prop_map(|pieces| pieces.concat())
    .prop_filter("no filename parameter inside the quotes", |name| {
        !name.match_indices("filename").any(|(at, _)| {
            name[..at].chars().next_back().is_some_and(|before| before.is_ascii_whitespace() || before == ';')
        })
    })
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        (disposition_name(), prop_oneof!["\\PC{0,40}", "[\r\n -]{0,12}"])
            .prop_map(|(name, value)| Part::Text { name, value }),
        (
            disposition_name(),
            disposition_name(),
            prop::option::of(prop::sample::select(vec!["text/plain", "application/octet-stream", "image/png"])),
            prop::collection::vec(any::<u8>(), 0..80),
        )
            .prop_map(|(name, file_name, content_type, content)| Part::File {
                name,
                file_name,
                content_type: content_type.map(str::to_owned),
                content,
            }),
    ]
}

/// A multipart body as RFC 7578 describes it, with an optional epilogue after the close.
fn multipart_body(boundary: &str, parts: &[Part], epilogue: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match part {
            Part::Text { name, .. } => {
                body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n").as_bytes());
            }
            Part::File { name, file_name, content_type, .. } => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\n").as_bytes(),
                );
                if let Some(content_type) = content_type {
                    body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
                }
            }
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(part.content());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--").as_bytes());
    if !epilogue.is_empty() {
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(epilogue.as_bytes());
    }
    body
}

/// Boundaries of RFC 2046 `bchars` (no space), long enough that generated content rarely holds them.
fn boundary() -> impl Strategy<Value = String> {
    "[0-9A-Za-z'()+_,./:=?-]{8,40}"
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

// ---------------------------------------------------------------------------
// XML

/// A piece of character data and how it is written.
#[derive(Debug, Clone)]
enum TextPiece {
    /// Written as is: no `<`, `&` or carriage return.
    Literal(String),
    /// A character reference, decimal or hexadecimal.
    CharRef(char, bool),
    /// One of the five predefined entities.
    Entity(&'static str, char),
    /// A CDATA section (without `]]>`).
    CData(String),
    /// A line break written `\r\n` or `\n`; XML 1.0 reads both as `\n`.
    LineBreak(bool),
}

impl TextPiece {
    fn write(&self, out: &mut String) {
        match self {
            TextPiece::Literal(text) => out.push_str(text),
            TextPiece::CharRef(ch, true) => write!(out, "&#x{:X};", *ch as u32).expect("String"),
            TextPiece::CharRef(ch, false) => write!(out, "&#{};", *ch as u32).expect("String"),
            TextPiece::Entity(name, _) => write!(out, "&{name};").expect("String"),
            TextPiece::CData(text) => write!(out, "<![CDATA[{text}]]>").expect("String"),
            TextPiece::LineBreak(true) => out.push_str("\r\n"),
            TextPiece::LineBreak(false) => out.push('\n'),
        }
    }

    fn decoded(&self) -> String {
        match self {
            TextPiece::Literal(text) | TextPiece::CData(text) => text.clone(),
            TextPiece::CharRef(ch, _) | TextPiece::Entity(_, ch) => ch.to_string(),
            TextPiece::LineBreak(_) => "\n".to_owned(),
        }
    }
}

const ENTITIES: [(&str, char); 5] = [("lt", '<'), ("gt", '>'), ("amp", '&'), ("quot", '"'), ("apos", '\'')];

/// A character XML 1.0 allows (`Char` production), excluding the carriage return.
fn xml_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range(' ', '~'),
        1 => prop::sample::select(vec!['\t', '\n', 'é', '€', '\u{a0}', '\u{2028}', '😀', '\u{fffd}']),
        1 => prop::char::range('\u{a0}', '\u{d7ff}'),
        1 => prop::char::range('\u{10000}', '\u{10ffff}'),
    ]
}

fn text_piece(in_attribute: bool) -> impl Strategy<Value = TextPiece> {
    let literal = prop::collection::vec(xml_char(), 1..12).prop_map(move |chars| {
        let text: String = chars.into_iter().collect();
        let text = text.replace(['<', '&'], "").replace("]]>", "");
        // Attribute values keep tabs and line breaks only as references: XML would normalize them.
        let text = if in_attribute { text.replace(['"', '\t', '\n'], "") } else { text };
        TextPiece::Literal(text)
    });
    let char_ref = (xml_char(), any::<bool>()).prop_map(|(ch, hex)| TextPiece::CharRef(ch, hex));
    let entity = prop::sample::select(ENTITIES.to_vec()).prop_map(|(name, ch)| TextPiece::Entity(name, ch));
    if in_attribute {
        prop_oneof![4 => literal, 1 => char_ref, 1 => entity].boxed()
    } else {
        let cdata = prop::collection::vec(xml_char(), 0..12).prop_map(|chars| {
            let text: String = chars.into_iter().collect();
            TextPiece::CData(text.replace("]]>", ""))
        });
        let line_break = any::<bool>().prop_map(TextPiece::LineBreak);
        prop_oneof![4 => literal, 1 => char_ref, 1 => entity, 1 => cdata, 1 => line_break].boxed()
    }
}

/// An XML `Name`, sometimes with a namespace prefix (kept as written); often one of a few
/// common names, so that siblings repeat.
fn xml_name() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(vec!["item", "a", "p:item"]).prop_map(str::to_owned),
        1 => ("(p:|soap:)?", "[A-Za-z_][A-Za-z0-9_.-]{0,6}").prop_map(|(prefix, local)| format!("{prefix}{local}")),
    ]
}

#[derive(Debug, Clone)]
enum Node {
    Element(Element),
    Text(Vec<TextPiece>),
    Comment(String),
}

#[derive(Debug, Clone)]
struct Element {
    name: String,
    attributes: Vec<(String, Vec<TextPiece>, bool)>,
    children: Vec<Node>,
    self_closing: bool,
}

impl Element {
    fn write(&self, out: &mut String) {
        write!(out, "<{}", self.name).expect("String");
        for (name, value, single_quoted) in &self.attributes {
            let quote = if *single_quoted { '\'' } else { '"' };
            write!(out, " {name}={quote}").expect("String");
            for piece in value {
                match piece {
                    TextPiece::Literal(text) if *single_quoted => out.push_str(&text.replace('\'', "&apos;")),
                    piece => piece.write(out),
                }
            }
            out.push(quote);
        }
        if self.children.is_empty() && self.self_closing {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(element) => element.write(out),
                Node::Text(pieces) => pieces.iter().for_each(|piece| piece.write(out)),
                Node::Comment(text) => write!(out, "<!--{text}-->").expect("String"),
            }
        }
        write!(out, "</{}>", self.name).expect("String");
    }

    /// The documented convention: attributes as `@name`, then children (repeated names as
    /// arrays), then the trimmed text as `#text`; an element with only text is that text.
    fn expected(&self) -> Value {
        let text: String = self
            .children
            .iter()
            .filter_map(|child| match child {
                Node::Text(pieces) => Some(pieces.iter().map(TextPiece::decoded).collect::<String>()),
                Node::Element(_) | Node::Comment(_) => None,
            })
            .collect();
        let attributes = self.attributes.iter().map(|(name, value, _)| {
            (format!("@{name}"), Value::String(value.iter().map(TextPiece::decoded).collect()))
        });
        let children = self.children.iter().filter_map(|child| match child {
            Node::Element(element) => Some((element.name.clone(), element.expected())),
            Node::Text(_) | Node::Comment(_) => None,
        });
        let mut fields = grouped(attributes.chain(children));
        if fields.is_empty() {
            return Value::String(text);
        }
        if !text.trim().is_empty() {
            fields.insert("#text".to_owned(), Value::String(text.trim().to_owned()));
        }
        Value::Object(fields)
    }
}

fn attributes() -> impl Strategy<Value = Vec<(String, Vec<TextPiece>, bool)>> {
    prop::collection::vec((xml_name(), prop::collection::vec(text_piece(true), 0..4), any::<bool>()), 0..4).prop_map(
        |mut attributes| {
            // Attribute names are unique within an element.
            let mut seen = Vec::new();
            attributes.retain(|(name, _, _)| {
                let fresh = !seen.contains(name);
                seen.push(name.clone());
                fresh
            });
            attributes
        },
    )
}

fn element() -> impl Strategy<Value = Element> {
    let leaf = (xml_name(), attributes(), prop::collection::vec(text_piece(false), 0..4), any::<bool>()).prop_map(
        |(name, attributes, text, self_closing)| {
            let children = if text.is_empty() { Vec::new() } else { vec![Node::Text(text)] };
            Element { name, attributes, children, self_closing }
        },
    );
    leaf.prop_recursive(4, 40, 5, |inner| {
        let child = prop_oneof![
            3 => inner.prop_map(Node::Element),
            2 => prop::collection::vec(text_piece(false), 1..4).prop_map(Node::Text),
            1 => "[a-z ]{0,8}".prop_map(Node::Comment),
        ];
        (xml_name(), attributes(), prop::collection::vec(child, 0..5), any::<bool>())
            .prop_map(|(name, attributes, children, self_closing)| Element { name, attributes, children, self_closing })
    })
}

/// What may come before the root element: BOM, declaration, DOCTYPE without entities,
/// comments, processing instructions, whitespace.
fn prolog() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        prop::sample::select(vec![
            "",
            "<?xml version=\"1.0\"?>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<?xml version='1.0' encoding='us-ascii' standalone='yes'?>\n",
        ]),
        prop::sample::select(vec!["", "\n", "<!-- generated -->\n", "<!DOCTYPE r SYSTEM \"r.dtd\">", "<?pi x?>"]),
    )
        .prop_map(|(bom, declaration, misc)| format!("{}{declaration}{misc}", if bom { "\u{feff}" } else { "" }))
}

fn xml_document() -> impl Strategy<Value = (String, Value)> {
    (prolog(), element(), prop::sample::select(vec!["", "\n", "  \n", "<!-- end -->"])).prop_map(
        |(prolog, root, trailer)| {
            let mut text = prolog;
            root.write(&mut text);
            text.push_str(trailer);
            let mut document = Map::new();
            document.insert(root.name.clone(), root.expected());
            (text, Value::Object(document))
        },
    )
}

/// Element names for nesting tests, opened with or without attributes.
fn nested_xml(depth: usize, innermost_empty: bool) -> String {
    let mut text = String::new();
    let levels = if innermost_empty { depth - 1 } else { depth };
    for level in 0..levels {
        write!(text, "<e{} n=\"{level}\">", level % 7).expect("String");
    }
    if innermost_empty {
        text.push_str("<leaf/>");
    }
    for level in (0..levels).rev() {
        write!(text, "</e{}>", level % 7).expect("String");
    }
    text
}

// ---------------------------------------------------------------------------
// JSON

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Quarters are exact in binary, so they survive printing and parsing.
        (-4_000_000..4_000_000i32).prop_map(|quarters| Value::from(f64::from(quarters) / 4.0)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z\\\\\"]{0,4}", inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------
// Content types

fn content_type_header() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("application/json".to_owned()),
            Just("application/x-www-form-urlencoded".to_owned()),
            Just("multipart/form-data".to_owned()),
            Just("text/xml".to_owned()),
            Just("application/vnd.a+xml".to_owned()),
            Just("application/+json".to_owned()),
            Just(";".to_owned()),
            Just(" ".to_owned()),
            Just("\t".to_owned()),
            Just("=".to_owned()),
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            Just("boundary=".to_owned()),
            Just("charset=".to_owned()),
            Just("utf-8".to_owned()),
            Just("/".to_owned()),
            "[ -~]{0,6}",
            "\\PC{0,3}",
        ],
        0..8,
    )
    .prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A form encoded as browsers do (or with every byte escaped) decodes to its fields, in
    /// first-seen order, repeated keys as arrays.
    #[test]
    fn form_bodies_decode_to_their_fields(
        pairs in prop::collection::vec((form_text(), form_text(), any::<bool>()), 1..8),
        escape_everything in any::<bool>(),
        space_as_plus in any::<bool>(),
        stray_separators in any::<bool>(),
    ) {
        let separator = if stray_separators { "&&" } else { "&" };
        let body = pairs
            .iter()
            .map(|(key, value, bare)| {
                let key = form_encode(key, escape_everything, space_as_plus);
                // A key without `=` is a field with an empty value.
                if value.is_empty() && !key.is_empty() && *bare { key } else { format!("{key}={}", form_encode(value, escape_everything, space_as_plus)) }
            })
            .collect::<Vec<_>>()
            .join(separator);
        let expected = grouped(pairs.iter().map(|(key, value, _)| (key.clone(), Value::String(value.clone()))));
        let decoded = parse(Some(FORM), body.as_bytes(), 0).map_err(|error| TestCaseError::fail(format!("{body:?}: {error}")))?;
        prop_assert_eq!(decoded.to_string(), Value::Object(expected).to_string(), "body {:?}", body);
    }

    /// Any bytes at all are a form: decoding never fails and gives strings or arrays of strings.
    #[test]
    fn any_bytes_decode_as_a_form(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let decoded = parse(Some(FORM), &body, 0).map_err(|error| TestCaseError::fail(error.to_string()))?;
        let fields = decoded.as_object().ok_or_else(|| TestCaseError::fail("not an object"))?;
        for value in fields.values() {
            let strings = match value {
                Value::Array(items) => items.len() >= 2 && items.iter().all(Value::is_string),
                other => other.is_string(),
            };
            prop_assert!(strings, "{}", decoded);
        }
    }

    /// A multipart body decodes to its text fields as strings and its files as descriptions
    /// (content kept as base64 up to the limit), repeated names as arrays.
    #[test]
    fn multipart_bodies_decode_to_their_parts(
        boundary in boundary(),
        parts in prop::collection::vec(part(), 0..6),
        epilogue in prop::sample::select(vec!["", "\r\n", "trailing text"]),
        max_file_bytes_kept in 0..64usize,
    ) {
        let delimiter = format!("--{boundary}");
        prop_assume!(parts.iter().all(|part| !contains(part.content(), delimiter.as_bytes())));
        let body = multipart_body(&boundary, &parts, epilogue);
        let content_type = format!("multipart/form-data; boundary=\"{boundary}\"");
        let expected = grouped(parts.iter().map(|part| (part.name().to_owned(), part.expected(max_file_bytes_kept))));
        let decoded = parse(Some(&content_type), &body, max_file_bytes_kept)
            .map_err(|error| TestCaseError::fail(format!("{error}; body {:?}", String::from_utf8_lossy(&body))))?;
        prop_assert_eq!(decoded.to_string(), Value::Object(expected).to_string());
    }

    /// Damaged multipart bodies never panic and fail only as bad requests.
    #[test]
    fn mutated_multipart_bodies_fail_as_bad_requests(
        boundary in boundary(),
        parts in prop::collection::vec(part(), 1..4),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let body = mutate(multipart_body(&boundary, &parts, ""), &mutations);
        let outcome = parse(Some(&format!("multipart/form-data; boundary=\"{boundary}\"")), &body, 16);
        check_client_error_or_value(&outcome, &body)?;
    }

    /// Random bytes with a multipart content type never panic and fail only as bad requests.
    #[test]
    fn random_multipart_bodies_fail_as_bad_requests(
        boundary in "[a-z-]{1,4}",
        body in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'-'), Just(b'\r'), Just(b'\n')], 0..256),
    ) {
        let outcome = parse(Some(&format!("multipart/form-data; boundary={boundary}")), &body, 16);
        check_client_error_or_value(&outcome, &body)?;
    }

    /// A well-formed XML document decodes by the documented convention (`@attr`, `#text`,
    /// repeated children as arrays, references and CDATA decoded, line ends normalized).
    #[test]
    fn xml_documents_decode_by_the_convention((document, expected) in xml_document()) {
        let decoded = parse(Some(XML), document.as_bytes(), 0)
            .map_err(|error| TestCaseError::fail(format!("{error}; document {document:?}")))?;
        prop_assert_eq!(decoded.to_string(), expected.to_string(), "document {:?}", document);
    }

    /// Damaged XML never panics; a failure is a bad request whose position lies in the body.
    #[test]
    fn mutated_xml_fails_as_a_bad_request(
        (document, _) in xml_document(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let body = mutate(document.into_bytes(), &mutations);
        check_client_error_or_value(&parse(Some(XML), &body, 0), &body)?;
    }

    /// JSON bodies too: damaged JSON is a bad request, never a panic.
    #[test]
    fn mutated_json_fails_as_a_bad_request(
        expected in json_value(),
        mutations in prop::collection::vec(mutation(), 0..4),
    ) {
        let body = mutate(expected.to_string().into_bytes(), &mutations);
        let outcome = parse(Some("application/json"), &body, 0);
        check_client_error_or_value(&outcome, &body)?;
        if mutations.is_empty() {
            prop_assert_eq!(outcome.ok(), Some(expected));
        }
    }

    /// The 415 decision taken on the header alone (before the body is read) is the one the
    /// full decode takes, for any header text; nothing panics.
    #[test]
    fn the_content_type_alone_decides_415(
        header in content_type_header(),
        body in prop_oneof![Just(b"{}".to_vec()), Just(b"a=1".to_vec()), Just(b"<a/>".to_vec()), prop::collection::vec(any::<u8>(), 0..32)],
    ) {
        let unsupported_by_header = media_kind(Some(&header)).is_err();
        let outcome = parse(Some(&header), &body, 0);
        let unsupported_by_decode = outcome.as_ref().err().is_some_and(PayloadError::is_unsupported_media_type);
        prop_assert_eq!(unsupported_by_header, unsupported_by_decode, "header {:?}: {:?}", header, outcome);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// XML nested up to the limit decodes; one level deeper is refused as too deep.
    #[test]
    fn xml_nesting_is_refused_past_the_limit(
        depth in prop_oneof![MAX_XML_DEPTH - 2..=MAX_XML_DEPTH + 2, 1..=2 * MAX_XML_DEPTH],
        innermost_empty in any::<bool>(),
    ) {
        let document = nested_xml(depth, innermost_empty);
        let outcome = parse(Some(XML), document.as_bytes(), 0);
        if depth <= MAX_XML_DEPTH {
            prop_assert!(outcome.is_ok(), "depth {}: {:?}", depth, outcome.err());
        } else {
            let too_deep = matches!(outcome, Err(PayloadError::XmlTooDeep { .. }));
            prop_assert!(too_deep, "depth {}: {:?}", depth, outcome);
        }
    }

    /// JSON accepts at most 127 nested arrays or objects; deeper is a bad request.
    #[test]
    fn json_nesting_is_refused_past_the_limit(depth in prop_oneof![125..=130usize, 1..=256usize], objects in any::<bool>()) {
        let (open, close) = if objects { ("{\"k\":", "}") } else { ("[", "]") };
        let document = format!("{}0{}", open.repeat(depth), close.repeat(depth));
        let outcome = parse(Some("application/json"), document.as_bytes(), 0);
        if depth <= 127 {
            prop_assert!(outcome.is_ok(), "depth {}: {:?}", depth, outcome.err());
        } else {
            let refused = matches!(&outcome, Err(error @ PayloadError::MalformedJson { .. }) if error.to_string().contains("recursion limit"));
            prop_assert!(refused, "depth {}: {:?}", depth, outcome);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Nesting far past the limits (hundreds of thousands of levels) is refused, not a stack
    /// overflow: the decoders stop counting at the limit.
    #[test]
    fn very_deep_nesting_is_refused_without_overflowing(depth in 100_000..300_000usize) {
        let xml = "<a>".repeat(depth);
        let too_deep = matches!(parse(Some(XML), xml.as_bytes(), 0), Err(PayloadError::XmlTooDeep { .. }));
        prop_assert!(too_deep);
        let json = "[".repeat(depth);
        let refused = matches!(parse(Some("application/json"), json.as_bytes(), 0), Err(PayloadError::MalformedJson { .. }));
        prop_assert!(refused);
    }
}
