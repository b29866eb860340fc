//! Reading `$all`: paging with `next` and `is_end` both ways, filters, `max_position`, and the
//! bound on the work of one call.

use strata_core::{
    limits, EventStore, ExpectedVersion, Filter, Position, ReadAllOptions, RecordedEvent,
};

use super::support::*;

/// Appends 25 events over three streams in 10 appends; returns them in position order.
async fn mixed_events<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    let streams = [sid("account-1"), sid("order-1"), sid("account-2")];
    for i in 0..10u64 {
        let s = &streams[(i % 3) as usize];
        let count = if i % 2 == 0 { 3 } else { 2 };
        append(store, s, ExpectedVersion::Any, evs("E", i * 10, count)).await;
    }
    let all = all_events(store).await;
    assert_eq!(all.len(), 25);
    all
}

/// An empty store: forward reads are empty and at the end with `next` = where they started;
/// backward reads are empty, at the end, with no `next`.
pub async fn read_all_empty_store<S: EventStore + Clone>(store: S) {
    let page = read_all(&store, ReadAllOptions::forward()).await;
    assert!(page.events.is_empty());
    assert!(page.is_end, "an empty forward read is at the end");
    assert_eq!(page.next, Some(Position::START), "next stays at the start");
    let page = read_all(&store, ReadAllOptions::forward().from(Position(7))).await;
    assert!(page.events.is_empty() && page.is_end);
    assert_eq!(page.next, Some(Position(7)));
    let page = read_all(&store, ReadAllOptions::backward()).await;
    assert!(page.events.is_empty());
    assert!(page.is_end, "an empty backward read is at the end");
    assert_eq!(page.next, None);
    assert_eq!(head(&store).await, None);
}

/// Paging forward with a small limit and `next` returns every event exactly once, in order,
/// never more than `limit` per page; reading on from the final `next` is empty, at the end,
/// and keeps `next` (a backend may return fewer events than it could, or set `is_end` one
/// page late, but never early: every page's events are a prefix of what remains).
pub async fn read_all_forward_pages_reach_every_event_once<S: EventStore + Clone>(store: S) {
    let all = mixed_events(&store).await;
    assert_increasing_positions(&all, "$all");
    for limit in [1usize, 4, 5, 24, 25, limits::READ_PAGE_MAX_EVENTS] {
        let mut options = ReadAllOptions::forward().limit(limit);
        let mut seen: Vec<RecordedEvent> = Vec::new();
        for pages in 0.. {
            assert!(pages <= 60, "paging with limit {limit} must end");
            let page = read_all(&store, options.clone()).await;
            assert!(
                all[seen.len()..].starts_with(&page.events),
                "limit {limit}: a page holds the next events in order"
            );
            seen.extend(page.events);
            let next = page.next.expect("a forward read always returns next");
            if page.is_end {
                assert_eq!(
                    seen, all,
                    "limit {limit}: is_end only once every event was returned"
                );
                let again = read_all(&store, ReadAllOptions::forward().from(next)).await;
                assert!(again.events.is_empty(), "nothing after the end");
                assert!(
                    again.is_end,
                    "a read with nothing left to examine is at the end"
                );
                assert_eq!(again.next, Some(next), "next stays put at the end");
                break;
            }
            options = options.from(next);
        }
    }
}

/// Paging backward from the end returns every event exactly once, newest first; the last
/// page has `is_end` and no `next`.
pub async fn read_all_backward_pages_reach_every_event_once<S: EventStore + Clone>(store: S) {
    let all = mixed_events(&store).await;
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(
        read_all_pages(&store, ReadAllOptions::backward()).await,
        reversed
    );
    let from_end = read_all_pages(&store, ReadAllOptions::backward().from(Position::END)).await;
    assert_eq!(from_end, reversed, "from END is the same as from None");
    for limit in [1usize, 4, 25] {
        let mut options = ReadAllOptions::backward().limit(limit);
        let mut seen: Vec<RecordedEvent> = Vec::new();
        for pages in 0.. {
            assert!(pages <= 60, "paging with limit {limit} must end");
            let page = read_all(&store, options.clone()).await;
            assert!(
                reversed[seen.len()..].starts_with(&page.events),
                "limit {limit}: a page holds the next older events in order"
            );
            seen.extend(page.events);
            if page.is_end {
                assert_eq!(
                    seen, reversed,
                    "limit {limit}: is_end only at the oldest event"
                );
                assert_eq!(page.next, None, "a backward read at the start has no next");
                break;
            }
            options = options.from(page.next.expect("checked by check_page"));
        }
    }
}

/// `from` is inclusive both ways, and positions between events work as `from`.
pub async fn read_all_from_is_inclusive<S: EventStore + Clone>(store: S) {
    let all = mixed_events(&store).await;
    for k in [0usize, 1, 12, 24] {
        let p = all[k].position;
        let forward = read_all_pages(&store, ReadAllOptions::forward().from(p)).await;
        assert_eq!(forward, all[k..].to_vec(), "forward from event {k}");
        let backward = read_all_pages(&store, ReadAllOptions::backward().from(p)).await;
        let mut expected = all[..=k].to_vec();
        expected.reverse();
        assert_eq!(backward, expected, "backward from event {k}");
        let after = read_all_pages(&store, ReadAllOptions::forward().from(Position(p.0 + 1))).await;
        assert_eq!(
            after,
            all[k + 1..].to_vec(),
            "forward from just after event {k}"
        );
        let first = read_all(&store, ReadAllOptions::forward().from(p).limit(1)).await;
        if let Some(e) = first.events.first() {
            assert_eq!(e, &all[k], "a one-event read from event {k} returns it");
        }
    }
    let beyond = Position(all[24].position.0 + 1000);
    let back = read_all_pages(&store, ReadAllOptions::backward().from(beyond)).await;
    assert_eq!(
        back.len(),
        25,
        "backward from past the head starts at the head"
    );
}

/// The `next` of a forward read that reached the end is a checkpoint: reading from it later
/// returns exactly the events appended since.
pub async fn read_all_next_is_a_checkpoint<S: EventStore + Clone>(store: S) {
    append(
        &store,
        &sid("account-1"),
        ExpectedVersion::Any,
        evs("E", 0, 5),
    )
    .await;
    let (events, next) = read_all_to_end(&store, ReadAllOptions::forward()).await;
    assert_eq!(events.len(), 5);
    let checkpoint = next.expect("forward reads return next");
    let empty = read_all(&store, ReadAllOptions::forward().from(checkpoint)).await;
    assert!(empty.events.is_empty() && empty.is_end);
    assert_eq!(empty.next, Some(checkpoint));
    let r1 = append(
        &store,
        &sid("account-2"),
        ExpectedVersion::Any,
        evs("E", 5, 2),
    )
    .await;
    let r2 = append(
        &store,
        &sid("account-1"),
        ExpectedVersion::Any,
        evs("E", 7, 1),
    )
    .await;
    let (events, next) = read_all_to_end(&store, ReadAllOptions::forward().from(checkpoint)).await;
    let positions: Vec<_> = events.iter().map(|e| e.position).collect();
    let mut expected = r1.positions.clone();
    expected.extend(r2.positions);
    assert_eq!(
        positions, expected,
        "exactly the events appended after the checkpoint"
    );
    assert!(
        next > Some(expected[2]),
        "the new checkpoint is past the new events"
    );
    let newest = read_all_pages(&store, ReadAllOptions::backward().limit(2)).await;
    let newest_positions: Vec<_> = newest.iter().take(2).map(|e| e.position).collect();
    assert_eq!(newest_positions, vec![expected[2], expected[1]]);
}

/// Appends the filter data set: streams in several categories, including names with `_` and
/// `%` (wildcards in SQL `LIKE`) and a category that is a prefix of another.
async fn filter_data<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    let plan: &[(&str, &[&str])] = &[
        ("account-1", &["Opened", "Deposited"]),
        ("order-1", &["Placed"]),
        ("accounting-1", &["Opened"]),
        ("account-2", &["Opened", "Deposited", "Withdrawn"]),
        ("order-10", &["Placed", "Paid"]),
        ("user", &["Registered", "Renamed"]),
        ("team_a-1", &["Opened"]),
        ("teamxa-1", &["Opened"]),
        ("100%-1", &["Deposited"]),
        ("1000-1", &["Deposited"]),
        ("account-1", &["Withdrawn", "Deposited"]),
        ("order-1", &["Paid"]),
    ];
    let mut n = 0;
    for (stream, types) in plan {
        let events = types
            .iter()
            .map(|t| {
                n += 1;
                ev(t, n)
            })
            .collect();
        append(store, &sid(stream), ExpectedVersion::Any, events).await;
    }
    let all = all_events(store).await;
    assert_eq!(all.len(), 18);
    all
}

/// Checks that `filter` returns exactly `expected_count` events, the ones `Filter::matches`
/// keeps, in order both ways, through default pages and through pages of 2; a single read
/// returns a prefix of them.
async fn check_filter<S: EventStore>(
    store: &S,
    all: &[RecordedEvent],
    filter: Filter,
    expected_count: usize,
) {
    let expected: Vec<_> = all.iter().filter(|e| filter.matches(e)).cloned().collect();
    assert_eq!(
        expected.len(),
        expected_count,
        "the data set gives {filter:?} {expected_count} events"
    );
    let mut reversed = expected.clone();
    reversed.reverse();
    let single = read_all(store, ReadAllOptions::forward().filter(filter.clone())).await;
    assert!(
        expected.starts_with(&single.events),
        "one read with {filter:?} returns a prefix"
    );
    for limit in [limits::READ_PAGE_MAX_EVENTS, 2] {
        let forward = ReadAllOptions::forward()
            .filter(filter.clone())
            .limit(limit);
        let forward = read_all_pages(store, forward).await;
        assert_eq!(
            ids(&forward),
            ids(&expected),
            "forward with {filter:?}, limit {limit}"
        );
        assert_eq!(forward, expected);
        let backward = ReadAllOptions::backward()
            .filter(filter.clone())
            .limit(limit);
        let backward = read_all_pages(store, backward).await;
        assert_eq!(
            ids(&backward),
            ids(&reversed),
            "backward with {filter:?}, limit {limit}"
        );
    }
}

/// Filtering by event types keeps events of any of the listed types.
pub async fn read_all_filter_event_types<S: EventStore + Clone>(store: S) {
    let all = filter_data(&store).await;
    let f = Filter::default;
    check_filter(&store, &all, f(), 18).await;
    check_filter(&store, &all, f().event_types(["Deposited"]), 5).await;
    check_filter(&store, &all, f().event_types(["Deposited", "Withdrawn"]), 7).await;
    check_filter(&store, &all, f().event_types(["Opened", "Paid", "Nope"]), 7).await;
    check_filter(&store, &all, f().event_types(["deposited"]), 0).await;
    check_filter(&store, &all, f().event_types(["Nope"]), 0).await;
}

/// Filtering by categories keeps events of streams in any of the listed categories; a
/// category is the part before the first `-`, so `account` does not match `accounting-1`.
pub async fn read_all_filter_categories<S: EventStore + Clone>(store: S) {
    let all = filter_data(&store).await;
    let f = Filter::default;
    check_filter(&store, &all, f().categories(["account"]), 7).await;
    check_filter(&store, &all, f().categories(["accounting"]), 1).await;
    check_filter(&store, &all, f().categories(["account", "order"]), 11).await;
    check_filter(&store, &all, f().categories(["user"]), 2).await;
    check_filter(&store, &all, f().categories(["team_a"]), 1).await;
    check_filter(&store, &all, f().categories(["100%"]), 1).await;
    check_filter(&store, &all, f().categories(["acc", "account-1"]), 0).await;
}

/// Filtering by stream prefix keeps events of streams whose id starts with it, taken
/// literally (`_` and `%` are not wildcards).
pub async fn read_all_filter_stream_prefix<S: EventStore + Clone>(store: S) {
    let all = filter_data(&store).await;
    let f = Filter::default;
    check_filter(&store, &all, f().stream_prefix("account"), 8).await;
    check_filter(&store, &all, f().stream_prefix("account-"), 7).await;
    check_filter(&store, &all, f().stream_prefix("account-1"), 4).await;
    check_filter(&store, &all, f().stream_prefix("order-1"), 4).await;
    check_filter(&store, &all, f().stream_prefix("order-10"), 2).await;
    check_filter(&store, &all, f().stream_prefix("team_"), 1).await;
    check_filter(&store, &all, f().stream_prefix("100%"), 1).await;
    check_filter(&store, &all, f().stream_prefix("user"), 2).await;
    check_filter(&store, &all, f().stream_prefix("Account"), 0).await;
    check_filter(&store, &all, f().stream_prefix(""), 18).await;
}

/// Different kinds of terms combine with AND; terms of one kind with OR.
pub async fn read_all_filter_combinations<S: EventStore + Clone>(store: S) {
    let all = filter_data(&store).await;
    let f = Filter::default;
    check_filter(
        &store,
        &all,
        f().categories(["account"]).event_types(["Deposited"]),
        3,
    )
    .await;
    check_filter(
        &store,
        &all,
        f().categories(["account", "order"])
            .event_types(["Opened", "Paid"]),
        4,
    )
    .await;
    check_filter(
        &store,
        &all,
        f().stream_prefix("order-1").event_types(["Placed"]),
        2,
    )
    .await;
    check_filter(
        &store,
        &all,
        f().categories(["order"]).stream_prefix("account"),
        0,
    )
    .await;
    check_filter(
        &store,
        &all,
        f().categories(["account"])
            .stream_prefix("account-2")
            .event_types(["Withdrawn", "Opened"]),
        2,
    )
    .await;
}

/// A filtered read pages with `next` like an unfiltered one: every match once, and the limit
/// counts matching events (a page of `limit` 3 may hold 3 matches among more examined events).
pub async fn read_all_filtered_paging<S: EventStore + Clone>(store: S) {
    let all = filter_data(&store).await;
    let filter = Filter::default().event_types(["Deposited", "Paid"]);
    let expected: Vec<_> = all.iter().filter(|e| filter.matches(e)).cloned().collect();
    assert_eq!(expected.len(), 7);
    for limit in [1, 3] {
        let options = ReadAllOptions::forward()
            .filter(filter.clone())
            .limit(limit);
        let mut seen: Vec<RecordedEvent> = Vec::new();
        let mut options = options;
        for pages in 0.. {
            assert!(pages <= 40, "paging must end");
            let page = read_all(&store, options.clone()).await;
            assert!(expected[seen.len()..].starts_with(&page.events));
            seen.extend(page.events);
            if page.is_end {
                break;
            }
            options = options.from(page.next.expect("next"));
        }
        assert_eq!(seen, expected, "limit {limit}");
    }
    let backward = read_all_pages(
        &store,
        ReadAllOptions::backward().filter(filter.clone()).limit(3),
    )
    .await;
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(backward, reversed);
}

/// `max_position` hides later events in both directions; forward paging under it ends.
pub async fn read_all_max_position<S: EventStore + Clone>(store: S) {
    let all = mixed_events(&store).await;
    let max = all[9].position;
    let visible = read_all_pages(&store, ReadAllOptions::forward().max_position(max)).await;
    assert_eq!(visible, all[..10].to_vec());
    let paged = read_all_pages(&store, ReadAllOptions::forward().limit(3).max_position(max)).await;
    assert_eq!(paged, all[..10].to_vec());
    let from = read_all_pages(
        &store,
        ReadAllOptions::forward()
            .from(all[4].position)
            .max_position(max),
    )
    .await;
    assert_eq!(from, all[4..10].to_vec());
    let backward = read_all_pages(&store, ReadAllOptions::backward().max_position(max)).await;
    let mut expected = all[..10].to_vec();
    expected.reverse();
    assert_eq!(backward, expected, "backward starts at max_position");
    let backward_from = read_all_pages(
        &store,
        ReadAllOptions::backward()
            .from(all[20].position)
            .max_position(all[5].position),
    )
    .await;
    assert_eq!(backward_from.len(), 6);
    assert_eq!(backward_from[0], all[5]);
    let filtered = read_all_pages(
        &store,
        ReadAllOptions::forward()
            .filter(Filter::default().stream_prefix("order"))
            .max_position(max),
    )
    .await;
    let expected: Vec<_> = all[..10]
        .iter()
        .filter(|e| e.stream_id.as_str() == "order-1")
        .cloned()
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(filtered, expected);
    if let Some(before_first) = all[0].position.0.checked_sub(1) {
        let none = ReadAllOptions::forward().max_position(Position(before_first));
        assert!(read_all_pages(&store, none).await.is_empty());
    }
}

/// One call examines a bounded number of events: a filter that matches nothing among more
/// than [`limits::READ_SCAN_MAX_EVENTS`] events still returns, with a `next` that makes
/// progress, and paging on finds the one match exactly once, both ways. An unfiltered read
/// returns at most [`limits::READ_PAGE_MAX_EVENTS`].
pub async fn read_all_scan_is_bounded<S: EventStore + Clone>(store: S) {
    let noise = sid("noise-1");
    let batch = vec![ev("Noise", 0); limits::APPEND_EVENTS_MAX];
    let batches = limits::READ_SCAN_MAX_EVENTS / limits::APPEND_EVENTS_MAX + 1;
    for _ in 0..batches {
        append(&store, &noise, ExpectedVersion::Any, batch.clone()).await;
    }
    let signal = append(
        &store,
        &sid("signal-1"),
        ExpectedVersion::Any,
        vec![ev("Signal", 1)],
    )
    .await;
    append(&store, &noise, ExpectedVersion::Any, vec![ev("Noise", 0)]).await;

    let whole = read_all(&store, ReadAllOptions::forward()).await;
    assert!(!whole.is_end, "more than a page of events remains");
    assert!(whole.events.len() <= limits::READ_PAGE_MAX_EVENTS);

    let filter = Filter::default().event_types(["Signal"]);
    for options in [
        ReadAllOptions::forward().filter(filter.clone()),
        ReadAllOptions::backward().filter(filter.clone()),
    ] {
        let found = read_all_pages(&store, options.clone()).await;
        assert_eq!(
            found.len(),
            1,
            "{:?}: the one match, once",
            options.direction
        );
        assert_eq!(found[0].position, signal.positions[0]);
    }
    let nothing = Filter::default().event_types(["Nothing"]);
    let page = read_all(&store, ReadAllOptions::forward().filter(nothing.clone())).await;
    if !page.is_end {
        assert!(page.events.is_empty());
        assert!(
            page.next > Some(Position::START),
            "a scan-bounded read makes progress"
        );
    }
    assert!(
        read_all_pages(&store, ReadAllOptions::forward().filter(nothing))
            .await
            .is_empty()
    );
}
