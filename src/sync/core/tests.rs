//! The core driven directly: effects asked for, outcomes fed by hand.

use automerge::ChangeHash;

use super::push::{decide, group_by_workspace, Decision};
use super::upload::{verdict, UploadVerdict};
use super::*;
use crate::protocol::wire::{
    ChangeEnvelope, Cursor, PullPage, PulledChange, PushOutcome, PushResponse, SnapshotPage,
    WIRE_VERSION,
};
use crate::remote::RemoteError;

fn ws(n: u8) -> WorkspaceId {
    WorkspaceId::from_random([n; 16])
}

fn doc(n: u8) -> DocId {
    DocId::new_v7(1_790_000_000_000, [n; 10])
}

fn entry(w: u8, d: u8, h: u8) -> OutboxEntry {
    OutboxEntry {
        workspace: ws(w),
        doc_id: doc(d),
        collection: Collection::new("tasks").expect("collection"),
        hash: ChangeHash([h; 32]),
        bytes: vec![h; 10],
        enqueued_ms: 0,
    }
}

fn stored(n: usize) -> PushResponse {
    PushResponse {
        v: WIRE_VERSION,
        results: (0..n)
            .map(|i| PushOutcome::Stored { seq: i as i64 })
            .collect(),
    }
}

fn page(hashes: &[u8], next: &str, has_more: bool) -> PullPage {
    PullPage {
        v: WIRE_VERSION,
        changes: hashes
            .iter()
            .map(|h| PulledChange {
                seq: i64::from(*h),
                change: ChangeEnvelope {
                    doc_id: doc(1),
                    collection: Collection::new("tasks").expect("collection"),
                    hash: ChangeHash([*h; 32]),
                    bytes: vec![*h; 100],
                },
            })
            .collect(),
        next_cursor: Cursor(next.to_owned()),
        has_more,
    }
}

/// A pass under test: the effects in flight, in order.
struct Driver {
    pass: Pass,
    inflight: Vec<(EffectId, Effect)>,
    progress: Vec<SyncProgress>,
    done: Option<Result<SyncReport, Error>>,
}

impl Driver {
    fn new(pass: Pass) -> Self {
        let mut d = Self {
            pass,
            inflight: Vec::new(),
            progress: Vec::new(),
            done: None,
        };
        let step = d.pass.start(7);
        d.absorb(step);
        d
    }

    fn absorb(&mut self, step: Step) {
        let remote = self.inflight.iter().filter(|(_, e)| e.is_remote()).count()
            + step.effects.iter().filter(|(_, e)| e.is_remote()).count();
        let local = self.inflight.len() + step.effects.len() - remote;
        assert!(
            remote <= 1 && local <= 1,
            "more in flight than the contract allows: {:?} + {:?}",
            self.inflight,
            step.effects
        );
        self.inflight.extend(step.effects);
        self.progress.extend(step.progress);
        if step.done.is_some() {
            self.done = step.done;
        }
    }

    /// Takes the in-flight effect `pick` selects (panics when none).
    fn take(&mut self, pick: impl Fn(&Effect) -> bool) -> (EffectId, Effect) {
        let i = self
            .inflight
            .iter()
            .position(|(_, e)| pick(e))
            .unwrap_or_else(|| panic!("no such effect in flight: {:?}", self.inflight));
        self.inflight.remove(i)
    }

    fn feed(&mut self, id: EffectId, r: Result<Outcome, Error>) {
        let step = self.pass.handle(9, id, r);
        self.absorb(step);
    }

    /// Answers the in-flight effect `pick` selects with `r`; returns it.
    fn answer(&mut self, pick: impl Fn(&Effect) -> bool, r: Result<Outcome, Error>) -> Effect {
        let (id, e) = self.take(pick);
        self.feed(id, r);
        e
    }

    fn report(self) -> SyncReport {
        match self.done {
            Some(Ok(r)) => r,
            other => panic!("pass not done well: {other:?}"),
        }
    }
}

fn is_peek(e: &Effect) -> bool {
    matches!(e, Effect::Peek { .. })
}
fn is_push(e: &Effect) -> bool {
    matches!(e, Effect::Push(_))
}
fn is_settle(e: &Effect) -> bool {
    matches!(e, Effect::Settle { .. })
}
fn is_pull(e: &Effect) -> bool {
    matches!(e, Effect::Pull(_))
}
fn is_apply(e: &Effect) -> bool {
    matches!(e, Effect::Apply { .. })
}

#[test]
fn groups_by_workspace_in_outbox_order() {
    let groups = group_by_workspace(vec![entry(1, 1, 1), entry(2, 2, 2), entry(1, 1, 3)]);
    let shape: Vec<(WorkspaceId, Vec<u8>)> = groups
        .iter()
        .map(|(w, es)| (*w, es.iter().map(|e| e.hash.0[0]).collect()))
        .collect();
    assert_eq!(shape, vec![(ws(1), vec![1, 3]), (ws(2), vec![2])]);
}

#[test]
fn too_large_splits_in_halves_then_dead_letters_a_single_change() {
    let batch = vec![entry(1, 1, 1), entry(1, 1, 2), entry(1, 1, 3)];
    let too_large = || {
        Err(RemoteError::TooLarge {
            message: "413".into(),
        })
    };
    match decide(ws(1), batch, too_large()) {
        Decision::Split { left, right } => {
            assert_eq!(left.len(), 1);
            assert_eq!(right.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    match decide(ws(1), vec![entry(1, 1, 9)], too_large()) {
        Decision::Settle { acks, dead, .. } => {
            assert!(acks.is_empty());
            assert_eq!(dead.len(), 1);
            assert!(dead[0].1.contains("too large"), "{}", dead[0].1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn outcomes_map_to_acks_and_dead_letters() {
    let batch = vec![entry(1, 1, 1), entry(1, 1, 2), entry(1, 1, 3)];
    let resp = PushResponse {
        v: WIRE_VERSION,
        results: vec![
            PushOutcome::Stored { seq: 1 },
            PushOutcome::AlreadyPresent,
            PushOutcome::Rejected {
                reason: "bad hash".into(),
            },
        ],
    };
    match decide(ws(1), batch.clone(), Ok(resp)) {
        Decision::Settle {
            acks,
            dead,
            stored,
            already_present,
            not_a_member,
        } => {
            assert_eq!(acks, vec![ChangeHash([1; 32]), ChangeHash([2; 32])]);
            assert_eq!(dead, vec![(ChangeHash([3; 32]), "bad hash".to_owned())]);
            assert_eq!((stored, already_present, not_a_member), (1, 1, false));
        }
        other => panic!("{other:?}"),
    }
    // A response that does not answer every change acknowledges nothing.
    assert!(matches!(
        decide(ws(1), batch.clone(), Ok(stored(2))),
        Decision::Fail(Error::Remote(RemoteError::Protocol { .. }))
    ));
    // A retryable failure removes nothing.
    assert!(matches!(
        decide(ws(1), batch, Err(RemoteError::Timeout { after_ms: 1 })),
        Decision::Fail(e) if e.is_retryable()
    ));
}

#[test]
fn a_pass_acknowledges_only_after_the_answer() {
    let mut d = Driver::new(Pass::new(SyncConfig::default(), &[], 2));
    d.answer(
        is_peek,
        Ok(Outcome::Peeked(vec![entry(1, 1, 1), entry(2, 2, 2)])),
    );
    // One request per workspace, nothing settled before its answer.
    let e = d.answer(is_push, Ok(Outcome::Pushed(stored(1))));
    let Effect::Push(req) = e else { unreachable!() };
    assert_eq!(req.workspace, ws(1));
    assert_eq!(d.inflight.len(), 1);
    let e = d.answer(is_settle, Ok(Outcome::Done));
    assert!(matches!(e, Effect::Settle { ref acks, .. } if acks == &[ChangeHash([1; 32])]));
    // The second workspace's request fails: nothing of it is settled and the
    // pass ends with the retryable error.
    d.answer(
        is_push,
        Err(Error::Remote(RemoteError::Unavailable {
            reason: "down".into(),
        })),
    );
    assert!(d.inflight.is_empty());
    match d.done {
        Some(Err(e)) => assert!(e.is_retryable(), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(d.progress, vec![SyncProgress::Pushed { done: 1, total: 2 }]);
}

#[test]
fn a_pass_pushes_what_was_queued_at_its_start_then_pulls() {
    // Two entries queued when the pass starts; the app keeps committing, so
    // every peek finds more. The push half ends once the two have left the
    // outbox (with what the peeks brought along), and the pull comes.
    let cfg = SyncConfig {
        push_max_count: 1,
        snapshot_threshold: 0,
        ..SyncConfig::default()
    };
    let mut d = Driver::new(Pass::new(cfg, &[], 2));
    for h in 1..=2u8 {
        d.answer(is_peek, Ok(Outcome::Peeked(vec![entry(1, 1, h)])));
        d.answer(is_push, Ok(Outcome::Pushed(stored(1))));
        d.answer(is_settle, Ok(Outcome::Done));
    }
    assert!(
        d.inflight.iter().all(|(_, e)| !is_peek(e)),
        "a third peek: the push half would chase the app's commits: {:?}",
        d.inflight
    );
    d.answer(
        |e| matches!(e, Effect::Workspaces),
        Ok(Outcome::Workspaces(vec![ws(1)])),
    );
    assert!(d
        .inflight
        .iter()
        .any(|(_, e)| matches!(e, Effect::ReadCursor { .. })));
    assert_eq!(
        d.progress.last(),
        Some(&SyncProgress::Pushed { done: 2, total: 2 })
    );
}

#[test]
fn not_a_member_dead_letters_the_workspace_and_the_pass_goes_on() {
    let cfg = SyncConfig {
        push_max_count: 1,
        snapshot_threshold: 0,
        ..SyncConfig::default()
    };
    let mut d = Driver::new(Pass::new(cfg, &[], 3));
    d.answer(is_peek, Ok(Outcome::Peeked(vec![entry(1, 1, 1)])));
    d.answer(
        is_push,
        Err(Error::Remote(RemoteError::NotAMember {
            message: "gone".into(),
        })),
    );
    let e = d.answer(is_settle, Ok(Outcome::Done));
    let Effect::Settle { dead, .. } = e else {
        unreachable!()
    };
    assert!(dead[0].1.contains("no longer a member"), "{dead:?}");
    // The next batch of the same workspace is not even sent.
    d.answer(is_peek, Ok(Outcome::Peeked(vec![entry(1, 1, 2)])));
    assert!(
        d.inflight.iter().all(|(_, e)| is_settle(e)),
        "{:?}",
        d.inflight
    );
    d.answer(is_settle, Ok(Outcome::Done));
    d.answer(is_peek, Ok(Outcome::Peeked(vec![])));
    // Its pull is skipped; the other workspace is pulled.
    d.answer(
        |e| matches!(e, Effect::Workspaces),
        Ok(Outcome::Workspaces(vec![ws(1), ws(2)])),
    );
    let e = d.answer(
        |e| matches!(e, Effect::ReadCursor { .. }),
        Ok(Outcome::Cursor(Some(CursorRecord {
            cursor: "c".into(),
            last_sync_ms: 1,
            bootstrapped: true,
        }))),
    );
    assert!(matches!(e, Effect::ReadCursor { ws: w } if w == ws(2)));
    d.answer(is_pull, Ok(Outcome::Pulled(page(&[], "c", false))));
    let e = d.answer(is_apply, Ok(Outcome::Applied(ApplyReport::default())));
    assert!(matches!(e, Effect::Apply { cursor: Some(ref c), .. } if c.cursor == "c"));
    let e = d.answer(
        |e| matches!(e, Effect::WriteCursor { .. }),
        Ok(Outcome::Done),
    );
    assert!(
        matches!(e, Effect::WriteCursor { ref rec, .. } if rec.last_sync_ms == 9 && rec.bootstrapped)
    );
    let r = d.report();
    assert_eq!(r.not_a_member, vec![ws(1)]);
    assert_eq!(r.dead_lettered, 2);
    assert_eq!(r.push_batches, 1);
}

#[test]
fn bootstrap_only_when_never_finished() {
    let cfg = SyncConfig::default();
    let fresh = pull::fresh_record();
    assert!(pull::bootstraps(&fresh, &cfg));
    let off = SyncConfig {
        bootstrap_from_snapshots: false,
        ..cfg.clone()
    };
    assert!(!pull::bootstraps(&fresh, &off));
    // An interrupted bootstrap finishes as one even when switched off.
    let interrupted = CursorRecord {
        cursor: "5".into(),
        ..fresh.clone()
    };
    assert!(pull::bootstraps(&interrupted, &off));
    let done = CursorRecord {
        bootstrapped: true,
        ..interrupted
    };
    assert!(!pull::bootstraps(&done, &cfg));
}

#[test]
fn pages_gather_into_batches_and_the_cursor_travels_with_its_batch() {
    let cfg = SyncConfig {
        apply_batch_changes: 4,
        bootstrap_from_snapshots: false,
        ..SyncConfig::default()
    };
    assert!(pull::batch_full(&cfg, 4, 0, false));
    assert!(!pull::batch_full(&cfg, 3, 0, false));
    assert!(pull::batch_full(&cfg, 0, 0, true));
    assert!(pull::batch_full(&cfg, 1, cfg.apply_batch_bytes, false));

    let mut d = Driver::new(Pass::pull_only(cfg, ws(1)));
    d.answer(
        |e| matches!(e, Effect::ReadCursor { .. }),
        Ok(Outcome::Cursor(None)),
    );
    // Page 1 (3 changes): not a batch yet; the next page is asked at once.
    let e = d.answer(is_pull, Ok(Outcome::Pulled(page(&[1, 2, 3], "3", true))));
    assert!(matches!(e, Effect::Pull(ref r) if r.cursor.is_start() && !r.skip_snapshotted));
    assert!(d.inflight.iter().all(|(_, e)| is_pull(e)));
    // Page 2 makes a batch: applied with the cursor after page 2, while
    // page 3 is fetched.
    d.answer(is_pull, Ok(Outcome::Pulled(page(&[4, 5], "5", true))));
    assert_eq!(d.inflight.len(), 2, "{:?}", d.inflight);
    // Page 3 (the last) arrives before the apply finishes: it waits.
    d.answer(is_pull, Ok(Outcome::Pulled(page(&[6], "6", false))));
    let e = d.answer(
        is_apply,
        Ok(Outcome::Applied(ApplyReport {
            applied: 5,
            ..ApplyReport::default()
        })),
    );
    match e {
        Effect::Apply {
            changes, cursor, ..
        } => {
            assert_eq!(changes.len(), 5);
            assert_eq!(cursor.map(|c| c.cursor), Some("5".to_owned()));
        }
        other => panic!("{other:?}"),
    }
    let e = d.answer(
        is_apply,
        Ok(Outcome::Applied(ApplyReport {
            applied: 1,
            ..ApplyReport::default()
        })),
    );
    assert!(matches!(e, Effect::Apply { cursor: Some(ref c), .. } if c.cursor == "6"));
    d.answer(
        |e| matches!(e, Effect::WriteCursor { .. }),
        Ok(Outcome::Done),
    );
    let r = d.report();
    assert_eq!((r.pages, r.pulled, r.applied), (3, 6, 6));
}

#[test]
fn a_failed_fetch_still_applies_what_arrived_then_fails() {
    let cfg = SyncConfig {
        apply_batch_changes: 1,
        bootstrap_from_snapshots: false,
        ..SyncConfig::default()
    };
    let mut d = Driver::new(Pass::pull_only(cfg, ws(1)));
    d.answer(
        |e| matches!(e, Effect::ReadCursor { .. }),
        Ok(Outcome::Cursor(None)),
    );
    d.answer(is_pull, Ok(Outcome::Pulled(page(&[1], "1", true))));
    d.answer(
        is_pull,
        Err(Error::Remote(RemoteError::Unavailable {
            reason: "x".into(),
        })),
    );
    assert!(d.done.is_none(), "the fetched batch is applied first");
    d.answer(is_apply, Ok(Outcome::Applied(ApplyReport::default())));
    assert!(matches!(
        d.done,
        Some(Err(Error::Remote(RemoteError::Unavailable { .. })))
    ));
}

#[test]
fn a_bootstrap_loads_snapshots_after_the_log_then_marks_itself_done() {
    let cfg = SyncConfig {
        snapshot_page_limit: 1,
        ..SyncConfig::default()
    };
    let mut d = Driver::new(Pass::pull_only(cfg, ws(1)));
    d.answer(
        |e| matches!(e, Effect::ReadCursor { .. }),
        Ok(Outcome::Cursor(None)),
    );
    let e = d.answer(is_pull, Ok(Outcome::Pulled(page(&[], "0", false))));
    assert!(matches!(e, Effect::Pull(ref r) if r.skip_snapshotted));
    d.answer(is_apply, Ok(Outcome::Applied(ApplyReport::default())));
    let e = d.answer(
        |e| matches!(e, Effect::GetSnapshots(_)),
        Ok(Outcome::Snapshots(SnapshotPage {
            v: 2,
            snapshots: Vec::new(),
            has_more: false,
        })),
    );
    assert!(matches!(e, Effect::GetSnapshots(ref q) if q.after.is_none() && q.limit == 1));
    d.answer(
        |e| matches!(e, Effect::ApplySnapshots { .. }),
        Ok(Outcome::Applied(ApplyReport::default())),
    );
    let e = d.answer(
        |e| matches!(e, Effect::WriteCursor { .. }),
        Ok(Outcome::Done),
    );
    assert!(
        matches!(e, Effect::WriteCursor { ref rec, .. } if rec.bootstrapped && rec.cursor == "0")
    );
    assert!(d.done.is_some());
}

#[test]
fn a_cursor_behind_the_horizon_re_bootstraps_from_there_and_keeps_what_arrived() {
    let cfg = SyncConfig {
        apply_batch_changes: 1,
        ..SyncConfig::default()
    };
    let mut d = Driver::new(Pass::pull_only(cfg, ws(1)));
    d.answer(
        |e| matches!(e, Effect::ReadCursor { .. }),
        Ok(Outcome::Cursor(Some(CursorRecord {
            cursor: "3".into(),
            last_sync_ms: 1,
            bootstrapped: true,
        }))),
    );
    let e = d.answer(is_pull, Ok(Outcome::Pulled(page(&[4], "4", true))));
    assert!(matches!(e, Effect::Pull(ref r) if !r.skip_snapshotted && r.cursor.0 == "3"));
    // The next page: the remote pruned past our cursor meanwhile.
    let e = d.answer(
        is_pull,
        Err(Error::Remote(RemoteError::CursorPruned {
            horizon: "9".into(),
            message: "behind".into(),
        })),
    );
    assert!(matches!(e, Effect::Pull(ref r) if !r.skip_snapshotted && r.cursor.0 == "4"));
    assert!(d.done.is_none(), "a pruned cursor is no failure");
    // The page that arrived is applied as a log page...
    let e = d.answer(is_apply, Ok(Outcome::Applied(ApplyReport::default())));
    assert!(
        matches!(e, Effect::Apply { cursor: Some(ref c), .. } if c.cursor == "4" && c.bootstrapped)
    );
    // ...and the pull goes on from the same cursor as a bootstrap.
    let e = d.answer(is_pull, Ok(Outcome::Pulled(page(&[12], "12", false))));
    assert!(matches!(e, Effect::Pull(ref r) if r.skip_snapshotted && r.cursor.0 == "4"));
    let e = d.answer(is_apply, Ok(Outcome::Applied(ApplyReport::default())));
    assert!(
        matches!(e, Effect::Apply { cursor: Some(ref c), .. } if c.cursor == "12" && !c.bootstrapped),
        "until the snapshots are merged the record says: not bootstrapped"
    );
    d.answer(
        |e| matches!(e, Effect::GetSnapshots(_)),
        Ok(Outcome::Snapshots(SnapshotPage {
            v: 2,
            snapshots: Vec::new(),
            has_more: false,
        })),
    );
    d.answer(
        |e| matches!(e, Effect::ApplySnapshots { .. }),
        Ok(Outcome::Applied(ApplyReport::default())),
    );
    let e = d.answer(
        |e| matches!(e, Effect::WriteCursor { .. }),
        Ok(Outcome::Done),
    );
    assert!(
        matches!(e, Effect::WriteCursor { ref rec, .. } if rec.bootstrapped && rec.cursor == "12")
    );
    assert_eq!(d.report().rebootstraps, 1);
}

#[test]
fn snapshot_refusals() {
    assert_eq!(verdict(&Ok(())), UploadVerdict::Uploaded);
    assert_eq!(
        verdict(&Err(RemoteError::Forbidden {
            message: "reader".into()
        })),
        UploadVerdict::SkipWorkspace
    );
    assert_eq!(
        verdict(&Err(RemoteError::TooLarge {
            message: "big".into()
        })),
        UploadVerdict::SkipDocument
    );
    assert_eq!(
        verdict(&Err(RemoteError::Unavailable {
            reason: "down".into()
        })),
        UploadVerdict::Fail
    );
    assert!(upload::fits(crate::protocol::wire::MAX_SNAPSHOT_BYTES));
    assert!(!upload::fits(crate::protocol::wire::MAX_SNAPSHOT_BYTES + 1));
}

#[test]
fn uploads_cover_the_cursor_just_written_and_skip_what_does_not_fit() {
    let cfg = SyncConfig {
        bootstrap_from_snapshots: false,
        snapshot_threshold: 2,
        ..SyncConfig::default()
    };
    let mut d = Driver::new(Pass::new(cfg, &[ws(1)], 0));
    d.answer(is_peek, Ok(Outcome::Peeked(vec![])));
    d.answer(
        |e| matches!(e, Effect::Workspaces),
        Ok(Outcome::Workspaces(vec![])),
    );
    d.answer(
        |e| matches!(e, Effect::ReadCursor { .. }),
        Ok(Outcome::Cursor(None)),
    );
    d.answer(is_pull, Ok(Outcome::Pulled(page(&[1], "41", false))));
    d.answer(is_apply, Ok(Outcome::Applied(ApplyReport::default())));
    d.answer(
        |e| matches!(e, Effect::WriteCursor { .. }),
        Ok(Outcome::Done),
    );
    let tasks = Collection::new("tasks").expect("collection");
    let e = d.answer(
        |e| matches!(e, Effect::SnapshotCandidates { .. }),
        Ok(Outcome::Candidates(vec![
            (doc(1), tasks.clone()),
            (doc(2), tasks),
        ])),
    );
    assert!(matches!(e, Effect::SnapshotCandidates { threshold: 2, .. }));
    // doc 1 is too large to send: marked, not sent.
    d.answer(
        |e| matches!(e, Effect::Save { .. }),
        Ok(Outcome::Saved {
            bytes: vec![0; crate::protocol::wire::MAX_SNAPSHOT_BYTES + 1],
            heads: vec![],
        }),
    );
    d.answer(
        |e| matches!(e, Effect::MarkSnapshotUploaded { .. }),
        Ok(Outcome::Done),
    );
    d.answer(
        |e| matches!(e, Effect::Save { .. }),
        Ok(Outcome::Saved {
            bytes: vec![1],
            heads: vec![],
        }),
    );
    let e = d.answer(
        |e| matches!(e, Effect::PutSnapshot(_)),
        Ok(Outcome::SnapshotStored),
    );
    assert!(matches!(e, Effect::PutSnapshot(ref s) if s.covers.0 == "41" && s.doc_id == doc(2)));
    d.answer(
        |e| matches!(e, Effect::MarkSnapshotUploaded { .. }),
        Ok(Outcome::Done),
    );
    let r = d.report();
    assert_eq!((r.snapshots_uploaded, r.snapshots_skipped), (1, 1));
}
