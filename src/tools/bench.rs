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
    /// End to end on a real broker: produce generated events, then time a consume-only rdkafka
    /// loop over them and eddy (exactly-once, the shipped topologies) until its committed offsets
    /// reach the end of every input partition.
    E2e {
        #[arg(
            long,
            env = "EDDY__BOOTSTRAP_SERVERS",
            default_value = "localhost:9092"
        )]
        bootstrap_servers: String,
        #[arg(long, default_value_t = 500_000)]
        events: usize,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Worker threads of the eddy instance.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// eddy's commit (transaction) interval.
        #[arg(long, default_value_t = 100)]
        commit_interval_ms: u64,
        #[arg(long, default_values = ["topology/analytics.toml", "topology/orders.toml"])]
        topology: Vec<PathBuf>,
    },
    /// Query API latency: an index of DAYS of minute windows, then QUERIES requests of
    /// `/api/v1/metrics` over the whole span through the real HTTP listener (p50, p99, max).
    Api {
        #[arg(long, default_value_t = 30)]
        days: i64,
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        #[arg(long, default_value_t = 120)]
        users_per_minute: u32,
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
        BenchCommand::E2e {
            bootstrap_servers,
            events,
            partitions,
            threads,
            commit_interval_ms,
            topology,
        } => end_to_end(
            &bootstrap_servers,
            events,
            partitions,
            threads,
            commit_interval_ms,
            &topology,
        ),
        BenchCommand::Api {
            days,
            queries,
            users_per_minute,
            topology,
        } => super::bench_api::api(days, queries, users_per_minute, &topology),
    }
}

fn end_to_end(
    bootstrap: &str,
    count: usize,
    partitions: i32,
    threads: usize,
    commit_interval_ms: u64,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    use crate::kafka::{ChangelogReader, ClientSettings, RecordProducer, TopicAdmin};
    let run = format!("{:x}", crate::runtime::now_ms());
    let (orders, analytics) = (
        format!("bench-orders-{run}"),
        format!("bench-analytics-{run}"),
    );
    let mut topology = Topology::from_files(files)?;
    for source in &mut topology.sources {
        source.topics = vec![if source.schema == crate::topology::Schema::OrderCreated {
            orders.clone()
        } else {
            analytics.clone()
        }];
    }
    for aggregation in &mut topology.aggregations {
        aggregation.output_topic = format!("bench-{}-{run}", aggregation.output_topic);
    }
    let settings = ClientSettings::plain(bootstrap);
    let admin = TopicAdmin::new(&settings)?;
    admin.create_plain_topics(&[(&orders, partitions), (&analytics, partitions)])?;
    let mut producer = RecordProducer::new(&settings, None)?;
    let mut generator = EventGenerator::new(GeneratorConfig {
        step_ms: 2.0,
        ..GeneratorConfig::default()
    });
    for _ in 0..count {
        let event = generator.next_event();
        producer.send_to(
            if event.stream == "orders" {
                &orders
            } else {
                &analytics
            },
            event.key.as_bytes(),
            &event.value,
        )?;
    }
    producer.flush()?;

    // Consume-only: the same records through the same client library, no processing.
    let reader = ChangelogReader::new(&settings, true)?;
    let all: Vec<i32> = (0..partitions).collect();
    let mut ends = Vec::new();
    let started = Instant::now();
    let mut consumed = 0usize;
    for topic in [&orders, &analytics] {
        ends.push(reader.read_to_end(
            topic,
            &all,
            None,
            std::time::Duration::from_secs(600),
            |_| consumed += 1,
        )?);
    }
    let consume_secs = started.elapsed().as_secs_f64();

    let state_dir = std::env::temp_dir().join(format!("eddy-e2e-{run}"));
    let config = crate::config::Config {
        application_id: format!("bench-{run}"),
        bootstrap_servers: bootstrap.into(),
        state_dir: state_dir.clone(),
        num_threads: threads,
        commit_interval_ms: Some(commit_interval_ms),
        ..Default::default()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let engine = {
        let (config, topology, stop) = (config.clone(), topology.clone(), stop.clone());
        std::thread::spawn(move || {
            crate::runtime::run(crate::runtime::RunOptions {
                config,
                topology,
                stop,
                health: Default::default(),
            })
        })
    };
    loop {
        let done = [&orders, &analytics]
            .iter()
            .zip(&ends)
            .all(|(topic, ends)| {
                admin
                    .group_offsets(&config.application_id, topic, partitions)
                    .is_ok_and(|offsets| {
                        offsets
                            .iter()
                            .zip(ends)
                            .all(|(offset, (_, end))| offset.is_some_and(|o| o >= *end))
                    })
            });
        if done || engine.is_finished() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let eddy_secs = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    engine
        .join()
        .map_err(|_| anyhow::anyhow!("engine panicked"))??;
    let _ = std::fs::remove_dir_all(&state_dir);

    let consume_rate = consumed as f64 / consume_secs;
    let eddy_rate = count as f64 / eddy_secs;
    println!("events:                 {count} over {partitions} partitions per input topic");
    println!("consume-only (rdkafka): {consume_rate:>10.0} events/s ({consumed} read in {consume_secs:.2}s)");
    println!("eddy, exactly-once:     {eddy_rate:>10.0} events/s ({eddy_secs:.2}s to commit every input offset, startup included)");
    println!(
        "eddy / consume-only:    {:>10.1}%",
        100.0 * eddy_rate / consume_rate
    );
    if let Some(rss) = peak_rss_bytes() {
        println!("peak RSS (process):     {:>10.1} MB", rss as f64 / 1e6);
    }
    Ok(())
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
                if s.topics[0] == "orders" {
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
