//! The library side of the `strata` command: what other crates and the fuzz targets reach
//! without running the binary. Today that is `strata serve`'s configuration resolver.

#![forbid(unsafe_code)]

pub mod config;
