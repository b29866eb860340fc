//! Inline PostgreSQL projections in the append's transaction (`PgProjections::transactional`):
//! a failing handler rolls the append back (stream, `$all`, read model and checkpoint
//! unchanged; the caller gets `ProjectedAppendError::RolledBack`); a succeeding one commits
//! both; version conflicts and idempotent retries behave as on the plain store; concurrent
//! projected and plain appends leave the model equal to the fold. The database is
//! `STRATA_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`); without one
//! the tests are skipped with a message, except under CI (`CI` set), where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata::projection::{
    PgProjections, PgReadModels, ProjectedAppendError, ProjectedStore, ProjectionStatus,
};
use strata::{
    AppendError, EventStore, ExpectedVersion, ReadAllOptions, ReadStreamOptions, RecordedEvent,
    Uuid,
};
use strata_postgres::{PgStoreOptions, PostgresStore};
use support::pg::{account, db, deposit, fold, model, Balances, Db};

async fn stored_checkpoint(models: &PgReadModels) -> Option<i64> {
    sqlx::query_scalar("SELECT checkpoint FROM strata_projections WHERE name = 'balances'")
        .fetch_one(models.pool())
        .await
        .unwrap()
}

async fn all_events(store: &PostgresStore) -> Vec<RecordedEvent> {
    store
        .read_all(ReadAllOptions::forward().limit(10_000))
        .await
        .unwrap()
        .events
}

async fn setup(db: &Db, fail_on: &Arc<AtomicI64>) -> ProjectedStore<PostgresStore, PgProjections> {
    let projections = PgProjections::transactional(db.store.clone(), db.models.clone())
        .await
        .unwrap();
    projections
        .inline(Balances {
            fail_on: fail_on.clone(),
        })
        .await
        .unwrap();
    ProjectedStore::new(db.store.clone(), projections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_inline_handler_rolls_the_append_back() {
    let Some(db) = db("ptx").await else { return };
    let fail_on = Arc::new(AtomicI64::new(13));
    let projected = setup(&db, &fail_on).await;
    let a = account(1);

    // A succeeding handler commits both.
    let first = projected
        .append_projected(&a, ExpectedVersion::NoStream, vec![deposit(5)])
        .await
        .unwrap();
    let expected_model = BTreeMap::from([("account-1".to_owned(), (5, 1))]);
    assert_eq!(model(&db.models).await, expected_model);
    let checkpoint = Some(first.last_position().0 as i64);
    assert_eq!(stored_checkpoint(&db.models).await, checkpoint);
    assert_eq!(
        projected.projections().checkpoint("balances").unwrap(),
        Some(first.last_position())
    );

    // A failing handler rolls the append back: a typed error, nothing changed anywhere.
    let id = Uuid::now_v7();
    let err = projected
        .append_projected(&a, ExpectedVersion::Exact(0), vec![deposit(13).with_id(id)])
        .await
        .unwrap_err();
    match &err {
        ProjectedAppendError::RolledBack {
            projection,
            event_id,
            reason,
        } => {
            assert_eq!(projection, "balances");
            assert_eq!(*event_id, id);
            assert!(reason.contains("refusing amount 13"), "{reason}");
        }
        other => panic!("expected RolledBack, got {other:?}"),
    }
    let stream = db
        .store
        .read_stream(&a, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(stream.len(), 1, "the stream is unchanged");
    let all = all_events(&db.store).await;
    assert_eq!(all.len(), 1, "$all is unchanged");
    assert_eq!(all[0].position, first.last_position());
    assert_eq!(model(&db.models).await, expected_model);
    assert_eq!(stored_checkpoint(&db.models).await, checkpoint);
    let status = projected.projections().status("balances").await.unwrap();
    assert_eq!(
        status.status,
        ProjectionStatus::Running,
        "not marked failed"
    );
    assert_eq!(status.checkpoint, Some(first.last_position()));

    // Through the EventStore trait (a Repository, say) it is an append error.
    let err = projected
        .append(&a, ExpectedVersion::Exact(0), vec![deposit(13)])
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Storage(m) if m.message().contains("rolled back")));
    assert_eq!(all_events(&db.store).await.len(), 1);

    // After the fix the same append commits with its read-model change.
    fail_on.store(-1, Ordering::SeqCst);
    let second = projected
        .append_projected(&a, ExpectedVersion::Exact(0), vec![deposit(13).with_id(id)])
        .await
        .unwrap();
    assert_eq!(second.stream_version, 1);
    assert_eq!(
        model(&db.models).await,
        BTreeMap::from([("account-1".to_owned(), (18, 2))])
    );
    assert_eq!(
        stored_checkpoint(&db.models).await,
        Some(second.last_position().0 as i64)
    );
    assert_eq!(model(&db.models).await, fold(&db.store, None).await);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_conflicts_and_idempotent_retries_go_through_unchanged() {
    let Some(db) = db("ptx").await else { return };
    let fail_on = Arc::new(AtomicI64::new(i64::MIN));
    let projected = setup(&db, &fail_on).await;
    let a = account(1);
    let ids = [Uuid::now_v7(), Uuid::now_v7()];
    let events = || vec![deposit(2).with_id(ids[0]), deposit(3).with_id(ids[1])];
    let first = projected
        .append_projected(&a, ExpectedVersion::NoStream, events())
        .await
        .unwrap();
    // The same append again (a client retry): the stored result, not counted twice.
    let again = projected
        .append_projected(&a, ExpectedVersion::NoStream, events())
        .await
        .unwrap();
    assert!(!first.replayed);
    assert!(again.replayed, "the retry says it was one");
    assert_eq!(
        (again.stream_version, &again.positions),
        (first.stream_version, &first.positions)
    );
    assert_eq!(
        model(&db.models).await,
        BTreeMap::from([("account-1".to_owned(), (5, 2))])
    );
    // A wrong expected version: the store's typed error, nothing written.
    let err = projected
        .append_projected(&a, ExpectedVersion::Exact(0), vec![deposit(100)])
        .await
        .unwrap_err();
    match err {
        ProjectedAppendError::Append(AppendError::WrongExpectedVersion { actual, .. }) => {
            assert_eq!(actual.0, Some(1));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    let err = projected
        .append_projected(&a, ExpectedVersion::NoStream, vec![deposit(100)])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ProjectedAppendError::Append(AppendError::WrongExpectedVersion { .. })
    ));
    assert_eq!(all_events(&db.store).await.len(), 2);
    assert_eq!(model(&db.models).await, fold(&db.store, None).await);
    assert_eq!(
        stored_checkpoint(&db.models).await,
        Some(first.last_position().0 as i64)
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_projected_and_plain_appends_leave_the_fold() {
    let Some(db) = db("ptx").await else { return };
    let fail_on = Arc::new(AtomicI64::new(i64::MIN));
    let projected = setup(&db, &fail_on).await;
    let mut tasks = Vec::new();
    for t in 0..6u32 {
        let projected = projected.clone();
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25i64 {
                let stream = account(t % 3);
                let amount = i64::from(t) * 100 + i;
                if t % 3 == 2 {
                    // Plain appends the projection did not see: the next projected append
                    // applies them in its transaction, before its own.
                    store
                        .append(&stream, ExpectedVersion::Any, vec![deposit(amount)])
                        .await
                        .unwrap();
                } else {
                    projected
                        .append_projected(&stream, ExpectedVersion::Any, vec![deposit(amount)])
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let last = projected
        .append_projected(&account(9), ExpectedVersion::Any, vec![deposit(1)])
        .await
        .unwrap();
    assert_eq!(all_events(&db.store).await.len(), 151);
    assert_eq!(model(&db.models).await, fold(&db.store, None).await);
    assert_eq!(
        stored_checkpoint(&db.models).await,
        Some(last.last_position().0 as i64)
    );
    projected
        .projections()
        .wait_for("balances", last.last_position(), Duration::from_secs(1))
        .await
        .unwrap();
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_the_read_models_cannot_see_is_refused() {
    let Some(db) = db("ptx").await else { return };
    // Read models whose sessions cannot see the store's events table (here: it was dropped;
    // in practice: another database) cannot share its transactions.
    let other = PostgresStore::connect_with(
        PgStoreOptions::new(
            std::env::var("STRATA_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
        )
        .with_schema(format!("{}_x", db.schemas[0])),
    )
    .await
    .unwrap();
    sqlx::query(&format!("DROP SCHEMA {}_x CASCADE", db.schemas[0]))
        .execute(db.store.pool())
        .await
        .unwrap();
    assert!(PgProjections::transactional(other, db.models.clone())
        .await
        .is_err());
    db.cleanup().await;
}
