//! The positions of one category or event type, segment by segment: read from the postings
//! of each sealed segment's index file (the name's positions in that segment, as u32 offsets
//! from its first position, in increasing order; see `docs/format.md`), or held in memory
//! ([`PositionList`]) for the open segment and for sealed segments whose file is not written
//! yet. Memory keeps, per (name, file), a few words: where its postings start, how many
//! there are, and the first and last, so that the part holding a position is found without a
//! read, and the first posting of each block of [`FILE_BLOCK`] (its fences), so that the
//! block holding it is too. When a segment's file is written, its list is swapped for the file's postings under
//! the state lock, and dropped after it.
//!
//! Reads go through a [`Reader`], which keeps the block of postings it read last
//! ([`FILE_BLOCK`] of them, 4 KiB): a walk along a list reads each block once. Where the
//! blocks come from is a [`Blocks`]: the files, at once, or the blocks read before, so that a
//! walk under the state lock never waits for the disk (see [`Blocks::fetched`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use strata_core::ReadError;

use crate::entries::EntryFile;
use crate::limits::{WALK_FETCH_BYTES_MAX, WALK_FETCH_ROUNDS_MAX, WALK_READAHEAD_BLOCKS};
use crate::positions::{self, PositionList};

/// Postings read from a file at once (4 KiB).
pub(crate) const FILE_BLOCK: u64 = 1024;

/// Where reads of a walk find the bytes of index files it needs (blocks of postings, runs of
/// entries): in the files, read at once ([`Blocks::direct`]), or among bytes read before
/// ([`Blocks::fetched`]).
///
/// A `$all` walk holds the state lock, which appends wait on to publish; reading a file
/// there could make them wait for the disk. So the walk runs with fetched bytes: a range it
/// lacks is noted and the walk fails; the caller releases the lock, reads the ranges noted
/// and runs the walk again, until it finds every range it needs ([`Blocks::run`]). The files
/// are sealed segments' index files: they never change, so what one round read holds in the
/// next. Past [`WALK_FETCH_ROUNDS_MAX`] rounds or [`WALK_FETCH_BYTES_MAX`] bytes, the walk
/// reads what it still lacks at once, under the lock.
pub(crate) struct Blocks {
    fetched: Option<RefCell<Fetched>>,
    /// Whether a range not fetched yet is read at once when it is in memory (the page cache,
    /// or resident pages of a map): reading it then waits for no disk. Tests turn it off, to
    /// read in rounds whatever the cache holds.
    in_memory_at_once: bool,
    /// Called before each round of reading (tests: to see the lock is free then).
    #[cfg(test)]
    before_fetch: Option<Box<dyn Fn()>>,
}

/// Bytes of one file read, by offset.
type Ranges = BTreeMap<usize, Vec<u8>>;

#[derive(Default)]
struct Fetched {
    /// Bytes read, per file (by its address, with the file: held, no other file can take its
    /// address while these last), by offset.
    files: HashMap<usize, (Arc<EntryFile>, Ranges)>,
    /// Ranges a walk lacked: the file, the byte offset and length (with what to read ahead).
    wanted: Vec<(Arc<EntryFile>, usize, usize)>,
    bytes: usize,
    rounds: usize,
    /// Past the bounds: bytes are read at once.
    direct: bool,
}

/// The key of `file` among fetched ranges.
fn file_key(file: &Arc<EntryFile>) -> usize {
    Arc::as_ptr(file) as usize
}

impl Blocks {
    /// Bytes read from the files at once.
    pub fn direct() -> Blocks {
        Blocks {
            fetched: None,
            in_memory_at_once: false,
            #[cfg(test)]
            before_fetch: None,
        }
    }

    /// Bytes read before, between the rounds of [`run`](Self::run), or at once when they are
    /// in memory (reading them waits for no disk).
    pub fn fetched() -> Blocks {
        Blocks {
            fetched: Some(RefCell::new(Fetched::default())),
            in_memory_at_once: true,
            #[cfg(test)]
            before_fetch: None,
        }
    }

    /// Bytes read before, between the rounds of [`run`](Self::run), even those in memory.
    #[cfg(test)]
    pub fn fetched_in_rounds() -> Blocks {
        Blocks {
            in_memory_at_once: false,
            ..Blocks::fetched()
        }
    }

    /// Runs `walk` with the guard `lock` returns, until the walk has found every range it
    /// needs; between runs the guard is dropped and the ranges the walk lacked are read.
    pub fn run<G, T>(
        &self,
        lock: impl Fn() -> G,
        mut walk: impl FnMut(&G, &Blocks) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        loop {
            let result = {
                let guard = lock();
                walk(&guard, self)
            };
            if !self.fetch_wanted()? {
                return result;
            }
        }
    }

    /// Rounds of reading so far.
    #[cfg(test)]
    pub fn rounds(&self) -> usize {
        self.fetched.as_ref().map_or(0, |f| f.borrow().rounds)
    }

    /// Reads the ranges the last walk lacked. `false`: it lacked none.
    fn fetch_wanted(&self) -> Result<bool, ReadError> {
        let Some(fetched) = &self.fetched else {
            return Ok(false);
        };
        let wanted = std::mem::take(&mut fetched.borrow_mut().wanted);
        if wanted.is_empty() {
            return Ok(false);
        }
        #[cfg(test)]
        if let Some(f) = &self.before_fetch {
            f();
        }
        let mut read = Vec::with_capacity(wanted.len());
        for (file, at, len) in wanted {
            let bytes = file.read_vec(at, len)?;
            read.push((file, at, bytes));
        }
        let mut f = fetched.borrow_mut();
        for (file, at, bytes) in read {
            f.bytes += bytes.len();
            let ranges = &mut f
                .files
                .entry(file_key(&file))
                .or_insert_with(|| (file, BTreeMap::new()))
                .1;
            ranges.insert(at, bytes);
        }
        f.rounds += 1;
        if f.rounds >= WALK_FETCH_ROUNDS_MAX || f.bytes >= WALK_FETCH_BYTES_MAX {
            f.direct = true;
        }
        Ok(true)
    }

    /// `use_bytes` of the `len` bytes at `at` of `file`: read now, or fetched before (when
    /// not, the walk fails and the range `fetch` (offset, length), which holds them and
    /// lies in the file, is read before the next round).
    pub fn with_bytes<T>(
        &self,
        file: &Arc<EntryFile>,
        at: usize,
        len: usize,
        fetch: (usize, usize),
        use_bytes: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, ReadError> {
        debug_assert!(fetch.0 <= at && at + len <= fetch.0 + fetch.1);
        let Some(fetched) = &self.fetched else {
            return file.with_bytes(at, len, use_bytes);
        };
        let mut f = fetched.borrow_mut();
        if f.direct {
            drop(f);
            return file.with_bytes(at, len, use_bytes);
        }
        if let Some((_, ranges)) = f.files.get(&file_key(file)) {
            // Among the last few ranges starting at or before it (a range read ahead may
            // hold it, past one read later that starts after that one).
            let held = ranges
                .range(..=at)
                .rev()
                .take(4)
                .find_map(|(start, bytes)| bytes.get(at - start..at - start + len));
            if let Some(b) = held {
                return Ok(use_bytes(b));
            }
            debug_assert!(
                ranges.get(&fetch.0).is_none_or(|b| b.len() < fetch.1),
                "a range read before is lacked again: the walk would not get further"
            );
        }
        if self.in_memory_at_once {
            let mut buf = Vec::new();
            if let Some(b) = file.bytes_in_memory(at, len, &mut buf)? {
                return Ok(use_bytes(b));
            }
        }
        if !f
            .wanted
            .iter()
            .any(|(w, a, _)| Arc::ptr_eq(w, file) && *a == fetch.0)
        {
            f.wanted.push((file.clone(), fetch.0, fetch.1));
        }
        Err(ReadError::Unavailable(
            ("a block of an index file is being read".to_owned()).into(),
        ))
    }

    /// `n` postings from local index `start` of the part `f` of `count` postings, appended
    /// to `out`. Lacking them, the postings `fetch` (local indexes, a range holding these,
    /// within the part) are read.
    fn read(
        &self,
        f: &FilePostings,
        start: u64,
        n: usize,
        fetch: std::ops::Range<u64>,
        out: &mut Vec<u32>,
    ) -> Result<(), ReadError> {
        let at = f.at + start as usize * 4;
        let fetch = (
            f.at + fetch.start as usize * 4,
            (fetch.end - fetch.start) as usize * 4,
        );
        self.with_bytes(&f.file, at, n * 4, fetch, |b| {
            out.extend(
                b.chunks_exact(4)
                    .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])),
            );
        })
    }
}

/// A name's postings in one sealed segment's index file.
struct FilePostings {
    file: Arc<EntryFile>,
    /// Byte offset of the first posting in the file.
    at: usize,
    /// The segment's first position: each posting is a position less this.
    base: u64,
    /// The first posting of each block (4 bytes per [`FILE_BLOCK`] postings), read with the
    /// file's checked bytes: the block that may hold a position is found without a read.
    fences: Box<[u32]>,
}

enum Held {
    File(FilePostings),
    /// Boxed: most parts are in files once a store has grown.
    Memory(Box<PositionList>),
}

/// A name's positions in one segment.
struct Part {
    segment_no: u64,
    /// Its first and last positions.
    lo: u64,
    hi: u64,
    /// Positions in the parts before it.
    before: u64,
    count: u64,
    held: Held,
}

impl Part {
    /// The block of its postings from local index `start` (at most [`FILE_BLOCK`]), as
    /// positions, checked: increasing, within the segment, between the part's first and last.
    fn file_block(
        &self,
        f: &FilePostings,
        start: u64,
        blocks: &Blocks,
    ) -> Result<Vec<u64>, ReadError> {
        let n = FILE_BLOCK.min(self.count - start) as usize;
        let at = f.at + start as usize * 4;
        let mut raw = Vec::with_capacity(n);
        // Lacking it, read the blocks a walk reads next too: after it going forward, before
        // it going backward (a reader does not know which way it goes: both).
        let reach = FILE_BLOCK * (WALK_READAHEAD_BLOCKS as u64 - 1);
        let fetch = start.saturating_sub(reach)..(start + FILE_BLOCK + reach).min(self.count);
        blocks.read(f, start, n, fetch, &mut raw)?;
        // Postings are offsets from the segment's first position, within the positions it
        // covers (its events, and those a scavenge removed).
        let segment_len = f.file.span() as u64;
        let mut out = Vec::with_capacity(n);
        for v in raw {
            let v = u64::from(v);
            let p = f.base + v;
            if v >= segment_len
                || p < self.lo
                || p > self.hi
                || out.last().is_some_and(|&last| p <= last)
            {
                return Err(f.file.corruption(
                    at,
                    None,
                    "its postings are out of order or outside the segment: the file changed on disk after it was checked",
                ));
            }
            out.push(p);
        }
        let fence = f.fences.get((start / FILE_BLOCK) as usize);
        let first_or_last = (start == 0 && out.first() != Some(&self.lo))
            || fence.map(|&v| f.base + u64::from(v)) != out.first().copied()
            || (start + n as u64 == self.count && out.last() != Some(&self.hi));
        if first_or_last {
            return Err(f.file.corruption(
                at,
                None,
                "its postings do not start or end where they did when it was opened: the file changed on disk",
            ));
        }
        Ok(out)
    }

    /// The local index of the first posting of the file block that holds `p` if the part
    /// does (`lo <= p`): the last block whose first posting is at or below `p`, found by a
    /// binary search over the fences, in memory.
    fn file_block_start(&self, f: &FilePostings, p: u64) -> u64 {
        let k = f.fences.partition_point(|&v| f.base + u64::from(v) <= p);
        k.saturating_sub(1) as u64 * FILE_BLOCK
    }

    /// How many of its positions are below `p`: for a file, the block that may hold `p`
    /// ([`file_block_start`](Self::file_block_start)) read.
    fn count_below(&self, p: u64, blocks: &Blocks) -> Result<u64, ReadError> {
        if p <= self.lo {
            return Ok(0);
        }
        if p > self.hi {
            return Ok(self.count);
        }
        match &self.held {
            Held::Memory(list) => Ok(list.count_below(p)),
            Held::File(f) => {
                let start = self.file_block_start(f, p);
                let block = self.file_block(f, start, blocks)?;
                Ok(start + block.partition_point(|&q| q < p) as u64)
            }
        }
    }
}

/// What a sealed segment's list held in memory is swapped for: its file's postings.
pub(crate) struct Swap<'a> {
    pub segment_no: u64,
    pub file: &'a Arc<EntryFile>,
    /// The segment's first position.
    pub base: u64,
    /// Where the name's postings start in the file, and how many there are.
    pub at: usize,
    pub count: u64,
    /// Its first and last positions.
    pub lo: u64,
    pub hi: u64,
    /// The first posting of each of its blocks.
    pub fences: &'a [u32],
}

/// One name's positions: see the [module](self) docs.
#[derive(Default)]
pub(crate) struct Postings {
    parts: Vec<Part>,
}

impl Postings {
    /// Positions held.
    pub fn len(&self) -> u64 {
        self.parts.last().map_or(0, |p| p.before + p.count)
    }

    /// Adds `p`, stored in segment `segment_no`, held in memory. Positions must increase,
    /// and segments with them.
    pub fn push(&mut self, segment_no: u64, p: u64) {
        let before = self.len();
        match self.parts.last_mut() {
            Some(Part {
                segment_no: s,
                hi,
                count,
                held: Held::Memory(list),
                ..
            }) if *s == segment_no => {
                list.push(p);
                *hi = p;
                *count += 1;
            }
            _ => {
                let mut list = PositionList::default();
                list.push(p);
                self.parts.push(Part {
                    segment_no,
                    lo: p,
                    hi: p,
                    before,
                    count: 1,
                    held: Held::Memory(Box::new(list)),
                });
            }
        }
    }

    /// Adds a sealed segment's positions, read from its file's postings, as the next ones.
    pub fn push_file(&mut self, s: Swap<'_>) {
        if s.count == 0 {
            return;
        }
        debug_assert_eq!(
            s.fences.len() as u64,
            s.count.div_ceil(FILE_BLOCK),
            "one per block"
        );
        let before = self.len();
        self.parts.push(Part {
            segment_no: s.segment_no,
            lo: s.lo,
            hi: s.hi,
            before,
            count: s.count,
            held: Held::File(FilePostings {
                file: s.file.clone(),
                at: s.at,
                base: s.base,
                fences: s.fences.into(),
            }),
        });
    }

    /// Swaps the positions of segment `s.segment_no` held in memory for its file's postings,
    /// when they are the same count and span. Drop what it returns after releasing the state
    /// lock.
    pub fn move_to_file(&mut self, s: Swap<'_>) -> Option<PositionList> {
        debug_assert_eq!(
            s.fences.len() as u64,
            s.count.div_ceil(FILE_BLOCK),
            "one per block"
        );
        let k = self
            .parts
            .binary_search_by_key(&s.segment_no, |p| p.segment_no)
            .ok()?;
        let part = &mut self.parts[k];
        if !matches!(part.held, Held::Memory(_))
            || (part.count, part.lo, part.hi) != (s.count, s.lo, s.hi)
        {
            return None;
        }
        let file = Held::File(FilePostings {
            file: s.file.clone(),
            at: s.at,
            base: s.base,
            fences: s.fences.into(),
        });
        match std::mem::replace(&mut part.held, file) {
            Held::Memory(list) => Some(*list),
            Held::File(_) => None,
        }
    }

    /// Replaces the part of sealed segment `segment_no`, read from its index file, with
    /// `s`, the postings of the file a scavenge wrote for it (fewer positions), or removes
    /// it (`None`: the name has no event left there). Nothing changes when the segment has
    /// no part held in a file. Drop what it returns after releasing the state lock.
    pub fn replace_file(&mut self, segment_no: u64, s: Option<Swap<'_>>) -> Option<Arc<EntryFile>> {
        let k = self
            .parts
            .binary_search_by_key(&segment_no, |p| p.segment_no)
            .ok()?;
        if !matches!(self.parts[k].held, Held::File(_)) {
            return None;
        }
        let old = match s.filter(|s| s.count > 0) {
            Some(s) => {
                let part = &mut self.parts[k];
                (part.lo, part.hi, part.count) = (s.lo, s.hi, s.count);
                let file = Held::File(FilePostings {
                    file: s.file.clone(),
                    at: s.at,
                    base: s.base,
                    fences: s.fences.into(),
                });
                std::mem::replace(&mut part.held, file)
            }
            None => self.parts.remove(k).held,
        };
        let mut before = self.parts[..k].last().map_or(0, |p| p.before + p.count);
        for part in &mut self.parts[k..] {
            part.before = before;
            before += part.count;
        }
        match old {
            Held::File(f) => Some(f.file),
            Held::Memory(_) => None,
        }
    }

    /// How many positions are below `p`. May read one block of a file (from `blocks`).
    pub fn count_below(&self, p: u64, blocks: &Blocks) -> Result<u64, ReadError> {
        // The first part not wholly below p.
        let k = self.parts.partition_point(|part| part.hi < p);
        match self.parts.get(k) {
            None => Ok(self.len()),
            Some(part) => Ok(part.before + part.count_below(p, blocks)?),
        }
    }

    /// How many positions are at or below `p`.
    pub fn count_at_or_below(&self, p: u64, blocks: &Blocks) -> Result<u64, ReadError> {
        match p.checked_add(1) {
            Some(q) => self.count_below(q, blocks),
            None => Ok(self.len()),
        }
    }

    /// A reader of positions by index, which keeps the block it read last, reading blocks
    /// from `blocks`.
    pub fn reader<'a>(&'a self, blocks: &'a Blocks) -> Reader<'a> {
        Reader {
            postings: self,
            blocks,
            cached: Cached::None,
        }
    }

    /// Bytes of memory it takes: the lists in memory, and the parts.
    pub fn heap_bytes(&self) -> usize {
        let lists: usize = self
            .parts
            .iter()
            .map(|p| match &p.held {
                Held::Memory(list) => list.heap_bytes() + std::mem::size_of::<PositionList>(),
                Held::File(f) => f.fences.len() * 4,
            })
            .sum();
        lists + self.parts.capacity() * std::mem::size_of::<Part>()
    }

    /// Gives back the memory the lists and parts grew beyond what they hold.
    pub fn shrink_to_fit(&mut self) {
        self.parts.shrink_to_fit();
        for p in &mut self.parts {
            if let Held::Memory(list) = &mut p.held {
                list.shrink_to_fit();
            }
        }
    }
}

enum Cached<'a> {
    None,
    Memory {
        part: usize,
        reader: Box<positions::Reader<'a>>,
    },
    File {
        part: usize,
        /// The local index of the block's first posting, and the block's positions.
        start: u64,
        block: Vec<u64>,
    },
}

/// Reads [`Postings`] by index (or tests positions), keeping the block it read last:
/// reading indexes in order, forward or backward, reads each block once.
pub(crate) struct Reader<'a> {
    postings: &'a Postings,
    blocks: &'a Blocks,
    cached: Cached<'a>,
}

impl<'a> Reader<'a> {
    /// The `i`-th position, `None` past the end.
    pub fn get(&mut self, i: u64) -> Result<Option<u64>, ReadError> {
        if i >= self.postings.len() {
            return Ok(None);
        }
        let parts = &self.postings.parts;
        let k = parts.partition_point(|p| p.before <= i) - 1;
        self.at(k, i - parts[k].before).map(Some)
    }

    /// Whether `p` is one of the positions. Reads nothing while `p` lies within the block
    /// read last (as the positions of a walk mostly do), else at most a block.
    pub fn contains(&mut self, p: u64) -> Result<bool, ReadError> {
        if let Cached::File { block, .. } = &self.cached {
            if block.first().is_some_and(|&f| f <= p) && block.last() >= Some(&p) {
                return Ok(block.binary_search(&p).is_ok());
            }
        }
        let parts = &self.postings.parts;
        let Some(k) = parts.partition_point(|part| part.lo <= p).checked_sub(1) else {
            return Ok(false);
        };
        let part = &parts[k];
        if p > part.hi {
            return Ok(false);
        }
        match &part.held {
            Held::Memory(_) => {
                let reader = self.memory(k);
                Ok(reader.contains(p))
            }
            Held::File(f) => {
                let start = part.file_block_start(f, p);
                Ok(self.file_block(k, start)?.binary_search(&p).is_ok())
            }
        }
    }

    /// Position `j` of part `k`, which holds it.
    fn at(&mut self, k: usize, j: u64) -> Result<u64, ReadError> {
        match &self.postings.parts[k].held {
            Held::Memory(_) => Ok(self.memory(k).get(j).expect("the part holds it")),
            Held::File(_) => {
                let start = j / FILE_BLOCK * FILE_BLOCK;
                Ok(self.file_block(k, start)?[(j - start) as usize])
            }
        }
    }

    /// The block of file part `k` from local index `start`: the one read last, or read now.
    fn file_block(&mut self, k: usize, start: u64) -> Result<&[u64], ReadError> {
        let cached = matches!(&self.cached, Cached::File { part, start: s, .. } if *part == k && *s == start);
        if !cached {
            let part = &self.postings.parts[k];
            let Held::File(f) = &part.held else {
                unreachable!("part {k} is in a file");
            };
            self.cached = Cached::File {
                part: k,
                start,
                block: part.file_block(f, start, self.blocks)?,
            };
        }
        match &self.cached {
            Cached::File { block, .. } => Ok(block),
            _ => unreachable!("set above"),
        }
    }

    /// The reader of part `k`, held in memory.
    fn memory(&mut self, k: usize) -> &mut positions::Reader<'a> {
        let fresh = !matches!(&self.cached, Cached::Memory { part, .. } if *part == k);
        if fresh {
            let Held::Memory(list) = &self.postings.parts[k].held else {
                unreachable!("part {k} is held in memory");
            };
            self.cached = Cached::Memory {
                part: k,
                reader: Box::new(list.reader()),
            };
        }
        match &mut self.cached {
            Cached::Memory { reader, .. } => reader,
            _ => unreachable!("set above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A file holding, for each segment, its postings (at the returned offsets), opened as an
    /// index file's entries are, `len` entries long each (the postings' bound).
    fn file_of(
        segments: &[(u64, Vec<u32>)],
        map: bool,
    ) -> (tempfile::TempDir, Vec<(Arc<EntryFile>, usize)>) {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        for (k, (len, postings)) in segments.iter().enumerate() {
            let path = dir.path().join(format!("{k}.idx"));
            let mut bytes = vec![7u8; 16];
            let at = bytes.len();
            for p in postings {
                bytes.extend_from_slice(&p.to_le_bytes());
            }
            // Room for the entries the file says it has, then a tail.
            bytes.resize(
                bytes
                    .len()
                    .max(16 + *len as usize * crate::entries::ENTRY_BYTES),
                0,
            );
            bytes.extend_from_slice(&[1, 2, 3, 4]);
            std::fs::write(&path, &bytes).unwrap();
            let file = Arc::new(std::fs::File::open(&path).unwrap());
            let e = EntryFile::open(&file, &path, &bytes, 16, *len as usize, map).unwrap();
            out.push((Arc::new(e), at));
        }
        (dir, out)
    }

    /// One part of `n` postings, the even positions from 0, in a file (of `2n` events) whose
    /// postings `change` may alter after the fences are taken.
    fn even_postings(
        n: u32,
        change: impl FnOnce(&mut Vec<u32>),
        map: bool,
    ) -> (tempfile::TempDir, Postings) {
        let even: Vec<u32> = (0..n).map(|v| v * 2).collect();
        let mut stored = even.clone();
        change(&mut stored);
        let bounds = (0, u64::from(n - 1) * 2);
        one_part(
            u64::from(n) * 2,
            stored,
            n.into(),
            bounds,
            &fences(&even),
            map,
        )
    }

    /// One part of `count` postings, whose first and last are `bounds`, with `fences`, in a
    /// file (of a segment of `len` events) that holds `stored` as its postings.
    fn one_part(
        len: u64,
        stored: Vec<u32>,
        count: u64,
        (lo, hi): (u64, u64),
        fences: &[u32],
        map: bool,
    ) -> (tempfile::TempDir, Postings) {
        let (dir, files) = file_of(&[(len, stored)], map);
        let (file, at) = &files[0];
        let mut postings = Postings::default();
        postings.push_file(Swap {
            segment_no: 0,
            file,
            base: 0,
            at: *at,
            count,
            lo,
            hi,
            fences,
        });
        (dir, postings)
    }

    /// The first of each block of `local` (postings), as a file's reader keeps them.
    fn fences(local: &[u32]) -> Vec<u32> {
        local.iter().step_by(FILE_BLOCK as usize).copied().collect()
    }

    /// Segments of `len` positions each, the name's positions in each (local offsets), and
    /// where they are: 0 a file, 1 memory, 2 memory then swapped for the file.
    fn segments() -> impl Strategy<Value = Vec<(u64, Vec<u32>, u8)>> {
        prop::collection::vec(
            (1u64..3_000).prop_flat_map(|len| {
                (
                    Just(len),
                    prop::collection::btree_set(0..len as u32, 0..(len as usize).min(2_500)),
                    0u8..3,
                )
            }),
            1..6,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(len, set, held)| (len, set.into_iter().collect(), held))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Postings spread over files and memory answer every question as the plain list of
        /// their positions does, mapped or read with `pread`, read at once or in rounds of
        /// fetched blocks (as a walk under the state lock reads them).
        #[test]
        fn postings_read_as_their_positions(
            segs in segments(),
            map in any::<bool>(),
            fetched in any::<bool>(),
        ) {
            let files_in: Vec<(u64, Vec<u32>)> = segs.iter().map(|(l, p, _)| (*l, p.clone())).collect();
            let (_dir, files) = file_of(&files_in, map);
            let mut postings = Postings::default();
            let mut model = Vec::new();
            let mut base = 0u64;
            let mut swaps = Vec::new();
            for (k, (len, local, held)) in segs.iter().enumerate() {
                let positions: Vec<u64> = local.iter().map(|&v| base + u64::from(v)).collect();
                let (file, at) = &files[k];
                let fenced = fences(local);
                let swap = Swap {
                    segment_no: k as u64,
                    file,
                    base,
                    at: *at,
                    count: positions.len() as u64,
                    lo: positions.first().copied().unwrap_or(0),
                    hi: positions.last().copied().unwrap_or(0),
                    fences: &fenced,
                };
                if *held == 0 {
                    postings.push_file(swap);
                } else {
                    for &p in &positions {
                        postings.push(k as u64, p);
                    }
                    if *held == 2 && !positions.is_empty() {
                        swaps.push(k);
                    }
                }
                model.extend(positions);
                base += len;
            }
            let mut base = 0u64;
            for (k, (len, local, _)) in segs.iter().enumerate() {
                if swaps.contains(&k) {
                    let (file, at) = &files[k];
                    let lo = base + u64::from(local[0]);
                    let hi = base + u64::from(*local.last().unwrap());
                    let fenced = fences(local);
                    let swap = |count: u64| Swap { segment_no: k as u64, file, base, at: *at, count, lo, hi, fences: &fenced };
                    // A count that does not match leaves the list in memory.
                    prop_assert!(postings.move_to_file(swap(local.len() as u64 + 1)).is_none());
                    let released = postings.move_to_file(swap(local.len() as u64));
                    prop_assert_eq!(released.map(|l| l.len()), Some(local.len() as u64));
                    prop_assert!(postings.move_to_file(swap(local.len() as u64)).is_none(), "swapped once");
                }
                base += len;
            }
            prop_assert_eq!(postings.len(), model.len() as u64);
            let blocks = if fetched { Blocks::fetched_in_rounds() } else { Blocks::direct() };
            // Each question in rounds until every block it needs was fetched.
            // (Counts and tests come back as `Some`, as the readers' positions do.)
            let ask = |f: &mut dyn FnMut() -> Result<Option<u64>, ReadError>| {
                blocks.run(|| (), |_, _| f())
            };
            let mut forward = postings.reader(&blocks);
            for (i, &p) in model.iter().enumerate() {
                prop_assert_eq!(ask(&mut || forward.get(i as u64)).unwrap(), Some(p));
            }
            prop_assert_eq!(ask(&mut || forward.get(model.len() as u64)).unwrap(), None);
            let mut backward = postings.reader(&blocks);
            for (i, &p) in model.iter().enumerate().rev() {
                prop_assert_eq!(ask(&mut || backward.get(i as u64)).unwrap(), Some(p));
            }
            let mut tester = postings.reader(&blocks);
            for p in 0..base + 2 {
                let below = model.partition_point(|&q| q < p) as u64;
                let count = ask(&mut || postings.count_below(p, &blocks).map(Some)).unwrap();
                prop_assert_eq!(count, Some(below), "below {}", p);
                prop_assert_eq!(
                    ask(&mut || postings.count_at_or_below(p, &blocks).map(Some)).unwrap(),
                    Some(model.partition_point(|&q| q <= p) as u64)
                );
                let held = ask(&mut || tester.contains(p).map(|h| Some(u64::from(h)))).unwrap() == Some(1);
                prop_assert_eq!(held, model.binary_search(&p).is_ok(), "contains {}", p);
            }
            // And tested from the top down, with a fresh reader.
            let mut tester = postings.reader(&blocks);
            for p in (0..base + 2).rev().step_by(3) {
                let held = ask(&mut || tester.contains(p).map(|h| Some(u64::from(h)))).unwrap() == Some(1);
                prop_assert_eq!(held, model.binary_search(&p).is_ok());
            }
            // Fetched, the files' blocks were read in rounds, not at once.
            let in_files = segs.iter().any(|(_, local, held)| *held != 1 && !local.is_empty());
            prop_assert_eq!(blocks.rounds() > 0, fetched && in_files);
        }
    }

    /// A posting the file holds out of order, or outside its segment, is corruption when
    /// read, not a wrong answer.
    #[test]
    fn postings_changed_on_disk_are_corruption() {
        for map in [false, true] {
            for bad in [vec![3u32, 2, 9], vec![1, 2, 50]] {
                let (_dir, postings) = one_part(40, bad, 3, (3, 9), &[3], map);
                let direct = Blocks::direct();
                let mut r = postings.reader(&direct);
                assert!(
                    matches!(r.get(1), Err(ReadError::Corruption(_))),
                    "map {map}"
                );
                assert!(
                    matches!(
                        postings.count_below(5, &direct),
                        Err(ReadError::Corruption(_))
                    ),
                    "map {map}"
                );
                // Fetched in rounds, the same.
                let fetched = Blocks::fetched_in_rounds();
                let got = fetched.run(|| (), |_, b| postings.reader(b).get(1));
                assert!(matches!(got, Err(ReadError::Corruption(_))), "map {map}");
            }
        }
    }

    /// A walk in rounds reads the blocks it lacked with its lock released: appends, which
    /// wait on that lock to publish, never wait for the disk on its account. Each round
    /// reads up to [`WALK_READAHEAD_BLOCKS`] blocks, so a walk along 20 blocks takes 3.
    #[test]
    fn a_walk_reads_the_blocks_it_lacks_without_its_lock() {
        let n = 20 * FILE_BLOCK as u32;
        for map in [false, true] {
            let (_dir, postings) = even_postings(n, |_| {}, map);
            let lock = Arc::new(parking_lot::RwLock::new(()));
            let free = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut blocks = Blocks::fetched_in_rounds();
            let (l, f) = (lock.clone(), free.clone());
            blocks.before_fetch = Some(Box::new(move || {
                assert!(
                    l.try_write().is_some(),
                    "the lock is held while blocks are read"
                );
                f.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }));
            // Every position in order, under the lock, in rounds.
            let walk = |blocks: &Blocks| {
                let every = |_: &_, b: &Blocks| {
                    let mut r = postings.reader(b);
                    (0..u64::from(n))
                        .map(|i| r.get(i))
                        .collect::<Result<Vec<_>, _>>()
                };
                blocks.run(|| lock.read(), every).unwrap()
            };
            let want: Vec<_> = (0..u64::from(n)).map(|v| Some(v * 2)).collect();
            assert_eq!(walk(&blocks), want);
            assert_eq!(blocks.rounds(), 3, "map {map}");
            assert_eq!(free.load(std::sync::atomic::Ordering::Relaxed), 3);
            // The file was just written: its blocks are in the page cache, and a walk that
            // may read what is in memory at once reads them in its first run.
            let at_once = Blocks::fetched();
            assert_eq!(walk(&at_once), want);
            assert_eq!(at_once.rounds(), 0, "map {map}: read from memory at once");
        }
    }

    /// A walk backward along a list reads what it lacks with what it reads next, as a walk
    /// forward does: 20 cold blocks take about as many rounds either way.
    #[test]
    fn a_backward_walk_reads_ahead_in_its_direction() {
        let n = 20 * FILE_BLOCK as u32;
        for map in [false, true] {
            let (_dir, postings) = even_postings(n, |_| {}, map);
            let walk = |forward: bool| {
                let blocks = Blocks::fetched_in_rounds();
                let got = blocks
                    .run(
                        || (),
                        |_, b| {
                            let mut r = postings.reader(b);
                            let mut out = Vec::new();
                            for i in 0..u64::from(n) {
                                let i = if forward { i } else { u64::from(n) - 1 - i };
                                out.push(r.get(i)?);
                            }
                            Ok(out)
                        },
                    )
                    .unwrap();
                assert_eq!(got.len(), n as usize);
                blocks.rounds()
            };
            let (fw, bw) = (walk(true), walk(false));
            assert!(
                bw <= fw + 1,
                "map {map}: forward {fw} rounds, backward {bw}"
            );
        }
    }

    /// A block past the first whose first posting is not its fence (the file changed on
    /// disk, still in order and inside the segment) is corruption when read.
    #[test]
    fn a_block_that_does_not_start_at_its_fence_is_corruption() {
        for map in [false, true] {
            let (_dir, postings) = even_postings(2048, |p| p[1024] += 1, map);
            let direct = Blocks::direct();
            let mut r = postings.reader(&direct);
            assert_eq!(r.get(1023).unwrap(), Some(2046), "the first block is sound");
            assert!(
                matches!(r.get(1024), Err(ReadError::Corruption(_))),
                "map {map}"
            );
        }
    }

    /// A part takes a few words: per (name, sealed segment) in memory.
    #[test]
    fn a_part_is_small() {
        assert!(
            std::mem::size_of::<Part>() <= 80,
            "{}",
            std::mem::size_of::<Part>()
        );
    }
}
