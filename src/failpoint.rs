//! Fault injection for the commit and restore paths, armed by `EDDY_FAILPOINT=<name>` and inert when it is
//! unset. The broker tests use it to drive each failure of a commit on purpose and check that
//! the output stays exact.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The points a commit can be made to fail at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    /// Abort the process after a commit's records were delivered, before the commit.
    CrashBeforeCommit,
    /// Fail the commit with an abortable error after its records were sent, before the offsets.
    AbortAfterSend,
    /// Fail the commit with an abortable error after the offsets joined the transaction.
    AbortAfterOffsets,
    /// Report a commit's outcome as unknown: alternately after it committed (the reply lost) and
    /// without committing (EndTxn never sent). The runtime must fence and learn which.
    CommitOutcomeUnknown,
    /// Fence the producer (another producer initializes the same transactional id) mid-commit.
    FencedMidCommit,
    /// Restore slowly (20 records per slice, 100 ms apart), to outlast a transaction timeout.
    SlowRestore,
    /// Abort the process after a commit succeeded, before its writes reach RocksDB.
    CrashBeforeApply,
    /// Abort the process after the first task's writes of a commit reached RocksDB, before the
    /// other tasks' (a crash in the middle of applying a commit).
    CrashMidApply,
    /// Stall one commit, between the offsets and the commit, for `EDDY_FAILPOINT_STALL_MS`
    /// (20 s by default): the transaction coordinator unreachable under load. Fires once.
    CoordinatorUnreachable,
}

impl Failpoint {
    /// How many times it fires in a run: a stall once (it lasts long), the others three times.
    fn firings(self) -> u32 {
        match self {
            Failpoint::CoordinatorUnreachable => 1,
            _ => 3,
        }
    }

    fn parse(name: &str) -> Option<Failpoint> {
        Some(match name {
            "crash_before_commit" => Failpoint::CrashBeforeCommit,
            "abort_after_send" => Failpoint::AbortAfterSend,
            "abort_after_offsets" => Failpoint::AbortAfterOffsets,
            "commit_outcome_unknown" => Failpoint::CommitOutcomeUnknown,
            "fenced_mid_commit" => Failpoint::FencedMidCommit,
            "slow_restore" => Failpoint::SlowRestore,
            "coordinator_unreachable" => Failpoint::CoordinatorUnreachable,
            "crash_before_apply" => Failpoint::CrashBeforeApply,
            "crash_mid_apply" => Failpoint::CrashMidApply,
            _ => return None,
        })
    }
}

/// The failpoint `EDDY_FAILPOINT` arms, if any.
pub fn armed() -> Option<Failpoint> {
    static ARMED: OnceLock<Option<Failpoint>> = OnceLock::new();
    *ARMED.get_or_init(|| {
        std::env::var("EDDY_FAILPOINT")
            .ok()
            .and_then(|name| Failpoint::parse(&name))
    })
}

/// How long `coordinator_unreachable` stalls a commit.
pub fn stall() -> std::time::Duration {
    std::time::Duration::from_millis(
        std::env::var("EDDY_FAILPOINT_STALL_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(20_000),
    )
}

/// Whether `point` fires at this pass: when armed, on every second pass, as many times as
/// [`Failpoint::firings`] says, so the run both fails repeatedly and makes progress.
pub fn fire(point: Failpoint) -> bool {
    static PASSES: AtomicU32 = AtomicU32::new(0);
    static FIRED: AtomicU32 = AtomicU32::new(0);
    if armed() != Some(point) {
        return false;
    }
    let pass = PASSES.fetch_add(1, Ordering::Relaxed) + 1;
    if !pass.is_multiple_of(2) || FIRED.load(Ordering::Relaxed) >= point.firings() {
        return false;
    }
    FIRED.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(?point, "EDDY_FAILPOINT fired");
    true
}
