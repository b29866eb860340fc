//! Database URLs with several hosts (`postgres://user@h1:p1,h2:p2/db`), which sqlx alone does
//! not read: the store tries them in order and takes the first that accepts a connection (with
//! `target_session_attrs=read-write`, the first that accepts writes). The failover between a
//! primary and its standby is tested in `replica.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use strata_core::{EventData, EventStore, ExpectedVersion, ReadAllOptions, StreamId};
use strata_postgres::{ConnectError, PgStoreOptions, PostgresStore};

/// The test database's URL with a host that refuses connections (port 1) put first.
fn with_dead_host_first(query: &str) -> Option<String> {
    let url = support::database_url();
    let (scheme, rest) = url.split_once("://")?;
    let (userinfo, rest) = match rest.split_once('@') {
        Some((u, r)) => (format!("{u}@"), r),
        None => (String::new(), rest),
    };
    let sep = if rest.contains('?') { "&" } else { "?" };
    let query = match query {
        "" => String::new(),
        q => format!("{sep}{q}"),
    };
    Some(format!("{scheme}://{userinfo}127.0.0.1:1,{rest}{query}"))
}

async fn appends_and_reads(url: String) {
    // Reachable at all? (Skips, or fails under CI, like every PostgreSQL test.)
    let (probe, schema) = support::connect("hosts", |o| o).await;
    drop(probe);
    let store = PostgresStore::connect_with(PgStoreOptions::new(url.clone()).with_schema(&schema))
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let s = StreamId::new("account-1").unwrap();
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![EventData::json("Opened", &1).unwrap()],
        )
        .await
        .unwrap();
    let page = store.read_all(ReadAllOptions::forward()).await.unwrap();
    assert_eq!(page.events.len(), 1);
    drop(store);
    support::drop_schema(schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_refuses_is_skipped() {
    let Some(url) = with_dead_host_first("") else {
        return;
    };
    appends_and_reads(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_takes_the_first_host_that_accepts_writes() {
    let Some(url) = with_dead_host_first("target_session_attrs=read-write") else {
        return;
    };
    appends_and_reads(url).await;
}

#[tokio::test]
async fn when_no_host_answers_the_first_hosts_error_is_returned() {
    let e = PostgresStore::connect("postgres://postgres@127.0.0.1:1,127.0.0.1:2/test")
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ConnectError::ConnectionRefused {
            host: "127.0.0.1".to_owned(),
            port: 1
        }
    );
}

#[tokio::test]
async fn unsupported_session_attributes_are_invalid() {
    let e = PostgresStore::connect(
        "postgres://postgres@127.0.0.1:1,127.0.0.1:2/test?target_session_attrs=prefer-standby",
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ConnectError::InvalidUrl { .. }), "{e:?}");
}
