//! The store under stress: damaged values on disk, and a replica with 100,000
//! documents that must open without loading them.

use std::num::NonZeroUsize;

use serde_json::json;
use supamerge::test_util;
use supamerge::test_util::store_format::{codec, keys, trees, Chunk, ChunkKind, DocRecord};
use supamerge::{
    Collection, CompactionPolicy, DocId, EntityError, Error, Replica, StoreError, SyncPort,
    WorkspaceId,
};

fn ws() -> WorkspaceId {
    WorkspaceId::from_random([3; 16])
}

fn notes() -> Collection {
    Collection::new("notes").unwrap()
}

/// Creates two entities, closes the replica and returns their ids.
fn two_entities(dir: &std::path::Path) -> (DocId, DocId) {
    let r = Replica::open(dir).unwrap();
    let a = r
        .create_json(ws(), &notes(), &json!({"name": "a"}))
        .unwrap();
    let b = r
        .create_json(ws(), &notes(), &json!({"name": "b"}))
        .unwrap();
    r.patch_json(&a, &json!({"more": 1})).unwrap();
    (a, b)
}

/// Overwrites one value with raw sled, behind the replica's back.
fn overwrite(dir: &std::path::Path, tree: &str, key: &[u8], value: &[u8]) {
    let db = open_raw(dir);
    let t = db.open_tree(tree).unwrap();
    assert!(
        t.get(key).unwrap().is_some(),
        "no value to damage at {key:?}"
    );
    t.insert(key, value).unwrap();
    db.flush().unwrap();
}

/// After damage to `a`: `a` fails with the expected typed error, `b` is
/// untouched, `b` can still be written, and a failed write to `a` stores
/// nothing.
fn check_isolated(dir: &std::path::Path, a: DocId, b: DocId, expect: impl Fn(&Error) -> bool) {
    let r = Replica::open(dir).unwrap();
    let outbox_before = r.pending();
    let err = r.get_json(&a).unwrap_err();
    assert!(expect(&err), "unexpected error: {err:?}");
    let err = r.patch_json(&a, &json!({"x": 1})).unwrap_err();
    assert!(expect(&err), "unexpected error: {err:?}");
    assert_eq!(
        r.pending(),
        outbox_before,
        "a failed write left an outbox entry"
    );
    assert_eq!(r.get_json(&b).unwrap(), json!({"name": "b"}));
    r.patch_json(&b, &json!({"still": "writable"})).unwrap();
    drop(r);
    let r = Replica::open(dir).unwrap();
    assert_eq!(r.get_json(&b).unwrap()["still"], "writable");
}

#[test]
fn undecodable_chunk_value_is_corrupt_and_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_entities(dir.path());
    overwrite(
        dir.path(),
        trees::CHUNKS,
        &keys::chunk(&a, 0),
        &[codec::FORMAT_V1, 0xff, 0xff, 0xff, 0x07],
    );
    check_isolated(dir.path(), a, b, |e| {
        matches!(e, Error::Store(StoreError::Corrupt { tree: "chunks", .. }))
    });
}

#[test]
fn garbage_automerge_bytes_are_a_corrupt_document() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_entities(dir.path());
    let chunk = Chunk {
        kind: ChunkKind::Incremental,
        bytes: b"definitely not an automerge change".to_vec(),
    };
    let value = codec::encode(trees::CHUNKS, &chunk).unwrap();
    overwrite(dir.path(), trees::CHUNKS, &keys::chunk(&a, 1), &value);
    check_isolated(
        dir.path(),
        a,
        b,
        |e| matches!(e, Error::Entity(EntityError::CorruptDocument { id, .. }) if *id == a),
    );
}

#[test]
fn damaged_doc_record_is_corrupt_and_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_entities(dir.path());
    overwrite(
        dir.path(),
        trees::DOCS,
        &keys::doc(&a),
        &[codec::FORMAT_V1, 0xfe],
    );
    check_isolated(dir.path(), a, b, |e| {
        matches!(e, Error::Store(StoreError::Corrupt { tree: "docs", .. }))
    });
    // Listing neither fails for the others nor returns the damaged record
    // as live: it is skipped and reported.
    let r = Replica::open(dir.path()).unwrap();
    assert_eq!(r.list(&notes()).unwrap(), vec![b]);
    let report = r.list_report(&notes()).unwrap();
    assert_eq!(report.live, vec![b]);
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].id, Some(a));
    assert!(matches!(
        report.damaged[0].error,
        StoreError::Corrupt { tree: "docs", .. }
    ));
    assert!(matches!(
        r.get_json(&a),
        Err(Error::Store(StoreError::Corrupt { .. }))
    ));
    assert!(r.get_json(&b).is_ok());
    drop(r);
    // The CLI lists the readable ones, names the damaged one, and fails
    // (pointing at `doctor`).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_supamerge"))
        .arg("--data")
        .arg(dir.path())
        .args(["list", "notes"])
        .env_remove("SUPAMERGE_DATA")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.contains(&b.to_string()), "{stdout}");
    assert!(!stdout.contains(&a.to_string()), "{stdout}");
    assert!(stderr.contains(&a.to_string()), "{stderr}");
    assert!(stderr.contains("doctor"), "{stderr}");
}

#[test]
fn unknown_format_byte_is_unsupported_format() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_entities(dir.path());
    let db = open_raw(dir.path());
    let t = db.open_tree(trees::CHUNKS).unwrap();
    let mut v = t.get(keys::chunk(&a, 0)).unwrap().unwrap().to_vec();
    v[0] = 42; // a format from the future
    t.insert(keys::chunk(&a, 0), v).unwrap();
    db.flush().unwrap();
    drop(t);
    drop(db);
    check_isolated(dir.path(), a, b, |e| {
        matches!(
            e,
            Error::Store(StoreError::UnsupportedFormat {
                found: 42,
                tree: "chunks",
                ..
            })
        )
    });
}

#[test]
fn store_written_by_a_newer_version_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    two_entities(dir.path());
    overwrite(dir.path(), trees::META, keys::META_FORMAT, &[2]);
    assert!(matches!(
        Replica::open(dir.path()),
        Err(Error::Store(StoreError::UnsupportedFormat { found: 2, .. }))
    ));
}

#[test]
fn a_second_open_in_the_same_process_says_already_open_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = Replica::open(dir.path()).unwrap();
    let clone = first.clone();
    match Replica::open(dir.path()) {
        Err(Error::Store(e @ StoreError::AlreadyOpen { .. })) => {
            let StoreError::AlreadyOpen { path } = &e else {
                unreachable!()
            };
            assert_eq!(path, dir.path());
            assert!(
                e.to_string().contains("already open in this process"),
                "{e}"
            );
            assert!(e.to_string().contains("clone the Replica"), "{e}");
        }
        other => panic!("expected StoreError::AlreadyOpen, got {other:?}"),
    }
    // Another spelling of the same directory is the same directory.
    let other_spelling = dir.path().join(".");
    assert!(matches!(
        Replica::open(&other_spelling),
        Err(Error::Store(StoreError::AlreadyOpen { .. }))
    ));
    // While any clone lives the directory stays open; after the last one is
    // dropped it opens again, with what was written.
    drop(first);
    assert!(matches!(
        Replica::open(dir.path()),
        Err(Error::Store(StoreError::AlreadyOpen { .. }))
    ));
    let id = clone
        .create_json(ws(), &notes(), &json!({"name": "c"}))
        .unwrap();
    drop(clone);
    let again = Replica::open(dir.path()).unwrap();
    assert_eq!(again.get_json(&id).unwrap(), json!({"name": "c"}));
}

const MANY: usize = 100_000;

/// 100,000 documents. Creating them one by one through `create_json` costs
/// ~4 ms each in an unoptimised build (Automerge and sled in debug), far too
/// slow for the test command; so one real entity is created through the
/// replica, the replica is closed, and its change chunk, record and index
/// entry are written for 100,000 ids with raw sled in the documented layout
/// (`docs/storage.md`) — exactly the records `create_json` writes (an
/// entity's Automerge content does not contain its id), minus the outbox.
#[test]
fn replica_with_100k_documents_opens_without_loading_them() {
    let dir = tempfile::tempdir().unwrap();
    let coll = Collection::new("items").unwrap();
    let (chunk, mut record) = {
        let r = Replica::open(dir.path()).unwrap();
        let template = r.create_json(ws(), &coll, &json!({"n": 0})).unwrap();
        let chunk = test_util::chunks(&r, &template).unwrap().remove(0).1;
        let record = test_util::doc_record(&r, &template).unwrap().unwrap();
        (chunk, record)
    };
    record.changes_since_upload = 0;
    {
        let db = open_raw(dir.path());
        let chunks = db.open_tree(trees::CHUNKS).unwrap();
        let docs = db.open_tree(trees::DOCS).unwrap();
        let index = db.open_tree(trees::BY_COLLECTION).unwrap();
        let chunk_value = codec::encode(trees::CHUNKS, &chunk).unwrap();
        let record_value = codec::encode(trees::DOCS, &record).unwrap();
        let ids: Vec<DocId> = (1..MANY as u64)
            .map(|i| {
                let mut random = [0u8; 10];
                random[..8].copy_from_slice(&i.to_be_bytes());
                DocId::new_v7(1_700_000_000_000, random)
            })
            .collect();
        for batch in ids.chunks(5_000) {
            let (mut c, mut d, mut x) = (
                sled::Batch::default(),
                sled::Batch::default(),
                sled::Batch::default(),
            );
            for id in batch {
                c.insert(&keys::chunk(id, 0)[..], chunk_value.clone());
                d.insert(&keys::doc(id)[..], record_value.clone());
                x.insert(keys::collection_entry(&coll, id), &[][..]);
            }
            chunks.apply_batch(c).unwrap();
            docs.apply_batch(d).unwrap();
            index.apply_batch(x).unwrap();
        }
        db.flush().unwrap();
    }

    let r = Replica::builder(dir.path())
        .with_cache_capacity(NonZeroUsize::new(64).unwrap())
        .open()
        .unwrap();
    assert_eq!(r.cached_docs(), 0, "opening loaded documents");
    assert_eq!(r.doc_count(), MANY);
    let ids = r.list(&coll).unwrap();
    assert_eq!(ids.len(), MANY);
    assert_eq!(r.cached_docs(), 0, "listing loaded documents");
    assert_eq!(r.get_json(&ids[MANY / 2]).unwrap(), json!({"n": 0}));
    assert_eq!(r.cached_docs(), 1);
    // Reading many keeps at most the cache capacity in memory.
    for id in ids.iter().step_by(MANY / 200) {
        r.get_json(id).unwrap();
    }
    assert_eq!(r.cached_docs(), 64);
    // And a write to one of them is an ordinary local commit.
    r.patch_json(&ids[7], &json!({"n": 7})).unwrap();
    assert_eq!(r.pending(), 1 + 1);
    let rec: DocRecord = test_util::doc_record(&r, &ids[7]).unwrap().unwrap();
    assert_eq!(rec.next_chunk, 2);
}

/// Opens the directory with raw sled, waiting for the lock of a just-dropped
/// replica: sled releases it from background threads a moment after the
/// last handle is dropped.
fn open_raw(dir: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open {}: {e}", dir.display()),
        }
    }
}

/// The outbox count lives in `meta/outbox_len`, updated in the transaction
/// that adds or removes entries; a store written before the key existed is
/// counted once at open.
#[test]
fn outbox_count_is_stored_and_recovered_for_older_stores() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = two_entities(dir.path());
    {
        let r = Replica::open(dir.path()).unwrap();
        assert_eq!(r.pending(), 3);
        let first = r.peek(1, usize::MAX).unwrap()[0].hash;
        assert_eq!(r.ack(&[first]).unwrap(), 1);
        let second = r.peek(1, usize::MAX).unwrap()[0].hash;
        assert!(r.dead_letter(&second, "refused").unwrap());
        assert_eq!(r.pending(), 1);
        r.patch_json(&a, &json!({"again": true})).unwrap();
        assert_eq!(r.pending(), 2);
    }
    let stored = |dir: &std::path::Path| -> Option<u64> {
        let db = open_raw(dir);
        let v = db
            .open_tree(trees::META)
            .unwrap()
            .get(keys::META_OUTBOX_LEN)
            .unwrap()?;
        Some(codec::decode(trees::META, keys::META_OUTBOX_LEN, &v).unwrap())
    };
    assert_eq!(stored(dir.path()), Some(2));
    // An older store: no key. Opening counts once and writes it.
    {
        let db = open_raw(dir.path());
        db.open_tree(trees::META)
            .unwrap()
            .remove(keys::META_OUTBOX_LEN)
            .unwrap();
        db.flush().unwrap();
    }
    let r = Replica::open(dir.path()).unwrap();
    assert_eq!(r.pending(), 2);
    drop(r);
    assert_eq!(stored(dir.path()), Some(2));
}

/// Text that compresses badly (Automerge deflates large changes).
fn noise(seed: usize, len: usize) -> String {
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// Issue 14: the document cache keeps within its byte budget (the most
/// recently used document always stays), and a large budget keeps them all.
#[test]
fn the_cache_keeps_within_its_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<DocId> = {
        let r = Replica::open(dir.path()).unwrap();
        (0..20)
            .map(|k| {
                r.create_json(ws(), &notes(), &json!({"k": k, "text": noise(k, 2000)}))
                    .unwrap()
            })
            .collect()
    };
    // Each document's estimate is well above 8 KiB (its stored size times
    // a factor, plus a fixed overhead): a 16 KiB budget holds one or two.
    let small = Replica::builder(dir.path())
        .with_cache_bytes(16 * 1024)
        .open()
        .unwrap();
    for id in &ids {
        assert_eq!(
            small.get_json(id).unwrap()["k"],
            json!(ids.iter().position(|i| i == id).unwrap())
        );
        assert!(small.cached_docs() <= 2, "{} cached", small.cached_docs());
        assert!(small.cached_docs() >= 1);
    }
    // A commit evicts too, and the document just written stays loaded.
    small.patch_json(&ids[0], &json!({"k": 100})).unwrap();
    assert!(small.cached_docs() <= 2);
    assert_eq!(small.get_json(&ids[0]).unwrap()["k"], json!(100));
    drop(small);
    let big = Replica::builder(dir.path())
        .with_cache_bytes(supamerge::DEFAULT_CACHE_BYTES)
        .open()
        .unwrap();
    for id in &ids {
        big.get_json(id).unwrap();
    }
    assert_eq!(big.cached_docs(), ids.len());
    assert!(big.cached_bytes() > 20 * 2000, "{}", big.cached_bytes());
}

/// Issue 14: chunks are compacted by bytes as well as by count: a few large
/// commits (fewer than `min_chunks`) fold into a snapshot once they hold
/// `min_bytes` and outgrow it.
#[test]
fn a_few_large_chunks_are_compacted_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let r = Replica::open(dir.path()).unwrap();
    assert_eq!(CompactionPolicy::default().min_chunks, 16);
    let id = r.create_json(ws(), &notes(), &json!({"n": 0})).unwrap();
    let mut folded = false;
    for n in 1..8 {
        r.patch_json(&id, &json!({ "n": n, "text": noise(n, 1500) }))
            .unwrap();
        let chunks = test_util::chunks(&r, &id).unwrap();
        // Only a fold writes a snapshot chunk; by count alone (16) none
        // would happen in 7 commits.
        if chunks.iter().any(|(_, c)| c.kind == ChunkKind::Snapshot) {
            folded = true;
        }
        let rec = test_util::doc_record(&r, &id).unwrap().unwrap();
        assert!(
            rec.incremental_count < 7,
            "after {n} commits: {} incremental chunks",
            rec.incremental_count
        );
    }
    assert!(folded, "never compacted");
    assert_eq!(r.get_json(&id).unwrap()["n"], json!(7));
}

/// Issue 17: a local commit folds a document only once its chunks outgrow
/// `local_growth` times its snapshot (typing pays for a `save()` a quarter
/// as often); acknowledging the pushed changes folds it at ×1 again.
#[test]
fn local_commits_fold_at_a_multiple_of_the_snapshot_and_acks_at_one() {
    let dir = tempfile::tempdir().unwrap();
    let r = Replica::open(dir.path()).unwrap();
    let policy = CompactionPolicy::default();
    assert_eq!(policy.local_growth, 4);
    let id = r.create_json(ws(), &notes(), &json!({"n": 0})).unwrap();
    let (mut folds, mut above_one) = (0, false);
    let mut last_snapshot = 0;
    for n in 1..=600 {
        r.patch_json(&id, &json!({ "n": n, "text": noise(n, 40) }))
            .unwrap();
        let rec = test_util::doc_record(&r, &id).unwrap().unwrap();
        if rec.snapshot_len != last_snapshot {
            folds += 1;
            last_snapshot = rec.snapshot_len;
        }
        // The bound: one commit's chunk above `local_growth` × snapshot
        // (or above `min_bytes` before the first snapshot).
        let chunk = test_util::chunks(&r, &id)
            .unwrap()
            .last()
            .map(|(_, c)| c.bytes.len() as u64)
            .unwrap();
        let limit = (policy.local_growth * rec.snapshot_len).max(policy.min_bytes);
        assert!(
            rec.incremental_len <= limit + chunk,
            "after {n} commits: {} incremental bytes, snapshot {}",
            rec.incremental_len,
            rec.snapshot_len
        );
        if rec.snapshot_len > 0 && rec.incremental_len > rec.snapshot_len {
            above_one = true;
        }
    }
    assert!(folds >= 2, "{folds} folds in 600 commits");
    assert!(above_one, "local commits never let the chunks pass ×1");
    // Push and acknowledge everything: the document is folded at ×1.
    let entries = r.peek(usize::MAX, usize::MAX).unwrap();
    let hashes: Vec<_> = entries.iter().map(|e| e.hash).collect();
    assert_eq!(r.ack(&hashes).unwrap(), 601);
    let rec = test_util::doc_record(&r, &id).unwrap().unwrap();
    assert!(
        rec.incremental_len <= rec.snapshot_len,
        "after the ack: {} incremental bytes, snapshot {}",
        rec.incremental_len,
        rec.snapshot_len
    );
    drop(r);
    let r = Replica::open(dir.path()).unwrap();
    assert_eq!(r.get_json(&id).unwrap()["n"], json!(600));
    assert_eq!(r.history(&id).unwrap().len(), 601);
}
