//! An event as the API shows it, in pages and in subscriptions.

use std::borrow::Cow;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use strata_core::{InvalidInput, Metadata, Position, RecordedEvent, StreamId, Uuid};

use crate::B64;

/// An event as the API returns it: the mission's field names; `data` for JSON payloads (byte
/// for byte as appended), `dataBase64` for any other content type.
///
/// The server renders a [`RecordedEvent`] with [`EventJson::new`], which borrows it; a client
/// parses the same shape into an `EventJson<'static>` and turns it back into a
/// [`RecordedEvent`] with [`EventJson::into_recorded`].
///
/// ```
/// use strata_core::{Metadata, Position, RecordedEvent, StreamId, Uuid};
/// use strata_wire::EventJson;
///
/// let event = RecordedEvent {
///     event_id: Uuid::from_u128(1),
///     stream_id: StreamId::new("account-1").unwrap(),
///     stream_version: 0,
///     position: Position(41),
///     recorded_at: strata_core::timestamp_from_micros(1_700_000_000_000_001),
///     event_type: "Deposited".to_owned(),
///     content_type: strata_core::CONTENT_TYPE_JSON.to_owned(),
///     data: br#"{"amount":5}"#.to_vec(),
///     metadata: Metadata::new(),
/// };
/// let text = serde_json::to_string(&EventJson::new(&event)).unwrap();
/// assert!(text.contains(r#""data":{"amount":5}"#));
/// let back = strata_wire::parse_event(text.as_bytes()).unwrap();
/// assert_eq!(back, event);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventJson<'a> {
    event_id: Uuid,
    stream_id: Cow<'a, str>,
    category: Cow<'a, str>,
    event_type: Cow<'a, str>,
    version: u64,
    position: u64,
    recorded_at: String,
    content_type: Cow<'a, str>,
    #[serde(default)]
    metadata: Cow<'a, Map<String, Value>>,
    // `null` is a payload (the JSON event without data), so it is kept rather than read as
    // "absent".
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::present"
    )]
    data: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

impl<'a> EventJson<'a> {
    /// The API form of `e`.
    pub fn new(e: &'a RecordedEvent) -> Self {
        let data = if e.is_json() {
            std::str::from_utf8(&e.data)
                .ok()
                .and_then(|s| RawValue::from_string(s.to_owned()).ok())
        } else {
            None
        };
        let data_base64 = data.is_none().then(|| B64.encode(&e.data));
        EventJson {
            event_id: e.event_id,
            stream_id: Cow::Borrowed(e.stream_id.as_str()),
            category: Cow::Borrowed(e.category()),
            event_type: Cow::Borrowed(&e.event_type),
            version: e.stream_version,
            position: e.position.0,
            recorded_at: e
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            content_type: Cow::Borrowed(&e.content_type),
            metadata: Cow::Borrowed(e.metadata.as_map()),
            data,
            data_base64,
        }
    }

    /// The event this shows. A JSON payload comes back byte for byte as the server sent it.
    pub fn into_recorded(self) -> Result<RecordedEvent, EventError> {
        let data = match (self.data, self.data_base64) {
            (_, Some(b)) => B64
                .decode(b.as_bytes())
                .map_err(|source| EventError::DataBase64 { source })?,
            (Some(d), None) => Box::<str>::from(d).into_string().into_bytes(),
            (None, None) => Vec::new(),
        };
        let stream_id = StreamId::new(self.stream_id.into_owned())
            .map_err(|source| EventError::StreamId { source })?;
        let recorded_at = chrono::DateTime::parse_from_rfc3339(&self.recorded_at)
            .map_err(|source| EventError::RecordedAt {
                value: self.recorded_at.clone(),
                source,
            })?
            .with_timezone(&chrono::Utc);
        Ok(RecordedEvent {
            event_id: self.event_id,
            stream_id,
            stream_version: self.version,
            position: Position(self.position),
            recorded_at,
            event_type: self.event_type.into_owned(),
            content_type: self.content_type.into_owned(),
            data,
            metadata: Metadata::from_map(self.metadata.into_owned()),
        })
    }
}

/// Parses one event in the API's shape (an SSE `event` frame's data, say).
pub fn parse_event(json: &[u8]) -> Result<RecordedEvent, EventError> {
    serde_json::from_slice::<EventJson<'static>>(json)
        .map_err(|source| EventError::Json { source })?
        .into_recorded()
}

/// Why an event in the API's shape could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The text is not JSON of the event's shape (a field missing or of the wrong type).
    #[error("the event is not in the API's shape")]
    Json {
        /// What the JSON parser found.
        source: serde_json::Error,
    },
    /// `streamId` is not a valid stream id.
    #[error("the event's streamId is not a valid stream id")]
    StreamId {
        /// Why.
        source: InvalidInput,
    },
    /// `recordedAt` is not an RFC 3339 time.
    #[error("the event's recordedAt {value:?} is not an RFC 3339 time")]
    RecordedAt {
        /// The value given.
        value: String,
        /// What the time parser found.
        source: chrono::ParseError,
    },
    /// `dataBase64` is not base64.
    #[error("the event's dataBase64 is not base64")]
    DataBase64 {
        /// What the decoder found.
        source: base64::DecodeError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::CONTENT_TYPE_JSON;

    fn event(
        event_type: &str,
        content_type: &str,
        data: &[u8],
        metadata: Metadata,
    ) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::from_u128(7),
            stream_id: StreamId::new("order-7").unwrap(),
            stream_version: 3,
            position: Position(9),
            recorded_at: strata_core::timestamp_from_micros(1_700_000_000_123_456),
            event_type: event_type.to_owned(),
            content_type: content_type.to_owned(),
            data: data.to_vec(),
            metadata,
        }
    }

    #[test]
    fn every_payload_survives_the_round_trip() {
        let meta = Metadata::new().with_correlation_id("req-1");
        let cases = [
            event("Placed", CONTENT_TYPE_JSON, br#"{"z":1,"a":[2]}"#, meta),
            // Key order and spacing as appended, not as a JSON parser would rewrite them.
            event(
                "Raw",
                CONTENT_TYPE_JSON,
                br#"{ "z": 1,  "a": 2 }"#,
                Metadata::new(),
            ),
            event("Null", CONTENT_TYPE_JSON, b"null", Metadata::new()),
            event(
                "Blob",
                "application/octet-stream",
                &[0, 255, 10, 13],
                Metadata::new(),
            ),
            event("Empty", "application/octet-stream", b"", Metadata::new()),
        ];
        for e in cases {
            let text = serde_json::to_vec(&EventJson::new(&e)).unwrap();
            assert_eq!(
                parse_event(&text).unwrap(),
                e,
                "{}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    /// `e` as a JSON value to edit (a value rewrites payloads, so only for these tests).
    fn event_to_json(e: &RecordedEvent) -> Value {
        serde_json::to_value(EventJson::new(e)).unwrap()
    }

    #[test]
    fn bad_fields_are_typed_errors() {
        let e = event("Blob", "image/png", &[1, 2], Metadata::new());
        let mut v = event_to_json(&e);
        v["dataBase64"] = "%%".into();
        assert!(matches!(
            parse_event(v.to_string().as_bytes()),
            Err(EventError::DataBase64 { .. })
        ));
        let mut v = event_to_json(&e);
        v["recordedAt"] = "yesterday".into();
        assert!(matches!(
            parse_event(v.to_string().as_bytes()),
            Err(EventError::RecordedAt { value, .. }) if value == "yesterday"
        ));
        let mut v = event_to_json(&e);
        v["streamId"] = "".into();
        assert!(matches!(
            parse_event(v.to_string().as_bytes()),
            Err(EventError::StreamId { .. })
        ));
        let mut v = event_to_json(&e);
        v.as_object_mut().unwrap().remove("position");
        assert!(matches!(
            parse_event(v.to_string().as_bytes()),
            Err(EventError::Json { .. })
        ));
    }
}
