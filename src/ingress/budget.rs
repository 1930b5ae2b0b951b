//! The process's budget for bodies in flight: one semaphore counted in bytes, shared by every
//! transport (HTTP bodies and SMTP messages).
//!
//! A body's buffer is reserved before it grows: the declared length (capped by the hook's
//! limit) up front, or, for a body of unknown length, what it has grown to, doubling. A
//! reservation that does not fit is refused at once, never waited for: the caller answers
//! `503` with `Retry-After` (SMTP: `452`), so a burst of large or slow bodies costs at most the
//! budget, whatever the number of connections. The bytes go back when the [`Reservation`] is
//! dropped, which is when the request's work (the commit included) is over.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of bodies in flight, at most `total` at once.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    /// The semaphore's permits when nothing is reserved (`total`, capped by the semaphore).
    permits: usize,
    total: u64,
}

/// The budget has no room for a body (or for its next growth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gateway holds its limit of {total} bytes of bodies in flight")]
pub struct OverBudget {
    pub total: u64,
}

impl BodyBudget {
    pub fn new(total: u64) -> BodyBudget {
        let permits = usize::try_from(total).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        BodyBudget { bytes: Arc::new(Semaphore::new(permits)), permits, total }
    }

    /// An empty reservation, to grow as the body arrives.
    pub fn reservation(&self) -> Reservation {
        Reservation { budget: self.clone(), held: None }
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> u64 {
        self.bytes.available_permits() as u64
    }

    /// Bytes reserved now, by every body and message in flight (the gauge
    /// `hookgate_body_bytes_in_flight`).
    pub fn in_use(&self) -> u64 {
        self.permits.saturating_sub(self.bytes.available_permits()) as u64
    }
}

/// Bytes reserved for one body; returned to the budget when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: BodyBudget,
    held: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Bytes this reservation holds.
    pub fn bytes(&self) -> u64 {
        self.held.as_ref().map_or(0, |permit| permit.num_permits() as u64)
    }

    /// Holds at least `bytes` in all, taking the difference from the budget at once, or fails
    /// and holds what it held.
    pub fn grow_to(&mut self, bytes: u64) -> Result<(), OverBudget> {
        let more = bytes.saturating_sub(self.bytes());
        if more == 0 {
            return Ok(());
        }
        let over = OverBudget { total: self.budget.total };
        let more = u32::try_from(more).map_err(|_| over)?;
        let permit = self.budget.bytes.clone().try_acquire_many_owned(more).map_err(|_| over)?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_return_their_bytes_when_dropped() {
        let budget = BodyBudget::new(1000);
        let mut first = budget.reservation();
        first.grow_to(600).unwrap();
        first.grow_to(400).unwrap();
        assert_eq!(first.bytes(), 600, "growing to less holds what it held");
        let mut second = budget.reservation();
        assert_eq!(second.grow_to(500), Err(OverBudget { total: 1000 }));
        assert_eq!(second.bytes(), 0, "a refused growth takes nothing");
        second.grow_to(400).unwrap();
        assert_eq!((budget.available(), budget.in_use()), (0, 1000));
        drop(first);
        assert_eq!((budget.available(), budget.in_use()), (600, 400));
        second.grow_to(1000).unwrap();
        assert_eq!(budget.available(), 0);
        drop(second);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_growth_past_what_one_acquisition_can_take_is_over_budget() {
        let budget = BodyBudget::new(u64::MAX);
        let mut reservation = budget.reservation();
        assert!(reservation.grow_to(u64::from(u32::MAX) + 1).is_err());
    }
}
