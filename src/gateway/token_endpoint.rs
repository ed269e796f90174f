//! A DEVELOPMENT STAND-IN for Supabase Auth's refresh-token grant:
//! `POST /auth/v1/token?grant_type=refresh_token` with the `apikey` header
//! and `{"refresh_token": "..."}`, answering what GoTrue answers:
//! `{"access_token", "token_type": "bearer", "expires_in", "expires_at",
//! "refresh_token", "user": {"id", "aud", "role"}}`, or HTTP 400
//! `{"code": 400, "error_code", "msg", "error": "invalid_grant",
//! "error_description"}` for an unknown, expired or already used token.
//!
//! Refresh tokens here are HS256 tokens signed with a key derived from the
//! gateway's JWT secret (so one is never accepted as an access token), with
//! a random id (`jti`). Each one works once: using it records its id in
//! `auth.dev_refresh_tokens_used` (a table of the stand-in schema), and the
//! answer carries a new refresh token (rotation); a second use answers
//! "Invalid Refresh Token: Already Used". Tokens come from `supamerge
//! dev-token --refresh`. Real projects use Supabase Auth instead.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::api_error::ApiError;
use super::{auth, limits, AppState};

/// Lifetime of a development refresh token: 30 days.
pub const REFRESH_TOKEN_SECS: u64 = 30 * 24 * 3600;
/// Lifetime of the access tokens the endpoint issues: one hour, as Supabase
/// Auth's default.
pub const ACCESS_TOKEN_SECS: u64 = 3600;
const TYP: &str = "supamerge-dev-refresh";
const MAX_BODY: usize = 16 * 1024;

fn refresh_key(secret: &str) -> String {
    format!("{secret}\u{0}supamerge dev refresh tokens")
}

/// Signs a development refresh token for `user`.
///
/// # Errors
/// [`jsonwebtoken::errors::Error`] when signing fails.
pub fn dev_refresh_token(
    secret: &str,
    user: uuid::Uuid,
    now: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = json!({
        "sub": user,
        "jti": uuid::Uuid::new_v4(),
        "typ": TYP,
        "iat": now,
        "exp": now.saturating_add(REFRESH_TOKEN_SECS),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(refresh_key(secret).as_bytes()),
    )
}

#[derive(Deserialize)]
struct RefreshClaims {
    sub: uuid::Uuid,
    jti: uuid::Uuid,
    typ: String,
}

/// The user and token id of a valid (signed, unexpired) refresh token.
fn verify(secret: &str, token: &str) -> Option<(uuid::Uuid, uuid::Uuid)> {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_aud = false;
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<RefreshClaims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(refresh_key(secret).as_bytes()),
        &v,
    )
    .ok()?;
    (data.claims.typ == TYP).then_some((data.claims.sub, data.claims.jti))
}

/// GoTrue's error shape (both the current and the older fields).
fn auth_error(status: u16, error_code: &str, msg: &str) -> Response {
    let body = json!({
        "code": status,
        "error_code": error_code,
        "msg": msg,
        "error": if status == 400 { "invalid_grant" } else { error_code },
        "error_description": msg,
    });
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (code, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

#[derive(Deserialize)]
pub(super) struct GrantQuery {
    grant_type: Option<String>,
}

#[derive(Deserialize)]
struct GrantBody {
    refresh_token: Option<String>,
}

/// `POST /auth/v1/token?grant_type=refresh_token`.
pub(super) async fn token_handler(
    State(state): State<Arc<AppState>>,
    Query(q): Query<GrantQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = headers.get("apikey").and_then(|v| v.to_str().ok());
    let known = key.is_some_and(|k| {
        k == state.config.anon_key || state.config.service_key.as_deref() == Some(k)
    });
    if !known {
        return auth_error(
            401,
            "no_authorization",
            "Invalid API key: pass the project's anon key as apikey",
        );
    }
    if q.grant_type.as_deref() != Some("refresh_token") {
        return auth_error(
            400,
            "validation_failed",
            "unsupported_grant_type: this development stand-in serves grant_type=refresh_token only",
        );
    }
    let declared = limits::declared_length(&headers);
    let bytes = match limits::read_body(body, MAX_BODY, declared, Duration::from_secs(10)).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let token = match serde_json::from_slice::<GrantBody>(&bytes) {
        Ok(GrantBody {
            refresh_token: Some(t),
        }) if !t.is_empty() => t,
        _ => return auth_error(400, "validation_failed", "refresh_token required"),
    };
    let Some((user, jti)) = verify(&state.config.jwt_secret, &token) else {
        return auth_error(
            400,
            "refresh_token_not_found",
            "Invalid Refresh Token: Refresh Token Not Found",
        );
    };
    let client = match state.pool.get().await {
        Ok(c) => c,
        Err(e) => {
            return ApiError::new(503, "PGRST000", "Could not connect to the database")
                .with_details(e.to_string())
                .into_response()
        }
    };
    let first_use = client
        .query_opt(
            "insert into auth.dev_refresh_tokens_used (token_id, user_id) \
             values ($1::text::uuid, $2::text::uuid) \
             on conflict (token_id) do nothing returning token_id::text",
            &[&jti.to_string(), &user.to_string()],
        )
        .await;
    match first_use {
        Ok(Some(_)) => {}
        Ok(None) => {
            return auth_error(
                400,
                "refresh_token_already_used",
                "Invalid Refresh Token: Already Used",
            )
        }
        Err(e) => return ApiError::from_pg(&e, false).into_response(),
    }
    let now = auth::now_unix();
    let access = auth::dev_access_token(&state.config.jwt_secret, user, ACCESS_TOKEN_SECS, now);
    let refresh = dev_refresh_token(&state.config.jwt_secret, user, now);
    let (Ok(access), Ok(refresh)) = (access, refresh) else {
        return ApiError::new(500, "PGRST000", "cannot sign tokens").into_response();
    };
    let body = json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": ACCESS_TOKEN_SECS,
        "expires_at": now.saturating_add(ACCESS_TOKEN_SECS),
        "refresh_token": refresh,
        "user": {"id": user, "aud": "authenticated", "role": "authenticated"},
    });
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_not_access_tokens() {
        let secret = "0123456789abcdef0123456789abcdef";
        let user = uuid::Uuid::new_v4();
        let now = auth::now_unix();
        let t = dev_refresh_token(secret, user, now).unwrap();
        assert_eq!(verify(secret, &t).map(|(u, _)| u), Some(user));
        assert!(verify("another secret, long enough 0123456789", &t).is_none());
        // Not accepted where an access token is expected.
        assert!(auth::verify_jwt(&t, secret, None, now).is_err());
        // An access token is not a refresh token.
        let a = auth::dev_access_token(secret, user, 60, now).unwrap();
        assert!(verify(secret, &a).is_none());
    }
}
