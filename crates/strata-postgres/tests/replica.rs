//! Strata on a PostgreSQL primary with a synchronous hot standby (`scripts/pg-replica.sh`):
//!
//! - failover: 16 appenders and two `$all` subscribers on a store connected with a multi-host
//!   URL (`target_session_attrs=read-write`); the primary is stopped at once (`pg_ctl stop -m
//!   immediate`) and the standby promoted. Every acknowledged event must be on the new primary
//!   at its acknowledged position, nothing else, `$all` in increasing position order, each
//!   stream's versions dense; the same store object appends again by itself; both subscribers
//!   (one retrying the same subscription, one resubscribing from its checkpoint) deliver
//!   exactly the new primary's `$all`, in order.
//! - read scaling: appends on the primary (through a URL listing the standby first, which a
//!   read-write session passes over), some holding their transaction open so commits land
//!   out of position order, while subscribers on a store connected to the standby read `$all`:
//!   each delivers exactly the primary's `$all`, in order, nothing skipped or repeated.
//!
//! The pair must be running (`scripts/pg-replica.sh start`; `.ci/run` starts it). Without it
//! these tests say so and pass, except under CI (`CI` set), where they fail. The failover test
//! breaks the pair and builds a fresh one when it ends.
//!
//! `STRATA_FAILOVER_EVENTS` (default 1,500) is how many events are acknowledged before the
//! primary is killed, and as many again after; `STRATA_STANDBY_EVENTS` (default 3,000) is the
//! read-scaling run's size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;
use strata_core::{
    AppendError, EventData, EventStore, ExpectedVersion, Filter, Position, ReadAllOptions,
    RecordedEvent, StreamId, SubscribeFrom, SubscriptionTarget, Uuid,
};
use strata_postgres::{ConnectError, PgStoreOptions, PostgresStore};
use tokio::sync::watch;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-replica.sh");
const APPENDERS: usize = 16;
/// How long the store may take to append again after the promotion before the test fails: a
/// liveness bound (it reconnects by itself or never), not a speed check.
const RECONNECT_BOUND: Duration = Duration::from_secs(60);
/// How long a subscriber may take to deliver what is stored before the test fails.
const DELIVERY_BOUND: Duration = Duration::from_secs(60);

/// The tests take turns with the pair: one of them kills its primary.
static PAIR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn port(var: &str, default: u16) -> u16 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn primary_port() -> u16 {
    port("STRATA_REPLICA_PRIMARY_PORT", 5442)
}

fn standby_port() -> u16 {
    port("STRATA_REPLICA_STANDBY_PORT", 5443)
}

fn url_of(ports: &[u16], query: &str) -> String {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!("postgres://postgres@{}/postgres{query}", hosts.join(","))
}

fn env_count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `scripts/pg-replica.sh command`; whether it succeeded.
async fn script(command: &'static str) -> bool {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(SCRIPT)
            .arg(command)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .await
    .unwrap()
}

/// Whether the pair is running; fails under CI when it is not, says "skipping" otherwise.
async fn pair_running(test: &str) -> bool {
    if script("status").await {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test} needs the PostgreSQL primary/standby pair on ports {} and {}: start it with \
             scripts/pg-replica.sh start",
            primary_port(),
            standby_port()
        );
    }
    let message = format!(
        "SKIPPING {test}: no PostgreSQL primary/standby pair on ports {} and {} (start it with \
         scripts/pg-replica.sh start; under CI this is a failure)\n",
        primary_port(),
        standby_port()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
    false
}

/// Builds a fresh pair if dropped while armed, so a failed failover run does not leave it
/// broken (a passing run rebuilds it with [`script`] and disarms this).
struct RebuildPair {
    armed: bool,
}

impl Drop for RebuildPair {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let ok = std::process::Command::new(SCRIPT)
            .arg("start")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "could not rebuild the primary/standby pair: run scripts/pg-replica.sh start"
            );
        }
    }
}

/// Connects a store on `schema` at `url`, waiting (bounded) for the schema to reach a standby
/// when `migrate` is off.
async fn connect(url: &str, schema: &str, migrate: bool) -> PostgresStore {
    let started = Instant::now();
    loop {
        let options = PgStoreOptions::new(url)
            .with_schema(schema)
            .with_migrate(migrate);
        match PostgresStore::connect_with(options).await {
            Ok(store) => return store,
            // A standby that has not replayed the schema's creation yet.
            Err(ConnectError::Migration { version: 0, .. })
                if started.elapsed() < Duration::from_secs(30) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("connecting to {url}: {e}"),
        }
    }
}

/// Every event of `$all`, in pages.
async fn read_everything(store: &PostgresStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut from = Position::START;
    loop {
        let page = store
            .read_all(ReadAllOptions::forward().from(from).limit(1_000))
            .await
            .unwrap();
        all.extend(page.events);
        if page.is_end {
            return all;
        }
        from = page.next.unwrap();
    }
}

/// `$all` as (position, id), checked to be in strictly increasing position order.
fn order_of(events: &[RecordedEvent]) -> Vec<(Position, Uuid)> {
    let order: Vec<(Position, Uuid)> = events.iter().map(|e| (e.position, e.event_id)).collect();
    assert!(
        order.windows(2).all(|w| w[0].0 < w[1].0),
        "$all positions strictly increase"
    );
    order
}

/// Every stream's versions are dense from 0 and its positions increase.
fn check_streams(events: &[RecordedEvent]) {
    let mut streams: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
    for e in events {
        streams.entry(e.stream_id.as_str()).or_default().push(e);
    }
    for (stream, events) in streams {
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.stream_version, i as u64,
                "{stream}: versions dense from 0"
            );
        }
        assert!(
            events.windows(2).all(|w| w[0].position < w[1].position),
            "{stream}: positions increase with versions"
        );
    }
}

/// What a subscriber delivered, and its count as a signal to wait on.
#[derive(Clone)]
struct Delivered {
    events: Arc<Mutex<Vec<(Position, Uuid)>>>,
    count: watch::Sender<usize>,
    errors: Arc<Mutex<u64>>,
}

impl Delivered {
    fn new() -> Self {
        Delivered {
            events: Arc::default(),
            count: watch::channel(0).0,
            errors: Arc::default(),
        }
    }

    fn push(&self, e: &RecordedEvent) {
        let mut events = self.events.lock().unwrap();
        events.push((e.position, e.event_id));
        self.count.send_replace(events.len());
    }

    /// Waits until `n` events were delivered, failing after [`DELIVERY_BOUND`].
    async fn wait_for(&self, n: usize, who: &str) -> Vec<(Position, Uuid)> {
        let mut count = self.count.subscribe();
        let reached = tokio::time::timeout(DELIVERY_BOUND, count.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok());
        let events = self.events.lock().unwrap().clone();
        assert!(
            reached,
            "{who} delivered {} of {n} events (a skip stalls it short of the count)",
            events.len()
        );
        events
    }
}

/// How a subscriber gets over an error: retry the same subscription, or subscribe again from
/// its checkpoint (the last delivered position).
#[derive(Clone, Copy)]
enum Resume {
    SameSubscription,
    FromCheckpoint,
}

fn spawn_subscriber(
    store: PostgresStore,
    resume: Resume,
    poll: Duration,
) -> (Delivered, tokio::task::JoinHandle<()>) {
    let delivered = Delivered::new();
    let out = delivered.clone();
    let task = tokio::spawn(async move {
        let mut from = SubscribeFrom::Start;
        loop {
            let mut sub = match store
                .subscribe(SubscriptionTarget::All(Filter::default()), from)
                .await
            {
                Ok(s) => s.with_poll_interval(poll),
                Err(_) => {
                    *out.errors.lock().unwrap() += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            loop {
                match sub.next().await {
                    Ok(e) => out.push(&e),
                    Err(_) => {
                        *out.errors.lock().unwrap() += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if let Resume::FromCheckpoint = resume {
                            if let Some(p) = sub.last_position() {
                                from = SubscribeFrom::AfterPosition(p);
                            }
                            break;
                        }
                    }
                }
            }
        }
    });
    (delivered, task)
}

/// One appender's acknowledged events: id → (stream, position).
type Acked = HashMap<Uuid, (String, Position)>;

/// Appends 1-3 events at a time to its own stream until `stop`, retrying each append with the
/// same ids until it is acknowledged (a retry of an append that did commit returns the original
/// result), so that everything it stored is acknowledged when it returns.
async fn appender(
    store: PostgresStore,
    id: usize,
    stop: Arc<AtomicBool>,
    acked_total: watch::Sender<u64>,
) -> (Acked, u64) {
    let stream = StreamId::new(format!("account-{id}")).unwrap();
    let mut acked = Acked::new();
    let mut errors = 0u64;
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let count = rand::thread_rng().gen_range(1..=3);
        let events: Vec<EventData> = (0..count)
            .map(|i| {
                EventData::json("Deposited", &json!({"appender": id, "n": n, "i": i}))
                    .unwrap()
                    .with_id(Uuid::now_v7())
            })
            .collect();
        n += 1;
        let ids: Vec<Uuid> = events.iter().filter_map(|e| e.event_id).collect();
        let result = loop {
            match store
                .append(&stream, ExpectedVersion::Any, events.clone())
                .await
            {
                Ok(r) => break r,
                Err(AppendError::Unavailable(_) | AppendError::Storage(_)) => {
                    // The database is gone or going: the outcome is unknown, so retry as is.
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("appender {id}: an append retried with its ids failed: {e}"),
            }
        };
        assert_eq!(result.positions.len(), ids.len());
        for (id, p) in ids.into_iter().zip(result.positions) {
            acked.insert(id, (stream.as_str().to_owned(), p));
        }
        acked_total.send_modify(|t| *t += count);
    }
    (acked, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_synchronous_standby_keeps_every_acknowledged_event() {
    let _turn = PAIR.lock().await;
    if !pair_running("failover_to_the_synchronous_standby_keeps_every_acknowledged_event").await {
        return;
    }
    let mut rebuild = RebuildPair { armed: true };
    let per_phase = env_count("STRATA_FAILOVER_EVENTS", 1_500);
    let schema = support::fresh_schema("failover");
    let url = url_of(
        &[primary_port(), standby_port()],
        "?target_session_attrs=read-write",
    );
    let store = connect(&url, &schema, true).await;

    let poll = Duration::from_millis(50);
    let (same, same_task) = spawn_subscriber(store.clone(), Resume::SameSubscription, poll);
    let (resumed, resumed_task) = spawn_subscriber(store.clone(), Resume::FromCheckpoint, poll);

    let stop = Arc::new(AtomicBool::new(false));
    let (acked_total, mut acked_seen) = watch::channel(0u64);
    let appenders: Vec<_> = (0..APPENDERS)
        .map(|i| {
            tokio::spawn(appender(
                store.clone(),
                i,
                stop.clone(),
                acked_total.clone(),
            ))
        })
        .collect();

    let before_kill =
        tokio::time::timeout(DELIVERY_BOUND, acked_seen.wait_for(|n| *n >= per_phase))
            .await
            .is_ok_and(|r| r.is_ok());
    assert!(before_kill, "appends stalled before the failover");
    assert!(script("kill-primary").await, "pg_ctl stop -m immediate");
    let at_kill = *acked_seen.borrow();
    // Meanwhile no host accepts writes, and a new store says so.
    let refused =
        PostgresStore::connect_with(PgStoreOptions::new(url.clone()).with_schema(&schema)).await;
    assert!(
        matches!(refused, Err(ConnectError::NoReadWriteHost { .. })),
        "connecting with only the standby up: {refused:?}"
    );
    assert!(script("promote").await, "pg_ctl promote");
    let promoted = Instant::now();
    // The same store object appends again once it finds the new primary by itself.
    let reconnected = tokio::time::timeout(RECONNECT_BOUND, acked_seen.wait_for(|n| *n > at_kill))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        reconnected,
        "no append succeeded within {RECONNECT_BOUND:?} of the promotion"
    );
    let first_append_after = promoted.elapsed();
    let after = tokio::time::timeout(
        DELIVERY_BOUND,
        acked_seen.wait_for(|n| *n >= at_kill + per_phase),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    assert!(after, "appends stalled after the failover");
    stop.store(true, Ordering::Release);
    let mut acked = Acked::new();
    let mut append_errors = 0;
    for a in appenders {
        let (part, errors) = a.await.unwrap();
        acked.extend(part);
        append_errors += errors;
    }

    // The new primary, read directly: exactly the acknowledged events, each at its position.
    let direct = connect(&url_of(&[standby_port()], ""), &schema, false).await;
    let stored = read_everything(&direct).await;
    let order = order_of(&stored);
    check_streams(&stored);
    assert_eq!(
        stored.len(),
        acked.len(),
        "the new primary holds exactly the acknowledged events"
    );
    for e in &stored {
        let (stream, position) = acked
            .get(&e.event_id)
            .unwrap_or_else(|| panic!("event {} was stored but never acknowledged", e.event_id));
        assert_eq!(
            (e.stream_id.as_str(), e.position),
            (stream.as_str(), *position)
        );
    }

    // Both subscribers deliver exactly that, in that order.
    for (who, delivered) in [
        ("the subscriber retrying its subscription", &same),
        ("the subscriber resuming from its checkpoint", &resumed),
    ] {
        let got = delivered.wait_for(order.len(), who).await;
        assert_eq!(got.len(), order.len(), "{who}: nothing repeated");
        assert!(got == order, "{who}: the same events in the same order");
    }
    let sub_errors = (
        *same.errors.lock().unwrap(),
        *resumed.errors.lock().unwrap(),
    );
    same_task.abort();
    resumed_task.abort();
    eprintln!(
        "failover: {} events acknowledged ({at_kill} before the kill), {append_errors} append \
         attempts failed during the failover, subscriber errors {sub_errors:?}, first append \
         {first_append_after:?} after the promotion",
        acked.len()
    );
    drop(store);
    drop(direct);
    assert!(script("start").await, "a fresh pair for the next test");
    rebuild.armed = false;
}

/// Appends `total` events on `store`, a third of the appends holding their transaction open
/// 0-5 ms before committing so that commits land out of position order. Returns the ids
/// acknowledged.
async fn append_out_of_order(store: PostgresStore, writers: usize, total: u64) -> Vec<Uuid> {
    let remaining = Arc::new(std::sync::atomic::AtomicU64::new(total));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, remaining) = (store.clone(), remaining.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                let mut n = 0u64;
                loop {
                    let (count, hold) = {
                        let mut rng = rand::thread_rng();
                        let count: u64 = rng.gen_range(1..=4);
                        let hold = rng
                            .gen_ratio(1, 3)
                            .then(|| Duration::from_micros(rng.gen_range(0..5_000)));
                        (count, hold)
                    };
                    let Ok(before) =
                        remaining.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                            (r > 0).then(|| r - count.min(r))
                        })
                    else {
                        return ids;
                    };
                    let count = count.min(before);
                    let stream =
                        StreamId::new(format!("{}-{w}-{}", ["account", "order"][w % 2], n % 5))
                            .unwrap();
                    n += 1;
                    let events: Vec<EventData> = (0..count)
                        .map(|i| {
                            EventData::json("Tick", &json!({"writer": w, "n": n, "i": i}))
                                .unwrap()
                                .with_id(Uuid::now_v7())
                        })
                        .collect();
                    ids.extend(events.iter().filter_map(|e| e.event_id));
                    match hold {
                        Some(hold) => store
                            .append_holding_transaction(&stream, ExpectedVersion::Any, events, hold)
                            .await
                            .unwrap(),
                        None => store
                            .append(&stream, ExpectedVersion::Any, events)
                            .await
                            .unwrap(),
                    };
                }
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_subscriptions_on_the_hot_standby_never_skip_an_event() {
    let _turn = PAIR.lock().await;
    if !pair_running("reads_and_subscriptions_on_the_hot_standby_never_skip_an_event").await {
        return;
    }
    let total = env_count("STRATA_STANDBY_EVENTS", 3_000);
    let schema = support::fresh_schema("standby");
    // Listed first, the standby is passed over: it does not accept writes.
    let primary = connect(
        &url_of(
            &[standby_port(), primary_port()],
            "?target_session_attrs=read-write",
        ),
        &schema,
        true,
    )
    .await;
    let standby = connect(&url_of(&[standby_port()], ""), &schema, false).await;

    // A hot standby cannot LISTEN: its subscriptions poll (here every 10 ms).
    let poll = Duration::from_millis(10);
    let (early, early_task) = spawn_subscriber(standby.clone(), Resume::SameSubscription, poll);
    let writing = tokio::spawn(append_out_of_order(primary.clone(), 12, total));
    // A second subscriber joins once a third is written, so it catches up while writes go on.
    let late = {
        let standby = standby.clone();
        let mut count = early.count.subscribe();
        let third = (total / 3) as usize;
        tokio::spawn(async move {
            count.wait_for(|c| *c >= third).await.unwrap();
            spawn_subscriber(standby, Resume::FromCheckpoint, poll)
        })
    };
    let ids = writing.await.unwrap();
    let (late, late_task) = late.await.unwrap();

    let on_primary = read_everything(&primary).await;
    let order = order_of(&on_primary);
    check_streams(&on_primary);
    assert_eq!(order.len(), ids.len(), "every acknowledged event is stored");
    for (who, delivered) in [
        ("the standby subscriber started first", &early),
        ("the standby subscriber that joined later", &late),
    ] {
        let got = delivered.wait_for(order.len(), who).await;
        assert_eq!(got.len(), order.len(), "{who}: nothing repeated");
        assert!(got == order, "{who}: the primary's $all, in the same order");
    }
    // A read of `$all` on the standby, once it has replayed everything, is the primary's.
    let on_standby = read_everything(&standby).await;
    assert!(order_of(&on_standby) == order, "$all read on the standby");
    assert_eq!(standby.head().await.unwrap(), primary.head().await.unwrap());

    // Appending on the standby is refused and writes nothing.
    let refused = standby
        .append(
            &StreamId::new("account-refused").unwrap(),
            ExpectedVersion::Any,
            vec![EventData::json("Tick", &json!({})).unwrap()],
        )
        .await;
    // Refused as an outage a client retries (HTTP 503), as after a failover that left a
    // connection on a standby, not as a server bug.
    assert!(
        matches!(refused, Err(strata_core::AppendError::Unavailable(_))),
        "a standby refuses appends with Unavailable: {refused:?}"
    );
    // ... and says so to a readiness probe (`/ready?write=true`), while the primary is writable.
    assert!(matches!(
        standby.check_writable(),
        Err(strata_core::AppendError::Unavailable(_))
    ));
    assert!(primary.check_writable().is_ok());
    early_task.abort();
    late_task.abort();
    drop((primary, standby));
    drop_schema(&url_of(&[primary_port()], ""), &schema).await;
}

async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}
