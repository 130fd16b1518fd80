//! Window state: a write-back cache over a key-value backend (RocksDB in production), flushed
//! once per commit as one batch that also feeds the changelog.

mod cache_budget;
mod checkpoint;
mod codec;
mod memory;
mod position;
mod rocks;
mod window_store;

pub use cache_budget::{CacheBudget, CacheShare};
pub use checkpoint::Checkpoint;
pub use codec::{decode_accumulators, encode_accumulators, ClosingKey, StateKey, FORMAT_VERSION};
pub use memory::MemoryBackend;
pub use position::{ChangelogEnds, StorePosition};
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

/// The two key spaces of a store's backend: the values, and the close-time index that says which
/// windows close when (see [`WindowStore`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keyspace {
    Values,
    Closing,
}

/// Where a [`WindowStore`] keeps its flushed bytes.
pub trait StateBackend: Send {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Applies puts (`Some`) and deletes (`None`) to the values and to the close-time index, and
    /// records `position` (where the store now stands in its changelog) when given, all or none:
    /// the position never describes writes that are not there, nor the other way round.
    fn write_batch(
        &mut self,
        values: &[StoreWrite],
        closing: &[StoreWrite],
        position: Option<StorePosition>,
    ) -> Result<(), StateError>;
    /// The changelog position the last batch that carried one recorded.
    fn position(&self) -> Result<Option<StorePosition>, StateError>;
    /// Visits the keys and values of `keyspace` from `start` on, in key order, while `visit`
    /// returns true.
    fn scan_from(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError>;
    /// Visits every value, in key order.
    fn for_each(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StateError> {
        self.scan_from(Keyspace::Values, &[], &mut |key, value| {
            visit(key, value);
            true
        })
    }
    fn size_estimate(&self) -> (u64, u64);
}
