//! Synchronisation: the wire protocol, push, pull and the tokio engine.

pub mod wire;
