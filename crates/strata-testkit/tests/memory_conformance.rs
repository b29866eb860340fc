//! The conformance suite against the in-memory reference store.

use strata_testkit::{MemoryStore, TestStore};

async fn make_store() -> TestStore<MemoryStore> {
    TestStore::new(MemoryStore::new())
}

strata_testkit::conformance_tests!(make_store);
strata_testkit::scavenge_conformance_tests!(make_store);
