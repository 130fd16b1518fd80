//! Unique counts as Apache DataSketches HLL sketches, so any DataSketches library can read and union them.

use datasketches::hash::value::raw_bytes;
pub use datasketches::hll::Coupon;
use datasketches::hll::{HllType, HllUnion};

/// An HLL sketch over string values. Values are hashed like DataSketches' `update(String)` in
/// Java, C++ and Python (MurmurHash3 of the UTF-8 bytes, seed 9001), so sketches built elsewhere
/// from the same strings union with eddy's exactly.
#[derive(Clone, Debug)]
pub struct HllSketch {
    inner: datasketches::hll::HllSketch,
}

impl HllSketch {
    pub fn new(lg_k: u8) -> HllSketch {
        HllSketch {
            inner: datasketches::hll::HllSketch::new(lg_k, HllType::Hll8)
                .expect("lg_k validated to 4..=21"),
        }
    }

    #[inline]
    pub fn update_str(&mut self, value: &str) {
        self.inner.update(raw_bytes::from_str(value));
    }

    /// The hash of a value, computed once and applied to any number of sketches (of any precision).
    #[inline]
    pub fn coupon_of(value: &str) -> Coupon {
        Coupon::from_value(raw_bytes::from_str(value))
    }

    #[inline]
    pub fn update_coupon(&mut self, coupon: Coupon) {
        self.inner.update_with_coupon(coupon);
    }

    pub fn lg_k(&self) -> u8 {
        self.inner.lg_config_k()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Unions `other` into this sketch.
    pub fn merge(&mut self, other: &HllSketch) {
        if other.is_empty() {
            return;
        }
        let mut union = HllUnion::new(self.lg_k().max(other.lg_k())).expect("valid lg_k");
        union.update(&self.inner);
        union.update(&other.inner);
        self.inner = union.to_sketch(HllType::Hll8);
    }

    /// The sketch as every merge order produces it: its estimate comes from the registers alone
    /// (the composite estimator), not from the insertion-order HIP accumulator a directly built
    /// sketch carries, so it does not depend on how the values were split across partitions.
    /// Merging a sketch into a union holding itself is idempotent on registers and makes the union
    /// rebuild its estimator from them.
    pub fn canonical(&self) -> HllSketch {
        let mut union = HllUnion::new(self.lg_k()).expect("valid lg_k");
        union.update(&self.inner);
        union.update(&self.inner);
        HllSketch {
            inner: union.to_sketch(HllType::Hll8),
        }
    }

    pub fn estimate(&self) -> f64 {
        self.inner.estimate()
    }

    /// The standard DataSketches compact serialization.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.inner.serialize()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<HllSketch, String> {
        datasketches::hll::HllSketch::deserialize(bytes)
            .map(|inner| HllSketch { inner })
            .map_err(|e| format!("not a DataSketches HLL sketch: {e}"))
    }

    /// Relative standard error of this precision: about 1.04 / sqrt(2^lg_k).
    pub fn relative_standard_error(lg_k: u8) -> f64 {
        1.04 / ((1u64 << lg_k) as f64).sqrt()
    }
}

impl PartialEq for HllSketch {
    /// Two sketches are equal when their canonical forms give the same estimate and bounds.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.canonical().inner, other.canonical().inner);
        use datasketches::common::NumStdDev;
        a.lg_config_k() == b.lg_config_k()
            && a.estimate() == b.estimate()
            && a.upper_bound(NumStdDev::One) == b.upper_bound(NumStdDev::One)
            && a.lower_bound(NumStdDev::Two) == b.lower_bound(NumStdDev::Two)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_merged_equals_direct_in_every_mode() {
        for n in [0usize, 3, 200, 5_000, 100_000] {
            let mut direct = HllSketch::new(12);
            let mut parts = [HllSketch::new(12), HllSketch::new(12), HllSketch::new(12)];
            for i in 0..n {
                let value = format!("user-{i}");
                direct.update_str(&value);
                parts[i % 3].update_str(&value);
            }
            let mut merged = HllSketch::new(12);
            for part in &parts {
                merged.merge(part);
            }
            assert_eq!(
                merged.canonical().estimate(),
                direct.canonical().estimate(),
                "n = {n}"
            );
            assert!(merged == direct);
        }
    }

    #[test]
    fn serialization_round_trips() {
        let mut sketch = HllSketch::new(11);
        for i in 0..10_000 {
            sketch.update_str(&i.to_string());
        }
        let back = HllSketch::from_bytes(&sketch.to_bytes()).unwrap();
        assert_eq!(back.estimate(), sketch.estimate());
        assert!(HllSketch::from_bytes(b"nope").is_err());
    }

    #[test]
    fn estimate_at_one_million_is_within_three_standard_errors() {
        for lg_k in [10u8, 12, 14] {
            let mut sketch = HllSketch::new(lg_k);
            let mut buf = String::new();
            for i in 0..1_000_000u32 {
                use std::fmt::Write;
                buf.clear();
                let _ = write!(buf, "user-{i}");
                sketch.update_str(&buf);
            }
            let error = (sketch.canonical().estimate() - 1e6).abs() / 1e6;
            let bound = 3.0 * HllSketch::relative_standard_error(lg_k);
            assert!(
                error <= bound,
                "lg_k {lg_k}: relative error {error:.4} > {bound:.4}"
            );
        }
    }
}
