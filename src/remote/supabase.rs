//! [`SupabaseRemote`]: the [`Remote`] of a Supabase project (or of the local
//! gateway), over PostgREST RPC with reqwest.
//!
//! Each trait call is one `POST {base}/rest/v1/rpc/supamerge_*` with the
//! `apikey` header and the app's access token as `Authorization: Bearer`.
//! The JSON bodies and answers are the wire types of
//! [`crate::protocol::wire`] (see `supabase/migrations/` for the SQL side).
//!
//! Error classification (drives the engine's retries):
//! - no answer: connect errors → [`RemoteError::Unavailable`], timeouts →
//!   [`RemoteError::Timeout`];
//! - 5xx (including 503 and PGRST003) and 408 → [`RemoteError::Server`]
//!   (retryable);
//! - 401 → one token refresh and retry when the message says the JWT
//!   expired, else [`RemoteError::Unauthenticated`];
//! - 403 → [`RemoteError::Forbidden`]; 413, or SQLSTATE 57014 (statement
//!   timeout) → [`RemoteError::TooLarge`] (the engine splits the batch);
//! - other 4xx → [`RemoteError::BadRequest`] with the PostgREST code;
//! - whatever the status, the hints the migration puts on the answers a
//!   client acts on: `supamerge:not_a_member` → [`RemoteError::NotAMember`],
//!   `supamerge:last_owner` → [`RemoteError::LastOwner`],
//!   `supamerge:invalid_invitation` → [`RemoteError::InvalidInvitation`],
//!   `supamerge:cursor_pruned` (PT410, HTTP 410) → [`RemoteError::CursorPruned`].
//!
//! Request bodies above the configured maximum (1 MiB by default) are
//! refused locally with [`RemoteError::TooLarge`] before anything is sent.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::realtime::RealtimeClient;
use super::workspaces::MemberRole;
use super::{Remote, RemoteError};
use crate::id::WorkspaceId;
use crate::protocol::wire::{
    PullPage, PullRequest, PushRequest, PushResponse, SnapshotOutcome, SnapshotPage, SnapshotQuery,
    SnapshotUpload, MAX_PULL_LIMIT, WIRE_VERSION,
};

/// The default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// The default timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of an [`AccessTokenProvider`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token can be had right now (Supabase Auth unreachable or
    /// failing, no session).
    #[error("no access token available: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// Supabase Auth refused the refresh token (unknown, expired, already
    /// used) or the rotated session could not be stored: sign in again.
    #[error("the session cannot be refreshed: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
}

/// Where [`SupabaseRemote`] gets user access tokens: the app, from Supabase
/// Auth (or a fixed token / service key).
#[async_trait]
pub trait AccessTokenProvider: Send + Sync {
    /// The token to send now; `None` sends the anon key only.
    ///
    /// # Errors
    /// [`TokenError`] when no token can be had; the call fails with
    /// [`RemoteError::Unauthenticated`].
    async fn access_token(&self) -> Result<Option<String>, TokenError>;

    /// Called once when the server said `expired` has expired: return a
    /// fresh token (refresh the session).
    ///
    /// # Errors
    /// [`TokenError`] when the session cannot be refreshed.
    async fn refresh(&self, expired: Option<&str>) -> Result<Option<String>, TokenError>;
}

/// A fixed token (a long-lived test token or a service key); refreshing
/// returns the same token.
#[derive(Clone)]
pub struct StaticToken(Option<String>);

impl StaticToken {
    /// A fixed bearer token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Some(token.into()))
    }

    /// No token: requests carry the anon key only.
    pub fn none() -> Self {
        Self(None)
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

#[async_trait]
impl AccessTokenProvider for StaticToken {
    async fn access_token(&self) -> Result<Option<String>, TokenError> {
        Ok(self.0.clone())
    }

    async fn refresh(&self, _expired: Option<&str>) -> Result<Option<String>, TokenError> {
        Ok(self.0.clone())
    }
}

/// Errors building a [`SupabaseRemote`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupabaseConfigError {
    /// The base URL is not an http(s) URL.
    #[error("invalid Supabase URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The anon key is empty or not a valid header value.
    #[error("invalid anon key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// reqwest could not build its client (TLS backend).
    #[error("cannot build the HTTP client: {source}")]
    Client {
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
}

/// Builder of a [`SupabaseRemote`].
pub struct SupabaseRemoteBuilder {
    base_url: String,
    anon_key: String,
    tokens: Arc<dyn AccessTokenProvider>,
    timeout: Duration,
    connect_timeout: Duration,
    max_body_bytes: usize,
}

impl fmt::Debug for SupabaseRemoteBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupabaseRemoteBuilder")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl SupabaseRemoteBuilder {
    /// Uses this provider for access tokens (default: none, anon key only).
    pub fn with_token_provider(mut self, tokens: Arc<dyn AccessTokenProvider>) -> Self {
        self.tokens = tokens;
        self
    }

    /// Sends this fixed access token (or service key).
    pub fn with_access_token(self, token: impl Into<String>) -> Self {
        self.with_token_provider(Arc::new(StaticToken::new(token)))
    }

    /// Timeout of one request (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connect timeout (default 10 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Largest request body sent (default 1 MiB); larger requests fail with
    /// [`RemoteError::TooLarge`] without being sent.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Builds the remote.
    ///
    /// # Errors
    /// [`SupabaseConfigError`] for a bad URL or key, or when the HTTP client
    /// cannot be built.
    pub fn build(self) -> Result<SupabaseRemote, SupabaseConfigError> {
        let trimmed = self.base_url.trim().trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/rest/v1").unwrap_or(trimmed);
        let url = reqwest::Url::parse(trimmed).map_err(|e| SupabaseConfigError::InvalidUrl {
            url: self.base_url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SupabaseConfigError::InvalidUrl {
                url: self.base_url,
                reason: "expected an http:// or https:// URL".into(),
            });
        }
        if self.anon_key.is_empty() {
            return Err(SupabaseConfigError::InvalidKey {
                reason: "the anon key is empty",
            });
        }
        if reqwest::header::HeaderValue::from_str(&self.anon_key).is_err() {
            return Err(SupabaseConfigError::InvalidKey {
                reason: "the anon key contains characters not allowed in a header",
            });
        }
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .gzip(true)
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("supamerge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| SupabaseConfigError::Client { source })?;
        let realtime = RealtimeClient::builder(trimmed, &self.anon_key)
            .with_token_provider(self.tokens.clone())
            .build()?;
        Ok(SupabaseRemote {
            inner: Arc::new(Inner {
                rpc_base: format!("{trimmed}/rest/v1/rpc/"),
                realtime,
                anon_key: self.anon_key,
                tokens: self.tokens,
                http,
                timeout: self.timeout,
                max_body_bytes: self.max_body_bytes,
            }),
        })
    }
}

/// A [`Remote`] backed by a Supabase project (or the local gateway). Cheap to
/// clone.
#[derive(Clone)]
pub struct SupabaseRemote {
    inner: Arc<Inner>,
}

struct Inner {
    /// `{base}/rest/v1/rpc/`.
    rpc_base: String,
    /// Sent as `apikey` on every request.
    anon_key: String,
    /// The app's access tokens.
    tokens: Arc<dyn AccessTokenProvider>,
    /// reqwest client (rustls, gzip, timeouts).
    http: reqwest::Client,
    /// The request timeout, for error messages.
    timeout: Duration,
    /// Bodies above this are refused locally.
    max_body_bytes: usize,
    /// Live updates over Supabase Realtime (one websocket, opened by the
    /// first subscription).
    realtime: RealtimeClient,
}

impl fmt::Debug for SupabaseRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupabaseRemote")
            .field("rpc_base", &self.inner.rpc_base)
            .field("max_body_bytes", &self.inner.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// PostgREST's error body.
#[derive(Debug, Default, Deserialize)]
struct PgrstError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    hint: Option<String>,
}

/// The hint of "no longer a member of workspace W" (SQLSTATE 42501).
const HINT_NOT_A_MEMBER: &str = "supamerge:not_a_member";
/// The hint of "a workspace needs at least one owner".
const HINT_LAST_OWNER: &str = "supamerge:last_owner";
/// The hint of a log pull whose cursor is behind the workspace's horizon
/// (SQLSTATE PT410; the details carry the horizon).
const HINT_CURSOR_PRUNED: &str = "supamerge:cursor_pruned";
/// The hint of every unusable invitation code.
const HINT_INVALID_INVITATION: &str = "supamerge:invalid_invitation";

/// Classifies an HTTP error answer (pure: unit-tested without a server).
fn classify(status: u16, body: &str) -> RemoteError {
    let parsed: PgrstError = serde_json::from_str(body).unwrap_or_default();
    let code = parsed.code.clone().unwrap_or_default();
    if parsed.hint.as_deref() == Some(HINT_CURSOR_PRUNED) {
        return RemoteError::CursorPruned {
            horizon: parsed.details.clone().unwrap_or_default(),
            message: parsed.message.clone().unwrap_or_default(),
        };
    }
    let mut message = parsed
        .message
        .clone()
        .unwrap_or_else(|| body.chars().take(300).collect());
    if let Some(d) = parsed.details.as_deref().filter(|d| !d.is_empty()) {
        message = format!("{message} ({d})");
    }
    // The migration marks the answers a client acts on with a hint.
    match parsed.hint.as_deref() {
        Some(HINT_NOT_A_MEMBER) => return RemoteError::NotAMember { message },
        Some(HINT_LAST_OWNER) => return RemoteError::LastOwner { message },
        Some(HINT_INVALID_INVITATION) => return RemoteError::InvalidInvitation { message },
        _ => {}
    }
    if let Some(h) = parsed.hint.as_deref().filter(|h| !h.is_empty()) {
        message = format!("{message}; hint: {h}");
    }
    if status == 413 || code == "PT413" || code == "57014" {
        return RemoteError::TooLarge { message };
    }
    match status {
        401 => RemoteError::Unauthenticated { message },
        403 => RemoteError::Forbidden { message },
        // 408: the server gave up waiting for the request body (a slow or
        // stalled upload): worth retrying, like a 5xx.
        s if s >= 500 || s == 408 => RemoteError::Server { status: s, message },
        s => RemoteError::BadRequest {
            code: if code.is_empty() { s.to_string() } else { code },
            message,
        },
    }
}

fn says_expired(body: &str) -> bool {
    let parsed: PgrstError = serde_json::from_str(body).unwrap_or_default();
    let text = parsed.message.unwrap_or_else(|| body.to_owned());
    text.to_ascii_lowercase().contains("expired")
}

impl SupabaseRemote {
    /// Starts building a remote for the project at `base_url`
    /// (`https://<ref>.supabase.co`, or the gateway's `http://127.0.0.1:54321`)
    /// with its anon (publishable) key.
    pub fn builder(
        base_url: impl Into<String>,
        anon_key: impl Into<String>,
    ) -> SupabaseRemoteBuilder {
        SupabaseRemoteBuilder {
            base_url: base_url.into(),
            anon_key: anon_key.into(),
            tokens: Arc::new(StaticToken::none()),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Live updates of this project: nudges when a workspace's log grows,
    /// and presence, over Supabase Realtime with this remote's URL, key and
    /// tokens (`docs/realtime.md`). Every call returns the same client; its
    /// websocket opens with the first subscription.
    pub fn realtime(&self) -> RealtimeClient {
        self.inner.realtime.clone()
    }

    /// Calls an RPC function with a JSON object of named arguments and parses
    /// the answer.
    ///
    /// # Errors
    /// Classified [`RemoteError`]s (see the module docs); an answer that does
    /// not parse as `T` is [`RemoteError::Protocol`].
    pub async fn rpc<T: DeserializeOwned>(
        &self,
        function: &str,
        args: &Value,
    ) -> Result<T, RemoteError> {
        let body = serde_json::to_vec(args).map_err(|e| RemoteError::Protocol {
            reason: format!("cannot encode the {function} arguments: {e}"),
        })?;
        if body.len() > self.inner.max_body_bytes {
            return Err(RemoteError::TooLarge {
                message: format!(
                    "{function} request of {} bytes exceeds the client limit of {} bytes",
                    body.len(),
                    self.inner.max_body_bytes
                ),
            });
        }
        let url = format!("{}{function}", self.inner.rpc_base);
        let token = self.token(None).await?;
        let (status, text) = self.send(&url, &body, token.as_deref()).await?;
        let (status, text) = if status == 401 && says_expired(&text) {
            tracing::debug!(%function, "access token expired; refreshing once");
            let fresh = self.token(Some(token.as_deref())).await?;
            self.send(&url, &body, fresh.as_deref()).await?
        } else {
            (status, text)
        };
        if !(200..300).contains(&status) {
            return Err(classify(status, &text));
        }
        serde_json::from_str(&text).map_err(|e| RemoteError::Protocol {
            reason: format!("unexpected {function} answer: {e}"),
        })
    }

    async fn token(&self, refresh_of: Option<Option<&str>>) -> Result<Option<String>, RemoteError> {
        let r = match refresh_of {
            None => self.inner.tokens.access_token().await,
            Some(expired) => self.inner.tokens.refresh(expired).await,
        };
        r.map_err(|e| RemoteError::Unauthenticated {
            message: e.to_string(),
        })
    }

    async fn send(
        &self,
        url: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<(u16, String), RemoteError> {
        let mut req = self
            .inner
            .http
            .post(url)
            .header("apikey", &self.inner.anon_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.to_vec());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| self.transport_error(&e))?;
        Ok((status, text))
    }

    fn transport_error(&self, e: &reqwest::Error) -> RemoteError {
        if e.is_timeout() {
            RemoteError::Timeout {
                after_ms: u64::try_from(self.inner.timeout.as_millis()).unwrap_or(u64::MAX),
            }
        } else {
            RemoteError::Unavailable {
                reason: format!("{e}: {}", error_chain(e)),
            }
        }
    }

    /// Creates a workspace named `name`; the server picks its id and the
    /// signed-in user becomes its owner. Returns the new workspace's id.
    ///
    /// The call carries a random idempotency key and is retried once with the
    /// same key when its answer is lost or the server fails (a retry returns
    /// the workspace the first attempt created, never a second one); use
    /// [`SupabaseRemote::create_workspace_with_key`] to retry across restarts.
    ///
    /// # Errors
    /// [`RemoteError::BadRequest`] for an empty or too long name (1 to 200
    /// characters); other classified errors.
    pub async fn create_workspace(&self, name: &str) -> Result<WorkspaceId, RemoteError> {
        let key = uuid::Uuid::new_v4();
        match self.create_workspace_with_key(name, key).await {
            Err(e) if e.is_retryable() => self.create_workspace_with_key(name, key).await,
            other => other,
        }
    }

    /// [`SupabaseRemote::create_workspace`] with the caller's idempotency
    /// key: the same key (from the same user) always returns the same
    /// workspace. Keys are per user: another user's key creates their own.
    ///
    /// # Errors
    /// As [`SupabaseRemote::create_workspace`].
    pub async fn create_workspace_with_key(
        &self,
        name: &str,
        key: uuid::Uuid,
    ) -> Result<WorkspaceId, RemoteError> {
        #[derive(Deserialize)]
        struct Created {
            workspace_id: WorkspaceId,
        }
        let r: Created = self
            .rpc(
                "supamerge_create_workspace",
                &json!({"p_name": name, "p_request": key}),
            )
            .await?;
        Ok(r.workspace_id)
    }

    /// Adds a member (or changes their role). Owners only. (Also
    /// [`WorkspaceAdmin::add_member`](super::WorkspaceAdmin::add_member).)
    ///
    /// # Errors
    /// [`RemoteError::Forbidden`] for non-owners; [`RemoteError::LastOwner`]
    /// when it would demote the last owner; other classified errors.
    pub async fn add_member(
        &self,
        workspace: WorkspaceId,
        user: uuid::Uuid,
        role: MemberRole,
    ) -> Result<(), RemoteError> {
        let _: Value = self
            .rpc(
                "supamerge_add_member",
                &json!({"p_workspace": workspace, "p_user": user, "p_role": role.as_str()}),
            )
            .await?;
        Ok(())
    }

    /// The signed-in user leaves a workspace.
    ///
    /// # Errors
    /// [`RemoteError::Forbidden`] when not a member; [`RemoteError::LastOwner`]
    /// for the last owner of a shared workspace.
    pub async fn leave_workspace(&self, workspace: WorkspaceId) -> Result<(), RemoteError> {
        let _: Value = self
            .rpc(
                "supamerge_leave_workspace",
                &json!({"p_workspace": workspace}),
            )
            .await?;
        Ok(())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

fn check_version(v: u32, what: &str) -> Result<(), RemoteError> {
    if v == WIRE_VERSION {
        Ok(())
    } else {
        Err(RemoteError::Protocol {
            reason: format!("the server answered {what} with protocol version {v}, this build speaks {WIRE_VERSION}"),
        })
    }
}

#[async_trait]
impl Remote for SupabaseRemote {
    fn live_updates(&self) -> Option<Arc<dyn super::live::LiveUpdates>> {
        Some(Arc::new(self.realtime()))
    }

    async fn push(&self, req: PushRequest) -> Result<PushResponse, RemoteError> {
        let n = req.changes.len();
        let resp: PushResponse = self
            .rpc(
                "supamerge_push",
                &json!({"p_workspace": req.workspace, "p_changes": req.changes}),
            )
            .await?;
        check_version(resp.v, "push")?;
        if resp.results.len() != n {
            return Err(RemoteError::Protocol {
                reason: format!("{} push outcomes for {n} changes", resp.results.len()),
            });
        }
        Ok(resp)
    }

    async fn pull(&self, req: PullRequest) -> Result<PullPage, RemoteError> {
        let page: PullPage = self
            .rpc(
                "supamerge_pull",
                &json!({
                    "p_workspace": req.workspace,
                    "p_cursor": req.cursor,
                    "p_limit": req.limit.clamp(1, MAX_PULL_LIMIT),
                    "p_skip_snapshotted": req.skip_snapshotted,
                }),
            )
            .await?;
        check_version(page.v, "pull")?;
        Ok(page)
    }

    async fn put_snapshot(&self, snap: SnapshotUpload) -> Result<SnapshotOutcome, RemoteError> {
        #[derive(Deserialize)]
        struct Answer {
            status: SnapshotOutcome,
        }
        let bytes = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(&snap.bytes)
        };
        let a: Answer = self
            .rpc(
                "supamerge_put_snapshot",
                &json!({
                    "p_workspace": snap.workspace,
                    "p_doc_id": snap.doc_id,
                    "p_collection": snap.collection,
                    "p_heads": snap.heads,
                    "p_covers": snap.covers,
                    "p_bytes": bytes,
                }),
            )
            .await?;
        Ok(a.status)
    }

    async fn get_snapshots(&self, query: SnapshotQuery) -> Result<SnapshotPage, RemoteError> {
        let page: SnapshotPage = self
            .rpc(
                "supamerge_get_snapshots",
                &json!({
                    "p_workspace": query.workspace,
                    "p_after": query.after,
                    "p_limit": query.limit.clamp(1, 1000),
                    "p_version": query.v,
                }),
            )
            .await?;
        if page.v != query.v {
            return Err(RemoteError::Protocol {
                reason: format!(
                    "asked for snapshot pages of version {}, the server answered version {}",
                    query.v, page.v
                ),
            });
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let e = |s, b: &str| classify(s, b);
        assert!(matches!(
            e(401, r#"{"code":"PGRST303","message":"JWT expired"}"#),
            RemoteError::Unauthenticated { .. }
        ));
        assert!(matches!(
            e(403, r#"{"code":"42501","message":"x"}"#),
            RemoteError::Forbidden { .. }
        ));
        assert!(matches!(e(413, "too big"), RemoteError::TooLarge { .. }));
        assert!(matches!(
            e(
                500,
                r#"{"code":"57014","message":"canceling statement due to statement timeout"}"#
            ),
            RemoteError::TooLarge { .. }
        ));
        let s = e(503, "<html>bad gateway</html>");
        assert!(matches!(s, RemoteError::Server { status: 503, .. }));
        assert!(s.is_retryable());
        assert!(e(504, r#"{"code":"PGRST003","message":"Timed out"}"#).is_retryable());
        assert!(e(503, r#"{"code":"PGRST_BUSY","message":"too many"}"#).is_retryable());
        assert!(e(408, r#"{"code":"PGRST_BODY_TIMEOUT","message":"slow"}"#).is_retryable());
        match e(
            400,
            r#"{"code":"22P02","message":"invalid input syntax for type uuid","details":null,"hint":null}"#,
        ) {
            RemoteError::BadRequest { code, .. } => assert_eq!(code, "22P02"),
            other => panic!("{other:?}"),
        }
        match e(
            410,
            r#"{"code":"PT410","message":"cursor 1 is behind the horizon 7","details":"7","hint":"supamerge:cursor_pruned"}"#,
        ) {
            RemoteError::CursorPruned { horizon, message } => {
                assert_eq!(horizon, "7");
                assert!(message.contains("behind the horizon"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(says_expired(
            r#"{"code":"PGRST303","message":"JWT expired"}"#
        ));
        assert!(!says_expired(
            r#"{"code":"PGRST301","message":"JWSError JWSInvalidSignature"}"#
        ));
    }

    #[test]
    fn builder_checks() {
        assert!(SupabaseRemote::builder("ftp://x", "k").build().is_err());
        assert!(SupabaseRemote::builder("http://x", "").build().is_err());
        let r = SupabaseRemote::builder("https://abc.supabase.co/rest/v1/", "k")
            .build()
            .unwrap();
        assert_eq!(r.inner.rpc_base, "https://abc.supabase.co/rest/v1/rpc/");
    }
}
