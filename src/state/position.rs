//! Where a store's local files stand in its changelog, recorded in the same atomic RocksDB write
//! batch as the writes it describes (KIP-892's idea). eddy writes local state only after the
//! transaction that carries the same writes to the changelog committed, so a store's files are
//! always exactly its changelog up to its position: after any crash a task restores only the
//! changelog past it, and keeps its files.

use std::collections::BTreeMap;

/// The next changelog offset a store's files do not reflect, and when that was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorePosition {
    pub next_offset: i64,
    /// Wall-clock milliseconds: a position older than `checkpoint_max_age_ms` is not trusted
    /// (compaction may have removed tombstones the files missed).
    pub written_at_ms: i64,
}

/// Per changelog partition, the offset after the last record a committed transaction wrote there.
pub type ChangelogEnds = BTreeMap<(String, i32), i64>;

impl StorePosition {
    /// Version 1: `[1] ++ next_offset (i64 LE) ++ written_at_ms (i64 LE)`.
    const VERSION: u8 = 1;

    pub fn now(next_offset: i64) -> StorePosition {
        let written_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        StorePosition {
            next_offset,
            written_at_ms,
        }
    }

    pub fn to_bytes(self) -> [u8; 17] {
        let mut out = [0u8; 17];
        out[0] = Self::VERSION;
        out[1..9].copy_from_slice(&self.next_offset.to_le_bytes());
        out[9..17].copy_from_slice(&self.written_at_ms.to_le_bytes());
        out
    }

    /// `None` for bytes of another version or length: the files are then not trusted.
    pub fn from_bytes(bytes: &[u8]) -> Option<StorePosition> {
        if bytes.len() != 17 || bytes[0] != Self::VERSION {
            return None;
        }
        Some(StorePosition {
            next_offset: i64::from_le_bytes(bytes[1..9].try_into().ok()?),
            written_at_ms: i64::from_le_bytes(bytes[9..17].try_into().ok()?),
        })
    }

    /// How long ago it was recorded.
    pub fn age(&self) -> std::time::Duration {
        let now = StorePosition::now(0).written_at_ms;
        std::time::Duration::from_millis((now - self.written_at_ms).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_versions() {
        let position = StorePosition {
            next_offset: 123_456,
            written_at_ms: 1_795_340_400_000,
        };
        let bytes = position.to_bytes();
        assert_eq!(StorePosition::from_bytes(&bytes), Some(position));
        let mut other = bytes;
        other[0] = 2;
        assert_eq!(StorePosition::from_bytes(&other), None);
        assert_eq!(StorePosition::from_bytes(&bytes[..16]), None);
    }
}
