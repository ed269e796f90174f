//! PostgREST's error JSON and its SQLSTATE → HTTP status mapping.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to an HTTP client, in PostgREST's shape:
/// `{"code","message","details","hint"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// The HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// SQLSTATE, `PGRSTxxx`, or the gateway's own code.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// More detail, when known.
    pub details: Option<String>,
    /// What to do about it, when known.
    pub hint: Option<String>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            details: None,
            hint: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A database error, mapped the way PostgREST maps it. `authenticated`
    /// says whether the request carried a JWT (42501 is 403 then, else 401).
    pub fn from_db(db: &tokio_postgres::error::DbError, authenticated: bool) -> Self {
        let code = db.code().code();
        Self {
            status: status_for_sqlstate(code, authenticated),
            code: code.to_owned(),
            message: db.message().to_owned(),
            details: db.detail().map(str::to_owned),
            hint: db.hint().map(str::to_owned),
        }
    }

    /// Any tokio-postgres error: database errors keep their SQLSTATE; a lost
    /// connection is 503.
    pub fn from_pg(e: &tokio_postgres::Error, authenticated: bool) -> Self {
        match e.as_db_error() {
            Some(db) => Self::from_db(db, authenticated),
            None => Self::new(
                503,
                "PGRST001",
                "Database client error. Retrying the connection.",
            )
            .with_details(e.to_string()),
        }
    }
}

/// The HTTP status PostgREST answers for a SQLSTATE.
///
/// `authenticated` is whether the request carried a JWT: insufficient
/// privilege (42501) is 403 with one and 401 without.
pub fn status_for_sqlstate(code: &str, authenticated: bool) -> u16 {
    // RAISE SQLSTATE 'PTxyz' → HTTP xyz.
    if let Some(rest) = code.strip_prefix("PT") {
        if let Ok(n) = rest.parse::<u16>() {
            if (100..=599).contains(&n) {
                return n;
            }
        }
    }
    match code {
        "23503" | "23505" => return 409,
        "25006" => return 405,
        "42501" => return if authenticated { 403 } else { 401 },
        "42883" | "42P01" => return 404,
        "P0001" => return 400,
        "53400" => return 500,
        _ => {}
    }
    match code.get(..2).unwrap_or("") {
        "08" | "53" => 503,
        "0L" | "0P" | "28" => 403,
        "09" | "25" | "2D" | "38" | "39" | "3B" | "40" | "54" | "55" | "57" | "58" | "F0"
        | "HV" | "P0" | "XX" => 500,
        _ => 400,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // The gateway's own overload answers and lost database
            // connections alike: worth retrying soon.
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            let value = if self.code.starts_with("PGRST30") {
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    self.message.replace(['"', '\\'], "'")
                )
            } else {
                "Bearer".to_owned()
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(header::WWW_AUTHENTICATE, v);
            } else {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgrest_status_table() {
        let cases = [
            ("23505", true, 409),
            ("23503", true, 409),
            ("P0001", true, 400),
            ("42501", true, 403),
            ("42501", false, 401),
            ("42883", true, 404),
            ("42P01", true, 404),
            ("25006", true, 405),
            ("40001", true, 500),
            ("40P01", true, 500),
            ("57014", true, 500),
            ("XX000", true, 500),
            ("58030", true, 500),
            ("F0000", true, 500),
            ("08006", true, 503),
            ("53300", true, 503),
            ("53400", true, 500),
            ("28000", true, 403),
            ("0L000", true, 403),
            ("0P000", true, 403),
            ("22P02", true, 400),
            ("23502", true, 400),
            ("23514", true, 400),
            ("22023", true, 400),
            ("PT413", true, 413),
            ("PT402", false, 402),
        ];
        for (code, auth, status) in cases {
            assert_eq!(status_for_sqlstate(code, auth), status, "{code}");
        }
    }

    #[test]
    fn unauthorized_carries_www_authenticate() {
        let r = ApiError::new(401, "PGRST303", "JWT expired").into_response();
        let v = r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(v.starts_with("Bearer"), "{v}");
        assert!(v.contains("JWT expired"));
        let r = ApiError::new(403, "42501", "denied").into_response();
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
