//! eddy's emitted sketches are standard Apache DataSketches HLL sketches: the Python library
//! deserializes them, reports the estimate eddy reported, and unions them.

mod common;

use eddy::testing::TopologyTestDriver;
use eddy::topology::*;

#[test]
fn python_datasketches_reads_and_unions_emitted_sketches() {
    let topology = Topology::builder()
        .source(
            SourceBuilder::new("a", "analytics", Schema::AnalyticsEvent)
                .time_field("timestamp", TimeFormat::Rfc3339)
                .build(),
        )
        .aggregation(
            AggregationBuilder::new("u", "a", "out")
                .tumbling(60_000)
                .aggregate(
                    "users",
                    AggregateKind::Distinct {
                        field: "userId".into(),
                        lg_k: 12,
                        theta_lg_k: None,
                    },
                )
                .build(),
        )
        .build()
        .unwrap();
    let mut driver = TopologyTestDriver::new(topology, 2);
    // Minute 0: users 0..3000, minute 1: users 2000..9000 (small and large sketches, overlapping).
    for (minute, users) in [(0i64, 0..3000), (1, 2000..9000)] {
        for user in users {
            let value = serde_json::json!({"id": "e", "timestamp": eddy::record::format_rfc3339_ms(minute * 60_000 + (user % 60_000)), "eventType": "view", "userId": format!("user-{user}"), "properties": {}});
            driver
                .pipe(
                    "analytics",
                    (user % 2) as i32,
                    None,
                    &value.to_string(),
                    None,
                )
                .unwrap();
        }
    }
    for partition in 0..2 {
        driver
            .pipe(
                "analytics",
                partition,
                None,
                r#"{"id":"x","timestamp":"1970-01-02T00:00:00Z","eventType":"x","userId":"x","properties":{}}"#,
                None,
            )
            .unwrap();
    }
    driver.commit().unwrap();
    let records = driver.read_aggregates("out");
    assert_eq!(records.len(), 2);
    let script = r#"
import base64, json, sys
from datasketches import hll_sketch, hll_union
records = json.loads(sys.stdin.read())
union = hll_union(12)
for r in records:
    sketch = hll_sketch.deserialize(base64.b64decode(r["sketches"]["users"]))
    assert round(sketch.get_estimate()) == r["values"]["users"], (sketch.get_estimate(), r["values"]["users"])
    union.update(sketch)
direct = hll_sketch(12)
for u in range(9000):
    direct.update("user-%d" % u)
print(json.dumps({"union": union.get_estimate(), "direct": direct.get_estimate()}))
"#;
    let result = common::python_json(
        &["-c".as_ref(), script.as_ref()],
        &serde_json::to_value(&records).unwrap(),
    );
    let (union, direct) = (
        result["union"].as_f64().unwrap(),
        result["direct"].as_f64().unwrap(),
    );
    println!("python: union of eddy's minute sketches = {union:.1}, sketch of the same 9000 users built in Python = {direct:.1}");
    assert!(
        (union - 9000.0).abs() / 9000.0 < 0.05,
        "union estimate {union}"
    );
    assert!(
        (union - direct).abs() / 9000.0 < 0.03,
        "eddy's sketches hash like DataSketches' own update(str)"
    );
}

/// eddy's Theta sketches are the bytes ClickHouse's `uniqTheta` state holds (after its length):
/// the C++ DataSketches library, which ClickHouse embeds, builds the same bytes from the same ids,
/// and unions eddy's sketches (exact and estimation mode) to the true count within its bounds.
#[test]
fn python_datasketches_builds_the_same_theta_bytes_and_unions_emitted_theta_sketches() {
    use base64::Engine;
    use eddy::aggregate::{ThetaSketch, THETA_LG_K};
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut one = ThetaSketch::new(THETA_LG_K);
    one.update_str("user-1");
    let mut twenty = ThetaSketch::new(THETA_LG_K);
    for i in 1..=20 {
        twenty.update_str(&format!("user-{i}"));
    }
    // Minute sketches as eddy emits them: 0..3000 (exact mode) and 2000..9000 (estimation mode).
    let mut minutes = Vec::new();
    for users in [0..3000u32, 2000..9000] {
        let mut sketch = ThetaSketch::new(THETA_LG_K);
        for user in users {
            sketch.update_str(&format!("user-{user}"));
        }
        minutes.push(base64::engine::general_purpose::STANDARD.encode(sketch.to_bytes()));
    }
    let script = r#"
import base64, json, sys
from datasketches import update_theta_sketch, compact_theta_sketch, theta_union
def built(ids):
    sketch = update_theta_sketch(lg_k=12, seed=9001)
    for i in ids:
        sketch.update(i)
    return sketch.compact(True).serialize().hex()
request = json.loads(sys.stdin.read())
union = theta_union(lg_k=12, seed=9001)
for m in request["minutes"]:
    union.update(compact_theta_sketch.deserialize(base64.b64decode(m), 9001))
    union.update(compact_theta_sketch.deserialize(base64.b64decode(m), 9001))  # redelivered
result = union.get_result()
print(json.dumps({
    "one": built(["user-1"]),
    "twenty": built(["user-%d" % i for i in range(1, 21)]),
    "union": result.get_estimate(),
    "lower": result.get_lower_bound(2),
    "upper": result.get_upper_bound(2),
}))
"#;
    let result = common::python_json(
        &["-c".as_ref(), script.as_ref()],
        &serde_json::json!({ "minutes": minutes }),
    );
    assert_eq!(hex(&one.to_bytes()), "01030300001acc933b21164f2189467e");
    assert_eq!(result["one"], hex(&one.to_bytes()), "one id");
    let twenty_hex = hex(&twenty.to_bytes());
    assert_eq!(twenty.to_bytes().len(), 176);
    assert!(
        twenty_hex.starts_with("02030300001acc9314000000"),
        "{twenty_hex}"
    );
    assert_eq!(
        result["twenty"], twenty_hex,
        "user-1..user-20, byte for byte"
    );
    let (union, lower, upper) = (
        result["union"].as_f64().unwrap(),
        result["lower"].as_f64().unwrap(),
        result["upper"].as_f64().unwrap(),
    );
    println!("python: union of eddy's Theta sketches = {union:.1} (95% bounds {lower:.1}..{upper:.1}), true 9000");
    assert!(
        lower <= 9000.0 && 9000.0 <= upper,
        "{lower} <= 9000 <= {upper}"
    );
}
