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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use supamerge::{DocId, Remote, WorkspaceId};
use uuid::Uuid;

/// The changes table of the fixture's database.
struct Changes<'a>(&'a pg::SupabaseFixture);

#[async_trait]
impl Stored for Changes<'_> {
    /// The changes in the log and those pruned (their hashes kept in
    /// `supamerge_private.pruned_changes`).
    async fn stored(&self, ws: &WorkspaceId) -> Vec<(DocId, ChangeHash)> {
        let db = self.0.db.superuser().await;
        db.query(
            "select doc_id::text, change_hash from public.changes \
             where workspace_id::text = $1 \
             union all \
             select p.doc_id::text, supamerge_private.hash_at(p.hashes, i) \
               from supamerge_private.pruned_changes p, \
                    generate_series(0, octet_length(p.hashes) / 32 - 1) i \
              where p.workspace_id::text = $1",
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

/// `supamerge_prune` as the operator runs it (the migration's owner, as
/// pg_cron does), horizon 0, for one workspace.
/// Holds a connection as the owner.
struct Prune(tokio_postgres::Client);

#[async_trait]
impl Pruner for Prune {
    async fn prune(&self, ws: &WorkspaceId) -> usize {
        let row = self
            .0
            .query_one(
                "select (public.supamerge_prune('0', $1::text::uuid) ->> 'pruned')::bigint",
                &[&ws.to_string()],
            )
            .await
            .expect("supamerge_prune");
        usize::try_from(row.get::<_, i64>(0)).expect("a count")
    }
}

async fn run(fx: &pg::SupabaseFixture, s: &Scenario) {
    let users: Vec<Uuid> = s.offsets.iter().map(|_| Uuid::new_v4()).collect();
    let ws = fx.workspace(users[0], &users[1..]).await;
    let remotes: Vec<Arc<dyn Remote>> = users
        .iter()
        .map(|u| Arc::new(fx.remote_for(*u)) as Arc<dyn Remote>)
        .collect();
    // Action::Prune: supamerge_prune at random moments (issue 17).
    let pruner: Arc<dyn Pruner> = Arc::new(Prune(fx.db.owner().await));
    let mut world = World::new(ws, remotes, &s.offsets).with_pruner(pruner);
    // Snapshots sooner than in the hub variant: with fewer, shorter cases
    // here, pruning (which takes only what snapshots hold) needs them.
    world.cfg.snapshot_threshold = 2;
    world.run(&s.actions).await;
    world.quiesce().await;
    world.assert_converged(&Changes(fx)).await;
    PRUNED.fetch_add(world.pruned, Ordering::Relaxed);
    REBOOTSTRAPS.fetch_add(world.sim.rebootstraps, Ordering::Relaxed);
}

/// Any action, with `Prune` and `PullOnly` more often than in the hub
/// variant (fewer cases here).
fn prune_often(n: usize) -> proptest::strategy::BoxedStrategy<Action> {
    use proptest::prelude::*;
    prop_oneof![
        8 => any_action(n),
        1 => Just(Action::Prune),
        1 => (0..n).prop_map(|r| Action::PullOnly { r }),
    ]
    .boxed()
}

/// Over all cases: changes pruned, and re-bootstraps of replicas whose
/// cursor was behind the horizon.
static PRUNED: AtomicUsize = AtomicUsize::new(0);
static REBOOTSTRAPS: AtomicU64 = AtomicU64::new(0);

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
        scenario(2..=4, 1..40, prune_often),
        |s| rt.block_on(run(&fx, s)),
        minimize_scenario,
    );
    // The pruning step happened and sent replicas back to the snapshots.
    if cases(32) >= 32 {
        let (pruned, rebootstraps) = (
            PRUNED.load(Ordering::Relaxed),
            REBOOTSTRAPS.load(Ordering::Relaxed),
        );
        println!("pruned {pruned} changes; {rebootstraps} re-bootstraps");
        assert!(pruned > 0, "no case pruned anything");
        assert!(rebootstraps > 0, "no case re-bootstrapped a replica");
    }
}
