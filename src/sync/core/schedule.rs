//! When a pass runs: the engine's triggers, debounce windows, coalescing
//! and backoff as a state machine with no I/O.
//!
//! The engine ([`SyncEngine`](crate::SyncEngine)) is the shell: it turns
//! its channel's commands and the live updates into [`Input`]s, asks
//! [`Schedule::poll`] what to do, sleeps until the deadline it returns (or
//! the next input), runs the pass [`Next::Pass`] asks for and reports its
//! end with [`Schedule::finished`]. Time is a number of milliseconds the
//! shell passes in (the engine counts from its start); the core reads no
//! clock. The jitter of the backoff comes from a seeded generator inside
//! the state, so a seed replays the same delays.
//!
//! The rules:
//!
//! - **Triggers.** A local commit opens the commit debounce window
//!   (`debounce`, from the first commit of a burst: later commits join it);
//!   a nudge of the live updates opens the nudge window (`nudge_debounce`);
//!   when a window closes a pass is wanted. The periodic tick wants one every
//!   `interval` (every `live_interval` while the live updates flow; when they
//!   stop flowing the next tick comes within `interval`). "Back online",
//!   joining a workspace and fresh credentials want one at once, cancelling
//!   the backoff.
//! - **Coalescing.** Every input that arrived before [`Schedule::poll`] is
//!   covered by the pass it starts: a pass closes both windows. Inputs that
//!   arrive while a pass runs are held and applied after its end, in order:
//!   so any number of them causes exactly one follow-up pass.
//! - **Manual passes.** [`Input::SyncNow`] starts a pass at once, whatever
//!   the windows, the backoff or an authentication pause; every caller that
//!   asked before the pass started is answered by it
//!   ([`PassPlan::answers`]).
//! - **Failure.** A failed pass backs off ([`Backoff`], equal jitter) and
//!   is retried when the delay ends; an authentication failure
//!   ([`SyncErrorKind::Auth`]) waits for [`Input::CredentialsUpdated`]
//!   instead. A success resets the backoff.
//! - **Workspaces.** A pass covers the workspaces the app named, the ones
//!   joined since the start, and (the session adds them) every one the
//!   replica holds; after a success the live updates follow those named
//!   and drop those the remote says the user is no longer a member of.
//! - **Shutdown.** [`Next::Stop`] once asked; a running pass ends first.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::backoff::Backoff;
use super::kind::SyncErrorKind;
use crate::id::WorkspaceId;

/// The knobs of the schedule (durations in ms).
#[derive(Debug, Clone)]
pub(crate) struct ScheduleConfig {
    /// Periodic pass interval; `None`: no periodic pass.
    pub(crate) interval: Option<u64>,
    /// The interval while the live updates flow; `None`: none then.
    pub(crate) live_interval: Option<u64>,
    /// How long local commits are gathered before a pass.
    pub(crate) debounce: u64,
    /// How long nudges are gathered before a pass.
    pub(crate) nudge_debounce: u64,
    /// Whether a pass runs at once after the start.
    pub(crate) sync_on_start: bool,
    /// Workspaces every pass pulls (`with_workspaces`).
    pub(crate) workspaces: Vec<WorkspaceId>,
    /// The retry schedule.
    pub(crate) backoff: Backoff,
    /// Seed of the jitter.
    pub(crate) seed: u64,
}

/// Something that happened, fed to [`Schedule::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// The replica committed a local change.
    LocalCommit,
    /// The live updates ask for a pull (a push that was not ours, or a
    /// resync).
    Nudge,
    /// Whether the live updates flow now (connected, every channel joined).
    Live(bool),
    /// A caller waits for the next pass's outcome.
    SyncNow,
    /// The network is back.
    Online,
    /// Fresh credentials after an authentication failure.
    CredentialsUpdated,
    /// The app joined a workspace (the replica recorded it).
    Join(WorkspaceId),
    /// Stop.
    Shutdown,
}

/// How a pass ended, fed to [`Schedule::finished`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PassEnd {
    /// It succeeded.
    Ok {
        /// Workspaces the remote said the user is no longer a member of.
        not_a_member: Vec<WorkspaceId>,
    },
    /// It failed, with this kind.
    Failed(SyncErrorKind),
}

/// What the shell does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Run a pass now, then report its end with [`Schedule::finished`].
    Pass(PassPlan),
    /// Nothing to do until `until` (ms) or the next input (`None`: only an
    /// input).
    Wait {
        /// The next deadline.
        until: Option<u64>,
    },
    /// Stop: answer the waiting callers that the engine stopped.
    Stop,
}

/// A pass to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PassPlan {
    /// Workspaces to pull besides the replica's own (named and joined).
    pub(crate) workspaces: Vec<WorkspaceId>,
    /// How many of the waiting `sync_now` callers, oldest first, this
    /// pass answers.
    pub(crate) answers: usize,
}

/// What the shell does after a pass, returned by [`Schedule::finished`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct AfterPass {
    /// After a success: the live updates follow these workspaces (and the
    /// ones the pass pulled) and drop `gone`.
    pub(crate) follow: Option<(Vec<WorkspaceId>, Vec<WorkspaceId>)>,
    /// After a failure that backs off: the delay.
    pub(crate) retry_in: Option<Duration>,
}

/// The schedule's state.
#[derive(Debug)]
pub(crate) struct Schedule {
    cfg: ScheduleConfig,
    backoff: Backoff,
    rng: StdRng,
    /// Named and joined workspaces, in order.
    workspaces: Vec<WorkspaceId>,
    /// `sync_now` callers waiting for a pass that has not started.
    waiting: usize,
    /// A pass is wanted (a window closed, a tick, a failure to retry...).
    dirty: bool,
    /// When the commit debounce window closes.
    debounce_at: Option<u64>,
    /// When the nudge window closes.
    nudge_at: Option<u64>,
    /// The next periodic tick.
    tick_at: Option<u64>,
    /// When the backoff after a failure ends.
    retry_at: Option<u64>,
    /// Credentials were refused: no automatic pass until they are updated.
    auth_paused: bool,
    /// Whether the live updates flow (ticks use the long interval then).
    live: bool,
    /// A pass runs: inputs are held until it ends.
    running: bool,
    /// Inputs that arrived while a pass ran.
    held: Vec<Input>,
    /// Shutdown was asked.
    stopping: bool,
}

impl Schedule {
    /// The state at the engine's start (`now`).
    pub(crate) fn new(cfg: ScheduleConfig, now: u64) -> Self {
        Self {
            backoff: cfg.backoff,
            rng: StdRng::seed_from_u64(cfg.seed),
            workspaces: cfg.workspaces.clone(),
            waiting: 0,
            dirty: cfg.sync_on_start,
            debounce_at: None,
            nudge_at: None,
            tick_at: cfg.interval.map(|d| now.saturating_add(d)),
            retry_at: None,
            auth_paused: false,
            live: false,
            running: false,
            held: Vec::new(),
            stopping: false,
            cfg,
        }
    }

    /// Records an input (held until the end of a running pass).
    pub(crate) fn handle(&mut self, now: u64, input: Input) {
        if self.running {
            self.held.push(input);
            return;
        }
        match input {
            Input::LocalCommit => {
                if self.debounce_at.is_none() {
                    self.debounce_at = Some(now.saturating_add(self.cfg.debounce));
                }
            }
            Input::Nudge => {
                if self.nudge_at.is_none() {
                    self.nudge_at = Some(now.saturating_add(self.cfg.nudge_debounce));
                }
            }
            Input::Live(flowing) => {
                if self.live && !flowing {
                    // Polling takes over: the next tick within the interval.
                    let soon = self.cfg.interval.map(|d| now.saturating_add(d));
                    self.tick_at = match (self.tick_at, soon) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                self.live = flowing;
            }
            Input::SyncNow => self.waiting += 1,
            Input::Online | Input::Join(_) | Input::CredentialsUpdated => {
                if let Input::Join(ws) = input {
                    if !self.workspaces.contains(&ws) {
                        self.workspaces.push(ws);
                    }
                }
                if input == Input::CredentialsUpdated {
                    self.auth_paused = false;
                }
                self.retry_at = None;
                self.dirty = true;
            }
            Input::Shutdown => self.stopping = true,
        }
    }

    /// Closes the windows and deadlines that are due at `now`, then says
    /// what to do: stop, run a pass, or wait.
    pub(crate) fn poll(&mut self, now: u64) -> Next {
        if self.stopping && !self.running {
            return Next::Stop;
        }
        if self.running {
            return Next::Wait { until: None };
        }
        if take_due(&mut self.debounce_at, now) {
            self.dirty = true;
        }
        if take_due(&mut self.nudge_at, now) {
            self.dirty = true;
        }
        take_due(&mut self.retry_at, now);
        if take_due(&mut self.tick_at, now) {
            self.tick_at = self.poll_interval().map(|d| now.saturating_add(d));
            self.dirty = true;
        }
        let due = self.waiting > 0 || (self.dirty && !self.auth_paused && self.retry_at.is_none());
        if due {
            // This pass pushes every commit and pulls every change
            // announced so far.
            self.debounce_at = None;
            self.nudge_at = None;
            self.running = true;
            let answers = std::mem::take(&mut self.waiting);
            return Next::Pass(PassPlan {
                workspaces: self.workspaces.clone(),
                answers,
            });
        }
        let until = [self.debounce_at, self.nudge_at, self.retry_at, self.tick_at]
            .into_iter()
            .flatten()
            .min();
        Next::Wait { until }
    }

    /// Records the end of the running pass at `now`, then the inputs held
    /// while it ran.
    pub(crate) fn finished(&mut self, now: u64, end: PassEnd) -> AfterPass {
        self.running = false;
        self.dirty = false;
        let mut after = AfterPass::default();
        match end {
            PassEnd::Ok { not_a_member } => {
                self.backoff.reset();
                self.retry_at = None;
                after.follow = Some((self.workspaces.clone(), not_a_member));
            }
            PassEnd::Failed(SyncErrorKind::Auth) => self.auth_paused = true,
            PassEnd::Failed(_) => {
                let delay = self.backoff.next_delay(self.rng.gen());
                let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                self.retry_at = Some(now.saturating_add(ms));
                self.dirty = true;
                after.retry_in = Some(delay);
            }
        }
        for input in std::mem::take(&mut self.held) {
            self.handle(now, input);
        }
        after
    }

    /// The periodic interval now: the long fallback while the live updates
    /// flow, the interval otherwise.
    fn poll_interval(&self) -> Option<u64> {
        if self.live {
            self.cfg.live_interval
        } else {
            self.cfg.interval
        }
    }
}

/// Clears `at` and says so if it is due at `now`.
fn take_due(at: &mut Option<u64>, now: u64) -> bool {
    if at.is_some_and(|t| t <= now) {
        *at = None;
        true
    } else {
        false
    }
}
