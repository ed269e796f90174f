//! The connection profile: `supamerge login` stores the Supabase URL, anon
//! key and tokens in `$XDG_CONFIG_HOME/supamerge/profile.json` (else
//! `$HOME/.config/supamerge/profile.json`), so remote commands need no
//! flags; `supamerge logout` removes it.
//!
//! The directory is created with mode 0700 and the file written with mode
//! 0600 (a temporary file in the same directory, synced, then renamed over
//! the old one: a crash leaves the old profile or the new one, never half
//! of one). Tokens are never printed, not even by `--json`.
//!
//! Precedence: a flag, then its environment variable, then the profile. The
//! profile's tokens are sent only to the profile's own URL: a command
//! pointed at another server by a flag or `SUPABASE_URL` does not get them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::remote::{AuthSession, SessionSink};

/// The profile's file name inside the config directory.
pub const FILE_NAME: &str = "profile.json";

/// Errors reading or writing the profile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Neither `$XDG_CONFIG_HOME` nor `$HOME` is set to an absolute path.
    #[error("no config directory: set XDG_CONFIG_HOME or HOME")]
    NoConfigDir,
    /// A file operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The profile is not valid JSON of the expected shape.
    #[error("{path} is damaged ({source}): run `supamerge login` again or remove it")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// What `login` stores.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The project (or gateway) URL.
    pub supabase_url: String,
    /// The anon key.
    pub anon_key: String,
    /// The access token, when one is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// The refresh token (rotated on every refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("supabase_url", &self.supabase_url)
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Profile {
    /// The session to refresh, when the profile holds a refresh token.
    pub fn session(&self) -> Option<AuthSession> {
        let rt = self.refresh_token.as_ref()?;
        let mut s = AuthSession::from_refresh_token(rt.clone());
        if let Some(at) = &self.access_token {
            s = s.with_access_token(at.clone());
            if self.expires_at.is_some() {
                s.expires_at = self.expires_at;
            }
        }
        Some(s)
    }
}

/// `$XDG_CONFIG_HOME/supamerge`, else `$HOME/.config/supamerge`.
///
/// # Errors
/// [`ProfileError::NoConfigDir`].
pub fn config_dir() -> Result<PathBuf, ProfileError> {
    let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(x) = abs(std::env::var_os("XDG_CONFIG_HOME")) {
        return Ok(x.join("supamerge"));
    }
    abs(std::env::var_os("HOME"))
        .map(|h| h.join(".config").join("supamerge"))
        .ok_or(ProfileError::NoConfigDir)
}

/// The profile's path.
///
/// # Errors
/// [`ProfileError::NoConfigDir`].
pub fn path() -> Result<PathBuf, ProfileError> {
    Ok(config_dir()?.join(FILE_NAME))
}

/// Reads the profile; `None` when there is none.
///
/// # Errors
/// I/O errors other than "not found"; [`ProfileError::Damaged`].
pub fn load() -> Result<Option<Profile>, ProfileError> {
    let path = match path() {
        Ok(p) => p,
        // No home at all (a bare CI environment): no profile.
        Err(ProfileError::NoConfigDir) => return Ok(None),
        Err(e) => return Err(e),
    };
    load_from(&path)
}

fn load_from(path: &Path) -> Result<Option<Profile>, ProfileError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ProfileError::Damaged {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ProfileError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes the profile (directory 0700, file 0600, atomically). Returns its
/// path.
///
/// # Errors
/// [`ProfileError`].
pub fn save(profile: &Profile) -> Result<PathBuf, ProfileError> {
    let path = path()?;
    save_to(&path, profile)?;
    Ok(path)
}

fn save_to(path: &Path, profile: &Profile) -> Result<(), ProfileError> {
    let io = |action: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| ProfileError::Io {
            action,
            path: p,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir).map_err(io("create", dir))?;
        // An existing directory too: it holds credentials.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("restrict the permissions of", dir))?;
    }
    #[cfg(not(unix))]
    builder.create(dir).map_err(io("create", dir))?;
    let text = serde_json::to_vec_pretty(profile).map_err(|e| ProfileError::Io {
        action: "encode",
        path: path.to_owned(),
        source: e.into(),
    })?;
    let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let written = (|| {
        let mut f = opts.open(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&text).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("replace", path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Removes the profile; whether there was one.
///
/// # Errors
/// I/O errors other than "not found".
pub fn remove() -> Result<(bool, PathBuf), ProfileError> {
    let path = path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok((true, path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((false, path)),
        Err(source) => Err(ProfileError::Io {
            action: "remove",
            path,
            source,
        }),
    }
}

/// Writes every rotated session back into the profile file.
#[derive(Debug)]
pub struct ProfileSink {
    path: PathBuf,
}

impl ProfileSink {
    /// A sink for the profile at its usual path.
    ///
    /// # Errors
    /// [`ProfileError::NoConfigDir`].
    pub fn new() -> Result<Arc<Self>, ProfileError> {
        Ok(Arc::new(Self { path: path()? }))
    }
}

impl SessionSink for ProfileSink {
    fn store(&self, session: &AuthSession) -> Result<(), String> {
        let mut p = load_from(&self.path)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} was removed", self.path.display()))?;
        p.access_token.clone_from(&session.access_token);
        p.refresh_token = Some(session.refresh_token.clone());
        p.expires_at = session.expires_at;
        save_to(&self.path, &p).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_profiles_are_private_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg").join("supamerge").join(FILE_NAME);
        let p = Profile {
            supabase_url: "http://127.0.0.1:1".into(),
            anon_key: "k".into(),
            access_token: None,
            refresh_token: Some("secret-refresh".into()),
            expires_at: None,
        };
        save_to(&path, &p).unwrap();
        assert_eq!(load_from(&path).unwrap(), Some(p.clone()));
        assert!(!format!("{p:?}").contains("secret-refresh"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            load_from(&path),
            Err(ProfileError::Damaged { .. })
        ));
    }
}
