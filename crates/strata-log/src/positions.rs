//! Position lists: the positions of one stream, category or event type, in increasing order,
//! kept compressed in memory. Positions are grouped in blocks of [`BLOCK`]: a block holds its
//! first position whole and each next one as the gap from the one before, all as LEB128
//! varints, so a run of consecutive positions takes 1 byte each and gaps under 16,384 take 2.
//! A block's start is kept (8 bytes per block after the first), so that the `k`-th position
//! is found by decoding one block, and the number of positions under a given one (or whether
//! the list holds it) by a binary search over blocks and the decoding of one.
//!
//! ```text
//! positions  7 8 9 200 | 5000 5001 ...      (BLOCK positions per block)
//! bytes      07 01 01 af 01 | 88 27 01 ...
//! starts     [5]                             (where block 1 begins)
//! ```

use smallvec::SmallVec;

/// Positions per block: the most a lookup decodes. Its start takes 8 bytes per block; 64
/// positions keep that at 1/8 byte per position.
pub(crate) const BLOCK: usize = 64;

/// A list of strictly increasing positions, compressed (see the [module](self) docs).
#[derive(Default)]
pub(crate) struct PositionList {
    bytes: Vec<u8>,
    /// Where each block after the first begins in `bytes`. The first such start is kept in
    /// place: a list of up to two blocks (128 positions, most streams') allocates nothing
    /// for it, where a vector took a heap block of 32 bytes.
    starts: SmallVec<[u64; 1]>,
    len: u64,
    /// The last position pushed (meaningless while empty).
    last: u64,
}

impl PositionList {
    /// Positions held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The last position, `None` when empty.
    pub fn last(&self) -> Option<u64> {
        (self.len > 0).then_some(self.last)
    }

    /// The `i`-th position, `None` past the end. Decodes a block: to read several, use a
    /// [`reader`](Self::reader).
    pub fn get(&self, i: u64) -> Option<u64> {
        self.reader().get(i)
    }

    /// The index of position `p`, `None` when the list does not hold it.
    pub fn index_of(&self, p: u64) -> Option<u64> {
        let i = self.count_below(p);
        (self.get(i) == Some(p)).then_some(i)
    }

    /// Adds `p`, which must be greater than every position held.
    pub fn push(&mut self, p: u64) {
        if self.len.is_multiple_of(BLOCK as u64) {
            if self.len > 0 {
                assert!(p > self.last, "positions must increase");
                self.starts.push(self.bytes.len() as u64);
            }
            put_varint(&mut self.bytes, p);
        } else {
            assert!(p > self.last, "positions must increase");
            put_varint(&mut self.bytes, p - self.last);
        }
        self.last = p;
        self.len += 1;
    }

    /// Bytes of memory the list takes beyond its own struct (capacity, not length).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
            + if self.starts.spilled() {
                self.starts.capacity() * 8
            } else {
                0
            }
    }

    /// Gives back the memory the vectors grew beyond what they hold.
    pub fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.starts.shrink_to_fit();
    }

    fn blocks(&self) -> usize {
        self.len.div_ceil(BLOCK as u64) as usize
    }

    fn block_start(&self, b: usize) -> usize {
        match b {
            0 => 0,
            b => self.starts[b - 1] as usize,
        }
    }

    fn block_first(&self, b: usize) -> u64 {
        varint_at(&self.bytes, self.block_start(b)).0
    }

    /// Decodes block `b` into `out`; returns how many positions it holds.
    fn decode(&self, b: usize, out: &mut [u64; BLOCK]) -> usize {
        let n = (self.len - (b * BLOCK) as u64).min(BLOCK as u64) as usize;
        let mut at = self.block_start(b);
        let mut p = 0u64;
        for (i, slot) in out.iter_mut().take(n).enumerate() {
            let (v, next) = varint_at(&self.bytes, at);
            at = next;
            p = if i == 0 { v } else { p + v };
            *slot = p;
        }
        n
    }

    /// How many positions are less than `p`: the index of the first at or above it.
    pub fn count_below(&self, p: u64) -> u64 {
        // The blocks whose first position is below `p`; the last of them holds the answer.
        // The last block whose first position is below `p` holds the answer.
        let Some(b) = p.checked_sub(1).and_then(|q| self.block_at_or_below(q)) else {
            return 0;
        };
        let mut block = [0u64; BLOCK];
        let n = self.decode(b, &mut block);
        (b * BLOCK) as u64 + block[..n].partition_point(|&q| q < p) as u64
    }

    /// How many positions are at or below `p`.
    pub fn count_at_or_below(&self, p: u64) -> u64 {
        match p.checked_add(1) {
            Some(above) => self.count_below(above),
            None => self.len,
        }
    }

    /// The last block whose first position is at or below `p`.
    fn block_at_or_below(&self, p: u64) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.blocks());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.block_first(mid) <= p {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    /// A reader of positions by index, which decodes one block at a time.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            list: self,
            block: usize::MAX,
            decoded: [0; BLOCK],
            n: 0,
        }
    }
}

/// Reads a [`PositionList`] by index, keeping the last block it decoded: reading indexes in
/// order, forward or backward, decodes each block once.
pub(crate) struct Reader<'a> {
    list: &'a PositionList,
    /// The block decoded last (`usize::MAX`: none yet), its positions, and how many.
    block: usize,
    decoded: [u64; BLOCK],
    n: usize,
}

impl Reader<'_> {
    /// The list's `i`-th position, `None` past its end.
    pub fn get(&mut self, i: u64) -> Option<u64> {
        if i >= self.list.len {
            return None;
        }
        self.load((i / BLOCK as u64) as usize);
        Some(self.decoded[(i % BLOCK as u64) as usize])
    }

    /// Whether the list holds `p`. Decodes no block while `p` lies within the one decoded
    /// last (as the positions of a walk mostly do), else at most the one that may hold it.
    pub fn contains(&mut self, p: u64) -> bool {
        let decoded = &self.decoded[..self.n];
        let within = |d: &[u64]| d.first().is_some_and(|&f| f <= p) && d.last() >= Some(&p);
        if self.block == usize::MAX || !within(decoded) {
            let Some(b) = self.list.block_at_or_below(p) else {
                return false;
            };
            self.load(b);
        }
        self.decoded[..self.n].binary_search(&p).is_ok()
    }

    fn load(&mut self, b: usize) {
        if b != self.block {
            self.n = self.list.decode(b, &mut self.decoded);
            self.block = b;
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at `at` and where the next begins. The list wrote it: it is whole.
fn varint_at(bytes: &[u8], mut at: usize) -> (u64, usize) {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = bytes[at];
        at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return (v, at);
        }
        shift += 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list_of(positions: &[u64]) -> PositionList {
        let mut l = PositionList::default();
        for &p in positions {
            l.push(p);
        }
        l
    }

    proptest! {
        /// Every read agrees with a plain vector of the same positions: gaps of every size
        /// (up to whole u64 varints), lists across many blocks, lookups of every kind.
        #[test]
        fn reads_agree_with_a_vector(
            gaps in proptest::collection::vec(
                prop_oneof![1u64..3, 1u64..200, 1u64..100_000, 1u64..u64::MAX / 2_000],
                0..400,
            ),
            first in prop_oneof![Just(0u64), 0u64..1_000_000],
            probes in proptest::collection::vec(any::<u64>(), 0..20),
        ) {
            let mut positions = Vec::new();
            let mut p = first;
            for (k, g) in gaps.iter().enumerate() {
                if k > 0 {
                    p += g;
                }
                positions.push(p);
            }
            let l = list_of(&positions);
            prop_assert_eq!(l.len(), positions.len() as u64);
            let mut r = l.reader();
            let forward: Vec<u64> = (0..l.len()).filter_map(|i| r.get(i)).collect();
            prop_assert_eq!(&forward, &positions);
            let backward: Vec<u64> = (0..l.len()).rev().filter_map(|i| r.get(i)).collect();
            let mut reversed = positions.clone();
            reversed.reverse();
            prop_assert_eq!(backward, reversed);
            prop_assert_eq!(r.get(l.len()), None);
            // Lookups by position, in any order (the reader keeps its last block), and in order.
            let mut sorted = probes.clone();
            sorted.sort_unstable();
            let neighbours: Vec<u64> = positions
                .iter()
                .flat_map(|&p| [p.saturating_sub(1), p, p.saturating_add(1)])
                .collect();
            for q in probes.iter().chain(&sorted).chain(&neighbours).copied() {
                prop_assert_eq!(r.contains(q), positions.binary_search(&q).is_ok(), "{}", q);
            }
            prop_assert_eq!(l.last(), positions.last().copied());
            // Probes: every position, its neighbours, and arbitrary values.
            let near = positions.iter().flat_map(|&p| [p.saturating_sub(1), p, p.saturating_add(1)]);
            for q in near.chain(probes).chain([0, u64::MAX]) {
                prop_assert_eq!(l.count_below(q), positions.partition_point(|&p| p < q) as u64);
                prop_assert_eq!(
                    l.index_of(q),
                    positions.binary_search(&q).ok().map(|i| i as u64)
                );
                prop_assert_eq!(
                    l.count_at_or_below(q),
                    positions.partition_point(|&p| p <= q) as u64
                );
            }
        }
    }

    /// Consecutive positions take one byte each, plus a block start per block.
    #[test]
    fn runs_take_a_byte_a_position() {
        let l = list_of(&(1_000..1_000 + 64 * 100).collect::<Vec<_>>());
        assert_eq!(
            l.bytes.len(),
            100 * (2 + 63),
            "a block: its first in 2 bytes, 63 gaps"
        );
        assert_eq!(l.starts.len(), 99);
    }

    /// A list of up to two blocks keeps its one block start in place: its only heap block is
    /// its bytes. The list itself is no larger than with a vector of starts.
    #[test]
    fn two_blocks_allocate_only_their_bytes() {
        let mut l = list_of(&(0..2 * BLOCK as u64).map(|p| p * 3).collect::<Vec<_>>());
        l.shrink_to_fit();
        assert_eq!(l.heap_bytes(), l.bytes.len());
        assert!(!l.starts.spilled());
        let mut l = list_of(&(0..2 * BLOCK as u64 + 1).collect::<Vec<_>>());
        l.shrink_to_fit();
        assert_eq!(
            l.heap_bytes(),
            l.bytes.len() + 2 * 8,
            "three blocks: two starts"
        );
        assert!(std::mem::size_of::<PositionList>() <= 64);
    }

    #[test]
    #[should_panic(expected = "positions must increase")]
    fn a_position_that_does_not_increase_is_refused() {
        list_of(&[5, 9, 9]);
    }

    #[test]
    #[should_panic(expected = "positions must increase")]
    fn a_block_first_that_does_not_increase_is_refused() {
        let mut positions: Vec<u64> = (0..BLOCK as u64).collect();
        positions.push(3);
        list_of(&positions);
    }
}
