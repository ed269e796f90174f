//! `POST /rpc/<function>`: finds the function in `pg_proc`, fills its named
//! parameters from the JSON body the way PostgREST does
//! (`jsonb_to_record(body) AS _(p_a type, ...)`, so each value goes through
//! its SQL type's input), and runs it in one transaction with the caller's
//! role and claims.
//!
//! The body is checked to be JSON and its top-level keys are read without
//! building a JSON tree; PostgreSQL gets the body's bytes as they came, and
//! the answer's JSON text is passed back as it comes (no tree either way).

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, BytesMut};
use deadpool_postgres::{Pool, PoolError};
use futures_util::future::{join, join5, try_join, try_join3};
use serde::de::IgnoredAny;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::api_error::ApiError;
use super::auth::Caller;

/// The only schema exposed (PostgREST's `db-schemas` default on Supabase).
pub const EXPOSED_SCHEMA: &str = "public";

/// One input parameter of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Param {
    /// Its name (`None` for unnamed parameters).
    name: Option<String>,
    /// Its type as SQL text (`format_type`).
    sql_type: String,
    /// Whether it has a default (may be left out).
    has_default: bool,
}

/// What the gateway needs to know to call a function.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Function {
    name: String,
    params: Vec<Param>,
    /// VOLATILE functions run read-write; others in a read-only transaction.
    volatile: bool,
    returns_set: bool,
    returns_void: bool,
    /// Returns `json` or `jsonb`: its text is the answer as is.
    returns_json: bool,
}

impl Function {
    /// Whether the function takes the whole body (one unnamed json/jsonb parameter).
    fn takes_whole_body(&self) -> bool {
        self.params.len() == 1
            && self.params[0].name.is_none()
            && matches!(self.params[0].sql_type.as_str(), "json" | "jsonb")
    }

    /// Whether the body's keys fit this function's named parameters.
    fn accepts(&self, keys: &BTreeSet<&str>) -> bool {
        let names: BTreeSet<&str> = self
            .params
            .iter()
            .filter_map(|p| p.name.as_deref())
            .collect();
        keys.iter().all(|k| names.contains(k))
            && self
                .params
                .iter()
                .all(|p| p.has_default || p.name.as_deref().is_some_and(|n| keys.contains(n)))
    }
}

/// Quotes an identifier for SQL text.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

const LOOKUP_SQL: &str = "\
select p.proname::text, p.proargnames, \
       array(select format_type(t, null) from unnest(p.proargtypes::oid[]) with ordinality u(t, i) order by i), \
       p.proargmodes::text[], p.pronargdefaults::int, p.provolatile::text, p.proretset, \
       p.prorettype = 'void'::regtype, p.prorettype in ('json'::regtype, 'jsonb'::regtype) \
  from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace \
 where n.nspname = $1 and p.proname = $2 and p.prokind = 'f'";

const ROLE_SETTINGS_SQL: &str = "\
select unnest(s.setconfig) from pg_catalog.pg_db_role_setting s \
  join pg_catalog.pg_roles r on r.oid = s.setrole \
 where r.rolname = $1 \
   and s.setdatabase in (0, (select d.oid from pg_catalog.pg_database d where d.datname = current_database())) \
 order by s.setdatabase";

/// Sets the caller's role and claims for the rest of the transaction.
const CLAIMS_SQL: &str = "\
select set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
       set_config('request.method', 'POST', true), set_config('request.path', $3, true)";

/// Applies the role's settings (names, values) for the rest of the
/// transaction, in order.
const APPLY_SETTINGS_SQL: &str = "\
select set_config(u.k, u.v, true) from unnest($1::text[], $2::text[]) with ordinality as u(k, v, i) order by u.i";

fn row_to_function(row: &tokio_postgres::Row) -> Result<Function, tokio_postgres::Error> {
    let name: String = row.try_get(0)?;
    let arg_names: Option<Vec<String>> = row.try_get(1)?;
    let types: Vec<String> = row.try_get(2)?;
    let modes: Option<Vec<String>> = row.try_get(3)?;
    let n_defaults: i32 = row.try_get(4)?;
    let volatility: String = row.try_get(5)?;
    let returns_set: bool = row.try_get(6)?;
    let returns_void: bool = row.try_get(7)?;
    let returns_json: bool = row.try_get(8)?;
    // proargnames covers every argument (IN and OUT) when proargmodes is set;
    // proargtypes only the IN ones.
    let in_names: Vec<Option<String>> = match (&arg_names, &modes) {
        (Some(names), Some(modes)) => names
            .iter()
            .zip(modes)
            .filter(|(_, m)| matches!(m.as_str(), "i" | "b" | "v"))
            .map(|(n, _)| Some(n.clone()).filter(|n| !n.is_empty()))
            .collect(),
        (Some(names), None) => names
            .iter()
            .map(|n| Some(n.clone()).filter(|n| !n.is_empty()))
            .collect(),
        (None, _) => vec![None; types.len()],
    };
    let first_default = types
        .len()
        .saturating_sub(usize::try_from(n_defaults).unwrap_or(0));
    let params = types
        .into_iter()
        .enumerate()
        .map(|(i, sql_type)| Param {
            name: in_names.get(i).cloned().flatten(),
            sql_type,
            has_default: i >= first_default,
        })
        .collect();
    Ok(Function {
        name,
        params,
        volatile: volatility == "v",
        returns_set,
        returns_void,
        returns_json,
    })
}

/// JSON text sent to PostgreSQL as a `json`/`jsonb` parameter as is.
#[derive(Debug)]
struct RawJson<'a>(&'a [u8]);

impl ToSql for RawJson<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            // jsonb's binary format: a version byte, then the text.
            out.put_u8(1);
        }
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON || *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// What the gateway needs to know of a body: whether it is a JSON object
/// and its top-level keys. The body is validated as JSON without building a
/// tree (an empty body is `{}`).
///
/// # Errors
/// 400 PGRST102 "Empty or invalid json" for anything that is not JSON.
fn body_shape(body: &[u8]) -> Result<(bool, BTreeSet<String>), ApiError> {
    let invalid = |e: serde_json::Error| {
        ApiError::new(400, "PGRST102", "Empty or invalid json").with_details(e.to_string())
    };
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Ok((true, BTreeSet::new())),
        Some(b'{') => {
            let map: BTreeMap<String, IgnoredAny> =
                serde_json::from_slice(body).map_err(invalid)?;
            Ok((true, map.into_keys().collect()))
        }
        Some(_) => {
            serde_json::from_slice::<IgnoredAny>(body).map_err(invalid)?;
            Ok((false, BTreeSet::new()))
        }
    }
}

/// The SQL that calls `f` with the body's keys as named arguments; `$1` is
/// the body as jsonb. It returns the result as JSON text.
fn call_sql(f: &Function, keys: &BTreeSet<&str>) -> String {
    let target = format!("{}.{}", quote_ident(EXPOSED_SCHEMA), quote_ident(&f.name));
    let (args, from) = if f.takes_whole_body() {
        ("$1::jsonb".to_owned(), String::new())
    } else {
        let used: Vec<&Param> = f
            .params
            .iter()
            .filter(|p| p.name.as_deref().is_some_and(|n| keys.contains(n)))
            .collect();
        let args = used
            .iter()
            .filter_map(|p| p.name.as_deref())
            .map(|n| format!("{q} := _.{q}", q = quote_ident(n)))
            .collect::<Vec<_>>()
            .join(", ");
        let columns = used
            .iter()
            .filter_map(|p| {
                p.name
                    .as_deref()
                    .map(|n| format!("{} {}", quote_ident(n), p.sql_type))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let from = if used.is_empty() {
            // No argument used (a function without parameters, or only
            // defaults): the statement still takes the body as $1.
            " from (select $1::jsonb) as _b".to_owned()
        } else {
            format!(" from jsonb_to_record($1::jsonb) as _({columns})")
        };
        (args, from)
    };
    if f.returns_void {
        format!("select null::text from (select {target}({args}){from}) as _v")
    } else if f.returns_set {
        if from.is_empty() {
            format!(
                "select coalesce(jsonb_agg(to_jsonb(_r)), '[]'::jsonb)::text from {target}({args}) as _r"
            )
        } else {
            format!(
                "select coalesce(jsonb_agg(to_jsonb(_r)), '[]'::jsonb)::text{from}, lateral {target}({args}) as _r"
            )
        }
    } else if f.returns_json {
        // json and jsonb are answered as their text: no conversion (a page
        // of changes built as `json` text is not parsed into jsonb again).
        format!("select ({target}({args}))::text{from}")
    } else {
        format!("select to_jsonb({target}({args}))::text{from}")
    }
}

/// The result of a call: the JSON text to answer, or nothing (void
/// functions, 204).
pub type CallResult = Option<String>;

/// Calls `function` with `body` as `caller`, in one transaction.
///
/// # Errors
/// PostgREST-style [`ApiError`]s: PGRST102 (body), PGRST202 (no such
/// function), PGRST003 (pool timeout), or the database error, mapped.
pub async fn call(
    pool: &Pool,
    caller: &Caller,
    function: &str,
    body: &[u8],
    path: &str,
) -> Result<CallResult, ApiError> {
    let (is_object, owned_keys) = body_shape(body)?;
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let auth = caller.authenticated;
    let pg = |e: tokio_postgres::Error| ApiError::from_pg(&e, auth);
    let client = pool.get().await.map_err(|e| match e {
        PoolError::Timeout(_) => ApiError::new(
            504,
            "PGRST003",
            "Timed out acquiring connection from connection pool.",
        ),
        other => ApiError::new(503, "PGRST000", "Could not connect with the database")
            .with_details(other.to_string()),
    })?;

    // Round trip 1: the function's signature and the role's settings, both
    // read outside the request's transaction, sent together.
    let (lookup, settings_stmt) = try_join(
        client.prepare_cached(LOOKUP_SQL),
        client.prepare_cached(ROLE_SETTINGS_SQL),
    )
    .await
    .map_err(pg)?;
    let (found, settings_rows) = join(
        client.query(&lookup, &[&EXPOSED_SCHEMA, &function]),
        client.query(&settings_stmt, &[&caller.role]),
    )
    .await;
    let candidates = found
        .map_err(pg)?
        .iter()
        .map(row_to_function)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pg)?;
    let keys: BTreeSet<&str> = owned_keys.iter().map(String::as_str).collect();
    let chosen = candidates
        .iter()
        .filter(|f| {
            if is_object {
                f.accepts(&keys) || f.takes_whole_body()
            } else {
                f.takes_whole_body()
            }
        })
        .max_by_key(|f| f.params.len());
    let Some(f) = chosen else {
        if !is_object && !candidates.is_empty() {
            return Err(ApiError::new(400, "PGRST102", "Empty or invalid json")
                .with_details("the body of an RPC call must be a JSON object of named arguments"));
        }
        let list = keys.iter().copied().collect::<Vec<_>>().join(", ");
        return Err(ApiError::new(
            404,
            "PGRST202",
            format!("Could not find the function {EXPOSED_SCHEMA}.{function}({list}) in the schema cache"),
        )
        .with_details(format!(
            "Searched for the function {EXPOSED_SCHEMA}.{function} with parameters {list} or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache."
        ))
        .with_hint("If a new function was created in the database with this name and parameters, try reloading the schema cache."));
    };

    // `name=value` settings of the role (ALTER ROLE ... SET), applied
    // inside the transaction in the order read (database-specific last).
    let settings_rows = settings_rows.map_err(pg)?;
    let (setting_names, setting_values): (Vec<&str>, Vec<&str>) = settings_rows
        .iter()
        .map(|r| r.try_get::<_, &str>(0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(pg)?
        .into_iter()
        .filter_map(|s| s.split_once('='))
        .unzip();

    let sql = call_sql(f, &keys);
    let (claims_stmt, apply_stmt, call_stmt) = try_join3(
        client.prepare_cached(CLAIMS_SQL),
        client.prepare_cached(APPLY_SETTINGS_SQL),
        client.prepare_cached(&sql),
    )
    .await
    .map_err(pg)?;
    let claims = caller.claims.to_string();
    let body_param = RawJson(body);
    // Round trip 2: the transaction, sent as one pipeline. Every statement
    // is prepared, so all five go out in this order on the first poll
    // (`join5` polls its futures in argument order, and each sends its
    // request before its first await); PostgreSQL runs them in that order.
    // When one fails, the transaction is aborted: the statements after it
    // fail (25P02) without running — the call never runs without the
    // role and claims — and the `commit` ends it as a rollback. The first
    // error is the one answered.
    let (begun, claimed, applied, called, committed) = join5(
        client.batch_execute(if f.volatile {
            "begin"
        } else {
            "begin read only"
        }),
        client.execute(&claims_stmt, &[&caller.role, &claims, &path]),
        client.execute(&apply_stmt, &[&setting_names, &setting_values]),
        client.query_one(&call_stmt, &[&body_param]),
        client.batch_execute("commit"),
    )
    .await;
    begun.map_err(pg)?;
    claimed.map_err(|e| {
        // An unknown or forbidden role in a valid JWT: PostgREST answers 401.
        let mut err = ApiError::from_pg(&e, auth);
        if err.code == "22023" || err.code == "42501" {
            err.status = 401;
        }
        err
    })?;
    applied.map_err(pg)?;
    let row = called.map_err(pg)?;
    committed.map_err(pg)?;
    let result: Option<String> = row.try_get(0).map_err(pg)?;
    if f.returns_void {
        return Ok(None);
    }
    Ok(Some(result.unwrap_or_else(|| "null".to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(params: &[(&str, &str, bool)]) -> Function {
        Function {
            name: "fn".into(),
            params: params
                .iter()
                .map(|(n, t, d)| Param {
                    name: Some(n.to_string()).filter(|n| !n.is_empty()),
                    sql_type: t.to_string(),
                    has_default: *d,
                })
                .collect(),
            volatile: true,
            returns_set: false,
            returns_void: false,
            returns_json: false,
        }
    }

    #[test]
    fn overload_matching() {
        let pull = f(&[("p_ws", "uuid", false), ("p_limit", "integer", true)]);
        assert!(pull.accepts(&["p_ws"].into()));
        assert!(pull.accepts(&["p_ws", "p_limit"].into()));
        assert!(!pull.accepts(&["p_limit"].into()));
        assert!(!pull.accepts(&["p_ws", "nope"].into()));
        assert!(f(&[("", "jsonb", false)]).takes_whole_body());
    }

    #[test]
    fn call_sql_shapes() {
        let pull = f(&[("p_ws", "uuid", false), ("p\"x", "integer", true)]);
        assert_eq!(
            call_sql(&pull, &["p_ws"].into()),
            "select to_jsonb(\"public\".\"fn\"(\"p_ws\" := _.\"p_ws\"))::text from jsonb_to_record($1::jsonb) as _(\"p_ws\" uuid)"
        );
        assert!(call_sql(&pull, &["p\"x", "p_ws"].into()).contains("\"p\"\"x\" integer"));
        assert_eq!(
            call_sql(&f(&[]), &BTreeSet::new()),
            "select to_jsonb(\"public\".\"fn\"())::text from (select $1::jsonb) as _b"
        );
        let json = Function {
            returns_json: true,
            ..pull.clone()
        };
        assert_eq!(
            call_sql(&json, &["p_ws"].into()),
            "select (\"public\".\"fn\"(\"p_ws\" := _.\"p_ws\"))::text from jsonb_to_record($1::jsonb) as _(\"p_ws\" uuid)"
        );
    }

    #[test]
    fn body_shapes() {
        assert_eq!(body_shape(b"  ").unwrap(), (true, BTreeSet::new()));
        let (obj, keys) = body_shape(br#"{"b": [1, {"x": 2}], "a": null, "b": 3}"#).unwrap();
        assert!(obj);
        assert_eq!(keys, ["a".to_owned(), "b".to_owned()].into());
        assert_eq!(body_shape(b"[1, 2]").unwrap(), (false, BTreeSet::new()));
        for bad in [&b"{not json"[..], b"{\"a\": 1} trailing", b"nul"] {
            assert_eq!(body_shape(bad).unwrap_err().code, "PGRST102");
        }
    }
}
