//! Time for the hybrid logical clock, injectable.
//!
//! Every local change carries the timestamp
//! `max(wall-clock ms, 1 + the largest effective timestamp among the changes it
//! depends on)` ([`hlc_timestamp`]). The effective timestamp of any change,
//! whoever wrote it, is [`effective_time`] of its own time (seconds or ms,
//! [`normalize_time`]) and its dependencies'; last-writer-wins compares it
//! (`crate::conflict`).
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

/// Change times below this (and above 0) are unix seconds, the unit
/// Automerge documents for a change's `time` (JavaScript's default); from it
/// on they are milliseconds. 10^11 s is the year 5138; 10^11 ms is March 1973.
pub const SECONDS_BELOW: i64 = 100_000_000_000;

/// The largest effective timestamp (2^53 − 1 ms, the year 287396): the
/// largest integer a JavaScript number holds exactly. Times beyond it, and
/// below its negation, are clamped, so every client computes the same value.
pub const MAX_TIME: i64 = (1 << 53) - 1;

/// A change's own `time` in milliseconds: seconds (`0 < t < 10^11`) are
/// multiplied by 1000, anything else is taken as milliseconds (0: the writer
/// stamped no time; negative: before 1970, a broken clock), then clamped to
/// `±MAX_TIME`.
pub fn normalize_time(time: i64) -> i64 {
    let ms = if time > 0 && time < SECONDS_BELOW {
        time * 1000
    } else {
        time
    };
    ms.clamp(-MAX_TIME, MAX_TIME)
}

/// The effective timestamp of a change whose own time is `time` and whose
/// dependencies have the effective timestamps `deps`:
/// `max(normalize_time(time), 1 + max(deps))`, at most [`MAX_TIME`].
pub fn effective_time(time: i64, deps: impl IntoIterator<Item = i64>) -> i64 {
    deps.into_iter()
        .fold(normalize_time(time), |e, d| e.max(d.saturating_add(1)))
        .min(MAX_TIME)
}

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
/// its own effective timestamp ([`effective_time`]).
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
    fn times_are_normalised_to_milliseconds() {
        assert_eq!(normalize_time(1_790_000_000), T, "seconds");
        assert_eq!(normalize_time(T), T, "milliseconds");
        assert_eq!(normalize_time(1), 1_000);
        assert_eq!(
            normalize_time(SECONDS_BELOW - 1),
            (SECONDS_BELOW - 1) * 1000
        );
        assert_eq!(normalize_time(SECONDS_BELOW), SECONDS_BELOW);
        assert_eq!(normalize_time(0), 0, "no time");
        assert_eq!(normalize_time(-5), -5, "before 1970, as ms");
        assert_eq!(normalize_time(i64::MAX), MAX_TIME);
        assert_eq!(normalize_time(i64::MIN), -MAX_TIME);
    }

    #[test]
    fn effective_time_follows_dependencies() {
        assert_eq!(effective_time(T, []), T);
        assert_eq!(
            effective_time(0, [T]),
            T + 1,
            "no time: after its dependency"
        );
        assert_eq!(
            effective_time(1_790_000_000, [T + 5]),
            T + 6,
            "seconds, but seen a later ms write"
        );
        assert_eq!(effective_time(1_790_000_002, [T]), T + 2_000);
        assert_eq!(effective_time(-9, [-20, 3]), 4);
        assert_eq!(effective_time(0, [MAX_TIME]), MAX_TIME, "saturates");
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
