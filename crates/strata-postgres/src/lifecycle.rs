//! Stream lifecycles on PostgreSQL: what readers see of streams with metadata or a tombstone
//! (`strata_core::lifecycle` holds the rules; this looks up their inputs).

use std::collections::HashMap;

use chrono::Utc;
use sqlx::Row;
use strata_core::lifecycle::{StreamMetadata, Visibility};
use strata_core::{ReadError, StreamId};

use crate::error::read_error;
use crate::store::PostgresStore;

/// One stream's lifecycle state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifecycle {
    pub visibility: Visibility,
    /// The stream's last stored version.
    pub last: Option<u64>,
}

impl PostgresStore {
    /// The lifecycle state of each of `streams` (one round trip). Streams left out have
    /// none: every stream, while the store has no metastream.
    pub(crate) async fn lifecycles(
        &self,
        streams: &[&str],
    ) -> Result<HashMap<String, Lifecycle>, ReadError> {
        let rows = sqlx::query(&self.shared().sql.lifecycles)
            .bind(streams)
            .fetch_all(self.pool())
            .await
            .map_err(read_error)?;
        let now = Utc::now();
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0).map_err(read_error)?;
            let metadata: Option<Vec<u8>> = row.try_get(1).map_err(read_error)?;
            let last: Option<i64> = row.try_get(2).map_err(read_error)?;
            let tombstone: Option<bool> = row.try_get(3).map_err(read_error)?;
            let metadata = metadata.and_then(|m| StreamMetadata::from_json(&m).ok());
            let last = last.map(|v| v as u64);
            let visibility =
                Visibility::new(metadata.as_ref(), last, tombstone.unwrap_or(false), now);
            out.insert(id, Lifecycle { visibility, last });
        }
        Ok(out)
    }

    /// The lifecycle state of one stream; `None` when the store has no metastream (and so
    /// the caller knows no more than it did).
    pub(crate) async fn lifecycle(
        &self,
        stream: &StreamId,
    ) -> Result<Option<Lifecycle>, ReadError> {
        if stream.is_metastream() {
            return Ok(None);
        }
        Ok(self
            .lifecycles(&[stream.as_str()])
            .await?
            .remove(stream.as_str()))
    }
}
