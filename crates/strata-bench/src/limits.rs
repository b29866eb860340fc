//! The benchmark harness's own bounds: those of the HTTP load generator
//! (`strata-bench --http`). Each says why its value was chosen. The bounds that the stores and
//! the server under measurement enforce are in their crates' `limits` modules and in
//! [`strata_core::limits`].

/// Bytes the load generator reads from a connection at a time (an append's answer is about
/// 200 bytes; a longer one is read in several steps).
pub const BENCH_HTTP_READ_BUFFER_BYTES: usize = 4096;

/// The load generator's pause after a failed connect, so a server that is down is not
/// hammered.
pub const BENCH_HTTP_RECONNECT_DELAY_MS: u64 = 10;
