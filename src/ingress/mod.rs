//! Ingress: every transport a hook is reached by, and nothing past the transport.
//!
//! This module owns the HTTP server (the accept loop with its connection cap, header-read
//! deadline and graceful shutdown; the public routes, in front of the management API) and the
//! SMTP listener (`smtp`). Every HTTP path to a hook goes through the same opening steps
//! (`opening`: one span and the metrics per request, labelled by hook; content encoding,
//! declared length, body under its limit and deadline). Then `hooks` (form and web hooks),
//! `sources` (platforms' signed requests) and `mail` (mail posted over HTTP) turn the request
//! into events and commit them through [`crate::pipeline::Committer`]; the reply goes out only
//! after the commit. [`IngressError`] is mapped to a reply in one place. This module knows
//! nothing of what happens to an event afterwards.

mod decode;
mod error;
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
}

/// How long in-flight requests may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
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
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(PeerAddr(peer));
            let router = router.clone();
            async move { Ok::<_, Infallible>(router.oneshot(request).await.unwrap_or_else(|never| match never {})) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "A connection ended with an error.");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("Some connections were still open when the shutdown grace period ended.");
    }
}
