//! `cargo bench -p strata --bench projection`: projections on the embedded store.
//!
//! - **catch-up**: the bank's `account_balances` projection (strata-examples/examples/bank/read_models.rs, a
//!   typed `ReadModel`) over `STRATA_BENCH_EVENTS` events (default 1,000,000: 1,000
//!   accounts, each opened and then deposited to / withdrawn from) into SQLite, in batches of
//!   `PROJECTION_BATCH_MAX_EVENTS` events per transaction, three times alternating with the
//!   same SQL over raw events (`UntypedBalances`). Targets: ≥ 100,000 events/s; typed ≥ 0.9×
//!   untyped.
//! - **lag**: an async balance projection while `STRATA_BENCH_RATE` single-event appends per
//!   second (default 10,000, from 16 writers) run for `STRATA_BENCH_SECONDS` (default 5 s).
//!   The lag of an event is the time from its append being acknowledged to the projection
//!   having committed it (what a read-your-writes query waits). Target: p99 < 50 ms.
//!
//! - **catch-up into PostgreSQL**: the same balance projection as a `PgProjection` over
//!   `STRATA_BENCH_PG_EVENTS` events (default 100,000) stored in PostgreSQL, into a PostgreSQL
//!   read-model schema, when a database is reachable at `STRATA_BENCH_DATABASE_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/test`); skipped with a message otherwise.
//!
//! `STRATA_BENCH_DIR` chooses where the stores live (default: the system temp directory).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../strata-examples/examples/bank/domain.rs"]
#[allow(unused)]
mod domain;
#[path = "../../strata-examples/examples/bank/read_models.rs"]
#[allow(unused)]
mod read_models;

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::projection::{HandlerError, Projections, SqliteReadModels, Typed};
use strata::{EventData, EventStore, ExpectedVersion, StreamId};
use strata_log::LogStore;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(kind: &str, amount: u64) -> EventData {
    match kind {
        "AccountOpened" => EventData::json(
            kind,
            &serde_json::json!({"customerId": "bench", "owner": "bench", "initialBalance": amount}),
        ),
        _ => EventData::json(kind, &serde_json::json!({ "amount": amount })),
    }
    .unwrap()
}

async fn catch_up(base: &std::path::Path) {
    let total = env_u64("STRATA_BENCH_EVENTS", 1_000_000);
    let accounts = 1_000u64;
    let data = base.join("catch-up");
    let store = LogStore::open(&data).unwrap();
    let started = Instant::now();
    let per_account = total / accounts;
    // Each append is one account's next 1,000 events (or fewer), so filling is quick.
    let mut written = 0u64;
    let chunk = 1_000u64;
    let mut offset = 0;
    while offset < per_account {
        let n = chunk.min(per_account - offset);
        for a in 0..accounts {
            let stream = StreamId::new(format!("account-{a}")).unwrap();
            let events: Vec<EventData> = (offset..offset + n)
                .map(|i| match i {
                    0 => event("AccountOpened", 100),
                    i if i % 3 == 0 => event("MoneyWithdrawn", 1),
                    _ => event("MoneyDeposited", 2),
                })
                .collect();
            store
                .append(&stream, ExpectedVersion::Any, events)
                .await
                .unwrap();
            written += n;
        }
        offset += n;
    }
    println!(
        "catch-up: wrote {written} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The typed path (the example's `ReadModel`, events decoded and upcast) against the
    // untyped one (the same SQL over raw events), alternating, each into a fresh file.
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..3 {
        for (i, typed) in [false, true].into_iter().enumerate() {
            let path = base.join(format!("catch-up-{round}-{typed}.sqlite"));
            let models = SqliteReadModels::open(&path).unwrap();
            let projections = Projections::new(Arc::new(store.clone()), models.clone());
            let started = Instant::now();
            // Registering an inline projection catches it up from its checkpoint (0)
            // synchronously.
            if typed {
                projections
                    .inline(Typed::new(read_models::AccountBalances))
                    .await
                    .unwrap();
            } else {
                projections.inline(UntypedBalances).await.unwrap();
            }
            let elapsed = started.elapsed().as_secs_f64();
            let rate = written as f64 / elapsed;
            println!(
                "catch-up: account_balances ({}) over {written} events into SQLite: {elapsed:.2} s = {rate:.0} events/s",
                if typed { "typed" } else { "untyped" }
            );
            rates[i].push(rate);
            let rows: i64 = models
                .connect()
                .unwrap()
                .query_row("SELECT count(*) FROM account_balances", [], |r| r.get(0))
                .unwrap();
            assert_eq!(rows as u64, accounts);
            projections.shutdown().await;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (untyped, typed) = (median(&mut rates[0]), median(&mut rates[1]));
    println!(
        "catch-up: typed {typed:.0} events/s, untyped {untyped:.0} events/s (medians of 3, \
         alternating): typed = {:.2}x untyped",
        typed / untyped
    );
}

/// The balance projection over raw events, digging in JSON by event-type name: the
/// baseline the typed path is measured against.
struct UntypedBalances;

impl strata::projection::Projection for UntypedBalances {
    fn name(&self) -> &str {
        "account_balances"
    }
    fn filter(&self) -> strata::Filter {
        strata::Filter::default().categories(["account"])
    }
    fn tables(&self) -> &[&'static str] {
        &["account_balances"]
    }
    fn setup(&self, sql: &strata::projection::Sql<'_>) -> Result<(), HandlerError> {
        sql.execute_batch(
            "CREATE TABLE {account_balances} (
                 account_id TEXT PRIMARY KEY, owner TEXT, balance INTEGER NOT NULL,
                 last_updated TEXT NOT NULL)",
        )
    }
    fn apply(
        &self,
        sql: &strata::projection::Sql<'_>,
        event: &strata::RecordedEvent,
    ) -> Result<(), HandlerError> {
        let at = event.recorded_at.to_rfc3339();
        let s = event.stream_id.as_str();
        let id = s.split_once('-').map_or(s, |(_, id)| id);
        let data = event
            .data_json()
            .ok_or_else(|| HandlerError::new("not JSON"))?;
        match event.event_type.as_str() {
            "AccountOpened" => {
                sql.execute(
                    "INSERT INTO {account_balances} VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (account_id) DO UPDATE SET owner = ?2, balance = ?3,
                     last_updated = ?4",
                    rusqlite::params![
                        id,
                        data["owner"].as_str(),
                        data["initialBalance"].as_i64().unwrap_or(0),
                        at
                    ],
                )?;
            }
            "MoneyDeposited" | "MoneyWithdrawn" => {
                let sign = if event.event_type == "MoneyDeposited" {
                    1
                } else {
                    -1
                };
                let amount = data["amount"]
                    .as_i64()
                    .ok_or_else(|| HandlerError::new("no amount"))?;
                sql.execute(
                    "UPDATE {account_balances} SET balance = balance + ?2, last_updated = ?3
                     WHERE account_id = ?1",
                    rusqlite::params![id, sign * amount, at],
                )?;
            }
            _ => {}
        }
        Ok(())
    }
}

async fn lag(base: &std::path::Path) {
    let rate = env_u64("STRATA_BENCH_RATE", 10_000);
    let seconds = env_u64("STRATA_BENCH_SECONDS", 5);
    let writers = 16u64;
    let data = base.join("lag");
    let store = LogStore::open(&data).unwrap();
    let models = SqliteReadModels::next_to(&data).unwrap();
    let projections = Projections::new(Arc::new(store.clone()), models);
    projections
        .spawn(Typed::new(read_models::AccountBalances))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let projections = projections.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("account-{w}")).unwrap();
            store
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    vec![event("AccountOpened", 0)],
                )
                .await
                .unwrap();
            let per_writer = rate / writers;
            let interval = Duration::from_secs_f64(1.0 / per_writer as f64);
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut appended = 0u64;
            while started.elapsed() < Duration::from_secs(seconds) {
                ticker.tick().await;
                let r = store
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        vec![event("MoneyDeposited", 1)],
                    )
                    .await
                    .unwrap();
                let acked = Instant::now();
                let projections = projections.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    projections
                        .wait_for(
                            "account_balances",
                            r.last_position(),
                            Duration::from_secs(30),
                        )
                        .await
                        .unwrap();
                    let _ = tx.send(acked.elapsed());
                });
                appended += 1;
            }
            appended
        }));
    }
    drop(tx);
    let mut appended = 0;
    for t in tasks {
        appended += t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut lags = Vec::new();
    while let Some(l) = rx.recv().await {
        lags.push(l);
    }
    lags.sort();
    let pct = |q: f64| {
        let i = ((lags.len() as f64 - 1.0) * q).round() as usize;
        lags[i].as_secs_f64() * 1e3
    };
    println!(
        "lag: {appended} appends in {elapsed:.1} s = {:.0} appends/s; async projection lag \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        appended as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    projections.shutdown().await;
}

struct PgBalances;

#[strata::async_trait]
impl strata::projection::PgProjection for PgBalances {
    fn name(&self) -> &str {
        "account_balances"
    }
    fn filter(&self) -> strata::Filter {
        strata::Filter::default().categories(["account"])
    }
    async fn setup(
        &self,
        conn: &mut sqlx::PgConnection,
    ) -> Result<(), strata::projection::HandlerError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS account_balances (account_id TEXT PRIMARY KEY,
                 balance BIGINT NOT NULL)",
        )
        .execute(conn)
        .await?;
        Ok(())
    }
    async fn apply(
        &self,
        conn: &mut sqlx::PgConnection,
        event: &strata::RecordedEvent,
    ) -> Result<(), strata::projection::HandlerError> {
        let data = event.data_json().unwrap_or_default();
        let delta = match event.event_type.as_str() {
            "AccountOpened" => data["initialBalance"].as_i64().unwrap_or(0),
            "MoneyWithdrawn" => -data["amount"].as_i64().unwrap_or(0),
            _ => data["amount"].as_i64().unwrap_or(0),
        };
        sqlx::query(
            "INSERT INTO account_balances VALUES ($1, $2) ON CONFLICT (account_id)
             DO UPDATE SET balance = account_balances.balance + $2",
        )
        .bind(event.stream_id.as_str())
        .bind(delta)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// One statement per batch: the deltas summed per account, upserted with `unnest`.
    async fn apply_batch(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[strata::RecordedEvent],
    ) -> Result<(), (usize, strata::projection::HandlerError)> {
        let mut deltas = std::collections::BTreeMap::<&str, i64>::new();
        for event in events {
            let data = event.data_json().unwrap_or_default();
            let delta = match event.event_type.as_str() {
                "AccountOpened" => data["initialBalance"].as_i64().unwrap_or(0),
                "MoneyWithdrawn" => -data["amount"].as_i64().unwrap_or(0),
                _ => data["amount"].as_i64().unwrap_or(0),
            };
            *deltas.entry(event.stream_id.as_str()).or_default() += delta;
        }
        let (ids, sums): (Vec<String>, Vec<i64>) =
            deltas.into_iter().map(|(k, v)| (k.to_owned(), v)).unzip();
        sqlx::query(
            "INSERT INTO account_balances SELECT * FROM unnest($1::text[], $2::bigint[])
             ON CONFLICT (account_id) DO UPDATE
             SET balance = account_balances.balance + EXCLUDED.balance",
        )
        .bind(ids)
        .bind(sums)
        .execute(conn)
        .await
        .map_err(|e| (0, e.into()))?;
        Ok(())
    }
}

async fn catch_up_postgres() {
    use strata::projection::{PgProjections, PgReadModels};
    use strata_postgres::{PgStoreOptions, PostgresStore};
    let url = std::env::var("STRATA_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let total = env_u64("STRATA_BENCH_PG_EVENTS", 100_000);
    let events_schema = format!("bench_proj_ev_{}", std::process::id());
    let models_schema = format!("bench_proj_rm_{}", std::process::id());
    let store =
        match PostgresStore::connect_with(PgStoreOptions::new(&url).with_schema(&events_schema))
            .await
        {
            Ok(store) => store,
            Err(e) => {
                println!("catch-up into PostgreSQL: skipped, no database at {url}: {e}");
                return;
            }
        };
    let accounts = 100u64;
    let per_account = total / accounts;
    let started = Instant::now();
    let mut offset = 0;
    while offset < per_account {
        let n = 1_000.min(per_account - offset);
        for a in 0..accounts {
            let stream = StreamId::new(format!("account-{a}")).unwrap();
            let events: Vec<EventData> = (offset..offset + n)
                .map(|i| match i {
                    0 => event("AccountOpened", 100),
                    i if i % 3 == 0 => event("MoneyWithdrawn", 1),
                    _ => event("MoneyDeposited", 2),
                })
                .collect();
            store
                .append(&stream, ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
        offset += n;
    }
    let written = per_account * accounts;
    println!(
        "catch-up into PostgreSQL: wrote {written} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let models = PgReadModels::connect(&url, &models_schema).await.unwrap();
    let projections = PgProjections::new(Arc::new(store.clone()), models.clone());
    let started = Instant::now();
    projections.inline(PgBalances).await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "catch-up into PostgreSQL: account_balances over {written} events: {elapsed:.2} s = \
         {:.0} events/s",
        written as f64 / elapsed
    );
    for schema in [&events_schema, &models_schema] {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(store.pool())
            .await
            .unwrap();
    }
}

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent; do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let base = std::env::var("STRATA_BENCH_DIR").map_or_else(
        |_| tempfile::tempdir().unwrap(),
        |d| tempfile::tempdir_in(d).unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        catch_up(base.path()).await;
        lag(base.path()).await;
        catch_up_postgres().await;
    });
}
