//! supamerge: an offline-first, CRDT-based replication engine.

pub mod clock;
pub mod id;
pub mod remote;
pub mod store;
pub mod sync;
