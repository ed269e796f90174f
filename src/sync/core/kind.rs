//! The kinds of sync failure: what the scheduler ([`super::schedule`])
//! decides on after a failed pass (back off, or wait for credentials).

use serde::Serialize;

use crate::error::Error;
use crate::remote::RemoteError;

/// The kinds of sync failure. The engine retries every kind with backoff
/// except [`SyncErrorKind::Auth`], which waits for
/// [`SyncHandle::credentials_updated`](crate::SyncHandle::credentials_updated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncErrorKind {
    /// The remote could not be reached or did not answer in time
    /// ([`RemoteError::Unavailable`], [`RemoteError::Timeout`]); the status
    /// says [`SyncState::Offline`](crate::SyncState::Offline).
    Offline,
    /// The credentials are missing, invalid or expired
    /// ([`RemoteError::Unauthenticated`]).
    Auth,
    /// Authenticated but not allowed ([`RemoteError::Forbidden`]).
    Forbidden,
    /// The remote failed on its side: a 5xx, the hub's storage
    /// ([`RemoteError::Server`], [`RemoteError::Storage`]).
    Server,
    /// The remote refused the request as a whole or answered something this
    /// build does not understand ([`RemoteError::BadRequest`],
    /// [`RemoteError::TooLarge`], [`RemoteError::Protocol`]).
    Rejected,
    /// The local store failed or is damaged ([`Error::Store`]).
    Storage,
    /// A blocking task panicked or was cancelled ([`Error::Task`],
    /// [`RemoteError::Task`]).
    Task,
    /// Local data was refused: a damaged document, an invalid id, a failed
    /// migration ([`Error::Entity`], [`Error::Id`], [`Error::Migration`]).
    Data,
    /// An I/O failure outside the store ([`Error::Io`]).
    Io,
}

impl SyncErrorKind {
    /// The kind of a pass's error.
    pub fn of(e: &Error) -> Self {
        match e {
            Error::Remote(r) => match r {
                RemoteError::Unavailable { .. } | RemoteError::Timeout { .. } => Self::Offline,
                RemoteError::Unauthenticated { .. } => Self::Auth,
                RemoteError::Forbidden { .. } | RemoteError::NotAMember { .. } => Self::Forbidden,
                RemoteError::Server { .. } | RemoteError::Storage(_) => Self::Server,
                RemoteError::Task { .. } => Self::Task,
                _ => Self::Rejected,
            },
            Error::Store(_) => Self::Storage,
            Error::Task { .. } => Self::Task,
            Error::Io { .. } => Self::Io,
            _ => Self::Data,
        }
    }

    /// Whether a later attempt can succeed with nothing changed on this side
    /// (the remote comes back, or recovers): [`SyncErrorKind::Offline`] and
    /// [`SyncErrorKind::Server`].
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Offline | Self::Server)
    }
}

impl std::fmt::Display for SyncErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Offline => "offline",
            Self::Auth => "auth",
            Self::Forbidden => "forbidden",
            Self::Server => "server",
            Self::Rejected => "rejected",
            Self::Storage => "storage",
            Self::Task => "task",
            Self::Data => "data",
            Self::Io => "io",
        })
    }
}
