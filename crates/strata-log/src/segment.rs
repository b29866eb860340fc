//! Segment files and reading records from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use strata_core::{
    BackendError, Corruption, CorruptionLocation, Position, ReadError, RecordedEvent,
};

use crate::format::{decode_record, DecodeError, SegmentHeader, RECORD_HEADER_BYTES};
use crate::index::{loc_offset, loc_segment, Loc};
use crate::io::LogFile;
use crate::limits::{
    READ_PARALLEL_MAX_THREADS, READ_PARALLEL_MIN_EVENTS, READ_PARALLEL_THREADS_TOTAL_MAX,
};

/// One open segment file.
pub(crate) struct Segment {
    pub path: PathBuf,
    pub file: Arc<dyn LogFile>,
    pub header: SegmentHeader,
    /// The file mapped for reading, once a read has asked (see [`Segment::mapped`]).
    map: RwLock<Option<Arc<memmap2::Mmap>>>,
    /// Set when the file cannot be mapped: reads then use `pread` for good.
    unmappable: std::sync::atomic::AtomicBool,
    /// The segment's length once the writer sealed it (`u64::MAX` before): sealing cuts the
    /// zeros preallocated past the last record, and a map made earlier is longer than the
    /// file from then on, so reads through a map never look past this.
    sealed_len: std::sync::atomic::AtomicU64,
    /// Whether its file lives only in an archive (`crate::archived`): read through the
    /// archive's cache, never rewritten.
    archived: bool,
}

impl Segment {
    pub fn new(path: PathBuf, file: Arc<dyn LogFile>, header: SegmentHeader) -> Segment {
        Segment {
            path,
            file,
            header,
            map: RwLock::new(None),
            unmappable: std::sync::atomic::AtomicBool::new(false),
            sealed_len: std::sync::atomic::AtomicU64::new(u64::MAX),
            archived: false,
        }
    }

    /// A sealed segment whose file (`file`, an `ArchivedFile`) lives only in an archive.
    pub fn archived(path: PathBuf, file: Arc<dyn LogFile>, header: SegmentHeader) -> Segment {
        Segment {
            archived: true,
            ..Segment::new(path, file, header)
        }
    }

    /// Whether its file lives only in an archive.
    pub fn is_archived(&self) -> bool {
        self.archived
    }

    /// Records that the writer is about to cut the file to `len` (its last record's end).
    pub fn seal(&self, len: u64) {
        self.sealed_len
            .store(len, std::sync::atomic::Ordering::Release);
    }

    /// The bytes of `map` a read that starts now may be handed: a map made before sealing is
    /// longer than the file from then on. (A read already under way keeps the longer slice,
    /// which is still sound: it reads only the bytes of committed records, all below the
    /// sealed length.)
    fn readable<'m>(&self, map: &'m memmap2::Mmap) -> &'m [u8] {
        let sealed = self.sealed_len.load(std::sync::atomic::Ordering::Acquire);
        &map[..(map.len() as u64).min(sealed) as usize]
    }

    /// A map of this segment holding at least its first `end` bytes, or `None` when it
    /// cannot be mapped (then the caller reads with `pread`). A segment still being written
    /// grows past its map: the first read that needs more maps it again at its new length
    /// (readers still holding the old map keep it until they finish).
    ///
    /// Only committed records may be read through the map (see `LogFile::map`).
    fn mapped(&self, end: u64) -> Option<Arc<memmap2::Mmap>> {
        use std::sync::atomic::Ordering;
        let covers =
            |m: &Option<Arc<memmap2::Mmap>>| m.as_ref().filter(|m| m.len() as u64 >= end).cloned();
        if let Some(m) = covers(&self.map.read()) {
            return Some(m);
        }
        if self.unmappable.load(Ordering::Relaxed) {
            return None;
        }
        let mut slot = self.map.write();
        if let Some(m) = covers(&slot) {
            return Some(m);
        }
        let Some(mapped) = self.file.map() else {
            self.unmappable.store(true, Ordering::Relaxed);
            return None;
        };
        match mapped {
            Ok(m) if m.len() as u64 >= end => {
                let m = Arc::new(m);
                *slot = Some(m.clone());
                Some(m)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e,
                    "cannot map the segment; reading it with pread");
                self.unmappable.store(true, Ordering::Relaxed);
                None
            }
        }
    }
}

/// File name of segment `no`.
pub(crate) fn segment_file_name(no: u64) -> String {
    format!("{no:020}.seg")
}

/// Parses a segment file name.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The open segments, numbered from 0 and contiguous.
#[derive(Default)]
pub(crate) struct Segments {
    list: RwLock<Vec<Arc<Segment>>>,
    /// Read records through maps of the segment files rather than with `pread` (see
    /// `LogConfig::map_reads`).
    pub map_reads: bool,
}

/// Bytes read from a record's start before its length is known: the first record of a read.
const FIRST_READ_BYTES: usize = 512;
/// Most bytes read from a record's start once earlier records of the same read have shown
/// their lengths (a larger record takes a second read).
const FIRST_READ_MAX_BYTES: usize = 4096;
/// Records closer together than this are fetched in one read.
const COALESCE_GAP_BYTES: u64 = 8 * 1024;
/// Largest single read when coalescing.
const COALESCE_MAX_BYTES: u64 = 4 * 1024 * 1024;

impl Segments {
    pub fn push(&self, seg: Arc<Segment>) {
        let mut list = self.list.write();
        assert_eq!(
            list.len() as u64,
            seg.header.segment_no,
            "segments are contiguous"
        );
        list.push(seg);
    }

    /// Puts `seg` in the place of the segment of its number, which a scavenge rewrote;
    /// readers holding the old one keep reading it. Returns the old one.
    pub fn replace(&self, seg: Arc<Segment>) -> Option<Arc<Segment>> {
        let mut list = self.list.write();
        let slot = list.get_mut(seg.header.segment_no as usize)?;
        Some(std::mem::replace(slot, seg))
    }

    pub fn get(&self, no: u64) -> Option<Arc<Segment>> {
        self.list.read().get(no as usize).cloned()
    }

    /// How many segments there are, the open one included.
    pub fn count(&self) -> u64 {
        self.list.read().len() as u64
    }

    pub fn last(&self) -> Option<Arc<Segment>> {
        self.list.read().last().cloned()
    }

    /// Reads the events at `items` (position, location), in the order given. Records close
    /// together on disk are fetched with one read. Every record is checked: CRC, structure,
    /// and that it holds the position the index says.
    ///
    /// A long read of records spread apart (at least [`READ_PARALLEL_MIN_EVENTS`] events, half
    /// as many separate reads) is split into contiguous parts read on up to
    /// [`READ_PARALLEL_MAX_THREADS`] threads at once: most of its time is one `pread` per
    /// record, and the parts are independent.
    pub fn read_events(&self, items: &[(u64, Loc)]) -> Result<Vec<RecordedEvent>, ReadError> {
        if items.len() < READ_PARALLEL_MIN_EVENTS {
            return self.read_events_serial(items);
        }
        static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let cores =
            *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let threads = cores
            .min(READ_PARALLEL_MAX_THREADS)
            .min(items.len() / READ_PARALLEL_MIN_EVENTS + 1);
        // Only records spread apart are worth it: neighbours are read together anyway (a page
        // of `$all` is a few large reads), and a thread costs more than it saves there.
        let scattered = || {
            items
                .windows(2)
                .filter(|w| loc_offset(w[0].1).abs_diff(loc_offset(w[1].1)) > COALESCE_GAP_BYTES)
                .count()
                >= READ_PARALLEL_MIN_EVENTS / 2
        };
        if threads < 2 || !scattered() {
            return self.read_events_serial(items);
        }
        let Some(reserved) = ReadThreads::reserve(threads) else {
            return self.read_events_serial(items);
        };
        let part = items.len().div_ceil(reserved.count);
        let parts: Vec<Result<Vec<RecordedEvent>, ReadError>> = std::thread::scope(|scope| {
            // A part whose thread cannot be started is read on this one.
            let handles: Vec<_> = items
                .chunks(part)
                .map(|chunk| {
                    std::thread::Builder::new()
                        .name("strata-read".to_owned())
                        .spawn_scoped(scope, move || self.read_events_serial(chunk))
                        .map_err(|_| chunk)
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h {
                    Ok(h) => h.join().unwrap_or_else(|_| {
                        Err(ReadError::Storage(
                            ("a read thread panicked".to_owned()).into(),
                        ))
                    }),
                    Err(chunk) => self.read_events_serial(chunk),
                })
                .collect()
        });
        drop(reserved);
        // The first part's vector takes the rest (growing a large vector remaps it, no copy).
        let mut parts = parts.into_iter();
        let mut out = parts.next().unwrap_or_else(|| Ok(Vec::new()))?;
        out.reserve(items.len() - out.len());
        for p in parts {
            out.extend(p?);
        }
        Ok(out)
    }

    fn read_events_serial(&self, items: &[(u64, Loc)]) -> Result<Vec<RecordedEvent>, ReadError> {
        // Visit records in file order: forward reads already are, backward reads are reversed.
        // Those two (every stream and `$all` read) decode straight into the answer, in file
        // order, reversed at the end for a backward read; only another order goes through a
        // slot per item.
        let forward = items.windows(2).all(|w| w[0].1 < w[1].1);
        let backward = !forward && items.windows(2).all(|w| w[0].1 > w[1].1);
        let order: Vec<usize> = if forward {
            (0..items.len()).collect()
        } else if backward {
            (0..items.len()).rev().collect()
        } else {
            let mut o: Vec<usize> = (0..items.len()).collect();
            o.sort_unstable_by_key(|&i| items[i].1);
            o
        };
        let in_file_order = forward || backward;
        let mut decoded: Vec<RecordedEvent> =
            Vec::with_capacity(if in_file_order { items.len() } else { 0 });
        let mut slots: Vec<Option<RecordedEvent>> = if in_file_order {
            Vec::new()
        } else {
            (0..items.len()).map(|_| None).collect()
        };
        let mut window: Vec<u8> = Vec::new();
        // The longest record seen so far in this read: a stream's events are mostly alike, so
        // each read takes about that many bytes from a record's start (see `first_read`).
        let mut longest = 0usize;
        let mut seg: Option<Arc<Segment>> = None;
        let mut k = 0;
        while k < order.len() {
            let (first_position, first_loc) = items[order[k]];
            let seg_no = loc_segment(first_loc);
            if seg.as_ref().is_none_or(|s| s.header.segment_no != seg_no) {
                seg = Some(self.get(seg_no).ok_or_else(|| {
                    Corruption::new(
                        CorruptionLocation::LogFile {
                            file: segment_file_name(seg_no).into(),
                            offset: loc_offset(first_loc),
                        },
                        Some(Position(first_position)),
                        "the index points into a segment that does not exist",
                    )
                })?);
            }
            let Some(seg) = seg.as_deref() else {
                unreachable!("set just above")
            };
            // Extend the run while the next record is in the same segment and close by.
            let start = loc_offset(first_loc);
            let mut end_k = k + 1;
            while end_k < order.len() {
                let l = items[order[end_k]].1;
                let prev = loc_offset(items[order[end_k - 1]].1);
                if loc_segment(l) != seg_no
                    || loc_offset(l) - prev > COALESCE_GAP_BYTES
                    || loc_offset(l) - start > COALESCE_MAX_BYTES
                {
                    break;
                }
                end_k += 1;
            }
            let last_off = loc_offset(items[order[end_k - 1]].1);
            // Mapped, the run's bytes are read in place: no system call and no copy into a
            // window. Otherwise one `pread` fetches the whole run.
            let map = if self.map_reads {
                seg.mapped(last_off + 1)
            } else {
                None
            };
            let (filled, base): (&[u8], u64) = match map.as_deref() {
                Some(m) => (seg.readable(m), 0),
                None => {
                    let window_len = (last_off - start) as usize + first_read(longest);
                    if window.len() < window_len {
                        window.resize(window_len, 0);
                    }
                    // Read until the window holds the last record's header at least: a read
                    // may stop short (a file read from an archive stops at the end of the
                    // bytes it holds locally, so that a lone record there never waits for
                    // the archive); records it does not hold whole are read again on their
                    // own below, at their length.
                    let at_least =
                        ((last_off - start) as usize + RECORD_HEADER_BYTES).min(window_len);
                    let mut n = 0;
                    while n < at_least {
                        let got = seg
                            .file
                            .read_at(&mut window[n..window_len], start + n as u64)
                            .map_err(|e| io_err(&seg.path, start, e))?;
                        if got == 0 {
                            break;
                        }
                        n += got;
                    }
                    (&window[..n], start)
                }
            };
            // A record a few ahead, when it lies apart in this same map: asked for now, so
            // that the waits for memory of scattered records overlap.
            if map.is_some() {
                if let Some(&j) = order.get(end_k - 1 + crate::entries::PREFETCH_AHEAD) {
                    let l = items[j].1;
                    if loc_segment(l) == seg_no {
                        crate::io::prefetch(filled, loc_offset(l) as usize);
                    }
                }
            }
            for &i in &order[k..end_k] {
                let (position, l) = items[i];
                let off = loc_offset(l);
                let rel = ((off - base) as usize).min(filled.len());
                // Through a map, hand the decoder about one record's bytes, never the rest of
                // the file (past the committed end the writer may be at work).
                let head_end = match map {
                    Some(_) => (rel + first_read(longest)).min(filled.len()),
                    None => filled.len(),
                };
                // A window that stopped short (see above) may not hold this record's header:
                // its length is read first.
                let record = match map.is_none() && rel + RECORD_HEADER_BYTES > filled.len() {
                    true => Err(Needed(record_len_at(seg, off, position)?)),
                    false => decode_at(seg, &filled[rel..head_end], off, position),
                };
                let (event, len) = match record {
                    Ok(e) => e,
                    Err(Needed(needed)) => {
                        let mut buf = Vec::new();
                        let whole = match filled.get(rel..rel + needed) {
                            Some(whole) => whole,
                            None => {
                                // Up to the padded length: the last record of a store may end
                                // at its unpadded length, and decoding needs only that.
                                buf.resize(needed, 0);
                                let n = read_up_to(&*seg.file, &mut buf, off)
                                    .map_err(|e| io_err(&seg.path, off, e))?;
                                &buf[..n]
                            }
                        };
                        match decode_at(seg, whole, off, position) {
                            Ok(r) => r,
                            Err(_) => Err(Corruption::new(
                                CorruptionLocation::LogFile {
                                    file: seg.path.clone(),
                                    offset: off,
                                },
                                Some(Position(position)),
                                "record shorter than its length field",
                            )
                            .into()),
                        }
                    }
                }?;
                longest = longest.max(len);
                if in_file_order {
                    decoded.push(event);
                } else {
                    slots[i] = Some(event);
                }
            }
            k = end_k;
        }
        if backward {
            decoded.reverse();
        }
        if in_file_order {
            Ok(decoded)
        } else {
            Ok(slots.into_iter().flatten().collect())
        }
    }
}

/// Threads taken from the process-wide [`READ_PARALLEL_THREADS_TOTAL_MAX`], given back on drop.
struct ReadThreads {
    count: usize,
}

/// Read threads running now, over every store of the process.
static READ_THREADS_RUNNING: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

impl ReadThreads {
    /// Up to `wanted` threads; `None` when fewer than two are free (then splitting is not
    /// worth it).
    fn reserve(wanted: usize) -> Option<ReadThreads> {
        use std::sync::atomic::Ordering;
        let mut count = 0;
        READ_THREADS_RUNNING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                count = wanted.min(READ_PARALLEL_THREADS_TOTAL_MAX.saturating_sub(running));
                (count >= 2).then_some(running + count)
            })
            .ok()?;
        Some(ReadThreads { count })
    }
}

impl Drop for ReadThreads {
    fn drop(&mut self) {
        READ_THREADS_RUNNING.fetch_sub(self.count, std::sync::atomic::Ordering::AcqRel);
    }
}

struct Needed(usize);

/// The length of the record at `off` in `seg`, from its header (read on its own).
fn record_len_at(seg: &Segment, off: u64, position: u64) -> Result<usize, ReadError> {
    let mut header = [0u8; RECORD_HEADER_BYTES];
    let n = read_up_to(&*seg.file, &mut header, off).map_err(|e| io_err(&seg.path, off, e))?;
    // The header's parts must add up to its length before the length is used.
    let reason = match decode_record(seg.header.salt, &header[..n]) {
        Ok(r) => return Ok(r.padded_len),
        Err(DecodeError::Short { needed: Some(len) }) => return Ok(len),
        Err(DecodeError::Short { needed: None }) => "record is cut short".to_owned(),
        Err(DecodeError::Invalid(reason)) => reason.to_owned(),
    };
    Err(Corruption::new(
        CorruptionLocation::LogFile {
            file: seg.path.clone(),
            offset: off,
        },
        Some(Position(position)),
        reason,
    )
    .into())
}

/// Bytes to read from a record's start when the longest record read so far took `longest`
/// (0: none yet).
fn first_read(longest: usize) -> usize {
    match longest {
        0 => FIRST_READ_BYTES,
        l => l.next_multiple_of(64).min(FIRST_READ_MAX_BYTES),
    }
}

/// The event of the record at the start of `bytes` and the bytes it occupies.
fn decode_at(
    seg: &Segment,
    bytes: &[u8],
    offset: u64,
    position: u64,
) -> Result<Result<(RecordedEvent, usize), ReadError>, Needed> {
    let corruption = |reason: String| -> ReadError {
        Corruption::new(
            CorruptionLocation::LogFile {
                file: seg.path.clone(),
                offset,
            },
            Some(Position(position)),
            reason,
        )
        .into()
    };
    match decode_record(seg.header.salt, bytes) {
        Ok(r) if r.position == position => {
            Ok(r.to_event().map(|e| (e, r.padded_len)).map_err(corruption))
        }
        Ok(r) => Ok(Err(corruption(format!(
            "record holds position {} where the index expects {position}",
            r.position
        )))),
        Err(DecodeError::Short { needed: Some(n) }) if n > bytes.len() => Err(Needed(n)),
        Err(DecodeError::Short { .. }) => Ok(Err(corruption("record is cut short".to_owned()))),
        Err(DecodeError::Invalid(reason)) => Ok(Err(corruption(reason))),
    }
}

/// Reads as many bytes as are there, up to `buf.len()`.
pub(crate) fn read_up_to(
    file: &dyn LogFile,
    buf: &mut [u8],
    offset: u64,
) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

fn io_err(path: &Path, offset: u64, e: std::io::Error) -> ReadError {
    ReadError::Storage(BackendError::with_source(
        format!("reading {} at {offset}: {e}", path.display()),
        e,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_threads_are_bounded_over_all_reads() {
        // Other tests may be reading: count from what is running now.
        let mut held = Vec::new();
        while let Some(r) = ReadThreads::reserve(READ_PARALLEL_MAX_THREADS) {
            assert!(r.count >= 2 && r.count <= READ_PARALLEL_MAX_THREADS);
            held.push(r);
        }
        let total: usize = held.iter().map(|r| r.count).sum();
        assert!(total <= READ_PARALLEL_THREADS_TOTAL_MAX);
        assert!(
            READ_THREADS_RUNNING.load(std::sync::atomic::Ordering::Acquire)
                > READ_PARALLEL_THREADS_TOTAL_MAX - 2
        );
        drop(held);
        // Given back: a read can be split again.
        assert!(ReadThreads::reserve(2).is_some());
    }
}
