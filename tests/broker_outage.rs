//! A broker restart mid-run (stopped for 12 s, started again on the same log directory) with three
//! instances: no instance exits, and the output is exactly the reference.

mod common;

use common::reference::reference;
use common::{EddyOptions, EddyProcess};
use std::process::Command;
use std::time::Duration;

#[test]
fn outage_three_instances_ride_out_a_broker_restart_exactly() {
    let run = common::shipped("outage", 3);
    let config = eddy::events::GeneratorConfig {
        seed: 17,
        users: 300,
        step_ms: 40.0,
        ..Default::default()
    };
    let events = common::generate(30_000, 3, &run.orders, &run.analytics, config);
    let expected = reference(&run.topology, &events);
    let app = common::unique("outageapp");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let instances: Vec<EddyProcess> = ["a", "b", "c"]
        .iter()
        .map(|instance| {
            // Instance a serves /health/ready, to show readiness while the broker is away.
            let extra_env = match *instance {
                "a" => vec![("EDDY__HTTP__LISTEN".to_string(), addr.clone())],
                _ => vec![],
            };
            EddyProcess::start(&EddyOptions {
                application_id: &app,
                topologies: &run.files,
                state_dir: run.dir.path(),
                guarantee: "exactly_once",
                instance,
                extra_env,
            })
        })
        .collect();
    let half = events.len() / 2;
    common::produce_partitioned(&events[..half]);
    std::thread::sleep(Duration::from_secs(10));
    let restart = std::thread::spawn(|| {
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka"))
            .args(["restart", "12"])
            .status()
            .expect("scripts/kafka restart")
    });
    let mut unready_while_down = false;
    while !restart.is_finished() {
        if let Ok((503, body)) = common::http_get(&addr, "/health/ready") {
            unready_while_down |= body["broker_unreachable"] == true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(restart.join().unwrap().success(), "the broker restarted");
    assert!(
        unready_while_down,
        "/health/ready answers 503 with broker_unreachable while the broker is away"
    );
    common::produce_partitioned(&events[half..]);
    let outputs = run.outputs();
    common::wait_for_exact(&expected, &outputs, &instances[0]);
    common::wait_for("instance a ready again", Duration::from_secs(60), || {
        matches!(common::http_get(&addr, "/health/ready"), Ok((200, _)))
    });
    let mut instances = instances;
    for instance in &mut instances {
        assert!(
            instance.child.try_wait().unwrap().is_none(),
            "an instance exited during the broker restart:\n{}",
            instance.log_text()
        );
    }
    for instance in instances {
        assert_eq!(instance.stop(Duration::from_secs(60)), 0);
    }
}
