//! The [`SnapshotStore`] implementation on the `snapshots` table.

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use sqlx::{Row, ValueRef};
use strata_core::{
    InvalidInput, ReadError, Snapshot, SnapshotAndEvents, SnapshotError, SnapshotStore, StreamId,
};

use crate::error::snapshot_error;
use crate::read::{event_from_row, to_i64};
use crate::store::PostgresStore;

#[async_trait]
impl SnapshotStore for PostgresStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), SnapshotError> {
        snapshot.validate()?;
        let version = i64::try_from(snapshot.stream_version).map_err(|_| {
            InvalidInput::new(
                "stream_version",
                "is above the largest version PostgreSQL stores",
            )
        })?;
        // taken_at keeps microseconds for people reading the table; the nanoseconds column
        // makes the value read back exactly.
        let nanos = snapshot.taken_at.nanosecond() as i32;
        sqlx::query(&self.shared().sql.save_snapshot)
            .bind(snapshot.stream_id.as_str())
            .bind(version)
            .bind(i64::from(snapshot.schema_version))
            .bind(&snapshot.data)
            .bind(snapshot.taken_at)
            .bind(nanos)
            .execute(self.pool())
            .await
            .map_err(snapshot_error)?;
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        let row = sqlx::query(&self.shared().sql.load_snapshot)
            .bind(stream.as_str())
            .bind(max_version.map_or(i64::MAX, to_i64))
            .bind(i64::from(schema_version))
            .fetch_optional(self.pool())
            .await
            .map_err(snapshot_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let get = |e: sqlx::Error| snapshot_error(e);
        let version: i64 = row.try_get(0).map_err(get)?;
        let data: Vec<u8> = row.try_get(2).map_err(get)?;
        let taken_at: DateTime<Utc> = row.try_get(3).map_err(get)?;
        let nanos: i32 = row.try_get(4).map_err(get)?;
        Ok(Some(Snapshot {
            stream_id: stream.clone(),
            stream_version: version as u64,
            schema_version,
            data,
            taken_at: with_nanos(taken_at, nanos)?,
        }))
    }

    /// One query: the newest snapshot and the events after it (see `sql.rs`).
    async fn load_snapshot_and_events(
        &self,
        stream: &StreamId,
        schema_version: u32,
        limit: usize,
    ) -> Result<SnapshotAndEvents, SnapshotError> {
        SnapshotAndEvents::check_limit(limit)?;
        let rows = sqlx::query(&self.shared().sql.load_snapshot_and_events)
            .bind(stream.as_str())
            .bind(i64::from(schema_version))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await
            .map_err(snapshot_error)?;
        let get = |e: sqlx::Error| snapshot_error(e);
        // The snapshot's columns: the same on every row, its data on the first only.
        let mut snapshot = None;
        if let Some(row) = rows.first() {
            let version: Option<i64> = row.try_get(0).map_err(get)?;
            if let Some(version) = version {
                let data: Option<Vec<u8>> = row.try_get(1).map_err(get)?;
                let data = data.ok_or_else(|| {
                    SnapshotError::Storage(
                        format!(
                            "the first event after the snapshot of {stream} at version \
                             {version} is not the next version"
                        )
                        .into(),
                    )
                })?;
                let taken_at: DateTime<Utc> = row.try_get(2).map_err(get)?;
                let nanos: i32 = row.try_get(3).map_err(get)?;
                snapshot = Some(Snapshot {
                    stream_id: stream.clone(),
                    stream_version: version as u64,
                    schema_version,
                    data,
                    taken_at: with_nanos(taken_at, nanos)?,
                });
            }
        }
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            // A row of NULL events: none after the snapshot.
            if row.try_get_raw(4).map_err(get)?.is_null() {
                continue;
            }
            let event = event_from_row(row, 4).map_err(|e| match e {
                ReadError::Unavailable(e) => SnapshotError::Unavailable(e),
                ReadError::Storage(e) => SnapshotError::Storage(e),
                // A stored event that fails its checks: the repository then reads the stream
                // on its own, and that read reports it with its position.
                other => SnapshotError::Storage(other.to_string().into()),
            })?;
            events.push(event);
        }
        Ok(SnapshotAndEvents {
            snapshot,
            events: Some(events),
        })
    }

    async fn delete_snapshots(&self, stream: &StreamId) -> Result<u64, SnapshotError> {
        let done = sqlx::query(&self.shared().sql.delete_snapshots)
            .bind(stream.as_str())
            .execute(self.pool())
            .await
            .map_err(snapshot_error)?;
        Ok(done.rows_affected())
    }
}

/// `taken_at` with the nanoseconds its own column keeps.
fn with_nanos(taken_at: DateTime<Utc>, nanos: i32) -> Result<DateTime<Utc>, SnapshotError> {
    u32::try_from(nanos)
        .ok()
        .and_then(|n| taken_at.with_nanosecond(n))
        .ok_or_else(|| {
            SnapshotError::Storage(format!("stored nanoseconds {nanos} are out of range").into())
        })
}
