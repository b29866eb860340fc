//! The archive benchmark's PostgreSQL rows: the embedded store's archive restored into an
//! empty PostgreSQL store, and that store exported into a new archive, each beside a
//! baseline doing the least the same move must do:
//!
//! - restore: restoring the archive into a directory (measured by the embedded rows) plus
//!   plain `INSERT`s of the same rows, 1,000 per statement as the import's batches, into a
//!   table with the events table's columns, indexes and constraints but no trigger;
//! - export: reading the same rows, page by page as the export reads them.
//!
//! The database is `STRATA_BENCH_DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Executor;
use strata_archive::{Archive, EXPORT_PAGE_BYTES, EXPORT_PAGE_EVENTS};
use strata_core::RecordedEvent;
use strata_postgres::{PgStoreOptions, PostgresStore};

/// One move between the archive and PostgreSQL, and its baseline.
#[derive(Debug, Clone)]
pub struct PgMove {
    /// What moved.
    pub what: &'static str,
    /// Events moved.
    pub events: u64,
    /// How long it took.
    pub took: Duration,
    /// What the baseline is.
    pub baseline_what: &'static str,
    /// How long the baseline took for the same events.
    pub baseline: Duration,
}

impl fmt::Display for PgMove {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = |d: Duration| self.events as f64 / d.as_secs_f64();
        write!(
            f,
            "  {:<28} {} events in {:>6.2} s = {:>7.0} events/s | {}: {:.2} s = {:.0} events/s | ratio {:.2}x",
            self.what,
            self.events,
            self.took.as_secs_f64(),
            rate(self.took),
            self.baseline_what,
            self.baseline.as_secs_f64(),
            rate(self.baseline),
            self.baseline.as_secs_f64() / self.took.as_secs_f64(),
        )
    }
}

/// The database the benchmark uses.
pub fn database_url() -> String {
    std::env::var("STRATA_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

const SCHEMA: &str = "bench_archive_pg";

/// Restores `archive` (of `events` events; `restored_dir` is a directory it was restored
/// into, which took `dir_restore`) into an empty PostgreSQL store, exports that store into a
/// new archive under `scratch`, and times each beside its baseline.
pub async fn run(
    archive: &Archive,
    events: u64,
    restored_dir: &Path,
    dir_restore: Duration,
    scratch: &Path,
) -> Result<Vec<PgMove>, String> {
    let url = database_url();
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    crate::postgres::reset_schema(&admin, SCHEMA).await?;
    let store = PostgresStore::connect_with(PgStoreOptions::new(&url).with_schema(SCHEMA))
        .await
        .map_err(|e| e.to_string())?;
    let mut moves = Vec::new();

    let t = Instant::now();
    let r = archive
        .restore_postgres(&store, scratch, &|_| {})
        .await
        .map_err(|e| e.to_string())?;
    let took = t.elapsed();
    if r.events != events {
        return Err(format!(
            "restored {} events into PostgreSQL, not {events}",
            r.events
        ));
    }
    let inserts = plain_inserts(&admin, restored_dir).await?;
    moves.push(PgMove {
        what: "restore into PostgreSQL",
        events,
        took,
        baseline_what: "restore to a dir + plain INSERTs",
        baseline: dir_restore + inserts,
    });

    let to = Archive::open(&scratch.join("from-postgres").display().to_string())
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let r = to
        .archive_postgres(&store, &|_| {})
        .await
        .map_err(|e| e.to_string())?;
    let took = t.elapsed();
    if r.events != events {
        return Err(format!("exported {} events, not {events}", r.events));
    }
    let read = read_rows(&store).await?;
    moves.push(PgMove {
        what: "export PostgreSQL to a dir",
        events,
        took,
        baseline_what: "reading its rows in pages",
        baseline: read,
    });
    drop(store);
    crate::postgres::reset_schema(&admin, SCHEMA).await?;
    Ok(moves)
}

/// Plain `INSERT`s of the events of restored directory `dir`, 1,000 per statement, into a
/// table like the events table (its indexes and constraints, no trigger).
async fn plain_inserts(admin: &sqlx::PgPool, dir: &Path) -> Result<Duration, String> {
    admin
        .execute(
            format!("CREATE TABLE {SCHEMA}.plain (LIKE {SCHEMA}.events INCLUDING ALL)").as_str(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<RecordedEvent>>(2);
    let dir = dir.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::new();
        strata_log::each_sealed_event(&dir, |e| {
            batch.push(e);
            if batch.len() == EXPORT_PAGE_EVENTS {
                tx.blocking_send(std::mem::take(&mut batch))
                    .map_err(|_| "stopped".to_owned())?;
            }
            Ok::<(), String>(())
        })?;
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        Ok::<(), String>(())
    });
    let sql = format!(
        "INSERT INTO {SCHEMA}.plain (position, event_id, aggregate_id, aggregate_type, event_type,
             version, data, metadata, created_at, transaction_id, content_type, data_bytes)
         SELECT x.p, x.id, x.s, x.c, x.t, x.v, convert_from(x.d, 'UTF8')::JSONB, x.m::JSONB,
             'epoch'::TIMESTAMPTZ + x.us * INTERVAL '1 microsecond', pg_current_xact_id(),
             x.ct, x.d
         FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                     $6::bigint[], $7::bytea[], $8::text[], $9::bigint[], $10::text[])
              AS x(p, id, s, c, t, v, d, m, us, ct)"
    );
    let t = Instant::now();
    while let Some(batch) = rx.recv().await {
        let meta: Vec<Option<String>> = batch
            .iter()
            .map(|e| {
                let m = e.metadata.to_bytes();
                (!m.is_empty()).then(|| String::from_utf8_lossy(&m).into_owned())
            })
            .collect();
        sqlx::query(&sql)
            .bind(
                batch
                    .iter()
                    .map(|e| e.position.0 as i64)
                    .collect::<Vec<_>>(),
            )
            .bind(batch.iter().map(|e| e.event_id).collect::<Vec<_>>())
            .bind(
                batch
                    .iter()
                    .map(|e| e.stream_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                batch
                    .iter()
                    .map(|e| e.stream_id.category())
                    .collect::<Vec<_>>(),
            )
            .bind(
                batch
                    .iter()
                    .map(|e| e.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                batch
                    .iter()
                    .map(|e| e.stream_version as i64)
                    .collect::<Vec<_>>(),
            )
            .bind(batch.iter().map(|e| e.data.as_slice()).collect::<Vec<_>>())
            .bind(&meta)
            .bind(
                batch
                    .iter()
                    .map(|e| e.recorded_at.timestamp_micros())
                    .collect::<Vec<_>>(),
            )
            .bind(
                batch
                    .iter()
                    .map(|e| e.content_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .execute(admin)
            .await
            .map_err(|e| e.to_string())?;
    }
    let took = t.elapsed();
    reader.await.map_err(|e| e.to_string())??;
    Ok(took)
}

/// Reads every row of `store`, page by page as an export reads them.
async fn read_rows(store: &PostgresStore) -> Result<Duration, String> {
    let below = store.final_below().await.map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut from = 0;
    loop {
        let page = store
            .export_page(from, below, EXPORT_PAGE_EVENTS, EXPORT_PAGE_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        from = last.position.0 + 1;
    }
    Ok(t.elapsed())
}
