//! The `supamerge` binary end to end: a round trip through every entity
//! command, the `--json` shapes, and the exit codes of bad input.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const WS: &str = "0190f3a4-7c1e-7b5a-9c7e-3f1d2a4b5c6d";

fn run(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_supamerge"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("SUPAMERGE_DATA")
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("supamerge-tests-no-profile-here"),
        )
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run supamerge")
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = run(data, args);
    assert!(
        out.status.success(),
        "{args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn ok_json(data: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(data, &all)).expect("--json prints JSON")
}

fn code(data: &Path, args: &[&str]) -> (i32, String) {
    let out = run(data, args);
    (
        out.status.code().expect("exited normally"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn entity_round_trip_with_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created = ok_json(
        d,
        &[
            "create",
            WS,
            "tasks",
            r#"{"title":"buy milk","n":1,"tags":["a"]}"#,
        ],
    );
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["collection"], "tasks");
    assert_eq!(created["workspace"], WS);

    let got = ok_json(d, &["get", &id]);
    assert_eq!(got["data"], json!({"title":"buy milk","n":1,"tags":["a"]}));
    assert_eq!(got["id"], id.as_str());

    let edited = ok_json(d, &["edit", &id, r#"{"n":null,"done":true}"#]);
    assert_eq!(edited["change"].as_str().unwrap().len(), 64);
    let again = ok_json(d, &["edit", &id, r#"{"done":true}"#]);
    assert_eq!(
        again["change"],
        Value::Null,
        "a no-op patch makes no change"
    );

    let list = ok_json(d, &["list", "tasks"]);
    assert_eq!(
        list,
        json!([{"id": id, "data": {"title":"buy milk","tags":["a"],"done":true}}])
    );
    assert_eq!(ok(d, &["list", "--ids-only", "tasks"]).trim(), id);

    let history = ok_json(d, &["history", &id]);
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["deps"], json!([history[0]["hash"]]));

    assert_eq!(ok_json(d, &["conflicts", &id]), json!([]));
    let info = ok_json(d, &["info", &id]);
    assert_eq!(info["deleted"], false);
    assert_eq!(info["heads"], json!([history[1]["hash"]]));

    ok_json(d, &["delete", &id]);
    assert_eq!(ok_json(d, &["list", "tasks"]), json!([]));
    let (c, err) = code(d, &["get", &id]);
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("deleted"), "{err}");
    assert_eq!(ok_json(d, &["info", &id])["deleted"], true);
}

#[test]
fn human_output_is_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = ok(d, &["create", WS, "notes", r#"{"body":"hi"}"#])
        .trim()
        .to_owned();
    assert!(id.parse::<supamerge::DocId>().is_ok(), "{id}");
    let got: Value = serde_json::from_str(&ok(d, &["get", &id])).unwrap();
    assert_eq!(got, json!({"body":"hi"}));
    assert!(ok(d, &["edit", &id, r#"{"body":"ho"}"#]).starts_with("updated "));
    assert!(ok(d, &["list", "notes"]).contains(r#"{"body":"ho"}"#));
    assert!(ok(d, &["info", &id]).contains("collection: notes"));
    assert!(ok(d, &["conflicts", &id]).contains("no conflicts"));
    assert_eq!(ok(d, &["history", &id]).lines().count(), 2);
}

#[test]
fn bad_input_exits_2_runtime_failures_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = "0190f3a4-7c1e-7b5a-9c7e-3f1d2a4b5c6d";
    for (args, want, needle) in [
        (vec!["get", "not-a-uuid"], 2, "invalid document id"),
        (
            vec!["create", "nope", "tasks", "{}"],
            2,
            "invalid workspace id",
        ),
        (
            vec!["create", WS, "9tasks", "{}"],
            2,
            "invalid collection name",
        ),
        (vec!["create", WS, "tasks", "{oops"], 2, "not valid JSON"),
        (
            vec!["create", WS, "tasks", "[1,2]"],
            2,
            "must be a JSON object",
        ),
        (vec!["edit", missing, "\"x\""], 2, "must be a JSON object"),
        (vec!["list", "bad name"], 2, "invalid collection name"),
        (vec!["frobnicate"], 2, "unrecognized subcommand"),
        (vec!["get"], 2, "required"),
        (vec!["get", missing], 1, "no entity"),
        (vec!["edit", missing, "{}"], 1, "no entity"),
        (vec!["delete", missing], 1, "no entity"),
        (vec!["history", missing], 1, "no entity"),
    ] {
        let (c, err) = code(d, &args);
        assert_eq!(c, want, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // Invalid input is refused before the replica directory is created.
    let fresh = d.join("never-created");
    assert_eq!(code(&fresh, &["create", WS, "tasks", "{oops"]).0, 2);
    assert!(!fresh.exists());
}

#[test]
fn json_errors_are_machine_readable() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["--json", "get", "0190f3a4-7c1e-7b5a-9c7e-3f1d2a4b5c6d"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"]["kind"], "not_found");
    assert_eq!(err["error"]["exit_code"], 1);
}

#[test]
fn data_dir_from_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_supamerge"))
        .args(["create", WS, "tasks", "{}"])
        .env("SUPAMERGE_DATA", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap();
    assert_eq!(ok(dir.path(), &["list", "--ids-only", "tasks"]), id);
}

#[test]
fn demo_command_converges() {
    let dir = tempfile::tempdir().unwrap();
    let report = ok_json(dir.path(), &["demo", "--burst", "20"]);
    assert_eq!(report["converged"], true);
    assert_eq!(report["replicas"], 3);
}

#[test]
fn resolve_a_conflict_made_by_two_replicas_through_a_hub() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, hub) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("hub"),
    );
    let hub = hub.to_str().unwrap();
    let sync = |d: &Path| ok(d, &["sync", "--hub", hub, "--workspace", WS]);
    let id = ok(&a, &["create", WS, "tasks", r#"{"title":"t","n":1}"#])
        .trim()
        .to_owned();
    sync(&a);
    sync(&b);
    ok(&a, &["edit", &id, r#"{"title":"from A","n":2}"#]);
    ok(&b, &["edit", &id, r#"{"title":"from B","n":3}"#]);
    sync(&a);
    sync(&b);
    sync(&a);
    let conflicts = ok_json(&a, &["conflicts", &id]);
    let paths: Vec<&str> = conflicts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/n", "/title"]);
    assert_eq!(ok_json(&b, &["conflicts", &id]), conflicts);

    // Bad input first: nothing is written.
    for (args, want, needle) in [
        (vec!["resolve", &id, "title", "x"], 2, "must start with '/'"),
        (vec!["resolve", &id, "/title"], 2, "required"),
        (
            vec!["resolve", &id, "/title", "x", "--local"],
            2,
            "cannot be used",
        ),
        (vec!["resolve", &id, "/nope", "x"], 1, "no field at path"),
        (
            vec!["resolve", "nope", "/title", "x"],
            2,
            "invalid document id",
        ),
    ] {
        let (c, err) = code(&a, &args);
        assert_eq!(c, want, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    // A keeps its own title (written by an earlier process: another actor).
    let r = ok_json(&a, &["resolve", &id, "/title", "--local"]);
    assert_eq!(r["value"], "from A");
    assert_eq!(r["kept"], "local");
    assert_eq!(r["change"].as_str().unwrap().len(), 64);
    // B writes a third value for n; not JSON, so a plain string.
    let r = ok_json(&b, &["resolve", &id, "/n", "neither"]);
    assert_eq!(r["value"], "neither");
    assert!(ok(&a, &["resolve", &id, "/n", "42"]).starts_with("resolved /n of"));
    let out = run(&a, &["--json", "resolve", &id, "/title", "--remote"]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"]["kind"], "not_conflicted");

    sync(&a);
    sync(&b);
    sync(&a);
    // A's 42 and B's "neither" were concurrent resolutions: a new conflict,
    // which B settles by keeping the remote value.
    let r = ok_json(&b, &["resolve", &id, "/n", "--remote"]);
    assert_eq!(r["value"], 42);
    sync(&b);
    sync(&a);
    for d in [&a, &b] {
        assert_eq!(ok_json(d, &["conflicts", &id]), json!([]));
        assert_eq!(
            ok_json(d, &["get", &id])["data"],
            json!({"title": "from A", "n": 42})
        );
    }
}

#[test]
fn prune_refuses_a_missing_hub_and_prunes_a_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let (a, hub) = (dir.path().join("a"), dir.path().join("hub"));
    let hub = hub.to_str().unwrap();
    let typo = dir.path().join("hbu");
    let (status, stderr) = code(&a, &["prune", "--hub", typo.to_str().unwrap()]);
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("no hub at"), "{stderr}");
    assert!(!typo.exists(), "a mistyped --hub must not create a hub");

    let id = ok(&a, &["create", WS, "tasks", r#"{"title":"t"}"#])
        .trim()
        .to_owned();
    for n in 0..3 {
        ok(&a, &["edit", &id, &format!(r#"{{"title":"t{n}"}}"#)]);
    }
    ok(&a, &["sync", "--hub", hub, "--workspace", WS]);
    // (Below the snapshot threshold nothing is folded yet, so nothing is
    // pruned; what pruning takes is the convergence suite's and
    // server_prune's to check.)
    let answer = ok_json(&a, &["prune", "--hub", hub]);
    assert_eq!(answer["v"], 1, "{answer}");
    assert_eq!(answer["pruned"], 0, "{answer}");
    // The replica still syncs against the hub, and a fresh device gets the
    // entity from it.
    ok(&a, &["sync", "--hub", hub, "--workspace", WS]);
    let b = dir.path().join("b");
    ok(&b, &["sync", "--hub", hub, "--workspace", WS]);
    assert_eq!(ok_json(&b, &["get", &id])["data"]["title"], "t2");
    assert_eq!(ok_json(&a, &["get", &id])["data"]["title"], "t2");
}
