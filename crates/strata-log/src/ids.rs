//! Event ids, for idempotent retries, in bounded memory.
//!
//! The ids of a sealed segment whose index file is written are looked up in that file: its
//! id section holds the segment's `(id, position)` pairs sorted by id, and memory keeps only
//! a bloom filter (10 bits per id) and the first id of every block of
//! [`ID_BLOCK_ENTRIES`] (0.125 bytes per id). A lookup that the filter lets through reads one
//! block (3 KiB) of the file. The ids of the open segment, and of sealed segments whose file
//! is not written yet, are kept in memory, one hash table per segment: when a segment's file
//! is written, its table is taken out under the state lock (a pointer swap) and dropped after
//! it.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use strata_core::Uuid;

use crate::format::{u64_at, uuid_at};

/// Ids per block of a sorted id section: a lookup reads one block.
pub(crate) const ID_BLOCK_ENTRIES: usize = 128;
/// Bytes of one `(id, position)` pair of a sorted id section.
pub(crate) const ID_PAIR_BYTES: usize = 24;
/// Bloom filter bits per id: about 0.8% false positives with [`BLOOM_PROBES`] probes.
const BLOOM_BITS_PER_ID: usize = 10;
/// Bits a bloom filter sets and checks per id.
const BLOOM_PROBES: u64 = 7;

/// The 64-bit words of the bloom filter of `n` ids.
pub(crate) fn bloom_words(n: u64) -> usize {
    (n as usize)
        .saturating_mul(BLOOM_BITS_PER_ID)
        .div_ceil(64)
        .max(1)
}

/// The hash the bloom filter probes with: stable across processes and versions (it is
/// stored), mixing both halves of the id (UUIDv7 ids share their leading time bits).
fn id_hash(id: &Uuid) -> u64 {
    let b = id.as_bytes();
    let lo = u64_at(b, 0);
    let hi = u64_at(b, 8);
    mix(lo ^ mix(hi))
}

/// The splitmix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bits id `id` sets in a filter of `bits` bits (double hashing).
fn bloom_bits(id: &Uuid, bits: u64) -> impl Iterator<Item = u64> {
    let h = id_hash(id);
    let (h1, h2) = (h & 0xffff_ffff, (h >> 32) | 1);
    (0..BLOOM_PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
}

/// A bloom filter over ids.
pub(crate) struct Bloom {
    words: Vec<u64>,
}

impl Bloom {
    /// The filter of `ids`, sized for `n` of them.
    pub fn build<'a>(n: u64, ids: impl Iterator<Item = &'a Uuid>) -> Bloom {
        let mut words = vec![0u64; bloom_words(n)];
        let bits = words.len() as u64 * 64;
        for id in ids {
            for bit in bloom_bits(id, bits) {
                words[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        Bloom { words }
    }

    /// A filter stored as little-endian words.
    pub fn from_bytes(b: &[u8]) -> Bloom {
        Bloom {
            words: b.chunks_exact(8).map(|w| u64_at(w, 0)).collect(),
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// Whether `id` may be in the set (never `false` for one that is).
    pub fn may_contain(&self, id: &Uuid) -> bool {
        let bits = self.words.len() as u64 * 64;
        bloom_bits(id, bits).all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

/// A sealed segment's ids, in its index file.
pub(crate) struct IdSection {
    pub segment_no: u64,
    /// Its positions: `first..end` (not all of which have an event, in a scavenged segment).
    pub first: u64,
    pub end: u64,
    /// How many ids it holds.
    count: usize,
    /// The file, opened when the section was added (so a lookup opens nothing), shared with
    /// the reads of its entries.
    file: std::sync::Arc<std::fs::File>,
    /// Where the sorted pairs start in the file.
    offset: u64,
    /// The first id of every block of sorted pairs.
    fences: Vec<Uuid>,
    bloom: Bloom,
}

impl IdSection {
    /// The section of the open file `file`, whose bytes from `offset` on are `pairs` (sorted,
    /// checked) followed by the bloom filter `bloom`.
    pub fn new(
        segment_no: u64,
        positions: std::ops::Range<u64>,
        file: std::sync::Arc<std::fs::File>,
        offset: u64,
        pairs: &[u8],
        bloom: Bloom,
    ) -> IdSection {
        let fences = pairs
            .chunks(ID_BLOCK_ENTRIES * ID_PAIR_BYTES)
            .map(|block| pair_id(block, 0))
            .collect();
        IdSection {
            segment_no,
            first: positions.start,
            end: positions.end,
            count: pairs.len() / ID_PAIR_BYTES,
            file,
            offset,
            fences,
            bloom,
        }
    }

    /// The position of `id` in this segment, reading at most one block of its file.
    pub fn lookup(&self, id: &Uuid) -> std::io::Result<Option<u64>> {
        if !self.bloom.may_contain(id) {
            return Ok(None);
        }
        let Some(block) = self.fences.partition_point(|f| f <= id).checked_sub(1) else {
            return Ok(None);
        };
        let n = self.count;
        let from = block * ID_BLOCK_ENTRIES;
        let len = ID_BLOCK_ENTRIES.min(n - from) * ID_PAIR_BYTES;
        let mut buf = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(
            &*self.file,
            &mut buf,
            self.offset + (from * ID_PAIR_BYTES) as u64,
        )?;
        let (mut lo, mut hi) = (0, len / ID_PAIR_BYTES);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match pair_id(&buf, mid).cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let p = u64_at(&buf, mid * ID_PAIR_BYTES + 16);
                    if !(self.first..self.end).contains(&p) {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "the index file of segment {} places an event id outside it",
                                self.segment_no
                            ),
                        ));
                    }
                    return Ok(Some(p));
                }
            }
        }
        Ok(None)
    }

    fn memory_bytes(&self) -> usize {
        self.bloom.bytes() + self.fences.len() * 16 + std::mem::size_of::<Self>()
    }
}

/// The id of pair `k` of sorted pairs `b`.
fn pair_id(b: &[u8], k: usize) -> Uuid {
    uuid_at(b, k * ID_PAIR_BYTES)
}

/// Appends the sorted id section and bloom filter of `pairs` (in any order) to `out`.
pub(crate) fn encode_id_section(mut pairs: Vec<(Uuid, u64)>, out: &mut Vec<u8>) {
    pairs.sort_unstable_by_key(|&(id, _)| id);
    for (id, p) in &pairs {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&p.to_le_bytes());
    }
    Bloom::build(pairs.len() as u64, pairs.iter().map(|(id, _)| id)).encode_into(out);
}

/// Checks sorted pairs `b` of positions `first..first + n`: strictly increasing ids, each
/// the id `id_at` gives its position (`None` for one without an event: a scavenge removed
/// it), so the section is exactly the segment's ids.
pub(crate) fn check_pairs(
    b: &[u8],
    first: u64,
    n: u64,
    id_at: impl Fn(u64) -> Option<Uuid>,
) -> Result<(), String> {
    let mut last: Option<Uuid> = None;
    for k in 0..b.len() / ID_PAIR_BYTES {
        let id = pair_id(b, k);
        let p = u64_at(b, k * ID_PAIR_BYTES + 16);
        if last.is_some_and(|l| l >= id) {
            return Err("its id section is not sorted".to_owned());
        }
        if !(first..first + n).contains(&p) || id_at(p) != Some(id) {
            return Err("its id section does not match its entries".to_owned());
        }
        last = Some(id);
    }
    Ok(())
}

/// One segment's ids, in memory: in position order, and a hash table of their indexes in
/// that list (4 bytes a slot, so about 22 bytes per id with the list, where a map from id to
/// position takes about 46).
struct IdChunk {
    segment_no: u64,
    first: u64,
    ids: Vec<Uuid>,
    table: hashbrown::HashTable<u32>,
}

impl IdChunk {
    fn get(&self, hasher: &TableHasher, id: &Uuid) -> Option<u64> {
        let k = self
            .table
            .find(hasher.hash_one(id), |&k| self.ids[k as usize] == *id)?;
        Some(self.first + u64::from(*k))
    }
}

/// The in-memory tables' hash: seeded at random per store (unlike the files' stable
/// [`id_hash`]), so that ids chosen by a client cannot all land on one slot of a table.
type TableHasher = foldhash::fast::RandomState;

/// Segments' ids taken out of memory, to be dropped after the state lock is released.
pub(crate) struct Released(#[allow(dead_code)] Vec<IdChunk>);

/// Every event id: in the index files of sealed segments, then in memory.
#[derive(Default)]
pub(crate) struct EventIds {
    files: Vec<IdSection>,
    chunks: VecDeque<IdChunk>,
    hasher: TableHasher,
    /// Sections of files written while an earlier segment's was not: their ids leave memory
    /// once that one's do.
    waiting: Vec<IdSection>,
}

impl EventIds {
    /// Gives back the memory the lists and tables of ids in memory grew beyond what they
    /// hold.
    pub fn shrink_to_fit(&mut self) {
        self.files.shrink_to_fit();
        let hasher = &self.hasher;
        for c in &mut self.chunks {
            c.ids.shrink_to_fit();
            let ids = &c.ids;
            c.table.shrink_to_fit(|&k| hasher.hash_one(ids[k as usize]));
        }
    }

    /// Records the id of the next position, `position`, stored in segment `segment_no`.
    pub fn push(&mut self, segment_no: u64, position: u64, id: Uuid) {
        if self
            .chunks
            .back()
            .is_none_or(|c| c.segment_no != segment_no)
        {
            self.chunks.push_back(IdChunk {
                segment_no,
                first: position,
                ids: Vec::new(),
                table: hashbrown::HashTable::new(),
            });
        }
        let chunk = self.chunks.back_mut().expect("pushed above");
        debug_assert_eq!(chunk.first + chunk.ids.len() as u64, position);
        // A segment holds fewer than 2^32 events: see `limits::SEGMENT_MAX_BYTES_MAX`.
        let k = chunk.ids.len() as u32;
        chunk.ids.push(id);
        let (ids, hasher) = (&chunk.ids, &self.hasher);
        chunk.table.insert_unique(hasher.hash_one(id), k, |&k| {
            hasher.hash_one(ids[k as usize])
        });
    }

    /// Adds a sealed segment's id section whose positions come next (loading its file; an
    /// earlier segment whose file did not load may be in memory).
    pub fn push_file(&mut self, section: IdSection) {
        self.files.push(section);
    }

    /// Takes a sealed segment's ids out of memory now that its file holds them, in segment
    /// order: the ids in memory stay one run of positions, which the whole index file holds.
    /// A section whose segment is not the first in memory waits for the ones before it. Drop
    /// what it returns after releasing the state lock.
    pub fn move_to_file(&mut self, section: IdSection) -> Released {
        self.waiting.push(section);
        let mut released = Vec::new();
        while let Some(c) = self.chunks.front() {
            let Some(k) = self.waiting.iter().position(|w| {
                c.segment_no == w.segment_no
                    && c.first == w.first
                    && c.first + c.ids.len() as u64 == w.end
            }) else {
                break;
            };
            self.files.push(self.waiting.swap_remove(k));
            released.extend(self.chunks.pop_front());
        }
        // A section whose ids already left memory (none is expected) is of no use.
        let from = self.chunks.front().map_or(u64::MAX, |c| c.first);
        self.waiting.retain(|w| w.first >= from);
        Released(released)
    }

    /// Whether sealed segment `segment_no`'s ids are looked up in its index file.
    pub fn in_file(&self, segment_no: u64) -> bool {
        self.files.iter().any(|f| f.segment_no == segment_no)
    }

    /// Swaps the id section of sealed segment `section.segment_no`, in a file, for
    /// `section`, of the file a scavenge wrote for it (fewer ids). Nothing changes when the
    /// segment's ids are not in a file. Drop what it returns after releasing the state lock.
    pub fn replace_file(&mut self, section: IdSection) -> Option<IdSection> {
        let k = self
            .files
            .iter()
            .position(|f| f.segment_no == section.segment_no && f.first == section.first)?;
        Some(std::mem::replace(&mut self.files[k], section))
    }

    /// The position holding `id`, if any. Reads at most one block of each index file whose
    /// filter lets `id` through.
    pub fn lookup(&self, id: &Uuid) -> std::io::Result<Option<u64>> {
        for c in self.chunks.iter().rev() {
            if let Some(p) = c.get(&self.hasher, id) {
                return Ok(Some(p));
            }
        }
        for f in self.files.iter().rev() {
            if let Some(p) = f.lookup(id)? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// The first position of the run of positions whose ids are all held in memory and that
    /// ends at `end` (the next position), if there is one. An earlier segment whose file did
    /// not load on open, with files after it, is in memory too, outside that run.
    pub fn in_memory_from(&self, end: u64) -> Option<u64> {
        let last = self.chunks.back()?;
        if last.first + last.ids.len() as u64 != end {
            return None;
        }
        let mut from = last.first;
        for c in self.chunks.iter().rev().skip(1) {
            if c.first + c.ids.len() as u64 != from {
                break;
            }
            from = c.first;
        }
        Some(from)
    }

    /// The id of `position`, when it is held in memory.
    pub fn in_memory(&self, position: u64) -> Option<Uuid> {
        let k = self.chunks.partition_point(|c| c.first <= position);
        let c = self.chunks.get(k.checked_sub(1)?)?;
        c.ids.get((position - c.first) as usize).copied()
    }

    /// Ids held in memory.
    pub fn in_memory_count(&self) -> u64 {
        self.chunks.iter().map(|c| c.ids.len() as u64).sum()
    }

    /// Sealed segments whose ids are looked up in their files.
    pub fn file_count(&self) -> u64 {
        self.files.len() as u64
    }

    /// Bytes of memory the ids take, roughly: 16 bytes per id and 5 per table slot in
    /// memory; the filters and fences of the files.
    pub fn memory_bytes(&self) -> u64 {
        let chunks: usize = self
            .chunks
            .iter()
            .map(|c| c.ids.capacity() * 16 + c.table.capacity() * 5)
            .sum();
        let files: usize = self
            .files
            .iter()
            .chain(&self.waiting)
            .map(IdSection::memory_bytes)
            .sum();
        (chunks + files) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids shaped like UUIDv7: a leading counter (as the time), then random-looking bits.
    fn id(k: u64) -> Uuid {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&k.to_be_bytes());
        b[8..].copy_from_slice(&mix(k).to_le_bytes());
        Uuid::from_bytes(b)
    }

    /// A section of `n` ids at positions `first..first + n`, written to a file in `dir`
    /// after `lead` bytes of something else.
    fn section(dir: &std::path::Path, first: u64, n: u64) -> IdSection {
        let lead = 100usize;
        let mut bytes = vec![7u8; lead];
        encode_id_section(
            (0..n).map(|k| (id(first + k), first + k)).collect(),
            &mut bytes,
        );
        let path = dir.join(format!("{first}.idx"));
        std::fs::write(&path, &bytes).unwrap();
        let pairs_end = lead + n as usize * ID_PAIR_BYTES;
        check_pairs(&bytes[lead..pairs_end], first, n, |p| Some(id(p))).unwrap();
        IdSection::new(
            first,
            first..first + n,
            std::sync::Arc::new(std::fs::File::open(&path).unwrap()),
            lead as u64,
            &bytes[lead..pairs_end],
            Bloom::from_bytes(&bytes[pairs_end..]),
        )
    }

    #[test]
    fn every_id_of_a_section_is_found_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        // Several blocks, the last one partial.
        let s = section(dir.path(), 1000, 3 * ID_BLOCK_ENTRIES as u64 + 17);
        for p in s.first..s.end {
            assert_eq!(s.lookup(&id(p)).unwrap(), Some(p), "position {p}");
        }
        let mut passed = 0;
        for k in 0..10_000u64 {
            assert_eq!(s.lookup(&id(1_000_000 + k)).unwrap(), None);
            passed += s.bloom.may_contain(&id(1_000_000 + k)) as u32;
        }
        // About 0.8% false positives: well under 3%.
        assert!(
            passed < 300,
            "{passed} of 10,000 absent ids passed the filter"
        );
        assert!(s.lookup(&Uuid::nil()).unwrap().is_none());
        assert!(s.lookup(&Uuid::max()).unwrap().is_none());
    }

    #[test]
    fn a_section_that_is_not_its_segments_ids_is_refused() {
        let mut bytes = Vec::new();
        encode_id_section((0..10).map(|k| (id(k), k)).collect(), &mut bytes);
        let pairs = &bytes[..10 * ID_PAIR_BYTES];
        assert!(check_pairs(pairs, 0, 10, |p| Some(id(p))).is_ok());
        // Another id at a position.
        assert!(check_pairs(pairs, 0, 10, |p| Some(id(p + 1))).is_err());
        // A position outside the segment.
        assert!(check_pairs(pairs, 1, 10, |p| Some(id(p))).is_err());
        // Out of order.
        let mut swapped = pairs.to_vec();
        swapped.copy_within(0..ID_PAIR_BYTES, ID_PAIR_BYTES);
        assert!(check_pairs(&swapped, 0, 10, |p| Some(id(p))).is_err());
    }

    #[test]
    fn every_id_in_memory_is_found_and_others_are_not() {
        let mut ids = EventIds::default();
        // Two segments; the table of each grows many times.
        for p in 0..100_000u64 {
            ids.push(p / 60_000, p, id(p));
        }
        for p in (0..100_000u64).step_by(7) {
            assert_eq!(ids.lookup(&id(p)).unwrap(), Some(p));
        }
        for k in 0..10_000u64 {
            assert_eq!(ids.lookup(&id(1_000_000 + k)).unwrap(), None);
        }
        // About 22 bytes an id: the list and a 4-byte table slot.
        let per_id = ids.memory_bytes() as f64 / 100_000.0;
        assert!(per_id < 30.0, "{per_id} bytes an id");
    }

    /// A segment whose file did not load on open is in memory with files after it: the run
    /// `index.bin` holds starts after those files, and every id is found.
    #[test]
    fn a_segment_in_memory_before_files_is_outside_the_last_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = EventIds::default();
        for p in 0..10 {
            ids.push(4, p, id(p));
        }
        ids.push_file(IdSection {
            segment_no: 5,
            ..section(dir.path(), 10, 10)
        });
        // The open segment has no events yet: no run of ids in memory reaches the end, so
        // `index.bin` holds no event (not segment 4's, with segment 5's missing).
        assert_eq!(ids.in_memory_from(20), None);
        for p in 20..25 {
            ids.push(6, p, id(p));
        }
        assert_eq!(ids.in_memory_from(25), Some(20));
        assert_eq!(ids.in_memory(12), None);
        assert_eq!(ids.in_memory(3), Some(id(3)));
        for p in 0..25 {
            assert_eq!(ids.lookup(&id(p)).unwrap(), Some(p));
        }
        // Once segment 4's file is written, its ids leave memory.
        let s4 = section(dir.path(), 0, 10);
        let released = ids.move_to_file(IdSection {
            segment_no: 4,
            ..s4
        });
        assert_eq!(released.0.len(), 1);
        assert_eq!((ids.in_memory_count(), ids.file_count()), (5, 2));
        for p in 0..25 {
            assert_eq!(ids.lookup(&id(p)).unwrap(), Some(p));
        }
    }

    #[test]
    fn ids_move_from_memory_to_files_one_segment_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = EventIds::default();
        for p in 0..30 {
            ids.push(p / 10, p, id(p));
        }
        assert_eq!(ids.in_memory_count(), 30);
        assert_eq!(ids.in_memory(15), Some(id(15)));
        // Not the first segment in memory: kept there until segment 0's leave.
        let later = section(dir.path(), 10, 10);
        let _ = ids.move_to_file(IdSection {
            segment_no: 1,
            ..later
        });
        assert_eq!((ids.in_memory_count(), ids.file_count()), (30, 0));
        for p in 0..30 {
            assert_eq!(ids.lookup(&id(p)).unwrap(), Some(p));
        }
        let s0 = section(dir.path(), 0, 10);
        let released = ids.move_to_file(IdSection {
            segment_no: 0,
            ..s0
        });
        assert_eq!(released.0.len(), 2);
        assert_eq!((ids.in_memory_count(), ids.file_count()), (10, 2));
        assert_eq!(ids.in_memory_from(30), Some(20));
        assert_eq!(ids.in_memory(15), None);
        for p in 0..30 {
            assert_eq!(ids.lookup(&id(p)).unwrap(), Some(p));
        }
        assert_eq!(ids.lookup(&id(30)).unwrap(), None);
    }
}
