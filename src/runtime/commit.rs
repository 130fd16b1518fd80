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

use super::task_slot::TaskSlot;
use crate::config::ProcessingGuarantee;
use crate::kafka::{
    ClientSettings, CommitFailure, GroupHandle, KafkaClientError, PartitionOffset, RecordProducer,
};
use crate::state::StateError;
use crate::task::{OutgoingKind, OutgoingRecord, TaskId, TaskOutput};
use crate::telemetry::events::{CommitEnded, RecordSent, TransactionAborted};
use std::collections::BTreeMap;
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

pub struct CommitCoordinator {
    producer: RecordProducer,
    settings: ClientSettings,
    transactional_id: Option<String>,
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
    pub fn new(
        settings: &ClientSettings,
        instance_id: &str,
    ) -> Result<CommitCoordinator, KafkaClientError> {
        let transactional_id = (settings.guarantee == ProcessingGuarantee::ExactlyOnce)
            .then(|| format!("{}-{instance_id}", settings.application_id));
        let producer = RecordProducer::new(settings, transactional_id.as_deref())?;
        Ok(CommitCoordinator {
            producer,
            settings: settings.clone(),
            transactional_id,
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

    /// Sends a task's records now (they join the open transaction).
    pub(crate) fn send(&mut self, output: &mut TaskOutput) -> Result<(), CommitFailure> {
        for record in output.records.drain(..) {
            self.sent_since_commit = true;
            if matches!(record.kind, OutgoingKind::Aggregate { .. }) {
                self.aggregates_since_commit += 1;
            }
            self.producer.send(&record)?;
            count_emitted(&record);
        }
        self.producer.poll();
        Ok(())
    }

    /// Flushes every task and commits. After a [`CommitError::Kafka`] the caller must call
    /// [`CommitCoordinator::roll_back`]; after a [`CommitError::State`] it must stop.
    pub(crate) fn commit(
        &mut self,
        tasks: &mut BTreeMap<TaskId, TaskSlot>,
        group: &GroupHandle<'_>,
    ) -> Result<(), CommitError> {
        let started = Instant::now();
        let mut offsets = Vec::with_capacity(tasks.len());
        for slot in tasks.values_mut() {
            let mut output = TaskOutput::default();
            slot.task.flush(&mut output)?;
            slot.pending_state.append(&mut output.state);
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
        if self.aggregates_since_commit > 0 && failpoint_crash_before_commit() {
            // Test hook: the output of this commit has reached the broker, the commit has not happened.
            let _ = self.producer.wait_delivered();
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
        let result = match self.settings.guarantee {
            ProcessingGuarantee::ExactlyOnce => {
                let metadata = group.group_metadata();
                self.producer.commit(&offsets, metadata.as_ref())
            }
            ProcessingGuarantee::AtLeastOnce => self.producer.commit(&[], None).and_then(|()| {
                if offsets.is_empty() {
                    Ok(())
                } else {
                    group
                        .commit_sync(&offsets)
                        .map_err(|e| CommitFailure::abortable(e.to_string()))
                }
            }),
        };
        CommitEnded {
            committed: result.is_ok(),
            transactional: self.transactional_id.is_some(),
            seconds: started.elapsed().as_secs_f64(),
            oldest_append_ms: if result.is_ok() {
                self.oldest_uncommitted_ms.take()
            } else {
                None
            },
        }
        .emit();
        result?;
        for slot in tasks.values_mut() {
            let pending = std::mem::take(&mut slot.pending_state);
            slot.task.apply_committed(pending)?;
            slot.committed_offset = slot.task.next_offset();
        }
        Ok(())
    }

    /// Aborts the open transaction and returns every task to its last commit (what
    /// [`super::failure::decide`] chose). With `new_producer` the producer is recreated first; it
    /// is also recreated when the abort fails.
    pub(crate) fn roll_back(
        &mut self,
        tasks: &mut BTreeMap<TaskId, TaskSlot>,
        group: &GroupHandle<'_>,
        new_producer: bool,
    ) -> Result<(), crate::Error> {
        let abort = if new_producer {
            Ok(())
        } else {
            self.producer.abort()
        };
        if new_producer || abort.is_err() {
            self.producer = RecordProducer::new(&self.settings, self.transactional_id.as_deref())?;
        }
        if self.transactional_id.is_some() {
            TransactionAborted.emit();
        }
        self.oldest_uncommitted_ms = None;
        self.sent_since_commit = false;
        self.aggregates_since_commit = 0;
        for slot in tasks.values_mut() {
            slot.pending_state.clear();
            slot.task.rollback(slot.committed_offset)?;
            slot.needs_seek = true;
            slot.reposition(group);
        }
        Ok(())
    }

    /// Aborts without touching tasks (they are being dropped).
    pub(crate) fn abort(&mut self) {
        if let Err(error) = self.producer.abort() {
            tracing::warn!(%error, "abort failed; recreating the producer");
            if let Ok(producer) =
                RecordProducer::new(&self.settings, self.transactional_id.as_deref())
            {
                self.producer = producer;
            }
        }
        self.oldest_uncommitted_ms = None;
        self.sent_since_commit = false;
        self.aggregates_since_commit = 0;
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
