//! Exactly-once scale-out, proven on the real broker with eddy as separate processes: the final
//! aggregates read with read_committed equal an independent reference exactly, through scaling,
//! SIGKILLs, a frozen (SIGSTOP) zombie, and the crash window that separates the two guarantees.

mod common;

use common::reference::{reference, verify, Identity};
use common::{EddyOptions, EddyProcess};
use eddy::task::AggregateRecord;
use eddy::topology::Topology;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 6;

struct Scenario {
    suffix: String,
    dir: tempfile::TempDir,
    files: Vec<PathBuf>,
    app: String,
    events: Vec<common::reference::Produced>,
    topology: Topology,
}

impl Scenario {
    fn new(name: &str, events: usize, seed: u64) -> Scenario {
        let suffix = common::unique(name);
        let dir = tempfile::tempdir().unwrap();
        let (files, orders, analytics) = common::topologies(dir.path(), &suffix);
        let topology = Topology::from_files(&files).unwrap();
        common::create_topics(&[(&orders, PARTITIONS), (&analytics, PARTITIONS)]);
        let config = eddy::events::GeneratorConfig {
            seed,
            users: 2_000,
            step_ms: 5.0,
            ..Default::default()
        };
        let events = common::generate(events, PARTITIONS, &orders, &analytics, config);
        Scenario {
            app: common::unique("eos"),
            suffix,
            dir,
            files,
            events,
            topology,
        }
    }

    fn start(
        &self,
        instance: &str,
        guarantee: &str,
        extra_env: Vec<(String, String)>,
    ) -> EddyProcess {
        EddyProcess::start(&EddyOptions {
            application_id: &self.app,
            topologies: &self.files,
            state_dir: self.dir.path(),
            guarantee,
            instance,
            extra_env,
        })
    }

    fn outputs(&self) -> Vec<AggregateRecord> {
        common::shipped_outputs(&self.suffix)
            .iter()
            .flat_map(|t| common::read_aggregates(t))
            .collect()
    }

    fn produce(&self, range: std::ops::Range<usize>) {
        common::produce_partitioned(&self.events[range]);
    }

    /// Waits until every expected window was emitted, keeps reading a few seconds more (so a
    /// late duplicate is caught), then checks values and duplicates.
    fn verify(&self, timeout: Duration) -> (usize, usize, usize, usize) {
        let expected = reference(&self.topology, &self.events);
        let deadline = Instant::now() + timeout;
        let mut last = loop {
            let result = verify(&expected, &self.outputs());
            if result.3 == 0 || Instant::now() > deadline {
                break result;
            }
            std::thread::sleep(Duration::from_secs(2));
        };
        if last.3 == 0 {
            std::thread::sleep(Duration::from_secs(5));
            last = verify(&expected, &self.outputs());
        }
        let (checked, mismatches, duplicates, missing) = last;
        println!("{}: {} events, {checked} windows checked, mismatches {mismatches}, duplicate finals {duplicates}, missing {missing}", self.suffix, self.events.len());
        last
    }
}

fn final_duplicates(records: &[AggregateRecord]) -> usize {
    let mut seen: HashMap<Identity, usize> = HashMap::new();
    for r in records.iter().filter(|r| r.is_final) {
        *seen.entry(Identity::of(r)).or_default() += 1;
    }
    seen.values().filter(|&&n| n > 1).count()
}

#[test]
fn eos_a_three_instances_match_the_reference() {
    let s = Scenario::new("three", 200_000, 1);
    let instances: Vec<EddyProcess> = ["a", "b", "c"]
        .iter()
        .map(|i| s.start(i, "exactly_once", vec![]))
        .collect();
    s.produce(0..s.events.len());
    let (_, mismatches, duplicates, missing) = s.verify(Duration::from_secs(420));
    for instance in instances {
        assert_eq!(instance.stop(Duration::from_secs(60)), 0);
    }
    assert_eq!((mismatches, duplicates, missing), (0, 0, 0));
}

#[test]
fn eos_b_scaling_one_to_three_to_one_matches_the_reference() {
    let s = Scenario::new("scale", 200_000, 2);
    let n = s.events.len();
    let a = s.start("a", "exactly_once", vec![]);
    s.produce(0..n / 4);
    std::thread::sleep(Duration::from_secs(5));
    let b = s.start("b", "exactly_once", vec![]);
    let c = s.start("c", "exactly_once", vec![]);
    s.produce(n / 4..n / 2);
    std::thread::sleep(Duration::from_secs(10));
    s.produce(n / 2..3 * n / 4);
    assert_eq!(
        b.stop(Duration::from_secs(60)),
        0,
        "scale-in is a clean shutdown"
    );
    assert_eq!(c.stop(Duration::from_secs(60)), 0);
    s.produce(3 * n / 4..n);
    let (_, mismatches, duplicates, missing) = s.verify(Duration::from_secs(420));
    let log = a.log_text();
    let rebalances =
        log.matches("partitions assigned").count() + log.matches("partitions revoked").count();
    println!("scale 1 -> 3 -> 1: instance a saw {rebalances} rebalance callbacks");
    assert_eq!(a.stop(Duration::from_secs(60)), 0);
    assert!(
        rebalances >= 3,
        "instance a went through the scale-out and scale-in"
    );
    assert_eq!((mismatches, duplicates, missing), (0, 0, 0));
}

#[test]
fn eos_c_sigkill_and_restart_matches_the_reference_with_single_finals() {
    let s = Scenario::new("kill", 200_000, 3);
    let n = s.events.len();
    let names = ["a", "b", "c"];
    let mut instances: Vec<Option<EddyProcess>> = names
        .iter()
        .map(|i| Some(s.start(i, "exactly_once", vec![])))
        .collect();
    let mut kills = 0;
    let chunks = 8;
    let mut rng = 0x2545f4914f6cdd1du64;
    for chunk in 0..chunks {
        s.produce(chunk * n / chunks..(chunk + 1) * n / chunks);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(500 + rng % 3_000));
        if chunk < chunks - 1 {
            let victim = (rng % 3) as usize;
            if let Some(process) = instances[victim].take() {
                process.kill();
                kills += 1;
            }
            std::thread::sleep(Duration::from_millis(rng % 1_500));
            instances[victim] = Some(s.start(names[victim], "exactly_once", vec![]));
        }
    }
    let (_, mismatches, duplicates, missing) = s.verify(Duration::from_secs(480));
    let all = s.outputs();
    println!(
        "SIGKILLs: {kills}; final records: {}; duplicate finals: {}",
        all.iter().filter(|r| r.is_final).count(),
        final_duplicates(&all)
    );
    for process in instances.into_iter().flatten() {
        process.kill();
    }
    assert!(kills >= 5);
    assert_eq!((mismatches, duplicates, missing), (0, 0, 0));
    assert_eq!(
        final_duplicates(&all),
        0,
        "no (aggregation, group, window) has two committed finals"
    );
}

#[test]
fn eos_d_a_frozen_instance_is_fenced_and_its_later_writes_stay_invisible() {
    let s = Scenario::new("zombie", 60_000, 4);
    let n = s.events.len();
    let zombie = s.start("zombie", "exactly_once", vec![]);
    let healthy = s.start("healthy", "exactly_once", vec![]);
    s.produce(0..n / 2);
    std::thread::sleep(Duration::from_secs(8));
    let takeovers = |p: &EddyProcess| {
        p.log_text()
            .matches("partitions assigned partitions=[(")
            .count()
    };
    let before = takeovers(&healthy);
    let frozen_at = Instant::now();
    zombie.signal(libc::SIGSTOP);
    // Records keep arriving while it is frozen; its partitions move after the session timeout.
    s.produce(n / 2..3 * n / 4);
    common::wait_for(
        "the healthy instance to take over the frozen one's partitions",
        Duration::from_secs(90),
        || takeovers(&healthy) > before,
    );
    let frozen_for = frozen_at.elapsed();
    // Past the transaction timeout too, so the coordinator has aborted the zombie's open transaction.
    std::thread::sleep(Duration::from_secs(12));
    let zombie_log_before = zombie.log_text().len();
    zombie.signal(libc::SIGCONT);
    s.produce(3 * n / 4..n);
    let (_, mismatches, duplicates, missing) = s.verify(Duration::from_secs(300));
    let zombie_log = zombie.log_text()[zombie_log_before..].to_string();
    // The zombie learns it is out either from the group (its session timed out: assignment lost)
    // or from the producer (its next commit is fenced and rolled back), whichever comes first.
    let fenced = zombie_log.contains("lost=true")
        || zombie_log.contains("session timed out")
        || zombie_log.contains("rolling back")
        || zombie_log.contains("fenced");
    println!("zombie frozen {frozen_for:?} until its partitions moved (+12 s); after SIGCONT it was fenced: {fenced}");
    zombie.kill();
    assert!(
        fenced,
        "the zombie must notice it was fenced; its log after SIGCONT:\n{zombie_log}"
    );
    healthy.kill();
    assert_eq!(
        (mismatches, duplicates, missing),
        (0, 0, 0),
        "nothing the zombie wrote after being fenced became visible"
    );
}

#[test]
fn eos_e_at_least_once_may_duplicate_where_exactly_once_does_not() {
    let mut duplicates = HashMap::new();
    for guarantee in ["at_least_once", "exactly_once"] {
        let s = Scenario::new(
            if guarantee == "exactly_once" {
                "crash-eos"
            } else {
                "crash-alos"
            },
            20_000,
            5,
        );
        s.produce(0..s.events.len());
        let failpoint = vec![
            (
                "EDDY_FAILPOINT".to_string(),
                "crash_before_commit".to_string(),
            ),
            ("EDDY__COMMIT_INTERVAL_MS".to_string(), "2000".to_string()),
        ];
        let mut crashing = s.start("a", guarantee, failpoint);
        let status = crashing.child.wait().unwrap();
        assert!(!status.success(), "the failpoint aborts the process");
        let visible_after_crash = s.outputs().iter().filter(|r| r.is_final).count();
        println!("{guarantee}: final records visible to read_committed right after the crash: {visible_after_crash}");
        if guarantee == "exactly_once" {
            assert_eq!(
                visible_after_crash, 0,
                "the crashed transaction's output must stay invisible"
            );
        } else {
            assert!(
                visible_after_crash > 0,
                "at-least-once output is visible before its offsets commit"
            );
        }
        let restarted = s.start(
            "a",
            guarantee,
            vec![("EDDY__COMMIT_INTERVAL_MS".to_string(), "2000".to_string())],
        );
        let (_, mismatches, _, missing) = s.verify(Duration::from_secs(240));
        // Let the restarted instance finish re-emitting, then count what a reader sees twice.
        std::thread::sleep(Duration::from_secs(5));
        let dups = final_duplicates(&s.outputs());
        restarted.kill();
        println!("{guarantee}: crash after output was delivered, before the commit -> duplicate finals {dups}, mismatches {mismatches}, missing {missing}");
        assert_eq!(missing, 0);
        duplicates.insert(guarantee, (dups, mismatches));
    }
    // Whether at-least-once re-emits depends on how far the replayed partials find the restored
    // merge watermarks (it did in most runs, not all): what it guarantees to show is asserted
    // above (its output is visible before its offsets commit); the re-emission is reported.
    println!(
        "at-least-once duplicate finals after the restart: {}",
        duplicates["at_least_once"].0
    );
    assert_eq!(
        duplicates["exactly_once"],
        (0, 0),
        "exactly-once aborts the crashed transaction"
    );
}
