//! The conformance suite: the rules every [`EventStore`] and [`SnapshotStore`] backend must
//! follow, written once.
//!
//! Each rule is a `pub async fn` here that takes a fresh, empty store and panics when the store
//! breaks the rule. A backend runs them all with [`conformance_tests!`](crate::conformance_tests)
//! (or the event-only and snapshot-only halves,
//! [`event_store_conformance_tests!`](crate::event_store_conformance_tests) and
//! [`snapshot_store_conformance_tests!`](crate::snapshot_store_conformance_tests)), which
//! expands to one `#[test]` per case so failures are reported per case and cases run in
//! parallel.
//!
//! What a case may assume of the store it is given:
//! - it is empty and no other case uses it;
//! - it allows at least 16 concurrent appends (a connection pool of 16 or more);
//! - positions increase but need not be dense or start at 0 (only [`crate::MemoryStore`]'s own
//!   tests check that).
//!
//! Every wait is bounded ([`WAIT`]), and so is every case ([`CASE_TIMEOUT`]), so a broken
//! backend fails instead of hanging.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

mod append;
mod concurrency;
mod idempotency;
mod info;
mod lifecycle;
mod limits;
mod read_all;
mod read_stream;
mod scavenge;
mod snapshots;
mod subscriptions;
mod support;
mod temporal;

pub use append::*;
pub use concurrency::*;
pub use idempotency::*;
pub use info::*;
pub use lifecycle::*;
pub use limits::*;
pub use read_all::*;
pub use read_stream::*;
pub use scavenge::*;
pub use snapshots::*;
pub use subscriptions::*;
pub use temporal::*;

#[allow(unused_imports)] // for doc links
use strata_core::{EventStore, SnapshotStore};

/// The longest a case may wait for any one thing (an event from a subscription, a task).
pub const WAIT: Duration = Duration::from_secs(20);

/// The longest one whole case may run.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(180);

/// Work to run after a case has passed, such as dropping a test database.
pub type Teardown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A store under test plus whatever keeps it alive: a temporary directory, a database that is
/// dropped afterwards, a server process. The guard is dropped after the case and after the
/// store, so a store that holds files is closed before its directory is removed.
///
/// ```
/// use strata_testkit::{MemoryStore, TestStore};
/// let dir = std::env::temp_dir(); // stands in for a `tempfile::TempDir`
/// let store = TestStore::new(MemoryStore::new()).with_guard(dir);
/// # let _ = store;
/// ```
pub struct TestStore<S> {
    /// The store the case runs against.
    pub store: S,
    guard: Option<Box<dyn Any + Send>>,
    teardown: Option<Teardown>,
}

impl<S> TestStore<S> {
    /// A store that needs nothing kept alive beside it.
    pub fn new(store: S) -> Self {
        TestStore {
            store,
            guard: None,
            teardown: None,
        }
    }

    /// Keeps `guard` alive until the case is over, then drops it (after the store).
    pub fn with_guard(mut self, guard: impl Any + Send) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }

    /// Runs `teardown` after the case passed (after the store was dropped, before the guard is).
    /// A failed case skips it, which leaves its data behind to look at.
    pub fn with_teardown(mut self, teardown: impl Future<Output = ()> + Send + 'static) -> Self {
        self.teardown = Some(Box::pin(teardown));
        self
    }
}

/// Runs one case: builds a multi-threaded Tokio runtime with two workers, makes a store with
/// `make`, runs `case` on it within [`CASE_TIMEOUT`], then tears the store down. Panics (fails
/// the test) when the case fails or times out. The macros call this; call it yourself to run
/// one case by hand.
pub fn run_case<S, M, MF, C, CF>(name: &str, make: M, case: C)
where
    M: FnOnce() -> MF,
    MF: Future<Output = TestStore<S>>,
    C: FnOnce(S) -> CF,
    CF: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a Tokio runtime for a conformance case");
    runtime.block_on(async {
        let TestStore {
            store,
            guard,
            teardown,
        } = make().await;
        if tokio::time::timeout(CASE_TIMEOUT, case(store))
            .await
            .is_err()
        {
            panic!("conformance case `{name}` did not finish within {CASE_TIMEOUT:?}");
        }
        if let Some(teardown) = teardown {
            teardown.await;
        }
        drop(guard);
    });
}

/// Expands to one `#[test]` per [`EventStore`] conformance case. See
/// [`conformance_tests!`](crate::conformance_tests).
#[macro_export]
macro_rules! event_store_conformance_tests {
    ($make:expr) => {
        $crate::__conformance_cases!(
            $make;
            // append and expected versions
            append_any_creates_and_extends,
            append_no_stream_creates_stream,
            append_no_stream_on_existing_stream_fails,
            append_stream_exists_on_missing_stream_fails,
            append_stream_exists_on_existing_stream,
            append_exact_on_missing_stream_fails,
            append_exact_matching_version,
            append_exact_wrong_version_fails,
            append_many_events_is_atomic_and_dense,
            positions_increase_across_streams,
            recorded_at_is_microseconds_and_non_decreasing,
            event_ids_are_assigned_v7_or_kept,
            json_data_and_metadata_round_trip,
            json_data_keeps_exact_bytes,
            binary_data_round_trips,
            recorded_event_is_the_same_through_every_read,
            // idempotent retries and event-id conflicts
            retry_with_exact_returns_original_result,
            retry_with_no_stream_returns_original_result,
            retry_with_any_or_stream_exists_after_later_appends,
            retry_at_wrong_place_is_conflict,
            reused_id_in_other_stream_is_conflict,
            reused_id_with_different_type_or_data_is_conflict,
            partial_retry_is_conflict,
            retry_out_of_order_is_conflict,
            new_first_id_with_used_later_id_is_conflict,
            matching_first_id_with_later_id_used_elsewhere_is_conflict,
            duplicate_id_in_one_append_is_invalid,
            // concurrency
            concurrent_exact_appends_have_one_winner_per_version,
            concurrent_appends_to_one_stream_stay_atomic,
            concurrent_appends_to_many_streams_all_land,
            // read_stream
            read_stream_forward_and_backward,
            read_stream_from_version_and_limit,
            read_stream_past_the_end,
            read_stream_max_position,
            read_stream_missing_is_not_found,
            read_stream_returns_only_its_stream,
            // read_all
            read_all_empty_store,
            read_all_forward_pages_reach_every_event_once,
            read_all_backward_pages_reach_every_event_once,
            read_all_from_is_inclusive,
            read_all_next_is_a_checkpoint,
            read_all_filter_event_types,
            read_all_filter_categories,
            read_all_filter_stream_prefix,
            read_all_filter_combinations,
            read_all_filtered_paging,
            read_all_max_position,
            read_all_scan_is_bounded,
            // info and listings
            head_tracks_last_position,
            stream_info_missing_and_existing,
            list_streams_in_name_order_with_paging,
            list_streams_prefix_and_after,
            list_categories_with_counts_and_paging,
            list_empty_store,
            // temporal
            position_at_finds_last_event_at_or_before,
            temporal_reads_as_of_a_position,
            // subscriptions
            subscribe_all_from_start_catches_up_then_goes_live,
            subscribe_all_from_end_gets_only_new_events,
            subscribe_all_after_position,
            subscribe_all_filtered,
            subscribe_stream_from_start,
            subscribe_stream_after_version_and_from_end,
            subscription_seam_has_no_gap_and_no_duplicate,
            subscription_batches_carry_a_checkpoint_across_the_seam,
            subscription_resumes_from_checkpoint,
            subscribe_with_mismatched_from_is_invalid,
            changes_signal_after_every_append,
            // limits and bad input
            too_many_events_is_limit_error,
            data_too_large_is_limit_error,
            metadata_too_large_is_limit_error,
            append_too_many_bytes_is_limit_error,
            event_type_too_long_is_limit_error,
            stream_id_too_long_is_rejected,
            read_limits_are_enforced,
            bad_input_is_rejected_and_writes_nothing,
            // stream lifecycle
            soft_delete_hides_the_stream_and_versions_continue,
            delete_checks_its_stream,
            tombstone_ends_a_stream_for_good,
            tombstone_races_appends_without_losing_acknowledged_ones,
            delete_races_appends_at_most_one_wins,
            a_delete_decided_on_a_stale_version_is_refused,
            truncate_hides_events_below_a_version,
            stream_metadata_is_versioned,
            max_count_and_max_age_bound_what_is_read,
            reserved_names_are_refused,
            subscribers_are_told_of_lifecycle_changes,
        );
    };
}

/// Expands to one `#[test]` per scavenging case (`strata_core::scavenge`), for a backend that
/// scavenges. See [`conformance_tests!`](crate::conformance_tests).
#[macro_export]
macro_rules! scavenge_conformance_tests {
    ($make:expr) => {
        $crate::__conformance_cases!(
            $make;
            scavenge_removes_only_what_readers_cannot_see,
        );
    };
}

/// Expands to one `#[test]` per [`SnapshotStore`] conformance case. See
/// [`conformance_tests!`](crate::conformance_tests).
#[macro_export]
macro_rules! snapshot_store_conformance_tests {
    ($make:expr) => {
        $crate::__conformance_cases!(
            $make;
            snapshot_round_trips,
            snapshot_load_takes_newest_at_or_below_max_version,
            snapshot_with_other_schema_version_is_ignored,
            snapshot_save_replaces_same_version,
            snapshot_delete_returns_count,
            snapshot_too_large_is_limit_error,
            snapshots_are_per_stream,
        );
    };
}

/// Runs the whole conformance suite against a backend: expands to one `#[test]` per case of
/// [`event_store_conformance_tests!`](crate::event_store_conformance_tests) and
/// [`snapshot_store_conformance_tests!`](crate::snapshot_store_conformance_tests).
///
/// `$make` is an expression callable with no arguments that returns a future of
/// [`TestStore<S>`](crate::TestStore), where `S: EventStore + SnapshotStore + Clone`: usually
/// the name of an `async fn make_store() -> TestStore<MyStore>`. It is called once per case and
/// must return a fresh, empty store each time.
///
/// The tests are named after the cases (`append_no_stream_creates_stream`, ...); invoke the
/// macro inside a module of its own if those names could clash with other tests in the file.
///
/// ```ignore
/// use strata_testkit::TestStore;
///
/// async fn make_store() -> TestStore<MyStore> {
///     let dir = tempfile::tempdir().unwrap();
///     let store = MyStore::open(dir.path()).await.expect("subscribe");
///     TestStore::new(store).with_guard(dir)
/// }
///
/// strata_testkit::conformance_tests!(make_store);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::event_store_conformance_tests!($make);
        $crate::snapshot_store_conformance_tests!($make);
        // The cases that need both halves.
        $crate::__conformance_cases!($make; snapshot_and_events_load_together);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::run_case(
                    ::core::stringify!($case),
                    $make,
                    $crate::conformance::$case,
                );
            }
        )*
    };
}
