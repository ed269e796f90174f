//! Two users, only the `supamerge` binary, the real gateway process and
//! PostgreSQL: each logs in once (a refresh token from `dev-token
//! --refresh`, rotated and stored in a private profile), one creates a
//! workspace and invites, the other joins, both edit and converge, then the
//! owner removes the other, whose next sync is refused with "no longer a
//! member" and loses nothing. Tokens never appear in any output. Needs
//! `SUPAMERGE_TEST_DATABASE_URL` (run `scripts/test.sh`).
#![cfg(feature = "gateway")]

#[path = "support/gateway_process.rs"]
mod gateway_process;
#[path = "support/pg.rs"]
mod pg;

use std::path::{Path, PathBuf};
use std::process::Output;

use gateway_process::{bin, GatewayProcess};
use pg::{user_jwt, TestDb, ANON_KEY, JWT_SECRET};
use serde_json::Value;
use uuid::Uuid;

/// One person: a config directory (the profile) and a replica directory.
struct User {
    id: Uuid,
    config: PathBuf,
    data: PathBuf,
}

/// Everything any command printed, to check no token ever shows.
#[derive(Default)]
struct Printed(String);

impl User {
    fn new(root: &Path, name: &str) -> Self {
        Self {
            id: Uuid::new_v4(),
            config: root.join(format!("{name}-config")),
            data: root.join(format!("{name}-data")),
        }
    }

    fn run(&self, printed: &mut Printed, args: &[&str]) -> Output {
        let out = bin()
            .env("XDG_CONFIG_HOME", &self.config)
            .env("HOME", &self.config)
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("run supamerge");
        printed.0.push_str(&String::from_utf8_lossy(&out.stdout));
        printed.0.push_str(&String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Runs with `--json`; must succeed.
    fn ok(&self, printed: &mut Printed, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(printed, &all);
        assert!(
            out.status.success(),
            "{args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("--json prints JSON")
    }

    fn profile_path(&self) -> PathBuf {
        self.config.join("supamerge").join("profile.json")
    }

    fn profile(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.profile_path()).expect("profile"))
            .expect("profile JSON")
    }

    fn login(&self, printed: &mut Printed, gw: &GatewayProcess) -> String {
        let minted = self.ok(
            printed,
            &[
                "dev-token",
                "--jwt-secret",
                JWT_SECRET,
                "--refresh",
                "--user",
                &self.id.to_string(),
            ],
        );
        let first = minted["refresh_token"]
            .as_str()
            .expect("a refresh token")
            .to_string();
        // (dev-token prints tokens: that is its job. Forget its output.)
        printed.0.clear();
        let login = self.ok(
            printed,
            &[
                "login",
                "--supabase-url",
                &gw.url,
                "--anon-key",
                ANON_KEY,
                "--refresh-token",
                &first,
            ],
        );
        assert_eq!(login["user"], self.id.to_string(), "{login}");
        assert_eq!(login["refreshes"], true, "{login}");
        first
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_share_a_workspace_from_the_command_line() {
    let db = TestDb::new().await;
    let gw = GatewayProcess::start(&db);
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut printed = Printed::default();
    let mut tokens: Vec<String> = Vec::new();
    let alice = User::new(tmp.path(), "alice");
    let bob = User::new(tmp.path(), "bob");

    // Log in once: the refresh token is exchanged (and rotated) at once.
    let first = alice.login(&mut printed, &gw);
    tokens.push(first.clone());
    let p = alice.profile();
    let rotated = p["refresh_token"].as_str().expect("stored").to_string();
    assert!(
        rotated != first,
        "the stored refresh token is the rotated one"
    );
    tokens.push(rotated.clone());
    #[cfg(unix)]
    {
        assert_eq!(mode(&alice.profile_path()), 0o600);
        assert_eq!(mode(alice.profile_path().parent().expect("dir")), 0o700);
    }
    // A spent refresh token is refused (rotation).
    let reuse = alice.run(
        &mut printed,
        &[
            "login",
            "--supabase-url",
            &gw.url,
            "--anon-key",
            ANON_KEY,
            "--refresh-token",
            &first,
        ],
    );
    assert_eq!(reuse.status.code(), Some(1), "{}", stderr(&reuse));
    assert!(
        stderr(&reuse).contains("Already Used"),
        "{}",
        stderr(&reuse)
    );
    assert_eq!(
        alice.profile()["refresh_token"],
        rotated.as_str(),
        "a failed login keeps the profile"
    );
    tokens.push(bob.login(&mut printed, &gw));

    // Alice creates a workspace and an entity, syncs, invites.
    let ws = alice.ok(&mut printed, &["workspace", "create", "Team"])["workspace_id"]
        .as_str()
        .expect("id")
        .to_string();
    let listed = alice.ok(&mut printed, &["workspace", "list"]);
    assert_eq!(listed[0]["role"], "owner", "{listed}");
    assert_eq!(listed[0]["name"], "Team", "{listed}");
    let note = alice.ok(
        &mut printed,
        &["create", &ws, "notes", r#"{"title":"plan","by":"alice"}"#],
    )["id"]
        .as_str()
        .expect("id")
        .to_string();
    alice.ok(&mut printed, &["sync"]);
    let invite = alice.run(
        &mut printed,
        &[
            "workspace",
            "invite",
            &ws,
            "--role",
            "writer",
            "--expires",
            "1d",
        ],
    );
    assert!(invite.status.success(), "{}", stderr(&invite));
    let code = String::from_utf8_lossy(&invite.stdout).trim().to_string();
    assert!(code.starts_with("smi_"), "{code}");
    // The demo needs no flags either (and --local keeps it on the hub).
    let demo = alice.ok(&mut printed, &["demo", "--burst", "20"]);
    assert_eq!(demo["converged"], true, "{demo}");
    assert!(
        demo["backend"]
            .as_str()
            .is_some_and(|b| b.contains(&gw.url)),
        "{demo}"
    );
    let local = alice.ok(&mut printed, &["demo", "--local", "--burst", "20"]);
    assert!(
        !local["backend"]
            .as_str()
            .unwrap_or_default()
            .contains(&gw.url),
        "{local}"
    );
    let invites = alice.ok(&mut printed, &["workspace", "invites", &ws]);
    assert_eq!(invites[0]["state"], "active", "{invites}");
    assert!(
        !invites.to_string().contains(&code),
        "listing never shows codes"
    );

    // Bob joins, pulls, edits; both converge.
    let joined = bob.ok(&mut printed, &["workspace", "join", &code]);
    assert_eq!(
        (joined["workspace_id"].as_str(), joined["role"].as_str()),
        (Some(ws.as_str()), Some("writer"))
    );
    let pulled = bob.ok(&mut printed, &["sync", "--workspace", &ws]);
    assert_eq!(pulled["pulled"], 1, "{pulled}");
    assert_eq!(
        bob.ok(&mut printed, &["get", &note])["data"]["title"],
        "plan"
    );
    bob.ok(&mut printed, &["edit", &note, r#"{"done":true}"#]);
    bob.ok(
        &mut printed,
        &["create", &ws, "notes", r#"{"title":"bob's idea"}"#],
    );
    bob.ok(&mut printed, &["sync"]);
    alice.ok(&mut printed, &["edit", &note, r#"{"title":"plan v2"}"#]);
    alice.ok(&mut printed, &["sync"]);
    bob.ok(&mut printed, &["sync"]);
    let (la, lb) = (
        alice.ok(&mut printed, &["list", "notes"]),
        bob.ok(&mut printed, &["list", "notes"]),
    );
    assert_eq!(la, lb, "converged");
    assert_eq!(la.as_array().map(Vec::len), Some(2), "{la}");
    assert_eq!(
        alice.ok(&mut printed, &["get", &note])["data"],
        serde_json::json!({"title": "plan v2", "by": "alice", "done": true})
    );
    let members = alice.ok(&mut printed, &["workspace", "members", &ws]);
    assert_eq!(members.as_array().map(Vec::len), Some(2), "{members}");

    // The access token runs out: the next command refreshes it and stores
    // the rotated refresh token.
    let before = alice.profile();
    let mut expired = before.clone();
    expired["expires_at"] = serde_json::json!(1);
    std::fs::write(alice.profile_path(), expired.to_string()).expect("edit profile");
    alice.ok(&mut printed, &["workspace", "list"]);
    let after = alice.profile();
    assert!(
        after["refresh_token"] != before["refresh_token"],
        "the refresh token rotated"
    );
    assert!(
        after["expires_at"].as_u64().unwrap_or(0) > 1,
        "a fresh access token with its expiry was stored"
    );
    // The server says "JWT expired" although the profile thought the token
    // fresh (a clock off, a revoked session): one refresh, one retry.
    let mut stale = alice.profile();
    stale["access_token"] = serde_json::json!(pg::expired_user_jwt(alice.id, 120));
    stale["expires_at"] = serde_json::json!(4_102_444_800u64);
    std::fs::write(alice.profile_path(), stale.to_string()).expect("edit profile");
    alice.ok(&mut printed, &["workspace", "list"]);
    let retried = alice.profile();
    assert!(
        retried["refresh_token"] != after["refresh_token"],
        "refreshed on the 401"
    );
    tokens.extend(
        [&before, &after, &retried, &bob.profile()]
            .iter()
            .flat_map(|p| [p["refresh_token"].as_str(), p["access_token"].as_str()])
            .flatten()
            .map(String::from),
    );

    // Flags and environment variables override the profile; the profile's
    // token goes to its own URL only.
    let stranger = bin()
        .env("XDG_CONFIG_HOME", &alice.config)
        .env("SUPABASE_ACCESS_TOKEN", user_jwt(Uuid::new_v4()))
        .args(["--json", "workspace", "list"])
        .output()
        .expect("run");
    assert!(stranger.status.success(), "{}", stderr(&stranger));
    assert_eq!(String::from_utf8_lossy(&stranger.stdout).trim(), "[]");
    let elsewhere = gw.url.replace("127.0.0.1", "localhost");
    let no_key = alice.run(
        &mut printed,
        &["workspace", "list", "--supabase-url", &elsewhere],
    );
    assert_eq!(no_key.status.code(), Some(2), "{}", stderr(&no_key));
    assert!(stderr(&no_key).contains("anon key"), "{}", stderr(&no_key));
    let other_url = alice.run(
        &mut printed,
        &[
            "workspace",
            "list",
            "--supabase-url",
            &elsewhere,
            "--anon-key",
            ANON_KEY,
        ],
    );
    assert_eq!(other_url.status.code(), Some(1), "{}", stderr(&other_url));
    assert!(
        stderr(&other_url).contains("not authenticated"),
        "{}",
        stderr(&other_url)
    );

    // Revoking, by code and by id: the code then says what any bad code says.
    let second = alice.ok(
        &mut printed,
        &["workspace", "invite", &ws, "--role", "reader"],
    );
    let code2 = second["code"].as_str().expect("code").to_string();
    alice.ok(&mut printed, &["workspace", "revoke", &code2]);
    let refused = bob.run(&mut printed, &["--json", "workspace", "join", &code2]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let err: Value = serde_json::from_slice(&refused.stderr).expect("JSON error");
    assert_eq!(err["error"]["kind"], "invalid_invitation", "{err}");
    let third = alice.ok(&mut printed, &["workspace", "invite", &ws, "--uses", "3"]);
    let id3 = third["invite_id"].as_str().expect("id").to_string();
    alice.ok(&mut printed, &["workspace", "revoke", &id3]);
    let states: Vec<String> = alice
        .ok(&mut printed, &["workspace", "invites", &ws])
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["invite_id"].as_str().unwrap_or(""),
                i["state"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(states.contains(&format!("{id3}:revoked")), "{states:?}");
    assert_eq!(
        states.iter().filter(|s| s.ends_with(":used_up")).count(),
        1,
        "{states:?}"
    );

    // Alice removes Bob. Bob edits offline; his next sync is refused, with
    // nothing lost.
    alice.ok(
        &mut printed,
        &["workspace", "remove-member", &ws, &bob.id.to_string()],
    );
    bob.ok(
        &mut printed,
        &["edit", &note, r#"{"title":"bob was here"}"#],
    );
    let refused = bob.run(&mut printed, &["--json", "sync"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let err: Value = serde_json::from_slice(&refused.stderr).expect("JSON error");
    assert_eq!(err["error"]["kind"], "not_a_member", "{err}");
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("no longer a member of workspace {ws}")),
        "{msg}"
    );
    let status = bob.ok(&mut printed, &["status"]);
    let dead = status["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(dead.len(), 1, "{status}");
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no longer a member"),
        "{status}"
    );
    assert_eq!(
        bob.ok(&mut printed, &["get", &note])["data"]["title"],
        "bob was here"
    );
    alice.ok(&mut printed, &["sync"]);
    assert_eq!(
        alice.ok(&mut printed, &["get", &note])["data"]["title"],
        "plan v2"
    );
    let again = bob.run(&mut printed, &["sync"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("no longer a member"),
        "{}",
        stderr(&again)
    );
    assert!(bob
        .ok(&mut printed, &["workspace", "list"])
        .as_array()
        .is_some_and(Vec::is_empty));

    // Logging out forgets the connection.
    assert_eq!(bob.ok(&mut printed, &["logout"])["removed"], true);
    assert!(!bob.profile_path().exists());
    let none = bob.run(&mut printed, &["workspace", "list"]);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));

    // No token was ever printed.
    for t in &tokens {
        assert!(!printed.0.contains(t.as_str()), "a token was printed");
    }
}
