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
    let outputs = [
        format!("analytics-aggregates-{suffix}"),
        format!("order-aggregates-{suffix}"),
    ];
    let started = Instant::now();
    common::wait_for_exact(&expected, &outputs, &eddy);
    println!("all windows closed after {:?}", started.elapsed());
    let sessions = common::read_aggregates(&format!("analytics-sessions-{suffix}"));
    assert!(!sessions.is_empty(), "sessions closed too");
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
}
