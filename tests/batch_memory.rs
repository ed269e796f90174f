//! A pulled batch that touches more documents than the cache holds keeps
//! the heap near the cache's budget (issue 14): the writer's final sync of
//! the soak, its own last changes coming back for every document, used to
//! load every document of the batch at once before the budget applied.
//!
//! This binary counts every byte on the heap with its own global allocator
//! and records the peak while the batch is applied: with the batch applied
//! in waves it peaks at ~20 % of what every document loaded takes (96
//! documents, a wave of 8, a budget of 1/16); loading them all at once, as
//! before, peaked at ~107 %. One test function on purpose: the counter is
//! process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicIsize, Ordering};

use serde_json::json;
use supamerge::{
    Collection, CompactionPolicy, DocId, Durability, RemoteChange, Replica, SyncPort, WorkspaceId,
};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            grew(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const DOCS: usize = 96;
const EDITS: usize = 120;

fn reopen(path: &std::path::Path, cache_bytes: usize) -> Replica {
    let never = CompactionPolicy {
        min_chunks: u64::MAX,
        min_bytes: u64::MAX,
        when_larger_than_snapshot: true,
        ..CompactionPolicy::default()
    };
    // sled may hold its file lock a moment after the drop: retry.
    loop {
        match Replica::builder(path)
            .with_compaction(never)
            .with_cache_bytes(cache_bytes)
            .open()
        {
            Ok(r) => break r,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

#[test]
fn a_batch_touching_every_document_stays_near_the_cache_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let ws = WorkspaceId::new();
    let notes = Collection::new("notes").unwrap();
    // A writer: DOCS documents of EDITS field edits each (the soak's, with
    // a longer text so that the documents outweigh sled's own buffers).
    let ids: Vec<DocId> = {
        let r = Replica::builder(&path)
            .with_durability(Durability::Buffered {
                flush_every_ms: 1000,
            })
            .open()
            .unwrap();
        let ids: Vec<DocId> = (0..DOCS)
            .map(|k| r.create_json(ws, &notes, &json!({"k": k})).unwrap())
            .collect();
        for i in 0..EDITS {
            for id in &ids {
                r.patch_json(
                    id,
                    &json!({"n": i, "text": format!("edit {i} {}", "x".repeat(400))}),
                )
                .unwrap();
            }
        }
        r.flush().unwrap();
        ids
    };

    // What every document takes loaded at once, the cache unbounded.
    let all = {
        let r = reopen(&path, usize::MAX);
        for id in &ids {
            supamerge::test_util::doc_record(&r, id).unwrap();
            supamerge::test_util::chunks(&r, id).unwrap();
        }
        let before = live();
        for id in &ids {
            r.get_json(id).unwrap();
        }
        assert_eq!(r.cached_docs(), DOCS);
        let heap = live() - before;
        (heap, r.cached_bytes())
    };
    let (all_heap, all_estimate) = all;

    // The writer's final sync: its own last change of every document comes
    // back in one pulled batch. The budget holds about 1/16 of the documents.
    let budget = all_estimate / 16;
    let r = reopen(&path, budget);
    let mut last: BTreeMap<DocId, RemoteChange> = BTreeMap::new();
    for e in r.peek(usize::MAX, usize::MAX).unwrap() {
        last.insert(
            e.doc_id,
            RemoteChange {
                workspace: e.workspace,
                doc_id: e.doc_id,
                collection: e.collection,
                hash: Some(e.hash),
                bytes: e.bytes,
            },
        );
    }
    let batch: Vec<RemoteChange> = last.into_values().collect();
    assert_eq!(batch.len(), DOCS);
    // sled's page cache: the same records read raw, so what the batch adds
    // is the documents'.
    for id in &ids {
        supamerge::test_util::doc_record(&r, id).unwrap();
        supamerge::test_util::chunks(&r, id).unwrap();
    }
    // Once-per-process costs (rayon's threads, sled's first reads) out of
    // the way: one change of the batch first.
    r.apply_remote(batch[..1].to_vec(), None).unwrap();
    assert_eq!(r.cached_docs(), 1);
    let before = live();
    PEAK.store(before, Ordering::Relaxed);
    let report = r.apply_remote(batch, None).unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert_eq!(report.duplicates, DOCS);
    assert_eq!(report.applied, 0);
    eprintln!(
        "{DOCS} documents: all loaded {:.0} KiB (estimate {:.0} KiB); budget {:.0} KiB; \
         peak while applying the batch {:.0} KiB; cached afterwards {} documents, estimate {:.0} KiB",
        all_heap as f64 / 1024.0,
        all_estimate as f64 / 1024.0,
        budget as f64 / 1024.0,
        peak as f64 / 1024.0,
        r.cached_docs(),
        r.cached_bytes() as f64 / 1024.0,
    );
    // Loading every document at once takes `all_heap`; in waves the peak is
    // the budget plus one wave's documents.
    assert!(
        peak < all_heap / 2,
        "applying the batch peaked at {peak} bytes of heap, every document loaded takes {all_heap}"
    );
    assert!(r.cached_bytes() <= budget.max(all_estimate / DOCS * 2));
}
