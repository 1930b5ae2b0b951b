//! The last hour of the process's own activity, minute by minute: requests accepted and
//! refused at ingress (HTTP and SMTP), deliveries made and failed. Fed by the metrics the rest
//! of hookgate already records (see [`Tee`]), so no module counts twice; read by the console's
//! health view. Per process and in memory: nothing is kept across restarts, and each node of a
//! cluster counts its own.
//!
//! Sixty slots, one per minute, reused round the clock. Counting is lock-free: a slot whose
//! minute has passed is reset by the first count of its new minute, and a count that races
//! that reset may be lost; the chart is a picture, the Prometheus counters are the record.

use jiff::Timestamp;
use metrics::{Counter, CounterFn, Key};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// A request or message accepted at ingress (its events stored).
    Accepted,
    /// A request or message refused at ingress, for any reason.
    Refused,
    /// A delivery the receiver accepted.
    Delivered,
    /// A delivery attempt that failed (retried later or given up).
    DeliveryFailed,
}

const MEASURES: usize = 4;
const MINUTES: u64 = 60;

impl Measure {
    fn index(self) -> usize {
        match self {
            Measure::Accepted => 0,
            Measure::Refused => 1,
            Measure::Delivered => 2,
            Measure::DeliveryFailed => 3,
        }
    }

    /// The measure a metric increment stands for, if any: `hookgate_requests_total` by its
    /// outcome, SMTP's `hookgate_email_messages_total` (mail posted over HTTP is a request
    /// already) and `hookgate_deliveries_total`.
    pub fn of(key: &Key) -> Option<Measure> {
        let label = |name: &str| key.labels().find(|label| label.key() == name).map(|label| label.value());
        match key.name() {
            "hookgate_requests_total" => Some(outcome(label("outcome"))),
            "hookgate_email_messages_total" if label("transport") == Some("smtp") => Some(outcome(label("outcome"))),
            "hookgate_deliveries_total" => match label("outcome") {
                Some("delivered") => Some(Measure::Delivered),
                Some(_) => Some(Measure::DeliveryFailed),
                None => None,
            },
            _ => None,
        }
    }
}

fn outcome(label: Option<&str>) -> Measure {
    if label == Some("accepted") { Measure::Accepted } else { Measure::Refused }
}

#[derive(Default)]
struct Slot {
    /// The minute (since the Unix epoch) the counts belong to.
    minute: AtomicU64,
    counts: [AtomicU64; MEASURES],
}

/// Counts per minute over the last hour.
pub struct Activity {
    slots: [Slot; MINUTES as usize],
}

/// One minute's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Minute {
    /// The minute's start.
    pub start: Timestamp,
    pub accepted: u64,
    pub refused: u64,
    pub delivered: u64,
    pub delivery_failed: u64,
}

fn minute_of(at: Timestamp) -> u64 {
    u64::try_from(at.as_second()).unwrap_or(0) / 60
}

impl Default for Activity {
    fn default() -> Self {
        Activity { slots: std::array::from_fn(|_| Slot::default()) }
    }
}

impl Activity {
    /// Counts `count` of `measure` at `at`.
    pub fn add(&self, measure: Measure, count: u64, at: Timestamp) {
        let minute = minute_of(at);
        let slot = &self.slots[(minute % MINUTES) as usize];
        let seen = slot.minute.load(Ordering::Acquire);
        if seen < minute && slot.minute.compare_exchange(seen, minute, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            for count in &slot.counts {
                count.store(0, Ordering::Release);
            }
        }
        if slot.minute.load(Ordering::Acquire) == minute {
            slot.counts[measure.index()].fetch_add(count, Ordering::Relaxed);
        }
    }

    /// The sixty minutes up to and including `now`'s, oldest first; minutes with no count are
    /// zeros.
    pub fn last_hour(&self, now: Timestamp) -> Vec<Minute> {
        let current = minute_of(now);
        (0..MINUTES)
            .rev()
            .map(|ago| {
                let minute = current.saturating_sub(ago);
                let start = Timestamp::from_second((minute * 60) as i64).unwrap_or(now);
                let slot = &self.slots[(minute % MINUTES) as usize];
                if slot.minute.load(Ordering::Acquire) != minute {
                    return Minute { start, ..Minute::default() };
                }
                let count = |measure: Measure| slot.counts[measure.index()].load(Ordering::Relaxed);
                Minute {
                    start,
                    accepted: count(Measure::Accepted),
                    refused: count(Measure::Refused),
                    delivered: count(Measure::Delivered),
                    delivery_failed: count(Measure::DeliveryFailed),
                }
            })
            .collect()
    }
}

/// A counter that also counts into [`Activity`]: what the recorder hands out for the metrics
/// that [`Measure::of`] knows.
pub struct Tee {
    pub inner: Counter,
    pub measure: Measure,
    pub activity: &'static Activity,
}

impl CounterFn for Tee {
    fn increment(&self, value: u64) {
        self.inner.increment(value);
        self.activity.add(self.measure, value, Timestamp::now());
    }

    fn absolute(&self, value: u64) {
        self.inner.absolute(value);
    }
}

/// Wraps `inner` when `key` is a measured metric.
pub fn tee(key: &Key, inner: Counter, activity: &'static Activity) -> Counter {
    match Measure::of(key) {
        Some(measure) => Counter::from_arc(Arc::new(Tee { inner, measure, activity })),
        None => inner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn counts_land_in_their_minute_and_the_hour_reads_oldest_first() {
        let activity = Activity::default();
        activity.add(Measure::Accepted, 2, at("2026-11-23T10:00:05Z"));
        activity.add(Measure::Accepted, 1, at("2026-11-23T10:00:59Z"));
        activity.add(Measure::Refused, 1, at("2026-11-23T10:01:00Z"));
        activity.add(Measure::DeliveryFailed, 4, at("2026-11-23T10:30:00Z"));
        let hour = activity.last_hour(at("2026-11-23T10:30:10Z"));
        assert_eq!(hour.len(), 60);
        assert_eq!(hour[59].start, at("2026-11-23T10:30:00Z"));
        assert_eq!(hour[59].delivery_failed, 4);
        assert_eq!(hour[29].start, at("2026-11-23T10:00:00Z"));
        assert_eq!((hour[29].accepted, hour[29].refused), (3, 0));
        assert_eq!(hour[30].refused, 1);
        assert_eq!(hour.iter().map(|minute| minute.accepted).sum::<u64>(), 3);
    }

    #[test]
    fn a_slot_an_hour_old_is_reset_when_its_minute_comes_round_again() {
        let activity = Activity::default();
        activity.add(Measure::Delivered, 5, at("2026-11-23T10:00:00Z"));
        assert_eq!(activity.last_hour(at("2026-11-23T11:00:30Z")).iter().map(|m| m.delivered).sum::<u64>(), 0);
        activity.add(Measure::Delivered, 1, at("2026-11-23T11:00:30Z"));
        let hour = activity.last_hour(at("2026-11-23T11:00:30Z"));
        assert_eq!(hour[59].delivered, 1, "not 6: the old minute's counts are gone");
    }

    #[test]
    fn a_late_count_for_a_minute_whose_slot_moved_on_is_dropped() {
        let activity = Activity::default();
        activity.add(Measure::Accepted, 1, at("2026-11-23T11:00:00Z"));
        activity.add(Measure::Accepted, 7, at("2026-11-23T10:00:00Z"));
        assert_eq!(activity.last_hour(at("2026-11-23T11:00:00Z"))[59].accepted, 1);
    }

    #[test]
    fn the_measured_metrics_are_known_by_name_and_outcome() {
        let key = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            Key::from_parts(name, labels.iter().map(|(k, v)| metrics::Label::new(*k, *v)).collect::<Vec<_>>())
        };
        let of = |name, labels: &[(&'static str, &'static str)]| Measure::of(&key(name, labels));
        assert_eq!(of("hookgate_requests_total", &[("hook", "a"), ("outcome", "accepted")]), Some(Measure::Accepted));
        assert_eq!(
            of("hookgate_requests_total", &[("hook", "a"), ("outcome", "bad_signature")]),
            Some(Measure::Refused)
        );
        assert_eq!(
            of("hookgate_email_messages_total", &[("transport", "smtp"), ("outcome", "accepted")]),
            Some(Measure::Accepted)
        );
        assert_eq!(of("hookgate_email_messages_total", &[("transport", "http"), ("outcome", "accepted")]), None);
        assert_eq!(of("hookgate_deliveries_total", &[("outcome", "retry")]), Some(Measure::DeliveryFailed));
        assert_eq!(of("hookgate_deliveries_total", &[("outcome", "delivered")]), Some(Measure::Delivered));
        assert_eq!(of("hookgate_nats_published_total", &[]), None);
    }
}
