//! Persisted bytes: state keys and versioned accumulator values, shared by RocksDB, changelogs
//! and repartition topics.

use crate::aggregate::{Accumulator, Accumulators, ExactSum, HllSketch, ThetaSketch};
use crate::record::GroupKey;
use crate::window::Window;
use serde::{Deserialize, Serialize};

/// The first byte of every persisted accumulator value: the newest layout this eddy reads.
/// Bump it when the layout changes and keep a decoder (and a committed fixture) for each older
/// version.
///
/// - 1: counts, sums, min, max and HLL sketches.
/// - 2: adds `DistinctTheta` (an HLL and a Theta sketch), appended last, so version 1 bytes are
///   version 2 bytes without it. Values without a Theta sketch are still written as version 1,
///   which an older eddy reads: only topologies that ask for `theta` need every instance upgraded.
pub const FORMAT_VERSION: u8 = 2;

/// Stored accumulators, versions 1 and 2 (variants are only ever appended).
#[derive(Serialize, Deserialize)]
enum StoredAccumulator {
    Count(u64),
    Sum(ExactSum),
    Min(Option<f64>),
    Max(Option<f64>),
    /// DataSketches compact HLL bytes.
    Distinct(Vec<u8>),
    /// Version 2: DataSketches compact HLL bytes and compact Theta bytes, with the Theta
    /// sketch's nominal `lg_k`.
    DistinctTheta {
        hll: Vec<u8>,
        theta: Vec<u8>,
        theta_lg_k: u8,
    },
}

/// Encodes accumulators as `[version] ++ bincode`: version 1 unless one carries a Theta sketch.
pub fn encode_accumulators(accumulators: &Accumulators, out: &mut Vec<u8>) {
    let mut version = 1;
    let stored: Vec<StoredAccumulator> = accumulators
        .0
        .iter()
        .map(|a| match a {
            Accumulator::Count(n) => StoredAccumulator::Count(*n),
            Accumulator::Sum(s) => StoredAccumulator::Sum(*s),
            Accumulator::Min(v) => StoredAccumulator::Min(*v),
            Accumulator::Max(v) => StoredAccumulator::Max(*v),
            Accumulator::Distinct(s, None) => StoredAccumulator::Distinct(s.to_bytes()),
            Accumulator::Distinct(s, Some(theta)) => {
                version = 2;
                StoredAccumulator::DistinctTheta {
                    hll: s.to_bytes(),
                    theta: theta.to_bytes(),
                    theta_lg_k: theta.lg_k(),
                }
            }
        })
        .collect();
    out.push(version);
    bincode::serde::encode_into_std_write(&stored, out, bincode::config::standard())
        .expect("writing to a Vec cannot fail");
}

pub fn decode_accumulators(bytes: &[u8]) -> Result<Accumulators, String> {
    let (&version, body) = bytes.split_first().ok_or("empty value")?;
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(format!("format version {version} is not one this eddy reads (it reads 1 to {FORMAT_VERSION}); was it written by a newer eddy?"));
    }
    let (stored, _): (Vec<StoredAccumulator>, _) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| e.to_string())?;
    stored
        .into_iter()
        .map(|s| {
            Ok(match s {
                StoredAccumulator::Count(n) => Accumulator::Count(n),
                StoredAccumulator::Sum(s) => Accumulator::Sum(s),
                StoredAccumulator::Min(v) => Accumulator::Min(v),
                StoredAccumulator::Max(v) => Accumulator::Max(v),
                StoredAccumulator::Distinct(bytes) => {
                    Accumulator::Distinct(HllSketch::from_bytes(&bytes)?, None)
                }
                StoredAccumulator::DistinctTheta {
                    hll,
                    theta,
                    theta_lg_k,
                } if version >= 2 => Accumulator::Distinct(
                    HllSketch::from_bytes(&hll)?,
                    Some(Box::new(ThetaSketch::from_bytes(&theta, theta_lg_k)?)),
                ),
                StoredAccumulator::DistinctTheta { .. } => {
                    return Err(format!("a Theta sketch in format version {version}"))
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

    /// Accumulators of every kind; with `theta`, the distinct one keeps a Theta sketch too.
    fn sample(theta: bool) -> Accumulators {
        let mut sketch = HllSketch::new(12);
        let mut theta_sketch = ThetaSketch::new(12);
        for user in ["u1", "u2", "u3"] {
            sketch.update_str(user);
            theta_sketch.update_str(user);
        }
        Accumulators(vec![
            Accumulator::Count(3),
            Accumulator::Sum(ExactSum {
                millionths: 29_970_000,
                fractional: true,
            }),
            Accumulator::Min(Some(1.5)),
            Accumulator::Max(None),
            Accumulator::Distinct(sketch, theta.then(|| Box::new(theta_sketch))),
        ])
    }

    #[test]
    fn round_trips_as_the_oldest_version_that_holds_them() {
        for (theta, version) in [(false, 1), (true, 2)] {
            let mut bytes = Vec::new();
            encode_accumulators(&sample(theta), &mut bytes);
            assert_eq!(bytes[0], version);
            assert_eq!(decode_accumulators(&bytes).unwrap(), sample(theta));
        }
    }

    /// Each committed fixture was written by its format version; all must keep decoding.
    /// `EDDY_WRITE_FIXTURES=1` rewrites the newest one.
    #[test]
    fn decodes_the_committed_fixtures_of_every_version() {
        for (version, theta) in [(1u8, false), (2, true)] {
            let path = format!(
                "{}/tests/fixtures/accumulators-v{version}.bin",
                env!("CARGO_MANIFEST_DIR")
            );
            if version == FORMAT_VERSION && std::env::var_os("EDDY_WRITE_FIXTURES").is_some() {
                let mut fresh = Vec::new();
                encode_accumulators(&sample(theta), &mut fresh);
                std::fs::write(&path, fresh).unwrap();
            }
            let bytes = std::fs::read(&path).expect("committed fixture");
            assert_eq!(bytes[0], version, "{path}");
            assert_eq!(
                decode_accumulators(&bytes).unwrap(),
                sample(theta),
                "{path}"
            );
        }
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
