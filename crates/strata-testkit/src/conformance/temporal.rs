//! Temporal queries: `position_at` and reads bounded by the position it returns.

use std::time::Duration;

use serde_json::json;
use strata_core::{
    EventData, EventStore, ExpectedVersion, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, Timestamp,
};

use super::support::*;

const STEP: Duration = Duration::from_millis(5);

async fn position_at<S: EventStore>(store: &S, at: Timestamp) -> Option<Position> {
    within("position_at", store.position_at(at))
        .await
        .unwrap_or_else(|e| panic!("position_at({at}) failed: {e:?}"))
}

/// The position of the last event recorded at or before `at`, computed from `all`.
fn expected_at(all: &[RecordedEvent], at: Timestamp) -> Option<Position> {
    all.iter()
        .rev()
        .find(|e| e.recorded_at <= at)
        .map(|e| e.position)
}

/// `position_at(t)` is the position of the last event recorded at or before `t`: `None` before
/// the first event, the head far in the future, and exact at every event's own timestamp.
pub async fn position_at_finds_last_event_at_or_before<S: EventStore + Clone>(store: S) {
    let now = now_micros();
    assert_eq!(
        position_at(&store, now).await,
        None,
        "an empty store has no position"
    );
    append(&store, &sid("a-1"), ExpectedVersion::Any, evs("E", 0, 1)).await;
    tokio::time::sleep(STEP).await;
    append(&store, &sid("b-1"), ExpectedVersion::Any, evs("E", 1, 3)).await;
    tokio::time::sleep(STEP).await;
    append(&store, &sid("a-1"), ExpectedVersion::Any, evs("E", 4, 1)).await;
    append(&store, &sid("a-1"), ExpectedVersion::Any, evs("E", 5, 1)).await;
    tokio::time::sleep(STEP).await;
    append(&store, &sid("c-1"), ExpectedVersion::Any, evs("E", 6, 2)).await;
    let all = all_events(&store).await;
    assert_eq!(all.len(), 8);
    assert!(
        all[0].recorded_at < all[1].recorded_at && all[3].recorded_at < all[4].recorded_at,
        "appends {STEP:?} apart get different recorded_at"
    );
    let micro = chrono::Duration::microseconds(1);
    for e in &all {
        let at = position_at(&store, e.recorded_at).await;
        assert_eq!(
            at,
            expected_at(&all, e.recorded_at),
            "position_at(recorded_at of position {})",
            e.position
        );
        assert!(
            at >= Some(e.position),
            "an event is visible at its own timestamp"
        );
        let just_before = position_at(&store, e.recorded_at - micro).await;
        assert_eq!(just_before, expected_at(&all, e.recorded_at - micro));
        assert!(just_before < Some(e.position));
    }
    assert_eq!(position_at(&store, all[0].recorded_at - micro).await, None);
    assert_eq!(
        position_at(&store, all[1].recorded_at - micro).await,
        Some(all[0].position),
        "between the first two appends"
    );
    let later = all[7].recorded_at + chrono::Duration::days(365);
    assert_eq!(position_at(&store, later).await, Some(all[7].position));
    assert_eq!(position_at(&store, later).await, head(&store).await);
}

/// A read bounded by `position_at(t)` shows the state as of `t`: the mission's "balance on
/// Jan 1st" query, for one stream and for `$all`.
pub async fn temporal_reads_as_of_a_position<S: EventStore + Clone>(store: S) {
    let account = sid("account-1");
    let amount = |t: &str, n: i64| EventData::json(t, &json!({ "amount": n })).expect("json");
    append(
        &store,
        &sid("order-1"),
        ExpectedVersion::Any,
        evs("Placed", 0, 1),
    )
    .await;
    tokio::time::sleep(STEP).await;
    append(
        &store,
        &account,
        ExpectedVersion::NoStream,
        vec![amount("Opened", 100)],
    )
    .await;
    tokio::time::sleep(STEP).await;
    append(
        &store,
        &account,
        ExpectedVersion::Exact(0),
        vec![amount("Deposited", 50)],
    )
    .await;
    append(
        &store,
        &sid("order-1"),
        ExpectedVersion::Any,
        evs("Paid", 1, 1),
    )
    .await;
    tokio::time::sleep(STEP).await;
    append(
        &store,
        &account,
        ExpectedVersion::Exact(1),
        vec![amount("Withdrawn", 30)],
    )
    .await;
    let events = stream_events(&store, &account).await;
    let balance = |events: &[RecordedEvent]| -> i64 {
        events
            .iter()
            .map(|e| {
                let n = e
                    .data_json()
                    .and_then(|v| v["amount"].as_i64())
                    .unwrap_or(0);
                if e.event_type == "Withdrawn" {
                    -n
                } else {
                    n
                }
            })
            .sum()
    };
    assert_eq!(balance(&events), 120);

    let t1 = events[1].recorded_at;
    let as_of = position_at(&store, t1).await.expect("a position at t1");
    let then = read_stream(
        &store,
        &account,
        ReadStreamOptions::forward().max_position(as_of),
    )
    .await;
    assert_eq!(then.len(), 2, "the stream as of the deposit");
    assert_eq!(balance(&then), 150, "the balance as of the deposit");
    let then_back = read_stream(
        &store,
        &account,
        ReadStreamOptions::backward().max_position(as_of),
    )
    .await;
    assert_eq!(then_back[0].event_type, "Deposited");

    let all = all_events(&store).await;
    let all_then = read_all_pages(&store, ReadAllOptions::forward().max_position(as_of)).await;
    let expected: Vec<_> = all
        .iter()
        .filter(|e| e.recorded_at <= t1)
        .cloned()
        .collect();
    assert_eq!(all_then, expected, "$all as of t1");
    assert!(all_then.len() < all.len());

    let before_account = all[0].recorded_at;
    let p0 = position_at(&store, before_account)
        .await
        .expect("the first order event");
    match store
        .read_stream(&account, ReadStreamOptions::forward().max_position(p0))
        .await
    {
        Err(ReadError::StreamNotFound(s)) => assert_eq!(s, account),
        other => panic!("the account did not exist yet at {p0}, got {other:?}"),
    }
}
