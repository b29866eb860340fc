//! The shared conformance suite against the embedded store: with the default segment size,
//! with tiny segments so that every case also crosses segment boundaries, and reading with
//! `pread` instead of through maps of the segment files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_log::{LogConfig, LogStore};
use strata_testkit::TestStore;

async fn make_store() -> TestStore<LogStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    TestStore::new(store).with_guard(dir)
}

strata_testkit::conformance_tests!(make_store);
strata_testkit::scavenge_conformance_tests!(make_store);

mod small_segments {
    use super::*;

    async fn make_store() -> TestStore<LogStore> {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_max_bytes: strata_log::limits::SEGMENT_MAX_BYTES_MIN,
            ..LogConfig::default()
        };
        let store = LogStore::open_with(dir.path(), config).unwrap();
        TestStore::new(store).with_guard(dir)
    }

    strata_testkit::conformance_tests!(make_store);
    strata_testkit::scavenge_conformance_tests!(make_store);
}

mod pread_reads {
    use super::*;

    async fn make_store() -> TestStore<LogStore> {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            map_reads: false,
            ..LogConfig::default()
        };
        let store = LogStore::open_with(dir.path(), config).unwrap();
        TestStore::new(store).with_guard(dir)
    }

    strata_testkit::conformance_tests!(make_store);
    strata_testkit::scavenge_conformance_tests!(make_store);
}
