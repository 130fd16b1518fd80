//! A restore that outlasts the transaction timeout, interrupted by kill -9, on the real broker.
//!
//! Instance `a` builds changelogs, then stops; instance `b` starts on an empty state directory
//! with a 3-second `transaction.timeout.ms` and restores slowly (`EDDY_FAILPOINT=slow_restore`),
//! while input keeps arriving for the tasks it already runs. Restoring happens between polls, so
//! those tasks go on committing: no transaction times out, nothing is rolled back. `b` is killed
//! mid-restore and started again: its restore resumes from the progress checkpoint instead of
//! from zero, and the output is exactly the reference.

mod common;

use common::reference::reference;
use common::{EddyOptions, EddyProcess};
use std::time::{Duration, Instant};

#[test]
fn a_restore_longer_than_the_transaction_timeout_completes_and_resumes_after_a_kill() {
    let run = common::shipped("restore", 2);
    let config = eddy::events::GeneratorConfig {
        seed: 31,
        users: 2_000,
        step_ms: 30.0,
        ..Default::default()
    };
    let events = common::generate(24_000, 2, &run.orders, &run.analytics, config);
    let expected = reference(&run.topology, &events);
    let app = common::unique("restoreapp");
    let options = |instance: &'static str, extra_env: Vec<(String, String)>| EddyOptions {
        application_id: &app,
        topologies: &run.files,
        state_dir: run.dir.path(),
        guarantee: "exactly_once",
        instance,
        extra_env,
    };
    let (first, rest) = events.split_at(16_000);
    common::produce_partitioned(first);
    let a = EddyProcess::start(&options("a", vec![]));
    // Internal topics exist once eddy says it started.
    common::wait_for("eddy to start", Duration::from_secs(60), || {
        a.log_text().contains("eddy started")
    });
    let changelog = format!("{app}-analytics.user_sessions-changelog");
    common::wait_for(
        "a changelog to restore from",
        Duration::from_secs(120),
        || common::read_committed(&changelog).len() > 1_000,
    );
    assert_eq!(a.stop(Duration::from_secs(60)), 0);

    let slow = || {
        vec![
            ("EDDY_FAILPOINT".to_string(), "slow_restore".to_string()),
            (
                "EDDY__KAFKA_PRODUCER__TRANSACTION_TIMEOUT_MS".to_string(),
                "3000".to_string(),
            ),
        ]
    };
    let b = EddyProcess::start(&options("b", slow()));
    common::wait_for(
        "a restore progress checkpoint",
        Duration::from_secs(120),
        || b.log_text().contains("restore progress checkpointed"),
    );
    let log_path = b.log.clone();
    b.kill();
    let before_kill = std::fs::read_to_string(log_path).unwrap();
    let stores = run.topology.aggregations.len() * 2;

    let restarted = Instant::now();
    let b = EddyProcess::start(&options("b", slow()));
    let (more, closing) = rest.split_at(rest.len() - 4);
    common::produce_partitioned(more);
    let since_restart = |b: &EddyProcess| b.log_text()[before_kill.len()..].to_string();
    common::wait_for("the restore to finish", Duration::from_secs(240), || {
        since_restart(&b).matches("store restored").count() >= stores
    });
    let restore_seconds = restarted.elapsed().as_secs_f64();
    common::produce_partitioned(closing);
    common::wait_for_exact(&expected, &run.outputs(), &b);

    let log = since_restart(&b);
    let resumed = log.matches("resumes from its checkpoint").count();
    println!(
        "first attempt checkpointed {} times before kill -9; after the restart {resumed} stores resumed from their checkpoint; restore took {restore_seconds:.1} s against a 3 s transaction timeout",
        before_kill.matches("restore progress checkpointed").count()
    );
    assert!(resumed >= 1, "the restore resumed where it stopped:\n{log}");
    assert!(
        restore_seconds > 3.0,
        "the restore outlasted the transaction timeout"
    );
    assert!(
        !log.contains("rolling back"),
        "no transaction timed out while restoring:\n{log}"
    );
    assert_eq!(b.stop(Duration::from_secs(60)), 0);
}
