//! `cargo bench -p strata-bench --bench commands`: the bank's commands through Strata's toolkit
//! beside cqrs-es 0.5 with postgres-es (the most used Rust event-sourcing framework), with the
//! same bank rules (the bank example's `domain.rs`, which both frameworks run), in one run.
//!
//! Every command is a deposit of 1 on the caller's own account (opened first), answered only
//! once its events are durable: committed in PostgreSQL (`synchronous_commit` as the server
//! has it) or fdatasynced by the embedded store. Each round runs every row for the same time,
//! rows alternating, and every row starts on fresh accounts so that histories are as long in
//! every row; the figures are medians over rounds.
//!
//! - Strata, embedded and PostgreSQL, with the repository's aggregate cache on (`cached`: a
//!   command is a decision and one append) and off (`cold`: every command loads the newest
//!   snapshot, taken every 100 events, and replays what follows it, then appends).
//! - cqrs-es in its three stores: `event-store` (every command replays the account's whole
//!   history), `snapshot-store` (a snapshot every 100 events, as Strata's repository takes
//!   them) and `aggregate-store` (the aggregate's state saved with every command, read
//!   instead of events). Strata with its cache on is compared with cqrs-es's best store;
//!   with its cache off, with cqrs-es's best store that rebuilds the aggregate from events for
//!   every command (event or snapshot store), as Strata then does (the aggregate store keeps
//!   the state between commands, as the cache does); both ratios are printed.
//!
//! The database is `STRATA_BENCH_DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`;
//! each framework gets a fresh schema of it, dropped at the end. `STRATA_BENCH_QUICK=1` runs one
//! short round; `STRATA_BENCH_ROWS=embedded/cached/16,cqrs-es` runs only the rows whose
//! `name/callers` holds one of the comma-separated parts as whole `/`-separated parts (ratios
//! without their rows print NaN). `STRATA_BENCH_DIR` chooses where the embedded store lives
//! (a directory of its own inside it, removed at the end; default: the system temp directory).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

// The bank example's domain. Benches build with `cfg(test)`, which brings in the example's
// test module too; its items are unused here.
#[path = "../../strata-examples/examples/bank/domain.rs"]
#[allow(unused)]
mod domain;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::CqrsFramework;
use domain::{AccountCommand, AccountError, AccountEvent, BankAccount};
use postgres_es::{PostgresCqrs, PostgresEventRepository};
use sqlx::postgres::PgPoolOptions;
use strata::{EventStore, Repository, SnapshotStore};
use strata_log::LogStore;

/// cqrs-es's view of the same event type.
impl cqrs_es::DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::AccountOpened { .. } => "AccountOpened",
            AccountEvent::MoneyDeposited { .. } => "MoneyDeposited",
            AccountEvent::MoneyWithdrawn { .. } => "MoneyWithdrawn",
            AccountEvent::AccountClosed {} => "AccountClosed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// cqrs-es's view of the same aggregate: its decisions and its replay are Strata's own
/// `handle` and `apply`, so both frameworks run exactly the same rules.
impl cqrs_es::Aggregate for BankAccount {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AccountCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AccountError> {
        for event in strata::Aggregate::handle(self, command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        strata::Aggregate::apply(self, &event);
    }
}

/// Events between two snapshots, for Strata's repository (its default) and cqrs-es's
/// snapshot store alike.
const SNAPSHOT_EVERY: usize = 100;
/// Connections each framework may use: one per caller of the largest row.
const CONNECTIONS: u32 = 16;

type CommandFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs one command on the account `id` and waits for it to be durable.
type Execute = Arc<dyn Fn(String, AccountCommand) -> CommandFuture + Send + Sync>;

/// One row: a framework, a store and a mode, and how it executes a command.
struct Row {
    name: String,
    callers: usize,
    execute: Execute,
}

fn strata_row<S>(name: &str, store: S, cache: usize, callers: usize) -> Row
where
    S: EventStore + SnapshotStore + Clone + Send + Sync + 'static,
{
    let repo = Repository::<BankAccount, _>::new(store).with_cache_capacity(cache);
    Row {
        name: name.to_owned(),
        callers,
        execute: Arc::new(move |id, command| {
            let repo = repo.clone();
            Box::pin(async move {
                repo.execute(&id, command).await.unwrap();
            })
        }),
    }
}

fn cqrs_row(name: &str, cqrs: Arc<PostgresCqrs<BankAccount>>, callers: usize) -> Row {
    Row {
        name: name.to_owned(),
        callers,
        execute: Arc::new(move |id, command| {
            let cqrs = cqrs.clone();
            Box::pin(async move {
                cqrs.execute(&id, command).await.unwrap();
            })
        }),
    }
}

/// Runs `row` for `secs` on fresh accounts named after `round`; commands per second.
async fn run(row: &Row, round: usize, secs: f64) -> f64 {
    let ids: Vec<String> = (0..row.callers)
        .map(|i| {
            format!(
                "{}-c{}-r{round}-{i}",
                row.name.replace('/', "-"),
                row.callers
            )
        })
        .collect();
    for id in &ids {
        let open = AccountCommand::Open {
            customer_id: "bench".into(),
            owner: "bench".into(),
            email: "bench@example.org".into(),
            initial_balance: 0,
        };
        (row.execute)(id.clone(), open).await;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let execute = row.execute.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    execute(id.clone(), AccountCommand::Deposit { amount: 1 }).await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut done = 0u64;
    for t in tasks {
        done += t.await.unwrap();
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::var("STRATA_BENCH_QUICK").is_ok_and(|v| v == "1");
    let (rounds, secs) = if quick { (1, 1.0) } else { (3, 5.0) };
    let url = std::env::var("STRATA_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    // A directory of its own inside STRATA_BENCH_DIR (or the system temp directory), removed
    // at the end: nothing else there is touched.
    let parent =
        std::env::var("STRATA_BENCH_DIR").map_or_else(|_| std::env::temp_dir(), PathBuf::from);
    std::fs::create_dir_all(&parent).unwrap();
    let base = tempfile::Builder::new()
        .prefix("strata-commands-bench-")
        .tempdir_in(&parent)
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pid = std::process::id();
    let strata_schema = format!("bench_commands_strata_{pid}");
    let cqrs_schema = format!("bench_commands_cqrs_{pid}");

    let (rows, cleanup) = rt.block_on(async {
        let embedded = LogStore::open(base.path()).unwrap();
        let options = strata_postgres::PgStoreOptions::new(&url)
            .with_schema(&strata_schema)
            .with_max_connections(CONNECTIONS);
        let pg = match strata_postgres::PostgresStore::connect_with(options).await {
            Ok(store) => store,
            Err(e) => {
                eprintln!("this benchmark needs PostgreSQL: no database at {url}: {e}");
                std::process::exit(1);
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .connect(&url)
            .await
            .unwrap();
        // postgres-es's tables (its `db/init.sql`), in a schema of their own.
        for sql in [
            format!("CREATE SCHEMA {cqrs_schema}"),
            format!(
                "CREATE TABLE {cqrs_schema}.events (aggregate_type text NOT NULL, \
                 aggregate_id text NOT NULL, sequence bigint CHECK (sequence >= 0) NOT NULL, \
                 event_type text NOT NULL, event_version text NOT NULL, payload json NOT NULL, \
                 metadata json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, sequence))"
            ),
            format!(
                "CREATE TABLE {cqrs_schema}.snapshots (aggregate_type text NOT NULL, \
                 aggregate_id text NOT NULL, last_sequence bigint CHECK (last_sequence >= 0) \
                 NOT NULL, current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, \
                 payload json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))"
            ),
        ] {
            sqlx::query(&sql).execute(&pool).await.unwrap();
        }
        let repo = || {
            PostgresEventRepository::new(pool.clone()).with_tables(
                &format!("{cqrs_schema}.events"),
                &format!("{cqrs_schema}.snapshots"),
            )
        };
        let event_store = Arc::new(CqrsFramework::new(
            PersistedEventStore::new_event_store(repo()),
            vec![],
            (),
        ));
        let snapshot_store = Arc::new(CqrsFramework::new(
            PersistedEventStore::new_snapshot_store(repo(), SNAPSHOT_EVERY),
            vec![],
            (),
        ));
        let aggregate_store = Arc::new(CqrsFramework::new(
            PersistedEventStore::new_aggregate_store(repo()),
            vec![],
            (),
        ));
        let cached = strata::limits::AGGREGATE_CACHE_ENTRIES_DEFAULT;
        let mut rows = Vec::new();
        for callers in [1usize, 16] {
            rows.push(strata_row(
                "strata/embedded/cached",
                embedded.clone(),
                cached,
                callers,
            ));
            rows.push(strata_row(
                "strata/embedded/cold",
                embedded.clone(),
                0,
                callers,
            ));
            rows.push(strata_row(
                "strata/postgres/cached",
                pg.clone(),
                cached,
                callers,
            ));
            rows.push(strata_row("strata/postgres/cold", pg.clone(), 0, callers));
            rows.push(cqrs_row(
                "cqrs-es/event-store",
                event_store.clone(),
                callers,
            ));
            rows.push(cqrs_row(
                "cqrs-es/snapshot-store",
                snapshot_store.clone(),
                callers,
            ));
            rows.push(cqrs_row(
                "cqrs-es/aggregate-store",
                aggregate_store.clone(),
                callers,
            ));
        }
        (rows, (embedded, pg, pool))
    });

    // STRATA_BENCH_ROWS=a,b runs only the rows whose `name/callers` holds a or b as whole
    // `/`-separated parts in a row (`cold/1` is not `cold/16`).
    let only: Option<Vec<String>> = std::env::var("STRATA_BENCH_ROWS")
        .ok()
        .map(|v| v.split(',').map(str::to_owned).collect());
    let rows: Vec<Row> = rows
        .into_iter()
        .filter(|r| {
            let key = format!("{}/{}", r.name, r.callers);
            let key: Vec<&str> = key.split('/').collect();
            only.as_ref().is_none_or(|only| {
                only.iter().any(|o| {
                    let part: Vec<&str> = o.split('/').collect();
                    key.windows(part.len()).any(|w| w == part.as_slice())
                })
            })
        })
        .collect();
    let mut rates: BTreeMap<(String, usize), Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        for row in &rows {
            let rate = rt.block_on(run(row, round, secs));
            println!(
                "round {round}: {:<26} {:>2} callers {rate:>9.0} commands/s",
                row.name, row.callers
            );
            rates
                .entry((row.name.clone(), row.callers))
                .or_default()
                .push(rate);
        }
    }
    // NaN for a row not run.
    let rate = |name: &str, callers: usize| {
        rates
            .get(&(name.to_owned(), callers))
            .map_or(f64::NAN, |r| median(r))
    };

    println!(
        "\nbank deposits per second, medians of {rounds} round(s) of {secs} s (commands wait \
         until durable):"
    );
    println!("| row | 1 caller | 16 callers |\n|---|---:|---:|");
    let mut names: Vec<&str> = Vec::new();
    for row in &rows {
        if !names.contains(&row.name.as_str()) {
            names.push(&row.name);
        }
    }
    for name in names {
        println!("| {name} | {:.0} | {:.0} |", rate(name, 1), rate(name, 16));
    }
    // cqrs-es's fastest store among `stores` for `callers`.
    // (NaN when none of them ran: `total_cmp` would rank a NaN first.)
    let best_cqrs = |callers: usize, stores: &[&'static str]| {
        stores
            .iter()
            .map(|store| (*store, rate(&format!("cqrs-es/{store}"), callers)))
            .filter(|(_, r)| !r.is_nan())
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or(("none run", f64::NAN))
    };
    const EVERY_STORE: &[&str] = &["event-store", "snapshot-store", "aggregate-store"];
    // The stores that rebuild the aggregate from its events for every command, as Strata's
    // repository does with its cache off; the aggregate store keeps the state between
    // commands instead (in the database), as the cache does (in memory).
    const REPLAYING: &[&str] = &["event-store", "snapshot-store"];
    println!("\nStrata ÷ cqrs-es for the same callers:");
    for (name, callers, target, stores, against) in [
        (
            "strata/embedded/cached",
            16,
            10.0,
            EVERY_STORE,
            "its best store",
        ),
        (
            "strata/postgres/cached",
            16,
            2.0,
            EVERY_STORE,
            "its best store",
        ),
        (
            "strata/postgres/cold",
            16,
            1.2,
            REPLAYING,
            "its best replaying store",
        ),
        (
            "strata/postgres/cold",
            1,
            1.2,
            REPLAYING,
            "its best replaying store",
        ),
    ] {
        let (store, theirs) = best_cqrs(callers, stores);
        let ours = rate(name, callers);
        let (best, best_rate) = best_cqrs(callers, EVERY_STORE);
        println!(
            "{name}, {callers} caller(s): {ours:.0} ÷ {theirs:.0} ({against}, cqrs-es/{store}) \
             = {:.2}x (target >= {target}x); ÷ cqrs-es/{best} {:.2}x",
            ours / theirs,
            ours / best_rate
        );
    }

    rt.block_on(async {
        let (embedded, pg, pool) = cleanup;
        drop(rows);
        embedded.close().await.unwrap();
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {strata_schema} CASCADE"))
            .execute(pg.pool())
            .await;
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {cqrs_schema} CASCADE"))
            .execute(&pool)
            .await;
    });
    drop(base);
}
