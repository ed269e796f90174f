//! A fault-injecting wrapper around a real [`Remote`], for tests and
//! property tests.
//!
//! Faults are scripted per operation and consumed in order, one per call:
//! drop the request (the remote never sees it), drop the response after the
//! remote committed, deliver the request twice, delay it, or fail it. A
//! switch makes the remote unreachable altogether ("offline"); another
//! loses the live updates' nudges (resyncs after a join still arrive).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::live::{ConnectionState, LiveError, LiveUpdates, NudgeLoss, Subscription};
use super::{Remote, RemoteError};
use crate::id::WorkspaceId;
use crate::protocol::wire::{
    PullPage, PullRequest, PushRequest, PushResponse, SnapshotOutcome, SnapshotPage, SnapshotQuery,
    SnapshotUpload,
};

/// The remote operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Remote::push`].
    Push,
    /// [`Remote::pull`].
    Pull,
    /// [`Remote::put_snapshot`].
    PutSnapshot,
    /// [`Remote::get_snapshots`].
    GetSnapshots,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The request is lost: the remote never sees it.
    DropRequest,
    /// The remote handles the request, then the response is lost.
    DropResponse,
    /// The request is delivered twice; the second response is returned.
    Duplicate,
    /// The call is delayed by this long, then proceeds.
    Delay(Duration),
    /// The remote answers with a server error (5xx) without doing anything.
    ServerError,
    /// The remote answers "too large" without doing anything.
    TooLarge,
    /// The remote refuses the credentials.
    Unauthenticated,
}

/// A [`Remote`] wrapper that injects faults.
pub struct FaultyRemote {
    inner: Arc<dyn Remote>,
    script: Mutex<HashMap<Op, VecDeque<Fault>>>,
    offline: AtomicBool,
    calls: Mutex<HashMap<Op, usize>>,
    nudges: Arc<NudgeLoss>,
}

impl std::fmt::Debug for FaultyRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyRemote")
            .field("offline", &self.offline.load(Ordering::SeqCst))
            .finish()
    }
}

impl FaultyRemote {
    /// Wraps `inner` with no faults scheduled.
    pub fn new(inner: Arc<dyn Remote>) -> Self {
        Self {
            inner,
            script: Mutex::new(HashMap::new()),
            offline: AtomicBool::new(false),
            calls: Mutex::new(HashMap::new()),
            nudges: Arc::new(NudgeLoss::default()),
        }
    }

    /// Loses every nudge of the live updates (`true`) or lets them through
    /// again (`false`); the resync after a (re)join is never lost.
    pub fn lose_nudges(&self, lose: bool) {
        self.nudges.set(lose);
    }

    /// How many nudges were lost so far.
    pub fn nudges_lost(&self) -> u64 {
        self.nudges.lost()
    }

    /// Schedules `fault` for a future call of `op` (faults queue in order).
    pub fn inject(&self, op: Op, fault: Fault) {
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op)
            .or_default()
            .push_back(fault);
    }

    /// Schedules `n` server errors for `op`.
    pub fn fail_next(&self, op: Op, n: usize) {
        for _ in 0..n {
            self.inject(op, Fault::ServerError);
        }
    }

    /// Makes every call fail as unreachable (`true`) or work again (`false`).
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::SeqCst);
    }

    /// How many calls of `op` were made (faulted ones included).
    pub fn calls(&self, op: Op) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// Faults still scheduled for `op`.
    pub fn remaining(&self, op: Op) -> usize {
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&op)
            .map_or(0, VecDeque::len)
    }

    fn next_fault(&self, op: Op) -> Option<Fault> {
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op)
            .or_default() += 1;
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&op)
            .and_then(VecDeque::pop_front)
    }

    async fn call<T, F, Fut>(&self, op: Op, f: F) -> Result<T, RemoteError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, RemoteError>>,
    {
        if self.offline.load(Ordering::SeqCst) {
            self.next_fault(op);
            return Err(RemoteError::Unavailable {
                reason: "injected: offline".into(),
            });
        }
        match self.next_fault(op) {
            None => f().await,
            Some(Fault::DropRequest) => Err(RemoteError::Unavailable {
                reason: "injected: request lost".into(),
            }),
            Some(Fault::DropResponse) => {
                let _ = f().await;
                Err(RemoteError::Unavailable {
                    reason: "injected: response lost".into(),
                })
            }
            Some(Fault::Duplicate) => {
                let _ = f().await;
                f().await
            }
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                f().await
            }
            Some(Fault::ServerError) => Err(RemoteError::Server {
                status: 503,
                message: "injected: server error".into(),
            }),
            Some(Fault::TooLarge) => Err(RemoteError::TooLarge {
                message: "injected: too large".into(),
            }),
            Some(Fault::Unauthenticated) => Err(RemoteError::Unauthenticated {
                message: "injected: JWT expired".into(),
            }),
        }
    }
}

#[async_trait]
impl Remote for FaultyRemote {
    /// The wrapped remote's, losing nudges while [`FaultyRemote::lose_nudges`]
    /// is on (the other faults apply to calls only).
    fn live_updates(&self) -> Option<Arc<dyn LiveUpdates>> {
        let inner = self.inner.live_updates()?;
        Some(Arc::new(FaultyLive {
            inner,
            loss: self.nudges.clone(),
        }))
    }

    async fn push(&self, req: PushRequest) -> Result<PushResponse, RemoteError> {
        self.call(Op::Push, || self.inner.push(req.clone())).await
    }

    async fn pull(&self, req: PullRequest) -> Result<PullPage, RemoteError> {
        self.call(Op::Pull, || self.inner.pull(req.clone())).await
    }

    async fn put_snapshot(&self, snap: SnapshotUpload) -> Result<SnapshotOutcome, RemoteError> {
        self.call(Op::PutSnapshot, || self.inner.put_snapshot(snap.clone()))
            .await
    }

    async fn get_snapshots(&self, query: SnapshotQuery) -> Result<SnapshotPage, RemoteError> {
        self.call(Op::GetSnapshots, || self.inner.get_snapshots(query.clone()))
            .await
    }
}

/// The live updates of a [`FaultyRemote`]: the wrapped remote's, with its
/// nudge-loss switch attached to every subscription.
struct FaultyLive {
    inner: Arc<dyn LiveUpdates>,
    loss: Arc<NudgeLoss>,
}

impl LiveUpdates for FaultyLive {
    fn subscribe(&self, workspace: WorkspaceId) -> Result<Subscription, LiveError> {
        Ok(self
            .inner
            .subscribe(workspace)?
            .with_loss(self.loss.clone()))
    }

    fn state(&self) -> tokio::sync::watch::Receiver<ConnectionState> {
        self.inner.state()
    }

    fn presence_key(&self) -> String {
        self.inner.presence_key()
    }
}
