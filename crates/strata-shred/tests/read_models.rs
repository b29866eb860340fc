//! A read model built by Strata's projections forgets too: it copies a customer's email from
//! an event, deletes the row on `$subjectForgotten`, and afterwards its database files hold
//! nothing of the email (the row's bytes overwritten, the write-ahead log truncated).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use strata::projection::{HandlerError, Projection, Projections, Sql, SqliteReadModels};
use strata_core::{EventData, EventStore, ExpectedVersion, Filter, RecordedEvent, StreamId};
use strata_shred::{
    EncryptionSchema, Keyring, MasterKey, MemoryKeys, Shredded, SubjectSource, FORGOTTEN_EVENT,
};
use strata_testkit::harness::files_holding;

const SENTINEL: &str = "sentinel-readmodel-73c1@example.org";

/// Customers' emails by id; forgets a customer on `$subjectForgotten`.
struct Emails;

impl Projection for Emails {
    fn name(&self) -> &str {
        "customer_emails"
    }
    fn filter(&self) -> Filter {
        Filter::default().categories(["customer", "strata"])
    }
    fn tables(&self) -> &[&'static str] {
        &["customer_emails"]
    }
    fn setup(&self, sql: &Sql<'_>) -> Result<(), HandlerError> {
        sql.execute_batch(
            "CREATE TABLE {customer_emails} (customer_id TEXT PRIMARY KEY, email TEXT)",
        )
    }
    fn apply(&self, sql: &Sql<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
        let data = event.data_json().unwrap_or_default();
        match event.event_type.as_str() {
            "CustomerRegistered" => {
                sql.execute(
                    "INSERT OR REPLACE INTO {customer_emails} VALUES (?1, ?2)",
                    rusqlite::params![data["customerId"].as_str(), data["email"].as_str()],
                )?;
            }
            t if t == FORGOTTEN_EVENT => {
                sql.execute(
                    "DELETE FROM {customer_emails} WHERE customer_id = ?1",
                    rusqlite::params![data["subject"].as_str()],
                )?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_sqlite_read_model_forgets_and_keeps_no_byte_of_it() {
    let dir = tempfile::tempdir().expect("dir");
    let inner = Arc::new(strata_testkit::MemoryStore::new());
    let keys = Keyring::open(Arc::new(MemoryKeys::new()), MasterKey::from_bytes([3; 32]))
        .await
        .expect("ring");
    let store = Shredded::open(inner, keys).await.expect("open");
    store
        .register(EncryptionSchema {
            event_type: "CustomerRegistered".into(),
            subject: SubjectSource::Pointer("/customerId".into()),
            fields: vec!["/email".into()],
        })
        .await
        .expect("schema");
    let models = SqliteReadModels::open(dir.path().join("read-models.db")).expect("models");
    let projections = Projections::new(Arc::new(store.clone()), models.clone());
    projections.spawn(Emails).await.expect("spawn");

    // Many customers, so that the forgotten row shares its page with others that stay.
    let mut last = None;
    for n in 0..50 {
        let email = if n == 7 {
            SENTINEL.to_owned()
        } else {
            format!("other-{n}@example.org")
        };
        let e = EventData::json(
            "CustomerRegistered",
            &json!({"customerId": format!("c-{n}"), "email": email}),
        )
        .expect("json");
        let r = store
            .append(
                &StreamId::new(format!("customer-{n}")).expect("id"),
                ExpectedVersion::NoStream,
                vec![e],
            )
            .await
            .expect("append");
        last = Some(r.positions[0]);
    }
    let wait = Duration::from_secs(30);
    projections
        .wait_for("customer_emails", last.expect("appended"), wait)
        .await
        .expect("caught up");
    let email_of = |id: &str| {
        models
            .connect()
            .expect("connect")
            .query_row(
                "SELECT email FROM customer_emails WHERE customer_id = ?1",
                [id],
                |r| r.get::<_, String>(0),
            )
            .ok()
    };
    assert_eq!(email_of("c-7").as_deref(), Some(SENTINEL));
    models.truncate_wal().expect("checkpoint");
    assert!(
        !files_holding(dir.path(), SENTINEL.as_bytes()).is_empty(),
        "the read model holds the email before the forget: the search can fail"
    );

    let forgot = store.forget("c-7").await.expect("forget");
    projections
        .wait_for("customer_emails", forgot.position, wait)
        .await
        .expect("caught up");
    assert_eq!(email_of("c-7"), None);
    assert_eq!(email_of("c-8").as_deref(), Some("other-8@example.org"));
    projections.shutdown().await;
    models.truncate_wal().expect("checkpoint");
    assert_eq!(
        files_holding(dir.path(), SENTINEL.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
}
