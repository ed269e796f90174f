//! Versioned encoding of every stored value.
//!
//! Each value starts with one format byte, then a bincode 2 (standard config)
//! body. A reader that finds a format byte it does not know reports
//! [`StoreError::UnsupportedFormat`] instead of guessing, and a body that does
//! not decode is [`StoreError::Corrupt`]: never a panic, never a silent default.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;

/// The format byte of every record written by this version.
pub const FORMAT_V1: u8 = 1;

/// Encodes `value` as `FORMAT_V1 ‖ bincode(value)`.
///
/// # Errors
/// [`StoreError::Encode`] if serde refuses the value (it cannot for the
/// record types of this crate, but the failure is reported, not unwrapped).
pub fn encode<T: Serialize>(tree: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![FORMAT_V1];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard()).map_err(
        |e| StoreError::Encode {
            tree,
            reason: e.to_string(),
        },
    )?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
///
/// # Errors
/// [`StoreError::UnsupportedFormat`] for an unknown format byte,
/// [`StoreError::Corrupt`] for an empty value, a body that does not decode, or
/// trailing bytes.
pub fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    let (format, body) = bytes.split_first().ok_or_else(|| StoreError::Corrupt {
        tree,
        key: hex(key),
        reason: "empty value".into(),
    })?;
    if *format != FORMAT_V1 {
        return Err(StoreError::UnsupportedFormat {
            tree,
            key: hex(key),
            found: *format,
        });
    }
    let (value, read) = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|e| StoreError::Corrupt {
            tree,
            key: hex(key),
            reason: e.to_string(),
        })?;
    if read != body.len() {
        return Err(StoreError::Corrupt {
            tree,
            key: hex(key),
            reason: format!("{} trailing bytes", body.len() - read),
        });
    }
    Ok(value)
}

/// Lower-case hex of a byte string (for keys in error messages).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let v: (u32, String) = (7, "x".into());
        let bytes = encode("t", &v).unwrap();
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(decode::<(u32, String)>("t", b"k", &bytes).unwrap(), v);
        let mut future = bytes.clone();
        future[0] = 9;
        assert!(matches!(
            decode::<(u32, String)>("t", b"k", &future),
            Err(StoreError::UnsupportedFormat { found: 9, .. })
        ));
        assert!(matches!(
            decode::<(u32, String)>("t", b"k", &[]),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode::<(u32, String)>("t", b"k", &bytes[..bytes.len() - 1]),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
