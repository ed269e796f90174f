//! Crash safety with a real SIGKILL: a child process writes, reports each
//! write that returned with `committed <n> ...` on stdout, and is killed at a
//! random point; the parent reopens the replica and checks that every reported
//! write is there — entity values, and outbox entries exactly once each in
//! commit order.
//!
//! The child is this very test binary, re-executed with
//! `--exact crash_child --ignored --nocapture` and `SUPAMERGE_CRASH_CHILD` set.
//! Without that variable `crash_child` returns at once, so running the
//! ignored tests by hand is harmless.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::json;
use supamerge::test_util::store_format::ChunkKind;
use supamerge::{
    Collection, CompactionPolicy, DocId, Error, Replica, StoreError, SyncPort, WorkspaceId,
};

const CHILD_ENV: &str = "SUPAMERGE_CRASH_CHILD";
const DIR_ENV: &str = "SUPAMERGE_CRASH_DIR";
const START_ENV: &str = "SUPAMERGE_CRASH_START";
const DOC_ENV: &str = "SUPAMERGE_CRASH_DOC";

fn ws() -> WorkspaceId {
    WorkspaceId::from_random([9; 16])
}

fn coll() -> Collection {
    Collection::new("crash").expect("valid collection")
}

// ----- the child ------------------------------------------------------------

/// The child process. Does nothing unless started by a crash test.
#[test]
#[ignore = "child process of the crash tests; does nothing when run by hand"]
fn crash_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::env::var(DIR_ENV).expect("crash dir");
    let start: u64 = std::env::var(START_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let out = std::io::stdout();
    let report = |line: String| {
        let mut o = out.lock();
        writeln!(o, "{line}").expect("stdout");
        o.flush().expect("flush stdout");
    };
    match mode.as_str() {
        "stream" => {
            let r = Replica::open(&dir).expect("child opens the replica");
            // Write n: every 4th creates an entity, the 3 after patch it.
            let mut current = None;
            for n in start.. {
                if n % 4 == 0 {
                    let id = r
                        .create_json(ws(), &coll(), &json!({ "k": n }))
                        .expect("create");
                    current = Some(id);
                    let heads = r.heads(&id).expect("heads");
                    report(format!("committed {n} {id} {}", heads[0]));
                } else {
                    let id = current.expect("a create came first");
                    let hash = r
                        .patch_json(&id, &json!({ format!("w{n}"): n, "last": n }))
                        .expect("patch")
                        .expect("a patch that changes something");
                    report(format!("committed {n} {id} {hash}"));
                }
            }
        }
        "compact" => {
            let r = Replica::builder(&dir)
                .with_compaction(CompactionPolicy {
                    min_chunks: 2,
                    when_larger_than_snapshot: false,
                })
                .open()
                .expect("child opens the replica");
            let id: DocId = match std::env::var(DOC_ENV) {
                Ok(s) => s.parse().expect("doc id"),
                Err(_) => {
                    let id = r
                        .create_json(ws(), &coll(), &json!({ "last": start }))
                        .expect("create");
                    let heads = r.heads(&id).expect("heads");
                    report(format!("created {id}"));
                    report(format!("committed {start} {id} {}", heads[0]));
                    id
                }
            };
            for n in start + 1.. {
                let hash = r
                    .patch_json(&id, &json!({ format!("k{}", n % 16): n, "last": n }))
                    .expect("patch")
                    .expect("a patch that changes something");
                report(format!("committed {n} {id} {hash}"));
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

struct Spawned {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

fn spawn(mode: &str, dir: &Path, start: u64, doc: Option<DocId>) -> Spawned {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, mode)
        .env(DIR_ENV, dir)
        .env(START_ENV, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(doc) = doc {
        cmd.env(DOC_ENV, doc.to_string());
    }
    let mut child = cmd.spawn().expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    Spawned {
        child,
        lines: BufReader::new(stdout).lines(),
    }
}

/// One reported write.
#[derive(Debug, Clone)]
struct Committed {
    n: u64,
    id: DocId,
    hash: String,
}

impl Spawned {
    /// Reads lines until `count` writes were reported (or the child ended).
    fn read_committed(&mut self, count: usize, created: &mut Option<DocId>) -> Vec<Committed> {
        let mut out = Vec::new();
        while out.len() < count {
            let Some(Ok(line)) = self.lines.next() else {
                assert_eq!(
                    count,
                    usize::MAX,
                    "child ended early after {} writes",
                    out.len()
                );
                break;
            };
            // libtest may print "test crash_child ... " before the first
            // report on the same line: look for the report anywhere.
            let report = ["committed ", "created "]
                .iter()
                .filter_map(|m| line.find(m))
                .min()
                .map_or("", |at| &line[at..]);
            let mut parts = report.split_whitespace();
            match parts.next() {
                Some("committed") => {
                    let n = parts.next().and_then(|s| s.parse().ok()).expect("n");
                    let id = parts.next().and_then(|s| s.parse().ok()).expect("id");
                    let hash = parts.next().expect("hash").to_owned();
                    out.push(Committed { n, id, hash });
                }
                Some("created") => {
                    *created = parts.next().and_then(|s| s.parse().ok());
                }
                // libtest's own chatter ("running 1 test", ...)
                _ => {}
            }
        }
        out
    }

    /// SIGKILLs the child, then collects the reports it wrote before dying
    /// (still in the pipe): those writes returned, so they count too.
    fn kill(mut self, created: &mut Option<DocId>) -> Vec<Committed> {
        self.child.kill().expect("SIGKILL the child");
        self.child.wait().expect("reap the child");
        self.read_committed(usize::MAX, created)
    }
}

/// Every reported write is in the outbox exactly once, in commit order; each
/// child run may have left at most one more, unreported write (committed when
/// the kill landed between the commit and its report).
fn check_outbox(r: &Replica, reported: &[Committed]) {
    let outbox = r.peek(usize::MAX, usize::MAX).expect("outbox");
    let hashes: Vec<String> = outbox.iter().map(|e| e.hash.to_string()).collect();
    let unique: HashSet<&String> = hashes.iter().collect();
    assert_eq!(unique.len(), hashes.len(), "duplicate outbox entries");
    let pos: HashMap<&String, usize> = hashes.iter().enumerate().map(|(i, h)| (h, i)).collect();
    let mut last = None;
    for c in reported {
        let p = *pos.get(&c.hash).unwrap_or_else(|| {
            panic!(
                "committed write {} ({}) missing from the outbox",
                c.n, c.hash
            )
        });
        assert_eq!(outbox[p].doc_id, c.id, "write {}", c.n);
        if let Some(prev) = last {
            assert!(
                p > prev,
                "outbox order differs from commit order at write {}",
                c.n
            );
        }
        last = Some(p);
    }
    assert!(
        hashes.len() <= reported.len() + reported_runs(reported),
        "{} outbox entries for {} reported writes",
        hashes.len(),
        reported.len()
    );
}

/// Number of child runs in `reported` (each may have left one unreported write).
fn reported_runs(reported: &[Committed]) -> usize {
    reported
        .iter()
        .map(|c| c.n / 1000)
        .collect::<HashSet<_>>()
        .len()
}

#[test]
fn sigkill_during_a_stream_of_writes_loses_no_committed_write() {
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = rand::thread_rng().gen();
    eprintln!("kill-point seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut reported: Vec<Committed> = Vec::new();
    for round in 0..4u64 {
        let mut child = spawn("stream", dir.path(), round * 1000, None);
        let kill_after = [1, rng.gen_range(2..12), rng.gen_range(12..40), 25][round as usize];
        let mut created = None;
        let got = child.read_committed(kill_after, &mut created);
        if round == 0 {
            // The live child holds the directory: a typed error, no panic.
            match Replica::open(dir.path()) {
                Err(Error::Store(StoreError::Locked { path, .. })) => {
                    assert_eq!(path, dir.path());
                }
                other => panic!("expected StoreError::Locked, got {other:?}"),
            }
        }
        // Let the child get into its next write(s) before the kill.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..5)));
        let rest = child.kill(&mut None);
        reported.extend(got);
        reported.extend(rest);

        let r = Replica::open(dir.path()).expect("reopen after SIGKILL");
        for c in &reported {
            let v = r.get_json(&c.id).expect("entity of a committed write");
            if c.n % 4 == 0 {
                assert_eq!(v["k"], c.n, "create {} lost", c.n);
            } else {
                assert_eq!(v[format!("w{}", c.n)], c.n, "patch {} lost", c.n);
            }
        }
        check_outbox(&r, &reported);
        let ids: HashSet<DocId> = reported.iter().map(|c| c.id).collect();
        let listed: HashSet<DocId> = r.list(&coll()).unwrap().into_iter().collect();
        assert!(listed.is_superset(&ids));
    }
    // Acknowledged entries stay gone across a restart; the rest stay queued.
    let r = Replica::open(dir.path()).unwrap();
    let before = r.pending();
    let first: Vec<_> = r
        .peek(3, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.hash)
        .collect();
    assert_eq!(r.ack(&first).unwrap(), 3);
    drop(r);
    let r = Replica::open(dir.path()).unwrap();
    assert_eq!(r.pending(), before - 3);
    check_outbox(&r, &reported[3..]);
}

#[test]
fn sigkill_during_constant_compaction_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = rand::thread_rng().gen();
    eprintln!("kill-point seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut doc: Option<DocId> = None;
    let mut reported: Vec<Committed> = Vec::new();
    for round in 0..5u64 {
        let mut child = spawn("compact", dir.path(), round * 1000, doc);
        let got = child.read_committed(rng.gen_range(3..30), &mut doc);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..5)));
        let rest = child.kill(&mut doc);
        reported.extend(got);
        reported.extend(rest);
        let id = doc.expect("the child reported its document");

        let r = Replica::open(dir.path()).expect("reopen after SIGKILL");
        let value = r.get_json(&id).expect("the compacted document loads");
        let history: HashSet<String> = r
            .history(&id)
            .unwrap()
            .into_iter()
            .map(|h| h.hash.to_string())
            .collect();
        for c in &reported {
            assert!(history.contains(&c.hash), "committed edit {} lost", c.n);
        }
        let last = reported.last().unwrap().n;
        assert!(value["last"].as_u64().unwrap() >= last);
        check_outbox(&r, &reported);
        // Compaction really ran: a snapshot plus at most one increment, or
        // two when the kill fell between a commit and its compaction.
        let chunks = supamerge::test_util::chunks(&r, &id).unwrap();
        assert!(
            chunks.len() <= 3,
            "{} chunks: compaction did not run",
            chunks.len()
        );
        assert_eq!(chunks[0].1.kind, ChunkKind::Snapshot);
    }
}
