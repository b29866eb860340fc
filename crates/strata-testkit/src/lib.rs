//! # strata-testkit
//!
//! Test tools shared by every Strata backend:
//!
//! - [`MemoryStore`]: the in-memory reference implementation of [`EventStore`] and
//!   [`SnapshotStore`], simple enough to be obviously correct. Other backends are compared
//!   against it.
//! - [`conformance`]: the conformance suite, written once, that every backend runs. Each rule
//!   is a case (`pub async fn` taking a fresh store); [`conformance_tests!`] turns them into one
//!   `#[test]` per case, each on its own multi-threaded Tokio runtime (two workers), so
//!   failures are reported per case and cases run in parallel.
//!
//! ## Running the suite against a backend
//!
//! In the backend's `tests/conformance.rs`, write an async function that returns a fresh,
//! empty store wrapped in a [`TestStore`] (with whatever must outlive the store, such as its
//! temporary directory, as the guard), and hand it to the macro:
//!
//! ```
//! use strata_testkit::{MemoryStore, TestStore};
//!
//! async fn make_store() -> TestStore<MemoryStore> {
//!     // A file-backed store would open itself in a temporary directory here and keep the
//!     // directory alive with `.with_guard(dir)`; a database-backed store would create a fresh
//!     // database or schema and drop it with `.with_teardown(async move { ... })`.
//!     TestStore::new(MemoryStore::new())
//! }
//!
//! strata_testkit::conformance_tests!(make_store);
//! # fn main() {}
//! ```
//!
//! A backend that implements only [`EventStore`] so far uses
//! [`event_store_conformance_tests!`] instead; [`snapshot_store_conformance_tests!`] is the
//! other half. One case can also be run by hand with [`conformance::run_case`].
//!
//! [`EventStore`]: strata_core::EventStore
//! [`SnapshotStore`]: strata_core::SnapshotStore
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod answers;
pub mod conformance;
pub mod harness;
mod memory;

pub use answers::{all_events, every_answer};
pub use conformance::TestStore;
pub use memory::MemoryStore;
