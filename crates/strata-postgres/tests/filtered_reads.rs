//! Filtered `$all` reads on a large store where the filtered category is rare: every filter
//! returns exactly the matching events, in position order, across pages, with bounded pages
//! and a cursor that always moves forward, whichever index (or none) serves it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use strata_core::{
    AllPage, EventData, EventStore, ExpectedVersion, Filter, ListOptions, Position, ReadAllOptions,
    RecordedEvent, StreamId,
};
use strata_postgres::PostgresStore;

/// 200 rounds of: 990 events in `account-<i>` (the last of every 50th of type `Closed`), 10 in
/// `audit-<i % 7>` (1%), and every 20th round one in `auditor-<i>`. 200,010 events.
const ROUNDS: usize = 200;

async fn load(store: &PostgresStore) -> u64 {
    let mut audit_versions = [None::<u64>; 7];
    let mut total = 0u64;
    for i in 0..ROUNDS {
        let events: Vec<EventData> = (0..990)
            .map(|j| {
                let t = match j {
                    989 if i % 50 == 49 => "Closed",
                    _ if j % 2 == 0 => "Deposited",
                    _ => "Withdrawn",
                };
                EventData::json(t, &j).unwrap()
            })
            .collect();
        let s = StreamId::new(format!("account-{i}")).unwrap();
        store
            .append(&s, ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        let events: Vec<EventData> = (0..10)
            .map(|j| {
                let t = if j % 3 == 0 { "Flagged" } else { "Audited" };
                EventData::json(t, &(i, j)).unwrap()
            })
            .collect();
        let k = i % 7;
        let s = StreamId::new(format!("audit-{k}")).unwrap();
        let expected = audit_versions[k].map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let r = store.append(&s, expected, events).await.unwrap();
        audit_versions[k] = Some(r.stream_version);
        total += 1000;
        if i % 20 == 0 {
            let s = StreamId::new(format!("auditor-{i}")).unwrap();
            store
                .append(
                    &s,
                    ExpectedVersion::NoStream,
                    vec![EventData::json("Audited", &i).unwrap()],
                )
                .await
                .unwrap();
            total += 1;
        }
    }
    total
}

/// Every event, read unfiltered.
async fn everything(store: &PostgresStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut from = None;
    loop {
        let mut o = ReadAllOptions::forward().limit(10_000);
        if let Some(f) = from {
            o = o.from(f);
        }
        let page = store.read_all(o).await.unwrap();
        all.extend(page.events);
        from = page.next;
        if page.is_end {
            return all;
        }
    }
}

/// Pages through `$all` with `filter`, checking every page, and returns the positions read and
/// the number of calls.
async fn paged(
    store: &PostgresStore,
    filter: &Filter,
    limit: usize,
    from: Option<Position>,
    max: Option<Position>,
) -> (Vec<u64>, usize) {
    let mut read = Vec::new();
    let mut from = from;
    let mut calls = 0;
    loop {
        let mut o = ReadAllOptions::forward()
            .limit(limit)
            .filter(filter.clone());
        if let Some(f) = from {
            o = o.from(f);
        }
        if let Some(m) = max {
            o = o.max_position(m);
        }
        let page: AllPage = store.read_all(o).await.unwrap();
        calls += 1;
        assert!(calls < 10_000, "{filter:?}: the read does not end");
        assert!(
            page.events.len() <= limit,
            "{filter:?}: page over the limit"
        );
        for e in &page.events {
            assert!(filter.matches(e), "{filter:?}: {e:?} does not match");
            assert!(
                from.is_none_or(|f| e.position >= f),
                "{filter:?}: before from"
            );
            assert!(max.is_none_or(|m| e.position <= m), "{filter:?}: past max");
            assert!(
                read.last().is_none_or(|&l| e.position.0 > l),
                "{filter:?}: out of order or repeated at {}",
                e.position.0
            );
            read.push(e.position.0);
        }
        let next = page
            .next
            .expect("a forward read always has a next position");
        assert!(
            from.is_none_or(|f| next > f) || page.is_end,
            "{filter:?}: a page that is not the end did not move the cursor"
        );
        if let Some(last) = page.events.last() {
            assert!(next > last.position);
        }
        from = Some(next);
        if page.is_end {
            return (read, calls);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_reads_of_a_rare_category_return_exactly_the_matches_across_pages() {
    let (store, schema) = support::connect("filtered", |o| o).await;
    let total = load(&store).await;
    let all = everything(&store).await;
    assert_eq!(all.len() as u64, total);
    let max_all = all.last().unwrap().position;

    let filters = [
        Filter::default().categories(["audit"]),
        Filter::default().event_types(["Flagged"]),
        Filter::default().categories(["audit", "auditor", "nosuch", "audit"]),
        Filter::default().event_types(["Audited", "Flagged"]),
        // Category and type: the type is checked on the category's rows.
        Filter::default()
            .categories(["audit"])
            .event_types(["Flagged"]),
        // A prefix with `-` names one category; checked on its rows.
        Filter::default().stream_prefix("audit-3"),
        Filter::default()
            .event_types(["Audited"])
            .stream_prefix("auditor-"),
        // A prefix without `-`: the categories starting with it.
        Filter::default().stream_prefix("audit"),
        Filter::default()
            .categories(["audit", "auditor", "account"])
            .stream_prefix("audito"),
        Filter::default()
            .event_types(["Audited"])
            .stream_prefix("audito"),
        // A type rare within a common category: the category's rows are examined a bounded
        // number at a time (more than 100,000 of them lie between the first and last match).
        Filter::default()
            .categories(["account"])
            .event_types(["Closed"]),
        // Nothing matches: the common category with a type it never has (every call examines a
        // bounded number of rows and moves on), and a category the prefix rules out.
        Filter::default()
            .categories(["account"])
            .event_types(["Flagged"]),
        Filter::default().categories(["audit"]).stream_prefix("x-"),
        // As many categories as a filter may hold, with a residual: each key's share of the
        // rows checked per call (READ_INDEXED_CHECK_MAX_ROWS / 64) is below a page of 512 or
        // 1,000, so pages end at the cut before they are full.
        Filter::default()
            .categories(
                std::iter::once("audit".to_owned())
                    .chain((1..strata_core::limits::FILTER_MAX_TERMS).map(|k| format!("none{k}"))),
            )
            .event_types(["Audited"]),
    ];
    for filter in &filters {
        let expected: Vec<u64> = all
            .iter()
            .filter(|e| filter.matches(e))
            .map(|e| e.position.0)
            .collect();
        for limit in [7, 512, 1_000] {
            let (read, calls) = paged(&store, filter, limit, None, None).await;
            assert_eq!(read, expected, "{filter:?}, pages of {limit}");
            if !expected.is_empty() && limit == 512 {
                // Pages are full until the last: a call per page of matches, plus at most the
                // calls that stop at the bound on rows checked one by one.
                let bound_stops = all
                    .len()
                    .div_ceil(strata_postgres::limits::READ_INDEXED_CHECK_MAX_ROWS);
                assert!(
                    calls <= expected.len().div_ceil(limit) + bound_stops + 1,
                    "{filter:?}: {calls} calls for {} events",
                    expected.len()
                );
            }
        }
        // From the middle, and bounded by max_position.
        let mid = all[all.len() / 2].position;
        let upto = all[all.len() * 3 / 4].position;
        let (read, _) = paged(&store, filter, 100, Some(mid), Some(upto)).await;
        let bounded: Vec<u64> = expected
            .iter()
            .copied()
            .filter(|&p| p >= mid.0 && p <= upto.0)
            .collect();
        assert_eq!(read, bounded, "{filter:?} from {mid:?} to {upto:?}");
        // Past the end: nothing, and the end.
        let page = store
            .read_all(
                ReadAllOptions::forward()
                    .from(Position(max_all.0 + 1))
                    .limit(10)
                    .filter(filter.clone()),
            )
            .await
            .unwrap();
        assert!(page.events.is_empty() && page.is_end, "{filter:?}");
        assert_eq!(page.next, Some(Position(max_all.0 + 1)), "{filter:?}");
    }

    // Listing categories: counts from the indexes, paging with `after` and `prefix`.
    let page = store.list_categories(ListOptions::default()).await.unwrap();
    let got: Vec<(String, u64, u64)> = page
        .items
        .iter()
        .map(|c| (c.category.clone(), c.stream_count, c.event_count))
        .collect();
    let auditors = ROUNDS.div_ceil(20) as u64;
    assert_eq!(
        got,
        vec![
            ("account".to_owned(), ROUNDS as u64, ROUNDS as u64 * 990),
            ("audit".to_owned(), 7, ROUNDS as u64 * 10),
            ("auditor".to_owned(), auditors, auditors),
        ]
    );
    assert_eq!(page.next, None);
    let first = store
        .list_categories(ListOptions {
            limit: 1,
            ..ListOptions::default()
        })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.next.as_deref(), Some("account"));
    let rest = store
        .list_categories(ListOptions {
            after: first.next.clone(),
            prefix: Some("aud".to_owned()),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(rest.items[0].category, "audit");
    assert_eq!(rest.next.as_deref(), Some("audit"));
    let rest = store
        .list_categories(ListOptions {
            after: rest.next.clone(),
            prefix: Some("aud".to_owned()),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(rest.items[0].category, "auditor");
    assert_eq!(rest.next, None);
    let none = store
        .list_categories(ListOptions {
            prefix: Some("audit-".to_owned()),
            ..ListOptions::default()
        })
        .await
        .unwrap();
    assert!(none.items.is_empty());

    // Every category's streams, as the store lists them.
    let categories: BTreeSet<String> = all
        .iter()
        .map(|e| e.stream_id.category().to_owned())
        .collect();
    assert_eq!(categories.len(), 3);
    drop(store);
    support::drop_schema(schema).await;
}
