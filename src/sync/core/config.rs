//! The knobs of a sync pass: batch sizes and thresholds.

use crate::protocol::wire::{MAX_PUSH_BYTES, MAX_PUSH_COUNT};

/// Batch sizes and thresholds of a sync pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// At most this many changes per push request.
    pub push_max_count: usize,
    /// At most this many change bytes per push request.
    pub push_max_bytes: usize,
    /// Changes per pulled page.
    pub pull_limit: u32,
    /// Upload a snapshot of a document once this many changes were applied
    /// to it since the last upload (0 disables uploads).
    pub snapshot_threshold: u64,
    /// Bootstrap a fresh replica from snapshots plus the tail of changes.
    pub bootstrap_from_snapshots: bool,
    /// Snapshots per page while bootstrapping (each page is applied and
    /// persisted before the next is fetched).
    pub snapshot_page_limit: u32,
    /// Pulled pages are applied together, in one `apply_remote` call and one
    /// store transaction with the cursor, until they hold this many changes
    /// (Automerge applies one large batch much faster than many small ones;
    /// 1 applies page by page).
    pub apply_batch_changes: usize,
    /// ... or this many bytes of changes, whichever comes first. While one
    /// batch is applied the next is fetched, so about three batches can be
    /// in memory at once.
    pub apply_batch_bytes: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            push_max_count: 500,
            push_max_bytes: 512 * 1024,
            pull_limit: 1000,
            snapshot_threshold: 256,
            bootstrap_from_snapshots: true,
            snapshot_page_limit: 100,
            apply_batch_changes: 25_000,
            apply_batch_bytes: 16 * 1024 * 1024,
        }
    }
}

impl SyncConfig {
    /// The push bounds, clamped to what every remote accepts.
    pub(crate) fn push_bounds(&self) -> (usize, usize) {
        (
            self.push_max_count.clamp(1, MAX_PUSH_COUNT),
            self.push_max_bytes.clamp(1, MAX_PUSH_BYTES),
        )
    }
}
