//! Export and import of a workspace as files.
//!
//! [`export_workspace`] writes, into an empty directory:
//! - `manifest.json`: `{"format": "supamerge-export", "version": 1,
//!   "workspace", "entities", "exported_at_ms", "generator"}`;
//! - `entities/<id>.automerge`: each document's Automerge `save()`, the whole
//!   history (lossless: conflicts keep every candidate);
//! - `entities/<id>.json`: the same entity for people (`id`, `workspace`,
//!   `collection`, `deleted`, `heads`, `data` as last-writer-wins resolves
//!   it, and `conflicts` with every candidate and the winner).
//!
//! [`import_dir`] reads only the `.automerge` files (the JSON files are for
//! people and are not trusted) and merges each history into a replica with
//! [`Replica::import_document`]: what the replica lacks goes to its outbox,
//! so the next sync pushes it. A second import of the same directory adds
//! nothing.
//!
//! Importing into **another workspace** (`target`): every document gets a
//! new id derived from the target workspace and its original id (so a
//! re-import finds the same document again), keeps its whole history, and
//! gets one more change that sets `_meta.workspace` to the target. The
//! original documents are not touched: it is a copy, not a move.

use std::io::Write;
use std::path::{Path, PathBuf};

use automerge::Automerge;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::conflict::{EffectiveClock, LwwView};
use crate::entity::{self, EntityError};
use crate::id::{Collection, DocId, WorkspaceId};
use crate::replica::Replica;

/// The `format` of a manifest.
pub const FORMAT: &str = "supamerge-export";
/// The manifest version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const ENTITIES: &str = "entities";

/// Errors of export and import.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The export directory exists and is not empty.
    #[error("{path} is not empty: export into a new or empty directory")]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The directory is not an export this build reads.
    #[error("{path} is not a supamerge export: {reason}")]
    NotAnExport {
        /// The manifest (or directory).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A document file is damaged or not an entity.
    #[error("{path} is not a valid entity document: {reason}")]
    BadDocument {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The replica already holds this document in another workspace.
    #[error("document {id} already exists in workspace {holds}, not {wanted}")]
    OtherWorkspace {
        /// The document.
        id: DocId,
        /// Where the replica has it.
        holds: WorkspaceId,
        /// Where the import wanted it.
        wanted: WorkspaceId,
    },
    /// The replica failed.
    #[error(transparent)]
    Replica(#[from] crate::error::Error),
}

/// The manifest of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written by this build.
    pub version: u32,
    /// The exported workspace.
    pub workspace: WorkspaceId,
    /// How many entities (documents) the export holds.
    pub entities: usize,
    /// When it was written (ms since the Unix epoch, the replica's clock).
    pub exported_at_ms: i64,
    /// What wrote it.
    pub generator: String,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ExportReport {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// Entities written.
    pub entities: usize,
    /// Of which deleted (tombstoned).
    pub deleted: usize,
    /// Documents left out because they hold only changes still waiting for
    /// their dependencies (not yet an entity here).
    pub incomplete: usize,
    /// Bytes of Automerge saves written.
    pub bytes: u64,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ImportReport {
    /// The workspace the export came from.
    pub source_workspace: WorkspaceId,
    /// The workspace the entities are in now.
    pub workspace: WorkspaceId,
    /// Documents read.
    pub documents: usize,
    /// Documents this replica did not hold before.
    pub created: usize,
    /// Changes this replica did not have (now in its outbox); 0 on a
    /// re-import.
    pub new_changes: usize,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.to_owned();
    move |source| ArchiveError::Io {
        action,
        path,
        source,
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ArchiveError> {
    let mut f = std::fs::File::create(path).map_err(io("create", path))?;
    f.write_all(bytes).map_err(io("write", path))?;
    f.sync_all().map_err(io("sync", path))
}

/// Writes every entity of `workspace` that `replica` holds (live and
/// deleted) into `dir` (created when missing; must be empty).
///
/// # Errors
/// [`ArchiveError::NotEmpty`], I/O errors, replica errors.
pub fn export_workspace(
    replica: &Replica,
    workspace: WorkspaceId,
    dir: &Path,
) -> Result<ExportReport, ArchiveError> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io("read", dir))?;
        if entries.next().is_some() {
            return Err(ArchiveError::NotEmpty {
                path: dir.to_owned(),
            });
        }
    }
    let entities_dir = dir.join(ENTITIES);
    std::fs::create_dir_all(&entities_dir).map_err(io("create", &entities_dir))?;
    let mut report = ExportReport {
        workspace,
        entities: 0,
        deleted: 0,
        incomplete: 0,
        bytes: 0,
    };
    for id in replica.documents(&workspace)? {
        let (saved, is_entity, data, heads) = replica.with_doc(&id, |d| {
            let clock = EffectiveClock::new();
            let view = LwwView::new(d, &clock);
            (
                d.save(),
                entity::meta_obj(view).is_some(),
                entity::data_json(view),
                d.get_heads(),
            )
        })?;
        if !is_entity {
            report.incomplete += 1;
            continue;
        }
        let info = replica.info(&id)?;
        let conflicts = replica.conflicts(&id)?;
        let human = serde_json::json!({
            "id": id,
            "workspace": info.workspace,
            "collection": info.collection.as_str(),
            "deleted": info.deleted,
            "schema": info.schema,
            "heads": heads.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "data": data,
            "conflicts": conflicts,
        });
        let text = serde_json::to_vec_pretty(&human).map_err(|e| ArchiveError::Io {
            action: "encode",
            path: entities_dir.join(format!("{id}.json")),
            source: e.into(),
        })?;
        write_file(&entities_dir.join(format!("{id}.json")), &text)?;
        write_file(&entities_dir.join(format!("{id}.automerge")), &saved)?;
        report.entities += 1;
        report.bytes += saved.len() as u64;
        if info.deleted {
            report.deleted += 1;
        }
    }
    // The manifest last: a directory without one is an unfinished export.
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        version: FORMAT_VERSION,
        workspace,
        entities: report.entities,
        exported_at_ms: replica.now_ms(),
        generator: concat!("supamerge ", env!("CARGO_PKG_VERSION")).to_owned(),
    };
    let path = dir.join(MANIFEST);
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| ArchiveError::Io {
        action: "encode",
        path: path.clone(),
        source: e.into(),
    })?;
    write_file(&path, &text)?;
    Ok(report)
}

/// Reads the manifest of an export.
///
/// # Errors
/// [`ArchiveError::NotAnExport`] for a missing, unreadable or foreign
/// manifest, or another version.
pub fn read_manifest(dir: &Path) -> Result<Manifest, ArchiveError> {
    let path = dir.join(MANIFEST);
    let bad = |reason: String| ArchiveError::NotAnExport {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read(&path).map_err(|e| bad(format!("cannot read the manifest: {e}")))?;
    let m: Manifest =
        serde_json::from_slice(&text).map_err(|e| bad(format!("unreadable manifest: {e}")))?;
    if m.format != FORMAT {
        return Err(bad(format!("format {:?}, expected {FORMAT:?}", m.format)));
    }
    if m.version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {}, this build reads {FORMAT_VERSION}",
            m.version
        )));
    }
    Ok(m)
}

/// The id a document gets when imported into another workspace: derived
/// from both, so a re-import finds it again.
pub fn moved_id(target: WorkspaceId, original: DocId) -> DocId {
    let mut h = Sha256::new();
    h.update(b"supamerge import into another workspace\0");
    h.update(target.to_bytes());
    h.update(original.to_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    DocId::from_uuid(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// A document's `_meta.collection` and `_meta.workspace`.
fn meta_of(doc: &Automerge) -> Option<(Collection, WorkspaceId)> {
    let clock = EffectiveClock::new();
    let view = LwwView::new(doc, &clock);
    let collection = Collection::new(entity::meta_str(view, entity::META_COLLECTION)?).ok()?;
    let workspace = entity::meta_str(view, entity::META_WORKSPACE)?
        .parse()
        .ok()?;
    Some((collection, workspace))
}

/// Imports an export into `replica`: into the exported workspace, or with
/// `target` into another one (see the module docs).
///
/// # Errors
/// [`ArchiveError::NotAnExport`], [`ArchiveError::BadDocument`] (nothing of
/// that document is imported; documents before it stay imported),
/// [`ArchiveError::OtherWorkspace`], I/O and replica errors.
pub fn import_dir(
    replica: &Replica,
    dir: &Path,
    target: Option<WorkspaceId>,
) -> Result<ImportReport, ArchiveError> {
    let manifest = read_manifest(dir)?;
    let workspace = target.unwrap_or(manifest.workspace);
    let entities_dir = dir.join(ENTITIES);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&entities_dir)
        .map_err(io("read", &entities_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "automerge"))
        .collect();
    files.sort();
    if files.len() != manifest.entities {
        return Err(ArchiveError::NotAnExport {
            path: entities_dir,
            reason: format!(
                "the manifest lists {} entities, {} documents are there",
                manifest.entities,
                files.len()
            ),
        });
    }
    let mut report = ImportReport {
        source_workspace: manifest.workspace,
        workspace,
        documents: 0,
        created: 0,
        new_changes: 0,
    };
    for path in files {
        let bad = |reason: String| ArchiveError::BadDocument {
            path: path.clone(),
            reason,
        };
        let original: DocId = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| bad("the file name is not a document id".into()))?
            .parse()
            .map_err(|e| bad(format!("the file name is not a document id: {e}")))?;
        let bytes = std::fs::read(&path).map_err(io("read", &path))?;
        let doc = Automerge::load(&bytes).map_err(|e| bad(e.to_string()))?;
        let (collection, doc_ws) = meta_of(&doc)
            .ok_or_else(|| bad("no _meta with a collection and a workspace".into()))?;
        if doc_ws != manifest.workspace {
            return Err(bad(format!(
                "it belongs to workspace {doc_ws}, the manifest says {}",
                manifest.workspace
            )));
        }
        let id = if workspace == manifest.workspace {
            original
        } else {
            moved_id(workspace, original)
        };
        match replica.info(&id) {
            Ok(info) if info.workspace != workspace => {
                return Err(ArchiveError::OtherWorkspace {
                    id,
                    holds: info.workspace,
                    wanted: workspace,
                })
            }
            Ok(_) | Err(crate::error::Error::Entity(EntityError::NotFound { .. })) => {}
            Err(e) => return Err(e.into()),
        }
        let done = replica.import_document(&id, workspace, &collection, &doc)?;
        report.documents += 1;
        report.new_changes += done.new_changes;
        if done.created {
            report.created += 1;
        }
    }
    Ok(report)
}
