//! The query side's materialized view: the latest committed value of every (aggregation, group,
//! window) read from the output topics, with hourly and daily rollups for long ranges.
//!
//! Rollups hold the merge of every window that lies inside one UTC hour or day. They exist only
//! for tumbling windows whose size divides the hour. A new window merges into them as it arrives;
//! a replaced or removed one drops them until the next query recomputes them, so a 30-day range
//! merges about 30 days, 46 hours and 118 windows instead of 43,200 windows.
//!
//! Memory is bounded by [`IndexCapacity`]: past it, an aggregation evicts its oldest windows
//! (by start, every group's window of that start at once) and answers say which range is still
//! held (`retained_from`); a range reaching before it is not `complete`.

use crate::aggregate::Accumulators;
use crate::task::AggregateRecord;
use crate::topology::{AggregateKind, Aggregation, Topology, WindowSpec};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// How many windows the index holds per aggregation (over all its groups) before it evicts the
/// oldest. A count rather than an event-time span, because it bounds memory whatever the number
/// of groups: a window costs about 100 bytes with counts and sums, up to about 4 KiB with a
/// `distinct` sketch of lg_k 12.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexCapacity {
    pub windows_per_aggregation: usize,
}

impl Default for IndexCapacity {
    /// 500,000 windows: 30 days of minute windows for 11 groups.
    fn default() -> IndexCapacity {
        IndexCapacity {
            windows_per_aggregation: 500_000,
        }
    }
}

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

impl GroupSeries {
    /// Stores `window` at `start`, merging it into the rollups when `rollups` gives the
    /// aggregates; returns whether it replaced a window.
    fn put(
        &mut self,
        start: i64,
        window: StoredWindow,
        rollups: Option<&[(String, AggregateKind)]>,
    ) -> bool {
        let replaced = self.windows.insert(start, window).is_some();
        if let Some(kinds) = rollups {
            let window = &self.windows[&start].accumulators;
            for (rollups, period) in [(&mut self.hours, HOUR_MS), (&mut self.days, DAY_MS)] {
                let slot = rollups
                    .entry(start.div_euclid(period) * period)
                    .or_insert(Some((empty_like(kinds), 0)));
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
        replaced
    }

    /// Removes the window at `start` and invalidates the rollups it was merged into.
    fn remove(&mut self, start: i64) {
        if self.windows.remove(&start).is_none() {
            return;
        }
        for (rollups, period) in [(&mut self.hours, HOUR_MS), (&mut self.days, DAY_MS)] {
            let at = start.div_euclid(period) * period;
            if self.windows.range(at..at + period).next().is_some() {
                rollups.insert(at, None);
            } else {
                rollups.remove(&at);
            }
        }
    }
}

/// Everything indexed for one aggregation.
#[derive(Debug)]
pub struct AggregationSeries {
    pub aggregation: Aggregation,
    groups: BTreeMap<Arc<str>, GroupSeries>,
    /// Every held window as (start, group key): eviction takes the first.
    starts: BTreeSet<(i64, Arc<str>)>,
    /// Output partition -> the end of the latest final window read from it (`i64::MIN`: records
    /// of this aggregation came from it, none final yet).
    final_ends: BTreeMap<i32, i64>,
    /// The latest start evicted: no window starting at or before it is held any more.
    evicted_through: Option<i64>,
    capacity: usize,
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

/// How the reader of the output topics is doing: answers carry it, so a caller can tell an index
/// that is behind, or that skipped records, from one that is up to date.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadHealth {
    /// The last read failed (e.g. the brokers are unreachable) and none has succeeded since:
    /// answers may be stale.
    pub degraded: Option<String>,
    pub read_errors: u64,
    /// Records skipped because they are not eddy aggregates (`rejected` counts those whose
    /// values do not fit their aggregation): what they held is missing from answers.
    pub undecodable: u64,
}

/// The materialized outputs of every aggregation in a topology.
#[derive(Debug, Default)]
pub struct AggregateIndex {
    series: BTreeMap<String, AggregationSeries>,
    pub records: u64,
    pub rejected: u64,
    pub health: ReadHealth,
}

impl AggregateIndex {
    pub fn new(topology: &Topology) -> AggregateIndex {
        AggregateIndex::with_capacity(topology, IndexCapacity::default())
    }

    pub fn with_capacity(topology: &Topology, capacity: IndexCapacity) -> AggregateIndex {
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
                            starts: BTreeSet::new(),
                            final_ends: BTreeMap::new(),
                            evicted_through: None,
                            capacity: capacity.windows_per_aggregation.max(1),
                            rollups,
                        },
                    )
                })
                .collect(),
            records: 0,
            rejected: 0,
            health: ReadHealth::default(),
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

    /// [`AggregateIndex::insert_from_partition`] for a record of partition 0: for
    /// single-partition outputs (tests, the benchmark).
    pub fn insert(&mut self, record: &AggregateRecord) -> Result<(), String> {
        self.insert_from_partition(0, record)
    }

    /// Adds one committed output record read from `partition` of its aggregation's output topic;
    /// a later value of the same window replaces it. Records of aggregations this topology does
    /// not have are ignored.
    pub fn insert_from_partition(
        &mut self,
        partition: i32,
        record: &AggregateRecord,
    ) -> Result<(), String> {
        let Some(series) = self.series.get_mut(&record.aggregation) else {
            return Ok(());
        };
        let accumulators = match Accumulators::from_output(
            &series.aggregation.aggregates,
            &record.values,
            &record.sketches,
            // Unique counts are answered from the HLL sketches; the Theta ones (up to 32 KB per
            // window) are left to ClickHouse.
            &serde_json::Map::new(),
        ) {
            Ok(a) => a,
            Err(e) => {
                self.rejected += 1;
                return Err(format!("{}: {e}", record.aggregation));
            }
        };
        self.records += 1;
        let end = series.final_ends.entry(partition).or_insert(i64::MIN);
        if record.is_final {
            *end = (*end).max(record.window.end);
        }
        series.put(record, accumulators);
        Ok(())
    }
}

impl AggregationSeries {
    /// The end of the latest window every output partition carrying this aggregation has made
    /// final: the slowest partition's, since one partition can be far ahead while others catch
    /// up. Partitions that never carried a record of it are left out (an aggregation with few
    /// groups writes to few partitions); `None` while one that did has no final window yet, or
    /// none did.
    pub fn closed_until(&self) -> Option<i64> {
        let slowest = self.final_ends.values().copied().min()?;
        (slowest > i64::MIN).then_some(slowest)
    }

    /// Every window starting at or after this is held; `None` while nothing was evicted.
    pub fn retained_from(&self) -> Option<i64> {
        let step = match self.aggregation.window {
            WindowSpec::Tumbling { size_ms } => size_ms,
            WindowSpec::Hopping { advance_ms, .. } => advance_ms,
            WindowSpec::Session { .. } => 1,
        };
        self.evicted_through.map(|e| e + step)
    }

    /// Whether every window of `covered` is final and still held.
    pub fn is_complete(&self, covered: Covered) -> bool {
        self.closed_until().is_some_and(|c| c >= covered.to)
            && self.retained_from().is_none_or(|r| covered.from >= r)
    }

    /// Windows held, over all groups.
    pub fn windows(&self) -> usize {
        self.starts.len()
    }

    fn put(&mut self, record: &AggregateRecord, accumulators: Accumulators) {
        let (start, end) = (record.window.start, record.window.end);
        if self.evicted_through.is_some_and(|e| start <= e) {
            // Older than what is held: `retained_from` tells queries so.
            return;
        }
        let key: Arc<str> = serde_json::Value::Object(record.group.clone())
            .to_string()
            .into();
        if !self.groups.contains_key(&key) {
            let series = GroupSeries {
                group: record.group.clone(),
                ..GroupSeries::default()
            };
            self.groups.insert(key.clone(), series);
        }
        let group = self.groups.get_mut(&key).expect("inserted above");
        if matches!(self.aggregation.window, WindowSpec::Session { .. }) {
            // A group's sessions never overlap and only grow, so a held session covering this one
            // is a later version of it, read first from another partition.
            let superseded = group
                .windows
                .range(..=start)
                .next_back()
                .is_some_and(|(&s, w)| w.end >= end && (s, w.end) != (start, end));
            if superseded {
                return;
            }
            // Without retractions, an update that merged sessions is the only sign that the
            // sessions it covers are gone.
            let merged: Vec<i64> = group
                .windows
                .range(start..=end)
                .filter(|(&s, w)| s != start && w.end <= end)
                .map(|(&s, _)| s)
                .collect();
            for s in merged {
                group.remove(s);
                self.starts.remove(&(s, key.clone()));
            }
        }
        let window = StoredWindow { end, accumulators };
        let kinds = self.rollups.then_some(&self.aggregation.aggregates[..]);
        if !group.put(start, window, kinds) {
            self.starts.insert((start, key));
        }
        self.evict();
    }

    /// Evicts the oldest starts until the capacity holds. A start goes whole (every group's window
    /// of it), so that `retained_from` is exact.
    fn evict(&mut self) {
        while self.starts.len() > self.capacity {
            let Some(&(oldest, _)) = self.starts.first() else {
                return;
            };
            while self.starts.first().is_some_and(|(s, _)| *s == oldest) {
                let (start, key) = self.starts.pop_first().expect("checked");
                if let Some(group) = self.groups.get_mut(&key) {
                    group.remove(start);
                    if group.windows.is_empty() {
                        self.groups.remove(&key);
                    }
                }
            }
            self.evicted_through = Some(self.evicted_through.map_or(oldest, |e| e.max(oldest)));
        }
    }

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
                            theta_lg_k: None,
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
        let accumulators = Accumulators(vec![
            Accumulator::Count(n),
            Accumulator::Distinct(sketch, None),
        ]);
        AggregateRecord {
            aggregation: "per_minute".into(),
            window: WindowBounds {
                start,
                end: start + 60_000,
            },
            group: serde_json::json!({ "t": t }).as_object().unwrap().clone(),
            values: accumulators.values_json_named(["n", "u"].into_iter()),
            sketches: accumulators.sketches_json_named(["n", "u"].into_iter()),
            theta_sketches: serde_json::Map::new(),
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

    fn sessions() -> AggregateIndex {
        let topology = Topology::builder()
            .source(SourceBuilder::new("a", "a", Schema::Json).build())
            .aggregation(
                AggregationBuilder::new("visits", "a", "out")
                    .session(30_000)
                    .emit(EmitMode::Update)
                    .group_by("user")
                    .aggregate("n", AggregateKind::Count)
                    .build(),
            )
            .build()
            .unwrap();
        AggregateIndex::new(&topology)
    }

    /// A session update as the operator writes it: `end` is the last event's time.
    fn session(user: &str, start: i64, end: i64, n: u64) -> AggregateRecord {
        AggregateRecord {
            aggregation: "visits".into(),
            window: WindowBounds { start, end },
            group: serde_json::json!({ "user": user })
                .as_object()
                .unwrap()
                .clone(),
            values: serde_json::json!({ "n": n }).as_object().unwrap().clone(),
            sketches: serde_json::Map::new(),
            theta_sketches: serde_json::Map::new(),
            is_final: false,
        }
    }

    /// (count, windows) of every group over a range.
    fn count(index: &mut AggregateIndex, name: &str, from: i64, to: i64) -> (u64, u64) {
        let answers = index
            .aggregation_mut(name)
            .unwrap()
            .query(from, to, &|_| true);
        let n = answers
            .iter()
            .map(|a| match a.accumulators.0[0] {
                Accumulator::Count(n) => n,
                _ => 0,
            })
            .sum();
        (n, answers.iter().map(|a| a.windows).sum())
    }

    #[test]
    fn a_session_update_that_merges_sessions_replaces_them() {
        let mut index = sessions();
        index.insert(&session("u1", 0, 10_000, 2)).unwrap();
        index.insert(&session("u1", 35_000, 50_000, 3)).unwrap();
        index.insert(&session("u2", 20_000, 25_000, 1)).unwrap();
        assert_eq!(count(&mut index, "visits", 0, 100_000), (6, 3));
        // An event at 22 s joins u1's two sessions; u2's session is another group's.
        index.insert(&session("u1", 0, 50_000, 6)).unwrap();
        assert_eq!(count(&mut index, "visits", 0, 100_000), (7, 2));
        // Extended at its start: the new start replaces the old one.
        index.insert(&session("u2", 5_000, 25_000, 2)).unwrap();
        assert_eq!(count(&mut index, "visits", 0, 100_000), (8, 2));
        assert_eq!(index.aggregation("visits").unwrap().windows(), 2);
    }

    /// Updates of one session have different keys, so they can land on different output
    /// partitions and be read out of order.
    #[test]
    fn a_session_read_after_the_session_that_merged_it_is_dropped() {
        let mut index = sessions();
        index.insert(&session("u1", 0, 50_000, 6)).unwrap();
        index.insert(&session("u1", 35_000, 50_000, 3)).unwrap();
        index.insert(&session("u1", 0, 10_000, 2)).unwrap();
        assert_eq!(count(&mut index, "visits", 0, 100_000), (6, 1));
    }

    #[test]
    fn the_index_holds_at_most_its_capacity_and_evicts_the_oldest_starts() {
        let capacity = IndexCapacity {
            windows_per_aggregation: 100,
        };
        let mut index = AggregateIndex::with_capacity(&topology(), capacity);
        for m in 0..3 * 24 * 60 {
            for t in ["a", "b"] {
                index.insert(&record(m * 60_000, t, 1, 0..1)).unwrap();
            }
        }
        let series = index.aggregation("per_minute").unwrap();
        assert_eq!(series.windows(), 100);
        // Whole starts go: the 50 newest minutes of both groups are held.
        let held_from = (3 * 24 * 60 - 50) * 60_000;
        assert_eq!(series.retained_from(), Some(held_from));
        let end = 3 * DAY_MS;
        assert_eq!(count(&mut index, "per_minute", 0, end), (100, 100));
        // Hourly and daily rollups forgot the evicted windows.
        assert_eq!(count(&mut index, "per_minute", 2 * DAY_MS, end), (100, 100));
        // A window older than what is held does not come back.
        index.insert(&record(0, "a", 1, 0..1)).unwrap();
        assert_eq!(count(&mut index, "per_minute", 0, end), (100, 100));
    }
}
