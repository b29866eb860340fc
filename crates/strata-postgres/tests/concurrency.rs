//! Concurrent conflicting appends at READ COMMITTED, through both the batched path and
//! transactions held open before commit: exactly one wins per expected version.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use strata_core::{
    AppendError, EventData, EventStore, ExpectedVersion, ReadStreamOptions, StreamId,
};
use tokio::sync::Barrier;

const TASKS: usize = 16;
const ROUNDS: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_append_wins_per_expected_version() {
    let (store, schema) = support::connect("race", |o| o.with_max_connections(24)).await;
    let isolation: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(isolation, "read committed");

    let s = StreamId::new("account-1").unwrap();
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let expected = match round {
                    0 => ExpectedVersion::NoStream,
                    r => ExpectedVersion::Exact(r * 2 - 1),
                };
                let events = vec![
                    EventData::json("Claimed", &json!({"task": task, "round": round})).unwrap(),
                    EventData::json("Extra", &json!({"task": task})).unwrap(),
                ];
                // Half the tasks hold their transaction open a little before committing.
                let result = if task % 2 == 0 {
                    store.append(&s, expected, events).await
                } else {
                    let hold = Duration::from_millis(1 + (task as u64 + round) % 4);
                    store
                        .append_holding_transaction(&s, expected, events, hold)
                        .await
                };
                match result {
                    Ok(r) => {
                        // Each winner's two events follow the previous round's two.
                        assert_eq!(r.stream_version, round * 2 + 1);
                        wins.push(round);
                    }
                    Err(AppendError::WrongExpectedVersion { actual, .. }) => {
                        assert_eq!(actual.0, Some(round * 2 + 1), "loser sees the winner");
                    }
                    Err(e) => panic!("unexpected error {e:?}"),
                }
                // Next round expects the version after this round's winner.
                barrier.wait().await;
            }
            wins
        }));
    }
    let mut winners = vec![0u32; ROUNDS as usize];
    for h in handles {
        for round in h.await.unwrap() {
            winners[round as usize] += 1;
        }
    }
    assert!(
        winners.iter().all(|&w| w == 1),
        "one winner per round: {winners:?}"
    );
    let events = store
        .read_stream(&s, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(events.len() as u64, ROUNDS * 2);
    for pair in events.chunks(2) {
        assert_eq!(pair[0].event_type, "Claimed");
        assert_eq!(pair[1].event_type, "Extra");
        assert_eq!(
            pair[0].data_json().unwrap()["task"],
            pair[1].data_json().unwrap()["task"]
        );
    }
    // No append left the critical section's advisory lock behind (losers took every path:
    // the one-statement append, the function, races retried one by one).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND a.application_name = 'strata'
                AND a.datname = current_database()",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if held == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{held} advisory locks still held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(store);
    support::drop_schema(schema).await;
}
