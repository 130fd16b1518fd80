//! Every step of a commit made to fail on purpose (`EDDY_FAILPOINT`), up to three times a run, on the
//! real broker: after sending, after the offsets, a commit that times out, and a producer fenced
//! mid-commit. The output must still be exactly the reference: nothing missing, nothing twice.

mod common;

use common::reference::reference;
use std::time::Duration;

fn exact_despite(failpoint: &str) {
    let run = common::shipped(&failpoint.replace('_', "-"), 2);
    let config = eddy::events::GeneratorConfig {
        seed: 23,
        users: 200,
        step_ms: 60.0,
        ..Default::default()
    };
    let events = common::generate(8_000, 2, &run.orders, &run.analytics, config);
    let expected = reference(&run.topology, &events);
    let app = common::unique("faults");
    let eddy = run.start(&app, "a", vec![("EDDY_FAILPOINT".into(), failpoint.into())]);
    // In slices, so that many commits carry offsets and the failpoint fires mid-stream.
    for chunk in events.chunks(1_000) {
        common::produce_partitioned(chunk);
        std::thread::sleep(Duration::from_millis(300));
    }
    let outputs = run.outputs();
    common::wait_for_exact(&expected, &outputs, &eddy);
    // It fires on every second commit that carries offsets, at most three times; how many such
    // commits a run has depends on timing, so at least once is what is certain.
    let fired = eddy.log_text().matches("EDDY_FAILPOINT fired").count();
    println!("{failpoint}: fired {fired} times");
    assert!(
        (1..=3).contains(&fired),
        "the failpoint fired {fired} times:\n{}",
        eddy.log_text()
    );
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
}

#[test]
fn commit_fault_abort_after_sending_before_the_offsets() {
    exact_despite("abort_after_send");
}

#[test]
fn commit_fault_abort_after_the_offsets_before_the_commit() {
    exact_despite("abort_after_offsets");
}

#[test]
fn commit_fault_the_commit_times_out_and_is_retried() {
    exact_despite("commit_timeout");
}

#[test]
fn commit_fault_the_producer_is_fenced_mid_commit() {
    exact_despite("fenced_mid_commit");
}
