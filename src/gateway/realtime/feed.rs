//! Database broadcasts → sockets. The stand-in's `realtime.send` inserts
//! the message into `realtime.messages` (as on Supabase) and raises
//! `NOTIFY realtime_broadcast` with `{"id","topic","event","private",
//! "payload"}`, delivered when the pushing transaction commits. This task
//! LISTENs on its own connection and hands each message to the members of
//! the topic that may read broadcasts.
//!
//! A lost connection is reopened after a backoff; what was announced in
//! between is not replayed (clients resync on their rejoin and poll: a
//! nudge is never needed for correctness). Once an hour it deletes
//! messages older than three days (`realtime.gateway_prune`), as Supabase
//! drops its daily partitions.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::RealtimeHub;
use crate::protocol::realtime::{Message, TOPIC_PREFIX};

/// The notification channel the stand-in's `realtime.send` raises.
pub(crate) const CHANNEL: &str = "realtime_broadcast";

/// The feed connection's `application_name` (to find it in `pg_stat_activity`).
pub(crate) const APPLICATION_NAME: &str = "supamerge-gateway-realtime-feed";

/// How often old messages are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Notifications waiting for dispatch; past it they are dropped.
const QUEUE: usize = 1024;

/// One notification's JSON.
#[derive(Debug, Deserialize)]
struct Broadcast {
    id: Option<String>,
    topic: String,
    event: String,
    #[serde(default)]
    private: bool,
    /// `null` when the payload was too large for a notification.
    payload: Option<Value>,
}

/// Runs until the hub closes: LISTEN, dispatch, reconnect.
pub(crate) async fn listen(hub: Arc<RealtimeHub>) {
    let mut stop = hub.stopped();
    let mut attempt: u32 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        match session(&hub, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                attempt = attempt.saturating_add(1);
                let delay = Duration::from_millis(250)
                    .saturating_mul(1 << attempt.min(7))
                    .min(Duration::from_secs(30));
                tracing::warn!(error = %e, ?delay, "realtime feed lost its database connection; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// One LISTEN connection; `Ok` when the hub closed.
async fn session(
    hub: &Arc<RealtimeHub>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut config =
        tokio_postgres::Config::from_str(&hub.config.database_url).map_err(|e| e.to_string())?;
    config.application_name(APPLICATION_NAME);
    let (client, mut connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = mpsc::channel::<tokio_postgres::Notification>(QUEUE);
    let (dead_tx, mut dead_rx) = tokio::sync::oneshot::channel::<String>();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let reason = loop {
            match messages.next().await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.try_send(n).is_err() {
                        tracing::warn!("realtime feed queue full: a broadcast was dropped");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break e.to_string(),
                None => break "the database closed the connection".to_owned(),
            }
        };
        let _ = dead_tx.send(reason);
    });
    let result = async {
        client
            .batch_execute(&format!("listen {CHANNEL}"))
            .await
            .map_err(|e| e.to_string())?;
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                n = rx.recv() => match n {
                    Some(n) => dispatch(hub, n.payload()),
                    None => return Err("the feed's connection ended".to_owned()),
                },
                _ = prune.tick() => {
                    if let Err(e) = client.execute("select realtime.gateway_prune()", &[]).await {
                        tracing::debug!(error = %e, "cannot prune realtime.messages");
                    }
                }
                r = &mut dead_rx => return Err(r.unwrap_or_else(|_| "the feed's driver stopped".into())),
                _ = stop.changed() => return Ok(()),
            }
        }
    }
    .await;
    driver.abort();
    result
}

fn dispatch(hub: &RealtimeHub, text: &str) {
    let b: Broadcast = match serde_json::from_str(text) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(error = %e, "ignoring a malformed realtime notification");
            return;
        }
    };
    // Only private channels are served.
    if !b.private {
        return;
    }
    let Some(payload) = b.payload else {
        tracing::warn!(topic = %b.topic, "a broadcast too large for NOTIFY was not delivered");
        return;
    };
    let topic = format!("{TOPIC_PREFIX}{}", b.topic);
    let msg = Message::broadcast(topic.clone(), &b.event, payload, b.id.as_deref());
    let n = hub.deliver(&topic, &msg);
    tracing::trace!(%topic, sockets = n, "database broadcast delivered");
}
