//! The PostgreSQL backend's bounds live with every other limit in [`strata_core::limits`]
//! (section "The PostgreSQL backend"); this module re-exports them.

pub use strata_core::limits::*;

/// The schema used when none is configured (a name, not a bound).
pub const DEFAULT_SCHEMA: &str = "strata";
