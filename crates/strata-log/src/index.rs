//! The in-memory indexes: where each position lives on disk, and which positions belong to
//! each stream, category and event type; plus event ids (for idempotent retries, see
//! [`crate::ids`]: in memory only for the open segment) and timestamps (for temporal reads).
//! Rebuilt from the log when missing or behind; persisted in each sealed segment's index
//! file and, for the events past those, in `index.bin`, so that opening a large store does
//! not rescan it.
//!
//! Memory per event: about 1 to 3 bytes in its stream's position list, which is compressed
//! ([`PositionList`]: gaps as varints, in blocks of 64), plus 1.4 bytes of the id files'
//! filters and fences. The entries ([`Entries`]) of sealed segments are read from their index
//! files, and so are their category and type positions ([`Postings`]: a part of a few words
//! per name and file in memory); the open segment's entries take 24 bytes each in memory,
//! its ids about 22, its category and type positions 1 to 3 bytes each. Per stream: its
//! name, a list header and a map slot, about 140 bytes plus the name.

use std::collections::{BTreeMap, HashMap};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use strata_core::{category_of, Direction, Filter, ReadError, StreamId, Uuid};

use std::path::PathBuf;
use std::sync::Arc;

use crate::entries::{Deferred, Entries, Entry, EntryFile, PositionAt, Slots};
use crate::format::{u16_at, u32_at, u64_at, uuid_at, RemovedRuns, SEGMENT_HEADER_BYTES};
use crate::ids::{
    bloom_words, check_pairs, encode_id_section, Bloom, EventIds, IdSection, ID_PAIR_BYTES,
};
use crate::io::FileBytes;
use crate::positions::{self, PositionList};
use crate::postings::{self, Blocks, Postings, Swap};

/// A location in the log: segment number in the high 24 bits, byte offset in the low 40.
pub(crate) type Loc = u64;
const LOC_OFFSET_BITS: u32 = 40;

pub(crate) fn loc(segment_no: u64, offset: u64) -> Loc {
    debug_assert!(offset < 1 << LOC_OFFSET_BITS);
    (segment_no << LOC_OFFSET_BITS) | offset
}
pub(crate) fn loc_segment(l: Loc) -> u64 {
    l >> LOC_OFFSET_BITS
}
pub(crate) fn loc_offset(l: Loc) -> u64 {
    l & ((1 << LOC_OFFSET_BITS) - 1)
}

pub(crate) struct StreamEntry {
    /// Its name, shared with the name map's key: one allocation per stream.
    id: Arc<str>,
    pub category: u32,
    /// The positions of its stored events, in version order: with the versions a scavenge
    /// removed left out (see [`RemovedVersions`]).
    pub positions: PositionList,
    pub removed: RemovedVersions,
}

/// The versions of a stream that a scavenge removed: one run, `from..from + count` (none
/// while `count` is 0). A scavenge removes what readers can no longer see (see
/// [`strata_core::scavenge::removable`]): versions from 0 or 1 (0 once the stream is
/// tombstoned) up to the first one readers see, and never the last. Each scavenge's range
/// starts there and takes in what earlier ones removed, and segments are rewritten in
/// position order, so what is gone of a stream is always one run of versions: it grows at
/// its end, and once at its start (version 0, when the stream is tombstoned).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RemovedVersions {
    pub from: u64,
    pub count: u64,
}

impl RemovedVersions {
    /// The one run these and `versions` make, `None` when they make two.
    fn joined(self, versions: &std::ops::Range<u64>) -> Option<std::ops::Range<u64>> {
        let end = self.from + self.count;
        match self.count {
            0 => Some(versions.clone()),
            _ if versions.start <= end && versions.end >= self.from => {
                Some(versions.start.min(self.from)..versions.end.max(end))
            }
            _ => None,
        }
    }

    /// What they become for a stream of `stored` events whose next stored event holds
    /// version `v`: `v` must be the next version or, when `may_skip` (a scavenged segment
    /// read back), a later one, the versions in between being removed ones, which must
    /// continue the run removed before or start it. Otherwise the next version is the error.
    pub fn after(self, stored: u64, v: u64, may_skip: bool) -> Result<RemovedVersions, u64> {
        let next = stored + self.count;
        if v == next {
            return Ok(self);
        }
        let continues = self.count == 0 || self.from == stored;
        if v < next || !may_skip || !continues || v == u64::MAX {
            return Err(next);
        }
        Ok(RemovedVersions {
            from: if self.count == 0 { stored } else { self.from },
            count: self.count + (v - next),
        })
    }
}

impl StreamEntry {
    /// The stream's id.
    pub fn name(&self) -> &str {
        &self.id
    }

    /// How many versions the stream has had: the next version.
    pub fn versions(&self) -> u64 {
        self.positions.len() + self.removed.count
    }

    /// The version of the `i`-th position of its list.
    pub fn version_at(&self, i: u64) -> u64 {
        if i < self.removed.from {
            i
        } else {
            i + self.removed.count
        }
    }

    /// The list without versions `versions` (a scavenge removed their events; those among
    /// them removed before are out already), and the removed versions then: with the run
    /// removed before they must make one run (joining it at its end, or at its start:
    /// version 0 of a stream tombstoned since), and leave the last version. Builds a new list
    /// (a cost per event of the stream), the stream unchanged: the caller swaps it in.
    pub fn without_versions(
        &self,
        versions: std::ops::Range<u64>,
    ) -> Result<(PositionList, RemovedVersions), String> {
        let Some(run) = self
            .removed
            .joined(&versions)
            .filter(|_| !versions.is_empty() && versions.end < self.versions())
        else {
            let RemovedVersions { from, count } = self.removed;
            return Err(format!(
                "stream {}: versions {versions:?} do not join those removed before ({from}..{}), or take its last",
                self.name(),
                from + count
            ));
        };
        let (lo, hi) = (
            self.index_from(versions.start),
            self.index_from(versions.end),
        );
        let mut list = PositionList::default();
        let mut reader = self.positions.reader();
        for i in (0..lo).chain(hi..self.positions.len()) {
            list.push(reader.get(i).expect("an index of the list"));
        }
        let removed = RemovedVersions {
            from: run.start,
            count: run.end - run.start,
        };
        Ok((list, removed))
    }

    /// The index in its list of the first stored version at or after `v`.
    pub fn index_from(&self, v: u64) -> u64 {
        let RemovedVersions { from, count } = self.removed;
        if v < from {
            v
        } else {
            v.saturating_sub(count).max(from)
        }
    }
}

/// A category's or event type's positions: in its segments' index files for sealed
/// segments whose file is written, in memory for the rest ([`Postings`]).
pub(crate) struct NamedList {
    pub name: String,
    pub positions: Postings,
    pub streams: u64,
}

/// All indexes. Position `p` is `entries.get(p)`: positions are dense from 0 in this backend.
#[derive(Default)]
pub(crate) struct Index {
    /// Each position's entry: in memory for the open segment (and sealed ones whose file is
    /// not written yet), in the segment index files for the rest (see [`crate::entries`]).
    pub entries: Entries,
    /// Event ids: in memory for the open segment (and sealed ones whose file is not written
    /// yet), in the segment index files for the rest.
    pub ids: EventIds,
    pub streams: Vec<StreamEntry>,
    stream_nos: BTreeMap<Arc<str>, u32>,
    pub categories: Vec<NamedList>,
    category_nos: BTreeMap<String, u32>,
    pub types: Vec<NamedList>,
    type_nos: FastMap<String, u32>,
}

/// One event as the index learns it.
pub(crate) struct NewEntry<'a> {
    pub position: u64,
    pub loc: Loc,
    pub recorded_at_us: i64,
    pub stream: &'a StreamId,
    pub event_type: &'a str,
    pub event_id: Uuid,
}

impl Index {
    pub fn next_position(&self) -> u64 {
        self.entries.len()
    }

    pub fn head(&self) -> Option<u64> {
        self.next_position().checked_sub(1)
    }

    pub fn last_recorded_at_us(&self) -> i64 {
        self.entries.last_recorded_at_us()
    }

    pub fn stream_no(&self, stream: &StreamId) -> Option<u32> {
        self.stream_nos.get(stream.as_str()).copied()
    }

    /// Whether any metastream (`$$...`) has events.
    pub fn has_metastreams(&self) -> bool {
        self.stream_nos
            .range::<str, _>((
                std::ops::Bound::Included(strata_core::METASTREAM_PREFIX),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .is_some_and(|(name, _)| name.starts_with(strata_core::METASTREAM_PREFIX))
    }

    pub fn type_no(&self, event_type: &str) -> Option<u32> {
        self.type_nos.get(event_type).copied()
    }

    /// The stream's current version, `None` when it has no events.
    pub fn stream_version(&self, stream: &StreamId) -> Option<u64> {
        let s = self.stream_no(stream)?;
        self.streams[s as usize].versions().checked_sub(1)
    }

    /// The position holding event id `id`: may read a block of a segment index file.
    pub fn position_of_id(&self, id: &Uuid) -> std::io::Result<Option<u64>> {
        self.ids.lookup(id)
    }

    /// Adds one event. Positions must arrive in order. (The log's events are added with
    /// [`push_checked`](Self::push_checked), which checks their versions, or resolved.)
    #[cfg(test)]
    pub fn push(&mut self, e: NewEntry<'_>) {
        let next = self.stream_version(e.stream).map_or(0, |v| v + 1);
        self.push_checked(e, next, false).expect("the next version");
    }

    /// Adds one event read back from the log, holding version `version` of its stream,
    /// which must be the stream's next (or, when `may_skip`, a later one: see
    /// [`RemovedVersions`]). Nothing changes when it is not.
    pub fn push_checked(
        &mut self,
        e: NewEntry<'_>,
        version: u64,
        may_skip: bool,
    ) -> Result<(), String> {
        let known = self.stream_no(e.stream);
        let (stored, removed) = match known {
            Some(s) => {
                let se = &self.streams[s as usize];
                (se.positions.len(), se.removed)
            }
            None => (0, RemovedVersions::default()),
        };
        let removed = removed.after(stored, version, may_skip).map_err(|next| {
            format!(
                "stream {} holds version {version} where {next} was expected",
                e.stream
            )
        })?;
        // One lookup of the stream's number for a stream already held.
        let stream = match known {
            Some(s) => s,
            None => self.stream_no_or_insert(e.stream),
        };
        let event_type = self.type_no_or_insert(e.event_type);
        self.push_resolved(
            e.position,
            e.loc,
            e.recorded_at_us,
            stream,
            event_type,
            Some(e.event_id),
        );
        self.set_removed(stream, removed);
        Ok(())
    }

    /// Sets stream `s`'s removed versions. A category counts the streams whose first event
    /// is stored (as listings find them): one whose version 0 is removed (tombstoned, then
    /// scavenged) leaves the count.
    fn set_removed(&mut self, s: u32, removed: RemovedVersions) {
        let se = &mut self.streams[s as usize];
        let first_gone = |r: RemovedVersions| r.count > 0 && r.from == 0;
        let left = !first_gone(se.removed) && first_gone(removed);
        se.removed = removed;
        if left {
            let c = se.category as usize;
            self.categories[c].streams = self.categories[c].streams.saturating_sub(1);
        }
    }

    /// The number of `stream`, adding the stream (and its category) when new.
    pub fn stream_no_or_insert(&mut self, stream: &StreamId) -> u32 {
        if let Some(&s) = self.stream_nos.get(stream.as_str()) {
            return s;
        }
        let cat_name = category_of(stream.as_str());
        let category = match self.category_nos.get(cat_name) {
            Some(&c) => c,
            None => {
                let c = self.categories.len() as u32;
                self.categories.push(NamedList {
                    name: cat_name.to_owned(),
                    positions: Postings::default(),
                    streams: 0,
                });
                self.category_nos.insert(cat_name.to_owned(), c);
                c
            }
        };
        self.categories[category as usize].streams += 1;
        let s = self.streams.len() as u32;
        let id: Arc<str> = Arc::from(stream.as_str());
        self.streams.push(StreamEntry {
            id: id.clone(),
            category,
            positions: PositionList::default(),
            removed: RemovedVersions::default(),
        });
        self.stream_nos.insert(id, s);
        s
    }

    /// The number of `event_type`, adding it when new.
    pub fn type_no_or_insert(&mut self, event_type: &str) -> u32 {
        if let Some(&t) = self.type_nos.get(event_type) {
            return t;
        }
        let t = self.types.len() as u32;
        self.types.push(NamedList {
            name: event_type.to_owned(),
            positions: Postings::default(),
            streams: 0,
        });
        self.type_nos.insert(event_type.to_owned(), t);
        t
    }

    /// Adds one event whose stream and type numbers are known; its id is kept in memory,
    /// or (`None`) is in the id section of a segment index file added with it.
    pub fn push_resolved(
        &mut self,
        position: u64,
        loc: Loc,
        recorded_at_us: i64,
        stream: u32,
        event_type: u32,
        event_id: Option<Uuid>,
    ) {
        assert_eq!(
            position,
            self.next_position(),
            "index positions must be dense"
        );
        self.push_lists(position, loc_segment(loc), stream, event_type);
        self.entries.push(
            loc_segment(loc),
            Entry {
                loc,
                recorded_at_us,
                stream,
                event_type,
            },
        );
        if let Some(id) = event_id {
            self.ids.push(loc_segment(loc), position, id);
        }
    }

    /// Adds `position`, stored in segment `segment_no`, to the lists of its stream, category
    /// and type.
    fn push_lists(&mut self, position: u64, segment_no: u64, stream: u32, event_type: u32) {
        let se = &mut self.streams[stream as usize];
        se.positions.push(position);
        self.categories[se.category as usize]
            .positions
            .push(segment_no, position);
        self.types[event_type as usize]
            .positions
            .push(segment_no, position);
    }

    /// The number of category `name`, when the index holds it.
    pub fn category_no(&self, name: &str) -> Option<u32> {
        self.category_nos.get(name).copied()
    }

    /// The lists the postings `dir` of a segment index file stand for: per type and category
    /// with positions in it, its kind (`true`: a type), its number in the index and its
    /// place in `dir`. Numbers never change, so this is looked up under the state read lock,
    /// before the swap takes the write lock.
    pub fn postings_targets(&self, dir: &PostingsDir) -> Vec<(bool, u32, usize)> {
        let types = dir.types.iter().zip(&dir.type_at).enumerate();
        let types = types.filter_map(|(k, (name, at))| {
            self.type_no(name)
                .filter(|_| at.count > 0)
                .map(|t| (true, t, k))
        });
        let categories = dir.categories.iter().zip(&dir.category_at).enumerate();
        let categories = categories.filter_map(|(k, (name, at))| {
            self.category_no(name)
                .filter(|_| at.count > 0)
                .map(|c| (false, c, k))
        });
        types.chain(categories).collect()
    }

    /// Swaps the positions of sealed segment `segment_no` held in memory, of the lists
    /// `targets` names (see [`postings_targets`](Self::postings_targets)), for the postings
    /// of its index file (`file`, whose entries the index reads, and `dir`): a binary search
    /// and a swap each. Drop what it returns after releasing the state lock.
    pub fn move_postings_to_file(
        &mut self,
        segment_no: u64,
        file: &Arc<EntryFile>,
        dir: &PostingsDir,
        targets: &[(bool, u32, usize)],
    ) -> Vec<PositionList> {
        let mut released = Vec::with_capacity(targets.len());
        for &target in targets {
            if let Some((l, swap)) = self.postings_target(segment_no, file, dir, target) {
                released.extend(l.move_to_file(swap));
            }
        }
        released
    }

    /// Adds the category and type positions of sealed segment `segment_no`, the next ones,
    /// as the postings `dir` of its index file `file` (on open).
    fn push_postings_file(&mut self, segment_no: u64, file: &Arc<EntryFile>, dir: &PostingsDir) {
        for target in self.postings_targets(dir) {
            if let Some((l, swap)) = self.postings_target(segment_no, file, dir, target) {
                l.push_file(swap);
            }
        }
    }

    /// The list one of [`postings_targets`](Self::postings_targets) names, and its part of
    /// segment `segment_no` in `file`.
    fn postings_target<'a>(
        &mut self,
        segment_no: u64,
        file: &'a Arc<EntryFile>,
        dir: &'a PostingsDir,
        (is_type, no, k): (bool, u32, usize),
    ) -> Option<(&mut Postings, Swap<'a>)> {
        let (lists, at) = match is_type {
            true => (&mut self.types, &dir.type_at[k]),
            false => (&mut self.categories, &dir.category_at[k]),
        };
        let l = lists.get_mut(no as usize)?;
        Some((&mut l.positions, dir.swap(segment_no, file, at)))
    }

    /// The streams' lists without the versions `removed` gives per stream, built under the
    /// state read lock so that [`replace_scavenged`](Self::replace_scavenged) only swaps them
    /// in under the write lock.
    pub fn prepare_removal(
        &self,
        removed: &[(u32, std::ops::Range<u64>)],
    ) -> Result<Vec<PreparedList>, String> {
        removed
            .iter()
            .map(|(s, versions)| {
                let se = self.streams.get(*s as usize).ok_or("an unknown stream")?;
                let (list, removed) = se.without_versions(versions.clone())?;
                Ok(PreparedList {
                    stream: *s,
                    stored: se.positions.len(),
                    was: se.removed,
                    list,
                    removed,
                })
            })
            .collect()
    }

    /// Swaps what the index reads of sealed segment `segment_no` (positions from `first`)
    /// for the file `file` (its entries, with `dir`, its postings, and `section`, its ids) a
    /// scavenge wrote for it, `first_at_us` being when its first event was recorded (`None`:
    /// it has none left), and the streams' lists for `lists` (see
    /// [`prepare_removal`](Self::prepare_removal); what was appended to a stream since goes on
    /// its new list). Checked first: on an error nothing changes. Drop what it returns after
    /// releasing the state lock.
    #[allow(clippy::too_many_arguments)]
    pub fn replace_scavenged(
        &mut self,
        segment_no: u64,
        first: u64,
        file: &Arc<EntryFile>,
        dir: &PostingsDir,
        section: IdSection,
        first_at_us: Option<i64>,
        lists: Vec<PreparedList>,
    ) -> Result<ReleasedScavenged, String> {
        if !self.entries.in_file(segment_no, first) || !self.ids.in_file(segment_no) {
            return Err(format!(
                "segment {segment_no}'s entries and ids are not read from its index file yet"
            ));
        }
        for l in &lists {
            let se = self
                .streams
                .get(l.stream as usize)
                .ok_or("an unknown stream")?;
            if se.removed != l.was || se.positions.len() < l.stored {
                return Err(format!(
                    "stream {} changed in another way than by appends while the scavenge prepared it",
                    se.name()
                ));
            }
        }
        let mut released = Vec::new();
        released.extend(
            self.entries
                .replace_file(segment_no, first, file.clone(), first_at_us),
        );
        let ids = self.ids.replace_file(section);
        let targets: FastMap<(bool, u32), usize> = self
            .postings_targets(dir)
            .into_iter()
            .map(|(t, n, k)| ((t, n), k))
            .collect();
        for (is_type, names) in [(true, &mut self.types), (false, &mut self.categories)] {
            for (no, l) in names.iter_mut().enumerate() {
                let swap = targets.get(&(is_type, no as u32)).map(|&k| {
                    let at = match is_type {
                        true => &dir.type_at[k],
                        false => &dir.category_at[k],
                    };
                    dir.swap(segment_no, file, at)
                });
                released.extend(l.positions.replace_file(segment_no, swap));
            }
        }
        let mut old_lists = Vec::with_capacity(lists.len());
        for mut l in lists {
            let se = &mut self.streams[l.stream as usize];
            // Appended since it was prepared: after every version removed.
            let mut reader = se.positions.reader();
            for i in l.stored..se.positions.len() {
                l.list.push(reader.get(i).expect("an index of the list"));
            }
            old_lists.push(std::mem::replace(&mut se.positions, l.list));
            self.set_removed(l.stream, l.removed);
        }
        Ok(ReleasedScavenged {
            _files: released,
            _ids: ids,
            _lists: old_lists,
        })
    }

    /// Bytes of memory the stream, category and type position lists take beyond the
    /// streams' and names' own structs (for categories and types, with their parts).
    pub fn position_list_bytes(&self) -> u64 {
        let lists = self.streams.iter().map(|s| s.positions.heap_bytes());
        let named = self
            .categories
            .iter()
            .chain(&self.types)
            .map(|l| l.positions.heap_bytes());
        lists.chain(named).sum::<usize>() as u64
    }

    /// Gives back the memory the streams, the position lists, the entries and the ids in
    /// memory grew beyond what they hold (after an open has built them: up to half of each
    /// is slack, as they grew by doubling).
    pub fn shrink_to_fit(&mut self) {
        self.streams.shrink_to_fit();
        self.entries.shrink_to_fit();
        self.ids.shrink_to_fit();
        for s in &mut self.streams {
            s.positions.shrink_to_fit();
        }
        for l in self.categories.iter_mut().chain(&mut self.types) {
            l.positions.shrink_to_fit();
        }
    }

    /// Positions of a stream read, with their entries (those in index files deferred: see
    /// [`Deferred`]); `None` when the stream has no event at or below `max_position`.
    pub fn stream_slice(
        &self,
        stream: u32,
        direction: Direction,
        from_version: Option<u64>,
        limit: usize,
        max_position: Option<u64>,
    ) -> Option<Deferred> {
        let se = &self.streams[stream as usize];
        let positions = &se.positions;
        let visible = match max_position {
            Some(max) => positions.count_at_or_below(max),
            None => positions.len(),
        };
        if visible == 0 {
            return None;
        }
        let mut reader = positions.reader();
        let limit = limit as u64;
        // Versions are turned into indexes of the list, which leaves out removed ones.
        match direction {
            Direction::Forward => {
                let from = se.index_from(from_version.unwrap_or(0)).min(visible);
                let to = from.saturating_add(limit).min(visible);
                Some(self.entries.defer((from..to).filter_map(|i| reader.get(i))))
            }
            Direction::Backward => {
                let end = match from_version {
                    Some(v) => se.index_from(v.saturating_add(1)).min(visible),
                    None => visible,
                };
                let start = end.saturating_sub(limit);
                Some(
                    self.entries
                        .defer((start..end).rev().filter_map(|i| reader.get(i))),
                )
            }
        }
    }

    /// Positions of a `$all` read. Returns the positions with locations, the cursor for the
    /// next read and whether the end (or start) was reached.
    #[allow(clippy::too_many_arguments)]
    pub fn all_slice(
        &self,
        direction: Direction,
        from: Option<u64>,
        limit: usize,
        filter: &Filter,
        max_position: Option<u64>,
        scan_max: usize,
        blocks: &Blocks,
    ) -> Result<AllSlice, ReadError> {
        let Some(head) = self.head() else {
            return Ok(AllSlice {
                hits: Deferred::default(),
                next: match direction {
                    Direction::Forward => Some(from.unwrap_or(0)),
                    Direction::Backward => None,
                },
                is_end: true,
            });
        };
        let top = max_position.map_or(head, |m| m.min(head));
        let plan = plan(self, filter);
        let forward = direction == Direction::Forward;
        let mut matcher = Matcher::new(
            plan.tested,
            plan.prefix,
            forward,
            plan.walked.is_none(),
            blocks,
        );
        let driver = Driver::new(plan.walked);
        let mut hits = Deferred::default();
        let mut examined = 0usize;
        match direction {
            Direction::Forward => {
                let from = from.unwrap_or(0);
                if max_position.is_some_and(|m| m < from) || from > head {
                    return Ok(AllSlice {
                        hits,
                        next: Some(from),
                        is_end: true,
                    });
                }
                let mut cursor = driver.forward(from, blocks)?;
                let mut next = from;
                loop {
                    if hits.len() >= limit || examined >= scan_max {
                        // Report the end when nothing is left to examine.
                        let is_end = cursor.peek_forward()?.is_none_or(|p| p > top);
                        return Ok(AllSlice {
                            hits,
                            next: Some(if is_end { next.max(top + 1) } else { next }),
                            is_end,
                        });
                    }
                    match cursor.next_forward()? {
                        Some(p) if p <= top => {
                            examined += 1;
                            next = p + 1;
                            if matcher.matches(self, p)? {
                                hits.push(&self.entries, p);
                            }
                        }
                        _ => {
                            return Ok(AllSlice {
                                hits,
                                next: Some(next.max(top + 1)),
                                is_end: true,
                            })
                        }
                    }
                }
            }
            Direction::Backward => {
                let start = from.map_or(top, |f| f.min(top));
                let mut cursor = driver.backward(start, blocks)?;
                let mut next = Some(start);
                loop {
                    if hits.len() >= limit || examined >= scan_max {
                        let is_end = cursor.peek_backward()?.is_none();
                        return Ok(AllSlice {
                            hits,
                            next: if is_end { None } else { next },
                            is_end,
                        });
                    }
                    match cursor.next_backward()? {
                        Some(p) => {
                            examined += 1;
                            next = p.checked_sub(1);
                            if matcher.matches(self, p)? {
                                hits.push(&self.entries, p);
                            }
                            if next.is_none() {
                                return Ok(AllSlice {
                                    hits,
                                    next: None,
                                    is_end: true,
                                });
                            }
                        }
                        None => {
                            return Ok(AllSlice {
                                hits,
                                next: None,
                                is_end: true,
                            })
                        }
                    }
                }
            }
        }
    }

    /// The position of the last event recorded at or before `ts_us`, or the index file to
    /// find it in after releasing the state lock.
    pub fn position_at(&self, ts_us: i64) -> PositionAt {
        self.entries.position_at(ts_us)
    }

    pub fn list_streams(
        &self,
        after: Option<&str>,
        prefix: Option<&str>,
        limit: usize,
    ) -> (Vec<u32>, bool) {
        list_page(&self.stream_nos, after, prefix, limit)
    }

    pub fn list_categories(
        &self,
        after: Option<&str>,
        prefix: Option<&str>,
        limit: usize,
    ) -> (Vec<u32>, bool) {
        list_page(&self.category_nos, after, prefix, limit)
    }

    /// What an index file written now holds: the positions from the first whose id is held
    /// in memory (those before are in segment index files) to the last, with the log end
    /// they reach. Everything the file holds is append-only while the store is open (entries
    /// by position, stream and type names by number, ids in memory from that first
    /// position on, as long as the checkpoint lock keeps them from moving to a file), so it
    /// can be encoded a piece at a time while appends go on in between.
    pub fn encode_mark(&self, log_end: LogEnd) -> EncodeMark {
        EncodeMark {
            first: self
                .ids
                .in_memory_from(self.next_position())
                .unwrap_or(self.next_position()),
            end: self.next_position(),
            log_end,
        }
    }
}

/// A stream's list without the versions a scavenge removed, built before the swap
/// ([`Index::prepare_removal`]).
pub(crate) struct PreparedList {
    stream: u32,
    /// The stream's stored events and removed versions when it was built.
    stored: u64,
    was: RemovedVersions,
    list: PositionList,
    removed: RemovedVersions,
}

/// What a swap of a scavenged segment took out of the index: dropped after the state lock
/// is released.
pub(crate) struct ReleasedScavenged {
    _files: Vec<Arc<EntryFile>>,
    _ids: Option<IdSection>,
    _lists: Vec<PositionList>,
}

/// Lends the index to an encoder for one chunk at a time.
pub(crate) type Lend<'a> = &'a mut dyn FnMut(&mut dyn FnMut(&Index));

/// Appends the entries of positions `from..to` to `out`, 40 bytes each, with stream and type
/// numbers local to the file (numbered in the order the entries first use them), then the
/// names of those streams and types; returns their counts. Each entry's id and position go
/// to `pairs` too. Takes `chunk` entries (or names) at a time from the index `index` lends.
/// Fails when an id is no longer held in memory.
fn encode_local(
    positions: std::ops::Range<u64>,
    chunk: usize,
    index: Lend<'_>,
    out: &mut Vec<u8>,
    pairs: &mut Vec<(Uuid, u64)>,
) -> Result<(u32, u32), String> {
    let mut streams: Numbering<u32> = Numbering::default();
    let mut types: Numbering<u32> = Numbering::default();
    let mut failed: Option<String> = None;
    let chunk = chunk.max(1) as u64;
    let mut at = positions.start;
    while at < positions.end {
        let to = (at + chunk).min(positions.end);
        index(&mut |i| {
            for p in at..to {
                let Some(id) = i.ids.in_memory(p) else {
                    failed = Some(format!("the id of position {p} is no longer in memory"));
                    return;
                };
                let e = match i.entries.get(p) {
                    Ok(e) => e,
                    Err(c) => {
                        failed = Some(c.to_string());
                        return;
                    }
                };
                let (s, t) = (streams.number(e.stream), types.number(e.event_type));
                put_entry(out, e.loc, e.recorded_at_us, (s, t), &id);
                pairs.push((id, p));
            }
        });
        if let Some(reason) = failed {
            return Err(reason);
        }
        at = to;
    }
    for names in streams.order.chunks(chunk as usize) {
        index(&mut |i| {
            for &s in names {
                put_name(out, i.streams[s as usize].name());
            }
        });
    }
    for names in types.order.chunks(chunk as usize) {
        index(&mut |i| {
            for &t in names {
                put_name(out, &i.types[t as usize].name);
            }
        });
    }
    Ok((streams.order.len() as u32, types.order.len() as u32))
}

/// Numbers local to a file, given in order of first use.
struct Numbering<K> {
    nos: FastMap<K, u32>,
    order: Vec<K>,
}

impl<K> Default for Numbering<K> {
    fn default() -> Self {
        Numbering {
            nos: FastMap::default(),
            order: Vec::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> Numbering<K> {
    /// `k`'s number, the next one when it is new.
    fn number(&mut self, k: K) -> u32 {
        let next = self.order.len() as u32;
        *self.nos.entry(k).or_insert_with(|| {
            self.order.push(k);
            next
        })
    }
}

/// Appends one 40-byte entry: location, time, local stream and type numbers, id.
fn put_entry(out: &mut Vec<u8>, loc: Loc, recorded_at_us: i64, (s, t): (u32, u32), id: &Uuid) {
    out.extend_from_slice(&loc.to_le_bytes());
    out.extend_from_slice(&recorded_at_us.to_le_bytes());
    out.extend_from_slice(&s.to_le_bytes());
    out.extend_from_slice(&t.to_le_bytes());
    out.extend_from_slice(id.as_bytes());
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
}

/// Reads `count` names (a u16 length, then UTF-8) from `body` at `at`, moving `at` past them.
/// Each name takes at least its 2-byte length: a count the file cannot hold is refused before
/// anything that large is reserved.
fn read_names<'a>(body: &'a [u8], at: &mut usize, count: usize) -> Result<Vec<&'a str>, String> {
    let mut names = Vec::with_capacity(count.min(body.len().saturating_sub(*at) / 2));
    for _ in 0..count {
        if body.len() < *at + 2 {
            return Err("index file truncated".to_owned());
        }
        let len = u16_at(body, *at) as usize;
        *at += 2;
        if body.len() < *at + len {
            return Err("index file truncated".to_owned());
        }
        names.push(
            std::str::from_utf8(&body[*at..*at + len]).map_err(|_| "index name is not UTF-8")?,
        );
        *at += len;
    }
    Ok(names)
}

/// The entries of an index file (whole or a segment's) and the names they use, parsed and
/// checked (every entry names a stream and a type the file lists).
struct LocalEntries<'a> {
    entries: &'a [u8],
    streams: Vec<StreamId>,
    types: Vec<Box<str>>,
    /// Where the bytes after the names start.
    rest: usize,
}

impl<'a> LocalEntries<'a> {
    /// Parses `n` entries at `at` in `body`, then `stream_count` and `type_count` names.
    fn parse(
        body: &'a [u8],
        at: usize,
        n: usize,
        stream_count: usize,
        type_count: usize,
    ) -> Result<Self, String> {
        let entries = &body[at..at + n * INDEX_ENTRY_BYTES];
        let mut rest = at + n * INDEX_ENTRY_BYTES;
        let stream_names = read_names(body, &mut rest, stream_count)?;
        let types = read_names(body, &mut rest, type_count)?;
        // A name listed twice would give its index number two local ones: its positions in
        // this file two parts (out of order), its entries two numbers.
        for names in [&stream_names, &types] {
            let mut seen: std::collections::HashSet<&str, foldhash::fast::RandomState> =
                std::collections::HashSet::with_capacity_and_hasher(
                    names.len(),
                    Default::default(),
                );
            if !names.iter().all(|n| seen.insert(n)) {
                return Err("index file names a stream or type twice".to_owned());
            }
        }
        let streams = stream_names
            .iter()
            .map(|s| StreamId::new(*s).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let types: Vec<Box<str>> = types.into_iter().map(Box::from).collect();
        for e in entries.chunks_exact(INDEX_ENTRY_BYTES) {
            if u32_at(e, 16) as usize >= streams.len() || u32_at(e, 20) as usize >= types.len() {
                return Err("index entry names an unknown stream or type".to_owned());
            }
        }
        Ok(LocalEntries {
            entries,
            streams,
            types,
            rest,
        })
    }

    /// The id of entry `k`.
    fn id(&self, k: usize) -> Uuid {
        uuid_at(self.entries, k * INDEX_ENTRY_BYTES + 24)
    }

    /// Adds the entries, positions `first..`, from `index`'s next position on, to `index`.
    /// The next position must be among them (or right after them), and must be `first`
    /// unless `may_skip`. Without `file`, the entries and their ids are kept in memory. With
    /// it (sealed segment `file.0`'s index file, whose entries these are, and its postings),
    /// the index keeps only their positions in its stream lists, and reads the entries from
    /// the file, with the index's numbers of its names, and the category and type positions
    /// from its postings.
    fn push_into(
        &self,
        index: &mut Index,
        first: u64,
        file: Option<(u64, EntryFile, PostingsDir, &[u8])>,
        runs: Option<RemovedRuns>,
        may_skip: bool,
    ) -> Result<(), String> {
        let next = index.next_position();
        let n = (self.entries.len() / INDEX_ENTRY_BYTES) as u64;
        if next < first || next > first + n || (next != first && !may_skip) {
            return Err(format!(
                "it starts at position {first}, the index continues at {next}"
            ));
        }
        // A scavenged segment's file gives the versions removed from it, per stream: what
        // each stream's removed versions become, worked out (and refused when they do not
        // carry the stream on) before anything changes. Streams with no event left in the
        // segment come after the file's own.
        let mut removed: Vec<Option<RemovedVersions>> = Vec::new();
        let mut vanished: Vec<(StreamId, RemovedVersions)> = Vec::new();
        if let (Some(runs), Some((_, _, dir, b))) = (&runs, &file) {
            let run_of: HashMap<&str, &std::ops::Range<u64>> =
                runs.iter().map(|(s, r)| (s.as_str(), r)).collect();
            let after_run = |stream: &StreamId,
                             count: u64|
             -> Result<Option<RemovedVersions>, String> {
                let Some(run) = run_of.get(stream.as_str()) else {
                    return Ok(None);
                };
                let (stored, was) =
                    index
                        .stream_no(stream)
                        .map_or((0, RemovedVersions::default()), |no| {
                            let se = &index.streams[no as usize];
                            (se.positions.len(), se.removed)
                        });
                // The events before the run come first: none, or version 0 before a run
                // from 1 (what a scavenge removes starts at version 0 or 1).
                let next = stored + was.count;
                let before = run
                    .start
                    .checked_sub(next)
                    .filter(|&k| k <= count && (k == 0 || (k == 1 && run.start == 1)));
                let refused = || {
                    format!(
                        "stream {stream}'s versions {run:?} removed here do not carry it on from {next}"
                    )
                };
                let before = before.ok_or_else(refused)?;
                was.after(stored + before, run.end, true)
                    .map(Some)
                    .map_err(|_| refused())
            };
            for (s, stream) in self.streams.iter().enumerate() {
                let count = u64::from(u32_at(b, dir.streams_at.0 + 4 * s));
                removed.push(after_run(stream, count)?);
            }
            let own: std::collections::HashSet<&str> =
                self.streams.iter().map(StreamId::as_str).collect();
            for (name, _) in runs.iter().filter(|(n, _)| !own.contains(n.as_str())) {
                let stream = StreamId::new(name.as_str()).map_err(|e| e.to_string())?;
                let run = after_run(&stream, 0)?.expect("a run of its own");
                vanished.push((stream, run));
            }
        }
        // Names are numbered in the index as the entries pushed first use them: one that only
        // skipped entries use is not added. (A file's names are listed in that order.)
        let mut stream_nos: Vec<Option<u32>> = vec![None; self.streams.len()];
        let mut type_nos: Vec<Option<u32>> = vec![None; self.types.len()];
        if let Some((_, _, dir, b)) = &file {
            // Each stream's postings are its positions in order (checked in `parse`): the
            // stream lists take them stream by stream, 4 bytes read per event and one list
            // at a time, rather than entry by entry (40 bytes, lists in turn). Every name
            // the file lists is numbered, so no entry reads the placeholder below. The
            // category and type positions come from the postings, below.
            debug_assert_eq!(next, first);
            let (mut count_at, mut at) = dir.streams_at;
            for (s, no) in stream_nos.iter_mut().enumerate() {
                let count = u32_at(b, count_at) as usize;
                count_at += 4;
                let list = index.stream_no_or_insert(&self.streams[s]);
                *no = Some(list);
                let se = &mut index.streams[list as usize];
                for j in 0..count {
                    se.positions.push(first + u64::from(u32_at(b, at + j * 4)));
                }
                if let Some(Some(run)) = removed.get(s) {
                    index.set_removed(list, *run);
                }
                at += count * 4;
            }
            for (stream, run) in vanished {
                let s = index.stream_no_or_insert(&stream);
                index.set_removed(s, run);
            }
            for (t, no) in type_nos.iter_mut().enumerate() {
                *no = Some(index.type_no_or_insert(&self.types[t]));
            }
        } else {
            let skip = (next - first) as usize;
            for (k, e) in self
                .entries
                .chunks_exact(INDEX_ENTRY_BYTES)
                .enumerate()
                .skip(skip)
            {
                let (s, t) = (u32_at(e, 16) as usize, u32_at(e, 20) as usize);
                let stream = *stream_nos[s]
                    .get_or_insert_with(|| index.stream_no_or_insert(&self.streams[s]));
                let event_type =
                    *type_nos[t].get_or_insert_with(|| index.type_no_or_insert(&self.types[t]));
                index.push_resolved(
                    first + k as u64,
                    u64_at(e, 0),
                    u64_at(e, 8) as i64,
                    stream,
                    event_type,
                    Some(self.id(k)),
                );
            }
        }
        if let Some((segment_no, mut file, dir, _)) = file.filter(|(_, f, _, _)| f.span() > 0) {
            // Every name of the file is numbered above: no entry reads the placeholder.
            let numbers = |nos: &[Option<u32>]| -> Box<[u32]> {
                nos.iter().map(|n| n.unwrap_or(u32::MAX)).collect()
            };
            file.set_names(numbers(&stream_nos), numbers(&type_nos));
            // The first and last times from the bytes checked, not from the file again: the
            // lists hold these positions already, so nothing may fail from here.
            let time = |k: u64| u64_at(&self.entries[k as usize * INDEX_ENTRY_BYTES..], 8) as i64;
            let file = Arc::new(file);
            let times = n.checked_sub(1).map(|last| (time(0), time(last)));
            index.entries.push_file(segment_no, file.clone(), times);
            index.push_postings_file(segment_no, &file, &dir);
        }
        Ok(())
    }
}

/// The positions and log end an index file is encoded up to ([`Index::encode_mark`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncodeMark {
    pub first: u64,
    pub end: u64,
    pub log_end: LogEnd,
}

/// Encodes the index file as of `mark`, at most `chunk` entries (or names) at a time, each
/// chunk from the index `index` lends for it (the store holds its state lock only for that
/// long, so appends and reads go on between chunks). The index may grow between chunks;
/// what the file holds up to `mark` does not change (see [`Index::encode_mark`]).
pub(crate) fn encode_in_chunks(
    mark: EncodeMark,
    chunk: usize,
    mut index: impl FnMut(&mut dyn FnMut(&Index)),
) -> Result<Vec<u8>, String> {
    let end = mark.log_end;
    let fields = [
        mark.first,
        mark.end - mark.first,
        end.segment_no,
        end.offset,
        end.salt,
    ];
    encode_file(
        (INDEX_MAGIC, INDEX_VERSION),
        fields,
        mark.first..mark.end,
        chunk,
        &mut index,
        false,
    )
}

/// Encodes an index file (whole or a segment's; both have a 64-byte header): `magic` and
/// `version`, a reserved word, the five header `fields`, the two name counts; then the
/// entries of `positions` and their names ([`encode_local`]); with `id_section`, the
/// entries' ids sorted and their bloom filter; then the CRC.
fn encode_file(
    (magic, version): (&[u8; 8], u32),
    fields: [u64; 5],
    positions: std::ops::Range<u64>,
    chunk: usize,
    index: Lend<'_>,
    id_section: bool,
) -> Result<Vec<u8>, String> {
    let n = (positions.end - positions.start) as usize;
    let per_event = INDEX_ENTRY_BYTES
        + if id_section {
            ID_PAIR_BYTES + POSTINGS_BYTES_PER_EVENT
        } else {
            0
        };
    let mut out = Vec::with_capacity(INDEX_HEADER_BYTES + n * per_event + n * 2 + 4);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for v in fields {
        out.extend_from_slice(&v.to_le_bytes());
    }
    // The name counts, filled in at the end.
    out.extend_from_slice(&[0u8; 8]);
    let mut pairs = Vec::with_capacity(if id_section { n } else { 0 });
    let (s, t) = encode_local(positions, chunk, index, &mut out, &mut pairs)?;
    out[56..60].copy_from_slice(&s.to_le_bytes());
    out[60..64].copy_from_slice(&t.to_le_bytes());
    if id_section {
        // A segment's file: its postings, then its ids.
        encode_postings_and_ids(&mut out, (n, s, t), None, pairs)?;
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Appends a segment index file's postings and id section to `out`, which holds its header
/// and its `n` entries, then the names of its `s` streams (and `t` types); `offsets`: its
/// entries' positions, in a scavenged segment's file (see [`encode_postings`]); `pairs`:
/// its events' ids and positions.
fn encode_postings_and_ids(
    out: &mut Vec<u8>,
    (n, s, t): (usize, u32, u32),
    offsets: Option<&[u32]>,
    pairs: Vec<(Uuid, u64)>,
) -> Result<(), String> {
    if u32::try_from(n).is_err() {
        return Err(format!(
            "a segment of {n} events is too large for its postings"
        ));
    }
    let entries_at = INDEX_HEADER_BYTES;
    let mut names_at = entries_at + n * INDEX_ENTRY_BYTES;
    let streams = read_names(out, &mut names_at, s as usize)?;
    let (categories, stream_categories) = local_categories(streams);
    let counts = (s as usize, t as usize, categories.len());
    let mut postings =
        Vec::with_capacity(n * POSTINGS_BYTES_PER_EVENT + (counts.0 + counts.1 + counts.2) * 4);
    encode_postings(
        &out[entries_at..entries_at + n * INDEX_ENTRY_BYTES],
        offsets,
        &stream_categories,
        counts,
        &mut postings,
    );
    out.extend_from_slice(&postings);
    encode_id_section(pairs, out);
    Ok(())
}

const INDEX_HEADER_BYTES: usize = 64;
/// The header of version 1 index files (the whole index, from position 0).
const INDEX_V1_HEADER_BYTES: usize = 56;
/// Bytes of one entry of an index file.
const INDEX_ENTRY_BYTES: usize = 40;
/// Bytes per event of a segment index file's postings: one u32 in each of the stream, type
/// and category postings.
const POSTINGS_BYTES_PER_EVENT: usize = 12;

/// The bytes of file `b` before its CRC, when it starts with `magic`, holds at least `header`
/// bytes and its CRC checks out; `what` names the kind of file in the error.
fn checked_body<'a>(
    b: &'a [u8],
    magic: &[u8; 8],
    header: usize,
    what: &str,
) -> Result<&'a [u8], String> {
    if b.len() < header + 4 || &b[0..8] != magic {
        return Err(format!("not a Strata {what}"));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32_at(crc, 0) {
        return Err(format!("{what} CRC mismatch"));
    }
    Ok(body)
}

/// An index file whose CRC and header check out: a durable record of what was acknowledged
/// when it was written (its events, and the log end they reach), checked against the log on
/// open whether or not its entries are used.
pub(crate) struct IndexFile {
    bytes: Vec<u8>,
    header: usize,
    /// Where its stream and type counts are.
    counts_at: usize,
    /// The first position it holds (0 in version 1 files, which hold the whole index).
    pub first: u64,
    /// The end of the log it covers.
    pub end: LogEnd,
    /// The position after the last it holds.
    pub events: u64,
}

impl IndexFile {
    /// Checks the file's bytes (magic, CRC, version, room for its entries; not its entries).
    pub fn check(bytes: Vec<u8>) -> Result<IndexFile, String> {
        let b = &bytes;
        let body = checked_body(b, INDEX_MAGIC, INDEX_V1_HEADER_BYTES, "index file")?;
        // Version 1: the whole index; version 2: from a first position on.
        let (header, first, at) = match u32_at(b, 8) {
            1 => (INDEX_V1_HEADER_BYTES, 0, 16),
            INDEX_VERSION if body.len() >= INDEX_HEADER_BYTES => {
                (INDEX_HEADER_BYTES, u64_at(b, 16), 24)
            }
            _ => return Err("index file version not supported".to_owned()),
        };
        let n = u64_at(b, at);
        let entries_bytes = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(INDEX_ENTRY_BYTES))
            .ok_or("index too large")?;
        if body.len() < header.saturating_add(entries_bytes) {
            return Err("index file truncated".to_owned());
        }
        let events = first.checked_add(n).ok_or("index too large")?;
        let end = LogEnd {
            segment_no: u64_at(b, at + 8),
            offset: u64_at(b, at + 16),
            salt: u64_at(b, at + 24),
        };
        Ok(IndexFile {
            counts_at: at + 32,
            bytes,
            header,
            first,
            end,
            events,
        })
    }

    /// Where the file places position `p`.
    pub fn loc(&self, p: u64) -> Option<Loc> {
        (self.first..self.events)
            .contains(&p)
            .then(|| u64_at(&self.bytes, self.entry_offset(p) as usize))
    }

    /// The first position the file places in segment `segment_no` or a later one (the
    /// position after its last when there is none). Locations increase with positions.
    pub fn first_in_segment(&self, segment_no: u64) -> u64 {
        let (mut lo, mut hi) = (self.first, self.events);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.loc(mid).is_some_and(|l| loc_segment(l) < segment_no) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The event id the file gives position `p`.
    pub fn id(&self, p: u64) -> Option<Uuid> {
        self.loc(p)?;
        Some(uuid_at(&self.bytes, self.entry_offset(p) as usize + 24))
    }

    /// The byte offset of position `p`'s entry in the file.
    pub fn entry_offset(&self, p: u64) -> u64 {
        self.header as u64 + (p - self.first) * INDEX_ENTRY_BYTES as u64
    }

    /// Adds the file's events from `index`'s next position on (one of the file's, or the one
    /// after its last: segment index files may hold its first ones) to `index`, after checking
    /// its structure (names, and that every entry names one of them); their ids are kept in
    /// memory. On an error the index is unchanged.
    pub fn push_into(&self, index: &mut Index) -> Result<(), String> {
        let body = &self.bytes[..self.bytes.len() - 4];
        let local = LocalEntries::parse(
            body,
            self.header,
            (self.events - self.first) as usize,
            u32_at(body, self.counts_at) as usize,
            u32_at(body, self.counts_at + 4) as usize,
        )?;
        local.push_into(index, self.first, None, None, true)
    }
}

/// The categories of a file's streams, numbered in the order the streams (in their local
/// order) first name them: their names, and each stream's local category number.
fn local_categories<'a>(streams: impl IntoIterator<Item = &'a str>) -> (Vec<&'a str>, Vec<u32>) {
    let mut names: Vec<&str> = Vec::new();
    let mut nos: FastMap<&str, u32> = FastMap::default();
    let of_stream = streams
        .into_iter()
        .map(|s| {
            let c = category_of(s);
            *nos.entry(c).or_insert_with(|| {
                names.push(c);
                names.len() as u32 - 1
            })
        })
        .collect();
    (names, of_stream)
}

/// Appends the postings section of a segment index file whose 40-byte `entries` use
/// `stream_count` streams (of local categories `stream_categories`, numbered below
/// `category_count`) and `type_count` types: the count of positions of each stream, type and
/// category, then, for the streams, the types and the categories in turn, the positions of
/// each, in local-number order, as u32 offsets from the segment's first position, increasing.
/// Entry `k`'s offset is `k`, or `offsets[k]` in a scavenged segment.
fn encode_postings(
    entries: &[u8],
    offsets: Option<&[u32]>,
    stream_categories: &[u32],
    (stream_count, type_count, category_count): (usize, usize, usize),
    out: &mut Vec<u8>,
) {
    let n = entries.len() / INDEX_ENTRY_BYTES;
    let local = |kind: usize, e: &[u8]| -> usize {
        let s = u32_at(e, 16) as usize;
        match kind {
            0 => s,
            1 => u32_at(e, 20) as usize,
            _ => stream_categories[s] as usize,
        }
    };
    let counts: Vec<Vec<u32>> = [stream_count, type_count, category_count]
        .iter()
        .enumerate()
        .map(|(kind, &names)| {
            let mut c = vec![0u32; names];
            for e in entries.chunks_exact(INDEX_ENTRY_BYTES) {
                c[local(kind, e)] += 1;
            }
            c
        })
        .collect();
    for c in counts.iter().flatten() {
        out.extend_from_slice(&c.to_le_bytes());
    }
    let mut postings = vec![0u32; n];
    for (kind, c) in counts.iter().enumerate() {
        let mut next: Vec<u32> = c
            .iter()
            .scan(0u32, |sum, &k| {
                let at = *sum;
                *sum += k;
                Some(at)
            })
            .collect();
        for (k, e) in entries.chunks_exact(INDEX_ENTRY_BYTES).enumerate() {
            let slot = &mut next[local(kind, e)];
            postings[*slot as usize] = offsets.map_or(k as u32, |o| o[k]);
            *slot += 1;
        }
        for p in &postings {
            out.extend_from_slice(&p.to_le_bytes());
        }
    }
}

/// Checks a segment index file's postings against its entries, in the pass open makes over
/// them: that its streams' postings are exactly its entries' positions by stream, in order
/// (they fill the stream lists on open), and that each type's count is the number of entries
/// naming it (so a type listed is one an event has). Entry `k` naming stream `s`, given in
/// order ([`entry`](Self::entry)), must be the next posting of `s` not yet met, and takes one
/// from its type's count. With each kind's counts adding up to the number of entries (checked
/// before), every posting is then met once and every type's count used up. A type's postings
/// themselves are checked as they are read, and by `strata verify`.
struct PostingsCheck<'a> {
    b: &'a [u8],
    /// Where the streams' postings start.
    postings_at: usize,
    /// Per stream, the slot of its next posting, and the end of its slots.
    next: Vec<u32>,
    end: Vec<u32>,
    /// Per type, the entries naming it not met yet.
    types_left: Vec<u32>,
}

impl<'a> PostingsCheck<'a> {
    /// The check of `b`'s postings of `streams` streams and `types` types: their counts at
    /// `streams_at.0` (streams', then types'), the streams' postings at `streams_at.1`.
    fn new(
        b: &'a [u8],
        (counts_at, postings_at): (usize, usize),
        streams: usize,
        types: usize,
    ) -> Self {
        let mut next = Vec::with_capacity(streams);
        let mut end = Vec::with_capacity(streams);
        let mut sum = 0u32;
        for s in 0..streams {
            next.push(sum);
            sum = sum.saturating_add(u32_at(b, counts_at + 4 * s));
            end.push(sum);
        }
        let types_at = counts_at + 4 * streams;
        let types_left = (0..types).map(|t| u32_at(b, types_at + 4 * t)).collect();
        PostingsCheck {
            b,
            postings_at,
            next,
            end,
            types_left,
        }
    }

    /// The entry `e` of the position `offset` from the segment's first: the entries must
    /// come in order.
    fn entry(&mut self, offset: u32, e: &[u8]) -> Result<(), String> {
        let (s, t) = (u32_at(e, 16) as usize, u32_at(e, 20) as usize);
        let slot = self
            .next
            .get_mut(s)
            .ok_or("an entry names an unknown stream")?;
        if *slot >= self.end[s] || u32_at(self.b, self.postings_at + 4 * *slot as usize) != offset {
            return Err("its stream postings are not its entries' positions by stream".to_owned());
        }
        *slot += 1;
        let left = self
            .types_left
            .get_mut(t)
            .ok_or("an entry names an unknown type")?;
        *left = left
            .checked_sub(1)
            .ok_or("its type counts are not its entries' by type")?;
        Ok(())
    }
}

/// Where an event type's or category's postings lie in a segment index file.
#[derive(Debug, Clone)]
struct NameAt {
    /// The byte offset of its first posting, and how many it has.
    at: usize,
    count: u64,
    /// Its first and last positions (meaningless without postings).
    lo: u64,
    hi: u64,
    /// The first posting of each of its blocks of [`postings::FILE_BLOCK`].
    fences: Box<[u32]>,
}

/// The postings of a segment index file: where each event type's and category's lie, and
/// where the streams' start (see [`encode_postings`]).
pub(crate) struct PostingsDir {
    /// The segment's first position.
    base: u64,
    /// Where the streams' counts and the streams' postings start (checked against the
    /// entries when the file is parsed whole: [`PostingsCheck`]).
    streams_at: (usize, usize),
    types: Vec<String>,
    type_at: Vec<NameAt>,
    categories: Vec<String>,
    category_at: Vec<NameAt>,
    /// Where the section ends.
    end: usize,
}

impl PostingsDir {
    /// Reads the postings section at `at` of the file `b` of the `n` events of the `span`
    /// positions from `base` on, whose streams and types are `streams` and `types`. Checks that each kind's
    /// counts add up to `n`, that every stream and type has postings, and each type's and
    /// category's first and last postings lie in the segment (its other postings are checked
    /// as they are read, and by `strata verify`; the streams' against the entries by
    /// [`PostingsCheck`]).
    fn parse(
        b: &[u8],
        at: usize,
        (base, span): (u64, u64),
        n: u64,
        streams: &[StreamId],
        types: &[impl AsRef<str>],
    ) -> Result<PostingsDir, String> {
        let (categories, _) = local_categories(streams.iter().map(StreamId::as_str));
        let names = [streams.len(), types.len(), categories.len()];
        let counts_bytes = names.iter().sum::<usize>() * 4;
        let n_bytes = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(4))
            .ok_or("segment index too large")?;
        let end = at
            .checked_add(counts_bytes)
            .and_then(|e| e.checked_add(n_bytes.checked_mul(3)?))
            .filter(|&e| e <= b.len())
            .ok_or("its postings section is truncated")?;
        let mut count_at = at;
        let mut postings_at = at + counts_bytes;
        let mut kinds: Vec<Vec<NameAt>> = Vec::with_capacity(3);
        for (kind_no, names) in names.into_iter().enumerate() {
            let mut sum = 0u64;
            // Streams' postings are not kept here: they fill the stream lists once checked
            // against the entries whole ([`PostingsCheck`]).
            let mut kind = Vec::with_capacity(if kind_no == 0 { 0 } else { names });
            for _ in 0..names {
                let count = u64::from(u32_at(b, count_at));
                count_at += 4;
                let name_at = postings_at + sum as usize * 4;
                sum += count;
                if sum > n {
                    return Err("its postings counts exceed its events".to_owned());
                }
                // The writer lists only names its entries use: a stream or type with no
                // posting would be a name in the index that no event has.
                if count == 0 && kind_no < 2 {
                    return Err("it lists a stream or type no event of it has".to_owned());
                }
                if kind_no == 0 {
                    continue;
                }
                let (lo, hi) = match count {
                    0 => (0, 0),
                    k => (
                        u64::from(u32_at(b, name_at)),
                        u64::from(u32_at(b, name_at + (k as usize - 1) * 4)),
                    ),
                };
                if count > 0 && (lo > hi || hi >= span) {
                    return Err("a name's postings lie outside its segment".to_owned());
                }
                let fences = (0..count.div_ceil(postings::FILE_BLOCK))
                    .map(|j| u32_at(b, name_at + (j * postings::FILE_BLOCK) as usize * 4))
                    .collect();
                kind.push(NameAt {
                    at: name_at,
                    count,
                    lo: base + lo,
                    hi: base + hi,
                    fences,
                });
            }
            if sum != n {
                return Err("its postings counts do not add up to its events".to_owned());
            }
            postings_at += n_bytes;
            kinds.push(kind);
        }
        let category_at = kinds.pop().unwrap_or_default();
        let type_at = kinds.pop().unwrap_or_default();
        Ok(PostingsDir {
            base,
            streams_at: (at, at + counts_bytes),
            types: types.iter().map(|t| t.as_ref().to_owned()).collect(),
            type_at,
            categories: categories.into_iter().map(str::to_owned).collect(),
            category_at,
            end,
        })
    }

    /// What a list of segment `segment_no` is swapped for, or added as: the postings `at`
    /// describes, in `file`.
    fn swap<'a>(&self, segment_no: u64, file: &'a Arc<EntryFile>, at: &'a NameAt) -> Swap<'a> {
        Swap {
            segment_no,
            file,
            base: self.base,
            at: at.at,
            count: at.count,
            lo: at.lo,
            hi: at.hi,
            fences: &at.fences,
        }
    }
}

/// One sealed segment, as its index file describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SealedSegment {
    pub segment_no: u64,
    pub salt: u64,
    /// Its first position.
    pub first: u64,
    /// The position after its last event.
    pub end_position: u64,
    /// Its length: the end of its last record.
    pub end_offset: u64,
}

const SEGMENT_INDEX_MAGIC: &[u8; 8] = b"STRATASI";
/// Version 2 adds the sorted id section and its bloom filter; version 3 the postings (files of
/// earlier versions are written again).
const SEGMENT_INDEX_VERSION: u32 = 3;
/// The version of a scavenged segment's file: version 3 with the positions of its events
/// (the others were removed) and its streams' versions ([`Scavenged`]).
const SCAVENGED_INDEX_VERSION: u32 = 4;
const SEGMENT_INDEX_HEADER_BYTES: usize = 64;

/// Encodes the index file of one sealed segment: its entries (as in the whole index file, with
/// stream and type numbers local to the file), the names they use, and its event ids sorted,
/// with a bloom filter. The entries are taken
/// [`chunk`](crate::limits::INDEX_ENCODE_CHUNK_ENTRIES) at a time from the index `index` lends
/// for each (see [`encode_in_chunks`]): a seal encodes one segment's worth, never the whole.
/// Fails when the segment's ids are no longer in memory.
pub(crate) fn encode_segment_index(
    seg: SealedSegment,
    chunk: usize,
    mut index: impl FnMut(&mut dyn FnMut(&Index)),
) -> Result<Vec<u8>, String> {
    let n = seg.end_position.saturating_sub(seg.first);
    encode_file(
        (SEGMENT_INDEX_MAGIC, SEGMENT_INDEX_VERSION),
        [seg.segment_no, seg.salt, seg.first, n, seg.end_offset],
        seg.first..seg.end_position,
        chunk,
        &mut index,
        true,
    )
}

/// Encodes the index file of sealed segment `seg` (positions `first..end_position`) after a
/// scavenge removed some of its events (version 4): the events `kept`, in position order,
/// as [`encode_segment_index`] encodes a segment's, and the sections [`Scavenged`] names.
pub(crate) fn encode_scavenged_segment_index(
    seg: SealedSegment,
    kept: &[NewEntry<'_>],
    runs: &[(String, std::ops::Range<u64>)],
) -> Result<Vec<u8>, String> {
    let span = seg.end_position.saturating_sub(seg.first);
    let span32 = u32::try_from(span)
        .map_err(|_| format!("a segment of {span} positions is too large for its postings"))?;
    let n = kept.len();
    let mut out = Vec::with_capacity(
        INDEX_HEADER_BYTES
            + n * (INDEX_ENTRY_BYTES + ID_PAIR_BYTES + POSTINGS_BYTES_PER_EVENT + 4 + 2)
            + 4,
    );
    out.extend_from_slice(SEGMENT_INDEX_MAGIC);
    out.extend_from_slice(&SCAVENGED_INDEX_VERSION.to_le_bytes());
    out.extend_from_slice(&span32.to_le_bytes());
    for v in [
        seg.segment_no,
        seg.salt,
        seg.first,
        n as u64,
        seg.end_offset,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    // The name counts, filled in below.
    out.extend_from_slice(&[0u8; 8]);
    let mut streams: Numbering<&str> = Numbering::default();
    let mut types: Numbering<&str> = Numbering::default();
    let mut offsets = Vec::with_capacity(n);
    let mut pairs = Vec::with_capacity(n);
    for e in kept {
        let offset = e
            .position
            .checked_sub(seg.first)
            .filter(|&o| o < span && offsets.last().is_none_or(|&l| u64::from(l) < o))
            .ok_or_else(|| {
                format!(
                    "event at position {} is out of order or outside its segment",
                    e.position
                )
            })?;
        offsets.push(offset as u32);
        let (s, t) = (
            streams.number(e.stream.as_str()),
            types.number(e.event_type),
        );
        put_entry(&mut out, e.loc, e.recorded_at_us, (s, t), &e.event_id);
        pairs.push((e.event_id, e.position));
    }
    for name in streams.order.iter().chain(&types.order) {
        put_name(&mut out, name);
    }
    let (s, t) = (streams.order.len() as u32, types.order.len() as u32);
    out[56..60].copy_from_slice(&s.to_le_bytes());
    out[60..64].copy_from_slice(&t.to_le_bytes());
    encode_postings_and_ids(&mut out, (n, s, t), Some(&offsets), pairs)?;
    for o in &offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    let runs_at = out.len();
    crate::format::encode_removed_runs(runs, seg.salt, &mut out);
    let runs_len = (out.len() - runs_at) as u32;
    out.extend_from_slice(&runs_len.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// A sealed segment's index file whose CRC and header check out.
pub(crate) struct SegmentIndexFile {
    bytes: FileBytes,
    path: PathBuf,
    /// The segment: its positions `first..end_position` (those of its events, and of the
    /// events a scavenge removed from it).
    pub seg: SealedSegment,
    version: u32,
}

/// The sections a scavenged segment's index file (version 4) adds after its bloom filter:
/// its events' positions, as u32 offsets from its first, increasing (4 bytes per event);
/// then the segment's removed runs, as the segment holds them after its records
/// ([`crate::format::encode_removed_runs`]); then their length (u32).
#[derive(Debug, Clone, Copy)]
struct Scavenged {
    /// Where the positions start, and the removed runs.
    offsets_at: usize,
    runs_at: usize,
}

impl SegmentIndexFile {
    /// Checks the bytes of the file at `path` (magic, CRC, version, room for its entries).
    pub fn check(bytes: impl Into<FileBytes>, path: PathBuf) -> Result<SegmentIndexFile, String> {
        let bytes = bytes.into();
        let b = &bytes;
        let body = checked_body(
            b,
            SEGMENT_INDEX_MAGIC,
            SEGMENT_INDEX_HEADER_BYTES,
            "segment index file",
        )?;
        let version = u32_at(b, 8);
        // Versions 1 and 2 lay out their header and entries as version 3: they are still
        // read for what they record (the loss checks), not loaded.
        let per_event = match version {
            1 => INDEX_ENTRY_BYTES,
            2 => INDEX_ENTRY_BYTES + ID_PAIR_BYTES,
            SEGMENT_INDEX_VERSION => INDEX_ENTRY_BYTES + ID_PAIR_BYTES + POSTINGS_BYTES_PER_EVENT,
            SCAVENGED_INDEX_VERSION => {
                INDEX_ENTRY_BYTES + ID_PAIR_BYTES + POSTINGS_BYTES_PER_EVENT + 4
            }
            _ => return Err("segment index file version not supported".to_owned()),
        };
        let first = u64_at(b, 32);
        let n = u64_at(b, 40);
        let entries_bytes = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(per_event))
            .ok_or("segment index too large")?;
        if body.len() < SEGMENT_INDEX_HEADER_BYTES.saturating_add(entries_bytes) {
            return Err("segment index file truncated".to_owned());
        }
        // A scavenged segment's file gives the positions it covers in its header's word at
        // 12 (reserved, zero, in the others): its events' and those removed.
        let (span, _scavenged) = match version {
            SCAVENGED_INDEX_VERSION => {
                let span = u64::from(u32_at(b, 12));
                let runs_len = body
                    .len()
                    .checked_sub(4)
                    .map(|at| u32_at(body, at) as usize)
                    .ok_or("segment index file truncated")?;
                let tail = (n as usize * 4)
                    .checked_add(runs_len)
                    .and_then(|t| t.checked_add(4))
                    .filter(|&t| t <= body.len())
                    .ok_or("segment index file truncated")?;
                if span < n {
                    return Err("it holds more events than positions".to_owned());
                }
                let offsets_at = body.len() - tail;
                (
                    span,
                    Some(Scavenged {
                        offsets_at,
                        runs_at: offsets_at + n as usize * 4,
                    }),
                )
            }
            _ => (n, None),
        };
        let end_position = first.checked_add(span).ok_or("segment index too large")?;
        let seg = SealedSegment {
            segment_no: u64_at(b, 16),
            salt: u64_at(b, 24),
            first,
            end_position,
            end_offset: u64_at(b, 48),
        };
        Ok(SegmentIndexFile {
            bytes,
            path,
            seg,
            version,
        })
    }

    /// Whether it is a scavenged segment's file (some of its positions have no event).
    pub fn is_scavenged(&self) -> bool {
        self.version == SCAVENGED_INDEX_VERSION
    }

    /// How many events (entries) it holds.
    fn events(&self) -> u64 {
        u64_at(&self.bytes, 40)
    }

    /// In a scavenged segment's file, where its positions and removed runs lie (their
    /// lengths were checked with the file's).
    fn scavenged(&self) -> Option<Scavenged> {
        if !self.is_scavenged() {
            return None;
        }
        let body_len = self.bytes.len() - 4;
        let runs_len = u32_at(&self.bytes, body_len - 4) as usize;
        let runs_at = body_len - 4 - runs_len;
        Some(Scavenged {
            offsets_at: runs_at - self.events() as usize * 4,
            runs_at,
        })
    }

    /// The position of its last event, `None` when it has none.
    pub fn last_event_position(&self) -> Option<u64> {
        let k = (self.events() as usize).checked_sub(1)?;
        Some(self.seg.first + u64::from(self.offset_of(k)))
    }

    /// The offset from the segment's first position of its `k`-th event's.
    fn offset_of(&self, k: usize) -> u32 {
        match self.scavenged() {
            Some(sc) => u32_at(&self.bytes, sc.offsets_at + 4 * k),
            None => k as u32,
        }
    }

    /// The number of the entry of position `p`, `None` when the segment does not hold it
    /// (outside it, or removed by a scavenge).
    fn slot_of(&self, p: u64) -> Option<usize> {
        let offset = p.checked_sub(self.seg.first)?;
        if p >= self.seg.end_position {
            return None;
        }
        match self.scavenged() {
            None => Some(offset as usize),
            Some(_) => {
                let (mut lo, mut hi) = (0, self.events() as usize);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    match u64::from(self.offset_of(mid)).cmp(&offset) {
                        std::cmp::Ordering::Less => lo = mid + 1,
                        std::cmp::Ordering::Greater => hi = mid,
                        std::cmp::Ordering::Equal => return Some(mid),
                    }
                }
                None
            }
        }
    }

    /// Whether it is of this version: one of an earlier version is not loaded (its segment
    /// is scanned and the file written again), only read for what it records.
    pub fn is_current(&self) -> bool {
        self.version == SEGMENT_INDEX_VERSION || self.version == SCAVENGED_INDEX_VERSION
    }

    /// The memory the file was read into, for the next file (none when it was mapped).
    pub fn into_spare(self) -> Option<Vec<u8>> {
        match self.bytes {
            FileBytes::Read(b) => Some(b),
            FileBytes::Map(_) => None,
        }
    }

    /// Where the file places position `p` (`None` where it has none: outside the segment,
    /// or removed by a scavenge).
    pub fn loc(&self, p: u64) -> Option<Loc> {
        let k = self.slot_of(p)?;
        Some(u64_at(
            &self.bytes,
            SEGMENT_INDEX_HEADER_BYTES + k * INDEX_ENTRY_BYTES,
        ))
    }

    /// Checks the whole file: its names, that each entry names one of them, that its records
    /// lie in its segment in order, up to its end, its postings' counts and bounds
    /// ([`PostingsDir::parse`]), its streams' postings against its entries
    /// ([`PostingsCheck`]), and that its id section is its entries' ids sorted, followed
    /// by the filter and the CRC. Returns the entries, the postings, and where the id section
    /// and the filter start.
    fn parse(&self) -> Result<(LocalEntries<'_>, PostingsDir, usize, usize), String> {
        if !self.is_current() {
            return Err(format!(
                "it is of an earlier version ({}): its segment is scanned and the file written again",
                self.version
            ));
        }
        let b = &self.bytes;
        let body = &b[..b.len() - 4];
        let seg = self.seg;
        let n = self.events();
        let span = seg.end_position - seg.first;
        let local = LocalEntries::parse(
            body,
            SEGMENT_INDEX_HEADER_BYTES,
            n as usize,
            u32_at(b, 56) as usize,
            u32_at(b, 60) as usize,
        )?;
        let dir = PostingsDir::parse(
            b,
            local.rest,
            (seg.first, span),
            n,
            &local.streams,
            &local.types,
        )?;
        // A scavenged segment's positions: increasing, within it.
        let mut last = None;
        for k in 0..n as usize {
            let offset = self.offset_of(k);
            if last.is_some_and(|l| l >= offset) || u64::from(offset) >= span {
                return Err("its events' positions are out of order or outside it".to_owned());
            }
            last = Some(offset);
        }
        // One pass over the entries for both checks: they are most of the file.
        let mut postings =
            PostingsCheck::new(b, dir.streams_at, local.streams.len(), local.types.len());
        let mut last_offset = 0;
        for (k, e) in local.entries.chunks_exact(INDEX_ENTRY_BYTES).enumerate() {
            let l = u64_at(e, 0);
            if loc_segment(l) != seg.segment_no
                || loc_offset(l) < SEGMENT_HEADER_BYTES
                || loc_offset(l) <= last_offset
                || loc_offset(l) >= seg.end_offset
            {
                return Err("an entry lies outside its segment or out of order".to_owned());
            }
            last_offset = loc_offset(l);
            postings.entry(self.offset_of(k), e)?;
        }
        let pairs_at = dir.end;
        let bloom_at = pairs_at + n as usize * ID_PAIR_BYTES;
        let bloom_end = bloom_at + bloom_words(n) * 8;
        if self.scavenged().map_or(body.len(), |sc| sc.offsets_at) != bloom_end {
            return Err("its id section is not where its entries end".to_owned());
        }
        check_pairs(&body[pairs_at..bloom_at], seg.first, span, |p| {
            self.slot_of(p).map(|k| local.id(k))
        })?;
        if self.scavenged().is_some() {
            self.removed_runs()?;
        }
        Ok((local, dir, pairs_at, bloom_at))
    }

    /// The removed runs of a scavenged segment's file (none in another's), checked.
    fn removed_runs(&self) -> Result<RemovedRuns, String> {
        let Some(sc) = self.scavenged() else {
            return Ok(Vec::new());
        };
        let end = self.bytes.len() - 8;
        crate::format::decode_removed_runs(&self.bytes[sc.runs_at..end], self.seg.salt)
    }

    /// Adds the file's events to `index`, whose next position must be the segment's first,
    /// after checking the whole file ([`parse`](Self::parse)): see
    /// [`ParsedSegmentIndex::push_into`]. On an error the index is unchanged.
    pub fn push_into(self, index: &mut Index, map: bool) -> Result<(), String> {
        self.parsed()
            .map_err(|(reason, _)| reason)?
            .push_into(index, map)
            .1
    }

    /// Checks the whole file ([`parse`](Self::parse)) and keeps what adding it to an index
    /// takes; on an error, gives the file back with the reason.
    pub fn parsed(self) -> Result<ParsedSegmentIndex, (String, SegmentIndexFile)> {
        let (names, dir, pairs_at, bloom_at) = match self.parse() {
            Ok((local, dir, pairs_at, bloom_at)) => (
                (local.streams, local.types, local.rest),
                dir,
                pairs_at,
                bloom_at,
            ),
            Err(reason) => return Err((reason, self)),
        };
        Ok(ParsedSegmentIndex {
            file: self,
            names,
            dir,
            pairs_at,
            bloom_at,
        })
    }

    /// The file, opened for the lookups of its ids and the reads of its entries.
    pub fn open(&self) -> std::io::Result<Arc<std::fs::File>> {
        std::fs::File::open(&self.path).map(Arc::new)
    }

    /// The file's entries, without their names' numbers.
    fn entries(&self, file: &Arc<std::fs::File>, map: bool) -> std::io::Result<EntryFile> {
        let n = self.events() as usize;
        let entries = EntryFile::open(
            file,
            &self.path,
            &self.bytes,
            SEGMENT_INDEX_HEADER_BYTES,
            n,
            map,
        )?;
        Ok(match self.scavenged() {
            None => entries,
            Some(_) => {
                let offsets = (0..n).map(|k| self.offset_of(k)).collect();
                let span = (self.seg.end_position - self.seg.first) as usize;
                entries.with_slots(span, Slots::new(offsets))
            }
        })
    }

    /// The entries of a file this process just encoded (so not checked again), in `file`
    /// (see [`open`](Self::open)), mapped when `map`, with the numbers `number` gives the
    /// names they use: the index's, which holds them all as it was encoded from it; and its
    /// postings.
    pub fn own_entries(
        &self,
        file: &Arc<std::fs::File>,
        map: bool,
        number: impl FnOnce(&[StreamId], &[&str]) -> (Vec<Option<u32>>, Vec<Option<u32>>),
    ) -> Result<(EntryFile, PostingsDir), String> {
        let b = &self.bytes;
        let n = self.events() as usize;
        let mut at = SEGMENT_INDEX_HEADER_BYTES + n * INDEX_ENTRY_BYTES;
        let streams = read_names(b, &mut at, u32_at(b, 56) as usize)?
            .into_iter()
            .map(|s| StreamId::new(s).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let types = read_names(b, &mut at, u32_at(b, 60) as usize)?;
        let mut entries = self
            .entries(file, map)
            .map_err(|e| format!("opening it for reads: {e}"))?;
        let (stream_nos, type_nos) = number(&streams, &types);
        let all = |nos: Vec<Option<u32>>| {
            nos.into_iter()
                .collect::<Option<Box<[u32]>>>()
                .ok_or("it names a stream or type the index does not hold")
        };
        entries.set_names(all(stream_nos)?, all(type_nos)?);
        let span = self.seg.end_position - self.seg.first;
        let dir = PostingsDir::parse(b, at, (self.seg.first, span), n as u64, &streams, &types)?;
        Ok((entries, dir))
    }

    /// Checks the whole file as [`push_into`](Self::push_into) does, and also that its bloom
    /// filter lets every one of its ids through (open trusts the filter to the CRC, to keep
    /// opening fast): what `strata verify` runs.
    pub fn check_whole(&self) -> Result<(), String> {
        let (local, dir, pairs_at, bloom_at) = self.parse()?;
        let b = &self.bytes;
        let (categories, stream_categories) =
            local_categories(local.streams.iter().map(StreamId::as_str));
        let mut postings = Vec::new();
        let offsets: Option<Vec<u32>> = self.scavenged().map(|_| {
            (0..self.events() as usize)
                .map(|k| self.offset_of(k))
                .collect()
        });
        encode_postings(
            local.entries,
            offsets.as_deref(),
            &stream_categories,
            (local.streams.len(), local.types.len(), categories.len()),
            &mut postings,
        );
        if b[local.rest..dir.end] != postings[..] {
            return Err(
                "its postings are not its entries' positions by stream, type and category"
                    .to_owned(),
            );
        }
        let bloom = Bloom::from_bytes(&b[bloom_at..self.bloom_end()]);
        for pair in b[pairs_at..bloom_at].chunks_exact(ID_PAIR_BYTES) {
            if !bloom.may_contain(&uuid_at(pair, 0)) {
                return Err("its bloom filter does not let one of its ids through".to_owned());
            }
        }
        Ok(())
    }

    /// The event id the file gives position `p`.
    pub fn id(&self, p: u64) -> Option<Uuid> {
        let k = self.slot_of(p)?;
        let at = SEGMENT_INDEX_HEADER_BYTES + k * INDEX_ENTRY_BYTES;
        Some(uuid_at(&self.bytes, at + 24))
    }

    /// Where its bloom filter ends: at its CRC, or at a scavenged segment's sections.
    fn bloom_end(&self) -> usize {
        self.scavenged()
            .map_or(self.bytes.len() - 4, |sc| sc.offsets_at)
    }

    /// The id section of a file this process just encoded (so not parsed again: its
    /// sections lie where its event count puts them), in `file` (see [`open`](Self::open)).
    pub fn own_id_section(&self, file: Arc<std::fs::File>) -> IdSection {
        let n = self.events();
        let bloom_at = self.bloom_end() - bloom_words(n) * 8;
        self.id_section_at(file, bloom_at - n as usize * ID_PAIR_BYTES, bloom_at)
    }

    fn id_section_at(
        &self,
        file: Arc<std::fs::File>,
        pairs_at: usize,
        bloom_at: usize,
    ) -> IdSection {
        let b = &self.bytes;
        IdSection::new(
            self.seg.segment_no,
            self.seg.first..self.seg.end_position,
            file,
            pairs_at as u64,
            &b[pairs_at..bloom_at],
            Bloom::from_bytes(&b[bloom_at..self.bloom_end()]),
        )
    }
}

/// A segment index file checked whole, with what adding it to an index takes, owned: an
/// open checks the next file on a second thread while the index takes this one.
pub(crate) struct ParsedSegmentIndex {
    pub file: SegmentIndexFile,
    /// Its stream and type names, and where the bytes after them start.
    names: (Vec<StreamId>, Vec<Box<str>>, usize),
    dir: PostingsDir,
    /// Where its id section and its bloom filter start.
    pairs_at: usize,
    bloom_at: usize,
}

impl ParsedSegmentIndex {
    /// Adds the file's events to `index`, whose next position must be the segment's first.
    /// Their ids and entries stay in the file (its entries read from a map of it when `map`,
    /// else with `pread`): the index gets its id section and its entries, with the file
    /// opened for both. On an error the index is unchanged. Gives the file back.
    pub fn push_into(self, index: &mut Index, map: bool) -> (SegmentIndexFile, Result<(), String>) {
        let ParsedSegmentIndex {
            file: this,
            names: (streams, types, rest),
            dir,
            pairs_at,
            bloom_at,
        } = self;
        let pushed = (|| {
            let file = this
                .open()
                .map_err(|e| format!("opening it for lookups: {e}"))?;
            let entries = this
                .entries(&file, map)
                .map_err(|e| format!("opening it for reads: {e}"))?;
            let n = this.events() as usize;
            let local = LocalEntries {
                entries: &this.bytes[SEGMENT_INDEX_HEADER_BYTES..][..n * INDEX_ENTRY_BYTES],
                streams,
                types,
                rest,
            };
            let runs = match this.scavenged() {
                Some(_) => Some(this.removed_runs()?),
                None => None,
            };
            local.push_into(
                index,
                this.seg.first,
                Some((this.seg.segment_no, entries, dir, &this.bytes)),
                runs,
                false,
            )?;
            index
                .ids
                .push_file(this.id_section_at(file, pairs_at, bloom_at));
            Ok(())
        })();
        (this, pushed)
    }
}

/// One page of names from a name-ordered map: names after `after`, starting with `prefix`.
/// Returns the values and whether more remain.
fn list_page<K: std::borrow::Borrow<str> + Ord>(
    map: &BTreeMap<K, u32>,
    after: Option<&str>,
    prefix: Option<&str>,
    limit: usize,
) -> (Vec<u32>, bool) {
    use std::ops::Bound;
    let lower = match (after, prefix) {
        (Some(a), Some(p)) if p > a => Bound::Included(p),
        (Some(a), _) => Bound::Excluded(a),
        (None, Some(p)) => Bound::Included(p),
        (None, None) => Bound::Unbounded,
    };
    let mut out = Vec::new();
    for (k, &v) in map.range::<str, _>((lower, Bound::Unbounded)) {
        if prefix.is_some_and(|p| !k.borrow().starts_with(p)) {
            break;
        }
        if out.len() == limit {
            return (out, true);
        }
        out.push(v);
    }
    (out, false)
}

const INDEX_MAGIC: &[u8; 8] = b"STRATAIX";
/// Version 2 holds the positions from a first one on (those before are in segment index
/// files); version 1 files, the whole index, are still read.
const INDEX_VERSION: u32 = 2;

/// What an index file (the whole one, or a sealed segment's) records as acknowledged: the
/// positions from `first` to before `end_position`, where each one lies, and the log end the
/// last one reaches.
pub(crate) trait Claim {
    /// The last segment it knows to exist: the one the whole index file ends in; for a
    /// sealed segment's file, the segment after it (created, durably, before the file was
    /// written).
    fn last_segment(&self) -> u64;
    fn first(&self) -> u64;
    fn end_position(&self) -> u64;
    fn loc(&self, p: u64) -> Option<Loc>;
    fn end(&self) -> LogEnd;
}

impl Claim for IndexFile {
    fn last_segment(&self) -> u64 {
        self.end.segment_no
    }
    fn first(&self) -> u64 {
        self.first
    }
    fn end_position(&self) -> u64 {
        self.events
    }
    fn loc(&self, p: u64) -> Option<Loc> {
        IndexFile::loc(self, p)
    }
    fn end(&self) -> LogEnd {
        self.end
    }
}

impl Claim for SegmentIndexFile {
    fn last_segment(&self) -> u64 {
        // (A crafted file name could make it the last number there is.)
        self.seg.segment_no.saturating_add(1)
    }
    fn first(&self) -> u64 {
        self.seg.first
    }
    fn end_position(&self) -> u64 {
        self.seg.end_position
    }
    fn loc(&self, p: u64) -> Option<Loc> {
        SegmentIndexFile::loc(self, p)
    }
    fn end(&self) -> LogEnd {
        LogEnd {
            segment_no: self.seg.segment_no,
            offset: self.seg.end_offset,
            salt: self.seg.salt,
        }
    }
}

/// The end of the log an index covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogEnd {
    pub segment_no: u64,
    pub offset: u64,
    pub salt: u64,
}

pub(crate) struct AllSlice {
    /// The matching positions, with their entries (those in index files deferred).
    pub hits: Deferred,
    pub next: Option<u64>,
    pub is_end: bool,
}

/// Whether [`Index::all_slice`] with `filter` may read index files while it walks (which
/// may wait for the disk): entries by stream prefix, postings by category or type.
pub(crate) fn filter_reads_files(filter: &Filter) -> bool {
    filter.stream_prefix.is_some()
        || !filter.categories.is_empty()
        || !filter.event_types.is_empty()
}

/// A filter compiled against the index's numbering, for the positions a [`Driver`] walks:
/// it checks only what the walk does not already ensure. A walk along the categories' lists
/// checks types by looking the position up in the types' lists, and the other way round (a
/// reader per list keeps the block it read last, which a walk's next positions mostly fall
/// in); only a stream prefix reads a position's entry.
struct Matcher<'a, 'f> {
    /// Readers of the lists one of which must hold a position (those of the categories or
    /// types asked for that the walk does not follow).
    tested: Option<Vec<postings::Reader<'a>>>,
    prefix: Option<&'f str>,
    /// The walk's direction, how many entries to read at once for the prefix, and the
    /// entries read last (with the first's position; `None` for one that failed its check).
    forward: bool,
    run_entries: usize,
    run: (u64, Vec<Option<Entry>>),
    /// Whether the walk goes through every position (not along lists).
    every: bool,
    /// Where the blocks of postings and the runs of entries it reads come from.
    blocks: &'a Blocks,
}

/// Entries a `$all` walk of every position by stream prefix reads at once (10 KiB): one
/// `pread` (or a few pages of a map) per this many positions examined, not one per position.
/// A walk along lists reads one at a time: its positions lie apart.
const PREFIX_RUN_ENTRIES: usize = 256;

/// The lists a `$all` walk with `filter` follows (`None`: every position) and those it tests
/// each position against (`None`: none). With both categories and types asked for, the side
/// with fewer positions is walked: a rare type in a large category walks the type's list.
#[allow(clippy::type_complexity)]
fn filter_lists<'a>(
    index: &'a Index,
    filter: &Filter,
) -> (Option<Vec<&'a Postings>>, Option<Vec<&'a Postings>>) {
    let categories = named_lists(
        &filter.categories,
        |c| index.category_no(c),
        &index.categories,
    );
    let types = named_lists(&filter.event_types, |t| index.type_no(t), &index.types);
    let len = |lists: &[&Postings]| lists.iter().map(|l| l.len()).sum::<u64>();
    match (categories, types) {
        (Some(c), Some(t)) if len(&t) < len(&c) => (Some(t), Some(c)),
        (Some(c), Some(t)) => (Some(c), Some(t)),
        (c, t) => (c.or(t), None),
    }
}

/// The lists of `names` (numbered by `number`) among `lists`, each once, `None` when no name
/// is asked for. A name given twice is one list: walked twice, its positions would come
/// twice.
fn named_lists<'a>(
    names: &[String],
    number: impl Fn(&str) -> Option<u32>,
    lists: &'a [NamedList],
) -> Option<Vec<&'a Postings>> {
    let nos: std::collections::BTreeSet<u32> = names.iter().filter_map(|n| number(n)).collect();
    (!names.is_empty()).then(|| {
        nos.into_iter()
            .map(|n| &lists[n as usize].positions)
            .collect()
    })
}

/// Streams a stream prefix may name for a `$all` walk to follow their lists (merged, in
/// memory) instead of every position with its entry: a walk takes the smallest of the
/// lists' next positions at each step, so it costs this many reads per position at most.
const PREFIX_STREAMS_MAX: usize = 64;

/// How a `$all` read with a filter walks: the lists it follows (`None`: every position),
/// those one of which must hold each position it walks (`None`: none), and the stream prefix
/// each position's entry is tested against (`None`: none, or the walk ensures it).
struct Plan<'a, 'f> {
    walked: Option<Vec<Walked<'a>>>,
    tested: Option<Vec<&'a Postings>>,
    prefix: Option<&'f str>,
}

/// The plan for `filter`. A stream prefix that at most [`PREFIX_STREAMS_MAX`] streams start
/// with walks those streams' lists (those of the categories asked for), testing only the
/// types: no entry is read; unless the types asked for hold fewer positions than those
/// streams. Otherwise the categories' or types' lists are walked (see
/// [`filter_lists`]), or every position, and the prefix tested on each position's entry.
fn plan<'a, 'f>(index: &'a Index, filter: &'f Filter) -> Plan<'a, 'f> {
    if let Some(prefix) = filter.stream_prefix.as_deref() {
        let (streams, more) = list_page(&index.stream_nos, None, Some(prefix), PREFIX_STREAMS_MAX);
        if !more {
            let categories: Option<std::collections::BTreeSet<u32>> =
                (!filter.categories.is_empty()).then(|| {
                    filter
                        .categories
                        .iter()
                        .filter_map(|c| index.category_no(c))
                        .collect()
                });
            let streams: Vec<&PositionList> = streams
                .into_iter()
                .map(|s| &index.streams[s as usize])
                .filter(|s| categories.as_ref().is_none_or(|c| c.contains(&s.category)))
                .map(|s| &s.positions)
                .collect();
            let types = named_lists(&filter.event_types, |t| index.type_no(t), &index.types);
            // A rare type among the streams' events: walking its list costs less (the plan
            // below, which reads the entries of its positions only).
            let streams_len: u64 = streams.iter().map(|l| l.len()).sum();
            let types_len = |t: &Vec<&Postings>| t.iter().map(|l| l.len()).sum::<u64>();
            if types.as_ref().is_none_or(|t| types_len(t) >= streams_len) {
                return Plan {
                    walked: Some(streams.into_iter().map(Walked::Stream).collect()),
                    tested: types,
                    prefix: None,
                };
            }
        }
    }
    let (walked, tested) = filter_lists(index, filter);
    Plan {
        walked: walked.map(|lists| lists.into_iter().map(Walked::Named).collect()),
        tested,
        prefix: filter.stream_prefix.as_deref(),
    }
}

/// A list a `$all` walk follows: a category's or event type's, or a stream's.
#[derive(Clone, Copy)]
enum Walked<'a> {
    Named(&'a Postings),
    Stream(&'a PositionList),
}

impl<'a> Walked<'a> {
    fn count_below(self, p: u64, blocks: &Blocks) -> Result<u64, ReadError> {
        match self {
            Walked::Named(l) => l.count_below(p, blocks),
            Walked::Stream(l) => Ok(l.count_below(p)),
        }
    }

    fn count_at_or_below(self, p: u64, blocks: &Blocks) -> Result<u64, ReadError> {
        match self {
            Walked::Named(l) => l.count_at_or_below(p, blocks),
            Walked::Stream(l) => Ok(l.count_at_or_below(p)),
        }
    }

    fn reader(self, blocks: &'a Blocks) -> WalkReader<'a> {
        match self {
            Walked::Named(l) => WalkReader::Named(l.reader(blocks)),
            Walked::Stream(l) => WalkReader::Stream(Box::new(l.reader())),
        }
    }
}

enum WalkReader<'a> {
    Named(postings::Reader<'a>),
    Stream(Box<positions::Reader<'a>>),
}

impl WalkReader<'_> {
    /// The list's `i`-th position, `None` past its end.
    fn get(&mut self, i: u64) -> Result<Option<u64>, ReadError> {
        match self {
            WalkReader::Named(r) => r.get(i),
            WalkReader::Stream(r) => Ok(r.get(i)),
        }
    }
}

impl<'a, 'f> Matcher<'a, 'f> {
    /// Tests positions against the lists `tested` (one of them must hold it) and the stream
    /// prefix `prefix`. `every` says whether the walk goes through every position. Blocks
    /// of postings and runs of entries come from `blocks`.
    fn new(
        tested: Option<Vec<&'a Postings>>,
        prefix: Option<&'f str>,
        forward: bool,
        every: bool,
        blocks: &'a Blocks,
    ) -> Self {
        Matcher {
            tested: tested.map(|lists| lists.into_iter().map(|l| l.reader(blocks)).collect()),
            prefix,
            forward,
            run_entries: if every { PREFIX_RUN_ENTRIES } else { 1 },
            every,
            run: (0, Vec::new()),
            blocks,
        }
    }

    /// Whether position `p` matches. One a scavenge removed never does: the lists walked
    /// and tested do not hold it, and a walk through every position asks the entries.
    fn matches(&mut self, index: &Index, p: u64) -> Result<bool, ReadError> {
        if self.every && index.entries.is_removed(p) {
            return Ok(false);
        }
        if let Some(tested) = &mut self.tested {
            let mut held = false;
            for l in tested {
                if l.contains(p)? {
                    held = true;
                    break;
                }
            }
            if !held {
                return Ok(false);
            }
        }
        match self.prefix {
            Some(prefix) => {
                let cached = |run: &(u64, Vec<Option<Entry>>)| {
                    let k = p.checked_sub(run.0)?;
                    run.1.get(k as usize).copied()
                };
                let slot = match cached(&self.run) {
                    Some(slot) => slot,
                    None => {
                        self.run =
                            index
                                .entries
                                .run(p, self.run_entries, self.forward, self.blocks)?;
                        self.run.1[(p - self.run.0) as usize]
                    }
                };
                let e = match slot {
                    Some(e) => e,
                    // It failed its check: read alone, for the error.
                    None => index.entries.get(p)?,
                };
                Ok(!e.is_removed() && index.streams[e.stream as usize].name().starts_with(prefix))
            }
            None => Ok(true),
        }
    }
}

/// Which positions a `$all` read walks: all of them, or the union of lists (categories',
/// types' or streams').
enum Driver<'a> {
    All,
    Lists(Vec<Walked<'a>>),
}

impl<'a> Driver<'a> {
    /// Walks the union of `lists`, or every position.
    fn new(lists: Option<Vec<Walked<'a>>>) -> Self {
        lists.map_or(Driver::All, Driver::Lists)
    }

    fn forward(&self, from: u64, blocks: &'a Blocks) -> Result<Walk<'a>, ReadError> {
        Ok(match self {
            Driver::All => Walk::Range { next: Some(from) },
            Driver::Lists(lists) => Walk::Merge(
                lists
                    .iter()
                    .map(|l| Ok((l.reader(blocks), Some(l.count_below(from, blocks)?))))
                    .collect::<Result<_, ReadError>>()?,
            ),
        })
    }

    fn backward(&self, from: u64, blocks: &'a Blocks) -> Result<Walk<'a>, ReadError> {
        Ok(match self {
            Driver::All => Walk::Range { next: Some(from) },
            Driver::Lists(lists) => Walk::Merge(
                lists
                    .iter()
                    .map(|l| {
                        Ok((
                            l.reader(blocks),
                            l.count_at_or_below(from, blocks)?.checked_sub(1),
                        ))
                    })
                    .collect::<Result<_, ReadError>>()?,
            ),
        })
    }
}

enum Walk<'a> {
    Range {
        next: Option<u64>,
    },
    /// Per list: a reader, and the index of its next position in the walk's direction
    /// (`None` once a backward walk has passed its first).
    Merge(Vec<(WalkReader<'a>, Option<u64>)>),
}

impl Walk<'_> {
    /// The next position in the walk's direction, and which list holds it (`None` for a
    /// range), without moving. May read a block of postings from a file.
    fn head(&mut self, forward: bool) -> Result<Option<(Option<usize>, u64)>, ReadError> {
        match self {
            Walk::Range { next } => Ok(next.map(|p| (None, p))),
            Walk::Merge(heads) => {
                let mut best: Option<(Option<usize>, u64)> = None;
                for (k, (r, i)) in heads.iter_mut().enumerate() {
                    let Some(i) = *i else { continue };
                    let Some(p) = r.get(i)? else { continue };
                    let better = best.is_none_or(|(_, b)| if forward { p < b } else { p > b });
                    if better {
                        best = Some((Some(k), p));
                    }
                }
                Ok(best)
            }
        }
    }

    /// Takes the next position in the walk's direction.
    fn advance(&mut self, forward: bool) -> Result<Option<u64>, ReadError> {
        let Some((list, p)) = self.head(forward)? else {
            return Ok(None);
        };
        match self {
            Walk::Range { next } => {
                *next = if forward {
                    p.checked_add(1)
                } else {
                    p.checked_sub(1)
                };
            }
            Walk::Merge(heads) => {
                let i = &mut heads[list.unwrap_or_default()].1;
                *i = i.and_then(|i| {
                    if forward {
                        i.checked_add(1)
                    } else {
                        i.checked_sub(1)
                    }
                });
            }
        }
        Ok(Some(p))
    }

    fn peek_forward(&mut self) -> Result<Option<u64>, ReadError> {
        Ok(self.head(true)?.map(|(_, p)| p))
    }

    fn peek_backward(&mut self) -> Result<Option<u64>, ReadError> {
        Ok(self.head(false)?.map(|(_, p)| p))
    }

    fn next_forward(&mut self) -> Result<Option<u64>, ReadError> {
        self.advance(true)
    }

    fn next_backward(&mut self) -> Result<Option<u64>, ReadError> {
        self.advance(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(index: &mut Index, p: u64) {
        let stream = StreamId::new(format!("account-{}", p % 5)).expect("a valid stream id");
        index.push(NewEntry {
            position: p,
            loc: loc(1, 64 + p * 100),
            recorded_at_us: 1_000 + p as i64,
            stream: &stream,
            event_type: &format!("Type{}", p % 3),
            event_id: Uuid::from_u128(u128::from(p) + 1),
        });
    }

    /// A `$all` read by stream prefix answers as a plain scan of every entry would, whether
    /// few streams start with the prefix (their lists are walked, no entry read) or many
    /// (every position, or the categories' or types' lists, with the entries read), alone or
    /// with categories and types, page by page both ways.
    #[test]
    fn prefix_walks_answer_as_a_plain_scan() {
        let mut index = Index::default();
        let n = 3_000u64;
        for p in 0..n {
            let family = if p % 4 == 0 { "order" } else { "s" };
            let stream = StreamId::new(format!("{family}-{}", (p * 7919) % 300)).unwrap();
            index.push(NewEntry {
                position: p,
                loc: loc(1 + p / 1_000, 64 + p * 100),
                recorded_at_us: p as i64,
                stream: &stream,
                event_type: &format!("T{}", p % 5),
                event_id: Uuid::from_u128(u128::from(p) + 1),
            });
        }
        let scan = |f: &Filter| -> Vec<u64> {
            (0..n)
                .filter(|&p| {
                    let e = index.entries.get(p).unwrap();
                    f.matches_parts(
                        index.streams[e.stream as usize].name(),
                        &index.types[e.event_type as usize].name,
                    )
                })
                .collect()
        };
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // "s-14" and "order-1" name few streams; "s-1" (111) and "s-" many.
        for (prefix, few) in [
            ("s-14", true),
            ("order-1", true),
            ("none", true),
            ("s-1", false),
            ("s-", false),
        ] {
            for categories in [&[][..], &["s"], &["order", "s"]] {
                for types in [&[][..], &["T1"], &["T2", "T3"]] {
                    let f = Filter {
                        event_types: names(types),
                        categories: names(categories),
                        stream_prefix: Some(prefix.to_owned()),
                    };
                    assert_eq!(plan(&index, &f).prefix.is_none(), few, "{f:?}");
                    let want = scan(&f);
                    for (direction, limit) in [(Direction::Forward, 7), (Direction::Backward, 5)] {
                        let (pages, _) = all_pages(&index, direction, limit, &f, 100_000, false);
                        let mut got: Vec<u64> = pages.into_iter().flat_map(|(h, _, _)| h).collect();
                        if direction == Direction::Backward {
                            got.reverse();
                        }
                        assert_eq!(got, want, "{f:?} {direction:?}");
                    }
                }
            }
        }
    }

    /// A stream prefix naming few streams, with a type those streams rarely hold, walks the
    /// type's list: one page finds the one event, where the streams' lists would take one
    /// page per `scan_max` of their events.
    #[test]
    fn a_rare_type_in_a_narrow_prefix_takes_one_page() {
        let mut index = Index::default();
        let n = 20_000u64;
        for p in 0..n {
            index.push(NewEntry {
                position: p,
                loc: loc(1 + p / 5_000, 64 + p * 100),
                recorded_at_us: p as i64,
                stream: &StreamId::new(if p % 2 == 0 { "big-1" } else { "other-1" }).unwrap(),
                event_type: if p == n - 2 { "Rare" } else { "Common" },
                event_id: Uuid::from_u128(u128::from(p) + 1),
            });
        }
        let f = Filter::default()
            .stream_prefix("big-1")
            .event_types(["Rare"]);
        let (pages, _) = all_pages(&index, Direction::Forward, 100, &f, 1_000, false);
        let got: Vec<u64> = pages.iter().flat_map(|(h, _, _)| h.clone()).collect();
        assert_eq!(got, vec![n - 2]);
        assert_eq!(pages.len(), 1, "pages to find one event");
    }

    /// A stream whose versions 1 to 40 a scavenge removed: its list holds versions 0, 41
    /// and 42, and reads and the next version count the removed ones.
    #[test]
    fn removed_versions_are_skipped_by_version_and_counted_in_the_next() {
        let mut index = Index::default();
        let s = StreamId::new("account-1").unwrap();
        let other = StreamId::new("other-1").unwrap();
        for p in 0..52u64 {
            index.push(NewEntry {
                position: p,
                loc: loc(0, 64 + p * 100),
                recorded_at_us: p as i64,
                stream: if [10, 50, 51].contains(&p) {
                    &s
                } else {
                    &other
                },
                event_type: "E",
                event_id: Uuid::from_u128(u128::from(p) + 1),
            });
        }
        let no = index.stream_no(&s).unwrap();
        index.streams[no as usize].removed = RemovedVersions { from: 1, count: 40 };
        let se = &index.streams[no as usize];
        assert_eq!(se.versions(), 43);
        assert_eq!(index.stream_version(&s), Some(42));
        assert_eq!(
            [0, 1, 2].map(|i| se.version_at(i)),
            [0, 41, 42],
            "versions of the list's positions"
        );
        let slice = |direction, from: Option<u64>, limit| -> Vec<u64> {
            index
                .stream_slice(no, direction, from, limit, None)
                .map(|d| d.read().unwrap().into_iter().map(|(p, _)| p).collect())
                .unwrap_or_default()
        };
        use Direction::{Backward, Forward};
        assert_eq!(slice(Forward, None, 10), [10, 50, 51]);
        assert_eq!(
            slice(Forward, Some(1), 10),
            [50, 51],
            "from a removed version"
        );
        assert_eq!(slice(Forward, Some(40), 1), [50]);
        assert_eq!(slice(Forward, Some(42), 10), [51]);
        assert_eq!(slice(Forward, Some(43), 10), Vec::<u64>::new());
        assert_eq!(slice(Backward, None, 2), [51, 50]);
        assert_eq!(slice(Backward, Some(41), 10), [50, 10]);
        assert_eq!(
            slice(Backward, Some(40), 10),
            [10],
            "from a removed version"
        );
        assert_eq!(slice(Backward, Some(0), 10), [10]);
    }

    /// A scavenged segment read back gives a stream's versions with one run skipped; a
    /// second run, a version again, or a skip where none may be, is refused and changes
    /// nothing.
    #[test]
    fn a_stream_read_back_may_skip_one_run_of_removed_versions() {
        let mut index = Index::default();
        let s = StreamId::new("account-1").unwrap();
        let mut p = 0;
        let mut push = |index: &mut Index, v: u64, may_skip: bool| {
            let e = NewEntry {
                position: p,
                loc: loc(0, 64 + p * 100),
                recorded_at_us: 0,
                stream: &s,
                event_type: "E",
                event_id: Uuid::from_u128(u128::from(p) + 1),
            };
            let pushed = index.push_checked(e, v, may_skip);
            if pushed.is_ok() {
                p += 1;
            }
            pushed
        };
        assert!(
            push(&mut index, 2, false).is_err(),
            "a first event of version 2"
        );
        assert!(index.stream_no(&s).is_none(), "nothing added");
        push(&mut index, 0, false).unwrap();
        let refused = push(&mut index, 4, false).unwrap_err();
        assert_eq!(
            refused,
            "stream account-1 holds version 4 where 1 was expected"
        );
        push(&mut index, 6, true).unwrap();
        push(&mut index, 7, true).unwrap();
        assert!(push(&mut index, 10, true).is_err(), "a second run");
        assert!(push(&mut index, 7, true).is_err(), "a version again");
        let se = &index.streams[0];
        assert_eq!(se.removed, RemovedVersions { from: 1, count: 5 });
        assert_eq!((se.positions.len(), se.versions()), (3, 8));
        assert_eq!([0, 1, 2].map(|i| se.version_at(i)), [0, 6, 7]);
        assert_eq!(index.next_position(), 3, "nothing pushed when refused");
    }

    /// The index file of a segment of ten events (`push`'s), positions 0 to 9.
    fn ten_events_segment_file() -> Vec<u8> {
        let mut index = Index::default();
        for p in 0..10 {
            push(&mut index, p);
        }
        let seg = SealedSegment {
            segment_no: 1,
            salt: 9,
            first: 0,
            end_position: 10,
            end_offset: 64 + 10 * 100,
        };
        encode_segment_index(seg, 4, |encode| encode(&index)).expect("it encodes")
    }

    /// Two segments: segment 0 (positions 0..10) dense, with `account-1` versions 0 to 9;
    /// segment 1 (positions 10..30) scavenged: `account-1` held versions 10 to 19 at 10..20,
    /// of which 15 to 19 are kept (at 15..20), and `order-1` held versions 0 to 9 at 20..30,
    /// of which 0 and 6 to 9 are kept (a run removed after version 0, within the segment).
    /// Returns segment 0's index, segment 1's file bytes, and its kept positions.
    fn scavenged_second_segment() -> (Index, Vec<u8>, Vec<u64>) {
        let account = StreamId::new("account-1").unwrap();
        let mut index = Index::default();
        for p in 0..10 {
            index.push(NewEntry {
                position: p,
                loc: loc(0, 64 + p * 100),
                recorded_at_us: 1_000 + p as i64,
                stream: &account,
                event_type: "Deposited",
                event_id: Uuid::from_u128(u128::from(p) + 1),
            });
        }
        let kept: Vec<u64> = (15..20).chain([20]).chain(26..30).collect();
        let order = StreamId::new("order-1").unwrap();
        let events: Vec<NewEntry<'_>> = kept
            .iter()
            .enumerate()
            .map(|(k, &p)| NewEntry {
                position: p,
                loc: loc(1, 64 + k as u64 * 100),
                recorded_at_us: 1_000 + p as i64,
                stream: if p < 20 { &account } else { &order },
                event_type: if p < 20 { "Deposited" } else { "Placed" },
                event_id: Uuid::from_u128(u128::from(p) + 1),
            })
            .collect();
        let seg = SealedSegment {
            segment_no: 1,
            salt: 9,
            first: 10,
            end_position: 30,
            end_offset: 64 + kept.len() as u64 * 100,
        };
        let runs = [
            ("account-1".to_owned(), 10..15),
            ("order-1".to_owned(), 1..6),
        ];
        let bytes = encode_scavenged_segment_index(seg, &events, &runs).expect("it encodes");
        (index, bytes, kept)
    }

    /// A scavenged segment's index file (version 4) checks whole and loads: its positions
    /// without events are skipped by every read (`$all` both ways, by type, by stream
    /// prefix, by category), a stream's removed versions are counted, ids of removed events
    /// are not found, and the file's entries are read by position.
    #[test]
    fn a_scavenged_segment_index_loads_and_reads_skip_its_removed_positions() {
        let (mut index, bytes, kept) = scavenged_second_segment();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.idx");
        std::fs::write(&path, &bytes).unwrap();
        let file = SegmentIndexFile::check(bytes.clone(), path).unwrap();
        assert!(file.is_scavenged());
        assert_eq!((file.seg.first, file.seg.end_position), (10, 30));
        file.check_whole().expect("a sound file");
        assert_eq!(file.loc(15), Some(loc(1, 64)));
        assert_eq!((file.loc(14), file.id(21)), (None, None), "removed");
        file.push_into(&mut index, true).expect("it loads");
        assert_eq!(index.next_position(), 30);

        let all: Vec<u64> = (0..10).chain(kept.iter().copied()).collect();
        for (direction, limit) in [(Direction::Forward, 3), (Direction::Backward, 4)] {
            let (pages, _) = all_pages(&index, direction, limit, &Filter::default(), 1_000, false);
            // A removed position does not take a place in a page.
            let (_, full) = pages.split_last().unwrap();
            assert!(full.iter().all(|(h, _, _)| h.len() == limit), "{pages:?}");
            let mut got: Vec<u64> = pages.into_iter().flat_map(|(h, _, _)| h).collect();
            if direction == Direction::Backward {
                got.reverse();
            }
            assert_eq!(got, all, "{direction:?}");
        }
        let by = |f: Filter| -> Vec<u64> {
            let (pages, _) = all_pages(&index, Direction::Forward, 2, &f, 1_000, false);
            pages.into_iter().flat_map(|(h, _, _)| h).collect()
        };
        assert_eq!(
            by(Filter::default().event_types(["Placed"])),
            [20, 26, 27, 28, 29]
        );
        assert_eq!(
            by(Filter::default().categories(["order"])),
            [20, 26, 27, 28, 29]
        );
        assert_eq!(
            by(Filter::default().stream_prefix("account")),
            all[..15].to_vec(),
            "by stream prefix"
        );

        let account = StreamId::new("account-1").unwrap();
        let order = StreamId::new("order-1").unwrap();
        assert_eq!(index.stream_version(&account), Some(19));
        assert_eq!(index.stream_version(&order), Some(9));
        let se = &index.streams[index.stream_no(&account).unwrap() as usize];
        assert_eq!(se.removed, RemovedVersions { from: 10, count: 5 });
        let so = &index.streams[index.stream_no(&order).unwrap() as usize];
        assert_eq!(so.removed, RemovedVersions { from: 1, count: 5 });
        let slice = |s: &StreamId, from: u64| -> Vec<u64> {
            let no = index.stream_no(s).unwrap();
            let d = index.stream_slice(no, Direction::Forward, Some(from), 100, None);
            d.unwrap()
                .read()
                .unwrap()
                .into_iter()
                .map(|(p, _)| p)
                .collect()
        };
        assert_eq!(slice(&order, 0), [20, 26, 27, 28, 29]);
        assert_eq!(slice(&order, 3), [26, 27, 28, 29], "from a removed version");
        assert_eq!(slice(&account, 12), [15, 16, 17, 18, 19]);

        for p in 0..30u64 {
            let id = Uuid::from_u128(u128::from(p) + 1);
            let found = index.position_of_id(&id).unwrap();
            let held = all.contains(&p);
            assert_eq!(found, held.then_some(p), "id of {p}");
            assert_eq!(index.entries.is_removed(p), !held, "{p}");
            let e = index.entries.get(p).unwrap();
            assert_eq!(e.is_removed(), !held, "{p}");
            if held {
                assert_eq!(e.recorded_at_us, 1_000 + p as i64);
            }
        }
        let d = index.entries.defer(10..30);
        let read: Vec<u64> = d.read().unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(read, kept, "reads leave removed positions out");
        for (ts, want) in [
            (1_012, Some(9)),
            (1_015, Some(15)),
            (1_025, Some(20)),
            (1_099, Some(29)),
        ] {
            assert_eq!(index.position_at(ts).find(ts).unwrap(), want, "at {ts}");
        }
    }

    /// A scavenged segment's file whose positions are out of order, or whose removed runs
    /// do not carry its streams on from the index, is refused, the index unchanged.
    #[test]
    fn a_scavenged_segment_index_that_does_not_fit_is_refused() {
        let (index, bytes, kept) = scavenged_second_segment();
        let runs_len = u32_at(&bytes, bytes.len() - 8) as usize;
        let offsets_at = bytes.len() - 8 - runs_len - kept.len() * 4;
        // The second and third positions swapped.
        let swapped = with_crc(&bytes, |b| {
            let at = offsets_at + 4;
            let (x, y) = (b[at..at + 4].to_vec(), b[at + 4..at + 8].to_vec());
            b[at..at + 4].copy_from_slice(&y);
            b[at + 4..at + 8].copy_from_slice(&x);
        });
        let err = SegmentIndexFile::check(swapped, PathBuf::from("1.idx"))
            .unwrap()
            .check_whole()
            .unwrap_err();
        assert!(err.contains("out of order"), "{err}");
        // `account-1`'s run said to be 11..15 (version 10 is then neither stored nor removed).
        let seg = SealedSegment {
            segment_no: 1,
            salt: 9,
            first: 10,
            end_position: 30,
            end_offset: 64 + kept.len() as u64 * 100,
        };
        let file = SegmentIndexFile::check(bytes.clone(), PathBuf::from("1.idx")).unwrap();
        let (local, _, _, _) = file.parse().unwrap();
        let events: Vec<NewEntry<'_>> = kept
            .iter()
            .enumerate()
            .map(|(k, &p)| NewEntry {
                position: p,
                loc: loc(1, 64 + k as u64 * 100),
                recorded_at_us: 1_000 + p as i64,
                stream: &local.streams[usize::from(p >= 20)],
                event_type: if p < 20 { "Deposited" } else { "Placed" },
                event_id: Uuid::from_u128(u128::from(p) + 1),
            })
            .collect();
        let runs = [
            ("account-1".to_owned(), 11..15),
            ("order-1".to_owned(), 1..6),
        ];
        let again = encode_scavenged_segment_index(seg, &events, &runs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.idx");
        std::fs::write(&path, &again).unwrap();
        let mut loaded = index;
        let before = loaded.next_position();
        let err = SegmentIndexFile::check(again, path)
            .unwrap()
            .push_into(&mut loaded, false)
            .unwrap_err();
        assert!(err.contains("do not carry it on from 10"), "{err}");
        assert_eq!(loaded.next_position(), before, "the index is unchanged");
        let account = StreamId::new("account-1").unwrap();
        assert_eq!(loaded.stream_version(&account), Some(9));
    }

    /// File `bytes` changed by `change` (which sees it without its CRC), with a good CRC.
    fn with_crc(bytes: &[u8], change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = bytes[..bytes.len() - 4].to_vec();
        change(&mut out);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// A segment's index file lists each type's, category's and stream's positions in its
    /// postings; `strata verify`'s whole check refuses a file whose postings (under a good CRC)
    /// do not match its entries, which opening trusts to the CRC.
    #[test]
    fn segment_postings_are_the_entries_by_name_and_verify_checks_them() {
        let bytes = ten_events_segment_file();
        let file = SegmentIndexFile::check(bytes.clone(), PathBuf::from("1.idx")).unwrap();
        file.check_whole().expect("a sound file");
        let (local, dir, _, _) = file.parse().unwrap();
        let postings = |at: &NameAt| -> Vec<u64> {
            (0..at.count as usize)
                .map(|k| u64::from(u32_at(&bytes, at.at + 4 * k)))
                .collect()
        };
        for (t, at) in dir.type_at.iter().enumerate() {
            let want: Vec<u64> = (0..10)
                .filter(|p| format!("Type{}", p % 3) == *local.types[t])
                .collect();
            assert_eq!(postings(at), want, "{}", local.types[t]);
            assert_eq!((at.lo, at.hi), (want[0], *want.last().unwrap()));
        }
        assert_eq!(dir.categories, ["account"]);
        assert_eq!(postings(&dir.category_at[0]), (0..10).collect::<Vec<_>>());
        // Positions 0 and 1 (of Type0 and Type1) traded between the two types' postings.
        let bad = with_crc(&bytes, |bad| {
            let (a, b) = (dir.type_at[0].at, dir.type_at[1].at);
            let (x, y) = (u32_at(bad, a), u32_at(bad, b));
            bad[a..a + 4].copy_from_slice(&y.to_le_bytes());
            bad[b..b + 4].copy_from_slice(&x.to_le_bytes());
        });
        let file = SegmentIndexFile::check(bad, PathBuf::from("1.idx")).unwrap();
        file.parse()
            .expect("opening trusts the postings to the CRC");
        let err = file.check_whole().unwrap_err();
        assert!(err.contains("postings"), "{err}");
    }

    /// The fences `parse` takes for each type and category are the first posting of each
    /// block of 1,024 of its postings, for names of several blocks (and none for streams).
    #[test]
    fn parsed_fences_are_the_first_posting_of_each_block() {
        const SEG: u64 = 12_000;
        let bytes = mixed_segment_file(SEG);
        let file = SegmentIndexFile::check(bytes.clone(), PathBuf::from("1.idx")).unwrap();
        let (local, dir, _, _) = file.parse().unwrap();
        let fences_of = |want: Vec<u64>| -> Vec<u32> {
            want.iter()
                .step_by(postings::FILE_BLOCK as usize)
                .map(|&p| p as u32)
                .collect()
        };
        for (t, at) in dir.type_at.iter().enumerate() {
            let want = (0..SEG).filter(|p| format!("T{}", p % 5) == *local.types[t]);
            let want = fences_of(want.collect());
            assert!(want.len() > 1, "a type of one block tests little");
            assert_eq!(&*at.fences, &want[..], "{}", local.types[t]);
        }
        for (c, at) in dir.categories.iter().zip(&dir.category_at) {
            let order = |p: &u64| p.is_multiple_of(4);
            let want = (0..SEG).filter(|p| order(p) == (c == "order"));
            assert_eq!(&*at.fences, &fences_of(want.collect())[..], "{c}");
        }
    }

    /// A segment index file (with a good CRC) that names a type twice is refused, by open
    /// and by `strata verify`: the type's positions in it would be two parts out of order.
    #[test]
    fn a_segment_index_file_naming_a_type_twice_is_refused() {
        let bytes = ten_events_segment_file();
        let names_at = SEGMENT_INDEX_HEADER_BYTES + 10 * INDEX_ENTRY_BYTES;
        let k = names_at
            + bytes[names_at..]
                .windows(5)
                .position(|w| w == b"Type1")
                .unwrap();
        let bad = with_crc(&bytes, |bad| bad[k..k + 5].copy_from_slice(b"Type0"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.idx");
        std::fs::write(&path, &bad).unwrap();
        let file = SegmentIndexFile::check(bad, path).unwrap();
        let err = file.check_whole().unwrap_err();
        assert!(err.contains("twice"), "{err}");
        let mut fresh = Index::default();
        let err = file.push_into(&mut fresh, false).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        assert_eq!(fresh.next_position(), 0, "the index is unchanged");
    }

    /// Loading a segment's index file fills the stream lists from its stream postings: each
    /// stream gets the positions, and the number, the index that wrote the file gave it. A
    /// file (under a good CRC) whose stream postings are not exactly its entries' positions
    /// by stream, or that lists a stream no entry names, is refused, the index unchanged.
    #[test]
    fn stream_lists_load_from_the_stream_postings_checked_against_the_entries() {
        let bytes = ten_events_segment_file();
        let mut written = Index::default();
        for p in 0..10 {
            push(&mut written, p);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.idx");
        std::fs::write(&path, &bytes).unwrap();
        let mut loaded = Index::default();
        SegmentIndexFile::check(bytes.clone(), path.clone())
            .unwrap()
            .push_into(&mut loaded, false)
            .unwrap();
        let lists = |index: &Index| -> Vec<(String, Vec<u64>)> {
            index
                .streams
                .iter()
                .map(|s| {
                    let positions = (0..s.positions.len()).map(|i| s.positions.get(i));
                    (s.name().to_owned(), positions.map(Option::unwrap).collect())
                })
                .collect()
        };
        assert_eq!(lists(&loaded), lists(&written));
        assert_eq!(lists(&loaded)[1], ("account-1".to_owned(), vec![1, 6]));

        let file = SegmentIndexFile::check(bytes.clone(), path.clone()).unwrap();
        let (local, parsed, _, _) = file.parse().unwrap();
        let (counts_at, postings_at) = parsed.streams_at;
        let put =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        // Streams 0 and 1 have positions 0, 5 and 1, 6: each still increasing, counts right.
        let swapped = with_crc(&bytes, |b| {
            put(b, postings_at + 4, 6);
            put(b, postings_at + 12, 5);
        });
        // 5 twice: its first and last still in the segment.
        let repeated = with_crc(&bytes, |b| put(b, postings_at, 5));
        // A name added to the end of a kind's names (0: streams, 1: types), with `count`
        // postings taken from the last of that kind's names before it; postings unchanged.
        let (streams, types) = (local.streams.len(), local.types.len());
        let added = |kind: usize, name: &[u8], count: u32| {
            let mut names_end = SEGMENT_INDEX_HEADER_BYTES + 10 * INDEX_ENTRY_BYTES;
            for _ in 0..streams + kind * types {
                names_end += 2 + usize::from(u16_at(&bytes, names_end));
            }
            with_crc(&bytes, |b| {
                let counts_end = counts_at + 4 * (streams + kind * types);
                let before = u32_at(b, counts_end - 4) - count;
                put(b, counts_end - 4, before);
                b.splice(counts_end..counts_end, count.to_le_bytes());
                let mut listed = (name.len() as u16).to_le_bytes().to_vec();
                listed.extend_from_slice(name);
                b.splice(names_end..names_end, listed);
                let listed_count = u32_at(b, 56 + 4 * kind) + 1;
                put(b, 56 + 4 * kind, listed_count);
            })
        };
        for (bad, why) in [
            (swapped, "not its entries' positions"),
            (repeated, "not its entries' positions"),
            // No posting, and no entry naming it.
            (added(0, b"account-99", 0), "no event of it has"),
            // Stream 4's last posting (9) given to it: entry 9, of stream 4, is past the end
            // of stream 4's postings.
            (added(0, b"account-99", 1), "not its entries' positions"),
            // Type 2's last posting given to a type no entry names.
            (added(1, b"Ghost", 1), "type counts"),
            (added(1, b"Ghost", 0), "no event of it has"),
        ] {
            std::fs::write(&path, &bad).unwrap();
            let mut fresh = Index::default();
            let err = SegmentIndexFile::check(bad, path.clone())
                .unwrap()
                .push_into(&mut fresh, false)
                .unwrap_err();
            assert!(err.contains(why), "{err}");
            assert_eq!(
                (fresh.next_position(), fresh.streams.len()),
                (0, 0),
                "the index is unchanged"
            );
        }
    }

    /// An index file encoded a few entries at a time, while events (new streams and types
    /// among them) are added between chunks, is the index as it was when encoding began.
    #[test]
    fn a_chunked_encode_holds_the_index_as_of_its_start() {
        let mut index = Index::default();
        for p in 0..10 {
            push(&mut index, p);
        }
        let end = LogEnd {
            segment_no: 1,
            offset: 64 + 10 * 100,
            salt: 7,
        };
        let mark = index.encode_mark(end);
        let entries = index.entries.to_vec();
        let ids: Vec<Uuid> = (0..10).filter_map(|p| index.ids.in_memory(p)).collect();
        let names = |i: &Index| -> (Vec<String>, Vec<String>) {
            (
                i.streams.iter().map(|s| s.name().to_owned()).collect(),
                i.types.iter().map(|t| t.name.clone()).collect(),
            )
        };
        let before = names(&index);
        let mut next = 10;
        let bytes = encode_in_chunks(mark, 3, |encode| {
            encode(&index);
            // Appends between chunks; the tenth on adds a stream and a type each time.
            push(&mut index, next);
            let stream = StreamId::new(format!("new-{next}")).expect("a valid stream id");
            index.push(NewEntry {
                position: next + 1,
                loc: loc(2, next * 100),
                recorded_at_us: 5_000,
                stream: &stream,
                event_type: &format!("New{next}"),
                event_id: Uuid::from_u128(u128::from(next) + 1_000_000),
            });
            next += 2;
        })
        .expect("its ids are in memory");
        assert!(index.next_position() > 10, "the index grew meanwhile");
        let file = IndexFile::check(bytes).expect("a whole index file");
        assert_eq!((file.first, file.events, file.end), (0, 10, end));
        let mut decoded = Index::default();
        file.push_into(&mut decoded).expect("it decodes");
        assert_eq!(decoded.entries.to_vec(), entries);
        let decoded_ids: Vec<Uuid> = (0..10).filter_map(|p| decoded.ids.in_memory(p)).collect();
        assert_eq!(decoded_ids, ids);
        assert_eq!(ids.len(), 10);
        assert_eq!(names(&decoded), before);
    }

    /// Every page of a `$all` read of `index` with filter `f`, from the start (or end) on:
    /// each page's positions, `next` and `is_end`. Read at once, or (`rounds`) in rounds of
    /// fetched blocks, with the most rounds a page took.
    #[allow(clippy::type_complexity)]
    fn all_pages(
        index: &Index,
        direction: Direction,
        limit: usize,
        f: &Filter,
        scan_max: usize,
        rounds: bool,
    ) -> (Vec<(Vec<u64>, Option<u64>, bool)>, usize) {
        let (mut pages, mut from, mut most) = (Vec::new(), None, 0);
        loop {
            let blocks = match rounds {
                true => Blocks::fetched_in_rounds(),
                false => Blocks::direct(),
            };
            let slice =
                |_: &(), b: &Blocks| index.all_slice(direction, from, limit, f, None, scan_max, b);
            let page = blocks.run(|| (), slice).unwrap();
            most = most.max(blocks.rounds());
            let hits = page.hits.read().unwrap().into_iter().map(|(p, _)| p);
            pages.push((hits.collect(), page.next, page.is_end));
            if page.is_end {
                return (pages, most);
            }
            from = page.next;
        }
    }

    /// Adds position `p` to `index`, of segments of `seg` events: a quarter in category
    /// `order`, the rest in `s`, over 300 streams each, five types.
    fn push_mixed(index: &mut Index, p: u64, seg: u64) {
        let family = if p.is_multiple_of(4) { "order" } else { "s" };
        let stream = StreamId::new(format!("{family}-{}", (p * 7919) % 300)).unwrap();
        index.push(NewEntry {
            position: p,
            loc: loc(1 + p / seg, 64 + (p % seg) * 100),
            recorded_at_us: p as i64,
            stream: &stream,
            event_type: &format!("T{}", p % 5),
            event_id: Uuid::from_u128(u128::from(p) + 1),
        });
    }

    /// The index file of segment 1, positions `0..seg` of [`push_mixed`]'s.
    fn mixed_segment_file(seg: u64) -> Vec<u8> {
        let mut whole = Index::default();
        for p in 0..seg {
            push_mixed(&mut whole, p, seg);
        }
        let sealed = SealedSegment {
            segment_no: 1,
            salt: 9,
            first: 0,
            end_position: seg,
            end_offset: 64 + seg * 100,
        };
        encode_segment_index(sealed, 4096, |e| e(&whole)).unwrap()
    }

    /// `$all` walks over sealed segments' files give the same pages read in rounds of fetched
    /// blocks as read at once, both ways, for every kind of filter, each page within the
    /// rounds' bound.
    #[test]
    fn walks_in_rounds_answer_as_walks_at_once() {
        const SEG: u64 = 10_000;
        let segs = 4u64;
        let n = SEG * segs;
        let entry = |index: &mut Index, p: u64| push_mixed(index, p, SEG);
        let mut whole = Index::default();
        for p in 0..n {
            entry(&mut whole, p);
        }
        let dir = tempfile::tempdir().unwrap();
        for map in [false, true] {
            let mut index = Index::default();
            for s in 0..segs - 1 {
                let seg = SealedSegment {
                    segment_no: 1 + s,
                    salt: 9,
                    first: s * SEG,
                    end_position: (s + 1) * SEG,
                    end_offset: 64 + SEG * 100,
                };
                let bytes = encode_segment_index(seg, 4096, |e| e(&whole)).unwrap();
                let path = dir.path().join(format!("{map}-{s}.idx"));
                std::fs::write(&path, &bytes).unwrap();
                SegmentIndexFile::check(bytes, path)
                    .unwrap()
                    .push_into(&mut index, map)
                    .unwrap();
            }
            for p in (segs - 1) * SEG..n {
                entry(&mut index, p);
            }
            let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
            let mut max_rounds = 0;
            for prefix in [None, Some("s-1"), Some("s-")] {
                for categories in [&[][..], &["s"], &["order", "s"]] {
                    for types in [&[][..], &["T1"], &["T2", "T3"]] {
                        let f = Filter {
                            event_types: names(types),
                            categories: names(categories),
                            stream_prefix: prefix.map(str::to_owned),
                        };
                        if f == Filter::default() {
                            continue;
                        }
                        for (direction, limit) in
                            [(Direction::Forward, 3_000), (Direction::Backward, 2_500)]
                        {
                            let pages =
                                |rounds| all_pages(&index, direction, limit, &f, 100_000, rounds);
                            let (want, _) = pages(false);
                            let (got, most) = pages(true);
                            max_rounds = max_rounds.max(most);
                            assert!(got == want, "{f:?} {direction:?} map {map}");
                        }
                    }
                }
            }
            assert!(
                max_rounds < crate::limits::WALK_FETCH_ROUNDS_MAX,
                "map {map}: {max_rounds} rounds for one page"
            );
        }
    }

    /// One sealed segment of 10,000 events (3/4 in category `s`, streams `s-0..`), in its
    /// index file, and 1,000 more in memory.
    fn sealed_index(dir: &std::path::Path, map: bool) -> Index {
        const SEG: u64 = 10_000;
        let entry = |index: &mut Index, p: u64| push_mixed(index, p, SEG);
        let bytes = mixed_segment_file(SEG);
        let path = dir.join(format!("{map}.idx"));
        std::fs::write(&path, &bytes).unwrap();
        let mut index = Index::default();
        SegmentIndexFile::check(bytes, path)
            .unwrap()
            .push_into(&mut index, map)
            .unwrap();
        for p in SEG..SEG + 1_000 {
            entry(&mut index, p);
        }
        index
    }

    /// A walk along a category's postings that tests a wide stream prefix on each position's
    /// entry reads the entries it lacks in rounds, as many at once as a walk of every
    /// position does: it does not spend its rounds (and read the rest under the lock) within
    /// one page.
    #[test]
    fn a_prefix_tested_along_a_category_keeps_within_its_rounds() {
        let dir = tempfile::tempdir().unwrap();
        for map in [false, true] {
            let index = sealed_index(dir.path(), map);
            let f = Filter {
                event_types: Vec::new(),
                categories: vec!["s".to_owned()],
                stream_prefix: Some("s-".to_owned()),
            };
            let blocks = Blocks::fetched_in_rounds();
            let page = blocks
                .run(
                    || (),
                    |_, b| index.all_slice(Direction::Forward, None, 1_000, &f, None, 100_000, b),
                )
                .unwrap();
            assert_eq!(page.hits.len(), 1_000);
            assert!(
                blocks.rounds() < crate::limits::WALK_FETCH_ROUNDS_MAX,
                "map {map}: {} rounds for one page of 1,000",
                blocks.rounds()
            );
        }
    }
}
