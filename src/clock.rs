//! Time for the hybrid logical clock, injectable.
//!
//! Every local change carries the timestamp
//! `max(wall-clock ms, 1 + the largest effective timestamp among the changes it
//! depends on)` ([`hlc_timestamp`]; effective timestamps: [`crate::conflict`]).
//! A write that has seen another write therefore always has a larger
//! timestamp, even on a device whose clock is behind, and last-writer-wins
//! never lets a stale clock undo a newer decision. The stamp is also the
//! change's effective timestamp: supamerge never stamps a time that other
//! clients would read as seconds (see [`hlc_timestamp`]).
//!
//! The wall clock is a [`Clock`] passed to the replica, never read from a global
//! inside the logic, so tests can skew it or make it go backwards.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::conflict::{MAX_TIME, SECONDS_BELOW};

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

/// The hybrid-logical-clock timestamp of a new local change, in ms.
///
/// `max_dep_eff` is the largest effective timestamp among the changes the new
/// change depends on (`None` for the first change of a document). The result
/// is `max(wall_ms, max_dep_eff + 1)`, raised to [`SECONDS_BELOW`] when it
/// would fall in `(0, 10^11)` — a clock before March 1973, which every client
/// would read as seconds — and clamped to `±MAX_TIME`, so that the stamp is
/// its own effective timestamp ([`crate::conflict::effective_time`]).
pub fn hlc_timestamp(wall_ms: i64, max_dep_eff: Option<i64>) -> i64 {
    let t = match max_dep_eff {
        Some(dep) => wall_ms.max(dep.saturating_add(1)),
        None => wall_ms,
    };
    let t = if t > 0 && t < SECONDS_BELOW {
        SECONDS_BELOW
    } else {
        t
    };
    t.clamp(-MAX_TIME, MAX_TIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_790_000_000_000;

    #[test]
    fn hlc_is_after_dependencies_even_when_clock_is_behind() {
        assert_eq!(hlc_timestamp(T, None), T);
        assert_eq!(hlc_timestamp(T, Some(T - 50)), T);
        assert_eq!(hlc_timestamp(T, Some(T + 500)), T + 501);
    }

    #[test]
    fn the_stamp_is_its_own_effective_timestamp() {
        use crate::conflict::effective_time;
        // A clock before 1973 would read as seconds: raised to 10^11 ms.
        assert_eq!(hlc_timestamp(5_000, None), SECONDS_BELOW);
        assert_eq!(hlc_timestamp(5_000, Some(7)), SECONDS_BELOW);
        // No clock at all (0 or negative) stays as it is.
        assert_eq!(hlc_timestamp(0, None), 0);
        assert_eq!(hlc_timestamp(-5, None), -5);
        assert_eq!(hlc_timestamp(i64::MAX, None), MAX_TIME);
        assert_eq!(hlc_timestamp(0, Some(MAX_TIME)), MAX_TIME);
        for (wall, dep) in [
            (T, None),
            (5_000, None),
            (0, Some(-9)),
            (-5, None),
            (T, Some(T + 9)),
            (i64::MIN, None),
        ] {
            let t = hlc_timestamp(wall, dep);
            assert_eq!(effective_time(t, dep), t, "wall {wall}, dep {dep:?}");
        }
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
