//! What the two projection runners share: [`super::Projections`] (SQLite read models) and
//! [`super::PgProjections`] (PostgreSQL read models) differ in how they reach their database
//! (a SQLite connection on a blocking thread, sqlx transactions) but follow the log, retry,
//! fail, wait, report and control their background tasks the same way. That part is here,
//! written once against [`Runner`], which each of them implements for its database.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use strata_core::{
    Batch, Cursor, EventStore, Filter, Position, ReadAllOptions, RecordedEvent, SubscribeFrom,
    Subscription, SubscriptionTarget, Uuid,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::model::{ProjectionInfo, ProjectionMode, ProjectionStatus, RebuildProgress};
#[cfg(feature = "sqlite")]
use super::sqlite;
use super::{HandlerError, ProjectionError};
use crate::limits;

/// A projection's progress as its waiters see it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    pub through: Option<Position>,
    pub failed: Option<ProjectionError>,
}

/// Locks `m`, taking the value over from a holder that panicked.
pub(crate) fn lock<T>(m: &StdMutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A projection's status as its runner stores it (the `status` column of
/// `strata_projections`): what survives a restart. Rebuilding is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredStatus {
    Running,
    Paused,
    Failed,
}

impl StoredStatus {
    /// The column's value.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StoredStatus::Running => "running",
            StoredStatus::Paused => "paused",
            StoredStatus::Failed => "failed",
        }
    }

    /// Reads the column; a value this code never writes is a damaged read-model database.
    pub(crate) fn from_column(value: &str) -> Result<Self, ProjectionError> {
        match value {
            "running" => Ok(StoredStatus::Running),
            "paused" => Ok(StoredStatus::Paused),
            "failed" => Ok(StoredStatus::Failed),
            other => Err(ProjectionError::ReadModel(
                (format!("strata_projections holds the unknown status \"{other}\"")).into(),
            )),
        }
    }
}

/// A projection's row in its runner's `strata_projections` table.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub checkpoint: Option<Position>,
    pub status: StoredStatus,
    pub last_error: Option<String>,
    pub error_position: Option<Position>,
    pub error_event_id: Option<String>,
}

impl Stored {
    /// The failure it was left with, if its status is `failed`.
    fn failure(&self, name: &str) -> Option<ProjectionError> {
        (self.status == StoredStatus::Failed).then(|| ProjectionError::Failed {
            projection: name.to_owned(),
            position: self.error_position,
            event_id: self
                .error_event_id
                .as_deref()
                .and_then(|s| Uuid::parse_str(s).ok()),
            reason: self.last_error.clone().unwrap_or_default(),
        })
    }
}

/// A registered projection: the runner's handle on it (`projection`, `conn`) and the state
/// both runners keep alike.
pub(crate) struct Entry<P: ?Sized, C> {
    pub projection: Arc<P>,
    pub name: String,
    pub filter: Filter,
    pub mode: ProjectionMode,
    /// What the runner needs besides the projection to reach its read model.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub conn: C,
    /// Serialises the writers of the serving copy (the async task, inline appends, the end of
    /// a rebuild) so their read-then-apply steps do not interleave.
    pub apply_lock: tokio::sync::Mutex<()>,
    pub progress: watch::Sender<Progress>,
    pub control: StdMutex<TaskControl>,
    pub rebuilding: AtomicBool,
}

impl<P: ?Sized, C> Entry<P, C> {
    /// An entry starting where `stored` left the projection (paused, failed, its checkpoint).
    pub fn new(
        name: String,
        projection: Arc<P>,
        filter: Filter,
        mode: ProjectionMode,
        conn: C,
        stored: &Stored,
    ) -> Self {
        Entry {
            progress: watch::Sender::new(Progress {
                through: stored.checkpoint,
                failed: stored.failure(&name),
            }),
            control: StdMutex::new(TaskControl {
                paused: stored.status == StoredStatus::Paused,
                ..TaskControl::default()
            }),
            name,
            projection,
            filter,
            mode,
            conn,
            apply_lock: tokio::sync::Mutex::new(()),
            rebuilding: AtomicBool::new(false),
        }
    }

    /// Whether it is paused.
    pub fn paused(&self) -> bool {
        lock(&self.control).paused
    }

    /// Marks it paused or not.
    pub fn set_paused(&self, paused: bool) {
        lock(&self.control).paused = paused;
    }

    /// Moves the published checkpoint forward to `checkpoint` (never back).
    pub fn publish(&self, checkpoint: Option<Position>) {
        self.progress.send_if_modified(|p| {
            let moved = checkpoint > p.through;
            if moved {
                p.through = checkpoint;
            }
            moved
        });
    }

    /// Marks it rebuilding; [`ProjectionError::RebuildInProgress`] if it is already. The flag
    /// is cleared when the guard is dropped.
    pub fn claim_rebuild(&self) -> Result<RebuildClaim<'_>, ProjectionError> {
        if self.rebuilding.swap(true, Ordering::SeqCst) {
            return Err(ProjectionError::RebuildInProgress(self.name.clone()));
        }
        Ok(RebuildClaim(&self.rebuilding))
    }

    /// Stops its background task after the current batch and waits for it.
    pub async fn stop_task(&self) {
        let task = {
            let mut control = lock(&self.control);
            if let Some(stop) = control.stop.take() {
                let _ = stop.send(true);
            }
            control.task.take()
        };
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Clears a failure before a resume, with `clear_stored` clearing the stored one.
    ///
    /// A projection fails (stores the failure, then publishes it) with the apply lock held,
    /// and so is this done: a failure is cleared whole or not begun, never half stored. A
    /// failed task ends right after failing without the lock; it is waited for here, so that
    /// a resume that comes quickly does not find it still running and start no task.
    pub async fn clear_failure(
        &self,
        clear_stored: impl std::future::Future<Output = Result<(), ProjectionError>>,
    ) -> Result<(), ProjectionError> {
        let _guard = self.apply_lock.lock().await;
        if self.progress.borrow().failed.is_some() {
            self.stop_task().await;
        }
        clear_stored.await?;
        self.progress.send_modify(|p| p.failed = None);
        Ok(())
    }

    /// Waits until it has passed `position`; see [`super::Projections::wait_for`].
    pub async fn wait_for(
        &self,
        position: Position,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        let started = Instant::now();
        let mut rx = self.progress.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|p| p.through >= Some(position) || p.failed.is_some()),
        )
        .await;
        let progress = self.progress.borrow().clone();
        if progress.through >= Some(position) {
            return Ok(());
        }
        if let (Ok(Ok(_)), Some(failed)) = (waited, progress.failed) {
            return Err(failed);
        }
        Err(ProjectionError::NotYetConsistent {
            projection: self.name.clone(),
            position,
            reached: progress.through,
            waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Clears an entry's rebuilding flag when dropped.
pub(crate) struct RebuildClaim<'a>(&'a AtomicBool);

impl Drop for RebuildClaim<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Whether a projection is paused, and its background task if it has one.
#[derive(Default)]
pub(crate) struct TaskControl {
    pub paused: bool,
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

/// The registered projections of one runner, by name.
pub(crate) struct Registry<E> {
    entries: RwLock<HashMap<String, Arc<E>>>,
}

impl<E> Default for Registry<E> {
    fn default() -> Self {
        Registry {
            entries: RwLock::new(HashMap::new()),
        }
    }
}

impl<E> Registry<E> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<E>>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails when `name` is taken or the registry is full.
    pub fn check_free(&self, name: &str) -> Result<(), ProjectionError> {
        let entries = self.read();
        if entries.contains_key(name) {
            return Err(ProjectionError::AlreadyRegistered(name.to_owned()));
        }
        if entries.len() >= limits::PROJECTIONS_MAX {
            return Err(ProjectionError::TooMany);
        }
        Ok(())
    }

    /// Adds `entry` under `name` unless the name was taken meanwhile.
    pub fn insert(&self, name: String, entry: E) -> Result<Arc<E>, ProjectionError> {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.contains_key(&name) {
            return Err(ProjectionError::AlreadyRegistered(name));
        }
        let entry = Arc::new(entry);
        entries.insert(name, entry.clone());
        Ok(entry)
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<E>, ProjectionError> {
        self.read()
            .get(name)
            .cloned()
            .ok_or_else(|| ProjectionError::UnknownProjection(name.to_owned()))
    }

    /// Every name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// The entries `keep` accepts.
    pub fn select(&self, keep: impl Fn(&E) -> bool) -> Vec<Arc<E>> {
        self.read().values().filter(|e| keep(e)).cloned().collect()
    }
}

/// What one step of the serving copy came to.
pub(crate) struct Stepped {
    /// The checkpoint after it.
    pub checkpoint: Option<Position>,
    /// Whether the page read was the end of the log.
    pub is_end: bool,
}

/// Why a batch did not commit.
pub(crate) enum BatchError {
    /// The handler failed on `events[index]`; nothing of the batch was written.
    Handler { index: usize, error: HandlerError },
    /// The database failed.
    Db(ProjectionError),
}

#[cfg(feature = "sqlite")]
impl From<sqlite::BatchError> for BatchError {
    fn from(e: sqlite::BatchError) -> Self {
        match e {
            sqlite::BatchError::Handler { index, error } => BatchError::Handler { index, error },
            sqlite::BatchError::Db(e) => BatchError::Db(e),
        }
    }
}

/// The first position after `checkpoint`.
pub(crate) fn after(checkpoint: Option<Position>) -> Position {
    checkpoint.map_or(Position::START, |p| Position(p.0 + 1))
}

/// Where a subscription resumes for a projection at `checkpoint`.
fn resume_from(checkpoint: Option<Position>) -> SubscribeFrom {
    checkpoint.map_or(SubscribeFrom::Start, SubscribeFrom::AfterPosition)
}

/// The projection's view of the log: a subscription to the events its `filter` matches after
/// `checkpoint`, a projection batch a page. Every runner reads the log through one, the way
/// every other follower of the log does (see [`strata_core::Subscription`]). It reads through
/// `store` itself (not through what its `subscribe` might wrap), so a store that decorates
/// reads is read as the projection was given it.
pub(crate) async fn subscribe(
    store: &Arc<dyn EventStore>,
    filter: &Filter,
    checkpoint: Option<Position>,
) -> Result<Subscription, ProjectionError> {
    let target = SubscriptionTarget::All(filter.clone());
    Ok(
        Subscription::start(store.clone(), target, resume_from(checkpoint))
            .await?
            .with_page_events(limits::PROJECTION_BATCH_MAX_EVENTS),
    )
}

/// The next page after `checkpoint` (read from the read model in the caller's step), without
/// waiting. `sub` is moved there first when it stands elsewhere: another writer of the read
/// model moved the checkpoint on (an inline append, a rebuild's swap) or back (a reset).
/// [`Batch::through`] is what the checkpoint may move to once the page is applied, even past
/// events the filter skipped, so `wait_for` works for any position.
pub(crate) async fn read_after(
    sub: &mut Subscription,
    checkpoint: Option<Position>,
) -> Result<Batch, ProjectionError> {
    if sub.cursor() != Cursor::AllNext(after(checkpoint)) {
        sub.seek(resume_from(checkpoint)).await?;
    }
    Ok(sub.try_next_batch().await?)
}

/// Applies `events` with `apply(range, scanned)` (one transaction each call, returning the new
/// checkpoint). When the handler fails on an event, the events before it are committed, then
/// that event is retried alone with backoff; if it keeps failing the projection fails there.
pub(crate) async fn apply_with_retry<F, Fut>(
    name: &str,
    events: &[RecordedEvent],
    scanned: Option<Position>,
    apply: F,
) -> Result<Option<Position>, ProjectionError>
where
    F: Fn(Range<usize>, Option<Position>) -> Fut,
    Fut: Future<Output = Result<Option<Position>, BatchError>>,
{
    let mut start = 0;
    loop {
        let error = match apply(start..events.len(), scanned).await {
            Ok(checkpoint) => return Ok(checkpoint),
            Err(BatchError::Db(e)) => return Err(e),
            Err(BatchError::Handler { index, error }) => {
                let failing = start + index;
                if index > 0 {
                    // Commit the events before the failing one, so a resume starts at it.
                    match apply(start..failing, None).await {
                        Ok(_) => {}
                        Err(BatchError::Db(e)) => return Err(e),
                        Err(BatchError::Handler { error, .. }) => {
                            return Err(ProjectionError::ReadModel(
                                strata_core::BackendError::with_source(error.to_string(), error),
                            ))
                        }
                    }
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
                projection = name,
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
                projection: name.to_owned(),
                position: Some(event.position),
                event_id: Some(event.event_id),
                reason: last.to_string(),
            });
        }
        start += 1;
    }
}

/// Builds the [`RebuildProgress`] reports of one rebuild.
pub(crate) struct RebuildReporter<'a> {
    projection: &'a str,
    started: Instant,
}

impl<'a> RebuildReporter<'a> {
    /// Starts the clock of a rebuild of `projection`.
    pub fn start(projection: &'a str) -> Self {
        RebuildReporter {
            projection,
            started: Instant::now(),
        }
    }

    /// How far it has come: `applied` events, `position` passed, with the store at `head`.
    pub fn progress(
        &self,
        applied: u64,
        position: Option<Position>,
        head: Option<Position>,
    ) -> RebuildProgress {
        let elapsed = self.started.elapsed();
        let passed = position.map_or(0, |p| p.0 + 1);
        let remaining = head.map_or(0, |h| (h.0 + 1).saturating_sub(passed));
        let rate = passed as f64 / elapsed.as_secs_f64().max(1e-6);
        RebuildProgress {
            projection: self.projection.to_owned(),
            applied_events: applied,
            position,
            head,
            remaining_events: remaining,
            events_per_second: rate,
            eta: (rate > 0.0).then(|| Duration::from_secs_f64(remaining as f64 / rate)),
            elapsed,
        }
    }
}

/// A projection runner, as the shared code drives it.
#[async_trait]
pub(crate) trait Runner: Clone + Send + Sync + 'static {
    /// The projection trait it runs.
    type Projection: ?Sized + Send + Sync + 'static;
    /// Its per-projection handle on the read-model database.
    type Conn: Send + Sync + 'static;

    /// The event store it follows.
    fn event_store(&self) -> &Arc<dyn EventStore>;

    /// Its projections.
    fn registry(&self) -> &Registry<RunnerEntry<Self>>;

    /// Reads one page of `sub` after the serving copy's checkpoint (see [`read_after`]) and
    /// applies it; the caller holds the apply lock.
    async fn step_live(
        &self,
        entry: &RunnerEntry<Self>,
        sub: &mut Subscription,
    ) -> Result<Stepped, ProjectionError>;

    /// The projection's row in the read-model database.
    async fn read_stored(&self, entry: &RunnerEntry<Self>) -> Result<Stored, ProjectionError>;

    /// Stores that the projection failed at `position` (event `event_id`) for `reason`.
    async fn record_failure(
        &self,
        entry: &RunnerEntry<Self>,
        reason: String,
        position: Option<Position>,
        event_id: Option<Uuid>,
    ) -> Result<(), ProjectionError>;
}

/// A runner's entry type.
pub(crate) type RunnerEntry<R> = Entry<<R as Runner>::Projection, <R as Runner>::Conn>;

/// Stops the projection as failed with `error`: stored, logged and published to its waiters.
/// Called with the apply lock held (see [`Entry::clear_failure`]).
pub(crate) async fn fail<R: Runner>(runner: &R, entry: &RunnerEntry<R>, error: ProjectionError) {
    let error = match error {
        e @ ProjectionError::Failed { .. } => e,
        other => ProjectionError::Failed {
            projection: entry.name.clone(),
            position: None,
            event_id: None,
            reason: other.to_string(),
        },
    };
    tracing::error!(projection = %entry.name, error = %error, "projection failed");
    if let ProjectionError::Failed {
        position,
        event_id,
        reason,
        ..
    } = &error
    {
        let stored = runner
            .record_failure(entry, reason.clone(), *position, *event_id)
            .await;
        if let Err(e) = stored {
            tracing::error!(projection = %entry.name, error = %e, "could not record the failure");
        }
    }
    entry.progress.send_modify(|p| p.failed = Some(error));
}

/// Applies the serving copy up to `target` (or the end of the log), holding the apply lock.
pub(crate) async fn catch_up<R: Runner>(
    runner: &R,
    entry: &RunnerEntry<R>,
    target: Option<Position>,
) -> Result<(), ProjectionError> {
    let _guard = entry.apply_lock.lock().await;
    let through = entry.progress.borrow().through;
    let mut sub = match subscribe(runner.event_store(), &entry.filter, through).await {
        Ok(sub) => sub,
        Err(e) => {
            fail(runner, entry, e.clone()).await;
            return Err(e);
        }
    };
    let mut stall_budget = Duration::from_millis(limits::PROJECTION_CATCH_UP_STALL_MAX_MS);
    loop {
        if entry.progress.borrow().failed.is_some() {
            return Ok(());
        }
        let before = entry.progress.borrow().through;
        match runner.step_live(entry, &mut sub).await {
            Ok(o) => {
                entry.publish(o.checkpoint);
                let reached = match target {
                    Some(t) => o.checkpoint >= Some(t),
                    None => o.is_end,
                };
                if reached {
                    return Ok(());
                }
                if o.checkpoint <= before {
                    // Nothing new, and the target not reached: PostgreSQL shows `$all` only up
                    // to the oldest transaction still open, so an append that committed can sit
                    // above what is readable. Wait for the store's signal that more committed,
                    // but at most the stall budget in all, then leave the rest to the next
                    // append (or the background task) rather than hold this append up.
                    let started = Instant::now();
                    let _ = tokio::time::timeout(stall_budget, sub.changed()).await;
                    stall_budget = stall_budget.saturating_sub(started.elapsed());
                    if stall_budget.is_zero() {
                        return Ok(());
                    }
                }
            }
            Err(e) => {
                fail(runner, entry, e.clone()).await;
                return Err(e);
            }
        }
    }
}

/// Applies every inline projection that is neither paused nor failed up to `position`;
/// returns the first error.
pub(crate) async fn apply_inline<R: Runner>(
    runner: &R,
    position: Position,
) -> Result<(), ProjectionError> {
    let inline = runner
        .registry()
        .select(|e| e.mode == ProjectionMode::Inline);
    let mut first_error = None;
    for entry in inline {
        if entry.paused() || entry.progress.borrow().failed.is_some() {
            continue;
        }
        if entry.progress.borrow().through >= Some(position) {
            continue;
        }
        if let Err(e) = catch_up(runner, &entry, Some(position)).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Starts the projection's background task unless one is running.
pub(crate) fn start_task<R: Runner>(runner: &R, entry: &Arc<RunnerEntry<R>>) {
    let mut control = lock(&entry.control);
    if control.task.as_ref().is_some_and(|t| !t.is_finished()) {
        return;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    control.stop = Some(stop_tx);
    let runner = runner.clone();
    let entry = entry.clone();
    control.task = Some(tokio::spawn(async move {
        follow(&runner, &entry, stop_rx).await;
    }));
}

/// The background task: steps the serving copy, then waits for the next append, until
/// stopped or failed.
async fn follow<R: Runner>(runner: &R, entry: &RunnerEntry<R>, mut stop: watch::Receiver<bool>) {
    let mut sub: Option<Subscription> = None;
    let mut transient_failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let before = entry.progress.borrow().through;
        // Held through `fail` when the step fails for good (see `Entry::clear_failure`).
        let guard = entry.apply_lock.lock().await;
        let outcome = match &mut sub {
            Some(sub) => runner.step_live(entry, sub).await,
            None => match subscribe(runner.event_store(), &entry.filter, before).await {
                Ok(new) => runner.step_live(entry, sub.insert(new)).await,
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(o) => {
                drop(guard);
                transient_failures = 0;
                entry.publish(o.checkpoint);
                // Nothing new though not at the end (a backend holding `$all` back): wait
                // like a caught-up subscription instead of spinning.
                if let Some(sub) = sub.as_mut().filter(|_| o.is_end || o.checkpoint <= before) {
                    tokio::select! {
                        _ = sub.changed() => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            // The store or the read-model database failed (not the handler): retry with
            // backoff, then stop as failed.
            Err(e)
                if !matches!(e, ProjectionError::Failed { .. })
                    && transient_failures < limits::PROJECTION_HANDLER_RETRIES =>
            {
                drop(guard);
                transient_failures += 1;
                tracing::warn!(projection = %entry.name, error = %e, "projection step failed; retrying");
                let backoff = limits::PROJECTION_RETRY_BACKOFF_MS_INITIAL << transient_failures;
                tokio::time::sleep(Duration::from_millis(
                    backoff.min(limits::PROJECTION_RETRY_BACKOFF_MS_MAX),
                ))
                .await;
            }
            // A handler failed, or retries ran out.
            Err(e) => {
                fail(runner, entry, e).await;
                return;
            }
        }
    }
}

/// One projection's status, checkpoint, lag and last error.
pub(crate) async fn status<R: Runner>(
    runner: &R,
    name: &str,
) -> Result<ProjectionInfo, ProjectionError> {
    let entry = runner.registry().get(name)?;
    let stored = runner.read_stored(&entry).await?;
    let status =
        if entry.progress.borrow().failed.is_some() || stored.status == StoredStatus::Failed {
            ProjectionStatus::Failed
        } else if entry.rebuilding.load(Ordering::SeqCst) {
            ProjectionStatus::Rebuilding
        } else if entry.paused() {
            ProjectionStatus::Paused
        } else {
            ProjectionStatus::Running
        };
    let checkpoint = entry.progress.borrow().through.max(stored.checkpoint);
    let store = runner.event_store();
    let head = store.head().await?;
    let passed = checkpoint.map_or(0, |c| c.0 + 1);
    let lag_events = head.map_or(0, |h| (h.0 + 1).saturating_sub(passed));
    let mut lag_seconds = 0.0;
    if lag_events > 0 {
        let page = store
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
        last_error: stored.last_error,
        error_position: stored.error_position,
        error_event_id: stored.error_event_id,
    })
}

/// Every projection, in name order.
pub(crate) async fn list<R: Runner>(runner: &R) -> Result<Vec<ProjectionInfo>, ProjectionError> {
    let names = runner.registry().names();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(status(runner, &name).await?);
    }
    Ok(out)
}

/// Stops every background task after its current batch.
pub(crate) async fn shutdown<R: Runner>(runner: &R) {
    for entry in runner.registry().select(|_| true) {
        entry.stop_task().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::{EventData, ExpectedVersion, StreamId};
    use strata_testkit::MemoryStore;

    /// A step that read a page but failed to apply it (the read-model database failed) leaves
    /// the checkpoint where it was; the retry must read the same page again, not the next one.
    #[tokio::test]
    async fn a_page_read_but_not_applied_is_read_again_after_the_checkpoint() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let events = (0..5)
            .map(|i| EventData::json("E", &serde_json::json!({ "i": i })).unwrap())
            .collect();
        store
            .append(&StreamId::new("a-1").unwrap(), ExpectedVersion::Any, events)
            .await
            .unwrap();
        let mut sub = subscribe(&store, &Filter::default(), Some(Position(0)))
            .await
            .unwrap();
        let first = read_after(&mut sub, Some(Position(0))).await.unwrap();
        assert_eq!(first.events.len(), 4);
        assert_eq!(first.through, Some(Position(4)));
        // Not applied: the checkpoint is still 0.
        let again = read_after(&mut sub, Some(Position(0))).await.unwrap();
        assert_eq!(again.events, first.events);
        // Applied by another writer up to 2: only the rest.
        let rest = read_after(&mut sub, Some(Position(2))).await.unwrap();
        let positions: Vec<u64> = rest.events.iter().map(|e| e.position.0).collect();
        assert_eq!(positions, [3, 4]);
        assert!(rest.is_end);
    }

    #[test]
    fn stored_statuses_round_trip_and_unknown_ones_are_errors() {
        for s in [
            StoredStatus::Running,
            StoredStatus::Paused,
            StoredStatus::Failed,
        ] {
            assert_eq!(StoredStatus::from_column(s.as_str()).unwrap(), s);
        }
        assert!(matches!(
            StoredStatus::from_column("Failed"),
            Err(ProjectionError::ReadModel(_))
        ));
    }
}
