//! The store's async methods do not hold a runtime worker while they wait for the disk: a
//! snapshot delete waiting for its fdatasync, a read waiting for its `pread`, or a close
//! waiting for the writer's last index file, leaves a single-threaded runtime free to run
//! other tasks.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use strata_core::{
    EventData, EventStore, ExpectedVersion, ReadStreamOptions, Snapshot, SnapshotStore, StreamId,
};
use strata_log::io::{LogFile, StdVfs, Vfs};
use strata_log::{LogConfig, LogStore};
use tokio::sync::mpsc;

/// Holds `sync_data` of the snapshot file or of the index file being written, or `read_at`
/// of a segment, once armed, until released.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    released: Condvar,
}

#[derive(Default)]
struct GateState {
    armed: bool,
    open: bool,
    /// A held sync gave up waiting: nobody released it.
    timed_out: bool,
}

struct GatedVfs {
    gate: Arc<Gate>,
    entered: mpsc::UnboundedSender<()>,
}

struct GatedFile {
    inner: Arc<dyn LogFile>,
    gate: Arc<Gate>,
    entered: mpsc::UnboundedSender<()>,
    /// Which call it holds.
    holds: Holds,
}

#[derive(Clone, Copy, PartialEq)]
enum Holds {
    Sync,
    Read,
}

impl GatedFile {
    fn pass(&self, call: Holds) {
        if call != self.holds {
            return;
        }
        let mut st = self.gate.state.lock();
        if st.armed {
            let _ = self.entered.send(());
            // Bounded, so that a store that blocks the runtime fails the test instead of
            // hanging it: the wait ends released or after 10 s, and the test checks which.
            let waited =
                self.gate
                    .released
                    .wait_while_for(&mut st, |s| !s.open, Duration::from_secs(10));
            st.timed_out |= waited.timed_out();
        }
    }
}

impl LogFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.pass(Holds::Read);
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.pass(Holds::Sync);
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

impl Vfs for GatedVfs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        let inner = StdVfs.open(path, create)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let holds = match name {
            "snapshots.log" | "index.tmp" => Holds::Sync,
            _ if path.parent().is_some_and(|p| p.ends_with("segments")) => Holds::Read,
            _ => return Ok(inner),
        };
        Ok(Arc::new(GatedFile {
            inner,
            gate: self.gate.clone(),
            entered: self.entered.clone(),
            holds,
        }))
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        StdVfs.sync_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdVfs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdVfs.remove(path)
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        StdVfs.create_dir(path)
    }
}

/// A store on the gated file system, reading with `pread` (not maps) so reads pass the gate.
fn open(dir: &Path) -> (LogStore, Arc<Gate>, mpsc::UnboundedReceiver<()>) {
    let gate = Arc::new(Gate::default());
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let config = LogConfig {
        vfs: Arc::new(GatedVfs {
            gate: gate.clone(),
            entered: entered_tx,
        }),
        map_reads: false,
        ..LogConfig::default()
    };
    let store = LogStore::open_with(dir, config).expect("open the store");
    (store, gate, entered)
}

/// Lets the held call go.
fn release(gate: &Gate) {
    gate.state.lock().open = true;
    gate.released.notify_all();
}

#[tokio::test(flavor = "current_thread")]
async fn a_read_waiting_for_the_disk_leaves_the_runtime_free() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate, mut entered) = open(dir.path());
    let stream = StreamId::new("account-1").unwrap();
    let event = EventData::json("Opened", &serde_json::json!({ "n": 1 })).unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    gate.state.lock().armed = true;
    let read = tokio::spawn({
        let store = store.clone();
        let stream = stream.clone();
        async move {
            store
                .read_stream(&stream, ReadStreamOptions::forward())
                .await
        }
    });
    entered.recv().await.expect("the read reached its pread");
    release(&gate);
    assert_eq!(read.await.unwrap().unwrap().len(), 1);
    assert!(
        !gate.state.lock().timed_out,
        "the read held the only runtime worker while it waited for the disk"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_snapshot_delete_waiting_for_the_disk_leaves_the_runtime_free() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate, mut entered) = open(dir.path());
    let stream = StreamId::new("account-1").unwrap();
    store
        .save_snapshot(Snapshot {
            stream_id: stream.clone(),
            stream_version: 3,
            schema_version: 1,
            data: b"{}".to_vec(),
            taken_at: strata_core::timestamp_from_micros(1_700_000_000_000_000),
        })
        .await
        .unwrap();
    gate.state.lock().armed = true;

    let delete = tokio::spawn({
        let store = store.clone();
        let stream = stream.clone();
        async move { store.delete_snapshots(&stream).await }
    });
    // This task runs on the same single worker: it gets here while the delete waits for its
    // fdatasync only if the delete does not hold the worker.
    entered
        .recv()
        .await
        .expect("the delete reached its fdatasync");
    release(&gate);
    assert_eq!(delete.await.unwrap().unwrap(), 1, "one snapshot deleted");
    assert!(
        !gate.state.lock().timed_out,
        "the delete held the only runtime worker while it waited for the disk"
    );
    assert!(
        store
            .load_snapshot(&stream, 1, None)
            .await
            .unwrap()
            .is_none(),
        "deleted"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_close_waiting_for_the_disk_leaves_the_runtime_free() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate, mut entered) = open(dir.path());
    let stream = StreamId::new("account-1").unwrap();
    let event = EventData::json("Opened", &serde_json::json!({ "n": 1 })).unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event.clone()])
        .await
        .unwrap();
    let other = store.clone();
    gate.state.lock().armed = true;
    let close = tokio::spawn(store.close());
    // The writer is in the last index file's fdatasync; this task runs on the only worker.
    entered
        .recv()
        .await
        .expect("the close reached the index file's sync");
    release(&gate);
    close.await.unwrap().expect("a clean close");
    assert!(
        !gate.state.lock().timed_out,
        "close held the only runtime worker while the writer finished"
    );
    // Closed for every clone: appends are refused, reads go on.
    let refused = other
        .append(&stream, ExpectedVersion::Any, vec![event])
        .await;
    assert!(
        matches!(refused, Err(strata_core::AppendError::Stopped(_))),
        "{refused:?}"
    );
    let read = other
        .read_stream(&stream, ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    // Nothing else writes to the directory once its lock is released.
    assert!(other.checkpoint_index().is_err());
    let saved = other
        .save_snapshot(Snapshot {
            stream_id: stream.clone(),
            stream_version: 0,
            schema_version: 1,
            data: b"{}".to_vec(),
            taken_at: strata_core::timestamp_from_micros(1_700_000_000_000_000),
        })
        .await;
    assert!(
        matches!(saved, Err(strata_core::SnapshotError::Unavailable(_))),
        "{saved:?}"
    );
    assert!(other.delete_snapshots(&stream).await.is_err());
    // The directory is free, and its index file was written.
    let again = LogStore::open(dir.path()).expect("the directory is free after close");
    assert!(again.open_report().index_loaded);
    assert_eq!(again.open_report().events, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_drop_waits_for_nothing_and_a_reopen_waits_for_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate, mut entered) = open(dir.path());
    let stream = StreamId::new("account-1").unwrap();
    let event = EventData::json("Opened", &serde_json::json!({ "n": 1 })).unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    gate.state.lock().armed = true;
    // Returns at once: a drop that waited for the writer would hold the only worker until
    // the gate gave up.
    drop(store);
    entered
        .recv()
        .await
        .expect("the writer reached the index file's sync");
    // Opening again while the dropped store's writer still holds the directory waits for it
    // instead of failing as locked.
    let path = dir.path().to_path_buf();
    let reopen = tokio::task::spawn_blocking(move || LogStore::open(path));
    release(&gate);
    let again = reopen
        .await
        .unwrap()
        .expect("the reopen waited for the dropped store's writer");
    assert!(
        !gate.state.lock().timed_out,
        "the drop held the only runtime worker while the writer finished"
    );
    assert!(
        again.open_report().index_loaded,
        "its index file was written"
    );
    assert_eq!(again.open_report().events, 1);
}

/// In async code, dropping a store and opening its directory again at once, over and over,
/// never finds it locked: the open waits for the dropped store's writer (which writes the
/// index file and syncs it before letting go of the directory). So does `verify`.
#[tokio::test(flavor = "current_thread")]
async fn drop_then_open_at_once_never_finds_the_directory_locked() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let store = LogStore::open(dir.path())
            .unwrap_or_else(|e| panic!("round {round}: the open failed: {e}"));
        assert_eq!(store.open_report().events, 0);
        drop(store);
    }
    strata_log::verify(dir.path()).expect("verify waits for the dropped store too");
    LogStore::wait_for_dropped();
}
