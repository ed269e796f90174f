//! supamerge: an offline-first, CRDT-based replication engine.

#![warn(missing_docs)]

#[doc(hidden)]
pub mod cli;
pub mod clock;
pub mod conflict;
pub mod demo;
pub mod entity;
pub mod error;
pub mod id;
pub mod remote;
pub mod replica;
pub mod store;
pub mod sync;

pub use error::{Error, Result};
pub use id::{Collection, DocId, WorkspaceId};
pub use replica::{Origin, Replica, ReplicaBuilder, ReplicaEvent};
