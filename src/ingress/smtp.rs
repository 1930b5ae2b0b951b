//! The SMTP listener: hookgate's own session loop over smtp-proto's command parser. A transport
//! only: what a message makes is decided by [`crate::pipeline::mail::MailAcceptor`].
//!
//! One task per connection, up to a cap and a share per client address (more are answered `421`
//! and closed at once); each client address has a rate of messages, past which `MAIL` is answered
//! `421` and the session ends. Commands are read
//! in pipelined batches and their replies written together when the input runs dry. Each
//! command must arrive within the idle timeout and the whole session within its deadline.
//! Recipients are checked at `RCPT`: an address that is not an email hook's is refused there
//! (`550 5.1.1`), so hookgate never relays and never accepts mail it would drop. The message is
//! read up to the size limit (advertised in `SIZE`; past it the rest is read and discarded and
//! the answer is `552`). A message's buffer is reserved in the process's budget for bodies in
//! flight as it grows (from the declared `SIZE`, else doubling): with no room, `DATA` is
//! answered `452`, and a message that outgrows the room left is read to its end, discarded and
//! answered `452`, so that the sender retries later. `250` is sent only after every event of
//! the message is committed; a store failure answers `451` (`452` when the disk is full) so that
//! the sender retries. STARTTLS (when a certificate is configured) discards anything the client
//! sent after the command, and starts the session over. These are the listener's opening steps,
//! its equivalents of HTTP's: the declared `SIZE` (552 at `MAIL`), the size limit while reading,
//! the command and session deadlines; one tracing span per session.
//!
//! At shutdown the listener keeps answering for a while, but every new connection gets `421`;
//! a session between messages gets `421` and is closed, and one in a mail transaction (from
//! `MAIL` to the end of `DATA`) finishes its message first. Once every session has ended, or
//! the grace period has, the listener closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver, RequestReceiver};
use smtp_proto::{Error as ParseError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use super::IngressState;
use super::budget::Reservation;
use super::fairness::{ClientKey, ConnectionRefusal, ConnectionTable, Rate, RateTable, retry_after_secs};
use crate::email::{Envelope, Refusal, parse_recipient, refusal_label};
use crate::pipeline::mail::{MailRecipient, MessageError};
use crate::store::StoreError;

/// The listener's limits and identity.
#[derive(Clone)]
pub struct SmtpSettings {
    /// The domain of hook addresses; also the name in the greeting.
    pub domain: String,
    pub max_message_bytes: usize,
    pub command_timeout: Duration,
    pub session_timeout: Duration,
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 /64) at most.
    pub max_connections_per_client: usize,
    /// Messages (`MAIL` commands) one client address may send; `None`: unlimited.
    pub client_messages: Option<Rate>,
    pub max_recipients: usize,
    /// Refused or malformed commands before the connection is closed.
    pub max_errors: usize,
    /// Offered as STARTTLS when set.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A TLS acceptor from PEM files; the error names the file and the problem, never key material.
pub fn tls_acceptor(certificate: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read the SMTP TLS certificate {}: {error}", certificate.display()))?;
    if chain.is_empty() {
        return Err(format!("the SMTP TLS certificate file {} holds no certificate", certificate.display()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("cannot read the SMTP TLS key {}: {error}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS set-up failed: {error}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|error| format!("the SMTP TLS certificate and key do not go together: {error}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// What a connection that arrives during shutdown is told.
const SHUTTING_DOWN: &[u8] = b"421 4.3.2 Service shutting down, try again later\r\n";

/// Accepts SMTP connections until `shutdown` resolves, then lets the open sessions finish
/// their messages for at most `grace`, answering new connections `421` meanwhile.
pub async fn serve(
    listener: TcpListener,
    state: Arc<IngressState>,
    settings: Arc<SmtpSettings>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let connections = ConnectionTable::new(settings.max_connections, settings.max_connections_per_client);
    let messages =
        Arc::new(settings.client_messages.map(|rate| RateTable::new(rate, super::fairness::CLIENTS_TRACKED)));
    // One permit per open session, all taken back at shutdown to know when every session ended.
    let sessions = Arc::new(Semaphore::new(settings.max_connections));
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept(&listener) => match accepted {
                Some(accepted) => accepted,
                None => continue,
            },
        };
        let permit = match connections.open(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                let reply: &'static [u8] = match refusal {
                    ConnectionRefusal::GatewayFull => b"421 4.3.2 Too many connections, try again later\r\n",
                    ConnectionRefusal::ClientAtLimit => {
                        b"421 4.7.0 Too many connections from your address, try again later\r\n"
                    }
                };
                refuse(stream, reply);
                metrics::counter!("hookgate_smtp_connections_refused_total", "reason" => refusal.label()).increment(1);
                continue;
            }
        };
        // The table admits at most `max_connections`, so a session permit is always free here.
        let Ok(session_permit) = sessions.clone().try_acquire_owned() else {
            refuse(stream, b"421 4.3.2 Too many connections, try again later\r\n");
            continue;
        };
        let state = state.clone();
        let settings = settings.clone();
        let messages = messages.clone();
        let stopping = stopping.clone();
        let span = tracing::info_span!("smtp_session", %peer);
        tokio::spawn(
            async move {
                run_session(stream, peer, &state, &settings, messages.as_ref().as_ref(), stopping).await;
                drop(session_permit);
                drop(permit);
            }
            .instrument(span),
        );
    }
    let _ = stopping_tx.send(true);
    let every_session = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    let sessions_ended = sessions.acquire_many(every_session);
    tokio::pin!(sessions_ended);
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut sessions_ended => return,
            () = &mut deadline => {
                let open = settings.max_connections - sessions.available_permits();
                tracing::warn!(open, "SMTP sessions were still open when the shutdown grace period ended.");
                return;
            }
            accepted = accept(&listener) => {
                if let Some((stream, _)) = accepted {
                    refuse(stream, SHUTTING_DOWN);
                }
            }
        }
    }
}

/// The next connection, or `None` after a failed accept (logged, with a pause: usually out of
/// file descriptors).
async fn accept(listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, peer))
        }
        Err(error) => {
            tracing::warn!(%error, "An SMTP connection could not be accepted.");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Answers a connection that will not get a session with `reply`, and closes it.
fn refuse(mut stream: TcpStream, reply: &'static [u8]) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(reply)).await;
    });
}

/// A connection before or after STARTTLS.
enum Connection {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Connection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(stream) => std::pin::Pin::new(stream).poll_read(cx, buf),
            Connection::Tls(stream) => std::pin::Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(stream) => std::pin::Pin::new(stream).poll_write(cx, buf),
            Connection::Tls(stream) => std::pin::Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(stream) => std::pin::Pin::new(stream).poll_flush(cx),
            Connection::Tls(stream) => std::pin::Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(stream) => std::pin::Pin::new(stream).poll_shutdown(cx),
            Connection::Tls(stream) => std::pin::Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

async fn run_session(
    stream: TcpStream,
    peer: SocketAddr,
    state: &IngressState,
    settings: &SmtpSettings,
    messages: Option<&RateTable<ClientKey>>,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    let deadline = Instant::now() + settings.session_timeout;
    let mut connection = Connection::Plain(stream);
    let mut session = Session::new(state, settings, peer, messages, stopping);
    session.reply(220, [2, 0, 0], &format!("{} hookgate ESMTP ready", settings.domain));
    loop {
        match session.converse(&mut connection, deadline).await {
            Ending::Close => break,
            Ending::StartTls => {
                let (Connection::Plain(tcp), Some(acceptor)) = (connection, settings.tls.as_ref()) else { return };
                match tokio::time::timeout_at(
                    deadline.min(Instant::now() + settings.command_timeout),
                    acceptor.accept(tcp),
                )
                .await
                {
                    Ok(Ok(tls)) => {
                        connection = Connection::Tls(Box::new(tls));
                        session.restart_after_tls();
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "An SMTP TLS handshake failed.");
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
    }
    let _ = connection.shutdown().await;
}

/// Why a conversation stopped.
enum Ending {
    Close,
    StartTls,
}

/// What the parser made of the buffered input.
enum Step {
    /// More input is needed.
    NeedMore,
    /// A command was handled and its reply queued.
    Replied,
    /// A whole message arrived, with its bytes' reservation, or why it was discarded.
    Message(Result<(Vec<u8>, Reservation), Discarded>),
    StartTls,
    Close,
}

enum Phase {
    Command,
    Data {
        receiver: DataReceiver,
        message: Vec<u8>,
        reservation: Reservation,
    },
    /// The message is over the size limit, or the budget: read to its end, kept nowhere.
    Discard(DummyDataReceiver, Discarded),
}

/// Why a message was read to its end and not kept.
#[derive(Debug, Clone, Copy)]
enum Discarded {
    TooLarge,
    OverBudget,
}

/// A message's buffer starts at its declared `SIZE`, or at this, then doubles.
const FIRST_MESSAGE_BYTES: usize = 16 * 1024;

struct Transaction {
    from: String,
    /// The `SIZE` declared at `MAIL`, 0 if none.
    declared_size: usize,
    recipients: Vec<MailRecipient>,
}

struct Session<'a> {
    state: &'a IngressState,
    settings: &'a SmtpSettings,
    /// Each client address's rate of messages.
    messages: Option<&'a RateTable<ClientKey>>,
    peer: SocketAddr,
    tls: bool,
    greeted: bool,
    /// The name the client gave in EHLO or HELO.
    helo: String,
    transaction: Option<Transaction>,
    errors: usize,
    phase: Phase,
    commands: RequestReceiver,
    /// The bytes of the command being parsed (its first [`COMMAND_LINE_KEPT`] bytes), so that a
    /// parameter can be read as sent: smtp-proto's `SIZE` wraps past `usize`.
    command_line: Vec<u8>,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Becomes true when the gateway shuts down.
    stopping: tokio::sync::watch::Receiver<bool>,
}

/// How much of a command line is kept for [`declares_more_than`]; RFC 5321 allows 512 bytes.
const COMMAND_LINE_KEPT: usize = 1024;

impl<'a> Session<'a> {
    fn new(
        state: &'a IngressState,
        settings: &'a SmtpSettings,
        peer: SocketAddr,
        messages: Option<&'a RateTable<ClientKey>>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Session<'a> {
        Session {
            stopping,
            state,
            settings,
            messages,
            peer,
            tls: false,
            greeted: false,
            helo: String::new(),
            transaction: None,
            errors: 0,
            phase: Phase::Command,
            commands: RequestReceiver::default(),
            command_line: Vec::with_capacity(128),
            input: Vec::with_capacity(4096),
            output: Vec::with_capacity(512),
        }
    }

    /// RFC 3207: after the handshake the client starts over with EHLO; nothing from before counts.
    fn restart_after_tls(&mut self) {
        self.tls = true;
        self.greeted = false;
        self.transaction = None;
        self.phase = Phase::Command;
        self.commands = RequestReceiver::default();
        self.command_line.clear();
        self.input.clear();
    }

    /// Reads, parses and answers until the client quits, the session must end, or STARTTLS.
    async fn converse(&mut self, connection: &mut Connection, deadline: Instant) -> Ending {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match self.step() {
                Step::Replied => {}
                Step::Message(message) => {
                    let reply = match message {
                        Ok((message, reservation)) => {
                            let reply = self.deliver(message).await;
                            drop(reservation);
                            reply
                        }
                        Err(Discarded::TooLarge) => format!(
                            "552 5.3.4 The message exceeds the maximum size of {} bytes",
                            self.settings.max_message_bytes
                        ),
                        Err(Discarded::OverBudget) => OVER_BUDGET_REPLY.to_owned(),
                    };
                    self.output.extend_from_slice(reply.as_bytes());
                    self.output.extend_from_slice(b"\r\n");
                    self.transaction = None;
                }
                Step::StartTls => {
                    if self.flush(connection).await.is_err() {
                        return Ending::Close;
                    }
                    // Anything pipelined after STARTTLS was sent in the clear: it is dropped.
                    self.input.clear();
                    return Ending::StartTls;
                }
                Step::Close => {
                    let _ = self.flush(connection).await;
                    return Ending::Close;
                }
                Step::NeedMore => {
                    if self.between_messages() && *self.stopping.borrow() {
                        return self.close_for_shutdown(connection).await;
                    }
                    if self.flush(connection).await.is_err() {
                        return Ending::Close;
                    }
                    let idle = Instant::now() + self.settings.command_timeout;
                    let between_messages = self.between_messages();
                    let read = tokio::select! {
                        read = tokio::time::timeout_at(idle.min(deadline), connection.read(&mut chunk)) => Some(read),
                        // Waiting between messages when the gateway stops: said so at once.
                        _ = self.stopping.wait_for(|stopping| *stopping), if between_messages => None,
                    };
                    let Some(read) = read else { return self.close_for_shutdown(connection).await };
                    match read {
                        Ok(Ok(0)) | Ok(Err(_)) => return Ending::Close,
                        Ok(Ok(read)) => self.input.extend_from_slice(&chunk[..read]),
                        Err(_) => {
                            let reason = if Instant::now() >= deadline { "Session time limit" } else { "Idle timeout" };
                            self.reply(421, [4, 4, 2], &format!("{reason} reached, closing connection"));
                            let _ = self.flush(connection).await;
                            return Ending::Close;
                        }
                    }
                }
            }
        }
    }

    /// No mail transaction is open: nothing the client sent is waiting for its answer.
    fn between_messages(&self) -> bool {
        self.transaction.is_none() && matches!(self.phase, Phase::Command)
    }

    /// The gateway is shutting down: `421`, and the connection is closed.
    async fn close_for_shutdown(&mut self, connection: &mut Connection) -> Ending {
        self.reply(421, [4, 3, 2], "Service shutting down, closing connection");
        let _ = self.flush(connection).await;
        Ending::Close
    }

    async fn flush(&mut self, connection: &mut Connection) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        connection.write_all(&self.output).await?;
        connection.flush().await?;
        self.output.clear();
        Ok(())
    }

    /// Consumes buffered input: at most one command, or as much of a message as has arrived.
    fn step(&mut self) -> Step {
        let input = std::mem::take(&mut self.input);
        let mut bytes = input.iter();
        let step = match &mut self.phase {
            Phase::Command => {
                let parsed = self.commands.ingest(&mut bytes).map(Request::into_owned);
                let read = &input[..input.len() - bytes.as_slice().len()];
                let room = COMMAND_LINE_KEPT.saturating_sub(self.command_line.len());
                self.command_line.extend_from_slice(&read[..read.len().min(room)]);
                let step = match parsed {
                    Ok(request) => self.command(request),
                    Err(ParseError::NeedsMoreData { .. }) => Step::NeedMore,
                    Err(error) => self.parse_error(error),
                };
                if !matches!(step, Step::NeedMore) {
                    self.command_line.clear();
                }
                step
            }
            Phase::Data { receiver, message, reservation } => {
                // The message grows by at most the input's length (dots and line ends only
                // shrink it): room for that is reserved before the buffer grows.
                let ceiling = self.settings.max_message_bytes + 1;
                let fits = make_room(message, reservation, message.len() + input.len(), ceiling);
                if !fits {
                    self.phase = Phase::Discard(DummyDataReceiver::new_data(receiver), Discarded::OverBudget);
                    Step::Replied
                } else {
                    let complete = receiver.ingest(&mut bytes, message);
                    let too_large = message.len() > self.settings.max_message_bytes;
                    if complete {
                        let message = std::mem::take(message);
                        let reservation = std::mem::replace(reservation, self.state.body_budget.reservation());
                        self.phase = Phase::Command;
                        Step::Message(if too_large { Err(Discarded::TooLarge) } else { Ok((message, reservation)) })
                    } else if too_large {
                        self.phase = Phase::Discard(DummyDataReceiver::new_data(receiver), Discarded::TooLarge);
                        Step::Replied
                    } else {
                        Step::NeedMore
                    }
                }
            }
            Phase::Discard(receiver, why) => {
                if receiver.ingest(&mut bytes) {
                    let why = *why;
                    self.phase = Phase::Command;
                    Step::Message(Err(why))
                } else {
                    Step::NeedMore
                }
            }
        };
        let consumed = input.len() - bytes.as_slice().len();
        let mut input = input;
        input.drain(..consumed);
        self.input = input;
        step
    }

    fn reply(&mut self, code: u16, status: [u8; 3], text: &str) {
        use std::io::Write;
        let _ = write!(self.output, "{code} {}.{}.{} {}\r\n", status[0], status[1], status[2], one_line(text));
    }

    /// A refused command: replied, counted, and past the limit the connection is closed.
    fn refuse(&mut self, code: u16, status: [u8; 3], text: &str) -> Step {
        self.reply(code, status, text);
        self.errors += 1;
        if self.errors >= self.settings.max_errors {
            self.reply(421, [4, 7, 0], "Too many errors, closing connection");
            return Step::Close;
        }
        Step::Replied
    }

    /// `552` for a `MAIL` whose declared `SIZE` is over the limit.
    fn refuse_size(&mut self) -> Step {
        let limit = self.settings.max_message_bytes;
        self.refuse(552, [5, 3, 4], &format!("The message exceeds the maximum size of {limit} bytes"))
    }

    fn parse_error(&mut self, error: ParseError) -> Step {
        match error {
            ParseError::UnknownCommand => self.refuse(500, [5, 5, 1], "Unknown command"),
            ParseError::InvalidSenderAddress => self.refuse(501, [5, 1, 7], "Bad sender address syntax"),
            ParseError::InvalidRecipientAddress => self.refuse(501, [5, 1, 3], "Bad recipient address syntax"),
            ParseError::SyntaxError { syntax } => self.refuse(501, [5, 5, 4], &format!("Syntax: {syntax}")),
            ParseError::InvalidParameter { param: "SIZE" }
                if declares_more_than(&self.command_line, self.settings.max_message_bytes) =>
            {
                self.refuse_size()
            }
            ParseError::InvalidParameter { param } => {
                self.refuse(501, [5, 5, 4], &format!("Invalid value for parameter {param}"))
            }
            ParseError::UnsupportedParameter { param } => {
                self.refuse(504, [5, 5, 4], &format!("Unsupported parameter {}", one_line(&param)))
            }
            ParseError::ResponseTooLong => self.refuse(500, [5, 5, 2], "Line too long"),
            ParseError::NeedsMoreData { .. } | ParseError::InvalidResponse { .. } => {
                self.refuse(500, [5, 5, 2], "Syntax error")
            }
        }
    }

    fn command(&mut self, request: Request<String>) -> Step {
        match request {
            Request::Ehlo { host } => {
                self.greeted = true;
                self.helo = host.clone();
                self.transaction = None;
                let mut lines = vec![
                    format!("{} greets {}", self.settings.domain, one_line(&host)),
                    "PIPELINING".to_owned(),
                    format!("SIZE {}", self.settings.max_message_bytes),
                    "8BITMIME".to_owned(),
                    "ENHANCEDSTATUSCODES".to_owned(),
                ];
                if self.settings.tls.is_some() && !self.tls {
                    lines.push("STARTTLS".to_owned());
                }
                let last = lines.len() - 1;
                for (index, line) in lines.iter().enumerate() {
                    let separator = if index == last { ' ' } else { '-' };
                    self.output.extend_from_slice(format!("250{separator}{line}\r\n").as_bytes());
                }
                Step::Replied
            }
            Request::Helo { host } => {
                self.greeted = true;
                self.helo = host;
                self.transaction = None;
                let domain = self.settings.domain.clone();
                self.output.extend_from_slice(format!("250 {domain}\r\n").as_bytes());
                Step::Replied
            }
            Request::Lhlo { .. } => self.refuse(500, [5, 5, 1], "This is SMTP, not LMTP"),
            Request::Mail { from } => {
                if !self.greeted {
                    return self.refuse(503, [5, 5, 1], "Send EHLO or HELO first");
                }
                if self.transaction.is_some() {
                    return self.refuse(503, [5, 5, 1], "Nested MAIL command");
                }
                if from.size > self.settings.max_message_bytes
                    || declares_more_than(&self.command_line, self.settings.max_message_bytes)
                {
                    return self.refuse_size();
                }
                if let Some(Err(wait)) =
                    self.messages.map(|table| table.take(ClientKey::of(self.peer.ip()), Instant::now().into_std()))
                {
                    metrics::counter!("hookgate_smtp_messages_limited_total").increment(1);
                    let seconds = retry_after_secs(wait);
                    self.reply(
                        421,
                        [4, 7, 0],
                        &format!("Too many messages from your address; try again in {seconds} seconds"),
                    );
                    return Step::Close;
                }
                self.transaction =
                    Some(Transaction { from: from.address, declared_size: from.size, recipients: Vec::new() });
                self.reply(250, [2, 1, 0], "Sender OK");
                Step::Replied
            }
            Request::Rcpt { to } => self.recipient(&to.address),
            Request::Data => match &self.transaction {
                None => self.refuse(503, [5, 5, 1], "Need MAIL and RCPT first"),
                Some(transaction) if transaction.recipients.is_empty() => {
                    self.refuse(554, [5, 5, 1], "No valid recipients")
                }
                Some(transaction) => {
                    let first = match transaction.declared_size {
                        0 => FIRST_MESSAGE_BYTES,
                        declared => declared,
                    };
                    let first = first.min(self.settings.max_message_bytes + 1);
                    let mut reservation = self.state.body_budget.reservation();
                    if reservation.grow_to(first as u64).is_err() {
                        self.output.extend_from_slice(OVER_BUDGET_REPLY.as_bytes());
                        self.output.extend_from_slice(b"\r\n");
                        return Step::Replied;
                    }
                    self.output.extend_from_slice(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n");
                    let message = Vec::with_capacity(first);
                    self.phase = Phase::Data { receiver: DataReceiver::new(), message, reservation };
                    Step::Replied
                }
            },
            Request::Rset => {
                self.transaction = None;
                self.reply(250, [2, 0, 0], "Reset OK");
                Step::Replied
            }
            Request::Noop { .. } => {
                self.reply(250, [2, 0, 0], "OK");
                Step::Replied
            }
            Request::Quit => {
                self.reply(221, [2, 0, 0], "Bye");
                Step::Close
            }
            Request::Vrfy { .. } => {
                self.reply(252, [2, 5, 2], "Cannot verify addresses; send the message and see");
                Step::Replied
            }
            Request::Help { .. } => {
                self.reply(214, [2, 0, 0], "hookgate turns mail to hook addresses into events; see RFC 5321");
                Step::Replied
            }
            Request::StartTls => {
                if self.settings.tls.is_none() {
                    self.refuse(502, [5, 5, 1], "STARTTLS is not available: no certificate is configured")
                } else if self.tls {
                    self.refuse(503, [5, 5, 1], "TLS is already active")
                } else {
                    self.reply(220, [2, 0, 0], "Ready to start TLS");
                    Step::StartTls
                }
            }
            Request::Auth { .. } => self.refuse(502, [5, 5, 1], "Authentication is not supported here"),
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Bdat { .. }
            | Request::Burl { .. } => self.refuse(502, [5, 5, 1], "Command not implemented"),
        }
    }

    fn recipient(&mut self, address: &str) -> Step {
        let Some(transaction) = &self.transaction else {
            return self.refuse(503, [5, 5, 1], "Need MAIL before RCPT");
        };
        if transaction.recipients.len() >= self.settings.max_recipients {
            self.reply(452, [4, 5, 3], "Too many recipients");
            return Step::Replied;
        }
        let Some(recipient) = parse_recipient(address, &self.settings.domain) else {
            return self.refuse(
                550,
                [5, 7, 1],
                &format!("Relaying denied: this server only accepts mail for @{}", self.settings.domain),
            );
        };
        let catalog = self.state.catalog.current();
        let Some(hook) = catalog.hook_by_mail_token(&recipient.token).cloned() else {
            return self.refuse(550, [5, 1, 1], "No such hook address");
        };
        let transaction = self.transaction.as_mut().expect("checked above");
        if !transaction.recipients.iter().any(|known| Arc::ptr_eq(&known.hook, &hook)) {
            transaction.recipients.push(MailRecipient { hook, recipient, address: address.to_owned() });
        }
        self.reply(250, [2, 1, 5], "Recipient OK");
        Step::Replied
    }

    /// Turns a whole message into events for every recipient hook and commits them, all or
    /// nothing, then answers.
    async fn deliver(&mut self, message: Vec<u8>) -> String {
        let Some(transaction) = self.transaction.take() else {
            return "503 5.5.1 Need MAIL and RCPT first".into();
        };
        let envelope = Envelope {
            peer: Some(self.peer.to_string()),
            from: Some(transaction.from.clone()).filter(|from| !from.is_empty()),
            stored_content_type: None,
            smtp_client: Some(crate::email::SmtpClient {
                ip: self.peer.ip(),
                helo: self.helo.clone(),
                mail_from: transaction.from,
            }),
        };
        let message = Bytes::from(message);
        let outcome = self.state.mail.accept(message.clone(), message, &envelope, &transaction.recipients).await;
        let (label, reply) = match outcome {
            Ok(ids) => ("accepted", format!("250 2.0.0 OK: queued as {}", summarize_ids(&ids))),
            Err(MessageError::Refused(refusal)) => {
                let status = match refusal {
                    Refusal::Unreadable | Refusal::NothingToExtract(_) => "5.6.0",
                    _ => "5.7.1",
                };
                (refusal_label(&refusal), format!("550 {status} {}", one_line(&refusal.to_string())))
            }
            Err(MessageError::Store(StoreError::Full(error))) => {
                tracing::error!(%error, "An email could not be stored: the disk is full; the sender was told to retry.");
                ("storage_full", "452 4.3.1 Insufficient system storage; try again later".to_owned())
            }
            Err(MessageError::Store(error)) => {
                tracing::error!(%error, "An email could not be stored; the sender was told to retry.");
                ("store_error", "451 4.3.0 The message could not be stored; try again later".to_owned())
            }
        };
        metrics::counter!("hookgate_email_messages_total", "transport" => "smtp", "outcome" => label).increment(1);
        reply
    }
}

/// Makes room in `message` for `needed` bytes in all, doubling up to `ceiling`, with the
/// growth reserved in the budget first; false when the budget has no room.
fn make_room(message: &mut Vec<u8>, reservation: &mut Reservation, needed: usize, ceiling: usize) -> bool {
    if needed <= message.capacity() {
        return true;
    }
    let capacity = (message.capacity() * 2).min(ceiling).max(needed);
    if reservation.grow_to(capacity as u64).is_err() {
        return false;
    }
    message.reserve_exact(capacity.saturating_sub(message.len()));
    true
}

/// The answer when the budget for bodies in flight has no room for a message.
const OVER_BUDGET_REPLY: &str = "452 4.3.1 Too many messages are being received at once; try again later";

/// Whether a `MAIL` command line declares a `SIZE` above `limit`, read from the digits as sent:
/// a number of any length, so that one past `u64` (which smtp-proto's parser wraps to a small
/// value, or refuses as invalid) counts as the oversize it is.
fn declares_more_than(line: &[u8], limit: usize) -> bool {
    let line = line.split(|&byte| byte == b'\n').next().unwrap_or_default();
    // The parameters follow the address.
    let parameters = line.iter().position(|&byte| byte == b'>').map_or(line, |end| &line[end + 1..]);
    parameters
        .split(u8::is_ascii_whitespace)
        .filter_map(|parameter| {
            let (name, digits) = parameter.split_at_checked(5)?;
            (name.eq_ignore_ascii_case(b"SIZE=") && !digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
                .then_some(digits)
        })
        .any(|digits| {
            let significant = &digits[digits.iter().position(|&digit| digit != b'0').unwrap_or(digits.len())..];
            let value = std::str::from_utf8(significant).ok().and_then(|text| text.parse::<u128>().ok());
            // More digits than a u128 holds is more than any limit.
            value.is_none_or(|value| value > limit as u128) && !significant.is_empty()
        })
}

fn summarize_ids(ids: &[String]) -> String {
    match ids {
        [] => "nothing".into(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} and {} more", rest.len()),
    }
}

/// Reply text on one line, printable ASCII, at most 400 characters.
fn one_line(text: &str) -> String {
    let mut line: String =
        text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { ' ' }).take(400).collect();
    line.truncate(line.trim_end().len());
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_size_of_any_length_is_compared_with_the_limit() {
        let over = |line: &str| declares_more_than(line.as_bytes(), 2048);
        assert!(over("MAIL FROM:<a@b.example> SIZE=4096\r\n"));
        assert!(over("MAIL FROM:<a@b.example> size=2049"));
        assert!(over("MAIL FROM:<a@b.example> SIZE=999999999999999999999999\r\n"), "past u64");
        assert!(over(&format!("MAIL FROM:<a@b.example> BODY=8BITMIME SIZE={}\r\n", "9".repeat(60))), "past u128");
        assert!(!over("MAIL FROM:<a@b.example> SIZE=2048\r\n"));
        assert!(!over("MAIL FROM:<a@b.example> SIZE=0000000000000000000000000000000000000001\r\n"));
        assert!(!over("MAIL FROM:<a@b.example> SIZE=000\r\n"));
        assert!(!over("MAIL FROM:<a@b.example>\r\n"));
        assert!(!over("MAIL FROM:<a@b.example> SIZE=12x45678901234567890123"), "not a number: the parser's 501");
        assert!(!over("MAIL FROM:<SIZE=99999@b.example>\r\n"), "only parameters after the address count");
    }
}
