//! Scavenging on PostgreSQL: deleting, in bounded batches, the rows of events that readers can
//! no longer see (`strata_core::scavenge` says what goes and what stays).
//!
//! It walks the streams with lifecycle state: those with a metastream, in name order, then the
//! tombstoned ones (a tombstone always has a metastream record, unless it was interrupted
//! between its two events). For each it reads the stream's metadata and last event in one
//! statement, decides the versions below which events go, and deletes them
//! [`limits::SCAVENGE_BATCH_EVENTS`] versions at a time, each batch a transaction of its own:
//! appends never wait for a scavenge, and one that stops part way loses nothing it had not
//! already hidden. A batch deletes only while the stream's metadata is still the version the
//! decision was made on (checked in the same statement); otherwise the stream is decided
//! again. Rows are removed by `DELETE`, which the append-only guard lets through only with the
//! transaction-local setting `strata.delete` (see `0004_append_only.sql`).
//!
//! Deleted rows leave dead tuples: `VACUUM` (run at the end when anything was deleted, and by
//! autovacuum anyway) makes their space reusable by new rows; it does not give it back to the
//! operating system (that takes `VACUUM FULL` or pg_repack, which rewrite the table).
//!
//! One scavenge runs per schema at a time, across processes: it holds a session advisory lock
//! on a connection of its own, released when the scavenge ends, and with the connection (which
//! is closed) when it is dropped part way.

use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::{Connection, Row};
use strata_core::scavenge::{
    removable, ProgressFn, ScavengeError, ScavengeProgress, ScavengeReport,
};
use strata_core::ReadError;

use crate::error::read_error;
use crate::limits;
use crate::store::PostgresStore;

/// How often one stream is decided again after its metadata changed under the scavenge,
/// before it is left for the next scavenge.
const REDECIDE_MAX: usize = 4;

/// The inputs of one stream's decision.
struct Plan {
    /// The metastream's last version (the metadata's version).
    meta_version: Option<i64>,
    /// Delete versions from this one (the first stored one, or the one after it)...
    from: i64,
    /// ... below this one.
    before: i64,
    /// The stream reads as gone (tombstoned, or every event deleted): its snapshots go too.
    gone: bool,
}

impl PostgresStore {
    /// Deletes the events readers can no longer see; see the [module](self) docs.
    pub(crate) async fn scavenge_events(
        &self,
        progress: ProgressFn<'_>,
    ) -> Result<ScavengeReport, ScavengeError> {
        let started = Instant::now();
        // A connection of its own, out of the pool: closing it releases the lock.
        let mut conn = self.pool().acquire().await.map_err(read_error)?.detach();
        let key = crate::migrate::lock_key("strata-scavenge", &self.shared().schema);
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(read_error)?;
        if !locked {
            return Err(ScavengeError::AlreadyRunning);
        }
        let result = self.scavenge_on(&mut conn, progress).await;
        // Released here so that the next scavenge may start at once (the server ends a closed
        // connection's session, and releases its locks, a moment after the close); on a
        // broken connection, the close releases it.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        let progress = result?;
        Ok(ScavengeReport {
            progress,
            elapsed: started.elapsed(),
        })
    }

    async fn scavenge_on(
        &self,
        conn: &mut sqlx::PgConnection,
        progress: ProgressFn<'_>,
    ) -> Result<ScavengeProgress, ScavengeError> {
        let schema = &self.shared().schema;
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT count(DISTINCT e.aggregate_id) FROM {schema}.events e
              WHERE e.aggregate_id >= '$$' AND e.aggregate_id < '$%'"
        ))
        .fetch_one(&mut *conn)
        .await
        .map_err(read_error)?;
        let mut p = ScavengeProgress {
            streams_total: total as u64,
            ..ScavengeProgress::default()
        };
        progress(p);
        // The streams with a metastream, a page at a time in name order.
        let mut after = "$$".to_owned();
        loop {
            let metastreams: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT DISTINCT e.aggregate_id FROM {schema}.events e
                  WHERE e.aggregate_id > $1 AND e.aggregate_id < '$%'
                  ORDER BY e.aggregate_id LIMIT $2"
            ))
            .bind(&after)
            .bind(limits::SCAVENGE_STREAMS_PAGE as i64)
            .fetch_all(&mut *conn)
            .await
            .map_err(read_error)?;
            let Some(last) = metastreams.last() else {
                break;
            };
            after = last.clone();
            for metastream in &metastreams {
                let Some(stream) = metastream.strip_prefix(strata_core::METASTREAM_PREFIX) else {
                    continue;
                };
                p.events_removed += self.scavenge_stream(conn, stream).await?;
                p.streams_examined += 1;
                progress(p);
            }
        }
        // Tombstoned streams without a metastream record (a tombstone interrupted between its
        // two events), by the event type index.
        let mut after_position = -1i64;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT t.position, t.aggregate_id FROM {schema}.events t
                  WHERE t.event_type = '$streamTombstoned' AND t.position > $1
                    AND NOT starts_with(t.aggregate_id, '$$')
                    AND NOT EXISTS (SELECT 1 FROM {schema}.events m
                                     WHERE m.aggregate_id = '$$' || t.aggregate_id)
                  ORDER BY t.position LIMIT $2"
            ))
            .bind(after_position)
            .bind(limits::SCAVENGE_STREAMS_PAGE as i64)
            .fetch_all(&mut *conn)
            .await
            .map_err(read_error)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                after_position = row.try_get(0).map_err(read_error)?;
                let stream: String = row.try_get(1).map_err(read_error)?;
                p.events_removed += self.scavenge_stream(conn, &stream).await?;
                p.streams_examined += 1;
                progress(p);
            }
        }
        if p.events_removed > 0 {
            // Makes the deleted rows' space reusable now rather than at autovacuum's next
            // pass. Needs the table's owner: without that, autovacuum does it.
            if let Err(e) = sqlx::query(&format!("VACUUM {schema}.events"))
                .execute(&mut *conn)
                .await
            {
                tracing::warn!(error = %crate::error::describe(&e), "VACUUM after a scavenge failed; autovacuum will reclaim the space");
            }
        }
        Ok(p)
    }

    /// Deletes what readers cannot see of `stream`; returns how many events went.
    async fn scavenge_stream(
        &self,
        conn: &mut sqlx::PgConnection,
        stream: &str,
    ) -> Result<u64, ScavengeError> {
        let mut removed = 0u64;
        'decide: for _ in 0..REDECIDE_MAX {
            let Some(plan) = self.plan(conn, stream).await? else {
                return Ok(removed);
            };
            let mut lo = plan.from;
            while lo < plan.before {
                let hi = plan
                    .before
                    .min(lo.saturating_add(limits::SCAVENGE_BATCH_EVENTS as i64));
                match self.delete_batch(conn, stream, &plan, lo, hi).await? {
                    Some(n) => removed += n,
                    // The metadata changed: decide again.
                    None => continue 'decide,
                }
                lo = hi;
            }
            if plan.gone {
                sqlx::query(&self.shared().sql.delete_snapshots)
                    .bind(stream)
                    .execute(&mut *conn)
                    .await
                    .map_err(read_error)?;
            }
            return Ok(removed);
        }
        tracing::info!(
            stream,
            "stream metadata kept changing during the scavenge; left for the next one"
        );
        Ok(removed)
    }

    /// What to delete of `stream`, or `None` when nothing.
    async fn plan(
        &self,
        conn: &mut sqlx::PgConnection,
        stream: &str,
    ) -> Result<Option<Plan>, ReadError> {
        let schema = &self.shared().schema;
        let row = sqlx::query(&format!(
            "SELECT m.version, m.data_bytes, l.version, l.event_type = '$streamTombstoned',
                    (SELECT f.version FROM {schema}.events f
                      WHERE f.aggregate_id = $1 ORDER BY f.version LIMIT 1)
               FROM (SELECT 1) AS one
               LEFT JOIN LATERAL (SELECT x.version, x.data_bytes FROM {schema}.events x
                                   WHERE x.aggregate_id = '$$' || $1::text
                                   ORDER BY x.version DESC LIMIT 1) AS m ON true
               LEFT JOIN LATERAL (SELECT x.version, x.event_type FROM {schema}.events x
                                   WHERE x.aggregate_id = $1
                                   ORDER BY x.version DESC LIMIT 1) AS l ON true"
        ))
        .bind(stream)
        .fetch_one(&mut *conn)
        .await
        .map_err(read_error)?;
        let meta_version: Option<i64> = row.try_get(0).map_err(read_error)?;
        let metadata: Option<Vec<u8>> = row.try_get(1).map_err(read_error)?;
        let last: Option<i64> = row.try_get(2).map_err(read_error)?;
        let tombstone: Option<bool> = row.try_get(3).map_err(read_error)?;
        let first: Option<i64> = row.try_get(4).map_err(read_error)?;
        let (Some(last), Some(first)) = (last, first) else {
            return Ok(None);
        };
        let visibility = crate::lifecycle::visibility(
            metadata.as_deref(),
            Some(last as u64),
            tombstone.unwrap_or(false),
        );
        let first_recent = match visibility.not_before_us {
            Some(us) => {
                let at = DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
                let v: Option<i64> = sqlx::query_scalar(&format!(
                    "SELECT f.version FROM {schema}.events f
                      WHERE f.aggregate_id = $1 AND f.created_at >= $2
                      ORDER BY f.version LIMIT 1"
                ))
                .bind(stream)
                .bind(at)
                .fetch_optional(&mut *conn)
                .await
                .map_err(read_error)?;
                v.map(|v| v as u64)
            }
            None => None,
        };
        let range = removable(visibility, last as u64, first_recent);
        let gone = visibility.tombstoned || visibility.from_version > last as u64;
        let (from, before) = ((range.start as i64).max(first), range.end as i64);
        Ok((from < before || gone).then_some(Plan {
            meta_version,
            from,
            before,
            gone,
        }))
    }

    /// Deletes versions `lo..hi` of `stream` in a transaction of its own, if its metadata is
    /// still at `plan.meta_version`: `Some(deleted)`, or `None` when it changed.
    async fn delete_batch(
        &self,
        conn: &mut sqlx::PgConnection,
        stream: &str,
        plan: &Plan,
        lo: i64,
        hi: i64,
    ) -> Result<Option<u64>, ReadError> {
        let schema = &self.shared().schema;
        let mut tx = conn.begin().await.map_err(read_error)?;
        sqlx::query("SELECT set_config('strata.delete', $1, true)")
            .bind(schema)
            .execute(&mut *tx)
            .await
            .map_err(read_error)?;
        let row = sqlx::query(&format!(
            "WITH same AS MATERIALIZED (
                 SELECT (SELECT m.version FROM {schema}.events m
                          WHERE m.aggregate_id = '$$' || $1::text
                          ORDER BY m.version DESC LIMIT 1) IS NOT DISTINCT FROM $4 AS ok
             ), gone AS (
                 DELETE FROM {schema}.events e
                  WHERE e.aggregate_id = $1 AND e.version >= $2 AND e.version < $3
                    AND (SELECT ok FROM same)
                 RETURNING 1
             )
             SELECT (SELECT ok FROM same), (SELECT count(*) FROM gone)"
        ))
        .bind(stream)
        .bind(lo)
        .bind(hi)
        .bind(plan.meta_version)
        .fetch_one(&mut *tx)
        .await
        .map_err(read_error)?;
        let same: bool = row.try_get(0).map_err(read_error)?;
        let deleted: i64 = row.try_get(1).map_err(read_error)?;
        sqlx::query("SELECT set_config('strata.delete', '', true)")
            .execute(&mut *tx)
            .await
            .map_err(read_error)?;
        tx.commit().await.map_err(read_error)?;
        Ok(same.then_some(deleted as u64))
    }
}
