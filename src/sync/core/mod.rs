//! The sync core: every decision of a sync pass, with no I/O.
//!
//! A [`Pass`] is explicit state. It is started with [`Pass::start`] and fed
//! the outcome of each effect it asked for with [`Pass::handle`]; each call
//! returns a [`Step`]: the effects to run next (replica calls — blocking
//! store I/O — and remote calls), progress for the UI, and, at the end, the
//! [`SyncReport`] or the error that ended the pass. The core never reads a
//! clock (the caller passes `now`), never blocks, never awaits and imports
//! none of tokio, sled or reqwest (`src/layering.rs` checks it). Two shells
//! execute its effects: [`session`](super::session) on tokio against a real
//! [`Remote`](crate::Remote), and the deterministic simulation
//! (`test_util::sim`, feature `test-util`), which delivers the same effects
//! through a simulated network, crashes replicas between effects and replays
//! a failing seed exactly.
//!
//! What lives here (samod's shape, `DESIGN.md` §6):
//!
//! - [`push`]: grouping the outbox by workspace, one request per workspace,
//!   splitting a batch the remote finds too large, mapping each outcome to
//!   acknowledge / dead letter / fail, a workspace that refused us;
//! - [`pull`]: whether a workspace bootstraps from snapshots, gathering
//!   pages into apply batches (count and byte thresholds), fetching the next
//!   pages while a batch is applied, the snapshot pages of a bootstrap and
//!   the log fallback for untrusted snapshots, the cursor record at the end;
//! - [`upload`]: the snapshot-upload policy (threshold, size bound, what a
//!   refusal means);
//! - [`Pass`] (`pass.rs`): the order of a pass — push everything, then per
//!   workspace pull and upload — and which failures end it;
//! - [`schedule`]: *when* a pass runs — the engine's triggers, debounce
//!   windows, coalescing, backoff ([`Backoff`]) and shutdown, a
//!   [`Schedule`](schedule::Schedule) fed inputs and the time, which the
//!   tokio engine only executes.
//!
//! Concurrency contract: at most one replica effect and one remote effect
//! are in flight at once (a pull fetches the next page while a batch is
//! applied); every other effect waits for the previous one. A shell may run
//! the two in-flight effects in any order and complete them in any order.
//! Persist before acknowledge: the core asks to remove an outbox entry only
//! after the remote's answer, and writes a cursor only with (or after) the
//! changes it covers.

mod backoff;
mod config;
mod kind;
mod pass;
pub(crate) mod pull;
pub(crate) mod push;
mod report;
pub(crate) mod schedule;
pub(crate) mod upload;

pub use backoff::Backoff;
pub use config::SyncConfig;
pub use kind::SyncErrorKind;
pub(crate) use pass::Pass;
pub use report::{SyncProgress, SyncReport};

use automerge::ChangeHash;

use crate::error::Error;
use crate::id::{Collection, DocId, WorkspaceId};
use crate::protocol::snapshot_check::DownloadedSnapshot;
use crate::protocol::wire::{
    PullPage, PullRequest, PushRequest, PushResponse, SnapshotPage, SnapshotQuery, SnapshotUpload,
};
use crate::replica::{ApplyReport, RemoteChange};
use crate::store::{CursorRecord, OutboxEntry};

/// Names one effect of a pass, so its outcome finds its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct EffectId(pub(crate) u64);

/// What the core asks a shell to do.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Replica: the oldest outbox entries (`SyncPort::peek`).
    Peek {
        /// At most this many entries.
        max_count: usize,
        /// At most this many change bytes.
        max_bytes: usize,
    },
    /// Replica: acknowledge `acks`, then move each of `dead` to the dead
    /// letters with its reason.
    Settle {
        /// Confirmed by the remote (stored or already present).
        acks: Vec<ChangeHash>,
        /// Refused by the remote, with the reason.
        dead: Vec<(ChangeHash, String)>,
    },
    /// Replica: every workspace it holds documents of or has synced.
    Workspaces,
    /// Replica: the cursor record of a workspace.
    ReadCursor {
        /// The workspace.
        ws: WorkspaceId,
    },
    /// Replica: apply pulled changes, with the cursor record in the same
    /// transaction when given (`SyncPort::apply_remote`).
    Apply {
        /// The workspace the changes belong to.
        ws: WorkspaceId,
        /// The changes.
        changes: Vec<RemoteChange>,
        /// The cursor record to persist with them.
        cursor: Option<CursorRecord>,
    },
    /// Replica: merge downloaded snapshots (`SyncPort::apply_snapshots`).
    ApplySnapshots {
        /// The snapshots.
        snapshots: Vec<DownloadedSnapshot>,
    },
    /// Replica: write a workspace's cursor record alone.
    WriteCursor {
        /// The workspace.
        ws: WorkspaceId,
        /// The record.
        rec: CursorRecord,
    },
    /// Replica: documents worth a snapshot upload.
    SnapshotCandidates {
        /// The workspace.
        ws: WorkspaceId,
        /// Changes since the last upload.
        threshold: u64,
    },
    /// Replica: a document's `save()` bytes and heads.
    Save {
        /// The document.
        id: DocId,
    },
    /// Replica: record that `id`'s snapshot was handled (uploaded or
    /// skipped for good).
    MarkSnapshotUploaded {
        /// The document.
        id: DocId,
    },
    /// Remote: push a batch.
    Push(PushRequest),
    /// Remote: pull a page.
    Pull(PullRequest),
    /// Remote: a page of snapshots.
    GetSnapshots(SnapshotQuery),
    /// Remote: store a snapshot.
    PutSnapshot(SnapshotUpload),
}

impl Effect {
    /// Whether this is a remote call (else a replica call).
    pub(crate) fn is_remote(&self) -> bool {
        matches!(
            self,
            Effect::Push(_) | Effect::Pull(_) | Effect::GetSnapshots(_) | Effect::PutSnapshot(_)
        )
    }
}

/// What an effect produced, fed back to the core.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// [`Effect::Peek`].
    Peeked(Vec<OutboxEntry>),
    /// [`Effect::Settle`], [`Effect::WriteCursor`],
    /// [`Effect::MarkSnapshotUploaded`]: done.
    Done,
    /// [`Effect::Workspaces`].
    Workspaces(Vec<WorkspaceId>),
    /// [`Effect::ReadCursor`].
    Cursor(Option<CursorRecord>),
    /// [`Effect::Apply`], [`Effect::ApplySnapshots`].
    Applied(ApplyReport),
    /// [`Effect::SnapshotCandidates`].
    Candidates(Vec<(DocId, Collection)>),
    /// [`Effect::Save`].
    Saved {
        /// `save()` bytes.
        bytes: Vec<u8>,
        /// The heads they hold.
        heads: Vec<ChangeHash>,
    },
    /// [`Effect::Push`].
    Pushed(PushResponse),
    /// [`Effect::Pull`].
    Pulled(PullPage),
    /// [`Effect::GetSnapshots`].
    Snapshots(SnapshotPage),
    /// [`Effect::PutSnapshot`]: taken (stored, or superseded by one that
    /// covers as much).
    SnapshotStored,
}

/// What a pass wants after a call.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// Effects to run now (at most one replica and one remote effect are in
    /// flight at any time, these included).
    pub(crate) effects: Vec<(EffectId, Effect)>,
    /// Progress to report, in order.
    pub(crate) progress: Vec<SyncProgress>,
    /// The end of the pass: its report, or the error that ended it. Effects
    /// still in flight then are abandoned (the next pass redoes their work).
    pub(crate) done: Option<Result<SyncReport, Error>>,
}

/// What a sub-machine of the pass returns to it.
#[derive(Debug)]
pub(crate) enum Sub {
    /// Waiting for effects (already emitted).
    Running,
    /// Finished well.
    Finished,
    /// Failed: the error.
    Failed(Error),
}

/// The context a sub-machine emits into.
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a SyncConfig,
    pub(crate) report: &'a mut SyncReport,
    pub(crate) now: i64,
    next_id: &'a mut u64,
    step: &'a mut Step,
}

impl Ctx<'_> {
    /// Emits an effect and returns its id.
    pub(crate) fn emit(&mut self, e: Effect) -> EffectId {
        *self.next_id += 1;
        let id = EffectId(*self.next_id);
        self.step.effects.push((id, e));
        id
    }

    /// Reports progress.
    pub(crate) fn progress(&mut self, p: SyncProgress) {
        self.step.progress.push(p);
    }
}

/// An outcome that was not the one the core asked for: a shell bug, reported
/// as a protocol error rather than a panic.
pub(crate) fn unexpected(what: &str, got: &Outcome) -> Error {
    Error::Remote(crate::remote::RemoteError::Protocol {
        reason: format!("sync core: expected {what}, got {got:?}"),
    })
}

#[cfg(test)]
mod schedule_tests;
#[cfg(test)]
mod tests;
