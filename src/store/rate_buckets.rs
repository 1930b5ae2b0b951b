//! The token bucket of a rate-limited subscription as both backends keep it: whole numbers of
//! milli-tokens (so that fractions of a token add up exactly over many claims), refilled at the
//! limit's rate up to its burst when a claim reads it, and taken from by that claim.

use crate::subscriptions::RateLimit;

/// Milli-tokens in one token.
pub(super) const MILLI: i64 = 1000;

/// A subscription's bucket, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bucket {
    pub per_second_milli: i64,
    pub burst: i64,
    pub tokens_milli: i64,
    pub refilled_at_us: i64,
}

impl Bucket {
    /// A new bucket for `limit`, full.
    pub fn full(limit: &RateLimit, now_us: i64) -> Bucket {
        let burst = i64::from(limit.burst);
        Bucket {
            per_second_milli: ((limit.per_second * MILLI as f64).round() as i64).max(1),
            burst,
            tokens_milli: burst * MILLI,
            refilled_at_us: now_us,
        }
    }

    /// The milli-tokens held at `now_us`: refilled since the last claim, at most the burst.
    pub fn available_at(&self, now_us: i64) -> i64 {
        let elapsed_us = i128::from((now_us - self.refilled_at_us).max(0));
        let added = elapsed_us * i128::from(self.per_second_milli) / 1_000_000;
        (i128::from(self.tokens_milli) + added).min(i128::from(self.burst * MILLI)) as i64
    }

    /// The whole tokens held at `now_us`: how many deliveries a claim may take.
    pub fn whole_tokens_at(&self, now_us: i64) -> i64 {
        self.available_at(now_us) / MILLI
    }

    /// The bucket after a claim at `now_us` took `taken` tokens.
    pub fn after_taking(&self, taken: i64, now_us: i64) -> Bucket {
        Bucket { tokens_milli: self.available_at(now_us) - taken * MILLI, refilled_at_us: now_us, ..*self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_whole_tokens_and_keeps_the_fractions() {
        let limit = RateLimit { per_second: 5.0, burst: 5 };
        let bucket = Bucket::full(&limit, 0);
        assert_eq!(bucket.whole_tokens_at(0), 5, "full at first: the burst");
        let empty = bucket.after_taking(5, 0);
        assert_eq!(empty.whole_tokens_at(100_000), 0, "0.5 tokens after 100 ms");
        let later = empty.after_taking(0, 100_000);
        assert_eq!(later.whole_tokens_at(200_000), 1, "the half kept adds up with the next");
        assert_eq!(empty.whole_tokens_at(60_000_000), 5, "never more than the burst");
    }
}
