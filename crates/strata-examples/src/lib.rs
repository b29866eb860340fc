//! Whole small systems built with Strata, as examples: `cargo run --release -p strata-examples
//! --example bank` (also `orders`, `users`, `services`, `projections_rebuild`, `quickstart`).
//! The library itself is empty; the examples are the point.

#![forbid(unsafe_code)]
