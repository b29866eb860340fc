//! Sealed segments' files as they are on disk, for copying them elsewhere (an archive), and
//! a data directory made from such copies (a restore).
//!
//! A sealed segment and its index file never change while the store is open, except when a
//! scavenge rewrites them; [`LogStore::sealed_files`] holds scavenges off for as long as its
//! answer lives, so the files it names can be read whole and in pairs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_core::ReadError;

use crate::format::{SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::io::StdVfs;
use crate::recovery::{segment_index_path, SEGMENTS_DIR};
use crate::scavenge::Running;
use crate::segment::segment_file_name;
use crate::store::{blocking, LogStore};

/// One sealed segment: its two files, open, and the positions it covers.
#[derive(Debug, Clone)]
pub struct SealedSegment {
    /// The segment's number (its file name).
    pub segment_no: u64,
    /// Its header's salt (a scavenge keeps it).
    pub salt: u64,
    /// The first position it covers.
    pub first_position: u64,
    /// The position after the last it covers: the next segment's first.
    pub end_position: u64,
    /// Whether a scavenge rewrote it (segment format version 2).
    pub scavenged: bool,
    /// The segment file's path.
    pub segment_path: PathBuf,
    /// Its index file's path (`NNN.idx`).
    pub index_path: PathBuf,
    /// The segment file, opened while no scavenge could rewrite it: whatever happens to the
    /// paths afterwards, the two files read through these handles are one matching pair.
    /// `None` for a segment that lives only in an archive ([`LogStore::evict_archived`]).
    pub segment_file: Option<Arc<std::fs::File>>,
    /// The index file, opened with the segment file.
    pub index_file: Arc<std::fs::File>,
}

/// The sealed segments whose index files are written, in order from segment 0; no scavenge
/// rewrites them while this is alive.
pub struct SealedFiles {
    /// The segments.
    pub segments: Vec<SealedSegment>,
    _held: Arc<Running>,
}

impl std::fmt::Debug for SealedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedFiles")
            .field("segments", &self.segments)
            .finish()
    }
}

/// Why [`LogStore::sealed_files`] gave nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealedFilesError {
    /// A scavenge (or another holder of the sealed files) is running; try again after it.
    #[error("a scavenge or an archive of this store is running")]
    Busy,
    /// The store cannot answer (closed, stopped).
    #[error(transparent)]
    Store(#[from] ReadError),
}

impl LogStore {
    /// Seals the open segment when it holds any event (after the appends already queued),
    /// and waits for the sealed segments' index files: everything appended so far then lies
    /// in sealed segments. Each call that seals starts a new segment.
    pub async fn seal_open_segment(&self) -> Result<(), ReadError> {
        self.seal().await
    }

    /// The sealed segments whose index files are written, held still: no scavenge starts
    /// until the answer is dropped ([`SealedFilesError::Busy`] while one runs).
    pub async fn sealed_files(&self) -> Result<SealedFiles, SealedFilesError> {
        let shared = self.shared().clone();
        let held = Arc::new(Running::start(shared.clone()).map_err(|_| SealedFilesError::Busy)?);
        if let Some(reason) = shared.stopped_reason() {
            return Err(ReadError::Unavailable(reason.into()).into());
        }
        let store = self.clone();
        let segments = blocking(move || {
            shared.wait_for_segment_indexes();
            // While the store is open (no other process has the directory) and the hold is
            // taken (no scavenge of this store runs), each pair of files is opened as it is.
            store
                .while_open(|| sealed_now(&shared))
                .ok_or_else(|| ReadError::Unavailable(("the store is closed".to_owned()).into()))?
        })
        .await?;
        Ok(SealedFiles {
            segments,
            _held: held,
        })
    }
}

/// The sealed segments whose entries and ids are read from their index files, from segment 0
/// on, each with its two files open.
fn sealed_now(shared: &crate::writer::Shared) -> Result<Vec<SealedSegment>, ReadError> {
    let seg_dir = shared.dir.join(SEGMENTS_DIR);
    let mut out = Vec::new();
    let mut no = 0;
    while let (Some(seg), Some(next)) = (shared.segments.get(no), shared.segments.get(no + 1)) {
        // A segment whose index file is not the one the store reads (not written yet, or
        // written again after an open found it wrong) ends the list, as it ends a scavenge's:
        // the ones after it wait for it.
        let in_file = {
            let index = &shared.state.read().index;
            index.ids.in_file(no) && index.entries.in_file(no, seg.header.first_position)
        };
        if !in_file {
            break;
        }
        let index_path = segment_index_path(&seg_dir, no);
        let open = |p: &Path| {
            std::fs::File::open(p)
                .map(Arc::new)
                .map_err(|e| ReadError::Storage(format!("opening {}: {e}", p.display()).into()))
        };
        out.push(SealedSegment {
            segment_no: no,
            salt: seg.header.salt,
            first_position: seg.header.first_position,
            end_position: next.header.first_position,
            scavenged: seg.header.scavenged,
            segment_file: match seg.is_archived() {
                true => None,
                false => Some(open(&seg.path)?),
            },
            index_file: open(&index_path)?,
            segment_path: seg.path.clone(),
            index_path,
        });
        no += 1;
    }
    Ok(out)
}

/// What [`check_sealed_segment`] found in a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Its header.
    pub header: SegmentHeader,
    /// Events it holds.
    pub events: u64,
    /// The file's length.
    pub bytes: u64,
    /// When its first and last events were recorded, µs since the epoch (`None`: it holds
    /// none, which only a scavenged segment can).
    pub recorded_us: Option<(i64, i64)>,
    /// Its last event's position and id (`None`: it holds none).
    pub last_event: Option<(u64, strata_core::Uuid)>,
}

/// Checks a sealed segment file on its own: its header, then every record (length, CRC,
/// structure), that positions increase within `first_position..end_position` (each the one
/// after the last in a segment never scavenged, ending at `end_position`), that the records
/// end where the file (or a scavenged segment's removed runs) does, and that the last record
/// ends an append. Reads the file with `pread`, as open's scan does.
pub fn check_sealed_segment(path: &Path, end_position: u64) -> Result<SegmentSummary, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    check_sealed_segment_file(&file, end_position)
}

/// [`check_sealed_segment`] on an open file (one never written again: a sealed segment, or
/// a copy of one).
pub fn check_sealed_segment_file(
    file: &std::fs::File,
    end_position: u64,
) -> Result<SegmentSummary, String> {
    use std::os::unix::fs::FileExt;
    // Read with `pread`, a chunk at a time (as open's scan reads), never mapped.
    let bytes = file
        .metadata()
        .map_err(|e| format!("reading the segment: {e}"))?
        .len();
    let mut head = [0u8; SEGMENT_HEADER_BYTES as usize];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| format!("reading the segment's header: {e}"))?;
    let header = SegmentHeader::decode(&head)?;
    if header.scavenged && header.runs_at > bytes {
        return Err(format!(
            "its removed runs are said to start at {}, past its end ({bytes})",
            header.runs_at
        ));
    }
    let handle = file
        .try_clone()
        .map_err(|e| format!("reading the segment: {e}"))?;
    let seg = crate::segment::Segment::new(
        PathBuf::from("segment"),
        crate::io::std_file(handle),
        header,
    );
    let mut next = header.first_position;
    let mut events = 0u64;
    let mut recorded_us = None;
    let mut last_event = None;
    let mut last_commit = true;
    let mut wrong = None;
    let dense = !header.scavenged;
    let end = crate::recovery::scan_segment(&seg, SEGMENT_HEADER_BYTES, |at, r| {
        if wrong.is_some() {
            return Ok(());
        }
        if r.position < next || (dense && r.position != next) || r.position >= end_position {
            wrong = Some(format!(
                "the record at offset {at} holds position {}, where {next}{} below {end_position} was expected",
                r.position,
                if dense { "" } else { " or later" },
            ));
            return Ok(());
        }
        next = r.position + 1;
        events += 1;
        last_event = Some((r.position, r.event_id));
        last_commit = r.is_commit();
        recorded_us = Some(match recorded_us {
            None => (r.recorded_at_us, r.recorded_at_us),
            Some((first, _)) => (first, r.recorded_at_us),
        });
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if let Some(wrong) = wrong {
        return Err(wrong);
    }
    if let crate::recovery::ScanEnd::Invalid { offset, reason } = end {
        return Err(format!("the record at offset {offset}: {reason}"));
    }
    if dense && next != end_position {
        return Err(format!(
            "its records end at position {next}, not at {end_position} where the next segment starts"
        ));
    }
    if !last_commit {
        return Err("its last record does not end an append".to_owned());
    }
    Ok(SegmentSummary {
        header,
        events,
        bytes,
        recorded_us,
        last_event,
    })
}

/// The file name of segment `no` in `segments/`, and that of its index file.
pub fn sealed_file_names(no: u64) -> (String, String) {
    let seg = segment_file_name(no);
    let idx = Path::new(&seg)
        .with_extension("idx")
        .to_string_lossy()
        .into_owned();
    (seg, idx)
}

/// The folder of a data directory that holds its segments.
pub fn segments_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(SEGMENTS_DIR)
}

/// Ends a data directory made of sealed segments copied into `segments/` (numbered from 0,
/// each with its index file, every file synced): creates the empty segment `next_no` that
/// starts at `first_position`, the one a store opened on the directory appends to, and syncs
/// the folder. Without it, the last copied segment would be taken for the open one.
pub fn finish_restored_segments(
    data_dir: &Path,
    next_no: u64,
    first_position: u64,
) -> std::io::Result<()> {
    let seg_dir = segments_dir(data_dir);
    crate::recovery::create_segment(&StdVfs, &seg_dir, next_no, first_position)?;
    Ok(())
}

/// Makes each stream's removed versions one run across the segments copied into a data
/// directory's `segments/` (numbered from 0, each with its index file; the last one covering
/// the positions up to `end_position`), before the directory is finished and opened.
///
/// Copies of segments taken after different scavenges can disagree: an early segment as one
/// scavenge left it, a later one as a later scavenge left it, with versions between them still
/// there that the later scavenge removed from the store. A store keeps one run of removed
/// versions per stream, which runs only grow, so every version from a stream's lowest removed
/// version to its highest was removed from the store: those still held are removed here (their
/// segments rewritten as a scavenge rewrites them). Then each run starts at its stream's next
/// version ([`crate::SegmentWriter`]'s segments record what their source no longer holds,
/// which may begin below it). Segments are rewritten in place: the directory must be one no
/// store has open, as a restore's is before it is renamed into place. Returns the events
/// removed.
pub fn reconcile_copied_segments(data_dir: &Path, end_position: u64) -> Result<u64, String> {
    use std::collections::HashMap;
    use std::ops::Range;
    let seg_dir = segments_dir(data_dir);
    let listing = crate::recovery::list_segment_dir(&seg_dir).map_err(|e| e.to_string())?;
    let (opened, _) = crate::recovery::open_segments(&StdVfs, &seg_dir, &listing, None)
        .map_err(|e| e.to_string())?;
    let mut span: HashMap<String, Range<u64>> = HashMap::new();
    for seg in opened.iter().filter(|s| s.header.scavenged) {
        for (stream, run) in crate::recovery::read_removed_runs(seg)? {
            span.entry(stream)
                .and_modify(|s| *s = s.start.min(run.start)..s.end.max(run.end))
                .or_insert(run);
        }
    }
    if span.is_empty() {
        return Ok(0);
    }
    let removed = remove_inside(&seg_dir, &opened, &span, end_position)?;
    drop(opened);
    start_runs_at_next(&seg_dir, end_position)?;
    Ok(removed)
}

/// Removes from the segments `opened` every version a stream's `span` holds.
fn remove_inside(
    seg_dir: &Path,
    opened: &[Arc<crate::segment::Segment>],
    span: &std::collections::HashMap<String, std::ops::Range<u64>>,
    end_position: u64,
) -> Result<u64, String> {
    let inside = |r: &crate::format::DecodedRecord<'_>| {
        span.get(r.stream_id)
            .is_some_and(|s| s.contains(&r.stream_version))
    };
    let mut removed = 0;
    for (i, seg) in opened.iter().enumerate() {
        // Read first: only a segment holding such a version is rewritten.
        let mut holds = false;
        crate::recovery::scan_segment(seg, crate::format::SEGMENT_HEADER_BYTES, |_, r| {
            holds |= inside(r);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        if !holds {
            continue;
        }
        let end = opened
            .get(i + 1)
            .map_or(end_position, |next| next.header.first_position);
        let rewrite = crate::scavenge::rewrite_segment(&StdVfs, seg_dir, seg, end, inside, None)?;
        removed += rewrite.map_or(0, |r| r.removed);
    }
    Ok(removed)
}

/// Makes every removed run start at its stream's next version, where the segments before
/// leave it (stored versions and removed ones). A segment exported from another backend
/// records the versions its source no longer holds before a stream's first event there,
/// which may include versions an earlier segment holds (or, once the span's versions are
/// removed, already records as removed): that part is cut off the run (and a run left with
/// nothing is dropped), its segment's runs and index file written again.
fn start_runs_at_next(seg_dir: &Path, end_position: u64) -> Result<(), String> {
    use std::collections::HashMap;
    use std::os::unix::fs::FileExt;
    let listing = crate::recovery::list_segment_dir(seg_dir).map_err(|e| e.to_string())?;
    let (opened, _) = crate::recovery::open_segments(&StdVfs, seg_dir, &listing, None)
        .map_err(|e| e.to_string())?;
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut changed = Vec::new();
    for seg in &opened {
        let runs = match seg.header.scavenged {
            true => crate::recovery::read_removed_runs(seg)?,
            false => Vec::new(),
        };
        let mut kept = Vec::with_capacity(runs.len());
        for (stream, run) in &runs {
            let from = next.get(stream).copied().unwrap_or(0).max(run.start);
            if from < run.end {
                kept.push((stream.clone(), from..run.end));
            }
        }
        crate::recovery::scan_segment(seg, crate::format::SEGMENT_HEADER_BYTES, |_, r| {
            next.insert(r.stream_id.to_owned(), r.stream_version + 1);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        for (stream, run) in &kept {
            let n = next.entry(stream.clone()).or_insert(0);
            *n = (*n).max(run.end);
        }
        if kept == runs {
            continue;
        }
        let mut bytes = Vec::new();
        crate::format::encode_removed_runs(&kept, seg.header.salt, &mut bytes);
        let path = &seg.path;
        let io = |e: std::io::Error| format!("writing {}: {e}", path.display());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?;
        file.write_all_at(&bytes, seg.header.runs_at).map_err(io)?;
        file.set_len(seg.header.runs_at + bytes.len() as u64)
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        changed.push(seg.header.segment_no);
    }
    drop(opened);
    if changed.is_empty() {
        return Ok(());
    }
    // Their index files hold the runs too: written again from the segments as they are now.
    let listing = crate::recovery::list_segment_dir(seg_dir).map_err(|e| e.to_string())?;
    let (opened, _) = crate::recovery::open_segments(&StdVfs, seg_dir, &listing, None)
        .map_err(|e| e.to_string())?;
    for no in changed {
        let seg = &opened[no as usize];
        let end = opened
            .get(no as usize + 1)
            .map_or(end_position, |n| n.header.first_position);
        crate::scavenge::index_scavenged_segment(&StdVfs, seg_dir, seg, end)?;
    }
    Ok(())
}
