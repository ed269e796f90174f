//! Percentiles of latency samples and the process's peak RSS.

use std::time::Duration;

/// Latency samples in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    us: Vec<f64>,
}

impl Samples {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample.
    pub fn push(&mut self, d: Duration) {
        self.us.push(d.as_secs_f64() * 1e6);
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: &Samples) {
        self.us.extend_from_slice(&other.us);
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.us.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.us.is_empty()
    }

    /// The `p`-th percentile (0..=100) in microseconds (nearest rank; 0 when empty).
    pub fn percentile(&self, p: f64) -> f64 {
        if self.us.is_empty() {
            return 0.0;
        }
        let mut v = self.us.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    /// The mean in microseconds (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.us.is_empty() {
            0.0
        } else {
            self.us.iter().sum::<f64>() / self.us.len() as f64
        }
    }
}

/// The peak resident set size of this process in MB (`VmHWM` of
/// `/proc/self/status`; `None` where that file does not exist).
pub fn peak_rss_mb() -> Option<f64> {
    status_kb("VmHWM:").map(|kb| kb as f64 / 1024.0)
}

/// Resets this process's peak resident set size (`VmHWM`) to its current
/// RSS (Linux: `5` written to `/proc/self/clear_refs`), so that a later
/// [`peak_rss_mb`] is the peak of what ran in between. Returns whether it
/// was reset (`false` where the file does not exist or refuses the write).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

/// The current resident set size of this process in MB (`VmRSS`).
pub fn rss_mb() -> Option<f64> {
    status_kb("VmRSS:").map(|kb| kb as f64 / 1024.0)
}

fn status_kb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Seconds as a rate of `n` items per second (0 for a zero duration).
pub fn rate(n: usize, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut s = Samples::new();
        for i in 1..=100u64 {
            s.push(Duration::from_micros(i));
        }
        assert!((s.percentile(50.0) - 50.0).abs() < 1e-6);
        assert!((s.percentile(99.0) - 99.0).abs() < 1e-6);
        assert!((s.mean() - 50.5).abs() < 1e-6);
    }
}
