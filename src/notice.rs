//! hookgate's own events, for operators: what went wrong (or right again) with a subscription,
//! a delivery, a source or a shaped hook. Each [`Notice`] becomes an ordinary event named under
//! `hookgate.` (app `hookgate`, hook type `internal`), committed like any other by
//! `pipeline::Committer::notify`: listed by `/api/events`, delivered to subscriptions that ask
//! for `hookgate.*` (a catch-all `*` does not: see `subscriptions::Routes`), mailed by `notify`.
//!
//! This module is pure: the time is passed in, and it knows no transport and no store. It never
//! puts a secret in an event: subscription URLs lose their query and credentials.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::event::{Event, EventSource, HookType, NewEvent};

/// The app of hookgate's own events.
pub const APP: &str = "hookgate";
/// Every hookgate event name starts with this.
pub const PREFIX: &str = "hookgate.";

/// The kinds of notice; each is one event name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NoticeKind {
    SubscriptionDisabled,
    SubscriptionRecovered,
    DeliveryExhausted,
    SourceRejections,
    QuarantineReceived,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 5] = [
        NoticeKind::SubscriptionDisabled,
        NoticeKind::SubscriptionRecovered,
        NoticeKind::DeliveryExhausted,
        NoticeKind::SourceRejections,
        NoticeKind::QuarantineReceived,
    ];

    pub fn event_name(self) -> &'static str {
        match self {
            NoticeKind::SubscriptionDisabled => "hookgate.subscription.disabled",
            NoticeKind::SubscriptionRecovered => "hookgate.subscription.recovered",
            NoticeKind::DeliveryExhausted => "hookgate.delivery.exhausted",
            NoticeKind::SourceRejections => "hookgate.source.rejections",
            NoticeKind::QuarantineReceived => "hookgate.quarantine.received",
        }
    }

    pub fn from_event_name(name: &str) -> Option<NoticeKind> {
        NoticeKind::ALL.into_iter().find(|kind| kind.event_name() == name)
    }
}

/// A subscription a notice is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRef {
    pub id: String,
    /// Its URL, without query or credentials.
    pub url: String,
}

impl SubscriptionRef {
    pub fn new(id: &str, url: &str) -> SubscriptionRef {
        SubscriptionRef { id: id.to_owned(), url: without_secrets(url) }
    }
}

/// Why a subscription was disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisableReason {
    /// The endpoint answered 410 Gone.
    Gone,
    /// Every delivery has failed since `since`, for longer than `limit_secs`.
    Failing { since: Timestamp, limit_secs: u64 },
}

/// Something an operator should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    SubscriptionDisabled {
        subscription: SubscriptionRef,
        reason: DisableReason,
    },
    /// The first success after failures.
    SubscriptionRecovered {
        subscription: SubscriptionRef,
        failing_since: Timestamp,
    },
    /// A delivery that gave up after its last retry.
    DeliveryExhausted {
        subscription: SubscriptionRef,
        delivery_id: String,
        event_id: String,
        event_name: String,
        attempts: u32,
        status_code: Option<u16>,
        error: Option<String>,
    },
    /// A source's requests failed verification `count` times within `window_secs`: typically a
    /// secret set wrong.
    SourceRejections {
        source: String,
        count: usize,
        window_secs: u64,
        /// How many of them failed for each reason class (as in the 401 reply).
        reasons: BTreeMap<String, usize>,
    },
    /// A payload that did not fit its hook's shape was stored in quarantine.
    QuarantineReceived {
        event_id: String,
        event_name: String,
        app: String,
    },
}

impl Notice {
    pub fn kind(&self) -> NoticeKind {
        match self {
            Notice::SubscriptionDisabled { .. } => NoticeKind::SubscriptionDisabled,
            Notice::SubscriptionRecovered { .. } => NoticeKind::SubscriptionRecovered,
            Notice::DeliveryExhausted { .. } => NoticeKind::DeliveryExhausted,
            Notice::SourceRejections { .. } => NoticeKind::SourceRejections,
            Notice::QuarantineReceived { .. } => NoticeKind::QuarantineReceived,
        }
    }

    /// What the notice is about: a subscription id, a source, or a hook's event name. Also the
    /// event's `resourceId`, so a subscription with a `resource_id` can follow one thing.
    pub fn subject(&self) -> &str {
        match self {
            Notice::SubscriptionDisabled { subscription, .. }
            | Notice::SubscriptionRecovered { subscription, .. }
            | Notice::DeliveryExhausted { subscription, .. } => &subscription.id,
            Notice::SourceRejections { source, .. } => source,
            Notice::QuarantineReceived { event_name, .. } => event_name,
        }
    }

    /// The event a quarantine notice is about.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            Notice::QuarantineReceived { event_id, .. } => Some(event_id),
            _ => None,
        }
    }

    /// The subscription that must not get this notice: one that is disabled (it would not be
    /// sent anyway), and one whose delivery of a hookgate event gave up (its endpoint is failing;
    /// telling it would only fail again, one notice after another).
    pub fn withheld_from(&self) -> Option<&str> {
        match self {
            Notice::SubscriptionDisabled { subscription, .. } => Some(&subscription.id),
            Notice::DeliveryExhausted { subscription, event_name, .. } if event_name.starts_with(PREFIX) => {
                Some(&subscription.id)
            }
            _ => None,
        }
    }

    /// One sentence saying what happened.
    pub fn summary(&self) -> String {
        match self {
            Notice::SubscriptionDisabled { subscription, reason: DisableReason::Gone } => format!(
                "Subscription {} ({}) was disabled: its endpoint answered 410 Gone.",
                subscription.id, subscription.url
            ),
            Notice::SubscriptionDisabled { subscription, reason: DisableReason::Failing { since, limit_secs } } => {
                format!(
                    "Subscription {} ({}) was disabled: every delivery has failed since {since}, for longer than {limit_secs} seconds.",
                    subscription.id, subscription.url
                )
            }
            Notice::SubscriptionRecovered { subscription, failing_since } => format!(
                "Subscription {} ({}) recovered: a delivery succeeded after failures since {failing_since}.",
                subscription.id, subscription.url
            ),
            Notice::DeliveryExhausted { subscription, delivery_id, event_id, attempts, status_code, error, .. } => {
                let last = match (status_code, error) {
                    (Some(code), _) => format!("the last answer was {code}"),
                    (None, Some(error)) => format!("the last attempt failed: {error}"),
                    (None, None) => "no answer".to_owned(),
                };
                format!(
                    "Delivery {delivery_id} of event {event_id} to subscription {} ({}) gave up after {attempts} attempts; {last}.",
                    subscription.id, subscription.url
                )
            }
            Notice::SourceRejections { source, count, window_secs, reasons } => {
                let reasons: Vec<String> = reasons.iter().map(|(reason, n)| format!("{reason} ×{n}")).collect();
                format!(
                    "Source {source} refused {count} requests within {window_secs} seconds ({}); is its secret set right?",
                    reasons.join(", ")
                )
            }
            Notice::QuarantineReceived { event_id, event_name, .. } => {
                format!("Event {event_id} of hook {event_name} did not fit the hook's shape and was quarantined.")
            }
        }
    }

    /// What to do about it, with the API path or command (paths relative to the public URL).
    pub fn fix(&self) -> String {
        match self {
            Notice::SubscriptionDisabled { subscription, .. } => format!(
                "Fix the endpoint, then enable the subscription again: PATCH /api/webhooks/{} with {{\"status\": \"active\"}}.",
                subscription.id
            ),
            Notice::SubscriptionRecovered { subscription, .. } => {
                format!("Nothing to do. Its deliveries: GET /api/webhooks/{}/deliveries.", subscription.id)
            }
            Notice::DeliveryExhausted { subscription, delivery_id, .. } => format!(
                "Once the endpoint works, send it again: POST /api/webhooks/{}/deliveries/{delivery_id}/retry.",
                subscription.id
            ),
            Notice::SourceRejections { source, .. } => format!(
                "See why: GET /api/sources/rejections?source={source}; `hookgate sources` shows which secrets it reads and whether each is set."
            ),
            Notice::QuarantineReceived { event_id, .. } => {
                format!("Read it: GET /api/events/{event_id}; replay it once the hook's shape fits.")
            }
        }
    }

    /// The event's data: the facts, the summary and the fix.
    fn data(&self) -> Value {
        let mut data = match self {
            Notice::SubscriptionDisabled { subscription, reason } => {
                let mut data = json!({"subscriptionId": subscription.id, "url": subscription.url});
                match reason {
                    DisableReason::Gone => data["reason"] = json!("gone"),
                    DisableReason::Failing { since, limit_secs } => {
                        data["reason"] = json!("failing");
                        data["failingSince"] = json!(since);
                        data["disableAfterSecs"] = json!(limit_secs);
                    }
                }
                data
            }
            Notice::SubscriptionRecovered { subscription, failing_since } => {
                json!({"subscriptionId": subscription.id, "url": subscription.url, "failingSince": failing_since})
            }
            Notice::DeliveryExhausted {
                subscription,
                delivery_id,
                event_id,
                event_name,
                attempts,
                status_code,
                error,
            } => json!({
                "subscriptionId": subscription.id, "url": subscription.url, "deliveryId": delivery_id,
                "eventId": event_id, "eventName": event_name, "attempts": attempts,
                "statusCode": status_code, "error": error,
            }),
            Notice::SourceRejections { source, count, window_secs, reasons } => {
                json!({"source": source, "count": count, "windowSecs": window_secs, "reasons": reasons})
            }
            Notice::QuarantineReceived { event_id, event_name, app } => {
                json!({"eventId": event_id, "eventName": event_name, "app": app})
            }
        };
        data["resourceId"] = json!(self.subject());
        data["summary"] = json!(self.summary());
        data["fix"] = json!(self.fix());
        data
    }

    /// The event this notice is, received at `now`.
    pub fn into_event(self, now: Timestamp) -> NewEvent {
        let data = self.data();
        let raw_body = serde_json::to_vec(&data).expect("a notice serializes");
        NewEvent {
            event: Event {
                id: crate::event::new_event_id(),
                name: self.kind().event_name().to_owned(),
                app: APP.to_owned(),
                hook_type: HookType::Internal,
                received_at: now,
                source: EventSource::default(),
                data,
                receive_count: 1,
                quarantined: false,
            },
            raw_body: raw_body.into(),
            idempotency_key: None,
            data_is_raw_json: true,
            data_deferred: false,
            deliver_to: Vec::new(),
            ordering_keys: Vec::new(),
            publish_to: None,
        }
    }
}

/// A URL as it may be shown: without credentials, query or fragment.
fn without_secrets(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}{path}")
        }
        None => without_query.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn each_kind_has_one_name_under_hookgate_and_is_found_by_it() {
        let names: Vec<&str> = NoticeKind::ALL.iter().map(|kind| kind.event_name()).collect();
        assert_eq!(
            names,
            [
                "hookgate.subscription.disabled",
                "hookgate.subscription.recovered",
                "hookgate.delivery.exhausted",
                "hookgate.source.rejections",
                "hookgate.quarantine.received"
            ]
        );
        for kind in NoticeKind::ALL {
            assert_eq!(NoticeKind::from_event_name(kind.event_name()), Some(kind));
        }
        assert_eq!(NoticeKind::from_event_name("hookgate.other"), None);
    }

    #[test]
    fn a_disabled_subscription_becomes_an_internal_event_with_its_reason_and_no_secret() {
        let notice = Notice::SubscriptionDisabled {
            subscription: SubscriptionRef::new("sub_1", "https://user:pass@hooks.example/in?token=t0k3n#x"),
            reason: DisableReason::Failing { since: at("2026-11-20T10:00:00Z"), limit_secs: 432_000 },
        };
        assert_eq!(notice.withheld_from(), Some("sub_1"));
        let new = notice.into_event(at("2026-11-25T10:00:01Z"));
        let event = &new.event;
        assert_eq!((event.name.as_str(), event.app.as_str()), ("hookgate.subscription.disabled", "hookgate"));
        assert_eq!(event.hook_type, HookType::Internal);
        assert_eq!(event.received_at, at("2026-11-25T10:00:01Z"));
        let expected = json!({
            "subscriptionId": "sub_1",
            "url": "https://hooks.example/in",
            "reason": "failing",
            "failingSince": "2026-11-20T10:00:00Z",
            "disableAfterSecs": 432000,
            "resourceId": "sub_1",
            "summary": "Subscription sub_1 (https://hooks.example/in) was disabled: every delivery has failed since 2026-11-20T10:00:00Z, for longer than 432000 seconds.",
            "fix": "Fix the endpoint, then enable the subscription again: PATCH /api/webhooks/sub_1 with {\"status\": \"active\"}.",
        });
        assert_eq!(event.data, expected);
        assert_eq!(serde_json::from_slice::<Value>(&new.raw_body).unwrap(), expected, "the body is the data");
        assert!(new.data_is_raw_json);
    }

    #[test]
    fn only_exhausted_deliveries_of_hookgate_events_are_withheld_from_their_subscription() {
        let exhausted = |event_name: &str| Notice::DeliveryExhausted {
            subscription: SubscriptionRef::new("sub_2", "https://ops.example/in"),
            delivery_id: "dlv_1".into(),
            event_id: "evt_1".into(),
            event_name: event_name.into(),
            attempts: 3,
            status_code: Some(503),
            error: None,
        };
        assert_eq!(exhausted("stripe.charge.succeeded").withheld_from(), None);
        assert_eq!(exhausted("hookgate.delivery.exhausted").withheld_from(), Some("sub_2"));
        let recovered = Notice::SubscriptionRecovered {
            subscription: SubscriptionRef::new("sub_2", "https://ops.example/in"),
            failing_since: at("2026-11-20T10:00:00Z"),
        };
        assert_eq!(recovered.withheld_from(), None);
        assert_eq!(
            exhausted("stripe.charge.succeeded").summary(),
            "Delivery dlv_1 of event evt_1 to subscription sub_2 (https://ops.example/in) gave up after 3 attempts; the last answer was 503."
        );
    }

    #[test]
    fn source_rejections_count_each_reason() {
        let notice = Notice::SourceRejections {
            source: "stripe".into(),
            count: 10,
            window_secs: 60,
            reasons: BTreeMap::from([
                ("signature_mismatch".to_owned(), 9),
                ("timestamp_outside_tolerance".to_owned(), 1),
            ]),
        };
        let event = notice.into_event(at("2026-11-25T10:00:00Z")).event;
        assert_eq!(event.data["resourceId"], "stripe");
        assert_eq!(event.data["reasons"], json!({"signature_mismatch": 9, "timestamp_outside_tolerance": 1}));
        assert_eq!(
            event.data["summary"],
            "Source stripe refused 10 requests within 60 seconds (signature_mismatch ×9, timestamp_outside_tolerance ×1); is its secret set right?"
        );
    }

    #[test]
    fn urls_lose_credentials_query_and_fragment() {
        assert_eq!(without_secrets("https://a:b@h.example:8443/p/q?x=1#f"), "https://h.example:8443/p/q");
        assert_eq!(without_secrets("http://h.example"), "http://h.example");
        assert_eq!(without_secrets("http://h.example?k=v"), "http://h.example");
    }
}
