//! Long reads, which are split across threads: every event once, in the order asked, across
//! segment boundaries, forward and backward.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_core::limits::READ_PARALLEL_MIN_EVENTS;
use strata_core::{
    EventData, EventStore, ExpectedVersion, Position, ReadAllOptions, ReadStreamOptions, StreamId,
};
use strata_log::{LogConfig, LogStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_reads_return_every_event_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 1024 * 1024,
        ..LogConfig::default()
    };
    let store = LogStore::open_with(dir.path(), config).unwrap();
    let streams: Vec<StreamId> = (0..3)
        .map(|i| StreamId::new(format!("account-{i}")).unwrap())
        .collect();
    // Stream 0 gets every other event, each followed by a large one of stream 1 or 2, so its
    // records lie apart on disk and a read of it is split across threads.
    let total = 2 * (READ_PARALLEL_MIN_EVENTS + 17);
    let pad = "x".repeat(9 * 1024);
    let mut expected: Vec<Vec<u64>> = vec![Vec::new(); 3];
    for n in 0..total as u64 {
        let s = match n % 4 {
            0 | 2 => 0,
            1 => 1,
            _ => 2,
        };
        let body = if s == 0 {
            serde_json::json!({ "n": n })
        } else {
            serde_json::json!({ "n": n, "pad": pad })
        };
        let e = EventData::json("Counted", &body).unwrap();
        store
            .append(&streams[s], ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
        expected[s].push(n);
    }
    let n_of = |e: &strata_core::RecordedEvent| e.data_json().unwrap()["n"].as_u64().unwrap();

    let forward = store
        .read_stream(&streams[0], ReadStreamOptions::forward().limit(10_000))
        .await
        .unwrap();
    assert!(forward.len() >= READ_PARALLEL_MIN_EVENTS);
    assert_eq!(forward.iter().map(n_of).collect::<Vec<_>>(), expected[0]);
    assert!(forward
        .iter()
        .enumerate()
        .all(|(v, e)| e.stream_version == v as u64 && e.stream_id == streams[0]));
    let backward = store
        .read_stream(&streams[0], ReadStreamOptions::backward().limit(10_000))
        .await
        .unwrap();
    let mut reversed = expected[0].clone();
    reversed.reverse();
    assert_eq!(backward.iter().map(n_of).collect::<Vec<_>>(), reversed);

    let all = store
        .read_all(ReadAllOptions::forward().limit(10_000))
        .await
        .unwrap();
    assert_eq!(all.events.len(), total);
    assert!(all
        .events
        .iter()
        .enumerate()
        .all(|(i, e)| e.position == Position(i as u64) && n_of(e) == i as u64));
    let all_back = store
        .read_all(ReadAllOptions::backward().limit(10_000))
        .await
        .unwrap();
    assert!(all_back
        .events
        .iter()
        .enumerate()
        .all(|(i, e)| n_of(e) == (total - 1 - i) as u64));
}
