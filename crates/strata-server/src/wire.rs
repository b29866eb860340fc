//! The JSON shapes of the API, shared by the server and [`crate::client`].

use base64::Engine;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use strata_core::{
    EventData, ExpectedVersion, Metadata, Position, RecordedEvent, StreamId, Uuid,
    CONTENT_TYPE_JSON,
};

use crate::error::ApiError;

/// Standard base64; decoding also takes unpadded input and non-zero trailing bits.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// An event as the API returns it: the mission's field names; `data` for JSON payloads (byte
/// for byte as appended), `dataBase64` for any other content type.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventOut<'a> {
    event_id: Uuid,
    stream_id: &'a str,
    category: &'a str,
    event_type: &'a str,
    version: u64,
    position: u64,
    recorded_at: String,
    content_type: &'a str,
    metadata: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

impl<'a> EventOut<'a> {
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
        EventOut {
            event_id: e.event_id,
            stream_id: e.stream_id.as_str(),
            category: e.category(),
            event_type: &e.event_type,
            version: e.stream_version,
            position: e.position.0,
            recorded_at: e
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            content_type: &e.content_type,
            metadata: e.metadata.as_map(),
            data,
            data_base64,
        }
    }
}

/// [`EventOut`] as a JSON value.
pub fn event_to_json(e: &RecordedEvent) -> Value {
    serde_json::to_value(EventOut::new(e)).unwrap_or(Value::Null)
}

/// The inverse of [`event_to_json`], for clients.
pub fn event_from_json(v: &Value) -> Result<RecordedEvent, String> {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("event without {k}"))
    };
    let n = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("event without {k}"))
    };
    let content_type = s("contentType")?.to_owned();
    let data = match (v.get("data"), v.get("dataBase64").and_then(Value::as_str)) {
        (_, Some(b)) => B64.decode(b).map_err(|e| format!("dataBase64: {e}"))?,
        (Some(d), None) => serde_json::to_vec(d).map_err(|e| e.to_string())?,
        (None, None) => Vec::new(),
    };
    let metadata = match v.get("metadata") {
        Some(Value::Object(m)) => Metadata::from_map(m.clone()),
        _ => Metadata::new(),
    };
    Ok(RecordedEvent {
        event_id: s("eventId")?.parse().map_err(|e| format!("eventId: {e}"))?,
        stream_id: StreamId::new(s("streamId")?).map_err(|e| e.to_string())?,
        stream_version: n("version")?,
        position: Position(n("position")?),
        recorded_at: chrono::DateTime::parse_from_rfc3339(s("recordedAt")?)
            .map_err(|e| format!("recordedAt: {e}"))?
            .with_timezone(&chrono::Utc),
        event_type: s("eventType")?.to_owned(),
        content_type,
        data,
        metadata,
    })
}

/// The expected version as the API spells it: `"any"`, `"no_stream"`, `"stream_exists"` or
/// a version number.
pub fn expected_to_json(e: ExpectedVersion) -> Value {
    match e {
        ExpectedVersion::Any => json!("any"),
        ExpectedVersion::NoStream => json!("no_stream"),
        ExpectedVersion::StreamExists => json!("stream_exists"),
        ExpectedVersion::Exact(v) => json!(v),
    }
}

/// An expected version in a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireExpected(pub ExpectedVersion);

impl<'de> Deserialize<'de> for WireExpected {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = WireExpected;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"any\", \"no_stream\", \"stream_exists\" or a version number")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<WireExpected, E> {
                Ok(WireExpected(match s {
                    "any" => ExpectedVersion::Any,
                    "no_stream" => ExpectedVersion::NoStream,
                    "stream_exists" => ExpectedVersion::StreamExists,
                    _ => return Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<WireExpected, E> {
                Ok(WireExpected(ExpectedVersion::Exact(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A field that may be absent (then `None`, by `#[serde(default)]`) but not `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// One event in an append request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventIn {
    /// The client's id, for idempotent retries.
    #[serde(default)]
    pub event_id: Option<Uuid>,
    /// The event type.
    pub event_type: String,
    /// The content type; JSON when absent.
    #[serde(default)]
    pub content_type: Option<String>,
    /// A JSON payload (kept byte for byte).
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
    /// Any other payload, base64.
    #[serde(default)]
    pub data_base64: Option<String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

/// Parses a request body as one JSON document of type `T`: errors name the field
/// (`events[2].eventType`), and anything but whitespace after the document is an error (a
/// second document after the first would otherwise be dropped without a word).
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Most bodies are valid: parse them directly (serde_json::from_slice also refuses
    // trailing input), and only track the path (which costs on every field) to explain an
    // error.
    if let Ok(body) = serde_json::from_slice::<T>(bytes) {
        return Ok(body);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let body: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path == "?" || path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        ApiError::invalid(field, e.into_inner().to_string())
    })?;
    de.end().map_err(|e| {
        ApiError::invalid(
            "body",
            format!("must hold one JSON document and nothing after it but whitespace ({e}); nothing was written"),
        )
    })?;
    Ok(body)
}

/// An append request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppendBody {
    /// The expected version; `any` when absent (`null` is refused: it would turn the
    /// concurrency check off without a word).
    #[serde(default, deserialize_with = "present")]
    pub expected_version: Option<WireExpected>,
    /// The events, one or more.
    pub events: Vec<EventIn>,
}

impl AppendBody {
    /// Parses a body; errors name the field (`events[2].eventType`).
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        parse_body(bytes)
    }

    /// The events to append.
    pub fn into_events(self) -> Result<(ExpectedVersion, Vec<EventData>), ApiError> {
        let expected = self.expected_version.map_or(ExpectedVersion::Any, |e| e.0);
        let mut out = Vec::with_capacity(self.events.len());
        for (i, e) in self.events.into_iter().enumerate() {
            let content_type = e
                .content_type
                .unwrap_or_else(|| CONTENT_TYPE_JSON.to_owned());
            let data = match (content_type == CONTENT_TYPE_JSON, e.data, e.data_base64) {
                (_, Some(_), Some(_)) => {
                    return Err(ApiError::invalid(
                        format!("events[{i}]"),
                        "give data or dataBase64, not both",
                    ))
                }
                // The parsed text becomes the payload as it is, without a copy.
                (true, Some(d), None) => Box::<str>::from(d).into_string().into_bytes(),
                // A JSON event without data has the payload `null`.
                (true, None, None) => b"null".to_vec(),
                (true, None, Some(_)) => {
                    return Err(ApiError::invalid(
                        format!("events[{i}].dataBase64"),
                        "a JSON event takes its payload as data; dataBase64 needs a non-JSON contentType",
                    ))
                }
                (false, Some(_), None) => {
                    return Err(ApiError::invalid(
                        format!("events[{i}].data"),
                        "a non-JSON content type takes its payload as dataBase64",
                    ))
                }
                (false, None, Some(b)) => B64.decode(b.as_bytes()).map_err(|err| {
                    ApiError::invalid(format!("events[{i}].dataBase64"), err.to_string())
                })?,
                (false, None, None) => Vec::new(),
            };
            out.push(EventData {
                event_id: e.event_id,
                event_type: e.event_type,
                content_type,
                data,
                metadata: e.metadata.map(Metadata::from_map).unwrap_or_default(),
            });
        }
        Ok((expected, out))
    }
}

/// An append request body for `events` (used by clients). JSON payloads are written as they
/// are (the server checks them); other payloads as base64.
pub fn append_body(expected: ExpectedVersion, events: &[EventData]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + events.iter().map(|e| e.data.len() + 96).sum::<usize>());
    out.extend_from_slice(b"{\"expectedVersion\":");
    out.extend_from_slice(expected_to_json(expected).to_string().as_bytes());
    out.extend_from_slice(b",\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"eventType\":");
        out.extend_from_slice(Value::String(e.event_type.clone()).to_string().as_bytes());
        out.extend_from_slice(b",\"contentType\":");
        out.extend_from_slice(Value::String(e.content_type.clone()).to_string().as_bytes());
        if let Some(id) = e.event_id {
            out.extend_from_slice(format!(",\"eventId\":\"{id}\"").as_bytes());
        }
        if !e.metadata.is_empty() {
            out.extend_from_slice(b",\"metadata\":");
            out.extend_from_slice(&e.metadata.to_bytes());
        }
        let raw_json = e.content_type == CONTENT_TYPE_JSON
            && !e.data.is_empty()
            && std::str::from_utf8(&e.data).is_ok();
        if raw_json {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(&e.data);
        } else {
            out.extend_from_slice(b",\"dataBase64\":\"");
            out.extend_from_slice(B64.encode(&e.data).as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let e = AppendBody::parse(br#"{"events":[{"eventType":1,"data":{}}]}"#).unwrap_err();
        assert_eq!(e.extra["field"], "events[0].eventType");
        let e = AppendBody::parse(br#"{"events":[],"x":1}"#).unwrap_err();
        assert!(e.detail.contains("unknown field"), "{}", e.detail);
        let e = AppendBody::parse(br#"{"expectedVersion":-1,"events":[]}"#).unwrap_err();
        assert_eq!(e.extra["field"], "expectedVersion");
        let b = AppendBody::parse(
            br#"{"expectedVersion":"no_stream","events":[{"eventType":"A","data":{"z":1,"a":2}}]}"#,
        )
        .unwrap();
        let (exp, evs) = b.into_events().unwrap();
        assert_eq!(exp, ExpectedVersion::NoStream);
        assert_eq!(evs[0].data, br#"{"z":1,"a":2}"#);
    }
}
