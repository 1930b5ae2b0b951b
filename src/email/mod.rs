//! Email hooks: mail that arrives at a hook's address becomes events.
//!
//! Pure: MIME in, values and events out, from a hook's identity and email settings. No store,
//! no DNS, no runtime: the transports are in `ingress` (SMTP, mail over HTTP), the lookups and
//! the commit in `pipeline::mail`.
//!
//! - `extract` reads a message (pure) and finds its JSON-LD, JSON and JSON attachments.
//! - This module decides, for one message and one hook, which of the found values count (the
//!   hook's key, its sender allowlist) and builds the events, or says why the message is refused.
//!   Every event lists what was skipped (`source.mail.skipped`): what `extract` could not use,
//!   and the values this hook left out for want of its key.
//!
//! An address is `<token>@<mail domain>`: the hook's URL token, compared without regard to
//! letter case (some relays fold local parts), with an optional `+tag` after it. A hook that
//! requires a key accepts it as that tag (`<token>+<key>@<domain>`) or as the `data-key`
//! attribute of a JSON-LD script block.

pub mod extract;

use bytes::Bytes;
use jiff::Timestamp;
use serde_json::Value;

use std::net::IpAddr;

use crate::event::{HookIdentity, MailSkipped, MailSource, NewEvent, RequestMeta, SkipReason, SkippedKind, normalize};
use extract::{Extracted, Origin, TextJson};

/// A hook's email settings (`"email": {...}` in its definition).
#[derive(Debug, Clone, PartialEq)]
pub struct EmailSettings {
    pub key: MailKey,
    /// Empty: any sender.
    pub allowed_senders: Vec<SenderRule>,
    pub text_json: TextJson,
    /// Several values in one message: one event each (`true`), or one event with an array.
    pub one_event_each: bool,
    /// Names each event from its value (`kustomer.app.mail.{$['@type']}`); the hook's
    /// `eventName` when absent or when it finds nothing.
    pub event_name: Option<crate::template::Template>,
    /// Mailgun's webhook signing key: when set, mail posted over HTTP must carry Mailgun's
    /// signature (SMTP is not affected).
    pub mailgun_signing_key: Option<String>,
    /// Only mail with a passing DKIM signature for its `From` domain (or a parent domain) counts.
    pub require_dkim: bool,
}

/// The documented defaults (docs/hook-definitions.md, "Email hooks"), written by hand: a hook
/// without an `email` block, and every property an `email` block leaves out, gets these. No key,
/// any sender, the first JSON of each plain-text part, one event per value, the hook's own
/// event name, no Mailgun signature, no DKIM requirement. `tests/it/documented_defaults.rs`
/// checks each against the docs and against a hook that writes it out.
impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            key: MailKey::NotRequired,
            allowed_senders: Vec::new(),
            text_json: TextJson::First,
            one_event_each: true,
            event_name: None,
            mailgun_signing_key: None,
            require_dkim: false,
        }
    }
}

/// Whether senders must prove they know a key.
#[derive(Clone, Default, PartialEq)]
pub enum MailKey {
    #[default]
    NotRequired,
    Required(String),
    /// The definition names a key that is not set: every message is refused until it is.
    Unset,
}

impl std::fmt::Debug for MailKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MailKey::NotRequired => "NotRequired",
            MailKey::Required(_) => "Required(<hidden>)",
            MailKey::Unset => "Unset",
        })
    }
}

/// One entry of a sender allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderRule {
    /// An exact address, lower case.
    Address(String),
    /// Every address at this domain, lower case (written `@shop.example`).
    Domain(String),
}

impl SenderRule {
    /// `orders@shop.example` or `@shop.example`; `None` for anything else.
    pub fn parse(text: &str) -> Option<SenderRule> {
        let text = text.trim().to_ascii_lowercase();
        match text.split_once('@') {
            Some(("", domain)) if is_domain(domain) => Some(SenderRule::Domain(domain.to_owned())),
            Some((local, domain)) if !local.is_empty() && is_domain(domain) => Some(SenderRule::Address(text)),
            _ => None,
        }
    }

    fn allows(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        match self {
            SenderRule::Address(allowed) => address == *allowed,
            SenderRule::Domain(domain) => address.rsplit_once('@').is_some_and(|(_, at)| at == domain),
        }
    }
}

/// Whether `text` is a domain name: dot-separated labels of letters, digits and `-`.
pub fn is_domain(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
        })
}

/// The address of the hook with URL token `token` under `domain`.
pub fn address(token: &str, domain: &str) -> String {
    format!("{token}@{domain}")
}

/// A recipient address taken apart: the hook token and the `+tag`, if the domain is ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub token: String,
    pub tag: Option<String>,
}

/// Splits `local+tag@domain`; `None` when the domain is not `mail_domain`.
pub fn parse_recipient(address: &str, mail_domain: &str) -> Option<Recipient> {
    let (local, domain) = address.trim().rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(mail_domain) || local.is_empty() {
        return None;
    }
    let (token, tag) = match local.split_once('+') {
        Some((token, tag)) => (token, Some(tag.to_owned())),
        None => (local, None),
    };
    Some(Recipient { token: token.to_owned(), tag })
}

/// Why a message is not accepted for a hook. Each becomes a clear SMTP reply (or HTTP error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the message could not be read as an RFC 5322 message")]
    Unreadable,
    #[error("the sender {0} is not allowed to send to this address")]
    SenderNotAllowed(String),
    #[error(
        "this address requires a key, in the address (token+KEY@domain) or in a data-key attribute of the JSON-LD script"
    )]
    MissingKey,
    #[error("this address requires a key that is not configured yet")]
    KeyNotConfigured,
    #[error("this address only takes mail with a passing DKIM signature for the From domain")]
    NotAuthenticated,
    #[error("no JSON or JSON-LD was found in the message{}", problems_suffix(.0))]
    NothingToExtract(Vec<String>),
}

fn problems_suffix(problems: &[String]) -> String {
    if problems.is_empty() { String::new() } else { format!(" ({})", problems.join("; ")) }
}

/// What is known of a message besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// The peer's address.
    pub peer: Option<String>,
    /// `MAIL FROM`; `None` or empty for a bounce.
    pub from: Option<String>,
    /// The media type of what is stored with the events: `message/rfc822` when `None` (the
    /// message itself), else the HTTP body's (a provider's JSON or form post).
    pub stored_content_type: Option<String>,
    /// The SMTP client, for SPF; `None` for mail posted over HTTP.
    pub smtp_client: Option<SmtpClient>,
}

/// What the SMTP session knows of the client, for SPF.
#[derive(Debug, Clone)]
pub struct SmtpClient {
    pub ip: IpAddr,
    /// The name given in EHLO or HELO.
    pub helo: String,
    /// `MAIL FROM`, empty for a bounce.
    pub mail_from: String,
}

/// Checks the sender against the hook's allowlist: the `From` header's address when the
/// message has one (what DKIM signs and people see), else the envelope sender.
pub fn check_sender(settings: &EmailSettings, extracted: &Extracted, envelope: &Envelope) -> Result<(), Refusal> {
    if settings.allowed_senders.is_empty() {
        return Ok(());
    }
    let sender = extracted.facts.from.as_deref().or(envelope.from.as_deref()).unwrap_or_default();
    if settings.allowed_senders.iter().any(|rule| rule.allows(sender)) {
        Ok(())
    } else {
        Err(Refusal::SenderNotAllowed(if sender.is_empty() { "<>".into() } else { sender.to_owned() }))
    }
}

/// One received message, read: what every recipient hook's events are made from.
pub struct ReceivedMail<'a> {
    /// The message exactly as received, kept with every event.
    pub raw: &'a Bytes,
    pub extracted: &'a Extracted,
    pub envelope: &'a Envelope,
    /// DKIM and SPF results, when checked.
    pub authentication: Option<&'a crate::event::MailAuthentication>,
    pub received_at: Timestamp,
}

/// The events one message makes for one hook (`hook` with its email `settings`, `recipient` at
/// `envelope_to`), or why it makes none.
pub fn events_for_hook(
    hook: HookIdentity<'_>,
    settings: &EmailSettings,
    mail: &ReceivedMail<'_>,
    recipient: &Recipient,
    envelope_to: &str,
) -> Result<Vec<NewEvent>, Refusal> {
    let ReceivedMail { raw, extracted, envelope, authentication, received_at } = *mail;
    check_sender(settings, extracted, envelope)?;
    if settings.require_dkim {
        let from = extracted.facts.from.as_deref().unwrap_or_default();
        if !authentication.is_some_and(|authentication| authentication.dkim_passes_for(from)) {
            return Err(Refusal::NotAuthenticated);
        }
    }
    // With a key, only values the sender proved it for count: all of them when the address
    // carries the key, else the JSON-LD blocks whose data-key is it.
    let key = match &settings.key {
        MailKey::NotRequired => None,
        MailKey::Unset => return Err(Refusal::KeyNotConfigured),
        MailKey::Required(key) => Some(key.as_bytes()),
    };
    let is_key = |presented: &str| key.is_some_and(|key| crate::secrets::constant_time_eq(presented.as_bytes(), key));
    let address_has_key = key.is_none() || recipient.tag.as_deref().is_some_and(is_key);
    let counts = |origin: &Origin| {
        address_has_key || matches!(origin, Origin::JsonLd { key: Some(presented) } if is_key(presented))
    };
    let (found, left_out): (Vec<_>, Vec<_>) = extracted.found.iter().partition(|found| counts(&found.origin));
    if found.is_empty() {
        return Err(if extracted.found.is_empty() {
            Refusal::NothingToExtract(extracted.skipped.describe())
        } else {
            Refusal::MissingKey
        });
    }
    // What this hook leaves out for want of the key is skipped too, and says so.
    let mut skipped = extracted.skipped.clone();
    for found in left_out {
        skipped.push(MailSkipped {
            kind: skipped_kind(&found.origin),
            place: found.place.clone(),
            reason: SkipReason::KeyMissing,
            error: None,
        });
    }

    let facts = &extracted.facts;
    let mail_source = |found_in: Vec<String>| MailSource {
        envelope_from: envelope.from.clone(),
        envelope_to: envelope_to.to_owned(),
        facts: facts.clone(),
        found_in,
        skipped: skipped.listed.clone(),
        skipped_not_listed: skipped.not_listed,
        authentication: authentication.cloned(),
    };
    let meta = RequestMeta {
        peer: envelope.peer.clone(),
        headers: vec![(
            "content-type".into(),
            envelope.stored_content_type.clone().unwrap_or_else(|| "message/rfc822".into()),
        )],
    };
    let no_headers = http::HeaderMap::new();
    let make = |data: Value, name: String, found_in: Vec<String>| {
        let mut event = normalize(
            HookIdentity { app: hook.app, event_name: &name, hook_type: hook.hook_type },
            &meta,
            data,
            raw.clone(),
            received_at,
        );
        event.event.source.mail = Some(mail_source(found_in));
        event
    };
    let name_of = |value: &Value| {
        settings
            .event_name
            .as_ref()
            .and_then(|template| template.render_name_if_found(value, &no_headers))
            .unwrap_or_else(|| hook.event_name.to_owned())
    };
    if settings.one_event_each {
        Ok(found
            .into_iter()
            .map(|found| make(found.value.clone(), name_of(&found.value), vec![origin_kind(&found.origin).into()]))
            .collect())
    } else {
        let kinds = found.iter().map(|found| origin_kind(&found.origin).to_owned()).collect();
        let values: Vec<Value> = found.into_iter().map(|found| found.value.clone()).collect();
        Ok(vec![make(Value::Array(values), hook.event_name.to_owned(), kinds)])
    }
}

/// The metric label of a refusal.
pub fn refusal_label(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Unreadable => "unreadable",
        Refusal::SenderNotAllowed(_) => "sender_not_allowed",
        Refusal::MissingKey => "missing_key",
        Refusal::KeyNotConfigured => "key_not_configured",
        Refusal::NotAuthenticated => "not_authenticated",
        Refusal::NothingToExtract(_) => "nothing_to_extract",
    }
}

fn skipped_kind(origin: &Origin) -> SkippedKind {
    match origin {
        Origin::JsonLd { .. } => SkippedKind::JsonLd,
        Origin::Text => SkippedKind::Text,
        Origin::Attachment { .. } => SkippedKind::Attachment,
    }
}

fn origin_kind(origin: &Origin) -> &'static str {
    match origin {
        Origin::JsonLd { .. } => "jsonLd",
        Origin::Text => "text",
        Origin::Attachment { .. } => "attachment",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_token_and_tag_at_our_domain() {
        assert_eq!(
            parse_recipient("AbC_-9+key1@In.Example", "in.example"),
            Some(Recipient { token: "AbC_-9".into(), tag: Some("key1".into()) })
        );
        assert_eq!(parse_recipient("abc@in.example", "in.example"), Some(Recipient { token: "abc".into(), tag: None }));
        assert_eq!(parse_recipient("abc@elsewhere.example", "in.example"), None);
        assert_eq!(parse_recipient("@in.example", "in.example"), None);
        assert_eq!(parse_recipient("no-domain", "in.example"), None);
    }

    #[test]
    fn sender_rules_are_addresses_or_domains() {
        let exact = SenderRule::parse("Orders@Shop.example").unwrap();
        assert!(exact.allows("orders@shop.example"));
        assert!(!exact.allows("sales@shop.example"));
        let domain = SenderRule::parse("@shop.example").unwrap();
        assert!(domain.allows("anyone@SHOP.example"));
        assert!(!domain.allows("anyone@evilshop.example"));
        assert!(!domain.allows("shop.example@evil.example"));
        assert_eq!(SenderRule::parse("shop"), None);
        assert_eq!(SenderRule::parse("a@b..c"), None);
    }
}
