//! The events table is append-only in the database itself (schema version 4): UPDATE, DELETE,
//! TRUNCATE and INSERTs that bypass Strata's append fail with SQLSTATE SX002 and a message
//! saying why, while Strata's own appends (one-statement, batched, inside a caller's
//! transaction) go on working; a schema at version 3 is upgraded with its events kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use sqlx::{Connection, PgConnection};
use strata_core::{
    EventData, EventStore, ExpectedVersion, ReadAllOptions, ReadStreamOptions, StreamId,
};
use strata_postgres::{PgStoreOptions, PostgresStore, SCHEMA_VERSION};

fn event(n: u64) -> EventData {
    EventData::json("Deposited", &serde_json::json!({ "n": n })).unwrap()
}

/// Runs `sql` (simple protocol, several statements allowed) and returns the SQLSTATE and
/// message it fails with.
async fn refused(conn: &mut PgConnection, sql: &str) -> (String, String) {
    match sqlx::raw_sql(sql).execute(&mut *conn).await {
        Ok(_) => panic!("{sql} was allowed"),
        Err(sqlx::Error::Database(db)) => (
            db.code().map(|c| c.into_owned()).unwrap_or_default(),
            db.message().to_owned(),
        ),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// A direct INSERT of one event row with `position`, as someone bypassing Strata would write.
fn direct_insert(schema: &str, position: u64) -> String {
    format!(
        "INSERT INTO {schema}.events (event_id, aggregate_id, aggregate_type, event_type, \
         version, position, transaction_id, created_at, content_type, data_bytes) \
         VALUES (gen_random_uuid(), 'sneaky-1', 'sneaky', 'T', 0, {position}, \
         pg_current_xact_id(), now(), 'application/json', '\\x7b7d')"
    )
}

/// Checks every forbidden write on `schema` is refused with a clear error and changes nothing.
async fn every_other_write_is_refused(store: &PostgresStore, schema: &str, stored: usize) {
    let mut conn = PgConnection::connect(&support::database_url())
        .await
        .unwrap();
    let cases = [
        (
            format!("UPDATE {schema}.events SET event_type = 'Changed'"),
            "UPDATE on",
        ),
        (
            format!("UPDATE {schema}.events SET event_type = 'Changed' WHERE false"),
            "UPDATE on",
        ),
        (format!("DELETE FROM {schema}.events"), "DELETE on"),
        (format!("TRUNCATE {schema}.events"), "TRUNCATE on"),
        (direct_insert(schema, 1_000_000), "INSERT into"),
        // A direct INSERT later in a transaction that appended through Strata.
        (
            format!(
                "BEGIN; SELECT * FROM {schema}.strata_append(ARRAY['late-1'], ARRAY['late'], \
                 ARRAY[0::smallint], ARRAY[0::bigint], ARRAY[1], ARRAY[1], ARRAY[0], \
                 ARRAY[gen_random_uuid()], ARRAY['T'], ARRAY['application/json'], ARRAY[true], \
                 ARRAY['\\x7b7d'::bytea], ARRAY[NULL::text]); {}; COMMIT",
                direct_insert(schema, 2_000_000)
            ),
            "INSERT into",
        ),
    ];
    for (sql, starts) in &cases {
        let (code, message) = refused(&mut conn, sql).await;
        assert_eq!(code, "SX002", "{sql}: {message}");
        assert!(
            message.starts_with(starts) && message.contains(&format!("{schema}.events refused")),
            "{sql}: {message}"
        );
        if starts.starts_with("INSERT") {
            assert!(message.contains("strata_append"), "{message}");
        } else {
            assert!(message.contains("append-only"), "{message}");
        }
        let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
    }
    // COPY is an INSERT too.
    let copy = format!(
        "COPY {schema}.events (event_id, aggregate_id, aggregate_type, event_type, version, \
         position, transaction_id, created_at, content_type, data_bytes) FROM STDIN"
    );
    let row = "00000000-0000-0000-0000-000000000001\tsneaky-2\tsneaky\tT\t0\t3000000\t1\t\
               2024-01-01 00:00:00+00\tapplication/json\t\\\\x7b7d\n";
    let copied = match conn.copy_in_raw(&copy).await {
        Ok(mut sink) => match sink.send(row.as_bytes()).await {
            Ok(_) => sink.finish().await.map(drop),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match copied {
        Err(sqlx::Error::Database(db)) => {
            assert_eq!(db.code().as_deref(), Some("SX002"), "{}", db.message());
            assert!(db.message().starts_with("INSERT into"), "{}", db.message());
        }
        other => panic!("COPY into events: {other:?}"),
    }
    let page = store
        .read_all(ReadAllOptions::forward().limit(1000))
        .await
        .unwrap();
    assert_eq!(page.events.len(), stored, "nothing was written or removed");
    assert!(page.events.iter().all(|e| e.event_type == "Deposited"));
    let _ = conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_strata_appends_to_the_events_table() {
    let (store, schema) = support::connect("append_only", |o| o).await;
    // Strata's own appends: the one-statement path, batches, and inside a transaction.
    let s = StreamId::new("account-1").unwrap();
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
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
        t.await.unwrap().unwrap();
    }
    let mut tx = store.pool().begin().await.unwrap();
    store
        .append_in_transaction(&mut tx, &s, ExpectedVersion::Exact(0), vec![event(1)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    store.notify_appended();
    assert_eq!(
        store
            .read_stream(&s, ReadStreamOptions::forward())
            .await
            .unwrap()
            .len(),
        2
    );

    every_other_write_is_refused(&store, &schema, 1 + 16 + 1).await;
    drop(store);
    support::drop_schema(schema).await;
}

/// A schema at version 3 (no guard, version 1's `strata_append`) is brought to version 4 with
/// its events kept: afterwards appends work and every other write is refused. Applying
/// version 4 again is harmless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_schema_becomes_append_only() {
    let (store, schema) = support::connect("append_only_up", |o| o).await;
    let s = StreamId::new("account-1").unwrap();
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    // Back to what version 3 had: no triggers, no refusing function, version 1's append.
    let v1 = include_str!("../src/sql/0001_events.sql");
    let start = v1
        .find("CREATE FUNCTION {schema}.strata_append(")
        .expect("version 1 defines strata_append");
    let end = start + v1[start..].find("$fn$;").expect("its end") + "$fn$;".len();
    let mut conn = PgConnection::connect(&support::database_url())
        .await
        .unwrap();
    // The append lock's key, as the installed function has it.
    let installed: String = sqlx::query_scalar(
        "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = $1 AND p.proname = 'strata_append'",
    )
    .bind(&schema)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let at = installed.find("pg_advisory_lock(").expect("the lock") + "pg_advisory_lock(".len();
    let lock_key = &installed[at..at + installed[at..].find(')').expect("its end")];
    let old_append = v1[start..end]
        .replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
        .replace("{lock_key}", lock_key)
        .replace("{schema}", &schema);
    sqlx::raw_sql(&format!(
        "DROP TRIGGER strata_append_only_insert ON {schema}.events;
         DROP TRIGGER strata_append_only_update ON {schema}.events;
         DROP TRIGGER strata_append_only_delete ON {schema}.events;
         DROP TRIGGER strata_append_only_truncate ON {schema}.events;
         DROP FUNCTION {schema}.strata_refuse_write();
         {old_append}
         DELETE FROM {schema}.strata_migrations WHERE version >= 4;"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    // Version 3 accepted an UPDATE (rolled back here).
    sqlx::raw_sql(&format!(
        "BEGIN; UPDATE {schema}.events SET event_type = 'Changed'; ROLLBACK"
    ))
    .execute(&mut conn)
    .await
    .unwrap();

    let connect = || {
        PostgresStore::connect_with(
            PgStoreOptions::new(support::database_url()).with_schema(schema.clone()),
        )
    };
    let upgraded = connect().await.unwrap();
    let version: i32 = sqlx::query_scalar(&format!(
        "SELECT max(version) FROM {schema}.strata_migrations"
    ))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    upgraded
        .append(&s, ExpectedVersion::Exact(0), vec![event(1)])
        .await
        .unwrap();
    let tasks: Vec<_> = (0..4u64)
        .map(|i| {
            let store = upgraded.clone();
            tokio::spawn(async move {
                let s = StreamId::new(format!("account-b{i}")).unwrap();
                store
                    .append(&s, ExpectedVersion::NoStream, vec![event(i)])
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    every_other_write_is_refused(&upgraded, &schema, 2 + 4).await;

    // Version 4 recorded missing, everything in place: applying it again is harmless.
    sqlx::query(&format!(
        "DELETE FROM {schema}.strata_migrations WHERE version >= 4"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let again = connect().await.unwrap();
    again
        .append(&s, ExpectedVersion::Exact(1), vec![event(2)])
        .await
        .unwrap();
    every_other_write_is_refused(&again, &schema, 2 + 4 + 1).await;
    let _ = conn.close().await;
    drop((store, upgraded, again));
    support::drop_schema(schema).await;
}
