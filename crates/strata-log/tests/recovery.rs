//! Reopening, torn tails, corruption, the lock file and the persisted index.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use strata_core::{EventData, EventStore, ExpectedVersion, ReadStreamOptions, StreamId};
use strata_log::{LogConfig, LogStore, OpenError};

fn ev(i: usize) -> EventData {
    EventData::json(
        "Deposited",
        &serde_json::json!({ "amount": i, "pad": "x".repeat(i % 50) }),
    )
    .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn append_n(store: &LogStore, streams: usize, n: usize) {
    rt().block_on(async {
        for i in 0..n {
            let s = StreamId::new(format!("account-{}", i % streams)).unwrap();
            store
                .append(&s, ExpectedVersion::Any, vec![ev(i)])
                .await
                .unwrap();
        }
    });
}

fn all_events(store: &LogStore) -> Vec<strata_core::RecordedEvent> {
    rt().block_on(strata_testkit::all_events(store, 1000))
}

/// A segment's bytes up to the end of its last record: the writer preallocates zeros after it.
/// Records end with their JSON payload (a non-zero byte) padded with zeros to 8 bytes.
/// Opens a store in `dir`, appends `n` events over `streams` streams, closes it and returns
/// every event it holds.
fn fill_and_close(dir: &Path, streams: usize, n: usize) -> Vec<strata_core::RecordedEvent> {
    let store = LogStore::open(dir).unwrap();
    append_n(&store, streams, n);
    all_events(&store)
}

fn without_preallocated_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let last_nonzero = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes.truncate(last_nonzero.div_ceil(8) * 8);
    bytes
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().unwrap()
}

#[test]
fn reopen_keeps_everything_with_and_without_index_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 16 * 1024,
        ..LogConfig::default()
    };
    let store = LogStore::open_with(dir.path(), config.clone()).unwrap();
    append_n(&store, 7, 500);
    let before = all_events(&store);
    assert_eq!(before.len(), 500);
    drop(store);
    assert!(
        std::fs::read_dir(dir.path().join("segments"))
            .unwrap()
            .count()
            > 3
    );

    let store = LogStore::open_with(dir.path(), config.clone()).unwrap();
    assert!(store.open_report().index_loaded);
    assert_eq!(store.open_report().events_scanned, 0);
    assert_eq!(all_events(&store), before);
    drop(store);

    // Without the index file, the sealed segments' own index files serve; the open one is
    // scanned.
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    let store = LogStore::open_with(dir.path(), config.clone()).unwrap();
    let sealed = segment_files(dir.path()).len() as u64 - 1;
    assert!(!store.open_report().index_loaded);
    assert_eq!(store.open_report().segment_indexes_loaded, sealed);
    assert!(store.open_report().events_scanned < 500 / sealed);
    assert_eq!(all_events(&store), before);
    drop(store);

    // Without any, the whole log is scanned.
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    for f in std::fs::read_dir(dir.path().join("segments")).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_some_and(|x| x == "idx") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let store = LogStore::open_with(dir.path(), config).unwrap();
    assert!(!store.open_report().index_loaded);
    assert_eq!(store.open_report().segment_indexes_loaded, 0);
    assert_eq!(store.open_report().events_scanned, 500);
    assert_eq!(all_events(&store), before);
    rt().block_on(async {
        let s = StreamId::new("account-3").unwrap();
        let evs = store
            .read_stream(&s, ReadStreamOptions::forward())
            .await
            .unwrap();
        assert_eq!(evs.len(), 71);
        assert!(evs
            .iter()
            .enumerate()
            .all(|(i, e)| e.stream_version == i as u64));
    });
}

#[test]
fn a_stale_index_file_is_caught_up_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    append_n(&store, 3, 100);
    store.checkpoint_index().unwrap();
    let saved = std::fs::read(dir.path().join("index.bin")).unwrap();
    append_n(&store, 3, 50);
    let before = all_events(&store);
    drop(store);
    std::fs::write(dir.path().join("index.bin"), saved).unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    assert!(store.open_report().index_loaded);
    assert_eq!(store.open_report().events_scanned, 50);
    assert_eq!(all_events(&store), before);
}

#[test]
fn a_second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = LogStore::open(dir.path()).unwrap();
    match LogStore::open(dir.path()) {
        Err(OpenError::Locked { .. }) => {}
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
}

/// Cut the last record at every byte offset, and fill the cut with zeros and with garbage:
/// the store opens with exactly the earlier records and accepts the next append.
#[test]
fn torn_tail_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let before = fill_and_close(dir.path(), 2, 5);
    let seg = last_segment(dir.path());
    let full = without_preallocated_zeros(std::fs::read(&seg).unwrap());
    // Append one more event and find where it starts.
    let store = LogStore::open(dir.path()).unwrap();
    append_n(&store, 2, 1);
    drop(store);
    let with_last = without_preallocated_zeros(std::fs::read(&seg).unwrap());
    let start = full.len();
    assert!(with_last.len() > start);
    let after = {
        let store = LogStore::open(dir.path()).unwrap();
        all_events(&store)
    };
    // The new record is whole once its unpadded bytes are there (padding is not covered).
    let unpadded = u32::from_le_bytes(with_last[start..start + 4].try_into().unwrap()) as usize;
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    let mut garbage_seed = 0x9e3779b97f4a7c15u64;
    for cut in start..with_last.len() {
        for fill in ["none", "zeros", "garbage"] {
            let mut bytes = with_last[..cut].to_vec();
            let pad = with_last.len() - cut;
            match fill {
                "zeros" => bytes.extend(std::iter::repeat_n(0u8, pad)),
                "garbage" => bytes.extend((0..pad).map(|_| {
                    garbage_seed ^= garbage_seed << 13;
                    garbage_seed ^= garbage_seed >> 7;
                    garbage_seed ^= garbage_seed << 17;
                    garbage_seed as u8
                })),
                _ => {}
            }
            std::fs::write(&seg, &bytes).unwrap();
            let _ = std::fs::remove_file(dir.path().join("index.bin"));
            let store = LogStore::open(dir.path())
                .unwrap_or_else(|e| panic!("cut at {cut} with {fill}: {e}"));
            let expected = if cut >= start + unpadded {
                &after
            } else {
                &before
            };
            assert_eq!(&all_events(&store), expected, "cut at {cut} with {fill}");
            // Zeros right after the last commit are the writer's preallocation, cut quietly;
            // anything else there is a torn write, reported.
            if cut < start + unpadded && (cut > start || fill == "garbage") {
                assert!(
                    store.open_report().truncated.is_some(),
                    "cut at {cut} with {fill}"
                );
            }
            // The next append lands right after the earlier records.
            rt().block_on(async {
                let s = StreamId::new("account-9").unwrap();
                let r = store
                    .append(&s, ExpectedVersion::NoStream, vec![ev(1)])
                    .await
                    .unwrap();
                assert_eq!(r.positions[0].0, expected.len() as u64);
            });
            drop(store);
            // Restore the original tail for the next round.
            std::fs::write(&seg, &full).unwrap();
        }
    }
}

#[test]
fn invalid_record_followed_by_valid_ones_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    append_n(&store, 2, 10);
    drop(store);
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    // Flip a byte inside the payload of the third record (records start at offset 64).
    let offset = 64 + 3 * 8 + 100;
    bytes[offset] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    match LogStore::open(dir.path()) {
        Err(OpenError::Corruption {
            file, offset: at, ..
        }) => {
            assert_eq!(file, seg);
            assert!(at > 64 && at <= offset as u64, "offset {at}");
        }
        other => panic!("expected Corruption, got {:?}", other.map(|_| ())),
    }
    assert!(strata_log::verify(dir.path()).is_err());
}

/// Fills a store in `dir` with 300 events in segments of 8 KiB, closes it and removes its
/// index file (the sealed segments keep theirs); returns its configuration.
fn sealed_segments_without_index_file(dir: &Path) -> LogConfig {
    let config = LogConfig {
        segment_max_bytes: 8 * 1024,
        ..LogConfig::default()
    };
    let store = LogStore::open_with(dir, config.clone()).unwrap();
    append_n(&store, 2, 300);
    drop(store);
    LogStore::wait_for_dropped();
    std::fs::remove_file(dir.join("index.bin")).unwrap();
    config
}

#[test]
fn corruption_in_a_sealed_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = sealed_segments_without_index_file(dir.path());
    let first = dir.path().join("segments").join(format!("{:020}.seg", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0x55; // inside the last record of a sealed segment
    std::fs::write(&first, &bytes).unwrap();
    match LogStore::open_with(dir.path(), config) {
        Err(OpenError::Corruption { file, .. }) => assert_eq!(file, first),
        other => panic!("expected Corruption, got {:?}", other.map(|_| ())),
    }
}

/// A record whose stream version does not carry its stream on refuses the open, even with a
/// valid CRC (what a faulty writer would leave): the index numbers a stream's events by their
/// order, so the record would be read under a version it does not hold.
#[test]
fn a_record_holding_another_version_of_its_stream_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    fill_and_close(dir.path(), 2, 10);
    // Without the index file, the open scans the log.
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    // The sixth record (account-1's third event, version 2) is written again as version 3.
    let (seg, off) = bump_version_of_record(&last_segment(dir.path()), 5, ("account-1", 2));
    let opened = LogStore::open(dir.path());
    assert_refused_at(
        opened,
        (seg, off),
        "stream account-1 holds version 3 where 2 was expected",
    );
}

/// Checks that `opened` is a corruption at `(file, offset)` whose reason holds `want`.
fn assert_refused_at(opened: Result<LogStore, OpenError>, at: (PathBuf, u64), want: &str) {
    match opened {
        Err(OpenError::Corruption {
            file,
            offset,
            reason,
        }) => {
            assert_eq!((file, offset), at);
            assert!(reason.contains(want), "{reason}");
        }
        other => panic!("expected Corruption, got {:?}", other.map(|_| ())),
    }
}

/// The same where the sealed segments come from their index files and only the last one is
/// scanned: the version expected counts the stream's events in the files.
#[test]
fn a_record_of_another_version_after_the_segment_index_files_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = sealed_segments_without_index_file(dir.path());
    let segments = segment_files(dir.path());
    assert!(segments.len() > 3, "{} segments", segments.len());
    for sealed in &segments[..segments.len() - 1] {
        assert!(
            sealed.with_extension("idx").exists(),
            "{}",
            sealed.display()
        );
    }
    // Its second record: account-0 or account-1, which has events in the sealed segments.
    let last = segments.last().unwrap();
    let (stream, version) = {
        let bytes = std::fs::read(last).unwrap();
        let salt = strata_log::format::SegmentHeader::decode(&bytes[..64])
            .unwrap()
            .salt;
        let first = strata_log::format::decode_record(salt, &bytes[64..]).unwrap();
        let r = strata_log::format::decode_record(salt, &bytes[64 + first.padded_len..]).unwrap();
        (r.stream_id.to_owned(), r.stream_version)
    };
    assert!(version > 50, "the stream has events before this segment");
    let (seg, off) = bump_version_of_record(last, 1, (&stream, version));
    let want = format!(
        "stream {stream} holds version {} where {version} was expected",
        version + 1
    );
    assert_refused_at(LogStore::open_with(dir.path(), config), (seg, off), &want);
}

/// Writes record `k` of segment file `seg` again with the next stream version and a valid
/// CRC, checking it is `(stream, version)`; returns the file and the record's offset.
fn bump_version_of_record(seg: &Path, k: usize, (stream, version): (&str, u64)) -> (PathBuf, u64) {
    use strata_log::format::{decode_record, RecordRef, SegmentHeader};
    let mut bytes = std::fs::read(seg).unwrap();
    let salt = SegmentHeader::decode(&bytes[..64]).unwrap().salt;
    let mut off = 64;
    for _ in 0..k {
        off += decode_record(salt, &bytes[off..]).unwrap().padded_len;
    }
    let mut rewritten = Vec::new();
    {
        let r = decode_record(salt, &bytes[off..]).unwrap();
        assert_eq!((r.stream_id, r.stream_version), (stream, version));
        RecordRef {
            stream_version: r.stream_version + 1,
            ..r.to_ref()
        }
        .encode_into(salt, &mut rewritten);
        assert_eq!(rewritten.len(), r.padded_len);
    }
    bytes[off..off + rewritten.len()].copy_from_slice(&rewritten);
    std::fs::write(seg, &bytes).unwrap();
    (seg.to_owned(), off as u64)
}

#[test]
fn verify_counts_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    append_n(&store, 4, 40);
    drop(store);
    let r = strata_log::verify(dir.path()).unwrap();
    assert_eq!(r.events, 40);
    assert_eq!(r.streams, 4);
    assert!(r.torn_tail.is_none());
}

#[test]
fn preallocated_tail_is_cut_quietly_and_sealed_segments_have_none() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill_and_close(dir.path(), 3, 30);
    // The tail segment carries zeros ahead of its last record.
    let seg = last_segment(dir.path());
    let on_disk = std::fs::read(&seg).unwrap();
    let data_end = without_preallocated_zeros(on_disk.clone()).len();
    assert!(
        on_disk.len() > data_end
            && on_disk.len() as u64 >= strata_log::limits::SEGMENT_PREALLOCATE_BYTES,
        "{} bytes on disk, {data_end} of records",
        on_disk.len()
    );
    // verify and a reopen see a clean end, not a torn write, and the file is cut back.
    assert!(strata_log::verify(dir.path()).unwrap().torn_tail.is_none());
    for use_index in [true, false] {
        if !use_index {
            std::fs::remove_file(dir.path().join("index.bin")).unwrap();
        }
        let store = LogStore::open(dir.path()).unwrap();
        assert!(store.open_report().truncated.is_none());
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), data_end as u64);
        assert_eq!(all_events(&store), written);
        drop(store);
    }

    // With small segments, every sealed segment ends at its last record.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 8 * 1024,
        ..LogConfig::default()
    };
    let store = LogStore::open_with(dir.path(), config.clone()).unwrap();
    append_n(&store, 2, 300);
    let written = all_events(&store);
    let last = last_segment(dir.path());
    let mut sealed = 0;
    // (Segment files only: an index file's last bytes, its CRC, may be zeros.)
    for path in segment_files(dir.path()) {
        if path == last {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() <= 8 * 1024, "{}", path.display());
        assert_eq!(
            without_preallocated_zeros(bytes.clone()),
            bytes,
            "{}",
            path.display()
        );
        sealed += 1;
    }
    assert!(sealed >= 3, "{sealed} sealed segments");
    // The tail is preallocated no further than the segment's maximum.
    assert!(std::fs::metadata(&last).unwrap().len() <= 8 * 1024);
    drop(store);
    let store = LogStore::open_with(dir.path(), config).unwrap();
    assert_eq!(all_events(&store), written);
    assert!(store.open_report().truncated.is_none());
}

/// Snapshot saves are not fdatasynced one by one: a crash may tear or lose the newest ones.
/// Open cuts the file at the first record that fails its checks and keeps the ones before.
#[test]
fn a_torn_snapshot_is_cut_and_the_earlier_ones_are_kept() {
    use strata_core::{Snapshot, SnapshotStore};
    let dir = tempfile::tempdir().unwrap();
    let stream = StreamId::new("account-1").unwrap();
    let snap = |version: u64| Snapshot {
        stream_id: stream.clone(),
        stream_version: version,
        schema_version: 1,
        data: format!(r#"{{"balance":{version}}}"#).into_bytes(),
        taken_at: strata_core::timestamp_from_micros(1_700_000_000_000_000),
    };
    let store = LogStore::open(dir.path()).unwrap();
    append_n(&store, 1, 30);
    rt().block_on(async {
        for v in [9, 19, 29] {
            store.save_snapshot(snap(v)).await.unwrap();
        }
    });
    drop(store);
    let path = dir.path().join("snapshots.log");
    let bytes = std::fs::read(&path).unwrap();
    // Each record starts with its length (u32 LE): find where the third one starts.
    let len_at = |off: usize| u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
    let third = len_at(0) + len_at(len_at(0));
    let record = bytes.len() - third;
    for torn in [
        bytes[..bytes.len() - 5].to_vec(),
        [&bytes[..third], &vec![0u8; record][..]].concat(),
        {
            let mut b = bytes.clone();
            b[third + 20] ^= 0xff;
            b
        },
    ] {
        std::fs::write(&path, &torn).unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        rt().block_on(async {
            let latest = store
                .load_snapshot(&stream, 1, None)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(latest.stream_version, 19);
            // The store goes on saving after the cut.
            store.save_snapshot(snap(29)).await.unwrap();
            let latest = store
                .load_snapshot(&stream, 1, None)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(latest.stream_version, 29);
        });
        drop(store);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
    // A delete is durable and survives a reopen.
    let store = LogStore::open(dir.path()).unwrap();
    rt().block_on(async {
        assert_eq!(store.delete_snapshots(&stream).await.unwrap(), 3);
    });
    drop(store);
    let store = LogStore::open(dir.path()).unwrap();
    rt().block_on(async {
        assert!(store
            .load_snapshot(&stream, 1, None)
            .await
            .unwrap()
            .is_none());
    });
}

/// A crash during the last batch's fdatasync may keep any of its pages: a hole inside it with
/// complete records after it. Those records were never acknowledged; the batch is cut, not
/// taken for corruption. Damage in an earlier batch, with later batches after it, still is.
#[test]
fn a_hole_in_the_torn_last_batch_is_cut_and_earlier_damage_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let before = fill_and_close(dir.path(), 2, 10);
    let seg = last_segment(dir.path());
    let batch_start = without_preallocated_zeros(std::fs::read(&seg).unwrap()).len();
    // The last batch: one append of 60 events, about 10 KiB.
    let store = LogStore::open(dir.path()).unwrap();
    rt().block_on(async {
        let s = StreamId::new("account-7").unwrap();
        store
            .append(&s, ExpectedVersion::Any, (0..60).map(ev).collect())
            .await
            .unwrap();
    });
    drop(store);
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let data_end = without_preallocated_zeros(bytes.clone()).len();
    // A lost stretch inside the last batch; its commit record after it is intact.
    let hole = batch_start + 1024;
    assert!(hole + 2048 + 1024 < data_end, "{batch_start} {data_end}");
    let mut torn = bytes.clone();
    torn[hole..hole + 2048].fill(0);
    std::fs::write(&seg, &torn).unwrap();
    let report = strata_log::verify(dir.path()).unwrap();
    // verify counts what open keeps, and names where open cuts: the end of the last whole
    // append, before the damaged one's intact first records.
    assert_eq!(report.events, before.len() as u64);
    let (_, cut_at, _) = report.torn_tail.clone().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    let (_, _, cut_to) = store.open_report().truncated.clone().unwrap();
    assert_eq!(cut_at, cut_to);
    assert_eq!(all_events(&store), before);
    drop(store);

    // The same damage in an earlier batch, with later batches after it: corruption.
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    rt().block_on(async {
        let s = StreamId::new("account-7").unwrap();
        store
            .append(&s, ExpectedVersion::Any, (0..60).map(ev).collect())
            .await
            .unwrap();
    });
    append_n(&store, 2, 10);
    drop(store);
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[1024..3072].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    assert!(matches!(
        LogStore::open(dir.path()),
        Err(OpenError::Corruption { .. })
    ));
    assert!(strata_log::verify(dir.path()).is_err());
}

/// The last record of a store may end at its unpadded length (a crash after its bytes, before
/// its padding): recovery keeps it, and a read of it is whole even when it is longer than a
/// read's first look at a record (so the rest is fetched on its own), mapped or not.
#[test]
fn a_long_last_record_without_its_padding_reads_whole() {
    let s = StreamId::new("account-1").unwrap();
    let mut checked = 0;
    for map_reads in [true, false] {
        let config = LogConfig {
            map_reads,
            ..LogConfig::default()
        };
        // One record of about 2 KiB, its length chosen so that it has padding to cut.
        for pad in 2_000..2_008 {
            let dir = tempfile::tempdir().unwrap();
            let store = LogStore::open_with(dir.path(), config.clone()).unwrap();
            let body = serde_json::json!({ "pad": "p".repeat(pad) });
            let e = EventData::json("Long", &body).unwrap();
            rt().block_on(store.append(&s, ExpectedVersion::NoStream, vec![e]))
                .unwrap();
            let before = all_events(&store);
            drop(store);
            let seg = last_segment(dir.path());
            let bytes = std::fs::read(&seg).unwrap();
            // The only record starts right after the 64-byte segment header.
            let unpadded = u32::from_le_bytes(bytes[64..68].try_into().unwrap()) as usize;
            if unpadded.is_multiple_of(8) {
                continue;
            }
            std::fs::write(&seg, &bytes[..64 + unpadded]).unwrap();
            let _ = std::fs::remove_file(dir.path().join("index.bin"));
            let store = LogStore::open_with(dir.path(), config.clone()).unwrap();
            let read = rt()
                .block_on(store.read_stream(&s, ReadStreamOptions::forward()))
                .unwrap();
            assert_eq!(read, before, "map_reads {map_reads}, pad {pad}");
            checked += 1;
            break;
        }
    }
    assert_eq!(
        checked, 2,
        "a record with padding to cut was found both times"
    );
}

/// The same, when the last record starts in one of the scan's 8 MiB read chunks and ends in the
/// next: the scan reads on from the record's start, and its unpadded bytes suffice there too.
#[test]
fn a_last_record_without_padding_across_a_scan_chunk_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = StreamId::new("blob-1").unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    rt().block_on(async {
        for i in 0..90 {
            // JSON strings of odd lengths, so records have padding.
            let e = EventData::json("Big", &"b".repeat(100_001 + i)).unwrap();
            store
                .append(&s, ExpectedVersion::Any, vec![e])
                .await
                .unwrap();
        }
    });
    drop(store);
    let seg = last_segment(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    // The records, from their length fields; the first one to cross 64 + 8 MiB.
    let chunk_end = 64 + 8 * 1024 * 1024;
    let mut at = 64usize;
    let mut kept = 0;
    let straddling = loop {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        assert!(len >= 64, "ran out of records before {chunk_end}");
        kept += 1;
        if at + len > chunk_end && !len.is_multiple_of(8) {
            break (at, len);
        }
        at += len.div_ceil(8) * 8;
    };
    assert!(straddling.0 < chunk_end);
    std::fs::write(&seg, &bytes[..straddling.0 + straddling.1]).unwrap();
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.open_report().events, kept);
    assert!(store.open_report().truncated.is_none());
}
