//! `cargo bench -p strata --bench aggregate`: the toolkit on the embedded store.
//!
//! - `load/replay/N` and `load/snapshot/N`: loading a bank account of N events (1,000,
//!   10,000, 100,000) by full replay, and from a snapshot 50 events behind the head — the
//!   snapshot path must not grow with N.
//! - `commands/<backend>/raw-append/writers/W`: the store's own rate for the same load
//!   (single-event appends, W = 1 and 16 writers), the ceiling for the commands below.
//! - `commands/<backend>/{cached,cold}/callers/C`: bank deposits (load + decide + append, snapshots
//!   every 100 events) with C = 1 and 16 concurrent callers, each on its own account, with the
//!   repository's aggregate cache on (the default) and off. Every command waits until its
//!   events are durable (fdatasync), so the disk's own 4 KiB write+fdatasync rate, measured
//!   first and printed, is the yardstick for these figures.
//!
//! - The same commands on PostgreSQL (`commands/postgres/...`) when a database is reachable at
//!   `STRATA_BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`); skipped
//!   with a message otherwise.
//!
//! `STRATA_BENCH_DIR` chooses where the embedded stores live, in a directory of their own
//! (default: the system temp directory).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

// The bank example's domain. Benches build with `cfg(test)`, which brings in the example's
// test module too; its items are unused here.
#[path = "../../strata-examples/examples/bank/domain.rs"]
#[allow(unused)]
mod domain;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use domain::{AccountCommand, AccountEvent, BankAccount};
use strata::{
    EventCodec, EventStore, ExpectedVersion, Repository, Snapshot, SnapshotStore, StreamId,
};
use strata_log::LogStore;

const SIZES: [u64; 3] = [1_000, 10_000, 100_000];
/// Events a snapshot load replays after its snapshot: half the default interval.
const SNAPSHOT_LAG: u64 = 50;

fn main() {
    // A directory of its own inside STRATA_BENCH_DIR, removed at the end (the directory given
    // was removed whole before, with whatever else it held).
    let dir = std::env::var("STRATA_BENCH_DIR").map_or_else(
        |_| tempfile::tempdir().unwrap(),
        |d| {
            std::fs::create_dir_all(&d).unwrap();
            tempfile::tempdir_in(d).unwrap()
        },
    );
    let base = dir.path().to_path_buf();
    let rate = fdatasync_rate(&base, 2.0).unwrap();
    println!(
        "disk baseline: {rate:.0} write(4 KiB)+fdatasync per second in {}",
        base.display()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default().configure_from_args();
    loads(&mut c, &rt, &base.join("loads"));
    commands(
        &mut c,
        &rt,
        "embedded",
        LogStore::open(base.join("commands")).unwrap(),
        &base,
    );
    postgres(&mut c, &rt, &base);
    c.final_summary();
    println!(
        "disk baseline (again): {:.0} fdatasync/s",
        fdatasync_rate(&base, 2.0).unwrap()
    );
    drop(dir);
}

fn loads(c: &mut Criterion, rt: &tokio::runtime::Runtime, dir: &Path) {
    let store = LogStore::open(dir).unwrap();
    rt.block_on(async {
        for n in SIZES {
            seed_account(&store, &format!("replay{n}"), n).await;
            seed_account(&store, &format!("snapshot{n}"), n).await;
            // The snapshot a repository with interval 100 would have... 50 events behind.
            let repo = Repository::<BankAccount, _>::new(store.clone()).with_cache_capacity(0);
            let at = n - 1 - SNAPSHOT_LAG;
            let state = repo
                .load_at_version(&format!("snapshot{n}"), at)
                .await
                .unwrap();
            store
                .save_snapshot(Snapshot {
                    stream_id: state.stream_id.clone(),
                    stream_version: at,
                    schema_version: 1,
                    data: serde_json::to_vec(&state.state).unwrap(),
                    taken_at: chrono::Utc::now(),
                })
                .await
                .unwrap();
        }
    });
    // No in-memory cache: every iteration loads from the store.
    let repo = Repository::<BankAccount, _>::new(store.clone()).with_cache_capacity(0);
    let mut group = c.benchmark_group("load");
    for n in SIZES {
        group.throughput(Throughput::Elements(n));
        if n >= 100_000 {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::new("replay", n), &n, |b, &n| {
            let id = format!("replay{n}");
            b.to_async(rt).iter(|| async {
                let loaded = repo.load(&id).await.unwrap();
                assert_eq!(loaded.events_replayed, n);
                loaded
            });
        });
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("snapshot", n), &n, |b, &n| {
            let id = format!("snapshot{n}");
            b.to_async(rt).iter(|| async {
                let loaded = repo.load(&id).await.unwrap();
                assert_eq!(loaded.events_replayed, SNAPSHOT_LAG);
                assert_eq!(loaded.version, Some(n - 1));
                loaded
            });
        });
    }
    group.finish();
}

/// Appends an opened account and `n - 1` deposits, in appends of at most 10,000 events.
async fn seed_account(store: &LogStore, id: &str, n: u64) {
    let codec = EventCodec::<AccountEvent>::new();
    let stream = StreamId::new(format!("account-{id}")).unwrap();
    let mut events = vec![codec
        .encode(&AccountEvent::AccountOpened {
            customer_id: "bench".into(),
            owner: Some("bench".into()),
            email: None,
            initial_balance: 0,
        })
        .unwrap()];
    let mut written = 0u64;
    for _ in 1..n {
        events.push(
            codec
                .encode(&AccountEvent::MoneyDeposited { amount: 1 })
                .unwrap(),
        );
        if events.len() == strata_core::limits::APPEND_EVENTS_MAX {
            written += events.len() as u64;
            store
                .append(&stream, ExpectedVersion::Any, std::mem::take(&mut events))
                .await
                .unwrap();
        }
    }
    if !events.is_empty() {
        written += events.len() as u64;
        store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    assert_eq!(written, n);
}

fn commands<S: EventStore + SnapshotStore + Clone>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    backend: &str,
    store: S,
    disk: &Path,
) {
    println!(
        "disk right now: {:.0} write(4 KiB)+fdatasync per second",
        fdatasync_rate(disk, 1.0).unwrap()
    );
    let mut group = c.benchmark_group(format!("commands/{backend}"));
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(10));
    // The store's own rate in this run: single-event appends to the writer's own stream with
    // no check, the ceiling for commands (each command is one such append plus its decision).
    for writers in [1usize, 16] {
        let streams: Vec<StreamId> = (0..writers)
            .map(|i| StreamId::new(format!("raw-{writers}-{i}")).unwrap())
            .collect();
        let event = EventCodec::<AccountEvent>::new()
            .encode(&AccountEvent::MoneyDeposited { amount: 1 })
            .unwrap();
        group.bench_with_input(
            BenchmarkId::new("raw-append/writers", writers),
            &writers,
            |b, _| {
                b.to_async(rt).iter_custom(|iters| {
                    let store = store.clone();
                    let streams = streams.clone();
                    let event = event.clone();
                    async move {
                        let per_writer = iters.div_ceil(streams.len() as u64);
                        let start = Instant::now();
                        let tasks: Vec<_> = streams
                            .into_iter()
                            .map(|stream| {
                                let store = store.clone();
                                let event = event.clone();
                                tokio::spawn(async move {
                                    for _ in 0..per_writer {
                                        store
                                            .append(
                                                &stream,
                                                ExpectedVersion::Any,
                                                vec![event.clone()],
                                            )
                                            .await
                                            .unwrap();
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                        let ran = per_writer * writers as u64;
                        start.elapsed().mul_f64(iters as f64 / ran as f64)
                    }
                });
            },
        );
    }
    // `cached`: the repository's default, aggregates kept in memory between commands, so a
    // command is a decision and one append. `cold`: no cache, so every command loads the
    // newest snapshot and replays the events after it (0-99) first.
    for (mode, cache) in [
        ("cached", strata::limits::AGGREGATE_CACHE_ENTRIES_DEFAULT),
        ("cold", 0),
    ] {
        let repo = Repository::<BankAccount, _>::new(store.clone()).with_cache_capacity(cache);
        for callers in [1usize, 16] {
            let ids: Vec<String> = (0..callers)
                .map(|i| format!("{mode}{callers}-{i}"))
                .collect();
            rt.block_on(async {
                for id in &ids {
                    repo.execute(
                        id,
                        AccountCommand::Open {
                            customer_id: "bench".into(),
                            owner: "bench".into(),
                            email: "bench@example.org".into(),
                            initial_balance: 0,
                        },
                    )
                    .await
                    .unwrap();
                }
            });
            let name = format!("{mode}/callers");
            group.bench_with_input(BenchmarkId::new(name, callers), &callers, |b, _| {
                b.to_async(rt).iter_custom(|iters| {
                    let repo = repo.clone();
                    let ids = ids.clone();
                    async move {
                        let per_caller = iters.div_ceil(ids.len() as u64);
                        let start = Instant::now();
                        let tasks: Vec<_> = ids
                            .into_iter()
                            .map(|id| {
                                let repo = repo.clone();
                                tokio::spawn(async move {
                                    for _ in 0..per_caller {
                                        repo.execute(&id, AccountCommand::Deposit { amount: 1 })
                                            .await
                                            .unwrap();
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                        // Time per `iters` commands even when rounding ran a few more.
                        let ran = per_caller * callers as u64;
                        start.elapsed().mul_f64(iters as f64 / ran as f64)
                    }
                });
            });
        }
    }
    group.finish();
}

/// The same commands on PostgreSQL, in a fresh schema of `STRATA_BENCH_DATABASE_URL` (default
/// the test database on 127.0.0.1:5432). Skipped with a message when none is reachable.
fn postgres(c: &mut Criterion, rt: &tokio::runtime::Runtime, disk: &Path) {
    let url = std::env::var("STRATA_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("bench_toolkit_{}", std::process::id());
    let options = strata_postgres::PgStoreOptions::new(&url).with_schema(&schema);
    let store = match rt.block_on(strata_postgres::PostgresStore::connect_with(options)) {
        Ok(store) => store,
        Err(e) => {
            println!("skipping the PostgreSQL benchmarks: no database at {url}: {e}");
            return;
        }
    };
    commands(c, rt, "postgres", store.clone(), disk);
    rt.block_on(async {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(store.pool())
            .await;
    });
}

/// The disk's own rate of 4 KiB write + fdatasync, the bound on one caller's commands/s.
fn fdatasync_rate(dir: &Path, secs: f64) -> std::io::Result<f64> {
    let path = dir.join("fsync-probe.tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let block = [0x5au8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(rate)
}
