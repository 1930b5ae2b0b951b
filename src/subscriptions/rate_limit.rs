//! A subscription's rate limit: at most `per_second` deliveries a second on average, with up to
//! `burst` at once after a quiet spell (a token bucket). This file is the model and its request
//! field (`rate_limit`); the store keeps each limited subscription's bucket beside it and takes
//! tokens when it claims deliveries, so the limit holds across every worker and node.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::FieldError;

/// The most deliveries a second a limit may allow (higher is no limit worth keeping).
pub const MAX_PER_SECOND: f64 = 10_000.0;
/// The largest burst.
pub const MAX_BURST: u32 = 100_000;

/// Deliveries a second and the burst a subscription allows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// The average rate: tokens added each second (fractions allowed: 0.5 is one every 2 s).
    pub per_second: f64,
    /// The most tokens kept: deliveries that may go at once after a quiet spell.
    pub burst: u32,
}

impl RateLimit {
    /// The burst when a request names none: one second's worth, at least one.
    pub fn default_burst(per_second: f64) -> u32 {
        (per_second.ceil() as u32).max(1)
    }

    /// The tokens of a bucket that held `tokens` `elapsed_secs` ago: refilled at `per_second`,
    /// never above `burst`.
    pub fn refill(&self, tokens: f64, elapsed_secs: f64) -> f64 {
        (tokens + elapsed_secs.max(0.0) * self.per_second).min(f64::from(self.burst))
    }
}

/// The `rate_limit` field of a request: `{"per_second": 5, "burst": 10}` (burst optional), or
/// `null` for none.
pub(super) fn parse(value: &Value) -> Result<Option<RateLimit>, FieldError> {
    let error = |field: &str, message: String| super::request::field_error(field, message);
    let Some(object) = super::request::optional_object(
        value,
        "rate_limit",
        "expected an object such as {\"per_second\": 5, \"burst\": 10}, or null",
        &["per_second", "burst"],
        "unknown field; the fields are per_second and burst",
    )?
    else {
        return Ok(None);
    };
    let per_second = object
        .get("per_second")
        .and_then(Value::as_f64)
        .filter(|rate| *rate > 0.0 && *rate <= MAX_PER_SECOND)
        .ok_or_else(|| {
            error(
                "rate_limit.per_second",
                format!("required: deliveries a second, above 0 and at most {MAX_PER_SECOND}"),
            )
        })?;
    let burst = match object.get("burst") {
        None | Some(Value::Null) => RateLimit::default_burst(per_second),
        Some(value) => value
            .as_u64()
            .filter(|burst| (1..=u64::from(MAX_BURST)).contains(burst))
            .map(|burst| burst as u32)
            .ok_or_else(|| error("rate_limit.burst", format!("expected a whole number from 1 to {MAX_BURST}")))?,
    };
    Ok(Some(RateLimit { per_second, burst }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_limit_takes_a_rate_and_an_optional_burst() {
        assert_eq!(
            parse(&json!({"per_second": 5, "burst": 10})).unwrap(),
            Some(RateLimit { per_second: 5.0, burst: 10 })
        );
        assert_eq!(parse(&json!({"per_second": 0.5})).unwrap(), Some(RateLimit { per_second: 0.5, burst: 1 }));
        assert_eq!(parse(&json!(null)).unwrap(), None);
        assert_eq!(parse(&json!({"per_second": 0})).unwrap_err().field, "rate_limit.per_second");
        assert_eq!(parse(&json!({"per_second": 5, "burst": 0})).unwrap_err().field, "rate_limit.burst");
        assert_eq!(parse(&json!({"per_second": 5, "every": 1})).unwrap_err().field, "rate_limit.every");
        assert_eq!(parse(&json!(5)).unwrap_err().field, "rate_limit");
    }

    #[test]
    fn a_bucket_refills_at_the_rate_up_to_the_burst() {
        let limit = RateLimit { per_second: 5.0, burst: 10 };
        assert_eq!(limit.refill(0.0, 0.5), 2.5);
        assert_eq!(limit.refill(8.0, 10.0), 10.0, "never above the burst");
        assert_eq!(limit.refill(1.0, -3.0), 1.0, "a clock step back adds nothing");
    }
}
