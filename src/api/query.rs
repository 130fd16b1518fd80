//! Range queries over the index: parameter parsing, the two answers (seed 002's metrics and the
//! general per-aggregation form), and the 400 errors that name the offending parameter.

use super::index::{
    empty_like, AggregateIndex, AggregationSeries, Covered, GroupAnswer, ReadHealth,
};
use crate::aggregate::{Accumulator, HllSketch};
use crate::record::format_rfc3339_ms;
use crate::schema::TimeFormat;
use crate::topology::{AggregateKind, Topology, WindowSpec};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// A request the API refuses, with the HTTP status and the parameter at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub parameter: Option<String>,
    pub message: String,
}

impl ApiError {
    fn bad(parameter: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            parameter: Some(parameter.into()),
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 404,
            parameter: None,
            message: message.into(),
        }
    }

    pub fn body(&self) -> Value {
        json!({ "error": self.message, "parameter": self.parameter })
    }
}

/// `[from, to)` in epoch milliseconds, parsed from RFC 3339 query parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

impl Range {
    pub fn parse(params: &HashMap<String, String>) -> Result<Range, ApiError> {
        let time = |name: &str| -> Result<i64, ApiError> {
            let text = params.get(name).ok_or_else(|| {
                ApiError::bad(
                    name,
                    format!("`{name}` is required (RFC 3339, e.g. 2026-11-22T10:00:00Z)"),
                )
            })?;
            TimeFormat::Rfc3339.from_str(text).map_err(|_| {
                ApiError::bad(
                    name,
                    format!(
                        "`{name}` = {text:?} is not an RFC 3339 time (e.g. 2026-11-22T10:00:00Z)"
                    ),
                )
            })
        };
        let (from, to) = (time("from")?, time("to")?);
        if from > to {
            return Err(ApiError::bad(
                "from",
                format!(
                    "`from` ({}) is after `to` ({})",
                    format_rfc3339_ms(from),
                    format_rfc3339_ms(to)
                ),
            ));
        }
        Ok(Range { from, to })
    }
}

/// The aggregations that answer seed 002's `GetMetrics`: a tumbling count grouped by
/// `eventType`, and an ungrouped tumbling aggregation with `distinct(userId)` of the same source.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsPlan {
    pub by_type: String,
    pub count: String,
    pub by_type_users: Option<String>,
    pub overall: String,
    pub users: String,
}

impl MetricsPlan {
    pub fn discover(topology: &Topology) -> Option<MetricsPlan> {
        let tumbling =
            |a: &&crate::topology::Aggregation| matches!(a.window, WindowSpec::Tumbling { .. });
        let distinct_users = |a: &crate::topology::Aggregation| {
            a.aggregates.iter().find_map(|(name, kind)| match kind {
                AggregateKind::Distinct { field, .. } if field == "userId" => Some(name.clone()),
                _ => None,
            })
        };
        let by_type = topology.aggregations.iter().filter(tumbling).find(|a| {
            a.group_by == ["eventType"]
                && a.aggregates.iter().any(|(_, k)| *k == AggregateKind::Count)
        })?;
        let overall = topology.aggregations.iter().filter(tumbling).find(|a| {
            a.source == by_type.source && a.group_by.is_empty() && distinct_users(a).is_some()
        })?;
        Some(MetricsPlan {
            by_type: by_type.name.clone(),
            count: by_type
                .aggregates
                .iter()
                .find(|(_, k)| *k == AggregateKind::Count)
                .map(|(n, _)| n.clone())?,
            by_type_users: distinct_users(by_type),
            overall: overall.name.clone(),
            users: distinct_users(overall)?,
        })
    }
}

fn position(series: &AggregationSeries, name: &str) -> usize {
    series
        .aggregation
        .aggregates
        .iter()
        .position(|(n, _)| n == name)
        .expect("planned aggregate")
}

fn period_json(range: Range, covered: Covered) -> (Value, Value) {
    (
        json!({ "from": format_rfc3339_ms(range.from), "to": format_rfc3339_ms(range.to) }),
        json!({ "from": format_rfc3339_ms(covered.from), "to": format_rfc3339_ms(covered.to) }),
    )
}

/// `closed_until`, `complete` and `retained_from` of an answer over `series`, each aggregation
/// with its covered range: final as far as the slowest, held from the latest horizon.
fn completeness(series: &[(&AggregationSeries, Covered)]) -> Map<String, Value> {
    let closed = series.iter().map(|(s, _)| s.closed_until()).min().flatten();
    let retained = series.iter().filter_map(|(s, _)| s.retained_from()).max();
    let mut fields = Map::new();
    fields.insert("closed_until".into(), json!(closed.map(format_rfc3339_ms)));
    fields.insert(
        "complete".into(),
        series.iter().all(|(s, c)| s.is_complete(*c)).into(),
    );
    fields.insert(
        "retained_from".into(),
        json!(retained.map(format_rfc3339_ms)),
    );
    fields
}

/// What answers say about the reader of the output topics.
fn index_json(health: &ReadHealth, rejected: u64) -> Value {
    json!({
        "degraded": health.degraded.is_some(),
        "error": health.degraded,
        "skipped_records": health.undecodable + rejected,
    })
}

fn with_fields(mut body: Value, fields: Map<String, Value>) -> Value {
    if let Value::Object(map) = &mut body {
        map.extend(fields);
    }
    body
}

fn sketch_json(sketch: &HllSketch) -> Value {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(sketch.canonical().to_bytes())
        .into()
}

/// A distinct count with its error bound: ±3 relative standard errors (99.7% of estimates).
fn users_json(sketch: &HllSketch) -> (u64, u64, f64) {
    let estimate = sketch.canonical().estimate();
    let rse = HllSketch::relative_standard_error(sketch.lg_k());
    (
        estimate.round() as u64,
        (3.0 * rse * estimate).ceil() as u64,
        rse,
    )
}

/// `GET /api/v1/metrics`: seed 002's `{counts, users, period}` plus what the caller needs to
/// trust it. `users` counts unique users over every event type, as the seed's `GetMetrics` does;
/// with `eventType`, `event_type_users` counts that type's users.
pub fn metrics(
    index: &mut AggregateIndex,
    plan: Option<&MetricsPlan>,
    params: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    if let Some(unknown) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "from" | "to" | "eventType"))
    {
        return Err(ApiError::bad(
            unknown,
            format!("unknown parameter `{unknown}`: this endpoint takes from, to and eventType"),
        ));
    }
    let range = Range::parse(params)?;
    let plan = plan.ok_or_else(|| {
        ApiError::not_found("no aggregation answers /api/v1/metrics: it needs a tumbling `count` grouped by eventType and an ungrouped tumbling `distinct(userId)` of the same source")
    })?;
    let event_type = params.get("eventType").cloned();
    let index_status = index_json(&index.health, index.rejected);
    let final_and_held = {
        let by_type = index.aggregation(&plan.by_type).expect("planned");
        let overall = index.aggregation(&plan.overall).expect("planned");
        completeness(&[
            (by_type, by_type.covered(range.from, range.to)),
            (overall, overall.covered(range.from, range.to)),
        ])
    };
    let by_type = index.aggregation_mut(&plan.by_type).expect("planned");
    let covered = by_type.covered(range.from, range.to);
    let count_at = position(by_type, &plan.count);
    let users_at = plan.by_type_users.as_ref().map(|n| position(by_type, n));
    let answers = by_type.query(range.from, range.to, &|group| match &event_type {
        Some(t) => group.get("eventType").and_then(Value::as_str) == Some(t.as_str()),
        None => true,
    });
    let mut counts = Map::new();
    let mut type_users: Option<HllSketch> = None;
    for answer in &answers {
        let name = answer
            .group
            .get("eventType")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Accumulator::Count(n) = answer.accumulators.0[count_at] {
            counts.insert(name.to_string(), n.into());
        }
        if let Some(Accumulator::Distinct(s, _)) = users_at.map(|i| &answer.accumulators.0[i]) {
            type_users
                .get_or_insert_with(|| HllSketch::new(s.lg_k()))
                .merge(s);
        }
    }
    if let Some(t) = &event_type {
        counts.entry(t.clone()).or_insert(0.into());
    }
    let overall = index.aggregation_mut(&plan.overall).expect("planned");
    let users_at = position(overall, &plan.users);
    let mut users = match &empty_like(&overall.aggregation.aggregates).0[users_at] {
        Accumulator::Distinct(s, _) => s.clone(),
        _ => unreachable!("planned as distinct"),
    };
    for answer in overall.query(range.from, range.to, &|_| true) {
        if let Accumulator::Distinct(s, _) = &answer.accumulators.0[users_at] {
            users.merge(s);
        }
    }
    let (estimate, bound, rse) = users_json(&users);
    let (period, covered) = period_json(range, covered);
    let body = json!({
        "counts": counts,
        "users": estimate,
        "users_error": bound,
        "users_relative_standard_error": rse,
        "users_sketch": sketch_json(&users),
        "period": period,
        "covered": covered,
        "aggregations": [plan.by_type, plan.overall],
        "index": index_status,
    });
    let mut body = with_fields(body, final_and_held);
    if event_type.is_some() && plan.by_type_users.is_some() {
        body["event_type_users"] = type_users.map_or(0, |s| users_json(&s).0).into();
    }
    Ok(body)
}

/// `GET /api/v1/aggregations/{name}`: every group (or those matching `<group field>=<value>`
/// parameters) merged over the range, and the merge of all of them.
pub fn aggregation(
    index: &mut AggregateIndex,
    name: &str,
    params: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let index_status = index_json(&index.health, index.rejected);
    let Some(series) = index.aggregation_mut(name) else {
        let known: Vec<&str> = index.aggregation_names().collect();
        return Err(ApiError::bad(
            "name",
            format!(
                "unknown aggregation `{name}`: this topology has {}",
                known.join(", ")
            ),
        ));
    };
    let group_by = series.aggregation.group_by.clone();
    let mut filters: Vec<(String, String)> = Vec::new();
    for (key, value) in params {
        match key.as_str() {
            "from" | "to" => {}
            field if group_by.iter().any(|g| g == field) => {
                filters.push((key.clone(), value.clone()))
            }
            other => {
                return Err(ApiError::bad(
                    other,
                    format!(
                        "unknown parameter `{other}`: `{name}` takes from, to{}",
                        group_by
                            .iter()
                            .map(|g| format!(", {g}"))
                            .collect::<String>()
                    ),
                ))
            }
        }
    }
    let range = Range::parse(params)?;
    let covered = series.covered(range.from, range.to);
    let final_and_held = completeness(&[(series, covered)]);
    let kinds = series.aggregation.aggregates.clone();
    let additive = series.additive_merge_allowed();
    let answers = series.query(range.from, range.to, &|group| {
        filters
            .iter()
            .all(|(field, wanted)| match group.get(field) {
                Some(Value::String(s)) => s == wanted,
                // Numbers and booleans compare by their JSON text (`?quantity=3`).
                Some(other) => serde_json::to_string(other).is_ok_and(|text| text == *wanted),
                None => false,
            })
    });
    let mut total = empty_like(&kinds);
    let mut windows = 0;
    let render = |answer: &GroupAnswer| -> (Value, Value) {
        let names = kinds.iter().map(|(n, _)| n.as_str());
        let mut values = answer.accumulators.values_json_named(names.clone());
        if !additive {
            for (n, k) in &kinds {
                if matches!(
                    k,
                    AggregateKind::Count | AggregateKind::Sum(_) | AggregateKind::SumProduct(..)
                ) {
                    values.insert(n.clone(), Value::Null);
                }
            }
        }
        (
            Value::Object(values),
            Value::Object(answer.accumulators.sketches_json_named(names)),
        )
    };
    let mut groups = Vec::new();
    for answer in &answers {
        total.merge(&answer.accumulators);
        windows += answer.windows;
        let (values, sketches) = render(answer);
        groups.push(json!({ "group": answer.group, "windows": answer.windows, "values": values, "sketches": sketches }));
    }
    let (values, sketches) = render(&GroupAnswer {
        group: Map::new(),
        accumulators: total,
        windows,
    });
    let (period, covered) = period_json(range, covered);
    let body = json!({
        "aggregation": name,
        "period": period,
        "covered": covered,
        "groups": groups,
        "total": { "windows": windows, "values": values, "sketches": sketches },
        "index": index_status,
    });
    let mut body = with_fields(body, final_and_held);
    if !additive {
        body["note"] = "hopping windows overlap: counts and sums are not merged across them (null); sketches, min and max are".into();
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{AggregateRecord, WindowBounds};
    use crate::topology::{AggregationBuilder, Schema, SourceBuilder};

    fn topology() -> Topology {
        Topology::builder()
            .source(SourceBuilder::new("a", "a", Schema::Json).build())
            .aggregation(
                AggregationBuilder::new("per_minute", "a", "out")
                    .aggregate("n", AggregateKind::Count)
                    .build(),
            )
            .build()
            .unwrap()
    }

    fn minute(m: i64, is_final: bool) -> AggregateRecord {
        AggregateRecord {
            aggregation: "per_minute".into(),
            window: WindowBounds {
                start: m * 60_000,
                end: (m + 1) * 60_000,
            },
            group: Map::new(),
            values: json!({ "n": 1 }).as_object().unwrap().clone(),
            sketches: Map::new(),
            theta_sketches: Map::new(),
            is_final,
        }
    }

    /// The answer over minutes `[from, to)`.
    fn answer(index: &mut AggregateIndex, from: i64, to: i64) -> Value {
        let params = HashMap::from([
            ("from".to_string(), format_rfc3339_ms(from * 60_000)),
            ("to".to_string(), format_rfc3339_ms(to * 60_000)),
        ]);
        aggregation(index, "per_minute", &params).unwrap()
    }

    #[test]
    fn complete_waits_for_the_slowest_output_partition() {
        let mut index = AggregateIndex::new(&topology());
        // Catching up: partition 0 is at minute 60, partition 1 at minute 5, partition 2 has
        // nothing final yet.
        index.insert_from_partition(0, &minute(59, true)).unwrap();
        index.insert_from_partition(1, &minute(4, true)).unwrap();
        index.insert_from_partition(2, &minute(2, false)).unwrap();
        let body = answer(&mut index, 0, 10);
        assert_eq!(body["complete"], false, "{body}");
        assert_eq!(body["closed_until"], Value::Null);
        index.insert_from_partition(2, &minute(7, true)).unwrap();
        assert_eq!(answer(&mut index, 0, 10)["complete"], false);
        assert_eq!(answer(&mut index, 0, 5)["complete"], true);
        assert_eq!(
            answer(&mut index, 0, 5)["closed_until"],
            format_rfc3339_ms(5 * 60_000)
        );
        // A partition added later holds nothing back until it carries the aggregation.
        assert_eq!(answer(&mut index, 0, 5)["complete"], true);
        index.insert_from_partition(3, &minute(1, false)).unwrap();
        assert_eq!(answer(&mut index, 0, 5)["complete"], false);
    }

    #[test]
    fn a_range_older_than_the_index_holds_is_not_complete() {
        let capacity = super::super::IndexCapacity {
            windows_per_aggregation: 10,
        };
        let mut index = AggregateIndex::with_capacity(&topology(), capacity);
        for m in 0..30 {
            index.insert(&minute(m, true)).unwrap();
        }
        let old = answer(&mut index, 0, 30);
        assert_eq!(old["complete"], false, "{old}");
        assert_eq!(old["retained_from"], format_rfc3339_ms(20 * 60_000));
        assert_eq!(old["total"]["windows"], 10);
        let held = answer(&mut index, 20, 30);
        assert_eq!(held["complete"], true, "{held}");
    }

    #[test]
    fn answers_say_when_the_index_cannot_read() {
        let mut index = AggregateIndex::new(&topology());
        assert_eq!(
            answer(&mut index, 0, 1)["index"],
            json!({"degraded": false, "error": null, "skipped_records": 0})
        );
        index.health.degraded = Some("broker down".into());
        index.health.undecodable = 2;
        assert_eq!(
            answer(&mut index, 0, 1)["index"],
            json!({"degraded": true, "error": "broker down", "skipped_records": 2})
        );
    }
}
