//! Mail acceptance: one received message, over SMTP or posted over HTTP, for its recipient
//! hooks. DKIM (and, for SMTP, SPF) are looked up first; then the message is read once per way
//! its hooks read plain text, each hook decides what counts ([`crate::email::events_for_hook`]),
//! and every event of every recipient is committed in one transaction: all or nothing.

use bytes::Bytes;
use std::sync::Arc;

use super::Committer;
use super::authenticate::MailAuthenticator;
use crate::definitions::catalog::Hook;
use crate::email::extract::{self, Extracted, TextJson};
use crate::email::{Envelope, ReceivedMail, Recipient, Refusal, events_for_hook};
use crate::store::StoreError;

/// One hook a message is for: the hook, its address taken apart, and the address as written.
#[derive(Debug, Clone)]
pub struct MailRecipient {
    pub hook: Arc<Hook>,
    pub recipient: Recipient,
    pub address: String,
}

/// Why a message made no events.
#[derive(Debug)]
pub enum MessageError {
    Refused(Refusal),
    Store(StoreError),
}

/// Accepts messages: authentication lookups, then the commit.
pub struct MailAcceptor {
    committer: Arc<Committer>,
    /// DKIM and SPF; `None` when `mail_authentication` is off.
    authenticator: Option<MailAuthenticator>,
}

impl MailAcceptor {
    pub fn new(committer: Arc<Committer>, authenticator: Option<MailAuthenticator>) -> MailAcceptor {
        MailAcceptor { committer, authenticator }
    }

    /// Extracts, checks and stores one message (`raw`, RFC 5322) for its recipient hooks: every
    /// event committed in one transaction, or none. `stored` is kept with the events for replay:
    /// the message itself, or the HTTP body it came in. Returns the events' ids.
    pub async fn accept(
        &self,
        raw: Bytes,
        stored: Bytes,
        envelope: &Envelope,
        recipients: &[MailRecipient],
    ) -> Result<Vec<String>, MessageError> {
        let authentication = match &self.authenticator {
            Some(authenticator) => Some(authenticator.check(&raw, envelope.smtp_client.as_ref()).await),
            None => None,
        };
        // Hooks may read plain text differently: the message is read once per way asked for.
        let mut readings: Vec<(TextJson, Extracted)> = Vec::with_capacity(1);
        let received_at = jiff::Timestamp::now();
        let mut events = Vec::new();
        for MailRecipient { hook, recipient, address } in recipients {
            let settings = &hook.definition.email;
            let extracted = match readings.iter().position(|(mode, _)| *mode == settings.text_json) {
                Some(index) => &readings[index].1,
                None => {
                    let reading = read_message(&raw, settings.text_json).await?;
                    readings.push((settings.text_json, reading));
                    &readings[readings.len() - 1].1
                }
            };
            let mail = ReceivedMail {
                raw: &stored,
                extracted,
                envelope,
                authentication: authentication.as_ref(),
                received_at,
            };
            let made =
                events_for_hook(hook.identity(), settings, &mail, recipient, address).map_err(MessageError::Refused)?;
            events.extend(made);
        }
        let appended = self.committer.commit(events).await.map_err(MessageError::Store)?;
        Ok(appended.into_iter().map(|appended| appended.id).collect())
    }
}

/// Extracts on a blocking thread when the message is large enough to hold up other sessions.
async fn read_message(raw: &Bytes, text_json: TextJson) -> Result<Extracted, MessageError> {
    let unreadable = |_| MessageError::Refused(Refusal::Unreadable);
    if raw.len() <= 64 * 1024 {
        return extract::extract(raw, text_json).map_err(unreadable);
    }
    let raw = raw.clone();
    tokio::task::spawn_blocking(move || extract::extract(&raw, text_json))
        .await
        .map_err(|_| MessageError::Refused(Refusal::Unreadable))?
        .map_err(unreadable)
}
