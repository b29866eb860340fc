//! Scavenging on PostgreSQL (the conformance suite's case runs too): deletion commits in
//! bounded batches, one scavenge runs per schema at a time, and a scavenge running while
//! writers append, delete and re-create streams loses no event readers should see.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use strata_core::scavenge::{ScavengeError, ScavengeProgress};
use strata_core::{
    EventData, EventStore, ExpectedVersion, ReadAllOptions, ReadError, ReadStreamOptions, StreamId,
    StreamMetadata,
};

fn events(first: u64, count: u64) -> Vec<EventData> {
    (first..first + count)
        .map(|n| EventData::json("Deposited", &serde_json::json!({ "n": n })).unwrap())
        .collect()
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

async fn rows(conn: &mut PgConnection, schema: &str, stream: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.events WHERE aggregate_id = $1"
    ))
    .bind(stream)
    .fetch_one(conn)
    .await
    .unwrap()
}

/// The tests of this file one at a time: one holds the cluster's `$all` watermark back, which
/// holds back what the others' scavenges may remove.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits (bounded) until a session deleting from `schema`'s events waits for a lock.
async fn until_the_scavenge_waits_for_a_lock(conn: &mut PgConnection, schema: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'
                AND position($1 IN query) > 0",
        )
        .bind(format!("DELETE FROM {schema}.events"))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the scavenge never reached the lock"
        );
        tokio::task::yield_now().await;
    }
}

/// A stream with 2,500 hidden events is deleted 1,000 versions per transaction: while the
/// scavenge waits on a row of its second batch, the first is committed and seen elsewhere,
/// and a second scavenge of the schema is refused as already running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_commit_one_by_one_and_one_scavenge_runs_at_a_time() {
    let _serial = SERIAL.lock().await;
    let (store, schema) = support::connect("scav", |o| o).await;
    let s = sid("ledger-1");
    for k in 0..3 {
        store
            .append(&s, ExpectedVersion::Any, events(k * 1000, 1000))
            .await
            .unwrap();
    }
    store.truncate_stream(&s, 2_501).await.unwrap();
    let mut holder = PgConnection::connect(&support::database_url())
        .await
        .unwrap();
    let mut tx = holder.begin().await.unwrap();
    // A row of the second batch (versions 1001..2001), locked as an UPDATE would.
    sqlx::query(&format!(
        "SELECT 1 FROM {schema}.events WHERE aggregate_id = 'ledger-1' AND version = 1500 FOR UPDATE"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();

    let running = {
        let store = store.clone();
        tokio::spawn(async move { store.scavenge(&|_: ScavengeProgress| {}).await })
    };
    let mut observer = PgConnection::connect(&support::database_url())
        .await
        .unwrap();
    until_the_scavenge_waits_for_a_lock(&mut observer, &schema).await;
    assert_eq!(
        rows(&mut observer, &schema, "ledger-1").await,
        3000 - 1000,
        "the first batch (versions 1..1001) is committed while the second waits"
    );
    match store.scavenge(&|_: ScavengeProgress| {}).await {
        Err(ScavengeError::AlreadyRunning) => {}
        other => panic!("a second scavenge of the schema must be refused, got {other:?}"),
    }
    tx.rollback().await.unwrap();
    let report = running.await.unwrap().expect("the first scavenge finishes");
    assert_eq!(report.progress.events_removed, 2500, "versions 1..=2500");
    // Version 0 (the stream exists) and 2501..2999 are left.
    assert_eq!(rows(&mut observer, &schema, "ledger-1").await, 1 + 499);
    let read = store
        .read_stream(&s, ReadStreamOptions::forward().limit(2))
        .await
        .unwrap();
    assert_eq!(
        read.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [2501, 2502]
    );
    // The lock is released with the scavenge: another one runs.
    let again = store.scavenge(&|_: ScavengeProgress| {}).await.unwrap();
    assert_eq!(again.progress.events_removed, 0);
    drop(store);
    support::drop_schema(schema).await;
}

/// Writers append to live streams, delete streams and re-create them while scavenges run:
/// afterwards every stream reads exactly what its writer's acknowledged appends and the
/// lifecycle say, and `$all` holds each of those events once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scavenge_alongside_writers_keeps_every_visible_event() {
    let _serial = SERIAL.lock().await;
    let (store, schema) = support::connect("scavw", |o| o.with_max_connections(12)).await;
    const WRITERS: usize = 4;
    const STREAMS: usize = 6;
    const ROUNDS: u64 = 12;
    // Each writer owns its streams; what it expects each to read at the end: the versions
    // of its events since the last deletion.
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut expected: HashMap<StreamId, Vec<u64>> = HashMap::new();
                for round in 0..ROUNDS {
                    for k in 0..STREAMS {
                        let s = sid(&format!("acct-{w}x{k}"));
                        let r = store
                            .append(&s, ExpectedVersion::Any, events(round * 10, 3))
                            .await
                            .expect("append");
                        let kept = expected.entry(s.clone()).or_default();
                        kept.extend(r.stream_version - 2..=r.stream_version);
                        // Every third stream is deleted every other round.
                        if k % 3 == 0 && round % 2 == 1 {
                            store
                                .delete_stream(&s, ExpectedVersion::Exact(r.stream_version))
                                .await
                                .expect("delete");
                            kept.clear();
                        }
                    }
                }
                expected
            })
        })
        .collect();
    let mut scavenged = 0u64;
    let mut runs = 0;
    while !writers.iter().all(|w| w.is_finished()) || runs == 0 {
        match store.scavenge(&|_: ScavengeProgress| {}).await {
            Ok(r) => scavenged += r.progress.events_removed,
            Err(e) => panic!("scavenge: {e}"),
        }
        runs += 1;
    }
    let mut expected: HashMap<StreamId, Vec<u64>> = HashMap::new();
    for w in writers {
        expected.extend(w.await.unwrap());
    }
    scavenged += store
        .scavenge(&|_: ScavengeProgress| {})
        .await
        .unwrap()
        .progress
        .events_removed;
    assert!(scavenged > 0, "the deleted streams' events were removed");
    for (s, versions) in &expected {
        let read = store.read_stream(s, ReadStreamOptions::forward()).await;
        match read {
            Ok(events) => assert_eq!(
                &events.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
                versions,
                "{s}"
            ),
            Err(ReadError::StreamNotFound(_)) => assert!(versions.is_empty(), "{s} lost"),
            Err(e) => panic!("{s}: {e}"),
        }
    }
    let mut all: Vec<(StreamId, u64)> = Vec::new();
    let mut from = None;
    loop {
        let mut o = ReadAllOptions::forward().limit(500);
        if let Some(f) = from {
            o = o.from(f);
        }
        let page = store.read_all(o).await.unwrap();
        all.extend(
            page.events
                .iter()
                .filter(|e| !e.stream_id.is_metastream())
                .map(|e| (e.stream_id.clone(), e.stream_version)),
        );
        from = page.next;
        if page.is_end {
            break;
        }
    }
    let mut wanted: Vec<(StreamId, u64)> = expected
        .iter()
        .flat_map(|(s, v)| v.iter().map(move |v| (s.clone(), *v)))
        .collect();
    wanted.sort();
    let mut got = all.clone();
    got.sort();
    assert_eq!(got, wanted, "$all holds every visible event once");
    drop(store);
    support::drop_schema(schema).await;
}

/// The readable head of `$all` never moves back: an event hidden by `maxCount` that is the
/// newest readable one (the event hiding it being still above the watermark, behind an open
/// transaction) stays until the head has passed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scavenge_never_moves_the_head_back() {
    let _serial = SERIAL.lock().await;
    let (store, schema) = support::connect("scavh", |o| o).await;
    let s = sid("meter-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(0, 1))
        .await
        .unwrap();
    let keep_one = StreamMetadata {
        max_count: Some(1),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&s, ExpectedVersion::Any, keep_one)
        .await
        .unwrap();
    let second = store
        .append(&s, ExpectedVersion::Exact(0), events(1, 1))
        .await
        .unwrap();
    // Readable everywhere before the other transaction starts.
    assert_eq!(store.head().await.unwrap(), Some(second.positions[0]));
    let mut other = support::hold_watermark(&support::database_url()).await;
    // Version 2 hides version 1 (maxCount 1), but stays above the watermark.
    store
        .append(&s, ExpectedVersion::Exact(1), events(2, 1))
        .await
        .unwrap();
    assert_eq!(store.head_now().await.unwrap(), Some(second.positions[0]));
    let report = store.scavenge(&|_: ScavengeProgress| {}).await.unwrap();
    assert_eq!(
        report.progress.events_removed, 0,
        "the newest readable event stays while it is the head"
    );
    assert_eq!(store.head_now().await.unwrap(), Some(second.positions[0]));
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let report = store.scavenge(&|_: ScavengeProgress| {}).await.unwrap();
    assert_eq!(report.progress.events_removed, 1, "then it goes");
    drop(store);
    support::drop_schema(schema).await;
}

/// A store that has seen no lifecycle state skips asking for it on `$all` pages, until a
/// page's own statement finds some: a deletion made through another store on the schema
/// hides the stream from this one's next `$all` read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_by_another_store_hides_the_stream_from_all() {
    let _serial = SERIAL.lock().await;
    let (reader, schema) = support::connect("scavd", |o| o).await;
    let writer = strata_postgres::PostgresStore::connect_with(
        strata_postgres::PgStoreOptions::new(support::database_url()).with_schema(&schema),
    )
    .await
    .unwrap();
    let s = sid("order-1");
    let kept = sid("order-2");
    for stream in [&s, &kept] {
        writer
            .append(stream, ExpectedVersion::NoStream, events(0, 2))
            .await
            .unwrap();
    }
    let streams_in_all = |events: Vec<strata_core::RecordedEvent>| {
        let mut names: Vec<String> = events
            .into_iter()
            .filter(|e| !e.stream_id.is_metastream())
            .map(|e| e.stream_id.as_str().to_owned())
            .collect();
        names.dedup();
        names
    };
    let wait_for = |n: usize| {
        let reader = reader.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let page = reader.read_all(ReadAllOptions::forward()).await.unwrap();
                if page.events.len() >= n {
                    return page.events;
                }
                assert!(Instant::now() < deadline, "the writer's events never came");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(streams_in_all(wait_for(4).await), ["order-1", "order-2"]);
    writer
        .delete_stream(&s, ExpectedVersion::Exact(1))
        .await
        .unwrap();
    // The reader sees the deletion's event (five in all) and no event of order-1.
    let after = wait_for(3).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = after;
    while !after.iter().any(|e| e.stream_id.is_metastream()) {
        assert!(Instant::now() < deadline, "the deletion never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
        after = reader
            .read_all(ReadAllOptions::forward())
            .await
            .unwrap()
            .events;
    }
    assert_eq!(streams_in_all(after), ["order-2"]);
    drop((reader, writer));
    support::drop_schema(schema).await;
}

/// A page of `$all` read ahead before another store deleted one of its streams is delivered
/// without that stream's events: a page read ahead asks again whether any stream has
/// lifecycle state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_read_ahead_before_a_deletion_leaves_the_stream_out() {
    let _serial = SERIAL.lock().await;
    let (reader, schema) = support::connect("scavr", |o| o).await;
    let writer = strata_postgres::PostgresStore::connect_with(
        strata_postgres::PgStoreOptions::new(support::database_url()).with_schema(&schema),
    )
    .await
    .unwrap();
    let mut last = None;
    for stream in ["order-1", "order-2", "order-3"] {
        let r = writer
            .append(&sid(stream), ExpectedVersion::NoStream, events(0, 4))
            .await
            .unwrap();
        last = r.positions.last().copied();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while reader.head_now().await.unwrap() < last {
        assert!(
            Instant::now() < deadline,
            "the writer's events never became readable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A full first page: the pages after it are read ahead.
    let first = reader
        .read_all(ReadAllOptions::forward().limit(4))
        .await
        .unwrap();
    assert_eq!(first.events.len(), 4);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.read_ahead_settled() {
        assert!(Instant::now() < deadline, "the read-ahead never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer
        .delete_stream(&sid("order-2"), ExpectedVersion::Exact(3))
        .await
        .unwrap();
    let second = reader
        .read_all(ReadAllOptions::forward().from(first.next.unwrap()).limit(4))
        .await
        .unwrap();
    assert!(
        second
            .events
            .iter()
            .all(|e| e.stream_id.as_str() != "order-2"),
        "{:?}",
        second.events
    );
    drop((reader, writer));
    support::drop_schema(schema).await;
}
