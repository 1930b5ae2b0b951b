//! Deliveries: the worker that sends committed events to subscriptions ([`Worker`]), and the
//! [`Sender`] that signs and sends one request (for the worker and the API's test sends).
//!
//! Delivery rows are written with their event (the outbox, see `pipeline::Committer`), so
//! nothing is lost between the commit and the send, across a crash too. The worker claims due
//! deliveries in batches with a lease (a crashed worker's claims come due again; a stopping one
//! releases what it has not sent and waits a moment for what is in flight), sends each as a
//! signed Standard Webhooks request (`sign`), and records each attempt with the next step, many
//! to a transaction: 2xx delivered; 410 fails the delivery and disables the subscription;
//! anything else, a timeout or a network error is retried on the configured schedule (with
//! jitter), and after the last retry the delivery has failed. Paused subscriptions keep their
//! deliveries until resumed.
//!
//! A subscription with a `transform` has it run (`crate::transform`, on its own threads) before
//! each attempt: what it returns is sent as the event; `null` drops the delivery (status
//! `dropped`, nothing sent); an exception or a limit hit is a failed attempt with the message,
//! retried on the schedule like any other. Each attempt records the version that ran.
//! A bulk retry (`retry_jobs`) runs beside the worker: stored jobs made due again a batch at a
//! time. A subscription's rate limit is kept by the store's claims (at most the tokens of its
//! bucket); a receiver's `Retry-After` (with a 429 or 503) puts the next attempt no earlier than it
//! asks, and a 429 is not counted towards disabling the subscription.
//!
//! What operators should hear of becomes one of hookgate's own events (`crate::notice`, through
//! `Committer::notify`): a subscription disabled (410, or failing for too long), a subscription
//! recovered (the first success after failures), a delivery exhausted (failed after its last
//! retry). Each is noticed once: by the write that changed the subscription, not by a snapshot.
//!
//! Outbound requests never follow redirects and never reach private, loopback, link-local or
//! metadata addresses unless configuration allows it: literal addresses are checked before the
//! request, names by the client's resolver, which drops such addresses (`client`).

mod client;
pub mod nats;
pub mod retry_jobs;
pub mod sign;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::event::StoredEvent;
use crate::notice::{DisableReason, Notice, SubscriptionRef};
use crate::pipeline::Committer;
use crate::store::{AttemptRecord, DueDelivery, NextStep, Store};
use crate::subscriptions::{Status, Subscription, TargetPolicy};

/// How often the worker looks for due retries when nothing wakes it.
const POLL: Duration = Duration::from_millis(500);
/// The most response body kept in the history.
const EXCERPT_BYTES: usize = 1024;
/// Attempt records waiting to be written; senders wait when it is full.
const RECORD_QUEUE: usize = 4096;
/// The most attempt records written in one transaction.
const RECORD_BATCH: usize = 512;
/// How long a stopping worker waits for requests in flight and their records.
const DRAIN: Duration = Duration::from_secs(5);

/// How deliveries are made, from configuration.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Seconds to wait before each retry of a failed delivery; after the last, it has failed.
    pub retry_schedule_secs: Vec<u64>,
    /// A subscription whose deliveries have all failed for this long is disabled.
    pub disable_after_secs: u64,
    /// Time allowed for one request, answer included.
    pub timeout_secs: u64,
    /// Deliveries in flight at once, and at most per subscription.
    pub concurrency: usize,
    pub concurrency_per_subscription: usize,
    /// The lease of a claim, when configured; otherwise computed (`lease`).
    pub lease_secs: Option<u64>,
    /// Where deliveries may go.
    pub policy: TargetPolicy,
}

impl DeliverySettings {
    /// How long a claimed delivery is kept from other workers: longer than the last of a claimed
    /// batch can wait for its subscription's slots and then take, so no delivery is sent twice
    /// while its worker lives. After a crash, its claims come due again when this runs out.
    fn lease(&self) -> Duration {
        if let Some(seconds) = self.lease_secs {
            return Duration::from_secs(seconds);
        }
        let rounds = self.concurrency.div_ceil(self.concurrency_per_subscription.max(1)) as u64;
        Duration::from_secs((rounds + 1) * self.timeout_secs + 60)
    }
}

/// Sends signed requests to subscriptions: the worker's deliveries and the API's test sends,
/// through one outbound client (SSRF-guarded, no redirects).
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: TargetPolicy,
}

impl Sender {
    pub fn new(settings: &DeliverySettings) -> Result<Sender, String> {
        let client = client::build(Duration::from_secs(settings.timeout_secs), &settings.policy)?;
        Ok(Sender { client, policy: settings.policy.clone() })
    }
}

/// What the delivery worker works with.
pub struct Worker {
    pub store: Store,
    /// Wakes the worker when deliveries are committed; rebuilds the routes when it disables a
    /// subscription.
    pub committer: Arc<Committer>,
    pub sender: Sender,
    pub settings: DeliverySettings,
    /// Runs subscriptions' transformations.
    pub transformer: crate::transform::Transformer,
}

/// Runs until `shutdown` resolves.
///
/// Claims come in batches the size of the pool; each batch's subscriptions and events are read
/// once (an event's body is built once for all its subscriptions), and the attempts' records are
/// written in batches by one recorder, so the store does a few large writes instead of several
/// per delivery.
pub async fn run(state: Arc<Worker>, shutdown: impl std::future::Future<Output = ()>) {
    let settings = &state.settings;
    let lease = settings.lease();
    let in_flight = Arc::new(Semaphore::new(settings.concurrency));
    let per_subscription: Arc<Mutex<HashMap<String, Arc<Semaphore>>>> = Arc::default();
    let (recorder, records) = tokio::sync::mpsc::channel(RECORD_QUEUE);
    let recording = tokio::spawn(write_records(state.clone(), records));
    let (stop_jobs, jobs_stopped) = tokio::sync::oneshot::channel::<()>();
    let jobs = tokio::spawn(retry_jobs::run(state.store.clone(), state.committer.clone(), async move {
        let _ = jobs_stopped.await;
    }));
    tokio::pin!(shutdown);
    // Claimed but not yet sent when a stop came.
    let mut unsent = Vec::new();
    'claims: loop {
        // Under steady load the worker is never idle: it looks for the shutdown on every round.
        if futures_util::FutureExt::now_or_never(&mut shutdown).is_some() {
            break;
        }
        let claimed = match state.store.claim_due_deliveries(Timestamp::now(), lease, settings.concurrency).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "Due deliveries could not be claimed; trying again shortly.");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = state.committer.deliveries_waiting() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        // On an error the batch's claims lapse and its deliveries come due again.
        let Some(batch) = Batch::read(&state, &claimed).await else { continue };
        let mut claimed = claimed.into_iter();
        while let Some(due) = claimed.next() {
            // Deleted meanwhile, with its deliveries.
            let Some(subscription) = batch.subscriptions.get(&due.subscription_id).cloned().flatten() else { continue };
            let payload = batch.payloads.get(&due.event_id).cloned();
            let permit = tokio::select! {
                permit = in_flight.clone().acquire_owned() => permit.expect("the pool is never closed"),
                _ = &mut shutdown => {
                    unsent.push(due);
                    unsent.extend(claimed);
                    break 'claims;
                }
            };
            let subscription_slot = per_subscription
                .lock()
                .expect("not poisoned")
                .entry(due.subscription_id.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(settings.concurrency_per_subscription)))
                .clone();
            let (state, recorder) = (state.clone(), recorder.clone());
            tokio::spawn(async move {
                let Ok(_slot) = subscription_slot.acquire_owned().await else { return };
                let record = deliver(&state, &due, &subscription, payload.as_deref()).await;
                drop(permit);
                // A finished ordered delivery lets the next of its key go, once it is written.
                let releases_key = subscription.ordering.is_some() && !matches!(record.next, NextStep::RetryAt(_));
                let _ = recorder.send(Recorded { record, releases_key }).await;
            });
        }
    }
    let _ = stop_jobs.send(());
    let _ = jobs.await;
    // A stop sends nothing more: what was claimed and not sent is due again at once, for the
    // next start (or another worker) rather than when its lease ends.
    let releases = unsent.iter().map(|due| state.store.retry_delivery(&due.subscription_id, &due.id, Timestamp::now()));
    for (due, released) in unsent.iter().zip(futures_util::future::join_all(releases).await) {
        if let Err(error) = released {
            tracing::warn!(%error, delivery = %due.id, "An unsent delivery's claim could not be released; it comes due when its lease ends.");
        }
    }
    // Let the requests in flight finish and their outcomes be written; whatever is cut off is
    // sent again when its lease ends (at least once).
    let all = u32::try_from(settings.concurrency).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN, in_flight.acquire_many(all)).await;
    drop(recorder);
    let _ = tokio::time::timeout(DRAIN, recording).await;
}

/// What a claimed batch needs, read once: its subscriptions (`None` when deleted) and, per
/// event, the request body every subscription is sent.
struct Batch {
    subscriptions: HashMap<String, Option<Arc<Subscription>>>,
    payloads: HashMap<String, Arc<Payload>>,
}

/// An event as deliveries send it.
struct Payload {
    /// The stored event, its source and data as the store's JSON text (never parsed here); a
    /// transformation receives it as a `serde_json::Value`, made only then.
    stored: StoredEvent,
    /// `{"type", "timestamp", "data"}`, the stored event as the data.
    body: bytes::Bytes,
}

/// A delivery's request body: `{"type", "timestamp", "data"}`, in that order.
#[derive(serde::Serialize)]
struct Envelope<'a, T: serde::Serialize> {
    #[serde(rename = "type")]
    event_name: &'a str,
    timestamp: Timestamp,
    data: &'a T,
}

impl Payload {
    fn new(stored: StoredEvent) -> Payload {
        let body = body_for(&stored, &stored);
        Payload { stored, body }
    }
}

/// The request body for an event: the stored event, or what a transformation made of it,
/// serialized straight from what it is given.
fn body_for(stored: &StoredEvent, data: &impl serde::Serialize) -> bytes::Bytes {
    let envelope = Envelope { event_name: &stored.name, timestamp: stored.received_at, data };
    serde_json::to_vec(&envelope).expect("an event serializes").into()
}

impl Batch {
    async fn read(state: &Worker, claimed: &[DueDelivery]) -> Option<Batch> {
        let mut subscriptions = HashMap::new();
        for due in claimed {
            if subscriptions.contains_key(&due.subscription_id) {
                continue;
            }
            match state.store.subscription(&due.subscription_id).await {
                Ok(loaded) => subscriptions.insert(due.subscription_id.clone(), loaded.map(Arc::new)),
                Err(error) => {
                    tracing::warn!(%error, "Claimed deliveries' subscriptions could not be read; they will be retried.");
                    return None;
                }
            };
        }
        let mut event_ids: Vec<String> = claimed.iter().map(|due| due.event_id.clone()).collect();
        event_ids.sort_unstable();
        event_ids.dedup();
        let events = match state.store.stored_events(event_ids).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "Claimed deliveries' events could not be read; they will be retried.");
                return None;
            }
        };
        let payloads = events.into_iter().map(|stored| (stored.id.clone(), Arc::new(Payload::new(stored)))).collect();
        Some(Batch { subscriptions, payloads })
    }
}

/// An attempt to record, and whether writing it lets another delivery go: the next of an ordered
/// delivery's key, which claims skip while this one is pending.
struct Recorded {
    record: AttemptRecord,
    releases_key: bool,
}

/// Writes attempt records as they come, many to a transaction, until every sender is gone; wakes
/// the worker after writing one that released an ordered key, so that the next of that key goes
/// at once rather than at the next poll.
async fn write_records(state: Arc<Worker>, mut records: tokio::sync::mpsc::Receiver<Recorded>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while records.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let taken = std::mem::replace(&mut batch, Vec::with_capacity(RECORD_BATCH));
        let releases_key = taken.iter().any(|recorded| recorded.releases_key);
        let written: Vec<AttemptRecord> = taken.into_iter().map(|recorded| recorded.record).collect();
        let count = written.len();
        match state.store.record_attempts(written).await {
            Ok(()) if releases_key => state.committer.wake_deliveries(),
            Ok(()) => {}
            // The leases run out and the deliveries are tried again: at least once, never lost.
            Err(error) => tracing::warn!(%error, count, "Delivery attempts could not be recorded."),
        }
    }
}

/// One attempt at one delivery; returns its record, whatever happened.
async fn deliver(
    state: &Worker,
    due: &DueDelivery,
    subscription: &Subscription,
    payload: Option<&Payload>,
) -> AttemptRecord {
    let attempt = due.attempts + 1;
    // Versioned by the source that runs, whatever the stored document says.
    let transform_version = subscription.transform.as_deref().map(crate::transform::version_of);
    let (outcome, next) = match payload {
        None => (Outcome::error("the event no longer exists"), NextStep::Failed),
        Some(_) if subscription.status == Status::Disabled => {
            (Outcome::error("not sent: the subscription is disabled"), NextStep::Failed)
        }
        Some(payload) => 'sent: {
            let body = match transformed_body(state, subscription, payload).await {
                Ok(Some(body)) => body,
                Ok(None) => break 'sent (Outcome::dropped(), NextStep::Dropped),
                Err(error) => {
                    let outcome = Outcome::error(&error);
                    let next = next_step(&state.settings.retry_schedule_secs, attempt, &outcome, Timestamp::now());
                    break 'sent (outcome, next);
                }
            };
            let outcome = state.sender.send(subscription, &payload.stored.id, body).await;
            let next = next_step(&state.settings.retry_schedule_secs, attempt, &outcome, Timestamp::now());
            if outcome.status_code == Some(410) {
                disable(state, subscription, DisableReason::Gone).await;
            } else {
                if next == NextStep::Failed {
                    state.committer.notify(Notice::DeliveryExhausted {
                        subscription: SubscriptionRef::new(&subscription.id, &subscription.url),
                        delivery_id: due.id.clone(),
                        event_id: payload.stored.id.clone(),
                        event_name: payload.stored.name.clone(),
                        attempts: attempt,
                        status_code: outcome.status_code,
                        error: outcome.error.clone(),
                    });
                }
                // A 429 is the receiver pacing us, not failing: it neither disables nor recovers.
                if outcome.status_code != Some(429) {
                    track_health(state, subscription, next == NextStep::Delivered, outcome.at).await;
                }
            }
            metrics::histogram!("hookgate_delivery_duration_seconds").record(outcome.latency.as_secs_f64());
            (outcome, next)
        }
    };
    metrics::counter!("hookgate_deliveries_total", "outcome" => match next {
        NextStep::Delivered => "delivered",
        NextStep::RetryAt(_) => "retry",
        NextStep::Failed => "failed",
        NextStep::Dropped => "dropped",
    })
    .increment(1);
    AttemptRecord {
        delivery_id: due.id.clone(),
        attempt,
        at: outcome.at,
        status_code: outcome.status_code,
        latency: outcome.latency,
        response_excerpt: outcome.response_excerpt,
        error: outcome.error,
        transform_version,
        next,
        due_at: Some(due.due_at),
    }
}

/// The body to send: the stored event's, or, for a subscription with a transformation, what
/// the transformation returned (`None`: it dropped the event).
async fn transformed_body(
    state: &Worker,
    subscription: &Subscription,
    payload: &Payload,
) -> Result<Option<bytes::Bytes>, String> {
    let Some(source) = &subscription.transform else { return Ok(Some(payload.body.clone())) };
    let transformation = crate::transform::Transformation::stored(source);
    // The stored JSON texts become trees here, for the transformation only.
    let event =
        serde_json::to_value(&payload.stored).map_err(|error| format!("the stored event does not read: {error}"))?;
    match state.transformer.run(&transformation, event).await.map_err(|error| error.to_string())? {
        crate::transform::Transformed::Changed(event) => Ok(Some(body_for(&payload.stored, &event))),
        crate::transform::Transformed::Dropped => Ok(None),
    }
}

impl Sender {
    /// Sends a sample of `event_name` marked `"test": true` to a subscription right away and returns
    /// what the endpoint answered; nothing is stored or retried.
    pub async fn send_test(&self, subscription: &Subscription, event_name: &str) -> serde_json::Value {
        let now = Timestamp::now();
        let message_id = format!("msg_test_{}", uuid::Uuid::now_v7().simple());
        let body = serde_json::to_vec(&json!({
            "type": event_name,
            "timestamp": now,
            "test": true,
            "data": {"id": message_id, "name": event_name, "receivedAt": now, "data": {"example": true}},
        }))
        .expect("a sample serializes");
        let outcome = self.send(subscription, &message_id, body.into()).await;
        json!({
            "messageId": message_id,
            "statusCode": outcome.status_code,
            "latencyMs": outcome.latency.as_secs_f64() * 1000.0,
            "responseExcerpt": outcome.response_excerpt,
            "error": outcome.error,
            "delivered": outcome.status_code.is_some_and(|code| (200..300).contains(&code)),
        })
    }

    /// One signed request to a subscription; what came of it.
    async fn send(&self, subscription: &Subscription, message_id: &str, body: bytes::Bytes) -> Outcome {
        let at = Timestamp::now();
        if let Err(reason) = crate::subscriptions::check_url(&subscription.url, &self.policy) {
            return Outcome::error(&format!("the subscription URL {reason}"));
        }
        let secrets: Vec<&str> = subscription.signing_secrets(at).collect();
        let signature = sign::signature(&secrets, message_id, at.as_second(), &body);
        let mut request = self
            .client
            .post(&subscription.url)
            .header("content-type", "application/json")
            .header("webhook-id", message_id)
            .header("webhook-timestamp", at.as_second().to_string())
            .header("webhook-signature", signature);
        for (name, value) in &subscription.headers {
            request = request.header(name, value);
        }
        let started = Instant::now();
        match request.body(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| retry_after(value, Timestamp::now()));
                let excerpt = read_excerpt(response).await;
                Outcome {
                    at,
                    status_code: Some(status),
                    latency: started.elapsed(),
                    response_excerpt: Some(excerpt),
                    error: None,
                    retry_after,
                }
            }
            Err(error) => Outcome {
                at,
                status_code: None,
                latency: started.elapsed(),
                response_excerpt: None,
                error: Some(describe(&error)),
                retry_after: None,
            },
        }
    }
}

/// What one request came to.
struct Outcome {
    at: Timestamp,
    status_code: Option<u16>,
    latency: Duration,
    response_excerpt: Option<String>,
    error: Option<String>,
    /// What a `429` or `503` asked for in `Retry-After`: wait at least this long.
    retry_after: Option<Duration>,
}

impl Outcome {
    /// Nothing was sent: the subscription's transformation dropped the event.
    fn dropped() -> Outcome {
        Outcome { error: None, ..Outcome::error("") }
    }

    fn error(message: &str) -> Outcome {
        Outcome {
            at: Timestamp::now(),
            status_code: None,
            latency: Duration::ZERO,
            response_excerpt: None,
            error: Some(message.to_owned()),
            retry_after: None,
        }
    }
}

/// The start of a response body, as text, at most [`EXCERPT_BYTES`].
async fn read_excerpt(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(EXCERPT_BYTES - kept.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// A request error with its causes, which say what actually failed (refused, timed out, a
/// private address).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() { "timed out".to_owned() } else { error.to_string() };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// 2xx delivered; 410 failed; else the schedule's next retry, with up to 10% jitter, or failed
/// after the last. A `Retry-After` the receiver sent (with a 429 or a 503) puts the retry no
/// earlier than it asked.
fn next_step(schedule: &[u64], attempt: u32, outcome: &Outcome, now: Timestamp) -> NextStep {
    match outcome.status_code {
        Some(code) if (200..300).contains(&code) => NextStep::Delivered,
        Some(410) => NextStep::Failed,
        _ => match schedule.get(attempt as usize - 1) {
            Some(&seconds) => {
                let jitter = rand::random::<f64>() * 0.1 * seconds as f64;
                let delay = jiff::SignedDuration::from_secs_f64(seconds as f64 + jitter);
                let asked = outcome.retry_after.and_then(|wait| jiff::SignedDuration::try_from(wait).ok());
                NextStep::RetryAt(now + asked.map_or(delay, |asked| asked.max(delay)))
            }
            None => NextStep::Failed,
        },
    }
}

/// The longest `Retry-After` honoured: a receiver asking for more is retried after this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A `Retry-After` value, seconds or an HTTP date, as a wait from `now` (at most a day).
fn retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value).ok()?;
            Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Keeps `failing_since` and disables a subscription that has failed for longer than
/// `delivery_disable_after_secs`. Writes only when the state changes, and only those fields, in
/// one step with the read (an API edit at the same moment is not undone, nor does it undo this).
async fn track_health(state: &Worker, subscription: &Subscription, succeeded: bool, at: Timestamp) {
    let limit = jiff::SignedDuration::from_secs(state.settings.disable_after_secs as i64);
    let outcome = match (succeeded, subscription.failing_since) {
        (true, Some(_)) => {
            // The write that clears it says whether it was set: two successes at once recover once.
            let (cleared_tx, cleared) = std::sync::mpsc::channel();
            let outcome = state
                .store
                .update_subscription(&subscription.id, move |current| {
                    let _ = cleared_tx.send(current.failing_since.take());
                })
                .await;
            if let (Ok(Some(_)), Ok(Some(failing_since))) = (&outcome, cleared.try_recv()) {
                state.committer.notify(Notice::SubscriptionRecovered {
                    subscription: SubscriptionRef::new(&subscription.id, &subscription.url),
                    failing_since,
                });
            }
            outcome
        }
        (false, None) => {
            state
                .store
                .update_subscription(&subscription.id, move |current| {
                    // The first failure's time stands: another attempt may have set it since the snapshot.
                    current.failing_since.get_or_insert(at);
                })
                .await
        }
        (false, Some(since)) if at.duration_since(since) > limit => {
            let reason = DisableReason::Failing { since, limit_secs: state.settings.disable_after_secs };
            disable(state, subscription, reason).await;
            return;
        }
        _ => return,
    };
    if let Err(error) = outcome {
        tracing::warn!(%error, subscription = %subscription.id, "A subscription's health could not be recorded.");
    }
}

/// Disables a subscription, with the reason; the write that disables it (not one that finds it
/// disabled already) is noticed.
async fn disable(state: &Worker, subscription: &Subscription, reason: DisableReason) {
    let id = subscription.id.as_str();
    let why = match &reason {
        DisableReason::Gone => "the endpoint answered 410 Gone".to_owned(),
        DisableReason::Failing { since, limit_secs } => {
            format!("every delivery has failed since {since}, for longer than {limit_secs} seconds")
        }
    };
    let (was_tx, was) = std::sync::mpsc::channel();
    let disabled_reason = why.clone();
    let disabled = state
        .store
        .update_subscription(id, move |subscription| {
            let _ = was_tx.send(subscription.status);
            subscription.status = Status::Disabled;
            subscription.disabled_reason = Some(disabled_reason);
            subscription.updated_at = Timestamp::now();
        })
        .await;
    let reason_text = why.as_str();
    match disabled {
        Ok(Some(_)) => {
            let _ = state.committer.reload_routes().await;
            tracing::warn!(subscription = %id, reason = reason_text, "A subscription was disabled.");
            if was.try_recv().is_ok_and(|status| status != Status::Disabled) {
                let subscription = SubscriptionRef::new(id, &subscription.url);
                state.committer.notify(Notice::SubscriptionDisabled { subscription, reason });
            }
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, subscription = %id, reason = reason_text, "A subscription could not be disabled.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status_code: Option<u16>) -> Outcome {
        Outcome { status_code, ..Outcome::error("x") }
    }

    #[test]
    fn the_next_step_follows_the_status_and_the_schedule() {
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let schedule = [5, 300];
        assert_eq!(next_step(&schedule, 1, &outcome(Some(204)), now), NextStep::Delivered);
        assert_eq!(next_step(&schedule, 1, &outcome(Some(410)), now), NextStep::Failed);
        let NextStep::RetryAt(at) = next_step(&schedule, 1, &outcome(Some(500)), now) else { panic!() };
        let wait = at.duration_since(now).as_secs_f64();
        assert!((5.0..=5.5).contains(&wait), "{wait}");
        let NextStep::RetryAt(at) = next_step(&schedule, 2, &outcome(None), now) else { panic!() };
        assert!((300.0..=330.0).contains(&at.duration_since(now).as_secs_f64()));
        assert_eq!(next_step(&schedule, 3, &outcome(Some(503)), now), NextStep::Failed, "after the last retry");
    }

    #[test]
    fn a_retry_after_puts_the_next_attempt_no_earlier_than_asked() {
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let schedule = [5, 300];
        let paced = Outcome { retry_after: retry_after("120", now), ..outcome(Some(429)) };
        let NextStep::RetryAt(at) = next_step(&schedule, 1, &paced, now) else { panic!() };
        assert_eq!(at.duration_since(now).as_secs(), 120);
        let soon = Outcome { retry_after: retry_after("1", now), ..outcome(Some(429)) };
        let NextStep::RetryAt(at) = next_step(&schedule, 1, &soon, now) else { panic!() };
        assert!(at.duration_since(now).as_secs_f64() >= 5.0, "never earlier than the schedule");
        assert_eq!(retry_after("Mon, 23 Nov 2026 10:01:00 GMT", now), Some(Duration::from_secs(60)), "an HTTP date");
        assert_eq!(retry_after("999999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(next_step(&schedule, 3, &paced, now), NextStep::Failed, "a 429 spends a step of the schedule");
    }
}
