//! `supamerge doctor` through the real binary: damage made behind the
//! replica's back with raw sled is found, and `--repair` quarantines it
//! (nothing deleted, the outbox never dropped) and re-attaches orphaned
//! outbox entries.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use supamerge::test_util::store_format::{codec, keys, trees, QuarantinedRecord};
use supamerge::{DocId, OutboxEntry};

const WS: &str = "0190f3a4-7c1e-7b5a-9c7e-3f1d2a4b5c6d";

fn run(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_supamerge"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("SUPAMERGE_DATA")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run supamerge")
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = run(data, args);
    assert!(
        out.status.success(),
        "{args:?} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `doctor --json [extra]`: the report and the exit code.
fn doctor(data: &Path, extra: &[&str]) -> (Value, i32) {
    let mut args = vec!["--json", "doctor"];
    args.extend_from_slice(extra);
    let out = run(data, &args);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out.status.code().unwrap())
}

fn create(data: &Path, json: &str) -> DocId {
    ok(data, &["create", WS, "notes", json])
        .trim()
        .parse()
        .unwrap()
}

fn raw_db(dir: &Path) -> sled::Db {
    sled::open(dir).unwrap()
}

fn problems_of(report: &Value, kind: &str) -> Vec<Value> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == kind)
        .cloned()
        .collect()
}

fn pending(data: &Path) -> u64 {
    let status: Value = serde_json::from_str(&ok(data, &["--json", "status"])).unwrap();
    status["pending"].as_u64().unwrap()
}

#[test]
fn doctor_finds_and_repairs_a_damaged_record_and_an_orphaned_outbox_entry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = create(d, r#"{"name":"a"}"#);
    let b = create(d, r#"{"name":"b"}"#);
    let c = create(d, r#"{"name":"c"}"#);
    ok(d, &["edit", &b.to_string(), r#"{"more":1}"#]);

    // A healthy replica.
    let (report, code) = doctor(d, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["counts"]["documents"], 3);
    assert_eq!(report["counts"]["outbox"], 4);
    assert!(report["problems"].as_array().unwrap().is_empty());
    let before = pending(d);

    // Damage behind the replica's back: a's record no longer decodes; b's
    // record, chunks and collection entry are gone, so its two outbox
    // entries are orphans (their changes are the only copy left).
    let garbage = [codec::FORMAT_V1, 0xfe, 0xff];
    {
        let db = raw_db(d);
        db.open_tree(trees::DOCS)
            .unwrap()
            .insert(keys::doc(&a), &garbage[..])
            .unwrap();
        db.open_tree(trees::DOCS)
            .unwrap()
            .remove(keys::doc(&b))
            .unwrap();
        let chunks = db.open_tree(trees::CHUNKS).unwrap();
        for k in chunks.scan_prefix(keys::doc(&b)).keys() {
            chunks.remove(k.unwrap()).unwrap();
        }
        let coll = supamerge::Collection::new("notes").unwrap();
        db.open_tree(trees::BY_COLLECTION)
            .unwrap()
            .remove(keys::collection_entry(&coll, &b))
            .unwrap();
        db.flush().unwrap();
    }

    // Found, nothing changed.
    let out = run(d, &["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&a.to_string()), "{text}");
    assert!(text.contains("--repair"), "{text}");
    let (report, code) = doctor(d, &[]);
    assert_eq!(code, 1);
    let damaged = problems_of(&report, "damaged_document");
    assert_eq!(damaged.len(), 1, "{report}");
    assert_eq!(damaged[0]["doc"], a.to_string());
    let orphans = problems_of(&report, "outbox_orphan");
    assert_eq!(orphans.len(), 2, "{report}");
    assert!(orphans.iter().all(|p| p["doc"] == b.to_string()));
    assert!(report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["action"].is_null()));
    // `list` skips the damaged record, names it, and fails.
    let out = run(d, &["list", "notes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&a.to_string()));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&c.to_string()));

    // Repaired: a is moved to quarantine, b's outbox entries re-attached.
    let (report, code) = doctor(d, &["--repair"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["repaired"], true);
    assert!(
        report["remaining"].as_array().unwrap().is_empty(),
        "{report}"
    );
    assert_eq!(
        problems_of(&report, "damaged_document")[0]["action"],
        "quarantined"
    );
    assert!(problems_of(&report, "outbox_orphan")
        .iter()
        .all(|p| p["action"] == "reattached"));
    assert!(report["quarantined"].as_u64().unwrap() >= 3, "{report}");

    // b is back with both writes; c untouched; a gone from the listing.
    let got: Value = serde_json::from_str(&ok(d, &["--json", "get", &b.to_string()])).unwrap();
    assert_eq!(got["data"], serde_json::json!({"name": "b", "more": 1}));
    let list = ok(d, &["list", "notes", "--ids-only"]);
    let listed: Vec<&str> = list.lines().collect();
    assert_eq!(listed.len(), 2, "{list}");
    assert!(listed.contains(&b.to_string().as_str()));
    assert!(listed.contains(&c.to_string().as_str()));
    // The outbox was not dropped: a's entry still waits to be pushed.
    assert_eq!(pending(d), before);
    let (report, code) = doctor(d, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report["notes"][0]
            .as_str()
            .unwrap()
            .contains(&a.to_string()),
        "{report}"
    );

    // Nothing was deleted: a's damaged record is in quarantine byte for byte.
    let db = raw_db(d);
    let q = db.open_tree(trees::QUARANTINE).unwrap();
    let records: Vec<QuarantinedRecord> = q
        .iter()
        .map(|r| {
            let (k, v) = r.unwrap();
            codec::decode(trees::QUARANTINE, &k, &v).unwrap()
        })
        .collect();
    let rec = records
        .iter()
        .find(|r| r.tree == trees::DOCS)
        .expect("the record is quarantined");
    assert_eq!(rec.key, keys::doc(&a));
    assert_eq!(rec.value, garbage);
    assert!(records
        .iter()
        .any(|r| r.tree == trees::CHUNKS && r.key.starts_with(&keys::doc(&a))));
}

#[test]
fn doctor_reattaches_a_change_missing_from_its_document_and_quarantines_an_unpushable_entry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = create(d, r#"{"name":"a"}"#);
    ok(d, &["edit", &a.to_string(), r#"{"n":2}"#]);
    let b = create(d, r#"{"name":"b"}"#);
    let (outbox_keys, b_entry_key) = {
        let db = raw_db(d);
        // a's second chunk (the edit) is lost: the outbox still has it.
        db.open_tree(trees::CHUNKS)
            .unwrap()
            .remove(keys::chunk(&a, 1))
            .unwrap();
        // b's outbox entry no longer decodes: it can never be pushed.
        let outbox = db.open_tree(trees::OUTBOX).unwrap();
        let mut keys_seen = Vec::new();
        let mut b_key = None;
        for r in outbox.iter() {
            let (k, v) = r.unwrap();
            let e: OutboxEntry = codec::decode(trees::OUTBOX, &k, &v).unwrap();
            if e.doc_id == b {
                b_key = Some(k.to_vec());
            }
            keys_seen.push(k.to_vec());
        }
        let b_key = b_key.unwrap();
        outbox
            .insert(&b_key, &[codec::FORMAT_V1, 0x01][..])
            .unwrap();
        db.flush().unwrap();
        (keys_seen, b_key)
    };
    assert_eq!(outbox_keys.len(), 3);

    let (report, code) = doctor(d, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        problems_of(&report, "outbox_change_missing").len(),
        1,
        "{report}"
    );
    let undecodable = problems_of(&report, "undecodable");
    assert_eq!(undecodable.len(), 1, "{report}");
    assert_eq!(undecodable[0]["tree"], "outbox");
    // Before the repair the edit is missing from a.
    let got: Value = serde_json::from_str(&ok(d, &["--json", "get", &a.to_string()])).unwrap();
    assert_eq!(got["data"], serde_json::json!({"name": "a"}));

    let (report, code) = doctor(d, &["--repair"]);
    assert_eq!(code, 0, "{report}");
    let got: Value = serde_json::from_str(&ok(d, &["--json", "get", &a.to_string()])).unwrap();
    assert_eq!(got["data"], serde_json::json!({"name": "a", "n": 2}));
    // The unpushable entry left the outbox for the quarantine, whole.
    assert_eq!(pending(d), 2);
    let db = raw_db(d);
    let q: Vec<QuarantinedRecord> = db
        .open_tree(trees::QUARANTINE)
        .unwrap()
        .iter()
        .map(|r| {
            let (k, v) = r.unwrap();
            codec::decode(trees::QUARANTINE, &k, &v).unwrap()
        })
        .collect();
    assert!(q
        .iter()
        .any(|r| r.tree == trees::OUTBOX && r.key == b_entry_key && r.value == [1, 1]));
}

#[test]
fn doctor_refuses_a_directory_without_a_replica() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["doctor", dir.path().join("nothing").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !dir.path().join("nothing").exists(),
        "doctor created a replica"
    );
}
