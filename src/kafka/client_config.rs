//! librdkafka settings for each client eddy creates, with Kafka Streams' defaults under exactly-once.

use crate::config::{Config, ProcessingGuarantee};
use rdkafka::ClientConfig;

/// What every client needs to reach the cluster, plus the user's pass-through properties.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub bootstrap_servers: String,
    pub application_id: String,
    pub guarantee: ProcessingGuarantee,
    pub group_instance_id: Option<String>,
    /// This instance's stable id (`group_instance_id`, or the id kept in the state directory):
    /// the group consumer's `client.id` ends with it, so that the other members can tell which
    /// instance holds which partitions (standby placement).
    pub instance_id: Option<String>,
    pub common: Vec<(String, String)>,
    pub consumer: Vec<(String, String)>,
    pub producer: Vec<(String, String)>,
    /// How long retriable failures are retried before giving up (`task_timeout_ms`).
    pub retry_deadline: std::time::Duration,
}

impl ClientSettings {
    pub fn from_config(config: &Config) -> ClientSettings {
        let pairs = |m: &std::collections::BTreeMap<String, String>| {
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        ClientSettings {
            bootstrap_servers: config.bootstrap_servers.clone(),
            application_id: config.application_id.clone(),
            guarantee: config.processing_guarantee,
            group_instance_id: config.group_instance_id.clone(),
            instance_id: None,
            common: pairs(&config.kafka),
            consumer: pairs(&config.kafka_consumer),
            producer: pairs(&config.kafka_producer),
            retry_deadline: std::time::Duration::from_millis(config.task_timeout_ms),
        }
    }

    /// Settings for tools and tests: just a bootstrap address.
    pub fn plain(bootstrap_servers: &str) -> ClientSettings {
        ClientSettings {
            bootstrap_servers: bootstrap_servers.into(),
            application_id: "eddy".into(),
            guarantee: ProcessingGuarantee::ExactlyOnce,
            group_instance_id: None,
            instance_id: None,
            common: Vec::new(),
            consumer: Vec::new(),
            producer: Vec::new(),
            retry_deadline: std::time::Duration::from_secs(300),
        }
    }

    /// A `[kafka]` property as configured (e.g. `sasl.username`).
    pub fn common_value(&self, key: &str) -> Option<&str> {
        self.common
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set("client.id", format!("{}-eddy", self.application_id));
        for (key, value) in &self.common {
            config.set(key, value);
        }
        config
    }

    /// What the group consumer's `client.id` has before the instance id.
    pub(crate) fn group_client_id_prefix(&self) -> String {
        format!("{}-eddy-", self.application_id)
    }

    /// The group consumer: `application.id` is the group, cooperative-sticky, manual commits.
    pub(crate) fn group_consumer(&self) -> ClientConfig {
        let mut config = self.base();
        if let Some(instance) = &self.instance_id {
            config.set(
                "client.id",
                format!("{}{instance}", self.group_client_id_prefix()),
            );
        }
        config
            .set("group.id", &self.application_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            // The survivors of a dead member learn of the rebalance at their next heartbeat: at
            // 500 ms rather than librdkafka's 3 s, a takeover starts sooner.
            .set("heartbeat.interval.ms", "500")
            // A partition taken over from a dead member starts from its committed offset, which
            // librdkafka fetches stable: while the dead member's transaction holds offsets, the
            // fetch is retried with exponential backoff, up to 1 s between tries by default; the
            // partition then stood still that long after the transaction was aborted.
            .set("retry.backoff.max.ms", "250")
            .set("max.poll.interval.ms", "300000")
            .set("isolation.level", "read_committed")
            .set("statistics.interval.ms", "5000")
            // The broker's default 500 ms hold on a fetch left the loop waiting for input that was
            // there (bench e2e, one aggregation: 119k-130k events/s at 500 ms, 147k-177k at 10 ms).
            .set("fetch.wait.max.ms", "10");
        bounded_prefetch(&mut config);
        if let Some(instance) = &self.group_instance_id {
            config.set("group.instance.id", instance);
        }
        for (key, value) in &self.consumer {
            config.set(key, value);
        }
        config
    }

    /// A consumer outside the group, for changelog restore and for reading outputs.
    pub(crate) fn assign_consumer(&self, read_committed: bool) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", format!("{}-restore", self.application_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            // Restores read to a known end; the broker must not hold empty fetches for 500 ms.
            .set("fetch.wait.max.ms", "10")
            .set(
                "isolation.level",
                if read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            );
        bounded_prefetch(&mut config);
        config
    }

    /// The producer: transactional under exactly-once (Kafka Streams' EOS defaults), idempotent otherwise.
    pub(crate) fn producer(&self, transactional_id: Option<&str>) -> ClientConfig {
        let mut config = self.base();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576");
        if let Some(id) = transactional_id {
            config
                .set("transactional.id", id)
                .set("transaction.timeout.ms", "10000");
        }
        for (key, value) in &self.producer {
            config.set(key, value);
        }
        config
    }
}

/// How much fetched input a consumer may hold. librdkafka checks both thresholds against the
/// queue a partition's fetches go to, and a consumer (group or assigned) forwards every partition
/// to its one consumer queue: they bound the consumer as a whole, not each partition. Its
/// defaults (100k messages, 64 MiB, each queued message ~140 bytes of bookkeeping on top of its
/// decompressed batch) filled with what processing had not reached yet: a heap profile of `bench
/// e2e` (shipped topologies) found 86 of the process's 117 MB peak heap there. The bounds hold
/// one batch of the engine (`MAX_BATCH`, 20k records), so the next batch is fetched while one is
/// processed (5k messages and 4 MiB, a quarter of a batch, left the loop waiting); a queue over a threshold is fetched again 10 ms after it drains, not
/// after the default `fetch.queue.backoff.ms` of 1 s, which starved the loop (58k instead of
/// 100k events/s).
fn bounded_prefetch(config: &mut ClientConfig) {
    config
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "4096")
        .set("fetch.queue.backoff.ms", "10");
}
