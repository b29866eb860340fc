//! Crypto-shredding under faults and races: a stop at each step of a forget, a key loaded
//! while a forget destroys it, schema refreshes out of order, Strata's own streams attacked
//! through the store's calls, and data that tries to look sealed or forgotten.

mod hooked;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use strata_core::{
    AllPage, AppendError, AppendResult, CategorySummary, EventData, EventStore, ExpectedVersion,
    ListOptions, Page, Position, ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent,
    StreamId, StreamInfo, StreamSummary, SubscribeFrom, Subscription, SubscriptionTarget,
    Timestamp,
};
use strata_shred::{
    DirKeys, EncryptionSchema, KeyError, KeyStorage, Keyring, MasterKey, MemoryKeys, Shredded,
    SubjectSource, FORGOTTEN_STREAM, SCHEMAS_STREAM,
};
use tokio::sync::{watch, Notify};

fn master() -> MasterKey {
    MasterKey::from_bytes([42; 32])
}

/// `inner` wrapped, with keys in memory.
async fn over(inner: Arc<dyn EventStore>) -> Shredded {
    wrap(inner, Arc::new(MemoryKeys::new())).await
}

/// `inner` wrapped, with the keys `keys` holds.
async fn wrap(inner: Arc<dyn EventStore>, keys: Arc<dyn KeyStorage>) -> Shredded {
    let ring = Keyring::open(keys, master()).await.expect("ring");
    Shredded::open(inner, ring).await.expect("open")
}

fn schema(fields: &[&str]) -> EncryptionSchema {
    EncryptionSchema {
        event_type: "CustomerRegistered".into(),
        subject: SubjectSource::Pointer("/customerId".into()),
        fields: fields.iter().map(|s| s.to_string()).collect(),
    }
}

fn registration(customer: &str) -> EventData {
    EventData::json(
        "CustomerRegistered",
        &json!({"customerId": customer, "name": "Ada Secret", "email": "ada@secret.example"}),
    )
    .expect("json")
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).expect("sid")
}

fn key_path(dir: &std::path::Path, hex: &str) -> std::path::PathBuf {
    dir.join("subjects")
        .join(&hex[..2])
        .join(format!("{hex}.key"))
}

/// Holds a key load after it has read, once armed (a slow blocking pool, a slow database
/// round trip).
struct SlowLoad {
    armed: std::sync::atomic::AtomicBool,
    loaded: Notify,
    release: Notify,
}

#[async_trait]
impl hooked::Hooks for SlowLoad {
    async fn after_load(&self) {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.loaded.notify_one();
            self.release.notified().await;
        }
    }
}

/// An event store that can hold one read of the schema stream after it has read.
struct Gate {
    inner: strata_testkit::MemoryStore,
    armed: std::sync::atomic::AtomicBool,
    read: Notify,
    release: Notify,
}

#[async_trait]
impl EventStore for Gate {
    async fn append(
        &self,
        s: &StreamId,
        e: ExpectedVersion,
        ev: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        self.inner.append(s, e, ev).await
    }
    async fn read_stream(
        &self,
        s: &StreamId,
        o: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let r = self.inner.read_stream(s, o).await;
        if s.as_str() == SCHEMAS_STREAM
            && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.read.notify_one();
            self.release.notified().await;
        }
        r
    }
    async fn read_all(&self, o: ReadAllOptions) -> Result<AllPage, ReadError> {
        self.inner.read_all(o).await
    }
    async fn stream_info(&self, s: &StreamId) -> Result<StreamInfo, ReadError> {
        self.inner.stream_info(s).await
    }
    async fn list_streams(&self, o: ListOptions) -> Result<Page<StreamSummary>, ReadError> {
        self.inner.list_streams(o).await
    }
    async fn list_categories(&self, o: ListOptions) -> Result<Page<CategorySummary>, ReadError> {
        self.inner.list_categories(o).await
    }
    async fn position_at(&self, t: Timestamp) -> Result<Option<Position>, ReadError> {
        self.inner.position_at(t).await
    }
    async fn head(&self) -> Result<Option<Position>, ReadError> {
        self.inner.head().await
    }
    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }
    async fn subscribe(
        &self,
        t: SubscriptionTarget,
        f: SubscribeFrom,
    ) -> Result<Subscription, ReadError> {
        self.inner.subscribe(t, f).await
    }
}

/// A stop after the pending record was written and before the key was overwritten: the next
/// open destroys the key, then appends the event.
#[tokio::test]
async fn a_forget_stopped_before_the_key_was_destroyed_is_finished_at_open() {
    let (_dir, inner, keys_dir, r) = forget_recorded().await;
    let store = reopen(&inner, &keys_dir).await;
    let forgets = inner
        .read_stream(&sid(FORGOTTEN_STREAM), ReadStreamOptions::forward())
        .await
        .expect("forgets");
    assert_eq!(forgets.len(), 1);
    assert!(!keys_dir.join("pending").join(r.to_hex()).exists());
    let rec = std::fs::read(key_path(&keys_dir, &r.to_hex())).expect("record");
    assert_eq!(rec[8], 2, "the record says forgotten");
    let read = store
        .read_stream(&sid("customer-alice"), ReadStreamOptions::forward())
        .await
        .expect("read");
    assert_eq!(read[0].data_json().unwrap()["name"], Value::Null);
    // And in a later process too.
    drop(store);
    let read = reopen(&inner, &keys_dir)
        .await
        .read_stream(&sid("customer-alice"), ReadStreamOptions::forward())
        .await
        .expect("read");
    assert_eq!(read[0].data_json().unwrap()["name"], Value::Null);
}

async fn seeded(
    inner: &Arc<dyn EventStore>,
    keys_dir: &std::path::Path,
) -> strata_shred::SubjectRef {
    let ring = Keyring::open(DirKeys::open(keys_dir).expect("k").shared(), master())
        .await
        .expect("ring");
    let r = ring.subject_ref("alice");
    let store = Shredded::open(inner.clone(), ring).await.expect("open");
    store
        .register(schema(&["/name", "/email"]))
        .await
        .expect("reg");
    store
        .append(
            &sid("customer-alice"),
            ExpectedVersion::NoStream,
            vec![registration("alice")],
        )
        .await
        .expect("append");
    r
}

/// A store seeded with alice's registration (keys in a directory), and the first step of a
/// forget of her (its pending record) done, as a stop right after it leaves it: the
/// directory, the store, the keys' directory and alice's reference.
async fn forget_recorded() -> (
    tempfile::TempDir,
    Arc<dyn EventStore>,
    std::path::PathBuf,
    strata_shred::SubjectRef,
) {
    let dir = tempfile::tempdir().expect("dir");
    let inner: Arc<dyn EventStore> = Arc::new(strata_testkit::MemoryStore::new());
    let keys_dir = dir.path().join("keys");
    let r = seeded(&inner, &keys_dir).await;
    std::fs::write(keys_dir.join("pending").join(r.to_hex()), "alice").expect("marker");
    (dir, inner, keys_dir, r)
}

async fn reopen(inner: &Arc<dyn EventStore>, keys_dir: &std::path::Path) -> Shredded {
    wrap(inner.clone(), DirKeys::open(keys_dir).expect("k").shared()).await
}

/// A stop while the key's record was being overwritten (torn): the next open rewrites it
/// whole, so that later processes read the subject as forgotten, not as damage.
#[tokio::test]
async fn a_record_torn_by_a_forget_is_rewritten_at_open() {
    let (_dir, inner, keys_dir, r) = forget_recorded().await;
    let path = key_path(&keys_dir, &r.to_hex());
    let mut rec = std::fs::read(&path).expect("rec");
    rec[8] = 2;
    for b in &mut rec[9..64] {
        *b = 0;
    }
    std::fs::write(&path, &rec).expect("torn");
    drop(reopen(&inner, &keys_dir).await);
    let read = reopen(&inner, &keys_dir)
        .await
        .read_stream(&sid("customer-alice"), ReadStreamOptions::forward())
        .await
        .expect("read: forgotten, not damaged");
    assert_eq!(read[0].data_json().unwrap()["name"], Value::Null);
}

/// Strata's own streams refuse every lifecycle call, through the wrapper and on the store
/// under it: losing the schemas would have personal data written in clear.
#[tokio::test]
async fn the_schema_and_forgotten_streams_cannot_be_deleted_truncated_or_tombstoned() {
    let inner: Arc<dyn EventStore> = Arc::new(strata_testkit::MemoryStore::new());
    let keys: Arc<dyn KeyStorage> = Arc::new(MemoryKeys::new());
    let store = wrap(inner.clone(), keys.clone()).await;
    store
        .register(schema(&["/name", "/email"]))
        .await
        .expect("reg");
    store.forget("someone").await.expect("forget");
    for target in [&store as &dyn EventStore, inner.as_ref()] {
        for stream in [sid(SCHEMAS_STREAM), sid(FORGOTTEN_STREAM)] {
            let refused = |r: Result<AppendResult, AppendError>| matches!(r, Err(AppendError::InvalidInput(i)) if i.field == "stream_id");
            assert!(
                refused(target.delete_stream(&stream, ExpectedVersion::Any).await),
                "{stream}"
            );
            assert!(
                refused(target.tombstone_stream(&stream, ExpectedVersion::Any).await),
                "{stream}"
            );
            assert!(
                refused(target.truncate_stream(&stream, 1).await),
                "{stream}"
            );
            let meta = strata_core::StreamMetadata::from_json(br#"{"maxCount":1}"#).unwrap();
            assert!(
                refused(
                    target
                        .set_stream_metadata(&stream, ExpectedVersion::Any, meta)
                        .await
                ),
                "{stream}"
            );
            let note = EventData::json("Note", &json!({})).unwrap();
            assert!(
                refused(
                    target
                        .append(&stream, ExpectedVersion::Any, vec![note])
                        .await
                ),
                "{stream}"
            );
        }
    }
    // Everything still works, after a restart too.
    let store = wrap(inner.clone(), keys).await;
    assert_eq!(store.schemas(), vec![schema(&["/name", "/email"])]);
    store
        .append(
            &sid("customer-bob"),
            ExpectedVersion::NoStream,
            vec![registration("bob")],
        )
        .await
        .expect("append");
    let raw = inner
        .read_stream(&sid("customer-bob"), ReadStreamOptions::forward())
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&raw[0].data).contains("secret"));
    store.forget("other").await.expect("forget");
}

/// A read that loaded a key before a forget destroyed it does not keep it in the cache: the
/// subject reads as forgotten from then on, and nothing personal of theirs is accepted.
#[tokio::test(start_paused = true)]
async fn a_key_loaded_while_a_forget_destroys_it_is_not_kept() {
    let inner: Arc<dyn EventStore> = Arc::new(strata_testkit::MemoryStore::new());
    let slow = Arc::new(hooked::Hooked {
        inner: Arc::new(MemoryKeys::new()),
        hooks: SlowLoad {
            armed: false.into(),
            loaded: Notify::new(),
            release: Notify::new(),
        },
    });
    let seed = wrap(inner.clone(), slow.clone()).await;
    seed.register(schema(&["/name", "/email"])).await.unwrap();
    seed.append(
        &sid("customer-alice"),
        ExpectedVersion::NoStream,
        vec![registration("alice")],
    )
    .await
    .unwrap();
    drop(seed);
    let store = wrap(inner.clone(), slow.clone()).await;
    let alice = sid("customer-alice");
    slow.hooks
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let reader = {
        let store = store.clone();
        let alice = alice.clone();
        tokio::spawn(async move {
            store
                .read_stream(&alice, ReadStreamOptions::forward())
                .await
        })
    };
    slow.hooks.loaded.notified().await;
    store.forget("alice").await.expect("forget");
    tokio::time::advance(std::time::Duration::from_millis(300)).await;
    // A read that syncs (it reads the $subjectForgotten event and evicts alice) without
    // reading alice's events: the cache holds nothing of hers when the racing load ends.
    let _ = store
        .read_stream(&sid(FORGOTTEN_STREAM), ReadStreamOptions::forward())
        .await
        .unwrap();
    slow.hooks.release.notify_one();
    // The racing read itself answered with what it loaded before the forget.
    let _ = reader.await.unwrap().unwrap();
    let read = store
        .read_stream(&alice, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(read[0].data_json().unwrap()["name"], Value::Null);
    assert!(matches!(
        store
            .append(&alice, ExpectedVersion::Any, vec![registration("alice")])
            .await,
        Err(AppendError::InvalidInput(_))
    ));
}

/// Two refreshes of the schemas at once apply in version order: an older page read by one
/// never replaces what a newer one applied.
#[tokio::test(start_paused = true)]
async fn a_late_schema_refresh_never_brings_an_older_schema_back() {
    let gate = Arc::new(Gate {
        inner: strata_testkit::MemoryStore::new(),
        armed: false.into(),
        read: Notify::new(),
        release: Notify::new(),
    });
    let keys: Arc<dyn KeyStorage> = Arc::new(MemoryKeys::new());
    let inner: Arc<dyn EventStore> = gate.clone();
    let other = wrap(inner.clone(), keys.clone()).await;
    let store = wrap(inner.clone(), keys.clone()).await;
    let typed = |t: &str, f: &[&str]| EncryptionSchema {
        event_type: t.into(),
        ..schema(f)
    };
    store.register(typed("U", &["/x"])).await.unwrap();
    store
        .append(
            &sid("n-1"),
            ExpectedVersion::Any,
            vec![EventData::json("N", &json!({})).unwrap()],
        )
        .await
        .unwrap();
    let _ = store.read_all(ReadAllOptions::forward()).await.unwrap();
    other.refresh_schemas().await.unwrap();
    other.register(schema(&["/name"])).await.unwrap();
    gate.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let x = {
        let store = store.clone();
        let v = typed("V", &["/y"]);
        tokio::spawn(async move { store.register(v).await })
    };
    gate.read.notified().await;
    other.register(schema(&["/name", "/email"])).await.unwrap();
    store.refresh_schemas().await.unwrap();
    assert!(store.schemas().contains(&schema(&["/name", "/email"])));
    gate.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    gate.release.notify_one();
    gate.read.notified().await;
    assert!(
        store.schemas().contains(&schema(&["/name", "/email"])),
        "the newer schema stays in force"
    );
    store
        .append(
            &sid("customer-carol"),
            ExpectedVersion::NoStream,
            vec![registration("carol")],
        )
        .await
        .unwrap();
    gate.release.notify_one();
    x.await.unwrap().unwrap();
    let raw = gate
        .inner
        .read_stream(&sid("customer-carol"), ReadStreamOptions::forward())
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&raw[0].data).contains("ada@secret.example"));
}

/// A string value "$sealed" is data like any other (keys that decode to it are refused: see
/// `any_escaped_spelling_of_the_sealed_key_is_refused`).
#[tokio::test]
async fn a_string_value_that_reads_sealed_is_data() {
    let inner: Arc<dyn EventStore> = Arc::new(strata_testkit::MemoryStore::new());
    let store = over(inner).await;
    store.register(schema(&["/name"])).await.unwrap();
    let e = EventData::json("Note", &json!({"text": "$sealed"})).unwrap();
    store
        .append(&sid("note-1"), ExpectedVersion::Any, vec![e])
        .await
        .expect("a value");
}

/// The metadata key that marks forgotten fields is Strata's: an append cannot set it.
#[tokio::test]
async fn the_forgotten_mark_cannot_be_appended() {
    let store = over(Arc::new(strata_testkit::MemoryStore::new())).await;
    let mut e = EventData::json("Note", &json!({"a": null})).unwrap();
    e.metadata = e.metadata.with("$forgotten", json!(["/a"]));
    let r = store
        .append(&sid("note-9"), ExpectedVersion::Any, vec![e])
        .await;
    assert!(
        matches!(&r, Err(AppendError::InvalidInput(i)) if i.field == "events[0].metadata.$forgotten"),
        "{r:?}"
    );
}

/// A malformed schema event written under the wrapper (by a process without it) is skipped
/// and logged: it poisons nothing.
#[tokio::test(start_paused = true)]
async fn a_malformed_schema_event_is_skipped() {
    let inner: Arc<dyn EventStore> = Arc::new(strata_testkit::MemoryStore::new());
    let keys: Arc<dyn KeyStorage> = Arc::new(MemoryKeys::new());
    let store = wrap(inner.clone(), keys.clone()).await;
    store.register(schema(&["/name"])).await.unwrap();
    inner
        .append(
            &sid(SCHEMAS_STREAM),
            ExpectedVersion::Any,
            vec![EventData::json("$encryptionSchema", &json!({"nope": 1})).unwrap()],
        )
        .await
        .expect("the plain store takes it");
    // Past the sync interval (paused time): the next append reads the schema stream again.
    tokio::time::advance(std::time::Duration::from_millis(
        strata_shred::limits::SYNC_INTERVAL_MS + 1,
    ))
    .await;
    store
        .append(
            &sid("n-1"),
            ExpectedVersion::Any,
            vec![EventData::json("N", &json!({})).unwrap()],
        )
        .await
        .expect("appends go on");
    let reopened = wrap(inner.clone(), keys).await;
    assert_eq!(reopened.schemas(), vec![schema(&["/name"])]);
    // And a schema registered after it still takes effect.
    reopened
        .register(schema(&["/name", "/email"]))
        .await
        .unwrap();
    assert_eq!(reopened.schemas(), vec![schema(&["/name", "/email"])]);
}

/// Escaped pointers, array indexes and the empty member name seal and open in place.
#[tokio::test]
async fn escaped_and_array_pointers_round_trip() {
    let inner: Arc<dyn EventStore> = Arc::new(strata_testkit::MemoryStore::new());
    let store = over(inner.clone()).await;
    store
        .register(EncryptionSchema {
            event_type: "T".into(),
            subject: SubjectSource::MetadataKey("subject".into()),
            fields: vec![
                "/a~1b".into(),
                "/c~0d".into(),
                "/items/1/email".into(),
                "/".into(),
                "/~01".into(),
            ],
        })
        .await
        .unwrap();
    let data = json!({"a/b": "x1", "c~d": {"k": [1,2]}, "items": [{"email": "no"}, {"email": "secret"}], "": 5, "~1": "t"});
    let mut e = EventData::json("T", &data).unwrap();
    e.metadata = e.metadata.with("subject", json!("s-1"));
    store
        .append(&sid("t-1"), ExpectedVersion::Any, vec![e])
        .await
        .unwrap();
    let raw = inner
        .read_stream(&sid("t-1"), ReadStreamOptions::forward())
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&raw[0].data).contains("secret"));
    let read = store
        .read_stream(&sid("t-1"), ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(read[0].data_json().unwrap(), data);
    store.forget("s-1").await.unwrap();
    let read = store
        .read_stream(&sid("t-1"), ReadStreamOptions::forward())
        .await
        .unwrap();
    let forgotten = read[0].data_json().unwrap();
    assert_eq!(forgotten["items"][1]["email"], Value::Null);
    assert_eq!(forgotten["items"][0]["email"], "no");
    assert_eq!(forgotten[""], Value::Null);
    assert_eq!(
        read[0]
            .metadata
            .get("$forgotten")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

/// A forget retried after others replays its own event.
#[tokio::test]
async fn a_forget_retried_after_others_replays() {
    let dir = tempfile::tempdir().expect("dir");
    let log = strata_log::LogStore::open(dir.path().join("data")).expect("open");
    for inner in [
        Arc::new(strata_testkit::MemoryStore::new()) as Arc<dyn EventStore>,
        Arc::new(log.clone()),
    ] {
        let store = over(inner.clone()).await;
        let a = store.forget("alice").await.unwrap();
        store.forget("bob").await.unwrap();
        let again = store.forget("alice").await.unwrap();
        assert_eq!(a.position, again.position);
    }
    log.close().await.unwrap();
}

/// A member named twice on the way to the subject or a field is refused: readers take the last
/// occurrence, so sealing by the first would seal one subject's data under another's key.
#[tokio::test]
async fn a_member_named_twice_on_a_personal_path_is_refused() {
    let inner: Arc<dyn EventStore> = Arc::new(strata_testkit::MemoryStore::new());
    let store = over(inner.clone()).await;
    store.register(schema(&["/email"])).await.unwrap();
    store
        .register(EncryptionSchema {
            event_type: "Nested".into(),
            subject: SubjectSource::Pointer("/who/id".into()),
            fields: vec!["/email".into()],
        })
        .await
        .unwrap();
    for (event_type, raw, field) in [
        (
            "CustomerRegistered",
            r#"{"customerId":"alice","customerId":"bob","email":"b@x.org"}"#,
            "events[0].data/customerId",
        ),
        (
            "CustomerRegistered",
            r#"{"customerId":"bob","email":"a@x.org","email":"b@x.org"}"#,
            "events[0].data/email",
        ),
        (
            "Nested",
            r#"{"who":{"id":"alice"},"who":{"id":"bob"},"email":"b@x.org"}"#,
            "events[0].data/who/id",
        ),
    ] {
        assert_eq!(
            refused_field(&store, event_type, raw).await.as_deref(),
            Some(field),
            "{raw}"
        );
    }
    // Repeats elsewhere are the data's own business.
    let raw = r#"{"customerId":"bob","email":"b@x.org","note":1,"note":2}"#;
    assert_eq!(refused_field(&store, "CustomerRegistered", raw).await, None);
}

/// Appends one event of `event_type` whose data is `raw`: the field an `InvalidInput` refusal
/// named, or `None` when it was appended.
async fn refused_field(store: &Shredded, event_type: &str, raw: &str) -> Option<String> {
    let mut e = EventData::json(event_type, &json!({})).expect("json");
    e.data = raw.as_bytes().to_vec();
    match store
        .append(&sid("raw-1"), ExpectedVersion::Any, vec![e])
        .await
    {
        Ok(_) => None,
        Err(AppendError::InvalidInput(i)) => Some(i.field),
        Err(other) => panic!("{raw}: {other}"),
    }
}

/// A personal field nested as deep as the store allows cannot be sealed (sealing adds a
/// level): a clear error naming it, not a complaint about the JSON.
#[tokio::test]
async fn a_field_too_deep_to_seal_is_named() {
    let store = over(Arc::new(strata_testkit::MemoryStore::new())).await;
    let deep = format!("/customerId{}", "");
    let mut pointer = String::new();
    let mut data = json!("secret");
    for _ in 0..63 {
        data = json!({ "d": data });
        pointer.push_str("/d");
    }
    let doc = json!({"customerId": "c", "d": data});
    let pointer = format!("/d{pointer}");
    store
        .register(EncryptionSchema {
            event_type: "Deep".into(),
            subject: SubjectSource::Pointer(deep),
            fields: vec![pointer.clone()],
        })
        .await
        .unwrap();
    let r = store
        .append(
            &sid("deep-1"),
            ExpectedVersion::Any,
            vec![EventData::json("Deep", &doc).unwrap()],
        )
        .await;
    assert!(
        matches!(&r, Err(AppendError::InvalidInput(i)) if i.field == format!("events[0].data{pointer}") && i.reason.contains("too deep")),
        "{r:?}"
    );
}

/// An escape in any letter of the key, or a repeated member around it, does not hide it.
#[tokio::test]
async fn any_escaped_spelling_of_the_sealed_key_is_refused() {
    let store = over(Arc::new(strata_testkit::MemoryStore::new())).await;
    store.register(schema(&["/name"])).await.unwrap();
    for key in [r"$se\u0061led", r"$seale\u0064", r"\u0024\u0073ealed"] {
        for event_type in ["Note", "CustomerRegistered"] {
            let raw = format!(r#"{{"customerId":"c","name":"n","x":{{"{key}":"v1.abc"}}}}"#);
            assert_eq!(
                refused_field(&store, event_type, &raw).await.as_deref(),
                Some("events[0].data"),
                "{key} {event_type}"
            );
        }
    }
    // Nor does a repeat of the member that holds it (a parse into a map keeps the last).
    for event_type in ["Note", "CustomerRegistered"] {
        let raw = r#"{"customerId":"c","name":"n","x":{"$sealed":"v1.00000000000000000000000000000000.AAAA"},"x":0}"#;
        assert_eq!(
            refused_field(&store, event_type, raw).await.as_deref(),
            Some("events[0].data"),
            "{event_type}"
        );
    }
}

/// Data written before sealing began (through the bare store) that looks like a sealed value
/// but is not Strata's shape reads as it is, never as damage.
#[tokio::test]
async fn a_lookalike_written_without_the_wrapper_reads_as_data() {
    let inner: Arc<dyn EventStore> = Arc::new(strata_testkit::MemoryStore::new());
    let e = EventData::json("Note", &json!({"x": {"$sealed": "hello"}})).unwrap();
    inner
        .append(&sid("old-1"), ExpectedVersion::Any, vec![e.clone()])
        .await
        .unwrap();
    let store = over(inner).await;
    let read = store
        .read_stream(&sid("old-1"), ReadStreamOptions::forward())
        .await
        .expect("reads");
    assert_eq!(read[0].data, e.data);
}

/// A process without the master key refuses the events a schema names, as soon as it sees the
/// schema another process registered; passes everything else; and reads sealed values as
/// they are stored.
#[tokio::test(start_paused = true)]
async fn a_keyless_process_refuses_what_a_later_schema_names() {
    let inner: Arc<dyn EventStore> = Arc::new(strata_testkit::MemoryStore::new());
    let keys: Arc<dyn KeyStorage> = Arc::new(MemoryKeys::new());
    let keyless = Shredded::keyless(inner.clone()).await.expect("keyless");
    let keyed = wrap(inner.clone(), keys).await;
    keyless
        .append(
            &sid("customer-1"),
            ExpectedVersion::Any,
            vec![registration("alice")],
        )
        .await
        .expect("no schema yet: plain");
    keyed.register(schema(&["/name", "/email"])).await.unwrap();
    tokio::time::advance(std::time::Duration::from_millis(300)).await;
    let r = keyless
        .append(
            &sid("customer-2"),
            ExpectedVersion::Any,
            vec![registration("bob")],
        )
        .await;
    assert!(
        matches!(&r, Err(AppendError::InvalidInput(i)) if i.field == "events[0].event_type" && i.reason.contains("no master key")),
        "{r:?}"
    );
    assert!(!inner.stream_info(&sid("customer-2")).await.unwrap().exists);
    keyless
        .append(
            &sid("note-1"),
            ExpectedVersion::Any,
            vec![EventData::json("Note", &json!({})).unwrap()],
        )
        .await
        .expect("other types pass");
    keyed
        .append(
            &sid("customer-3"),
            ExpectedVersion::Any,
            vec![registration("carol")],
        )
        .await
        .unwrap();
    let read = keyless
        .read_stream(&sid("customer-3"), ReadStreamOptions::forward())
        .await
        .unwrap();
    assert!(
        read[0].data_json().unwrap()["name"]["$sealed"].is_string(),
        "read as stored"
    );
    assert!(matches!(
        keyless.forget("carol").await,
        Err(strata_shred::ShredError::Key(KeyError::NoMasterKey))
    ));
    assert!(matches!(
        keyless.register(schema(&["/name"])).await,
        Err(strata_shred::ShredError::Key(KeyError::NoMasterKey))
    ));
}
