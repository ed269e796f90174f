//! The shared harness of the property tests: case counts, a world of
//! replicas on one backend, a readable action language, quiescence and the
//! convergence assertions of DESIGN.md §2 (invariants 1–5).
//!
//! Every property test binary includes this module with `mod common;` and uses
//! a part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use automerge::transaction::Transactable;
use automerge::{ChangeHash, ObjType, ReadDoc, ScalarValue};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use serde_json::{json, Value as Json};
use supamerge::test_util::sim::{AtBudget, NetConfig, PassEnd, Sim, SimNodes, SimStats};
use supamerge::{
    Collection, Conflict, DocId, EntityError, Error, LocalHub, ManualClock, Migration, Remote,
    Replica, SyncConfig, SyncPort, WorkspaceId,
};

// ----- configuration -------------------------------------------------------

/// The number of cases: `PROPTEST_CASES` when set, `default` otherwise (an
/// explicit `cases` in a config would override proptest's own env lookup).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A proptest config with `cases(default)` cases whose failing seeds are kept
/// in `regressions` (a path relative to the crate root, under
/// `proptest-regressions/`).
pub fn config(default: u32, regressions: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        // Shrinking replays whole worlds: bound it so a failure reports in
        // minutes, not hours.
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

/// Runs a property with proptest (random cases, persisted seeds, shrinking);
/// on failure, shrinks the counterexample further with `minimize` (proptest
/// deletes each element of a vector once, left to right; an action list,
/// where actions depend on what came before, needs repeated passes) and
/// fails with both.
pub fn check<T, S>(
    cfg: ProptestConfig,
    strategy: S,
    test: impl Fn(&T),
    minimize: impl Fn(T, &dyn Fn(&T) -> bool) -> T,
) where
    T: std::fmt::Debug + Clone,
    S: Strategy<Value = T>,
{
    let mut runner = proptest::test_runner::TestRunner::new(cfg);
    let result = runner.run(&strategy, |v| {
        test(&v);
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(proptest::test_runner::TestError::Fail(reason, value)) => {
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let fails =
                |v: &T| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(v))).is_err();
            let min = minimize(value.clone(), &fails);
            std::panic::set_hook(hook);
            // Replay the minimal case with the hook back, for its message.
            let msg = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&min)))
                .err()
                .map(|e| {
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default()
                })
                .unwrap_or_else(|| "(passed on replay: flaky?)".into());
            panic!(
                "property failed: {reason}\nproptest's shrunk input: {value:#?}\n\n\
                 minimal failing input: {min:#?}\nwhich fails with: {msg}\n{runner}"
            );
        }
        Err(e) => panic!("{e}\n{runner}"),
    }
}

/// Repeated deletion passes (halving chunk sizes) over the actions, dropping
/// unused replicas and zeroing clock offsets, until nothing more goes while
/// the scenario still fails (bounded number of runs).
pub fn minimize_scenario(mut s: Scenario, fails: &dyn Fn(&Scenario) -> bool) -> Scenario {
    let mut budget = 400usize;
    let try_it = |c: &Scenario, budget: &mut usize| {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        fails(c)
    };
    loop {
        let mut progress = false;
        // Fewer replicas.
        let mut r = s.offsets.len();
        while r > 0 && s.offsets.len() > 2 {
            r -= 1;
            if let Some(c) = s.without_replica(r) {
                if try_it(&c, &mut budget) {
                    s = c;
                    progress = true;
                }
            }
        }
        // Fewer actions.
        let mut k = (s.actions.len() / 2).max(1);
        loop {
            let mut i = 0;
            while i < s.actions.len() {
                let mut c = s.clone();
                c.actions.drain(i..(i + k).min(s.actions.len()));
                if try_it(&c, &mut budget) {
                    s = c;
                    progress = true;
                } else {
                    i += k;
                }
            }
            if k == 1 {
                break;
            }
            k /= 2;
        }
        // No clock skew.
        for i in 0..s.offsets.len() {
            if s.offsets[i] != 0 {
                let mut c = s.clone();
                c.offsets[i] = 0;
                if try_it(&c, &mut budget) {
                    s = c;
                    progress = true;
                }
            }
        }
        if !progress || budget == 0 {
            return s;
        }
    }
}

/// A single-threaded tokio runtime for one case (blocking work still goes to
/// tokio's blocking pool).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ----- the action language ---------------------------------------------------

/// Entity slots: the few shared entities of a world. A slot gets its id when
/// some replica first creates it.
pub const SLOTS: usize = 3;

/// The scalar keys of an entity (the structured ones are `body`, `tags`,
/// `likes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Title,
    Done,
    Prio,
    Note,
}

impl Key {
    pub fn as_str(self) -> &'static str {
        match self {
            Key::Title => "title",
            Key::Done => "done",
            Key::Prio => "prio",
            Key::Note => "note",
        }
    }
}

/// A scalar value.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(&'static str),
    Int(i64),
    Bool(bool),
    Null,
}

impl Scalar {
    pub fn json(&self) -> Json {
        match self {
            Scalar::Str(s) => json!(s),
            Scalar::Int(i) => json!(i),
            Scalar::Bool(b) => json!(b),
            Scalar::Null => Json::Null,
        }
    }

    fn automerge(&self) -> ScalarValue {
        match self {
            Scalar::Str(s) => ScalarValue::Str((*s).into()),
            Scalar::Int(i) => ScalarValue::Int(*i),
            Scalar::Bool(b) => ScalarValue::Boolean(*b),
            Scalar::Null => ScalarValue::Null,
        }
    }
}

/// The network and process faults of a simulated sync round
/// (`supamerge::test_util::sim::NetConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Faults {
    /// Delays only (messages overtake each other).
    Calm,
    /// Lost requests and responses, duplicates, 503s, partitions, clock
    /// jumps.
    Lossy,
    /// All of that, and processes that die at effect boundaries.
    Chaos,
}

impl Faults {
    pub fn net(self) -> NetConfig {
        match self {
            Faults::Calm => NetConfig::calm(),
            Faults::Lossy => NetConfig::lossy(),
            Faults::Chaos => NetConfig::chaos(),
        }
    }
}

/// How a conflict is resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// `resolve(path, value)`.
    Value(Scalar),
    /// `keep_local(path)`.
    Local,
    /// `keep_remote(path)`.
    Remote,
}

/// One step of a scenario. `r` is a replica index, `slot` an entity slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Creates the entity of `slot` (when nobody has yet).
    Create { r: usize, slot: usize },
    /// Writes a scalar to a shared key (a JSON merge patch; `Null` as a raw
    /// put, since a merge patch's null deletes).
    Put {
        r: usize,
        slot: usize,
        key: Key,
        value: Scalar,
    },
    /// Deletes a scalar key.
    DeleteKey { r: usize, slot: usize, key: Key },
    /// Inserts into the `tags` list (index modulo length + 1).
    ListInsert {
        r: usize,
        slot: usize,
        at: usize,
        value: i64,
    },
    /// Deletes from the `tags` list (index modulo length).
    ListDelete { r: usize, slot: usize, at: usize },
    /// Splices the `body` text (positions modulo length).
    Splice {
        r: usize,
        slot: usize,
        at: usize,
        del: usize,
        text: &'static str,
    },
    /// Increments the `likes` counter.
    Increment { r: usize, slot: usize, by: i64 },
    /// Deletes the entity (tombstone).
    DeleteEntity { r: usize, slot: usize },
    /// Resolves a conflict on a scalar key (when there is one here) with the
    /// conflict API.
    Resolve {
        r: usize,
        slot: usize,
        key: Key,
        choice: Choice,
    },
    /// Runs the registered schema migrations (the same on every replica) on
    /// the entity, when the replica has it (deleted or not).
    Migrate { r: usize, slot: usize },
    /// Replica `r` runs a pass (the product's sync core through the
    /// simulated network, no faults) that ends after `effects` effects (a
    /// replica call run or a remote call answered): cancelled there, or its
    /// process dies there (`crash`: then it restarts). One push batch, one
    /// page, a crash right after an answer arrived and before what it said
    /// was persisted, ...
    Cut {
        r: usize,
        effects: usize,
        crash: bool,
    },
    /// A whole sync pass of replica `r` (calm network).
    Sync { r: usize },
    /// Replica `r` pulls without pushing first (calm network), as its
    /// engine does on a live nudge: whatever its outbox holds stays there,
    /// also through a re-bootstrap.
    PullOnly { r: usize },
    /// Every replica runs a pass at the same time (calm network).
    SyncAll,
    /// The replicas of `mask` (bit i: replica i) run a pass at the same
    /// time through the simulated network with `faults`, every choice drawn
    /// from `seed`.
    Net { mask: u8, seed: u64, faults: Faults },
    /// Drops replica `r` (whatever it was doing is lost) and reopens it from
    /// its directory (same device, new actor id, as every open does).
    Restart { r: usize },
    /// Moves replica `r`'s clock back by `ms`.
    ClockBack { r: usize, ms: i64 },
    /// The server prunes every change already folded into its document's
    /// snapshot (horizon 0), when the world has a [`Pruner`]: replicas
    /// whose cursor is now behind re-bootstrap from the snapshots.
    Prune,
}

pub fn key() -> impl Strategy<Value = Key> {
    // Skewed, so concurrent writes of one field (conflicts) are common.
    prop_oneof![
        4 => Just(Key::Title),
        2 => Just(Key::Prio),
        1 => Just(Key::Done),
        1 => Just(Key::Note)
    ]
}

pub fn scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "c"]).prop_map(Scalar::Str),
        (-3i64..4).prop_map(Scalar::Int),
        any::<bool>().prop_map(Scalar::Bool),
        Just(Scalar::Null),
    ]
}

fn faults() -> impl Strategy<Value = Faults> {
    prop_oneof![
        1 => Just(Faults::Calm),
        2 => Just(Faults::Lossy),
        2 => Just(Faults::Chaos),
    ]
}

/// Entity edits only (no sync, no faults).
pub fn edit(n: usize) -> impl Strategy<Value = Action> {
    let r = 0..n;
    let slot = 0..SLOTS;
    prop_oneof![
        3 => (r.clone(), slot.clone()).prop_map(|(r, slot)| Action::Create { r, slot }),
        6 => (r.clone(), slot.clone(), key(), scalar())
            .prop_map(|(r, slot, key, value)| Action::Put { r, slot, key, value }),
        1 => (r.clone(), slot.clone(), key()).prop_map(|(r, slot, key)| Action::DeleteKey { r, slot, key }),
        2 => (r.clone(), slot.clone(), 0usize..8, 0i64..10)
            .prop_map(|(r, slot, at, value)| Action::ListInsert { r, slot, at, value }),
        1 => (r.clone(), slot.clone(), 0usize..8).prop_map(|(r, slot, at)| Action::ListDelete { r, slot, at }),
        2 => (r.clone(), slot.clone(), 0usize..8, 0usize..3, prop::sample::select(vec!["x", "yz", ""]))
            .prop_map(|(r, slot, at, del, text)| Action::Splice { r, slot, at, del, text }),
        2 => (r.clone(), slot.clone(), -2i64..4).prop_map(|(r, slot, by)| Action::Increment { r, slot, by }),
        1 => (r.clone(), slot.clone()).prop_map(|(r, slot)| Action::DeleteEntity { r, slot }),
        2 => (r.clone(), slot.clone()).prop_map(|(r, slot)| Action::Migrate { r, slot }),
        2 => (r, slot, key(), prop_oneof![
                scalar().prop_map(Choice::Value),
                Just(Choice::Local),
                Just(Choice::Remote)
            ])
            .prop_map(|(r, slot, key, choice)| Action::Resolve { r, slot, key, choice }),
    ]
}

/// Any action: edits, partial and whole passes, simulated networks with
/// faults, restarts, clock moves.
pub fn action(n: usize) -> impl Strategy<Value = Action> {
    let r = 0..n;
    let all = (1u8 << n) - 1;
    prop_oneof![
        14 => edit(n),
        4 => (r.clone(), 1usize..12, any::<bool>())
            .prop_map(|(r, effects, crash)| Action::Cut { r, effects, crash }),
        3 => r.clone().prop_map(|r| Action::Sync { r }),
        2 => r.clone().prop_map(|r| Action::PullOnly { r }),
        1 => Just(Action::SyncAll),
        4 => (1u8..=all, any::<u64>(), faults())
            .prop_map(|(mask, seed, faults)| Action::Net { mask, seed, faults }),
        1 => r.clone().prop_map(|r| Action::Restart { r }),
        1 => (r, 1i64..3_600_000).prop_map(|(r, ms)| Action::ClockBack { r, ms }),
        3 => Just(Action::Prune),
    ]
}

/// A world size, per-replica clock offsets (±1 h) and an action list.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub offsets: Vec<i64>,
    pub actions: Vec<Action>,
}

impl Action {
    /// The replica the action is about (`None`: every replica).
    pub fn replica(&self) -> Option<usize> {
        self.clone().replica_mut().map(|r| *r)
    }

    /// The same action about replica `to`.
    pub fn with_replica(&self, to: usize) -> Action {
        let mut a = self.clone();
        if let Some(r) = a.replica_mut() {
            *r = to;
        }
        a
    }

    fn replica_mut(&mut self) -> Option<&mut usize> {
        match self {
            Action::Create { r, .. }
            | Action::Put { r, .. }
            | Action::DeleteKey { r, .. }
            | Action::ListInsert { r, .. }
            | Action::ListDelete { r, .. }
            | Action::Splice { r, .. }
            | Action::Increment { r, .. }
            | Action::DeleteEntity { r, .. }
            | Action::Resolve { r, .. }
            | Action::Migrate { r, .. }
            | Action::Cut { r, .. }
            | Action::Sync { r }
            | Action::PullOnly { r }
            | Action::Restart { r }
            | Action::ClockBack { r, .. } => Some(r),
            Action::SyncAll | Action::Net { .. } | Action::Prune => None,
        }
    }
}

impl Scenario {
    /// The scenario without replica `gone` and its actions (`None` when
    /// fewer than two replicas would remain).
    pub fn without_replica(&self, gone: usize) -> Option<Scenario> {
        if self.offsets.len() <= 2 {
            return None;
        }
        let mut offsets = self.offsets.clone();
        offsets.remove(gone);
        let actions = self
            .actions
            .iter()
            .filter_map(|a| match a.replica() {
                None => match a {
                    // Drop the replica's bit, shift the higher ones down.
                    Action::Net { mask, seed, faults } => {
                        let low = mask & ((1u8 << gone) - 1);
                        let high = (mask >> (gone + 1)) << gone;
                        let mask = low | high;
                        (mask != 0).then_some(Action::Net {
                            mask,
                            seed: *seed,
                            faults: *faults,
                        })
                    }
                    _ => Some(a.clone()),
                },
                Some(r) if r == gone => None,
                Some(r) if r > gone => Some(a.with_replica(r - 1)),
                _ => Some(a.clone()),
            })
            .collect();
        Some(Scenario { offsets, actions })
    }
}

pub fn scenario(
    replicas: std::ops::RangeInclusive<usize>,
    len: std::ops::Range<usize>,
    act: fn(usize) -> BoxedStrategy<Action>,
) -> impl Strategy<Value = Scenario> {
    replicas.prop_flat_map(move |n| {
        (
            prop::collection::vec(-3_600_000i64..=3_600_000, n),
            prop::collection::vec(act(n), len.clone()),
        )
            .prop_map(|(offsets, actions)| Scenario { offsets, actions })
    })
}

pub fn any_action(n: usize) -> BoxedStrategy<Action> {
    action(n).boxed()
}

pub fn edit_or_sync(n: usize) -> BoxedStrategy<Action> {
    prop_oneof![
        6 => edit(n),
        1 => (0..n).prop_map(|r| Action::Sync { r }),
        2 => (0..n, 1usize..12).prop_map(|(r, effects)| Action::Cut { r, effects, crash: false }),
    ]
    .boxed()
}

// ----- backends ---------------------------------------------------------------

/// What a backend stores, for "stored exactly once".
#[async_trait]
pub trait Stored: Send + Sync {
    /// Every stored (doc, hash) of `ws`, one row per stored copy.
    async fn stored(&self, ws: &WorkspaceId) -> Vec<(DocId, ChangeHash)>;
}

#[async_trait]
impl Stored for LocalHub {
    /// The changes in the log and those pruned (folded into snapshots).
    async fn stored(&self, ws: &WorkspaceId) -> Vec<(DocId, ChangeHash)> {
        let mut all = self.stored_hashes(ws).expect("list hub changes");
        all.extend(self.pruned_hashes(ws).expect("list hub pruned changes"));
        all
    }
}

/// A backend that can prune its change log (the operator's compaction).
#[async_trait]
pub trait Pruner: Send + Sync {
    /// Prunes every change of `ws` folded into its document's snapshot
    /// (horizon 0); returns how many.
    async fn prune(&self, ws: &WorkspaceId) -> usize;
}

#[async_trait]
impl Pruner for LocalHub {
    async fn prune(&self, ws: &WorkspaceId) -> usize {
        LocalHub::prune(self, Some(ws)).expect("hub prune").pruned
    }
}

/// A fresh workspace id.
pub fn new_workspace() -> WorkspaceId {
    WorkspaceId::from_random(rand::random())
}

pub fn collection() -> Collection {
    Collection::new("tasks").expect("collection name")
}

// ----- migrations --------------------------------------------------------------

/// The schema version the registered migrations lead to.
pub const MIGRATIONS: u64 = 2;

/// The migrations every replica registers: v1 adds a field, v2 writes a
/// field users write too (it loses to their concurrent writes).
pub fn migrations() -> Vec<Migration> {
    vec![
        Migration::new(collection(), 1, |tx, data| tx.put(data, "status", "open")),
        Migration::new(collection(), 2, |tx, data| tx.put(data, "prio", 1)),
    ]
}

// ----- the world -----------------------------------------------------------------

/// A replica with its directory, clock and remote.
pub struct Node {
    pub path: PathBuf,
    /// `None` only inside a restart.
    pub replica: Option<Replica>,
    /// The backend as this replica's user.
    pub base: Arc<dyn Remote>,
    pub clock: ManualClock,
    /// Clock offset from the world's time (skew).
    pub offset: i64,
    /// Opens so far (seeds the actor id, so failures replay exactly).
    pub opens: u64,
    pub index: usize,
}

impl Node {
    pub fn replica(&self) -> &Replica {
        self.replica.as_ref().expect("replica is open")
    }

    fn open(&mut self) {
        self.opens += 1;
        // The simulation runs every replica call inline: nothing else holds
        // the directory when a node restarts.
        let mut builder = Replica::builder(&self.path);
        for m in migrations() {
            builder = builder.with_migration(m);
        }
        let replica = builder
            .with_clock(Arc::new(self.clock.clone()))
            .with_seed((self.index as u64) << 32 | self.opens)
            .open()
            .unwrap_or_else(|e| panic!("open replica {}: {e}", self.index));
        self.replica = Some(replica);
    }
}

/// Several replicas sharing one workspace on one backend.
pub struct World {
    _dir: tempfile::TempDir,
    pub ws: WorkspaceId,
    pub nodes: Vec<Node>,
    pub slots: [Option<DocId>; SLOTS],
    /// Every change a replica reported as committed.
    pub committed: BTreeSet<(DocId, ChangeHash)>,
    /// The world's time (ms); every replica's clock is this plus its offset.
    pub now: i64,
    pub cfg: SyncConfig,
    /// What the simulated sync rounds did (passes, faults, crashes).
    pub sim: SimStats,
    /// The backend's compaction, for [`Action::Prune`] (none: a no-op).
    pub pruner: Option<Arc<dyn Pruner>>,
    /// Changes pruned so far.
    pub pruned: usize,
}

const START_MS: i64 = 1_790_000_000_000;

impl World {
    /// `remotes.len()` replicas (replica `i` talks through `remotes[i]`) with
    /// the given clock offsets, in workspace `ws`.
    pub fn new(ws: WorkspaceId, remotes: Vec<Arc<dyn Remote>>, offsets: &[i64]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes = remotes
            .into_iter()
            .enumerate()
            .map(|(i, base)| {
                let offset = offsets.get(i).copied().unwrap_or(0);
                let mut node = Node {
                    path: dir.path().join(format!("replica-{i}")),
                    replica: None,
                    base,
                    clock: ManualClock::new(START_MS + offset),
                    offset,
                    opens: 0,
                    index: i,
                };
                node.open();
                node
            })
            .collect();
        Self {
            _dir: dir,
            ws,
            nodes,
            slots: [None; SLOTS],
            committed: BTreeSet::new(),
            now: START_MS,
            cfg: SyncConfig {
                push_max_count: 3,
                pull_limit: 3,
                // Two pages per apply: a crash can land between pages that
                // are received but not yet applied.
                apply_batch_changes: 4,
                // Snapshots and bootstrap take part too.
                snapshot_threshold: 6,
                ..SyncConfig::default()
            },
            sim: SimStats::default(),
            pruner: None,
            pruned: 0,
        }
    }

    /// The world with a backend that prunes on [`Action::Prune`].
    pub fn with_pruner(mut self, pruner: Arc<dyn Pruner>) -> Self {
        self.pruner = Some(pruner);
        self
    }

    fn tick(&mut self) {
        self.now += 17;
        for n in &self.nodes {
            n.clock.set(self.now + n.offset);
        }
    }

    /// Runs `f` as a local transaction of replica `r` on the entity in
    /// `slot` (when the replica has it) and records the change.
    fn edit(
        &mut self,
        r: usize,
        slot: usize,
        what: &str,
        f: impl FnOnce(
            &mut automerge::transaction::Transaction<'_>,
            &automerge::ObjId,
        ) -> Result<(), automerge::AutomergeError>,
    ) {
        let Some(id) = self.editable(r, slot) else {
            return;
        };
        let (_, h) = self.nodes[r]
            .replica()
            .transact(&id, f)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        self.commit(id, h);
    }

    fn commit(&mut self, id: DocId, hash: Option<ChangeHash>) {
        if let Some(h) = hash {
            self.committed.insert((id, h));
        }
    }

    /// Replica `r` creates the entity of `slot`: a JSON object with scalar
    /// keys, then a text, a list and a counter.
    fn create(&mut self, r: usize, slot: usize) -> DocId {
        let rep = self.nodes[r].replica().clone();
        let id = rep
            .create_json(
                self.ws,
                &collection(),
                &json!({"title": format!("slot {slot}"), "prio": 0}),
            )
            .expect("create");
        let heads = rep.heads(&id).expect("heads");
        assert_eq!(heads.len(), 1, "a new entity has one change");
        self.commit(id, Some(heads[0]));
        let (_, h) = rep
            .transact(&id, |tx, data| {
                let body = tx.put_object(data, "body", ObjType::Text)?;
                tx.splice_text(&body, 0, 0, "ab")?;
                tx.put_object(data, "tags", ObjType::List)?;
                tx.put(data, "likes", ScalarValue::counter(0))?;
                Ok(())
            })
            .expect("structure");
        self.commit(id, h);
        self.slots[slot] = Some(id);
        id
    }

    /// The entity of `slot` when replica `r` can edit it (it exists there
    /// and is not deleted). An edit of a slot nobody created yet creates it
    /// first (squeezing random input into a valid action).
    fn editable(&mut self, r: usize, slot: usize) -> Option<DocId> {
        let Some(id) = self.slots[slot] else {
            return Some(self.create(r, slot));
        };
        match self.nodes[r].replica().get_json(&id) {
            Ok(_) => Some(id),
            Err(Error::Entity(EntityError::NotFound { .. } | EntityError::Deleted { .. })) => None,
            Err(e) => panic!("replica {r}: reading {id}: {e}"),
        }
    }

    /// Applies one action. Edits that do not apply (the entity is not there
    /// yet, or deleted) are skipped; sync failures are expected under faults.
    pub async fn step(&mut self, a: &Action) {
        self.tick();
        match a {
            Action::Create { r, slot } => {
                if self.slots[*slot].is_none() {
                    self.create(*r, *slot);
                }
            }
            Action::Put {
                r,
                slot,
                key,
                value,
            } => {
                let Some(id) = self.editable(*r, *slot) else {
                    return;
                };
                let rep = self.nodes[*r].replica();
                let h = if *value == Scalar::Null {
                    let v = value.automerge();
                    rep.transact(&id, |tx, data| tx.put(data, key.as_str(), v))
                        .expect("put null")
                        .1
                } else {
                    rep.patch_json(&id, &json!({ key.as_str(): value.json() }))
                        .expect("patch")
                };
                self.commit(id, h);
            }
            Action::DeleteKey { r, slot, key } => {
                self.edit(*r, *slot, "delete key", |tx, data| {
                    if tx.get(data, key.as_str())?.is_some() {
                        tx.delete(data, key.as_str())?;
                    }
                    Ok(())
                });
            }
            Action::ListInsert { r, slot, at, value } => {
                self.edit(*r, *slot, "list insert", |tx, data| {
                    if let Some((_, tags)) = tx.get(data, "tags")? {
                        let i = at % (tx.length(&tags) + 1);
                        tx.insert(&tags, i, *value)?;
                    }
                    Ok(())
                });
            }
            Action::ListDelete { r, slot, at } => {
                self.edit(*r, *slot, "list delete", |tx, data| {
                    if let Some((_, tags)) = tx.get(data, "tags")? {
                        let len = tx.length(&tags);
                        if len > 0 {
                            tx.delete(&tags, at % len)?;
                        }
                    }
                    Ok(())
                });
            }
            Action::Splice {
                r,
                slot,
                at,
                del,
                text,
            } => {
                self.edit(*r, *slot, "splice", |tx, data| {
                    if let Some((_, body)) = tx.get(data, "body")? {
                        let len = tx.length(&body);
                        let pos = at % (len + 1);
                        let del = (*del).min(len - pos);
                        tx.splice_text(&body, pos, del as isize, text)?;
                    }
                    Ok(())
                });
            }
            Action::Increment { r, slot, by } => {
                self.edit(*r, *slot, "increment", |tx, data| {
                    if tx.get(data, "likes")?.is_some() {
                        tx.increment(data, "likes", *by)?;
                    }
                    Ok(())
                });
            }
            Action::DeleteEntity { r, slot } => {
                let Some(id) = self.editable(*r, *slot) else {
                    return;
                };
                let h = self.nodes[*r].replica().delete(&id).expect("delete");
                self.commit(id, Some(h));
            }
            Action::Resolve {
                r,
                slot,
                key,
                choice,
            } => {
                let Some(id) = self.editable(*r, *slot) else {
                    return;
                };
                let rep = self.nodes[*r].replica().clone();
                // The key's conflict, else the first conflict there is
                // (else the key: refused as not conflicted).
                let mut path = format!("/{}", key.as_str());
                let conflicts = rep.conflicts(&id).expect("conflicts");
                if !conflicts.iter().any(|c| c.path == path) {
                    if let Some(c) = conflicts.first() {
                        path = c.path.clone();
                    }
                }
                let res = match choice {
                    Choice::Value(v) => rep.resolve(&id, &path, &v.json()),
                    Choice::Local => rep.keep_local(&id, &path),
                    Choice::Remote => rep.keep_remote(&id, &path),
                };
                match res {
                    Ok(h) => {
                        self.commit(id, Some(h));
                        let left = rep.conflicts(&id).expect("conflicts");
                        assert!(
                            left.iter().all(|c| c.path != path),
                            "replica {r}: {path} still conflicted after resolving: {left:?}"
                        );
                    }
                    Err(Error::Entity(
                        EntityError::NotConflicted { .. }
                        | EntityError::NoSuchPath { .. }
                        | EntityError::NoCandidate { .. },
                    )) => {}
                    Err(e) => panic!("replica {r}: resolving {path} of {id}: {e}"),
                }
            }
            Action::Migrate { r, slot } => {
                let Some(id) = self.slots[*slot] else {
                    return;
                };
                let rep = self.nodes[*r].replica();
                let before: BTreeSet<ChangeHash> = rep
                    .peek(usize::MAX, usize::MAX)
                    .expect("peek")
                    .iter()
                    .map(|e| e.hash)
                    .collect();
                match rep.migrate(&id) {
                    Ok(v) => assert_eq!(v, MIGRATIONS, "schema version after migrating"),
                    Err(Error::Entity(EntityError::NotFound { .. })) => return,
                    Err(e) => panic!("replica {r}: migrating {id}: {e}"),
                }
                let new: Vec<_> = rep
                    .peek(usize::MAX, usize::MAX)
                    .expect("peek")
                    .into_iter()
                    .filter(|e| !before.contains(&e.hash))
                    .collect();
                for e in new {
                    self.committed.insert((e.doc_id, e.hash));
                }
            }
            Action::Cut { r, effects, crash } => {
                let at = if *crash {
                    AtBudget::Crash
                } else {
                    AtBudget::Cancel
                };
                self.simulate(&[*r], 0, Faults::Calm, Some((*effects, at)))
                    .await;
            }
            Action::Sync { r } => {
                self.simulate(&[*r], 0, Faults::Calm, None).await;
            }
            Action::PullOnly { r } => {
                let (cfg, ws) = (self.cfg.clone(), self.ws);
                let mut sim = Sim::new(0, NetConfig::calm()).pulling_only();
                sim.run_passes(self, &[*r], &cfg, &[ws], None).await;
                self.add_stats(sim.stats());
            }
            Action::SyncAll => {
                let all: Vec<usize> = (0..self.nodes.len()).collect();
                self.simulate(&all, 0, Faults::Calm, None).await;
            }
            Action::Net { mask, seed, faults } => {
                let which: Vec<usize> = (0..self.nodes.len())
                    .filter(|i| mask & (1 << i) != 0)
                    .collect();
                self.simulate(&which, *seed, *faults, None).await;
            }
            Action::Restart { r } => self.restart(*r),
            Action::Prune => {
                if let Some(p) = &self.pruner {
                    self.pruned += p.prune(&self.ws).await;
                }
            }
            Action::ClockBack { r, ms } => {
                self.nodes[*r].offset -= ms;
                self.nodes[*r].clock.set(self.now + self.nodes[*r].offset);
            }
        }
    }

    /// Drops replica `r` and reopens it from the same directory.
    pub fn restart(&mut self, r: usize) {
        let n = &mut self.nodes[r];
        n.replica = None;
        n.open();
    }

    /// Runs every action in order.
    pub async fn run(&mut self, actions: &[Action]) {
        for a in actions {
            self.step(a).await;
        }
    }

    /// Passes of the replicas `which`, at the same time, through a network
    /// simulated with `faults` from `seed` (the product's sync core, stepped
    /// effect by effect). Failures are expected under faults.
    pub async fn simulate(
        &mut self,
        which: &[usize],
        seed: u64,
        faults: Faults,
        budget: Option<(usize, AtBudget)>,
    ) -> Vec<PassEnd> {
        let (cfg, ws) = (self.cfg.clone(), self.ws);
        let mut sim = Sim::new(seed, faults.net());
        let ends = sim.run_passes(self, which, &cfg, &[ws], budget).await;
        self.add_stats(sim.stats());
        ends
    }

    fn add_stats(&mut self, s: &SimStats) {
        self.sim.passes += s.passes;
        self.sim.passes_done += s.passes_done;
        self.sim.passes_failed += s.passes_failed;
        self.sim.crashes += s.crashes;
        self.sim.effects += s.effects;
        self.sim.requests += s.requests;
        self.sim.requests_lost += s.requests_lost;
        self.sim.responses_lost += s.responses_lost;
        self.sim.duplicated += s.duplicated;
        self.sim.server_errors += s.server_errors;
        self.sim.partitioned += s.partitioned;
        self.sim.sim_ms += s.sim_ms;
        self.sim.rebootstraps += s.rebootstraps;
    }

    /// Faults off; passes of every replica, one after the other, until a
    /// whole round moves nothing. Every pass must succeed.
    pub async fn quiesce(&mut self) {
        let (cfg, ws) = (self.cfg.clone(), self.ws);
        let mut sim = Sim::new(0, NetConfig::calm());
        let result = sim.quiesce(self, &cfg, &[ws], 12).await;
        self.add_stats(sim.stats());
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    /// Every document id any replica holds in the workspace, plus the slots.
    pub fn doc_ids(&self) -> BTreeSet<DocId> {
        let mut ids: BTreeSet<DocId> = self.slots.iter().flatten().copied().collect();
        for n in &self.nodes {
            ids.extend(n.replica().documents(&self.ws).expect("read doc records"));
        }
        ids
    }

    /// DESIGN.md §2 after quiescence: identical views everywhere; every
    /// committed change on every replica and stored exactly once; nothing on
    /// the server that no replica has; outboxes, early arrivals and dead
    /// letters empty.
    pub async fn assert_converged(&self, server: &dyn Stored) {
        let ids = self.doc_ids();
        let replicas: Vec<&Replica> = self.nodes.iter().map(Node::replica).collect();
        assert_same_views(&replicas, &ids);
        let mut held = BTreeSet::new();
        for (i, r) in replicas.iter().enumerate() {
            assert_eq!(r.pending(), 0, "replica {i}: outbox not empty");
            assert_eq!(r.pending_remote(), 0, "replica {i}: early arrivals left");
            let dead = r.dead_letters().expect("dead letters");
            assert!(dead.is_empty(), "replica {i}: dead letters {dead:?}");
            for id in &ids {
                held.extend(change_hashes(r, id).into_iter().map(|h| (*id, h)));
            }
        }
        // Migrations made independently on several replicas are one change
        // per version and document, never a conflict between migrations.
        let migration_actors: Vec<automerge::ActorId> = (1..=MIGRATIONS)
            .map(|v| supamerge::migration_actor(&collection(), v))
            .collect();
        for id in &ids {
            replicas[0]
                .with_doc(id, |d| {
                    for a in &migration_actors {
                        let n = d
                            .get_changes(&[])
                            .iter()
                            .filter(|c| c.actor_id() == a)
                            .count();
                        assert!(n <= 1, "{n} migration changes by {a} in {id}");
                    }
                })
                .ok();
            if let Ok(conflicts) = replicas[0].conflicts(id) {
                for c in conflicts {
                    let from_migrations = c
                        .candidates
                        .iter()
                        .filter(|cand| {
                            migration_actors
                                .iter()
                                .any(|a| a.to_hex_string() == cand.actor)
                        })
                        .count();
                    assert!(
                        from_migrations <= 1,
                        "{id}: migrations conflict with each other: {c:?}"
                    );
                }
            }
        }
        for (id, h) in &self.committed {
            for (i, r) in replicas.iter().enumerate() {
                let has = r
                    .with_doc(id, |d| d.get_change_by_hash(h).is_some())
                    .unwrap_or(false);
                assert!(has, "replica {i} lacks committed change {h} of {id}");
            }
        }
        let stored = server.stored(&self.ws).await;
        let mut counts: BTreeMap<(DocId, ChangeHash), usize> = BTreeMap::new();
        for s in &stored {
            *counts.entry(*s).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "stored more than once: {twice:?}");
        let on_server: BTreeSet<_> = counts.into_keys().collect();
        let lost: Vec<_> = self.committed.difference(&on_server).collect();
        assert!(lost.is_empty(), "committed but not on the server: {lost:?}");
        let extra: Vec<_> = on_server.difference(&held).collect();
        assert!(
            extra.is_empty(),
            "on the server but on no replica: {extra:?}"
        );
        let missing: Vec<_> = held.difference(&on_server).collect();
        assert!(
            missing.is_empty(),
            "on a replica but not on the server: {missing:?}"
        );
    }
}

/// The world as the simulation sees it.
impl SimNodes for World {
    fn len(&self) -> usize {
        self.nodes.len()
    }

    fn replica(&self, i: usize) -> &Replica {
        self.nodes[i].replica()
    }

    fn remote(&self, i: usize) -> Arc<dyn Remote> {
        self.nodes[i].base.clone()
    }

    fn advance(&mut self, ms: u64) {
        self.now += i64::try_from(ms).unwrap_or(i64::MAX / 4);
        for n in &self.nodes {
            n.clock.set(self.now + n.offset);
        }
    }

    fn skew(&mut self, i: usize, ms: i64) {
        let n = &mut self.nodes[i];
        n.offset += ms;
        n.clock.set(self.now + n.offset);
    }

    fn crash(&mut self, i: usize) {
        self.restart(i);
    }
}

// ----- views ---------------------------------------------------------------------

/// Every change hash a replica holds for a document (none when absent).
pub fn change_hashes(r: &Replica, id: &DocId) -> Vec<ChangeHash> {
    r.with_doc(id, |d| {
        d.get_changes(&[]).iter().map(|c| c.hash()).collect()
    })
    .unwrap_or_default()
}

/// A document as every replica must see it after convergence.
#[derive(Debug, PartialEq)]
pub struct DocView {
    pub heads: Vec<ChangeHash>,
    /// `None` when deleted or never created (only early arrivals).
    pub json: Option<Json>,
    /// Every conflicted field with its candidates and the winner.
    pub conflicts: Vec<Conflict>,
}

pub fn view(r: &Replica, id: &DocId) -> DocView {
    let mut heads = match r.heads(id) {
        Ok(h) => h,
        Err(Error::Entity(EntityError::NotFound { .. })) => Vec::new(),
        Err(e) => panic!("heads of {id}: {e}"),
    };
    heads.sort();
    let json = match r.get_json(id) {
        Ok(j) => Some(j),
        Err(Error::Entity(EntityError::Deleted { .. } | EntityError::NotFound { .. })) => None,
        Err(e) => panic!("read {id}: {e}"),
    };
    let conflicts = match r.conflicts(id) {
        Ok(c) => c,
        Err(Error::Entity(EntityError::NotFound { .. })) => Vec::new(),
        Err(e) => panic!("conflicts of {id}: {e}"),
    };
    DocView {
        heads,
        json,
        conflicts,
    }
}

/// Identical heads, JSON (every field resolved) and conflict lists (every
/// candidate, every winner) on every replica for every document.
pub fn assert_same_views(replicas: &[&Replica], ids: &BTreeSet<DocId>) {
    for id in ids {
        let first = view(replicas[0], id);
        for (i, r) in replicas.iter().enumerate().skip(1) {
            let v = view(r, id);
            assert_eq!(v, first, "replica {i} differs from replica 0 on {id}");
        }
    }
}
