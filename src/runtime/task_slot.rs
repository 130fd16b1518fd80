//! A running task with what the runtime tracks around it.

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
    /// Store writes of the open transaction, applied to RocksDB once it commits.
    pub pending_state: Vec<PendingStateWrites>,
    /// When the task last got a record (or was created): the idle-partition clock.
    pub last_record_at: std::time::Instant,
}

impl TaskSlot {
    /// Clean close after a successful commit: flush RocksDB and write the checkpoint that lets
    /// the next owner on this machine reuse the files instead of restoring from scratch.
    pub fn close_clean(self, changelog_ends: BTreeMap<String, i64>) {
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
