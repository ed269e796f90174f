//! Snapshot verification (DESIGN.md §2, invariant 9: nothing is trusted that
//! can be checked).
//!
//! A bootstrapping replica skips the changes a snapshot replaces, so a
//! snapshot that does not hold exactly those changes would make it diverge
//! forever: a fake would hide the real changes, a save of another document
//! would replace this one, a save missing a change would lose it, and one
//! with an extra change (not in the log) would give this replica a change no
//! other replica pulls. The remote cannot parse Automerge; instead it records,
//! when a snapshot is stored, a [`SnapshotDigest`] of the changes of that
//! document in its log at or before the snapshot's `covers` position. The
//! replica loads the snapshot and trusts it only if the loaded document's
//! changes have the same digest ([`check`]); otherwise the snapshot is not
//! stored and the sync session pulls the document's changes from the log
//! instead.
//!
//! Cost: [`SnapshotDigest::of_document`] reads the change graph's metadata
//! (`get_changes_meta`), not the changes themselves (`get_changes` rebuilds
//! every change chunk); `docs/benchmarks.md` has the figures.

use automerge::Automerge;

use automerge::ChangeHash;

use super::wire::{SnapshotDigest, SnapshotRecord};
use crate::id::{Collection, DocId, WorkspaceId};

/// Why a downloaded snapshot is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotCheckError {
    /// The remote gave no digest (a version 1 snapshot page).
    #[error(
        "snapshot of {doc_id}: the remote sent no digest of what it replaces (a version 1 page)"
    )]
    NoDigest {
        /// The document.
        doc_id: DocId,
    },
    /// The bytes are not an Automerge document.
    #[error("snapshot of {doc_id} does not load as an Automerge document: {reason}")]
    Unloadable {
        /// The document.
        doc_id: DocId,
        /// Automerge's error.
        reason: String,
    },
    /// The document holds other changes than the log says it replaces.
    #[error(
        "snapshot of {doc_id} holds {found} changes (digest {found_sha256}) but the log says it \
         replaces {expected} (digest {expected_sha256})"
    )]
    Mismatch {
        /// The document.
        doc_id: DocId,
        /// How many changes the log says.
        expected: u64,
        /// Their digest.
        expected_sha256: ChangeHash,
        /// How many changes the loaded snapshot holds.
        found: u64,
        /// Their digest.
        found_sha256: ChangeHash,
    },
}

impl SnapshotCheckError {
    /// The document concerned.
    pub fn doc_id(&self) -> DocId {
        match self {
            Self::NoDigest { doc_id }
            | Self::Unloadable { doc_id, .. }
            | Self::Mismatch { doc_id, .. } => *doc_id,
        }
    }
}

/// A snapshot as downloaded, with what the remote says it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadedSnapshot {
    /// The workspace it was downloaded from.
    pub workspace: WorkspaceId,
    /// The document's collection.
    pub collection: Collection,
    /// The document.
    pub doc_id: DocId,
    /// The `save()` bytes.
    pub bytes: Vec<u8>,
    /// The remote's digest of the changes it replaces (`None`: unverifiable).
    pub replaces: Option<SnapshotDigest>,
}

impl DownloadedSnapshot {
    /// From a record of a snapshot page of `workspace`.
    pub fn from_record(workspace: WorkspaceId, r: SnapshotRecord) -> Self {
        Self {
            workspace,
            collection: r.collection,
            doc_id: r.doc_id,
            bytes: r.bytes,
            replaces: r.replaces,
        }
    }
}

impl SnapshotDigest {
    /// The digest of every change `doc` holds (what a snapshot of it
    /// replaces when the log holds exactly those changes).
    pub fn of_document(doc: &Automerge) -> Self {
        Self::of_hashes(doc.get_changes_meta(&[]).into_iter().map(|m| m.hash))
    }
}

/// Checks a loaded snapshot against the remote's digest.
///
/// # Errors
/// [`SnapshotCheckError::NoDigest`] without a digest,
/// [`SnapshotCheckError::Mismatch`] when the document's changes differ.
pub fn check(
    doc_id: DocId,
    doc: &Automerge,
    expected: Option<&SnapshotDigest>,
) -> Result<(), SnapshotCheckError> {
    let Some(expected) = expected else {
        return Err(SnapshotCheckError::NoDigest { doc_id });
    };
    let found = SnapshotDigest::of_document(doc);
    if found == *expected {
        Ok(())
    } else {
        Err(SnapshotCheckError::Mismatch {
            doc_id,
            expected: expected.count,
            expected_sha256: expected.sha256,
            found: found.count,
            found_sha256: found.sha256,
        })
    }
}

/// Loads snapshot bytes and checks them ([`check`]).
///
/// # Errors
/// [`SnapshotCheckError::Unloadable`] for bytes that do not load, else as
/// [`check`].
pub fn load_checked(
    doc_id: DocId,
    bytes: &[u8],
    expected: Option<&SnapshotDigest>,
) -> Result<Automerge, SnapshotCheckError> {
    let doc = Automerge::load(bytes).map_err(|e| SnapshotCheckError::Unloadable {
        doc_id,
        reason: e.to_string(),
    })?;
    check(doc_id, &doc, expected)?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn doc(n: i64) -> Automerge {
        let mut d = Automerge::new();
        for i in 0..n {
            let mut tx = d.transaction();
            tx.put(automerge::ROOT, "n", i).unwrap();
            tx.commit();
        }
        d
    }

    #[test]
    fn digest_covers_every_change_and_only_those() {
        let d = doc(3);
        let hashes: Vec<ChangeHash> = d.get_changes(&[]).iter().map(|c| c.hash()).collect();
        assert_eq!(
            SnapshotDigest::of_document(&d),
            SnapshotDigest::of_hashes(hashes.clone())
        );
        let id = DocId::new_v7(1, [0; 10]);
        let saved = d.save();
        let ok = SnapshotDigest::of_hashes(hashes.clone());
        assert!(load_checked(id, &saved, Some(&ok)).is_ok());
        let missing = SnapshotDigest::of_hashes(hashes[..2].to_vec());
        assert!(matches!(
            load_checked(id, &saved, Some(&missing)),
            Err(SnapshotCheckError::Mismatch {
                expected: 2,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            load_checked(id, &saved, None),
            Err(SnapshotCheckError::NoDigest { .. })
        ));
        assert!(matches!(
            load_checked(
                id,
                &[0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                Some(&ok)
            ),
            Err(SnapshotCheckError::Unloadable { .. })
        ));
    }
}
