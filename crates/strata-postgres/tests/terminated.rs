//! A backend that PostgreSQL ends (`pg_terminate_backend`, a fast shutdown) is an outage, not a
//! bug: appends run again on another connection, and a read that met the dead connection fails
//! with `ReadError::Unavailable` (HTTP 503), never `Storage` (HTTP 500).
#![allow(clippy::unwrap_used)]

mod support;

use sqlx::{Connection, PgConnection};
use strata_core::{
    EventData, EventStore, ExpectedVersion, ReadAllOptions, ReadError, ReadStreamOptions, StreamId,
    SubscribeFrom, SubscriptionTarget,
};
use strata_postgres::PostgresStore;

/// Takes every connection of the store's pool at once (and at least `n`) and returns their
/// backend pids; they go back to the pool idle.
async fn pooled_pids(store: &PostgresStore, n: usize) -> Vec<i32> {
    let mut held = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..n.max(store.pool().size() as usize) {
        let mut conn = store.pool().acquire().await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        pids.push(pid);
        held.push(conn);
    }
    pids
}

/// Ends the backends `pids` from another session, as an operator would, and waits until
/// they are gone.
async fn terminate(pids: &[i32]) {
    let mut admin = PgConnection::connect(&support::database_url())
        .await
        .unwrap();
    for &pid in pids {
        let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(ended, "backend {pid} was not there to end");
    }
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(pids)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let _ = admin.close().await;
}

fn event(n: u64) -> EventData {
    EventData::json("Deposited", &serde_json::json!({ "n": n })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_on_terminated_connections_run_again_on_live_ones() {
    let (store, schema) = support::connect("term_append", |o| o).await;
    let s = StreamId::new("account-1").unwrap();
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();

    // Every pooled connection ended while idle: a lone append (the one-statement path) meets
    // a dead one first.
    terminate(&pooled_pids(&store, 4).await).await;
    let one = store
        .append(&s, ExpectedVersion::Exact(0), vec![event(1)])
        .await
        .expect("a lone append runs again on a live connection");
    assert_eq!(one.stream_version, 1);

    // Again, with concurrent appends grouped into batches.
    terminate(&pooled_pids(&store, 4).await).await;
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = StreamId::new(format!("account-b{i}")).unwrap();
                store
                    .append(&s, ExpectedVersion::NoStream, vec![event(i), event(i)])
                    .await
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap().expect("a batched append runs again");
        assert_eq!(r.stream_version, 1);
    }
    // Each appended exactly once.
    let stream = store
        .read_stream(&s, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(stream.len(), 2);
    let all = store
        .read_all(ReadAllOptions::forward().limit(100))
        .await
        .unwrap();
    assert_eq!(all.events.len(), 2 + 8 * 2);
    drop(store);
    support::drop_schema(schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_terminated_connections_are_unavailable_not_storage_errors() {
    let (store, schema) = support::connect("term_read", |o| o).await;
    let s = StreamId::new("account-1").unwrap();
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    let mut sub = store
        .subscribe(
            SubscriptionTarget::All(Default::default()),
            SubscribeFrom::Start,
        )
        .await
        .unwrap();
    sub.next().await.unwrap();

    // Each kind of read, right after the pool's connections were ended: the first may meet a
    // dead connection (Unavailable), the next one finds a live one.
    let unavailable_or_ok = |what: &str, r: Result<(), ReadError>| match r {
        Ok(()) | Err(ReadError::Unavailable(_)) => {}
        Err(e) => panic!("{what} after pg_terminate_backend: {e:?}, not Unavailable"),
    };
    terminate(&pooled_pids(&store, 4).await).await;
    let read = || store.read_all(ReadAllOptions::forward());
    unavailable_or_ok("read_all", read().await.map(drop));
    assert_eq!(read().await.unwrap().events.len(), 1);

    terminate(&pooled_pids(&store, 4).await).await;
    unavailable_or_ok("head", store.head().await.map(drop));
    assert!(store.head().await.unwrap().is_some());

    terminate(&pooled_pids(&store, 4).await).await;
    let read = || store.read_stream(&s, ReadStreamOptions::forward());
    unavailable_or_ok("read_stream", read().await.map(drop));
    assert_eq!(read().await.unwrap().len(), 1);

    // A subscription (what an SSE stream follows) fails with Unavailable, or goes on; after
    // Unavailable it can go on from where it was.
    terminate(&pooled_pids(&store, 4).await).await;
    let other = PostgresStore::connect_with(
        strata_postgres::PgStoreOptions::new(support::database_url()).with_schema(schema.clone()),
    )
    .await
    .unwrap();
    other
        .append(&s, ExpectedVersion::Exact(0), vec![event(1)])
        .await
        .unwrap();
    let next = match sub.next().await {
        Err(ReadError::Unavailable(_)) => sub.next().await,
        r => r,
    };
    assert_eq!(next.unwrap().stream_version, 1);
    drop((store, other));
    support::drop_schema(schema).await;
}
