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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, Row};
use strata_core::{
    AppendError, AppendResult, EventData, EventStore, ExpectedVersion, Filter, Position,
    RecordedEvent, StreamId, Subscription, Uuid,
};
use strata_postgres::{EarlierAppends, PostgresStore};

use super::common::{self, BatchError, RebuildReporter, Registry, Runner, Stepped, Stored};
use super::model::{
    append_then_apply, InlineProjections, ProjectedAppendError, ProjectionInfo, ProjectionMode,
    RebuildProgress,
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
    /// `search_path` set to the read-model schema, in a transaction holding the schema's DDL
    /// lock, so processes registering it at once take turns.
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
    ProjectionError::ReadModel(strata_core::BackendError::with_source(e.to_string(), e))
}

fn to_i64(p: Position) -> i64 {
    i64::try_from(p.0).unwrap_or(i64::MAX)
}

fn from_i64(v: Option<i64>) -> Option<Position> {
    v.map(|v| Position(u64::try_from(v).unwrap_or(0)))
}

/// The key of the advisory lock every DDL transaction on the read-model schema `schema` takes
/// first (creating the schema and the checkpoint table, a projection's `setup`, a rebuild's
/// scratch schema and swap). PostgreSQL's `CREATE ... IF NOT EXISTS` is not safe against a
/// concurrent twin: two sessions both find the name free and the second fails on a catalog
/// unique index (`pg_namespace_nspname_index`, `pg_type_typname_nsp_index`), so several
/// processes starting together on a fresh schema take turns instead. FNV-1a, 64 bits: the
/// same key in every process and version (unlike `std`'s hasher), and a different purpose
/// prefix from the event store's own locks.
pub(crate) fn ddl_lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "strata-read-models"
        .bytes()
        .chain([0u8])
        .chain(schema.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
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
            return Err(ProjectionError::ReadModel(
                (format!("schema {schema:?} is not a plain identifier")).into(),
            ));
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
        let models = PgReadModels {
            pool,
            schema: schema.to_owned(),
        };
        let mut tx = models.begin_ddl().await?;
        tx.execute(
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
        tx.commit().await.map_err(db)?;
        Ok(models)
    }

    /// A transaction holding the schema's DDL lock (see [`ddl_lock_key`]) until it ends.
    async fn begin_ddl(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ProjectionError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ddl_lock_key(&self.schema))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        Ok(tx)
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

/// A projection the PostgreSQL runner has registered (its transactions come from the pool).
type PgEntry = common::Entry<dyn PgProjection, ()>;

/// Runs projections of one event store into PostgreSQL read models. Cheap to clone.
#[derive(Clone)]
pub struct PgProjections {
    store: Arc<dyn EventStore>,
    models: PgReadModels,
    entries: Arc<Registry<PgEntry>>,
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
            entries: Arc::new(Registry::default()),
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
            return Err(ProjectionError::ReadModel(
                (format!(
                "transactional inline projections need the read models in the store's database: \
                 {events} is not visible from schema {} (database {models_db}, store's {store_db})",
                models.schema
            ))
                .into(),
            ));
        }
        let mut this = PgProjections::new(Arc::new(store.clone()), models);
        this.transactional = Some(store);
        Ok(this)
    }

    /// Registers an inline projection (applied by [`super::ProjectedStore`] after each
    /// append, or in the append's transaction with [`PgProjections::transactional`]) and
    /// catches it up with the log.
    pub async fn inline(&self, projection: impl PgProjection) -> Result<(), ProjectionError> {
        let entry = self
            .register(Arc::new(projection), ProjectionMode::Inline)
            .await?;
        if entry.progress.borrow().failed.is_none() {
            common::catch_up(self, &entry, None).await?;
        }
        Ok(())
    }

    /// Registers an async projection and starts its background task.
    pub async fn spawn(&self, projection: impl PgProjection) -> Result<(), ProjectionError> {
        let entry = self
            .register(Arc::new(projection), ProjectionMode::Async)
            .await?;
        if entry.progress.borrow().failed.is_none() {
            common::start_task(self, &entry);
        }
        Ok(())
    }

    async fn register(
        &self,
        projection: Arc<dyn PgProjection>,
        mode: ProjectionMode,
    ) -> Result<Arc<PgEntry>, ProjectionError> {
        let name = projection.name().to_owned();
        self.entries.check_free(&name)?;
        let mut tx = self.models.begin_ddl().await?;
        projection.setup(&mut tx).await.map_err(|e| {
            ProjectionError::ReadModel((format!("setup of {name} failed: {e}")).into())
        })?;
        sqlx::query(
            "INSERT INTO strata_projections (name, status) VALUES ($1, 'running')
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&name)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let stored = self.stored(&mut *tx, &name).await?;
        tx.commit().await.map_err(db)?;
        let entry = PgEntry::new(
            name.clone(),
            projection.clone(),
            projection.filter(),
            mode,
            (),
            &stored,
        );
        self.entries.insert(name, entry)
    }

    /// The projection's row in `strata_projections`.
    async fn stored(
        &self,
        conn: impl sqlx::PgExecutor<'_>,
        name: &str,
    ) -> Result<Stored, ProjectionError> {
        let row = sqlx::query(
            "SELECT checkpoint, status, last_error, error_position, error_event_id
             FROM strata_projections WHERE name = $1",
        )
        .bind(name)
        .fetch_one(conn)
        .await
        .map_err(db)?;
        Ok(Stored {
            checkpoint: from_i64(row.get(0)),
            status: common::StoredStatus::from_column(row.get(1))?,
            last_error: row.get(2),
            error_position: from_i64(row.get(3)),
            error_event_id: row.get(4),
        })
    }

    fn entry(&self, name: &str) -> Result<Arc<PgEntry>, ProjectionError> {
        self.entries.get(name)
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

    /// Reads one page after the checkpoint and applies it (with retries).
    async fn step(
        &self,
        entry: &PgEntry,
        sub: &mut Subscription,
    ) -> Result<Stepped, ProjectionError> {
        let checkpoint = self.checkpoint_of(&entry.name).await?;
        let batch = common::read_after(sub, checkpoint).await?;
        let events = &batch.events;
        let apply = |range: std::ops::Range<usize>, scanned: Option<Position>| {
            self.apply_batch(entry, &events[range], scanned)
        };
        let applied = common::apply_with_retry(&entry.name, events, batch.through, apply).await?;
        Ok(Stepped {
            checkpoint: applied.or(checkpoint),
            is_end: batch.is_end,
        })
    }

    /// Stops a projection after its current batch.
    pub async fn pause(&self, name: &str) -> Result<(), ProjectionError> {
        let entry = self.entry(name)?;
        entry.set_paused(true);
        entry.stop_task().await;
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
        let clear_stored = async {
            sqlx::query(
                "UPDATE strata_projections SET status = 'running', last_error = NULL,
                        error_position = NULL, error_event_id = NULL WHERE name = $1",
            )
            .bind(name)
            .execute(&self.models.pool)
            .await
            .map(drop)
            .map_err(db)
        };
        entry.clear_failure(clear_stored).await?;
        entry.set_paused(false);
        match entry.mode {
            ProjectionMode::Inline => common::catch_up(self, &entry, None).await,
            ProjectionMode::Async => {
                common::start_task(self, &entry);
                Ok(())
            }
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
        let claim = entry.claim_rebuild()?;
        let result = self.rebuild_inner(&entry, &mut on_progress).await;
        // The scratch schema of a failed rebuild is dropped while the claim is still held: a
        // rebuild that starts right after must not have its fresh schema dropped under it.
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
        drop(claim);
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
            let mut tx = self.models.begin_ddl().await?;
            tx.execute(
                format!(
                    "DROP SCHEMA IF EXISTS \"{fresh}\" CASCADE; CREATE SCHEMA \"{fresh}\";
                     SET LOCAL search_path TO \"{fresh}\""
                )
                .as_str(),
            )
            .await
            .map_err(db)?;
            entry.projection.setup(&mut tx).await.map_err(|e| {
                ProjectionError::ReadModel((format!("setup of {name} failed: {e}")).into())
            })?;
            tx.commit().await.map_err(db)?;
        }
        let reporter = RebuildReporter::start(&name);
        let mut sub = common::subscribe(&self.store, &entry.filter, None).await?;
        let mut applied = 0u64;
        let mut checkpoint: Option<Position> = None;
        let mut locked = None;
        loop {
            let batch = sub.try_next_batch().await?;
            let mut tx = self.models.pool.begin().await.map_err(db)?;
            tx.execute(format!("SET LOCAL search_path TO \"{fresh}\"").as_str())
                .await
                .map_err(db)?;
            for event in &batch.events {
                if let Err(error) = entry.projection.apply(&mut tx, event).await {
                    return Err(ProjectionError::Failed {
                        projection: name.clone(),
                        position: Some(event.position),
                        event_id: Some(event.event_id),
                        reason: format!("during rebuild: {error}"),
                    });
                }
            }
            tx.commit().await.map_err(db)?;
            applied += batch.events.len() as u64;
            let before = checkpoint;
            checkpoint = checkpoint.max(batch.through);
            on_progress(&reporter.progress(applied, checkpoint, self.store.head().await?));
            if batch.is_end {
                if locked.is_some() {
                    break;
                }
                // Hold off the serving copy's writers for the last events and the swap.
                locked = Some(entry.apply_lock.lock().await);
            } else if checkpoint <= before {
                // Held back (see `common::catch_up`): wait for the store to move.
                sub.changed().await;
            }
        }
        let mut tx = self.models.begin_ddl().await?;
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
        entry.publish(checkpoint);
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
        common::shutdown(self).await;
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
                    return Err(ProjectedAppendError::Append(AppendError::Storage(
                        (format!(
                        "inline projection transaction failed (nothing was appended unless the \
                         commit itself failed): {e}"
                    ))
                        .into(),
                    )))
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
        match pg
            .wait_for_earlier_appends(&mut tx, wait)
            .await
            .map_err(|e| TxError::Db(e.to_string()))?
        {
            EarlierAppends::Ended => {}
            EarlierAppends::NothingAppended => return Ok(None),
            EarlierAppends::RollBack => {
                // At once, not when `tx` is dropped: the older append it blocks goes on now,
                // before the retry can come between again.
                tx.rollback().await.map_err(dberr)?;
                return Err(TxError::Append(AppendError::Race {
                    stream: stream.clone(),
                    reason: "an older append waited for this one, which would have waited for \
                             older appends"
                        .to_owned(),
                }));
            }
        }
        let mut entries = self.entries.select(|e| e.mode == ProjectionMode::Inline);
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let through = result.last_position();
        let mut guards = Vec::with_capacity(entries.len());
        for entry in &entries {
            guards.push(entry.apply_lock.lock().await);
        }
        let mut moved = Vec::with_capacity(entries.len());
        for entry in &entries {
            if entry.paused() || entry.progress.borrow().failed.is_some() {
                continue;
            }
            let name = entry.name.as_str();
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
                // Without what streams' lifecycles hide, as every other read leaves it out.
                let page = pg
                    .visible_in_transaction(&mut tx, page)
                    .await
                    .map_err(|e| TxError::Db(e.to_string()))?;
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
                            reason: error.to_string(),
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
            entry.publish(Some(through));
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
        common::apply_inline(self, position).await
    }
}

#[async_trait]
impl Runner for PgProjections {
    type Projection = dyn PgProjection;
    type Conn = ();

    fn event_store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    fn registry(&self) -> &Registry<PgEntry> {
        &self.entries
    }

    async fn step_live(
        &self,
        entry: &PgEntry,
        sub: &mut Subscription,
    ) -> Result<Stepped, ProjectionError> {
        self.step(entry, sub).await
    }

    async fn read_stored(&self, entry: &PgEntry) -> Result<Stored, ProjectionError> {
        self.stored(&self.models.pool, &entry.name).await
    }

    async fn record_failure(
        &self,
        entry: &PgEntry,
        reason: String,
        position: Option<Position>,
        event_id: Option<Uuid>,
    ) -> Result<(), ProjectionError> {
        sqlx::query(
            "UPDATE strata_projections SET status = 'failed', last_error = $2,
                    error_position = $3, error_event_id = $4 WHERE name = $1",
        )
        .bind(&entry.name)
        .bind(reason)
        .bind(position.map(to_i64))
        .bind(event_id.map(|id| id.to_string()))
        .execute(&self.models.pool)
        .await
        .map_err(db)?;
        Ok(())
    }
}
