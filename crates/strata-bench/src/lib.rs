//! # strata-bench
//!
//! The benchmark harness behind the `strata-bench` program (`cargo run --release -p
//! strata-bench -- --help` lists its runs) and `cargo bench -p strata-bench`. Every run measures
//! its own baseline on the same disk in the same run (the rate of 4 KiB write + fdatasync), so
//! each figure is also reported as a ratio that survives a noisy, shared machine.
//!
//! ```no_run
//! # async fn demo() {
//! let program = std::path::Path::new("target/release/strata-bench");
//! let report = strata_bench::log::run(std::path::Path::new("/tmp/bench"), strata_bench::Scale::Full, program).await.unwrap();
//! println!("{report}");
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod archive;
pub mod archive_pg;
mod cpu;
pub mod disk;
pub mod fresh;
pub mod http;
pub mod large;
mod lean;
pub mod limits;
pub mod log;
mod measure;
pub mod postgres;
pub mod rotation;
pub mod scavenge;
pub mod scavenge_log;
pub mod shred;

pub use measure::{Latency, Throughput};

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The sizes the targets are stated at (1,000,000 events).
    Full,
    /// A small run for smoke tests (20,000 events).
    Quick,
}

impl Scale {
    /// Events in the read and open benchmarks.
    pub fn store_events(self) -> u64 {
        match self {
            Scale::Full => 1_000_000,
            Scale::Quick => 20_000,
        }
    }
    /// Seconds each append benchmark runs.
    pub fn append_secs(self) -> f64 {
        match self {
            Scale::Full => 3.0,
            Scale::Quick => 0.5,
        }
    }
}
