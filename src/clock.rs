//! Time for the hybrid logical clock, injectable.
//!
//! Every local change carries the timestamp
//! `max(wall-clock ms, 1 + the largest timestamp among the changes it depends on)`
//! ([`hlc_timestamp`]). A write that has seen another write therefore always has
//! a larger timestamp, even on a device whose clock is behind, and
//! last-writer-wins never lets a stale clock undo a newer decision.
//!
//! The wall clock is a [`Clock`] passed to the replica, never read from a global
//! inside the logic, so tests can skew it or make it go backwards.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time in ms since the Unix epoch. May go backwards.
    fn now_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock set by hand: for tests, simulations and property tests.
///
/// Cloning shares the same time, so a test keeps one handle and gives another
/// to the replica.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn new(ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(ms)))
    }

    /// Sets the time (it may go backwards).
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the time by `delta_ms` (negative goes backwards).
    pub fn advance(&self, delta_ms: i64) {
        self.0.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Another clock shifted by a fixed offset: a device whose clock is wrong.
#[derive(Debug, Clone)]
pub struct SkewedClock<C> {
    inner: C,
    offset_ms: i64,
}

impl<C: Clock> SkewedClock<C> {
    /// `inner` shifted by `offset_ms` (negative: the device is behind).
    pub fn new(inner: C, offset_ms: i64) -> Self {
        Self { inner, offset_ms }
    }
}

impl<C: Clock> Clock for SkewedClock<C> {
    fn now_ms(&self) -> i64 {
        self.inner.now_ms().saturating_add(self.offset_ms)
    }
}

/// The hybrid-logical-clock timestamp of a new local change.
///
/// `max_dep_ts` is the largest timestamp among the changes the new change
/// depends on (`None` for the first change of a document).
pub fn hlc_timestamp(wall_ms: i64, max_dep_ts: Option<i64>) -> i64 {
    match max_dep_ts {
        Some(dep) => wall_ms.max(dep.saturating_add(1)),
        None => wall_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_after_dependencies_even_when_clock_is_behind() {
        assert_eq!(hlc_timestamp(100, None), 100);
        assert_eq!(hlc_timestamp(100, Some(50)), 100);
        assert_eq!(hlc_timestamp(100, Some(500)), 501);
    }

    #[test]
    fn manual_and_skewed_clocks() {
        let c = ManualClock::new(1_000);
        let skewed = SkewedClock::new(c.clone(), -3_600_000);
        c.advance(-10);
        assert_eq!(c.now_ms(), 990);
        assert_eq!(skewed.now_ms(), 990 - 3_600_000);
    }
}
