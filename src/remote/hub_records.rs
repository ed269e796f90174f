//! The records of a [`LocalHub`](super::LocalHub) directory and their
//! formats (`docs/storage.md`, "LocalHub").
//!
//! A hub directory has a format, kept in its `meta` tree under `format`:
//!
//! - **format 1** (directories written before the key existed): every
//!   change's value is the store codec's `1 ‖ bincode(HubChange)` — the
//!   document id, the collection, the hash and the bytes, about 58 bytes
//!   beside the change itself.
//! - **format 2** (new directories): a change's value is `2 ‖ doc id (16) ‖
//!   change bytes`. The hash is recomputed from the bytes when a pull needs
//!   it (the bytes are verified against it on push, so it is the same), and
//!   the collection is kept once per document in the `docs` tree
//!   (`ws ‖ doc → 2 ‖ collection`), written with the document's first change.
//!
//! A directory keeps its format: a format-1 directory opens, reads and keeps
//! writing format 1 (so an older build still reads it); a directory of an
//! unknown format is refused with [`StoreError::UnsupportedHubFormat`],
//! untouched. [`decode_change`] reads either value by its leading byte.

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};

use super::RemoteError;
use crate::id::{Collection, DocId};
use crate::protocol::chunk;
use crate::store::{codec, StoreError};

/// The format of a hub directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HubFormat {
    /// Whole bincode records per change (the first format).
    V1,
    /// Lean change records; collections per document.
    V2,
}

impl HubFormat {
    /// The newest format: what a new directory gets.
    pub(crate) const NEWEST: HubFormat = HubFormat::V2;

    fn byte(self) -> u8 {
        match self {
            HubFormat::V1 => 1,
            HubFormat::V2 => 2,
        }
    }
}

/// The `meta` key holding the format byte.
const FORMAT_KEY: &[u8] = b"format";

/// A format-1 change record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HubChangeV1 {
    doc_id: DocId,
    collection: Collection,
    #[serde(with = "crate::hash::bytes")]
    hash: ChangeHash,
    bytes: Vec<u8>,
}

/// A stored change as read back: format 2 leaves out what is kept elsewhere
/// (the collection) or recomputed (the hash).
#[derive(Debug, Clone)]
pub(crate) struct StoredChange {
    pub(crate) doc_id: DocId,
    /// Format 1 only; format 2 keeps it in the `docs` tree.
    pub(crate) collection: Option<Collection>,
    /// Format 1 only; see [`StoredChange::hash`].
    hash: Option<ChangeHash>,
    pub(crate) bytes: Vec<u8>,
}

impl StoredChange {
    /// The change's hash: stored (format 1) or computed from its bytes.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the stored bytes are not a change chunk.
    pub(crate) fn hash(&self, key: &[u8]) -> Result<ChangeHash, StoreError> {
        match self.hash {
            Some(h) => Ok(h),
            None => chunk::change_hash(&self.bytes).map_err(|e| StoreError::Corrupt {
                tree: "hub changes",
                key: codec::hex(key),
                reason: e.to_string(),
            }),
        }
    }
}

/// Reads the directory's format, or writes `new` for a new directory. A
/// directory without the key that already holds changes is format 1 (it
/// predates the key), and gets the key.
///
/// # Errors
/// [`StoreError::UnsupportedHubFormat`] for a format this build does not
/// read (nothing is written then), or for `new` older than the format an
/// existing directory has; sled errors.
pub(crate) fn open_format(
    meta: &sled::Tree,
    changes: &sled::Tree,
    new: HubFormat,
) -> Result<HubFormat, RemoteError> {
    let sled_err = |op| move |source| RemoteError::Storage(StoreError::Sled { op, source });
    let found = match meta.get(FORMAT_KEY).map_err(sled_err("read hub format"))? {
        Some(v) => match v.as_ref() {
            [1] => Some(HubFormat::V1),
            [2] => Some(HubFormat::V2),
            other => {
                return Err(RemoteError::Storage(StoreError::UnsupportedHubFormat {
                    found: other.first().copied().unwrap_or(0),
                    newest: HubFormat::NEWEST.byte(),
                }))
            }
        },
        None if !changes.is_empty() => Some(HubFormat::V1),
        None => None,
    };
    let format = match found {
        Some(f) if new == HubFormat::V1 && f != HubFormat::V1 => {
            return Err(RemoteError::Storage(StoreError::UnsupportedHubFormat {
                found: f.byte(),
                newest: HubFormat::V1.byte(),
            }))
        }
        Some(f) => f,
        None => new,
    };
    meta.insert(FORMAT_KEY, &[format.byte()][..])
        .map_err(sled_err("write hub format"))?;
    Ok(format)
}

/// The value of a stored change in `format`.
///
/// # Errors
/// [`StoreError::Encode`] (format 1's codec).
pub(crate) fn encode_change(
    format: HubFormat,
    doc_id: DocId,
    collection: &Collection,
    hash: ChangeHash,
    bytes: &[u8],
) -> Result<Vec<u8>, StoreError> {
    match format {
        HubFormat::V1 => codec::encode(
            "hub changes",
            &HubChangeV1 {
                doc_id,
                collection: collection.clone(),
                hash,
                bytes: bytes.to_vec(),
            },
        ),
        HubFormat::V2 => {
            let mut v = Vec::with_capacity(17 + bytes.len());
            v.push(HubFormat::V2.byte());
            v.extend_from_slice(&doc_id.to_bytes());
            v.extend_from_slice(bytes);
            Ok(v)
        }
    }
}

/// Reads a stored change of either format (by its leading byte).
///
/// # Errors
/// [`StoreError::Corrupt`] for a damaged value,
/// [`StoreError::UnsupportedFormat`] for an unknown leading byte.
pub(crate) fn decode_change(key: &[u8], value: &[u8]) -> Result<StoredChange, StoreError> {
    match value.first() {
        Some(2) => {
            let corrupt = |reason: String| StoreError::Corrupt {
                tree: "hub changes",
                key: codec::hex(key),
                reason,
            };
            if value.len() < 17 {
                return Err(corrupt(format!("a change record of {} bytes", value.len())));
            }
            let doc_id = DocId::from_slice(&value[1..17]).map_err(|e| corrupt(e.to_string()))?;
            Ok(StoredChange {
                doc_id,
                collection: None,
                hash: None,
                bytes: value[17..].to_vec(),
            })
        }
        _ => {
            let c: HubChangeV1 = codec::decode("hub changes", key, value)?;
            Ok(StoredChange {
                doc_id: c.doc_id,
                collection: Some(c.collection),
                hash: Some(c.hash),
                bytes: c.bytes,
            })
        }
    }
}

/// The `docs` value (format 2) naming a document's collection.
pub(crate) fn encode_collection(collection: &Collection) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + collection.as_str().len());
    v.push(HubFormat::V2.byte());
    v.extend_from_slice(collection.as_str().as_bytes());
    v
}

/// Reads a `docs` value written by [`encode_collection`].
///
/// # Errors
/// [`StoreError::Corrupt`], [`StoreError::UnsupportedFormat`].
pub(crate) fn decode_collection(key: &[u8], value: &[u8]) -> Result<Collection, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        tree: "hub docs",
        key: codec::hex(key),
        reason,
    };
    match value.split_first() {
        Some((2, name)) => {
            let name = std::str::from_utf8(name).map_err(|e| corrupt(e.to_string()))?;
            Collection::new(name).map_err(|e| corrupt(e.to_string()))
        }
        Some((found, _)) => Err(StoreError::UnsupportedFormat {
            tree: "hub docs",
            key: codec::hex(key),
            found: *found,
        }),
        None => Err(corrupt("empty value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change() -> (Vec<u8>, ChangeHash) {
        let mut doc = automerge::AutoCommit::new();
        use automerge::transaction::Transactable;
        doc.put(automerge::ROOT, "k", 1).unwrap();
        let bytes = doc.save();
        let doc = automerge::Automerge::load(&bytes).unwrap();
        let c = doc.get_changes(&[]).into_iter().next().unwrap();
        (c.raw_bytes().to_vec(), c.hash())
    }

    #[test]
    fn both_formats_read_back_the_same_change() {
        let (bytes, hash) = change();
        let id = DocId::new_v7(1, [7; 10]);
        let coll = Collection::new("notes").unwrap();
        for f in [HubFormat::V1, HubFormat::V2] {
            let v = encode_change(f, id, &coll, hash, &bytes).unwrap();
            assert_eq!(v[0], f.byte());
            let c = decode_change(b"k", &v).unwrap();
            assert_eq!(c.doc_id, id);
            assert_eq!(c.bytes, bytes);
            assert_eq!(c.hash(b"k").unwrap(), hash);
            assert_eq!(c.collection.is_some(), f == HubFormat::V1);
        }
        let v2 = encode_change(HubFormat::V2, id, &coll, hash, &bytes).unwrap();
        let v1 = encode_change(HubFormat::V1, id, &coll, hash, &bytes).unwrap();
        assert!(
            v2.len() + 40 <= v1.len(),
            "{} against {}",
            v2.len(),
            v1.len()
        );
        assert_eq!(
            decode_collection(b"k", &encode_collection(&coll)).unwrap(),
            coll
        );
    }

    #[test]
    fn damaged_and_unknown_values_are_typed_errors() {
        assert!(matches!(
            decode_change(b"k", &[2, 1, 2]),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_change(b"k", &[9, 1, 2]),
            Err(StoreError::UnsupportedFormat { found: 9, .. })
        ));
        assert!(matches!(
            decode_change(b"k", &[]),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_collection(b"k", &[3, b'a']),
            Err(StoreError::UnsupportedFormat { found: 3, .. })
        ));
        // A format-2 record whose bytes are not a change: its hash cannot
        // be computed, and says so.
        let c = decode_change(b"k", &[2; 20]).unwrap();
        assert!(matches!(c.hash(b"k"), Err(StoreError::Corrupt { .. })));
    }
}
