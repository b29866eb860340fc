//! What the index keeps per position (where the event lies, when it was recorded, its stream
//! and type), in bounded memory: the entries of a sealed segment whose index file is written
//! are read from that file (40 bytes each, in position order, with stream and type numbers
//! local to the file and a table per file that turns them into the index's): through a map of
//! it, or with `pread` where the store does not map its files (`LogConfig::map_reads`, or
//! segments too small for a map each). Memory keeps, per file, only those two tables. The
//! entries of the open segment, and of sealed segments whose file is not written yet, are kept
//! in memory (24 bytes each), one list per segment: when a segment's file is written, its list
//! is swapped for the file under the state lock and dropped after it.
//!
//! The map's pages are the kernel's page cache: they count towards a process's resident
//! memory only while it reads them, and the kernel takes them back under memory pressure.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use strata_core::{BackendError, Corruption, CorruptionLocation, Position, ReadError};

use crate::format::{u32_at, u64_at};
use crate::limits::WALK_READAHEAD_ENTRIES;
use crate::postings::Blocks;

/// Bytes of one entry of an index file: location, time, local stream and type numbers, id.
pub(crate) const ENTRY_BYTES: usize = 40;

/// What the index keeps per position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub loc: u64,
    pub recorded_at_us: i64,
    pub stream: u32,
    pub event_type: u32,
}

impl Entry {
    /// What a position a scavenge removed has instead of an entry: no location, stream or
    /// type (see [`Entry::is_removed`]).
    pub const REMOVED: Entry = Entry {
        loc: u64::MAX,
        recorded_at_us: i64::MIN,
        stream: u32::MAX,
        event_type: u32::MAX,
    };

    /// Whether this position's event was removed by a scavenge.
    pub fn is_removed(&self) -> bool {
        self.loc == u64::MAX
    }
}

/// How an index file's entries are read.
enum Source {
    /// From a read-only map of the file.
    Map(memmap2::Mmap),
    /// With `pread`, when maps are not allowed (`LogConfig::map_reads`, or segments too
    /// small for a map each): the file stays open, shared with its id section.
    Read(Arc<File>),
}

/// A sealed segment's entries, in its index file.
pub(crate) struct EntryFile {
    /// The file's name, for errors.
    name: Box<str>,
    source: Source,
    /// Where the entries start in the file.
    at: usize,
    /// How many there are.
    len: usize,
    /// The positions the segment covers, from its first: `len`, unless a scavenge removed
    /// some of its events, whose positions then have no entry (see [`Slots`]).
    span: usize,
    slots: Option<Slots>,
    /// The index's number of each of the file's streams and types.
    streams: Box<[u32]>,
    types: Box<[u32]>,
}

impl EntryFile {
    /// The `len` entries at `at` of the index file `file` (named by `path`), which must be
    /// `expected` byte for byte in its first `at` bytes (its header), its last 4 (its CRC)
    /// and in length: the file checked (or written) as `expected` is the one read. Read from
    /// a map of it when `map`, else with `pread`. The index's numbers of the names they use
    /// are set with [`set_names`](Self::set_names) before the first read.
    pub fn open(
        file: &Arc<File>,
        path: &Path,
        expected: &[u8],
        at: usize,
        len: usize,
        map: bool,
    ) -> std::io::Result<EntryFile> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tail = expected.len().saturating_sub(4);
        let changed = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{name} changed while it was being opened"),
            )
        };
        // Compared with `pread`, even when mapped: a read through a fresh map brings in (and
        // counts as resident) the whole large folio the page cache holds it in, up to 2 MiB
        // per file, where the comparison needs two pages.
        use std::os::unix::fs::FileExt;
        let mut header = vec![0u8; at];
        let mut crc = [0u8; 4];
        file.read_exact_at(&mut header, 0)?;
        file.read_exact_at(&mut crc, tail as u64)?;
        if file.metadata()?.len() != expected.len() as u64
            || header != expected[..at]
            || crc[..] != expected[tail..]
        {
            return Err(changed());
        }
        // A file that cannot be mapped (the process's map count spent, say) is read with
        // `pread`, as when maps are off.
        let mapped = match map.then(|| crate::io::map_index_file(file)) {
            Some(Err(error)) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| tracing::warn!(%error, "an index file cannot be mapped: read with pread instead (said once)"));
                None
            }
            Some(Ok(map)) => Some(map),
            None => None,
        };
        let source = match mapped {
            Some(map) if map.len() != expected.len() => return Err(changed()),
            Some(map) => Source::Map(map),
            None => Source::Read(file.clone()),
        };
        debug_assert!(at + len * ENTRY_BYTES <= expected.len());
        Ok(EntryFile {
            name: format!("{}/{name}", crate::recovery::SEGMENTS_DIR).into(),
            source,
            at,
            len,
            span: len,
            slots: None,
            streams: Box::default(),
            types: Box::default(),
        })
    }

    /// The file of a scavenged segment: its entries are those of the positions `slots`
    /// holds, of the `span` from its first. `slots` must hold as many as the file entries.
    pub fn with_slots(mut self, span: usize, slots: Slots) -> EntryFile {
        debug_assert_eq!(slots.len(), self.len);
        self.span = span;
        self.slots = Some(slots);
        self
    }

    /// The entry number of the position `offset` from the first, `None` when a scavenge
    /// removed its event (or it lies past the segment).
    fn slot(&self, offset: usize) -> Option<usize> {
        match &self.slots {
            None => (offset < self.len).then_some(offset),
            Some(slots) => slots.slot(offset),
        }
    }

    /// Whether a scavenge removed the event of the position `offset` from the first.
    fn removes(&self, offset: usize) -> bool {
        self.slots
            .as_ref()
            .is_some_and(|s| s.slot(offset).is_none())
    }

    /// The offset from the first position of entry `k`'s.
    fn offset_of(&self, k: usize) -> usize {
        match &self.slots {
            None => k,
            Some(slots) => slots.offset(k),
        }
    }

    /// The entry of the position `offset` from the first (`first`): [`Entry::REMOVED`]
    /// when a scavenge removed its event.
    fn get_at(&self, offset: usize, first: u64) -> Result<Entry, ReadError> {
        match self.slot(offset) {
            Some(k) => self.get(k, first),
            None => Ok(Entry::REMOVED),
        }
    }

    /// Sets the index's numbers of the file's streams and types. Entries naming a stream or
    /// type outside those tables must have been refused before.
    pub fn set_names(&mut self, streams: Box<[u32]>, types: Box<[u32]>) {
        self.streams = streams;
        self.types = types;
    }

    /// Entry `k`, the file's first being position `first`. The file was checked when it was
    /// opened; an entry naming a stream or type the file does not is refused all the same (as
    /// corruption: the file changed on disk since).
    fn get(&self, k: usize, first: u64) -> Result<Entry, ReadError> {
        let mut one = [0u8; ENTRY_BYTES];
        let bytes = self.bytes(k, 1, &mut one)?;
        self.decode(bytes, k, first)
    }

    /// Entries `k..k + n` of `file` (which it must hold), from `blocks`: read at once (one
    /// `pread` without a map), or fetched before, with the entries `fetch` (a range holding
    /// these) read when they lack them. Each is checked as [`get`](Self::get) checks it, but
    /// only when it is used: `None` for one that fails (read it with `get` for the error).
    fn run(
        file: &Arc<EntryFile>,
        k: usize,
        n: usize,
        fetch: std::ops::Range<usize>,
        first: u64,
        blocks: &Blocks,
    ) -> Result<Vec<Option<Entry>>, ReadError> {
        let at = file.at + k * ENTRY_BYTES;
        let fetch = (
            file.at + fetch.start * ENTRY_BYTES,
            fetch.len() * ENTRY_BYTES,
        );
        blocks.with_bytes(file, at, n * ENTRY_BYTES, fetch, |bytes| {
            bytes
                .chunks_exact(ENTRY_BYTES)
                .enumerate()
                .map(|(i, e)| file.decode(e, k + i, first).ok())
                .collect()
        })
    }

    fn mapped(&self) -> bool {
        matches!(self.source, Source::Map(_))
    }

    /// Asks for the entry of the position `offset` from the first to be brought into the
    /// CPU's cache (see [`crate::io::prefetch`]): through a map only (a `pread` reads it
    /// when asked).
    fn prefetch_at(&self, offset: usize) {
        if let (Source::Map(map), Some(k)) = (&self.source, self.slot(offset)) {
            crate::io::prefetch(map, self.at + k * ENTRY_BYTES);
        }
    }

    /// Positions covered, from the segment's first: its events, and those a scavenge
    /// removed.
    pub fn span(&self) -> usize {
        self.span
    }

    /// The entries of the positions `offset..offset + n` from the first (`first`), with
    /// [`Entry::REMOVED`] for those a scavenge removed, read as [`run`](Self::run) reads
    /// (`fetch`: a range of offsets holding these, read when `blocks` lack them).
    fn run_at(
        file: &Arc<EntryFile>,
        offset: usize,
        n: usize,
        fetch: std::ops::Range<usize>,
        first: u64,
        blocks: &Blocks,
    ) -> Result<Vec<Option<Entry>>, ReadError> {
        let Some(slots) = &file.slots else {
            return EntryFile::run(file, offset, n, fetch, first, blocks);
        };
        let (lo, hi) = (
            slots.first_at_or_after(offset),
            slots.first_at_or_after(offset + n),
        );
        let fetch = slots.first_at_or_after(fetch.start)..slots.first_at_or_after(fetch.end);
        let fetch = fetch.start.min(lo)..fetch.end.max(hi);
        let mut out = vec![Some(Entry::REMOVED); n];
        if hi > lo {
            let run = EntryFile::run(file, lo, hi - lo, fetch, first, blocks)?;
            for (k, e) in (lo..hi).zip(run) {
                out[slots.offset(k) - offset] = e;
            }
        }
        Ok(out)
    }

    /// Bytes `at..at + n` of the file if reading them waits for no disk: in the map and
    /// resident, or in the page cache (read into `buf`); `None` otherwise.
    pub fn bytes_in_memory<'a>(
        &'a self,
        at: usize,
        n: usize,
        buf: &'a mut Vec<u8>,
    ) -> Result<Option<&'a [u8]>, ReadError> {
        match &self.source {
            Source::Map(map) => Ok(crate::io::map_resident(map, at, n).then(|| &map[at..at + n])),
            Source::Read(file) => {
                buf.resize(n, 0);
                // An error says only that this is not known: the read proper reports it.
                let read = crate::io::read_at_nowait(file, buf, at as u64).unwrap_or(false);
                Ok(read.then_some(&buf[..]))
            }
        }
    }

    /// `f` of bytes `at..at + n` of the file: in the map, or read with one `pread`.
    pub fn with_bytes<T>(
        &self,
        at: usize,
        n: usize,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, ReadError> {
        let mut buf = vec![0u8; if self.mapped() { 0 } else { n }];
        Ok(f(self.bytes_at(at, n, &mut buf)?))
    }

    /// Bytes `at..at + n` of the file, copied from the map or read with one `pread` into
    /// the vector returned.
    pub fn read_vec(&self, at: usize, n: usize) -> Result<Vec<u8>, ReadError> {
        if self.mapped() {
            return self.with_bytes(at, n, <[u8]>::to_vec);
        }
        let mut buf = vec![0u8; n];
        self.bytes_at(at, n, &mut buf)?;
        Ok(buf)
    }

    /// The bytes of entries `k..k + n`: in the map, or read into `buf` (`n` entries long).
    fn bytes<'a>(&'a self, k: usize, n: usize, buf: &'a mut [u8]) -> Result<&'a [u8], ReadError> {
        self.bytes_at(self.at + k * ENTRY_BYTES, n * ENTRY_BYTES, buf)
    }

    /// Bytes `at..at + n` of the file: in the map, or read into `buf` (`n` long).
    fn bytes_at<'a>(
        &'a self,
        at: usize,
        n: usize,
        buf: &'a mut [u8],
    ) -> Result<&'a [u8], ReadError> {
        match &self.source {
            Source::Map(map) => map
                .get(at..at + n)
                .ok_or_else(|| self.corruption(at, None, "a read goes past the end of the file")),
            Source::Read(file) => {
                std::os::unix::fs::FileExt::read_exact_at(&**file, buf, at as u64).map_err(
                    |e| {
                        ReadError::Storage(BackendError::with_source(
                            format!("reading the index file {}", self.name),
                            e,
                        ))
                    },
                )?;
                Ok(buf)
            }
        }
    }

    /// Entry `k` from its bytes `e`.
    fn decode(&self, e: &[u8], k: usize, first: u64) -> Result<Entry, ReadError> {
        let stream = self.streams.get(u32_at(e, 16) as usize);
        let event_type = self.types.get(u32_at(e, 20) as usize);
        match (stream, event_type) {
            (Some(&stream), Some(&event_type)) => Ok(Entry {
                loc: u64_at(e, 0),
                recorded_at_us: u64_at(e, 8) as i64,
                stream,
                event_type,
            }),
            _ => Err(self.corruption(
                self.at + k * ENTRY_BYTES,
                Some(first + self.offset_of(k) as u64),
                "the entry names a stream or type the file does not hold: the file changed on disk after it was checked",
            )),
        }
    }

    /// The error for bytes at `at` of the file (meant for `position`, when they are one's)
    /// that fail a check made as they are read.
    pub fn corruption(&self, at: usize, position: Option<u64>, reason: &str) -> ReadError {
        ReadError::Corruption(Corruption::new(
            CorruptionLocation::LogFile {
                file: self.name.as_ref().into(),
                offset: at as u64,
            },
            position.map(Position),
            reason,
        ))
    }

    fn memory_bytes(&self) -> usize {
        (self.streams.len() + self.types.len()) * 4
            + self.slots.as_ref().map_or(0, Slots::memory_bytes)
            + std::mem::size_of::<Self>()
    }
}

enum Part {
    Memory(Vec<Entry>),
    /// Shared with the readers that read from it after releasing the state lock.
    File(Arc<EntryFile>),
}

/// One segment's entries.
struct Chunk {
    segment_no: u64,
    first: u64,
    /// When its first event was recorded: times never decrease with positions, so the
    /// chunk a time falls in is found without reading any file.
    first_at_us: i64,
    part: Part,
}

impl Chunk {
    /// The positions it covers.
    fn len(&self) -> usize {
        match &self.part {
            Part::Memory(v) => v.len(),
            Part::File(f) => f.span,
        }
    }

    /// The entry of the position `k` from its first.
    fn get(&self, k: usize) -> Result<Entry, ReadError> {
        match &self.part {
            Part::Memory(v) => Ok(v[k]),
            Part::File(f) => f.get_at(k, self.first),
        }
    }
}

/// The positions of a scavenged segment that still have their events, as offsets from its
/// first, increasing: entry `k` of its file is the event at offset `slot`s `k`-th.
pub(crate) struct Slots(Box<[u32]>);

impl Slots {
    /// Offsets `offsets`, which must be strictly increasing.
    pub fn new(offsets: Box<[u32]>) -> Slots {
        debug_assert!(offsets.windows(2).all(|w| w[0] < w[1]));
        Slots(offsets)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The entry number of offset `offset`, `None` when it has none.
    fn slot(&self, offset: usize) -> Option<usize> {
        let offset = u32::try_from(offset).ok()?;
        self.0.binary_search(&offset).ok()
    }

    /// The offset of entry `k`.
    fn offset(&self, k: usize) -> usize {
        self.0[k] as usize
    }

    /// The number of the first entry at or after offset `offset`.
    fn first_at_or_after(&self, offset: usize) -> usize {
        self.0.partition_point(|&o| (o as usize) < offset)
    }

    fn memory_bytes(&self) -> usize {
        self.0.len() * 4
    }
}

/// A segment's entries taken out of memory, to be dropped after the state lock is released.
pub(crate) struct Released(#[allow(dead_code)] Option<Vec<Entry>>);

/// Every position's entry: segment by segment, in memory or in the segment's index file.
pub(crate) struct Entries {
    chunks: Vec<Chunk>,
    len: u64,
    /// Whether any chunk is a scavenged segment's (some positions without an entry): until
    /// then, asking whether a position was removed costs nothing.
    has_removed: bool,
    /// When the last entry was recorded (`i64::MIN` while empty): known without a read.
    last_at_us: i64,
}

impl Default for Entries {
    fn default() -> Self {
        Entries {
            chunks: Vec::new(),
            len: 0,
            has_removed: false,
            last_at_us: i64::MIN,
        }
    }
}

impl Entries {
    /// Positions held: the next position.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The entry of position `p`, which must be held. May read its index file: under the
    /// state lock, prefer [`defer`](Self::defer).
    pub fn get(&self, p: u64) -> Result<Entry, ReadError> {
        let c = self.chunk(p);
        c.get((p - c.first) as usize)
    }

    /// The entries of up to `max` positions from `p` on (`forward`) or down to `p`, within
    /// `p`'s segment, with the first's position: one read of its file at most, from
    /// `blocks` (which, lacking them, read [`WALK_READAHEAD_ENTRIES`] from there in the
    /// walk's direction). An entry that fails its check is `None` (read it with
    /// [`get`](Self::get) for the error): the caller may not need it.
    pub fn run(
        &self,
        p: u64,
        max: usize,
        forward: bool,
        blocks: &Blocks,
    ) -> Result<(u64, Vec<Option<Entry>>), ReadError> {
        let c = self.chunk(p);
        let end = c.first + c.len() as u64;
        let max = max.max(1) as u64;
        let (lo, hi) = if forward {
            (p, p.saturating_add(max).min(end))
        } else {
            ((p + 1).saturating_sub(max).max(c.first), p + 1)
        };
        let (k, n) = ((lo - c.first) as usize, (hi - lo) as usize);
        let run = match &c.part {
            Part::Memory(v) => v[k..k + n].iter().copied().map(Some).collect(),
            Part::File(f) => {
                // Lacking them, read the entries a walk in this direction reads next too.
                let reach = n.max(WALK_READAHEAD_ENTRIES);
                let fetch = match forward {
                    true => k..(k + reach).min(f.span),
                    false => (k + n).saturating_sub(reach)..k + n,
                };
                EntryFile::run_at(f, k, n, fetch, c.first, blocks)?
            }
        };
        Ok((lo, run))
    }

    /// When the last entry was recorded, `i64::MIN` while there is none. Reads nothing.
    pub fn last_recorded_at_us(&self) -> i64 {
        self.last_at_us
    }

    /// Adds the entry of the next position, stored in segment `segment_no`.
    pub fn push(&mut self, segment_no: u64, e: Entry) {
        match self.chunks.last_mut() {
            Some(Chunk {
                segment_no: s,
                part: Part::Memory(v),
                ..
            }) if *s == segment_no => v.push(e),
            _ => self.chunks.push(Chunk {
                segment_no,
                first: self.len,
                first_at_us: e.recorded_at_us,
                part: Part::Memory(vec![e]),
            }),
        }
        self.len += 1;
        self.last_at_us = e.recorded_at_us;
    }

    /// Adds a sealed segment's entries, from its file, as the next positions; `times` are
    /// the times of its first and last entries (`None`: a scavenge removed all its events).
    /// A file covering no position adds nothing.
    pub fn push_file(&mut self, segment_no: u64, file: Arc<EntryFile>, times: Option<(i64, i64)>) {
        let n = file.span as u64;
        if n == 0 {
            return;
        }
        // A chunk without entries takes the time of the one before: times never decrease.
        let first_at_us = match times {
            Some((first, _)) => first,
            None => self.chunks.last().map_or(i64::MIN, |c| c.first_at_us),
        };
        self.has_removed |= file.slots.is_some();
        self.chunks.push(Chunk {
            segment_no,
            first: self.len,
            first_at_us,
            part: Part::File(file),
        });
        self.len += n;
        if let Some((_, last_at_us)) = times {
            self.last_at_us = last_at_us;
        }
    }

    /// Swaps the entries of sealed segment `segment_no`, positions `first..`, held in memory,
    /// for its file, which must hold as many. Nothing changes when they are not in memory.
    /// Drop what it returns after releasing the state lock.
    pub fn move_to_file(&mut self, segment_no: u64, first: u64, file: Arc<EntryFile>) -> Released {
        let k = self.chunks.partition_point(|c| c.first < first);
        let Some(c) = self.chunks.get_mut(k) else {
            return Released(None);
        };
        match &c.part {
            Part::Memory(v)
                if c.segment_no == segment_no
                    && c.first == first
                    && file.slots.is_none()
                    && v.len() == file.len =>
            {
                match std::mem::replace(&mut c.part, Part::File(file)) {
                    Part::Memory(v) => Released(Some(v)),
                    Part::File(_) => unreachable!("matched as memory above"),
                }
            }
            _ => Released(None),
        }
    }

    /// The segment holding position `p` (which must be held).
    pub fn segment_of(&self, p: u64) -> u64 {
        self.chunk(p).segment_no
    }

    /// The segment holding position `p` (which must be held), when its entries are read from
    /// its index file.
    pub fn file_segment_of(&self, p: u64) -> Option<u64> {
        let c = self.chunk(p);
        matches!(c.part, Part::File(_)).then_some(c.segment_no)
    }

    /// Whether sealed segment `segment_no`'s entries (positions from `first`) are read from
    /// its index file.
    pub fn in_file(&self, segment_no: u64, first: u64) -> bool {
        let k = self.chunks.partition_point(|c| c.first < first);
        self.chunks.get(k).is_some_and(|c| {
            c.segment_no == segment_no && c.first == first && matches!(c.part, Part::File(_))
        })
    }

    /// Swaps the file of sealed segment `segment_no` (positions from `first`) for the one a
    /// scavenge wrote, which covers the same positions; `first_at_us`: when its first entry
    /// was recorded (`None`: it has none). Nothing changes when its entries are not read from
    /// a file. Drop what it returns after releasing the state lock.
    pub fn replace_file(
        &mut self,
        segment_no: u64,
        first: u64,
        file: Arc<EntryFile>,
        first_at_us: Option<i64>,
    ) -> Option<Arc<EntryFile>> {
        let k = self.chunks.partition_point(|c| c.first < first);
        // Its first entry's time stands for the chunk's (see `position_at`); one without
        // entries takes the time of the one before.
        let before = k
            .checked_sub(1)
            .map_or(i64::MIN, |j| self.chunks[j].first_at_us);
        let c = self.chunks.get_mut(k)?;
        match &c.part {
            Part::File(old)
                if c.segment_no == segment_no && c.first == first && old.span == file.span =>
            {
                let t = first_at_us.unwrap_or(before);
                c.first_at_us = t;
                self.has_removed |= file.slots.is_some();
                let old = match std::mem::replace(&mut c.part, Part::File(file)) {
                    Part::File(old) => old,
                    Part::Memory(_) => unreachable!("matched as a file above"),
                };
                // The chunks without entries right after it take its time too: times stay
                // in order, whichever chunk a scavenge empties or thins first.
                for c in self.chunks[k + 1..].iter_mut() {
                    match &c.part {
                        Part::File(f) if f.len == 0 => c.first_at_us = t,
                        _ => break,
                    }
                }
                Some(old)
            }
            _ => None,
        }
    }

    /// Where position `p`'s entry is read: now, when it is in memory, or (`None`) from the
    /// file `files` is given, once the state lock is released ([`Deferred`]).
    fn entry_or_defer(&self, p: u64, files: &mut Vec<(u64, Arc<EntryFile>)>) -> Option<Entry> {
        let c = self.chunk(p);
        match &c.part {
            Part::Memory(v) => Some(v[(p - c.first) as usize]),
            // Known without reading the file: a position whose event a scavenge removed.
            Part::File(f) if f.removes((p - c.first) as usize) => Some(Entry::REMOVED),
            Part::File(f) => {
                if !files
                    .iter()
                    .rev()
                    .take(2)
                    .any(|(first, _)| *first == c.first)
                {
                    files.push((c.first, f.clone()));
                }
                None
            }
        }
    }

    fn chunk(&self, p: u64) -> &Chunk {
        assert!(p < self.len, "position {p} is not indexed");
        let last = self.chunks.last().expect("a position is held");
        if p >= last.first {
            last
        } else {
            &self.chunks[self.chunks.partition_point(|c| c.first <= p) - 1]
        }
    }

    /// The entries of `positions`, read where they lie in memory, and deferred (to be read
    /// after the state lock is released) where they lie in files: collecting them under the
    /// state lock does not wait for the disk.
    pub fn defer(&self, positions: impl IntoIterator<Item = u64>) -> Deferred {
        let mut d = Deferred::default();
        for p in positions {
            d.push(self, p);
        }
        d
    }

    /// The last position recorded at or before `ts_us`: found in memory, or in one file
    /// after the state lock is released.
    pub fn position_at(&self, ts_us: i64) -> PositionAt {
        let Some(k) = self
            .chunks
            .partition_point(|c| c.first_at_us <= ts_us)
            .checked_sub(1)
        else {
            return PositionAt::Found(None);
        };
        // A scavenged segment may have no event left: the answer is in one before it.
        let Some(k) = (0..=k).rev().find(|&j| match &self.chunks[j].part {
            Part::File(f) => f.len > 0,
            Part::Memory(v) => !v.is_empty(),
        }) else {
            return PositionAt::Found(None);
        };
        let c = &self.chunks[k];
        match &c.part {
            Part::Memory(v) => {
                let n = v.partition_point(|e| e.recorded_at_us <= ts_us) as u64;
                PositionAt::Found(Some(c.first + n - 1))
            }
            Part::File(f) => PositionAt::InFile(c.first, f.clone()),
        }
    }

    /// Whether a scavenge removed position `p`'s event (which must be held). Reads nothing.
    pub fn is_removed(&self, p: u64) -> bool {
        if !self.has_removed {
            return false;
        }
        let c = self.chunk(p);
        match &c.part {
            Part::File(f) => f.removes((p - c.first) as usize),
            Part::Memory(_) => false,
        }
    }

    /// Every entry, in position order.
    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<Entry> {
        (0..self.len)
            .map(|p| self.get(p).expect("a sound entry"))
            .collect()
    }

    /// Gives back the memory the lists of entries in memory grew beyond what they hold.
    pub fn shrink_to_fit(&mut self) {
        self.chunks.shrink_to_fit();
        for c in &mut self.chunks {
            if let Part::Memory(v) = &mut c.part {
                v.shrink_to_fit();
            }
        }
    }

    /// Entries held in memory.
    pub fn in_memory_count(&self) -> u64 {
        self.chunks
            .iter()
            .filter(|c| matches!(c.part, Part::Memory(_)))
            .map(|c| c.len() as u64)
            .sum()
    }

    /// Sealed segments whose entries are read from their index files.
    pub fn file_count(&self) -> u64 {
        self.chunks
            .iter()
            .filter(|c| matches!(c.part, Part::File(_)))
            .count() as u64
    }

    /// Bytes of memory the entries take, roughly: 24 per entry in memory, the files' tables.
    pub fn memory_bytes(&self) -> u64 {
        let chunks: usize = self
            .chunks
            .iter()
            .map(|c| match &c.part {
                Part::Memory(v) => v.capacity() * std::mem::size_of::<Entry>(),
                Part::File(f) => f.memory_bytes(),
            })
            .sum();
        (chunks + self.chunks.capacity() * std::mem::size_of::<Chunk>()) as u64
    }
}

/// Entries of positions read under the state lock where they were in memory, and to be read
/// from their index files ([`Deferred::read`]) once it is released.
#[derive(Default)]
pub(crate) struct Deferred {
    items: Vec<(u64, Option<Entry>)>,
    /// The files holding the deferred ones, by first position.
    files: Vec<(u64, Arc<EntryFile>)>,
}

impl Deferred {
    /// Adds position `p`.
    pub fn push(&mut self, entries: &Entries, p: u64) {
        let e = entries.entry_or_defer(p, &mut self.files);
        self.items.push((p, e));
    }

    /// Positions added.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no position was added.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether any entry is still to be read from a file.
    pub fn reads_files(&self) -> bool {
        !self.files.is_empty()
    }

    /// Every position with its entry, in the order added, but for those a scavenge removed
    /// (readers could not see their events: they are left out); reads the deferred ones from
    /// their files (page faults on their maps, or `pread`s: one per run of consecutive
    /// positions).
    pub fn read(mut self) -> Result<Vec<(u64, Entry)>, ReadError> {
        self.files.sort_unstable_by_key(|(first, _)| *first);
        // The file holding deferred position `p`, and its first position (`entry_or_defer`
        // added it, so one starts at or before `p`).
        let files = &self.files;
        let file_of = |p: u64| {
            let (first, f) = &files[files.partition_point(|(first, _)| *first <= p) - 1];
            (*first, f)
        };
        let items = &self.items;
        let mut out = Vec::with_capacity(items.len());
        let mut i = 0;
        while i < items.len() {
            let (p, e) = items[i];
            if let Some(e) = e {
                if !e.is_removed() {
                    out.push((p, e));
                }
                i += 1;
                continue;
            }
            let (first, f) = file_of(p);
            let in_file = first..first + f.span as u64;
            // The deferred positions after it in this file that go on by one, up or down.
            let deferred = |j: usize| {
                items
                    .get(j)
                    .filter(|(q, e)| e.is_none() && in_file.contains(q))
                    .map(|&(q, _)| q)
            };
            let up = deferred(i + 1) == p.checked_add(1);
            let next = |q: u64| {
                if up {
                    q.checked_add(1)
                } else {
                    q.checked_sub(1)
                }
            };
            let mut j = i + 1;
            while deferred(j).is_some() && deferred(j) == next(items[j - 1].0) {
                j += 1;
            }
            let lo = p.min(items[j - 1].0);
            let n = j - i;
            // Deferred positions have entries (those without were known under the lock), so
            // consecutive ones have consecutive entries, in a scavenged segment too.
            let k = f.slot((lo - first) as usize);
            let Some(k) = k.filter(|_| n > 1) else {
                // A position alone (a long stream's, among others'): read in place, with the
                // entry of a position a few ahead asked for, so that the waits for memory
                // of scattered entries overlap.
                if let Some(&(q, None)) = items.get(i + PREFETCH_AHEAD) {
                    let (first_q, file_q) = file_of(q);
                    file_q.prefetch_at((q - first_q) as usize);
                }
                for &(q, _) in &items[i..j] {
                    let e = f.get_at((q - first) as usize, first)?;
                    if !e.is_removed() {
                        out.push((q, e));
                    }
                }
                i = j;
                continue;
            };
            let run = EntryFile::run(f, k, n, k..k + n, first, &Blocks::direct())?;
            for &(q, _) in &items[i..j] {
                let e = match run[(q - lo) as usize] {
                    Some(e) => e,
                    None => f.get_at((q - first) as usize, first)?,
                };
                out.push((q, e));
            }
            i = j;
        }
        Ok(out)
    }
}

/// How many positions ahead a scattered read asks for the entry or record it will need (see
/// [`crate::io::prefetch`]).
pub(crate) const PREFETCH_AHEAD: usize = 8;

/// Where a time falls ([`Entries::position_at`]).
pub(crate) enum PositionAt {
    Found(Option<u64>),
    /// In the file whose first position is given: search it after releasing the state lock.
    InFile(u64, Arc<EntryFile>),
}

impl PositionAt {
    /// The last position recorded at or before `ts_us` (the time it was asked for).
    pub fn find(self, ts_us: i64) -> Result<Option<u64>, ReadError> {
        match self {
            PositionAt::Found(p) => Ok(p),
            PositionAt::InFile(first, f) => {
                let (mut lo, mut hi) = (0, f.len);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if f.get(mid, first)?.recorded_at_us <= ts_us {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                // The file's first entry was at or before `ts_us` when it was mapped.
                match lo.checked_sub(1) {
                    Some(k) => Ok(Some(first + f.offset_of(k) as u64)),
                    None => Err(f.corruption(
                        f.at,
                        Some(first),
                        "the first entry's time changed on disk after the file was checked",
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The entry the test files hold for position `p`, with the index's numbers.
    fn entry(p: u64) -> Entry {
        Entry {
            loc: 1000 + p,
            recorded_at_us: p as i64,
            stream: (p % 3) as u32 + 10,
            event_type: (p % 2) as u32 + 20,
        }
    }

    /// An index-like file in `dir` of `n` entries from position `first` (after an 8-byte
    /// header, before a 4-byte tail), opened mapped or not.
    fn file(dir: &Path, name: &str, first: u64, n: usize, map: bool) -> EntryFile {
        let at = 8;
        let mut bytes = vec![7u8; at];
        for p in first..first + n as u64 {
            bytes.extend_from_slice(&(1000 + p).to_le_bytes());
            bytes.extend_from_slice(&(p as i64).to_le_bytes());
            bytes.extend_from_slice(&((p % 3) as u32).to_le_bytes());
            bytes.extend_from_slice(&((p % 2) as u32).to_le_bytes());
            bytes.extend_from_slice(&[0u8; 16]);
        }
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let opened = Arc::new(File::open(&path).unwrap());
        let mut f = EntryFile::open(&opened, &path, &bytes, at, n, map).unwrap();
        f.set_names(vec![10, 11, 12].into(), vec![20, 21].into());
        f
    }

    /// Positions 0..18: files 0..5, 5..6 and 6..10, memory 10..13, a file 13..16, memory
    /// 16..18; returns the segments' bounds too.
    fn layout(dir: &Path, map: bool) -> (Entries, Vec<(u64, u64)>) {
        let mut entries = Entries::default();
        let mut bounds = Vec::new();
        let mut p = 0u64;
        let parts = [
            (5, true),
            (1, true),
            (4, true),
            (3, false),
            (3, true),
            (2, false),
        ];
        for (segment_no, (n, in_file)) in parts.into_iter().enumerate() {
            let segment_no = segment_no as u64;
            if in_file {
                let f = file(dir, &format!("{segment_no}.idx"), p, n, map);
                let times = (p as i64, (p + n as u64 - 1) as i64);
                entries.push_file(segment_no, Arc::new(f), Some(times));
            } else {
                for q in p..p + n as u64 {
                    entries.push(segment_no, entry(q));
                }
            }
            bounds.push((p, p + n as u64));
            p += n as u64;
        }
        (entries, bounds)
    }

    /// Runs stop at their segment's edges, forward and backward, for every length, read at
    /// once or in rounds of fetched bytes (with what they read ahead, as a walk under the
    /// state lock reads them).
    #[test]
    fn runs_stay_within_their_segment() {
        let dir = tempfile::tempdir().unwrap();
        for (map, fetched) in [(false, false), (true, false), (false, true), (true, true)] {
            let (entries, bounds) = layout(dir.path(), map);
            assert_eq!(entries.len(), 18);
            let blocks = if fetched {
                Blocks::fetched_in_rounds()
            } else {
                Blocks::direct()
            };
            let run = |p, max, forward| blocks.run(|| (), |_, b| entries.run(p, max, forward, b));
            for p in 0..18u64 {
                let &(first, end) = bounds.iter().find(|(f, e)| (*f..*e).contains(&p)).unwrap();
                for max in 0..8usize {
                    let m = max.max(1) as u64;
                    let want =
                        |r: std::ops::Range<u64>| r.map(|q| Some(entry(q))).collect::<Vec<_>>();
                    let (lo, got) = run(p, max, true).unwrap();
                    assert_eq!(
                        (lo, got),
                        (p, want(p..(p + m).min(end))),
                        "forward {p} {max} fetched {fetched}"
                    );
                    let (lo, got) = run(p, max, false).unwrap();
                    let from = (p + 1).saturating_sub(m).max(first);
                    assert_eq!(
                        (lo, got),
                        (from, want(from..p + 1)),
                        "backward {p} {max} fetched {fetched}"
                    );
                }
            }
            assert_eq!(blocks.rounds() > 0, fetched, "map {map}");
        }
    }

    proptest! {
        /// Deferred reads give each position its entry, in the order asked, whatever the
        /// runs (up, down, across files and memory, single, repeated).
        #[test]
        fn deferred_reads_give_each_position_its_entry(
            pieces in proptest::collection::vec((0u64..18, 1usize..8, any::<bool>()), 0..12),
            singles in proptest::collection::vec(0u64..18, 0..6),
            map in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (entries, _) = layout(dir.path(), map);
            let mut positions = Vec::new();
            for (start, n, up) in pieces {
                for k in 0..n as u64 {
                    let q = if up { start + k } else { start.wrapping_sub(k) };
                    if q < 18 {
                        positions.push(q);
                    }
                }
            }
            positions.extend(singles);
            let read = entries.defer(positions.iter().copied()).read().unwrap();
            let want: Vec<(u64, Entry)> = positions.iter().map(|&p| (p, entry(p))).collect();
            prop_assert_eq!(read, want);
        }
    }
}
