//! Crypto-shredding on every backend: the memory store, the embedded store and PostgreSQL
//! (each with its own key storage), through one suite; then what the embedded store leaves on
//! disk, byte by byte.

#[path = "../../strata-postgres/tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use serde_json::{json, Value};
use strata_core::{
    AppendError, EventData, EventStore, ExpectedVersion, ReadAllOptions, ReadStreamOptions,
    StreamId, SubscribeFrom, SubscriptionTarget,
};
use strata_shred::{
    DirKeys, EncryptionSchema, ForgetOutcome, KeyStorage, Keyring, MasterKey, MemoryKeys,
    PendingForget, PgKeys, Shredded, SubjectSource, FORGOTTEN_STREAM,
};
use strata_testkit::harness::files_holding;

const SENTINEL_NAME: &str = "Sentinel-Name-7f3a9c";
const SENTINEL_EMAIL: &str = "sentinel-mail-41b2@example.org";

fn master() -> MasterKey {
    MasterKey::from_bytes([42; 32])
}

fn registered() -> EncryptionSchema {
    EncryptionSchema {
        event_type: "CustomerRegistered".into(),
        subject: SubjectSource::Pointer("/customerId".into()),
        fields: vec!["/name".into(), "/contact/email".into()],
    }
}

fn registration(customer: &str, n: usize) -> EventData {
    EventData::json(
        "CustomerRegistered",
        &json!({
            "customerId": customer,
            "name": format!("{SENTINEL_NAME}-{customer}-{n}"),
            "contact": {"email": format!("{n}-{SENTINEL_EMAIL}"), "optIn": true},
            "tier": n,
        }),
    )
    .expect("json")
}

fn deposit(customer: &str, amount: u64) -> EventData {
    EventData::json(
        "Deposited",
        &json!({"customerId": customer, "amount": amount}),
    )
    .expect("json")
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).expect("stream id")
}

/// Whether any event the store holds, as stored, shows a sentinel.
async fn stored_sentinels(inner: &dyn EventStore) -> usize {
    let page = inner
        .read_all(ReadAllOptions::forward())
        .await
        .expect("read");
    page.events
        .iter()
        .filter(|e| {
            let text = String::from_utf8_lossy(&e.data);
            text.contains("Sentinel-Name") || text.contains("sentinel-mail")
        })
        .count()
}

/// The suite: `inner` is an empty store, `keys` an empty key storage.
async fn suite(inner: Arc<dyn EventStore>, keys: Arc<dyn KeyStorage>) {
    let store = Shredded::open(
        inner.clone(),
        Keyring::open(keys.clone(), master()).await.expect("ring"),
    )
    .await
    .expect("open");
    store.register(registered()).await.expect("register");
    assert_eq!(store.schemas(), vec![registered()]);

    // Sealed on the way in, opened on the way out, byte for byte as a JSON value.
    let alice = sid("customer-alice");
    let bob = sid("customer-bob");
    let first = registration("alice", 1).with_id(uuid::Uuid::new_v4());
    store
        .append(
            &alice,
            ExpectedVersion::NoStream,
            vec![first.clone(), deposit("alice", 5)],
        )
        .await
        .expect("append");
    store
        .append(
            &bob,
            ExpectedVersion::NoStream,
            vec![registration("bob", 2), deposit("bob", 7)],
        )
        .await
        .expect("append");
    assert_eq!(
        stored_sentinels(inner.as_ref()).await,
        0,
        "no plaintext is stored"
    );
    let read = store
        .read_stream(&alice, ReadStreamOptions::forward())
        .await
        .expect("read");
    let sent: Value = serde_json::from_slice(&first.data).expect("json");
    assert_eq!(read[0].data_json(), Some(sent.clone()));
    assert_eq!(read[0].data, first.data, "byte for byte");
    assert_eq!(read[0].event_id, first.event_id.expect("id"));
    assert_eq!(read[0].metadata.get("$forgotten"), None);

    // The document's own spacing and member order are kept around sealed values.
    let mut spaced = registration("alice", 2);
    spaced.data = format!(
        "{{ \"tier\" : 2 ,\n  \"contact\":{{\"optIn\":false, \"email\" : \"x-{SENTINEL_EMAIL}\" }} , \"name\": [\"{SENTINEL_NAME}\", 1] , \"customerId\":\"alice\" }}"
    )
    .into_bytes();
    let spaced_stream = sid("customer-alice-spaced");
    store
        .append(
            &spaced_stream,
            ExpectedVersion::NoStream,
            vec![spaced.clone()],
        )
        .await
        .expect("append");
    let back = store
        .read_stream(&spaced_stream, ReadStreamOptions::forward())
        .await
        .expect("read");
    assert_eq!(
        String::from_utf8_lossy(&back[0].data),
        String::from_utf8_lossy(&spaced.data)
    );
    assert_eq!(stored_sentinels(inner.as_ref()).await, 0);

    // An idempotent retry stays one: sealing is deterministic for the same event id.
    let again = store
        .append(
            &alice,
            ExpectedVersion::NoStream,
            vec![first.clone(), deposit("alice", 5).with_id(read[1].event_id)],
        )
        .await
        .expect("retry");
    assert!(again.replayed);

    // A schema that does not match the event: a typed error naming the field, nothing written.
    let refused = |data: serde_json::Value| {
        let store = store.clone();
        async move {
            let event = EventData::json("CustomerRegistered", &data).expect("json");
            match store
                .append(
                    &sid("customer-carol"),
                    ExpectedVersion::NoStream,
                    vec![event],
                )
                .await
            {
                Err(AppendError::InvalidInput(i)) => i.field,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(
        refused(json!({"customerId": "carol", "name": "x"})).await,
        "events[0].data/contact/email"
    );
    assert_eq!(
        refused(json!({"name": "x", "contact": {"email": "y"}})).await,
        "events[0].data/customerId"
    );
    assert!(
        !inner
            .stream_info(&sid("customer-carol"))
            .await
            .expect("info")
            .exists
    );
    // Data that looks sealed is refused, with or without a schema.
    let forged = EventData::json("Note", &json!({"x": {"$sealed": "v1.00.AA"}})).expect("json");
    assert!(matches!(
        store.append(&sid("note-1"), ExpectedVersion::Any, vec![forged]).await,
        Err(AppendError::InvalidInput(i)) if i.field == "events[0].data"
    ));
    // Strata's own streams are not written through appends.
    assert!(matches!(
        store.append(&sid(FORGOTTEN_STREAM), ExpectedVersion::Any, vec![deposit("x", 1)]).await,
        Err(AppendError::InvalidInput(i)) if i.field == "stream_id"
    ));

    // A subscription from the start, before the forget: plaintext.
    let mut sub = store
        .subscribe(
            SubscriptionTarget::Stream(alice.clone()),
            SubscribeFrom::Start,
        )
        .await
        .expect("subscribe");
    let delivered = sub.next().await.expect("event");
    assert_eq!(delivered.data_json(), Some(sent));

    // Forget alice: her fields read as null, flagged; her deposits and bob are untouched.
    let report = store.forget("alice").await.expect("forget");
    assert_eq!(report.outcome, ForgetOutcome::Forgotten);
    let read = store
        .read_stream(&alice, ReadStreamOptions::forward())
        .await
        .expect("read");
    let data = read[0].data_json().expect("json");
    assert_eq!(data["name"], Value::Null);
    assert_eq!(data["contact"]["email"], Value::Null);
    assert_eq!(data["contact"]["optIn"], json!(true));
    assert_eq!(data["customerId"], json!("alice"));
    assert_eq!(
        read[0].metadata.get("$forgotten"),
        Some(&json!(["/contact/email", "/name"]))
    );
    assert_eq!(read[1].data_json().expect("json")["amount"], json!(5));
    let bobs = store
        .read_stream(&bob, ReadStreamOptions::forward())
        .await
        .expect("read");
    assert!(bobs[0].data_json().expect("json")["name"]
        .as_str()
        .expect("name")
        .starts_with(SENTINEL_NAME));
    // $all too.
    let all = store
        .read_all(ReadAllOptions::forward())
        .await
        .expect("read");
    let forgotten_event = all
        .events
        .iter()
        .find(|e| e.event_type == "$subjectForgotten")
        .expect("the $subjectForgotten event");
    assert_eq!(forgotten_event.stream_id.as_str(), FORGOTTEN_STREAM);
    assert_eq!(
        forgotten_event.data_json().expect("json")["subject"],
        json!("alice")
    );
    assert_eq!(forgotten_event.position, report.position);
    assert_eq!(
        all.events
            .iter()
            .filter(|e| e.metadata.get("$forgotten").is_some())
            .count(),
        2,
        "alice's two registrations"
    );
    // A subscription from the start, after it: placeholders.
    let mut sub = store
        .subscribe(
            SubscriptionTarget::Stream(alice.clone()),
            SubscribeFrom::Start,
        )
        .await
        .expect("subscribe");
    let delivered = sub.next().await.expect("event");
    assert_eq!(delivered.data_json().expect("json")["name"], Value::Null);

    // Forgetting again succeeds and says so, with the same event.
    let twice = store.forget("alice").await.expect("forget");
    assert_eq!(twice.outcome, ForgetOutcome::AlreadyForgotten);
    assert_eq!(twice.position, report.position);
    // Nothing personal of a forgotten subject is stored again.
    assert!(matches!(
        store.append(&alice, ExpectedVersion::Any, vec![registration("alice", 9)]).await,
        Err(AppendError::InvalidInput(i)) if i.field == "events[0]"
    ));
    assert_eq!(stored_sentinels(inner.as_ref()).await, 0);

    // A forget interrupted after the key went and before its event: finished on open.
    let dave_ref = {
        let ring = Keyring::open(keys.clone(), master()).await.expect("ring");
        let reopened = Shredded::open(inner.clone(), ring).await.expect("open");
        reopened
            .append(
                &sid("customer-dave"),
                ExpectedVersion::NoStream,
                vec![registration("dave", 4)],
            )
            .await
            .expect("append");
        let r = Keyring::open(keys.clone(), master())
            .await
            .expect("ring")
            .subject_ref("dave");
        keys.forget(&PendingForget {
            subject_ref: r,
            subject: "dave".into(),
        })
        .await
        .expect("destroy the key only");
        r
    };
    let events_before = inner
        .read_stream(&sid(FORGOTTEN_STREAM), ReadStreamOptions::forward())
        .await
        .expect("read")
        .len();
    let reopened = Shredded::open(
        inner.clone(),
        Keyring::open(keys.clone(), master()).await.expect("ring"),
    )
    .await
    .expect("open");
    let forgets = inner
        .read_stream(&sid(FORGOTTEN_STREAM), ReadStreamOptions::forward())
        .await
        .expect("read");
    assert_eq!(
        forgets.len(),
        events_before + 1,
        "the pending forget's event is appended"
    );
    assert_eq!(
        forgets.last().expect("event").data_json().expect("json")["subjectRef"],
        json!(dave_ref.to_hex())
    );
    assert!(keys.pending().await.expect("pending").is_empty());
    let daves = reopened
        .read_stream(&sid("customer-dave"), ReadStreamOptions::forward())
        .await
        .expect("read");
    assert_eq!(daves[0].data_json().expect("json")["name"], Value::Null);
    // The schemas are read back from the store.
    assert_eq!(reopened.schemas(), vec![registered()]);

    // A wrong master key is refused before anything is read or written.
    assert!(matches!(
        Keyring::open(keys.clone(), MasterKey::from_bytes([1; 32])).await,
        Err(strata_shred::KeyError::WrongMasterKey(_))
    ));
}

#[tokio::test]
async fn the_memory_store() {
    suite(
        Arc::new(strata_testkit::MemoryStore::new()),
        Arc::new(MemoryKeys::new()),
    )
    .await;
}

#[tokio::test]
async fn the_embedded_store() {
    let dir = tempfile::tempdir().expect("dir");
    let inner = strata_log::LogStore::open(dir.path().join("data")).expect("open");
    let keys = DirKeys::open(dir.path().join("data").join("keys"))
        .expect("keys")
        .shared();
    suite(Arc::new(inner.clone()), keys).await;
    inner.close().await.expect("close");
}

#[tokio::test]
async fn postgresql() {
    let (store, schema) = support::connect("shred", |o| o).await;
    let keys = PgKeys::open(store.pool().clone(), store.schema())
        .await
        .expect("keys");
    suite(Arc::new(store), Arc::new(keys)).await;
    support::drop_schema(schema).await;
}

/// Registers the schema (or not), then appends `events` registrations of subject `erin`, each
/// to its own stream.
async fn fill_erin(store: &Shredded, with_schema: bool, events: usize) {
    if with_schema {
        store.register(registered()).await.expect("register");
    }
    for n in 0..events {
        store
            .append(
                &sid(&format!("customer-{n}")),
                ExpectedVersion::Any,
                vec![registration("erin", n)],
            )
            .await
            .expect("append");
    }
}

/// Fills an embedded store through the wrapper, with or without the schema, forgets the
/// subject, closes it, and returns the files that still hold a sentinel.
async fn embedded_files_with_sentinels(with_schema: bool) -> Vec<std::path::PathBuf> {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let inner = strata_log::LogStore::open(&data).expect("open");
    let keys = DirKeys::open(data.join("keys")).expect("keys").shared();
    let store = Shredded::open(
        Arc::new(inner.clone()),
        Keyring::open(keys, master()).await.expect("ring"),
    )
    .await
    .expect("open");
    fill_erin(&store, with_schema, 50).await;
    inner.seal_open_segment().await.expect("seal");
    store.forget("erin").await.expect("forget");
    // The archive copies the sealed segments as they are.
    let archive = dir.path().join("archive");
    strata_archive::Archive::open(archive.to_str().expect("utf-8"))
        .expect("archive")
        .archive_store(&inner, &|_| {})
        .await
        .expect("archived");
    inner.close().await.expect("close");
    let mut hits = Vec::new();
    for root in [&data, &archive] {
        hits.extend(files_holding(root, SENTINEL_NAME.as_bytes()));
        hits.extend(files_holding(root, SENTINEL_EMAIL.as_bytes()));
    }
    hits
}

/// After a forget, no byte the embedded store wrote (segments, index files, keys) nor its
/// archive holds the sentinels; without the schema the same search finds them, so it can fail.
#[tokio::test]
async fn nothing_readable_remains_in_the_embedded_data_directory() {
    assert_eq!(
        embedded_files_with_sentinels(true).await,
        Vec::<std::path::PathBuf>::new()
    );
    assert!(
        !embedded_files_with_sentinels(false).await.is_empty(),
        "the control finds plaintext"
    );
}

/// Two processes over one backend (two wrappers, each with its own key cache): what one
/// registers or forgets takes effect in the other within the sync interval.
#[tokio::test(start_paused = true)]
async fn another_process_sees_schemas_and_forgets_within_the_sync_interval() {
    let inner: Arc<dyn EventStore> = Arc::new(strata_testkit::MemoryStore::new());
    let keys: Arc<dyn KeyStorage> = Arc::new(MemoryKeys::new());
    let open = || async {
        Shredded::open(
            inner.clone(),
            Keyring::open(keys.clone(), master()).await.expect("ring"),
        )
        .await
        .expect("open")
    };
    let (a, b) = (open().await, open().await);
    let interval = std::time::Duration::from_millis(strata_shred::limits::SYNC_INTERVAL_MS + 1);
    a.register(registered()).await.expect("register");
    tokio::time::advance(interval).await;
    // B seals by A's schema.
    let frank = sid("customer-frank");
    b.append(
        &frank,
        ExpectedVersion::NoStream,
        vec![registration("frank", 1)],
    )
    .await
    .expect("append");
    assert_eq!(
        stored_sentinels(inner.as_ref()).await,
        0,
        "B sealed by the schema A registered"
    );
    // B reads (its cache now holds frank's key); A forgets frank.
    let name = |events: Vec<strata_core::RecordedEvent>| {
        events[0].data_json().expect("json")["name"].clone()
    };
    assert!(name(
        b.read_stream(&frank, ReadStreamOptions::forward())
            .await
            .expect("read")
    )
    .is_string());
    a.forget("frank").await.expect("forget");
    tokio::time::advance(interval).await;
    assert_eq!(
        name(
            b.read_stream(&frank, ReadStreamOptions::forward())
                .await
                .expect("read")
        ),
        Value::Null
    );
}

/// Fills a PostgreSQL store through the wrapper, with or without the schema, forgets the
/// subject, and returns whether a `pg_dump` of its schema shows a sentinel.
async fn pg_dump_shows_sentinels(with_schema: bool) -> bool {
    let (pg, schema) = support::connect("shreddump", |o| o).await;
    let keys = PgKeys::open(pg.pool().clone(), pg.schema())
        .await
        .expect("keys");
    let store = Shredded::open(
        Arc::new(pg.clone()),
        Keyring::open(Arc::new(keys), master()).await.expect("ring"),
    )
    .await
    .expect("open");
    fill_erin(&store, with_schema, 20).await;
    store.forget("erin").await.expect("forget");
    let out = std::process::Command::new("pg_dump")
        .args([
            "--dbname",
            &support::database_url(),
            "--schema",
            &schema,
            "--data-only",
        ])
        .output()
        .expect("pg_dump runs (it is installed with PostgreSQL's client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    support::drop_schema(schema).await;
    let dump = String::from_utf8_lossy(&out.stdout);
    dump.contains(SENTINEL_NAME) || dump.contains(SENTINEL_EMAIL)
}

/// After a forget, a `pg_dump` of the store's schema holds no sentinel; without the schema the
/// same search finds them.
#[tokio::test]
async fn nothing_readable_remains_in_a_pg_dump() {
    assert!(!pg_dump_shows_sentinels(true).await);
    assert!(
        pg_dump_shows_sentinels(false).await,
        "the control finds plaintext"
    );
}
