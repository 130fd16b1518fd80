//! Deterministic simulation of the world an instance lives in, to drive the real runtime (its
//! loop, commit path, rollbacks, restores, tasks, operators and RocksDB state) through schedules
//! a seed decides: commit failures of every kind at every step, rebalances mid-batch and
//! mid-commit, zombies, crashes and restarts with and without local state, slow restores.
//!
//! Everything the runtime asks of the outside world goes through its ports
//! ([`crate::runtime::ports`]); here they are implemented in memory, on one thread, over one
//! seeded generator ([`Faults`]), so a seed replays exactly. FoundationDB's simulation and
//! TigerBeetle's VOPR are the models. `tests/simulation.rs` runs the schedules and checks the
//! committed output against a reference computed from the input.

mod broker;
mod changelog;
mod faults;
mod input;
mod transaction;

pub use broker::SimBroker;
pub use changelog::{SimAdmin, SimChangelog, SimClock};
pub use faults::{Call, FaultOdds, Faults};
pub use input::{SimInput, SimMembership, SimRecord};
pub use transaction::SimTransactions;
