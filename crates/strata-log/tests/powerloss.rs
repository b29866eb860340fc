//! Power-loss simulation: the embedded store runs on [`PowerLossVfs`], which models the page
//! cache (writes since a file's last `fdatasync`, and directory entries since its directory's
//! last fsync, may be lost, kept or torn at 512-byte sectors at a crash). A seeded run drives
//! random appends (single and multi-event, several streams, every expected-version mode,
//! idempotent retries), snapshot saves and deletes, index checkpoints and clean reopens through
//! it, beside the reference model (`MemoryStore`). Power is cut at a random I/O operation
//! (sometimes again while the store recovers); the simulator rewrites the files to one possible
//! post-crash state; the store reopens and must hold every acknowledged append exactly once, in
//! order, at its acknowledged versions and positions, plus at most the one append that was in
//! flight, whole or not at all. Snapshots must be ones that were saved, never ones deleted
//! durably. After each recovery the store is closed and `strata_log::verify` must pass; the run
//! continues from the recovered state. At the end the directory is opened on the real file
//! system and compared once more.
//!
//! The mutation tests make one sync misbehave in the simulator (skipped, or taking effect only
//! at the next operation: an append acknowledged before its sync) and assert that some seed
//! catches it, printing the seed.
//!
//! Environment:
//! - `STRATA_POWERLOSS_RUNS`: number of runs (seeds 0..runs; default 250, 8 crashes each).
//! - `STRATA_POWERLOSS_SEED`: run this one seed only (a failure prints its seed).
//! - `STRATA_POWERLOSS_MUTATION`: run with a mutation on (`skip:segment-records`,
//!   `defer:segment-records`, ... see `MUTATIONS`), to replay a documented catch.
//! - `STRATA_POWERLOSS_TRACE=ops`: a failure's trace shows every I/O operation and the files
//!   after each restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_core::{
    AppendError, AppendResult, EventData, EventStore, ExpectedVersion, Position, ReadAllOptions,
    ReadError, ReadStreamOptions, RecordedEvent, Snapshot, SnapshotStore, StreamId, Uuid,
};
use strata_log::io::{OpKind, OpOutcome, OpRecord, PowerLossVfs, StdVfs, SyncMutation, SyncSite};
use strata_log::{LogConfig, LogStore};
use strata_testkit::MemoryStore;

/// Runs in CI: 250 runs of 8 crashes, 2,000 crash points.
const RUNS_DEFAULT: u64 = 250;
/// Crash points per run (crashes while recovering count too).
const CRASHES_PER_RUN: u64 = 8;
/// Power is cut at the n-th I/O operation after the store opens, n uniform in 1..=this.
const CRASH_OPS_MAX: u64 = 80;
/// Steps between two crashes at most: a crash that did not happen by then happens between
/// two operations.
const STEPS_PER_CRASH_MAX: u64 = 40;
/// Seeds a mutation test tries before it fails for not catching the mutation.
const MUTATION_SEEDS_MAX: u64 = 1_000;
/// How long the background checkpoint may do nothing before a run fails for it (a hang
/// guard: it normally finishes in microseconds).
const BACKGROUND_IDLE: Duration = Duration::from_secs(60);

const STREAMS: [&str; 5] = ["account-1", "account-2", "order-1", "order-2", "user-x"];
const TYPES: [&str; 3] = ["Opened", "Deposited", "Closed"];
const SCHEMA: u32 = 1;

/// The mutations a test can switch on by name.
const MUTATIONS: [(&str, SyncMutation); 11] = [
    (
        "skip:segment-records",
        SyncMutation::Skip(SyncSite::SegmentRecords),
    ),
    (
        "defer:segment-records",
        SyncMutation::Defer(SyncSite::SegmentRecords),
    ),
    (
        "skip:segment-header",
        SyncMutation::Skip(SyncSite::SegmentHeader),
    ),
    ("skip:segment-cut", SyncMutation::Skip(SyncSite::SegmentCut)),
    (
        "skip:segment-created",
        SyncMutation::Skip(SyncSite::SegmentCreated),
    ),
    (
        "skip:segment-removed",
        SyncMutation::Skip(SyncSite::SegmentRemoved),
    ),
    ("skip:index-data", SyncMutation::Skip(SyncSite::IndexData)),
    (
        "skip:index-renamed",
        SyncMutation::Skip(SyncSite::IndexRenamed),
    ),
    (
        "skip:directory-created",
        SyncMutation::Skip(SyncSite::DirectoryCreated),
    ),
    (
        "skip:snapshot-data",
        SyncMutation::Skip(SyncSite::SnapshotData),
    ),
    (
        "skip:snapshot-created",
        SyncMutation::Skip(SyncSite::SnapshotCreated),
    ),
];

fn mutation_name(m: SyncMutation) -> &'static str {
    MUTATIONS
        .iter()
        .find(|(_, x)| *x == m)
        .map_or("?", |(n, _)| n)
}

/// A directory for a run's files: on tmpfs when there is one. The simulator models what the
/// disk keeps, so the real files need no durability, and creating and removing files on a
/// journaled file system is several times slower.
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("strata-powerloss")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// A small seeded generator (SplitMix64), so a seed means the same run everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// An append as sent, to resend it (an idempotent retry) or to place it after a crash.
#[derive(Clone)]
struct Sent {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<EventData>,
}

/// What the run knows about one stream's snapshots.
#[derive(Default)]
struct SnapModel {
    /// Every save since the last durable delete: a load may return any of them.
    saves: Vec<(u64, Vec<u8>)>,
    /// Saves since the snapshot file was last made durable (by a delete, or by a crash).
    unsynced: Vec<u64>,
    /// The newest version known durable: a load must return at least this.
    floor: Option<u64>,
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
struct Summary {
    crash_points: u64,
    crashes_in_recovery: u64,
    appends_acked: u64,
    unacked_survived: u64,
    unacked_lost: u64,
    ops: u64,
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn comparable(e: &RecordedEvent) -> (Uuid, String, u64, u64, String, Vec<u8>) {
    (
        e.event_id,
        e.stream_id.to_string(),
        e.stream_version,
        e.position.0,
        e.event_type.clone(),
        e.data.clone(),
    )
}

fn append_key(r: &Result<AppendResult, AppendError>) -> String {
    match r {
        Ok(r) => format!("ok {} {:?}", r.stream_version, r.positions),
        Err(AppendError::WrongExpectedVersion { actual, .. }) => format!("wrong version {actual}"),
        Err(AppendError::EventIdConflict { event_id, .. }) => format!("conflict {event_id}"),
        Err(e) => format!("error: {e}"),
    }
}

fn read_key(r: Result<Vec<RecordedEvent>, ReadError>) -> String {
    match r {
        Ok(evs) => format!("{:?}", evs.iter().map(comparable).collect::<Vec<_>>()),
        Err(ReadError::StreamNotFound(s)) => format!("not found {s}"),
        Err(e) => format!("error: {e}"),
    }
}

async fn all_events(store: &dyn EventStore) -> Result<Vec<RecordedEvent>, String> {
    let mut out = Vec::new();
    let mut from = Position(0);
    loop {
        let page = store
            .read_all(ReadAllOptions::forward().from(from).limit(1_000))
            .await
            .map_err(|e| format!("reading $all: {e}"))?;
        out.extend(page.events);
        match page.next {
            Some(n) if !page.is_end => from = n,
            _ => return Ok(out),
        }
    }
}

/// Counts background index checkpoints: each segment the writer creates starts one on a
/// thread without a name, which ends with its directory sync (or fails with the power).
#[derive(Default)]
struct Background {
    pending: i64,
}

impl Background {
    fn account(&mut self, records: &[OpRecord]) {
        for r in records {
            let seg = r.path.extension().is_some_and(|e| e == "seg");
            match (&r.kind, r.thread.as_deref(), r.outcome) {
                (OpKind::Open { created: true }, Some("strata-writer"), OpOutcome::Done) if seg => {
                    self.pending += 1
                }
                (OpKind::SyncDir(_), None, OpOutcome::Done | OpOutcome::Skipped) => {
                    self.pending -= 1
                }
                _ => {}
            }
        }
    }
}

struct Run {
    rng: Rng,
    _root: tempfile::TempDir,
    dir: PathBuf,
    vfs: PowerLossVfs,
    config: LogConfig,
    store: Option<LogStore>,
    model: MemoryStore,
    sent: Vec<Sent>,
    /// The append in flight when power was lost: it may have survived, whole.
    uncertain: Option<Sent>,
    snaps: HashMap<&'static str, SnapModel>,
    background: Background,
    next_id: u128,
    counter: u64,
    summary: Summary,
    trace: VecDeque<String>,
    /// `STRATA_POWERLOSS_TRACE=ops`: the trace shows every I/O operation and the files after
    /// each restart.
    trace_ops: bool,
}

impl Run {
    fn new(seed: u64, mutation: Option<SyncMutation>) -> Run {
        let mut rng = Rng(seed);
        let root = scratch_dir();
        let dir = root.path().join("data");
        let vfs = PowerLossVfs::new(root.path()).unwrap();
        vfs.set_mutation(mutation);
        vfs.hold_background(true);
        let config = LogConfig {
            segment_max_bytes: [4096, 4096, 8192, 16384][rng.below(4) as usize],
            use_index_file: rng.below(5) != 0,
            map_reads: false,
            accept_data_loss: false,
            vfs: Arc::new(vfs.clone()),
            ..LogConfig::default()
        };
        Run {
            rng,
            _root: root,
            dir,
            vfs,
            config,
            store: None,
            model: MemoryStore::new(),
            sent: Vec::new(),
            uncertain: None,
            snaps: HashMap::new(),
            background: Background::default(),
            next_id: u128::from(seed) << 64,
            counter: 0,
            summary: Summary::default(),
            trace: VecDeque::new(),
            trace_ops: std::env::var("STRATA_POWERLOSS_TRACE").is_ok_and(|v| v == "ops"),
        }
    }

    fn note(&mut self, line: String) {
        let keep = if self.trace_ops { 400 } else { 40 };
        if self.trace.len() == keep {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn store(&self) -> &LogStore {
        self.store.as_ref().expect("the store is open")
    }

    fn crashed(&self) -> bool {
        self.vfs.is_crashed()
    }

    /// Counts the index files an open queued for the background (sealed segments without
    /// one), which `settle` then waits for like those of segments sealed by a step.
    fn opened(&mut self, store: &LogStore) {
        self.background.pending += store.open_report().segment_indexes_missing as i64;
    }

    /// Lets a background checkpoint the last step started finish, so that its operations
    /// never interleave with the next step's (a seed then always means the same run).
    fn settle(&mut self) -> Check {
        let log = self.vfs.take_log();
        if self.trace_ops {
            for r in &log {
                let name = r.path.file_name().unwrap_or_default().to_string_lossy();
                let line = format!("    op {} {:?} {name}: {:?}", r.number, r.kind, r.outcome);
                self.note(line);
            }
        }
        self.background.account(&log);
        if self.background.pending > 0 && !self.crashed() {
            let background = &mut self.background;
            let finished = self.vfs.run_background(BACKGROUND_IDLE, |records| {
                background.account(records);
                background.pending <= 0
            });
            ensure!(finished, "the background index checkpoint never finished");
        }
        Ok(())
    }

    async fn run(&mut self) -> Result<Summary, String> {
        self.store = Some(self.open().await?);
        let target = CRASHES_PER_RUN;
        while self.summary.crash_points < target {
            self.phase().await?;
            self.recover().await?;
        }
        self.finish().await?;
        self.summary.ops = self.vfs.stats().ops;
        ensure!(
            self.vfs.stats().adopted == 0,
            "{} files or directories were created past the Vfs",
            self.vfs.stats().adopted
        );
        Ok(self.summary)
    }

    /// Opens the store through the simulator; a crash while it recovers is restarted from.
    async fn open(&mut self) -> Result<LogStore, String> {
        loop {
            match LogStore::open_with(&self.dir, self.config.clone()) {
                Ok(s) => {
                    self.opened(&s);
                    self.settle()?;
                    if !self.crashed() {
                        return Ok(s);
                    }
                    // Lost while the open's background work (segment index files) ran.
                    drop(s);
                    LogStore::wait_for_dropped();
                    self.summary.crash_points += 1;
                    self.summary.crashes_in_recovery += 1;
                    self.note("power lost after opening, writing segment index files".to_owned());
                    self.restart()?;
                }
                Err(e) if self.crashed() => {
                    self.summary.crash_points += 1;
                    self.summary.crashes_in_recovery += 1;
                    self.note(format!("power lost while opening: {e}"));
                    self.restart()?;
                }
                Err(e) => return Err(format!("opening after a crash failed: {e}")),
            }
        }
    }

    fn restart(&mut self) -> Check {
        let seed = self.rng.next();
        let report = self
            .vfs
            .restart(seed)
            .map_err(|e| format!("restart failed: {e}"))?;
        self.background = Background::default();
        self.note(format!("restart: {report:?}"));
        if self.trace_ops {
            for line in listing(&self.dir, &self.dir) {
                self.note(line);
            }
        }
        Ok(())
    }

    /// Random steps until the power goes.
    async fn phase(&mut self) -> Check {
        let at = self.rng.range(1, CRASH_OPS_MAX);
        self.vfs.crash_after(at);
        self.note(format!("power will be lost at operation {at} from now"));
        let steps = self.rng.range(1, STEPS_PER_CRASH_MAX);
        for _ in 0..steps {
            self.step().await?;
            self.settle()?;
            if self.crashed() {
                break;
            }
        }
        if !self.crashed() {
            self.note("power lost between operations".to_owned());
            self.vfs.crash();
        }
        self.summary.crash_points += 1;
        Ok(())
    }

    fn new_events(&mut self, n: u64) -> Vec<EventData> {
        (0..n)
            .map(|k| {
                self.next_id += 1;
                self.counter += 1;
                let pad = match self.rng.below(20) {
                    0 => self.rng.range(600, 1500),
                    1..=5 => self.rng.range(120, 600),
                    _ => self.rng.below(120),
                } as usize;
                let t = TYPES[self.rng.below(3) as usize];
                EventData::json(
                    t,
                    &serde_json::json!({ "n": self.counter, "k": k, "pad": "p".repeat(pad) }),
                )
                .unwrap()
                .with_id(Uuid::from_u128(self.next_id))
            })
            .collect()
    }

    async fn step(&mut self) -> Check {
        let store = self.store().clone();
        match self.rng.below(100) {
            0..=54 => {
                let stream = StreamId::new(STREAMS[self.rng.below(5) as usize]).unwrap();
                let current = self
                    .model
                    .stream_info(&stream)
                    .await
                    .map_err(|e| e.to_string())?
                    .current_version;
                let expected = match self.rng.below(6) {
                    0 | 1 => ExpectedVersion::Any,
                    2 => ExpectedVersion::NoStream,
                    3 => ExpectedVersion::StreamExists,
                    4 => ExpectedVersion::Exact(current.unwrap_or(0)),
                    _ => ExpectedVersion::Exact(self.rng.below(8)),
                };
                let n = if self.rng.below(2) == 0 {
                    1
                } else {
                    self.rng.range(2, 5)
                };
                let events = self.new_events(n);
                self.append(
                    &store,
                    Sent {
                        stream,
                        expected,
                        events,
                    },
                )
                .await?;
            }
            55..=64 if !self.sent.is_empty() => {
                let sent = self.sent[self.rng.below(self.sent.len() as u64) as usize].clone();
                self.append(&store, sent).await?;
            }
            65..=74 => {
                let name = STREAMS[self.rng.below(5) as usize];
                let stream = StreamId::new(name).unwrap();
                let version = self
                    .model
                    .stream_info(&stream)
                    .await
                    .map_err(|e| e.to_string())?
                    .current_version
                    .unwrap_or(0);
                self.counter += 1;
                let pad = self.rng.below(700) as usize;
                let data = format!(
                    "{{\"snap\":{},\"pad\":\"{}\"}}",
                    self.counter,
                    "s".repeat(pad)
                )
                .into_bytes();
                let snapshot = Snapshot {
                    stream_id: stream,
                    stream_version: version,
                    schema_version: SCHEMA,
                    data: data.clone(),
                    taken_at: strata_core::timestamp_from_micros(0),
                };
                let r = store.save_snapshot(snapshot).await;
                self.note(format!("save snapshot {name} v{version}: {:?}", r.is_ok()));
                match r {
                    Ok(()) => {}
                    Err(e) => ensure!(self.crashed(), "snapshot save failed: {e}"),
                }
                let m = self.snaps.entry(name).or_default();
                m.saves.push((version, data));
                m.unsynced.push(version);
            }
            75..=77 => {
                let name = STREAMS[self.rng.below(5) as usize];
                let stream = StreamId::new(name).unwrap();
                let r = store.delete_snapshots(&stream).await;
                self.note(format!("delete snapshots {name}: {r:?}"));
                match r {
                    Ok(count) => {
                        *self.snaps.entry(name).or_default() = SnapModel::default();
                        if count > 0 {
                            // The delete's fdatasync made every save before it durable.
                            for m in self.snaps.values_mut() {
                                if let Some(&v) = m.unsynced.iter().max() {
                                    m.floor = Some(m.floor.map_or(v, |f| f.max(v)));
                                }
                                m.unsynced.clear();
                            }
                        }
                    }
                    Err(e) => {
                        ensure!(self.crashed(), "snapshot delete failed: {e}");
                        self.snaps.entry(name).or_default().floor = None;
                    }
                }
            }
            78..=82 => {
                let r = store.checkpoint_index();
                self.note(format!("checkpoint: {:?}", r.is_ok()));
                if let Err(e) = r {
                    ensure!(self.crashed(), "index checkpoint failed: {e}");
                }
            }
            83..=92 => {
                let stream = StreamId::new(STREAMS[self.rng.below(5) as usize]).unwrap();
                let o = ReadStreamOptions::forward();
                let a = read_key(store.read_stream(&stream, o.clone()).await);
                let b = read_key(self.model.read_stream(&stream, o).await);
                ensure!(a == b, "read of {stream} differs from the model:\n{a}\n{b}");
            }
            _ => {
                self.note("clean reopen".to_owned());
                drop(store);
                self.store = None;
                // As a process would before its next step: the writer has let go.
                LogStore::wait_for_dropped();
                self.settle()?;
                if self.crashed() {
                    return Ok(());
                }
                match LogStore::open_with(&self.dir, self.config.clone()) {
                    Ok(s) => {
                        self.opened(&s);
                        self.settle()?;
                        self.store = Some(s);
                    }
                    Err(e) => ensure!(self.crashed(), "a clean reopen failed: {e}"),
                }
            }
        }
        Ok(())
    }

    async fn append(&mut self, store: &LogStore, sent: Sent) -> Check {
        let r = store
            .append(&sent.stream, sent.expected, sent.events.clone())
            .await;
        self.note(format!(
            "append {} {:?} x{} (first id {}): {}",
            sent.stream,
            sent.expected,
            sent.events.len(),
            sent.events[0].event_id.unwrap_or_default(),
            append_key(&r)
        ));
        match r {
            Err(_) if self.crashed() => {
                // Unacknowledged: it may be on disk, whole, or not at all.
                self.uncertain = Some(sent.clone());
            }
            Err(AppendError::Stopped(reason)) => {
                return Err(format!("the store stopped without a crash: {reason}"))
            }
            r => {
                let m = self
                    .model
                    .append(&sent.stream, sent.expected, sent.events.clone())
                    .await;
                ensure!(
                    append_key(&r) == append_key(&m),
                    "append answered {} where the model answered {}",
                    append_key(&r),
                    append_key(&m)
                );
                if r.is_ok() {
                    self.summary.appends_acked += 1;
                }
            }
        }
        self.sent.push(sent);
        Ok(())
    }

    /// After a crash: restart, reopen (perhaps crashing again), check, close, verify, reopen.
    async fn recover(&mut self) -> Check {
        self.store = None;
        LogStore::wait_for_dropped();
        self.restart()?;
        // What `strata verify` says of the state power loss left, before anything repairs it.
        let raw = strata_log::verify(&self.dir);
        let crash_in_recovery = self.rng.below(4) == 0;
        if crash_in_recovery {
            let at = self.rng.range(1, 12);
            self.note(format!("power will be lost at operation {at} of recovery"));
            self.vfs.crash_after(at);
        }
        let store = self.open().await?;
        self.vfs.disarm();
        if !crash_in_recovery {
            // Open and verify read the same state: they agree on it.
            let raw = raw.map_err(|e| format!("verify refused a state that open took: {e}"))?;
            ensure!(
                raw.events == store.open_report().events,
                "verify counted {} events where open kept {}",
                raw.events,
                store.open_report().events
            );
        }
        self.check_recovered(&store).await?;
        // The store accepts appends again (the next phase appends) and verify passes.
        drop(store);
        LogStore::wait_for_dropped();
        self.settle()?;
        ensure!(!self.crashed(), "power lost with no crash armed");
        let report =
            strata_log::verify(&self.dir).map_err(|e| format!("verify after recovery: {e}"))?;
        let head = self.model.head().await.map_err(|e| e.to_string())?;
        ensure!(
            report.events == head.map_or(0, |p| p.0 + 1),
            "verify counted {} events where {} are stored",
            report.events,
            head.map_or(0, |p| p.0 + 1)
        );
        ensure!(
            report.torn_tail.is_none(),
            "verify found a torn tail after a clean close: {:?}",
            report.torn_tail
        );
        let store = LogStore::open_with(&self.dir, self.config.clone())
            .map_err(|e| format!("reopening after verify: {e}"))?;
        self.opened(&store);
        self.settle()?;
        self.store = Some(store);
        Ok(())
    }

    /// Everything acknowledged is there, once, in order; then at most the append that was in
    /// flight, whole; streams and snapshots agree with the model.
    async fn check_recovered(&mut self, store: &LogStore) -> Check {
        let got = all_events(store).await?;
        let want = all_events(&self.model).await?;
        ensure!(
            got.len() >= want.len(),
            "acknowledged events lost: {} stored, {} acknowledged",
            got.len(),
            want.len()
        );
        for (g, w) in got.iter().zip(&want) {
            ensure!(
                comparable(g) == comparable(w),
                "position {}: found {:?}, acknowledged {:?}",
                w.position.0,
                comparable(g),
                comparable(w)
            );
        }
        let rest = &got[want.len()..];
        let uncertain = self.uncertain.take();
        if rest.is_empty() {
            if uncertain.is_some() {
                self.summary.unacked_lost += 1;
            }
        } else {
            let Some(u) = uncertain else {
                return Err(format!(
                    "{} events after the acknowledged ones, with no append in flight",
                    rest.len()
                ));
            };
            ensure!(
                rest.len() == u.events.len(),
                "part of an unacknowledged append is visible: {} of its {} events",
                rest.len(),
                u.events.len()
            );
            for (g, e) in rest.iter().zip(&u.events) {
                ensure!(
                    g.stream_id == u.stream
                        && Some(g.event_id) == e.event_id
                        && g.event_type == e.event_type
                        && g.data == e.data,
                    "events after the acknowledged ones are not the append in flight"
                );
            }
            let m = self
                .model
                .append(&u.stream, ExpectedVersion::Any, u.events.clone())
                .await
                .map_err(|e| format!("the model refused the surviving append: {e}"))?;
            ensure!(
                m.positions == rest.iter().map(|e| e.position).collect::<Vec<_>>()
                    && m.stream_version == rest.last().map_or(0, |e| e.stream_version),
                "the surviving append has positions or versions the model does not"
            );
            self.summary.unacked_survived += 1;
        }
        for s in STREAMS {
            let stream = StreamId::new(s).unwrap();
            let a = read_key(
                store
                    .read_stream(&stream, ReadStreamOptions::forward())
                    .await,
            );
            let b = read_key(
                self.model
                    .read_stream(&stream, ReadStreamOptions::forward())
                    .await,
            );
            ensure!(a == b, "stream {s} differs from the model:\n{a}\n{b}");
            let info = store
                .stream_info(&stream)
                .await
                .map_err(|e| e.to_string())?;
            let model_info = self
                .model
                .stream_info(&stream)
                .await
                .map_err(|e| e.to_string())?;
            ensure!(
                info.current_version == model_info.current_version,
                "stream {s} is at {:?}, the model at {:?}",
                info.current_version,
                model_info.current_version
            );
        }
        for s in STREAMS {
            let stream = StreamId::new(s).unwrap();
            let loaded = store
                .load_snapshot(&stream, SCHEMA, None)
                .await
                .map_err(|e| format!("loading the snapshot of {s}: {e}"))?;
            let m = self.snaps.entry(s).or_default();
            match &loaded {
                None => ensure!(
                    m.floor.is_none(),
                    "the durable snapshot of {s} (version {:?}) is gone",
                    m.floor
                ),
                Some(snap) => {
                    ensure!(
                        m.saves
                            .iter()
                            .any(|(v, d)| *v == snap.stream_version && *d == snap.data),
                        "the snapshot of {s} at version {} was never saved, or was deleted",
                        snap.stream_version
                    );
                    ensure!(
                        m.floor.is_none_or(|f| snap.stream_version >= f),
                        "the snapshot of {s} went back from durable version {:?} to {}",
                        m.floor,
                        snap.stream_version
                    );
                }
            }
            // What survived the crash is on disk for good.
            m.floor = loaded.map(|s| s.stream_version);
            m.unsynced.clear();
        }
        Ok(())
    }

    /// Closes, verifies, and opens the directory once more on the real file system.
    async fn finish(&mut self) -> Check {
        self.store = None;
        LogStore::wait_for_dropped();
        self.settle()?;
        strata_log::verify(&self.dir).map_err(|e| format!("final verify: {e}"))?;
        let config = LogConfig {
            vfs: Arc::new(StdVfs),
            ..self.config.clone()
        };
        let store = LogStore::open_with(&self.dir, config)
            .map_err(|e| format!("opening on the real file system: {e}"))?;
        let got = all_events(&store).await?;
        let want = all_events(&self.model).await?;
        ensure!(
            got.iter().map(comparable).eq(want.iter().map(comparable)),
            "the real file system holds {} events, the model {}",
            got.len(),
            want.len()
        );
        let stream = StreamId::new("final").unwrap();
        store
            .append(&stream, ExpectedVersion::NoStream, self.new_events(1))
            .await
            .map_err(|e| format!("an append after the last recovery: {e}"))?;
        Ok(())
    }
}

/// Runs one seed; a violation comes back with the seed, the mutation and the last steps.
fn run_seed(seed: u64, mutation: Option<SyncMutation>) -> Result<Summary, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut run = Run::new(seed, mutation);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(run.run())));
    let failure = match result {
        Ok(Ok(summary)) => return Ok(summary),
        Ok(Err(e)) => e,
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".to_owned()),
    };
    // Let a held background checkpoint go, so that closing the store does not wait for it.
    run.vfs.hold_background(false);
    let trace: Vec<String> = run.trace.iter().cloned().collect();
    let mutation = mutation.map_or("none", mutation_name);
    Err(format!(
        "power-loss violation, seed {seed}, mutation {mutation}: {failure}\n  last steps:\n  {}\n  \
         rerun: STRATA_POWERLOSS_SEED={seed} STRATA_POWERLOSS_MUTATION={mutation} cargo test -p strata-log --test powerloss",
        trace.join("\n  ")
    ))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

fn env_mutation() -> Option<SyncMutation> {
    let name = std::env::var("STRATA_POWERLOSS_MUTATION").ok()?;
    if name == "none" {
        return None;
    }
    let found = MUTATIONS.iter().find(|(n, _)| *n == name);
    Some(
        found
            .unwrap_or_else(|| {
                panic!(
                    "unknown STRATA_POWERLOSS_MUTATION {name:?}; known: {:?}",
                    MUTATIONS.map(|(n, _)| n)
                )
            })
            .1,
    )
}

/// Runs `seeds` on every core; returns the totals, or the failure of the lowest failing seed.
fn run_seeds(seeds: Vec<u64>, mutation: Option<SyncMutation>) -> Result<Summary, String> {
    let seeds = Arc::new(Mutex::new(seeds.into_iter()));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let results: Vec<(Summary, Vec<(u64, String)>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let seeds = seeds.clone();
                std::thread::Builder::new()
                    .name(format!("powerloss-{t}"))
                    .spawn_scoped(scope, move || {
                        let mut total = Summary::default();
                        let mut failures = Vec::new();
                        loop {
                            let Some(seed) = seeds.lock().unwrap().next() else {
                                break;
                            };
                            match run_seed(seed, mutation) {
                                Ok(s) => total.add(&s),
                                Err(e) => failures.push((seed, e)),
                            }
                        }
                        (total, failures)
                    })
                    .unwrap()
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total = Summary::default();
    let mut failures = Vec::new();
    for (s, f) in results {
        total.add(&s);
        failures.extend(f);
    }
    failures.sort();
    match failures.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(total),
    }
}

impl Summary {
    fn add(&mut self, o: &Summary) {
        self.crash_points += o.crash_points;
        self.crashes_in_recovery += o.crashes_in_recovery;
        self.appends_acked += o.appends_acked;
        self.unacked_survived += o.unacked_survived;
        self.unacked_lost += o.unacked_lost;
        self.ops += o.ops;
    }
}

/// The proof: acknowledged appends survive power loss at any I/O operation.
#[test]
fn acknowledged_appends_survive_power_loss() {
    let seeds: Vec<u64> = match env_u64("STRATA_POWERLOSS_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("STRATA_POWERLOSS_RUNS").unwrap_or(RUNS_DEFAULT)).collect(),
    };
    let runs = seeds.len() as u64;
    let started = Instant::now();
    let total = run_seeds(seeds, env_mutation()).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "power loss: {runs} runs, {} crash points ({} while recovering), {} I/O operations, \
         {} appends acknowledged, {} unacknowledged appends survived and {} did not, in {:.1?}",
        total.crash_points,
        total.crashes_in_recovery,
        total.ops,
        total.appends_acked,
        total.unacked_survived,
        total.unacked_lost,
        started.elapsed()
    );
    assert!(total.crash_points >= runs * CRASHES_PER_RUN);
}

/// Seeds of this test that caught durability bugs in Strata, kept whatever the default range.
const REGRESSION_SEEDS: [(u64, &str); 2] = [
    (
        0,
        "the data directory and segments/ were created without an fsync of their parent",
    ),
    (
        1030,
        "snapshots.log was created without an fsync of the data directory",
    ),
];

#[test]
fn seeds_that_caught_durability_bugs_pass() {
    for (seed, bug) in REGRESSION_SEEDS {
        if let Err(e) = run_seed(seed, None) {
            panic!("seed {seed} caught a bug again ({bug}):\n{e}");
        }
    }
}

/// Searches seeds until one catches `mutation`; fails when none does.
fn assert_caught(mutation: SyncMutation) {
    for seed in 0..MUTATION_SEEDS_MAX {
        if let Err(e) = run_seed(seed, Some(mutation)) {
            eprintln!("{} caught by seed {seed}:\n{e}", mutation_name(mutation));
            return;
        }
    }
    panic!(
        "{} was not caught in {MUTATION_SEEDS_MAX} runs",
        mutation_name(mutation)
    );
}

#[test]
fn removing_the_batch_fdatasync_is_caught() {
    assert_caught(SyncMutation::Skip(SyncSite::SegmentRecords));
}

#[test]
fn acknowledging_before_the_batch_fdatasync_is_caught() {
    assert_caught(SyncMutation::Defer(SyncSite::SegmentRecords));
}

#[test]
fn removing_the_directory_fsync_after_a_new_segment_is_caught() {
    assert_caught(SyncMutation::Skip(SyncSite::SegmentCreated));
}

#[test]
fn removing_the_fdatasync_after_sealing_a_segment_is_caught() {
    assert_caught(SyncMutation::Skip(SyncSite::SegmentCut));
}

#[test]
fn removing_the_fdatasync_of_a_new_segment_header_is_caught() {
    assert_caught(SyncMutation::Skip(SyncSite::SegmentHeader));
}

#[test]
fn removing_the_snapshot_file_fdatasync_is_caught() {
    assert_caught(SyncMutation::Skip(SyncSite::SnapshotData));
}

/// The files under `dir`, with their sizes.
fn listing(root: &std::path::Path, dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            out.extend(listing(root, &e));
        } else {
            let len = e.metadata().map_or(0, |m| m.len());
            let name = e.strip_prefix(root).unwrap_or(&e).display().to_string();
            out.push(format!("    file {name}: {len} bytes"));
        }
    }
    out
}

/// A fresh store in a directory it creates (two levels), an acknowledged append, then power
/// loss keeping only what was synced. Returns the head after reopening.
fn new_directory_scenario(mutation: Option<SyncMutation>) -> Option<Position> {
    let root = scratch_dir();
    let vfs = PowerLossVfs::new(root.path()).unwrap();
    vfs.set_mutation(mutation);
    let dir = root.path().join("var").join("data");
    let config = LogConfig {
        map_reads: false,
        vfs: Arc::new(vfs.clone()),
        ..LogConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = LogStore::open_with(&dir, config.clone()).unwrap();
        let stream = StreamId::new("account-1").unwrap();
        let e = EventData::json("Opened", &serde_json::json!({})).unwrap();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![e])
            .await
            .unwrap();
        vfs.crash();
        drop(store);
        LogStore::wait_for_dropped();
        vfs.restart_keeping_only_synced().unwrap();
        let store = LogStore::open_with(&dir, config).unwrap();
        store.head().await.unwrap()
    })
}

/// The directories a store creates are durable before anything in them is acknowledged:
/// their entries in their parents are fsynced.
#[test]
fn an_append_to_a_new_data_directory_survives_power_loss() {
    assert_eq!(
        new_directory_scenario(None),
        Some(Position(0)),
        "the acknowledged append was lost with its directory"
    );
    // And the same scenario catches the fsync's removal.
    assert_eq!(
        new_directory_scenario(Some(SyncMutation::Skip(SyncSite::DirectoryCreated))),
        None
    );
}

/// A fresh store: snapshots of two streams saved, one stream's deleted (an fdatasync, which
/// makes the other's save durable too), then power loss keeping only what was synced.
/// Returns what loads for the other stream after reopening.
fn snapshot_file_scenario(mutation: Option<SyncMutation>) -> Option<Vec<u8>> {
    let root = scratch_dir();
    let vfs = PowerLossVfs::new(root.path()).unwrap();
    vfs.set_mutation(mutation);
    let dir = root.path().join("data");
    let config = LogConfig {
        map_reads: false,
        vfs: Arc::new(vfs.clone()),
        ..LogConfig::default()
    };
    let snapshot = |stream: &str, data: &[u8]| Snapshot {
        stream_id: StreamId::new(stream).unwrap(),
        stream_version: 0,
        schema_version: SCHEMA,
        data: data.to_vec(),
        taken_at: strata_core::timestamp_from_micros(0),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = LogStore::open_with(&dir, config.clone()).unwrap();
        store
            .save_snapshot(snapshot("account-1", b"{\"kept\":true}"))
            .await
            .unwrap();
        store
            .save_snapshot(snapshot("account-2", b"{}"))
            .await
            .unwrap();
        let account_2 = StreamId::new("account-2").unwrap();
        assert_eq!(store.delete_snapshots(&account_2).await.unwrap(), 1);
        vfs.crash();
        drop(store);
        LogStore::wait_for_dropped();
        vfs.restart_keeping_only_synced().unwrap();
        let store = LogStore::open_with(&dir, config).unwrap();
        let account_1 = StreamId::new("account-1").unwrap();
        store
            .load_snapshot(&account_1, SCHEMA, None)
            .await
            .unwrap()
            .map(|s| s.data)
    })
}

/// The snapshot file's directory entry is durable before a delete's fdatasync promises that
/// the saves before it are.
#[test]
fn snapshot_saves_made_durable_by_a_delete_survive_power_loss() {
    assert_eq!(
        snapshot_file_scenario(None),
        Some(b"{\"kept\":true}".to_vec()),
        "a save made durable by a delete was lost with the snapshot file"
    );
    assert_eq!(
        snapshot_file_scenario(Some(SyncMutation::Skip(SyncSite::SnapshotCreated))),
        None
    );
}
