//! The crate error: every module's error, gathered, plus the failures that
//! belong to no module (a background task, I/O outside the store).

use crate::entity::EntityError;
use crate::id::IdError;
use crate::migrate::MigrationError;
use crate::remote::RemoteError;
use crate::store::StoreError;

/// Any error supamerge returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An invalid id or collection name.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The local store failed or is damaged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An entity operation failed.
    #[error(transparent)]
    Entity(#[from] EntityError),
    /// A schema migration is misregistered or failed.
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// A remote call failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// A blocking task (replica work run on tokio's blocking pool) panicked
    /// or was cancelled before it finished. Not retryable: a panic is a bug,
    /// a cancellation means the runtime is shutting down.
    #[error("the blocking task for {task} failed: {source}")]
    Task {
        /// What the task was doing.
        task: &'static str,
        /// tokio's report (panic or cancellation).
        #[source]
        source: tokio::task::JoinError,
    },
    /// An I/O operation outside the store failed (e.g. creating a temporary
    /// directory).
    #[error("cannot {action}: {source}")]
    Io {
        /// What was being done, as a verb phrase ("create a temporary
        /// directory for the hub").
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether retrying the same operation later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Remote(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// `Result` with the crate [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
