//! The demo scenario converges and finds the conflict it stages.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_converges_and_reports_the_staged_conflict() {
    let report = supamerge::demo::run(supamerge::demo::DemoOptions {
        burst: 300,
        ..Default::default()
    })
    .await
    .expect("demo runs");
    assert!(report.converged, "{}", supamerge::demo::render(&report));
    assert_eq!(report.replicas, 3);
    // t1 (typed task, concurrent retitle) is in conflict; t3 deleted.
    assert!(
        report.conflicts.iter().any(|c| c.conflict.path == "/title"),
        "{:?}",
        report.conflicts
    );
    assert_eq!(
        report.entities, 4,
        "t1, t2, note, burst counter; t3 deleted"
    );
    for st in &report.states {
        let burst = st
            .entities
            .values()
            .find(|v| v["title"] == "Burst")
            .expect("burst entity");
        assert_eq!(burst["n"], 300);
        let note = st
            .entities
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
    assert!(report.changes_synced >= 300);
}
