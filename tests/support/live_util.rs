//! Waiting helpers shared by the live-sync tests (`tests/live.rs` on the
//! embedded hub, `tests/live_sync.rs` through the gateway).

use std::time::Duration;

use supamerge::{DocId, Origin, SyncEvent};
use tokio::sync::broadcast;

/// Waits for a future, failing the test after a generous guard instead of
/// hanging (a guard against a hang, not a timing assertion).
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
}

/// Waits for `DocChanged { id, origin: Remote }` on an engine's events.
pub async fn remote_change(events: &mut broadcast::Receiver<SyncEvent>, id: DocId) {
    within("the remote change", async {
        loop {
            match events.recv().await {
                Ok(SyncEvent::DocChanged {
                    id: got,
                    origin: Origin::Remote,
                }) if got == id => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("engine stopped"),
            }
        }
    })
    .await
}
