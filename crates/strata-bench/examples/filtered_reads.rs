//! Times `$all` reads with filters on a store kept between runs: unfiltered, by category, by
//! event type, by both, and by a stream prefix that 11 streams start with, each read to its
//! end or to `max` events (2,000,000 unless given), in pages of 1,000; the second of two
//! rounds is printed.
//!
//! ```text
//! cargo run --release -p strata-bench --example filtered_reads -- [dir] [events] [max]
//! ```
//!
//! A missing store is filled first as `strata-bench --large` fills its own (`events`,
//! 10,000,000 unless given, in 100-event appends to `account-N` streams, all of type
//! `MoneyDeposited`): every event matches the category and type filters, so those reads walk
//! the category's and type's positions (read from the index files' postings for sealed
//! segments) against the unfiltered read of the same events.

use std::path::Path;
use std::time::Instant;

use strata_core::{EventStore, Filter, Position, ReadAllOptions};
use strata_log::LogStore;

async fn read(store: &LogStore, filter: &Filter, max: u64) -> Result<(u64, f64), String> {
    let start = Instant::now();
    let (mut n, mut from) = (0u64, Position(0));
    loop {
        let options = ReadAllOptions::forward()
            .from(from)
            .limit(1000)
            .filter(filter.clone());
        let page = store.read_all(options).await.map_err(|e| e.to_string())?;
        n += page.events.len() as u64;
        match page.next {
            Some(next) if !page.is_end && n < max => from = next,
            _ => return Ok((n, start.elapsed().as_secs_f64())),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .map_or("/tmp/strata-filtered-reads", String::as_str);
    let events: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let max: u64 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    if !Path::new(dir).join("segments").exists() {
        eprintln!("filling {dir} with {events} events...");
        strata_bench::large::populate(Path::new(dir), events, (events / 100).max(1)).await?;
    }
    let store = LogStore::open(dir).map_err(|e| e.to_string())?;
    let filters = [
        ("unfiltered", Filter::default()),
        ("category", Filter::default().categories(["account"])),
        (
            "event type",
            Filter::default().event_types(["MoneyDeposited"]),
        ),
        (
            "category and type",
            Filter::default()
                .categories(["account"])
                .event_types(["MoneyDeposited"]),
        ),
        (
            "prefix of 11 streams",
            Filter::default().stream_prefix("account-4242"),
        ),
    ];
    for round in 0..2 {
        for (name, filter) in &filters {
            let (n, secs) = read(&store, filter, max).await?;
            if round == 1 {
                println!(
                    "{name}: {n} events in {:.1} ms, {:.2} M events/s",
                    secs * 1000.0,
                    n as f64 / secs / 1e6
                );
            }
        }
    }
    store.close().await.map_err(|e| e.to_string())
}
