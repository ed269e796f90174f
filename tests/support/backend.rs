//! The backends the sync tests run against.
//!
//! A test case is written once as `async fn case_xxx(b: &dyn Backend)` in
//! `tests/sync.rs` and instantiated per backend by `backend_tests!`. A backend
//! only has to create workspaces (with users `0..members` as members where it
//! has membership), hand out one [`Remote`] per user, and list what it stores
//! so the tests can prove "stored exactly once".

use automerge::ChangeHash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use supamerge::{DocId, LocalHub, Remote, WorkspaceId};
use uuid::Uuid;

use super::pg::SupabaseFixture;

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
    async fn stored_changes(&self, ws: &WorkspaceId) -> Vec<(DocId, ChangeHash)>;
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

    async fn stored_changes(&self, ws: &WorkspaceId) -> Vec<(DocId, ChangeHash)> {
        self.hub.stored_hashes(ws).expect("list hub changes")
    }
}

/// The Supabase path: the gateway in front of a fresh PostgreSQL database
/// with the stand-in and the real migration, one [`SupabaseRemote`] (a user
/// JWT) per user. User 0 owns every workspace; users `1..members` are
/// writers. What is stored is read back with a superuser connection, past
/// row-level security.
///
/// [`SupabaseRemote`]: supamerge::SupabaseRemote
pub struct SupabaseBackend {
    fixture: SupabaseFixture,
    users: Vec<Uuid>,
}

impl SupabaseBackend {
    /// Users the tests may act as.
    const USERS: usize = 8;

    /// A fresh database with a gateway in front of it.
    pub async fn start() -> Self {
        Self {
            fixture: SupabaseFixture::start().await,
            users: (0..Self::USERS).map(|_| Uuid::new_v4()).collect(),
        }
    }

    fn user(&self, n: usize) -> Uuid {
        *self
            .users
            .get(n)
            .unwrap_or_else(|| panic!("the Supabase backend has {} users", Self::USERS))
    }
}

#[async_trait]
impl Backend for SupabaseBackend {
    fn name(&self) -> &'static str {
        "supabase"
    }

    async fn new_workspace(&self, members: usize) -> WorkspaceId {
        let writers: Vec<Uuid> = (1..members.max(1)).map(|n| self.user(n)).collect();
        self.fixture.workspace(self.user(0), &writers).await
    }

    async fn remote_for(&self, user: usize) -> Arc<dyn Remote> {
        Arc::new(self.fixture.remote_for(self.user(user)))
    }

    async fn stored_changes(&self, ws: &WorkspaceId) -> Vec<(DocId, ChangeHash)> {
        let rows = self
            .fixture
            .db
            .superuser()
            .await
            .query(
                "select doc_id::text, change_hash from public.changes \
                 where workspace_id = $1::text::uuid order by seq",
                &[&ws.to_string()],
            )
            .await
            .expect("list stored changes");
        rows.iter()
            .map(|r| {
                let doc: String = r.get(0);
                let hash: Vec<u8> = r.get(1);
                let hash: [u8; 32] = hash.try_into().expect("32-byte hash");
                (doc.parse().expect("a doc id"), ChangeHash(hash))
            })
            .collect()
    }
}
