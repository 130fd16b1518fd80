//! `eddy demo`: an embedded broker, a generator, the shipped topologies and a live table.

use super::generate::{produce_events, GenerateArgs};
use super::LiveTable;
use crate::config::Config;
use crate::kafka::{ClientSettings, EmbeddedCluster, TopicTail};
use crate::task::AggregateRecord;
use crate::telemetry::Health;
use crate::topology::Topology;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// Events per second produced by the generator.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Event time runs this many times faster than the wall clock, so one-minute windows close
    /// every few seconds.
    #[arg(long, default_value_t = 10.0)]
    pub speed: f64,
    /// Partitions of the input topics.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Topology files.
    #[arg(long, default_values = ["topology/analytics.toml", "topology/orders.toml"])]
    pub topology: Vec<PathBuf>,
    /// Serve /metrics and /health on this address while the demo runs.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub http_listen: String,
    /// Also run seed 001's event bus: publish domain events to this NATS server (JetStream) and
    /// aggregate them with topology/events.toml. `scripts/demo --nats` starts a server for it.
    #[arg(long)]
    pub nats_url: Option<String>,
}

pub fn run_demo(mut args: DemoArgs, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let events_topology = PathBuf::from("topology/events.toml");
    if args.nats_url.is_some() && !args.topology.contains(&events_topology) {
        args.topology.push(events_topology);
    }
    let mut topology = Topology::from_files(&args.topology)?;
    // Event time runs `--speed` times faster than the wall clock here, so it runs ahead of the
    // wall clock by design: lift the future-skew check for the demo.
    for source in &mut topology.sources {
        source.max_future_skew_ms = crate::topology::MAX_DURATION_MS;
    }
    let cluster = EmbeddedCluster::start()?;
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic("orders", args.partitions)?;
    cluster.create_topic("analytics", args.partitions)?;
    let outputs = topology.output_topics();
    for topic in &outputs {
        cluster.create_topic(topic, 1)?;
    }
    // The mock cluster has no CreateTopics API: create eddy's internal topics up front, all as wide
    // as the inputs (which is what eddy would create).
    for (topic, _) in crate::topology::internal_topics("eddy-demo", &topology) {
        cluster.create_topic(&topic, args.partitions)?;
    }
    // A NATS source's assignment topic: one partition per subject filter.
    for (topic, partitions) in crate::topology::nats_assignment_topics("eddy-demo", &topology) {
        cluster.create_topic(&topic, partitions)?;
    }
    let state_dir = std::env::temp_dir().join(format!("eddy-demo-{}", std::process::id()));
    let mut config = Config {
        application_id: "eddy-demo".into(),
        bootstrap_servers: bootstrap.clone(),
        topology: args.topology.clone(),
        state_dir: state_dir.clone(),
        ..Config::default()
    };
    config.http.listen = args.http_listen.clone();
    if let Some(url) = &args.nats_url {
        config.nats.servers = url.clone();
    }

    let health = Health::default();
    // The query API indexes the output topics as `eddy run` does. (The embedded mock broker shows
    // aborted records to read_committed readers, so here, unlike on a real broker, an aborted
    // commit's output can reach the index.)
    let api = crate::api::ApiState::new(&topology);
    let index_stop = Arc::new(AtomicBool::new(false));
    let index = crate::api::spawn_materializer(
        ClientSettings::plain(&bootstrap),
        outputs.clone(),
        api.index.clone(),
        index_stop.clone(),
    )?;
    let handle = crate::telemetry::metrics::install_recorder().ok();
    match crate::telemetry::serve_http(&config.http.listen, handle, health.clone(), Some(api)) {
        Ok(addr) => {
            let from = crate::runtime::now_ms() / 60_000 * 60_000;
            let (from, to) = (
                crate::record::format_rfc3339_ms(from),
                crate::record::format_rfc3339_ms(from + 3_600_000),
            );
            println!("metrics: http://{addr}/metrics   health: http://{addr}/health/ready");
            println!("query API, while the demo runs (see http://{addr}/api/v1/openapi.json):");
            println!("  curl 'http://{addr}/api/v1/metrics?from={from}&to={to}'");
            println!(
                "  curl 'http://{addr}/api/v1/metrics?from={from}&to={to}&eventType=purchase'"
            );
            println!("  curl 'http://{addr}/api/v1/aggregations/orders.by_product?from={from}&to={to}&items.product_id=sku-1'");
        }
        Err(error) => println!("(HTTP endpoint off: {error})"),
    }

    let engine_stop = Arc::new(AtomicBool::new(false));
    let engine = {
        let (config, topology, stop, health) = (
            config.clone(),
            topology.clone(),
            engine_stop.clone(),
            health.clone(),
        );
        std::thread::Builder::new()
            .name("eddy-engine".into())
            .spawn(move || {
                crate::runtime::run(crate::runtime::RunOptions {
                    config,
                    topology,
                    stop,
                    health,
                })
            })?
    };

    let sent = Arc::new(AtomicU64::new(0));
    let generator_stop = Arc::new(AtomicBool::new(false));
    let generator = {
        let generate = GenerateArgs {
            bootstrap_servers: bootstrap.clone(),
            events: 0,
            rate: args.rate,
            partitions: args.partitions,
            seed: 7,
            users: 5000,
            start_ms: Some(crate::runtime::now_ms()),
            step_ms: Some(1000.0 * args.speed / args.rate.max(1) as f64),
            malformed_fraction: 0.001,
            orders_topic: "orders".into(),
            analytics_topic: "analytics".into(),
            nats_url: None,
            nats_stream: "EVENTS".into(),
        };
        let bus = generate.nats_url_for(args.nats_url.clone());
        let (stop, sent) = (generator_stop.clone(), sent.clone());
        std::thread::spawn(move || {
            // Seed 001's bus beside seed 000/002's topics, at a tenth of the rate.
            let bus = bus.map(|bus| {
                let (stop, sent) = (stop.clone(), Arc::new(AtomicU64::new(0)));
                std::thread::spawn(move || produce_events(&bus, &stop, &sent))
            });
            let kafka = produce_events(&generate, &stop, &sent);
            match bus.map(|b| b.join()) {
                Some(Ok(Err(error))) => Err(error),
                Some(Err(_)) => Err(anyhow::anyhow!("the NATS publisher panicked")),
                _ => kafka,
            }
        })
    };

    let output_refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let tail = TopicTail::new(&ClientSettings::plain(&bootstrap), &output_refs)?;
    let mut table = LiveTable::default();
    let started = Instant::now();
    let mut next_render = Instant::now() + Duration::from_secs(2);
    let interactive = std::io::stdout().is_terminal();
    println!("eddy demo: {} aggregations over `orders` and `analytics` ({} partitions each), event time at {}x; Ctrl-C to stop", topology.aggregations.len(), args.partitions, args.speed);
    while !stop.load(Ordering::Relaxed)
        && args
            .duration
            .is_none_or(|d| started.elapsed() < Duration::from_secs(d))
    {
        if engine.is_finished() {
            break;
        }
        if let Some(record) = tail.poll(Duration::from_millis(100)) {
            if let Some(parsed) = record
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<AggregateRecord>(v).ok())
            {
                table.add(parsed);
            }
        }
        if Instant::now() >= next_render {
            next_render = Instant::now() + Duration::from_secs(2);
            let elapsed = started.elapsed().as_secs_f64();
            let events = sent.load(Ordering::Relaxed);
            let mut screen = String::new();
            if interactive {
                screen.push_str("\x1b[2J\x1b[H");
            }
            screen.push_str(&table.render(6));
            screen.push_str(&format!(
                "\n[{elapsed:>5.0}s] events in: {events}  ({:.0}/s)   aggregates out: {}   ready: {}\n",
                events as f64 / elapsed.max(0.001),
                table.records_read,
                health.is_ready()
            ));
            print!("{screen}");
            let _ = std::io::stdout().flush();
        }
    }
    generator_stop.store(true, Ordering::Relaxed);
    engine_stop.store(true, Ordering::Relaxed);
    // Everything reading from the embedded broker stops before it does.
    index_stop.store(true, Ordering::Relaxed);
    let _ = index.join();
    let generated = generator
        .join()
        .map_err(|_| anyhow::anyhow!("generator panicked"))?;
    let engine_result = engine
        .join()
        .map_err(|_| anyhow::anyhow!("engine panicked"))?;
    let _ = std::fs::remove_dir_all(&state_dir);
    generated?;
    engine_result?;
    println!(
        "demo stopped: {} events in, {} aggregates read back from the output topics",
        sent.load(Ordering::Relaxed),
        table.records_read
    );
    Ok(())
}
