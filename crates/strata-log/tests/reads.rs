//! Long reads, which are split across threads: every event once, in the order asked, across
//! segment boundaries, forward and backward; through maps of the segment files (the default)
//! and with `pread`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_core::{
    EventData, EventStore, ExpectedVersion, Position, ReadAllOptions, ReadStreamOptions, StreamId,
};
use strata_log::limits::READ_PARALLEL_MIN_EVENTS;
use strata_log::{LogConfig, LogStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_reads_return_every_event_in_order_across_segments() {
    long_reads(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_reads_with_pread_return_every_event_in_order_across_segments() {
    long_reads(false).await;
}

async fn long_reads(map_reads: bool) {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 1024 * 1024,
        map_reads,
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

/// A read learns how long its records are and reads about that much from each next one; a
/// record longer than any before it (past the first read's size, past the largest size read
/// at once) is still read whole, in either direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scattered_records_of_growing_and_shrinking_sizes_read_whole() {
    growing_and_shrinking(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scattered_records_of_growing_and_shrinking_sizes_read_whole_with_pread() {
    growing_and_shrinking(false).await;
}

async fn growing_and_shrinking(map_reads: bool) {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        map_reads,
        ..LogConfig::default()
    };
    let store = LogStore::open_with(dir.path(), config).unwrap();
    let target = StreamId::new("target-1").unwrap();
    let other = StreamId::new("other-1").unwrap();
    // Sizes around the boundaries: tiny, just under/over 512, ~4 KiB, 20 KiB, then tiny again.
    let sizes = [
        1usize, 10, 400, 600, 10, 3_900, 4_200, 5, 20_000, 8, 450, 700, 30_000, 2,
    ];
    let filler = "f".repeat(9 * 1024);
    for (n, &size) in sizes.iter().enumerate() {
        let e = EventData::json(
            "Sized",
            &serde_json::json!({ "n": n, "pad": "p".repeat(size) }),
        )
        .unwrap();
        store
            .append(&target, ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
        // Another stream's large record in between, so the target's records lie apart.
        let f = EventData::json("Filler", &serde_json::json!({ "pad": filler })).unwrap();
        store
            .append(&other, ExpectedVersion::Any, vec![f])
            .await
            .unwrap();
    }
    let check = |events: Vec<strata_core::RecordedEvent>, order: Vec<usize>| {
        assert_eq!(events.len(), sizes.len());
        for (e, n) in events.iter().zip(order) {
            let body = e.data_json().unwrap();
            assert_eq!(body["n"].as_u64(), Some(n as u64));
            assert_eq!(body["pad"].as_str().map(str::len), Some(sizes[n]));
        }
    };
    let forward = store
        .read_stream(&target, ReadStreamOptions::forward())
        .await
        .unwrap();
    check(forward, (0..sizes.len()).collect());
    let backward = store
        .read_stream(&target, ReadStreamOptions::backward())
        .await
        .unwrap();
    check(backward, (0..sizes.len()).rev().collect());
}

/// A segment mapped by a read keeps growing: later reads see what was appended since (past
/// the map's length, past the writer's preallocation), and a segment sealed after it was
/// mapped (its preallocated zeros cut) still reads whole, before and after reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapped_reads_follow_a_growing_segment_and_its_sealing() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 3 * 1024 * 1024,
        ..LogConfig::default()
    };
    let stream = StreamId::new("account-1").unwrap();
    let pad = "g".repeat(2_000);
    let mut appended = 0u64;
    let store = LogStore::open_with(dir.path(), config.clone()).unwrap();
    // Each round appends about 400 KiB, reads everything, and checks it: the first rounds
    // grow the mapped segment, a later one seals it and starts the next.
    for _ in 0..12 {
        let batch: Vec<EventData> = (0..200)
            .map(|i| {
                EventData::json(
                    "Grew",
                    &serde_json::json!({ "n": appended + i, "pad": pad }),
                )
                .unwrap()
            })
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, batch)
            .await
            .unwrap();
        appended += 200;
        let events = store
            .read_stream(&stream, ReadStreamOptions::forward().limit(10_000))
            .await
            .unwrap();
        assert_eq!(events.len() as u64, appended);
        assert!(events
            .iter()
            .enumerate()
            .all(|(i, e)| e.data_json().unwrap()["n"].as_u64() == Some(i as u64)));
    }
    let segments = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .count();
    assert!(
        segments >= 2,
        "the test meant to seal a segment; {segments} segment(s)"
    );
    drop(store);
    let store = LogStore::open_with(dir.path(), config).unwrap();
    let events = store
        .read_stream(&stream, ReadStreamOptions::backward().limit(10_000))
        .await
        .unwrap();
    assert_eq!(events.len() as u64, appended);
    assert_eq!(
        events[0].data_json().unwrap()["n"].as_u64(),
        Some(appended - 1)
    );
}
