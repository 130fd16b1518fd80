//! Deterministic simulation of the real runtime (`eddy::testing::sim`): several instances of the
//! shipped topologies run their real loop, tasks, operators and RocksDB state against an
//! in-memory cluster, through schedules a seed decides: commit failures of every kind at every
//! step (must abort, fenced, outcome unknown after or before the commit), delivery failures,
//! unreachable brokers, failed seeks, rebalances mid-batch and mid-commit (eager, and cooperative
//! ones that take one partition), sessions timed out (zombies), crashes and restarts with and without local state, slow restores. After each
//! schedule the faults stop, the instances settle, and the committed output must equal the
//! reference computed from the input: nothing missing, duplicated, wrong or unexpected.
//!
//! `cargo test --release --test simulation` runs as many seeds as fit in `EDDY_SIM_BUDGET_S`
//! (default 60 s). Soak: `EDDY_SIM_SEEDS=5000 EDDY_SIM_BUDGET_S=0`. Replay one seed:
//! `EDDY_SIM_SEED=<seed>` (a failing seed prints the line).

mod common;

use common::reference::{reference, verify, Produced};
use eddy::runtime::ports::Clock;
use eddy::runtime::{CommitSettings, Instance, InstanceParts, LoopOptions, StandbySettings};
use eddy::task::{CompiledTopology, StateLocation};
use eddy::testing::sim::{
    Call, FaultOdds, Faults, SimAdmin, SimBroker, SimChangelog, SimClock, SimInput, SimTransactions,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 2;

/// One instance slot: its state directory and, while it runs, the instance.
struct Slot {
    name: String,
    state_dir: PathBuf,
    running: Option<Instance<SimInput>>,
}

struct Simulation {
    seed: u64,
    broker: SimBroker,
    faults: Faults,
    clock: Arc<SimClock>,
    topology: eddy::topology::Topology,
    app: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    topics: Vec<String>,
    partitions: HashMap<String, i32>,
    slots: Vec<Slot>,
    /// How many turns a commit stays in flight before its outcome is learned.
    commit_reported_after: u32,
    /// `task_timeout_ms` of the instances.
    task_timeout: Duration,
    /// How long a batch may take before its tasks carry the rest of their records over. The
    /// simulated clock does not move while a batch runs, so only zero makes them carry: one
    /// seed in four does, every task then processing one record per batch.
    batch_time: Duration,
    /// What happened, for the report of a failing seed.
    trace: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Simulation {
    fn new(seed: u64, instances: usize) -> Simulation {
        let dir = state_tempdir();
        let suffix = format!("sim{seed}");
        let (files, orders, analytics) = common::topologies(dir.path(), &suffix);
        let topology = eddy::topology::Topology::from_files(&files).unwrap();
        let app = format!("sim-{seed}");
        let broker = SimBroker::default();
        let faults = Faults::new(seed);
        let inputs = vec![orders, analytics];
        let partitions: HashMap<String, i32> =
            inputs.iter().map(|t| (t.clone(), PARTITIONS)).collect();
        for topic in &inputs {
            broker.create_topic(topic, PARTITIONS);
        }
        let compiled = CompiledTopology::new(&app, topology.clone());
        for topic in eddy::runtime::planned_topics(&compiled, &partitions) {
            broker.create_topic(&topic.name, topic.partitions);
        }
        let mut topics = inputs.clone();
        topics.extend(compiled.repartition_topics());
        let slots = (0..instances)
            .map(|i| Slot {
                name: format!("i{i}"),
                state_dir: dir.path().join(format!("state-{i}")),
                running: None,
            })
            .collect();
        Simulation {
            seed,
            broker,
            faults,
            clock: Arc::new(SimClock::default()),
            outputs: common::shipped_outputs(&suffix),
            topology,
            app,
            inputs,
            topics,
            partitions,
            slots,
            commit_reported_after: 0,
            task_timeout: Duration::from_secs(300),
            batch_time: if seed % 4 == 2 {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            },
            trace: Vec::new(),
            _dir: dir,
        }
    }

    fn start(&mut self, slot: usize) {
        let compiled = Arc::new(CompiledTopology::new(&self.app, self.topology.clone()));
        let parts = InstanceParts {
            instance: self.slots[slot].name.clone(),
            compiled,
            partitions: self.partitions.clone(),
            state: StateLocation::Disk(self.slots[slot].state_dir.clone()),
            transactions: Arc::new(SimTransactions {
                broker: self.broker.clone(),
                faults: self.faults.clone(),
                application_id: self.app.clone(),
                transactional_id: eddy::runtime::transactional_id(
                    &self.app,
                    &self.slots[slot].name,
                ),
            }),
            changelog: Arc::new(SimChangelog::new(
                self.broker.clone(),
                self.faults.clone(),
                self.clock.clone(),
            )),
            admin: Some(Box::new(SimAdmin(self.broker.clone()))),
            commit: CommitSettings {
                guarantee: eddy::config::ProcessingGuarantee::ExactlyOnce,
                retry_deadline: Duration::from_secs(5),
                background: false,
                inline_reported_after: self.commit_reported_after,
            },
            options: LoopOptions {
                commit_interval: Duration::from_millis(100),
                idle_timeout: None,
                wall_clock_close_ms: 0,
                num_threads: 1,
                repartition_purge_interval_ms: 1,
                task_timeout: self.task_timeout,
                batch_time: self.batch_time,
                state_cleanup_delay: Duration::from_secs(600),
                checkpoint_max_age: Duration::from_secs(86_400),
            },
            clock: self.clock.clone(),
            health: Default::default(),
            // Every other seed keeps a warm copy of each task on another instance, so crashes and
            // takeovers promote standbys (and the output must stay exact).
            standbys: (self.seed % 2 == 1).then(|| StandbySettings {
                replicas: 1,
                instance: self.slots[slot].name.clone(),
                reader: Arc::new(SimChangelog::for_standbys(
                    self.broker.clone(),
                    self.faults.clone(),
                    self.clock.clone(),
                )),
            }),
        };
        let (broker, faults, topics) = (
            self.broker.clone(),
            self.faults.clone(),
            self.topics.clone(),
        );
        let name = self.slots[slot].name.clone();
        let instance = Instance::start(parts, move |listener| {
            Ok(SimInput::join(broker, faults, &name, topics, listener))
        })
        .unwrap_or_else(|e| panic!("seed {}: instance start failed: {e}", self.seed));
        self.slots[slot].running = Some(instance);
    }

    /// One loop turn of `slot`; an instance that decides to stop is shut down and started
    /// again, as a supervisor would.
    fn turn(&mut self, slot: usize) {
        let Some(instance) = self.slots[slot].running.as_mut() else {
            return;
        };
        self.clock.advance(Duration::from_millis(20));
        if let Err(error) = instance.turn() {
            self.trace
                .push(format!("{} stopped: {error}", self.slots[slot].name));
            let instance = self.slots[slot].running.take().unwrap();
            let _ = instance.shutdown(Err(error));
            self.start(slot);
        }
    }

    /// kill -9: the instance vanishes without committing, closing or leaving the group (its
    /// session expires later, or a restart with the same transactional id fences it).
    fn crash(&mut self, slot: usize, keep_state: bool) {
        if let Some(instance) = self.slots[slot].running.take() {
            // Dropped without shutdown: nothing is committed, closed or checkpointed.
            drop(instance);
            self.broker.expire_session(&self.slots[slot].name);
            if !keep_state {
                let _ = std::fs::remove_dir_all(&self.slots[slot].state_dir);
            }
            self.trace.push(format!(
                "{} crashed ({} local state)",
                self.slots[slot].name,
                if keep_state { "with" } else { "without" }
            ));
        }
    }

    fn produce(&self, events: &[Produced]) {
        let now = eddy::runtime::now_ms();
        for e in events {
            self.broker.produce(
                &e.topic,
                e.partition,
                e.key.as_bytes(),
                &serde_json::to_vec(&e.value).unwrap(),
                now,
            );
        }
    }

    /// Whether every input and repartition partition is committed to its end.
    fn settled(&self) -> bool {
        self.topics.iter().all(|topic| {
            (0..PARTITIONS).all(|p| {
                let (_, end) = self.broker.watermarks(topic, p).unwrap();
                let committed = self.broker.committed_offset(topic, p).unwrap_or(0);
                // Transaction markers follow the last record; committed past every record is enough.
                committed >= end - 1 || end == 0
            })
        })
    }

    fn outputs(&self) -> Vec<eddy::task::AggregateRecord> {
        self.outputs
            .iter()
            .flat_map(|topic| self.broker.read_committed(topic))
            .filter_map(|(_, value)| serde_json::from_slice(&value?).ok())
            .collect()
    }
}

/// A directory for the instances' RocksDB files: in memory (tmpfs) where the machine has one, since
/// the simulation opens, syncs and deletes thousands of small RocksDB files per seed, and a disk
/// filesystem makes that most of a seed's time. The files and their RocksDB are the same.
fn state_tempdir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new().prefix("eddy-sim").tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// What one seed did and found.
struct Outcome {
    windows: usize,
    problems: (usize, usize, usize),
    trace: Vec<String>,
    fired: Vec<(Call, u64)>,
}

fn run_seed(seed: u64) -> Outcome {
    let picker = Faults::new(seed ^ 0x5eed);
    let instances = 1 + picker.pick(0..3) as usize;
    let mut sim = Simulation::new(seed, instances);
    let config = eddy::events::GeneratorConfig {
        seed,
        users: 40,
        step_ms: 2_000.0,
        ..Default::default()
    };
    let count = 150 + picker.pick(0..250) as usize;
    let events = common::generate(count, PARTITIONS, &sim.inputs[0], &sim.inputs[1], config);
    let expected = reference(&sim.topology, &events);
    let mut odds = Vec::new();
    for call in [
        Call::CommitAbortable,
        Call::CommitUnknownCommitted,
        Call::CommitUnknownNotCommitted,
        Call::CommitFenced,
        Call::SendAbortable,
        Call::PollUnreachable,
        Call::SeekFails,
        Call::SlowRestore,
        Call::OffsetFetchTimesOut,
        Call::ChangelogUnreachable,
    ] {
        if picker.pick(0..3) > 0 {
            let per_mille = match call {
                Call::SendAbortable => 2 + picker.pick(0..6),
                Call::PollUnreachable
                | Call::SlowRestore
                | Call::OffsetFetchTimesOut
                | Call::ChangelogUnreachable => 20 + picker.pick(0..200),
                _ => 20 + picker.pick(0..150),
            };
            odds.push((call, per_mille as u32));
        }
    }
    // Commits stay in flight for up to a few turns: output is held back, revocations and
    // rollbacks meet a commit whose outcome is not known yet.
    sim.commit_reported_after = picker.pick(0..4) as u32;
    sim.trace.push(format!(
        "{instances} instances, {count} events, commits reported after {} asks, odds {odds:?}",
        sim.commit_reported_after
    ));
    sim.faults.arm(FaultOdds(odds));
    // Part of the input waits before anything starts: the first polls are full.
    let mut produced = picker.pick(0..(events.len() as u64 / 2)) as usize;
    sim.produce(&events[..produced]);
    for slot in 0..instances {
        sim.start(slot);
    }
    let steps = 200 + picker.pick(0..400);
    for _ in 0..steps {
        let slot = picker.pick(0..instances as u64) as usize;
        match picker.pick(0..100) {
            0..=74 => sim.turn(slot),
            75..=84 => {
                let chunk = (1 + picker.pick(0..40)) as usize;
                let end = (produced + chunk).min(events.len());
                sim.produce(&events[produced..end]);
                produced = end;
            }
            85..=89 => sim
                .clock
                .advance(Duration::from_millis(picker.pick(0..300))),
            90..=92 => {
                sim.trace.push("rebalance".into());
                sim.broker.rebalance();
            }
            93 => {
                sim.trace
                    .push(format!("{} session expired", sim.slots[slot].name));
                sim.broker.expire_session(&sim.slots[slot].name);
            }
            94 => {
                let name = sim.slots[slot].name.clone();
                let owned = sim.broker.assignment_of(&name);
                if !owned.is_empty() {
                    let taken = owned[picker.pick(0..owned.len() as u64) as usize].clone();
                    sim.trace
                        .push(format!("{name} loses {taken:?} (cooperative)"));
                    sim.broker.revoke_partitions(&name, &[taken]);
                }
            }
            95..=97 => {
                let keep_state = picker.pick(0..2) == 0;
                sim.crash(slot, keep_state);
                sim.start(slot);
            }
            _ => {
                if let Some(instance) = sim.slots[slot].running.take() {
                    sim.trace
                        .push(format!("{} restarted cleanly", sim.slots[slot].name));
                    let _ = instance.shutdown(Ok(()));
                    sim.start(slot);
                }
            }
        }
    }
    // Heal, deliver the rest, settle.
    sim.faults.heal();
    sim.produce(&events[produced..]);
    let mut rounds = 0;
    let mut settled_for = 0;
    while rounds < 3_000 && settled_for < 30 {
        for slot in 0..instances {
            sim.turn(slot);
        }
        sim.clock.advance(Duration::from_millis(50));
        settled_for = if sim.settled() { settled_for + 1 } else { 0 };
        rounds += 1;
    }
    if rounds >= 3_000 {
        let mut unsettled = Vec::new();
        for topic in &sim.topics {
            for p in 0..PARTITIONS {
                let (_, end) = sim.broker.watermarks(topic, p).unwrap();
                let committed = sim.broker.committed_offset(topic, p);
                if committed.unwrap_or(0) < end - 1 {
                    unsettled.push(format!("{topic}[{p}] end {end} committed {committed:?}"));
                }
            }
        }
        let owners: Vec<(String, Vec<(String, i32)>)> = sim
            .slots
            .iter()
            .map(|slot| (slot.name.clone(), sim.broker.assignment_of(&slot.name)))
            .collect();
        sim.trace.push(format!(
            "did not settle within 3000 rounds: {unsettled:?}; assignments {owners:?}"
        ));
    }
    for slot in &mut sim.slots {
        if let Some(instance) = slot.running.take() {
            let _ = instance.shutdown(Ok(()));
        }
    }
    let emitted = sim.outputs();
    let (windows, mismatches, duplicates, missing) = verify(&expected, &emitted);
    Outcome {
        windows,
        problems: (mismatches, duplicates, missing),
        trace: sim.trace,
        fired: sim.faults.fired(),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn check(seed: u64) -> Outcome {
    let outcome = match std::panic::catch_unwind(|| run_seed(seed)) {
        Ok(outcome) => outcome,
        Err(panic) => {
            eprintln!("seed {seed} panicked; replay: EDDY_SIM_SEED={seed} cargo test --release --test simulation -- --nocapture");
            std::panic::resume_unwind(panic)
        }
    };
    if outcome.problems != (0, 0, 0) {
        panic!(
            "seed {seed}: {} windows checked; mismatches, duplicates, missing = {:?}\nfaults fired: {:?}\ntrace: {:#?}\nreplay: EDDY_SIM_SEED={seed} cargo test --release --test simulation -- --nocapture",
            outcome.windows, outcome.problems, outcome.fired, outcome.trace
        );
    }
    outcome
}

#[test]
fn simulated_schedules_keep_the_output_exact() {
    if std::env::var("EDDY_SIM_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("EDDY_SIM_LOG").unwrap())
            .with_test_writer()
            .try_init();
    }
    if let Some(seed) = env_u64("EDDY_SIM_SEED") {
        let outcome = check(seed);
        println!(
            "seed {seed}: exact, {} windows; faults fired {:?}",
            outcome.windows, outcome.fired
        );
        return;
    }
    let first = env_u64("EDDY_SIM_FIRST_SEED").unwrap_or(1);
    let seeds = env_u64("EDDY_SIM_SEEDS").unwrap_or(u64::MAX);
    let budget = env_u64("EDDY_SIM_BUDGET_S").unwrap_or(60);
    // Seeds are independent simulations (each its own cluster, clock and state directories), so
    // they run on every core; a seed's schedule does not depend on which thread runs it.
    let threads = env_u64("EDDY_SIM_THREADS")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
    let started = Instant::now();
    let next = std::sync::atomic::AtomicU64::new(first);
    let last = first.saturating_add(seeds);
    let totals = std::sync::Mutex::new((0u64, 0usize, HashMap::<Call, u64>::new()));
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                if budget > 0 && started.elapsed() >= Duration::from_secs(budget) {
                    break;
                }
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= last {
                    break;
                }
                let outcome = check(seed);
                let mut totals = totals.lock().unwrap_or_else(|p| p.into_inner());
                totals.0 += 1;
                totals.1 += outcome.windows;
                for (call, n) in outcome.fired {
                    *totals.2.entry(call).or_default() += n;
                }
            });
        }
    });
    let (ran, windows, fired) = totals.into_inner().unwrap_or_else(|p| p.into_inner());
    println!(
        "simulation: {ran} seeds from {first} exact in {:.1}s on {threads} threads, {windows} windows checked; faults fired: {fired:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(ran >= 10, "at least ten seeds must run (ran {ran})");
}

#[test]
fn a_seed_replays_exactly() {
    let a = run_seed(7);
    let b = run_seed(7);
    assert_eq!(a.fired, b.fired);
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.windows, b.windows);
}

/// A stop decided inside a rebalance callback takes effect before anything else of the turn. A
/// poison record (under `on_decode_error = "fail"`) is in the batch the workers hold when a
/// cooperative rebalance revokes another partition; the revoke's commit meets the failure and
/// decides to stop. The task that read the poison record keeps running until the stop takes
/// effect: nothing may be committed past the poison record.
#[test]
fn a_stop_decided_while_revoking_commits_nothing_past_the_poison_record() {
    let mut sim = Simulation::new(99, 1);
    for name in ["analytics.toml", "orders.toml"] {
        let path = sim._dir.path().join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"dlq\"", "\"fail\"")).unwrap();
    }
    let files: Vec<PathBuf> = ["analytics.toml", "orders.toml"]
        .iter()
        .map(|f| sim._dir.path().join(f))
        .collect();
    sim.topology = eddy::topology::Topology::from_files(&files).unwrap();
    let config = eddy::events::GeneratorConfig {
        seed: 99,
        events_per_order: 1,
        ..Default::default()
    };
    let orders: Vec<Produced> =
        common::generate(40, PARTITIONS, &sim.inputs[0], &sim.inputs[1], config)
            .into_iter()
            .filter(|e| e.topic == sim.inputs[0] && !e.closing)
            .collect();
    sim.produce(&orders);
    sim.start(0);
    for _ in 0..50 {
        sim.turn(0);
    }
    let poisoned = (sim.inputs[0].clone(), 0);
    let before = sim.broker.committed_offset(&poisoned.0, 0);
    assert!(before.is_some(), "the good records committed");
    sim.broker.produce(
        &poisoned.0,
        0,
        b"poison",
        b"{not json",
        eddy::runtime::now_ms(),
    );
    sim.produce(&orders[..10]);
    let instance = sim.slots[0].running.as_mut().unwrap();
    // The poison record is polled and processed, with no commit due yet.
    instance.turn().unwrap();
    // A cooperative rebalance takes another partition; a commit is due at the same turn.
    let other = (sim.inputs[0].clone(), 1);
    sim.broker.revoke_partitions("i0", &[other]);
    sim.clock.advance(Duration::from_secs(1));
    let error = (0..5)
        .find_map(|_| instance.turn().err())
        .expect("the poison record stops the instance");
    assert!(
        error.to_string().contains("poison") || error.to_string().contains('@'),
        "{error}"
    );
    let instance = sim.slots[0].running.take().unwrap();
    let _ = instance.shutdown(Err(error));
    assert_eq!(
        sim.broker.committed_offset(&poisoned.0, 0),
        before,
        "nothing committed past the poison record"
    );
}

/// A restore that reads nothing (the changelog's broker away) is waited out by the failure
/// executor, like unreachable brokers: the loop goes on turning for up to `task_timeout_ms` of
/// it, then the instance stops naming what the restore was waiting for.
#[test]
fn a_restore_that_reads_nothing_is_waited_out_then_stops_naming_it() {
    let mut sim = Simulation::new(41, 1);
    sim.task_timeout = Duration::from_secs(5);
    let config = eddy::events::GeneratorConfig {
        seed: 41,
        ..Default::default()
    };
    let events = common::generate(60, PARTITIONS, &sim.inputs[0], &sim.inputs[1], config);
    sim.produce(&events);
    sim.start(0);
    for _ in 0..200 {
        sim.turn(0);
    }
    assert!(sim.broker.committed_offset(&sim.inputs[0], 0).is_some());
    // kill -9 without local state: every store is restored from its changelog on restart.
    sim.crash(0, false);
    sim.faults
        .arm(FaultOdds(vec![(Call::ChangelogUnreachable, 1000)]));
    sim.start(0);
    let instance = sim.slots[0].running.as_mut().unwrap();
    let started = sim.clock.now();
    let error = loop {
        sim.clock.advance(Duration::from_millis(100));
        match instance.turn() {
            Ok(()) => assert!(
                sim.clock.now().saturating_duration_since(started) <= Duration::from_secs(6),
                "still turning past the task timeout"
            ),
            Err(error) => break error,
        }
    };
    let waited = sim.clock.now().saturating_duration_since(started);
    assert!(waited > Duration::from_secs(5), "stopped after {waited:?}");
    assert!(
        error.to_string().contains("listing the offsets"),
        "names what it waited for: {error}"
    );
}
