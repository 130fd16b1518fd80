//! The query side's materialized view: the latest committed value of every (aggregation, group,
//! window) read from the output topics, with hourly and daily rollups for long ranges.
//!
//! Rollups hold the merge of every window that lies inside one UTC hour or day. They exist only
//! for tumbling windows whose size divides the hour. A new window merges into them as it arrives;
//! a replaced one (updates, `emit = "update"`) drops them until the next query recomputes them, so a 30-day range merges about 30 days, 46 hours and 118 windows
//! instead of 43,200 windows.

use crate::aggregate::Accumulators;
use crate::task::AggregateRecord;
use crate::topology::{AggregateKind, Aggregation, Topology, WindowSpec};
use std::collections::{BTreeMap, HashMap};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// One stored window.
#[derive(Clone, Debug)]
struct StoredWindow {
    end: i64,
    accumulators: Accumulators,
}

/// The windows of one group of one aggregation.
#[derive(Debug, Default)]
struct GroupSeries {
    group: serde_json::Map<String, serde_json::Value>,
    windows: BTreeMap<i64, StoredWindow>,
    /// Rollup start -> merged windows; `None` until computed.
    hours: HashMap<i64, Option<(Accumulators, u64)>>,
    days: HashMap<i64, Option<(Accumulators, u64)>>,
}

/// Everything indexed for one aggregation.
#[derive(Debug)]
pub struct AggregationSeries {
    pub aggregation: Aggregation,
    groups: BTreeMap<String, GroupSeries>,
    /// The end of the latest final window: every window ending at or before it is closed.
    pub closed_until: Option<i64>,
    rollups: bool,
}

/// What a range query merged, for one group.
#[derive(Clone, Debug)]
pub struct GroupAnswer {
    pub group: serde_json::Map<String, serde_json::Value>,
    pub accumulators: Accumulators,
    pub windows: u64,
}

/// The part of a requested range that whole windows cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Covered {
    pub from: i64,
    pub to: i64,
}

/// The materialized outputs of every aggregation in a topology.
#[derive(Debug, Default)]
pub struct AggregateIndex {
    series: BTreeMap<String, AggregationSeries>,
    pub records: u64,
    pub rejected: u64,
}

impl AggregateIndex {
    pub fn new(topology: &Topology) -> AggregateIndex {
        AggregateIndex {
            series: topology
                .aggregations
                .iter()
                .map(|a| {
                    let rollups = match a.window {
                        WindowSpec::Tumbling { size_ms } => HOUR_MS % size_ms == 0,
                        _ => false,
                    };
                    (
                        a.name.clone(),
                        AggregationSeries {
                            aggregation: a.clone(),
                            groups: BTreeMap::new(),
                            closed_until: None,
                            rollups,
                        },
                    )
                })
                .collect(),
            records: 0,
            rejected: 0,
        }
    }

    pub fn aggregation(&self, name: &str) -> Option<&AggregationSeries> {
        self.series.get(name)
    }

    pub fn aggregation_mut(&mut self, name: &str) -> Option<&mut AggregationSeries> {
        self.series.get_mut(name)
    }

    pub fn aggregation_names(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }

    /// Adds one committed output record; a later value of the same window replaces it. Records
    /// of aggregations this topology does not have are ignored.
    pub fn insert(&mut self, record: &AggregateRecord) -> Result<(), String> {
        let Some(series) = self.series.get_mut(&record.aggregation) else {
            return Ok(());
        };
        let accumulators = match Accumulators::from_output(
            &series.aggregation.aggregates,
            &record.values,
            &record.sketches,
        ) {
            Ok(a) => a,
            Err(e) => {
                self.rejected += 1;
                return Err(format!("{}: {e}", record.aggregation));
            }
        };
        self.records += 1;
        if record.is_final {
            series.closed_until = Some(
                series
                    .closed_until
                    .map_or(record.window.end, |c| c.max(record.window.end)),
            );
        }
        let key = serde_json::Value::Object(record.group.clone()).to_string();
        let group = series.groups.entry(key).or_insert_with(|| GroupSeries {
            group: record.group.clone(),
            ..GroupSeries::default()
        });
        let start = record.window.start;
        let replaced = group
            .windows
            .insert(
                start,
                StoredWindow {
                    end: record.window.end,
                    accumulators,
                },
            )
            .is_some();
        if series.rollups {
            let window = &group.windows[&start].accumulators;
            for (rollups, period) in [(&mut group.hours, HOUR_MS), (&mut group.days, DAY_MS)] {
                let slot = rollups
                    .entry(start.div_euclid(period) * period)
                    .or_insert(Some((empty_like(&series.aggregation.aggregates), 0)));
                match slot {
                    // A replaced window cannot be taken out of a merge: recompute on next use.
                    _ if replaced => *slot = None,
                    Some((merged, count)) => {
                        merged.merge(window);
                        *count += 1;
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }
}

impl AggregationSeries {
    /// The range whole windows cover inside `[from, to)`: for tumbling and hopping windows the
    /// window boundaries at or after `from` and at or before `to`; for sessions the range itself.
    pub fn covered(&self, from: i64, to: i64) -> Covered {
        let (size, step) = match self.aggregation.window {
            WindowSpec::Tumbling { size_ms } => (size_ms, size_ms),
            WindowSpec::Hopping {
                size_ms,
                advance_ms,
            } => (size_ms, advance_ms),
            WindowSpec::Session { .. } => return Covered { from, to },
        };
        let first =
            from.div_euclid(step) * step + if from.rem_euclid(step) == 0 { 0 } else { step };
        let last_start = (to - size).div_euclid(step) * step;
        if last_start < first {
            return Covered {
                from: first,
                to: first,
            };
        }
        Covered {
            from: first,
            to: last_start + size,
        }
    }

    /// Whether additive aggregates (count, sum) can be merged across windows: not for hopping
    /// windows, which overlap and would count one event several times.
    pub fn additive_merge_allowed(&self) -> bool {
        !matches!(self.aggregation.window, WindowSpec::Hopping { .. })
    }

    /// Merges, per group passing `filter`, every window lying inside `[from, to)`.
    pub fn query(
        &mut self,
        from: i64,
        to: i64,
        filter: &dyn Fn(&serde_json::Map<String, serde_json::Value>) -> bool,
    ) -> Vec<GroupAnswer> {
        let kinds = &self.aggregation.aggregates;
        let rollups = self.rollups;
        let mut answers = Vec::new();
        for group in self.groups.values_mut() {
            if !filter(&group.group) {
                continue;
            }
            let mut merged = empty_like(kinds);
            let mut windows = 0;
            let mut cursor = from;
            while cursor < to {
                if rollups {
                    if let Some(next) =
                        merge_rollup(group, cursor, to, DAY_MS, &mut merged, &mut windows)
                    {
                        cursor = next;
                        continue;
                    }
                    if let Some(next) =
                        merge_rollup(group, cursor, to, HOUR_MS, &mut merged, &mut windows)
                    {
                        cursor = next;
                        continue;
                    }
                }
                // Plain windows up to the next hour boundary (or the end).
                let limit = if rollups {
                    ((cursor.div_euclid(HOUR_MS) + 1) * HOUR_MS).min(to)
                } else {
                    to
                };
                for (_, window) in group.windows.range(cursor..limit) {
                    if window.end <= to {
                        merged.merge(&window.accumulators);
                        windows += 1;
                    }
                }
                cursor = limit;
            }
            if windows > 0 {
                answers.push(GroupAnswer {
                    group: group.group.clone(),
                    accumulators: merged,
                    windows,
                });
            }
        }
        answers
    }
}

/// Merges the rollup of `[cursor, cursor + period)` when it is aligned and inside the range.
fn merge_rollup(
    group: &mut GroupSeries,
    cursor: i64,
    to: i64,
    period: i64,
    merged: &mut Accumulators,
    windows: &mut u64,
) -> Option<i64> {
    if cursor.rem_euclid(period) != 0 || cursor + period > to {
        return None;
    }
    let rollups = if period == DAY_MS {
        &mut group.days
    } else {
        &mut group.hours
    };
    // No entry: no window in this period.
    let slot = match rollups.get_mut(&cursor) {
        None => return Some(cursor + period),
        Some(slot) => slot,
    };
    if slot.is_none() {
        let mut sum: Option<Accumulators> = None;
        let mut count = 0u64;
        for (_, window) in group.windows.range(cursor..cursor + period) {
            match &mut sum {
                None => sum = Some(window.accumulators.clone()),
                Some(s) => s.merge(&window.accumulators),
            }
            count += 1;
        }
        *slot = sum.map(|s| (s, count));
    }
    if let Some((rollup, count)) = slot {
        merged.merge(rollup);
        *windows += *count;
    }
    Some(cursor + period)
}

/// Identity accumulators for an aggregation's named aggregates.
pub fn empty_like(kinds: &[(String, AggregateKind)]) -> Accumulators {
    Accumulators::empty(kinds.iter().map(|(_, kind)| kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Accumulator, HllSketch};
    use crate::task::WindowBounds;
    use crate::topology::*;

    fn topology() -> Topology {
        Topology::builder()
            .source(SourceBuilder::new("a", "a", Schema::Json).build())
            .aggregation(
                AggregationBuilder::new("per_minute", "a", "out")
                    .group_by("t")
                    .aggregate("n", AggregateKind::Count)
                    .aggregate(
                        "u",
                        AggregateKind::Distinct {
                            field: "user".into(),
                            lg_k: 12,
                        },
                    )
                    .build(),
            )
            .build()
            .unwrap()
    }

    fn record(start: i64, t: &str, n: u64, users: std::ops::Range<u32>) -> AggregateRecord {
        let mut sketch = HllSketch::new(12);
        for u in users {
            sketch.update_str(&format!("u{u}"));
        }
        let accumulators = Accumulators(vec![Accumulator::Count(n), Accumulator::Distinct(sketch)]);
        AggregateRecord {
            aggregation: "per_minute".into(),
            window: WindowBounds {
                start,
                end: start + 60_000,
            },
            group: serde_json::json!({ "t": t }).as_object().unwrap().clone(),
            values: accumulators.values_json_named(["n", "u"].into_iter()),
            sketches: accumulators.sketches_json_named(["n", "u"].into_iter()),
            is_final: true,
        }
    }

    /// Rollups give the same answer as merging every window, for ranges of every alignment.
    #[test]
    fn rollups_agree_with_plain_merges_and_follow_replacements() {
        let mut index = AggregateIndex::new(&topology());
        let minutes = 3 * 24 * 60;
        for m in 0..minutes {
            let t = if m % 3 == 0 { "a" } else { "b" };
            index
                .insert(&record(
                    m * 60_000,
                    t,
                    (m % 7) as u64 + 1,
                    0..(m as u32 % 50),
                ))
                .unwrap();
        }
        let total = |index: &mut AggregateIndex, from: i64, to: i64| -> (u64, u64) {
            let series = index.series.get_mut("per_minute").unwrap();
            let answers = series.query(from, to, &|_| true);
            let count = answers
                .iter()
                .map(|a| match a.accumulators.0[0] {
                    Accumulator::Count(n) => n,
                    _ => 0,
                })
                .sum();
            (count, answers.iter().map(|a| a.windows).sum())
        };
        let naive = |from: i64, to: i64| -> (u64, u64) {
            let mut count = 0;
            let mut windows = 0;
            for m in 0..minutes {
                let (s, e) = (m * 60_000, m * 60_000 + 60_000);
                if s >= from && e <= to {
                    count += (m % 7) as u64 + 1;
                    windows += 1;
                }
            }
            (count, windows)
        };
        for (from, to) in [
            (0, minutes * 60_000),
            (90_000, 2 * DAY_MS + 7 * HOUR_MS + 30_000),
            (HOUR_MS - 60_000, DAY_MS + HOUR_MS + 60_000),
            (5_000, 65_000),
            (0, 59_999),
        ] {
            assert_eq!(total(&mut index, from, to), naive(from, to), "{from}..{to}");
            // Twice: the second answer comes from cached rollups.
            assert_eq!(total(&mut index, from, to), naive(from, to), "{from}..{to}");
        }
        // A replaced window invalidates its rollups.
        index.insert(&record(HOUR_MS, "a", 1000, 0..1)).unwrap();
        let (count, _) = total(&mut index, 0, DAY_MS);
        let (expected, _) = naive(0, DAY_MS);
        let old = (60 % 7) as u64 + 1;
        assert_eq!(count, expected - old + 1000);
    }

    #[test]
    fn covered_ranges_are_whole_windows_inside_the_request() {
        let index = AggregateIndex::new(&topology());
        let series = index.aggregation("per_minute").unwrap();
        assert_eq!(
            series.covered(30_000, 200_000),
            Covered {
                from: 60_000,
                to: 180_000
            }
        );
        assert_eq!(
            series.covered(0, 120_000),
            Covered {
                from: 0,
                to: 120_000
            }
        );
        let empty = series.covered(10_000, 50_000);
        assert_eq!(empty.from, empty.to);
    }
}
