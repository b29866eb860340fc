//! `PostgresStore::append_in_transaction`: the events commit or roll back with the caller's
//! other writes, and the store's append semantics (expected version, idempotent retry,
//! event-id conflicts, the first-write rule, races) hold through it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use sqlx::Connection;

use serde_json::json;
use strata_core::{
    AppendError, EventData, EventStore, ExpectedVersion, Position, ReadAllOptions,
    ReadStreamOptions, StreamId, Uuid,
};
use strata_postgres::{is_transaction_race, EarlierAppends, PostgresStore};

fn ev(n: i64) -> EventData {
    EventData::json("Happened", &json!({ "n": n })).unwrap()
}

async fn side_table(store: &PostgresStore, schema: &str) {
    sqlx::query(&format!(
        "CREATE TABLE {schema}.side (n BIGINT PRIMARY KEY)"
    ))
    .execute(store.pool())
    .await
    .unwrap();
}

async fn side_rows(store: &PostgresStore, schema: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.side"))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn all_positions(store: &PostgresStore) -> Vec<Position> {
    store
        .read_all(ReadAllOptions::forward().limit(1000))
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.position)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_and_rolls_back_with_the_callers_writes() {
    let (store, schema) = support::connect("in_tx", |o| o).await;
    side_table(&store, &schema).await;
    let s = StreamId::new("account-1").unwrap();

    // Rolled back: neither the events nor the side row exist, and the lock is not leaked.
    let mut tx = store.pool().begin().await.unwrap();
    let r = store
        .append_in_transaction(&mut tx, &s, ExpectedVersion::NoStream, vec![ev(1), ev(2)])
        .await
        .unwrap();
    assert_eq!(r.stream_version, 1);
    sqlx::query(&format!("INSERT INTO {schema}.side VALUES (1)"))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    store.notify_appended();
    assert!(store
        .read_stream(&s, ReadStreamOptions::forward())
        .await
        .is_err_or_empty());
    assert!(all_positions(&store).await.is_empty());
    assert_eq!(side_rows(&store, &schema).await, 0);

    // Committed: both, and invisible to other sessions until the commit.
    let mut tx = store.pool().begin().await.unwrap();
    let r = store
        .append_in_transaction(&mut tx, &s, ExpectedVersion::NoStream, vec![ev(3)])
        .await
        .unwrap();
    assert_eq!(r.stream_version, 0);
    sqlx::query(&format!("INSERT INTO {schema}.side VALUES (3)"))
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(
        all_positions(&store).await.is_empty(),
        "not visible before commit"
    );
    let own = store
        .read_in_transaction(&mut tx, Position::START, r.last_position(), 10)
        .await
        .unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!(
        store
            .wait_for_earlier_appends(&mut tx, Duration::from_secs(5))
            .await
            .unwrap(),
        EarlierAppends::Ended
    );
    tx.commit().await.unwrap();
    store.notify_appended();
    assert_eq!(all_positions(&store).await, r.positions);
    assert_eq!(side_rows(&store, &schema).await, 1);

    // A plain append still works (no advisory lock left behind) and orders after it.
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        store.append(&s, ExpectedVersion::Exact(0), vec![ev(4)]),
    )
    .await
    .expect("a plain append after in-transaction appends must not hang")
    .unwrap();
    assert!(next.last_position() > r.last_position());
    support::drop_schema(schema).await;
}

trait EmptyOrErr {
    fn is_err_or_empty(&self) -> bool;
}
impl<T, E> EmptyOrErr for Result<Vec<T>, E> {
    fn is_err_or_empty(&self) -> bool {
        self.as_ref().map_or(true, Vec::is_empty)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_version_idempotency_and_first_write_rule() {
    let (store, schema) = support::connect("in_tx_rules", |o| o).await;
    side_table(&store, &schema).await;
    let s = StreamId::new("account-1").unwrap();
    let ids = [Uuid::now_v7(), Uuid::now_v7()];
    let first = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![ev(1).with_id(ids[0]), ev(2).with_id(ids[1])],
        )
        .await
        .unwrap();

    let mut tx = store.pool().begin().await.unwrap();
    // Wrong expected version: a typed error, nothing written, the transaction still usable.
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(7)] {
        let err = store
            .append_in_transaction(&mut tx, &s, expected, vec![ev(9)])
            .await
            .unwrap_err();
        match err {
            AppendError::WrongExpectedVersion { actual, .. } => assert_eq!(actual.0, Some(1)),
            other => panic!("expected a version conflict, got {other:?}"),
        }
    }
    // Idempotent retry: the stored result, nothing new.
    let again = store
        .append_in_transaction(
            &mut tx,
            &s,
            ExpectedVersion::NoStream,
            vec![ev(1).with_id(ids[0]), ev(2).with_id(ids[1])],
        )
        .await
        .unwrap();
    assert!(!first.replayed);
    assert!(again.replayed, "a retry says it was one");
    assert_eq!(
        (again.stream_version, &again.positions),
        (first.stream_version, &first.positions)
    );
    assert_eq!(
        store
            .wait_for_earlier_appends(&mut tx, Duration::from_secs(1))
            .await
            .unwrap(),
        EarlierAppends::NothingAppended
    );
    // An id reused for a different place: a conflict.
    let err = store
        .append_in_transaction(
            &mut tx,
            &s,
            ExpectedVersion::Any,
            vec![ev(3).with_id(ids[1])],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::EventIdConflict { event_id, .. } if event_id == ids[1]));
    // A real append, then a second one in the same transaction is refused.
    let r = store
        .append_in_transaction(&mut tx, &s, ExpectedVersion::Exact(1), vec![ev(5)])
        .await
        .unwrap();
    assert_eq!(r.stream_version, 2);
    let err = store
        .append_in_transaction(&mut tx, &s, ExpectedVersion::Exact(2), vec![ev(6)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AppendError::InvalidInput(i) if i.to_string().contains("transaction")),
        "{err:?}"
    );
    tx.commit().await.unwrap();
    store.notify_appended();
    assert_eq!(all_positions(&store).await.len(), 3);

    // The first-write rule: a transaction that already wrote cannot append.
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {schema}.side VALUES (1)"))
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = store
        .append_in_transaction(&mut tx, &s, ExpectedVersion::Any, vec![ev(7)])
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::InvalidInput(_)), "{err:?}");
    tx.commit().await.unwrap();
    assert_eq!(
        side_rows(&store, &schema).await,
        1,
        "the transaction stayed usable"
    );
    assert_eq!(all_positions(&store).await.len(), 3);
    support::drop_schema(schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_asks_for_a_new_transaction() {
    let (store, schema) = support::connect("in_tx_race", |o| o).await;
    let s = StreamId::new("account-1").unwrap();
    // A slow writer holds its transaction open with version 0 of the stream.
    let slow = {
        let (store, s) = (store.clone(), s.clone());
        tokio::spawn(async move {
            store
                .append_holding_transaction(
                    &s,
                    ExpectedVersion::Any,
                    vec![ev(1)],
                    Duration::from_millis(500),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut tx = store.pool().begin().await.unwrap();
    let err = store
        .append_in_transaction(&mut tx, &s, ExpectedVersion::Any, vec![ev(2)])
        .await
        .unwrap_err();
    // A typed answer to match on, naming the stream.
    match &err {
        AppendError::Race { stream, .. } => assert_eq!(stream, &s),
        other => panic!("expected a race, got {other:?}"),
    }
    assert!(err.is_race() && is_transaction_race(&err), "{err:?}");
    tx.rollback().await.unwrap();
    slow.await.unwrap().unwrap();
    // The retry in a new transaction settles it.
    let mut tx = store.pool().begin().await.unwrap();
    let r = store
        .append_in_transaction(&mut tx, &s, ExpectedVersion::Any, vec![ev(2)])
        .await
        .unwrap();
    assert_eq!(r.stream_version, 1);
    tx.commit().await.unwrap();
    let plain = tokio::time::timeout(
        Duration::from_secs(10),
        store.append(&s, ExpectedVersion::Exact(1), vec![ev(3)]),
    )
    .await
    .expect("no advisory lock left behind")
    .unwrap();
    assert_eq!(plain.stream_version, 2);
    support::drop_schema(schema).await;
}

async fn backend_pid(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut **tx)
        .await
        .unwrap()
}

/// Polls `sql` (a boolean query about other sessions) until it is true: at most 10 s.
async fn until(store: &PostgresStore, sql: &str, pid: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let done: bool = sqlx::query_scalar(sql)
            .bind(pid)
            .fetch_one(store.pool())
            .await
            .unwrap();
        if done {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for: {sql}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Three transactions that would wait on each other, none of them seen by PostgreSQL's
/// deadlock check: Z (oldest) took its position and waits for B's lock on the same stream
/// version; T (between them) waits, in `wait_for_earlier_appends`, for Z; B (newest) would
/// wait there for T. B is told to roll back at once instead; then Z, T and B's second attempt
/// all commit, in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_that_would_close_a_circle_ask_for_a_rollback() {
    let (store, schema) = support::connect("in_tx_circle", |o| o).await;
    let s = StreamId::new("account-1").unwrap();
    let other = StreamId::new("account-2").unwrap();
    // Holds Z between its critical section (its id and position taken) and its INSERT.
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION {schema}.hold() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF current_setting('strata_test.hold', true) = 'on' THEN
                 PERFORM pg_advisory_xact_lock(hashtext('{schema}'));
             END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER a_hold BEFORE INSERT ON {schema}.events
             FOR EACH STATEMENT EXECUTE FUNCTION {schema}.hold();"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let mut gate = sqlx::PgConnection::connect(&support::database_url())
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
        .bind(&schema)
        .execute(&mut gate)
        .await
        .unwrap();

    // Z: position taken, held at the gate before its INSERT.
    let mut tx_z = store.pool().begin().await.unwrap();
    sqlx::query("SELECT set_config('strata_test.hold', 'on', true)")
        .execute(&mut *tx_z)
        .await
        .unwrap();
    let z_pid = backend_pid(&mut tx_z).await;
    let z = {
        let store = store.clone();
        let s = s.clone();
        tokio::spawn(async move {
            let r = store
                .append_in_transaction(&mut tx_z, &s, ExpectedVersion::Any, vec![ev(1)])
                .await;
            (tx_z, r)
        })
    };
    let waits_on = |kind: &str| {
        format!("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted AND locktype = '{kind}')")
    };
    until(&store, &waits_on("advisory"), z_pid).await;

    // T: appended after Z (a higher position), waits for Z to end.
    let mut tx_t = store.pool().begin().await.unwrap();
    let t_result = store
        .append_in_transaction(&mut tx_t, &other, ExpectedVersion::Any, vec![ev(2)])
        .await
        .unwrap();
    let t = {
        let store = store.clone();
        tokio::spawn(async move {
            let r = store
                .wait_for_earlier_appends(&mut tx_t, Duration::from_secs(20))
                .await;
            (tx_t, r)
        })
    };

    // B: appended after T, the same stream version Z is about to insert.
    let mut tx_b = store.pool().begin().await.unwrap();
    let b_first = store
        .append_in_transaction(&mut tx_b, &s, ExpectedVersion::Any, vec![ev(3)])
        .await
        .unwrap();
    assert_eq!(b_first.stream_version, 0);
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(&schema)
        .execute(&mut gate)
        .await
        .unwrap();
    until(&store, &waits_on("transactionid"), z_pid).await;

    // B waits for T, T for Z, Z for B: B must not wait.
    assert_eq!(
        store
            .wait_for_earlier_appends(&mut tx_b, Duration::from_secs(5))
            .await
            .unwrap(),
        EarlierAppends::RollBack
    );
    tx_b.rollback().await.unwrap();

    let (tx_z, z_result) = z.await.unwrap();
    let z_result = z_result.unwrap();
    assert_eq!(z_result.stream_version, 0);
    tx_z.commit().await.unwrap();
    let (tx_t, waited) = t.await.unwrap();
    assert_eq!(waited.unwrap(), EarlierAppends::Ended);
    tx_t.commit().await.unwrap();

    let mut tx_b = store.pool().begin().await.unwrap();
    let b_second = store
        .append_in_transaction(&mut tx_b, &s, ExpectedVersion::Any, vec![ev(3)])
        .await
        .unwrap();
    assert_eq!(b_second.stream_version, 1);
    assert_eq!(
        store
            .wait_for_earlier_appends(&mut tx_b, Duration::from_secs(5))
            .await
            .unwrap(),
        EarlierAppends::Ended
    );
    tx_b.commit().await.unwrap();
    store.notify_appended();
    let expected: Vec<Position> = [&z_result, &t_result, &b_second]
        .iter()
        .map(|r| r.last_position())
        .collect();
    assert_eq!(all_positions(&store).await, expected);
    let _ = gate.close().await;
    support::drop_schema(schema).await;
}

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Runs `sql` in `tx` on a task of its own (it may wait for a lock); gives `tx` back with the
/// outcome.
fn in_background(
    mut tx: Tx,
    sql: String,
) -> tokio::task::JoinHandle<(Tx, Result<sqlx::postgres::PgQueryResult, sqlx::Error>)> {
    tokio::spawn(async move {
        let r = sqlx::query(&sql).execute(&mut *tx).await;
        (tx, r)
    })
}

/// Waits until the session `pid` waits for a lock.
async fn until_waiting(store: &PostgresStore, pid: i32) {
    let sql = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)";
    until(store, sql, pid).await;
}

/// Z appends to one stream, then B to another (a higher position), in two open transactions,
/// and B writes side row 7 after its append. Returns Z, its append and its session, and B.
async fn older_and_newer(
    store: &PostgresStore,
    schema: &str,
) -> (Tx, strata_core::AppendResult, i32, Tx) {
    side_table(store, schema).await;
    let mut tx_z = store.pool().begin().await.unwrap();
    let z_result = store
        .append_in_transaction(
            &mut tx_z,
            &StreamId::new("account-1").unwrap(),
            ExpectedVersion::Any,
            vec![ev(1)],
        )
        .await
        .unwrap();
    let z_pid = backend_pid(&mut tx_z).await;
    let mut tx_b = store.pool().begin().await.unwrap();
    let b_result = store
        .append_in_transaction(
            &mut tx_b,
            &StreamId::new("account-2").unwrap(),
            ExpectedVersion::Any,
            vec![ev(2)],
        )
        .await
        .unwrap();
    assert!(b_result.last_position() > z_result.last_position());
    sqlx::query(&format!("INSERT INTO {schema}.side VALUES (7)"))
        .execute(&mut *tx_b)
        .await
        .unwrap();
    (tx_z, z_result, z_pid, tx_b)
}

/// `tx` is told to roll back rather than wait for the older append, and does.
async fn must_roll_back(store: &PostgresStore, mut tx: Tx) {
    let answer = store
        .wait_for_earlier_appends(&mut tx, Duration::from_secs(5))
        .await;
    assert_eq!(answer.unwrap(), EarlierAppends::RollBack);
    tx.rollback().await.unwrap();
}

/// The older append's waiting statement goes through and it commits: `$all` holds its events
/// alone.
async fn commits_alone(
    store: &PostgresStore,
    z: tokio::task::JoinHandle<(Tx, Result<sqlx::postgres::PgQueryResult, sqlx::Error>)>,
    z_result: &strata_core::AppendResult,
) {
    let (tx_z, inserted) = z.await.unwrap();
    inserted.unwrap();
    tx_z.commit().await.unwrap();
    store.notify_appended();
    assert_eq!(all_positions(store).await, z_result.positions);
}

/// An older append that waits for a row this transaction wrote after its append (not a
/// conflict that makes it fail once this one commits): waiting for it could never end, and
/// answering `Ended` would let it commit a lower position after this transaction read past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_append_waiting_for_a_later_write_asks_for_a_rollback() {
    let (store, schema) = support::connect("in_tx_row", |o| o).await;
    let (tx_z, z_result, z_pid, tx_b) = older_and_newer(&store, &schema).await;
    let z = in_background(tx_z, format!("INSERT INTO {schema}.side VALUES (7)"));
    until_waiting(&store, z_pid).await;

    must_roll_back(&store, tx_b).await;
    commits_alone(&store, z, &z_result).await;
    assert_eq!(side_rows(&store, &schema).await, 1);
    support::drop_schema(schema).await;
}

/// The same through a third session: the older append Z waits for X, a plain transaction,
/// which waits for the row B wrote after its append. B must see that Z waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_append_waiting_through_another_session_asks_for_a_rollback() {
    let (store, schema) = support::connect("in_tx_chain", |o| o).await;
    let (tx_z, z_result, z_pid, tx_b) = older_and_newer(&store, &schema).await;
    sqlx::query(&format!(
        "CREATE TABLE {schema}.side2 (n BIGINT PRIMARY KEY)"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    // X: holds side2 row 9, waits for B's side row 7; Z waits for X's side2 row 9.
    let mut tx_x = store.pool().begin().await.unwrap();
    let x_pid = backend_pid(&mut tx_x).await;
    sqlx::query(&format!("INSERT INTO {schema}.side2 VALUES (9)"))
        .execute(&mut *tx_x)
        .await
        .unwrap();
    let x = in_background(tx_x, format!("INSERT INTO {schema}.side VALUES (7)"));
    until_waiting(&store, x_pid).await;
    let z = in_background(tx_z, format!("INSERT INTO {schema}.side2 VALUES (9)"));
    until_waiting(&store, z_pid).await;

    must_roll_back(&store, tx_b).await;
    let (tx_x, inserted) = x.await.unwrap();
    inserted.unwrap();
    tx_x.rollback().await.unwrap();
    commits_alone(&store, z, &z_result).await;
    support::drop_schema(schema).await;
}
