//! The `EventStore` trait every backend implements.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{AppendError, ReadError};
use crate::event::{AppendResult, EventData, ExpectedVersion, Position, RecordedEvent, Timestamp};
use crate::lifecycle::{self, StreamMetadata, StreamMetadataRecord};
use crate::options::{
    ListOptions, ReadAllOptions, ReadStreamOptions, SubscribeFrom, SubscriptionTarget,
};
use crate::scavenge::{ProgressFn, ScavengeError, ScavengeReport};
use crate::stream_id::StreamId;
use crate::subscription::Subscription;

/// One page of a `$all` read.
#[derive(Debug, Clone, PartialEq)]
pub struct AllPage {
    /// The events, in the read's direction.
    pub events: Vec<RecordedEvent>,
    /// Where the next read in the same direction starts (inclusive): just past the last
    /// position this read examined, so every matching event between the read's start and
    /// `next` was returned. `None` when a backward read reached the start.
    pub next: Option<Position>,
    /// Whether the read reached the newest stored event (forward) or the oldest (backward):
    /// no event past `next` passes the filter right now. A backend may examine less than it
    /// could and report `false`; it never reports `true` while a match remains.
    pub is_end: bool,
}

/// What is known about one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamInfo {
    /// The stream.
    pub stream_id: StreamId,
    /// Whether it has any event readers can see.
    pub exists: bool,
    /// The version of its last stored event. After a soft delete it stays where it was: an
    /// append that re-creates the stream continues after it.
    pub current_version: Option<u64>,
    /// How many events readers can see (before `maxAge`, which is applied as events are
    /// read).
    pub event_count: u64,
    /// When its first event was recorded.
    pub first_recorded_at: Option<Timestamp>,
    /// When its last event was recorded.
    pub last_recorded_at: Option<Timestamp>,
    /// The global position of its last event.
    pub last_position: Option<Position>,
    /// Whether it is tombstoned (it can never be written again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tombstoned: bool,
}

/// One stream in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamSummary {
    /// The stream.
    pub stream_id: String,
    /// Its category.
    pub category: String,
    /// How many events it has.
    pub event_count: u64,
    /// The global position of its last event.
    pub last_position: Position,
}

/// One category in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CategorySummary {
    /// The category.
    pub category: String,
    /// How many streams it has.
    pub stream_count: u64,
    /// How many events its streams hold.
    pub event_count: u64,
}

/// A page of a listing, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The entries.
    pub items: Vec<T>,
    /// Pass as [`ListOptions::after`] for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// An event store. Every backend (the embedded log, PostgreSQL, the in-memory reference)
/// implements this and passes the same conformance suite.
///
/// ```
/// # async fn demo(store: &dyn strata_core::EventStore) -> Result<(), Box<dyn std::error::Error>> {
/// use strata_core::{EventData, ExpectedVersion, ReadStreamOptions, StreamId};
/// let stream = StreamId::new("account-123")?;
/// let opened = EventData::json("AccountOpened", &serde_json::json!({"initialBalance": 100}))?;
/// let result = store.append(&stream, ExpectedVersion::NoStream, vec![opened]).await?;
/// assert_eq!(result.stream_version, 0);
/// let events = store.read_stream(&stream, ReadStreamOptions::forward()).await?;
/// assert_eq!(events[0].event_type, "AccountOpened");
/// # Ok(()) }
/// ```
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if the stream is at `expected`. Returns once the
    /// events are durable.
    ///
    /// Retrying an acknowledged append succeeds again without writing duplicates: when the
    /// first event's id is stored, and every event of the append is stored in this stream at
    /// consecutive versions with the same id, event type and data (and, for `Exact(v)`, the
    /// first at `v + 1`; for `NoStream`, at 0), the original result is returned. Any other
    /// reuse of a stored id is [`AppendError::EventIdConflict`]. Metadata is not compared.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, AppendError>;

    /// Reads events of one stream. A stream with no events is [`ReadError::StreamNotFound`].
    async fn read_stream(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError>;

    /// Reads the global order, optionally filtered.
    async fn read_all(&self, options: ReadAllOptions) -> Result<AllPage, ReadError>;

    /// What is known about one stream (also for a stream that does not exist).
    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, ReadError>;

    /// Streams in name order, paged.
    async fn list_streams(&self, options: ListOptions) -> Result<Page<StreamSummary>, ReadError>;

    /// Categories in name order, paged.
    async fn list_categories(
        &self,
        options: ListOptions,
    ) -> Result<Page<CategorySummary>, ReadError>;

    /// The position of the last event recorded at or before `at`; `None` when there is none.
    /// With [`ReadStreamOptions::max_position`] this answers "what was the state then?".
    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>, ReadError>;

    /// The position of the newest event readers can see; `None` when the store is empty.
    async fn head(&self) -> Result<Option<Position>, ReadError>;

    /// The head as readers see it at this moment, without waiting for events to become
    /// readable: unlike [`head`](Self::head), not for this process's own appends either (a
    /// PostgreSQL store waits up to a second for them while a transaction elsewhere holds the
    /// watermark). For probes that must answer fast, such as `/ready`. Defaults to `head`.
    async fn head_now(&self) -> Result<Option<Position>, ReadError> {
        self.head().await
    }

    /// Gauges and counters only this backend has, in the Prometheus text format, for a
    /// server's `/metrics` (PostgreSQL: the `$all` watermark and the transaction holding it).
    /// Empty by default.
    async fn backend_metrics(&self) -> Result<String, ReadError> {
        Ok(String::new())
    }

    /// Whether the store accepts appends right now: `Ok(())`, or the error an append would get
    /// (the embedded store answers [`AppendError::Stopped`] once an I/O error on its write path
    /// has stopped it, until it is reopened). Cheap and without I/O, for readiness probes; an
    /// `Ok` is no promise that the next append succeeds. The default says yes.
    fn check_writable(&self) -> Result<(), AppendError> {
        Ok(())
    }

    /// A signal that changes after new events become readable. Subscriptions wait on it.
    fn changes(&self) -> watch::Receiver<u64>;

    /// A stream's metadata and its version ([`crate::lifecycle`]). A stream without metadata
    /// has the default metadata and no version.
    async fn stream_metadata(&self, stream: &StreamId) -> Result<StreamMetadataRecord, ReadError> {
        lifecycle::stream_metadata(self, stream).await
    }

    /// Replaces a stream's metadata if its version is `expected` (optimistic concurrency on
    /// the metadata, like a stream's). `truncateBefore` only moves forward and never past the
    /// stream's next version, and metadata without it keeps the stream's; `tombstoned` is set
    /// only by [`tombstone_stream`](Self::tombstone_stream).
    /// Returns where the metadata event was appended.
    async fn set_stream_metadata(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<AppendResult, AppendError> {
        lifecycle::set_stream_metadata(self, stream, expected, metadata).await
    }

    /// Soft-deletes a stream at `expected`: it reads as not found, and appending again
    /// re-creates it with versions continuing after its last. A stream without events is
    /// [`AppendError::StreamNotFound`]. Returns where the `$streamDeleted` event was appended
    /// (in the metastream).
    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, AppendError> {
        lifecycle::delete_stream(self, stream, expected).await
    }

    /// Tombstones a stream at `expected` (a hard delete): it can never be written again, and
    /// reading it fails with [`ReadError::StreamTombstoned`]. Returns where the tombstone was
    /// appended in the stream.
    async fn tombstone_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, AppendError> {
        lifecycle::tombstone_stream(self, stream, expected).await
    }

    /// Hides the events of a stream below version `before` (at most its next version).
    /// Truncation only moves forward.
    async fn truncate_stream(
        &self,
        stream: &StreamId,
        before: u64,
    ) -> Result<AppendResult, AppendError> {
        lifecycle::truncate_stream(self, stream, before).await
    }

    /// Removes for good the events readers can no longer see ([`crate::scavenge`]), reporting
    /// its progress to `progress` as it goes. One scavenge of a store runs at a time
    /// ([`ScavengeError::AlreadyRunning`]); a store that cannot scavenge answers
    /// [`ScavengeError::Unsupported`].
    async fn scavenge(&self, progress: ProgressFn<'_>) -> Result<ScavengeReport, ScavengeError> {
        let _ = progress;
        Err(ScavengeError::Unsupported)
    }

    /// Follows `target` from `from`: catches up from storage, then delivers new events as they
    /// are appended, with no gap and no duplicate at the seam. The starting point is fixed
    /// when this returns: with [`SubscribeFrom::End`], every event appended after that is
    /// delivered. Backends implement it as
    /// `Subscription::start(Arc::new(self.clone()), target, from).await`.
    async fn subscribe(
        &self,
        target: SubscriptionTarget,
        from: SubscribeFrom,
    ) -> Result<Subscription, ReadError>;
}
