//! Limits and malformed input: typed errors, and nothing written.

use serde_json::json;
use strata_core::{
    limits, AppendError, EventData, EventStore, ExpectedVersion, Filter, ListOptions, Metadata,
    ReadAllOptions, ReadError, ReadStreamOptions, StreamId, SubscribeFrom, SubscriptionTarget,
    Uuid,
};

use super::support::*;

/// Appends one event to `other-1` so "nothing written" is checked against a non-empty store.
async fn seed<S: EventStore>(store: &S) -> Vec<strata_core::RecordedEvent> {
    append(
        store,
        &sid("other-1"),
        ExpectedVersion::Any,
        evs("Seed", 0, 1),
    )
    .await;
    all_events(store).await
}

/// More than [`limits::APPEND_EVENTS_MAX`] events in one append is a limit error and writes
/// nothing; exactly the limit is accepted and reads back as one page.
pub async fn too_many_events_is_limit_error<S: EventStore + Clone>(store: S) {
    let s = sid("bulk-1");
    let before = seed(&store).await;
    let too_many = vec![ev("E", 0); limits::APPEND_EVENTS_MAX + 1];
    let e = expect_append_limit(
        store.append(&s, ExpectedVersion::Any, too_many).await,
        "too many events",
    );
    assert_eq!(e.max, limits::APPEND_EVENTS_MAX as u64);
    assert_eq!(e.actual, limits::APPEND_EVENTS_MAX as u64 + 1);
    assert_unchanged(&store, &before).await;
    assert_stream_missing(&store, &s).await;
    let max = evs("E", 0, limits::APPEND_EVENTS_MAX as u64);
    let r = append(&store, &s, ExpectedVersion::NoStream, max).await;
    assert_eq!(r.stream_version, limits::APPEND_EVENTS_MAX as u64 - 1);
    let events = stream_events(&store, &s).await;
    assert_eq!(events.len(), limits::APPEND_EVENTS_MAX);
    assert_eq!(
        events[limits::APPEND_EVENTS_MAX - 1].data_json(),
        Some(json!({"n": limits::APPEND_EVENTS_MAX - 1}))
    );
}

/// A payload over [`limits::EVENT_DATA_MAX_BYTES`] is a limit error and nothing of its append is
/// written; a payload of exactly the limit round-trips.
pub async fn data_too_large_is_limit_error<S: EventStore + Clone>(store: S) {
    let s = sid("blob-1");
    let before = seed(&store).await;
    let big = |len: usize| {
        EventData::binary(
            "Blob",
            "application/octet-stream",
            (0..len).map(|i| (i % 251) as u8).collect(),
        )
    };
    let result = store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![ev("Small", 0), big(limits::EVENT_DATA_MAX_BYTES + 1)],
        )
        .await;
    let e = expect_append_limit(result, "data one byte too large");
    assert_eq!(e.max, limits::EVENT_DATA_MAX_BYTES as u64);
    let json_big =
        EventData::json("Big", &"x".repeat(limits::EVENT_DATA_MAX_BYTES)).expect("serialize");
    expect_append_limit(
        store.append(&s, ExpectedVersion::Any, vec![json_big]).await,
        "JSON data too large",
    );
    assert_unchanged(&store, &before).await;
    let exact = big(limits::EVENT_DATA_MAX_BYTES);
    append(&store, &s, ExpectedVersion::NoStream, vec![exact.clone()]).await;
    let read = stream_events(&store, &s).await;
    assert_eq!(
        read[0].data, exact.data,
        "a payload of exactly the limit round-trips"
    );
}

/// Metadata over [`limits::EVENT_METADATA_MAX_BYTES`] (encoded) is a limit error; exactly the
/// limit is accepted.
pub async fn metadata_too_large_is_limit_error<S: EventStore + Clone>(store: S) {
    let s = sid("meta-1");
    let before = seed(&store).await;
    // {"k":"…"} encodes to 8 bytes plus the value.
    let meta = |len: usize| Metadata::new().with("k", json!("m".repeat(len - 8)));
    assert_eq!(meta(100).to_bytes().len(), 100);
    let over = ev("E", 0).with_metadata(meta(limits::EVENT_METADATA_MAX_BYTES + 1));
    let e = expect_append_limit(
        store.append(&s, ExpectedVersion::Any, vec![over]).await,
        "metadata too large",
    );
    assert_eq!(e.max, limits::EVENT_METADATA_MAX_BYTES as u64);
    assert_unchanged(&store, &before).await;
    let exact = ev("E", 0).with_metadata(meta(limits::EVENT_METADATA_MAX_BYTES));
    append(&store, &s, ExpectedVersion::NoStream, vec![exact.clone()]).await;
    assert_eq!(stream_events(&store, &s).await[0].metadata, exact.metadata);
}

/// An append whose events together exceed [`limits::APPEND_MAX_BYTES`] is a limit error and
/// writes none of them, though each is within the per-event limit.
pub async fn append_too_many_bytes_is_limit_error<S: EventStore + Clone>(store: S) {
    let s = sid("bulk-1");
    let before = seed(&store).await;
    let count = limits::APPEND_MAX_BYTES / limits::EVENT_DATA_MAX_BYTES + 1;
    let chunk = vec![7u8; limits::EVENT_DATA_MAX_BYTES];
    let events = (0..count)
        .map(|_| EventData::binary("Chunk", "application/octet-stream", chunk.clone()))
        .collect();
    let e = expect_append_limit(
        store.append(&s, ExpectedVersion::Any, events).await,
        "too many bytes in one append",
    );
    assert_eq!(e.max, limits::APPEND_MAX_BYTES as u64);
    assert_unchanged(&store, &before).await;
    assert_stream_missing(&store, &s).await;
}

/// An event type over [`limits::EVENT_TYPE_MAX_BYTES`] is a limit error; exactly the limit is
/// accepted.
pub async fn event_type_too_long_is_limit_error<S: EventStore + Clone>(store: S) {
    let s = sid("type-1");
    let before = seed(&store).await;
    let long = "T".repeat(limits::EVENT_TYPE_MAX_BYTES + 1);
    let e = expect_append_limit(
        store
            .append(&s, ExpectedVersion::Any, vec![ev(&long, 0)])
            .await,
        "event type too long",
    );
    assert_eq!(e.max, limits::EVENT_TYPE_MAX_BYTES as u64);
    assert_unchanged(&store, &before).await;
    // Multi-byte characters count in bytes: 128 two-byte characters are 256 bytes.
    expect_append_limit(
        store
            .append(&s, ExpectedVersion::Any, vec![ev(&"é".repeat(128), 0)])
            .await,
        "event type too long in bytes",
    );
    let exact = "T".repeat(limits::EVENT_TYPE_MAX_BYTES);
    append(&store, &s, ExpectedVersion::NoStream, vec![ev(&exact, 0)]).await;
    assert_eq!(stream_events(&store, &s).await[0].event_type, exact);
}

/// A stream id over [`limits::STREAM_ID_MAX_BYTES`] cannot be built, so it never reaches a
/// store; one of exactly the limit works end to end.
pub async fn stream_id_too_long_is_rejected<S: EventStore + Clone>(store: S) {
    let too_long = StreamId::new("s".repeat(limits::STREAM_ID_MAX_BYTES + 1));
    match too_long {
        Err(e) => assert_eq!(e.field, "stream_id"),
        Ok(id) => panic!("a stream id of {} bytes was accepted", id.as_str().len()),
    }
    let longest = sid(&format!(
        "long-{}",
        "s".repeat(limits::STREAM_ID_MAX_BYTES - 5)
    ));
    assert_eq!(longest.as_str().len(), limits::STREAM_ID_MAX_BYTES);
    append(&store, &longest, ExpectedVersion::NoStream, evs("E", 0, 2)).await;
    let events = stream_events(&store, &longest).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].stream_id, longest);
    let listed = within("list_streams", store.list_streams(ListOptions::default()))
        .await
        .expect("list_streams");
    assert_eq!(listed.items[0].stream_id, longest.as_str());
}

/// Reads and listings over their limits are limit errors; malformed filters are rejected,
/// also through a subscription.
pub async fn read_limits_are_enforced<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 3)).await;
    let over = limits::READ_PAGE_MAX_EVENTS + 1;
    expect_read_limit(
        store
            .read_stream(&s, ReadStreamOptions::forward().limit(over))
            .await,
        "read_stream limit",
    );
    expect_read_limit(
        store
            .read_stream(&s, ReadStreamOptions::backward().limit(over))
            .await,
        "read_stream backward limit",
    );
    expect_read_limit(
        store.read_all(ReadAllOptions::forward().limit(over)).await,
        "read_all limit",
    );
    expect_read_limit(
        store.read_all(ReadAllOptions::backward().limit(over)).await,
        "read_all backward limit",
    );
    let too_many: Vec<String> = (0..=limits::FILTER_MAX_TERMS)
        .map(|i| format!("T{i}"))
        .collect();
    let filters = [
        Filter::default().event_types(too_many.clone()),
        Filter::default().categories(too_many.clone()),
        Filter::default().stream_prefix("p".repeat(limits::FILTER_PREFIX_MAX_BYTES + 1)),
    ];
    for filter in &filters {
        expect_read_limit(
            store
                .read_all(ReadAllOptions::forward().filter(filter.clone()))
                .await,
            "filter over its limits",
        );
    }
    let ok = Filter::default().event_types(too_many[..limits::FILTER_MAX_TERMS].to_vec());
    let page = read_all(&store, ReadAllOptions::forward().filter(ok)).await;
    assert!(
        page.events.is_empty(),
        "a filter of exactly the limit is accepted"
    );
    match store
        .read_all(ReadAllOptions::forward().filter(Filter::default().event_types([""])))
        .await
    {
        Err(ReadError::InvalidInput(_)) => {}
        other => panic!("an empty event type in a filter is invalid, got {other:?}"),
    }
    let list_over = limits::LIST_PAGE_MAX_ENTRIES + 1;
    expect_read_limit(
        store
            .list_streams(ListOptions::default().limit(list_over))
            .await,
        "list_streams limit",
    );
    expect_read_limit(
        store
            .list_categories(ListOptions::default().limit(list_over))
            .await,
        "list_categories limit",
    );
    let mut sub = store
        .subscribe(
            SubscriptionTarget::All(filters[0].clone()),
            SubscribeFrom::Start,
        )
        .await
        .expect("subscribe");
    expect_read_limit(
        within("a subscription with a bad filter", sub.next()).await,
        "subscription filter",
    );
}

/// Malformed appends are `InvalidInput` naming the field, and write nothing: no events, an
/// empty or control-character event type, invalid JSON under the JSON content type, the nil
/// UUID, an empty or non-ASCII content type.
pub async fn bad_input_is_rejected_and_writes_nothing<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let before = seed(&store).await;
    let json_bad = |data: &[u8]| EventData {
        data: data.to_vec(),
        ..ev("E", 0)
    };
    let with_type = |t: &str| EventData {
        event_type: t.to_owned(),
        ..ev("E", 0)
    };
    let with_content_type = |c: &str| EventData {
        content_type: c.to_owned(),
        ..ev("E", 0)
    };
    let deep = format!(
        "{}1{}",
        "[".repeat(limits::JSON_NESTING_MAX_DEPTH + 1),
        "]".repeat(limits::JSON_NESTING_MAX_DEPTH + 1)
    )
    .into_bytes();
    let mut nested = serde_json::json!(1);
    for _ in 0..limits::JSON_NESTING_MAX_DEPTH {
        nested = serde_json::json!([nested]);
    }
    let deep_metadata = Metadata::new().with("a", nested);
    let cases: Vec<(&str, Vec<EventData>, &str)> = vec![
        ("no events", vec![], "events"),
        ("empty event type", vec![with_type("")], "event_type"),
        (
            "control character in event type",
            vec![with_type("A\nB")],
            "event_type",
        ),
        (
            "invalid JSON",
            vec![ev("E", 0), json_bad(b"{not json")],
            "events[1].data",
        ),
        ("empty JSON", vec![json_bad(b"")], "data"),
        ("two JSON documents", vec![json_bad(b"{} {}")], "data"),
        // JSON that only a lenient scan accepts: every reader that decodes it fails.
        (
            "a lone surrogate",
            vec![json_bad(br#"{"a":"\ud800"}"#)],
            "events[0].data",
        ),
        (
            "a number out of range",
            vec![json_bad(b"[1e400]")],
            "events[0].data",
        ),
        (
            "nesting past the limit",
            vec![json_bad(&deep)],
            "events[0].data",
        ),
        (
            "metadata nested past the limit",
            vec![ev("E", 0).with_metadata(deep_metadata)],
            "events[0].metadata",
        ),
        (
            "nil UUID",
            vec![ev("E", 0).with_id(Uuid::nil())],
            "event_id",
        ),
        (
            "empty content type",
            vec![with_content_type("")],
            "content_type",
        ),
        (
            "non-ASCII content type",
            vec![with_content_type("text/é")],
            "content_type",
        ),
    ];
    for (what, events, field) in cases {
        for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
            let e = expect_invalid_append(store.append(&s, expected, events.clone()).await, what);
            assert!(
                e.field.contains(field),
                "{what}: the error names `{field}`, got `{}`",
                e.field
            );
        }
    }
    // Invalid input is rejected before the expected version is looked at.
    let result = store
        .append(&s, ExpectedVersion::Exact(7), vec![with_type("")])
        .await;
    assert!(
        matches!(result, Err(AppendError::InvalidInput(_))),
        "invalid input wins over a wrong expected version: {result:?}"
    );
    assert_unchanged(&store, &before).await;
    assert_stream_missing(&store, &s).await;
}
