//! A lint for the functions of the migrated database: nothing a caller puts
//! in its own `pg_temp` schema (or in any other schema it can write) can be
//! picked up by a function, least of all a `SECURITY DEFINER` one, which
//! runs as the migration's owner.
//!
//! PostgreSQL looks up *type* and *relation* names in the session's
//! temporary schema FIRST unless the function's `search_path` names
//! `pg_temp` explicitly, and then where it names it (functions and operators
//! are never looked up there). So:
//!
//! 1. **Setting.** Every function of the migration's schemas (`public`,
//!    `supamerge_private`) pins `search_path = pg_catalog, pg_temp`: only
//!    `pg_catalog` before `pg_temp`, `pg_temp` last. A function of `auth`
//!    (the host's) either sets nothing (it inherits the safe path of the
//!    definer function calling it) or a safe path.
//! 2. **Bodies** (a textual check of `pg_proc.prosrc`, comments and string
//!    literals stripped): in a type position (`::T`, a plpgsql `DECLARE`
//!    type, `CAST(x AS T)`) and in a relation position (`FROM`, `JOIN`, a
//!    comma in a `FROM` list, `UPDATE`, `INSERT INTO`), an unqualified name
//!    is allowed only if it cannot resolve to `pg_temp`: with a safe setting,
//!    a type or relation of `pg_catalog` (found first) or a name the grammar
//!    maps to `pg_catalog` itself (`int`, `bigint`, `boolean`, ...); with an
//!    unsafe or missing setting, only the grammar's names. CTE names,
//!    parameters and plpgsql variables are not relations. `EXECUTE` (dynamic
//!    SQL, which cannot be checked) and `'name'::regclass` / `::regtype` on an
//!    unqualified literal are refused too.
//!
//! [`lint_database`] queries `pg_proc` and returns every violation;
//! `tests/server_security.rs` requires none on the migrated database and shows
//! that the lint catches the hijack issue 11 reproduced.
#![allow(dead_code)]

use std::collections::BTreeSet;

/// The schemas whose functions must pin the safe `search_path`.
pub const OWN_SCHEMAS: [&str; 2] = ["public", "supamerge_private"];
/// The host's schema: its functions may inherit the caller's path.
pub const HOST_SCHEMAS: [&str; 1] = ["auth"];

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `schema.name` of the function.
    pub function: String,
    /// What is wrong, in words.
    pub problem: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.function, self.problem)
    }
}

/// A function as the lint sees it.
#[derive(Debug, Clone)]
pub struct FunctionSource {
    /// `schema.name`.
    pub name: String,
    /// The schema.
    pub schema: String,
    /// SECURITY DEFINER.
    pub definer: bool,
    /// `pg_proc.proconfig` entries (`search_path=...`).
    pub config: Vec<String>,
    /// `pg_proc.prosrc`.
    pub body: String,
    /// `sql` or `plpgsql` (others are not checked textually).
    pub language: String,
    /// Parameter names.
    pub params: Vec<String>,
}

/// What `pg_catalog` holds: the names an unqualified reference finds before
/// `pg_temp` under a safe setting.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Type names of `pg_catalog`.
    pub types: BTreeSet<String>,
    /// Relation names of `pg_catalog`.
    pub relations: BTreeSet<String>,
}

/// Type names the SQL grammar itself maps to `pg_catalog` types: never
/// looked up in a schema.
const GRAMMAR_TYPES: &[&str] = &[
    "int",
    "integer",
    "smallint",
    "bigint",
    "real",
    "float",
    "double",
    "decimal",
    "dec",
    "numeric",
    "boolean",
    "char",
    "character",
    "varchar",
    "nchar",
    "national",
    "bit",
    "time",
    "timestamp",
    "interval",
];

/// Reads the functions of `OWN_SCHEMAS` and `HOST_SCHEMAS` and the catalog
/// names, and lints them.
pub async fn lint_database(c: &tokio_postgres::Client) -> Vec<Violation> {
    let schemas: Vec<String> = OWN_SCHEMAS
        .iter()
        .chain(HOST_SCHEMAS.iter())
        .map(|s| s.to_string())
        .collect();
    let rows = c
        .query(
            "select n.nspname::text, p.proname::text, p.prosecdef, \
                    coalesce(p.proconfig, '{}'::text[]), p.prosrc, l.lanname::text, \
                    coalesce(p.proargnames, '{}'::text[]) \
               from pg_catalog.pg_proc p \
               join pg_catalog.pg_namespace n on n.oid = p.pronamespace \
               join pg_catalog.pg_language l on l.oid = p.prolang \
              where n.nspname = any($1) and p.prokind = 'f' \
              order by 1, 2",
            &[&schemas],
        )
        .await
        .expect("read pg_proc");
    let functions: Vec<FunctionSource> = rows
        .iter()
        .map(|r| {
            let schema: String = r.get(0);
            let name: String = r.get(1);
            FunctionSource {
                name: format!("{schema}.{name}"),
                schema,
                definer: r.get(2),
                config: r.get(3),
                body: r.get(4),
                language: r.get(5),
                params: r.get(6),
            }
        })
        .collect();
    let names = |sql: &str| {
        let sql = sql.to_owned();
        async move {
            c.query(sql.as_str(), &[])
                .await
                .expect("read catalog names")
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<BTreeSet<String>>()
        }
    };
    let catalog = Catalog {
        types: names(
            "select typname::text from pg_catalog.pg_type \
              where typnamespace = 'pg_catalog'::pg_catalog.regnamespace",
        )
        .await,
        relations: names(
            "select relname::text from pg_catalog.pg_class \
              where relnamespace = 'pg_catalog'::pg_catalog.regnamespace",
        )
        .await,
    };
    assert!(
        functions.iter().any(|f| f.definer),
        "the lint found no SECURITY DEFINER function: is the migration loaded?"
    );
    lint_functions(&functions, &catalog)
}

/// Lints functions against the catalog names.
pub fn lint_functions(functions: &[FunctionSource], catalog: &Catalog) -> Vec<Violation> {
    let mut out = Vec::new();
    for f in functions {
        let path = search_path(&f.config);
        let safe = path.as_deref().is_some_and(path_is_safe);
        let host = HOST_SCHEMAS.contains(&f.schema.as_str());
        let mut bad = |problem: String| {
            out.push(Violation {
                function: f.name.clone(),
                problem,
            })
        };
        match (&path, safe, host) {
            (_, true, _) => {}
            (None, _, true) => {}
            (None, _, false) => bad(format!(
                "{}no search_path setting: pin `set search_path = pg_catalog, pg_temp`",
                if f.definer {
                    "SECURITY DEFINER with "
                } else {
                    ""
                }
            )),
            (Some(p), false, _) => bad(format!(
                "{}search_path = {:?} lets pg_temp (or a writable schema) come first: \
                 use `pg_catalog, pg_temp` (pg_temp last)",
                if f.definer {
                    "SECURITY DEFINER with "
                } else {
                    ""
                },
                p.join(", ")
            )),
        }
        if f.language == "sql" || f.language == "plpgsql" {
            // Without a pinned setting a host function inherits its caller's
            // path, which under our definers is safe.
            let temp_last = safe || (path.is_none() && host);
            for problem in lint_body(f, catalog, temp_last) {
                bad(problem);
            }
        }
    }
    out
}

/// The `search_path` of a function's settings, as a list of schema names.
pub fn search_path(config: &[String]) -> Option<Vec<String>> {
    config.iter().find_map(|c| {
        c.strip_prefix("search_path=").map(|v| {
            v.split(',')
                .map(|s| s.trim().trim_matches('"').to_ascii_lowercase())
                .filter(|s| !s.is_empty() && s != "''")
                .collect()
        })
    })
}

/// `pg_temp` named last and nothing but `pg_catalog` before it.
pub fn path_is_safe(path: &[String]) -> bool {
    match path.split_last() {
        Some((last, rest)) => last == "pg_temp" && rest.iter().all(|s| s == "pg_catalog"),
        None => false,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An identifier, lower-cased (quoted identifiers keep their case).
    Ident(String),
    /// A string literal's contents.
    Lit(String),
    Num,
    /// `::`
    Cast,
    /// `:=`
    Assign,
    Punct(char),
}

/// Splits SQL / plpgsql text into tokens, dropping comments and keeping
/// string literals as [`Tok::Lit`].
fn tokenize(src: &str) -> Vec<Tok> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && next == Some('-') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '\'' || ((c == 'e' || c == 'E') && next == Some('\'')) {
            let escapes = c != '\'';
            if escapes {
                i += 1;
            }
            i += 1;
            let mut lit = String::new();
            while i < b.len() {
                if escapes && b[i] == '\\' {
                    if let Some(n) = b.get(i + 1) {
                        lit.push(*n);
                    }
                    i += 2;
                } else if b[i] == '\'' {
                    if b.get(i + 1) == Some(&'\'') {
                        lit.push('\'');
                        i += 2;
                    } else {
                        i += 1;
                        break;
                    }
                } else {
                    lit.push(b[i]);
                    i += 1;
                }
            }
            out.push(Tok::Lit(lit));
        } else if c == '$' && next.is_some_and(|n| n == '$' || n.is_alphabetic() || n == '_') {
            // Dollar quoting: $tag$ ... $tag$.
            let mut j = i + 1;
            while j < b.len() && b[j] != '$' && (b[j].is_alphanumeric() || b[j] == '_') {
                j += 1;
            }
            if b.get(j) == Some(&'$') {
                let tag: String = b[i..=j].iter().collect();
                let rest: String = b[j + 1..].iter().collect();
                match rest.find(&tag) {
                    Some(end) => {
                        out.push(Tok::Lit(rest[..end].to_owned()));
                        i = j + 1 + rest[..end].chars().count() + tag.chars().count();
                    }
                    None => i = b.len(),
                }
            } else {
                i = j;
            }
        } else if c == '$' {
            // $1 parameter reference.
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Tok::Num);
        } else if c == '"' {
            let mut j = i + 1;
            let mut id = String::new();
            while j < b.len() {
                if b[j] == '"' {
                    if b.get(j + 1) == Some(&'"') {
                        id.push('"');
                        j += 2;
                        continue;
                    }
                    break;
                }
                id.push(b[j]);
                j += 1;
            }
            out.push(Tok::Ident(id));
            i = j + 1;
        } else if c.is_alphabetic() || c == '_' {
            let mut j = i;
            while j < b.len() && (b[j].is_alphanumeric() || b[j] == '_' || b[j] == '$') {
                j += 1;
            }
            out.push(Tok::Ident(
                b[i..j].iter().collect::<String>().to_ascii_lowercase(),
            ));
            i = j;
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num);
        } else if c == ':' && next == Some(':') {
            out.push(Tok::Cast);
            i += 2;
        } else if c == ':' && next == Some('=') {
            out.push(Tok::Assign);
            i += 2;
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// Keywords that end a `FROM` list.
const FROM_LIST_END: &[&str] = &[
    "where",
    "group",
    "order",
    "limit",
    "having",
    "window",
    "union",
    "except",
    "intersect",
    "on",
    "using",
    "returning",
    "into",
    "for",
    "offset",
    "loop",
    "then",
    "set",
    "values",
    "select",
    "do",
    "fetch",
];

/// Function calls whose arguments use `FROM` as a keyword.
const FROM_FUNCTIONS: &[&str] = &[
    "substring",
    "extract",
    "trim",
    "overlay",
    "position",
    "substr",
];

/// Words that follow `FROM` / `JOIN` before the relation.
const FROM_MODIFIERS: &[&str] = &["lateral", "only"];

fn lint_body(f: &FunctionSource, catalog: &Catalog, temp_last: bool) -> Vec<String> {
    let toks = tokenize(&f.body);
    let mut problems = Vec::new();
    let mut locals: BTreeSet<String> = f.params.iter().map(|p| p.to_ascii_lowercase()).collect();
    // CTE and window names: `name as (`.
    for w in toks.windows(3) {
        if let (Tok::Ident(n), Tok::Ident(a), Tok::Punct('(')) = (&w[0], &w[1], &w[2]) {
            if a == "as" {
                locals.insert(n.clone());
            }
        }
    }
    // plpgsql: DECLARE sections (name [constant] type ...;) and loop variables.
    let mut decl_types: Vec<String> = Vec::new();
    if f.language == "plpgsql" {
        let mut i = 0;
        let mut in_declare = false;
        let mut at_statement_start = true;
        while i < toks.len() {
            match &toks[i] {
                Tok::Ident(k) if k == "declare" => {
                    in_declare = true;
                    at_statement_start = true;
                }
                Tok::Ident(k) if k == "begin" => in_declare = false,
                Tok::Ident(name) if in_declare && at_statement_start => {
                    locals.insert(name.clone());
                    let mut j = i + 1;
                    if ident(toks.get(j)) == Some("constant") {
                        j += 1;
                    }
                    match ident(toks.get(j)) {
                        Some("alias") | Some("cursor") | None => {}
                        Some(t) => {
                            let qualified = toks.get(j + 1) == Some(&Tok::Punct('.'));
                            let rowtype = toks.get(j + 1) == Some(&Tok::Punct('%'));
                            if !qualified {
                                decl_types.push(if rowtype {
                                    format!("%{t}")
                                } else {
                                    t.to_owned()
                                });
                            }
                        }
                    }
                    at_statement_start = false;
                }
                Tok::Punct(';') => at_statement_start = true,
                Tok::Ident(k) if k == "for" => {
                    if let Some(v) = ident(toks.get(i + 1)) {
                        if ident(toks.get(i + 2)) == Some("in") {
                            locals.insert(v.to_owned());
                        }
                    }
                }
                _ => at_statement_start = false,
            }
            i += 1;
        }
        for t in decl_types {
            match t.strip_prefix('%') {
                Some(rel) => problems.push(format!(
                    "declares a variable of `{rel}%ROWTYPE`/`%TYPE` without a schema: qualify it"
                )),
                None => {
                    if let Some(p) = type_problem(&t, catalog, temp_last) {
                        problems.push(format!("DECLARE type {p}"));
                    }
                }
            }
        }
        for (i, t) in toks.iter().enumerate() {
            let starts = i == 0
                || matches!(toks[i - 1], Tok::Punct(';'))
                || ident(toks.get(i - 1)) == Some("begin")
                || ident(toks.get(i - 1)) == Some("then")
                || ident(toks.get(i - 1)) == Some("loop")
                || ident(toks.get(i - 1)) == Some("else");
            if starts && matches!(t, Tok::Ident(k) if k == "execute") {
                problems.push(
                    "uses EXECUTE (dynamic SQL cannot be checked for unqualified names)".into(),
                );
            }
        }
    }

    // Paren stack: the identifier before each `(` (to know function calls
    // and CAST), and the FROM-list state per depth.
    let mut openers: Vec<Option<String>> = Vec::new();
    let mut from_list_depth: Option<usize> = None;
    for i in 0..toks.len() {
        let prev = if i > 0 { toks.get(i - 1) } else { None };
        match &toks[i] {
            Tok::Punct('(') => openers.push(ident(prev).map(str::to_owned)),
            Tok::Punct(')') => {
                openers.pop();
                if from_list_depth.is_some_and(|d| d > openers.len()) {
                    from_list_depth = None;
                }
            }
            Tok::Punct(';') => from_list_depth = None,
            Tok::Cast => {
                if let Some(t) = ident(toks.get(i + 1)) {
                    let qualified = toks.get(i + 2) == Some(&Tok::Punct('.'));
                    if !qualified {
                        if let Some(p) = type_problem(t, catalog, temp_last) {
                            problems.push(format!("cast to {p}"));
                        }
                        if matches!(t, "regclass" | "regtype") {
                            if let Some(Tok::Lit(l)) = prev {
                                if !l.contains('.') {
                                    problems.push(format!(
                                        "'{l}'::{t} looks the name up in the search path: qualify it"
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            Tok::Ident(k) if k == "as" && openers.last() == Some(&Some("cast".to_owned())) => {
                if let Some(t) = ident(toks.get(i + 1)) {
                    if toks.get(i + 2) != Some(&Tok::Punct('.')) {
                        if let Some(p) = type_problem(t, catalog, temp_last) {
                            problems.push(format!("CAST to {p}"));
                        }
                    }
                }
            }
            Tok::Ident(k)
                if FROM_LIST_END.contains(&k.as_str())
                    && from_list_depth == Some(openers.len()) =>
            {
                from_list_depth = None;
            }
            _ => {}
        }
        // Relation positions.
        let kw = ident(Some(&toks[i]));
        let relation_follows = match kw {
            Some("from") => {
                let in_function = openers
                    .last()
                    .and_then(|o| o.as_deref())
                    .is_some_and(|o| FROM_FUNCTIONS.contains(&o));
                let after = ident(prev);
                !in_function && !matches!(after, Some("distinct" | "both" | "leading" | "trailing"))
            }
            Some("join") => true,
            Some("into") => ident(prev) == Some("insert"),
            Some("update") => !matches!(ident(prev), Some("for" | "do" | "key" | "no")),
            _ => matches!(toks[i], Tok::Punct(',')) && from_list_depth == Some(openers.len()),
        };
        if !relation_follows {
            continue;
        }
        if kw == Some("from") || kw == Some("join") {
            from_list_depth = Some(openers.len());
        }
        let mut j = i + 1;
        while ident(toks.get(j)).is_some_and(|w| FROM_MODIFIERS.contains(&w)) {
            j += 1;
        }
        let Some(name) = ident(toks.get(j)) else {
            continue;
        };
        let next = toks.get(j + 1);
        if next == Some(&Tok::Punct('.')) || next == Some(&Tok::Punct('(')) {
            continue; // qualified, or a function call (never looked up in pg_temp)
        }
        if locals.contains(name) {
            continue;
        }
        let in_catalog = catalog.relations.contains(name);
        if !temp_last || !in_catalog {
            problems.push(format!(
                "relation `{name}` without a schema{}: write `public.{name}` (or its schema)",
                if temp_last {
                    " is not in pg_catalog, so pg_temp is searched for it"
                } else {
                    " and pg_temp comes first in this function's search path"
                }
            ));
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

/// Why an unqualified type name could resolve to `pg_temp`, or `None`.
fn type_problem(t: &str, catalog: &Catalog, temp_last: bool) -> Option<String> {
    if GRAMMAR_TYPES.contains(&t) {
        return None;
    }
    if temp_last && catalog.types.contains(t) {
        return None;
    }
    Some(if temp_last {
        format!("`{t}` without a schema: it is not in pg_catalog, so pg_temp is searched for it")
    } else {
        format!(
            "`{t}` without a schema while pg_temp comes first in this function's search path: \
             a caller's `pg_temp.{t}` domain would be used (pin `search_path = pg_catalog, pg_temp` \
             or write `pg_catalog.{t}`)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog {
            types: ["uuid", "text", "jsonb", "int4", "bytea", "bool", "record"]
                .into_iter()
                .map(String::from)
                .collect(),
            relations: ["pg_class"].into_iter().map(String::from).collect(),
        }
    }

    fn f(definer: bool, config: &[&str], language: &str, body: &str) -> FunctionSource {
        FunctionSource {
            name: "public.f".into(),
            schema: "public".into(),
            definer,
            config: config.iter().map(|s| s.to_string()).collect(),
            body: body.into(),
            language: language.into(),
            params: vec!["p_ws".into()],
        }
    }

    const SAFE: &str = "search_path=pg_catalog, pg_temp";

    #[test]
    fn settings() {
        assert!(path_is_safe(&search_path(&[SAFE.into()]).unwrap()));
        assert!(!path_is_safe(
            &search_path(&["search_path=\"\"".into()]).unwrap()
        ));
        assert!(!path_is_safe(
            &search_path(&["search_path=pg_temp, pg_catalog".into()]).unwrap()
        ));
        assert!(!path_is_safe(
            &search_path(&["search_path=public, pg_temp".into()]).unwrap()
        ));
        assert!(!path_is_safe(
            &search_path(&["search_path=pg_catalog".into()]).unwrap()
        ));
    }

    #[test]
    fn the_old_definer_pattern_is_caught() {
        // issue 11: search_path = '' and an unqualified uuid.
        let body = "declare v_uid uuid := auth.uid(); begin insert into public.workspaces (id) values (p_ws); return v_uid::text; end";
        let v = lint_functions(
            &[f(true, &["search_path=\"\""], "plpgsql", body)],
            &catalog(),
        );
        assert!(v.iter().any(|v| v.problem.contains("search_path")), "{v:?}");
        assert!(
            v.iter().any(|v| v.problem.contains("DECLARE type `uuid`")),
            "{v:?}"
        );
        assert!(
            v.iter().any(|v| v.problem.contains("cast to `text`")),
            "{v:?}"
        );
        // The same body with the safe setting passes.
        assert!(lint_functions(&[f(true, &[SAFE], "plpgsql", body)], &catalog()).is_empty());
    }

    #[test]
    fn unqualified_relations_and_types_are_caught() {
        let cases = [
            ("select 1 from workspaces w", "relation `workspaces`"),
            (
                "select 1 from public.x a join members m on true",
                "relation `members`",
            ),
            ("select 1 from public.x a, members m", "relation `members`"),
            ("insert into members values (1)", "relation `members`"),
            ("update members set a = 1", "relation `members`"),
            ("select 1::my_type", "cast to `my_type`"),
            ("select cast(1 as my_type)", "CAST to `my_type`"),
            ("select 'members'::regclass", "'members'::regclass"),
        ];
        for (body, want) in cases {
            let v = lint_functions(&[f(true, &[SAFE], "sql", body)], &catalog());
            assert!(v.iter().any(|v| v.problem.contains(want)), "{body}: {v:?}");
        }
        let v = lint_functions(
            &[f(
                true,
                &[SAFE],
                "plpgsql",
                "declare r members%rowtype; begin execute 'x'; end",
            )],
            &catalog(),
        );
        assert!(
            v.iter().any(|v| v.problem.contains("members%ROWTYPE")),
            "{v:?}"
        );
        assert!(v.iter().any(|v| v.problem.contains("EXECUTE")), "{v:?}");
    }

    #[test]
    fn what_is_not_a_relation_or_a_risky_type() {
        let body = "declare v_i int := 0; v_b bytea; v_n bigint; begin \
            with kept as (select 1) select count(*) into v_n from kept k, pg_class c; \
            for v_i in 1 .. 3 loop v_b := substring(v_b from v_i for 1); end loop; \
            if p_ws is not distinct from null then return; end if; \
            perform 1 from jsonb_array_elements('[]'::jsonb) h where x::int4 = 1 for update; \
            insert into public.t (a) values (1) on conflict do update set a = 2; \
            raise exception 'select * from workspaces'; -- from workspaces \n end";
        let v = lint_functions(&[f(true, &[SAFE], "plpgsql", body)], &catalog());
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn host_functions_may_inherit_the_path() {
        let mut g = f(false, &[], "sql", "select current_setting('x')::uuid");
        g.schema = "auth".into();
        assert!(lint_functions(&[g.clone()], &catalog()).is_empty());
        g.config = vec!["search_path=\"\"".into()];
        assert_eq!(lint_functions(&[g], &catalog()).len(), 2);
        // Our own functions must pin it.
        let v = lint_functions(&[f(false, &[], "sql", "select 1")], &catalog());
        assert!(v[0].problem.contains("no search_path"), "{v:?}");
    }
}
