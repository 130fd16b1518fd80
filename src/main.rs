//! The `eddy` command.

use anyhow::Context;
use clap::{Parser, Subcommand};
use eddy::config::{Config, LogFormat, ProcessingGuarantee};
use eddy::telemetry::{init_logging, serve_http, Health};
use eddy::topology::Topology;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "eddy",
    version,
    about = "A Kafka Streams-style stateful stream processor: windowed counts, sums and HyperLogLog unique users, exactly-once."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run against a Kafka cluster as one instance of the `application_id` consumer group.
    ///
    /// Settings come from built-in defaults, then --config, then EDDY__SECTION__KEY environment
    /// variables (e.g. EDDY__BOOTSTRAP_SERVERS, EDDY__HTTP__LISTEN), then these flags.
    Run(RunArgs),
    /// Run everything in one process: an embedded broker, an event generator, the shipped
    /// topologies, and a live table of the aggregates read back from the output topics.
    Demo(eddy::tools::DemoArgs),
    /// Inspect topology files.
    Topology {
        #[command(subcommand)]
        command: TopologyCommand,
    },
    /// Produce generated OrderCreated and AnalyticsEvent records to a cluster (load, tests, docker).
    Generate(eddy::tools::GenerateArgs),
    /// Print a topic's records (read_committed) from the beginning to its current end, one JSON value per line.
    Read {
        topic: String,
        #[arg(
            long,
            env = "EDDY__BOOTSTRAP_SERVERS",
            default_value = "localhost:9092"
        )]
        bootstrap_servers: String,
    },
    /// Benchmarks: the in-process pipeline, or end-to-end against a broker.
    Bench {
        #[command(subcommand)]
        command: eddy::tools::BenchCommand,
    },
}

#[derive(Subcommand)]
enum TopologyCommand {
    /// Print the operator graph: sources, per-partition tasks, stores, internal topics, sinks.
    Describe {
        /// Topology files (default: the configured ones).
        files: Vec<PathBuf>,
        #[arg(long, default_value = "eddy")]
        application_id: String,
    },
    /// Check topology files and exit non-zero with the first error.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the seed event schemas eddy knows (fields, JSON types, Go declarations) as Markdown.
    Schemas,
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Kafka brokers, e.g. `kafka-1:9092,kafka-2:9092`.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Consumer group, transactional-id prefix and internal-topic prefix.
    #[arg(long)]
    application_id: Option<String>,
    /// Topology file; repeat for several.
    #[arg(long)]
    topology: Vec<PathBuf>,
    /// Where local RocksDB state lives (one directory per task).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// exactly_once (default) or at_least_once.
    #[arg(long, value_enum)]
    processing_guarantee: Option<Guarantee>,
    /// How often to commit (one transaction per commit under exactly-once).
    #[arg(long)]
    commit_interval_ms: Option<u64>,
    /// Worker threads processing tasks in parallel.
    #[arg(long)]
    num_threads: Option<usize>,
    /// Static group membership id.
    #[arg(long)]
    group_instance_id: Option<String>,
    /// Address of /metrics and /health/* (e.g. 0.0.0.0:9464).
    #[arg(long)]
    http_listen: Option<String>,
    /// Serve no HTTP at all (no metrics, health or query API).
    #[arg(long)]
    no_http: bool,
    /// Log lines as human-readable text or JSON.
    #[arg(long, value_enum)]
    log_format: Option<Format>,
    /// Log filter, e.g. `info` or `eddy=debug` (RUST_LOG wins).
    #[arg(long)]
    log_level: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Guarantee {
    #[value(name = "exactly_once", alias = "exactly-once")]
    ExactlyOnce,
    #[value(name = "at_least_once", alias = "at-least-once")]
    AtLeastOnce,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Human,
    Json,
}

impl RunArgs {
    fn apply(self, config: &mut Config) {
        if let Some(v) = self.bootstrap_servers {
            config.bootstrap_servers = v;
        }
        if let Some(v) = self.application_id {
            config.application_id = v;
        }
        if !self.topology.is_empty() {
            config.topology = self.topology;
        }
        if let Some(v) = self.state_dir {
            config.state_dir = v;
        }
        if let Some(v) = self.processing_guarantee {
            config.processing_guarantee = match v {
                Guarantee::ExactlyOnce => ProcessingGuarantee::ExactlyOnce,
                Guarantee::AtLeastOnce => ProcessingGuarantee::AtLeastOnce,
            };
        }
        if let Some(v) = self.commit_interval_ms {
            config.commit_interval_ms = Some(v);
        }
        if let Some(v) = self.num_threads {
            config.num_threads = v;
        }
        if let Some(v) = self.group_instance_id {
            config.group_instance_id = Some(v);
        }
        if let Some(v) = self.http_listen {
            config.http.listen = v;
        }
        if self.no_http {
            config.http.enabled = false;
        }
        if let Some(v) = self.log_format {
            config.log.format = match v {
                Format::Human => LogFormat::Human,
                Format::Json => LogFormat::Json,
            };
        }
        if let Some(v) = self.log_level {
            config.log.level = v;
        }
    }
}

/// Exit codes (the README's "Exit codes" table): 0 a clean stop, 1 an error eddy reported,
/// 2 a command-line usage error (clap's), 3 a shutdown that outlived `shutdown_timeout_ms`.
const EXIT_SHUTDOWN_TIMED_OUT: i32 = 3;

/// Sets the returned flag on SIGINT or SIGTERM.
pub fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        runtime.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        tracing::info!("stop signal received: committing and leaving the group");
        flag.store(true, Ordering::Relaxed);
    });
    stop
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = Config::load(args.config.as_deref(), env)?;
    args.apply(&mut config);
    config.validate()?;
    init_logging(config.log.format, &config.log.level);
    tracing::info!(config = %config.redacted(), "effective configuration");
    let topology = Topology::from_files(&config.topology)?;
    let health = Health::default();
    let stop = stop_on_signals();
    if config.http.enabled {
        let handle = eddy::telemetry::metrics::install_recorder()
            .map_err(anyhow::Error::msg)
            .context("installing the Prometheus recorder")?;
        let api = config.http.query_api.then(|| {
            let api = eddy::api::ApiState::new(&topology);
            let settings = eddy::kafka::ClientSettings::from_config(&config);
            let topics = topology.output_topics();
            if let Err(error) =
                eddy::api::spawn_materializer(settings, topics, api.index.clone(), stop.clone())
            {
                tracing::error!(%error, "could not start the query API's index");
            }
            api
        });
        let addr = serve_http(&config.http.listen, Some(handle), health.clone(), api)?;
        tracing::info!(%addr, "serving /metrics, /health/live, /health/ready and /api/v1/");
    }
    let timeout = std::time::Duration::from_millis(config.shutdown_timeout_ms);
    let watchdog_stop = stop.clone();
    std::thread::spawn(move || {
        while !watchdog_stop.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(timeout);
        eprintln!(
            "eddy: shutdown took longer than shutdown_timeout_ms ({} ms); exiting",
            timeout.as_millis()
        );
        std::process::exit(EXIT_SHUTDOWN_TIMED_OUT);
    });
    eddy::runtime::run(eddy::runtime::RunOptions {
        config,
        topology,
        stop,
        health,
    })?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    let version: &'static str = Box::leak(eddy::build_info::version_line().into_boxed_str());
    let matches = Cli::command().version(version).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Run(args) => run(args),
        Command::Demo(args) => {
            init_logging(LogFormat::Human, "warn");
            eddy::tools::run_demo(args, stop_on_signals())
        }
        Command::Topology { command } => match command {
            TopologyCommand::Describe {
                files,
                application_id,
            } => {
                let files = if files.is_empty() {
                    Config::default().topology
                } else {
                    files
                };
                let topology = Topology::from_files(&files)?;
                print!("{}", eddy::topology::describe(&topology, &application_id));
                Ok(())
            }
            TopologyCommand::Validate { files } => {
                let topology = Topology::from_files(&files)?;
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                let nats = topology.nats_sources().count();
                println!(
                    "ok: {} ({} sources reading {} topics{}, {} aggregations)",
                    names.join(", "),
                    topology.sources.len(),
                    topology.input_topics().len(),
                    if nats > 0 {
                        format!(" and {nats} NATS streams")
                    } else {
                        String::new()
                    },
                    topology.aggregations.len()
                );
                Ok(())
            }
            TopologyCommand::Schemas => {
                print!("{}", eddy::schema::reference_markdown());
                Ok(())
            }
        },
        Command::Generate(args) => {
            init_logging(LogFormat::Human, "warn");
            eddy::tools::run_generate(args, stop_on_signals())
        }
        Command::Read {
            topic,
            bootstrap_servers,
        } => {
            let reader = eddy::kafka::ChangelogReader::new(
                &eddy::kafka::ClientSettings::plain(&bootstrap_servers),
                true,
            )?;
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for record in reader.read_topic(&topic, std::time::Duration::from_secs(120))? {
                if writeln!(
                    out,
                    "{}",
                    String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
                )
                .is_err()
                {
                    break;
                }
            }
            Ok(())
        }
        Command::Bench { command } => eddy::tools::run_bench(command),
    }
}
