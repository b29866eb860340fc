//! Reads of a hot set of streams while a scan of `$all` streams past them, for running under
//! a memory limit smaller than the store (how the page cache keeps the hot pages is what it
//! measures). Opens a store `strata-bench --large` filled, reads its first `hot` streams
//! (`account-0..`) once, then for `secs` seconds reads them at random while one task reads
//! `$all` from position 10,000,000 on (past the hot streams' events), and prints the hot
//! reads per second, their latency percentiles, and the events the scan read.
//!
//! ```text
//! cargo run --release -p strata-bench --example hot_set -- DIR [hot] [secs]
//! ```
//!
//! Under a memory limit, with cgroup v1 (the store's files out of the page cache first, so
//! the pages are charged to the group as they are read):
//!
//! ```text
//! mkdir /sys/fs/cgroup/memory/hot && echo 1610612736 > /sys/fs/cgroup/memory/hot/memory.limit_in_bytes
//! for f in DIR/* DIR/segments/*; do dd if="$f" iflag=nocache count=0; done
//! bash -c 'echo $$ > /sys/fs/cgroup/memory/hot/cgroup.procs; exec target/release/examples/hot_set DIR 20000 60'
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_core::{EventStore, Position, ReadAllOptions, ReadStreamOptions, StreamId};
use strata_log::LogStore;

/// Where the scan starts: past the first streams' events in a store `--large` filled.
const SCAN_FROM: u64 = 10_000_000;

/// Reads stream `account-{s}` whole; how long it took.
async fn read(store: &LogStore, s: u64) -> Result<Duration, String> {
    let id = StreamId::new(format!("account-{s}")).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let events = store
        .read_stream(&id, ReadStreamOptions::forward().limit(1_000))
        .await
        .map_err(|e| e.to_string())?;
    if events.is_empty() {
        return Err(format!(
            "{id} has no events: is this a store --large filled?"
        ));
    }
    Ok(t.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or("usage: hot_set DIR [hot] [secs]")?;
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (hot, secs) = (arg(1, 20_000).max(1), arg(2, 60));
    let store = LogStore::open(dir).map_err(|e| e.to_string())?;
    for s in 0..hot {
        read(&store, s).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let scanned = Arc::new(AtomicU64::new(0));
    let scan = {
        let (store, stop, scanned) = (store.clone(), stop.clone(), scanned.clone());
        tokio::spawn(async move {
            let mut from = Position(SCAN_FROM);
            while !stop.load(Ordering::Relaxed) {
                let page = store
                    .read_all(ReadAllOptions::forward().from(from).limit(10_000))
                    .await
                    .map_err(|e| e.to_string())?;
                scanned.fetch_add(page.events.len() as u64, Ordering::Relaxed);
                match page.next {
                    Some(next) if !page.is_end => from = next,
                    _ => break,
                }
            }
            Ok::<_, String>(())
        })
    };
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        times.push(read(&store, x % hot).await?);
    }
    stop.store(true, Ordering::Relaxed);
    scan.await.map_err(|e| e.to_string())??;
    times.sort();
    let n = times.len().max(1);
    let at = |q: usize| times.get(n * q / 100).copied().unwrap_or_default();
    println!(
        "{hot} hot streams, {secs} s: {} reads ({:.0}/s), p50 {:?}, p99 {:?}, max {:?}; the scan read {} events",
        times.len(),
        times.len() as f64 / secs.max(1) as f64,
        at(50),
        at(99),
        times.last().copied().unwrap_or_default(),
        scanned.load(Ordering::Relaxed)
    );
    store.close().await.map_err(|e| e.to_string())?;
    Ok(())
}
