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
//!   of the archived files into a directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_archive::Archive;
use strata_core::{EventStore, ReadAllOptions};
use strata_log::LogStore;

use crate::scavenge::{ScavengeScale, STREAM_EVENTS};
use crate::scavenge_log::open;

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

/// What one run measured.
#[derive(Debug, Clone)]
pub struct ArchiveBenchReport {
    /// Events in the store.
    pub events: u64,
    /// The moves, in the order they ran.
    pub moves: Vec<Move>,
    /// The S3-compatible server used.
    pub s3_endpoint: String,
}

impl fmt::Display for ArchiveBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Archive: {} events in {} streams of {STREAM_EVENTS}, every segment sealed; S3-compatible server {}",
            self.events,
            self.events / STREAM_EVENTS,
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
        Ok(())
    }
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
    use object_store::aws::AmazonS3Builder;
    use object_store::ObjectStore;
    let s3 = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_access_key_id("strata")
        .with_secret_access_key("strata")
        .with_region("us-east-1")
        .build()
        .map_err(|e| e.to_string())?;
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
    let events = streams * STREAM_EVENTS;
    let work = Scratch(base.join(format!("strata-bench-archive-{}", std::process::id())));
    let data = work.0.join("data");
    {
        let store = open(&data)?;
        crate::scavenge::load(&store, streams, false).await?;
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
    let (bytes, took) = restore(&local, &work.0.join("from-dir"), events).await?;
    moves.push(Move {
        what: "restore from a dir and open",
        bytes,
        took,
        baseline_what: "plain copy of the archived files",
        baseline: copy_back,
    });
    Ok(ArchiveBenchReport {
        events,
        moves,
        s3_endpoint: endpoint,
    })
}
