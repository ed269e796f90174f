//! Deterministic schema migrations (DESIGN.md §4).
//!
//! A collection has a schema version, stored in each document's
//! `_meta.schema` (0 at creation). A [`Migration`] is a function that edits a
//! document's `data` map and takes it to the next version. Replicas migrate
//! the same document independently and offline, so every replica must produce
//! the *identical* change — same bytes, same hash — which the server then
//! stores once and every replica applies as a duplicate. The change for
//! version `v` is therefore built from nothing but shared, fixed inputs:
//!
//! - **starting point**: the document's creation change for `v = 1`, the
//!   migration change of `v - 1` otherwise (so migrations form one chain and
//!   each builds on exactly the same state everywhere);
//! - **actor**: [`migration_actor`]`(collection, v)`, the first 16 bytes of
//!   `SHA-256("supamerge-migration-2\0" ‖ len(collection) as u8 ‖ collection ‖ v as u64 BE)`;
//!   as the first change of that actor its sequence number is 1;
//! - **time**: the effective timestamp of the starting point plus one
//!   ([`crate::conflict`]: the same on every replica, since it depends only on
//!   the starting point's history), so that, like every change supamerge
//!   makes, its stamped time is its effective timestamp; no message;
//! - **content**: the migration function run on the `data` map, then
//!   `_meta.schema = v` as a plain integer.
//!
//! This is the second recipe. The first (before effective timestamps) used
//! the actor [`migration_actor_v1`] (`"supamerge-migration\0"`), time 0 and an
//! unsigned `_meta.schema`, which JavaScript reads as a `BigInt` that
//! `JSON.stringify` refuses. A change of either recipe counts as the
//! migration ([`migration_change`]): documents migrated before are not
//! migrated again, and a later migration builds on their change. Only a
//! document migrated independently by an old and a new version, both
//! offline, gets both changes (the migration's edits twice, concurrently):
//! upgrade every device before registering a new migration.
//!
//! Consequences, documented in `docs/conflicts.md`:
//! - a migration sees the document as it was created (plus earlier
//!   migrations), not its current state, and its writes are concurrent with
//!   every edit made since creation. Its effective timestamp is its starting
//!   point's plus one — 1 ms after the creation for version 1 — so a
//!   migration's write of a field loses, by last-writer-wins, to any user
//!   write of the same field it has not seen, unless that user wrote within
//!   `v` ms of the creation by a clock running behind the creator's:
//!   migrations fill in defaults and add structure, they do not override
//!   what users wrote. (Both values stay visible in `conflicts()` until
//!   resolved.)
//! - the migration function must be deterministic: it may only depend on
//!   the document it is given (no clock, randomness or outside state), and
//!   its code must not change once released — a changed function makes a
//!   different change, and replicas running the old and the new code would
//!   both apply theirs.
//!
//! [`crate::Replica::migrate`] applies the missing changes as local commits
//! (outbox, same sled transaction as the document chunk, `DocChanged` event);
//! a change that is already in the document — because another replica
//! migrated and this one pulled it — is not made again.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{ActorId, Automerge, AutomergeError, Change, ChangeHash, ObjId, ReadDoc};
use sha2::{Digest, Sha256};

use crate::clock::effective_time;
use crate::conflict::{EffectiveClock, LwwView};
use crate::entity;
use crate::id::{Collection, DocId};

/// The function of a migration: edits the `data` map (the `ObjId`) in the
/// transaction.
type MigrationFn =
    dyn Fn(&mut Transaction<'_>, &ObjId) -> Result<(), AutomergeError> + Send + Sync + 'static;

/// One schema migration of a collection: takes a document from schema
/// version `version - 1` to `version`.
#[derive(Clone)]
pub struct Migration {
    /// The collection whose documents it migrates.
    collection: Collection,
    /// The schema version a document has after it (>= 1).
    version: u64,
    /// The edit.
    f: Arc<MigrationFn>,
}

impl Migration {
    /// A migration of `collection` to schema `version` (the version the
    /// document has after this migration, >= 1). `f` edits the document's
    /// `data` map (the `ObjId` it gets) in the given transaction; it must be
    /// deterministic (see `docs/conflicts.md`).
    pub fn new(
        collection: Collection,
        version: u64,
        f: impl Fn(&mut Transaction<'_>, &ObjId) -> Result<(), AutomergeError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            collection,
            version,
            f: Arc::new(f),
        }
    }

    /// The collection it migrates.
    pub fn collection(&self) -> &Collection {
        &self.collection
    }

    /// The schema version a document has after it.
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl fmt::Debug for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migration")
            .field("collection", &self.collection)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Errors of registering or running migrations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// Two migrations of a collection have the same version.
    #[error("two migrations of collection {collection} are registered for version {version}")]
    Duplicate {
        /// The collection.
        collection: Collection,
        /// The repeated version.
        version: u64,
    },
    /// The versions of a collection do not run 1, 2, 3, ... without gaps.
    #[error("migrations of collection {collection} must be numbered 1, 2, 3, ...: version {missing} is missing (next registered: {found})")]
    Gap {
        /// The collection.
        collection: Collection,
        /// The first version missing.
        missing: u64,
        /// The version registered in its place.
        found: u64,
    },
    /// The migration function returned an error; the document is unchanged.
    #[error("migration of {collection} to version {version} failed on document {id}: {source}")]
    Failed {
        /// The document.
        id: DocId,
        /// Its collection.
        collection: Collection,
        /// The version being migrated to.
        version: u64,
        /// The function's (Automerge) error.
        #[source]
        source: Box<AutomergeError>,
    },
    /// The document lacks the change the migration must build on (its
    /// creation change, or the previous migration's change), or its `data` /
    /// `_meta` maps.
    #[error("document {id} has no starting point for the migration of {collection} to version {version}")]
    NoStartingPoint {
        /// The document.
        id: DocId,
        /// Its collection.
        collection: Collection,
        /// The version being migrated to.
        version: u64,
    },
}

/// The registered migrations, checked: per collection, versions 1..=n.
#[derive(Debug, Clone, Default)]
pub(crate) struct Migrations(BTreeMap<Collection, Vec<Migration>>);

impl Migrations {
    /// Groups and checks the migrations.
    pub(crate) fn new(all: Vec<Migration>) -> Result<Self, MigrationError> {
        let mut map: BTreeMap<Collection, Vec<Migration>> = BTreeMap::new();
        for m in all {
            map.entry(m.collection.clone()).or_default().push(m);
        }
        for (collection, ms) in &mut map {
            ms.sort_by_key(|m| m.version);
            for (i, m) in ms.iter().enumerate() {
                let expected = i as u64 + 1;
                if m.version + 1 == expected && m.version > 0 {
                    return Err(MigrationError::Duplicate {
                        collection: collection.clone(),
                        version: m.version,
                    });
                }
                if m.version != expected {
                    return Err(MigrationError::Gap {
                        collection: collection.clone(),
                        missing: expected,
                        found: m.version,
                    });
                }
            }
        }
        Ok(Self(map))
    }

    /// The migrations of `collection`, in version order.
    pub(crate) fn for_collection(&self, collection: &Collection) -> &[Migration] {
        self.0.get(collection).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The actor of every migration change of `collection` to `version`.
pub fn migration_actor(collection: &Collection, version: u64) -> ActorId {
    derived_actor(b"supamerge-migration-2\0", collection, version)
}

/// The actor of the migration changes of `collection` to `version` made by
/// the first recipe (before effective timestamps; `docs/conflicts.md`):
/// recognised, never made.
pub fn migration_actor_v1(collection: &Collection, version: u64) -> ActorId {
    derived_actor(b"supamerge-migration\0", collection, version)
}

fn derived_actor(tag: &[u8], collection: &Collection, version: u64) -> ActorId {
    let name = collection.as_str().as_bytes();
    let mut h = Sha256::new();
    h.update(tag);
    // Collection names are at most 64 bytes (validated).
    h.update([u8::try_from(name.len()).unwrap_or(u8::MAX)]);
    h.update(name);
    h.update(version.to_be_bytes());
    let digest = h.finalize();
    ActorId::from(&digest[..16])
}

/// The hash of the migration change of `collection` to `version` in `doc`,
/// if the document has it (made by either recipe; the current one first).
pub fn migration_change(
    doc: &Automerge,
    collection: &Collection,
    version: u64,
) -> Option<ChangeHash> {
    let actors = [
        migration_actor(collection, version),
        migration_actor_v1(collection, version),
    ];
    let metas = doc.get_changes_meta(&[]);
    actors.iter().find_map(|actor| {
        metas
            .iter()
            .find(|m| *m.actor == *actor && m.seq == 1)
            .map(|m| m.hash)
    })
}

/// The document's creation change: the change without dependencies (the
/// smallest hash, should there ever be several).
pub fn creation_change(doc: &Automerge) -> Option<ChangeHash> {
    doc.get_changes_meta(&[])
        .into_iter()
        .filter(|m| m.deps.is_empty())
        .map(|m| m.hash)
        .min()
}

/// Builds the change of migration `m` for document `id` from its defined
/// starting point in `doc` (a pure function of that starting point and `m`;
/// `clock` holds the effective timestamps of `doc`'s changes).
pub(crate) fn build_change(
    doc: &Automerge,
    clock: &EffectiveClock,
    id: &DocId,
    m: &Migration,
) -> Result<Change, MigrationError> {
    let no_start = || MigrationError::NoStartingPoint {
        id: *id,
        collection: m.collection.clone(),
        version: m.version,
    };
    let failed = |source| MigrationError::Failed {
        id: *id,
        collection: m.collection.clone(),
        version: m.version,
        source: Box::new(source),
    };
    let start = if m.version <= 1 {
        creation_change(doc)
    } else {
        migration_change(doc, &m.collection, m.version - 1)
    }
    .ok_or_else(no_start)?;
    let start_eff = clock.effective(doc, &start).ok_or_else(no_start)?;
    let mut fork = doc.fork_at(&[start]).map_err(|_| no_start())?;
    fork.set_actor(migration_actor(&m.collection, m.version));
    let fork_clock = EffectiveClock::new();
    let view = LwwView::new(&fork, &fork_clock);
    let data = entity::data_obj(view).ok_or_else(no_start)?;
    let meta = entity::meta_obj(view).ok_or_else(no_start)?;
    // Versions are small; a plain integer is what every client reads as a number.
    let schema = i64::try_from(m.version).unwrap_or(i64::MAX);
    let mut tx = fork.transaction();
    if let Err(e) = (m.f)(&mut tx, &data) {
        tx.rollback();
        return Err(failed(e));
    }
    if let Err(e) = tx.put(&meta, entity::META_SCHEMA, schema) {
        tx.rollback();
        return Err(failed(e));
    }
    let time = effective_time(0, [start_eff]);
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(time));
    hash.and_then(|h| fork.get_change_by_hash(&h))
        .ok_or_else(no_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coll(name: &str) -> Collection {
        Collection::new(name).unwrap()
    }

    fn noop(c: &str, v: u64) -> Migration {
        Migration::new(coll(c), v, |_, _| Ok(()))
    }

    #[test]
    fn versions_must_be_contiguous_from_one() {
        assert!(Migrations::new(vec![noop("a", 2), noop("a", 1), noop("b", 1)]).is_ok());
        assert!(matches!(
            Migrations::new(vec![noop("a", 1), noop("a", 3)]),
            Err(MigrationError::Gap {
                missing: 2,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            Migrations::new(vec![noop("a", 0)]),
            Err(MigrationError::Gap {
                missing: 1,
                found: 0,
                ..
            })
        ));
        assert!(matches!(
            Migrations::new(vec![noop("a", 1), noop("a", 1)]),
            Err(MigrationError::Duplicate { version: 1, .. })
        ));
        assert!(matches!(
            Migrations::new(vec![noop("b", 2)]),
            Err(MigrationError::Gap { missing: 1, .. })
        ));
    }

    #[test]
    fn actors_differ_per_collection_version_and_recipe() {
        let a1 = migration_actor(&coll("tasks"), 1);
        assert_eq!(a1, migration_actor(&coll("tasks"), 1));
        assert_ne!(a1, migration_actor(&coll("tasks"), 2));
        assert_ne!(a1, migration_actor(&coll("notes"), 1));
        assert_ne!(a1, migration_actor_v1(&coll("tasks"), 1));
        assert_eq!(a1.to_bytes().len(), 16);
        // The first recipe's actor, as documents migrated before carry it.
        assert_eq!(
            migration_actor_v1(&coll("tasks"), 1).to_hex_string(),
            hex_v1_tasks_1()
        );
    }

    /// SHA-256("supamerge-migration\0" ‖ 5 ‖ "tasks" ‖ 1 as u64 BE)[..16].
    fn hex_v1_tasks_1() -> String {
        let mut h = Sha256::new();
        h.update(b"supamerge-migration\0\x05tasks\0\0\0\0\0\0\0\x01");
        h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
