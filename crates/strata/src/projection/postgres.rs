//! The PostgreSQL read-model store: projections whose tables, checkpoint and status live in a
//! PostgreSQL schema, each batch one transaction (the checkpoint row is locked, checked and
//! moved in it), run async or inline.
//!
//! Inline on PostgreSQL has two modes. [`PgProjections::new`]: the projections run in their
//! own transaction right after the append commits, so a failing inline handler does not roll
//! the append back (the projection stops as failed at that event, as an async one does).
//! [`PgProjections::transactional`] (read models in the store's database): the append, the
//! inline handlers and their checkpoints are one transaction
//! ([`PostgresStore::append_in_transaction`]), so a failing handler rolls the append back.
//!
//! A rebuild replays into a fresh schema (`<schema>__rebuild_<name>`, with `search_path` set
//! to it for `setup` and `apply`) and swaps in one transaction: the projection's old tables
//! are dropped and the fresh ones moved into the read-model schema with
//! `ALTER TABLE ... SET SCHEMA` (PostgreSQL DDL is transactional, so queries see the old
//! tables or the complete new ones). A projection owns every table it creates.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, Row};
use strata_core::{
    AppendError, AppendResult, EventData, EventStore, ExpectedVersion, Filter, Position,
    ReadAllOptions, RecordedEvent, StreamId, Uuid,
};
use strata_postgres::PostgresStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::runner::{
    append_then_apply, stalled, InlineProjections, Progress, ProjectedAppendError, ProjectionInfo,
    ProjectionMode, ProjectionStatus, RebuildProgress, STALL_SLEEP_MS,
};
use super::{HandlerError, ProjectionError};
use crate::limits;

/// A read model in PostgreSQL.
#[async_trait]
pub trait PgProjection: Send + Sync + 'static {
    /// A stable name: the key of its checkpoint and status.
    fn name(&self) -> &str;
    /// The events it wants.
    fn filter(&self) -> Filter;
    /// Creates its tables if they do not exist (`CREATE TABLE IF NOT EXISTS ...`). Runs with
    /// `search_path` set to the read-model schema.
    async fn setup(&self, conn: &mut PgConnection) -> Result<(), HandlerError>;
    /// Applies one event inside the batch's transaction (with `search_path` set to the
    /// read-model schema).
    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError>;

    /// Applies a batch of events (in order, all after the checkpoint) inside one transaction.
    /// The default calls [`PgProjection::apply`] for each; override it to turn a batch into a
    /// few set-based statements (one round trip instead of one per event). On error, return
    /// the index of the event that failed: the batch is rolled back, the events before it are
    /// applied again as a smaller batch, and that event is retried on its own.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), (usize, HandlerError)> {
        for (index, event) in events.iter().enumerate() {
            self.apply(conn, event).await.map_err(|e| (index, e))?;
        }
        Ok(())
    }
}

fn db(e: sqlx::Error) -> ProjectionError {
    ProjectionError::ReadModel(e.to_string())
}

fn to_i64(p: Position) -> i64 {
    i64::try_from(p.0).unwrap_or(i64::MAX)
}

fn from_i64(v: Option<i64>) -> Option<Position> {
    v.map(|v| Position(u64::try_from(v).unwrap_or(0)))
}

/// Read models in one PostgreSQL schema. Its pool's sessions have `search_path` set to the
/// schema, so queries name tables plainly.
#[derive(Debug, Clone)]
pub struct PgReadModels {
    pool: PgPool,
    schema: String,
}

impl PgReadModels {
    /// Connects to `url` and creates `schema` and the checkpoint table if needed. The schema
    /// name must be a plain identifier (letters, digits, `_`).
    pub async fn connect(url: &str, schema: &str) -> Result<Self, ProjectionError> {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ProjectionError::ReadModel(format!(
                "schema {schema:?} is not a plain identifier"
            )));
        }
        let set_path = format!("SET search_path TO \"{schema}\"");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .after_connect(move |conn, _| {
                let set_path = set_path.clone();
                Box::pin(async move {
                    conn.execute(set_path.as_str()).await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(db)?;
        pool.execute(
            format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
                 CREATE TABLE IF NOT EXISTS \"{schema}\".strata_projections (
                     name TEXT PRIMARY KEY, checkpoint BIGINT, status TEXT NOT NULL,
                     last_error TEXT, error_position BIGINT, error_event_id TEXT)"
            )
            .as_str(),
        )
        .await
        .map_err(db)?;
        Ok(PgReadModels {
            pool,
            schema: schema.to_owned(),
        })
    }

    /// The pool (sessions on the read-model schema), for queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }
}

struct PgEntry {
    projection: Arc<dyn PgProjection>,
    filter: Filter,
    inline: bool,
    apply_lock: tokio::sync::Mutex<()>,
    progress: watch::Sender<Progress>,
    paused: StdMutex<bool>,
    rebuilding: AtomicBool,
    task: StdMutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

enum BatchError {
    Handler { index: usize, error: HandlerError },
    Db(ProjectionError),
}

/// Runs projections of one event store into PostgreSQL read models. Cheap to clone.
#[derive(Clone)]
pub struct PgProjections {
    store: Arc<dyn EventStore>,
    models: PgReadModels,
    entries: Arc<RwLock<HashMap<String, Arc<PgEntry>>>>,
    /// Set by [`PgProjections::transactional`]: inline appends go through this store's
    /// `append_in_transaction`, in the same transaction as the inline handlers.
    transactional: Option<PostgresStore>,
}

impl std::fmt::Debug for PgProjections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgProjections")
            .field("schema", &self.models.schema)
            .finish_non_exhaustive()
    }
}

impl PgProjections {
    /// A runner for projections of `store` into `models`.
    pub fn new(store: Arc<dyn EventStore>, models: PgReadModels) -> Self {
        PgProjections {
            store,
            models,
            entries: Arc::new(RwLock::new(HashMap::new())),
            transactional: None,
        }
    }

    /// A runner for projections of `store` into `models` whose inline projections run in the
    /// append's own transaction: [`super::ProjectedStore`] appends with
    /// [`PostgresStore::append_in_transaction`] on a read-model connection, applies every
    /// inline projection up to the appended events and moves their checkpoints, then commits
    /// once. A failing handler rolls the append back
    /// ([`ProjectedAppendError::RolledBack`]). `models` must be in the same database as
    /// `store` (checked: its sessions must see the store's `events` table).
    pub async fn transactional(
        store: PostgresStore,
        models: PgReadModels,
    ) -> Result<Self, ProjectionError> {
        let events = format!("\"{}\".events", store.schema());
        let visible: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&events)
            .fetch_one(&models.pool)
            .await
            .map_err(db)?;
        let store_db: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(store.pool())
            .await
            .map_err(db)?;
        let models_db: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&models.pool)
            .await
            .map_err(db)?;
        if !visible || store_db != models_db {
            return Err(ProjectionError::ReadModel(format!(
                "transactional inline projections need the read models in the store's database: \
                 {events} is not visible from schema {} (database {models_db}, store's {store_db})",
                models.schema
            )));
        }
        let mut this = PgProjections::new(Arc::new(store.clone()), models);
        this.transactional = Some(store);
        Ok(this)
    }

    /// Registers an inline projection (applied by [`super::ProjectedStore`] after each
    /// append, or in the append's transaction with [`PgProjections::transactional`]) and
    /// catches it up with the log.
    pub async fn inline(&self, projection: impl PgProjection) -> Result<(), ProjectionError> {
        let entry = self.register(Arc::new(projection), true).await?;
        if entry.progress.borrow().failed.is_none() {
            self.catch_up(&entry, None).await?;
        }
        Ok(())
    }

    /// Registers an async projection and starts its background task.
    pub async fn spawn(&self, projection: impl PgProjection) -> Result<(), ProjectionError> {
        let entry = self.register(Arc::new(projection), false).await?;
        if entry.progress.borrow().failed.is_none() {
            self.start_task(&entry);
        }
        Ok(())
    }

    async fn register(
        &self,
        projection: Arc<dyn PgProjection>,
        inline: bool,
    ) -> Result<Arc<PgEntry>, ProjectionError> {
        let name = projection.name().to_owned();
        {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            if entries.contains_key(&name) {
                return Err(ProjectionError::AlreadyRegistered(name));
            }
            if entries.len() >= limits::PROJECTIONS_MAX {
                return Err(ProjectionError::TooMany);
            }
        }
        let mut tx = self.models.pool.begin().await.map_err(db)?;
        projection
            .setup(&mut tx)
            .await
            .map_err(|e| ProjectionError::ReadModel(format!("setup of {name} failed: {e}")))?;
        sqlx::query(
            "INSERT INTO strata_projections (name, status) VALUES ($1, 'running')
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&name)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let row = sqlx::query(
            "SELECT checkpoint, status, last_error, error_position, error_event_id
             FROM strata_projections WHERE name = $1",
        )
        .bind(&name)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let status: String = row.get(1);
        let failed = (status == "failed").then(|| ProjectionError::Failed {
            projection: name.clone(),
            position: from_i64(row.get(3)),
            event_id: row
                .get::<Option<String>, _>(4)
                .and_then(|s| Uuid::parse_str(&s).ok()),
            reason: row.get::<Option<String>, _>(2).unwrap_or_default(),
        });
        let entry = Arc::new(PgEntry {
            filter: projection.filter(),
            projection,
            inline,
            apply_lock: tokio::sync::Mutex::new(()),
            progress: watch::Sender::new(Progress {
                through: from_i64(row.get(0)),
                failed,
            }),
            paused: StdMutex::new(status == "paused"),
            rebuilding: AtomicBool::new(false),
            task: StdMutex::new(None),
        });
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.contains_key(&name) {
            return Err(ProjectionError::AlreadyRegistered(name));
        }
        entries.insert(name, entry.clone());
        Ok(entry)
    }

    fn entry(&self, name: &str) -> Result<Arc<PgEntry>, ProjectionError> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| ProjectionError::UnknownProjection(name.to_owned()))
    }

    async fn checkpoint_of(&self, name: &str) -> Result<Option<Position>, ProjectionError> {
        let cp: Option<i64> =
            sqlx::query_scalar("SELECT checkpoint FROM strata_projections WHERE name = $1")
                .bind(name)
                .fetch_one(&self.models.pool)
                .await
                .map_err(db)?;
        Ok(from_i64(cp))
    }

    /// One transaction: lock the checkpoint row, apply the events after it, move it.
    async fn apply_batch(
        &self,
        entry: &PgEntry,
        events: &[RecordedEvent],
        scanned: Option<Position>,
    ) -> Result<Option<Position>, BatchError> {
        let name = entry.projection.name();
        let mut conn = self
            .models
            .pool
            .acquire()
            .await
            .map_err(|e| BatchError::Db(db(e)))?;
        let mut tx = conn.begin().await.map_err(|e| BatchError::Db(db(e)))?;
        let stored: Option<i64> = sqlx::query_scalar(
            "SELECT checkpoint FROM strata_projections WHERE name = $1 FOR UPDATE",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| BatchError::Db(db(e)))?;
        let stored = from_i64(stored);
        let mut checkpoint = stored;
        // Events are in position order: skip those at or below the stored checkpoint.
        let skip = events
            .iter()
            .take_while(|e| stored.is_some_and(|c| e.position <= c))
            .count();
        let fresh = &events[skip..];
        if !fresh.is_empty() {
            entry
                .projection
                .apply_batch(&mut tx, fresh)
                .await
                .map_err(|(index, error)| BatchError::Handler {
                    index: skip + index.min(fresh.len() - 1),
                    error,
                })?;
            checkpoint = fresh.last().map(|e| e.position);
        }
        if let Some(s) = scanned {
            if checkpoint.is_none_or(|c| s > c) {
                checkpoint = Some(s);
            }
        }
        if checkpoint != stored {
            sqlx::query("UPDATE strata_projections SET checkpoint = $2 WHERE name = $1")
                .bind(name)
                .bind(checkpoint.map(to_i64))
                .execute(&mut *tx)
                .await
                .map_err(|e| BatchError::Db(db(e)))?;
        }
        tx.commit().await.map_err(|e| BatchError::Db(db(e)))?;
        Ok(checkpoint)
    }

    async fn step(&self, entry: &PgEntry) -> Result<(Option<Position>, bool), ProjectionError> {
        let checkpoint = self.checkpoint_of(entry.projection.name()).await?;
        let from = checkpoint.map_or(Position::START, |p| Position(p.0 + 1));
        let page = self
            .store
            .read_all(
                ReadAllOptions::forward()
                    .from(from)
                    .limit(limits::PROJECTION_BATCH_MAX_EVENTS)
                    .filter(entry.filter.clone()),
            )
            .await?;
        let scanned = page
            .next
            .and_then(|n| n.0.checked_sub(1))
            .map(Position)
            .filter(|s| *s >= from);
        let events = page.events;
        let mut start = 0;
        loop {
            let error = match self.apply_batch(entry, &events[start..], scanned).await {
                Ok(cp) => return Ok((cp.or(checkpoint), page.is_end)),
                Err(BatchError::Db(e)) => return Err(e),
                Err(BatchError::Handler { index, error }) => {
                    let failing = start + index;
                    if index > 0 {
                        match self.apply_batch(entry, &events[start..failing], None).await {
                            Ok(_) => {}
                            Err(BatchError::Db(e)) => return Err(e),
                            Err(BatchError::Handler { error, .. }) => {
                                return Err(ProjectionError::ReadModel(error.0))
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
                    projection = entry.projection.name(),
                    position = event.position.0,
                    attempt,
                    error = %last,
                    "projection handler failed; retrying"
                );
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(limits::PROJECTION_RETRY_BACKOFF_MS_MAX);
                match self
                    .apply_batch(entry, std::slice::from_ref(event), None)
                    .await
                {
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

    fn publish(entry: &PgEntry, checkpoint: Option<Position>) {
        entry.progress.send_if_modified(|p| {
            let moved = checkpoint > p.through;
            if moved {
                p.through = checkpoint;
            }
            moved
        });
    }

    async fn fail(&self, entry: &PgEntry, error: ProjectionError) {
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
        if let ProjectionError::Failed {
            position,
            event_id,
            reason,
            ..
        } = &error
        {
            let stored = sqlx::query(
                "UPDATE strata_projections SET status = 'failed', last_error = $2,
                        error_position = $3, error_event_id = $4 WHERE name = $1",
            )
            .bind(entry.projection.name())
            .bind(reason)
            .bind(position.map(to_i64))
            .bind(event_id.map(|id| id.to_string()))
            .execute(&self.models.pool)
            .await;
            if let Err(e) = stored {
                tracing::error!(error = %e, "could not record a projection failure");
            }
        }
        entry.progress.send_modify(|p| p.failed = Some(error));
    }

    async fn catch_up(
        &self,
        entry: &PgEntry,
        target: Option<Position>,
    ) -> Result<(), ProjectionError> {
        let _guard = entry.apply_lock.lock().await;
        let mut stalls = 0u32;
        loop {
            if entry.progress.borrow().failed.is_some() {
                return Ok(());
            }
            let before = entry.progress.borrow().through;
            match self.step(entry).await {
                Ok((checkpoint, is_end)) => {
                    Self::publish(entry, checkpoint);
                    if is_end || target.is_some_and(|t| checkpoint >= Some(t)) {
                        return Ok(());
                    }
                    // `$all` held back behind another open transaction: wait a little (at
                    // most a second), then leave the rest to the next append.
                    if checkpoint <= before && stalled(&mut stalls).await {
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

    fn start_task(&self, entry: &Arc<PgEntry>) {
        let mut task = self.task_slot(entry);
        if task.as_ref().is_some_and(|(_, t)| !t.is_finished()) {
            return;
        }
        let (stop_tx, mut stop) = watch::channel(false);
        let this = self.clone();
        let entry = entry.clone();
        let handle = tokio::spawn(async move {
            let mut changes = this.store.changes();
            let mut transient_failures = 0u32;
            let poll = Duration::from_millis(limits::SUBSCRIPTION_POLL_INTERVAL_MS);
            loop {
                if *stop.borrow() {
                    return;
                }
                changes.borrow_and_update();
                let before = entry.progress.borrow().through;
                let outcome = {
                    let _guard = entry.apply_lock.lock().await;
                    this.step(&entry).await
                };
                match outcome {
                    Ok((checkpoint, is_end)) => {
                        transient_failures = 0;
                        Self::publish(&entry, checkpoint);
                        if is_end || checkpoint <= before {
                            tokio::select! {
                                _ = changes.changed() => {}
                                _ = stop.changed() => {}
                                _ = tokio::time::sleep(poll) => {}
                            }
                        }
                    }
                    Err(e @ ProjectionError::Failed { .. }) => {
                        this.fail(&entry, e).await;
                        return;
                    }
                    // The store or the read-model database failed (not the handler): retry with
                    // backoff, then stop as failed.
                    Err(e) if transient_failures < limits::PROJECTION_HANDLER_RETRIES => {
                        transient_failures += 1;
                        tracing::warn!(projection = entry.projection.name(), error = %e, "projection step failed; retrying");
                        let backoff =
                            limits::PROJECTION_RETRY_BACKOFF_MS_INITIAL << transient_failures;
                        tokio::time::sleep(Duration::from_millis(
                            backoff.min(limits::PROJECTION_RETRY_BACKOFF_MS_MAX),
                        ))
                        .await;
                    }
                    Err(e) => {
                        this.fail(&entry, e).await;
                        return;
                    }
                }
            }
        });
        *task = Some((stop_tx, handle));
    }

    fn task_slot<'a>(
        &self,
        entry: &'a PgEntry,
    ) -> std::sync::MutexGuard<'a, Option<(watch::Sender<bool>, JoinHandle<()>)>> {
        entry.task.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn stop_task(&self, entry: &PgEntry) {
        let task = self.task_slot(entry).take();
        if let Some((stop, handle)) = task {
            let _ = stop.send(true);
            let _ = handle.await;
        }
    }

    /// Stops a projection after its current batch.
    pub async fn pause(&self, name: &str) -> Result<(), ProjectionError> {
        let entry = self.entry(name)?;
        *entry.paused.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop_task(&entry).await;
        sqlx::query("UPDATE strata_projections SET status = 'paused' WHERE name = $1 AND status <> 'failed'")
            .bind(name)
            .execute(&self.models.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Runs a paused or failed projection again from its checkpoint.
    pub async fn resume(&self, name: &str) -> Result<(), ProjectionError> {
        let entry = self.entry(name)?;
        sqlx::query(
            "UPDATE strata_projections SET status = 'running', last_error = NULL,
                    error_position = NULL, error_event_id = NULL WHERE name = $1",
        )
        .bind(name)
        .execute(&self.models.pool)
        .await
        .map_err(db)?;
        entry.progress.send_modify(|p| p.failed = None);
        *entry.paused.lock().unwrap_or_else(|p| p.into_inner()) = false;
        if entry.inline {
            self.catch_up(&entry, None).await
        } else {
            self.start_task(&entry);
            Ok(())
        }
    }

    /// Waits until `name` has passed `position`; [`ProjectionError::NotYetConsistent`] on
    /// timeout, [`ProjectionError::Failed`] if it stopped first.
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
        let row = sqlx::query(
            "SELECT checkpoint, status, last_error, error_position, error_event_id
             FROM strata_projections WHERE name = $1",
        )
        .bind(name)
        .fetch_one(&self.models.pool)
        .await
        .map_err(db)?;
        let stored: String = row.get(1);
        let status = if entry.progress.borrow().failed.is_some() || stored == "failed" {
            ProjectionStatus::Failed
        } else if entry.rebuilding.load(Ordering::SeqCst) {
            ProjectionStatus::Rebuilding
        } else if *entry.paused.lock().unwrap_or_else(|p| p.into_inner()) {
            ProjectionStatus::Paused
        } else {
            ProjectionStatus::Running
        };
        let checkpoint = entry.progress.borrow().through.max(from_i64(row.get(0)));
        let head = self.store.head().await?;
        let passed = checkpoint.map_or(0, |c| c.0 + 1);
        let lag_events = head.map_or(0, |h| (h.0 + 1).saturating_sub(passed));
        let mut lag_seconds = 0.0;
        if lag_events > 0 {
            let page = self
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
            mode: if entry.inline {
                ProjectionMode::Inline
            } else {
                ProjectionMode::Async
            },
            status,
            checkpoint,
            lag_events,
            lag_seconds,
            last_error: row.get(2),
            error_position: from_i64(row.get(3)),
            error_event_id: row.get(4),
        })
    }

    /// Every projection, in name order.
    pub async fn list(&self) -> Result<Vec<ProjectionInfo>, ProjectionError> {
        let mut names: Vec<String> = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.push(self.status(&name).await?);
        }
        Ok(out)
    }

    fn rebuild_schema(&self, name: &str) -> String {
        let clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("{}__rebuild_{clean}", self.models.schema)
    }

    /// Rebuilds `name` from position 0 into a fresh schema while the current tables keep
    /// serving (and keep being updated), then swaps the tables in one transaction once the
    /// fresh copy has caught up. `on_progress` is called after every batch. Returns the
    /// checkpoint the swapped-in tables start from.
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
        if result.is_err() {
            let _ = self
                .models
                .pool
                .execute(
                    format!(
                        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                        self.rebuild_schema(name)
                    )
                    .as_str(),
                )
                .await;
        }
        result
    }

    async fn rebuild_inner(
        &self,
        entry: &PgEntry,
        on_progress: &mut (dyn FnMut(&RebuildProgress) + Send),
    ) -> Result<Option<Position>, ProjectionError> {
        let name = entry.projection.name().to_owned();
        let fresh = self.rebuild_schema(&name);
        let target = self.models.schema.clone();
        {
            let mut tx = self.models.pool.begin().await.map_err(db)?;
            tx.execute(
                format!(
                    "DROP SCHEMA IF EXISTS \"{fresh}\" CASCADE; CREATE SCHEMA \"{fresh}\";
                     SET LOCAL search_path TO \"{fresh}\""
                )
                .as_str(),
            )
            .await
            .map_err(db)?;
            entry
                .projection
                .setup(&mut tx)
                .await
                .map_err(|e| ProjectionError::ReadModel(format!("setup of {name} failed: {e}")))?;
            tx.commit().await.map_err(db)?;
        }
        let started = Instant::now();
        let mut applied = 0u64;
        let mut checkpoint: Option<Position> = None;
        let mut report = |applied: u64, position: Option<Position>, head: Option<Position>| {
            let elapsed = started.elapsed();
            let passed = position.map_or(0, |p| p.0 + 1);
            let remaining = head.map_or(0, |h| (h.0 + 1).saturating_sub(passed));
            let rate = passed as f64 / elapsed.as_secs_f64().max(1e-6);
            on_progress(&RebuildProgress {
                projection: name.clone(),
                applied_events: applied,
                position,
                head,
                remaining_events: remaining,
                events_per_second: rate,
                eta: (rate > 0.0).then(|| Duration::from_secs_f64(remaining as f64 / rate)),
                elapsed,
            });
        };
        let mut locked = None;
        loop {
            let from = checkpoint.map_or(Position::START, |p| Position(p.0 + 1));
            let page = self
                .store
                .read_all(
                    ReadAllOptions::forward()
                        .from(from)
                        .limit(limits::PROJECTION_BATCH_MAX_EVENTS)
                        .filter(entry.filter.clone()),
                )
                .await?;
            let mut tx = self.models.pool.begin().await.map_err(db)?;
            tx.execute(format!("SET LOCAL search_path TO \"{fresh}\"").as_str())
                .await
                .map_err(db)?;
            for event in &page.events {
                if let Err(error) = entry.projection.apply(&mut tx, event).await {
                    return Err(ProjectionError::Failed {
                        projection: name.clone(),
                        position: Some(event.position),
                        event_id: Some(event.event_id),
                        reason: format!("during rebuild: {error}"),
                    });
                }
                checkpoint = Some(event.position);
            }
            tx.commit().await.map_err(db)?;
            applied += page.events.len() as u64;
            if let Some(s) = page.next.and_then(|n| n.0.checked_sub(1)).map(Position) {
                checkpoint = checkpoint.max(Some(s));
            }
            report(applied, checkpoint, self.store.head().await?);
            if !page.is_end && page.events.is_empty() {
                tokio::time::sleep(Duration::from_millis(STALL_SLEEP_MS)).await;
            }
            if page.is_end {
                if locked.is_some() {
                    break;
                }
                // Hold off the serving copy's writers for the last events and the swap.
                locked = Some(entry.apply_lock.lock().await);
            }
        }
        let mut tx = self.models.pool.begin().await.map_err(db)?;
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = $1
             AND tablename <> 'strata_projections'",
        )
        .bind(&target)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let fresh_tables: Vec<String> =
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1")
                .bind(&fresh)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
        for t in &fresh_tables {
            if old.contains(t) {
                tx.execute(format!("DROP TABLE \"{target}\".\"{t}\" CASCADE").as_str())
                    .await
                    .map_err(db)?;
            }
            tx.execute(format!("ALTER TABLE \"{fresh}\".\"{t}\" SET SCHEMA \"{target}\"").as_str())
                .await
                .map_err(db)?;
        }
        tx.execute(format!("DROP SCHEMA \"{fresh}\" CASCADE").as_str())
            .await
            .map_err(db)?;
        sqlx::query("UPDATE strata_projections SET checkpoint = $2 WHERE name = $1")
            .bind(&name)
            .bind(checkpoint.map(to_i64))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        drop(locked);
        Self::publish(entry, checkpoint);
        Ok(checkpoint)
    }

    /// Replaces a projection's tables with ones replayed from position 0 and clears a
    /// failure. On PostgreSQL this is a [`PgProjections::rebuild`] (queries never see a
    /// partial model), followed by a resume when the projection had failed.
    pub async fn reset(&self, name: &str) -> Result<Option<Position>, ProjectionError> {
        let checkpoint = self.rebuild(name, |_| {}).await?;
        let entry = self.entry(name)?;
        if entry.progress.borrow().failed.is_some() {
            self.resume(name).await?;
        }
        Ok(checkpoint)
    }

    /// Stops every background task after its current batch.
    pub async fn shutdown(&self) {
        let entries: Vec<Arc<PgEntry>> = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for entry in entries {
            self.stop_task(&entry).await;
        }
    }
}

/// Why one attempt of a transactional inline append failed.
enum TxError {
    Append(AppendError),
    Rolled(ProjectedAppendError),
    Db(String),
}

impl PgProjections {
    /// The transactional inline append: retried in a new transaction when the append lost a
    /// race it cannot settle inside one.
    async fn append_transactional(
        &self,
        pg: &PostgresStore,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, ProjectedAppendError> {
        let mut attempt = 0u32;
        loop {
            let outcome = self
                .append_transactional_once(pg, stream, expected, events.clone())
                .await;
            pg.notify_appended();
            match outcome {
                Ok(Some(result)) => return Ok(result),
                // Nothing appended (an idempotent retry): the events are already stored;
                // apply them the non-transactional way (usually a no-op).
                Ok(None) => return append_then_apply(self, pg, stream, expected, events).await,
                Err(TxError::Append(e))
                    if strata_postgres::is_transaction_race(&e)
                        && attempt < strata_postgres::limits::APPEND_RACE_RETRIES_MAX =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(20)))).await;
                }
                Err(TxError::Append(e)) => return Err(ProjectedAppendError::Append(e)),
                Err(TxError::Rolled(e)) => return Err(e),
                Err(TxError::Db(e)) => {
                    return Err(ProjectedAppendError::Append(AppendError::Storage(format!(
                        "inline projection transaction failed (nothing was appended unless the \
                         commit itself failed): {e}"
                    ))))
                }
            }
        }
    }

    /// One transaction: append, wait until every older append ended (so the positions below
    /// ours are final), then for each inline projection lock its checkpoint row, apply the
    /// events after it up to ours, move it; commit. `Ok(None)`: nothing was appended.
    async fn append_transactional_once(
        &self,
        pg: &PostgresStore,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<Option<AppendResult>, TxError> {
        let dberr = |e: sqlx::Error| TxError::Db(e.to_string());
        let mut tx = self.models.pool.begin().await.map_err(dberr)?;
        let result = pg
            .append_in_transaction(&mut tx, stream, expected, events)
            .await
            .map_err(TxError::Append)?;
        let wait = Duration::from_millis(strata_postgres::limits::READ_YOUR_WRITES_WAIT_MS * 5);
        let appended = pg
            .wait_for_earlier_appends(&mut tx, wait)
            .await
            .map_err(|e| TxError::Db(e.to_string()))?;
        if !appended {
            return Ok(None);
        }
        let mut entries: Vec<Arc<PgEntry>> = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|e| e.inline)
            .cloned()
            .collect();
        entries.sort_by(|a, b| a.projection.name().cmp(b.projection.name()));
        let through = result.last_position();
        let mut guards = Vec::with_capacity(entries.len());
        for entry in &entries {
            guards.push(entry.apply_lock.lock().await);
        }
        let mut moved = Vec::with_capacity(entries.len());
        for entry in &entries {
            let paused = *entry.paused.lock().unwrap_or_else(|p| p.into_inner());
            if paused || entry.progress.borrow().failed.is_some() {
                continue;
            }
            let name = entry.projection.name();
            let stored: Option<i64> = sqlx::query_scalar(
                "SELECT checkpoint FROM strata_projections WHERE name = $1 FOR UPDATE",
            )
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(dberr)?;
            let stored = from_i64(stored);
            if stored >= Some(through) {
                continue;
            }
            let mut from = stored.map_or(Position::START, |p| Position(p.0 + 1));
            loop {
                let page = pg
                    .read_in_transaction(
                        &mut tx,
                        from,
                        through,
                        limits::PROJECTION_BATCH_MAX_EVENTS,
                    )
                    .await
                    .map_err(|e| TxError::Db(e.to_string()))?;
                let Some(last) = page.last().map(|e| e.position) else {
                    break;
                };
                let full = page.len() >= limits::PROJECTION_BATCH_MAX_EVENTS;
                let wanted: Vec<RecordedEvent> = page
                    .into_iter()
                    .filter(|e| entry.filter.matches(e))
                    .collect();
                if !wanted.is_empty() {
                    if let Err((index, error)) =
                        entry.projection.apply_batch(&mut tx, &wanted).await
                    {
                        let event = &wanted[index.min(wanted.len() - 1)];
                        return Err(TxError::Rolled(ProjectedAppendError::RolledBack {
                            projection: name.to_owned(),
                            event_id: event.event_id,
                            reason: error.0,
                        }));
                    }
                }
                from = Position(last.0 + 1);
                if !full || last >= through {
                    break;
                }
            }
            sqlx::query("UPDATE strata_projections SET checkpoint = $2 WHERE name = $1")
                .bind(name)
                .bind(to_i64(through))
                .execute(&mut *tx)
                .await
                .map_err(dberr)?;
            moved.push(entry.clone());
        }
        tx.commit().await.map_err(dberr)?;
        drop(guards);
        for entry in moved {
            Self::publish(&entry, Some(through));
        }
        Ok(Some(result))
    }
}

#[async_trait]
impl InlineProjections for PgProjections {
    async fn append_projected(
        &self,
        store: &dyn EventStore,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, ProjectedAppendError> {
        match &self.transactional {
            Some(pg) => {
                self.append_transactional(pg, stream, expected, events)
                    .await
            }
            None => append_then_apply(self, store, stream, expected, events).await,
        }
    }

    async fn apply_inline(&self, position: Position) -> Result<(), ProjectionError> {
        let inline: Vec<Arc<PgEntry>> = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|e| e.inline)
            .cloned()
            .collect();
        let mut first_error = None;
        for entry in inline {
            let paused = *entry.paused.lock().unwrap_or_else(|p| p.into_inner());
            let progress = entry.progress.borrow().clone();
            if paused || progress.failed.is_some() || progress.through >= Some(position) {
                continue;
            }
            if let Err(e) = self.catch_up(&entry, Some(position)).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
