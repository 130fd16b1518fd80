//! Session merging, shared by stored windows and in-memory partials.

use crate::window::Window;

/// Indices of the sessions in `existing` that `new` joins: those whose events lie within `gap` of
/// its events. Windows are `[first event, last event + 1)`.
pub fn overlapping(existing: &[Window], new: Window, gap_ms: i64) -> Vec<usize> {
    existing
        .iter()
        .enumerate()
        .filter(|(_, w)| new.start <= w.end - 1 + gap_ms && w.start <= new.end - 1 + gap_ms)
        .map(|(i, _)| i)
        .collect()
}

/// A group's sessions wherever they live (partials in memory, or the window store), as
/// [`add`] needs them.
pub trait GroupSessions {
    type Error;
    /// The group's sessions' bounds, in the order the indices below refer to.
    fn bounds(&mut self) -> Result<Vec<Window>, Self::Error>;
    /// The record falls inside the session at `index`: add it to that session's accumulators.
    fn add_inside(&mut self, index: usize) -> Result<(), Self::Error>;
    /// The record joins the sessions at `indices` (ascending; none: it starts a session) into
    /// `merged`: replace them by one session holding their accumulators and the record's.
    fn join(&mut self, indices: &[usize], merged: Window) -> Result<(), Self::Error>;
}

/// Adds a record's window `new` to a group's sessions: it falls inside one, extends one, joins
/// several, or starts one. The one place sessions are merged; the stored aggregation and the
/// partial aggregation differ only in where accumulators live.
pub fn add<S: GroupSessions>(sessions: &mut S, new: Window, gap_ms: i64) -> Result<(), S::Error> {
    let bounds = sessions.bounds()?;
    let joined = overlapping(&bounds, new, gap_ms);
    if let [only] = joined[..] {
        let existing = bounds[only];
        if existing.start <= new.start && new.end <= existing.end {
            return sessions.add_inside(only);
        }
    }
    let merged = span(&bounds, &joined, new);
    sessions.join(&joined, merged)
}

/// The session covering `new` and the sessions at `indices`.
pub fn span(existing: &[Window], indices: &[usize], new: Window) -> Window {
    indices.iter().fold(new, |acc, &i| Window {
        start: acc.start.min(existing[i].start),
        end: acc.end.max(existing[i].end),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_sessions_within_the_gap_only() {
        let existing = [
            Window { start: 0, end: 11 },
            Window {
                start: 100,
                end: 101,
            },
        ];
        assert_eq!(
            overlapping(&existing, Window { start: 40, end: 41 }, 30),
            [0]
        );
        assert_eq!(
            overlapping(&existing, Window { start: 41, end: 42 }, 30),
            Vec::<usize>::new()
        );
        assert_eq!(
            overlapping(&existing, Window { start: 55, end: 56 }, 45),
            [0, 1]
        );
        assert_eq!(
            span(&existing, &[0, 1], Window { start: 55, end: 56 }),
            Window { start: 0, end: 101 }
        );
    }
}
