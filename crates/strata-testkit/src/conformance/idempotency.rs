//! Idempotent retries by event id, and event ids reused for different events.
//!
//! The rule: when the first event of an append has an id that is already stored, the append
//! is a retry if every event of it has an id stored at consecutive versions of this stream,
//! starting at the first event's version, in order, with the same event type and data, and the
//! expected version fits that place (`Exact(v)`: the first version is `v + 1`; `NoStream`: it is
//! 0; `Any`, `StreamExists`: anywhere). A retry returns the original stream version (of the last
//! of those events) and positions and writes nothing. Anything else with a stored id is
//! `EventIdConflict` and writes nothing.

use serde_json::json;
use strata_core::{AppendError, AppendResult, EventData, EventStore, ExpectedVersion, Position};

use super::support::*;

fn with_id(event: EventData, id: uuid::Uuid) -> EventData {
    event.with_id(id)
}

/// The answer a retry of the append that answered `original` must get: the same version and
/// positions, marked as replayed.
fn replay_of(original: &AppendResult) -> AppendResult {
    assert!(!original.replayed, "a first append is no replay");
    AppendResult {
        replayed: true,
        ..original.clone()
    }
}

/// A retry with `Exact(v)` of an acknowledged append returns the same result and writes nothing,
/// even after other streams moved on.
pub async fn retry_with_exact_returns_original_result<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let (a, b, c) = (new_id(), new_id(), new_id());
    append(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![with_id(ev("Opened", 0), a)],
    )
    .await;
    let batch = vec![
        with_id(ev("Deposited", 1), b),
        with_id(ev("Deposited", 2), c),
    ];
    let original = append(&store, &s, ExpectedVersion::Exact(0), batch.clone()).await;
    assert_eq!(original.stream_version, 2);
    append(
        &store,
        &sid("other-1"),
        ExpectedVersion::Any,
        evs("X", 0, 3),
    )
    .await;
    let before = all_events(&store).await;
    for attempt in 0..3 {
        let retry = append(&store, &s, ExpectedVersion::Exact(0), batch.clone()).await;
        assert_eq!(
            retry,
            replay_of(&original),
            "retry {attempt} returns the original version and positions, marked replayed"
        );
    }
    assert_unchanged(&store, &before).await;
    let next = append(
        &store,
        &s,
        ExpectedVersion::Exact(2),
        vec![ev("Deposited", 3)],
    )
    .await;
    assert_eq!(
        next.stream_version, 3,
        "the retries did not move the stream"
    );
}

/// A retry with `NoStream` of the append that created the stream returns the same result.
pub async fn retry_with_no_stream_returns_original_result<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let batch = vec![
        with_id(ev("Opened", 0), new_id()),
        with_id(ev("Deposited", 1), new_id()),
    ];
    let original = append(&store, &s, ExpectedVersion::NoStream, batch.clone()).await;
    append(
        &store,
        &s,
        ExpectedVersion::Exact(1),
        vec![ev("Deposited", 2)],
    )
    .await;
    let before = all_events(&store).await;
    let retry = append(&store, &s, ExpectedVersion::NoStream, batch.clone()).await;
    assert_eq!(retry, replay_of(&original));
    assert_unchanged(&store, &before).await;
    assert_eq!(stream_events(&store, &s).await.len(), 3);
}

/// With `Any` or `StreamExists` a retry matches wherever its events are, even after the stream
/// moved on, and a retry of a consecutive part of an append returns that part's place.
pub async fn retry_with_any_or_stream_exists_after_later_appends<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let (a, b, c, d) = (new_id(), new_id(), new_id(), new_id());
    let first = vec![
        with_id(ev("Opened", 0), a),
        with_id(ev("Deposited", 1), b),
        with_id(ev("Deposited", 2), c),
    ];
    let r1 = append(&store, &s, ExpectedVersion::Any, first.clone()).await;
    let second = vec![with_id(ev("Withdrawn", 3), d)];
    let r2 = append(&store, &s, ExpectedVersion::StreamExists, second.clone()).await;
    append(&store, &s, ExpectedVersion::Any, evs("Deposited", 4, 2)).await;
    let before = all_events(&store).await;

    assert_eq!(
        append(&store, &s, ExpectedVersion::Any, first.clone()).await,
        replay_of(&r1)
    );
    assert_eq!(
        append(&store, &s, ExpectedVersion::StreamExists, first.clone()).await,
        replay_of(&r1)
    );
    assert_eq!(
        append(&store, &s, ExpectedVersion::Any, second.clone()).await,
        replay_of(&r2)
    );
    let tail = append(&store, &s, ExpectedVersion::Any, first[1..].to_vec()).await;
    assert_eq!(tail.stream_version, 2);
    assert_eq!(tail.positions, r1.positions[1..].to_vec());
    assert!(tail.replayed, "a retry of a part of an append is a replay");
    let head_part = append(&store, &s, ExpectedVersion::Any, first[..2].to_vec()).await;
    assert_eq!(head_part.stream_version, 1);
    assert_eq!(head_part.positions, r1.positions[..2].to_vec());
    assert!(
        head_part.replayed,
        "a retry of a part of an append is a replay"
    );
    assert_unchanged(&store, &before).await;
}

/// A retry whose expected version does not fit where its events are stored is a conflict.
pub async fn retry_at_wrong_place_is_conflict<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let (a, b, c) = (new_id(), new_id(), new_id());
    let ea = with_id(ev("Opened", 0), a);
    let eb = with_id(ev("Deposited", 1), b);
    append(&store, &s, ExpectedVersion::NoStream, vec![ea.clone()]).await;
    append(&store, &s, ExpectedVersion::Exact(0), vec![eb.clone()]).await;
    append(
        &store,
        &s,
        ExpectedVersion::Exact(1),
        vec![with_id(ev("Deposited", 2), c)],
    )
    .await;
    let before = all_events(&store).await;
    // b is at version 1: Exact(0) is its place; Exact(1), Exact(5) and NoStream are not.
    for expected in [
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(5),
        ExpectedVersion::NoStream,
    ] {
        let result = store.append(&s, expected, vec![eb.clone()]).await;
        let id = expect_id_conflict(result, &s);
        assert_eq!(
            id, b,
            "the conflict names the reused id (expected {expected})"
        );
    }
    // a is at version 0: NoStream is its place, Exact(0) is not.
    let result = store
        .append(&s, ExpectedVersion::Exact(0), vec![ea.clone()])
        .await;
    assert_eq!(expect_id_conflict(result, &s), a);
    assert_eq!(
        append(&store, &s, ExpectedVersion::Exact(0), vec![eb.clone()])
            .await
            .stream_version,
        1,
        "the right place is still a retry"
    );
    assert_unchanged(&store, &before).await;
}

/// An id stored in one stream cannot be appended to another stream.
pub async fn reused_id_in_other_stream_is_conflict<S: EventStore + Clone>(store: S) {
    let s1 = sid("account-1");
    let s2 = sid("account-2");
    let id = new_id();
    let event = with_id(ev("Opened", 0), id);
    append(&store, &s1, ExpectedVersion::NoStream, vec![event.clone()]).await;
    let before = all_events(&store).await;
    for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
        let result = store.append(&s2, expected, vec![event.clone()]).await;
        assert_eq!(expect_id_conflict(result, &s2), id);
    }
    assert_unchanged(&store, &before).await;
    assert_stream_missing(&store, &s2).await;
}

/// An id stored for one event cannot be reused for an event of another type or other data,
/// even at the same place.
pub async fn reused_id_with_different_type_or_data_is_conflict<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let (a, x, y) = (new_id(), new_id(), new_id());
    append(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![with_id(ev("Deposited", 1), a)],
    )
    .await;
    let pair = vec![
        with_id(ev("Deposited", 2), x),
        with_id(ev("Deposited", 3), y),
    ];
    append(&store, &s, ExpectedVersion::Exact(0), pair.clone()).await;
    let before = all_events(&store).await;

    let other_data = with_id(ev("Deposited", 99), a);
    let result = store
        .append(&s, ExpectedVersion::NoStream, vec![other_data])
        .await;
    assert_eq!(expect_id_conflict(result, &s), a, "same id, different data");
    let other_type = with_id(ev("Withdrawn", 1), a);
    let result = store
        .append(&s, ExpectedVersion::NoStream, vec![other_type])
        .await;
    assert_eq!(expect_id_conflict(result, &s), a, "same id, different type");
    let mut changed_second = pair.clone();
    changed_second[1] = with_id(
        EventData::json("Deposited", &json!({"n": 4})).expect("serialize"),
        y,
    );
    let result = store
        .append(&s, ExpectedVersion::Exact(0), changed_second)
        .await;
    let id = expect_id_conflict(result, &s);
    assert!(id == x || id == y, "the conflict names an id of the append");
    assert_unchanged(&store, &before).await;
}

/// A retry that matches only part of what is stored (an extra new event, an event without an
/// id) is a conflict, and its new events are not written.
pub async fn partial_retry_is_conflict<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let (a, b, c) = (new_id(), new_id(), new_id());
    let stored = vec![with_id(ev("Opened", 0), a), with_id(ev("Deposited", 1), b)];
    append(&store, &s, ExpectedVersion::NoStream, stored.clone()).await;
    let before = all_events(&store).await;

    let mut longer = stored.clone();
    longer.push(with_id(ev("Deposited", 2), c));
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Any] {
        let result = store.append(&s, expected, longer.clone()).await;
        let id = expect_id_conflict(result, &s);
        assert!(
            [a, b, c].contains(&id),
            "the conflict names an id of the append"
        );
    }
    let mut no_id = stored.clone();
    no_id[1].event_id = None;
    let result = store.append(&s, ExpectedVersion::NoStream, no_id).await;
    assert_eq!(expect_id_conflict(result, &s), a);
    assert_unchanged(&store, &before).await;

    // c was never written: it is still free.
    let r = append(
        &store,
        &sid("account-2"),
        ExpectedVersion::NoStream,
        vec![with_id(ev("Opened", 0), c)],
    )
    .await;
    assert_eq!(r.stream_version, 0);
}

/// A retry with the stored events out of order, or with a gap, is a conflict.
pub async fn retry_out_of_order_is_conflict<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let (a, b, c) = (new_id(), new_id(), new_id());
    let stored = vec![
        with_id(ev("Opened", 0), a),
        with_id(ev("Deposited", 1), b),
        with_id(ev("Deposited", 2), c),
    ];
    append(&store, &s, ExpectedVersion::NoStream, stored.clone()).await;
    let before = all_events(&store).await;
    let swapped = vec![stored[1].clone(), stored[0].clone()];
    let result = store.append(&s, ExpectedVersion::Any, swapped).await;
    let id = expect_id_conflict(result, &s);
    assert!(id == a || id == b);
    let gap = vec![stored[0].clone(), stored[2].clone()];
    let result = store.append(&s, ExpectedVersion::Any, gap).await;
    let id = expect_id_conflict(result, &s);
    assert!(id == a || id == c);
    assert_unchanged(&store, &before).await;
}

/// An append whose first id is new but a later id is already stored is a conflict naming that
/// id, and writes nothing (its new first id stays free).
pub async fn new_first_id_with_used_later_id_is_conflict<S: EventStore + Clone>(store: S) {
    let s1 = sid("account-1");
    let s2 = sid("account-2");
    let (x, fresh) = (new_id(), new_id());
    let stored = with_id(ev("Opened", 0), x);
    append(&store, &s1, ExpectedVersion::NoStream, vec![stored.clone()]).await;
    let before = all_events(&store).await;
    for (s, expected) in [
        (&s2, ExpectedVersion::Any),
        (&s1, ExpectedVersion::Exact(0)),
    ] {
        let batch = vec![with_id(ev("Deposited", 1), fresh), stored.clone()];
        let result = store.append(s, expected, batch).await;
        assert_eq!(expect_id_conflict(result, s), x);
    }
    assert_unchanged(&store, &before).await;
    assert_stream_missing(&store, &s2).await;
    append(
        &store,
        &s2,
        ExpectedVersion::NoStream,
        vec![with_id(ev("Opened", 0), fresh)],
    )
    .await;
}

/// An append whose first event is a stored event at its place, but whose later event's id is
/// stored in another stream, is a conflict.
pub async fn matching_first_id_with_later_id_used_elsewhere_is_conflict<S: EventStore + Clone>(
    store: S,
) {
    let s1 = sid("account-1");
    let s2 = sid("account-2");
    let (a, x) = (new_id(), new_id());
    let ea = with_id(ev("Opened", 0), a);
    let ex = with_id(ev("Opened", 0), x);
    append(&store, &s1, ExpectedVersion::NoStream, vec![ea.clone()]).await;
    append(&store, &s2, ExpectedVersion::NoStream, vec![ex.clone()]).await;
    let before = all_events(&store).await;
    let result = store.append(&s1, ExpectedVersion::Any, vec![ea, ex]).await;
    let id = expect_id_conflict(result, &s1);
    assert!(id == a || id == x);
    assert_unchanged(&store, &before).await;
}

/// The same id twice in one append is invalid input, whether or not the id is stored.
pub async fn duplicate_id_in_one_append_is_invalid<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let id = new_id();
    let twice = vec![
        with_id(ev("Opened", 0), id),
        with_id(ev("Deposited", 1), id),
    ];
    let e = expect_invalid_append(
        store.append(&s, ExpectedVersion::Any, twice.clone()).await,
        "the same id twice in one append",
    );
    assert!(
        e.field.contains("event_id"),
        "the error names the field: {e:?}"
    );
    assert_eq!(head(&store).await, None, "nothing was written");
    append(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![twice[0].clone()],
    )
    .await;
    let before = all_events(&store).await;
    let result = store.append(&s, ExpectedVersion::Any, twice).await;
    assert!(
        matches!(result, Err(AppendError::InvalidInput(_))),
        "a duplicate id is invalid even when the id is stored: {result:?}"
    );
    assert_unchanged(&store, &before).await;
    assert_eq!(before.len(), 1);
    assert_eq!(
        before[0].position,
        head(&store).await.unwrap_or(Position(u64::MAX))
    );
}
