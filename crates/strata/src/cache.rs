//! A bounded in-process cache of loaded aggregates.
//!
//! The cache only saves work, never decides: a cached state is always caught up with the
//! events stored after its version before it is used, and appends still carry the exact
//! expected version, so a stale or evicted entry costs a replay, never a wrong answer.
//!
//! Eviction is by two generations (an approximation of least-recently-used with O(1) work per
//! operation): new and refreshed entries go into the young map; when it is full, the old map
//! is dropped and the young one becomes old. A hit in the old map moves the entry back.

use std::collections::HashMap;
use std::sync::Mutex;

use strata_core::StreamId;

use crate::repository::Loaded;

pub(crate) struct AggregateCache<A> {
    /// Entries per generation; the cache holds at most twice this many.
    generation_entries: usize,
    inner: Mutex<Generations<A>>,
}

struct Generations<A> {
    young: HashMap<StreamId, Loaded<A>>,
    old: HashMap<StreamId, Loaded<A>>,
}

impl<A: Clone> AggregateCache<A> {
    /// A cache of at most `capacity` aggregates (rounded up to an even number; 0: disabled).
    pub(crate) fn new(capacity: usize) -> Self {
        AggregateCache {
            generation_entries: capacity.div_ceil(2),
            inner: Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
            }),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.generation_entries > 0
    }

    /// A copy of the cached state of `stream`.
    pub(crate) fn get(&self, stream: &StreamId) -> Option<Loaded<A>> {
        if !self.enabled() {
            return None;
        }
        let mut g = self.lock();
        if let Some(hit) = g.young.get(stream) {
            return Some(hit.clone());
        }
        let hit = g.old.remove(stream)?;
        let copy = hit.clone();
        g.insert_young(self.generation_entries, stream.clone(), hit);
        Some(copy)
    }

    /// Stores `loaded` unless the cache already holds a newer version of the same stream
    /// (concurrent commands may finish out of order).
    pub(crate) fn put(&self, loaded: &Loaded<A>) {
        if !self.enabled() || loaded.version.is_none() {
            return;
        }
        let mut g = self.lock();
        let newer_cached = g
            .young
            .get(&loaded.stream_id)
            .or_else(|| g.old.get(&loaded.stream_id))
            .is_some_and(|cached| cached.version > loaded.version);
        if newer_cached {
            return;
        }
        g.old.remove(&loaded.stream_id);
        g.insert_young(
            self.generation_entries,
            loaded.stream_id.clone(),
            loaded.clone(),
        );
    }

    /// Forgets `stream`.
    pub(crate) fn remove(&self, stream: &StreamId) {
        if !self.enabled() {
            return;
        }
        let mut g = self.lock();
        g.young.remove(stream);
        g.old.remove(stream);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations<A>> {
        // The maps stay consistent even if a holder panicked (every update is one insert or
        // remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }
}

impl<A> Generations<A> {
    fn insert_young(&mut self, generation_entries: usize, stream: StreamId, loaded: Loaded<A>) {
        if self.young.len() >= generation_entries && !self.young.contains_key(&stream) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(stream, loaded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(stream: &str, version: u64) -> Loaded<u64> {
        Loaded {
            stream_id: StreamId::new(stream).unwrap(),
            state: version * 10,
            version: Some(version),
            last_position: None,
            last_recorded_at: None,
            snapshot_version: None,
            events_replayed: 0,
            from_cache: false,
        }
    }

    #[test]
    fn bounded_and_keeps_recent_entries() {
        let cache = AggregateCache::new(4);
        for i in 0..100 {
            cache.put(&loaded(&format!("s-{i}"), 1));
            assert!(cache.len() <= 4);
            // The entry just written is always there.
            assert!(cache
                .get(&StreamId::new(format!("s-{i}")).unwrap())
                .is_some());
        }
    }

    #[test]
    fn never_goes_back_to_an_older_version() {
        let cache = AggregateCache::new(8);
        let s = StreamId::new("s-1").unwrap();
        cache.put(&loaded("s-1", 5));
        cache.put(&loaded("s-1", 3));
        assert_eq!(cache.get(&s).unwrap().version, Some(5));
        cache.put(&loaded("s-1", 6));
        assert_eq!(cache.get(&s).unwrap().state, 60);
        cache.remove(&s);
        assert!(cache.get(&s).is_none());
    }

    #[test]
    fn zero_capacity_disables_it() {
        let cache = AggregateCache::new(0);
        cache.put(&loaded("s-1", 5));
        assert!(cache.get(&StreamId::new("s-1").unwrap()).is_none());
    }
}
