//! The group consumer. Rebalance callbacks are forwarded to a [`RebalanceListener`] the runtime
//! implements, with a [`GroupHandle`] that can commit offsets into a transaction before the
//! partitions are given up.

use super::group_members::{DescribedGroup, GroupWatcher};
use super::{operation_error, ClientSettings, KafkaClientError};
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use std::sync::Arc;
use std::time::Duration;

/// A partition's committed position and the metadata committed with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    /// `None` when nothing was committed yet.
    pub offset: Option<i64>,
    pub metadata: String,
}

/// Called from inside `poll` when the group moves partitions.
pub trait RebalanceListener: Send + Sync {
    /// Partitions are about to be taken away. `lost` means another member may already own them
    /// (session timeout): nothing may be committed for them then.
    fn on_revoke(&self, partitions: &[(String, i32)], lost: bool, group: &GroupHandle<'_>);
    /// Partitions were added to this member's assignment.
    fn on_assign(&self, partitions: &[(String, i32)], group: &GroupHandle<'_>);
}

pub(crate) struct EddyConsumerContext {
    listener: Arc<dyn RebalanceListener>,
    /// Records between each assigned partition's position and its end, from the latest statistics.
    lags: Arc<std::sync::Mutex<std::collections::HashMap<(String, i32), i64>>>,
    /// Whether the latest statistics saw a connection to some broker up.
    brokers_up: Arc<std::sync::atomic::AtomicBool>,
    /// The `client.id` prefix before each eddy member's instance id.
    client_id_prefix: String,
    /// Describes the group off the loop thread.
    watcher: GroupWatcher,
}

impl ClientContext for EddyConsumerContext {
    /// librdkafka's periodic statistics become the consumer-lag gauge. Its own `consumer_lag` is
    /// measured from the consumer's committed offset, which exactly-once never sets (offsets commit
    /// through the producer's transaction), so lag here is the end of the partition (the last stable
    /// offset under read_committed) minus the position eddy has consumed to.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        self.brokers_up
            .store(up, std::sync::atomic::Ordering::Relaxed);
        // Each snapshot replaces the last, so partitions no longer fetched drop out of it.
        let mut lags = std::collections::HashMap::new();
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                if *partition < 0 || p.fetch_state != "active" {
                    continue;
                }
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                let position = if p.app_offset >= 0 {
                    p.app_offset
                } else {
                    p.next_offset
                };
                if end < 0 || position < 0 {
                    continue;
                }
                let lag = (end - position).max(0);
                crate::telemetry::events::ConsumerLag {
                    topic,
                    partition: *partition,
                    lag,
                }
                .emit();
                lags.insert((topic.clone(), *partition), lag);
            }
        }
        if let Ok(mut latest) = self.lags.lock() {
            *latest = lags;
        }
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ConsumerContext for EddyConsumerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let lost = consumer.assignment_lost();
            self.listener
                .on_revoke(&partitions_of(list), lost, &GroupHandle { consumer });
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => self
                .listener
                .on_assign(&partitions_of(list), &GroupHandle { consumer }),
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// What the runtime may do with the consumer, also from inside a rebalance callback.
pub struct GroupHandle<'c> {
    consumer: &'c BaseConsumer<EddyConsumerContext>,
}

/// The consumer's group metadata, sent with transactional offsets so the coordinator can fence
/// a member whose generation is stale (KIP-447).
pub struct GroupMetadata(pub(crate) ConsumerGroupMetadata);

fn list_of(partitions: &[(String, i32)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition(topic, *partition);
    }
    list
}

impl GroupHandle<'_> {
    pub fn group_metadata(&self) -> Option<GroupMetadata> {
        self.consumer.group_metadata().map(GroupMetadata)
    }

    /// Committed offsets and metadata. Under read_committed librdkafka asks for stable offsets, so
    /// this waits for a previous owner's pending transaction to finish.
    pub fn committed(
        &self,
        partitions: &[(String, i32)],
        timeout: Duration,
    ) -> Result<Vec<PartitionOffset>, KafkaClientError> {
        let list = super::with_retries("offset fetch", timeout, || {
            self.consumer.committed_offsets(
                list_of(partitions),
                timeout.clamp(Duration::from_millis(100), Duration::from_secs(10)),
            )
        })
        .map_err(|e| operation_error("offset fetch", e))?;
        Ok(list
            .elements()
            .iter()
            .map(|e| PartitionOffset {
                topic: e.topic().into(),
                partition: e.partition(),
                offset: match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                },
                metadata: e.metadata().to_string(),
            })
            .collect())
    }

    pub fn pause(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
        self.consumer
            .pause(&list_of(partitions))
            .map_err(|e| operation_error("pause", e))
    }

    pub fn resume(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
        self.consumer
            .resume(&list_of(partitions))
            .map_err(|e| operation_error("resume", e))
    }

    /// Moves the fetch position (to the committed offset, or the beginning when `None`).
    ///
    /// The beginning is looked up and sought as a concrete offset: a logical one makes librdkafka
    /// query it, and the resume that follows a seek outdates that query, which librdkafka then
    /// retries only after 500 ms (seen as half a second without input after every task start).
    pub fn seek(
        &self,
        topic: &str,
        partition: i32,
        offset: Option<i64>,
    ) -> Result<(), KafkaClientError> {
        let target = match offset {
            Some(offset) => Offset::Offset(offset),
            None => self
                .watermarks(topic, partition)
                .map_or(Offset::Beginning, |(low, _)| Offset::Offset(low)),
        };
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, target)
            .map_err(|e| operation_error("seek", e))?;
        let result = self
            .consumer
            .seek_partitions(list, Duration::from_secs(10))
            .map_err(|e| operation_error("seek", e))?;
        for element in result.elements() {
            if let Err(error) = element.error() {
                return Err(operation_error(format!("seek {topic}-{partition}"), error));
            }
        }
        Ok(())
    }

    /// Commits offsets outside a transaction (at-least-once).
    pub fn commit_sync(&self, offsets: &[PartitionOffset]) -> Result<(), KafkaClientError> {
        let list = offset_list(offsets)?;
        self.consumer
            .commit(&list, rdkafka::consumer::CommitMode::Sync)
            .map_err(|e| operation_error("offset commit", e))
    }

    /// (low, high) offsets of a partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaClientError> {
        super::with_retries("list offsets", Duration::from_secs(10), || {
            self.consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(5))
        })
        .map_err(|e| operation_error("list offsets", e))
    }

    /// The group as last described (its members by instance id: their `client.id` past eddy's
    /// prefix); `Ok(None)` while a description is under way (the group watcher describes it on
    /// its own thread; the caller asks again shortly).
    pub fn describe(&self) -> Result<Option<DescribedGroup>, KafkaClientError> {
        let context = self.consumer.context();
        let described = context.watcher.describe()?;
        Ok(described.map(|mut group| {
            for member in &mut group.members {
                if let Some(instance) = member.client_id.strip_prefix(&context.client_id_prefix) {
                    member.client_id = instance.to_string();
                }
            }
            group
        }))
    }

    /// This member's current assignment.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.consumer
            .assignment()
            .map(|l| partitions_of(&l))
            .unwrap_or_default()
    }
}

pub(crate) fn offset_list(
    offsets: &[PartitionOffset],
) -> Result<TopicPartitionList, KafkaClientError> {
    let mut list = TopicPartitionList::new();
    for o in offsets {
        let offset = o.offset.map_or(Offset::Beginning, Offset::Offset);
        list.add_partition_offset(&o.topic, o.partition, offset)
            .map_err(|e| operation_error("offset list", e))?;
        if let Some(mut element) = list.find_partition(&o.topic, o.partition) {
            element.set_metadata(o.metadata.clone());
        }
    }
    Ok(list)
}

/// A consumed record; borrows the client's buffer until dropped.
pub struct ConsumedRecord<'c> {
    message: BorrowedMessage<'c>,
}

impl ConsumedRecord<'_> {
    pub fn topic(&self) -> &str {
        self.message.topic()
    }
    pub fn partition(&self) -> i32 {
        self.message.partition()
    }
    pub fn offset(&self) -> i64 {
        self.message.offset()
    }
    pub fn payload(&self) -> Option<&[u8]> {
        self.message.payload()
    }
    pub fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.message.timestamp().to_millis()
    }
}

/// The member of the `application.id` consumer group.
pub struct GroupConsumer {
    consumer: BaseConsumer<EddyConsumerContext>,
    lags: Arc<std::sync::Mutex<std::collections::HashMap<(String, i32), i64>>>,
    brokers_up: Arc<std::sync::atomic::AtomicBool>,
}

impl GroupConsumer {
    pub fn new(
        settings: &ClientSettings,
        listener: Arc<dyn RebalanceListener>,
    ) -> Result<GroupConsumer, KafkaClientError> {
        let lags = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let brokers_up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let consumer = settings
            .group_consumer()
            .create_with_context(EddyConsumerContext {
                listener,
                lags: lags.clone(),
                brokers_up: brokers_up.clone(),
                client_id_prefix: settings.group_client_id_prefix(),
                watcher: GroupWatcher::start(settings, &settings.application_id)?,
            })
            .map_err(|e| KafkaClientError::Create {
                client: "consumer",
                reason: e.to_string(),
            })?;
        Ok(GroupConsumer {
            consumer,
            lags,
            brokers_up,
        })
    }

    /// Whether the latest statistics (every 5 s) saw a live connection to a broker.
    pub fn brokers_reachable(&self) -> bool {
        self.brokers_up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the latest statistics (every 5 s) saw this partition read to its end.
    pub fn caught_up(&self, topic: &str, partition: i32) -> bool {
        self.lags
            .lock()
            .map(|lags| lags.get(&(topic.to_string(), partition)) == Some(&0))
            .unwrap_or(false)
    }

    pub fn subscribe(&self, topics: &[String]) -> Result<(), KafkaClientError> {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&topics)
            .map_err(|e| operation_error("subscribe", e))
    }

    /// Waits up to `timeout` for one record; rebalance callbacks run inside this call.
    pub fn poll(&self, timeout: Duration) -> Option<Result<ConsumedRecord<'_>, KafkaClientError>> {
        self.consumer.poll(timeout).map(|r| {
            r.map(|message| ConsumedRecord { message })
                .map_err(|e| super::client_error("poll", e))
        })
    }

    pub fn handle(&self) -> GroupHandle<'_> {
        GroupHandle {
            consumer: &self.consumer,
        }
    }

    /// Leaves the group (revoking partitions through the listener first).
    pub fn close(&self) {
        self.consumer.unsubscribe();
        // Serve the revoke callback that unsubscribe triggers.
        for _ in 0..20 {
            if self.consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
                break;
            }
            let _ = self.consumer.poll(Duration::from_millis(100));
        }
    }
}
