//! Append latency while segments rotate (`strata-bench --rotation`): 64 writers of single
//! events on a store of millions of events kept in small segments, first with those small
//! segments so that several are sealed every second, then reopened with segments too large to
//! fill (the baseline, in the same run, on the same store). Each seal writes the segment's
//! index file on a helper thread; what this measures is whether appends wait for that. (The
//! store is filled with the small segments, so that no seal in the run indexes a segment
//! larger than the others.)

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use strata_core::{EventStore, ExpectedVersion, StreamId};
use strata_log::{LogConfig, LogStore};

use crate::measure::{histogram, Throughput};
use crate::Scale;

/// One run of the 64 writers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RotationRow {
    /// The store's `segment_max_bytes` during the run.
    pub segment_max_bytes: u64,
    /// Segments sealed during the run.
    pub rotations: u64,
    /// Appends (one event each).
    pub throughput: Throughput,
    /// Acknowledgement latency percentiles, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// The slowest append.
    pub max_us: u64,
}

/// Both runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RotationReport {
    /// Events in the store before the runs.
    pub store_events: u64,
    /// Concurrent writers.
    pub writers: usize,
    /// Large segments: no rotation (the baseline).
    pub without: RotationRow,
    /// Small segments: rotations all through the run.
    pub with: RotationRow,
}

/// The writers of the benchmark.
const WRITERS: usize = 64;
/// Segments of the baseline: larger than the run writes.
const LARGE_SEGMENT_BYTES: u64 = 1 << 30;
/// Segments of the rotating run: several sealed per second at the rates seen here.
const SMALL_SEGMENT_BYTES: u64 = 4 << 20;

/// The segment files in `dir` (not their index files).
fn segments(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("segments")).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .count() as u64
    })
}

async fn writers(
    dir: &Path,
    segment_max_bytes: u64,
    secs: f64,
) -> Result<(RotationRow, LogStore), String> {
    let config = LogConfig {
        segment_max_bytes,
        ..LogConfig::default()
    };
    let store = LogStore::open_with(dir, config).map_err(|e| e.to_string())?;
    let before = segments(dir);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("rotation-{w}")).map_err(|e| e.to_string())?;
            let event = crate::log::event(w as u64, 40);
            let mut h = histogram();
            while Instant::now() < deadline {
                let t = Instant::now();
                store
                    .append(&stream, ExpectedVersion::Any, vec![event.clone()])
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
            }
            Ok::<_, String>(h)
        }));
    }
    let mut all = histogram();
    for t in tasks {
        let h = t.await.map_err(|e| e.to_string())??;
        all.add(&h).map_err(|e| e.to_string())?;
    }
    let elapsed = start.elapsed();
    let ops = all.len();
    Ok((
        RotationRow {
            segment_max_bytes,
            rotations: segments(dir).saturating_sub(before),
            throughput: Throughput::new(ops, ops, elapsed),
            p50_us: all.value_at_quantile(0.5),
            p99_us: all.value_at_quantile(0.99),
            p999_us: all.value_at_quantile(0.999),
            max_us: all.max(),
        },
        store,
    ))
}

/// Fills a store in `dir` and runs the writers without, then with, rotations.
pub async fn run(dir: &Path, scale: Scale) -> Result<RotationReport, String> {
    let (events, secs) = match scale {
        Scale::Full => (2_000_000, 10.0),
        Scale::Quick => (100_000, 1.0),
    };
    let dir = dir.join("rotation");
    {
        let config = LogConfig {
            segment_max_bytes: SMALL_SEGMENT_BYTES,
            ..LogConfig::default()
        };
        let store = LogStore::open_with(&dir, config).map_err(|e| e.to_string())?;
        let target = StreamId::new("rotation-target").map_err(|e| e.to_string())?;
        crate::log::populate(&store, events, &target).await?;
        store.close().await.map_err(|e| e.to_string())?;
    }
    let (with, store) = writers(&dir, SMALL_SEGMENT_BYTES, secs).await?;
    store.close().await.map_err(|e| e.to_string())?;
    let (without, store) = writers(&dir, LARGE_SEGMENT_BYTES, secs).await?;
    store.close().await.map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RotationReport {
        store_events: events,
        writers: WRITERS,
        without,
        with,
    })
}

impl fmt::Display for RotationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Appends while segments rotate: {} writers, single events, on a store of {} events",
            self.writers, self.store_events
        )?;
        writeln!(
            f,
            "  {:<32} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "segments", "appends/s", "sealed", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
        )?;
        for (label, r) in [
            ("large (no rotation, baseline)", &self.without),
            ("small (rotating)", &self.with),
        ] {
            let ms = |us: u64| us as f64 / 1000.0;
            writeln!(
                f,
                "  {:<32} {:>10.0} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                format!("{label}, {} MiB", r.segment_max_bytes >> 20),
                r.throughput.ops_per_sec(),
                r.rotations,
                ms(r.p50_us),
                ms(r.p99_us),
                ms(r.p999_us),
                ms(r.max_us),
            )?;
        }
        let base = self.without.throughput.ops_per_sec().max(1e-9);
        writeln!(
            f,
            "  rotating ÷ baseline: {:.2}× the appends/s; p99.9 {:.2}×, max {:.2}×",
            self.with.throughput.ops_per_sec() / base,
            self.with.p999_us as f64 / self.without.p999_us.max(1) as f64,
            self.with.max_us as f64 / self.without.max_us.max(1) as f64,
        )
    }
}
