//! `head`, `stream_info`, and the paged listings of streams and categories.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_core::{
    CategorySummary, EventStore, ExpectedVersion, ListOptions, Page, ReadAllOptions, StreamSummary,
};

use super::support::*;

/// `head` is `None` on an empty store and then the position of the newest event.
pub async fn head_tracks_last_position<S: EventStore + Clone>(store: S) {
    assert_eq!(head(&store).await, None);
    let r = append(&store, &sid("a-1"), ExpectedVersion::Any, evs("E", 0, 1)).await;
    assert_eq!(head(&store).await, Some(r.positions[0]));
    let r = append(&store, &sid("b-1"), ExpectedVersion::Any, evs("E", 0, 4)).await;
    assert_eq!(head(&store).await, Some(r.positions[3]));
    let _ = store
        .append(&sid("b-1"), ExpectedVersion::NoStream, evs("E", 0, 1))
        .await;
    assert_eq!(
        head(&store).await,
        Some(r.positions[3]),
        "a failed append moves nothing"
    );
    let newest = read_all_pages(&store, ReadAllOptions::backward().limit(1)).await;
    assert_eq!(newest[0].position, r.positions[3]);
}

/// `stream_info` of a missing stream says so; of an existing one it gives the version, count,
/// first and last recorded_at and last position, equal to what reads return.
pub async fn stream_info_missing_and_existing<S: EventStore + Clone>(store: S) {
    let s = sid("account-1");
    let info = within("stream_info", store.stream_info(&s))
        .await
        .expect("stream_info of a missing stream is not an error");
    assert_eq!(info.stream_id, s);
    assert!(!info.exists);
    assert_eq!(info.current_version, None);
    assert_eq!(info.event_count, 0);
    assert_eq!(info.first_recorded_at, None);
    assert_eq!(info.last_recorded_at, None);
    assert_eq!(info.last_position, None);

    append(&store, &s, ExpectedVersion::Any, evs("E", 0, 2)).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    append(
        &store,
        &sid("account-2"),
        ExpectedVersion::Any,
        evs("E", 0, 2),
    )
    .await;
    append(&store, &s, ExpectedVersion::Any, evs("E", 2, 1)).await;
    let events = stream_events(&store, &s).await;
    let info = within("stream_info", store.stream_info(&s))
        .await
        .expect("stream_info");
    assert_eq!(info.stream_id, s);
    assert!(info.exists);
    assert_eq!(info.current_version, Some(2));
    assert_eq!(info.event_count, 3);
    assert_eq!(info.first_recorded_at, Some(events[0].recorded_at));
    assert_eq!(info.last_recorded_at, Some(events[2].recorded_at));
    assert!(info.first_recorded_at < info.last_recorded_at);
    assert_eq!(info.last_position, Some(events[2].position));
}

const STREAMS: &[(&str, u64)] = &[
    ("order-2", 1),
    ("account-10", 2),
    ("account-2", 3),
    ("Zebra-1", 1),
    ("account-1", 4),
    ("order-1", 2),
    ("a", 1),
    ("account_x-1", 1),
];

/// Creates [`STREAMS`]; returns the expected summaries in name (byte) order.
async fn create_streams<S: EventStore>(store: &S) -> Vec<StreamSummary> {
    let mut last = BTreeMap::new();
    for (name, count) in STREAMS {
        let r = append(store, &sid(name), ExpectedVersion::Any, evs("E", 0, *count)).await;
        last.insert(name.to_string(), (count, r.last_position()));
    }
    // One more event to a stream created earlier moves its last position.
    let r = append(store, &sid("order-2"), ExpectedVersion::Any, evs("E", 9, 1)).await;
    last.insert("order-2".to_owned(), (&2, r.last_position()));
    last.into_iter()
        .map(|(name, (count, position))| StreamSummary {
            category: strata_core::category_of(&name).to_owned(),
            stream_id: name,
            event_count: *count,
            last_position: position,
        })
        .collect()
}

async fn list_streams<S: EventStore>(store: &S, options: ListOptions) -> Page<StreamSummary> {
    within("list_streams", store.list_streams(options.clone()))
        .await
        .unwrap_or_else(|e| panic!("list_streams({options:?}) failed: {e:?}"))
}

async fn list_categories<S: EventStore>(store: &S, options: ListOptions) -> Page<CategorySummary> {
    within("list_categories", store.list_categories(options.clone()))
        .await
        .unwrap_or_else(|e| panic!("list_categories({options:?}) failed: {e:?}"))
}

/// Follows `next` from `options`; checks page sizes and that `next` is the last name of a page
/// followed by more, and `None` on the last page.
async fn all_stream_pages<S: EventStore>(store: &S, options: ListOptions) -> Vec<StreamSummary> {
    let mut out = Vec::new();
    let mut options = options;
    for _ in 0..100 {
        let page = list_streams(store, options.clone()).await;
        assert!(page.items.len() <= options.limit);
        out.extend(page.items.iter().cloned());
        match page.next {
            Some(next) => {
                assert_eq!(
                    Some(&next),
                    page.items.last().map(|s| &s.stream_id),
                    "next is the last name of the page"
                );
                assert_eq!(
                    page.items.len(),
                    options.limit,
                    "only a full page has a next"
                );
                options.after = Some(next);
            }
            None => return out,
        }
    }
    panic!("listing streams did not end within 100 pages");
}

/// Streams are listed in byte order of their names (`Zebra` before `a`), paged with `after`
/// and `next`; the last page (even a full one) has no `next`.
pub async fn list_streams_in_name_order_with_paging<S: EventStore + Clone>(store: S) {
    let expected = create_streams(&store).await;
    let names: Vec<&str> = expected.iter().map(|s| s.stream_id.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "Zebra-1",
            "a",
            "account-1",
            "account-10",
            "account-2",
            "account_x-1",
            "order-1",
            "order-2"
        ]
    );
    let whole = list_streams(&store, ListOptions::default()).await;
    assert_eq!(whole.items, expected);
    assert_eq!(whole.next, None);
    for limit in [1, 2, 3, 4, 8] {
        let paged = all_stream_pages(&store, ListOptions::default().limit(limit)).await;
        assert_eq!(paged, expected, "paging with limit {limit}");
    }
    let first = list_streams(&store, ListOptions::default().limit(4)).await;
    assert_eq!(first.next.as_deref(), Some("account-10"));
    let second = list_streams(&store, ListOptions::default().limit(4).after("account-10")).await;
    assert_eq!(second.items, expected[4..].to_vec());
    assert_eq!(second.next, None, "a full last page has no next");
}

/// `prefix` keeps names starting with it (literally); `after` is exclusive and need not be a
/// stored name.
pub async fn list_streams_prefix_and_after<S: EventStore + Clone>(store: S) {
    let expected = create_streams(&store).await;
    let names = |page: &Page<StreamSummary>| -> Vec<String> {
        page.items.iter().map(|s| s.stream_id.clone()).collect()
    };
    let o = ListOptions::default;
    let cases: Vec<(ListOptions, Vec<&str>)> = vec![
        (
            o().prefix("account-"),
            vec!["account-1", "account-10", "account-2"],
        ),
        (
            o().prefix("account"),
            vec!["account-1", "account-10", "account-2", "account_x-1"],
        ),
        (o().prefix("account_"), vec!["account_x-1"]),
        (o().prefix("account-1"), vec!["account-1", "account-10"]),
        (o().prefix("order").after("order-1"), vec!["order-2"]),
        (
            o().prefix("account").after("account-10"),
            vec!["account-2", "account_x-1"],
        ),
        (
            o().after("account-10"),
            vec!["account-2", "account_x-1", "order-1", "order-2"],
        ),
        (o().after("b"), vec!["order-1", "order-2"]),
        (o().after("order-2"), vec![]),
        (o().prefix("nothing"), vec![]),
        (o().prefix("Zebra"), vec!["Zebra-1"]),
        (o().prefix("zebra"), vec![]),
    ];
    for (options, want) in cases {
        let page = list_streams(&store, options.clone()).await;
        assert_eq!(names(&page), want, "list_streams({options:?})");
        assert_eq!(page.next, None);
    }
    let paged = all_stream_pages(&store, o().prefix("account").limit(1)).await;
    assert_eq!(paged.len(), 4);
    assert_eq!(paged, expected[2..6].to_vec());
}

/// Categories are listed in name order with their stream and event counts, paged like streams,
/// with a prefix on the category name.
pub async fn list_categories_with_counts_and_paging<S: EventStore + Clone>(store: S) {
    create_streams(&store).await;
    let cat = |category: &str, stream_count, event_count| CategorySummary {
        category: category.to_owned(),
        stream_count,
        event_count,
    };
    let expected = vec![
        cat("Zebra", 1, 1),
        cat("a", 1, 1),
        cat("account", 3, 9),
        cat("account_x", 1, 1),
        cat("order", 2, 4),
    ];
    let whole = list_categories(&store, ListOptions::default()).await;
    assert_eq!(whole.items, expected);
    assert_eq!(whole.next, None);
    let mut seen = Vec::new();
    let mut options = ListOptions::default().limit(2);
    for _ in 0..10 {
        let page = list_categories(&store, options.clone()).await;
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().cloned());
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), page.items.last().map(|c| &c.category));
                options = options.after(next);
            }
            None => break,
        }
    }
    assert_eq!(seen, expected);
    let accounts = list_categories(&store, ListOptions::default().prefix("account")).await;
    assert_eq!(accounts.items, expected[2..4].to_vec());
    let after = list_categories(&store, ListOptions::default().after("account")).await;
    assert_eq!(after.items, expected[3..].to_vec());
    let none = list_categories(&store, ListOptions::default().prefix("x")).await;
    assert!(none.items.is_empty() && none.next.is_none());
}

/// Listings of an empty store are empty with no `next`.
pub async fn list_empty_store<S: EventStore + Clone>(store: S) {
    let streams = list_streams(&store, ListOptions::default()).await;
    assert!(streams.items.is_empty());
    assert_eq!(streams.next, None);
    let categories = list_categories(&store, ListOptions::default().limit(1)).await;
    assert!(categories.items.is_empty());
    assert_eq!(categories.next, None);
    // A failed append lists nothing either.
    let _ = store
        .append(&sid("a-1"), ExpectedVersion::StreamExists, evs("E", 0, 1))
        .await;
    assert!(list_streams(&store, ListOptions::default())
        .await
        .items
        .is_empty());
}
