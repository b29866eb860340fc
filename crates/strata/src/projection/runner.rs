//! The projection runner: inline application after appends, async background tasks,
//! pause / resume / reset, blue/green rebuilds, lag and read-your-writes waits.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use strata_core::{EventStore, Position, Subscription, Uuid};

use super::common::{
    self, lock, BatchError, RebuildReporter, Registry, Runner, Stepped, Stored, StoredStatus,
};
use super::model::{InlineProjections, ProjectionInfo, ProjectionMode, RebuildProgress};
use super::sqlite::{self, Target};
use super::{Projection, ProjectionError, SqliteReadModels};

/// A projection the SQLite runner has registered, with its read-model connection.
type Entry = common::Entry<dyn Projection, Arc<StdMutex<Connection>>>;

struct StepOutcome {
    applied: u64,
    checkpoint: Option<Position>,
    is_end: bool,
}

struct Inner {
    store: Arc<dyn EventStore>,
    models: SqliteReadModels,
    entries: Registry<Entry>,
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

impl Projections {
    /// A runner for projections of `store` into `models`.
    pub fn new(store: Arc<dyn EventStore>, models: SqliteReadModels) -> Self {
        Projections {
            inner: Arc::new(Inner {
                store,
                models,
                entries: Registry::default(),
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
        if !entry.paused() && entry.progress.borrow().failed.is_none() {
            common::catch_up(self, &entry, None).await?;
        }
        Ok(())
    }

    /// Registers an async projection and starts its background task from its checkpoint
    /// (unless it was left paused or failed).
    pub async fn spawn(&self, projection: impl Projection) -> Result<(), ProjectionError> {
        let entry = self
            .register(Arc::new(projection), ProjectionMode::Async)
            .await?;
        if !entry.paused() && entry.progress.borrow().failed.is_none() {
            common::start_task(self, &entry);
        }
        Ok(())
    }

    async fn register(
        &self,
        projection: Arc<dyn Projection>,
        mode: ProjectionMode,
    ) -> Result<Arc<Entry>, ProjectionError> {
        let name = projection.name().to_owned();
        if projection.tables().is_empty() {
            // A rebuild writes fresh copies of exactly these tables; with none it would
            // replay every event into the serving tables.
            return Err(ProjectionError::Invalid {
                projection: name,
                reason: "a SQLite projection must list the tables it writes (tables())".into(),
            });
        }
        projection
            .filter()
            .validate()
            .map_err(|e| ProjectionError::Invalid {
                projection: name.clone(),
                reason: e.to_string(),
            })?;
        self.inner.entries.check_free(&name)?;
        let conn = self.inner.models.connect()?;
        let conn = Arc::new(StdMutex::new(conn));
        let meta = {
            let conn = conn.clone();
            let p = projection.clone();
            blocking(move || sqlite::ensure(&mut lock(&conn), p.as_ref())).await?
        };
        let entry = Entry::new(
            name.clone(),
            projection.clone(),
            projection.filter(),
            mode,
            conn,
            &stored(meta)?,
        );
        self.inner.entries.insert(name, entry)
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, ProjectionError> {
        self.inner.entries.get(name)
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

    /// Reads one page of `sub` after the checkpoint of `target` and applies it (with
    /// retries).
    async fn step(
        &self,
        entry: &Entry,
        target: Target,
        sub: &mut Subscription,
    ) -> Result<StepOutcome, ProjectionError> {
        let checkpoint =
            Self::with_conn(entry, move |c, p| sqlite::checkpoint(c, p.name(), target)).await?;
        let batch = common::read_after(sub, checkpoint).await?;
        let scanned = batch.through;
        let applied = batch.events.len() as u64;
        let events = Arc::new(batch.events);
        let apply = |range: std::ops::Range<usize>, scanned: Option<Position>| {
            let events = events.clone();
            async move {
                Self::with_conn(entry, move |c, p| {
                    sqlite::apply_batch(c, p, target, &events[range], scanned)
                })
                .await
                .map_err(BatchError::from)
            }
        };
        let checkpoint = common::apply_with_retry(&entry.name, &events, scanned, apply)
            .await?
            .or(checkpoint);
        Ok(StepOutcome {
            applied,
            checkpoint,
            is_end: batch.is_end,
        })
    }

    /// Applies every registered inline projection up to `position`. [`ProjectedStore`](super::ProjectedStore) calls
    /// this after each append; call it yourself when appending through another handle.
    pub async fn apply_inline(&self, position: Position) -> Result<(), ProjectionError> {
        common::apply_inline(self, position).await
    }

    /// Stops a projection after its current batch. Inline appends stop applying it; its
    /// checkpoint stays where it is.
    pub async fn pause(&self, name: &str) -> Result<(), ProjectionError> {
        let entry = self.entry(name)?;
        entry.set_paused(true);
        entry.stop_task().await;
        let _guard = entry.apply_lock.lock().await;
        if entry.progress.borrow().failed.is_none() {
            Self::with_conn(&entry, |c, p| {
                sqlite::set_status(c, p.name(), StoredStatus::Paused)
            })
            .await?;
        }
        Ok(())
    }

    /// Runs a paused or failed projection again from its checkpoint (a failed one retries the
    /// event it failed on, so fix the handler first).
    pub async fn resume(&self, name: &str) -> Result<(), ProjectionError> {
        let entry = self.entry(name)?;
        entry
            .clear_failure(Self::with_conn(&entry, |c, p| {
                sqlite::clear_error(c, p.name())?;
                sqlite::set_status(c, p.name(), StoredStatus::Running)
            }))
            .await?;
        entry.set_paused(false);
        match entry.mode {
            ProjectionMode::Async => common::start_task(self, &entry),
            ProjectionMode::Inline => common::catch_up(self, &entry, None).await?,
        }
        Ok(())
    }

    /// Empties a projection's read model and checkpoint; it then replays from position 0
    /// (while it does, queries see a partial model: [`Projections::rebuild`] avoids that).
    pub async fn reset(&self, name: &str) -> Result<(), ProjectionError> {
        let entry = self.entry(name)?;
        let was_paused = entry.paused();
        entry.set_paused(true);
        entry.stop_task().await;
        {
            let _guard = entry.apply_lock.lock().await;
            Self::with_conn(&entry, sqlite::reset).await?;
            entry.progress.send_modify(|p| {
                p.through = None;
                p.failed = None;
            });
        }
        entry.set_paused(was_paused);
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
        let _claim = entry.claim_rebuild()?;
        self.rebuild_inner(&entry, &mut on_progress).await
    }

    async fn rebuild_inner(
        &self,
        entry: &Entry,
        on_progress: &mut (dyn FnMut(&RebuildProgress) + Send),
    ) -> Result<Option<Position>, ProjectionError> {
        Self::with_conn(entry, sqlite::begin_rebuild).await?;
        let reporter = RebuildReporter::start(&entry.name);
        let mut sub = common::subscribe(&self.inner.store, &entry.filter, None).await?;
        let mut applied = 0u64;
        let mut reached = None;
        // Catch up without the apply lock: the serving copy goes on being updated. Then the
        // last few events and the swap, with the serving copy's writers held off, so the
        // fresh copy is at or past the serving one when it takes over.
        let mut guard = None;
        loop {
            let o = self.step(entry, Target::Rebuild, &mut sub).await?;
            applied += o.applied;
            if o.is_end && guard.is_some() {
                let head = self.inner.store.head().await?;
                on_progress(&reporter.progress(applied, o.checkpoint, head));
                break;
            }
            if guard.is_none() {
                let head = self.inner.store.head().await?;
                on_progress(&reporter.progress(applied, o.checkpoint, head));
            }
            if o.is_end {
                guard = Some(entry.apply_lock.lock().await);
            } else if o.checkpoint <= reached {
                // Held back (see `common::catch_up`): wait for the store to move.
                sub.changed().await;
            }
            reached = o.checkpoint;
        }
        let checkpoint = Self::with_conn(entry, sqlite::finish_rebuild).await?;
        entry.publish(checkpoint);
        tracing::info!(
            projection = %entry.name,
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
        self.entry(name)?.wait_for(position, timeout).await
    }

    /// The last position `name` has passed.
    pub fn checkpoint(&self, name: &str) -> Result<Option<Position>, ProjectionError> {
        Ok(self.entry(name)?.progress.borrow().through)
    }

    /// One projection's status, checkpoint, lag and last error.
    pub async fn status(&self, name: &str) -> Result<ProjectionInfo, ProjectionError> {
        common::status(self, name).await
    }

    /// Every projection, in name order.
    pub async fn list(&self) -> Result<Vec<ProjectionInfo>, ProjectionError> {
        common::list(self).await
    }

    /// Stops every background task after its current batch (checkpoints are already durable).
    pub async fn shutdown(&self) {
        common::shutdown(self).await;
    }
}

/// The parts of a projection's SQLite metadata both runners keep.
fn stored(meta: sqlite::Meta) -> Result<Stored, ProjectionError> {
    Ok(Stored {
        checkpoint: meta.checkpoint,
        status: StoredStatus::from_column(&meta.status)?,
        last_error: meta.last_error,
        error_position: meta.error_position,
        error_event_id: meta.error_event_id,
    })
}

#[async_trait]
impl Runner for Projections {
    type Projection = dyn Projection;
    type Conn = Arc<StdMutex<Connection>>;

    fn event_store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    fn registry(&self) -> &Registry<Entry> {
        &self.inner.entries
    }

    async fn step_live(
        &self,
        entry: &Entry,
        sub: &mut Subscription,
    ) -> Result<Stepped, ProjectionError> {
        let o = self.step(entry, Target::Live, sub).await?;
        Ok(Stepped {
            checkpoint: o.checkpoint,
            is_end: o.is_end,
        })
    }

    async fn read_stored(&self, entry: &Entry) -> Result<Stored, ProjectionError> {
        Self::with_conn(entry, |c, p| sqlite::read_meta(c, p.name()))
            .await?
            .map(stored)
            .ok_or_else(|| ProjectionError::UnknownProjection(entry.name.clone()))?
    }

    async fn record_failure(
        &self,
        entry: &Entry,
        reason: String,
        position: Option<Position>,
        event_id: Option<Uuid>,
    ) -> Result<(), ProjectionError> {
        Self::with_conn(entry, move |c, p| {
            sqlite::set_failed(c, p.name(), &reason, position, event_id)
        })
        .await
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

#[async_trait]
impl InlineProjections for Projections {
    async fn apply_inline(&self, position: Position) -> Result<(), ProjectionError> {
        Projections::apply_inline(self, position).await
    }
}
