//! `eddy bench nats`: the same topology (topology/events.toml) and the same domain-event bytes,
//! read once from a NATS JetStream stream (one split per subject) and once from Kafka (one topic
//! partition per subject), each by one eddy process under exactly-once, timed from ready until
//! every input position is committed. Run side by side, so the ratio is the comparison.

use super::bench_e2e::BrokerBench;
use super::bench_process::{EddyProcess, EddyRun};
use crate::events::{DomainEventGenerator, DOMAIN_SUBJECTS};
use crate::kafka::{ClientSettings, RecordProducer, TopicAdmin};
use crate::nats::{NatsPublisher, NatsSettings};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Options of `eddy bench nats`.
pub struct NatsBench<'a> {
    pub broker: &'a BrokerBench,
    pub nats_url: &'a str,
    pub events: usize,
}

/// One side of the comparison: how long eddy took, and its peak memory.
struct Side {
    secs: f64,
    peak_rss: Option<u64>,
}

/// Rewrites topology/events.toml for one side: a NATS source on this run's stream and subjects,
/// or a Kafka source over one topic per subject; the output renamed for the run.
fn topology_for(run: &str, nats: bool, dir: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string("topology/events.toml")?;
    let mut table: toml::Table = text.parse()?;
    let side = if nats { "nats" } else { "kafka" };
    for source in super::bench_process::tables_mut(&mut table, "source") {
        let subject = |s: &str| format!("b{run}.{s}");
        if nats {
            source.insert("stream".into(), format!("BENCH{run}").into());
            let subjects: Vec<toml::Value> =
                DOMAIN_SUBJECTS.iter().map(|s| subject(s).into()).collect();
            source.insert("subjects".into(), subjects.into());
        } else {
            for key in ["type", "stream", "subjects", "on_missing"] {
                source.remove(key);
            }
            let topics: Vec<toml::Value> = DOMAIN_SUBJECTS
                .iter()
                .map(|s| format!("bench-{run}-{s}").into())
                .collect();
            source.insert("topics".into(), topics.into());
        }
        for version in super::bench_process::tables_mut(source, "version") {
            if let Some(name) = version
                .remove("subject")
                .and_then(|s| s.as_str().map(String::from))
            {
                let (key, value) = if nats {
                    ("subject", subject(&name))
                } else {
                    ("topic", format!("bench-{run}-{name}"))
                };
                version.insert(key.into(), value.into());
            }
        }
    }
    for aggregation in super::bench_process::tables_mut(&mut table, "aggregation") {
        aggregation.insert("output".into(), format!("bench-{run}-{side}-out").into());
    }
    let path = dir.join(format!("events-{side}.toml"));
    std::fs::write(&path, toml::to_string(&table)?)?;
    Ok(path)
}

/// Runs eddy on `file` until `done` says every input position is committed.
fn time_eddy(
    options: &NatsBench<'_>,
    dir: &Path,
    file: &Path,
    application_id: &str,
    done: impl Fn() -> bool,
) -> anyhow::Result<Side> {
    let side = file
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let mut eddy = EddyProcess::start(EddyRun {
        bootstrap: options.broker.bootstrap_servers.as_str(),
        application_id,
        topology: &[file.to_path_buf()],
        state_dir: &dir.join(format!("state-{side}")),
        threads: options.broker.threads,
        commit_interval_ms: options.broker.commit_interval_ms,
        log: dir.join(format!("eddy-{side}.log")),
        env: vec![("EDDY__NATS__SERVERS".into(), options.nats_url.into())],
    })?;
    let ready = eddy.wait_ready(Duration::from_secs(120))?;
    while !done() {
        eddy.check_running()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = ready.elapsed().as_secs_f64();
    let peak_rss = eddy.peak_rss_bytes();
    eddy.stop()?;
    Ok(Side { secs, peak_rss })
}

pub fn nats_vs_kafka(options: NatsBench<'_>) -> anyhow::Result<()> {
    let run = format!("{:x}", crate::runtime::now_ms());
    let dir = std::env::temp_dir().join(format!("eddy-bench-nats-{run}"));
    std::fs::create_dir_all(&dir)?;
    let nats_file = topology_for(&run, true, &dir)?;
    let kafka_file = topology_for(&run, false, &dir)?;

    // The same bytes to both: one NATS subject, and one single-partition Kafka topic, per subject.
    let settings = ClientSettings::plain(options.broker.bootstrap_servers.as_str());
    let admin = TopicAdmin::new(&settings)?;
    let topics: Vec<String> = DOMAIN_SUBJECTS
        .iter()
        .map(|s| format!("bench-{run}-{s}"))
        .collect();
    admin.create_plain_topics(&topics.iter().map(|t| (t.as_str(), 1)).collect::<Vec<_>>())?;
    let nats_settings = NatsSettings::from_config(&crate::config::NatsConfig {
        servers: options.nats_url.to_string(),
        ..Default::default()
    });
    let mut publisher = NatsPublisher::connect(&nats_settings)?;
    publisher.ensure_stream(&format!("BENCH{run}"), &[format!("b{run}.>")])?;
    let mut producer = RecordProducer::new(&settings, None)?;
    let start_ms = crate::runtime::now_ms() - 3_600_000;
    let mut generator = DomainEventGenerator::new(1, start_ms, 5.0, 5_000);
    let mut per_topic = vec![0i64; DOMAIN_SUBJECTS.len()];
    for _ in 0..options.events {
        let (subject, payload) = generator.next_event();
        let i = DOMAIN_SUBJECTS
            .iter()
            .position(|s| *s == subject)
            .unwrap_or(0);
        producer.send_to(&topics[i], subject.as_bytes(), &payload)?;
        per_topic[i] += 1;
        publisher.publish(&format!("b{run}.{subject}"), payload)?;
    }
    producer.flush()?;
    publisher.flush()?;
    drop(producer);

    let nats_app = format!("bench-{run}-nats");
    let assignment = crate::topology::nats_assignment_topic(&nats_app, "domain_events");
    let split_ends: Vec<i64> = DOMAIN_SUBJECTS
        .iter()
        .map(|s| {
            publisher
                .ends
                .get(&format!("b{run}.{s}"))
                .copied()
                .unwrap_or(0) as i64
        })
        .collect();
    let committed_past = |app: &str, topic: &str, partitions: i32, ends: &[i64]| {
        admin
            .group_offsets(app, topic, partitions)
            .is_ok_and(|offsets| {
                offsets
                    .iter()
                    .zip(ends)
                    .all(|(o, end)| *end == 0 || o.is_some_and(|o| o >= *end))
            })
    };
    let nats = time_eddy(&options, &dir, &nats_file, &nats_app, || {
        committed_past(
            &nats_app,
            &assignment,
            DOMAIN_SUBJECTS.len() as i32,
            &split_ends,
        )
    })?;
    let kafka_app = format!("bench-{run}-kafka");
    let kafka = time_eddy(&options, &dir, &kafka_file, &kafka_app, || {
        topics
            .iter()
            .zip(&per_topic)
            .all(|(topic, end)| committed_past(&kafka_app, topic, 1, &[*end]))
    })?;
    if std::env::var_os("EDDY_BENCH_LOG").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let rate = |side: &Side| options.events as f64 / side.secs;
    let mb = |side: &Side| {
        side.peak_rss
            .map_or("?".to_string(), |b| format!("{:.0} MB", b as f64 / 1e6))
    };
    println!(
        "events:                 {} seed 001 domain events, 4 subjects (NATS: 4 splits; Kafka: 4 topics of 1 partition), topology/events.toml",
        options.events
    );
    println!(
        "eddy, NATS source:      {:>10.0} events/s ({:.2}s from ready to every split position committed; peak RSS {})",
        rate(&nats),
        nats.secs,
        mb(&nats)
    );
    println!(
        "eddy, Kafka source:     {:>10.0} events/s ({:.2}s from ready to every input offset committed; peak RSS {})",
        rate(&kafka),
        kafka.secs,
        mb(&kafka)
    );
    println!(
        "NATS / Kafka:           {:>10.2}",
        rate(&nats) / rate(&kafka)
    );
    Ok(())
}
