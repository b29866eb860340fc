//! `LogStore`: the embedded backend, implementing `EventStore` and `SnapshotStore`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use strata_core::lifecycle::{self, StreamMetadata, Visibility, EVENT_TYPE_STREAM_TOMBSTONED};
use strata_core::scavenge::{ProgressFn, ScavengeError, ScavengeReport};
use strata_core::Filter;
use strata_core::{
    timestamp_from_micros, timestamp_to_micros, validate_append, AllPage, AppendError,
    AppendResult, CategorySummary, EventData, EventStore, ExpectedVersion, ListOptions, Page,
    Position, ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent, Snapshot, SnapshotError,
    SnapshotStore, StreamId, StreamInfo, StreamSummary, SubscribeFrom, Subscription,
    SubscriptionTarget, Timestamp,
};
use tokio::sync::{oneshot, watch, Semaphore};

use crate::entries::{Deferred, PositionAt};
use crate::error::{io_ctx, DataLoss, OpenError};
use crate::index::filter_reads_files;
use crate::io::{StdVfs, Vfs};
use crate::limits::{self, WRITER_QUEUE_MAX_APPENDS};
use crate::postings::Blocks;
use crate::recovery::recover;
use crate::snapshots::{SnapshotFile, SNAPSHOT_FILE};
use crate::writer::{AppendRequest, SealQueue, Shared, State, Writer};

/// The lock file that marks a data directory as owned by one process.
pub const LOCK_FILE: &str = "LOCK";

/// How to open a store.
#[derive(Clone)]
pub struct LogConfig {
    /// Seal a segment and start a new one past this size.
    pub segment_max_bytes: u64,
    /// Load the persisted index when it matches the log (otherwise always rebuild it: the
    /// whole log is scanned, and every sealed segment's index file is written again in the
    /// background, about 77 bytes per event, which closing waits for).
    pub use_index_file: bool,
    /// Read records through memory maps of the segment files, and index entries through maps
    /// of the segments' index files, instead of `pread` (the default): a read of records
    /// spread over the log then makes no system call per record.
    /// The trade: a disk that fails under a mapped read ends the process (SIGBUS) where
    /// `pread` would return an error. Files that cannot be mapped are read with `pread`, and
    /// so are all files on systems other than Linux and stores whose `segment_max_bytes` is
    /// under [`limits::MAP_READS_SEGMENT_MIN_BYTES`].
    pub map_reads: bool,
    /// Open even when events the index file records as acknowledged are missing from the end
    /// of the log (a segment cut short, zeroed or deleted): the log is cut where it is whole,
    /// [`OpenReport::data_loss`] says what was lost, and the index file is rewritten at once so
    /// the next open is clean. Off by default: such a store refuses to open with
    /// [`OpenError::DataLoss`] and nothing on disk changes. Damage in the middle of the log
    /// ([`OpenError::Corruption`]) refuses to open either way.
    pub accept_data_loss: bool,
    /// The file system; tests swap in a fault-injecting one.
    pub vfs: Arc<dyn Vfs>,
    /// Where segments given back to an archive ([`LogStore::evict_archived`]) are read from.
    /// A store holding such segments does not open without it ([`OpenError::Archived`] names
    /// the archive).
    pub archive: Option<Arc<dyn crate::archived::SegmentSource>>,
    /// The most bytes of archived segments kept in memory after reading them (default
    /// [`limits::ARCHIVE_CACHE_BYTES_DEFAULT`], at least
    /// [`limits::ARCHIVE_CACHE_BYTES_MIN`]).
    pub archive_cache_bytes: u64,
    /// The most bytes of segment data a scavenge reads per second (0: as fast as it can;
    /// default [`limits::SCAVENGE_BYTES_PER_SEC_DEFAULT`]): what it leaves of the disk and the
    /// CPU goes to appends and reads.
    pub scavenge_bytes_per_sec: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_max_bytes: limits::SEGMENT_MAX_BYTES_DEFAULT,
            use_index_file: true,
            map_reads: true,
            accept_data_loss: false,
            vfs: Arc::new(StdVfs),
            archive: None,
            archive_cache_bytes: limits::ARCHIVE_CACHE_BYTES_DEFAULT,
            scavenge_bytes_per_sec: limits::SCAVENGE_BYTES_PER_SEC_DEFAULT,
        }
    }
}

impl std::fmt::Debug for LogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogConfig")
            .field("segment_max_bytes", &self.segment_max_bytes)
            .field("use_index_file", &self.use_index_file)
            .field("map_reads", &self.map_reads)
            .field("accept_data_loss", &self.accept_data_loss)
            .field("archive", &self.archive.as_ref().map(|a| a.name()))
            .field("archive_cache_bytes", &self.archive_cache_bytes)
            .field("scavenge_bytes_per_sec", &self.scavenge_bytes_per_sec)
            .finish_non_exhaustive()
    }
}

/// What happened while opening, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Events in the store.
    pub events: u64,
    /// Whether the index came from its file rather than a full rebuild.
    pub index_loaded: bool,
    /// Sealed segments whose index came from their own index files (those the index file
    /// did not cover yet).
    pub segment_indexes_loaded: u64,
    /// Sealed segments found without an index file, or with one that did not match: their
    /// files are written in the background after the open.
    pub segment_indexes_missing: u64,
    /// Events read from the log on open (all of them when the index was rebuilt).
    pub events_scanned: u64,
    /// A torn tail that was cut: (file, length before, length after).
    pub truncated: Option<(PathBuf, u64, u64)>,
    /// Acknowledged events that were missing and cut, as [`LogConfig::accept_data_loss`]
    /// allowed.
    pub data_loss: Option<DataLoss>,
}

/// What the store's index holds, and how much of it is in memory ([`LogStore::index_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexStats {
    /// Events indexed.
    pub events: u64,
    /// Event ids held in memory: the open segment's, and those of sealed segments whose index
    /// file is not written yet.
    pub event_ids_in_memory: u64,
    /// Sealed segments whose event ids are looked up in their index files (a bloom filter and
    /// a fence per block of each in memory).
    pub event_id_files: u64,
    /// Bytes of memory the event ids take, roughly: the ids in memory with their hash tables,
    /// and the files' filters and fences.
    pub event_id_bytes: u64,
    /// Entries (where each event lies, its time, stream and type) held in memory: the open
    /// segment's, and those of sealed segments whose index file is not written yet.
    pub entries_in_memory: u64,
    /// Sealed segments whose entries are read from a map of their index files.
    pub entry_files: u64,
    /// Bytes of memory the entries take, roughly: 24 per entry in memory, and each file's
    /// tables of stream and type numbers. The files' mapped pages are the kernel's page
    /// cache, not counted here.
    pub entry_bytes: u64,
    /// Bytes of memory the position lists take: the streams' (compressed, 1 to 3 bytes a
    /// position), and the categories' and event types' (the positions not yet in a segment
    /// index file, compressed, and a part of 64 bytes per name and sealed segment).
    pub position_list_bytes: u64,
    /// Sealed segments whose file lives only in an archive ([`LogStore::evict_archived`]):
    /// their index files are here, their records are read from the archive.
    pub archived_segments: u64,
    /// The cache those reads go through, when there are any.
    pub archive_cache: Option<crate::archived::ArchiveCacheStats>,
}

/// The embedded event store. Cheap to clone; all clones share one store.
///
/// [`LogStore::close`] closes it: appends already queued finish, the index file is written,
/// and the data directory is free for another process when it returns; it waits on tokio's
/// blocking pool. Dropping the last clone of a store not closed does the same; in async code
/// (within a tokio runtime) the drop waits for nothing: the writer finishes on its own thread,
/// and opening the directory again in this process waits for it
/// ([`LogStore::wait_for_dropped`] waits for all). Outside a runtime, the drop waits for the
/// writer. A program about to exit should `close().await` its store.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use strata_core::{EventData, EventStore, ExpectedVersion, ReadStreamOptions, StreamId};
/// let dir = tempfile::tempdir()?;
/// let store = strata_log::LogStore::open(dir.path())?;
/// let stream = StreamId::new("account-123")?;
/// let e = EventData::json("AccountOpened", &serde_json::json!({"initialBalance": 100}))?;
/// store.append(&stream, ExpectedVersion::NoStream, vec![e]).await?;
/// let events = store.read_stream(&stream, ReadStreamOptions::forward()).await?;
/// assert_eq!(events.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: Mutex<Option<crossbeam_channel::Sender<AppendRequest>>>,
    /// One permit per queued append: the queue's bound, waited on asynchronously.
    queue_permits: Arc<Semaphore>,
    /// The writer thread; it holds the directory's lock file until it ends.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set by the writer thread once it has let go of the directory.
    released: Arc<Released>,
    /// Set by `close`: after it, nothing writes to the directory (its lock is released). Held
    /// for reading by every write outside the writer thread (index checkpoints, snapshots), so
    /// that `close` waits for those in flight.
    closed: parking_lot::RwLock<bool>,
    /// Set by `close` before it waits for `closed`: a paced scavenge stops sleeping at it.
    closing: Arc<std::sync::atomic::AtomicBool>,
    snapshots: SnapshotFile,
    report: OpenReport,
}

impl Inner {
    /// Closes the append queue, which ends the writer once it has drained it, and hands over
    /// the writer thread to wait for (once: `None` after the first call).
    fn stop_writer(&self) -> Option<std::thread::JoinHandle<()>> {
        self.tx.lock().take();
        self.writer.lock().take()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer after it drains; it then writes the index file and
        // lets go of the lock. In async code (a runtime's context) the drop waits for nothing:
        // it may run on a runtime worker, so an open of the directory in this process waits
        // for the writer instead (see `Released`). Outside any runtime it waits, so that the
        // directory is free, and its files still, once the drop returns.
        if let Some(w) = self.stop_writer() {
            if tokio::runtime::Handle::try_current().is_ok() {
                Released::register(self.released.clone());
            } else {
                let _ = w.join();
            }
        }
    }
}

/// Waits for the writers of stores of this process that were dropped while open on `dir`.
pub(crate) fn wait_for_dropped_in(dir: &Path) {
    Released::wait_for(Some(&canonical_dir(dir)));
}

/// The path the registry of stopping writers knows `dir` by.
fn canonical_dir(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Whether a writer thread has let go of its directory. Writers of this process that were
/// told to stop by a drop, and may not have ended yet, are listed so that opening the same
/// directory again waits for its writer rather than failing as locked: dropping a store and
/// opening it again works, without the drop waiting for anything.
struct Released {
    /// The directory, canonical.
    dir: PathBuf,
    done: Mutex<bool>,
    ended: parking_lot::Condvar,
}

/// What a writer thread lets go of when it ends (returning or panicking): the directory's
/// lock, then the waiters in this process.
struct WriterExit {
    lock: Option<File>,
    released: Arc<Released>,
}

impl Drop for WriterExit {
    fn drop(&mut self) {
        // Only now may another process open the directory.
        drop(self.lock.take());
        self.released.set();
    }
}

/// Writers told to stop by a drop. Each entry leaves at the next open or drop after its
/// writer ended, so the list holds at most the stores dropped and not yet ended.
static STOPPING: Mutex<Vec<Arc<Released>>> = Mutex::new(Vec::new());

impl Released {
    fn new(dir: PathBuf) -> Arc<Released> {
        Arc::new(Released {
            dir,
            done: Mutex::new(false),
            ended: parking_lot::Condvar::new(),
        })
    }

    /// Called by the writer thread once the lock file is closed.
    fn set(&self) {
        *self.done.lock() = true;
        self.ended.notify_all();
    }

    fn is_done(&self) -> bool {
        *self.done.lock()
    }

    fn register(me: Arc<Released>) {
        let mut stopping = STOPPING.lock();
        stopping.retain(|r| !r.is_done());
        stopping.push(me);
    }

    /// Waits for the writers that were dropped and have not ended yet: those of `dir`, or
    /// all of them.
    fn wait_for(dir: Option<&Path>) {
        let waiting: Vec<Arc<Released>> = {
            let mut stopping = STOPPING.lock();
            stopping.retain(|r| !r.is_done());
            stopping
                .iter()
                .filter(|r| dir.is_none_or(|d| r.dir == d))
                .cloned()
                .collect()
        };
        for r in waiting {
            let mut done = r.done.lock();
            r.ended.wait_while(&mut done, |d| !*d);
        }
    }
}

impl LogStore {
    /// Opens (or creates) the store in `dir` with the default configuration.
    pub fn open(dir: impl AsRef<Path>) -> Result<LogStore, OpenError> {
        Self::open_with(dir, LogConfig::default())
    }

    /// Opens (or creates) the store in `dir`.
    pub fn open_with(dir: impl AsRef<Path>, config: LogConfig) -> Result<LogStore, OpenError> {
        let dir = dir.as_ref().to_path_buf();
        if !(limits::SEGMENT_MAX_BYTES_MIN..=limits::SEGMENT_MAX_BYTES_MAX)
            .contains(&config.segment_max_bytes)
        {
            return Err(OpenError::InvalidConfig(format!(
                "segment_max_bytes must be between {} and {}",
                limits::SEGMENT_MAX_BYTES_MIN,
                limits::SEGMENT_MAX_BYTES_MAX
            )));
        }
        if config.archive_cache_bytes < limits::ARCHIVE_CACHE_BYTES_MIN {
            return Err(OpenError::InvalidConfig(format!(
                "archive_cache_bytes must be at least {}",
                limits::ARCHIVE_CACHE_BYTES_MIN
            )));
        }
        let archive = config.archive.clone().map(|source| {
            Arc::new(crate::archived::ArchiveReads::new(
                source,
                config.archive_cache_bytes,
            ))
        });
        crate::io::create_dir_all(&*config.vfs, &dir)
            .map_err(io_ctx(format!("creating {}", dir.display())))?;
        // A store of this process dropped a moment ago may still be ending its writer.
        let canonical = canonical_dir(&dir);
        Released::wait_for(Some(&canonical));
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_ctx(format!("opening {}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked {
                    dir,
                    lock: lock_path,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_ctx(format!("locking {}", lock_path.display()))(e))
            }
        }
        // Maps of sealed segments and their index files stay for the store's life, two per
        // segment: tiny segments would spend the process's map count (`vm.max_map_count`),
        // so they are read with `pread`.
        let map_reads = cfg!(target_os = "linux")
            && config.map_reads
            && config.segment_max_bytes >= limits::MAP_READS_SEGMENT_MIN_BYTES;
        let mut rec = recover(
            &dir,
            &*config.vfs,
            config.use_index_file,
            map_reads,
            config.accept_data_loss,
            archive.as_ref(),
        )?;
        rec.segments.map_reads = map_reads;
        let snapshots = SnapshotFile::open(&*config.vfs, dir.join(SNAPSHOT_FILE))
            .map_err(io_ctx("opening the snapshot file"))?;
        let tail = rec
            .segments
            .last()
            .ok_or_else(|| OpenError::InvalidConfig("no segment".to_owned()))?;
        let log_end = crate::index::LogEnd {
            segment_no: tail.header.segment_no,
            offset: rec.tail_len,
            salt: tail.header.salt,
        };
        let missing_indexes = std::mem::take(&mut rec.missing_indexes);
        let report = OpenReport {
            events: rec.index.next_position(),
            index_loaded: rec.index_loaded,
            segment_indexes_loaded: rec.segment_indexes_loaded,
            segment_indexes_missing: missing_indexes.len() as u64,
            events_scanned: rec.events_scanned,
            truncated: rec.truncated.clone(),
            data_loss: rec.data_loss.clone(),
        };
        let (changes, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            vfs: config.vfs.clone(),
            state: parking_lot::RwLock::new(State {
                index: rec.index,
                log_end,
            }),
            segments: rec.segments,
            changes,
            stopped: Mutex::new(None),
            segment_max_bytes: config.segment_max_bytes,
            checkpoint_lock: Mutex::new(()),
            sealed: Mutex::new(SealQueue::queued(&missing_indexes)),
            sealed_idle: parking_lot::Condvar::new(),
            scavenging: std::sync::atomic::AtomicBool::new(false),
            scavenged: std::sync::atomic::AtomicU64::new(0),
            before_record_reads: Mutex::new(None),
            archive: parking_lot::RwLock::new(archive),
            archive_cache_bytes: config.archive_cache_bytes,
            scavenge_bytes_per_sec: config.scavenge_bytes_per_sec,
        });
        let missing_queued = missing_indexes.len();
        if report.data_loss.is_some() {
            // The old index file records the lost events: replace it before anything is
            // appended where they were, or the next open would report them again.
            shared
                .checkpoint_index()
                .map_err(io_ctx("writing the index file after cutting lost events"))?;
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer = Writer {
            shared: shared.clone(),
            tail,
            tail_len: rec.tail_len,
            allocated_len: rec.tail_len,
            checkpoint_thread: None,
        };
        let released = Released::new(canonical);
        let handle = std::thread::Builder::new()
            .name("strata-writer".to_owned())
            .spawn({
                let exit = WriterExit {
                    lock: Some(lock),
                    released: released.clone(),
                };
                move || {
                    // Lets go of the directory when the writer ends, even by a panic.
                    let _exit = exit;
                    writer.run(rx, missing_queued);
                }
            })
            .map_err(io_ctx("starting the writer thread"))?;
        Ok(LogStore {
            inner: Arc::new(Inner {
                shared,
                tx: Mutex::new(Some(tx)),
                queue_permits: Arc::new(Semaphore::new(WRITER_QUEUE_MAX_APPENDS)),
                writer: Mutex::new(Some(handle)),
                released,
                closed: parking_lot::RwLock::new(false),
                closing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                snapshots,
                report,
            }),
        })
    }

    /// Closes the store, for every clone: appends already queued are answered, later ones
    /// are refused ([`AppendError::Stopped`], "the store is closing"), as are index
    /// checkpoints and snapshot saves and deletes; the index file is written, and the
    /// directory's lock is released, all before this returns. The waiting
    /// happens on tokio's blocking pool, not on the caller's worker. Reads through clones
    /// still work. An error says the store had stopped after an I/O error (its reason), or
    /// that the writer thread failed; acknowledged appends are durable either way.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store = strata_log::LogStore::open(dir.path())?;
    /// store.close().await?;
    /// // Another process could open it now; so can this one.
    /// let again = strata_log::LogStore::open(dir.path())?;
    /// assert!(again.open_report().index_loaded);
    /// # Ok(()) }
    /// ```
    pub async fn close(self) -> std::io::Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A paced scavenge's rewrite stops sleeping; then this waits for it, and for
            // checkpoints and snapshot writes in flight; later ones are refused.
            inner
                .closing
                .store(true, std::sync::atomic::Ordering::Release);
            *inner.closed.write() = true;
            match inner.stop_writer() {
                Some(w) => w
                    .join()
                    .map_err(|_| std::io::Error::other("the writer thread panicked")),
                None => Ok(()),
            }
        })
        .await
        .map_err(std::io::Error::other)??;
        match self.inner.shared.stopped_reason() {
            Some(reason) => Err(std::io::Error::other(format!(
                "the store had stopped after an I/O error: {reason}"
            ))),
            None => Ok(()),
        }
    }

    /// Waits (blocking the calling thread) until the writers of every store this process
    /// dropped without [`close`](Self::close) have finished: their index files written and
    /// their directories free. For a program about to exit, outside async code.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// drop(strata_log::LogStore::open(dir.path()).unwrap());
    /// strata_log::LogStore::wait_for_dropped();
    /// ```
    pub fn wait_for_dropped() {
        Released::wait_for(None);
    }

    /// What the index holds, and how much of it is in memory.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let store = strata_log::LogStore::open(dir.path())?;
    /// let stats = store.index_stats();
    /// assert_eq!((stats.events, stats.event_ids_in_memory), (0, 0));
    /// # Ok(()) }
    /// ```
    pub fn index_stats(&self) -> IndexStats {
        let st = self.inner.shared.state.read();
        let ids = &st.index.ids;
        IndexStats {
            events: st.index.next_position(),
            event_ids_in_memory: ids.in_memory_count(),
            event_id_files: ids.file_count(),
            event_id_bytes: ids.memory_bytes(),
            entries_in_memory: st.index.entries.in_memory_count(),
            entry_files: st.index.entries.file_count(),
            entry_bytes: st.index.entries.memory_bytes(),
            position_list_bytes: st.index.position_list_bytes(),
            archived_segments: crate::archived::archived_count(&self.inner.shared.segments),
            archive_cache: self.archive_cache(),
        }
    }

    /// Waits until the index files of the segments sealed so far are written. They are
    /// written in the background after each seal (and, after an open that found some missing,
    /// for those); a segment's event ids leave memory once its file is written. Waits on
    /// tokio's blocking pool.
    pub async fn wait_for_segment_indexes(&self) {
        let shared = self.inner.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.wait_for_segment_indexes()).await;
    }

    /// What happened while opening.
    pub fn open_report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Why the store stopped accepting appends, if it did.
    pub fn stopped_reason(&self) -> Option<String> {
        self.inner.shared.stopped_reason()
    }

    /// Writes the whole index file now (it is also written on close; a sealed segment gets
    /// its own index file).
    pub fn checkpoint_index(&self) -> std::io::Result<()> {
        let closed = self.inner.closed.read();
        if *closed {
            return Err(std::io::Error::other("the store is closed"));
        }
        self.inner.shared.checkpoint_index()
    }

    /// The flag `close` sets before waiting for work in flight.
    pub(crate) fn closing_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.inner.closing.clone()
    }

    /// Runs `f` while the store is open, `None` when it is closed: a close waits for it to
    /// end (and files written afterwards are refused), as for snapshot writes.
    pub(crate) fn while_open<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let closed = self.inner.closed.read();
        (!*closed).then(f)
    }

    /// Runs `write` (to a file of the directory, outside the writer thread) unless the store
    /// is closed; `close` waits for it.
    fn unless_closed<T>(
        &self,
        write: impl FnOnce() -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        let closed = self.inner.closed.read();
        if *closed {
            return Err(SnapshotError::Unavailable(
                ("the store is closed".to_owned()).into(),
            ));
        }
        write()
    }

    fn sender(&self) -> Option<crossbeam_channel::Sender<AppendRequest>> {
        self.inner.tx.lock().clone()
    }

    /// Reads the records of `hits` on the runtime's blocking pool, after the entries of
    /// those in index files: a read is `pread`s or page faults on mapped segments and index
    /// files (and a long scattered one joins reader threads), none of which may hold a
    /// runtime worker. An empty read costs no hand-over.
    async fn read_hits(&self, hits: Deferred) -> Result<Vec<RecordedEvent>, ReadError> {
        if hits.is_empty() {
            return Ok(Vec::new());
        }
        let shared = self.inner.shared.clone();
        blocking(move || {
            let items: Vec<(u64, u64)> =
                hits.read()?.into_iter().map(|(p, e)| (p, e.loc)).collect();
            let hook = shared.before_record_reads.lock().clone();
            if let Some(hook) = hook {
                hook();
            }
            shared.segments.read_events(&items)
        })
        .await
    }

    /// Test hook: `hook` runs on every read of records, after their places were found and
    /// before they are read (a test swaps a segment in between). `None` removes it.
    #[doc(hidden)]
    pub fn set_before_record_reads(&self, hook: Option<Arc<dyn Fn() + Send + Sync>>) {
        *self.inner.shared.before_record_reads.lock() = hook;
    }
}

impl LogStore {
    /// What readers may see of `stream` now, and its last stored version. Reads the last
    /// event of its metastream, when it has one, and the entry of its last event, when some
    /// stream was ever tombstoned; a stream without either costs two map lookups.
    pub(crate) async fn visibility(
        &self,
        stream: &StreamId,
    ) -> Result<(Visibility, Option<u64>), ReadError> {
        let parts = self.visibility_parts(stream);
        if parts.metadata.is_none() && parts.tombstone.is_none() {
            return Ok((Visibility::ALL, parts.last));
        }
        let metadata = match parts.metadata {
            Some(hits) => self.read_hits(hits).await?.into_iter().next(),
            None => None,
        };
        let last_is_tombstone = match parts.tombstone {
            Some((t, entry)) => {
                let entry = if entry.reads_files() {
                    blocking(move || entry.read()).await?
                } else {
                    entry.read()?
                };
                entry.first().is_some_and(|(_, e)| e.event_type == t)
            }
            None => false,
        };
        Ok(visible(metadata, parts.last, last_is_tombstone))
    }

    /// [`visibility`](Self::visibility), reading on the calling thread (which must not be a
    /// runtime worker).
    pub(crate) fn visibility_blocking(
        &self,
        stream: &StreamId,
    ) -> Result<(Visibility, Option<u64>), ReadError> {
        let parts = self.visibility_parts(stream);
        let metadata = match parts.metadata {
            Some(hits) => {
                let items: Vec<(u64, u64)> =
                    hits.read()?.into_iter().map(|(p, e)| (p, e.loc)).collect();
                self.inner
                    .shared
                    .segments
                    .read_events(&items)?
                    .into_iter()
                    .next()
            }
            None => None,
        };
        let last_is_tombstone = match parts.tombstone {
            Some((t, entry)) => entry
                .read()?
                .first()
                .is_some_and(|(_, e)| e.event_type == t),
            None => false,
        };
        Ok(visible(metadata, parts.last, last_is_tombstone))
    }

    /// What [`visibility`](Self::visibility) reads, found under the state lock: the stream's
    /// last version, its metastream's last event, and its last event's entry when some stream
    /// was ever tombstoned (with the tombstone's type number).
    fn visibility_parts(&self, stream: &StreamId) -> VisibilityParts {
        let st = self.inner.shared.state.read();
        let index = &st.index;
        let last_of = |s: &StreamId| {
            index
                .stream_no(s)
                .and_then(|n| index.streams[n as usize].positions.last())
        };
        let metadata = if stream.is_metastream() {
            None
        } else {
            last_of(&stream.metastream()).map(|p| index.entries.defer([p]))
        };
        let tombstone = index
            .type_no(EVENT_TYPE_STREAM_TOMBSTONED)
            .zip(last_of(stream))
            .map(|(t, p)| (t, index.entries.defer([p])));
        VisibilityParts {
            last: index.stream_version(stream),
            metadata,
            tombstone,
        }
    }

    /// Runs `read` again when it failed after a scavenge swapped a segment: it may have found
    /// an event's place in the segment's old file and read the new one there. It runs again
    /// only when a swap overlapped it, and sees the swap then.
    async fn retrying<T, F>(&self, mut read: impl FnMut() -> F) -> Result<T, ReadError>
    where
        F: std::future::Future<Output = Result<T, ReadError>>,
    {
        use std::sync::atomic::Ordering;
        let swaps = &self.inner.shared.scavenged;
        loop {
            let before = swaps.load(Ordering::Acquire);
            match read().await {
                Err(ReadError::Corruption(_) | ReadError::Storage(_))
                    if swaps.load(Ordering::Acquire) != before => {}
                done => return done,
            }
        }
    }

    /// The streams with lifecycle state: those of the metastreams, and those with a
    /// tombstone, sorted.
    pub(crate) async fn lifecycle_streams(&self) -> Result<Vec<StreamId>, ReadError> {
        let mut streams = std::collections::BTreeSet::new();
        let mut after = None;
        loop {
            let page = self
                .list_streams_stored(ListOptions {
                    after,
                    prefix: Some(strata_core::METASTREAM_PREFIX.to_owned()),
                    limit: strata_core::limits::LIST_PAGE_MAX_ENTRIES,
                })
                .await?;
            for item in &page.items {
                let of = item.stream_id.strip_prefix(strata_core::METASTREAM_PREFIX);
                streams.extend(of.and_then(|of| StreamId::new(of).ok()));
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let tombstones = Filter::default().event_types([EVENT_TYPE_STREAM_TOMBSTONED]);
        let mut from = Position(0);
        loop {
            let page = self
                .read_all_stored(
                    ReadAllOptions::forward()
                        .from(from)
                        .limit(strata_core::limits::READ_PAGE_MAX_EVENTS)
                        .filter(tombstones.clone()),
                )
                .await?;
            // (A tombstone is also noted in the stream's metastream, whose events all stay.)
            let tombstoned = page.events.into_iter().map(|e| e.stream_id);
            streams.extend(tombstoned.filter(|s| !s.is_metastream()));
            match page.next {
                Some(next) if !page.is_end => from = next,
                _ => break,
            }
        }
        Ok(streams.into_iter().collect())
    }

    /// The version of `stream`'s first event recorded at or after `not_before_us`, `None`
    /// when none is that recent. Events are recorded in version order: a binary search over
    /// its events' entries, which may be read from index files (on the calling thread, which
    /// must not be a runtime worker).
    pub(crate) fn first_version_recorded_from(
        &self,
        stream: &StreamId,
        not_before_us: i64,
    ) -> Result<Option<u64>, ReadError> {
        let state = &self.inner.shared.state;
        let Some(no) = state.read().index.stream_no(stream) else {
            return Ok(None);
        };
        // Each probe finds its entry under the state lock and reads it after.
        let probe = |i: u64| -> Result<Option<(i64, u64)>, ReadError> {
            let (entry, version) = {
                let index = &state.read().index;
                let se = &index.streams[no as usize];
                match se.positions.get(i) {
                    Some(p) => (index.entries.defer([p]), se.version_at(i)),
                    None => return Ok(None),
                }
            };
            Ok(entry
                .read()?
                .first()
                .map(|(_, e)| (e.recorded_at_us, version)))
        };
        let (mut lo, mut hi) = (0, state.read().index.streams[no as usize].positions.len());
        let mut found = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match probe(mid)? {
                Some((at, _)) if at < not_before_us => lo = mid + 1,
                Some((_, version)) => {
                    found = Some(version);
                    hi = mid;
                }
                // Appended to since: none that recent among those read.
                None => hi = mid,
            }
        }
        Ok(found)
    }

    /// Seals the open segment when it holds any event, after the appends already queued,
    /// and waits until the index files of the sealed segments are written: then everything
    /// appended so far lies in sealed segments read from their index files, which a
    /// scavenge rewrites.
    pub(crate) async fn seal(&self) -> Result<(), ReadError> {
        // A request without events (which an append never is) asks the writer to seal.
        let stream = StreamId::new("seal").map_err(|e| ReadError::Storage(e.to_string().into()))?;
        self.to_writer(stream, ExpectedVersion::Any, Vec::new(), Vec::new())
            .await
            .map_err(|e| ReadError::Unavailable(e.to_string().into()))?;
        let shared = self.inner.shared.clone();
        blocking(move || {
            shared.wait_for_segment_indexes();
            Ok(())
        })
        .await
    }

    /// Queues a request for the writer and waits for its answer. The queue is bounded by
    /// permits: beyond `WRITER_QUEUE_MAX_APPENDS` waiting requests, callers wait here
    /// (back-pressure) instead of queueing without bound.
    async fn to_writer(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        metadata: Vec<Vec<u8>>,
    ) -> Result<AppendResult, AppendError> {
        let closed = || AppendError::Stopped(("the store is closing".to_owned()).into());
        let permit = self
            .inner
            .queue_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let (reply, answer) = oneshot::channel();
        let req = AppendRequest {
            stream,
            expected,
            events,
            metadata,
            reply,
            _permit: permit,
        };
        let tx = self.sender().ok_or_else(closed)?;
        tx.send(req).map_err(|_| closed())?;
        answer.await.map_err(|_| {
            AppendError::Stopped(
                (self
                    .stopped_reason()
                    .unwrap_or_else(|| "the writer ended before answering".to_owned()))
                .into(),
            )
        })?
    }

    /// What the writer and the readers share.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Whether some stream has lifecycle state (metadata, or a tombstone): until then, no
    /// read needs to look.
    fn has_lifecycle(&self) -> bool {
        let st = self.inner.shared.state.read();
        st.index.type_no(EVENT_TYPE_STREAM_TOMBSTONED).is_some() || st.index.has_metastreams()
    }
}

impl LogStore {
    /// The stored events of one stream, as [`EventStore::read_stream`] without lifecycles.
    async fn read_stream_stored(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let items = {
            let st = self.inner.shared.state.read();
            let Some(s) = st.index.stream_no(stream) else {
                return Err(ReadError::StreamNotFound(stream.clone()));
            };
            st.index
                .stream_slice(
                    s,
                    options.direction,
                    options.from_version,
                    options.limit,
                    options.max_position.map(Position::get),
                )
                .ok_or_else(|| ReadError::StreamNotFound(stream.clone()))?
        };
        self.read_hits(items).await
    }

    /// A page of `$all` as stored, without lifecycles.
    async fn read_all_stored(&self, options: ReadAllOptions) -> Result<AllPage, ReadError> {
        let shared = self.inner.shared.clone();
        let reads_files = filter_reads_files(&options.filter);
        let slice = move || {
            // The walk runs under the state lock on the blocks of postings and entries it has
            // or the kernel holds in memory, and those it lacks are read between its runs,
            // without the lock: appends do not wait on the disk for a read (see `Blocks` for
            // the bounded exceptions).
            Blocks::fetched().run(
                || shared.state.read(),
                |st, blocks| {
                    st.index.all_slice(
                        options.direction,
                        options.from.map(Position::get),
                        options.limit,
                        &options.filter,
                        options.max_position.map(Position::get),
                        strata_core::limits::READ_SCAN_MAX_EVENTS,
                        blocks,
                    )
                },
            )
        };
        // A walk that reads index files may wait for the disk: not on a worker.
        let slice = if reads_files {
            blocking(slice).await?
        } else {
            slice()?
        };
        Ok(AllPage {
            events: self.read_hits(slice.hits).await?,
            next: slice.next.map(Position),
            is_end: slice.is_end,
        })
    }

    /// What is stored of one stream, without lifecycles.
    async fn stream_info_stored(&self, stream: &StreamId) -> Result<StreamInfo, ReadError> {
        let ((count, versions), ends) = {
            let st = self.inner.shared.state.read();
            let index = &st.index;
            match index.stream_no(stream) {
                Some(s) => {
                    let se = &index.streams[s as usize];
                    let positions = &se.positions;
                    let ends = positions.get(0).zip(positions.last());
                    let ends = ends.map_or_else(Deferred::default, |(first, last)| {
                        index.entries.defer([first, last])
                    });
                    ((positions.len(), se.versions()), ends)
                }
                None => ((0, 0), Deferred::default()),
            }
        };
        let ends = if ends.reads_files() {
            blocking(move || ends.read()).await?
        } else {
            ends.read()?
        };
        let at = |k: usize| {
            ends.get(k)
                .map(|(_, e)| timestamp_from_micros(e.recorded_at_us))
        };
        Ok(StreamInfo {
            stream_id: stream.clone(),
            exists: count > 0,
            current_version: versions.checked_sub(1),
            // As on PostgreSQL: its versions, those a scavenge removed included (readers'
            // counts come from its visibility, `lifecycle::visible_info`).
            event_count: versions,
            first_recorded_at: at(0),
            last_recorded_at: at(1),
            last_position: ends.get(1).map(|(p, _)| Position(*p)),
            tombstoned: false,
        })
    }

    /// Streams as stored, metastreams included.
    async fn list_streams_stored(
        &self,
        options: ListOptions,
    ) -> Result<Page<StreamSummary>, ReadError> {
        options.validate()?;
        let st = self.inner.shared.state.read();
        let index = &st.index;
        let (nos, more) = index.list_streams(
            options.after.as_deref(),
            options.prefix.as_deref(),
            options.limit,
        );
        let items: Vec<StreamSummary> = nos
            .into_iter()
            .map(|s| {
                let e = &index.streams[s as usize];
                StreamSummary {
                    stream_id: e.name().to_owned(),
                    category: index.categories[e.category as usize].name.clone(),
                    event_count: e.versions(),
                    last_position: Position(e.positions.last().unwrap_or_default()),
                }
            })
            .collect();
        let next = more
            .then(|| items.last().map(|i| i.stream_id.clone()))
            .flatten();
        Ok(Page { items, next })
    }

    /// Categories as stored, metastreams' included.
    async fn list_categories_stored(
        &self,
        options: ListOptions,
    ) -> Result<Page<CategorySummary>, ReadError> {
        options.validate()?;
        let st = self.inner.shared.state.read();
        let index = &st.index;
        let (nos, more) = index.list_categories(
            options.after.as_deref(),
            options.prefix.as_deref(),
            options.limit,
        );
        let items: Vec<CategorySummary> = nos
            .into_iter()
            .map(|c| {
                let e = &index.categories[c as usize];
                CategorySummary {
                    category: e.name.clone(),
                    stream_count: e.streams,
                    event_count: e.positions.len(),
                }
            })
            .collect();
        let next = more
            .then(|| items.last().map(|i| i.category.clone()))
            .flatten();
        Ok(Page { items, next })
    }
}

/// What [`LogStore::visibility`] reads (see [`LogStore::visibility_parts`]).
struct VisibilityParts {
    last: Option<u64>,
    metadata: Option<Deferred>,
    tombstone: Option<(u32, Deferred)>,
}

/// What readers may see of a stream whose metastream's last event is `metadata`, whose last
/// version is `last`, and whose last event is a tombstone or not.
fn visible(
    metadata: Option<RecordedEvent>,
    last: Option<u64>,
    last_is_tombstone: bool,
) -> (Visibility, Option<u64>) {
    let metadata = metadata.and_then(|e| StreamMetadata::from_json(&e.data).ok());
    let now = timestamp_from_micros(crate::recovery::now_us());
    (
        Visibility::new(metadata.as_ref(), last, last_is_tombstone, now),
        last,
    )
}

/// Runs `f` on tokio's blocking pool (disk reads and fsyncs must not hold a runtime worker).
/// A panic in `f` is resumed here; a runtime shutting down answers `unavailable`'s error.
async fn on_blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
    unavailable: fn(&'static str) -> E,
) -> Result<T, E> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err(unavailable("the runtime is shutting down")),
        },
    }
}

/// Runs a read of the disk on tokio's blocking pool ([`on_blocking`]).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ReadError> {
    on_blocking(f, |m| ReadError::Unavailable(m.into())).await
}

#[async_trait]
impl EventStore for LogStore {
    /// The archive cache's figures ([`crate::ArchiveCacheStats::prometheus`]), once the
    /// store reads archived segments; nothing before.
    async fn backend_metrics(&self) -> Result<String, ReadError> {
        let archived = crate::archived::archived_count(&self.inner.shared.segments);
        Ok(self
            .archive_cache()
            .map(|c| c.prometheus(archived))
            .unwrap_or_default())
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, AppendError> {
        let metadata = validate_append(&events)?;
        lifecycle::check_reserved(stream, &events)?;
        if let Some(reason) = self.stopped_reason() {
            return Err(AppendError::Stopped(reason.into()));
        }
        self.to_writer(stream.clone(), expected, events, metadata)
            .await
    }

    fn check_writable(&self) -> Result<(), AppendError> {
        match self.stopped_reason() {
            Some(reason) => Err(AppendError::Stopped(reason.into())),
            None => Ok(()),
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        options.validate()?;
        self.retrying(|| async {
            let (visibility, last) = self.visibility(stream).await?;
            lifecycle::read_visible(stream, visibility, last, options.clone(), |options| {
                self.read_stream_stored(stream, options)
            })
            .await
        })
        .await
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<AllPage, ReadError> {
        options.validate()?;
        let mut options = options;
        options.filter.categories = options.filter.category_terms();
        self.retrying(|| async {
            let page = self.read_all_stored(options.clone()).await?;
            if page.events.is_empty() || !self.has_lifecycle() {
                return Ok(page);
            }
            let events = lifecycle::keep_visible(page.events, |stream| async move {
                Ok(self.visibility(&stream).await?.0)
            })
            .await?;
            Ok(AllPage { events, ..page })
        })
        .await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<StreamInfo, ReadError> {
        self.retrying(|| async {
            let (visibility, _) = self.visibility(stream).await?;
            let stored = self.stream_info_stored(stream).await?;
            lifecycle::visible_stream_info(self, stored, visibility).await
        })
        .await
    }

    async fn list_streams(&self, options: ListOptions) -> Result<Page<StreamSummary>, ReadError> {
        let page = self.list_streams_stored(options).await?;
        lifecycle::visible_listing(self, page, self.has_lifecycle()).await
    }

    async fn list_categories(
        &self,
        options: ListOptions,
    ) -> Result<Page<CategorySummary>, ReadError> {
        let page = self.list_categories_stored(options).await?;
        Ok(lifecycle::visible_categories(page))
    }

    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>, ReadError> {
        let ts_us = timestamp_to_micros(at);
        let at = self.inner.shared.state.read().index.position_at(ts_us);
        let p = match at {
            PositionAt::Found(p) => p,
            in_file => blocking(move || in_file.find(ts_us)).await?,
        };
        Ok(p.map(Position))
    }

    async fn head(&self) -> Result<Option<Position>, ReadError> {
        Ok(self.inner.shared.state.read().index.head().map(Position))
    }

    async fn scavenge(&self, progress: ProgressFn<'_>) -> Result<ScavengeReport, ScavengeError> {
        crate::scavenge::run(self, progress).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.shared.changes.subscribe()
    }

    async fn subscribe(
        &self,
        target: SubscriptionTarget,
        from: SubscribeFrom,
    ) -> Result<Subscription, ReadError> {
        Subscription::start(Arc::new(self.clone()), target, from).await
    }
}

/// Runs `f` on the runtime's blocking pool with a handle on the store: snapshot reads are
/// `pread`s and a delete waits for an fdatasync, which must not hold a runtime worker.
async fn on_blocking_pool<T: Send + 'static>(
    store: &LogStore,
    f: impl FnOnce(&LogStore) -> Result<T, SnapshotError> + Send + 'static,
) -> Result<T, SnapshotError> {
    let store = store.clone();
    on_blocking(
        move || f(&store),
        |m| SnapshotError::Unavailable(m.to_owned().into()),
    )
    .await
}

#[async_trait]
impl SnapshotStore for LogStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), SnapshotError> {
        on_blocking_pool(self, move |store| {
            store.unless_closed(|| store.inner.snapshots.save(&snapshot))
        })
        .await
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
        max_version: Option<u64>,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        let stream = stream.clone();
        on_blocking_pool(self, move |store| {
            store
                .inner
                .snapshots
                .load(&stream, schema_version, max_version)
        })
        .await
    }

    async fn delete_snapshots(&self, stream: &StreamId) -> Result<u64, SnapshotError> {
        let stream = stream.clone();
        on_blocking_pool(self, move |store| {
            store.unless_closed(|| store.inner.snapshots.delete(&stream))
        })
        .await
    }
}
