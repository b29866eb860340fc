//! Stream identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;
use crate::limits::STREAM_ID_MAX_BYTES;

/// The name of a stream, such as `account-123`: the mission's aggregate id.
///
/// A stream id is 1 to [`STREAM_ID_MAX_BYTES`] bytes of UTF-8 with no whitespace or control
/// characters, and
/// does not start with `$` (names starting with `$`, such as `$all`, are reserved for Strata).
///
/// ```
/// use strata_core::StreamId;
/// let id = StreamId::new("account-123").unwrap();
/// assert_eq!(id.category(), "account");
/// assert!(StreamId::new("$all").is_err());
/// assert!(StreamId::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    /// Checks `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidInput> {
        let id = id.into();
        validate_stream_id(&id)?;
        Ok(StreamId(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The category: the part of the id before the first `-`, or the whole id when it has
    /// none. This is the mission's aggregate type (`account-123` is in category `account`).
    pub fn category(&self) -> &str {
        category_of(&self.0)
    }

    /// Unwraps the id into its string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The category of a stream id: the part before the first `-`, or all of it.
pub fn category_of(stream_id: &str) -> &str {
    match stream_id.find('-') {
        Some(i) => &stream_id[..i],
        None => stream_id,
    }
}

fn validate_stream_id(id: &str) -> Result<(), InvalidInput> {
    if id.is_empty() {
        return Err(InvalidInput::new("stream_id", "must not be empty"));
    }
    if id.len() > STREAM_ID_MAX_BYTES {
        return Err(InvalidInput::new(
            "stream_id",
            format!(
                "is {} bytes long; the limit is {STREAM_ID_MAX_BYTES}",
                id.len()
            ),
        ));
    }
    if id.starts_with('$') {
        return Err(InvalidInput::new(
            "stream_id",
            "must not start with `$`; such names are reserved",
        ));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(InvalidInput::new(
            "stream_id",
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::borrow::Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for StreamId {
    type Error = InvalidInput;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        StreamId::new(value)
    }
}

impl TryFrom<String> for StreamId {
    type Error = InvalidInput;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        StreamId::new(value)
    }
}

impl std::str::FromStr for StreamId {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamId::new(s)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StreamId::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        assert_eq!(category_of("account-123"), "account");
        assert_eq!(category_of("account-123-x"), "account");
        assert_eq!(category_of("singleton"), "singleton");
        assert_eq!(category_of("-x"), "");
    }

    #[test]
    fn rejects_bad_ids() {
        assert!(StreamId::new("a".repeat(STREAM_ID_MAX_BYTES)).is_ok());
        let e = StreamId::new("a".repeat(STREAM_ID_MAX_BYTES + 1)).unwrap_err();
        assert_eq!(e.field, "stream_id");
        assert!(StreamId::new("a\nb").is_err());
        assert!(StreamId::new("a\0b").is_err());
        assert!(StreamId::new("a b").is_err());
        assert!(StreamId::new("$x").is_err());
        assert!(serde_json::from_str::<StreamId>("\"\"").is_err());
        assert_eq!(
            serde_json::from_str::<StreamId>("\"order-1\"")
                .unwrap()
                .as_str(),
            "order-1"
        );
    }
}
