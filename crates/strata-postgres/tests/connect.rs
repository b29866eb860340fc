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
