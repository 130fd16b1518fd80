//! An independent reference for window aggregations (tumbling, hopping and session windows):
//! per-partition stream time, lateness, grouping, explode and every aggregate computed naively
//! from the raw JSON of each event. Sessions are built afterwards from each group's sorted event
//! times: an event within `gap` of the previous one joins its session, and a session is
//! emitted as `[first event, last event]` (Kafka Streams' session windows).
#![allow(dead_code)]

use eddy::aggregate::{ExactSum, HllSketch, ThetaSketch};
use eddy::task::AggregateRecord;
use eddy::topology::{AggregateKind, EventTime, TimeFormat, Topology, WindowSpec};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// One input record as produced: topic, partition, JSON value; `closing` records only move time.
#[derive(Clone, Debug)]
pub struct Produced {
    pub topic: String,
    pub partition: i32,
    pub key: String,
    pub value: Value,
    pub closing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    pub aggregation: String,
    pub start: i64,
    pub end: i64,
    pub group: String,
}

impl Identity {
    pub fn of(record: &AggregateRecord) -> Identity {
        Identity {
            aggregation: record.aggregation.clone(),
            start: record.window.start,
            end: record.window.end,
            group: Value::Object(record.group.clone()).to_string(),
        }
    }
}

#[derive(Clone, Debug)]
enum Acc {
    Count(u64),
    Sum(ExactSum),
    Max(Option<f64>),
    Min(Option<f64>),
    /// The HLL sketch, and the Theta one when the aggregate keeps it.
    Distinct(HllSketch, Option<ThetaSketch>),
}

#[derive(Clone, Debug)]
pub struct Expected {
    accs: Vec<(String, Acc)>,
}

/// The aggregation name under which `reference` lists the closing records' times.
const CLOSING: &str = "(closing record)";

/// Event time read independently of eddy's decoder: RFC 3339 through the `time` crate, epoch
/// numbers by their unit.
pub fn event_time(topology: &Topology, topic: &str, value: &Value) -> i64 {
    let source = topology.source_of_topic(topic).unwrap();
    let EventTime::Field { field, format } = &source.time else {
        panic!("reference needs event-time fields")
    };
    let v = &value[field];
    match format {
        TimeFormat::Rfc3339 => {
            let t = time::OffsetDateTime::parse(
                v.as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            (t.unix_timestamp_nanos().div_euclid(1_000_000)) as i64
        }
        TimeFormat::EpochSeconds => v.as_i64().unwrap() * 1000,
        TimeFormat::EpochMillis => v.as_i64().unwrap(),
        TimeFormat::EpochMicros => v.as_i64().unwrap().div_euclid(1000),
        TimeFormat::EpochNanos => v.as_i64().unwrap().div_euclid(1_000_000),
    }
}

fn field<'a>(row: &'a Value, item: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    match (item, name.split_once('.')) {
        (Some(item), Some((_, inner))) => item.get(inner),
        _ => row.get(name),
    }
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// One row a session aggregation kept: event time, the event, the exploded item if any.
type SessionRow<'a> = (i64, &'a Value, Option<&'a Value>);

/// Expected final aggregates of every fixed-window aggregation in `topology`.
pub fn reference(topology: &Topology, events: &[Produced]) -> BTreeMap<Identity, Expected> {
    let mut out = BTreeMap::new();
    for aggregation in &topology.aggregations {
        // Session aggregations: the rows kept (not late), per group, to be sessionized at the end.
        let mut session_rows: BTreeMap<String, Vec<SessionRow<'_>>> = BTreeMap::new();
        let source = topology.source(&aggregation.source).unwrap();
        // Stream time is per input partition: per (topic, partition) when a source reads several topics.
        let mut stream_time: HashMap<(&str, i32), i64> = HashMap::new();
        for event in events.iter().filter(|e| source.topics.contains(&e.topic)) {
            let ts = event_time(topology, &event.topic, &event.value);
            let st = stream_time
                .entry((event.topic.as_str(), event.partition))
                .or_insert(i64::MIN);
            *st = (*st).max(ts);
            if event.closing {
                continue;
            }
            let items: Vec<Option<&Value>> = match &aggregation.explode {
                Some(array) => event.value[array]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(Some)
                    .collect(),
                None => vec![None],
            };
            for item in items {
                if let Some(filter) = &aggregation.filter {
                    if !field(&event.value, item, &filter.field)
                        .is_some_and(|v| filter.values.contains(v))
                    {
                        continue;
                    }
                }
                let mut group = serde_json::Map::new();
                for name in &aggregation.group_by {
                    group.insert(
                        name.clone(),
                        field(&event.value, item, name)
                            .cloned()
                            .unwrap_or(Value::Null),
                    );
                }
                let group = Value::Object(group).to_string();
                if let WindowSpec::Session { .. } = aggregation.window {
                    // A session record's window is [t, t + 1): late once that closed.
                    if ts + 1 + aggregation.grace_ms > *st {
                        session_rows
                            .entry(group)
                            .or_default()
                            .push((ts, &event.value, item));
                    }
                    continue;
                }
                let mut windows = Vec::new();
                eddy::window::assign_windows(&aggregation.window, ts, |w| windows.push(w));
                for window in windows {
                    if window.end + aggregation.grace_ms <= *st {
                        continue;
                    }
                    let identity = Identity {
                        aggregation: aggregation.name.clone(),
                        start: window.start,
                        end: window.end,
                        group: group.clone(),
                    };
                    let expected = out
                        .entry(identity)
                        .or_insert_with(|| Expected::new(aggregation));
                    expected.add(aggregation, &event.value, item);
                }
            }
        }
        if let WindowSpec::Session { gap_ms } = aggregation.window {
            for (group, mut rows) in session_rows {
                rows.sort_by_key(|(t, _, _)| *t);
                // Sessions as (first event, last event, aggregates), split where the gap is exceeded.
                let mut sessions: Vec<(i64, i64, Expected)> = Vec::new();
                for (t, value, item) in rows {
                    match sessions.last_mut() {
                        Some((_, last, expected)) if t <= *last + gap_ms => {
                            *last = t;
                            expected.add(aggregation, value, item);
                        }
                        _ => {
                            let mut expected = Expected::new(aggregation);
                            expected.add(aggregation, value, item);
                            sessions.push((t, t, expected));
                        }
                    }
                }
                for (start, end, expected) in sessions {
                    let identity = Identity {
                        aggregation: aggregation.name.clone(),
                        start,
                        end,
                        group: group.clone(),
                    };
                    out.insert(identity, expected);
                }
            }
        }
    }
    // The closing records' times, for `verify`: windows they close are left out above, and
    // tolerated there.
    for event in events.iter().filter(|e| e.closing) {
        let ts = event_time(topology, &event.topic, &event.value);
        out.insert(
            Identity {
                aggregation: CLOSING.into(),
                start: ts,
                end: ts + 1,
                group: String::new(),
            },
            Expected { accs: Vec::new() },
        );
    }
    out
}

impl Expected {
    fn new(aggregation: &eddy::topology::Aggregation) -> Expected {
        Expected {
            accs: aggregation
                .aggregates
                .iter()
                .map(|(name, kind)| {
                    let acc = match kind {
                        AggregateKind::Count => Acc::Count(0),
                        AggregateKind::Sum(_) | AggregateKind::SumProduct(..) => {
                            Acc::Sum(ExactSum::default())
                        }
                        AggregateKind::Min(_) => Acc::Min(None),
                        AggregateKind::Max(_) => Acc::Max(None),
                        AggregateKind::Distinct {
                            lg_k, theta_lg_k, ..
                        } => Acc::Distinct(HllSketch::new(*lg_k), theta_lg_k.map(ThetaSketch::new)),
                    };
                    (name.clone(), acc)
                })
                .collect(),
        }
    }

    /// Adds one row (an event, or one item of an exploded event).
    fn add(
        &mut self,
        aggregation: &eddy::topology::Aggregation,
        value: &Value,
        item: Option<&Value>,
    ) {
        for ((_, acc), (_, kind)) in self.accs.iter_mut().zip(&aggregation.aggregates) {
            let get = |name: &str| field(value, item, name);
            match (acc, kind) {
                (Acc::Count(n), _) => *n += 1,
                (Acc::Sum(sum), AggregateKind::Sum(f)) => match get(f) {
                    Some(v) if v.is_i64() => sum.add_int(v.as_i64().unwrap()),
                    Some(v) if v.is_number() => sum.add_float(v.as_f64().unwrap()),
                    _ => {}
                },
                (Acc::Sum(sum), AggregateKind::SumProduct(a, b)) => match (get(a), get(b)) {
                    (Some(a), Some(b)) if a.is_i64() && b.is_i64() => {
                        sum.add_int(a.as_i64().unwrap() * b.as_i64().unwrap())
                    }
                    (Some(a), Some(b)) => sum.add_float(a.as_f64().unwrap() * b.as_f64().unwrap()),
                    _ => {}
                },
                (Acc::Max(m), AggregateKind::Max(f)) => {
                    if let Some(x) = get(f).and_then(Value::as_f64) {
                        *m = Some(m.map_or(x, |m| m.max(x)));
                    }
                }
                (Acc::Min(m), AggregateKind::Min(f)) => {
                    if let Some(x) = get(f).and_then(Value::as_f64) {
                        *m = Some(m.map_or(x, |m| m.min(x)));
                    }
                }
                (Acc::Distinct(s, theta), AggregateKind::Distinct { field: f, .. }) => {
                    if let Some(v) = get(f) {
                        s.update_str(&text(v));
                        if let Some(theta) = theta {
                            theta.update_str(&text(v));
                        }
                    }
                }
                _ => unreachable!(),
            }
        }
    }

    /// The expected count of aggregate `name`.
    pub fn count(&self, name: &str) -> Option<u64> {
        self.accs.iter().find_map(|(n, acc)| match acc {
            Acc::Count(c) if n == name => Some(*c),
            _ => None,
        })
    }

    /// The expected Theta sketch of distinct aggregate `name`, where it keeps one.
    pub fn theta(&self, name: &str) -> Option<&ThetaSketch> {
        self.accs.iter().find_map(|(n, acc)| match acc {
            Acc::Distinct(_, theta) if n == name => theta.as_ref(),
            _ => None,
        })
    }

    /// The expected exact sum of aggregate `name`, in millionths.
    pub fn sum_millionths(&self, name: &str) -> Option<i128> {
        self.accs.iter().find_map(|(n, acc)| match acc {
            Acc::Sum(s) if n == name => Some(s.millionths),
            _ => None,
        })
    }
}

/// Compares one emitted record with its expectation; returns a description of any difference.
pub fn compare(record: &AggregateRecord, expected: &Expected) -> Option<String> {
    use base64::Engine;
    for (name, acc) in &expected.accs {
        let got = &record.values[name];
        let ok = match acc {
            Acc::Count(n) => got.as_u64() == Some(*n),
            Acc::Sum(sum) => *got == sum.to_json(),
            Acc::Max(m) | Acc::Min(m) => got.as_f64() == *m,
            Acc::Distinct(sketch, theta) => {
                let bytes = |sketches: &serde_json::Map<String, Value>| {
                    base64::engine::general_purpose::STANDARD
                        .decode(
                            sketches
                                .get(name)
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        )
                        .unwrap_or_default()
                };
                let emitted = HllSketch::from_bytes(&bytes(&record.sketches));
                // The Theta sketch, where kept, must hold exactly the reference's entries.
                let theta_ok = match theta {
                    None => !record.theta_sketches.contains_key(name),
                    Some(theta) => {
                        ThetaSketch::from_bytes(&bytes(&record.theta_sketches), theta.lg_k())
                            .is_ok_and(|e| e == *theta)
                    }
                };
                got.as_u64() == Some(sketch.canonical().estimate().round() as u64)
                    && emitted.is_ok_and(|e| e == *sketch)
                    && theta_ok
            }
        };
        if !ok {
            return Some(format!(
                "{}: {name} = {got}, expected {acc:?}",
                Identity::of(record).aggregation
            ));
        }
    }
    None
}

/// Checks emitted records against the reference: every expected window exactly once, final, equal,
/// and no final window the reference does not expect (counted as a mismatch).
/// Returns (checked, mismatches, duplicates, missing) and prints the first problems.
pub fn verify(
    expected: &BTreeMap<Identity, Expected>,
    emitted: &[AggregateRecord],
) -> (usize, usize, usize, usize) {
    let closing_times: Vec<i64> = expected
        .keys()
        .filter(|k| k.aggregation == CLOSING)
        .map(|k| k.start)
        .collect();
    let expected: BTreeMap<&Identity, &Expected> = expected
        .iter()
        .filter(|(k, _)| k.aggregation != CLOSING)
        .collect();
    let mut seen: HashMap<Identity, usize> = HashMap::new();
    let mut mismatches = 0;
    for record in emitted.iter().filter(|r| r.is_final) {
        let identity = Identity::of(record);
        let Some(want) = expected.get(&&identity) else {
            // A final window the input cannot produce (a wrong group, a wrong window) is wrong,
            // unless a closing record falls in it (they only move time, and the reference leaves
            // their windows out).
            let closing = closing_times
                .iter()
                .any(|t| identity.start <= *t && *t <= identity.end);
            if !closing {
                if mismatches < 5 {
                    eprintln!("unexpected final window {identity:?}");
                }
                mismatches += 1;
            }
            continue;
        };
        *seen.entry(identity.clone()).or_default() += 1;
        if let Some(problem) = compare(record, want) {
            if mismatches < 5 {
                eprintln!("mismatch {identity:?}: {problem}");
            }
            mismatches += 1;
        }
    }
    let duplicates = seen.values().filter(|&&n| n > 1).count();
    let missing = expected.keys().filter(|k| !seen.contains_key(*k)).count();
    if missing > 0 {
        eprintln!(
            "missing, e.g. {:?}",
            expected.keys().find(|k| !seen.contains_key(*k))
        );
    }
    (seen.len(), mismatches, duplicates, missing)
}
