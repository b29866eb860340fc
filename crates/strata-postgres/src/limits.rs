//! The PostgreSQL backend's bounds live with every other limit in [`strata_core::limits`]
//! (section "The PostgreSQL backend"); this module re-exports them, and holds the few that only
//! this crate's code uses.

pub use strata_core::limits::*;

/// The schema used when none is configured (a name, not a bound).
pub const DEFAULT_SCHEMA: &str = "strata";

/// Most hosts a database URL may list (`postgres://u@h1:p1,h2:p2/db`). Connecting tries them
/// in order, each up to the connect timeout, so the list bounds how long a failed connect
/// takes; a primary and a few standbys fit.
pub const DATABASE_HOSTS_MAX: usize = 8;

/// Backoff bounds for trying a URL's hosts again after the current one was lost (see
/// `hosts.rs`). The first retry is quick because a promotion usually takes about a second;
/// the cap keeps the wait after a promotion under a second and a half while costing each
/// server at most one connection per second during an outage.
pub const FAILOVER_PROBE_MIN_MS: u64 = 100;
/// See [`FAILOVER_PROBE_MIN_MS`].
pub const FAILOVER_PROBE_MAX_MS: u64 = 1_000;

const _: () = assert!(FAILOVER_PROBE_MIN_MS <= FAILOVER_PROBE_MAX_MS);
/// How often an append is run again on another connection after its connection was found lost
/// (ended by `pg_terminate_backend`, a server restart, a network failure). Once: the retry's
/// connection is new, or was checked with a ping because it sat idle through the loss, so a
/// second loss means the server itself is going away, and the caller gets
/// `AppendError::Unavailable` (which it may retry with the same event ids).
pub const APPEND_RECONNECT_RETRIES_MAX: u32 = 1;

/// Most committed rows a read of `$all` walks down the position index from the top looking
/// for the readable head (the newest row whose transaction is below the watermark). Rows of
/// appends in flight are invisible and do not count; the rows that do are those committed
/// while an older transaction is still open, which under load is a batch or so, so the first
/// row or two usually is the head. Past this many, the head is searched for in O(log n) probes
/// (`strata_readable_head`) instead, so a transaction held open elsewhere in the cluster does
/// not make every read walk every row appended since. 64 rows cost some tens of microseconds
/// and hold a full group-commit batch of single-event appends (`APPEND_BATCH_MAX_APPENDS`).
pub const WATERMARK_SCAN_ROWS: usize = 64;

const _: () = assert!(WATERMARK_SCAN_ROWS >= APPEND_BATCH_MAX_APPENDS);
