//! Shared by the PostgreSQL integration tests: where the database is, a fresh schema per test,
//! and what to do when no database is reachable (fail under CI, skip with a message otherwise).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;
use strata_postgres::{ConnectError, PgStoreOptions, PostgresStore};

/// The default test database: the PostgreSQL this machine runs, trust auth.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `STRATA_TEST_DATABASE_URL`, or [`DEFAULT_URL`].
pub fn database_url() -> String {
    std::env::var("STRATA_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema name no other test uses.
pub fn fresh_schema(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("t_{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// Connects a store in a fresh schema. When the database cannot be reached: under CI (env `CI`
/// set) the test fails; otherwise the whole test binary stops with a message and exit code 0.
pub async fn connect(
    prefix: &str,
    tune: impl FnOnce(PgStoreOptions) -> PgStoreOptions,
) -> (PostgresStore, String) {
    let schema = fresh_schema(prefix);
    let options = tune(PgStoreOptions::new(database_url()).with_schema(&schema));
    match PostgresStore::connect_with(options).await {
        Ok(store) => (store, schema),
        Err(e) => unreachable_database(e),
    }
}

pub fn unreachable_database(e: ConnectError) -> ! {
    let unreachable = matches!(
        e,
        ConnectError::ConnectionRefused { .. }
            | ConnectError::Unreachable { .. }
            | ConnectError::Timeout { .. }
            | ConnectError::DatabaseNotFound { .. }
            | ConnectError::AuthenticationFailed { .. }
    );
    if !unreachable || std::env::var_os("CI").is_some() {
        panic!(
            "PostgreSQL tests need a database at {}: {e}",
            database_url()
        );
    }
    // Straight to the process's stderr: the test harness captures `eprintln!`, and the exit
    // below would swallow what it captured.
    let message = format!(
        "SKIPPING the PostgreSQL tests: {e}. Start PostgreSQL or set STRATA_TEST_DATABASE_URL \
         (under CI this is a failure).\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
    std::process::exit(0);
}

/// Drops a test schema and everything in it.
pub async fn drop_schema(schema: String) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&database_url()).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// A session of the database at `url` with a transaction that has taken an id and stays open
/// (until the connection is dropped or rolls back): it holds the cluster's `$all` watermark.
pub async fn hold_watermark(url: &str) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    for statement in ["BEGIN", "SELECT pg_current_xact_id()"] {
        sqlx::query(statement)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    conn
}
