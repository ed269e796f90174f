//! Typed identifiers: documents, workspaces and collections.
//!
//! Every id that crosses a boundary (disk, wire, CLI) is a newtype so that a
//! workspace id can never be passed where a document id is expected. Parsing
//! validates; invalid input is an [`IdError`] naming what was wrong.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Errors from parsing or validating an identifier.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdError {
    /// The text is not a UUID.
    #[error(
        "invalid {kind} id {input:?}: expected a UUID such as 0190f3a4-7c1e-7b5a-9c7e-3f1d2a4b5c6d"
    )]
    InvalidUuid {
        /// Which kind of id was being parsed ("document", "workspace").
        kind: &'static str,
        /// The rejected input.
        input: String,
    },
    /// The collection name breaks the naming rules (see [`Collection`]).
    #[error("invalid collection name {name:?}: {reason}")]
    InvalidCollection {
        /// The rejected name.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// Bytes of the wrong length for an id.
    #[error("invalid {kind} id: expected 16 bytes, got {len}")]
    InvalidLength {
        /// Which kind of id was being decoded.
        kind: &'static str,
        /// The length found.
        len: usize,
    },
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The 16 bytes of the UUID (the form used in storage keys).
            pub fn to_bytes(&self) -> [u8; 16] {
                *self.0.as_bytes()
            }

            /// Decodes the 16-byte form.
            ///
            /// # Errors
            /// [`IdError::InvalidLength`] when `bytes` is not 16 bytes long.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
                let arr: [u8; 16] = bytes.try_into().map_err(|_| IdError::InvalidLength {
                    kind: $kind,
                    len: bytes.len(),
                })?;
                Ok(Self(Uuid::from_bytes(arr)))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim())
                    .map(Self)
                    .map_err(|_| IdError::InvalidUuid { kind: $kind, input: s.to_owned() })
            }
        }
    };
}

uuid_id!(
    /// The id of one entity (one Automerge document): a UUID v7, so ids sort by
    /// creation time and storage keys of recent documents sit together.
    DocId,
    "document"
);

uuid_id!(
    /// The id of a workspace: the unit of sharing and of access control.
    WorkspaceId,
    "workspace"
);

impl DocId {
    /// A new, time-ordered id (UUID v7) from an injected timestamp and random bits.
    ///
    /// The replica passes its clock and random source here; nothing global is read.
    pub fn new_v7(unix_ms: u64, random: [u8; 10]) -> Self {
        Self(uuid::Builder::from_unix_timestamp_millis(unix_ms, &random).into_uuid())
    }
}

impl WorkspaceId {
    /// A new random workspace id: a UUID v4 from the operating system's
    /// random source (122 random bits, so two devices creating workspaces
    /// offline never pick the same id). With a Supabase backend the server
    /// usually picks the id (`create_workspace`); this is for apps that name
    /// their workspaces themselves (LocalHub, tests, a `Remote` of your own).
    #[allow(clippy::new_without_default)] // a random id is not a default value
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// A new random workspace id (UUID v4) from injected random bytes.
    pub fn from_random(random: [u8; 16]) -> Self {
        Self(uuid::Builder::from_random_bytes(random).into_uuid())
    }
}

/// The longest collection name accepted, in bytes.
pub const MAX_COLLECTION_LEN: usize = 64;

/// A collection name: the "table" an entity belongs to (`tasks`, `notes`).
///
/// Rules: 1 to [`MAX_COLLECTION_LEN`] ASCII characters; the first is a letter;
/// the rest are letters, digits, `_`, `-` or `.`. The rules keep names safe in
/// storage keys, URLs, SQL text and shell arguments alike.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Collection(String);

impl Collection {
    /// Validates and wraps a collection name.
    ///
    /// # Errors
    /// [`IdError::InvalidCollection`] naming the rule the name breaks.
    pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > MAX_COLLECTION_LEN {
            Some("it is longer than 64 bytes")
        } else if !name.as_bytes()[0].is_ascii_alphabetic() {
            Some("it must start with an ASCII letter")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            Some("only ASCII letters, digits, '_', '-' and '.' are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(IdError::InvalidCollection { name, reason }),
            None => Ok(Self(name)),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Collection {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Collection> for String {
    fn from(value: Collection) -> Self {
        value.0
    }
}

impl FromStr for Collection {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Collection({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_rules() {
        assert!(Collection::new("tasks").is_ok());
        assert!(Collection::new("a.b-c_d9").is_ok());
        for bad in [
            "",
            "9tasks",
            "_x",
            "tasks;drop",
            "ta sks",
            "tâches",
            &"a".repeat(65),
        ] {
            assert!(Collection::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Collection::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn workspace_id_new_is_a_random_v4() {
        let a = WorkspaceId::new();
        let b = WorkspaceId::new();
        assert_ne!(a, b);
        assert_eq!(a.as_uuid().get_version_num(), 4);
        assert_eq!(a.to_string().parse::<WorkspaceId>().unwrap(), a);
    }

    #[test]
    fn doc_id_is_v7_and_time_ordered() {
        let a = DocId::new_v7(1_000, [1; 10]);
        let b = DocId::new_v7(2_000, [0; 10]);
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
        assert_eq!(a.to_string().parse::<DocId>().unwrap(), a);
        assert_eq!(DocId::from_slice(&a.to_bytes()).unwrap(), a);
        assert!(matches!(
            "nope".parse::<DocId>(),
            Err(IdError::InvalidUuid { .. })
        ));
    }
}
