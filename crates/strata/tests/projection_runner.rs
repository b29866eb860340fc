//! Projections end to end on the embedded store: async with read-your-writes, inline through
//! `ProjectedStore`, a failing handler stopping at its event and resuming after the fix, a
//! blue/green rebuild while appends continue, pause / reset, lag.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata::projection::{
    HandlerError, ProjectedAppendError, ProjectedStore, Projection, ProjectionError,
    ProjectionStatus, Projections, Sql, SqliteReadModels,
};
use strata::{
    EventData, EventStore, ExpectedVersion, Filter, Position, ReadAllOptions, RecordedEvent,
    StreamId,
};
use strata_log::LogStore;

/// Balance per account; fails on a deposit of exactly `fail_on`.
struct Balances {
    name: &'static str,
    fail_on: Arc<AtomicI64>,
}

impl Balances {
    fn new(name: &'static str) -> Self {
        Balances {
            name,
            fail_on: Arc::new(AtomicI64::new(-1)),
        }
    }
}

impl Projection for Balances {
    fn name(&self) -> &str {
        self.name
    }
    fn filter(&self) -> Filter {
        Filter::default().categories(["account"])
    }
    fn tables(&self) -> &[&'static str] {
        &["balances"]
    }
    fn setup(&self, sql: &Sql<'_>) -> Result<(), HandlerError> {
        sql.execute_batch(
            "CREATE TABLE {balances} (account TEXT PRIMARY KEY, balance INTEGER NOT NULL,
                                      events INTEGER NOT NULL)",
        )
    }
    fn apply(&self, sql: &Sql<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
        let amount = event
            .data_json()
            .and_then(|d| d["amount"].as_i64())
            .unwrap_or(0);
        if amount == self.fail_on.load(Ordering::SeqCst) {
            return Err(HandlerError::new(format!("refusing amount {amount}")));
        }
        sql.execute(
            "INSERT INTO {balances} VALUES (?1, ?2, 1) ON CONFLICT (account)
             DO UPDATE SET balance = balance + ?2, events = events + 1",
            rusqlite::params![event.stream_id.as_str(), amount],
        )?;
        Ok(())
    }
}

fn deposit(amount: i64) -> EventData {
    EventData::json("Deposited", &serde_json::json!({ "amount": amount })).unwrap()
}

async fn append(store: &impl EventStore, account: u32, amount: i64) -> Position {
    let stream = StreamId::new(format!("account-{account}")).unwrap();
    store
        .append(&stream, ExpectedVersion::Any, vec![deposit(amount)])
        .await
        .unwrap()
        .last_position()
}

fn table(models: &SqliteReadModels, view: &str) -> BTreeMap<String, (i64, i64)> {
    let conn = models.connect().unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT account, balance, events FROM {view}"))
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The fold over every `account` event up to `through`.
async fn fold(store: &impl EventStore, through: Option<Position>) -> BTreeMap<String, (i64, i64)> {
    let mut out = BTreeMap::new();
    let mut from = Position::START;
    loop {
        let page = store
            .read_all(
                ReadAllOptions::forward()
                    .from(from)
                    .limit(1000)
                    .filter(Filter::default().categories(["account"])),
            )
            .await
            .unwrap();
        for e in &page.events {
            if through.is_some_and(|t| e.position > t) {
                return out;
            }
            let amount = e.data_json().unwrap()["amount"].as_i64().unwrap();
            let entry = out.entry(e.stream_id.to_string()).or_insert((0, 0));
            entry.0 += amount;
            entry.1 += 1;
        }
        if page.is_end {
            return out;
        }
        from = page.next.unwrap();
    }
}

fn setup() -> (tempfile::TempDir, LogStore, SqliteReadModels, Projections) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = LogStore::open(&data).unwrap();
    let models = SqliteReadModels::next_to(&data).unwrap();
    assert_eq!(
        models.path(),
        dir.path().join("data.read-models.sqlite").as_path()
    );
    let projections = Projections::new(Arc::new(store.clone()), models.clone());
    (dir, store, models, projections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_projection_reads_its_own_writes_and_skips_other_categories() {
    let (_dir, store, models, projections) = setup();
    projections.spawn(Balances::new("balances")).await.unwrap();
    let mut last = Position::START;
    for i in 0..200 {
        last = append(&store, i % 7, i64::from(i)).await;
        // Events of another category move the checkpoint without reaching the handler.
        let other = StreamId::new(format!("order-{i}")).unwrap();
        store
            .append(&other, ExpectedVersion::Any, vec![deposit(1_000)])
            .await
            .unwrap();
    }
    projections
        .wait_for("balances", last, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(table(&models, "balances"), fold(&store, None).await);
    // A position past the head cannot be reached: a typed error, not a hang.
    let err = projections
        .wait_for("balances", Position(1_000_000), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProjectionError::NotYetConsistent { position, .. } if position == Position(1_000_000)),
        "{err}"
    );
    // The order events after the last deposit are passed too (checkpoint past the head).
    let head = store.head().await.unwrap().unwrap();
    projections
        .wait_for("balances", head, Duration::from_secs(10))
        .await
        .unwrap();
    let info = projections.status("balances").await.unwrap();
    assert_eq!(info.status, ProjectionStatus::Running);
    assert_eq!(info.lag_events, 0);
    projections.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handler_stops_at_its_event_and_resumes_from_there() {
    let (_dir, store, models, projections) = setup();
    let balances = Balances::new("balances");
    let fail_on = balances.fail_on.clone();
    fail_on.store(13, Ordering::SeqCst);
    projections.spawn(balances).await.unwrap();
    let mut bad = None;
    for i in 0..30 {
        let p = append(&store, i % 3, i64::from(i)).await;
        if i == 13 {
            bad = Some(p);
        }
    }
    let bad = bad.unwrap();
    let err = projections
        .wait_for("balances", Position(bad.0 + 100), Duration::from_secs(10))
        .await
        .unwrap_err();
    let ProjectionError::Failed {
        position, event_id, ..
    } = &err
    else {
        panic!("expected Failed, got {err}");
    };
    assert_eq!(*position, Some(bad));
    let stored = store
        .read_all(ReadAllOptions::forward().from(bad).limit(1))
        .await
        .unwrap();
    assert_eq!(*event_id, Some(stored.events[0].event_id));
    let info = projections.status("balances").await.unwrap();
    assert_eq!(info.status, ProjectionStatus::Failed);
    assert_eq!(info.error_position, Some(bad));
    // Everything before the failing event is applied, nothing after it.
    assert_eq!(info.checkpoint, Some(Position(bad.0 - 1)));
    assert_eq!(
        table(&models, "balances"),
        fold(&store, Some(Position(bad.0 - 1))).await
    );

    // Fix the handler, resume: it continues from the failed event.
    fail_on.store(-1, Ordering::SeqCst);
    projections.resume("balances").await.unwrap();
    let head = store.head().await.unwrap().unwrap();
    projections
        .wait_for("balances", head, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(table(&models, "balances"), fold(&store, None).await);
    let info = projections.status("balances").await.unwrap();
    assert_eq!(info.status, ProjectionStatus::Running);
    assert_eq!(info.last_error, None);
    projections.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_projection_is_current_when_the_append_returns_and_repairs_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = LogStore::open(&data).unwrap();
        let models = SqliteReadModels::next_to(&data).unwrap();
        let projections = Projections::new(Arc::new(store.clone()), models.clone());
        let balances = Balances::new("balances");
        let fail_on = balances.fail_on.clone();
        projections.inline(balances).await.unwrap();
        let projected = ProjectedStore::new(store.clone(), projections.clone());
        for i in 0..50 {
            let p = append(&projected, i % 4, 10).await;
            // No wait: the read model already has it.
            assert_eq!(projections.checkpoint("balances").unwrap(), Some(p));
        }
        assert_eq!(table(&models, "balances"), fold(&store, None).await);
        // A handler failure on an inline projection reaches the caller with the append's
        // result (the events are durable).
        let stream = StreamId::new("account-9").unwrap();
        fail_on.store(666, Ordering::SeqCst);
        let err = projected
            .append_projected(&stream, ExpectedVersion::Any, vec![deposit(666)])
            .await
            .unwrap_err();
        let ProjectedAppendError::Projection { result, error } = err else {
            panic!("expected a projection failure");
        };
        assert!(
            matches!(error, ProjectionError::Failed { position, .. } if position == Some(result.last_position()))
        );
        fail_on.store(-1, Ordering::SeqCst);
        projections.resume("balances").await.unwrap();
        assert_eq!(table(&models, "balances"), fold(&store, None).await);
        // A "crash" between append and inline application: appends straight to the store.
        for i in 0..20 {
            append(&store, i % 4, 5).await;
        }
        assert_ne!(table(&models, "balances"), fold(&store, None).await);
    }
    // Restart: registering the inline projection catches it up.
    let store = LogStore::open(&data).unwrap();
    let models = SqliteReadModels::next_to(&data).unwrap();
    let projections = Projections::new(Arc::new(store.clone()), models.clone());
    projections.inline(Balances::new("balances")).await.unwrap();
    assert_eq!(table(&models, "balances"), fold(&store, None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_while_appends_continue_swaps_in_the_full_fold() {
    let (_dir, store, models, projections) = setup();
    projections.spawn(Balances::new("balances")).await.unwrap();
    for i in 0..3_000 {
        append(&store, i % 50, 1).await;
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..1_000 {
                append(&store, i % 50, 2).await;
            }
        })
    };
    let mut reports = 0;
    // The fresh copy (generation 2) as of each report; the last report is taken with the
    // serving copy's writers held off, right before the swap.
    let mut last_seen = None;
    let checkpoint = projections
        .rebuild("balances", |p| {
            reports += 1;
            assert!(p.events_per_second >= 0.0);
            last_seen = Some((p.position, table(&models, "balances__g2")));
        })
        .await
        .unwrap();
    assert!(reports > 0);
    // The swapped-in model equals the fold over all events up to its checkpoint.
    let (seen_at, seen) = last_seen.unwrap();
    assert_eq!(seen_at, checkpoint);
    assert_eq!(seen, fold(&store, checkpoint).await);
    // Right after the swap (no writes to the read model in between can be assumed, so
    // compare against the fold up to the checkpoint the projection reports now).
    let info = projections.status("balances").await.unwrap();
    assert!(info.checkpoint >= checkpoint);
    writer.await.unwrap();
    let head = store.head().await.unwrap().unwrap();
    projections
        .wait_for("balances", head, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(table(&models, "balances"), fold(&store, None).await);
    // The old generation's tables are gone; the view points at the new one.
    let conn = models.connect().unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'balances__g%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tables, vec!["balances__g2".to_owned()]);
    projections.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_copy_equals_the_fold_at_its_checkpoint() {
    // Paused serving copy: the rebuild's checkpoint is exactly what the swapped-in model holds.
    let (_dir, store, models, projections) = setup();
    projections.spawn(Balances::new("balances")).await.unwrap();
    projections.pause("balances").await.unwrap();
    for i in 0..500 {
        append(&store, i % 9, i64::from(i)).await;
    }
    let checkpoint = projections.rebuild("balances", |_| {}).await.unwrap();
    assert_eq!(table(&models, "balances"), fold(&store, checkpoint).await);
    assert_eq!(checkpoint, store.head().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_reset() {
    let (_dir, store, models, projections) = setup();
    projections.spawn(Balances::new("balances")).await.unwrap();
    let p = append(&store, 1, 5).await;
    projections
        .wait_for("balances", p, Duration::from_secs(5))
        .await
        .unwrap();
    projections.pause("balances").await.unwrap();
    assert_eq!(
        projections.status("balances").await.unwrap().status,
        ProjectionStatus::Paused
    );
    let p2 = append(&store, 1, 7).await;
    let err = projections
        .wait_for("balances", p2, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, ProjectionError::NotYetConsistent { .. }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let info = projections.status("balances").await.unwrap();
    assert_eq!(info.lag_events, 1);
    // The unprocessed event is at least the 200 ms wait plus this sleep old.
    assert!(info.lag_seconds >= 0.3, "{}", info.lag_seconds);
    assert!(matches!(
        projections.wait_for("nope", p2, Duration::ZERO).await,
        Err(ProjectionError::UnknownProjection(_))
    ));
    assert!(matches!(
        projections.spawn(Balances::new("balances")).await,
        Err(ProjectionError::AlreadyRegistered(_))
    ));
    projections.resume("balances").await.unwrap();
    projections
        .wait_for("balances", p2, Duration::from_secs(5))
        .await
        .unwrap();
    projections.reset("balances").await.unwrap();
    projections
        .wait_for("balances", p2, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(table(&models, "balances"), fold(&store, None).await);
    assert_eq!(projections.list().await.unwrap().len(), 1);
    // What another process (the CLI) sees in the file.
    let stored = models.stored().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].name, "balances");
    assert_eq!(stored[0].checkpoint, Some(p2));
    assert!(!stored[0].rebuild_started);
    projections.shutdown().await;
}

/// Events per type: a second projection in the same SQLite file.
struct TypeCounts;

impl Projection for TypeCounts {
    fn name(&self) -> &str {
        "type_counts"
    }
    fn filter(&self) -> Filter {
        Filter::default()
    }
    fn tables(&self) -> &[&'static str] {
        &["type_counts"]
    }
    fn setup(&self, sql: &Sql<'_>) -> Result<(), HandlerError> {
        sql.execute_batch("CREATE TABLE {type_counts} (t TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    }
    fn apply(&self, sql: &Sql<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
        sql.execute(
            "INSERT INTO {type_counts} VALUES (?1, 1) ON CONFLICT (t) DO UPDATE SET n = n + 1",
            [event.event_type.as_str()],
        )?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_and_async_projections_share_one_file_under_concurrent_appends() {
    let (_dir, store, models, projections) = setup();
    projections.spawn(Balances::new("balances")).await.unwrap();
    projections.inline(TypeCounts).await.unwrap();
    let projected = ProjectedStore::new(store.clone(), projections.clone());
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let projected = projected.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    append(&projected, w, i64::from(i)).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let head = store.head().await.unwrap().unwrap();
    // Inline: current as soon as the appends returned.
    assert_eq!(projections.checkpoint("type_counts").unwrap(), Some(head));
    let n: i64 = models
        .connect()
        .unwrap()
        .query_row("SELECT n FROM type_counts WHERE t = 'Deposited'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 800);
    projections
        .wait_for("balances", head, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(table(&models, "balances"), fold(&store, None).await);
    for info in projections.list().await.unwrap() {
        assert_eq!(info.status, ProjectionStatus::Running, "{info:?}");
    }
    projections.shutdown().await;
}
