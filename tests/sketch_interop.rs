//! eddy's emitted sketches are standard Apache DataSketches HLL sketches: the Python library
//! deserializes them, reports the estimate eddy reported, and unions them.

use eddy::testing::TopologyTestDriver;
use eddy::topology::*;
use std::process::Command;

#[test]
fn python_datasketches_reads_and_unions_emitted_sketches() {
    let python = std::env::var("EDDY_PYTHON").unwrap_or_else(|_| panic!("EDDY_PYTHON is not set: run `scripts/setup` and set EDDY_PYTHON=.venv/bin/python, or use `scripts/test`"));
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
    let mut child = Command::new(python)
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&records).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python check failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
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
