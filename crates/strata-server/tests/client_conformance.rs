//! The EventStore conformance suite against `strata_client::Client`, talking to this server
//! over a socket with the in-memory reference store behind it: what a program sees through the
//! HTTP API is what it would see from the store itself.
//!
//! One case is left out: `json_data_keeps_exact_bytes` appends JSON payloads with whitespace
//! around the value, which a `data` member cannot carry (docs/http-api.md, "Events"). The cases
//! are listed here rather than taken from `event_store_conformance_tests!` for that reason: a
//! case added to the suite is added here too.

use std::sync::Arc;

use strata_client::Client;
use strata_testkit::{MemoryStore, TestStore};

/// Stops the server when the case is over (on drop).
struct Server {
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn make_store() -> TestStore<Client> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    let state = strata_server::AppState::new(
        Arc::new(MemoryStore::new()),
        strata_server::ServerConfig::default(),
    )
    .expect("the default configuration is valid");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(strata_server::serve(
        listener,
        state.clone(),
        strata_server::app(state),
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    let client = Client::new(&url).expect("an http URL");
    TestStore::new(client).with_guard(Server { _stop: stop })
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                strata_testkit::conformance::run_case(
                    stringify!($case),
                    make_store,
                    strata_testkit::conformance::$case,
                );
            }
        )*
    };
}

cases!(
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
    binary_data_round_trips,
    recorded_event_is_the_same_through_every_read,
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
    concurrent_exact_appends_have_one_winner_per_version,
    concurrent_appends_to_one_stream_stay_atomic,
    concurrent_appends_to_many_streams_all_land,
    read_stream_forward_and_backward,
    read_stream_from_version_and_limit,
    read_stream_past_the_end,
    read_stream_max_position,
    read_stream_missing_is_not_found,
    read_stream_returns_only_its_stream,
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
    head_tracks_last_position,
    stream_info_missing_and_existing,
    list_streams_in_name_order_with_paging,
    list_streams_prefix_and_after,
    list_categories_with_counts_and_paging,
    list_empty_store,
    position_at_finds_last_event_at_or_before,
    temporal_reads_as_of_a_position,
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
    too_many_events_is_limit_error,
    data_too_large_is_limit_error,
    metadata_too_large_is_limit_error,
    append_too_many_bytes_is_limit_error,
    event_type_too_long_is_limit_error,
    stream_id_too_long_is_rejected,
    read_limits_are_enforced,
    bad_input_is_rejected_and_writes_nothing,
    soft_delete_hides_the_stream_and_versions_continue,
    delete_checks_its_stream,
    tombstone_ends_a_stream_for_good,
    tombstone_races_appends_without_losing_acknowledged_ones,
    delete_races_appends_at_most_one_wins,
    truncate_hides_events_below_a_version,
    stream_metadata_is_versioned,
    max_count_and_max_age_bound_what_is_read,
    reserved_names_are_refused,
    subscribers_are_told_of_lifecycle_changes,
    scavenge_removes_only_what_readers_cannot_see,
);

/// `Client::append_batch` over a real server: one result per append, in order, each typed as
/// a single append's would be; a batch refused whole is the outer error and writes nothing.
#[tokio::test]
async fn the_client_appends_a_batch_with_typed_results() {
    use strata_core::{
        ActualVersion, AppendError, EventData, EventStore, ExpectedVersion, ReadStreamOptions,
        StreamId,
    };
    let t = make_store().await;
    let client = &t.store;
    let (a, b) = (StreamId::new("a-1").unwrap(), StreamId::new("b-1").unwrap());
    let one = [EventData::json("A", &serde_json::json!({ "n": 1 })).unwrap()];
    let two = [one[0].clone(), one[0].clone()];
    let results = client
        .append_batch(&[
            (&a, ExpectedVersion::NoStream, &one),
            (&b, ExpectedVersion::Any, &two),
            (&a, ExpectedVersion::Exact(0), &one),
            (&b, ExpectedVersion::Exact(7), &one),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().unwrap().stream_version, 0);
    assert_eq!(results[1].as_ref().unwrap().positions.len(), 2);
    assert_eq!(results[2].as_ref().unwrap().stream_version, 1);
    match &results[3] {
        Err(AppendError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, &b);
            assert_eq!(*expected, ExpectedVersion::Exact(7));
            assert_eq!(*actual, ActualVersion(Some(1)));
        }
        other => panic!("{other:?}"),
    }
    let read = client
        .read_stream(&b, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(read.len(), 2);

    // Bad input anywhere refuses the whole batch before it is sent.
    let bad = [EventData::json("", &serde_json::json!(1)).unwrap()];
    let c = StreamId::new("c-1").unwrap();
    let e = client
        .append_batch(&[
            (&c, ExpectedVersion::Any, &one),
            (&c, ExpectedVersion::Any, &bad),
        ])
        .await
        .unwrap_err();
    assert!(matches!(e, AppendError::InvalidInput(_)), "{e:?}");
    assert!(client
        .read_stream(&c, ReadStreamOptions::forward())
        .await
        .is_err());
    assert!(matches!(
        client.append_batch(&[]).await,
        Err(AppendError::InvalidInput(_))
    ));
}
