//! What an email carries, as JSON: `<script type="application/ld+json">` blocks in HTML parts,
//! JSON objects and arrays written in plain-text parts, and JSON attachments, in every part of
//! the message including forwarded ones. Also the message's own facts (from, to, subject,
//! message id, date, attachments) for the event's `source`.
//!
//! What looks like data but does not become a value (a JSON-LD block that does not parse, a
//! `.json` attachment that is not JSON, a forwarded message nested too deep) is never dropped
//! silently: each is recorded as a [`MailSkipped`], with its MIME part, its block and the
//! parser's error, and the event keeps the list (`source.mail.skipped`).
//!
//! Pure: bytes in, values out. MIME (nested multiparts, quoted-printable, base64, charsets) is
//! mail-parser's (its one `debug_assert!` that malformed mail reaches, found by fuzzing, is
//! caught in [`parse`], so debug builds refuse such mail as release builds read it: no panic); HTML is read by lol_html, streaming, and only when the part mentions
//! `ld+json` at all.

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::cell::RefCell;

use crate::event::{MailAttachment, MailFacts, MailPlace, MailSkipped, SkipReason, SkippedKind};

/// Which JSON written in plain-text parts counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextJson {
    /// Plain text is not searched.
    None,
    /// The first JSON object or array of each plain-text part.
    #[default]
    First,
    /// Every JSON object or array of each plain-text part.
    All,
}

/// Where a value was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A `<script type="application/ld+json">` block; `key` is its `data-key` attribute.
    JsonLd { key: Option<String> },
    /// JSON written in a plain-text part.
    Text,
    /// A JSON attachment.
    Attachment { name: Option<String> },
}

/// One JSON value found in the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub value: Value,
    pub origin: Origin,
    /// Its part (and block, or attachment name): where to say it was, should a hook leave it out.
    pub place: MailPlace,
}

/// Everything extracted from one message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    pub found: Vec<Found>,
    pub facts: MailFacts,
    /// What looked like data but became no value, and why: kept with the events, and the
    /// explanation of a refusal when nothing was found.
    pub skipped: Skips,
}

/// How many skipped things an event lists; more are only counted, so that a message of many
/// broken blocks cannot make its events large.
pub const MAX_SKIPPED_LISTED: usize = 16;

/// Skipped things, listed up to [`MAX_SKIPPED_LISTED`] and counted beyond.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Skips {
    pub listed: Vec<MailSkipped>,
    pub not_listed: usize,
}

impl Skips {
    pub fn push(&mut self, skipped: MailSkipped) {
        if self.listed.len() < MAX_SKIPPED_LISTED {
            self.listed.push(skipped);
        } else {
            self.not_listed += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.not_listed == 0
    }

    /// One sentence for each listed, and how many more there were.
    pub fn describe(&self) -> Vec<String> {
        let mut sentences: Vec<String> = self.listed.iter().map(describe).collect();
        if self.not_listed > 0 {
            sentences.push(format!("{} more skipped", self.not_listed));
        }
        sentences
    }
}

/// A skipped thing as a sentence: `JSON-LD block 3 of part 1 is not JSON: EOF while parsing...`.
pub fn describe(skipped: &MailSkipped) -> String {
    let MailPlace { part, block, name, .. } = &skipped.place;
    let what = match skipped.kind {
        SkippedKind::JsonLd => format!("JSON-LD block {} of part {part}", block.unwrap_or_default()),
        SkippedKind::Text => format!("the plain text of part {part}"),
        SkippedKind::Attachment => format!("attachment {:?} (part {part})", name.as_deref().unwrap_or("unnamed")),
        SkippedKind::Html => format!("the HTML of part {part}"),
        SkippedKind::ForwardedMessage => format!("the message forwarded in part {part}"),
    };
    let why = match skipped.reason {
        SkipReason::NotJson => "is not JSON",
        SkipReason::NoObject => "holds no JSON object or array",
        SkipReason::Unreadable => "could not be read",
        SkipReason::KeyMissing => "does not carry the hook's key",
        SkipReason::NestedTooDeep => "is nested too deep to be searched",
        SkipReason::TooManyFailedAttempts => "was not searched to its end",
    };
    match &skipped.error {
        Some(error) => format!("{what} {why}: {error}"),
        None => format!("{what} {why}"),
    }
}

/// Why a message could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("the message is not a readable RFC 5322 message")]
    NotAMessage,
}

/// A failed JSON attempt in plain text costs a parse up to the failure; after this many in one
/// part the rest of the part is not searched, so no text makes extraction quadratic.
const FAILED_TEXT_ATTEMPTS_PER_PART: usize = 16;

/// Forwarded messages inside forwarded messages: deeper ones are not searched.
const MAX_MESSAGE_DEPTH: usize = 8;

/// `raw` parsed by mail-parser. mail-parser 0.11.9 has a `debug_assert!` ("Invalid part ID, could
/// not find multipart") that a malformed forwarded message reaches; release builds skip it and
/// recover the message, debug builds would panic the session's task, so a panic while parsing
/// reads as "not a message" here.
fn parse(raw: &[u8]) -> Option<Message<'_>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| MessageParser::default().parse(raw))).ok().flatten()
}

/// Reads `raw` (a whole RFC 5322 message) and extracts every JSON value in it.
pub fn extract(raw: &[u8], text_json: TextJson) -> Result<Extracted, ExtractError> {
    let message = parse(raw).ok_or(ExtractError::NotAMessage)?;
    if message.parts.is_empty() {
        return Err(ExtractError::NotAMessage);
    }
    let mut extracted = Extracted { facts: facts(&message), ..Extracted::default() };
    walk(&message, text_json, 0, "", &mut extracted);
    // The same value sent twice in one message (a JSON-LD block repeated in the text
    // alternative, say) is one value.
    let mut unique: Vec<Found> = Vec::with_capacity(extracted.found.len());
    for found in std::mem::take(&mut extracted.found) {
        if !unique.iter().any(|kept| kept.value == found.value) {
            unique.push(found);
        }
    }
    extracted.found = unique;
    Ok(extracted)
}

/// One part of a message, as a reader of the message sees it: where it is, what it is, how big.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartOutline {
    /// The part's number, as [`MailPlace::part`] numbers it (`1.2`); a multipart's own number
    /// is its children's prefix (empty for the message's root).
    pub part: String,
    pub content_type: Option<String>,
    /// An attachment's file name.
    pub name: Option<String>,
    /// The decoded content's size in bytes (0 for a multipart).
    pub size: usize,
    /// The start of a text part, at most [`OUTLINE_EXCERPT_CHARS`] characters.
    pub excerpt: Option<String>,
    /// How deep it is nested (0 for the root's children in a multipart message).
    pub depth: usize,
}

/// How much of a text part an outline shows.
pub const OUTLINE_EXCERPT_CHARS: usize = 200;
/// How many parts an outline lists: a message of more is cut there.
pub const OUTLINE_MAX_PARTS: usize = 64;

/// The parts of `raw` (a whole RFC 5322 message) in message order, forwarded messages' parts
/// under their own number, up to [`OUTLINE_MAX_PARTS`]; `None` when it is not a message.
pub fn outline(raw: &[u8]) -> Option<Vec<PartOutline>> {
    let message = parse(raw)?;
    if message.parts.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    outline_into(&message, "", 0, &mut parts);
    Some(parts)
}

fn outline_into(message: &Message<'_>, prefix: &str, depth: usize, parts: &mut Vec<PartOutline>) {
    let numbers = part_numbers(message, prefix);
    for (id, part) in message.parts.iter().enumerate() {
        if parts.len() >= OUTLINE_MAX_PARTS {
            return;
        }
        let number = numbers.get(id).cloned().unwrap_or_default();
        let excerpt = match &part.body {
            PartType::Text(text) | PartType::Html(text) => {
                Some(text.chars().take(OUTLINE_EXCERPT_CHARS).collect::<String>())
            }
            _ => None,
        };
        let size = match &part.body {
            PartType::Multipart(_) => 0,
            _ => part.contents().len(),
        };
        parts.push(PartOutline {
            depth: depth + number.matches('.').count(),
            content_type: media_type(part),
            name: part.attachment_name().map(str::to_owned),
            size,
            excerpt,
            part: number.clone(),
        });
        if let PartType::Message(forwarded) = &part.body
            && depth < MAX_MESSAGE_DEPTH
        {
            outline_into(forwarded, &number, depth + 1, parts);
        }
    }
}

fn facts(message: &Message<'_>) -> MailFacts {
    MailFacts {
        from: message.from().and_then(|from| from.first()).and_then(|from| from.address()).map(str::to_owned),
        to: message
            .to()
            .map(|to| to.iter().filter_map(|a| a.address()).map(str::to_owned).collect())
            .unwrap_or_default(),
        subject: message.subject().map(str::to_owned),
        message_id: message.message_id().map(str::to_owned),
        date: message.date().map(|date| date.to_rfc3339()),
        attachments: Vec::new(),
    }
}

/// Extracts from `message`, a forwarded one at `depth` (0: the message itself) whose parts are
/// numbered under `prefix` (empty for the message itself).
fn walk(message: &Message<'_>, text_json: TextJson, depth: usize, prefix: &str, extracted: &mut Extracted) {
    let numbers = part_numbers(message, prefix);
    let place_of = |id: u32, part: &MessagePart<'_>| MailPlace {
        part: numbers.get(id as usize).cloned().unwrap_or_default(),
        content_type: media_type(part),
        block: None,
        name: None,
    };
    for &id in &message.html_body {
        if let Some(part) = message.part(id)
            && let PartType::Html(html) = &part.body
        {
            json_ld_blocks(html, place_of(id, part), extracted);
        }
    }
    if text_json != TextJson::None {
        for &id in &message.text_body {
            if let Some(part) = message.part(id)
                && let PartType::Text(text) = &part.body
            {
                json_in_text(text, text_json, place_of(id, part), extracted);
            }
        }
    }
    for &id in &message.attachments {
        let Some(part) = message.part(id) else { continue };
        let contents = part.contents();
        let name = part.attachment_name().map(str::to_owned);
        let place = MailPlace { name: name.clone(), ..place_of(id, part) };
        if depth == 0 {
            // A forwarded message is an attachment too: described like any other.
            extracted.facts.attachments.push(MailAttachment {
                name: name.clone(),
                content_type: place.content_type.clone(),
                size: contents.len(),
                sha256: hex::encode(Sha256::digest(contents)),
            });
        }
        if let PartType::Message(forwarded) = &part.body {
            if depth < MAX_MESSAGE_DEPTH {
                walk(forwarded, text_json, depth + 1, &place.part, extracted);
            } else {
                extracted.skipped.push(MailSkipped {
                    kind: SkippedKind::ForwardedMessage,
                    place,
                    reason: SkipReason::NestedTooDeep,
                    error: Some(format!("forwarded messages are searched {MAX_MESSAGE_DEPTH} deep")),
                });
            }
            continue;
        }
        let content_type = place.content_type.as_deref();
        let lower_name = name.as_deref().map(str::to_ascii_lowercase).unwrap_or_default();
        let is_json_ld = content_type == Some("application/ld+json") || lower_name.ends_with(".jsonld");
        let is_json = is_json_ld || content_type == Some("application/json") || lower_name.ends_with(".json");
        if !is_json {
            continue;
        }
        let text = attachment_text(part, contents);
        let skip = |reason, error| MailSkipped { kind: SkippedKind::Attachment, place: place.clone(), reason, error };
        match serde_json::from_str::<Value>(text.trim_start_matches('\u{feff}').trim()) {
            Ok(value) if is_json_ld => {
                let items = json_ld_items(value);
                if items.is_empty() {
                    extracted.skipped.push(skip(SkipReason::NoObject, None));
                }
                for item in items {
                    extracted.found.push(Found {
                        value: item,
                        origin: Origin::Attachment { name: name.clone() },
                        place: place.clone(),
                    });
                }
            }
            Ok(value) if value.is_object() || value.is_array() => {
                extracted.found.push(Found { value, origin: Origin::Attachment { name }, place })
            }
            Ok(_) => extracted.skipped.push(skip(SkipReason::NoObject, None)),
            Err(error) => extracted.skipped.push(skip(SkipReason::NotJson, Some(error.to_string()))),
        }
    }
}

/// An attachment's contents as text: in the charset its `Content-Type` declares (mail-parser
/// decodes only `text/*` parts; an `application/json` part arrives as bytes), else as UTF-8.
fn attachment_text<'a>(part: &MessagePart<'_>, contents: &'a [u8]) -> Cow<'a, str> {
    let declared = part
        .content_type()
        .and_then(|content_type| content_type.attribute("charset"))
        .and_then(|charset| mail_parser::decoders::charsets::map::charset_decoder(charset.as_bytes()));
    match (&part.body, declared) {
        (PartType::Binary(_) | PartType::InlineBinary(_), Some(decode)) => Cow::Owned(decode(contents)),
        _ => String::from_utf8_lossy(contents),
    }
}

/// Each part's number as IMAP numbers parts (RFC 3501, section 6.4.5), under `prefix` (a
/// forwarded message's own number, or empty), indexed by part id: a single-part message's body
/// is `1`; a multipart's children are `1`, `2`, ..., theirs `2.1`, `2.2`, ... A multipart
/// message's root gets the prefix itself. Iterative, so no nesting can exhaust the stack.
fn part_numbers(message: &Message<'_>, prefix: &str) -> Vec<String> {
    let under = |number: &str, index: usize| {
        if number.is_empty() { (index + 1).to_string() } else { format!("{number}.{}", index + 1) }
    };
    let mut numbers = vec![String::new(); message.parts.len()];
    match message.parts.first().map(|part| &part.body) {
        Some(PartType::Multipart(_)) => numbers[0] = prefix.to_owned(),
        Some(_) => {
            numbers[0] = under(prefix, 0);
            return numbers;
        }
        None => return numbers,
    }
    let mut visited = vec![false; message.parts.len()];
    let mut pending = vec![0_usize];
    while let Some(id) = pending.pop() {
        if std::mem::replace(&mut visited[id], true) {
            continue;
        }
        let Some(PartType::Multipart(children)) = message.parts.get(id).map(|part| &part.body) else { continue };
        for (index, &child) in children.iter().enumerate() {
            let child = child as usize;
            if child < numbers.len() && !visited[child] {
                numbers[child] = under(&numbers[id], index);
                pending.push(child);
            }
        }
    }
    numbers
}

/// A part's media type in lower case (`text/html`), when it declares one.
fn media_type(part: &MessagePart<'_>) -> Option<String> {
    part.content_type().map(|content_type| {
        match content_type.subtype() {
            Some(subtype) => format!("{}/{subtype}", content_type.ctype()),
            None => content_type.ctype().to_owned(),
        }
        .to_ascii_lowercase()
    })
}

/// Every `<script type="application/ld+json">` block of an HTML document, parsed.
///
/// A block's `type` names `ld+json` in its own letters (an entity for the `+` is not read), so
/// no block begins after the last `ld+json` in the document: the parser reads the document up
/// to the first `</script>` after it, and further only while a block is still open. Order mails
/// carry their JSON-LD in the head, and their tables after it are not read at all.
fn json_ld_blocks(html: &str, place: MailPlace, extracted: &mut Extracted) {
    let Some(last_mention_end) = last_ld_json_end(html.as_bytes()) else {
        return;
    };
    read_json_ld_blocks(html, end_of_script_after(html.as_bytes(), last_mention_end), place, extracted);
}

/// [`json_ld_blocks`] reading `html` up to `read_through`, and further only while a block is open.
fn read_json_ld_blocks(html: &str, read_through: usize, place: MailPlace, extracted: &mut Extracted) {
    struct Block {
        key: Option<String>,
        text: String,
    }
    let current: RefCell<Option<Block>> = RefCell::new(None);
    let blocks: RefCell<Vec<Block>> = RefCell::new(Vec::new());
    let settings = lol_html::Settings::new()
        .append_element_content_handler(lol_html::element!("script", |element| {
            let media_type = element.get_attribute("type").unwrap_or_default();
            let media_type = media_type.split(';').next().unwrap_or_default().trim();
            let key = element
                .get_attribute("data-key")
                .or_else(|| element.get_attribute("data-hookgate-key"))
                .map(|key| html_escape::decode_html_entities(&key).into_owned());
            *current.borrow_mut() =
                media_type.eq_ignore_ascii_case("application/ld+json").then(|| Block { key, text: String::new() });
            Ok(())
        }))
        .append_element_content_handler(lol_html::text!("script", |chunk| {
            let mut current = current.borrow_mut();
            if let Some(block) = current.as_mut() {
                block.text.push_str(chunk.as_str());
                if chunk.last_in_text_node() {
                    blocks.borrow_mut().extend(current.take());
                }
            }
            Ok(())
        }));
    let mut rewriter = lol_html::HtmlRewriter::new(settings, |_: &[u8]| {});
    let (first, rest) = html.as_bytes().split_at(read_through);
    let result = rewriter
        .write(first)
        .and_then(|()| if current.borrow().is_some() { rewriter.write(rest) } else { Ok(()) })
        .and_then(|()| rewriter.end());
    if let Err(error) = result {
        extracted.skipped.push(MailSkipped {
            kind: SkippedKind::Html,
            place: place.clone(),
            reason: SkipReason::Unreadable,
            error: Some(error.to_string()),
        });
    }
    for (index, block) in blocks.into_inner().into_iter().enumerate() {
        let place = MailPlace { block: Some(index + 1), ..place.clone() };
        let skip = |reason, error| MailSkipped { kind: SkippedKind::JsonLd, place: place.clone(), reason, error };
        match parse_json_ld_text(&block.text) {
            Ok(value) => {
                let items = json_ld_items(value);
                if items.is_empty() {
                    extracted.skipped.push(skip(SkipReason::NoObject, None));
                }
                for item in items {
                    extracted.found.push(Found {
                        value: item,
                        origin: Origin::JsonLd { key: block.key.clone() },
                        place: place.clone(),
                    });
                }
            }
            Err(error) => extracted.skipped.push(skip(SkipReason::NotJson, Some(error.to_string()))),
        }
    }
}

/// Where the last `ld+json` (in any letter case) in `html` ends; `None` when there is none, and
/// the document is not parsed at all.
fn last_ld_json_end(html: &[u8]) -> Option<usize> {
    memchr::memrchr_iter(b'+', html)
        .find(|&plus| plus >= 2 && html.len() >= plus + 5 && html[plus - 2..plus + 5].eq_ignore_ascii_case(b"ld+json"))
        .map(|plus| plus + 5)
}

/// The end of the first `</script ...>` (in any letter case) at or after `from`; the end of
/// `html` when there is none.
fn end_of_script_after(html: &[u8], from: usize) -> usize {
    const END_TAG: &[u8] = b"</script";
    memchr::memmem::find_iter(&html[from..], b"</")
        .map(|at| from + at)
        .find(|&at| html.len() >= at + END_TAG.len() && html[at..at + END_TAG.len()].eq_ignore_ascii_case(END_TAG))
        .and_then(|at| memchr::memchr(b'>', &html[at..]).map(|close| at + close + 1))
        .unwrap_or(html.len())
}

/// A script block's text as JSON: HTML comment and CDATA wrappers removed, and HTML entities
/// decoded when the text does not parse without (some mail tools escape script content).
fn parse_json_ld_text(text: &str) -> Result<Value, serde_json::Error> {
    let mut inner = text.trim().trim_start_matches('\u{feff}').trim();
    for (open, close) in [("<!--", "-->"), ("//<![CDATA[", "//]]>"), ("<![CDATA[", "]]>")] {
        if let Some(rest) = inner.strip_prefix(open) {
            inner = rest.trim();
            if let Some(rest) = inner.strip_suffix(close) {
                inner = rest.trim();
            }
        }
    }
    match serde_json::from_str(inner) {
        Ok(value) => Ok(value),
        Err(error) if inner.contains('&') => {
            serde_json::from_str(&html_escape::decode_html_entities(inner)).map_err(|_| error)
        }
        Err(error) => Err(error),
    }
}

/// The items of a JSON-LD document: a top-level array's elements, a `@graph`'s nodes (each
/// given the document's `@context` when it has none), or the document itself.
fn json_ld_items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.into_iter().flat_map(json_ld_items).collect(),
        Value::Object(mut object) if object.get("@graph").is_some_and(Value::is_array) => {
            let context = object.remove("@context");
            let Some(Value::Array(nodes)) = object.remove("@graph") else { unreachable!("checked above") };
            // Nodes are objects; anything else in a graph (null, numbers) is not a node.
            nodes
                .into_iter()
                .flat_map(json_ld_items)
                .map(|node| match (node, &context) {
                    (Value::Object(mut node), Some(context)) if !node.contains_key("@context") => {
                        let mut with_context = serde_json::Map::with_capacity(node.len() + 1);
                        with_context.insert("@context".into(), context.clone());
                        with_context.append(&mut node);
                        Value::Object(with_context)
                    }
                    (node, _) => node,
                })
                .collect()
        }
        object @ Value::Object(_) => vec![object],
        // A scalar is not a JSON-LD node.
        _ => Vec::new(),
    }
}

/// JSON objects and arrays written in plain text, scanned from each `{` or `[`.
fn json_in_text(text: &str, mode: TextJson, place: MailPlace, extracted: &mut Extracted) {
    let bytes = text.as_bytes();
    let mut at = 0;
    let mut failures = 0;
    while let Some(offset) = memchr::memchr2(b'{', b'[', &bytes[at..]) {
        let start = at + offset;
        let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        match values.next() {
            Some(Ok(value)) if value.is_object() || value.is_array() && !is_trivial(&value) => {
                at = start + values.byte_offset();
                extracted.found.push(Found { value, origin: Origin::Text, place: place.clone() });
                if mode == TextJson::First {
                    return;
                }
            }
            _ => {
                at = start + 1;
                failures += 1;
                if failures >= FAILED_TEXT_ATTEMPTS_PER_PART {
                    // Say so only when the rest could still have held JSON.
                    if memchr::memchr2(b'{', b'[', &bytes[at..]).is_some() {
                        extracted.skipped.push(MailSkipped {
                            kind: SkippedKind::Text,
                            place,
                            reason: SkipReason::TooManyFailedAttempts,
                            error: Some(format!(
                                "{failures} attempts to read JSON failed; the text from byte {at} on was not searched"
                            )),
                        });
                    }
                    return;
                }
            }
        }
    }
}

/// `[]` and `[1]` in prose are not data; an array counts when it holds an object or array.
fn is_trivial(value: &Value) -> bool {
    value.as_array().is_some_and(|items| !items.iter().any(|item| item.is_object() || item.is_array()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(content_type: &str, body: &str) -> Vec<u8> {
        format!(
            "From: Shop <orders@shop.example>\r\nTo: hook@in.example\r\nSubject: Order\r\nMessage-ID: <m1@shop.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n{body}"
        )
        .into_bytes()
    }

    fn values(raw: &[u8], mode: TextJson) -> Vec<Value> {
        extract(raw, mode).unwrap().found.into_iter().map(|found| found.value).collect()
    }

    #[test]
    fn an_outline_numbers_the_parts_as_skips_do_with_type_size_and_a_text_excerpt() {
        let raw = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: Order\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHello {\"order\": 1}\r\n\
--b\r\nContent-Type: application/json\r\nContent-Disposition: attachment; filename=order.json\r\n\r\n{\"order\": 2}\r\n--b--\r\n";
        let parts = outline(raw).expect("a message");
        let summary: Vec<(&str, Option<&str>, Option<&str>)> =
            parts.iter().map(|p| (p.part.as_str(), p.content_type.as_deref(), p.name.as_deref())).collect();
        assert_eq!(
            summary,
            [
                ("", Some("multipart/mixed"), None),
                ("1", Some("text/plain"), None),
                ("2", Some("application/json"), Some("order.json"))
            ]
        );
        assert_eq!(parts[1].excerpt.as_deref(), Some("Hello {\"order\": 1}"));
        assert_eq!(parts[2].size, "{\"order\": 2}".len());
        assert!(outline(b"").is_none());
    }

    #[test]
    fn json_ld_blocks_are_found_whatever_the_attribute_case() {
        let html = r#"<html><head><SCRIPT Type="Application/LD+JSON">{"@type":"Order","orderNumber":"1"}</SCRIPT>
            <script type="application/ld+json; charset=utf-8">{"@type":"ParcelDelivery"}</script>
            <script type="text/javascript">{"not": "data"}</script></head></html>"#;
        assert_eq!(
            values(&message("text/html; charset=utf-8", html), TextJson::First),
            vec![json!({"@type": "Order", "orderNumber": "1"}), json!({"@type": "ParcelDelivery"})]
        );
    }

    #[test]
    fn blocks_anywhere_in_the_document_are_found_though_reading_stops_after_the_last() {
        let rows = "<tr><td>shoes</td><td>1</td></tr>\n".repeat(200);
        let html = format!(
            r#"<html><head><script type="application/ld+json">{{"@type":"Order","orderNumber":"1"}}</script></head>
            <body><table>{rows}</table><!-- the ld+json above is an order -->
            <script type="application/ld+json">{{"@type":"Invoice","note":"</scripts> is not an end tag"}}</script>
            <p>{rows}</p></body></html>"#
        );
        assert_eq!(
            values(&message("text/html", &html), TextJson::First),
            vec![
                json!({"@type": "Order", "orderNumber": "1"}),
                json!({"@type": "Invoice", "note": "</scripts> is not an end tag"})
            ]
        );
        // A block whose document ends before its end tag is still read to the end.
        let unclosed = r#"<script type="application/ld+json">{"@type":"Order","orderNumber":"2"}"#;
        assert_eq!(
            values(&message("text/html", unclosed), TextJson::First),
            vec![json!({"@type": "Order", "orderNumber": "2"})]
        );
    }

    #[test]
    fn a_type_that_spells_its_plus_as_an_entity_is_not_read() {
        let html = r#"<script type="application/ld&#43;json">{"@type":"Order"}</script>"#;
        assert_eq!(values(&message("text/html", html), TextJson::First), Vec::<Value>::new());
    }

    #[test]
    fn graphs_and_top_level_arrays_become_their_items() {
        let html = r#"<script type="application/ld+json">{"@context":"https://schema.org","@graph":[{"@type":"Order"},{"@type":"Person","@context":"x"}]}</script>
            <script type="application/ld+json">[{"@type":"EventReservation"},{"@type":"FlightReservation"}]</script>"#;
        assert_eq!(
            values(&message("text/html", html), TextJson::First),
            vec![
                json!({"@context": "https://schema.org", "@type": "Order"}),
                json!({"@type": "Person", "@context": "x"}),
                json!({"@type": "EventReservation"}),
                json!({"@type": "FlightReservation"}),
            ]
        );
    }

    #[test]
    fn a_graph_keeps_only_its_nodes() {
        // Found by the property test below (proptest-regressions/email/extract.txt).
        let html =
            r#"<script type="application/ld+json">{"@type":"Order","@graph":[null, 3, {"@type":"Offer"}]}</script>"#;
        assert_eq!(values(&message("text/html", html), TextJson::First), vec![json!({"@type": "Offer"})]);
    }

    #[test]
    fn comments_cdata_and_entities_around_the_json_are_handled() {
        let html = "<script type=\"application/ld+json\"><!--\n{\"@type\":\"Order\"}\n--></script>\
            <script type=\"application/ld+json\">//<![CDATA[\n{\"@type\":\"Invoice\"}\n//]]></script>\
            <script type=\"application/ld+json\">{&quot;@type&quot;:&quot;Offer&quot;,&quot;name&quot;:&quot;A &amp; B&quot;}</script>";
        assert_eq!(
            values(&message("text/html", html), TextJson::First),
            vec![json!({"@type": "Order"}), json!({"@type": "Invoice"}), json!({"@type": "Offer", "name": "A & B"})]
        );
    }

    #[test]
    fn a_broken_block_is_skipped_with_its_place_and_the_parse_error() {
        let html = r#"<script type="application/ld+json">{"@type": "Order",</script>"#;
        let extracted = extract(&message("text/html", html), TextJson::First).unwrap();
        assert!(extracted.found.is_empty());
        assert_eq!(
            extracted.skipped.listed,
            vec![MailSkipped {
                kind: SkippedKind::JsonLd,
                place: MailPlace {
                    part: "1".into(),
                    content_type: Some("text/html".into()),
                    block: Some(1),
                    name: None
                },
                reason: SkipReason::NotJson,
                error: Some("EOF while parsing a value at line 1 column 18".into()),
            }]
        );
        assert_eq!(
            extracted.skipped.describe(),
            vec!["JSON-LD block 1 of part 1 is not JSON: EOF while parsing a value at line 1 column 18"]
        );
    }

    fn skip(kind: SkippedKind, place: (&str, &str, Option<usize>, Option<&str>), reason: SkipReason) -> MailSkipped {
        let (part, content_type, block, name) = place;
        MailSkipped {
            kind,
            place: MailPlace {
                part: part.into(),
                content_type: Some(content_type.into()),
                block,
                name: name.map(Into::into),
            },
            reason,
            error: None,
        }
    }

    /// `skipped` without the parsers' words, which the tests that need them check apart.
    fn without_errors(extracted: &Extracted) -> Vec<MailSkipped> {
        extracted.skipped.listed.iter().cloned().map(|skipped| MailSkipped { error: None, ..skipped }).collect()
    }

    #[test]
    fn skipped_things_are_placed_by_imap_part_number_forwarded_messages_included() {
        let forwarded = "From: t@conf.example\r\nSubject: ticket\r\nContent-Type: text/html\r\n\r\n\
            <script type=\"application/ld+json\">[1, \"two\"]</script>\r\n";
        let body = format!(
            "--o\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n\
             --a\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
             --a\r\nContent-Type: text/html\r\n\r\n<script type=\"application/ld+json\">{{\"@type\":\"Order\"}}</script>\
             <script type=\"application/ld+json\">{{broken</script>\r\n--a--\r\n\
             --o\r\nContent-Type: application/json; name=a.json\r\n\r\nnot json\r\n\
             --o\r\nContent-Type: message/rfc822\r\n\r\n{forwarded}--o--\r\n"
        );
        let extracted = extract(&message("multipart/mixed; boundary=o", &body), TextJson::All).unwrap();
        assert_eq!(extracted.found.len(), 1);
        assert_eq!(extracted.found[0].place.part, "1.2");
        assert_eq!(extracted.found[0].place.block, Some(1));
        assert_eq!(
            without_errors(&extracted),
            vec![
                skip(SkippedKind::JsonLd, ("1.2", "text/html", Some(2), None), SkipReason::NotJson),
                skip(SkippedKind::Attachment, ("2", "application/json", None, Some("a.json")), SkipReason::NotJson),
                skip(SkippedKind::JsonLd, ("3.1", "text/html", Some(1), None), SkipReason::NoObject),
            ]
        );
        assert_eq!(
            extracted.skipped.describe(),
            vec![
                "JSON-LD block 2 of part 1.2 is not JSON: key must be a string at line 1 column 2",
                "attachment \"a.json\" (part 2) is not JSON: expected ident at line 1 column 2",
                "JSON-LD block 1 of part 3.1 holds no JSON object or array",
            ]
        );
        // The forwarded message is listed among the attachments, as its own bytes.
        let attached: Vec<_> =
            extracted.facts.attachments.iter().map(|a| (a.content_type.as_deref().unwrap(), a.size)).collect();
        assert_eq!(attached, [("application/json", "not json".len()), ("message/rfc822", forwarded.len() - 2)]);
    }

    #[test]
    fn json_ld_without_a_node_is_skipped_not_silently_empty() {
        let html = r#"<script type="application/ld+json">"just text"</script>
            <script type="application/ld+json">{"@context":"https://schema.org","@graph":[]}</script>"#;
        let extracted = extract(&message("text/html", html), TextJson::First).unwrap();
        assert!(extracted.found.is_empty());
        assert_eq!(
            without_errors(&extracted),
            vec![
                skip(SkippedKind::JsonLd, ("1", "text/html", Some(1), None), SkipReason::NoObject),
                skip(SkippedKind::JsonLd, ("1", "text/html", Some(2), None), SkipReason::NoObject),
            ]
        );
    }

    #[test]
    fn beyond_sixteen_skipped_things_are_counted_not_listed() {
        let broken = r#"<script type="application/ld+json">{</script>"#.repeat(20);
        let html = format!(r#"{broken}<script type="application/ld+json">{{"@type":"Order"}}</script>"#);
        let extracted = extract(&message("text/html", &html), TextJson::First).unwrap();
        assert_eq!(extracted.found.len(), 1, "the good block after them still counts");
        assert_eq!(extracted.skipped.listed.len(), 16);
        assert_eq!(extracted.skipped.listed[15].place.block, Some(16));
        assert_eq!(extracted.skipped.not_listed, 4);
        assert_eq!(extracted.skipped.describe().last().unwrap(), "4 more skipped");
    }

    #[test]
    fn plain_text_searched_only_in_part_says_where_it_stopped() {
        let prose = "{a} ".repeat(16);
        let given_up = extract(&message("text/plain", &format!("{prose}{{\"id\": 1}}")), TextJson::First).unwrap();
        assert!(given_up.found.is_empty());
        assert_eq!(
            given_up.skipped.listed,
            vec![MailSkipped {
                error: Some("16 attempts to read JSON failed; the text from byte 61 on was not searched".into()),
                ..skip(SkippedKind::Text, ("1", "text/plain", None, None), SkipReason::TooManyFailedAttempts)
            }]
        );
        // When nothing that could be JSON is left, nothing was skipped.
        let nothing_left = extract(&message("text/plain", &prose), TextJson::First).unwrap();
        assert!(nothing_left.skipped.is_empty(), "{:?}", nothing_left.skipped);
    }

    #[test]
    fn a_message_forwarded_too_deep_is_skipped_by_name() {
        let mut nested = message("text/html", r#"<script type="application/ld+json">{"@type":"Order"}</script>"#);
        for _ in 0..=MAX_MESSAGE_DEPTH {
            nested = [b"Subject: Fwd\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n".as_slice(), &nested]
                .concat();
        }
        let extracted = extract(&nested, TextJson::First).unwrap();
        assert!(extracted.found.is_empty());
        // Parts 1, 1.1, ... are the forwarded messages; the one at depth 8 is not searched.
        let part = ["1"; MAX_MESSAGE_DEPTH + 1].join(".");
        assert_eq!(
            without_errors(&extracted),
            vec![skip(SkippedKind::ForwardedMessage, (&part, "message/rfc822", None, None), SkipReason::NestedTooDeep)]
        );
    }

    #[test]
    fn a_json_attachment_in_a_declared_charset_is_decoded_by_it() {
        // `{"name": "José", "price": "12 €"}` in windows-1252 (é is 0xE9, € is 0x80), base64.
        let body = "--o\r\nContent-Type: application/json; charset=windows-1252; name=order.json\r\n\
            Content-Transfer-Encoding: base64\r\n\r\neyJuYW1lIjogIkpvc+kiLCAicHJpY2UiOiAiMTIggCJ9\r\n--o--\r\n";
        assert_eq!(
            values(&message("multipart/mixed; boundary=o", body), TextJson::First),
            vec![json!({"name": "José", "price": "12 €"})]
        );
    }

    #[test]
    fn the_data_key_attribute_is_kept_with_the_block() {
        let html = r#"<script type="application/ld+json" data-key="s&amp;cret">{"@type":"Order"}</script>"#;
        let extracted = extract(&message("text/html", html), TextJson::First).unwrap();
        assert_eq!(extracted.found[0].origin, Origin::JsonLd { key: Some("s&cret".into()) });
    }

    #[test]
    fn json_in_plain_text_first_or_all() {
        let text = "Hello {name},\r\nhere is the order: {\"id\": 1}\r\nand another [{\"id\": 2}] and [1, 2]\r\n";
        assert_eq!(values(&message("text/plain", text), TextJson::First), vec![json!({"id": 1})]);
        assert_eq!(values(&message("text/plain", text), TextJson::All), vec![json!({"id": 1}), json!([{"id": 2}])]);
        assert!(values(&message("text/plain", text), TextJson::None).is_empty());
    }

    #[test]
    fn the_same_value_twice_is_one_value() {
        let body = "--b\r\nContent-Type: text/plain\r\n\r\n{\"@type\":\"Order\"}\r\n--b\r\nContent-Type: text/html\r\n\r\n<script type=\"application/ld+json\">{\"@type\":\"Order\"}</script>\r\n--b--\r\n";
        assert_eq!(
            values(&message("multipart/alternative; boundary=b", body), TextJson::First),
            vec![json!({"@type": "Order"})]
        );
    }

    #[test]
    fn facts_come_from_the_headers() {
        let extracted = extract(&message("text/plain", "{}"), TextJson::First).unwrap();
        assert_eq!(extracted.facts.from.as_deref(), Some("orders@shop.example"));
        assert_eq!(extracted.facts.to, vec!["hook@in.example".to_owned()]);
        assert_eq!(extracted.facts.subject.as_deref(), Some("Order"));
        assert_eq!(extracted.facts.message_id.as_deref(), Some("m1@shop.example"));
        assert_eq!(extracted.facts.date.as_deref(), Some("2026-11-23T10:00:00Z"));
    }

    #[test]
    fn pathological_text_stops_after_a_bounded_number_of_attempts() {
        // Every `{` starts a parse that fails only at the end of the text: scanning each would
        // be quadratic (minutes here); the attempt cap makes it finish.
        let text = "{\"a\": \"".repeat(20_000);
        let extracted = extract(&message("text/plain", &text), TextJson::All).unwrap();
        assert!(extracted.found.is_empty());
    }

    /// Found by the `smtp_session` fuzz target, minimized with `cargo fuzz tmin` on `mime`: a
    /// forwarded message whose part has no end reaches mail-parser's debug assertion.
    #[test]
    fn a_malformed_forwarded_message_is_read_or_refused_without_panicking() {
        let raw = b"F:\nContent-Type: multipart/mi;boundary=\"fwd-boundary\".\r\n\r\n--fwd-boundary\r\nContent-Type: message/rfc822\r\nC\n\nContent-Type:message/rfc822\r\n\n\r\n--fwd-boundary--\r\n";
        let extracted = extract(raw, TextJson::All);
        assert!(matches!(&extracted, Ok(_) | Err(ExtractError::NotAMessage)), "{extracted:?}");
        let _ = outline(raw);
    }

    #[test]
    fn garbage_is_not_a_message() {
        assert_eq!(extract(b"", TextJson::First), Err(ExtractError::NotAMessage));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// HTML-ish text around script blocks: tags, entities, comments, JSON fragments.
    fn html_fragment() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("<script type=\"application/ld+json\">".to_owned()),
                Just("</script>".to_owned()),
                Just("<SCRIPT TYPE='application/LD+json' data-key=\"k\">".to_owned()),
                Just("<!--".to_owned()),
                Just("-->".to_owned()),
                Just("<![CDATA[".to_owned()),
                Just("{\"@type\":\"Order\",\"@graph\":[".to_owned()),
                Just("]}".to_owned()),
                Just("null".to_owned()),
                Just("42".to_owned()),
                Just("&quot;&amp;&#x7b;".to_owned()),
                Just("<p><td><table>".to_owned()),
                "[ -~]{0,20}",
                "\\PC{0,8}",
            ],
            0..40,
        )
        .prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_bytes_are_read_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            let _ = extract(&bytes, TextJson::All);
        }

        #[test]
        fn stopping_after_the_last_ld_json_finds_what_reading_everything_finds(
            html in html_fragment(),
            tail in html_fragment(),
        ) {
            let html = format!("{html}<td>{tail}");
            let place = MailPlace::default();
            let (mut early, mut whole) = (Extracted::default(), Extracted::default());
            json_ld_blocks(&html, place.clone(), &mut early);
            read_json_ld_blocks(&html, html.len(), place, &mut whole);
            prop_assert_eq!(early, whole);
        }

        #[test]
        fn any_html_is_read_without_panicking(html in html_fragment(), text in html_fragment()) {
            let raw = format!(
                "From: a@b.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\n{text}\r\n--x\r\nContent-Type: text/html\r\n\r\n{html}\r\n--x--\r\n"
            );
            let extracted = extract(raw.as_bytes(), TextJson::All).unwrap();
            // Whatever was found is an object or an array, never a bare scalar.
            for found in extracted.found {
                prop_assert!(found.value.is_object() || found.value.is_array(), "{:?}", found.value);
            }
        }
    }
}
