//! What the loop and the rebalance callbacks share: the running tasks, the restores waiting or
//! under way, the batch on the workers and the commit coordinator. The loop locks it around every
//! step; a rebalance callback, which runs inside the consumer's poll, locks it for its duration.

use super::commit::CommitCoordinator;
use super::failure::{Failure, Waiting};
use super::ports::{Changelog, Clock, Group};
use super::restore::{Restoration, Slice};
use super::seek_clock::SeekClock;
use super::standby::{Context as StandbyContext, Standbys};
use super::task_slot::TaskSlot;
use super::worker_pool::{InFlight, TaskWork};
use crate::task::{CompiledTopology, StateLocation, TaskId};
use crate::telemetry::events::BatchProcessed;
use crate::telemetry::Health;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(crate) struct Core {
    pub compiled: Arc<CompiledTopology>,
    pub partitions: HashMap<String, i32>,
    pub state: StateLocation,
    pub tasks: BTreeMap<TaskId, TaskSlot>,
    /// Assigned partitions whose restore has not started yet (paused until their task runs).
    pub pending: BTreeSet<(String, i32)>,
    /// The task being restored, a slice per loop turn (its partition paused too).
    pub restoring: Option<Restoration>,
    pub reader: Arc<dyn Changelog>,
    pub committer: CommitCoordinator,
    pub health: Health,
    /// Ticks at every seek, so records polled before a rollback are never processed.
    pub seeks: SeekClock,
    /// Set once a failure decided to stop (see [`Core::carry_out`]): the error the instance stops
    /// with, taken by the loop as soon as the step that decided it returns (a rebalance callback
    /// decides inside the poll). From then on nothing is committed.
    pub stop: Option<StopDecided>,
    /// The batch the workers are processing while the loop polls the next one. Its tasks are out
    /// of `tasks` until [`Core::finish_batch`]; everything that needs every task finishes it first.
    pub in_flight: Option<BatchInFlight>,
    /// Since when each kind of transient trouble has lasted (see [`Core::carry_out`]).
    pub waiting_since: BTreeMap<Waiting, Instant>,
    /// Restore slices in a row that read nothing (for the log).
    pub stalled_slices: u64,
    /// `task_timeout_ms`: how long retriable failures may last before the instance stops.
    pub task_timeout: Duration,
    /// What time it is (the simulator's own clock under simulation).
    pub clock: Arc<dyn Clock>,
    /// `checkpoint_max_age_ms`.
    pub checkpoint_max_age: Duration,
    /// Warm copies of other instances' tasks (`None` with `num_standby_replicas = 0`).
    pub standbys: Option<Standbys>,
}

impl Core {
    /// The directory names of the tasks this instance runs, restores or is about to restore.
    pub fn task_dirs_in_use(&self) -> std::collections::BTreeSet<String> {
        let pending = self.pending.iter().map(|(topic, partition)| {
            TaskId {
                topic: topic.clone(),
                partition: *partition,
            }
            .to_string()
        });
        self.tasks
            .keys()
            .map(TaskId::to_string)
            .chain(pending)
            .chain(self.restoring.iter().map(|r| r.id.to_string()))
            .chain(
                self.standbys
                    .iter()
                    .flat_map(|s| s.task_ids().map(TaskId::to_string)),
            )
            .collect()
    }

    /// Keeps the standby tasks placed here warm, for a share of the loop's time. Nothing is kept
    /// of a task this instance runs, restores or is assigned.
    pub fn keep_standbys(&mut self, group: &dyn Group) {
        let Some(standbys) = self.standbys.as_mut() else {
            return;
        };
        let owned: BTreeSet<TaskId> = group
            .assignment()
            .into_iter()
            .chain(self.pending.iter().cloned())
            .map(|(topic, partition)| TaskId { topic, partition })
            .chain(self.tasks.keys().cloned())
            // The batch on the workers holds only assigned tasks (a revocation finishes it).
            .chain(self.restoring.iter().map(|r| r.id.clone()))
            .collect();
        let context = StandbyContext {
            compiled: &self.compiled,
            state: &self.state,
            partitions: &self.partitions,
            clock: self.clock.as_ref(),
            checkpoint_max_age: self.checkpoint_max_age,
        };
        standbys.work(&context, group, &owned);
    }
}

/// Whether a restore failed because its changelog no longer holds what it had reached.
pub(crate) fn is_changelog_truncated(error: &crate::Error) -> bool {
    matches!(
        error,
        crate::Error::Kafka(crate::kafka::KafkaClientError::ChangelogTruncated { .. })
    )
}

/// A decision to stop, and whether the open transaction is aborted on the way out (not when the
/// last commit's outcome is unknown: it may still complete, and the next owner sees which).
pub(crate) struct StopDecided {
    pub error: Option<crate::Error>,
    pub abort: bool,
}

/// A batch handed to the workers.
pub(crate) struct BatchInFlight {
    pub work: InFlight,
    /// Records polled for this batch.
    pub records: usize,
    /// Records handed to the workers: those polled, and those carried over from the last batch.
    pub held: usize,
    pub started: Instant,
}

/// A batch the workers finished, its output not yet handed on.
pub(crate) struct FinishedBatch {
    work: Vec<TaskWork>,
    records: usize,
    started: Instant,
}

pub(crate) fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Time given to a restore per loop turn, between polls.
pub(crate) const RESTORE_SLICE: Duration = Duration::from_millis(200);

impl Core {
    /// Whether a stop was decided: nothing may be committed any more.
    pub fn stopping(&self) -> bool {
        self.stop.is_some()
    }

    /// Waits for the batch on the workers, if one is there.
    pub fn wait_batch(&mut self) -> Option<FinishedBatch> {
        let in_flight = self.in_flight.take()?;
        Some(FinishedBatch {
            work: in_flight.work.wait(),
            records: in_flight.records,
            started: in_flight.started,
        })
    }

    /// Puts a finished batch's tasks back, gives each its store writes and the producer its
    /// output. What failed (a task, or handing output to the producer) is returned for
    /// [`Core::carry_out`]; after a failure no more output is sent.
    pub fn hand_off(&mut self, finished: FinishedBatch) -> Option<Failure> {
        let mut failure = None;
        for mut item in finished.work {
            if let Err(error) = std::mem::replace(&mut item.result, Ok(())) {
                failure.get_or_insert(Failure::Processing(error));
            }
            // Store writes come only from a flush, at a commit: a batch's output carries none. (One
            // that did would be applied with the transaction in flight while its changelog
            // records wait for the next one, and the store's position would vouch for them.)
            debug_assert!(
                item.output.state.is_empty(),
                "processing produced store writes outside a flush"
            );
            item.slot.pending_state.append(&mut item.output.state);
            if failure.is_none() && !self.stopping() {
                if let Err(error) = self.committer.send(&item.slot.task.id, &mut item.output) {
                    failure = Some(Failure::Commit(error));
                }
            }
            self.tasks.insert(item.slot.task.id.clone(), item.slot);
        }
        BatchProcessed {
            records: finished.records,
            seconds: finished.started.elapsed().as_secs_f64(),
        }
        .emit();
        failure
    }

    /// Waits for the batch on the workers and hands its output on.
    pub fn finish_batch(&mut self) -> Option<Failure> {
        let finished = self.wait_batch()?;
        self.hand_off(finished)
    }

    /// Tasks running, those in a batch on the workers included.
    pub fn task_count(&self) -> usize {
        self.tasks.len() + self.in_flight.as_ref().map_or(0, |b| b.work.tasks())
    }

    /// Stops restoring the partitions in `partitions`, keeping their progress.
    pub fn forget_pending(&mut self, partitions: &[(String, i32)]) {
        for partition in partitions {
            self.pending.remove(partition);
        }
        let revoked = self.restoring.as_ref().is_some_and(|r| {
            partitions
                .iter()
                .any(|(t, p)| *t == r.id.topic && *p == r.id.partition)
        });
        if revoked {
            if let Some(restoration) = self.restoring.take() {
                restoration.suspend(self.reader.as_ref());
            }
            self.recovered(Waiting::Restore);
        }
        self.export_restoring();
    }

    /// Readiness counts the tasks not running yet: waiting for their restore or in it.
    pub fn export_restoring(&self) {
        self.health
            .set_restoring(self.pending.len() + usize::from(self.restoring.is_some()));
    }

    /// Starts the next pending restore, and restores for a slice of time; a finished task starts.
    /// A slice that read nothing is handed to the failure executor to wait out.
    pub fn restore_some(&mut self, group: &dyn Group) -> Result<(), crate::Error> {
        if self.restoring.is_none() {
            if let Some((topic, partition)) = self.pending.pop_first() {
                let id = TaskId { topic, partition };
                // A warm copy kept here closes first: the restore opens its files and reads only
                // the changelog past the positions they record.
                if let Some(standbys) = self.standbys.as_mut() {
                    standbys.promote(&id);
                }
                self.restoring = Some(Restoration::begin(
                    &self.compiled,
                    &self.state,
                    &self.partitions,
                    id,
                    group,
                    self.clock.as_ref(),
                    self.checkpoint_max_age,
                )?);
            }
        }
        let Some(restoration) = self.restoring.as_mut() else {
            return Ok(());
        };
        let slice = match restoration.step(
            group,
            self.reader.as_ref(),
            &self.compiled.application_id,
            RESTORE_SLICE,
            self.clock.as_ref(),
        ) {
            Ok(slice) => slice,
            Err(error) if is_changelog_truncated(&error) => {
                // What was restored so far misses the deleted records: start over from what the
                // changelog holds now (Kafka Streams treats the task as corrupted the same way).
                let restoration = self.restoring.take().expect("checked above");
                tracing::warn!(task = %restoration.id, %error, "restoring the task from scratch");
                let id = restoration.id.clone();
                restoration.discard(self.reader.as_ref())?;
                self.pending.insert((id.topic, id.partition));
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        match slice {
            Slice::Done => {
                self.recovered(Waiting::Restore);
                let restoration = self.restoring.take().expect("checked above");
                let slot = restoration.finish(group, &self.seeks, self.clock.as_ref())?;
                self.tasks.insert(slot.task.id.clone(), slot);
            }
            Slice::Progressed => self.recovered(Waiting::Restore),
            Slice::Stalled(waiting_for) => {
                self.carry_out(group, Failure::RestoreStalled(waiting_for))?
            }
        }
        self.export_restoring();
        Ok(())
    }
}
