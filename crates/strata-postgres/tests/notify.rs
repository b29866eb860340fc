//! Wake-ups across processes: a subscription whose poll fallback is switched off (an hour) is
//! still woken by another store's appends through LISTEN/NOTIFY, also after its LISTEN
//! connection was killed (it reconnects with backoff).

mod support;

use std::time::Duration;

use strata_core::{
    EventData, EventStore, ExpectedVersion, StreamId, SubscribeFrom, SubscriptionTarget,
};
use strata_postgres::{PgStoreOptions, PostgresStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_appends_wake_subscribers_even_after_the_listener_drops() {
    let (writer, schema) = support::connect("ntf", |o| o).await;
    // A second store on the same schema stands in for another process.
    let reader = PostgresStore::connect_with(
        PgStoreOptions::new(support::database_url()).with_schema(schema.clone()),
    )
    .await
    .unwrap();
    let s = StreamId::new("account-1").unwrap();
    let mut sub = reader
        .subscribe(
            SubscriptionTarget::All(Default::default()),
            SubscribeFrom::Start,
        )
        .await
        .unwrap()
        .with_poll_interval(Duration::from_secs(3600));
    // Let the listener connect.
    tokio::time::sleep(Duration::from_millis(300)).await;

    writer
        .append(
            &s,
            ExpectedVersion::Any,
            vec![EventData::json("A", &1).unwrap()],
        )
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("woken by NOTIFY")
        .unwrap();
    assert_eq!(e.event_type, "A");
    // Wait on the subscription before the next append so the wake-up must come from NOTIFY.
    let pending = tokio::spawn(async move {
        let e = sub.next().await.unwrap();
        (e, sub)
    });

    // Kill every LISTEN connection on this schema's channel.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE query LIKE 'LISTEN%' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
    )
    .bind(format!("strata_{schema}"))
    .fetch_all(writer.pool())
    .await
    .unwrap();
    assert!(!killed.is_empty(), "found the listeners to kill");
    // Reconnection takes at least the minimum backoff.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    writer
        .append(
            &s,
            ExpectedVersion::Any,
            vec![EventData::json("B", &2).unwrap()],
        )
        .await
        .unwrap();
    let (e, _sub) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("woken after the listener reconnected")
        .unwrap();
    assert_eq!(e.event_type, "B");
    drop((writer, reader));
    support::drop_schema(schema).await;
}
