//! The snapshot-upload policy: after a workspace's pull, documents that
//! changed at least `snapshot_threshold` times since their last upload are
//! saved and uploaded, each covering the cursor just written.

use std::collections::VecDeque;

use super::{unexpected, Ctx, Effect, EffectId, Outcome, Sub};
use crate::error::Error;
use crate::id::{Collection, DocId, WorkspaceId};
use crate::protocol::wire::{Cursor, SnapshotUpload, MAX_SNAPSHOT_BYTES, WIRE_VERSION};
use crate::remote::RemoteError;

/// What the answer to a snapshot upload means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UploadVerdict {
    /// Stored: mark it uploaded.
    Uploaded,
    /// Not taken for this document (too large, refused): mark it so it is
    /// retried only after another `snapshot_threshold` changes, instead of
    /// on every pass.
    SkipDocument,
    /// Not allowed in this workspace (a reader may pull but not write
    /// snapshots): stop uploading this workspace's snapshots for this pass.
    SkipWorkspace,
    /// Any other failure ends the pass.
    Fail,
}

/// Maps the answer to an upload to a verdict.
pub(crate) fn verdict(answer: &Result<(), RemoteError>) -> UploadVerdict {
    match answer {
        Ok(()) => UploadVerdict::Uploaded,
        Err(RemoteError::Forbidden { .. }) => UploadVerdict::SkipWorkspace,
        Err(RemoteError::TooLarge { .. } | RemoteError::BadRequest { .. }) => {
            UploadVerdict::SkipDocument
        }
        Err(_) => UploadVerdict::Fail,
    }
}

/// Whether a snapshot of `len` bytes is sent at all (every remote refuses a
/// larger one).
pub(crate) fn fits(len: usize) -> bool {
    len <= MAX_SNAPSHOT_BYTES
}

#[derive(Debug)]
enum Waiting {
    Candidates(EffectId),
    Save {
        id: EffectId,
        doc: DocId,
        collection: Collection,
    },
    Put {
        id: EffectId,
        doc: DocId,
    },
    Mark(EffectId),
}

/// One workspace's snapshot uploads.
#[derive(Debug)]
pub(crate) struct UploadState {
    ws: WorkspaceId,
    covers: String,
    candidates: VecDeque<(DocId, Collection)>,
    waiting: Waiting,
}

impl UploadState {
    /// Starts the uploads of `ws` whose cursor is now `covers`; `None` when
    /// there is nothing to do (uploads off, or nothing pulled ever).
    pub(crate) fn start(ctx: &mut Ctx<'_>, ws: WorkspaceId, covers: &str) -> Option<Self> {
        if ctx.cfg.snapshot_threshold == 0 || covers.is_empty() {
            return None;
        }
        let id = ctx.emit(Effect::SnapshotCandidates {
            ws,
            threshold: ctx.cfg.snapshot_threshold,
        });
        Some(Self {
            ws,
            covers: covers.to_owned(),
            candidates: VecDeque::new(),
            waiting: Waiting::Candidates(id),
        })
    }

    /// Whether `id` is the effect this upload waits for.
    pub(crate) fn waits_for(&self, id: EffectId) -> bool {
        match &self.waiting {
            Waiting::Candidates(w) | Waiting::Mark(w) => *w == id,
            Waiting::Save { id: w, .. } | Waiting::Put { id: w, .. } => *w == id,
        }
    }

    /// Feeds the outcome of the effect this upload waits for.
    pub(crate) fn handle(&mut self, ctx: &mut Ctx<'_>, result: Result<Outcome, Error>) -> Sub {
        match &self.waiting {
            Waiting::Candidates(_) => match result {
                Ok(Outcome::Candidates(c)) => {
                    self.candidates = c.into();
                    self.next(ctx)
                }
                Ok(other) => Sub::Failed(unexpected("snapshot candidates", &other)),
                Err(e) => Sub::Failed(e),
            },
            Waiting::Save {
                doc, collection, ..
            } => {
                let (doc, collection) = (*doc, collection.clone());
                match result {
                    Ok(Outcome::Saved { bytes, heads }) => {
                        if !fits(bytes.len()) {
                            ctx.report.snapshots_skipped += 1;
                            self.mark(ctx, doc);
                            return Sub::Running;
                        }
                        let id = ctx.emit(Effect::PutSnapshot(SnapshotUpload {
                            v: WIRE_VERSION,
                            workspace: self.ws,
                            doc_id: doc,
                            collection,
                            heads,
                            covers: Cursor(self.covers.clone()),
                            bytes,
                        }));
                        self.waiting = Waiting::Put { id, doc };
                        Sub::Running
                    }
                    Ok(other) => Sub::Failed(unexpected("saved bytes", &other)),
                    Err(e) => Sub::Failed(e),
                }
            }
            Waiting::Put { doc, .. } => {
                let doc = *doc;
                let answer = match result {
                    Ok(Outcome::SnapshotStored) => Ok(()),
                    Ok(other) => return Sub::Failed(unexpected("a snapshot outcome", &other)),
                    Err(Error::Remote(e)) => Err(e),
                    Err(e) => return Sub::Failed(e),
                };
                match verdict(&answer) {
                    UploadVerdict::Uploaded => {
                        ctx.report.snapshots_uploaded += 1;
                        self.mark(ctx, doc);
                        Sub::Running
                    }
                    UploadVerdict::SkipDocument => {
                        if let Err(e) = &answer {
                            tracing::warn!(ws = %self.ws, doc = %doc, error = %e, "snapshot not accepted; skipped");
                        }
                        ctx.report.snapshots_skipped += 1;
                        self.mark(ctx, doc);
                        Sub::Running
                    }
                    UploadVerdict::SkipWorkspace => {
                        if let Err(e) = &answer {
                            tracing::info!(ws = %self.ws, error = %e, "snapshot upload not allowed; skipping snapshots");
                        }
                        ctx.report.snapshots_skipped += 1;
                        Sub::Finished
                    }
                    UploadVerdict::Fail => match answer {
                        Err(e) => Sub::Failed(e.into()),
                        Ok(()) => Sub::Finished,
                    },
                }
            }
            Waiting::Mark(_) => match result {
                Ok(Outcome::Done) => self.next(ctx),
                Ok(other) => Sub::Failed(unexpected("marked", &other)),
                Err(e) => Sub::Failed(e),
            },
        }
    }

    fn next(&mut self, ctx: &mut Ctx<'_>) -> Sub {
        match self.candidates.pop_front() {
            Some((doc, collection)) => {
                let id = ctx.emit(Effect::Save { id: doc });
                self.waiting = Waiting::Save {
                    id,
                    doc,
                    collection,
                };
                Sub::Running
            }
            None => Sub::Finished,
        }
    }

    fn mark(&mut self, ctx: &mut Ctx<'_>, doc: DocId) {
        self.waiting = Waiting::Mark(ctx.emit(Effect::MarkSnapshotUploaded { id: doc }));
    }
}
