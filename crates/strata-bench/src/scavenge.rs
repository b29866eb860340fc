//! The PostgreSQL scavenge benchmark (`cargo bench -p strata-bench --bench scavenge`): a store
//! of 1,000,000 events in 10,000 streams of 100, 90% of the streams soft-deleted, then
//! scavenged while 16 writers append. Measured in the same run:
//!
//! - the scavenge's rate beside the fastest deletion PostgreSQL has for the same rows, one
//!   `DELETE` statement in one transaction on an identical copy (then `VACUUM`, which the
//!   scavenge also runs), both alone;
//! - the events table's size (with its indexes) before, after the scavenge (space reusable,
//!   files as large) and after `VACUUM FULL` (what a rewrite gives back to the disk);
//! - on a third identical copy, the 16 writers' append p99 while a scavenge runs, beside the
//!   same writers just before without it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use strata_core::scavenge::ScavengeProgress;
use strata_core::{EventStore, ExpectedVersion};
use strata_postgres::{PgStoreOptions, PostgresStore};

use crate::postgres::{event, reset_schema, sid, strata_rows, strata_rows_while, PgAppendRow};

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScavengeScale {
    /// 10,000 streams of 100 events.
    Full,
    /// 1,000 streams of 100 events, for smoke tests.
    Quick,
    /// This many streams of 100 events: a longer run, so that a p99 taken during a
    /// scavenge counts more appends than one minute's disk gives.
    Streams(u64),
}

impl ScavengeScale {
    pub(crate) fn streams(self) -> u64 {
        match self {
            ScavengeScale::Full => 10_000,
            ScavengeScale::Quick => 1_000,
            ScavengeScale::Streams(n) => n,
        }
    }
}

impl ScavengeScale {
    /// `Streams(n)` when `STRATA_BENCH_STREAMS=n` (n ≥ 1,000), else `Quick` when
    /// `STRATA_BENCH_QUICK=1`, else `Full`.
    pub fn from_env() -> Result<ScavengeScale, String> {
        if let Ok(v) = std::env::var("STRATA_BENCH_STREAMS") {
            return match v.parse::<u64>() {
                Ok(n) if n >= 1_000 => Ok(ScavengeScale::Streams(n)),
                _ => Err(format!(
                    "STRATA_BENCH_STREAMS={v:?} is not a number of streams of at least 1000"
                )),
            };
        }
        Ok(
            if std::env::var("STRATA_BENCH_QUICK").is_ok_and(|v| v == "1") {
                ScavengeScale::Quick
            } else {
                ScavengeScale::Full
            },
        )
    }
}

/// The body of a `cargo bench` program: runs `bench` at the scale of the environment on a
/// multi-threaded runtime, prints its report, or says why it failed and exits 1.
pub fn bench_main<R, F>(bench: impl FnOnce(ScavengeScale) -> F)
where
    R: std::fmt::Display,
    F: std::future::Future<Output = Result<R, String>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scale = ScavengeScale::from_env().unwrap_or_else(|e| {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    });
    match rt.block_on(bench(scale)) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}

/// Events per stream.
pub(crate) const STREAM_EVENTS: u64 = 100;
/// Writers appending while the scavenge runs, and before it for the baseline p99.
pub(crate) const WRITERS: usize = 16;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct ScavengeReport {
    /// Events loaded.
    pub events: u64,
    /// Events the scavenge removed.
    pub removed: u64,
    /// How long the scavenge took (its `VACUUM` included).
    pub scavenge: Duration,
    /// How long one `DELETE` of the same rows and a `VACUUM` took on the copy.
    pub bulk_delete: Duration,
    /// The events table with its indexes, in bytes: loaded and deleted, not yet scavenged.
    pub bytes_before: u64,
    /// ... after the scavenge.
    pub bytes_after: u64,
    /// ... after `VACUUM FULL`.
    pub bytes_after_full: u64,
    /// The writers alone.
    pub writers_alone: PgAppendRow,
    /// The writers while the scavenge ran.
    pub writers_during: PgAppendRow,
}

impl ScavengeReport {
    /// Events removed per second by the scavenge.
    pub fn events_per_sec(&self) -> f64 {
        self.removed as f64 / self.scavenge.as_secs_f64()
    }
    /// The same for the one-statement `DELETE`.
    pub fn bulk_events_per_sec(&self) -> f64 {
        self.removed as f64 / self.bulk_delete.as_secs_f64()
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl fmt::Display for ScavengeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "PostgreSQL scavenge: {} events in {} streams of {STREAM_EVENTS}, 90% of the streams soft-deleted",
            self.events,
            self.events / STREAM_EVENTS
        )?;
        writeln!(
            f,
            "  scavenge        {:>9} events removed in {:>6.2} s = {:>9.0} events/s ({:.1} MiB/s of table and indexes)",
            self.removed,
            self.scavenge.as_secs_f64(),
            self.events_per_sec(),
            mib(self.bytes_before.saturating_sub(self.bytes_after_full))
                / self.scavenge.as_secs_f64()
        )?;
        writeln!(
            f,
            "  one DELETE      {:>9} events removed in {:>6.2} s = {:>9.0} events/s  (scavenge / DELETE = {:.2}x)",
            self.removed,
            self.bulk_delete.as_secs_f64(),
            self.bulk_events_per_sec(),
            self.events_per_sec() / self.bulk_events_per_sec()
        )?;
        writeln!(
            f,
            "  events table + indexes: {:.1} MiB before, {:.1} MiB after the scavenge (reusable), {:.1} MiB after VACUUM FULL = {:.1}% of before",
            mib(self.bytes_before),
            mib(self.bytes_after),
            mib(self.bytes_after_full),
            100.0 * self.bytes_after_full as f64 / self.bytes_before as f64
        )?;
        writeln!(
            f,
            "  {WRITERS} writers' append p99: {} µs alone, {} µs during the scavenge = {:.2}x ({:.0} and {:.0} appends/s)",
            self.writers_alone.latency_us_p99,
            self.writers_during.latency_us_p99,
            self.writers_during.latency_us_p99 as f64 / self.writers_alone.latency_us_p99.max(1) as f64,
            self.writers_alone.events_per_sec(),
            self.writers_during.events_per_sec()
        )
    }
}

async fn table_bytes(pool: &PgPool, schema: &str) -> Result<u64, String> {
    let b: i64 = sqlx::query_scalar(&format!("SELECT pg_total_relation_size('{schema}.events')"))
        .fetch_one(pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok(b as u64)
}

/// Loads `streams` streams of [`STREAM_EVENTS`] events and soft-deletes 9 in 10 of them,
/// 8 writers at a time.
pub(crate) async fn load_and_delete<S: EventStore + Clone + 'static>(
    store: &S,
    streams: u64,
) -> Result<(), String> {
    load(store, streams, true).await
}

/// Loads `streams` streams of [`STREAM_EVENTS`] events, 8 writers at a time; with `delete`,
/// soft-deletes 9 in 10 of them.
pub(crate) async fn load<S: EventStore + Clone + 'static>(
    store: &S,
    streams: u64,
    delete: bool,
) -> Result<(), String> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, next) = (store.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= streams {
                    return Ok::<_, String>(());
                }
                let s = sid(format!("order-{n}"))?;
                let events = (0..STREAM_EVENTS).map(|i| event(n * 1000 + i)).collect();
                store
                    .append(&s, ExpectedVersion::NoStream, events)
                    .await
                    .map_err(|e| format!("load: {e}"))?;
                if delete && n % 10 != 0 {
                    store
                        .delete_stream(&s, ExpectedVersion::Exact(STREAM_EVENTS - 1))
                        .await
                        .map_err(|e| format!("delete: {e}"))?;
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// [`WRITERS`] single-event writers on `busy`, 3 s alone, then while a scavenge runs there,
/// which must remove `expected` events.
pub(crate) async fn writers_beside_a_scavenge<S: EventStore + Clone + 'static>(
    busy: &S,
    expected: u64,
) -> Result<(PgAppendRow, PgAppendRow), String> {
    let alone = strata_rows(busy, WRITERS, 1, 3.0, "alone").await?;
    let running = Arc::new(AtomicBool::new(true));
    let writers = {
        let (busy, running) = (busy.clone(), running.clone());
        tokio::spawn(async move { strata_rows_while(&busy, WRITERS, 1, "during", running).await })
    };
    let during = busy
        .scavenge(&|_: ScavengeProgress| {})
        .await
        .map_err(|e| format!("scavenge: {e}"));
    running.store(false, Ordering::Relaxed);
    let writers_during = writers.await.map_err(|e| e.to_string())??;
    if during?.progress.events_removed != expected {
        return Err("the scavenge beside writers removed another count".to_owned());
    }
    Ok((alone, writers_during))
}

/// Runs the benchmark against `database_url`.
pub async fn run(database_url: &str, scale: ScavengeScale) -> Result<ScavengeReport, String> {
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await
        .map_err(|e| format!("connecting to {database_url}: {e}"))?;
    let schemas = ["bench_scav_strata", "bench_scav_bulk", "bench_scav_writers"];
    for schema in schemas {
        reset_schema(&admin, schema).await?;
    }
    let connect = |schema: &str| {
        PostgresStore::connect_with(
            PgStoreOptions::new(database_url)
                .with_schema(schema)
                .with_max_connections(24),
        )
    };
    let streams = scale.streams();
    let store = connect(schemas[0]).await.map_err(|e| e.to_string())?;
    let bulk = connect(schemas[1]).await.map_err(|e| e.to_string())?;
    let busy = connect(schemas[2]).await.map_err(|e| e.to_string())?;
    for s in [&store, &bulk, &busy] {
        load_and_delete(s, streams).await?;
    }
    for schema in schemas {
        admin
            .execute(format!("VACUUM ANALYZE {schema}.events").as_str())
            .await
            .map_err(|e| e.to_string())?;
    }
    let bytes_before = table_bytes(&admin, schemas[0]).await?;

    // The baseline: the same rows in one statement (versions 1..99 of each deleted stream,
    // its first and last kept), then VACUUM as the scavenge does.
    let t = Instant::now();
    let mut tx = bulk.pool().begin().await.map_err(|e| e.to_string())?;
    tx.execute(format!("SELECT set_config('strata.delete', '{}', true)", schemas[1]).as_str())
        .await
        .map_err(|e| e.to_string())?;
    let deleted = tx
        .execute(
            format!(
                "DELETE FROM {0}.events e
                  WHERE e.version > 0 AND e.version < {1}
                    AND EXISTS (SELECT 1 FROM {0}.events m
                                 WHERE m.aggregate_id = '$$' || e.aggregate_id)",
                schemas[1],
                STREAM_EVENTS - 1
            )
            .as_str(),
        )
        .await
        .map_err(|e| e.to_string())?
        .rows_affected();
    tx.commit().await.map_err(|e| e.to_string())?;
    admin
        .execute(format!("VACUUM {}.events", schemas[1]).as_str())
        .await
        .map_err(|e| e.to_string())?;
    let bulk_delete = t.elapsed();

    let t = Instant::now();
    let report = store
        .scavenge(&|_: ScavengeProgress| {})
        .await
        .map_err(|e| format!("scavenge: {e}"))?;
    let scavenge = t.elapsed();
    let removed = report.progress.events_removed;
    if removed != deleted {
        return Err(format!(
            "the scavenge removed {removed} events, the DELETE {deleted}"
        ));
    }
    let bytes_after = table_bytes(&admin, schemas[0]).await?;
    admin
        .execute(format!("VACUUM FULL {}.events", schemas[0]).as_str())
        .await
        .map_err(|e| e.to_string())?;
    let bytes_after_full = table_bytes(&admin, schemas[0]).await?;

    let (writers_alone, writers_during) = writers_beside_a_scavenge(&busy, deleted).await?;
    drop(store);
    drop(bulk);
    drop(busy);
    for schema in schemas {
        reset_schema(&admin, schema).await?;
    }
    Ok(ScavengeReport {
        events: streams * STREAM_EVENTS,
        removed,
        scavenge,
        bulk_delete,
        bytes_before,
        bytes_after,
        bytes_after_full,
        writers_alone,
        writers_during,
    })
}
