//! Scavenging: a sealed segment rewritten without the events readers can no longer see
//! (see [`strata_core::scavenge`]), one segment at a time, crash-safe at every step.
//!
//! The new segment keeps the old one's number, salt and first position, and its surviving
//! records as they were (each marked the end of an append: the rest of an append may go) at
//! new offsets; it is marked scavenged (format version 2: its
//! records skip the positions and stream versions removed). Its index file (version 4) lists
//! the events kept and where the removed ones were. The steps:
//!
//! 1. the new segment is written to `NNN.stmp` and fsynced;
//! 2. its index file is written to `NNN.tmp`, fsynced, renamed over `NNN.idx`, and the
//!    directory fsynced;
//! 3. `NNN.stmp` is renamed over `NNN.seg` and the directory fsynced.
//!
//! A crash before 2 leaves the old files (the temp files are removed on the next open); one
//! between 2 and 3 leaves the old segment with the new index file, which does not match it
//! (another length): the old segment is scanned, every event still there, and its index file
//! written again; one after 3 leaves the new segment and its file.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_core::scavenge::{
    removable, ProgressFn, ScavengeError, ScavengeProgress, ScavengeReport,
};
use strata_core::{ReadError, SnapshotStore, StreamId, Uuid};

use crate::error::OpenError;
use crate::format::{
    encode_removed_runs, DecodedRecord, RecordRef, RemovedRuns, SegmentHeader, FLAG_COMMIT,
    SEGMENT_HEADER_BYTES,
};
use crate::index::{
    encode_scavenged_segment_index, loc, NewEntry, SealedSegment, SegmentIndexFile,
};
use crate::io::{write_file_atomic, Vfs};
use crate::recovery::{read_removed_runs, scan_segment, segment_index_path, ScanEnd};
use crate::segment::{segment_file_name, Segment};
use crate::store::{blocking, LogStore};
use crate::writer::Shared;

/// Bytes of the new segment buffered before they are written.
const REWRITE_BUFFER_BYTES: usize = 1 << 20;

/// What rewriting one segment made.
pub(crate) struct Rewrite {
    /// The new segment, open.
    pub segment: Arc<Segment>,
    /// Its index file, as written (checked when it is loaded).
    pub index_file: SegmentIndexFile,
    /// Events removed, and the segment's bytes before and after.
    pub removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The versions removed, per stream (one run each: a stream's events in a segment hold
    /// consecutive versions, but for those removed before).
    pub removed_versions: Vec<(String, std::ops::Range<u64>)>,
    /// When its first event left was recorded, `None` when none is left.
    pub first_at_us: Option<i64>,
}

/// An event kept, owned until the index file is encoded.
struct Kept {
    position: u64,
    offset: u64,
    recorded_at_us: i64,
    stream: StreamId,
    event_type: String,
    event_id: Uuid,
}

/// A scavenge's pace: the bytes of segment data it reads per second, at most. A rewrite that
/// gets ahead sleeps (on its own thread, at the lowest priority) until it is back on pace, in
/// slices, giving up when the store starts closing (a close then waits for no sleep). Time
/// spent behind the pace (a swap, fsyncs, a starved thread) is forgiven beyond
/// [`Pace::MAX_LAG`]: the rewrite does not then read flat out to catch up.
pub(crate) struct Pace {
    bytes_per_sec: u64,
    started: std::time::Instant,
    /// Time behind the pace forgiven so far.
    forgiven: std::time::Duration,
    /// Bytes read in segments finished before this one.
    before: u64,
    /// Bytes read in this one.
    here: u64,
    /// Set when the store starts closing.
    closing: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a paced rewrite stopped: the store is closing.
pub(crate) struct Closing;

impl Pace {
    /// The most a rewrite may lag behind its pace and then catch up on.
    const MAX_LAG: std::time::Duration = std::time::Duration::from_millis(100);
    /// The longest sleep between two looks at whether the store is closing.
    const SLICE: std::time::Duration = std::time::Duration::from_millis(20);

    /// `bytes_per_sec` from now on, giving up when `closing` is set; `None` for 0 (unpaced).
    pub(crate) fn new(
        bytes_per_sec: u64,
        closing: Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<Pace> {
        (bytes_per_sec > 0).then(|| Pace {
            bytes_per_sec,
            started: std::time::Instant::now(),
            forgiven: std::time::Duration::ZERO,
            before: 0,
            here: 0,
            closing,
        })
    }

    /// The next segment starts.
    pub(crate) fn next_segment(&mut self) {
        self.before += self.here;
        self.here = 0;
    }

    /// The rewrite has read its segment up to byte `offset`: sleeps while that is ahead of
    /// the pace by more than a millisecond's worth; `Err` when the store starts closing.
    fn reached(&mut self, offset: u64) -> Result<(), Closing> {
        use std::sync::atomic::Ordering;
        let mut wait = self.ahead(offset, self.started.elapsed());
        while let Some(w) = wait {
            if self.closing.load(Ordering::Acquire) {
                return Err(Closing);
            }
            std::thread::sleep(w.min(Self::SLICE));
            wait = w.checked_sub(Self::SLICE).filter(|w| !w.is_zero());
        }
        match self.closing.load(Ordering::Acquire) {
            true => Err(Closing),
            false => Ok(()),
        }
    }

    /// How long to wait, having read this segment up to `offset` after `elapsed`: the time
    /// those bytes are due at the pace, less `elapsed` (less the time forgiven), when that is
    /// over a millisecond. A lag over [`Pace::MAX_LAG`] is forgiven down to it.
    fn ahead(&mut self, offset: u64, elapsed: std::time::Duration) -> Option<std::time::Duration> {
        self.here = offset;
        let due = std::time::Duration::from_secs_f64(
            (self.before + self.here) as f64 / self.bytes_per_sec as f64,
        );
        let mut elapsed = elapsed.saturating_sub(self.forgiven);
        if elapsed > due + Self::MAX_LAG {
            self.forgiven += elapsed - due - Self::MAX_LAG;
            elapsed = due + Self::MAX_LAG;
        }
        (due > elapsed + std::time::Duration::from_millis(1)).then(|| due - elapsed)
    }
}

/// The temp file a rewrite of segment `no` writes first (removed on open when a crash left
/// it).
pub(crate) fn segment_temp_path(seg_dir: &Path, no: u64) -> PathBuf {
    seg_dir.join(segment_file_name(no)).with_extension("stmp")
}

/// Rewrites sealed segment `seg`, which covers the positions up to `end_position`, without
/// the records `remove` picks (see the [module](self) docs); `Ok(None)` when it picks none
/// (nothing is written). The old segment's file stays open for those reading it.
pub(crate) fn rewrite_segment(
    vfs: &dyn Vfs,
    seg_dir: &Path,
    seg: &Segment,
    end_position: u64,
    mut remove: impl FnMut(&DecodedRecord<'_>) -> bool,
    mut pace: Option<&mut Pace>,
) -> Result<Option<Rewrite>, String> {
    let no = seg.header.segment_no;
    // What earlier scavenges removed from it: the runs go on in the new file.
    let earlier = match seg.header.scavenged {
        true => read_removed_runs(seg)?,
        false => Vec::new(),
    };
    let mut header = SegmentHeader {
        scavenged: true,
        runs_at: SEGMENT_HEADER_BYTES,
        ..seg.header
    };
    let tmp = segment_temp_path(seg_dir, no);
    let mut out: Option<Arc<dyn crate::io::LogFile>> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(REWRITE_BUFFER_BYTES);
    let mut written = 0u64;
    let mut kept: Vec<Kept> = Vec::new();
    let mut removed = 0u64;
    let mut removed_versions: std::collections::HashMap<String, std::ops::Range<u64>> =
        std::collections::HashMap::new();
    let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    let mut failed: Option<String> = None;
    let end = scan_segment(seg, SEGMENT_HEADER_BYTES, |at, r| {
        if let Some(p) = pace.as_deref_mut() {
            if p.reached(at).is_err() {
                return Err(OpenError::Io {
                    context: "rewriting a segment".to_owned(),
                    source: std::io::Error::other("the store is closing"),
                });
            }
        }
        if remove(r) {
            removed += 1;
            let v = r.stream_version;
            removed_versions
                .entry(r.stream_id.to_owned())
                .and_modify(|run| *run = run.start.min(v)..run.end.max(v + 1))
                .or_insert(v..v + 1);
            return Ok(());
        }
        // Written as it was (the CRC takes the salt, which is kept), but marked the end of an
        // append: every append of a sealed segment was whole, and the rest of its own may be
        // removed.
        let offset = SEGMENT_HEADER_BYTES + written + buf.len() as u64;
        RecordRef {
            flags: r.flags | FLAG_COMMIT,
            ..r.to_ref()
        }
        .encode_into(header.salt, &mut buf);
        kept.push(Kept::of(r, offset, &seg.path)?);
        if buf.len() >= REWRITE_BUFFER_BYTES && failed.is_none() {
            let flushed = flush(vfs, &tmp, &header, &mut out, &mut buf, &mut written);
            failed = flushed.err().map(|e| io("writing", e));
        }
        Ok(())
    });
    let end = match end {
        Ok(end) => end,
        Err(e) => {
            drop(out);
            let _ = vfs.remove(&tmp);
            return Err(e.to_string());
        }
    };
    if let ScanEnd::Invalid { offset, reason } = end {
        drop(out);
        let _ = vfs.remove(&tmp);
        return Err(format!(
            "{} is not whole at byte {offset}: {reason}",
            seg.path.display()
        ));
    }
    if let Some(e) = failed {
        drop(out);
        let _ = vfs.remove(&tmp);
        return Err(e);
    }
    if removed == 0 {
        drop(out);
        let _ = vfs.remove(&tmp);
        return Ok(None);
    }
    let runs = merge_runs(earlier, &removed_versions)?;
    // The records, then the runs after them, then the header saying where they start.
    let records_end = SEGMENT_HEADER_BYTES + written + buf.len() as u64;
    header.runs_at = records_end;
    encode_removed_runs(&runs, header.salt, &mut buf);
    let synced = flush(vfs, &tmp, &header, &mut out, &mut buf, &mut written).and_then(|()| {
        let f = out.as_ref().expect("created by the flush");
        f.write_all_at(&header.encode(), 0)?;
        f.sync_data()
    });
    if let Err(e) = synced {
        drop(out);
        let _ = vfs.remove(&tmp);
        return Err(io("writing", e));
    }
    let bytes_after = SEGMENT_HEADER_BYTES + written;
    let bytes = encode_kept(&header, end_position, records_end, &kept, &runs)?;
    let first_at_us = kept.first().map(|k| k.recorded_at_us);
    drop(kept);
    let idx = segment_index_path(seg_dir, no);
    let path = seg_dir.join(segment_file_name(no));
    let swapped = write_file_atomic(vfs, &idx, &bytes)
        .and_then(|()| vfs.rename(&tmp, &path))
        .and_then(|()| vfs.sync_dir(seg_dir));
    if let Err(e) = swapped {
        return Err(format!("replacing {}: {e}", path.display()));
    }
    let index_file = SegmentIndexFile::check(bytes, idx)?;
    let file = out.ok_or("the rewritten segment was not opened")?;
    let bytes_before = seg.file.size().unwrap_or(0);
    let segment = Arc::new(Segment::new(path, file, header));
    segment.seal(bytes_after);
    Ok(Some(Rewrite {
        segment,
        index_file,
        removed,
        bytes_before,
        bytes_after,
        removed_versions: removed_versions.into_iter().collect(),
        first_at_us,
    }))
}

impl Kept {
    /// Record `r` of segment `file`, at `offset` in the new one.
    fn of(r: &DecodedRecord<'_>, offset: u64, file: &Path) -> Result<Kept, OpenError> {
        Ok(Kept {
            position: r.position,
            offset,
            recorded_at_us: r.recorded_at_us,
            stream: StreamId::new(r.stream_id).map_err(|e| OpenError::Corruption {
                file: file.to_owned(),
                offset,
                reason: e.to_string(),
            })?,
            event_type: r.event_type.to_owned(),
            event_id: r.event_id,
        })
    }
}

/// The index file (version 4) of the scavenged segment of `header`, covering positions up
/// to `end_position`, whose records end at `end_offset`, holding the events `kept` and the
/// removed runs `runs`.
fn encode_kept(
    header: &SegmentHeader,
    end_position: u64,
    end_offset: u64,
    kept: &[Kept],
    runs: &[(String, Range<u64>)],
) -> Result<Vec<u8>, String> {
    let no = header.segment_no;
    let sealed = SealedSegment {
        segment_no: no,
        salt: header.salt,
        first: header.first_position,
        end_position,
        end_offset,
    };
    let events: Vec<NewEntry<'_>> = kept
        .iter()
        .map(|k| NewEntry {
            position: k.position,
            loc: loc(no, k.offset),
            recorded_at_us: k.recorded_at_us,
            stream: &k.stream,
            event_type: &k.event_type,
            event_id: k.event_id,
        })
        .collect();
    encode_scavenged_segment_index(sealed, &events, runs)
}

/// The runs `earlier` scavenges removed from a segment with those this one removes:
/// one run per stream (their union must be one), sorted by stream.
fn merge_runs(
    earlier: RemovedRuns,
    now: &HashMap<String, Range<u64>>,
) -> Result<RemovedRuns, String> {
    let mut runs: std::collections::BTreeMap<String, Range<u64>> = earlier.into_iter().collect();
    for (stream, v) in now {
        match runs.get_mut(stream) {
            None => {
                runs.insert(stream.clone(), v.clone());
            }
            Some(r) if v.start <= r.end && v.end >= r.start => {
                *r = r.start.min(v.start)..r.end.max(v.end);
            }
            Some(r) => {
                return Err(format!(
                    "stream {stream}: versions {v:?} removed now do not join {r:?} removed before from the same segment"
                ))
            }
        }
    }
    Ok(runs.into_iter().collect())
}

/// Writes the index file of scavenged segment `seg` (covering the positions up to
/// `end_position`) again from its records, when it is missing or does not match: the
/// segment is read whole, and must end in a whole COMMIT record. (An index file is derived
/// data: this writes what it must hold, whatever else an open finds.)
pub(crate) fn index_scavenged_segment(
    vfs: &dyn Vfs,
    seg_dir: &Path,
    seg: &Segment,
    end_position: u64,
) -> Result<SegmentIndexFile, String> {
    let runs = read_removed_runs(seg)?;
    let mut kept = Vec::new();
    let mut committed = true;
    let end = scan_segment(seg, SEGMENT_HEADER_BYTES, |offset, r| {
        kept.push(Kept::of(r, offset, &seg.path)?);
        committed = r.is_commit();
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if let ScanEnd::Invalid { offset, reason } = end {
        return Err(format!("it is not whole at byte {offset}: {reason}"));
    }
    if !committed {
        return Err("its last record is not the end of an append".to_owned());
    }
    let records_end = seg.header.runs_at;
    let bytes = encode_kept(&seg.header, end_position, records_end, &kept, &runs)?;
    let idx = segment_index_path(seg_dir, seg.header.segment_no);
    write_file_atomic(vfs, &idx, &bytes).map_err(|e| format!("writing {}: {e}", idx.display()))?;
    SegmentIndexFile::check(bytes, idx)
}

/// Writes what `buf` holds to the new segment `tmp` (created, with `header`, on the first
/// write), after the `written` bytes of records already there.
fn flush(
    vfs: &dyn Vfs,
    tmp: &Path,
    header: &SegmentHeader,
    out: &mut Option<Arc<dyn crate::io::LogFile>>,
    buf: &mut Vec<u8>,
    written: &mut u64,
) -> std::io::Result<()> {
    let file = match out {
        Some(f) => f.clone(),
        None => {
            let f = vfs.open(tmp, true)?;
            f.set_len(0)?;
            f.write_all_at(&header.encode(), 0)?;
            *out = Some(f.clone());
            f
        }
    };
    file.write_all_at(buf, SEGMENT_HEADER_BYTES + *written)?;
    file.write_out(SEGMENT_HEADER_BYTES + *written, buf.len() as u64)?;
    *written += buf.len() as u64;
    buf.clear();
    Ok(())
}

/// A store's scavenge (see [`strata_core::EventStore::scavenge`]): plans what each stream
/// with lifecycle state loses ([`removable`]), then rewrites, oldest first, each sealed
/// segment read from its index file that holds some of it, and swaps the new files in under
/// the state lock (readers that found an event in the old file read it again). The open
/// segment, and sealed segments whose index file is not written yet, are left for a later
/// scavenge.
pub(crate) async fn run(
    store: &LogStore,
    progress: ProgressFn<'_>,
) -> Result<ScavengeReport, ScavengeError> {
    let started = std::time::Instant::now();
    let shared = store.shared().clone();
    // Held by each segment's rewrite too: a scavenge whose caller stopped waiting (its future
    // dropped) runs alone until its rewrite in progress ends.
    let running = Arc::new(Running::start(shared.clone())?);
    if let Some(reason) = shared.stopped_reason() {
        return Err(ScavengeError::Store(ReadError::Unavailable(reason.into())));
    }
    // What was appended before the scavenge, in sealed segments read from their files.
    store.seal().await?;
    let streams = store.lifecycle_streams().await?;
    let mut done = ScavengeProgress {
        streams_total: streams.len() as u64,
        ..ScavengeProgress::default()
    };
    progress(done);
    // What goes of each stream (a run of versions), and the segments holding it, never on
    // the runtime's workers (the walk over every removed version's position takes tens of
    // milliseconds on a large plan). On the blocking pool at normal priority: both take the
    // state lock stream by stream, and a thread of the lowest priority descheduled while
    // holding it would hold appends up.
    let (plan, tombstoned, examined, segments) = {
        let store = store.clone();
        blocking(move || {
            let (plan, tombstoned, examined) = plan_removal(&store, &streams)?;
            let plan = cut_at_archived(store.shared(), plan);
            let segments = segments_holding(store.shared(), &plan);
            Ok((plan, tombstoned, examined, segments))
        })
        .await?
    };
    done.streams_examined = examined;
    let plan = Arc::new(plan);
    let seg_dir = shared.dir.join(crate::recovery::SEGMENTS_DIR);
    let pace = Arc::new(parking_lot::Mutex::new(Pace::new(
        shared.scavenge_bytes_per_sec,
        store.closing_flag(),
    )));
    for no in segments {
        let (Some(seg), Some(next)) = (shared.segments.get(no), shared.segments.get(no + 1)) else {
            continue;
        };
        // A segment that lives only in an archive stays as archived: its removed events keep
        // their place there, and read as the lifecycle says (deleted, truncated, expired).
        if seg.is_archived() {
            continue;
        }
        let end_position = next.header.first_position;
        // The rewrite at the lowest priority, the swap at the normal one (appends wait for
        // it), each while the store is open (a close waits for them).
        let closed = || ReadError::Unavailable(("the store is closed".to_owned()).into());
        let rewritten = {
            let (store, plan, seg_dir) = (store.clone(), plan.clone(), seg_dir.clone());
            let (running, pace) = (running.clone(), pace.clone());
            at_low_priority(move || {
                let _running = running;
                let remove = |r: &DecodedRecord<'_>| {
                    plan.get(r.stream_id)
                        .is_some_and(|range| range.contains(&r.stream_version))
                };
                let vfs = &*store.shared().vfs;
                let mut pace = pace.lock();
                let rewritten = store
                    .while_open(|| {
                        rewrite_segment(vfs, &seg_dir, &seg, end_position, remove, pace.as_mut())
                    })
                    .ok_or_else(closed)?
                    .map_err(|reason| ReadError::Storage(reason.into()));
                if let Some(p) = pace.as_mut() {
                    p.next_segment();
                }
                rewritten
            })
            .await?
        };
        let Some(rewrite) = rewritten else { continue };
        let removed = rewrite.removed;
        tracing::info!(
            segment = no,
            removed,
            bytes_before = rewrite.bytes_before,
            bytes_after = rewrite.bytes_after,
            "scavenged a segment"
        );
        {
            let (store, running) = (store.clone(), running.clone());
            blocking(move || {
                let _running = running;
                store
                    .while_open(|| swap_in(store.shared(), rewrite))
                    .ok_or_else(closed)?
                    .map_err(|reason| ReadError::Storage(reason.into()))
            })
            .await?;
        }
        done.events_removed += removed;
        progress(done);
    }
    // A tombstoned stream's snapshots go with its events, as on PostgreSQL.
    for stream in &tombstoned {
        store
            .delete_snapshots(stream)
            .await
            .map_err(|e| ScavengeError::Store(ReadError::Storage(e.to_string().into())))?;
    }
    progress(done);
    Ok(ScavengeReport {
        progress: done,
        elapsed: started.elapsed(),
    })
}

/// Runs `work` on a thread of its own at the lowest CPU and I/O priority
/// ([`crate::io::lower_thread_priority`]): a segment's rewrite takes what appends and reads
/// leave of the machine. Dropping the future does not stop it.
async fn at_low_priority<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ReadError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("strata-scavenge".to_owned())
        .spawn(move || {
            crate::io::lower_thread_priority();
            let _ = tx.send(work());
        })
        .map_err(|e| ReadError::Storage(format!("starting the scavenge's thread: {e}").into()))?;
    rx.await
        .map_err(|_| ReadError::Storage(("the scavenge's thread panicked".to_owned()).into()))?
}

/// What a scavenge removes of each of `streams` (a run of versions, for those that lose
/// any), the tombstoned ones among them, and how many were examined.
#[allow(clippy::type_complexity)]
fn plan_removal(
    store: &LogStore,
    streams: &[StreamId],
) -> Result<(HashMap<String, Range<u64>>, Vec<StreamId>, u64), ReadError> {
    let mut plan = HashMap::new();
    let mut tombstoned = Vec::new();
    for stream in streams {
        let (visibility, last) = store.visibility_blocking(stream)?;
        let Some(last) = last else { continue };
        let first_recent = match visibility.not_before_us {
            Some(not_before) => store.first_version_recorded_from(stream, not_before)?,
            None => None,
        };
        let range = removable(visibility, last, first_recent);
        if range.is_empty() {
            continue;
        }
        if visibility.tombstoned {
            tombstoned.push(stream.clone());
        }
        plan.insert(stream.as_str().to_owned(), range);
    }
    Ok((plan, tombstoned, streams.len() as u64))
}

/// The one scavenge of a store running: cleared when it ends, however it ends.
pub(crate) struct Running(Arc<Shared>);

impl Running {
    pub(crate) fn start(shared: Arc<Shared>) -> Result<Running, ScavengeError> {
        use std::sync::atomic::Ordering;
        shared
            .scavenging
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| ScavengeError::AlreadyRunning)?;
        Ok(Running(shared))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0
            .scavenging
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// `plan` cut to what a scavenge can remove when segments live only in an archive (which
/// is never rewritten): for each stream, the versions between its archived ones (a piece),
/// one piece only, as a stream keeps one run of removed versions: the piece that joins the
/// versions removed before, or the last piece when there are none. Unchanged when no
/// segment is archived. Takes the state lock stream by stream.
fn cut_at_archived(
    shared: &Shared,
    plan: HashMap<String, Range<u64>>,
) -> HashMap<String, Range<u64>> {
    if crate::archived::archived_count(&shared.segments) == 0 {
        return plan;
    }
    let mut out = HashMap::new();
    for (stream, versions) in plan {
        // Pieces of present versions, none in an archived segment, as version ranges (a
        // piece spans the versions removed before, which lie nowhere).
        let mut pieces: Vec<Range<u64>> = Vec::new();
        let mut open: Option<Range<u64>> = None;
        let Some(removed) = each_version(shared, &stream, &versions, |v, seg, _| {
            let archived = shared.segments.get(seg).is_some_and(|s| s.is_archived());
            match (archived, &mut open) {
                (true, _) => pieces.extend(open.take()),
                (false, Some(r)) => r.end = v + 1,
                (false, None) => open = Some(v..v + 1),
            }
        }) else {
            continue;
        };
        pieces.extend(open);
        let crate::index::RemovedVersions { from, count } = removed;
        let chosen = match count {
            0 => pieces.pop(),
            _ => pieces
                .into_iter()
                .find(|r| r.start <= from + count && r.end >= from),
        };
        if let Some(r) = chosen {
            out.insert(stream, r);
        }
    }
    out
}

/// Calls `visit(version, segment, in_files)` for each present version of `stream` in
/// `versions`, in order (`in_files`: its segment's entries and ids are read from its index
/// file), under the state lock; returns the stream's removed run, `None` when it has no
/// events.
fn each_version(
    shared: &Shared,
    stream: &str,
    versions: &Range<u64>,
    mut visit: impl FnMut(u64, u64, bool),
) -> Option<crate::index::RemovedVersions> {
    let st = shared.state.read();
    let index = &st.index;
    let no = StreamId::new(stream)
        .ok()
        .and_then(|s| index.stream_no(&s))?;
    let se = &index.streams[no as usize];
    let crate::index::RemovedVersions { from, count } = se.removed;
    let mut reader = se.positions.reader();
    for i in se.index_from(versions.start)..se.index_from(versions.end) {
        let v = if i < from { i } else { i + count };
        let p = reader.get(i).expect("an index of the list");
        match index.entries.file_segment_of(p) {
            Some(seg) => visit(v, seg, index.ids.in_file(seg)),
            None => visit(v, index.entries.segment_of(p), false),
        }
    }
    Some(se.removed)
}

/// The sealed segments that hold events `plan` removes, in order, up to the first whose
/// entries and ids are not read from its index file yet (left with those after it for a
/// later scavenge). Takes the state lock stream by stream.
fn segments_holding(shared: &Shared, plan: &HashMap<String, Range<u64>>) -> Vec<u64> {
    let mut segments = std::collections::BTreeMap::new();
    for (stream, versions) in plan {
        each_version(shared, stream, versions, |_, seg, in_files| {
            segments.insert(seg, in_files);
        });
    }
    // In order, up to the first that cannot be rewritten yet: a stream's removed versions
    // grow one run at a time, segment after segment.
    segments
        .into_iter()
        .take_while(|&(_, in_files)| in_files)
        .map(|(no, _)| no)
        .collect()
}

/// Puts a rewritten segment in the place of the old one: its index file opened, then, under
/// the state lock, its entries, postings and ids, the streams' lists, and the segment.
fn swap_in(shared: &Shared, rewrite: Rewrite) -> Result<(), String> {
    let file = &rewrite.index_file;
    let opened = file
        .open()
        .map_err(|e| format!("opening the rewritten segment's index file: {e}"))?;
    let section = file.own_id_section(opened.clone());
    let (entries, dir) =
        file.own_entries(&opened, shared.segments.map_reads, |streams, types| {
            let index = &shared.state.read().index;
            (
                streams.iter().map(|s| index.stream_no(s)).collect(),
                types.iter().map(|t| index.type_no(t)).collect(),
            )
        })?;
    let entries = Arc::new(entries);
    let no = rewrite.segment.header.segment_no;
    let first = rewrite.segment.header.first_position;
    // The streams' new lists are built under the read lock, one stream at a time (an append
    // waits for one stream's at most), and only swapped in under the write lock.
    let mut lists = Vec::with_capacity(rewrite.removed_versions.len());
    for (name, versions) in &rewrite.removed_versions {
        let Ok(stream) = StreamId::new(name.as_str()) else {
            continue;
        };
        let index = &shared.state.read().index;
        if let Some(s) = index.stream_no(&stream) {
            lists.extend(index.prepare_removal(&[(s, versions.clone())])?);
        }
    }
    let released = {
        let mut st = shared.state.write();
        let released = st.index.replace_scavenged(
            no,
            first,
            &entries,
            &dir,
            section,
            rewrite.first_at_us,
            lists,
        )?;
        let old = shared.segments.replace(rewrite.segment);
        shared
            .scavenged
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        (released, old)
    };
    let (released, old) = released;
    if let Some(old) = old {
        release_gradually(old, released);
    }
    Ok(())
}

/// Bytes of a replaced segment's file freed at a time.
const RELEASE_STEP_BYTES: u64 = 4 << 20;
/// Pause between two steps: at most `RELEASE_STEP_BYTES` freed per pause (200 MiB/s).
const RELEASE_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
/// How often a replaced segment still read is checked again.
const RELEASE_POLL: std::time::Duration = std::time::Duration::from_millis(10);
/// Longest wait for the readers of a replaced segment: past it, the file is left to be freed
/// whole by whoever holds it last.
const RELEASE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// Frees a segment file a scavenge replaced (its name already taken by the new one) a few
/// MiB at a time, on a thread of the lowest priority, once no reader of this store holds it;
/// then the index parts the swap took out (the old index file's maps among them). Closing a
/// 64 MiB file frees its blocks in one go, and on ext4 that one journal commit held appends'
/// `fdatasync` for up to 10 ms (measured: writers' p99 during a scavenge 3.2-5x with the
/// files closed at the swap, 1.6-1.9x with them kept open). The blocks are given back with
/// holes punched from the start, the file's length kept: anything else still reading it (a
/// handle of a store closed and opened again, another process) reads zeros, which fail their
/// CRC, rather than past the end of a map, which would end the process.
pub(crate) fn release_gradually<T: Send + 'static>(mut old: Arc<Segment>, index_parts: T) {
    let spawned = std::thread::Builder::new()
        .name("strata-release".to_owned())
        .spawn(move || {
            crate::io::lower_thread_priority();
            let waited = std::time::Instant::now();
            // The last reference, with what every other holder did before dropping theirs.
            while Arc::get_mut(&mut old).is_none() {
                if waited.elapsed() > RELEASE_WAIT_MAX {
                    return;
                }
                std::thread::sleep(RELEASE_POLL);
            }
            let Ok(len) = old.file.size() else { return };
            let mut at = 0;
            while at < len {
                if old.file.free_range(at, RELEASE_STEP_BYTES).is_err() {
                    return;
                }
                at += RELEASE_STEP_BYTES;
                std::thread::sleep(RELEASE_PAUSE);
            }
            drop(index_parts);
        });
    // Without a thread the file is closed at once, as before.
    drop(spawned);
}

#[cfg(test)]
mod pace_tests {
    use super::Pace;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    fn pace() -> Pace {
        Pace::new(100 * MIB, Arc::new(AtomicBool::new(false))).unwrap()
    }

    /// At 100 MiB/s, 50 MiB are due at 0.5 s: read at once, the rewrite waits the rest; on
    /// pace, not at all; bytes of earlier segments count.
    #[test]
    fn a_rewrite_ahead_of_its_pace_waits_until_its_bytes_are_due() {
        assert!(Pace::new(0, Arc::new(AtomicBool::new(false))).is_none());
        let mut pace = pace();
        assert_eq!(
            pace.ahead(50 * MIB, Duration::ZERO),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            pace.ahead(50 * MIB, Duration::from_millis(200)),
            Some(Duration::from_millis(300))
        );
        assert_eq!(pace.ahead(50 * MIB, Duration::from_millis(500)), None);
        pace.next_segment();
        assert_eq!(
            pace.ahead(50 * MIB, Duration::from_millis(600)),
            Some(Duration::from_millis(400))
        );
    }

    /// A rewrite 1.5 s behind its pace (a stall) is forgiven all but 100 ms of it: the next
    /// 50 MiB are due 0.4 s later, not read flat out to catch up.
    #[test]
    fn time_behind_the_pace_is_forgiven_beyond_a_tenth_of_a_second() {
        let mut pace = pace();
        assert_eq!(pace.ahead(50 * MIB, Duration::from_secs(2)), None);
        assert_eq!(
            pace.ahead(100 * MIB, Duration::from_secs(2)),
            Some(Duration::from_millis(400))
        );
    }

    /// A store that starts closing stops a rewrite that would sleep, at its next look.
    #[test]
    fn a_closing_store_stops_the_wait() {
        let mut pace = Pace::new(MIB, Arc::new(AtomicBool::new(true))).unwrap();
        assert!(pace.reached(100 * MIB).is_err());
    }
}
