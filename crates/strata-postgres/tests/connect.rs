//! Connecting and migrating: one-line typed errors, advisory-locked idempotent migrations, and
//! refusing a schema newer than the code.

mod support;

use strata_core::{EventData, EventStore, ExpectedVersion, StreamId};
use strata_postgres::{ConnectError, PgStoreOptions, PostgresStore, SCHEMA_VERSION};

fn one_line(e: &ConnectError) {
    let text = e.to_string();
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(text.len() < 200, "short: {text}");
}

#[tokio::test]
async fn a_malformed_url_is_invalid_url() {
    for url in [
        "not a url",
        "mysql://root@localhost/db",
        "postgres://u@host:notaport/db",
    ] {
        let e = PostgresStore::connect(url).await.unwrap_err();
        assert!(matches!(e, ConnectError::InvalidUrl { .. }), "{url}: {e:?}");
        one_line(&e);
    }
}

#[tokio::test]
async fn a_refused_connection_says_so() {
    // Port 1 on loopback: nothing listens there.
    let e = PostgresStore::connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ConnectError::ConnectionRefused {
            host: "127.0.0.1".to_owned(),
            port: 1
        }
    );
    one_line(&e);
    assert!(e.to_string().contains("connection refused"), "{e}");
}

#[tokio::test]
async fn a_bad_schema_name_is_refused_before_connecting() {
    for name in ["", "Bank", "1bank", "bank-1", "pg_bank", &"x".repeat(60)] {
        let e = PostgresStore::connect_with(
            PgStoreOptions::new("postgres://postgres@127.0.0.1:1/test").with_schema(name),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, ConnectError::InvalidSchemaName { .. }),
            "{name}: {e:?}"
        );
        one_line(&e);
    }
}

#[tokio::test]
async fn a_missing_database_says_which() {
    // Only meaningful with a reachable server: check it is there first.
    let (_store, schema) = support::connect("conn", |o| o).await;
    let mut url = url_parts();
    url.push_str("/strata_no_such_database");
    let e = PostgresStore::connect(&url).await.unwrap_err();
    match &e {
        ConnectError::DatabaseNotFound { database, .. } => {
            assert_eq!(database, "strata_no_such_database")
        }
        other => panic!("expected DatabaseNotFound, got {other:?}"),
    }
    one_line(&e);
    support::drop_schema(schema).await;
}

/// The test URL without its database path.
fn url_parts() -> String {
    let url = support::database_url();
    let without_query = url.split('?').next().unwrap_or(&url).to_owned();
    match without_query.rfind('/') {
        Some(i) if i > "postgres://".len() => without_query[..i].to_owned(),
        _ => without_query,
    }
}

#[tokio::test]
async fn migrations_run_once_even_when_processes_start_together() {
    let schema = support::fresh_schema("mig");
    let url = support::database_url();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let options = PgStoreOptions::new(url.clone()).with_schema(schema.clone());
        tasks.push(tokio::spawn(PostgresStore::connect_with(options)));
    }
    let mut stores = Vec::new();
    for t in tasks {
        match t.await.expect("connect task") {
            Ok(s) => stores.push(s),
            Err(e) => support::unreachable_database(e),
        }
    }
    let applied: Vec<i32> = sqlx::query_scalar(&format!(
        "SELECT version FROM {schema}.strata_migrations ORDER BY version"
    ))
    .fetch_all(stores[0].pool())
    .await
    .unwrap();
    assert_eq!(applied, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    // Connecting again is a no-op, and the store works.
    let again = PostgresStore::connect_with(PgStoreOptions::new(url).with_schema(schema.clone()))
        .await
        .unwrap();
    let s = StreamId::new("account-1").unwrap();
    again
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![EventData::json("A", &1).unwrap()],
        )
        .await
        .unwrap();
    drop((stores, again));
    support::drop_schema(schema).await;
}

/// A schema at version 1 (the filter indexes missing) is brought to version 2 with its events
/// kept and read through the new indexes; version 2 is idempotent where an operator built the
/// indexes by hand beforehand.
#[tokio::test]
async fn a_version_1_schema_is_upgraded() {
    let (store, schema) = support::connect("upgrade", |o| o).await;
    let s = StreamId::new("audit-1").unwrap();
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![EventData::json("A", &1).unwrap()],
        )
        .await
        .unwrap();
    let indexes = format!(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = '{schema}' AND indexname IN \
         ('events_category_position', 'events_type_position', 'events_stream_starts')"
    );
    let count = |pool: sqlx::PgPool, q: String| async move {
        sqlx::query_scalar::<_, i64>(&q)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(count(store.pool().clone(), indexes.clone()).await, 3);
    // Back to what version 1 created.
    sqlx::raw_sql(&format!(
        "DROP INDEX {schema}.events_category_position, {schema}.events_type_position, \
                    {schema}.events_stream_starts;
         DELETE FROM {schema}.strata_migrations WHERE version >= 2;"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let connect = || {
        PostgresStore::connect_with(
            PgStoreOptions::new(support::database_url()).with_schema(schema.clone()),
        )
    };
    let upgraded = connect().await.unwrap();
    assert_eq!(count(upgraded.pool().clone(), indexes.clone()).await, 3);
    let versions = format!("SELECT max(version)::bigint FROM {schema}.strata_migrations");
    assert_eq!(
        count(upgraded.pool().clone(), versions.clone()).await,
        i64::from(SCHEMA_VERSION)
    );
    let page = upgraded
        .read_all(
            strata_core::ReadAllOptions::forward()
                .filter(strata_core::Filter::default().categories(["audit"])),
        )
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    // Indexes already there, version 2 not recorded: applying it again is harmless.
    sqlx::query(&format!(
        "DELETE FROM {schema}.strata_migrations WHERE version >= 2"
    ))
    .execute(upgraded.pool())
    .await
    .unwrap();
    let again = connect().await.unwrap();
    assert_eq!(count(again.pool().clone(), indexes).await, 3);
    assert_eq!(
        count(again.pool().clone(), versions).await,
        i64::from(SCHEMA_VERSION)
    );
    drop((store, upgraded, again));
    support::drop_schema(schema).await;
}

/// A schema at version 2 (no `strata_readable_head`) gets it on connect, with its events kept;
/// applying version 3 again is harmless.
#[tokio::test]
async fn a_version_2_schema_gets_the_readable_head_search() {
    let (store, schema) = support::connect("upgrade3", |o| o).await;
    let s = StreamId::new("audit-1").unwrap();
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![EventData::json("A", &1).unwrap()],
        )
        .await
        .unwrap();
    let exists = format!(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = '{schema}' AND p.proname = 'strata_readable_head'"
    );
    let count = |pool: sqlx::PgPool, q: String| async move {
        sqlx::query_scalar::<_, i64>(&q)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(count(store.pool().clone(), exists.clone()).await, 1);
    sqlx::raw_sql(&format!(
        "DROP FUNCTION {schema}.strata_readable_head(xid8, bigint);
         DELETE FROM {schema}.strata_migrations WHERE version >= 3;"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let connect = || {
        PostgresStore::connect_with(
            PgStoreOptions::new(support::database_url()).with_schema(schema.clone()),
        )
    };
    let upgraded = connect().await.unwrap();
    assert_eq!(count(upgraded.pool().clone(), exists.clone()).await, 1);
    let versions = format!("SELECT max(version)::bigint FROM {schema}.strata_migrations");
    assert_eq!(
        count(upgraded.pool().clone(), versions.clone()).await,
        i64::from(SCHEMA_VERSION)
    );
    assert_eq!(
        upgraded
            .read_stream(&s, strata_core::ReadStreamOptions::forward())
            .await
            .unwrap()
            .len(),
        1
    );
    // Function there, version 3 not recorded: applying it again is harmless.
    sqlx::query(&format!(
        "DELETE FROM {schema}.strata_migrations WHERE version >= 3"
    ))
    .execute(upgraded.pool())
    .await
    .unwrap();
    let again = connect().await.unwrap();
    assert_eq!(count(again.pool().clone(), exists).await, 1);
    assert_eq!(
        count(again.pool().clone(), versions).await,
        i64::from(SCHEMA_VERSION)
    );
    drop((store, upgraded, again));
    support::drop_schema(schema).await;
}

#[tokio::test]
async fn a_schema_newer_than_the_code_is_refused() {
    let (store, schema) = support::connect("new", |o| o).await;
    sqlx::query(&format!(
        "INSERT INTO {schema}.strata_migrations (version, description) VALUES (99, 'from the future')"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let e = PostgresStore::connect_with(
        PgStoreOptions::new(support::database_url()).with_schema(schema.clone()),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        ConnectError::SchemaTooNew {
            schema: schema.clone(),
            found: 99,
            supported: SCHEMA_VERSION
        }
    );
    one_line(&e);
    drop(store);
    support::drop_schema(schema).await;
}

#[tokio::test]
async fn without_migrations_a_fresh_schema_is_refused() {
    let schema = support::fresh_schema("nomig");
    let e = PostgresStore::connect_with(
        PgStoreOptions::new(support::database_url())
            .with_schema(schema.clone())
            .with_migrate(false),
    )
    .await
    .unwrap_err();
    match e {
        ConnectError::Migration { version: 0, .. } => {}
        ConnectError::ConnectionRefused { .. } | ConnectError::DatabaseNotFound { .. } => {
            support::unreachable_database(e)
        }
        other => panic!("expected a migration error, got {other:?}"),
    }
}
