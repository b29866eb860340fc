//! The memory budget check: a store of many events (10 million by default) must open and
//! serve on this machine. The store is filled in this process; opening it is measured in a
//! fresh process (so its memory is the open store's alone) by `strata-bench --large`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_core::{EventData, EventStore, ExpectedVersion, StreamId};
use strata_log::LogStore;

/// This process's memory, in bytes, from `/proc/self/status` (0 where it says nothing).
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident (`VmRSS`): its own memory and the pages of files it maps.
    pub rss: u64,
    /// The peak of `rss` (`VmHWM`).
    pub peak: u64,
    /// Of `rss`, its own memory (`RssAnon`): the heap, where the index lives.
    pub anon: u64,
    /// Of `rss`, pages of files it maps (`RssFile`): the page cache of mapped segments and
    /// index files, resident while mapped and reclaimable by the kernel. Linux maps the whole
    /// large folio (up to 2 MiB) a read through a map falls in.
    pub file: u64,
}

impl Memory {
    /// The figures now.
    pub fn now() -> Memory {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        Memory {
            rss: field("VmRSS:"),
            peak: field("VmHWM:"),
            anon: field("RssAnon:"),
            file: field("RssFile:"),
        }
    }
}

/// The long stream [`populate`] spreads over the whole store: one event in every 10,000 (so
/// 10,000 events in a store of 100,000,000), the rest of its append going to a stream of 100.
pub const LONG_STREAM: &str = "target-1";

/// Events of the long stream read by [`open_and_measure`].
pub const LONG_STREAM_READ: usize = 10_000;

/// Fills `dir` with `events` events spread over `streams` streams (100-event appends from 16
/// concurrent writers), and one event in every 10,000 in [`LONG_STREAM`] (of the hundredth
/// append's 100 events, 99 go to its stream, and one to it). Returns how long it took.
pub async fn populate(dir: &Path, events: u64, streams: u64) -> Result<Duration, String> {
    let store = LogStore::open(dir).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let appends = events / 100;
    let tasks = 16u64;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let long = StreamId::new(LONG_STREAM).map_err(|e| e.to_string())?;
            let deposit = |i: usize| {
                EventData::json(
                    "MoneyDeposited",
                    &serde_json::json!({"amount": i, "currency": "EUR"}),
                )
                .map_err(|e| e.to_string())
            };
            let mut a = t;
            while a < appends {
                let stream =
                    StreamId::new(format!("account-{}", a % streams)).map_err(|e| e.to_string())?;
                let to_long = a % 100 == 0;
                let batch = (0..100 - usize::from(to_long))
                    .map(deposit)
                    .collect::<Result<Vec<_>, _>>()?;
                store
                    .append(&stream, ExpectedVersion::Any, batch)
                    .await
                    .map_err(|e| e.to_string())?;
                if to_long {
                    store
                        .append(&long, ExpectedVersion::Any, vec![deposit(0)?])
                        .await
                        .map_err(|e| e.to_string())?;
                }
                a += tasks;
            }
            Ok::<_, String>(())
        }));
    }
    for h in handles {
        h.await.map_err(|e| e.to_string())??;
    }
    // Closed, not dropped: the measuring processes open the directory next.
    store.close().await.map_err(|e| e.to_string())?;
    Ok(start.elapsed())
}

/// What opening a large store cost, measured in the process that opened it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OpenMeasure {
    /// Events in the store.
    pub events: u64,
    /// Time to open, in ms.
    pub open_ms: u64,
    /// Whether the index file was used.
    pub index_loaded: bool,
    /// Events read from the log on open: all of them when the index was rebuilt.
    #[serde(default)]
    pub events_scanned: u64,
    /// Resident memory after opening and serving a few reads, in bytes.
    pub rss_bytes: u64,
    /// Peak resident memory, in bytes.
    pub peak_rss_bytes: u64,
    /// Of `rss_bytes`, the process's own memory ([`Memory::anon`]).
    #[serde(default)]
    pub rss_anon_bytes: u64,
    /// Of `rss_bytes`, mapped files' pages ([`Memory::file`]).
    #[serde(default)]
    pub rss_file_bytes: u64,
    /// Time to read one stream after opening, in µs.
    pub stream_read_us: u64,
    /// Events of [`LONG_STREAM`] read (up to [`LONG_STREAM_READ`]).
    #[serde(default)]
    pub long_stream_events: u64,
    /// Time to read them after the other reads, the store's files evicted from the page
    /// cache first (the index in memory as open left it), in µs.
    #[serde(default)]
    pub long_stream_cold_us: u64,
    /// Time to read them again, the median of five reads, in µs.
    #[serde(default)]
    pub long_stream_warm_us: u64,
    /// Event ids held in memory right after opening (the rest are in segment index files).
    #[serde(default)]
    pub event_ids_in_memory: u64,
    /// Bytes of memory the event ids take right after opening.
    #[serde(default)]
    pub event_id_bytes: u64,
    /// Bytes of memory the entries take right after opening (the sealed segments' are read
    /// from their index files).
    #[serde(default)]
    pub entry_bytes: u64,
    /// Bytes of memory the stream, category and type position lists take.
    #[serde(default)]
    pub position_list_bytes: u64,
    /// Whole streams read at random after the first read.
    #[serde(default)]
    pub random_streams_read: u64,
    /// How long those reads took, in ms.
    #[serde(default)]
    pub random_streams_ms: u64,
    /// Resident memory after them, in bytes.
    #[serde(default)]
    pub rss_after_random_streams_bytes: u64,
    /// Of that, the process's own memory (see [`Memory::anon`]).
    #[serde(default)]
    pub rss_anon_after_random_streams_bytes: u64,
}

/// Opens the store in `dir`, serves a read, and reports time and memory.
pub async fn open_and_measure(dir: &Path) -> Result<OpenMeasure, String> {
    let t = Instant::now();
    let store = LogStore::open(dir).map_err(|e| e.to_string())?;
    let open_ms = t.elapsed().as_millis() as u64;
    let s = StreamId::new("account-7").map_err(|e| e.to_string())?;
    let t = Instant::now();
    let events = store
        .read_stream(&s, strata_core::ReadStreamOptions::forward().limit(1000))
        .await
        .map_err(|e| e.to_string())?;
    let stream_read_us = t.elapsed().as_micros() as u64;
    if events.is_empty() {
        return Err("the large store has no account-7 events".to_owned());
    }
    let memory = Memory::now();
    let ids = store.index_stats();
    let report = store.open_report().clone();
    let random = read_random_streams(&store, report.events / 100).await?;
    // Last, as it empties the page cache of the store's files: the figures above are those
    // of a store opened as it was left (a next open of it reads its files from the disk).
    let long = read_long_stream(&store, dir).await?;
    // Closed, so the process ends with the store's files still: a store opened without its
    // index file writes one as it closes, and a drop would race the process's exit.
    store.close().await.map_err(|e| e.to_string())?;
    Ok(OpenMeasure {
        event_ids_in_memory: ids.event_ids_in_memory,
        event_id_bytes: ids.event_id_bytes,
        entry_bytes: ids.entry_bytes,
        position_list_bytes: ids.position_list_bytes,
        events: report.events,
        open_ms,
        index_loaded: report.index_loaded,
        events_scanned: report.events_scanned,
        rss_bytes: memory.rss,
        peak_rss_bytes: memory.peak,
        rss_anon_bytes: memory.anon,
        rss_file_bytes: memory.file,
        stream_read_us,
        long_stream_events: long.events,
        long_stream_cold_us: long.cold.as_micros() as u64,
        long_stream_warm_us: long.warm.as_micros() as u64,
        random_streams_read: random.streams,
        random_streams_ms: random.took.as_millis() as u64,
        rss_after_random_streams_bytes: random.memory.rss,
        rss_anon_after_random_streams_bytes: random.memory.anon,
    })
}

/// What reading [`LONG_STREAM`] cost.
struct LongRead {
    events: u64,
    cold: Duration,
    warm: Duration,
}

/// Reads [`LONG_STREAM`] (up to [`LONG_STREAM_READ`] events) with the files of the store in
/// `dir` evicted from the page cache first, then five times more.
async fn read_long_stream(store: &LogStore, dir: &Path) -> Result<LongRead, String> {
    let s = StreamId::new(LONG_STREAM).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    for d in [dir.to_path_buf(), dir.join("segments")] {
        let listing = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        files.extend(listing.filter_map(Result::ok).map(|e| e.path()));
    }
    files.retain(|p| p.is_file());
    evict(&files);
    let mut times = Vec::new();
    let mut events = 0;
    for _ in 0..6 {
        let t = Instant::now();
        let read = store
            .read_stream(
                &s,
                strata_core::ReadStreamOptions::forward().limit(LONG_STREAM_READ),
            )
            .await
            .map_err(|e| e.to_string())?;
        times.push(t.elapsed());
        events = read.len() as u64;
    }
    if events == 0 {
        return Err(format!("the large store has no {LONG_STREAM} events"));
    }
    let cold = times.remove(0);
    times.sort();
    Ok(LongRead {
        events,
        cold,
        warm: times[times.len() / 2],
    })
}

/// Drops `files`' pages from the page cache (they must be clean: written and synced), with
/// GNU `dd iflag=nocache count=0`, which asks the kernel to drop a whole file's cached pages.
/// Pages a process has mapped and touched stay. Where `dd` is missing nothing is dropped.
pub fn evict(files: &[PathBuf]) {
    for path in files {
        let mut input = std::ffi::OsString::from("if=");
        input.push(path);
        let _ = std::process::Command::new("dd")
            .args([
                input.as_os_str(),
                "iflag=nocache".as_ref(),
                "count=0".as_ref(),
            ])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// What reading streams chosen at random cost.
struct RandomReads {
    streams: u64,
    took: Duration,
    /// Memory after them.
    memory: Memory,
}

/// Streams read at random by [`open_and_measure`] (the memory budget's second point).
pub const RANDOM_STREAMS: u64 = 10_000;

/// Reads [`RANDOM_STREAMS`] whole streams picked at random (a fixed sequence) among the
/// `streams` of a store filled by [`populate`], one after another.
async fn read_random_streams(store: &LogStore, streams: u64) -> Result<RandomReads, String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let start = Instant::now();
    for _ in 0..RANDOM_STREAMS {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let s =
            StreamId::new(format!("account-{}", x % streams.max(1))).map_err(|e| e.to_string())?;
        let events = store
            .read_stream(&s, strata_core::ReadStreamOptions::forward().limit(1000))
            .await
            .map_err(|e| e.to_string())?;
        if events.is_empty() {
            return Err(format!("{s} has no events"));
        }
    }
    Ok(RandomReads {
        streams: RANDOM_STREAMS,
        took: start.elapsed(),
        memory: Memory::now(),
    })
}
