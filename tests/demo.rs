//! The demo scenario converges, finds the conflict it stages, and shows
//! live edits arriving with nobody syncing: the `supamerge demo` binary,
//! read through its `--json` report.

use std::process::{Command, Stdio};

use serde_json::Value;

#[test]
fn demo_converges_and_reports_the_staged_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_supamerge"))
        .arg("--data")
        .arg(dir.path())
        .args(["--json", "demo", "--burst", "300"])
        .env_remove("SUPAMERGE_DATA")
        .env_remove("RUST_LOG")
        .env_remove("SUPABASE_URL")
        // No `supamerge login` profile: the demo runs on the embedded hub.
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("supamerge-tests-no-profile-here"),
        )
        .stdin(Stdio::null())
        .output()
        .expect("run supamerge demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(report["converged"], true, "{report:#}");
    assert_eq!(report["replicas"], 3);
    // t1 (typed task, concurrent retitle) is in conflict; t3 deleted.
    let conflicts = report["conflicts"].as_array().expect("conflicts");
    assert!(
        conflicts.iter().any(|c| c["conflict"]["path"] == "/title"),
        "{conflicts:?}"
    );
    assert_eq!(
        report["entities"], 4,
        "t1, t2, note, burst counter; t3 deleted"
    );
    // The live part: Alice's edits reached both other replicas (each edit
    // measured on each), and every replica ends with the last one.
    let live = &report["live"];
    assert_eq!(live["edits"], 5, "{live}");
    let delays = live["delays_ms"].as_array().expect("delays");
    assert_eq!(delays.len(), 10, "{live}");
    assert!(delays.iter().all(|d| d.as_f64().is_some_and(|d| d >= 0.0)));
    let states = report["states"].as_array().expect("states");
    assert_eq!(states.len(), 3);
    for st in states {
        let titles: Vec<&str> = st["entities"]
            .as_object()
            .expect("entities")
            .values()
            .filter_map(|v| v["title"].as_str())
            .collect();
        assert!(
            titles.contains(&"Review the API (live edit 5)"),
            "{titles:?}"
        );
    }
    for st in states {
        let entities = st["entities"].as_object().expect("entities");
        let burst = entities
            .values()
            .find(|v| v["title"] == "Burst")
            .expect("burst entity");
        assert_eq!(burst["n"], 300);
        let note = entities
            .values()
            .find(|v| v["title"] == "Meeting notes")
            .expect("note");
        assert_eq!(note["likes"], 2);
        let body = note["body"].as_str().unwrap();
        assert!(
            body.contains("Alice: push first.") && body.contains("Bob: then pull."),
            "{body}"
        );
    }
    assert!(report["changes_synced"].as_u64().unwrap() >= 300);
}
