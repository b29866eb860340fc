//! Appends: expected versions, atomicity, versions, positions, timestamps, ids and payloads.

use std::time::Duration;

use serde_json::json;
use strata_core::{
    EventData, EventStore, ExpectedVersion, Metadata, ReadAllOptions, ReadStreamOptions,
    SubscribeFrom, SubscriptionTarget, CONTENT_TYPE_JSON,
};

use super::support::*;

/// `Any` creates a missing stream at version 0 and appends to an existing one.
pub async fn append_any_creates_and_extends<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let first = append(&store, &s, ExpectedVersion::Any, vec![ev("Opened", 0)]).await;
    assert_eq!(first.stream_version, 0, "a new stream starts at version 0");
    let more = append(
        &store,
        &s,
        ExpectedVersion::Any,
        vec![ev("Deposited", 1), ev("Deposited", 2)],
    )
    .await;
    assert_eq!(more.stream_version, 2);
    assert!(first.positions[0] < more.positions[0]);
    assert!(more.positions[0] < more.positions[1]);
    let events = stream_events(&store, &s).await;
    let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![0, 1, 2]);
    let positions: Vec<_> = events.iter().map(|e| e.position).collect();
    let mut expected = first.positions.clone();
    expected.extend(more.positions.iter().copied());
    assert_eq!(
        positions, expected,
        "read positions equal the append results"
    );
    assert_eq!(events[0].event_type, "Opened");
    assert_eq!(events[2].data_json(), Some(json!({"n": 2})));
}

/// `NoStream` creates a stream that has no events.
pub async fn append_no_stream_creates_stream<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let r = append(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![ev("Opened", 0), ev("Deposited", 1)],
    )
    .await;
    assert_eq!(r.stream_version, 1);
    let events = stream_events(&store, &s).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].stream_version, 1);
    assert_eq!(head(&store).await, Some(r.positions[1]));
}

/// `NoStream` on a stream with events fails with the actual version and writes nothing.
pub async fn append_no_stream_on_existing_stream_fails<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    append(&store, &s, ExpectedVersion::Any, evs("Deposited", 0, 3)).await;
    let before = all_events(&store).await;
    let result = store
        .append(&s, ExpectedVersion::NoStream, vec![ev("Opened", 9)])
        .await;
    expect_wrong_version(result, &s, ExpectedVersion::NoStream, Some(2));
    assert_unchanged(&store, &before).await;
}

/// `StreamExists` on a missing stream fails with actual `None` and writes nothing.
pub async fn append_stream_exists_on_missing_stream_fails<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let other = sid("account-2");
    append(&store, &other, ExpectedVersion::Any, vec![ev("Opened", 0)]).await;
    let before = all_events(&store).await;
    let result = store
        .append(&s, ExpectedVersion::StreamExists, vec![ev("Deposited", 1)])
        .await;
    expect_wrong_version(result, &s, ExpectedVersion::StreamExists, None);
    assert_unchanged(&store, &before).await;
    assert_stream_missing(&store, &s).await;
}

/// `StreamExists` appends to a stream that has events.
pub async fn append_stream_exists_on_existing_stream<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    append(&store, &s, ExpectedVersion::NoStream, vec![ev("Opened", 0)]).await;
    let r = append(
        &store,
        &s,
        ExpectedVersion::StreamExists,
        vec![ev("Deposited", 1)],
    )
    .await;
    assert_eq!(r.stream_version, 1);
    assert_eq!(stream_events(&store, &s).await.len(), 2);
}

/// `Exact(v)` on a missing stream fails (a missing stream has no version, not version 0).
pub async fn append_exact_on_missing_stream_fails<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    for v in [0, 1] {
        let result = store
            .append(&s, ExpectedVersion::Exact(v), vec![ev("Opened", 0)])
            .await;
        expect_wrong_version(result, &s, ExpectedVersion::Exact(v), None);
    }
    assert_eq!(head(&store).await, None, "nothing was written");
    assert_stream_missing(&store, &s).await;
}

/// `Exact(v)` appends when the stream's last version is `v`, repeatedly.
pub async fn append_exact_matching_version<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    append(&store, &s, ExpectedVersion::NoStream, vec![ev("Opened", 0)]).await;
    for v in 0..5 {
        let r = append(
            &store,
            &s,
            ExpectedVersion::Exact(v),
            vec![ev("Deposited", v + 1)],
        )
        .await;
        assert_eq!(r.stream_version, v + 1);
    }
    let r = append(
        &store,
        &s,
        ExpectedVersion::Exact(5),
        evs("Deposited", 10, 3),
    )
    .await;
    assert_eq!(r.stream_version, 8);
    assert_eq!(stream_events(&store, &s).await.len(), 9);
}

/// `Exact(v)` with `v` below or above the stream's version fails and writes nothing.
pub async fn append_exact_wrong_version_fails<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    append(&store, &s, ExpectedVersion::Any, evs("Deposited", 0, 3)).await;
    let before = all_events(&store).await;
    for v in [0, 1, 3, 100, u64::MAX] {
        let result = store
            .append(
                &s,
                ExpectedVersion::Exact(v),
                vec![ev("Deposited", 9), ev("Deposited", 10)],
            )
            .await;
        expect_wrong_version(result, &s, ExpectedVersion::Exact(v), Some(2));
    }
    assert_unchanged(&store, &before).await;
    // The stream still accepts the right version afterwards.
    let r = append(
        &store,
        &s,
        ExpectedVersion::Exact(2),
        vec![ev("Deposited", 3)],
    )
    .await;
    assert_eq!(r.stream_version, 3);
}

/// A multi-event append lands whole: dense versions, increasing positions, one result each.
pub async fn append_many_events_is_atomic_and_dense<S: EventStore + Clone>(store: S) {
    let s = sid("order-1");
    let r1 = append(&store, &s, ExpectedVersion::NoStream, evs("Line", 0, 50)).await;
    assert_eq!(r1.stream_version, 49);
    let r2 = append(&store, &s, ExpectedVersion::Exact(49), evs("Line", 50, 7)).await;
    assert_eq!(r2.stream_version, 56);
    let events = stream_events(&store, &s).await;
    assert_eq!(events.len(), 57);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.stream_version, i as u64, "versions are dense from 0");
        assert_eq!(
            e.data_json(),
            Some(json!({"n": i})),
            "events keep their order"
        );
    }
    assert_increasing_positions(&events, "one stream");
    let positions: Vec<_> = events.iter().map(|e| e.position).collect();
    assert_eq!(&positions[..50], &r1.positions[..]);
    assert_eq!(&positions[50..], &r2.positions[..]);
    // In $all the events of one append are adjacent: nothing else came between them.
    let all = all_events(&store).await;
    assert_eq!(ids(&all), ids(&events));
}

/// Positions form one increasing order over all streams, matching the append results.
pub async fn positions_increase_across_streams<S: EventStore + Clone>(store: S) {
    let streams = [sid("account-1"), sid("order-1"), sid("account-2")];
    let mut acknowledged = Vec::new();
    for round in 0..6u64 {
        for (i, s) in streams.iter().enumerate() {
            let count = 1 + (round + i as u64) % 3;
            let r = append(
                &store,
                s,
                ExpectedVersion::Any,
                evs("Thing", round * 10, count),
            )
            .await;
            if let Some(previous) = acknowledged.last() {
                assert!(
                    r.positions[0] > *previous,
                    "a later append gets later positions"
                );
            }
            acknowledged.extend(r.positions);
        }
    }
    let all = all_events(&store).await;
    assert_increasing_positions(&all, "$all");
    let positions: Vec<_> = all.iter().map(|e| e.position).collect();
    assert_eq!(
        positions, acknowledged,
        "$all holds exactly the acknowledged positions"
    );
    for s in &streams {
        let events = stream_events(&store, s).await;
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.stream_version, i as u64, "versions of {s} are dense");
            assert_eq!(&e.stream_id, s);
        }
        assert_increasing_positions(&events, "one stream");
    }
}

/// recorded_at is assigned by the store at microsecond precision, close to now, never
/// decreasing in position order, and reads back identically every time.
pub async fn recorded_at_is_microseconds_and_non_decreasing<S: EventStore + Clone>(store: S) {
    let before = now_micros();
    for i in 0..20u64 {
        let s = sid(&format!("stream-{}", i % 3));
        append(&store, &s, ExpectedVersion::Any, evs("Tick", i, 1 + i % 2)).await;
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let after = now_micros();
    let all = all_events(&store).await;
    let slack = chrono::Duration::seconds(5);
    for pair in all.windows(2) {
        assert!(
            pair[0].recorded_at <= pair[1].recorded_at,
            "recorded_at must never decrease in position order: {} at {} then {} at {}",
            pair[0].position,
            pair[0].recorded_at,
            pair[1].position,
            pair[1].recorded_at
        );
    }
    for e in &all {
        assert_eq!(
            e.recorded_at.timestamp_subsec_nanos() % 1_000,
            0,
            "recorded_at has microsecond precision: {}",
            e.recorded_at
        );
        assert!(
            e.recorded_at >= before - slack && e.recorded_at <= after + slack,
            "recorded_at {} is not near the time of the append ({before} .. {after})",
            e.recorded_at
        );
    }
    assert!(
        all.first().map(|e| e.recorded_at) < all.last().map(|e| e.recorded_at),
        "appends milliseconds apart get different recorded_at"
    );
    // Reading again, through another path, gives the same values.
    let again = all_events(&store).await;
    assert_eq!(all, again);
    let mut reversed = read_all_pages(&store, ReadAllOptions::backward()).await;
    reversed.reverse();
    assert_eq!(reversed, all);
    for i in 0..3 {
        let s = sid(&format!("stream-{i}"));
        for e in stream_events(&store, &s).await {
            let same = all
                .iter()
                .find(|a| a.event_id == e.event_id)
                .expect("stream event is in $all");
            assert_eq!(e.recorded_at, same.recorded_at);
        }
    }
}

/// The store assigns a UUIDv7 to an event without an id and keeps a given id.
pub async fn event_ids_are_assigned_v7_or_kept<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let given = new_id();
    let r = append(
        &store,
        &s,
        ExpectedVersion::Any,
        vec![ev("A", 0), ev("B", 1).with_id(given), ev("C", 2)],
    )
    .await;
    let events = stream_events(&store, &s).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[1].event_id, given, "a given event id is kept");
    for e in [&events[0], &events[2]] {
        assert_eq!(
            e.event_id.get_version_num(),
            7,
            "an assigned event id is a UUIDv7, got {}",
            e.event_id
        );
        assert!(!e.event_id.is_nil());
    }
    assert_ne!(events[0].event_id, events[2].event_id);
    let more = append(&store, &s, ExpectedVersion::Any, evs("D", 3, 20)).await;
    let all = all_events(&store).await;
    let mut unique = ids(&all);
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "assigned ids are unique");
    assert_eq!(r.positions.len() + more.positions.len(), all.len());
}

/// JSON data, the content type and metadata (typed accessors and any other key) round-trip.
pub async fn json_data_and_metadata_round_trip<S: EventStore + Clone>(store: S) {
    let s = sid("account-123");
    let data = json!({
        "accountId": "account-123",
        "amount": 200.5,
        "tags": ["a", "b"],
        "nested": {"deep": [1, 2, {"x": null}], "unicode": "héllo ✓"},
        "big": 9_007_199_254_740_993u64,
    });
    let metadata = Metadata::new()
        .with_correlation_id("req-789")
        .with_causation_id("cmd-1")
        .with_user_id("user-456")
        .with("tenant", json!("acme"))
        .with("attempt", json!(3))
        .with("trace", json!({"span": "abc", "sampled": true}));
    let with_meta = EventData::json("MoneyDeposited", &data)
        .expect("serialize")
        .with_metadata(metadata.clone());
    let plain = EventData::json("Plain", &json!({"b": 1})).expect("serialize");
    let scalar = EventData::json("Scalar", &json!(42)).expect("serialize");
    append(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![with_meta.clone(), plain, scalar],
    )
    .await;
    let events = stream_events(&store, &s).await;
    let e = &events[0];
    assert_eq!(e.event_type, "MoneyDeposited");
    assert_eq!(e.content_type, CONTENT_TYPE_JSON);
    assert!(e.is_json());
    assert_eq!(e.data_json(), Some(data));
    assert_eq!(e.metadata, metadata);
    assert_eq!(e.metadata.correlation_id(), Some("req-789"));
    assert_eq!(e.metadata.causation_id(), Some("cmd-1"));
    assert_eq!(e.metadata.user_id(), Some("user-456"));
    assert_eq!(e.metadata.get("tenant"), Some(&json!("acme")));
    assert_eq!(e.metadata.get("attempt"), Some(&json!(3)));
    assert_eq!(
        e.metadata.get("trace"),
        Some(&json!({"span": "abc", "sampled": true}))
    );
    assert_eq!(events[1].data_json(), Some(json!({"b": 1})));
    assert!(events[1].metadata.is_empty(), "empty metadata stays empty");
    assert_eq!(events[1].metadata.correlation_id(), None);
    assert_eq!(events[2].data_json(), Some(json!(42)));
}

/// JSON payloads are stored as the exact bytes given, not re-encoded: whitespace, key order,
/// duplicate keys and number spelling survive (so a backend must not keep `data` only as
/// PostgreSQL `JSONB`, which normalizes them).
pub async fn json_data_keeps_exact_bytes<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let docs: [&[u8]; 5] = [
        br#"{ "b": 1,  "a": [true, false] }"#,
        br#"{"z":1,"a":2,"z":3}"#,
        b"1.50e2",
        b"  \"text\"\n",
        br#"{"long":12345678901234567890123,"esc":"\u00e9"}"#,
    ];
    let events: Vec<EventData> = docs
        .iter()
        .map(|d| EventData {
            data: d.to_vec(),
            ..EventData::json("Raw", &json!({})).expect("serialize")
        })
        .collect();
    append(&store, &s, ExpectedVersion::NoStream, events).await;
    let read = stream_events(&store, &s).await;
    let read_data: Vec<&[u8]> = read.iter().map(|e| e.data.as_slice()).collect();
    assert_eq!(
        read_data,
        docs.to_vec(),
        "JSON payloads keep their exact bytes"
    );
    let all = all_events(&store).await;
    assert_eq!(all, read);
}

/// Payloads of other content types are kept as raw bytes, including non-UTF-8 and empty.
pub async fn binary_data_round_trips<S: EventStore + Clone>(store: S) {
    let s = sid("file-1");
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let events = vec![
        EventData::binary("Chunk", "application/octet-stream", all_bytes.clone()),
        EventData::binary("Empty", "application/octet-stream", Vec::new()),
        EventData::binary("Text", "text/plain; charset=utf-8", b"plain text".to_vec()),
        EventData::binary("NotJson", "application/x-protobuf", vec![0xff, 0x00, 0xfe])
            .with_metadata(Metadata::new().with_correlation_id("c-1")),
    ];
    append(&store, &s, ExpectedVersion::NoStream, events.clone()).await;
    let read = stream_events(&store, &s).await;
    assert_eq!(read.len(), events.len());
    for (r, e) in read.iter().zip(&events) {
        assert_eq!(r.event_type, e.event_type);
        assert_eq!(r.content_type, e.content_type);
        assert_eq!(r.data, e.data, "payload of {} round-trips", e.event_type);
        assert_eq!(r.metadata, e.metadata);
        assert!(!r.is_json());
        assert_eq!(r.data_json(), None);
    }
}

/// An event reads back identically through read_stream (both ways), read_all (both ways) and
/// a subscription, with every field set as appended.
pub async fn recorded_event_is_the_same_through_every_read<S: EventStore + Clone>(store: S) {
    let s = sid("account-42-eu");
    let id = new_id();
    let event = EventData::json("Überweisung✓", &json!({"amount": 1}))
        .expect("serialize")
        .with_id(id)
        .with_metadata(Metadata::new().with_user_id("u-1"));
    append(
        &store,
        &sid("other-1"),
        ExpectedVersion::Any,
        vec![ev("X", 0)],
    )
    .await;
    let r = append(&store, &s, ExpectedVersion::NoStream, vec![event.clone()]).await;
    append(
        &store,
        &sid("other-1"),
        ExpectedVersion::Any,
        vec![ev("X", 1)],
    )
    .await;

    let forward = stream_events(&store, &s).await;
    assert_eq!(forward.len(), 1);
    let e = forward[0].clone();
    assert_eq!(e.event_id, id);
    assert_eq!(e.stream_id, s);
    assert_eq!(e.category(), "account");
    assert_eq!(e.stream_version, 0);
    assert_eq!(e.position, r.positions[0]);
    assert_eq!(e.event_type, event.event_type);
    assert_eq!(e.content_type, event.content_type);
    assert_eq!(e.data, event.data);
    assert_eq!(e.metadata, event.metadata);

    let backward = read_stream(&store, &s, ReadStreamOptions::backward()).await;
    assert_eq!(backward, vec![e.clone()]);
    let all = all_events(&store).await;
    assert_eq!(all[1], e);
    let all_back = read_all_pages(&store, ReadAllOptions::backward().from(e.position)).await;
    assert_eq!(all_back.first(), Some(&e));
    let mut sub = store
        .subscribe(SubscriptionTarget::Stream(s.clone()), SubscribeFrom::Start)
        .await
        .expect("subscribe");
    assert_eq!(next_event(&mut sub, "the stream's event").await, e);
    let mut sub_all = store
        .subscribe(
            SubscriptionTarget::All(strata_core::Filter::default().categories(["account"])),
            SubscribeFrom::Start,
        )
        .await
        .expect("subscribe");
    assert_eq!(next_event(&mut sub_all, "the account event").await, e);
}
