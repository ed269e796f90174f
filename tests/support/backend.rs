//! The backends the sync tests run against.
//!
//! A test case is written once as `async fn case_xxx(b: &dyn Backend)` in
//! `tests/sync.rs` and instantiated per backend by `backend_tests!`. A backend
//! only has to create workspaces (with users `0..members` as members where it
//! has membership), hand out one [`Remote`] per user, and list what it stores
//! so the tests can prove "stored exactly once".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use supamerge::remote::{LocalHub, Remote};
use supamerge::sync::wire::HashHex;
use supamerge::{DocId, WorkspaceId};

/// What the backend-parameterised tests need from a backend.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A short name for messages.
    fn name(&self) -> &'static str;

    /// Creates a fresh workspace whose members are users `0..members`
    /// (backends without membership ignore `members`).
    async fn new_workspace(&self, members: usize) -> WorkspaceId;

    /// A remote acting as `user` (the same hub for every user on LocalHub,
    /// a client with that user's JWT on Supabase).
    async fn remote_for(&self, user: usize) -> Arc<dyn Remote>;

    /// Every change the backend stores for `ws`, one row per stored copy:
    /// a duplicate row means something was stored twice.
    async fn stored_changes(&self, ws: &WorkspaceId) -> Vec<(DocId, HashHex)>;
}

/// The embedded hub in a temporary directory (real sled).
pub struct LocalHubBackend {
    hub: LocalHub,
    next_ws: AtomicU64,
    _dir: Option<tempfile::TempDir>,
}

impl LocalHubBackend {
    /// A hub in a fresh temporary directory.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the hub");
        let hub = LocalHub::open(dir.path().join("hub")).expect("open hub");
        Self {
            hub,
            next_ws: AtomicU64::new(1),
            _dir: Some(dir),
        }
    }

    /// A backend over an already opened hub (e.g. one reopened after a
    /// killed process).
    #[allow(dead_code)]
    pub fn with_hub(hub: LocalHub) -> Self {
        Self {
            hub,
            next_ws: AtomicU64::new(1),
            _dir: None,
        }
    }

    /// The hub itself (for tests that inspect it directly).
    #[allow(dead_code)]
    pub fn hub(&self) -> &LocalHub {
        &self.hub
    }
}

#[async_trait]
impl Backend for LocalHubBackend {
    fn name(&self) -> &'static str {
        "local_hub"
    }

    async fn new_workspace(&self, _members: usize) -> WorkspaceId {
        let n = self.next_ws.fetch_add(1, Ordering::SeqCst);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&n.to_be_bytes());
        bytes[8..].copy_from_slice(&rand::random::<[u8; 8]>());
        WorkspaceId::from_random(bytes)
    }

    async fn remote_for(&self, _user: usize) -> Arc<dyn Remote> {
        Arc::new(self.hub.clone())
    }

    async fn stored_changes(&self, ws: &WorkspaceId) -> Vec<(DocId, HashHex)> {
        self.hub.stored_hashes(ws).expect("list hub changes")
    }
}
