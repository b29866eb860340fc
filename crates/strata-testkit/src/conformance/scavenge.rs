//! Scavenging (`strata_core::scavenge`): it removes exactly what readers can no longer see,
//! changes no answer a reader gets, and keeps what the next append needs.

use strata_core::scavenge::ScavengeReport;
use strata_core::{
    AppendError, EventStore, ExpectedVersion, ListOptions, ReadAllOptions, ReadError,
    ReadStreamOptions, RecordedEvent, StreamId, StreamMetadata,
};

use super::support::*;

/// Everything a reader can ask of the streams in the case, as answers to compare.
#[derive(Debug, PartialEq)]
struct Seen {
    streams: Vec<(StreamId, Reads)>,
    all: Vec<RecordedEvent>,
    all_backward: Vec<RecordedEvent>,
    listed: Vec<(String, u64)>,
    categories: Vec<(String, u64)>,
    head: Option<strata_core::Position>,
}

#[derive(Debug, PartialEq)]
struct Reads {
    forward: Result<Vec<RecordedEvent>, &'static str>,
    backward: Result<Vec<RecordedEvent>, &'static str>,
    page_of_two: Result<Vec<RecordedEvent>, &'static str>,
    info: strata_core::StreamInfo,
    metadata: strata_core::StreamMetadataRecord,
}

fn kind(e: ReadError) -> &'static str {
    match e {
        ReadError::StreamNotFound(_) => "not found",
        ReadError::StreamTombstoned(_) => "tombstoned",
        other => panic!("a read failed: {other:?}"),
    }
}

async fn seen<S: EventStore>(store: &S, streams: &[StreamId]) -> Seen {
    let mut reads = Vec::new();
    for s in streams {
        let read = |o: ReadStreamOptions| async move {
            within("read_stream", store.read_stream(s, o))
                .await
                .map_err(kind)
        };
        reads.push((
            s.clone(),
            Reads {
                forward: read(ReadStreamOptions::forward()).await,
                backward: read(ReadStreamOptions::backward()).await,
                page_of_two: read(ReadStreamOptions::forward().limit(2)).await,
                info: within("stream_info", store.stream_info(s))
                    .await
                    .expect("stream_info"),
                metadata: within("stream_metadata", store.stream_metadata(s))
                    .await
                    .expect("stream_metadata"),
            },
        ));
    }
    let listed = within("list_streams", store.list_streams(ListOptions::default()))
        .await
        .expect("list_streams")
        .items
        .into_iter()
        .map(|s| (s.stream_id, s.event_count))
        .collect();
    // Category listings count the streams stored (docs/lifecycle.md): a scavenge removes a
    // tombstoned stream from them.
    let categories = within(
        "list_categories",
        store.list_categories(ListOptions::default()),
    )
    .await
    .expect("list_categories")
    .items
    .into_iter()
    .map(|c| (c.category, c.stream_count))
    .collect();
    Seen {
        streams: reads,
        all: all_events(store).await,
        all_backward: read_all_pages(store, ReadAllOptions::backward()).await,
        listed,
        categories,
        head: head(store).await,
    }
}

fn versions_of(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version).collect()
}

async fn scavenge<S: EventStore>(store: &S) -> ScavengeReport {
    let calls = std::sync::atomic::AtomicU64::new(0);
    let progress = |_| {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let report = within("scavenge", store.scavenge(&progress))
        .await
        .expect("scavenge");
    assert!(
        calls.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "a scavenge reports its progress"
    );
    report
}

/// A scavenge removes the events every lifecycle hides (soft delete, truncation, tombstone,
/// `maxCount`, `maxAgeSeconds`) but each stream's last one, and nothing else: every read
/// answers as before, a reader paging `$all` across it sees each surviving event once, and
/// appends afterwards continue the versions (or stay refused, for a tombstone).
pub async fn scavenge_removes_only_what_readers_cannot_see<S: EventStore + Clone>(store: S) {
    let recreated = sid("account-1");
    let truncated = sid("account-2");
    let tombstoned = sid("account-3");
    let counted = sid("account-4");
    let deleted = sid("account-5");
    let aged = sid("sensor-1");
    let plain = sid("order-1");
    let set = |s: &StreamId, m: StreamMetadata| {
        let (store, s) = (store.clone(), s.clone());
        async move {
            within(
                "set_stream_metadata",
                store.set_stream_metadata(&s, ExpectedVersion::Any, m),
            )
            .await
            .expect("set metadata");
        }
    };
    append(
        &store,
        &recreated,
        ExpectedVersion::NoStream,
        evs("E", 0, 5),
    )
    .await;
    append(
        &store,
        &truncated,
        ExpectedVersion::NoStream,
        evs("E", 0, 6),
    )
    .await;
    append(
        &store,
        &tombstoned,
        ExpectedVersion::NoStream,
        evs("E", 0, 3),
    )
    .await;
    append(&store, &counted, ExpectedVersion::NoStream, evs("E", 0, 10)).await;
    append(&store, &deleted, ExpectedVersion::NoStream, evs("E", 0, 3)).await;
    append(&store, &aged, ExpectedVersion::NoStream, evs("E", 0, 4)).await;
    append(&store, &plain, ExpectedVersion::NoStream, evs("E", 0, 4)).await;
    within(
        "delete_stream",
        store.delete_stream(&recreated, ExpectedVersion::Exact(4)),
    )
    .await
    .expect("delete");
    append(
        &store,
        &recreated,
        ExpectedVersion::NoStream,
        evs("E", 5, 2),
    )
    .await;
    within("truncate_stream", store.truncate_stream(&truncated, 4))
        .await
        .expect("truncate");
    within(
        "tombstone_stream",
        store.tombstone_stream(&tombstoned, ExpectedVersion::Exact(2)),
    )
    .await
    .expect("tombstone");
    set(
        &counted,
        StreamMetadata {
            max_count: Some(3),
            ..StreamMetadata::default()
        },
    )
    .await;
    within(
        "delete_stream",
        store.delete_stream(&deleted, ExpectedVersion::Any),
    )
    .await
    .expect("delete");
    // An age of 0 seconds hides every event recorded before now.
    set(
        &aged,
        StreamMetadata {
            max_age_seconds: Some(0),
            ..StreamMetadata::default()
        },
    )
    .await;
    let streams = [
        recreated.clone(),
        truncated.clone(),
        tombstoned.clone(),
        counted.clone(),
        deleted.clone(),
        aged.clone(),
        plain.clone(),
    ];
    let before = seen(&store, &streams).await;
    // A reader part way through `$all` when the scavenge runs.
    let first_page = read_all(&store, ReadAllOptions::forward().limit(5)).await;

    let report = scavenge(&store).await;
    // Removed, the last event of each kept and the first of each but the tombstoned one:
    // the re-created stream's 1..5 (4), the truncated one's 1..4 (3), the tombstoned one's
    // 0..3 (3, its tombstone stays), 1..7 of the ten with maxCount 3 (6), 1..2 of the deleted
    // one (1), and 1..3 of the aged one (2).
    assert_eq!(
        report.progress.events_removed,
        4 + 3 + 3 + 6 + 1 + 2,
        "{report:?}"
    );
    assert!(report.progress.streams_examined >= 6, "{report:?}");

    let mut after = seen(&store, &streams).await;
    // The tombstoned stream loses its first event, and leaves the category listing that
    // counted it while it was stored.
    assert_eq!(
        after.categories,
        [
            ("account".to_owned(), 4),
            ("order".to_owned(), 1),
            ("sensor".to_owned(), 1)
        ]
    );
    after.categories.clone_from(&before.categories);
    for ((s, a), (_, b)) in after.streams.iter().zip(&before.streams) {
        assert_eq!(a, b, "a scavenge changes no answer about {s}");
    }
    assert_eq!(after.all, before.all, "a scavenge changes no event of $all");
    assert_eq!(after, before, "a scavenge changes no answer a reader gets");
    let mut paged = first_page.events;
    let rest = read_all_pages(
        &store,
        ReadAllOptions::forward().from(first_page.next.expect("a forward page has a next")),
    )
    .await;
    paged.extend(rest);
    assert_eq!(
        ids(&paged),
        ids(&before.all),
        "a reader paging $all across a scavenge sees every surviving event once"
    );
    assert_eq!(
        scavenge(&store).await.progress.events_removed,
        0,
        "a second scavenge has nothing left to remove"
    );

    // The kept last events carry the versions on.
    let r = append(&store, &deleted, ExpectedVersion::NoStream, evs("E", 9, 1)).await;
    assert_eq!(r.stream_version, 3, "a deleted stream re-created continues");
    assert_eq!(versions_of(&stream_events(&store, &deleted).await), [3]);
    let listed = within(
        "list_categories",
        store.list_categories(ListOptions::default()),
    )
    .await
    .expect("list_categories");
    assert_eq!(
        listed.items[0].stream_count, 4,
        "a re-created stream is in its category: {listed:?}"
    );
    let r = append(
        &store,
        &truncated,
        ExpectedVersion::Exact(5),
        evs("E", 6, 1),
    )
    .await;
    assert_eq!(r.stream_version, 6);
    let r = append(&store, &counted, ExpectedVersion::Exact(9), evs("E", 10, 1)).await;
    assert_eq!(r.stream_version, 10);
    match within(
        "append",
        store.append(&tombstoned, ExpectedVersion::Any, evs("E", 9, 1)),
    )
    .await
    {
        Err(AppendError::StreamTombstoned { stream }) => assert_eq!(stream, tombstoned),
        other => panic!("a scavenged tombstoned stream stays closed, got {other:?}"),
    }
    assert_eq!(
        versions_of(&stream_events(&store, &counted).await),
        [8, 9, 10]
    );
}
