//! Gateway settings: the [`GatewayConfig`] builder and the CLI's [`GatewayArgs`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::GatewayError;

/// The address the gateway listens on by default (the Supabase CLI's API port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:54321";

/// The default request body limit: 2 MiB. A push the client bounds to 1 MiB
/// of JSON (768 KiB of change bytes, base64-encoded) always fits; the SQL
/// functions bound batches on their own (1000 changes, 1 MiB of bytes).
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The default number of PostgreSQL connections.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// The shortest JWT secret accepted (PostgREST's rule).
pub const MIN_JWT_SECRET_LEN: usize = 32;

/// The default cap on open client connections. Past it a new connection
/// closes the connection that has been idle longest (waiting for its request
/// head, or between requests); when none is idle it is answered 503. Kept
/// below the process's open-file limit (see [`Gateway::bind`]).
///
/// [`Gateway::bind`]: super::Gateway::bind
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The default number of requests handled at once (past it: 503 with
/// `Retry-After`).
pub const DEFAULT_MAX_REQUESTS: usize = 64;

/// The default budget of request-body bytes held at once: 16 MiB, i.e. 8
/// bodies of the 2 MiB limit (16 of the 1 MiB that `SupabaseRemote` sends
/// at most). A request reserves its declared length (the limit when it
/// declares none) before its body is read; past the budget it is answered
/// 503 with `Retry-After` without reading the body. Requests without a user
/// token (anon) may hold a quarter of it.
pub const DEFAULT_BODY_BUDGET_BYTES: usize = 16 * 1024 * 1024;

/// The default time a connection may take to send a request head (and the
/// longest a connection may stay idle between requests).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time a request may take to send its body (past it: 408).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the gateway needs to run. Build with [`GatewayConfig::new`] and the
/// `with_*` setters.
#[derive(Clone)]
pub struct GatewayConfig {
    /// PostgreSQL URL to log in with: the `authenticator` role, as PostgREST.
    pub(crate) database_url: String,
    /// HS256 secret user access tokens are signed with.
    pub(crate) jwt_secret: String,
    /// The anon key every request must present in `apikey`.
    pub(crate) anon_key: String,
    /// The optional service key (`apikey` and bearer) that maps to `service_role`.
    pub(crate) service_key: Option<String>,
    /// Where to listen.
    pub(crate) listen: SocketAddr,
    /// Request bodies above this many bytes get 413.
    pub(crate) max_body_bytes: usize,
    /// PostgreSQL connections in the pool (= concurrent requests).
    pub(crate) pool_size: usize,
    /// How long a request waits for a free connection before PGRST003.
    pub(crate) pool_timeout: Duration,
    /// The audience user tokens must name in `aud` (when they have one), as
    /// PostgREST's `jwt-aud`.
    pub(crate) jwt_aud: Option<String>,
    /// Open client connections at most (see [`DEFAULT_MAX_CONNECTIONS`]).
    pub(crate) max_connections: usize,
    /// Requests handled at once at most.
    pub(crate) max_requests: usize,
    /// Request-body bytes held at once at most (anon: a quarter).
    pub(crate) body_budget_bytes: usize,
    /// Time to send a request head; also the keep-alive idle limit.
    pub(crate) header_timeout: Duration,
    /// Time to send a request body.
    pub(crate) body_timeout: Duration,
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("jwt_secret", &"<redacted>")
            .field("anon_key", &"<redacted>")
            .field(
                "service_key",
                &self.service_key.as_ref().map(|_| "<redacted>"),
            )
            .field("listen", &self.listen)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("pool_size", &self.pool_size)
            .field("pool_timeout", &self.pool_timeout)
            .field("jwt_aud", &self.jwt_aud)
            .field("max_connections", &self.max_connections)
            .field("max_requests", &self.max_requests)
            .field("body_budget_bytes", &self.body_budget_bytes)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .finish()
    }
}

/// A URL with its password replaced, for logs and errors.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            // set_password only fails for URLs that cannot have one.
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable database url>".to_owned(),
    }
}

impl GatewayConfig {
    /// A configuration with the three required settings; everything else has
    /// its default (listen on [`DEFAULT_LISTEN`], [`DEFAULT_MAX_BODY_BYTES`],
    /// [`DEFAULT_POOL_SIZE`] connections, no service key).
    pub fn new(
        database_url: impl Into<String>,
        jwt_secret: impl Into<String>,
        anon_key: impl Into<String>,
    ) -> Self {
        Self {
            database_url: database_url.into(),
            jwt_secret: jwt_secret.into(),
            anon_key: anon_key.into(),
            service_key: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 54321)),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            pool_size: DEFAULT_POOL_SIZE,
            pool_timeout: Duration::from_secs(10),
            jwt_aud: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_requests: DEFAULT_MAX_REQUESTS,
            body_budget_bytes: DEFAULT_BODY_BUDGET_BYTES,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }

    /// Replaces the database URL.
    pub fn with_database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = url.into();
        self
    }

    /// Replaces the JWT secret.
    pub fn with_jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.jwt_secret = secret.into();
        self
    }

    /// Replaces the anon key.
    pub fn with_anon_key(mut self, key: impl Into<String>) -> Self {
        self.anon_key = key.into();
        self
    }

    /// Accepts a service key: as `apikey` (and bearer) it runs requests as
    /// `service_role`, which bypasses RLS.
    pub fn with_service_key(mut self, key: impl Into<String>) -> Self {
        self.service_key = Some(key.into());
        self
    }

    /// Where to listen (port 0 picks a free port; see
    /// [`Gateway::local_addr`](super::Gateway::local_addr)).
    pub fn with_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The request body limit in bytes.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// The number of PostgreSQL connections.
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long a request waits for a connection before failing with PGRST003.
    pub fn with_pool_timeout(mut self, timeout: Duration) -> Self {
        self.pool_timeout = timeout;
        self
    }

    /// Requires user tokens that carry an `aud` claim to name this audience
    /// (a string equal to it, or an array containing it); tokens without
    /// `aud` pass, as with PostgREST's `jwt-aud`. Supabase Auth issues
    /// `aud: "authenticated"`.
    pub fn with_jwt_aud(mut self, audience: impl Into<String>) -> Self {
        self.jwt_aud = Some(audience.into());
        self
    }

    /// Open client connections at most (see [`DEFAULT_MAX_CONNECTIONS`]).
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Requests handled at once at most (see [`DEFAULT_MAX_REQUESTS`]).
    pub fn with_max_requests(mut self, n: usize) -> Self {
        self.max_requests = n;
        self
    }

    /// Request-body bytes held at once at most (see
    /// [`DEFAULT_BODY_BUDGET_BYTES`]).
    pub fn with_body_budget_bytes(mut self, bytes: usize) -> Self {
        self.body_budget_bytes = bytes;
        self
    }

    /// Time a connection may take to send a request head, and may stay idle
    /// between requests (see [`DEFAULT_HEADER_TIMEOUT`]).
    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Time a request may take to send its body (see [`DEFAULT_BODY_TIMEOUT`]).
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// The address to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`GatewayError::Config`] naming the setting that is wrong.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let bad = |setting: &'static str, reason: String| GatewayError::Config { setting, reason };
        if self.jwt_secret.len() < MIN_JWT_SECRET_LEN {
            return Err(bad(
                "jwt_secret",
                format!("must be at least {MIN_JWT_SECRET_LEN} characters long"),
            ));
        }
        if self.anon_key.is_empty() {
            return Err(bad("anon_key", "must not be empty".into()));
        }
        if self.service_key.as_deref() == Some(self.anon_key.as_str()) {
            return Err(bad("service_key", "must differ from the anon key".into()));
        }
        if self.max_body_bytes == 0 {
            return Err(bad("max_body_bytes", "must be positive".into()));
        }
        if self.pool_size == 0 {
            return Err(bad("pool_size", "must be positive".into()));
        }
        for (setting, n) in [
            ("max_connections", self.max_connections),
            ("max_requests", self.max_requests),
        ] {
            if n == 0 {
                return Err(bad(setting, "must be positive".into()));
            }
        }
        if self.body_budget_bytes < self.max_body_bytes {
            return Err(bad(
                "body_budget_bytes",
                format!(
                    "must be at least max_body_bytes ({}) so that one largest body fits",
                    self.max_body_bytes
                ),
            ));
        }
        if self.header_timeout.is_zero() || self.body_timeout.is_zero() {
            return Err(bad("timeouts", "must be positive".into()));
        }
        if self.jwt_aud.as_deref() == Some("") {
            return Err(bad("jwt_aud", "must not be empty".into()));
        }
        Ok(())
    }
}

/// Serve a DEVELOPMENT STAND-IN for Supabase's API gateway: the PostgREST RPC
/// subset supamerge uses (`POST /rest/v1/rpc/<function>`), over a real
/// PostgreSQL that has the supamerge migration (and, on plain PostgreSQL,
/// `supabase/local/supabase_standin.sql`).
///
/// It checks the `apikey` header, verifies HS256 user JWTs, switches to the
/// token's role and runs each call in one transaction with the claims set, and
/// answers with PostgREST's error JSON and status codes, so the official
/// Supabase clients work against it. It is not Supabase: no Auth server, no
/// table endpoints, no Realtime, no rate limits. Do not expose it to the
/// internet; deploy the migration to a Supabase project for production.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// PostgreSQL URL to log in with; use the `authenticator` role as PostgREST
    /// does, e.g. postgres://authenticator:PASSWORD@127.0.0.1:5432/postgres.
    #[arg(long, env = "SUPAMERGE_DATABASE_URL")]
    pub database_url: String,
    /// The HS256 secret user access tokens are signed with (at least 32 characters).
    #[arg(long, env = "SUPAMERGE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// The anon key clients must send in the `apikey` header.
    #[arg(long, env = "SUPAMERGE_ANON_KEY", hide_env_values = true)]
    pub anon_key: String,
    /// An optional service key: requests presenting it run as `service_role`
    /// (bypasses row-level security).
    #[arg(long, env = "SUPAMERGE_SERVICE_KEY", hide_env_values = true)]
    pub service_key: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Request body limit in bytes (larger bodies get HTTP 413).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// PostgreSQL connections in the pool.
    #[arg(long, default_value_t = DEFAULT_POOL_SIZE)]
    pub pool_size: usize,
    /// Require user tokens that have an `aud` claim to name this audience (as
    /// PostgREST's jwt-aud; Supabase Auth issues "authenticated").
    #[arg(long, env = "SUPAMERGE_JWT_AUD", value_name = "AUDIENCE")]
    pub jwt_aud: Option<String>,
    /// Open client connections at most; past it the longest-idle connection
    /// is closed (503 when none is idle).
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Requests handled at once at most (503 with Retry-After past it).
    #[arg(long, default_value_t = DEFAULT_MAX_REQUESTS)]
    pub max_requests: usize,
    /// Request-body bytes held at once at most (503 with Retry-After past it;
    /// requests without a user token may hold a quarter).
    #[arg(long, default_value_t = DEFAULT_BODY_BUDGET_BYTES)]
    pub body_budget_bytes: usize,
    /// Seconds a connection may take to send a request head (also the
    /// keep-alive idle limit).
    #[arg(long, default_value_t = DEFAULT_HEADER_TIMEOUT.as_secs(), value_name = "SECS")]
    pub header_timeout_secs: u64,
    /// Seconds a request may take to send its body (408 past it).
    #[arg(long, default_value_t = DEFAULT_BODY_TIMEOUT.as_secs(), value_name = "SECS")]
    pub body_timeout_secs: u64,
}

impl GatewayArgs {
    /// The configuration these arguments describe.
    pub fn into_config(self) -> GatewayConfig {
        let mut c = GatewayConfig::new(self.database_url, self.jwt_secret, self.anon_key)
            .with_listen(self.listen)
            .with_max_body_bytes(self.max_body_bytes)
            .with_pool_size(self.pool_size)
            .with_max_connections(self.max_connections)
            .with_max_requests(self.max_requests)
            .with_body_budget_bytes(self.body_budget_bytes)
            .with_header_timeout(Duration::from_secs(self.header_timeout_secs))
            .with_body_timeout(Duration::from_secs(self.body_timeout_secs));
        if let Some(k) = self.service_key {
            c = c.with_service_key(k);
        }
        if let Some(a) = self.jwt_aud {
            c = c.with_jwt_aud(a);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Args;

    #[test]
    fn help_says_it_is_a_stand_in() {
        let cmd = GatewayArgs::augment_args(clap::Command::new("gateway"));
        let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
        assert!(about.contains("DEVELOPMENT STAND-IN"), "{about}");
    }

    #[test]
    fn validates() {
        let ok = GatewayConfig::new("postgres://x@h/db", "s".repeat(32), "anon");
        assert!(ok.validate().is_ok());
        assert!(ok.clone().with_jwt_secret("short").validate().is_err());
        assert!(ok.clone().with_service_key("anon").validate().is_err());
        assert!(!format!("{ok:?}").contains(&"s".repeat(32)));
        assert_eq!(
            redact_url("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
    }
}
