//! Export and import (`supamerge::archive`) round trips through real
//! replicas and a real hub: deleted entities and conflicts (every candidate
//! and the winner) survive, a re-import adds nothing (counted in the
//! outbox), an import into another workspace is a copy with whole
//! histories, and what was imported syncs to a fresh device. Also the
//! `export`/`import` commands of the binary.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use supamerge::archive::{self, ArchiveError};
use supamerge::{sync_once, Collection, DocId, LocalHub, Replica, SyncConfig, WorkspaceId};

fn no_progress(_: supamerge::SyncProgress) {}

async fn sync(r: &Replica, hub: &LocalHub, ws: WorkspaceId) -> supamerge::SyncReport {
    sync_once(r, hub, &SyncConfig::default(), &[ws], &no_progress)
        .await
        .expect("sync")
}

struct World {
    _dir: tempfile::TempDir,
    hub: LocalHub,
    a: Replica,
    ws: WorkspaceId,
    edited: DocId,
    gone: DocId,
}

/// Two replicas edit one field concurrently (a conflict) and delete an
/// entity; `a` ends up holding everything.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let hub = LocalHub::open(dir.path().join("hub")).unwrap();
    let a = Replica::open(dir.path().join("a")).unwrap();
    let b = Replica::open(dir.path().join("b")).unwrap();
    let ws = WorkspaceId::from_random(rand::random());
    let tasks = Collection::new("tasks").unwrap();
    let edited = a
        .create_json(
            ws,
            &tasks,
            &json!({"title": "first", "n": 1, "tags": ["x"]}),
        )
        .unwrap();
    let gone = a
        .create_json(ws, &tasks, &json!({"title": "to be deleted"}))
        .unwrap();
    sync(&a, &hub, ws).await;
    sync(&b, &hub, ws).await;
    a.patch_json(&edited, &json!({"title": "from a"})).unwrap();
    b.patch_json(&edited, &json!({"title": "from b", "n": 2}))
        .unwrap();
    b.delete(&gone).unwrap();
    sync(&a, &hub, ws).await;
    sync(&b, &hub, ws).await;
    sync(&a, &hub, ws).await;
    assert_eq!(a.pending(), 0);
    assert!(
        !a.conflicts(&edited).unwrap().is_empty(),
        "the fixture has a conflict"
    );
    assert!(a.info(&gone).unwrap().deleted);
    World {
        _dir: dir,
        hub,
        a,
        ws,
        edited,
        gone,
    }
}

fn same_entity(x: &Replica, xid: &DocId, y: &Replica, yid: &DocId) {
    let (ix, iy) = (x.info(xid).unwrap(), y.info(yid).unwrap());
    assert_eq!(ix.deleted, iy.deleted);
    assert_eq!(ix.collection, iy.collection);
    assert_eq!(x.conflicts(xid).unwrap(), y.conflicts(yid).unwrap());
    if !ix.deleted {
        assert_eq!(x.get_json(xid).unwrap(), y.get_json(yid).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_round_trip() {
    let w = world().await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("export");
    let report = archive::export_workspace(&w.a, w.ws, &dir).unwrap();
    assert_eq!((report.entities, report.deleted), (2, 1));

    // People read the JSON: values, the tombstone, every candidate.
    let human: Value = serde_json::from_slice(
        &std::fs::read(dir.join("entities").join(format!("{}.json", w.edited))).unwrap(),
    )
    .unwrap();
    assert_eq!(human["data"], w.a.get_json(&w.edited).unwrap());
    assert_eq!(human["conflicts"][0]["path"], "/title", "{human}");
    assert_eq!(
        human["conflicts"][0]["candidates"].as_array().map(Vec::len),
        Some(2),
        "{human}"
    );
    let tomb: Value = serde_json::from_slice(
        &std::fs::read(dir.join("entities").join(format!("{}.json", w.gone))).unwrap(),
    )
    .unwrap();
    assert_eq!(tomb["deleted"], true);
    let manifest = archive::read_manifest(&dir).unwrap();
    assert_eq!(
        (manifest.version, manifest.entities),
        (archive::FORMAT_VERSION, 2)
    );

    // Into a fresh replica: everything, and all of it waits in the outbox.
    let cdir = tempfile::tempdir().unwrap();
    let c = Replica::open(cdir.path().join("c")).unwrap();
    let r1 = archive::import_dir(&c, &dir, None).unwrap();
    assert_eq!((r1.documents, r1.created), (2, 2));
    let changes: usize = [w.edited, w.gone]
        .iter()
        .map(|id| w.a.history(id).unwrap().len())
        .sum();
    assert_eq!(r1.new_changes, changes);
    assert_eq!(c.pending(), changes);
    for id in [w.edited, w.gone] {
        same_entity(&w.a, &id, &c, &id);
        assert_eq!(w.a.heads(&id).unwrap(), c.heads(&id).unwrap());
    }
    // Idempotent: nothing new the second time, here or on the origin.
    let r2 = archive::import_dir(&c, &dir, None).unwrap();
    assert_eq!((r2.new_changes, r2.created), (0, 0));
    assert_eq!(c.pending(), changes);
    let pending_a = w.a.pending();
    assert_eq!(
        archive::import_dir(&w.a, &dir, None).unwrap().new_changes,
        0
    );
    assert_eq!(w.a.pending(), pending_a);
    // The hub already has it all: pushing stores nothing new.
    let pushed = sync(&c, &w.hub, w.ws).await;
    assert_eq!((pushed.pushed, pushed.already_present), (0, changes));

    // Into another workspace: a copy under new ids, whole histories, one
    // more change each that moves `_meta.workspace`.
    let ws2 = WorkspaceId::from_random(rand::random());
    let r3 = archive::import_dir(&c, &dir, Some(ws2)).unwrap();
    assert_eq!(
        (r3.workspace, r3.source_workspace, r3.created),
        (ws2, w.ws, 2)
    );
    assert_eq!(r3.new_changes, changes + 2);
    for id in [w.edited, w.gone] {
        let moved = archive::moved_id(ws2, id);
        assert_ne!(moved, id);
        assert_eq!(c.info(&moved).unwrap().workspace, ws2);
        same_entity(&w.a, &id, &c, &moved);
        assert_eq!(
            c.history(&moved).unwrap().len(),
            w.a.history(&id).unwrap().len() + 1
        );
    }
    let before = c.pending();
    assert_eq!(
        archive::import_dir(&c, &dir, Some(ws2))
            .unwrap()
            .new_changes,
        0
    );
    assert_eq!(c.pending(), before);
    // The copy syncs like any local edit: a fresh device gets it.
    sync(&c, &w.hub, ws2).await;
    let ddir = tempfile::tempdir().unwrap();
    let d = Replica::open(ddir.path().join("d")).unwrap();
    sync(&d, &w.hub, ws2).await;
    for id in [w.edited, w.gone] {
        let moved = archive::moved_id(ws2, id);
        same_entity(&c, &moved, &d, &moved);
    }
    assert!(
        d.documents(&w.ws).unwrap().is_empty(),
        "the original stays where it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_exports_are_refused_and_nothing_else_is_lost() {
    let w = world().await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("export");
    archive::export_workspace(&w.a, w.ws, &dir).unwrap();
    // Not into a non-empty directory.
    assert!(matches!(
        archive::export_workspace(&w.a, w.ws, &dir),
        Err(ArchiveError::NotEmpty { .. })
    ));
    let cdir = tempfile::tempdir().unwrap();
    let c = Replica::open(cdir.path().join("c")).unwrap();
    // No manifest, or another format version.
    assert!(matches!(
        archive::import_dir(&c, out.path(), None),
        Err(ArchiveError::NotAnExport { .. })
    ));
    let m = dir.join("manifest.json");
    let original = std::fs::read(&m).unwrap();
    let mut v: Value = serde_json::from_slice(&original).unwrap();
    v["version"] = json!(99);
    std::fs::write(&m, v.to_string()).unwrap();
    assert!(matches!(
        archive::import_dir(&c, &dir, None),
        Err(ArchiveError::NotAnExport { .. })
    ));
    std::fs::write(&m, &original).unwrap();
    // A damaged document: a clear error naming the file; the replica keeps
    // what it had.
    let keep = c
        .create_json(w.ws, &Collection::new("notes").unwrap(), &json!({"k": 1}))
        .unwrap();
    let victim = dir.join("entities").join(format!("{}.automerge", w.edited));
    std::fs::write(&victim, b"not automerge").unwrap();
    match archive::import_dir(&c, &dir, None) {
        Err(ArchiveError::BadDocument { path, .. }) => assert_eq!(path, victim),
        other => panic!("expected BadDocument, got {other:?}"),
    }
    assert_eq!(c.get_json(&keep).unwrap(), json!({"k": 1}));
}

fn bin(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_supamerge"));
    c.env_remove("SUPAMERGE_DATA")
        .arg("--json")
        .arg("--data")
        .arg(data);
    c
}

fn json_of(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// `supamerge export` and `supamerge import`, on replica directories.
#[test]
fn the_commands_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let ws = WorkspaceId::from_random(rand::random()).to_string();
    let made = json_of(
        bin(&a)
            .args(["create", &ws, "notes", r#"{"title":"kept"}"#])
            .output()
            .unwrap(),
    );
    let id = made["id"].as_str().unwrap().to_string();
    let dir = tmp.path().join("out");
    let exported = json_of(bin(&a).arg("export").arg(&ws).arg(&dir).output().unwrap());
    assert_eq!(exported["entities"], 1);
    let imported = json_of(bin(&b).arg("import").arg(&dir).output().unwrap());
    assert_eq!(
        (
            imported["documents"].clone(),
            imported["new_changes"].clone()
        ),
        (json!(1), json!(1))
    );
    let again = json_of(bin(&b).arg("import").arg(&dir).output().unwrap());
    assert_eq!(again["new_changes"], 0);
    let got = json_of(bin(&b).args(["get", &id]).output().unwrap());
    assert_eq!(got["data"]["title"], "kept");
    let status = json_of(bin(&b).arg("status").output().unwrap());
    assert_eq!(status["pending"], 1);
    // A second export into the same directory is refused, exit 1.
    let refused = bin(&a).arg("export").arg(&ws).arg(&dir).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
}
