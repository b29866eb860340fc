//! Opening a data directory: segment discovery, index load, log scan, torn-tail repair, and the
//! check that the log still holds everything the index file records as acknowledged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_core::limits::{
    EVENT_DATA_MAX_BYTES, EVENT_METADATA_MAX_BYTES, EVENT_TYPE_MAX_BYTES, STREAM_ID_MAX_BYTES,
};
use strata_core::StreamId;

use crate::archived::{stub_file_name, ArchiveReads, ArchivedFile, OpenStub};
use crate::error::{io_ctx, DataLoss, LossCause, OpenError};
use crate::format::{
    decode_record, decode_removed_runs, padded_len, peek_len, record_crc, u32_at, u64_at,
    DecodeError, DecodedRecord, RemovedRuns, SegmentHeader, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::index::{
    loc, loc_offset, loc_segment, Claim, Index, IndexFile, LogEnd, NewEntry, ParsedSegmentIndex,
    SealedSegment, SegmentIndexFile,
};
use crate::io::{FileBytes, Vfs};
use crate::segment::{parse_segment_file_name, read_up_to, segment_file_name, Segment, Segments};

/// Sub-directory of the data directory holding segments.
pub(crate) const SEGMENTS_DIR: &str = "segments";
/// The persisted index file.
pub(crate) const INDEX_FILE: &str = "index.bin";
/// Bytes read at a time while scanning.
const SCAN_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// A last segment with a bad header is taken for one whose creation did not complete only when
/// it is all zeros and at most this long (creation writes a 64-byte header and nothing else).
const UNFINISHED_SEGMENT_MAX_BYTES: u64 = 1 << 20;

/// What opening found.
pub(crate) struct Recovered {
    pub index: Index,
    pub segments: Segments,
    /// Where the next record goes in the last segment.
    pub tail_len: u64,
    /// Whether the index was loaded from its file (rather than rebuilt from the log).
    pub index_loaded: bool,
    /// Sealed segments whose events came from their own index files.
    pub segment_indexes_loaded: u64,
    /// Sealed segments whose index files are to be written.
    pub missing_indexes: Vec<SealedSegment>,
    /// Events re-read from the log on open.
    pub events_scanned: u64,
    /// A torn tail that was cut: (file, from length, to length).
    pub truncated: Option<(PathBuf, u64, u64)>,
    /// Acknowledged events found missing, and opened without as the configuration allowed.
    pub data_loss: Option<DataLoss>,
}

pub(crate) fn now_us() -> i64 {
    strata_core::timestamp_to_micros(chrono_now())
}

fn chrono_now() -> strata_core::Timestamp {
    strata_core::timestamp_from_micros(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64),
    )
}

/// Creates segment `no` starting at `first_position`: header written and fsynced, directory
/// fsynced.
pub(crate) fn create_segment(
    vfs: &dyn Vfs,
    seg_dir: &Path,
    no: u64,
    first_position: u64,
) -> Result<Arc<Segment>, std::io::Error> {
    let path = seg_dir.join(segment_file_name(no));
    let header = SegmentHeader {
        salt: rand::random(),
        segment_no: no,
        first_position,
        created_at_us: now_us(),
        batch_marks: true,
        scavenged: false,
        runs_at: 0,
    };
    let file = vfs.open(&path, true)?;
    file.set_len(0)?;
    file.write_all_at(&header.encode(), 0)?;
    file.sync_data()?;
    vfs.sync_dir(seg_dir)?;
    Ok(Arc::new(Segment::new(path, file, header)))
}

/// What `segments/` holds: segment files, their index files, and index files' temp files,
/// by segment number, sorted.
pub(crate) struct SegmentDir {
    /// Numbered from 0 without gaps (checked).
    pub segments: Vec<u64>,
    /// Segments that have an index file.
    pub indexes: Vec<u64>,
    /// Segments that live only in an archive: a stub and no segment file (among `segments`).
    pub archived: std::collections::BTreeSet<u64>,
    /// Stubs beside their segment file, left by an eviction a crash cut short: the file is
    /// read, and the stub removed once the open has checked the log.
    pub stale_stubs: Vec<PathBuf>,
    /// Temp files of index files and scavenged segments being written: left over by a crash
    /// when found on open.
    pub temps: Vec<PathBuf>,
}

/// Lists `segments/` once; a gap in the segments' numbering is corruption.
pub(crate) fn list_segment_dir(seg_dir: &Path) -> Result<SegmentDir, OpenError> {
    let mut dir = SegmentDir {
        segments: Vec::new(),
        indexes: Vec::new(),
        archived: std::collections::BTreeSet::new(),
        stale_stubs: Vec::new(),
        temps: Vec::new(),
    };
    let rd =
        std::fs::read_dir(seg_dir).map_err(io_ctx(format!("listing {}", seg_dir.display())))?;
    for entry in rd {
        let entry = entry.map_err(io_ctx(format!("listing {}", seg_dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(no) = parse_segment_file_name(name) {
            dir.segments.push(no);
            continue;
        }
        let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
        let Some(no) = parse_segment_file_name(&format!("{stem}.seg")) else {
            continue;
        };
        match ext {
            "idx" => dir.indexes.push(no),
            "archived" => {
                dir.archived.insert(no);
            }
            // An index file's (`NNN.tmp`), or a scavenged segment's (`NNN.stmp`).
            "tmp" | "stmp" => dir.temps.push(entry.path()),
            _ => {}
        }
    }
    dir.segments.sort_unstable();
    // A stub beside its segment file is one whose eviction a crash cut short: the file
    // (still whole) is read, and the open removes the stub once the log is checked.
    let stubs = std::mem::take(&mut dir.archived);
    let (stale, archived): (Vec<u64>, Vec<u64>) = stubs
        .into_iter()
        .partition(|no| dir.segments.binary_search(no).is_ok());
    dir.archived = archived.into_iter().collect();
    dir.stale_stubs = stale
        .into_iter()
        .map(|no| seg_dir.join(crate::archived::stub_file_name(no)))
        .collect();
    dir.segments.extend(dir.archived.iter().copied());
    dir.segments.sort_unstable();
    dir.indexes.sort_unstable();
    for (i, &no) in dir.segments.iter().enumerate() {
        if no != i as u64 {
            return Err(OpenError::Corruption {
                file: seg_dir.join(segment_file_name(i as u64)),
                offset: 0,
                reason: "segment file is missing (segments must be numbered from 0 without gaps)"
                    .to_owned(),
            });
        }
    }
    Ok(dir)
}

/// How a scan of one segment ended.
pub(crate) enum ScanEnd {
    /// The file ends exactly after the last record.
    Clean,
    /// The bytes at `offset` are not a valid record.
    Invalid { offset: u64, reason: String },
}

/// Walks the records of `seg` from `start` to the end of the file, calling `visit` for each
/// valid record with its offset.
pub(crate) fn scan_segment(
    seg: &Segment,
    start: u64,
    mut visit: impl FnMut(u64, &DecodedRecord<'_>) -> Result<(), OpenError>,
) -> Result<ScanEnd, OpenError> {
    // A scavenged segment's records end where its removed runs start.
    let file_len = match seg.header.scavenged {
        true => seg.header.runs_at,
        false => seg
            .file
            .size()
            .map_err(io_ctx(format!("reading {}", seg.path.display())))?,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = start;
    let mut buf_len = 0usize;
    let mut off = start;
    loop {
        if off >= file_len {
            return Ok(ScanEnd::Clean);
        }
        let avail: &[u8] = if off >= buf_start && ((off - buf_start) as usize) < buf_len {
            &buf[(off - buf_start) as usize..buf_len]
        } else {
            &[]
        };
        match decode_record(seg.header.salt, avail) {
            Ok(r) => {
                visit(off, &r)?;
                off += r.padded_len as u64;
            }
            Err(DecodeError::Short { needed }) => {
                let remaining = file_len - off;
                let mut want = needed.unwrap_or(RECORD_HEADER_BYTES);
                // The last record may end without its padding (a write torn after its bytes):
                // its unpadded bytes suffice, also when it starts near the end of a chunk.
                if want as u64 > remaining
                    && peek_len(avail).is_some_and(|len| len as u64 <= remaining)
                {
                    want = remaining as usize;
                }
                if want as u64 > remaining {
                    return Ok(ScanEnd::Invalid {
                        offset: off,
                        reason: "record cut short by the end of the file".to_owned(),
                    });
                }
                // Refill the buffer from `off`, large enough for the record.
                let size = want.max(SCAN_CHUNK_BYTES).min(remaining as usize);
                if buf.len() < size {
                    buf.resize(size, 0);
                }
                buf_start = off;
                buf_len = read_up_to(&*seg.file, &mut buf[..size], off)
                    .map_err(io_ctx(format!("reading {}", seg.path.display())))?;
                if buf_len < want {
                    return Ok(ScanEnd::Invalid {
                        offset: off,
                        reason: "record cut short by the end of the file".to_owned(),
                    });
                }
            }
            Err(DecodeError::Invalid(reason)) => {
                return Ok(ScanEnd::Invalid {
                    offset: off,
                    reason,
                })
            }
        }
    }
}

/// The removed runs of scavenged segment `seg`, read and checked (see
/// [`crate::format::decode_removed_runs`]).
pub(crate) fn read_removed_runs(seg: &Segment) -> Result<RemovedRuns, String> {
    let size = seg
        .file
        .size()
        .map_err(|e| format!("reading {}: {e}", seg.path.display()))?;
    let len = size
        .checked_sub(seg.header.runs_at)
        .ok_or("the segment ends before its removed runs")?;
    let mut b = vec![0u8; len as usize];
    seg.file
        .read_exact_at(&mut b, seg.header.runs_at)
        .map_err(|e| format!("reading {}: {e}", seg.path.display()))?;
    decode_removed_runs(&b, seg.header.salt)
}

/// The end of the last non-zero byte of `seg` at or after `from` (`from` when there is none):
/// every byte from there to the end of the file is zero.
fn zeros_from(seg: &Segment, from: u64) -> Result<u64, OpenError> {
    let ctx = || io_ctx(format!("reading {}", seg.path.display()));
    let file_len = seg.file.size().map_err(ctx())?;
    let mut buf = vec![0u8; SCAN_CHUNK_BYTES.min(file_len.saturating_sub(from) as usize)];
    let mut off = from;
    let mut zeros_from = from;
    while off < file_len {
        let want = ((file_len - off) as usize).min(buf.len());
        let n = read_up_to(&*seg.file, &mut buf[..want], off).map_err(ctx())?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            zeros_from = off + i as u64 + 1;
        }
        off += n as u64;
    }
    Ok(zeros_from)
}

/// Whether every byte of `seg` from `from` to the end of the file is zero: the tail the writer
/// preallocates ahead of its last record (see `SEGMENT_PREALLOCATE_BYTES`), not a torn write.
pub(crate) fn zeros_to_end(seg: &Segment, from: u64) -> Result<bool, OpenError> {
    let ctx = || io_ctx(format!("reading {}", seg.path.display()));
    let file_len = seg.file.size().map_err(ctx())?;
    let mut buf = vec![0u8; SCAN_CHUNK_BYTES.min(file_len.saturating_sub(from) as usize)];
    let mut off = from;
    while off < file_len {
        let want = ((file_len - off) as usize).min(buf.len());
        let n = read_up_to(&*seg.file, &mut buf[..want], off).map_err(ctx())?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}

/// Whether the damage at `from` in `seg` is corruption: the offset of a valid record after it
/// when it is, `None` when it is a torn write. Valid records after damage prove it was once
/// durable, except in a segment with batch marks when none of them starts a batch: then they
/// all belong to the torn last batch, which was never acknowledged (its fdatasync did not
/// finish). One read of the rest of the file serves both questions.
pub(crate) fn corruption_after(seg: &Segment, from: u64) -> Result<Option<u64>, OpenError> {
    let file_len = seg
        .file
        .size()
        .map_err(io_ctx(format!("reading {}", seg.path.display())))?;
    if file_len <= from {
        return Ok(None);
    }
    let mut rest = vec![0u8; (file_len - from) as usize];
    let n = read_up_to(&*seg.file, &mut rest, from)
        .map_err(io_ctx(format!("reading {}", seg.path.display())))?;
    rest.truncate(n);
    let align = crate::format::RECORD_ALIGN_BYTES;
    let first = (from as usize).div_ceil(align) * align - from as usize;
    let mut rel = if first == 0 { align } else { first };
    let mut first_valid = None;
    while rel + RECORD_HEADER_BYTES <= rest.len() {
        match decode_record(seg.header.salt, &rest[rel..]) {
            Ok(r) => {
                let at = from + rel as u64;
                first_valid.get_or_insert(at);
                if !seg.header.batch_marks || r.starts_batch() {
                    return Ok(first_valid);
                }
                rel += r.padded_len;
            }
            Err(_) => rel += align,
        }
    }
    Ok(None)
}

/// How a scanned segment ends, after its last whole append.
pub(crate) enum SegmentEnd {
    /// Right after it.
    Clean,
    /// The writer's preallocated zeros follow it: cut them quietly.
    Preallocated,
    /// A torn last write follows it (never acknowledged): cut it. The reason says what was
    /// found, and where when that is past the cut.
    Torn(String),
}

/// Classifies how `seg` ends, from its scan: `end`, whether an append was still open (records
/// without their commit) and where its last whole append ends. Damage in a sealed segment, or
/// followed by a record that proves it was once durable, is corruption. Opening and
/// `strata verify` both decide with this, so they agree.
pub(crate) fn classify_end(
    seg: &Segment,
    end: ScanEnd,
    open_append: bool,
    committed_end: u64,
    sealed: bool,
) -> Result<SegmentEnd, OpenError> {
    let (bad_offset, reason, damaged) = match end {
        ScanEnd::Clean if !open_append => return Ok(SegmentEnd::Clean),
        // The file ends inside an append: its last records (the commit among them) never
        // reached the disk. Nothing is damaged.
        ScanEnd::Clean => (
            committed_end,
            "an append without its commit record".to_owned(),
            false,
        ),
        ScanEnd::Invalid { offset, reason } => (offset, reason, true),
    };
    if !sealed && damaged && bad_offset == committed_end && zeros_to_end(seg, committed_end)? {
        return Ok(SegmentEnd::Preallocated);
    }
    let corruption = |reason: String| OpenError::Corruption {
        file: seg.path.clone(),
        offset: bad_offset,
        reason,
    };
    if sealed {
        return Err(corruption(reason));
    }
    if damaged {
        if let Some(valid) = corruption_after(seg, bad_offset)? {
            return Err(corruption(format!(
                "{reason}; a valid record follows at offset {valid}, so this is not a torn write"
            )));
        }
    }
    Ok(SegmentEnd::Torn(if bad_offset == committed_end {
        reason
    } else {
        format!("{reason} (at offset {bad_offset})")
    }))
}

/// The last segment file, whose header never became durable: a crash while it was being
/// created, before anything was acknowledged in it (unless the index file says otherwise).
pub(crate) struct Unfinished {
    pub path: PathBuf,
    pub no: u64,
    pub len: u64,
}

/// Opens every segment and checks its header. A last segment whose header is short or zeros is
/// set aside as [`Unfinished`]; any other bad header is corruption.
pub(crate) fn open_segments(
    vfs: &dyn Vfs,
    seg_dir: &Path,
    listing: &SegmentDir,
    archive: Option<&Arc<ArchiveReads>>,
) -> Result<(Vec<Arc<Segment>>, Option<Unfinished>), OpenError> {
    let nos = &listing.segments;
    let mut opened = Vec::with_capacity(nos.len());
    for (i, &no) in nos.iter().enumerate() {
        let path = seg_dir.join(segment_file_name(no));
        if listing.archived.contains(&no) {
            opened.push(Arc::new(open_archived(seg_dir, no, path, archive)?));
            continue;
        }
        let ctx = |what: &str| io_ctx(format!("{what} {}", path.display()));
        let file = vfs.open(&path, false).map_err(ctx("opening"))?;
        let len = file.size().map_err(ctx("reading"))?;
        let mut hb = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        let n = read_up_to(&*file, &mut hb, 0).map_err(ctx("reading"))?;
        hb.truncate(n);
        let reason = match SegmentHeader::decode(&hb) {
            Ok(header) if header.segment_no == no => {
                opened.push(Arc::new(Segment::new(path, file, header)));
                continue;
            }
            Ok(header) => format!(
                "header says segment {} but the file name says {no}",
                header.segment_no
            ),
            Err(reason) => reason,
        };
        let is_last = i + 1 == nos.len();
        let unfinished = len < SEGMENT_HEADER_BYTES
            || (len <= UNFINISHED_SEGMENT_MAX_BYTES && {
                let mut b = vec![0u8; len as usize];
                let n = read_up_to(&*file, &mut b, 0).map_err(ctx("reading"))?;
                b[..n].iter().all(|&x| x == 0)
            });
        if !(is_last && unfinished) {
            return Err(OpenError::Corruption {
                file: path,
                offset: 0,
                reason,
            });
        }
        return Ok((opened, Some(Unfinished { path, no, len })));
    }
    Ok((opened, None))
}

/// Opens segment `no`, which lives only in an archive, from its stub: reads go to `archive`.
fn open_archived(
    seg_dir: &Path,
    no: u64,
    path: PathBuf,
    archive: Option<&Arc<ArchiveReads>>,
) -> Result<Segment, OpenError> {
    let stub = OpenStub::read(seg_dir, no).map_err(|(file, reason)| OpenError::Corruption {
        file,
        offset: 0,
        reason: format!("the stub of an archived segment is unreadable: {reason}"),
    })?;
    let Some(reads) = archive else {
        return Err(OpenError::Archived {
            segment: no,
            archive: stub.archive,
        });
    };
    let corrupt = |reason: String| OpenError::Corruption {
        file: seg_dir.join(stub_file_name(no)),
        offset: 0,
        reason,
    };
    let header = match SegmentHeader::decode(&stub.header) {
        Ok(h) if h.segment_no == no => h,
        Ok(h) => {
            return Err(corrupt(format!(
                "its header says segment {} but the file name says {no}",
                h.segment_no
            )))
        }
        Err(reason) => return Err(corrupt(reason)),
    };
    Ok(Segment::archived(
        path,
        Arc::new(ArchivedFile::new(stub, reads.clone())),
        header,
    ))
}

/// Reads the index file, when there is one that checks out. One that cannot be read is taken
/// as absent (the index is rebuilt), with a warning: the log then cannot be checked against
/// it.
pub(crate) fn read_index_file(dir: &Path) -> Option<IndexFile> {
    let path = dir.join(INDEX_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot read the index file; rebuilding it, without checking that the log holds the events it records");
            return None;
        }
    };
    match IndexFile::check(bytes) {
        Ok(f) => Some(f),
        Err(reason) => {
            tracing::warn!(%reason, "index file unreadable; rebuilding it");
            None
        }
    }
}

/// The index file of sealed segment `no`, beside it.
pub(crate) fn segment_index_path(seg_dir: &Path, no: u64) -> PathBuf {
    seg_dir.join(segment_file_name(no)).with_extension("idx")
}

/// Reads the index file of segment `no`, when there is one that checks out; one that does
/// not is taken as absent, with a warning (its segment is scanned instead).
///
/// With `map`, the file is mapped rather than read (no copy; its pages are the kernel's page
/// cache), falling back to a read when it cannot be. Otherwise it is read into `spare`'s
/// memory (given back with [`SegmentIndexFile::into_spare`]): an open reads one file after
/// another into the same buffers, rather than asking the allocator (and the kernel, which
/// zeroes them) for fresh pages for each.
pub(crate) fn read_segment_index(
    seg_dir: &Path,
    no: u64,
    spare: &mut Vec<u8>,
    map: bool,
) -> Option<SegmentIndexFile> {
    let path = segment_index_path(seg_dir, no);
    let read = std::fs::File::open(&path).and_then(|mut f| {
        if let Some(Ok(m)) = map.then(|| crate::io::map_index_file(&f)) {
            return Ok(FileBytes::Map(m));
        }
        use std::io::Read;
        let mut bytes = std::mem::take(spare);
        bytes.clear();
        bytes.reserve(f.metadata()?.len() as usize);
        f.read_to_end(&mut bytes)?;
        Ok(FileBytes::Read(bytes))
    });
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot read a segment's index file; scanning the segment instead");
            return None;
        }
    };
    match SegmentIndexFile::check(bytes, path.clone()) {
        Ok(f) if f.seg.segment_no == no => Some(f),
        Ok(_) => {
            tracing::warn!(file = %path.display(), "a segment's index file names another segment; scanning the segment instead");
            None
        }
        Err(reason) => {
            tracing::warn!(file = %path.display(), %reason, "a segment's index file is unreadable; scanning the segment instead");
            None
        }
    }
}

/// A segment index file read, and checked whole or refused with the reason.
type Checked = Result<ParsedSegmentIndex, (String, SegmentIndexFile)>;

/// Whether a sealed segment's index file describes it, so that its events can be taken from
/// the file: the segment has the salt and first position the file records, ends where its
/// last recorded record ends (which is whole and holds its position), and the file carries on
/// from where the index built so far ends (`start`, in this segment or at its start).
fn segment_index_matches(
    file: &SegmentIndexFile,
    seg: &Segment,
    index: &Index,
    start: LogEnd,
) -> Result<Result<(), String>, OpenError> {
    let f = file.seg;
    let k = seg.header.segment_no;
    if f.salt != seg.header.salt || f.first != seg.header.first_position {
        return Ok(Err(format!(
            "segment {k} is not the one it records (another salt or first position)"
        )));
    }
    let last = file.last_event_position();
    if last.is_none() && !file.is_scavenged() {
        return Ok(Err("it records no events".to_owned()));
    }
    // The index built so far ends at `start`, in this segment: at its start (then the file's
    // first event comes next) or, when the whole index file ended inside it, at one of its
    // records (or at its end). A scavenged segment's first position may have no event.
    let next = index.next_position();
    let continues = if next == f.end_position {
        start.offset == f.end_offset
    } else if file.is_scavenged() {
        next == f.first && start.offset == SEGMENT_HEADER_BYTES
    } else {
        next >= f.first && file.loc(next).map(loc_offset) == Some(start.offset)
    };
    if start.segment_no != k || !continues {
        return Ok(Err(format!(
            "it does not carry on where the index ends (position {next})"
        )));
    }
    if seg.header.scavenged != file.is_scavenged() {
        return Ok(Err(format!(
            "segment {k} is scavenged and the file is not, or the other way round"
        )));
    }
    // A scavenged segment's records end where its removed runs start.
    let file_len = match seg.header.scavenged {
        true => seg.header.runs_at,
        false => seg
            .file
            .size()
            .map_err(io_ctx(format!("reading {}", seg.path.display())))?,
    };
    // A scavenged segment all of whose events were removed holds no record.
    let Some(last) = last else {
        return Ok(
            match file_len == f.end_offset && f.end_offset == SEGMENT_HEADER_BYTES {
                true => Ok(()),
                false => Err(format!(
                    "segment {k}'s records end at byte {file_len}, the file records it empty"
                )),
            },
        );
    };
    let off = file.loc(last).map_or(0, loc_offset);
    // An archived segment is the archive's copy, checked whole (size and SHA-256) against
    // the file this index file was checked with before it was given back: its length is
    // checked below, and its last record is not read from the archive on every open.
    let last_record = match seg.is_archived() {
        true => RecordState::Whole {
            len: (f.end_offset - off) as usize,
        },
        false => record_at(seg, off, last)?,
    };
    match last_record {
        RecordState::Whole { len } if off + padded_len(len) as u64 == f.end_offset => {}
        RecordState::Whole { .. } => {
            return Ok(Err(format!(
                "its last record (position {last} at byte {off}) does not end at byte {}",
                f.end_offset
            )))
        }
        RecordState::Truncated { .. } | RecordState::Bad { .. } => {
            return Ok(Err(format!(
                "its last record (position {last} at byte {off}) is not whole in the segment"
            )))
        }
    }
    if file_len != f.end_offset {
        return Ok(Err(format!(
            "segment {k} is {file_len} bytes long, the file records {}",
            f.end_offset
        )));
    }
    Ok(Ok(()))
}

/// What a record the index file recorded looks like in the log now.
enum RecordState {
    /// Whole, at the position recorded; its length without padding.
    Whole { len: usize },
    /// The file ends before the record does.
    Truncated { file_len: u64 },
    /// The record fails its checks.
    Bad { reason: String, len: Option<usize> },
}

/// Reads the record at `off` in `seg` and checks it holds `position`.
fn record_at(seg: &Segment, off: u64, position: u64) -> Result<RecordState, OpenError> {
    let ctx = || io_ctx(format!("reading {}", seg.path.display()));
    let file_len = seg.file.size().map_err(ctx())?;
    if off + RECORD_HEADER_BYTES as u64 > file_len {
        return Ok(RecordState::Truncated { file_len });
    }
    let mut b = vec![0u8; RECORD_HEADER_BYTES];
    let n = read_up_to(&*seg.file, &mut b, off).map_err(ctx())?;
    b.truncate(n);
    let len = match decode_record(seg.header.salt, &b) {
        // A record of exactly its header.
        Ok(_) => RECORD_HEADER_BYTES,
        Err(DecodeError::Short { .. }) => match peek_len(&b) {
            Some(len) => len,
            None => return Ok(RecordState::Truncated { file_len }),
        },
        Err(DecodeError::Invalid(reason)) => {
            return Ok(RecordState::Bad {
                reason,
                len: peek_len(&b),
            })
        }
    };
    if off + len as u64 > file_len {
        return Ok(RecordState::Truncated { file_len });
    }
    b.resize(len, 0);
    let n = read_up_to(&*seg.file, &mut b, off).map_err(ctx())?;
    b.truncate(n);
    Ok(match decode_record(seg.header.salt, &b) {
        Ok(r) if r.position == position => RecordState::Whole { len },
        Ok(r) => RecordState::Bad {
            reason: format!(
                "it holds position {} where {position} was recorded",
                r.position
            ),
            len: Some(len),
        },
        Err(DecodeError::Short { .. }) => RecordState::Truncated { file_len },
        Err(DecodeError::Invalid(reason)) => RecordState::Bad {
            reason,
            len: Some(len),
        },
    })
}

/// Whether the index file describes this log, so that the scan may start where it ends: the
/// segment it ends in is there with the salt it recorded; every segment from the one it starts
/// in up to that one starts at the position the index gives its first event; each sealed one
/// still holds its last indexed record whole, and ends there; and every record of the segment
/// it ends in, up to its end, is whole and where the index places it. `Ok(Err(reason))` when
/// it does not.
fn index_matches_log(
    index: &IndexFile,
    opened: &[Arc<Segment>],
) -> Result<Result<(), String>, OpenError> {
    let end = index.end;
    let s = end.segment_no;
    let Some(end_seg) = opened.get(s as usize) else {
        return Ok(Err(format!("it ends in segment {s}, which is missing")));
    };
    if end_seg.header.salt != end.salt {
        return Ok(Err(format!(
            "segment {s} is not the one it recorded (another salt)"
        )));
    }
    let n = index.events;
    if end.offset < SEGMENT_HEADER_BYTES || index.first_in_segment(s + 1) != n {
        return Ok(Err("its end is not where its events are".to_owned()));
    }
    // Its first segment: where its first event is, or where it ends when it holds none.
    let from = index.loc(index.first).map_or(s, loc_segment).min(s);
    // It never holds a scavenged segment's events (they are in that segment's index file):
    // one written before the segment was rewritten may still match its first records.
    if opened[from as usize..=s as usize]
        .iter()
        .any(|seg| seg.header.scavenged)
    {
        return Ok(Err("it covers a segment scavenged since".to_owned()));
    }
    for (k, seg) in opened[..=s as usize].iter().enumerate().skip(from as usize) {
        let k = k as u64;
        let first = index.first_in_segment(k);
        if seg.header.first_position != first {
            return Ok(Err(format!(
                "segment {k} starts at position {} where the index starts it at {first}",
                seg.header.first_position
            )));
        }
        if k == s {
            break;
        }
        // A sealed segment: its last record is whole and where the index places it.
        let last = index.first_in_segment(k + 1).checked_sub(1);
        let Some(last) = last.filter(|&p| p >= first) else {
            return Ok(Err(format!("it has no events in sealed segment {k}")));
        };
        let off = index.loc(last).map_or(0, loc_offset);
        match record_at(seg, off, last)? {
            RecordState::Whole { len } => {
                // Sealing cut the file right after it (or after its bytes, without padding).
                let file_len = seg
                    .file
                    .size()
                    .map_err(io_ctx(format!("reading {}", seg.path.display())))?;
                if file_len > off + padded_len(len) as u64 {
                    return Ok(Err(format!(
                        "sealed segment {k} has bytes after its last record (position {last})"
                    )));
                }
            }
            RecordState::Truncated { file_len } => {
                return Ok(Err(format!(
                    "sealed segment {k} ends at byte {file_len}, inside its last record (position {last} at byte {off})"
                )))
            }
            RecordState::Bad { reason, .. } => {
                return Ok(Err(format!(
                    "the last record of sealed segment {k} (position {last} at byte {off}): {reason}"
                )))
            }
        }
    }
    // The segment the index ends in: every record it covers, checked (at most one segment).
    covered_records_match(end_seg, index, end.offset)
}

/// The longest record this version writes: a bound on what a length field may ask to be read.
const RECORD_MAX_BYTES: usize = RECORD_HEADER_BYTES
    + STREAM_ID_MAX_BYTES
    + strata_core::METASTREAM_PREFIX.len()
    + EVENT_TYPE_MAX_BYTES
    + u8::MAX as usize
    + EVENT_METADATA_MAX_BYTES
    + EVENT_DATA_MAX_BYTES;

/// Whether the records of `seg` from its header to `end` are exactly the index's events in
/// that segment, packed one after the other, each at the offset the index gives, whole (its
/// length, and its CRC, which covers every other byte of it) and holding its position. The
/// structure of each record was checked when it was written and is covered by the CRC, so it
/// is not decoded again: this reads the range once and costs about a CRC per byte.
fn covered_records_match(
    seg: &Segment,
    index: &IndexFile,
    end: u64,
) -> Result<Result<(), String>, OpenError> {
    let s = seg.header.segment_no;
    let mut reader = ChunkReader::new(seg)?;
    let file_len = reader.file_len;
    let mut off = SEGMENT_HEADER_BYTES;
    for p in index.first_in_segment(s)..index.events {
        if index.loc(p).map(loc_offset) != Some(off) {
            return Ok(Err(format!(
                "segment {s}: position {p} is not at byte {off}, where the record before it ends"
            )));
        }
        let cut_short = || {
            Ok(Err(format!(
                "segment {s} ends at byte {file_len}, inside the record of position {p} at byte {off}"
            )))
        };
        let Some(head) = reader.get(off, RECORD_HEADER_BYTES)? else {
            return cut_short();
        };
        let len = u32_at(head, 0) as usize;
        if !(RECORD_HEADER_BYTES..=RECORD_MAX_BYTES).contains(&len) {
            return Ok(Err(format!(
                "segment {s}: the record of position {p} at byte {off} has an impossible length"
            )));
        }
        let Some(b) = reader.get(off, len)? else {
            return cut_short();
        };
        if u64_at(b, 8) != p || record_crc(seg.header.salt, &b[8..len]) != u32_at(b, 4) {
            return Ok(Err(format!(
                "segment {s}: the record of position {p} at byte {off} fails its CRC"
            )));
        }
        off += padded_len(len) as u64;
    }
    if off != end {
        return Ok(Err(format!(
            "segment {s}: its records end at byte {off}, the index file at byte {end}"
        )));
    }
    Ok(Ok(()))
}

/// Reads a file front to back in large chunks, handing out byte ranges of it.
struct ChunkReader<'a> {
    seg: &'a Segment,
    buf: Vec<u8>,
    /// The file offset of `buf[0]`.
    start: u64,
    /// Bytes of `buf` read.
    len: usize,
    file_len: u64,
}

impl<'a> ChunkReader<'a> {
    fn new(seg: &'a Segment) -> Result<Self, OpenError> {
        let file_len = seg
            .file
            .size()
            .map_err(io_ctx(format!("reading {}", seg.path.display())))?;
        Ok(ChunkReader {
            seg,
            buf: Vec::new(),
            start: 0,
            len: 0,
            file_len,
        })
    }

    /// At least `need` bytes from `off` (all the chunk holds from there), or `None` when the
    /// file ends first.
    fn get(&mut self, off: u64, need: usize) -> Result<Option<&[u8]>, OpenError> {
        let held = off >= self.start && off + need as u64 <= self.start + self.len as u64;
        if !held {
            if off + need as u64 > self.file_len {
                return Ok(None);
            }
            let size = need
                .max(SCAN_CHUNK_BYTES)
                .min((self.file_len - off) as usize);
            if self.buf.len() < size {
                self.buf.resize(size, 0);
            }
            self.len = read_up_to(&*self.seg.file, &mut self.buf[..size], off)
                .map_err(io_ctx(format!("reading {}", self.seg.path.display())))?;
            self.start = off;
            if self.len < need {
                return Ok(None);
            }
        }
        Ok(Some(&self.buf[(off - self.start) as usize..self.len]))
    }
}

/// What the log lacks of what the index file records as acknowledged, given that it holds
/// `held` events in `opened` (and `unfinished` set aside): `None` when it holds them all. The
/// first lost event is the one at position `held`; the cause is found at the first record from
/// there on that is not in the log as recorded (a later one when the first lost events were
/// part of an append whose end is gone).
pub(crate) fn missing_acknowledged(
    claim: &dyn Claim,
    held: u64,
    opened: &[Arc<Segment>],
    unfinished: Option<&Unfinished>,
    seg_dir: &Path,
) -> Result<Option<DataLoss>, OpenError> {
    let claim_end = claim.end();
    let end_no = claim_end.segment_no;
    // A segment's index file knows where its own events lie: the loss is reported from the
    // first of them when the log ends before its segment.
    let from = held.max(claim.first());
    let gone = |no: u64| {
        if unfinished.is_some_and(|u| u.no == no) {
            LossCause::HeaderMissing
        } else {
            LossCause::SegmentMissing
        }
    };
    let first_held = (from..claim.end_position()).find_map(|p| claim.loc(p));
    let Some(first_loc) = first_held else {
        // Every recorded event is there. The last segment the index file knows of must be
        // too: whatever was appended to it after the file was written is gone with it.
        let must_exist = claim.last_segment();
        if let Some(seg) = opened.get(must_exist as usize) {
            if must_exist == end_no && seg.header.salt != claim_end.salt {
                tracing::warn!(
                    file = %seg.path.display(),
                    "the index file's last segment was replaced; its events up to the index file's end are all there"
                );
            }
            return Ok(None);
        }
        return Ok(Some(DataLoss {
            file: seg_dir.join(segment_file_name(must_exist)),
            offset: SEGMENT_HEADER_BYTES,
            from_position: held,
            events_at_least: 0,
            cause: gone(must_exist),
        }));
    };
    let mut cause = None;
    for p in from..claim.end_position() {
        // A position a scavenge removed holds no event to find.
        let Some(l) = claim.loc(p) else { continue };
        let (no, off) = (loc_segment(l), loc_offset(l));
        let Some(seg) = opened.get(no as usize) else {
            cause = Some(gone(no));
            break;
        };
        if no == end_no && seg.header.salt != claim_end.salt {
            cause = Some(LossCause::SegmentReplaced);
            break;
        }
        match record_at(seg, off, p)? {
            RecordState::Whole { .. } => continue,
            RecordState::Truncated { file_len } => {
                cause = Some(LossCause::Truncated { file_len });
            }
            RecordState::Bad { reason, len } => {
                let zeros = zeros_from(seg, off)?;
                let record_end =
                    off + len.unwrap_or(RECORD_HEADER_BYTES).max(RECORD_HEADER_BYTES) as u64;
                cause = Some(if zeros < record_end {
                    LossCause::Zeroed { from_offset: zeros }
                } else {
                    LossCause::Damaged {
                        offset: off,
                        reason,
                    }
                });
            }
        }
        break;
    }
    Ok(Some(DataLoss {
        file: seg_dir.join(segment_file_name(loc_segment(first_loc))),
        offset: loc_offset(first_loc),
        from_position: held,
        events_at_least: claim.end_position() - held,
        cause: cause.unwrap_or(LossCause::Damaged {
            offset: loc_offset(first_loc),
            reason: "the log does not hold the events the index file records here".to_owned(),
        }),
    }))
}

/// The loss the index files record, given that the log holds `held` events: `index.bin`'s
/// when it covers position `held` (its count reaches furthest), else that of the first of the
/// segment index files `segment_indexes` to find one (the first whose events are missing
/// knows where they were), else `index.bin`'s (its events start after the lost ones).
pub(crate) fn first_loss(
    claim: Option<&IndexFile>,
    segment_indexes: &[u64],
    held: u64,
    opened: &[Arc<Segment>],
    unfinished: Option<&Unfinished>,
    seg_dir: &Path,
) -> Result<Option<DataLoss>, OpenError> {
    if let Some(file) = claim.filter(|f| f.first <= held) {
        if let Some(loss) = missing_acknowledged(file, held, opened, unfinished, seg_dir)? {
            return Ok(Some(loss));
        }
    }
    for &k in segment_indexes {
        if let Some(file) = read_segment_index(seg_dir, k, &mut Vec::new(), false) {
            if let Some(loss) = missing_acknowledged(&file, held, opened, unfinished, seg_dir)? {
                return Ok(Some(loss));
            }
        }
    }
    match claim.filter(|f| f.first > held) {
        Some(file) => missing_acknowledged(file, held, opened, unfinished, seg_dir),
        None => Ok(None),
    }
}

/// Whether the index file carries on where the index built so far ends (`start`): at its
/// first position or, when it was written before the last segment index files, at a later
/// one of its positions (or its end).
fn carries_on(file: &IndexFile, index: &Index, start: LogEnd) -> bool {
    let next = index.next_position();
    if next < file.first {
        return false;
    }
    if next == file.events {
        // (The salt of the segment it ends in is checked against the log.)
        (file.end.segment_no, file.end.offset) == (start.segment_no, start.offset)
    } else {
        file.loc(next) == Some(loc(start.segment_no, start.offset))
    }
}

/// Writes the index file of scavenged segment `seg` again from its records and runs (the
/// next segment starting at `next_first`), and adds it to `index`, which ends at `start`
/// (the segment's start). A segment whose file cannot be written and loaded so is corrupt.
fn index_scavenged_again(
    vfs: &dyn Vfs,
    seg_dir: &Path,
    seg: &Segment,
    next_first: u64,
    index: &mut Index,
    start: LogEnd,
    map_index_files: bool,
) -> Result<(), OpenError> {
    let refused = |reason: String| OpenError::Corruption {
        file: seg.path.clone(),
        offset: 0,
        reason: format!("a scavenged segment whose index cannot be written again: {reason}"),
    };
    let file =
        crate::scavenge::index_scavenged_segment(vfs, seg_dir, seg, next_first).map_err(refused)?;
    let parsed = file.parsed().map_err(|(reason, _)| refused(reason))?;
    segment_index_matches(&parsed.file, seg, index, start)?.map_err(refused)?;
    parsed.push_into(index, map_index_files).1.map_err(refused)
}

/// Scans `seg` from byte `from`, adding its committed events to `index`; returns the end of
/// its last COMMIT record and the cut its end needs, if any. `sealed`: any segment but the
/// last, where an invalid record is corruption.
fn scan_into(
    seg: &Arc<Segment>,
    from: u64,
    sealed: bool,
    index: &mut Index,
    events_scanned: &mut u64,
) -> Result<(u64, Option<TailCut>), OpenError> {
    let no = seg.header.segment_no;
    if seg.header.scavenged {
        return Err(OpenError::Corruption {
            file: seg.path.clone(),
            offset: 0,
            reason: "a scavenged segment is read from its index file, not scanned".to_owned(),
        });
    }
    if from == SEGMENT_HEADER_BYTES && seg.header.first_position != index.next_position() {
        return Err(OpenError::Corruption {
            file: seg.path.clone(),
            offset: 0,
            reason: format!(
                "segment starts at position {} but the previous segment ends before {}",
                seg.header.first_position,
                index.next_position()
            ),
        });
    }
    let mut pending: Vec<(u64, u64, i64, StreamId, String, strata_core::Uuid, u64)> = Vec::new();
    let mut committed_end = from;
    let end = scan_segment(seg, from, |off, r| {
        let expected = index.next_position() + pending.len() as u64;
        if r.position != expected {
            return Err(OpenError::Corruption {
                file: seg.path.clone(),
                offset: off,
                reason: format!(
                    "record holds position {} where {expected} was expected",
                    r.position
                ),
            });
        }
        let stream = StreamId::new(r.stream_id).map_err(|e| OpenError::Corruption {
            file: seg.path.clone(),
            offset: off,
            reason: e.to_string(),
        })?;
        pending.push((
            r.position,
            off,
            r.recorded_at_us,
            stream,
            r.event_type.to_owned(),
            r.event_id,
            r.stream_version,
        ));
        if r.is_commit() {
            for (position, off, ts, stream, et, id, version) in pending.drain(..) {
                // Each record's version must carry its stream on: the index numbers a
                // stream's events by their order, so a record holding another version
                // (written by a faulty writer, or damaged with a valid CRC) would be read
                // under a version it does not hold.
                let e = NewEntry {
                    position,
                    loc: loc(no, off),
                    recorded_at_us: ts,
                    stream: &stream,
                    event_type: &et,
                    event_id: id,
                };
                index
                    .push_checked(e, version, false)
                    .map_err(|reason| OpenError::Corruption {
                        file: seg.path.clone(),
                        offset: off,
                        reason: format!("record at position {position}: {reason}"),
                    })?;
                *events_scanned += 1;
            }
            committed_end = off + r.padded_len as u64;
        }
        Ok(())
    })?;
    let file_len = seg
        .file
        .size()
        .map_err(io_ctx(format!("reading {}", seg.path.display())))?;
    let cut = match classify_end(seg, end, !pending.is_empty(), committed_end, sealed)? {
        SegmentEnd::Clean => None,
        SegmentEnd::Preallocated => Some(TailCut {
            seg: seg.clone(),
            from_len: file_len,
            to_len: committed_end,
            torn: None,
        }),
        SegmentEnd::Torn(reason) => Some(TailCut {
            seg: seg.clone(),
            from_len: file_len,
            to_len: committed_end,
            torn: Some(reason),
        }),
    };
    Ok((committed_end, cut))
}

/// The cut of the last segment back to its last commit, made once nothing refuses the open.
struct TailCut {
    seg: Arc<Segment>,
    /// The file's length before.
    from_len: u64,
    /// The end of the last COMMIT record.
    to_len: u64,
    /// Why, when it is a torn write (`None`: the writer's preallocated zeros, cut quietly).
    torn: Option<String>,
}

/// Opens and checks every segment, loads or rebuilds the index, checks that nothing the index
/// file records as acknowledged is missing, and repairs a torn tail. Nothing on disk changes
/// before the checks have passed (or `accept_data_loss` accepted what they found).
pub(crate) fn recover(
    dir: &Path,
    vfs: &dyn Vfs,
    use_index_file: bool,
    map_index_files: bool,
    accept_data_loss: bool,
    archive: Option<&Arc<ArchiveReads>>,
) -> Result<Recovered, OpenError> {
    let seg_dir = dir.join(SEGMENTS_DIR);
    crate::io::create_dir_all(vfs, &seg_dir)
        .map_err(io_ctx(format!("creating {}", seg_dir.display())))?;
    let listing = list_segment_dir(&seg_dir)?;
    let (opened, unfinished) = open_segments(vfs, &seg_dir, &listing, archive)?;
    let claim = read_index_file(dir);

    // The index: the sealed segments' own index files from the first segment on, while they
    // match the log; then the index file, when it carries on exactly where they end and
    // matches the log; then a scan of the rest of the log. Checking the index file against
    // the log reads the segment it ends in: on a second core, while the segment index files
    // are loaded.
    let mut index = Index::default();
    let mut start = LogEnd {
        segment_no: 0,
        offset: SEGMENT_HEADER_BYTES,
        salt: 0,
    };
    let mut index_loaded = false;
    let mut segment_indexes_loaded = 0u64;
    // Sealed segments whose events came from their own index files.
    let mut from_file = vec![false; opened.len()];
    let mut events_scanned = 0u64;
    let mut tail_cut = None;
    let claim_to_use = claim.as_ref().filter(|_| use_index_file);
    let claim_matches = std::thread::scope(|scope| {
        let check = claim_to_use.map(|file| {
            std::thread::Builder::new()
                .name("strata-open-check".to_owned())
                .spawn_scoped(scope, || index_matches_log(file, &opened))
        });
        // The sealed segments' index files, read and checked on a second thread, one file
        // ahead of the index taking them (two files' bytes at most), in segment order.
        let (ahead, files) = std::sync::mpsc::sync_channel::<(u64, Option<Checked>)>(0);
        // Buffers given back, for the next files to be read into.
        let (give_back, spares) = std::sync::mpsc::channel::<Vec<u8>>();
        let sealed = (opened.len() as u64).saturating_sub(1);
        let mut reader = None;
        if use_index_file {
            let seg_dir = &seg_dir;
            let spawned = std::thread::Builder::new()
                .name("strata-open-read".to_owned())
                .spawn_scoped(scope, move || {
                    for k in 0..sealed {
                        let mut spare = spares.try_recv().unwrap_or_default();
                        let checked = read_segment_index(seg_dir, k, &mut spare, map_index_files)
                            .map(SegmentIndexFile::parsed);
                        // Stops when the index takes no more files.
                        if ahead.send((k, checked)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(io_ctx(
                    "starting a thread to read the segment index files".to_owned(),
                ))?;
            reader = Some(spawned);
        } else {
            drop(ahead);
        }
        while let Some(seg) = opened
            .get(start.segment_no as usize)
            .filter(|seg| seg.header.segment_no + 1 < opened.len() as u64)
        {
            let k = seg.header.segment_no;
            let checked = match files.recv() {
                // Both sides go through the sealed segments in order from 0.
                Ok((no, checked)) if no == k => checked,
                Ok((no, _)) => {
                    tracing::warn!(expected = k, read = no, "the segment index files were read out of order; scanning the segment instead");
                    None
                }
                // The reading thread ended before its last file: it panicked. The panic goes
                // on here rather than every file left being taken as missing.
                Err(_) => {
                    if let Some(Err(panic)) = reader.take().map(|r| r.join()) {
                        std::panic::resume_unwind(panic);
                    }
                    None
                }
            };
            let (file, matched) = match checked {
                Some(Ok(parsed)) => {
                    match segment_index_matches(&parsed.file, seg, &index, start)? {
                        Ok(()) => {
                            let (file, pushed) = parsed.push_into(&mut index, map_index_files);
                            (Some(file), pushed)
                        }
                        Err(reason) => (Some(parsed.file), Err(reason)),
                    }
                }
                // A file that does not match says so first, as one that does not parse.
                Some(Err((reason, file))) => {
                    let matched = segment_index_matches(&file, seg, &index, start)?;
                    (Some(file), matched.and(Err(reason)))
                }
                None => (None, Err(String::new())),
            };
            match matched {
                Ok(()) => {
                    segment_indexes_loaded += 1;
                    from_file[k as usize] = true;
                }
                // A scavenged segment is read from its index file: written again from the
                // segment when it is missing or does not match.
                Err(reason) if seg.header.scavenged => {
                    tracing::warn!(file = %segment_index_path(&seg_dir, k).display(), %reason, "a scavenged segment's index file is missing or does not match it; writing it again from the segment");
                    let next_first = opened[k as usize + 1].header.first_position;
                    index_scavenged_again(
                        vfs,
                        &seg_dir,
                        seg,
                        next_first,
                        &mut index,
                        start,
                        map_index_files,
                    )?;
                    segment_indexes_loaded += 1;
                    from_file[k as usize] = true;
                }
                // The index file of an earlier version holds the rest: it is used from here.
                Err(_) if claim_to_use.is_some_and(|f| carries_on(f, &index, start)) => break,
                Err(reason) => {
                    if !reason.is_empty() {
                        tracing::warn!(file = %segment_index_path(&seg_dir, k).display(), %reason, "a segment's index file does not match its segment; scanning the segment instead (the file is written again)");
                    }
                    // Only this segment is scanned: the files of the next ones are still used.
                    let (_, cut) = scan_into(
                        seg,
                        SEGMENT_HEADER_BYTES,
                        true,
                        &mut index,
                        &mut events_scanned,
                    )?;
                    tail_cut = cut.or(tail_cut.take());
                }
            }
            if let Some(file) = file {
                if let Some(spare) = file.into_spare() {
                    let _ = give_back.send(spare);
                }
            }
            let next = &opened[k as usize + 1];
            start = LogEnd {
                segment_no: next.header.segment_no,
                offset: SEGMENT_HEADER_BYTES,
                salt: next.header.salt,
            };
        }
        // The reading thread stops at its next file.
        drop(files);
        match (check, claim_to_use) {
            (Some(Ok(h)), _) => h
                .join()
                .unwrap_or_else(|_| Ok(Err("checking it against the log panicked".to_owned()))),
            (_, Some(file)) => index_matches_log(file, &opened),
            (_, None) => Ok(Err(String::new())),
        }
    })?;
    if let Some(file) = claim_to_use {
        let next = index.next_position();
        let loaded = match claim_matches {
            Err(reason) => Err(reason),
            Ok(()) if !carries_on(file, &index, start) => Err(format!(
                "it does not carry on where the segment index files end (position {next})"
            )),
            Ok(()) => file.push_into(&mut index),
        };
        match loaded {
            Ok(()) => {
                start = file.end;
                index_loaded = true;
            }
            // Written before the last segments were sealed: their files took its place.
            Err(_) if file.events <= next => {}
            Err(reason) => {
                tracing::warn!(%reason, "the index file does not match the log or the segment index files; scanning from where they end")
            }
        }
    }
    let listed_indexes = &listing.indexes;

    // Scan from where the index ends to the end of the log.
    let mut tail_len = start.offset;
    let last_no = (opened.len() as u64).saturating_sub(1);
    for seg in opened.iter().skip(start.segment_no as usize) {
        let no = seg.header.segment_no;
        let from = if no == start.segment_no {
            start.offset
        } else {
            SEGMENT_HEADER_BYTES
        };
        // A scavenged segment after where the index file took over (one written before the
        // segment was rewritten, and no longer matching it) is read from its own index file.
        if seg.header.scavenged && no != last_no && from == SEGMENT_HEADER_BYTES {
            let start = LogEnd {
                segment_no: no,
                offset: SEGMENT_HEADER_BYTES,
                salt: seg.header.salt,
            };
            let next_first = opened[no as usize + 1].header.first_position;
            let mut loaded = false;
            if let Some(Ok(parsed)) =
                read_segment_index(&seg_dir, no, &mut Vec::new(), map_index_files)
                    .map(SegmentIndexFile::parsed)
            {
                if segment_index_matches(&parsed.file, seg, &index, start)?.is_ok() {
                    loaded = parsed.push_into(&mut index, map_index_files).1.is_ok();
                }
            }
            if !loaded {
                index_scavenged_again(
                    vfs,
                    &seg_dir,
                    seg,
                    next_first,
                    &mut index,
                    start,
                    map_index_files,
                )?;
            }
            if let Some(f) = from_file.get_mut(no as usize) {
                *f = true;
            }
            segment_indexes_loaded += 1;
            tail_len = seg.header.runs_at;
            continue;
        }
        let (committed_end, cut) =
            scan_into(seg, from, no != last_no, &mut index, &mut events_scanned)?;
        tail_cut = cut.or(tail_cut.take());
        tail_len = committed_end;
    }

    // Everything the index files record as acknowledged must be there: the whole index file,
    // and the index files of segments from the one the loading stopped at on (those before
    // were found whole).
    let held = index.next_position();
    // Those whose events were not taken from them (the others were found whole).
    let later_indexes: Vec<u64> = listed_indexes
        .iter()
        .copied()
        .filter(|&k| !from_file.get(k as usize).copied().unwrap_or(false))
        .collect();
    let data_loss = first_loss(
        claim.as_ref(),
        &later_indexes,
        held,
        &opened,
        unfinished.as_ref(),
        &seg_dir,
    )?;
    if let Some(loss) = &data_loss {
        if !accept_data_loss {
            return Err(OpenError::DataLoss(loss.clone()));
        }
        tracing::error!(%loss, "opening without these acknowledged events, as the configuration accepts (accept_data_loss)");
    }

    // Only now change the disk.
    // Segment index files a crash left half written (their temp files) are of no use.
    for path in &listing.temps {
        vfs.remove(path)
            .map_err(io_ctx(format!("removing {}", path.display())))?;
    }
    // A stub its segment file outlived goes: the file is read from now on, and a scavenge may
    // rewrite it, after which the stub would describe another file.
    for path in &listing.stale_stubs {
        vfs.remove(path)
            .map_err(io_ctx(format!("removing {}", path.display())))?;
    }
    if data_loss.is_some() {
        // Index files of segments from the last one held on record the lost events: the next
        // open must not report them again.
        let last_held = opened.len().saturating_sub(1) as u64;
        for &k in later_indexes.iter().filter(|&&k| k >= last_held) {
            let path = segment_index_path(&seg_dir, k);
            vfs.remove(&path)
                .map_err(io_ctx(format!("removing {}", path.display())))?;
        }
        vfs.sync_dir(&seg_dir)
            .map_err(io_ctx(format!("syncing {}", seg_dir.display())))?;
    }
    let mut truncated = None;
    if let Some(u) = &unfinished {
        if u.no > 0 {
            tracing::warn!(file = %u.path.display(), "removing a segment whose creation did not complete");
            truncated = Some((u.path.clone(), u.len, 0));
        }
        vfs.remove(&u.path)
            .map_err(io_ctx(format!("removing {}", u.path.display())))?;
        vfs.sync_dir(&seg_dir)
            .map_err(io_ctx(format!("syncing {}", seg_dir.display())))?;
    }
    if let Some(cut) = tail_cut {
        let seg = &cut.seg;
        seg.file
            .set_len(cut.to_len)
            .map_err(io_ctx(format!("truncating {}", seg.path.display())))?;
        seg.file
            .sync_data()
            .map_err(io_ctx(format!("syncing {}", seg.path.display())))?;
        if let Some(reason) = cut.torn {
            if data_loss.is_some() {
                tracing::warn!(file = %seg.path.display(), from = cut.from_len, to = cut.to_len, %reason, "cut the log back to its last whole append");
            } else {
                tracing::warn!(file = %seg.path.display(), from = cut.from_len, to = cut.to_len, %reason, "truncated a torn tail");
            }
            truncated = Some((seg.path.clone(), cut.from_len, cut.to_len));
        }
    }
    // Sealed segments not loaded from their index files (a store of an earlier version, a file
    // lost, not written before a crash or not matching, and every one after it): the writer
    // writes their files in the background, and their ids then leave memory.
    let mut missing_indexes = Vec::new();
    for pair in opened.windows(2) {
        let (seg, next) = (&pair[0], &pair[1]);
        let k = seg.header.segment_no;
        if !from_file[k as usize] {
            missing_indexes.push(SealedSegment {
                segment_no: k,
                salt: seg.header.salt,
                first: seg.header.first_position,
                end_position: next.header.first_position,
                end_offset: seg
                    .file
                    .size()
                    .map_err(io_ctx(format!("reading {}", seg.path.display())))?,
            });
        }
    }
    let segments = Segments::default();
    for seg in &opened {
        segments.push(seg.clone());
    }
    if opened.is_empty() {
        let seg =
            create_segment(vfs, &seg_dir, 0, 0).map_err(io_ctx("creating the first segment"))?;
        segments.push(seg);
        tail_len = SEGMENT_HEADER_BYTES;
    }
    // The index grew by doubling while it was built: up to half of each part is slack.
    index.shrink_to_fit();
    Ok(Recovered {
        index,
        segments,
        tail_len,
        index_loaded,
        segment_indexes_loaded,
        missing_indexes,
        events_scanned,
        truncated,
        data_loss,
    })
}
