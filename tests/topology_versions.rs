//! Versioned sources through the in-memory test driver: seed 001's two styles (a topic per
//! version, a `version` field), renamed fields and defaults aggregating together, and unknown
//! versions dead-lettered with a reason.

use eddy::testing::TopologyTestDriver;
use eddy::topology::*;

fn topology() -> Topology {
    Topology::builder()
        .source(
            SourceBuilder::new("signups", "user.created.v1", Schema::Json)
                .also_topic("user.created.v2")
                .time_field("at", TimeFormat::EpochMillis)
                .version(SourceVersion {
                    version: 2,
                    topic: Some("user.created.v2".into()),
                    fields: vec![
                        ("plan".into(), "tier".into()),
                        ("at".into(), "created_at".into()),
                    ],
                    defaults: vec![("country".into(), serde_json::json!("unknown"))],
                })
                .build(),
        )
        .aggregation(
            AggregationBuilder::new("signups.by_plan", "signups", "out")
                .group_by("plan")
                .grace(0)
                .aggregate("n", AggregateKind::Count)
                .aggregate(
                    "countries",
                    AggregateKind::Distinct {
                        field: "country".into(),
                        lg_k: 12,
                        theta_lg_k: None,
                    },
                )
                .build(),
        )
        .build()
        .unwrap()
}

#[test]
fn versions_on_their_own_topics_and_by_field_aggregate_together() {
    let mut d = TopologyTestDriver::new(topology(), 2);
    // Version 1 on its topic, version 2 on its topic, version 2 tagged on the v1 topic.
    d.pipe(
        "user.created.v1",
        0,
        None,
        r#"{"plan":"pro","country":"de","at":1000}"#,
        None,
    )
    .unwrap();
    d.pipe(
        "user.created.v1",
        1,
        None,
        r#"{"plan":"free","country":"fr","at":2000}"#,
        None,
    )
    .unwrap();
    d.pipe(
        "user.created.v2",
        0,
        None,
        r#"{"tier":"pro","created_at":3000}"#,
        None,
    )
    .unwrap();
    d.pipe(
        "user.created.v2",
        1,
        None,
        r#"{"tier":"pro","country":"it","created_at":4000}"#,
        None,
    )
    .unwrap();
    d.pipe(
        "user.created.v1",
        0,
        None,
        r#"{"version":2,"tier":"free","created_at":5000}"#,
        None,
    )
    .unwrap();
    // Unknown version: dead-lettered, names the versions the source reads.
    d.pipe(
        "user.created.v1",
        1,
        None,
        r#"{"version":9,"plan":"pro","at":5000}"#,
        None,
    )
    .unwrap();
    // Version 1 fields on the v2 topic do not satisfy version 2.
    d.pipe(
        "user.created.v2",
        0,
        None,
        r#"{"plan":"pro","at":5000}"#,
        None,
    )
    .unwrap();
    for (topic, partition) in [("user.created.v1", 0), ("user.created.v1", 1)] {
        d.pipe(
            topic,
            partition,
            None,
            r#"{"plan":"closing","at":999999}"#,
            None,
        )
        .unwrap();
    }
    for (topic, partition) in [("user.created.v2", 0), ("user.created.v2", 1)] {
        d.pipe(
            topic,
            partition,
            None,
            r#"{"tier":"closing","created_at":999999}"#,
            None,
        )
        .unwrap();
    }
    d.commit().unwrap();
    let mut got: Vec<(String, u64, u64)> = d
        .read_aggregates("out")
        .into_iter()
        .filter(|r| r.window.start == 0)
        .map(|r| {
            (
                r.group["plan"].as_str().unwrap().to_string(),
                r.values["n"].as_u64().unwrap(),
                r.values["countries"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    // pro: de (v1), unknown (v2 default), it (v2); free: fr (v1), unknown (v2 default).
    assert_eq!(got, [("free".into(), 2, 2), ("pro".into(), 3, 3)]);
    let dead = d.read_records("eddy-test-dlq");
    assert_eq!(dead.len(), 2, "{dead:?}");
    let reasons: Vec<String> = dead
        .iter()
        .map(|r| r.header("eddy.error").unwrap())
        .collect();
    assert!(
        reasons[0].contains("unknown schema version 9") && reasons[0].contains("[1, 2]"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("missing required field `at`"),
        "{reasons:?}"
    );
    assert_eq!(
        dead[1].header("eddy.source.topic").as_deref(),
        Some("user.created.v2")
    );
}

#[test]
fn a_source_reading_several_topics_always_repartitions() {
    let t = topology();
    assert!(t.needs_repartition(&t.aggregations[0]));
    let text = describe(&t, "app");
    assert!(
        text.contains("topics `user.created.v1`, `user.created.v2` (one stream)"),
        "{text}"
    );
    assert!(text.contains("v2 (topic user.created.v2, plan <- tier, at <- created_at, country default \"unknown\")"), "{text}");
}
