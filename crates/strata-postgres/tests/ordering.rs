//! The ordering guarantee under stress: many concurrent writers, some holding their transaction
//! open for a few milliseconds before commit so that commits land out of position order, and
//! several catch-up subscribers reading `$all` at the same time. Afterwards every subscriber
//! must have seen every committed event exactly once, in increasing position order.
//!
//! `STRATA_ORDERING_EVENTS` overrides the number of events (default 100,000).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;
use strata_core::{
    EventData, EventStore, ExpectedVersion, Filter, ListOptions, Position, ReadAllOptions,
    ReadStreamOptions, StreamId, SubscribeFrom, SubscriptionTarget, Uuid,
};
use strata_postgres::PostgresStore;

const FAST_WRITERS: usize = 8;
const SLOW_WRITERS: usize = 4;
const SUBSCRIBERS: usize = 4;

fn target_events() -> u64 {
    std::env::var("STRATA_ORDERING_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Appends until `remaining` runs out. Slow writers hold every transaction open 0-5 ms; fast
/// writers hold one in ten for 1-4 ms and otherwise go through the batched path.
async fn writer(
    store: PostgresStore,
    id: usize,
    slow: bool,
    remaining: Arc<AtomicU64>,
) -> Vec<(Position, Uuid)> {
    let mut acked = Vec::new();
    let mut n = 0u64;
    loop {
        let (count, hold) = {
            let mut rng = rand::thread_rng();
            let count: u64 = if slow {
                rng.gen_range(1..=3)
            } else {
                rng.gen_range(1..=12)
            };
            let hold = if slow {
                Some(Duration::from_micros(rng.gen_range(0..5_000)))
            } else if rng.gen_ratio(1, 10) {
                Some(Duration::from_micros(rng.gen_range(1_000..4_000)))
            } else {
                None
            };
            (count, hold)
        };
        let before = remaining.fetch_sub(
            count.min(remaining.load(Ordering::Relaxed)),
            Ordering::AcqRel,
        );
        if before == 0 {
            return acked;
        }
        let stream = StreamId::new(format!("{}-{id}-{}", ["account", "order"][id % 2], n % 7))
            .expect("stream id");
        n += 1;
        let events: Vec<EventData> = (0..count)
            .map(|i| {
                EventData::json("Tick", &json!({"writer": id, "n": n, "i": i}))
                    .expect("serialize")
                    .with_id(Uuid::now_v7())
            })
            .collect();
        let ids: Vec<Uuid> = events.iter().filter_map(|e| e.event_id).collect();
        let result = match hold {
            Some(hold) => {
                store
                    .append_holding_transaction(&stream, ExpectedVersion::Any, events, hold)
                    .await
            }
            None => store.append(&stream, ExpectedVersion::Any, events).await,
        }
        .expect("append");
        assert_eq!(result.positions.len(), ids.len());
        acked.extend(result.positions.into_iter().zip(ids));
    }
}

/// Follows `$all` (optionally filtered) until it has `expected` events or the deadline passes.
async fn subscriber(
    store: PostgresStore,
    filter: Filter,
    start_after: Duration,
    expected: Arc<AtomicU64>,
) -> Vec<(Position, Uuid)> {
    tokio::time::sleep(start_after).await;
    let mut sub = store
        .subscribe(SubscriptionTarget::All(filter), SubscribeFrom::Start)
        .await
        .expect("subscribe");
    let mut seen = Vec::new();
    // Generous while writers run; once they are done, a subscriber has 60 s to catch up (a
    // skipped event shows up as a subscriber that never reaches the committed count).
    let mut deadline = Instant::now() + Duration::from_secs(600);
    let mut writers_done = false;
    loop {
        let want = expected.load(Ordering::Acquire);
        if want != u64::MAX && !writers_done {
            writers_done = true;
            deadline = deadline.min(Instant::now() + Duration::from_secs(60));
        }
        if want != u64::MAX && seen.len() as u64 >= want {
            // Writers are done and we have as many as were committed; look once more for
            // anything extra (a duplicate or a stray event would show up here).
            if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
                seen.push((e.position, e.event_id));
            }
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "subscriber timed out with {} events",
            seen.len()
        );
        match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            Ok(Ok(e)) => seen.push((e.position, e.event_id)),
            Ok(Err(e)) => panic!("subscription failed: {e}"),
            Err(_) => continue,
        }
    }
}

fn check(name: &str, seen: &[(Position, Uuid)], expected: &[(Position, Uuid)]) {
    for w in seen.windows(2) {
        assert!(
            w[0].0 < w[1].0,
            "{name}: positions must strictly increase: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "{name}: saw {} events, {} were committed",
        seen.len(),
        expected.len()
    );
    assert_eq!(seen, expected, "{name}: saw exactly the committed events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_subscribers_never_skip_or_repeat_under_out_of_order_commits() {
    let (store, schema) =
        support::connect("ord", |o| o.with_max_connections(32).with_append_writers(8)).await;
    let target = target_events();
    let started = Instant::now();
    let remaining = Arc::new(AtomicU64::new(target));
    let expected_all = Arc::new(AtomicU64::new(u64::MAX));
    let expected_accounts = Arc::new(AtomicU64::new(u64::MAX));

    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        // One starts before anything is written, the others join while writers run.
        let delay = Duration::from_millis(i as u64 * 1_500);
        subs.push(tokio::spawn(subscriber(
            store.clone(),
            Filter::default(),
            delay,
            expected_all.clone(),
        )));
    }
    let filtered = tokio::spawn(subscriber(
        store.clone(),
        Filter::default().categories(["account"]),
        Duration::from_millis(700),
        expected_accounts.clone(),
    ));

    let mut writers = Vec::new();
    for id in 0..FAST_WRITERS + SLOW_WRITERS {
        writers.push(tokio::spawn(writer(
            store.clone(),
            id,
            id >= FAST_WRITERS,
            remaining.clone(),
        )));
    }
    let mut committed = Vec::new();
    let mut per_writer = HashMap::new();
    for (id, w) in writers.into_iter().enumerate() {
        let acked = w.await.expect("writer panicked");
        per_writer.insert(id, acked.len());
        committed.extend(acked);
    }
    let wrote = started.elapsed();
    committed.sort();
    let accounts: Vec<(Position, Uuid)> = {
        // Writer ids with even numbers write to `account-*` streams.
        let mut ids = std::collections::HashSet::new();
        let mut from = None;
        loop {
            let mut o = ReadAllOptions::forward().filter(Filter::default().categories(["account"]));
            if let Some(f) = from {
                o = o.from(f);
            }
            let page = store.read_all(o).await.expect("read_all");
            ids.extend(page.events.iter().map(|e| (e.position, e.event_id)));
            from = page.next;
            if page.is_end {
                break;
            }
        }
        let mut v: Vec<_> = ids.into_iter().collect();
        v.sort();
        v
    };
    assert!(
        committed.len() as u64 >= target,
        "wrote {} events",
        committed.len()
    );
    // Within each stream, versions are dense and positions increase with them.
    let mut after: Option<String> = None;
    loop {
        let mut o = ListOptions::default().limit(100);
        if let Some(a) = &after {
            o = o.after(a.clone());
        }
        let page = store.list_streams(o).await.expect("list_streams");
        for summary in &page.items {
            let s = StreamId::new(summary.stream_id.clone()).expect("stream id");
            let events = store
                .read_stream(&s, ReadStreamOptions::forward())
                .await
                .expect("read_stream");
            assert_eq!(events.len() as u64, summary.event_count);
            for (i, pair) in events.windows(2).enumerate() {
                assert_eq!(pair[0].stream_version, i as u64);
                assert!(
                    pair[0].position < pair[1].position,
                    "{s}: positions follow versions"
                );
                assert!(pair[0].recorded_at <= pair[1].recorded_at);
            }
        }
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    expected_all.store(committed.len() as u64, Ordering::Release);
    expected_accounts.store(accounts.len() as u64, Ordering::Release);

    for (i, s) in subs.into_iter().enumerate() {
        let seen = s.await.expect("subscriber panicked");
        check(&format!("subscriber {i}"), &seen, &committed);
    }
    let seen = filtered.await.expect("filtered subscriber panicked");
    check("account subscriber", &seen, &accounts);
    let account_set: std::collections::HashSet<_> = accounts.iter().collect();
    let expected_accounts: Vec<_> = committed
        .iter()
        .filter(|c| account_set.contains(c))
        .cloned()
        .collect();
    assert_eq!(expected_accounts.len(), accounts.len());
    eprintln!(
        "{} events from {} writers ({:?} per writer) in {:?}; {} subscribers checked in {:?}",
        committed.len(),
        FAST_WRITERS + SLOW_WRITERS,
        per_writer,
        wrote,
        SUBSCRIBERS + 1,
        started.elapsed()
    );
    drop(store);
    support::drop_schema(schema).await;
}
