//! `supamerge gateway` as a real child process on a free port, for tests
//! that need the gateway in its own process (its own memory, its own
//! open-file limit).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::pg::{TestDb, ANON_KEY, JWT_SECRET, SERVICE_KEY};

/// The binary, with the environment variables that would change what it
/// does removed.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_supamerge"));
    for v in [
        "SUPAMERGE_DATA",
        "SUPAMERGE_HUB",
        "SUPABASE_URL",
        "SUPABASE_ANON_KEY",
        "SUPABASE_ACCESS_TOKEN",
        "SUPAMERGE_JWT_AUD",
        "RUST_LOG",
    ] {
        c.env_remove(v);
    }
    // No `supamerge login` profile of whoever runs the tests: a config
    // directory that does not exist (a test that wants one sets its own).
    c.env("XDG_CONFIG_HOME", no_profile_dir());
    c.stdin(Stdio::null());
    c
}

/// A config directory that holds no profile.
pub fn no_profile_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("supamerge-tests-no-profile-here")
}

/// `supamerge gateway` on a free port; killed on drop.
pub struct GatewayProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: std::net::SocketAddr,
}

impl GatewayProcess {
    /// The gateway on `db` with the test keys.
    pub fn start(db: &TestDb) -> Self {
        Self::start_with(db, &[], None)
    }

    /// The gateway on `db` with extra arguments and, when given, a lower
    /// open-file limit (`ulimit -n`).
    pub fn start_with(db: &TestDb, extra: &[&str], open_files: Option<u32>) -> Self {
        let mut cmd = match open_files {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_supamerge"));
                for v in ["RUST_LOG", "SUPAMERGE_JWT_AUD"] {
                    c.env_remove(v);
                }
                c.stdin(Stdio::null());
                c
            }
            None => bin(),
        };
        let mut child = cmd
            .args(["gateway", "--listen", "127.0.0.1:0"])
            .args(["--database-url", &db.authenticator_url()])
            .args(["--jwt-secret", JWT_SECRET, "--anon-key", ANON_KEY])
            .args(["--service-key", SERVICE_KEY])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start supamerge gateway");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the gateway prints its address before anything else")
                .expect("read stderr");
            if let Some(rest) = line.split(" listening on ").nth(1) {
                break rest.trim().to_string();
            }
        };
        // Keep draining stderr so the gateway never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let addr = url
            .trim_start_matches("http://")
            .parse()
            .expect("a socket address");
        Self { child, url, addr }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:")
    }

    /// Resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS:")
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
