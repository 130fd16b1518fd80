//! The processing runtime: group membership, task lifecycle, the poll-process-commit loop.

mod commit;
mod copied_records;
mod core;
mod departures;
mod failure;
mod instance;
mod kafka_ports;
mod loop_clock;
mod nats_ports;
pub mod ports;
mod purge;
mod rebalance;
mod restore;
mod seek_clock;
mod setup;
pub mod sources;
mod standby;
mod state_cleaner;
mod task_slot;
mod worker_pool;

pub use commit::{now_ms, CommitCoordinator, CommitError, CommitSettings};
pub use instance::{run, Instance, InstanceParts, LoopOptions, RunOptions, StandbySettings};
pub use setup::{planned_topics, transactional_id};
