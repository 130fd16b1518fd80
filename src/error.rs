//! eddy's top-level error: each layer has its own typed error, joined here.

use std::path::PathBuf;

/// Result alias used across eddy's library API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error eddy's library can return. Each variant's message says what was wrong and,
/// where a user can fix it, what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaClientError),
    #[error(transparent)]
    Nats(#[from] crate::nats::NatsError),
    /// A commit failure no rollback can fix (see `runtime::failure`).
    #[error("{0}. eddy stopped and committed nothing more; the uncommitted input is processed again after a restart")]
    Commit(crate::kafka::CommitFailure),
    #[error("processing stopped: source `{source_name}` uses on_decode_error = \"fail\" and {topic}[{partition}]@{offset} could not be decoded: {reason}")]
    DecodeFailed {
        source_name: String,
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("could not use the state directory {path}: {source}. Set `state_dir` (or EDDY__STATE_DIR) to a writable directory")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start {threads} worker threads: {reason}. Lower `num_threads` (or EDDY__NUM_THREADS)")]
    WorkerThreads { threads: usize, reason: String },
    #[error("the HTTP listener could not bind {addr}: {reason}. Set `http.listen` to a free address, or `http.enabled = false`")]
    Http { addr: String, reason: String },
}
