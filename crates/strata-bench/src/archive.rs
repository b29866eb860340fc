//! The archive benchmark (`cargo bench -p strata-bench --bench archive`): a store of
//! 1,000,000 events in 10,000 streams of 100 (segments of 64 MiB), every segment sealed,
//! archived and restored. Measured in the same run, each beside a baseline doing the least
//! the same move must do:
//!
//! - archiving to a real S3-compatible server (the one `STRATA_BENCH_S3_ENDPOINT` names, else
//!   moto's server started for the run from `python3 -m moto.server`), beside one plain `PUT`
//!   of each of the same files to the same server;
//! - archiving to a local directory, beside reading and writing the same files (fsync each);
//! - restoring from each into an empty directory and opening the store, beside a plain copy
//!   of the archived files into a directory;
//! - reading a 10,000-event stream once every segment is given back to the S3 archive
//!   (`LogStore::evict_archived`): cold (the first read after a reopen, every block fetched)
//!   and warm (from the archive cache, median of five), beside the same read of the same
//!   stream from local segments. Two streams: `long-1`, written in 100 appends of 100 in a
//!   row, and `spread-1`, one event in every 100 of the last million (every 10 of the last
//!   100,000 in a quick run).
//! - restoring the directory archive into an empty PostgreSQL store and exporting that store
//!   into a new archive ([`crate::archive_pg`]), when the database answers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_archive::Archive;
use strata_core::{EventStore, ReadAllOptions};
use strata_log::LogStore;

use crate::scavenge::{ScavengeScale, STREAM_EVENTS};
use crate::scavenge_log::{open, Scratch};

/// One move (an archive or a restore) and its baseline.
#[derive(Debug, Clone)]
pub struct Move {
    /// What moved.
    pub what: &'static str,
    /// Bytes moved.
    pub bytes: u64,
    /// How long the move took.
    pub took: Duration,
    /// What the baseline is.
    pub baseline_what: &'static str,
    /// How long the baseline took for the same bytes.
    pub baseline: Duration,
}

impl Move {
    fn mib_per_sec(&self, d: Duration) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
    }
}

/// One stream read from segments given back to the archive.
#[derive(Debug, Clone)]
pub struct ArchivedRead {
    /// The stream.
    pub stream: &'static str,
    /// Its events.
    pub events: u64,
    /// The first read after a reopen.
    pub cold: Duration,
    /// Bytes that read fetched from the archive.
    pub cold_fetched_bytes: u64,
    /// Median of five reads after it.
    pub warm: Duration,
    /// Median of five reads of the same stream from local segments.
    pub local: Duration,
    /// Plain ranged GETs of as many bytes as the cold read fetched.
    pub plain_get: Duration,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct ArchiveBenchReport {
    /// Events in the store.
    pub events: u64,
    /// The moves, in the order they ran.
    pub moves: Vec<Move>,
    /// Streams read through the archive.
    pub reads: Vec<ArchivedRead>,
    /// The archive cache's bound in those reads.
    pub cache_bytes: u64,
    /// The S3-compatible server used.
    pub s3_endpoint: String,
    /// The archive restored into PostgreSQL and exported back (`Err`: why not measured).
    pub postgres: Result<Vec<crate::archive_pg::PgMove>, String>,
}

impl fmt::Display for ArchiveBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Archive: {} events (streams of {STREAM_EVENTS}, long-1, spread-1 and its fillers), every segment sealed; S3-compatible server {}",
            self.events,
            self.s3_endpoint
        )?;
        for m in &self.moves {
            writeln!(
                f,
                "  {:<28} {:>7.1} MiB in {:>6.2} s = {:>6.0} MiB/s | {}: {:.2} s = {:.0} MiB/s | ratio {:.2}x",
                m.what,
                m.bytes as f64 / (1024.0 * 1024.0),
                m.took.as_secs_f64(),
                m.mib_per_sec(m.took),
                m.baseline_what,
                m.baseline.as_secs_f64(),
                m.mib_per_sec(m.baseline),
                m.baseline.as_secs_f64() / m.took.as_secs_f64(),
            )?;
        }
        for r in &self.reads {
            writeln!(
                f,
                "  read {:<9} ({} events) from S3: cold {:>7.1} ms ({:.1} MiB fetched; plain GETs of as much {:.1} ms: ratio {:.2}x), warm {:>6.2} ms | from local segments {:.2} ms: ratio {:.2}x (cache {} MiB)",
                r.stream,
                r.events,
                ms(r.cold),
                r.cold_fetched_bytes as f64 / (1024.0 * 1024.0),
                ms(r.plain_get),
                r.cold.as_secs_f64() / r.plain_get.as_secs_f64(),
                ms(r.warm),
                ms(r.local),
                r.warm.as_secs_f64() / r.local.as_secs_f64(),
                self.cache_bytes >> 20,
            )?;
        }
        match &self.postgres {
            Ok(moves) => {
                for m in moves {
                    writeln!(f, "{m}")?;
                }
            }
            Err(why) => writeln!(f, "  PostgreSQL rows not measured: {why}")?,
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Events of the two long streams.
const LONG_STREAM_EVENTS: u64 = 10_000;
/// The archive cache in the reads: large enough for `spread-1`'s blocks.
const READ_CACHE_BYTES: u64 = 512 << 20;

/// The S3 client of the plain baselines.
fn plain_client(endpoint: &str, bucket: &str) -> Result<object_store::aws::AmazonS3, String> {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_access_key_id("strata")
        .with_secret_access_key("strata")
        .with_region("us-east-1")
        .build()
        .map_err(|e| e.to_string())
}

/// Time to download `total` bytes of the plain copies of `files` (`plain/NAME`), in order,
/// in 8 MiB ranges with 4 in flight: the least a cold read that fetched as much must do.
async fn get_plain(
    endpoint: &str,
    bucket: &str,
    files: &[(PathBuf, u64)],
    total: u64,
) -> Result<Duration, String> {
    use futures::StreamExt;
    use object_store::ObjectStore;
    let s3 = plain_client(endpoint, bucket)?;
    let piece = strata_archive::UPLOAD_CHUNK_BYTES as u64;
    let mut ranges = Vec::new();
    let mut left = total;
    for (p, size) in files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|x| x == "seg"))
    {
        let size = *size;
        let name = p.file_name().and_then(|n| n.to_str()).ok_or("no name")?;
        let path = object_store::path::Path::from(format!("plain/{name}"));
        let mut at = 0;
        while at < size && left > 0 {
            let n = piece.min(size - at).min(left);
            ranges.push((path.clone(), at..at + n));
            at += n;
            left -= n;
        }
    }
    let t = Instant::now();
    let s3 = &s3;
    let mut gets = futures::stream::iter(ranges)
        .map(|(path, r)| async move { s3.get_range(&path, r).await })
        .buffered(strata_archive::UPLOAD_CONCURRENCY);
    while let Some(got) = gets.next().await {
        got.map_err(|e| e.to_string())?;
    }
    Ok(t.elapsed())
}

/// Appends `long-1` (100 appends of 100, in a row) and `spread-1` (one event, then `filler`
/// events of a filler stream, 10,000 times).
async fn long_streams(store: &LogStore, filler: u64) -> Result<(), String> {
    use strata_core::{ExpectedVersion, StreamId};
    let sid = |s: String| StreamId::new(s).map_err(|e| e.to_string());
    let append = |s: StreamId, n: u64| async move {
        let events = (0..n).map(crate::postgres::event).collect();
        store
            .append(&s, ExpectedVersion::Any, events)
            .await
            .map_err(|e| e.to_string())
    };
    for _ in 0..LONG_STREAM_EVENTS / 100 {
        append(sid("long-1".to_owned())?, 100).await?;
    }
    for i in 0..LONG_STREAM_EVENTS {
        append(sid("spread-1".to_owned())?, 1).await?;
        append(sid(format!("filler-{i}"))?, filler).await?;
    }
    Ok(())
}

/// Reads `stream` whole; returns the time taken.
async fn read_stream(store: &LogStore, stream: &str) -> Result<Duration, String> {
    use strata_core::{ReadStreamOptions, StreamId};
    let s = StreamId::new(stream).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let got = store
        .read_stream(
            &s,
            ReadStreamOptions::forward().limit(LONG_STREAM_EVENTS as usize),
        )
        .await
        .map_err(|e| format!("reading {stream}: {e}"))?;
    let took = t.elapsed();
    if got.len() as u64 != LONG_STREAM_EVENTS {
        return Err(format!("{stream} read {} events", got.len()));
    }
    Ok(took)
}

/// The median of five reads of `stream`.
async fn warm_read(store: &LogStore, stream: &str) -> Result<Duration, String> {
    let mut v = Vec::new();
    for _ in 0..5 {
        v.push(read_stream(store, stream).await?);
    }
    v.sort();
    Ok(v[2])
}

/// Gives every sealed segment of `data` back to `archive`, reopens the store reading from it,
/// and reads the long streams cold, then warm; beside reads of them from local segments.
async fn archived_reads(
    data: &Path,
    archive: &Archive,
    plain: (&str, &str, &[(PathBuf, u64)]),
) -> Result<Vec<ArchivedRead>, String> {
    let streams = ["long-1", "spread-1"];
    let store = open(data)?;
    let mut local = Vec::new();
    for s in streams {
        local.push(warm_read(&store, s).await?);
    }
    let evicted = archive
        .evict_archived(&store, 0)
        .await
        .map_err(|e| e.to_string())?;
    if evicted.evicted == 0 {
        return Err("no segment was given back".to_owned());
    }
    store.close().await.map_err(|e| e.to_string())?;
    let store = LogStore::open_with(
        data,
        strata_log::LogConfig {
            segment_max_bytes: crate::scavenge_log::SEGMENT_BYTES,
            archive: Some(archive.segment_source().map_err(|e| e.to_string())?),
            archive_cache_bytes: READ_CACHE_BYTES,
            ..strata_log::LogConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let mut reads = Vec::new();
    for (s, local) in streams.into_iter().zip(local) {
        let before = store.archive_cache().map_or(0, |c| c.fetched_bytes);
        let cold = read_stream(&store, s).await?;
        let fetched = store.archive_cache().map_or(0, |c| c.fetched_bytes) - before;
        let warm = warm_read(&store, s).await?;
        let plain_get = get_plain(plain.0, plain.1, plain.2, fetched).await?;
        reads.push(ArchivedRead {
            stream: s,
            events: LONG_STREAM_EVENTS,
            cold,
            cold_fetched_bytes: fetched,
            warm,
            local,
            plain_get,
        });
    }
    store.close().await.map_err(|e| e.to_string())?;
    Ok(reads)
}

/// moto's S3-compatible server, stopped when dropped.
struct Moto(std::process::Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The S3-compatible server to use: `STRATA_BENCH_S3_ENDPOINT`, else moto started here.
async fn s3_server() -> Result<(String, Option<Moto>), String> {
    if let Ok(e) = std::env::var("STRATA_BENCH_S3_ENDPOINT") {
        return Ok((e, None));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = std::process::Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting moto (pip install 'moto[server]'): {e}"))?;
    let moto = Moto(child);
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return Ok((format!("http://{addr}"), Some(moto)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("moto did not answer on {addr}"))
}

/// Creates `bucket` on the server (it takes any credentials).
async fn create_bucket(endpoint: &str, bucket: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(format!("creating bucket {bucket}: {answer}"));
    }
    Ok(())
}

fn s3_options(endpoint: &str) -> [(&'static str, String); 4] {
    [
        ("aws_endpoint", endpoint.to_owned()),
        ("aws_access_key_id", "strata".to_owned()),
        ("aws_secret_access_key", "strata".to_owned()),
        ("aws_region", "us-east-1".to_owned()),
    ]
}

/// The segment and index files of `dir/segments` (the open segment's too).
fn files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("segments"))
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg" || x == "idx"))
        .collect();
    v.sort();
    Ok(v)
}

/// Reads each file and writes it into `to`, fsync each.
fn copy_files(from: &[PathBuf], to: &Path) -> Result<Duration, String> {
    use std::io::Write;
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    let t = Instant::now();
    for p in from {
        let bytes = std::fs::read(p).map_err(|e| e.to_string())?;
        let name = p.file_name().ok_or("a file without a name")?;
        let mut out = std::fs::File::create(to.join(name)).map_err(|e| e.to_string())?;
        out.write_all(&bytes).map_err(|e| e.to_string())?;
        out.sync_all().map_err(|e| e.to_string())?;
    }
    Ok(t.elapsed())
}

/// One plain `PUT` per file, whole, to `s3://bucket/plain/`.
async fn put_files(endpoint: &str, bucket: &str, from: &[PathBuf]) -> Result<Duration, String> {
    use object_store::ObjectStore;
    let s3 = plain_client(endpoint, bucket)?;
    let t = Instant::now();
    for p in from {
        let bytes = tokio::fs::read(p).await.map_err(|e| e.to_string())?;
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("a file without a name")?;
        let path = object_store::path::Path::from(format!("plain/{name}"));
        s3.put(&path, bytes.into())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(t.elapsed())
}

/// Restores `archive` into `to` and opens the store there, checking it holds `events`.
async fn restore(archive: &Archive, to: &Path, events: u64) -> Result<(u64, Duration), String> {
    let t = Instant::now();
    let report = archive
        .restore(to, &|_| {})
        .await
        .map_err(|e| e.to_string())?;
    let store = LogStore::open(to).map_err(|e| e.to_string())?;
    let took = t.elapsed();
    let head = store
        .read_all(ReadAllOptions::backward().limit(1))
        .await
        .map_err(|e| e.to_string())?;
    let last = head.events.first().map(|e| e.position.0 + 1);
    if report.events != events || last != Some(events) {
        return Err(format!(
            "the restore holds {} events ending at {last:?}, not {events}",
            report.events
        ));
    }
    store.close().await.map_err(|e| e.to_string())?;
    Ok((report.bytes, took))
}

/// Runs the benchmark in a temporary directory under `base`.
pub async fn run(base: &Path, scale: ScavengeScale) -> Result<ArchiveBenchReport, String> {
    let streams = scale.streams();
    // `spread-1` lies among the last million events (a tenth of that in a quick run).
    let filler = match scale {
        ScavengeScale::Quick => 9,
        ScavengeScale::Full | ScavengeScale::Streams(_) => 99,
    };
    let events = streams * STREAM_EVENTS;
    let work = Scratch(base.join(format!("strata-bench-archive-{}", std::process::id())));
    let data = work.0.join("data");
    {
        let store = open(&data)?;
        crate::scavenge::load(&store, streams, false).await?;
        long_streams(&store, filler).await?;
        store.seal_open_segment().await.map_err(|e| e.to_string())?;
        store.close().await.map_err(|e| e.to_string())?;
    }
    let (endpoint, _moto) = s3_server().await?;
    let bucket = format!("strata-bench-{}", std::process::id());
    create_bucket(&endpoint, &bucket).await?;
    let s3 = Archive::open_with_options(&format!("s3://{bucket}/archive"), s3_options(&endpoint))
        .map_err(|e| e.to_string())?;
    let local_dir = work.0.join("archive");
    let local = Archive::open(&local_dir.display().to_string()).map_err(|e| e.to_string())?;
    let store = open(&data)?;
    let sealed: Vec<PathBuf> = {
        let held = store.sealed_files().await.map_err(|e| e.to_string())?;
        held.segments
            .iter()
            .flat_map(|s| [s.segment_path.clone(), s.index_path.clone()])
            .collect()
    };
    let mut moves = Vec::new();
    // The sizes of the files, for the plain downloads after the store gives them back.
    let sizes = sealed
        .iter()
        .map(|p| Ok((p.clone(), std::fs::metadata(p)?.len())))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| e.to_string())?;

    let put = put_files(&endpoint, &bucket, &sealed).await?;
    let t = Instant::now();
    let r = s3
        .archive_store(&store, &|_| {})
        .await
        .map_err(|e| e.to_string())?;
    moves.push(Move {
        what: "archive to S3",
        bytes: r.bytes,
        took: t.elapsed(),
        baseline_what: "one plain PUT per file",
        baseline: put,
    });
    let events = events + LONG_STREAM_EVENTS * (2 + filler);
    if r.events != events {
        return Err(format!("archived {} events, not {events}", r.events));
    }

    let copy = {
        let (sealed, to) = (sealed.clone(), work.0.join("copy-out"));
        tokio::task::spawn_blocking(move || copy_files(&sealed, &to))
            .await
            .map_err(|e| e.to_string())??
    };
    let t = Instant::now();
    let r = local
        .archive_store(&store, &|_| {})
        .await
        .map_err(|e| e.to_string())?;
    moves.push(Move {
        what: "archive to a directory",
        bytes: r.bytes,
        took: t.elapsed(),
        baseline_what: "plain copy, fsync each",
        baseline: copy,
    });
    store.close().await.map_err(|e| e.to_string())?;

    let archived = files(&local_dir)?;
    let copy_back = {
        let to = work.0.join("copy-back");
        tokio::task::spawn_blocking(move || copy_files(&archived, &to))
            .await
            .map_err(|e| e.to_string())??
    };
    let (bytes, took) = restore(&s3, &work.0.join("from-s3"), events).await?;
    moves.push(Move {
        what: "restore from S3 and open",
        bytes,
        took,
        baseline_what: "plain copy of the archived files",
        baseline: copy_back,
    });
    let from_dir = work.0.join("from-dir");
    let (bytes, took) = restore(&local, &from_dir, events).await?;
    moves.push(Move {
        what: "restore from a dir and open",
        bytes,
        took,
        baseline_what: "plain copy of the archived files",
        baseline: copy_back,
    });
    let postgres = crate::archive_pg::run(&local, events, &from_dir, took, &work.0).await;
    let reads = archived_reads(&data, &s3, (&endpoint, &bucket, &sizes)).await?;
    Ok(ArchiveBenchReport {
        events,
        moves,
        reads,
        cache_bytes: READ_CACHE_BYTES,
        s3_endpoint: endpoint,
        postgres,
    })
}
