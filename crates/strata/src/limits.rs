//! Every bound Strata enforces. They all live in [`strata_core::limits`], in one file with
//! the reason for each value; this module re-exports them for applications.

pub use strata_core::limits::*;
