//! Poison timestamps on the real broker: year 9999, before 1970, negative and `i64::MAX` epochs,
//! and a string where the number belongs, mid-stream on both seed topics. Each is dead-lettered
//! with its reason, none moves stream time, and every window is exactly the reference.

mod common;

use common::reference::{reference, Produced};
use serde_json::json;
use std::time::Duration;

#[test]
fn poison_timestamps_are_dead_lettered_and_everything_else_is_exact() {
    let run = common::shipped("poison", 2);
    let config = eddy::events::GeneratorConfig {
        seed: 41,
        users: 300,
        step_ms: 40.0,
        ..Default::default()
    };
    let events = common::generate(8_000, 2, &run.orders, &run.analytics, config);
    let expected = reference(&run.topology, &events);
    let order = |id: &str, timestamp: serde_json::Value| json!({"order_id": id, "user_id": "poison", "items": [{"product_id": "p", "quantity": 1, "unit_price": 1.0}], "total_amount": 1.0, "timestamp": timestamp});
    let event = |id: &str, timestamp: &str| json!({"id": id, "timestamp": timestamp, "eventType": "click", "userId": "poison"});
    let poison = |topic: &str, partition: i32, value: serde_json::Value| Produced {
        topic: topic.into(),
        partition,
        key: "poison".into(),
        value,
        closing: false,
    };
    let poisoned = vec![
        poison(
            &run.analytics,
            0,
            event("year-9999", "9999-12-31T23:59:59Z"),
        ),
        poison(
            &run.analytics,
            1,
            event("before-1970", "1969-07-20T20:17:40Z"),
        ),
        poison(&run.orders, 0, order("negative", json!(-86_400))),
        poison(&run.orders, 1, order("i64-max", json!(i64::MAX))),
        poison(&run.orders, 0, order("string", json!("1795340400"))),
    ];
    let app = common::unique("poisonapp");
    let eddy = run.start(&app, "a", vec![]);
    let (first, second) = events.split_at(events.len() / 2);
    common::produce_partitioned(first);
    common::produce_partitioned(&poisoned);
    common::produce_partitioned(second);
    common::wait_for_exact(&expected, &run.outputs(), &eddy);

    let dead = common::read_committed(&format!("{app}-dlq"));
    let mut reasons: Vec<(String, String)> = dead
        .iter()
        .map(|r| {
            let value: serde_json::Value =
                serde_json::from_slice(r.value.as_deref().unwrap_or_default()).unwrap();
            let id = value
                .get("id")
                .or_else(|| value.get("order_id"))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            let reason = r
                .headers
                .iter()
                .find(|(k, _)| k == "eddy.error")
                .map(|(_, v)| String::from_utf8_lossy(v).to_string())
                .unwrap_or_default();
            (id, reason)
        })
        .collect();
    reasons.sort();
    for (id, reason) in &reasons {
        println!("dead letter {id}: {reason}");
    }
    let ids: Vec<&str> = reasons.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["before-1970", "i64-max", "negative", "string", "year-9999"],
        "exactly the poison records are dead-lettered"
    );
    assert!(reasons.iter().all(|(_, reason)| !reason.is_empty()));
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
}
