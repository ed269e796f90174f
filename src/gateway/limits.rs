//! Request admission: what a request must pass, from its headers alone,
//! before a byte of its body is read, and the bounded body read itself.
//!
//! In [`super::handle_rpc`]'s order: authentication (`apikey`, JWT: see
//! [`super::auth`]), `Content-Profile`, [`check_content_type`], a declared
//! `Content-Length` above the limit (413), then [`Admission::admit`]: a slot
//! among the requests handled at once and a reservation of body bytes
//! (503 with `Retry-After` past either), and only then [`read_body`] (413
//! once the streamed bytes pass the limit, 408 past the body timeout).
//!
//! Memory: every body held by the gateway has reserved its size from the
//! body budget first, so the request bodies in memory never exceed
//! `body_budget_bytes` (requests without a user token: a quarter of it);
//! a body is held once, and handed to PostgreSQL as is (never parsed into a
//! JSON tree). `docs/operations.md` states the resulting bound.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::api_error::ApiError;

/// Body bytes are reserved in units of this many bytes.
const UNIT: usize = 1024;

/// The share of the body budget requests without a user token may hold.
const ANON_SHARE: usize = 4;

/// The gateway's request and body-byte budgets.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    requests: Arc<Semaphore>,
    max_requests: usize,
    bodies: Arc<Semaphore>,
    anon_bodies: Arc<Semaphore>,
    budget_bytes: usize,
}

/// What an admitted request holds until it is answered.
#[derive(Debug)]
pub(crate) struct Admitted {
    _request: OwnedSemaphorePermit,
    _body: OwnedSemaphorePermit,
    _anon: Option<OwnedSemaphorePermit>,
}

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX)
}

fn busy(message: String) -> ApiError {
    ApiError::new(503, "PGRST_BUSY", message)
        .with_hint("The gateway is at its limit; retry after the Retry-After delay.")
}

impl Admission {
    /// Budgets: `max_requests` handled at once, `budget_bytes` of bodies.
    pub(crate) fn new(max_requests: usize, budget_bytes: usize) -> Self {
        let total = units(budget_bytes) as usize;
        Self {
            requests: Arc::new(Semaphore::new(max_requests)),
            max_requests,
            bodies: Arc::new(Semaphore::new(total)),
            anon_bodies: Arc::new(Semaphore::new((total / ANON_SHARE).max(1))),
            budget_bytes,
        }
    }

    /// Admits a request whose body will be at most `body_bytes` (its
    /// declared length, or the limit when it declares none), or refuses it
    /// at once: never waits, never reads the body.
    ///
    /// # Errors
    /// 503 `PGRST_BUSY` when the request slots or the body budget (for
    /// `anonymous` requests: their share) are used up.
    pub(crate) fn admit(&self, body_bytes: usize, anonymous: bool) -> Result<Admitted, ApiError> {
        let request = self.requests.clone().try_acquire_owned().map_err(|_| {
            busy(format!(
                "too many requests in flight (the limit is {})",
                self.max_requests
            ))
        })?;
        let n = units(body_bytes);
        let over = || {
            busy(format!(
                "too many request bodies in flight (the budget is {} bytes{})",
                self.budget_bytes,
                if anonymous {
                    ", a quarter of it for requests without a user token"
                } else {
                    ""
                }
            ))
        };
        let anon = if anonymous {
            Some(
                self.anon_bodies
                    .clone()
                    .try_acquire_many_owned(n)
                    .map_err(|_| over())?,
            )
        } else {
            None
        };
        let body = self
            .bodies
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| over())?;
        Ok(Admitted {
            _request: request,
            _body: body,
            _anon: anon,
        })
    }
}

/// The request's declared body length, when it declares one.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// RPC bodies must be JSON: no `Content-Type` (PostgREST's default) or
/// `application/json` (any parameters).
///
/// # Errors
/// PostgREST 12's answer to any other type: 400 `PGRST102`
/// "Content-Type not acceptable: <type>" (its documentation's error table
/// lists 415 `PGRST107`, which its code does not send).
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = v
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" {
        Ok(())
    } else {
        Err(ApiError::new(
            400,
            "PGRST102",
            format!("Content-Type not acceptable: {mime}"),
        )
        .with_hint("Send the arguments as a JSON object with Content-Type: application/json."))
    }
}

/// The 413 answer.
pub(crate) fn too_large(declared: Option<u64>, limit: usize) -> ApiError {
    let size = declared
        .map(|n| format!("{n} bytes"))
        .unwrap_or_else(|| "the request body".into());
    ApiError::new(
        413,
        "PT413",
        format!("Payload too large: {size} exceeds the limit of {limit} bytes"),
    )
    .with_hint("Split the batch and retry.")
}

/// Reads a body of at most `limit` bytes within `timeout`.
///
/// # Errors
/// 413 as soon as the bytes read pass `limit` (the rest is not read), 408
/// when the body takes longer than `timeout`, 400 when the client breaks the
/// body off.
pub(crate) async fn read_body(
    mut body: Body,
    limit: usize,
    declared: Option<u64>,
    timeout: Duration,
) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let capacity = declared
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(limit);
    let read = async move {
        let mut out = Vec::with_capacity(capacity);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(400, "PGRST102", "The request body could not be read")
                    .with_details(e.to_string())
            })?;
            if let Some(d) = frame.data_ref() {
                if out.len() + d.len() > limit {
                    return Err(too_large(None, limit));
                }
                out.extend_from_slice(d);
            }
        }
        Ok(out)
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        ApiError::new(
            408,
            "PGRST_BODY_TIMEOUT",
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_refuse_at_once_and_free_on_drop() {
        let a = Admission::new(3, 8 * UNIT);
        let big = a.admit(6 * UNIT, false).unwrap();
        // 2 units left: a 3-unit body is refused, a small one passes.
        assert_eq!(a.admit(3 * UNIT, false).unwrap_err().status, 503);
        let small = a.admit(10, false).unwrap();
        // Anonymous requests have a quarter: 2 units.
        assert_eq!(a.admit(3 * UNIT, true).unwrap_err().status, 503);
        let anon = a.admit(UNIT, true).unwrap();
        // Three requests in flight: the fourth is refused whatever its size.
        assert_eq!(a.admit(1, false).unwrap_err().code, "PGRST_BUSY");
        drop((big, small, anon));
        assert!(a.admit(8 * UNIT, false).is_ok());
    }

    #[test]
    fn content_types() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONTENT_TYPE, v.parse().unwrap());
            m
        };
        assert!(check_content_type(&HeaderMap::new()).is_ok());
        assert!(check_content_type(&h("application/json")).is_ok());
        assert!(check_content_type(&h("Application/JSON; charset=utf-8")).is_ok());
        let e = check_content_type(&h("text/plain;charset=UTF-8")).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str(), e.message.as_str()),
            (400, "PGRST102", "Content-Type not acceptable: text/plain")
        );
        assert!(check_content_type(&h("application/x-www-form-urlencoded")).is_err());
    }
}
