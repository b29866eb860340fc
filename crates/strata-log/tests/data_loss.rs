//! Acknowledged data that goes missing from the log is never cut quietly: a segment shorter than
//! the index file says, a deleted newest segment, a zero-filled hole where the index file
//! records events, and damage to the records the index file covers all refuse to open (with
//! `OpenError::DataLoss` naming what is lost, or `OpenError::Corruption`), make `verify` fail,
//! and leave the files as they were. `LogConfig::accept_data_loss` opens anyway, cutting the
//! log where it is whole, and reports exactly what it cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use strata_core::{EventData, EventStore, ExpectedVersion, StreamId};
use strata_log::{DataLoss, LogConfig, LogStore, LossCause, OpenError};

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

fn append_n(store: &LogStore, n: usize) {
    rt().block_on(async {
        for i in 0..n {
            let s = StreamId::new(format!("account-{}", i % 3)).unwrap();
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

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

/// A record of a segment file: where it starts, its length without padding, its position.
#[derive(Debug, Clone, Copy)]
struct Rec {
    offset: u64,
    len: u64,
    position: u64,
}

/// The records of a segment file, read from their length fields (`docs/format.md`).
fn records(path: &Path) -> Vec<Rec> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 64usize;
    while at + 64 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len < 64 || at + len > bytes.len() {
            break;
        }
        let position = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        out.push(Rec {
            offset: at as u64,
            len: len as u64,
            position,
        });
        at += len.div_ceil(8) * 8;
    }
    out
}

fn expect_loss(r: Result<LogStore, OpenError>) -> DataLoss {
    match r {
        Err(OpenError::DataLoss(loss)) => loss,
        Err(other) => panic!("expected DataLoss, got {other}"),
        Ok(_) => panic!("expected DataLoss, the store opened"),
    }
}

fn accepting(config: LogConfig) -> LogConfig {
    LogConfig {
        accept_data_loss: true,
        ..config
    }
}

/// Opens with the override, checks what it reports and keeps, appends one more event at the
/// right position, then checks that a plain reopen and `verify` accept the result.
fn accept_and_check(
    dir: &Path,
    config: LogConfig,
    loss: &DataLoss,
    kept: &[strata_core::RecordedEvent],
) {
    let store = LogStore::open_with(dir, accepting(config.clone())).unwrap();
    assert_eq!(store.open_report().data_loss.as_ref(), Some(loss));
    assert_eq!(all_events(&store), kept);
    rt().block_on(async {
        let s = StreamId::new("account-new").unwrap();
        let r = store
            .append(&s, ExpectedVersion::NoStream, vec![ev(7)])
            .await
            .unwrap();
        assert_eq!(r.positions[0].0, kept.len() as u64);
    });
    drop(store);
    // The loss was accepted once: the next open, without the override, is clean.
    let store = LogStore::open_with(dir, config).unwrap();
    assert!(store.open_report().data_loss.is_none());
    assert_eq!(all_events(&store).len(), kept.len() + 1);
    drop(store);
    let report = strata_log::verify(dir).unwrap();
    assert_eq!(report.events, kept.len() as u64 + 1);
}

/// The last segment cut below the end the index file covers, inside a record and at a record
/// boundary: both refuse to open and name the file, the offset, the first lost position and
/// how many events are lost; nothing on disk changes until the override is given.
#[test]
fn a_tail_cut_below_the_index_end_refuses_to_open() {
    for cut_inside_a_record in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        append_n(&store, 200);
        let before = all_events(&store);
        drop(store);
        let seg = segments(dir.path()).pop().unwrap();
        let recs = records(&seg);
        assert_eq!(recs.len(), 200);
        let first_lost = recs[150];
        let cut = first_lost.offset + if cut_inside_a_record { 20 } else { 0 };
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(cut).unwrap();
        drop(f);

        let loss = expect_loss(LogStore::open(dir.path()));
        assert_eq!(loss.file, seg);
        assert_eq!(loss.offset, first_lost.offset);
        assert_eq!(loss.from_position, 150);
        assert_eq!(loss.events_at_least, 50);
        assert_eq!(loss.cause, LossCause::Truncated { file_len: cut });
        // Refusing changed nothing.
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), cut);
        assert!(dir.path().join("index.bin").exists());
        match strata_log::verify(dir.path()) {
            Err(OpenError::DataLoss(l)) => assert_eq!(l, loss),
            other => panic!("verify: expected DataLoss, got {other:?}"),
        }
        accept_and_check(dir.path(), LogConfig::default(), &loss, &before[..150]);
    }
}

/// Cutting only what the index does not need (the preallocated zeros, the last record's
/// padding) is no loss.
#[test]
fn cutting_zeros_and_padding_after_the_index_end_is_no_loss() {
    let s = StreamId::new("account-1").unwrap();
    for pad in 2_000..2_008 {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        append_n(&store, 10);
        let body = serde_json::json!({ "pad": "p".repeat(pad) });
        let e = EventData::json("Long", &body).unwrap();
        rt().block_on(store.append(&s, ExpectedVersion::Any, vec![e]))
            .unwrap();
        let before = all_events(&store);
        drop(store);
        let seg = segments(dir.path()).pop().unwrap();
        let last = *records(&seg).last().unwrap();
        if last.len.is_multiple_of(8) {
            continue;
        }
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(last.offset + last.len).unwrap();
        drop(f);
        assert_eq!(strata_log::verify(dir.path()).unwrap().events, 11);
        let store = LogStore::open(dir.path()).unwrap();
        assert!(store.open_report().index_loaded);
        assert_eq!(all_events(&store), before);
        return;
    }
    panic!("no record with padding to cut");
}

/// The newest segment file deleted: its acknowledged events are reported lost.
#[test]
fn a_deleted_newest_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 8 * 1024,
        ..LogConfig::default()
    };
    let store = LogStore::open_with(dir.path(), config.clone()).unwrap();
    append_n(&store, 300);
    let before = all_events(&store);
    drop(store);
    let segs = segments(dir.path());
    assert!(segs.len() >= 4, "{} segments", segs.len());
    let newest = segs.last().unwrap().clone();
    let first_in_newest = records(&newest)[0].position;
    std::fs::remove_file(&newest).unwrap();

    let loss = expect_loss(LogStore::open_with(dir.path(), config.clone()));
    assert_eq!(loss.file, newest);
    assert_eq!(loss.offset, 64);
    assert_eq!(loss.from_position, first_in_newest);
    assert_eq!(loss.events_at_least, 300 - first_in_newest);
    assert_eq!(loss.cause, LossCause::SegmentMissing);
    assert!(!newest.exists());
    match strata_log::verify(dir.path()) {
        Err(OpenError::DataLoss(l)) => assert_eq!(l, loss),
        other => panic!("verify: expected DataLoss, got {other:?}"),
    }
    accept_and_check(
        dir.path(),
        config.clone(),
        &loss,
        &before[..first_in_newest as usize],
    );

    // An index file that ends where the newest segment starts (written when it was created,
    // before events went into it): deleting that segment loses whatever was appended to it
    // after the index file, which nothing counts, and is refused all the same.
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), config.clone()).unwrap();
    append_n(&store, 300);
    drop(store);
    let newest = segments(dir.path()).pop().unwrap();
    let first_in_newest = records(&newest)[0].position;
    // Empty the newest segment (its records lost before any index file recorded them), so
    // that the index file written on close ends at its header.
    std::fs::remove_file(dir.path().join("index.bin")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    f.set_len(64).unwrap();
    drop(f);
    let store = LogStore::open_with(dir.path(), config.clone()).unwrap();
    assert_eq!(store.open_report().events, first_in_newest);
    drop(store);
    std::fs::remove_file(&newest).unwrap();
    let loss = expect_loss(LogStore::open_with(dir.path(), config));
    assert_eq!(loss.file, newest);
    assert_eq!(
        (loss.from_position, loss.events_at_least, &loss.cause),
        (first_in_newest, 0, &LossCause::SegmentMissing)
    );
}

/// The tail cut and zero-filled back to its length, with the index file present: the hole is
/// found on open, not when a read reaches it.
#[test]
fn a_zero_filled_hole_in_the_tail_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    append_n(&store, 200);
    let before = all_events(&store);
    drop(store);
    let seg = segments(dir.path()).pop().unwrap();
    let recs = records(&seg);
    let len = std::fs::metadata(&seg).unwrap().len();
    let hole = recs[120].offset + 20;
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(hole).unwrap();
    f.set_len(len).unwrap();
    drop(f);

    let loss = expect_loss(LogStore::open(dir.path()));
    assert_eq!(loss.file, seg);
    assert_eq!(loss.offset, recs[120].offset);
    assert_eq!(loss.from_position, 120);
    assert_eq!(loss.events_at_least, 80);
    match loss.cause {
        LossCause::Zeroed { from_offset } => {
            assert!(
                (recs[120].offset..=hole).contains(&from_offset),
                "zeros from {from_offset}, hole at {hole}"
            );
        }
        ref other => panic!("expected Zeroed, got {other:?}"),
    }
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    assert!(matches!(
        strata_log::verify(dir.path()),
        Err(OpenError::DataLoss(_))
    ));
    accept_and_check(dir.path(), LogConfig::default(), &loss, &before[..120]);

    // A hole exactly at a record boundary reads as the writer's preallocated zeros to a scan;
    // the index file still says events were there.
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    append_n(&store, 50);
    drop(store);
    let seg = segments(dir.path()).pop().unwrap();
    let recs = records(&seg);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[recs[30].offset as usize..].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    let loss = expect_loss(LogStore::open(dir.path()));
    assert_eq!(
        (loss.from_position, loss.events_at_least, &loss.cause),
        (
            30,
            20,
            &LossCause::Zeroed {
                from_offset: recs[30].offset
            }
        )
    );
}

/// A damaged record among those the index file covers in the tail segment, with valid records
/// after it: corruption, found on open (a scan from the index end would not look there).
#[test]
fn damage_inside_the_indexed_tail_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    append_n(&store, 100);
    drop(store);
    let seg = segments(dir.path()).pop().unwrap();
    let recs = records(&seg);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = recs[50].offset as usize + 70;
    bytes[at] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    for accept in [false, true] {
        let config = LogConfig {
            accept_data_loss: accept,
            ..LogConfig::default()
        };
        match LogStore::open_with(dir.path(), config) {
            Err(OpenError::Corruption { file, offset, .. }) => {
                assert_eq!(file, seg);
                assert_eq!(offset, recs[50].offset);
            }
            Err(other) => panic!("expected Corruption, got {other}"),
            Ok(_) => panic!("expected Corruption, the store opened"),
        }
    }
    assert!(matches!(
        strata_log::verify(dir.path()),
        Err(OpenError::Corruption { .. })
    ));
}

/// A sealed segment that no longer ends at its last indexed record (cut inside it, its end
/// zeroed, or grown) while the index file is present: the index file does not match the log,
/// the log is scanned, and the damage (in the middle of the log, so no override can cut it)
/// refuses to open.
#[test]
fn a_sealed_segment_of_another_length_refuses_to_open() {
    for change in ["cut", "cut and zero-filled", "grown"] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_max_bytes: 8 * 1024,
            ..LogConfig::default()
        };
        let store = LogStore::open_with(dir.path(), config.clone()).unwrap();
        append_n(&store, 300);
        drop(store);
        let first = segments(dir.path())[0].clone();
        let len = std::fs::metadata(&first).unwrap().len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap();
        match change {
            "cut" => f.set_len(len - 100).unwrap(),
            "cut and zero-filled" => {
                f.set_len(len - 100).unwrap();
                f.set_len(len).unwrap();
            }
            _ => f.set_len(len + 64).unwrap(),
        }
        drop(f);
        for accept in [false, true] {
            let config = LogConfig {
                accept_data_loss: accept,
                ..config.clone()
            };
            match LogStore::open_with(dir.path(), config) {
                Err(OpenError::Corruption { file, .. }) => assert_eq!(file, first, "{change}"),
                Err(other) => panic!("{change}: expected Corruption, got {other}"),
                Ok(_) => panic!("{change}: expected Corruption, the store opened"),
            }
        }
        assert!(strata_log::verify(dir.path()).is_err(), "{change}");
    }
}

/// What the index file covers is the limit of what can be checked: a tail cut at a record
/// boundary past it (acknowledged after the last checkpoint) looks like a log that simply
/// ended there. This pins that documented limit down.
#[test]
fn a_cut_past_the_index_end_at_a_record_boundary_is_not_detectable() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    append_n(&store, 20);
    store.checkpoint_index().unwrap();
    let saved = std::fs::read(dir.path().join("index.bin")).unwrap();
    append_n(&store, 10);
    drop(store);
    std::fs::write(dir.path().join("index.bin"), &saved).unwrap();
    let seg = segments(dir.path()).pop().unwrap();
    let recs = records(&seg);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(recs[25].offset).unwrap();
    drop(f);
    assert_eq!(strata_log::verify(dir.path()).unwrap().events, 25);
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(all_events(&store).len(), 25);
    drop(store);
    // A cut below the index end is caught; the events after the index end are counted in
    // "at least" only as far as the index file knew them.
    std::fs::write(dir.path().join("index.bin"), &saved).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(recs[15].offset).unwrap();
    drop(f);
    let loss = expect_loss(LogStore::open(dir.path()));
    assert_eq!((loss.from_position, loss.events_at_least), (15, 5));
}
