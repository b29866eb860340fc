//! Reading one stream: direction, start version, limit, `max_position`, missing streams.

use strata_core::{EventStore, ExpectedVersion, ReadError, ReadStreamOptions, RecordedEvent};

use super::support::*;

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version).collect()
}

/// Forward reads oldest first, backward newest first, each the whole stream by default.
pub async fn read_stream_forward_and_backward<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 4)).await;
    append(
        &store,
        &sid("account-2"),
        ExpectedVersion::Any,
        evs("E", 0, 2),
    )
    .await;
    append(&store, &s, ExpectedVersion::Any, evs("E", 4, 3)).await;
    let forward = read_stream(&store, &s, ReadStreamOptions::forward()).await;
    assert_eq!(versions(&forward), (0..7).collect::<Vec<_>>());
    let backward = read_stream(&store, &s, ReadStreamOptions::backward()).await;
    assert_eq!(versions(&backward), (0..7).rev().collect::<Vec<_>>());
    let mut reversed = backward.clone();
    reversed.reverse();
    assert_eq!(reversed, forward, "both directions return the same events");
}

/// `from_version` is inclusive in both directions; `limit` caps the count.
pub async fn read_stream_from_version_and_limit<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 10)).await;
    let o = ReadStreamOptions::forward;
    let b = ReadStreamOptions::backward;
    let cases: Vec<(ReadStreamOptions, Vec<u64>)> = vec![
        (o().from_version(3), (3..10).collect()),
        (o().from_version(3).limit(4), vec![3, 4, 5, 6]),
        (o().limit(2), vec![0, 1]),
        (o().from_version(9), vec![9]),
        (o().limit(1), vec![0]),
        (o().limit(0), vec![]),
        (b().from_version(3), vec![3, 2, 1, 0]),
        (b().from_version(6).limit(3), vec![6, 5, 4]),
        (b().limit(2), vec![9, 8]),
        (b().from_version(0), vec![0]),
        (b().limit(0), vec![]),
    ];
    for (options, expected) in cases {
        let events = read_stream(&store, &s, options.clone()).await;
        assert_eq!(versions(&events), expected, "read_stream with {options:?}");
    }
    // Paging forward with the limit visits every version once.
    let mut seen = Vec::new();
    let mut from = 0;
    loop {
        let page = read_stream(&store, &s, o().from_version(from).limit(3)).await;
        match page.last() {
            Some(last) => from = last.stream_version + 1,
            None => break,
        }
        seen.extend(versions(&page));
        assert!(seen.len() <= 10, "paging must end");
    }
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

/// Forward from a version past the end is empty; backward from past the end starts at the end.
pub async fn read_stream_past_the_end<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 3)).await;
    for from in [3, 4, 1_000, u64::MAX] {
        let forward =
            read_stream(&store, &s, ReadStreamOptions::forward().from_version(from)).await;
        assert!(forward.is_empty(), "forward from {from}: {forward:?}");
        let backward =
            read_stream(&store, &s, ReadStreamOptions::backward().from_version(from)).await;
        assert_eq!(versions(&backward), vec![2, 1, 0], "backward from {from}");
    }
}

/// `max_position` hides the stream's events after that position; a stream with no event at
/// or below it reads as not found (it did not exist then).
pub async fn read_stream_max_position<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let early = append(
        &store,
        &sid("other-1"),
        ExpectedVersion::Any,
        vec![ev("X", 0)],
    )
    .await;
    let r1 = append(&store, &s, ExpectedVersion::Any, evs("E", 0, 3)).await;
    let gap = append(
        &store,
        &sid("other-1"),
        ExpectedVersion::Any,
        vec![ev("X", 1)],
    )
    .await;
    append(&store, &s, ExpectedVersion::Any, evs("E", 3, 2)).await;

    let at = |p| ReadStreamOptions::forward().max_position(p);
    assert_eq!(
        versions(&read_stream(&store, &s, at(r1.positions[2])).await),
        vec![0, 1, 2]
    );
    assert_eq!(
        versions(&read_stream(&store, &s, at(gap.positions[0])).await),
        vec![0, 1, 2],
        "a max_position between the stream's events"
    );
    assert_eq!(
        versions(&read_stream(&store, &s, at(r1.positions[0])).await),
        vec![0]
    );
    assert_eq!(
        versions(&read_stream(&store, &s, at(strata_core::Position::END)).await),
        vec![0, 1, 2, 3, 4]
    );
    let backward = ReadStreamOptions::backward().max_position(r1.positions[1]);
    assert_eq!(
        versions(&read_stream(&store, &s, backward).await),
        vec![1, 0],
        "backward starts at the last visible version"
    );
    let backward_from = ReadStreamOptions::backward()
        .from_version(4)
        .max_position(gap.positions[0]);
    assert_eq!(
        versions(&read_stream(&store, &s, backward_from).await),
        vec![2, 1, 0]
    );
    let forward_past = ReadStreamOptions::forward()
        .from_version(3)
        .max_position(gap.positions[0]);
    assert!(read_stream(&store, &s, forward_past).await.is_empty());
    match store.read_stream(&s, at(early.positions[0])).await {
        Err(ReadError::StreamNotFound(name)) => assert_eq!(name, s),
        other => panic!("the stream did not exist at that position, got {other:?}"),
    }
}

/// A stream with no events is `StreamNotFound`, in both directions and from any version.
pub async fn read_stream_missing_is_not_found<S: EventStore + Clone>(store: S) {
    let missing = sid("account-404");
    append(
        &store,
        &sid("account-4"),
        ExpectedVersion::Any,
        evs("E", 0, 2),
    )
    .await;
    append(
        &store,
        &sid("account-4040"),
        ExpectedVersion::Any,
        evs("E", 0, 2),
    )
    .await;
    for options in [
        ReadStreamOptions::forward(),
        ReadStreamOptions::backward(),
        ReadStreamOptions::forward().from_version(1),
    ] {
        match store.read_stream(&missing, options.clone()).await {
            Err(ReadError::StreamNotFound(s)) => assert_eq!(s, missing),
            other => panic!("read_stream({missing}, {options:?}) gave {other:?}"),
        }
    }
    // A failed append does not create the stream.
    let _ = store
        .append(&missing, ExpectedVersion::Exact(0), vec![ev("E", 0)])
        .await;
    assert_stream_missing(&store, &missing).await;
}

/// A stream read returns only that stream's events, even among streams with similar names.
pub async fn read_stream_returns_only_its_stream<S: EventStore + Clone>(store: S) {
    let names = ["a-1", "a-10", "a-1-x", "A-1", "a-1_"];
    for round in 0..3 {
        for (i, name) in names.iter().enumerate() {
            append(
                &store,
                &sid(name),
                ExpectedVersion::Any,
                evs(&format!("T{i}"), round, 1),
            )
            .await;
        }
    }
    for (i, name) in names.iter().enumerate() {
        let s = sid(name);
        let events = stream_events(&store, &s).await;
        assert_eq!(events.len(), 3, "{name} has its 3 events");
        for e in &events {
            assert_eq!(e.stream_id, s);
            assert_eq!(e.event_type, format!("T{i}"));
        }
        assert_eq!(versions(&events), vec![0, 1, 2]);
    }
}
