//! Smoke test of `supamerge bench --quick --json -` on the workloads that need
//! no PostgreSQL: the JSON has one object per workload with positive figures
//! and `ratio == engine / baseline`. No timing assertions.

use std::process::Command;

use serde_json::Value;

const LOCAL: &str = "merge_one_doc,merge_many_docs,editing_trace,live_trickle,\
local_commit_immediate,local_commit_buffered,cold_start,fresh_device_localhub,\
fresh_device_localhub_snapshots";

#[test]
fn quick_bench_reports_every_local_workload() {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let out = Command::new(env!("CARGO_BIN_EXE_supamerge"))
        .args([
            "bench",
            "--quick",
            "--json",
            "-",
            "--only",
            LOCAL,
            "--scratch",
        ])
        .arg(scratch.path())
        .env_remove("SUPAMERGE_BENCH_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run supamerge bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(doc["quick"], true);
    let workloads = doc["workloads"].as_array().expect("workloads array");
    let names: Vec<&str> = workloads
        .iter()
        .map(|w| w["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, LOCAL.split(',').collect::<Vec<_>>());
    for w in workloads {
        let name = w["name"].as_str().unwrap_or_default();
        match w["status"].as_str() {
            Some("ok") => {}
            // The trace lives outside the repository and may be absent.
            Some("skipped") if name == "editing_trace" => continue,
            other => panic!("{name}: status {other:?}: {w}"),
        }
        let engine = w["engine"].as_f64().expect("engine");
        let baseline = w["baseline"].as_f64().expect("baseline");
        let ratio = w["ratio"].as_f64().expect("ratio");
        assert!(engine > 0.0 && baseline > 0.0, "{name}: {w}");
        assert!(
            (ratio - engine / baseline).abs() <= 1e-9 * ratio.abs().max(1.0),
            "{name}: ratio {ratio} != {engine} / {baseline}"
        );
        let rss = w["peak_rss_mb"]
            .as_f64()
            .expect("peak RSS (child processes)");
        assert!(rss > 0.0, "{name}: {w}");
        assert!(w["unit"].as_str().is_some_and(|u| !u.is_empty()));
    }
}

#[test]
fn unknown_workload_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_supamerge"))
        .args(["bench", "--quick", "--only", "no_such_workload"])
        .output()
        .expect("run supamerge bench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown workload"));
}

/// `live_latency` through a gateway and PostgreSQL (needs
/// `SUPAMERGE_TEST_DATABASE_URL`, as `scripts/test.sh` sets; fails without
/// it): it runs, reports percentiles of the live path and of polling, and
/// says whether the target was met. No timing assertions.
#[test]
fn quick_live_latency_runs_through_the_gateway() {
    let db = std::env::var("SUPAMERGE_TEST_DATABASE_URL")
        .expect("SUPAMERGE_TEST_DATABASE_URL (run scripts/test.sh)");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let out = Command::new(env!("CARGO_BIN_EXE_supamerge"))
        .args(["bench", "--quick", "--json", "-", "--only", "live_latency"])
        .args(["--database-url", &db, "--scratch"])
        .arg(scratch.path())
        .output()
        .expect("run supamerge bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let w = &doc["workloads"][0];
    assert_eq!(w["name"], "live_latency", "{doc}");
    assert_eq!(w["status"], "ok", "{w}");
    assert_eq!(w["unit"], "ms");
    for k in [
        "engine_p50_ms",
        "engine_p95_ms",
        "engine_p99_ms",
        "baseline_p50_ms",
        "baseline_p95_ms",
    ] {
        assert!(w["extra"][k].as_f64().is_some_and(|v| v > 0.0), "{k}: {w}");
    }
    assert_eq!(w["engine"], w["extra"]["engine_p95_ms"]);
    assert!(w["target_met"].is_boolean(), "{w}");
}

/// `server_load` at smoke size against the PostgreSQL of the test suite:
/// every configuration (K = 1 and 3, one shared workspace and one each)
/// reports ordered percentiles and positive throughputs for the gateway and
/// for the plain-SQL ceiling, and the workload's own checks (every change
/// stored, every page full and in order, the counters at seed + pushed)
/// passed. No timing assertions.
#[test]
fn quick_server_load_runs_through_the_gateway() {
    let db = std::env::var("SUPAMERGE_TEST_DATABASE_URL")
        .expect("SUPAMERGE_TEST_DATABASE_URL (run scripts/test.sh)");
    let out = Command::new(env!("CARGO_BIN_EXE_supamerge"))
        .args(["bench", "--quick", "--json", "-", "--only", "server_load"])
        .args(["--database-url", &db])
        .output()
        .expect("run supamerge bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let w = &doc["workloads"][0];
    assert_eq!(w["name"], "server_load", "{doc}");
    assert_eq!(w["status"], "ok", "{w}");
    assert_eq!(w["unit"], "ms");
    let extra = w["extra"].as_object().expect("extra");
    let get = |k: &str| {
        extra
            .get(k)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{k} missing: {w}"))
    };
    for config in [
        "k001_shared_pool16",
        "k003_shared_pool16",
        "k003_separate_pool16",
    ] {
        for side in ["gw", "sql"] {
            let p = format!("{config}_{side}");
            for what in ["push", "pull"] {
                let (p50, p95, p99) = (
                    get(&format!("{p}_{what}_p50_ms")),
                    get(&format!("{p}_{what}_p95_ms")),
                    get(&format!("{p}_{what}_p99_ms")),
                );
                assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{p} {what}: {w}");
            }
            assert!(get(&format!("{p}_changes_per_s")) > 0.0, "{p}: {w}");
            assert!(get(&format!("{p}_pulled_per_s")) > get(&format!("{p}_pushed_per_s")));
        }
        // The gateway's calls ran inside the SQL functions (track_functions).
        assert!(
            get(&format!("{config}_fn_supamerge_push_calls")) > 0.0,
            "{w}"
        );
        assert!(
            get(&format!("{config}_fn_supamerge_pull_calls")) > 0.0,
            "{w}"
        );
    }
    assert!(!extra.keys().any(|k| k.starts_with("k001_separate")), "{w}");
    let engine = w["engine"].as_f64().expect("engine");
    assert_eq!(
        engine,
        get("k003_shared_pool16_gw_push_p95_ms")
            .max(get("k003_shared_pool16_gw_pull_p95_ms"))
            .max(get("k003_separate_pool16_gw_push_p95_ms"))
            .max(get("k003_separate_pool16_gw_pull_p95_ms"))
    );
    assert!(w["target_met"].is_boolean(), "{w}");
}

/// `--scales` at tiny factors: one point per (workload, factor) with the
/// size the factor gives, positive costs per change, and the curves drawn.
/// No timing assertions.
#[test]
fn scales_report_a_point_per_size() {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let svg = scratch.path().join("scaling.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_supamerge"))
        .args([
            "--json",
            "bench",
            "-",
            "--only",
            "merge_one_doc,merge_many_docs",
        ])
        .args(["--scales", "0.001,0.002", "--chart"])
        .arg(&svg)
        .arg("--scratch")
        .arg(scratch.path())
        .output()
        .expect("run supamerge bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let points = doc["points"].as_array().expect("points");
    let got: Vec<(&str, u64)> = points
        .iter()
        .map(|p| {
            (
                p["workload"].as_str().expect("workload"),
                p["changes"].as_u64().expect("changes"),
            )
        })
        .collect();
    // merge_one_doc: 100,000 × factor changes; merge_many_docs: 10,000 ×
    // factor documents of 10 changes.
    assert_eq!(
        got,
        [
            ("merge_one_doc", 100),
            ("merge_many_docs", 100),
            ("merge_one_doc", 200),
            ("merge_many_docs", 200)
        ]
    );
    for p in points {
        assert!(
            p["engine_us_per_change"].as_f64().is_some_and(|v| v > 0.0),
            "{p}"
        );
        assert!(
            p["baseline_us_per_change"]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "{p}"
        );
    }
    let svg = std::fs::read_to_string(&svg).expect("chart written");
    assert!(
        svg.starts_with("<svg") && svg.contains("merge_many_docs"),
        "{svg}"
    );
}
