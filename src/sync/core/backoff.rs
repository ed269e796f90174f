//! The retry schedule: exponential backoff with full jitter, as a pure value.
//!
//! No clock and no random source inside: the scheduler
//! ([`super::schedule`]) passes a random `u64` in, so tests drive it
//! deterministically.

use std::time::Duration;

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay bound after the first failure.
    pub base: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Consecutive failures so far.
    pub attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
            attempt: 0,
        }
    }
}

impl Backoff {
    /// A schedule from `base` up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The bound of the next delay: `min(max, base · 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Records a failure and returns how long to wait: half the ceiling plus
    /// a random part of the other half ("equal jitter"), so retries of many
    /// clients spread out but never retry immediately.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let span = u64::try_from(half.as_millis()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_millis(random % span)
    }

    /// Records a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_bounds_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<Duration> = (0..6).map(|_| b.next_delay(u64::MAX)).collect();
        for (i, x) in d.iter().enumerate() {
            let ceil = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(1));
            assert!(*x >= ceil / 2 && *x <= ceil, "{i}: {x:?} vs {ceil:?}");
        }
        assert!(d[5] <= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay(0) <= Duration::from_millis(100));
    }
}
