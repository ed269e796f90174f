//! Request authentication the way Supabase's gateway and PostgREST do it,
//! from the headers alone (no body byte is read before it):
//! the `apikey` header must be a configured key; an `Authorization: Bearer`
//! JWT (HS256, exp/nbf/iat numbers checked with 30 s leeway, `exp` a positive
//! number, `aud` checked against the configured audience as PostgREST's
//! `jwt-aud`) selects the role and claims; without one the request runs as
//! `anon`.

use axum::http::HeaderMap;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use super::api_error::ApiError;
use super::config::GatewayConfig;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const JWT_LEEWAY_SECS: u64 = 30;

/// The database role and claims a request runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The role to switch to (`anon`, `authenticated`, `service_role`, ...).
    pub role: String,
    /// The claims for `request.jwt.claims` (`{"role":"anon"}` without a JWT).
    pub claims: Value,
    /// Whether a JWT (or the service key) authenticated the request: decides
    /// whether 42501 is answered 403 (yes) or 401 (no).
    pub authenticated: bool,
}

/// Compares secrets without an early exit.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn anon() -> Caller {
    Caller {
        role: "anon".into(),
        claims: json!({"role": "anon"}),
        authenticated: false,
    }
}

fn service() -> Caller {
    Caller {
        role: "service_role".into(),
        claims: json!({"role": "service_role"}),
        authenticated: true,
    }
}

fn unauthorized(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(401, code, message)
}

/// Authenticates a request from its headers.
///
/// # Errors
/// A 401 [`ApiError`]: no or unknown `apikey`, or a bearer token that is not
/// a valid JWT (bad signature, expired, not yet valid, malformed).
pub fn authenticate(headers: &HeaderMap, config: &GatewayConfig) -> Result<Caller, ApiError> {
    let Some(apikey) = header_str(headers, "apikey") else {
        return Err(
            unauthorized("PGRST_NO_APIKEY", "No API key found in request")
                .with_hint("No `apikey` request header was found."),
        );
    };
    let is_service_key = config
        .service_key
        .as_deref()
        .is_some_and(|k| same_secret(apikey, k));
    if !is_service_key && !same_secret(apikey, &config.anon_key) {
        return Err(unauthorized("PGRST_INVALID_APIKEY", "Invalid API key")
            .with_hint("Double check your anon or service key."));
    }
    let bearer = match header_str(headers, "authorization") {
        None => None,
        Some(v) => {
            let mut parts = v.splitn(2, ' ');
            let scheme = parts.next().unwrap_or("");
            let token = parts.next().unwrap_or("").trim();
            if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
                return Err(unauthorized(
                    "PGRST301",
                    "Invalid Authorization header: expected `Bearer <token>`",
                ));
            }
            Some(token)
        }
    };
    match bearer {
        None if is_service_key => Ok(service()),
        None => Ok(anon()),
        // The keys themselves may be sent as bearer tokens (supabase-js does
        // that when no user is signed in).
        Some(t) if same_secret(t, &config.anon_key) => Ok(anon()),
        Some(t)
            if config
                .service_key
                .as_deref()
                .is_some_and(|k| same_secret(t, k)) =>
        {
            Ok(service())
        }
        Some(t) => verify_jwt(t, &config.jwt_secret, config.jwt_aud.as_deref(), now_unix()),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies an HS256 JWT and returns the caller it describes.
///
/// Time claims must be JSON numbers (seconds); `exp` must be positive and
/// not past (30 s leeway). With `audience`, an `aud` claim must be that
/// string or an array of strings containing it (a token without `aud`
/// passes, as in PostgREST).
///
/// # Errors
/// 401 PGRST303 for a claim that fails (expired, not yet valid, issued in the
/// future, not in the audience, a malformed time or audience claim), 401
/// PGRST301 for a token that does not verify.
pub fn verify_jwt(
    token: &str,
    secret: &str,
    audience: Option<&str>,
    now: u64,
) -> Result<Caller, ApiError> {
    let mut validation = Validation::new(Algorithm::HS256);
    // exp and nbf are checked below against `now` (jsonwebtoken would read
    // the system clock itself).
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => unauthorized("PGRST303", "JWT expired"),
        ErrorKind::ImmatureSignature => unauthorized("PGRST303", "JWT not yet valid"),
        ErrorKind::InvalidSignature => unauthorized("PGRST301", "JWSError JWSInvalidSignature"),
        ErrorKind::InvalidAlgorithm => {
            unauthorized("PGRST301", "JWSError JWSInvalidAlgorithm: expected HS256")
        }
        _ => unauthorized("PGRST301", format!("Invalid JWT: {e}")),
    })?;
    let claims = data.claims;
    if !claims.is_object() {
        return Err(unauthorized(
            "PGRST301",
            "Invalid JWT: the claims are not an object",
        ));
    }
    // Seconds as f64: a JSON number may be negative, fractional or huge.
    let time_claim = |name: &str| -> Result<Option<f64>, ApiError> {
        match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(unauthorized(
                "PGRST303",
                format!("The JWT '{name}' claim must be a number"),
            )),
        }
    };
    let (now_s, leeway) = (now as f64, JWT_LEEWAY_SECS as f64);
    if let Some(exp) = time_claim("exp")? {
        // `exp: -1` (or 0) is a date in 1970: expired, never "no expiry".
        if exp <= 0.0 || now_s > exp + leeway {
            return Err(unauthorized("PGRST303", "JWT expired"));
        }
    }
    if let Some(nbf) = time_claim("nbf")? {
        if nbf > now_s + leeway {
            return Err(unauthorized("PGRST303", "JWT not yet valid"));
        }
    }
    if let Some(iat) = time_claim("iat")? {
        if iat > now_s + leeway {
            return Err(unauthorized("PGRST303", "JWT issued at future"));
        }
    }
    if let Some(want) = audience {
        let ok = match claims.get("aud") {
            None | Some(Value::Null) => true,
            Some(Value::String(a)) => a == want,
            Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
                list.iter().any(|a| a.as_str() == Some(want))
            }
            Some(_) => {
                return Err(unauthorized(
                    "PGRST303",
                    "The JWT 'aud' claim must be a string or an array of strings",
                ))
            }
        };
        if !ok {
            return Err(unauthorized("PGRST303", "JWT not in audience"));
        }
    }
    let role = match claims.get("role") {
        None | Some(Value::Null) => "anon".to_owned(),
        Some(Value::String(r)) if !r.is_empty() => r.clone(),
        Some(_) => {
            return Err(unauthorized(
                "PGRST301",
                "Invalid JWT: the role claim must be a non-empty string",
            ))
        }
    };
    Ok(Caller {
        role,
        claims,
        authenticated: true,
    })
}

/// Signs a development access token the way Supabase Auth shapes its own:
/// HS256 with `secret`, `{"sub": user, "role": "authenticated", "aud":
/// "authenticated", "iat", "exp"}`. For the local gateway only: a real
/// project's tokens come from Supabase Auth.
///
/// # Errors
/// [`jsonwebtoken::errors::Error`] when signing fails.
pub fn dev_access_token(
    secret: &str,
    user: uuid::Uuid,
    valid_for_secs: u64,
    now: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = serde_json::json!({
        "sub": user,
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now.saturating_add(valid_for_secs),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn token(claims: Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn config() -> GatewayConfig {
        GatewayConfig::new("postgres://x@h/db", SECRET, "anon-key").with_service_key("svc-key")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn apikey_is_required_and_checked() {
        let c = config();
        assert_eq!(authenticate(&headers(&[]), &c).unwrap_err().status, 401);
        assert_eq!(
            authenticate(&headers(&[("apikey", "nope")]), &c)
                .unwrap_err()
                .message,
            "Invalid API key"
        );
        let anon = authenticate(&headers(&[("apikey", "anon-key")]), &c).unwrap();
        assert_eq!(anon.role, "anon");
        assert!(!anon.authenticated);
        let svc = authenticate(&headers(&[("apikey", "svc-key")]), &c).unwrap();
        assert_eq!(svc.role, "service_role");
        let anon_bearer = authenticate(
            &headers(&[("apikey", "anon-key"), ("authorization", "Bearer anon-key")]),
            &c,
        )
        .unwrap();
        assert_eq!(anon_bearer.role, "anon");
    }

    #[test]
    fn jwt_rules() {
        let now = 2_000_000_000;
        let ok = token(
            json!({"sub": "u", "role": "authenticated", "exp": now + 60, "iat": now}),
            SECRET,
        );
        let caller = verify_jwt(&ok, SECRET, None, now).unwrap();
        assert_eq!(caller.role, "authenticated");
        assert_eq!(caller.claims["sub"], "u");

        let forged = token(
            json!({"role": "authenticated"}),
            "another-secret-another-secret-xx",
        );
        assert_eq!(
            verify_jwt(&forged, SECRET, None, now).unwrap_err().code,
            "PGRST301"
        );

        let future = token(json!({"role": "authenticated", "iat": now + 600}), SECRET);
        assert_eq!(
            verify_jwt(&future, SECRET, None, now).unwrap_err().message,
            "JWT issued at future"
        );
        let no_role = token(json!({"sub": "u"}), SECRET);
        assert_eq!(
            verify_jwt(&no_role, SECRET, None, now).unwrap().role,
            "anon"
        );
        assert_eq!(
            verify_jwt("garbage", SECRET, None, now).unwrap_err().status,
            401
        );
    }

    #[test]
    fn exp_must_be_a_positive_number_in_the_future() {
        let now = 2_000_000_000;
        for exp in [json!(-1), json!(0), json!(-1e30), json!(now - 31)] {
            let t = token(json!({"role": "authenticated", "exp": exp}), SECRET);
            let e = verify_jwt(&t, SECRET, None, now).unwrap_err();
            assert_eq!(
                (e.code.as_str(), e.message.as_str()),
                ("PGRST303", "JWT expired"),
                "{exp}"
            );
        }
        let t = token(json!({"role": "authenticated", "exp": "soon"}), SECRET);
        assert_eq!(
            verify_jwt(&t, SECRET, None, now).unwrap_err().message,
            "The JWT 'exp' claim must be a number"
        );
        for exp in [json!(now), json!(now as f64 + 0.5), json!(1e12)] {
            let t = token(json!({"role": "authenticated", "exp": exp}), SECRET);
            assert!(verify_jwt(&t, SECRET, None, now).is_ok(), "{exp}");
        }
    }

    #[test]
    fn audience_like_postgrest_jwt_aud() {
        let now = 2_000_000_000;
        let with = |aud: Value| token(json!({"role": "authenticated", "aud": aud}), SECRET);
        let ok = |t: &str, a| verify_jwt(t, SECRET, a, now).map(|_| ());
        let want = Some("authenticated");
        assert!(ok(&with(json!("authenticated")), want).is_ok());
        assert!(ok(&with(json!(["x", "authenticated"])), want).is_ok());
        assert!(ok(&token(json!({"role": "authenticated"}), SECRET), want).is_ok());
        assert!(ok(&with(Value::Null), want).is_ok());
        let e = ok(&with(json!("other")), want).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str(), e.message.as_str()),
            (401, "PGRST303", "JWT not in audience")
        );
        assert_eq!(
            ok(&with(json!(["a", "b"])), want).unwrap_err().message,
            "JWT not in audience"
        );
        assert_eq!(
            ok(&with(json!(7)), want).unwrap_err().message,
            "The JWT 'aud' claim must be a string or an array of strings"
        );
        // Without a configured audience any aud passes.
        assert!(ok(&with(json!("other")), None).is_ok());
    }

    #[test]
    fn dev_tokens_verify_as_the_user() {
        let user = uuid::Uuid::new_v4();
        let t = dev_access_token(SECRET, user, 60, 1_000).unwrap();
        let caller = verify_jwt(&t, SECRET, None, 1_030).unwrap();
        assert_eq!(caller.role, "authenticated");
        assert_eq!(caller.claims["sub"], user.to_string());
        // Past exp + leeway: expired.
        assert!(verify_jwt(&t, SECRET, None, 1_000 + 60 + JWT_LEEWAY_SECS + 1).is_err());
        assert!(verify_jwt(&t, "another-secret-of-at-least-32-characters", None, 1_030).is_err());
        // Its audience is Supabase Auth's.
        assert!(verify_jwt(&t, SECRET, Some("authenticated"), 1_030).is_ok());
    }
}
