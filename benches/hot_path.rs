//! Criterion benches of the per-record hot path and the per-commit flush.
//! Run: `cargo bench --bench hot_path`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use eddy::aggregate::{HllSketch, ThetaSketch};
use eddy::events::{EventGenerator, GeneratorConfig};
use eddy::record::DecodePlan;
use eddy::task::{CompiledTopology, InputRecord, StateLocation, TaskId, TaskOutput};
use eddy::topology::Topology;
use std::collections::HashMap;

fn topology() -> Topology {
    let root = env!("CARGO_MANIFEST_DIR");
    Topology::from_files(&[
        format!("{root}/topology/analytics.toml").into(),
        format!("{root}/topology/orders.toml").into(),
    ])
    .unwrap()
}

fn analytics_events(n: usize) -> Vec<Vec<u8>> {
    let mut generator = EventGenerator::new(GeneratorConfig {
        events_per_order: 0,
        step_ms: 1.0,
        ..GeneratorConfig::default()
    });
    (0..n).map(|_| generator.next_event().value).collect()
}

fn decode(c: &mut Criterion) {
    let topology = topology();
    let plan = DecodePlan::for_source(&topology, topology.source("analytics").unwrap());
    let events = analytics_events(10_000);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("analytics_event", |b| {
        b.iter(|| {
            events
                .iter()
                .filter(|e| plan.decode(e, None).is_ok())
                .count()
        })
    });
    group.finish();
}

fn window_update(c: &mut Criterion) {
    let events = analytics_events(10_000);
    let compiled = CompiledTopology::new("bench", topology());
    let partitions: HashMap<String, i32> =
        [("analytics".to_string(), 1), ("orders".to_string(), 1)].into();
    let mut group = c.benchmark_group("window_update");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("analytics_task_in_memory", |b| {
        b.iter_batched(
            || {
                compiled
                    .create_task(
                        &TaskId {
                            topic: "analytics".into(),
                            partition: 0,
                        },
                        &partitions,
                        &StateLocation::Memory,
                    )
                    .unwrap()
                    .0
            },
            |mut task| {
                let mut out = TaskOutput::default();
                for (i, e) in events.iter().enumerate() {
                    task.process(
                        InputRecord {
                            payload: Some(e),
                            key: None,
                            timestamp_ms: None,
                            offset: i as i64,
                            subject: None,
                        },
                        &mut out,
                    )
                    .unwrap();
                }
                task
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// What the sketch benches need of a sketch: HLL and Theta are measured the same way.
trait BenchedSketch: Clone {
    fn empty() -> Self;
    fn add(&mut self, value: &str);
    fn merge_in(&mut self, other: &Self);
    /// The bytes eddy emits (after canonicalizing, where the sketch needs it).
    fn emitted_bytes(&self) -> Vec<u8>;
    fn read(bytes: &[u8]) -> Self;
}

impl BenchedSketch for HllSketch {
    fn empty() -> Self {
        HllSketch::new(12)
    }
    fn add(&mut self, value: &str) {
        self.update_str(value)
    }
    fn merge_in(&mut self, other: &Self) {
        self.merge(other)
    }
    fn emitted_bytes(&self) -> Vec<u8> {
        self.canonical().to_bytes()
    }
    fn read(bytes: &[u8]) -> Self {
        HllSketch::from_bytes(bytes).unwrap()
    }
}

impl BenchedSketch for ThetaSketch {
    fn empty() -> Self {
        ThetaSketch::new(12)
    }
    fn add(&mut self, value: &str) {
        self.update_str(value)
    }
    fn merge_in(&mut self, other: &Self) {
        self.merge(other)
    }
    fn emitted_bytes(&self) -> Vec<u8> {
        self.to_bytes()
    }
    fn read(bytes: &[u8]) -> Self {
        ThetaSketch::from_bytes(bytes, 12).unwrap()
    }
}

/// Update (100k ids), merge (100k into 50k others), serialize and deserialize, at lg_k 12.
fn sketch<S: BenchedSketch>(c: &mut Criterion, name: &str) {
    let users: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(users.len() as u64));
    group.bench_function("update_lg12", |b| {
        b.iter(|| {
            let mut sketch = S::empty();
            users.iter().for_each(|u| sketch.add(u));
            sketch
        })
    });
    group.finish();
    let mut full = S::empty();
    users.iter().for_each(|u| full.add(u));
    // Cloned as state holds it (a Theta sketch compacts on clone).
    let full = full.clone();
    let mut other = S::empty();
    users
        .iter()
        .take(50_000)
        .for_each(|u| other.add(&format!("{u}-b")));
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.bench_function("merge_lg12", |b| {
        b.iter_batched(
            || full.clone(),
            |mut s| {
                s.merge_in(&other);
                s
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("serialize_lg12", |b| b.iter(|| full.emitted_bytes()));
    let bytes = full.emitted_bytes();
    group.bench_function("deserialize_lg12", |b| b.iter(|| S::read(&bytes)));
    group.finish();
}

fn hll(c: &mut Criterion) {
    sketch::<HllSketch>(c, "hll");
}

/// Theta sketches (ClickHouse's uniqTheta state), measured as HLL is.
fn theta(c: &mut Criterion) {
    sketch::<ThetaSketch>(c, "theta");
}

fn state_flush(c: &mut Criterion) {
    let events = analytics_events(20_000);
    let compiled = CompiledTopology::new("bench", topology());
    let partitions: HashMap<String, i32> =
        [("analytics".to_string(), 1), ("orders".to_string(), 1)].into();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("state_flush");
    group.sample_size(20);
    group.bench_function("user_sessions_20k_events_to_rocksdb", |b| {
        let mut round = 0;
        b.iter_batched(
            || {
                round += 1;
                let state = StateLocation::Disk(dir.path().join(round.to_string()));
                let (mut task, db) = compiled
                    .create_task(
                        &TaskId {
                            topic: "analytics".into(),
                            partition: 0,
                        },
                        &partitions,
                        &state,
                    )
                    .unwrap();
                let mut out = TaskOutput::default();
                for (i, e) in events.iter().enumerate() {
                    task.process(
                        InputRecord {
                            payload: Some(e),
                            key: None,
                            timestamp_ms: None,
                            offset: i as i64,
                            subject: None,
                        },
                        &mut out,
                    )
                    .unwrap();
                }
                (task, db)
            },
            |(mut task, db)| {
                let mut out = TaskOutput::default();
                task.flush(&mut out).unwrap();
                task.apply_committed(
                    std::mem::take(&mut out.state),
                    &eddy::state::ChangelogEnds::new(),
                )
                .unwrap();
                (task, db, out)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, decode, window_update, hll, theta, state_flush);
criterion_main!(benches);
