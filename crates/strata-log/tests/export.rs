//! Segments written from another backend's events ([`SegmentWriter`]): gaps in positions and
//! one removed run per stream, a directory of them opening as a store that answers with
//! exactly those events, runs that start below a stream's next version made to start there by
//! the restore's reconciliation, and events that cannot make a segment refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;

use strata_core::{
    EventStore, Metadata, Position, ReadStreamOptions, RecordedEvent, StreamId, Uuid,
};
use strata_log::{ExportError, LogStore, SegmentWriter};

fn event(position: u64, stream: &str, version: u64, at_us: i64) -> RecordedEvent {
    RecordedEvent {
        event_id: Uuid::new_v4(),
        stream_id: StreamId::new(stream).unwrap(),
        stream_version: version,
        position: Position(position),
        recorded_at: strata_core::timestamp_from_micros(at_us),
        event_type: "Deposited".to_owned(),
        content_type: "application/json".to_owned(),
        data: format!("{{\"n\":{position}}}").into_bytes(),
        metadata: Metadata::new().with_correlation_id(format!("c-{position}")),
    }
}

/// Writes segment `no` from `first` to `end` holding `events`, with `next` versions.
fn write(
    seg_dir: &Path,
    no: u64,
    first: u64,
    end: u64,
    events: &[RecordedEvent],
    next: &[(&str, u64)],
) {
    let mut w = SegmentWriter::create(seg_dir, no, 1000 + no, first).unwrap();
    for e in events {
        w.push(e).unwrap();
    }
    let next: HashMap<String, u64> = next.iter().map(|(s, v)| (s.to_string(), *v)).collect();
    w.finish(end, &next).unwrap();
}

/// Every event of `stream` as the store answers it: (position, version).
async fn versions(store: &LogStore, stream: &str) -> Vec<(u64, u64)> {
    store
        .read_stream(
            &StreamId::new(stream).unwrap(),
            ReadStreamOptions::forward(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.position.0, e.stream_version))
        .collect()
}

/// Two segments with gaps: positions skipped (an append that rolled back), `a-1`'s versions
/// 1..5 removed between two of its events in segment 0, `b-1` starting at version 3 in
/// segment 1 (0..3 removed, none held before). The directory, finished as a restore finishes
/// it, opens, verifies clean and answers with exactly those events; appends go on after.
#[tokio::test]
async fn segments_with_gaps_open_as_the_events_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let seg_dir = strata_log::segments_dir(dir.path());
    std::fs::create_dir_all(&seg_dir).unwrap();
    let zero = [
        event(0, "a-1", 0, 10),
        event(2, "a-1", 5, 11),
        event(3, "a-1", 6, 12),
    ];
    let one = [event(5, "b-1", 3, 13), event(6, "a-1", 7, 14)];
    write(&seg_dir, 0, 0, 5, &zero, &[]);
    write(&seg_dir, 1, 5, 8, &one, &[("a-1", 7)]);
    let mut read = Vec::new();
    strata_log::each_sealed_event(dir.path(), |e| {
        read.push(e);
        Ok::<(), String>(())
    })
    .unwrap();
    let written: Vec<RecordedEvent> = zero.iter().chain(&one).cloned().collect();
    assert_eq!(read, written);
    assert_eq!(
        strata_log::reconcile_copied_segments(dir.path(), 8).unwrap(),
        0
    );
    strata_log::finish_restored_segments(dir.path(), 2, 8).unwrap();
    let report = strata_log::verify(dir.path()).unwrap();
    assert_eq!(report.events, 5);

    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(
        versions(&store, "a-1").await,
        [(0, 0), (2, 5), (3, 6), (6, 7)]
    );
    assert_eq!(versions(&store, "b-1").await, [(5, 3)]);
    let info = store
        .stream_info(&StreamId::new("b-1").unwrap())
        .await
        .unwrap();
    assert_eq!(info.current_version, Some(3));
    let r = store
        .append(
            &StreamId::new("b-1").unwrap(),
            strata_core::ExpectedVersion::Exact(3),
            vec![strata_core::EventData::json("Deposited", &serde_json::json!({})).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!((r.stream_version, r.positions), (4, vec![Position(8)]));
    store.close().await.unwrap();
}

/// Segment 0 holds versions 0..=4 of `a-1`; segment 1, exported after the source deleted
/// versions 1..8, records the run 1..8 (what its source no longer holds), which starts below
/// `a-1`'s next version (5). The reconciliation removes 1..=4 from segment 0 and makes the
/// run start at 5: the store opens and verifies, holding versions 0 and 8.. of `a-1`.
#[tokio::test]
async fn a_run_below_a_streams_next_version_starts_there_after_reconciling() {
    let dir = tempfile::tempdir().unwrap();
    let seg_dir = strata_log::segments_dir(dir.path());
    std::fs::create_dir_all(&seg_dir).unwrap();
    let zero: Vec<RecordedEvent> = (0..5).map(|v| event(v, "a-1", v, 10)).collect();
    let one = [event(9, "a-1", 8, 20), event(10, "a-1", 9, 21)];
    write(&seg_dir, 0, 0, 9, &zero, &[]);
    // What the source holds below version 8: version 0 only.
    write(&seg_dir, 1, 9, 11, &one, &[("a-1", 1)]);
    assert_eq!(
        strata_log::reconcile_copied_segments(dir.path(), 11).unwrap(),
        4
    );
    strata_log::finish_restored_segments(dir.path(), 2, 11).unwrap();
    let report = strata_log::verify(dir.path()).unwrap();
    assert_eq!(report.events, 3);
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(versions(&store, "a-1").await, [(0, 0), (9, 8), (10, 9)]);
    store.close().await.unwrap();
}

/// What cannot make a segment is refused with [`ExportError::Refused`], naming the event's
/// position: positions going back, a stream's versions going back or skipping twice, times
/// going back, a stream both skipping before its first event and between two; the file is
/// not renamed into place.
#[test]
fn events_that_cannot_make_a_segment_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let seg_dir = dir.path();
    let refused_at = |r: Result<(), ExportError>| match r {
        Err(ExportError::Refused { position, .. }) => position,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let mut w = SegmentWriter::create(seg_dir, 0, 1, 0).unwrap();
    w.push(&event(3, "a-1", 0, 10)).unwrap();
    assert_eq!(refused_at(w.push(&event(3, "b-1", 0, 10))), 3);
    assert_eq!(refused_at(w.push(&event(4, "a-1", 0, 10))), 4);
    assert_eq!(refused_at(w.push(&event(5, "b-1", 0, 9))), 5);
    w.push(&event(6, "a-1", 4, 10)).unwrap();
    assert_eq!(refused_at(w.push(&event(7, "a-1", 9, 10))), 7);
    w.push(&event(8, "c-1", 2, 10)).unwrap();
    w.push(&event(9, "c-1", 5, 10)).unwrap();
    // c-1 skipped 3..5 here, and the source holds none of 0..2 before: two runs.
    let next = HashMap::from([("c-1".to_owned(), 0u64)]);
    match w.finish(10, &next) {
        Err(ExportError::Refused { reason, .. }) => assert!(reason.contains("c-1"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!seg_dir.join("00000000000000000000.seg").exists());
}

/// The same events make the same segment, byte for byte: its created-at is its first event's
/// time, and metadata is stored compact however it came (PostgreSQL gives jsonb back spaced).
#[test]
fn the_same_events_make_the_same_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let events: Vec<RecordedEvent> = (0..3).map(|v| event(v, "a-1", v, 10 + v as i64)).collect();
    let spaced: Vec<RecordedEvent> = events
        .iter()
        .map(|e| RecordedEvent {
            metadata: Metadata::from_bytes(
                format!("{{ \"correlationId\" : \"c-{}\" }}", e.position.0).as_bytes(),
            )
            .unwrap(),
            ..e.clone()
        })
        .collect();
    // Written one after the other (each syncs its file): a segment stamped with the time
    // of its writing would differ.
    write(a.path(), 0, 0, 3, &events, &[]);
    write(b.path(), 0, 0, 3, &spaced, &[]);
    let bytes = |dir: &Path| std::fs::read(dir.join("00000000000000000000.seg")).unwrap();
    assert_eq!(bytes(a.path()), bytes(b.path()));
}
