//! What the instance does when the group moves partitions. The callbacks run inside the
//! consumer's poll, with the [`Core`] locked for their whole duration.

use super::commit::CommitMode;
use super::core::{lock, Core};
use super::failure::Failure;
use super::ports::{Group, RebalanceListener};
use super::task_slot::TaskSlot;
use crate::task::{CompiledTopology, TaskId};
use crate::telemetry::events::{ActiveTasks, RebalanceKind, Rebalanced};
use crate::topology::changelog_topic;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// How long a revocation waits for a commit: `transaction.timeout.ms` (10 s), past which the
/// coordinator aborts a transaction left open anyway. `max.poll.interval.ms` (300 s) bounds the
/// whole rebalance.
pub(crate) const REVOKE_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct Listener {
    pub core: Arc<Mutex<Core>>,
}

impl RebalanceListener for Listener {
    fn on_revoke(&self, partitions: &[(String, i32)], lost: bool, group: &dyn Group) {
        let mut guard = lock(&self.core);
        let core = &mut *guard;
        Rebalanced {
            kind: if lost {
                RebalanceKind::Lost
            } else {
                RebalanceKind::Revoke
            },
            partitions,
        }
        .emit();
        core.forget_pending(partitions);
        let revoked: Vec<TaskId> = partitions
            .iter()
            .map(|(topic, partition)| TaskId {
                topic: topic.clone(),
                partition: *partition,
            })
            .collect();
        let outcome = if lost {
            core.lose(group, &revoked)
        } else {
            core.revoke(group, &revoked)
        };
        if let Err(error) = outcome {
            if let Some(stop) = core.stop.as_mut() {
                stop.error.get_or_insert(error);
            }
        }
        ActiveTasks(core.tasks.len()).emit();
    }

    fn on_assign(&self, partitions: &[(String, i32)], group: &dyn Group) {
        let mut core = lock(&self.core);
        Rebalanced {
            kind: RebalanceKind::Assign,
            partitions,
        }
        .emit();
        core.health.set_joined(true);
        if let Err(error) = group.pause(partitions) {
            tracing::warn!(%error, "could not pause newly assigned partitions");
        }
        core.pending.extend(partitions.iter().cloned());
        core.export_restoring();
    }
}

impl Core {
    /// Partitions taken away in an orderly rebalance: every task's work is committed first (the
    /// batch on the workers included), then the revoked tasks close clean. If that fails, the
    /// failure is carried out for every task and the revoked ones are dropped with no checkpoint.
    ///
    /// The rebalance waits for this member, so the commit is waited for at most
    /// [`REVOKE_COMMIT_WAIT`] at each of its two steps (the commit already in flight, then the
    /// one covering the rest), not for a commit's whole retry budget. Past that the revoked tasks
    /// are released uncommitted: dropped with no checkpoint and their held-back output
    /// forgotten, while the commit goes on for the others. Whatever it does, the next owner
    /// starts from the offsets it leaves stable, with the changelog records of the same
    /// transaction.
    fn revoke(&mut self, group: &dyn Group, revoked: &[TaskId]) -> Result<(), crate::Error> {
        if self.stopping() {
            self.drop_tasks(revoked);
            return Ok(());
        }
        if let Some(failure) = self.finish_batch() {
            let outcome = self.carry_out(group, failure);
            self.drop_tasks(revoked);
            return outcome;
        }
        let committed = match self
            .committer
            .settle_within(&mut self.tasks, REVOKE_COMMIT_WAIT)
        {
            Ok(true) => self
                .committer
                .commit(&mut self.tasks, group, CommitMode::Background)
                .and_then(|()| {
                    self.committer
                        .settle_within(&mut self.tasks, REVOKE_COMMIT_WAIT)
                }),
            other => other,
        };
        match committed {
            Ok(true) => {
                for id in revoked {
                    if let Some(slot) = self.tasks.remove(id) {
                        let ends = changelog_ends(&self.compiled, &slot, group);
                        slot.close_clean(ends);
                    }
                }
                Ok(())
            }
            Ok(false) => {
                tracing::warn!(
                    wait_s = REVOKE_COMMIT_WAIT.as_secs(),
                    partitions = ?revoked,
                    "a commit still in flight at a revocation; releasing the revoked tasks uncommitted"
                );
                self.committer.release(revoked);
                self.drop_tasks(revoked);
                Ok(())
            }
            Err(error) => {
                let outcome = self.carry_out(group, Failure::from(error));
                self.drop_tasks(revoked);
                outcome
            }
        }
    }

    /// Partitions lost (another member may own them already): nothing may be committed for them.
    /// The open transaction holds their work, so it is rolled back for every task, and the lost
    /// tasks are dropped with no checkpoint.
    fn lose(&mut self, group: &dyn Group, lost: &[TaskId]) -> Result<(), crate::Error> {
        let outcome = match self.finish_batch() {
            Some(failure) => self.carry_out(group, failure),
            None => Ok(()),
        };
        self.drop_tasks(lost);
        outcome?;
        if self.stopping() {
            return Ok(());
        }
        self.drop_uncommitted(group)
    }

    fn drop_tasks(&mut self, ids: &[TaskId]) {
        for id in ids {
            self.tasks.remove(id);
        }
    }
}

/// Changelog end offsets of a task's stores, for its checkpoint.
pub(crate) fn changelog_ends(
    compiled: &CompiledTopology,
    slot: &TaskSlot,
    group: &dyn Group,
) -> BTreeMap<String, i64> {
    slot.task
        .store_names()
        .into_iter()
        .filter_map(|store| {
            let topic = changelog_topic(&compiled.application_id, &store);
            group
                .watermarks(&topic, slot.task.id.partition)
                .ok()
                .map(|(_, high)| (store, high))
        })
        .collect()
}
