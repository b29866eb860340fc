//! Benchmarks of the embedded store (`strata-log`), with the disk's fdatasync rate measured
//! in the same run as the baseline.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use strata_core::{
    EventData, EventStore, ExpectedVersion, Position, ReadAllOptions, ReadStreamOptions, StreamId,
};
use strata_log::LogStore;

use crate::measure::{histogram, Latency, Throughput};
use crate::{disk, fresh, Scale};

/// One append benchmark row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AppendRow {
    /// Concurrent writers.
    pub writers: usize,
    /// Events per append call.
    pub events_per_append: usize,
    /// What was done.
    pub throughput: Throughput,
    /// Acknowledgement latency of one append.
    pub latency: Latency,
    /// The disk's 4 KiB write + fdatasync rate measured right before this row, per second.
    pub disk_fsyncs_per_sec: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogBenchReport {
    /// The disk's 4 KiB write + fdatasync rate, per second, measured in this run.
    pub disk_fsyncs_per_sec: f64,
    /// Append rows.
    pub appends: Vec<AppendRow>,
    /// Events in the store used for reads and opens.
    pub store_events: u64,
    /// Reading one stream of `stream_events` events, median of several reads, in µs.
    pub stream_read_us: u64,
    /// Events in that stream.
    pub stream_events: u64,
    /// Reading all of `$all` forward, in the process that wrote the store.
    pub all_read: Throughput,
    /// The same read in a fresh process that has just opened the store (page cache warm).
    pub fresh_all_read: Throughput,
    /// How long that process took to open the store before reading, in ms.
    pub fresh_open_ms: u64,
    /// Opening the store with its index file, in µs.
    pub open_with_index_us: u64,
    /// Opening the store without its index file (full rebuild), in µs.
    pub open_without_index_us: u64,
}

pub(crate) fn event(i: u64, pad: usize) -> EventData {
    EventData::json(
        "MoneyDeposited",
        &serde_json::json!({ "amount": i % 1000, "currency": "EUR", "note": "x".repeat(pad) }),
    )
    .unwrap_or_else(|_| unreachable!("a JSON literal serializes"))
}

fn sid(s: String) -> StreamId {
    StreamId::new(s).unwrap_or_else(|_| unreachable!("bench stream names are valid"))
}

/// What `strata-bench scan-measure` prints: opening a store and reading all of `$all` in a
/// fresh process.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScanMeasure {
    /// Time to open, in ms.
    pub open_ms: u64,
    /// Reading all of `$all` forward, right after opening.
    pub all_read: Throughput,
}

/// Opens the store in `dir` and reads all of `$all`: what `scan-measure` runs.
pub async fn open_and_scan(dir: &Path) -> Result<ScanMeasure, String> {
    let t = Instant::now();
    let store = LogStore::open(dir).map_err(|e| e.to_string())?;
    let open_ms = t.elapsed().as_millis() as u64;
    let all_read = scan_all(&store).await?;
    store.close().await.map_err(|e| e.to_string())?;
    if all_read.events == 0 {
        return Err(format!("{} holds no events: is it a store?", dir.display()));
    }
    Ok(ScanMeasure { open_ms, all_read })
}

/// Reads all of `$all` forward in pages of 10,000 events.
pub async fn scan_all(store: &LogStore) -> Result<Throughput, String> {
    let t = Instant::now();
    let mut from = Position(0);
    let mut n = 0u64;
    loop {
        let page = store
            .read_all(ReadAllOptions::forward().from(from).limit(10_000))
            .await
            .map_err(|e| e.to_string())?;
        n += page.events.len() as u64;
        from = page.next.unwrap_or(from);
        if page.is_end {
            break;
        }
    }
    Ok(Throughput::new(1, n, t.elapsed()))
}

/// Runs `writers` concurrent writers of `per_append` events each for `secs` seconds.
pub async fn append_bench(
    store: &LogStore,
    writers: usize,
    per_append: usize,
    secs: f64,
) -> Result<AppendRow, String> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = sid(format!("bench{w}-{}", per_append));
            let mut h = histogram();
            let mut ops = 0u64;
            // Encode the payloads once: the benchmark measures the store, not serde.
            let template: Vec<EventData> = (0..per_append as u64).map(|i| event(i, 40)).collect();
            while Instant::now() < deadline {
                let events = template.clone();
                let t = Instant::now();
                store
                    .append(&stream, ExpectedVersion::Any, events)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = h.record(t.elapsed().as_micros() as u64);
                ops += 1;
            }
            Ok::<_, String>((ops, h))
        }));
    }
    let mut total = histogram();
    let mut ops = 0;
    for t in tasks {
        let (n, h) = t.await.map_err(|e| e.to_string())??;
        ops += n;
        total.add(&h).map_err(|e| e.to_string())?;
    }
    let elapsed = start.elapsed();
    Ok(AppendRow {
        writers,
        events_per_append: per_append,
        throughput: Throughput::new(ops, ops * per_append as u64, elapsed),
        latency: Latency::from_histogram(&total),
        disk_fsyncs_per_sec: 0.0,
    })
}

/// Fills `store` with `total` events, of which every 100th belongs to `target`: the store of
/// the read benchmarks.
pub async fn populate(store: &LogStore, total: u64, target: &StreamId) -> Result<(), String> {
    let rounds = total / 100;
    let tasks = 16u64;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let target = target.clone();
        handles.push(tokio::spawn(async move {
            let mut r = t;
            while r < rounds {
                let other = sid(format!("account-{}", r % 10_000));
                let batch = (0..99).map(|i| event(r * 100 + i, 40)).collect();
                store
                    .append(&other, ExpectedVersion::Any, batch)
                    .await
                    .map_err(|e| e.to_string())?;
                store
                    .append(&target, ExpectedVersion::Any, vec![event(r, 40)])
                    .await
                    .map_err(|e| e.to_string())?;
                r += tasks;
            }
            Ok::<_, String>(())
        }));
    }
    for h in handles {
        h.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Runs every embedded-store benchmark in fresh directories under `dir`. `program` is the
/// `strata-bench` executable, run again for the fresh-process read (`scan-measure`).
pub async fn run(dir: &Path, scale: Scale, program: &Path) -> Result<LogBenchReport, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let disk_fsyncs_per_sec = disk::fdatasync_rate(dir, 2.0).map_err(|e| e.to_string())?;
    let mut appends = Vec::new();
    for (writers, per_append) in [(1, 1), (8, 1), (64, 1), (8, 100)] {
        let d = dir.join(format!("append-{writers}x{per_append}"));
        let _ = std::fs::remove_dir_all(&d);
        let store = LogStore::open(&d).map_err(|e| e.to_string())?;
        // The disk's rate drifts on a shared machine: measure it again beside each row.
        let disk_now = disk::fdatasync_rate(dir, 1.0).map_err(|e| e.to_string())?;
        let mut row = append_bench(&store, writers, per_append, scale.append_secs()).await?;
        row.disk_fsyncs_per_sec = disk_now;
        appends.push(row);
        store.close().await.map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&d);
    }

    let d = dir.join("reads");
    let _ = std::fs::remove_dir_all(&d);
    let store_events = scale.store_events();
    let target = sid("target-1".to_owned());
    let store = LogStore::open(&d).map_err(|e| e.to_string())?;
    populate(&store, store_events, &target).await?;
    let mut reads = Vec::new();
    let mut stream_events = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let evs = store
            .read_stream(&target, ReadStreamOptions::forward().limit(10_000))
            .await
            .map_err(|e| e.to_string())?;
        reads.push(t.elapsed().as_micros() as u64);
        stream_events = evs.len() as u64;
    }
    reads.sort_unstable();
    let stream_read_us = reads[reads.len() / 2];

    let all_read = scan_all(&store).await?;
    store.close().await.map_err(|e| e.to_string())?;
    let fresh: ScanMeasure = fresh::measure(
        program,
        &["scan-measure".as_ref(), "--data".as_ref(), d.as_os_str()],
    )
    .map_err(|e| e.to_string())?;
    if fresh.all_read.events != all_read.events {
        return Err(format!(
            "the fresh process read {} events of $all, the writing process {}",
            fresh.all_read.events, all_read.events
        ));
    }

    let t = Instant::now();
    let store = LogStore::open(&d).map_err(|e| e.to_string())?;
    let open_with_index_us = t.elapsed().as_micros() as u64;
    if !store.open_report().index_loaded {
        return Err("the index file was not used on open".to_owned());
    }
    store.close().await.map_err(|e| e.to_string())?;
    // A rebuild: neither the index file nor the segments' own index files.
    let t = Instant::now();
    let rebuild = strata_log::LogConfig {
        use_index_file: false,
        ..strata_log::LogConfig::default()
    };
    let store = LogStore::open_with(&d, rebuild).map_err(|e| e.to_string())?;
    let open_without_index_us = t.elapsed().as_micros() as u64;
    store.close().await.map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&d);

    Ok(LogBenchReport {
        disk_fsyncs_per_sec,
        appends,
        store_events,
        stream_read_us,
        stream_events,
        all_read,
        fresh_all_read: fresh.all_read,
        fresh_open_ms: fresh.open_ms,
        open_with_index_us,
        open_without_index_us,
    })
}

impl fmt::Display for LogBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Embedded store (strata-log)")?;
        writeln!(
            f,
            "  baseline: disk 4 KiB write+fdatasync {:.0}/s at the start, and again beside each append row",
            self.disk_fsyncs_per_sec
        )?;
        writeln!(
            f,
            "  {:<34} {:>12} {:>12} {:>11} {:>9}  latency",
            "append", "appends/s", "events/s", "disk now/s", "x disk"
        )?;
        for r in &self.appends {
            writeln!(
                f,
                "  {:<34} {:>12.0} {:>12.0} {:>11.0} {:>8.1}x  {}",
                format!(
                    "{} writer(s), {} event(s)/append",
                    r.writers, r.events_per_append
                ),
                r.throughput.ops_per_sec(),
                r.throughput.events_per_sec(),
                r.disk_fsyncs_per_sec,
                r.throughput.ops_per_sec() / r.disk_fsyncs_per_sec.max(1.0),
                r.latency
            )?;
        }
        writeln!(
            f,
            "  read one stream of {} events among {}: {:.2} ms",
            self.stream_events,
            self.store_events,
            self.stream_read_us as f64 / 1000.0
        )?;
        writeln!(
            f,
            "  read $all ({} events): {:.0} events/s",
            self.all_read.events,
            self.all_read.events_per_sec()
        )?;
        writeln!(
            f,
            "  read $all from a fresh process: {:.0} events/s, {:.2}x the writing process (opened in {} ms before)",
            self.fresh_all_read.events_per_sec(),
            self.fresh_all_read.events_per_sec() / self.all_read.events_per_sec().max(1e-9),
            self.fresh_open_ms
        )?;
        writeln!(
            f,
            "  open {} events: {:.0} ms with index file, {:.0} ms rebuilding it",
            self.store_events,
            self.open_with_index_us as f64 / 1000.0,
            self.open_without_index_us as f64 / 1000.0
        )
    }
}
