//! A bounded, in-memory log of the source requests that failed verification, for operators to
//! see why a platform's deliveries are refused. It keeps the reason, the peer, header names (not
//! values: signature headers are credentials) and a short excerpt of the body; never a secret or
//! a signature. The oldest entry goes when the log is full. It lives per process and is not kept
//! across restarts.
//!
//! It also watches each source's rate: when a source's rejections reach a threshold within a
//! window (the typical misconfigured secret), [`RejectionLog::record`] returns a
//! `hookgate.source.rejections` notice for the caller to commit, then stays quiet about that
//! source for one window.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use crate::notice::Notice;

/// How many rejections are kept.
pub const CAPACITY: usize = 256;
/// How much of a refused body is kept.
const BODY_EXCERPT_BYTES: usize = 512;

/// One refused request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub at: Timestamp,
    pub source: String,
    /// The reason class, as in the 401 reply.
    pub reason: &'static str,
    /// The reason in words (never an expected value).
    pub detail: String,
    pub peer: Option<String>,
    /// The names of the request's headers, in order.
    pub header_names: Vec<String>,
    /// The first bytes of the body, as text (lossy), and the body's full size.
    pub body_excerpt: String,
    pub body_bytes: usize,
}

impl Rejection {
    pub fn new(
        source: &str,
        error: &crate::verify::VerifyError,
        peer: Option<String>,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Rejection {
        let excerpt = &body[..body.len().min(BODY_EXCERPT_BYTES)];
        Rejection {
            at: Timestamp::now(),
            source: source.to_owned(),
            reason: error.reason_class(),
            detail: error.to_string(),
            peer,
            header_names: headers.keys().map(|name| name.as_str().to_owned()).collect(),
            body_excerpt: String::from_utf8_lossy(excerpt).into_owned(),
            body_bytes: body.len(),
        }
    }
}

/// When a source's rejections become a notice.
#[derive(Debug, Clone, Copy)]
pub struct RejectionAlarm {
    /// This many rejections of one source...
    pub threshold: usize,
    /// ...within this long.
    pub window: std::time::Duration,
}

/// One source's recent rejections, for the alarm.
#[derive(Debug, Default)]
struct SourceRate {
    /// Time and reason class of each rejection within the window, oldest first.
    recent: VecDeque<(Timestamp, &'static str)>,
    /// After a notice, none again for this source before this time.
    quiet_until: Option<Timestamp>,
}

/// The log itself.
#[derive(Debug, Default)]
pub struct RejectionLog {
    entries: Mutex<VecDeque<Rejection>>,
    /// `None`: no notices.
    alarm: Option<RejectionAlarm>,
    rates: Mutex<HashMap<String, SourceRate>>,
}

impl RejectionLog {
    /// A log that also returns a notice when a source's rejections pass `alarm`.
    pub fn with_alarm(alarm: RejectionAlarm) -> RejectionLog {
        RejectionLog { alarm: Some(alarm), ..RejectionLog::default() }
    }

    /// Keeps the rejection; returns the notice to commit when it brings its source's count within
    /// the window to the threshold.
    pub fn record(&self, rejection: Rejection) -> Option<Notice> {
        let notice = self.alarm.and_then(|alarm| self.count(alarm, &rejection));
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() == CAPACITY {
                entries.pop_front();
            }
            entries.push_back(rejection);
        }
        notice
    }

    fn count(&self, alarm: RejectionAlarm, rejection: &Rejection) -> Option<Notice> {
        let mut rates = self.rates.lock().ok()?;
        let rate = rates.entry(rejection.source.clone()).or_default();
        let now = rejection.at;
        if rate.quiet_until.is_some_and(|until| now < until) {
            return None;
        }
        let window = SignedDuration::try_from(alarm.window).unwrap_or(SignedDuration::MAX);
        while rate.recent.front().is_some_and(|(at, _)| now.duration_since(*at) >= window) {
            rate.recent.pop_front();
        }
        rate.recent.push_back((now, rejection.reason));
        if rate.recent.len() < alarm.threshold {
            return None;
        }
        let mut reasons = BTreeMap::new();
        for (_, reason) in rate.recent.drain(..) {
            *reasons.entry(reason.to_owned()).or_insert(0) += 1;
        }
        rate.quiet_until = now.checked_add(window).ok();
        Some(Notice::SourceRejections {
            source: rejection.source.clone(),
            count: reasons.values().sum(),
            window_secs: alarm.window.as_secs(),
            reasons,
        })
    }

    /// The kept rejections, newest first, optionally of one source.
    pub fn recent(&self, source: Option<&str>) -> Vec<Rejection> {
        let Ok(entries) = self.entries.lock() else { return Vec::new() };
        entries.iter().rev().filter(|r| source.is_none_or(|source| r.source == source)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::VerifyError;

    #[test]
    fn the_log_keeps_the_newest_entries_and_no_header_values() {
        let log = RejectionLog::default();
        let mut headers = http::HeaderMap::new();
        headers.insert("stripe-signature", http::HeaderValue::from_static("t=1,v1=deadbeef"));
        for n in 0..CAPACITY + 10 {
            let source = if n % 2 == 0 { "stripe" } else { "github" };
            log.record(Rejection::new(
                source,
                &VerifyError::SignatureMismatch,
                None,
                &headers,
                format!("body {n}").as_bytes(),
            ));
        }
        let excerpts = |rejections: &[Rejection]| -> Vec<String> {
            rejections.iter().map(|r| format!("{} {}", r.source, r.body_excerpt)).collect()
        };
        // The oldest ten went; the rest come newest first.
        let kept = (10..CAPACITY + 10).rev();
        let expected: Vec<String> =
            kept.clone().map(|n| format!("{} body {n}", if n % 2 == 0 { "stripe" } else { "github" })).collect();
        assert_eq!(excerpts(&log.recent(None)), expected);
        let stripe: Vec<String> = kept.filter(|n| n % 2 == 0).map(|n| format!("stripe body {n}")).collect();
        assert_eq!(stripe.len(), CAPACITY / 2);
        assert_eq!(excerpts(&log.recent(Some("stripe"))), stripe, "only the source asked for");
        assert!(log.recent(Some("gitlab")).is_empty(), "a source without rejections has none");
        let all = log.recent(None);
        assert_eq!(all[0].header_names, ["stripe-signature"]);
        let rendered = serde_json::to_string(&all).unwrap();
        assert!(rendered.contains("stripe-signature") && !rendered.contains("deadbeef"), "names only, never values");
    }

    fn rejection_at(source: &str, at: &str, error: &VerifyError) -> Rejection {
        Rejection { at: at.parse().unwrap(), ..Rejection::new(source, error, None, &http::HeaderMap::new(), b"") }
    }

    #[test]
    fn a_source_passing_the_threshold_within_the_window_gives_one_notice_then_a_quiet_window() {
        let log = RejectionLog::with_alarm(RejectionAlarm { threshold: 3, window: std::time::Duration::from_secs(60) });
        let mismatch = VerifyError::SignatureMismatch;
        // Two within the window, then the first falls out of it: still below the threshold.
        assert_eq!(log.record(rejection_at("stripe", "2026-11-25T10:00:00Z", &mismatch)), None);
        assert_eq!(log.record(rejection_at("stripe", "2026-11-25T10:00:50Z", &mismatch)), None);
        assert_eq!(log.record(rejection_at("stripe", "2026-11-25T10:01:05Z", &mismatch)), None);
        // Another source counts apart.
        assert_eq!(log.record(rejection_at("github", "2026-11-25T10:01:06Z", &mismatch)), None);
        let notice = log.record(rejection_at("stripe", "2026-11-25T10:01:10Z", &VerifyError::NoSecretConfigured));
        let expected = Notice::SourceRejections {
            source: "stripe".into(),
            count: 3,
            window_secs: 60,
            reasons: BTreeMap::from([
                (VerifyError::SignatureMismatch.reason_class().to_owned(), 2),
                (VerifyError::NoSecretConfigured.reason_class().to_owned(), 1),
            ]),
        };
        assert_eq!(notice, Some(expected));
        // Quiet for one window after the notice, whatever comes.
        let noticed: Timestamp = "2026-11-25T10:01:10Z".parse().unwrap();
        for second in 1..60 {
            let at = (noticed + SignedDuration::from_secs(second)).to_string();
            assert_eq!(log.record(rejection_at("stripe", &at, &mismatch)), None, "{at}");
        }
        // Then counting starts again.
        assert_eq!(log.record(rejection_at("stripe", "2026-11-25T10:02:10Z", &mismatch)), None);
        assert_eq!(log.record(rejection_at("stripe", "2026-11-25T10:02:11Z", &mismatch)), None);
        assert!(log.record(rejection_at("stripe", "2026-11-25T10:02:12Z", &mismatch)).is_some());
        assert_eq!(log.recent(Some("stripe")).len(), 66, "every rejection is kept in the log");
    }

    #[test]
    fn a_log_without_an_alarm_never_gives_a_notice() {
        let log = RejectionLog::default();
        for _ in 0..CAPACITY {
            assert_eq!(
                log.record(rejection_at("stripe", "2026-11-25T10:00:00Z", &VerifyError::SignatureMismatch)),
                None
            );
        }
    }

    #[test]
    fn long_bodies_are_cut_to_an_excerpt() {
        let rejection =
            Rejection::new("s", &VerifyError::SignatureMismatch, None, &http::HeaderMap::new(), &[b'x'; 5000]);
        assert_eq!(rejection.body_excerpt.len(), BODY_EXCERPT_BYTES);
        assert_eq!(rejection.body_bytes, 5000);
    }
}
