//! The crate error: every module's error, gathered.

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
    /// The sync engine was shut down.
    #[error("the sync engine has shut down")]
    EngineStopped,
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
