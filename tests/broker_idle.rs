//! An empty input partition on the real broker: once idle (read to its end, no record for
//! `idle_timeout_ms`), it no longer holds back repartitioned windows, and every window closes
//! exactly as the reference says.

mod common;

use common::reference::reference;
use common::{EddyOptions, EddyProcess};
use std::time::{Duration, Instant};

#[test]
fn an_empty_partition_does_not_stall_repartitioned_windows() {
    let common::Shipped {
        suffix,
        dir,
        files,
        orders,
        analytics,
        topology,
    } = common::shipped("idle", 4);
    // Four partitions each; the generated events and closing records fill only the first three.
    let config = eddy::events::GeneratorConfig {
        seed: 5,
        users: 200,
        step_ms: 40.0,
        late_fraction: 0.0,
        ..Default::default()
    };
    let events = common::generate(8_000, 3, &orders, &analytics, config);
    common::produce_partitioned(&events);
    let expected = reference(&topology, &events);
    assert!(topology
        .aggregations
        .iter()
        .all(|a| topology.needs_repartition(a)));

    let app = common::unique("idleapp");
    let eddy = EddyProcess::start(&EddyOptions {
        application_id: &app,
        topologies: &files,
        state_dir: dir.path(),
        guarantee: "exactly_once",
        instance: "a",
        extra_env: vec![("EDDY__IDLE_TIMEOUT_MS".into(), "2000".into())],
    });
    let outputs = common::shipped_outputs(&suffix);
    let started = Instant::now();
    common::wait_for_exact(&expected, &outputs, &eddy);
    println!("all windows closed after {:?}", started.elapsed());
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
}

/// The documented rule for a partition that comes back after being idle: its records that fall
/// into windows closed meanwhile are late (dropped and counted, no window reopened, no final
/// emitted twice); its records for open windows count. And after a quiet period in which every
/// partition went idle, all of them resuming with a backlog still give exact windows: the first
/// to resume does not close windows alone.
#[test]
fn an_idle_partition_that_comes_back_follows_the_lateness_rule() {
    let run = common::shipped("idleback", 4);
    // Three days ago, so that phase 2 (a day after phase 1 closes) is still in the past:
    // event times more than `max_future_skew` ahead of their broker timestamps are dead-lettered.
    let three_days_ago = eddy::runtime::now_ms() / 60_000 * 60_000 - 3 * 86_400_000;
    let config = eddy::events::GeneratorConfig {
        seed: 8,
        users: 150,
        step_ms: 40.0,
        late_fraction: 0.0,
        start_ms: three_days_ago,
        ..Default::default()
    };
    // Phase 1 fills partitions 0..3 only, and closes every window there.
    let phase1 = common::generate(5_000, 3, &run.orders, &run.analytics, config.clone());
    common::produce_partitioned(&phase1);
    let app = common::unique("idlebackapp");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let eddy = run.start(
        &app,
        "a",
        vec![
            ("EDDY__IDLE_TIMEOUT_MS".into(), "2000".into()),
            ("EDDY__HTTP__LISTEN".into(), addr.clone()),
        ],
    );
    common::wait_for_exact(&reference(&run.topology, &phase1), &run.outputs(), &eddy);
    let late_metric = "eddy_late_records_dropped_total";
    let late_label = "aggregation=\"analytics.by_event_type\"";
    let late_before = common::counter_sum(&addr, late_metric, late_label);

    // Partition 3 comes back: first with analytics events of windows closed long ago...
    let stale: Vec<common::reference::Produced> = phase1
        .iter()
        .filter(|e| e.topic == run.analytics && !e.closing)
        .take(50)
        .map(|e| common::reference::Produced {
            partition: 3,
            ..e.clone()
        })
        .collect();
    common::produce_partitioned(&stale);
    // ...then, like every partition, with new events an hour after phase 1's closing records.
    let closing_ms = phase1
        .iter()
        .filter(|e| e.closing)
        .map(|e| common::reference::event_time(&run.topology, &e.topic, &e.value))
        .max()
        .unwrap();
    let phase2 = common::generate(
        4_000,
        4,
        &run.orders,
        &run.analytics,
        eddy::events::GeneratorConfig {
            seed: 9,
            start_ms: closing_ms + 3_600_000,
            ..config
        },
    );
    common::produce_partitioned(&phase2);
    // The stale records are not in the reference: they must change nothing.
    let all: Vec<_> = phase1.iter().chain(&phase2).cloned().collect();
    common::wait_for_exact(&reference(&run.topology, &all), &run.outputs(), &eddy);
    let late_after = common::counter_sum(&addr, late_metric, late_label);
    println!("late partials dropped by analytics.by_event_type: {late_before} -> {late_after}");
    assert!(
        late_after > late_before,
        "the stale records were counted as late"
    );
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
}
