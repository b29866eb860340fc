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
/// The one exception is a stream's *metastream*, `$$` followed by the stream's id, which holds
/// the stream's metadata (see [`crate::lifecycle`]). Its category is `$$` and the category of
/// the stream it describes; a filter on a category keeps both, so that a subscriber to a
/// category also learns when its streams are deleted.
///
/// ```
/// use strata_core::StreamId;
/// let id = StreamId::new("account-123").unwrap();
/// assert_eq!(id.category(), "account");
/// assert!(StreamId::new("$all").is_err());
/// assert!(StreamId::new("").is_err());
/// let meta = id.metastream();
/// assert_eq!(meta.as_str(), "$$account-123");
/// assert_eq!(meta.category(), "$$account");
/// assert_eq!(meta.described_stream(), Some(id));
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

    /// Whether this is a metastream (`$$` and the id of the stream it describes).
    pub fn is_metastream(&self) -> bool {
        self.0.starts_with(METASTREAM_PREFIX)
    }

    /// The metastream of this stream: `$$account-123` for `account-123`. A metastream's own
    /// metastream is itself (metastreams carry no metadata).
    pub fn metastream(&self) -> StreamId {
        if self.is_metastream() {
            return self.clone();
        }
        StreamId(format!("{METASTREAM_PREFIX}{}", self.0))
    }

    /// For a metastream, the stream it describes; `None` for any other stream.
    pub fn described_stream(&self) -> Option<StreamId> {
        self.0
            .strip_prefix(METASTREAM_PREFIX)
            .map(|s| StreamId(s.to_owned()))
    }
}

/// What starts the id of a metastream: `$$account-123` holds the metadata of `account-123`.
pub const METASTREAM_PREFIX: &str = "$$";

/// The category of a stream id: the part before the first `-`, or all of it. A metastream's
/// category is `$$` and its stream's category (`$$account-1` is in `$$account`), which a
/// [`Filter`](crate::Filter) on the category `account` also keeps.
pub fn category_of(stream_id: &str) -> &str {
    let skip = if stream_id.starts_with(METASTREAM_PREFIX) {
        METASTREAM_PREFIX.len()
    } else {
        0
    };
    match stream_id[skip..].find('-') {
        Some(i) => &stream_id[..skip + i],
        None => stream_id,
    }
}

fn validate_stream_id(id: &str) -> Result<(), InvalidInput> {
    if let Some(described) = id.strip_prefix(METASTREAM_PREFIX) {
        // A metastream: the rest is the stream it describes, so every stream has one (its id
        // is at most two bytes longer than the longest stream id).
        return validate_stream_id(described);
    }
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
        assert_eq!(category_of("$$account-123"), "$$account");
        assert_eq!(category_of("$$single"), "$$single");
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
        assert!(StreamId::new("$$").is_err());
        assert!(StreamId::new("$$$x").is_err());
        assert!(StreamId::new("$$a b").is_err());
        assert!(StreamId::new("$$a-1").is_ok_and(|m| m.is_metastream()));
        assert!(StreamId::new(format!("$${}", "a".repeat(STREAM_ID_MAX_BYTES))).is_ok());
        assert!(StreamId::new(format!("$${}", "a".repeat(STREAM_ID_MAX_BYTES + 1))).is_err());
        assert!(serde_json::from_str::<StreamId>("\"\"").is_err());
        assert_eq!(
            serde_json::from_str::<StreamId>("\"order-1\"")
                .unwrap()
                .as_str(),
            "order-1"
        );
    }
}
