//! Upcasting: old event payloads are brought to their newest schema on every read.
//!
//! ## Where the schema version lives
//!
//! An event's payload schema version is stored in its **metadata under the key
//! [`SCHEMA_VERSION_KEY`] (`"schemaVersion"`)**, as a positive integer. An event without the
//! key is at **version 1**, so events written before an event type ever changed, or by tools
//! that know nothing about schemas, need no rewriting. Strata writes the key only when the
//! version is above 1.
//!
//! The newest version of an event type is one more than the highest version an upcaster is
//! registered from (1 when it has none). Upcasters are chained: an event stored at v1 of a type
//! whose newest version is v3 goes through the v1→v2 and then the v2→v3 upcaster.
//!
//! ```
//! use serde_json::{json, Value};
//! use strata::Upcasters;
//!
//! // The mission's example: `UserCreated { name }` became `{ firstName, lastName }`.
//! let upcasters = Upcasters::new().register("UserCreated", 1, |mut v: Value| {
//!     let name = v["name"].take();
//!     let name = name.as_str().ok_or("UserCreated v1 has no string `name`")?;
//!     let (first, last) = name.split_once(' ').unwrap_or((name, ""));
//!     Ok::<_, &str>(json!({ "firstName": first, "lastName": last }))
//! });
//! assert_eq!(upcasters.current_version("UserCreated"), 2);
//! let v2 = upcasters.upcast("UserCreated", 1, json!({"name": "John Doe"})).unwrap();
//! assert_eq!(v2, json!({"firstName": "John", "lastName": "Doe"}));
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use strata_core::{
    EventData, Metadata, Position, RecordedEvent, StreamId, Timestamp, CONTENT_TYPE_JSON,
};
use uuid::Uuid;

use crate::codec::{DomainEvent, EncodeError};

/// The metadata key holding an event's payload schema version. Absent means 1.
pub const SCHEMA_VERSION_KEY: &str = "schemaVersion";

type UpcastFn = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// Upcasters by event type and the schema version they upgrade from.
///
/// Each registered function takes a payload at version `from` and returns it at `from + 1`.
/// Cloning is cheap (the functions are shared).
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<String, BTreeMap<u32, UpcastFn>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (event_type, steps) in &self.steps {
            m.entry(event_type, &steps.keys().collect::<Vec<_>>());
        }
        m.finish()
    }
}

/// Why a payload could not be brought to its newest schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpcastError {
    /// The stored version is newer than any this code knows (written by newer code).
    #[error("schema version {stored} is newer than the newest known version {latest}")]
    TooNew {
        /// The stored version.
        stored: u32,
        /// The newest version this code knows.
        latest: u32,
    },
    /// The chain has a hole: no upcaster from this version.
    #[error("no upcaster from schema version {from} (the newest version is {latest})")]
    MissingStep {
        /// The version with no upcaster.
        from: u32,
        /// The newest version.
        latest: u32,
    },
    /// An upcaster refused the payload.
    #[error("the upcaster from schema version {from} failed: {reason}")]
    Failed {
        /// The version the failing upcaster upgrades from.
        from: u32,
        /// What it said.
        reason: String,
    },
}

impl Upcasters {
    /// No upcasters: every event type is at version 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the upcaster of `event_type` from `from_version` to `from_version + 1`,
    /// replacing one registered earlier for the same step. Versions start at 1; registering
    /// from 0 has no effect on the chain because no event is stored at version 0.
    pub fn register<F, E>(mut self, event_type: impl Into<String>, from_version: u32, f: F) -> Self
    where
        F: Fn(Value) -> Result<Value, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        self.add(event_type, from_version, f);
        self
    }

    /// [`Upcasters::register`] through a mutable reference.
    pub fn add<F, E>(&mut self, event_type: impl Into<String>, from_version: u32, f: F)
    where
        F: Fn(Value) -> Result<Value, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        let f: UpcastFn = Arc::new(move |v| f(v).map_err(|e| e.to_string()));
        self.steps
            .entry(event_type.into())
            .or_default()
            .insert(from_version, f);
    }

    /// Adds every upcaster of `other` (replacing steps registered in both).
    pub fn merge(mut self, other: Upcasters) -> Self {
        for (event_type, steps) in other.steps {
            self.steps.entry(event_type).or_default().extend(steps);
        }
        self
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The event types that have upcasters.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.steps.keys().map(String::as_str)
    }

    /// The newest schema version of `event_type`: one more than the highest version an
    /// upcaster upgrades from, or 1. New events of this type are written at this version.
    pub fn current_version(&self, event_type: &str) -> u32 {
        self.steps
            .get(event_type)
            .and_then(|s| s.keys().next_back())
            .map_or(1, |from| from.saturating_add(1).max(1))
    }

    /// Brings `data`, stored at `schema_version`, to the newest version of `event_type`.
    pub fn upcast(
        &self,
        event_type: &str,
        schema_version: u32,
        mut data: Value,
    ) -> Result<Value, UpcastError> {
        let latest = self.current_version(event_type);
        if schema_version > latest {
            return Err(UpcastError::TooNew {
                stored: schema_version,
                latest,
            });
        }
        let Some(steps) = self.steps.get(event_type) else {
            return Ok(data);
        };
        // The chain strictly increases the version, so it ends after at most `latest` steps.
        for from in schema_version..latest {
            let step = steps
                .get(&from)
                .ok_or(UpcastError::MissingStep { from, latest })?;
            data = step(data).map_err(|reason| UpcastError::Failed { from, reason })?;
        }
        Ok(data)
    }

    /// A copy of a raw event with its payload at the newest schema version and its metadata's
    /// `schemaVersion` updated. For raw reads and projections that work on JSON rather than
    /// typed events. Events that are not JSON are returned unchanged.
    pub fn upcast_recorded(&self, event: &RecordedEvent) -> Result<RecordedEvent, DecodeError> {
        let mut out = event.clone();
        if !event.is_json() {
            return Ok(out);
        }
        let stored = schema_version_of(&event.metadata).map_err(|reason| {
            DecodeError::new(event, 0, DecodeErrorKind::InvalidSchemaVersion(reason))
        })?;
        let latest = self.current_version(&event.event_type);
        if stored == latest {
            return Ok(out);
        }
        let value: Value = serde_json::from_slice(&event.data).map_err(|e| {
            DecodeError::new(event, stored, DecodeErrorKind::Payload(e.to_string()))
        })?;
        let value = self
            .upcast(&event.event_type, stored, value)
            .map_err(|e| DecodeError::new(event, stored, DecodeErrorKind::Upcast(e)))?;
        out.data = serde_json::to_vec(&value).map_err(|e| {
            DecodeError::new(event, stored, DecodeErrorKind::Payload(e.to_string()))
        })?;
        out.metadata = with_schema_version(std::mem::take(&mut out.metadata), latest);
        Ok(out)
    }
}

/// The schema version recorded in `metadata` (absent: 1). An error says what is wrong with a
/// value that is present but not a positive 32-bit integer.
pub fn schema_version_of(metadata: &Metadata) -> Result<u32, String> {
    match metadata.get(SCHEMA_VERSION_KEY) {
        None => Ok(1),
        Some(Value::Number(n)) => match n.as_u64().map(u32::try_from) {
            Some(Ok(v)) if v >= 1 => Ok(v),
            _ => Err(format!(
                "`{SCHEMA_VERSION_KEY}` is {n}; expected an integer from 1"
            )),
        },
        Some(other) => Err(format!(
            "`{SCHEMA_VERSION_KEY}` is {other}; expected an integer from 1"
        )),
    }
}

/// `metadata` with its schema version set to `version` (the key is removed for version 1).
pub fn with_schema_version(metadata: Metadata, version: u32) -> Metadata {
    let mut map = metadata.as_map().clone();
    if version <= 1 {
        map.remove(SCHEMA_VERSION_KEY);
    } else {
        map.insert(SCHEMA_VERSION_KEY.to_owned(), Value::from(version));
    }
    Metadata::from_map(map)
}

/// A stored event that could not be turned into a domain event. Names the stream, the version
/// in it, the event type and the schema version, so the bad event can be found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "cannot decode event {stream}@{version} (position {position}, type \"{event_type}\", \
     schema version {schema_version}): {kind}"
)]
pub struct DecodeError {
    /// The event's stream.
    pub stream: StreamId,
    /// The event's version in its stream.
    pub version: u64,
    /// The event's global position.
    pub position: Position,
    /// The stored event type.
    pub event_type: String,
    /// The stored schema version (0 when the stored value itself is invalid).
    pub schema_version: u32,
    /// What went wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    fn new(event: &RecordedEvent, schema_version: u32, kind: DecodeErrorKind) -> Self {
        DecodeError {
            stream: event.stream_id.clone(),
            version: event.stream_version,
            position: event.position,
            event_type: event.event_type.clone(),
            schema_version,
            kind,
        }
    }
}

/// What went wrong while decoding a stored event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// No decoder knows this event type.
    #[error("unknown event type")]
    UnknownEventType,
    /// The metadata's schema version is not a positive integer.
    #[error("invalid schema version: {0}")]
    InvalidSchemaVersion(String),
    /// The payload could not be brought to the newest schema.
    #[error(transparent)]
    Upcast(#[from] UpcastError),
    /// The payload is not JSON.
    #[error("the payload is {content_type}, not JSON")]
    NotJson {
        /// The stored content type.
        content_type: String,
    },
    /// The payload does not match the event's newest schema.
    #[error("the payload does not match the event's schema: {0}")]
    Payload(String),
}

/// A decoded event with where and when it was recorded. What projections and history views
/// work with.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope<E> {
    /// The event, at its newest schema.
    pub event: E,
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: StreamId,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its global position.
    pub position: Position,
    /// When it was recorded.
    pub recorded_at: Timestamp,
    /// The stored event type.
    pub event_type: String,
    /// The metadata (correlation id, causation id, user id, schema version as stored, ...).
    pub metadata: Metadata,
}

/// Turns stored events into domain events of type `E` and back, running `E`'s upcasters on the
/// way in. Every read path of the toolkit goes through one; projections and raw readers can
/// build their own.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use strata::{DomainEvent, EventCodec};
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// enum Ev { Pinged { n: u32 } }
/// impl DomainEvent for Ev {}
/// let codec = EventCodec::<Ev>::new();
/// let data = codec.encode(&Ev::Pinged { n: 1 }).unwrap();
/// assert_eq!(data.event_type, "Pinged");
/// ```
pub struct EventCodec<E> {
    upcasters: Arc<Upcasters>,
    known_types: HashSet<&'static str>,
    _events: PhantomData<fn() -> E>,
}

impl<E> Clone for EventCodec<E> {
    fn clone(&self) -> Self {
        EventCodec {
            upcasters: Arc::clone(&self.upcasters),
            known_types: self.known_types.clone(),
            _events: PhantomData,
        }
    }
}

impl<E> fmt::Debug for EventCodec<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventCodec")
            .field("upcasters", &self.upcasters)
            .field("known_types", &self.known_types)
            .finish()
    }
}

impl<E: DomainEvent + Serialize + DeserializeOwned> Default for EventCodec<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: DomainEvent + Serialize + DeserializeOwned> EventCodec<E> {
    /// A codec with `E`'s own upcasters ([`DomainEvent::upcasters`]).
    pub fn new() -> Self {
        Self::with_upcasters(E::upcasters())
    }

    /// A codec with these upcasters instead of `E`'s own.
    pub fn with_upcasters(upcasters: Upcasters) -> Self {
        EventCodec {
            upcasters: Arc::new(upcasters),
            known_types: E::event_types().into_iter().collect(),
            _events: PhantomData,
        }
    }

    /// The upcasters this codec runs.
    pub fn upcasters(&self) -> &Upcasters {
        &self.upcasters
    }

    /// Encodes `event` for appending: its type, its payload, and its schema version in the
    /// metadata when above 1. The caller adds the rest of the metadata.
    pub fn encode(&self, event: &E) -> Result<EventData, EncodeError> {
        self.encode_with(event, Metadata::new())
    }

    /// Encodes `event` with `metadata`; the schema version key is set (or removed, for
    /// version 1) whatever `metadata` held.
    pub fn encode_with(&self, event: &E, metadata: Metadata) -> Result<EventData, EncodeError> {
        let encoded = event.encode()?;
        let version = self.upcasters.current_version(encoded.event_type);
        let data = EventData::json(encoded.event_type, &encoded.data).map_err(|e| {
            EncodeError::Serialize {
                event_type: encoded.event_type.to_owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(data.with_metadata(with_schema_version(metadata, version)))
    }

    /// Whether `event_type` is one this family decodes (true for every type when the family
    /// cannot list its types).
    pub fn knows(&self, event_type: &str) -> bool {
        self.known_types.is_empty() || self.known_types.contains(event_type)
    }

    /// Decodes a stored event, upcasting it first when it is at an older schema.
    pub fn decode(&self, event: &RecordedEvent) -> Result<E, DecodeError> {
        if event.content_type != CONTENT_TYPE_JSON {
            return Err(DecodeError::new(
                event,
                0,
                DecodeErrorKind::NotJson {
                    content_type: event.content_type.clone(),
                },
            ));
        }
        let stored = schema_version_of(&event.metadata).map_err(|reason| {
            DecodeError::new(event, 0, DecodeErrorKind::InvalidSchemaVersion(reason))
        })?;
        let event_type = event.event_type.as_str();
        if !self.known_types.is_empty() && !self.known_types.contains(event_type) {
            return Err(DecodeError::new(
                event,
                stored,
                DecodeErrorKind::UnknownEventType,
            ));
        }
        let latest = self.upcasters.current_version(event_type);
        let result = if stored == latest {
            E::decode_json(event_type, &event.data)
        } else {
            let value: Value = serde_json::from_slice(&event.data).map_err(|e| {
                DecodeError::new(event, stored, DecodeErrorKind::Payload(e.to_string()))
            })?;
            let value = self
                .upcasters
                .upcast(event_type, stored, value)
                .map_err(|e| DecodeError::new(event, stored, DecodeErrorKind::Upcast(e)))?;
            E::decode_value(event_type, value)
        };
        result.map_err(|e| {
            let message = e.to_string();
            let kind = if self.known_types.is_empty() && message.starts_with("unknown variant") {
                DecodeErrorKind::UnknownEventType
            } else {
                DecodeErrorKind::Payload(message)
            };
            DecodeError::new(event, stored, kind)
        })
    }

    /// Decodes a stored event and keeps where and when it was recorded.
    pub fn decode_envelope(&self, event: RecordedEvent) -> Result<EventEnvelope<E>, DecodeError> {
        let decoded = self.decode(&event)?;
        Ok(EventEnvelope {
            event: decoded,
            event_id: event.event_id,
            stream_id: event.stream_id,
            stream_version: event.stream_version,
            position: event.position,
            recorded_at: event.recorded_at,
            event_type: event.event_type,
            metadata: event.metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    fn chain() -> Upcasters {
        Upcasters::new()
            .register("UserCreated", 1, |mut v: Value| {
                let name = v["name"].take();
                let name = name.as_str().ok_or("no name")?.to_owned();
                let (first, last) = name.split_once(' ').unwrap_or((name.as_str(), ""));
                Ok::<_, &str>(json!({"firstName": first, "lastName": last}))
            })
            .register("UserCreated", 2, |mut v: Value| {
                v["email"] = Value::Null;
                Ok::<_, &str>(v)
            })
    }

    fn recorded(event_type: &str, data: Value, metadata: Metadata) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::now_v7(),
            stream_id: StreamId::new("user-1").unwrap(),
            stream_version: 4,
            position: Position(40),
            recorded_at: chrono::Utc::now(),
            event_type: event_type.to_owned(),
            content_type: CONTENT_TYPE_JSON.to_owned(),
            data: serde_json::to_vec(&data).unwrap(),
            metadata,
        }
    }

    #[test]
    fn upcasters_chain_from_any_old_version_to_the_newest() {
        let u = chain();
        assert_eq!(u.current_version("UserCreated"), 3);
        assert_eq!(u.current_version("Other"), 1);
        let from_v1 = u
            .upcast("UserCreated", 1, json!({"name": "John Ronald Doe"}))
            .unwrap();
        assert_eq!(
            from_v1,
            json!({"firstName": "John", "lastName": "Ronald Doe", "email": null})
        );
        let from_v2 = u
            .upcast(
                "UserCreated",
                2,
                json!({"firstName": "Ann", "lastName": ""}),
            )
            .unwrap();
        assert_eq!(from_v2["email"], Value::Null);
        let at_v3 = json!({"firstName": "A", "lastName": "B", "email": "a@b"});
        assert_eq!(u.upcast("UserCreated", 3, at_v3.clone()).unwrap(), at_v3);
        // Types without upcasters pass through untouched.
        assert_eq!(u.upcast("Other", 1, json!([1])).unwrap(), json!([1]));
    }

    #[test]
    fn upcast_failures_are_typed() {
        let u = chain();
        assert_eq!(
            u.upcast("UserCreated", 4, json!({})),
            Err(UpcastError::TooNew {
                stored: 4,
                latest: 3
            })
        );
        assert_eq!(
            u.upcast("UserCreated", 1, json!({"name": 7})),
            Err(UpcastError::Failed {
                from: 1,
                reason: "no name".to_owned()
            })
        );
        let holey = Upcasters::new().register("E", 2, |v: Value| Ok::<_, &str>(v));
        assert_eq!(
            holey.upcast("E", 1, json!({})),
            Err(UpcastError::MissingStep { from: 1, latest: 3 })
        );
        assert_eq!(
            Upcasters::new().upcast("E", 2, json!({})),
            Err(UpcastError::TooNew {
                stored: 2,
                latest: 1
            })
        );
    }

    #[test]
    fn schema_versions_live_in_metadata_and_default_to_one() {
        assert_eq!(schema_version_of(&Metadata::new()), Ok(1));
        let m = with_schema_version(Metadata::new().with_user_id("u"), 3);
        assert_eq!(schema_version_of(&m), Ok(3));
        assert_eq!(m.user_id(), Some("u"));
        let back = with_schema_version(m, 1);
        assert_eq!(back.get(SCHEMA_VERSION_KEY), None);
        for bad in [json!(0), json!(-1), json!(1.5), json!("2"), json!(u64::MAX)] {
            let m = Metadata::new().with(SCHEMA_VERSION_KEY, bad.clone());
            assert!(schema_version_of(&m).is_err(), "{bad}");
        }
    }

    #[test]
    fn raw_events_can_be_upcast_for_projections() {
        let u = chain();
        let v1 = recorded(
            "UserCreated",
            json!({"name": "Jane Roe"}),
            Metadata::new().with_user_id("admin"),
        );
        let up = u.upcast_recorded(&v1).unwrap();
        assert_eq!(
            up.data_json(),
            Some(json!({"firstName": "Jane", "lastName": "Roe", "email": null}))
        );
        assert_eq!(schema_version_of(&up.metadata), Ok(3));
        assert_eq!(up.metadata.user_id(), Some("admin"));
        assert_eq!((up.stream_version, up.position), (4, Position(40)));

        let broken = recorded("UserCreated", json!({"name": 1}), Metadata::new());
        let err = u.upcast_recorded(&broken).unwrap_err();
        assert_eq!(err.stream.as_str(), "user-1");
        assert_eq!(err.version, 4);
        assert_eq!(err.event_type, "UserCreated");
        assert!(err.to_string().contains("user-1@4"), "{err}");
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum UserEvent {
        #[serde(rename_all = "camelCase")]
        UserCreated {
            first_name: String,
            last_name: String,
            email: Option<String>,
        },
    }

    impl DomainEvent for UserEvent {
        fn upcasters() -> Upcasters {
            chain()
        }
    }

    #[test]
    fn the_codec_upcasts_before_decoding_and_writes_the_newest_version() {
        let codec = EventCodec::<UserEvent>::new();
        let v1 = recorded("UserCreated", json!({"name": "John Doe"}), Metadata::new());
        assert_eq!(
            codec.decode(&v1).unwrap(),
            UserEvent::UserCreated {
                first_name: "John".into(),
                last_name: "Doe".into(),
                email: None
            }
        );
        let data = codec
            .encode(&UserEvent::UserCreated {
                first_name: "A".into(),
                last_name: "B".into(),
                email: Some("a@b".into()),
            })
            .unwrap();
        assert_eq!(data.metadata.get(SCHEMA_VERSION_KEY), Some(&json!(3)));
        let unknown = recorded("UserDeleted", json!({}), Metadata::new());
        assert_eq!(
            codec.decode(&unknown).unwrap_err().kind,
            DecodeErrorKind::UnknownEventType
        );
    }

    #[derive(Debug, Deserialize, Serialize)]
    struct NotAnEnum {
        x: u32,
    }
    impl DomainEvent for NotAnEnum {}

    #[test]
    fn non_enum_events_are_an_encode_error_not_a_panic() {
        let codec = EventCodec::<NotAnEnum>::new();
        assert!(matches!(
            codec.encode(&NotAnEnum { x: 1 }),
            Err(EncodeError::NotAnEnum(_))
        ));
        // Without a list of variants, an unknown type is classified from serde's message.
        let e = recorded("X", json!({"x": 1}), Metadata::new());
        assert!(codec.decode(&e).is_err());
    }
}
