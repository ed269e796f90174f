//! The module graph, checked: every top-level module sits in a layer and
//! imports only modules of strictly lower layers. So there is no import
//! cycle between modules and nothing low imports something high
//! (`docs/architecture.md` draws the picture).
//!
//! The test reads every `.rs` file under `src/`, takes each `crate::name`
//! outside comments (a `use`, a path in code, a `#[serde(with = "crate::…")]`
//! string) and resolves `name` to a module: a module itself, or an item the
//! crate root re-exports from it. A new module must be given a layer here.
//! `cargo test --lib layering -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    // foundation: ids, clocks, the change-hash type, JSON pointers
    &["id", "clock", "hash", "pointer"],
    // pure model and the protocol: conflict rule, wire types, the store
    &["conflict", "protocol", "store"],
    &["entity"],
    &["migrate"],
    // backends
    &["remote"],
    // the crate error gathers the errors below
    &["error"],
    &["replica"],
    // what drives a replica: one sync pass and the engine; checking and
    // repairing its directory
    &["sync", "doctor"],
    // facades and tools
    &["raw", "test_util", "demo", "gateway", "archive"],
    &["bench"],
    &["cli"],
];

/// Modules that must stay free of I/O runtimes: no tokio, sled or reqwest.
const NO_IO: &[&str] = &[
    "id", "clock", "hash", "pointer", "conflict", "protocol", "entity", "migrate",
];

/// Folders whose files must stay pure: no I/O runtime (tokio, sled,
/// reqwest), no clock read (`SystemTime`, `Instant`, the crate's
/// `SystemClock`, a replica's `now_ms`) and no entropy (`thread_rng`,
/// `from_entropy`, `OsRng`): the sync core — a pass and the schedule of
/// passes — takes the time, every outcome and its seed as input
/// (`src/sync/core/`).
const PURE_DIRS: &[&str] = &["sync/core"];

/// What a pure file must not name.
const IMPURE: &[&str] = &[
    "tokio",
    "sled",
    "reqwest",
    "SystemTime",
    "Instant",
    "SystemClock",
    "now_ms",
    "thread_rng",
    "from_entropy",
    "OsRng",
];

/// The impure names a line of code uses (a path `name::`, a `use name`, or
/// the clock types by name).
fn impure_uses(line: &str) -> Vec<&'static str> {
    IMPURE
        .iter()
        .copied()
        .filter(|name| {
            line.match_indices(name).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + name.len()..].chars().next();
                let starts_word = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                let ends_word = !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                starts_word && ends_word
            })
        })
        .collect()
}

/// Files that are not part of the layered graph: the crate root (it only
/// declares modules and re-exports) and this check.
const OUTSIDE: &[&str] = &["lib", "layering"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/replica/apply.rs` →
/// `replica`); `None` for the binaries under `src/bin/`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    if first == "bin" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Lines of code: comment lines removed.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim_start().starts_with("//"))
}

/// The identifiers following `crate::` in `line`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(i) = line[from..].find("crate::") {
        let at = from + i;
        from = at + "crate::".len();
        let preceded_by_ident =
            at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        if preceded_by_ident {
            continue;
        }
        let ident: String = line[from..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !ident.is_empty() {
            out.push(ident);
        }
    }
    out
}

/// Items the crate root re-exports, by name, with the module they come from.
fn root_reexports(lib_rs: &str) -> BTreeMap<String, String> {
    let code: String = code_lines(lib_rs).collect::<Vec<_>>().join("\n");
    let mut map = BTreeMap::new();
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(path) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, rest)) = path.split_once("::") else {
            continue; // `pub use automerge;`: an external crate
        };
        let names = rest.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            let name = name.trim().rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    map
}

/// For each module, the other modules it imports.
type Edges = BTreeMap<String, BTreeSet<String>>;
/// For each module, the I/O runtimes (tokio, sled, reqwest) it uses.
type Runtimes = BTreeMap<String, BTreeSet<&'static str>>;

/// Every module's imports of other top-level modules, and its uses of the
/// I/O runtimes.
fn graph() -> (Edges, Runtimes) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let reexports = root_reexports(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges = Edges::new();
    let mut io = Runtimes::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        if OUTSIDE.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let deps = edges.entry(module.clone()).or_default();
        for line in code_lines(&text) {
            for ident in crate_paths(line) {
                let target = if layer_of(&ident).is_some() {
                    ident
                } else if let Some(m) = reexports.get(&ident) {
                    m.clone()
                } else {
                    panic!(
                        "{}: `crate::{ident}` is neither a module nor a root re-export",
                        file.display()
                    );
                };
                if target != module {
                    deps.insert(target);
                }
            }
            for runtime in ["tokio", "sled", "reqwest"] {
                let used = line.contains(&format!("{runtime}::"))
                    && !line.contains(&format!("_{runtime}::"));
                if used {
                    io.entry(module.clone()).or_default().insert(runtime);
                }
            }
        }
    }
    (edges, io)
}

#[test]
fn every_module_imports_only_lower_layers() {
    let (edges, _) = graph();
    for module in edges.keys() {
        assert!(
            layer_of(module).is_some(),
            "module `{module}` has no layer: add it to LAYERS in src/layering.rs"
        );
    }
    let mut violations = Vec::new();
    for (module, deps) in &edges {
        let own = layer_of(module).unwrap_or(usize::MAX);
        println!("{module} (layer {own}) -> {deps:?}");
        for dep in deps {
            let theirs = layer_of(dep).unwrap_or(usize::MAX);
            if theirs >= own {
                violations.push(format!(
                    "{module} (layer {own}) imports {dep} (layer {theirs})"
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that go sideways or up:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_protocol_and_the_model_use_no_io_runtime() {
    let (edges, io) = graph();
    for module in NO_IO {
        assert!(edges.contains_key(*module), "no module `{module}`");
        assert_eq!(
            io.get(*module),
            None,
            "`{module}` must not use tokio, sled or reqwest"
        );
    }
}

#[test]
fn the_sync_core_uses_no_io_runtime_and_reads_no_clock() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for dir in PURE_DIRS {
        let mut files = Vec::new();
        rust_files(&src.join(dir), &mut files);
        assert!(!files.is_empty(), "no files under src/{dir}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read a source file");
            for line in code_lines(&text) {
                for name in impure_uses(line) {
                    violations.push(format!("{}: uses {name}: {line}", file.display()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the sync core must take time and outcomes as input:\n{}",
        violations.join("\n")
    );
    // The check itself.
    assert_eq!(impure_uses("use tokio::sync::mpsc;"), ["tokio"]);
    assert_eq!(
        impure_uses("let t = std::time::SystemTime::now();"),
        ["SystemTime"]
    );
    assert_eq!(impure_uses("let t = Instant::now();"), ["Instant"]);
    assert_eq!(impure_uses("let t = replica.now_ms();"), ["now_ms"]);
    assert_eq!(impure_uses("let r = rand::thread_rng();"), ["thread_rng"]);
    assert_eq!(
        impure_uses("let r = StdRng::from_entropy();"),
        ["from_entropy"]
    );
    assert!(impure_uses("let resled = tokio_like::x; // InstantX").is_empty());
}

#[test]
fn the_check_sees_imports() {
    // The parser itself: a `use`, a path in code, a serde string, a
    // re-exported root item, and comments ignored.
    assert_eq!(
        crate_paths("use crate::store::{Chunk, Store}; let x = crate::id::DocId::nil();"),
        ["store", "id"]
    );
    assert_eq!(
        crate_paths(r#"#[serde(with = "crate::hash::hex")]"#),
        ["hash"]
    );
    assert!(crate_paths("use other_crate::x;").is_empty());
    let lib =
        "pub use sync::{\n    sync_once, SyncEngine,\n};\npub use automerge;\n// pub use x::Y;";
    let map = root_reexports(lib);
    assert_eq!(map.get("sync_once").map(String::as_str), Some("sync"));
    assert_eq!(map.get("SyncEngine").map(String::as_str), Some("sync"));
    assert!(!map.contains_key("Y") && !map.contains_key("automerge"));
    // And on the real tree: the replica depends on the store, the remotes on
    // the protocol, and the protocol on neither.
    let (edges, _) = graph();
    assert!(edges["replica"].contains("store"));
    assert!(edges["remote"].contains("protocol"));
    assert!(!edges["protocol"].contains("sync") && !edges["protocol"].contains("remote"));
}
