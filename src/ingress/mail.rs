//! Email over HTTP: `POST` to an email hook's URL, for teams whose MX points at a provider.
//! The same opening steps as every HTTP path (`opening`), then the same acceptance as SMTP
//! ([`crate::pipeline::mail::MailAcceptor`]); the request body is what is stored with the events.
//!
//! Accepted bodies:
//! - `message/rfc822`: the raw message;
//! - SendGrid Inbound Parse in raw mode: `multipart/form-data` with the message in `email` and
//!   the envelope in `envelope` (`{"to": [...], "from": "..."}`);
//! - Mailgun routes: `multipart/form-data` or urlencoded with the message in `body-mime`, and,
//!   when the hook sets `mailgunSigningKey`, Mailgun's `timestamp`, `token` and `signature`
//!   (HMAC-SHA256 of timestamp and token, five minutes either way), required;
//! - Postmark inbound JSON (`From`, `To`, `Subject`, `TextBody`, `HtmlBody`, `Attachments`,
//!   `MailboxHash`), rebuilt into a MIME message for extraction.
//!
//! A hook's key travels as the `key` query parameter, or as the plus tag of a recipient (the
//! envelope's `to`, Postmark's `MailboxHash`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::opening::{self, Opened};
use super::{IngressError, IngressState};
use crate::definitions::catalog::Hook;
use crate::email::{Envelope, Recipient, refusal_label};
use crate::pipeline::mail::{MailRecipient, MessageError};

/// The message and its envelope, as a provider posted them.
struct Posted {
    mime: Bytes,
    envelope_from: Option<String>,
    recipients: Vec<String>,
    /// Postmark's plus tag.
    mailbox_hash: Option<String>,
}

pub(super) async fn handle(state: &IngressState, hook: &Arc<Hook>, request: Request) -> Result<Response, IngressError> {
    if request.method() != Method::POST {
        return Err(IngressError::MethodNotAllowed { method: request.method().clone(), allow: "POST" });
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let media_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let query_key = request.uri().query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "key").map(|(_, value)| value.into_owned())
    });
    let Opened { meta, body, reservation: _reservation, .. } =
        opening::open(&state.settings, &state.body_budget, hook, request).await?;

    let is_form = matches!(media_type.as_str(), "multipart/form-data" | "application/x-www-form-urlencoded");
    if hook.definition.email.mailgun_signing_key.is_some() && !is_form {
        // Only Mailgun's form posts carry its signature; nothing else may reach this hook by HTTP.
        return Err(IngressError::Unverified(crate::verify::VerifyError::MissingHeader("signature".into())));
    }
    let posted = match media_type.as_str() {
        "message/rfc822" => {
            Posted { mime: body.clone(), envelope_from: None, recipients: Vec::new(), mailbox_hash: None }
        }
        "multipart/form-data" => {
            let boundary = multer::parse_boundary(&content_type).map_err(|error| {
                IngressError::MalformedBody(format!("multipart/form-data without a boundary: {error}"))
            })?;
            let fields = form_fields_multipart(body.clone(), boundary).await?;
            provider_form(hook, &fields)?
        }
        "application/x-www-form-urlencoded" => {
            let fields: Vec<(String, Bytes)> = form_urlencoded::parse(&body)
                .map(|(name, value)| (name.into_owned(), Bytes::from(value.into_owned())))
                .collect();
            provider_form(hook, &fields)?
        }
        "application/json" => postmark(&body)?,
        _ => {
            return Err(IngressError::UnsupportedMediaType(format!(
                "an email hook takes message/rfc822, SendGrid or Mailgun form posts, or Postmark JSON, not {:?}",
                if content_type.is_empty() { "no Content-Type" } else { content_type.as_str() }
            )));
        }
    };

    let tag = query_key.or(posted.mailbox_hash).or_else(|| {
        posted.recipients.iter().find_map(|address| {
            let local = address.rsplit_once('@').map_or(address.as_str(), |(local, _)| local);
            local.split_once('+').map(|(_, tag)| tag.to_owned())
        })
    });
    let envelope = Envelope {
        peer: meta.peer.clone(),
        from: posted.envelope_from,
        stored_content_type: Some(if content_type.is_empty() { "message/rfc822".into() } else { content_type }),
        smtp_client: None,
    };
    let address = crate::email::address(&hook.token, &state.settings.mail_domain);
    let recipient = Recipient { token: hook.token.clone(), tag };
    let recipients = [MailRecipient { hook: hook.clone(), recipient, address }];
    let outcome = state.mail.accept(posted.mime, body, &envelope, &recipients).await;
    let label = match &outcome {
        Ok(_) => "accepted",
        Err(MessageError::Refused(refusal)) => refusal_label(refusal),
        Err(MessageError::Store(_)) => "store_error",
    };
    metrics::counter!("hookgate_email_messages_total", "transport" => "http", "outcome" => label).increment(1);
    match outcome {
        Ok(ids) => {
            let events: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
            Ok((StatusCode::ACCEPTED, axum::Json(json!({"events": events}))).into_response())
        }
        Err(MessageError::Refused(refusal)) => Err(IngressError::MailRefused(refusal)),
        Err(MessageError::Store(error)) => Err(IngressError::Store(error)),
    }
}

async fn form_fields_multipart(body: Bytes, boundary: String) -> Result<Vec<(String, Bytes)>, IngressError> {
    let stream = futures_util::stream::once(std::future::ready(Ok::<Bytes, Infallible>(body)));
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    let malformed = |error: multer::Error| IngressError::MalformedBody(format!("malformed multipart body: {error}"));
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        fields.push((name, field.bytes().await.map_err(malformed)?));
    }
    Ok(fields)
}

fn field<'a>(fields: &'a [(String, Bytes)], name: &str) -> Option<&'a Bytes> {
    fields.iter().find(|(field, _)| field == name).map(|(_, value)| value)
}

fn text_field(fields: &[(String, Bytes)], name: &str) -> Option<String> {
    field(fields, name).map(|value| String::from_utf8_lossy(value).into_owned())
}

/// SendGrid's raw Inbound Parse (`email`, `envelope`) or a Mailgun route (`body-mime`, signed).
fn provider_form(hook: &Hook, fields: &[(String, Bytes)]) -> Result<Posted, IngressError> {
    if let Some(key) = &hook.definition.email.mailgun_signing_key {
        check_mailgun_signature(key, fields, jiff::Timestamp::now())?;
    }
    if let Some(mime) = field(fields, "email") {
        let envelope: Value =
            text_field(fields, "envelope").and_then(|text| serde_json::from_str(&text).ok()).unwrap_or(Value::Null);
        let recipients = envelope["to"]
            .as_array()
            .map(|to| to.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        return Ok(Posted {
            mime: mime.clone(),
            envelope_from: envelope["from"].as_str().map(str::to_owned),
            recipients,
            mailbox_hash: None,
        });
    }
    if let Some(mime) = field(fields, "body-mime") {
        return Ok(Posted {
            mime: mime.clone(),
            envelope_from: text_field(fields, "sender"),
            recipients: text_field(fields, "recipient").into_iter().collect(),
            mailbox_hash: None,
        });
    }
    Err(IngressError::MalformedBody(
        "the form has no message: expected SendGrid's raw \"email\" field or Mailgun's \"body-mime\"".into(),
    ))
}

/// Mailgun signs `timestamp` + `token` with the account's webhook signing key; checked by the
/// same code as its webhooks' signature, five minutes either way.
fn check_mailgun_signature(key: &str, fields: &[(String, Bytes)], now: jiff::Timestamp) -> Result<(), IngressError> {
    use crate::verify::VerifyError;
    let required = |name: &str| {
        text_field(fields, name).ok_or_else(|| IngressError::Unverified(VerifyError::MissingHeader(name.into())))
    };
    let (timestamp, token, signature) = (required("timestamp")?, required("token")?, required("signature")?);
    crate::verify::mailgun_route(
        &[key.to_owned()],
        timestamp.trim(),
        &token,
        signature.trim(),
        now,
        std::time::Duration::from_secs(300),
    )
    .map(|_| ())
    .map_err(IngressError::Unverified)
}

/// Postmark's inbound JSON rebuilt as a MIME message, so that one extractor reads every format.
fn postmark(body: &[u8]) -> Result<Posted, IngressError> {
    let json: Value = serde_json::from_slice(body).map_err(|error| {
        IngressError::MalformedBody(format!(
            "the body is not JSON (line {}, column {}): {error}",
            error.line(),
            error.column()
        ))
    })?;
    let text = |name: &str| json.get(name).and_then(Value::as_str).map(header_safe);
    if json.get("TextBody").is_none() && json.get("HtmlBody").is_none() && json.get("Attachments").is_none() {
        return Err(IngressError::MalformedBody(
            "JSON for an email hook must be Postmark's inbound format (TextBody, HtmlBody, Attachments)".into(),
        ));
    }
    let boundary = format!("hookgate-{}", crate::secrets::random_token(12));
    let alternative = format!("{boundary}-alt");
    let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut mime = String::new();
    for (header, field) in [("From", "From"), ("To", "To"), ("Subject", "Subject"), ("Date", "Date")] {
        if let Some(value) = text(field) {
            mime.push_str(&format!("{header}: {value}\r\n"));
        }
    }
    if let Some(id) = text("MessageID") {
        mime.push_str(&format!("Message-ID: <{}>\r\n", id.trim_matches(['<', '>'])));
    }
    mime.push_str(&format!("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"));
    mime.push_str(&format!("--{boundary}\r\nContent-Type: multipart/alternative; boundary=\"{alternative}\"\r\n\r\n"));
    for (field, media_type) in [("TextBody", "text/plain"), ("HtmlBody", "text/html")] {
        if let Some(content) = json.get(field).and_then(Value::as_str) {
            mime.push_str(&format!(
                "--{alternative}\r\nContent-Type: {media_type}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                base64(content.as_bytes())
            ));
        }
    }
    mime.push_str(&format!("--{alternative}--\r\n"));
    for attachment in json.get("Attachments").and_then(Value::as_array).into_iter().flatten() {
        let name = attachment.get("Name").and_then(Value::as_str).map(header_safe).unwrap_or_default().replace('"', "");
        let media_type = attachment
            .get("ContentType")
            .and_then(Value::as_str)
            .map(header_safe)
            .unwrap_or("application/octet-stream".into());
        let content = attachment.get("Content").and_then(Value::as_str).unwrap_or_default();
        mime.push_str(&format!(
            "--{boundary}\r\nContent-Type: {media_type}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            content.split_whitespace().collect::<String>()
        ));
    }
    mime.push_str(&format!("--{boundary}--\r\n"));
    let recipients = json
        .get("ToFull")
        .and_then(Value::as_array)
        .map(|to| to.iter().filter_map(|entry| entry.get("Email").and_then(Value::as_str)).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Posted {
        mime: Bytes::from(mime),
        envelope_from: text("From").and_then(|from| {
            from.rsplit_once('<').map(|(_, address)| address.trim_end_matches('>').to_owned()).or(Some(from))
        }),
        recipients,
        mailbox_hash: text("MailboxHash").filter(|hash| !hash.is_empty()),
    })
}

/// A header value on one line: a posted value can never add a header.
fn header_safe(value: &str) -> String {
    value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}
