//! The [`SnapshotStore`] implementation on the `snapshots` table.

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use sqlx::Row;
use strata_core::{InvalidInput, Snapshot, SnapshotError, SnapshotStore, StreamId};

use crate::error::snapshot_error;
use crate::read::to_i64;
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
        let taken_at = taken_at.with_nanosecond(nanos as u32).ok_or_else(|| {
            SnapshotError::Storage(format!("stored nanoseconds {nanos} are out of range").into())
        })?;
        Ok(Some(Snapshot {
            stream_id: stream.clone(),
            stream_version: version as u64,
            schema_version,
            data,
            taken_at,
        }))
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
