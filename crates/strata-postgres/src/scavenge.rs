//! Scavenging on PostgreSQL: deleting, in bounded batches, the rows of events that readers can
//! no longer see (`strata_core::scavenge` says what goes and what stays).
//!
//! It walks the streams with lifecycle state a page at a time: those with a metastream, in
//! name order, then the tombstoned ones without one (a tombstone interrupted between its two
//! events). For each page it reads every stream's metadata, first and last event in one
//! statement, decides which versions go, and deletes them in transactions of at most
//! [`limits::SCAVENGE_BATCH_EVENTS`] versions (of one stream or of many): appends never wait
//! for a scavenge, and one that stops part way loses nothing it had not already hidden. Each
//! transaction deletes a stream's versions only while its metadata is still the version the
//! decision was made on (checked in the same statement); otherwise the stream is decided
//! again. Rows are removed by `DELETE`, which the append-only guard lets through only with the
//! transaction-local setting `strata.delete` (see `0004_append_only.sql`). The transactions
//! commit without waiting for their WAL flush (`synchronous_commit = off`): one lost in a
//! crash leaves only hidden events, which the next scavenge removes. Only events below the
//! readable head at the start go, so that the head never moves back.
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

/// How many streams have a metastream, for the progress report.
const COUNT: &str = "SELECT count(DISTINCT e.aggregate_id) FROM {schema}.events e
    WHERE e.aggregate_id >= '$$' AND e.aggregate_id < '$%'";

/// A page of metastreams in name order: `$1` after (exclusive), `$2` how many.
const METASTREAMS: &str = "SELECT DISTINCT e.aggregate_id FROM {schema}.events e
    WHERE e.aggregate_id > $1 AND e.aggregate_id < '$%'
    ORDER BY e.aggregate_id LIMIT $2";

/// A page of tombstoned streams without a metastream record (a tombstone interrupted between
/// its two events), by the event type index: `$1` after this position, `$2` how many.
const TOMBSTONED: &str = "SELECT t.position, t.aggregate_id FROM {schema}.events t
    WHERE t.event_type = '$streamTombstoned' AND t.position > $1
      AND NOT starts_with(t.aggregate_id, '$$')
      AND NOT EXISTS (SELECT 1 FROM {schema}.events m
                       WHERE m.aggregate_id = '$$' || t.aggregate_id)
    ORDER BY t.position LIMIT $2";

/// For each stream of `$1` (`text[]`): its metastream's last version and data, its last
/// version and whether that is its tombstone, and its first version.
const PLAN: &str =
    "SELECT s.id, m.version, m.data_bytes, l.version, l.event_type = '$streamTombstoned',
         f.version
    FROM unnest($1::text[]) AS s(id)
    LEFT JOIN LATERAL (SELECT x.version, x.data_bytes FROM {schema}.events x
                        WHERE x.aggregate_id = '$$' || s.id
                        ORDER BY x.version DESC LIMIT 1) AS m ON true
    LEFT JOIN LATERAL (SELECT x.version, x.event_type FROM {schema}.events x
                        WHERE x.aggregate_id = s.id
                        ORDER BY x.version DESC LIMIT 1) AS l ON true
    LEFT JOIN LATERAL (SELECT x.version FROM {schema}.events x
                        WHERE x.aggregate_id = s.id
                        ORDER BY x.version LIMIT 1) AS f ON true";

/// The first version of stream `$1` recorded at or after `$2`.
const FIRST_RECENT: &str = "SELECT f.version FROM {schema}.events f
    WHERE f.aggregate_id = $1 AND f.created_at >= $2
    ORDER BY f.version LIMIT 1";

/// Deletes versions `lo..hi` of each stream of the arrays `$1`..`$5` (stream, lo, hi, metadata
/// version, tombstoned) while its metadata is still at that version, and the snapshots of the
/// tombstoned ones, below position `$6`: one row per entry, saying whether its metadata was
/// the same, with the events and snapshots deleted in all.
const DELETE: &str = "WITH plan AS MATERIALIZED (
        SELECT p.stream, p.lo, p.hi, p.tombstoned,
               (SELECT m.version FROM {schema}.events m
                 WHERE m.aggregate_id = '$$' || p.stream
                 ORDER BY m.version DESC LIMIT 1) IS NOT DISTINCT FROM p.meta AS ok
          FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bool[])
               AS p(stream, lo, hi, meta, tombstoned)
    ), gone AS (
        DELETE FROM {schema}.events e USING plan p
         WHERE p.ok AND e.aggregate_id = p.stream
           AND e.version >= p.lo AND e.version < p.hi AND e.position < $6
        RETURNING 1
    ), snapshots AS (
        DELETE FROM {schema}.snapshots s USING plan p
         WHERE p.ok AND p.tombstoned AND s.stream_id = p.stream
        RETURNING 1
    )
    SELECT p.stream, p.ok, (SELECT count(*) FROM gone), (SELECT count(*) FROM snapshots)
      FROM plan p";

/// The scavenger's statements, rendered for the store's schema once.
pub(crate) struct ScavengeSql {
    pub count: String,
    pub metastreams: String,
    pub tombstoned: String,
    pub plan: String,
    pub first_recent: String,
    pub delete: String,
    pub vacuum: String,
}

impl ScavengeSql {
    /// The statements, with `render` filling in the schema.
    pub(crate) fn new(render: &dyn Fn(&str) -> String) -> ScavengeSql {
        ScavengeSql {
            count: render(COUNT),
            metastreams: render(METASTREAMS),
            tombstoned: render(TOMBSTONED),
            plan: render(PLAN),
            first_recent: render(FIRST_RECENT),
            delete: render(DELETE),
            vacuum: render("VACUUM {schema}.events"),
        }
    }
}

/// How often the streams whose metadata changed under the scavenge are decided again, before
/// they are left for the next scavenge.
const REDECIDE_MAX: usize = 4;

/// Versions `lo..hi` of `stream` go, if its metadata is still at `meta_version`.
struct Item {
    stream: String,
    lo: i64,
    hi: i64,
    meta_version: Option<i64>,
    /// The stream is tombstoned: its snapshots go too.
    tombstoned: bool,
}

/// The deletions of one transaction, at most [`limits::SCAVENGE_BATCH_EVENTS`] versions.
struct Batch {
    items: Vec<Item>,
    versions: i64,
    /// Only events below this position go: the readable head when the scavenge started, so
    /// that the head (a row below the `$all` watermark) never moves back.
    below: i64,
}

impl PostgresStore {
    /// Deletes the events readers can no longer see; see the [module](self) docs.
    pub(crate) async fn scavenge_events(
        &self,
        progress: ProgressFn<'_>,
    ) -> Result<ScavengeReport, ScavengeError> {
        let started = Instant::now();
        let key = crate::migrate::lock_key("strata-scavenge", &self.shared().schema);
        let Some(mut conn) = self.try_session_lock(key).await? else {
            return Err(ScavengeError::AlreadyRunning);
        };
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

    /// Takes the session advisory lock `key` on a connection of its own, out of the pool
    /// (closing it releases the lock); `None` while another session holds it.
    pub(crate) async fn try_session_lock(
        &self,
        key: i64,
    ) -> Result<Option<sqlx::PgConnection>, ReadError> {
        let mut conn = self.pool().acquire().await.map_err(read_error)?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(read_error)?;
        if !locked {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(conn))
    }

    async fn scavenge_on(
        &self,
        conn: &mut sqlx::PgConnection,
        progress: ProgressFn<'_>,
    ) -> Result<ScavengeProgress, ScavengeError> {
        let sql = &self.shared().sql.scavenge;
        let total: i64 = sqlx::query_scalar(&sql.count)
            .fetch_one(&mut *conn)
            .await
            .map_err(read_error)?;
        let mut p = ScavengeProgress {
            streams_total: total as u64,
            ..ScavengeProgress::default()
        };
        progress(p);
        // `head`: it waits (briefly) for this store's own appends to become readable.
        let Some(head) = self.head_position().await? else {
            return Ok(p);
        };
        let mut batch = Batch {
            items: Vec::new(),
            versions: 0,
            below: head.0 as i64,
        };
        let mut changed: Vec<String> = Vec::new();
        // The streams with a metastream, a page at a time in name order.
        let mut after = "$$".to_owned();
        loop {
            let metastreams: Vec<String> = sqlx::query_scalar(&sql.metastreams)
                .bind(&after)
                .bind(limits::SCAVENGE_STREAMS_PAGE as i64)
                .fetch_all(&mut *conn)
                .await
                .map_err(read_error)?;
            let Some(last) = metastreams.last() else {
                break;
            };
            after = last.clone();
            let streams: Vec<String> = metastreams
                .iter()
                .filter_map(|m| m.strip_prefix(strata_core::METASTREAM_PREFIX))
                .map(str::to_owned)
                .collect();
            self.scavenge_page(conn, &streams, &mut batch, &mut changed, &mut p, progress)
                .await?;
        }
        // Tombstoned streams without a metastream record (a tombstone interrupted between its
        // two events), by the event type index.
        let mut after_position = -1i64;
        loop {
            let rows = sqlx::query(&sql.tombstoned)
                .bind(after_position)
                .bind(limits::SCAVENGE_STREAMS_PAGE as i64)
                .fetch_all(&mut *conn)
                .await
                .map_err(read_error)?;
            let Some(last) = rows.last() else {
                break;
            };
            after_position = last.try_get(0).map_err(read_error)?;
            let streams = rows
                .iter()
                .map(|r| r.try_get(1))
                .collect::<Result<Vec<String>, _>>()
                .map_err(read_error)?;
            self.scavenge_page(conn, &streams, &mut batch, &mut changed, &mut p, progress)
                .await?;
        }
        p.events_removed += self.flush(conn, &mut batch, &mut changed).await?;
        // The streams whose metadata changed under the scavenge, decided again.
        for _ in 0..REDECIDE_MAX {
            if changed.is_empty() {
                break;
            }
            let streams = std::mem::take(&mut changed);
            let examined = p.streams_examined;
            self.scavenge_page(conn, &streams, &mut batch, &mut changed, &mut p, progress)
                .await?;
            p.events_removed += self.flush(conn, &mut batch, &mut changed).await?;
            p.streams_examined = examined;
        }
        if !changed.is_empty() {
            tracing::info!(
                streams = changed.len(),
                "stream metadata kept changing during the scavenge; left for the next one"
            );
        }
        progress(p);
        if p.events_removed > 0 {
            // Makes the deleted rows' space reusable now rather than at autovacuum's next
            // pass. Needs the table's owner: without that, autovacuum does it.
            if let Err(e) = sqlx::query(&sql.vacuum).execute(&mut *conn).await {
                tracing::warn!(error = %crate::error::describe(&e), "VACUUM after a scavenge failed; autovacuum will reclaim the space");
            }
        }
        Ok(p)
    }

    /// Decides what goes of `streams` and deletes it, in batches as they fill.
    async fn scavenge_page(
        &self,
        conn: &mut sqlx::PgConnection,
        streams: &[String],
        batch: &mut Batch,
        changed: &mut Vec<String>,
        p: &mut ScavengeProgress,
        progress: ProgressFn<'_>,
    ) -> Result<(), ReadError> {
        for item in self.plan(conn, streams).await? {
            let (mut lo, hi) = (item.lo, item.hi);
            while lo < hi {
                let room = limits::SCAVENGE_BATCH_EVENTS as i64 - batch.versions;
                let end = hi.min(lo + room);
                batch.items.push(Item {
                    stream: item.stream.clone(),
                    lo,
                    hi: end,
                    meta_version: item.meta_version,
                    tombstoned: item.tombstoned,
                });
                batch.versions += end - lo;
                lo = end;
                if batch.versions >= limits::SCAVENGE_BATCH_EVENTS as i64 {
                    p.events_removed += self.flush(conn, batch, changed).await?;
                    progress(*p);
                }
            }
        }
        p.streams_examined += streams.len() as u64;
        progress(*p);
        Ok(())
    }

    /// What to delete of each of `streams` (those with nothing to delete left out).
    async fn plan(
        &self,
        conn: &mut sqlx::PgConnection,
        streams: &[String],
    ) -> Result<Vec<Item>, ReadError> {
        let rows = sqlx::query(&self.shared().sql.scavenge.plan)
            .bind(streams)
            .fetch_all(&mut *conn)
            .await
            .map_err(read_error)?;
        let mut items = Vec::new();
        for row in &rows {
            let stream: String = row.try_get(0).map_err(read_error)?;
            let meta_version: Option<i64> = row.try_get(1).map_err(read_error)?;
            let metadata: Option<Vec<u8>> = row.try_get(2).map_err(read_error)?;
            let last: Option<i64> = row.try_get(3).map_err(read_error)?;
            let tombstone: Option<bool> = row.try_get(4).map_err(read_error)?;
            let first: Option<i64> = row.try_get(5).map_err(read_error)?;
            let (Some(last), Some(first)) = (last, first) else {
                continue;
            };
            let visibility = crate::lifecycle::visibility(
                metadata.as_deref(),
                Some(last as u64),
                tombstone.unwrap_or(false),
            );
            let first_recent = match visibility.not_before_us {
                Some(us) => self.first_recent(conn, &stream, us).await?,
                None => None,
            };
            let range = removable(visibility, last as u64, first_recent);
            let (lo, hi) = ((range.start as i64).max(first), range.end as i64);
            if lo < hi {
                items.push(Item {
                    stream,
                    lo,
                    hi,
                    meta_version,
                    tombstoned: visibility.tombstoned,
                });
            }
        }
        Ok(items)
    }

    /// The first version of `stream` recorded at or after `us` (microseconds since the epoch).
    async fn first_recent(
        &self,
        conn: &mut sqlx::PgConnection,
        stream: &str,
        us: i64,
    ) -> Result<Option<u64>, ReadError> {
        let at = DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
        let v: Option<i64> = sqlx::query_scalar(&self.shared().sql.scavenge.first_recent)
            .bind(stream)
            .bind(at)
            .fetch_optional(&mut *conn)
            .await
            .map_err(read_error)?;
        Ok(v.map(|v| v as u64))
    }

    /// Deletes what `batch` holds in one transaction, and empties it; returns how many events
    /// went. The streams whose metadata changed since they were decided go to `changed`.
    async fn flush(
        &self,
        conn: &mut sqlx::PgConnection,
        batch: &mut Batch,
        changed: &mut Vec<String>,
    ) -> Result<u64, ReadError> {
        let items = std::mem::take(&mut batch.items);
        batch.versions = 0;
        if items.is_empty() {
            return Ok(0);
        }
        let schema = &self.shared().schema;
        let streams: Vec<&str> = items.iter().map(|i| i.stream.as_str()).collect();
        let los: Vec<i64> = items.iter().map(|i| i.lo).collect();
        let his: Vec<i64> = items.iter().map(|i| i.hi).collect();
        let metas: Vec<Option<i64>> = items.iter().map(|i| i.meta_version).collect();
        let tombstoned: Vec<bool> = items.iter().map(|i| i.tombstoned).collect();
        let mut tx = conn.begin().await.map_err(read_error)?;
        sqlx::query(
            "SELECT set_config('synchronous_commit', 'off', true),
                    set_config('strata.delete', $1, true)",
        )
        .bind(schema)
        .execute(&mut *tx)
        .await
        .map_err(read_error)?;
        let rows = sqlx::query(&self.shared().sql.scavenge.delete)
            .bind(&streams)
            .bind(&los)
            .bind(&his)
            .bind(&metas)
            .bind(&tombstoned)
            .bind(batch.below)
            .fetch_all(&mut *tx)
            .await
            .map_err(read_error)?;
        sqlx::query("SELECT set_config('strata.delete', '', true)")
            .execute(&mut *tx)
            .await
            .map_err(read_error)?;
        tx.commit().await.map_err(read_error)?;
        let mut deleted = 0i64;
        for row in &rows {
            let ok: bool = row.try_get(1).map_err(read_error)?;
            deleted = row.try_get(2).map_err(read_error)?;
            if !ok {
                let stream: String = row.try_get(0).map_err(read_error)?;
                if !changed.contains(&stream) {
                    changed.push(stream);
                }
            }
        }
        Ok(deleted as u64)
    }
}
