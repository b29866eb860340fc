//! Sealed segments written from events kept elsewhere (another backend's rows), in the format
//! a scavenge leaves (version 2, see `docs/format.md`), so that another backend's history goes
//! into the same archive as the embedded store's; and the events of a directory of sealed
//! segments read back in position order, for another backend to take in.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::HashMap;
//! use strata_core::{Metadata, Position, RecordedEvent, StreamId, Uuid};
//! let dir = tempfile::tempdir()?;
//! let seg_dir = strata_log::segments_dir(dir.path());
//! std::fs::create_dir_all(&seg_dir)?;
//! let event = |position: u64, version: u64| RecordedEvent {
//!     event_id: Uuid::new_v4(),
//!     stream_id: StreamId::new("account-1").unwrap(),
//!     stream_version: version,
//!     position: Position(position),
//!     recorded_at: strata_core::timestamp_from_micros(1_700_000_000_000_000),
//!     event_type: "Deposited".to_owned(),
//!     content_type: "application/json".to_owned(),
//!     data: b"{}".to_vec(),
//!     metadata: Metadata::new(),
//! };
//! // Positions 0 and 3 (1 and 2 were never committed), versions 0 and 1.
//! let mut segment = strata_log::SegmentWriter::create(&seg_dir, 0, 7, 0)?;
//! segment.push(&event(0, 0))?;
//! segment.push(&event(3, 1))?;
//! let summary = segment.finish(4, &HashMap::new())?;
//! assert_eq!(summary.events, 2);
//! let mut read = Vec::new();
//! strata_log::each_sealed_event(dir.path(), |e| { read.push(e.position); Ok::<(), String>(()) })?;
//! assert_eq!(read, [Position(0), Position(3)]);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use strata_core::RecordedEvent;

use crate::format::{
    encode_removed_runs, RecordRef, SegmentHeader, FLAG_COMMIT, SEGMENT_HEADER_BYTES,
};
use crate::io::{StdVfs, Vfs};
use crate::recovery::{list_segment_dir, open_segments, scan_segment, ScanEnd};
use crate::scavenge::{index_scavenged_segment, segment_temp_path};
use crate::sealed::SegmentSummary;
use crate::segment::{segment_file_name, Segment};

/// Bytes of records buffered before they are written.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Why a [`SegmentWriter`] refused an event or could not write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The events do not make a segment: positions not increasing, a stream's versions out of
    /// order or with more than one gap, times going backward, a field too long for a record.
    #[error("event at position {position} cannot go into segment {segment}: {reason}")]
    Refused {
        /// The segment being written.
        segment: u64,
        /// The event's position.
        position: u64,
        /// Why.
        reason: String,
    },
    /// Writing or reading the segment's file failed.
    #[error("segment {segment}: {context}")]
    Io {
        /// The segment.
        segment: u64,
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Its index file could not be written from it.
    #[error("writing segment {segment}'s index file: {reason}")]
    Index {
        /// The segment.
        segment: u64,
        /// Why.
        reason: String,
    },
}

/// One stream's versions in the segment being written.
struct Span {
    first: u64,
    last: u64,
    /// The versions skipped between two of its events here.
    gap: Option<Range<u64>>,
}

/// Writes one sealed segment (format version 2) from events given in position order, with
/// gaps allowed in positions and, per stream, one run of removed versions; then its index
/// file. The file goes to `NNN.stmp` and is renamed to `NNN.seg` once whole and synced.
pub struct SegmentWriter {
    seg_dir: PathBuf,
    header: SegmentHeader,
    tmp: PathBuf,
    file: std::fs::File,
    buf: Vec<u8>,
    written: u64,
    next_position: u64,
    last_recorded_us: i64,
    first_recorded_us: Option<i64>,
    last_event: Option<(u64, strata_core::Uuid)>,
    events: u64,
    streams: HashMap<String, Span>,
}

impl SegmentWriter {
    /// Starts segment `no` in `seg_dir` (a data directory's `segments/`), with `salt` (a
    /// segment 0's is its store's id) and covering positions from `first_position`.
    pub fn create(
        seg_dir: &Path,
        no: u64,
        salt: u64,
        first_position: u64,
    ) -> Result<SegmentWriter, ExportError> {
        let header = SegmentHeader {
            salt,
            segment_no: no,
            first_position,
            created_at_us: 0, // its first event's time, set when it is finished
            batch_marks: false,
            scavenged: true,
            runs_at: SEGMENT_HEADER_BYTES,
        };
        let tmp = segment_temp_path(seg_dir, no);
        let io = |source: std::io::Error| ExportError::Io {
            segment: no,
            context: format!("creating {}", tmp.display()),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&tmp)
            .map_err(io)?;
        Ok(SegmentWriter {
            seg_dir: seg_dir.to_path_buf(),
            header,
            tmp,
            file,
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            written: 0,
            next_position: first_position,
            last_recorded_us: i64::MIN,
            first_recorded_us: None,
            last_event: None,
            events: 0,
            streams: HashMap::new(),
        })
    }

    /// Bytes of records taken so far.
    pub fn bytes(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Events taken so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Each stream of the segment with the first version it holds here.
    pub fn first_versions(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.streams
            .iter()
            .map(|(s, span)| (s.as_str(), span.first))
    }

    /// Takes the next event: its position after the last one's, its stream's version after
    /// that stream's last one here (one gap per stream at most), recorded no earlier.
    pub fn push(&mut self, e: &RecordedEvent) -> Result<(), ExportError> {
        let refused = |reason: String| ExportError::Refused {
            segment: self.header.segment_no,
            position: e.position.0,
            reason,
        };
        if e.position.0 < self.next_position {
            return Err(refused(format!(
                "positions must increase (expected {} or later)",
                self.next_position
            )));
        }
        let recorded_us = e.recorded_at.timestamp_micros();
        if recorded_us < self.last_recorded_us {
            return Err(refused("its time is before the event before".to_owned()));
        }
        // Compact JSON, as the writer stores it (another backend may give it back spaced).
        let metadata = match e.metadata.is_empty() {
            true => Vec::new(),
            false => serde_json::to_vec(e.metadata.as_map())
                .map_err(|err| refused(format!("its metadata does not encode: {err}")))?,
        };
        if e.stream_id.as_str().len() > usize::from(u16::MAX)
            || e.event_type.len() > usize::from(u16::MAX)
            || e.content_type.len() > usize::from(u8::MAX)
            || u32::try_from(e.data.len()).is_err()
            || u32::try_from(metadata.len()).is_err()
        {
            return Err(refused("a field is too long for a record".to_owned()));
        }
        let v = e.stream_version;
        match self.streams.get_mut(e.stream_id.as_str()) {
            None => {
                self.streams.insert(
                    e.stream_id.as_str().to_owned(),
                    Span {
                        first: v,
                        last: v,
                        gap: None,
                    },
                );
            }
            Some(span) if v == span.last + 1 => span.last = v,
            Some(span) if v > span.last + 1 && span.gap.is_none() => {
                span.gap = Some(span.last + 1..v);
                span.last = v;
            }
            Some(span) => {
                return Err(refused(format!(
                    "stream {} has version {v} after {}{}",
                    e.stream_id,
                    span.last,
                    if span.gap.is_some() {
                        " and a gap before"
                    } else {
                        ""
                    }
                )))
            }
        }
        RecordRef {
            position: e.position.0,
            recorded_at_us: recorded_us,
            event_id: e.event_id,
            stream_version: v,
            stream_id: e.stream_id.as_str(),
            event_type: &e.event_type,
            content_type: &e.content_type,
            metadata: &metadata,
            data: &e.data,
            flags: FLAG_COMMIT,
        }
        .encode_into(self.header.salt, &mut self.buf);
        self.next_position = e.position.0 + 1;
        self.last_recorded_us = recorded_us;
        self.first_recorded_us.get_or_insert(recorded_us);
        self.last_event = Some((e.position.0, e.event_id));
        self.events += 1;
        if self.buf.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn io(&self, what: &str) -> impl Fn(std::io::Error) -> ExportError + '_ {
        let what = what.to_owned();
        move |source| ExportError::Io {
            segment: self.header.segment_no,
            context: format!("{what} {}", self.tmp.display()),
            source,
        }
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        use std::os::unix::fs::FileExt;
        let at = SEGMENT_HEADER_BYTES + self.written;
        self.file
            .write_all_at(&self.buf, at)
            .map_err(self.io("writing"))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Ends the segment at `end_position` (the next segment's first; past the last event
    /// taken). `next_versions` gives, for streams whose first version here is not 0, the
    /// version after the last one the store holds before this segment (absent: none): the
    /// versions from there to the first one here were removed, and the segment records them
    /// as its stream's removed run. Writes and syncs the segment, then its index file.
    pub fn finish(
        mut self,
        end_position: u64,
        next_versions: &HashMap<String, u64>,
    ) -> Result<SegmentSummary, ExportError> {
        use std::os::unix::fs::FileExt;
        let no = self.header.segment_no;
        if end_position < self.next_position || end_position <= self.header.first_position {
            return Err(ExportError::Refused {
                segment: no,
                position: end_position,
                reason: "the segment must end past its last event and its first position"
                    .to_owned(),
            });
        }
        let mut runs: Vec<(String, Range<u64>)> = Vec::new();
        for (stream, span) in &self.streams {
            let next = next_versions.get(stream).copied().unwrap_or(0);
            let before = (next < span.first).then_some(next..span.first);
            let run = match (before, &span.gap) {
                (Some(_), Some(_)) => {
                    return Err(ExportError::Refused {
                        segment: no,
                        position: self.header.first_position,
                        reason: format!(
                            "stream {stream} skips versions twice (before {} and between its events here): removals leave one run",
                            span.first
                        ),
                    })
                }
                (Some(r), None) => r,
                (None, Some(r)) => r.clone(),
                (None, None) => continue,
            };
            runs.push((stream.clone(), run));
        }
        runs.sort_by(|a, b| a.0.cmp(&b.0));
        // Created at its first event's time: the same events make the same bytes.
        self.header.created_at_us = self.first_recorded_us.unwrap_or(0);
        self.flush()?;
        self.header.runs_at = SEGMENT_HEADER_BYTES + self.written;
        encode_removed_runs(&runs, self.header.salt, &mut self.buf);
        self.flush()?;
        self.file
            .write_all_at(&self.header.encode(), 0)
            .map_err(self.io("writing"))?;
        self.file.sync_all().map_err(self.io("syncing"))?;
        let path = self.seg_dir.join(segment_file_name(no));
        std::fs::rename(&self.tmp, &path).map_err(self.io("renaming"))?;
        StdVfs
            .sync_dir(&self.seg_dir)
            .map_err(self.io("syncing the folder of"))?;
        let bytes = SEGMENT_HEADER_BYTES + self.written;
        let seg = Segment::new(
            path,
            crate::io::std_file(self.file.try_clone().map_err(self.io("reading"))?),
            self.header,
        );
        seg.seal(bytes);
        index_scavenged_segment(&StdVfs, &self.seg_dir, &seg, end_position).map_err(|reason| {
            ExportError::Index {
                segment: no,
                reason,
            }
        })?;
        Ok(SegmentSummary {
            header: self.header,
            events: self.events,
            bytes,
            recorded_us: self
                .first_recorded_us
                .map(|first| (first, self.last_recorded_us)),
            last_event: self.last_event,
        })
    }
}

/// Calls `f` with each event of the sealed segments of data directory `data_dir`, in position
/// order, as the segments hold them (events readers no longer see but no scavenge removed
/// included): what another backend takes in from a restored archive. The last segment must be
/// empty (a restored directory's); nothing is changed.
pub fn each_sealed_event<E: From<String>>(
    data_dir: &Path,
    mut f: impl FnMut(RecordedEvent) -> Result<(), E>,
) -> Result<(), E> {
    let seg_dir = crate::sealed::segments_dir(data_dir);
    let listing = list_segment_dir(&seg_dir).map_err(|e| E::from(e.to_string()))?;
    let (segments, _) =
        open_segments(&StdVfs, &seg_dir, &listing, None).map_err(|e| E::from(e.to_string()))?;
    let mut failed: Option<E> = None;
    for seg in &segments {
        let end = scan_segment(seg, SEGMENT_HEADER_BYTES, |offset, r| {
            if failed.is_some() {
                return Ok(());
            }
            let event = r
                .to_event()
                .map_err(|reason| crate::OpenError::Corruption {
                    file: seg.path.clone(),
                    offset,
                    reason,
                })?;
            if let Err(e) = f(event) {
                failed = Some(e);
            }
            Ok(())
        })
        .map_err(|e| E::from(e.to_string()))?;
        if let Some(e) = failed {
            return Err(e);
        }
        if let ScanEnd::Invalid { offset, reason } = end {
            return Err(E::from(format!(
                "{} is not whole at byte {offset}: {reason}",
                seg.path.display()
            )));
        }
    }
    Ok(())
}
