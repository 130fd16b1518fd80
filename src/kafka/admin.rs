//! Topic administration: input topic checks and internal topic creation.

use super::{operation_error, ClientSettings, KafkaClientError};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::HashMap;
use std::time::Duration;

/// An internal topic eddy needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalTopic {
    pub name: String,
    pub partitions: i32,
    pub compacted: bool,
    /// Kept until eddy deletes the records itself (`retention.ms = -1`): repartition topics,
    /// which the merge tasks purge once they committed past them. A broker's time retention
    /// would delete partials nobody merged yet after an outage longer than it.
    pub purged_by_eddy: bool,
}

pub struct TopicAdmin {
    admin: AdminClient<DefaultClientContext>,
    metadata: BaseConsumer,
    settings: ClientSettings,
    runtime: tokio::runtime::Runtime,
}

impl TopicAdmin {
    pub fn new(settings: &ClientSettings) -> Result<TopicAdmin, KafkaClientError> {
        let create = |client| {
            move |e: rdkafka::error::KafkaError| KafkaClientError::Create {
                client,
                reason: e.to_string(),
            }
        };
        let admin = settings.base().create().map_err(create("admin client"))?;
        let metadata = settings
            .base()
            .create()
            .map_err(create("metadata client"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| KafkaClientError::Create {
                client: "admin runtime",
                reason: e.to_string(),
            })?;
        Ok(TopicAdmin {
            admin,
            metadata,
            settings: settings.clone(),
            runtime,
        })
    }

    /// Partition count of each topic; `None` for topics that do not exist.
    pub fn partition_counts(
        &self,
        topics: &[String],
    ) -> Result<HashMap<String, Option<i32>>, KafkaClientError> {
        let metadata = self
            .metadata
            .fetch_metadata(None, Duration::from_secs(15))
            .map_err(|e| {
                operation_error(
                    format!("metadata request to {}", self.settings.bootstrap_servers),
                    e,
                )
            })?;
        let mut counts = HashMap::new();
        for topic in topics {
            let found = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len() as i32);
            counts.insert(topic.clone(), found);
        }
        Ok(counts)
    }

    /// Partition counts of topics that must exist, waiting up to `wait` for them to appear.
    pub fn require_topics(
        &self,
        topics: &[String],
        wait: Duration,
    ) -> Result<HashMap<String, i32>, KafkaClientError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let counts = self.partition_counts(topics)?;
            let missing: Vec<&String> = topics
                .iter()
                .filter(|t| counts.get(*t).copied().flatten().is_none())
                .collect();
            if missing.is_empty() {
                return Ok(counts
                    .into_iter()
                    .map(|(t, c)| (t, c.unwrap_or(0)))
                    .collect());
            }
            if std::time::Instant::now() >= deadline {
                return Err(KafkaClientError::MissingTopic {
                    topic: missing[0].clone(),
                    bootstrap: self.settings.bootstrap_servers.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Creates the topics that do not exist yet; existing ones are left as they are.
    pub fn create_topics(
        &self,
        topics: &[InternalTopic],
        replication_factor: i16,
    ) -> Result<(), KafkaClientError> {
        let existing =
            self.partition_counts(&topics.iter().map(|t| t.name.clone()).collect::<Vec<_>>())?;
        let missing: Vec<&InternalTopic> = topics
            .iter()
            .filter(|t| existing.get(&t.name).copied().flatten().is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                let topic = NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(replication_factor as i32),
                );
                let topic = if t.compacted {
                    topic.set("cleanup.policy", "compact")
                } else {
                    topic
                };
                if t.purged_by_eddy {
                    topic.set("retention.ms", "-1")
                } else {
                    topic
                }
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = self
            .runtime
            .block_on(self.admin.create_topics(new_topics.iter(), &options))
            .map_err(|e| operation_error("create topics", e))?;
        for result in results {
            if let Err((name, code)) = result {
                if code == RDKafkaErrorCode::TopicAlreadyExists {
                    continue;
                }
                let topic = missing.iter().find(|t| t.name == name).expect("requested");
                return Err(KafkaClientError::CreateTopic {
                    topic: name,
                    partitions: topic.partitions,
                    compaction: if topic.compacted {
                        " and cleanup.policy=compact"
                    } else {
                        ""
                    },
                    reason: code.to_string(),
                });
            }
        }
        let created: Vec<String> = missing.iter().map(|t| t.name.clone()).collect();
        self.wait_for_leaders(&created, Duration::from_secs(30))
    }

    /// Waits until every partition of `topics` has a leader, so the first reads and writes do not
    /// race the controller right after creation.
    fn wait_for_leaders(
        &self,
        topics: &[String],
        patience: Duration,
    ) -> Result<(), KafkaClientError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let metadata = self
                .metadata
                .fetch_metadata(None, Duration::from_secs(10))
                .map_err(|e| operation_error("metadata", e))?;
            let ready = topics.iter().all(|name| {
                metadata.topics().iter().any(|t| {
                    t.name() == name
                        && t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.error().is_none())
                })
            });
            if ready {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(operation_error(
                    "waiting for partition leaders",
                    format!(
                        "topics {topics:?} have partitions without a leader after {patience:?}"
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The offsets a consumer group has committed for `partitions` of `topic` (`None`: nothing
    /// yet), stable: a fetch waits while a transaction holding offsets is open.
    pub fn group_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> Result<Vec<Option<i64>>, KafkaClientError> {
        let partitions: Vec<(String, i32)> =
            (0..partitions).map(|p| (topic.to_string(), p)).collect();
        CommittedOffsets::with_isolation(&self.settings, group, true)?.fetch(&partitions)
    }

    /// Deletes every record before `offset` in each (topic, partition, offset): consumed
    /// repartition records that no task will read again (Kafka Streams purges them the same way).
    /// Returns how many partitions were purged; per-partition refusals are logged, not returned.
    pub fn delete_records_before(
        &self,
        offsets: &[(String, i32, i64)],
        timeout: Duration,
    ) -> Result<usize, KafkaClientError> {
        if offsets.is_empty() {
            return Ok(0);
        }
        let mut list = rdkafka::TopicPartitionList::new();
        for (topic, partition, offset) in offsets {
            list.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))
                .map_err(|e| operation_error("delete records", e))?;
        }
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let result = self
            .runtime
            .block_on(self.admin.delete_records(&list, &options))
            .map_err(|e| operation_error("delete records", e))?;
        let mut purged = 0;
        for element in result.elements() {
            match element.error() {
                Ok(()) => purged += 1,
                Err(error) => {
                    tracing::debug!(topic = element.topic(), partition = element.partition(), %error, "records not deleted")
                }
            }
        }
        Ok(purged)
    }

    /// Sets configuration entries of a topic (tests: e.g. `cleanup.policy = compact,delete`
    /// on a changelog, so that records can be deleted from it).
    pub fn set_topic_config(
        &self,
        topic: &str,
        entries: &[(&str, &str)],
    ) -> Result<(), KafkaClientError> {
        let mut alteration = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (key, value) in entries {
            alteration = alteration.set(key, value);
        }
        let results = self
            .runtime
            .block_on(
                self.admin
                    .alter_configs([&alteration], &AdminOptions::new()),
            )
            .map_err(|e| operation_error(format!("alter the configuration of {topic}"), e))?;
        for result in results {
            result.map_err(|(_, code)| {
                operation_error(format!("alter the configuration of {topic}"), code)
            })?;
        }
        Ok(())
    }

    /// Creates plain topics (tests, the demo, the benchmark command).
    pub fn create_plain_topics(&self, names: &[(&str, i32)]) -> Result<(), KafkaClientError> {
        let topics: Vec<InternalTopic> = names
            .iter()
            .map(|(n, p)| InternalTopic {
                name: n.to_string(),
                partitions: *p,
                compacted: false,
                purged_by_eddy: false,
            })
            .collect();
        self.create_topics(&topics, 1)
    }
}

/// Reads a group's committed offsets as they are now, pending transactions or not (not the
/// stable offsets a new owner waits for), and its members: for watching a group from outside
/// (benchmarks, tests).
pub struct CommittedOffsets {
    consumer: BaseConsumer,
    group: String,
}

impl CommittedOffsets {
    pub fn new(
        settings: &ClientSettings,
        group: &str,
    ) -> Result<CommittedOffsets, KafkaClientError> {
        // read_committed would make librdkafka ask for stable offsets, which wait while a
        // transaction holding offsets is open.
        CommittedOffsets::with_isolation(settings, group, false)
    }

    /// A reader of stable offsets (`read_committed`: the fetch waits while a transaction holding
    /// offsets is open) or of offsets as they are now.
    fn with_isolation(
        settings: &ClientSettings,
        group: &str,
        read_committed: bool,
    ) -> Result<CommittedOffsets, KafkaClientError> {
        let mut config = settings.base();
        config.set("group.id", group).set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        );
        let consumer: BaseConsumer = config.create().map_err(|e| KafkaClientError::Create {
            client: "offset reader",
            reason: e.to_string(),
        })?;
        Ok(CommittedOffsets {
            consumer,
            group: group.to_string(),
        })
    }

    /// The end of `partition` of `topic` (its high watermark).
    pub fn log_end(&self, topic: &str, partition: i32) -> Result<i64, KafkaClientError> {
        self.consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
            .map(|(_, high)| high)
            .map_err(|e| operation_error("list offsets", e))
    }

    /// The group's members (each by its `client.id`) and what each is assigned, as the
    /// coordinator sees them; `Ok(None)` while the group rebalances.
    pub fn members(&self) -> Result<Option<Vec<super::DescribedMember>>, KafkaClientError> {
        let described = super::group_members::describe_group(
            &self.consumer,
            &self.group,
            Duration::from_secs(5),
        )?;
        Ok(described.stable.then_some(described.members))
    }

    /// The committed offset of each of `partitions` (`None`: nothing committed yet).
    pub fn fetch(
        &self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<i64>>, KafkaClientError> {
        let mut list = rdkafka::TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        let committed = self
            .consumer
            .committed_offsets(list, Duration::from_secs(10))
            .map_err(|e| operation_error("offset fetch", e))?;
        Ok(partitions
            .iter()
            .map(|(topic, partition)| {
                committed
                    .find_partition(topic, *partition)
                    .and_then(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => Some(o),
                        _ => None,
                    })
            })
            .collect())
    }
}
