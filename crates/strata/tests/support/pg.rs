//! The PostgreSQL projection tests' fixtures: a `balances` read model, a store and read
//! models in fresh schemas of the test database, deposits and folds to compare with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::postgres::PgConnection;
use strata::projection::{HandlerError, PgProjection, PgReadModels};
use strata::{
    async_trait, EventData, EventStore, Filter, Position, ReadAllOptions, RecordedEvent, StreamId,
};
use strata_postgres::{PgStoreOptions, PostgresStore};

/// Balance and event count per `account-*` stream, from `Deposited { amount }` events; its
/// handler refuses the amount in `fail_on` (set it to -1 to accept all).
pub struct Balances {
    pub fail_on: Arc<AtomicI64>,
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

/// A store and read models, each in its own fresh schema.
pub struct Db {
    pub store: PostgresStore,
    pub models: PgReadModels,
    /// The store's schema, then the read models'.
    pub schemas: [String; 2],
}

impl Db {
    /// Drops both schemas.
    pub async fn cleanup(self) {
        for s in &self.schemas {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                .execute(self.store.pool())
                .await;
        }
    }
}

/// A [`Db`] in the test database (`STRATA_TEST_DATABASE_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test`), its schemas named `t_{prefix}_ev_*` and
/// `t_{prefix}_rm_*`. Without a database: `None` with a message, or a panic under CI (`CI`
/// set).
pub async fn db(prefix: &str) -> Option<Db> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let url = url();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let events = format!("t_{prefix}_ev_{}_{n}", std::process::id());
    let reads = format!("t_{prefix}_rm_{}_{n}", std::process::id());
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

/// The test database: `STRATA_TEST_DATABASE_URL`, or the PostgreSQL this machine runs.
pub fn url() -> String {
    std::env::var("STRATA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A `Deposited` event of `amount`.
pub fn deposit(amount: i64) -> EventData {
    EventData::json("Deposited", &serde_json::json!({ "amount": amount })).unwrap()
}

/// The stream `account-{n}`.
pub fn account(n: u32) -> StreamId {
    StreamId::new(format!("account-{n}")).unwrap()
}

/// The `balances` read model: account -> (balance, events).
pub async fn model(models: &PgReadModels) -> BTreeMap<String, (i64, i64)> {
    sqlx::query_as::<_, (String, i64, i64)>("SELECT account, balance, events FROM balances")
        .fetch_all(models.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|(a, b, n)| (a, (b, n)))
        .collect()
}

/// What [`model`] should be: the `account` events folded, up to `through` (or all).
pub async fn fold(
    store: &PostgresStore,
    through: Option<Position>,
) -> BTreeMap<String, (i64, i64)> {
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
