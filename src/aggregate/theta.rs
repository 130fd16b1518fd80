//! Unique counts as Apache DataSketches Theta sketches, the state ClickHouse's `uniqTheta` keeps:
//! a compact sketch eddy emits can be cast to `AggregateFunction(uniqTheta, String)` and merged
//! there with `uniqThetaMerge` over any range of windows.
//!
//! ClickHouse builds its sketches with the library defaults (`lg_k` 12, seed 9001) and hashes a
//! `String` as MurmurHash3 of its bytes, so eddy hashes the same way ([`raw_bytes`]; the crate's
//! `update(&str)` would hash Rust's `Hash for str`, which appends a `0xFF` byte). Empty ids are
//! skipped, as every DataSketches library does; ClickHouse hashes `''`.

use datasketches::hash::value::raw_bytes;
use datasketches::theta::{
    CompactThetaSketch, ThetaSketch as UpdateSketch, ThetaSketchBuilder, ThetaUnion,
    ThetaUnionBuilder,
};

/// The seed ClickHouse and every DataSketches library use by default.
pub const THETA_SEED: u64 = 9001;

/// The `lg_k` ClickHouse's `uniqTheta` uses.
pub const THETA_LG_K: u8 = 12;

/// A Theta sketch over string values: what earlier merges produced, plus the values added since.
///
/// The crate's update sketch is neither `Clone` nor mergeable in place, so values go to an update
/// sketch and every merge (and every read) goes through a union, which trims to `k` entries the
/// way ClickHouse's own unions do.
#[derive(Debug)]
pub struct ThetaSketch {
    lg_k: u8,
    merged: Option<CompactThetaSketch>,
    pending: Option<Box<UpdateSketch>>,
}

impl ThetaSketch {
    /// An empty sketch. `lg_k` is validated by the topology (5..=26).
    pub fn new(lg_k: u8) -> ThetaSketch {
        ThetaSketch {
            lg_k,
            merged: None,
            pending: None,
        }
    }

    pub fn lg_k(&self) -> u8 {
        self.lg_k
    }

    /// Adds one value; an empty one is skipped.
    #[inline]
    pub fn update_str(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        let lg_k = self.lg_k;
        self.pending
            .get_or_insert_with(|| {
                Box::new(
                    ThetaSketchBuilder::default()
                        .lg_k(lg_k)
                        .seed(THETA_SEED)
                        .build()
                        .expect("lg_k validated to 5..=26"),
                )
            })
            .update(raw_bytes::from_str(value));
    }

    pub fn is_empty(&self) -> bool {
        self.merged.as_ref().is_none_or(|m| m.is_empty())
            && self.pending.as_ref().is_none_or(|p| p.is_empty())
    }

    fn union(&self) -> ThetaUnion {
        let mut union = ThetaUnionBuilder::default()
            .lg_k(self.lg_k)
            .seed(THETA_SEED)
            .build()
            .expect("lg_k validated to 5..=26");
        self.union_into(&mut union);
        union
    }

    fn union_into(&self, union: &mut ThetaUnion) {
        // Both parts carry THETA_SEED, so the seed check cannot fail.
        if let Some(merged) = &self.merged {
            let _ = union.update(merged);
        }
        if let Some(pending) = &self.pending {
            let _ = union.update(pending.as_ref());
        }
    }

    /// Unions `other` into this sketch.
    pub fn merge(&mut self, other: &ThetaSketch) {
        if other.is_empty() {
            return;
        }
        let mut union = self.union();
        other.union_into(&mut union);
        self.merged = Some(union.to_sketch(true));
        self.pending = None;
    }

    /// The sketch as a union leaves it: ordered, at most `k` entries. Every way of splitting the
    /// same values and merging the parts gives the same entries.
    pub fn compact(&self) -> CompactThetaSketch {
        match (&self.merged, &self.pending) {
            (Some(merged), None) if merged.is_ordered() => merged.clone(),
            _ => self.union().to_sketch(true),
        }
    }

    pub fn estimate(&self) -> f64 {
        self.compact().estimate()
    }

    /// The compact, ordered, serial-version-3, uncompressed DataSketches serialization: the bytes
    /// ClickHouse's `uniqTheta` state holds after its VarUInt length.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.compact().serialize()
    }

    pub fn from_bytes(bytes: &[u8], lg_k: u8) -> Result<ThetaSketch, String> {
        let sketch = CompactThetaSketch::deserialize_with_seed(bytes, THETA_SEED)
            .map_err(|e| format!("not a DataSketches Theta sketch (seed {THETA_SEED}): {e}"))?;
        Ok(ThetaSketch {
            lg_k,
            merged: Some(sketch),
            pending: None,
        })
    }

    /// Rough in-memory size, for the state cache's budget.
    pub fn approximate_bytes(&self) -> usize {
        48 + self.merged.as_ref().map_or(0, |m| 8 * m.num_retained())
            + self.pending.as_ref().map_or(0, |p| p.estimated_size())
    }
}

impl Clone for ThetaSketch {
    fn clone(&self) -> ThetaSketch {
        ThetaSketch {
            lg_k: self.lg_k,
            merged: (!self.is_empty()).then(|| self.compact()),
            pending: None,
        }
    }
}

impl PartialEq for ThetaSketch {
    /// Equal when their compact forms hold the same theta and entries.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.compact(), other.compact());
        self.lg_k == other.lg_k
            && a.is_empty() == b.is_empty()
            && a.theta64() == b.theta64()
            && a.iter().map(|e| e.hash()).eq(b.iter().map(|e| e.hash()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn one_id_serializes_as_clickhouse_and_the_cpp_library_do() {
        let mut sketch = ThetaSketch::new(THETA_LG_K);
        sketch.update_str("user-1");
        assert_eq!(hex(&sketch.to_bytes()), "01030300001acc933b21164f2189467e");
    }

    #[test]
    fn twenty_ids_serialize_to_the_exact_mode_layout() {
        let mut sketch = ThetaSketch::new(THETA_LG_K);
        for i in 1..=20 {
            sketch.update_str(&format!("user-{i}"));
        }
        let bytes = sketch.to_bytes();
        assert_eq!(bytes.len(), 176);
        assert_eq!(hex(&bytes[..16]), "02030300001acc931400000000000000");
        let entries: Vec<u64> = bytes[16..]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(entries.windows(2).all(|w| w[0] < w[1]), "ordered");
    }

    #[test]
    fn empty_ids_are_skipped() {
        let mut sketch = ThetaSketch::new(THETA_LG_K);
        sketch.update_str("");
        assert!(sketch.is_empty());
        assert_eq!(sketch.estimate(), 0.0);
    }

    #[test]
    fn split_and_merged_equals_direct_in_exact_and_estimation_mode() {
        for n in [0usize, 1, 300, 5_000, 60_000] {
            let mut direct = ThetaSketch::new(THETA_LG_K);
            let mut parts = [
                ThetaSketch::new(THETA_LG_K),
                ThetaSketch::new(THETA_LG_K),
                ThetaSketch::new(THETA_LG_K),
            ];
            for i in 0..n {
                let value = format!("user-{i}");
                direct.update_str(&value);
                parts[i % 3].update_str(&value);
            }
            let mut merged = ThetaSketch::new(THETA_LG_K);
            for part in &parts {
                merged.merge(part);
                merged.merge(part); // a redelivered part changes nothing
            }
            assert!(merged == direct, "n = {n}");
            assert_eq!(merged.to_bytes(), direct.to_bytes(), "n = {n}");
            let error = (merged.estimate() - n as f64).abs() / (n as f64).max(1.0);
            assert!(error < 0.05, "n = {n}: estimate {}", merged.estimate());
        }
    }

    #[test]
    fn serialization_round_trips_and_rejects_other_bytes() {
        let mut sketch = ThetaSketch::new(THETA_LG_K);
        for i in 0..10_000 {
            sketch.update_str(&i.to_string());
        }
        let back = ThetaSketch::from_bytes(&sketch.to_bytes(), THETA_LG_K).unwrap();
        assert!(back == sketch);
        assert_eq!(back.estimate(), sketch.estimate());
        assert!(ThetaSketch::from_bytes(b"nope", THETA_LG_K).is_err());
        let clone = sketch.clone();
        assert!(clone == sketch);
    }
}
