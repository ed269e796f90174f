//! A deterministic simulation of whole networks (FoundationDB / TigerBeetle
//! style): real replicas on real sled, a real server behind a simulated
//! network and clock, and the product's own sync core stepping through it.
//!
//! One seed drives every choice: which effect runs when, message delays
//! (and so reordering), lost requests and responses, duplicated requests,
//! server errors, partitions, clock jumps and process crashes at effect
//! boundaries. Events are processed one at a time in (time, sequence) order
//! and every remote call is awaited before the next event, so the same seed
//! on the same replicas replays exactly.
//!
//! The caller owns the replicas ([`SimNodes`]): the simulation asks it for a
//! replica and its remote, to move time on, to skew a clock and to crash a
//! node (drop the replica and reopen it from its directory). A pass is the
//! sync core's `Pass` (`src/sync/core/`) — the same decisions
//! [`sync_once`](crate::sync_once) executes on tokio; replica effects run
//! inline through the same executor (`session::replica_effect`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::Arc;

use crate::error::Error;
use crate::id::WorkspaceId;
use crate::remote::{Remote, RemoteError};
use crate::replica::Replica;
use crate::sync::core::{Effect, EffectId, Outcome, Pass, Step, SyncConfig, SyncReport};
use crate::sync::session::{remote_effect, replica_effect};

/// The replicas of a simulated network, owned by the caller.
pub trait SimNodes {
    /// How many nodes there are.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Node `i`'s replica (open).
    fn replica(&self, i: usize) -> &Replica;
    /// The server as node `i`'s user.
    fn remote(&self, i: usize) -> Arc<dyn Remote>;
    /// Simulated time moved on by `ms`: move every node's clock.
    fn advance(&mut self, ms: u64);
    /// Node `i`'s clock jumps by `ms` (negative: back).
    fn skew(&mut self, i: usize, ms: i64);
    /// Node `i`'s process dies: drop its replica (whatever it was doing is
    /// lost) and reopen it from its directory.
    fn crash(&mut self, i: usize);
}

/// Fault rates of the simulated network and processes (per mille, per
/// event) and delays (simulated ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// A request never reaches the server (the client times out).
    pub drop_request: u32,
    /// The server does the work, the response is lost (the client times out).
    pub drop_response: u32,
    /// A request is delivered twice (the second answer goes nowhere).
    pub duplicate: u32,
    /// The server answers 503 without doing anything.
    pub server_error: u32,
    /// Messages take 1..=`max_delay_ms` (so they overtake each other).
    pub max_delay_ms: u64,
    /// When a pass starts, its node is cut off from the server for a while
    /// (calls fail at once as unavailable).
    pub partition: u32,
    /// The process dies at an effect boundary: before a replica effect runs,
    /// after it ran (before the core saw its outcome), or when an answer
    /// arrives (before the core saw it).
    pub crash: u32,
    /// When a pass starts, its node's clock jumps by up to ± this many ms.
    pub clock_jump_ms: i64,
}

impl NetConfig {
    /// A perfect network: no loss, no crash; delays only.
    pub fn calm() -> Self {
        Self {
            drop_request: 0,
            drop_response: 0,
            duplicate: 0,
            server_error: 0,
            max_delay_ms: 20,
            partition: 0,
            crash: 0,
            clock_jump_ms: 0,
        }
    }

    /// Every fault, often.
    pub fn chaos() -> Self {
        Self {
            drop_request: 60,
            drop_response: 60,
            duplicate: 80,
            server_error: 40,
            max_delay_ms: 200,
            partition: 80,
            crash: 25,
            clock_jump_ms: 3_600_000,
        }
    }

    /// Lossy and reordering, but no process dies.
    pub fn lossy() -> Self {
        Self {
            crash: 0,
            ..Self::chaos()
        }
    }
}

/// How a simulated pass ended.
#[derive(Debug)]
pub enum PassEnd {
    /// It finished: its report.
    Done(SyncReport),
    /// It failed with this error (a later pass retries).
    Failed(Error),
    /// Its process died (the node was reopened).
    Crashed,
    /// It was stopped after the effect budget it was given (see
    /// [`Sim::run_passes`]).
    Stopped,
}

impl PassEnd {
    /// Whether the pass finished well.
    pub fn is_done(&self) -> bool {
        matches!(self, PassEnd::Done(_))
    }
}

/// What to do when a pass reaches its effect budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtBudget {
    /// Cancel the pass (the process lives on).
    Cancel,
    /// The process dies there (the node is reopened).
    Crash,
}

/// Counters over a simulation's life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Passes started.
    pub passes: u64,
    /// Passes that finished well.
    pub passes_done: u64,
    /// Passes that failed (a fault surfaced as an error).
    pub passes_failed: u64,
    /// Processes that died.
    pub crashes: u64,
    /// Effects executed (replica calls run, remote calls answered).
    pub effects: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests lost.
    pub requests_lost: u64,
    /// Responses lost.
    pub responses_lost: u64,
    /// Requests delivered twice.
    pub duplicated: u64,
    /// 503s answered.
    pub server_errors: u64,
    /// Calls refused by a partition.
    pub partitioned: u64,
    /// Simulated ms elapsed.
    pub sim_ms: u64,
    /// Workspaces re-bootstrapped because the remote pruned past their
    /// cursor ([`SyncReport::rebootstraps`] of the passes that finished).
    pub rebootstraps: u64,
}

/// splitmix64: a small, good, seedable generator.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `true` with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.next() % 1000 < u64::from(per_mille)
    }

    /// Uniform in `1..=max` (1 when `max` is 0).
    fn delay(&mut self, max: u64) -> u64 {
        1 + self.next() % max.max(1)
    }
}

/// How long a client waits for an answer before it gives up (simulated ms).
const TIMEOUT_MS: u64 = 1_000;

/// A pass in the simulation.
struct Active {
    node: usize,
    pass: Pass,
    end: Option<PassEnd>,
    /// Effects whose outcome was fed (a second answer is dropped).
    answered: HashSet<EffectId>,
    /// Effects executed so far, and the budget.
    effects: usize,
    budget: Option<(usize, AtBudget)>,
}

/// A scheduled event.
enum Event {
    /// Run a replica effect.
    Local {
        p: usize,
        id: EffectId,
        effect: Effect,
    },
    /// A request reaches the server (`primary`: the client waits for its
    /// answer; else a duplicate whose answer goes nowhere).
    Arrive {
        p: usize,
        id: EffectId,
        effect: Effect,
        primary: bool,
    },
    /// An answer (or the client's timeout) reaches the client.
    Answer {
        p: usize,
        id: EffectId,
        result: Result<Outcome, Error>,
    },
}

/// The simulation: a seed, fault rates, simulated time and counters.
pub struct Sim {
    rng: Rng,
    net: NetConfig,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    /// Per node: cut off from the server until this time.
    cut_until: BTreeMap<usize, u64>,
    stats: SimStats,
    /// Passes pull their first workspace only, without pushing.
    pull_only: bool,
}

impl Sim {
    /// A simulation driven by `seed` with the fault rates of `net`.
    pub fn new(seed: u64, net: NetConfig) -> Self {
        Self {
            rng: Rng(seed),
            net,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            cut_until: BTreeMap::new(),
            stats: SimStats::default(),
            pull_only: false,
        }
    }

    /// Passes that pull the first workspace only, without pushing or
    /// uploading snapshots: what a replica's engine does on a live nudge,
    /// whatever its outbox holds (an edit made after the pass's push).
    pub fn pulling_only(mut self) -> Self {
        self.pull_only = true;
        self
    }

    /// The counters so far.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    fn at(&mut self, t: u64, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq)));
        self.events.insert(self.seq, e);
    }

    /// Runs one pass on each node of `which` (each at most once), all at
    /// the same time through the simulated network, until every one ended.
    /// `budget`: each pass stops after that many effects (cancelled or
    /// crashed there) — a partial pass at an exact effect boundary.
    pub async fn run_passes(
        &mut self,
        nodes: &mut dyn SimNodes,
        which: &[usize],
        cfg: &SyncConfig,
        workspaces: &[WorkspaceId],
        budget: Option<(usize, AtBudget)>,
    ) -> Vec<PassEnd> {
        let mut active: Vec<Active> = Vec::new();
        for &node in which {
            if node >= nodes.len() || active.iter().any(|a| a.node == node) {
                continue;
            }
            if self.rng.chance(self.net.partition) {
                let until = self.now + self.rng.delay(self.net.max_delay_ms * 10);
                self.cut_until.insert(node, until);
            }
            if self.net.clock_jump_ms > 0 && self.rng.chance(100) {
                let span = u64::try_from(self.net.clock_jump_ms).unwrap_or(0) * 2 + 1;
                let jump =
                    i64::try_from(self.rng.next() % span).unwrap_or(0) - self.net.clock_jump_ms;
                nodes.skew(node, jump);
            }
            let replica = nodes.replica(node);
            let pass = match workspaces.first() {
                Some(ws) if self.pull_only => Pass::pull_only(cfg.clone(), *ws),
                _ => Pass::new(cfg.clone(), workspaces, replica.pending()),
            };
            let p = active.len();
            active.push(Active {
                node,
                pass,
                end: None,
                answered: HashSet::new(),
                effects: 0,
                budget,
            });
            self.stats.passes += 1;
            let step = active[p].pass.start(replica.now_ms());
            self.schedule(&mut active, p, step);
        }
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            if t > self.now {
                nodes.advance(t - self.now);
                self.stats.sim_ms += t - self.now;
                self.now = t;
            }
            self.process(nodes, &mut active, event).await;
        }
        active
            .into_iter()
            .map(|a| {
                a.end.unwrap_or_else(|| {
                    PassEnd::Failed(Error::Remote(RemoteError::Protocol {
                        reason: "simulation: a pass stalled with nothing in flight".into(),
                    }))
                })
            })
            .collect()
    }

    /// Passes of every node, one after the other, on a calm network, until
    /// a whole round pushes and applies nothing. Every pass must finish:
    /// the first that does not is the error (with its node and round).
    ///
    /// # Errors
    /// A pass that failed, or no quiescence after `max_rounds` rounds.
    pub async fn quiesce(
        &mut self,
        nodes: &mut dyn SimNodes,
        cfg: &SyncConfig,
        workspaces: &[WorkspaceId],
        max_rounds: usize,
    ) -> Result<usize, String> {
        let saved = std::mem::replace(&mut self.net, NetConfig::calm());
        self.cut_until.clear();
        let result = self.quiesce_calm(nodes, cfg, workspaces, max_rounds).await;
        self.net = saved;
        result
    }

    async fn quiesce_calm(
        &mut self,
        nodes: &mut dyn SimNodes,
        cfg: &SyncConfig,
        workspaces: &[WorkspaceId],
        max_rounds: usize,
    ) -> Result<usize, String> {
        for round in 0..max_rounds {
            let mut moved = false;
            for i in 0..nodes.len() {
                let end = self.run_passes(nodes, &[i], cfg, workspaces, None).await;
                match end.into_iter().next() {
                    Some(PassEnd::Done(r)) => {
                        if r.pushed + r.already_present + r.applied + r.dead_lettered > 0 {
                            moved = true;
                        }
                    }
                    Some(PassEnd::Failed(e)) => {
                        return Err(format!("round {round}: sync of replica {i} failed: {e}"))
                    }
                    other => return Err(format!("round {round}: replica {i}: {other:?}")),
                }
            }
            if !moved {
                return Ok(round + 1);
            }
        }
        Err(format!("no quiescence after {max_rounds} rounds"))
    }

    /// Queues what a step asks for; records the end of a pass.
    fn schedule(&mut self, active: &mut [Active], p: usize, step: Step) {
        if let Some(done) = step.done {
            let end = match done {
                Ok(r) => {
                    self.stats.passes_done += 1;
                    self.stats.rebootstraps += r.rebootstraps as u64;
                    PassEnd::Done(r)
                }
                Err(e) => {
                    self.stats.passes_failed += 1;
                    PassEnd::Failed(e)
                }
            };
            active[p].end = Some(end);
            return;
        }
        let node = active[p].node;
        for (id, effect) in step.effects {
            if !effect.is_remote() {
                let t = self.now + 1;
                self.at(t, Event::Local { p, id, effect });
                continue;
            }
            self.stats.requests += 1;
            let cut = self.cut_until.get(&node).is_some_and(|u| *u > self.now);
            if cut {
                self.stats.partitioned += 1;
                let t = self.now + 1;
                let result = Err(Error::Remote(RemoteError::Unavailable {
                    reason: "simulated partition".into(),
                }));
                self.at(t, Event::Answer { p, id, result });
                continue;
            }
            if self.rng.chance(self.net.drop_request) {
                self.stats.requests_lost += 1;
                let t = self.now + TIMEOUT_MS;
                self.at(
                    t,
                    Event::Answer {
                        p,
                        id,
                        result: Err(timeout()),
                    },
                );
                continue;
            }
            if self.rng.chance(self.net.duplicate) {
                if let Some(copy) = clone_request(&effect) {
                    self.stats.duplicated += 1;
                    let t = self.now + self.rng.delay(self.net.max_delay_ms);
                    self.at(
                        t,
                        Event::Arrive {
                            p,
                            id,
                            effect: copy,
                            primary: false,
                        },
                    );
                }
            }
            let t = self.now + self.rng.delay(self.net.max_delay_ms);
            self.at(
                t,
                Event::Arrive {
                    p,
                    id,
                    effect,
                    primary: true,
                },
            );
        }
    }

    async fn process(&mut self, nodes: &mut dyn SimNodes, active: &mut [Active], event: Event) {
        match event {
            Event::Local { p, id, effect } => {
                if active[p].end.is_some() {
                    return;
                }
                let node = active[p].node;
                if self.rng.chance(self.net.crash) {
                    self.crash(nodes, active, p);
                    return;
                }
                let result = replica_effect(nodes.replica(node), effect);
                self.stats.effects += 1;
                if self.after_effect(nodes, active, p) {
                    return;
                }
                if self.rng.chance(self.net.crash) {
                    self.crash(nodes, active, p);
                    return;
                }
                self.feed(nodes, active, p, id, result);
            }
            Event::Arrive {
                p,
                id,
                effect,
                primary,
            } => {
                let node = active[p].node;
                if primary && self.rng.chance(self.net.server_error) {
                    self.stats.server_errors += 1;
                    let t = self.now + self.rng.delay(self.net.max_delay_ms);
                    let result = Err(Error::Remote(RemoteError::Server {
                        status: 503,
                        message: "simulated server error".into(),
                    }));
                    self.at(t, Event::Answer { p, id, result });
                    return;
                }
                let remote = nodes.remote(node);
                let result = remote_effect(remote.as_ref(), effect).await;
                if !primary {
                    return;
                }
                if self.rng.chance(self.net.drop_response) {
                    self.stats.responses_lost += 1;
                    let t = self.now + TIMEOUT_MS;
                    self.at(
                        t,
                        Event::Answer {
                            p,
                            id,
                            result: Err(timeout()),
                        },
                    );
                    return;
                }
                let t = self.now + self.rng.delay(self.net.max_delay_ms);
                self.at(t, Event::Answer { p, id, result });
            }
            Event::Answer { p, id, result } => {
                if active[p].end.is_some() || !active[p].answered.insert(id) {
                    return;
                }
                self.stats.effects += 1;
                if self.after_effect(nodes, active, p) {
                    return;
                }
                if self.rng.chance(self.net.crash) {
                    self.crash(nodes, active, p);
                    return;
                }
                self.feed(nodes, active, p, id, result);
            }
        }
    }

    /// Counts an executed effect against the pass's budget; `true` when the
    /// pass ended there.
    fn after_effect(&mut self, nodes: &mut dyn SimNodes, active: &mut [Active], p: usize) -> bool {
        active[p].effects += 1;
        match active[p].budget {
            Some((n, at)) if active[p].effects >= n => {
                match at {
                    AtBudget::Cancel => active[p].end = Some(PassEnd::Stopped),
                    AtBudget::Crash => self.crash(nodes, active, p),
                }
                true
            }
            _ => false,
        }
    }

    fn crash(&mut self, nodes: &mut dyn SimNodes, active: &mut [Active], p: usize) {
        self.stats.crashes += 1;
        active[p].end = Some(PassEnd::Crashed);
        nodes.crash(active[p].node);
    }

    fn feed(
        &mut self,
        nodes: &mut dyn SimNodes,
        active: &mut [Active],
        p: usize,
        id: EffectId,
        result: Result<Outcome, Error>,
    ) {
        let now = nodes.replica(active[p].node).now_ms();
        let step = active[p].pass.handle(now, id, result);
        self.schedule(active, p, step);
    }
}

fn timeout() -> Error {
    Error::Remote(RemoteError::Timeout {
        after_ms: TIMEOUT_MS,
    })
}

/// A copy of a remote request (for a duplicate delivery).
fn clone_request(e: &Effect) -> Option<Effect> {
    Some(match e {
        Effect::Push(r) => Effect::Push(r.clone()),
        Effect::Pull(r) => Effect::Pull(r.clone()),
        Effect::GetSnapshots(q) => Effect::GetSnapshots(q.clone()),
        Effect::PutSnapshot(s) => Effect::PutSnapshot(s.clone()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_replays_and_spreads() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng(7);
                move |_| r.next()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut r = Rng(7);
                move |_| r.next()
            })
            .collect();
        assert_eq!(a, b);
        let mut r = Rng(1);
        let hits = (0..10_000).filter(|_| r.chance(100)).count();
        assert!((800..1200).contains(&hits), "{hits}");
        assert!(!Rng(3).chance(0));
    }
}
