//! The event model: what is appended ([`EventData`]) and what is read back ([`RecordedEvent`]).

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{InvalidInput, LimitError};
use crate::limits;
use crate::stream_id::{category_of, StreamId};

/// The content type of JSON payloads, the default.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// A point in time as the store records it: UTC with microsecond precision.
pub type Timestamp = DateTime<Utc>;

/// Microseconds since the Unix epoch, the form timestamps take on disk.
pub fn timestamp_to_micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

/// The inverse of [`timestamp_to_micros`]. Out-of-range values clamp to the epoch.
pub fn timestamp_from_micros(micros: i64) -> Timestamp {
    Utc.timestamp_micros(micros).single().unwrap_or_default()
}

/// A position in the global order of all events. Readers see events in increasing position;
/// positions are unique but not necessarily dense (a backend may skip numbers).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// The lowest position.
    pub const START: Position = Position(0);
    /// A position above every stored event; reading backward from here starts at the newest.
    pub const END: Position = Position(u64::MAX);

    /// The position as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the caller believes the stream's version is before an append (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have this version (versions start at 0).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` (`None`: no stream) satisfies this expectation.
    pub fn matches(self, actual: Option<u64>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
            ExpectedVersion::Exact(v) => actual == Some(v),
        }
    }

    /// The expectation a name stands for: `any`, `no_stream`, `stream_exists` (the spelling
    /// of the HTTP API and the CLI), or `no-stream`, `stream-exists` and `exists`, which are
    /// accepted too. `None` for any other name (a version number is no name).
    ///
    /// ```
    /// use strata_core::ExpectedVersion;
    /// assert_eq!(ExpectedVersion::from_name("no_stream"), Some(ExpectedVersion::NoStream));
    /// assert_eq!(ExpectedVersion::from_name("no-stream"), Some(ExpectedVersion::NoStream));
    /// assert_eq!(ExpectedVersion::from_name("exists"), Some(ExpectedVersion::StreamExists));
    /// assert_eq!(ExpectedVersion::from_name("3"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<ExpectedVersion> {
        Some(match name {
            "any" => ExpectedVersion::Any,
            "no_stream" | "no-stream" => ExpectedVersion::NoStream,
            "stream_exists" | "stream-exists" | "exists" => ExpectedVersion::StreamExists,
            _ => return None,
        })
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// Event metadata: a JSON object. Correlation id, causation id and user id have typed
/// accessors; any other key is kept as given.
///
/// ```
/// use strata_core::Metadata;
/// let m = Metadata::new().with_correlation_id("req-789").with_user_id("user-456");
/// assert_eq!(m.correlation_id(), Some("req-789"));
/// assert_eq!(m.causation_id(), None);
/// ```
///
/// Metadata read from a store ([`Metadata::from_bytes`]) is checked at once but turned into a
/// map only when a key is first looked at: a catch-up over a million events that never looks
/// at their metadata does not build a million maps.
#[derive(Clone, Default)]
pub struct Metadata {
    /// The object, built on first use when `raw` holds it.
    map: std::sync::OnceLock<Map<String, Value>>,
    /// Stored bytes of a non-empty object, checked to parse into one (see `from_bytes`);
    /// `None` for metadata built or edited through the API. Kept once the map is built.
    raw: Option<Box<[u8]>>,
}

/// Key of the correlation id in metadata.
pub const CORRELATION_ID_KEY: &str = "correlationId";
/// Key of the causation id in metadata.
pub const CAUSATION_ID_KEY: &str = "causationId";
/// Key of the user id in metadata.
pub const USER_ID_KEY: &str = "userId";

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Metadata::default()
    }

    /// Wraps a JSON object.
    pub fn from_map(map: Map<String, Value>) -> Self {
        Metadata {
            map: std::sync::OnceLock::from(map),
            raw: None,
        }
    }

    /// The correlation id, if set.
    pub fn correlation_id(&self) -> Option<&str> {
        self.get_str(CORRELATION_ID_KEY)
    }
    /// The causation id, if set.
    pub fn causation_id(&self) -> Option<&str> {
        self.get_str(CAUSATION_ID_KEY)
    }
    /// The user id, if set.
    pub fn user_id(&self) -> Option<&str> {
        self.get_str(USER_ID_KEY)
    }
    /// Sets the correlation id.
    pub fn with_correlation_id(self, id: impl Into<String>) -> Self {
        self.with(CORRELATION_ID_KEY, Value::String(id.into()))
    }
    /// Sets the causation id.
    pub fn with_causation_id(self, id: impl Into<String>) -> Self {
        self.with(CAUSATION_ID_KEY, Value::String(id.into()))
    }
    /// Sets the user id.
    pub fn with_user_id(self, id: impl Into<String>) -> Self {
        self.with(USER_ID_KEY, Value::String(id.into()))
    }
    /// Sets any key.
    pub fn with(self, key: impl Into<String>, value: Value) -> Self {
        let mut map = self.into_map();
        map.insert(key.into(), value);
        Metadata::from_map(map)
    }
    /// Reads any key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map().get(key)
    }
    fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
    /// The whole object.
    pub fn as_map(&self) -> &Map<String, Value> {
        self.map.get_or_init(|| match &self.raw {
            // `from_bytes` checked that these bytes parse into a map, so this parse succeeds.
            Some(raw) => serde_json::from_slice(raw).unwrap_or_default(),
            None => Map::new(),
        })
    }
    /// The object, owned.
    pub fn into_map(mut self) -> Map<String, Value> {
        self.as_map();
        self.map.take().unwrap_or_default()
    }
    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        // Stored bytes are kept only for a non-empty object.
        self.raw.is_none() && self.as_map().is_empty()
    }

    /// Encodes to bytes as stored: empty metadata is zero bytes, otherwise compact JSON
    /// (metadata read from a store gives back the bytes it was read from).
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.raw {
            Some(raw) => raw.to_vec(),
            None if self.as_map().is_empty() => Vec::new(),
            None => serde_json::to_vec(self.as_map()).unwrap_or_default(),
        }
    }

    /// Decodes stored bytes (the inverse of [`Metadata::to_bytes`]): zero bytes are empty
    /// metadata, anything else must be one JSON object. The bytes are checked now, exactly as
    /// strictly as parsing them into a map would (UTF-8, escapes, number range, nesting); the
    /// map is built when first used.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let body = bytes.trim_ascii();
        if body.is_empty() {
            return Ok(Metadata::new());
        }
        if !body.starts_with(b"{") {
            // Not an object: the map's own parse says why.
            return serde_json::from_slice::<Map<String, Value>>(bytes).map(Metadata::from_map);
        }
        crate::json::check(bytes, None)?;
        // An object with nothing but whitespace between its braces is empty.
        if body[1..].trim_ascii() == b"}" {
            return Ok(Metadata::new());
        }
        Ok(Metadata {
            map: std::sync::OnceLock::new(),
            raw: Some(bytes.into()),
        })
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.as_map() == other.as_map()
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Metadata").field(self.as_map()).finish()
    }
}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_map().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Map::deserialize(deserializer).map(Metadata::from_map)
    }
}

/// An event to append. The store assigns the stream version, global position and recorded-at
/// time; it assigns a UUIDv7 id when none is given.
///
/// ```
/// use strata_core::{EventData, Metadata};
/// let e = EventData::json("MoneyDeposited", &serde_json::json!({"amount": 200}))
///     .unwrap()
///     .with_metadata(Metadata::new().with_correlation_id("req-789"));
/// assert_eq!(e.content_type, "application/json");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EventData {
    /// The event's id. Give one to make retries idempotent; `None` lets the store assign one.
    pub event_id: Option<Uuid>,
    /// The event type: a stable name chosen by the application.
    pub event_type: String,
    /// The payload's content type; [`CONTENT_TYPE_JSON`] by default.
    pub content_type: String,
    /// The payload. For JSON it must be one valid JSON document.
    pub data: Vec<u8>,
    /// Metadata.
    pub metadata: Metadata,
}

impl EventData {
    /// A JSON event from any serializable value.
    pub fn json<T: Serialize + ?Sized>(
        event_type: impl Into<String>,
        data: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(EventData {
            event_id: None,
            event_type: event_type.into(),
            content_type: CONTENT_TYPE_JSON.to_owned(),
            data: serde_json::to_vec(data)?,
            metadata: Metadata::new(),
        })
    }

    /// A payload of another content type, kept as raw bytes.
    pub fn binary(
        event_type: impl Into<String>,
        content_type: impl Into<String>,
        data: Vec<u8>,
    ) -> Self {
        EventData {
            event_id: None,
            event_type: event_type.into(),
            content_type: content_type.into(),
            data,
            metadata: Metadata::new(),
        }
    }

    /// Sets the event id (for idempotent retries).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.event_id = Some(id);
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// The stream it belongs to (the mission's aggregate id).
    pub stream_id: StreamId,
    /// Its version in the stream: 0 for the first event, dense.
    pub stream_version: u64,
    /// Its place in the global order.
    pub position: Position,
    /// When the store recorded it (UTC, never decreasing in position order).
    pub recorded_at: Timestamp,
    /// The event type.
    pub event_type: String,
    /// The payload's content type.
    pub content_type: String,
    /// The payload.
    pub data: Vec<u8>,
    /// Metadata.
    pub metadata: Metadata,
}

impl RecordedEvent {
    /// The stream's category (the mission's aggregate type).
    pub fn category(&self) -> &str {
        category_of(self.stream_id.as_str())
    }

    /// Whether the payload is JSON.
    pub fn is_json(&self) -> bool {
        self.content_type == CONTENT_TYPE_JSON
    }

    /// Decodes the JSON payload.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.data)
    }

    /// The payload as a JSON value when it is JSON.
    pub fn data_json(&self) -> Option<Value> {
        if self.is_json() {
            serde_json::from_slice(&self.data).ok()
        } else {
            None
        }
    }
}

/// Checks one event of an append against the model's rules and the limits. `index` is the
/// event's place in the append, used to name the field in errors.
pub fn validate_event(index: usize, event: &EventData) -> Result<(), crate::AppendError> {
    let field = |name: &str| format!("events[{index}].{name}");
    if event.event_type.is_empty() {
        return Err(InvalidInput::new(field("event_type"), "must not be empty").into());
    }
    if event.event_type.chars().any(char::is_control) {
        return Err(
            InvalidInput::new(field("event_type"), "must not contain control characters").into(),
        );
    }
    LimitError::check(
        || field("event_type bytes"),
        limits::EVENT_TYPE_MAX_BYTES,
        event.event_type.len(),
    )?;
    if event.content_type.is_empty() || !event.content_type.is_ascii() {
        return Err(InvalidInput::new(
            field("content_type"),
            "must be a non-empty ASCII media type",
        )
        .into());
    }
    if event.content_type.chars().any(|c| c.is_ascii_control()) {
        return Err(InvalidInput::new(
            field("content_type"),
            "must not contain control characters",
        )
        .into());
    }
    LimitError::check(
        || field("content_type bytes"),
        limits::CONTENT_TYPE_MAX_BYTES,
        event.content_type.len(),
    )?;
    LimitError::check(
        || field("data bytes"),
        limits::EVENT_DATA_MAX_BYTES,
        event.data.len(),
    )?;
    // Checked exactly as strictly as readers parse it (strings decoded, numbers in range,
    // nesting bounded), so that no stored event breaks a reader.
    if event.content_type == CONTENT_TYPE_JSON {
        if let Err(e) = crate::json::check(&event.data, Some(limits::JSON_NESTING_MAX_DEPTH)) {
            return Err(InvalidInput::new(
                field("data"),
                format!("is not valid JSON but the content type is application/json: {e}"),
            )
            .into());
        }
    }
    if event.event_id == Some(Uuid::nil()) {
        return Err(InvalidInput::new(field("event_id"), "must not be the nil UUID").into());
    }
    Ok(())
}

/// Checks a whole append: the count, each event, the total size, and that no event id appears
/// twice. Returns the encoded metadata of each event, which every backend stores.
pub fn validate_append(events: &[EventData]) -> Result<Vec<Vec<u8>>, crate::AppendError> {
    if events.is_empty() {
        return Err(InvalidInput::new("events", "an append needs at least one event").into());
    }
    LimitError::check(
        || "events in one append".to_owned(),
        limits::APPEND_EVENTS_MAX,
        events.len(),
    )?;
    let mut total = 0usize;
    let mut metas = Vec::with_capacity(events.len());
    let mut ids = std::collections::HashSet::new();
    for (i, e) in events.iter().enumerate() {
        validate_event(i, e)?;
        let meta = e.metadata.to_bytes();
        LimitError::check(
            || format!("events[{i}].metadata bytes"),
            limits::EVENT_METADATA_MAX_BYTES,
            meta.len(),
        )?;
        if !meta.is_empty() {
            crate::json::check(&meta, Some(limits::JSON_NESTING_MAX_DEPTH)).map_err(|err| {
                InvalidInput::new(format!("events[{i}].metadata"), err.to_string())
            })?;
        }
        total += e.data.len() + meta.len();
        if let Some(id) = e.event_id {
            if !ids.insert(id) {
                return Err(InvalidInput::new(
                    format!("events[{i}].event_id"),
                    format!("{id} appears twice in one append"),
                )
                .into());
            }
        }
        metas.push(meta);
    }
    LimitError::check(
        || "bytes in one append".to_owned(),
        limits::APPEND_MAX_BYTES,
        total,
    )?;
    Ok(metas)
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append (the version of its last event).
    pub stream_version: u64,
    /// The global position of each appended event, in order.
    pub positions: Vec<Position>,
    /// Whether this was an idempotent retry: every event was already stored under its id, so
    /// nothing was written and the answer is the original append's. A backend that retried the
    /// append itself after losing its connection reports `false` when the retry found the
    /// events stored: its own first attempt most likely committed them.
    pub replayed: bool,
}

impl AppendResult {
    /// The position of the last event appended.
    pub fn last_position(&self) -> Position {
        self.positions.last().copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eager(bytes: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    #[test]
    fn metadata_from_bytes_matches_an_eager_parse() {
        for text in [
            r#"{"correlationId":"req-789","userId":"user-456"}"#,
            r#"  {"a": [1, {"b": "}\"{"}], "c": null}  "#,
            r#"{"nested":{"deeper":{"x":1.5e3}}}"#,
        ] {
            let m = Metadata::from_bytes(text.as_bytes()).unwrap();
            assert!(!m.is_empty());
            assert_eq!(m.as_map(), &eager(text.as_bytes()).unwrap(), "{text}");
            // Stored bytes come back as they were.
            assert_eq!(m.to_bytes(), text.as_bytes());
            assert_eq!(m, Metadata::from_map(eager(text.as_bytes()).unwrap()));
        }
        let m = Metadata::from_bytes(br#"{"correlationId":"req-789"}"#).unwrap();
        assert_eq!(m.correlation_id(), Some("req-789"));
        let m = m.with_user_id("u");
        assert_eq!(m.user_id(), Some("u"));
        assert_eq!(m.correlation_id(), Some("req-789"));
        assert_eq!(m.to_bytes(), br#"{"correlationId":"req-789","userId":"u"}"#);
    }

    #[test]
    fn metadata_from_bytes_rejects_what_is_not_one_object() {
        for bad in [
            &b"[1,2]"[..],
            b"\"text\"",
            b"{\"a\":1",
            b"{\"a\":1} {}",
            b"{\"a\":1} x",
            b"{'a':1}",
            b"\xff",
        ] {
            assert!(
                Metadata::from_bytes(bad).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn metadata_from_bytes_empty_forms_are_empty() {
        for empty in [&b""[..], b"  ", b"{}", b" { \n } "] {
            let m = Metadata::from_bytes(empty).unwrap();
            assert!(m.is_empty());
            assert!(m.to_bytes().is_empty());
            assert_eq!(m, Metadata::new());
        }
    }

    #[test]
    fn json_data_is_checked_as_strictly_as_readers_parse_it() {
        let with = |data: &[u8]| EventData {
            data: data.to_vec(),
            ..EventData::json("E", &1).unwrap()
        };
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let deep = nested(limits::JSON_NESTING_MAX_DEPTH + 1);
        for bad in [
            &br#""\ud800""#[..],
            b"1e400",
            deep.as_bytes(),
            nested(100_000).as_bytes(),
        ] {
            match validate_event(0, &with(bad)) {
                Err(crate::AppendError::InvalidInput(i)) => assert_eq!(i.field, "events[0].data"),
                other => panic!("{other:?}"),
            }
        }
        let at_limit = nested(limits::JSON_NESTING_MAX_DEPTH);
        validate_event(0, &with(at_limit.as_bytes())).unwrap();
        // Other content types are bytes, not checked as JSON.
        let binary = EventData::binary("E", "application/octet-stream", deep.into_bytes());
        validate_event(0, &binary).unwrap();
    }

    #[test]
    fn metadata_nested_past_the_parse_limit_is_an_error_not_an_empty_map() {
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        // Within serde_json's recursion limit: accepted, and the map is the eager one.
        let ok = deep(100);
        let m = Metadata::from_bytes(ok.as_bytes()).unwrap();
        assert_eq!(m.as_map(), &eager(ok.as_bytes()).unwrap());
        // Past it: the eager parse's error, as before the map was built lazily.
        let too_deep = deep(200);
        assert!(eager(too_deep.as_bytes()).is_err());
        assert!(Metadata::from_bytes(too_deep.as_bytes()).is_err());
        // Brackets inside strings do not count.
        let in_string = format!("{{\"a\":\"{}\"}}", "[".repeat(200));
        assert!(Metadata::from_bytes(in_string.as_bytes()).is_ok());
    }

    #[test]
    fn metadata_from_bytes_rejects_what_a_map_parse_rejects() {
        for bad in [
            // A lone surrogate escape, an invalid UTF-8 byte inside a string, numbers out of
            // range, a bad escape: each shows only when the string or number is decoded.
            &br#"{"a":"\ud800","b":1}"#[..],
            b"{\"a\":\"\xff\",\"b\":1}",
            br#"{"a":1e400,"b":1}"#,
            br#"{"a":-1e400}"#,
            br#"{"a":"\q"}"#,
            br#"{"k\ud800":1}"#,
        ] {
            assert!(eager(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
            assert!(
                Metadata::from_bytes(bad).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
        // What a map parse accepts is accepted, and reads the same.
        let fine =
            br#"{"a":"\u00e9\ud83d\ude00","big":123456789012345678901234567890,"n":-0.5e-3}"#;
        let m = Metadata::from_bytes(fine).unwrap();
        assert_eq!(m.as_map(), &eager(fine).unwrap());
    }
}
