//! `strata bench`: the benchmarks of the embedded store (full size or `--quick`), of opening a
//! large store (`--large`, measured in fresh processes by `bench-open`) and of the HTTP server
//! (`--http`, or `--server URL`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use crate::cli::Cli;
use crate::output::Printer;

#[derive(Args)]
pub struct BenchArgs {
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
    /// Instead: the HTTP benchmarks, against an in-process server on loopback (or the
    /// running server given with --server), beside in-process appends for comparison.
    #[arg(long)]
    http: bool,
}

/// `strata bench-open`: open the store, serve a read and print time and memory as JSON.
pub async fn open(cli: &Cli) -> Result<()> {
    let m = strata_bench::large::open_and_measure(&cli.data_dir())
        .await
        .map_err(anyhow::Error::msg)?;
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

pub async fn run(cli: &Cli, b: &BenchArgs, p: &Printer) -> Result<()> {
    if b.http || cli.server.is_some() {
        return http(cli, b).await;
    }
    if let Some(events) = b.large {
        return large(&b.dir, events, p).await;
    }
    let scale = if b.quick {
        strata_bench::Scale::Quick
    } else {
        strata_bench::Scale::Full
    };
    if !cli.json {
        eprintln!(
            "running the embedded-store benchmarks in {} ({})...",
            b.dir.display(),
            if b.quick {
                "quick"
            } else {
                "full size, about two minutes"
            }
        );
    }
    let report = strata_bench::log::run(&b.dir, scale)
        .await
        .map_err(anyhow::Error::msg)?;
    let _ = std::fs::remove_dir_all(&b.dir);
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// `strata bench --http` (or `--server URL`).
async fn http(cli: &Cli, b: &BenchArgs) -> Result<()> {
    let scale = if b.quick {
        strata_bench::Scale::Quick
    } else {
        strata_bench::Scale::Full
    };
    let target = match &cli.server {
        Some(url) => strata_bench::http::Target::Server {
            url: url.clone(),
            token: cli.token.clone(),
        },
        None => strata_bench::http::Target::InProcess,
    };
    if !cli.json {
        eprintln!(
            "running the HTTP benchmarks ({}) in {}...",
            if b.quick {
                "quick"
            } else {
                "full size, about a minute"
            },
            b.dir.display()
        );
    }
    let report = strata_bench::http::run(&b.dir, target, scale)
        .await
        .map_err(anyhow::Error::msg)?;
    let _ = std::fs::remove_dir_all(&b.dir);
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// `strata bench --large N`: fill a store, then open it in fresh processes.
async fn large(dir: &Path, events: u64, p: &Printer) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    eprintln!("filling {} with {events} events...", dir.display());
    let took = strata_bench::large::populate(dir, events, (events / 100).max(1))
        .await
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "filled in {:.1} s ({:.0} events/s)",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    let exe = std::env::current_exe().context("finding the strata binary")?;
    let measure = || -> Result<strata_bench::large::OpenMeasure> {
        let out = std::process::Command::new(&exe)
            .arg("--data")
            .arg(dir)
            .arg("bench-open")
            .output()
            .context("running strata bench-open")?;
        if !out.status.success() {
            anyhow::bail!(
                "bench-open failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let with_index = measure()?;
    std::fs::remove_file(dir.join("index.bin")).context("removing the index file")?;
    let rebuilt = measure()?;
    let _ = std::fs::remove_dir_all(dir);
    if p.is_json() {
        println!(
            "{}",
            serde_json::json!({"withIndex": with_index, "rebuilt": rebuilt})
        );
    } else {
        for (name, m) in [
            ("with index file", &with_index),
            ("rebuilding index", &rebuilt),
        ] {
            println!(
                "open {} events, {name}: {} ms; resident memory {:.0} MiB (peak {:.0} MiB, {:.0} bytes/event); a 1,000-event stream read right after: {:.2} ms",
                m.events,
                m.open_ms,
                m.rss_bytes as f64 / 1048576.0,
                m.peak_rss_bytes as f64 / 1048576.0,
                m.rss_bytes as f64 / m.events.max(1) as f64,
                m.stream_read_us as f64 / 1000.0
            );
        }
    }
    Ok(())
}
