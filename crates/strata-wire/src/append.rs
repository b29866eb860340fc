//! The append request: the body a client sends ([`append_body`]), the body the server parses
//! ([`AppendBody`]) and the answer ([`Appended`]).

use std::borrow::Cow;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use strata_core::{EventData, ExpectedVersion, Metadata, Position, Uuid, CONTENT_TYPE_JSON};

use crate::B64;

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
                // The CLI's spellings (`no-stream`, `exists`) are accepted too.
                match ExpectedVersion::from_name(s) {
                    Some(e) => Ok(WireExpected(e)),
                    None => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<WireExpected, E> {
                Ok(WireExpected(ExpectedVersion::Exact(v)))
            }
        }
        d.deserialize_any(V)
    }
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

/// Why a request body was refused. [`BodyError::field`] names where (`events[2].eventType`),
/// [`BodyError::reason`] says what was wrong; nothing of a refused body is written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is not a JSON document of the expected shape.
    #[error("invalid {field}")]
    Json {
        /// Where: a path such as `events[2].eventType`, or `body`.
        field: String,
        /// What the JSON parser found.
        source: serde_json::Error,
    },
    /// Something other than whitespace follows the document (a second document would otherwise
    /// be dropped without a word).
    #[error("invalid body: more than one JSON document")]
    TrailingInput {
        /// What the JSON parser found after the document.
        source: serde_json::Error,
    },
    /// The body is JSON but not an object (`[]`, say).
    #[error("invalid body: not a JSON object")]
    NotAnObject {
        /// What the body must be, with an example, for the reason.
        shape: &'static str,
    },
    /// Something is wrong with one append of a batch: `source` says what, within it.
    #[error("invalid appends[{index}]: {source}")]
    InBatch {
        /// The append's place in `appends`.
        index: usize,
        /// What was wrong with it.
        source: Box<BodyError>,
    },
    /// An event gives both `data` and `dataBase64`.
    #[error("invalid events[{index}]: both data and dataBase64")]
    DataAndDataBase64 {
        /// The event's place in `events`.
        index: usize,
    },
    /// A JSON event gives its payload as `dataBase64`.
    #[error("invalid events[{index}].dataBase64: a JSON event takes data")]
    DataBase64ForJson {
        /// The event's place in `events`.
        index: usize,
    },
    /// A non-JSON event gives its payload as `data`.
    #[error("invalid events[{index}].data: a non-JSON event takes dataBase64")]
    DataForNonJson {
        /// The event's place in `events`.
        index: usize,
    },
    /// `dataBase64` is not base64.
    #[error("invalid events[{index}].dataBase64: not base64")]
    DataBase64 {
        /// The event's place in `events`.
        index: usize,
        /// What the decoder found.
        source: base64::DecodeError,
    },
}

impl BodyError {
    /// The field the error is about, as the problem document's `field` names it.
    pub fn field(&self) -> String {
        match self {
            BodyError::Json { field, .. } => field.clone(),
            BodyError::TrailingInput { .. } | BodyError::NotAnObject { .. } => "body".to_owned(),
            BodyError::InBatch { index, source } => format!("appends[{index}].{}", source.field()),
            BodyError::DataAndDataBase64 { index } => format!("events[{index}]"),
            BodyError::DataBase64ForJson { index } | BodyError::DataBase64 { index, .. } => {
                format!("events[{index}].dataBase64")
            }
            BodyError::DataForNonJson { index } => format!("events[{index}].data"),
        }
    }

    /// What is wrong with [`BodyError::field`], as a sentence for the problem document's
    /// `reason`.
    pub fn reason(&self) -> String {
        match self {
            BodyError::Json { source, .. } => source.to_string(),
            BodyError::TrailingInput { source } => format!(
                "must hold one JSON document and nothing after it but whitespace ({source}); nothing was written"
            ),
            BodyError::NotAnObject { shape } => {
                format!("the body must be {shape}; nothing was written")
            }
            BodyError::InBatch { source, .. } => source.reason(),
            BodyError::DataAndDataBase64 { .. } => "give data or dataBase64, not both".to_owned(),
            BodyError::DataBase64ForJson { .. } => {
                "a JSON event takes its payload as data; dataBase64 needs a non-JSON contentType"
                    .to_owned()
            }
            BodyError::DataForNonJson { .. } => {
                "a non-JSON content type takes its payload as dataBase64".to_owned()
            }
            BodyError::DataBase64 { source, .. } => source.to_string(),
        }
    }
}

/// Parses a request body as one JSON document of type `T`: errors name the field
/// (`events[2].eventType`), and anything but whitespace after the document is an error (a
/// second document after the first would otherwise be dropped without a word).
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
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
        BodyError::Json {
            field,
            source: e.into_inner(),
        }
    })?;
    de.end()
        .map_err(|source| BodyError::TrailingInput { source })?;
    Ok(body)
}

/// An append request body, as the server parses it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppendBody {
    /// The expected version; `any` when absent (`null` is refused: it would turn the
    /// concurrency check off without a word).
    #[serde(default, deserialize_with = "crate::present")]
    pub expected_version: Option<WireExpected>,
    /// The events, one or more.
    pub events: Vec<EventIn>,
}

impl AppendBody {
    /// Parses a body; errors name the field (`events[2].eventType`).
    pub fn parse(bytes: &[u8]) -> Result<Self, BodyError> {
        parse_object(
            bytes,
            "a JSON object with expectedVersion and events, such as \
             {\"expectedVersion\":\"no_stream\",\"events\":[{\"eventType\":\"AccountOpened\",\"data\":{}}]}",
        )
    }

    /// The events to append.
    pub fn into_events(self) -> Result<(ExpectedVersion, Vec<EventData>), BodyError> {
        let expected = self.expected_version.map_or(ExpectedVersion::Any, |e| e.0);
        Ok((expected, events_from_wire(self.events)?))
    }
}

/// Parses a body that must be a JSON object: serde would also read a struct from an array of
/// its fields in order, and an array is the most common wrong guess (a list of events), so
/// that is refused by name, saying the `shape` the body must have.
fn parse_object<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    shape: &'static str,
) -> Result<T, BodyError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b) if *b != b'{') && serde_json::from_slice::<Value>(bytes).is_ok() {
        return Err(BodyError::NotAnObject { shape });
    }
    parse_body(bytes)
}

/// The events of a request, checked: a payload as `data` or `dataBase64` as its content type
/// wants.
fn events_from_wire(events: Vec<EventIn>) -> Result<Vec<EventData>, BodyError> {
    let mut out = Vec::with_capacity(events.len());
    for (index, e) in events.into_iter().enumerate() {
        let content_type = e
            .content_type
            .unwrap_or_else(|| CONTENT_TYPE_JSON.to_owned());
        let data = match (content_type == CONTENT_TYPE_JSON, e.data, e.data_base64) {
            (_, Some(_), Some(_)) => return Err(BodyError::DataAndDataBase64 { index }),
            // The parsed text becomes the payload as it is, without a copy.
            (true, Some(d), None) => Box::<str>::from(d).into_string().into_bytes(),
            // A JSON event without data has the payload `null`.
            (true, None, None) => b"null".to_vec(),
            (true, None, Some(_)) => return Err(BodyError::DataBase64ForJson { index }),
            (false, Some(_), None) => return Err(BodyError::DataForNonJson { index }),
            (false, None, Some(b)) => B64
                .decode(b.as_bytes())
                .map_err(|source| BodyError::DataBase64 { index, source })?,
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
    Ok(out)
}

/// A batch append body, as the server parses it: several appends, each to its own stream with
/// its own expected version, each atomic on its own (the batch is not atomic as a whole).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchAppendBody {
    /// The appends, one or more, answered in this order.
    pub appends: Vec<BatchAppendIn>,
}

/// One append of a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchAppendIn {
    /// The stream.
    pub stream_id: String,
    /// The expected version; `any` when absent (`null` is refused, as in a single append).
    #[serde(default, deserialize_with = "crate::present")]
    pub expected_version: Option<WireExpected>,
    /// The events, one or more.
    pub events: Vec<EventIn>,
}

impl BatchAppendBody {
    /// Parses a body; errors name the field (`appends[1].events[2].eventType`).
    pub fn parse(bytes: &[u8]) -> Result<Self, BodyError> {
        parse_object(
            bytes,
            "a JSON object with appends, such as {\"appends\":[{\"streamId\":\"account-1\",\
             \"expectedVersion\":\"any\",\"events\":[{\"eventType\":\"MoneyDeposited\",\"data\":{}}]}]}",
        )
    }
}

impl BatchAppendIn {
    /// The events to append; `index` is this append's place in the batch, for errors.
    pub fn into_events(self, index: usize) -> Result<(ExpectedVersion, Vec<EventData>), BodyError> {
        let expected = self.expected_version.map_or(ExpectedVersion::Any, |e| e.0);
        let events = events_from_wire(self.events).map_err(|e| BodyError::InBatch {
            index,
            source: Box::new(e),
        })?;
        Ok((expected, events))
    }
}

/// The batch append request body for `appends` (stream, expected version, events), as a
/// client sends it: each append written as [`append_body`] writes a single one.
pub fn batch_append_body(appends: &[(&str, ExpectedVersion, &[EventData])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"appends\":[");
    for (i, (stream, expected, events)) in appends.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"streamId\":");
        out.extend_from_slice(Value::String((*stream).to_owned()).to_string().as_bytes());
        out.push(b',');
        // A single append's body without its opening brace.
        out.extend_from_slice(&append_body(*expected, events)[1..]);
    }
    out.extend_from_slice(b"]}");
    out
}

/// One answer of a batch append, in the order of the request's appends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchResult<'a> {
    /// This append failed and wrote nothing; the others are answered on their own.
    Failed {
        /// The stream.
        #[serde(rename = "streamId")]
        stream_id: Cow<'a, str>,
        /// Why: a problem document, as a single append's failure would answer (its `status`
        /// is the status that answer would have had).
        error: Value,
    },
    /// This append is durable (or was an idempotent retry).
    Appended(Appended<'a>),
}

/// The answer to a batch append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAppended<'a> {
    /// One per append, in the request's order.
    pub results: Vec<BatchResult<'a>>,
}

/// The append request body for `events`, as a client sends it. JSON payloads are written as
/// they are (the server checks them); other payloads as base64.
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

/// The answer to an append. The fields are in the order a `serde_json::Value` object would
/// put them (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Appended<'a> {
    /// The global position of each event appended.
    pub positions: Cow<'a, [Position]>,
    /// The stream.
    pub stream_id: Cow<'a, str>,
    /// The stream's version after the append (that of its last event).
    pub version: u64,
    /// Whether this was an idempotent retry: every event was stored already under its id,
    /// nothing was written, and this is the original append's answer. Absent from the answers
    /// of servers that predate it: read as `false`.
    #[serde(default)]
    pub replayed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_no_object_says_what_it_must_be() {
        for body in [
            "[]",
            " [{\"eventType\":\"X\"}]",
            "[\"any\", []]",
            "1",
            "\"x\"",
        ] {
            let e = AppendBody::parse(body.as_bytes()).unwrap_err();
            assert!(matches!(e, BodyError::NotAnObject { .. }), "{body}: {e:?}");
            assert_eq!(e.field(), "body");
            assert!(e
                .reason()
                .contains("JSON object with expectedVersion and events"));
        }
        // Broken JSON still says where it broke.
        let e = AppendBody::parse(b"[1,").unwrap_err();
        assert!(matches!(e, BodyError::Json { .. }), "{e:?}");
    }

    #[test]
    fn both_spellings_of_the_expected_version_are_accepted() {
        for (spelling, expected) in [
            ("no_stream", ExpectedVersion::NoStream),
            ("no-stream", ExpectedVersion::NoStream),
            ("stream_exists", ExpectedVersion::StreamExists),
            ("exists", ExpectedVersion::StreamExists),
            ("any", ExpectedVersion::Any),
        ] {
            let body = format!("{{\"expectedVersion\":\"{spelling}\",\"events\":[]}}");
            let parsed = AppendBody::parse(body.as_bytes()).unwrap();
            assert_eq!(
                parsed.expected_version,
                Some(WireExpected(expected)),
                "{spelling}"
            );
        }
        assert!(AppendBody::parse(br#"{"expectedVersion":"nostream","events":[]}"#).is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let e = AppendBody::parse(br#"{"events":[{"eventType":1,"data":{}}]}"#).unwrap_err();
        assert_eq!(e.field(), "events[0].eventType");
        let e = AppendBody::parse(br#"{"events":[],"x":1}"#).unwrap_err();
        assert!(e.reason().contains("unknown field"), "{}", e.reason());
        let e = AppendBody::parse(br#"{"expectedVersion":-1,"events":[]}"#).unwrap_err();
        assert_eq!(e.field(), "expectedVersion");
        let e = AppendBody::parse(br#"{"events":[]} {"events":[]}"#).unwrap_err();
        assert!(matches!(e, BodyError::TrailingInput { .. }), "{e:?}");
        let b = AppendBody::parse(
            br#"{"expectedVersion":"no_stream","events":[{"eventType":"A","data":{"z":1,"a":2}}]}"#,
        )
        .unwrap();
        let (exp, evs) = b.into_events().unwrap();
        assert_eq!(exp, ExpectedVersion::NoStream);
        assert_eq!(evs[0].data, br#"{"z":1,"a":2}"#);
    }

    #[test]
    fn payload_rules_are_typed() {
        let events = |body: &str| AppendBody::parse(body.as_bytes()).unwrap().into_events();
        assert!(matches!(
            events(
                r#"{"events":[{"eventType":"A"},{"eventType":"B","data":1,"dataBase64":"AA=="}]}"#
            ),
            Err(BodyError::DataAndDataBase64 { index: 1 })
        ));
        assert!(matches!(
            events(r#"{"events":[{"eventType":"A","dataBase64":"AA=="}]}"#),
            Err(BodyError::DataBase64ForJson { index: 0 })
        ));
        assert!(matches!(
            events(r#"{"events":[{"eventType":"A","contentType":"image/png","data":1}]}"#),
            Err(BodyError::DataForNonJson { index: 0 })
        ));
        let e =
            events(r#"{"events":[{"eventType":"A","contentType":"image/png","dataBase64":"*"}]}"#)
                .unwrap_err();
        assert_eq!(e.field(), "events[0].dataBase64");
        assert!(matches!(e, BodyError::DataBase64 { index: 0, .. }));
    }

    /// A batch body a client writes parses back to its appends; an error inside one append
    /// names it (`appends[1].events[0].dataBase64`); a list is refused with the right shape.
    #[test]
    fn a_batch_body_round_trips_and_its_errors_name_the_append() {
        let a = [EventData::json("Opened", &json!({ "n": 1 })).unwrap()];
        let b = [
            EventData::binary("Blob", "image/png", vec![1, 2, 3]).with_id(Uuid::from_u128(7)),
            EventData::json("Closed", &json!(null)).unwrap(),
        ];
        let body = batch_append_body(&[
            ("account-1", ExpectedVersion::NoStream, &a),
            ("account-\"2", ExpectedVersion::Exact(4), &b),
        ]);
        let parsed = BatchAppendBody::parse(&body).unwrap();
        assert_eq!(parsed.appends.len(), 2);
        let mut appends = parsed.appends.into_iter().enumerate();
        let (i, first) = appends.next().unwrap();
        assert_eq!(first.stream_id, "account-1");
        assert_eq!(
            first.into_events(i).unwrap(),
            (ExpectedVersion::NoStream, a.to_vec())
        );
        let (i, second) = appends.next().unwrap();
        assert_eq!(second.stream_id, "account-\"2");
        assert_eq!(
            second.into_events(i).unwrap(),
            (ExpectedVersion::Exact(4), b.to_vec())
        );

        let bad = br#"{"appends":[{"streamId":"a","events":[]},{"streamId":"b","events":[{"eventType":"A","dataBase64":"AA=="}]}]}"#;
        let mut appends = BatchAppendBody::parse(bad)
            .unwrap()
            .appends
            .into_iter()
            .enumerate();
        let (i, ok) = appends.next().unwrap();
        assert!(ok.into_events(i).is_ok());
        let (i, wrong) = appends.next().unwrap();
        let e = wrong.into_events(i).unwrap_err();
        assert_eq!(e.field(), "appends[1].events[0].dataBase64");
        assert!(
            e.reason().contains("JSON event takes its payload as data"),
            "{}",
            e.reason()
        );

        let e =
            BatchAppendBody::parse(br#"{"appends":[{"streamId":"a","events":[{"eventType":7}]}]}"#)
                .unwrap_err();
        assert_eq!(e.field(), "appends[0].events[0].eventType");
        let e = BatchAppendBody::parse(br#"[{"streamId":"a","events":[]}]"#).unwrap_err();
        assert!(matches!(e, BodyError::NotAnObject { .. }), "{e:?}");
        assert!(e.reason().contains("\"appends\""), "{}", e.reason());
    }

    /// Failures and successes of a batch read back as what they were.
    #[test]
    fn batch_results_read_back_by_shape() {
        let answer = BatchAppended {
            results: vec![
                BatchResult::Appended(Appended {
                    positions: Cow::Owned(vec![Position(3)]),
                    stream_id: Cow::Borrowed("a"),
                    version: 0,
                    replayed: false,
                }),
                BatchResult::Failed {
                    stream_id: Cow::Borrowed("b"),
                    error: json!({ "code": "wrong_expected_version", "status": 409 }),
                },
            ],
        };
        let text = serde_json::to_string(&answer).unwrap();
        let back: BatchAppended<'static> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, answer);
    }

    /// What a client sends is what the server reads: every expected version, JSON and binary
    /// payloads, ids and metadata.
    #[test]
    fn the_client_body_parses_back_to_the_same_events() {
        let events = vec![
            EventData::json("Opened", &json!({ "z": 1, "a": "x\"y" }))
                .unwrap()
                .with_id(Uuid::from_u128(5))
                .with_metadata(Metadata::new().with_correlation_id("c-1")),
            EventData::binary("Blob", "application/octet-stream", vec![0, 1, 254, 255]),
            EventData::binary("Empty", "text/plain", Vec::new()),
        ];
        for expected in [
            ExpectedVersion::Any,
            ExpectedVersion::NoStream,
            ExpectedVersion::StreamExists,
            ExpectedVersion::Exact(u64::MAX),
        ] {
            let body = append_body(expected, &events);
            let (back_expected, back) = AppendBody::parse(&body).unwrap().into_events().unwrap();
            assert_eq!(back_expected, expected);
            assert_eq!(back, events);
        }
    }

    #[test]
    fn the_answer_reads_back() {
        let positions = [Position(3), Position(4)];
        let a = Appended {
            positions: Cow::Borrowed(&positions),
            stream_id: Cow::Borrowed("s-1"),
            version: 1,
            replayed: true,
        };
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(
            text,
            r#"{"positions":[3,4],"streamId":"s-1","version":1,"replayed":true}"#
        );
        assert_eq!(serde_json::from_str::<Appended<'static>>(&text).unwrap(), a);
        // An answer from a server that predates the field was no replay as far as it says.
        let old: Appended<'static> =
            serde_json::from_str(r#"{"positions":[3,4],"streamId":"s-1","version":1}"#).unwrap();
        assert!(!old.replayed);
    }
}
