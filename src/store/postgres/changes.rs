//! What other nodes changed, heard on a dedicated connection (LISTEN on the schema's channel), with a
//! polled configuration counter as the fallback.
//!
//! A NOTIFY payload is `<change> <node>`; a node ignores its own. When the listening connection
//! is lost, the listener reconnects (after a pause that grows to 5 s) and, since notifications
//! sent meanwhile are gone, reports every kind of change once it listens again. The fallback
//! reads `config_version` every `FALLBACK_POLL` and reports the configuration changed whenever
//! the counter moved, so a change whose notification was lost is acted on within that time (one
//! that was heard is acted on twice, which costs a reload and changes nothing); deliveries have
//! their own fallback in the worker's polling.

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio_postgres::AsyncMessage;

use super::{Node, Tls};
use crate::store::StoreChange;
use std::sync::Arc;

/// How often the configuration counter is read.
const FALLBACK_POLL: Duration = Duration::from_secs(2);
/// The longest pause between two attempts to listen again.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(5);

/// Listens until the store is dropped (`stop` closes).
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: Tls,
    pool: Pool,
    node: Arc<Node>,
    changes: broadcast::Sender<StoreChange>,
    mut stop: watch::Receiver<()>,
) {
    tokio::spawn(poll_config_version(pool, changes.clone(), stop.clone()));
    let mut pause = Duration::from_millis(100);
    let mut first = true;
    loop {
        let started = std::time::Instant::now();
        let listened = tokio::select! {
            _ = stop.changed() => return,
            outcome = listen_once(&config, &tls, &node, &changes, first) => outcome,
        };
        if started.elapsed() > MAX_RECONNECT_PAUSE {
            // It listened for a while: this is a new loss, not the same one going on.
            pause = Duration::from_millis(100);
        }
        if let Err(error) = listened {
            tracing::warn!(%error, "Not listening for other nodes' changes; trying again.");
        }
        first = false;
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
    }
}

/// Connects, listens, and forwards notifications until the connection ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &Tls,
    node: &Node,
    changes: &broadcast::Sender<StoreChange>,
    first: bool,
) -> Result<(), tokio_postgres::Error> {
    match tls {
        Tls::None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            forward(client, connection, node, changes, first).await
        }
        Tls::Rustls(connector) => {
            let (client, connection) = config.connect(connector.clone()).await?;
            forward(client, connection, node, changes, first).await
        }
    }
}

async fn forward<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
    node: &Node,
    changes: &broadcast::Sender<StoreChange>,
    first: bool,
) -> Result<(), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |context| connection.poll_message(context));
    {
        let listen = format!("LISTEN \"{}\"", node.channel);
        let listening = client.batch_execute(&listen);
        tokio::pin!(listening);
        // The connection must be driven for the LISTEN to be answered.
        loop {
            tokio::select! {
                outcome = &mut listening => { outcome?; break; }
                message = messages.next() => match message {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error),
                    None => return Ok(()),
                },
            }
        }
    }
    if !first {
        // Whatever was announced while nobody listened.
        for change in StoreChange::ALL {
            let _ = changes.send(change);
        }
    }
    while let Some(message) = messages.next().await {
        if let AsyncMessage::Notification(notification) = message? {
            let Some((change, from)) = notification.payload().split_once(' ') else { continue };
            if from == node.name {
                continue;
            }
            if let Some(change) = StoreChange::parse(change) {
                let _ = changes.send(change);
            }
        }
    }
    Ok(())
}

/// The fallback: reports the configuration changed when its counter moved.
async fn poll_config_version(pool: Pool, changes: broadcast::Sender<StoreChange>, mut stop: watch::Receiver<()>) {
    let mut seen: Option<i64> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(FALLBACK_POLL) => {}
        }
        let Ok(client) = pool.get().await else { continue };
        let Ok(row) = client.query_one("SELECT version FROM config_version", &[]).await else { continue };
        let version: i64 = row.get(0);
        if seen.is_some_and(|seen| seen != version) {
            let _ = changes.send(StoreChange::Subscriptions);
            let _ = changes.send(StoreChange::Apps);
        }
        seen = Some(version);
    }
}
