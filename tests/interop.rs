//! Other Automerge clients as peers (issue 13, docs/interop.md): changes
//! written the way a JavaScript client writes them — the `automerge` crate
//! used directly, stamping unix seconds, no time at all, or a far-skewed
//! clock — delivered through the real sync path (push and pull of a
//! `LocalHub`, or of the gateway over PostgreSQL) to supamerge replicas;
//! the collection rule of both servers; the SQL decoder of first changes
//! against the Rust one; documents without `_meta`; counters under merge
//! patches.

// Shared with tests/sync.rs, which uses all of it.
#[allow(dead_code)]
mod support;

use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use serde_json::json;
use supamerge::raw::{self as entity, CreationMeta};
use supamerge::{
    ChangeEnvelope, Collection, Cursor, DocId, EntityError, Error, ManualClock, PullRequest,
    PushOutcome, PushRequest, Remote, RemoteChange, Replica, SyncConfig, SyncPort, WorkspaceId,
    WIRE_VERSION,
};

use support::backend::{Backend, LocalHubBackend, SupabaseBackend};
use support::sync_util::{pass, tasks};

/// A realistic wall clock (ms).
const T: i64 = 1_790_000_000_000;

macro_rules! backend_tests {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            backend_tests!(@cases $make, [
                case_a_seconds_write_made_later_wins_over_a_concurrent_replica_write,
                case_a_foreign_write_that_has_seen_a_value_beats_what_that_value_beat,
                case_writers_with_no_time_or_far_skewed_clocks_follow_causality,
                case_the_collection_rule_holds_on_every_server,
            ]);
        }
    };
    (@cases $make:expr, [$($case:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $make.await;
                super::$case(&backend).await;
            }
        )*
    };
}

backend_tests!(local_hub, LocalHubBackend::new());
backend_tests!(supabase, SupabaseBackend::start());

/// A replica on a manual clock.
struct Peer {
    replica: Replica,
    remote: Arc<dyn Remote>,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

impl Peer {
    async fn new(b: &dyn Backend, user: usize, seed: u64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(T);
        let replica = Replica::builder(dir.path())
            .with_seed(seed)
            .with_clock(Arc::new(clock.clone()))
            .open()
            .expect("open replica");
        Self {
            replica,
            remote: b.remote_for(user).await,
            clock,
            _dir: dir,
        }
    }

    async fn sync(&self, ws: WorkspaceId) {
        let cfg = SyncConfig::default();
        let r = pass(&self.replica, self.remote.as_ref(), &cfg, &[ws])
            .await
            .expect("sync");
        assert_eq!(r.dead_lettered, 0, "{r:?}");
    }
}

/// A client that is not supamerge: the automerge crate used directly, as a
/// JavaScript app uses @automerge/automerge, pushing and pulling through the
/// same remote.
struct Foreign {
    doc: Automerge,
    remote: Arc<dyn Remote>,
}

impl Foreign {
    async fn new(b: &dyn Backend, user: usize, actor: u8) -> Self {
        let mut doc = Automerge::new();
        doc.set_actor(ActorId::from(&[actor; 16][..]));
        Self {
            doc,
            remote: b.remote_for(user).await,
        }
    }

    async fn pull(&mut self, ws: WorkspaceId, id: DocId) {
        let mut cursor = Cursor(String::new());
        loop {
            let page = self
                .remote
                .pull(PullRequest {
                    v: WIRE_VERSION,
                    workspace: ws,
                    cursor: cursor.clone(),
                    limit: 1000,
                    skip_snapshotted: false,
                })
                .await
                .expect("pull");
            let changes: Vec<Change> = page
                .changes
                .into_iter()
                .filter(|c| c.change.doc_id == id)
                .map(|c| Change::from_bytes(c.change.bytes).expect("a change"))
                .collect();
            self.doc.apply_changes(changes).expect("apply");
            cursor = page.next_cursor;
            if !page.has_more {
                return;
            }
        }
    }

    /// Writes `data[key] = value` stamped `time` and pushes it.
    async fn write(&mut self, ws: WorkspaceId, id: DocId, key: &str, value: &str, time: i64) {
        let data = match self.doc.get(ROOT, "data").expect("read") {
            Some((Value::Object(ObjType::Map), data)) => data,
            other => panic!("no data map: {other:?}"),
        };
        let mut tx = self.doc.transaction();
        tx.put(&data, key, value).expect("put");
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(time));
        let change = self
            .doc
            .get_change_by_hash(&hash.expect("a change"))
            .expect("change");
        let outcome = push_one(self.remote.as_ref(), ws, id, &tasks(), &change).await;
        assert!(matches!(outcome, PushOutcome::Stored { .. }), "{outcome:?}");
    }
}

async fn push_one(
    remote: &dyn Remote,
    ws: WorkspaceId,
    id: DocId,
    collection: &Collection,
    change: &Change,
) -> PushOutcome {
    let mut res = remote
        .push(PushRequest {
            v: WIRE_VERSION,
            workspace: ws,
            changes: vec![ChangeEnvelope {
                doc_id: id,
                collection: collection.clone(),
                hash: change.hash(),
                bytes: change.raw_bytes().to_vec(),
            }],
        })
        .await
        .expect("push");
    res.results.remove(0)
}

fn title(r: &Replica, id: &DocId) -> serde_json::Value {
    r.get_json(id).expect("read")["title"].clone()
}

/// The scenario: a JavaScript write made 1.1 s after a concurrent
/// supamerge write, stamped in seconds, wins everywhere.
async fn case_a_seconds_write_made_later_wins_over_a_concurrent_replica_write(b: &dyn Backend) {
    let ws = b.new_workspace(2).await;
    let desktop = Peer::new(b, 0, 1).await;
    let id = desktop
        .replica
        .create_json(ws, &tasks(), &json!({"title": "draft"}))
        .expect("create");
    desktop.sync(ws).await;
    let mut web = Foreign::new(b, 1, 0x01).await;
    web.pull(ws, id).await;

    desktop.clock.set(T + 1_000);
    desktop
        .replica
        .patch_json(&id, &json!({"title": "from desktop"}))
        .expect("edit");
    web.write(ws, id, "title", "from web", (T + 2_100) / 1000)
        .await;
    desktop.sync(ws).await;

    let reader = Peer::new(b, 1, 2).await;
    reader.sync(ws).await;
    for r in [&desktop.replica, &reader.replica] {
        assert_eq!(title(r, &id), "from web");
        let c = r.conflicts(&id).expect("conflicts");
        assert_eq!(c.len(), 1);
        let won = &c[0].candidates[c[0].winner];
        assert_eq!(won.time, (T + 2_100) / 1000, "stamped in seconds");
        assert_eq!(won.timestamp, T + 2_000, "read as ms");
    }
    assert_eq!(
        desktop.replica.conflicts(&id).expect("conflicts"),
        reader.replica.conflicts(&id).expect("conflicts")
    );
}

/// "a" (a replica) beat a concurrent "w"; a JavaScript client that has seen
/// "a" (not "w") overwrites it with "j", its clock a minute behind, stamping
/// seconds: "j" beats "w" everywhere.
async fn case_a_foreign_write_that_has_seen_a_value_beats_what_that_value_beat(b: &dyn Backend) {
    let ws = b.new_workspace(3).await;
    let a = Peer::new(b, 0, 1).await;
    let w = Peer::new(b, 1, 2).await;
    let id = a
        .replica
        .create_json(ws, &tasks(), &json!({"title": "init"}))
        .expect("create");
    a.sync(ws).await;
    w.sync(ws).await;
    w.clock.set(T + 100);
    w.replica
        .patch_json(&id, &json!({"title": "w"}))
        .expect("edit");
    a.clock.set(T + 500);
    a.replica
        .patch_json(&id, &json!({"title": "a"}))
        .expect("edit");
    a.sync(ws).await;
    let mut js = Foreign::new(b, 2, 0x02).await;
    js.pull(ws, id).await;
    js.write(ws, id, "title", "j", (T - 60_000) / 1000).await;
    w.sync(ws).await;
    a.sync(ws).await;
    // Had "j" been compared by its stamp read as ms, "w" would win.
    for r in [&a.replica, &w.replica] {
        assert_eq!(title(r, &id), "j");
        let c = r.conflicts(&id).expect("conflicts");
        let values: Vec<_> = c[0].candidates.iter().map(|x| x.value.clone()).collect();
        assert_eq!(values, vec![json!("w"), json!("j")]);
        assert_eq!(
            c[0].candidates[1].timestamp,
            T + 501,
            "after the 'a' it saw"
        );
    }
}

/// Foreign writers stamping no time (0) or clocks a year off: every write
/// that has seen the previous one replaces it, the effective timestamps grow
/// along the chain, and a replica writing afterwards stays later still.
async fn case_writers_with_no_time_or_far_skewed_clocks_follow_causality(b: &dyn Backend) {
    const YEAR: i64 = 365 * 86_400_000;
    let ws = b.new_workspace(2).await;
    let r = Peer::new(b, 0, 1).await;
    let id = r
        .replica
        .create_json(ws, &tasks(), &json!({"title": "t0"}))
        .expect("create");
    r.sync(ws).await;
    let mut js = Foreign::new(b, 1, 0x03).await;
    for (i, time) in [0, (T + YEAR) / 1000, 0, T - YEAR, -42, T + YEAR]
        .into_iter()
        .enumerate()
    {
        js.pull(ws, id).await;
        js.write(ws, id, "title", &format!("js{i}"), time).await;
        r.sync(ws).await;
        assert_eq!(title(&r.replica, &id), format!("js{i}"));
        // The replica, its clock right, writes on top: later still.
        r.clock.set(T + i as i64);
        r.replica
            .patch_json(&id, &json!({"title": format!("rust{i}")}))
            .expect("edit");
        r.sync(ws).await;
        assert_eq!(title(&r.replica, &id), format!("rust{i}"));
        assert!(r.replica.conflicts(&id).expect("conflicts").is_empty());
    }
    let hist = r.replica.history(&id).expect("history");
    for pair in hist.windows(2) {
        assert!(pair[1].effective > pair[0].effective, "{hist:#?}");
    }
    // After the year-ahead seconds write, effective time is a year ahead
    // and the replica stamps on from there.
    let last = hist.last().expect("a change");
    assert_eq!(last.effective, last.timestamp);
    assert!(last.timestamp > T + YEAR, "{last:?}");
}

/// A first change built by hand.
fn first_change(fill: impl FnOnce(&mut automerge::transaction::Transaction<'_>)) -> Change {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    fill(&mut tx);
    let (h, _) = tx.commit_with(CommitOptions::default().with_time(T));
    doc.get_change_by_hash(&h.expect("a change"))
        .expect("change")
}

fn with_meta(collection: &str) -> Change {
    first_change(|tx| {
        let meta = tx.put_object(ROOT, "_meta", ObjType::Map).expect("meta");
        tx.put(&meta, "collection", collection).expect("collection");
        tx.put_object(ROOT, "data", ObjType::Map).expect("data");
    })
}

/// Both servers refuse, with the same reasons, a first change without
/// `_meta.collection`, a collection that disagrees with `_meta.collection`,
/// and a change pushed to another collection than its document's.
async fn case_the_collection_rule_holds_on_every_server(b: &dyn Backend) {
    let ws = b.new_workspace(1).await;
    let remote = b.remote_for(0).await;
    let notes = Collection::new("notes").expect("collection");
    let reason = |o: PushOutcome| match o {
        PushOutcome::Rejected { reason } => reason,
        other => panic!("expected a rejection, got {other:?}"),
    };
    let id = DocId::from_uuid(uuid::Uuid::now_v7());
    let no_meta = first_change(|tx| tx.put(ROOT, "title", "x").expect("put"));
    assert_eq!(
        reason(push_one(remote.as_ref(), ws, id, &tasks(), &no_meta).await),
        format!("document {id}: {}", entity::MISSING_META)
    );
    let text = first_change(|tx| {
        let meta = tx.put_object(ROOT, "_meta", ObjType::Map).expect("meta");
        let t = tx
            .put_object(&meta, "collection", ObjType::Text)
            .expect("text");
        tx.splice_text(&t, 0, 0, "tasks").expect("splice");
    });
    assert_eq!(
        reason(push_one(remote.as_ref(), ws, id, &tasks(), &text).await),
        format!("document {id}: {}", entity::COLLECTION_IS_TEXT)
    );
    let creation = with_meta("tasks");
    assert_eq!(
        reason(push_one(remote.as_ref(), ws, id, &notes, &creation).await),
        format!(
            "_meta.collection of document {id} is \"tasks\" but the change is pushed to \"notes\""
        )
    );
    assert!(matches!(
        push_one(remote.as_ref(), ws, id, &tasks(), &creation).await,
        PushOutcome::Stored { .. }
    ));
    let mut doc = Automerge::new();
    doc.apply_changes([creation]).expect("apply");
    let mut tx = doc.transaction();
    tx.put(ROOT, "n", 1).expect("put");
    let (h, _) = tx.commit_with(CommitOptions::default().with_time(T + 1));
    let next = doc
        .get_change_by_hash(&h.expect("a change"))
        .expect("change");
    assert_eq!(
        reason(push_one(remote.as_ref(), ws, id, &notes, &next).await),
        format!("document {id} is stored under collection \"tasks\"; this change is pushed to \"notes\"")
    );
    assert!(matches!(
        push_one(remote.as_ref(), ws, id, &tasks(), &next).await,
        PushOutcome::Stored { .. }
    ));
    let stored = b.stored_changes(&ws).await;
    assert_eq!(stored.len(), 2, "only the accepted changes: {stored:?}");
}

/// The SQL decoder of first changes (`supamerge_private.creation_collection`)
/// gives the Rust rule's answer (`entity::creation_meta`) on first changes of
/// every shape: with and without `_meta`, text, numbers, replaced maps, long
/// texts, many ops, messages, several actors' worth of values, unicode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_decoder_of_first_changes_agrees_with_automerge() {
    let db = support::pg::TestDb::new().await;
    let client = db.superuser().await;
    let mut cases: Vec<(&str, Change)> = vec![
        ("a replica's creation", with_meta("tasks")),
        ("a long name", with_meta(&format!("c{}", "x".repeat(63)))),
        (
            "no _meta",
            first_change(|tx| tx.put(ROOT, "t", "x").expect("put")),
        ),
        ("no ops", {
            let mut d = Automerge::new();
            let h = d.empty_commit(CommitOptions::default().with_time(T));
            d.get_change_by_hash(&h).expect("change")
        }),
        (
            "unicode and a long text before _meta",
            first_change(|tx| {
                let t = tx.put_object(ROOT, "ñotes ✓", ObjType::Text).expect("text");
                tx.splice_text(&t, 0, 0, &"héllo wörld ".repeat(300))
                    .expect("splice");
                let l = tx.put_object(ROOT, "list", ObjType::List).expect("list");
                for i in 0..200 {
                    tx.insert(&l, i, i as i64 * 7 - 300).expect("insert");
                }
                let meta = tx.put_object(ROOT, "_meta", ObjType::Map).expect("meta");
                tx.put(&meta, "deleted", false).expect("put");
                tx.put(&meta, "collection", "notes.v2").expect("put");
                tx.put(&meta, "schema", 3u64).expect("put");
                tx.put(ROOT, "bytes", ScalarValue::Bytes(vec![0, 1, 2, 255]))
                    .expect("put");
                tx.put(ROOT, "f", 1.5).expect("put");
            }),
        ),
        (
            "collection set twice",
            first_change(|tx| {
                let meta = tx.put_object(ROOT, "_meta", ObjType::Map).expect("meta");
                tx.put(&meta, "collection", "a").expect("put");
                tx.put(&meta, "collection", "b").expect("put");
            }),
        ),
        (
            "collection deleted",
            first_change(|tx| {
                let meta = tx.put_object(ROOT, "_meta", ObjType::Map).expect("meta");
                tx.put(&meta, "collection", "a").expect("put");
                tx.delete(&meta, "collection").expect("delete");
            }),
        ),
        (
            "_meta replaced by a second map",
            first_change(|tx| {
                let m1 = tx.put_object(ROOT, "_meta", ObjType::Map).expect("meta");
                tx.put(&m1, "collection", "first").expect("put");
                let m2 = tx.put_object(ROOT, "_meta", ObjType::Map).expect("meta");
                tx.put(&m2, "collection", "second").expect("put");
                tx.put(&m1, "collection", "late write to the old map")
                    .expect("put");
            }),
        ),
        (
            "_meta replaced by a scalar",
            first_change(|tx| {
                let m = tx.put_object(ROOT, "_meta", ObjType::Map).expect("meta");
                tx.put(&m, "collection", "x").expect("put");
                tx.put(ROOT, "_meta", 1).expect("put");
            }),
        ),
        (
            "_meta a list",
            first_change(|tx| {
                tx.put_object(ROOT, "_meta", ObjType::List).expect("list");
            }),
        ),
        (
            "collection a counter",
            first_change(|tx| {
                let m = tx.put_object(ROOT, "_meta", ObjType::Map).expect("meta");
                tx.put(&m, "collection", ScalarValue::counter(1))
                    .expect("put");
            }),
        ),
        (
            "collection a text",
            first_change(|tx| {
                let m = tx.put_object(ROOT, "_meta", ObjType::Map).expect("meta");
                let t = tx.put_object(&m, "collection", ObjType::Text).expect("t");
                tx.splice_text(&t, 0, 0, "tasks").expect("splice");
            }),
        ),
        (
            "nested _meta is not the root's",
            first_change(|tx| {
                let d = tx.put_object(ROOT, "data", ObjType::Map).expect("data");
                let m = tx.put_object(&d, "_meta", ObjType::Map).expect("meta");
                tx.put(&m, "collection", "tasks").expect("put");
            }),
        ),
    ];
    // A change with a message and a dependency-free fork of another actor.
    let mut doc = Automerge::new();
    doc.set_actor(ActorId::from(&[0xee; 32][..]));
    let mut tx = doc.transaction();
    let meta = tx.put_object(ROOT, "_meta", ObjType::Map).expect("meta");
    tx.put(&meta, "collection", "with-message").expect("put");
    let (h, _) = tx.commit_with(
        CommitOptions::default()
            .with_message("a commit message ✓".to_owned())
            .with_time(-5),
    );
    cases.push((
        "a message, a long actor, a negative time",
        doc.get_change_by_hash(&h.expect("a change"))
            .expect("change"),
    ));
    let mut tx = doc.transaction();
    tx.put(&meta, "collection", "later").expect("put");
    let (h, _) = tx.commit();
    cases.push((
        "not a first change",
        doc.get_change_by_hash(&h.expect("a change"))
            .expect("change"),
    ));

    for (what, change) in &cases {
        let row = client
            .query_one(
                "select supamerge_private.creation_collection($1)",
                &[&change.raw_bytes()],
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let sql: Option<String> = row.get(0);
        let rust = match entity::creation_meta(change) {
            CreationMeta::NotCreation => None,
            CreationMeta::Collection(c) => Some(format!("ok:{c}")),
            CreationMeta::Missing(reason) => Some(format!("err:{reason}")),
        };
        assert_eq!(sql, rust, "{what}");
    }
    assert!(cases.len() >= 15);
}

/// `supamerge_private.base64_problem` names the encoding a client used by
/// mistake, and lets every standard base64 text through (also one that
/// starts like the hex magic but is not hex).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_names_the_encoding_of_bytes_that_are_not_base64() {
    use base64::Engine;
    let db = support::pg::TestDb::new().await;
    let client = db.superuser().await;
    let change = with_meta("tasks");
    let bytes = change.raw_bytes();
    let std = base64::engine::general_purpose::STANDARD.encode(bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let cases: Vec<(String, Option<&str>)> = vec![
        (std.clone(), None),
        ("856f4a83Zg==".into(), None),
        ("".into(), None),
        (hex.clone(), Some("bytes are hex (they start with 856f4a83")),
        (
            hex.to_uppercase(),
            Some("bytes are hex (they start with 856f4a83"),
        ),
        (
            format!("\\x{hex}"),
            Some("bytes are PostgreSQL bytea hex text"),
        ),
        (
            "ab-_cd".into(),
            Some("bytes use the URL-safe base64 alphabet"),
        ),
        (
            "YWJjZA".to_owned(),
            Some("bytes are base64 without padding"),
        ),
        (
            "not base64!".into(),
            Some("bytes are not valid standard base64"),
        ),
    ];
    for (text, expected) in cases {
        let row = client
            .query_one("select supamerge_private.base64_problem($1)", &[&text])
            .await
            .expect("query");
        let got: Option<String> = row.get(0);
        match expected {
            None => assert_eq!(got, None, "{text:?}"),
            Some(start) => assert!(
                got.as_deref().is_some_and(|g| g.starts_with(start)),
                "{text:?}: {got:?}"
            ),
        }
    }
}

/// A document written without `_meta` (here handed to `apply_remote`; the
/// servers refuse it) is not an entity: not listed, and get, edit, delete,
/// resolve and migrate agree. Early arrivals alone are "not found" until the
/// creation arrives, and the entity is listed then.
#[test]
fn a_document_without_meta_is_not_an_entity_anywhere() {
    let dir = tempfile::tempdir().expect("temp dir");
    let r = Replica::open(dir.path()).expect("open");
    let ws = WorkspaceId::from_random([4; 16]);
    let id = DocId::from_uuid(uuid::Uuid::now_v7());
    let bare = first_change(|tx| tx.put(ROOT, "title", "no meta").expect("put"));
    let report = r
        .apply_remote(
            vec![RemoteChange {
                workspace: ws,
                doc_id: id,
                collection: tasks(),
                hash: None,
                bytes: bare.raw_bytes().to_vec(),
            }],
            None,
        )
        .expect("apply");
    assert_eq!(report.applied, 1);
    assert!(r.list(&tasks()).expect("list").is_empty());
    let not_an_entity = |e: Result<_, Error>| {
        assert!(
            matches!(e, Err(Error::Entity(EntityError::NotAnEntity { .. }))),
            "{:?}",
            e.err()
        );
    };
    not_an_entity(r.get_json(&id).map(|_| ()));
    not_an_entity(r.patch_json(&id, &json!({"title": "x"})).map(|_| ()));
    not_an_entity(r.delete(&id).map(|_| ()));
    not_an_entity(r.resolve(&id, "/title", &json!("x")).map(|_| ()));
    not_an_entity(r.migrate(&id).map(|_| ()));
    assert!(r.info(&id).is_ok(), "info still describes it");
    let e = r.get_json(&id).expect_err("not an entity");
    assert!(e.to_string().contains("has no `_meta` map"), "{e}");

    // An early arrival alone: not found, not listed; listed once its
    // creation arrives.
    let mut doc = Automerge::new();
    let creation = {
        let mut tx = doc.transaction();
        let meta = tx.put_object(ROOT, "_meta", ObjType::Map).expect("meta");
        tx.put(&meta, "collection", "tasks").expect("put");
        tx.put_object(ROOT, "data", ObjType::Map).expect("data");
        let (h, _) = tx.commit_with(CommitOptions::default().with_time(T));
        doc.get_change_by_hash(&h.expect("a change")).expect("c")
    };
    let data = match doc.get(ROOT, "data").expect("read") {
        Some((_, d)) => d,
        None => panic!("no data"),
    };
    let edit = {
        let mut tx = doc.transaction();
        tx.put(&data, "title", "early").expect("put");
        let (h, _) = tx.commit_with(CommitOptions::default().with_time(T + 1));
        doc.get_change_by_hash(&h.expect("a change")).expect("c")
    };
    let id2 = DocId::from_uuid(uuid::Uuid::now_v7());
    let deliver = |c: &Change| {
        r.apply_remote(
            vec![RemoteChange {
                workspace: ws,
                doc_id: id2,
                collection: tasks(),
                hash: None,
                bytes: c.raw_bytes().to_vec(),
            }],
            None,
        )
        .expect("apply")
    };
    assert_eq!(deliver(&edit).pending, 1);
    assert!(matches!(
        r.get_json(&id2),
        Err(Error::Entity(EntityError::NotFound { .. }))
    ));
    assert!(r.list(&tasks()).expect("list").is_empty());
    assert_eq!(deliver(&creation).applied, 2);
    assert_eq!(r.list(&tasks()).expect("list"), vec![id2]);
    assert_eq!(r.get_json(&id2).expect("read"), json!({"title": "early"}));
}

/// A merge patch on a counter increments it by the difference: a concurrent
/// increment elsewhere still counts. Anything but an integer or null is
/// refused; `info` lists the counters.
#[test]
fn a_merge_patch_on_a_counter_increments_it_by_the_difference() {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let clock = ManualClock::new(T);
    let open = |d: &tempfile::TempDir, seed| {
        Replica::builder(d.path())
            .with_seed(seed)
            .with_clock(Arc::new(clock.clone()))
            .open()
            .expect("open")
    };
    let (a, b) = (open(&da, 1), open(&db, 2));
    let ws = WorkspaceId::from_random([5; 16]);
    let id = a
        .create_json(ws, &tasks(), &json!({"title": "t"}))
        .expect("create");
    a.transact(&id, |tx, data| {
        tx.put(data, "likes", ScalarValue::counter(10))
    })
    .expect("counter");
    let exchange = |from: &Replica, to: &Replica| {
        let changes: Vec<RemoteChange> = from
            .with_doc(&id, |d| {
                d.get_changes(&[])
                    .into_iter()
                    .map(|c| RemoteChange {
                        workspace: ws,
                        doc_id: id,
                        collection: tasks(),
                        hash: None,
                        bytes: c.raw_bytes().to_vec(),
                    })
                    .collect()
            })
            .expect("doc");
        to.apply_remote(changes, None).expect("apply");
    };
    exchange(&a, &b);
    assert_eq!(a.info(&id).expect("info").counters, vec!["/likes"]);
    clock.set(T + 10);
    // A: the "likes" field set to 11 by a merge patch; B: +1 concurrently.
    a.patch_json(&id, &json!({"likes": 11})).expect("patch");
    b.transact(&id, |tx, data| tx.increment(data, "likes", 1))
        .expect("increment");
    exchange(&a, &b);
    exchange(&b, &a);
    for r in [&a, &b] {
        assert_eq!(r.get_json(&id).expect("read")["likes"], 12, "both count");
        assert!(r.conflicts(&id).expect("conflicts").is_empty());
        assert_eq!(r.info(&id).expect("info").counters, vec!["/likes"]);
    }
    assert_eq!(
        a.patch_json(&id, &json!({"likes": 12})).expect("patch"),
        None
    );
    a.patch_json(&id, &json!({"likes": 2})).expect("decrement");
    assert_eq!(a.get_json(&id).expect("read")["likes"], 2);
    for bad in [
        json!("many"),
        json!(1.5),
        json!([1]),
        json!({"n": 1}),
        json!(true),
    ] {
        let e = a
            .patch_json(&id, &json!({ "likes": bad }))
            .expect_err("refused");
        assert!(
            matches!(&e, Error::Entity(EntityError::CounterPatch { path, .. }) if path == "/likes"),
            "{e}"
        );
    }
    assert_eq!(
        a.get_json(&id).expect("read")["likes"],
        2,
        "nothing written"
    );
    a.patch_json(&id, &json!({"likes": null})).expect("remove");
    assert_eq!(a.get_json(&id).expect("read"), json!({"title": "t"}));
    assert!(a.info(&id).expect("info").counters.is_empty());
}
