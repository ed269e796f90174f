//! Who may join a channel, the way Realtime decides it.
//!
//! - **The token** ([`check_token`]): the join's `access_token` (or the
//!   socket's `apikey` when there is none). The anon and service keys stand
//!   for themselves (roles `anon` and `service_role`); anything else must
//!   be an HS256 JWT signed with the gateway's secret that carries `role`
//!   and a future `exp` (Realtime checks `exp` without leeway). Refusals
//!   use Realtime's words (`InvalidJWTToken: Token has expired 12 seconds
//!   ago`, `JwtSignatureError: ...`, `MalformedJWT: ...`).
//! - **The policies** ([`read_policies`], [`can_write_presence`]): as
//!   Realtime Authorization does, in one transaction that is rolled back:
//!   probe rows are inserted into `realtime.messages` for the topic (by
//!   the stand-in's `realtime.gateway_probe`, which the gateway's login may
//!   run), then, with the caller's `role`, `request.jwt.claims` and
//!   `realtime.topic` set, the probes are selected back: the RLS `select`
//!   policies decide what the caller may read (`broadcast`, `presence`).
//!   Presence writes are an `insert` as the caller (RLS `insert` policies).

use deadpool_postgres::Pool;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::gateway::auth::Caller;
use crate::gateway::config::GatewayConfig;

/// A verified token: who, and until when.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// The role and claims to check the policies with.
    pub caller: Caller,
    /// When the token expires (seconds since the epoch); `None` for the keys.
    pub exp: Option<u64>,
}

/// A reason in Realtime's words (`Code: message`).
pub(crate) type Reason = String;

fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The message of an expired token.
pub(crate) fn expired_message(exp: u64, now: u64) -> String {
    format!("Token has expired {} seconds ago", now.saturating_sub(exp))
}

/// Whether `key` is one of the gateway's API keys (the socket's `apikey`).
pub(crate) fn is_api_key(key: &str, config: &GatewayConfig) -> bool {
    same_secret(key, &config.anon_key)
        || config
            .service_key
            .as_deref()
            .is_some_and(|k| same_secret(key, k))
}

/// Checks a join's token. `now` is seconds since the epoch.
///
/// # Errors
/// The reason to answer the join with.
pub(crate) fn check_token(token: &str, config: &GatewayConfig, now: u64) -> Result<Grant, Reason> {
    let token = token.trim();
    if same_secret(token, &config.anon_key) {
        return Ok(Grant {
            caller: Caller {
                role: "anon".into(),
                claims: json!({"role": "anon"}),
                authenticated: false,
            },
            exp: None,
        });
    }
    if config
        .service_key
        .as_deref()
        .is_some_and(|k| same_secret(token, k))
    {
        return Ok(Grant {
            caller: Caller {
                role: "service_role".into(),
                claims: json!({"role": "service_role"}),
                authenticated: true,
            },
            exp: None,
        });
    }
    let malformed = || "MalformedJWT: The token provided is not a valid JWT".to_owned();
    let header = jsonwebtoken::decode_header(token).map_err(|_| malformed())?;
    if header.alg != Algorithm::HS256 {
        return Err("JwtSignerError: Failed to generate JWT signer, check your JWT secret or JWKS configuration".into());
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(config.jwt_secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => {
            "JwtSignatureError: Failed to validate JWT signature".to_owned()
        }
        _ => malformed(),
    })?;
    let claims = data.claims;
    let role = claims.get("role").and_then(Value::as_str);
    let exp = claims.get("exp").and_then(Value::as_f64);
    let (Some(role), Some(exp)) = (role, exp) else {
        return Err("InvalidJWTToken: Fields `role` and `exp` are required in JWT".into());
    };
    // Realtime: `exp` must be a number after now (no leeway).
    let exp_s = if exp.is_finite() && exp > 0.0 {
        exp as u64
    } else {
        0
    };
    if exp_s <= now {
        return Err(format!("InvalidJWTToken: {}", expired_message(exp_s, now)));
    }
    if let Some(want) = config.jwt_aud.as_deref() {
        let ok = match claims.get("aud") {
            None | Some(Value::Null) => true,
            Some(Value::String(a)) => a == want,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
            Some(_) => false,
        };
        if !ok {
            return Err("InvalidJWTToken: JWT not in audience".into());
        }
    }
    if role.is_empty() {
        return Err("InvalidJWTToken: Fields `role` and `exp` are required in JWT".into());
    }
    Ok(Grant {
        caller: Caller {
            role: role.to_owned(),
            claims,
            authenticated: true,
        },
        exp: Some(exp_s),
    })
}

/// What a caller may read on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadPolicies {
    /// Database broadcasts (`extension = 'broadcast'`).
    pub broadcast: bool,
    /// Presence (`extension = 'presence'`).
    pub presence: bool,
}

/// The reason of a database failure during authorization.
fn unreachable_db(e: impl std::fmt::Display) -> Reason {
    tracing::warn!(error = %e, "realtime authorization query failed");
    "UnableToConnectToProject: Realtime was unable to connect to the project database".into()
}

/// Sets the caller's role, claims and the topic for the rest of `tx`.
async fn act_as(
    tx: &deadpool_postgres::Transaction<'_>,
    caller: &Caller,
    topic: &str,
) -> Result<(), tokio_postgres::Error> {
    let claims = caller.claims.to_string();
    let sub = caller
        .claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    tx.execute(
        "select set_config('role', $1, true), set_config('realtime.topic', $2, true), \
                set_config('request.jwt.claims', $3, true), \
                set_config('request.jwt.claim.sub', $4, true), \
                set_config('request.jwt.claim.role', $1, true)",
        &[&caller.role, &topic, &claims, &sub],
    )
    .await
    .map(|_| ())
}

/// Runs Realtime's read check for `topic` as `caller`.
///
/// # Errors
/// The reason to refuse the join with when the database cannot be asked.
/// A policy that fails (or a role the login may not take) reads as "not
/// allowed", as in Realtime.
pub(crate) async fn read_policies(
    pool: &Pool,
    caller: &Caller,
    topic: &str,
) -> Result<ReadPolicies, Reason> {
    let mut client = pool.get().await.map_err(unreachable_db)?;
    let tx = client.transaction().await.map_err(unreachable_db)?;
    let extensions = vec!["broadcast".to_owned(), "presence".to_owned()];
    let ids: Vec<String> = tx
        .query_one(
            "select realtime.gateway_probe($1, $2)",
            &[&topic, &extensions],
        )
        .await
        .map_err(unreachable_db)?
        .try_get(0)
        .map_err(unreachable_db)?;
    let readable: Result<Vec<String>, tokio_postgres::Error> = async {
        act_as(&tx, caller, topic).await?;
        let rows = tx
            .query(
                "select m.extension from realtime.messages m where m.id::text = any($1)",
                &[&ids],
            )
            .await?;
        rows.iter().map(|r| r.try_get::<_, String>(0)).collect()
    }
    .await;
    let _ = tx.rollback().await;
    match readable {
        Ok(ext) => Ok(ReadPolicies {
            broadcast: ext.iter().any(|e| e == "broadcast"),
            presence: ext.iter().any(|e| e == "presence"),
        }),
        Err(e) if e.as_db_error().is_some() => {
            tracing::debug!(error = %e, %topic, "a realtime read policy failed: not allowed");
            Ok(ReadPolicies {
                broadcast: false,
                presence: false,
            })
        }
        Err(e) => Err(unreachable_db(e)),
    }
}

/// Whether `caller` may publish presence on `topic` (an `insert` of a
/// presence message as the caller, rolled back).
///
/// # Errors
/// The reason when the database cannot be asked.
pub(crate) async fn can_write_presence(
    pool: &Pool,
    caller: &Caller,
    topic: &str,
) -> Result<bool, Reason> {
    let mut client = pool.get().await.map_err(unreachable_db)?;
    let tx = client.transaction().await.map_err(unreachable_db)?;
    let r: Result<u64, tokio_postgres::Error> = async {
        act_as(&tx, caller, topic).await?;
        tx.execute(
            "insert into realtime.messages (topic, extension, private) values ($1, 'presence', true)",
            &[&topic],
        )
        .await
    }
    .await;
    let _ = tx.rollback().await;
    match r {
        Ok(n) => Ok(n == 1),
        Err(e) if e.as_db_error().is_some() => Ok(false),
        Err(e) => Err(unreachable_db(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn config() -> GatewayConfig {
        GatewayConfig::new("postgres://x@h/db", SECRET, "anon-key").with_service_key("svc")
    }

    fn token(claims: Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn realtime_reasons() {
        let c = config();
        let now = 2_000_000_000;
        let ok = token(
            json!({"role": "authenticated", "sub": "u", "exp": now + 60}),
            SECRET,
        );
        let g = check_token(&ok, &c, now).unwrap();
        assert_eq!(
            (g.caller.role.as_str(), g.exp),
            ("authenticated", Some(now + 60))
        );
        let expired = token(json!({"role": "authenticated", "exp": now - 12}), SECRET);
        assert_eq!(
            check_token(&expired, &c, now).unwrap_err(),
            "InvalidJWTToken: Token has expired 12 seconds ago"
        );
        // No leeway: expiring now is expired.
        let edge = token(json!({"role": "authenticated", "exp": now}), SECRET);
        assert!(check_token(&edge, &c, now).is_err());
        let forged = token(
            json!({"role": "authenticated", "exp": now + 60}),
            "another-secret-another-secret-xx",
        );
        assert_eq!(
            check_token(&forged, &c, now).unwrap_err(),
            "JwtSignatureError: Failed to validate JWT signature"
        );
        let no_exp = token(json!({"role": "authenticated"}), SECRET);
        assert_eq!(
            check_token(&no_exp, &c, now).unwrap_err(),
            "InvalidJWTToken: Fields `role` and `exp` are required in JWT"
        );
        assert_eq!(
            check_token("garbage", &c, now).unwrap_err(),
            "MalformedJWT: The token provided is not a valid JWT"
        );
        assert_eq!(
            check_token("anon-key", &c, now).unwrap().caller.role,
            "anon"
        );
        assert_eq!(
            check_token("svc", &c, now).unwrap().caller.role,
            "service_role"
        );
        let aud = c.clone().with_jwt_aud("authenticated");
        let other = token(
            json!({"role": "authenticated", "exp": now + 60, "aud": "x"}),
            SECRET,
        );
        assert!(check_token(&other, &aud, now).is_err());
    }
}
