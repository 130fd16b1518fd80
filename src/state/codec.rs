//! Persisted bytes: state keys and versioned accumulator values, shared by RocksDB, changelogs
//! and repartition topics.

use crate::aggregate::{Accumulator, Accumulators, ExactSum, HllSketch};
use crate::record::GroupKey;
use crate::window::Window;
use serde::{Deserialize, Serialize};

/// The first byte of every persisted value. Bump it when the layout changes and keep a decoder
/// (and a committed fixture) for each older version.
pub const FORMAT_VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
enum StoredAccumulatorV1 {
    Count(u64),
    Sum(ExactSum),
    Min(Option<f64>),
    Max(Option<f64>),
    /// DataSketches compact HLL bytes.
    Distinct(Vec<u8>),
}

/// Encodes accumulators as `[FORMAT_VERSION] ++ bincode`.
pub fn encode_accumulators(accumulators: &Accumulators, out: &mut Vec<u8>) {
    let stored: Vec<StoredAccumulatorV1> = accumulators
        .0
        .iter()
        .map(|a| match a {
            Accumulator::Count(n) => StoredAccumulatorV1::Count(*n),
            Accumulator::Sum(s) => StoredAccumulatorV1::Sum(*s),
            Accumulator::Min(v) => StoredAccumulatorV1::Min(*v),
            Accumulator::Max(v) => StoredAccumulatorV1::Max(*v),
            Accumulator::Distinct(s) => StoredAccumulatorV1::Distinct(s.to_bytes()),
        })
        .collect();
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(&stored, out, bincode::config::standard())
        .expect("writing to a Vec cannot fail");
}

pub fn decode_accumulators(bytes: &[u8]) -> Result<Accumulators, String> {
    let (&version, body) = bytes.split_first().ok_or("empty value")?;
    if version != FORMAT_VERSION {
        return Err(format!("format version {version} is not one this eddy reads (it reads {FORMAT_VERSION}); was it written by a newer eddy?"));
    }
    let (stored, _): (Vec<StoredAccumulatorV1>, _) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| e.to_string())?;
    stored
        .into_iter()
        .map(|s| {
            Ok(match s {
                StoredAccumulatorV1::Count(n) => Accumulator::Count(n),
                StoredAccumulatorV1::Sum(s) => Accumulator::Sum(s),
                StoredAccumulatorV1::Min(v) => Accumulator::Min(v),
                StoredAccumulatorV1::Max(v) => Accumulator::Max(v),
                StoredAccumulatorV1::Distinct(bytes) => {
                    Accumulator::Distinct(HllSketch::from_bytes(&bytes)?)
                }
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Accumulators)
}

/// A (group, window) pair, the identity of one aggregate value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    pub group: GroupKey,
    pub window: Window,
}

fn order_preserving(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn read_order_preserving(bytes: &[u8]) -> i64 {
    (u64::from_be_bytes(bytes.try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

/// A key of a store's close-time index: close time ++ [`StateKey`] bytes, so byte order is close
/// order. The index lives only in local state (it is rebuilt from the values, never logged).
pub struct ClosingKey;

impl ClosingKey {
    pub fn encode(close_at: i64, state_key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + state_key.len());
        out.extend_from_slice(&order_preserving(close_at));
        out.extend_from_slice(state_key);
        out
    }

    /// Where the index entries closing at `close_at` or later begin.
    pub fn seek(close_at: i64) -> [u8; 8] {
        order_preserving(close_at)
    }

    pub fn decode(bytes: &[u8]) -> Option<(i64, StateKey)> {
        if bytes.len() < 8 {
            return None;
        }
        let (time, key) = bytes.split_at(8);
        Some((read_order_preserving(time), StateKey::from_bytes(key)?))
    }
}

impl StateKey {
    /// Bytes: group ++ start ++ end, with signs flipped so byte order is time order within a group.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.group.0.len() + 16);
        out.extend_from_slice(&self.group.0);
        out.extend_from_slice(&order_preserving(self.window.start));
        out.extend_from_slice(&order_preserving(self.window.end));
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<StateKey> {
        let split = bytes.len().checked_sub(16)?;
        let (group, times) = bytes.split_at(split);
        Some(StateKey {
            group: GroupKey(group.into()),
            window: Window {
                start: read_order_preserving(&times[..8]),
                end: read_order_preserving(&times[8..]),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Accumulators {
        let mut sketch = HllSketch::new(12);
        for user in ["u1", "u2", "u3"] {
            sketch.update_str(user);
        }
        Accumulators(vec![
            Accumulator::Count(3),
            Accumulator::Sum(ExactSum {
                millionths: 29_970_000,
                fractional: true,
            }),
            Accumulator::Min(Some(1.5)),
            Accumulator::Max(None),
            Accumulator::Distinct(sketch),
        ])
    }

    #[test]
    fn round_trips() {
        let mut bytes = Vec::new();
        encode_accumulators(&sample(), &mut bytes);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode_accumulators(&bytes).unwrap(), sample());
    }

    /// The committed fixture was written by format version 1; it must keep decoding.
    #[test]
    fn decodes_the_committed_version_1_fixture() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/accumulators-v1.bin"
        );
        if std::env::var_os("EDDY_WRITE_FIXTURES").is_some() {
            let mut fresh = Vec::new();
            encode_accumulators(&sample(), &mut fresh);
            std::fs::write(path, fresh).unwrap();
        }
        let bytes = std::fs::read(path).expect("committed fixture");
        assert_eq!(decode_accumulators(&bytes).unwrap(), sample());
    }

    #[test]
    fn rejects_unknown_versions_with_a_reason() {
        let err = decode_accumulators(&[9, 0]).unwrap_err();
        assert!(err.contains("format version 9"), "{err}");
    }

    #[test]
    fn key_bytes_sort_by_group_then_time() {
        let key = |g: &[u8], s: i64| StateKey {
            group: GroupKey(g.into()),
            window: Window {
                start: s,
                end: s + 10,
            },
        };
        let mut keys = [key(b"b", -5), key(b"a", 100), key(b"a", -100), key(b"b", 3)];
        let mut bytes: Vec<_> = keys.iter().map(StateKey::to_bytes).collect();
        bytes.sort();
        keys.sort();
        assert_eq!(
            bytes
                .iter()
                .map(|b| StateKey::from_bytes(b).unwrap())
                .collect::<Vec<_>>(),
            keys
        );
    }
}
