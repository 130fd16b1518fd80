//! Where the instance's main loop spends its wall time, by phase (Kafka Streams' thread-level
//! `poll-ratio`, `process-ratio` and `commit-ratio`). It tells an instance that waits on the
//! broker from one that is busy processing, which CPU figures alone cannot.

use std::time::{Duration, Instant};

/// What the loop is doing. Exactly one phase is current at any time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Blocked in the consumer for the first record of a batch (nothing fetched yet), rebalance
    /// callbacks included.
    Wait,
    /// Taking the rest of a batch from the consumer's queue, copying it out per task and handing
    /// it to the workers; releasing the consumer's messages.
    Poll,
    /// Waiting for the workers to finish the batch they process (they run while the loop polls,
    /// so this is the part of processing the loop could not overlap).
    Process,
    /// Handing a finished batch's output to the producer.
    Send,
    /// Flushing tasks at a commit tick and learning a commit's outcome.
    Commit,
    /// Restoring a task's state from its changelog, between polls.
    Restore,
    /// Everything else: metrics, idleness, purging repartition topics.
    Other,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Wait,
        Phase::Poll,
        Phase::Process,
        Phase::Send,
        Phase::Commit,
        Phase::Restore,
        Phase::Other,
    ];

    /// The `phase` label of `eddy_loop_time_ratio`.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Wait => "wait",
            Phase::Poll => "poll",
            Phase::Process => "process",
            Phase::Send => "send",
            Phase::Commit => "commit",
            Phase::Restore => "restore",
            Phase::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Accumulates the time spent in each phase since the last [`LoopClock::take`].
pub(crate) struct LoopClock {
    current: Phase,
    since: Instant,
    spent: [Duration; Phase::ALL.len()],
}

impl LoopClock {
    pub fn new() -> LoopClock {
        LoopClock {
            current: Phase::Other,
            since: Instant::now(),
            spent: [Duration::ZERO; Phase::ALL.len()],
        }
    }

    /// Ends the current phase and starts `next`.
    pub fn enter(&mut self, next: Phase) {
        self.enter_at(next, Instant::now());
    }

    fn enter_at(&mut self, next: Phase, now: Instant) {
        self.spent[self.current.index()] += now.saturating_duration_since(self.since);
        self.since = now;
        self.current = next;
    }

    /// Each phase's share of the wall time since the last call (shares sum to 1), and restarts
    /// the accounting. `None` when no time was measured.
    pub fn take(&mut self) -> Option<[(Phase, f64); Phase::ALL.len()]> {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> Option<[(Phase, f64); Phase::ALL.len()]> {
        let current = self.current;
        self.enter_at(current, now);
        let spent = std::mem::replace(&mut self.spent, [Duration::ZERO; Phase::ALL.len()]);
        let total: f64 = spent.iter().map(Duration::as_secs_f64).sum();
        (total > 0.0).then(|| Phase::ALL.map(|p| (p, spent[p.index()].as_secs_f64() / total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_the_time_spent_in_each_phase_and_restart_after_take() {
        let start = Instant::now();
        let mut clock = LoopClock {
            current: Phase::Wait,
            since: start,
            spent: [Duration::ZERO; Phase::ALL.len()],
        };
        clock.enter_at(Phase::Process, start + Duration::from_millis(30));
        clock.enter_at(Phase::Wait, start + Duration::from_millis(90));
        clock.enter_at(Phase::Commit, start + Duration::from_millis(100));
        // Wait 40 ms, process 60 ms, commit 20 ms.
        let shares = clock
            .take_at(start + Duration::from_millis(120))
            .expect("time was measured");
        let share = |phase| shares.iter().find(|(p, _)| *p == phase).unwrap().1;
        let sum: f64 = shares.iter().map(|(_, s)| s).sum();
        assert!((sum - 1.0).abs() < 1e-9, "shares sum to 1: {sum}");
        assert!((share(Phase::Wait) - 40.0 / 120.0).abs() < 1e-9);
        assert!((share(Phase::Process) - 60.0 / 120.0).abs() < 1e-9);
        assert!((share(Phase::Commit) - 20.0 / 120.0).abs() < 1e-9);
        assert_eq!(share(Phase::Send), 0.0);
        // Restarted: only the current phase gathers time now, and no time is no shares.
        assert!(clock.take_at(start + Duration::from_millis(120)).is_none());
        let after = clock
            .take_at(start + Duration::from_millis(150))
            .expect("time passed");
        assert!(after.iter().all(|(p, s)| if *p == Phase::Commit {
            *s == 1.0
        } else {
            *s == 0.0
        }));
    }
}
