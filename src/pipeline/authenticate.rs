//! DKIM and SPF for received mail, by mail-auth, recorded in each event's `source.mail`: the
//! lookups mail acceptance makes before its commit (kept out of `email`, which does no I/O).
//!
//! DKIM is checked on every message (the signatures travel with it, over SMTP or HTTP). SPF needs
//! the connecting client's address, its EHLO name and the envelope sender, so it is checked for
//! SMTP only. Lookups go to the configured nameserver (`dns_resolver`), else to the system's;
//! the resolver caches answers. A lookup that fails is a `temperror` result, never a refusal:
//! the results are facts about the message, and a hook decides what it trusts (`requireDkim`).

use std::net::SocketAddr;
use std::time::Duration;

use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, SpfResult};

use crate::email::SmtpClient;
use crate::event::{DkimCheck, MailAuthentication, SpfCheck};

/// The DKIM and SPF checker, with its resolver.
pub struct MailAuthenticator {
    inner: MessageAuthenticator,
    /// This host's name for SPF's `%{r}` macro: the mail domain.
    host_domain: String,
}

impl MailAuthenticator {
    /// A checker that asks `nameserver` (UDP, then TCP), or the system's resolvers when `None`.
    pub fn new(nameserver: Option<SocketAddr>, host_domain: &str) -> Result<MailAuthenticator, String> {
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_secs(3);
        options.attempts = 2;
        let inner = match nameserver {
            Some(address) => {
                let mut server = NameServerConfig::udp_and_tcp(address.ip());
                for connection in &mut server.connections {
                    connection.port = address.port();
                }
                MessageAuthenticator::new(ResolverConfig::from_parts(None, Vec::new(), vec![server]), options)
            }
            None => MessageAuthenticator::new_system_conf(),
        }
        .map_err(|error| format!("cannot set up DNS for DKIM and SPF: {error}"))?;
        Ok(MailAuthenticator { inner, host_domain: host_domain.to_owned() })
    }

    /// Checks every DKIM signature of `raw`, and SPF for `client` when the mail came over SMTP.
    pub async fn check(&self, raw: &[u8], client: Option<&SmtpClient>) -> MailAuthentication {
        let mut authentication = MailAuthentication::default();
        if let Some(message) = AuthenticatedMessage::parse(raw) {
            let outputs = self.inner.verify_dkim(&message).await;
            authentication.dkim = outputs
                .iter()
                .map(|output| DkimCheck {
                    domain: output.signature().map(|signature| signature.d.to_ascii_lowercase()),
                    selector: output.signature().map(|signature| signature.s.clone()),
                    result: dkim_result(output.result()).to_owned(),
                    reason: dkim_reason(output.result()),
                })
                .collect();
        }
        if let Some(client) = client {
            let helo = if client.helo.is_empty() { "unknown" } else { client.helo.as_str() };
            let parameters = if client.mail_from.is_empty() {
                mail_auth::spf::verify::SpfParameters::verify_ehlo(client.ip, helo, &self.host_domain)
            } else {
                mail_auth::spf::verify::SpfParameters::verify_mail_from(
                    client.ip,
                    helo,
                    &self.host_domain,
                    &client.mail_from,
                )
            };
            let output = self.inner.verify_spf(parameters).await;
            authentication.spf =
                Some(SpfCheck { domain: output.domain().to_owned(), result: spf_result(output.result()).to_owned() });
        }
        authentication
    }
}

fn dkim_result(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dkim_reason(result: &DkimResult) -> Option<String> {
    match result {
        DkimResult::Neutral(error)
        | DkimResult::Fail(error)
        | DkimResult::PermError(error)
        | DkimResult::TempError(error) => Some(error.to_string()),
        DkimResult::Pass | DkimResult::None => None,
    }
}

fn spf_result(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}
