//! The directory a sled database lives in: who may open it, and the repairs
//! that make an interrupted open or snapshot harmless.
//!
//! sled 0.34.7 keeps four kinds of files in a directory (see
//! `docs/storage.md`, "Crash safety", for the failure modes they bring):
//! - `db`: the log segments (the data; sled recovers a torn tail itself);
//! - `conf`: storage parameters, written once by the first open — two
//!   `write` calls, no fsync, no rename;
//! - `snap.<lsn>` / `snap.<lsn>.generating`: a snapshot of the page table,
//!   written at every open whose log moved, to `.generating`, fsynced, then
//!   renamed; sled reads the newest name (a `.generating` one included);
//! - `blobs/<lsn>`: values too large for a log segment.
//!
//! [`open_sled`] takes a lock of its own (`supamerge.lock`, an OS file lock)
//! before anything is read, repairs what a kill can leave behind (a partial
//! `snap.*.generating`, a torn `conf`), refuses what it cannot repair without
//! guessing, and only then lets sled open the directory. The lock is held for
//! as long as the returned [`DirLock`] lives. A second open of the same
//! directory in this process fails at once with
//! [`StoreError::AlreadyOpen`]; another process gets [`StoreError::Locked`]
//! after [`LOCK_WAIT`] (1 s).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::StoreError;

/// The lock file supamerge creates in every directory it opens.
pub const LOCK_FILE: &str = "supamerge.lock";

/// sled's settings file.
pub const CONF_FILE: &str = "conf";

/// How long [`DirLock::acquire`] waits while another process holds
/// [`LOCK_FILE`] before it reports [`StoreError::Locked`]. Not zero: a process
/// that forks a child while closing a replica shares the lock with that child
/// until the child's `exec` (file descriptions are inherited), a moment.
pub const LOCK_WAIT: Duration = Duration::from_secs(1);

/// How long [`open_sled`] waits for sled's own lock on `db` while holding
/// [`LOCK_FILE`]: sled releases it from its (process-wide, shared) thread pool
/// a moment after the last handle of a previous open in this process was
/// dropped — longer on a loaded machine with many databases open.
pub const SLED_LOCK_WAIT: Duration = Duration::from_secs(10);

/// The `conf` file sled 0.34 writes for supamerge's settings (segment size
/// 512 KiB, no compression): the text, then its CRC-32 (little-endian).
const CONF_TEXT: &[u8] = b"segment_size: 524288\nuse_compression: false\nversion: 0.34\n";

/// The exact bytes of a complete `conf` file for supamerge's settings (segment
/// size 512 KiB, no compression, sled 0.34), as sled 0.34.7 writes it.
pub fn expected_conf() -> Vec<u8> {
    let mut out = CONF_TEXT.to_vec();
    out.extend_from_slice(&crc32fast::hash(CONF_TEXT).to_le_bytes());
    out
}

/// A repair the crash-safe open made before sled read the directory (see
/// `docs/storage.md`, "Crash safety").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// A snapshot file left by an interrupted snapshot write (shorter than
    /// its trailer, or failing its checksum) was removed. It held no data:
    /// sled derives snapshots from the log, and the snapshot it was derived
    /// from is still in place (sled removes older snapshots only after the
    /// new one is complete and renamed).
    RemovedPartialSnapshot {
        /// The removed file.
        file: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// `conf` held a prefix of the bytes sled writes for supamerge's settings
    /// (a kill during the first open), or was missing beside a log; it was
    /// written whole (atomically, fsynced). (A new directory gets its `conf`
    /// the same way, but that is no repair and is not reported.)
    WroteConf {
        /// The file.
        file: PathBuf,
        /// Its length before (0 when it was missing).
        found_len: u64,
    },
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovery::RemovedPartialSnapshot { file, len } => write!(
                f,
                "removed {} ({len} bytes), a snapshot whose writing was interrupted",
                file.display()
            ),
            Recovery::WroteConf { file, found_len } => write!(
                f,
                "wrote {} whole (found {found_len} bytes: the first open was interrupted)",
                file.display()
            ),
        }
    }
}

/// Canonical paths of the directories open in this process.
static OPEN_DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn open_dirs() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    // The set stays consistent whatever panicked while holding it.
    OPEN_DIRS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Exclusive use of a directory: the OS lock on [`LOCK_FILE`] (against other
/// processes) and an entry in this process's table of open directories
/// (against a second open here). Both are released on drop.
#[derive(Debug)]
pub struct DirLock {
    /// The canonical path (the key in the table).
    canonical: PathBuf,
    /// The locked file; closing it releases the OS lock.
    file: Option<File>,
}

impl DirLock {
    /// Locks `dir`, creating it when missing.
    ///
    /// # Errors
    /// [`StoreError::AlreadyOpen`] when this process has it open;
    /// [`StoreError::Locked`] when another process holds it;
    /// [`StoreError::Io`] when the directory or lock file cannot be created.
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::io("create the directory", dir))?;
        let canonical = dir
            .canonicalize()
            .map_err(StoreError::io("resolve the directory", dir))?;
        {
            let mut open = open_dirs();
            if open.contains(&canonical) {
                return Err(StoreError::AlreadyOpen {
                    path: dir.to_path_buf(),
                });
            }
            // Claimed from now on (a concurrent open here says AlreadyOpen);
            // `lock`'s drop releases the claim on every error path below.
            open.insert(canonical.clone());
        }
        let mut lock = Self {
            canonical,
            file: None,
        };
        let lock_path = lock.canonical.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(StoreError::io("create the lock file", &lock_path))?;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked {
                        path: dir.to_path_buf(),
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(StoreError::io("lock the lock file", &lock_path)(e))
                }
            }
        }
        lock.file = Some(file);
        Ok(lock)
    }

    /// The canonical path of the locked directory.
    pub fn path(&self) -> &Path {
        &self.canonical
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Close (unlock) before leaving the table, both under the table's
        // mutex: a concurrent open here never sees the directory free in the
        // table but still locked by us.
        let mut open = open_dirs();
        drop(self.file.take());
        open.remove(&self.canonical);
    }
}

/// Repairs what an interrupted open or snapshot leaves in `dir`. Call it only
/// while holding the directory's [`DirLock`].
///
/// # Errors
/// [`StoreError::DamagedConf`] and [`StoreError::DamagedSnapshot`] when a
/// file is damaged in a way a kill cannot explain (repairing it would be a
/// guess); [`StoreError::Io`] when reading or repairing fails.
pub fn repair(dir: &Path) -> Result<Vec<Recovery>, StoreError> {
    let mut done = Vec::new();
    repair_conf(dir, &mut done)?;
    repair_snapshots(dir, &mut done)?;
    Ok(done)
}

fn repair_conf(dir: &Path, done: &mut Vec<Recovery>) -> Result<(), StoreError> {
    let path = dir.join(CONF_FILE);
    let expected = expected_conf();
    let found = match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::io("read", &path)(e)),
    };
    let found_len = found.as_ref().map_or(0, |b| b.len() as u64);
    match found {
        Some(b) if b == expected => return Ok(()),
        // sled wrote this file with other settings (or another sled
        // version): its own check reports that clearly.
        Some(b) if crc_trailer_ok(&b, 4) => return Ok(()),
        // Missing, or cut short while sled wrote exactly these bytes.
        Some(b) if expected.starts_with(&b) => {}
        None => {}
        Some(_) => return Err(StoreError::DamagedConf { path }),
    }
    // Written whole before sled looks, so sled never writes it (its own
    // write is two `write` calls with no fsync: a kill between them leaves a
    // file sled refuses).
    write_atomically(dir, CONF_FILE, &expected)?;
    let fresh = found_len == 0 && std::fs::metadata(dir.join("db")).map_or(true, |m| m.len() == 0);
    if !fresh {
        tracing::warn!(file = %path.display(), found_len, "wrote sled's conf file whole: the first open of this directory was interrupted");
        done.push(Recovery::WroteConf {
            file: path,
            found_len,
        });
    }
    Ok(())
}

/// Whether the last `crc_len` bytes of `b` are the CRC-32 (little-endian) of
/// what precedes them (only 4 is used).
fn crc_trailer_ok(b: &[u8], crc_len: usize) -> bool {
    if b.len() <= crc_len {
        return false;
    }
    let (body, tail) = b.split_at(b.len() - crc_len);
    let Ok(tail) = <[u8; 4]>::try_from(tail) else {
        return false;
    };
    crc32fast::hash(body) == u32::from_le_bytes(tail)
}

/// Whether a snapshot file is complete, checked as sled's `read_snapshot`
/// does: a body, its length (8 bytes) and the CRC-32 of the body (4 bytes).
fn snapshot_complete(bytes: &[u8]) -> bool {
    if bytes.len() <= 12 {
        return false;
    }
    let (body, tail) = bytes.split_at(bytes.len() - 12);
    let Ok(crc) = <[u8; 4]>::try_from(&tail[8..]) else {
        return false;
    };
    crc32fast::hash(body) == u32::from_le_bytes(crc)
}

fn repair_snapshots(dir: &Path, done: &mut Vec<Recovery>) -> Result<(), StoreError> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(StoreError::io("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(StoreError::io("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // sled's candidates: every name starting with "snap." but its own
        // temporary ".in___motion" files.
        if name.starts_with("snap.") && !name.ends_with(".in___motion") {
            names.push(name.to_owned());
        }
    }
    let mut removed = false;
    let mut failed = None;
    names.retain(|name| {
        if !name.ends_with(".generating") {
            return true;
        }
        let path = dir.join(name);
        match read_all(&path) {
            Ok(bytes) if snapshot_complete(&bytes) => true,
            Ok(bytes) => {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::warn!(file = %path.display(), len = bytes.len(), "removed a partial sled snapshot left by an interrupted open");
                        done.push(Recovery::RemovedPartialSnapshot {
                            file: path,
                            len: bytes.len() as u64,
                        });
                        removed = true;
                    }
                    Err(e) => failed = Some(StoreError::io("remove the partial snapshot", &path)(e)),
                }
                false
            }
            Err(e) => {
                failed = Some(StoreError::io("read", &path)(e));
                false
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if removed {
        sync_dir(dir)?;
    }
    // sled reads the newest name only (sorted as strings, as sled sorts).
    names.sort();
    if let Some(newest) = names.last() {
        let path = dir.join(newest);
        let bytes = read_all(&path).map_err(StoreError::io("read", &path))?;
        if !snapshot_complete(&bytes) {
            return Err(StoreError::DamagedSnapshot { path });
        }
    }
    Ok(())
}

fn read_all(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// Writes `dir/name` whole or not at all: a temporary file, fsynced, renamed
/// over the name, then the directory fsynced.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.supamerge-tmp"));
    let target = dir.join(name);
    let mut f = File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
    f.write_all(bytes).map_err(StoreError::io("write", &tmp))?;
    f.sync_all().map_err(StoreError::io("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &target).map_err(StoreError::io("rename", &target))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("fsync the directory", dir))
}

/// Whether sled refused to open because its lock on `db` is held.
///
/// sled 0.34 reports this as an `Io` error of kind `Other` whose message starts
/// with "could not acquire lock" (`Config::open_file`); there is no dedicated
/// variant, so the message is the only signal.
fn is_sled_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::Other
            && io.to_string().contains("could not acquire lock"))
}

/// Waits (until `deadline`) for nobody to hold sled's lock on `db`.
fn wait_until_sled_lock_free(path: &Path, deadline: Instant) -> Result<(), StoreError> {
    let db = path.join("db");
    let file = match File::open(&db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("open", &db)(e)),
    };
    loop {
        match file.try_lock() {
            // Released when `file` is closed, at return.
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::io("probe sled's lock on", &db)(e))
            }
        }
    }
}

/// Opens the sled database in `path` crash-safely: locks the directory,
/// repairs what a kill can leave behind, then lets sled open it. `config`
/// must not set a path (this sets it).
///
/// # Errors
/// [`StoreError::AlreadyOpen`], [`StoreError::Locked`],
/// [`StoreError::DamagedConf`], [`StoreError::DamagedSnapshot`],
/// [`StoreError::Io`], and [`StoreError::Sled`] when sled itself refuses the
/// directory.
pub fn open_sled(
    path: &Path,
    config: sled::Config,
) -> Result<(sled::Db, DirLock, Vec<Recovery>), StoreError> {
    let lock = DirLock::acquire(path)?;
    // Holding our lock, only this process's previous handle (released by
    // sled's background threads a moment after its drop) or a program that
    // does not know `supamerge.lock` can hold sled's. Repair nothing while
    // anyone holds it.
    let deadline = Instant::now() + SLED_LOCK_WAIT;
    wait_until_sled_lock_free(path, deadline)?;
    let recovered = repair(path)?;
    let config = config.path(path);
    let db = loop {
        match config.open() {
            Ok(db) => break db,
            Err(e) if is_sled_lock_error(&e) => {
                if Instant::now() >= deadline {
                    return Err(StoreError::Locked {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(source) => return Err(StoreError::Sled { op: "open", source }),
        }
    };
    Ok((db, lock, recovered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_conf_is_what_sled_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        drop(db);
        let written = std::fs::read(dir.path().join(CONF_FILE)).unwrap();
        assert_eq!(written, expected_conf());
    }

    #[test]
    fn snapshot_check_matches_sleds_layout() {
        let body = b"page table".to_vec();
        let mut file = body.clone();
        file.extend_from_slice(&(body.len() as u64).to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        assert!(snapshot_complete(&file));
        assert!(!snapshot_complete(&file[..file.len() - 1]));
        assert!(!snapshot_complete(&[]));
        assert!(!snapshot_complete(&file[..12]));
    }
}
