//! Retention: a background task that, at start and then every few minutes, deletes the events
//! received longer ago than the configured time (with what they triggered and the raw bodies
//! left unreferenced) and the finished delivery history as old, through
//! [`Store::prune_before`], one small batch per write transaction with a pause between two, so
//! that ingest (which shares the store's writer) is never held up for long. Speaks no SQL.

use jiff::Timestamp;
use std::future::Future;
use std::time::Duration;

use super::{PruneCount, Store};

/// Events deleted per write transaction.
pub const BATCH: usize = 500;
/// How often the old events are looked for.
pub const EVERY: Duration = Duration::from_secs(5 * 60);
/// The writer's time between two batches, for everyone else's writes.
const PAUSE: Duration = Duration::from_millis(10);

/// What to keep, and how to delete the rest.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Events and delivery history older than this are deleted.
    pub keep: Duration,
    pub every: Duration,
    pub batch: usize,
}

/// The retention task's state.
pub struct Retention {
    pub store: Store,
    pub settings: RetentionSettings,
}

/// Deletes what is older than `keep` now and every `every` until `shutdown` resolves.
pub async fn run(retention: Retention, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = prune_once(&retention) => {}
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(retention.settings.every) => {}
        }
    }
}

/// One round: batches until nothing older than the cutoff is left (or the store fails; the next
/// round tries again).
async fn prune_once(retention: &Retention) -> PruneCount {
    let keep = jiff::SignedDuration::try_from(retention.settings.keep).unwrap_or(jiff::SignedDuration::MAX);
    let cutoff = Timestamp::now().checked_sub(keep).unwrap_or(Timestamp::MIN);
    let mut total = PruneCount::default();
    loop {
        match retention.store.prune_before(cutoff, retention.settings.batch).await {
            Ok(count) if count.is_empty() => break,
            Ok(count) => {
                total.events += count.events;
                total.deliveries += count.deliveries;
                total.bodies += count.bodies;
                metrics::counter!("hookgate_retention_deleted_total", "kind" => "events").increment(count.events);
                metrics::counter!("hookgate_retention_deleted_total", "kind" => "deliveries")
                    .increment(count.deliveries);
                metrics::counter!("hookgate_retention_deleted_total", "kind" => "bodies").increment(count.bodies);
                tokio::time::sleep(PAUSE).await;
            }
            Err(error) => {
                tracing::warn!(%error, "Retention could not delete old events; it tries again at its next round.");
                break;
            }
        }
    }
    if !total.is_empty() {
        tracing::info!(
            events = total.events,
            deliveries = total.deliveries,
            bodies = total.bodies,
            %cutoff,
            "Retention deleted what was received before the cutoff."
        );
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::ToSpan;

    #[tokio::test]
    async fn a_round_deletes_every_old_event_batch_by_batch_and_keeps_the_recent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&crate::store::StoreConfig::Sqlite { path: dir.path().join("hookgate.db") }).await.unwrap();
        let long_ago = Timestamp::now() - (40 * 24).hours();
        let old: Vec<_> = (0..25)
            .map(|_| crate::store::conformance::sample_event_at("retention.old", "retention", long_ago))
            .collect();
        let recent = crate::store::conformance::sample_event("retention.recent", "retention");
        store.append_events(old.clone()).await.unwrap();
        store.append_events(vec![recent.clone()]).await.unwrap();
        let settings = RetentionSettings { keep: Duration::from_secs(30 * 86_400), every: EVERY, batch: 10 };
        let deleted = prune_once(&Retention { store: store.clone(), settings }).await;
        assert_eq!(deleted.events, 25, "three batches of at most 10, then an empty one");
        for event in &old {
            assert!(store.event(&event.event.id).await.unwrap().is_none());
        }
        assert!(store.event(&recent.event.id).await.unwrap().is_some(), "the recent event is kept");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_are_answered_while_a_large_prune_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&crate::store::StoreConfig::Sqlite { path: dir.path().join("hookgate.db") }).await.unwrap();
        let long_ago = Timestamp::now() - (40 * 24).hours();
        let old_events = 20_000;
        for chunk in 0..old_events / 1000 {
            let body = bytes::Bytes::from(format!(r#"{{"chunk": {chunk}}}"#));
            let old: Vec<_> = (0..1000)
                .map(|_| {
                    let mut event = crate::store::conformance::sample_event_at("retention.old", "retention", long_ago);
                    event.raw_body = body.clone();
                    event
                })
                .collect();
            store.append_events(old).await.unwrap();
        }
        let settings = RetentionSettings { keep: Duration::from_secs(30 * 86_400), every: EVERY, batch: BATCH };
        let retention = Retention { store: store.clone(), settings };
        let prune = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let deleted = prune_once(&retention).await;
            (deleted, started.elapsed())
        });
        let mut waits = Vec::new();
        while !prune.is_finished() {
            let started = std::time::Instant::now();
            store
                .append_events(vec![crate::store::conformance::sample_event("retention.during", "retention")])
                .await
                .unwrap();
            waits.push(started.elapsed());
        }
        let (deleted, took) = prune.await.unwrap();
        assert_eq!((deleted.events, deleted.bodies), (old_events as u64, 20));
        assert!(waits.len() >= 10, "only {} appends ran during a prune of {took:?}", waits.len());
        let slowest = waits.iter().max().copied().unwrap();
        // One transaction for the whole prune would hold an append for about all of it.
        assert!(slowest < took / 4, "an append waited {slowest:?} during a prune of {took:?}");
    }
}
