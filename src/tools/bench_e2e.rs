//! The benchmarks on a real broker: throughput against a consume-only loop in the same run, and
//! the latency from produce to a read_committed-visible update.

use super::bench_process::{percentile, BenchTopology, EddyProcess, EddyRun};
use crate::events::{EventGenerator, GeneratorConfig};
use crate::kafka::{ChangelogReader, ClientSettings, RecordProducer, TopicAdmin, TopicTail};
use crate::topology::Schema;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Removes the run's directory, unless `EDDY_BENCH_LOG` asked for eddy's log (kept there).
fn clean_up(dir: &std::path::Path) {
    if std::env::var_os("EDDY_BENCH_LOG").is_some() {
        println!("eddy's log:             {}", dir.join("eddy.log").display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The broker, input partitions and eddy instance the broker benchmarks share.
#[derive(clap::Args, Clone, Debug)]
pub struct BrokerBench {
    #[arg(
        long,
        env = "EDDY__BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    pub bootstrap_servers: String,
    /// Partitions of each input topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Worker threads of the eddy instance.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// eddy's commit (transaction) interval.
    #[arg(long, default_value_t = 100)]
    pub commit_interval_ms: u64,
}

/// Options of `eddy bench e2e`.
pub struct EndToEnd<'a> {
    pub broker: &'a BrokerBench,
    pub events: usize,
    pub topology: &'a [PathBuf],
}

fn run_id() -> String {
    format!("{:x}", crate::runtime::now_ms())
}

fn run_dir(run: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("eddy-bench-{run}"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Produces `events` generated seed events to the topics the topology reads, times a consume-only
/// rdkafka loop over them, then one eddy process (exactly-once) until its committed offsets reach
/// the end of every input partition.
pub fn end_to_end(options: EndToEnd<'_>) -> anyhow::Result<()> {
    let run = run_id();
    let dir = run_dir(&run)?;
    let bench = BenchTopology::prepare(options.topology, &run, &dir)?;
    let settings = ClientSettings::plain(options.broker.bootstrap_servers.as_str());
    let admin = TopicAdmin::new(&settings)?;
    let topics: Vec<(&str, i32)> = bench
        .inputs
        .iter()
        .map(|(_, t)| (t.as_str(), options.broker.partitions))
        .collect();
    admin.create_plain_topics(&topics)?;
    let topic_of = |stream: &str| {
        let schema = if stream == "orders" {
            Schema::OrderCreated
        } else {
            Schema::AnalyticsEvent
        };
        bench
            .inputs
            .iter()
            .find(|(s, _)| *s == schema)
            .map(|(_, t)| t.clone())
    };
    let mut producer = RecordProducer::new(&settings, None)?;
    let mut generator = EventGenerator::new(GeneratorConfig {
        step_ms: 2.0,
        ..GeneratorConfig::default()
    });
    let mut produced = 0;
    while produced < options.events {
        let event = generator.next_event();
        if let Some(topic) = topic_of(event.stream) {
            producer.send_to(&topic, event.key.as_bytes(), &event.value)?;
            produced += 1;
        }
    }
    producer.flush()?;
    drop(producer);

    // Consume-only: the same records through the same client library, no processing.
    let reader = ChangelogReader::new(&settings, true)?;
    let all: Vec<i32> = (0..options.broker.partitions).collect();
    let mut ends = Vec::new();
    let started = Instant::now();
    let consume_cpu_before = super::cpu_seconds("self");
    let mut consumed = 0usize;
    for (_, topic) in &bench.inputs {
        ends.push(
            reader.read_to_end(topic, &all, None, Duration::from_secs(600), |_| {
                consumed += 1
            })?,
        );
    }
    let consume_secs = started.elapsed().as_secs_f64();
    let consume_cpu = super::cpu_seconds("self")
        .zip(consume_cpu_before)
        .map(|(a, b)| a - b);
    drop(reader);

    let application_id = format!("bench-{run}");
    let started = Instant::now();
    let mut eddy = EddyProcess::start(EddyRun {
        bootstrap: options.broker.bootstrap_servers.as_str(),
        application_id: &application_id,
        topology: &bench.files,
        state_dir: &dir.join("state"),
        threads: options.broker.threads,
        commit_interval_ms: options.broker.commit_interval_ms,
        log: dir.join("eddy.log"),
        env: Vec::new(),
    })?;
    let ready = eddy.wait_ready(Duration::from_secs(120))?;
    let cpu_at_ready = (eddy.cpu_seconds(), super::machine_busy_seconds());
    let mut loop_time = LoopTimeSamples::default();
    loop {
        eddy.check_running()?;
        loop_time.add(eddy.loop_time_ratios());
        let done = bench.inputs.iter().zip(&ends).all(|((_, topic), ends)| {
            admin
                .group_offsets(&application_id, topic, options.broker.partitions)
                .is_ok_and(|offsets| {
                    offsets
                        .iter()
                        .zip(ends)
                        .all(|(offset, (_, end))| offset.is_some_and(|o| o >= *end))
                })
        });
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let finished = Instant::now();
    let eddy_cpu = eddy.cpu_seconds().zip(cpu_at_ready.0).map(|(a, b)| a - b);
    let machine_cpu = super::machine_busy_seconds()
        .zip(cpu_at_ready.1)
        .map(|(a, b)| a - b);
    let peak = eddy.peak_rss_bytes();
    eddy.stop()?;
    clean_up(&dir);

    let eddy_secs = (finished - started).as_secs_f64();
    let processing_secs = (finished - ready).as_secs_f64();
    let consume_rate = consumed as f64 / consume_secs;
    let eddy_rate = produced as f64 / eddy_secs;
    let processing_rate = produced as f64 / processing_secs;
    let aggregations = bench.topology.aggregations.len();
    println!(
        "events:                 {produced} over {} partitions per input topic, {aggregations} aggregations",
        options.broker.partitions
    );
    println!("consume-only (rdkafka): {consume_rate:>10.0} events/s ({consumed} read in {consume_secs:.2}s)");
    println!("eddy, exactly-once:     {processing_rate:>10.0} events/s ({processing_secs:.2}s from ready to every input offset committed)");
    println!(
        "eddy / consume-only:    {:>10.1}%",
        100.0 * processing_rate / consume_rate
    );
    println!("with startup:           {eddy_rate:>10.0} events/s ({eddy_secs:.2}s from process start; {:.1}% of consume-only)", 100.0 * eddy_rate / consume_rate);
    if let Some(rss) = peak {
        println!("peak RSS (eddy process): {:>9.1} MB", rss as f64 / 1e6);
    }
    let per_million = |cpu: f64, events: usize| cpu * 1e6 / events as f64;
    if let Some(cpu) = consume_cpu {
        println!(
            "CPU, consume-only:      {:>10.2} s per million events",
            per_million(cpu, consumed)
        );
    }
    if let (Some(cpu), Some(machine)) = (eddy_cpu, machine_cpu) {
        println!(
            "CPU, eddy from ready:   {:>10.2} s per million events; the whole machine (broker, eddy, this benchmark) busy {:.2} of {} cores meanwhile",
            per_million(cpu, produced),
            machine / processing_secs,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
    if let Some(summary) = loop_time.summary() {
        println!("eddy's main loop:       {summary}");
    }
    Ok(())
}

/// `eddy_loop_time_ratio` while eddy works, averaged per phase over commit intervals. The gauges
/// change once per interval: a reading equal to the last is the same interval, and the first one
/// is the interval that was under way at ready (the restores before it), so neither counts.
#[derive(Default)]
struct LoopTimeSamples {
    last: Option<Vec<(String, f64)>>,
    sums: Vec<(String, f64)>,
    samples: usize,
}

impl LoopTimeSamples {
    fn add(&mut self, ratios: Vec<(String, f64)>) {
        if ratios.is_empty() || self.last.as_ref() == Some(&ratios) {
            return;
        }
        let first = self.last.replace(ratios.clone()).is_none();
        if first {
            return;
        }
        self.samples += 1;
        for (phase, share) in ratios {
            match self.sums.iter_mut().find(|(p, _)| *p == phase) {
                Some((_, sum)) => *sum += share,
                None => self.sums.push((phase, share)),
            }
        }
    }

    /// "wait 41%, poll 9%, ..." (means over the samples), largest first.
    fn summary(&self) -> Option<String> {
        if self.samples == 0 {
            return None;
        }
        let mut means: Vec<(&str, f64)> = self
            .sums
            .iter()
            .map(|(phase, sum)| (phase.as_str(), 100.0 * sum / self.samples as f64))
            .collect();
        means.sort_by(|a, b| b.1.total_cmp(&a.1));
        let shares: Vec<String> = means
            .iter()
            .map(|(phase, mean)| format!("{phase} {mean:.0}%"))
            .collect();
        Some(format!(
            "{} (eddy_loop_time_ratio, mean over {} commit intervals)",
            shares.join(", "),
            self.samples
        ))
    }
}

/// Options of `eddy bench latency`.
pub struct Latency<'a> {
    pub broker: &'a BrokerBench,
    pub rate: u64,
    pub seconds: u64,
    pub probe_every: u64,
    /// Probes of the first seconds (the consumer's first fetches) are reported apart.
    pub warmup_seconds: u64,
}

/// The topology the latency benchmark runs: a per-key count emitted on every commit.
const LATENCY_TOPOLOGY: &str = r#"
[[source]]
name = "probes"
topic = "INPUT"
schema = "json"
key_field = "probe"
time = { field = "ts", format = "epoch_ms" }

[[aggregation]]
name = "latency.by_probe"
source = "probes"
group_by = ["probe"]
window = { type = "tumbling", size = "1m" }
grace = "10s"
emit = "update"
output = "OUTPUT"
[aggregation.aggregates]
events = "count"
"#;

/// Produces at a fixed rate with the wall clock as event time; every `probe_every`-th record has a
/// key of its own, and its latency is the time from its send to the first update of its group a
/// read_committed consumer of the output topic sees.
pub fn latency(options: Latency<'_>) -> anyhow::Result<()> {
    let run = run_id();
    let dir = run_dir(&run)?;
    let (input, output) = (
        format!("bench-latency-in-{run}"),
        format!("bench-latency-out-{run}"),
    );
    let file = dir.join("latency.toml");
    std::fs::write(
        &file,
        LATENCY_TOPOLOGY
            .replace("INPUT", &input)
            .replace("OUTPUT", &output),
    )?;
    let settings = ClientSettings::plain(options.broker.bootstrap_servers.as_str());
    let admin = TopicAdmin::new(&settings)?;
    admin.create_plain_topics(&[
        (input.as_str(), options.broker.partitions),
        (output.as_str(), options.broker.partitions),
    ])?;
    let application_id = format!("bench-{run}");
    let mut eddy = EddyProcess::start(EddyRun {
        bootstrap: options.broker.bootstrap_servers.as_str(),
        application_id: &application_id,
        topology: std::slice::from_ref(&file),
        state_dir: &dir.join("state"),
        threads: options.broker.threads,
        commit_interval_ms: options.broker.commit_interval_ms,
        log: dir.join("eddy.log"),
        env: Vec::new(),
    })?;
    eddy.wait_ready(Duration::from_secs(120))?;

    let total = options.rate * options.seconds;
    let probes = (total / options.probe_every.max(1)) as usize;
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; probes + 1]));
    let seen: Arc<Mutex<Vec<Option<f64>>>> = Arc::new(Mutex::new(vec![None; probes + 1]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (settings, output, sent, seen, stop) = (
            settings.clone(),
            output.clone(),
            sent.clone(),
            seen.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || -> anyhow::Result<()> {
            let tail = TopicTail::new(&settings, &[&output])?;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(record) = tail.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let now = Instant::now();
                let Some(value) = record.value else { continue };
                let Ok(aggregate) = serde_json::from_slice::<crate::task::AggregateRecord>(&value)
                else {
                    continue;
                };
                let probe = aggregate.group.get("probe").and_then(|p| p.as_str());
                let Some(id) = probe.and_then(|p| p.strip_prefix('p')?.parse::<usize>().ok())
                else {
                    continue;
                };
                let sent_at = sent.lock().expect("lock").get(id).copied().flatten();
                if let (Some(sent_at), Some(slot)) =
                    (sent_at, seen.lock().expect("lock").get_mut(id))
                {
                    slot.get_or_insert((now - sent_at).as_secs_f64() * 1000.0);
                }
            }
            Ok(())
        })
    };

    let mut producer = RecordProducer::new(&settings, None)?;
    let started = Instant::now();
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / options.rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let probe = i % options.probe_every.max(1) == 0;
        let key = if probe {
            format!("p{}", i / options.probe_every.max(1))
        } else {
            format!("bulk{}", i % 64)
        };
        let value = format!(r#"{{"probe":"{key}","ts":{}}}"#, crate::runtime::now_ms());
        if probe {
            let id = (i / options.probe_every.max(1)) as usize;
            if let Some(slot) = sent.lock().expect("lock").get_mut(id) {
                *slot = Some(Instant::now());
            }
        }
        producer.send_to(&input, key.as_bytes(), value.as_bytes())?;
        producer.poll();
    }
    producer.flush()?;
    let produce_secs = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(15);
    let sent_probes = sent.lock().expect("lock").iter().flatten().count();
    while Instant::now() < deadline
        && seen.lock().expect("lock").iter().flatten().count() < sent_probes
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    eddy.stop()?;
    clean_up(&dir);

    let seen = seen.lock().expect("lock").clone();
    let per_second = (options.rate / options.probe_every.max(1)).max(1) as usize;
    let worst = |probes: &[Option<f64>]| probes.iter().flatten().copied().fold(0.0, f64::max);
    if std::env::var_os("EDDY_BENCH_LOG").is_some() {
        for (second, chunk) in seen.chunks(per_second).enumerate() {
            println!("second {second:>3}: worst {:.0} ms", worst(chunk));
        }
    }
    let warmup = (per_second * options.warmup_seconds as usize).min(seen.len());
    let (warming, measured) = seen.split_at(warmup);
    let mut latencies: Vec<f64> = measured.iter().flatten().copied().collect();
    latencies.sort_by(f64::total_cmp);
    println!(
        "produced:               {total} records at {:.0}/s over {} partitions, {} probes ({} timed after the warm-up)",
        total as f64 / produce_secs,
        options.broker.partitions,
        sent_probes,
        latencies.len()
    );
    println!(
        "commit interval:        {} ms (exactly-once, emit = \"update\")",
        options.broker.commit_interval_ms
    );
    println!(
        "warm-up (first {} s):    worst {:.1} ms (not counted below)",
        options.warmup_seconds,
        worst(warming)
    );
    println!(
        "produce -> visible:     p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    let visible = seen.iter().flatten().count();
    if visible < sent_probes {
        anyhow::bail!(
            "{} of {sent_probes} probes never became visible within 15 s",
            sent_probes - visible
        );
    }
    Ok(())
}
