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
