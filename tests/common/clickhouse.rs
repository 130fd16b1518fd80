//! Runs the ClickHouse recipe of `docker/clickhouse/` on eddy's output records in chDB (see
//! `clickhouse_recipe.py` for what is substituted and why) and checks the seed 002 queries against
//! the reference: counts exact, unique users equal to the union of the reference's own Theta
//! sketches (built from the raw events, independently of eddy), within the union's bounds.
#![allow(dead_code)]

use super::reference::{Expected, Identity};
use eddy::aggregate::{ThetaSketch, THETA_LG_K};
use serde_json::Value;
use std::collections::BTreeMap;

/// What the recipe's queries answered for one period `[from, to)`.
struct Answer {
    counts: BTreeMap<String, u64>,
    users: Value,
    one_type: Value,
}

/// Feeds `records` (output record JSON, as read from `analytics-aggregates`) through the recipe
/// twice (a redelivery) plus one non-final record, and checks every query over the whole run
/// and over a range inside it.
pub fn check_recipe(records: &[String], expected: &BTreeMap<Identity, Expected>) {
    let minutes: Vec<(&Identity, &Expected)> = expected
        .iter()
        .filter(|(id, _)| id.aggregation == "analytics.overall")
        .collect();
    assert!(
        minutes.len() >= 3,
        "the run spans minutes: {}",
        minutes.len()
    );
    let first = minutes.first().unwrap().0.start;
    let last = minutes.last().unwrap().0.end;
    let inner = (
        minutes[minutes.len() / 3].0.start,
        minutes[2 * minutes.len() / 3].0.end,
    );
    let periods = [(first, last), inner];
    let by_type: Vec<(&Identity, &Expected)> = expected
        .iter()
        .filter(|(id, _)| id.aggregation == "analytics.by_event_type")
        .collect();
    let type_of = |id: &Identity| -> String {
        serde_json::from_str::<Value>(&id.group).unwrap()["eventType"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let event_type = type_of(by_type[0].0);
    let request = serde_json::json!({
        "records": records,
        "periods": periods.iter().map(|(from, to)| serde_json::json!({"from": from, "to": to})).collect::<Vec<_>>(),
        "event_type": event_type,
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/common/clickhouse_recipe.py"
    );
    let result = super::python_json(
        &[script.as_ref(), env!("CARGO_MANIFEST_DIR").as_ref()],
        &request,
    );
    let stored = result["rows_final"].as_u64().unwrap() as usize;
    let theta_minutes = expected
        .iter()
        .filter(|(id, e)| {
            matches!(
                id.aggregation.as_str(),
                "analytics.overall" | "analytics.by_event_type"
            ) && e.theta("unique_users").is_some()
        })
        .count();
    assert_eq!(
        stored, theta_minutes,
        "one row per final (aggregation, group, minute)"
    );
    assert_eq!(
        result["rows"].as_u64().unwrap() as usize,
        2 * stored,
        "the redelivered batch is stored twice and FINAL reads it once; the non-final record is not stored"
    );
    for ((from, to), answer) in periods.iter().zip(result["periods"].as_array().unwrap()) {
        let answer = Answer {
            counts: serde_json::from_value(answer["counts"].clone()).unwrap(),
            users: answer["users"].clone(),
            one_type: answer["one_type"].clone(),
        };
        let inside = |id: &Identity| id.start >= *from && id.end <= *to;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut type_users = ThetaSketch::new(THETA_LG_K);
        for (id, e) in by_type.iter().filter(|(id, _)| inside(id)) {
            *counts.entry(type_of(id)).or_default() += e.count("events").unwrap();
            if type_of(id) == event_type {
                type_users.merge(e.theta("unique_users").unwrap());
            }
        }
        assert_eq!(answer.counts, counts, "events by type over [{from}, {to})");
        assert_eq!(
            answer.one_type["count"].as_u64(),
            counts.get(&event_type).copied().or(Some(0)),
            "{event_type} over [{from}, {to})"
        );
        let mut users = ThetaSketch::new(THETA_LG_K);
        for (_, e) in minutes.iter().filter(|(id, _)| inside(id)) {
            users.merge(e.theta("unique_users").unwrap());
        }
        let estimate = answer.users["estimate"].as_f64().unwrap();
        assert_eq!(
            estimate,
            users.estimate(),
            "ClickHouse's union of the stored minutes equals the reference's union"
        );
        assert!(
            answer.users["lower"].as_f64().unwrap() <= estimate
                && estimate <= answer.users["upper"].as_f64().unwrap(),
            "bounds around the estimate: {}",
            answer.users
        );
        assert_eq!(
            answer.one_type["users"]["estimate"].as_f64().unwrap(),
            type_users.estimate()
        );
        println!(
            "ClickHouse recipe over [{from}, {to}): {} types, {} events, unique users {estimate} (exact: {}), {} minutes stored, {} rows before FINAL",
            counts.len(),
            counts.values().sum::<u64>(),
            answer.users["exact"],
            stored,
            result["rows"]
        );
    }
}
