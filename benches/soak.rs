//! The soak (issue 14, items 4 and 5): a writing replica commits a fixed
//! number of edits at a fixed rate over 101 entities; its sync engine pushes
//! them to a hub (a real `LocalHub` on sled), and a second replica's engine
//! pulls them.
//!
//! **Each role is its own process** (this binary started again with
//! `--role writer|puller|hub`), so each resident set is that role's alone:
//! the hub serves `LocalHub` to the two replicas over a local TCP socket
//! (length-prefixed JSON of the wire types, [`HubClient`] below). The
//! parent samples every child's RSS (`/proc/<pid>/status`) and every
//! directory's size every few seconds; the children report their edits and
//! document-cache figures. With `--compare-v1` a second hub process stores
//! the same pushes in the hub's previous record format (format 1), so the
//! hub's bytes per change are measured before and after in the same run.
//! At the end, each directory's size against the total `save()` size of the
//! documents (the same documents everywhere).
//!
//! Children run with `MALLOC_ARENA_MAX=2` (glibc keeps freed memory in one
//! arena per thread otherwise: ~20 MiB across sled's and tokio's threads;
//! `--arenas default` leaves glibc's default).
//!
//! `cargo bench --bench soak -- --bench [--edits N] [--rate R] [--every S]
//! [--budget MIB] [--store-cache MIB] [--tail S] [--compare-v1] [--arenas default]`
//! (default 36,000 edits at 200 edits/s; a sample every 10 s; `--budget`
//! sets both replicas' document-cache budget; `--store-cache` the sled page
//! cache of the replicas and the hub; `--tail` keeps sampling that
//! long after the last edit). Under `cargo test --all-targets` (no
//! `--bench`) it runs a small smoke round.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use supamerge::{
    AsyncReplica, Collection, DocId, LocalHub, PullPage, PullRequest, PushRequest, PushResponse,
    Remote, RemoteError, Replica, SnapshotOutcome, SnapshotPage, SnapshotQuery, SnapshotUpload,
    SyncEngine, WorkspaceId,
};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(args: &[String], name: &str) -> Option<f64> {
    arg(args, name).and_then(|v| v.parse().ok())
}

/// The resident set of process `pid`, in MiB (Linux; NaN elsewhere).
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The heap in use in this process (glibc's `mallinfo2`): bytes handed out
/// from the arenas, and bytes of blocks `malloc` mapped on their own (large
/// ones: sled's page table is a few of them, zeroed and mostly never
/// touched, so not resident); `None` elsewhere. Beside the RSS, the arena
/// figure tells live memory from memory the allocator keeps.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_bytes() -> Option<(u64, u64)> {
    #[repr(C)]
    struct Mallinfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    extern "C" {
        fn mallinfo2() -> Mallinfo2;
    }
    // SAFETY: glibc's `mallinfo2` (2.33 and later) takes nothing and returns
    // this plain struct by value.
    let m = unsafe { mallinfo2() };
    Some((m.uordblks as u64, m.hblkhd as u64))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_bytes() -> Option<(u64, u64)> {
    None
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&p),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The 1, 5 and 15 minute load averages (Linux), to print beside figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

// ---------------------------------------------------------------------------
// The hub over a socket: one request, one answer, each a length-prefixed
// JSON frame.

#[derive(Serialize, Deserialize)]
enum HubCall {
    Push(PushRequest),
    Pull(PullRequest),
    PutSnapshot(SnapshotUpload),
    GetSnapshots(SnapshotQuery),
}

#[derive(Serialize, Deserialize)]
enum HubAnswer {
    Push(PushResponse),
    Pull(PullPage),
    PutSnapshot(SnapshotOutcome),
    GetSnapshots(SnapshotPage),
    /// The hub's error, by kind where the engine acts on it.
    TooLarge(String),
    BadRequest(String, String),
    Failed(String),
}

async fn write_frame(s: &mut TcpStream, v: &impl Serialize) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    s.write_all(&(body.len() as u32).to_be_bytes()).await?;
    s.write_all(&body).await
}

async fn read_frame<T: for<'de> Deserialize<'de>>(s: &mut TcpStream) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

async fn serve_hub(hub: LocalHub, listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            while let Ok(call) = read_frame::<HubCall>(&mut s).await {
                let answer = match call {
                    HubCall::Push(r) => hub.push(r).await.map(HubAnswer::Push),
                    HubCall::Pull(r) => hub.pull(r).await.map(HubAnswer::Pull),
                    HubCall::PutSnapshot(r) => {
                        hub.put_snapshot(r).await.map(HubAnswer::PutSnapshot)
                    }
                    HubCall::GetSnapshots(r) => {
                        hub.get_snapshots(r).await.map(HubAnswer::GetSnapshots)
                    }
                };
                let answer = answer.unwrap_or_else(|e| match e {
                    RemoteError::TooLarge { message } => HubAnswer::TooLarge(message),
                    RemoteError::BadRequest { code, message } => {
                        HubAnswer::BadRequest(code, message)
                    }
                    other => HubAnswer::Failed(other.to_string()),
                });
                if write_frame(&mut s, &answer).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// A `Remote` that forwards every call to the hub process.
struct HubClient {
    addr: String,
    conn: tokio::sync::Mutex<Option<TcpStream>>,
}

impl HubClient {
    fn new(addr: String) -> Self {
        Self {
            addr,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    async fn call(&self, call: HubCall) -> Result<HubAnswer, RemoteError> {
        let unavailable = |e: std::io::Error| RemoteError::Unavailable {
            reason: e.to_string(),
        };
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = Some(TcpStream::connect(&self.addr).await.map_err(unavailable)?);
        }
        let s = conn.as_mut().expect("connected");
        let answer = async {
            write_frame(s, &call).await?;
            read_frame::<HubAnswer>(s).await
        }
        .await;
        match answer {
            Ok(HubAnswer::TooLarge(message)) => Err(RemoteError::TooLarge { message }),
            Ok(HubAnswer::BadRequest(code, message)) => {
                Err(RemoteError::BadRequest { code, message })
            }
            Ok(HubAnswer::Failed(message)) => Err(RemoteError::Server { status: 0, message }),
            Ok(a) => Ok(a),
            Err(e) => {
                *conn = None;
                Err(unavailable(e))
            }
        }
    }
}

fn unexpected() -> RemoteError {
    RemoteError::Protocol {
        reason: "unexpected answer".into(),
    }
}

#[async_trait]
impl Remote for HubClient {
    async fn push(&self, req: PushRequest) -> Result<PushResponse, RemoteError> {
        match self.call(HubCall::Push(req)).await? {
            HubAnswer::Push(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }
    async fn pull(&self, req: PullRequest) -> Result<PullPage, RemoteError> {
        match self.call(HubCall::Pull(req)).await? {
            HubAnswer::Pull(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }
    async fn put_snapshot(&self, snap: SnapshotUpload) -> Result<SnapshotOutcome, RemoteError> {
        match self.call(HubCall::PutSnapshot(snap)).await? {
            HubAnswer::PutSnapshot(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }
    async fn get_snapshots(&self, query: SnapshotQuery) -> Result<SnapshotPage, RemoteError> {
        match self.call(HubCall::GetSnapshots(query)).await? {
            HubAnswer::GetSnapshots(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }
}

/// The writer's remote with `--compare-v1`: every push and snapshot goes to
/// the hub, then the same to the format-1 hub (whose answers are only
/// checked to be answers).
struct Tee {
    primary: HubClient,
    shadow: HubClient,
}

#[async_trait]
impl Remote for Tee {
    async fn push(&self, req: PushRequest) -> Result<PushResponse, RemoteError> {
        let r = self.primary.push(req.clone()).await?;
        self.shadow.push(req).await?;
        Ok(r)
    }
    async fn pull(&self, req: PullRequest) -> Result<PullPage, RemoteError> {
        self.primary.pull(req).await
    }
    async fn put_snapshot(&self, snap: SnapshotUpload) -> Result<SnapshotOutcome, RemoteError> {
        let r = self.primary.put_snapshot(snap.clone()).await?;
        self.shadow.put_snapshot(snap).await?;
        Ok(r)
    }
    async fn get_snapshots(&self, query: SnapshotQuery) -> Result<SnapshotPage, RemoteError> {
        self.primary.get_snapshots(query).await
    }
}

// ---------------------------------------------------------------------------
// The roles (children).

fn open(path: &Path, budget: Option<usize>, store_cache: Option<f64>) -> Replica {
    let mut b = Replica::builder(path);
    if let Some(bytes) = budget {
        b = b.with_cache_bytes(bytes);
    }
    if let Some(mib) = store_cache {
        b = b.with_store_cache_bytes((mib * 1048576.0) as u64);
    }
    b.open().expect("open replica")
}

/// Lines from the parent, on a thread.
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn role_hub(args: &[String]) {
    let dir = PathBuf::from(arg(args, "--dir").expect("--dir"));
    let hub = if arg(args, "--format").as_deref() == Some("1") {
        supamerge::test_util::open_hub_v1(&dir).expect("open format-1 hub")
    } else {
        match num(args, "--store-cache") {
            Some(mib) => LocalHub::open_with_store_cache(&dir, (mib * 1048576.0) as u64),
            None => LocalHub::open(&dir),
        }
        .expect("open hub")
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    say(&format!(
        "listening {}",
        listener.local_addr().expect("address")
    ));
    let server = tokio::spawn(serve_hub(hub.clone(), listener));
    let mut lines = stdin_lines();
    while let Some(l) = lines.recv().await {
        if l == "exit" {
            break;
        }
    }
    server.abort();
    hub.flush().expect("flush hub");
}

async fn role_writer(args: &[String]) {
    let dir = PathBuf::from(arg(args, "--dir").expect("--dir"));
    let ws: WorkspaceId = arg(args, "--ws").expect("--ws").parse().expect("ws");
    let edits = num(args, "--edits").expect("--edits") as u64;
    let rate = num(args, "--rate").expect("--rate");
    let every = num(args, "--every").expect("--every");
    let budget = num(args, "--budget").map(|b| b as usize);
    let hub = HubClient::new(arg(args, "--hub").expect("--hub"));
    let remote: Arc<dyn Remote> = match arg(args, "--shadow") {
        Some(shadow) => Arc::new(Tee {
            primary: hub,
            shadow: HubClient::new(shadow),
        }),
        None => Arc::new(hub),
    };
    let writer = AsyncReplica::from(open(&dir, budget, num(args, "--store-cache")));
    let sync = SyncEngine::builder(writer.replica().clone(), remote).spawn();
    let notes = Collection::new("notes").expect("collection");
    let mut ids: Vec<DocId> = Vec::new();
    for k in 0..101 {
        let id = writer
            .create_json(ws, &notes, json!({"k": k, "n": 0, "text": "x"}))
            .await
            .expect("create");
        ids.push(id);
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_stat = Instant::now();
    let stat = |n: u64| {
        say(&format!(
            "stat {n} {} {}",
            writer.replica().cached_docs(),
            writer.replica().cached_bytes()
        ))
    };
    for n in 0..edits {
        tick.tick().await;
        let id = ids[(n as usize) % ids.len()];
        // A counter-like field and a short line of text, as a todo or
        // note app would write.
        writer
            .patch_json(id, json!({ "n": n, "text": format!("edit {n}") }))
            .await
            .expect("edit");
        if Instant::now() >= next_stat {
            stat(n);
            next_stat += Duration::from_secs_f64(every);
        }
    }
    sync.sync_now().await.expect("last push");
    stat(edits);
    // Every document's heads, for the puller (the saved sizes are taken by
    // the parent once this process is gone, so that measuring does not
    // show in this process's memory).
    let mut heads_file = String::new();
    for id in &ids {
        let id = *id;
        let heads = writer.run(move |r| r.heads(&id)).await.expect("heads");
        let heads: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
        heads_file.push_str(&format!("{id} {}\n", heads.join(",")));
    }
    std::fs::write(dir.with_extension("heads"), heads_file).expect("write heads");
    sync.shutdown().await;
    writer.flush().await.expect("flush");
    say("done");
    let mut lines = stdin_lines();
    while let Some(l) = lines.recv().await {
        if l == "exit" {
            break;
        }
    }
}

async fn role_puller(args: &[String]) {
    let dir = PathBuf::from(arg(args, "--dir").expect("--dir"));
    let ws: WorkspaceId = arg(args, "--ws").expect("--ws").parse().expect("ws");
    let every = num(args, "--every").expect("--every");
    let budget = num(args, "--budget").map(|b| b as usize);
    let remote: Arc<dyn Remote> = Arc::new(HubClient::new(arg(args, "--hub").expect("--hub")));
    let puller = open(&dir, budget, num(args, "--store-cache"));
    // Polls every second (the hub process has no live channel to offer).
    let sync = SyncEngine::builder(puller.clone(), remote)
        .with_interval(Some(Duration::from_secs(1)))
        .spawn();
    sync.join(ws).await.expect("join");
    let mut lines = stdin_lines();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(every));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                say(&format!("stat 0 {} {}", puller.cached_docs(), puller.cached_bytes()));
            }
            line = lines.recv() => {
                let Some(line) = line else { break };
                if let Some(heads_path) = line.strip_prefix("finish ") {
                    let want = std::fs::read_to_string(heads_path).expect("heads file");
                    let want: Vec<(DocId, String)> = want
                        .lines()
                        .filter_map(|l| l.split_once(' '))
                        .map(|(id, h)| (id.parse().expect("doc id"), h.to_string()))
                        .collect();
                    loop {
                        sync.sync_now().await.expect("pull");
                        let differ = want
                            .iter()
                            .filter(|(id, h)| {
                                let have: Vec<String> = puller
                                    .heads(id)
                                    .map(|v| v.iter().map(|x| x.to_string()).collect())
                                    .unwrap_or_default();
                                have.join(",") != *h
                            })
                            .count();
                        if differ == 0 {
                            break;
                        }
                    }
                    say(&format!("stat 0 {} {}", puller.cached_docs(), puller.cached_bytes()));
                    say("caught-up");
                } else if line == "exit" {
                    break;
                }
            }
        }
    }
    sync.shutdown().await;
    puller.flush().expect("flush");
}

// ---------------------------------------------------------------------------
// The parent.

/// A child process and what it last reported.
struct Role {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    /// Lines other than `stat`, in order.
    events: Arc<Mutex<Vec<String>>>,
    /// The last `stat`: edits, cached documents, cache estimate (bytes).
    stat: Arc<Mutex<(u64, u64, u64)>>,
    /// The heap in use the child last reported (arenas, mapped blocks; bytes;
    /// see [`heap_bytes`]).
    heap: Arc<Mutex<Option<(u64, u64)>>>,
}

impl Role {
    fn spawn(name: &'static str, args: &[String], arenas: bool) -> Role {
        let mut cmd = Command::new(std::env::current_exe().expect("own path"));
        cmd.args(["--role", name]).args(args);
        if arenas {
            cmd.env("MALLOC_ARENA_MAX", "2");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn role");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stat = Arc::new(Mutex::new((0, 0, 0)));
        let heap = Arc::new(Mutex::new(None));
        let (e, s, h) = (events.clone(), stat.clone(), heap.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("heap ") {
                    let v: Vec<u64> = rest.split(' ').filter_map(|x| x.parse().ok()).collect();
                    if v.len() == 2 {
                        *h.lock().expect("heap") = Some((v[0], v[1]));
                    }
                } else if let Some(rest) = line.strip_prefix("stat ") {
                    let v: Vec<u64> = rest.split(' ').filter_map(|x| x.parse().ok()).collect();
                    if v.len() == 3 {
                        *s.lock().expect("stat") = (v[0], v[1], v[2]);
                    }
                } else {
                    e.lock().expect("events").push(line);
                }
            }
        });
        Role {
            name,
            child,
            stdin,
            events,
            stat,
            heap,
        }
    }

    /// The heap in use the child last reported, in MiB: `arena+mapped`.
    fn heap_mib(&self) -> String {
        match *self.heap.lock().expect("heap") {
            Some((a, m)) => format!("{:.1}+{:.0}", mib(a), mib(m)),
            None => "-".into(),
        }
    }

    /// Waits for a line starting with `prefix`; returns the rest.
    fn wait_for(&mut self, prefix: &str) -> String {
        loop {
            if let Some(rest) = self
                .events
                .lock()
                .expect("events")
                .iter()
                .find_map(|l| l.strip_prefix(prefix))
            {
                return rest.trim().to_string();
            }
            self.check_running();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics if the child has exited.
    fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the {} process exited early ({status})", self.name);
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to child");
        self.stdin.flush().expect("flush to child");
    }

    fn finish(mut self) {
        self.send("exit");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{} failed: {status}", self.name);
    }
}

fn parent(args: &[String]) {
    let bench = args.iter().any(|a| a == "--bench");
    let edits = num(args, "--edits").unwrap_or(if bench { 36_000.0 } else { 600.0 }) as u64;
    let rate = num(args, "--rate").unwrap_or(if bench { 200.0 } else { 2_000.0 });
    let every = num(args, "--every").unwrap_or(if bench { 10.0 } else { 0.2 });
    let tail = num(args, "--tail").unwrap_or(0.0);
    let budget = num(args, "--budget").map(|m| (m * 1024.0 * 1024.0) as usize);
    let store_cache = num(args, "--store-cache");
    let compare_v1 = args.iter().any(|a| a == "--compare-v1") || !bench;
    let arenas = arg(args, "--arenas").as_deref() != Some("default");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |n: &str| dir.path().join(n);
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let ws = WorkspaceId::new();

    let mut hub_args = vec!["--dir".to_string(), s(path("hub"))];
    if let Some(m) = store_cache {
        hub_args.extend(["--store-cache".into(), m.to_string()]);
    }
    let mut hub = Role::spawn("hub", &hub_args, arenas);
    let hub_addr = hub.wait_for("listening ");
    let hub_v1 = compare_v1.then(|| {
        let mut r = Role::spawn(
            "hub",
            &[
                "--dir".into(),
                s(path("hub-v1")),
                "--format".into(),
                "1".into(),
            ],
            arenas,
        );
        let addr = r.wait_for("listening ");
        (r, addr)
    });
    let mut common = vec![
        "--ws".to_string(),
        ws.to_string(),
        "--every".into(),
        every.to_string(),
        "--hub".into(),
        hub_addr.clone(),
    ];
    if let Some(b) = budget {
        common.extend(["--budget".into(), b.to_string()]);
    }
    if let Some(m) = store_cache {
        common.extend(["--store-cache".into(), m.to_string()]);
    }
    let mut puller_args = common.clone();
    puller_args.extend(["--dir".into(), s(path("puller"))]);
    let mut puller = Role::spawn("puller", &puller_args, arenas);
    let mut writer_args = common.clone();
    writer_args.extend([
        "--dir".into(),
        s(path("writer")),
        "--edits".into(),
        edits.to_string(),
        "--rate".into(),
        rate.to_string(),
    ]);
    if let Some((_, addr)) = &hub_v1 {
        writer_args.extend(["--shadow".into(), addr.clone()]);
    }
    let mut writer = Role::spawn("writer", &writer_args, arenas);

    println!("load average at start: {}", load_average());
    println!(
        "soak: {edits} edits at {rate}/s over 101 entities; cache budget {}; sled page cache {}; one process per role{}; MALLOC_ARENA_MAX {}",
        budget.map_or("default".to_string(), |b| format!("{:.0} MiB", mib(b as u64))),
        store_cache.map_or("default".to_string(), |m| format!("{m} MiB (format-1 hub: default)")),
        if compare_v1 { " (+ a format-1 hub)" } else { "" },
        if arenas { "2" } else { "unset" },
    );
    println!(
        "{:>6} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>10} {:>10} {:>10} | {:>8} {:>8} {:>8} {:>8} | {:>7} {:>7} {:>9} {:>9}",
        "t (s)",
        "edits",
        "w RSS",
        "p RSS",
        "hub RSS",
        "hub1 RSS",
        "w heap",
        "p heap",
        "h heap",
        "w dir",
        "p dir",
        "hub dir",
        "hub1 dir",
        "w docs",
        "p docs",
        "w est",
        "p est"
    );
    let started = Instant::now();
    let sample = |writer: &Role, puller: &Role, hub: &Role, hub_v1: Option<&Role>| {
        let (n, wd, we) = *writer.stat.lock().expect("stat");
        let (_, pd, pe) = *puller.stat.lock().expect("stat");
        let (h1_rss, h1_dir) = match hub_v1 {
            Some(r) => (rss_mib(r.child.id()), mib(dir_bytes(&path("hub-v1")))),
            None => (f64::NAN, f64::NAN),
        };
        println!(
            "{:>6.0} {:>8} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>10} {:>10} {:>10} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>7} {:>7} {:>9.1} {:>9.1}",
            started.elapsed().as_secs_f64(),
            n,
            rss_mib(writer.child.id()),
            rss_mib(puller.child.id()),
            rss_mib(hub.child.id()),
            h1_rss,
            writer.heap_mib(),
            puller.heap_mib(),
            hub.heap_mib(),
            mib(dir_bytes(&path("writer"))),
            mib(dir_bytes(&path("puller"))),
            mib(dir_bytes(&path("hub"))),
            h1_dir,
            wd,
            pd,
            mib(we),
            mib(pe),
        );
    };
    let mut next = Instant::now();
    loop {
        if writer
            .events
            .lock()
            .expect("events")
            .iter()
            .any(|l| l == "done")
        {
            break;
        }
        writer.check_running();
        if Instant::now() >= next {
            sample(&writer, &puller, &hub, hub_v1.as_ref().map(|(r, _)| r));
            next += Duration::from_secs_f64(every);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    puller.send(&format!(
        "finish {}",
        s(path("writer").with_extension("heads"))
    ));
    puller.wait_for("caught-up");
    sample(&writer, &puller, &hub, hub_v1.as_ref().map(|(r, _)| r));
    let tail_end = Instant::now() + Duration::from_secs_f64(tail);
    while Instant::now() < tail_end {
        if Instant::now() >= next {
            sample(&writer, &puller, &hub, hub_v1.as_ref().map(|(r, _)| r));
            next += Duration::from_secs_f64(every);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let peak = |r: &Role| {
        std::fs::read_to_string(format!("/proc/{}/status", r.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    println!(
        "peak RSS MiB: writer {:.1}, puller {:.1}, hub {:.1}{}",
        peak(&writer),
        peak(&puller),
        peak(&hub),
        hub_v1.as_ref().map_or(String::new(), |(r, _)| format!(
            ", format-1 hub {:.1}",
            peak(r)
        ))
    );
    println!("load average at the end: {}", load_average());
    writer.finish();
    puller.finish();
    hub.finish();
    if let Some((r, _)) = hub_v1 {
        r.finish();
    }
    let changes = (edits + 101) as f64;
    let (w, p, h) = (
        dir_bytes(&path("writer")),
        dir_bytes(&path("puller")),
        dir_bytes(&path("hub")),
    );
    // The documents' `save()` size, from the writer's directory.
    let saved: u64 = {
        let r = Replica::open(path("writer")).expect("reopen the writer");
        let docs = r.documents(&ws).expect("documents");
        let total = docs
            .iter()
            .map(|id| r.save(id).expect("save").0.len() as u64)
            .sum();
        drop(r);
        // sled lets go of its lock a moment after the drop.
        std::thread::sleep(Duration::from_millis(500));
        total
    };
    let mut line = format!(
        "saved {:.2} MiB; disk / saved: writer {:.1}x, puller {:.1}x, hub {:.1}x; hub bytes per change {:.0}",
        mib(saved),
        w as f64 / saved as f64,
        p as f64 / saved as f64,
        h as f64 / saved as f64,
        h as f64 / changes,
    );
    if compare_v1 {
        let h1 = dir_bytes(&path("hub-v1"));
        line.push_str(&format!(
            " (format 1: {:.1}x, {:.0} bytes per change)",
            h1 as f64 / saved as f64,
            h1 as f64 / changes
        ));
    }
    println!("{line}");
    print_breakdown("writer", &path("writer"));
    print_breakdown("puller", &path("puller"));
    print_breakdown("hub", &path("hub"));
    if compare_v1 {
        print_breakdown("format-1 hub", &path("hub-v1"));
    }
}

/// Where a closed replica's bytes are: sled's files, and the live bytes
/// (keys and values) of each tree.
fn print_breakdown(name: &str, dir: &Path) {
    let files: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let bytes = if e.path().is_dir() {
                        dir_bytes(&e.path())
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    };
                    format!("{} {:.2}", e.file_name().to_string_lossy(), mib(bytes))
                })
                .collect()
        })
        .unwrap_or_default();
    let trees = supamerge::test_util::tree_bytes(dir).unwrap_or_default();
    let live: u64 = trees.iter().map(|(_, _, b)| *b).sum();
    let trees: Vec<String> = trees
        .iter()
        .filter(|(_, n, _)| *n > 0)
        .map(|(t, n, b)| format!("{t} {n} keys {:.2}", mib(*b)))
        .collect();
    println!(
        "{name}: files (MiB) [{}]; live keys+values {:.2} MiB [{}]",
        files.join(", "),
        mib(live),
        trees.join(", ")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let role = arg(&args, "--role");
    let Some(role) = role else {
        parent(&args);
        return;
    };
    // SOAK_LOG=<filter> writes each child's tracing to <dir>.log (for
    // finding what a memory step coincides with).
    if let (Ok(filter), Some(dir)) = (std::env::var("SOAK_LOG"), arg(&args, "--dir")) {
        if let Ok(file) = std::fs::File::create(format!("{dir}.log")) {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .init();
        }
    }
    // Every child reports its heap in use once a second (the parent prints
    // it beside the RSS).
    std::thread::spawn(|| loop {
        if let Some((arena, mapped)) = heap_bytes() {
            say(&format!("heap {arena} {mapped}"));
        }
        std::thread::sleep(Duration::from_secs(1));
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match role.as_str() {
        "hub" => rt.block_on(role_hub(&args)),
        "writer" => rt.block_on(role_writer(&args)),
        "puller" => rt.block_on(role_puller(&args)),
        other => panic!("unknown role {other}"),
    }
}
