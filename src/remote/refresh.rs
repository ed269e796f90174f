//! [`RefreshingToken`]: an [`AccessTokenProvider`] that keeps a Supabase Auth
//! session alive with its refresh token.
//!
//! Supabase Auth (GoTrue) exchanges a refresh token at
//! `POST {url}/auth/v1/token?grant_type=refresh_token` (header `apikey`, body
//! `{"refresh_token": "..."}`) for `{"access_token", "token_type": "bearer",
//! "expires_in", "expires_at", "refresh_token", "user"}`. Refresh tokens
//! rotate: the answer carries a new one and the old one is spent (reusing it
//! is refused with `invalid_grant` "Invalid Refresh Token: Already Used"), so
//! every rotation is handed to the [`SessionSink`] before the new access token
//! is used: a caller that persists sessions (the CLI's profile) never keeps a
//! spent refresh token.
//!
//! The provider refreshes before a request when the access token is missing
//! or expires within [`RefreshingToken::DEFAULT_MARGIN`], and once when the
//! server answers "JWT expired" anyway. Refreshes are serialised: two
//! requests that both find the token stale cause one refresh.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::supabase::{AccessTokenProvider, TokenError};

/// An access token and the refresh token that renews it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuthSession {
    /// The access token (a JWT), if one is held.
    pub access_token: Option<String>,
    /// The refresh token.
    pub refresh_token: String,
    /// When the access token expires (Unix seconds), if known.
    pub expires_at: Option<u64>,
}

impl AuthSession {
    /// A session known only by its refresh token (the first request
    /// refreshes it).
    pub fn from_refresh_token(refresh_token: impl Into<String>) -> Self {
        Self {
            access_token: None,
            refresh_token: refresh_token.into(),
            expires_at: None,
        }
    }

    /// Sets the access token; its expiry is read from its `exp` claim.
    pub fn with_access_token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.expires_at = jwt_expiry(&token);
        self.access_token = Some(token);
        self
    }
}

impl fmt::Debug for AuthSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSession")
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field("refresh_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where rotated sessions go (e.g. a config file).
pub trait SessionSink: Send + Sync {
    /// Stores the new session; called after every refresh, before the new
    /// access token is used.
    ///
    /// # Errors
    /// Why it could not be stored (the refresh then fails: the old refresh
    /// token is spent, continuing would lose the session at the next run).
    fn store(&self, session: &AuthSession) -> Result<(), String>;
}

/// The claims of a JWT, decoded but NOT verified (to read `exp` and `sub`
/// for display and refresh timing; the server verifies the token).
pub fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `exp` claim of a JWT (not verified: only to decide when to refresh).
pub fn jwt_expiry(token: &str) -> Option<u64> {
    jwt_claims(token)?.get("exp")?.as_u64()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An [`AccessTokenProvider`] refreshing a Supabase Auth session.
pub struct RefreshingToken {
    http: reqwest::Client,
    token_url: String,
    anon_key: String,
    session: tokio::sync::Mutex<AuthSession>,
    sink: Option<Arc<dyn SessionSink>>,
    margin: Duration,
}

impl fmt::Debug for RefreshingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshingToken")
            .field("token_url", &self.token_url)
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

/// Supabase Auth's token answer (the fields used).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: String,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Supabase Auth's error answer: `{"error", "error_description"}` from older
/// versions, `{"code", "error_code", "msg"}` from newer ones.
#[derive(Default, Deserialize)]
struct AuthErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    msg: Option<String>,
}

impl RefreshingToken {
    /// Refresh this long before the access token's expiry.
    pub const DEFAULT_MARGIN: Duration = Duration::from_secs(60);

    /// A provider for the project at `base_url` (as given to
    /// [`SupabaseRemote::builder`](super::SupabaseRemote::builder)) with its
    /// anon key, starting from `session`.
    ///
    /// # Errors
    /// [`TokenError::Unavailable`] when the HTTP client cannot be built.
    pub fn new(
        base_url: &str,
        anon_key: impl Into<String>,
        session: AuthSession,
    ) -> Result<Self, TokenError> {
        let trimmed = base_url.trim().trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/rest/v1").unwrap_or(trimmed);
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("supamerge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TokenError::Unavailable {
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self {
            http,
            token_url: format!("{trimmed}/auth/v1/token?grant_type=refresh_token"),
            anon_key: anon_key.into(),
            session: tokio::sync::Mutex::new(session),
            sink: None,
            margin: Self::DEFAULT_MARGIN,
        })
    }

    /// Hands every rotated session to `sink`.
    pub fn with_sink(mut self, sink: Arc<dyn SessionSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Refreshes this long before expiry (default one minute).
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The session now (after any refresh).
    pub async fn session(&self) -> AuthSession {
        self.session.lock().await.clone()
    }

    fn stale(&self, s: &AuthSession) -> bool {
        match (&s.access_token, s.expires_at) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(_), Some(exp)) => exp <= now_unix().saturating_add(self.margin.as_secs()),
        }
    }

    /// Exchanges the refresh token for a new session (in place).
    async fn exchange(&self, s: &mut AuthSession) -> Result<(), TokenError> {
        let resp = self
            .http
            .post(&self.token_url)
            .header("apikey", &self.anon_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .json(&serde_json::json!({"refresh_token": s.refresh_token}))
            .send()
            .await
            .map_err(|e| TokenError::Unavailable {
                reason: format!("cannot reach Supabase Auth at {}: {e}", self.token_url),
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| TokenError::Unavailable {
            reason: format!("Supabase Auth's answer was lost: {e}"),
        })?;
        if !(200..300).contains(&status) {
            let body: AuthErrorBody = serde_json::from_str(&text).unwrap_or_default();
            let message = body
                .msg
                .or(body.error_description)
                .unwrap_or_else(|| text.chars().take(200).collect());
            let code = body.error_code.or(body.error).unwrap_or_default();
            return Err(if (400..500).contains(&status) {
                TokenError::Refused {
                    reason: format!("{message} ({code}, HTTP {status}): sign in again"),
                }
            } else {
                TokenError::Unavailable {
                    reason: format!("Supabase Auth answered HTTP {status}: {message}"),
                }
            });
        }
        let answer: TokenAnswer =
            serde_json::from_str(&text).map_err(|e| TokenError::Unavailable {
                reason: format!("unexpected Supabase Auth answer: {e}"),
            })?;
        let expires_at = answer
            .expires_at
            .or_else(|| jwt_expiry(&answer.access_token))
            .or_else(|| answer.expires_in.map(|d| now_unix().saturating_add(d)));
        let fresh = AuthSession {
            access_token: Some(answer.access_token),
            refresh_token: answer.refresh_token,
            expires_at,
        };
        if let Some(sink) = &self.sink {
            sink.store(&fresh).map_err(|reason| TokenError::Refused {
                reason: format!("cannot store the rotated refresh token: {reason}"),
            })?;
        }
        *s = fresh;
        tracing::debug!(expires_at = ?s.expires_at, "access token refreshed");
        Ok(())
    }
}

#[async_trait]
impl AccessTokenProvider for RefreshingToken {
    async fn access_token(&self) -> Result<Option<String>, TokenError> {
        let mut s = self.session.lock().await;
        if self.stale(&s) {
            self.exchange(&mut s).await?;
        }
        Ok(s.access_token.clone())
    }

    async fn refresh(&self, expired: Option<&str>) -> Result<Option<String>, TokenError> {
        let mut s = self.session.lock().await;
        // Another request refreshed while this one waited: use its token.
        if s.access_token.as_deref() == expired || s.access_token.is_none() {
            self.exchange(&mut s).await?;
        }
        Ok(s.access_token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_read_from_the_payload() {
        use base64::Engine;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let t = format!(
            "{}.{}.sig",
            enc("{}"),
            enc(r#"{"exp":1700000000,"sub":"x"}"#)
        );
        assert_eq!(jwt_expiry(&t), Some(1_700_000_000));
        assert_eq!(jwt_expiry("not a jwt"), None);
        let s = AuthSession::from_refresh_token("r").with_access_token(t);
        assert_eq!(s.expires_at, Some(1_700_000_000));
        assert!(!format!("{s:?}").contains("1700000000.") && !format!("{s:?}").contains("\"r\""));
    }
}
