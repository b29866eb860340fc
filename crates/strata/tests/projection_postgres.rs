//! PostgreSQL read models: async with read-your-writes, a failing handler stopping at its
//! event and resuming after the fix, inline through `ProjectedStore`. The database is
//! `STRATA_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`); without
//! one the tests are skipped with a message, except under CI (`CI` set), where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use strata::projection::{
    HandlerError, PgProjection, PgProjections, PgReadModels, ProjectedStore, ProjectionError,
};
use strata::{
    async_trait, EventData, EventStore, ExpectedVersion, Filter, Position, ReadAllOptions,
    RecordedEvent, StreamId,
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
    let events = format!("t_proj_ev_{}_{n}", std::process::id());
    let reads = format!("t_proj_rm_{}_{n}", std::process::id());
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

async fn append(store: &impl EventStore, account: u32, amount: i64) -> Position {
    let stream = StreamId::new(format!("account-{account}")).unwrap();
    store
        .append(&stream, ExpectedVersion::Any, vec![deposit(amount)])
        .await
        .unwrap()
        .last_position()
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

async fn fold(store: &PostgresStore, through: Option<Position>) -> BTreeMap<String, (i64, i64)> {
    let page = store
        .read_all(
            ReadAllOptions::forward()
                .limit(10_000)
                .filter(Filter::default().categories(["account"])),
        )
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for e in page.events {
        if through.is_some_and(|t| e.position > t) {
            break;
        }
        let entry = out.entry(e.stream_id.to_string()).or_insert((0, 0));
        entry.0 += e.data_json().unwrap()["amount"].as_i64().unwrap();
        entry.1 += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_postgres_projection_fails_at_its_event_and_resumes() {
    let Some(db) = db().await else { return };
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
    let Some(db) = db().await else { return };
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
    let Some(db) = db().await else { return };
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
