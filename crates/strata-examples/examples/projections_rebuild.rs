//! A blue/green rebuild with a progress bar, as `strata projections rebuild` would show it.
//!
//! `cargo run --release -p strata-examples --example projections_rebuild [events]` (default 200,000)
//! writes bank events to a temporary embedded store, projects balances into SQLite, then
//! rebuilds the projection from event 0 while a writer keeps appending and a reader keeps
//! querying the serving copy (which never shows a half-built model), and prints the status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "bank/domain.rs"]
#[allow(unused)]
mod domain;
#[path = "bank/read_models.rs"]
#[allow(unused)]
mod read_models;
#[path = "bank/sealed.rs"]
#[allow(unused)]
mod sealed;

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata::projection::{Projections, SqliteReadModels, Typed};
use strata::{EventData, EventStore, ExpectedVersion, StreamId};
use strata_log::LogStore;

fn event(kind: &str, amount: u64) -> EventData {
    let data = match kind {
        "AccountOpened" => {
            serde_json::json!({"customerId": "demo", "owner": "demo", "initialBalance": amount})
        }
        _ => serde_json::json!({ "amount": amount }),
    };
    EventData::json(kind, &data).unwrap()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let dir = strata_examples::ScratchDir::new("projections_rebuild")?;
    let data = dir.path().join("data");
    let store = LogStore::open(&data)?;
    let accounts = 100u64;
    println!("Writing {events} events over {accounts} accounts...");
    let per_account = events / accounts;
    for a in 0..accounts {
        let stream = StreamId::new(format!("account-{a}"))?;
        let mut written = 0;
        while written < per_account {
            let n = 1_000.min(per_account - written);
            let batch = (written..written + n)
                .map(|i| match i {
                    0 => event("AccountOpened", 1_000),
                    _ => event("MoneyDeposited", 1),
                })
                .collect();
            store.append(&stream, ExpectedVersion::Any, batch).await?;
            written += n;
        }
    }
    let models = SqliteReadModels::next_to(&data)?;
    let projections = Projections::new(Arc::new(store.clone()), models.clone());
    projections
        .spawn(Typed::new(read_models::AccountBalances))
        .await?;
    let head = store.head().await?.unwrap_or_default();
    projections
        .wait_for("account_balances", head, Duration::from_secs(120))
        .await?;
    println!("account_balances is caught up at position {}.", head.0);

    // While the rebuild runs: a writer appends, a reader checks every account is always there.
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, stop, appended) = (store.clone(), stop.clone(), appended.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let stream = StreamId::new("account-0").unwrap();
                store
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        vec![event("MoneyDeposited", 1)],
                    )
                    .await
                    .unwrap();
                appended.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let reader = {
        let (models, stop) = (models.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let conn = models.connect().unwrap();
            let mut queries = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n: i64 = conn
                    .query_row("SELECT count(*) FROM account_balances", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(n as u64, accounts, "a query saw a half-built model");
                queries += 1;
            }
            queries
        })
    };

    let bar = indicatif::ProgressBar::new(head.0 + 1);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "rebuild {bar:40} {pos}/{len} [{elapsed_precise}] {msg}",
    )?);
    let checkpoint = projections
        .rebuild("account_balances", |p| {
            bar.set_length(p.head.map_or(0, |h| h.0 + 1));
            bar.set_position(p.position.map_or(0, |c| c.0 + 1));
            bar.set_message(format!(
                "{:.0} events/s, {} left, ETA {:.1} s",
                p.events_per_second,
                p.remaining_events,
                p.eta.unwrap_or_default().as_secs_f64()
            ));
        })
        .await?;
    bar.finish();
    stop.store(true, Ordering::Relaxed);
    writer.await?;
    let queries = reader.await?;
    println!(
        "Swapped in at checkpoint {}; {} events appended and {queries} queries answered \
         during the rebuild, none saw a partial model.",
        checkpoint.map_or_else(|| "none".to_owned(), |p| p.to_string()),
        appended.load(Ordering::Relaxed)
    );
    for info in projections.list().await? {
        println!(
            "{}: {}, checkpoint {}, lag {} events / {:.3} s",
            info.name,
            info.status,
            info.checkpoint
                .map_or_else(|| "none".to_owned(), |p| p.to_string()),
            info.lag_events,
            info.lag_seconds
        );
    }
    projections.shutdown().await;
    Ok(())
}
