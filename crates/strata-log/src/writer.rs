//! The single writer: group commit with expected-version checks in order.
//!
//! Appenders send requests over a bounded queue. The writer thread takes every request that
//! is waiting (up to the batch limits), checks each against the stream versions in order
//! (including earlier requests of the same batch), encodes the accepted ones into one
//! buffer, writes it and calls fdatasync once. Only then does it publish the new events to
//! the index and answer each request. A write or sync error stops the store (fail-stop): no
//! request of that batch, nor any later one, is acknowledged until the store is reopened.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use strata_core::lifecycle::{self, StreamMetadata, EVENT_TYPE_STREAM_TOMBSTONED};
use strata_core::{
    ActualVersion, AppendError, AppendResult, BackendError, EventData, ExpectedVersion, Position,
    ReadError, StreamId, Uuid,
};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit};

use crate::format::{
    padded_len, RecordRef, FLAG_BATCH_START, FLAG_COMMIT, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::index::{
    encode_in_chunks, encode_segment_index, loc, Index, LogEnd, SealedSegment, SegmentIndexFile,
};
use crate::io::{write_file_atomic, Vfs};
use crate::limits::{
    INDEX_ENCODE_CHUNK_ENTRIES, SEGMENT_PREALLOCATE_BYTES, WRITER_BATCH_MAX_APPENDS,
    WRITER_BATCH_MAX_BYTES, WRITER_LINGER_US,
};
use crate::recovery::{create_segment, now_us, segment_index_path, INDEX_FILE, SEGMENTS_DIR};
use crate::segment::{Segment, Segments};

/// The index and the end of the log it covers, changed together.
pub(crate) struct State {
    pub index: Index,
    pub log_end: LogEnd,
}

/// What the writer and the readers share.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub vfs: Arc<dyn Vfs>,
    pub state: RwLock<State>,
    pub segments: Segments,
    pub changes: watch::Sender<u64>,
    pub stopped: Mutex<Option<String>>,
    pub segment_max_bytes: u64,
    /// Held while the index file is written, so two checkpoints never share the temp file.
    pub checkpoint_lock: Mutex<()>,
    /// Sealed segments whose index files are still to be written.
    pub sealed: Mutex<SealQueue>,
    /// Signalled when the thread writing them has nothing left to do.
    pub sealed_idle: parking_lot::Condvar,
    /// Set while a scavenge runs: one at a time.
    pub scavenging: std::sync::atomic::AtomicBool,
    /// Segments a scavenge has swapped so far: a read that fails after this changed may have
    /// resolved locations in a segment's old file, and runs again.
    pub scavenged: std::sync::atomic::AtomicU64,
    /// Test hook: runs between finding records' places and reading them.
    pub before_record_reads: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Reads of segments that live only in an archive, once the store has any (set on open
    /// or by the first eviction).
    pub archive: RwLock<Option<Arc<crate::archived::ArchiveReads>>>,
    /// Bound of that cache.
    pub archive_cache_bytes: u64,
    /// A scavenge's pace ([`crate::LogConfig::scavenge_bytes_per_sec`]).
    pub scavenge_bytes_per_sec: u64,
}

impl Shared {
    pub fn stopped_reason(&self) -> Option<String> {
        self.stopped.lock().clone()
    }

    fn stop(&self, reason: String) {
        tracing::error!(%reason, "the store stopped after an I/O error; appends are refused until it is reopened");
        let mut s = self.stopped.lock();
        if s.is_none() {
            *s = Some(reason);
        }
    }

    /// Writes the index file (temp file, fsync, rename, directory fsync).
    pub fn checkpoint_index(&self) -> std::io::Result<()> {
        let _guard = self.checkpoint_lock.lock();
        let bytes = self.encode_index().map_err(std::io::Error::other)?;
        write_file_atomic(&*self.vfs, &self.dir.join(INDEX_FILE), &bytes)
    }

    /// Writes the index file of a sealed segment beside it (temp file, fsync, rename,
    /// directory fsync), encoding it a chunk at a time as [`Shared::encode_index`] does; then
    /// the segment's ids are looked up in the file and leave memory.
    pub fn write_segment_index(&self, seg: SealedSegment) -> std::io::Result<()> {
        if self.state.read().index.ids.in_memory(seg.first).is_none() {
            // Its ids are in its file already (queued twice): nothing to do.
            return Ok(());
        }
        let bytes = encode_segment_index(seg, INDEX_ENCODE_CHUNK_ENTRIES, |encode| {
            encode(&self.state.read().index)
        })
        .map_err(std::io::Error::other)?;
        let path = segment_index_path(&self.dir.join(SEGMENTS_DIR), seg.segment_no);
        write_file_atomic(&*self.vfs, &path, &bytes)?;
        let file = SegmentIndexFile::check(bytes, path).map_err(std::io::Error::other)?;
        let opened = file.open()?;
        let section = file.own_id_section(opened.clone());
        // The ids leave memory even when the entries cannot be opened from the file: the
        // entries alone stay in memory then (the file is whole: a reopen reads them from it).
        let entries = file
            .own_entries(&opened, self.segments.map_reads, |streams, types| {
                let index = &self.state.read().index;
                (
                    streams.iter().map(|s| index.stream_no(s)).collect(),
                    types.iter().map(|t| index.type_no(t)).collect(),
                )
            })
            .inspect_err(|reason| {
                tracing::warn!(segment = seg.segment_no, %reason, "a sealed segment's entries stay in memory: its index file cannot be read for them")
            })
            .ok();
        // Not while the whole index file is encoded: it takes the ids in memory from where
        // they start when it begins. Under the state lock only the swaps; the ids and entries
        // taken out are dropped after it.
        let _guard = self.checkpoint_lock.lock();
        let entries = entries.map(|(entries, postings)| (Arc::new(entries), postings));
        if let Some((file, postings)) = &entries {
            // The categories' and types' lists, a chunk at a time: between chunks a list
            // reads this segment's positions from memory or from the file, the same either
            // way.
            let targets = self.state.read().index.postings_targets(postings);
            for chunk in targets.chunks(INDEX_ENCODE_CHUNK_ENTRIES) {
                let released = self.state.write().index.move_postings_to_file(
                    seg.segment_no,
                    file,
                    postings,
                    chunk,
                );
                drop(released);
            }
        }
        let released = {
            let index = &mut self.state.write().index;
            (
                index.ids.move_to_file(section),
                entries.map(|(entries, _)| {
                    index
                        .entries
                        .move_to_file(seg.segment_no, seg.first, entries)
                }),
            )
        };
        drop(released);
        Ok(())
    }

    /// Waits until the index files of the segments sealed so far are written (or failed:
    /// those are tried again at the next seal).
    pub fn wait_for_segment_indexes(&self) {
        let mut queue = self.sealed.lock();
        // Queued items are always being served (a thread that panicked leaves them to the
        // next seal, which starts another).
        while queue.running {
            self.sealed_idle.wait(&mut queue);
        }
    }

    /// The index file as of now, encoded without holding the state lock for more than
    /// [`INDEX_ENCODE_CHUNK_ENTRIES`] entries (or names) at a time: the writer publishes, and
    /// readers read, between chunks. Called with the checkpoint lock held.
    fn encode_index(&self) -> Result<Vec<u8>, String> {
        let mark = {
            let st = self.state.read();
            st.index.encode_mark(st.log_end)
        };
        encode_in_chunks(mark, INDEX_ENCODE_CHUNK_ENTRIES, |encode| {
            encode(&self.state.read().index)
        })
    }
}

/// One append waiting for the writer.
pub(crate) struct AppendRequest {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<EventData>,
    pub metadata: Vec<Vec<u8>>,
    pub reply: oneshot::Sender<Result<AppendResult, AppendError>>,
    /// Its place in the bounded queue, given back when the request is dropped.
    pub _permit: OwnedSemaphorePermit,
}

impl AppendRequest {
    fn encoded_bytes(&self) -> usize {
        self.events
            .iter()
            .zip(&self.metadata)
            .map(|(e, m)| {
                padded_len(
                    RECORD_HEADER_BYTES
                        + self.stream.as_str().len()
                        + e.event_type.len()
                        + e.content_type.len()
                        + m.len()
                        + e.data.len(),
                )
            })
            .sum()
    }
}

/// The writer thread's own state: the open tail segment.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub tail: Arc<Segment>,
    pub tail_len: u64,
    /// The tail segment's file length: `tail_len` plus zeros preallocated ahead of it.
    pub allocated_len: u64,
    /// The thread writing sealed segments' index files, if one runs.
    pub checkpoint_thread: Option<std::thread::JoinHandle<()>>,
}

/// Sealed segments whose index files are to be written, and whether a thread is at it.
#[derive(Default)]
pub(crate) struct SealQueue {
    items: std::collections::VecDeque<SealedSegment>,
    running: bool,
    /// Segments whose file could not be written: tried again at the next seal (their ids,
    /// and every later segment's, stay in memory until then).
    failed: Vec<SealedSegment>,
    /// The segment whose file is being written.
    writing: Option<SealedSegment>,
}

impl SealQueue {
    /// A queue holding `segments`, marked as served: the writer starts the thread that
    /// serves it (so that a wait for the segments' files, right after an open, waits).
    pub fn queued(segments: &[SealedSegment]) -> SealQueue {
        SealQueue {
            items: segments.iter().copied().collect(),
            running: !segments.is_empty(),
            ..SealQueue::default()
        }
    }
}

/// Marks the seal queue as not served when the thread serving it panics, so the next seal
/// starts another.
struct NotRunningOnPanic(Arc<Shared>);

impl Drop for NotRunningOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut queue = self.0.sealed.lock();
            queue.running = false;
            // The segment being written, and the rest, are tried again at the next seal.
            let rest: Vec<SealedSegment> = queue.writing.take().into_iter().collect();
            let queued: Vec<SealedSegment> = queue.items.drain(..).collect();
            queue.failed.extend(rest.into_iter().chain(queued));
            drop(queue);
            self.0.sealed_idle.notify_all();
        }
    }
}

/// What staging decided for one request.
enum Staged {
    Reply(Result<AppendResult, AppendError>),
    Written(AppendResult),
    /// Its first event id is in this very batch: decide after this batch is durable.
    Defer,
}

impl Writer {
    /// Runs the writer until the append queue closes; first starts writing the index files
    /// of the `missing_queued` sealed segments found without one on open (queued by the open
    /// already, so that a wait for them right after it waits).
    pub fn run(mut self, rx: crossbeam_channel::Receiver<AppendRequest>, missing_queued: usize) {
        if missing_queued > 0 {
            tracing::info!(
                segments = missing_queued,
                "writing the index files of sealed segments that have none (a store from an earlier version, or files lost or not matching), in the background"
            );
            self.start_segment_index_thread();
        }
        let mut deferred: Vec<AppendRequest> = Vec::new();
        // Appenders answered by the previous batch: they are likely to send again at once.
        let mut just_answered = 0usize;
        // Appends already waiting when the previous batch was answered.
        let mut waiting_then = 0usize;
        loop {
            let mut batch = std::mem::take(&mut deferred);
            if batch.is_empty() {
                let idle_since = std::time::Instant::now();
                match rx.recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
                // A long idle wait means the last batch's appenders are not coming back soon.
                if idle_since.elapsed() > std::time::Duration::from_micros(WRITER_LINGER_US) {
                    just_answered = 0;
                    waiting_then = 0;
                }
            }
            let mut bytes: usize = batch.iter().map(AppendRequest::encoded_bytes).sum();
            while batch.len() < WRITER_BATCH_MAX_APPENDS && bytes < WRITER_BATCH_MAX_BYTES {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += r.encoded_bytes();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            // Give the appenders just answered a moment to join this batch (see
            // WRITER_LINGER_US): what was already waiting, plus those.
            let target = (waiting_then + just_answered).min(WRITER_BATCH_MAX_APPENDS);
            let deadline =
                std::time::Instant::now() + std::time::Duration::from_micros(WRITER_LINGER_US);
            while batch.len() < target && bytes < WRITER_BATCH_MAX_BYTES {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(r) => {
                        bytes += r.encoded_bytes();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            just_answered = batch.len();
            // A request without events asks for the tail segment to be sealed (a scavenge,
            // which removes only from sealed segments): after the appends before it.
            let (seals, batch): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|r| r.events.is_empty());
            deferred = if batch.is_empty() {
                Vec::new()
            } else {
                self.process(batch, bytes)
            };
            for seal in seals {
                let sealed = self.seal_tail();
                let _ = seal.reply.send(sealed.map(|()| AppendResult {
                    stream_version: 0,
                    positions: Vec::new(),
                    replayed: false,
                }));
            }
            waiting_then = rx.len() + deferred.len();
        }
        // Closing waits for the queued segment index files: after an upgrade, one per sealed
        // segment, so the first close of an upgraded store finishes its conversion.
        if let Some(t) = self.checkpoint_thread.take() {
            let _ = t.join();
        }
        if self.shared.stopped_reason().is_none() {
            if let Err(e) = self.shared.checkpoint_index() {
                tracing::warn!(error = %e, "could not write the index file on close; it will be rebuilt from the log");
            }
        }
    }

    /// Handles one batch; returns the requests deferred to the next batch.
    fn process(&mut self, batch: Vec<AppendRequest>, bytes: usize) -> Vec<AppendRequest> {
        if let Some(reason) = self.shared.stopped_reason() {
            for r in batch {
                let _ = r
                    .reply
                    .send(Err(AppendError::Stopped(reason.clone().into())));
            }
            return Vec::new();
        }
        // Seal the tail segment first if this batch would overflow it.
        if self.tail_len > SEGMENT_HEADER_BYTES
            && self.tail_len + bytes as u64 > self.shared.segment_max_bytes
        {
            if let Err(e) = self.rotate() {
                self.shared
                    .stop(format!("creating a new segment failed: {e}"));
                return self.process(batch, bytes);
            }
        }
        let salt = self.tail.header.salt;
        let batch_marks = self.tail.header.batch_marks;
        let seg_no = self.tail.header.segment_no;
        let mut buf = Vec::with_capacity(bytes);
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut new_entries: Vec<(u64, u64, i64, usize, usize, Uuid)> = Vec::new();
        {
            let st = self.shared.state.read();
            let index = &st.index;
            let mut next_position = index.next_position();
            let mut last_ts = index.last_recorded_at_us();
            let mut batch_versions: HashMap<&StreamId, u64> = HashMap::new();
            let mut batch_ids: HashSet<Uuid> = HashSet::new();
            let mut lifecycle = BatchLifecycle::default();
            for (ri, req) in batch.iter().enumerate() {
                let actual = batch_versions
                    .get(&req.stream)
                    .copied()
                    .or_else(|| index.stream_version(&req.stream));
                let staged = self.stage_one(index, req, actual, &batch_ids, &lifecycle, |s| {
                    batch_versions
                        .get(s)
                        .copied()
                        .or_else(|| index.stream_version(s))
                });
                if let Ok(None) = staged {
                    lifecycle.accepted(req);
                }
                let staged = match staged {
                    Ok(Some(done)) => Staged::Reply(done),
                    Ok(None) => {
                        // Accepted: encode.
                        let first_version = actual.map_or(0, |v| v + 1);
                        let ts = now_us().max(last_ts);
                        last_ts = ts;
                        let mut positions = Vec::with_capacity(req.events.len());
                        let n = req.events.len();
                        for (k, (e, meta)) in req.events.iter().zip(&req.metadata).enumerate() {
                            let id = e.event_id.unwrap_or_else(Uuid::now_v7);
                            let off = self.tail_len + buf.len() as u64;
                            RecordRef {
                                position: next_position,
                                recorded_at_us: ts,
                                event_id: id,
                                stream_version: first_version + k as u64,
                                stream_id: req.stream.as_str(),
                                event_type: &e.event_type,
                                content_type: &e.content_type,
                                metadata: meta,
                                data: &e.data,
                                flags: if k + 1 == n { FLAG_COMMIT } else { 0 }
                                    | if buf.is_empty() && batch_marks {
                                        FLAG_BATCH_START
                                    } else {
                                        0
                                    },
                            }
                            .encode_into(salt, &mut buf);
                            batch_ids.insert(id);
                            new_entries.push((next_position, off, ts, ri, k, id));
                            positions.push(Position(next_position));
                            next_position += 1;
                        }
                        let version = first_version + n as u64 - 1;
                        batch_versions.insert(&req.stream, version);
                        Staged::Written(AppendResult {
                            stream_version: version,
                            positions,
                            replayed: false,
                        })
                    }
                    Err(Deferred) => Staged::Defer,
                };
                outcomes.push(staged);
            }
        }

        // Write and make durable.
        if !buf.is_empty() {
            let write = self
                .preallocate(buf.len() as u64)
                .and_then(|()| self.tail.file.write_all_at(&buf, self.tail_len))
                .and_then(|()| self.tail.file.sync_data());
            if let Err(e) = write {
                self.shared
                    .stop(format!("writing {} failed: {e}", self.tail.path.display()));
                let reason = self.shared.stopped_reason().unwrap_or_default();
                let mut deferred = Vec::new();
                for (req, outcome) in batch.into_iter().zip(outcomes) {
                    match outcome {
                        Staged::Reply(r) => {
                            let _ = req.reply.send(r);
                        }
                        Staged::Written(_) => {
                            let _ = req
                                .reply
                                .send(Err(AppendError::Stopped(reason.clone().into())));
                        }
                        Staged::Defer => deferred.push(req),
                    }
                }
                return deferred;
            }
            // Publish to readers, then wake subscribers.
            let mut st = self.shared.state.write();
            let mut current: Option<(usize, u32)> = None;
            let mut last_type: Option<(&str, u32)> = None;
            for (position, off, ts, ri, k, id) in new_entries {
                let stream = match current {
                    Some((r, s)) if r == ri => s,
                    _ => {
                        let s = st.index.stream_no_or_insert(&batch[ri].stream);
                        current = Some((ri, s));
                        s
                    }
                };
                let type_name = batch[ri].events[k].event_type.as_str();
                let event_type = match last_type {
                    Some((name, t)) if name == type_name => t,
                    _ => {
                        let t = st.index.type_no_or_insert(type_name);
                        last_type = Some((type_name, t));
                        t
                    }
                };
                st.index.push_resolved(
                    position,
                    loc(seg_no, off),
                    ts,
                    stream,
                    event_type,
                    Some(id),
                );
            }
            self.tail_len += buf.len() as u64;
            st.log_end = LogEnd {
                segment_no: seg_no,
                offset: self.tail_len,
                salt,
            };
            drop(st);
            self.shared.changes.send_modify(|v| *v = v.wrapping_add(1));
        }
        let mut deferred = Vec::new();
        for (req, outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
                Staged::Reply(r) => {
                    let _ = req.reply.send(r);
                }
                Staged::Written(r) => {
                    let _ = req.reply.send(Ok(r));
                }
                Staged::Defer => deferred.push(req),
            }
        }
        deferred
    }

    /// Checks one request. `Ok(None)`: accept and write. `Ok(Some(r))`: answer `r` without
    /// writing. `Err(Deferred)`: its first id is in this batch; retry after it is durable.
    fn stage_one(
        &self,
        index: &Index,
        req: &AppendRequest,
        actual: Option<u64>,
        batch_ids: &HashSet<Uuid>,
        lifecycle: &BatchLifecycle,
        version_of: impl Fn(&StreamId) -> Option<u64>,
    ) -> Result<Option<Result<AppendResult, AppendError>>, Deferred> {
        if let Some(first_id) = req.events[0].event_id {
            if batch_ids.contains(&first_id) {
                return Err(Deferred);
            }
            match index.position_of_id(&first_id) {
                Ok(Some(first_pos)) => {
                    return Ok(Some(self.retry_result(index, req, first_pos, lifecycle)));
                }
                Ok(None) => {}
                Err(e) => return Ok(Some(Err(id_lookup_failed(e)))),
            }
        }
        match self.is_tombstoned(index, &req.stream, lifecycle) {
            Ok(false) => {}
            Ok(true) => {
                return Ok(Some(Err(AppendError::StreamTombstoned {
                    stream: req.stream.clone(),
                })))
            }
            Err(e) => return Ok(Some(Err(append_error(e)))),
        }
        if let Some(described) = req.stream.described_stream() {
            let next = version_of(&described).map_or(0, |v| v + 1);
            if !lifecycle::deletion_is_current(&req.events, next) {
                return Ok(Some(Err(AppendError::WrongExpectedVersion {
                    stream: req.stream.clone(),
                    expected: req.expected,
                    actual: ActualVersion(actual),
                })));
            }
        }
        // Whether the stream is soft-deleted: only an expectation on an existing stream needs
        // the metadata, and only a stream with a metastream has any.
        let deleted = match req.expected {
            ExpectedVersion::Any => false,
            _ if actual.is_none() => false,
            _ => match self.metadata(index, &req.stream, lifecycle) {
                Ok(m) => m.is_some_and(|m| m.deletes_all(actual)),
                Err(e) => return Ok(Some(Err(append_error(e)))),
            },
        };
        if !lifecycle::expected_matches(req.expected, actual, deleted) {
            return Ok(Some(Err(AppendError::WrongExpectedVersion {
                stream: req.stream.clone(),
                expected: req.expected,
                actual: lifecycle::actual_version(actual, deleted),
            })));
        }
        // The first id was looked up above.
        for e in req.events.iter().skip(1) {
            if let Some(id) = e.event_id {
                let stored = match index.position_of_id(&id) {
                    Ok(p) => p.is_some(),
                    Err(e) => return Ok(Some(Err(id_lookup_failed(e)))),
                };
                if batch_ids.contains(&id) || stored {
                    return Ok(Some(Err(AppendError::EventIdConflict {
                        event_id: id,
                        stream: req.stream.clone(),
                    })));
                }
            }
        }
        Ok(None)
    }

    /// Whether `stream`'s last event is its tombstone (in the index or earlier in this batch).
    fn is_tombstoned(
        &self,
        index: &Index,
        stream: &StreamId,
        lifecycle: &BatchLifecycle,
    ) -> Result<bool, ReadError> {
        if lifecycle.tombstoned.contains(stream) {
            return Ok(true);
        }
        let Some(tombstone) = index.type_no(EVENT_TYPE_STREAM_TOMBSTONED) else {
            return Ok(false); // no stream was ever tombstoned
        };
        let Some(s) = index.stream_no(stream) else {
            return Ok(false);
        };
        match index.streams[s as usize].positions.last() {
            Some(p) => Ok(index.entries.get(p)?.event_type == tombstone),
            None => Ok(false),
        }
    }

    /// `stream`'s metadata: the last event of its metastream (earlier in this batch, or
    /// stored, which this reads from its segment).
    fn metadata(
        &self,
        index: &Index,
        stream: &StreamId,
        lifecycle: &BatchLifecycle,
    ) -> Result<Option<StreamMetadata>, ReadError> {
        if stream.is_metastream() {
            return Ok(None);
        }
        let meta = stream.metastream();
        if let Some(m) = lifecycle.metadata.get(&meta) {
            return Ok(Some(m.clone()));
        }
        let Some(s) = index.stream_no(&meta) else {
            return Ok(None);
        };
        let Some(p) = index.streams[s as usize].positions.last() else {
            return Ok(None);
        };
        let loc = index.entries.get(p)?.loc;
        let events = self.shared.segments.read_events(&[(p, loc)])?;
        Ok(events
            .first()
            .and_then(|e| StreamMetadata::from_json(&e.data).ok()))
    }

    /// The answer to an append whose first event id is already stored at `first_pos`: the
    /// original result when the whole append is stored as given, otherwise a conflict.
    fn retry_result(
        &self,
        index: &Index,
        req: &AppendRequest,
        first_pos: u64,
        lifecycle: &BatchLifecycle,
    ) -> Result<AppendResult, AppendError> {
        let conflict = |id: Uuid| AppendError::EventIdConflict {
            event_id: id,
            stream: req.stream.clone(),
        };
        let first_id = req.events[0].event_id.unwrap_or_default();
        let Some(stream_no) = index.stream_no(&req.stream) else {
            return Err(conflict(first_id));
        };
        // The id's position must be in the stream: its list says so without reading entries.
        let se = &index.streams[stream_no as usize];
        let positions = &se.positions;
        let Some(first_index) = positions.index_of(first_pos) else {
            return Err(conflict(first_id));
        };
        let first_version = se.version_at(first_index);
        let fits_expected = match req.expected {
            ExpectedVersion::Exact(v) => first_version == v + 1,
            // A stream re-created after a soft delete starts where the deletion ended.
            ExpectedVersion::NoStream => {
                first_version == 0
                    || self
                        .metadata(index, &req.stream, lifecycle)
                        .map_err(append_error)?
                        .and_then(|m| m.truncate_before)
                        == Some(first_version)
            }
            ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
        };
        if !fits_expected {
            return Err(conflict(first_id));
        }
        let n = req.events.len() as u64;
        // The whole append must still be stored: a scavenge may have removed part of it.
        if first_index + n > positions.len()
            || se.version_at(first_index + n - 1) != first_version + n - 1
        {
            return Err(conflict(first_id));
        }
        let mut reader = positions.reader();
        let items: Vec<(u64, u64)> = (first_index..first_index + n)
            .filter_map(|v| reader.get(v))
            .map(|p| Ok((p, index.entries.get(p)?.loc)))
            .collect::<Result<_, ReadError>>()
            .map_err(append_error)?;
        // Events in a segment read from an archive are judged from the index alone (ids,
        // positions and types; not payloads): the writer never waits for an archive.
        let archived = items.iter().any(|&(_, loc)| {
            self.shared
                .segments
                .get(crate::index::loc_segment(loc))
                .is_some_and(|s| s.is_archived())
        });
        if archived {
            for (given, &(p, _)) in req.events.iter().zip(&items) {
                let id = given.event_id.unwrap_or(first_id);
                let at = index
                    .position_of_id(&id)
                    .map_err(|e| append_error(ReadError::Storage(e.to_string().into())))?;
                let entry = index.entries.get(p).map_err(append_error)?;
                let stored_type = index
                    .types
                    .get(entry.event_type as usize)
                    .map(|t| t.name.as_str());
                if given.event_id.is_none()
                    || at != Some(p)
                    || stored_type != Some(given.event_type.as_str())
                {
                    return Err(conflict(id));
                }
            }
        } else {
            let events = self
                .shared
                .segments
                .read_events(&items)
                .map_err(append_error)?;
            for (given, stored) in req.events.iter().zip(&events) {
                if given.event_id != Some(stored.event_id)
                    || given.event_type != stored.event_type
                    || given.data != stored.data
                    || given.content_type != stored.content_type
                {
                    return Err(conflict(given.event_id.unwrap_or(first_id)));
                }
            }
        }
        Ok(AppendResult {
            stream_version: first_version + n - 1,
            positions: items.iter().map(|&(p, _)| Position(p)).collect(),
            replayed: true,
        })
    }

    /// Makes sure the tail file already has room for `bytes` more: when not, appends zeros up
    /// to [`SEGMENT_PREALLOCATE_BYTES`] past what is needed (within the segment's maximum).
    /// The zeros are made durable by the batch's own fdatasync.
    fn preallocate(&mut self, bytes: u64) -> std::io::Result<()> {
        let needed = self.tail_len + bytes;
        // Only a segment whose batches are marked can tell a torn overwrite from corruption.
        if needed <= self.allocated_len || !self.tail.header.batch_marks {
            return Ok(());
        }
        let target = (needed + SEGMENT_PREALLOCATE_BYTES)
            .min(self.shared.segment_max_bytes)
            .max(needed);
        let from = self.allocated_len.max(needed);
        if target > from {
            let zeros = vec![0u8; (target - from) as usize];
            self.tail.file.write_all_at(&zeros, from)?;
        }
        self.allocated_len = target;
        Ok(())
    }

    /// Queues a sealed segment's index file, and starts the thread that writes them unless
    /// it runs (it takes what is queued before it ends).
    pub fn queue_segment_index(&mut self, seg: SealedSegment) {
        let mut queue = self.shared.sealed.lock();
        let failed = std::mem::take(&mut queue.failed);
        queue.items.extend(failed);
        queue.items.push_back(seg);
        if queue.running {
            return;
        }
        queue.running = true;
        drop(queue);
        self.start_segment_index_thread();
    }

    /// Starts the thread that writes the queued segments' index files; the queue must be
    /// marked as running.
    fn start_segment_index_thread(&mut self) {
        if let Some(done) = self.checkpoint_thread.take() {
            let _ = done.join();
        }
        let shared = self.shared.clone();
        self.checkpoint_thread = Some(std::thread::spawn(move || {
            // A panic ends the thread without leaving the queue marked as served.
            let _running = NotRunningOnPanic(shared.clone());
            loop {
                let next = {
                    let mut queue = shared.sealed.lock();
                    match queue.items.pop_front() {
                        Some(next) => {
                            queue.writing = Some(next);
                            next
                        }
                        None => {
                            queue.running = false;
                            shared.sealed_idle.notify_all();
                            break;
                        }
                    }
                };
                let written = shared.write_segment_index(next);
                let mut queue = shared.sealed.lock();
                queue.writing = None;
                if let Err(error) = written {
                    tracing::warn!(segment = next.segment_no, %error, "could not write a segment's index file; its event ids (and later segments') stay in memory, it is tried again at the next seal, and a reopen before then scans the segment");
                    // The rest wait for the next seal too, in order: an error that lasts (a
                    // full disk) costs one attempt per seal, not one per segment.
                    let queued: Vec<SealedSegment> = queue.items.drain(..).collect();
                    queue.failed.push(next);
                    queue.failed.extend(queued);
                }
            }
        }));
    }

    /// Seals the tail segment when it holds any event (see `LogStore::seal`): a failure
    /// stops the store, as when a batch fills the segment.
    fn seal_tail(&mut self) -> Result<(), AppendError> {
        if let Some(reason) = self.shared.stopped_reason() {
            return Err(AppendError::Stopped(reason.into()));
        }
        if self.tail_len == SEGMENT_HEADER_BYTES {
            return Ok(());
        }
        self.rotate().map_err(|e| {
            self.shared
                .stop(format!("sealing {} failed: {e}", self.tail.path.display()));
            AppendError::Stopped(self.shared.stopped_reason().unwrap_or_default().into())
        })
    }

    /// Seals the tail segment and starts a new one.
    fn rotate(&mut self) -> std::io::Result<()> {
        // A sealed segment ends at its last record, padding included: cut the preallocated
        // zeros, or restore the padding a last record read on open may lack.
        if self.tail.file.size()? != self.tail_len {
            self.tail.seal(self.tail_len);
            self.tail.file.set_len(self.tail_len)?;
            self.tail.file.sync_data()?;
        }
        let next_position = self.shared.state.read().index.next_position();
        let sealed = SealedSegment {
            segment_no: self.tail.header.segment_no,
            salt: self.tail.header.salt,
            first: self.tail.header.first_position,
            end_position: next_position,
            end_offset: self.tail_len,
        };
        let seg_dir = self.shared.dir.join(SEGMENTS_DIR);
        let seg = create_segment(
            &*self.shared.vfs,
            &seg_dir,
            self.tail.header.segment_no + 1,
            next_position,
        )?;
        self.shared.segments.push(seg.clone());
        self.tail = seg;
        self.tail_len = SEGMENT_HEADER_BYTES;
        self.allocated_len = SEGMENT_HEADER_BYTES;
        {
            let mut st = self.shared.state.write();
            st.log_end = LogEnd {
                segment_no: self.tail.header.segment_no,
                offset: self.tail_len,
                salt: self.tail.header.salt,
            };
        }
        // The sealed segment's index file, so that a reopen reads it rather than scanning the
        // segment: one segment's worth, written on a helper thread that takes the index's
        // lock a chunk at a time. The writer never waits for it; segments sealed while it
        // runs are queued for the same thread.
        self.queue_segment_index(sealed);
        Ok(())
    }
}

struct Deferred;

/// The answer to an append whose event ids could not be checked (reading a segment index
/// file failed): nothing is written.
fn id_lookup_failed(e: std::io::Error) -> AppendError {
    AppendError::Storage(BackendError::with_source(
        format!("checking event ids for a retry failed: {e}"),
        e,
    ))
}

/// What the appends accepted so far in a batch did to streams' lifecycles, which the index
/// learns only once the batch is durable.
#[derive(Default)]
struct BatchLifecycle {
    /// Streams whose tombstone is in this batch.
    tombstoned: HashSet<StreamId>,
    /// Metadata written in this batch, by metastream.
    metadata: HashMap<StreamId, StreamMetadata>,
}

impl BatchLifecycle {
    fn accepted(&mut self, req: &AppendRequest) {
        let Some(last) = req.events.last() else {
            return;
        };
        if req.stream.is_metastream() {
            if let Ok(m) = StreamMetadata::from_json(&last.data) {
                self.metadata.insert(req.stream.clone(), m);
            }
        } else if last.event_type == EVENT_TYPE_STREAM_TOMBSTONED {
            self.tombstoned.insert(req.stream.clone());
        }
    }
}

/// A read's error met while answering an append (an idempotent retry's check).
fn append_error(e: ReadError) -> AppendError {
    match e {
        ReadError::Corruption(c) => AppendError::Corruption(c),
        other => AppendError::Storage(BackendError::with_source(other.to_string(), other)),
    }
}
