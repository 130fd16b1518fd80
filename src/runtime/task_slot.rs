//! A running task with what the runtime tracks around it.

use super::copied_records::CopiedRecords;
use super::ports::Group;
use super::seek_clock::SeekClock;
use crate::state::{Checkpoint, TaskDb};
use crate::task::{PendingStateWrites, StreamTask};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub(crate) struct TaskSlot {
    pub task: StreamTask,
    pub db: Option<TaskDb>,
    pub dir: Option<PathBuf>,
    /// The offset committed for this partition (where a rollback resumes).
    pub committed_offset: Option<i64>,
    /// Store writes of the flushed transaction, applied to RocksDB once it commits.
    pub pending_state: Vec<PendingStateWrites>,
    /// Whether the transaction being committed holds a flush of this task, and the offset that
    /// flush covered (it becomes `committed_offset` on success).
    pub flushed: bool,
    pub flushed_offset: Option<i64>,
    /// When the task last got a record (or was created): the idle-partition clock.
    pub last_record_at: std::time::Instant,
    /// A rollback could not seek the partition back to `committed_offset`: it stays paused, and
    /// what the consumer still delivers for it is dropped, until a seek succeeds.
    pub needs_seek: bool,
    /// The [`SeekClock`] time of the last seek of this partition: records polled before it are
    /// from the old position and are dropped.
    pub sought_at: u64,
    /// Records polled that the task did not get to within its last batch's time: the next ones
    /// after its `next_offset`, processed first in the next batch. A rollback or a seek drops
    /// them (the consumer delivers them again from the new position).
    pub carried: Option<CopiedRecords>,
}

impl TaskSlot {
    /// Seeks the partition back to the committed offset when a rollback asked for it. Until a seek
    /// succeeds the partition stays paused and the engine drops what the consumer still delivers
    /// for it, so nothing between the committed offset and the old fetch position is skipped.
    pub fn reposition(&mut self, group: &dyn Group, seeks: &SeekClock) {
        if !self.needs_seek {
            return;
        }
        let partition = [(self.task.id.topic.clone(), self.task.id.partition)];
        match group.seek(&partition[0].0, partition[0].1, self.committed_offset) {
            Ok(()) => {
                self.needs_seek = false;
                self.sought_at = seeks.tick();
                self.carried = None;
                if let Err(error) = group.resume(&partition) {
                    tracing::warn!(task = %self.task.id, %error, "could not resume after the seek");
                }
            }
            Err(error) => {
                // Seen when the partition was revoked or fenced in the same moment (the rebalance
                // then drops the task) or its fetcher has not started yet: retried every loop.
                tracing::warn!(task = %self.task.id, %error, "seek to the committed offset failed; the partition stays paused and the seek is retried");
                let _ = group.pause(&partition);
            }
        }
    }

    /// Clean close after a successful commit: flush RocksDB and write the checkpoint that lets
    /// the next owner on this machine reuse the files instead of restoring from scratch.
    /// `changelog_ends` must name every store: a checkpoint missing one would let the next start
    /// replay that store over files it did not wipe, so then no checkpoint is written at all.
    pub fn close_clean(self, changelog_ends: BTreeMap<String, i64>) {
        let stores = self.task.store_names();
        if let Some(missing) = stores.iter().find(|s| !changelog_ends.contains_key(*s)) {
            tracing::warn!(task = %self.task.id, store = %missing, "changelog end unknown; no checkpoint written (the next start restores from scratch)");
            return;
        }
        if let (Some(db), Some(dir)) = (&self.db, &self.dir) {
            match db.flush() {
                Ok(()) => {
                    if let Err(error) = Checkpoint::write(dir, changelog_ends) {
                        tracing::warn!(task = %self.task.id, %error, "could not write checkpoint; the next start restores from the changelog");
                    }
                }
                Err(error) => {
                    tracing::warn!(task = %self.task.id, %error, "RocksDB flush failed on close")
                }
            }
        }
    }
}
