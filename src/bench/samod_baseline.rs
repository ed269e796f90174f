//! Fresh-device baselines: samod (the Rust automerge-repo, 0.16, built on
//! automerge 0.12 like supamerge) syncing documents between two in-process
//! repos, and the raw Automerge sync protocol between two in-memory
//! documents (what samod runs per document underneath).

use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::Automerge;

use super::data::GenDoc;
use super::{BenchError, BenchResult};

/// Time for a second, empty samod repo to find every document of a first one
/// over samod's in-process channel transport (in-memory storage on both
/// sides). The clock starts at the dial and stops when every `find` has
/// resolved.
///
/// # Errors
/// [`BenchError::Samod`] when a repo stops or a document is not found.
pub fn sync_with_samod(rt: &tokio::runtime::Runtime, gens: &[GenDoc]) -> BenchResult<Duration> {
    let docs: Vec<Automerge> = gens.iter().map(|g| g.doc.clone()).collect();
    rt.block_on(async move {
        let stopped = |_| BenchError::Samod {
            reason: "a repo stopped",
        };
        let alice = samod::Repo::build_tokio().load().await;
        let bob = samod::Repo::build_tokio().load().await;
        let mut ids = Vec::with_capacity(docs.len());
        for d in docs {
            let h = alice.create(d).await.map_err(stopped)?;
            ids.push(h.document_id().clone());
        }
        let url = samod::Url::parse("samod-channel://bench").map_err(|_| BenchError::Samod {
            reason: "bad channel url",
        })?;
        let t = Instant::now();
        let acceptor = alice.make_acceptor(url).map_err(stopped)?;
        let dialer = samod::transport::channel::ChannelDialer::new(acceptor);
        let handle = bob
            .dial(samod::BackoffConfig::default(), Arc::new(dialer))
            .map_err(stopped)?;
        handle.established().await.map_err(|_| BenchError::Samod {
            reason: "the channel connection failed",
        })?;
        let found = futures::future::join_all(ids.into_iter().map(|id| bob.find(id))).await;
        let d = t.elapsed();
        for f in found {
            match f {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(BenchError::Samod {
                        reason: "a document was not found",
                    })
                }
                Err(_) => {
                    return Err(BenchError::Samod {
                        reason: "a repo stopped",
                    })
                }
            }
        }
        alice.stop().await;
        bob.stop().await;
        Ok(d)
    })
}

/// Time for the raw Automerge sync protocol to bring an empty document up to
/// date with each generated one, messages encoded and decoded as on a wire.
///
/// # Errors
/// [`BenchError::Mismatch`] when a message does not decode or the documents
/// do not converge.
pub fn sync_with_protocol(gens: &[GenDoc]) -> BenchResult<Duration> {
    let fail = |what: String| BenchError::Mismatch {
        workload: "raw sync protocol",
        what,
    };
    let mut sources: Vec<Automerge> = gens.iter().map(|g| g.doc.clone()).collect();
    let t = Instant::now();
    for a in &mut sources {
        let mut b = Automerge::new();
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        loop {
            let mut quiet = true;
            if let Some(m) = a.generate_sync_message(&mut sa) {
                quiet = false;
                let m = sync::Message::decode(&m.encode()).map_err(|e| fail(e.to_string()))?;
                b.receive_sync_message(&mut sb, m)
                    .map_err(|e| fail(e.to_string()))?;
            }
            if let Some(m) = b.generate_sync_message(&mut sb) {
                quiet = false;
                let m = sync::Message::decode(&m.encode()).map_err(|e| fail(e.to_string()))?;
                a.receive_sync_message(&mut sa, m)
                    .map_err(|e| fail(e.to_string()))?;
            }
            if quiet {
                break;
            }
        }
        if b.get_heads() != a.get_heads() {
            return Err(fail("the raw sync protocol did not converge".to_owned()));
        }
    }
    Ok(t.elapsed())
}
