//! The PostgreSQL backend's bounds live with every other limit in [`strata_core::limits`]
//! (section "The PostgreSQL backend"); this module re-exports them.

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
