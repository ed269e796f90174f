//! `supamerge demo`: three replicas share a workspace through the embedded
//! hub, edit offline, come online, sync and converge.
//!
//! The scenario: Alice creates tasks and a shared note and everyone syncs.
//! Then all three go offline and edit: Alice and Bob retitle the same task
//! (a conflict), Carol's clock is an hour behind and she marks a task done,
//! Alice and Bob both type into the note, Bob bumps a counter, Carol deletes a
//! task; Alice then makes a burst of small edits (the throughput part). They
//! come online and sync; the demo prints every replica's state, the
//! conflicts and how they were resolved, and whether all replicas converged
//! (identical heads and JSON for every entity).

use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, ScalarValue};
use autosurgeon::{Hydrate, Reconcile};
use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::clock::{SkewedClock, SystemClock};
use crate::conflict::Conflict;
use crate::error::{Error, Result};
use crate::id::{Collection, DocId, WorkspaceId};
use crate::remote::{LocalHub, Remote};
use crate::replica::Replica;
use crate::store::Durability;
use crate::sync::session::{SyncProgress, SyncReport};
use crate::sync::{SyncEngine, SyncError, SyncHandle};

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// A replica, hub or I/O error.
    #[error(transparent)]
    Supamerge(#[from] Error),
    /// A replica's sync pass failed.
    #[error("{peer}'s sync failed: {source}")]
    Sync {
        /// Whose sync.
        peer: &'static str,
        /// The engine's error.
        #[source]
        source: SyncError,
    },
    /// A live edit did not reach a replica in time.
    #[error("alice's live edit {edit} did not reach {peer} within {waited_s} s (its engine's live status: {status})")]
    LiveTimeout {
        /// The replica that did not get it.
        peer: &'static str,
        /// Which edit (from 1).
        edit: usize,
        /// How long the demo waited.
        waited_s: u64,
        /// The engine's live status then, in words.
        status: String,
    },
}

/// A task, the typed entity of the demo.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize)]
pub struct Task {
    /// What to do.
    pub title: String,
    /// Whether it is done.
    pub done: bool,
    /// Who does it.
    pub assignee: String,
}

/// Options of the demo.
#[derive(Clone)]
pub struct DemoOptions {
    /// Extra small edits Alice makes offline (the throughput part).
    pub burst: usize,
    /// Report progress (for a progress bar).
    pub progress: Option<Arc<dyn Fn(DemoProgress) + Send + Sync>>,
    /// Where the replicas sync; `None`: an embedded hub in a temporary
    /// directory.
    pub backend: Option<DemoBackend>,
}

/// A remote the demo's replicas share instead of the embedded hub (e.g. a
/// Supabase project: three devices of the signed-in user).
#[derive(Clone)]
pub struct DemoBackend {
    /// The remote every replica syncs with.
    pub remote: Arc<dyn Remote>,
    /// A workspace the remote's user may write to (created beforehand).
    pub workspace: WorkspaceId,
    /// How the report names it (`"Supabase at https://…"`).
    pub name: String,
}

impl std::fmt::Debug for DemoOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoOptions")
            .field("burst", &self.burst)
            .field("backend", &self.backend.as_ref().map(|b| &b.name))
            .finish_non_exhaustive()
    }
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            burst: 5_000,
            progress: None,
            backend: None,
        }
    }
}

/// Progress of the demo's sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoProgress {
    /// Changes moved so far.
    pub done: u64,
    /// Changes to move in all.
    pub total: u64,
}

/// One replica's final state.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaState {
    /// The replica's name.
    pub name: String,
    /// Its live entities as JSON, by id.
    pub entities: std::collections::BTreeMap<String, Json>,
}

/// A conflict the demo found, and what it did about it.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictReport {
    /// The entity.
    pub id: String,
    /// The conflicted field with every candidate and the LWW winner.
    pub conflict: Conflict,
    /// How it was resolved.
    pub resolution: String,
}

/// What the demo did and found.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// What the replicas synced through (`"the embedded hub"`, `"Supabase at …"`).
    pub backend: String,
    /// Whether every replica ended with identical heads and JSON for every entity.
    pub converged: bool,
    /// The number of replicas.
    pub replicas: usize,
    /// The number of entities (live ones).
    pub entities: usize,
    /// Changes that crossed the hub (pushed + applied by other replicas).
    pub changes_synced: u64,
    /// Conflicts found after the offline edits.
    pub conflicts: Vec<ConflictReport>,
    /// Wall time of the whole demo.
    pub elapsed_ms: u64,
    /// Wall time of the sync after coming online.
    pub sync_ms: u64,
    /// Changes per second during that sync.
    pub changes_per_sec: f64,
    /// Final state of each replica.
    pub states: Vec<ReplicaState>,
    /// Per-replica reports of the online sync.
    pub reports: Vec<SyncReport>,
    /// The live part: edits on Alice's replica reaching the others with
    /// nobody calling sync (`None` when the remote has no live updates).
    pub live: Option<LiveReport>,
}

/// The demo's live part: Alice edits a task with every replica's engine on
/// live updates (nudges; the engines poll only once an hour), and the time
/// from her commit to the change on Bob's and Carol's replicas is measured.
#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    /// Edits Alice made.
    pub edits: usize,
    /// Commit on Alice's replica to `DocChanged { origin: Remote }` on the
    /// others', per edit and replica, in ms.
    pub delays_ms: Vec<f64>,
    /// Their median.
    pub median_ms: f64,
    /// Their maximum.
    pub max_ms: f64,
}

struct Peer {
    name: &'static str,
    replica: Replica,
    sync: SyncHandle,
}

fn tasks() -> Result<Collection> {
    Ok(Collection::new("tasks")?)
}

fn notes() -> Result<Collection> {
    Ok(Collection::new("notes")?)
}

/// Runs the demo in a temporary directory.
///
/// # Errors
/// Any replica, hub or sync error (the demo stops at the first).
pub async fn run(opts: DemoOptions) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(|source| Error::Io {
        action: "create the demo's temporary directory",
        source,
    })?;
    let (remote, ws, backend) = match opts.backend.clone() {
        Some(b) => (b.remote, b.workspace, b.name),
        None => {
            let hub = LocalHub::open(dir.path().join("hub")).map_err(Error::from)?;
            let remote: Arc<dyn Remote> = Arc::new(hub);
            let ws = WorkspaceId::from_random(rand::random());
            (remote, ws, "the embedded hub".to_string())
        }
    };
    let mut peers = Vec::new();
    for (name, skew_ms) in [("alice", 0i64), ("bob", 0), ("carol", -3_600_000)] {
        let replica = Replica::builder(dir.path().join(name))
            .with_clock(Arc::new(SkewedClock::new(SystemClock, skew_ms)))
            .with_durability(Durability::Buffered {
                flush_every_ms: 100,
            })
            .open()?;
        let sync = SyncEngine::builder(replica.clone(), remote.clone())
            .with_workspaces([ws])
            .with_interval(None)
            // The demo decides when each replica is online: no sync on its own
            // after local commits (else "offline" edits could sync early).
            .with_debounce(Duration::from_secs(24 * 3600))
            .with_live_updates(false)
            .with_sync_on_start(false)
            .spawn();
        peers.push(Peer {
            name,
            replica,
            sync,
        });
    }
    let (alice, bob, carol) = (&peers[0].replica, &peers[1].replica, &peers[2].replica);

    // 1. Alice sets up the workspace; everyone syncs.
    let t1 = alice.create(
        ws,
        &tasks()?,
        &Task {
            title: "Write the spec".into(),
            done: false,
            assignee: "alice".into(),
        },
    )?;
    let t2 = alice.create(
        ws,
        &tasks()?,
        &Task {
            title: "Review the API".into(),
            done: false,
            assignee: "bob".into(),
        },
    )?;
    let t3 = alice.create(
        ws,
        &tasks()?,
        &Task {
            title: "Old idea".into(),
            done: false,
            assignee: "carol".into(),
        },
    )?;
    let note = alice.create_json(
        ws,
        &notes()?,
        &json!({"title": "Meeting notes", "likes": 0}),
    )?;
    alice.transact(&note, |tx, data| {
        let body = tx.put_object(data, "body", ObjType::Text)?;
        tx.splice_text(&body, 0, 0, "Agenda: sync.")?;
        tx.put(data, "likes", ScalarValue::counter(0))
    })?;
    sync_round(&peers).await?;

    // 2. Offline edits.
    alice.update::<Task>(&t1, |t| t.title = "Write the spec (v2)".into())?;
    bob.update::<Task>(&t1, |t| t.title = "Write the spec, with examples".into())?;
    carol.update::<Task>(&t2, |t| t.done = true)?;
    carol.delete(&t3)?;
    for (r, text) in [(alice, " Alice: push first."), (bob, " Bob: then pull.")] {
        r.transact(&note, |tx, data| {
            let (_, body) = tx
                .get(data, "body")?
                .ok_or(automerge::AutomergeError::InvalidObjId("body".into()))?;
            let len = tx.length(&body);
            tx.splice_text(&body, len, 0, text)?;
            Ok(())
        })?;
    }
    bob.transact(&note, |tx, data| tx.increment(data, "likes", 1))?;
    carol.transact(&note, |tx, data| tx.increment(data, "likes", 1))?;
    let counter = alice.create_json(ws, &notes()?, &json!({"title": "Burst", "n": 0}))?;
    for i in 0..opts.burst {
        alice.patch_json(&counter, &json!({ "n": i + 1 }))?;
    }

    // 3. Online: sync until quiescent, with progress.
    let total: u64 = peers
        .iter()
        .map(|p| p.replica.pending() as u64)
        .sum::<u64>()
        * 3;
    let moved = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watchers: Vec<_> = peers
        .iter()
        .map(|p| {
            let mut ev = p.sync.events();
            let moved = moved.clone();
            let progress = opts.progress.clone();
            tokio::spawn(async move {
                let mut last = 0u64;
                while let Ok(e) = ev.recv().await {
                    let n = match e {
                        crate::sync::SyncEvent::Progress(SyncProgress::Pushed { done, .. }) => {
                            done as u64
                        }
                        crate::sync::SyncEvent::Progress(SyncProgress::Pulled {
                            changes, ..
                        }) => changes as u64,
                        crate::sync::SyncEvent::Finished(_) => {
                            last = 0;
                            continue;
                        }
                        _ => continue,
                    };
                    let delta = n.saturating_sub(last);
                    last = n;
                    let now = moved.fetch_add(delta, std::sync::atomic::Ordering::Relaxed) + delta;
                    if let Some(p) = &progress {
                        p(DemoProgress { done: now, total });
                    }
                }
            })
        })
        .collect();
    let sync_started = Instant::now();
    let mut reports = sync_round(&peers).await?;
    let second = sync_round(&peers).await?;
    for (r, s) in reports.iter_mut().zip(second) {
        r.pulled += s.pulled;
        r.applied += s.applied;
        r.pushed += s.pushed;
    }
    let sync_ms = sync_started.elapsed().as_millis() as u64;
    for w in watchers {
        w.abort();
    }
    let changes_synced: u64 = reports.iter().map(|r| (r.pushed + r.applied) as u64).sum();

    // 4. Conflicts: every replica sees the same ones; resolve each by
    // keeping the LWW winner explicitly (a causally later write).
    let mut conflicts = Vec::new();
    for id in [t1, t2, note] {
        for c in alice.conflicts(&id)? {
            let winner = c
                .candidates
                .get(c.winner)
                .map(|w| w.value.clone())
                .unwrap_or(Json::Null);
            alice.resolve(&id, &c.path, &winner)?;
            conflicts.push(ConflictReport {
                id: id.to_string(),
                resolution: format!(
                    "alice kept {winner} for {}: resolve() wrote it as a new, causally later value",
                    c.path
                ),
                conflict: c,
            });
        }
    }
    sync_round(&peers).await?;
    sync_round(&peers).await?;

    // 5. Live: every replica stays online on live updates; Alice's edits
    // appear on the others' replicas without anyone syncing.
    let live = live_edits(&mut peers, &remote, ws, t2).await?;

    // 6. Converged?
    let (converged, states, entities) = compare(&peers, &ws)?;
    for p in &peers {
        p.sync.shutdown().await;
    }
    let secs = (sync_ms as f64 / 1000.0).max(1e-6);
    Ok(DemoReport {
        backend,
        converged,
        replicas: peers.len(),
        entities,
        changes_synced,
        conflicts,
        elapsed_ms: started.elapsed().as_millis() as u64,
        sync_ms,
        changes_per_sec: changes_synced as f64 / secs,
        states,
        reports,
        live,
    })
}

/// Edits the live part makes.
const LIVE_EDITS: usize = 5;
/// How long the live part waits for one edit (a guard, far above the
/// expected milliseconds).
const LIVE_WAIT: Duration = Duration::from_secs(30);

async fn live_edits(
    peers: &mut [Peer],
    remote: &Arc<dyn Remote>,
    ws: WorkspaceId,
    doc: DocId,
) -> Result<Option<LiveReport>, DemoError> {
    if remote.live_updates().is_none() {
        return Ok(None);
    }
    for p in peers.iter_mut() {
        p.sync.shutdown().await;
        p.sync = SyncEngine::builder(p.replica.clone(), remote.clone())
            .with_workspaces([ws])
            .with_debounce(Duration::from_millis(1))
            .with_interval(Some(Duration::from_secs(3600)))
            .with_live_interval(Some(Duration::from_secs(3600)))
            .spawn();
    }
    for p in peers.iter() {
        let mut st = p.sync.status();
        let joined = st.wait_for(|s| s.live.as_ref().is_some_and(|l| l.is_live()));
        if tokio::time::timeout(LIVE_WAIT, joined).await.is_err() {
            return Err(live_timeout(p, 0));
        }
    }
    let mut delays_ms = Vec::new();
    let (first, others) = peers.split_first().ok_or(DemoError::Sync {
        peer: "alice",
        source: SyncError::Stopped,
    })?;
    for edit in 1..=LIVE_EDITS {
        let title = format!("Review the API (live edit {edit})");
        let mut waits = Vec::new();
        for p in others {
            let mut events = p.sync.events();
            let replica = p.replica.clone();
            let want = title.clone();
            waits.push(tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(crate::sync::SyncEvent::DocChanged {
                            id,
                            origin: crate::replica::Origin::Remote,
                        }) if id == doc => {
                            let at = Instant::now();
                            let v = replica.get_json(&doc).ok();
                            if v.as_ref().and_then(|v| v["title"].as_str()) == Some(&want) {
                                return Some(at);
                            }
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }));
        }
        let start = Instant::now();
        first.replica.patch_json(&doc, &json!({ "title": title }))?;
        for (p, w) in others.iter().zip(waits) {
            let arrived = tokio::time::timeout(LIVE_WAIT, w).await;
            match arrived {
                Ok(Ok(Some(at))) => delays_ms.push((at - start).as_secs_f64() * 1000.0),
                _ => return Err(live_timeout(p, edit)),
            }
        }
    }
    let mut sorted = delays_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median_ms = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let max_ms = sorted.last().copied().unwrap_or(0.0);
    Ok(Some(LiveReport {
        edits: LIVE_EDITS,
        delays_ms,
        median_ms,
        max_ms,
    }))
}

fn live_timeout(p: &Peer, edit: usize) -> DemoError {
    DemoError::LiveTimeout {
        peer: p.name,
        edit,
        waited_s: LIVE_WAIT.as_secs(),
        status: format!("{:?}", p.sync.status().borrow().live),
    }
}

async fn sync_round(peers: &[Peer]) -> Result<Vec<SyncReport>, DemoError> {
    let mut out = Vec::new();
    for p in peers {
        let r = p.sync.sync_now().await.map_err(|source| DemoError::Sync {
            peer: p.name,
            source,
        })?;
        out.push(r);
    }
    Ok(out)
}

fn compare(peers: &[Peer], ws: &WorkspaceId) -> Result<(bool, Vec<ReplicaState>, usize)> {
    let mut converged = true;
    let mut states = Vec::new();
    let mut ids: std::collections::BTreeSet<DocId> = Default::default();
    for p in peers {
        for c in [tasks()?, notes()?] {
            ids.extend(p.replica.list(&c)?);
        }
        ids.extend(p.replica.documents(ws)?);
    }
    let first = &peers[0].replica;
    for id in &ids {
        let heads = first.heads(id).ok();
        let json = first.get_json(id).ok();
        for p in &peers[1..] {
            if p.replica.heads(id).ok() != heads || p.replica.get_json(id).ok() != json {
                converged = false;
            }
        }
    }
    let mut live = 0;
    for p in peers {
        let mut entities = std::collections::BTreeMap::new();
        for c in [tasks()?, notes()?] {
            for id in p.replica.list(&c)? {
                entities.insert(id.to_string(), p.replica.get_json(&id)?);
            }
        }
        live = entities.len();
        states.push(ReplicaState {
            name: p.name.into(),
            entities,
        });
    }
    Ok((converged, states, live))
}

/// Renders the report for a person.
pub fn render(r: &DemoReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "supamerge demo: {} replicas, one workspace, {}\n",
        r.replicas, r.backend
    );
    for st in &r.states {
        let _ = writeln!(s, "== {} ({} entities)", st.name, st.entities.len());
        for (id, v) in &st.entities {
            let _ = writeln!(s, "   {id}  {v}");
        }
    }
    let _ = writeln!(
        s,
        "\nconflicts found after the offline edits: {}",
        r.conflicts.len()
    );
    for c in &r.conflicts {
        let _ = writeln!(s, "   {} {}", c.id, c.conflict.path);
        for (i, cand) in c.conflict.candidates.iter().enumerate() {
            let mark = if i == c.conflict.winner {
                "wins"
            } else {
                "    "
            };
            let _ = writeln!(
                s,
                "     {mark} {}  (actor {}…, hlc {})",
                cand.value,
                &cand.actor[..8.min(cand.actor.len())],
                cand.timestamp
            );
        }
        let _ = writeln!(s, "     resolved: {}", c.resolution);
    }
    let _ = writeln!(
        s,
        "\nsync after coming online: {} changes in {} ms ({:.0} changes/s)",
        r.changes_synced, r.sync_ms, r.changes_per_sec
    );
    if let Some(l) = &r.live {
        let _ = writeln!(
            s,
            "live: {} edits on alice's replica appeared on bob's and carol's with nobody calling sync, {:.1} ms median after the commit (max {:.1} ms)",
            l.edits, l.median_ms, l.max_ms
        );
    }
    let _ = writeln!(
        s,
        "converged: {} (identical heads and JSON for every entity on every replica)",
        if r.converged { "yes" } else { "NO" }
    );
    let _ = writeln!(s, "total time: {} ms", r.elapsed_ms);
    s
}
