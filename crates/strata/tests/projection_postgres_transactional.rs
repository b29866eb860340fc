//! Inline PostgreSQL projections in the append's transaction (`PgProjections::transactional`):
//! a failing handler rolls the append back (stream, `$all`, read model and checkpoint
//! unchanged; the caller gets `ProjectedAppendError::RolledBack`); a succeeding one commits
//! both; version conflicts and idempotent retries behave as on the plain store; concurrent
//! projected and plain appends leave the model equal to the fold. The database is
//! `STRATA_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`); without one
//! the tests are skipped with a message, except under CI (`CI` set), where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use strata::projection::{
    HandlerError, PgProjection, PgProjections, PgReadModels, ProjectedAppendError, ProjectedStore,
    ProjectionStatus,
};
use strata::{
    async_trait, AppendError, EventData, EventStore, ExpectedVersion, Filter, ReadAllOptions,
    ReadStreamOptions, RecordedEvent, StreamId, Uuid,
};
use strata_postgres::{PgStoreOptions, PostgresStore};

struct Balances {
    fail_on: Arc<AtomicI64>,
}

#[async_trait]
impl PgProjection for Balances {
    fn name(&self) -> &str {
        "balances"
    }
    fn filter(&self) -> Filter {
        Filter::default().categories(["account"])
    }
    async fn setup(&self, conn: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY,
                 balance BIGINT NOT NULL, events BIGINT NOT NULL)",
        )
        .execute(conn)
        .await?;
        Ok(())
    }
    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError> {
        let amount = event
            .data_json()
            .and_then(|d| d["amount"].as_i64())
            .unwrap_or(0);
        if amount == self.fail_on.load(Ordering::SeqCst) {
            return Err(HandlerError::new(format!("refusing amount {amount}")));
        }
        sqlx::query(
            "INSERT INTO balances VALUES ($1, $2, 1) ON CONFLICT (account)
             DO UPDATE SET balance = balances.balance + $2, events = balances.events + 1",
        )
        .bind(event.stream_id.as_str())
        .bind(amount)
        .execute(conn)
        .await?;
        Ok(())
    }
}

struct Db {
    store: PostgresStore,
    models: PgReadModels,
    schemas: [String; 2],
}

impl Db {
    async fn cleanup(self) {
        for s in &self.schemas {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                .execute(self.store.pool())
                .await;
        }
    }
}

async fn db() -> Option<Db> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let url = std::env::var("STRATA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let events = format!("t_ptx_ev_{}_{n}", std::process::id());
    let reads = format!("t_ptx_rm_{}_{n}", std::process::id());
    let store =
        match PostgresStore::connect_with(PgStoreOptions::new(&url).with_schema(&events)).await {
            Ok(store) => store,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPING a PostgreSQL projection test: no database at {url}: {e}");
                return None;
            }
            Err(e) => panic!("the PostgreSQL projection tests need a database at {url}: {e}"),
        };
    let models = PgReadModels::connect(&url, &reads).await.unwrap();
    Some(Db {
        store,
        models,
        schemas: [events, reads],
    })
}

fn deposit(amount: i64) -> EventData {
    EventData::json("Deposited", &serde_json::json!({ "amount": amount })).unwrap()
}

fn account(n: u32) -> StreamId {
    StreamId::new(format!("account-{n}")).unwrap()
}

async fn model(models: &PgReadModels) -> BTreeMap<String, (i64, i64)> {
    sqlx::query_as::<_, (String, i64, i64)>("SELECT account, balance, events FROM balances")
        .fetch_all(models.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|(a, b, n)| (a, (b, n)))
        .collect()
}

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

async fn fold(store: &PostgresStore) -> BTreeMap<String, (i64, i64)> {
    let mut out = BTreeMap::new();
    for e in all_events(store).await {
        let entry = out.entry(e.stream_id.to_string()).or_insert((0, 0));
        entry.0 += e.data_json().unwrap()["amount"].as_i64().unwrap();
        entry.1 += 1;
    }
    out
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
    let Some(db) = db().await else { return };
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
    assert!(matches!(err, AppendError::Storage(m) if m.contains("rolled back")));
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
    assert_eq!(model(&db.models).await, fold(&db.store).await);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_conflicts_and_idempotent_retries_go_through_unchanged() {
    let Some(db) = db().await else { return };
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
    assert_eq!(again, first);
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
    assert_eq!(model(&db.models).await, fold(&db.store).await);
    assert_eq!(
        stored_checkpoint(&db.models).await,
        Some(first.last_position().0 as i64)
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_projected_and_plain_appends_leave_the_fold() {
    let Some(db) = db().await else { return };
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
    assert_eq!(model(&db.models).await, fold(&db.store).await);
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
    let Some(db) = db().await else { return };
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
