//! Local state survives a crash (KIP-892's idea), on the real broker: every write eddy applies to
//! RocksDB after a commit carries, in the same atomic batch, how far into its changelog the store
//! now reaches. A restarted instance keeps its files and restores only the changelog past that.
//!
//! One instance (static membership, so a restart rejoins at once) is crashed three ways with
//! input waiting: kill -9 mid-run; `EDDY_FAILPOINT=crash_before_apply` (a commit succeeded, its
//! writes never reached RocksDB); `EDDY_FAILPOINT=crash_mid_apply` (one task's writes did, the
//! others' did not). After each restart the records restored must be a fraction of the changelogs
//! (after a crash in the apply, about what the crashed run committed and did not apply), which a
//! full restore would not be, and at the end the output must be exactly the reference.

mod common;

use common::reference::reference;
use common::EddyProcess;
use std::time::{Duration, Instant};

/// Waits until the instance is ready (every task restored) and returns the records it restored.
fn restored_when_ready(addr: &str, eddy: &EddyProcess) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !matches!(common::http_get(addr, "/health/ready"), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "not ready after 2 minutes:\n{}",
            eddy.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    common::counter_sum(addr, "eddy_restore_records_total", "")
}

#[test]
fn local_state_survives_kill_9_and_crashes_while_applying_a_commit() {
    let run = common::shipped("localstate", 3);
    let config = eddy::events::GeneratorConfig {
        seed: 23,
        users: 400,
        step_ms: 30.0,
        ..Default::default()
    };
    let events = common::generate(36_000, 3, &run.orders, &run.analytics, config);
    let expected = reference(&run.topology, &events);
    let app = common::unique("localstateapp");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let env = |failpoint: Option<&str>| {
        let mut env = vec![
            ("EDDY__HTTP__LISTEN".to_string(), addr.clone()),
            ("EDDY__GROUP_INSTANCE_ID".to_string(), format!("{app}-a")),
        ];
        if let Some(failpoint) = failpoint {
            env.push(("EDDY_FAILPOINT".to_string(), failpoint.to_string()));
        }
        env
    };
    let quarter = events.len() / 4;

    // 1. kill -9 with input waiting, once part of it is processed and committed.
    common::produce_partitioned(&events[..2 * quarter]);
    let eddy = run.start(&app, "a", env(None));
    common::wait_for(
        "a quarter of the input consumed and stores written",
        Duration::from_secs(120),
        || {
            common::counter_sum(&addr, "eddy_records_consumed_total", "") >= quarter as f64
                && common::changelog_records(&app, &run.topology) >= 500
        },
    );
    eddy.kill();
    // (crash, changelog records before the crashed run started, at the crash, restored after)
    let mut results = Vec::new();
    let changelogs = common::changelog_records(&app, &run.topology);
    let mut eddy = run.start(&app, "a", env(None));
    results.push(("kill -9", 0, changelogs, restored_when_ready(&addr, &eddy)));

    // 2 and 3. A crash while applying a commit, with the next part of the input waiting.
    for (failpoint, part) in [("crash_before_apply", 2), ("crash_mid_apply", 3)] {
        eddy.kill();
        let before = common::changelog_records(&app, &run.topology);
        common::produce_partitioned(&events[part * quarter..(part + 1) * quarter]);
        let mut crashing = run.start(&app, "a", env(Some(failpoint)));
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = crashing.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{failpoint} never fired:\n{}",
                crashing.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            status.code().is_none(),
            "{failpoint}: the process aborts ({status})"
        );
        let changelogs = common::changelog_records(&app, &run.topology);
        eddy = run.start(&app, "a", env(None));
        results.push((
            failpoint,
            before,
            changelogs,
            restored_when_ready(&addr, &eddy),
        ));
    }
    // The last quarter (and the closing records) after the restarts: everything closes.
    common::produce_partitioned(&events[4 * quarter..]);
    for (crash, before, changelogs, restored) in &results {
        println!("{crash}: restored {restored} of the {changelogs} changelog records ({} written by the crashed run)", changelogs - before);
    }
    common::wait_for_exact(&expected, &run.outputs(), &eddy);
    for (crash, before, changelogs, restored) in results {
        // Never everything: after kill -9 at most a quarter (the commits not yet applied when it
        // came); after a crash in the apply, what the crashed run wrote (the commit it did not
        // apply), plus a little of what came before (a task the crashed run had not restored yet
        // keeps the previous run's position).
        let bound = if before == 0 {
            changelogs as f64 / 4.0
        } else {
            (changelogs - before) as f64 + before as f64 / 10.0
        };
        assert!(
            restored <= bound && restored < changelogs as f64,
            "after {crash} the stores kept their files: restored {restored} of {changelogs} changelog records, {before} written before the crashed run"
        );
    }
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
}
