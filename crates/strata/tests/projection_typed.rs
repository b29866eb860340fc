//! Typed projections: one `ReadModel` written for SQLite and for PostgreSQL receives events
//! decoded and upcast, with their envelope; events of types the family does not know are
//! skipped; an event of a known type that cannot be decoded fails the projection at that
//! event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use strata::projection::{
    Envelope, HandlerError, PgOutput, PgProjections, Postgres, ProjectionError, Projections,
    ReadModel, Sql, Sqlite, SqliteReadModels, Typed,
};
use strata::{
    DomainEvent, EventData, EventStore, ExpectedVersion, Metadata, Position, StreamId, Upcasters,
};

/// Version 2 of `UserRegistered` splits version 1's `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum UserEvent {
    #[serde(rename_all = "camelCase")]
    UserRegistered {
        first_name: String,
        last_name: String,
    },
    EmailChanged {
        email: String,
    },
}

impl DomainEvent for UserEvent {
    fn upcasters() -> Upcasters {
        Upcasters::new().register("UserRegistered", 1, |v: Value| {
            let name = v["name"].as_str().ok_or("no name")?;
            let (first, last) = name.split_once(' ').unwrap_or((name, ""));
            Ok::<_, &str>(json!({ "firstName": first, "lastName": last }))
        })
    }
}

/// `users(user_id, first_name, last_name, email, position, version, recorded_at_us,
/// correlation_id)`: every field of the event and of its envelope, to compare.
struct Users;

/// One row as both stores return it.
type Row = (
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    Option<String>,
);

impl ReadModel<Sqlite> for Users {
    type Event = UserEvent;
    fn name(&self) -> &str {
        "users"
    }
    // The whole category, so `UserAudited` reaches the decoder (and is skipped there); the
    // PostgreSQL impl keeps the default filter (the family's event types).
    fn filter(&self) -> strata::Filter {
        strata::Filter::default().categories(["user"])
    }
    fn tables(&self) -> &[&'static str] {
        &["users"]
    }
    fn setup<'a>(&'a self, sql: &'a Sql<'a>) -> Result<(), HandlerError> {
        sql.execute_batch(
            "CREATE TABLE {users} (user_id TEXT PRIMARY KEY, first_name TEXT, last_name TEXT,
                 email TEXT, position INTEGER, version INTEGER, recorded_at_us INTEGER,
                 correlation_id TEXT)",
        )
    }
    fn apply<'a>(
        &'a self,
        sql: &'a Sql<'a>,
        e: &'a Envelope<'a, UserEvent>,
    ) -> Result<(), HandlerError> {
        let (position, version) = (e.position.0 as i64, e.stream_version as i64);
        let at = e.recorded_at.timestamp_micros();
        let correlation = e.metadata.correlation_id();
        match &e.event {
            UserEvent::UserRegistered {
                first_name,
                last_name,
            } => sql.execute(
                "INSERT INTO {users} VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, ?7)",
                rusqlite::params![
                    e.stream_key(),
                    first_name,
                    last_name,
                    position,
                    version,
                    at,
                    correlation
                ],
            )?,
            UserEvent::EmailChanged { email } => sql.execute(
                "UPDATE {users} SET email = ?2, position = ?3, version = ?4,
                 recorded_at_us = ?5, correlation_id = ?6 WHERE user_id = ?1",
                rusqlite::params![e.stream_key(), email, position, version, at, correlation],
            )?,
        };
        Ok(())
    }
}

impl ReadModel<Postgres> for Users {
    type Event = UserEvent;
    fn name(&self) -> &str {
        "users"
    }
    fn tables(&self) -> &[&'static str] {
        &[]
    }
    fn setup<'a>(&'a self, conn: &'a mut PgConnection) -> PgOutput<'a> {
        Box::pin(async move {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, first_name TEXT,
                     last_name TEXT, email TEXT, position BIGINT, version BIGINT,
                     recorded_at_us BIGINT, correlation_id TEXT)",
            )
            .execute(conn)
            .await?;
            Ok(())
        })
    }
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        e: &'a Envelope<'a, UserEvent>,
    ) -> PgOutput<'a> {
        Box::pin(async move {
            let (position, version) = (e.position.0 as i64, e.stream_version as i64);
            let at = e.recorded_at.timestamp_micros();
            let correlation = e.metadata.correlation_id();
            match &e.event {
                UserEvent::UserRegistered {
                    first_name,
                    last_name,
                } => {
                    sqlx::query("INSERT INTO users VALUES ($1, $2, $3, NULL, $4, $5, $6, $7)")
                        .bind(e.stream_key())
                        .bind(first_name)
                        .bind(last_name)
                        .bind(position)
                        .bind(version)
                        .bind(at)
                        .bind(correlation)
                        .execute(conn)
                        .await?
                }
                UserEvent::EmailChanged { email } => {
                    sqlx::query(
                        "UPDATE users SET email = $2, position = $3, version = $4,
                         recorded_at_us = $5, correlation_id = $6 WHERE user_id = $1",
                    )
                    .bind(e.stream_key())
                    .bind(email)
                    .bind(position)
                    .bind(version)
                    .bind(at)
                    .bind(correlation)
                    .execute(conn)
                    .await?
                }
            };
            Ok(())
        })
    }
}

fn user(n: u32) -> StreamId {
    StreamId::new(format!("user-{n}")).unwrap()
}

/// Appends the same history to `store`: users registered at schema version 1 (stored
/// `{name}`), one at version 2, e-mail changes with a correlation id, and an event of a type
/// `UserEvent` does not know in the same category. Returns what the read model must hold.
async fn seed(store: &impl EventStore) -> Vec<Row> {
    let v1 = |name: &str| EventData::json("UserRegistered", &json!({ "name": name })).unwrap();
    let mut expected = Vec::new();
    for (n, name) in [(1, "Ada Lovelace"), (2, "Alan Turing")] {
        let r = store
            .append(&user(n), ExpectedVersion::NoStream, vec![v1(name)])
            .await
            .unwrap();
        let stored = store
            .read_stream(&user(n), strata::ReadStreamOptions::forward())
            .await
            .unwrap();
        let (first, last) = name.split_once(' ').unwrap();
        expected.push((
            n.to_string(),
            first.to_owned(),
            last.to_owned(),
            None,
            r.positions[0].0 as i64,
            0,
            stored[0].recorded_at.timestamp_micros(),
            None,
        ));
    }
    // Version 2, stored as such.
    let v2 = EventData::json(
        "UserRegistered",
        &json!({ "firstName": "Grace", "lastName": "Hopper" }),
    )
    .unwrap()
    .with_metadata(strata::with_schema_version(Metadata::new(), 2));
    store
        .append(&user(3), ExpectedVersion::NoStream, vec![v2])
        .await
        .unwrap();
    // Types UserEvent does not know, one of them not even JSON: skipped.
    store
        .append(
            &user(3),
            ExpectedVersion::Exact(0),
            vec![EventData::json("UserAudited", &json!({ "by": "ops" })).unwrap()],
        )
        .await
        .unwrap();
    store
        .append(
            &user(5),
            ExpectedVersion::NoStream,
            vec![EventData::binary(
                "AvatarUploaded",
                "image/png",
                vec![0x89, b'P', b'N', b'G'],
            )],
        )
        .await
        .unwrap();
    let metadata = Metadata::new().with_correlation_id("req-7");
    let changed = store
        .append(
            &user(3),
            ExpectedVersion::Exact(1),
            vec![
                EventData::json("EmailChanged", &json!({ "email": "grace@navy.mil" }))
                    .unwrap()
                    .with_metadata(metadata),
            ],
        )
        .await
        .unwrap();
    let stored = store
        .read_stream(&user(3), strata::ReadStreamOptions::forward())
        .await
        .unwrap();
    expected.push((
        "3".to_owned(),
        "Grace".to_owned(),
        "Hopper".to_owned(),
        Some("grace@navy.mil".to_owned()),
        changed.positions[0].0 as i64,
        2,
        stored[2].recorded_at.timestamp_micros(),
        Some("req-7".to_owned()),
    ));
    expected
}

/// A payload of a known type that does not match its schema: the projection fails there.
async fn poison(store: &impl EventStore) -> Position {
    store
        .append(
            &user(4),
            ExpectedVersion::NoStream,
            vec![EventData::json("EmailChanged", &json!({ "mail": 42 })).unwrap()],
        )
        .await
        .unwrap()
        .positions[0]
}

fn failed_at(err: &ProjectionError) -> Option<Position> {
    match err {
        ProjectionError::Failed { position, .. } => *position,
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_read_model_on_sqlite_gets_upcast_events_with_their_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let store = strata_log::LogStore::open(dir.path().join("data")).unwrap();
    let models = SqliteReadModels::next_to(dir.path().join("data")).unwrap();
    let expected = seed(&store).await;
    let projections = Projections::new(Arc::new(store.clone()), models.clone());
    projections.spawn(Typed::new(Users)).await.unwrap();
    let head = store.head().await.unwrap().unwrap();
    projections
        .wait_for("users", head, Duration::from_secs(30))
        .await
        .unwrap();
    let conn = models.connect().unwrap();
    let mut stmt = conn
        .prepare("SELECT * FROM users ORDER BY user_id")
        .unwrap();
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, expected);

    let bad = poison(&store).await;
    let err = projections
        .wait_for("users", bad, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(failed_at(&err), Some(bad), "{err}");
    projections.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_read_model_on_postgres_holds_the_same_rows() {
    let Some(db) = support::pg::db("typed").await else {
        return;
    };
    let expected = seed(&db.store).await;
    let projections = PgProjections::new(Arc::new(db.store.clone()), db.models.clone());
    projections.spawn(Typed::new(Users)).await.unwrap();
    let head = db.store.head().await.unwrap().unwrap();
    projections
        .wait_for("users", head, Duration::from_secs(30))
        .await
        .unwrap();
    let rows: Vec<Row> = sqlx::query_as("SELECT * FROM users ORDER BY user_id")
        .fetch_all(db.models.pool())
        .await
        .unwrap();
    assert_eq!(rows, expected);

    let bad = poison(&db.store).await;
    let err = projections
        .wait_for("users", bad, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(failed_at(&err), Some(bad), "{err}");
    projections.shutdown().await;
    db.cleanup().await;
}

/// A SQLite read model that lists no tables is refused at registration: its rebuild would
/// replay every event into the serving tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_read_model_without_tables_is_refused() {
    struct NoTables;
    impl ReadModel<Sqlite> for NoTables {
        type Event = UserEvent;
        fn name(&self) -> &str {
            "no_tables"
        }
        fn tables(&self) -> &[&'static str] {
            &[]
        }
        fn setup<'a>(&'a self, sql: &'a Sql<'a>) -> Result<(), HandlerError> {
            sql.execute_batch("CREATE TABLE IF NOT EXISTS totals (n INTEGER)")
        }
        fn apply<'a>(
            &'a self,
            _: &'a Sql<'a>,
            _: &'a Envelope<'a, UserEvent>,
        ) -> Result<(), HandlerError> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = strata_log::LogStore::open(dir.path().join("data")).unwrap();
    let models = SqliteReadModels::next_to(dir.path().join("data")).unwrap();
    let projections = Projections::new(Arc::new(store), models);
    let err = projections.spawn(Typed::new(NoTables)).await.unwrap_err();
    assert!(
        matches!(&err, ProjectionError::Invalid { projection, .. } if projection == "no_tables"),
        "{err}"
    );
    projections.shutdown().await;
}
