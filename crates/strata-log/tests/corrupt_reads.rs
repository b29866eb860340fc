//! A damaged record inside a sealed segment, with the index file present: the store opens (only
//! each sealed segment's last record is checked on open), and every read that reaches the
//! record answers `ReadError::Corruption` naming its file, offset and position, through maps
//! and with `pread`, on every read path: stream and `$all` reads in both directions, reads
//! split across threads, subscriptions, and the lookup behind an idempotent retry. Other reads
//! keep working; `verify` reports the record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use strata_core::{
    AppendError, Corruption, CorruptionLocation, EventData, EventStore, ExpectedVersion, Filter,
    Position, ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent, StreamId, SubscribeFrom,
    SubscriptionTarget, Uuid,
};
use strata_log::limits::READ_PARALLEL_MIN_EVENTS;
use strata_log::{LogConfig, LogStore, OpenError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_a_typed_error_on_every_mapped_read_path() {
    corrupt_record_reads(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_a_typed_error_on_every_pread_path() {
    corrupt_record_reads(false).await;
}

fn first_segment(dir: &Path) -> PathBuf {
    dir.join("segments").join(format!("{:020}.seg", 0))
}

/// (offset, unpadded length, position, stream id) of every record of a segment file.
fn records(bytes: &[u8]) -> Vec<(usize, usize, u64, String)> {
    let mut out = Vec::new();
    let mut at = 64;
    while at + 64 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len < 64 || at + len > bytes.len() {
            break;
        }
        let position = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        let sid_len = u16::from_le_bytes(bytes[at + 56..at + 58].try_into().unwrap()) as usize;
        let sid = String::from_utf8(bytes[at + 64..at + 64 + sid_len].to_vec()).unwrap();
        out.push((at, len, position, sid));
        at += len.div_ceil(8) * 8;
    }
    out
}

async fn corrupt_record_reads(map_reads: bool) {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 1024 * 1024,
        map_reads,
        ..LogConfig::default()
    };
    let small = StreamId::new("account-0").unwrap();
    let large = StreamId::new("account-1").unwrap();
    let store = LogStore::open_with(dir.path(), config.clone()).unwrap();
    // Small events of one stream between large ones of another, so a long read of the first
    // is split across threads. Appended concurrently (one fdatasync per batch), each with its
    // own id.
    let total = 2 * (READ_PARALLEL_MIN_EVENTS + 17);
    let pad = "x".repeat(9 * 1024);
    let mut tasks = Vec::new();
    for n in 0..total {
        let store = store.clone();
        let (stream, body, kind) = if n % 2 == 0 {
            (small.clone(), serde_json::json!({ "n": n }), "Small")
        } else {
            (
                large.clone(),
                serde_json::json!({ "n": n, "pad": pad }),
                "Large",
            )
        };
        let e = EventData::json(kind, &body)
            .unwrap()
            .with_id(Uuid::from_u128(n as u128 + 1));
        tasks.push(tokio::spawn(async move {
            store
                .append(&stream, ExpectedVersion::Any, vec![e])
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all: Vec<RecordedEvent> = store
        .read_all(ReadAllOptions::forward().limit(10_000))
        .await
        .unwrap()
        .events;
    assert_eq!(all.len(), total);
    // The small events lie apart on disk (a large one between most neighbours), so a long read
    // of their stream is split across threads where the machine has two cores or more.
    let small_positions: Vec<u64> = all
        .iter()
        .filter(|e| e.stream_id == small)
        .map(|e| e.position.0)
        .collect();
    let apart = small_positions
        .windows(2)
        .filter(|w| w[1] > w[0] + 1)
        .count();
    assert!(apart >= READ_PARALLEL_MIN_EVENTS / 2, "{apart} apart");
    drop(store);

    // Damage the payload of a small event in the middle of segment 0 (sealed).
    let seg = first_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let recs = records(&bytes);
    // How many depends on how the concurrent appends were batched (a batch never spans two
    // segments; a busy machine makes fewer, larger batches): enough for a small event in the
    // second half with records after it.
    assert!(recs.len() >= 8, "{} records in segment 0", recs.len());
    let &(offset, len, p, _) = recs[recs.len() / 2..]
        .iter()
        .find(|r| r.3 == small.as_str())
        .unwrap();
    assert!(p + 2 < recs.last().unwrap().2, "not the last record");
    bytes[offset + len - 3] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let damaged = all[p as usize].clone();
    assert_eq!(damaged.position, Position(p));

    let store = LogStore::open_with(dir.path(), config).unwrap();
    assert!(store.open_report().index_loaded);
    // The segment file and offset, in the embedded log's terms, for the operator.
    let at_the_record = CorruptionLocation::LogFile {
        file: seg.clone(),
        offset: offset as u64,
    };
    let is_it = |e: ReadError, path: &str| match e {
        ReadError::Corruption(Corruption {
            location, position, ..
        }) => {
            assert_eq!(position, Some(Position(p)), "{path}");
            assert_eq!(location, at_the_record, "{path}");
        }
        other => panic!("{path}: expected Corruption, got {other:?}"),
    };

    // Stream reads: long (split across threads), both directions, and a short one.
    let e = store
        .read_stream(&small, ReadStreamOptions::forward().limit(10_000))
        .await
        .unwrap_err();
    is_it(e, "long stream read forward");
    let e = store
        .read_stream(&small, ReadStreamOptions::backward().limit(10_000))
        .await
        .unwrap_err();
    is_it(e, "long stream read backward");
    let e = store
        .read_stream(
            &small,
            ReadStreamOptions::forward()
                .from_version(damaged.stream_version.saturating_sub(2))
                .limit(5),
        )
        .await
        .unwrap_err();
    is_it(e, "short stream read");
    // `$all`: forward pages, backward, filtered.
    let mut from = Position(0);
    let e = loop {
        match store
            .read_all(ReadAllOptions::forward().from(from).limit(100))
            .await
        {
            Ok(page) => {
                assert!(!page.is_end, "the damaged record was read without an error");
                from = page.next.unwrap();
            }
            Err(e) => break e,
        }
    };
    is_it(e, "$all forward");
    let e = store
        .read_all(ReadAllOptions::backward().from(Position(p + 3)).limit(10))
        .await
        .unwrap_err();
    is_it(e, "$all backward");
    let e = store
        .read_all(
            ReadAllOptions::forward()
                .filter(Filter::default().event_types(["Small"]))
                .limit(10_000),
        )
        .await
        .unwrap_err();
    is_it(e, "$all filtered");
    // Reads that do not reach the record are served.
    let other = store
        .read_stream(&large, ReadStreamOptions::forward().limit(10_000))
        .await
        .unwrap();
    assert_eq!(other.len(), total / 2);
    // A subscription delivers up to the record, then fails with it.
    let mut sub = store
        .subscribe(
            SubscriptionTarget::All(Filter::default()),
            SubscribeFrom::Start,
        )
        .await
        .unwrap();
    let mut delivered = 0u64;
    let e = loop {
        match sub.next().await {
            Ok(ev) => {
                assert_eq!(ev.position, Position(delivered));
                delivered += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(delivered <= p);
    is_it(e, "subscription");
    drop(sub);
    // Retrying the damaged event's append must compare it with what is stored.
    let retry = EventData::json("Small", &damaged.data_json().unwrap())
        .unwrap()
        .with_id(damaged.event_id);
    match store
        .append(&small, ExpectedVersion::Any, vec![retry])
        .await
        .unwrap_err()
    {
        AppendError::Corruption(Corruption {
            location, position, ..
        }) => {
            assert_eq!(position, Some(Position(p)));
            assert_eq!(location, at_the_record);
        }
        other => panic!("retry: expected Corruption, got {other:?}"),
    }
    drop(store);
    match strata_log::verify(dir.path()) {
        Err(OpenError::Corruption {
            file, offset: at, ..
        }) => {
            assert_eq!(file, seg);
            assert_eq!(at, offset as u64);
        }
        other => panic!("verify: expected Corruption, got {other:?}"),
    }
}
