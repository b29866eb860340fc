//! Crypto-shredding on every backend: the memory store, the embedded store and PostgreSQL
//! (each with its own key storage), through one suite; then what the embedded store leaves on
//! disk, byte by byte.

#[path = "../../strata-postgres/tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use strata::{Aggregate, DomainEvent, Repository};
use strata_core::{
    AppendError, EventData, EventStore, ExpectedVersion, ReadAllOptions, ReadStreamOptions,
    Snapshot, SnapshotError, SnapshotStore, StreamId, SubscribeFrom, SubscriptionTarget,
};
use strata_shred::{
    DirKeys, EncryptionSchema, ForgetOutcome, KeyStorage, Keyring, MasterKey, MemoryKeys,
    PendingForget, PersonalData, PgKeys, ShredError, Shredded, SubjectSource, FORGOTTEN_STREAM,
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

/// The events of a member, as a Rust application writes them: `CustomerRegistered` as
/// [`registration`] writes it, its personal fields optional (a forgotten subject's read as
/// `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
enum MemberEvent {
    CustomerRegistered {
        customer_id: String,
        name: Option<String>,
        contact: Contact,
        tier: u64,
    },
    Deposited {
        customer_id: String,
        amount: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Contact {
    email: Option<String>,
    opt_in: bool,
}

impl DomainEvent for MemberEvent {}

impl PersonalData for MemberEvent {
    fn personal_data() -> Vec<EncryptionSchema> {
        vec![EncryptionSchema::new(
            "CustomerRegistered",
            SubjectSource::Pointer("/customerId".into()),
        )
        .field("/name")
        .field("/contact/email")]
    }
}

/// A member's account: its state holds the member's name, so its snapshots hold personal data.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    id: String,
    name: Option<String>,
    balance: u64,
}

#[derive(Debug, Clone)]
enum MemberCommand {
    Register { id: String, n: usize },
    Deposit(u64),
}

impl Aggregate for Member {
    type Event = MemberEvent;
    type Command = MemberCommand;
    type Error = std::convert::Infallible;
    const CATEGORY: &'static str = "member";

    fn handle(&self, command: MemberCommand) -> Result<Vec<MemberEvent>, Self::Error> {
        let event = match command {
            MemberCommand::Register { id, n } => {
                let e = registration(&id, n);
                MemberEvent::decode_json(&e.event_type, &e.data).expect("decodes")
            }
            MemberCommand::Deposit(amount) => MemberEvent::Deposited {
                customer_id: self.id.clone(),
                amount,
            },
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &MemberEvent) {
        match event {
            MemberEvent::CustomerRegistered {
                customer_id, name, ..
            } => {
                self.id = customer_id.clone();
                self.name = name.clone();
            }
            MemberEvent::Deposited { amount, .. } => self.balance += amount,
        }
    }
}

/// Snapshots through the wrapper: sealed under the member's key, opened on load, unreadable
/// once the member is forgotten (the load replays, with the name `null`).
async fn snapshot_suite(store: &Shredded, snapshots: Arc<dyn SnapshotStore>) {
    let store = store.clone().with_snapshots(snapshots.clone());
    // The suite registered the same schema by hand: nothing is written again.
    assert_eq!(
        store
            .register_personal_data::<MemberEvent>()
            .await
            .expect("registered"),
        0
    );
    let members = Repository::<Member, _>::new(store.clone()).with_snapshot_interval(2);
    let command = |c| members.execute("gina", c);
    command(MemberCommand::Register {
        id: "gina".into(),
        n: 9,
    })
    .await
    .expect("registered");
    let mut snapshot_at = None;
    for _ in 0..3 {
        let done = command(MemberCommand::Deposit(10)).await.expect("deposit");
        snapshot_at = done.snapshot_version.or(snapshot_at);
    }
    assert_eq!(snapshot_at, Some(3), "a snapshot every 2 events");
    let stream = sid("member-gina");
    let raw = snapshots
        .load_snapshot(&stream, 1, None)
        .await
        .expect("load")
        .expect("a snapshot");
    assert!(
        !String::from_utf8_lossy(&raw.data).contains(SENTINEL_NAME),
        "the snapshot is sealed"
    );
    let cold = || {
        let repository = Repository::<Member, _>::new(store.clone());
        async move { repository.load("gina").await }
    };
    let loaded = cold().await.expect("load");
    assert_eq!(loaded.snapshot_version, Some(3));
    assert_eq!(
        loaded.name.as_deref(),
        Some(&*format!("{SENTINEL_NAME}-gina-9"))
    );
    assert_eq!(loaded.balance, 30);
    // The raw snapshot cannot be moved to another place.
    let moved = Snapshot {
        stream_id: sid("member-hal"),
        ..raw.clone()
    };
    snapshots.save_snapshot(moved).await.expect("saved raw");
    assert!(matches!(
        store.load_snapshot(&sid("member-hal"), 1, None).await,
        Err(SnapshotError::Storage(_))
    ));
    // Data that looks sealed is not taken from an application.
    let forged = Snapshot {
        stream_id: sid("member-ivy"),
        data: raw.data.clone(),
        ..raw.clone()
    };
    assert!(matches!(
        store.save_snapshot(forged).await,
        Err(SnapshotError::InvalidInput(_))
    ));

    store.forget("gina").await.expect("forget");
    let loaded = cold().await.expect("load after the forget");
    assert_eq!(
        loaded.snapshot_version, None,
        "the snapshot cannot be opened"
    );
    assert_eq!(loaded.events_replayed, 4);
    assert_eq!(loaded.name, None);
    assert_eq!(loaded.balance, 30, "the events still add up");
    // A snapshot of the stream is refused from now on, even of a state without the name
    // (the state may have been built before the forget).
    let clear = |stream_version, name: Option<&str>| Snapshot {
        stream_version,
        data: serde_json::to_vec(&Member {
            id: "gina".into(),
            name: name.map(str::to_owned),
            balance: 40,
        })
        .expect("json"),
        ..raw.clone()
    };
    match store.save_snapshot(clear(4, None)).await {
        Err(SnapshotError::InvalidInput(e)) => {
            assert!(e.reason.contains("forgotten subject"), "{}", e.reason)
        }
        other => panic!("{other:?}"),
    }
    // Later commands work; the snapshots they try are refused.
    let eager = Repository::<Member, _>::new(store.clone()).with_snapshot_interval(1);
    let done = eager
        .execute("gina", MemberCommand::Deposit(10))
        .await
        .expect("deposit");
    assert_eq!((done.snapshot_version, done.balance), (None, 40));
    let newest = snapshots
        .load_snapshot(&stream, 1, None)
        .await
        .expect("load");
    assert_eq!(
        newest.map(|s| s.stream_version),
        Some(3),
        "nothing newer kept"
    );

    // Events the state holds but the stream no longer shows (truncated): the subjects are
    // unknown, so the snapshot is refused.
    let ivan = Repository::<Member, _>::new(store.clone()).with_snapshot_interval(3);
    ivan.execute(
        "ivan",
        MemberCommand::Register {
            id: "ivan".into(),
            n: 3,
        },
    )
    .await
    .expect("registered");
    ivan.execute("ivan", MemberCommand::Deposit(1))
        .await
        .expect("deposit");
    store
        .truncate_stream(&sid("member-ivan"), 1)
        .await
        .expect("truncated");
    let done = ivan
        .execute("ivan", MemberCommand::Deposit(1))
        .await
        .expect("deposit");
    assert_eq!(
        done.snapshot_version, None,
        "a snapshot was due, and refused"
    );
    assert!(snapshots
        .load_snapshot(&sid("member-ivan"), 1, None)
        .await
        .expect("load")
        .is_none());

    // A previous snapshot in clear (a process without the key wrote it), or one whose list of
    // subjects was changed, vouches for nothing: the events are read from the start.
    let keyless = Shredded::keyless(store.inner().clone())
        .await
        .expect("keyless")
        .with_snapshots(snapshots.clone());
    for (member, spoil) in [("jo", false), ("kim", true)] {
        let stream = sid(&format!("member-{member}"));
        let repository = Repository::<Member, _>::new(store.clone()).with_snapshot_interval(2);
        let register = MemberCommand::Register {
            id: member.into(),
            n: 4,
        };
        repository
            .execute(member, register)
            .await
            .expect("registered");
        let done = repository
            .execute(member, MemberCommand::Deposit(1))
            .await
            .expect("deposit");
        assert_eq!(done.snapshot_version, Some(1));
        let previous = Snapshot {
            stream_id: stream.clone(),
            ..clear(1, None)
        };
        if spoil {
            let mut sealed = snapshots
                .load_snapshot(&stream, 1, None)
                .await
                .expect("load")
                .expect("sealed");
            let count_at = "\0strata-shred v1 snapshot\0".len();
            sealed.data[count_at] = 0;
            snapshots.save_snapshot(sealed).await.expect("saved raw");
        } else {
            keyless
                .save_snapshot(previous)
                .await
                .expect("saved in clear");
        }
        for _ in 0..2 {
            repository
                .execute(member, MemberCommand::Deposit(1))
                .await
                .expect("deposit");
        }
        let newest = snapshots
            .load_snapshot(&stream, 1, None)
            .await
            .expect("load")
            .expect("a snapshot");
        assert_eq!(newest.stream_version, 3);
        assert!(
            !String::from_utf8_lossy(&newest.data).contains(SENTINEL_NAME),
            "{member}'s snapshot is sealed"
        );
        store.forget(member).await.expect("forget");
        let loaded = Repository::<Member, _>::new(store.clone())
            .load(member)
            .await
            .expect("load");
        assert_eq!((loaded.name.clone(), loaded.snapshot_version), (None, None));
    }
}

/// The suite: `inner` is an empty store, `keys` an empty key storage.
async fn suite(
    inner: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    keys: Arc<dyn KeyStorage>,
) {
    let store = open_with(inner.clone(), keys.clone()).await;
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
    let reopened = open_with(inner.clone(), keys.clone()).await;
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
    snapshot_suite(&reopened, snapshots).await;

    // A wrong master key is refused before anything is read or written.
    assert!(matches!(
        Keyring::open(keys.clone(), MasterKey::from_bytes([1; 32])).await,
        Err(strata_shred::KeyError::WrongMasterKey(_))
    ));
}

#[tokio::test]
async fn the_memory_store() {
    let inner = Arc::new(strata_testkit::MemoryStore::new());
    suite(inner.clone(), inner, Arc::new(MemoryKeys::new())).await;
}

#[tokio::test]
async fn the_embedded_store() {
    let dir = tempfile::tempdir().expect("dir");
    let inner = strata_log::LogStore::open(dir.path().join("data")).expect("open");
    let keys = DirKeys::open(dir.path().join("data").join("keys"))
        .expect("keys")
        .shared();
    suite(Arc::new(inner.clone()), Arc::new(inner.clone()), keys).await;
    inner.close().await.expect("close");
}

#[tokio::test]
async fn postgresql() {
    let (store, schema) = support::connect("shred", |o| o).await;
    let keys = PgKeys::open(store.pool().clone(), store.schema())
        .await
        .expect("keys");
    suite(Arc::new(store.clone()), Arc::new(store), Arc::new(keys)).await;
    support::drop_schema(schema).await;
}

/// Registers the schema (or not), then appends `events` registrations of subject `erin`, each
/// to its own stream, and runs erin's member account with snapshots.
async fn fill_erin(store: &Shredded, with_schema: bool, events: usize) {
    if with_schema {
        store.register(registered()).await.expect("register");
    }
    let members = Repository::<Member, _>::new(store.clone()).with_snapshot_interval(2);
    let mut commands = vec![MemberCommand::Register {
        id: "erin".into(),
        n: events,
    }];
    commands.extend([MemberCommand::Deposit(1), MemberCommand::Deposit(2)]);
    for c in commands {
        members.execute("erin", c).await.expect("member command");
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
    let store = open_with(Arc::new(inner.clone()), keys)
        .await
        .with_snapshots(Arc::new(inner.clone()));
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

/// After a forget, no byte the embedded store wrote (segments, index files, snapshots, keys)
/// nor its archive holds the sentinels; without the schema the same search finds them, so it can fail.
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
    let open = || async { open_with(inner.clone(), keys.clone()).await };
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
    let store = open_with(Arc::new(pg.clone()), Arc::new(keys))
        .await
        .with_snapshots(Arc::new(pg.clone()));
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
    // `bytea` columns (snapshots) are dumped in hex.
    [SENTINEL_NAME, SENTINEL_EMAIL]
        .iter()
        .any(|s| dump.contains(s) || dump.contains(&hex::encode(s)))
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

/// `inner` wrapped, with the keys `keys` holds.
async fn open_with(inner: Arc<dyn EventStore>, keys: Arc<dyn KeyStorage>) -> Shredded {
    Shredded::open(inner, Keyring::open(keys, master()).await.expect("ring"))
        .await
        .expect("open")
}

/// A memory store holding `schema` as a schema event, written under the wrapper (as a newer
/// Strata would), and the wrapper opened over it.
async fn over_raw_schema(schema: Value) -> (Arc<strata_testkit::MemoryStore>, Shredded) {
    let inner = Arc::new(strata_testkit::MemoryStore::new());
    let event = EventData::json(strata_shred::SCHEMA_EVENT, &schema).expect("json");
    inner
        .append(
            &sid(strata_shred::SCHEMAS_STREAM),
            ExpectedVersion::Any,
            vec![event],
        )
        .await
        .expect("append");
    let store = in_memory(inner.clone()).await;
    (inner, store)
}

/// `inner` wrapped, with keys in memory.
async fn in_memory(inner: Arc<strata_testkit::MemoryStore>) -> Shredded {
    open_with(inner, Arc::new(MemoryKeys::new())).await
}

#[derive(Serialize, Deserialize)]
enum Misspelt {
    Registered { id: String, name: String },
}

impl DomainEvent for Misspelt {}

impl PersonalData for Misspelt {
    fn personal_data() -> Vec<EncryptionSchema> {
        vec![
            EncryptionSchema::new("Registred", SubjectSource::Pointer("/id".into())).field("/name"),
        ]
    }
}

/// A schema naming an event type the family does not have is an error, not a field in clear.
#[tokio::test]
async fn personal_data_must_name_the_familys_event_types() {
    let store = in_memory(Arc::new(strata_testkit::MemoryStore::new())).await;
    match store.register_personal_data::<Misspelt>().await {
        Err(ShredError::InvalidSchema(e)) => {
            assert_eq!(e.field, "Registred.eventType");
            assert!(e.reason.contains("Registered"), "{}", e.reason);
        }
        other => panic!("{other:?}"),
    }
    assert!(store.schemas().is_empty());
    assert_eq!(
        store
            .register_personal_data::<MemberEvent>()
            .await
            .expect("registered"),
        1
    );
    assert_eq!(store.schemas(), MemberEvent::personal_data());
}

#[derive(Serialize, Deserialize)]
enum Narrower {
    CustomerRegistered { customer_id: String },
    Deposited { customer_id: String },
}

impl DomainEvent for Narrower {}

impl PersonalData for Narrower {
    fn personal_data() -> Vec<EncryptionSchema> {
        vec![
            EncryptionSchema::new("Deposited", SubjectSource::Pointer("/customerId".into()))
                .field("/amount"),
            EncryptionSchema::new(
                "CustomerRegistered",
                SubjectSource::Pointer("/customerId".into()),
            )
            .field("/name"),
        ]
    }
}

/// A schema in force is never weakened by an application's start (an operator may have added
/// a field): adding fields replaces it, dropping one is refused, all or nothing.
#[tokio::test]
async fn personal_data_never_weakens_the_schema_in_force() {
    let store = in_memory(Arc::new(strata_testkit::MemoryStore::new())).await;
    let operators = MemberEvent::personal_data()[0].clone().field("/tier");
    store.register(operators).await.expect("register");
    match store.register_personal_data::<MemberEvent>().await {
        Err(ShredError::InvalidSchema(e)) => {
            assert_eq!(e.field, "CustomerRegistered.eventType");
            assert!(e.reason.contains("/tier"), "{}", e.reason);
        }
        other => panic!("{other:?}"),
    }
    // Narrower drops /contact/email: refused, and its other schema is not written either.
    store
        .register(MemberEvent::personal_data()[0].clone())
        .await
        .expect("register");
    assert!(store.register_personal_data::<Narrower>().await.is_err());
    assert_eq!(store.schemas(), MemberEvent::personal_data());
    // A schema that only adds fields replaces the one in force.
    store
        .register(
            EncryptionSchema::new(
                "CustomerRegistered",
                SubjectSource::Pointer("/customerId".into()),
            )
            .field("/name"),
        )
        .await
        .expect("register");
    assert_eq!(
        store
            .register_personal_data::<MemberEvent>()
            .await
            .expect("widened"),
        1
    );
    assert_eq!(store.schemas(), MemberEvent::personal_data());
}

/// An encryption schema this process cannot read (a newer Strata wrote it) refuses its event
/// type's appends instead of letting the fields through in clear.
#[tokio::test]
async fn a_schema_this_process_cannot_read_refuses_its_events() {
    let (inner, store) = over_raw_schema(json!({"eventType": "CustomerRegistered", "subject": {"regex": "c-.*"}, "fields": ["/name"]})).await;
    match store
        .append(
            &sid("customer-1"),
            ExpectedVersion::Any,
            vec![registration("lee", 1)],
        )
        .await
    {
        Err(AppendError::InvalidInput(e)) => assert_eq!(e.field, "events[0].event_type"),
        other => panic!("{other:?}"),
    }
    assert_eq!(stored_sentinels(inner.as_ref()).await, 0);
    store
        .append(
            &sid("customer-1"),
            ExpectedVersion::Any,
            vec![deposit("lee", 1)],
        )
        .await
        .expect("other types pass");
    assert_eq!(store.unreadable_schemas(), ["CustomerRegistered"]);
    // An application's start does not replace it with its own.
    match store.register_personal_data::<MemberEvent>().await {
        Err(ShredError::InvalidSchema(e)) => assert_eq!(e.field, "CustomerRegistered.eventType"),
        other => panic!("{other:?}"),
    }
    // A schema it reads, registered after, is in force again.
    store.register(registered()).await.expect("register");
    store
        .append(
            &sid("customer-1"),
            ExpectedVersion::Any,
            vec![registration("lee", 1)],
        )
        .await
        .expect("sealed");
    assert_eq!(stored_sentinels(inner.as_ref()).await, 0);
    assert!(store.unreadable_schemas().is_empty());
}

/// The subject may be the stream: an aggregate per person.
#[tokio::test]
async fn the_subject_may_be_the_stream() {
    let inner = Arc::new(strata_testkit::MemoryStore::new());
    let store = in_memory(inner.clone()).await;
    store
        .register(EncryptionSchema::new("UserCreated", SubjectSource::Stream {}).field("/name"))
        .await
        .expect("register");
    for user in ["user-1", "user-2"] {
        let event = EventData::json("UserCreated", &json!({"name": SENTINEL_NAME})).expect("json");
        store
            .append(&sid(user), ExpectedVersion::NoStream, vec![event])
            .await
            .expect("append");
    }
    assert_eq!(stored_sentinels(inner.as_ref()).await, 0);
    store.forget("user-1").await.expect("forget");
    let name = |user: &'static str| {
        let store = store.clone();
        async move {
            store
                .read_stream(&sid(user), ReadStreamOptions::forward())
                .await
                .expect("read")[0]
                .data_json()
                .expect("json")["name"]
                .clone()
        }
    };
    assert_eq!(name("user-1").await, Value::Null);
    assert_eq!(name("user-2").await, json!(SENTINEL_NAME));
}

/// A schema whose event type this process cannot even read: every event type without a
/// schema it reads is refused, rather than one of them written in clear.
#[tokio::test]
async fn a_schema_without_a_readable_event_type_refuses_every_unsealed_type() {
    let (inner, store) = over_raw_schema(json!({"eventType": ["CustomerRegistered"], "subject": {"pointer": "/customerId"}, "fields": ["/name"]})).await;
    for event in [registration("lee", 1), deposit("lee", 1)] {
        match store
            .append(&sid("customer-1"), ExpectedVersion::Any, vec![event])
            .await
        {
            Err(AppendError::InvalidInput(e)) => assert_eq!(e.field, "events[0].event_type"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stored_sentinels(inner.as_ref()).await, 0);
    assert_eq!(store.unreadable_schemas(), ["*"]);
}

/// Another process registered a wider schema since this one last looked: an application's
/// start reads the schemas again before it decides, and does not weaken it.
#[tokio::test]
async fn personal_data_is_checked_against_the_schemas_just_read() {
    let inner = Arc::new(strata_testkit::MemoryStore::new());
    let keys: Arc<dyn KeyStorage> = Arc::new(MemoryKeys::new());
    let open = || async { open_with(inner.clone(), keys.clone()).await };
    let (a, b) = (open().await, open().await);
    let wider = MemberEvent::personal_data()[0].clone().field("/tier");
    b.register(wider.clone()).await.expect("register");
    assert!(a.register_personal_data::<MemberEvent>().await.is_err());
    b.refresh_schemas().await.expect("refresh");
    assert_eq!(b.schemas(), vec![wider]);
}

#[derive(Serialize, Deserialize)]
enum Pair {
    First { id: String, name: String },
    Second { id: String, name: String },
}

impl DomainEvent for Pair {}

impl PersonalData for Pair {
    fn personal_data() -> Vec<EncryptionSchema> {
        ["First", "Second"]
            .iter()
            .map(|t| EncryptionSchema::new(*t, SubjectSource::Pointer("/id".into())).field("/name"))
            .collect()
    }
}

/// A family's schemas are registered in one append: when they do not all fit, none is.
#[tokio::test]
async fn personal_data_is_registered_all_or_none() {
    let store = in_memory(Arc::new(strata_testkit::MemoryStore::new())).await;
    for n in 0..strata_shred::limits::SCHEMAS_MAX - 1 {
        store
            .register(
                EncryptionSchema::new(format!("Type{n}"), SubjectSource::Pointer("/id".into()))
                    .field("/name"),
            )
            .await
            .expect("register");
    }
    assert!(matches!(
        store.register_personal_data::<Pair>().await,
        Err(ShredError::TooManySchemas(_))
    ));
    assert!(!store.schemas().iter().any(|s| s.event_type == "First"));
}
