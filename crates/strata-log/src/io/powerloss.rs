//! A file system that can lose power: [`PowerLossVfs`].
//!
//! It models the page cache the way SQLite's crash-test VFS, ALICE and TigerBeetle's storage
//! faults do. Writes and truncations of a file since its last `fdatasync`, and directory
//! entries (files and directories created, renamed, removed) since the last fsync of their
//! directory, are pending: at a simulated crash each may be lost, kept, or (a write) torn at
//! sector granularity, in any combination, chosen by a seeded random generator. What was
//! synced survives.
//!
//! Every operation passes through to real files under one root directory, so code that reads
//! with `std::fs` sees what a running system would see (the page cache). Beside them the
//! simulator keeps, per file, the durable image and the pending writes, and per directory the
//! durable entries and the pending changes. At a crash ([`PowerLossVfs::crash`], or the n-th
//! operation after [`PowerLossVfs::crash_after`]) every further operation fails, old handles
//! for good; once the store is dropped, [`PowerLossVfs::restart`] rewrites the real files to
//! one possible post-crash state and the directory can be opened again.
//!
//! Segment files are never memory-mapped ([`LogFile::map`] is `None`), so reads use `pread`;
//! sealed segments' index files, once written and renamed, are mapped by path. Files
//! written past the simulator (the store's `LOCK`, which holds no data) do not survive a
//! restart.
//!
//! To prove that the proof can fail, a [`SyncMutation`] makes one kind of sync do nothing, or
//! take effect only at the next operation (an append acknowledged before its sync).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::{LogFile, Vfs};
use crate::format::SEGMENT_HEADER_BYTES;
use crate::recovery::{INDEX_FILE, SEGMENTS_DIR};
use crate::snapshots::SNAPSHOT_FILE;

/// The unit a disk writes atomically: a write is torn at these boundaries.
pub const SECTOR_BYTES: u64 = 512;
/// Operations the log keeps for [`PowerLossVfs::take_log`]: a caller that drains it after
/// every step never reaches this; one that never drains it keeps only the newest.
const LOG_MAX_RECORDS: usize = 65_536;

/// Which sync of the engine an operation is, told apart by the file and by the operation that
/// prompted it (the last one pending on the file or directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SyncSite {
    /// `fdatasync` of a segment with records pending: the writer's batch sync, which
    /// acknowledges appends.
    SegmentRecords,
    /// `fdatasync` of a new segment's header (nothing past it pending).
    SegmentHeader,
    /// `fdatasync` after a segment was cut and nothing written: sealing (the preallocated
    /// zeros) or a torn tail cut on open.
    SegmentCut,
    /// `fsync` of `segments/` after a segment file was created.
    SegmentCreated,
    /// `fsync` of `segments/` after a segment file was removed (an incomplete one, on open).
    SegmentRemoved,
    /// `fdatasync` of `index.tmp` before it is renamed over `index.bin`.
    IndexData,
    /// `fsync` of the data directory after `index.tmp` was renamed over `index.bin`.
    IndexRenamed,
    /// `fsync` of a directory after a directory was created in it.
    DirectoryCreated,
    /// `fsync` of the data directory after the snapshot file was created.
    SnapshotCreated,
    /// `fdatasync` of the snapshot file (a delete; a cut tail on open).
    SnapshotData,
    /// Any other sync.
    Other,
}

/// A deliberate durability bug, to show that a test catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncMutation {
    /// Syncs at this site do nothing (the sync was removed).
    Skip(SyncSite),
    /// Syncs at this site take effect only at the next operation on the file system: what
    /// the caller does right after the sync returns (acknowledge an append) happens before
    /// the data is durable.
    Defer(SyncSite),
}

/// One operation, as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRecord {
    /// Its number among all operations counted since the simulator was made (`crash_after`
    /// counts these).
    pub number: u64,
    /// What it was.
    pub kind: OpKind,
    /// The file or directory.
    pub path: PathBuf,
    /// The name of the thread that made it (`None`: a thread started without a name).
    pub thread: Option<String>,
    /// What happened.
    pub outcome: OpOutcome,
}

/// What an operation was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpKind {
    /// Opened a file; `created`: it did not exist.
    Open {
        /// Whether the open created the file.
        created: bool,
    },
    /// Wrote `len` bytes at `offset`.
    Write {
        /// Where.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// Set the file's length.
    SetLen(u64),
    /// `fdatasync` of a file.
    SyncData(SyncSite),
    /// `fsync` of a directory.
    SyncDir(SyncSite),
    /// Renamed the file to `to`.
    Rename {
        /// The new path.
        to: PathBuf,
    },
    /// Removed the file.
    Remove,
    /// Created the directory.
    CreateDir,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpOutcome {
    /// Done.
    Done,
    /// Failed: power was lost before it (or earlier).
    PowerLost,
    /// A sync the mutation made do nothing.
    Skipped,
    /// A sync the mutation put off to the next operation.
    Deferred,
    /// The real file system refused it.
    Failed,
}

/// What a restart did to the pending changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// How this crash chose what survives.
    pub strategy: &'static str,
    /// Pending writes and truncations that survived whole.
    pub file_ops_kept: u64,
    /// Pending writes and truncations that were lost.
    pub file_ops_lost: u64,
    /// Pending writes that survived in part (some sectors).
    pub file_ops_torn: u64,
    /// Pending directory changes that survived.
    pub dir_ops_kept: u64,
    /// Pending directory changes that were lost.
    pub dir_ops_lost: u64,
}

/// Counters, for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Operations counted so far.
    pub ops: u64,
    /// Crashes so far.
    pub crashes: u64,
    /// Whether power is off now (crashed, not yet restarted).
    pub crashed: bool,
    /// Files or directories that existed on disk but not in the model when first used:
    /// something created them past the simulator.
    pub adopted: u64,
}

type Ino = u64;

enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone)]
enum DirOp {
    Link {
        name: OsString,
        ino: Ino,
    },
    Unlink {
        name: OsString,
        ino: Ino,
    },
    Rename {
        from: OsString,
        to: OsString,
        ino: Ino,
    },
}

enum Node {
    File {
        durable: Vec<u8>,
        pending: Vec<FileOp>,
    },
    Dir {
        durable: BTreeMap<OsString, Ino>,
        current: BTreeMap<OsString, Ino>,
        pending: Vec<DirOp>,
    },
}

struct State {
    root: PathBuf,
    root_ino: Ino,
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    epoch: u64,
    crashed: bool,
    ops: u64,
    crash_at: Option<u64>,
    /// A sync put off by [`SyncMutation::Defer`]: the file and how many of its pending
    /// operations it covers.
    deferred: Option<(Ino, usize)>,
    mutation: Option<SyncMutation>,
    log: VecDeque<OpRecord>,
    crashes: u64,
    adopted: u64,
    hold_background: bool,
    gate_open: bool,
}

struct Sim {
    state: Mutex<State>,
    changed: Condvar,
}

/// The power-loss simulator: a [`Vfs`] over the real files under one root directory. Cheap to
/// clone; clones share the simulated disk.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use strata_core::{EventData, EventStore, ExpectedVersion, StreamId};
/// use strata_log::io::PowerLossVfs;
/// use strata_log::{LogConfig, LogStore};
///
/// let root = tempfile::tempdir()?;
/// let vfs = PowerLossVfs::new(root.path())?;
/// let config = LogConfig { vfs: Arc::new(vfs.clone()), ..LogConfig::default() };
/// let dir = root.path().join("data");
/// let store = LogStore::open_with(&dir, config.clone())?;
/// let stream = StreamId::new("account-1")?;
/// let opened = EventData::json("AccountOpened", &serde_json::json!({}))?;
/// store.append(&stream, ExpectedVersion::NoStream, vec![opened]).await?;
/// vfs.crash(); // the power goes
/// drop(store);
/// for seed in 0..4 {
///     vfs.restart(seed)?; // one possible disk after the crash
///     let store = LogStore::open_with(&dir, config.clone())?;
///     // Acknowledged, so durable, whatever the crash kept of what was not synced.
///     assert_eq!(store.head().await?.map(|p| p.0), Some(0));
///     drop(store);
///     vfs.crash();
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PowerLossVfs {
    sim: Arc<Sim>,
}

fn power_lost() -> io::Error {
    io::Error::other("power lost (simulated crash)")
}

fn thread_name() -> Option<String> {
    std::thread::current().name().map(str::to_owned)
}

impl PowerLossVfs {
    /// A simulator over `root` (which must exist). What is under it now counts as durable.
    pub fn new(root: impl AsRef<Path>) -> io::Result<PowerLossVfs> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a directory", root.display()),
            ));
        }
        let mut st = State {
            root: root.clone(),
            root_ino: 0,
            nodes: HashMap::new(),
            next_ino: 0,
            epoch: 0,
            crashed: false,
            ops: 0,
            crash_at: None,
            deferred: None,
            mutation: None,
            log: VecDeque::new(),
            crashes: 0,
            adopted: 0,
            hold_background: false,
            gate_open: false,
        };
        st.root_ino = st.adopt(&root)?;
        st.adopted = 0;
        Ok(PowerLossVfs {
            sim: Arc::new(Sim {
                state: Mutex::new(st),
                changed: Condvar::new(),
            }),
        })
    }

    /// Makes one kind of sync misbehave from now on (`None`: none).
    pub fn set_mutation(&self, mutation: Option<SyncMutation>) {
        self.sim.state.lock().mutation = mutation;
    }

    /// Power is lost just before the `ops`-th operation from now (1: the next one), which
    /// fails like every one after it.
    pub fn crash_after(&self, ops: u64) {
        let mut st = self.sim.state.lock();
        st.crash_at = Some(st.ops + ops.max(1));
    }

    /// Cancels a crash armed by [`PowerLossVfs::crash_after`] that has not happened.
    pub fn disarm(&self) {
        self.sim.state.lock().crash_at = None;
    }

    /// Power is lost now, between operations.
    pub fn crash(&self) {
        let mut st = self.sim.state.lock();
        st.power_off();
        self.sim.changed.notify_all();
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        let st = self.sim.state.lock();
        SimStats {
            ops: st.ops,
            crashes: st.crashes,
            crashed: st.crashed,
            adopted: st.adopted,
        }
    }

    /// Whether power is off.
    pub fn is_crashed(&self) -> bool {
        self.sim.state.lock().crashed
    }

    /// Takes the operations recorded since the last call.
    pub fn take_log(&self) -> Vec<OpRecord> {
        self.sim.state.lock().log.drain(..).collect()
    }

    /// For reproducible runs: while `hold` is set, operations from threads started without a
    /// name (the engine's background index checkpoint) wait until [`run_background`] lets
    /// them through, so they never interleave with the writer's.
    ///
    /// [`run_background`]: PowerLossVfs::run_background
    pub fn hold_background(&self, hold: bool) {
        let mut st = self.sim.state.lock();
        st.hold_background = hold;
        st.gate_open = false;
        self.sim.changed.notify_all();
    }

    /// Lets held background operations run until `done` says so (it is given every operation
    /// recorded meanwhile, which it also takes from the log) or power is lost. Returns `false`
    /// when nothing happened for `idle` (the background work it waits for never came).
    pub fn run_background(
        &self,
        idle: Duration,
        mut done: impl FnMut(&[OpRecord]) -> bool,
    ) -> bool {
        let mut st = self.sim.state.lock();
        st.gate_open = true;
        self.sim.changed.notify_all();
        let finished = loop {
            let records: Vec<OpRecord> = st.log.drain(..).collect();
            if done(&records) || st.crashed {
                break true;
            }
            if self.sim.changed.wait_for(&mut st, idle).timed_out() && st.log.is_empty() {
                break false;
            }
        };
        st.gate_open = false;
        finished
    }

    /// Restarts after a crash (crashing first if power is still on): rewrites the real files
    /// under the root to one possible post-crash state, chosen by `seed`, which becomes the
    /// durable state. Call it once nothing holds the files any more (the store is dropped);
    /// handles opened before it fail for good.
    pub fn restart(&self, seed: u64) -> io::Result<CrashReport> {
        let mut rng = SplitMix64(seed);
        let strategy = match rng.below(20) {
            0..=2 => Strategy::LoseAll,
            3..=5 => Strategy::KeepAll,
            _ => Strategy::Mixed,
        };
        self.restart_with(strategy, rng)
    }

    /// Restarts after a crash keeping only what was synced: every pending write, truncation
    /// and directory change is lost. For targeted tests of one durability promise.
    pub fn restart_keeping_only_synced(&self) -> io::Result<CrashReport> {
        self.restart_with(Strategy::LoseAll, SplitMix64(0))
    }

    fn restart_with(&self, strategy: Strategy, mut rng: SplitMix64) -> io::Result<CrashReport> {
        let mut st = self.sim.state.lock();
        st.power_off();
        let mut report = CrashReport {
            strategy: strategy.name(),
            ..CrashReport::default()
        };
        let mut contents: HashMap<Ino, Vec<u8>> = HashMap::new();
        let mut visited = BTreeSet::new();
        let tree = st.surviving_dir(
            st.root_ino,
            strategy,
            &mut rng,
            &mut contents,
            &mut visited,
            &mut report,
        );
        // Rewrite the real files: everything under the root goes, then the survivors return.
        for entry in std::fs::read_dir(&st.root)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
        let root = st.root.clone();
        let root_ino = st.root_ino;
        let mut nodes = HashMap::new();
        materialize(&root, root_ino, &tree, &mut contents, &mut nodes)?;
        st.nodes = nodes;
        st.epoch += 1;
        st.crashed = false;
        st.crash_at = None;
        st.deferred = None;
        self.sim.changed.notify_all();
        Ok(report)
    }

    /// Starts an operation: waits at the background gate, fails when power is off or the
    /// handle is from before a restart, counts it, and crashes when it is the chosen one.
    fn begin(
        &self,
        epoch: Option<u64>,
        kind: &OpKind,
        path: &Path,
    ) -> io::Result<(MutexGuard<'_, State>, u64)> {
        let mut st = self.sim.state.lock();
        let thread = thread_name();
        if st.hold_background && thread.is_none() {
            while st.hold_background && !st.gate_open && !st.crashed {
                self.sim.changed.wait(&mut st);
            }
        }
        let stale = epoch.is_some_and(|e| e != st.epoch);
        if st.crashed || stale {
            st.record(0, kind.clone(), path, thread, OpOutcome::PowerLost);
            self.sim.changed.notify_all();
            return Err(power_lost());
        }
        st.ops += 1;
        let number = st.ops;
        if st.crash_at == Some(number) {
            st.power_off();
            st.record(number, kind.clone(), path, thread, OpOutcome::PowerLost);
            self.sim.changed.notify_all();
            return Err(power_lost());
        }
        if let Some((ino, n)) = st.deferred.take() {
            st.apply_sync(ino, n);
        }
        Ok((st, number))
    }

    fn finish(
        &self,
        mut st: MutexGuard<'_, State>,
        number: u64,
        kind: OpKind,
        path: &Path,
        outcome: OpOutcome,
    ) {
        st.record(number, kind, path, thread_name(), outcome);
        drop(st);
        self.sim.changed.notify_all();
    }

    /// Checks, for reads, that the handle still works.
    fn check_live(&self, epoch: u64) -> io::Result<()> {
        let st = self.sim.state.lock();
        if st.crashed || st.epoch != epoch {
            return Err(power_lost());
        }
        Ok(())
    }
}

impl State {
    fn power_off(&mut self) {
        if !self.crashed {
            self.crashed = true;
            self.crashes += 1;
        }
        self.deferred = None;
    }

    fn record(
        &mut self,
        number: u64,
        kind: OpKind,
        path: &Path,
        thread: Option<String>,
        outcome: OpOutcome,
    ) {
        if self.log.len() >= LOG_MAX_RECORDS {
            self.log.pop_front();
        }
        self.log.push_back(OpRecord {
            number,
            kind,
            path: path.to_path_buf(),
            thread,
            outcome,
        });
    }

    fn new_ino(&mut self, node: Node) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    /// Takes what is on disk at `path` into the model as durable.
    fn adopt(&mut self, path: &Path) -> io::Result<Ino> {
        self.adopted += 1;
        if path.is_dir() {
            let mut entries = BTreeMap::new();
            for entry in std::fs::read_dir(path)? {
                let entry = entry?;
                let ino = self.adopt(&entry.path())?;
                entries.insert(entry.file_name(), ino);
            }
            Ok(self.new_ino(Node::Dir {
                durable: entries.clone(),
                current: entries,
                pending: Vec::new(),
            }))
        } else {
            let bytes = std::fs::read(path)?;
            Ok(self.new_ino(Node::File {
                durable: bytes,
                pending: Vec::new(),
            }))
        }
    }

    /// The components of `path` under the root.
    fn relative<'p>(&self, path: &'p Path) -> io::Result<Vec<&'p std::ffi::OsStr>> {
        let rel = path.strip_prefix(&self.root).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is outside the simulated directory", path.display()),
            )
        })?;
        rel.components()
            .map(|c| match c {
                Component::Normal(n) => Ok(n),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unsupported path {}", path.display()),
                )),
            })
            .collect()
    }

    /// The inode at `path`, if it exists; something on disk the model does not know is
    /// adopted.
    fn lookup(&mut self, path: &Path) -> io::Result<Option<Ino>> {
        let parts = self.relative(path)?;
        let mut ino = self.root_ino;
        let mut at = self.root.clone();
        for name in parts {
            at.push(name);
            let Some(Node::Dir { current, .. }) = self.nodes.get(&ino) else {
                return Ok(None);
            };
            ino = match current.get(name) {
                Some(&child) => child,
                None if at.exists() => {
                    let child = self.adopt(&at)?;
                    if let Some(Node::Dir {
                        durable, current, ..
                    }) = self.nodes.get_mut(&ino)
                    {
                        durable.insert(name.to_owned(), child);
                        current.insert(name.to_owned(), child);
                    }
                    child
                }
                None => return Ok(None),
            };
        }
        Ok(Some(ino))
    }

    /// The directory holding `path`, and the file name.
    fn parent_of(&mut self, path: &Path) -> io::Result<(Ino, OsString)> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
            .to_owned();
        let parent = path.parent().unwrap_or(Path::new(""));
        match self.lookup(parent)? {
            Some(ino) if matches!(self.nodes.get(&ino), Some(Node::Dir { .. })) => Ok((ino, name)),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", parent.display()),
            )),
        }
    }

    fn dir_change(&mut self, dir: Ino, op: DirOp) {
        if let Some(Node::Dir {
            current, pending, ..
        }) = self.nodes.get_mut(&dir)
        {
            match &op {
                DirOp::Link { name, ino } => {
                    current.insert(name.clone(), *ino);
                }
                DirOp::Unlink { name, .. } => {
                    current.remove(name);
                }
                DirOp::Rename { from, to, ino } => {
                    current.remove(from);
                    current.insert(to.clone(), *ino);
                }
            }
            pending.push(op);
        }
    }

    /// Makes the first `n` pending operations of file `ino` durable.
    fn apply_sync(&mut self, ino: Ino, n: usize) {
        if let Some(Node::File { durable, pending }) = self.nodes.get_mut(&ino) {
            let n = n.min(pending.len());
            for op in pending.drain(..n) {
                match op {
                    FileOp::Write { offset, data } => write_into(durable, offset, &data),
                    FileOp::SetLen(len) => durable.resize(len as usize, 0),
                }
            }
        }
    }

    fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.nodes.get(&ino), Some(Node::Dir { .. }))
    }

    /// Which sync a directory sync is: told by the change that prompted it, the last one
    /// pending (a sync also makes every earlier pending change durable, as on a real file
    /// system, but a mutation removes one call site, not every sync of the directory).
    fn dir_sync_site(&self, ino: Ino) -> SyncSite {
        let Some(Node::Dir { pending, .. }) = self.nodes.get(&ino) else {
            return SyncSite::Other;
        };
        let is_segment = |n: &OsString| Path::new(n).extension().is_some_and(|e| e == "seg");
        match pending.last() {
            Some(DirOp::Link { ino, .. }) if self.is_dir(*ino) => SyncSite::DirectoryCreated,
            Some(DirOp::Link { name, .. }) if is_segment(name) => SyncSite::SegmentCreated,
            Some(DirOp::Link { name, .. }) if name == SNAPSHOT_FILE => SyncSite::SnapshotCreated,
            Some(DirOp::Unlink { name, .. }) if is_segment(name) => SyncSite::SegmentRemoved,
            Some(DirOp::Rename { to, .. }) if to == INDEX_FILE => SyncSite::IndexRenamed,
            _ => SyncSite::Other,
        }
    }

    /// The directory entries that survive a crash, recursively.
    fn surviving_dir(
        &self,
        ino: Ino,
        strategy: Strategy,
        rng: &mut SplitMix64,
        contents: &mut HashMap<Ino, Vec<u8>>,
        visited: &mut BTreeSet<Ino>,
        report: &mut CrashReport,
    ) -> BTreeMap<OsString, Survivor> {
        let mut out = BTreeMap::new();
        if !visited.insert(ino) {
            return out;
        }
        let Some(Node::Dir {
            durable, pending, ..
        }) = self.nodes.get(&ino)
        else {
            return out;
        };
        let mut entries = durable.clone();
        let fates = fates(strategy, pending.len(), rng, false);
        for (op, fate) in pending.iter().zip(fates) {
            if fate == Fate::Lost {
                report.dir_ops_lost += 1;
                continue;
            }
            report.dir_ops_kept += 1;
            match op {
                DirOp::Link { name, ino } => {
                    entries.insert(name.clone(), *ino);
                }
                DirOp::Unlink { name, ino } => {
                    if entries.get(name) == Some(ino) {
                        entries.remove(name);
                    }
                }
                DirOp::Rename { from, to, ino } => {
                    if entries.get(from) == Some(ino) {
                        entries.remove(from);
                    }
                    entries.insert(to.clone(), *ino);
                }
            }
        }
        for (name, child) in entries {
            match self.nodes.get(&child) {
                Some(Node::Dir { .. }) => {
                    let sub = self.surviving_dir(child, strategy, rng, contents, visited, report);
                    out.insert(name, Survivor::Dir(child, sub));
                }
                Some(Node::File { durable, pending }) => {
                    contents
                        .entry(child)
                        .or_insert_with(|| surviving_file(durable, pending, strategy, rng, report));
                    out.insert(name, Survivor::File(child));
                }
                None => {}
            }
        }
        out
    }
}

/// A directory entry after a crash.
enum Survivor {
    Dir(Ino, BTreeMap<OsString, Survivor>),
    File(Ino),
}

/// Writes the surviving tree under `path` and models it as durable.
fn materialize(
    path: &Path,
    ino: Ino,
    entries: &BTreeMap<OsString, Survivor>,
    contents: &mut HashMap<Ino, Vec<u8>>,
    nodes: &mut HashMap<Ino, Node>,
) -> io::Result<()> {
    let mut map = BTreeMap::new();
    for (name, survivor) in entries {
        let child_path = path.join(name);
        match survivor {
            Survivor::Dir(child, sub) => {
                std::fs::create_dir(&child_path)?;
                materialize(&child_path, *child, sub, contents, nodes)?;
                map.insert(name.clone(), *child);
            }
            Survivor::File(child) => {
                let bytes = match nodes.get(child) {
                    // The same file under a second name (a rename that both kept and lost
                    // its old entry): a hard link would share it; a copy is close enough.
                    Some(Node::File { durable, .. }) => durable.clone(),
                    _ => contents.remove(child).unwrap_or_default(),
                };
                std::fs::write(&child_path, &bytes)?;
                nodes.insert(
                    *child,
                    Node::File {
                        durable: bytes,
                        pending: Vec::new(),
                    },
                );
                map.insert(name.clone(), *child);
            }
        }
    }
    nodes.insert(
        ino,
        Node::Dir {
            durable: map.clone(),
            current: map,
            pending: Vec::new(),
        },
    );
    Ok(())
}

fn write_into(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset as usize..end].copy_from_slice(data);
}

/// How one crash chooses what survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// Everything pending is lost: only what was synced survives.
    LoseAll,
    /// Everything pending survives (what a killed process leaves).
    KeepAll,
    /// Each file and directory on its own: all, nothing, a prefix with the next one torn, or
    /// each operation kept, lost or torn independently.
    Mixed,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::LoseAll => "lose all pending",
            Strategy::KeepAll => "keep all pending",
            Strategy::Mixed => "mixed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Kept,
    Lost,
    Torn,
}

/// The fate of each of `n` pending operations of one file or directory.
fn fates(strategy: Strategy, n: usize, rng: &mut SplitMix64, can_tear: bool) -> Vec<Fate> {
    let tear = if can_tear { Fate::Torn } else { Fate::Lost };
    match strategy {
        Strategy::LoseAll => vec![Fate::Lost; n],
        Strategy::KeepAll => vec![Fate::Kept; n],
        Strategy::Mixed => match rng.below(4) {
            0 => vec![Fate::Lost; n],
            1 => vec![Fate::Kept; n],
            2 => {
                let keep = rng.below(n as u64 + 1) as usize;
                (0..n)
                    .map(|i| match i.cmp(&keep) {
                        std::cmp::Ordering::Less => Fate::Kept,
                        std::cmp::Ordering::Equal => tear,
                        std::cmp::Ordering::Greater => Fate::Lost,
                    })
                    .collect()
            }
            _ => (0..n)
                .map(|_| match rng.below(5) {
                    0 | 1 => Fate::Kept,
                    2 | 3 => Fate::Lost,
                    _ => tear,
                })
                .collect(),
        },
    }
}

/// A file's content after a crash: its durable image with the pending operations that
/// survive applied in order.
fn surviving_file(
    durable: &[u8],
    pending: &[FileOp],
    strategy: Strategy,
    rng: &mut SplitMix64,
    report: &mut CrashReport,
) -> Vec<u8> {
    let mut image = durable.to_vec();
    let fates = fates(strategy, pending.len(), rng, true);
    for (op, fate) in pending.iter().zip(fates) {
        match (op, fate) {
            (_, Fate::Lost) => report.file_ops_lost += 1,
            (FileOp::Write { offset, data }, Fate::Kept) => {
                report.file_ops_kept += 1;
                write_into(&mut image, *offset, data);
            }
            (FileOp::SetLen(len), Fate::Kept | Fate::Torn) => {
                report.file_ops_kept += 1;
                image.resize(*len as usize, 0);
            }
            (FileOp::Write { offset, data }, Fate::Torn) => {
                report.file_ops_torn += 1;
                let end = offset + data.len() as u64;
                // The file's new length may have reached the disk while data did not: then
                // what was not written reads as zeros.
                if rng.below(4) == 0 && (image.len() as u64) < end {
                    image.resize(end as usize, 0);
                }
                let mut sector = offset / SECTOR_BYTES * SECTOR_BYTES;
                while sector < end {
                    let from = sector.max(*offset);
                    let to = (sector + SECTOR_BYTES).min(end);
                    if rng.below(2) == 0 {
                        let part = &data[(from - offset) as usize..(to - offset) as usize];
                        write_into(&mut image, from, part);
                    }
                    sector += SECTOR_BYTES;
                }
            }
        }
    }
    image
}

/// A small seeded generator (SplitMix64): the same seed gives the same crash on every
/// platform and every version of the `rand` crate.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One open file of the simulator.
struct SimFile {
    vfs: PowerLossVfs,
    ino: Ino,
    epoch: u64,
    path: PathBuf,
    file: File,
}

impl SimFile {
    /// Which sync a file sync is: told by the file and by the operation that prompted it,
    /// the last one pending (see `State::dir_sync_site`).
    fn site(&self, pending: &[FileOp]) -> SyncSite {
        let name = self.path.file_name().unwrap_or_default();
        let in_segments = self
            .path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == SEGMENTS_DIR);
        if in_segments && Path::new(name).extension().is_some_and(|e| e == "seg") {
            match pending.last() {
                Some(FileOp::Write { offset, .. }) if *offset >= SEGMENT_HEADER_BYTES => {
                    SyncSite::SegmentRecords
                }
                Some(FileOp::Write { .. }) => SyncSite::SegmentHeader,
                Some(FileOp::SetLen(_)) => SyncSite::SegmentCut,
                None => SyncSite::Other,
            }
        } else if Path::new(name) == Path::new(INDEX_FILE).with_extension("tmp") {
            SyncSite::IndexData
        } else if name == SNAPSHOT_FILE {
            SyncSite::SnapshotData
        } else {
            SyncSite::Other
        }
    }
}

impl LogFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.vfs.check_live(self.epoch)?;
        self.file.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let kind = OpKind::Write {
            offset,
            len: buf.len() as u64,
        };
        let (mut st, number) = self.vfs.begin(Some(self.epoch), &kind, &self.path)?;
        if let Err(e) = self.file.write_all_at(buf, offset) {
            self.vfs
                .finish(st, number, kind, &self.path, OpOutcome::Failed);
            return Err(e);
        }
        if let Some(Node::File { pending, .. }) = st.nodes.get_mut(&self.ino) {
            pending.push(FileOp::Write {
                offset,
                data: buf.to_vec(),
            });
        }
        self.vfs
            .finish(st, number, kind, &self.path, OpOutcome::Done);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let probe = OpKind::SyncData(SyncSite::Other);
        let (mut st, number) = self.vfs.begin(Some(self.epoch), &probe, &self.path)?;
        let (site, n) = match st.nodes.get(&self.ino) {
            Some(Node::File { pending, .. }) => (self.site(pending), pending.len()),
            _ => (SyncSite::Other, 0),
        };
        let outcome = match st.mutation {
            Some(SyncMutation::Skip(s)) if s == site => OpOutcome::Skipped,
            Some(SyncMutation::Defer(s)) if s == site => {
                st.deferred = Some((self.ino, n));
                OpOutcome::Deferred
            }
            _ => {
                st.apply_sync(self.ino, n);
                OpOutcome::Done
            }
        };
        self.vfs
            .finish(st, number, OpKind::SyncData(site), &self.path, outcome);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let kind = OpKind::SetLen(len);
        let (mut st, number) = self.vfs.begin(Some(self.epoch), &kind, &self.path)?;
        if let Err(e) = self.file.set_len(len) {
            self.vfs
                .finish(st, number, kind, &self.path, OpOutcome::Failed);
            return Err(e);
        }
        if let Some(Node::File { pending, .. }) = st.nodes.get_mut(&self.ino) {
            pending.push(FileOp::SetLen(len));
        }
        self.vfs
            .finish(st, number, kind, &self.path, OpOutcome::Done);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        self.vfs.check_live(self.epoch)?;
        Ok(self.file.metadata()?.len())
    }
}

impl Vfs for PowerLossVfs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        let probe = OpKind::Open { created: false };
        let (mut st, number) = self.begin(None, &probe, path)?;
        let existing = st.lookup(path)?;
        let created = existing.is_none() && create;
        let kind = OpKind::Open { created };
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(created)
            .truncate(false)
            .open(path);
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                self.finish(st, number, kind, path, OpOutcome::Failed);
                return Err(e);
            }
        };
        let ino = match existing {
            Some(ino) => ino,
            None => {
                let (dir, name) = st.parent_of(path)?;
                let ino = st.new_ino(Node::File {
                    durable: Vec::new(),
                    pending: Vec::new(),
                });
                st.dir_change(dir, DirOp::Link { name, ino });
                ino
            }
        };
        let epoch = st.epoch;
        self.finish(st, number, kind, path, OpOutcome::Done);
        Ok(Arc::new(SimFile {
            vfs: self.clone(),
            ino,
            epoch,
            path: path.to_path_buf(),
            file,
        }))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let probe = OpKind::SyncDir(SyncSite::Other);
        let (mut st, number) = self.begin(None, &probe, path)?;
        let Some(ino) = st.lookup(path)?.filter(|&i| st.is_dir(i)) else {
            self.finish(st, number, probe, path, OpOutcome::Failed);
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", path.display()),
            ));
        };
        let site = st.dir_sync_site(ino);
        let outcome = match st.mutation {
            // A deferred directory sync has no later operation to wait for in this model:
            // treat it as skipped.
            Some(SyncMutation::Skip(s) | SyncMutation::Defer(s)) if s == site => OpOutcome::Skipped,
            _ => {
                if let Some(Node::Dir {
                    durable,
                    current,
                    pending,
                }) = st.nodes.get_mut(&ino)
                {
                    *durable = current.clone();
                    pending.clear();
                }
                OpOutcome::Done
            }
        };
        self.finish(st, number, OpKind::SyncDir(site), path, outcome);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let kind = OpKind::Rename {
            to: to.to_path_buf(),
        };
        let (mut st, number) = self.begin(None, &kind, from)?;
        let Some(ino) = st.lookup(from)? else {
            self.finish(st, number, kind, from, OpOutcome::Failed);
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {}", from.display()),
            ));
        };
        let (from_dir, from_name) = st.parent_of(from)?;
        let (to_dir, to_name) = st.parent_of(to)?;
        if let Err(e) = std::fs::rename(from, to) {
            self.finish(st, number, kind, from, OpOutcome::Failed);
            return Err(e);
        }
        if from_dir == to_dir {
            st.dir_change(
                from_dir,
                DirOp::Rename {
                    from: from_name,
                    to: to_name,
                    ino,
                },
            );
        } else {
            st.dir_change(
                from_dir,
                DirOp::Unlink {
                    name: from_name,
                    ino,
                },
            );
            st.dir_change(to_dir, DirOp::Link { name: to_name, ino });
        }
        self.finish(st, number, kind, from, OpOutcome::Done);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let (mut st, number) = self.begin(None, &OpKind::Remove, path)?;
        let Some(ino) = st.lookup(path)? else {
            self.finish(st, number, OpKind::Remove, path, OpOutcome::Failed);
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {}", path.display()),
            ));
        };
        let (dir, name) = st.parent_of(path)?;
        if let Err(e) = std::fs::remove_file(path) {
            self.finish(st, number, OpKind::Remove, path, OpOutcome::Failed);
            return Err(e);
        }
        st.dir_change(dir, DirOp::Unlink { name, ino });
        self.finish(st, number, OpKind::Remove, path, OpOutcome::Done);
        Ok(())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let (mut st, number) = self.begin(None, &OpKind::CreateDir, path)?;
        let (parent, name) = match st.parent_of(path) {
            Ok(p) => p,
            Err(e) => {
                self.finish(st, number, OpKind::CreateDir, path, OpOutcome::Failed);
                return Err(e);
            }
        };
        if let Err(e) = std::fs::create_dir(path) {
            self.finish(st, number, OpKind::CreateDir, path, OpOutcome::Failed);
            return Err(e);
        }
        let ino = st.new_ino(Node::Dir {
            durable: BTreeMap::new(),
            current: BTreeMap::new(),
            pending: Vec::new(),
        });
        st.dir_change(parent, DirOp::Link { name, ino });
        self.finish(st, number, OpKind::CreateDir, path, OpOutcome::Done);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A simulator over a fresh directory with `data/` created and synced.
    fn setup() -> (tempfile::TempDir, PowerLossVfs, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let vfs = PowerLossVfs::new(root.path()).unwrap();
        let data = root.path().join("data");
        vfs.create_dir(&data).unwrap();
        vfs.sync_dir(root.path()).unwrap();
        (root, vfs, data)
    }

    /// The distinct contents of `path` over `seeds` crashes of the same history.
    fn outcomes(
        history: impl Fn(&PowerLossVfs, &Path),
        path: &str,
        seeds: u64,
    ) -> BTreeSet<Option<Vec<u8>>> {
        let mut seen = BTreeSet::new();
        for seed in 0..seeds {
            let (_root, vfs, data) = setup();
            history(&vfs, &data);
            vfs.restart(seed).unwrap();
            seen.insert(std::fs::read(data.join(path)).ok());
        }
        seen
    }

    #[test]
    fn synced_writes_survive_and_unsynced_ones_may_not() {
        let seen = outcomes(
            |vfs, data| {
                let f = vfs.open(&data.join("f"), true).unwrap();
                vfs.sync_dir(data).unwrap();
                f.write_all_at(b"durable", 0).unwrap();
                f.sync_data().unwrap();
                f.write_all_at(b"-pending", 7).unwrap();
            },
            "f",
            64,
        );
        // Lost, kept, or its sectors lost after the new length reached the disk (zeros).
        let expected: BTreeSet<_> = [
            Some(b"durable".to_vec()),
            Some(b"durable-pending".to_vec()),
            Some(b"durable\0\0\0\0\0\0\0\0".to_vec()),
        ]
        .into_iter()
        .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_pending_write_is_torn_at_sector_boundaries_only() {
        let old = vec![b'o'; 4 * SECTOR_BYTES as usize];
        let new = vec![b'n'; 4 * SECTOR_BYTES as usize];
        let mut mixed = false;
        for seed in 0..200 {
            let (_root, vfs, data) = setup();
            let f = vfs.open(&data.join("f"), true).unwrap();
            vfs.sync_dir(&data).unwrap();
            f.write_all_at(&old, 0).unwrap();
            f.sync_data().unwrap();
            // Starts and ends mid-sector.
            f.write_all_at(&new[..1500], 100).unwrap();
            vfs.restart(seed).unwrap();
            let got = std::fs::read(data.join("f")).unwrap();
            assert_eq!(got.len(), old.len(), "seed {seed}");
            let mut kinds = BTreeSet::new();
            for (s, sector) in got.chunks(SECTOR_BYTES as usize).enumerate() {
                let start = s * SECTOR_BYTES as usize;
                let written = |i: usize| (100..1600).contains(&(start + i));
                let all_new = sector
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == if written(i) { b'n' } else { b'o' });
                let all_old = sector.iter().all(|&b| b == b'o');
                assert!(
                    all_new || all_old,
                    "seed {seed}: sector {s} is neither old nor new"
                );
                if (0..SECTOR_BYTES as usize).any(written) {
                    kinds.insert(all_new && !all_old);
                }
            }
            mixed |= kinds.len() == 2;
        }
        assert!(mixed, "no crash tore the write");
    }

    #[test]
    fn an_unsynced_new_file_may_vanish_and_a_synced_one_stays() {
        let seen = outcomes(
            |vfs, data| {
                let f = vfs.open(&data.join("f"), true).unwrap();
                f.write_all_at(b"x", 0).unwrap();
                f.sync_data().unwrap();
            },
            "f",
            64,
        );
        assert!(
            seen.contains(&None) && seen.contains(&Some(b"x".to_vec())),
            "{seen:?}"
        );
        let seen = outcomes(
            |vfs, data| {
                let f = vfs.open(&data.join("f"), true).unwrap();
                f.write_all_at(b"x", 0).unwrap();
                f.sync_data().unwrap();
                vfs.sync_dir(data).unwrap();
            },
            "f",
            64,
        );
        assert_eq!(seen, [Some(b"x".to_vec())].into_iter().collect());
    }

    #[test]
    fn an_unsynced_rename_may_revert_and_is_atomic() {
        let history = |vfs: &PowerLossVfs, data: &Path| {
            for (name, body) in [("a", b"old"), ("b", b"new")] {
                let f = vfs.open(&data.join(name), true).unwrap();
                f.write_all_at(body, 0).unwrap();
                f.sync_data().unwrap();
            }
            vfs.sync_dir(data).unwrap();
            vfs.rename(&data.join("b"), &data.join("a")).unwrap();
        };
        let mut states = BTreeSet::new();
        for seed in 0..64 {
            let (_root, vfs, data) = setup();
            history(&vfs, &data);
            vfs.restart(seed).unwrap();
            states.insert((
                std::fs::read(data.join("a")).ok(),
                std::fs::read(data.join("b")).ok(),
            ));
        }
        let expected: BTreeSet<_> = [
            (Some(b"old".to_vec()), Some(b"new".to_vec())),
            (Some(b"new".to_vec()), None),
        ]
        .into_iter()
        .collect();
        assert_eq!(states, expected);
    }

    #[test]
    fn an_unsynced_directory_may_vanish_with_everything_in_it() {
        let seen = outcomes(
            |vfs, data| {
                let sub = data.join("sub");
                vfs.create_dir(&sub).unwrap();
                let f = vfs.open(&sub.join("f"), true).unwrap();
                f.write_all_at(b"x", 0).unwrap();
                f.sync_data().unwrap();
                vfs.sync_dir(&sub).unwrap();
            },
            "sub/f",
            64,
        );
        assert!(
            seen.contains(&None) && seen.contains(&Some(b"x".to_vec())),
            "{seen:?}"
        );
    }

    #[test]
    fn after_a_crash_every_operation_fails_and_old_handles_stay_dead() {
        let (_root, vfs, data) = setup();
        let f = vfs.open(&data.join("f"), true).unwrap();
        vfs.sync_dir(&data).unwrap();
        vfs.crash_after(2);
        f.write_all_at(b"a", 0).unwrap();
        assert!(f.sync_data().is_err());
        assert!(vfs.is_crashed());
        assert!(f.write_all_at(b"b", 0).is_err());
        assert!(f.read_at(&mut [0u8; 1], 0).is_err());
        assert!(vfs.open(&data.join("g"), true).is_err());
        vfs.restart(0).unwrap();
        assert!(
            f.size().is_err(),
            "a handle from before the crash still works"
        );
        let g = vfs.open(&data.join("f"), false).unwrap();
        g.write_all_at(b"c", 0).unwrap();
        assert_eq!(vfs.stats().crashes, 1);
    }

    #[test]
    fn a_skipped_or_deferred_sync_leaves_the_data_pending() {
        for mutation in [
            SyncMutation::Skip(SyncSite::Other),
            SyncMutation::Defer(SyncSite::Other),
        ] {
            let mut lost = false;
            for seed in 0..64 {
                let (_root, vfs, data) = setup();
                let f = vfs.open(&data.join("f"), true).unwrap();
                vfs.sync_dir(&data).unwrap();
                vfs.set_mutation(Some(mutation));
                f.write_all_at(b"x", 0).unwrap();
                f.sync_data().unwrap();
                vfs.restart(seed).unwrap();
                lost |= std::fs::read(data.join("f")).unwrap().is_empty();
            }
            assert!(lost, "{mutation:?}: the data never got lost");
        }
        // A deferred sync takes effect at the next operation.
        for seed in 0..64 {
            let (_root, vfs, data) = setup();
            let f = vfs.open(&data.join("f"), true).unwrap();
            vfs.sync_dir(&data).unwrap();
            vfs.set_mutation(Some(SyncMutation::Defer(SyncSite::Other)));
            f.write_all_at(b"x", 0).unwrap();
            f.sync_data().unwrap();
            vfs.open(&data.join("f"), false).unwrap();
            vfs.restart(seed).unwrap();
            assert_eq!(std::fs::read(data.join("f")).unwrap(), b"x", "seed {seed}");
        }
    }

    #[test]
    fn syncs_are_told_apart_by_site() {
        let (_root, vfs, data) = setup();
        let segs = data.join(SEGMENTS_DIR);
        vfs.create_dir(&segs).unwrap();
        vfs.sync_dir(&data).unwrap();
        let seg = vfs
            .open(&segs.join("00000000000000000001.seg"), true)
            .unwrap();
        seg.set_len(0).unwrap();
        seg.write_all_at(&[1; 64], 0).unwrap();
        seg.sync_data().unwrap();
        vfs.sync_dir(&segs).unwrap();
        seg.write_all_at(&[2; 64], 64).unwrap();
        seg.sync_data().unwrap();
        seg.set_len(100).unwrap();
        seg.sync_data().unwrap();
        let sites: Vec<OpKind> = vfs
            .take_log()
            .into_iter()
            .filter(|r| matches!(r.kind, OpKind::SyncData(_) | OpKind::SyncDir(_)))
            .map(|r| r.kind)
            .collect();
        assert_eq!(
            sites,
            [
                OpKind::SyncDir(SyncSite::DirectoryCreated),
                OpKind::SyncDir(SyncSite::DirectoryCreated),
                OpKind::SyncData(SyncSite::SegmentHeader),
                OpKind::SyncDir(SyncSite::SegmentCreated),
                OpKind::SyncData(SyncSite::SegmentRecords),
                OpKind::SyncData(SyncSite::SegmentCut),
            ]
        );
    }
}
