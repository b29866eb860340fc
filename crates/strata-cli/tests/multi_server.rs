//! Three `strata serve --database-url` processes on one PostgreSQL database: writers spread
//! over all three append over HTTP, while a test-only trigger holds a random third of the
//! appending transactions open for up to 20 ms after their insert, so commits finish out of
//! position order. Two SSE subscribers on each server (one from the start, one joining
//! midway) must each deliver exactly the database's `$all`: every acknowledged event, once,
//! in the same order.
//!
//! Uses the PostgreSQL at `STRATA_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and creates a database of its own there, dropped
//! at the end. Without PostgreSQL it says so and passes, except under CI (`CI` set), where it
//! fails. `STRATA_MULTI_SERVER_EVENTS` (default 3,000) sets the number of events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::Connection;
use strata_client::Client;
use strata_core::{EventData, EventStore, ExpectedVersion, Position, ReadAllOptions, Uuid};

mod support;

use support::{Database, Server, BIN};

const SERVERS: usize = 3;
const WRITERS: usize = 12;
/// How long a subscriber may take to deliver what is stored before the test fails.
const DELIVERY_BOUND: Duration = Duration::from_secs(60);

/// Starts `strata serve` on `database_url` and waits for its "serving ... on URL" line.
fn start(database_url: &str) -> Server {
    let mut serve = Command::new(BIN);
    serve
        .args(["--database-url", database_url, "serve"])
        .args(["--listen", "127.0.0.1:0", "--no-projections"])
        .env_remove("STRATA_DATA");
    Server::spawn(serve)
}

/// The test-only trigger: after an append's insert (its positions taken, the append lock
/// released), a random third of the transactions sleep up to 20 ms before they may commit.
const DELAY_TRIGGER: &str = "
CREATE FUNCTION strata.test_delay_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF random() < 0.33 THEN
        PERFORM pg_sleep(random() * 0.02);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER test_delay_commit AFTER INSERT ON strata.events
    FOR EACH STATEMENT EXECUTE FUNCTION strata.test_delay_commit();";

/// Follows `$all` on `server` from the start, reconnecting after a drop or a `lagged` notice
/// with the last position seen (`Client::follow`), and keeps every event it is given.
fn subscriber(
    server: String,
    delivered: tokio::sync::watch::Sender<Vec<(Position, Uuid)>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = Client::new(&server).unwrap();
        let mut follow = client.follow("/subscriptions/all?from=start".to_owned(), None);
        loop {
            let e = follow.next().await.unwrap();
            delivered.send_modify(|d| d.push((e.position, e.event_id)));
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_on_one_database_give_every_subscriber_the_same_order() {
    let Some(db) = Database::create("the multi-server test").await else {
        return;
    };
    let total: u64 = std::env::var("STRATA_MULTI_SERVER_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let db_url = db.url();
    // The first server creates the schema; then the trigger goes in and the others start.
    let mut servers = vec![start(&db_url)];
    let mut conn = sqlx::PgConnection::connect(&db_url).await.unwrap();
    sqlx::raw_sql(DELAY_TRIGGER)
        .execute(&mut conn)
        .await
        .unwrap();
    servers.extend((1..SERVERS).map(|_| start(&db_url)));
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();

    let mut subscribers = Vec::new();
    let mut deliveries = Vec::new();
    for url in &urls {
        let (tx, rx) = tokio::sync::watch::channel(Vec::new());
        subscribers.push(subscriber(url.clone(), tx));
        deliveries.push((format!("the subscriber on {url} from the start"), rx));
    }

    // Writers, spread over the servers, each appending 1-3 events at a time to a few streams.
    let remaining = Arc::new(AtomicU64::new(total));
    let (written, mut written_rx) = tokio::sync::watch::channel(0u64);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = Client::new(&urls[w % SERVERS]).unwrap();
            let (remaining, written) = (remaining.clone(), written.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut n = 0u64;
                loop {
                    let count = rand::thread_rng().gen_range(1..=3u64);
                    let Ok(before) =
                        remaining.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                            (r > 0).then(|| r - count.min(r))
                        })
                    else {
                        return acked;
                    };
                    let events: Vec<EventData> = (0..count.min(before))
                        .map(|i| {
                            EventData::json(
                                "Deposited",
                                &serde_json::json!({"writer": w, "n": n, "i": i}),
                            )
                            .unwrap()
                            .with_id(Uuid::now_v7())
                        })
                        .collect();
                    let stream = format!("account-{w}-{}", n % 4);
                    n += 1;
                    let answer = client
                        .append_raw(&stream, ExpectedVersion::Any, &events)
                        .await
                        .unwrap_or_else(|e| panic!("append on {}: {e:?}", client.base_url()));
                    assert_eq!(answer.positions.len(), events.len());
                    for (e, p) in events.iter().zip(answer.positions.iter()) {
                        acked.push((*p, e.event_id.unwrap()));
                    }
                    written.send_modify(|c| *c += events.len() as u64);
                }
            })
        })
        .collect();

    // A second subscriber on each server joins once a third is written.
    written_rx.wait_for(|c| *c >= total / 3).await.unwrap();
    for url in &urls {
        let (tx, rx) = tokio::sync::watch::channel(Vec::new());
        subscribers.push(subscriber(url.clone(), tx));
        deliveries.push((format!("the subscriber on {url} that joined later"), rx));
    }

    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert_eq!(acked.len() as u64, total);

    // The database's `$all`, read directly: exactly the acknowledged events.
    let store = strata_postgres::PostgresStore::connect_with(
        strata_postgres::PgStoreOptions::new(db_url.clone()).with_migrate(false),
    )
    .await
    .unwrap();
    // `$all` shows an event once every older transaction in the cluster has ended, and this
    // fresh store did not write them (no read-your-writes): a transaction elsewhere (another
    // test's, a benchmark's) can hold the last ones back for a moment. Read until as many
    // events as were acknowledged are readable, or the deadline passes; then compare.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut order = Vec::new();
    let mut from = Position::START;
    loop {
        let page = store
            .read_all(ReadAllOptions::forward().from(from).limit(1_000))
            .await
            .unwrap();
        order.extend(page.events.iter().map(|e| (e.position, e.event_id)));
        from = page.next.unwrap_or(from);
        if page.is_end && (order.len() >= acked.len() || std::time::Instant::now() > deadline) {
            break;
        }
        if page.is_end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(order.windows(2).all(|w| w[0].0 < w[1].0), "$all in order");
    acked.sort();
    let mut stored = order.clone();
    stored.sort();
    assert!(
        stored == acked,
        "the database holds exactly the acknowledged events, at their positions"
    );

    for (who, mut rx) in deliveries {
        let reached = tokio::time::timeout(DELIVERY_BOUND, rx.wait_for(|d| d.len() >= order.len()))
            .await
            .is_ok_and(|r| r.is_ok());
        let got = rx.borrow().clone();
        if !reached {
            let seen: HashSet<&(Position, Uuid)> = got.iter().collect();
            let missing: Vec<u64> = order
                .iter()
                .filter(|e| !seen.contains(e))
                .map(|e| e.0 .0)
                .collect();
            panic!(
                "{who} delivered {} of {} events; missing positions {missing:?} (the last \
                 delivered: {:?})",
                got.len(),
                order.len(),
                got.last().map(|e| e.0 .0)
            );
        }
        let unique: HashSet<&(Position, Uuid)> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "{who}: nothing delivered twice");
        assert!(
            got == order,
            "{who}: the database's $all, in the same order"
        );
    }
    for s in subscribers {
        s.abort();
    }

    // Each server's /metrics carries the watermark gauges; /ready answers with the head.
    for url in &urls {
        let metrics = http_get(url, "/metrics").await;
        assert!(
            metrics.starts_with("HTTP/1.1 200")
                && metrics.contains("\nstrata_pg_watermark_blocked_seconds ")
                && metrics.contains("\nstrata_pg_read_your_writes_waits_total "),
            "{url}/metrics: {metrics}"
        );
        let ready = http_get(url, "/ready").await;
        assert!(
            ready.starts_with("HTTP/1.1 200") && ready.contains("\"status\":\"ready\""),
            "{url}/ready: {ready}"
        );
    }
    drop(store);
    drop(conn);
    drop(servers);
    drop(db);
}

/// The whole answer (status line, headers, body) to `GET path` on the server at `url`.
async fn http_get(url: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    String::from_utf8(answer).unwrap()
}
