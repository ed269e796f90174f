//! The examples under `examples/` run and say what they should (issue 14):
//! the LocalHub ones are run as the built binaries (`cargo test
//! --all-targets`, which `scripts/test.sh` runs, builds every example next
//! to this test; `cargo build --examples` does too), their output checked.
//! `todo_supabase` runs against the gateway in front of a fresh PostgreSQL
//! database with the migration (needs `SUPAMERGE_TEST_DATABASE_URL`, which
//! `scripts/test.sh` provides), and without a connection must say what to set.

#[path = "support/pg.rs"]
mod pg;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The built example `name`: `target/<profile>/examples/<name>`, beside
/// `target/<profile>/deps/` where this test runs from.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --examples` (or `cargo test --all-targets`) first",
        path.display()
    );
    path
}

/// Runs the example with a generous guard against hangs; returns stdout.
fn run(name: &str) -> String {
    let mut child = Command::new(example(name))
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the example");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("example {name} hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn todo_syncs_two_replicas_shows_a_conflict_and_its_resolution() {
    let out = run("todo");
    assert!(
        out.contains("bob sees: Todo { title: \"buy milk\", done: false }"),
        "{out}"
    );
    let conflict = out
        .lines()
        .find(|l| l.starts_with("conflict on "))
        .unwrap_or_else(|| panic!("no conflict reported:\n{out}"));
    assert!(
        conflict.contains("at /title")
            && conflict.contains("\"buy oat milk\"")
            && conflict.contains("\"buy milk and eggs\""),
        "{conflict}"
    );
    assert!(out.contains("bob resolved /title"), "{out}");
    assert!(
        out.contains("both replicas agree: Todo { title: \"buy oat milk and eggs\", done: true }"),
        "{out}"
    );
    // The engines' events were printed as they came.
    assert!(out.contains("[bob] sync pass: pushed"), "{out}");
    assert!(out.contains("conflicted field(s)"), "{out}");
}

#[test]
fn text_merges_concurrent_edits_character_by_character() {
    let out = run("text");
    assert!(
        out.contains("merged: \"milk, eggs bread, butter\""),
        "{out}"
    );
    assert!(out.contains("body length: 24 characters"), "{out}");
}

#[test]
fn the_supabase_example_is_built() {
    let path = example("todo_supabase");
    // Without a connection it says what to set, and fails.
    let out = Command::new(path)
        .env_remove("SUPABASE_URL")
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("supamerge-no-profile"),
        )
        .output()
        .expect("run todo_supabase");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SUPABASE_URL"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todo_supabase_syncs_through_the_gateway_and_postgresql() {
    let fx = pg::SupabaseFixture::start().await;
    let user = uuid::Uuid::new_v4();
    let child = tokio::process::Command::new(example("todo_supabase"))
        .env("SUPABASE_URL", fx.url())
        .env("SUPABASE_ANON_KEY", pg::ANON_KEY)
        .env("SUPABASE_ACCESS_TOKEN", pg::user_jwt(user))
        .env("RUST_LOG", "off")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("todo_supabase hung")
        .expect("run todo_supabase");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "todo_supabase failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("created workspace "), "{stdout}");
    assert!(
        stdout.contains("phone sees: Todo { title: \"water the plants\", done: false }"),
        "{stdout}"
    );
    assert!(
        stdout.contains("both replicas agree: Todo { title: \"water the plants\", done: true }"),
        "{stdout}"
    );
    // The server holds the workspace's changes (the create and the update).
    assert!(fx.db.change_count().await >= 2);
}
