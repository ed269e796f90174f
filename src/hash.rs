//! Change hashes: one type throughout, Automerge's [`ChangeHash`], and its
//! serde forms at the edges.
//!
//! Inside the crate and in every public API a change hash is a
//! [`ChangeHash`]. It becomes text or bytes only where it is serialised:
//! - [`hex`] / [`hex_vec`]: 64 lower-case hex characters, the JSON form of the
//!   wire protocol, the Supabase RPC functions and the CLI's `--json` output
//!   (`#[serde(with = "crate::hash::hex")]`);
//! - [`bytes`]: the 32 raw bytes, the form inside the store's bincode records
//!   (identical to the `[u8; 32]` field earlier versions wrote, so stored
//!   records keep their format).
//!
//! Automerge's own serde implementation of `ChangeHash` (hex) is not relied
//! on: the form of every stored and wire field is spelled out here.

use automerge::ChangeHash;

/// Parses 64 hex characters (either case) into a hash.
///
/// # Errors
/// A message naming the text when it is not 64 hex characters.
pub fn parse_hex(s: &str) -> Result<ChangeHash, String> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid change hash {s:?}: expected 64 hex characters"
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16).unwrap_or(0);
        out[i] = u8::try_from(digit(pair[0]) * 16 + digit(pair[1])).unwrap_or(0);
    }
    Ok(ChangeHash(out))
}

/// A hash as 64 lower-case hex characters (`#[serde(with = "crate::hash::hex")]`).
pub mod hex {
    use automerge::ChangeHash;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the hash as hex text.
    ///
    /// # Errors
    /// The serializer's own errors.
    pub fn serialize<S: Serializer>(h: &ChangeHash, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(h)
    }

    /// Reads 64 hex characters.
    ///
    /// # Errors
    /// Text that is not 64 hex characters.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ChangeHash, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// A list of hashes as a list of hex strings
/// (`#[serde(with = "crate::hash::hex_vec")]`).
pub mod hex_vec {
    use automerge::ChangeHash;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the hashes as a sequence of hex strings.
    ///
    /// # Errors
    /// The serializer's own errors.
    pub fn serialize<S: Serializer>(v: &[ChangeHash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for h in v {
            seq.serialize_element(&h.to_string())?;
        }
        seq.end()
    }

    /// Reads a sequence of hex strings.
    ///
    /// # Errors
    /// An element that is not 64 hex characters.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChangeHash>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| super::parse_hex(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// A hash as its 32 raw bytes, serialised exactly as a `[u8; 32]`
/// (`#[serde(with = "crate::hash::bytes")]`).
pub mod bytes {
    use automerge::ChangeHash;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the 32 bytes.
    ///
    /// # Errors
    /// The serializer's own errors.
    pub fn serialize<S: Serializer>(h: &ChangeHash, s: S) -> Result<S::Ok, S::Error> {
        h.0.serialize(s)
    }

    /// Reads 32 bytes.
    ///
    /// # Errors
    /// Input that is not 32 bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ChangeHash, D::Error> {
        <[u8; 32]>::deserialize(d).map(ChangeHash)
    }
}

/// A list of hashes, each as its 32 raw bytes, serialised exactly as a
/// `Vec<[u8; 32]>` (`#[serde(with = "crate::hash::bytes_vec")]`).
pub mod bytes_vec {
    use automerge::ChangeHash;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the hashes as a sequence of 32-byte arrays.
    ///
    /// # Errors
    /// The serializer's own errors.
    pub fn serialize<S: Serializer>(v: &[ChangeHash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for h in v {
            seq.serialize_element(&h.0)?;
        }
        seq.end()
    }

    /// Reads a sequence of 32-byte arrays.
    ///
    /// # Errors
    /// An element that is not 32 bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChangeHash>, D::Error> {
        Ok(Vec::<[u8; 32]>::deserialize(d)?
            .into_iter()
            .map(ChangeHash)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Json {
        #[serde(with = "hex")]
        one: ChangeHash,
        #[serde(with = "hex_vec")]
        many: Vec<ChangeHash>,
    }

    /// The record shape earlier versions stored, with raw arrays.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OldRecord {
        one: [u8; 32],
        many: Vec<[u8; 32]>,
        after: u64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct NewRecord {
        #[serde(with = "bytes")]
        one: ChangeHash,
        #[serde(with = "bytes_vec")]
        many: Vec<ChangeHash>,
        after: u64,
    }

    fn h(b: u8) -> ChangeHash {
        let mut a = [0u8; 32];
        for (i, x) in a.iter_mut().enumerate() {
            *x = b.wrapping_add(i as u8);
        }
        ChangeHash(a)
    }

    #[test]
    fn hex_is_lower_case_and_round_trips() {
        let v = Json {
            one: h(0xa0),
            many: vec![h(1), h(0xfe)],
        };
        let j = serde_json::to_value(&v).unwrap();
        let one = j["one"].as_str().unwrap().to_owned();
        assert_eq!(one.len(), 64);
        assert_eq!(one, one.to_lowercase());
        assert_eq!(one, h(0xa0).to_string());
        assert_eq!(j["many"][1], h(0xfe).to_string());
        assert_eq!(serde_json::from_value::<Json>(j).unwrap(), v);
        // Upper case is read too; anything else is refused with the text.
        let upper = serde_json::json!({"one": one.to_uppercase(), "many": []});
        assert_eq!(serde_json::from_value::<Json>(upper).unwrap().one, h(0xa0));
        let bad = serde_json::json!({"one": "zz", "many": []});
        let err = serde_json::from_value::<Json>(bad).unwrap_err().to_string();
        assert!(err.contains("invalid change hash \"zz\""), "{err}");
        assert!(parse_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn stored_form_is_the_old_array_form() {
        let cfg = bincode::config::standard();
        let new = NewRecord {
            one: h(7),
            many: vec![h(1), h(2)],
            after: 300,
        };
        let old = OldRecord {
            one: h(7).0,
            many: vec![h(1).0, h(2).0],
            after: 300,
        };
        let new_bytes = bincode::serde::encode_to_vec(&new, cfg).unwrap();
        let old_bytes = bincode::serde::encode_to_vec(&old, cfg).unwrap();
        assert_eq!(new_bytes, old_bytes);
        let (back, _): (NewRecord, usize) =
            bincode::serde::decode_from_slice(&old_bytes, cfg).unwrap();
        assert_eq!(back, new);
    }
}
