//! The sync engine: a tokio task that runs sync passes when the schedule
//! says so.
//!
//! *When* is decided by the pure schedule of the sync core
//! ([`Schedule`], `src/sync/core/schedule.rs`); this task is its shell: it
//! turns commands and live updates into the schedule's inputs, sleeps until
//! the deadline the schedule names, runs the pass it asks for
//! ([`session::sync_once`]) and publishes status and events.
//!
//! Triggers: a local commit (debounced), a periodic interval, a manual
//! [`SyncHandle::sync_now`], "back online" ([`SyncHandle::notify_online`]),
//! and the remote's live updates: a nudge that another device pushed to a
//! workspace this engine syncs (briefly debounced; nudges of the engine's
//! own pushes are skipped), or a resync after the channel (re)joined. While
//! the live updates are not flowing (disconnected, a channel not joined)
//! the engine polls on its interval; while they flow, on a long fallback
//! interval, since a nudge is a hint and never needed for correctness
//! ([`super::live`]).
//! One pass runs at a time; triggers that arrive during a pass coalesce into
//! one more pass. Failures back off exponentially with jitter
//! ([`Backoff`]); authentication failures stop automatic retries until the
//! app calls [`SyncHandle::credentials_updated`]. Status is published on a
//! `watch` channel, progress and document events on a `broadcast` channel.
//!
//! Workspaces: every pass pulls each workspace the replica holds documents
//! of, has synced or was told to join ([`SyncHandle::join`], remembered by
//! the replica), plus those given to [`SyncEngineBuilder::with_workspaces`].
//! A pass that found none says so: the state is [`SyncState::NoWorkspace`]
//! and a [`SyncEvent::Warning`] names the reason, rather than a silent
//! [`SyncState::Idle`] that pulls nothing.
//!
//! The engine's task never runs sled or Automerge work itself: every replica
//! call goes to tokio's blocking pool (`spawn_blocking`), so an app's runtime
//! threads stay free while a pass runs.
//!
//! Shutdown: [`SyncHandle::shutdown`] lets a running pass finish (it is
//! restartable at any point anyway) and stops the task; dropping every handle
//! does the same.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::core::schedule::{Input, Next, PassEnd, Schedule, ScheduleConfig};
use super::core::{Backoff, SyncErrorKind};
use super::live::{EngineLive, LiveStatus};
use super::own_pushes::{Recorder, Seen};
use super::presence::Presence;
use super::session::{self, SyncConfig, SyncProgress, SyncReport};
use crate::conflict::Conflict;
use crate::error::Error;
use crate::id::{DocId, WorkspaceId};
use crate::remote::{LiveError, LiveUpdates, Remote};
use crate::replica::{Origin, Replica, ReplicaEvent, SyncPort};

/// What the engine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Waiting for a trigger.
    Idle,
    /// The last pass succeeded but had no workspace to pull: the replica
    /// holds no document, has synced no workspace and was told to join none
    /// (a fresh replica). Nothing will arrive until the app calls
    /// [`SyncHandle::join`] (or creates a document). Announced once per
    /// such pass as [`SyncEvent::Warning`] with [`SyncWarning::NoWorkspace`].
    NoWorkspace,
    /// A pass is running.
    Syncing,
    /// The last pass could not reach the remote; retrying with backoff.
    Offline,
    /// The last pass failed otherwise (see `last_error`); authentication
    /// failures wait for [`SyncHandle::credentials_updated`].
    Error,
}

/// The engine's status, published on a `watch` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncStatus {
    /// Current state.
    pub state: SyncState,
    /// Local changes not yet confirmed by the remote.
    pub pending: usize,
    /// Changes the remote rejected (dead letters).
    pub dead_letters: usize,
    /// Wall-clock ms of the last successful pass.
    pub last_success_ms: Option<i64>,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// Workspaces the last successful pass found the user no longer a
    /// member of (see [`SyncReport::not_a_member`]).
    pub not_a_member: Vec<WorkspaceId>,
    /// The live updates (realtime connection and channels); `None` when
    /// the remote offers none or they are switched off (polling only).
    pub live: Option<LiveStatus>,
}

/// Why a sync pass failed, as a cloneable value (it is sent to every
/// waiting caller and event subscriber).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "error", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncError {
    /// The pass failed.
    #[error("sync failed: {message}")]
    Failed {
        /// What kind of failure: decides whether the engine retries.
        kind: SyncErrorKind,
        /// The underlying error, in words.
        message: String,
    },
    /// The engine has shut down.
    #[error("the sync engine has shut down")]
    Stopped,
}

impl SyncError {
    fn from_error(e: &Error) -> Self {
        SyncError::Failed {
            kind: SyncErrorKind::of(e),
            message: e.to_string(),
        }
    }

    /// The kind of failure (`None` for [`SyncError::Stopped`]).
    pub fn kind(&self) -> Option<SyncErrorKind> {
        match self {
            SyncError::Failed { kind, .. } => Some(*kind),
            SyncError::Stopped => None,
        }
    }

    /// Whether a later pass can succeed without anything changing on this
    /// side (see [`SyncErrorKind::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.kind().is_some_and(SyncErrorKind::is_retryable)
    }
}

/// What the engine announces.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncEvent {
    /// A document changed (forwarded from the replica).
    DocChanged {
        /// The document.
        id: DocId,
        /// Local edit or remote changes.
        origin: Origin,
    },
    /// A pull left concurrent values in a document.
    Conflict {
        /// The document.
        id: DocId,
        /// The conflicted fields.
        conflicts: Vec<Conflict>,
    },
    /// Progress of the running pass.
    Progress(SyncProgress),
    /// A pass finished.
    Finished(SyncReport),
    /// A pass failed.
    Failed(SyncError),
    /// A pass succeeded but something needs the app's attention.
    Warning(SyncWarning),
}

/// Something a successful pass found wrong with the engine's setup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "warning", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncWarning {
    /// No workspace to pull (see [`SyncState::NoWorkspace`]).
    #[error("no workspace to pull: the replica holds no document and joined no workspace; call SyncHandle::join(workspace) (or create a document) to sync one")]
    NoWorkspace,
}

enum Cmd {
    SyncNow(oneshot::Sender<Result<SyncReport, SyncError>>),
    LocalCommit,
    Online,
    CredentialsUpdated,
    Join(WorkspaceId),
    Shutdown(oneshot::Sender<()>),
}

/// Options of a sync engine.
pub struct SyncEngineBuilder {
    replica: Replica,
    remote: Arc<dyn Remote>,
    config: SyncConfig,
    workspaces: Vec<WorkspaceId>,
    interval: Option<Duration>,
    debounce: Duration,
    backoff: Backoff,
    seed: Option<u64>,
    sync_on_start: bool,
    live: bool,
    live_interval: Option<Duration>,
    nudge_debounce: Duration,
}

/// Entry point: `SyncEngine::builder(replica, remote).spawn()`.
#[derive(Debug)]
pub struct SyncEngine;

impl SyncEngine {
    /// Options for an engine syncing `replica` with `remote`.
    pub fn builder(replica: Replica, remote: Arc<dyn Remote>) -> SyncEngineBuilder {
        SyncEngineBuilder {
            replica,
            remote,
            config: SyncConfig::default(),
            workspaces: Vec::new(),
            interval: Some(Duration::from_secs(30)),
            debounce: Duration::from_millis(250),
            backoff: Backoff::default(),
            seed: None,
            sync_on_start: true,
            live: true,
            live_interval: Some(Duration::from_secs(300)),
            nudge_debounce: Duration::from_millis(10),
        }
    }
}

impl SyncEngineBuilder {
    /// Batch sizes and thresholds.
    pub fn with_config(mut self, c: SyncConfig) -> Self {
        self.config = c;
        self
    }

    /// Workspaces to pull even when the replica holds no document of them yet
    /// (a fresh device joining a workspace). Unlike [`SyncHandle::join`], the
    /// replica does not remember them: pass them at every start.
    pub fn with_workspaces(mut self, ws: impl IntoIterator<Item = WorkspaceId>) -> Self {
        self.workspaces = ws.into_iter().collect();
        self
    }

    /// Periodic sync interval (`None`: only other triggers). Default 30 s.
    pub fn with_interval(mut self, d: Option<Duration>) -> Self {
        self.interval = d;
        self
    }

    /// How long local commits are gathered before a pass. Default 250 ms.
    pub fn with_debounce(mut self, d: Duration) -> Self {
        self.debounce = d;
        self
    }

    /// The retry schedule.
    pub fn with_backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }

    /// Seed of the jitter's random source (deterministic tests).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether to run a pass right after starting. Default true.
    pub fn with_sync_on_start(mut self, yes: bool) -> Self {
        self.sync_on_start = yes;
        self
    }

    /// Whether to use the remote's live updates (nudges and presence) when
    /// it offers them ([`Remote::live_updates`]). Default true; `false`
    /// polls only.
    pub fn with_live_updates(mut self, yes: bool) -> Self {
        self.live = yes;
        self
    }

    /// The polling interval while live updates flow (connected, every
    /// channel joined): a fallback for lost nudges. Default 5 minutes;
    /// `None`: no polling then.
    pub fn with_live_interval(mut self, d: Option<Duration>) -> Self {
        self.live_interval = d;
        self
    }

    /// How long nudges are gathered before their pull. Default 10 ms.
    pub fn with_nudge_debounce(mut self, d: Duration) -> Self {
        self.nudge_debounce = d;
        self
    }

    /// Starts the engine on the current tokio runtime.
    pub fn spawn(self) -> SyncHandle {
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (events, _) = broadcast::channel(1024);
        let pending = self.replica.pending();
        // The dead letters are counted by the task (a store scan belongs on
        // the blocking pool), before its first pass.
        let (status_tx, status_rx) = watch::channel(SyncStatus {
            state: SyncState::Idle,
            pending,
            dead_letters: 0,
            last_success_ms: None,
            last_error: None,
            not_a_member: Vec::new(),
            live: None,
        });
        let forwarder = tokio::spawn(forward_events(
            self.replica.subscribe(),
            events.clone(),
            cmd_tx.downgrade(),
        ));
        let replica = self.replica.clone();
        let live_updates = if self.live {
            self.remote.live_updates()
        } else {
            None
        };
        let seen = Arc::new(Seen::default());
        let live = live_updates
            .clone()
            .map(|l| EngineLive::new(l, seen.clone()));
        let remote: Arc<dyn Remote> = Arc::new(Recorder::new(self.remote, seen));
        let schedule = ScheduleConfig {
            interval: self.interval.map(millis),
            live_interval: self.live_interval.map(millis),
            debounce: millis(self.debounce),
            nudge_debounce: millis(self.nudge_debounce),
            sync_on_start: self.sync_on_start,
            workspaces: self.workspaces,
            backoff: self.backoff,
            seed: self.seed.unwrap_or_else(rand::random),
        };
        let task = EngineTask {
            replica: self.replica,
            remote,
            live,
            config: self.config,
            epoch: Instant::now(),
            status: status_tx,
            events: events.clone(),
        };
        tokio::spawn(
            async move {
                task.run(cmd_rx, schedule).await;
                forwarder.abort();
            }
            .instrument(tracing::info_span!("sync_engine")),
        );
        SyncHandle {
            cmd: cmd_tx,
            status: status_rx,
            events,
            live: live_updates,
            replica,
        }
    }
}

async fn forward_events(
    mut rx: broadcast::Receiver<ReplicaEvent>,
    events: broadcast::Sender<SyncEvent>,
    cmd: mpsc::WeakSender<Cmd>,
) {
    loop {
        match rx.recv().await {
            Ok(ReplicaEvent::DocChanged { id, origin }) => {
                let _ = events.send(SyncEvent::DocChanged { id, origin });
                if origin == Origin::Local {
                    let Some(cmd) = cmd.upgrade() else { return };
                    // A full queue already holds a trigger: coalesce.
                    let _ = cmd.try_send(Cmd::LocalCommit);
                }
            }
            Ok(ReplicaEvent::Conflict { id, conflicts }) => {
                let _ = events.send(SyncEvent::Conflict { id, conflicts });
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let Some(cmd) = cmd.upgrade() else { return };
                let _ = cmd.try_send(Cmd::LocalCommit);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A cloneable front to a running engine.
#[derive(Clone)]
pub struct SyncHandle {
    cmd: mpsc::Sender<Cmd>,
    status: watch::Receiver<SyncStatus>,
    events: broadcast::Sender<SyncEvent>,
    /// The engine's live-updates client, for presence.
    live: Option<Arc<dyn LiveUpdates>>,
    /// The replica, for `join`.
    replica: Replica,
}

impl std::fmt::Debug for SyncHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHandle")
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl SyncHandle {
    /// Runs a pass now (or joins the one about to start) and returns its report.
    ///
    /// # Errors
    /// [`SyncError::Failed`] when the pass failed, [`SyncError::Stopped`]
    /// when the engine has shut down.
    pub async fn sync_now(&self) -> Result<SyncReport, SyncError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::SyncNow(tx))
            .await
            .map_err(|_| SyncError::Stopped)?;
        rx.await.map_err(|_| SyncError::Stopped)?
    }

    /// Joins a workspace: the replica records it (it is pulled by every pass
    /// from now on, also after a restart, until it holds documents of it)
    /// and a pass starts. This is how a fresh replica starts syncing a
    /// workspace someone else created. Joining a workspace the replica
    /// already knows only starts a pass. Returns once it is recorded; wait
    /// for the pass with [`SyncHandle::sync_now`] or the events.
    ///
    /// (Membership is the server's business: with Supabase, the user must
    /// be a member, see `docs/workspaces.md`; otherwise the pass reports the
    /// workspace in [`SyncStatus::not_a_member`].)
    ///
    /// # Errors
    /// [`SyncError::Failed`] when the replica cannot record it,
    /// [`SyncError::Stopped`] when the engine has shut down.
    pub async fn join(&self, ws: WorkspaceId) -> Result<(), SyncError> {
        if self.cmd.is_closed() {
            return Err(SyncError::Stopped);
        }
        let replica = self.replica.clone();
        let recorded = tokio::task::spawn_blocking(move || replica.join_workspace(&ws))
            .await
            .map_err(|source| Error::Task {
                task: "joining a workspace",
                source,
            })
            .and_then(|r| r);
        if let Err(e) = recorded {
            return Err(SyncError::from_error(&e));
        }
        self.cmd
            .send(Cmd::Join(ws))
            .await
            .map_err(|_| SyncError::Stopped)
    }

    /// Tells the engine the network is back: retry now instead of waiting
    /// for the backoff.
    pub async fn notify_online(&self) {
        let _ = self.cmd.send(Cmd::Online).await;
    }

    /// Tells the engine fresh credentials are available after an
    /// authentication failure.
    pub async fn credentials_updated(&self) {
        let _ = self.cmd.send(Cmd::CredentialsUpdated).await;
    }

    /// The status channel.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Progress and document events from now on.
    pub fn events(&self) -> broadcast::Receiver<SyncEvent> {
        self.events.subscribe()
    }

    /// My presence on a workspace's channel, through the engine's
    /// live-updates client: publish my state, watch the others', withdraw
    /// it by dropping the [`Presence`].
    ///
    /// # Errors
    /// [`LiveError::NotOffered`] when the remote has no live updates (or
    /// they were switched off), [`LiveError::Closed`] after the client shut
    /// down.
    pub fn presence(&self, workspace: WorkspaceId) -> Result<Presence, LiveError> {
        let live = self.live.as_ref().ok_or(LiveError::NotOffered)?;
        Ok(Presence::new(
            live.subscribe(workspace)?,
            live.presence_key(),
        ))
    }

    /// Stops the engine after the running pass (if any) finishes.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct EngineTask {
    replica: Replica,
    /// The app's remote behind a [`Recorder`] (own pushes, pulled workspaces).
    remote: Arc<dyn Remote>,
    /// Subscriptions of the synced workspaces; `None`: polling only.
    live: Option<EngineLive>,
    config: SyncConfig,
    /// The engine's time 0: the schedule counts milliseconds from here.
    epoch: Instant,
    status: watch::Sender<SyncStatus>,
    events: broadcast::Sender<SyncEvent>,
}

/// What the shell holds besides the schedule: the callers' channels.
#[derive(Default)]
struct Callers {
    /// `sync_now` callers, oldest first, waiting for a pass's outcome.
    waiting: VecDeque<oneshot::Sender<Result<SyncReport, SyncError>>>,
    /// Who asked to shut down.
    shutdown: Vec<oneshot::Sender<()>>,
}

async fn wait_opt(wake: Option<&super::live::Wake>) {
    match wake {
        Some(w) => w.wait().await,
        None => std::future::pending().await,
    }
}

/// The workspaces the replica holds documents of (none when it cannot say:
/// the first pass will).
async fn blocking_workspaces(replica: &Replica) -> Vec<WorkspaceId> {
    let r = replica.clone();
    match tokio::task::spawn_blocking(move || r.workspaces()).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot list the replica's workspaces");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the replica's workspaces");
            Vec::new()
        }
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A duration in whole milliseconds (the schedule's unit).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl EngineTask {
    /// Milliseconds since the engine started: the schedule's `now`.
    fn now(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    /// The loop: feed the schedule, do what it says. It decides when a pass
    /// runs ([`Schedule`]); this shell only turns commands, nudges and
    /// timers into its inputs, runs the passes and publishes.
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, cfg: ScheduleConfig) {
        let mut schedule = Schedule::new(cfg.clone(), self.now());
        let mut callers = Callers::default();
        if let Ok(dead) = self.dead_letter_count().await {
            self.status.send_modify(|s| s.dead_letters = dead);
        }
        let held = blocking_workspaces(&self.replica).await;
        if let Some(live) = &mut self.live {
            live.follow(&[cfg.workspaces, held].concat(), &[]);
        }
        let wake = self.live.as_ref().map(EngineLive::wake);
        self.on_live(&mut schedule);
        loop {
            // Every command queued while the last pass ran goes in before
            // the schedule decides, so they coalesce into one pass.
            while let Ok(cmd) = cmds.try_recv() {
                self.on_cmd(cmd, &mut schedule, &mut callers);
            }
            // Likewise every nudge (cheap: a lock and an empty map mostly).
            self.on_live(&mut schedule);
            match schedule.poll(self.now()) {
                Next::Stop => {
                    for w in callers.waiting.drain(..) {
                        let _ = w.send(Err(SyncError::Stopped));
                    }
                    for tx in callers.shutdown.drain(..) {
                        let _ = tx.send(());
                    }
                    return;
                }
                Next::Pass(plan) => {
                    let answers = plan.answers.min(callers.waiting.len());
                    let answering: Vec<_> = callers.waiting.drain(..answers).collect();
                    let result = self.pass(&plan.workspaces).await;
                    let end = match &result {
                        Ok(report) => PassEnd::Ok {
                            not_a_member: report.not_a_member.clone(),
                        },
                        Err(e) => PassEnd::Failed(e.kind().unwrap_or(SyncErrorKind::Task)),
                    };
                    let after = schedule.finished(self.now(), end);
                    if let Some(delay) = after.retry_in {
                        tracing::info!(
                            delay_ms = delay.as_millis() as u64,
                            "sync failed; backing off"
                        );
                    }
                    if let Some((want, gone)) = after.follow {
                        if let Some(live) = &mut self.live {
                            live.follow(&want, &gone);
                        }
                        self.on_live(&mut schedule);
                    }
                    for w in answering {
                        let _ = w.send(result.clone());
                    }
                }
                Next::Wait { until } => {
                    let at = until.map(|ms| self.epoch + Duration::from_millis(ms));
                    tokio::select! {
                        cmd = cmds.recv() => match cmd {
                            Some(cmd) => self.on_cmd(cmd, &mut schedule, &mut callers),
                            // Every handle is gone: stop.
                            None => schedule.handle(self.now(), Input::Shutdown),
                        },
                        _ = sleep_opt(at) => {}
                        _ = wait_opt(wake.as_deref()) => self.on_live(&mut schedule),
                    }
                }
            }
        }
    }

    /// Takes the nudges (a pull after the nudge debounce unless they were
    /// all our own pushes') and whether the live updates flow, for the
    /// schedule; publishes the live status.
    fn on_live(&self, schedule: &mut Schedule) {
        let Some(live) = &self.live else { return };
        let (pull, own) = live.take();
        if own > 0 {
            tracing::debug!(own, "nudges of our own pushes skipped");
        }
        let now = self.now();
        if pull {
            schedule.handle(now, Input::Nudge);
        }
        let status = live.status();
        schedule.handle(now, Input::Live(status.is_live()));
        self.status.send_if_modified(|s| {
            let changed = s.live.as_ref() != Some(&status);
            if changed {
                s.live = Some(status);
            }
            changed
        });
    }

    /// Turns a command into the schedule's input (the callers' channels
    /// stay here).
    fn on_cmd(&self, cmd: Cmd, schedule: &mut Schedule, callers: &mut Callers) {
        let input = match cmd {
            Cmd::SyncNow(tx) => {
                callers.waiting.push_back(tx);
                Input::SyncNow
            }
            Cmd::LocalCommit => {
                // Keep the pending count current while no pass runs (offline,
                // backing off, waiting for credentials).
                let pending = self.replica.pending();
                self.status.send_if_modified(|s| {
                    let changed = s.pending != pending;
                    s.pending = pending;
                    changed
                });
                Input::LocalCommit
            }
            Cmd::Online => Input::Online,
            Cmd::CredentialsUpdated => Input::CredentialsUpdated,
            Cmd::Join(ws) => Input::Join(ws),
            Cmd::Shutdown(tx) => {
                callers.shutdown.push(tx);
                Input::Shutdown
            }
        };
        schedule.handle(self.now(), input);
    }

    /// The number of dead letters (a store scan, on the blocking pool).
    async fn dead_letter_count(&self) -> Result<usize, Error> {
        let r = self.replica.clone();
        tokio::task::spawn_blocking(move || r.dead_letters().map(|d| d.len()))
            .await
            .map_err(|source| Error::Task {
                task: "counting dead letters",
                source,
            })?
    }

    async fn pass(&mut self, workspaces: &[WorkspaceId]) -> Result<SyncReport, SyncError> {
        self.status.send_modify(|s| s.state = SyncState::Syncing);
        let events = self.events.clone();
        let progress = move |p: SyncProgress| {
            let _ = events.send(SyncEvent::Progress(p));
        };
        let result = session::sync_once(
            &self.replica,
            self.remote.as_ref(),
            &self.config,
            workspaces,
            &progress,
        )
        .instrument(tracing::info_span!("sync_pass"))
        .await;
        let pending = self.replica.pending();
        let dead = self.dead_letter_count().await.unwrap_or(0);
        let now = self.replica.now_ms();
        match result {
            Ok(report) => {
                tracing::info!(
                    pushed = report.pushed,
                    pulled = report.pulled,
                    applied = report.applied,
                    "sync pass done"
                );
                let state = if report.workspaces == 0 {
                    tracing::warn!("{}", SyncWarning::NoWorkspace);
                    let _ = self
                        .events
                        .send(SyncEvent::Warning(SyncWarning::NoWorkspace));
                    SyncState::NoWorkspace
                } else {
                    SyncState::Idle
                };
                self.status.send_modify(|s| {
                    s.state = state;
                    s.pending = pending;
                    s.dead_letters = dead;
                    s.last_success_ms = Some(now);
                    s.last_error = None;
                    s.not_a_member.clone_from(&report.not_a_member);
                });
                let _ = self.events.send(SyncEvent::Finished(report.clone()));
                Ok(report)
            }
            Err(e) => {
                let err = SyncError::from_error(&e);
                tracing::warn!(error = %e, "sync pass failed");
                let offline = err.kind() == Some(SyncErrorKind::Offline);
                self.status.send_modify(|s| {
                    s.state = if offline {
                        SyncState::Offline
                    } else {
                        SyncState::Error
                    };
                    s.pending = pending;
                    s.dead_letters = dead;
                    s.last_error = Some(e.to_string());
                });
                let _ = self.events.send(SyncEvent::Failed(err.clone()));
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::RemoteError;
    use crate::store::StoreError;

    fn join_error() -> tokio::task::JoinError {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { tokio::task::spawn(async { panic!("a bug") }).await })
            .unwrap_err()
    }

    #[test]
    fn every_error_has_its_kind_and_only_offline_and_server_are_retryable() {
        let remote = |r: RemoteError| Error::Remote(r);
        let cases: Vec<(Error, SyncErrorKind)> = vec![
            (
                remote(RemoteError::Unavailable { reason: "x".into() }),
                SyncErrorKind::Offline,
            ),
            (
                remote(RemoteError::Timeout { after_ms: 1 }),
                SyncErrorKind::Offline,
            ),
            (
                remote(RemoteError::Unauthenticated {
                    message: "x".into(),
                }),
                SyncErrorKind::Auth,
            ),
            (
                remote(RemoteError::Forbidden {
                    message: "x".into(),
                }),
                SyncErrorKind::Forbidden,
            ),
            (
                remote(RemoteError::Server {
                    status: 503,
                    message: "x".into(),
                }),
                SyncErrorKind::Server,
            ),
            (
                remote(RemoteError::TooLarge {
                    message: "x".into(),
                }),
                SyncErrorKind::Rejected,
            ),
            (
                remote(RemoteError::Protocol { reason: "x".into() }),
                SyncErrorKind::Rejected,
            ),
            (
                remote(RemoteError::Task {
                    op: "push",
                    source: join_error(),
                }),
                SyncErrorKind::Task,
            ),
            (
                Error::Task {
                    task: "a test",
                    source: join_error(),
                },
                SyncErrorKind::Task,
            ),
            (
                Error::Store(StoreError::Encode {
                    tree: "docs",
                    reason: "x".into(),
                }),
                SyncErrorKind::Storage,
            ),
            (
                Error::Io {
                    action: "do a test",
                    source: std::io::Error::other("x"),
                },
                SyncErrorKind::Io,
            ),
            (
                Error::Entity(crate::entity::EntityError::NotFound {
                    id: crate::id::DocId::new_v7(1, [0; 10]),
                }),
                SyncErrorKind::Data,
            ),
        ];
        for (e, kind) in cases {
            let s = SyncError::from_error(&e);
            assert_eq!(s.kind(), Some(kind), "{e}");
            assert_eq!(
                s.is_retryable(),
                matches!(kind, SyncErrorKind::Offline | SyncErrorKind::Server),
                "{e}"
            );
            // A panicked task is never a retryable server error.
            if kind == SyncErrorKind::Task {
                assert!(!e.is_retryable(), "{e}");
            }
            assert!(s.to_string().contains(&e.to_string()));
        }
        assert_eq!(SyncError::Stopped.kind(), None);
        assert!(!SyncError::Stopped.is_retryable());
    }

    #[test]
    fn serialises_with_its_kind() {
        let e = SyncError::from_error(&Error::Remote(RemoteError::Timeout { after_ms: 5 }));
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["error"], "failed");
        assert_eq!(j["kind"], "offline");
        assert!(j["message"].as_str().unwrap().contains("5 ms"));
    }
}
