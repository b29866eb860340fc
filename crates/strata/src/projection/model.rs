//! What every projection runner shares: the status, mode and progress it reports, and
//! [`ProjectedStore`], which applies inline projections after appends.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use strata_core::{
    AllPage, AppendError, AppendResult, BackendError, CategorySummary, EventData, EventStore,
    ExpectedVersion, ListOptions, Page, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, Snapshot, SnapshotAndEvents, SnapshotError, SnapshotStore, StreamId, StreamInfo,
    StreamSummary, SubscribeFrom, Subscription, SubscriptionTarget, Timestamp, Uuid,
};
use tokio::sync::watch;

use super::ProjectionError;

/// How a projection is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProjectionMode {
    /// Applied by [`ProjectedStore::append`] before the caller is answered.
    Inline,
    /// Applied by a background task.
    Async,
}

/// What a projection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProjectionStatus {
    /// Applying events as they come.
    Running,
    /// Stopped on request; [`Projections::resume`](super::Projections::resume) continues from the checkpoint.
    Paused,
    /// A fresh copy is being built; the current one keeps serving (and keeps running).
    Rebuilding,
    /// Stopped on an event its handler kept failing on; see the error.
    Failed,
}

impl ProjectionMode {
    /// The mode as the API and the CLI spell it: `inline` or `async`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectionMode::Inline => "inline",
            ProjectionMode::Async => "async",
        }
    }
}

impl std::fmt::Display for ProjectionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ProjectionStatus {
    /// The status as the API and the CLI spell it: `running`, `paused`, `rebuilding`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectionStatus::Running => "running",
            ProjectionStatus::Paused => "paused",
            ProjectionStatus::Rebuilding => "rebuilding",
            ProjectionStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ProjectionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One projection as [`Projections::list`](super::Projections::list) shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionInfo {
    /// Its name.
    pub name: String,
    /// Inline or async.
    pub mode: ProjectionMode,
    /// What it is doing.
    pub status: ProjectionStatus,
    /// The last global position it has passed (`None`: nothing yet).
    pub checkpoint: Option<Position>,
    /// Positions between the checkpoint and the store's head.
    pub lag_events: u64,
    /// Age of the oldest event it has not passed yet, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// The error it stopped on.
    pub last_error: Option<String>,
    /// The position of the event it stopped on.
    pub error_position: Option<Position>,
    /// The id of the event it stopped on.
    pub error_event_id: Option<String>,
}

/// How far a rebuild has come, reported after every batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildProgress {
    /// The projection.
    pub projection: String,
    /// Events the handler applied so far.
    pub applied_events: u64,
    /// The last position the fresh copy has passed.
    pub position: Option<Position>,
    /// The store's head when this was reported.
    pub head: Option<Position>,
    /// Positions left before the fresh copy catches up with `head`.
    pub remaining_events: u64,
    /// Positions passed per second since the rebuild started.
    pub events_per_second: f64,
    /// Estimated time left at that rate.
    pub eta: Option<Duration>,
    /// Time since the rebuild started.
    pub elapsed: Duration,
}

/// An event store whose appends apply the inline projections before they return: the
/// embedded store's inline mode. Use it (for example in a [`crate::Repository`]) in place of
/// the store it wraps.
///
/// The append is durable before the projections run. If they fail, the append still
/// succeeds (its events are stored), the projection is marked failed, and
/// [`Projections::wait_for`](super::Projections::wait_for) reports it; if the process dies in between, registering the
/// projection again catches it up.
#[cfg(feature = "sqlite")]
#[derive(Clone)]
pub struct ProjectedStore<S, P = super::Projections> {
    inner: S,
    projections: P,
}

/// An event store whose appends apply the inline projections before they return (see the
/// `sqlite` feature's documentation of this type).
#[cfg(not(feature = "sqlite"))]
#[derive(Clone)]
pub struct ProjectedStore<S, P> {
    inner: S,
    projections: P,
}

/// Why [`ProjectedStore::append_projected`] did not fully succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectedAppendError {
    /// The append failed; nothing was written and no projection ran.
    #[error(transparent)]
    Append(AppendError),
    /// The append is durable but an inline projection failed on it (and stopped as failed).
    #[error("the append is stored (up to position {}) but an inline projection failed: {error}", result.last_position().0)]
    Projection {
        /// The append's result.
        result: AppendResult,
        /// The projection's error.
        error: ProjectionError,
    },
    /// An inline projection failed on the append's events (or on events before them it had
    /// to apply first) inside the append's transaction, so the append was rolled back with the
    /// read-model change: nothing was written, the projection's checkpoint did not move, and
    /// the projection is not marked failed. Only from [`super::PgProjections`] in its
    /// transactional mode ([`super::PgProjections::transactional`]).
    #[error("an inline projection failed, so the append was rolled back: {projection} at event {event_id}: {reason}")]
    RolledBack {
        /// The projection whose handler failed.
        projection: String,
        /// The event it failed on.
        event_id: Uuid,
        /// The handler's error.
        reason: String,
    },
}

/// Projections an append applies before it returns: [`Projections`](super::Projections) (SQLite read models) and
/// [`super::PgProjections`] (PostgreSQL read models).
#[async_trait]
pub trait InlineProjections: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// Applies every inline projection up to `position`.
    async fn apply_inline(&self, position: Position) -> Result<(), ProjectionError>;

    /// Appends to `store` and applies the inline projections: what
    /// [`ProjectedStore::append_projected`] runs. The default appends, then calls
    /// [`InlineProjections::apply_inline`]; [`super::PgProjections`] in its transactional mode
    /// does both in one PostgreSQL transaction.
    async fn append_projected(
        &self,
        store: &dyn EventStore,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, ProjectedAppendError> {
        append_then_apply(self, store, stream, expected, events).await
    }
}

/// The default [`InlineProjections::append_projected`]: append (durable), then apply.
pub(crate) async fn append_then_apply<P: InlineProjections>(
    projections: &P,
    store: &dyn EventStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<EventData>,
) -> Result<AppendResult, ProjectedAppendError> {
    let result = store
        .append(stream, expected, events)
        .await
        .map_err(ProjectedAppendError::Append)?;
    match projections.apply_inline(result.last_position()).await {
        Ok(()) => Ok(result),
        Err(error) => Err(ProjectedAppendError::Projection { result, error }),
    }
}

impl<S, P: std::fmt::Debug> std::fmt::Debug for ProjectedStore<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectedStore")
            .field("projections", &self.projections)
            .finish_non_exhaustive()
    }
}

impl<S: EventStore + Clone, P: InlineProjections> ProjectedStore<S, P> {
    /// Wraps `inner`; `projections` must read the same store.
    pub fn new(inner: S, projections: P) -> Self {
        ProjectedStore { inner, projections }
    }

    /// Appends like [`EventStore::append`] and says whether the inline projections applied
    /// the events: the append is durable either way, so a projection failure carries its
    /// result.
    pub async fn append_projected(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, ProjectedAppendError> {
        self.projections
            .append_projected(&self.inner, stream, expected, events)
            .await
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The projections.
    pub fn projections(&self) -> &P {
        &self.projections
    }
}

#[async_trait]
impl<S: EventStore + Clone, P: InlineProjections> EventStore for ProjectedStore<S, P> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        match self
            .projections
            .append_projected(&self.inner, stream, expected, events)
            .await
        {
            Ok(result) => Ok(result),
            Err(ProjectedAppendError::Append(e)) => Err(e),
            Err(ProjectedAppendError::Projection { result, error }) => {
                tracing::error!(error = %error, "inline projection failed after a durable append");
                Ok(result)
            }
            // Nothing was written: the caller must not believe the append happened.
            Err(e) => Err(AppendError::Storage(BackendError::with_source(
                e.to_string(),
                e,
            ))),
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_stream(stream, options).await
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<AllPage, ReadError> {
        self.inner.read_all(options).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, ReadError> {
        self.inner.stream_info(stream).await
    }

    async fn list_streams(&self, options: ListOptions) -> Result<Page<StreamSummary>, ReadError> {
        self.inner.list_streams(options).await
    }

    async fn list_categories(
        &self,
        options: ListOptions,
    ) -> Result<Page<CategorySummary>, ReadError> {
        self.inner.list_categories(options).await
    }

    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>, ReadError> {
        self.inner.position_at(at).await
    }

    async fn head(&self) -> Result<Option<Position>, ReadError> {
        self.inner.head().await
    }

    async fn head_now(&self) -> Result<Option<Position>, ReadError> {
        self.inner.head_now().await
    }

    async fn backend_metrics(&self) -> Result<String, ReadError> {
        self.inner.backend_metrics().await
    }

    fn check_writable(&self) -> Result<(), AppendError> {
        self.inner.check_writable()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    async fn subscribe(
        &self,
        target: SubscriptionTarget,
        from: SubscribeFrom,
    ) -> Result<Subscription, ReadError> {
        self.inner.subscribe(target, from).await
    }
}

#[async_trait]
impl<S: SnapshotStore + Clone, P: InlineProjections> SnapshotStore for ProjectedStore<S, P> {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), SnapshotError> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        self.inner
            .load_snapshot(stream, schema_version, max_version)
            .await
    }

    async fn delete_snapshots(&self, stream: &StreamId) -> Result<u64, SnapshotError> {
        self.inner.delete_snapshots(stream).await
    }

    async fn load_snapshot_and_events(
        &self,
        stream: &StreamId,
        schema_version: u32,
        limit: usize,
    ) -> Result<SnapshotAndEvents, SnapshotError> {
        self.inner
            .load_snapshot_and_events(stream, schema_version, limit)
            .await
    }
}
