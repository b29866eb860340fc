//! `strata verify`: check every record of a data directory without changing anything.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use strata_core::Uuid;

use crate::error::{io_ctx, OpenError};
use crate::format::SEGMENT_HEADER_BYTES;
use crate::index::{loc, RemovedVersions};
use crate::io::StdVfs;
use crate::recovery::{
    classify_end, first_loss, list_segment_dir, open_segments, read_index_file, read_removed_runs,
    read_segment_index, scan_segment, segment_index_path, SegmentEnd, INDEX_FILE, SEGMENTS_DIR,
};
use crate::store::LOCK_FILE;

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: u64,
    /// Events stored whole: every record of each was checked (CRC, structure, position) and
    /// its append's commit record is there. Records of a torn last append are checked too but
    /// not counted: the next open cuts them.
    pub events: u64,
    /// Streams seen.
    pub streams: u64,
    /// Bytes of log checked.
    pub bytes: u64,
    /// The position after the last event the index file records as acknowledged (it holds
    /// the events from the open segment's first on; those before are in the segment index
    /// files), every one found in the log where the index file places it, with its id
    /// (`None`: no index file that checks out, so nothing to hold the log against).
    pub indexed_events: Option<u64>,
    /// A torn tail that the next open will cut: (file, the offset it is cut at, reason). It lies past every
    /// event the index file records, as a write torn by a crash (never acknowledged) does.
    pub torn_tail: Option<(PathBuf, u64, String)>,
}

/// Checks every record in `dir`: CRC, structure, dense positions, dense stream versions,
/// unique event ids, non-decreasing timestamps and whole appends; and that every event the
/// index file records as acknowledged is in the log, where the index file places it. Returns
/// an error naming the file and offset of the first problem ([`OpenError::Corruption`]), or
/// what is lost ([`OpenError::DataLoss`]). Takes the directory's lock, so it refuses to run
/// while a store has the directory open.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport, OpenError> {
    verify_with(dir, None)
}

/// [`verify`] of a store whose archived segments ([`crate::LogStore::evict_archived`]) are
/// read from `archive`: every record is checked, those in the archive too. Without an
/// archive, such a store gives [`OpenError::Archived`].
pub fn verify_with(
    dir: impl AsRef<Path>,
    archive: Option<std::sync::Arc<dyn crate::archived::SegmentSource>>,
) -> Result<VerifyReport, OpenError> {
    let dir = dir.as_ref();
    let archive = archive.map(|source| {
        std::sync::Arc::new(crate::archived::ArchiveReads::new(
            source,
            crate::limits::ARCHIVE_CACHE_BYTES_DEFAULT,
        ))
    });
    let vfs = StdVfs;
    crate::store::wait_for_dropped_in(dir);
    let lock_path = dir.join(LOCK_FILE);
    let seg_dir = dir.join(SEGMENTS_DIR);
    if !seg_dir.is_dir() {
        return Err(OpenError::InvalidConfig(format!(
            "{} is not a Strata data directory (no segments/ folder)",
            dir.display()
        )));
    }
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_ctx(format!("opening {}", lock_path.display())))?;
    if lock.try_lock().is_err() {
        return Err(OpenError::Locked {
            dir: dir.to_path_buf(),
            lock: lock_path,
        });
    }
    let listing = list_segment_dir(&seg_dir)?;
    let (opened, unfinished) = open_segments(&vfs, &seg_dir, &listing, archive.as_ref())?;
    let claim = read_index_file(dir);
    let mut report = VerifyReport {
        segments: 0,
        events: 0,
        streams: 0,
        bytes: 0,
        indexed_events: None,
        torn_tail: None,
    };
    let mut next_position = 0u64;
    // The position after the last whole append (a scavenged segment's removed positions at
    // its end count as held), and the events found whole.
    let mut committed = 0u64;
    let mut events = 0u64;
    let mut pending = 0u64;
    // Per stream: its events stored, and the versions a scavenge removed (one run).
    let mut versions: HashMap<String, (u64, RemovedVersions)> = HashMap::new();
    let mut ids: HashSet<Uuid> = HashSet::new();
    let mut last_ts = i64::MIN;
    for (i, seg) in opened.iter().enumerate() {
        let last = i + 1 == opened.len();
        let path = &seg.path;
        let no = seg.header.segment_no;
        let corruption = |offset: u64, reason: String| OpenError::Corruption {
            file: path.clone(),
            offset,
            reason,
        };
        if seg.header.first_position != next_position {
            return Err(corruption(
                0,
                format!(
                    "segment starts at position {} but {next_position} was expected",
                    seg.header.first_position
                ),
            ));
        }
        // A scavenged segment's records skip the positions and versions removed; it covers
        // the positions up to the next segment's first.
        let skips = seg.header.scavenged;
        let end_position = match opened.get(i + 1) {
            Some(next) if skips => next.header.first_position,
            _ => u64::MAX,
        };
        let mut in_append = false;
        let mut committed_end = SEGMENT_HEADER_BYTES;
        // The segment's own index file, when it is this segment's: it must place each event
        // where the log holds it, with its id, as the whole index file must; and its id
        // section and filter must be its ids (idempotent retries rely on them).
        // (A scavenged segment's file beside the segment before its rewrite, which a crash
        // between the two renames leaves, is not its: the next open writes it again.)
        let seg_index = read_segment_index(&seg_dir, no, &mut Vec::new(), false)
            .filter(|f| f.seg.salt == seg.header.salt && f.is_scavenged() == seg.header.scavenged);
        // One of an earlier version is checked against the log below, not whole.
        if let Some(f) = seg_index.as_ref().filter(|f| f.is_current()) {
            f.check_whole().map_err(|reason| OpenError::Corruption {
                file: segment_index_path(&seg_dir, no),
                offset: 0,
                reason: format!(
                    "{reason} (the file is derived: delete it and the next open writes it again)"
                ),
            })?;
        }
        if skips && last {
            return Err(corruption(
                0,
                "the last segment is marked scavenged: only sealed segments are".to_owned(),
            ));
        }
        // The versions removed from it, per stream: a record may skip to the end of its
        // stream's run, and the runs of streams without a record left carry them on at its
        // end.
        let mut runs: HashMap<String, (std::ops::Range<u64>, bool)> = match skips {
            true => read_removed_runs(seg)
                .map_err(|reason| corruption(seg.header.runs_at, reason))?
                .into_iter()
                .map(|(s, r)| (s, (r, false)))
                .collect(),
            false => HashMap::new(),
        };
        let end = scan_segment(seg, SEGMENT_HEADER_BYTES, |off, r| {
            let in_order = match skips {
                true => r.position >= next_position && r.position < end_position,
                false => r.position == next_position,
            };
            if !in_order {
                return Err(corruption(
                    off,
                    format!(
                        "record holds position {} where {next_position} was expected",
                        r.position
                    ),
                ));
            }
            if let Some((c, at)) = claim.as_ref().and_then(|c| Some((c, c.loc(r.position)?))) {
                if at != loc(no, off) || c.id(r.position) != Some(r.event_id) {
                    return Err(OpenError::Corruption {
                        file: dir.join(INDEX_FILE),
                        offset: c.entry_offset(r.position),
                        reason: format!(
                            "it places position {} elsewhere than segment {no} byte {off}, or \
                             gives it another event id, than the log holds (the index file is \
                             derived: delete it and the next open rebuilds it)",
                            r.position
                        ),
                    });
                }
            }
            if let Some((f, at)) = seg_index
                .as_ref()
                .and_then(|f| Some((f, f.loc(r.position)?)))
            {
                if at != loc(no, off) || f.id(r.position) != Some(r.event_id) {
                    return Err(OpenError::Corruption {
                        file: segment_index_path(&seg_dir, no),
                        offset: 0,
                        reason: format!(
                            "it places position {} elsewhere than byte {off}, or gives it \
                             another event id, than the segment holds (the file is derived: \
                             delete it and the next open writes it again)",
                            r.position
                        ),
                    });
                }
            }
            let (stored, removed) = versions.entry(r.stream_id.to_owned()).or_default();
            let next = *stored + removed.count;
            // A skip is the stream's run removed from this segment, from its next version.
            let run = runs
                .get_mut(r.stream_id)
                .filter(|(run, used)| !used && run.start == next && run.end == r.stream_version);
            let skip = run.is_some();
            match removed.after(*stored, r.stream_version, skip) {
                Ok(run) => *removed = run,
                Err(next) => {
                    return Err(corruption(
                        off,
                        format!(
                            "stream {} has version {} where {next} was expected",
                            r.stream_id, r.stream_version
                        ),
                    ))
                }
            }
            if let Some((_, used)) = run {
                *used = true;
            }
            *stored += 1;
            if !ids.insert(r.event_id) {
                return Err(corruption(
                    off,
                    format!("event id {} appears twice", r.event_id),
                ));
            }
            if r.recorded_at_us < last_ts {
                return Err(corruption(off, "recorded-at time goes backward".to_owned()));
            }
            last_ts = r.recorded_at_us;
            if let Err(reason) = r.to_event() {
                return Err(corruption(off, reason));
            }
            next_position = r.position + 1;
            pending += 1;
            in_append = !r.is_commit();
            if r.is_commit() {
                committed_end = off + r.padded_len as u64;
                committed = next_position;
                events += pending;
                pending = 0;
            }
            Ok(())
        })?;
        if skips && !in_append {
            next_position = end_position;
            committed = end_position;
        }
        // The runs no record skipped: they must carry their streams on from their next.
        for (stream, (run, _)) in runs.into_iter().filter(|(_, (_, used))| !used) {
            let (stored, removed) = versions.entry(stream.clone()).or_default();
            let next = *stored + removed.count;
            match (run.start == next).then(|| removed.after(*stored, run.end, true)) {
                Some(Ok(grown)) => *removed = grown,
                _ => {
                    return Err(corruption(
                        seg.header.runs_at,
                        format!(
                            "stream {stream}'s versions {run:?} removed here do not carry it on from {next}"
                        ),
                    ))
                }
            }
        }
        match classify_end(seg, end, in_append, committed_end, !last)? {
            SegmentEnd::Clean | SegmentEnd::Preallocated => {}
            // The next open cuts at the end of the last whole append.
            SegmentEnd::Torn(reason) => {
                report.torn_tail = Some((path.clone(), committed_end, reason));
            }
        }
        report.segments += 1;
        report.bytes += seg
            .file
            .size()
            .map_err(io_ctx(format!("reading {}", path.display())))?;
    }
    if let Some(u) = &unfinished {
        report.torn_tail = Some((
            u.path.clone(),
            0,
            "a segment whose creation did not complete (its header is missing)".to_owned(),
        ));
    }
    if let Some(loss) = first_loss(
        claim.as_ref(),
        &listing.indexes,
        committed,
        &opened,
        unfinished.as_ref(),
        &seg_dir,
    )? {
        return Err(OpenError::DataLoss(loss));
    }
    report.indexed_events = claim.as_ref().map(|file| file.events);
    report.events = events;
    report.streams = versions.len() as u64;
    Ok(report)
}
