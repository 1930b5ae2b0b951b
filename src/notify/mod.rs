//! Operator notices by mail: the `hookgate.*` events an operator chose (`notify_mail_events`),
//! mailed to `notify_email` through `smtp_relay` with lettre.
//!
//! Mail goes through an outbox in the store, like deliveries: the worker reads hookgate events
//! from the event log in commit order and queues them (`Store::queue_notice_mails`), one mail per
//! kind and subject (a subscription, a source, a hook) at most every `notify_mail_coalesce_secs`;
//! what happens meanwhile joins the next mail. It then sends what is due; a relay that is down
//! or refuses leaves the mail queued, tried again with a growing wait (up to 5 minutes). So an
//! outage delays mail and never loses it, and nothing in the request path waits for mail: the
//! events are committed in the background and read back here.
//!
//! This module must never put a secret in a mail: the events it tells of carry none, and the
//! relay's credentials stay in the transport.

mod render;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::store::{NoticeMail, Store};

/// How often the worker looks for new events and due mail.
const POLL: Duration = Duration::from_millis(500);
/// The longest wait between attempts at one mail.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// Where and what to mail, from configuration.
#[derive(Clone)]
pub struct MailSettings {
    pub to: Vec<String>,
    pub from: String,
    /// `smtp://host:port[?tls=required|none]` or `smtps://user:pass@host[:port]`.
    pub relay: String,
    /// PEM certificates trusted for the relay besides the public roots.
    pub relay_ca: Option<PathBuf>,
    /// The hookgate event names mailed.
    pub events: Vec<String>,
    pub coalesce: Duration,
    /// Where the API is, for the links in the mail.
    pub public_url: String,
}

/// Why the mailer could not be set up. Never shows the relay URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error("smtp_relay is not a usable smtp:// or smtps:// URL (its value is not shown)")]
    Relay,
    #[error("{0:?} is not a mail address")]
    Address(String),
    #[error("smtp_relay_ca {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("TLS for the relay could not be set up: {0}")]
    Tls(String),
}

/// The mail worker's state.
pub struct Mailer {
    store: Store,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    to: Vec<Mailbox>,
    from: Mailbox,
    settings: MailSettings,
}

impl Mailer {
    pub fn new(store: Store, settings: MailSettings) -> Result<Mailer, MailSetupError> {
        let mailbox =
            |address: &String| address.parse::<Mailbox>().map_err(|_| MailSetupError::Address(address.clone()));
        let to = settings.to.iter().map(mailbox).collect::<Result<_, _>>()?;
        let from = mailbox(&settings.from)?;
        let transport = transport(&settings.relay, settings.relay_ca.as_deref())?;
        Ok(Mailer { store, transport, to, from, settings })
    }
}

/// The transport a relay URL names: `smtp` uses STARTTLS when the relay offers it (`?tls=required`
/// insists on it, `?tls=none` never uses it), `smtps` is TLS from the first byte; user and
/// password in the URL log in.
fn transport(relay: &str, ca: Option<&std::path::Path>) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailSetupError> {
    let url = reqwest::Url::parse(relay).map_err(|_| MailSetupError::Relay)?;
    let host = url.host_str().ok_or(MailSetupError::Relay)?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let mut parameters = TlsParameters::builder(host.clone());
    if let Some(path) = ca {
        let pem = std::fs::read(path).map_err(|error| MailSetupError::Certificate {
            path: path.display().to_string(),
            reason: error.to_string(),
        })?;
        let certificate = Certificate::from_pem(&pem).map_err(|error| MailSetupError::Certificate {
            path: path.display().to_string(),
            reason: error.to_string(),
        })?;
        parameters = parameters.add_root_certificate(certificate);
    }
    let parameters = parameters.build_rustls().map_err(|error| MailSetupError::Tls(error.to_string()))?;
    let (mode, default_port) = relay_tls(&url).ok_or(MailSetupError::Relay)?;
    let tls = match mode {
        RelayTls::StartTlsWhenOffered => Tls::Opportunistic(parameters),
        RelayTls::StartTlsRequired => Tls::Required(parameters),
        RelayTls::Plain => Tls::None,
        RelayTls::Implicit => Tls::Wrapper(parameters),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(url.port().unwrap_or(default_port))
        .tls(tls)
        .timeout(Some(Duration::from_secs(30)));
    if let Some(password) = url.password() {
        let decode = |text: &str| percent_decode(text).ok_or(MailSetupError::Relay);
        builder = builder.credentials(Credentials::new(decode(url.username())?, decode(password)?));
    }
    Ok(builder.build())
}

/// How the relay connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayTls {
    /// `smtp://`: STARTTLS whenever the relay offers it.
    StartTlsWhenOffered,
    /// `smtp://…?tls=required`: no mail unless STARTTLS succeeds.
    StartTlsRequired,
    /// `smtp://…?tls=none`: never TLS.
    Plain,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// The relay URL's TLS mode and default port; `None` for any other scheme or `tls` value.
fn relay_tls(url: &reqwest::Url) -> Option<(RelayTls, u16)> {
    let tls = url.query_pairs().find(|(key, _)| key == "tls").map(|(_, value)| value.into_owned());
    match (url.scheme(), tls.as_deref()) {
        ("smtp", None | Some("opportunistic")) => Some((RelayTls::StartTlsWhenOffered, 25)),
        ("smtp", Some("required")) => Some((RelayTls::StartTlsRequired, 587)),
        ("smtp", Some("none")) => Some((RelayTls::Plain, 25)),
        ("smtps", None) => Some((RelayTls::Implicit, 465)),
        _ => None,
    }
}

/// `%XX` escapes of a URL's user or password decoded.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// Runs until `shutdown` resolves: queues new hookgate events, sends what is due.
pub async fn run(mailer: Arc<Mailer>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let now = Timestamp::now();
        let queued =
            mailer.store.queue_notice_mails(mailer.settings.events.clone(), mailer.settings.coalesce, now).await;
        if let Err(error) = queued {
            tracing::warn!(%error, "Notices could not be queued for mail; trying again shortly.");
        }
        match mailer.store.due_notice_mails(now, 16).await {
            Ok(due) => {
                for mail in due {
                    send(&mailer, mail).await;
                }
            }
            Err(error) => tracing::warn!(%error, "Due notice mails could not be read; trying again shortly."),
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Sends one mail and records the outcome: sent, or due again after a wait that doubles.
async fn send(mailer: &Mailer, mail: NoticeMail) {
    let outcome = match mailer.store.events(mail.event_ids.clone()).await {
        Ok(events) => {
            let message = render::message(&mail, &events, &mailer.settings.public_url, &mailer.from, &mailer.to);
            match message {
                Ok(message) => mailer.transport.send(message).await.map(|_| ()).map_err(|error| error.to_string()),
                Err(error) => Err(error),
            }
        }
        Err(error) => Err(error.to_string()),
    };
    let now = Timestamp::now();
    let recorded = match outcome {
        Ok(()) => {
            metrics::counter!("hookgate_notice_mails_total", "outcome" => "sent").increment(1);
            mailer.store.finish_notice_mail(mail.id, Ok(now)).await
        }
        Err(error) => {
            metrics::counter!("hookgate_notice_mails_total", "outcome" => "retry").increment(1);
            let wait = Duration::from_secs(1 << mail.attempts.min(8)).min(MAX_RETRY);
            tracing::warn!(%error, kind = %mail.kind, subject = %mail.subject, ?wait, "A notice mail could not be sent; it stays queued.");
            let retry_at = now + jiff::SignedDuration::try_from(wait).unwrap_or(jiff::SignedDuration::from_secs(300));
            mailer.store.finish_notice_mail(mail.id, Err((error, retry_at))).await
        }
    };
    if let Err(error) = recorded {
        // The mail stays due: it may go out twice, never not at all.
        tracing::warn!(%error, "A notice mail's outcome could not be recorded.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(relay: &str, expected: Option<(RelayTls, u16)>) {
        assert_eq!(relay_tls(&reqwest::Url::parse(relay).unwrap()), expected, "{relay}");
    }

    #[test]
    fn a_relay_url_says_how_its_connection_is_secured_starttls_by_default() {
        check("smtp://relay.example:2525", Some((RelayTls::StartTlsWhenOffered, 25)));
        check("smtp://relay.example?tls=required", Some((RelayTls::StartTlsRequired, 587)));
        check("smtp://relay.example?tls=none", Some((RelayTls::Plain, 25)));
        check("smtps://user:pass@relay.example", Some((RelayTls::Implicit, 465)));
        check("smtps://relay.example?tls=none", None);
        check("smtp://relay.example?tls=sometimes", None);
        check("http://relay.example", None);
    }

    #[test]
    fn relay_credentials_are_percent_decoded_and_never_shown_in_errors() {
        assert_eq!(percent_decode("p%40ss%2Fword").as_deref(), Some("p@ss/word"));
        assert_eq!(percent_decode("%zz"), None);
        let Err(error) = transport("ftp://user:hunter2@relay.example", None) else { panic!("an ftp relay") };
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
