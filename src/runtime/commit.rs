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
use crate::kafka::{CommitFailure, CommitFailureKind, KafkaClientError, PartitionOffset};
use crate::state::StateError;
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
/// the loop's thread, its outcome learned at the next settle like a background one.
enum CommitRun {
    Thread(JoinHandle<Committed>),
    Done(Committed),
}

impl CommitRun {
    fn is_finished(&self) -> bool {
        match self {
            CommitRun::Thread(handle) => handle.is_finished(),
            CommitRun::Done(_) => true,
        }
    }

    fn join(self) -> Committed {
        match self {
            CommitRun::Thread(handle) => match handle.join() {
                Ok(done) => done,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            CommitRun::Done(done) => done,
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
}

/// Whether [`CommitCoordinator::commit`] returns before the transaction completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommitMode {
    /// The loop goes on; [`CommitCoordinator::settle`] learns the outcome.
    Background,
    /// Returns once committed (rebalances and shutdown, which close tasks right after).
    Wait,
}

pub struct CommitCoordinator {
    /// `None` while a commit holds it.
    producer: Option<Box<dyn Transaction>>,
    in_flight: Option<InFlight>,
    /// Records produced while a commit was in flight: the next transaction's first.
    held_back: Vec<OutgoingRecord>,
    transactions: std::sync::Arc<dyn Transactions>,
    settings: CommitSettings,
    /// Smallest broker timestamp among records consumed since the last commit.
    oldest_uncommitted_ms: Option<i64>,
    sent_since_commit: bool,
    aggregates_since_commit: u64,
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
            transactions,
            settings,
            oldest_uncommitted_ms: None,
            sent_since_commit: false,
            aggregates_since_commit: 0,
        })
    }

    pub fn note_consumed(&mut self, timestamp_ms: Option<i64>) {
        if let Some(ts) = timestamp_ms {
            self.oldest_uncommitted_ms = Some(self.oldest_uncommitted_ms.map_or(ts, |o| o.min(ts)));
        }
    }

    /// Sends a task's records into the open transaction, or holds them back for the next one
    /// while a commit is in flight.
    pub(crate) fn send(&mut self, output: &mut TaskOutput) -> Result<(), CommitFailure> {
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
                None => self.held_back.push(record),
            }
        }
        if let Some(producer) = &self.producer {
            producer.serve();
        }
        Ok(())
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
        let producer = self.producer.as_mut().expect("just handed back");
        for record in self.held_back.drain(..) {
            producer.send(&record)?;
            count_emitted(&record);
        }
        producer.serve();
        Ok(())
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
        result?;
        apply_flushed(tasks)
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
        self.producer = None;
        self.producer = Some(self.transactions.open().map_err(|error| {
            CommitFailure::new(
                CommitFailureKind::Unknown,
                format!("could not fence the commit with a new producer: {error}"),
            )
        })?);
        let telling: Vec<(String, i32, i64)> = tasks
            .values()
            .filter(|slot| slot.flushed && slot.flushed_offset != slot.committed_offset)
            .filter_map(|slot| {
                let offset = slot.flushed_offset?;
                Some((slot.task.id.topic.clone(), slot.task.id.partition, offset))
            })
            .collect();
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
                apply_flushed(tasks)?;
                CommitEnded {
                    committed: true,
                    transactional: true,
                    seconds: 0.0,
                    oldest_append_ms: None,
                }
                .emit();
                let producer = self.producer.as_mut().expect("created above");
                for record in self.held_back.drain(..) {
                    producer.send(&record)?;
                    count_emitted(&record);
                }
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
        for slot in tasks.values_mut() {
            let mut output = TaskOutput::default();
            slot.task.flush(&mut output)?;
            slot.pending_state.append(&mut output.state);
            slot.flushed = true;
            slot.flushed_offset = slot.task.next_offset();
            self.send(&mut output)?;
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
                    CommitRun::Done((producer, result))
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

/// Applies what the committed flush covered to every task that took part in it.
fn apply_flushed(tasks: &mut BTreeMap<TaskId, TaskSlot>) -> Result<(), CommitError> {
    for slot in tasks.values_mut().filter(|slot| slot.flushed) {
        let pending = std::mem::take(&mut slot.pending_state);
        slot.task.apply_committed(pending)?;
        slot.committed_offset = slot.flushed_offset;
        slot.flushed = false;
    }
    Ok(())
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
