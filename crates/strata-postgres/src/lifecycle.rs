//! Stream lifecycles on PostgreSQL: what readers see of streams with metadata or a tombstone
//! (`strata_core::lifecycle` holds the rules; this looks up their inputs).

use std::collections::HashMap;

use chrono::Utc;
use sqlx::postgres::PgRow;
use sqlx::Row;
use strata_core::lifecycle::{StreamMetadata, Visibility};
use strata_core::{ReadError, RecordedEvent, StreamId};

use crate::error::read_error;
use crate::store::PostgresStore;

/// One stream's lifecycle state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifecycle {
    pub visibility: Visibility,
    /// The stream's last stored version.
    pub last: Option<u64>,
}

impl Lifecycle {
    /// The state in the columns `metadata` (the metastream's last event's data), `last`
    /// and `tombstone` of `row`, from column `at`.
    pub(crate) fn from_row(row: &PgRow, at: usize) -> Result<Lifecycle, ReadError> {
        let metadata: Option<Vec<u8>> = row.try_get(at).map_err(read_error)?;
        let last: Option<i64> = row.try_get(at + 1).map_err(read_error)?;
        let tombstone: Option<bool> = row.try_get(at + 2).map_err(read_error)?;
        let last = last.map(|v| v as u64);
        Ok(Lifecycle {
            visibility: visibility(metadata.as_deref(), last, tombstone.unwrap_or(false)),
            last,
        })
    }
}

/// What readers may see now of a stream with this stored metadata (JSON), last version and
/// tombstone flag.
pub(crate) fn visibility(
    metadata: Option<&[u8]>,
    last: Option<u64>,
    tombstone: bool,
) -> Visibility {
    let metadata = metadata.and_then(|m| StreamMetadata::from_json(m).ok());
    Visibility::new(metadata.as_ref(), last, tombstone, Utc::now())
}

/// Whether appending `events` to `stream` gives the store lifecycle state (a metastream's
/// event, or a tombstone).
pub(crate) fn is_lifecycle_change(stream: &StreamId, events: &[strata_core::EventData]) -> bool {
    stream.is_metastream()
        || events
            .iter()
            .any(|e| e.event_type == strata_core::lifecycle::EVENT_TYPE_STREAM_TOMBSTONED)
}

impl PostgresStore {
    /// Whether any stream may have lifecycle state now (a metastream or a tombstone exists;
    /// two index probes), which marks the store when it does.
    pub(crate) async fn lifecycle_exists(&self) -> Result<bool, ReadError> {
        let exists: bool = sqlx::query_scalar(&self.shared().sql.lifecycle_exists)
            .fetch_one(self.pool())
            .await
            .map_err(read_error)?;
        if exists {
            self.shared().note_lifecycle();
        }
        Ok(exists)
    }

    /// The lifecycle state of each of `streams` (one round trip). Streams left out have
    /// none: every stream, while the store has no metastream.
    pub(crate) async fn lifecycles(
        &self,
        streams: &[&str],
    ) -> Result<HashMap<String, Lifecycle>, ReadError> {
        lifecycles_with(&self.shared().sql.lifecycles, self.pool(), streams).await
    }

    /// Leaves out of `events` (in position order) what their streams' lifecycles hide, the
    /// state read with `executor` (a transaction sees its own appends).
    pub(crate) async fn keep_visible<'e, E: sqlx::Executor<'e, Database = sqlx::Postgres>>(
        &self,
        executor: E,
        events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let mut streams: Vec<&str> = events
            .iter()
            .filter(|e| !e.stream_id.is_metastream())
            .map(|e| e.stream_id.as_str())
            .collect();
        streams.sort_unstable();
        streams.dedup();
        if streams.is_empty() {
            return Ok(events);
        }
        let states = lifecycles_with(&self.shared().sql.lifecycles, executor, &streams).await?;
        if states.is_empty() {
            return Ok(events);
        }
        let visibility = |stream: StreamId| {
            let v = states
                .get(stream.as_str())
                .map_or(Visibility::ALL, |s| s.visibility);
            std::future::ready(Ok(v))
        };
        strata_core::lifecycle::keep_visible(events, visibility).await
    }
}

/// The lifecycle state of each of `streams`, read with `executor` (one round trip). Streams
/// left out have none: every stream, while the store has no metastream and no tombstone.
async fn lifecycles_with<'e, E: sqlx::Executor<'e, Database = sqlx::Postgres>>(
    sql: &str,
    executor: E,
    streams: &[&str],
) -> Result<HashMap<String, Lifecycle>, ReadError> {
    let rows = sqlx::query(sql)
        .bind(streams)
        .fetch_all(executor)
        .await
        .map_err(read_error)?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get(0).map_err(read_error)?;
        out.insert(id, Lifecycle::from_row(&row, 1)?);
    }
    Ok(out)
}
