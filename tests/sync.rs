//! Integration tests of sync: DESIGN.md §2 invariants 1–5 under every fault,
//! a process killed in the middle of a sync, the tokio engine under paused
//! time, bootstrap from snapshots, several workspaces per replica.
//!
//! # Backends
//!
//! The invariant cases are written once as `async fn case_xxx(b: &dyn Backend)`
//! and instantiated per backend by `backend_tests!(module, constructor)`:
//! the constructor is an expression evaluating to a future of something that
//! implements [`support::backend::Backend`]. Adding a backend (e.g. the
//! Supabase gateway over PostgreSQL) is: implement `Backend` for it in
//! `tests/support/`, then add one line to this list:
//!
//! ```ignore
//! backend_tests!(local_hub, LocalHubBackend::new());
//! backend_tests!(supabase, SupabaseBackend::start());
//! ```
//!
//! Every case ends with [`Cluster::assert_converged`]: identical heads, JSON
//! and conflict lists on every replica for every document, every outbox
//! empty, every committed change stored exactly once by the backend, and no
//! dead letters but the deliberate ones.
//!
//! Tests that need the embedded hub's files (the killed process) or paused
//! tokio time (the engine) run against `LocalHub` only.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use supamerge::test_util::{Fault, Op};
use supamerge::{
    Backoff, DocId, LocalHub, Origin, OutboxEntry, Remote, Replica, SyncConfig, SyncEngine,
    SyncEngineBuilder, SyncError, SyncErrorKind, SyncEvent, SyncHandle, SyncPort, SyncReport,
    SyncState, WorkspaceId,
};
use tokio::sync::broadcast;

use support::backend::{Backend, LocalHubBackend, SupabaseBackend};
use support::sync_util::*;

macro_rules! backend_tests {
    ($module:ident, $make:expr) => {
        backend_tests!(@cases $module, $make, [
            case_clean_sync,
            case_dropped_push_request,
            case_lost_push_response,
            case_duplicated_push_and_pull,
            case_delayed_pulls_reorder_delivery,
            case_server_errors_then_success,
            case_too_large_splits_batch,
            case_rejected_change_is_dead_lettered_and_does_not_block,
            case_offline_then_online,
            case_bootstrap_from_snapshots,
            case_bootstrap_interrupted_resumes,
            case_poisoned_snapshots_fall_back_to_the_log,
            case_multiple_workspaces_have_separate_cursors,
            case_pages_apply_in_batches_with_their_cursor,
        ]);
    };
    (@cases $module:ident, $make:expr, [$($case:ident),* $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = $make.await;
                    super::$case(&backend).await;
                }
            )*
        }
    };
}

backend_tests!(local_hub, LocalHubBackend::new());
backend_tests!(supabase, SupabaseBackend::start());

// ----- invariants under faults ------------------------------------------------

async fn case_clean_sync(b: &dyn Backend) {
    let c = Cluster::new(b, 3).await;
    let d = seed(&c).await;
    concurrent_edits(&c, &d, 0);
    let t = c.sync_until_quiescent().await;
    assert_eq!(t.failures, 0);
    c.assert_converged(b, &[]).await;
    // The staged conflict is there, and the delete won over the edit.
    let conflicts = c.nodes[0].replica.conflicts(&d.task).expect("conflicts");
    assert!(
        conflicts.iter().any(|x| x.path == "/title"),
        "{conflicts:?}"
    );
    assert!(
        view(&c.nodes[0].replica, &d.doomed).json.is_none(),
        "doomed is deleted"
    );
}

/// A push request lost on the way: the remote never saw it; the next pass
/// pushes the same entries and the server stores them once.
async fn case_dropped_push_request(b: &dyn Backend) {
    let c = Cluster::new(b, 3).await;
    let d = seed(&c).await;
    c.nodes[1].remote.inject(Op::Push, Fault::DropRequest);
    concurrent_edits(&c, &d, 0);
    let before = c.nodes[1].replica.pending();
    assert!(before > 0);
    assert!(
        c.sync(1).await.is_err(),
        "the dropped request fails the pass"
    );
    assert_eq!(
        c.nodes[1].replica.pending(),
        before,
        "nothing acked on failure"
    );
    let t = c.sync_until_quiescent().await;
    assert_eq!(c.nodes[1].remote.remaining(Op::Push), 0);
    assert_eq!(t.already_present, 0, "the dropped request stored nothing");
    c.assert_converged(b, &[]).await;
}

/// The remote committed, then the response was lost: the retry gets
/// `already_present` for every entry of that batch and stores nothing twice.
async fn case_lost_push_response(b: &dyn Backend) {
    let c = Cluster::new(b, 3).await;
    let d = seed(&c).await;
    c.nodes[2].remote.inject(Op::Push, Fault::DropResponse);
    concurrent_edits(&c, &d, 0);
    let before = c.nodes[2].replica.pending();
    assert!(c.sync(2).await.is_err());
    assert_eq!(
        c.nodes[2].replica.pending(),
        before,
        "nothing acked without a response"
    );
    let retry = c.sync(2).await.expect("retry succeeds");
    let first_batch = before.min(c.cfg.push_max_count);
    assert_eq!(retry.already_present, first_batch, "{retry:?}");
    assert_eq!(retry.pushed, before - first_batch, "{retry:?}");
    c.sync_until_quiescent().await;
    c.assert_converged(b, &[]).await;
}

/// Every push and pull is delivered twice.
async fn case_duplicated_push_and_pull(b: &dyn Backend) {
    let c = Cluster::new(b, 3).await;
    let d = seed(&c).await;
    for n in &c.nodes {
        for _ in 0..20 {
            n.remote.inject(Op::Push, Fault::Duplicate);
            n.remote.inject(Op::Pull, Fault::Duplicate);
        }
    }
    concurrent_edits(&c, &d, 0);
    concurrent_edits(&c, &d, 1);
    let t = c.sync_until_quiescent().await;
    assert_eq!(t.failures, 0);
    // The second delivery's answer is what the client sees: every change
    // was stored by the first delivery and is "already present" in the second.
    assert_eq!(t.pushed, 0, "{t:?}");
    assert!(t.already_present > 0, "{t:?}");
    c.assert_converged(b, &[]).await;
}

/// Pulls are delayed by different amounts while every node syncs at once,
/// so changes reach the replicas in different orders and interleavings.
async fn case_delayed_pulls_reorder_delivery(b: &dyn Backend) {
    let c = Cluster::new(b, 3).await;
    let d = seed(&c).await;
    for round in 0..3 {
        concurrent_edits(&c, &d, round);
        for (i, n) in c.nodes.iter().enumerate() {
            for k in 0..3u64 {
                let ms = ((i as u64 * 7 + k * 13 + round as u64 * 5) % 30) + 1;
                n.remote
                    .inject(Op::Pull, Fault::Delay(Duration::from_millis(ms)));
                n.remote
                    .inject(Op::Push, Fault::Delay(Duration::from_millis(31 - ms)));
            }
        }
        let mut t = Totals::default();
        c.concurrent_round(&mut t).await;
        c.concurrent_round(&mut t).await;
        assert_eq!(t.failures, 0);
    }
    c.sync_until_quiescent().await;
    c.assert_converged(b, &[]).await;
}

/// Server errors N times, then success.
async fn case_server_errors_then_success(b: &dyn Backend) {
    let c = Cluster::new(b, 3).await;
    let d = seed(&c).await;
    c.nodes[0].remote.fail_next(Op::Push, 3);
    c.nodes[1].remote.fail_next(Op::Pull, 2);
    concurrent_edits(&c, &d, 0);
    let t = c.sync_until_quiescent().await;
    assert_eq!(t.failures, 5, "{t:?}");
    assert_eq!(c.nodes[0].remote.remaining(Op::Push), 0);
    assert_eq!(c.nodes[1].remote.remaining(Op::Pull), 0);
    c.assert_converged(b, &[]).await;
}

/// "Too large" splits a batch until it fits; nothing is dead-lettered.
async fn case_too_large_splits_batch(b: &dyn Backend) {
    let mut c = Cluster::new(b, 2).await;
    c.cfg.push_max_count = 16;
    let d = seed(&c).await;
    concurrent_edits(&c, &d, 0);
    concurrent_edits(&c, &d, 1);
    let pending = c.nodes[1].replica.pending();
    assert!(pending >= 4, "{pending}");
    // The full batch and its left half are refused.
    c.nodes[1].remote.inject(Op::Push, Fault::TooLarge);
    c.nodes[1].remote.inject(Op::Push, Fault::TooLarge);
    let r = c.sync(1).await.expect("the split batches go through");
    assert_eq!(r.pushed, pending, "{r:?}");
    assert_eq!(r.dead_lettered, 0);
    assert_eq!(
        r.push_batches, 5,
        "full, left, left-left, left-right, right: {r:?}"
    );
    c.sync_until_quiescent().await;
    c.assert_converged(b, &[]).await;
}

/// Corrupt outbox entries (not a change; a real change under a wrong hash)
/// are rejected by the server, go to the dead letters with the reason, and
/// the entries behind them are pushed.
async fn case_rejected_change_is_dead_lettered_and_does_not_block(b: &dyn Backend) {
    let c = Cluster::new(b, 3).await;
    let d = seed(&c).await;
    let r1 = &c.nodes[1].replica;
    let real = r1.documents(&c.ws).expect("documents")[0];
    let some_change = r1
        .with_doc(&real, |doc| doc.get_changes(&[])[0].raw_bytes().to_vec())
        .expect("doc");
    let bad = [
        OutboxEntry {
            workspace: c.ws,
            doc_id: d.note,
            collection: notes(),
            hash: automerge::ChangeHash([0x5a; 32]),
            bytes: b"definitely not an automerge change".to_vec(),
            enqueued_ms: 0,
        },
        OutboxEntry {
            workspace: c.ws,
            doc_id: d.note,
            collection: notes(),
            hash: automerge::ChangeHash([0x17; 32]),
            bytes: some_change,
            enqueued_ms: 0,
        },
    ];
    // First in the outbox, ahead of the real edits.
    supamerge::test_util::push_raw_outbox(r1, &bad).expect("craft corrupt entries");
    concurrent_edits(&c, &d, 0);
    let r = c.sync(1).await.expect("the pass succeeds");
    assert_eq!(r.dead_lettered, 2, "{r:?}");
    assert!(
        r.pushed > 0,
        "entries behind the bad ones went through: {r:?}"
    );
    assert_eq!(c.nodes[1].replica.pending(), 0);
    let dead = c.nodes[1].replica.dead_letters().expect("dead letters");
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|x| !x.reason.is_empty()), "{dead:?}");
    assert!(dead.iter().any(|x| x.entry.hash.0 == [0x5a; 32]));
    assert!(
        dead.iter().any(|x| x.reason.contains("hash")),
        "the wrong-hash entry says why: {dead:?}"
    );
    c.sync_until_quiescent().await;
    c.assert_converged(b, &[0, 2, 0]).await;
    let stored = b.stored_changes(&c.ws).await;
    assert!(!stored
        .iter()
        .any(|(_, h)| h.0 == [0x5a; 32] || h.0 == [0x17; 32]));
}

/// A node edits while offline for several rounds, then comes back.
async fn case_offline_then_online(b: &dyn Backend) {
    let c = Cluster::new(b, 3).await;
    let d = seed(&c).await;
    c.nodes[2].remote.set_offline(true);
    let mut t = Totals::default();
    for round in 0..3 {
        concurrent_edits(&c, &d, round);
        c.round(&mut t).await;
    }
    assert_eq!(t.failures, 3, "node 2 failed every round: {t:?}");
    assert!(
        c.nodes[2].replica.pending() > 0,
        "offline edits wait in the outbox"
    );
    c.nodes[2].remote.set_offline(false);
    c.sync_until_quiescent().await;
    c.assert_converged(b, &[]).await;
}

// ----- bootstrap from snapshots ------------------------------------------------

fn snapshot_cfg() -> SyncConfig {
    SyncConfig {
        push_max_count: 50,
        pull_limit: 20,
        // Page by page: the interruption cases stop between two pages.
        apply_batch_changes: 1,
        snapshot_threshold: 10,
        ..SyncConfig::default()
    }
}

/// A makes many changes and uploads snapshots; a fresh B bootstraps from the
/// snapshots plus the tail, pulls fewer changes than exist, and converges.
async fn case_bootstrap_from_snapshots(b: &dyn Backend) {
    let ws = b.new_workspace(2).await;
    let a = Node::new(b.remote_for(0).await);
    let cfg = snapshot_cfg();
    let mut ids = Vec::new();
    for k in 0..3 {
        ids.push(
            a.replica
                .create_json(ws, &notes(), &json!({"k": k, "n": 0}))
                .expect("create"),
        );
    }
    for n in 0..30 {
        for id in &ids {
            a.replica.patch_json(id, &json!({"n": n})).expect("edit");
        }
    }
    let ra = pass(&a.replica, a.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("A syncs");
    assert_eq!(ra.snapshots_uploaded, 3, "{ra:?}");
    // A tail after the snapshots.
    a.replica
        .patch_json(&ids[0], &json!({"tail": true}))
        .expect("edit");
    pass(&a.replica, a.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("A syncs");
    let total = b.stored_changes(&ws).await.len();

    let bnode = Node::new(b.remote_for(1).await);
    let rb = pass(&bnode.replica, bnode.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("B bootstraps");
    assert!(rb.snapshots_loaded > 0, "{rb:?}");
    assert!(
        rb.pulled < total,
        "B pulled {} of {total} changes",
        rb.pulled
    );
    assert_eq!(bnode.replica.get_json(&ids[0]).expect("doc")["tail"], true);
    assert_converged(b, &ws, &[&a.replica, &bnode.replica], &[]).await;
    // And B keeps syncing normally afterwards.
    bnode
        .replica
        .patch_json(&ids[1], &json!({"from_b": 1}))
        .expect("edit");
    pass(&bnode.replica, bnode.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("B syncs");
    pass(&a.replica, a.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("A syncs");
    assert_converged(b, &ws, &[&a.replica, &bnode.replica], &[]).await;
}

/// A fresh replica fails in the middle of its bootstrap (second pulled page,
/// then the snapshot fetch), resumes, and converges; no change is skipped.
async fn case_bootstrap_interrupted_resumes(b: &dyn Backend) {
    let ws = b.new_workspace(2).await;
    let a = Node::new(b.remote_for(0).await);
    let cfg = SyncConfig {
        pull_limit: 3,
        ..snapshot_cfg()
    };
    let mut ids = Vec::new();
    for k in 0..4 {
        ids.push(
            a.replica
                .create_json(ws, &notes(), &json!({"k": k, "n": 0}))
                .expect("create"),
        );
    }
    for n in 0..12 {
        for id in &ids[..2] {
            a.replica.patch_json(id, &json!({"n": n})).expect("edit");
        }
    }
    pass(&a.replica, a.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("A syncs");
    // Tails on every document, some only partly covered by snapshots.
    for (i, id) in ids.iter().enumerate() {
        for n in 0..(i + 2) {
            a.replica.patch_json(id, &json!({"tail": n})).expect("edit");
        }
    }
    pass(&a.replica, a.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("A syncs");

    let bnode = Node::new(b.remote_for(1).await);
    bnode.remote.inject(Op::Pull, Fault::Delay(Duration::ZERO));
    bnode.remote.inject(Op::Pull, Fault::ServerError);
    assert!(pass(&bnode.replica, bnode.remote.as_ref(), &cfg, &[ws])
        .await
        .is_err());
    let mid = bnode
        .replica
        .cursor(&ws)
        .expect("cursor")
        .expect("first page kept");
    assert!(!mid.bootstrapped && !mid.cursor.is_empty(), "{mid:?}");
    bnode.remote.fail_next(Op::GetSnapshots, 1);
    assert!(pass(&bnode.replica, bnode.remote.as_ref(), &cfg, &[ws])
        .await
        .is_err());
    // Meanwhile A writes more and uploads newer snapshots.
    for id in &ids {
        for n in 0..11 {
            a.replica.patch_json(id, &json!({"late": n})).expect("edit");
        }
    }
    pass(&a.replica, a.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("A syncs");
    let rb = pass(&bnode.replica, bnode.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("B resumes");
    assert!(rb.snapshots_loaded > 0, "{rb:?}");
    let rec = bnode.replica.cursor(&ws).expect("cursor").expect("cursor");
    assert!(rec.bootstrapped);
    assert_converged(b, &ws, &[&a.replica, &bnode.replica], &[]).await;
}

/// Issue 11, item 4: a writer uploads snapshots that do not replace what
/// they claim — a 16-byte fake, a valid save of another document, a valid
/// save missing a change, a save with an extra change that is not in the log
/// — next to one honest snapshot. A fresh replica bootstrapping from
/// snapshots trusts only the honest one, pulls the other documents' changes
/// from the log instead, and converges with the writer of the real changes.
async fn case_poisoned_snapshots_fall_back_to_the_log(b: &dyn Backend) {
    use supamerge::{Cursor, SnapshotUpload, WIRE_VERSION};
    let ws = b.new_workspace(3).await;
    let a = Node::new(b.remote_for(0).await);
    let cfg = SyncConfig {
        snapshot_threshold: 0,
        ..snapshot_cfg()
    };
    let ids: Vec<DocId> = (0..5)
        .map(|k| {
            let id = a
                .replica
                .create_json(ws, &notes(), &json!({"k": k, "n": 0}))
                .expect("create");
            for n in 1..6 {
                a.replica.patch_json(&id, &json!({"n": n})).expect("edit");
            }
            id
        })
        .collect();
    pass(&a.replica, a.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("A syncs");
    let covers = a
        .replica
        .cursor(&ws)
        .expect("cursor")
        .expect("cursor")
        .cursor;

    let doc = |id: &DocId| {
        automerge::Automerge::load(&a.replica.save(id).expect("save").0).expect("load")
    };
    let fake = {
        let mut f = vec![0x85, 0x6f, 0x4a, 0x83];
        f.extend_from_slice(&[0x42; 12]);
        f
    };
    let other_document = doc(&ids[4]).save();
    let missing_a_change = {
        let d = doc(&ids[2]);
        let last = d.get_changes(&[]).last().expect("changes").clone();
        d.fork_at(last.deps()).expect("fork").save()
    };
    let extra_change = {
        use automerge::transaction::Transactable;
        let mut d = doc(&ids[3]);
        let mut tx = d.transaction();
        tx.put(automerge::ROOT, "poison", true).expect("put");
        tx.commit();
        d.save()
    };
    let honest = doc(&ids[4]).save();
    let poisoner = b.remote_for(1).await;
    for (id, bytes) in [
        (ids[0], fake),
        (ids[1], other_document),
        (ids[2], missing_a_change),
        (ids[3], extra_change),
        (ids[4], honest),
    ] {
        poisoner
            .put_snapshot(SnapshotUpload {
                v: WIRE_VERSION,
                workspace: ws,
                doc_id: id,
                collection: notes(),
                heads: vec![],
                covers: Cursor(covers.clone()),
                bytes,
            })
            .await
            .expect("the remote takes the upload (it cannot parse Automerge)");
    }

    let fresh = Node::new(b.remote_for(2).await);
    let r = pass(&fresh.replica, fresh.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("the fresh replica bootstraps");
    assert_eq!((r.snapshots_loaded, r.snapshots_untrusted), (1, 4), "{r:?}");
    for id in &ids {
        assert_eq!(
            fresh.replica.get_json(id).expect("document"),
            a.replica.get_json(id).expect("document"),
            "{id}"
        );
    }
    assert!(
        fresh
            .replica
            .cursor(&ws)
            .expect("cursor")
            .expect("cursor")
            .bootstrapped
    );
    assert_converged(b, &ws, &[&a.replica, &fresh.replica], &[]).await;
    // And it keeps syncing normally.
    fresh
        .replica
        .patch_json(&ids[0], &json!({"after": true}))
        .expect("edit");
    pass(&fresh.replica, fresh.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("fresh syncs");
    pass(&a.replica, a.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("A syncs");
    assert_converged(b, &ws, &[&a.replica, &fresh.replica], &[]).await;
}

// ----- several workspaces ------------------------------------------------------

/// A replica in two workspaces keeps one cursor per workspace; a replica in
/// only one of them never sees the other's documents.
async fn case_multiple_workspaces_have_separate_cursors(b: &dyn Backend) {
    let w1 = b.new_workspace(3).await;
    let w2 = b.new_workspace(2).await;
    let cfg = SyncConfig {
        pull_limit: 2,
        ..SyncConfig::default()
    };
    let both = Node::new(b.remote_for(0).await);
    let only2 = Node::new(b.remote_for(1).await);
    let only1 = Node::new(b.remote_for(2).await);
    let d1 = both
        .replica
        .create_json(w1, &notes(), &json!({"w": 1}))
        .expect("create");
    let d2 = both
        .replica
        .create_json(w2, &notes(), &json!({"w": 2}))
        .expect("create");
    // An outbox alternating between the workspaces.
    for n in 0..5 {
        both.replica
            .patch_json(&d1, &json!({"n": n}))
            .expect("edit");
        both.replica
            .patch_json(&d2, &json!({"n": n}))
            .expect("edit");
    }
    let e2 = only2
        .replica
        .create_json(w2, &notes(), &json!({"by": "only2"}))
        .expect("create");
    let first = pass(&both.replica, both.remote.as_ref(), &cfg, &[w1, w2])
        .await
        .expect("sync");
    assert_eq!(
        (first.pushed, first.push_batches),
        (12, 2),
        "one request per workspace, not one per alternation: {first:?}"
    );
    for _ in 0..3 {
        pass(&both.replica, both.remote.as_ref(), &cfg, &[w1, w2])
            .await
            .expect("sync");
        pass(&only2.replica, only2.remote.as_ref(), &cfg, &[w2])
            .await
            .expect("sync");
        pass(&only1.replica, only1.remote.as_ref(), &cfg, &[w1])
            .await
            .expect("sync");
    }
    let c1 = both
        .replica
        .cursor(&w1)
        .expect("cursor")
        .expect("w1 cursor");
    let c2 = both
        .replica
        .cursor(&w2)
        .expect("cursor")
        .expect("w2 cursor");
    assert_ne!(c1.cursor, c2.cursor, "cursors are per workspace");
    assert_eq!(b.stored_changes(&w1).await.len(), 6);
    assert_eq!(b.stored_changes(&w2).await.len(), 7);
    assert!(only1.replica.cursor(&w2).expect("cursor").is_none());
    assert!(docs_of(&only1.replica, &w2).is_empty());
    assert!(
        only2.replica.get_json(&d1).is_err(),
        "w1 never reached only2"
    );
    assert_eq!(both.replica.get_json(&e2).expect("e2")["by"], "only2");
    assert_eq!(only2.replica.get_json(&d2).expect("d2")["w"], 2);
    assert_converged(b, &w1, &[&both.replica, &only1.replica], &[]).await;
    assert_converged(b, &w2, &[&both.replica, &only2.replica], &[]).await;
}

/// Pulled pages are applied in batches of `apply_batch_changes`, each in one
/// transaction with the cursor after it: a pass that fails after some pages
/// keeps exactly the batches it applied, and the next pass resumes there.
async fn case_pages_apply_in_batches_with_their_cursor(b: &dyn Backend) {
    let ws = b.new_workspace(2).await;
    let a = Node::new(b.remote_for(0).await);
    let id = a
        .replica
        .create_json(ws, &notes(), &json!({"n": 0}))
        .expect("create");
    for n in 1..50 {
        a.replica.patch_json(&id, &json!({"n": n})).expect("edit");
    }
    let cfg = SyncConfig {
        pull_limit: 5,
        apply_batch_changes: 20,
        snapshot_threshold: 0,
        bootstrap_from_snapshots: false,
        ..SyncConfig::default()
    };
    pass(&a.replica, a.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("A pushes");

    let bnode = Node::new(b.remote_for(1).await);
    // Pages 1-6 arrive (30 changes: one batch of 20 applied, 10 waiting in
    // memory), page 7 fails.
    for _ in 0..6 {
        bnode.remote.inject(Op::Pull, Fault::Delay(Duration::ZERO));
    }
    bnode.remote.inject(Op::Pull, Fault::ServerError);
    let pages = std::sync::Mutex::new(Vec::new());
    let record = |p: supamerge::SyncProgress| {
        if let supamerge::SyncProgress::Pulled { changes, .. } = p {
            pages.lock().expect("lock").push(changes);
        }
    };
    let failed =
        supamerge::sync_once(&bnode.replica, bnode.remote.as_ref(), &cfg, &[ws], &record).await;
    assert!(failed.is_err(), "the seventh page fails: {failed:?}");
    assert_eq!(*pages.lock().expect("lock"), vec![20], "one batch applied");
    let history = bnode
        .replica
        .history(&id)
        .expect("the first batch is there");
    assert_eq!(history.len(), 20);
    let mid = bnode
        .replica
        .cursor(&ws)
        .expect("cursor")
        .expect("persisted");
    assert!(!mid.cursor.is_empty());
    // The next pass resumes after the applied batch: 30 more changes.
    let r = pass(&bnode.replica, bnode.remote.as_ref(), &cfg, &[ws])
        .await
        .expect("resumes");
    assert_eq!((r.pulled, r.applied, r.duplicates), (30, 30, 0), "{r:?}");
    assert_converged(b, &ws, &[&a.replica, &bnode.replica], &[]).await;
}

// ----- a process killed in the middle of a sync ----------------------------------

/// A two-worker runtime for the tests that are not `#[tokio::test]`.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs the ignored test `name` of this binary as a child process, with
/// `env` naming its directory; its stdout is piped for the parent to read.
fn spawn_child(name: &str, env: &str, dir: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--nocapture", "--ignored"])
        .arg("--test-threads=1")
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child")
}

const KILL_ENV: &str = "SUPAMERGE_SYNC_KILL_CHILD_DIR";

fn kill_ws() -> WorkspaceId {
    WorkspaceId::from_random([9; 16])
}

fn kill_cfg() -> SyncConfig {
    SyncConfig {
        push_max_count: 3,
        pull_limit: 4,
        snapshot_threshold: 12,
        ..SyncConfig::default()
    }
}

/// The child half of [`killed_mid_sync_loses_nothing`]: edits and syncs a
/// replica against a hub in the directory named by `KILL_ENV`, printing a
/// line after every committed edit and every sync step, until killed.
/// Without the variable (a normal `cargo test -- --ignored`) it does nothing.
#[test]
#[ignore = "child process of killed_mid_sync_loses_nothing"]
fn kill_child_worker() {
    let Ok(dir) = std::env::var(KILL_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let rt = runtime();
    rt.block_on(async move {
        let replica = Replica::open(dir.join("replica")).expect("open replica");
        let hub = LocalHub::open(dir.join("hub")).expect("open hub");
        let ws = kill_ws();
        let cfg = kill_cfg();
        let progress = |p: supamerge::SyncProgress| println!("progress {p:?}");
        for step in 0..10_000 {
            let id = replica
                .create_json(ws, &notes(), &json!({"step": step, "n": 0}))
                .expect("create");
            println!("committed {id} 0");
            for n in 1..=6 {
                replica.patch_json(&id, &json!({"n": n})).expect("edit");
                println!("committed {id} {n}");
            }
            let r = supamerge::sync_once(&replica, &hub, &cfg, &[ws], &progress).await;
            println!("pass {:?}", r.map(|r| r.pushed));
        }
    });
}

/// SIGKILLs a child in the middle of its sync passes, several times at
/// different points, then reopens the replica and the hub, finishes the
/// sync, and checks: every edit the child reported committed is there, the
/// hub stores every change exactly once, and a second replica converges.
#[test]
fn killed_mid_sync_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut committed: BTreeMap<DocId, u64> = BTreeMap::new();
    for (round, kill_after) in [9usize, 31, 50, 77, 120].into_iter().enumerate() {
        let mut child = spawn_child("kill_child_worker", KILL_ENV, dir.path());
        let out = child.stdout.take().expect("child stdout");
        let mut lines = 0;
        for line in BufReader::new(out).lines() {
            let line = line.expect("read child output");
            if let Some(rest) = line.strip_prefix("committed ") {
                let mut it = rest.split(' ');
                let id: DocId = it.next().and_then(|s| s.parse().ok()).expect("doc id");
                let n: u64 = it.next().and_then(|s| s.parse().ok()).expect("n");
                let e = committed.entry(id).or_default();
                *e = (*e).max(n);
            }
            if line.starts_with("committed ")
                || line.starts_with("progress ")
                || line.starts_with("pass ")
            {
                lines += 1;
            }
            if lines >= kill_after {
                break;
            }
        }
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap child");
        assert!(
            !status.success(),
            "round {round}: the child was killed, not finished"
        );
    }
    assert!(
        committed.len() >= 3,
        "the child made progress: {committed:?}"
    );

    let rt = runtime();
    rt.block_on(async {
        let replica = Replica::open(dir.path().join("replica")).expect("reopen replica");
        let hub = LocalHub::open(dir.path().join("hub")).expect("reopen hub");
        let ws = kill_ws();
        for (id, n) in &committed {
            let j = replica.get_json(id).expect("committed entity survives");
            assert!(j["n"].as_u64().expect("n") >= *n, "{id}: {j} lost edit {n}");
        }
        let cfg = kill_cfg();
        for _ in 0..3 {
            pass(&replica, &hub, &cfg, &[ws])
                .await
                .expect("finish the sync");
        }
        assert_eq!(replica.pending(), 0);
        let fresh_dir = tempfile::tempdir().expect("temp dir");
        let fresh = Replica::open(fresh_dir.path()).expect("fresh replica");
        pass(&fresh, &hub, &cfg, &[ws])
            .await
            .expect("fresh replica syncs");
        let backend = LocalHubBackend::with_hub(hub.clone());
        assert_converged(&backend, &ws, &[&replica, &fresh], &[]).await;
        assert_eq!(docs_of(&fresh, &ws).len(), docs_of(&replica, &ws).len());
    });
}

const BOOT_ENV: &str = "SUPAMERGE_SYNC_BOOT_CHILD_DIR";

fn boot_cfg() -> SyncConfig {
    SyncConfig {
        pull_limit: 3,
        apply_batch_changes: 1,
        snapshot_page_limit: 4,
        snapshot_threshold: 8,
        bootstrap_from_snapshots: true,
        ..SyncConfig::default()
    }
}

/// The child half of [`killed_mid_bootstrap_resumes`]: a fresh replica
/// bootstrapping from the hub in `BOOT_ENV`'s directory, printing a line per
/// progress step, until killed (or done).
#[test]
#[ignore = "child process of killed_mid_bootstrap_resumes"]
fn boot_child_worker() {
    let Ok(dir) = std::env::var(BOOT_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let rt = runtime();
    rt.block_on(async move {
        let replica = Replica::open(dir.join("fresh")).expect("open replica");
        let hub = LocalHub::open(dir.join("hub")).expect("open hub");
        let progress = |p: supamerge::SyncProgress| println!("progress {p:?}");
        let r = supamerge::sync_once(&replica, &hub, &boot_cfg(), &[kill_ws()], &progress).await;
        println!("pass {:?}", r.map(|r| (r.pulled, r.snapshots_loaded)));
    });
}

/// A fresh device bootstrapping from snapshots is SIGKILLed at several
/// points of its first sync; reopened each time, it resumes, and in the end
/// holds exactly what the source holds (heads, JSON, conflicts), nothing
/// missing, nothing applied twice.
#[test]
fn killed_mid_bootstrap_resumes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = runtime();
    let ws = kill_ws();
    // The source: 30 documents with snapshots, and tails past them.
    rt.block_on(async {
        let hub = LocalHub::open(dir.path().join("hub")).expect("hub");
        let src = Replica::open(dir.path().join("source")).expect("source");
        let cfg = boot_cfg();
        let mut ids = Vec::new();
        for k in 0..30 {
            let id = src
                .create_json(ws, &notes(), &json!({"k": k, "n": 0}))
                .expect("create");
            for n in 1..12 {
                src.patch_json(&id, &json!({"n": n})).expect("edit");
            }
            ids.push(id);
        }
        pass(&src, &hub, &cfg, &[ws]).await.expect("source syncs");
        pass(&src, &hub, &cfg, &[ws]).await.expect("snapshots");
        for (i, id) in ids.iter().enumerate() {
            for t in 0..(i % 4) {
                src.patch_json(id, &json!({"tail": t})).expect("edit");
            }
        }
        pass(&src, &hub, &cfg, &[ws]).await.expect("tails");
        hub.flush().expect("flush");
    });
    let mut finished = false;
    // Progress lines: ~15 pages of tail changes, then ~8 pages of snapshots.
    for kill_after in [2usize, 5, 9, 4, 3, 5] {
        let mut child = spawn_child("boot_child_worker", BOOT_ENV, dir.path());
        let out = child.stdout.take().expect("child stdout");
        let mut lines = 0;
        for line in BufReader::new(out).lines() {
            let line = line.expect("read child output");
            if line.starts_with("pass ") {
                finished = true;
            }
            if line.starts_with("progress ") {
                lines += 1;
            }
            if lines >= kill_after {
                eprintln!("killing the bootstrapping child after: {line}");
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        !finished,
        "every round was killed before its first pass ended (else the test proves less)"
    );
    rt.block_on(async {
        let hub = LocalHub::open(dir.path().join("hub")).expect("reopen hub");
        let src = Replica::open(dir.path().join("source")).expect("reopen source");
        let fresh = Replica::open(dir.path().join("fresh")).expect("reopen fresh");
        pass(&fresh, &hub, &boot_cfg(), &[ws])
            .await
            .expect("the interrupted bootstrap finishes");
        let backend = LocalHubBackend::with_hub(hub.clone());
        assert_converged(&backend, &ws, &[&src, &fresh], &[]).await;
        assert_eq!(docs_of(&fresh, &ws).len(), 30);
    });
}

// ----- the engine, under paused tokio time ---------------------------------------

/// A replica with a running engine over a faulty LocalHub.
struct Rig {
    backend: LocalHubBackend,
    node: Node,
    ws: WorkspaceId,
    handle: SyncHandle,
    events: broadcast::Receiver<SyncEvent>,
}

async fn rig(
    configure: impl FnOnce(SyncEngineBuilder) -> SyncEngineBuilder,
    faults: &[(Op, Fault)],
) -> Rig {
    let backend = LocalHubBackend::new().await;
    let ws = backend.new_workspace(1).await;
    let node = Node::new(backend.remote_for(0).await);
    for (op, f) in faults {
        node.remote.inject(*op, f.clone());
    }
    let remote: Arc<dyn Remote> = node.remote.clone();
    // Polling only: these tests count the passes of the other triggers
    // (the hub's nudges as triggers are tested in tests/live.rs).
    let builder = SyncEngine::builder(node.replica.clone(), remote)
        .with_workspaces([ws])
        .with_seed(7)
        .with_interval(None)
        .with_live_updates(false)
        .with_sync_on_start(false);
    let handle = configure(builder).spawn();
    let events = handle.events();
    Rig {
        backend,
        node,
        ws,
        handle,
        events,
    }
}

impl Rig {
    fn commit(&self, k: usize) -> DocId {
        let id = self
            .node
            .replica
            .create_json(self.ws, &notes(), &json!({"k": k}))
            .expect("create");
        self.node
            .replica
            .patch_json(&id, &json!({"edited": true}))
            .expect("edit");
        id
    }

    /// The next pass outcome announced on the broadcast.
    async fn next_outcome(&mut self) -> Result<SyncReport, SyncError> {
        loop {
            match self.events.recv().await.expect("engine events") {
                SyncEvent::Finished(r) => return Ok(r),
                SyncEvent::Failed(e) => return Err(e),
                _ => {}
            }
        }
    }

    async fn wait_state(&self, want: SyncState) {
        let mut st = self.handle.status();
        st.wait_for(|s| s.state == want)
            .await
            .expect("status channel");
    }

    /// One sync pass of another replica in the rig's workspace.
    async fn sync_other(&self, other: &Node) {
        pass(
            &other.replica,
            other.remote.as_ref(),
            &SyncConfig::default(),
            &[self.ws],
        )
        .await
        .expect("the other replica syncs");
    }

    /// Passes run so far: every pass pulls exactly one page here.
    fn passes(&self) -> usize {
        self.node.remote.calls(Op::Pull)
    }
}

#[tokio::test(start_paused = true)]
async fn engine_debounced_commits_coalesce_into_one_pass() {
    let mut r = rig(|b| b.with_debounce(Duration::from_millis(250)), &[]).await;
    for k in 0..4 {
        r.commit(k);
    }
    let report = r.next_outcome().await.expect("one pass");
    assert_eq!(report.pushed, 8, "{report:?}");
    assert_eq!(report.push_batches, 1);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(r.passes(), 1, "eight commits, one pass");
    assert_eq!(r.handle.status().borrow().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn engine_sync_now_returns_the_report() {
    let r = rig(|b| b.with_debounce(Duration::from_secs(3600)), &[]).await;
    r.commit(0);
    let report = r.handle.sync_now().await.expect("pass");
    assert_eq!(report.pushed, 2);
    assert_eq!(report.pulled, 2, "its own changes come back once");
    let st = r.handle.status().borrow().clone();
    assert_eq!(st.state, SyncState::Idle);
    assert_eq!(st.pending, 0);
    assert!(st.last_success_ms.is_some());
}

/// Regression: every `sync_now` queued during a pass used to run a pass of
/// its own; triggers during a pass must coalesce into one more pass.
#[tokio::test(start_paused = true)]
async fn engine_triggers_during_a_pass_coalesce_into_one_more() {
    let mut r = rig(
        |b| b.with_debounce(Duration::from_millis(100)),
        &[(Op::Push, Fault::Delay(Duration::from_secs(5)))],
    )
    .await;
    r.commit(0);
    let h = r.handle.clone();
    let first = tokio::spawn(async move { h.sync_now().await });
    // Spin (time stays paused while the runtime is busy) until the pass has
    // taken its batch and sits in the delayed push.
    while r.node.remote.calls(Op::Push) == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(r.handle.status().borrow().state, SyncState::Syncing);
    // During the pass: a local commit and three manual triggers.
    r.commit(1);
    let mut more = Vec::new();
    for _ in 0..3 {
        let h = r.handle.clone();
        more.push(tokio::spawn(async move { h.sync_now().await }));
    }
    tokio::task::yield_now().await;
    let first = first.await.expect("join").expect("first pass");
    let mut later = Vec::new();
    for m in more {
        later.push(m.await.expect("join").expect("second pass"));
    }
    assert!(
        later.windows(2).all(|w| w[0] == w[1]),
        "one pass answered all three: {later:?}"
    );
    // A pass pushes what was queued at its start (and what its peeks bring
    // along), so the commit made during the first pass is pushed by it or by
    // the next one, never lost.
    assert_eq!(first.pushed + later[0].pushed, 4, "{first:?} {later:?}");
    assert_eq!(r.node.replica.pending(), 0);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let mut finished = 0;
    while let Ok(e) = r.events.try_recv() {
        finished += usize::from(matches!(e, SyncEvent::Finished(_)));
    }
    assert_eq!(finished, 2);
    assert_eq!(r.passes(), 2, "four triggers during a pass: one more pass");
}

#[tokio::test(start_paused = true)]
async fn engine_backs_off_with_growing_delays_then_recovers() {
    let mut r = rig(
        |b| {
            b.with_backoff(Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(60),
            ))
            .with_sync_on_start(true)
        },
        &[
            (Op::Pull, Fault::DropRequest),
            (Op::Pull, Fault::DropRequest),
            (Op::Pull, Fault::ServerError),
            (Op::Pull, Fault::ServerError),
        ],
    )
    .await;
    r.commit(0);
    assert_eq!(r.node.replica.pending(), 2);
    let mut failed_at = Vec::new();
    let mut states = Vec::new();
    let report = loop {
        match r.next_outcome().await {
            Ok(report) => break report,
            Err(e) => {
                // Two lost requests (offline), then two server errors.
                let want = if failed_at.len() < 2 {
                    SyncErrorKind::Offline
                } else {
                    SyncErrorKind::Server
                };
                assert_eq!(e.kind(), Some(want), "{e:?}");
                assert!(e.is_retryable(), "{e:?}");
                failed_at.push(tokio::time::Instant::now());
                let st = r.handle.status().borrow().clone();
                assert_eq!(st.pending, 0, "the push half succeeded: {st:?}");
                assert!(st.last_error.is_some());
                states.push(st.state);
            }
        }
    };
    let done_at = tokio::time::Instant::now();
    assert_eq!(
        states,
        [
            SyncState::Offline,
            SyncState::Offline,
            SyncState::Error,
            SyncState::Error
        ]
    );
    failed_at.push(done_at);
    // Delay k is within [ceil/2, ceil], ceil = 1 s · 2^k: it grows.
    for k in 0..4u32 {
        let gap = failed_at[k as usize + 1] - failed_at[k as usize];
        let ceil = Duration::from_secs(1 << k);
        assert!(gap >= ceil / 2 && gap <= ceil, "delay {k}: {gap:?}");
    }
    assert_eq!(report.pushed, 0, "pushed in the first, failed, pass");
    let st = r.handle.status().borrow().clone();
    assert_eq!(st.state, SyncState::Idle);
    assert!(
        st.last_success_ms.is_some() && st.last_error.is_none(),
        "{st:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn engine_auth_failure_waits_for_fresh_credentials() {
    let mut r = rig(
        |b| {
            b.with_sync_on_start(true)
                .with_interval(Some(Duration::from_secs(30)))
                .with_debounce(Duration::from_millis(100))
        },
        &[(Op::Push, Fault::Unauthenticated)],
    )
    .await;
    r.commit(0);
    let e = r.next_outcome().await.expect_err("auth fails");
    assert!(
        matches!(
            e,
            SyncError::Failed {
                kind: SyncErrorKind::Auth,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert_eq!(r.handle.status().borrow().state, SyncState::Error);
    // Neither backoff, interval nor local commits retry.
    tokio::time::sleep(Duration::from_secs(600)).await;
    r.commit(1);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(r.node.remote.calls(Op::Push), 1, "no automatic retry");
    assert_eq!(r.handle.status().borrow().pending, 4);
    r.handle.credentials_updated().await;
    let report = r.next_outcome().await.expect("with fresh credentials");
    assert_eq!(report.pushed, 4);
    // The commit made while stopped left a trigger behind, which may run
    // one more (empty) pass right after this one: wait for the engine to
    // settle rather than read the state at an arbitrary instant.
    r.wait_state(SyncState::Idle).await;
    let st = r.handle.status().borrow().clone();
    assert_eq!((st.state, st.pending), (SyncState::Idle, 0));
    assert!(st.last_error.is_none(), "{st:?}");
}

#[tokio::test(start_paused = true)]
async fn engine_notify_online_retries_at_once() {
    let mut r = rig(
        |b| {
            b.with_backoff(Backoff::new(
                Duration::from_secs(3600),
                Duration::from_secs(7200),
            ))
            .with_sync_on_start(true)
        },
        &[(Op::Push, Fault::DropRequest)],
    )
    .await;
    r.commit(0);
    r.next_outcome().await.expect_err("offline");
    assert_eq!(r.handle.status().borrow().state, SyncState::Offline);
    let failed_at = tokio::time::Instant::now();
    r.handle.notify_online().await;
    let report = r.next_outcome().await.expect("back online");
    assert_eq!(report.pushed, 2);
    assert!(
        tokio::time::Instant::now() - failed_at < Duration::from_secs(1800),
        "retried before the backoff's earliest delay"
    );
}

/// Regression (found by the soak benchmark): a replica committing faster
/// than its pushes drain never pulled. Its pass kept peeking the outbox and
/// found the app's newest commits every time, so it stayed in its push half
/// until the app stopped writing, and then pulled everything at once (the
/// writer's memory went from 40 to 199 MiB). A pass pushes what was queued
/// when it started; the pull follows, and later commits get the next pass.
#[tokio::test(start_paused = true)]
async fn engine_pulls_while_the_app_commits_faster_than_it_pushes() {
    let cfg = SyncConfig {
        push_max_count: 1,
        snapshot_threshold: 0,
        ..SyncConfig::default()
    };
    // Every push takes 100 ms: ten changes a second at most.
    let delays: Vec<(Op, Fault)> = (0..2_000)
        .map(|_| (Op::Push, Fault::Delay(Duration::from_millis(100))))
        .collect();
    let r = rig(
        |b| b.with_config(cfg).with_debounce(Duration::from_millis(10)),
        &delays,
    )
    .await;
    let writer = r.commit(0);
    // Another replica's document reaches the hub while the writer writes.
    let other = Node::new(r.backend.remote_for(1).await);
    let theirs = other
        .replica
        .create_json(r.ws, &notes(), &json!({"theirs": true}))
        .expect("create");
    // The app commits fifty times a second for up to 30 s and stops as soon
    // as it sees the other document.
    let mut pushed_theirs = false;
    for i in 0..1_500u32 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        r.node
            .replica
            .patch_json(&writer, &json!({ "n": i }))
            .expect("edit");
        if i == 50 {
            r.sync_other(&other).await;
            pushed_theirs = true;
        }
        if pushed_theirs && r.node.replica.get_json(&theirs).is_ok() {
            assert!(
                r.node.replica.pending() > 0,
                "the writer was still behind on its pushes when it pulled"
            );
            return;
        }
    }
    panic!(
        "the writer never pulled while it kept committing ({} changes waiting to be pushed)",
        r.node.replica.pending()
    );
}

#[tokio::test(start_paused = true)]
async fn engine_shutdown_lets_the_running_pass_finish() {
    let r = rig(|b| b, &[(Op::Push, Fault::Delay(Duration::from_secs(5)))]).await;
    r.commit(0);
    let h = r.handle.clone();
    let running = tokio::spawn(async move { h.sync_now().await });
    r.wait_state(SyncState::Syncing).await;
    r.handle.shutdown().await;
    let report = running
        .await
        .expect("join")
        .expect("the running pass finished");
    assert_eq!(report.pushed, 2);
    assert_eq!(r.node.replica.pending(), 0);
    assert!(matches!(r.handle.sync_now().await, Err(SyncError::Stopped)));
}

#[tokio::test(start_paused = true)]
async fn engine_announces_doc_changed_from_remote_pulls() {
    let mut r = rig(|b| b, &[]).await;
    let other = Node::new(Arc::new(r.backend.hub().clone()));
    let id = other
        .replica
        .create_json(r.ws, &notes(), &json!({"from": "other"}))
        .expect("create");
    r.sync_other(&other).await;
    let report = r.handle.sync_now().await.expect("pull");
    assert_eq!(report.applied, 1);
    let mut seen = false;
    while let Ok(e) = r.events.try_recv() {
        if let SyncEvent::DocChanged { id: got, origin } = e {
            assert_eq!((got, origin), (id, Origin::Remote));
            seen = true;
        }
    }
    assert!(
        seen,
        "DocChanged {{ origin: Remote }} on the engine's broadcast"
    );
    assert_eq!(
        r.node.replica.get_json(&id).expect("pulled")["from"],
        "other"
    );
}

/// The hub refuses a protocol version it does not speak, with a typed error,
/// and answers the current one.
#[tokio::test]
async fn local_hub_refuses_unknown_protocol_versions() {
    use supamerge::RemoteError;
    use supamerge::{Cursor, PullRequest, WIRE_VERSION};
    let b = LocalHubBackend::new().await;
    let ws = b.new_workspace(1).await;
    let req = |v| PullRequest {
        v,
        workspace: ws,
        cursor: Cursor(String::new()),
        limit: 10,
        skip_snapshotted: false,
    };
    match b.hub().pull(req(WIRE_VERSION + 1)).await {
        Err(RemoteError::BadRequest { code, message }) => {
            assert_eq!(code, "unsupported_version");
            assert!(message.contains("not supported"), "{message}");
        }
        other => panic!("a future version must be refused: {other:?}"),
    }
    let page = b
        .hub()
        .pull(req(WIRE_VERSION))
        .await
        .expect("current version");
    assert!(page.changes.is_empty());
}

/// Issue 14: with default options, a fresh replica with nothing to pull says
/// so (state `NoWorkspace` and a warning event, not a silent `Idle`); told to
/// `join` a workspace it syncs it with no other configuration, and remembers
/// it after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_a_fresh_replica_reports_no_workspace_then_syncs_what_it_joins() {
    use supamerge::SyncWarning;
    let guard = Duration::from_secs(60);
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = LocalHub::open(dir.path().join("hub")).expect("hub");
    let remote: Arc<dyn Remote> = Arc::new(hub.clone());
    let ws = WorkspaceId::new();
    let writer = Replica::open(dir.path().join("writer")).expect("writer");
    let id = writer
        .create_json(ws, &notes(), &json!({"title": "from the writer"}))
        .expect("create");
    supamerge::sync_once(
        &writer,
        remote.as_ref(),
        &SyncConfig::default(),
        &[],
        &|_| {},
    )
    .await
    .expect("writer pushes");

    let fresh_dir = dir.path().join("fresh");
    let fresh = Replica::open(&fresh_dir).expect("fresh");
    let engine = SyncEngine::builder(fresh.clone(), remote.clone()).spawn();
    let mut events = engine.events();
    let report = engine.sync_now().await.expect("a pass");
    assert_eq!(report.workspaces, 0, "{report:?}");
    assert_eq!(engine.status().borrow().state, SyncState::NoWorkspace);
    tokio::time::timeout(guard, async {
        loop {
            if let SyncEvent::Warning(w) = events.recv().await.expect("events") {
                assert_eq!(w, SyncWarning::NoWorkspace);
                assert!(w.to_string().contains("join"), "{w}");
                return;
            }
        }
    })
    .await
    .expect("a warning event");

    engine.join(ws).await.expect("join");
    tokio::time::timeout(guard, async {
        loop {
            match events.recv().await.expect("events") {
                SyncEvent::DocChanged { id: got, origin } if got == id => {
                    assert_eq!(origin, Origin::Remote);
                    return;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the joined workspace's document arrives");
    assert_eq!(
        fresh.get_json(&id).expect("pulled"),
        json!({"title": "from the writer"})
    );
    let mut status = engine.status();
    tokio::time::timeout(guard, status.wait_for(|s| s.state == SyncState::Idle))
        .await
        .expect("idle")
        .expect("status");

    // Remembered: after a restart a default engine pulls it again.
    engine.shutdown().await;
    drop((engine, fresh));
    // The engine's task lets go of its replica clone just after shutdown
    // answers: retry while the directory is still open in this process.
    let again = tokio::time::timeout(guard, async {
        loop {
            match Replica::open(&fresh_dir) {
                Err(supamerge::Error::Store(supamerge::StoreError::AlreadyOpen { .. })) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                other => return other.expect("reopen"),
            }
        }
    })
    .await
    .expect("reopened");
    assert!(again.workspaces().expect("workspaces").contains(&ws));
    let engine = SyncEngine::builder(again.clone(), remote).spawn();
    let report = engine.sync_now().await.expect("a pass");
    assert_eq!(report.workspaces, 1, "{report:?}");
    assert_eq!(engine.status().borrow().state, SyncState::Idle);
    engine.shutdown().await;
}
