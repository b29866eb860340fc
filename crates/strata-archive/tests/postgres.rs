//! One archive format for both backends: a PostgreSQL store exported into an archive restores
//! into the embedded store and into another PostgreSQL store, and an embedded store's archive
//! restores into PostgreSQL, each answering every read as the store it came from. With the
//! gaps PostgreSQL leaves (positions of appends that rolled back, versions a scavenge deleted,
//! also after they were archived), lifecycle events, metadata, and several export runs.
//! Needs the test database (`STRATA_TEST_DATABASE_URL`): skipped with a message without one,
//! a failure under CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../strata-postgres/tests/support/mod.rs"]
mod support;

use std::path::Path;

use strata_archive::{Archive, ArchiveError};
use strata_core::{EventData, EventStore, ExpectedVersion, Metadata, StreamId};
use strata_log::{LogConfig, LogStore};
use strata_postgres::PostgresStore;

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

fn ev(i: usize) -> EventData {
    EventData::json(
        "Deposited",
        &serde_json::json!({ "amount": i, "pad": "x".repeat(200) }),
    )
    .unwrap()
    .with_metadata(Metadata::new().with_correlation_id(format!("req-{i}")))
}

const STREAMS: usize = 6;

fn streams() -> Vec<StreamId> {
    (0..STREAMS).map(|s| sid(&format!("account-{s}"))).collect()
}

/// `rounds` rounds of one event in each stream, from round `from`.
async fn fill<S: EventStore + ?Sized>(store: &S, from: usize, rounds: usize) {
    fill_but(store, from, rounds, "").await
}

/// [`fill`], leaving stream `but` out.
async fn fill_but<S: EventStore + ?Sized>(store: &S, from: usize, rounds: usize, but: &str) {
    for round in from..from + rounds {
        for s in streams().into_iter().filter(|s| s.as_str() != but) {
            store
                .append(&s, ExpectedVersion::Any, vec![ev(round)])
                .await
                .unwrap();
        }
    }
}

/// Every answer a reader gets, for the test's streams.
async fn answers<S: EventStore + ?Sized>(store: &S) -> String {
    strata_testkit::every_answer(store, &streams()).await
}

/// Takes a position the way an append that rolled back does: a gap in the order.
async fn burn_position(store: &PostgresStore, schema: &str) {
    sqlx::query(&format!("SELECT nextval('{schema}.events_position_seq')"))
        .execute(store.pool())
        .await
        .unwrap();
}

/// Rows of `stream` PostgreSQL still holds.
async fn rows(store: &PostgresStore, schema: &str, stream: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.events WHERE aggregate_id = $1"
    ))
    .bind(stream)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

fn open_log(dir: &Path) -> LogStore {
    LogStore::open_with(
        dir,
        LogConfig {
            segment_max_bytes: 16 * 1024,
            ..LogConfig::default()
        },
    )
    .unwrap()
}

/// The tests of this file one at a time: a PostgreSQL scavenge removes only what lies below
/// the cluster's watermark, which another test's open transaction would hold back.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A PostgreSQL store with gaps (positions rolled back, versions deleted by a scavenge before
/// and after they were archived, a tombstone), archived in two runs into small segments,
/// restores into an embedded data directory and into a second PostgreSQL schema, and both
/// answer every read as the store does; both append at the same next position, and the
/// archive verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_restores_into_either_backend() {
    let _serial = SERIAL.lock().await;
    let (store, schema) = support::connect("arch_pg", |o| o).await;
    let archive_dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(&archive_dir.path().display().to_string()).unwrap();

    fill(&store, 0, 10).await;
    burn_position(&store, &schema).await;
    fill(&store, 10, 5).await;
    // Versions 1..8 of account-1 go before anything is archived.
    store.truncate_stream(&sid("account-1"), 8).await.unwrap();
    store.scavenge(&|_| {}).await.unwrap();
    assert_eq!(rows(&store, &schema, "account-1").await, 8);
    burn_position(&store, &schema).await;
    let first = archive
        .archive_postgres_with(&store, 4 * 1024, &|_| {})
        .await
        .unwrap();
    assert!(first.segments > 3, "{first:?}");
    assert_eq!(first.events, 6 * 15 - 7 + 1, "{first:?}");

    // After the first run: versions account-2 held in archived segments are deleted, a
    // stream is tombstoned, more events and gaps come.
    fill(&store, 15, 5).await;
    store.truncate_stream(&sid("account-2"), 12).await.unwrap();
    store
        .tombstone_stream(&sid("account-3"), ExpectedVersion::Any)
        .await
        .unwrap();
    burn_position(&store, &schema).await;
    fill_but(&store, 20, 3, "account-3").await;
    store.scavenge(&|_| {}).await.unwrap();
    assert_eq!(rows(&store, &schema, "account-2").await, 1 + 23 - 12);
    let second = archive
        .archive_postgres_with(&store, 4 * 1024, &|_| {})
        .await
        .unwrap();
    assert!(second.segments > 0 && second.already_archived == first.segments);
    // A run with nothing new adds nothing.
    let third = archive.archive_postgres(&store, &|_| {}).await.unwrap();
    assert_eq!((third.segments, third.events), (0, 0));

    let expected = answers(&store).await;

    let restored = tempfile::tempdir().unwrap();
    let target = restored.path().join("store");
    let report = archive.restore(&target, &|_| {}).await.unwrap();
    assert!(
        report.removed > 0,
        "account-2's archived versions are removed: {report:?}"
    );
    let back = open_log(&target);
    assert_eq!(answers(&back).await, expected);

    let (other, other_schema) = support::connect("arch_pg_to", |o| o).await;
    let scratch = tempfile::tempdir().unwrap();
    let pg_report = archive
        .restore_postgres(&other, scratch.path(), &|_| {})
        .await
        .unwrap();
    assert_eq!(pg_report.next_position, report.next_position);
    assert_eq!(answers(&other).await, expected);
    assert_eq!(
        other.store_id().await.unwrap(),
        store.store_id().await.unwrap()
    );

    // All three append at the same next position.
    let s = sid("account-0");
    let next = store
        .append(&s, ExpectedVersion::Any, vec![ev(99)])
        .await
        .unwrap();
    let from_log = back
        .append(&s, ExpectedVersion::Any, vec![ev(99)])
        .await
        .unwrap();
    let from_pg = other
        .append(&s, ExpectedVersion::Any, vec![ev(99)])
        .await
        .unwrap();
    assert_eq!(from_log.positions, next.positions);
    assert_eq!(from_pg.positions, next.positions);
    assert_eq!(from_log.stream_version, next.stream_version);
    assert_eq!(from_pg.stream_version, next.stream_version);

    // A store restored from the archive goes on archiving into it.
    fill_but(&other, 30, 2, "account-3").await;
    let go_on = archive
        .archive_postgres_with(&other, 4 * 1024, &|_| {})
        .await
        .unwrap();
    assert!(go_on.segments > 0, "{go_on:?}");

    // Verify restores into a scratch directory and runs `strata verify` there.
    let checked = archive.verify(scratch.path()).await.unwrap();
    assert_eq!(checked.store.events, checked.events, "{checked:?}");
    assert!(checked.store.torn_tail.is_none(), "{checked:?}");

    // The original went its own way (the archive now holds the restored copy's later
    // events): it cannot archive there any more, also once it has appended past them.
    match archive.archive_postgres(&store, &|_| {}).await {
        Err(ArchiveError::Diverged { .. }) => {}
        other => panic!("expected Diverged, got {other:?}"),
    }
    fill_but(&store, 40, 4, "account-3").await;
    match archive.archive_postgres(&store, &|_| {}).await {
        Err(ArchiveError::Diverged { reason, .. }) => {
            assert!(reason.contains("last event"), "{reason}")
        }
        other => panic!("expected Diverged, got {other:?}"),
    }

    // One export of a store at a time: another one meanwhile is refused.
    let hold = other.hold_export().await.unwrap().expect("no export runs");
    match archive.archive_postgres(&other, &|_| {}).await {
        Err(ArchiveError::Busy) => {}
        other => panic!("expected Busy, got {other:?}"),
    }
    // Nor does a scavenge: an export reads rows and the versions below them apart.
    match other.scavenge(&|_| {}).await {
        Err(strata_core::scavenge::ScavengeError::AlreadyRunning) => {}
        other => panic!("expected AlreadyRunning, got {other:?}"),
    }
    hold.release().await;
    archive.archive_postgres(&other, &|_| {}).await.unwrap();

    back.close().await.unwrap();
    drop(store);
    drop(other);
    support::drop_schema(schema).await;
    support::drop_schema(other_schema).await;
}

/// An embedded store's archive, with scavenged segments, restores into PostgreSQL and
/// answers as the embedded store does; a PostgreSQL store that holds anything refuses a
/// restore, and another PostgreSQL store (another id) cannot archive into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_archive_restores_into_postgres() {
    let _serial = SERIAL.lock().await;
    let data = tempfile::tempdir().unwrap();
    let archive_dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(&archive_dir.path().display().to_string()).unwrap();
    let log = open_log(data.path());
    // Over 1,000 events: the restore imports several batches, each after the one before.
    fill(&log, 0, 180).await;
    // JSON whose number jsonb cannot hold: PostgreSQL keeps its bytes only, as on append.
    let tiny = EventData {
        data: br#"{"n":1e-20000}"#.to_vec(),
        ..EventData::json("Measured", &serde_json::json!({})).unwrap()
    };
    log.append(&sid("account-0"), ExpectedVersion::Any, vec![tiny])
        .await
        .unwrap();
    log.truncate_stream(&sid("account-4"), 10).await.unwrap();
    fill(&log, 180, 2).await;
    log.delete_stream(&sid("account-5"), ExpectedVersion::Any)
        .await
        .unwrap();
    log.scavenge(&|_| {}).await.unwrap();
    log.seal_open_segment().await.unwrap();
    archive.archive_store(&log, &|_| {}).await.unwrap();
    let expected = answers(&log).await;

    let (pg, schema) = support::connect("arch_log_to", |o| o).await;
    let scratch = tempfile::tempdir().unwrap();
    // A store that has taken a position holds history an archive would collide with.
    let (busy, busy_schema) = support::connect("arch_busy", |o| o).await;
    burn_position(&busy, &busy_schema).await;
    match archive
        .restore_postgres(&busy, scratch.path(), &|_| {})
        .await
    {
        Err(ArchiveError::StoreNotEmpty { .. }) => {}
        other => panic!("expected StoreNotEmpty, got {other:?}"),
    }
    drop(busy);
    support::drop_schema(busy_schema).await;
    archive
        .restore_postgres(&pg, scratch.path(), &|_| {})
        .await
        .unwrap();
    assert_eq!(answers(&pg).await, expected);

    // Not empty now: a second restore is refused, and changes nothing.
    match archive.restore_postgres(&pg, scratch.path(), &|_| {}).await {
        Err(ArchiveError::StoreNotEmpty { .. }) => {}
        other => panic!("expected StoreNotEmpty, got {other:?}"),
    }
    assert_eq!(answers(&pg).await, expected);

    let (stranger, stranger_schema) = support::connect("arch_other", |o| o).await;
    fill(&stranger, 0, 1).await;
    match archive.archive_postgres(&stranger, &|_| {}).await {
        Err(ArchiveError::OtherStore { .. }) => {}
        other => panic!("expected OtherStore, got {other:?}"),
    }

    // The lifecycle reads alike: account-5 was deleted, and an append that expects no
    // stream re-creates it at the same version in both.
    let again = |store| async move {
        let s: &dyn EventStore = store;
        s.append(&sid("account-5"), ExpectedVersion::NoStream, vec![ev(77)])
            .await
            .unwrap()
            .stream_version
    };
    assert_eq!(again(&pg).await, again(&log).await);
    log.close().await.unwrap();
    drop(pg);
    drop(stranger);
    support::drop_schema(schema).await;
    support::drop_schema(stranger_schema).await;
}

/// The import keeps imported events in their place: a second import as if into an empty
/// store is refused, and so is one after an append took a position meanwhile; after the
/// last batch, the next position can be moved past a trailing gap, and an append goes there,
/// recorded no earlier than the imported events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_events_keep_their_place() {
    let _serial = SERIAL.lock().await;
    let (pg, schema) = support::connect("arch_import", |o| o).await;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let later = strata_core::timestamp_from_micros(now_us + 3_600_000_000);
    let event = |position: u64, version: u64| strata_core::RecordedEvent {
        event_id: strata_core::Uuid::new_v4(),
        stream_id: sid("account-1"),
        stream_version: version,
        position: strata_core::Position(position),
        recorded_at: later,
        event_type: "Deposited".to_owned(),
        content_type: "application/json".to_owned(),
        data: b"{}".to_vec(),
        metadata: Metadata::new(),
    };
    let taken = |r: Result<(), strata_postgres::ImportError>| match r {
        Err(strata_postgres::ImportError::PositionsTaken { .. }) => {}
        other => panic!("expected PositionsTaken, got {other:?}"),
    };
    pg.import_events(&[event(0, 0), event(2, 1)], None)
        .await
        .unwrap();
    taken(pg.import_events(&[event(3, 2)], None).await);
    // A batch must go past the last position taken.
    taken(pg.import_events(&[event(1, 2)], Some(2)).await);
    taken(pg.skip_positions_below(9, Some(1)).await);
    pg.skip_positions_below(9, Some(2)).await.unwrap();
    let appended = pg
        .append(&sid("account-1"), ExpectedVersion::Exact(1), vec![ev(1)])
        .await
        .unwrap();
    assert_eq!(appended.positions, [strata_core::Position(9)]);
    let read = pg
        .read_stream(&sid("account-1"), strata_core::ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(read.len(), 3);
    assert!(read[2].recorded_at >= later, "{:?}", read[2].recorded_at);
    // The append took position 9: a batch that assumed 2 was the last one taken is refused.
    taken(pg.import_events(&[event(10, 3)], Some(2)).await);
    drop(pg);
    support::drop_schema(schema).await;
}

/// A PostgreSQL store's archive restored into the embedded store, which archives there in
/// turn: the PostgreSQL original, appending on its own, is refused (`Diverged`) rather than
/// mixing its events after the copy's (the embedded run's mark names its last event too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_is_refused_after_its_embedded_copy_archived() {
    let _serial = SERIAL.lock().await;
    let (pg, schema) = support::connect("arch_diverge", |o| o).await;
    let archive_dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(&archive_dir.path().display().to_string()).unwrap();
    fill(&pg, 0, 2).await;
    archive.archive_postgres(&pg, &|_| {}).await.unwrap();

    let restored = tempfile::tempdir().unwrap();
    let target = restored.path().join("store");
    archive.restore(&target, &|_| {}).await.unwrap();
    let copy = open_log(&target);
    fill(&copy, 2, 1).await;
    copy.seal_open_segment().await.unwrap();
    let r = archive.archive_store(&copy, &|_| {}).await.unwrap();
    assert_eq!(r.events, STREAMS as u64);

    fill(&pg, 2, 3).await;
    match archive.archive_postgres(&pg, &|_| {}).await {
        Err(ArchiveError::Diverged { reason, .. }) => {
            assert!(reason.contains("last event"), "{reason}")
        }
        other => panic!("expected Diverged, got {other:?}"),
    }
    copy.close().await.unwrap();
    drop(pg);
    support::drop_schema(schema).await;
}
