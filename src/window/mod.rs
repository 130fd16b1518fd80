//! Event-time windows: which windows a timestamp falls into ([`assign_windows`]), how sessions
//! merge ([`sessions`]), when windows close ([`close_time`]; the store keeps the schedule in its
//! close-time index), and the merge side's watermarks with idleness ([`UpstreamWatermarks`]).

pub mod sessions;
mod upstream;

pub use upstream::{ClosedThrough, UpstreamWatermarks, IDLE_REANNOUNCE};

use crate::topology::WindowSpec;

/// A window's bounds in epoch milliseconds: start inclusive, end exclusive.
/// Session windows use their first and last event times (end = last event + 1 ms).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// Calls `emit` for each fixed (tumbling or hopping) window containing `timestamp`.
/// Session windows are assigned by the session store, since they depend on neighbouring events.
///
/// # Examples
/// ```
/// use eddy::topology::WindowSpec;
/// use eddy::window::{assign_windows, Window};
/// let mut windows = Vec::new();
/// assign_windows(&WindowSpec::Hopping { size_ms: 300, advance_ms: 100 }, 250, |w| windows.push(w));
/// assert_eq!(windows, [Window { start: 0, end: 300 }, Window { start: 100, end: 400 }, Window { start: 200, end: 500 }]);
/// ```
#[inline]
pub fn assign_windows(spec: &WindowSpec, timestamp: i64, mut emit: impl FnMut(Window)) {
    match *spec {
        WindowSpec::Tumbling { size_ms } => {
            let start = timestamp - timestamp.rem_euclid(size_ms);
            emit(Window {
                start,
                end: start + size_ms,
            });
        }
        WindowSpec::Hopping {
            size_ms,
            advance_ms,
        } => {
            let last_start = timestamp - timestamp.rem_euclid(advance_ms);
            let mut start = last_start - size_ms + advance_ms;
            while start <= last_start {
                emit(Window {
                    start,
                    end: start + size_ms,
                });
                start += advance_ms;
            }
        }
        WindowSpec::Session { .. } => emit(Window {
            start: timestamp,
            end: timestamp + 1,
        }),
    }
}

/// A record with this timestamp is late once stream time reaches this plus grace. For fixed windows
/// it is the largest end of a window holding the record. For sessions it is the record's own end:
/// a later record could only join a session that is still open, so none ever joins a closed one.
pub fn max_window_end(spec: &WindowSpec, timestamp: i64) -> i64 {
    match *spec {
        WindowSpec::Tumbling { size_ms } => timestamp - timestamp.rem_euclid(size_ms) + size_ms,
        WindowSpec::Hopping {
            size_ms,
            advance_ms,
        } => timestamp - timestamp.rem_euclid(advance_ms) + size_ms,
        WindowSpec::Session { .. } => timestamp + 1,
    }
}

/// When a window may be closed: stream time must reach this. Sessions stay open for one gap after
/// their last event, since a later event within the gap would extend them.
pub fn close_time(spec: &WindowSpec, window: Window, grace_ms: i64) -> i64 {
    match *spec {
        WindowSpec::Session { gap_ms } => window.end + gap_ms + grace_ms,
        _ => window.end + grace_ms,
    }
}

/// [`close_time`] for the windows of one aggregation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CloseRule {
    pub spec: WindowSpec,
    pub grace_ms: i64,
}

impl CloseRule {
    #[inline]
    pub fn close_at(&self, window: Window) -> i64 {
        close_time(&self.spec, window, self.grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(spec: WindowSpec, t: i64) -> Vec<Window> {
        let mut out = Vec::new();
        assign_windows(&spec, t, |w| out.push(w));
        out
    }

    #[test]
    fn tumbling_start_is_inclusive_and_end_exclusive() {
        let spec = WindowSpec::Tumbling { size_ms: 60_000 };
        assert_eq!(
            windows(spec, 0),
            [Window {
                start: 0,
                end: 60_000
            }]
        );
        assert_eq!(
            windows(spec, 59_999),
            [Window {
                start: 0,
                end: 60_000
            }]
        );
        assert_eq!(
            windows(spec, 60_000),
            [Window {
                start: 60_000,
                end: 120_000
            }]
        );
        assert_eq!(
            windows(spec, -1),
            [Window {
                start: -60_000,
                end: 0
            }]
        );
    }

    #[test]
    fn hopping_windows_overlap_size_over_advance_times() {
        let spec = WindowSpec::Hopping {
            size_ms: 300_000,
            advance_ms: 60_000,
        };
        for t in [0, 1, 59_999, 60_000, 299_999, 1_795_340_412_345] {
            let ws = windows(spec, t);
            assert_eq!(ws.len(), 5);
            assert!(ws.iter().all(|w| w.start <= t
                && t < w.end
                && w.end - w.start == 300_000
                && w.start % 60_000 == 0));
            assert!(ws.iter().all(|w| w.end <= max_window_end(&spec, t)));
        }
    }
}
