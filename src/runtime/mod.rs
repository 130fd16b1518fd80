//! The processing runtime: group membership, task lifecycle, the poll-process-commit loop.

mod commit;
mod copied_records;
mod engine;
mod failure;
mod loop_clock;
mod purge;
mod restore;
mod task_slot;
mod worker_pool;

pub use commit::{now_ms, CommitCoordinator, CommitError};
pub use engine::{run, RunOptions};
