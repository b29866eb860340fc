//! The watermark in action: a transaction left open elsewhere in the cluster holds back what
//! `$all` readers see (never letting them skip past it), while stream reads are unaffected;
//! once it ends, everything is readable and a subscription delivers it.

mod support;

use std::time::{Duration, Instant};

use sqlx::Connection;
use strata_core::{
    EventData, EventStore, ExpectedVersion, ReadAllOptions, ReadStreamOptions, StreamId,
    SubscribeFrom, SubscriptionTarget,
};
use strata_postgres::{PgStoreOptions, PostgresStore};

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
    let mut other = sqlx::PgConnection::connect(&support::database_url())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut other)
        .await
        .unwrap();

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
