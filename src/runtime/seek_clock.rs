//! Orders the consumer's seeks against the records it has already handed out.
//!
//! A rollback seeks its partitions back to the committed offsets, but records polled before that
//! seek (the batch waiting to be dispatched, or the first half of a batch whose poll ran the
//! rebalance callback that rolled back) come from the old position. Processing them would move
//! the task's next offset past the records between the committed offset and the old position,
//! and the refetched records would then be dropped as already processed: input lost. librdkafka
//! discards what it fetched before a seek once the seek returns, so every record polled after a
//! seek is from the new position. The clock ticks at every seek; each polled record carries the
//! time it was polled at and each task the time its partition was last sought, and a record
//! polled before its task's last seek is stale.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Shared by the loop (which stamps what it polls) and whatever seeks (the loop itself, and
/// rebalance callbacks that run inside a poll).
#[derive(Clone, Debug, Default)]
pub(crate) struct SeekClock(Arc<AtomicU64>);

impl SeekClock {
    /// The time to stamp a record with, read after the poll that returned it.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// A seek happened: records stamped before it are stale for the partition sought.
    pub fn tick(&self) -> u64 {
        self.0.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// Whether a record polled at `polled_at` predates its partition's last seek at `sought_at`.
pub(crate) fn is_stale(polled_at: u64, sought_at: u64) -> bool {
    polled_at < sought_at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_polled_before_a_seek_is_stale_and_one_polled_after_is_not() {
        let clock = SeekClock::default();
        let before = clock.now();
        let sought = clock.tick();
        let after = clock.now();
        assert!(is_stale(before, sought));
        assert!(!is_stale(after, sought));
        // A later seek of another partition leaves this partition's records alone.
        let _other = clock.tick();
        assert!(!is_stale(clock.now(), sought));
    }
}
