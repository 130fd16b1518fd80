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
        extra_env: vec![],
    });
    let outputs = common::shipped_outputs(&suffix);
    common::wait_for_exact(&expected, &outputs, &eddy);

    let code = eddy.stop(Duration::from_secs(60));
    assert_eq!(code, 0, "SIGTERM must stop eddy cleanly");
}
