//! A local, PostgREST-compatible RPC gateway: a development stand-in for
//! Supabase's API (feature `gateway`).
//!
//! Layout:
//! - [`config`]: [`GatewayConfig`] (builder) and the CLI's [`GatewayArgs`];
//! - `server`: the HTTP/1 accept loop (connection cap, header timeout,
//!   lingering close, graceful shutdown);
//! - `limits`: what a request must pass before its body is read (content
//!   type, size, request and body-byte budgets) and the bounded body read;
//! - [`auth`]: `apikey` check and HS256 JWT verification → role and claims;
//! - [`rpc`]: function lookup in `pg_proc`, named arguments, one transaction
//!   per request with `role` and `request.jwt.claims` set;
//! - [`api_error`]: PostgREST's error JSON and SQLSTATE → HTTP status table;
//! - [`token_endpoint`]: a development stand-in for Supabase Auth's
//!   refresh-token grant (`POST /auth/v1/token?grant_type=refresh_token`).
//!
//! It serves `POST /rest/v1/rpc/<function>` (and `/rpc/<function>`, as
//! PostgREST itself does behind Supabase's gateway) over a connection pool,
//! and answers CORS preflights. Only the `public` schema is exposed. A
//! request is authenticated from its headers before any body byte is read,
//! and its body is bounded in size, time and memory (see `limits`);
//! `docs/operations.md` lists the limits and what it does not do.
//!
//! ```no_run
//! # async fn run() -> Result<(), supamerge::gateway::GatewayError> {
//! use supamerge::gateway::{Gateway, GatewayConfig};
//! let config = GatewayConfig::new(
//!     "postgres://authenticator:pw@127.0.0.1:5432/postgres",
//!     "a-jwt-secret-of-at-least-32-characters",
//!     "anon-key",
//! )
//! .with_listen("127.0.0.1:0".parse().expect("address"));
//! let gateway = Gateway::bind(config).await?;
//! println!("listening on {}", gateway.url());
//! let handle = gateway.spawn();
//! // ... use it ...
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod api_error;
pub mod auth;
pub mod config;
pub mod dev;
mod limits;
mod realtime;
pub mod rpc;
mod server;
pub mod token_endpoint;

pub use realtime::{
    RealtimeSettings, DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_MAX_CHANNELS, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_PRESENCE_BYTES, DEFAULT_MAX_SOCKETS, DEFAULT_RECHECK_EVERY,
};

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::oneshot;

pub use api_error::{status_for_sqlstate, ApiError};
pub use auth::{Caller, JWT_LEEWAY_SECS};
pub use config::{
    GatewayArgs, GatewayConfig, DEFAULT_BODY_BUDGET_BYTES, DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_REQUESTS, DEFAULT_POOL_SIZE,
};
pub use server::LINGER_TIME;

/// Errors starting or running the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A setting is invalid.
    #[error("invalid gateway setting {setting}: {reason}")]
    Config {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The database URL cannot be parsed.
    #[error("invalid database url {url}: {source}")]
    DatabaseUrl {
        /// The URL, password redacted.
        url: String,
        /// The parser's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database cannot be reached or refused the login.
    #[error("cannot connect to the database at {url}: {reason}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("gateway server failed: {source}")]
    Serve {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The spawned server task panicked or was cancelled.
    #[error("gateway task failed: {reason}")]
    Task {
        /// What happened.
        reason: String,
    },
}

/// State shared by the request handlers.
struct AppState {
    /// The settings (keys, secret, body limit).
    config: GatewayConfig,
    /// PostgreSQL connections, one per concurrent request.
    pool: Pool,
    /// The request and body-byte budgets.
    admission: limits::Admission,
}

/// A gateway bound to its address, not yet serving.
pub struct Gateway {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    router: Router,
    limits: server::ServerLimits,
    /// The Realtime endpoint's sockets and the database feed.
    realtime: Arc<realtime::RealtimeHub>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Validates the settings, connects to the database (failing fast when it
    /// cannot) and binds the listen address.
    ///
    /// # Errors
    /// [`GatewayError::Config`], [`GatewayError::DatabaseUrl`],
    /// [`GatewayError::Connect`] or [`GatewayError::Bind`].
    pub async fn bind(config: GatewayConfig) -> Result<Self, GatewayError> {
        config.validate()?;
        let url = config::redact_url(&config.database_url);
        let pg_config =
            tokio_postgres::Config::from_str(&config.database_url).map_err(|source| {
                GatewayError::DatabaseUrl {
                    url: url.clone(),
                    source,
                }
            })?;
        let manager = Manager::from_config(
            pg_config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.pool_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| GatewayError::Config {
                setting: "pool_size",
                reason: e.to_string(),
            })?;
        let client = pool.get().await.map_err(|e| GatewayError::Connect {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let row = client
            .query_one(
                "select current_user::text, r.rolsuper or r.rolbypassrls \
                   from pg_catalog.pg_roles r where r.rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| GatewayError::Connect {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let user: String = row.try_get(0).unwrap_or_default();
        let privileged: bool = row.try_get(1).unwrap_or(false);
        if privileged {
            tracing::warn!(
                %user,
                "the gateway logged in as a superuser or BYPASSRLS role; log in as `authenticator` \
                 so that a token's role claim cannot reach more than PostgREST would allow"
            );
        }
        drop(client);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: config.listen,
            source,
        })?;
        let limits = server::ServerLimits {
            // Descriptors for the pool, the listener and logs stay free.
            max_connections: server::clamp_to_fd_limit(
                config.max_connections,
                config.pool_size + 64,
            ),
            header_timeout: config.header_timeout,
            // A refused body is drained (never stored) for at most
            // LINGER_TIME and this many bytes after the answer went out.
            linger_bytes: config.max_body_bytes.saturating_mul(32),
        };
        let admission = limits::Admission::new(config.max_requests, config.body_budget_bytes);
        let hub = realtime::RealtimeHub::new(config.clone(), pool.clone());
        let state = Arc::new(AppState {
            config,
            pool,
            admission,
        });
        Ok(Self {
            listener,
            local_addr,
            router: router(state, hub.clone()),
            limits,
            realtime: hub,
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL clients use (`http://<addr>`); the RPC endpoints are under
    /// `<url>/rest/v1/rpc/`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    ///
    /// # Errors
    /// [`GatewayError::Serve`] when the server fails.
    pub async fn serve<F>(self, shutdown: F) -> Result<(), GatewayError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tracing::info!(addr = %self.local_addr, "supamerge gateway listening (development stand-in for Supabase)");
        let feed = tokio::spawn(realtime::listen(self.realtime.clone()));
        let hub = self.realtime.clone();
        let shutdown = async move {
            shutdown.await;
            // Websockets are not requests in flight: close them now.
            hub.close();
        };
        let result = server::serve(self.listener, self.router, self.limits, shutdown)
            .await
            .map_err(|source| GatewayError::Serve { source });
        self.realtime.close();
        let _ = feed.await;
        result
    }

    /// Serves on a tokio task; the handle stops it.
    pub fn spawn(self) -> GatewayHandle {
        let (tx, rx) = oneshot::channel::<()>();
        let local_addr = self.local_addr;
        let task = tokio::spawn(self.serve(async move {
            // A dropped sender also stops the server.
            let _ = rx.await;
        }));
        GatewayHandle {
            local_addr,
            stop: Some(tx),
            task: Some(task),
        }
    }
}

/// A gateway running on a tokio task. Dropping the handle stops it too.
#[derive(Debug)]
pub struct GatewayHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), GatewayError>>>,
}

impl GatewayHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL (`http://<addr>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting requests and waits for the server to finish.
    ///
    /// # Errors
    /// The server's own failure, or [`GatewayError::Task`].
    pub async fn shutdown(mut self) -> Result<(), GatewayError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| GatewayError::Task {
                reason: e.to_string(),
            })?,
            None => Ok(()),
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds and serves until `shutdown` completes.
///
/// # Errors
/// See [`Gateway::bind`] and [`Gateway::serve`].
pub async fn serve<F>(config: GatewayConfig, shutdown: F) -> Result<(), GatewayError>
where
    F: Future<Output = ()> + Send + 'static,
{
    Gateway::bind(config).await?.serve(shutdown).await
}

fn router(state: Arc<AppState>, hub: Arc<realtime::RealtimeHub>) -> Router {
    let live = Router::new()
        .route(
            "/realtime/v1/websocket",
            axum::routing::get(realtime::websocket),
        )
        .with_state(hub);
    Router::new()
        .route(
            "/rest/v1/rpc/:function",
            post(rpc_handler)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/rpc/:function",
            post(rpc_handler)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/auth/v1/token",
            post(token_endpoint::token_handler)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .fallback(not_found)
        .layer(axum::middleware::map_response(cors_headers))
        .with_state(state)
        .merge(live)
}

const ALLOWED_HEADERS: &str =
    "authorization, apikey, content-type, content-profile, accept-profile, prefer, x-client-info, range";

async fn cors_headers(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

async fn preflight(headers: HeaderMap) -> Response {
    let allow_headers = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(ALLOWED_HEADERS));
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}

async fn method_not_allowed(method: Method) -> Response {
    refused_unread(ApiError::new(
        405,
        "PGRST117",
        format!(
            "Unsupported HTTP method: {method}; this gateway serves POST /rest/v1/rpc/<function>"
        ),
    ))
}

async fn not_found() -> Response {
    refused_unread(ApiError::new(
        404,
        "PGRST125",
        "Invalid path specified in request URL; this gateway serves POST /rest/v1/rpc/<function> only",
    ))
}

async fn rpc_handler(
    State(state): State<Arc<AppState>>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Refused from the headers: the body is never read, so the connection
    // cannot carry another request; tell the client (else it may reuse it
    // and lose its next request to the close).
    let (caller, admitted, declared) = match admit(&state, &headers) {
        Ok(a) => a,
        Err(e) => return refused_unread(e),
    };
    let result = async {
        let limit = state.config.max_body_bytes;
        let bytes = limits::read_body(body, limit, declared, state.config.body_timeout).await?;
        let path = format!("/rpc/{function}");
        rpc::call(&state.pool, &caller, &function, &bytes, &path).await
    }
    .await;
    drop(admitted);
    match result {
        Ok(Some(json)) => {
            let mut resp = (StatusCode::OK, json).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            resp
        }
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::debug!(%function, status = e.status, code = %e.code, message = %e.message, "rpc failed");
            if matches!(e.status, 408 | 413) {
                // The body was not read to its end.
                refused_unread(e)
            } else {
                e.into_response()
            }
        }
    }
}

/// An answer to a request whose body was not (entirely) read: with
/// `Connection: close`, and the connection lingers (see the `server` module)
/// so that the client reads it.
fn refused_unread(e: ApiError) -> Response {
    tracing::debug!(status = e.status, code = %e.code, message = %e.message, "request refused");
    let mut resp = e.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Everything that can refuse a request from its headers, before the first
/// body byte is read (see the `limits` module): the caller, the admission
/// (request slot and body bytes) and the declared body length.
fn admit(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Caller, limits::Admitted, Option<u64>), ApiError> {
    let caller = auth::authenticate(headers, &state.config)?;
    if let Some(profile) = headers.get("content-profile").and_then(|v| v.to_str().ok()) {
        if profile != rpc::EXPOSED_SCHEMA {
            return Err(ApiError::new(
                406,
                "PGRST106",
                format!(
                    "The schema must be one of the following: {}",
                    rpc::EXPOSED_SCHEMA
                ),
            ));
        }
    }
    limits::check_content_type(headers)?;
    let limit = state.config.max_body_bytes;
    let declared = limits::declared_length(headers);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(limits::too_large(declared, limit));
    }
    let reserve = declared
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(limit);
    let admitted = state.admission.admit(reserve, caller.role == "anon")?;
    Ok((caller, admitted, declared))
}
