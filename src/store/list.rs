//! Listing a collection without letting one damaged record take the listing
//! down: live ids, and what was skipped.

use super::{codec, keys, trees, DocRecord, Store, StoreError};
use crate::id::{Collection, DocId};

/// A listing of a collection: the live entities, and the records that could
/// not be read and were skipped (quarantined from the listing).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ListReport {
    /// The live (not deleted) entities, in id (creation) order.
    pub live: Vec<DocId>,
    /// Records skipped because they are damaged (or written by a newer
    /// version): neither listed as live nor hidden.
    pub damaged: Vec<DamagedRecord>,
}

/// One record a listing skipped.
#[derive(Debug)]
#[non_exhaustive]
pub struct DamagedRecord {
    /// The entity, when its id could be read.
    pub id: Option<DocId>,
    /// What is wrong ([`StoreError::Corrupt`] or
    /// [`StoreError::UnsupportedFormat`], naming the tree and key).
    pub error: StoreError,
}

impl Store {
    /// The live entities of a collection, skipping (and reporting) damaged
    /// records. Reads the collection index and the `docs` records only; no
    /// document is loaded.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when the storage itself fails (damage to single
    /// records is reported in [`ListReport::damaged`] instead).
    pub fn list_collection(&self, collection: &Collection) -> Result<ListReport, StoreError> {
        let prefix = keys::collection_prefix(collection);
        let mut report = ListReport::default();
        for r in self.by_collection.scan_prefix(&prefix) {
            let (k, _) = r.map_err(StoreError::sled("scan collection"))?;
            let id = match DocId::from_slice(&k[prefix.len()..]) {
                Ok(id) => id,
                Err(e) => {
                    report.damaged.push(DamagedRecord {
                        id: None,
                        error: StoreError::Corrupt {
                            tree: trees::BY_COLLECTION,
                            key: codec::hex(&k),
                            reason: e.to_string(),
                        },
                    });
                    continue;
                }
            };
            let key = keys::doc(&id);
            let Some(v) = self.docs.get(key).map_err(StoreError::sled("read doc"))? else {
                continue;
            };
            match codec::decode::<DocRecord>(trees::DOCS, &key, &v) {
                Ok(rec) => {
                    if !rec.deleted && (rec.snapshot_len > 0 || rec.incremental_count > 0) {
                        report.live.push(id);
                    }
                }
                Err(error) => report.damaged.push(DamagedRecord {
                    id: Some(id),
                    error,
                }),
            }
        }
        Ok(report)
    }
}
