//! Ingress: every transport a hook is reached by, and nothing past the transport.
//!
//! This module owns the HTTP server (the accept loop with its connection cap and per-client
//! shares and request rates from `fairness`, header-read deadline and graceful shutdown; the
//! public routes, in front of the management API) and the SMTP listener (`smtp`). Every HTTP
//! path to a hook goes through the same opening steps (`opening`: one span and the metrics per request, labelled by hook; content encoding,
//! declared length, body into one buffer under its limit, the bodies' budget and the deadline). Then `hooks` (form and web hooks),
//! `sources` (platforms' signed requests) and `mail` (mail posted over HTTP) turn the request
//! into events and commit them through [`crate::pipeline::Committer`]; the reply goes out only
//! after the commit. [`IngressError`] is mapped to a reply in one place. This module knows
//! nothing of what happens to an event afterwards.

pub mod body;
pub mod budget;
mod decode;
mod error;
pub mod fairness;
mod hooks;
mod mail;
mod opening;
pub mod payload;
pub mod rejections;
pub mod smtp;
mod sources;
mod transform;

pub use error::IngressError;

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::routing::any;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::definitions::catalog::CatalogManager;
use crate::pipeline::Committer;
use crate::pipeline::mail::MailAcceptor;
use crate::store::Store;
use rejections::RejectionLog;

/// What every transport works with.
pub struct IngressState {
    /// Which hook a token, a source path or a mail address is.
    pub catalog: Arc<CatalogManager>,
    /// Where every event is committed.
    pub committer: Arc<Committer>,
    /// Received mail, over SMTP or HTTP: authentication lookups, then the commit.
    pub mail: MailAcceptor,
    /// Issued ingest keys are looked up here.
    pub store: Store,
    /// Source requests that failed verification.
    pub rejections: Arc<RejectionLog>,
    pub settings: IngressSettings,
    /// Bytes of bodies in flight, HTTP and SMTP together.
    pub body_budget: budget::BodyBudget,
    /// Runs hooks' transformations.
    pub transformer: crate::transform::Transformer,
}

/// The limits and names ingress applies, from configuration.
#[derive(Debug, Clone)]
pub struct IngressSettings {
    /// The base URL platforms post to, as they see it: what sources' signatures cover.
    pub public_url: String,
    /// The domain of email hook addresses, in lower case.
    pub mail_domain: String,
    /// The body limit of form, web and source hooks that set no `maxBodyBytes`.
    pub max_body_bytes: u64,
    /// Multipart file content kept in an event, for hooks that set no `maxFileBytes`.
    pub max_file_bytes: u64,
    /// The body limit of email hooks that set no `maxBodyBytes`: the SMTP message size.
    pub max_message_bytes: u64,
    /// Time allowed to send a whole body.
    pub body_timeout: Duration,
    /// The request rates configuration gives hooks and sources.
    pub hook_rates: Arc<fairness::HookRates>,
}

/// Every HTTP route: the public ones (hook URLs, the platforms' source endpoints), and behind
/// them `management`, which takes every other path (and subscription ids under
/// `/api/webhooks/`).
pub fn router(state: Arc<IngressState>, management: Router) -> Router {
    let passed_on = management.clone();
    let sources = any(
        move |State(state): State<Arc<IngressState>>,
              Path(segment): Path<String>,
              RawQuery(query): RawQuery,
              request: Request| { sources::endpoint(state, segment, query, request, passed_on.clone()) },
    );
    Router::new()
        .route("/h/{token}", any(hooks::receive))
        // Platforms post here; the signature is their authentication.
        .route("/api/webhooks/{segment}", sources)
        // Every other path under /h/ gets the same reply as an unknown token.
        .route("/h", any(hooks::unknown))
        .route("/h/", any(hooks::unknown))
        .route("/h/{token}/", any(hooks::unknown))
        .route("/h/{token}/{*rest}", any(hooks::unknown))
        .with_state(state)
        .fallback_service(management)
}

/// The peer address of the connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Limits applied per connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64) may have open.
    pub max_connections_per_client: usize,
    /// Requests per second and burst one client address may send; `None`: unlimited.
    pub client_requests: Option<fairness::Rate>,
}

/// Refused connections whose reply is still being delivered, at most; past it a refused
/// connection is closed without a word.
const REFUSALS_LINGERING: usize = 1024;

/// How long a refused connection is kept open for its reply to arrive, while what the client
/// sends is read and dropped (so that closing does not reset the reply away).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` resolves; then closes the listener (new
/// connections are refused), closes idle connections and lets the requests in flight finish
/// for at most `grace`.
///
/// Every connection is accepted at once: one past its client's share or past the cap is
/// answered `429` or `503` and closed, so that nothing waits in the kernel's queue behind a
/// client that holds connections open. Each request first takes from its client's rate (`429`
/// with `Retry-After` when there is none left).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let clients = Arc::new(fairness::ClientLimits::new(
        limits.max_connections,
        limits.max_connections_per_client,
        limits.client_requests,
    ));
    let lingering = Arc::new(Semaphore::new(REFUSALS_LINGERING));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match clients.connections.open(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                metrics::counter!("hookgate_connections_refused_total", "listener" => "http", "reason" => refusal.label())
                    .increment(1);
                refuse_connection(stream, refusal, &lingering);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let clients = clients.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(PeerAddr(peer));
            let router = router.clone();
            let allowed = clients.take_request(peer.ip());
            async move {
                if let Err(wait) = allowed {
                    metrics::counter!("hookgate_requests_limited_total", "scope" => "client").increment(1);
                    let retry_after_secs = fairness::retry_after_secs(wait);
                    let scope = fairness::RateScope::Client;
                    return Ok(axum::response::IntoResponse::into_response(IngressError::RateLimited {
                        scope,
                        retry_after_secs,
                    }));
                }
                Ok::<_, Infallible>(router.oneshot(request).await.unwrap_or_else(|never| match never {}))
            }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "A connection ended with an error.");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("Some connections were still open when the shutdown grace period ended.");
    }
}

/// Answers a connection that will not be served, without reading its request: `429` for a
/// client past its share, `503` when the gateway is full, both with `Retry-After` and closed.
/// The reply fits in a fresh socket's send buffer, so it is written without waiting; the
/// connection then lingers briefly, dropping what the client sends, so that the close does not
/// reset the reply away, unless too many refusals are already lingering.
fn refuse_connection(stream: tokio::net::TcpStream, refusal: fairness::ConnectionRefusal, lingering: &Arc<Semaphore>) {
    let (status, code, message) = match refusal {
        fairness::ConnectionRefusal::ClientAtLimit => (
            "429 Too Many Requests",
            "too_many_connections",
            "your address has as many connections open as one client may; reuse or close one",
        ),
        fairness::ConnectionRefusal::GatewayFull => {
            ("503 Service Unavailable", "gateway_busy", "the gateway has as many connections open as it serves")
        }
    };
    let body = serde_json::json!({"error": {"code": code, "message": format!("{message}; retry later")}}).to_string();
    let reply = format!(
        "HTTP/1.1 {status}\r\nretry-after: 1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // Written straight to the (non-blocking) socket: a stream just accepted has no readiness
    // from the runtime yet, so tokio's own `try_write` would not even try.
    let Ok(mut socket) = stream.into_std() else { return };
    let _ = std::io::Write::write(&mut socket, reply.as_bytes());
    // What the client already sent is dropped now: closing a socket with unread input resets it.
    let mut dropped = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(std::io::Read::read(&mut socket, &mut dropped), Ok(read) if read > 0) {
            break;
        }
    }
    let Ok(permit) = lingering.clone().try_acquire_owned() else { return };
    let Ok(mut stream) = tokio::net::TcpStream::from_std(socket) else { return };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = stream.shutdown().await;
            while matches!(stream.read(&mut dropped).await, Ok(read) if read > 0) {}
        })
        .await;
        drop(permit);
    });
}
