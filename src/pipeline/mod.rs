//! The commit every ingress ends in, and what starts from it.
//!
//! [`Committer`] is the one way events enter the store: it asks the routing table
//! ([`crate::subscriptions::Routes`]) which subscriptions each event goes to, writes the event
//! with its deliveries (and a NATS publication) in one transaction (the outbox), and then wakes
//! the delivery worker and the publisher. Whether an event is a duplicate of an earlier delivery
//! is decided inside that transaction, by the store (`Store::append_events`): a duplicate gets
//! the original's id and no second event, and the caller replies success all the same.
//!
//! Beside it: [`mail`] accepts a received message for its recipient hooks (DKIM and SPF
//! lookups by [`authenticate`], then extraction and one commit for all of its events), and
//! [`Replay`] queues new deliveries of stored events, for the API and the command line alike.
//!
//! hookgate's own events (`crate::notice`) are committed here too, by [`Committer::notify`], in
//! the background: whoever notices something never waits for its commit. A quarantined event
//! gives one (`hookgate.quarantine.received`) as soon as it is stored.
//!
//! Readers that follow the log as it grows (the event stream) learn from the committer when
//! something was committed ([`Committer::commits`]) and which events are being committed now
//! ([`Committer::oldest_in_flight`]): ids are minted before the commit, so an event with a
//! smaller id can still be on its way while a later one is already stored.
//!
//! This module knows no transport: no HTTP status, no SMTP reply code.

pub mod authenticate;
pub mod mail;
mod replay;

pub use replay::{Replay, ReplayError};

use arc_swap::ArcSwap;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};

use crate::event::NewEvent;
use crate::notice::Notice;
use crate::store::{Appended, Store, StoreError};
use crate::subscriptions::Routes;

/// Commits events with their outbox rows and wakes what sends them.
pub struct Committer {
    store: Store,
    /// Which subscriptions an event goes to; rebuilt when subscriptions change.
    routes: ArcSwap<Routes>,
    /// Each event is also published to `<prefix>.<event name>`; `None` without NATS.
    nats_subject_prefix: Option<String>,
    deliveries_waiting: Notify,
    publications_waiting: Notify,
    /// The ids of the events whose commit has started and not ended.
    in_flight: Mutex<BTreeSet<String>>,
    /// Counts the commits that stored events, for readers following the log.
    commits: watch::Sender<u64>,
}

/// Takes a commit's event ids out of the in-flight set when the commit ends, however it ends.
struct InFlight<'a> {
    set: &'a Mutex<BTreeSet<String>>,
    ids: Vec<String>,
}

impl<'a> InFlight<'a> {
    fn enter(set: &'a Mutex<BTreeSet<String>>, events: &[NewEvent]) -> InFlight<'a> {
        let ids: Vec<String> = events.iter().map(|new| new.event.id.clone()).collect();
        if let Ok(mut set) = set.lock() {
            set.extend(ids.iter().cloned());
        }
        InFlight { set, ids }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            for id in &self.ids {
                set.remove(id);
            }
        }
    }
}

impl Committer {
    /// A committer routing by the subscriptions stored now.
    pub async fn start(store: Store, nats_subject_prefix: Option<String>) -> Result<Committer, StoreError> {
        let routes = Routes::new(&store.subscriptions().await?);
        Ok(Committer {
            store,
            routes: ArcSwap::from_pointee(routes),
            nats_subject_prefix,
            deliveries_waiting: Notify::new(),
            publications_waiting: Notify::new(),
            in_flight: Mutex::new(BTreeSet::new()),
            commits: watch::Sender::new(0),
        })
    }

    /// Commits events, with a delivery for every subscription each one goes to (the outbox,
    /// in the same transaction), and wakes the delivery worker. Returns after the commit; a
    /// quarantined event is stored and goes nowhere.
    pub async fn commit(self: &Arc<Self>, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        let quarantined: Vec<Notice> = events
            .iter()
            .filter(|new| new.event.quarantined)
            .map(|new| Notice::QuarantineReceived {
                event_id: new.event.id.clone(),
                event_name: new.event.name.clone(),
                app: new.event.app.clone(),
            })
            .collect();
        let appended = self.append(events).await?;
        for notice in quarantined {
            // A repeated delivery of a quarantined event is not news.
            if appended.iter().any(|appended| !appended.duplicate && Some(appended.id.as_str()) == notice.event_id()) {
                self.notify(notice);
            }
        }
        Ok(appended)
    }

    /// Commits one of hookgate's own events in the background, routed like any other event
    /// except to the subscription it is withheld from (see `Notice::withheld_from`). A failed
    /// commit is logged; nothing waits for it.
    pub fn notify(self: &Arc<Self>, notice: Notice) {
        let committer = self.clone();
        tokio::spawn(async move {
            let kind = notice.kind().event_name();
            let withheld = notice.withheld_from().map(str::to_owned);
            let mut event = notice.into_event(jiff::Timestamp::now());
            event.deliver_to = committer.routes.load().matching(&event.event);
            event.deliver_to.retain(|id| Some(id) != withheld.as_ref());
            event.ordering_keys = committer.routes.load().ordering_keys(&event.event, &event.deliver_to);
            let deliveries = !event.deliver_to.is_empty();
            if let Some(prefix) = &committer.nats_subject_prefix {
                event.publish_to = Some(format!("{prefix}.{}", event.event.name));
            }
            match committer.store_events(vec![event]).await {
                Ok(_) => committer.wake(deliveries),
                Err(error) => tracing::warn!(%error, kind, "One of hookgate's own events could not be stored."),
            }
        });
    }

    /// Appends events with their deliveries and publications.
    async fn append(&self, mut events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        let routes = self.routes.load();
        let mut deliveries = false;
        if !routes.is_empty() {
            for event in events.iter_mut().filter(|event| !event.event.quarantined) {
                if event.data_deferred && routes.reads_data(&event.event.name) {
                    event.parse_deferred_data().map_err(|error| {
                        StoreError::Database(format!("a body checked as JSON no longer parses: {error}"))
                    })?;
                }
                event.deliver_to = routes.matching(&event.event);
                event.ordering_keys = routes.ordering_keys(&event.event, &event.deliver_to);
                deliveries |= !event.deliver_to.is_empty();
            }
        }
        if let Some(prefix) = &self.nats_subject_prefix {
            for event in events.iter_mut().filter(|event| !event.event.quarantined) {
                event.publish_to = Some(format!("{prefix}.{}", event.event.name));
            }
        }
        let appended = self.store_events(events).await?;
        self.wake(deliveries);
        Ok(appended)
    }

    /// Appends events to the store, in flight until the commit ends; tells the log's readers
    /// after it.
    async fn store_events(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        let in_flight = InFlight::enter(&self.in_flight, &events);
        let appended = self.store.append_events(events).await;
        drop(in_flight);
        if appended.is_ok() {
            self.commits.send_modify(|count| *count = count.wrapping_add(1));
        }
        appended
    }

    /// The smallest id among the events being committed now, if any: every event with a smaller
    /// id that this process commits is already stored.
    pub fn oldest_in_flight(&self) -> Option<String> {
        self.in_flight.lock().ok().and_then(|set| set.first().cloned())
    }

    /// Changes after every commit that stored events.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Wakes the delivery worker when deliveries were written, and the publisher.
    fn wake(&self, deliveries: bool) {
        if deliveries {
            self.deliveries_waiting.notify_one();
        }
        if self.nats_subject_prefix.is_some() {
            self.publications_waiting.notify_one();
        }
    }

    /// The routing table serving now.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Reads the subscriptions again after a change.
    pub async fn reload_routes(&self) -> Result<(), StoreError> {
        let subscriptions = self.store.subscriptions().await?;
        self.routes.store(Arc::new(Routes::new(&subscriptions)));
        Ok(())
    }

    /// Tells the delivery worker that deliveries came due outside a commit (a retry, a replay,
    /// a resumed subscription).
    pub fn wake_deliveries(&self) {
        self.deliveries_waiting.notify_one();
    }

    /// Tells the publisher that events to publish were committed elsewhere (another node).
    pub fn wake_publications(&self) {
        self.publications_waiting.notify_one();
    }

    /// Resolves when deliveries were committed or came due since the last wait.
    pub async fn deliveries_waiting(&self) {
        self.deliveries_waiting.notified().await;
    }

    /// Resolves when events to publish were committed since the last wait.
    pub async fn publications_waiting(&self) {
        self.publications_waiting.notified().await;
    }
}
