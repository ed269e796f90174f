//! The gateway's HTTP/1 server: the accept loop, one hyper connection per
//! client under the gateway's connection limits, and a lingering close.
//!
//! Why not `axum::serve`: it sets no timer, so hyper's header read timeout
//! never fires, and it has no connection cap (issue 11: 1,100 connections
//! that sent half a header made legitimate requests wait). Here:
//!
//! - **Header timeout.** Each connection is served by hyper's HTTP/1 server
//!   with a tokio timer and `header_read_timeout`: a connection that has not
//!   sent a whole request head within it is closed — also an idle keep-alive
//!   connection, since hyper arms the timer whenever it waits for a head.
//! - **Connection cap.** At most `max_connections` are open. A new
//!   connection past the cap closes the connection that has been idle
//!   longest (no request being handled or answered: waiting for, or halfway
//!   through, a request head, or lingering); only when every connection is busy is the
//!   new one answered 503 and closed. Idle and slow connections therefore
//!   never keep a legitimate request out. An `accept` that fails for lack of
//!   file descriptors does the same eviction.
//! - **Lingering close.** When a response was sent before its request body
//!   was read (a refused request: 401, 413, 503...), hyper stops reading and
//!   ends the connection; the socket is then half-closed (FIN after the
//!   response) and what the client still sends is read and discarded for at
//!   most [`LINGER_TIME`] and `linger_bytes`, so that the client reads the
//!   answer instead of a connection reset (closing a socket with unread data
//!   makes the kernel send RST, which can destroy the response in flight).
//!   The answer never waits for the body.
//! - **Graceful shutdown.** Stop accepting, let each connection finish its
//!   request in flight (hyper's `graceful_shutdown`), wait for all — at most
//!   the header, body and linger timeouts for a client that stalls.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// The longest a closed connection keeps reading (and discarding) what its
/// client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// What a connection is doing, shared between its task, its service and the
/// registry (which evicts idle connections).
#[derive(Debug)]
struct ConnState {
    /// Requests of this connection inside a handler now.
    busy: AtomicUsize,
    /// When it last finished a request (or was accepted), in ms since the
    /// server started: the longest-idle connection is evicted first.
    idle_since_ms: AtomicU64,
    /// Told to close by the registry (eviction).
    evict: Notify,
}

/// The open connections.
struct Registry {
    started: Instant,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
}

impl Registry {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn register(&self) -> (u64, Arc<ConnState>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
        });
        self.lock().insert(id, state.clone());
        (id, state)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the connection idle longest; false when every one is busy.
    fn evict_idle(&self) -> bool {
        let mut conns = self.lock();
        let victim = conns
            .iter()
            .filter(|(_, s)| s.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, s)| s.idle_since_ms.load(Ordering::Acquire))
            .map(|(id, _)| *id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some(state) => {
                // notify_one keeps a permit when the task is not waiting yet.
                state.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The settings the server loop needs.
#[derive(Debug, Clone)]
pub(crate) struct ServerLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time to send a request head (and the keep-alive idle limit).
    pub header_timeout: Duration,
    /// Bytes read and discarded at most while lingering.
    pub linger_bytes: usize,
}

/// The hyper service of one connection: the router, with the connection
/// marked busy from the moment a request head is read until its response
/// has been written.
#[derive(Clone)]
struct ConnService {
    inner: TowerToHyperService<Router>,
    state: Arc<ConnState>,
    registry: Arc<Registry>,
}

/// Marks a connection idle again when its response body is done (also when
/// the request future or the body is dropped).
struct BusyGuard {
    state: Arc<ConnState>,
    registry: Arc<Registry>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.state
            .idle_since_ms
            .store(self.registry.now_ms(), Ordering::Release);
        self.state.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.state.busy.fetch_add(1, Ordering::AcqRel);
        let guard = BusyGuard {
            state: self.state.clone(),
            registry: self.registry.clone(),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            // Busy until the response body is written (or dropped): a
            // connection is not evicted in the middle of an answer.
            Ok(resp.map(|body| {
                Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                    let _busy = &guard;
                    frame
                }))
            }))
        })
    }
}

/// A 503 for a connection refused at the cap (every connection busy).
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json; charset=utf-8\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 113\r\n\r\n\
{\"code\":\"PGRST_BUSY\",\"message\":\"too many connections: every one is busy; retry later\",\"details\":null,\"hint\":null}";

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish.
///
/// # Errors
/// Never fails once started; the type matches the caller's.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let registry = Arc::new(Registry::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                            tracing::warn!("out of file descriptors: closing an idle connection");
                            registry.evict_idle();
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        continue;
                    }
                };
                if registry.len() >= limits.max_connections && !registry.evict_idle() {
                    // Every connection is in a request: refuse this one.
                    let _ = stream.try_write(BUSY_RESPONSE);
                    continue;
                }
                let (id, state) = registry.register();
                let service = ConnService {
                    inner: TowerToHyperService::new(router.clone()),
                    state: state.clone(),
                    registry: registry.clone(),
                };
                let registry = registry.clone();
                let limits = limits.clone();
                let stop = stop_rx.clone();
                tasks.spawn(async move {
                    serve_connection(stream, service, &state, &limits, stop).await;
                    registry.remove(id);
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    service: ConnService,
    state: &ConnState,
    limits: &ServerLimits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut stopping = *stop.borrow();
    if stopping {
        Pin::new(&mut conn).graceful_shutdown();
    }
    let done = loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            () = state.evict.notified() => return,
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    Pin::new(&mut conn).graceful_shutdown();
                }
            }
        }
    };
    if let Err(e) = done {
        // A header timeout, a malformed request, a client that went away:
        // nothing to answer.
        tracing::debug!(error = %e, "connection ended");
        return;
    }
    let parts = conn.into_parts();
    linger(parts.io.into_inner(), state, limits.linger_bytes).await;
}

/// Half-closes the socket and reads (and discards) what the client still
/// sends, for at most [`LINGER_TIME`] and `max_bytes`, or until it closes.
async fn linger(mut stream: TcpStream, state: &ConnState, max_bytes: usize) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = 0usize;
    loop {
        tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => match r {
                Ok(Ok(n)) if n > 0 => {
                    seen += n;
                    if seen > max_bytes {
                        return;
                    }
                }
                _ => return,
            },
            () = state.evict.notified() => return,
        }
    }
}

/// Lowers `max_connections` below the process's open-file limit (keeping
/// `reserve` descriptors for the database pool, the listener and logs).
pub(crate) fn clamp_to_fd_limit(max_connections: usize, reserve: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other effect.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok || lim.rlim_cur == libc::RLIM_INFINITY {
        return max_connections;
    }
    let available = usize::try_from(lim.rlim_cur)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserve)
        .max(1);
    if max_connections > available {
        tracing::warn!(
            max_connections,
            open_file_limit = lim.rlim_cur,
            "max_connections lowered to {available} to stay below the open-file limit"
        );
        available
    } else {
        max_connections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_picks_the_longest_idle_and_never_a_busy_one() {
        let r = Registry::new();
        let (_, a) = r.register();
        let (b_id, b) = r.register();
        let (_, c) = r.register();
        a.idle_since_ms.store(50, Ordering::Release);
        b.idle_since_ms.store(10, Ordering::Release);
        c.idle_since_ms.store(5, Ordering::Release);
        c.busy.store(1, Ordering::Release);
        assert!(r.evict_idle());
        assert!(!r.lock().contains_key(&b_id), "b was idle longest");
        assert!(r.evict_idle());
        assert!(!r.evict_idle(), "c is busy");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn busy_response_is_well_formed() {
        let text = std::str::from_utf8(BUSY_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "PGRST_BUSY");
    }
}
