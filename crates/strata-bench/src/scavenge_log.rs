//! The embedded scavenge benchmark (`cargo bench -p strata-bench --bench scavenge_log`): a
//! store of 1,000,000 events in 10,000 streams of 100 (segments of 64 MiB), 90% of the
//! streams soft-deleted, then scavenged. Measured in the same run:
//!
//! - the scavenge's rate in bytes of segment data rewritten per second, beside the disk's
//!   own rate for the same bytes: reading the same segment files and writing them to new
//!   files with one fsync each (what any rewrite must do at least);
//! - the data directory's bytes (segments and index files) before and after;
//! - on a second identical store, 16 writers' append p99 while a scavenge runs, beside the
//!   same writers just before without it.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use strata_core::scavenge::ScavengeProgress;
use strata_core::EventStore;
use strata_log::{LogConfig, LogStore};

use crate::postgres::PgAppendRow;
use crate::scavenge::{ScavengeScale, STREAM_EVENTS, WRITERS};

/// Segments of this size: a 1,000,000-event store has a few.
pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LogScavengeReport {
    /// Events loaded.
    pub events: u64,
    /// Events the scavenge removed.
    pub removed: u64,
    /// How long the scavenge took.
    pub scavenge: Duration,
    /// The segment bytes it read (the store's, before).
    pub segment_bytes: u64,
    /// How long reading and writing the same segment bytes to new files took (fsync each).
    pub copy: Duration,
    /// The data directory's bytes (segments and index files) before.
    pub bytes_before: u64,
    /// ... and after.
    pub bytes_after: u64,
    /// The writers alone.
    pub writers_alone: PgAppendRow,
    /// The writers while a scavenge ran.
    pub writers_during: PgAppendRow,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl LogScavengeReport {
    /// MiB of segment data rewritten per second.
    pub fn mib_per_sec(&self) -> f64 {
        mib(self.segment_bytes) / self.scavenge.as_secs_f64()
    }
    /// The same for the plain copy.
    pub fn copy_mib_per_sec(&self) -> f64 {
        mib(self.segment_bytes) / self.copy.as_secs_f64()
    }
}

impl fmt::Display for LogScavengeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Embedded scavenge: {} events in {} streams of {STREAM_EVENTS}, 90% of the streams soft-deleted",
            self.events,
            self.events / STREAM_EVENTS
        )?;
        writeln!(
            f,
            "  scavenge     {:>9} events removed, {:.1} MiB of segments rewritten in {:.2} s = {:.0} MiB/s",
            self.removed,
            mib(self.segment_bytes),
            self.scavenge.as_secs_f64(),
            self.mib_per_sec()
        )?;
        writeln!(
            f,
            "  plain copy   the same segment files read and written, fsync each: {:.2} s = {:.0} MiB/s  (scavenge / copy = {:.2}x)",
            self.copy.as_secs_f64(),
            self.copy_mib_per_sec(),
            self.mib_per_sec() / self.copy_mib_per_sec()
        )?;
        writeln!(
            f,
            "  data directory: {:.1} MiB before, {:.1} MiB after = {:.1}% of before",
            mib(self.bytes_before),
            mib(self.bytes_after),
            100.0 * self.bytes_after as f64 / self.bytes_before as f64
        )?;
        writeln!(
            f,
            "  {WRITERS} writers' append p99: {} µs alone, {} µs during the scavenge = {:.2}x ({:.0} and {:.0} appends/s)",
            self.writers_alone.latency_us_p99,
            self.writers_during.latency_us_p99,
            self.writers_during.latency_us_p99 as f64 / self.writers_alone.latency_us_p99.max(1) as f64,
            self.writers_alone.events_per_sec(),
            self.writers_during.events_per_sec()
        )
    }
}

/// Bytes of the files under `dir/segments` whose name ends in one of `exts`.
fn dir_bytes(dir: &Path, exts: &[&str]) -> Result<u64, String> {
    let rd = std::fs::read_dir(dir.join("segments")).map_err(|e| e.to_string())?;
    let mut total = 0;
    for e in rd {
        let e = e.map_err(|e| e.to_string())?;
        if e.path()
            .extension()
            .is_some_and(|x| exts.iter().any(|w| x == *w))
        {
            total += e.metadata().map_err(|e| e.to_string())?.len();
        }
    }
    Ok(total)
}

/// Loads the store in `dir` as the PostgreSQL benchmark loads its schemas, then closes it
/// (its index files written).
async fn load_and_delete(dir: &Path, streams: u64) -> Result<(), String> {
    let store = open(dir)?;
    crate::scavenge::load_and_delete(&store, streams).await?;
    store.close().await.map_err(|e| e.to_string())
}

/// Opens the store in `dir` with the benchmarks' segment size.
pub(crate) fn open(dir: &Path) -> Result<LogStore, String> {
    LogStore::open_with(
        dir,
        LogConfig {
            segment_max_bytes: SEGMENT_BYTES,
            scavenge_bytes_per_sec: scavenge_pace()?,
            ..LogConfig::default()
        },
    )
    .map_err(|e| e.to_string())
}

/// The scavenge's pace: `STRATA_BENCH_SCAVENGE_MIB_PER_SEC` (0: unpaced), else the default.
pub(crate) fn scavenge_pace() -> Result<u64, String> {
    match std::env::var("STRATA_BENCH_SCAVENGE_MIB_PER_SEC") {
        Ok(v) => v
            .parse::<u64>()
            .map(|mib| mib << 20)
            .map_err(|_| format!("STRATA_BENCH_SCAVENGE_MIB_PER_SEC={v:?} is not a number")),
        Err(_) => Ok(LogConfig::default().scavenge_bytes_per_sec),
    }
}

/// Reads every segment file of `dir` and writes it to a new file in `to`, fsyncing each:
/// the least a rewrite of them does. Returns the time taken.
fn copy_segments(dir: &Path, to: &Path) -> Result<Duration, String> {
    use std::io::Write;
    let t = Instant::now();
    let rd = std::fs::read_dir(dir.join("segments")).map_err(|e| e.to_string())?;
    for e in rd {
        let e = e.map_err(|e| e.to_string())?;
        if e.path().extension().is_some_and(|x| x == "seg") {
            let bytes = std::fs::read(e.path()).map_err(|e| e.to_string())?;
            let mut out =
                std::fs::File::create(to.join(e.file_name())).map_err(|e| e.to_string())?;
            out.write_all(&bytes).map_err(|e| e.to_string())?;
            out.sync_all().map_err(|e| e.to_string())?;
        }
    }
    Ok(t.elapsed())
}

/// A directory removed when dropped: the benchmarks' work directories.
pub(crate) struct Scratch(pub(crate) std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the benchmark in temporary directories under `base`.
pub async fn run(base: &Path, scale: ScavengeScale) -> Result<LogScavengeReport, String> {
    let streams = scale.streams();
    let work = Scratch(base.join(format!("strata-bench-scavenge-{}", std::process::id())));
    let (one, two, copy_to) = (work.0.join("one"), work.0.join("two"), work.0.join("copy"));
    std::fs::create_dir_all(&copy_to).map_err(|e| e.to_string())?;
    for dir in [&one, &two] {
        load_and_delete(dir, streams).await?;
    }
    let bytes_before = dir_bytes(&one, &["seg", "idx"])?;
    // The baseline: the disk's rate for the same segment bytes (they are in the page cache
    // for both: the load just wrote them).
    let segment_bytes = dir_bytes(&one, &["seg"])?;
    let copy = tokio::task::spawn_blocking({
        let (one, copy_to) = (one.clone(), copy_to.clone());
        move || copy_segments(&one, &copy_to)
    })
    .await
    .map_err(|e| e.to_string())??;

    let store = open(&one)?;
    let t = Instant::now();
    let report = store
        .scavenge(&|_: ScavengeProgress| {})
        .await
        .map_err(|e| format!("scavenge: {e}"))?;
    let scavenge = t.elapsed();
    let removed = report.progress.events_removed;
    let expected = streams / 10 * 9 * (STREAM_EVENTS - 2);
    if removed != expected {
        return Err(format!(
            "the scavenge removed {removed} events, not {expected}"
        ));
    }
    store.close().await.map_err(|e| e.to_string())?;
    let bytes_after = dir_bytes(&one, &["seg", "idx"])?;

    let busy = open(&two)?;
    let (writers_alone, writers_during) =
        crate::scavenge::writers_beside_a_scavenge(&busy, expected).await?;
    busy.close().await.map_err(|e| e.to_string())?;
    Ok(LogScavengeReport {
        events: streams * STREAM_EVENTS,
        removed,
        scavenge,
        segment_bytes,
        copy,
        bytes_before,
        bytes_after,
        writers_alone,
        writers_during,
    })
}
