//! The commands around the engine: the demo, the event generator and the benchmarks.

mod bench;
mod bench_api;
mod bench_e2e;
mod bench_failover;
mod bench_nats;
mod bench_process;
mod demo;
mod generate;
mod live_table;
mod memory;

pub use bench::{run_bench, BenchCommand};
pub use demo::{run_demo, DemoArgs};
pub use generate::{run_generate, GenerateArgs};
pub use live_table::LiveTable;
pub use memory::{cpu_seconds, current_rss_bytes, machine_busy_seconds, peak_rss_bytes};
