//! Verification of an Automerge change chunk, byte by byte.
//!
//! A change chunk is `magic (85 6f 4a 83) ‖ checksum (4) ‖ type (1 = change) ‖
//! uleb128 length ‖ contents`; its hash is `SHA-256(type ‖ length ‖ contents)`
//! and the checksum is the first 4 bytes of that hash. Remotes recompute the
//! hash so nobody can poison deduplication with a hash that does not belong to
//! the bytes. The SQL migration implements the same rules.

use automerge::ChangeHash;
use sha2::{Digest, Sha256};

/// The magic bytes that open every Automerge chunk.
pub const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// The chunk type of an uncompressed change.
pub const TYPE_CHANGE: u8 = 1;

/// Why bytes are not a valid change chunk for the claimed hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// Too short, or the magic bytes are wrong.
    #[error("not an Automerge chunk (bad magic or too short)")]
    NotAChunk,
    /// A chunk of another type (a document, a compressed change).
    #[error("chunk type {found} is not an uncompressed change (type 1)")]
    WrongType {
        /// The type byte found.
        found: u8,
    },
    /// The length prefix is malformed or does not match the bytes.
    #[error("truncated or malformed chunk: length says {declared}, {available} bytes follow")]
    Truncated {
        /// The declared content length.
        declared: u64,
        /// The bytes actually present.
        available: usize,
    },
    /// The checksum is not the first 4 bytes of the hash.
    #[error("checksum mismatch")]
    Checksum,
    /// The bytes hash to something else than the claimed hash.
    #[error("hash mismatch: the bytes hash to {actual}")]
    HashMismatch {
        /// The hash of the bytes.
        actual: ChangeHash,
    },
}

/// Computes the hash of a change chunk after checking its framing.
///
/// # Errors
/// [`ChunkError`] naming what is wrong.
pub fn change_hash(bytes: &[u8]) -> Result<ChangeHash, ChunkError> {
    if bytes.len() < 10 || bytes[..4] != MAGIC {
        return Err(ChunkError::NotAChunk);
    }
    let checksum = &bytes[4..8];
    let ty = bytes[8];
    if ty != TYPE_CHANGE {
        return Err(ChunkError::WrongType { found: ty });
    }
    let mut len: u64 = 0;
    let mut shift = 0u32;
    let mut i = 9;
    loop {
        let Some(&b) = bytes.get(i) else {
            return Err(ChunkError::Truncated {
                declared: len,
                available: 0,
            });
        };
        if shift > 63 {
            return Err(ChunkError::Truncated {
                declared: len,
                available: 0,
            });
        }
        len |= u64::from(b & 0x7f) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let available = bytes.len() - i;
    if usize::try_from(len).map(|l| l != available).unwrap_or(true) {
        return Err(ChunkError::Truncated {
            declared: len,
            available,
        });
    }
    let hash: [u8; 32] = Sha256::digest(&bytes[8..]).into();
    if hash[..4] != *checksum {
        return Err(ChunkError::Checksum);
    }
    Ok(ChangeHash(hash))
}

/// How many dependencies a change chunk declares (the first field of its
/// contents): 0 for a document's first change. `None` when the framing or the
/// field is malformed.
pub fn dependency_count(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < 10 || bytes[..4] != MAGIC {
        return None;
    }
    let mut i = 9;
    // Skip the uleb128 length prefix, then read the uleb128 count.
    while *bytes.get(i)? & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let mut count: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *bytes.get(i)?;
        if shift > 63 {
            return None;
        }
        count |= u64::from(b & 0x7f) << shift;
        i += 1;
        if b & 0x80 == 0 {
            return Some(count);
        }
        shift += 7;
    }
}

/// Checks that `bytes` is an uncompressed change chunk hashing to `claimed`.
///
/// # Errors
/// [`ChunkError`] naming what is wrong.
pub fn verify(bytes: &[u8], claimed: &ChangeHash) -> Result<(), ChunkError> {
    let actual = change_hash(bytes)?;
    if actual != *claimed {
        return Err(ChunkError::HashMismatch { actual });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::ReadDoc;

    fn a_change() -> (Vec<u8>, ChangeHash) {
        let mut doc = automerge::Automerge::new();
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "k", "v").unwrap();
        let (h, _) = tx.commit();
        let h = h.unwrap();
        (doc.get_change_by_hash(&h).unwrap().raw_bytes().to_vec(), h)
    }

    #[test]
    fn agrees_with_automerge() {
        let (bytes, hash) = a_change();
        assert_eq!(change_hash(&bytes).unwrap(), hash);
        assert!(verify(&bytes, &hash).is_ok());
    }

    #[test]
    fn counts_dependencies() {
        let mut doc = automerge::Automerge::new();
        let mut counts = Vec::new();
        for i in 0..3 {
            let mut tx = doc.transaction();
            tx.put(automerge::ROOT, "k", i).unwrap();
            let (h, _) = tx.commit();
            let c = doc.get_change_by_hash(&h.unwrap()).unwrap();
            counts.push(dependency_count(c.raw_bytes()));
        }
        assert_eq!(counts, vec![Some(0), Some(1), Some(1)]);
        assert_eq!(dependency_count(b"hello world!"), None);
        let (bytes, _) = a_change();
        assert_eq!(dependency_count(&bytes[..10]), None);
    }

    #[test]
    fn rejects_tampering() {
        let (bytes, hash) = a_change();
        assert!(matches!(
            verify(&bytes, &ChangeHash([0; 32])),
            Err(ChunkError::HashMismatch { .. })
        ));
        assert!(matches!(
            change_hash(&bytes[..bytes.len() - 1]),
            Err(ChunkError::Truncated { .. })
        ));
        assert!(matches!(
            change_hash(b"hello world!"),
            Err(ChunkError::NotAChunk)
        ));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(change_hash(&flipped), Err(ChunkError::Checksum)));
        let mut doc_type = bytes.clone();
        doc_type[8] = 0;
        assert!(matches!(
            verify(&doc_type, &hash),
            Err(ChunkError::WrongType { found: 0 })
        ));
    }
}
