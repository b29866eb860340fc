//! Stream lifecycle: soft delete, tombstone, truncation, stream metadata, and what readers
//! and subscribers see of them (`strata_core::lifecycle`).

use serde_json::json;
use strata_core::lifecycle::{
    EVENT_TYPE_METADATA, EVENT_TYPE_STREAM_DELETED, EVENT_TYPE_STREAM_TOMBSTONED,
    EVENT_TYPE_STREAM_TRUNCATED,
};
use strata_core::{
    AppendError, EventData, EventStore, ExpectedVersion, Filter, ListOptions, ReadError,
    ReadStreamOptions, RecordedEvent, StreamId, StreamMetadata, SubscribeFrom, SubscriptionTarget,
};

use super::support::*;

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version).collect()
}

async fn read_err<S: EventStore>(store: &S, stream: &StreamId) -> ReadError {
    match within(
        "read_stream",
        store.read_stream(stream, ReadStreamOptions::forward()),
    )
    .await
    {
        Ok(events) => panic!("read_stream({stream}) should fail, got {events:?}"),
        Err(e) => e,
    }
}

fn metadata_event(event: &RecordedEvent) -> StreamMetadata {
    StreamMetadata::from_json(&event.data).expect("a metastream event holds metadata")
}

/// Soft delete: the stream reads as not found and is left out of `$all` and listings; the
/// `$streamDeleted` event is in `$all`; appending again (even expecting no stream) re-creates
/// it with versions continuing, and a retry of that append is recognised.
pub async fn soft_delete_hides_the_stream_and_versions_continue<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let other = sid("account-2");
    append(&store, &s, ExpectedVersion::NoStream, evs("E", 0, 3)).await;
    append(&store, &other, ExpectedVersion::NoStream, evs("E", 0, 1)).await;

    let deleted = within(
        "delete_stream",
        store.delete_stream(&s, ExpectedVersion::Exact(2)),
    )
    .await
    .expect("delete a stream at its version");
    assert!(
        matches!(read_err(&store, &s).await, ReadError::StreamNotFound(ref x) if *x == s),
        "a deleted stream reads as not found"
    );
    let info = within("stream_info", store.stream_info(&s))
        .await
        .expect("info");
    assert!(!info.exists);
    assert_eq!(info.event_count, 0);
    assert_eq!(
        info.current_version,
        Some(2),
        "the version stays where it was"
    );
    assert!(!info.tombstoned);

    let all = all_events(&store).await;
    assert!(
        all.iter().all(|e| e.stream_id != s),
        "a deleted stream's events are not in $all"
    );
    let marker = all
        .iter()
        .find(|e| e.event_type == EVENT_TYPE_STREAM_DELETED)
        .expect("$all holds the $streamDeleted event");
    assert_eq!(marker.stream_id, s.metastream());
    assert_eq!(marker.position, deleted.positions[0]);
    assert_eq!(metadata_event(marker).truncate_before, Some(3));
    let listed = within("list_streams", store.list_streams(ListOptions::default()))
        .await
        .expect("list");
    let names: Vec<&str> = listed.items.iter().map(|i| i.stream_id.as_str()).collect();
    assert_eq!(
        names,
        ["account-2"],
        "listings leave out deleted streams and metastreams"
    );

    // Re-created by an append that expects no stream: versions continue after the last.
    let id = new_id();
    let mut event = ev("E", 3);
    event.event_id = Some(id);
    let recreated = append(&store, &s, ExpectedVersion::NoStream, vec![event.clone()]).await;
    assert_eq!(recreated.stream_version, 3);
    let retry = within(
        "a retry",
        store.append(&s, ExpectedVersion::NoStream, vec![event]),
    )
    .await
    .expect("a retry of the re-creating append is recognised");
    assert!(retry.replayed);
    assert_eq!(retry.positions, recreated.positions);
    assert_eq!(versions(&stream_events(&store, &s).await), [3]);
    let info = within("stream_info", store.stream_info(&s))
        .await
        .expect("info");
    assert!(info.exists);
    assert_eq!(info.event_count, 1);
    assert_eq!(info.last_position, Some(recreated.positions[0]));
    expect_wrong_version(
        store
            .append(&s, ExpectedVersion::NoStream, evs("E", 0, 1))
            .await,
        &s,
        ExpectedVersion::NoStream,
        Some(3),
    );
    let all = all_events(&store).await;
    let of_s: Vec<u64> = versions(
        &all.iter()
            .filter(|e| e.stream_id == s)
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(of_s, [3], "only the re-created event is in $all");
}

/// Deleting checks the expected version, and refuses a stream without events and a
/// metastream; a refused delete writes nothing.
pub async fn delete_checks_its_stream<S: EventStore + Clone>(store: S) {
    let s = sid("order-1");
    assert!(matches!(
        within("delete", store.delete_stream(&s, ExpectedVersion::Any)).await,
        Err(AppendError::StreamNotFound(ref x)) if *x == s
    ));
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 2)).await;
    expect_wrong_version(
        within("delete", store.delete_stream(&s, ExpectedVersion::Exact(0))).await,
        &s,
        ExpectedVersion::Exact(0),
        Some(1),
    );
    assert!(matches!(
        within(
            "delete",
            store.delete_stream(&s.metastream(), ExpectedVersion::Any)
        )
        .await,
        Err(AppendError::InvalidInput(_))
    ));
    assert_eq!(versions(&stream_events(&store, &s).await), [0, 1]);
    within(
        "delete",
        store.delete_stream(&s, ExpectedVersion::StreamExists),
    )
    .await
    .expect("delete");
    assert!(
        matches!(
            within("delete", store.delete_stream(&s, ExpectedVersion::Any)).await,
            Err(AppendError::StreamNotFound(_))
        ),
        "a deleted stream cannot be deleted again"
    );
    assert!(
        store
            .append(&s, ExpectedVersion::StreamExists, evs("E", 0, 1))
            .await
            .is_err_and(|e| e.is_wrong_expected_version()),
        "a deleted stream does not exist for StreamExists"
    );
    // A writer that read the stream before it was deleted does not write on.
    expect_wrong_version(
        store
            .append(&s, ExpectedVersion::Exact(1), evs("E", 0, 1))
            .await,
        &s,
        ExpectedVersion::Exact(1),
        None,
    );
    let again = append(&store, &s, ExpectedVersion::Any, evs("E", 2, 1)).await;
    assert_eq!(
        again.stream_version, 2,
        "versions continue after the deleted ones"
    );
}

/// A tombstone: no append and no read of the stream succeeds again, nor any other lifecycle
/// change; `$all` keeps only the `$streamTombstoned` event of its metastream.
pub async fn tombstone_ends_a_stream_for_good<S: EventStore + Clone>(store: S) {
    let s = sid("cart-1");
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 2)).await;
    expect_wrong_version(
        within(
            "tombstone",
            store.tombstone_stream(&s, ExpectedVersion::Exact(5)),
        )
        .await,
        &s,
        ExpectedVersion::Exact(5),
        Some(1),
    );
    let marker = within(
        "tombstone",
        store.tombstone_stream(&s, ExpectedVersion::Exact(1)),
    )
    .await
    .expect("tombstone");
    assert_eq!(
        marker.stream_version, 2,
        "the tombstone takes the next version"
    );
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(2),
    ] {
        let result = within("an append", store.append(&s, expected, evs("E", 9, 1))).await;
        assert!(
            matches!(result, Err(AppendError::StreamTombstoned { ref stream }) if *stream == s),
            "an append expecting {expected} to a tombstoned stream: {result:?}"
        );
    }
    assert!(matches!(
        read_err(&store, &s).await,
        ReadError::StreamTombstoned(ref x) if *x == s
    ));
    let info = within("stream_info", store.stream_info(&s))
        .await
        .expect("info");
    assert!(info.tombstoned);
    assert!(!info.exists);
    for result in [
        within(
            "tombstone",
            store.tombstone_stream(&s, ExpectedVersion::Any),
        )
        .await,
        within("delete", store.delete_stream(&s, ExpectedVersion::Any)).await,
        within("truncate", store.truncate_stream(&s, 1)).await,
        within(
            "set_stream_metadata",
            store.set_stream_metadata(&s, ExpectedVersion::Any, StreamMetadata::default()),
        )
        .await,
    ] {
        assert!(
            matches!(result, Err(AppendError::StreamTombstoned { .. })),
            "a lifecycle change of a tombstoned stream: {result:?}"
        );
    }
    let all = all_events(&store).await;
    assert!(all.iter().all(|e| e.stream_id != s));
    let told: Vec<&RecordedEvent> = all
        .iter()
        .filter(|e| e.event_type == EVENT_TYPE_STREAM_TOMBSTONED)
        .collect();
    assert_eq!(told.len(), 1, "one $streamTombstoned in $all: {told:?}");
    assert_eq!(told[0].stream_id, s.metastream());
    assert!(metadata_event(told[0]).tombstoned);

    // A stream never written can be tombstoned too: its name is retired.
    let retired = sid("cart-2");
    within(
        "tombstone",
        store.tombstone_stream(&retired, ExpectedVersion::NoStream),
    )
    .await
    .expect("tombstone a new stream");
    assert!(matches!(
        within(
            "an append",
            store.append(&retired, ExpectedVersion::Any, evs("E", 0, 1))
        )
        .await,
        Err(AppendError::StreamTombstoned { .. })
    ));
}

/// A tombstone racing appends: every append acknowledged is below the tombstone in the stream,
/// and every append after it is refused.
pub async fn tombstone_races_appends_without_losing_acknowledged_ones<S: EventStore + Clone>(
    store: S,
) {
    let s = sid("race-1");
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 1)).await;
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let store = store.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..20 {
                match store
                    .append(&s, ExpectedVersion::Any, evs("E", w * 100 + n, 1))
                    .await
                {
                    Ok(r) => acknowledged.push(r.stream_version),
                    Err(AppendError::StreamTombstoned { .. }) => break,
                    Err(e) if e.is_race() => {}
                    Err(e) => panic!("an append racing a tombstone: {e:?}"),
                }
            }
            acknowledged
        }));
    }
    let tombstone = loop {
        match within(
            "tombstone",
            store.tombstone_stream(&s, ExpectedVersion::Any),
        )
        .await
        {
            Ok(r) => break r,
            Err(e) if e.is_race() => {}
            Err(e) => panic!("tombstone: {e:?}"),
        }
    };
    for task in tasks {
        for version in within("an appender", task).await.expect("appender") {
            assert!(
                version < tombstone.stream_version,
                "an append acknowledged at version {version}, after the tombstone at {}",
                tombstone.stream_version
            );
        }
    }
}

/// A soft delete and an append racing on one stream, both expecting the version they read:
/// at most one succeeds (deleted first, the stream exists for no `Exact`; appended first, the
/// delete's version is stale), and a stream whose delete succeeded reads as not found.
pub async fn delete_races_appends_at_most_one_wins<S: EventStore + Clone>(store: S) {
    for round in 0..30 {
        let s = sid(&format!("duel-{round}"));
        append(&store, &s, ExpectedVersion::Any, evs("E", 0, 2)).await;
        let (deleted, appended) = tokio::join!(
            {
                let store = store.clone();
                let s = s.clone();
                async move { store.delete_stream(&s, ExpectedVersion::Exact(1)).await }
            },
            {
                let store = store.clone();
                let s = s.clone();
                async move {
                    store
                        .append(&s, ExpectedVersion::Exact(1), evs("E", 2, 1))
                        .await
                }
            }
        );
        assert!(
            !(deleted.is_ok() && appended.is_ok()),
            "round {round}: both the delete and the append were acknowledged"
        );
        if deleted.is_ok() {
            assert!(
                matches!(read_err(&store, &s).await, ReadError::StreamNotFound(_)),
                "round {round}: a deleted stream reads as not found"
            );
        }
        if let Err(e) = &appended {
            assert!(
                e.is_wrong_expected_version() || e.is_race(),
                "round {round}: {e:?}"
            );
        }
    }
}

/// The same race, forced: an append lands after `delete_stream` read the stream's version and
/// before it wrote the deletion. The store must refuse the stale deletion (a delete decided
/// on version 1 of a stream now at 2), so the delete answers a wrong expected version.
pub async fn a_delete_decided_on_a_stale_version_is_refused<S: EventStore + Clone>(store: S) {
    let s = sid("duel-forced");
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 2)).await;
    let racing = AppendAfterInfo {
        inner: store.clone(),
        fired: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let deleted = within(
        "delete_stream",
        racing.delete_stream(&s, ExpectedVersion::Exact(1)),
    )
    .await;
    assert!(
        racing.fired.load(std::sync::atomic::Ordering::SeqCst),
        "the racing append ran"
    );
    expect_wrong_version(deleted, &s, ExpectedVersion::Exact(1), Some(2));
    assert_eq!(versions(&stream_events(&store, &s).await), [0, 1, 2]);
}

/// A store that, the first time a stream's info is read, appends one event to it right after
/// reading (a writer racing whoever read it).
#[derive(Clone)]
struct AppendAfterInfo<S> {
    inner: S,
    fired: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl<S: EventStore + Clone> EventStore for AppendAfterInfo<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<strata_core::AppendResult, AppendError> {
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_stream(stream, options).await
    }
    async fn read_all(
        &self,
        options: strata_core::ReadAllOptions,
    ) -> Result<strata_core::AllPage, ReadError> {
        self.inner.read_all(options).await
    }
    async fn stream_info(&self, stream: &StreamId) -> Result<strata_core::StreamInfo, ReadError> {
        let info = self.inner.stream_info(stream).await?;
        if !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let expected = info
                .current_version
                .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            self.inner
                .append(stream, expected, evs("E", 99, 1))
                .await
                .expect("the racing append");
        }
        Ok(info)
    }
    async fn list_streams(
        &self,
        options: ListOptions,
    ) -> Result<strata_core::Page<strata_core::StreamSummary>, ReadError> {
        self.inner.list_streams(options).await
    }
    async fn list_categories(
        &self,
        options: ListOptions,
    ) -> Result<strata_core::Page<strata_core::CategorySummary>, ReadError> {
        self.inner.list_categories(options).await
    }
    async fn position_at(
        &self,
        at: strata_core::Timestamp,
    ) -> Result<Option<strata_core::Position>, ReadError> {
        self.inner.position_at(at).await
    }
    async fn head(&self) -> Result<Option<strata_core::Position>, ReadError> {
        self.inner.head().await
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes()
    }
    async fn subscribe(
        &self,
        target: SubscriptionTarget,
        from: SubscribeFrom,
    ) -> Result<strata_core::Subscription, ReadError> {
        self.inner.subscribe(target, from).await
    }
}

/// Truncation hides the events below a version, moves only forward, and never past the
/// stream's next version.
pub async fn truncate_hides_events_below_a_version<S: EventStore + Clone>(store: S) {
    let s = sid("ledger-1");
    let first = append(&store, &s, ExpectedVersion::Any, evs("E", 0, 5)).await;
    within("truncate", store.truncate_stream(&s, 2))
        .await
        .expect("truncate");
    let kept = stream_events(&store, &s).await;
    assert_eq!(versions(&kept), [2, 3, 4]);
    let page = read_stream(&store, &s, ReadStreamOptions::forward().limit(2)).await;
    assert_eq!(
        versions(&page),
        [2, 3],
        "a forward read starts at the first kept version"
    );
    let back = read_stream(&store, &s, ReadStreamOptions::backward()).await;
    assert_eq!(versions(&back), [4, 3, 2]);
    let info = within("stream_info", store.stream_info(&s))
        .await
        .expect("info");
    assert_eq!(info.event_count, 3);
    assert_eq!(info.first_recorded_at, Some(kept[0].recorded_at));
    assert_eq!(info.current_version, Some(4));
    let all = all_events(&store).await;
    let positions: Vec<_> = all
        .iter()
        .filter(|e| e.stream_id == s)
        .map(|e| e.position)
        .collect();
    assert_eq!(
        positions,
        first.positions[2..],
        "$all keeps the same events"
    );
    assert!(all
        .iter()
        .any(|e| e.event_type == EVENT_TYPE_STREAM_TRUNCATED && e.stream_id == s.metastream()));

    for (before, what) in [(1, "backward"), (6, "past the next version")] {
        assert!(
            matches!(
                within("truncate", store.truncate_stream(&s, before)).await,
                Err(AppendError::InvalidInput(_))
            ),
            "a truncation {what} is invalid"
        );
    }
    assert!(matches!(
        within("truncate", store.truncate_stream(&sid("ledger-9"), 0)).await,
        Err(AppendError::StreamNotFound(_))
    ));
    append(&store, &s, ExpectedVersion::Exact(4), evs("E", 5, 1)).await;
    within("truncate", store.truncate_stream(&s, 6))
        .await
        .expect("truncate to the end");
    assert!(matches!(
        read_err(&store, &s).await,
        ReadError::StreamNotFound(_)
    ));
}

/// Stream metadata is versioned like a stream, keeps custom metadata, and refuses what would
/// undo a deletion or fake a tombstone.
pub async fn stream_metadata_is_versioned<S: EventStore + Clone>(store: S) {
    let s = sid("user-1");
    let none = within("stream_metadata", store.stream_metadata(&s))
        .await
        .expect("metadata of a stream without any");
    assert_eq!(none.version, None);
    assert_eq!(none.metadata, StreamMetadata::default());
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 3)).await;

    let mut metadata = StreamMetadata::default();
    metadata
        .custom
        .insert("owner".to_owned(), json!({"team": "billing"}));
    within(
        "set_stream_metadata",
        store.set_stream_metadata(&s, ExpectedVersion::NoStream, metadata.clone()),
    )
    .await
    .expect("first metadata");
    expect_wrong_version(
        within(
            "set_stream_metadata",
            store.set_stream_metadata(&s, ExpectedVersion::NoStream, metadata.clone()),
        )
        .await,
        &s.metastream(),
        ExpectedVersion::NoStream,
        Some(0),
    );
    metadata.truncate_before = Some(1);
    let second = within(
        "set_stream_metadata",
        store.set_stream_metadata(&s, ExpectedVersion::Exact(0), metadata.clone()),
    )
    .await
    .expect("second metadata");
    assert_eq!(second.stream_version, 1);
    let stored = within("stream_metadata", store.stream_metadata(&s))
        .await
        .expect("metadata");
    assert_eq!(stored.version, Some(1));
    assert_eq!(stored.metadata, metadata);
    assert_eq!(versions(&stream_events(&store, &s).await), [1, 2]);
    let meta_events = stream_events(&store, &s.metastream()).await;
    assert_eq!(meta_events.len(), 2);
    assert!(meta_events
        .iter()
        .all(|e| e.event_type == EVENT_TYPE_METADATA));

    let refused = [
        StreamMetadata {
            tombstoned: true,
            ..metadata.clone()
        },
        StreamMetadata {
            truncate_before: Some(0),
            ..metadata.clone()
        },
        StreamMetadata {
            truncate_before: Some(4),
            ..metadata.clone()
        },
    ];
    for bad in refused {
        assert!(
            matches!(
                within(
                    "set_stream_metadata",
                    store.set_stream_metadata(&s, ExpectedVersion::Any, bad.clone()),
                )
                .await,
                Err(AppendError::InvalidInput(_))
            ),
            "metadata {bad:?} is refused"
        );
    }
    assert_eq!(
        within("stream_metadata", store.stream_metadata(&s))
            .await
            .expect("metadata")
            .version,
        Some(1),
        "refused metadata writes nothing"
    );
    // Metadata without `truncateBefore` keeps the stream's.
    within(
        "set_stream_metadata",
        store.set_stream_metadata(&s, ExpectedVersion::Exact(1), StreamMetadata::default()),
    )
    .await
    .expect("metadata without truncateBefore");
    let kept = within("stream_metadata", store.stream_metadata(&s))
        .await
        .expect("metadata");
    assert_eq!(kept.metadata.truncate_before, Some(1));
    assert!(kept.metadata.custom.is_empty());
    assert_eq!(versions(&stream_events(&store, &s).await), [1, 2]);
}

/// `maxCount` keeps the newest events, and `maxAge` the recent ones, in stream reads and in
/// `$all`.
pub async fn max_count_and_max_age_bound_what_is_read<S: EventStore + Clone>(store: S) {
    let s = sid("sensor-1");
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 5)).await;
    let keep_two = StreamMetadata {
        max_count: Some(2),
        ..StreamMetadata::default()
    };
    within(
        "set_stream_metadata",
        store.set_stream_metadata(&s, ExpectedVersion::Any, keep_two),
    )
    .await
    .expect("maxCount");
    assert_eq!(versions(&stream_events(&store, &s).await), [3, 4]);
    append(&store, &s, ExpectedVersion::Any, evs("E", 5, 1)).await;
    assert_eq!(versions(&stream_events(&store, &s).await), [4, 5]);
    let in_all: Vec<u64> = all_events(&store)
        .await
        .iter()
        .filter(|e| e.stream_id == s)
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(in_all, [4, 5]);

    // An age of 0 seconds keeps nothing recorded before now; a long one keeps all again.
    let ages = |seconds| StreamMetadata {
        max_age_seconds: Some(seconds),
        ..StreamMetadata::default()
    };
    within(
        "set_stream_metadata",
        store.set_stream_metadata(&s, ExpectedVersion::Any, ages(0)),
    )
    .await
    .expect("maxAge");
    assert_eq!(
        versions(&stream_events(&store, &s).await),
        Vec::<u64>::new()
    );
    assert!(all_events(&store).await.iter().all(|e| e.stream_id != s));
    within(
        "set_stream_metadata",
        store.set_stream_metadata(&s, ExpectedVersion::Any, ages(3600)),
    )
    .await
    .expect("maxAge");
    assert_eq!(
        versions(&stream_events(&store, &s).await),
        [0, 1, 2, 3, 4, 5]
    );
}

/// Event types starting with `$` are Strata's, and a metastream takes only well-formed
/// metadata, one event at a time.
pub async fn reserved_names_are_refused<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let bad_type = EventData::json("$custom", &json!({})).expect("event");
    assert_eq!(
        expect_invalid_append(
            store.append(&s, ExpectedVersion::Any, vec![bad_type]).await,
            "events[0].event_type",
        )
        .field,
        "events[0].event_type"
    );
    let tombstone_among_others = vec![
        ev("E", 0),
        EventData::json(EVENT_TYPE_STREAM_TOMBSTONED, &json!({})).expect("event"),
    ];
    assert_eq!(
        expect_invalid_append(
            store
                .append(&s, ExpectedVersion::Any, tombstone_among_others)
                .await,
            "events[1].event_type",
        )
        .field,
        "events[1].event_type"
    );
    let meta = s.metastream();
    let not_metadata =
        EventData::json(EVENT_TYPE_METADATA, &json!({"maxCount": "ten"})).expect("event");
    assert_eq!(
        expect_invalid_append(
            store
                .append(&meta, ExpectedVersion::Any, vec![not_metadata])
                .await,
            "events[0].data",
        )
        .field,
        "events[0].data"
    );
    let fake_tombstone =
        EventData::json(EVENT_TYPE_METADATA, &json!({"tombstoned": true})).expect("event");
    assert_eq!(
        expect_invalid_append(
            store
                .append(&meta, ExpectedVersion::Any, vec![fake_tombstone])
                .await,
            "tombstoned outside a tombstone",
        )
        .field,
        "events[0].data"
    );
    let nul =
        EventData::json(EVENT_TYPE_METADATA, &json!({"custom": {"x": "a\u{0}b"}})).expect("event");
    assert_eq!(
        expect_invalid_append(
            store.append(&meta, ExpectedVersion::Any, vec![nul]).await,
            "U+0000 in metadata",
        )
        .field,
        "events[0].data"
    );
    let wrong_type = EventData::json("E", &json!({})).expect("event");
    assert_eq!(
        expect_invalid_append(
            store
                .append(&meta, ExpectedVersion::Any, vec![wrong_type])
                .await,
            "events[0].event_type",
        )
        .field,
        "events[0].event_type"
    );
    assert!(all_events(&store).await.is_empty(), "nothing was written");
}

/// A subscriber to a category is told when one of its streams is deleted, truncated or
/// tombstoned, and gets no event of a deleted stream afterwards.
pub async fn subscribers_are_told_of_lifecycle_changes<S: EventStore + Clone>(store: S) {
    let s = sid("account-7");
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 2)).await;
    let target = SubscriptionTarget::All(Filter::default().categories(["account"]));
    let mut sub = within("subscribe", store.subscribe(target, SubscribeFrom::Start))
        .await
        .expect("subscribe");
    let seen = next_events(&mut sub, 2, "the stream's events").await;
    assert_eq!(versions(&seen), [0, 1]);
    within("truncate", store.truncate_stream(&s, 1))
        .await
        .expect("truncate");
    within("delete", store.delete_stream(&s, ExpectedVersion::Any))
        .await
        .expect("delete");
    let told = next_events(&mut sub, 2, "the lifecycle events").await;
    let kinds: Vec<&str> = told.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [EVENT_TYPE_STREAM_TRUNCATED, EVENT_TYPE_STREAM_DELETED]
    );
    assert!(told.iter().all(|e| e.stream_id == s.metastream()));
    assert_eq!(metadata_event(&told[1]).truncate_before, Some(2));
    append(&store, &s, ExpectedVersion::NoStream, evs("E", 2, 1)).await;
    let recreated = next_event(&mut sub, "the re-created stream's event").await;
    assert_eq!(
        (recreated.stream_id.clone(), recreated.stream_version),
        (s, 2)
    );

    // A fresh subscriber from the start sees the re-created event and the lifecycle events.
    let target = SubscriptionTarget::All(Filter::default().categories(["account"]));
    let mut fresh = within("subscribe", store.subscribe(target, SubscribeFrom::Start))
        .await
        .expect("subscribe");
    let replayed = next_events(&mut fresh, 3, "a replay from the start").await;
    let kinds: Vec<&str> = replayed.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [EVENT_TYPE_STREAM_TRUNCATED, EVENT_TYPE_STREAM_DELETED, "E"]
    );
    assert_quiet(&mut fresh, "nothing else").await;
}
