//! The vertical slice through the real broker: generated events in, `eddy run` as a subprocess,
//! output read back with read_committed and checked exactly against an independent reference.

mod common;

use common::reference::reference;
use common::{EddyOptions, EddyProcess};
use std::time::Duration;

#[test]
fn shipped_topologies_produce_exactly_the_reference_aggregates() {
    let common::Shipped {
        suffix,
        dir,
        files,
        orders,
        analytics,
        topology,
    } = common::shipped("slice", 3);
    let config = eddy::events::GeneratorConfig {
        seed: 11,
        users: 300,
        step_ms: 40.0,
        ..Default::default()
    };
    let events = common::generate(20_000, 3, &orders, &analytics, config);
    common::produce_partitioned(&events);
    let expected = reference(&topology, &events);
    assert!(
        expected.len() > 500,
        "the stream spans many windows and groups: {}",
        expected.len()
    );

    let app = common::unique("app");
    let eddy = EddyProcess::start(&EddyOptions {
        application_id: &app,
        topologies: &files,
        state_dir: dir.path(),
        guarantee: "exactly_once",
        instance: "a",
        extra_env: vec![("EDDY__REPARTITION_PURGE_INTERVAL_MS".into(), "500".into())],
    });
    let outputs = common::shipped_outputs(&suffix);
    common::wait_for_exact(&expected, &outputs, &eddy);

    // The ClickHouse recipe (docker/clickhouse/) on the records this run wrote, as the Kafka
    // engine would read them: the seed 002 queries answer the reference's counts and unique users.
    let analytics_records: Vec<String> = common::read_committed(&outputs[0])
        .into_iter()
        .filter_map(|r| r.value)
        .map(|v| String::from_utf8(v).unwrap())
        .collect();
    common::clickhouse::check_recipe(&analytics_records, &expected);

    // Consumed repartition records are deleted, as Kafka Streams does: every repartition topic's
    // log start moved past records its merge tasks committed.
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .create()
        .expect("consumer");
    for aggregation in topology
        .aggregations
        .iter()
        .filter(|a| topology.needs_repartition(a))
    {
        let topic = eddy::topology::repartition_topic(&app, &aggregation.name);
        common::wait_for(&format!("{topic} purged"), Duration::from_secs(30), || {
            (0..3).all(|partition| {
                use rdkafka::consumer::Consumer;
                consumer
                    .fetch_watermarks(&topic, partition, Duration::from_secs(5))
                    .is_ok_and(|(low, _)| low > 0)
            })
        });
        println!("{topic}: consumed records purged on every partition");
    }

    let code = eddy.stop(Duration::from_secs(60));
    assert_eq!(code, 0, "SIGTERM must stop eddy cleanly");
}
