//! Snapshot storage: every backend keeps aggregate snapshots beside its events.

use async_trait::async_trait;

use crate::error::{InvalidInput, LimitError};
use crate::event::{RecordedEvent, Timestamp};
use crate::limits;
use crate::stream_id::StreamId;

/// A stored snapshot of an aggregate's state after applying its stream up to
/// `stream_version` (inclusive).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The version of the last event the state includes.
    pub stream_version: u64,
    /// The schema version of the state's encoding, chosen by the aggregate. A loader ignores
    /// snapshots whose schema version it does not expect.
    pub schema_version: u32,
    /// The encoded state (JSON by convention).
    pub data: Vec<u8>,
    /// When the snapshot was taken.
    pub taken_at: Timestamp,
}

impl Snapshot {
    /// Checks the snapshot against the limits.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        LimitError::check(
            || "snapshot bytes".to_owned(),
            limits::SNAPSHOT_MAX_BYTES,
            self.data.len(),
        )?;
        Ok(())
    }
}

/// Why a snapshot operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The request was malformed.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The snapshot is over a limit.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The backend could not be reached.
    #[error("the store is unavailable: {0}")]
    Unavailable(crate::error::BackendError),
    /// The backend failed, or a stored snapshot failed its checks.
    #[error("snapshot storage error: {0}")]
    Storage(crate::error::BackendError),
}

/// Where snapshots live. Snapshots are derived data: they can be deleted at any time and
/// rebuilt by replaying the stream.
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// Stores `snapshot`, replacing one at the same stream and version. Durable on return.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), SnapshotError>;

    /// The newest snapshot of `stream` at or below `max_version` (any version when `None`)
    /// whose schema version is `schema_version`.
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, SnapshotError>;

    /// Deletes every snapshot of `stream`. Returns how many there were.
    async fn delete_snapshots(&self, stream: &StreamId) -> Result<u64, SnapshotError>;

    /// The newest snapshot of `stream` whose schema version is `schema_version` (as
    /// [`SnapshotStore::load_snapshot`] with no version bound) and, where the backend reads
    /// them in the same round trip, the first `limit` events of the stream after it: what a
    /// repository loading an aggregate asks for first. The default reads the snapshot alone
    /// (`events: None`), leaving the events to the caller; PostgreSQL reads both in one query.
    /// `limit` is at most [`limits::READ_PAGE_MAX_EVENTS`] (else [`SnapshotError::Limit`]).
    async fn load_snapshot_and_events(
        &self,
        stream: &StreamId,
        schema_version: u32,
        limit: usize,
    ) -> Result<SnapshotAndEvents, SnapshotError> {
        SnapshotAndEvents::check_limit(limit)?;
        Ok(SnapshotAndEvents {
            snapshot: self.load_snapshot(stream, schema_version, None).await?,
            events: None,
        })
    }
}

/// What [`SnapshotStore::load_snapshot_and_events`] read.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotAndEvents {
    /// The newest snapshot of the schema version asked for, if there is one.
    pub snapshot: Option<Snapshot>,
    /// `Some`: the stream's first events after the snapshot's version (from version 0 without
    /// a snapshot), in version order, at most the limit asked for: fewer means there are no
    /// more; empty when there are none (the stream may not exist). `None`: the backend did not
    /// read them with the snapshot.
    pub events: Option<Vec<RecordedEvent>>,
}

impl SnapshotAndEvents {
    /// The limit every [`SnapshotStore::load_snapshot_and_events`] checks first: at most
    /// [`limits::READ_PAGE_MAX_EVENTS`] events, as a page of `read_stream`.
    pub fn check_limit(limit: usize) -> Result<(), SnapshotError> {
        LimitError::check(
            || "events read with a snapshot".to_owned(),
            limits::READ_PAGE_MAX_EVENTS,
            limit,
        )?;
        Ok(())
    }
}
