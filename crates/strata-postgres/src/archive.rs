//! What an archive needs of a PostgreSQL store: its id, its final rows read whole (events
//! readers no longer see included) for export, and archived events taken back in with their
//! positions, versions, ids and times (`0007_import.sql`). `strata-archive` writes the rows
//! into the archive's format and reads them back out of it.

use std::collections::HashMap;

use sqlx::Row;
use strata_core::{ReadError, RecordedEvent};

use crate::error::read_error;
use crate::read::{event_from_row, to_i64};
use crate::store::PostgresStore;

/// Why [`PostgresStore::import_events`] took nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The store has taken positions at or past the first one imported: a restore goes into
    /// an empty store only, and its batches in position order.
    #[error(
        "position {position} cannot be imported: {}",
        match taken_up_to {
            Some(last) => format!("the store has taken positions up to {last}"),
            None => "the store has taken none, and the import expected some".to_owned(),
        }
    )]
    PositionsTaken {
        /// The first position of the batch.
        position: u64,
        /// The last position the store has taken (`None`: none).
        taken_up_to: Option<u64>,
    },
    /// PostgreSQL cannot store an event as it is (metadata holding U+0000, say).
    #[error("the event at position {position} cannot be stored: {reason}")]
    Unstorable {
        /// Its position.
        position: u64,
        /// Why.
        reason: String,
    },
    /// The database failed or could not be reached.
    #[error(transparent)]
    Store(#[from] ReadError),
}

/// An export's hold on its store: one export or scavenge of a store runs at a time, across
/// processes (a session advisory lock on a connection of its own; dropping the hold closes
/// it, which releases the lock).
pub struct ExportHold {
    conn: sqlx::PgConnection,
    key: i64,
}

impl ExportHold {
    /// Releases the hold now (a dropped one is released when its connection's session ends).
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut self.conn)
            .await;
        let _ = sqlx::Connection::close(self.conn).await;
    }
}

impl std::fmt::Debug for ExportHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportHold").finish_non_exhaustive()
    }
}

const STORE_ID: &str = "SELECT id FROM {schema}.strata_store";

const SET_STORE_ID: &str = "UPDATE {schema}.strata_store SET id = $1";

/// Whether the store holds no event and has taken no position.
const IS_EMPTY: &str = "SELECT NOT EXISTS (SELECT 1 FROM {schema}.events)
    AND NOT (SELECT s.is_called FROM {schema}.events_position_seq s)";

/// The rows from position `$1` below `$2`, at most `$3`, cut once they pass `$4` bytes of
/// payload and metadata (the first always comes).
const EXPORT_PAGE: &str = "SELECT {cols} FROM (
        SELECT e.*, sum(octet_length(e.data_bytes) + coalesce(octet_length(e.metadata::text), 0))
                        OVER (ORDER BY e.position) AS upto,
               octet_length(e.data_bytes) + coalesce(octet_length(e.metadata::text), 0) AS own
          FROM (SELECT * FROM {schema}.events x
                 WHERE x.position >= $1 AND x.position < $2
                 ORDER BY x.position LIMIT $3) e) e
     WHERE e.upto - e.own < $4
     ORDER BY e.position";

/// For each stream of `$1` and version of `$2`: the last version stored below it.
const VERSIONS_BEFORE: &str = "SELECT s.id, (SELECT x.version FROM {schema}.events x
                        WHERE x.aggregate_id = s.id AND x.version < s.v
                        ORDER BY x.version DESC LIMIT 1)
      FROM unnest($1::text[], $2::bigint[]) AS s(id, v)";

const IMPORT: &str =
    "SELECT {schema}.strata_import($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

const SKIP_POSITIONS: &str = "SELECT {schema}.strata_skip_positions($1, $2)";

const HOLDS_EVENT: &str = "SELECT (SELECT x.event_id FROM {schema}.events x WHERE x.position = $1),
        (SELECT x.position FROM {schema}.events x WHERE x.event_id = $2)";

const LAST_TAKEN: &str = "SELECT s.is_called, s.last_value FROM {schema}.events_position_seq s";

/// The archive's statements, rendered for the store's schema once.
pub(crate) struct ArchiveSql {
    store_id: String,
    set_store_id: String,
    is_empty: String,
    export_page: String,
    versions_before: String,
    import: String,
    skip_positions: String,
    holds_event: String,
    last_taken: String,
}

impl ArchiveSql {
    /// The statements, with `render` filling in the schema and the event columns.
    pub(crate) fn new(render: &dyn Fn(&str) -> String) -> ArchiveSql {
        ArchiveSql {
            store_id: render(STORE_ID),
            set_store_id: render(SET_STORE_ID),
            is_empty: render(IS_EMPTY),
            export_page: render(EXPORT_PAGE),
            versions_before: render(VERSIONS_BEFORE),
            import: render(IMPORT),
            skip_positions: render(SKIP_POSITIONS),
            holds_event: render(HOLDS_EVENT),
            last_taken: render(LAST_TAKEN),
        }
    }
}

impl PostgresStore {
    fn sql(&self) -> &ArchiveSql {
        &self.shared().sql.archive
    }

    /// Holds off other exports and scavenges of this store until the answer is released or
    /// dropped; `None` while another one runs.
    pub async fn hold_export(&self) -> Result<Option<ExportHold>, ReadError> {
        // The scavenge's lock: an export and a scavenge exclude each other (the export reads
        // a stream's rows and its versions below them apart), as two exports do.
        let key = crate::migrate::lock_key("strata-scavenge", self.schema());
        Ok(self
            .try_session_lock(key)
            .await?
            .map(|conn| ExportHold { conn, key }))
    }

    /// The store's id (16 hex digits), which an archive of its events names.
    pub async fn store_id(&self) -> Result<String, ReadError> {
        sqlx::query_scalar(&self.sql().store_id)
            .fetch_one(self.pool())
            .await
            .map_err(read_error)
    }

    /// Gives the store the id of the archive it was restored from, so that it goes on
    /// archiving there.
    pub async fn set_store_id(&self, id: &str) -> Result<(), ReadError> {
        sqlx::query(&self.sql().set_store_id)
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(read_error)?;
        Ok(())
    }

    /// Whether the store holds event `id` at `position`: `Some(true)` when it does,
    /// `Some(false)` when another event lies there or the id lies elsewhere, `None` when it
    /// holds neither (a scavenge deleted it).
    pub async fn holds_event(
        &self,
        position: u64,
        id: strata_core::Uuid,
    ) -> Result<Option<bool>, ReadError> {
        let row = sqlx::query(&self.sql().holds_event)
            .bind(to_i64(position))
            .bind(id)
            .fetch_one(self.pool())
            .await
            .map_err(read_error)?;
        let there: Option<strata_core::Uuid> = row.try_get(0).map_err(read_error)?;
        let at: Option<i64> = row.try_get(1).map_err(read_error)?;
        Ok(match (there, at) {
            (None, None) => None,
            (Some(there), Some(at)) => Some(there == id && at == to_i64(position)),
            _ => Some(false),
        })
    }

    /// Whether the store holds no event and has taken no position: what a restore goes into.
    pub async fn is_empty(&self) -> Result<bool, ReadError> {
        sqlx::query_scalar(&self.sql().is_empty)
            .fetch_one(self.pool())
            .await
            .map_err(read_error)
    }

    /// The position below which the store's events are final: no transaction can add one
    /// there any more (the readable head's next; 0 when there is none).
    pub async fn final_below(&self) -> Result<u64, ReadError> {
        Ok(self.head_now_position().await?.map_or(0, |p| p.0 + 1))
    }

    /// The events stored at positions from `from` below `below`, in position order, every
    /// one (also those readers no longer see but no scavenge deleted): at most `max_events`,
    /// and no more once they pass `max_bytes` of payload and metadata (one at least).
    pub async fn export_page(
        &self,
        from: u64,
        below: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let rows = sqlx::query(&self.sql().export_page)
            .bind(to_i64(from))
            .bind(to_i64(below))
            .bind(i64::try_from(max_events).unwrap_or(i64::MAX))
            .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await
            .map_err(read_error)?;
        rows.iter().map(|r| event_from_row(r, 0)).collect()
    }

    /// For each `(stream, version)`: the version after the last one the store holds below
    /// it, leaving out streams holding none below it.
    pub async fn next_versions_below(
        &self,
        firsts: &[(String, u64)],
    ) -> Result<HashMap<String, u64>, ReadError> {
        let streams: Vec<&str> = firsts.iter().map(|(s, _)| s.as_str()).collect();
        let versions: Vec<i64> = firsts.iter().map(|(_, v)| to_i64(*v)).collect();
        let rows = sqlx::query(&self.sql().versions_before)
            .bind(&streams)
            .bind(&versions)
            .fetch_all(self.pool())
            .await
            .map_err(read_error)?;
        let mut out = HashMap::new();
        for row in rows {
            let stream: String = row.try_get(0).map_err(read_error)?;
            let last: Option<i64> = row.try_get(1).map_err(read_error)?;
            if let Some(last) = last {
                out.insert(stream, last as u64 + 1);
            }
        }
        Ok(out)
    }

    /// Stores `events` (in position order) as they were recorded: positions, versions, ids
    /// and times kept, in one transaction whose positions are taken as an append takes them.
    /// `after` is the last position the store has taken: `None` for an empty store (a
    /// restore's first batch), the last event of the batch before for the next ones. A
    /// position taken meanwhile by anyone else (an append during a restore) refuses the
    /// batch ([`ImportError::PositionsTaken`]), which then changes nothing.
    pub async fn import_events(
        &self,
        events: &[RecordedEvent],
        after: Option<u64>,
    ) -> Result<(), ImportError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        if let Some(w) = events.windows(2).find(|w| w[1].position <= w[0].position) {
            return Err(ImportError::Unstorable {
                position: w[1].position.0,
                reason: "positions must increase within a batch".to_owned(),
            });
        }
        let mut metadata = Vec::with_capacity(events.len());
        for e in events {
            let m = e.metadata.to_bytes();
            if m.is_empty() {
                metadata.push(None);
                continue;
            }
            if crate::append::has_nul_escape(&m) {
                return Err(ImportError::Unstorable {
                    position: e.position.0,
                    reason: "its metadata holds U+0000, which PostgreSQL's jsonb cannot store"
                        .to_owned(),
                });
            }
            metadata.push(Some(String::from_utf8(m).map_err(|_| {
                ImportError::Unstorable {
                    position: e.position.0,
                    reason: "its metadata is not UTF-8".to_owned(),
                }
            })?));
        }
        let json: Vec<bool> = events
            .iter()
            .map(|e| {
                e.content_type == strata_core::CONTENT_TYPE_JSON
                    && std::str::from_utf8(&e.data).is_ok()
                    && !crate::append::has_nul_escape(&e.data)
            })
            .collect();
        match self
            .import_batch(events, after, &metadata, &json, false)
            .await
        {
            // A payload jsonb cannot hold (a number out of its range): that one's bytes only,
            // as an append stores it; the others' jsonb is kept.
            Err(ImportError::Unstorable { .. }) if json.iter().any(|&j| j) => {
                self.import_batch(events, after, &metadata, &json, true)
                    .await
            }
            other => other,
        }
        .map_err(|e| match e {
            ImportError::PositionsTaken { taken_up_to, .. } => ImportError::PositionsTaken {
                position: first.position.0,
                taken_up_to,
            },
            other => other,
        })
    }

    async fn import_batch(
        &self,
        events: &[RecordedEvent],
        after: Option<u64>,
        metadata: &[Option<String>],
        json: &[bool],
        lenient: bool,
    ) -> Result<(), ImportError> {
        let positions: Vec<i64> = events.iter().map(|e| to_i64(e.position.0)).collect();
        let ids: Vec<strata_core::Uuid> = events.iter().map(|e| e.event_id).collect();
        let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
        let categories: Vec<&str> = events.iter().map(|e| e.stream_id.category()).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let versions: Vec<i64> = events.iter().map(|e| to_i64(e.stream_version)).collect();
        let content_types: Vec<&str> = events.iter().map(|e| e.content_type.as_str()).collect();
        let data: Vec<&[u8]> = events.iter().map(|e| e.data.as_slice()).collect();
        let recorded: Vec<i64> = events
            .iter()
            .map(|e| e.recorded_at.timestamp_micros())
            .collect();
        let mut conn = self.pool().acquire().await.map_err(read_error)?;
        let result = sqlx::query(&self.sql().import)
            .bind(after.map(to_i64))
            .bind(&positions)
            .bind(&ids)
            .bind(&streams)
            .bind(&categories)
            .bind(&types)
            .bind(&versions)
            .bind(&content_types)
            .bind(json)
            .bind(&data)
            .bind(metadata)
            .bind(&recorded)
            .bind(lenient)
            .execute(&mut *conn)
            .await;
        let Err(err) = result else {
            if events.iter().any(|e| {
                e.stream_id.is_metastream()
                    || e.event_type == strata_core::lifecycle::EVENT_TYPE_STREAM_TOMBSTONED
            }) {
                self.shared().note_lifecycle();
            }
            return Ok(());
        };
        // A failure inside the critical section leaves its session lock: released before the
        // connection goes back to the pool (or the connection closed), as after an append.
        crate::append::release_locks(&mut conn).await;
        drop(conn);
        let code = err
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned());
        match code.as_deref() {
            Some("SX003") => Err(ImportError::PositionsTaken {
                position: events[0].position.0,
                taken_up_to: self.last_position_taken().await?,
            }),
            Some(c) if c.starts_with("22") || c == "23505" => Err(ImportError::Unstorable {
                position: events[0].position.0,
                reason: crate::error::describe(&err),
            }),
            _ => Err(ImportError::Store(read_error(err))),
        }
    }

    /// Moves the store's next position to `position`, when `after` is still the last one
    /// taken (`None`: none is): after a restore, appends go past the archive's end, also where its last
    /// positions were gaps (appends that rolled back), so that the archive's positions are
    /// never taken again. A position taken by anyone else since the last batch is
    /// [`ImportError::PositionsTaken`].
    pub async fn skip_positions_below(
        &self,
        position: u64,
        after: Option<u64>,
    ) -> Result<(), ImportError> {
        let moved: bool = sqlx::query_scalar(&self.sql().skip_positions)
            .bind(after.map(to_i64))
            .bind(to_i64(position))
            .fetch_one(self.pool())
            .await
            .map_err(read_error)?;
        match moved {
            true => Ok(()),
            false => Err(ImportError::PositionsTaken {
                position: after.map_or(0, |a| a + 1),
                taken_up_to: self.last_position_taken().await?,
            }),
        }
    }

    async fn last_position_taken(&self) -> Result<Option<u64>, ReadError> {
        let (called, last): (bool, i64) = sqlx::query_as(&self.sql().last_taken)
            .fetch_one(self.pool())
            .await
            .map_err(read_error)?;
        Ok(called.then_some(last.max(0) as u64))
    }
}
