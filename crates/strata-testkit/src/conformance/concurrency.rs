//! Concurrent appends: optimistic concurrency has exactly one winner; atomic appends never
//! interleave.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;
use strata_core::{AppendError, EventData, EventStore, ExpectedVersion};
use tokio::sync::Barrier;

use super::support::*;

const TASKS: usize = 16;
const ROUNDS: u64 = 25;

/// 16 tasks append to one stream with the same expected version, round after round (`NoStream`
/// first, then `Exact(round - 1)`): exactly one wins each round, the others get
/// `WrongExpectedVersion` with the winner's version, and the stream holds the winners' events.
pub async fn concurrent_exact_appends_have_one_winner_per_version<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for round in 0..ROUNDS {
                // Everyone finished the previous round before anyone starts this one.
                barrier.wait().await;
                let expected = match round {
                    0 => ExpectedVersion::NoStream,
                    r => ExpectedVersion::Exact(r - 1),
                };
                let event = EventData::json("Claimed", &json!({"task": task, "round": round}))
                    .expect("serialize");
                let result = store.append(&s, expected, vec![event]).await;
                outcomes.push((round, expected, result));
            }
            outcomes
        }));
    }
    let mut winners = vec![None; ROUNDS as usize];
    for (task, handle) in handles.into_iter().enumerate() {
        let outcomes = within("an appending task", handle)
            .await
            .expect("an appending task panicked");
        for (round, expected, result) in outcomes {
            match result {
                Ok(r) => {
                    assert_eq!(r.stream_version, round, "the winner of round {round}");
                    assert!(
                        winners[round as usize].replace((task, r)).is_none(),
                        "two appends expecting {expected} both succeeded in round {round}"
                    );
                }
                Err(AppendError::WrongExpectedVersion {
                    expected: e,
                    actual,
                    ..
                }) => {
                    assert_eq!(e, expected);
                    assert_eq!(
                        actual.0,
                        Some(round),
                        "a loser of round {round} sees the winner's version"
                    );
                }
                Err(other) => panic!("round {round}: unexpected error {other:?}"),
            }
        }
    }
    let events = stream_events(&store, &s).await;
    assert_eq!(events.len() as u64, ROUNDS, "one event per round");
    for (round, (event, winner)) in events.iter().zip(&winners).enumerate() {
        let (task, result) = winner
            .as_ref()
            .unwrap_or_else(|| panic!("nobody won round {round}"));
        assert_eq!(event.stream_version, round as u64);
        assert_eq!(event.position, result.positions[0]);
        assert_eq!(
            event.data_json(),
            Some(json!({"task": task, "round": round})),
            "the stored event is the winner's"
        );
    }
    assert_eq!(all_events(&store).await.len() as u64, ROUNDS);
}

/// Concurrent `Any` appends of several events to one stream all succeed, and each append's
/// events stay together: consecutive versions, not interleaved with another append's.
pub async fn concurrent_appends_to_one_stream_stay_atomic<S: EventStore + Clone>(store: S) {
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 12;
    const PER_APPEND: u64 = 3;
    let s = sid("order-1");
    let mut handles = Vec::new();
    for task in 0..WRITERS {
        let (store, s) = (store.clone(), s.clone());
        handles.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for seq in 0..APPENDS {
                let events = (0..PER_APPEND)
                    .map(|i| {
                        EventData::json("Line", &json!({"task": task, "seq": seq, "i": i}))
                            .expect("serialize")
                    })
                    .collect();
                let r = store
                    .append(&s, ExpectedVersion::Any, events)
                    .await
                    .unwrap_or_else(|e| panic!("Any append failed: {e:?}"));
                results.push((task, seq, r));
                tokio::task::yield_now().await;
            }
            results
        }));
    }
    let mut results = Vec::new();
    for handle in handles {
        results.extend(
            within("an appending task", handle)
                .await
                .expect("an appending task panicked"),
        );
    }
    let events = stream_events(&store, &s).await;
    assert_eq!(events.len() as u64, WRITERS * APPENDS * PER_APPEND);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.stream_version, i as u64, "versions stay dense");
    }
    assert_increasing_positions(&events, "one stream");
    let mut versions = HashSet::new();
    for (task, seq, r) in &results {
        assert!(
            versions.insert(r.stream_version),
            "two appends got one version"
        );
        let first = r.stream_version + 1 - PER_APPEND;
        for i in 0..PER_APPEND {
            let e = &events[(first + i) as usize];
            assert_eq!(e.position, r.positions[i as usize]);
            assert_eq!(
                e.data_json(),
                Some(json!({"task": task, "seq": seq, "i": i})),
                "the events of one append are consecutive"
            );
        }
    }
}

/// Concurrent appends to many streams all land: unique positions, dense versions per stream,
/// and `$all` holds exactly what was acknowledged.
pub async fn concurrent_appends_to_many_streams_all_land<S: EventStore + Clone>(store: S) {
    const APPENDS: u64 = 15;
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let s = sid(&format!("stream{}-{task}", task % 4));
            let mut version = None;
            let mut positions = Vec::new();
            for seq in 0..APPENDS {
                let expected = match version {
                    None => ExpectedVersion::NoStream,
                    Some(v) => ExpectedVersion::Exact(v),
                };
                let r = store
                    .append(&s, expected, evs("Step", seq * 10, 1 + seq % 2))
                    .await
                    .unwrap_or_else(|e| panic!("append to own stream {s} failed: {e:?}"));
                version = Some(r.stream_version);
                positions.extend(r.positions);
            }
            (s, version, positions)
        }));
    }
    let mut acknowledged = HashSet::new();
    let mut streams = Vec::new();
    for handle in handles {
        let (s, version, positions) = within("an appending task", handle)
            .await
            .expect("an appending task panicked");
        for p in positions {
            assert!(acknowledged.insert(p), "position {p} was given twice");
        }
        streams.push((s, version));
    }
    let all = all_events(&store).await;
    assert_increasing_positions(&all, "$all");
    let read: HashSet<_> = all.iter().map(|e| e.position).collect();
    assert_eq!(
        read, acknowledged,
        "$all holds exactly the acknowledged events"
    );
    for (s, version) in streams {
        let events = stream_events(&store, &s).await;
        assert_eq!(events.last().map(|e| e.stream_version), version);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.stream_version, i as u64);
        }
    }
}
