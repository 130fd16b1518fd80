//! An in-memory backend for the topology test driver and benchmarks that leave RocksDB out.

use super::{StateBackend, StateError, StoreWrite};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct MemoryBackend {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl StateBackend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.map.get(key).cloned())
    }

    fn write_batch(&mut self, writes: &[StoreWrite]) -> Result<(), StateError> {
        for write in writes {
            match &write.value {
                Some(value) => self.map.insert(write.key.clone(), value.clone()),
                None => self.map.remove(&write.key),
            };
        }
        Ok(())
    }

    fn for_each(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StateError> {
        self.map.iter().for_each(|(k, v)| visit(k, v));
        Ok(())
    }

    fn size_estimate(&self) -> (u64, u64) {
        (
            self.map.len() as u64,
            self.map
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum(),
        )
    }
}
