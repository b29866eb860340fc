//! The watermark in action: a transaction left open elsewhere in the cluster holds back what
//! `$all` readers see (never letting them skip past it), while stream reads are unaffected;
//! once it ends, everything is readable and a subscription delivers it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use sqlx::{Connection, Row};
use strata_core::{
    EventData, EventStore, ExpectedVersion, Position, ReadAllOptions, ReadStreamOptions, StreamId,
    SubscribeFrom, SubscriptionTarget,
};
use strata_postgres::{PgStoreOptions, PostgresStore, WatermarkHolder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holds_back_all_but_not_streams() {
    let (writer, schema) = support::connect("wm", |o| o).await;
    // A second store on the schema reads without waiting for its own writes.
    let reader = PostgresStore::connect_with(
        PgStoreOptions::new(support::database_url()).with_schema(schema.clone()),
    )
    .await
    .unwrap();
    let s = StreamId::new("account-1").unwrap();
    let first = writer
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![EventData::json("A", &1).unwrap()],
        )
        .await
        .unwrap();
    // Wait until the first event is readable everywhere.
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.head().await.unwrap() != Some(first.positions[0]) {
        assert!(
            Instant::now() < deadline,
            "first event never became readable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Another session takes a transaction id and stays open.
    let mut other = support::hold_watermark(&support::database_url()).await;

    let second = writer
        .append(
            &s,
            ExpectedVersion::Exact(0),
            vec![EventData::json("B", &2).unwrap()],
        )
        .await
        .unwrap();
    // Stream reads see it at once.
    let stream = reader
        .read_stream(&s, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(stream.len(), 2);
    // $all does not, yet: its transaction is above the watermark.
    let mut sub = reader
        .subscribe(
            SubscriptionTarget::All(Default::default()),
            SubscribeFrom::Start,
        )
        .await
        .unwrap();
    assert_eq!(sub.next().await.unwrap().event_type, "A");
    assert!(
        tokio::time::timeout(Duration::from_millis(700), sub.next())
            .await
            .is_err(),
        "nothing past the open transaction is delivered"
    );
    assert_eq!(reader.head().await.unwrap(), Some(first.positions[0]));
    let page = reader.read_all(ReadAllOptions::forward()).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert!(page.is_end);

    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("delivered once the transaction ended")
        .unwrap();
    assert_eq!(e.event_type, "B");
    assert_eq!(e.position, second.positions[0]);
    assert_eq!(reader.head().await.unwrap(), Some(second.positions[0]));
    drop((writer, reader));
    support::drop_schema(schema).await;
}

/// The test database's URL with its database replaced by `postgres`: another database of the
/// same cluster.
fn other_database_url() -> String {
    let url = support::database_url();
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let at = base.rfind('/').expect("a database in the URL");
    match query {
        "" => format!("{}/postgres", &base[..at]),
        q => format!("{}/postgres?{q}", &base[..at]),
    }
}

/// Heap rows fetched from `schema.events` by the statements run so far in `conn`'s current
/// transaction.
async fn rows_fetched(conn: &mut sqlx::PgConnection, schema: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)
           FROM pg_stat_xact_user_tables WHERE relid = $1::regclass",
    )
    .bind(format!("{schema}.events"))
    .fetch_one(conn)
    .await
    .unwrap()
}

/// A transaction held open in another database of the cluster while 10,000 events are
/// appended: the readable head stays the last event before it, found in a bounded number of
/// row fetches (the statement used to walk down every row appended since, on every read of
/// `$all`); `watermark()` names the holder (pid, database, state) and its error says how to
/// end it; once it ends, everything is readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_watermark_costs_bounded_work_and_names_its_holder() {
    const HELD: u64 = 10_000;
    let (store, schema) = support::connect("wm_held", |o| o).await;
    let mut last_before = None;
    for n in 0..100u64 {
        let s = StreamId::new(format!("before-{n}")).unwrap();
        let r = store
            .append(
                &s,
                ExpectedVersion::NoStream,
                vec![EventData::json("A", &n).unwrap()],
            )
            .await
            .unwrap();
        last_before = Some(r.positions[0]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.head().await.unwrap() != last_before {
        assert!(
            Instant::now() < deadline,
            "the first events never became readable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut holder = sqlx::PgConnection::connect(&other_database_url())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    let (xid, pid): (i64, i32) =
        sqlx::query_as("SELECT pg_current_xact_id()::text::bigint, pg_backend_pid()")
            .fetch_one(&mut holder)
            .await
            .unwrap();
    let mut last = None;
    for n in 0..HELD / 500 {
        let s = StreamId::new(format!("held-{n}")).unwrap();
        let events = (0..500)
            .map(|i| EventData::json("B", &i).unwrap())
            .collect();
        let r = store
            .append(&s, ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        last = r.positions.last().copied();
    }
    let last = last.unwrap();

    // The head is still the last event before the holder, and finding it fetched a bounded
    // number of rows, not one per held-back event.
    assert_eq!(store.head().await.unwrap(), last_before);
    let mut conn = sqlx::PgConnection::connect(&support::database_url())
        .await
        .unwrap();
    sqlx::raw_sql("SET enable_bitmapscan = off; BEGIN")
        .execute(&mut conn)
        .await
        .unwrap();
    let before = rows_fetched(&mut conn, &schema).await;
    let row = sqlx::query(store.watermark_sql())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let fetched = rows_fetched(&mut conn, &schema).await - before;
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    let (xmin, hi): (i64, Option<i64>) = (row.get(0), row.get(1));
    assert!(xmin <= xid, "the watermark is at or below the holder");
    assert_eq!(hi.map(|h| Position(h as u64)), last_before);
    assert!(
        fetched < 500,
        "finding the head fetched {fetched} rows with {HELD} events held back"
    );

    // The holder is named once it is the oldest transaction in the cluster (another test's
    // may be older for a moment).
    let deadline = Instant::now() + Duration::from_secs(60);
    let w = loop {
        let w = store.watermark().await.unwrap();
        if w.transaction_id == xid as u64 {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "the watermark never reached {xid}: {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(w.head, last_before);
    assert_eq!(w.newest, Some(last));
    assert_eq!(
        w.held_back_from.map(|p| p.0),
        last_before.map(|p| p.0 + 1),
        "the oldest held-back event is the first appended after the holder began"
    );
    match &w.holder {
        Some(WatermarkHolder::Session {
            transaction_id,
            pid: p,
            database,
            state,
            ..
        }) => {
            assert_eq!(*transaction_id, xid as u64);
            assert_eq!(*p, pid);
            assert_eq!(database.as_deref(), Some("postgres"));
            assert_eq!(state.as_deref(), Some("idle in transaction"));
        }
        other => panic!("the holder is the session in database postgres, not {other:?}"),
    }
    let message = w.check(Duration::ZERO).unwrap_err().to_string();
    assert!(
        message.contains(&format!("pid {pid} in database \"postgres\""))
            && message.contains(&format!("SELECT pg_terminate_backend({pid})")),
        "{message}"
    );
    let metrics = w.prometheus();
    assert!(
        metrics.contains(&format!(
            "strata_pg_watermark_holder_age_seconds{{pid=\"{pid}\",database=\"postgres\""
        )),
        "{metrics}"
    );

    // Once it ends, every event is readable.
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.head().await.unwrap() != Some(last) {
        assert!(
            Instant::now() < deadline,
            "the held-back events never became readable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // With nothing held back, the head is the top row: a row or two fetched.
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    let before = rows_fetched(&mut conn, &schema).await;
    let row = sqlx::query(store.watermark_sql())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let fetched = rows_fetched(&mut conn, &schema).await - before;
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    assert_eq!(row.get::<Option<i64>, _>(1), Some(last.0 as i64));
    assert!(fetched <= 2, "finding the head fetched {fetched} rows");
    let w = store.watermark().await.unwrap();
    assert_eq!(w.head, Some(last));
    assert_eq!(w.held_back_from, None);
    assert_eq!(w.holder, None);
    assert!(w.check(Duration::ZERO).is_ok());
    drop(store);
    support::drop_schema(schema).await;
}

/// `head_now` (what `/ready` asks) answers from one query while a transaction elsewhere holds
/// the watermark above this store's own append; `head` waits for that append (counted in
/// `read_your_writes_waits`), and `backend_metrics` (what `/metrics` adds) shows both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_now_does_not_wait_for_a_held_watermark() {
    let (store, schema) = support::connect("wm_now", |o| o).await;
    let s = StreamId::new("account-1").unwrap();
    let first = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![EventData::json("A", &1).unwrap()],
        )
        .await
        .unwrap();
    // Readable everywhere first (another test's transaction may hold the watermark a moment).
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.head_now().await.unwrap() != Some(first.positions[0]) {
        assert!(
            Instant::now() < deadline,
            "the first event never became readable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut holder = support::hold_watermark(&other_database_url()).await;
    store
        .append(
            &s,
            ExpectedVersion::Exact(0),
            vec![EventData::json("B", &2).unwrap()],
        )
        .await
        .unwrap();

    let waits = store.read_your_writes_waits();
    assert_eq!(store.head_now().await.unwrap(), Some(first.positions[0]));
    assert_eq!(
        store.read_your_writes_waits(),
        waits,
        "head_now waited for the store's own append"
    );
    // head does wait (up to READ_YOUR_WRITES_WAIT_MS), then answers what is readable.
    assert_eq!(store.head().await.unwrap(), Some(first.positions[0]));
    assert_eq!(store.read_your_writes_waits(), waits + 1);

    let metrics = store.backend_metrics().await.unwrap();
    assert!(
        metrics.contains("\nstrata_pg_watermark_held_back_positions ")
            && metrics.contains(&format!(
                "\nstrata_pg_read_your_writes_waits_total {}\n",
                waits + 1
            )),
        "{metrics}"
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    drop(store);
    support::drop_schema(schema).await;
}
