//! [`MemoryStore`]: the in-memory reference implementation of [`EventStore`] and
//! [`SnapshotStore`].
//!
//! It is the model the other backends are compared against, so it is written to be obviously
//! correct rather than fast: one lock around a vector of events (index = position), a map from
//! stream to the positions of its events (index = stream version) and a map from event id to
//! position. Every operation takes the lock once, so every operation is atomic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;
use strata_core::lifecycle::{self, StreamMetadata, Visibility, EVENT_TYPE_STREAM_TOMBSTONED};
use strata_core::scavenge::{
    removable, ProgressFn, ScavengeError, ScavengeProgress, ScavengeReport,
};
use strata_core::{
    limits, timestamp_from_micros, timestamp_to_micros, validate_append, ActualVersion, AllPage,
    AppendError, AppendResult, CategorySummary, Direction, EventData, EventStore, ExpectedVersion,
    ListOptions, Metadata, Page, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, Snapshot, SnapshotError, SnapshotStore, StreamId, StreamInfo, StreamSummary,
    SubscribeFrom, Subscription, SubscriptionTarget, Timestamp, Uuid,
};
use tokio::sync::watch;

/// The in-memory reference event store. Cloning is cheap and every clone shares the same
/// events. Positions start at 0 and are dense; nothing survives the last clone being dropped.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use strata_core::{EventData, EventStore, ExpectedVersion, Position, ReadStreamOptions, StreamId};
/// use strata_testkit::MemoryStore;
///
/// let store = MemoryStore::new();
/// let stream = StreamId::new("account-123").unwrap();
/// let opened = EventData::json("AccountOpened", &serde_json::json!({"initialBalance": 100})).unwrap();
/// let result = store.append(&stream, ExpectedVersion::NoStream, vec![opened]).await.expect("subscribe");
/// assert_eq!(result.stream_version, 0);
/// assert_eq!(result.positions, vec![Position(0)]);
/// let events = store.read_stream(&stream, ReadStreamOptions::forward()).await.expect("subscribe");
/// assert_eq!(events[0].event_type, "AccountOpened");
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    changes: Arc<watch::Sender<u64>>,
}

#[derive(Default)]
struct Inner {
    /// Every event; the index is the position.
    events: Vec<RecordedEvent>,
    /// Stream name to the positions of its events; the index is the stream version.
    streams: BTreeMap<String, Vec<u64>>,
    /// Event id to position.
    ids: HashMap<Uuid, u64>,
    /// Stream name to snapshots by stream version.
    snapshots: BTreeMap<String, BTreeMap<u64, Snapshot>>,
    /// Positions of the events a scavenge removed: they stay in `events` and `streams` (so
    /// that indexes stay positions and versions) but no read returns them, and their ids are
    /// forgotten.
    removed: HashSet<u64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("MemoryStore")
            .field("events", &inner.events.len())
            .field("streams", &inner.streams.len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let (changes, _) = watch::channel(0);
        MemoryStore {
            inner: Arc::new(Mutex::new(Inner::default())),
            changes: Arc::new(changes),
        }
    }

    fn notify(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// The current time at the precision the store records (microseconds).
fn now_micros() -> Timestamp {
    timestamp_from_micros(timestamp_to_micros(Utc::now()))
}

fn id_conflict(event_id: Uuid, stream: &StreamId) -> AppendError {
    AppendError::EventIdConflict {
        event_id,
        stream: stream.clone(),
    }
}

impl Inner {
    /// The metadata of `stream`: its metastream's last event.
    fn metadata(&self, stream: &StreamId) -> Option<StreamMetadata> {
        if stream.is_metastream() {
            return None;
        }
        let positions = self.streams.get(stream.metastream().as_str())?;
        let last = &self.events[*positions.last()? as usize];
        StreamMetadata::from_json(&last.data).ok()
    }

    fn last_is_tombstone(&self, stream: &StreamId) -> bool {
        self.streams
            .get(stream.as_str())
            .and_then(|p| p.last())
            .is_some_and(|&p| self.events[p as usize].event_type == EVENT_TYPE_STREAM_TOMBSTONED)
    }

    /// What readers may see of `stream` now.
    fn visibility(&self, stream: &StreamId) -> Visibility {
        if stream.is_metastream() {
            return Visibility::ALL;
        }
        Visibility::new(
            self.metadata(stream).as_ref(),
            self.stream_version(stream.as_str()),
            self.last_is_tombstone(stream),
            Utc::now(),
        )
    }

    /// Removes what readers cannot see of every stream with lifecycle state
    /// (`strata_core::scavenge`), at once: the store is locked throughout.
    fn scavenge(&mut self) -> ScavengeProgress {
        let mut streams: Vec<StreamId> = Vec::new();
        for (name, positions) in &self.streams {
            let stream = match name.strip_prefix(strata_core::METASTREAM_PREFIX) {
                Some(of) => of,
                None if positions.last().is_some_and(|&p| {
                    self.events[p as usize].event_type == EVENT_TYPE_STREAM_TOMBSTONED
                }) =>
                {
                    name.as_str()
                }
                None => continue,
            };
            if let Ok(stream) = StreamId::new(stream) {
                streams.push(stream);
            }
        }
        streams.sort();
        streams.dedup();
        let mut progress = ScavengeProgress {
            streams_total: streams.len() as u64,
            ..ScavengeProgress::default()
        };
        for stream in &streams {
            progress.streams_examined += 1;
            let Some(last) = self.stream_version(stream.as_str()) else {
                continue;
            };
            let visibility = self.visibility(stream);
            let positions = &self.streams[stream.as_str()];
            let first_recent = visibility.not_before_us.and_then(|nb| {
                positions
                    .iter()
                    .map(|&p| &self.events[p as usize])
                    .find(|e| timestamp_to_micros(e.recorded_at) >= nb)
                    .map(|e| e.stream_version)
            });
            let range = removable(visibility, last, first_recent);
            // A tombstoned stream's snapshots go with its events, as on PostgreSQL.
            if visibility.tombstoned && !range.is_empty() {
                self.snapshots.remove(stream.as_str());
            }
            for &p in &positions[range.start as usize..range.end as usize] {
                if self.removed.insert(p) {
                    self.ids.remove(&self.events[p as usize].event_id);
                    progress.events_removed += 1;
                }
            }
        }
        progress
    }

    fn stream_version(&self, stream: &str) -> Option<u64> {
        self.streams
            .get(stream)
            .and_then(|p| (p.len() as u64).checked_sub(1))
    }

    /// Decides an append whose first event id is already stored: either it is the retry of
    /// events stored at exactly these places (returns the original result) or a conflict.
    fn idempotent_retry(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[EventData],
        first_id: Uuid,
        first_position: u64,
    ) -> Result<AppendResult, AppendError> {
        let first = &self.events[first_position as usize];
        if first.stream_id != *stream {
            return Err(id_conflict(first_id, stream));
        }
        let start = first.stream_version;
        let place_ok = match expected {
            ExpectedVersion::Exact(v) => v.checked_add(1) == Some(start),
            // A stream re-created after a soft delete starts where the deletion ended.
            ExpectedVersion::NoStream => {
                start == 0 || self.metadata(stream).and_then(|m| m.truncate_before) == Some(start)
            }
            ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
        };
        if !place_ok {
            return Err(id_conflict(first_id, stream));
        }
        let stored_positions = self.streams.get(stream.as_str()).map_or(&[][..], |p| p);
        let mut positions = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let version = start + i as u64;
            let Some(id) = event.event_id else {
                // An event without an id cannot be a retry of a stored one.
                return Err(id_conflict(first_id, stream));
            };
            let Some(&position) = self.ids.get(&id) else {
                // The append only partly matches what is stored.
                return Err(id_conflict(first_id, stream));
            };
            let stored = &self.events[position as usize];
            let same_place = stored_positions.get(version as usize) == Some(&position);
            if !same_place || stored.event_type != event.event_type || stored.data != event.data {
                return Err(id_conflict(id, stream));
            }
            positions.push(Position(position));
        }
        Ok(AppendResult {
            stream_version: start + events.len() as u64 - 1,
            positions,
            replayed: true,
        })
    }

    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        metadata: Vec<Vec<u8>>,
    ) -> Result<AppendResult, AppendError> {
        if let Some(first_id) = events.first().and_then(|e| e.event_id) {
            if let Some(&position) = self.ids.get(&first_id) {
                return self.idempotent_retry(stream, expected, &events, first_id, position);
            }
        }
        if let Some(used) = events
            .iter()
            .filter_map(|e| e.event_id)
            .find(|id| self.ids.contains_key(id))
        {
            return Err(id_conflict(used, stream));
        }
        let actual = self.stream_version(stream.as_str());
        if self.last_is_tombstone(stream) {
            return Err(AppendError::StreamTombstoned {
                stream: stream.clone(),
            });
        }
        if let Some(described) = stream.described_stream() {
            let next = self.stream_version(described.as_str()).map_or(0, |v| v + 1);
            if !lifecycle::deletion_is_current(&events, next) {
                return Err(AppendError::WrongExpectedVersion {
                    stream: stream.clone(),
                    expected,
                    actual: ActualVersion(actual),
                });
            }
        }
        let deleted = self.metadata(stream).is_some_and(|m| m.deletes_all(actual));
        if !lifecycle::expected_matches(expected, actual, deleted) {
            return Err(AppendError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: lifecycle::actual_version(actual, deleted),
            });
        }
        // Decode metadata from the bytes every backend stores, so what is read back here is
        // what a backend reads back.
        let metadata = metadata
            .iter()
            .map(|bytes| Metadata::from_bytes(bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AppendError::Storage(format!("metadata does not decode: {e}").into()))?;
        let last_recorded_at = self.events.last().map(|e| e.recorded_at);
        let recorded_at = last_recorded_at.map_or_else(now_micros, |last| now_micros().max(last));
        let first_version = actual.map_or(0, |v| v + 1);
        let mut positions = Vec::with_capacity(events.len());
        for (i, (event, metadata)) in events.into_iter().zip(metadata).enumerate() {
            let position = self.events.len() as u64;
            let event_id = event.event_id.unwrap_or_else(Uuid::now_v7);
            self.events.push(RecordedEvent {
                event_id,
                stream_id: stream.clone(),
                stream_version: first_version + i as u64,
                position: Position(position),
                recorded_at,
                event_type: event.event_type,
                content_type: event.content_type,
                data: event.data,
                metadata,
            });
            self.ids.insert(event_id, position);
            self.streams
                .entry(stream.as_str().to_owned())
                .or_default()
                .push(position);
            positions.push(Position(position));
        }
        Ok(AppendResult {
            stream_version: first_version + positions.len() as u64 - 1,
            positions,
            replayed: false,
        })
    }

    /// The streams listings show, in name order, as readers see them: metastreams and
    /// streams without visible events are left out.
    fn listed_streams(&self) -> impl Iterator<Item = (&str, StreamInfo)> + '_ {
        self.streams
            .keys()
            .filter(|name| !name.starts_with(strata_core::METASTREAM_PREFIX))
            .filter_map(|name| {
                let stream = StreamId::new(name.as_str()).ok()?;
                let info = self.stream_info(&stream);
                info.exists.then_some((name.as_str(), info))
            })
    }

    /// The positions of `stream`'s events at or below `max_position`.
    fn visible_stream(&self, stream: &str, max_position: Option<Position>) -> &[u64] {
        let all = self.streams.get(stream).map_or(&[][..], |p| p);
        match max_position {
            Some(max) => &all[..all.partition_point(|p| *p <= max.0)],
            None => all,
        }
    }

    fn read_stream(
        &self,
        stream: &StreamId,
        options: &ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let positions = self.visible_stream(stream.as_str(), options.max_position);
        let Some(last_version) = (positions.len() as u64).checked_sub(1) else {
            return Err(ReadError::StreamNotFound(stream.clone()));
        };
        let versions: Box<dyn Iterator<Item = u64>> = match options.direction {
            Direction::Forward => {
                let from = options.from_version.unwrap_or(0);
                Box::new(from..=last_version)
            }
            Direction::Backward => {
                let from = options
                    .from_version
                    .map_or(last_version, |v| v.min(last_version));
                Box::new((0..=from).rev())
            }
        };
        Ok(versions
            .map(|v| positions[v as usize])
            .filter(|p| !self.removed.contains(p))
            .take(options.limit)
            .map(|p| self.events[p as usize].clone())
            .collect())
    }

    fn read_all(&self, options: &ReadAllOptions) -> AllPage {
        let mut seen: HashMap<StreamId, Visibility> = HashMap::new();
        let mut passes = |event: &RecordedEvent| {
            options.filter.matches(event)
                && seen
                    .entry(event.stream_id.clone())
                    .or_insert_with(|| self.visibility(&event.stream_id))
                    .shows_event(event)
        };
        // Positions below `end` are visible.
        let len = self.events.len() as u64;
        let end = options
            .max_position
            .map_or(len, |m| m.0.saturating_add(1).min(len));
        let mut events = Vec::new();
        let mut examined = 0usize;
        let keep_going = |events: &Vec<RecordedEvent>, examined: usize| {
            events.len() < options.limit && examined < limits::READ_SCAN_MAX_EVENTS
        };
        match options.direction {
            Direction::Forward => {
                let from = options.from.unwrap_or(Position::START);
                let mut position = from.0;
                let mut last_examined = None;
                while position < end && keep_going(&events, examined) {
                    let event = &self.events[position as usize];
                    examined += 1;
                    last_examined = Some(position);
                    if !self.removed.contains(&position) && passes(event) {
                        events.push(event.clone());
                    }
                    position += 1;
                }
                AllPage {
                    events,
                    next: Some(last_examined.map_or(from, |p| Position(p + 1))),
                    is_end: position >= end,
                }
            }
            Direction::Backward => {
                let Some(top) = end.checked_sub(1) else {
                    return AllPage {
                        events,
                        next: None,
                        is_end: true,
                    };
                };
                let start = options.from.map_or(top, |f| f.0.min(top));
                let mut position = Some(start);
                while let Some(p) = position {
                    if !keep_going(&events, examined) {
                        break;
                    }
                    let event = &self.events[p as usize];
                    examined += 1;
                    if !self.removed.contains(&p) && passes(event) {
                        events.push(event.clone());
                    }
                    position = p.checked_sub(1);
                }
                AllPage {
                    events,
                    next: position.map(Position),
                    is_end: position.is_none(),
                }
            }
        }
    }

    fn stream_info(&self, stream: &StreamId) -> StreamInfo {
        let positions = self.visible_stream(stream.as_str(), None);
        let visibility = self.visibility(stream);
        let events = || positions.iter().map(|p| &self.events[*p as usize]);
        let first = events().find(|e| visibility.shows_event(e));
        let last = positions.last().map(|p| &self.events[*p as usize]);
        let info = StreamInfo {
            stream_id: stream.clone(),
            exists: !positions.is_empty(),
            current_version: last.map(|e| e.stream_version),
            event_count: positions.len() as u64,
            first_recorded_at: first.map(|e| e.recorded_at),
            last_recorded_at: last.map(|e| e.recorded_at),
            last_position: last.map(|e| e.position),
            tombstoned: false,
        };
        lifecycle::visible_info(info, visibility)
    }
}

/// Takes one page of `items` (already in name order) after `options.after`, with
/// `options.prefix`, and says where the next page starts.
fn page_of<T>(items: impl Iterator<Item = (String, T)>, options: &ListOptions) -> Page<T> {
    let mut selected = items
        .filter(|(name, _)| options.after.as_deref().is_none_or(|a| name.as_str() > a))
        .filter(|(name, _)| {
            options
                .prefix
                .as_deref()
                .is_none_or(|p| name.starts_with(p))
        });
    let mut page = Vec::new();
    let mut last_name = None;
    for (name, item) in selected.by_ref().take(options.limit) {
        page.push(item);
        last_name = Some(name);
    }
    let more = selected.next().is_some();
    Page {
        items: page,
        next: if more { last_name } else { None },
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        let metadata = validate_append(&events)?;
        lifecycle::check_reserved(stream, &events)?;
        let result = self.inner.lock().append(stream, expected, events, metadata);
        if result.is_ok() {
            self.notify();
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        options.validate()?;
        let (visibility, last) = {
            let inner = self.inner.lock();
            (
                inner.visibility(stream),
                inner.stream_version(stream.as_str()),
            )
        };
        lifecycle::read_visible(stream, visibility, last, options, |options| {
            std::future::ready(self.inner.lock().read_stream(stream, &options))
        })
        .await
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<AllPage, ReadError> {
        options.validate()?;
        Ok(self.inner.lock().read_all(&options))
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, ReadError> {
        Ok(self.inner.lock().stream_info(stream))
    }

    async fn list_streams(&self, options: ListOptions) -> Result<Page<StreamSummary>, ReadError> {
        options.validate()?;
        let inner = self.inner.lock();
        let summaries = inner.listed_streams().map(|(name, info)| {
            let summary = StreamSummary {
                stream_id: name.to_owned(),
                category: strata_core::category_of(name).to_owned(),
                event_count: info.event_count,
                last_position: info.last_position.unwrap_or_default(),
            };
            (name.to_owned(), summary)
        });
        Ok(page_of(summaries, &options))
    }

    async fn list_categories(
        &self,
        options: ListOptions,
    ) -> Result<Page<CategorySummary>, ReadError> {
        options.validate()?;
        let inner = self.inner.lock();
        let mut categories: BTreeMap<String, CategorySummary> = BTreeMap::new();
        // As stored, like the other backends (whose category counts come from their
        // indexes): deleted streams count, and tombstoned ones until scavenged (which removes
        // their first event); a stream as many events as its next version; metastreams do
        // not count.
        for (name, positions) in inner.streams.iter().filter(|(name, positions)| {
            !name.starts_with(strata_core::METASTREAM_PREFIX)
                && !positions.first().is_some_and(|p| inner.removed.contains(p))
        }) {
            let category = strata_core::category_of(name);
            let summary =
                categories
                    .entry(category.to_owned())
                    .or_insert_with(|| CategorySummary {
                        category: category.to_owned(),
                        stream_count: 0,
                        event_count: 0,
                    });
            summary.stream_count += 1;
            summary.event_count += positions.len() as u64;
        }
        Ok(page_of(categories.into_iter(), &options))
    }

    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>, ReadError> {
        let inner = self.inner.lock();
        // recorded_at never decreases in position order, so this is a binary search.
        let after = inner.events.partition_point(|e| e.recorded_at <= at) as u64;
        // The last stored one: a scavenge may have removed the ones after it.
        Ok((0..after)
            .rev()
            .find(|p| !inner.removed.contains(p))
            .map(Position))
    }

    async fn head(&self) -> Result<Option<Position>, ReadError> {
        let inner = self.inner.lock();
        Ok((inner.events.len() as u64).checked_sub(1).map(Position))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn scavenge(&self, progress: ProgressFn<'_>) -> Result<ScavengeReport, ScavengeError> {
        let started = std::time::Instant::now();
        let done = self.inner.lock().scavenge();
        progress(done);
        Ok(ScavengeReport {
            progress: done,
            elapsed: started.elapsed(),
        })
    }

    async fn subscribe(
        &self,
        target: SubscriptionTarget,
        from: SubscribeFrom,
    ) -> Result<Subscription, ReadError> {
        Subscription::start(Arc::new(self.clone()), target, from).await
    }
}

#[async_trait]
impl SnapshotStore for MemoryStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), SnapshotError> {
        snapshot.validate()?;
        self.inner
            .lock()
            .snapshots
            .entry(snapshot.stream_id.as_str().to_owned())
            .or_default()
            .insert(snapshot.stream_version, snapshot);
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        let inner = self.inner.lock();
        let Some(snapshots) = inner.snapshots.get(stream.as_str()) else {
            return Ok(None);
        };
        Ok(snapshots
            .range(..=max_version.unwrap_or(u64::MAX))
            .rev()
            .map(|(_, s)| s)
            .find(|s| s.schema_version == schema_version)
            .cloned())
    }

    async fn delete_snapshots(&self, stream: &StreamId) -> Result<u64, SnapshotError> {
        let removed = self.inner.lock().snapshots.remove(stream.as_str());
        Ok(removed.map_or(0, |s| s.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::Filter;

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    fn ev(t: &str) -> EventData {
        EventData::json(t, &serde_json::json!({})).unwrap()
    }

    #[tokio::test]
    async fn positions_start_at_zero_and_are_dense() {
        let store = MemoryStore::new();
        let a = store
            .append(&sid("a-1"), ExpectedVersion::Any, vec![ev("A"), ev("B")])
            .await
            .unwrap();
        let b = store
            .append(&sid("b-1"), ExpectedVersion::Any, vec![ev("C")])
            .await
            .unwrap();
        assert_eq!(a.positions, vec![Position(0), Position(1)]);
        assert_eq!(b.positions, vec![Position(2)]);
        assert_eq!(store.head().await.expect("subscribe"), Some(Position(2)));
    }

    #[tokio::test]
    async fn failed_append_does_not_notify() {
        let store = MemoryStore::new();
        let mut changes = store.changes();
        changes.borrow_and_update();
        let err = store
            .append(&sid("a-1"), ExpectedVersion::Exact(3), vec![ev("A")])
            .await
            .unwrap_err();
        assert!(err.is_wrong_expected_version());
        assert!(!changes.has_changed().unwrap());
        store
            .append(&sid("a-1"), ExpectedVersion::Any, vec![ev("A")])
            .await
            .unwrap();
        assert!(changes.has_changed().unwrap());
    }

    #[tokio::test]
    async fn scan_bound_sets_next_exactly() {
        let store = MemoryStore::new();
        let batch = vec![ev("Noise"); limits::APPEND_EVENTS_MAX];
        for _ in 0..(limits::READ_SCAN_MAX_EVENTS / limits::APPEND_EVENTS_MAX) {
            store
                .append(&sid("noise-1"), ExpectedVersion::Any, batch.clone())
                .await
                .unwrap();
        }
        store
            .append(&sid("signal-1"), ExpectedVersion::Any, vec![ev("Signal")])
            .await
            .unwrap();
        let filter = Filter::default().event_types(["Signal"]);
        let page = store
            .read_all(ReadAllOptions::forward().filter(filter.clone()))
            .await
            .unwrap();
        assert!(page.events.is_empty());
        assert!(!page.is_end);
        assert_eq!(
            page.next,
            Some(Position(limits::READ_SCAN_MAX_EVENTS as u64))
        );
        let page = store
            .read_all(
                ReadAllOptions::forward()
                    .filter(filter.clone())
                    .from(page.next.unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(page.events.len(), 1);
        assert!(page.is_end);
        let back = store
            .read_all(ReadAllOptions::backward().filter(Filter::default().event_types(["None"])))
            .await
            .unwrap();
        assert!(back.events.is_empty());
        assert!(!back.is_end);
        assert_eq!(back.next, Some(Position(0)));
    }

    /// The reference is exact where the trait allows slack: `is_end` is set on the page that
    /// examined the newest (forward) or oldest (backward) visible event.
    #[tokio::test]
    async fn is_end_exactly_at_the_last_visible_event() {
        let store = MemoryStore::new();
        for i in 0..5 {
            store
                .append(&sid(&format!("s-{i}")), ExpectedVersion::Any, vec![ev("A")])
                .await
                .unwrap();
        }
        let page = |o: ReadAllOptions| {
            let store = store.clone();
            async move { store.read_all(o).await.expect("subscribe") }
        };
        let p = page(ReadAllOptions::forward().limit(5)).await;
        assert_eq!(
            (p.events.len(), p.next, p.is_end),
            (5, Some(Position(5)), true)
        );
        let p = page(ReadAllOptions::forward().limit(4)).await;
        assert_eq!(
            (p.events.len(), p.next, p.is_end),
            (4, Some(Position(4)), false)
        );
        let p = page(ReadAllOptions::forward().limit(2).max_position(Position(1))).await;
        assert_eq!(
            (p.events.len(), p.next, p.is_end),
            (2, Some(Position(2)), true)
        );
        let p = page(ReadAllOptions::backward().limit(5)).await;
        assert_eq!((p.events.len(), p.next, p.is_end), (5, None, true));
        let p = page(ReadAllOptions::backward().limit(4)).await;
        assert_eq!(
            (p.events.len(), p.next, p.is_end),
            (4, Some(Position(0)), false)
        );
        let f = Filter::default().stream_prefix("s-3");
        let p = page(ReadAllOptions::forward().limit(1).filter(f)).await;
        assert_eq!(
            (p.events.len(), p.next, p.is_end),
            (1, Some(Position(4)), false)
        );
    }

    #[tokio::test]
    async fn limit_zero_examines_nothing() {
        let store = MemoryStore::new();
        store
            .append(&sid("a-1"), ExpectedVersion::Any, vec![ev("A"), ev("B")])
            .await
            .unwrap();
        let fwd = store
            .read_all(ReadAllOptions::forward().limit(0).from(Position(1)))
            .await
            .unwrap();
        assert_eq!(
            (fwd.events.len(), fwd.next, fwd.is_end),
            (0, Some(Position(1)), false)
        );
        let back = store
            .read_all(ReadAllOptions::backward().limit(0))
            .await
            .unwrap();
        assert_eq!(
            (back.events.len(), back.next, back.is_end),
            (0, Some(Position(1)), false)
        );
    }
}
