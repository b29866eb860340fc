//! What a transaction left open elsewhere in the cluster costs: a session in database `postgres`
//! runs `BEGIN; SELECT txid_current();` and holds it while writers append in the store's
//! database. Prints, every couple of seconds, how long `head()`, a read at the head and a read far
//! from the head take, on the appending store (which waits for its own writes) and on a second
//! store (which does not), and how many committed events `$all` readers cannot see yet.
//!
//! ```text
//! cargo run --release -p strata-postgres --example pg_watermark -- [hold_secs] [writers]
//! ```
//!
//! `STRATA_BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`); the holder
//! connects to the same server's database `postgres`.

use std::time::{Duration, Instant};

use sqlx::Connection;
use strata_core::{EventData, EventStore, ExpectedVersion, Position, ReadAllOptions, StreamId};
use strata_postgres::{PgStoreOptions, PostgresStore};

const SCHEMA: &str = "bench_pg_watermark";

/// The median and the largest of `n` runs of `f`, in milliseconds.
async fn time<F, Fut, T>(n: usize, mut f: F) -> Result<(f64, f64), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, strata_core::ReadError>>,
{
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await.map_err(|e| e.to_string())?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[n / 2], ms[n - 1]))
}

/// One line of measurements.
async fn sample(
    label: &str,
    writer: &PostgresStore,
    reader: &PostgresStore,
    admin: &sqlx::PgPool,
) -> Result<(), String> {
    let newest: Option<i64> =
        sqlx::query_scalar(&format!("SELECT max(position) FROM {SCHEMA}.events"))
            .fetch_one(admin)
            .await
            .map_err(|e| e.to_string())?;
    let head = reader.head().await.map_err(|e| e.to_string())?;
    let near = |h: Option<Position>| Position(h.map_or(0, |p| p.0.saturating_sub(10)));
    let n = 5;
    let (wh, wh_max) = time(n, || writer.head()).await?;
    let (rh, rh_max) = time(n, || reader.head()).await?;
    let (wr, _) = time(n, || {
        writer.read_all(ReadAllOptions::forward().from(near(head)).limit(100))
    })
    .await?;
    let (rr, _) = time(n, || {
        reader.read_all(ReadAllOptions::forward().from(near(head)).limit(100))
    })
    .await?;
    let (far, far_max) = time(n, || {
        reader.read_all(ReadAllOptions::forward().from(Position(100)).limit(100))
    })
    .await?;
    let held = newest.unwrap_or(-1) - head.map_or(-1, |p| p.0 as i64);
    println!(
        "{label:>12}: held back {held:>6}; head() own-writes store {wh:7.2} ms (max {wh_max:7.2}), \
         other store {rh:6.2} ms (max {rh_max:6.2}); read at head own {wr:7.2} ms, other {rr:6.2} ms; \
         read far from head {far:6.2} ms (max {far_max:6.2})"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hold_secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(40);
    let writers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let url = std::env::var("STRATA_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let holder_url = match url.rfind('/') {
        Some(i) => format!("{}/postgres", &url[..i]),
        None => return Err(format!("cannot find the database in {url}")),
    };
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .execute(&admin)
        .await
        .map_err(|e| e.to_string())?;
    let options = PgStoreOptions::new(url.clone()).with_schema(SCHEMA);
    let writer = PostgresStore::connect_with(options.clone())
        .await
        .map_err(|e| e.to_string())?;
    let reader = PostgresStore::connect_with(options)
        .await
        .map_err(|e| e.to_string())?;
    for n in 0..20 {
        let events = (0..100)
            .map(|i| EventData::json("Loaded", &serde_json::json!({ "i": i })))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let s = StreamId::new(format!("load-{n}")).map_err(|e| e.to_string())?;
        writer
            .append(&s, ExpectedVersion::NoStream, events)
            .await
            .map_err(|e| e.to_string())?;
    }
    sample("before", &writer, &reader, &admin).await?;

    let mut holder = sqlx::PgConnection::connect(&holder_url)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .map_err(|e| e.to_string())?;
    let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(&mut holder)
        .await
        .map_err(|e| e.to_string())?;
    println!("holding transaction {xid} open in database postgres for {hold_secs} s");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, stop) = (writer.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let s = StreamId::new(format!("account-{w}")).map_err(|e| e.to_string())?;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let e = EventData::json("Deposited", &serde_json::json!({ "n": n }))
                    .map_err(|e| e.to_string())?;
                store
                    .append(&s, ExpectedVersion::Any, vec![e])
                    .await
                    .map_err(|e| e.to_string())?;
                n += 1;
            }
            Ok::<u64, String>(n)
        }));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(hold_secs) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let label = format!("held {:.0} s", started.elapsed().as_secs_f64());
        sample(&label, &writer, &reader, &admin).await?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut appended = 0;
    for t in tasks {
        appended += t.await.map_err(|e| e.to_string())??;
    }
    println!("{appended} events appended while the transaction was open");
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .map_err(|e| e.to_string())?;
    sample("after", &writer, &reader, &admin).await?;
    drop((writer, reader));
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .execute(&admin)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
