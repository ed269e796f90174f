//! The convergence property (see `convergence.rs`) against the Supabase path:
//! the local PostgREST-compatible gateway over a real PostgreSQL with the
//! real migration, one `SupabaseRemote` per user (a JWT each), one fresh
//! workspace per case. "Stored exactly once" reads `public.changes`.
//!
//! Needs `SUPAMERGE_TEST_DATABASE_URL` (`scripts/test.sh` starts PostgreSQL
//! and sets it; by hand: `eval "$(scripts/start-postgres.sh)"`). Without a
//! reachable PostgreSQL this test FAILS; it never skips.

mod common;
#[path = "../tests/support/pg.rs"]
mod pg;

use automerge::ChangeHash;
use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use supamerge::{DocId, Remote, WorkspaceId};
use uuid::Uuid;

/// The changes table of the fixture's database.
struct Changes<'a>(&'a pg::SupabaseFixture);

#[async_trait]
impl Stored for Changes<'_> {
    async fn stored(&self, ws: &WorkspaceId) -> Vec<(DocId, ChangeHash)> {
        let db = self.0.db.superuser().await;
        db.query(
            "select doc_id::text, change_hash from public.changes \
             where workspace_id::text = $1 order by seq",
            &[&ws.to_string()],
        )
        .await
        .expect("read public.changes")
        .iter()
        .map(|row| {
            let doc: String = row.get(0);
            let hash: Vec<u8> = row.get(1);
            (
                DocId::from_uuid(Uuid::parse_str(&doc).expect("uuid")),
                ChangeHash(hash.try_into().expect("32-byte hash")),
            )
        })
        .collect()
    }
}

async fn run(fx: &pg::SupabaseFixture, s: &Scenario) {
    let users: Vec<Uuid> = s.offsets.iter().map(|_| Uuid::new_v4()).collect();
    let ws = fx.workspace(users[0], &users[1..]).await;
    let remotes: Vec<Arc<dyn Remote>> = users
        .iter()
        .map(|u| Arc::new(fx.remote_for(*u)) as Arc<dyn Remote>)
        .collect();
    let mut world = World::new(ws, remotes, &s.offsets);
    world.run(&s.actions).await;
    world.quiesce().await;
    world.assert_converged(&Changes(fx)).await;
}

#[test]
fn replicas_converge_on_supabase() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Fails (never skips) without PostgreSQL: see pg::admin_url.
    let fx = rt.block_on(pg::SupabaseFixture::start());
    check(
        config(32, "proptest-regressions/convergence_supabase.txt"),
        scenario(2..=4, 1..40, any_action),
        |s| rt.block_on(run(&fx, s)),
        minimize_scenario,
    );
}
