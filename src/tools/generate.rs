//! `eddy generate`: produce seed-schema events to a cluster.

use crate::events::{EventGenerator, GeneratorConfig};
use crate::kafka::{ClientSettings, RecordProducer, TopicAdmin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone, Debug)]
pub struct GenerateArgs {
    #[arg(
        long,
        env = "EDDY__BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    pub bootstrap_servers: String,
    /// Stop after this many events (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub events: u64,
    /// Events per second of wall-clock time (0: as fast as possible).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Partitions of the input topics when eddy creates them.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 5000)]
    pub users: u32,
    /// Event time of the first event, epoch ms (default: now).
    #[arg(long)]
    pub start_ms: Option<i64>,
    /// Event-time milliseconds between events (default: 1000 / rate, i.e. real time).
    #[arg(long)]
    pub step_ms: Option<f64>,
    /// Share of analytics events sent malformed (exercises the dead-letter topic).
    #[arg(long, default_value_t = 0.0)]
    pub malformed_fraction: f64,
    #[arg(long, default_value = "orders")]
    pub orders_topic: String,
    #[arg(long, default_value = "analytics")]
    pub analytics_topic: String,
    /// Publish seed 001's domain events to this NATS server (JetStream) instead of producing
    /// seed 000/002 events to Kafka.
    #[arg(long, env = "EDDY__NATS__SERVERS")]
    pub nats_url: Option<String>,
    /// The JetStream stream (created with subjects `user.>` and `order.>` if missing).
    #[arg(long, default_value = "EVENTS")]
    pub nats_stream: String,
}

impl GenerateArgs {
    /// The same generator publishing seed 001's events to `url` at a tenth of the rate.
    pub fn nats_url_for(&self, url: Option<String>) -> Option<GenerateArgs> {
        url.map(|url| GenerateArgs {
            nats_url: Some(url),
            rate: (self.rate / 10).max(1),
            step_ms: self.step_ms.map(|step| step * 10.0),
            ..self.clone()
        })
    }

    pub fn generator_config(&self) -> GeneratorConfig {
        let now = crate::runtime::now_ms();
        GeneratorConfig {
            seed: self.seed,
            users: self.users,
            start_ms: self.start_ms.unwrap_or(now),
            step_ms: self.step_ms.unwrap_or(if self.rate > 0 {
                1000.0 / self.rate as f64
            } else {
                1.0
            }),
            malformed_fraction: self.malformed_fraction,
            ..GeneratorConfig::default()
        }
    }
}

/// Produces events until `events` are sent or `stop` is set; counts into `sent`.
pub fn produce_events(
    args: &GenerateArgs,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> anyhow::Result<()> {
    if let Some(url) = &args.nats_url {
        return publish_domain_events(args, url, stop, sent);
    }
    let settings = ClientSettings::plain(&args.bootstrap_servers);
    let admin = TopicAdmin::new(&settings)?;
    admin.create_plain_topics(&[
        (&args.orders_topic, args.partitions),
        (&args.analytics_topic, args.partitions),
    ])?;
    let mut producer = RecordProducer::new(&settings, None)?;
    let mut generator = EventGenerator::new(args.generator_config());
    let started = Instant::now();
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) && (args.events == 0 || count < args.events) {
        let event = generator.next_event();
        let topic = if event.stream == "orders" {
            &args.orders_topic
        } else {
            &args.analytics_topic
        };
        producer.send_to(topic, event.key.as_bytes(), &event.value)?;
        count += 1;
        sent.store(count, Ordering::Relaxed);
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(count as f64 / args.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                producer.poll();
                std::thread::sleep(wait);
            }
        }
    }
    producer.flush()?;
    Ok(())
}

/// Publishes seed 001's domain events to NATS at the configured rate.
fn publish_domain_events(
    args: &GenerateArgs,
    url: &str,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> anyhow::Result<()> {
    let settings = crate::nats::NatsSettings::from_config(&crate::config::NatsConfig {
        servers: url.to_string(),
        ..Default::default()
    });
    let mut publisher = crate::nats::NatsPublisher::connect(&settings)?;
    publisher.ensure_stream(&args.nats_stream, &["user.>".into(), "order.>".into()])?;
    let config = args.generator_config();
    let mut generator = crate::events::DomainEventGenerator::new(
        config.seed,
        config.start_ms,
        config.step_ms,
        config.users,
    );
    let started = Instant::now();
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) && (args.events == 0 || count < args.events) {
        let (subject, payload) = generator.next_event();
        publisher.publish(subject, payload)?;
        count += 1;
        sent.store(count, Ordering::Relaxed);
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(count as f64 / args.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                publisher.flush()?;
                std::thread::sleep(wait);
            }
        }
    }
    publisher.flush()?;
    Ok(())
}

pub fn run_generate(args: GenerateArgs, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let sent = AtomicU64::new(0);
    let started = Instant::now();
    produce_events(&args, &stop, &sent)?;
    let n = sent.load(Ordering::Relaxed);
    println!(
        "produced {n} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
