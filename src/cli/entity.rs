//! The entity commands: `create`, `get`, `edit`, `delete`, `list`, `history`,
//! `conflicts`, `resolve`, `info`, each a thin layer over [`Replica`].

use std::io::{Read, Write};
use std::path::Path;

use clap::{ArgGroup, Args};
use serde_json::{json, Value as Json};

use super::{write_json, write_line, CliError, OutputMode};
use crate::entity::EntityError;
use crate::error::Error;
use crate::id::{Collection, DocId, WorkspaceId};
use crate::pointer::JsonPointer;
use crate::replica::Replica;

/// Arguments of `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The workspace id (a UUID).
    pub workspace: String,
    /// The collection name (a letter, then letters, digits, '_', '-', '.'; at most 64).
    pub collection: String,
    /// The entity as a JSON object (`-` reads it from stdin).
    #[arg(value_name = "JSON")]
    pub value: String,
}

/// Arguments of commands that take one entity id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The entity id (a UUID).
    pub id: String,
}

/// Arguments of `edit`.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// The entity id (a UUID).
    pub id: String,
    /// A JSON merge patch (RFC 7396): `null` removes a key (`-` reads stdin).
    pub merge_patch: String,
}

/// Arguments of `resolve`: exactly one of VALUE, `--local`, `--remote`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("choice").required(true).args(["value", "local", "remote"])))]
pub struct ResolveArgs {
    /// The entity id (a UUID).
    pub id: String,
    /// The conflicted field, a JSON pointer as `conflicts` prints it (`/title`, `/tags/2`).
    pub path: String,
    /// The value to write: JSON, or else taken as a plain string (`-` reads stdin).
    pub value: Option<String>,
    /// Keep the value written on this replica (this directory).
    #[arg(long)]
    pub local: bool,
    /// Keep the value written by another replica (the last-writer-wins winner among them).
    #[arg(long)]
    pub remote: bool,
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The collection name.
    pub collection: String,
    /// Print only the ids, without loading the entities.
    #[arg(long)]
    pub ids_only: bool,
}

fn parse_json(what: &'static str, text: &str) -> Result<Json, CliError> {
    let owned;
    let text = if text == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|source| CliError::Stdin { what, source })?;
        owned = buf;
        owned.as_str()
    } else {
        text
    };
    serde_json::from_str(text).map_err(|source| CliError::InvalidJson { what, source })
}

pub(super) fn open(data: &Path) -> Result<Replica, CliError> {
    tracing::debug!(path = %data.display(), "opening replica");
    Ok(Replica::open(data)?)
}

fn hash_text(h: Option<automerge::ChangeHash>) -> Json {
    h.map_or(Json::Null, |h| Json::String(h.to_string()))
}

/// `create WORKSPACE COLLECTION JSON`.
pub(super) fn create(
    data: &Path,
    a: CreateArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    // Validate every argument before touching the replica directory.
    let ws: WorkspaceId = a.workspace.parse()?;
    let coll = Collection::new(a.collection)?;
    let value = parse_json("the entity", &a.value)?;
    crate::entity::expect_object(&value).map_err(crate::Error::from)?;
    let r = open(data)?;
    let id = r.create_json(ws, &coll, &value)?;
    match mode {
        OutputMode::Human => write_line(out, id),
        OutputMode::Json => write_json(
            out,
            &json!({ "id": id, "workspace": ws, "collection": coll.as_str() }),
        ),
    }
}

/// `get ID`.
pub(super) fn get(
    data: &Path,
    a: IdArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id: DocId = a.id.parse()?;
    let r = open(data)?;
    let value = r.get_json(&id)?;
    match mode {
        OutputMode::Human => {
            let text =
                serde_json::to_string_pretty(&value).map_err(|e| CliError::Output(e.into()))?;
            write_line(out, text)
        }
        OutputMode::Json => {
            let info = r.info(&id)?;
            write_json(
                out,
                &json!({
                    "id": id,
                    "workspace": info.workspace,
                    "collection": info.collection.as_str(),
                    "data": value,
                }),
            )
        }
    }
}

/// `edit ID MERGE-PATCH`.
pub(super) fn edit(
    data: &Path,
    a: EditArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id: DocId = a.id.parse()?;
    let patch = parse_json("the merge patch", &a.merge_patch)?;
    crate::entity::expect_object(&patch).map_err(crate::Error::from)?;
    let r = open(data)?;
    let hash = r.patch_json(&id, &patch)?;
    match mode {
        OutputMode::Human => match hash {
            Some(h) => write_line(out, format_args!("updated {id} (change {h})")),
            None => write_line(
                out,
                format_args!("{id} unchanged (the patch changes nothing)"),
            ),
        },
        OutputMode::Json => write_json(out, &json!({ "id": id, "change": hash_text(hash) })),
    }
}

/// `delete ID`.
pub(super) fn delete(
    data: &Path,
    a: IdArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id: DocId = a.id.parse()?;
    let r = open(data)?;
    let hash = r.delete(&id)?;
    match mode {
        OutputMode::Human => write_line(out, format_args!("deleted {id} (change {hash})")),
        OutputMode::Json => write_json(out, &json!({ "id": id, "change": hash.to_string() })),
    }
}

/// `list COLLECTION`.
pub(super) fn list(
    data: &Path,
    a: ListArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let coll = Collection::new(a.collection)?;
    let r = open(data)?;
    let report = r.list_report(&coll)?;
    let mut rows = Vec::new();
    // Damaged records are skipped by the listing; each is named on stderr
    // and the command fails at the end, after listing every readable one.
    let mut unreadable = report.damaged.len();
    for d in &report.damaged {
        match d.id {
            Some(id) => eprintln!("error: entity {id} cannot be read: {}", d.error),
            None => eprintln!(
                "error: a collection index entry cannot be read: {}",
                d.error
            ),
        }
    }
    for id in report.live {
        if a.ids_only {
            match mode {
                OutputMode::Human => write_line(out, id)?,
                OutputMode::Json => rows.push(json!({ "id": id })),
            }
            continue;
        }
        let value = match r.get_json(&id) {
            Ok(v) => v,
            // One unreadable entity does not hide the others: it is reported
            // on stderr and the command fails at the end.
            Err(e @ Error::Store(_))
            | Err(e @ Error::Entity(EntityError::CorruptDocument { .. })) => {
                eprintln!("error: entity {id} cannot be read: {e}");
                unreadable += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match mode {
            OutputMode::Human => write_line(out, format_args!("{id}\t{value}"))?,
            OutputMode::Json => rows.push(json!({ "id": id, "data": value })),
        }
    }
    if mode == OutputMode::Json {
        write_json(out, &rows)?;
    }
    if unreadable > 0 {
        return Err(CliError::Unreadable { count: unreadable });
    }
    Ok(())
}

/// `history ID`.
pub(super) fn history(
    data: &Path,
    a: IdArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id: DocId = a.id.parse()?;
    let r = open(data)?;
    let entries = r.history(&id)?;
    match mode {
        OutputMode::Json => write_json(out, &entries),
        OutputMode::Human => {
            for e in &entries {
                let hash = e.hash.to_string();
                let short_hash = hash.get(..12).unwrap_or(&hash);
                let short_actor = e.actor.get(..12).unwrap_or(&e.actor);
                write_line(
                    out,
                    format_args!(
                        "{short_hash}  actor {short_actor} seq {:<4} ts {}{} ops {}{}",
                        e.seq,
                        e.timestamp,
                        if e.effective == e.timestamp {
                            String::new()
                        } else {
                            format!(" (effective {})", e.effective)
                        },
                        e.ops,
                        e.message
                            .as_deref()
                            .map(|m| format!("  {m}"))
                            .unwrap_or_default()
                    ),
                )?;
            }
            Ok(())
        }
    }
}

/// `conflicts ID`.
pub(super) fn conflicts(
    data: &Path,
    a: IdArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id: DocId = a.id.parse()?;
    let r = open(data)?;
    let conflicts = r.conflicts(&id)?;
    match mode {
        OutputMode::Json => write_json(out, &conflicts),
        OutputMode::Human => {
            if conflicts.is_empty() {
                return write_line(out, format_args!("{id}: no conflicts"));
            }
            for c in &conflicts {
                write_line(out, format_args!("{}:", c.path))?;
                for (i, cand) in c.candidates.iter().enumerate() {
                    let mark = if i == c.winner { "*" } else { " " };
                    write_line(
                        out,
                        format_args!(
                            "  {mark} {}  (actor {}, ts {})",
                            cand.value,
                            cand.actor.get(..12).unwrap_or(&cand.actor),
                            cand.timestamp
                        ),
                    )?;
                }
            }
            Ok(())
        }
    }
}

/// A `resolve` VALUE: JSON when it parses, else the text as a JSON string.
fn parse_value(text: &str) -> Result<Json, CliError> {
    let owned;
    let text = if text == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|source| CliError::Stdin {
                what: "the value",
                source,
            })?;
        owned = buf;
        owned.as_str()
    } else {
        text
    };
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_owned())))
}

/// `resolve ID PATH (VALUE | --local | --remote)`.
pub(super) fn resolve(
    data: &Path,
    a: ResolveArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id: DocId = a.id.parse()?;
    JsonPointer::parse(&a.path).map_err(|source| {
        crate::Error::from(EntityError::InvalidPath {
            id,
            path: a.path.clone(),
            source,
        })
    })?;
    let value = a.value.as_deref().map(parse_value).transpose()?;
    let r = open(data)?;
    let (hash, how) = match value {
        Some(v) => (r.resolve(&id, &a.path, &v)?, "value"),
        None if a.local => (r.keep_local(&id, &a.path)?, "local"),
        None => (r.keep_remote(&id, &a.path)?, "remote"),
    };
    let kept = r
        .get_json(&id)?
        .pointer(&a.path)
        .cloned()
        .unwrap_or(Json::Null);
    match mode {
        OutputMode::Human => write_line(
            out,
            format_args!(
                "resolved {} of {id}: {kept} (kept {how}, change {hash})",
                a.path
            ),
        ),
        OutputMode::Json => write_json(
            out,
            &json!({
                "id": id,
                "path": a.path,
                "kept": how,
                "value": kept,
                "change": hash.to_string(),
            }),
        ),
    }
}

/// `info ID`.
pub(super) fn info(
    data: &Path,
    a: IdArgs,
    mode: OutputMode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id: DocId = a.id.parse()?;
    let r = open(data)?;
    let info = r.info(&id)?;
    match mode {
        OutputMode::Json => write_json(out, &info),
        OutputMode::Human => {
            write_line(out, format_args!("id:         {}", info.id))?;
            write_line(out, format_args!("workspace:  {}", info.workspace))?;
            write_line(out, format_args!("collection: {}", info.collection))?;
            write_line(out, format_args!("deleted:    {}", info.deleted))?;
            write_line(out, format_args!("schema:     {}", info.schema))?;
            write_line(out, format_args!("counters:   {}", info.counters.join(" ")))?;
            let heads: Vec<String> = info.heads.iter().map(ToString::to_string).collect();
            write_line(out, format_args!("heads:      {}", heads.join(" ")))
        }
    }
}
