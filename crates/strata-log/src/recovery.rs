//! Opening a data directory: segment discovery, index load, log scan, torn-tail repair.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_core::StreamId;

use crate::error::{io_ctx, OpenError};
use crate::format::{
    decode_record, DecodeError, DecodedRecord, SegmentHeader, SEGMENT_HEADER_BYTES,
};
use crate::index::{loc, Index, LogEnd, NewEntry};
use crate::io::Vfs;
use crate::segment::{parse_segment_file_name, read_up_to, segment_file_name, Segment, Segments};

/// Sub-directory of the data directory holding segments.
pub(crate) const SEGMENTS_DIR: &str = "segments";
/// The persisted index file.
pub(crate) const INDEX_FILE: &str = "index.bin";
/// Bytes read at a time while scanning.
const SCAN_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// What opening found.
pub(crate) struct Recovered {
    pub index: Index,
    pub segments: Segments,
    /// Where the next record goes in the last segment.
    pub tail_len: u64,
    /// Whether the index was loaded from its file (rather than rebuilt from the log).
    pub index_loaded: bool,
    /// Events re-read from the log on open.
    pub events_scanned: u64,
    /// A torn tail that was cut: (file, from length, to length).
    pub truncated: Option<(PathBuf, u64, u64)>,
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
    };
    let file = vfs.open(&path, true)?;
    file.set_len(0)?;
    file.write_all_at(&header.encode(), 0)?;
    file.sync_data()?;
    vfs.sync_dir(seg_dir)?;
    Ok(Arc::new(Segment::new(path, file, header)))
}

/// Lists segment numbers in a directory, sorted.
pub(crate) fn list_segments(seg_dir: &Path) -> Result<Vec<u64>, OpenError> {
    let mut nos = Vec::new();
    let rd =
        std::fs::read_dir(seg_dir).map_err(io_ctx(format!("listing {}", seg_dir.display())))?;
    for entry in rd {
        let entry = entry.map_err(io_ctx(format!("listing {}", seg_dir.display())))?;
        if let Some(no) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            nos.push(no);
        }
    }
    nos.sort_unstable();
    for (i, &no) in nos.iter().enumerate() {
        if no != i as u64 {
            return Err(OpenError::Corruption {
                file: seg_dir.join(segment_file_name(i as u64)),
                offset: 0,
                reason: "segment file is missing (segments must be numbered from 0 without gaps)"
                    .to_owned(),
            });
        }
    }
    Ok(nos)
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
    let file_len = seg
        .file
        .size()
        .map_err(io_ctx(format!("reading {}", seg.path.display())))?;
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
                let want = needed.unwrap_or(crate::format::RECORD_HEADER_BYTES);
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
    while rel + crate::format::RECORD_HEADER_BYTES <= rest.len() {
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

/// A segment file whose header did not check out.
struct BadSegment {
    path: PathBuf,
    reason: String,
    len: u64,
}

fn open_segment(
    vfs: &dyn Vfs,
    seg_dir: &Path,
    no: u64,
) -> Result<Result<Arc<Segment>, BadSegment>, OpenError> {
    let path = seg_dir.join(segment_file_name(no));
    let file = vfs
        .open(&path, false)
        .map_err(io_ctx(format!("opening {}", path.display())))?;
    let len = file
        .size()
        .map_err(io_ctx(format!("reading {}", path.display())))?;
    let mut hb = vec![0u8; SEGMENT_HEADER_BYTES as usize];
    let n =
        read_up_to(&*file, &mut hb, 0).map_err(io_ctx(format!("reading {}", path.display())))?;
    hb.truncate(n);
    match SegmentHeader::decode(&hb) {
        Ok(header) if header.segment_no == no => Ok(Ok(Arc::new(Segment::new(path, file, header)))),
        Ok(header) => Ok(Err(BadSegment {
            path,
            reason: format!(
                "header says segment {} but the file name says {no}",
                header.segment_no
            ),
            len,
        })),
        Err(reason) => Ok(Err(BadSegment { path, reason, len })),
    }
}

/// Opens and checks every segment, loads or rebuilds the index and repairs a torn tail.
pub(crate) fn recover(
    dir: &Path,
    vfs: &dyn Vfs,
    use_index_file: bool,
) -> Result<Recovered, OpenError> {
    let seg_dir = dir.join(SEGMENTS_DIR);
    crate::io::create_dir_all(vfs, &seg_dir)
        .map_err(io_ctx(format!("creating {}", seg_dir.display())))?;
    let mut nos = list_segments(&seg_dir)?;
    let segments = Segments::default();
    let mut truncated = None;

    // Open every segment. A last segment whose header never became durable (a crash while it
    // was being created) holds no acknowledged data: remove it.
    let mut opened = Vec::new();
    while let Some(&no) = nos.first() {
        nos.remove(0);
        match open_segment(vfs, &seg_dir, no)? {
            Ok(seg) => opened.push(seg),
            Err(BadSegment { path, reason, len }) => {
                let is_last = nos.is_empty();
                let all_zero_or_short = len < SEGMENT_HEADER_BYTES || {
                    let f = vfs
                        .open(&path, false)
                        .map_err(io_ctx(format!("opening {}", path.display())))?;
                    let mut b = vec![0u8; len.min(1 << 20) as usize];
                    let n = read_up_to(&*f, &mut b, 0)
                        .map_err(io_ctx(format!("reading {}", path.display())))?;
                    b[..n].iter().all(|&x| x == 0) && len <= 1 << 20
                };
                if is_last && no > 0 && all_zero_or_short {
                    tracing::warn!(file = %path.display(), "removing a segment whose creation did not complete");
                    vfs.remove(&path)
                        .map_err(io_ctx(format!("removing {}", path.display())))?;
                    vfs.sync_dir(&seg_dir)
                        .map_err(io_ctx(format!("syncing {}", seg_dir.display())))?;
                    truncated = Some((path, len, 0));
                } else if is_last && no == 0 && all_zero_or_short {
                    // A brand-new store that crashed while creating its first segment.
                    vfs.remove(&path)
                        .map_err(io_ctx(format!("removing {}", path.display())))?;
                } else {
                    return Err(OpenError::Corruption {
                        file: path,
                        offset: 0,
                        reason,
                    });
                }
            }
        }
    }
    if opened.is_empty() {
        let seg =
            create_segment(vfs, &seg_dir, 0, 0).map_err(io_ctx("creating the first segment"))?;
        opened.push(seg);
    }
    for seg in &opened {
        segments.push(seg.clone());
    }

    // Load the persisted index when it matches the log; otherwise rebuild from the start.
    let mut index = Index::default();
    let mut start = LogEnd {
        segment_no: 0,
        offset: SEGMENT_HEADER_BYTES,
        salt: opened[0].header.salt,
    };
    let mut index_loaded = false;
    let index_path = dir.join(INDEX_FILE);
    if use_index_file {
        if let Ok(bytes) = std::fs::read(&index_path) {
            match Index::decode(&bytes) {
                Ok((loaded, end)) => {
                    let fits = opened.get(end.segment_no as usize).is_some_and(|s| {
                        s.header.salt == end.salt
                            && s.file.size().is_ok_and(|l| l >= end.offset)
                            && end.offset >= SEGMENT_HEADER_BYTES
                    });
                    if fits {
                        index = loaded;
                        start = end;
                        index_loaded = true;
                    } else {
                        tracing::warn!("index file does not match the log; rebuilding it");
                    }
                }
                Err(reason) => tracing::warn!(%reason, "index file unreadable; rebuilding it"),
            }
        }
    }

    // Scan from where the index ends to the end of the log.
    let mut events_scanned = 0u64;
    let mut tail_len = start.offset;
    let last_no = opened.len() as u64 - 1;
    for seg in &opened[start.segment_no as usize..] {
        let no = seg.header.segment_no;
        let from = if no == start.segment_no {
            start.offset
        } else {
            SEGMENT_HEADER_BYTES
        };
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
        let mut pending: Vec<(u64, u64, i64, StreamId, String, strata_core::Uuid)> = Vec::new();
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
            ));
            if r.is_commit() {
                for (position, off, ts, stream, et, id) in pending.drain(..) {
                    index.push(NewEntry {
                        position,
                        loc: loc(no, off),
                        recorded_at_us: ts,
                        stream: &stream,
                        event_type: &et,
                        event_id: id,
                    });
                    events_scanned += 1;
                }
                committed_end = off + r.padded_len as u64;
            }
            Ok(())
        })?;
        let file_len = seg
            .file
            .size()
            .map_err(io_ctx(format!("reading {}", seg.path.display())))?;
        let sealed = no != last_no;
        let problem = match end {
            ScanEnd::Clean if pending.is_empty() => None,
            ScanEnd::Clean => Some((
                committed_end,
                "an append without its commit record".to_owned(),
                None,
            )),
            ScanEnd::Invalid { offset, reason } => Some((offset, reason, Some(offset))),
        };
        // The writer's preallocated zeros after the last commit: cut them quietly.
        let preallocated = !sealed
            && matches!(&problem, Some((bad, _, Some(_))) if *bad == committed_end)
            && zeros_to_end(seg, committed_end)?;
        // Cuts the file at the end of its last commit, durably, before anything is appended.
        let cut = || -> Result<(), OpenError> {
            seg.file
                .set_len(committed_end)
                .map_err(io_ctx(format!("truncating {}", seg.path.display())))?;
            seg.file
                .sync_data()
                .map_err(io_ctx(format!("syncing {}", seg.path.display())))
        };
        if preallocated {
            cut()?;
        } else if let Some((bad_offset, reason, search_from)) = problem {
            if sealed {
                return Err(OpenError::Corruption {
                    file: seg.path.clone(),
                    offset: bad_offset,
                    reason,
                });
            }
            if let Some(from) = search_from {
                if let Some(valid) = corruption_after(seg, from)? {
                    return Err(OpenError::Corruption {
                        file: seg.path.clone(),
                        offset: bad_offset,
                        reason: format!(
                            "{reason}; a valid record follows at offset {valid}, so this is \
                             not a torn write"
                        ),
                    });
                }
            }
            // A torn tail.
            tracing::warn!(file = %seg.path.display(), from = file_len, to = committed_end, %reason, "truncating a torn tail");
            cut()?;
            truncated = Some((seg.path.clone(), file_len, committed_end));
        }
        tail_len = committed_end;
    }
    Ok(Recovered {
        index,
        segments,
        tail_len,
        index_loaded,
        events_scanned,
        truncated,
    })
}
