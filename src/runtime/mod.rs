//! The processing runtime: group membership, task lifecycle, the poll-process-commit loop.

mod commit;
mod engine;
mod failure;
mod purge;
mod restore;
mod task_slot;
mod worker_pool;

pub use commit::{now_ms, CommitCoordinator, CommitError};
pub use engine::{run, RunOptions};
