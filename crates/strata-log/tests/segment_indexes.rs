//! Sealed segments' index files: written when a segment is sealed, read on open instead of
//! scanning the segment, rebuilt when missing, torn, corrupt or not matching, and a record of
//! what was acknowledged that catches a log cut short.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use strata_core::{
    AppendError, EventData, EventStore, ExpectedVersion, Position, ReadAllOptions, RecordedEvent,
    StreamId, Uuid,
};
use strata_log::{LogConfig, LogStore, LossCause, OpenError};

/// Segments of 4 KiB: a few dozen events each.
fn config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 4096,
        ..LogConfig::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn ev(i: usize) -> EventData {
    EventData::json(
        format!("Type{}", i % 3),
        &serde_json::json!({ "amount": i, "pad": "x".repeat(i % 40) }),
    )
    .unwrap()
}

fn append_n(store: &LogStore, from: usize, n: usize) {
    rt().block_on(async {
        for i in from..from + n {
            let s = StreamId::new(format!("account-{}", i % 7)).unwrap();
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

fn open(dir: &Path) -> LogStore {
    LogStore::open_with(dir, config()).unwrap()
}

/// Closes the store: its writer ends after the sealed segments' index files are written.
fn close(store: LogStore) {
    rt().block_on(store.close()).unwrap();
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

fn segment_index(dir: &Path, no: u64) -> PathBuf {
    dir.join("segments").join(format!("{no:020}.idx"))
}

/// The data loss an open of `dir` is refused for.
fn refused_for_loss(dir: &Path) -> strata_log::DataLoss {
    let refused = LogStore::open_with(dir, config());
    let Err(OpenError::DataLoss(loss)) = refused else {
        panic!("expected data loss, got {:?}", refused.err());
    };
    loss
}

/// `verify` reports the same loss as open.
fn verify_reports(dir: &Path, loss: &strata_log::DataLoss) {
    match strata_log::verify(dir) {
        Err(OpenError::DataLoss(l)) => assert_eq!(&l, loss),
        other => panic!("verify: expected DataLoss, got {other:?}"),
    }
}

/// Makes the index file of segment `no` impossible to write (its temp file's name is taken by
/// a directory); returns that directory, to be removed to allow it again.
fn block_segment_index(dir: &Path, no: u64) -> PathBuf {
    let blocker = dir.join("segments").join(format!("{no:020}.tmp"));
    std::fs::create_dir(&blocker).unwrap();
    blocker
}

/// A store of `n` events over many sealed segments, closed, without its whole index file: a
/// reopen has only the segments' own index files (as after a crash between two closes).
fn filled(n: usize) -> (tempfile::TempDir, Vec<RecordedEvent>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append_n(&store, 0, n);
    let events = all_events(&store);
    close(store);
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    let sealed = files(dir.path(), "seg").len() as u64 - 1;
    assert!(sealed >= 12, "many sealed segments, got {sealed}");
    assert_eq!(
        files(dir.path(), "idx").len() as u64,
        sealed,
        "one per sealed segment"
    );
    (dir, events, sealed)
}

#[test]
fn a_reopen_reads_sealed_segments_from_their_index_files() {
    let (dir, events, sealed) = filled(600);
    let store = open(dir.path());
    let report = store.open_report().clone();
    assert!(!report.index_loaded);
    assert_eq!(report.segment_indexes_loaded, sealed);
    let tail_events = events.len() as u64 - report.events_scanned;
    assert!(
        report.events_scanned < 60,
        "only the open segment is scanned: {} of {} events",
        report.events_scanned,
        events.len()
    );
    assert!(tail_events > 0);
    assert_eq!(all_events(&store), events);
    // Streams, versions and expected-version checks come from the files too.
    rt().block_on(async {
        let s = StreamId::new("account-3").unwrap();
        let info = store.stream_info(&s).await.unwrap();
        let count = events.iter().filter(|e| e.stream_id == s).count() as u64;
        assert_eq!(info.current_version, Some(count - 1));
        let wrong = store
            .append(&s, ExpectedVersion::Exact(count - 2), vec![ev(1)])
            .await;
        assert!(matches!(
            wrong,
            Err(AppendError::WrongExpectedVersion { .. })
        ));
        store
            .append(&s, ExpectedVersion::Exact(count - 1), vec![ev(1)])
            .await
            .unwrap();
    });
    close(store);
    // The same store rebuilt from the log alone holds the same.
    let rebuilt = LogStore::open_with(
        dir.path(),
        LogConfig {
            use_index_file: false,
            ..config()
        },
    )
    .unwrap();
    assert_eq!(all_events(&rebuilt)[..events.len()], events[..]);
}

/// What is done to one segment's index file.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Missing,
    Torn,
    BitFlip,
    AnotherSegments,
    /// The same segment of another store that took the same appends: same positions and
    /// offsets, other salt and event ids.
    AnotherStores,
}

#[test]
fn a_missing_torn_corrupt_or_foreign_segment_index_is_rebuilt_from_its_segment() {
    for damage in [
        Damage::Missing,
        Damage::Torn,
        Damage::BitFlip,
        Damage::AnotherSegments,
        Damage::AnotherStores,
    ] {
        let (dir, events, sealed) = filled(500);
        let victim = segment_index(dir.path(), 4);
        match damage {
            Damage::Missing => std::fs::remove_file(&victim).unwrap(),
            Damage::Torn => {
                let b = std::fs::read(&victim).unwrap();
                std::fs::write(&victim, &b[..b.len() / 2]).unwrap();
            }
            Damage::BitFlip => {
                let mut b = std::fs::read(&victim).unwrap();
                let mid = b.len() / 2;
                b[mid] ^= 0x10;
                std::fs::write(&victim, &b).unwrap();
            }
            Damage::AnotherSegments => {
                std::fs::copy(segment_index(dir.path(), 5), &victim).unwrap();
            }
            Damage::AnotherStores => {
                let (other, _, _) = filled(500);
                std::fs::copy(segment_index(other.path(), 4), &victim).unwrap();
            }
        }
        let store = open(dir.path());
        let report = store.open_report().clone();
        assert_eq!(
            (
                report.segment_indexes_loaded,
                report.segment_indexes_missing
            ),
            (sealed - 1, 1),
            "{damage:?}: every sealed segment but 4 from its file; 4 scanned"
        );
        assert!(
            report.events_scanned < 500 / sealed * 3,
            "{damage:?}: {report:?}"
        );
        assert_eq!(all_events(&store), events, "{damage:?}");
        close(store);
        // Written again: the next open reads every sealed segment's file.
        std::fs::remove_file(dir.path().join("index.bin")).unwrap();
        let store = open(dir.path());
        assert_eq!(
            store.open_report().segment_indexes_loaded,
            sealed,
            "{damage:?}: the file was rebuilt"
        );
        assert_eq!(all_events(&store), events, "{damage:?}");
    }
}

/// Retries of `event` (first stored at `positions`) are answered with the first result, and
/// another event with its id is a conflict.
fn retried_as_first(store: &LogStore, stream: &StreamId, event: &EventData, first: &[Position]) {
    rt().block_on(async {
        let again = store
            .append(stream, ExpectedVersion::NoStream, vec![event.clone()])
            .await
            .unwrap();
        assert!(again.replayed, "a retry, answered with the first result");
        assert_eq!(again.positions, first);
        let other = store
            .append(
                stream,
                ExpectedVersion::Any,
                vec![ev(2).with_id(event.event_id.unwrap())],
            )
            .await;
        assert!(
            matches!(other, Err(AppendError::EventIdConflict { .. })),
            "{other:?}"
        );
    });
}

/// An id written ten segments ago is found in its segment's index file, while the store that
/// wrote it is open (its segment's ids left memory when the file was written) and after a
/// reopen; only the open segment's ids are in memory.
#[test]
fn an_id_written_ten_segments_ago_is_retried_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let stream = StreamId::new("payment-1").unwrap();
    let id = Uuid::from_u128(0x0123_4567_89ab_cdef);
    let event = ev(1).with_id(id);
    let first = rt()
        .block_on(store.append(&stream, ExpectedVersion::NoStream, vec![event.clone()]))
        .unwrap();
    append_n(&store, 0, 600);
    rt().block_on(store.wait_for_segment_indexes());
    let stats = store.index_stats();
    let sealed = files(dir.path(), "seg").len() as u64 - 1;
    assert!(sealed >= 10, "{sealed} sealed segments");
    assert_eq!(stats.event_id_files, sealed);
    assert!(stats.event_ids_in_memory < 601 / sealed * 2, "{stats:?}");
    retried_as_first(&store, &stream, &event, &first.positions);
    close(store);
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    let store = open(dir.path());
    assert!(store.open_report().segment_indexes_loaded >= 10);
    assert!(store.index_stats().event_ids_in_memory < 601 / sealed * 2);
    retried_as_first(&store, &stream, &event, &first.positions);
}

/// When the index file holding an id cannot be read while the store is open, an append
/// carrying that id is refused with a storage error: never written a second time. Ids the
/// files' filters rule out are still accepted.
#[test]
fn an_id_whose_index_file_cannot_be_read_is_refused_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let stream = StreamId::new("payment-1").unwrap();
    let event = ev(1).with_id(Uuid::from_u128(0x0123_4567_89ab_cdef));
    rt().block_on(store.append(&stream, ExpectedVersion::NoStream, vec![event.clone()]))
        .unwrap();
    append_n(&store, 0, 100);
    rt().block_on(store.wait_for_segment_indexes());
    let events = all_events(&store).len() as u64;
    // Cut short under the open store (which holds it open): the block holding the id is gone.
    // (Reads of the segment's entries, which the store maps from the same file, are no longer
    // trusted after this: the events are counted by the index.)
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_index(dir.path(), 0))
        .unwrap();
    file.set_len(64).unwrap();
    rt().block_on(async {
        let again = store
            .append(&stream, ExpectedVersion::Any, vec![event.clone()])
            .await;
        assert!(matches!(again, Err(AppendError::Storage(_))), "{again:?}");
        // A new id is accepted unless the cut file's filter lets it through (a false
        // positive, up to 3% of ids): then it is refused the same way. Of a few, one goes in.
        let mut accepted = false;
        for _ in 0..8 {
            let fresh = vec![ev(3).with_id(Uuid::now_v7())];
            match store.append(&stream, ExpectedVersion::Any, fresh).await {
                Ok(_) => {
                    accepted = true;
                    break;
                }
                Err(AppendError::Storage(_)) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        assert!(accepted, "no new id was accepted");
    });
    assert_eq!(store.index_stats().events, events + 1);
}

/// The last sealed segment and the open one deleted: without the whole index file, only the
/// sealed segment's index file knows its events were acknowledged.
#[test]
fn a_sealed_segment_lost_is_reported_from_its_index_file() {
    let (dir, events, sealed) = filled(500);
    std::fs::remove_file(
        dir.path()
            .join("segments")
            .join(format!("{:020}.seg", sealed)),
    )
    .unwrap();
    std::fs::remove_file(
        dir.path()
            .join("segments")
            .join(format!("{:020}.seg", sealed - 1)),
    )
    .unwrap();
    let loss = refused_for_loss(dir.path());
    assert_eq!(loss.cause, LossCause::SegmentMissing);
    let held = loss.from_position;
    assert!(held < events.len() as u64);
    let store = LogStore::open_with(
        dir.path(),
        LogConfig {
            accept_data_loss: true,
            ..config()
        },
    )
    .unwrap();
    assert_eq!(all_events(&store), events[..held as usize]);
    close(store);
    // Reported once: the index files that recorded the lost events are gone.
    let store = open(dir.path());
    assert_eq!(store.open_report().data_loss, None);
    assert_eq!(store.open_report().events, held);
}

/// The open segment deleted after a crash (so no whole index file past the last seal): the
/// last sealed segment's index file was written only once the segment after it existed,
/// durably, so its absence is a loss, as a whole index file written at the seal said before.
#[test]
fn the_open_segment_lost_is_reported_from_the_last_segment_index() {
    let (dir, events, sealed) = filled(500);
    let tail = dir
        .path()
        .join("segments")
        .join(format!("{sealed:020}.seg"));
    std::fs::remove_file(&tail).unwrap();
    let loss = refused_for_loss(dir.path());
    assert_eq!(
        (&loss.file, &loss.cause, loss.events_at_least),
        (&tail, &LossCause::SegmentMissing, 0)
    );
    assert!(loss.from_position < events.len() as u64);
    verify_reports(dir.path(), &loss);
}

/// A store whose segment index files were all lost opens by scanning its sealed segments (its
/// index file gives the open segment's events), and gets them written again in the
/// background, done by the time it is closed; the next open reads them. (A store of the
/// version before these files existed: `tests/fixture.rs`.)
#[test]
fn lost_segment_index_files_are_written_again() {
    let (dir, events, sealed) = filled(500);
    let store = open(dir.path());
    close(store);
    for f in files(dir.path(), "idx") {
        std::fs::remove_file(f).unwrap();
    }
    let store = open(dir.path());
    let report = store.open_report().clone();
    assert!(
        report.index_loaded,
        "the open segment's part, after the scanned ones"
    );
    assert!(report.events_scanned < 500, "{report:?}");
    assert_eq!(report.segment_indexes_missing, sealed);
    assert_eq!(all_events(&store), events);
    close(store);
    assert_eq!(files(dir.path(), "idx").len() as u64, sealed);
    let store = open(dir.path());
    assert!(store.open_report().index_loaded);
    assert_eq!(store.open_report().segment_indexes_loaded, sealed);
    assert_eq!(store.open_report().segment_indexes_missing, 0);
    assert!(store.open_report().events_scanned < 500 / sealed);
    assert_eq!(all_events(&store), events);
}

/// A segment index file whose checksum holds but which places two events in each other's
/// places: open does not use it (its entries are out of order) and `verify` names it.
#[test]
fn a_well_formed_segment_index_that_disagrees_with_its_segment_is_caught() {
    let (dir, events, _) = filled(500);
    let victim = segment_index(dir.path(), 3);
    let mut b = std::fs::read(&victim).unwrap();
    // Entries start at byte 64, 40 bytes each, the location first: swap the first two.
    let (first, second) = (b[64..72].to_vec(), b[104..112].to_vec());
    b[64..72].copy_from_slice(&second);
    b[104..112].copy_from_slice(&first);
    let body = b.len() - 4;
    let crc = crc32c::crc32c(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&victim, &b).unwrap();
    match strata_log::verify(dir.path()) {
        Err(OpenError::Corruption { file, .. }) => assert_eq!(file, victim),
        other => panic!("verify: expected the segment index named, got {other:?}"),
    }
    let store = open(dir.path());
    let sealed = files(dir.path(), "seg").len() as u64 - 1;
    assert_eq!(store.open_report().segment_indexes_loaded, sealed - 1);
    assert_eq!(all_events(&store), events);
}

/// A segment index file's temp file, left by a crash in the middle of writing it, is removed
/// on open; other files are left alone.
#[test]
fn a_half_written_segment_index_temp_file_is_removed_on_open() {
    let (dir, events, _) = filled(500);
    let temp = dir.path().join("segments").join(format!("{:020}.tmp", 2));
    std::fs::write(&temp, b"half an index file").unwrap();
    let other = dir.path().join("segments").join("notes.tmp");
    std::fs::write(&other, b"not ours").unwrap();
    let store = open(dir.path());
    assert!(!temp.exists(), "the temp file was removed");
    assert!(
        other.exists(),
        "a file that is not a segment index's temp file stays"
    );
    assert_eq!(all_events(&store), events);
}

/// A segment sealed right after an open whose last record had lost its padding (the file
/// ends where the record's bytes do) is sealed padded, so its index file matches it.
#[test]
fn a_segment_sealed_right_after_an_open_with_an_unpadded_last_record_matches_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let tail_of = |dir: &Path| files(dir, "seg").pop().unwrap();
    // Append until the last record has padding to lose (its bytes do not end on 8).
    let mut unpadded_end = None;
    for k in 0..8usize {
        let store = open(dir.path());
        let s = StreamId::new("account-1").unwrap();
        let e = EventData::json("Noted", &serde_json::json!({ "pad": "p".repeat(k) })).unwrap();
        rt().block_on(store.append(&s, ExpectedVersion::Any, vec![e]))
            .unwrap();
        close(store);
        let bytes = std::fs::read(tail_of(dir.path())).unwrap();
        let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
        if end % 8 != 0 {
            unpadded_end = Some(end as u64);
            break;
        }
    }
    let end = unpadded_end.expect("a record whose bytes do not end on 8");
    let tail = tail_of(dir.path());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tail)
        .unwrap()
        .set_len(end)
        .unwrap();
    // The first append after the open seals that segment at once (it does not fit).
    let store = open(dir.path());
    let s = StreamId::new("account-2").unwrap();
    let big = EventData::json("Big", &serde_json::json!({ "pad": "b".repeat(3950) })).unwrap();
    rt().block_on(store.append(&s, ExpectedVersion::Any, vec![big]))
        .unwrap();
    let events = all_events(&store);
    close(store);
    assert_eq!(
        std::fs::metadata(&tail).unwrap().len(),
        end.div_ceil(8) * 8,
        "sealed padded"
    );
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    let store = open(dir.path());
    let sealed = files(dir.path(), "seg").len() as u64 - 1;
    assert_eq!(store.open_report().segment_indexes_loaded, sealed);
    assert_eq!(all_events(&store), events);
}

/// A sealed segment whose index file cannot be written keeps its ids in memory (and so does
/// every later one, so that the ids in memory stay one run), and the index file written on
/// close holds them from that segment on. After the files are written, an index file from
/// before them is still used for the part past them.
#[test]
fn ids_stay_in_memory_while_their_segment_has_no_index_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append_n(&store, 0, 100);
    rt().block_on(store.wait_for_segment_indexes());
    let open_segment = files(dir.path(), "seg").len() as u64 - 1;
    let stats = store.index_stats();
    assert_eq!(stats.event_id_files, open_segment);
    // The open segment's first position: the ids before it are in files.
    let from = stats.events - stats.event_ids_in_memory;
    // The open segment's index file cannot be written once it is sealed: its temp file's
    // name is taken by a directory.
    let blocker = block_segment_index(dir.path(), open_segment);
    append_n(&store, 100, 200);
    rt().block_on(store.wait_for_segment_indexes());
    let events = all_events(&store);
    let sealed = files(dir.path(), "seg").len() as u64 - 1;
    assert!(sealed >= open_segment + 3, "{sealed} sealed segments");
    let stats = store.index_stats();
    assert_eq!(stats.event_id_files, open_segment, "{stats:?}");
    assert_eq!(stats.event_ids_in_memory, events.len() as u64 - from);
    close(store);
    std::fs::remove_dir(&blocker).unwrap();
    let early_index = std::fs::read(dir.path().join("index.bin")).unwrap();

    let store = open(dir.path());
    let report = store.open_report().clone();
    assert!(report.index_loaded);
    assert_eq!(report.events_scanned, 0);
    assert_eq!(report.segment_indexes_loaded, open_segment);
    assert_eq!(report.segment_indexes_missing, sealed - open_segment);
    rt().block_on(store.wait_for_segment_indexes());
    assert_eq!(store.index_stats().event_id_files, sealed);
    assert_eq!(all_events(&store), events);
    close(store);

    // The index file from before: segment index files now cover its first segments.
    std::fs::write(dir.path().join("index.bin"), early_index).unwrap();
    let store = open(dir.path());
    let report = store.open_report().clone();
    assert_eq!(report.segment_indexes_loaded, sealed);
    assert!(report.index_loaded, "used past the segment index files");
    assert_eq!(report.events_scanned, 0);
    assert_eq!(all_events(&store), events);
    let stats = store.index_stats();
    assert!(stats.event_ids_in_memory < (events.len() as u64) / sealed * 2);
}

/// Rewrites a file's trailing CRC32C to match its bytes.
fn fix_crc(b: &mut [u8]) {
    let body = b.len() - 4;
    let crc = crc32c::crc32c(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
}

/// A segment index file whose id section or entries disagree on an event id (checksum
/// fixed) is not used by open; one whose bloom filter misses its ids (open trusts the filter
/// to the checksum) is named by `verify`, which checks every id.
#[test]
fn verify_checks_the_ids_a_segment_index_gives() {
    let (dir, events, _) = filled(500);
    let victim = segment_index(dir.path(), 3);
    let good = std::fs::read(&victim).unwrap();
    let n = u64::from_le_bytes(good[40..48].try_into().unwrap()) as usize;
    let bloom_bytes = (n * 10).div_ceil(64).max(1) * 8;
    let bloom_at = good.len() - 4 - bloom_bytes;

    // Another id in the first entry: the id section no longer matches the entries.
    let mut b = good.clone();
    b[64 + 24] ^= 0x01;
    fix_crc(&mut b);
    std::fs::write(&victim, &b).unwrap();
    match strata_log::verify(dir.path()) {
        Err(OpenError::Corruption { file, .. }) => assert_eq!(file, victim),
        other => panic!("verify: expected the segment index named, got {other:?}"),
    }
    let store = open(dir.path());
    let sealed = files(dir.path(), "seg").len() as u64 - 1;
    assert_eq!(store.open_report().segment_indexes_loaded, sealed - 1);
    assert_eq!(all_events(&store), events);
    drop(store);

    // A filter with no bit set: open takes it, verify does not.
    let mut b = good.clone();
    b[bloom_at..good.len() - 4].fill(0);
    fix_crc(&mut b);
    std::fs::write(&victim, &b).unwrap();
    match strata_log::verify(dir.path()) {
        Err(OpenError::Corruption { file, reason, .. }) => {
            assert_eq!(file, victim);
            assert!(reason.contains("bloom filter"), "{reason}");
        }
        other => panic!("verify: expected the segment index named, got {other:?}"),
    }
    std::fs::write(&victim, &good).unwrap();
    assert!(strata_log::verify(dir.path()).is_ok());
}

/// A sealed segment whose index file could not be written is tried again at the next seal:
/// then its ids, and those of the segments sealed meanwhile, leave memory.
#[test]
fn a_segment_index_that_could_not_be_written_is_written_at_the_next_seal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append_n(&store, 0, 100);
    rt().block_on(store.wait_for_segment_indexes());
    let open_segment = files(dir.path(), "seg").len() as u64 - 1;
    let blocker = block_segment_index(dir.path(), open_segment);
    append_n(&store, 100, 200);
    rt().block_on(store.wait_for_segment_indexes());
    let sealed = files(dir.path(), "seg").len() as u64 - 1;
    assert!(sealed >= open_segment + 3, "{sealed} sealed segments");
    assert_eq!(store.index_stats().event_id_files, open_segment);
    assert!(!segment_index(dir.path(), open_segment).exists());
    std::fs::remove_dir(&blocker).unwrap();
    // Until the next seal.
    let before = files(dir.path(), "seg").len();
    let mut i = 300;
    while files(dir.path(), "seg").len() == before {
        append_n(&store, i, 1);
        i += 1;
    }
    rt().block_on(store.wait_for_segment_indexes());
    let sealed = files(dir.path(), "seg").len() as u64 - 1;
    let stats = store.index_stats();
    assert_eq!(stats.event_id_files, sealed, "{stats:?}");
    assert!(segment_index(dir.path(), open_segment).exists());
    assert!(
        stats.event_ids_in_memory < stats.events / sealed * 2,
        "{stats:?}"
    );
    close(store);
    assert!(strata_log::verify(dir.path()).is_ok());
}

/// The open segment deleted and the last sealed one cut short, with `index.bin` (which holds
/// only the open segment's events) present: the loss is reported where it starts, from the
/// sealed segment's own index file, not from where `index.bin` starts.
#[test]
fn a_loss_before_the_index_file_starts_is_reported_where_it_starts() {
    let (dir, _, _) = filled(500);
    // `filled` leaves no index.bin: close once more to write it.
    close(open(dir.path()));
    let sealed = files(dir.path(), "seg").len() as u64 - 1;
    let seg = |k: u64| dir.path().join("segments").join(format!("{k:020}.seg"));
    std::fs::remove_file(seg(sealed)).unwrap();
    let last_sealed = seg(sealed - 1);
    let len = std::fs::metadata(&last_sealed).unwrap().len();
    let cut = std::fs::OpenOptions::new()
        .write(true)
        .open(&last_sealed)
        .unwrap();
    cut.set_len(len - 100).unwrap();
    let loss = refused_for_loss(dir.path());
    assert_eq!(loss.file, last_sealed);
    assert_eq!(
        loss.cause,
        LossCause::Truncated {
            file_len: len - 100
        }
    );
    verify_reports(dir.path(), &loss);
}

/// A sealed segment scanned on open (its index file damaged) with the files of the later ones
/// used, and an open segment left without events (cut back to its header, the loss accepted):
/// the index file written at once after the cut holds no event, and the store opens; its
/// events are those before the cut, and the next open is clean.
#[test]
fn an_accepted_loss_with_a_scanned_middle_segment_opens() {
    let (dir, events, sealed) = filled(500);
    close(open(dir.path()));
    std::fs::remove_file(segment_index(dir.path(), 4)).unwrap();
    let tail = dir
        .path()
        .join("segments")
        .join(format!("{sealed:020}.seg"));
    let file = std::fs::OpenOptions::new().write(true).open(&tail).unwrap();
    file.set_len(64).unwrap();
    drop(file);
    assert!(matches!(
        LogStore::open_with(dir.path(), config()),
        Err(OpenError::DataLoss(_))
    ));
    let store = LogStore::open_with(
        dir.path(),
        LogConfig {
            accept_data_loss: true,
            ..config()
        },
    )
    .unwrap();
    let report = store.open_report().clone();
    assert!(report.data_loss.is_some());
    assert_eq!(report.segment_indexes_loaded, sealed - 1);
    let kept = all_events(&store);
    assert!(kept.len() < events.len());
    assert_eq!(kept[..], events[..kept.len()]);
    store.checkpoint_index().unwrap();
    close(store);
    let store = open(dir.path());
    assert!(store.open_report().data_loss.is_none());
    assert_eq!(all_events(&store), kept);
}

/// How many maps of index files in `dir` this process holds (from `/proc/self/maps`, Linux:
/// files removed or renamed over since are listed with " (deleted)" after their name).
fn mapped_index_files(dir: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("reading /proc/self/maps");
    let dir = dir.canonicalize().unwrap();
    let dir = dir.to_string_lossy();
    maps.lines()
        .filter(|l| l.contains(dir.as_ref()))
        .filter(|l| l.trim_end_matches(" (deleted)").ends_with(".idx"))
        .count()
}

/// Every read that uses a position's entry (where it lies, its time, stream and type), from
/// a store whose sealed segments' entries are read from their index files with `pread`
/// (segments too small for maps): compared with the reference model (times with the times
/// the records carry), before and after a reopen.
#[test]
fn sealed_segments_entries_are_read_from_their_files() {
    entries_read_from_files(config(), ev, false);
}

/// The same, with segments large enough to be mapped: the index files' entries are read
/// through maps, and only then.
#[test]
fn sealed_segments_entries_are_read_from_maps_of_their_files() {
    let config = LogConfig {
        segment_max_bytes: strata_log::limits::MAP_READS_SEGMENT_MIN_BYTES,
        ..LogConfig::default()
    };
    let big = big_event;
    entries_read_from_files(config.clone(), big, true);
    // The same size, with maps turned off: no index file is mapped.
    let unmapped = LogConfig {
        map_reads: false,
        ..config
    };
    entries_read_from_files(unmapped, big, false);
}

fn entries_read_from_files(config: LogConfig, ev: impl Fn(usize) -> EventData, mapped: bool) {
    use strata_core::{Filter, ReadStreamOptions};
    let dir = tempfile::tempdir().unwrap();
    let model = strata_testkit::MemoryStore::new();
    let streams = ["account-0", "account-1", "account-12", "order-0", "order-1"];
    let mut sent = Vec::new();
    let open = |dir: &Path| LogStore::open_with(dir, config.clone()).unwrap();
    let store = open(dir.path());
    rt().block_on(async {
        for i in 0..600 {
            let s = StreamId::new(streams[i % streams.len()]).unwrap();
            let e = vec![ev(i).with_id(Uuid::from_u128(i as u128 + 1))];
            let a = store.append(&s, ExpectedVersion::Any, e.clone()).await;
            let b = model.append(&s, ExpectedVersion::Any, e.clone()).await;
            assert_eq!(a.unwrap(), b.unwrap());
            sent.push((s, e));
        }
        store.wait_for_segment_indexes().await;
    });
    let check = |store: &LogStore| {
        let stats = store.index_stats();
        assert_eq!(stats.events, 600);
        assert!(stats.entry_files >= 10, "{stats:?}");
        assert!(stats.entries_in_memory < 100, "{stats:?}");
        let events = all_events(store);
        let key = |e: &RecordedEvent| (e.event_id, e.stream_id.clone(), e.stream_version);
        rt().block_on(async {
            let mut filters = vec![Filter::default()];
            for f in [
                Filter::default().categories(["order"]),
                Filter::default().event_types(["Type1"]),
                Filter::default().stream_prefix("account-1"),
                Filter::default()
                    .categories(["account", "order"])
                    .event_types(["Type2", "Type0"]),
                // Fewer positions of the type than of the category: the type's list is walked.
                Filter::default()
                    .categories(["account"])
                    .event_types(["Type1"]),
            ] {
                filters.push(f);
            }
            for filter in filters {
                for o in [ReadAllOptions::forward(), ReadAllOptions::backward()] {
                    let o = o.limit(1000).filter(filter.clone());
                    let a = store.read_all(o.clone()).await.unwrap();
                    let b = model.read_all(o).await.unwrap();
                    assert_eq!(
                        a.events.iter().map(key).collect::<Vec<_>>(),
                        b.events.iter().map(key).collect::<Vec<_>>(),
                        "{filter:?}"
                    );
                    assert!(!a.events.is_empty(), "{filter:?}");
                }
            }
            // Page by page (the lists' lookups and the prefix's runs carry on from a cursor),
            // both ways, up to a position too; names given twice; a prefix with lists.
            let paged = [
                Filter::default()
                    .categories(["order"])
                    .event_types(["Type1", "Type2"]),
                Filter::default()
                    .categories(["account"])
                    .event_types(["Type1", "Type1"]),
                Filter::default().categories(["order", "order"]),
                Filter::default().event_types(["Type0", "Type0"]),
                Filter::default()
                    .categories(["account"])
                    .stream_prefix("account-1"),
                Filter::default()
                    .event_types(["Type1"])
                    .stream_prefix("acc"),
                Filter::default().stream_prefix("order-"),
            ];
            for filter in paged {
                for (forward, limit, max) in
                    [(true, 7, None), (false, 3, Some(450)), (true, 1, Some(300))]
                {
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    for (out, from_model) in [(&mut a, false), (&mut b, true)] {
                        let mut o = if forward {
                            ReadAllOptions::forward()
                        } else {
                            ReadAllOptions::backward()
                        };
                        o = o.limit(limit).filter(filter.clone());
                        if let Some(max) = max {
                            o = o.max_position(Position(max));
                        }
                        loop {
                            let page = if from_model {
                                model.read_all(o.clone()).await.unwrap()
                            } else {
                                store.read_all(o.clone()).await.unwrap()
                            };
                            out.extend(page.events.iter().map(key));
                            match page.next {
                                Some(next) if !page.is_end => o = o.from(next),
                                _ => break,
                            }
                        }
                    }
                    assert_eq!(
                        a, b,
                        "{filter:?} forward {forward} limit {limit} max {max:?}"
                    );
                    assert!(a.len() > 30, "{filter:?}: {}", a.len());
                }
            }
            for s in streams {
                let s = StreamId::new(s).unwrap();
                for o in [
                    ReadStreamOptions::forward(),
                    ReadStreamOptions::backward(),
                    ReadStreamOptions::forward().from_version(57).limit(9),
                    ReadStreamOptions::backward().from_version(61).limit(7),
                ] {
                    let a = store.read_stream(&s, o.clone()).await.unwrap();
                    let b = model.read_stream(&s, o).await.unwrap();
                    assert_eq!(
                        a.iter().map(key).collect::<Vec<_>>(),
                        b.iter().map(key).collect::<Vec<_>>()
                    );
                }
                // The times the index keeps are those of the records.
                let info = store.stream_info(&s).await.unwrap();
                let mine: Vec<&RecordedEvent> =
                    events.iter().filter(|e| e.stream_id == s).collect();
                assert_eq!(info.first_recorded_at, Some(mine[0].recorded_at));
                assert_eq!(
                    info.last_recorded_at,
                    Some(mine.last().unwrap().recorded_at)
                );
                assert_eq!(info.last_position, Some(mine.last().unwrap().position));
            }
            for e in events.iter().step_by(37) {
                let expected = events
                    .iter()
                    .rev()
                    .find(|x| x.recorded_at <= e.recorded_at)
                    .map(|x| x.position);
                assert_eq!(store.position_at(e.recorded_at).await.unwrap(), expected);
            }
            // A retry of an append in the first segment answers from the entries in its file.
            let (s, e) = &sent[3];
            let again = store.append(s, ExpectedVersion::Any, e.clone()).await;
            let again = again.unwrap();
            assert_eq!((again.positions, again.replayed), (vec![Position(3)], true));
            let (s, e) = &sent[4];
            let elsewhere = store
                .append(&sent[0].0, ExpectedVersion::Any, e.clone())
                .await;
            assert!(
                matches!(elsewhere, Err(AppendError::EventIdConflict { .. })),
                "{elsewhere:?} (sent to {s} first)"
            );
        });
        assert_eq!(all_events(store).len(), 600);
        // Counted from /proc/self/maps: Linux only.
        if cfg!(target_os = "linux") {
            let expected = if mapped {
                store.index_stats().entry_files
            } else {
                0
            };
            assert_eq!(mapped_index_files(dir.path()) as u64, expected);
        }
    };
    check(&store);
    drop(store);
    let store = open(dir.path());
    let stats = store.index_stats();
    assert_eq!(
        store.open_report().segment_indexes_loaded,
        stats.entry_files
    );
    // The stream lists are compressed (8 bytes a position each before): the gaps here are
    // under 128, one byte each, plus the blocks' starts and the lists' spare room. The
    // category and type positions of sealed segments are read from their files' postings:
    // memory keeps a part of 80 bytes or less (with the parts' vector's spare room, up to
    // 100) and its fences (4 bytes per 1,024 postings) per name (a category and three types)
    // and file, and the open segment's few in memory.
    let named = stats.entry_files * 4 * (100 + 4) + 4 * 300;
    assert!(
        stats.position_list_bytes <= 600 * 2 + named,
        "{} bytes for 600 positions in {} files",
        stats.position_list_bytes,
        stats.entry_files
    );
    check(&store);
}

/// An index file changed on disk after the store checked it and opened it for reads (by
/// something other than the store) is reported as corruption, with the position, by the
/// reads that meet it; the store goes on serving and appending. Read with `pread` here
/// (small segments), through a map in the next test.
#[test]
fn an_index_file_changed_after_open_is_reported_as_corruption() {
    changed_after_open(config(), ev);
}

/// An index file cut short under the open store (by something other than it), read with
/// `pread` (small segments), is a storage error for the reads that need what was cut:
/// unfiltered, by type and by a wide stream prefix; earlier files still read. (Read
/// through a map, a cut file ends the process with SIGBUS, as a failing disk can.)
#[test]
fn an_index_file_cut_short_after_open_is_a_storage_error() {
    use strata_core::{Filter, ReadError};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    rt().block_on(async {
        for i in 0..400 {
            let s = StreamId::new(format!("account-{}", i % 70)).unwrap();
            store
                .append(&s, ExpectedVersion::Any, vec![ev(i)])
                .await
                .unwrap();
        }
        store.wait_for_segment_indexes().await;
    });
    assert!(store.index_stats().entry_files >= 5);
    let path = segment_index(dir.path(), 2);
    let bytes = std::fs::read(&path).unwrap();
    let first = u64::from_le_bytes(bytes[32..40].try_into().unwrap());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(64)
        .unwrap();
    rt().block_on(async {
        for filter in [
            Filter::default(),
            Filter::default().event_types(["Type1"]),
            Filter::default().stream_prefix("account-"),
        ] {
            let o = ReadAllOptions::forward()
                .from(Position(first))
                .limit(50)
                .filter(filter.clone());
            let read = store.read_all(o).await;
            assert!(
                matches!(read, Err(ReadError::Storage(_))),
                "{filter:?}: {read:?}"
            );
        }
        let before = store
            .read_all(ReadAllOptions::forward().limit(first as usize))
            .await
            .unwrap();
        assert_eq!(before.events.len() as u64, first);
    });
}

#[test]
fn a_mapped_index_file_changed_after_open_is_reported_as_corruption() {
    let config = LogConfig {
        segment_max_bytes: strata_log::limits::MAP_READS_SEGMENT_MIN_BYTES,
        ..LogConfig::default()
    };
    changed_after_open(config, big_event);
}

/// An event of about 20 KiB: a 1 MiB segment holds about 50.
fn big_event(i: usize) -> EventData {
    EventData::json(
        format!("Type{}", i % 3),
        &serde_json::json!({ "amount": i, "pad": "x".repeat(20_000 + i % 40) }),
    )
    .unwrap()
}

fn changed_after_open(config: LogConfig, ev: fn(usize) -> EventData) {
    use std::io::{Seek, SeekFrom, Write};
    use strata_core::ReadError;
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), config).unwrap();
    let mut sent = Vec::new();
    rt().block_on(async {
        for i in 0..400 {
            let s = StreamId::new(format!("account-{}", i % 7)).unwrap();
            let e = vec![ev(i).with_id(Uuid::from_u128(i as u128 + 1))];
            store
                .append(&s, ExpectedVersion::Any, e.clone())
                .await
                .unwrap();
            sent.push((s, e));
        }
        store.wait_for_segment_indexes().await;
    });
    assert!(store.index_stats().entry_files >= 5);
    let events = all_events(&store);
    // Segment 2's file: every entry's local stream number overwritten, in place.
    let path = segment_index(dir.path(), 2);
    let bytes = std::fs::read(&path).unwrap();
    let first = u64::from_le_bytes(bytes[32..40].try_into().unwrap());
    let n = u64::from_le_bytes(bytes[40..48].try_into().unwrap());
    assert!(n > 0);
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for k in 0..n {
        f.seek(SeekFrom::Start(64 + k * 40 + 16)).unwrap();
        f.write_all(&u32::MAX.to_le_bytes()).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let event_of = |p: u64| sent[p as usize].clone();
    rt().block_on(async {
        let read = store
            .read_all(ReadAllOptions::forward().from(Position(first)).limit(5))
            .await;
        match read {
            Err(ReadError::Corruption(c)) => assert_eq!(c.position, Some(Position(first))),
            other => panic!("expected corruption, got {other:?}"),
        }
        // Before the file, reads are whole.
        let before = store
            .read_all(ReadAllOptions::forward().limit(first as usize))
            .await
            .unwrap();
        assert_eq!(before.events.len() as u64, first);
        // A time inside the file: its search meets the changed entries.
        let middle = &events[(first + n / 2) as usize];
        assert!(middle.recorded_at < events[(first + n) as usize].recorded_at);
        match store.position_at(middle.recorded_at).await {
            Err(ReadError::Corruption(c)) => {
                assert!((first..first + n).contains(&c.position.unwrap().0), "{c}")
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        // A retry of an event of that file answers corruption, not a second write.
        let (s, e) = event_of(first + 1);
        match store.append(&s, ExpectedVersion::Any, e).await {
            Err(AppendError::Corruption(c)) => assert_eq!(c.position, Some(Position(first + 1))),
            other => panic!("expected corruption, got {other:?}"),
        }
        // The store goes on.
        let s = StreamId::new("account-new").unwrap();
        let r = store
            .append(&s, ExpectedVersion::NoStream, vec![ev(1)])
            .await
            .unwrap();
        assert_eq!(r.positions, vec![Position(400)]);
    });
}

/// Rewrites a version 3 segment index file as version 2 (the same, without the postings).
fn to_v2(path: &Path) {
    let b = std::fs::read(path).unwrap();
    let names = names_of(&b);
    let categories: std::collections::BTreeSet<&str> = names
        .streams
        .iter()
        .map(|s| strata_core::category_of(s))
        .collect();
    let postings = 4 * (names.streams.len() + names.types + categories.len()) + 12 * names.events;
    let mut out = b[..names.end].to_vec();
    out.extend_from_slice(&b[names.end + postings..b.len() - 4]);
    write_version(path, 2, out);
}

/// Rewrites a version 3 segment index file as version 1 (entries and names only).
fn to_v1(path: &Path) {
    let b = std::fs::read(path).unwrap();
    let names = names_of(&b);
    write_version(path, 1, b[..names.end].to_vec());
}

/// Where a version 3 segment index file `b`'s names end, and its stream ids.
struct Names {
    end: usize,
    streams: Vec<String>,
    types: usize,
    events: usize,
}

fn names_of(b: &[u8]) -> Names {
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let events = u64::from_le_bytes(b[40..48].try_into().unwrap()) as usize;
    let (s, t) = (u32_at(56), u32_at(60));
    let mut at = 64 + events * 40;
    let mut streams = Vec::new();
    for k in 0..s + t {
        let len = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
        if k < s {
            streams.push(String::from_utf8(b[at + 2..at + 2 + len].to_vec()).unwrap());
        }
        at += 2 + len;
    }
    Names {
        end: at,
        streams,
        types: t,
        events,
    }
}

/// Writes `body` (without its CRC) as a segment index file of version `version`.
fn write_version(path: &Path, version: u32, mut out: Vec<u8>) {
    out[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(path, out).unwrap();
}

/// Version 1 segment index files (before the id section) still record what they did: a lost
/// open segment is reported, as it was by that version.
#[test]
fn version_1_segment_index_files_still_record_losses() {
    old_files_record_losses(to_v1);
}

/// A store whose segment index files `to_old` rewrote in an earlier version passes `verify`
/// (they are checked against the log), and refuses to open, with `DataLoss`, once its open
/// segment is deleted: the old files record that the segment after each existed.
fn old_files_record_losses(to_old: fn(&Path)) {
    let (dir, _, sealed) = filled(500);
    for p in files(dir.path(), "idx") {
        to_old(&p);
    }
    strata_log::verify(dir.path()).expect("old files are checked against the log");
    std::fs::remove_file(
        dir.path()
            .join("segments")
            .join(format!("{sealed:020}.seg")),
    )
    .unwrap();
    let opened = LogStore::open_with(dir.path(), config());
    assert!(
        matches!(opened, Err(OpenError::DataLoss(_))),
        "opened without reporting the loss the old files record"
    );
}

/// A store written by the version before (segment index files of version 2, without
/// postings) opens: its segments are scanned, every event reads back, the files are written
/// again in version 3 and the next open loads them all; and what the version 2 files record
/// is still checked: a lost open segment is reported, as it was by that version.
#[test]
fn version_2_segment_index_files_are_written_again_and_still_record_losses() {
    let (dir, events, sealed) = filled(500);
    for p in files(dir.path(), "idx") {
        to_v2(&p);
    }
    let store = open(dir.path());
    assert_eq!(store.open_report().segment_indexes_loaded, 0);
    assert_eq!(store.open_report().segment_indexes_missing, sealed);
    assert_eq!(all_events(&store), events);
    close(store);
    let store = open(dir.path());
    assert_eq!(store.open_report().segment_indexes_loaded, sealed);
    assert_eq!(all_events(&store), events);
    drop(store);
    strata_log::LogStore::wait_for_dropped();
    old_files_record_losses(to_v2);
}

/// A segment index file (under a good CRC) whose stream postings give positions of one stream
/// to another (the two streams' postings, merged and split again at the first's count: both
/// counts as they were, each list increasing) is refused on open: its segment is scanned,
/// and both streams read as they did. The stream lists come from the postings, so a file that
/// passed would make them disagree with the log.
#[test]
fn stream_postings_that_disagree_with_the_entries_are_refused_on_open() {
    let (dir, _events, sealed) = filled(500);
    let read = |store: &LogStore, s: &StreamId| -> Vec<(String, u64)> {
        rt().block_on(async {
            let events = store
                .read_stream(s, strata_core::ReadStreamOptions::forward().limit(10_000))
                .await
                .unwrap();
            events
                .into_iter()
                .map(|e| (e.stream_id.to_string(), e.stream_version))
                .collect()
        })
    };
    let victim = segment_index(dir.path(), 3);
    let b = std::fs::read(&victim).unwrap();
    let names = names_of(&b);
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let (c0, c1) = (u32_at(names.end), u32_at(names.end + 4));
    assert!(c0 > 0 && c1 > 0, "both streams have events in segment 3");
    let categories = 1;
    let postings = names.end + 4 * (names.streams.len() + names.types + categories);
    let given: Vec<u32> = (0..c0 + c1)
        .map(|k| u32_at(postings + 4 * k) as u32)
        .collect();
    let mut merged = given.clone();
    merged.sort_unstable();
    assert_ne!(
        merged, given,
        "the two streams' events interleave in segment 3"
    );
    let mut out = b[..b.len() - 4].to_vec();
    for (k, p) in merged.iter().enumerate() {
        out[postings + 4 * k..postings + 4 * k + 4].copy_from_slice(&p.to_le_bytes());
    }
    let first = StreamId::new(names.streams[0].clone()).unwrap();
    let second = StreamId::new(names.streams[1].clone()).unwrap();
    let store = open(dir.path());
    let before = (read(&store, &first), read(&store, &second));
    close(store);
    write_version(&victim, 3, out);
    let store = open(dir.path());
    assert_eq!(
        (
            store.open_report().segment_indexes_loaded,
            store.open_report().segment_indexes_missing
        ),
        (sealed - 1, 1),
        "segment 3 scanned"
    );
    assert_eq!((read(&store, &first), read(&store, &second)), before);
}
