//! Helpers of the sync integration tests (see `tests/sync.rs`).
pub mod backend;
pub mod pg;
pub mod sync_util;
