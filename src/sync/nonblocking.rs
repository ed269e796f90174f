//! [`AsyncReplica`]: the replica's face for async code.
//!
//! A [`Replica`] call is blocking I/O: a write waits for sled's fsync
//! ([`Durability::Immediate`](crate::Durability::Immediate), 0.5–15 ms on
//! ordinary disks), a read of a document not in the cache loads it from sled,
//! and every call runs Automerge. Called on a tokio worker thread, that time
//! is taken from every other task of the runtime (timers fire late, sockets
//! wait). [`AsyncReplica`] runs each call on tokio's blocking pool
//! (`spawn_blocking`) and awaits it, so the worker threads stay free.
//!
//! It is a thin, cheap-to-clone wrapper: [`AsyncReplica::replica`] is the
//! same replica (same store, cache and events), for code that runs on a
//! thread of its own, and for the sync engine.

use std::path::PathBuf;

use autosurgeon::{Hydrate, Reconcile};
use serde_json::Value as Json;
use tokio::sync::broadcast;

use crate::conflict::Conflict;
use crate::error::{Error, Result};
use crate::id::{Collection, DocId, WorkspaceId};
use crate::replica::{EntityInfo, Replica, ReplicaBuilder, ReplicaEvent};
use automerge::ChangeHash;

/// A [`Replica`] whose calls run on tokio's blocking pool: the async face
/// to use from async code. Cheap to clone; clones share the replica.
///
/// Values given to it are moved (the work runs on another thread), so
/// writes take their arguments by value. Anything not wrapped here is one
/// [`AsyncReplica::run`] away.
///
/// ```
/// # use autosurgeon::{Hydrate, Reconcile};
/// # use supamerge::{AsyncReplica, Collection, WorkspaceId};
/// #[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
/// struct Task {
///     title: String,
///     done: bool,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let replica = AsyncReplica::open(dir.path()).await?;
/// let tasks = Collection::new("tasks")?;
/// let id = replica
///     .create(WorkspaceId::new(), &tasks, Task { title: "ship".into(), done: false })
///     .await?;
/// replica.update(id, |t: &mut Task| t.done = true).await?;
/// assert!(replica.get::<Task>(id).await?.done);
/// // Any other call, on the blocking pool too:
/// let heads = replica.run(move |r| r.heads(&id)).await?;
/// assert_eq!(heads.len(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AsyncReplica {
    replica: Replica,
}

impl From<Replica> for AsyncReplica {
    fn from(replica: Replica) -> Self {
        Self { replica }
    }
}

impl AsyncReplica {
    /// Opens (or creates) the replica stored in `path` with default options,
    /// on the blocking pool.
    ///
    /// # Errors
    /// See [`ReplicaBuilder::open`].
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        Self::open_with(ReplicaBuilder::new(path)).await
    }

    /// Opens a replica with options, on the blocking pool.
    ///
    /// # Errors
    /// See [`ReplicaBuilder::open`].
    pub async fn open_with(builder: ReplicaBuilder) -> Result<Self> {
        let replica = spawn(move || builder.open()).await?;
        Ok(Self { replica })
    }

    /// The replica itself (blocking calls), e.g. for
    /// [`SyncEngine::builder`](crate::SyncEngine::builder).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Runs `f` with the replica on the blocking pool: the async form of any
    /// [`Replica`] call.
    ///
    /// # Errors
    /// What `f` returns; [`Error::Task`] if it panicked.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Replica) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let r = self.replica.clone();
        spawn(move || f(&r)).await
    }

    /// Receives [`ReplicaEvent`]s from now on (no I/O: not awaited).
    pub fn subscribe(&self) -> broadcast::Receiver<ReplicaEvent> {
        self.replica.subscribe()
    }

    /// [`Replica::create`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::create`].
    pub async fn create<T: Reconcile + Send + 'static>(
        &self,
        ws: WorkspaceId,
        collection: &Collection,
        value: T,
    ) -> Result<DocId> {
        let c = collection.clone();
        self.run(move |r| r.create(ws, &c, &value)).await
    }

    /// [`Replica::create_json`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::create_json`].
    pub async fn create_json(
        &self,
        ws: WorkspaceId,
        collection: &Collection,
        value: Json,
    ) -> Result<DocId> {
        let c = collection.clone();
        self.run(move |r| r.create_json(ws, &c, &value)).await
    }

    /// [`Replica::update`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::update`].
    pub async fn update<T: Hydrate + Reconcile + 'static>(
        &self,
        id: DocId,
        f: impl FnOnce(&mut T) + Send + 'static,
    ) -> Result<Option<ChangeHash>> {
        self.run(move |r| r.update::<T>(&id, f)).await
    }

    /// [`Replica::patch_json`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::patch_json`].
    pub async fn patch_json(&self, id: DocId, patch: Json) -> Result<Option<ChangeHash>> {
        self.run(move |r| r.patch_json(&id, &patch)).await
    }

    /// [`Replica::delete`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::delete`].
    pub async fn delete(&self, id: DocId) -> Result<ChangeHash> {
        self.run(move |r| r.delete(&id)).await
    }

    /// [`Replica::get`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::get`].
    pub async fn get<T: Hydrate + Send + 'static>(&self, id: DocId) -> Result<T> {
        self.run(move |r| r.get::<T>(&id)).await
    }

    /// [`Replica::get_json`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::get_json`].
    pub async fn get_json(&self, id: DocId) -> Result<Json> {
        self.run(move |r| r.get_json(&id)).await
    }

    /// [`Replica::list`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::list`].
    pub async fn list(&self, collection: &Collection) -> Result<Vec<DocId>> {
        let c = collection.clone();
        self.run(move |r| r.list(&c)).await
    }

    /// [`Replica::info`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::info`].
    pub async fn info(&self, id: DocId) -> Result<EntityInfo> {
        self.run(move |r| r.info(&id)).await
    }

    /// [`Replica::conflicts`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::conflicts`].
    pub async fn conflicts(&self, id: DocId) -> Result<Vec<Conflict>> {
        self.run(move |r| r.conflicts(&id)).await
    }

    /// [`Replica::resolve`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::resolve`].
    pub async fn resolve(&self, id: DocId, path: &str, value: Json) -> Result<ChangeHash> {
        let path = path.to_owned();
        self.run(move |r| r.resolve(&id, &path, &value)).await
    }

    /// [`Replica::keep_local`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::keep_local`].
    pub async fn keep_local(&self, id: DocId, path: &str) -> Result<ChangeHash> {
        let path = path.to_owned();
        self.run(move |r| r.keep_local(&id, &path)).await
    }

    /// [`Replica::keep_remote`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::keep_remote`].
    pub async fn keep_remote(&self, id: DocId, path: &str) -> Result<ChangeHash> {
        let path = path.to_owned();
        self.run(move |r| r.keep_remote(&id, &path)).await
    }

    /// [`Replica::flush`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Replica::flush`].
    pub async fn flush(&self) -> Result<()> {
        self.run(|r| r.flush()).await
    }
}

async fn spawn<R: Send + 'static>(f: impl FnOnce() -> Result<R> + Send + 'static) -> Result<R> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Task {
            task: "a replica call of AsyncReplica",
            source,
        })?
}
