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
/// backend pids; they go back to the pool idle. The pool does not test a connection before
/// handing it out, so one ended by an earlier `terminate` can still be in it: such a
/// connection is closed and another taken in its place.
async fn pooled_pids(store: &PostgresStore, n: usize) -> Vec<i32> {
    let mut held = Vec::new();
    let mut pids = Vec::new();
    let want = n.max(store.pool().size() as usize);
    let mut dead = 0;
    while pids.len() < want {
        let mut conn = store.pool().acquire().await.unwrap();
        match sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
        {
            Ok(pid) => {
                pids.push(pid);
                held.push(conn);
            }
            Err(e) => {
                let ended = matches!(e, sqlx::Error::Io(_))
                    || e.as_database_error().and_then(|d| d.code()).as_deref() == Some("57P01");
                assert!(
                    ended,
                    "only a connection ended by the operator may fail: {e}"
                );
                dead += 1;
                assert!(dead <= 64, "the pool keeps handing out dead connections");
                conn.close_on_drop();
            }
        }
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

    // Each kind of read, right after the pool's connections were ended: each read may meet a
    // dead connection (Unavailable, and the connection is dropped) until one is live; no read
    // fails any other way, and no more reads fail than the pool held dead connections.
    let dead_max = store.pool().size() as usize + 4;
    async fn until_ok<T, F, Fut>(what: &str, dead_max: usize, mut read: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ReadError>>,
    {
        for _ in 0..=dead_max {
            match read().await {
                Ok(v) => return v,
                Err(ReadError::Unavailable(_)) => {}
                Err(e) => panic!("{what} after pg_terminate_backend: {e:?}, not Unavailable"),
            }
        }
        panic!("{what} still failed after {dead_max} dead connections");
    }
    terminate(&pooled_pids(&store, 4).await).await;
    let all = until_ok("read_all", dead_max, || {
        store.read_all(ReadAllOptions::forward())
    })
    .await;
    assert_eq!(all.events.len(), 1);

    terminate(&pooled_pids(&store, 4).await).await;
    let head = until_ok("head", dead_max, || store.head()).await;
    assert!(head.is_some());

    terminate(&pooled_pids(&store, 4).await).await;
    let stream = until_ok("read_stream", dead_max, || {
        store.read_stream(&s, ReadStreamOptions::forward())
    })
    .await;
    assert_eq!(stream.len(), 1);

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
    let mut next = sub.next().await;
    for _ in 0..dead_max {
        match next {
            Err(ReadError::Unavailable(_)) => next = sub.next().await,
            _ => break,
        }
    }
    assert_eq!(next.unwrap().stream_version, 1);
    drop((store, other));
    support::drop_schema(schema).await;
}
