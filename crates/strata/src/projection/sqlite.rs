//! The SQLite read-model store: the projection's tables, its checkpoint and its status live
//! in one database file, and every batch of events is one transaction that changes both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use strata_core::{Position, RecordedEvent, Uuid};

use super::{HandlerError, Projection, ProjectionError};
use crate::limits;

/// Where read models live on the embedded store: one SQLite database file, by default next to
/// the event store's data directory (`/data/strata` → `/data/strata.read-models.sqlite`).
///
/// Queries open their own connections with [`SqliteReadModels::connect`] and read the
/// projection's tables by their plain names: those are views onto the generation currently
/// serving, so a rebuild swaps them atomically.
#[derive(Debug, Clone)]
pub struct SqliteReadModels {
    path: PathBuf,
}

impl SqliteReadModels {
    /// Opens (creating if needed) the read-model database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ProjectionError> {
        let models = SqliteReadModels {
            path: path.as_ref().to_path_buf(),
        };
        let conn = models.connect()?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS strata_projections (
                name TEXT PRIMARY KEY,
                generation INTEGER NOT NULL,
                checkpoint INTEGER,
                status TEXT NOT NULL,
                last_error TEXT,
                error_position INTEGER,
                error_event_id TEXT,
                rebuild_generation INTEGER,
                rebuild_checkpoint INTEGER
            );",
        )
        .map_err(db)?;
        Ok(models)
    }

    /// Opens the read-model database that belongs next to the store directory `data_dir`.
    pub fn next_to(data_dir: impl AsRef<Path>) -> Result<Self, ProjectionError> {
        Self::open(Self::path_next_to(data_dir))
    }

    /// The read-model file for the store directory `data_dir`.
    pub fn path_next_to(data_dir: impl AsRef<Path>) -> PathBuf {
        let dir = data_dir.as_ref();
        let mut name = dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "strata".into());
        name.push(".read-models.sqlite");
        dir.with_file_name(name)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every projection recorded in this database, as stored (name order), without
    /// registering any: what a CLI or another process can show (`strata projections`).
    pub fn stored(&self) -> Result<Vec<StoredProjection>, ProjectionError> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare(
                "SELECT name, generation, checkpoint, status, last_error, error_position,
                        error_event_id, rebuild_generation IS NOT NULL
                 FROM strata_projections ORDER BY name",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredProjection {
                    name: r.get(0)?,
                    generation: r.get(1)?,
                    checkpoint: from_i64(r.get(2)?),
                    status: r.get(3)?,
                    last_error: r.get(4)?,
                    error_position: from_i64(r.get(5)?),
                    error_event_id: r.get(6)?,
                    rebuild_started: r.get(7)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    /// Copies the write-ahead log into the database file and truncates it to nothing, so that
    /// no older version of a page (a row deleted since, say) stays in the log file. Waits for
    /// readers to finish; call it after a read model forgot someone.
    pub fn truncate_wal(&self) -> Result<(), ProjectionError> {
        let conn = self.connect()?;
        let (busy, _, _): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(db)?;
        if busy != 0 {
            return Err(ProjectionError::ReadModel(
                "the write-ahead log was not truncated: a reader or writer held it".into(),
            ));
        }
        Ok(())
    }

    /// A new connection, for queries (WAL mode: readers never block the projections).
    pub fn connect(&self) -> Result<Connection, ProjectionError> {
        let conn = Connection::open(&self.path).map_err(db)?;
        conn.busy_timeout(Duration::from_millis(
            limits::PROJECTION_SQLITE_BUSY_TIMEOUT_MS,
        ))
        .map_err(db)?;
        // WAL: readers see the last committed state while a batch is written. NORMAL sync in
        // WAL mode is durable against process crashes (the case the checkpoint protects
        // against); a power loss may drop the last transactions, which are then re-applied
        // from the event log because their checkpoint went with them.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        // A deleted row's bytes are overwritten, not left in a free page: a read model that
        // forgets a data subject (crypto-shredding, docs/gdpr.md) keeps nothing of theirs in
        // the file. The WAL holds a page's older versions until a checkpoint truncates it
        // (`truncate_wal`).
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(db)?;
        Ok(conn)
    }
}

/// One projection's row in the read-model database, as [`SqliteReadModels::stored`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredProjection {
    /// Its name.
    pub name: String,
    /// The generation of tables serving queries.
    pub generation: i64,
    /// The last position it has passed.
    pub checkpoint: Option<Position>,
    /// `running`, `paused` or `failed` (as last recorded).
    pub status: String,
    /// The error it stopped on.
    pub last_error: Option<String>,
    /// The position of the event it stopped on.
    pub error_position: Option<Position>,
    /// The id of that event.
    pub error_event_id: Option<String>,
    /// Whether a rebuild was started and has not been swapped in (running now, or abandoned).
    pub rebuild_started: bool,
}

/// The handle a projection writes its read model through: ordinary SQL inside the batch's
/// transaction, with `{table}` placeholders for the projection's tables (see
/// [`Projection::tables`]) so the same handler writes the serving copy or a rebuild's fresh
/// copy.
///
/// ```ignore
/// sql.execute("UPDATE {balances} SET balance = balance + ?1 WHERE account_id = ?2",
///             rusqlite::params![amount, account])?;
/// ```
pub struct Sql<'a> {
    tx: &'a Transaction<'a>,
    tables: &'a [&'static str],
    generation: i64,
}

impl<'a> Sql<'a> {
    /// The physical name of `table` in the generation being written.
    pub fn table(&self, table: &str) -> String {
        physical(table, self.generation)
    }

    /// `sql` with every `{table}` placeholder replaced by its physical name.
    pub fn expand(&self, sql: &str) -> String {
        let mut out = sql.to_owned();
        for t in self.tables {
            let placeholder = format!("{{{t}}}");
            if out.contains(&placeholder) {
                out = out.replace(&placeholder, &self.table(t));
            }
        }
        out
    }

    /// Runs one statement (cached), returning the number of rows changed.
    pub fn execute(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize, HandlerError> {
        let mut stmt = self.tx.prepare_cached(&self.expand(sql))?;
        Ok(stmt.execute(params)?)
    }

    /// Runs several statements without parameters (DDL in [`Projection::setup`]).
    pub fn execute_batch(&self, sql: &str) -> Result<(), HandlerError> {
        Ok(self.tx.execute_batch(&self.expand(sql))?)
    }

    /// The first row of a query, mapped by `f`; `None` when there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, HandlerError> {
        let mut stmt = self.tx.prepare_cached(&self.expand(sql))?;
        Ok(stmt.query_row(params, f).optional()?)
    }

    /// The transaction itself, for anything the helpers do not cover. Use
    /// [`Sql::expand`] on SQL that names the projection's tables.
    pub fn transaction(&self) -> &Transaction<'a> {
        self.tx
    }
}

pub(crate) fn physical(table: &str, generation: i64) -> String {
    format!("{table}__g{generation}")
}

pub(crate) fn db(e: rusqlite::Error) -> ProjectionError {
    ProjectionError::ReadModel(strata_core::BackendError::with_source(e.to_string(), e))
}

fn to_i64(p: Position) -> i64 {
    i64::try_from(p.0).unwrap_or(i64::MAX)
}

fn from_i64(v: Option<i64>) -> Option<Position> {
    v.map(|v| Position(u64::try_from(v).unwrap_or(0)))
}

/// Which copy of a projection a batch writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The copy serving queries.
    Live,
    /// A rebuild's fresh copy.
    Rebuild,
}

/// One projection's row in `strata_projections`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    pub generation: i64,
    pub checkpoint: Option<Position>,
    pub status: String,
    pub last_error: Option<String>,
    pub error_position: Option<Position>,
    pub error_event_id: Option<String>,
    pub rebuild_generation: Option<i64>,
    pub rebuild_checkpoint: Option<Position>,
}

pub(crate) fn read_meta(conn: &Connection, name: &str) -> Result<Option<Meta>, ProjectionError> {
    conn.query_row(
        "SELECT generation, checkpoint, status, last_error, error_position, error_event_id,
                rebuild_generation, rebuild_checkpoint
         FROM strata_projections WHERE name = ?1",
        [name],
        |r| {
            Ok(Meta {
                generation: r.get(0)?,
                checkpoint: from_i64(r.get(1)?),
                status: r.get(2)?,
                last_error: r.get(3)?,
                error_position: from_i64(r.get(4)?),
                error_event_id: r.get(5)?,
                rebuild_generation: r.get(6)?,
                rebuild_checkpoint: from_i64(r.get(7)?),
            })
        },
    )
    .optional()
    .map_err(db)
}

/// Creates the projection's row, tables and views when they do not exist yet.
pub(crate) fn ensure(conn: &mut Connection, p: &dyn Projection) -> Result<Meta, ProjectionError> {
    if let Some(meta) = read_meta(conn, p.name())? {
        return Ok(meta);
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    // Another process may have created it since the check above; the write lock settles it.
    if let Some(meta) = read_meta(&tx, p.name())? {
        return Ok(meta);
    }
    create_generation(&tx, p, 1)?;
    point_views(&tx, p, None, 1)?;
    tx.execute(
        "INSERT INTO strata_projections (name, generation, status) VALUES (?1, 1, 'running')",
        [p.name()],
    )
    .map_err(db)?;
    tx.commit().map_err(db)?;
    read_meta(conn, p.name())?.ok_or_else(|| ProjectionError::ReadModel("row vanished".into()))
}

fn create_generation(
    tx: &Transaction<'_>,
    p: &dyn Projection,
    generation: i64,
) -> Result<(), ProjectionError> {
    for t in p.tables() {
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS \"{}\";",
            physical(t, generation)
        ))
        .map_err(db)?;
    }
    let sql = Sql {
        tx,
        tables: p.tables(),
        generation,
    };
    p.setup(&sql).map_err(|e| {
        ProjectionError::ReadModel((format!("setup of projection {} failed: {e}", p.name())).into())
    })
}

fn point_views(
    tx: &Transaction<'_>,
    p: &dyn Projection,
    drop_generation: Option<i64>,
    generation: i64,
) -> Result<(), ProjectionError> {
    for t in p.tables() {
        tx.execute_batch(&format!(
            "DROP VIEW IF EXISTS \"{t}\"; CREATE VIEW \"{t}\" AS SELECT * FROM \"{}\";",
            physical(t, generation)
        ))
        .map_err(db)?;
        if let Some(old) = drop_generation {
            tx.execute_batch(&format!("DROP TABLE IF EXISTS \"{}\";", physical(t, old)))
                .map_err(db)?;
        }
    }
    Ok(())
}

pub(crate) fn set_status(
    conn: &Connection,
    name: &str,
    status: super::common::StoredStatus,
) -> Result<(), ProjectionError> {
    conn.execute(
        "UPDATE strata_projections SET status = ?2 WHERE name = ?1",
        rusqlite::params![name, status.as_str()],
    )
    .map_err(db)?;
    Ok(())
}

pub(crate) fn set_failed(
    conn: &Connection,
    name: &str,
    reason: &str,
    position: Option<Position>,
    event_id: Option<Uuid>,
) -> Result<(), ProjectionError> {
    conn.execute(
        "UPDATE strata_projections SET status = 'failed', last_error = ?2, error_position = ?3,
                error_event_id = ?4 WHERE name = ?1",
        rusqlite::params![
            name,
            reason,
            position.map(to_i64),
            event_id.map(|id| id.to_string())
        ],
    )
    .map_err(db)?;
    Ok(())
}

pub(crate) fn clear_error(conn: &Connection, name: &str) -> Result<(), ProjectionError> {
    conn.execute(
        "UPDATE strata_projections SET last_error = NULL, error_position = NULL,
                error_event_id = NULL WHERE name = ?1",
        [name],
    )
    .map_err(db)?;
    Ok(())
}

/// Empties the serving copy and its checkpoint (the projection then replays from 0).
pub(crate) fn reset(conn: &mut Connection, p: &dyn Projection) -> Result<(), ProjectionError> {
    let meta = ensure(conn, p)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    create_generation(&tx, p, meta.generation)?;
    point_views(&tx, p, None, meta.generation)?;
    tx.execute(
        "UPDATE strata_projections SET checkpoint = NULL, last_error = NULL,
                error_position = NULL, error_event_id = NULL WHERE name = ?1",
        [p.name()],
    )
    .map_err(db)?;
    tx.commit().map_err(db)
}

/// Starts a rebuild: fresh tables in a new generation, which queries do not see yet.
pub(crate) fn begin_rebuild(
    conn: &mut Connection,
    p: &dyn Projection,
) -> Result<i64, ProjectionError> {
    let meta = ensure(conn, p)?;
    let generation = meta.generation.max(meta.rebuild_generation.unwrap_or(0)) + 1;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    if let Some(stale) = meta.rebuild_generation {
        for t in p.tables() {
            tx.execute_batch(&format!("DROP TABLE IF EXISTS \"{}\";", physical(t, stale)))
                .map_err(db)?;
        }
    }
    create_generation(&tx, p, generation)?;
    tx.execute(
        "UPDATE strata_projections SET rebuild_generation = ?2, rebuild_checkpoint = NULL
         WHERE name = ?1",
        rusqlite::params![p.name(), generation],
    )
    .map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(generation)
}

/// Swaps the rebuilt copy in: views, generation and checkpoint change in one transaction, and
/// the old tables are dropped in it too.
pub(crate) fn finish_rebuild(
    conn: &mut Connection,
    p: &dyn Projection,
) -> Result<Option<Position>, ProjectionError> {
    let meta = read_meta(conn, p.name())?
        .ok_or_else(|| ProjectionError::UnknownProjection(p.name().to_owned()))?;
    let generation = meta
        .rebuild_generation
        .ok_or_else(|| ProjectionError::ReadModel("no rebuild in progress".into()))?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    point_views(&tx, p, Some(meta.generation), generation)?;
    tx.execute(
        "UPDATE strata_projections SET generation = ?2, checkpoint = rebuild_checkpoint,
                rebuild_generation = NULL, rebuild_checkpoint = NULL WHERE name = ?1",
        rusqlite::params![p.name(), generation],
    )
    .map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(meta.rebuild_checkpoint)
}

/// The checkpoint of `target`.
pub(crate) fn checkpoint(
    conn: &Connection,
    name: &str,
    target: Target,
) -> Result<Option<Position>, ProjectionError> {
    let meta = read_meta(conn, name)?
        .ok_or_else(|| ProjectionError::UnknownProjection(name.to_owned()))?;
    Ok(match target {
        Target::Live => meta.checkpoint,
        Target::Rebuild => meta.rebuild_checkpoint,
    })
}

/// Why a batch did not commit.
#[derive(Debug)]
pub(crate) enum BatchError {
    /// The handler failed on `events[index]`; nothing of the batch was written.
    Handler { index: usize, error: HandlerError },
    /// The database failed.
    Db(ProjectionError),
}

/// Every writing transaction is `BEGIN IMMEDIATE`: it takes SQLite's write lock before it reads
/// the checkpoint, so two writers of one file (several projections, or two processes) queue
/// on the busy timeout instead of one failing with a stale snapshot when it upgrades.
///
/// Applies `events` (those after the stored checkpoint) and moves the checkpoint to the last
/// of them, or to `scanned_through` when that is further (events the filter skipped), in one
/// transaction. Returns the new checkpoint.
pub(crate) fn apply_batch(
    conn: &mut Connection,
    p: &dyn Projection,
    target: Target,
    events: &[RecordedEvent],
    scanned_through: Option<Position>,
) -> Result<Option<Position>, BatchError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| BatchError::Db(db(e)))?;
    let meta = read_meta(&tx, p.name())
        .map_err(BatchError::Db)?
        .ok_or_else(|| BatchError::Db(ProjectionError::UnknownProjection(p.name().into())))?;
    let (generation, stored) = match target {
        Target::Live => (meta.generation, meta.checkpoint),
        Target::Rebuild => match meta.rebuild_generation {
            Some(g) => (g, meta.rebuild_checkpoint),
            None => {
                return Err(BatchError::Db(ProjectionError::ReadModel(
                    "no rebuild in progress".into(),
                )))
            }
        },
    };
    let mut checkpoint = stored;
    {
        let sql = Sql {
            tx: &tx,
            tables: p.tables(),
            generation,
        };
        for (index, event) in events.iter().enumerate() {
            // The checkpoint is read in this transaction: an event at or below it was
            // applied already (by an inline caller, or before a rebuild's swap), so skipping
            // it here is what makes delivery at least once but application exactly once.
            if stored.is_some_and(|c| event.position <= c) {
                continue;
            }
            p.apply(&sql, event)
                .map_err(|error| BatchError::Handler { index, error })?;
            checkpoint = Some(event.position);
        }
    }
    if let Some(s) = scanned_through {
        if checkpoint.is_none_or(|c| s > c) {
            checkpoint = Some(s);
        }
    }
    if checkpoint != stored {
        let column = match target {
            Target::Live => "checkpoint",
            Target::Rebuild => "rebuild_checkpoint",
        };
        tx.execute(
            &format!("UPDATE strata_projections SET {column} = ?2 WHERE name = ?1"),
            rusqlite::params![p.name(), checkpoint.map(to_i64)],
        )
        .map_err(|e| BatchError::Db(db(e)))?;
        tx.commit().map_err(|e| BatchError::Db(db(e)))?;
    }
    Ok(checkpoint)
}
