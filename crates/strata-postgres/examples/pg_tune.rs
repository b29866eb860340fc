//! Compares Strata's single-event appends with the naive baseline at one writer count, several
//! times, alternating, to see through a noisy machine:
//!
//! ```text
//! cargo run --release -p strata-postgres --example pg_tune -- [writers] [rounds] [secs] [append_writers...]
//! ```

#[path = "../../strata-bench/src/postgres.rs"]
#[allow(dead_code)]
mod postgres;

#[path = "../../strata-bench/src/cpu.rs"]
mod cpu;

use cpu::process_cpu_time as cpu_time;

use sqlx::Executor;
use strata_postgres::{PgStoreOptions, PostgresStore};

/// CPU time of every `postgres` process on the machine, from /proc.
fn postgres_cpu_time() -> std::time::Duration {
    let mut total = std::time::Duration::ZERO;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim() != "postgres" {
            continue;
        }
        total +=
            cpu::stat_cpu_time(&std::fs::read_to_string(path.join("stat")).unwrap_or_default());
    }
    total
}

/// The server's WAL position in bytes (0 if it cannot be read).
async fn wal_lsn(admin: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
        .fetch_one(admin)
        .await
        .unwrap_or(0)
}

/// `pg_tune catchup [events]`: loads a store once (schema bench_pg_catchup, kept) and times
/// catch-up subscriptions over it, wall time and this process's CPU time.
async fn catchup(url: &str, events: u64) -> Result<(), String> {
    use strata_core::{EventData, EventStore, ExpectedVersion, StreamId};
    let store =
        PostgresStore::connect_with(PgStoreOptions::new(url).with_schema("bench_pg_catchup"))
            .await
            .map_err(|e| e.to_string())?;
    if store.head().await.map_err(|e| e.to_string())?.is_none() {
        let meta = strata_core::Metadata::new()
            .with_correlation_id("req-789")
            .with_user_id("user-456");
        for n in 0..events / 1000 {
            let batch: Vec<EventData> = (0..1000)
                .map(|i| {
                    EventData::json(
                        "MoneyDeposited",
                        &serde_json::json!({"amount": i, "currency": "EUR"}),
                    )
                    .map(|e| e.with_metadata(meta.clone()))
                })
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let s = StreamId::new(format!("account-{n}")).map_err(|e| e.to_string())?;
            store
                .append(&s, ExpectedVersion::NoStream, batch)
                .await
                .map_err(|e| e.to_string())?;
        }
        store
            .pool()
            .execute("VACUUM ANALYZE bench_pg_catchup.events")
            .await
            .map_err(|e| e.to_string())?;
    }
    for round in 0..3 {
        let (c, pc) = (cpu_time(), postgres_cpu_time());
        let wall = postgres::catch_up(&store, events).await?;
        let n = events;
        let (cpu, pcpu) = (
            cpu_time().saturating_sub(c),
            postgres_cpu_time().saturating_sub(pc),
        );
        println!(
            "catch-up round {round}: {n} events in {wall:?} ({:.0}/s), client CPU {:.2} µs/event, postgres CPU {:.2} µs/event",
            n as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / n as f64,
            pcpu.as_secs_f64() * 1e6 / n as f64
        );
    }
    Ok(())
}

/// `pg_tune hundred [rounds]`: 8 writers appending 100 events per call (the benchmark's row),
/// events/s with the CPU time of this process and of PostgreSQL per event.
async fn hundred(url: &str, rounds: usize) -> Result<(), String> {
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    postgres::reset_schema(&admin, "bench_pg_hundred").await?;
    let mut options = PgStoreOptions::new(url)
        .with_schema("bench_pg_hundred")
        .with_max_connections(20);
    if let Some(w) = std::env::var("STRATA_BENCH_PG_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options = options.with_append_writers(w);
    }
    let store = PostgresStore::connect_with(options)
        .await
        .map_err(|e| e.to_string())?;
    for round in 0..rounds {
        let lsn = || wal_lsn(&admin);
        let (c, pc, w) = (cpu_time(), postgres_cpu_time(), lsn().await);
        let before = store.append_stats();
        let row = postgres::strata_rows(&store, 8, 100, 3.0, &format!("h{round}")).await?;
        let (cpu, pcpu) = (
            cpu_time().saturating_sub(c),
            postgres_cpu_time().saturating_sub(pc),
        );
        let events = row.appends * 100;
        let after = store.append_stats();
        println!(
            "  WAL bytes/event: {}; transactions {}, appends {}",
            (lsn().await - w) / events.max(1) as i64,
            after.0 - before.0,
            after.1 - before.1
        );
        println!(
            "100-event appends round {round}: {:.0} events/s, p50 {} µs, p99 {} µs, client CPU {:.2} µs/event, postgres CPU {:.2} µs/event",
            events as f64 / row.elapsed.as_secs_f64(),
            row.latency_us_p50,
            row.latency_us_p99,
            cpu.as_secs_f64() * 1e6 / events as f64,
            pcpu.as_secs_f64() * 1e6 / events as f64
        );
    }
    postgres::reset_schema(&admin, "bench_pg_hundred").await
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let url = std::env::var("STRATA_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("catchup") {
        let events = args
            .get(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1_000_000);
        return catchup(&url, events).await;
    }
    if args.first().map(String::as_str) == Some("hundred") {
        let rounds = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
        return hundred(&url, rounds).await;
    }
    let arg = |i: usize, d: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let writers = arg(0, 16.0) as usize;
    let rounds = arg(1, 3.0) as usize;
    let secs = arg(2, 3.0);
    let mut configs: Vec<usize> = args.iter().skip(3).filter_map(|a| a.parse().ok()).collect();
    if configs.is_empty() {
        configs.push(PgStoreOptions::new("").append_writers);
    }
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(24)
        .test_before_acquire(false)
        .connect(&url)
        .await
        .map_err(|e| e.to_string())?;
    postgres::reset_schema(&admin, "bench_pg_naive").await?;
    admin
        .execute(
            format!(
                "CREATE SCHEMA bench_pg_naive; SET search_path TO bench_pg_naive; {} RESET search_path;",
                postgres::NAIVE_SCHEMA
            )
            .as_str(),
        )
        .await
        .map_err(|e| e.to_string())?;
    for &aw in &configs {
        postgres::reset_schema(&admin, "bench_pg_tune").await?;
        let store = PostgresStore::connect_with(
            PgStoreOptions::new(url.clone())
                .with_schema("bench_pg_tune")
                .with_max_connections(24)
                .with_append_writers(aw)
                .with_notify(std::env::var("STRATA_BENCH_PG_NOTIFY").map_or(true, |v| v != "0")),
        )
        .await
        .map_err(|e| e.to_string())?;
        for round in 0..rounds {
            let lsn = || wal_lsn(&admin);
            let w0 = lsn().await;
            let (c0, p0) = (cpu_time(), postgres_cpu_time());
            let n = postgres::naive_rows(&url, writers, secs).await?;
            let (c1, p1) = (cpu_time(), postgres_cpu_time());
            let w1 = lsn().await;
            let before = store.append_stats();
            let s = postgres::strata_rows(&store, writers, 1, secs, &format!("r{round}")).await?;
            let after = store.append_stats();
            let (c2, p2) = (cpu_time(), postgres_cpu_time());
            let w2 = lsn().await;
            println!(
                "  WAL bytes/append: naive {} strata {}",
                (w1 - w0) / n.appends.max(1) as i64,
                (w2 - w1) / s.appends.max(1) as i64
            );
            let per = |d: std::time::Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
            println!(
                "  cpu µs/append: naive client {:.0} server {:.0}; strata client {:.0} server {:.0}",
                per(c1 - c0, n.appends),
                per(p1 - p0, n.appends),
                per(c2 - c1, s.appends),
                per(p2 - p1, s.appends)
            );
            let batch = (after.1 - before.1) as f64 / (after.0 - before.0).max(1) as f64;
            println!(
                "append_writers {aw:>2} round {round}: naive {:>7.0}/s  strata {:>7.0}/s  ratio {:.2}  batch {batch:.1}  p50 {} vs {} µs",
                n.events_per_sec(),
                s.events_per_sec(),
                s.events_per_sec() / n.events_per_sec(),
                n.latency_us_p50,
                s.latency_us_p50
            );
        }
    }
    postgres::reset_schema(&admin, "bench_pg_naive").await?;
    postgres::reset_schema(&admin, "bench_pg_tune").await?;
    Ok(())
}
