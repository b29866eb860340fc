//! PostgreSQL read models: async with read-your-writes, a failing handler stopping at its
//! event and resuming after the fix, inline through `ProjectedStore`, rebuilds, and the
//! built-in `EventTypeCounts` (against a fold, and rebuilt through `ProjectionControl`). The
//! database is `STRATA_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! without one the tests are skipped with a message, except under CI (`CI` set), where they
//! fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata::projection::{
    EventTypeCounts, PgProjections, PgReadModels, ProjectedStore, ProjectionControl,
    ProjectionError, ProjectionStatus, RebuildProgress,
};
use strata::{EventData, EventStore, ExpectedVersion, Position, ReadAllOptions};
use strata_postgres::PostgresStore;
use support::pg::{account, db, deposit, fold, model, Balances};

async fn append(store: &impl EventStore, n: u32, amount: i64) -> Position {
    store
        .append(&account(n), ExpectedVersion::Any, vec![deposit(amount)])
        .await
        .unwrap()
        .last_position()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_postgres_projection_fails_at_its_event_and_resumes() {
    let Some(db) = db("proj").await else { return };
    let fail_on = Arc::new(AtomicI64::new(13));
    let projections = PgProjections::new(Arc::new(db.store.clone()), db.models.clone());
    projections
        .spawn(Balances {
            fail_on: fail_on.clone(),
        })
        .await
        .unwrap();
    let mut bad = Position::START;
    for i in 0..30 {
        let p = append(&db.store, i % 3, i64::from(i)).await;
        if i == 13 {
            bad = p;
        }
    }
    let err = projections
        .wait_for("balances", Position(bad.0 + 1_000), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProjectionError::Failed { position, .. } if *position == Some(bad)),
        "{err}"
    );
    let before_bad = fold(&db.store, Some(Position(bad.0 - 1))).await;
    assert_eq!(model(&db.models).await, before_bad);

    fail_on.store(-1, Ordering::SeqCst);
    projections.resume("balances").await.unwrap();
    let head = db.store.head().await.unwrap().unwrap();
    projections
        .wait_for("balances", head, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(model(&db.models).await, fold(&db.store, None).await);
    let err = projections
        .wait_for(
            "balances",
            Position(head.0 + 1_000),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProjectionError::NotYetConsistent { .. }));
    projections.shutdown().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_postgres_projection_is_current_when_the_append_returns() {
    let Some(db) = db("proj").await else { return };
    let fail_on = Arc::new(AtomicI64::new(-1));
    let projections = PgProjections::new(Arc::new(db.store.clone()), db.models.clone());
    projections
        .inline(Balances {
            fail_on: fail_on.clone(),
        })
        .await
        .unwrap();
    let projected = ProjectedStore::new(db.store.clone(), projections.clone());
    for i in 0..20 {
        let p = append(&projected, i % 4, 10).await;
        assert_eq!(projections.checkpoint("balances").unwrap(), Some(p));
    }
    assert_eq!(model(&db.models).await, fold(&db.store, None).await);

    // In this mode (`PgProjections::new`: after the append's commit) a failing inline handler
    // cannot roll the append back: the append stands and the projection stops as failed at
    // that event. `PgProjections::transactional` rolls it back instead
    // (projection_postgres_transactional.rs).
    fail_on.store(99, Ordering::SeqCst);
    let p = append(&projected, 1, 99).await;
    let err = projections
        .wait_for("balances", p, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProjectionError::Failed { position, .. } if *position == Some(p)),
        "{err}"
    );
    fail_on.store(-1, Ordering::SeqCst);
    projections.resume("balances").await.unwrap();
    assert_eq!(model(&db.models).await, fold(&db.store, None).await);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rebuild_while_appends_continue_swaps_in_the_full_fold() {
    let Some(db) = db("proj").await else { return };
    let projections = PgProjections::new(Arc::new(db.store.clone()), db.models.clone());
    projections
        .spawn(Balances {
            fail_on: Arc::new(AtomicI64::new(-1)),
        })
        .await
        .unwrap();
    for i in 0..1_500 {
        append(&db.store, i % 20, 1).await;
    }
    let writer = {
        let store = db.store.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                append(&store, i % 20, 2).await;
            }
        })
    };
    let mut reports = 0;
    let checkpoint = projections
        .rebuild("balances", |_| reports += 1)
        .await
        .unwrap();
    assert!(reports > 0);
    assert!(checkpoint.is_some());
    writer.await.unwrap();
    let head = db.store.head().await.unwrap().unwrap();
    projections
        .wait_for("balances", head, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(model(&db.models).await, fold(&db.store, None).await);
    let info = projections.status("balances").await.unwrap();
    assert_eq!(info.lag_events, 0);
    // No rebuild schema is left behind.
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE $1")
        .bind(format!("{}__rebuild_%", db.models.schema()))
        .fetch_one(db.models.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
    // reset = rebuild from scratch.
    projections.reset("balances").await.unwrap();
    assert_eq!(model(&db.models).await, fold(&db.store, None).await);
    projections.shutdown().await;
    db.cleanup().await;
}

/// `event_type_counts` rows: (category, event type) -> (events, last position, last recorded
/// at as text).
async fn event_type_counts(
    models: &PgReadModels,
) -> BTreeMap<(String, String), (i64, i64, String)> {
    sqlx::query_as::<_, (String, String, i64, i64, String)>(
        "SELECT category, event_type, events, last_position, last_recorded_at::text
         FROM event_type_counts",
    )
    .fetch_all(models.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|(c, t, n, p, at)| ((c, t), (n, p, at)))
    .collect()
}

/// What `event_type_counts` should hold (without the times): every event folded into
/// (category, event type) -> (events, last position).
async fn fold_event_type_counts(store: &PostgresStore) -> BTreeMap<(String, String), (i64, i64)> {
    let page = store
        .read_all(ReadAllOptions::forward().limit(10_000))
        .await
        .unwrap();
    assert!(page.is_end);
    let mut out = BTreeMap::new();
    for e in page.events {
        let key = (e.category().to_owned(), e.event_type.as_str().to_owned());
        let entry = out.entry(key).or_insert((0, 0));
        entry.0 += 1;
        entry.1 = i64::try_from(e.position.0).unwrap();
    }
    out
}

fn without_times(
    rows: &BTreeMap<(String, String), (i64, i64, String)>,
) -> BTreeMap<(String, String), (i64, i64)> {
    rows.iter()
        .map(|(k, (n, p, _))| (k.clone(), (*n, *p)))
        .collect()
}

/// Appends a batch of `types` events (several per append, so a projection batch holds runs of
/// one type and mixes of types) to `stream`.
async fn append_types(store: &PostgresStore, stream: &str, types: &[&str]) -> Position {
    let events = types
        .iter()
        .map(|t| EventData::json(*t, &serde_json::json!({})).unwrap())
        .collect();
    support::seed(store, stream, events).await.last_position()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_event_type_counts_on_postgres_match_the_fold_and_survive_a_rebuild() {
    let Some(db) = db("proj").await else { return };
    let name = EventTypeCounts::NAME;
    let projections = PgProjections::new(Arc::new(db.store.clone()), db.models.clone());
    // Events before the projection exists and after: it catches up, then follows.
    append_types(
        &db.store,
        "account-1",
        &["Opened", "Deposited", "Deposited"],
    )
    .await;
    projections.spawn(EventTypeCounts).await.unwrap();
    let streams = ["account-1", "account-2", "order-1", "order-2", "user"];
    let types = ["Opened", "Deposited", "Withdrawn", "Placed", "Renamed"];
    let mut last = Position::START;
    for i in 0..120usize {
        let stream = streams[i % streams.len()];
        let batch: Vec<&str> = (0..1 + i % 4)
            .map(|j| types[(i * 7 + j) % types.len()])
            .collect();
        last = append_types(&db.store, stream, &batch).await;
    }
    projections
        .wait_for(name, last, Duration::from_secs(20))
        .await
        .unwrap();
    let before = event_type_counts(&db.models).await;
    let expected = fold_event_type_counts(&db.store).await;
    assert_eq!(without_times(&before), expected);
    // Several categories and types, and the counts add up to every event.
    let categories: std::collections::BTreeSet<&str> =
        expected.keys().map(|(c, _)| c.as_str()).collect();
    assert_eq!(categories, ["account", "order", "user"].into());
    let seen: std::collections::BTreeSet<&str> = expected.keys().map(|(_, t)| t.as_str()).collect();
    assert_eq!(seen, types.into());
    let total: i64 = expected.values().map(|(n, _)| n).sum();
    assert_eq!(total, i64::try_from(last.0 + 1).unwrap());

    // A rebuild through the operator's trait object swaps in identical rows.
    let control: Arc<dyn ProjectionControl> = Arc::new(projections.clone());
    let mut reports: Vec<RebuildProgress> = Vec::new();
    let checkpoint = control
        .rebuild(name, &mut |p: &RebuildProgress| reports.push(p.clone()))
        .await
        .unwrap();
    assert_eq!(checkpoint, Some(last));
    let final_report = reports.last().expect("a progress report");
    assert_eq!(final_report.projection, name);
    assert_eq!(final_report.position, Some(last));
    assert_eq!(final_report.remaining_events, 0);
    assert_eq!(event_type_counts(&db.models).await, before);
    let info = control.status(name).await.unwrap();
    assert_eq!(info.status, ProjectionStatus::Running);
    assert_eq!(info.checkpoint, Some(last));
    assert_eq!(info.lag_events, 0);

    // The swapped-in table goes on being updated.
    let last = append_types(&db.store, "order-3", &["Placed", "Cancelled"]).await;
    projections
        .wait_for(name, last, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        without_times(&event_type_counts(&db.models).await),
        fold_event_type_counts(&db.store).await
    );
    projections.shutdown().await;
    db.cleanup().await;
}

/// Processes started together on a fresh read-model schema all start, and all register the
/// same projection: creating the schema, the checkpoint table and a projection's tables takes
/// the schema's DDL lock, so the loser of a `CREATE ... IF NOT EXISTS` race waits instead of
/// failing on a catalog unique index (`pg_namespace_nspname_index`,
/// `pg_type_typname_nsp_index`). Many rounds on fresh schemas: one round loses the race only
/// now and then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_started_together_on_a_fresh_schema_all_start() {
    const ROUNDS: usize = 24;
    const PROCESSES: usize = 6;
    let Some(db) = db("ddl").await else { return };
    let store: Arc<dyn EventStore> = Arc::new(db.store.clone());
    let mut schemas = Vec::new();
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let schema = format!("{}_{round}", db.schemas[1]);
        schemas.push(schema.clone());
        let start = Arc::new(tokio::sync::Barrier::new(PROCESSES));
        let tasks: Vec<_> = (0..PROCESSES)
            .map(|_| {
                let (schema, store, start) = (schema.clone(), store.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    let models = PgReadModels::connect(&support::pg::url(), &schema).await?;
                    let projections = PgProjections::new(store, models.clone());
                    let registered = projections
                        .inline(Balances {
                            fail_on: Arc::new(AtomicI64::new(-1)),
                        })
                        .await;
                    models.pool().close().await;
                    registered
                })
            })
            .collect();
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                failures.push(format!("round {round}: {e}"));
            }
        }
    }
    for s in &schemas {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .execute(db.store.pool())
            .await
            .unwrap();
    }
    db.cleanup().await;
    assert!(failures.is_empty(), "{failures:#?}");
}
