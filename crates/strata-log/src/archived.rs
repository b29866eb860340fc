//! Sealed segments whose file lives only in an archive: reads fall through to it.
//!
//! Once a sealed segment is safely in an archive, [`LogStore::evict_archived`] gives its disk
//! back: the segment file is replaced by a small **stub** (`segments/NNN.archived`) that says
//! where it went, and its index file stays, so that the store still knows every event it
//! holds and finds them without the archive. Reading such an event asks the archive for the
//! [`limits::ARCHIVE_READ_BLOCK_BYTES`] around it through a [`SegmentSource`], and keeps the
//! answer in a cache bounded in bytes ([`crate::LogConfig::archive_cache_bytes`]); records
//! are checked as always (CRC, structure, position), so a damaged archive gives a corruption
//! error, never a wrong event.
//!
//! A store with stubs opens only with a source for them ([`crate::LogConfig::archive`]);
//! without one, [`crate::OpenError::Archived`] names the archive the stubs point at.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use strata_core::ReadError;

use crate::format::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::io::LogFile;
use crate::limits::{
    ARCHIVED_STUB_RUNS_MAX_BYTES, ARCHIVED_STUB_TAIL_BYTES, ARCHIVE_READ_AHEAD_BLOCKS,
    ARCHIVE_READ_BLOCK_BYTES,
};
use crate::recovery::{segment_index_path, SEGMENTS_DIR};
use crate::scavenge::Running;
use crate::sealed::SealedFilesError;
use crate::segment::{read_up_to, Segment};
use crate::store::{blocking, LogStore};
use crate::writer::Shared;

/// Where evicted segments' bytes are read from: an archive holding each segment file whole,
/// under its number. Implemented by `strata-archive` for a directory or an S3-compatible
/// service; called from reads on the blocking pool (never on a runtime's worker), so an
/// implementation may block.
pub trait SegmentSource: Send + Sync {
    /// Reads exactly `len` bytes at `offset` of segment `segment_no`'s file. Fewer bytes (the
    /// archive's copy is shorter) is an error the caller reports.
    fn fetch(&self, segment_no: u64, offset: u64, len: usize) -> io::Result<Vec<u8>>;

    /// The archive's name for people (a URL without credentials): stubs record it, and
    /// errors show it.
    fn name(&self) -> String;

    /// Reads several ranges `(offset, len)` of segment `segment_no`'s file, each exactly:
    /// one after another unless an implementation asks for them at once.
    fn fetch_many(&self, segment_no: u64, ranges: &[(u64, usize)]) -> io::Result<Vec<Vec<u8>>> {
        ranges
            .iter()
            .map(|&(offset, len)| self.fetch(segment_no, offset, len))
            .collect()
    }
}

/// The stub's first bytes.
const STUB_MAGIC: &[u8; 16] = b"STRATA-ARCHIVED1";

/// File name of segment `no`'s stub.
pub(crate) fn stub_file_name(no: u64) -> String {
    format!("{no:020}.archived")
}

/// What a stub records of its segment: its length, the archive's address, and the bytes of
/// it that must be read without the archive (**pinned**): its header (open reads it), its
/// last bytes (open checks the segment against its index file by its last record, and reads a
/// scavenged segment's removed runs there), and the record of each stream's last metadata
/// event that lies in it (the writer reads those to check appends, and never waits for an
/// archive). Written by an eviction; read back as an [`OpenStub`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stub {
    pub segment_no: u64,
    /// The segment file's length.
    pub len: u64,
    /// Pinned ranges: (offset, bytes), in order, apart, the first at 0 holding the header.
    pub pinned: Vec<(u64, Vec<u8>)>,
    /// The archive's name ([`SegmentSource::name`]).
    pub archive: String,
}

impl Stub {
    /// Layout (little-endian): magic, segment number u64, length u64, pinned ranges u32, each
    /// (offset u64, length u64, bytes), archive name length u32, name (UTF-8), CRC32C of
    /// everything before it u32.
    pub fn encode(&self) -> Vec<u8> {
        let pinned: usize = self.pinned.iter().map(|(_, b)| 16 + b.len()).sum();
        let mut b = Vec::with_capacity(64 + pinned + self.archive.len());
        b.extend_from_slice(STUB_MAGIC);
        b.extend_from_slice(&self.segment_no.to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(&(self.pinned.len() as u32).to_le_bytes());
        for (at, bytes) in &self.pinned {
            b.extend_from_slice(&at.to_le_bytes());
            b.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            b.extend_from_slice(bytes);
        }
        b.extend_from_slice(&(self.archive.len() as u32).to_le_bytes());
        b.extend_from_slice(self.archive.as_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }
}

/// A pinned range of an [`OpenStub`]: where it lies in the segment and in the stub file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pinned {
    at: u64,
    len: u64,
    in_stub: u64,
}

/// A stub read back and checked: what it records, its pinned bytes left in the file (read
/// when asked for: a stub may pin many small records, and memory holds 24 bytes per range).
pub(crate) struct OpenStub {
    pub segment_no: u64,
    pub len: u64,
    pub archive: String,
    /// The segment's header.
    pub header: Vec<u8>,
    ranges: Vec<Pinned>,
    file: std::fs::File,
}

impl OpenStub {
    /// Reads and checks the stub of segment `no` in `seg_dir`.
    pub fn read(seg_dir: &Path, no: u64) -> Result<OpenStub, (PathBuf, String)> {
        let path = seg_dir.join(stub_file_name(no));
        let fail = |reason: String| (path.clone(), reason);
        let file = std::fs::File::open(&path).map_err(|e| fail(e.to_string()))?;
        let bytes = {
            use std::io::Read;
            let mut b = Vec::new();
            (&file)
                .read_to_end(&mut b)
                .map_err(|e| fail(e.to_string()))?;
            b
        };
        let stub = Self::decode(&bytes, file).map_err(fail)?;
        if stub.segment_no != no {
            return Err(fail(format!("it names segment {}", stub.segment_no)));
        }
        Ok(stub)
    }

    fn decode(bytes: &[u8], file: std::fs::File) -> Result<OpenStub, String> {
        let body_len = bytes
            .len()
            .checked_sub(4)
            .ok_or("shorter than its checksum")?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("its checksum does not match".to_owned());
        }
        let mut r = Reader(body);
        if r.take(STUB_MAGIC.len())? != STUB_MAGIC {
            return Err("it is not an archived segment's stub".to_owned());
        }
        let segment_no = r.u64()?;
        let len = r.u64()?;
        let count = r.u32()? as usize;
        let mut ranges: Vec<Pinned> = Vec::with_capacity(count.min(body.len() / 16));
        let mut end = 0u64;
        let mut header = Vec::new();
        for i in 0..count {
            let at = r.u64()?;
            let n = r.u64()?;
            let in_stub = (body.len() - r.0.len()) as u64;
            let taken = r.take(usize::try_from(n).map_err(|_| "a pinned range too large")?)?;
            let fits = at >= end && at.checked_add(n).is_some_and(|e| e <= len);
            if !fits || n == 0 {
                return Err(
                    "its pinned ranges overlap, are empty or lie past its length".to_owned(),
                );
            }
            if i == 0 {
                if at != 0 || n < SEGMENT_HEADER_BYTES {
                    return Err("it does not hold its segment's header".to_owned());
                }
                header = taken[..SEGMENT_HEADER_BYTES as usize].to_vec();
            }
            end = at + n;
            ranges.push(Pinned {
                at,
                len: n,
                in_stub,
            });
        }
        if ranges.is_empty() {
            return Err("it does not hold its segment's header".to_owned());
        }
        let n = r.u32()? as usize;
        let archive =
            String::from_utf8(r.take(n)?.to_vec()).map_err(|_| "its archive name is not UTF-8")?;
        if !r.0.is_empty() {
            return Err("it has bytes past its end".to_owned());
        }
        Ok(OpenStub {
            segment_no,
            len,
            archive,
            header,
            ranges,
            file,
        })
    }

    /// The pinned range `offset` lies in, when one does.
    fn pinned_at(&self, offset: u64) -> Option<Pinned> {
        let i = self.ranges.partition_point(|r| r.at <= offset);
        let r = *self.ranges.get(i.checked_sub(1)?)?;
        (offset < r.at + r.len).then_some(r)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("it is cut short".to_owned());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// What the archive cache holds and has done, for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveCacheStats {
    /// Bytes of archived segments held in memory now.
    pub cached_bytes: u64,
    /// The most it holds ([`crate::LogConfig::archive_cache_bytes`]).
    pub limit_bytes: u64,
    /// Blocks read from the cache.
    pub hits: u64,
    /// Blocks fetched from the archive.
    pub fetches: u64,
    /// Bytes fetched from the archive.
    pub fetched_bytes: u64,
    /// Requests to the archive that failed (each failed the read that made it).
    pub fetch_errors: u64,
}

/// Reads of archived segments through a cache of blocks, bounded in bytes; least recently
/// used blocks go first. One per open store.
pub(crate) struct ArchiveReads {
    source: Arc<dyn SegmentSource>,
    limit_bytes: u64,
    /// Read-locked by hits (which only touch a block's clock), write-locked by misses.
    cache: parking_lot::RwLock<Cache>,
    /// The cache's clock: a block's last use is the clock's value then.
    clock: AtomicU64,
    hits: AtomicU64,
    fetches: AtomicU64,
    fetched_bytes: AtomicU64,
    fetch_errors: AtomicU64,
}

/// A cached block: its bytes and when it was last used (the cache's clock).
type Cached = (Arc<[u8]>, AtomicU64);

#[derive(Default)]
struct Cache {
    /// By (segment, block number).
    blocks: HashMap<(u64, u64), Cached>,
    /// The latest misses, (segment, block), oldest first.
    recent_misses: std::collections::VecDeque<(u64, u64)>,
    bytes: u64,
}

impl ArchiveReads {
    pub fn new(source: Arc<dyn SegmentSource>, limit_bytes: u64) -> ArchiveReads {
        ArchiveReads {
            source,
            limit_bytes,
            cache: parking_lot::RwLock::new(Cache::default()),
            clock: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            fetch_errors: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> String {
        self.source.name()
    }

    pub fn stats(&self) -> ArchiveCacheStats {
        ArchiveCacheStats {
            cached_bytes: self.cache.read().bytes,
            limit_bytes: self.limit_bytes,
            hits: self.hits.load(Ordering::Relaxed),
            fetches: self.fetches.load(Ordering::Relaxed),
            fetched_bytes: self.fetched_bytes.load(Ordering::Relaxed),
            fetch_errors: self.fetch_errors.load(Ordering::Relaxed),
        }
    }

    /// Block `block` of segment `no` (of `len` bytes): from the cache, or fetched (without
    /// holding the cache's lock) and kept. A miss right after a miss of the block before it
    /// (a read going through the segment) fetches the blocks after it too, at once
    /// ([`ARCHIVE_READ_AHEAD_BLOCKS`]), so that a long read waits for one round trip per
    /// several blocks rather than one per block.
    fn block(&self, no: u64, block: u64, len: u64) -> io::Result<Arc<[u8]>> {
        let tick = || self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let hit = |(bytes, used): &Cached| {
            used.store(tick(), Ordering::Relaxed);
            self.hits.fetch_add(1, Ordering::Relaxed);
            bytes.clone()
        };
        if let Some(cached) = self.cache.read().blocks.get(&(no, block)) {
            return Ok(hit(cached));
        }
        let ahead = {
            let mut c = self.cache.write();
            // Another reader may have fetched it meanwhile.
            if let Some(cached) = c.blocks.get(&(no, block)) {
                return Ok(hit(cached));
            }
            let follows = c
                .recent_misses
                .iter()
                .any(|&(n, b)| (n == no && b + 1 == block) || (block == 0 && n + 1 == no));
            if c.recent_misses.len() == RECENT_MISSES {
                c.recent_misses.pop_front();
            }
            c.recent_misses.push_back((no, block));
            // Never more than half the cache, so what a read fetches stays until it reads it.
            let room = (self.limit_bytes / ARCHIVE_READ_BLOCK_BYTES / 2).max(1);
            let blocks = len.div_ceil(ARCHIVE_READ_BLOCK_BYTES);
            let ahead: Vec<u64> = match follows {
                true => (block + 1..blocks)
                    .filter(|b| !c.blocks.contains_key(&(no, *b)))
                    .take((ARCHIVE_READ_AHEAD_BLOCKS.min(room) as usize).saturating_sub(1))
                    .collect(),
                false => Vec::new(),
            };
            // The last block fetched ahead counts as a miss: the read's next miss, right
            // after it, goes on fetching ahead.
            if let Some(&last) = ahead.last() {
                if c.recent_misses.len() == RECENT_MISSES {
                    c.recent_misses.pop_front();
                }
                c.recent_misses.push_back((no, last));
            }
            ahead
        };
        let range = |b: u64| {
            let at = b * ARCHIVE_READ_BLOCK_BYTES;
            (at, (len - at).min(ARCHIVE_READ_BLOCK_BYTES) as usize)
        };
        let ranges: Vec<(u64, usize)> = std::iter::once(block)
            .chain(ahead.iter().copied())
            .map(range)
            .collect();
        let fetched = self.source.fetch_many(no, &ranges).inspect_err(|_| {
            self.fetch_errors.fetch_add(1, Ordering::Relaxed);
        })?;
        if fetched.len() != ranges.len() {
            self.fetch_errors.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::other(format!(
                "the archive {} gave {} ranges of segment {no}, not {}",
                self.source.name(),
                fetched.len(),
                ranges.len()
            )));
        }
        for (&(at, want), bytes) in ranges.iter().zip(&fetched) {
            if bytes.len() != want {
                self.fetch_errors.fetch_add(1, Ordering::Relaxed);
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the archive {} gave {} bytes of segment {no} at {at}, not {want}",
                        self.source.name(),
                        bytes.len()
                    ),
                ));
            }
        }
        let mut c = self.cache.write();
        let mut asked = None;
        // The asked block last, so that it is the most recently used.
        let numbered: Vec<(u64, Vec<u8>)> = std::iter::once(block)
            .chain(ahead.iter().copied())
            .zip(fetched)
            .collect();
        for (b, bytes) in numbered.into_iter().rev() {
            self.fetches.fetch_add(1, Ordering::Relaxed);
            self.fetched_bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let bytes: Arc<[u8]> = bytes.into();
            if let Some(old) = c
                .blocks
                .insert((no, b), (bytes.clone(), AtomicU64::new(tick())))
            {
                c.bytes -= old.0.len() as u64;
            }
            c.bytes += bytes.len() as u64;
            if b == block {
                asked = Some(bytes);
            }
        }
        // Least recently used out first; a scan, as the cache holds few blocks (its limit over
        // a block's size).
        while c.bytes > self.limit_bytes {
            let Some((&key, _)) = c
                .blocks
                .iter()
                .min_by_key(|(_, (_, used))| used.load(Ordering::Relaxed))
            else {
                break;
            };
            if let Some((b, _)) = c.blocks.remove(&key) {
                c.bytes -= b.len() as u64;
            }
        }
        Ok(asked.expect("the asked block is among those fetched"))
    }
}

/// Misses remembered to tell a read going through a segment from lone reads.
const RECENT_MISSES: usize = 16;

/// An archived segment's file: read through the archive's cache, except its first and last
/// bytes, which its stub holds. Never written.
pub(crate) struct ArchivedFile {
    stub: OpenStub,
    reads: Arc<ArchiveReads>,
}

impl ArchivedFile {
    pub fn new(stub: OpenStub, reads: Arc<ArchiveReads>) -> ArchivedFile {
        ArchivedFile { stub, reads }
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "an archived segment is never written",
    )
}

impl LogFile for ArchivedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let s = &self.stub;
        if offset >= s.len || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min((s.len - offset) as usize);
        // From a pinned range, up to its end only: a read of a record there (a lone record's
        // read asks for more than the record) never waits for the archive; the caller asks
        // again for what lies past it.
        if let Some(r) = s.pinned_at(offset) {
            use std::os::unix::fs::FileExt;
            let n = want.min((r.at + r.len - offset) as usize);
            s.file
                .read_exact_at(&mut buf[..n], r.in_stub + (offset - r.at))?;
            return Ok(n);
        }
        let mut done = 0;
        while done < want {
            let at = offset + done as u64;
            let block = at / ARCHIVE_READ_BLOCK_BYTES;
            let bytes = self.reads.block(s.segment_no, block, s.len)?;
            let inside = (at - block * ARCHIVE_READ_BLOCK_BYTES) as usize;
            let n = (want - done).min(bytes.len() - inside);
            buf[done..done + n].copy_from_slice(&bytes[inside..inside + n]);
            done += n;
        }
        Ok(done)
    }
    fn write_all_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(read_only())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(read_only())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.stub.len)
    }
}

/// What [`LogStore::evict_archived`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EvictReport {
    /// Segments whose local file this call gave back.
    pub evicted: u64,
    /// Bytes of segment files given back.
    pub bytes: u64,
    /// Segments archived but kept, because the archive's copy is not the local file (a
    /// scavenge rewrote it after it was archived): their events are read locally.
    pub differ: Vec<u64>,
    /// Segments kept because the archive does not hold them whole (an object gone or cut
    /// short since it was archived): their events are read locally.
    pub missing: Vec<u64>,
    /// Segments now read from the archive, this call's and earlier ones.
    pub archived_segments: u64,
}

/// What an archive holds of a segment, for [`LogStore::evict_archived`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArchivedCopy {
    /// Byte for byte the local file: the segment may be given back.
    Same,
    /// Another file (a scavenge rewrote the local one after it was archived).
    Differs,
    /// Nothing whole (not archived, or its object is gone or cut short).
    Missing,
    /// Whatever the archive holds, the caller keeps this one local (a policy: recent
    /// events, high positions).
    Kept,
}

/// Tells, for [`LogStore::evict_archived`], what the archive holds of segment `no`, given the
/// local file (open, held still).
pub type SameAsArchived = Box<dyn FnMut(u64, &std::fs::File) -> io::Result<ArchivedCopy> + Send>;

impl LogStore {
    /// Gives back the disk of sealed segments an archive holds, keeping the newest
    /// `keep_newest` sealed segments (and the open one) local: each of segments
    /// `0..archived_segments` (those the archive holds) whose file `same` finds identical to
    /// the archive's copy is replaced by a stub, durably (stub written and synced, then the
    /// file removed), and read from `source` from then on. The segments' index files stay, so
    /// finding an event never asks the archive.
    ///
    /// No scavenge runs meanwhile ([`SealedFilesError::Busy`] while one does); a scavenge
    /// later leaves archived segments as they are. A store that already reads archived
    /// segments takes only the same archive (by [`SegmentSource::name`]).
    pub async fn evict_archived(
        &self,
        source: Arc<dyn SegmentSource>,
        archived_segments: u64,
        keep_newest: u64,
        same: SameAsArchived,
    ) -> Result<EvictReport, SealedFilesError> {
        let shared = self.shared().clone();
        let held = Running::start(shared.clone()).map_err(|_| SealedFilesError::Busy)?;
        if let Some(reason) = shared.stopped_reason() {
            return Err(ReadError::Unavailable(reason.into()).into());
        }
        let store = self.clone();
        let mut same = same;
        let report = blocking(move || {
            let _held = held;
            shared.wait_for_segment_indexes();
            store
                .while_open(|| {
                    evict_now(&shared, source, archived_segments, keep_newest, &mut same)
                })
                .ok_or_else(|| ReadError::Unavailable(("the store is closed".to_owned()).into()))?
        })
        .await?;
        Ok(report)
    }

    /// The archive cache's figures, when the store reads archived segments.
    pub fn archive_cache(&self) -> Option<ArchiveCacheStats> {
        self.shared().archive.read().as_ref().map(|r| r.stats())
    }
}

/// Where each stream's last metadata event lies, by segment (below `below`): the record
/// offsets in each. Reads the streams a chunk at a time under the state lock.
fn last_metadata_events(shared: &Shared, below: u64) -> HashMap<u64, Vec<u64>> {
    const CHUNK_STREAMS: usize = 16_384;
    let mut out: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut from = 0;
    loop {
        let st = shared.state.read();
        let index = &st.index;
        let Some(chunk) = index.streams.get(from..) else {
            break;
        };
        if chunk.is_empty() {
            break;
        }
        for se in chunk.iter().take(CHUNK_STREAMS) {
            if !se.name().starts_with(strata_core::METASTREAM_PREFIX) {
                continue;
            }
            let Some(p) = se.positions.last() else {
                continue;
            };
            let Ok(entry) = index.entries.get(p) else {
                continue;
            };
            let seg = crate::index::loc_segment(entry.loc);
            if seg < below {
                out.entry(seg)
                    .or_default()
                    .push(crate::index::loc_offset(entry.loc));
            }
        }
        from += CHUNK_STREAMS;
    }
    out
}

/// `ranges` (start, end) sorted, with those that overlap or touch made one.
fn merge_ranges(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|(a, b)| a < b);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn evict_now(
    shared: &Arc<Shared>,
    source: Arc<dyn SegmentSource>,
    archived_segments: u64,
    keep_newest: u64,
    same: &mut SameAsArchived,
) -> Result<EvictReport, ReadError> {
    let storage = |what: String| ReadError::Storage(what.into());
    if let Some(r) = &*shared.archive.read() {
        if r.name() != source.name() {
            return Err(ReadError::Unavailable(
                format!(
                    "this store reads archived segments from {}, not {}",
                    r.name(),
                    source.name()
                )
                .into(),
            ));
        }
    }
    // The store reads from the archive once it gives a first segment back, not before.
    let reads = || {
        shared
            .archive
            .write()
            .get_or_insert_with(|| {
                Arc::new(ArchiveReads::new(
                    source.clone(),
                    shared.archive_cache_bytes,
                ))
            })
            .clone()
    };
    let seg_dir = shared.dir.join(SEGMENTS_DIR);
    let mut report = EvictReport::default();
    // Sealed segments: all but the last (the open one).
    let sealed = shared.segments.count().saturating_sub(1);
    let below = archived_segments.min(sealed.saturating_sub(keep_newest));
    let metadata = last_metadata_events(shared, below);
    for no in 0..below {
        let Some(seg) = shared.segments.get(no) else {
            break;
        };
        if seg.is_archived() {
            continue;
        }
        // Only a segment whose entries and ids are read from its index file, which stays.
        let in_file = {
            let index = &shared.state.read().index;
            index.ids.in_file(no) && index.entries.in_file(no, seg.header.first_position)
        };
        if !in_file || !segment_index_path(&seg_dir, no).is_file() {
            break;
        }
        let file = std::fs::File::open(&seg.path)
            .map_err(|e| storage(format!("opening {}: {e}", seg.path.display())))?;
        let len = seg
            .file
            .size()
            .map_err(|e| storage(format!("reading {}: {e}", seg.path.display())))?;
        match same(no, &file).map_err(|e| storage(format!("checking segment {no}: {e}")))? {
            ArchivedCopy::Same => {}
            ArchivedCopy::Differs => {
                report.differ.push(no);
                continue;
            }
            ArchivedCopy::Missing => {
                report.missing.push(no);
                continue;
            }
            ArchivedCopy::Kept => continue,
        }
        let read = |at: u64, n: u64| -> Result<Vec<u8>, ReadError> {
            let mut buf = vec![0; n as usize];
            match read_up_to(&*seg.file, &mut buf, at) {
                Ok(got) if got == buf.len() => Ok(buf),
                Ok(_) => Err(storage(format!("{} is cut short", seg.path.display()))),
                Err(e) => Err(storage(format!("reading {}: {e}", seg.path.display()))),
            }
        };
        // What is pinned: the header, the last bytes (from a scavenged segment's removed runs
        // when they are small), and the metadata events the writer may read.
        let head_len = SEGMENT_HEADER_BYTES.min(len);
        let mut tail_at = len - ARCHIVED_STUB_TAIL_BYTES.min(len - head_len);
        if seg.header.scavenged
            && len.saturating_sub(seg.header.runs_at) <= ARCHIVED_STUB_RUNS_MAX_BYTES
        {
            tail_at = tail_at.min(seg.header.runs_at.max(head_len));
        }
        let mut ranges: Vec<(u64, u64)> = vec![(0, head_len), (tail_at, len)];
        for &at in metadata.get(&no).into_iter().flatten() {
            let first = read(at, (RECORD_HEADER_BYTES as u64).min(len - at))?;
            let Some(n) = crate::format::peek_len(&first) else {
                return Err(storage(format!(
                    "{}: no record at byte {at}, where the index places a metadata event",
                    seg.path.display()
                )));
            };
            ranges.push((at, (at + crate::format::padded_len(n) as u64).min(len)));
        }
        let mut pinned: Vec<(u64, Vec<u8>)> = Vec::new();
        for (at, end) in merge_ranges(ranges) {
            pinned.push((at, read(at, end - at)?));
        }
        let stub = Stub {
            segment_no: no,
            len,
            pinned,
            archive: source.name(),
        };
        let vfs = &*shared.vfs;
        let stub_path = seg_dir.join(stub_file_name(no));
        crate::io::write_file_atomic(vfs, &stub_path, &stub.encode())
            .map_err(|e| storage(format!("writing {}: {e}", stub_path.display())))?;
        // Read back as an open will, before the segment file goes.
        let stub = OpenStub::read(&seg_dir, no)
            .map_err(|(file, reason)| storage(format!("{}: {reason}", file.display())))?;
        let archived = Arc::new(Segment::archived(
            seg.path.clone(),
            Arc::new(ArchivedFile::new(stub, reads())),
            seg.header,
        ));
        let old = {
            // Under the state lock, as a scavenge's swap: a read that fails on the old file
            // after this (its blocks given back) runs again.
            let _st = shared.state.write();
            let old = shared.segments.replace(archived);
            shared.scavenged.fetch_add(1, Ordering::AcqRel);
            old
        };
        vfs.remove(&seg.path)
            .and_then(|()| vfs.sync_dir(&seg_dir))
            .map_err(|e| storage(format!("removing {}: {e}", seg.path.display())))?;
        drop(seg);
        if let Some(old) = old {
            crate::scavenge::release_gradually(old, ());
        }
        report.evicted += 1;
        report.bytes += len;
    }
    report.archived_segments = archived_count(&shared.segments);
    Ok(report)
}

impl ArchiveCacheStats {
    /// The figures as Prometheus text, with `archived_segments`, for a server's `/metrics`.
    pub fn prometheus(&self, archived_segments: u64) -> String {
        use std::fmt::Write;
        let mut text = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                text,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        put(
            "strata_archived_segments",
            "gauge",
            "Sealed segments whose records are read from the archive (their disk given back).",
            archived_segments,
        );
        put(
            "strata_archive_cache_bytes",
            "gauge",
            "Bytes of archived segments held in memory (at most archive_cache_bytes).",
            self.cached_bytes,
        );
        put(
            "strata_archive_cache_limit_bytes",
            "gauge",
            "The archive cache's bound, in bytes.",
            self.limit_bytes,
        );
        put(
            "strata_archive_cache_hits_total",
            "counter",
            "Blocks of archived segments read from the cache.",
            self.hits,
        );
        put(
            "strata_archive_fetches_total",
            "counter",
            "Blocks of archived segments fetched from the archive.",
            self.fetches,
        );
        put(
            "strata_archive_fetched_bytes_total",
            "counter",
            "Bytes of archived segments fetched from the archive.",
            self.fetched_bytes,
        );
        put(
            "strata_archive_fetch_errors_total",
            "counter",
            "Requests to the archive that failed (each failed the read that made it).",
            self.fetch_errors,
        );
        text
    }
}

/// How many of `segments` live only in an archive.
pub(crate) fn archived_count(segments: &crate::segment::Segments) -> u64 {
    (0..segments.count())
        .filter(|&no| segments.get(no).is_some_and(|s| s.is_archived()))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crafted(segment_len: u64, count: u32, ranges: &[(u64, u64, usize)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(STUB_MAGIC);
        b.extend_from_slice(&7u64.to_le_bytes());
        b.extend_from_slice(&segment_len.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        for &(at, n, actual) in ranges {
            b.extend_from_slice(&at.to_le_bytes());
            b.extend_from_slice(&n.to_le_bytes());
            b.extend(std::iter::repeat_n(0u8, actual));
        }
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(b'a');
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(bytes: &[u8]) -> Result<OpenStub, String> {
        let f = tempfile::tempfile().unwrap();
        OpenStub::decode(bytes, f)
    }

    /// Stubs whose counts, offsets or lengths cannot be true are refused without a panic or
    /// an allocation they do not justify; a good one's ranges are found at their edges.
    #[test]
    fn crafted_stubs_are_refused_without_panics() {
        let cases: Vec<Vec<u8>> = vec![
            crafted(u64::MAX, u32::MAX, &[]),
            crafted(u64::MAX, u32::MAX, &[(0, u64::MAX, 64)]),
            crafted(u64::MAX, 2, &[(0, 64, 64), (u64::MAX - 1, 2, 2)]),
            crafted(u64::MAX, 2, &[(0, 64, 64), (u64::MAX, 1, 1)]),
            crafted(100, 1, &[(0, 63, 63)]),
            crafted(100, 1, &[(1, 64, 64)]),
            crafted(100, 2, &[(0, 64, 64), (32, 8, 8)]),
            crafted(100, 2, &[(0, 64, 64), (64, 0, 0)]),
            crafted(100, 0, &[]),
            crafted(100, 1, &[(0, 101, 101)]),
        ];
        for (i, c) in cases.iter().enumerate() {
            assert!(decode(c).is_err(), "case {i}");
        }
        // Truncations of a good stub never panic.
        let good = crafted(1000, 2, &[(0, 64, 64), (900, 100, 100)]);
        let s = decode(&good).unwrap();
        assert_eq!(s.pinned_at(899), None);
        assert_eq!(
            s.pinned_at(900).map(|r| r.in_stub),
            Some(16 + 8 + 8 + 4 + 16 + 64 + 16)
        );
        assert_eq!(s.pinned_at(999).map(|r| r.at), Some(900));
        assert_eq!(s.pinned_at(1000), None);
        assert_eq!(s.pinned_at(u64::MAX), None);
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
    }
}
