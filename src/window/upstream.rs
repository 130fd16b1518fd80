//! The merge side's notion of time: the watermark of each upstream partition, which of them are
//! idle, and the watermark windows were closed at, with what the last commit saw of each so a
//! rollback returns to it.

/// Watermarks of the upstream partitions of a repartitioned aggregation.
///
/// # Examples
/// ```
/// use eddy::window::UpstreamWatermarks;
/// let mut upstream = UpstreamWatermarks::new(2);
/// upstream.observe(0, 500, false);
/// assert_eq!(upstream.watermark(), i64::MIN, "partition 1 has said nothing yet");
/// upstream.observe(1, 300, false);
/// assert_eq!(upstream.watermark(), 300, "the slowest active upstream");
/// upstream.observe(1, 300, true);
/// assert_eq!(upstream.watermark(), 500, "an idle upstream no longer holds it back");
/// ```
#[derive(Clone, Debug)]
pub struct UpstreamWatermarks {
    marks: Vec<i64>,
    idle: Vec<bool>,
    /// The marks and idle flags as of the last flush: what the transaction in flight carries.
    flushed: (Vec<i64>, Vec<bool>),
    /// The marks and idle flags as of the last commit, restored on rollback so that replayed
    /// partials are not mistaken for late ones.
    committed: (Vec<i64>, Vec<bool>),
}

impl UpstreamWatermarks {
    pub fn new(partitions: usize) -> UpstreamWatermarks {
        UpstreamWatermarks {
            marks: vec![i64::MIN; partitions],
            idle: vec![false; partitions],
            flushed: (vec![i64::MIN; partitions], vec![false; partitions]),
            committed: (vec![i64::MIN; partitions], vec![false; partitions]),
        }
    }

    /// The slowest active upstream partition; idle ones wait outside the minimum. When every
    /// upstream is idle, all input is read: the furthest stream time holds.
    pub fn watermark(&self) -> i64 {
        self.marks
            .iter()
            .zip(&self.idle)
            .filter(|(_, idle)| !**idle)
            .map(|(mark, _)| *mark)
            .min()
            .unwrap_or_else(|| self.marks.iter().copied().max().unwrap_or(i64::MIN))
    }

    /// An upstream partition announced its stream time, as active or as idle.
    pub fn observe(&mut self, partition: u32, stream_time: i64, idle: bool) {
        let i = partition as usize;
        let mut resumed = false;
        if let (Some(mark), Some(flag)) = (self.marks.get_mut(i), self.idle.get_mut(i)) {
            *mark = (*mark).max(stream_time);
            resumed = *flag && !idle;
            *flag = idle;
        }
        if resumed {
            // An idle upstream came back. The others idle with it may be coming back too, with
            // records not here yet: until each confirms it is still idle (it repeats that every
            // IDLE_REANNOUNCE) or sends a watermark, it holds the minimum at its mark again.
            // Otherwise the first partition to resume after a quiet period would close windows
            // the others still have records for.
            self.idle.iter_mut().for_each(|flag| *flag = false);
        }
    }

    pub fn marks(&self) -> &[i64] {
        &self.marks
    }

    pub fn idle_flags(&self) -> &[bool] {
        &self.idle
    }

    /// Restores marks saved with committed offsets.
    pub fn restore(&mut self, saved: &[i64]) {
        for (mine, saved) in self.marks.iter_mut().zip(saved) {
            *mine = *saved;
        }
    }

    /// What has been applied so far goes into the transaction being committed. Processing may go
    /// on while it commits: what it observes meanwhile belongs to the next one.
    pub fn mark_flushed(&mut self) {
        self.flushed.0.clone_from(&self.marks);
        self.flushed.1.clone_from(&self.idle);
    }

    /// The transaction of the last [`UpstreamWatermarks::mark_flushed`] committed.
    pub fn mark_committed(&mut self) {
        self.committed.clone_from(&self.flushed);
    }

    pub fn roll_back(&mut self) {
        self.marks.clone_from(&self.committed.0);
        self.idle.clone_from(&self.committed.1);
    }
}

/// How often an idle upstream repeats its `Idle` announcement.
pub const IDLE_REANNOUNCE: std::time::Duration = std::time::Duration::from_secs(5);

/// The furthest watermark windows were closed at. It never goes back, even when an idle upstream
/// partition comes back with an older stream time: windows closed stay closed, and partials for
/// them are late.
#[derive(Clone, Copy, Debug)]
pub struct ClosedThrough {
    current: i64,
    flushed: i64,
    committed: i64,
}

impl Default for ClosedThrough {
    fn default() -> ClosedThrough {
        ClosedThrough {
            current: i64::MIN,
            flushed: i64::MIN,
            committed: i64::MIN,
        }
    }
}

impl ClosedThrough {
    pub fn get(&self) -> i64 {
        self.current
    }

    /// Moves to `watermark` unless windows were already closed further; returns where it is.
    pub fn advance(&mut self, watermark: i64) -> i64 {
        self.current = self.current.max(watermark);
        self.current
    }

    /// See [`UpstreamWatermarks::mark_flushed`].
    pub fn mark_flushed(&mut self) {
        self.flushed = self.current;
    }

    pub fn mark_committed(&mut self) {
        self.committed = self.flushed;
    }

    pub fn roll_back(&mut self) {
        self.current = self.committed;
    }

    /// Whether any closing watermark was set (committed, restored or reached).
    pub fn is_known(&self) -> bool {
        self.current != i64::MIN
    }

    /// Sets the watermark a restarted task's commit recorded, as committed.
    pub fn restore(&mut self, closed_through: i64) {
        self.current = closed_through;
        self.flushed = closed_through;
        self.committed = closed_through;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returning_upstream_makes_every_idle_one_count_again() {
        let mut upstream = UpstreamWatermarks::new(3);
        upstream.observe(0, 100, true);
        upstream.observe(1, 200, true);
        upstream.observe(2, 300, true);
        assert_eq!(upstream.watermark(), 300);
        upstream.observe(0, 150, false);
        assert_eq!(
            upstream.watermark(),
            150,
            "all count until they repeat idle"
        );
        upstream.observe(1, 200, true);
        upstream.observe(2, 300, true);
        assert_eq!(upstream.watermark(), 150);
    }

    #[test]
    fn rollback_returns_to_the_committed_marks() {
        let mut upstream = UpstreamWatermarks::new(1);
        upstream.observe(0, 100, false);
        upstream.mark_flushed();
        // Observed while the flushed transaction commits: not part of it.
        upstream.observe(0, 300, false);
        upstream.mark_committed();
        upstream.observe(0, 500, true);
        upstream.roll_back();
        assert_eq!(
            (upstream.marks(), upstream.idle_flags()),
            (&[100][..], &[false][..])
        );
        let mut closed = ClosedThrough::default();
        assert_eq!(closed.advance(10), 10);
        closed.mark_flushed();
        assert_eq!(closed.advance(5), 10, "never goes back");
        closed.advance(20);
        closed.mark_committed();
        closed.roll_back();
        assert_eq!(closed.get(), 10);
    }
}
