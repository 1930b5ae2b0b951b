//! Replay: new deliveries of stored events, due now, to the subscriptions each event matches
//! now or to one subscription. The API replays one event, the command line every event of a
//! query; both go through [`Replay`].

use jiff::Timestamp;
use std::collections::HashSet;
use std::sync::Arc;

use crate::event::Event;
use crate::store::{Store, StoreError};
use crate::subscriptions::{Routes, Status, Subscription};

/// Why a replay was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("a quarantined event is never delivered")]
    Quarantined,
    #[error("no subscription {0:?}")]
    NoSubscription(String),
    #[error("subscription {0:?} is disabled")]
    Disabled(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a replay's deliveries go.
enum Targets {
    /// Every subscription each event matches now; with `within`, only those of these ids.
    Matching { routes: Arc<Routes>, within: Option<HashSet<String>> },
    /// This subscription only.
    One(String),
}

/// A replay, its targets checked once, for one event or many.
pub struct Replay {
    store: Store,
    targets: Targets,
}

impl Replay {
    /// To every subscription each event matches now, as `routes` says; with `within`, only to
    /// those of these ids (what a scoped caller can see).
    pub fn matching(store: Store, routes: Arc<Routes>, within: Option<HashSet<String>>) -> Replay {
        Replay { store, targets: Targets::Matching { routes, within } }
    }

    /// To the subscription `id` only: it must exist, be within `reach`, and not be disabled.
    pub async fn to_one(store: Store, id: &str, reach: impl Fn(&Subscription) -> bool) -> Result<Replay, ReplayError> {
        let subscription = store
            .subscription(id)
            .await?
            .filter(|subscription| reach(subscription))
            .ok_or_else(|| ReplayError::NoSubscription(id.to_owned()))?;
        if subscription.status == Status::Disabled {
            return Err(ReplayError::Disabled(id.to_owned()));
        }
        Ok(Replay { store, targets: Targets::One(subscription.id) })
    }

    /// Refuses an event no replay may deliver: a quarantined one.
    pub fn check(event: &Event) -> Result<(), ReplayError> {
        if event.quarantined { Err(ReplayError::Quarantined) } else { Ok(()) }
    }

    /// Queues new deliveries of `event`, due `now`; returns their ids.
    pub async fn event(&self, event: &Event, now: Timestamp) -> Result<Vec<String>, ReplayError> {
        Replay::check(event)?;
        let subscription_ids = match &self.targets {
            Targets::Matching { routes, within } => {
                let mut matching = routes.matching(event);
                if let Some(within) = within {
                    matching.retain(|id| within.contains(id));
                }
                matching
            }
            Targets::One(id) => vec![id.clone()],
        };
        if subscription_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.store.enqueue_deliveries(&event.id, subscription_ids, now).await?)
    }
}
