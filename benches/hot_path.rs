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

fn hll(c: &mut Criterion) {
    let users: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    let mut group = c.benchmark_group("hll");
    group.throughput(Throughput::Elements(users.len() as u64));
    group.bench_function("update_lg12", |b| {
        b.iter(|| {
            let mut sketch = HllSketch::new(12);
            users.iter().for_each(|u| sketch.update_str(u));
            sketch
        })
    });
    group.finish();
    let mut full = HllSketch::new(12);
    users.iter().for_each(|u| full.update_str(u));
    let mut other = HllSketch::new(12);
    users
        .iter()
        .take(50_000)
        .for_each(|u| other.update_str(&format!("{u}-b")));
    let mut group = c.benchmark_group("hll");
    group.throughput(Throughput::Elements(1));
    group.bench_function("merge_lg12", |b| {
        b.iter_batched(
            || full.clone(),
            |mut s| {
                s.merge(&other);
                s
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("serialize_lg12", |b| b.iter(|| full.canonical().to_bytes()));
    let bytes = full.to_bytes();
    group.bench_function("deserialize_lg12", |b| {
        b.iter(|| HllSketch::from_bytes(&bytes).unwrap())
    });
    group.finish();
}

/// The same as `hll` for Theta sketches (ClickHouse's uniqTheta state), at the same sizes.
fn theta(c: &mut Criterion) {
    let users: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    let mut group = c.benchmark_group("theta");
    group.throughput(Throughput::Elements(users.len() as u64));
    group.bench_function("update_lg12", |b| {
        b.iter(|| {
            let mut sketch = ThetaSketch::new(12);
            users.iter().for_each(|u| sketch.update_str(u));
            sketch
        })
    });
    group.finish();
    let mut full = ThetaSketch::new(12);
    users.iter().for_each(|u| full.update_str(u));
    let full = full.clone(); // compacted, as state holds it after a merge
    let mut other = ThetaSketch::new(12);
    users
        .iter()
        .take(50_000)
        .for_each(|u| other.update_str(&format!("{u}-b")));
    let mut group = c.benchmark_group("theta");
    group.throughput(Throughput::Elements(1));
    group.bench_function("merge_lg12", |b| {
        b.iter_batched(
            || full.clone(),
            |mut s| {
                s.merge(&other);
                s
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("serialize_lg12", |b| b.iter(|| full.to_bytes()));
    let bytes = full.to_bytes();
    group.bench_function("deserialize_lg12", |b| {
        b.iter(|| ThetaSketch::from_bytes(&bytes, 12).unwrap())
    });
    group.finish();
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
                task.apply_committed(std::mem::take(&mut out.state))
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
