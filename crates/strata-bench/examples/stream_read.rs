//! Times reading one stream of 10,000 events among 1,000,000 on the embedded store, many
//! times, on a store kept between runs (for working on the read path):
//!
//! ```text
//! cargo run --release -p strata-bench --example stream_read -- [dir] [reads] [pread]
//! ```
//!
//! `pread` reads with `pread` instead of through maps of the segment files
//! (`LogConfig::map_reads`), for comparing the two on the same store.
//!
//! The store is filled once, as the benchmark fills its own (every 100th event is the target
//! stream's).

use std::time::Instant;

use strata_core::{EventStore, ReadStreamOptions, StreamId};
use strata_log::{LogConfig, LogStore};

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .map_or("/tmp/strata-stream-read", String::as_str);
    let reads: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(60);
    let pread = args.get(2).map(String::as_str) == Some("pread");
    let config = LogConfig {
        map_reads: !pread,
        ..LogConfig::default()
    };
    let store = LogStore::open_with(dir, config).map_err(|e| e.to_string())?;
    let target = StreamId::new("target-1").map_err(|e| e.to_string())?;
    if store.head().await.map_err(|e| e.to_string())?.is_none() {
        strata_bench::log::populate(&store, 1_000_000, &target).await?;
    }
    let mut times = Vec::new();
    for _ in 0..reads {
        let t = Instant::now();
        let events = store
            .read_stream(&target, ReadStreamOptions::forward().limit(10_000))
            .await
            .map_err(|e| e.to_string())?;
        times.push(t.elapsed());
        assert_eq!(events.len(), 10_000);
    }
    times.sort();
    println!(
        "read one stream of 10,000 events, {reads} reads{}: min {:?} median {:?} p90 {:?}",
        if pread { " with pread" } else { "" },
        times[0],
        times[times.len() / 2],
        times[times.len() * 9 / 10]
    );
    Ok(())
}
