//! The write-back cache in front of a [`StateBackend`]: records update cached accumulators; each
//! commit encodes the changed ones once, for the changelog and for one backend write batch.

use super::codec::{decode_accumulators, encode_accumulators, StateKey};
use super::{CacheShare, StateBackend, StateError};
use crate::aggregate::Accumulators;
use crate::record::GroupKey;
use crate::window::Window;
use hashbrown::{Equivalent, HashMap};
use std::hash::{Hash, Hasher};

/// One key's new value (`None` deletes it), as written to the backend and the changelog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreWrite {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A borrowed [`StateKey`], so the hot path looks entries up without allocating.
struct KeyRef<'a> {
    group: &'a [u8],
    window: Window,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must match the derived Hash of StateKey: GroupKey(Box<[u8]>) then Window.
        self.group.hash(state);
        self.window.hash(state);
    }
}

impl Equivalent<StateKey> for KeyRef<'_> {
    fn equivalent(&self, key: &StateKey) -> bool {
        *key.group.0 == *self.group && key.window == self.window
    }
}

struct CacheEntry {
    /// `None` marks a delete that has not been flushed yet.
    value: Option<Accumulators>,
    dirty: bool,
    /// Whether the backend (and so the changelog) holds this key. A key created and deleted
    /// between two flushes never reaches either.
    persisted: bool,
    /// What the entry counts against the cache budget: its key and encoded value as of the last
    /// flush, plus the map's overhead (0 until first flushed).
    bytes: usize,
}

/// What a cached entry takes in memory, approximately: its slot in the map (with the map's slack),
/// the group key's and the accumulators' allocations, and the sketches' (their encoded size
/// stands in for it).
fn entry_bytes(key: &StateKey, value: Option<&Accumulators>, encoded_len: usize) -> usize {
    const SLOT: usize = std::mem::size_of::<(StateKey, CacheEntry)>() * 3 / 2 + 1;
    const ALLOCATION: usize = 16;
    SLOT + key.group.0.len().max(16)
        + ALLOCATION
        + value.map_or(0, |a| {
            a.0.capacity() * std::mem::size_of::<crate::aggregate::Accumulator>() + ALLOCATION
        })
        + encoded_len
}

/// A named store of (group, window) -> accumulators.
pub struct WindowStore {
    name: String,
    backend: Box<dyn StateBackend>,
    cache: HashMap<StateKey, CacheEntry>,
    dirty: usize,
    /// The bytes of every cached entry (see `CacheEntry::bytes`).
    cached_bytes: usize,
    budget: CacheShare,
}

impl WindowStore {
    pub fn new(name: &str, backend: Box<dyn StateBackend>, budget: CacheShare) -> WindowStore {
        WindowStore {
            name: name.into(),
            backend,
            cache: HashMap::new(),
            dirty: 0,
            cached_bytes: 0,
            budget,
        }
    }

    /// Bytes the cache holds (as of the last flush of each entry).
    pub fn cached_bytes(&self) -> usize {
        self.cached_bytes
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn corrupt(&self, reason: String) -> StateError {
        StateError::Corrupt {
            store: self.name.clone(),
            reason,
        }
    }

    fn load(&self, key: &StateKey) -> Result<Option<Accumulators>, StateError> {
        match self.backend.get(&key.to_bytes())? {
            Some(bytes) => decode_accumulators(&bytes)
                .map(Some)
                .map_err(|e| self.corrupt(e)),
            None => Ok(None),
        }
    }

    /// Applies `update` to the accumulators of (group, window), creating them with `create` when
    /// the key is new. `exists` says whether the key may be in the backend (the caller's index knows).
    #[inline]
    pub fn update(
        &mut self,
        group: &[u8],
        window: Window,
        exists: bool,
        create: impl FnOnce() -> Accumulators,
        update: impl FnOnce(&mut Accumulators),
    ) -> Result<(), StateError> {
        let probe = KeyRef { group, window };
        if let Some(entry) = self.cache.get_mut(&probe) {
            update(entry.value.get_or_insert_with(create));
            if !entry.dirty {
                entry.dirty = true;
                self.dirty += 1;
            }
            return Ok(());
        }
        let key = StateKey {
            group: GroupKey(group.into()),
            window,
        };
        let loaded = if exists { self.load(&key)? } else { None };
        let persisted = loaded.is_some();
        let mut value = loaded.unwrap_or_else(create);
        update(&mut value);
        self.dirty += 1;
        self.cache.insert(
            key,
            CacheEntry {
                value: Some(value),
                dirty: true,
                persisted,
                bytes: 0,
            },
        );
        Ok(())
    }

    /// Reads the current value (cached or stored).
    pub fn get(&mut self, key: &StateKey) -> Result<Option<Accumulators>, StateError> {
        match self.cache.get(key) {
            Some(entry) => Ok(entry.value.clone()),
            None => self.load(key),
        }
    }

    /// Removes a key and returns its value; the delete reaches the backend and the changelog at
    /// the next flush, unless the key never got there.
    pub fn take(
        &mut self,
        group: &[u8],
        window: Window,
    ) -> Result<Option<Accumulators>, StateError> {
        let probe = KeyRef { group, window };
        if let Some(entry) = self.cache.get_mut(&probe) {
            let value = entry.value.take();
            if !entry.persisted {
                if entry.dirty {
                    self.dirty -= 1;
                }
                self.cached_bytes -= entry.bytes;
                self.cache.remove(&probe);
            } else if !entry.dirty {
                entry.dirty = true;
                self.dirty += 1;
            }
            return Ok(value);
        }
        let key = StateKey {
            group: GroupKey(group.into()),
            window,
        };
        let value = self.load(&key)?;
        if value.is_some() {
            self.dirty += 1;
            self.cache.insert(
                key,
                CacheEntry {
                    value: None,
                    dirty: true,
                    persisted: true,
                    bytes: 0,
                },
            );
        }
        Ok(value)
    }

    /// Removes a key (see [`WindowStore::take`]).
    pub fn delete(&mut self, group: &[u8], window: Window) -> Result<(), StateError> {
        self.take(group, window).map(|_| ())
    }

    /// Whether anything changed since the last flush.
    pub fn has_changes(&self) -> bool {
        self.dirty > 0
    }

    /// Encodes every change since the last flush. The caller sends them to the changelog inside the
    /// commit's transaction and calls [`WindowStore::apply`] once the commit succeeded.
    pub fn flush(&mut self) -> Vec<StoreWrite> {
        let mut writes = Vec::with_capacity(self.dirty);
        if self.dirty > 0 {
            for (key, entry) in self.cache.iter_mut().filter(|(_, e)| e.dirty) {
                entry.dirty = false;
                entry.persisted = entry.value.is_some();
                let value = entry.value.as_ref().map(|accumulators| {
                    let mut bytes = Vec::with_capacity(64);
                    encode_accumulators(accumulators, &mut bytes);
                    bytes
                });
                let bytes = entry_bytes(
                    key,
                    entry.value.as_ref(),
                    value.as_ref().map_or(0, Vec::len),
                );
                self.cached_bytes = self.cached_bytes - entry.bytes + bytes;
                entry.bytes = bytes;
                writes.push(StoreWrite {
                    key: key.to_bytes(),
                    value,
                });
            }
            let cached_bytes = &mut self.cached_bytes;
            self.cache.retain(|_, entry| {
                let keep = entry.value.is_some();
                if !keep {
                    *cached_bytes -= entry.bytes;
                }
                keep
            });
        }
        self.dirty = 0;
        writes
    }

    /// Writes a committed flush to the backend as one batch, then evicts clean entries until the
    /// cache is within this store's share of the budget.
    pub fn apply(&mut self, writes: &[StoreWrite]) -> Result<(), StateError> {
        if !writes.is_empty() {
            self.backend.write_batch(writes)?;
        }
        let share = self.budget.bytes();
        if self.cached_bytes > share {
            let mut excess = self.cached_bytes - share;
            let cached_bytes = &mut self.cached_bytes;
            self.cache.retain(|_, entry| {
                if entry.dirty || excess == 0 {
                    return true;
                }
                excess = excess.saturating_sub(entry.bytes);
                *cached_bytes -= entry.bytes;
                false
            });
        }
        Ok(())
    }

    /// Forgets everything not yet applied (the commit was aborted).
    pub fn discard_uncommitted(&mut self) {
        self.cache.clear();
        self.dirty = 0;
        self.cached_bytes = 0;
    }

    /// Writes restored changelog records straight to the backend.
    pub fn restore_batch(&mut self, writes: &[StoreWrite]) -> Result<(), StateError> {
        self.discard_uncommitted();
        self.backend.write_batch(writes)
    }

    /// Every committed key, for rebuilding the operator's window index after a restore.
    pub fn committed_keys(&self) -> Result<Vec<StateKey>, StateError> {
        let mut keys = Vec::new();
        self.backend.for_each(&mut |key, _| {
            if let Some(key) = StateKey::from_bytes(key) {
                keys.push(key);
            }
        })?;
        Ok(keys)
    }

    pub fn size_estimate(&self) -> (u64, u64) {
        self.backend.size_estimate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Accumulator;
    use crate::state::MemoryBackend;

    fn count(n: u64) -> Accumulators {
        Accumulators(vec![Accumulator::Count(n)])
    }

    fn bump(a: &mut Accumulators) {
        if let Accumulator::Count(n) = &mut a.0[0] {
            *n += 1;
        }
    }

    #[test]
    fn changes_reach_the_backend_only_when_applied() {
        // A budget under one entry: every clean entry is evicted after a commit.
        let budget = crate::state::CacheBudget::new(100);
        let mut store = WindowStore::new("s", Box::new(MemoryBackend::default()), budget.join());
        let w = Window { start: 0, end: 10 };
        for _ in 0..3 {
            store.update(b"g", w, false, || count(0), bump).unwrap();
        }
        let writes = store.flush();
        assert_eq!(
            writes.len(),
            1,
            "one write per key per commit, however many records"
        );
        assert!(!store.has_changes());
        store.apply(&writes).unwrap();
        // Evicted from the cache (budget 1 entry is exceeded only when > 1), still readable.
        store.update(b"h", w, false, || count(0), bump).unwrap();
        let writes = store.flush();
        store.apply(&writes).unwrap();
        let key = StateKey {
            group: GroupKey(b"g".as_slice().into()),
            window: w,
        };
        assert_eq!(store.get(&key).unwrap(), Some(count(3)));
        store.update(b"g", w, true, || count(0), bump).unwrap();
        store.discard_uncommitted();
        assert_eq!(
            store.get(&key).unwrap(),
            Some(count(3)),
            "aborted changes are forgotten"
        );
        store.delete(b"g", w).unwrap();
        let writes = store.flush();
        store.apply(&writes).unwrap();
        assert_eq!(store.get(&key).unwrap(), None);
        assert_eq!(store.committed_keys().unwrap().len(), 1);
    }

    #[test]
    fn keys_created_and_deleted_between_flushes_write_nothing() {
        let budget = crate::state::CacheBudget::new(1 << 20);
        let mut store = WindowStore::new("s", Box::new(MemoryBackend::default()), budget.join());
        let w = Window { start: 0, end: 10 };
        store.update(b"g", w, false, || count(0), bump).unwrap();
        assert_eq!(store.take(b"g", w).unwrap(), Some(count(1)));
        assert!(!store.has_changes());
        assert!(
            store.flush().is_empty(),
            "no tombstone for a key the changelog never saw"
        );
    }

    #[test]
    fn the_cache_keeps_to_its_share_of_the_byte_budget_and_never_evicts_unflushed_changes() {
        let budget = crate::state::CacheBudget::new(40_000);
        let mut store = WindowStore::new("s", Box::new(MemoryBackend::default()), budget.join());
        let _other = budget.join();
        let w = Window { start: 0, end: 10 };
        for i in 0..1_000u32 {
            store
                .update(&i.to_be_bytes(), w, false, || count(0), bump)
                .unwrap();
        }
        let writes = store.flush();
        assert!(
            store.cached_bytes() > 20_000,
            "1000 entries are over the share"
        );
        // Changed after the flush: must survive the eviction.
        store
            .update(&7u32.to_be_bytes(), w, true, || count(0), bump)
            .unwrap();
        store.apply(&writes).unwrap();
        assert!(
            store.cached_bytes() <= 20_000,
            "evicted down to half the budget (two stores): {}",
            store.cached_bytes()
        );
        let key = |i: u32| StateKey {
            group: GroupKey(i.to_be_bytes().as_slice().into()),
            window: w,
        };
        assert_eq!(
            store.get(&key(999)).unwrap(),
            Some(count(1)),
            "evicted, read back"
        );
        assert_eq!(
            store.get(&key(7)).unwrap(),
            Some(count(2)),
            "the unflushed change is kept"
        );
    }
}
