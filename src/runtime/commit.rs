//! The commit path: the one place that makes results exactly-once.
//!
//! Under `exactly_once`, everything a commit interval produced is one Kafka transaction: output
//! aggregates, repartition partials, changelog records and dead letters are sent with the
//! transactional producer, then the consumed offsets (with each task's stream time as offset
//! metadata) are added with `send_offsets_to_transaction` and the consumer's group metadata, and
//! the transaction is committed. Readers with `isolation.level=read_committed` (eddy's own tasks
//! and restore consumers included) see all of it or none of it. The group metadata carries the
//! member's generation, so a member that was fenced by a rebalance (KIP-447) cannot commit: its
//! transaction fails and is aborted. Local RocksDB state is written only after the commit
//! succeeded; on failure the transaction is aborted, every task drops its uncommitted state and
//! the consumer seeks back to the committed offsets, so the same input is processed again.
//! Under `at_least_once` the producer is flushed and the offsets are committed afterwards: a crash
//! between the two replays input, and so may duplicate output.
//!
//! The commit does not stop processing. At a commit tick every task is flushed, and the
//! transaction (offsets and commit) is completed on a commit thread while the loop goes on
//! polling and processing. Only one transaction is open at a time: records produced meanwhile are
//! held back and sent into the next transaction once this one committed, and the tasks remember
//! what the flush covered (store writes, offsets, stream time, watermarks), so a success applies
//! exactly that and a failure rolls everything back to the previous commit, the work done during
//! the commit included.

use super::ports::{Group, Transaction, Transactions};
use super::seek_clock::SeekClock;
use super::task_slot::TaskSlot;
use crate::config::ProcessingGuarantee;
use crate::failpoint::Failpoint;
use crate::kafka::{CommitFailure, CommitFailureKind, KafkaClientError, PartitionOffset};
use crate::state::{ChangelogEnds, StateError};
use crate::task::{OutgoingKind, OutgoingRecord, TaskId, TaskOutput};
use crate::telemetry::events::{CommitEnded, RecordSent, RolledBack, TransactionAborted};
use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::Instant;

/// Why a commit did not happen: Kafka refused it (roll back and go on) or local state failed
/// (stop: the instance cannot keep its stores consistent with what it commits).
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Kafka(#[from] CommitFailure),
    #[error("local state failed during the commit: {0}")]
    State(#[from] StateError),
}

/// A transaction completing on the commit thread, which holds the producer meanwhile.
struct InFlight {
    commit: CommitRun,
    started: Instant,
    oldest_append_ms: Option<i64>,
}

type Committed = (Box<dyn Transaction>, Result<(), CommitFailure>);

/// Where a commit runs: on the commit thread, or (the simulator, for determinism) already done on
/// the loop's thread, its outcome reported once `is_finished` was asked `reported_after` times,
/// like a background one still in flight for that many turns.
enum CommitRun {
    Thread(JoinHandle<Committed>),
    Done {
        committed: Committed,
        reported_after: std::sync::atomic::AtomicU32,
    },
}

impl CommitRun {
    fn is_finished(&self) -> bool {
        match self {
            CommitRun::Thread(handle) => handle.is_finished(),
            CommitRun::Done { reported_after, .. } => reported_after
                .fetch_update(
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                    |left| left.checked_sub(1),
                )
                .is_err(),
        }
    }

    fn join(self) -> Committed {
        match self {
            CommitRun::Thread(handle) => match handle.join() {
                Ok(done) => done,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            CommitRun::Done { committed, .. } => committed,
        }
    }
}

/// How the coordinator commits.
#[derive(Clone, Copy, Debug)]
pub struct CommitSettings {
    pub guarantee: ProcessingGuarantee,
    /// `task_timeout_ms`: how long learning a commit's outcome may wait for stable offsets.
    pub retry_deadline: std::time::Duration,
    /// Whether exactly-once commits complete on a commit thread while the loop goes on (`false`:
    /// on the loop's thread, for deterministic simulation).
    pub background: bool,
    /// Without `background`: how many times the outcome of a commit is asked for before it is
    /// reported (the simulator's commits in flight across loop turns).
    pub inline_reported_after: u32,
}

/// Whether [`CommitCoordinator::commit`] returns before the transaction completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommitMode {
    /// The loop goes on; [`CommitCoordinator::settle`] learns the outcome.
    Background,
    /// Returns once committed (rebalances and shutdown, which close tasks right after).
    Wait,
}

/// Records one task produced while a commit was in flight, in the order it produced them.
struct HeldBack {
    task: TaskId,
    records: Vec<OutgoingRecord>,
}

pub struct CommitCoordinator {
    /// `None` while a commit holds it.
    producer: Option<Box<dyn Transaction>>,
    in_flight: Option<InFlight>,
    /// Records produced while a commit was in flight, by task: the next transaction's first.
    held_back: Vec<HeldBack>,
    held_back_bytes: usize,
    transactions: std::sync::Arc<dyn Transactions>,
    settings: CommitSettings,
    /// Smallest broker timestamp among records consumed since the last commit.
    oldest_uncommitted_ms: Option<i64>,
    sent_since_commit: bool,
    aggregates_since_commit: u64,
    /// The input offsets of the last commit started: what tells its outcome when it is unknown.
    committing: Vec<(String, i32, i64)>,
}

/// `EDDY_FAILPOINT=crash_before_commit` makes the process abort after a commit's records were
/// delivered and before its offsets commit: the crash window that separates at-least-once from
/// exactly-once, made reproducible for the broker tests.
fn failpoint_crash_before_commit() -> bool {
    crate::failpoint::armed() == Some(crate::failpoint::Failpoint::CrashBeforeCommit)
}

impl CommitCoordinator {
    /// Opens the first producer (under exactly-once this fences the instance's previous
    /// incarnation, whose open transaction the coordinator then aborts).
    pub fn new(
        transactions: std::sync::Arc<dyn Transactions>,
        settings: CommitSettings,
    ) -> Result<CommitCoordinator, KafkaClientError> {
        let producer = transactions.open()?;
        Ok(CommitCoordinator {
            producer: Some(producer),
            in_flight: None,
            held_back: Vec::new(),
            held_back_bytes: 0,
            transactions,
            settings,
            oldest_uncommitted_ms: None,
            sent_since_commit: false,
            aggregates_since_commit: 0,
            committing: Vec::new(),
        })
    }

    pub fn note_consumed(&mut self, timestamp_ms: Option<i64>) {
        if let Some(ts) = timestamp_ms {
            self.oldest_uncommitted_ms = Some(self.oldest_uncommitted_ms.map_or(ts, |o| o.min(ts)));
        }
    }

    /// Sends a task's records into the open transaction, or holds them back for the next one
    /// while a commit is in flight.
    pub(crate) fn send(
        &mut self,
        from: &TaskId,
        output: &mut TaskOutput,
    ) -> Result<(), CommitFailure> {
        for record in output.records.drain(..) {
            self.sent_since_commit = true;
            if matches!(record.kind, OutgoingKind::Aggregate { .. }) {
                self.aggregates_since_commit += 1;
            }
            match &mut self.producer {
                Some(producer) => {
                    producer.send(&record)?;
                    count_emitted(&record);
                }
                None => {
                    self.held_back_bytes += record_bytes(&record);
                    match self.held_back.last_mut() {
                        Some(last) if last.task == *from => last.records.push(record),
                        _ => self.held_back.push(HeldBack {
                            task: from.clone(),
                            records: vec![record],
                        }),
                    }
                }
            }
        }
        if let Some(producer) = &self.producer {
            producer.serve();
        }
        Ok(())
    }

    /// Whether the loop should stop fetching until the commit in flight settles: it has held back
    /// more than `max_bytes` of output, or the commit has been in flight longer than `max_time`.
    /// Without this, held-back records and uncommitted state grow for as long as a commit
    /// retries (the transaction coordinator unreachable, say).
    pub(crate) fn needs_backpressure(
        &self,
        max_bytes: usize,
        max_time: std::time::Duration,
    ) -> bool {
        // An inline commit (the simulator) is in flight for a number of turns, not of seconds:
        // only its bytes count, so a seed replays the same whatever the machine's speed.
        self.in_flight.as_ref().is_some_and(|in_flight| {
            self.held_back_bytes > max_bytes
                || (self.settings.background && in_flight.started.elapsed() > max_time)
        })
    }

    /// Whether a transaction is completing on the commit thread.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Learns the outcome of the commit in flight, if it ended (or waits for it with `wait`). On
    /// success the tasks apply what its flush covered and the held-back records start the next
    /// transaction. An `Err` must be handled like a failed [`CommitCoordinator::commit`].
    pub(crate) fn settle(
        &mut self,
        tasks: &mut BTreeMap<TaskId, TaskSlot>,
        wait: bool,
    ) -> Result<(), CommitError> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        if !wait && !in_flight.commit.is_finished() {
            self.in_flight = Some(in_flight);
            return Ok(());
        }
        let (producer, result) = in_flight.commit.join();
        self.producer = Some(producer);
        self.commit_ended(result, in_flight.started, in_flight.oldest_append_ms, tasks)?;
        self.send_held_back()?;
        if let Some(producer) = &self.producer {
            producer.serve();
        }
        Ok(())
    }

    /// Starts the next transaction with the records held back while the last one committed.
    fn send_held_back(&mut self) -> Result<(), CommitFailure> {
        let producer = self.producer.as_mut().expect("no commit in flight");
        self.held_back_bytes = 0;
        for record in self.held_back.drain(..).flat_map(|held| held.records) {
            producer.send(&record)?;
            count_emitted(&record);
        }
        Ok(())
    }

    /// Waits up to `patience` for the commit in flight to end, and learns its outcome as
    /// [`CommitCoordinator::settle`] does. Returns whether no commit is in flight any more.
    pub(crate) fn settle_within(
        &mut self,
        tasks: &mut BTreeMap<TaskId, TaskSlot>,
        patience: std::time::Duration,
    ) -> Result<bool, CommitError> {
        let deadline = Instant::now() + patience;
        while let Some(in_flight) = &self.in_flight {
            if in_flight.commit.is_finished() {
                break;
            }
            // An inline commit (the simulator) moves on only when asked again, at a later turn.
            if !self.settings.background || Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.settle(tasks, true)?;
        Ok(true)
    }

    /// Forgets what `tasks` produced while the commit in flight completes: they are dropped
    /// before it ended (a revocation that could not wait for it), their input offsets are not
    /// committed past that commit's, so their held-back output must not reach a later one.
    pub(crate) fn release(&mut self, tasks: &[TaskId]) {
        self.held_back.retain(|held| !tasks.contains(&held.task));
        self.held_back_bytes = self
            .held_back
            .iter()
            .flat_map(|held| &held.records)
            .map(record_bytes)
            .sum();
    }

    /// Metrics, and on success the tasks' committed state.
    fn commit_ended(
        &mut self,
        result: Result<(), CommitFailure>,
        started: Instant,
        oldest_append_ms: Option<i64>,
        tasks: &mut BTreeMap<TaskId, TaskSlot>,
    ) -> Result<(), CommitError> {
        CommitEnded {
            committed: result.is_ok(),
            transactional: self.transactions.transactional(),
            seconds: started.elapsed().as_secs_f64(),
            oldest_append_ms: if result.is_ok() {
                oldest_append_ms
            } else {
                None
            },
        }
        .emit();
        tracing::debug!(
            committed = result.is_ok(),
            seconds = started.elapsed().as_secs_f64(),
            "commit ended"
        );
        result?;
        let ends = self.take_changelog_ends();
        apply_flushed(tasks, &ends)
    }

    /// How far into each changelog the transaction that just committed reached.
    fn take_changelog_ends(&mut self) -> ChangelogEnds {
        self.producer
            .as_mut()
            .map(|producer| producer.take_changelog_ends())
            .unwrap_or_default()
    }

    /// After a commit whose outcome is unknown ([`CommitFailureKind::Unknown`]): fences it with a
    /// new producer on the same transactional id, then reads the committed offsets to learn
    /// whether it happened. `init_transactions` makes the coordinator finish the old producer's
    /// transaction first: it completes one that reached PrepareCommit and aborts one still open.
    /// The offset fetch asks for stable offsets, so it sees the result. Returns whether the
    /// transaction committed; if so, its flush is applied and the held-back records start the
    /// next transaction, otherwise the caller rolls back.
    ///
    /// A flush whose tasks had no new offsets (output without input progress, e.g. windows
    /// closed by wall-clock time) cannot be told apart this way and counts as aborted: replaying
    /// it can re-emit those aggregates, never lose them.
    pub(crate) fn learn_outcome(
        &mut self,
        tasks: &mut BTreeMap<TaskId, TaskSlot>,
        group: &dyn Group,
    ) -> Result<bool, CommitError> {
        if let Err(failure) = self.wait_in_flight() {
            tracing::warn!(%failure, "the commit in flight failed too");
        }
        // What the fenced producer's records reached, should its transaction prove committed.
        let ends = self.take_changelog_ends();
        self.producer = None;
        self.producer = Some(self.transactions.open().map_err(|error| {
            CommitFailure::new(
                CommitFailureKind::Unknown,
                format!("could not fence the commit with a new producer: {error}"),
            )
        })?);
        // The offsets the commit carried. Those of partitions still owned tell the outcome
        // best (no one else commits them); when the commit carried only those of tasks released
        // since (a revocation that could not wait for it), theirs tell it, unless their new
        // owner has committed past them already.
        let carried = std::mem::take(&mut self.committing);
        let owned: Vec<(String, i32, i64)> = carried
            .iter()
            .filter(|(topic, partition, _)| {
                tasks
                    .keys()
                    .any(|id| &id.topic == topic && id.partition == *partition)
            })
            .cloned()
            .collect();
        let telling = if owned.is_empty() { carried } else { owned };
        if telling.is_empty() {
            return Ok(false);
        }
        let partitions: Vec<(String, i32)> =
            telling.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        let committed = group
            .committed(&partitions, self.settings.retry_deadline)
            .map_err(|error| {
                CommitFailure::new(
                    CommitFailureKind::Unknown,
                    format!(
                        "could not read the committed offsets to learn a commit's outcome: {error}"
                    ),
                )
            })?;
        let landed = telling
            .iter()
            .filter(|(topic, partition, offset)| {
                committed.iter().any(|c| {
                    &c.topic == topic && c.partition == *partition && c.offset == Some(*offset)
                })
            })
            .count();
        match classify_outcome(landed, telling.len()) {
            Some(true) => {
                apply_flushed(tasks, &ends)?;
                CommitEnded {
                    committed: true,
                    transactional: true,
                    seconds: 0.0,
                    oldest_append_ms: None,
                }
                .emit();
                self.send_held_back()?;
                Ok(true)
            }
            Some(false) => Ok(false),
            None => Err(CommitError::Kafka(CommitFailure::new(
                CommitFailureKind::Unknown,
                format!("the committed offsets show {landed} of the {} partitions of one transaction: a transaction is all or nothing, so another instance may be committing for this group with the same transactional id. Give each instance its own group_instance_id or state_dir", telling.len()),
            ))),
        }
    }

    /// Flushes every task and commits what they produced with their offsets. A commit still in
    /// flight completes first. With [`CommitMode::Background`] the transaction completes on the
    /// commit thread and [`CommitCoordinator::settle`] reports its outcome. After a
    /// [`CommitError::Kafka`] the caller must call [`CommitCoordinator::roll_back`]; after a
    /// [`CommitError::State`] it must stop.
    pub(crate) fn commit(
        &mut self,
        tasks: &mut BTreeMap<TaskId, TaskSlot>,
        group: &dyn Group,
        mode: CommitMode,
    ) -> Result<(), CommitError> {
        self.settle(tasks, true)?;
        let started = Instant::now();
        let mut offsets = Vec::with_capacity(tasks.len());
        for (id, slot) in tasks.iter_mut() {
            let mut output = TaskOutput::default();
            slot.task.flush(&mut output)?;
            slot.pending_state.append(&mut output.state);
            slot.flushed = true;
            slot.flushed_offset = slot.task.next_offset();
            self.send(id, &mut output)?;
            if let Some(offset) = slot
                .task
                .next_offset()
                .filter(|o| Some(*o) != slot.committed_offset)
            {
                offsets.push(PartitionOffset {
                    topic: slot.task.id.topic.clone(),
                    partition: slot.task.id.partition,
                    offset: Some(offset),
                    metadata: slot.task.commit_metadata(),
                });
            }
        }
        if offsets.is_empty() && !self.sent_since_commit {
            return Ok(());
        }
        tracing::debug!(
            offsets = ?offsets
                .iter()
                .map(|o| format!("{}-{}@{}", o.topic, o.partition, o.offset.unwrap_or(-1)))
                .collect::<Vec<_>>(),
            "commit begins"
        );
        let producer = self.producer.as_mut().expect("settled above");
        if self.aggregates_since_commit > 0 && failpoint_crash_before_commit() {
            // Test hook: the output of this commit has reached the broker, the commit has not happened.
            let _ = producer.wait_delivered();
            tracing::error!(
                "EDDY_FAILPOINT=crash_before_commit: aborting the process before the commit"
            );
            std::process::abort();
        }
        if !offsets.is_empty()
            && crate::failpoint::fire(crate::failpoint::Failpoint::AbortAfterSend)
        {
            return Err(CommitError::Kafka(CommitFailure::abortable(
                "EDDY_FAILPOINT=abort_after_send",
            )));
        }
        self.aggregates_since_commit = 0;
        self.sent_since_commit = false;
        let oldest_append_ms = self.oldest_uncommitted_ms.take();
        self.committing = offsets
            .iter()
            .filter_map(|o| Some((o.topic.clone(), o.partition, o.offset?)))
            .collect();
        match self.settings.guarantee {
            ProcessingGuarantee::ExactlyOnce => {
                let membership = group.membership();
                let mut producer = self.producer.take().expect("settled above");
                let commit = if self.settings.background {
                    CommitRun::Thread(
                        std::thread::Builder::new()
                            .name("eddy-commit".into())
                            .spawn(move || {
                                let result = producer.commit(&offsets, membership.as_ref());
                                (producer, result)
                            })
                            .map_err(|e| {
                                CommitError::Kafka(CommitFailure::abortable(format!(
                                    "could not start the commit thread: {e}"
                                )))
                            })?,
                    )
                } else {
                    let result = producer.commit(&offsets, membership.as_ref());
                    CommitRun::Done {
                        committed: (producer, result),
                        reported_after: self.settings.inline_reported_after.into(),
                    }
                };
                self.in_flight = Some(InFlight {
                    commit,
                    started,
                    oldest_append_ms,
                });
                match mode {
                    CommitMode::Background => Ok(()),
                    CommitMode::Wait => self.settle(tasks, true),
                }
            }
            ProcessingGuarantee::AtLeastOnce => {
                let result = producer.commit(&[], None).and_then(|()| {
                    if offsets.is_empty() {
                        Ok(())
                    } else {
                        group
                            .commit_offsets(&offsets)
                            .map_err(|e| CommitFailure::abortable(e.to_string()))
                    }
                });
                self.commit_ended(result, started, oldest_append_ms, tasks)
            }
        }
    }

    /// Aborts the open transaction and returns every task to its last commit (what
    /// [`super::failure::decide`] chose). With `new_producer` the producer is recreated first; it
    /// is also recreated when the abort fails.
    pub(crate) fn roll_back(
        &mut self,
        tasks: &mut BTreeMap<TaskId, TaskSlot>,
        group: &dyn Group,
        new_producer: bool,
        seeks: &SeekClock,
    ) -> Result<(), crate::Error> {
        let abort = match (&mut self.producer, new_producer) {
            (Some(producer), false) => producer.abort(),
            _ => Ok(()),
        };
        if new_producer || abort.is_err() || self.producer.is_none() {
            self.producer = Some(self.transactions.open()?);
        }
        self.held_back.clear();
        self.held_back_bytes = 0;
        if self.transactions.transactional() {
            TransactionAborted.emit();
        }
        self.oldest_uncommitted_ms = None;
        self.sent_since_commit = false;
        self.aggregates_since_commit = 0;
        RolledBack {
            rewound_offsets: tasks
                .values()
                .map(|slot| uncommitted_offsets(slot.committed_offset, slot.task.next_offset()))
                .sum(),
        }
        .emit();
        for slot in tasks.values_mut() {
            slot.pending_state.clear();
            slot.flushed = false;
            slot.task.rollback(slot.committed_offset)?;
            slot.carried = None;
            slot.needs_seek = true;
            slot.reposition(group, seeks);
        }
        Ok(())
    }

    /// Waits for a commit in flight (it ends, one way or the other, before anything is aborted)
    /// and hands back its failure, if it failed. The tasks are left as they are: the caller is
    /// about to roll them back or drop them.
    pub(crate) fn wait_in_flight(&mut self) -> Result<(), CommitFailure> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        let (producer, result) = in_flight.commit.join();
        self.producer = Some(producer);
        result
    }

    /// Aborts without touching tasks (they are being dropped).
    pub(crate) fn abort(&mut self) {
        if let Err(failure) = self.wait_in_flight() {
            tracing::warn!(%failure, "the commit in flight failed");
        }
        self.held_back.clear();
        self.held_back_bytes = 0;
        let aborted = match &mut self.producer {
            Some(producer) => producer.abort(),
            None => Ok(()),
        };
        if let Err(error) = aborted {
            tracing::warn!(%error, "abort failed; recreating the producer");
            if let Ok(producer) = self.transactions.open() {
                self.producer = Some(producer);
            }
        }
        self.oldest_uncommitted_ms = None;
        self.sent_since_commit = false;
        self.aggregates_since_commit = 0;
    }
}

/// Applies what the committed flush covered to every task that took part in it, each store with
/// how far into its changelog the transaction reached (`ends`).
fn apply_flushed(
    tasks: &mut BTreeMap<TaskId, TaskSlot>,
    ends: &ChangelogEnds,
) -> Result<(), CommitError> {
    let mut applied_stores = 0;
    for slot in tasks.values_mut().filter(|slot| slot.flushed) {
        let pending = std::mem::take(&mut slot.pending_state);
        let stores = pending.len();
        crash_at(
            Failpoint::CrashBeforeApply,
            applied_stores == 0 && stores > 0,
        );
        slot.task.apply_committed(pending, ends)?;
        applied_stores += stores;
        crash_at(Failpoint::CrashMidApply, stores > 0);
        slot.committed_offset = slot.flushed_offset;
        slot.flushed = false;
    }
    Ok(())
}

/// `EDDY_FAILPOINT=crash_before_apply` / `crash_mid_apply`: the process aborts, as kill -9 would,
/// at that point of applying a committed flush to RocksDB (when `here` holds and the failpoint
/// fires), so the broker tests can restart on the state it leaves.
fn crash_at(point: Failpoint, here: bool) {
    if here && crate::failpoint::fire(point) {
        tracing::error!(
            ?point,
            "EDDY_FAILPOINT: aborting the process while applying a commit"
        );
        std::process::abort();
    }
}

/// What a record weighs in memory while held back.
fn record_bytes(record: &OutgoingRecord) -> usize {
    record.key.as_ref().map_or(0, Vec::len)
        + record.value.as_ref().map_or(0, Vec::len)
        + record.topic.len()
        + 64
}

/// Input offsets processed past the committed one (counted from offset 0 when nothing was
/// committed yet).
fn uncommitted_offsets(committed: Option<i64>, next: Option<i64>) -> u64 {
    match next {
        Some(next) => (next - committed.unwrap_or(0)).max(0) as u64,
        None => 0,
    }
}

/// Whether a transaction committed, from how many of the partitions whose offsets it carried
/// show its offsets as committed: all, or none; anything in between is `None`.
fn classify_outcome(landed: usize, carried: usize) -> Option<bool> {
    if landed == carried {
        Some(true)
    } else if landed == 0 {
        Some(false)
    } else {
        None
    }
}

/// Wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn count_emitted(record: &OutgoingRecord) {
    let (kind, final_window_end_ms) = match record.kind {
        OutgoingKind::Aggregate { is_final } => {
            ("aggregate", record.window_end_ms.filter(|_| is_final))
        }
        OutgoingKind::Repartition => ("repartition", None),
        OutgoingKind::Changelog => ("changelog", None),
        OutgoingKind::DeadLetter => ("dead_letter", None),
        OutgoingKind::Late => ("late", None),
    };
    RecordSent {
        topic: &record.topic,
        kind,
        final_window_end_ms,
    }
    .emit();
}

#[cfg(test)]
mod tests {
    //! The commit path against the simulated cluster (`testing::sim`): each outcome of a commit
    //! and what the coordinator does about it.

    use super::*;
    use crate::runtime::ports::{Group, Input, RebalanceListener};
    use crate::task::{CompiledTopology, InputRecord, StateLocation};
    use crate::testing::sim::{Call, FaultOdds, Faults, SimBroker, SimInput, SimTransactions};
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    struct NoCallbacks;

    impl RebalanceListener for NoCallbacks {
        fn on_revoke(&self, _: &[(String, i32)], _: bool, _: &dyn Group) {}
        fn on_assign(&self, _: &[(String, i32)], _: &dyn Group) {}
    }

    struct World {
        broker: SimBroker,
        faults: Faults,
        input: SimInput,
        coordinator: CommitCoordinator,
        tasks: BTreeMap<TaskId, TaskSlot>,
    }

    /// The orders topology, one instance owning `orders[0]`, a task that processed `records`.
    fn world(records: usize) -> World {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topology/orders.toml");
        let topology = crate::topology::Topology::from_file(path).unwrap();
        let compiled = CompiledTopology::new("unit", topology);
        let partitions: HashMap<String, i32> = [("orders".to_string(), 1)].into();
        let broker = SimBroker::default();
        broker.create_topic("orders", 1);
        for topic in crate::runtime::planned_topics(&compiled, &partitions) {
            broker.create_topic(&topic.name, topic.partitions);
        }
        let faults = Faults::new(1);
        let input = SimInput::join(
            broker.clone(),
            faults.clone(),
            "m",
            vec!["orders".into()],
            Arc::new(NoCallbacks),
        );
        let _ = input.poll(Duration::ZERO);
        let coordinator = CommitCoordinator::new(
            Arc::new(SimTransactions {
                broker: broker.clone(),
                faults: faults.clone(),
                application_id: "unit".into(),
                transactional_id: "unit-m".into(),
            }),
            CommitSettings {
                guarantee: ProcessingGuarantee::ExactlyOnce,
                retry_deadline: Duration::from_secs(1),
                background: false,
                inline_reported_after: 0,
            },
        )
        .unwrap();
        let id = TaskId {
            topic: "orders".into(),
            partition: 0,
        };
        let (mut task, db) = compiled
            .create_task(&id, &partitions, &StateLocation::Memory)
            .unwrap();
        let mut generator = crate::events::EventGenerator::new(crate::events::GeneratorConfig {
            events_per_order: 1,
            ..Default::default()
        });
        let mut out = crate::task::TaskOutput::default();
        for offset in 0..records {
            let event = generator.next_event();
            task.process(
                InputRecord {
                    payload: Some(&event.value),
                    key: Some(event.key.as_bytes()),
                    timestamp_ms: Some(now_ms()),
                    offset: offset as i64,
                    subject: None,
                },
                &mut out,
            )
            .unwrap();
        }
        let slot = TaskSlot {
            task,
            db,
            dir: None,
            committed_offset: None,
            pending_state: out.state,
            flushed: false,
            flushed_offset: None,
            last_record_at: Instant::now(),
            needs_seek: false,
            sought_at: 0,
            carried: None,
        };
        World {
            broker,
            faults,
            input,
            coordinator,
            tasks: [(id, slot)].into(),
        }
    }

    fn slot(world: &World) -> &TaskSlot {
        world.tasks.values().next().unwrap()
    }

    #[test]
    fn a_commit_carries_the_offsets_and_applies_the_flush() {
        let mut w = world(5);
        w.coordinator
            .commit(&mut w.tasks, w.input.group(), CommitMode::Wait)
            .unwrap();
        assert_eq!(slot(&w).committed_offset, Some(5));
        assert!(!slot(&w).flushed && slot(&w).pending_state.is_empty());
        assert_eq!(w.broker.committed_offset("orders", 0), Some(5));
    }

    #[test]
    fn a_failed_commit_rolls_every_task_back_and_seeks_it_to_the_committed_offset() {
        let mut w = world(5);
        w.faults.arm(FaultOdds(vec![(Call::CommitAbortable, 1000)]));
        let failed = w
            .coordinator
            .commit(&mut w.tasks, w.input.group(), CommitMode::Wait);
        assert!(matches!(
            failed,
            Err(CommitError::Kafka(CommitFailure {
                kind: CommitFailureKind::Abortable,
                ..
            }))
        ));
        let seeks = SeekClock::default();
        let before = seeks.now();
        w.coordinator
            .roll_back(&mut w.tasks, w.input.group(), false, &seeks)
            .unwrap();
        let slot = slot(&w);
        assert_eq!(slot.task.next_offset(), None, "back to nothing committed");
        assert!(!slot.needs_seek, "sought back");
        assert!(
            slot.sought_at > before,
            "records polled before the rollback are now stale"
        );
        assert_eq!(w.broker.committed_offset("orders", 0), None);
        let topics = w.broker.topic_names();
        let written: i64 = topics
            .iter()
            .map(|t| w.broker.watermarks(t, 0).map_or(0, |(_, end)| end))
            .sum();
        let visible: usize = topics
            .iter()
            .map(|t| w.broker.read_committed(t).len())
            .sum();
        assert!(written > 0, "the flush wrote changelog records");
        assert_eq!(
            visible, 0,
            "the aborted transaction's records are invisible"
        );
    }

    #[test]
    fn an_unknown_outcome_that_committed_is_learned_and_applied() {
        let mut w = world(5);
        w.faults
            .arm(FaultOdds(vec![(Call::CommitUnknownCommitted, 1000)]));
        let failed = w
            .coordinator
            .commit(&mut w.tasks, w.input.group(), CommitMode::Wait);
        assert!(matches!(
            failed,
            Err(CommitError::Kafka(CommitFailure {
                kind: CommitFailureKind::Unknown,
                ..
            }))
        ));
        w.faults.heal();
        let committed = w
            .coordinator
            .learn_outcome(&mut w.tasks, w.input.group())
            .unwrap();
        assert!(committed);
        assert_eq!(slot(&w).committed_offset, Some(5));
    }

    #[test]
    fn an_unknown_outcome_that_did_not_commit_is_learned_and_rolled_back() {
        let mut w = world(5);
        w.faults
            .arm(FaultOdds(vec![(Call::CommitUnknownNotCommitted, 1000)]));
        assert!(w
            .coordinator
            .commit(&mut w.tasks, w.input.group(), CommitMode::Wait)
            .is_err());
        w.faults.heal();
        let committed = w
            .coordinator
            .learn_outcome(&mut w.tasks, w.input.group())
            .unwrap();
        assert!(!committed, "the new producer fenced and aborted it");
        assert_eq!(slot(&w).committed_offset, None);
        assert_eq!(w.broker.committed_offset("orders", 0), None);
    }

    #[test]
    fn output_held_back_behind_a_commit_in_flight_asks_for_backpressure_until_it_settles() {
        let mut w = world(5);
        w.coordinator
            .commit(&mut w.tasks, w.input.group(), CommitMode::Background)
            .unwrap();
        let long = Duration::from_secs(3600);
        assert!(!w.coordinator.needs_backpressure(1_000, long));
        let mut output = crate::task::TaskOutput::default();
        output.records.push(OutgoingRecord {
            kind: OutgoingKind::Aggregate { is_final: false },
            topic: "order-aggregates".into(),
            partition: None,
            key: Some(vec![0; 10]),
            value: Some(vec![0; 2_000]),
            headers: Vec::new(),
            window_end_ms: None,
        });
        let id = slot(&w).task.id.clone();
        w.coordinator.send(&id, &mut output).unwrap();
        assert!(
            w.coordinator.needs_backpressure(1_000, long),
            "over the byte bound while the commit is in flight"
        );
        assert!(
            !w.coordinator.needs_backpressure(usize::MAX, Duration::ZERO),
            "an inline commit is in flight for turns, not seconds"
        );
        w.coordinator.settle(&mut w.tasks, true).unwrap();
        assert!(!w.coordinator.needs_backpressure(1_000, Duration::ZERO));
    }

    /// Commits that wait for a gate (the transaction coordinator unreachable) before the
    /// simulated cluster's commit.
    struct Gated {
        inner: SimTransactions,
        open: Arc<std::sync::atomic::AtomicBool>,
    }

    struct GatedTransaction {
        inner: Box<dyn Transaction>,
        open: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Transactions for Gated {
        fn open(&self) -> Result<Box<dyn Transaction>, KafkaClientError> {
            Ok(Box::new(GatedTransaction {
                inner: self.inner.open()?,
                open: self.open.clone(),
            }))
        }
        fn transactional(&self) -> bool {
            true
        }
        fn fence(&self, instance: &str) {
            self.inner.fence(instance)
        }
    }

    impl Transaction for GatedTransaction {
        fn send(&mut self, record: &OutgoingRecord) -> Result<(), CommitFailure> {
            self.inner.send(record)
        }
        fn serve(&self) {}
        fn commit(
            &mut self,
            offsets: &[PartitionOffset],
            membership: Option<&crate::runtime::ports::Membership>,
        ) -> Result<(), CommitFailure> {
            while !self.open.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.inner.commit(offsets, membership)
        }
        fn abort(&mut self) -> Result<(), CommitFailure> {
            self.inner.abort()
        }
        fn wait_delivered(&self) -> Result<(), KafkaClientError> {
            Ok(())
        }
        fn take_changelog_ends(&mut self) -> crate::state::ChangelogEnds {
            self.inner.take_changelog_ends()
        }
    }

    fn aggregate_record(topic: &str, bytes: usize) -> OutgoingRecord {
        OutgoingRecord {
            kind: OutgoingKind::Aggregate { is_final: false },
            topic: topic.into(),
            partition: Some(0),
            key: Some(vec![1]),
            value: Some(vec![0; bytes]),
            headers: Vec::new(),
            window_end_ms: None,
        }
    }

    /// A revocation cannot wait for a commit's whole retry budget. The coordinator reports the
    /// commit still in flight after the wait it is given, and a task released meanwhile (dropped
    /// uncommitted) leaves nothing of what it produced for the next transaction; the others'
    /// held-back output goes on into it once the commit ends.
    #[test]
    fn a_commit_in_flight_is_waited_for_a_bounded_time_and_released_tasks_leave_no_output() {
        let mut w = world(5);
        for topic in ["released-out", "kept-out"] {
            w.broker.create_topic(topic, 1);
        }
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        w.coordinator = CommitCoordinator::new(
            Arc::new(Gated {
                inner: SimTransactions {
                    broker: w.broker.clone(),
                    faults: w.faults.clone(),
                    application_id: "unit".into(),
                    transactional_id: "unit-gated".into(),
                },
                open: open.clone(),
            }),
            CommitSettings {
                guarantee: ProcessingGuarantee::ExactlyOnce,
                retry_deadline: Duration::from_secs(1),
                background: true,
                inline_reported_after: 0,
            },
        )
        .unwrap();
        w.coordinator
            .commit(&mut w.tasks, w.input.group(), CommitMode::Background)
            .unwrap();
        let kept = slot(&w).task.id.clone();
        let released = TaskId {
            topic: "orders".into(),
            partition: 7,
        };
        for (from, topic, bytes) in [
            (&released, "released-out", 10_000),
            (&kept, "kept-out", 100),
        ] {
            let mut output = crate::task::TaskOutput::default();
            output.records.push(aggregate_record(topic, bytes));
            w.coordinator.send(from, &mut output).unwrap();
        }
        let started = Instant::now();
        assert!(!w
            .coordinator
            .settle_within(&mut w.tasks, Duration::from_millis(50))
            .unwrap());
        assert!(started.elapsed() < Duration::from_secs(5));
        let hour = Duration::from_secs(3600);
        assert!(
            w.coordinator.needs_backpressure(usize::MAX, Duration::ZERO),
            "a commit on the commit thread asks for backpressure past the time bound"
        );
        assert!(w.coordinator.needs_backpressure(1_000, hour));
        w.coordinator.release(std::slice::from_ref(&released));
        assert!(
            !w.coordinator.needs_backpressure(1_000, hour),
            "the released task's held-back bytes are gone"
        );
        open.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(w
            .coordinator
            .settle_within(&mut w.tasks, Duration::from_secs(30))
            .unwrap());
        assert_eq!(slot(&w).committed_offset, Some(5));
        w.coordinator
            .commit(&mut w.tasks, w.input.group(), CommitMode::Wait)
            .unwrap();
        assert_eq!(w.broker.read_committed("kept-out").len(), 1);
        assert!(
            w.broker.read_committed("released-out").is_empty(),
            "nothing the released task produced reaches a transaction"
        );
    }

    #[test]
    fn a_transaction_showing_part_of_its_offsets_is_neither_committed_nor_aborted() {
        assert_eq!(classify_outcome(2, 2), Some(true));
        assert_eq!(classify_outcome(0, 2), Some(false));
        assert_eq!(classify_outcome(1, 2), None);
    }
}
