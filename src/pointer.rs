//! JSON pointers (RFC 6901) into an entity's value: how [`crate::Replica::resolve`]
//! and the conflict list ([`crate::conflict::Conflict::path`]) name a field.
//!
//! `/title` is the key `title` of the entity, `/tags/2` the third element of
//! the list `tags`, `/a~1b` the key `a/b` and `/m~0n` the key `m~n`. The empty
//! pointer (the whole entity) names no field and is refused here.

use std::fmt;
use std::str::FromStr;

/// Why a text is not a JSON pointer naming a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PointerError {
    /// The empty pointer names the whole entity, not a field.
    #[error("the empty JSON pointer names the whole entity; name a field, e.g. \"/title\"")]
    Empty,
    /// A non-empty pointer must start with `/`.
    #[error("JSON pointer {pointer:?} must start with '/', e.g. \"/title\" or \"/tags/2\"")]
    MissingSlash {
        /// The rejected text.
        pointer: String,
    },
    /// `~` must be followed by `0` (for `~`) or `1` (for `/`).
    #[error("JSON pointer {pointer:?} has an invalid escape: '~' must be followed by 0 or 1")]
    BadEscape {
        /// The rejected text.
        pointer: String,
    },
}

/// A parsed JSON pointer naming one field (at least one reference token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonPointer {
    /// The text as given (for messages and round trips).
    raw: String,
    /// The unescaped reference tokens, outermost first.
    tokens: Vec<String>,
}

impl JsonPointer {
    /// Parses an RFC 6901 pointer.
    ///
    /// # Errors
    /// [`PointerError`] when the text is empty, does not start with `/`, or
    /// has a `~` not followed by `0` or `1`.
    pub fn parse(text: &str) -> Result<Self, PointerError> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(if text.is_empty() {
                PointerError::Empty
            } else {
                PointerError::MissingSlash {
                    pointer: text.to_owned(),
                }
            });
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        _ => {
                            return Err(PointerError::BadEscape {
                                pointer: text.to_owned(),
                            })
                        }
                    }
                } else {
                    token.push(c);
                }
            }
            tokens.push(token);
        }
        Ok(Self {
            raw: text.to_owned(),
            tokens,
        })
    }

    /// The unescaped reference tokens, outermost first (never empty).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The pointer as text.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Escapes one map key as a reference token (`~` → `~0`, `/` → `~1`).
    pub fn escape(key: &str) -> String {
        key.replace('~', "~0").replace('/', "~1")
    }

    /// A token as a list index: decimal digits without a leading zero
    /// (RFC 6901); `None` otherwise (`-` included: it names no element).
    pub fn index(token: &str) -> Option<usize> {
        let ok = !token.is_empty()
            && token.bytes().all(|b| b.is_ascii_digit())
            && (token == "0" || !token.starts_with('0'));
        if ok {
            token.parse().ok()
        } else {
            None
        }
    }
}

impl FromStr for JsonPointer {
    type Err = PointerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unescapes() {
        let p = JsonPointer::parse("/a~1b/m~0n/2").unwrap();
        assert_eq!(p.tokens(), ["a/b", "m~n", "2"]);
        assert_eq!(p.as_str(), "/a~1b/m~0n/2");
        assert_eq!(JsonPointer::parse("/").unwrap().tokens(), [""]);
        assert_eq!(
            JsonPointer::escape("a/b~c"),
            "a~1b~0c",
            "escape is the inverse of parsing"
        );
    }

    #[test]
    fn refuses_bad_syntax() {
        assert_eq!(JsonPointer::parse(""), Err(PointerError::Empty));
        assert!(matches!(
            JsonPointer::parse("title"),
            Err(PointerError::MissingSlash { .. })
        ));
        assert!(matches!(
            JsonPointer::parse("/a~2"),
            Err(PointerError::BadEscape { .. })
        ));
        assert!(matches!(
            JsonPointer::parse("/a~"),
            Err(PointerError::BadEscape { .. })
        ));
    }

    #[test]
    fn list_indexes() {
        assert_eq!(JsonPointer::index("0"), Some(0));
        assert_eq!(JsonPointer::index("12"), Some(12));
        assert_eq!(JsonPointer::index("01"), None);
        assert_eq!(JsonPointer::index("-"), None);
        assert_eq!(JsonPointer::index("x"), None);
        assert_eq!(JsonPointer::index(""), None);
    }
}
