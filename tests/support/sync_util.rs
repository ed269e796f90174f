//! A cluster of replicas on one backend, a shared edit workload, and the
//! convergence assertions of DESIGN.md §2 (invariants 1–5).

use automerge::ChangeHash;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc};
use autosurgeon::{Hydrate, Reconcile};
use serde_json::{json, Value as Json};
use supamerge::test_util::FaultyRemote;
use supamerge::{
    Collection, Conflict, DocId, EntityError, Error, Remote, Replica, SyncConfig, SyncReport,
    WorkspaceId,
};

use super::backend::Backend;

/// A typed entity.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct Task {
    pub title: String,
    pub done: bool,
    pub priority: i64,
}

pub fn tasks() -> Collection {
    Collection::new("tasks").expect("collection name")
}

pub fn notes() -> Collection {
    Collection::new("notes").expect("collection name")
}

/// One replica with its fault-injecting remote.
pub struct Node {
    pub replica: Replica,
    pub remote: Arc<FaultyRemote>,
    /// Keeps the replica's directory alive.
    _dir: tempfile::TempDir,
}

impl Node {
    /// Opens a replica in a fresh temp dir talking to `remote`.
    pub fn new(remote: Arc<dyn Remote>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let replica = Replica::open(dir.path().join("replica")).expect("open replica");
        Self {
            replica,
            remote: Arc::new(FaultyRemote::new(remote)),
            _dir: dir,
        }
    }
}

/// Several replicas sharing a workspace on one backend.
pub struct Cluster {
    pub ws: WorkspaceId,
    pub nodes: Vec<Node>,
    pub cfg: SyncConfig,
}

/// Sums of the reports of several passes.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub passes: usize,
    pub failures: usize,
    pub pushed: usize,
    pub already_present: usize,
    pub dead_lettered: usize,
    pub push_batches: usize,
    pub pulled: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub snapshots_loaded: usize,
}

impl Totals {
    pub fn add(&mut self, r: &SyncReport) {
        self.passes += 1;
        self.pushed += r.pushed;
        self.already_present += r.already_present;
        self.dead_lettered += r.dead_lettered;
        self.push_batches += r.push_batches;
        self.pulled += r.pulled;
        self.applied += r.applied;
        self.duplicates += r.duplicates;
        self.snapshots_loaded += r.snapshots_loaded;
    }
}

fn no_progress(_: supamerge::SyncProgress) {}

/// One sync pass of `replica` through `remote`.
pub async fn pass(
    replica: &Replica,
    remote: &dyn Remote,
    cfg: &SyncConfig,
    workspaces: &[WorkspaceId],
) -> Result<SyncReport, Error> {
    supamerge::sync_once(replica, remote, cfg, workspaces, &no_progress).await
}

impl Cluster {
    /// `n` fresh replicas, user `i` on node `i`, in a new workspace.
    pub async fn new(b: &dyn Backend, n: usize) -> Self {
        let ws = b.new_workspace(n).await;
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(Node::new(b.remote_for(i).await));
        }
        Self {
            ws,
            nodes,
            cfg: SyncConfig {
                push_max_count: 4,
                pull_limit: 5,
                ..SyncConfig::default()
            },
        }
    }

    /// One pass of node `i`.
    pub async fn sync(&self, i: usize) -> Result<SyncReport, Error> {
        let n = &self.nodes[i];
        pass(&n.replica, n.remote.as_ref(), &self.cfg, &[self.ws]).await
    }

    /// One pass of every node, one after the other; failures are counted.
    pub async fn round(&self, totals: &mut Totals) -> bool {
        let mut quiet = true;
        for i in 0..self.nodes.len() {
            match self.sync(i).await {
                Ok(r) => {
                    if r.pushed + r.already_present + r.applied + r.dead_lettered > 0 {
                        quiet = false;
                    }
                    totals.add(&r);
                }
                Err(e) => {
                    tracing::debug!(node = i, error = %e, "pass failed");
                    totals.failures += 1;
                    quiet = false;
                }
            }
        }
        quiet
    }

    /// One pass of every node, all at once.
    pub async fn concurrent_round(&self, totals: &mut Totals) {
        let futs = (0..self.nodes.len()).map(|i| self.sync(i));
        for r in futures::future::join_all(futs).await {
            match r {
                Ok(r) => totals.add(&r),
                Err(_) => totals.failures += 1,
            }
        }
    }

    /// Rounds until one round where every pass succeeds and nothing moves.
    pub async fn sync_until_quiescent(&self) -> Totals {
        let mut totals = Totals::default();
        for _ in 0..40 {
            if self.round(&mut totals).await {
                return totals;
            }
        }
        panic!("no quiescence after 40 rounds: {totals:?}");
    }

    /// Invariants after quiescence: identical heads, JSON and conflicts on
    /// every node for every document; every outbox empty; every committed
    /// change stored exactly once by the backend; dead letters exactly as
    /// expected (`expected_dead[i]` for node `i`).
    pub async fn assert_converged(&self, b: &dyn Backend, expected_dead: &[usize]) {
        assert_converged(
            b,
            &self.ws,
            &self.nodes.iter().map(|n| &n.replica).collect::<Vec<_>>(),
            expected_dead,
        )
        .await;
    }
}

/// The documents of `ws` a replica holds.
pub fn docs_of(r: &Replica, ws: &WorkspaceId) -> Vec<DocId> {
    r.documents(ws).expect("read doc records")
}

/// Every change hash a replica holds for a document.
pub fn change_hashes(r: &Replica, id: &DocId) -> Vec<ChangeHash> {
    r.with_doc(id, |d| {
        d.get_changes(&[]).iter().map(|c| c.hash()).collect()
    })
    .expect("load doc")
}

/// A document as every replica must see it after convergence.
#[derive(Debug, PartialEq)]
pub struct DocView {
    pub heads: Vec<automerge::ChangeHash>,
    /// `None` when deleted.
    pub json: Option<Json>,
    pub conflicts: Vec<Conflict>,
}

pub fn view(r: &Replica, id: &DocId) -> DocView {
    let mut heads = r.heads(id).unwrap_or_else(|e| panic!("heads of {id}: {e}"));
    heads.sort();
    let json = match r.get_json(id) {
        Ok(j) => Some(j),
        Err(Error::Entity(EntityError::Deleted { .. })) => None,
        Err(e) => panic!("read {id}: {e}"),
    };
    DocView {
        heads,
        json,
        conflicts: r.conflicts(id).expect("conflicts"),
    }
}

/// See [`Cluster::assert_converged`].
pub async fn assert_converged(
    b: &dyn Backend,
    ws: &WorkspaceId,
    replicas: &[&Replica],
    expected_dead: &[usize],
) {
    let mut ids = BTreeSet::new();
    for r in replicas {
        ids.extend(docs_of(r, ws));
    }
    assert!(!ids.is_empty(), "no documents at all");
    let mut all_changes = BTreeSet::new();
    for id in &ids {
        let first = view(replicas[0], id);
        for (i, r) in replicas.iter().enumerate().skip(1) {
            let v = view(r, id);
            assert_eq!(v, first, "replica {i} differs from replica 0 on {id}");
        }
        for r in replicas {
            all_changes.extend(change_hashes(r, id).into_iter().map(|h| (*id, h)));
        }
    }
    for (i, r) in replicas.iter().enumerate() {
        assert_eq!(r.pending(), 0, "replica {i}: outbox not empty");
        assert_eq!(r.pending_remote(), 0, "replica {i}: early arrivals left");
        let dead = r.dead_letters().expect("dead letters");
        let want = expected_dead.get(i).copied().unwrap_or(0);
        assert_eq!(dead.len(), want, "replica {i}: dead letters {dead:?}");
    }
    let stored = b.stored_changes(ws).await;
    let mut counts: BTreeMap<(DocId, ChangeHash), usize> = BTreeMap::new();
    for s in &stored {
        *counts.entry(*s).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{}: stored more than once: {twice:?}",
        b.name()
    );
    let on_server: BTreeSet<_> = counts.into_keys().collect();
    let missing: Vec<_> = all_changes.difference(&on_server).collect();
    assert!(
        missing.is_empty(),
        "{}: committed but not on the server: {missing:?}",
        b.name()
    );
    let extra: Vec<_> = on_server.difference(&all_changes).collect();
    assert!(
        extra.is_empty(),
        "{}: on the server but on no replica: {extra:?}",
        b.name()
    );
}

/// The documents of the shared workload.
#[derive(Debug, Clone, Copy)]
pub struct Docs {
    pub task: DocId,
    pub note: DocId,
    pub doomed: DocId,
}

/// Node 0 creates a typed task, a note with a collaborative text, and an
/// entity that will be deleted; every node syncs until quiescent.
pub async fn seed(c: &Cluster) -> Docs {
    let r = &c.nodes[0].replica;
    let task = r
        .create(
            c.ws,
            &tasks(),
            &Task {
                title: "write tests".into(),
                done: false,
                priority: 1,
            },
        )
        .expect("create task");
    let note = r
        .create_json(c.ws, &notes(), &json!({"title": "notes", "likes": 0}))
        .expect("create note");
    r.transact(&note, |tx, data| {
        let text = tx.put_object(data, "body", ObjType::Text)?;
        tx.splice_text(&text, 0, 0, "hello")?;
        Ok(())
    })
    .expect("add text");
    let doomed = r
        .create_json(c.ws, &tasks(), &json!({"title": "obsolete", "done": false}))
        .expect("create doomed");
    let t = c.sync_until_quiescent().await;
    assert_eq!(t.failures, 0, "seeding must be clean");
    for n in &c.nodes {
        assert!(n.replica.get_json(&note).is_ok(), "note reached every node");
    }
    Docs { task, note, doomed }
}

/// Every node edits offline, concurrently: the same scalar field of the
/// typed task (a conflict), the text, JSON fields, a new entity; node 0
/// deletes `doomed` (once) while the last node edits it.
pub fn concurrent_edits(c: &Cluster, d: &Docs, round: usize) {
    let last = c.nodes.len() - 1;
    for (i, n) in c.nodes.iter().enumerate() {
        let r = &n.replica;
        r.update::<Task>(&d.task, |t| {
            t.title = format!("title by {i} in round {round}");
            t.priority += 1;
        })
        .expect("update task");
        r.transact(&d.note, |tx, data| {
            let (_, text) = tx.get(data, "body")?.expect("body exists");
            tx.splice_text(&text, 0, 0, &format!("[{i}.{round}]"))?;
            Ok(())
        })
        .expect("splice text");
        r.patch_json(&d.note, &json!({ format!("by_{i}"): round, "shared": i }))
            .expect("patch note");
        if round == 0 {
            if i == 0 {
                r.delete(&d.doomed).expect("delete");
            } else if i == last {
                r.patch_json(&d.doomed, &json!({"title": "still needed?"}))
                    .expect("edit doomed");
            }
        }
        r.create_json(
            c.ws,
            &notes(),
            &json!({"title": format!("new by {i} r{round}")}),
        )
        .expect("create");
    }
}
