//! A store of (group, window) -> accumulators: a write-back cache over a key-value backend
//! (RocksDB in production) with a close-time index beside the values, so closing windows scans the
//! backend in close order instead of keeping a schedule in memory. Records update cached
//! accumulators; each commit encodes the changed ones once, for the changelog and for one backend
//! write batch that carries the index changes too.

use super::codec::{decode_accumulators, encode_accumulators, ClosingKey, StateKey};
use super::{CacheShare, ChangelogEnds, Keyspace, StateBackend, StateError, StorePosition};
use crate::aggregate::Accumulators;
use crate::fixed_hash::{HashMap, HashSet};
use crate::record::GroupKey;
use crate::topology::WindowSpec;
use crate::window::{CloseRule, Window};
use hashbrown::Equivalent;
use std::collections::BTreeMap;
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

/// A session's group ++ start, which stays when the session grows at its end.
fn group_and_start(key: &StateKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.group.0.len() + 8);
    out.extend_from_slice(&key.group.0);
    out.extend_from_slice(&key.window.start.to_be_bytes());
    out
}

/// A named store of (group, window) -> accumulators, with its windows' close-time index.
///
/// Memory is the cache (bounded by its [`CacheShare`]) plus the windows created since the last
/// flush; every other open window is known only to the backend.
pub struct WindowStore {
    name: String,
    backend: Box<dyn StateBackend>,
    close: CloseRule,
    cache: HashMap<StateKey, CacheEntry>,
    dirty: usize,
    /// The bytes of every cached entry (see `CacheEntry::bytes`).
    cached_bytes: usize,
    budget: CacheShare,
    /// Windows created since the last flush, by close time: not in the backend's index yet.
    created: BTreeMap<i64, Vec<StateKey>>,
    /// The index changes of the last flush, written with its values by [`WindowStore::apply`].
    flushed_closing: Vec<StoreWrite>,
    /// Index entries moved since the last flush (see [`WindowStore::reschedule`]).
    rescheduled: Vec<StoreWrite>,
    /// Keys the backend holds as of the last apply, and the change the last flush makes to it.
    live: u64,
    flushed_live_change: i64,
    /// The changelog partition this store's writes go to, whose offsets its positions record.
    changelog: Option<(String, i32)>,
}

impl WindowStore {
    pub fn new(
        name: &str,
        backend: Box<dyn StateBackend>,
        close: CloseRule,
        budget: CacheShare,
    ) -> WindowStore {
        WindowStore {
            name: name.into(),
            backend,
            close,
            cache: HashMap::default(),
            dirty: 0,
            cached_bytes: 0,
            budget,
            created: BTreeMap::new(),
            flushed_closing: Vec::new(),
            rescheduled: Vec::new(),
            live: 0,
            flushed_live_change: 0,
            changelog: None,
        }
    }

    /// Names the changelog partition the store's writes go to: each apply then records, in the
    /// same batch, how far into it the store's files reach (see [`StorePosition`]).
    pub fn with_changelog(mut self, topic: &str, partition: i32) -> WindowStore {
        self.changelog = Some((topic.to_string(), partition));
        self
    }

    /// Where the store's files stand in its changelog, as the last batch that said recorded.
    pub fn position(&self) -> Result<Option<StorePosition>, StateError> {
        self.backend.position()
    }

    /// Bytes the cache holds (as of the last flush of each entry).
    pub fn cached_bytes(&self) -> usize {
        self.cached_bytes
    }

    /// This store's share of the cache budget, in bytes.
    pub fn cache_share_bytes(&self) -> usize {
        self.budget.bytes()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Windows the backend holds as of the last commit (closed ones kept for retention included);
    /// after a restore, starting from the backend's estimate.
    pub fn live_windows(&self) -> u64 {
        self.live
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

    fn created(&mut self, key: StateKey) {
        self.created
            .entry(self.close.close_at(key.window))
            .or_default()
            .push(key);
    }

    /// Applies `update` to the accumulators of (group, window), creating them with `create` when
    /// the key is new. `exists` says whether the key may be in the backend; `false` (the caller
    /// knows it is new) saves a backend read.
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
            let recreated = entry.value.is_none();
            update(entry.value.get_or_insert_with(create));
            if !entry.dirty {
                entry.dirty = true;
                self.dirty += 1;
            }
            if recreated {
                self.created(StateKey {
                    group: GroupKey(group.into()),
                    window,
                });
            }
            return Ok(());
        }
        let key = StateKey {
            group: GroupKey(group.into()),
            window,
        };
        let loaded = if exists { self.load(&key)? } else { None };
        let persisted = loaded.is_some();
        if !persisted {
            self.created(key.clone());
        }
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

    /// The committed windows of `group`, from the backend (the caller knows none of the group's
    /// windows changed since the last commit).
    pub fn committed_windows_of(&self, group: &[u8]) -> Result<Vec<Window>, StateError> {
        let mut windows = Vec::new();
        self.backend
            .scan_from(Keyspace::Values, group, &mut |key, _| {
                if !key.starts_with(group) {
                    return false;
                }
                // A longer group sharing the prefix is not this group.
                if key.len() == group.len() + 16 {
                    if let Some(key) = StateKey::from_bytes(key) {
                        windows.push(key.window);
                    }
                }
                true
            })?;
        Ok(windows)
    }

    /// Index entries closing in `(after, through]`, in close order.
    fn indexed_closing(
        &self,
        after: i64,
        through: i64,
    ) -> Result<Vec<(i64, StateKey)>, StateError> {
        Ok(self.indexed_closing_within(after, through, usize::MAX)?.0)
    }

    /// Index entries closing in `(after, through]`, in close order, stopping at the end of the
    /// close time at which `limit` is reached (a close time's entries are never split), with the
    /// close time that reached (`through` when every entry was read).
    fn indexed_closing_within(
        &self,
        after: i64,
        through: i64,
        limit: usize,
    ) -> Result<(Vec<(i64, StateKey)>, i64), StateError> {
        let mut due: Vec<(i64, StateKey)> = Vec::new();
        if through <= after {
            return Ok((due, through));
        }
        let mut reached = through;
        let mut corrupt = false;
        self.backend.scan_from(
            Keyspace::Closing,
            &ClosingKey::seek(after.saturating_add(1)),
            &mut |bytes, _| match ClosingKey::decode(bytes) {
                Some((close_at, _)) if close_at > through => false,
                Some((close_at, _))
                    if due.len() >= limit
                        && due.last().is_some_and(|(last, _)| *last < close_at) =>
                {
                    reached = due.last().map_or(through, |(last, _)| *last);
                    false
                }
                Some(entry) => {
                    due.push(entry);
                    true
                }
                None => {
                    corrupt = true;
                    false
                }
            },
        )?;
        if corrupt {
            return Err(self.corrupt("a close-time index key is malformed".into()));
        }
        Ok((due, reached))
    }

    /// The index entries that close in `(after, through]`, as (close time, key), in close order:
    /// the indexed ones and the windows created since the last flush (which are then no longer
    /// pending). Entries of windows deleted since may be among them: the caller finds no value for
    /// those. In a session store that is also how a session extended at its end shows up: its
    /// entry stays at the close time of the end it had (see [`WindowStore::flush`]), and the caller
    /// moves it with [`WindowStore::reschedule`].
    pub fn due_to_close(
        &mut self,
        after: i64,
        through: i64,
    ) -> Result<Vec<(i64, StateKey)>, StateError> {
        Ok(self.due_to_close_within(after, through, usize::MAX)?.0)
    }

    /// [`WindowStore::due_to_close`], bounded: the entries of the earliest close times in
    /// `(after, through]` until `limit` is reached, never splitting a close time (so one close
    /// time with more entries returns them all), and the close time they reach: `through` when
    /// none is left, or else the caller closes through it and asks again for the rest. A jump of
    /// stream time over many close times so spreads their windows over several commits.
    pub fn due_to_close_within(
        &mut self,
        after: i64,
        through: i64,
        limit: usize,
    ) -> Result<(Vec<(i64, StateKey)>, i64), StateError> {
        let limit = limit.max(1);
        let (mut due, mut reached) = self.indexed_closing_within(after, through, limit)?;
        let later = self.created.split_off(&reached.saturating_add(1));
        for (close_at, keys) in std::mem::replace(&mut self.created, later) {
            due.extend(keys.into_iter().map(|key| (close_at, key)));
        }
        due.sort_unstable();
        due.dedup();
        if due.len() > limit {
            // Windows created since the flush took it past the limit: cut again at the end of
            // the close time that reached it. What is left stays pending (an entry also in the
            // index comes back from both, and is deduplicated then).
            let cut = due[limit - 1].0;
            let keep = due.partition_point(|(close_at, _)| *close_at <= cut);
            for (close_at, key) in due.split_off(keep) {
                self.created.entry(close_at).or_default().push(key);
            }
            reached = cut;
        }
        Ok((due, reached))
    }

    /// Moves a session's index entry, found due at `close_at` for `stale`, to `current` (the
    /// session with the same start, now longer), or drops it when there is none. Written with the
    /// next flush.
    pub fn reschedule(&mut self, close_at: i64, stale: &StateKey, current: Option<Window>) {
        self.rescheduled.push(StoreWrite {
            key: ClosingKey::encode(close_at, &stale.to_bytes()),
            value: None,
        });
        if let Some(window) = current {
            let key = StateKey {
                group: stale.group.clone(),
                window,
            };
            self.rescheduled.push(StoreWrite {
                key: ClosingKey::encode(self.close.close_at(window), &key.to_bytes()),
                value: Some(Vec::new()),
            });
        }
    }

    /// The committed windows whose close time is in `(after, through]`, in close order (for
    /// retention: closed windows stay in the store until their close time plus retention).
    pub fn closed_between(&self, after: i64, through: i64) -> Result<Vec<StateKey>, StateError> {
        Ok(self
            .indexed_closing(after, through)?
            .into_iter()
            .map(|(_, key)| key)
            .collect())
    }

    /// Whether anything changed since the last flush (values, or index entries moved).
    pub fn has_changes(&self) -> bool {
        self.dirty > 0 || !self.rescheduled.is_empty()
    }

    /// Session stores: the (group, start) of sessions that only grew at their end since the last
    /// flush (a persisted key goes, a new key with the same start comes), as group ++ start bytes.
    fn extended_sessions(&self) -> HashSet<Vec<u8>> {
        if !matches!(self.close.spec, WindowSpec::Session { .. }) {
            return HashSet::default();
        }
        let (mut gone, mut came) = (HashSet::default(), HashSet::default());
        for (key, entry) in self.cache.iter().filter(|(_, e)| e.dirty) {
            match (entry.value.is_some(), entry.persisted) {
                (false, true) => gone.insert(group_and_start(key)),
                (true, false) => came.insert(group_and_start(key)),
                _ => false,
            };
        }
        gone.retain(|k| came.contains(k));
        gone
    }

    /// Encodes every change since the last flush. The caller sends them to the changelog inside the
    /// commit's transaction and calls [`WindowStore::apply`] once the commit succeeded.
    ///
    /// The close-time index changes when a key appears or goes, except for a session that only
    /// grew at its end: its entry stays at its old close time and is moved when it comes due
    /// ([`WindowStore::reschedule`]), so extending a session writes no index entries.
    pub fn flush(&mut self) -> Vec<StoreWrite> {
        let mut writes = Vec::with_capacity(self.dirty);
        self.created.clear();
        self.flushed_closing.clear();
        self.flushed_closing.append(&mut self.rescheduled);
        self.flushed_live_change = 0;
        if self.dirty > 0 {
            let close = self.close;
            let extended = self.extended_sessions();
            for (key, entry) in self.cache.iter_mut().filter(|(_, e)| e.dirty) {
                entry.dirty = false;
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
                let key_bytes = key.to_bytes();
                // The index changes when a key appears or goes; an update keeps its entry.
                if value.is_some() != entry.persisted {
                    if extended.is_empty() || !extended.contains(&group_and_start(key)) {
                        self.flushed_closing.push(StoreWrite {
                            key: ClosingKey::encode(close.close_at(key.window), &key_bytes),
                            value: value.as_ref().map(|_| Vec::new()),
                        });
                    }
                    self.flushed_live_change += if value.is_some() { 1 } else { -1 };
                }
                entry.persisted = value.is_some();
                writes.push(StoreWrite {
                    key: key_bytes,
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

    /// Writes a committed flush (its values and index changes) to the backend as one batch, with
    /// the store's changelog position when `ends` (what the committed transaction wrote) names its
    /// changelog partition, then evicts clean entries until the cache is within this store's share
    /// of the budget. Without a position the store's recorded one stays behind its files, which
    /// only makes a restore replay more.
    pub fn apply(&mut self, writes: &[StoreWrite], ends: &ChangelogEnds) -> Result<(), StateError> {
        let closing = std::mem::take(&mut self.flushed_closing);
        let position = self
            .changelog
            .as_ref()
            .and_then(|partition| ends.get(partition))
            .map(|&end| StorePosition::now(end));
        if !writes.is_empty() || !closing.is_empty() || position.is_some() {
            self.backend.write_batch(writes, &closing, position)?;
        }
        self.live = self
            .live
            .saturating_add_signed(std::mem::take(&mut self.flushed_live_change));
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
        self.created.clear();
        self.flushed_closing.clear();
        self.rescheduled.clear();
        self.flushed_live_change = 0;
    }

    /// The index entries for restored values: one per put, a delete per delete.
    fn closing_writes(&self, values: &[StoreWrite]) -> Vec<StoreWrite> {
        values
            .iter()
            .filter_map(|write| {
                let key = StateKey::from_bytes(&write.key)?;
                Some(StoreWrite {
                    key: ClosingKey::encode(self.close.close_at(key.window), &write.key),
                    value: write.value.as_ref().map(|_| Vec::new()),
                })
            })
            .collect()
    }

    /// Writes restored changelog records straight to the backend, with their index entries and
    /// `next_offset`, the changelog offset the restore goes on from.
    pub fn restore_batch(
        &mut self,
        writes: &[StoreWrite],
        next_offset: i64,
    ) -> Result<(), StateError> {
        self.discard_uncommitted();
        let closing = self.closing_writes(writes);
        self.backend
            .write_batch(writes, &closing, Some(StorePosition::now(next_offset)))
    }

    /// Makes the store ready after it was opened or restored: forgets anything uncommitted and
    /// takes the backend's count of committed windows.
    pub fn reopen(&mut self) -> Result<(), StateError> {
        self.discard_uncommitted();
        // The backend's own count (RocksDB's key estimate, which counts overwrites still in the
        // memtable), not a scan of every key: a task starts right after its restore, between two
        // polls. It only feeds the open-windows figures; commits move it by what they change.
        self.live = self.backend.size_estimate().0;
        Ok(())
    }

    /// Every committed key (the test driver reads whole stores with it).
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

    const TUMBLING: CloseRule = CloseRule {
        spec: crate::topology::WindowSpec::Tumbling { size_ms: 10 },
        grace_ms: 5,
    };

    fn memory_store(close: CloseRule, budget: &crate::state::CacheBudget) -> WindowStore {
        WindowStore::new(
            "s",
            Box::new(MemoryBackend::default()),
            close,
            budget.join(),
        )
    }

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
        let mut store = memory_store(TUMBLING, &budget);
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
        store.apply(&writes, &ChangelogEnds::new()).unwrap();
        // Evicted from the cache (budget 1 entry is exceeded only when > 1), still readable.
        store.update(b"h", w, false, || count(0), bump).unwrap();
        let writes = store.flush();
        store.apply(&writes, &ChangelogEnds::new()).unwrap();
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
        store.apply(&writes, &ChangelogEnds::new()).unwrap();
        assert_eq!(store.get(&key).unwrap(), None);
        assert_eq!(store.committed_keys().unwrap().len(), 1);
    }

    #[test]
    fn keys_created_and_deleted_between_flushes_write_nothing() {
        let budget = crate::state::CacheBudget::new(1 << 20);
        let mut store = memory_store(TUMBLING, &budget);
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
        let mut store = memory_store(TUMBLING, &budget);
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
        store.apply(&writes, &ChangelogEnds::new()).unwrap();
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

    /// The close-time index over any backend: windows come due in close order, whether created
    /// since the last flush or committed before it; deleted ones are not in it after their delete
    /// is applied; an aborted flush leaves it as it was; a restore writes it with the values.
    fn the_close_time_index_follows_the_values(backend: Box<dyn StateBackend>) {
        let budget = crate::state::CacheBudget::new(0);
        let mut store = WindowStore::new("s", backend, TUMBLING, budget.join());
        let w = |start: i64| Window {
            start,
            end: start + 10,
        };
        let due = |entries: Vec<(i64, StateKey)>| -> Vec<StateKey> {
            entries.into_iter().map(|(_, key)| key).collect()
        };
        let keys = |keys: Vec<StateKey>| -> Vec<(Vec<u8>, i64)> {
            keys.into_iter()
                .map(|k| (k.group.0.to_vec(), k.window.start))
                .collect()
        };
        store.update(b"a", w(20), true, || count(0), bump).unwrap();
        store.update(b"b", w(0), true, || count(0), bump).unwrap();
        let writes = store.flush();
        store.apply(&writes, &ChangelogEnds::new()).unwrap();
        assert_eq!(store.live_windows(), 2);
        // Committed (b@0, a@20) and created since the flush (c@10): due in close order.
        store.update(b"c", w(10), true, || count(0), bump).unwrap();
        assert_eq!(
            keys(due(store.due_to_close(i64::MIN, 35).unwrap())),
            [(b"b".to_vec(), 0), (b"c".to_vec(), 10), (b"a".to_vec(), 20)]
        );
        assert!(
            store.due_to_close(35, 100).unwrap().is_empty(),
            "nothing after the range"
        );
        assert_eq!(
            keys(due(store.due_to_close(14, 15).unwrap())),
            [(b"b".to_vec(), 0)],
            "close time 15 is in (14, 15]"
        );
        store.delete(b"b", w(0)).unwrap();
        let writes = store.flush();
        assert_eq!(
            keys(store.closed_between(i64::MIN, 100).unwrap()),
            [(b"b".to_vec(), 0), (b"a".to_vec(), 20)],
            "the index changes (b goes, c comes) when the flush is applied"
        );
        store.apply(&writes, &ChangelogEnds::new()).unwrap();
        assert_eq!(
            keys(store.closed_between(i64::MIN, 100).unwrap()),
            [(b"c".to_vec(), 10), (b"a".to_vec(), 20)]
        );
        assert_eq!(store.live_windows(), 2);
        store.update(b"d", w(40), true, || count(0), bump).unwrap();
        store.flush();
        store.discard_uncommitted();
        assert_eq!(
            keys(store.closed_between(i64::MIN, 100).unwrap()).len(),
            2,
            "an aborted flush adds nothing to the index"
        );
        let restored = StoreWrite {
            key: StateKey {
                group: GroupKey(b"e".as_slice().into()),
                window: w(30),
            }
            .to_bytes(),
            value: Some({
                let mut bytes = Vec::new();
                encode_accumulators(&count(7), &mut bytes);
                bytes
            }),
        };
        store.restore_batch(&[restored], 1).unwrap();
        store.reopen().unwrap();
        assert_eq!(store.live_windows(), 3);
        assert_eq!(
            keys(due(store.due_to_close(25, 45).unwrap())),
            [(b"a".to_vec(), 20), (b"e".to_vec(), 30)],
            "c closes at 25, a at 35, e at 45"
        );
        assert_eq!(store.committed_windows_of(b"a").unwrap(), [w(20)]);
    }

    #[test]
    fn the_close_time_index_follows_the_values_in_memory() {
        the_close_time_index_follows_the_values(Box::new(MemoryBackend::default()));
    }

    #[test]
    fn bounded_closing_returns_whole_close_times_until_the_limit_and_where_it_stopped() {
        let budget = crate::state::CacheBudget::new(0);
        let mut store = memory_store(TUMBLING, &budget);
        let w = |start: i64| Window {
            start,
            end: start + 10,
        };
        // Committed: two groups in each of the windows at 0, 10 and 20 (close at 15, 25, 35).
        for start in [0, 10, 20] {
            for group in [b"a", b"b"] {
                store
                    .update(group, w(start), true, || count(0), bump)
                    .unwrap();
            }
        }
        let writes = store.flush();
        store.apply(&writes, &ChangelogEnds::new()).unwrap();
        // Created since the flush: one more at 0 (close 15) and one at 30 (close 45).
        store.update(b"c", w(0), true, || count(0), bump).unwrap();
        store.update(b"c", w(30), true, || count(0), bump).unwrap();
        let close_times =
            |due: &[(i64, StateKey)]| due.iter().map(|(at, _)| *at).collect::<Vec<_>>();

        // Limit 2: close time 15 has three entries (two indexed, one created), never split.
        let (due, reached) = store.due_to_close_within(i64::MIN, 100, 2).unwrap();
        assert_eq!((close_times(&due), reached), (vec![15, 15, 15], 15));
        // Limit 2 from there: 25 reaches it; 35 waits.
        let (due, reached) = store.due_to_close_within(15, 100, 2).unwrap();
        assert_eq!((close_times(&due), reached), (vec![25, 25], 25));
        let (due, reached) = store.due_to_close_within(25, 100, 1).unwrap();
        assert_eq!((close_times(&due), reached), (vec![35, 35], 35));
        // The created window at 45 was left pending by every cut, and comes due last.
        let (due, reached) = store.due_to_close_within(35, 100, 1).unwrap();
        assert_eq!((close_times(&due), reached), (vec![45], 100));
        assert!(store.due_to_close_within(100, 200, 1).unwrap().0.is_empty());

        // A cut made by created windows alone puts back the ones past it.
        let mut store = memory_store(TUMBLING, &budget);
        for start in [0, 10, 20] {
            store
                .update(b"d", w(start), true, || count(0), bump)
                .unwrap();
        }
        let (due, reached) = store.due_to_close_within(i64::MIN, 100, 2).unwrap();
        assert_eq!((close_times(&due), reached), (vec![15, 25], 25));
        let (due, reached) = store.due_to_close_within(25, 100, 2).unwrap();
        assert_eq!((close_times(&due), reached), (vec![35], 100));
    }

    #[test]
    fn the_close_time_index_follows_the_values_in_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::state::TaskDb::open(dir.path(), &["s".into()]).unwrap();
        the_close_time_index_follows_the_values(Box::new(db.backend("s")));
    }

    #[test]
    fn a_session_extended_at_its_end_keeps_its_index_entry_until_it_is_rescheduled() {
        let close = CloseRule {
            spec: crate::topology::WindowSpec::Session { gap_ms: 10 },
            grace_ms: 0,
        };
        let budget = crate::state::CacheBudget::new(1 << 20);
        let mut store = memory_store(close, &budget);
        let first = Window { start: 0, end: 1 };
        store.update(b"u", first, false, || count(0), bump).unwrap();
        let writes = store.flush();
        store.apply(&writes, &ChangelogEnds::new()).unwrap();
        // Extended at its end: the accumulators move to the longer key.
        let longer = Window { start: 0, end: 6 };
        let moved = store.take(b"u", first).unwrap().unwrap();
        store.update(b"u", longer, false, || moved, bump).unwrap();
        let writes = store.flush();
        assert_eq!(writes.len(), 2, "the values move: a delete and a put");
        assert!(store.flushed_closing.is_empty(), "the index does not");
        store.apply(&writes, &ChangelogEnds::new()).unwrap();
        let due = store.due_to_close(i64::MIN, 11).unwrap();
        let stale = StateKey {
            group: GroupKey(b"u".as_slice().into()),
            window: first,
        };
        assert_eq!(
            due,
            [(11, stale.clone())],
            "found due at the old end's close time"
        );
        store.reschedule(11, &stale, Some(longer));
        let writes = store.flush();
        store.apply(&writes, &ChangelogEnds::new()).unwrap();
        assert!(store.due_to_close(11, 15).unwrap().is_empty());
        assert_eq!(
            due_keys(store.due_to_close(15, 16).unwrap()),
            [longer],
            "moved to the new end's close time"
        );
    }

    fn due_keys(entries: Vec<(i64, StateKey)>) -> Vec<Window> {
        entries.into_iter().map(|(_, key)| key.window).collect()
    }
}
