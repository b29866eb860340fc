//! Append latency while `$all` reads by category walk index files that are not in memory:
//! `writers` tasks append single events to a store kept between runs while one reader reads
//! pages of 1,000 events of the category `account` from random positions, and the store's
//! segment index files (`segments/*.idx`) are evicted from the page cache every `evict_ms`
//! (GNU `dd iflag=nocache count=0`), so the reader's postings come from the disk. Prints
//! the appends' latency percentiles and the pages read. The store reads its files with
//! `pread` (`map_reads` off): mapped pages would stay in memory.
//!
//! ```text
//! cargo run --release -p strata-bench --example walk_stall -- DIR [secs] [writers] [evict_ms]
//! ```
//!
//! `DIR` is a store that `examples/filtered_reads.rs` filled (10,000,000 events in
//! `account-N` streams); the appends go to streams of their own, `stall-N`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_bench::large::evict;
use strata_core::{EventData, EventStore, ExpectedVersion, Filter, Position, ReadAllOptions};
use strata_log::LogStore;

/// The store's segment index files.
fn index_files(dir: &Path) -> Vec<PathBuf> {
    let listing = std::fs::read_dir(dir.join("segments"))
        .into_iter()
        .flatten();
    listing
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .ok_or("usage: walk_stall DIR [secs] [writers] [evict_ms]")?;
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (secs, writers, evict_ms) = (arg(1, 10), arg(2, 8), arg(3, 50).max(1));
    // Read with `pread`, not through maps: a page a process has mapped stays in memory
    // whatever is asked of the page cache, so only unmapped files can be kept cold.
    let config = strata_log::LogConfig {
        map_reads: false,
        ..strata_log::LogConfig::default()
    };
    let store = LogStore::open_with(dir, config).map_err(|e| e.to_string())?;
    let head = store
        .head()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the store is empty")?
        .get();
    let files = index_files(Path::new(dir));
    evict(&files);
    let stop = Arc::new(AtomicBool::new(false));
    let evictor = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(evict_ms));
                evict(&files);
            }
        })
    };
    let pages = Arc::new(AtomicU64::new(0));
    let reader = {
        let (store, stop, pages) = (store.clone(), stop.clone(), pages.clone());
        tokio::spawn(async move {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let options = ReadAllOptions::forward()
                    .from(Position(x % head))
                    .limit(1000)
                    .filter(Filter::default().categories(["account"]));
                store.read_all(options).await.map_err(|e| e.to_string())?;
                pages.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream =
                strata_core::StreamId::new(format!("stall-{w}")).map_err(|e| e.to_string())?;
            let mut h = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
            while Instant::now() < deadline {
                let e = EventData::json("Stalled", &serde_json::json!({"w": w}))
                    .map_err(|e| e.to_string())?;
                let t = Instant::now();
                store
                    .append(&stream, ExpectedVersion::Any, vec![e])
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = h.record(t.elapsed().as_micros() as u64);
            }
            Ok::<_, String>(h)
        }));
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    for t in tasks {
        let h = t.await.map_err(|e| e.to_string())??;
        all.add(&h).map_err(|e| e.to_string())?;
    }
    stop.store(true, Ordering::Relaxed);
    reader.await.map_err(|e| e.to_string())??;
    let _ = evictor.join();
    println!(
        "{writers} writers, {secs} s: {:.0} appends/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} category pages read",
        all.len() as f64 / secs as f64,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        all.value_at_quantile(0.999) as f64 / 1000.0,
        all.max() as f64 / 1000.0,
        pages.load(Ordering::Relaxed)
    );
    store.close().await.map_err(|e| e.to_string())
}
