//! A bounded, in-memory log of the source requests that failed verification, for operators to
//! see why a platform's deliveries are refused. It keeps the reason, the peer, header names (not
//! values: signature headers are credentials) and a short excerpt of the body; never a secret or
//! a signature. The oldest entry goes when the log is full. It lives per process and is not kept
//! across restarts.

use jiff::Timestamp;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

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

/// The log itself.
#[derive(Debug, Default)]
pub struct RejectionLog {
    entries: Mutex<VecDeque<Rejection>>,
}

impl RejectionLog {
    pub fn record(&self, rejection: Rejection) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() == CAPACITY {
            entries.pop_front();
        }
        entries.push_back(rejection);
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

    #[test]
    fn long_bodies_are_cut_to_an_excerpt() {
        let rejection =
            Rejection::new("s", &VerifyError::SignatureMismatch, None, &http::HeaderMap::new(), &[b'x'; 5000]);
        assert_eq!(rejection.body_excerpt.len(), BODY_EXCERPT_BYTES);
        assert_eq!(rejection.body_bytes, 5000);
    }
}
