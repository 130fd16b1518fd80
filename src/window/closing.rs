//! Which stored windows are open, when each closes, and when closed ones kept for `retention` are
//! deleted. The operator that owns the store decides what closing means (emit, delete); this
//! module only keeps the schedule.

use super::{close_time, Window};
use crate::topology::WindowSpec;
use hashbrown::HashMap;
use std::collections::BTreeMap;

/// The open (group, window) entries of one store and their closing and expiry schedules.
///
/// # Examples
/// ```
/// use eddy::topology::WindowSpec;
/// use eddy::window::{Window, WindowSchedule};
/// let spec = WindowSpec::Tumbling { size_ms: 100 };
/// let mut schedule = WindowSchedule::new(spec, 10, 0);
/// assert!(!schedule.track(b"g", Window { start: 0, end: 100 }));
/// assert!(schedule.track(b"g", Window { start: 0, end: 100 }), "known the second time");
/// let mut closed = Vec::new();
/// schedule.close_due(109, |_, w, _| { closed.push(w); Ok::<_, ()>(()) }).unwrap();
/// assert!(closed.is_empty(), "end + grace not reached");
/// schedule.close_due(110, |_, w, _| { closed.push(w); Ok::<_, ()>(()) }).unwrap();
/// assert_eq!(closed, [Window { start: 0, end: 100 }]);
/// assert_eq!(schedule.open_windows(), 0);
/// ```
pub struct WindowSchedule {
    spec: WindowSpec,
    grace_ms: i64,
    retention_ms: i64,
    /// Every (group, window) in the store: existence checks without reads, and session lookups.
    open: HashMap<Vec<u8>, Vec<Window>>,
    /// close time -> windows to close then (entries for merged-away sessions are skipped).
    closing: BTreeMap<i64, Vec<(Vec<u8>, Window)>>,
    /// Closed windows kept for `retention`, by deletion time.
    expiring: BTreeMap<i64, Vec<(Vec<u8>, Window)>>,
}

impl WindowSchedule {
    pub fn new(spec: WindowSpec, grace_ms: i64, retention_ms: i64) -> WindowSchedule {
        WindowSchedule {
            spec,
            grace_ms,
            retention_ms,
            open: HashMap::new(),
            closing: BTreeMap::new(),
            expiring: BTreeMap::new(),
        }
    }

    fn close_time(&self, window: Window) -> i64 {
        close_time(&self.spec, window, self.grace_ms)
    }

    pub fn clear(&mut self) {
        self.open.clear();
        self.closing.clear();
        self.expiring.clear();
    }

    /// Adds a window read back from committed state. One that `watermark` already closed was
    /// emitted before and is kept only for `retention`: it goes to the expiry schedule.
    pub fn reload(&mut self, group: Vec<u8>, window: Window, watermark: i64) {
        let close_at = self.close_time(window);
        let schedule = if close_at <= watermark && self.retention_ms > 0 {
            self.expiring
                .entry(close_at.saturating_add(self.retention_ms))
                .or_default()
        } else {
            self.closing.entry(close_at).or_default()
        };
        schedule.push((group.clone(), window));
        self.open.entry(group).or_default().push(window);
    }

    /// Fixed windows: records (group, window) as open and schedules its close. Returns whether it
    /// was open already (so the store may hold it).
    #[inline]
    pub fn track(&mut self, group: &[u8], window: Window) -> bool {
        let windows = self.open.entry_ref(group).or_default();
        if windows.contains(&window) {
            return true;
        }
        windows.push(window);
        let close_at = close_time(&self.spec, window, self.grace_ms);
        self.closing
            .entry(close_at)
            .or_default()
            .push((group.into(), window));
        false
    }

    /// Sessions: the open sessions of `group`, for the caller to merge into. A session whose start
    /// changes must be announced with [`WindowSchedule::schedule_close`]; one that only grows at
    /// its end keeps its entry, which is rescheduled when it comes due.
    #[inline]
    pub fn sessions_mut(&mut self, group: &[u8]) -> &mut Vec<Window> {
        self.open.entry_ref(group).or_default()
    }

    /// Schedules the close of a session with a new start.
    pub fn schedule_close(&mut self, group: &[u8], window: Window) {
        let close_at = self.close_time(window);
        self.closing
            .entry(close_at)
            .or_default()
            .push((group.into(), window));
    }

    /// Closes every window due at `watermark`, in close-time order. `close(group, window,
    /// retained)` is called once per closed window; `retained` says it stays in the store (for
    /// `retention`), otherwise the caller removes it.
    pub fn close_due<E>(
        &mut self,
        watermark: i64,
        mut close: impl FnMut(&[u8], Window, bool) -> Result<(), E>,
    ) -> Result<(), E> {
        let retained = self.retention_ms > 0;
        while let Some(entry) = self.closing.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let (close_at, due) = entry.remove_entry();
            for (group, scheduled) in due {
                let Some(windows) = self.open.get_mut(&group) else {
                    continue;
                };
                // Sessions grow after they are scheduled: match by start, close what is there now.
                let Some(position) = windows.iter().position(|w| w.start == scheduled.start) else {
                    continue;
                };
                let window = windows[position];
                let due_at = close_time(&self.spec, window, self.grace_ms);
                if due_at > watermark {
                    self.closing
                        .entry(due_at)
                        .or_default()
                        .push((group, window));
                    continue;
                }
                if !retained {
                    windows.swap_remove(position);
                    if windows.is_empty() {
                        self.open.remove(&group);
                    }
                }
                close(&group, window, retained)?;
                if retained {
                    self.expiring
                        .entry(close_at + self.retention_ms)
                        .or_default()
                        .push((group, window));
                }
            }
        }
        Ok(())
    }

    /// Forgets every retained window whose retention ended at `watermark`; `delete` removes it
    /// from the store.
    pub fn expire_due<E>(
        &mut self,
        watermark: i64,
        mut delete: impl FnMut(&[u8], Window) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(entry) = self.expiring.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            for (group, window) in entry.remove() {
                if let Some(windows) = self.open.get_mut(&group) {
                    windows.retain(|w| *w != window);
                    if windows.is_empty() {
                        self.open.remove(&group);
                    }
                }
                delete(&group, window)?;
            }
        }
        Ok(())
    }

    /// Number of open (group, window) entries (retained ones included).
    pub fn open_windows(&self) -> usize {
        self.open.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(schedule: &mut WindowSchedule, watermark: i64) -> Vec<(Vec<u8>, Window, bool)> {
        let mut out = Vec::new();
        schedule
            .close_due(watermark, |g, w, kept| {
                out.push((g.to_vec(), w, kept));
                Ok::<_, ()>(())
            })
            .unwrap();
        out
    }

    #[test]
    fn a_session_that_grew_is_closed_at_its_new_end() {
        let spec = WindowSpec::Session { gap_ms: 10 };
        let mut schedule = WindowSchedule::new(spec, 0, 0);
        let first = Window { start: 0, end: 1 };
        schedule.sessions_mut(b"u").push(first);
        schedule.schedule_close(b"u", first);
        // Extended at its end: same start, entry not rescheduled by the caller.
        schedule.sessions_mut(b"u")[0] = Window { start: 0, end: 6 };
        assert!(closed(&mut schedule, 11).is_empty(), "due at 6 + 10 now");
        assert_eq!(
            closed(&mut schedule, 16),
            [(b"u".to_vec(), Window { start: 0, end: 6 }, false)]
        );
    }

    #[test]
    fn retained_windows_expire_after_retention_and_reload_into_expiry() {
        let spec = WindowSpec::Tumbling { size_ms: 100 };
        let mut schedule = WindowSchedule::new(spec, 0, 50);
        let w = Window { start: 0, end: 100 };
        schedule.track(b"g", w);
        assert_eq!(closed(&mut schedule, 100), [(b"g".to_vec(), w, true)]);
        assert_eq!(schedule.open_windows(), 1, "kept for retention");
        let mut deleted = Vec::new();
        let mut expire = |s: &mut WindowSchedule, at| {
            s.expire_due(at, |_, w| {
                deleted.push(w);
                Ok::<_, ()>(())
            })
            .unwrap()
        };
        expire(&mut schedule, 149);
        expire(&mut schedule, 150);
        assert_eq!(deleted, [w]);
        assert_eq!(schedule.open_windows(), 0);

        // After a restart, a window the committed time closed is not closed (emitted) again.
        let mut schedule = WindowSchedule::new(spec, 0, 50);
        schedule.reload(b"g".to_vec(), w, 120);
        assert!(closed(&mut schedule, 130).is_empty());
        assert!(schedule.track(b"g", w));
    }
}
