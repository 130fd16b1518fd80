//! eddy: a Kafka Streams-style stateful stream processor. Windowed counts, sums and HyperLogLog
//! unique counts over Kafka topics, kept in RocksDB, emitted with exactly-once transactions.
//!
//! Where things live: [`topology`] (what to compute), [`record`] (decoding), [`window`],
//! [`aggregate`] (accumulators and HLL sketches), [`state`] (RocksDB and the write-back cache),
//! [`operator`] (one aggregation in one task), [`task`] (a partition's operators), [`runtime`] (consuming, committing, rebalancing),
//! [`kafka`] (every rdkafka call), [`telemetry`] (metrics, health, logs).

pub mod aggregate;
pub mod api;
pub mod build_info;
pub mod config;

mod error;
pub mod events;
pub mod failpoint;
mod fixed_hash;
pub mod fuzzing;
pub mod kafka;
pub mod nats;
pub mod operator;
pub mod record;
pub mod runtime;
pub mod schema;
pub mod state;
pub mod task;
pub mod telemetry;
pub mod testing;
pub mod tools;
pub mod topology;
pub mod window;

pub use error::{Error, Result};
