//! Window state: a write-back cache over a key-value backend (RocksDB in production), flushed
//! once per commit as one batch that also feeds the changelog.

mod cache_budget;
mod checkpoint;
mod codec;
mod memory;
mod rocks;
mod window_store;

pub use cache_budget::{CacheBudget, CacheShare};
pub use checkpoint::Checkpoint;
pub use codec::{decode_accumulators, encode_accumulators, StateKey, FORMAT_VERSION};
pub use memory::MemoryBackend;
pub use rocks::{RocksBackend, TaskDb, ROCKSDB_VERSION};
pub use window_store::{StoreWrite, WindowStore};

use std::path::PathBuf;

/// Errors from local state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("could not open the RocksDB state at {path}: {reason}. If another eddy process uses the same `state_dir`, give each instance its own")]
    Open { path: PathBuf, reason: String },
    #[error("RocksDB {operation} failed in store `{store}`: {reason}")]
    Io {
        store: String,
        operation: &'static str,
        reason: String,
    },
    #[error("stored value in `{store}` cannot be decoded: {reason}")]
    Corrupt { store: String, reason: String },
}

/// Where a [`WindowStore`] keeps its flushed bytes.
pub trait StateBackend: Send {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Applies puts (`Some`) and deletes (`None`) atomically.
    fn write_batch(&mut self, writes: &[StoreWrite]) -> Result<(), StateError>;
    /// Visits every key and value, in key order.
    fn for_each(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StateError>;
    /// (keys, bytes on disk) as the backend estimates them.
    fn size_estimate(&self) -> (u64, u64);
}
