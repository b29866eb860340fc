//! Snapshots: save, load the newest at or below a version with the expected schema, replace,
//! delete, limits.

use serde_json::json;
use strata_core::{
    limits, EventStore, ExpectedVersion, ReadError, ReadStreamOptions, Snapshot, SnapshotError,
    SnapshotStore, StreamId,
};

use super::support::*;

fn snapshot(stream: &StreamId, version: u64, schema_version: u32, balance: i64) -> Snapshot {
    Snapshot {
        stream_id: stream.clone(),
        stream_version: version,
        schema_version,
        data: serde_json::to_vec(&json!({ "balance": balance })).expect("serialize"),
        taken_at: now_micros(),
    }
}

async fn save<S: SnapshotStore>(store: &S, snapshot: Snapshot) {
    let what = format!(
        "save_snapshot({} @ {})",
        snapshot.stream_id, snapshot.stream_version
    );
    within(&what, store.save_snapshot(snapshot))
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e:?}"));
}

async fn load<S: SnapshotStore>(
    store: &S,
    stream: &StreamId,
    schema_version: u32,
    max_version: Option<u64>,
) -> Option<Snapshot> {
    within(
        "load_snapshot",
        store.load_snapshot(stream, schema_version, max_version),
    )
    .await
    .unwrap_or_else(|e| panic!("load_snapshot({stream}, {schema_version}, {max_version:?}): {e:?}"))
}

async fn delete<S: SnapshotStore>(store: &S, stream: &StreamId) -> u64 {
    within("delete_snapshots", store.delete_snapshots(stream))
        .await
        .unwrap_or_else(|e| panic!("delete_snapshots({stream}): {e:?}"))
}

/// A saved snapshot loads back with every field equal (`taken_at` at microsecond precision);
/// a stream without snapshots loads `None`.
pub async fn snapshot_round_trips<S: SnapshotStore + Clone>(store: S) {
    let s = sid("account-1");
    assert_eq!(load(&store, &s, 1, None).await, None);
    let mut snap = snapshot(&s, 41, 1, 250);
    snap.data = (0..=255u8).collect();
    save(&store, snap.clone()).await;
    assert_eq!(load(&store, &s, 1, None).await, Some(snap.clone()));
    assert_eq!(load(&store, &s, 1, Some(41)).await, Some(snap.clone()));
    let mut empty = snapshot(&s, 50, 1, 0);
    empty.data = Vec::new();
    save(&store, empty.clone()).await;
    assert_eq!(
        load(&store, &s, 1, None).await,
        Some(empty),
        "empty state is a state"
    );
}

/// Load returns the newest snapshot at or below `max_version`, whatever the order of saves.
pub async fn snapshot_load_takes_newest_at_or_below_max_version<S: SnapshotStore + Clone>(
    store: S,
) {
    let s = sid("account-1");
    for version in [10, 30, 20, 0] {
        save(&store, snapshot(&s, version, 1, version as i64)).await;
    }
    let version_of = |snap: Option<Snapshot>| snap.map(|s| s.stream_version);
    assert_eq!(version_of(load(&store, &s, 1, None).await), Some(30));
    assert_eq!(
        version_of(load(&store, &s, 1, Some(u64::MAX)).await),
        Some(30)
    );
    assert_eq!(version_of(load(&store, &s, 1, Some(30)).await), Some(30));
    assert_eq!(version_of(load(&store, &s, 1, Some(29)).await), Some(20));
    assert_eq!(version_of(load(&store, &s, 1, Some(15)).await), Some(10));
    assert_eq!(version_of(load(&store, &s, 1, Some(9)).await), Some(0));
    assert_eq!(version_of(load(&store, &s, 1, Some(0)).await), Some(0));
    let loaded = load(&store, &s, 1, Some(25)).await.expect("a snapshot");
    assert_eq!(
        loaded.data,
        snapshot(&s, 20, 1, 20).data,
        "the data of version 20"
    );
}

/// Snapshots of another schema version are ignored: load skips to an older one with the
/// expected schema, or returns `None`.
pub async fn snapshot_with_other_schema_version_is_ignored<S: SnapshotStore + Clone>(store: S) {
    let s = sid("account-1");
    save(&store, snapshot(&s, 5, 1, 50)).await;
    save(&store, snapshot(&s, 9, 2, 90)).await;
    let v1 = load(&store, &s, 1, None).await.expect("schema 1");
    assert_eq!((v1.stream_version, v1.schema_version), (5, 1));
    let v2 = load(&store, &s, 2, None).await.expect("schema 2");
    assert_eq!((v2.stream_version, v2.schema_version), (9, 2));
    assert_eq!(load(&store, &s, 2, Some(8)).await, None);
    assert_eq!(load(&store, &s, 3, None).await, None);
}

/// Saving at a stream and version that already has a snapshot replaces it.
pub async fn snapshot_save_replaces_same_version<S: SnapshotStore + Clone>(store: S) {
    let s = sid("account-1");
    save(&store, snapshot(&s, 7, 1, 1)).await;
    let replacement = snapshot(&s, 7, 1, 2);
    save(&store, replacement.clone()).await;
    assert_eq!(load(&store, &s, 1, None).await, Some(replacement));
    let other_schema = snapshot(&s, 7, 2, 3);
    save(&store, other_schema.clone()).await;
    assert_eq!(load(&store, &s, 2, None).await, Some(other_schema));
    assert_eq!(
        delete(&store, &s).await,
        1,
        "one snapshot per stream and version"
    );
}

/// Delete removes every snapshot of the stream, returns how many, and leaves other streams.
pub async fn snapshot_delete_returns_count<S: SnapshotStore + Clone>(store: S) {
    let s = sid("account-1");
    let other = sid("account-2");
    assert_eq!(delete(&store, &s).await, 0);
    for v in [1, 2, 3] {
        save(&store, snapshot(&s, v, 1, 0)).await;
    }
    save(&store, snapshot(&s, 4, 2, 0)).await;
    save(&store, snapshot(&other, 1, 1, 0)).await;
    assert_eq!(delete(&store, &s).await, 4);
    assert_eq!(load(&store, &s, 1, None).await, None);
    assert_eq!(load(&store, &s, 2, None).await, None);
    assert_eq!(delete(&store, &s).await, 0);
    assert!(load(&store, &other, 1, None).await.is_some());
    save(&store, snapshot(&s, 9, 1, 0)).await;
    assert_eq!(
        load(&store, &s, 1, None).await.map(|x| x.stream_version),
        Some(9)
    );
}

/// A snapshot over [`limits::SNAPSHOT_MAX_BYTES`] is a limit error and is not stored.
pub async fn snapshot_too_large_is_limit_error<S: SnapshotStore + Clone>(store: S) {
    let s = sid("account-1");
    let mut big = snapshot(&s, 3, 1, 0);
    big.data = vec![b'x'; limits::SNAPSHOT_MAX_BYTES + 1];
    match within("save_snapshot", store.save_snapshot(big)).await {
        Err(SnapshotError::Limit(e)) => assert_eq!(e.max, limits::SNAPSHOT_MAX_BYTES as u64),
        other => panic!("a snapshot over the limit must be a limit error, got {other:?}"),
    }
    assert_eq!(load(&store, &s, 1, None).await, None);
}

/// Snapshots of one stream never load for another, even with a shared prefix.
pub async fn snapshots_are_per_stream<S: SnapshotStore + Clone>(store: S) {
    let a = sid("account-1");
    let b = sid("account-10");
    save(&store, snapshot(&a, 3, 1, 30)).await;
    assert_eq!(load(&store, &b, 1, None).await, None);
    save(&store, snapshot(&b, 2, 1, 20)).await;
    assert_eq!(
        load(&store, &a, 1, None).await.map(|x| x.stream_version),
        Some(3)
    );
    assert_eq!(
        load(&store, &b, 1, None).await.map(|x| x.stream_version),
        Some(2)
    );
}

/// `load_snapshot_and_events` gives the snapshot `load_snapshot` gives and, where the backend
/// reads events with it, exactly the stream's first events after the snapshot (from version 0
/// without one), at most the limit, as `read_stream` returns them: a repository replays them
/// as if it had read them itself. A snapshot of another schema version is not the snapshot.
pub async fn snapshot_and_events_load_together<S: EventStore + SnapshotStore + Clone>(store: S) {
    let s = sid("account-1");
    let other = sid("account-2");
    async fn check<S: EventStore + SnapshotStore>(store: &S, s: &StreamId, limit: usize) {
        let what = format!("load_snapshot_and_events({s}, 1, {limit})");
        let both = within(&what, store.load_snapshot_and_events(s, 1, limit))
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e:?}"));
        let snapshot = load(store, s, 1, None).await;
        assert_eq!(both.snapshot, snapshot, "{what}: the snapshot");
        let Some(events) = both.events else {
            return;
        };
        let from = snapshot.map_or(0, |snap| snap.stream_version + 1);
        let expected = match store
            .read_stream(
                s,
                ReadStreamOptions::forward().from_version(from).limit(limit),
            )
            .await
        {
            Ok(events) => events,
            Err(ReadError::StreamNotFound(_)) => Vec::new(),
            Err(e) => panic!("read_stream({s}) failed: {e:?}"),
        };
        assert_eq!(events, expected, "{what}: the events after the snapshot");
    }
    check(&store, &s, 4).await;
    append(
        &store,
        &s,
        ExpectedVersion::NoStream,
        evs("Deposited", 0, 10),
    )
    .await;
    append(
        &store,
        &other,
        ExpectedVersion::NoStream,
        evs("Deposited", 0, 3),
    )
    .await;
    check(&store, &s, 4).await;
    check(&store, &s, 100).await;
    save(&store, snapshot(&s, 5, 1, 50)).await;
    save(&store, snapshot(&s, 7, 2, 70)).await;
    save(&store, snapshot(&other, 2, 1, 20)).await;
    check(&store, &s, 3).await;
    check(&store, &s, 100).await;
    check(&store, &other, 100).await;
    let mut large = snapshot(&s, 8, 1, 80);
    large.data = vec![b'x'; 100_000];
    save(&store, large).await;
    check(&store, &s, 100).await;
    save(&store, snapshot(&s, 9, 1, 90)).await;
    check(&store, &s, 100).await;
    let over = limits::READ_PAGE_MAX_EVENTS + 1;
    match store.load_snapshot_and_events(&s, 1, over).await {
        Err(SnapshotError::Limit(_)) => {}
        other => panic!("a limit of {over} events must be a limit error, got {other:?}"),
    }
}
