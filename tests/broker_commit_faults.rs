//! Every step of a commit made to fail on purpose (`EDDY_FAILPOINT`), up to three times a run, on the
//! real broker, **with input waiting**: the whole input is produced before eddy starts, so every
//! commit carries offsets, a batch is polled and one is on the workers whenever a failpoint fires.
//! The failpoints: after sending, after the offsets, a commit whose outcome is unknown (committed
//! or not, alternately), and a producer fenced mid-commit. The output must still be exactly the
//! reference: nothing missing, nothing twice, nothing unexpected.
//!
//! The test synchronises on eddy's metrics, not its log: `/health/ready`, then the rollback
//! counters, which also show that work was in flight when the fault fired (offsets rewound,
//! records polled before the rollback dropped).

mod common;

use common::reference::reference;
use std::time::Duration;

/// Events in the backlog (plus one closing record per partition and topic);
/// `EDDY_FAULT_BACKLOG` makes it larger for a longer run.
fn backlog() -> usize {
    std::env::var("EDDY_FAULT_BACKLOG")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(60_000)
}

fn exact_despite(failpoint: &str) {
    exact_despite_with(failpoint, backlog(), &[], |_| {});
}

/// What `during` can look at while eddy runs.
struct Running<'a> {
    addr: &'a str,
    pid: u32,
    events: usize,
    inputs: [&'a str; 2],
}

impl Running<'_> {
    /// Input records (not repartition records) eddy has consumed.
    fn consumed_input(&self) -> f64 {
        self.inputs
            .iter()
            .map(|topic| {
                common::counter_sum(
                    self.addr,
                    "eddy_records_consumed_total",
                    &format!("topic=\"{topic}\""),
                )
            })
            .sum()
    }
}

/// Peak resident memory of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/<pid>/status")
        * 1024
}

/// `during` runs once eddy started, before the output is awaited.
fn exact_despite_with(
    failpoint: &str,
    backlog: usize,
    env: &[(&str, &str)],
    during: impl FnOnce(&Running<'_>),
) {
    let run = common::shipped(&failpoint.replace('_', "-"), 2);
    let config = eddy::events::GeneratorConfig {
        seed: 23,
        users: 200,
        step_ms: 60.0,
        ..Default::default()
    };
    let events = common::generate(backlog, 2, &run.orders, &run.analytics, config);
    let expected = reference(&run.topology, &events);
    common::produce_partitioned(&events);
    let app = common::unique("faults");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut variables = vec![
        ("EDDY_FAILPOINT".into(), failpoint.into()),
        ("EDDY__HTTP__LISTEN".into(), addr.clone()),
        // Short commit intervals: the failpoint fires on every second commit, so all three
        // firings land while most of the backlog is still waiting.
        ("EDDY__COMMIT_INTERVAL_MS".into(), "50".into()),
    ];
    variables.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let eddy = run.start(&app, "a", variables);
    during(&Running {
        addr: &addr,
        pid: eddy.child.id(),
        events: events.len(),
        inputs: [&run.orders, &run.analytics],
    });
    let outputs = run.outputs();
    common::wait_for_exact(&expected, &outputs, &eddy);
    let metric = |name: &str| common::counter_sum(&addr, name, "");
    let aborted = common::counter_sum(&addr, "eddy_transactions_total", "aborted");
    let rewound = metric("eddy_rollback_rewound_offsets_total");
    let stale = metric("eddy_stale_records_dropped_total");
    let consumed_input: f64 = [&run.orders, &run.analytics]
        .iter()
        .map(|topic| {
            common::counter_sum(
                &addr,
                "eddy_records_consumed_total",
                &format!("topic=\"{topic}\""),
            )
        })
        .sum();
    println!(
        "{failpoint}: {aborted} transactions aborted, {rewound} offsets rewound, {stale} polled records dropped as stale, {consumed_input} input records consumed for {} events; peak RSS {:.1} MB",
        events.len(),
        peak_rss(eddy.child.id()) as f64 / 1e6
    );
    assert!(
        aborted >= 1.0 && rewound >= 1.0,
        "the failpoint must roll back work in flight: {aborted} aborted, {rewound} offsets rewound"
    );
    let log = eddy.log.clone();
    let code = eddy.stop(Duration::from_secs(60));
    if let Ok(path) = std::env::var("EDDY_FAULT_LOG") {
        // Keeps eddy's log of a long run (`EDDY_FAULT_LOG=<file>`).
        std::fs::copy(&log, path).unwrap();
    }
    assert_eq!(code, 0);
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
fn commit_fault_the_commit_outcome_is_unknown() {
    exact_despite("commit_outcome_unknown");
}

#[test]
fn commit_fault_the_producer_is_fenced_mid_commit() {
    exact_despite("fenced_mid_commit");
}

/// The transaction coordinator unreachable under load: one commit hangs for 15 s, its
/// transaction open past `transaction.timeout.ms` (10 s), so the broker aborts it. Meanwhile the
/// loop must stop fetching (backpressure) instead of holding back output and state for as long
/// as the commit hangs: with input still waiting, the consumed-records counter stands still while
/// the commit is stalled. Then the commit fails, everything rolls back, and the output is exact.
/// The backlog is large enough (at least 1M events) that the pause engages with input waiting.
#[test]
fn commit_fault_the_coordinator_is_unreachable_past_the_transaction_timeout() {
    exact_despite_with(
        "coordinator_unreachable",
        backlog().max(1_000_000),
        &[(
            "EDDY_FAILPOINT_STALL_MS",
            // `EDDY_FAULT_STALL_MS` stalls longer (the 60 s of the recovery-path issue).
            &std::env::var("EDDY_FAULT_STALL_MS").unwrap_or_else(|_| "15000".into()),
        )],
        |running| {
            let engaged =
                || common::counter_sum(running.addr, "eddy_commit_backpressure_total", "");
            common::wait_for("backpressure", Duration::from_secs(60), || engaged() >= 1.0);
            let before = running.consumed_input();
            std::thread::sleep(Duration::from_secs(3));
            let after = running.consumed_input();
            println!(
                "stalled commit: {before} of {} input records consumed when backpressure engaged, {after} 3 s later; peak RSS {:.1} MB",
                running.events,
                peak_rss(running.pid) as f64 / 1e6
            );
            assert!(
                before < running.events as f64,
                "input must still be waiting when the pause is checked ({before} of {} consumed)",
                running.events
            );
            assert_eq!(before, after, "fetching pauses while the commit is stalled");
        },
    );
}
