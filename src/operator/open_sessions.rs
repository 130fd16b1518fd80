//! The sessions of the groups a session aggregation is working on, so extending a session does
//! not read the store each time. It is a bounded cache: the store holds every session, and a group
//! not here is read from it.
//!
//! A group is read from the store's committed state, so a group whose sessions changed since the
//! last commit must stay here until that change is written: groups are touched whenever their
//! sessions are read, extended, closed or expired, and only groups untouched since the flush that
//! a commit applied are evicted, after it applied.

use crate::fixed_hash::HashMap;
use crate::state::{StateError, WindowStore};
use crate::window::Window;
use hashbrown::hash_map::EntryRef;

/// About what one cached group takes: its map slot, key and windows.
const GROUP_BYTES: usize = 128;

#[derive(Default)]
pub struct OpenSessions {
    groups: HashMap<Vec<u8>, Sessions>,
    /// Flushes so far; a group touched in the current epoch may have changes not yet committed.
    epoch: u64,
}

struct Sessions {
    windows: Vec<Window>,
    touched: u64,
}

impl OpenSessions {
    /// The sessions of `group` (closed ones kept for retention included), read from `store` when
    /// the group is not cached.
    pub fn of<'a>(
        &'a mut self,
        group: &[u8],
        store: &WindowStore,
    ) -> Result<&'a mut Vec<Window>, StateError> {
        let epoch = self.epoch;
        let sessions = match self.groups.entry_ref(group) {
            EntryRef::Occupied(entry) => entry.into_mut(),
            EntryRef::Vacant(entry) => entry.insert(Sessions {
                windows: store.committed_windows_of(group)?,
                touched: epoch,
            }),
        };
        sessions.touched = epoch;
        Ok(&mut sessions.windows)
    }

    /// Forgets a session that was closed or expired.
    pub fn remove(
        &mut self,
        group: &[u8],
        window: Window,
        store: &WindowStore,
    ) -> Result<(), StateError> {
        self.of(group, store)?.retain(|w| *w != window);
        Ok(())
    }

    /// The store was flushed: changes from now on belong to the next commit.
    pub fn flushed(&mut self) {
        self.epoch += 1;
    }

    /// The last flush was committed and written to the store: when over `limit_bytes`, forgets
    /// the groups untouched since that flush.
    pub fn committed(&mut self, limit_bytes: usize) {
        if self.groups.len() * GROUP_BYTES > limit_bytes {
            let epoch = self.epoch;
            self.groups.retain(|_, sessions| sessions.touched >= epoch);
        }
    }

    /// Forgets everything (the store returned to its committed state).
    pub fn clear(&mut self) {
        self.groups.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CacheBudget, MemoryBackend};
    use crate::topology::WindowSpec;
    use crate::window::CloseRule;

    #[test]
    fn a_group_changed_since_the_last_commit_is_never_evicted_and_others_are_read_back() {
        let close = CloseRule {
            spec: WindowSpec::Session { gap_ms: 10 },
            grace_ms: 0,
        };
        let budget = CacheBudget::new(1 << 20);
        let mut store = WindowStore::new(
            "s",
            Box::new(MemoryBackend::default()),
            close,
            budget.join(),
        );
        let mut sessions = OpenSessions::default();
        let a = Window { start: 0, end: 1 };
        let count =
            || crate::aggregate::Accumulators(vec![crate::aggregate::Accumulator::Count(1)]);
        sessions.of(b"u", &store).unwrap().push(a);
        store.update(b"u", a, false, count, |_| {}).unwrap();
        let writes = store.flush();
        sessions.flushed();
        // Changed after the flush, before its commit: must survive the eviction below.
        let b = Window { start: 50, end: 51 };
        sessions.of(b"v", &store).unwrap().push(b);
        store.update(b"v", b, false, count, |_| {}).unwrap();
        store
            .apply(&writes, &crate::state::ChangelogEnds::new())
            .unwrap();
        sessions.committed(0);
        assert_eq!(sessions.groups.len(), 1, "u evicted, v kept");
        assert_eq!(
            sessions.of(b"v", &store).unwrap(),
            &[b],
            "v's uncommitted session"
        );
        assert_eq!(
            sessions.of(b"u", &store).unwrap(),
            &[a],
            "u read back from the store"
        );
        assert!(sessions.of(b"w", &store).unwrap().is_empty());
    }
}
