//! Stream lifecycle: soft deletion, tombstones, truncation and stream metadata.
//!
//! Every change to a stream's lifecycle is an event, so that it is durable, ordered and seen by
//! every reader of `$all` like any other event:
//!
//! - A stream's **metadata** lives in its *metastream*, `$$` followed by the stream's id
//!   (`$$account-123`). Each event there holds the whole metadata as JSON
//!   ([`StreamMetadata`]): `truncateBefore`, `maxCount`, `maxAgeSeconds`, `tombstoned` and
//!   free-form `custom` metadata. The metastream's version is the metadata's version, with
//!   optimistic concurrency like any stream. Its event type says what changed:
//!   [`EVENT_TYPE_METADATA`], [`EVENT_TYPE_STREAM_DELETED`], [`EVENT_TYPE_STREAM_TRUNCATED`] or
//!   [`EVENT_TYPE_STREAM_TOMBSTONED`]. A metastream's category is `$$` and its stream's
//!   (`$$account`), which a filter on `account` keeps too: a subscriber to `account` learns
//!   that `account-123` was deleted.
//! - **Soft delete** sets `truncateBefore` to the stream's next version: the stream reads as
//!   not found and does not exist for expected versions; appending again (with
//!   [`ExpectedVersion::NoStream`] or [`ExpectedVersion::Any`]) re-creates it with versions
//!   continuing after the last, so old versions and positions never come back.
//! - A **tombstone** also writes [`EVENT_TYPE_STREAM_TOMBSTONED`] into the stream itself, at
//!   its next version: every later append to the stream fails with
//!   [`AppendError::StreamTombstoned`], and reads with [`ReadError::StreamTombstoned`]. The
//!   marker in the stream is what makes this exact under concurrency: it takes the version a
//!   racing append wants, so one of them loses.
//! - Readers see the events their stream's metadata keeps, and nothing else: stream reads,
//!   `$all` reads, subscriptions and projections alike. Hidden events keep their positions
//!   (the global order gets holes, never a new order) until scavenging removes them.
//!
//! ```
//! use strata_core::lifecycle::{StreamMetadata, Visibility};
//! let metadata = StreamMetadata { truncate_before: Some(3), max_count: Some(5), ..Default::default() };
//! // A stream whose last version is 9: `maxCount` keeps 5..=9, `truncateBefore` would keep 3..
//! let seen = Visibility::new(Some(&metadata), Some(9), false, chrono::Utc::now());
//! assert_eq!(seen.from_version, 5);
//! assert!(!seen.shows(4, chrono::Utc::now()));
//! assert!(seen.shows(5, chrono::Utc::now()));
//! ```

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::error::{AppendError, Corruption, CorruptionLocation, InvalidInput, ReadError};
use crate::event::{
    timestamp_to_micros, AppendResult, EventData, ExpectedVersion, RecordedEvent, Timestamp,
    CONTENT_TYPE_JSON,
};
use crate::options::{Direction, ReadStreamOptions};
use crate::store::{EventStore, StreamInfo};
use crate::stream_id::StreamId;

/// The event type of a metadata change made with `set_stream_metadata`.
pub const EVENT_TYPE_METADATA: &str = "$metadata";
/// The event type of a soft deletion, in the metastream.
pub const EVENT_TYPE_STREAM_DELETED: &str = "$streamDeleted";
/// The event type of a truncation, in the metastream.
pub const EVENT_TYPE_STREAM_TRUNCATED: &str = "$streamTruncated";
/// The event type of a tombstone: in the stream itself (its last event, forever) and in its
/// metastream.
pub const EVENT_TYPE_STREAM_TOMBSTONED: &str = "$streamTombstoned";

/// The event that tells projections a data subject was forgotten (crypto-shredding,
/// `strata-shred`). Strata appends it, alone, to [`SUBJECT_FORGOTTEN_STREAM`] only.
pub const EVENT_TYPE_SUBJECT_FORGOTTEN: &str = "$subjectForgotten";
/// The stream of [`EVENT_TYPE_SUBJECT_FORGOTTEN`] events.
pub const SUBJECT_FORGOTTEN_STREAM: &str = "strata-forgotten";
/// The registration of an encryption schema (`strata-shred`). Strata appends it, alone, to
/// [`ENCRYPTION_SCHEMA_STREAM`] only.
pub const EVENT_TYPE_ENCRYPTION_SCHEMA: &str = "$encryptionSchema";
/// The stream of [`EVENT_TYPE_ENCRYPTION_SCHEMA`] events.
pub const ENCRYPTION_SCHEMA_STREAM: &str = "strata-encryption";

/// Whether `stream` is one of crypto-shredding's own streams ([`SUBJECT_FORGOTTEN_STREAM`],
/// [`ENCRYPTION_SCHEMA_STREAM`]) or the metastream of one. Only their system events are
/// written there: no other event, and no metadata, delete, truncation or tombstone (losing
/// the schemas would have personal data written in clear).
pub fn is_shredding_stream(stream: &StreamId) -> bool {
    let own = |s: &str| s == SUBJECT_FORGOTTEN_STREAM || s == ENCRYPTION_SCHEMA_STREAM;
    own(stream.as_str()) || stream.described_stream().is_some_and(|d| own(d.as_str()))
}

/// Whether `events` is one system event of crypto-shredding in its own stream.
fn is_shredding_event(stream: &StreamId, events: &[EventData]) -> bool {
    match events {
        [e] => {
            (e.event_type == EVENT_TYPE_SUBJECT_FORGOTTEN
                && stream.as_str() == SUBJECT_FORGOTTEN_STREAM)
                || (e.event_type == EVENT_TYPE_ENCRYPTION_SCHEMA
                    && stream.as_str() == ENCRYPTION_SCHEMA_STREAM)
        }
        _ => false,
    }
}

/// The event types a metastream holds.
pub const METASTREAM_EVENT_TYPES: [&str; 4] = [
    EVENT_TYPE_METADATA,
    EVENT_TYPE_STREAM_DELETED,
    EVENT_TYPE_STREAM_TRUNCATED,
    EVENT_TYPE_STREAM_TOMBSTONED,
];

/// How often a lifecycle operation reads the metadata again after losing a race with another
/// change of it, before it answers [`AppendError::Race`].
const LIFECYCLE_RACE_RETRIES: usize = 8;

/// A stream's metadata: what its metastream's last event holds.
///
/// ```
/// use strata_core::lifecycle::StreamMetadata;
/// let m = StreamMetadata::from_json(br#"{"maxCount": 100, "custom": {"owner": "billing"}}"#).unwrap();
/// assert_eq!(m.max_count, Some(100));
/// assert_eq!(m.custom["owner"], "billing");
/// assert!(StreamMetadata::from_json(br#"{"maxCount": -1}"#).is_err());
/// assert!(StreamMetadata::from_json(br#"{"maxcount": 1}"#).is_err()); // unknown field
/// assert!(StreamMetadata::from_json(b"[]").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamMetadata {
    /// Events below this version are gone (soft deletion sets it to the next version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_before: Option<u64>,
    /// Only the newest this many events are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// Only events recorded within this many seconds of now are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    /// The stream is tombstoned: set only by tombstoning it, and never cleared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tombstoned: bool,
    /// The application's own metadata: any JSON object.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

impl StreamMetadata {
    /// Parses metadata as stored in a metastream (or sent by a client), strictly: unknown
    /// fields and values of the wrong type are errors.
    pub fn from_json(bytes: &[u8]) -> Result<Self, InvalidInput> {
        let invalid = |e: serde_json::Error| InvalidInput::new("metadata", e.to_string());
        // An object only: serde would also read a struct from an array of its fields.
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
        if !value.is_object() {
            return Err(InvalidInput::new("metadata", "must be a JSON object"));
        }
        serde_json::from_value(value).map_err(invalid)
    }

    /// The JSON a metastream event holds.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Whether this metadata deletes every event of a stream whose last version is `last`:
    /// the stream was soft-deleted (or truncated up to its end), and an append that expects
    /// [`ExpectedVersion::NoStream`] re-creates it.
    pub fn deletes_all(&self, last: Option<u64>) -> bool {
        match (self.truncate_before, last) {
            (Some(before), Some(last)) => before > last,
            _ => false,
        }
    }
}

/// A stream's metadata and its version (the metastream's version; `None` when the stream
/// never had metadata).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamMetadataRecord {
    /// The metadata (the default when there is none).
    pub metadata: StreamMetadata,
    /// Its version, for optimistic concurrency on the next change.
    pub version: Option<u64>,
}

/// Whether a stream whose last stored version is `actual` satisfies `expected`, taking
/// deletion into account: a stream all of whose events are deleted (`deleted`) does not exist
/// for any expectation. [`ExpectedVersion::NoStream`] (or [`ExpectedVersion::Any`]) re-creates
/// it, its versions continuing after the last; [`ExpectedVersion::Exact`] of its last version
/// fails, so a writer that read the stream before it was deleted does not write on.
///
/// ```
/// use strata_core::{lifecycle::expected_matches, ExpectedVersion};
/// assert!(expected_matches(ExpectedVersion::NoStream, Some(4), true));
/// assert!(!expected_matches(ExpectedVersion::NoStream, Some(4), false));
/// assert!(!expected_matches(ExpectedVersion::StreamExists, Some(4), true));
/// assert!(!expected_matches(ExpectedVersion::Exact(4), Some(4), true));
/// assert!(expected_matches(ExpectedVersion::Any, Some(4), true));
/// ```
pub fn expected_matches(expected: ExpectedVersion, actual: Option<u64>, deleted: bool) -> bool {
    if deleted {
        return matches!(expected, ExpectedVersion::NoStream | ExpectedVersion::Any);
    }
    expected.matches(actual)
}

/// The version a refused append reports as the stream's: none for a deleted stream.
pub fn actual_version(actual: Option<u64>, deleted: bool) -> crate::ActualVersion {
    crate::ActualVersion(actual.filter(|_| !deleted))
}

/// What readers may see of one stream at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visibility {
    /// Events below this version are hidden.
    pub from_version: u64,
    /// Events recorded before this time (microseconds since the epoch) are hidden.
    pub not_before_us: Option<i64>,
    /// The stream is tombstoned: everything of it is hidden, and reads fail.
    pub tombstoned: bool,
}

impl Visibility {
    /// A stream without metadata: everything is seen.
    pub const ALL: Visibility = Visibility {
        from_version: 0,
        not_before_us: None,
        tombstoned: false,
    };

    /// What `metadata` keeps of a stream whose last stored version is `last`, at `now`.
    /// `last_is_tombstone`: the stream's last event is its tombstone.
    pub fn new(
        metadata: Option<&StreamMetadata>,
        last: Option<u64>,
        last_is_tombstone: bool,
        now: Timestamp,
    ) -> Self {
        let Some(m) = metadata else {
            return Visibility {
                tombstoned: last_is_tombstone,
                ..Visibility::ALL
            };
        };
        let next = last.map_or(0, |v| v + 1);
        let by_count = m.max_count.map_or(0, |count| next.saturating_sub(count));
        Visibility {
            from_version: m.truncate_before.unwrap_or(0).max(by_count),
            not_before_us: m.max_age_seconds.map(|age| {
                let age_us = i64::try_from(age.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
                timestamp_to_micros(now).saturating_sub(age_us)
            }),
            tombstoned: m.tombstoned || last_is_tombstone,
        }
    }

    /// Whether this hides nothing.
    pub fn is_all(&self) -> bool {
        *self == Visibility::ALL
    }

    /// Whether the event at `version`, recorded at `recorded_at`, is seen.
    pub fn shows(&self, version: u64, recorded_at: Timestamp) -> bool {
        self.shows_us(version, timestamp_to_micros(recorded_at))
    }

    /// [`shows`](Self::shows) with the time in microseconds since the epoch.
    pub fn shows_us(&self, version: u64, recorded_at_us: i64) -> bool {
        !self.tombstoned
            && version >= self.from_version
            && self.not_before_us.is_none_or(|nb| recorded_at_us >= nb)
    }

    /// Whether `event` is seen. Events of metastreams always are.
    pub fn shows_event(&self, event: &RecordedEvent) -> bool {
        event.stream_id.is_metastream() || self.shows(event.stream_version, event.recorded_at)
    }
}

/// Reads `stream` as its visibility allows, with `raw` reading what is stored: the shared
/// logic of every backend's `read_stream`. `last` is the stream's last stored version.
///
/// Hidden events are skipped, not merely left out of a page: a forward read asks again from
/// the first visible version, so a page is short only at the stream's end.
pub async fn read_visible<F, Fut>(
    stream: &StreamId,
    visibility: Visibility,
    last: Option<u64>,
    mut options: ReadStreamOptions,
    mut raw: F,
) -> Result<Vec<RecordedEvent>, ReadError>
where
    F: FnMut(ReadStreamOptions) -> Fut,
    Fut: Future<Output = Result<Vec<RecordedEvent>, ReadError>>,
{
    if stream.is_metastream() || visibility.is_all() {
        return raw(options).await;
    }
    if visibility.tombstoned {
        return Err(ReadError::StreamTombstoned(stream.clone()));
    }
    if last.is_none_or(|last| last < visibility.from_version) {
        return Err(ReadError::StreamNotFound(stream.clone()));
    }
    if options.direction == Direction::Forward {
        let from = options.from_version.unwrap_or(0);
        options.from_version = Some(from.max(visibility.from_version));
    }
    let asked = options.limit;
    loop {
        let page = raw(options.clone()).await?;
        let full = page.len() >= options.limit;
        let read = page.len();
        let last_read = page.last().map(|e| e.stream_version);
        let mut kept: Vec<RecordedEvent> = page
            .into_iter()
            .filter(|e| visibility.shows(e.stream_version, e.recorded_at))
            .collect();
        // Backward, what is hidden is the oldest part: the end of the read.
        if options.direction == Direction::Backward || kept.len() == read {
            kept.truncate(asked);
            return Ok(kept);
        }
        // Forward, the hidden ones come first (by age): read again from the first seen one,
        // or past the page when none was seen.
        match (kept.first(), last_read) {
            (Some(first), _) => {
                options.from_version = Some(first.stream_version);
                options.limit = asked;
            }
            // A page of expired events: skip on in whole pages, not one `limit` at a time.
            (None, Some(last_read)) if full => {
                options.from_version = Some(last_read + 1);
                options.limit = crate::limits::READ_PAGE_MAX_EVENTS.max(asked);
            }
            _ => return Ok(kept),
        }
    }
}

/// Leaves out of `events` (a page of `$all`) what their streams' lifecycles hide, asking
/// `visibility` once per stream of the page.
pub async fn keep_visible<F, Fut>(
    events: Vec<RecordedEvent>,
    mut visibility: F,
) -> Result<Vec<RecordedEvent>, ReadError>
where
    F: FnMut(StreamId) -> Fut,
    Fut: Future<Output = Result<Visibility, ReadError>>,
{
    let mut seen: std::collections::HashMap<StreamId, Visibility> = Default::default();
    let mut kept = Vec::with_capacity(events.len());
    for event in events {
        if event.stream_id.is_metastream() {
            kept.push(event);
            continue;
        }
        let shown = match seen.get(&event.stream_id) {
            Some(v) => v.shows_event(&event),
            None => {
                let v = visibility(event.stream_id.clone()).await?;
                seen.insert(event.stream_id.clone(), v);
                v.shows_event(&event)
            }
        };
        if shown {
            kept.push(event);
        }
    }
    Ok(kept)
}

/// A page of a stream listing as readers see it: without metastreams and without streams
/// that have no visible event, with visible counts. `with_lifecycle`: whether any stream may
/// have lifecycle state (otherwise only metastreams are left out, and `store` is not asked).
pub async fn visible_listing<S: EventStore + ?Sized>(
    store: &S,
    page: crate::Page<crate::StreamSummary>,
    with_lifecycle: bool,
) -> Result<crate::Page<crate::StreamSummary>, ReadError> {
    let mut items = Vec::with_capacity(page.items.len());
    for mut item in page.items {
        if item.stream_id.starts_with(crate::METASTREAM_PREFIX) {
            continue;
        }
        if with_lifecycle {
            let info = store
                .stream_info(&StreamId::new(item.stream_id.as_str())?)
                .await?;
            if !info.exists {
                continue;
            }
            item.event_count = info.event_count;
        }
        items.push(item);
    }
    Ok(crate::Page {
        items,
        next: page.next,
    })
}

/// A page of a stream listing as readers see it, like [`visible_listing`], with each
/// stream's visibility given by `visibility_of` (`None`: it has no lifecycle state) instead
/// of asked of the store stream by stream. The listed counts are the streams' next versions.
pub fn visible_listing_by(
    page: crate::Page<crate::StreamSummary>,
    visibility_of: impl Fn(&str) -> Option<Visibility>,
) -> crate::Page<crate::StreamSummary> {
    let items = page
        .items
        .into_iter()
        .filter(|item| !item.stream_id.starts_with(crate::METASTREAM_PREFIX))
        .filter_map(|mut item| {
            if let Some(v) = visibility_of(&item.stream_id) {
                let count = visible_count(item.event_count, v);
                if count == 0 {
                    return None;
                }
                item.event_count = count.min(item.event_count);
            }
            Some(item)
        })
        .collect();
    crate::Page {
        items,
        next: page.next,
    }
}

/// How many of a stream's events `visibility` shows (before `maxAge`), the stream's next
/// version being `next`.
fn visible_count(next: u64, visibility: Visibility) -> u64 {
    if visibility.tombstoned {
        0
    } else {
        next.saturating_sub(visibility.from_version)
    }
}

/// A page of a category listing as readers see it: without the metastreams' categories.
pub fn visible_categories(
    mut page: crate::Page<crate::CategorySummary>,
) -> crate::Page<crate::CategorySummary> {
    page.items
        .retain(|c| !c.category.starts_with(crate::METASTREAM_PREFIX));
    page
}

/// `stored` (what is kept of a stream) as readers see it under `visibility`, with the time of
/// the first visible event read from `store` when it is not the first stored one.
pub async fn visible_stream_info<S: EventStore + ?Sized>(
    store: &S,
    stored: StreamInfo,
    visibility: Visibility,
) -> Result<StreamInfo, ReadError> {
    let info = visible_info(stored, visibility);
    if visibility.is_all() || !info.exists {
        return Ok(info);
    }
    let first = store
        .read_stream(&info.stream_id, ReadStreamOptions::forward().limit(1))
        .await?;
    Ok(StreamInfo {
        first_recorded_at: first.first().map(|e| e.recorded_at),
        ..info
    })
}

/// `info` (what is stored) as readers see it under `visibility`; `first_recorded_at` is left
/// to the caller when the first visible event is not the first stored one.
pub fn visible_info(mut info: StreamInfo, visibility: Visibility) -> StreamInfo {
    if info.stream_id.is_metastream() || visibility.is_all() {
        return info;
    }
    info.tombstoned = visibility.tombstoned;
    let count = visible_count(info.current_version.map_or(0, |v| v + 1), visibility);
    if count == 0 {
        info.exists = false;
        info.event_count = 0;
        info.first_recorded_at = None;
        info.last_recorded_at = None;
        info.last_position = None;
    } else {
        info.event_count = count.min(info.event_count);
    }
    info
}

/// Checks an append against the names Strata reserves: event types starting with `$` are
/// Strata's own ([`EVENT_TYPE_STREAM_TOMBSTONED`] alone, in an append of its own; the two
/// events of crypto-shredding alone, each in its own stream, which takes nothing else: see
/// [`is_shredding_stream`]), and a
/// metastream takes one event per append, of a metastream event type, holding valid
/// [`StreamMetadata`].
pub fn check_reserved(stream: &StreamId, events: &[EventData]) -> Result<(), AppendError> {
    if is_shredding_stream(stream) {
        if is_shredding_event(stream, events) {
            return Ok(());
        }
        return Err(InvalidInput::new(
            "stream_id",
            "is kept by Strata for crypto-shredding: it takes only its own system events, \
             one per append",
        )
        .into());
    }
    if stream.is_metastream() {
        if events.len() != 1 {
            return Err(InvalidInput::new(
                "events",
                "a metastream takes exactly one event per append",
            )
            .into());
        }
        let event = &events[0];
        if !METASTREAM_EVENT_TYPES.contains(&event.event_type.as_str()) {
            return Err(InvalidInput::new(
                "events[0].event_type",
                format!(
                    "a metastream holds only {}",
                    METASTREAM_EVENT_TYPES.join(", ")
                ),
            )
            .into());
        }
        if event.content_type != CONTENT_TYPE_JSON {
            return Err(InvalidInput::new(
                "events[0].content_type",
                "stream metadata is JSON (application/json)",
            )
            .into());
        }
        let metadata = StreamMetadata::from_json(&event.data)
            .map_err(|e| InvalidInput::new("events[0].data", e.reason))?;
        // The tombstone's record says so, and only it.
        if metadata.tombstoned != (event.event_type == EVENT_TYPE_STREAM_TOMBSTONED) {
            return Err(InvalidInput::new(
                "events[0].data",
                "`tombstoned` is true in a $streamTombstoned event, and only there",
            )
            .into());
        }
        if crate::json::has_nul_escape(&event.data) {
            // PostgreSQL keeps metadata as jsonb too, which cannot hold it.
            return Err(InvalidInput::new(
                "events[0].data",
                "stream metadata cannot hold the character U+0000",
            )
            .into());
        }
        return Ok(());
    }
    for (i, event) in events.iter().enumerate() {
        if event.event_type.starts_with('$')
            && (event.event_type != EVENT_TYPE_STREAM_TOMBSTONED || events.len() != 1)
        {
            return Err(InvalidInput::new(
                format!("events[{i}].event_type"),
                "event types starting with `$` are reserved for Strata's system events",
            )
            .into());
        }
    }
    Ok(())
}

/// Whether an append of `events` to a metastream still deletes what it was decided on: a
/// `$streamDeleted` event's `truncateBefore` must be the described stream's next version
/// (`next`) when it is written. Backends check this where they check expected versions, so
/// that a delete and a concurrent append to the stream cannot both succeed; a stale delete is
/// refused as a wrong expected version, and `delete_stream` reads the stream again.
pub fn deletion_is_current(events: &[EventData], next: u64) -> bool {
    match events {
        [event] if event.event_type == EVENT_TYPE_STREAM_DELETED => {
            StreamMetadata::from_json(&event.data).is_ok_and(|m| m.truncate_before == Some(next))
        }
        _ => true,
    }
}

fn append_error(e: ReadError) -> AppendError {
    match e {
        ReadError::StreamNotFound(s) => AppendError::StreamNotFound(s),
        ReadError::StreamTombstoned(stream) => AppendError::StreamTombstoned { stream },
        ReadError::InvalidInput(e) => AppendError::InvalidInput(e),
        ReadError::Limit(e) => AppendError::Limit(e),
        ReadError::Corruption(e) => AppendError::Corruption(e),
        ReadError::Unavailable(e) => AppendError::Unavailable(e),
        ReadError::Denied(e) => AppendError::Denied(e),
        ReadError::Storage(e) => AppendError::Storage(e),
    }
}

fn not_a_metastream(stream: &StreamId) -> Result<(), InvalidInput> {
    if stream.is_metastream() {
        return Err(InvalidInput::new(
            "stream_id",
            "is a metastream; its lifecycle follows the stream it describes",
        ));
    }
    Ok(())
}

/// The default of [`EventStore::stream_metadata`]: the metastream's last event.
pub async fn stream_metadata<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
) -> Result<StreamMetadataRecord, ReadError> {
    not_a_metastream(stream)?;
    let meta = stream.metastream();
    let last = match store
        .read_stream(&meta, ReadStreamOptions::backward().limit(1))
        .await
    {
        Ok(events) => events.into_iter().next(),
        Err(ReadError::StreamNotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let Some(event) = last else {
        return Ok(StreamMetadataRecord::default());
    };
    let metadata = StreamMetadata::from_json(&event.data).map_err(|e| {
        Corruption::new(
            CorruptionLocation::Other(format!("metastream {meta}")),
            Some(event.position),
            format!("its metadata does not parse: {}", e.reason),
        )
    })?;
    Ok(StreamMetadataRecord {
        metadata,
        version: Some(event.stream_version),
    })
}

async fn write_metadata<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    event_type: &str,
    metadata: &StreamMetadata,
) -> Result<AppendResult, AppendError> {
    let event = EventData {
        event_id: None,
        event_type: event_type.to_owned(),
        content_type: CONTENT_TYPE_JSON.to_owned(),
        data: metadata.to_json(),
        metadata: Default::default(),
    };
    store
        .append(&stream.metastream(), expected, vec![event])
        .await
}

fn expected_of(version: Option<u64>) -> ExpectedVersion {
    version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
}

fn raced(stream: &StreamId) -> AppendError {
    AppendError::Race {
        stream: stream.metastream(),
        reason: format!("its metadata changed under {LIFECYCLE_RACE_RETRIES} attempts in a row"),
    }
}

/// Changes `stream`'s metadata with `change` (given the stored metadata and the stream's
/// info) and writes it as `event_type`, reading again when another change won a race.
async fn change_metadata<S, F>(
    store: &S,
    stream: &StreamId,
    event_type: &str,
    mut change: F,
) -> Result<AppendResult, AppendError>
where
    S: EventStore + ?Sized,
    F: FnMut(&StreamInfo, &StreamMetadataRecord) -> Result<StreamMetadata, AppendError>,
{
    not_a_metastream(stream)?;
    for _ in 0..LIFECYCLE_RACE_RETRIES {
        let info = store.stream_info(stream).await.map_err(append_error)?;
        let record = stream_metadata(store, stream).await.map_err(append_error)?;
        let metadata = change(&info, &record)?;
        match write_metadata(
            store,
            stream,
            expected_of(record.version),
            event_type,
            &metadata,
        )
        .await
        {
            Err(e) if e.is_wrong_expected_version() => continue,
            other => return other,
        }
    }
    Err(raced(stream))
}

fn refuse_tombstoned(info: &StreamInfo, record: &StreamMetadataRecord) -> Result<(), AppendError> {
    if info.tombstoned || record.metadata.tombstoned {
        return Err(AppendError::StreamTombstoned {
            stream: info.stream_id.clone(),
        });
    }
    Ok(())
}

/// The default of [`EventStore::delete_stream`].
pub async fn delete_stream<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
) -> Result<AppendResult, AppendError> {
    change_metadata(store, stream, EVENT_TYPE_STREAM_DELETED, |info, record| {
        refuse_tombstoned(info, record)?;
        let Some(last) = info.current_version.filter(|_| info.exists) else {
            return Err(AppendError::StreamNotFound(stream.clone()));
        };
        if !expected.matches(Some(last)) {
            return Err(AppendError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: crate::ActualVersion(Some(last)),
            });
        }
        Ok(StreamMetadata {
            truncate_before: Some(last + 1),
            ..record.metadata.clone()
        })
    })
    .await
}

/// The default of [`EventStore::truncate_stream`].
pub async fn truncate_stream<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    before: u64,
) -> Result<AppendResult, AppendError> {
    change_metadata(
        store,
        stream,
        EVENT_TYPE_STREAM_TRUNCATED,
        |info, record| {
            refuse_tombstoned(info, record)?;
            let Some(last) = info.current_version else {
                return Err(AppendError::StreamNotFound(stream.clone()));
            };
            check_truncate_before(before, last + 1, &record.metadata)?;
            Ok(StreamMetadata {
                truncate_before: Some(before),
                ..record.metadata.clone()
            })
        },
    )
    .await
}

/// Checks a new `truncateBefore` for a stream whose next version is `next`.
fn check_truncate_before(
    before: u64,
    next: u64,
    current: &StreamMetadata,
) -> Result<(), AppendError> {
    if before > next {
        return Err(InvalidInput::new(
            "truncate_before",
            format!("is {before}, past the stream's next version {next}"),
        )
        .into());
    }
    if let Some(now) = current.truncate_before.filter(|&now| before < now) {
        return Err(InvalidInput::new(
            "truncate_before",
            format!("is {before}, below {now}, where the stream is already truncated; truncation only moves forward"),
        )
        .into());
    }
    Ok(())
}

/// The default of [`EventStore::set_stream_metadata`].
pub async fn set_stream_metadata<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    metadata: StreamMetadata,
) -> Result<AppendResult, AppendError> {
    not_a_metastream(stream)?;
    if metadata.tombstoned {
        return Err(InvalidInput::new(
            "metadata.tombstoned",
            "is set only by tombstoning the stream",
        )
        .into());
    }
    // Written at the version the checks read (also for `Any`): a change that lands in
    // between (a delete, say) makes this one read again rather than undo it.
    for _ in 0..LIFECYCLE_RACE_RETRIES {
        let info = store.stream_info(stream).await.map_err(append_error)?;
        let record = stream_metadata(store, stream).await.map_err(append_error)?;
        refuse_tombstoned(&info, &record)?;
        if !expected.matches(record.version) {
            return Err(AppendError::WrongExpectedVersion {
                stream: stream.metastream(),
                expected,
                actual: crate::ActualVersion(record.version),
            });
        }
        // Truncation only moves forward: metadata without `truncateBefore` keeps the stream's.
        let mut metadata = metadata.clone();
        match metadata.truncate_before {
            Some(before) => check_truncate_before(
                before,
                info.current_version.map_or(0, |v| v + 1),
                &record.metadata,
            )?,
            None => metadata.truncate_before = record.metadata.truncate_before,
        }
        let written = write_metadata(
            store,
            stream,
            expected_of(record.version),
            EVENT_TYPE_METADATA,
            &metadata,
        )
        .await;
        match written {
            Err(e) if e.is_wrong_expected_version() && expected == ExpectedVersion::Any => continue,
            Err(AppendError::WrongExpectedVersion { actual, .. }) => {
                return Err(AppendError::WrongExpectedVersion {
                    stream: stream.metastream(),
                    expected,
                    actual,
                })
            }
            other => return other,
        }
    }
    Err(raced(stream))
}

/// The default of [`EventStore::tombstone_stream`].
pub async fn tombstone_stream<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
) -> Result<AppendResult, AppendError> {
    not_a_metastream(stream)?;
    let marker = EventData {
        event_id: None,
        event_type: EVENT_TYPE_STREAM_TOMBSTONED.to_owned(),
        content_type: CONTENT_TYPE_JSON.to_owned(),
        data: b"{}".to_vec(),
        metadata: Default::default(),
    };
    // The marker in the stream first: from here on no append to the stream succeeds.
    let tombstoned = match store.append(stream, expected, vec![marker]).await {
        Ok(result) => Ok(result),
        // Tombstoned before (perhaps by an attempt that stopped before its metadata was
        // written): the metadata below is still made to say so.
        Err(e @ AppendError::StreamTombstoned { .. }) => Err(e),
        Err(e) => return Err(e),
    };
    // Then the metastream, which `$all` readers filter by and subscribers are told through.
    for _ in 0..LIFECYCLE_RACE_RETRIES {
        let record = stream_metadata(store, stream).await.map_err(append_error)?;
        if record.metadata.tombstoned {
            return tombstoned;
        }
        let metadata = StreamMetadata {
            tombstoned: true,
            ..record.metadata
        };
        match write_metadata(
            store,
            stream,
            expected_of(record.version),
            EVENT_TYPE_STREAM_TOMBSTONED,
            &metadata,
        )
        .await
        {
            Ok(_) => return tombstoned,
            Err(e) if e.is_wrong_expected_version() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(raced(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str) -> EventData {
        EventData::json(event_type, &serde_json::json!({})).expect("json")
    }

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).expect("stream id")
    }

    #[test]
    fn shredding_events_pass_only_alone_in_their_own_stream() {
        let forgotten = sid(SUBJECT_FORGOTTEN_STREAM);
        let schemas = sid(ENCRYPTION_SCHEMA_STREAM);
        assert!(check_reserved(&forgotten, &[event(EVENT_TYPE_SUBJECT_FORGOTTEN)]).is_ok());
        assert!(check_reserved(&schemas, &[event(EVENT_TYPE_ENCRYPTION_SCHEMA)]).is_ok());
        for (stream, events) in [
            (&schemas, vec![event(EVENT_TYPE_SUBJECT_FORGOTTEN)]),
            (&forgotten, vec![event(EVENT_TYPE_ENCRYPTION_SCHEMA)]),
            (&sid("account-1"), vec![event(EVENT_TYPE_SUBJECT_FORGOTTEN)]),
            (
                &forgotten,
                vec![
                    event(EVENT_TYPE_SUBJECT_FORGOTTEN),
                    event(EVENT_TYPE_SUBJECT_FORGOTTEN),
                ],
            ),
            (&forgotten, vec![event("$other")]),
        ] {
            assert!(
                matches!(
                    check_reserved(stream, &events),
                    Err(AppendError::InvalidInput(_))
                ),
                "{stream} {:?}",
                events.iter().map(|e| &e.event_type).collect::<Vec<_>>()
            );
        }
        // Those streams take nothing else, and their metastreams nothing at all: no metadata,
        // delete, truncation or tombstone.
        for (stream, event) in [
            (&forgotten, event("Note")),
            (&forgotten, event(EVENT_TYPE_STREAM_TOMBSTONED)),
            (&forgotten.metastream(), event(EVENT_TYPE_METADATA)),
            (&schemas.metastream(), event(EVENT_TYPE_STREAM_DELETED)),
        ] {
            assert!(
                matches!(
                    check_reserved(stream, std::slice::from_ref(&event)),
                    Err(AppendError::InvalidInput(i)) if i.field == "stream_id"
                ),
                "{stream} {}",
                event.event_type
            );
        }
    }
}
