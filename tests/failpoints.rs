//! sled's failpoints (cargo feature `failpoints`): every I/O step of sled's
//! open, flush and snapshot fails in turn, and the replica must either open
//! with every committed write or fail with a typed error — and once the
//! fault is gone, the directory opens normally with every committed write.
//!
//! The list below is every `io_fail!` of sled 0.34.7 (`grep -rn 'io_fail!'`
//! in its source). Each is armed to fail at its first hit, and the test
//! checks that its scenario really reached it (an armed failpoint is still
//! pending if its code never ran). Failpoints are process-global, so the
//! tests take one lock; run with
//! `cargo test --features failpoints --test failpoints`.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Value};
use supamerge::{Collection, DocId, Error, Replica, StoreError, SyncPort, WorkspaceId};

/// What a scenario does after it is prepared; where a failpoint is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Opening a new directory (sled's `conf`, first segment).
    FirstOpen,
    /// Opening a directory written since its last snapshot: recovery, then
    /// a new snapshot (and removal of the old one).
    Open,
    /// Opening a directory whose log ends in two torn segments (written
    /// past a segment that never landed, as concurrent buffer writes can
    /// leave it): recovery zeroes them, the segment accountant frees them
    /// and truncates the file.
    OpenTorn,
    /// A local commit, flushed before it returns (log buffer write, fsync).
    Commit,
    /// A local commit of a value larger than a log segment allows (sled
    /// writes it to `blobs/`).
    BigCommit,
}

/// Every I/O failpoint of sled 0.34.7, with the step that reaches it and
/// whether supamerge's open path reaches it at all.
const FAILPOINTS: [(&str, Step, bool); 19] = [
    // config.rs `write_config`: never reached, because supamerge writes
    // `conf` whole before sled looks (src/store/dir.rs), so sled only reads it.
    ("write_config bytes", Step::FirstOpen, false),
    ("write_config crc", Step::FirstOpen, false),
    ("write_config post", Step::FirstOpen, false),
    // pagecache/segment.rs: segment accountant start-up, file truncation.
    ("zero garbage segment SA", Step::OpenTorn, true),
    ("file truncation", Step::OpenTorn, true),
    // pagecache/snapshot.rs: zeroing torn segments during recovery.
    ("segment initial free zero", Step::OpenTorn, true),
    // pagecache/snapshot.rs `write_snapshot`.
    ("snap write", Step::Open, true),
    ("snap write len", Step::Open, true),
    ("snap write crc", Step::Open, true),
    ("snap write post", Step::Open, true),
    ("snap write mv", Step::Open, true),
    ("snap write mv post", Step::Open, true),
    ("snap write rm old", Step::Open, true),
    // pagecache/iobuf.rs: writing a log buffer (every flush).
    ("buffer write", Step::Commit, true),
    ("buffer write post", Step::Commit, true),
    // pagecache/iobuf.rs + blob_io.rs: writing a blob.
    ("blob blob write", Step::BigCommit, true),
    ("write_blob write crc", Step::BigCommit, true),
    ("write_blob write kind_byte", Step::BigCommit, true),
    ("write_blob write buf", Step::BigCommit, true),
];

/// Failpoints are global to the process: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn ws() -> WorkspaceId {
    WorkspaceId::from_random([5; 16])
}

fn coll() -> Collection {
    Collection::new("fp").unwrap()
}

/// A value too large for a log segment (512 KiB / 4): sled stores the node
/// holding it as a blob. Incompressible-ish, so Automerge keeps it large.
fn big_value(seed: u64) -> Value {
    let s: String = (0..200_000u64)
        .map(|i| char::from(b'a' + ((i * 7919 + seed * 31) % 26) as u8))
        .collect();
    json!({ "big": s })
}

/// The writes a scenario may rely on.
struct Prepared {
    dir: tempfile::TempDir,
    committed: Vec<(DocId, Value)>,
}

/// Builds the directory a step starts from.
fn prepare(step: Step) -> Prepared {
    let dir = tempfile::tempdir().unwrap();
    let mut committed = Vec::new();
    if step == Step::FirstOpen {
        return Prepared { dir, committed };
    }
    let mut write = |r: &Replica, i: u64| {
        let v = json!({ "i": i });
        committed.push((r.create_json(ws(), &coll(), &v).unwrap(), v));
    };
    {
        let r = Replica::open(dir.path()).unwrap();
        write(&r, 0);
        write(&r, 1);
    }
    {
        // This open writes sled's first snapshot; the writes after it make
        // the next open write another and remove this one.
        let r = Replica::open(dir.path()).unwrap();
        write(&r, 2);
        write(&r, 3);
    }
    if step == Step::OpenTorn {
        append_torn_segments(&dir.path().join("db"));
    }
    Prepared { dir, committed }
}

const SEGMENT: u64 = 512 * 1024;
const LSN_XOR: i64 = 0x7FFF_FFFF_FFFF_FFFF;

/// sled's segment header: `!crc32(rest)`, `lsn ^ LSN_XOR`,
/// `max_stable_lsn ^ LSN_XOR`, little-endian (pagecache/logger.rs).
fn segment_header(lsn: i64, max_stable: i64) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[4..12].copy_from_slice(&(lsn ^ LSN_XOR).to_le_bytes());
    b[12..20].copy_from_slice(&(max_stable ^ LSN_XOR).to_le_bytes());
    let crc = crc32fast::hash(&b[4..20]) ^ 0xFFFF_FFFF;
    b[0..4].copy_from_slice(&crc.to_le_bytes());
    b
}

fn read_segment_header(b: &[u8]) -> Option<(i64, i64)> {
    let crc = u32::from_le_bytes(b[0..4].try_into().ok()?) ^ 0xFFFF_FFFF;
    let lsn = i64::from_le_bytes(b[4..12].try_into().ok()?) ^ LSN_XOR;
    let max_stable = i64::from_le_bytes(b[12..20].try_into().ok()?) ^ LSN_XOR;
    (crc32fast::hash(&b[4..20]) == crc).then_some((lsn, max_stable))
}

/// Appends two segments whose headers are valid but which follow a segment
/// that is missing: the state a kill leaves when a later log buffer reached
/// the file and an earlier one did not. They hold no committed data.
fn append_torn_segments(db: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let bytes = std::fs::read(db).unwrap();
    let mut newest: Option<(i64, i64)> = None;
    for at in (0..bytes.len()).step_by(SEGMENT as usize) {
        if let Some(h) = bytes.get(at..at + 20).and_then(read_segment_header) {
            if newest.is_none_or(|(lsn, _)| h.0 > lsn) {
                newest = Some(h);
            }
        }
    }
    let (lsn, max_stable) = newest.expect("the log has a segment");
    let end = (bytes.len() as u64).div_ceil(SEGMENT) * SEGMENT;
    let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    for k in 0..2u64 {
        f.seek(SeekFrom::Start(end + k * SEGMENT)).unwrap();
        let h = segment_header(lsn + (2 + k as i64) * SEGMENT as i64, max_stable);
        f.write_all(&h).unwrap();
        f.write_all(&[0u8; 64]).unwrap();
    }
    f.sync_all().unwrap();
}

/// Runs the step with the failpoint armed; returns the writes the step
/// itself committed (calls that returned `Ok`).
fn run(step: Step, dir: &Path) -> Result<Vec<(DocId, Value)>, Error> {
    match step {
        Step::FirstOpen | Step::Open | Step::OpenTorn => {
            let r = Replica::open(dir)?;
            drop(r);
            Ok(Vec::new())
        }
        Step::Commit | Step::BigCommit => {
            // Opened before the failpoint matters: only the commit can hit it.
            let r = Replica::open(dir)?;
            let v = if step == Step::BigCommit {
                big_value(1)
            } else {
                json!({ "i": 100 })
            };
            let id = r.create_json(ws(), &coll(), &v)?;
            Ok(vec![(id, v)])
        }
    }
}

/// Every committed write is there, and the outbox is consistent.
fn check_all(r: &Replica, committed: &[(DocId, Value)]) {
    for (id, v) in committed {
        assert_eq!(&r.get_json(id).unwrap(), v, "committed write of {id} lost");
    }
    let outbox = r.peek(usize::MAX, usize::MAX).unwrap();
    assert_eq!(r.pending(), outbox.len(), "outbox count");
    for (id, _) in committed {
        assert_eq!(
            outbox.iter().filter(|e| e.doc_id == *id).count(),
            1,
            "outbox entry of {id}"
        );
    }
}

fn is_failpoint(e: &Error) -> bool {
    matches!(
        e,
        Error::Store(StoreError::Sled {
            source: sled::Error::FailPoint,
            ..
        })
    )
}

fn exercise(step: Step) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (name, _, reachable) in FAILPOINTS.iter().filter(|(_, s, _)| *s == step) {
        let p = prepare(step);
        sled::fail::reset();
        // Fail at the first hit; the high bit keeps the entry alive, so an
        // entry whose low bit is still set afterwards was never reached.
        sled::fail::set(name, 1 | 1 << 63);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(step, p.dir.path())));
        let reached = !sled::fail::is_active(name);
        sled::fail::reset();
        let outcome = outcome.unwrap_or_else(|_| panic!("{name}: the step panicked"));
        assert_eq!(reached, *reachable, "{name}: reached {reached}");
        let mut committed = p.committed;
        let failed = match outcome {
            Ok(new) => {
                committed.extend(new);
                false
            }
            Err(e) => {
                assert!(
                    is_failpoint(&e),
                    "{name}: not the typed storage error expected: {e:?}"
                );
                true
            }
        };
        // The fault is gone: the directory opens normally, every committed
        // write is there, and it takes writes again.
        let r = Replica::open(p.dir.path())
            .unwrap_or_else(|e| panic!("{name}: does not open after the fault: {e}"));
        check_all(&r, &committed);
        let v = json!({ "after": name });
        let id = r.create_json(ws(), &coll(), &v).unwrap();
        committed.push((id, v));
        drop(r);
        let r = Replica::open(p.dir.path()).unwrap();
        check_all(&r, &committed);
        eprintln!(
            "{name}: reached {reached}; the step {}",
            if failed {
                "failed with a typed error"
            } else {
                "succeeded"
            }
        );
    }
}

#[test]
fn every_failpoint_is_listed_once() {
    let mut names: Vec<&str> = FAILPOINTS.iter().map(|(n, _, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), FAILPOINTS.len());
}

#[test]
fn first_open_never_lets_sled_write_its_conf() {
    exercise(Step::FirstOpen);
}

#[test]
fn open_and_snapshot_failures() {
    exercise(Step::Open);
}

#[test]
fn torn_log_recovery_failures() {
    exercise(Step::OpenTorn);
}

#[test]
fn flush_failures() {
    exercise(Step::Commit);
}

#[test]
fn blob_write_failures() {
    exercise(Step::BigCommit);
}
