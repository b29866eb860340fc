//! Small measurement helpers.

use std::fmt;
use std::time::Duration;

/// A rate over a measured interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Throughput {
    /// Operations completed.
    pub ops: u64,
    /// Events written or read.
    pub events: u64,
    /// Seconds measured.
    pub secs: f64,
}

impl Throughput {
    /// Builds from counts and a duration.
    pub fn new(ops: u64, events: u64, elapsed: Duration) -> Self {
        Throughput {
            ops,
            events,
            secs: elapsed.as_secs_f64(),
        }
    }
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }
    /// Events per second.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.secs.max(1e-9)
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
}

impl Latency {
    /// From an HDR histogram of microseconds.
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> Self {
        Latency {
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms",
            self.p50_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0
        )
    }
}

/// A new histogram for latencies of 1 µs to 60 s.
pub fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
        hdrhistogram::Histogram::new(3)
            .unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
    })
}
