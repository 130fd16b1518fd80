//! An in-memory backend for the topology test driver and benchmarks that leave RocksDB out.

use super::{Keyspace, StateBackend, StateError, StorePosition, StoreWrite};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct MemoryBackend {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    closing: BTreeMap<Vec<u8>, Vec<u8>>,
    position: Option<StorePosition>,
}

fn write(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, writes: &[StoreWrite]) {
    for write in writes {
        match &write.value {
            Some(value) => map.insert(write.key.clone(), value.clone()),
            None => map.remove(&write.key),
        };
    }
}

impl StateBackend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.map.get(key).cloned())
    }

    fn write_batch(
        &mut self,
        values: &[StoreWrite],
        closing: &[StoreWrite],
        position: Option<StorePosition>,
    ) -> Result<(), StateError> {
        write(&mut self.map, values);
        write(&mut self.closing, closing);
        if position.is_some() {
            self.position = position;
        }
        Ok(())
    }

    fn position(&self) -> Result<Option<StorePosition>, StateError> {
        Ok(self.position)
    }

    fn scan_from(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        let map = match keyspace {
            Keyspace::Values => &self.map,
            Keyspace::Closing => &self.closing,
        };
        for (key, value) in map.range(start.to_vec()..) {
            if !visit(key, value) {
                break;
            }
        }
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
