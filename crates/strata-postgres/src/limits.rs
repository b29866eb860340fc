//! The PostgreSQL backend's bounds live with every other limit in [`strata_core::limits`]
//! (section "The PostgreSQL backend"); this module re-exports them, and holds the few that only
//! this crate's code uses.

pub use strata_core::limits::*;

/// The schema used when none is configured (a name, not a bound).
pub const DEFAULT_SCHEMA: &str = "strata";

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
