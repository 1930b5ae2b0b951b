//! A notice mail's text: a subject, then plain text and HTML saying what happened, when, and
//! what to do (with the API's address). Pure.

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};

use crate::event::Event;
use crate::store::NoticeMail;

/// The message for `mail`, telling of `events` (those still stored, oldest first).
pub(super) fn message(
    mail: &NoticeMail,
    events: &[Event],
    public_url: &str,
    from: &Mailbox,
    to: &[Mailbox],
) -> Result<Message, String> {
    let mut events: Vec<&Event> = events.iter().collect();
    events.sort_by(|a, b| a.id.cmp(&b.id));
    let base = public_url.trim_end_matches('/');
    let with_links = |text: &str| text.replace(" /api/", &format!(" {base}/api/"));
    let subject = match events.as_slice() {
        [one] => format!("[hookgate] {}", text_of(one, "summary")),
        _ => format!("[hookgate] {} × {} for {}", events.len(), mail.kind, mail.subject),
    };
    let mut text = String::new();
    let mut html = String::from("<html><body>");
    if events.len() > 1 {
        let intro = format!("{} {} events for {}:", events.len(), mail.kind, mail.subject);
        text.push_str(&intro);
        text.push_str("\n\n");
        html.push_str(&format!("<p>{}</p>", html_escape::encode_text(&intro)));
    }
    html.push_str("<ul>");
    for event in &events {
        let summary = text_of(event, "summary");
        let fix = with_links(&text_of(event, "fix"));
        text.push_str(&format!(
            "{}  {}\n  {summary}\n  {fix}\n  Event: {base}/api/events/{}\n\n",
            event.received_at, event.name, event.id
        ));
        html.push_str(&format!(
            "<li><p><b>{}</b> {}</p><p>{}</p><p>{}</p><p>Event: <a href=\"{base}/api/events/{}\">{}</a></p></li>",
            event.received_at,
            html_escape::encode_text(&event.name),
            html_escape::encode_text(&summary),
            html_escape::encode_text(&fix),
            event.id,
            event.id,
        ));
    }
    html.push_str("</ul></body></html>");
    let mut builder = Message::builder().from(from.clone()).subject(subject);
    for address in to {
        builder = builder.to(address.clone());
    }
    builder.multipart(MultiPart::alternative_plain_html(text, html)).map_err(|error| error.to_string())
}

fn text_of(event: &Event, field: &str) -> String {
    event.data.get(field).and_then(|value| value.as_str()).unwrap_or_default().to_owned()
}
