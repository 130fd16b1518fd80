//! `eddy bench`: measured side by side in one run, because these machines are noisy.

use super::peak_rss_bytes;
use crate::events::{EventGenerator, GeneratorConfig};
use crate::record::DecodePlan;
use crate::task::{CompiledTopology, InputRecord, StateLocation, StreamTask, TaskId, TaskOutput};
use crate::topology::Topology;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Subcommand, Clone, Debug)]
pub enum BenchCommand {
    /// In-process pipeline over generated events (decode -> window -> count/sum/HLL -> cached
    /// state -> RocksDB flush) against a decode-only loop over the same bytes, on one core.
    Pipeline {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Records between commits (a commit flushes caches to RocksDB in one batch).
        #[arg(long, default_value_t = 20_000)]
        commit_every: usize,
        #[arg(long, default_values = ["topology/analytics.toml", "topology/orders.toml"])]
        topology: Vec<PathBuf>,
    },
}

pub fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Pipeline {
            events,
            commit_every,
            topology,
        } => pipeline(events, commit_every, &topology),
    }
}

struct Event {
    topic: &'static str,
    key: Vec<u8>,
    value: Vec<u8>,
}

fn pipeline(count: usize, commit_every: usize, files: &[PathBuf]) -> anyhow::Result<()> {
    let topology = Topology::from_files(files)?;
    let mut generator = EventGenerator::new(GeneratorConfig {
        step_ms: 1.0,
        ..GeneratorConfig::default()
    });
    let events: Vec<Event> = (0..count)
        .map(|_| {
            let e = generator.next_event();
            Event {
                topic: if e.stream == "orders" {
                    "orders"
                } else {
                    "analytics"
                },
                key: e.key.into_bytes(),
                value: e.value,
            }
        })
        .collect();
    let bytes: usize = events.iter().map(|e| e.value.len()).sum();
    let plans: HashMap<&str, DecodePlan> = topology
        .sources
        .iter()
        .map(|s| {
            (
                if s.topic == "orders" {
                    "orders"
                } else {
                    "analytics"
                },
                DecodePlan::for_source(&topology, s),
            )
        })
        .collect();

    // Decode-only: the floor any JSON stream processor pays.
    let started = Instant::now();
    let mut checksum = 0i64;
    for event in &events {
        if let Ok(record) = plans[event.topic].decode(&event.value, None) {
            checksum = checksum.wrapping_add(record.event_time_ms);
        }
    }
    let decode_secs = started.elapsed().as_secs_f64();

    // The pipeline, one partition per source, state in RocksDB.
    let state_dir = std::env::temp_dir().join(format!("eddy-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let compiled = CompiledTopology::new("eddy-bench", topology);
    let partitions: HashMap<String, i32> = compiled
        .input_topics()
        .into_iter()
        .map(|t| (t, 1))
        .collect();
    let state = StateLocation::Disk(state_dir.clone());
    let mut tasks: HashMap<String, StreamTask> = HashMap::new();
    let mut dbs = Vec::new();
    let mut topics: Vec<String> = compiled.input_topics();
    topics.extend(compiled.repartition_topics());
    for topic in &topics {
        let (task, db) = compiled.create_task(
            &TaskId {
                topic: topic.clone(),
                partition: 0,
            },
            &partitions,
            &state,
        )?;
        dbs.push(db);
        tasks.insert(topic.clone(), task);
    }
    let started = Instant::now();
    let mut emitted = 0usize;
    let mut repartitioned = 0usize;
    let mut output = TaskOutput::default();
    for (i, event) in events.iter().enumerate() {
        let task = tasks.get_mut(event.topic).expect("input task");
        task.process(
            InputRecord {
                payload: Some(&event.value),
                key: Some(&event.key),
                timestamp_ms: None,
                offset: i as i64,
            },
            &mut output,
        )?;
        if (i + 1) % commit_every == 0 || i + 1 == events.len() {
            let (e, r) = commit(&mut tasks, &topics, &mut output)?;
            emitted += e;
            repartitioned += r;
        }
    }
    let pipeline_secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&state_dir);

    let decode_rate = count as f64 / decode_secs;
    let pipeline_rate = count as f64 / pipeline_secs;
    println!(
        "events:            {count} ({:.1} MB of JSON, checksum {checksum})",
        bytes as f64 / 1e6
    );
    println!("decode-only:       {decode_rate:>12.0} events/s");
    println!("pipeline:          {pipeline_rate:>12.0} events/s  ({emitted} aggregates emitted, {repartitioned} repartition partials)");
    println!(
        "pipeline / decode: {:>12.1}%",
        100.0 * pipeline_rate / decode_rate
    );
    if let Some(rss) = peak_rss_bytes() {
        println!("peak RSS:          {:>12.1} MB", rss as f64 / 1e6);
    }
    Ok(())
}

/// One commit of the in-process pipeline: flush input tasks, hand partials to their merge tasks
/// (what the repartition topic does between instances), flush those, apply state to RocksDB.
fn commit(
    tasks: &mut HashMap<String, StreamTask>,
    topics: &[String],
    output: &mut TaskOutput,
) -> anyhow::Result<(usize, usize)> {
    let mut emitted = 0;
    let mut repartitioned = 0;
    for topic in topics {
        let task = tasks.get_mut(topic).expect("task");
        task.flush(output)?;
        task.apply_committed(std::mem::take(&mut output.state))?;
        for record in std::mem::take(&mut output.records) {
            match record.kind {
                crate::task::OutgoingKind::Repartition => {
                    repartitioned += 1;
                    let target = tasks.get_mut(&record.topic).expect("repartition task");
                    target.process(
                        InputRecord {
                            payload: record.value.as_deref(),
                            key: record.key.as_deref(),
                            timestamp_ms: None,
                            offset: 0,
                        },
                        output,
                    )?;
                }
                crate::task::OutgoingKind::Aggregate { .. } => emitted += 1,
                _ => {}
            }
        }
    }
    Ok((emitted, repartitioned))
}
