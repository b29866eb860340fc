//! The projection runner: inline application after appends, async background tasks,
//! pause / resume / reset, blue/green rebuilds, lag and read-your-writes waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::Connection;
use serde::Serialize;
use strata_core::{
    AllPage, AppendError, AppendResult, CategorySummary, EventData, EventStore, ExpectedVersion,
    Filter, ListOptions, Page, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, Snapshot, SnapshotError, SnapshotStore, StreamId, StreamInfo, StreamSummary,
    SubscribeFrom, Subscription, SubscriptionTarget, Timestamp, Uuid,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::sqlite::{self, BatchError, Target};
use super::{Projection, ProjectionError, SqliteReadModels};
use crate::limits;

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
    /// Stopped on request; [`Projections::resume`] continues from the checkpoint.
    Paused,
    /// A fresh copy is being built; the current one keeps serving (and keeps running).
    Rebuilding,
    /// Stopped on an event its handler kept failing on; see the error.
    Failed,
}

/// One projection as [`Projections::list`] shows it.
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

#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    pub through: Option<Position>,
    pub failed: Option<ProjectionError>,
}

#[derive(Default)]
struct Control {
    paused: bool,
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

struct Entry {
    projection: Arc<dyn Projection>,
    filter: Filter,
    mode: ProjectionMode,
    conn: Arc<StdMutex<Connection>>,
    /// Serialises the writers of the serving copy (the async task, inline appends, the end of
    /// a rebuild) so their read-then-apply steps do not interleave.
    apply_lock: tokio::sync::Mutex<()>,
    progress: watch::Sender<Progress>,
    control: StdMutex<Control>,
    rebuilding: AtomicBool,
}

struct StepOutcome {
    applied: u64,
    checkpoint: Option<Position>,
    is_end: bool,
}

struct Inner {
    store: Arc<dyn EventStore>,
    models: SqliteReadModels,
    entries: RwLock<HashMap<String, Arc<Entry>>>,
}

/// Runs projections against one event store and one read-model database. Cheap to clone.
///
/// ```
/// # use strata::projection::*;
/// # use strata::{Filter, RecordedEvent};
/// # struct Counts;
/// # impl Projection for Counts {
/// #     fn name(&self) -> &str { "counts" }
/// #     fn filter(&self) -> Filter { Filter::default() }
/// #     fn tables(&self) -> &[&'static str] { &["counts"] }
/// #     fn setup(&self, sql: &Sql<'_>) -> Result<(), HandlerError> {
/// #         sql.execute_batch("CREATE TABLE {counts} (t TEXT PRIMARY KEY, n INTEGER)")
/// #     }
/// #     fn apply(&self, sql: &Sql<'_>, e: &RecordedEvent) -> Result<(), HandlerError> {
/// #         sql.execute("INSERT INTO {counts} VALUES (?1, 1) ON CONFLICT (t) DO UPDATE SET n = n + 1",
/// #             [e.event_type.as_str()])?; Ok(())
/// #     }
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use strata::{EventData, EventStore, ExpectedVersion, StreamId};
/// let dir = tempfile::tempdir().unwrap();
/// let store = strata_log::LogStore::open(dir.path().join("data")).unwrap();
/// let models = SqliteReadModels::next_to(dir.path().join("data")).unwrap();
/// let projections = Projections::new(Arc::new(store.clone()), models.clone());
/// projections.spawn(Counts).await.unwrap();
///
/// let stream = StreamId::new("order-1").unwrap();
/// let placed = EventData::json("OrderPlaced", &serde_json::json!({})).unwrap();
/// let written = store.append(&stream, ExpectedVersion::NoStream, vec![placed]).await.unwrap();
/// // Read your own write: wait until the projection has passed it.
/// projections.wait_for("counts", written.last_position(), Duration::from_secs(5)).await.unwrap();
/// let n: i64 = models.connect().unwrap()
///     .query_row("SELECT n FROM counts WHERE t = 'OrderPlaced'", [], |r| r.get(0)).unwrap();
/// assert_eq!(n, 1);
/// projections.shutdown().await;
/// # });
/// ```
#[derive(Clone)]
pub struct Projections {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Projections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projections")
            .field("read_models", &self.inner.models.path())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &StdMutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Projections {
    /// A runner for projections of `store` into `models`.
    pub fn new(store: Arc<dyn EventStore>, models: SqliteReadModels) -> Self {
        Projections {
            inner: Arc::new(Inner {
                store,
                models,
                entries: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The read-model database.
    pub fn read_models(&self) -> &SqliteReadModels {
        &self.inner.models
    }

    /// The event store the projections read.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// Registers an inline projection and catches it up with the log (the repair after a
    /// crash between an append and its inline application).
    pub async fn inline(&self, projection: impl Projection) -> Result<(), ProjectionError> {
        let entry = self
            .register(Arc::new(projection), ProjectionMode::Inline)
            .await?;
        if !lock(&entry.control).paused && entry.progress.borrow().failed.is_none() {
            self.catch_up_live(&entry, None).await?;
        }
        Ok(())
    }

    /// Registers an async projection and starts its background task from its checkpoint
    /// (unless it was left paused or failed).
    pub async fn spawn(&self, projection: impl Projection) -> Result<(), ProjectionError> {
        let entry = self
            .register(Arc::new(projection), ProjectionMode::Async)
            .await?;
        if !lock(&entry.control).paused && entry.progress.borrow().failed.is_none() {
            self.start_task(&entry);
        }
        Ok(())
    }

    async fn register(
        &self,
        projection: Arc<dyn Projection>,
        mode: ProjectionMode,
    ) -> Result<Arc<Entry>, ProjectionError> {
        let name = projection.name().to_owned();
        {
            let entries = self.entries_read();
            if entries.contains_key(&name) {
                return Err(ProjectionError::AlreadyRegistered(name));
            }
            if entries.len() >= limits::PROJECTIONS_MAX {
                return Err(ProjectionError::TooMany);
            }
        }
        let conn = self.inner.models.connect()?;
        let conn = Arc::new(StdMutex::new(conn));
        let meta = {
            let conn = conn.clone();
            let p = projection.clone();
            blocking(move || sqlite::ensure(&mut lock(&conn), p.as_ref())).await?
        };
        let failed = (meta.status == "failed").then(|| ProjectionError::Failed {
            projection: name.clone(),
            position: meta.error_position,
            event_id: meta
                .error_event_id
                .as_deref()
                .and_then(|s| Uuid::parse_str(s).ok()),
            reason: meta.last_error.clone().unwrap_or_default(),
        });
        let entry = Arc::new(Entry {
            filter: projection.filter(),
            projection,
            mode,
            conn,
            apply_lock: tokio::sync::Mutex::new(()),
            progress: watch::Sender::new(Progress {
                through: meta.checkpoint,
                failed,
            }),
            control: StdMutex::new(Control {
                paused: meta.status == "paused",
                ..Control::default()
            }),
            rebuilding: AtomicBool::new(false),
        });
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if entries.contains_key(&name) {
            return Err(ProjectionError::AlreadyRegistered(name));
        }
        entries.insert(name, entry.clone());
        Ok(entry)
    }

    fn entries_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Entry>>> {
        self.inner.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, ProjectionError> {
        self.entries_read()
            .get(name)
            .cloned()
            .ok_or_else(|| ProjectionError::UnknownProjection(name.to_owned()))
    }

    /// Runs `f` on the entry's connection on a blocking thread.
    async fn with_conn<T: Send + 'static>(
        entry: &Entry,
        f: impl FnOnce(&mut Connection, &dyn Projection) -> T + Send + 'static,
    ) -> T {
        let conn = entry.conn.clone();
        let p = entry.projection.clone();
        blocking(move || f(&mut lock(&conn), p.as_ref())).await
    }

    /// Reads one page after the checkpoint of `target` and applies it (with retries).
    async fn step(&self, entry: &Entry, target: Target) -> Result<StepOutcome, ProjectionError> {
        let checkpoint =
            Self::with_conn(entry, move |c, p| sqlite::checkpoint(c, p.name(), target)).await?;
        let from = checkpoint.map_or(Position::START, |p| Position(p.0 + 1));
        let page: AllPage = self
            .inner
            .store
            .read_all(
                ReadAllOptions::forward()
                    .from(from)
                    .limit(limits::PROJECTION_BATCH_MAX_EVENTS)
                    .filter(entry.filter.clone()),
            )
            .await?;
        // Every matching event before `next` was returned, so the checkpoint may move to
        // just before it even past events the filter skipped: `wait_for` works for any
        // position, not only the projection's own events.
        let scanned = page
            .next
            .and_then(|n| n.0.checked_sub(1))
            .map(Position)
            .filter(|s| *s >= from);
        let applied = page.events.len() as u64;
        let checkpoint = self
            .apply_with_retry(entry, target, Arc::new(page.events), scanned)
            .await?
            .or(checkpoint);
        Ok(StepOutcome {
            applied,
            checkpoint,
            is_end: page.is_end,
        })
    }

    async fn apply_with_retry(
        &self,
        entry: &Entry,
        target: Target,
        events: Arc<Vec<RecordedEvent>>,
        scanned: Option<Position>,
    ) -> Result<Option<Position>, ProjectionError> {
        let apply = |range: std::ops::Range<usize>, scanned: Option<Position>| {
            let events = events.clone();
            Self::with_conn(entry, move |c, p| {
                sqlite::apply_batch(c, p, target, &events[range], scanned)
            })
        };
        let mut start = 0;
        loop {
            let error = match apply(start..events.len(), scanned).await {
                Ok(checkpoint) => return Ok(checkpoint),
                Err(BatchError::Db(e)) => return Err(e),
                Err(BatchError::Handler { index, error }) => {
                    let failing = start + index;
                    if index > 0 {
                        // Commit the events before the failing one, so a resume starts at it.
                        apply(start..failing, None).await.map_err(batch_error)?;
                    }
                    start = failing;
                    error
                }
            };
            let event = &events[start];
            let mut last = error;
            let mut backoff = limits::PROJECTION_RETRY_BACKOFF_MS_INITIAL;
            let mut recovered = false;
            for attempt in 1..=limits::PROJECTION_HANDLER_RETRIES {
                tracing::warn!(
                    projection = entry.projection.name(),
                    position = event.position.0,
                    event_id = %event.event_id,
                    attempt,
                    error = %last,
                    "projection handler failed; retrying"
                );
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(limits::PROJECTION_RETRY_BACKOFF_MS_MAX);
                match apply(start..start + 1, None).await {
                    Ok(_) => {
                        recovered = true;
                        break;
                    }
                    Err(BatchError::Handler { error, .. }) => last = error,
                    Err(BatchError::Db(e)) => return Err(e),
                }
            }
            if !recovered {
                return Err(ProjectionError::Failed {
                    projection: entry.projection.name().to_owned(),
                    position: Some(event.position),
                    event_id: Some(event.event_id),
                    reason: last.0,
                });
            }
            start += 1;
        }
    }

    fn publish(entry: &Entry, checkpoint: Option<Position>) {
        entry.progress.send_if_modified(|p| {
            if checkpoint > p.through {
                p.through = checkpoint;
                true
            } else {
                false
            }
        });
    }

    async fn fail(&self, entry: &Entry, error: ProjectionError) {
        let (position, event_id, reason) = match &error {
            ProjectionError::Failed {
                position,
                event_id,
                reason,
                ..
            } => (*position, *event_id, reason.clone()),
            other => (None, None, other.to_string()),
        };
        let error = match error {
            e @ ProjectionError::Failed { .. } => e,
            other => ProjectionError::Failed {
                projection: entry.projection.name().to_owned(),
                position: None,
                event_id: None,
                reason: other.to_string(),
            },
        };
        tracing::error!(projection = entry.projection.name(), error = %error, "projection failed");
        let stored = Self::with_conn(entry, move |c, p| {
            sqlite::set_failed(c, p.name(), &reason, position, event_id)
        })
        .await;
        if let Err(e) = stored {
            tracing::error!(projection = entry.projection.name(), error = %e, "could not record the failure");
        }
        entry.progress.send_modify(|p| p.failed = Some(error));
    }

    /// Applies the serving copy up to `target` (or the end of the log), holding the apply lock.
    async fn catch_up_live(
        &self,
        entry: &Entry,
        target: Option<Position>,
    ) -> Result<(), ProjectionError> {
        let _guard = entry.apply_lock.lock().await;
        let mut stalls = 0u32;
        loop {
            if entry.progress.borrow().failed.is_some() {
                return Ok(());
            }
            let before = entry.progress.borrow().through;
            match self.step(entry, Target::Live).await {
                Ok(o) => {
                    Self::publish(entry, o.checkpoint);
                    let reached = target.is_some_and(|t| o.checkpoint >= Some(t));
                    if o.is_end || reached {
                        return Ok(());
                    }
                    if o.checkpoint <= before && stalled(&mut stalls).await {
                        // The backend showed nothing new without saying it reached the end
                        // (PostgreSQL holds `$all` back behind an open transaction): leave the
                        // rest to the next append rather than spin.
                        return Ok(());
                    }
                }
                Err(e) => {
                    self.fail(entry, e.clone()).await;
                    return Err(e);
                }
            }
        }
    }

    /// Applies every registered inline projection up to `position`. [`ProjectedStore`] calls
    /// this after each append; call it yourself when appending through another handle.
    pub async fn apply_inline(&self, position: Position) -> Result<(), ProjectionError> {
        let inline: Vec<Arc<Entry>> = self
            .entries_read()
            .values()
            .filter(|e| e.mode == ProjectionMode::Inline)
            .cloned()
            .collect();
        let mut first_error = None;
        for entry in inline {
            if lock(&entry.control).paused || entry.progress.borrow().failed.is_some() {
                continue;
            }
            if entry.progress.borrow().through >= Some(position) {
                continue;
            }
            if let Err(e) = self.catch_up_live(&entry, Some(position)).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn start_task(&self, entry: &Arc<Entry>) {
        let mut control = lock(&entry.control);
        if control.task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        control.paused = false;
        control.stop = Some(stop_tx);
        let this = self.clone();
        let task_entry = entry.clone();
        control.task = Some(tokio::spawn(async move {
            this.run(task_entry, stop_rx).await;
        }));
    }

    async fn run(self, entry: Arc<Entry>, mut stop: watch::Receiver<bool>) {
        let mut changes = self.inner.store.changes();
        let mut transient_failures = 0u32;
        let poll = Duration::from_millis(limits::SUBSCRIPTION_POLL_INTERVAL_MS);
        loop {
            if *stop.borrow() {
                return;
            }
            // Seen before reading, so an append that lands after the read wakes the wait.
            changes.borrow_and_update();
            let before = entry.progress.borrow().through;
            let outcome = {
                let _guard = entry.apply_lock.lock().await;
                self.step(&entry, Target::Live).await
            };
            match outcome {
                Ok(o) => {
                    transient_failures = 0;
                    Self::publish(&entry, o.checkpoint);
                    // Nothing new though not at the end (a backend holding `$all` back): wait
                    // like a caught-up subscription instead of spinning.
                    if o.is_end || o.checkpoint <= before {
                        tokio::select! {
                            _ = changes.changed() => {}
                            _ = stop.changed() => {}
                            _ = tokio::time::sleep(poll) => {}
                        }
                    }
                }
                Err(e @ ProjectionError::Failed { .. }) => {
                    self.fail(&entry, e).await;
                    return;
                }
                // The store or the read-model database failed (not the handler): retry with
                // backoff, then stop as failed.
                Err(e) if transient_failures < limits::PROJECTION_HANDLER_RETRIES => {
                    transient_failures += 1;
                    tracing::warn!(projection = entry.projection.name(), error = %e, "projection step failed; retrying");
                    let backoff = limits::PROJECTION_RETRY_BACKOFF_MS_INITIAL << transient_failures;
                    tokio::time::sleep(Duration::from_millis(
                        backoff.min(limits::PROJECTION_RETRY_BACKOFF_MS_MAX),
                    ))
                    .await;
                }
                Err(e) => {
                    self.fail(&entry, e).await;
                    return;
                }
            }
        }
    }

    async fn stop_task(entry: &Entry) {
        let task = {
            let mut control = lock(&entry.control);
            if let Some(stop) = control.stop.take() {
                let _ = stop.send(true);
            }
            control.task.take()
        };
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Stops a projection after its current batch. Inline appends stop applying it; its
    /// checkpoint stays where it is.
    pub async fn pause(&self, name: &str) -> Result<(), ProjectionError> {
        let entry = self.entry(name)?;
        lock(&entry.control).paused = true;
        Self::stop_task(&entry).await;
        let _guard = entry.apply_lock.lock().await;
        if entry.progress.borrow().failed.is_none() {
            Self::with_conn(&entry, |c, p| sqlite::set_status(c, p.name(), "paused")).await?;
        }
        Ok(())
    }

    /// Runs a paused or failed projection again from its checkpoint (a failed one retries the
    /// event it failed on, so fix the handler first).
    pub async fn resume(&self, name: &str) -> Result<(), ProjectionError> {
        let entry = self.entry(name)?;
        Self::with_conn(&entry, |c, p| {
            sqlite::clear_error(c, p.name())?;
            sqlite::set_status(c, p.name(), "running")
        })
        .await?;
        entry.progress.send_modify(|p| p.failed = None);
        lock(&entry.control).paused = false;
        match entry.mode {
            ProjectionMode::Async => self.start_task(&entry),
            ProjectionMode::Inline => self.catch_up_live(&entry, None).await?,
        }
        Ok(())
    }

    /// Empties a projection's read model and checkpoint; it then replays from position 0
    /// (while it does, queries see a partial model: [`Projections::rebuild`] avoids that).
    pub async fn reset(&self, name: &str) -> Result<(), ProjectionError> {
        let entry = self.entry(name)?;
        let was_paused = lock(&entry.control).paused;
        lock(&entry.control).paused = true;
        Self::stop_task(&entry).await;
        {
            let _guard = entry.apply_lock.lock().await;
            Self::with_conn(&entry, sqlite::reset).await?;
            entry.progress.send_modify(|p| {
                p.through = None;
                p.failed = None;
            });
        }
        lock(&entry.control).paused = was_paused;
        if was_paused {
            Ok(())
        } else {
            self.resume(name).await
        }
    }

    /// Rebuilds a projection from position 0 into fresh tables while the current ones keep
    /// serving (and keep being updated), then swaps them in one transaction once the fresh
    /// copy has caught up. `on_progress` is called after every batch. Returns the checkpoint
    /// the swapped-in copy starts from.
    pub async fn rebuild(
        &self,
        name: &str,
        mut on_progress: impl FnMut(&RebuildProgress) + Send,
    ) -> Result<Option<Position>, ProjectionError> {
        let entry = self.entry(name)?;
        if entry.rebuilding.swap(true, Ordering::SeqCst) {
            return Err(ProjectionError::RebuildInProgress(name.to_owned()));
        }
        let result = self.rebuild_inner(&entry, &mut on_progress).await;
        entry.rebuilding.store(false, Ordering::SeqCst);
        result
    }

    async fn rebuild_inner(
        &self,
        entry: &Entry,
        on_progress: &mut (dyn FnMut(&RebuildProgress) + Send),
    ) -> Result<Option<Position>, ProjectionError> {
        Self::with_conn(entry, sqlite::begin_rebuild).await?;
        let started = Instant::now();
        let mut applied = 0u64;
        let mut report = |applied: u64, position: Option<Position>, head: Option<Position>| {
            let elapsed = started.elapsed();
            let passed = position.map_or(0, |p| p.0 + 1);
            let remaining = head.map_or(0, |h| (h.0 + 1).saturating_sub(passed));
            let rate = passed as f64 / elapsed.as_secs_f64().max(1e-6);
            on_progress(&RebuildProgress {
                projection: entry.projection.name().to_owned(),
                applied_events: applied,
                position,
                head,
                remaining_events: remaining,
                events_per_second: rate,
                eta: (rate > 0.0).then(|| Duration::from_secs_f64(remaining as f64 / rate)),
                elapsed,
            });
        };
        // Catch up without the apply lock: the serving copy goes on being updated.
        loop {
            let o = self.step(entry, Target::Rebuild).await?;
            applied += o.applied;
            let head = self.inner.store.head().await?;
            report(applied, o.checkpoint, head);
            if o.is_end {
                break;
            }
            if o.applied == 0 {
                tokio::time::sleep(Duration::from_millis(STALL_SLEEP_MS)).await;
            }
        }
        // The last few events and the swap, with the serving copy's writers held off, so the
        // fresh copy is at or past the serving one when it takes over.
        let _guard = entry.apply_lock.lock().await;
        loop {
            let o = self.step(entry, Target::Rebuild).await?;
            applied += o.applied;
            if !o.is_end && o.applied == 0 {
                tokio::time::sleep(Duration::from_millis(STALL_SLEEP_MS)).await;
            }
            if o.is_end {
                let head = self.inner.store.head().await?;
                report(applied, o.checkpoint, head);
                break;
            }
        }
        let checkpoint = Self::with_conn(entry, sqlite::finish_rebuild).await?;
        entry.progress.send_modify(|p| {
            if checkpoint > p.through {
                p.through = checkpoint;
            }
        });
        tracing::info!(
            projection = entry.projection.name(),
            applied,
            checkpoint = ?checkpoint,
            "projection rebuilt and swapped in"
        );
        Ok(checkpoint)
    }

    /// Waits until `name` has passed `position` (the position a write returned), so a query
    /// after it reads its own write. On timeout: [`ProjectionError::NotYetConsistent`]; when
    /// the projection has failed before getting there: [`ProjectionError::Failed`].
    pub async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        let entry = self.entry(name)?;
        let started = Instant::now();
        let mut rx = entry.progress.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|p| p.through >= Some(position) || p.failed.is_some()),
        )
        .await;
        let progress = entry.progress.borrow().clone();
        if progress.through >= Some(position) {
            return Ok(());
        }
        if let (Ok(Ok(_)), Some(failed)) = (waited, progress.failed) {
            return Err(failed);
        }
        Err(ProjectionError::NotYetConsistent {
            projection: name.to_owned(),
            position,
            reached: progress.through,
            waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The last position `name` has passed.
    pub fn checkpoint(&self, name: &str) -> Result<Option<Position>, ProjectionError> {
        Ok(self.entry(name)?.progress.borrow().through)
    }

    /// One projection's status, checkpoint, lag and last error.
    pub async fn status(&self, name: &str) -> Result<ProjectionInfo, ProjectionError> {
        let entry = self.entry(name)?;
        let meta = Self::with_conn(&entry, |c, p| sqlite::read_meta(c, p.name()))
            .await?
            .ok_or_else(|| ProjectionError::UnknownProjection(name.to_owned()))?;
        let status = if entry.progress.borrow().failed.is_some() || meta.status == "failed" {
            ProjectionStatus::Failed
        } else if entry.rebuilding.load(Ordering::SeqCst) {
            ProjectionStatus::Rebuilding
        } else if lock(&entry.control).paused {
            ProjectionStatus::Paused
        } else {
            ProjectionStatus::Running
        };
        let checkpoint = entry.progress.borrow().through.max(meta.checkpoint);
        let head = self.inner.store.head().await?;
        let passed = checkpoint.map_or(0, |c| c.0 + 1);
        let lag_events = head.map_or(0, |h| (h.0 + 1).saturating_sub(passed));
        let mut lag_seconds = 0.0;
        if lag_events > 0 {
            let page = self
                .inner
                .store
                .read_all(ReadAllOptions::forward().from(Position(passed)).limit(1))
                .await?;
            if let Some(oldest) = page.events.first() {
                let age = chrono::Utc::now() - oldest.recorded_at;
                lag_seconds = age.num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1e6;
            }
        }
        Ok(ProjectionInfo {
            name: name.to_owned(),
            mode: entry.mode,
            status,
            checkpoint,
            lag_events,
            lag_seconds,
            last_error: meta.last_error,
            error_position: meta.error_position,
            error_event_id: meta.error_event_id,
        })
    }

    /// Every projection, in name order.
    pub async fn list(&self) -> Result<Vec<ProjectionInfo>, ProjectionError> {
        let mut names: Vec<String> = self.entries_read().keys().cloned().collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.push(self.status(&name).await?);
        }
        Ok(out)
    }

    /// Stops every background task after its current batch (checkpoints are already durable).
    pub async fn shutdown(&self) {
        let entries: Vec<Arc<Entry>> = self.entries_read().values().cloned().collect();
        for entry in entries {
            Self::stop_task(&entry).await;
        }
    }
}

/// How long a catch-up waits when a page showed nothing new without reaching the end.
pub(crate) const STALL_SLEEP_MS: u64 = 2;

/// Counts a stalled page; `true` once the stalls add up to a second (then give up for now).
pub(crate) async fn stalled(stalls: &mut u32) -> bool {
    *stalls += 1;
    if u64::from(*stalls) * STALL_SLEEP_MS >= 1_000 {
        return true;
    }
    tokio::time::sleep(Duration::from_millis(STALL_SLEEP_MS)).await;
    false
}

fn batch_error(e: BatchError) -> ProjectionError {
    match e {
        BatchError::Db(e) => e,
        BatchError::Handler { error, .. } => ProjectionError::ReadModel(error.0),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(t) => t,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled only when the runtime shuts down; nothing is waiting for us then.
            Err(_) => std::future::pending().await,
        },
    }
}

/// An event store whose appends apply the inline projections before they return: the
/// embedded store's inline mode. Use it (for example in a [`crate::Repository`]) in place of
/// the store it wraps.
///
/// The append is durable before the projections run. If they fail, the append still
/// succeeds (its events are stored), the projection is marked failed, and
/// [`Projections::wait_for`] reports it; if the process dies in between, registering the
/// projection again catches it up.
#[derive(Clone)]
pub struct ProjectedStore<S, P = Projections> {
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

/// Projections an append applies before it returns: [`Projections`] (SQLite read models) and
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

#[async_trait]
impl InlineProjections for Projections {
    async fn apply_inline(&self, position: Position) -> Result<(), ProjectionError> {
        Projections::apply_inline(self, position).await
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
            Err(e) => Err(AppendError::Storage(e.to_string())),
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
}
