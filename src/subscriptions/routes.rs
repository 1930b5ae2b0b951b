//! The routing table: which subscriptions an event goes to. Built from the stored subscriptions
//! (active and paused ones; a paused subscription's deliveries are kept), with each filter
//! compiled once, and rebuilt whenever a subscription changes. Pure.

use serde_json::Value;

use super::{Status, Subscription, pattern_matches};

/// Which subscriptions an event goes to: every active or paused subscription, with its filter
/// compiled once. Rebuilt whenever a subscription changes.
#[derive(Default)]
pub struct Routes {
    entries: Vec<Route>,
}

struct Route {
    id: String,
    events: Vec<String>,
    resource_id: Option<String>,
    filter: Option<crate::jsonpath::JsonPath>,
    ordering: Option<super::OrderingKey>,
}

impl Routes {
    pub fn new(subscriptions: &[Subscription]) -> Routes {
        let entries = subscriptions
            .iter()
            .filter(|subscription| subscription.status != Status::Disabled)
            .map(|subscription| Route {
                id: subscription.id.clone(),
                events: subscription.events.clone(),
                resource_id: subscription.resource_id.clone(),
                filter: subscription.filter.as_deref().and_then(|filter| super::filter::compile(filter).ok()),
                ordering: subscription.ordering.as_ref().and_then(super::OrderingKey::compile),
            })
            .collect();
        Routes { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether routing an event of this name reads its data: a subscription that takes it has a
    /// resource, a filter or an ordering key. Otherwise the name alone decides.
    pub fn reads_data(&self, event_name: &str) -> bool {
        self.entries.iter().any(|route| {
            (route.resource_id.is_some() || route.filter.is_some() || route.ordering.is_some())
                && route.events.iter().any(|pattern| routes_to(pattern, event_name))
        })
    }

    /// The ids of the subscriptions `event` goes to.
    pub fn matching(&self, event: &crate::event::Event) -> Vec<String> {
        let mut envelope: Option<Value> = None;
        self.entries
            .iter()
            .filter(|route| route.events.iter().any(|pattern| routes_to(pattern, &event.name)))
            .filter(|route| route.resource_id.as_deref().is_none_or(|resource| is_about(&event.data, resource)))
            .filter(|route| match &route.filter {
                None => true,
                Some(path) => {
                    let envelope = envelope.get_or_insert_with(|| serde_json::to_value(event).unwrap_or(Value::Null));
                    !path.query(envelope).is_empty()
                }
            })
            .map(|route| route.id.clone())
            .collect()
    }
}

impl Routes {
    /// The ordering key of `event` for each of `subscription_ids` that orders its deliveries
    /// (and finds a key in it): `(subscription id, key)`, written on the delivery rows.
    pub fn ordering_keys(&self, event: &crate::event::Event, subscription_ids: &[String]) -> Vec<(String, String)> {
        let mut envelope: Option<Value> = None;
        self.entries
            .iter()
            .filter(|route| subscription_ids.contains(&route.id))
            .filter_map(|route| {
                let ordering = route.ordering.as_ref()?;
                let envelope = envelope.get_or_insert_with(|| serde_json::to_value(event).unwrap_or(Value::Null));
                Some((route.id.clone(), ordering.key_of(&event.data, envelope)?))
            })
            .collect()
    }
}

/// Whether a subscription's pattern takes events of this name. hookgate's own events
/// (`hookgate.*`) go only to subscriptions that name them: a catch-all `*` means the events hooks
/// receive, so that an existing subscription is not sent operator notices it never asked for.
fn routes_to(pattern: &str, name: &str) -> bool {
    pattern_matches(pattern, name) && !(pattern == "*" && name.starts_with(crate::notice::PREFIX))
}

/// Whether event data is about `resource`: its top-level `resource_id`, `resourceId` or `id` is
/// it, as a string or a number. Routes filter by it, and erasure (`Store::purge_resource`) takes it.
pub fn is_about(data: &Value, resource: &str) -> bool {
    ["resource_id", "resourceId", "id"].iter().any(|field| match data.get(*field) {
        Some(Value::String(text)) => text == resource,
        Some(Value::Number(number)) => number.to_string() == resource,
        _ => false,
    })
}
