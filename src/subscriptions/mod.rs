//! Subscriptions: who wants which events, delivered where. The shape users of the seed platforms
//! know: `url`, `name`, `events` (exact names, `*`, prefixes like `stripe.*`; `subscribed_events`
//! accepted as an alias), `status` (`active`, `paused`, `disabled`), an optional `resource_id`,
//! an optional JSONPath `filter` (over the event, its source headers included), custom `headers`,
//! an optional JavaScript `transform` (see `crate::transform`), an optional `rate_limit`
//! (deliveries a second, with a burst), an optional `ordering` per key (`ordering`), and a signing
//! secret (`whsec_…`, Standard Webhooks) shown only when it is created or rotated.
//!
//! This file is the model ([`Subscription`], its secrets and status, the `sub_` id prefix);
//! beside it: `patterns` (event name patterns and how a scope covers one), `routes` (the routing
//! table the commit asks), `request` (API requests validated into subscriptions, every problem
//! named by its field), `aliases` (the other seeds' names for fields, `enabled`, `target_url`
//! and `event`, rewritten before validation) and `target` (where deliveries may go: the SSRF
//! policy). Only `target`
//! does I/O, a DNS resolution; the store keeps subscriptions, `api::subscriptions` serves them.

mod aliases;
pub mod filter;
mod ordering;
mod patterns;
mod rate_limit;
mod request;
mod routes;
mod target;

pub use aliases::{Canonical, canonical};
pub use ordering::{Ordering, OrderingKey};
pub use patterns::{is_pattern, pattern_covers, pattern_matches};
pub use rate_limit::RateLimit;
pub use request::{FieldError, from_request};
pub use routes::{Routes, is_about};
pub use target::{TargetPolicy, check_target, check_url, is_public};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Subscription ids start with this; source paths may not.
pub const ID_PREFIX: &str = "sub_";

/// A subscription as stored, secrets included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// `sub_` and a UUIDv7 in hex.
    pub id: String,
    pub name: String,
    pub url: String,
    /// Event name patterns: exact names, `*`, or prefixes ending in `.*`.
    pub events: Vec<String>,
    pub status: Status,
    /// Only events about this resource (seed 004); every event when absent.
    pub resource_id: Option<String>,
    /// A JSONPath that must find something in the event (its source headers included, by
    /// case-insensitive name: `filter`) for it to be delivered.
    pub filter: Option<String>,
    /// Sent with every delivery.
    pub headers: BTreeMap<String, String>,
    /// JavaScript defining `transform(event)`, run before each delivery (`crate::transform`): what
    /// it returns is sent as the event, `null` drops the delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    /// The version of `transform` (`crate::transform::version_of`), recorded with each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform_version: Option<String>,
    /// At most this many deliveries a second, across every worker and node; `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Deliveries with the same key go one at a time, in event order (`ordering`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Ordering>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Why the subscription was disabled, when hookgate disabled it.
    pub disabled_reason: Option<String>,
    /// Since when every delivery attempt has failed; cleared by a success.
    #[serde(default)]
    pub failing_since: Option<Timestamp>,
    /// Signing secrets, newest first; an old one stays valid until its `expires_at`.
    pub secrets: Vec<SigningSecret>,
    /// Seed 004's JSON:API `relationships` (the site a hook belongs to, say): kept as sent and
    /// shown back, never interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationships: Option<Value>,
}

/// A secret deliveries are signed with (Standard Webhooks: `whsec_` and base64 of 24 bytes).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningSecret {
    pub secret: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSecret").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// Whether a subscription receives deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Deliveries are made.
    Active,
    /// Deliveries accumulate and are sent when the subscription is active again.
    Paused,
    /// Nothing is delivered or kept.
    Disabled,
}

impl Subscription {
    /// The secrets valid at `now`, newest first.
    pub fn signing_secrets(&self, now: Timestamp) -> impl Iterator<Item = &str> {
        self.secrets
            .iter()
            .filter(move |secret| secret.expires_at.is_none_or(|at| at > now))
            .map(|secret| secret.secret.as_str())
    }

    /// Whether an event named `name` matches this subscription's patterns.
    pub fn wants(&self, name: &str) -> bool {
        self.events.iter().any(|pattern| pattern_matches(pattern, name))
    }

    /// The subscription as the API shows it: everything but the secrets.
    pub fn view(&self) -> Value {
        let mut view = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(object) = &mut view {
            object.remove("secrets");
        }
        view
    }

    /// Replaces the signing secret with `secret` (a [`new_secret`]); the others stop at
    /// `old_expires_at` (now, or after an overlap the caller asked for).
    pub fn rotate_secret(&mut self, secret: String, now: Timestamp, old_expires_at: Timestamp) {
        for secret in &mut self.secrets {
            if secret.expires_at.is_none_or(|at| at > old_expires_at) {
                secret.expires_at = Some(old_expires_at);
            }
        }
        self.secrets.retain(|secret| secret.expires_at.is_none_or(|at| at > now));
        self.secrets.insert(0, SigningSecret { secret, created_at: now, expires_at: None });
        self.updated_at = now;
    }

    /// Applies an edit made from an earlier snapshot onto the subscription as it is now: the
    /// caller's fields win, while what the delivery worker keeps (`failing_since`, and a status it
    /// set) stands unless the edit names a status. Enabling a disabled subscription starts its
    /// health afresh.
    pub fn apply_edit(&mut self, edit: Subscription, status_given: bool) {
        let was_disabled = self.status == Status::Disabled;
        let (status, disabled_reason, failing_since) = (self.status, self.disabled_reason.take(), self.failing_since);
        *self = Subscription { failing_since, secrets: std::mem::take(&mut self.secrets), ..edit };
        if !status_given {
            self.status = status;
            self.disabled_reason = disabled_reason;
        } else if was_disabled && self.status != Status::Disabled {
            self.failing_since = None;
        }
    }
}

/// A new Standard Webhooks secret.
pub fn new_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-23T10:00:00Z".parse().unwrap()
    }

    fn stored() -> Subscription {
        Subscription {
            id: "sub_1".into(),
            name: String::new(),
            url: "https://x.example".into(),
            events: vec!["*".into()],
            status: Status::Active,
            resource_id: None,
            filter: None,
            headers: BTreeMap::new(),
            transform: None,
            transform_version: None,
            rate_limit: None,
            ordering: None,
            created_at: now(),
            updated_at: now(),
            disabled_reason: None,
            failing_since: None,
            relationships: None,
            secrets: vec![SigningSecret { secret: "whsec_old".into(), created_at: now(), expires_at: None }],
        }
    }

    #[test]
    fn an_edit_from_a_snapshot_keeps_what_the_worker_and_a_rotation_changed_since() {
        let snapshot = stored();
        let mut edit = snapshot.clone();
        edit.name = "renamed".into();
        // Meanwhile the worker disabled it after a 410, and the secret was rotated.
        let mut current = snapshot.clone();
        current.status = Status::Disabled;
        current.disabled_reason = Some("the endpoint answered 410 Gone".into());
        current.failing_since = Some(now());
        current.rotate_secret("whsec_new".into(), now(), now());

        let mut renamed = current.clone();
        renamed.apply_edit(edit.clone(), false);
        assert_eq!(renamed.name, "renamed");
        assert_eq!(
            (renamed.status, renamed.disabled_reason.as_deref()),
            (Status::Disabled, Some("the endpoint answered 410 Gone"))
        );
        assert_eq!(renamed.failing_since, Some(now()));
        assert_eq!(renamed.secrets, current.secrets, "the rotation stands");

        let mut enabled = current.clone();
        enabled.apply_edit(Subscription { status: Status::Active, disabled_reason: None, ..edit }, true);
        assert_eq!(
            (enabled.status, enabled.disabled_reason.clone(), enabled.failing_since),
            (Status::Active, None, None),
            "enabling starts the subscription's health afresh"
        );
    }

    #[test]
    fn rotation_keeps_the_old_secret_only_for_the_overlap() {
        let mut subscription = stored();
        let later = now() + jiff::SignedDuration::from_secs(3600);
        let new = new_secret();
        subscription.rotate_secret(new.clone(), now(), later);
        assert_eq!(subscription.signing_secrets(now()).collect::<Vec<_>>(), [new.as_str(), "whsec_old"]);
        assert_eq!(subscription.signing_secrets(later).collect::<Vec<_>>(), [new.as_str()]);
        let newest = new_secret();
        subscription.rotate_secret(newest.clone(), now(), now());
        assert_eq!(
            subscription.signing_secrets(now()).collect::<Vec<_>>(),
            [newest.as_str()],
            "no overlap: the old stop at once"
        );
    }
}
