//! `strata-bench`: Strata's benchmarks as a program of their own, so that the `strata` binary
//! does not carry the load generator and the benchmarks' dependencies.
//!
//! ```sh
//! cargo run --release -p strata-bench                        # the embedded store, full size
//! cargo run --release -p strata-bench -- --quick             # a small, fast run
//! cargo run --release -p strata-bench -- --large 10000000    # open a large store: time and memory
//! cargo run --release -p strata-bench -- --rotation          # append latency while segments rotate
//! cargo run --release -p strata-bench -- --http              # the HTTP server, on loopback
//! cargo run --release -p strata-bench -- --server URL        # ... or a running server
//! ```

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use strata_bench::fresh::{self, FreshError};
use strata_bench::large::OpenMeasure;
use strata_bench::{http, large, log, rotation, Scale};

/// Strata's benchmarks: the embedded store, its server over HTTP, and opening a large store.
/// Every run measures its own baseline beside its figures (see docs/benchmarks.md).
#[derive(Parser)]
#[command(
    name = "strata-bench",
    version,
    long_about = None,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args)]
struct RunArgs {
    /// A small, fast run instead of the full-size one.
    #[arg(long)]
    quick: bool,
    /// Where to put the benchmark's stores (removed afterwards).
    #[arg(long, default_value = "./strata-bench-data")]
    dir: PathBuf,
    /// Instead: fill a store with this many events and measure opening it in a fresh
    /// process, with and without its index file (the memory budget check).
    #[arg(long, value_name = "EVENTS")]
    large: Option<u64>,
    /// Instead: append latency of 64 writers while segments rotate, against the same store
    /// without rotations.
    #[arg(long)]
    rotation: bool,
    /// Instead: the HTTP benchmarks, against an in-process server on loopback (or the
    /// running server given with --server), beside in-process appends for comparison.
    #[arg(long)]
    http: bool,
    /// The HTTP benchmarks against the running server at this URL (implies --http).
    #[arg(long, env = "STRATA_SERVER")]
    server: Option<String>,
    /// The API token for --server: write and subscribe rights on `bench-` streams and `$all`.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON (one document) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Open the store in --data, serve one read and print the time and memory it took as JSON
    /// (what --large runs in a fresh process).
    OpenMeasure {
        /// The data directory of the store to open.
        #[arg(long, default_value = "./strata-data")]
        data: PathBuf,
    },
    /// Open the store in --data, read all of `$all` and print the times as JSON (what the
    /// embedded-store benchmarks run in a fresh process).
    ScanMeasure {
        /// The data directory of the store to open.
        #[arg(long, default_value = "./strata-data")]
        data: PathBuf,
    },
}

/// Why a benchmark run stopped.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Harness(String),
    #[error("cannot find this program to run it again in a fresh process: {0}")]
    CurrentExe(std::io::Error),
    #[error(transparent)]
    Fresh(#[from] FreshError),
    #[error("cannot remove the index file {path}: {source}")]
    RemoveIndex {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot print JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = tokio::runtime::Runtime::new()
        .map_err(BenchError::Runtime)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), BenchError> {
    let a = cli.run;
    match cli.command {
        Some(Command::OpenMeasure { data }) => {
            let m = large::open_and_measure(&data)
                .await
                .map_err(BenchError::Harness)?;
            println!("{}", serde_json::to_string(&m)?);
            Ok(())
        }
        Some(Command::ScanMeasure { data }) => {
            let m = log::open_and_scan(&data)
                .await
                .map_err(BenchError::Harness)?;
            println!("{}", serde_json::to_string(&m)?);
            Ok(())
        }
        None if a.http || a.server.is_some() => run_http(a).await,
        None if a.rotation => run_rotation(a).await,
        None => match a.large {
            Some(events) => run_large(&a.dir, events, a.json).await,
            None => run_log(a).await,
        },
    }
}

fn scale(a: &RunArgs) -> Scale {
    if a.quick {
        Scale::Quick
    } else {
        Scale::Full
    }
}

/// Runs one benchmark in `a.dir`: says what runs (unless `--json`), removes the directory
/// afterwards, and prints the report as text or as one JSON document.
async fn run_and_print<R: serde::Serialize + std::fmt::Display>(
    a: &RunArgs,
    what: &str,
    full_size: &str,
    run: impl std::future::Future<Output = Result<R, String>>,
) -> Result<(), BenchError> {
    if !a.json {
        eprintln!(
            "running {what} in {} ({})...",
            a.dir.display(),
            if a.quick { "quick" } else { full_size }
        );
    }
    let report = run.await.map_err(BenchError::Harness)?;
    let _ = std::fs::remove_dir_all(&a.dir);
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// The embedded-store benchmarks.
async fn run_log(a: RunArgs) -> Result<(), BenchError> {
    let exe = std::env::current_exe().map_err(BenchError::CurrentExe)?;
    let run = log::run(&a.dir, scale(&a), &exe);
    run_and_print(
        &a,
        "the embedded-store benchmarks",
        "full size, about two minutes",
        run,
    )
    .await
}

/// `--rotation`: append latency while segments rotate.
async fn run_rotation(a: RunArgs) -> Result<(), BenchError> {
    let run = rotation::run(&a.dir, scale(&a));
    run_and_print(
        &a,
        "the rotation benchmark",
        "full size, about a minute",
        run,
    )
    .await
}

/// `--http` (or `--server URL`): the HTTP benchmarks.
async fn run_http(a: RunArgs) -> Result<(), BenchError> {
    let target = match &a.server {
        Some(url) => http::Target::Server {
            url: url.clone(),
            token: a.token.clone(),
        },
        None => http::Target::InProcess,
    };
    let run = http::run(&a.dir, target, scale(&a));
    run_and_print(&a, "the HTTP benchmarks", "full size, about a minute", run).await
}

/// `--large N`: fill a store, then open it in fresh processes (`open-measure`), with its
/// index file, without it (from the sealed segments' index files), and without those too, so
/// each figure is the open store's memory alone.
async fn run_large(dir: &Path, events: u64, json: bool) -> Result<(), BenchError> {
    let _ = std::fs::remove_dir_all(dir);
    eprintln!("filling {} with {events} events...", dir.display());
    let took = large::populate(dir, events, (events / 100).max(1))
        .await
        .map_err(BenchError::Harness)?;
    eprintln!(
        "filled in {:.1} s ({:.0} events/s)",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    let exe = std::env::current_exe().map_err(BenchError::CurrentExe)?;
    let measure = || -> Result<OpenMeasure, FreshError> {
        fresh::measure(
            &exe,
            &["open-measure".as_ref(), "--data".as_ref(), dir.as_os_str()],
        )
    };
    let with_index = measure()?;
    let index = dir.join("index.bin");
    std::fs::remove_file(&index).map_err(|source| BenchError::RemoveIndex {
        path: index.clone(),
        source,
    })?;
    let from_segment_indexes = measure()?;
    // Without the segments' own index files too: the whole log is scanned. The open before
    // may have written the index file again (a store opened without one writes one), so it
    // goes again as well.
    match std::fs::remove_file(&index) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            return Err(BenchError::RemoveIndex {
                path: index,
                source,
            });
        }
        _ => {}
    }
    let seg_dir = dir.join("segments");
    let listing = std::fs::read_dir(&seg_dir).map_err(|source| BenchError::RemoveIndex {
        path: seg_dir.clone(),
        source,
    })?;
    for entry in listing.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "idx") {
            std::fs::remove_file(&path)
                .map_err(|source| BenchError::RemoveIndex { path, source })?;
        }
    }
    let rebuilt = measure()?;
    let _ = std::fs::remove_dir_all(dir);
    if json {
        println!(
            "{}",
            serde_json::json!({"withIndex": with_index, "fromSegmentIndexes": from_segment_indexes, "rebuilt": rebuilt})
        );
    } else {
        for (name, m) in [
            ("with index file", &with_index),
            ("from the segments' index files", &from_segment_indexes),
            ("rebuilding index", &rebuilt),
        ] {
            println!(
                "open {} events, {name}: {} ms; resident memory {:.0} MiB (own {:.0} MiB, mapped files {:.0} MiB; peak {:.0} MiB, {:.0} bytes/event); event ids in memory {} ({:.1} MiB with the files' filters); entries {:.1} MiB; position lists {:.1} MiB; a 1,000-event stream read right after: {:.2} ms; then {} streams read at random in {} ms, resident after {:.0} MiB (own {:.0} MiB); last, {} events of the long stream read with the store's files out of the page cache in {:.2} ms, then warm in {:.2} ms",
                m.events,
                m.open_ms,
                m.rss_bytes as f64 / 1048576.0,
                m.rss_anon_bytes as f64 / 1048576.0,
                m.rss_file_bytes as f64 / 1048576.0,
                m.peak_rss_bytes as f64 / 1048576.0,
                m.rss_bytes as f64 / m.events.max(1) as f64,
                m.event_ids_in_memory,
                m.event_id_bytes as f64 / 1048576.0,
                m.entry_bytes as f64 / 1048576.0,
                m.position_list_bytes as f64 / 1048576.0,
                m.stream_read_us as f64 / 1000.0,
                m.random_streams_read,
                m.random_streams_ms,
                m.rss_after_random_streams_bytes as f64 / 1048576.0,
                m.rss_anon_after_random_streams_bytes as f64 / 1048576.0,
                m.long_stream_events,
                m.long_stream_cold_us as f64 / 1000.0,
                m.long_stream_warm_us as f64 / 1000.0,
            );
        }
    }
    Ok(())
}
