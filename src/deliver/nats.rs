//! Publishing to NATS JetStream (`--nats URL`): every committed event, from the same outbox as
//! webhook deliveries (a `publications` row written with the event), to
//! `<nats_subject_prefix>.<event name>`, with the event id as the message id so that JetStream
//! drops a repeat within its duplicate window. A row goes only when JetStream acknowledged the
//! message: a NATS outage delays events, never loses them. The stream is created when missing.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use jiff::Timestamp;

use crate::pipeline::Committer;
use crate::store::Store;

/// Publications claimed at once (and in flight together, acknowledged in order).
const BATCH: usize = 256;
/// A claim lasts longer than a batch normally takes, and is what a killed process's claimed
/// events wait before they are published again. Short, because a repeat is harmless: a batch
/// that outlives its claim and is published again by another claimer is dropped by JetStream,
/// whose duplicate window (120 s) is far longer than a lease and a batch together.
const LEASE: Duration = Duration::from_secs(10);
/// How often to look for due publications when nothing wakes the publisher.
const POLL: Duration = Duration::from_millis(500);
/// Wait after a failed batch.
const RETRY: Duration = Duration::from_secs(2);

/// Where events are published.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// The NATS server's URL.
    pub url: String,
    /// The JetStream stream that takes `<subject_prefix>.>`, created when missing.
    pub stream: String,
    /// Events are published to `<subject_prefix>.<event name>`.
    pub subject_prefix: String,
}

/// What the publisher works with.
pub struct Publisher {
    pub store: Store,
    /// Wakes the publisher when events are committed.
    pub committer: Arc<Committer>,
    pub settings: NatsSettings,
}

/// Runs until `shutdown` resolves, reconnecting as needed.
pub async fn run(state: Arc<Publisher>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let jetstream = loop {
        match connect(&state.settings).await {
            Ok(jetstream) => break jetstream,
            Err(error) => {
                tracing::warn!(%error, "NATS is not reachable; events wait in the outbox.");
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    };
    tracing::info!(stream = %state.settings.stream, "Publishing events to NATS JetStream.");
    loop {
        if futures_util::FutureExt::now_or_never(&mut shutdown).is_some() {
            return;
        }
        let published = publish_due(&state, &jetstream).await;
        if published == 0 {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = state.committer.publications_waiting() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

async fn connect(settings: &NatsSettings) -> Result<jetstream::Context, String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(&settings.url)
        .await
        .map_err(|error| error.to_string())?;
    let jetstream = jetstream::new(client);
    jetstream
        .get_or_create_stream(jetstream::stream::Config {
            name: settings.stream.clone(),
            subjects: vec![format!("{}.>", settings.subject_prefix)],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|error| format!("cannot use the stream {}: {error}", settings.stream))?;
    Ok(jetstream)
}

/// Publishes one batch of due events; returns how many JetStream acknowledged.
async fn publish_due(state: &Publisher, jetstream: &jetstream::Context) -> usize {
    let due = match state.store.claim_publications(Timestamp::now(), LEASE, BATCH).await {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "Due publications could not be claimed.");
            return 0;
        }
    };
    if due.is_empty() {
        return 0;
    }
    let mut pending = Vec::with_capacity(due.len());
    let mut retry = Vec::new();
    for (event_id, subject) in due {
        let payload = match state.store.event(&event_id).await {
            Ok(Some(event)) => serde_json::to_vec(&event).expect("an event serializes"),
            Ok(None) => {
                // Nothing left to publish.
                pending.push((event_id, None));
                continue;
            }
            Err(_) => {
                retry.push(event_id);
                continue;
            }
        };
        let message = PublishMessage::build().payload(payload.into()).message_id(&event_id);
        match jetstream.send_publish(subject, message).await {
            Ok(ack) => pending.push((event_id, Some(ack))),
            Err(error) => {
                tracing::warn!(%error, event = %event_id, "An event could not be published; it will be again.");
                retry.push(event_id);
            }
        }
    }
    let mut published = Vec::with_capacity(pending.len());
    for (event_id, ack) in pending {
        match ack {
            None => published.push(event_id),
            Some(ack) => match ack.await {
                Ok(_) => published.push(event_id),
                Err(error) => {
                    tracing::warn!(%error, event = %event_id, "JetStream did not acknowledge an event; it will be published again.");
                    retry.push(event_id);
                }
            },
        }
    }
    let count = published.len();
    metrics::counter!("hookgate_nats_published_total").increment(count as u64);
    let retry_at = Timestamp::now() + jiff::SignedDuration::try_from(RETRY).unwrap_or_default();
    if let Err(error) = state.store.finish_publications(published, retry, retry_at).await {
        // The claims lapse and the events go again; JetStream drops the repeats by message id.
        tracing::warn!(%error, "Publications could not be recorded as done.");
    }
    count
}
