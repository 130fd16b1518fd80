//! `eddy bench`: measured side by side in one run, because these machines are noisy.

use super::bench_e2e::BrokerBench;
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
    /// End to end on a real broker: produce generated seed events to the topics the topology
    /// reads, then time a consume-only rdkafka loop over them and an eddy process (exactly-once)
    /// until its committed offsets reach the end of every input partition.
    E2e {
        #[command(flatten)]
        broker: BrokerBench,
        #[arg(long, default_value_t = 500_000)]
        events: usize,
        #[arg(long, default_values = ["topology/analytics.toml", "topology/orders.toml"])]
        topology: Vec<PathBuf>,
    },
    /// The same topology (topology/events.toml) over the same seed 001 events read from NATS
    /// JetStream (one split per subject) and from Kafka (one partition per subject), one eddy
    /// process each under exactly-once, timed from ready until every position is committed.
    Nats {
        #[command(flatten)]
        broker: BrokerBench,
        #[arg(
            long,
            env = "EDDY__NATS__SERVERS",
            default_value = "nats://localhost:4222"
        )]
        nats_url: String,
        #[arg(long, default_value_t = 300_000)]
        events: usize,
    },
    /// Failover on a real broker: three instances keep per-user session state of KEYS users
    /// while events arrive at RATE; one is killed with kill -9 per case (restarted on its state
    /// directory, or never, with and without standbys). Prints the longest standstill of any
    /// input partition (committed offsets read every 250 ms), the changelog records restored,
    /// and whether the output stayed exact.
    Failover {
        #[command(flatten)]
        broker: BrokerBench,
        /// Users with session state, one run per value.
        #[arg(long, value_delimiter = ',', default_values_t = [10_000u32, 4_000_000])]
        keys: Vec<u32>,
        /// Events per second while the cases run.
        #[arg(long, default_value_t = 5_000)]
        rate: u64,
        #[arg(
            long,
            value_delimiter = ',',
            value_enum,
            default_values_t = [
                super::bench_failover::FailoverCase::Restart,
                super::bench_failover::FailoverCase::RestartDynamic,
                super::bench_failover::FailoverCase::Takeover,
                super::bench_failover::FailoverCase::TakeoverStandby,
            ]
        )]
        cases: Vec<super::bench_failover::FailoverCase>,
        /// Runs of every case per key count (each builds its state anew).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Serve the query API on every instance (`http.query_api`). Off by default here: each
        /// instance then indexes every output partition in memory, and with millions of sessions
        /// updated 5,000 times a second that took about two thirds of a core per instance, which
        /// on the 2-core machine slowed the takeovers it is meant to measure.
        #[arg(long)]
        query_api: bool,
    },
    /// Latency on a real broker: records produced at a fixed rate (use half of the maximum
    /// throughput), p50/p99/max from produce to the first read_committed-visible update
    /// (`emit = "update"`, exactly-once) of the record's group.
    Latency {
        #[command(flatten)]
        broker: BrokerBench,
        /// Records per second.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// One record in this many is a probe (a group of its own, timed).
        #[arg(long, default_value_t = 50)]
        probe_every: u64,
        /// Probes of the first seconds are reported apart (start-up, not steady state).
        #[arg(long, default_value_t = 2)]
        warmup_seconds: u64,
    },
    /// Memory with many live keys: one task counts KEYS distinct (group, window) keys that all
    /// stay open, state in RocksDB, commits every COMMIT_EVERY records; prints peak RSS.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
        #[arg(long, default_value_t = 20_000)]
        commit_every: usize,
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
            broker,
            events,
            topology,
        } => super::bench_e2e::end_to_end(super::bench_e2e::EndToEnd {
            broker: &broker,
            events,
            topology: &topology,
        }),
        BenchCommand::Nats {
            broker,
            nats_url,
            events,
        } => super::bench_nats::nats_vs_kafka(super::bench_nats::NatsBench {
            broker: &broker,
            nats_url: &nats_url,
            events,
        }),
        BenchCommand::Failover {
            broker,
            keys,
            rate,
            cases,
            runs,
            query_api,
        } => super::bench_failover::failover(super::bench_failover::Failover {
            broker: &broker,
            keys: &keys,
            rate,
            cases: &cases,
            runs,
            query_api,
        }),
        BenchCommand::Latency {
            broker,
            rate,
            seconds,
            probe_every,
            warmup_seconds,
        } => super::bench_e2e::latency(super::bench_e2e::Latency {
            broker: &broker,
            rate,
            seconds,
            probe_every,
            warmup_seconds,
        }),
        BenchCommand::Memory { keys, commit_every } => memory(keys, commit_every),
        BenchCommand::Api {
            days,
            queries,
            users_per_minute,
            topology,
        } => super::bench_api::api(days, queries, users_per_minute, &topology),
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
    let read: Vec<&str> = topology
        .sources
        .iter()
        .map(|s| s.topics[0].as_str())
        .collect();
    anyhow::ensure!(
        read.iter().all(|t| ["orders", "analytics"].contains(t)),
        "bench pipeline generates the seed events for topics `orders` and `analytics`; the topology reads {read:?}"
    );
    // Events of streams the topology does not read are not generated into the run.
    let events: Vec<Event> = std::iter::from_fn(|| Some(generator.next_event()))
        .map(|e| Event {
            topic: if e.stream == "orders" {
                "orders"
            } else {
                "analytics"
            },
            key: e.key.into_bytes(),
            value: e.value,
        })
        .filter(|e| read.contains(&e.topic))
        .take(count)
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
    let mut totals = CommitTotals::default();
    let mut output = TaskOutput::default();
    for (i, event) in events.iter().enumerate() {
        let task = tasks.get_mut(event.topic).expect("input task");
        task.process(
            InputRecord {
                payload: Some(&event.value),
                key: Some(&event.key),
                timestamp_ms: None,
                offset: i as i64,
                subject: None,
            },
            &mut output,
        )?;
        if (i + 1) % commit_every == 0 || i + 1 == events.len() {
            commit(&mut tasks, &topics, &mut output, &mut totals)?;
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
    let CommitTotals {
        emitted,
        repartitioned,
        output_bytes,
        repartition_bytes,
        state_bytes,
    } = totals;
    println!("pipeline:          {pipeline_rate:>12.0} events/s  ({emitted} aggregates emitted, {repartitioned} repartition partials)");
    println!(
        "bytes written:     {:>12.1} MB to stores and changelogs, {:.1} MB of repartition partials, {:.1} MB of output records",
        state_bytes as f64 / 1e6,
        repartition_bytes as f64 / 1e6,
        output_bytes as f64 / 1e6
    );
    println!(
        "pipeline / decode: {:>12.1}%",
        100.0 * pipeline_rate / decode_rate
    );
    if let Some(rss) = peak_rss_bytes() {
        println!("peak RSS:          {:>12.1} MB", rss as f64 / 1e6);
    }
    Ok(())
}

/// What the pipeline's commits wrote: records, and the bytes of their keys and values (state
/// writes are what the changelogs carry).
#[derive(Default)]
struct CommitTotals {
    emitted: usize,
    repartitioned: usize,
    output_bytes: usize,
    repartition_bytes: usize,
    state_bytes: usize,
}

/// One commit of the in-process pipeline: flush input tasks, hand partials to their merge tasks
/// (what the repartition topic does between instances), flush those, apply state to RocksDB.
fn commit(
    tasks: &mut HashMap<String, StreamTask>,
    topics: &[String],
    output: &mut TaskOutput,
    totals: &mut CommitTotals,
) -> anyhow::Result<()> {
    let bytes = |record: &crate::task::OutgoingRecord| {
        record.key.as_ref().map_or(0, Vec::len) + record.value.as_ref().map_or(0, Vec::len)
    };
    for topic in topics {
        let task = tasks.get_mut(topic).expect("task");
        task.flush(output)?;
        let state = std::mem::take(&mut output.state);
        totals.state_bytes += state
            .iter()
            .flat_map(|pending| &pending.writes)
            .map(|w| w.key.len() + w.value.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        task.apply_committed(state, &crate::state::ChangelogEnds::new())?;
        for record in std::mem::take(&mut output.records) {
            match record.kind {
                crate::task::OutgoingKind::Repartition => {
                    totals.repartitioned += 1;
                    totals.repartition_bytes += bytes(&record);
                    let target = tasks.get_mut(&record.topic).expect("repartition task");
                    target.process(
                        InputRecord {
                            payload: record.value.as_deref(),
                            key: record.key.as_deref(),
                            timestamp_ms: None,
                            offset: 0,
                            subject: None,
                        },
                        output,
                    )?;
                }
                crate::task::OutgoingKind::Aggregate { .. } => {
                    totals.emitted += 1;
                    totals.output_bytes += bytes(&record);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// One task, every key live: what memory does with `keys` open (group, window) entries.
fn memory(keys: usize, commit_every: usize) -> anyhow::Result<()> {
    use crate::topology::{AggregateKind, AggregationBuilder, Schema, SourceBuilder, TimeFormat};
    let topology = Topology::builder()
        .source(
            SourceBuilder::new("events", "events", Schema::Json)
                .key_field("user")
                .time_field("ts", TimeFormat::EpochMillis)
                .build(),
        )
        .aggregation(
            AggregationBuilder::new("events.per_user", "events", "out")
                .group_by("user")
                .tumbling(24 * 3_600_000)
                .aggregate("events", AggregateKind::Count)
                .aggregate("amount", AggregateKind::Sum("amount".into()))
                .build(),
        )
        .build()?;
    let state_dir = std::env::temp_dir().join(format!("eddy-bench-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let compiled = CompiledTopology::new("eddy-bench-memory", topology);
    let partitions: HashMap<String, i32> = [("events".to_string(), 1)].into();
    let id = TaskId {
        topic: "events".into(),
        partition: 0,
    };
    let (mut task, _db) =
        compiled.create_task(&id, &partitions, &StateLocation::Disk(state_dir.clone()))?;
    let baseline = super::current_rss_bytes().unwrap_or(0);
    let started = Instant::now();
    let mut output = TaskOutput::default();
    let mut value = Vec::with_capacity(64);
    for i in 0..keys {
        value.clear();
        use std::io::Write;
        write!(
            value,
            r#"{{"user":"user-{i:08}","ts":{},"amount":{}}}"#,
            1_795_340_400_000i64 + (i % 1000) as i64,
            i % 100
        )?;
        task.process(
            InputRecord {
                payload: Some(&value),
                key: None,
                timestamp_ms: None,
                offset: i as i64,
                subject: None,
            },
            &mut output,
        )?;
        if (i + 1) % commit_every == 0 || i + 1 == keys {
            task.flush(&mut output)?;
            task.apply_committed(
                std::mem::take(&mut output.state),
                &crate::state::ChangelogEnds::new(),
            )?;
            output.records.clear();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let open: usize = task.operators().map(|o| o.open_windows()).sum();
    let cached: usize = task
        .operators()
        .filter_map(|o| o.store())
        .map(|s| s.cached_bytes())
        .sum();
    let rss = super::current_rss_bytes().unwrap_or(0);
    let peak = peak_rss_bytes().unwrap_or(0);
    drop(task);
    let _ = std::fs::remove_dir_all(&state_dir);
    println!("live keys:            {open} (group, window) entries, {keys} records in {secs:.1}s");
    println!(
        "state cache:          {:.1} MB budget (cache_max_bytes), {:.1} MB cached at the end",
        compiled.cache_budget().limit() as f64 / 1e6,
        cached as f64 / 1e6
    );
    println!("RSS before the run:   {:>8.1} MB", baseline as f64 / 1e6);
    println!("RSS at the end:       {:>8.1} MB", rss as f64 / 1e6);
    println!("peak RSS:             {:>8.1} MB", peak as f64 / 1e6);
    Ok(())
}
