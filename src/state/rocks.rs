//! RocksDB, and the only module that touches it: one database per task, one column family per store.
//!
//! The write-ahead log is off, as in Kafka Streams: every committed write is also in the store's
//! changelog, and the checkpoint file (written after a flush on clean close) says which changelog
//! offset the files on disk correspond to.

use super::{Keyspace, StateBackend, StateError, StorePosition, StoreWrite};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, WriteBatch, WriteBufferManager,
    WriteOptions, DB,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// What RocksDB may hold in memory for the whole process, whatever the number of tasks and
/// stores: one LRU block cache (data blocks, indexes and bloom filters), which memtables are
/// charged to as well, as Kafka Streams' bounded-memory RocksDB configuration does.
const BLOCK_CACHE_BYTES: usize = 32 << 20;
/// The part of [`BLOCK_CACHE_BYTES`] memtables may take before the largest is flushed.
const MEMTABLE_BYTES: usize = 16 << 20;

fn shared_block_cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Cache::new_lru_cache(BLOCK_CACHE_BYTES))
}

fn shared_write_buffer_manager() -> &'static WriteBufferManager {
    static MANAGER: OnceLock<WriteBufferManager> = OnceLock::new();
    MANAGER.get_or_init(|| {
        WriteBufferManager::new_write_buffer_manager_with_cache(
            MEMTABLE_BYTES,
            false,
            shared_block_cache().clone(),
        )
    })
}

/// The options of every task database and column family: built once and copied, since each
/// `Options::default()` makes a default table factory with its own 32 MiB block cache, which
/// the shared one then replaces (a mapping made and unmapped at every open).
fn options() -> Options {
    static OPTIONS: OnceLock<Options> = OnceLock::new();
    OPTIONS.get_or_init(build_options).clone()
}

fn build_options() -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_write_buffer_size(4 << 20);
    options.set_max_write_buffer_number(2);
    options.set_write_buffer_manager(shared_write_buffer_manager());
    options.set_arena_block_size(64 << 10);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options.set_max_open_files(64);
    options.set_keep_log_file_num(2);
    // RocksDB preallocates (fallocate) a 4 MiB manifest at every open: zeroed pages per task on a
    // tmpfs, extents on a disk, for a file that stays nearly empty.
    options.set_manifest_preallocation_size(64 << 10);
    // The write-ahead log is preallocated at 1.1 times the write buffer (4.4 MiB) per task store
    // once written to: zeroed pages on a tmpfs for every open. Capping the log at 1 MiB caps that
    // (a store whose log passes it flushes its oldest memtables, as a full write buffer would).
    options.set_max_total_wal_size(1 << 20);
    // A task's store holds a few files; opening them with 16 new threads per column family (the
    // default) made every task open, restart and restore start spawn and join dozens of threads.
    options.set_max_file_opening_threads(1);
    // Opening a task reads no SST just to refresh statistics.
    options.set_skip_stats_update_on_db_open(true);
    // Each task store keeps its own LOG; at the default level every open writes the whole option
    // set into it. Warnings and errors are what an operator looks there for.
    options.set_log_level(rocksdb::LogLevel::Warn);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(shared_block_cache());
    // Most reads look for keys that do not exist yet (the first record of a window): bloom
    // filters answer those without reading data blocks. Filters and indexes live in the block
    // cache, so they are bounded with it.
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    options.set_block_based_table_factory(&table);
    options
}

/// The RocksDB release linked in (librocksdb-sys' bundled source); a test keeps it equal to
/// Cargo.lock.
pub const ROCKSDB_VERSION: &str = "11.8.1";

/// The column family holding a store's close-time index.
fn closing_family(store: &str) -> String {
    // `#` cannot appear in a store (aggregation) name.
    format!("{store}#closing")
}

/// The RocksDB database of one task: a column family of values per store, and one of the
/// store's close-time index.
pub struct TaskDb {
    db: Arc<DB>,
    path: PathBuf,
    /// Every column family opened (the stores' values and close-time indexes).
    families: Vec<String>,
}

impl TaskDb {
    pub fn open(path: &Path, stores: &[String]) -> Result<TaskDb, StateError> {
        std::fs::create_dir_all(path).map_err(|e| StateError::Open {
            path: path.into(),
            reason: e.to_string(),
        })?;
        // "default" is named too: left out, the Rust binding opens it with `Options::default()`
        // (a 64 MiB write buffer and a block cache of its own).
        let families: Vec<String> = stores
            .iter()
            .flat_map(|s| [s.clone(), closing_family(s)])
            .collect();
        let descriptors = families
            .iter()
            .cloned()
            .chain([rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_string()])
            .map(|name| ColumnFamilyDescriptor::new(name, options()));
        let db = DB::open_cf_descriptors(&options(), path, descriptors).map_err(|e| {
            StateError::Open {
                path: path.into(),
                reason: e.to_string(),
            }
        })?;
        Ok(TaskDb {
            db: Arc::new(db),
            path: path.into(),
            families,
        })
    }

    /// Deletes a task's database files (before a restore from the changelog).
    pub fn destroy(path: &Path) -> Result<(), StateError> {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(|e| StateError::Open {
                path: path.into(),
                reason: format!("could not wipe: {e}"),
            })?;
        }
        Ok(())
    }

    pub fn backend(&self, store: &str) -> RocksBackend {
        RocksBackend {
            db: self.db.clone(),
            store: store.into(),
            closing: closing_family(store),
        }
    }

    /// Flushes memtables so the files on disk hold every write (before writing a checkpoint).
    pub fn flush(&self) -> Result<(), StateError> {
        // One flush of every family, waited for once.
        let families: Vec<_> = self
            .families
            .iter()
            .filter_map(|name| self.db.cf_handle(name))
            .collect();
        self.db
            .flush_cfs_opt(
                &families.iter().collect::<Vec<_>>(),
                &rocksdb::FlushOptions::default(),
            )
            .map_err(|e| StateError::Io {
                store: self.families.join(","),
                operation: "flush",
                reason: e.to_string(),
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One store (column family) of a [`TaskDb`].
pub struct RocksBackend {
    db: Arc<DB>,
    store: String,
    closing: String,
}

impl RocksBackend {
    fn io(&self, operation: &'static str, e: rocksdb::Error) -> StateError {
        StateError::Io {
            store: self.store.clone(),
            operation,
            reason: e.to_string(),
        }
    }

    fn family(&self, keyspace: Keyspace) -> &rocksdb::ColumnFamily {
        let name = match keyspace {
            Keyspace::Values => &self.store,
            Keyspace::Closing => &self.closing,
        };
        self.db
            .cf_handle(name)
            .expect("column family opened with the db")
    }
}

/// The key, in the default column family, of a store's [`StorePosition`].
fn position_key(store: &str) -> Vec<u8> {
    format!("changelog-position/{store}").into_bytes()
}

impl StateBackend for RocksBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db
            .get_cf(self.family(Keyspace::Values), key)
            .map_err(|e| self.io("get", e))
    }

    /// One atomic batch, through the write-ahead log (not synced): a killed process loses
    /// nothing it wrote, and the position always describes exactly the writes beside it. The log
    /// must stay on, restores included: without it the values' column family and the default one
    /// holding the position flush independently, and a crash could keep a position whose writes
    /// were lost. (A
    /// machine that loses its page cache may lose the last batches, with their positions: the
    /// restore then replays more of the changelog, never less.)
    fn write_batch(
        &mut self,
        values: &[StoreWrite],
        closing: &[StoreWrite],
        position: Option<StorePosition>,
    ) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for (keyspace, writes) in [(Keyspace::Values, values), (Keyspace::Closing, closing)] {
            let cf = self.family(keyspace);
            for write in writes {
                match &write.value {
                    Some(value) => batch.put_cf(cf, &write.key, value),
                    None => batch.delete_cf(cf, &write.key),
                }
            }
        }
        if let Some(position) = position {
            batch.put(position_key(&self.store), position.to_bytes());
        }
        self.db
            .write_opt(batch, &WriteOptions::default())
            .map_err(|e| self.io("write", e))
    }

    fn position(&self) -> Result<Option<StorePosition>, StateError> {
        Ok(self
            .db
            .get(position_key(&self.store))
            .map_err(|e| self.io("get", e))?
            .and_then(|bytes| StorePosition::from_bytes(&bytes)))
    }

    fn scan_from(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        let mut iterator = self.db.raw_iterator_cf(self.family(keyspace));
        iterator.seek(start);
        while let (Some(key), Some(value)) = (iterator.key(), iterator.value()) {
            if !visit(key, value) {
                return Ok(());
            }
            iterator.next();
        }
        iterator.status().map_err(|e| self.io("scan", e))
    }

    fn size_estimate(&self) -> (u64, u64) {
        let cf = self.family(Keyspace::Values);
        let property = |name: &str| {
            self.db
                .property_int_value_cf(cf, name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let keys = property("rocksdb.estimate-num-keys");
        let bytes =
            property("rocksdb.total-sst-files-size") + property("rocksdb.cur-size-all-mem-tables");
        (keys, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options are built once and copied: every column family of a task database must get
    /// them all (RocksDB writes what each one ran with into its OPTIONS file).
    #[test]
    fn every_column_family_opens_with_the_shared_options() {
        let dir = tempfile::tempdir().unwrap();
        drop(TaskDb::open(dir.path(), &["a".into()]).unwrap());
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with("OPTIONS-"))
            .expect("RocksDB writes its OPTIONS file");
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(text.contains("max_file_opening_threads=1"), "{text}");
        assert!(text.contains("manifest_preallocation_size=65536"));
        let families: Vec<&str> = text.split("[CFOptions ").skip(1).collect();
        assert_eq!(families.len(), 3, "default, a and its close-time index");
        for section in families {
            assert!(section.contains("write_buffer_size=4194304"), "{section}");
            assert!(section.contains("compression=kLZ4Compression"), "{section}");
        }
    }

    #[test]
    fn writes_batches_and_scans_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = TaskDb::open(dir.path(), &["a".into(), "b".into()]).unwrap();
        let mut a = db.backend("a");
        let put = |k: &[u8], v: Option<&[u8]>| StoreWrite {
            key: k.to_vec(),
            value: v.map(<[u8]>::to_vec),
        };
        a.write_batch(
            &[
                put(b"2", Some(b"two")),
                put(b"1", Some(b"one")),
                put(b"3", Some(b"x")),
            ],
            &[put(b"i3", Some(b""))],
            None,
        )
        .unwrap();
        a.write_batch(&[put(b"3", None)], &[], None).unwrap();
        let mut seen = Vec::new();
        a.for_each(&mut |k, v| seen.push((k.to_vec(), v.to_vec())))
            .unwrap();
        assert_eq!(
            seen,
            [
                (b"1".to_vec(), b"one".to_vec()),
                (b"2".to_vec(), b"two".to_vec())
            ]
        );
        assert_eq!(db.backend("b").get(b"1").unwrap(), None);
        let mut index = Vec::new();
        a.scan_from(Keyspace::Closing, b"i", &mut |k, _| {
            index.push(k.to_vec());
            true
        })
        .unwrap();
        assert_eq!(index, [b"i3".to_vec()], "the index is its own key space");
        db.flush().unwrap();
        drop(a);
        drop(db);
        let reopened = TaskDb::open(dir.path(), &["a".into(), "b".into()]).unwrap();
        assert_eq!(
            reopened.backend("a").get(b"2").unwrap(),
            Some(b"two".to_vec())
        );
    }

    #[test]
    fn a_position_is_written_with_its_batch_and_read_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let put = |k: &[u8]| StoreWrite {
            key: k.to_vec(),
            value: Some(b"v".to_vec()),
        };
        {
            let db = TaskDb::open(dir.path(), &["a".into(), "b".into()]).unwrap();
            let mut a = db.backend("a");
            assert_eq!(a.position().unwrap(), None, "nothing recorded yet");
            a.write_batch(&[put(b"1")], &[], Some(StorePosition::now(41)))
                .unwrap();
            a.write_batch(&[put(b"2")], &[], None).unwrap();
            a.write_batch(&[put(b"3")], &[], Some(StorePosition::now(57)))
                .unwrap();
            assert_eq!(db.backend("b").position().unwrap(), None, "per store");
        }
        let db = TaskDb::open(dir.path(), &["a".into(), "b".into()]).unwrap();
        let a = db.backend("a");
        assert_eq!(a.position().unwrap().map(|p| p.next_offset), Some(57));
        assert!(a.get(b"3").unwrap().is_some());
    }
}
