//! Master key rotation on every key storage: the store reads as before under the new key
//! only, a rotation stopped part way is finished by running it again, and a process still
//! holding the old key creates no key the rotated store could not read.

mod hooked;
#[path = "../../strata-postgres/tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use strata_core::{
    EventData, EventStore, ExpectedVersion, ReadStreamOptions, Snapshot, SnapshotStore, StreamId,
};
use strata_shred::{
    rotate_master_key, DirKeys, EncryptionSchema, KeyError, KeyStorage, Keyring, MasterKey,
    MemoryKeys, PgKeys, Shredded, SubjectSource,
};

fn old() -> MasterKey {
    MasterKey::from_bytes([1; 32])
}

fn new() -> MasterKey {
    MasterKey::from_bytes([2; 32])
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).expect("stream id")
}

fn registration(customer: &str) -> EventData {
    EventData::json(
        "CustomerRegistered",
        &json!({"customerId": customer, "name": format!("Name of {customer}")}),
    )
    .expect("json")
}

async fn open(
    inner: &Arc<strata_testkit::MemoryStore>,
    keys: &Arc<dyn KeyStorage>,
    master: MasterKey,
) -> Result<Shredded, KeyError> {
    let ring = Keyring::open(keys.clone(), master).await?;
    Ok(Shredded::open(inner.clone(), ring)
        .await
        .expect("open")
        .with_snapshots(inner.clone()))
}

async fn name(store: &Shredded, customer: &str) -> Value {
    store
        .read_stream(
            &sid(&format!("customer-{customer}")),
            ReadStreamOptions::forward(),
        )
        .await
        .expect("read")[0]
        .data_json()
        .expect("json")["name"]
        .clone()
}

/// Fills a store under the old key: three customers, one forgotten, a sealed snapshot.
async fn fill(inner: &Arc<strata_testkit::MemoryStore>, keys: &Arc<dyn KeyStorage>) {
    let store = open(inner, keys, old()).await.expect("opened");
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
    for c in ["ann", "bob", "cat"] {
        store
            .append(
                &sid(&format!("customer-{c}")),
                ExpectedVersion::NoStream,
                vec![registration(c)],
            )
            .await
            .expect("append");
    }
    store.forget("cat").await.expect("forget");
    store
        .save_snapshot(Snapshot {
            stream_id: sid("customer-ann"),
            stream_version: 0,
            schema_version: 1,
            data: br#"{"name":"Name of ann"}"#.to_vec(),
            taken_at: strata_core::Timestamp::default(),
        })
        .await
        .expect("snapshot");
}

/// After the rotation the store opens with the new key only, and reads as before.
async fn reads_as_before(inner: &Arc<strata_testkit::MemoryStore>, keys: &Arc<dyn KeyStorage>) {
    assert!(matches!(
        open(inner, keys, old()).await,
        Err(KeyError::WrongMasterKey(_))
    ));
    let store = open(inner, keys, new())
        .await
        .expect("the new key opens it");
    assert_eq!(name(&store, "ann").await, json!("Name of ann"));
    assert_eq!(name(&store, "bob").await, json!("Name of bob"));
    assert_eq!(name(&store, "cat").await, Value::Null, "still forgotten");
    let snapshot = store
        .load_snapshot(&sid("customer-ann"), 1, None)
        .await
        .expect("load")
        .expect("the snapshot sealed before opens after");
    assert_eq!(snapshot.data, br#"{"name":"Name of ann"}"#);
    // New subjects, under the new key.
    store
        .append(
            &sid("customer-dan"),
            ExpectedVersion::NoStream,
            vec![registration("dan")],
        )
        .await
        .expect("append");
    assert_eq!(name(&store, "dan").await, json!("Name of dan"));
}

async fn rotation(keys: Arc<dyn KeyStorage>) {
    let inner = Arc::new(strata_testkit::MemoryStore::new());
    fill(&inner, &keys).await;
    // A process that opened the store before the rotation, and keeps running.
    let stale = open(&inner, &keys, old()).await.expect("opened");
    assert!(matches!(
        rotate_master_key(keys.clone(), &old(), &old()).await,
        Err(KeyError::Rotation(_))
    ));
    assert!(matches!(
        rotate_master_key(keys.clone(), &MasterKey::from_bytes([9; 32]), &new()).await,
        Err(KeyError::WrongMasterKey(_))
    ));
    let report = rotate_master_key(keys.clone(), &old(), &new())
        .await
        .expect("rotated");
    assert_eq!(
        (report.rewrapped, report.resumed),
        (2, false),
        "ann and bob"
    );
    reads_as_before(&inner, &keys).await;
    // The stale process reads the keys it had, and creates none the new key cannot read.
    let refused = stale
        .append(
            &sid("customer-eve"),
            ExpectedVersion::NoStream,
            vec![registration("eve")],
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // Run again: nothing left to do.
    let again = rotate_master_key(keys.clone(), &old(), &new())
        .await
        .expect("again");
    assert_eq!((again.rewrapped, again.resumed), (0, true));
    assert_eq!(again.already, 3, "ann, bob and dan");
}

#[tokio::test]
async fn memory_keys() {
    rotation(Arc::new(MemoryKeys::new())).await;
}

#[tokio::test]
async fn dir_keys() {
    let dir = tempfile::tempdir().expect("dir");
    rotation(
        DirKeys::open(dir.path().join("keys"))
            .expect("keys")
            .shared(),
    )
    .await;
}

#[tokio::test]
async fn pg_keys() {
    let (store, schema) = support::connect("shredrotate", |o| o).await;
    let keys = PgKeys::open(store.pool().clone(), store.schema())
        .await
        .expect("keys");
    rotation(Arc::new(keys)).await;
    support::drop_schema(schema).await;
}

/// The key files and the old master key, without the rotation's record: nothing unwraps.
#[tokio::test]
async fn the_old_master_key_unwraps_no_key_left_on_disk() {
    let dir = tempfile::tempdir().expect("dir");
    let keys_dir = dir.path().join("keys");
    let keys = DirKeys::open(&keys_dir).expect("keys").shared();
    let inner = Arc::new(strata_testkit::MemoryStore::new());
    fill(&inner, &keys).await;
    rotate_master_key(keys.clone(), &old(), &new())
        .await
        .expect("rotated");
    // What a thief with the old master key and today's key files would do: drop the record
    // that names the new master key, and open with the old one.
    std::fs::remove_file(keys_dir.join("secrets.sealed")).expect("removed");
    let keys = DirKeys::open(&keys_dir).expect("keys").shared();
    let store = open(&inner, &keys, old())
        .await
        .expect("opens: its check value");
    let read = store
        .read_stream(&sid("customer-ann"), ReadStreamOptions::forward())
        .await;
    assert!(read.is_err(), "ann's key does not unwrap: {read:?}");
}

/// Re-wraps that fail after `budget` of them: a rotation stopped part way.
struct Budget(AtomicUsize);

impl hooked::Hooks for Budget {
    fn before_rewrap(&self) -> Result<(), KeyError> {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .map(|_| ())
            .map_err(|_| KeyError::Unavailable("stopped".into()))
    }
}

/// `keys`, whose re-wraps fail after the first.
fn failing_after_one(keys: &Arc<dyn KeyStorage>) -> Arc<dyn KeyStorage> {
    Arc::new(hooked::Hooked {
        inner: keys.clone(),
        hooks: Budget(AtomicUsize::new(1)),
    })
}

/// A rotation stopped after one re-wrap: the new key reads keys wrapped either way, and the
/// same rotation run again finishes it.
#[tokio::test]
async fn a_stopped_rotation_is_finished_by_running_it_again() {
    let dir = tempfile::tempdir().expect("dir");
    let keys: Arc<dyn KeyStorage> = DirKeys::open(dir.path().join("keys"))
        .expect("keys")
        .shared();
    let inner = Arc::new(strata_testkit::MemoryStore::new());
    fill(&inner, &keys).await;
    assert!(rotate_master_key(failing_after_one(&keys), &old(), &new())
        .await
        .is_err());
    let store = open(&inner, &keys, new())
        .await
        .expect("the new key opens it");
    assert_eq!(name(&store, "ann").await, json!("Name of ann"));
    assert_eq!(name(&store, "bob").await, json!("Name of bob"));
    let report = rotate_master_key(keys.clone(), &old(), &new())
        .await
        .expect("finished");
    assert_eq!(
        (report.rewrapped, report.already, report.resumed),
        (1, 1, true)
    );
    reads_as_before(&inner, &keys).await;
}

/// A rotation to B stopped part way, then a rotation from B to C: the first is finished
/// before the second begins, so no key is left under a wrapping key the store dropped.
#[tokio::test]
async fn a_rotation_from_a_key_whose_rotation_stopped_finishes_it_first() {
    let keys: Arc<dyn KeyStorage> = Arc::new(MemoryKeys::new());
    let inner = Arc::new(strata_testkit::MemoryStore::new());
    fill(&inner, &keys).await;
    assert!(rotate_master_key(failing_after_one(&keys), &old(), &new())
        .await
        .is_err());
    let third = MasterKey::from_bytes([3; 32]);
    rotate_master_key(keys.clone(), &new(), &third)
        .await
        .expect("rotated");
    let store = open(&inner, &keys, third).await.expect("opens");
    assert_eq!(name(&store, "ann").await, json!("Name of ann"));
    assert_eq!(name(&store, "bob").await, json!("Name of bob"));
}

/// A process opened before a rotation: a key it had not cached is not taken for damaged,
/// it is told to restart with the new master key.
#[tokio::test]
async fn a_process_left_with_the_old_key_is_told_to_restart() {
    let keys: Arc<dyn KeyStorage> = Arc::new(MemoryKeys::new());
    let inner = Arc::new(strata_testkit::MemoryStore::new());
    fill(&inner, &keys).await;
    let stale = open(&inner, &keys, old()).await.expect("opened");
    assert_eq!(name(&stale, "ann").await, json!("Name of ann"), "cached");
    rotate_master_key(keys.clone(), &old(), &new())
        .await
        .expect("rotated");
    assert_eq!(
        name(&stale, "ann").await,
        json!("Name of ann"),
        "from its cache"
    );
    let bob = stale
        .read_stream(&sid("customer-bob"), ReadStreamOptions::forward())
        .await;
    match bob {
        Err(strata_core::ReadError::Storage(e)) => {
            assert!(
                e.to_string().contains("restart it with the new master key"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// A re-wrap or creation stopped before its rename leaves the key in a temporary file: a
/// forget of the subject removes it with the key, and a rotation's walk removes any.
#[tokio::test]
async fn temporary_key_files_go_with_a_forget_and_a_rotation() {
    let dir = tempfile::tempdir().expect("dir");
    let keys_dir = dir.path().join("keys");
    let keys = DirKeys::open(&keys_dir).expect("keys").shared();
    let inner = Arc::new(strata_testkit::MemoryStore::new());
    fill(&inner, &keys).await;
    let key_files: Vec<std::path::PathBuf> = std::fs::read_dir(keys_dir.join("subjects"))
        .expect("subjects")
        .flat_map(|d| std::fs::read_dir(d.expect("dir").path()).expect("dir"))
        .map(|f| f.expect("file").path())
        .collect();
    // What a stop before the rename leaves: a copy of the record beside it.
    for f in &key_files {
        std::fs::copy(f, f.with_extension("tmp")).expect("copied");
    }
    let temporary = || {
        key_files
            .iter()
            .filter(|f| f.with_extension("tmp").exists())
            .count()
    };
    assert_eq!(temporary(), 3);
    let store = open(&inner, &keys, old()).await.expect("opened");
    store.forget("ann").await.expect("forget");
    assert_eq!(temporary(), 2, "ann's went with her key");
    rotate_master_key(keys.clone(), &old(), &new())
        .await
        .expect("rotated");
    assert_eq!(temporary(), 0);
}
