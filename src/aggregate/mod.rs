//! Aggregate functions and their mergeable accumulators.

mod exact_sum;
mod hll;
mod theta;

pub use exact_sum::{ExactSum, SUM_SCALE};
pub use hll::{Coupon, HllSketch};
pub use theta::{ThetaSketch, THETA_LG_K, THETA_SEED};

use crate::record::{DecodePlan, DecodedRecord, FieldRef, FieldValue};
use crate::topology::AggregateKind;
use base64::Engine;

/// One aggregate with its input field resolved against a source's decode plan.
#[derive(Clone, Debug)]
pub struct CompiledAggregate {
    pub name: String,
    pub kind: AggregateKind,
    pub field: Option<FieldRef>,
    /// The second factor of `sum(a * b)`.
    pub factor: Option<FieldRef>,
}

impl CompiledAggregate {
    pub fn compile(
        aggregates: &[(String, AggregateKind)],
        plan: &DecodePlan,
    ) -> Vec<CompiledAggregate> {
        aggregates
            .iter()
            .map(|(name, kind)| {
                let fields = kind.fields();
                CompiledAggregate {
                    name: name.clone(),
                    kind: kind.clone(),
                    field: fields.first().map(|f| plan.resolve(f)),
                    factor: fields.get(1).map(|f| plan.resolve(f)),
                }
            })
            .collect()
    }
}

/// The running state of one aggregate. Every variant merges associatively and commutatively.
#[derive(Clone, Debug, PartialEq)]
pub enum Accumulator {
    Count(u64),
    Sum(ExactSum),
    Min(Option<f64>),
    Max(Option<f64>),
    /// The HLL sketch, and the Theta sketch when the aggregate asks for one.
    Distinct(HllSketch, Option<Box<ThetaSketch>>),
}

/// The accumulators of one (group, window), in the aggregation's declared order.
#[derive(Clone, Debug, PartialEq)]
pub struct Accumulators(pub Vec<Accumulator>);

impl Accumulators {
    pub fn new(aggregates: &[CompiledAggregate]) -> Accumulators {
        Accumulators::empty(aggregates.iter().map(|a| &a.kind))
    }

    /// Identity accumulators for these kinds: merging into them gives the other side unchanged.
    pub fn empty<'k>(kinds: impl Iterator<Item = &'k AggregateKind>) -> Accumulators {
        Accumulators(
            kinds
                .map(|kind| match kind {
                    AggregateKind::Count => Accumulator::Count(0),
                    AggregateKind::Sum(_) | AggregateKind::SumProduct(..) => {
                        Accumulator::Sum(ExactSum::default())
                    }
                    AggregateKind::Min(_) => Accumulator::Min(None),
                    AggregateKind::Max(_) => Accumulator::Max(None),
                    AggregateKind::Distinct {
                        lg_k, theta_lg_k, ..
                    } => Accumulator::Distinct(
                        HllSketch::new(*lg_k),
                        theta_lg_k.map(|k| Box::new(ThetaSketch::new(k))),
                    ),
                })
                .collect(),
        )
    }

    /// Adds one row (`item` selects the exploded element, if any).
    #[inline]
    /// `coupons` holds, per aggregate, the precomputed hash of a `distinct` value (see
    /// [`Accumulators::coupons`]), so one row updates many windows' sketches with one hash.
    pub fn update(
        &mut self,
        aggregates: &[CompiledAggregate],
        record: &DecodedRecord<'_>,
        item: Option<usize>,
        coupons: &[Option<Coupon>],
    ) {
        for ((accumulator, aggregate), coupon) in self
            .0
            .iter_mut()
            .zip(aggregates)
            .zip(coupons.iter().chain(std::iter::repeat(&None)))
        {
            if let (Accumulator::Distinct(sketch, None), Some(coupon)) = (&mut *accumulator, coupon)
            {
                sketch.update_coupon(*coupon);
                continue;
            }
            let value = aggregate.field.and_then(|f| record.get(f, item));
            if let Some(factor) = aggregate.factor {
                if let (Accumulator::Sum(sum), Some(a), Some(b)) =
                    (&mut *accumulator, value, record.get(factor, item))
                {
                    match (a, b) {
                        (FieldValue::Int(a), FieldValue::Int(b)) => {
                            sum.add_int(a.saturating_mul(*b))
                        }
                        (a, b) => {
                            if let (Some(a), Some(b)) = (a.as_f64(), b.as_f64()) {
                                sum.add_float(a * b);
                            }
                        }
                    }
                }
                continue;
            }
            match (accumulator, value) {
                (Accumulator::Count(n), _) => *n += 1,
                (Accumulator::Sum(sum), Some(FieldValue::Int(i))) => sum.add_int(*i),
                (Accumulator::Sum(sum), Some(FieldValue::Float(f))) => sum.add_float(*f),
                (Accumulator::Min(min), Some(v)) => {
                    if let Some(x) = v.as_f64() {
                        *min = Some(min.map_or(x, |m| m.min(x)));
                    }
                }
                (Accumulator::Max(max), Some(v)) => {
                    if let Some(x) = v.as_f64() {
                        *max = Some(max.map_or(x, |m| m.max(x)));
                    }
                }
                (Accumulator::Distinct(sketch, theta), Some(v)) => {
                    let mut add = |text: &str| {
                        match coupon {
                            Some(coupon) => sketch.update_coupon(*coupon),
                            None => sketch.update_str(text),
                        }
                        if let Some(theta) = theta {
                            theta.update_str(text);
                        }
                    };
                    match v {
                        FieldValue::Str(s) => add(s),
                        FieldValue::Int(i) => add(itoa::Buffer::new().format(*i)),
                        FieldValue::Float(f) => add(&f.to_string()),
                        FieldValue::Bool(b) => add(if *b { "true" } else { "false" }),
                        FieldValue::Null => {}
                    }
                }
                _ => {}
            }
        }
    }

    /// The HLL coupon of each `distinct` aggregate's value in one row (`None` elsewhere).
    pub fn coupons(
        aggregates: &[CompiledAggregate],
        record: &DecodedRecord<'_>,
        item: Option<usize>,
        out: &mut Vec<Option<Coupon>>,
    ) {
        out.clear();
        for aggregate in aggregates {
            let coupon = match (
                &aggregate.kind,
                aggregate.field.and_then(|f| record.get(f, item)),
            ) {
                (AggregateKind::Distinct { .. }, Some(value)) => match value {
                    FieldValue::Str(s) => Some(HllSketch::coupon_of(s)),
                    FieldValue::Int(i) => {
                        Some(HllSketch::coupon_of(itoa::Buffer::new().format(*i)))
                    }
                    FieldValue::Float(f) => Some(HllSketch::coupon_of(&f.to_string())),
                    FieldValue::Bool(b) => {
                        Some(HllSketch::coupon_of(if *b { "true" } else { "false" }))
                    }
                    FieldValue::Null => None,
                },
                _ => None,
            };
            out.push(coupon);
        }
    }

    pub fn merge(&mut self, other: &Accumulators) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            match (mine, theirs) {
                (Accumulator::Count(a), Accumulator::Count(b)) => *a += b,
                (Accumulator::Sum(a), Accumulator::Sum(b)) => a.merge(b),
                (Accumulator::Min(a), Accumulator::Min(b)) => *a = merge_option(*a, *b, f64::min),
                (Accumulator::Max(a), Accumulator::Max(b)) => *a = merge_option(*a, *b, f64::max),
                (Accumulator::Distinct(a, a_theta), Accumulator::Distinct(b, b_theta)) => {
                    a.merge(b);
                    // Only accumulators read back from output records may lack the Theta
                    // sketch (the query API leaves it out); a merge keeps whichever is there.
                    match (a_theta, b_theta) {
                        (Some(a), Some(b)) => a.merge(b),
                        (mine @ None, Some(b)) => *mine = Some(b.clone()),
                        (_, None) => {}
                    }
                }
                (mine, theirs) => {
                    debug_assert!(false, "accumulator shapes differ: {mine:?} vs {theirs:?}")
                }
            }
        }
    }

    /// Rough in-memory size, for the state cache's budget.
    pub fn approximate_bytes(&self) -> usize {
        self.0
            .iter()
            .map(|a| match a {
                Accumulator::Distinct(s, theta) => {
                    64 + (1usize << s.lg_k()).min(s.to_bytes().len().max(64))
                        + theta.as_ref().map_or(0, |t| t.approximate_bytes())
                }
                _ => 24,
            })
            .sum()
    }

    /// `values` of an output record: numbers, with unique counts rounded to integers.
    pub fn values_json(
        &self,
        aggregates: &[CompiledAggregate],
    ) -> serde_json::Map<String, serde_json::Value> {
        self.values_json_named(aggregates.iter().map(|a| a.name.as_str()))
    }

    /// `sketches` of an output record: base64 of each distinct aggregate's canonical HLL sketch.
    pub fn sketches_json(
        &self,
        aggregates: &[CompiledAggregate],
    ) -> serde_json::Map<String, serde_json::Value> {
        self.sketches_json_named(aggregates.iter().map(|a| a.name.as_str()))
    }

    /// Reads back the accumulators an output record carries (`values`, `sketches` and
    /// `theta_sketches`): the inverse of [`Accumulators::values_json`],
    /// [`Accumulators::sketches_json`] and [`Accumulators::theta_sketches_json_named`], exact for
    /// counts, sums (to six decimals), min, max and sketches. A Theta sketch missing from
    /// `theta_sketches` is left out (`None`), not an error: records written before an aggregate
    /// asked for one, and readers that do not keep them, pass an empty map.
    pub fn from_output(
        aggregates: &[(String, AggregateKind)],
        values: &serde_json::Map<String, serde_json::Value>,
        sketches: &serde_json::Map<String, serde_json::Value>,
        theta_sketches: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Accumulators, String> {
        let number = |name: &str| -> Result<Option<f64>, String> {
            match values.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| format!("value `{name}` = {v} is not a number")),
            }
        };
        aggregates
            .iter()
            .map(|(name, kind)| {
                Ok(match kind {
                    AggregateKind::Count => Accumulator::Count(
                        values
                            .get(name)
                            .and_then(|v| v.as_u64())
                            .ok_or_else(|| format!("count `{name}` is missing"))?,
                    ),
                    AggregateKind::Sum(_) | AggregateKind::SumProduct(..) => {
                        let mut sum = ExactSum::default();
                        match values.get(name) {
                            Some(serde_json::Value::Number(n)) if n.is_i64() => {
                                sum.add_int(n.as_i64().unwrap_or(0))
                            }
                            _ => sum.add_float(number(name)?.unwrap_or(0.0)),
                        }
                        Accumulator::Sum(sum)
                    }
                    AggregateKind::Min(_) => Accumulator::Min(number(name)?),
                    AggregateKind::Max(_) => Accumulator::Max(number(name)?),
                    AggregateKind::Distinct { theta_lg_k, .. } => {
                        let hll = HllSketch::from_bytes(&base64_of(sketches, name, "sketch")?)?;
                        let theta = match theta_lg_k {
                            Some(k) if theta_sketches.contains_key(name) => {
                                Some(Box::new(ThetaSketch::from_bytes(
                                    &base64_of(theta_sketches, name, "theta sketch")?,
                                    *k,
                                )?))
                            }
                            _ => None,
                        };
                        Accumulator::Distinct(hll, theta)
                    }
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Accumulators)
    }

    /// `values` keyed by the given aggregate names, in order.
    pub fn values_json_named<'n>(
        &self,
        names: impl Iterator<Item = &'n str>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut values = serde_json::Map::new();
        for (accumulator, name) in self.0.iter().zip(names) {
            let value = match accumulator {
                Accumulator::Count(n) => serde_json::Value::from(*n),
                Accumulator::Sum(sum) => sum.to_json(),
                Accumulator::Min(v) | Accumulator::Max(v) => {
                    v.map_or(serde_json::Value::Null, serde_json::Value::from)
                }
                Accumulator::Distinct(sketch, _) => {
                    serde_json::Value::from(sketch.canonical().estimate().round() as u64)
                }
            };
            values.insert(name.to_string(), value);
        }
        values
    }

    /// `sketches` keyed by the given aggregate names: base64 of each canonical HLL sketch.
    pub fn sketches_json_named<'n>(
        &self,
        names: impl Iterator<Item = &'n str>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut sketches = serde_json::Map::new();
        for (accumulator, name) in self.0.iter().zip(names) {
            if let Accumulator::Distinct(sketch, _) = accumulator {
                let bytes = sketch.canonical().to_bytes();
                sketches.insert(
                    name.to_string(),
                    base64::engine::general_purpose::STANDARD
                        .encode(bytes)
                        .into(),
                );
            }
        }
        sketches
    }

    /// `theta_sketches` keyed by the given aggregate names: base64 of the compact, ordered Theta
    /// sketch of each distinct aggregate that keeps one (the bytes of a ClickHouse `uniqTheta`
    /// state after its length).
    pub fn theta_sketches_json_named<'n>(
        &self,
        names: impl Iterator<Item = &'n str>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut sketches = serde_json::Map::new();
        for (accumulator, name) in self.0.iter().zip(names) {
            if let Accumulator::Distinct(_, Some(theta)) = accumulator {
                sketches.insert(
                    name.to_string(),
                    base64::engine::general_purpose::STANDARD
                        .encode(theta.to_bytes())
                        .into(),
                );
            }
        }
        sketches
    }
}

/// The base64 bytes under `name` in an output record's `sketches` or `theta_sketches`.
fn base64_of(
    sketches: &serde_json::Map<String, serde_json::Value>,
    name: &str,
    what: &str,
) -> Result<Vec<u8>, String> {
    let text = sketches
        .get(name)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("{what} `{name}` is missing"))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("{what} `{name}` is not base64: {e}"))
}

fn merge_option(a: Option<f64>, b: Option<f64>, pick: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, b) => a.or(b),
    }
}
