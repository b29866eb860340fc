//! Subscriptions: catch-up then live, from the start, the end or a checkpoint, on `$all`
//! (filtered or not) and on one stream, with no gap and no duplicate at the seam.
//!
//! A subscription from `End` fixes its starting point when it is first polled, so these cases
//! poll it once with `try_next` before appending the events it should see.

use std::collections::HashSet;
use std::time::Duration;

use strata_core::{
    EventStore, ExpectedVersion, Filter, ReadError, RecordedEvent, SubscribeFrom,
    SubscriptionTarget,
};

use super::support::*;

fn all() -> SubscriptionTarget {
    SubscriptionTarget::All(Filter::default())
}

async fn try_next_none(sub: &mut strata_core::Subscription, what: &str) {
    match within(what, sub.try_next()).await {
        Ok(None) => {}
        other => panic!("{what}: expected nothing to deliver yet, got {other:?}"),
    }
}

/// A `$all` subscription from the start delivers the stored events in order, then events
/// appended later, each exactly once, equal to what reads return.
pub async fn subscribe_all_from_start_catches_up_then_goes_live<S: EventStore + Clone>(store: S) {
    append(
        &store,
        &sid("account-1"),
        ExpectedVersion::Any,
        evs("E", 0, 2),
    )
    .await;
    append(
        &store,
        &sid("order-1"),
        ExpectedVersion::Any,
        evs("E", 2, 1),
    )
    .await;
    let stored = all_events(&store).await;
    let mut sub = store
        .subscribe(all(), SubscribeFrom::Start)
        .await
        .expect("subscribe");
    assert_eq!(sub.last_position(), None);
    let caught_up = next_events(&mut sub, 3, "catch-up").await;
    assert_eq!(caught_up, stored);
    assert_eq!(sub.last_position(), Some(stored[2].position));
    let r = append(
        &store,
        &sid("account-1"),
        ExpectedVersion::Any,
        evs("E", 3, 2),
    )
    .await;
    let live = next_events(&mut sub, 2, "live events").await;
    let now = all_events(&store).await;
    assert_eq!(live, now[3..].to_vec());
    assert_eq!(live[1].position, r.positions[1]);
    assert_quiet(&mut sub, "after the live events").await;
}

/// A `$all` subscription from the end delivers only events appended after it started, on an
/// empty store and on a store with events.
pub async fn subscribe_all_from_end_gets_only_new_events<S: EventStore + Clone>(store: S) {
    let mut early = store
        .subscribe(all(), SubscribeFrom::End)
        .await
        .expect("subscribe");
    try_next_none(&mut early, "from the end of an empty store").await;
    let first = append(&store, &sid("a-1"), ExpectedVersion::Any, evs("E", 0, 3)).await;
    let got = next_events(&mut early, 3, "subscription from the end of an empty store").await;
    let positions: Vec<_> = got.iter().map(|e| e.position).collect();
    assert_eq!(positions, first.positions);

    let mut late = store
        .subscribe(all(), SubscribeFrom::End)
        .await
        .expect("subscribe");
    try_next_none(&mut late, "from the end of a store with events").await;
    let second = append(&store, &sid("b-1"), ExpectedVersion::Any, evs("E", 3, 2)).await;
    let got = next_events(&mut late, 2, "subscription from the end").await;
    let positions: Vec<_> = got.iter().map(|e| e.position).collect();
    assert_eq!(
        positions, second.positions,
        "only the events appended after it started"
    );
    assert_quiet(&mut late, "after the new events").await;
    let more = next_events(&mut early, 2, "the first subscription goes on").await;
    assert_eq!(more, got);
}

/// A `$all` subscription after a position delivers exactly the events after it.
pub async fn subscribe_all_after_position<S: EventStore + Clone>(store: S) {
    for i in 0..5 {
        append(
            &store,
            &sid(&format!("s-{}", i % 2)),
            ExpectedVersion::Any,
            evs("E", i, 1),
        )
        .await;
    }
    let stored = all_events(&store).await;
    let mut sub = store
        .subscribe(all(), SubscribeFrom::AfterPosition(stored[1].position))
        .await
        .expect("subscribe");
    let got = next_events(&mut sub, 3, "events after position 1").await;
    assert_eq!(got, stored[2..].to_vec());
    assert_quiet(&mut sub, "caught up").await;
    let mut at_head = store
        .subscribe(all(), SubscribeFrom::AfterPosition(stored[4].position))
        .await
        .expect("subscribe");
    try_next_none(&mut at_head, "after the head").await;
    append(&store, &sid("s-9"), ExpectedVersion::Any, evs("E", 9, 1)).await;
    let live = next_event(&mut at_head, "the event after the head").await;
    assert_eq!(live.stream_id.as_str(), "s-9");
    assert_eq!(next_event(&mut sub, "the same live event").await, live);
}

/// A filtered `$all` subscription delivers only matching events, stored and live.
pub async fn subscribe_all_filtered<S: EventStore + Clone>(store: S) {
    let filter = Filter::default()
        .categories(["account"])
        .event_types(["Deposited", "Opened"]);
    append(
        &store,
        &sid("account-1"),
        ExpectedVersion::Any,
        vec![ev("Opened", 0)],
    )
    .await;
    append(
        &store,
        &sid("order-1"),
        ExpectedVersion::Any,
        vec![ev("Deposited", 1)],
    )
    .await;
    append(
        &store,
        &sid("account-1"),
        ExpectedVersion::Any,
        vec![ev("Withdrawn", 2)],
    )
    .await;
    append(
        &store,
        &sid("account-2"),
        ExpectedVersion::Any,
        vec![ev("Deposited", 3)],
    )
    .await;
    let mut sub = store
        .subscribe(
            SubscriptionTarget::All(filter.clone()),
            SubscribeFrom::Start,
        )
        .await
        .expect("subscribe");
    let stored: Vec<_> = all_events(&store)
        .await
        .into_iter()
        .filter(|e| filter.matches(e))
        .collect();
    assert_eq!(stored.len(), 2);
    assert_eq!(
        next_events(&mut sub, 2, "matching stored events").await,
        stored
    );
    assert_quiet(&mut sub, "no other stored event matches").await;
    append(
        &store,
        &sid("order-2"),
        ExpectedVersion::Any,
        evs("Opened", 4, 3),
    )
    .await;
    append(
        &store,
        &sid("account-3"),
        ExpectedVersion::Any,
        vec![ev("Withdrawn", 7)],
    )
    .await;
    let r = append(
        &store,
        &sid("account-3"),
        ExpectedVersion::Any,
        vec![ev("Opened", 8), ev("Closed", 9), ev("Deposited", 10)],
    )
    .await;
    let live = next_events(&mut sub, 2, "matching live events").await;
    let positions: Vec<_> = live.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![r.positions[0], r.positions[2]]);
    assert!(live.iter().all(|e| filter.matches(e)));
    assert_quiet(&mut sub, "no other live event matches").await;
}

/// A stream subscription from the start works on a stream that does not exist yet and delivers
/// only that stream's events, in version order.
pub async fn subscribe_stream_from_start<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let mut sub = store
        .subscribe(SubscriptionTarget::Stream(s.clone()), SubscribeFrom::Start)
        .await
        .expect("subscribe");
    try_next_none(&mut sub, "a stream with no events").await;
    append(
        &store,
        &sid("account-10"),
        ExpectedVersion::Any,
        evs("E", 0, 2),
    )
    .await;
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 2)).await;
    append(
        &store,
        &sid("account-2"),
        ExpectedVersion::Any,
        evs("E", 0, 1),
    )
    .await;
    append(&store, &s, ExpectedVersion::Any, evs("E", 2, 1)).await;
    let got = next_events(&mut sub, 3, "the stream's events").await;
    assert_eq!(got, stream_events(&store, &s).await);
    assert!(got.iter().all(|e| e.stream_id == s));
    assert_eq!(sub.last_version(), Some(2));
    assert_quiet(&mut sub, "only the stream's events").await;

    let mut again = store
        .subscribe(SubscriptionTarget::Stream(s.clone()), SubscribeFrom::Start)
        .await
        .expect("subscribe");
    assert_eq!(
        next_events(&mut again, 3, "catch-up of the stream").await,
        got
    );
}

/// A stream subscription after a version delivers the versions after it; one from the end
/// delivers only new events.
pub async fn subscribe_stream_after_version_and_from_end<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 5)).await;
    let stored = stream_events(&store, &s).await;
    let target = || SubscriptionTarget::Stream(s.clone());
    let mut after = store
        .subscribe(target(), SubscribeFrom::AfterVersion(2))
        .await
        .expect("subscribe");
    assert_eq!(
        next_events(&mut after, 2, "versions 3 and 4").await,
        stored[3..].to_vec()
    );
    assert_quiet(&mut after, "caught up").await;
    let mut end = store
        .subscribe(target(), SubscribeFrom::End)
        .await
        .expect("subscribe");
    try_next_none(&mut end, "from the end of the stream").await;
    append(
        &store,
        &sid("other-1"),
        ExpectedVersion::Any,
        evs("E", 0, 1),
    )
    .await;
    append(&store, &s, ExpectedVersion::Exact(4), evs("E", 5, 2)).await;
    let new = next_events(&mut end, 2, "new events of the stream").await;
    assert_eq!(
        new.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![5, 6]
    );
    assert_eq!(next_events(&mut after, 2, "live after catch-up").await, new);
    let mut missing = store
        .subscribe(
            SubscriptionTarget::Stream(sid("account-2")),
            SubscribeFrom::End,
        )
        .await
        .expect("subscribe");
    try_next_none(&mut missing, "from the end of a missing stream").await;
    append(
        &store,
        &sid("account-2"),
        ExpectedVersion::NoStream,
        evs("E", 0, 1),
    )
    .await;
    let first = next_event(&mut missing, "the first event of a new stream").await;
    assert_eq!(first.stream_version, 0);
}

/// Checks one run of the seam: `stored` events exist, the subscription starts, a writer appends
/// `live` more while the consumer reads; the consumer gets all of them exactly once, in order.
async fn run_seam<S: EventStore + Clone>(store: &S, filter: Filter, expected_total: usize) {
    run_seam_as(store, filter, expected_total, Delivery::EventByEvent).await;
}

/// How a seam run takes its events from the subscription.
#[derive(Clone, Copy, PartialEq)]
enum Delivery {
    /// `next`, one at a time.
    EventByEvent,
    /// `next_batch`, pages of at most this many events.
    Batches(usize),
}

async fn run_seam_as<S: EventStore + Clone>(
    store: &S,
    filter: Filter,
    expected_total: usize,
    delivery: Delivery,
) {
    let mut sub = store
        .subscribe(
            SubscriptionTarget::All(filter.clone()),
            SubscribeFrom::Start,
        )
        .await
        .expect("subscribe");
    if let Delivery::Batches(page) = delivery {
        sub = sub.with_page_events(page);
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..80u64 {
                let stream = sid(&format!("{}-live", ["a", "b", "c"][(i % 3) as usize]));
                store
                    .append(&stream, ExpectedVersion::Any, evs("Live", i * 5, 5))
                    .await
                    .unwrap_or_else(|e| panic!("live append failed: {e:?}"));
                if i % 4 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut received: Vec<RecordedEvent> = Vec::with_capacity(expected_total);
    let mut seen = HashSet::new();
    let mut pending = std::collections::VecDeque::new();
    let mut through = None;
    // Each batch's `through` and how many events had been delivered with it, checked against
    // the store once the run is over.
    let mut checkpoints: Vec<(Option<strata_core::Position>, usize)> = Vec::new();
    while received.len() < expected_total {
        let e = match delivery {
            Delivery::EventByEvent => {
                next_event(&mut sub, "an event across the catch-up/live seam").await
            }
            Delivery::Batches(page) => match pending.pop_front() {
                Some(e) => e,
                None => {
                    let batch = within("a batch across the seam", sub.next_batch())
                        .await
                        .unwrap_or_else(|e| panic!("the subscription failed: {e:?}"));
                    assert!(batch.events.len() <= page, "a batch holds at most a page");
                    assert!(
                        !batch.events.is_empty() || batch.through > through,
                        "a batch that delivers nothing moves `through` on"
                    );
                    assert!(batch.through >= through, "`through` never goes back");
                    if let Some(last) = batch.events.last() {
                        assert!(
                            batch.through >= Some(last.position),
                            "`through` covers the batch's events"
                        );
                    }
                    through = batch.through;
                    checkpoints.push((through, received.len() + batch.events.len()));
                    pending.extend(batch.events);
                    continue;
                }
            },
        };
        if let Some(last) = received.last() {
            assert!(
                e.position > last.position,
                "positions go up: {} after {} ({} events in)",
                e.position,
                last.position,
                received.len()
            );
        }
        assert!(
            seen.insert(e.event_id),
            "event {} delivered twice",
            e.event_id
        );
        assert!(filter.matches(&e), "a delivered event passes the filter");
        received.push(e);
    }
    within("the writer", writer)
        .await
        .expect("the writer panicked");
    let expected: Vec<_> = all_events(store)
        .await
        .into_iter()
        .filter(|e| filter.matches(e))
        .collect();
    assert_eq!(expected.len(), expected_total);
    assert_eq!(
        ids(&received),
        ids(&expected),
        "exactly the stored and live events, in order"
    );
    assert_eq!(received, expected);
    // A `through` ahead of a matching event not yet delivered would let a consumer store a
    // checkpoint past an event it never saw.
    for (through, delivered) in checkpoints {
        let covered = expected
            .iter()
            .filter(|e| Some(e.position) <= through)
            .count();
        assert_eq!(
            covered, delivered,
            "`through` {through:?} covers {covered} matching events, {delivered} were delivered"
        );
    }
    assert_quiet(&mut sub, "after everything").await;
}

/// Catch-up to live with no gap and no duplicate: 1,100 stored events (several catch-up
/// pages), then 400 appended concurrently while the subscription reads; unfiltered and
/// filtered.
pub async fn subscription_seam_has_no_gap_and_no_duplicate<S: EventStore + Clone>(store: S) {
    for i in 0..11u64 {
        let stream = sid(&format!("{}-stored", ["a", "b"][(i % 2) as usize]));
        append(
            &store,
            &stream,
            ExpectedVersion::Any,
            evs("Stored", i * 100, 100),
        )
        .await;
    }
    run_seam(&store, Filter::default(), 1_100 + 400).await;
    // Second round on the same store: category `a` has 600 stored + 2 * 135 live events, and
    // the seam is crossed again by a filtered subscription.
    let stored_a = 600 + 27 * 5;
    run_seam(
        &store,
        Filter::default().categories(["a"]),
        stored_a + 27 * 5,
    )
    .await;
}

/// The same seam taken a page at a time (`next_batch`, as projection runners do), with a
/// sparse filter: no gap, no duplicate, and each batch's `through` is a checkpoint a consumer
/// can store. Once caught up, `through` stands at the head even though the newest events do
/// not match the filter, and `seek` moves the subscription back or forward.
pub async fn subscription_batches_carry_a_checkpoint_across_the_seam<S: EventStore + Clone>(
    store: S,
) {
    for i in 0..11u64 {
        let stream = sid(&format!("{}-stored", ["a", "b"][(i % 2) as usize]));
        append(
            &store,
            &stream,
            ExpectedVersion::Any,
            evs("Stored", i * 100, 100),
        )
        .await;
    }
    run_seam_as(
        &store,
        Filter::default(),
        1_100 + 400,
        Delivery::Batches(97),
    )
    .await;
    let filter = Filter::default().categories(["a"]);
    let stored_a = 600 + 27 * 5;
    run_seam_as(
        &store,
        filter.clone(),
        stored_a + 27 * 5,
        Delivery::Batches(64),
    )
    .await;
    // Pages the size projection runners read, and a sparse filter: only `c-live`, 26 appends
    // of 5 in each run's 80 (three runs by its end), a few in each stretch of the log.
    run_seam_as(
        &store,
        Filter::default().categories(["c"]),
        3 * 26 * 5,
        Delivery::Batches(1_000),
    )
    .await;
    let stored_a = stored_a + 27 * 5;

    // Events the filter skips at the end of the log: `through` passes them.
    append(
        &store,
        &sid("b-tail"),
        ExpectedVersion::Any,
        evs("Tail", 0, 5),
    )
    .await;
    let head = store.head().await.expect("head").expect("a head");
    let mut sub = store
        .subscribe(
            SubscriptionTarget::All(filter.clone()),
            SubscribeFrom::Start,
        )
        .await
        .expect("subscribe");
    let mut delivered = Vec::new();
    let mut last = None;
    // Bounded: a backend that never says it caught up fails here instead of hanging.
    for _ in 0..10_000 {
        let batch = within("a batch", sub.try_next_batch())
            .await
            .expect("try_next_batch");
        delivered.extend(batch.events);
        let covered = all_events(&store)
            .await
            .into_iter()
            .filter(|e| filter.matches(e) && Some(e.position) <= batch.through)
            .count();
        assert_eq!(
            covered,
            delivered.len(),
            "`through` is never ahead of delivery"
        );
        if batch.is_end {
            last = Some(batch.through);
            break;
        }
    }
    let last = last.expect("the subscription caught up");
    assert_eq!(last, Some(head), "caught up, `through` is the head");
    assert_eq!(delivered.len(), stored_a + 27 * 5);
    let empty = within("a batch at the end", sub.try_next_batch())
        .await
        .expect("try_next_batch");
    assert!(empty.events.is_empty() && empty.is_end);
    assert_eq!(empty.through, Some(head));

    // `seek` back re-delivers from there; forward skips.
    let middle = delivered[100].position;
    within("seek", sub.seek(SubscribeFrom::AfterPosition(middle)))
        .await
        .expect("seek");
    assert_eq!(
        sub.last_position(),
        None,
        "a seek forgets what was delivered before it"
    );
    let again = within("a batch after seeking back", sub.next_batch())
        .await
        .expect("next_batch");
    assert_eq!(again.events.first(), delivered.get(101));
    assert_eq!(sub.last_position(), again.events.last().map(|e| e.position));
    within("seek", sub.seek(SubscribeFrom::End))
        .await
        .expect("seek");
    append(
        &store,
        &sid("a-after"),
        ExpectedVersion::Any,
        evs("After", 0, 1),
    )
    .await;
    let live = within("the event after seeking to the end", sub.next_batch())
        .await
        .expect("next_batch");
    assert_eq!(live.events.len(), 1);
    assert_eq!(live.events[0].stream_id.as_str(), "a-after");
}

/// Resuming from a checkpoint (`last_position` for `$all`, `last_version` for a stream) gives
/// exactly the rest, including events appended while no one was subscribed.
pub async fn subscription_resumes_from_checkpoint<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    for i in 0..10u64 {
        let stream = if i % 3 == 0 {
            sid("order-1")
        } else {
            s.clone()
        };
        append(&store, &stream, ExpectedVersion::Any, evs("E", i, 1)).await;
    }
    let mut sub = store
        .subscribe(all(), SubscribeFrom::Start)
        .await
        .expect("subscribe");
    let first = next_events(&mut sub, 4, "the first four").await;
    let checkpoint = sub
        .last_position()
        .expect("a checkpoint after delivering events");
    assert_eq!(checkpoint, first[3].position);
    drop(sub);
    append(&store, &s, ExpectedVersion::Any, evs("E", 10, 3)).await;
    let stored = all_events(&store).await;
    let mut resumed = store
        .subscribe(all(), SubscribeFrom::AfterPosition(checkpoint))
        .await
        .expect("subscribe");
    let rest = next_events(&mut resumed, 9, "the rest").await;
    assert_eq!(rest, stored[4..].to_vec());
    assert_quiet(&mut resumed, "nothing after the rest").await;

    let target = || SubscriptionTarget::Stream(s.clone());
    let mut stream_sub = store
        .subscribe(target(), SubscribeFrom::Start)
        .await
        .expect("subscribe");
    let head_part = next_events(&mut stream_sub, 5, "the stream's first five").await;
    let version = stream_sub
        .last_version()
        .expect("a version after delivering events");
    assert_eq!(version, head_part[4].stream_version);
    drop(stream_sub);
    let mut resumed = store
        .subscribe(target(), SubscribeFrom::AfterVersion(version))
        .await
        .expect("subscribe");
    let stream_all = stream_events(&store, &s).await;
    let rest = next_events(&mut resumed, stream_all.len() - 5, "the stream's rest").await;
    assert_eq!(rest, stream_all[5..].to_vec());
    assert_quiet(&mut resumed, "nothing after the stream's rest").await;
}

/// A `$all` subscription cannot resume after a stream version, nor a stream subscription after
/// a position: subscribing is `InvalidInput`.
pub async fn subscribe_with_mismatched_from_is_invalid<S: EventStore + Clone>(store: S) {
    append(&store, &sid("a-1"), ExpectedVersion::Any, evs("E", 0, 2)).await;
    match store.subscribe(all(), SubscribeFrom::AfterVersion(0)).await {
        Err(ReadError::InvalidInput(_)) => {}
        other => panic!(
            "$all after a version must be InvalidInput, got {:?}",
            other.map(|_| ())
        ),
    }
    match store
        .subscribe(
            SubscriptionTarget::Stream(sid("a-1")),
            SubscribeFrom::AfterPosition(strata_core::Position(0)),
        )
        .await
    {
        Err(ReadError::InvalidInput(_)) => {}
        other => panic!(
            "a stream after a position must be InvalidInput, got {:?}",
            other.map(|_| ())
        ),
    }
}

/// `changes()` changes after every append, so a caught-up subscription wakes when events are
/// appended instead of at its next poll.
pub async fn changes_signal_after_every_append<S: EventStore + Clone>(store: S) {
    let mut changes = store.changes();
    changes.borrow_and_update();
    for i in 0..3 {
        append(&store, &sid("a-1"), ExpectedVersion::Any, evs("E", i, 1)).await;
        match tokio::time::timeout(Duration::from_secs(5), changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the change channel closed while the store is alive"),
            Err(_) => panic!("changes() did not change within 5 s of append {i}"),
        }
        changes.borrow_and_update();
    }
    // A receiver taken from a clone of the store sees appends made through the original.
    let mut from_clone = store.clone().changes();
    from_clone.borrow_and_update();
    append(&store, &sid("b-1"), ExpectedVersion::Any, evs("E", 0, 1)).await;
    let changed = tokio::time::timeout(Duration::from_secs(5), from_clone.changed()).await;
    assert!(
        matches!(changed, Ok(Ok(()))),
        "a receiver from a clone of the store must see the append"
    );
}
