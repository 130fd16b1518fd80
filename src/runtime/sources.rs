//! One [`Input`] over the Kafka group consumer and the split sources read beside it (NATS
//! JetStream).
//!
//! A split is owned through the group: each is a partition of an assignment topic the same
//! consumer group subscribes to, so the group's assignment, rebalances and KIP-447 fencing cover
//! splits as they cover Kafka partitions. The assignment partitions hold no records and stay
//! paused in the Kafka consumer; what the runtime asks of them (seek, pause, resume) goes to the
//! split source instead, and a split's record is handed to the runtime as a record of its
//! partition with the split's position as offset. The runtime commits offset + 1 in the
//! transaction with the outputs, and a new owner resumes the split from that committed offset.

use super::ports::{
    Group, GroupDescription, Input, InputError, Membership, PolledRecord, RebalanceListener, Split,
    SplitRecord, SplitSource,
};
use crate::kafka::{KafkaClientError, PartitionOffset};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A record from Kafka or from a split.
pub enum SourcedRecord<R> {
    Kafka(R),
    Split(SplitRecord),
}

impl<R: PolledRecord> PolledRecord for SourcedRecord<R> {
    fn topic(&self) -> &str {
        match self {
            SourcedRecord::Kafka(r) => r.topic(),
            SourcedRecord::Split(r) => &r.split.0,
        }
    }
    fn partition(&self) -> i32 {
        match self {
            SourcedRecord::Kafka(r) => r.partition(),
            SourcedRecord::Split(r) => r.split.1,
        }
    }
    fn offset(&self) -> i64 {
        match self {
            SourcedRecord::Kafka(r) => r.offset(),
            SourcedRecord::Split(r) => r.offset,
        }
    }
    fn key(&self) -> Option<&[u8]> {
        match self {
            SourcedRecord::Kafka(r) => r.key(),
            SourcedRecord::Split(_) => None,
        }
    }
    fn payload(&self) -> Option<&[u8]> {
        match self {
            SourcedRecord::Kafka(r) => r.payload(),
            SourcedRecord::Split(r) => Some(&r.payload),
        }
    }
    fn timestamp_ms(&self) -> Option<i64> {
        match self {
            SourcedRecord::Kafka(r) => r.timestamp_ms(),
            SourcedRecord::Split(r) => Some(r.timestamp_ms),
        }
    }
    fn subject(&self) -> Option<&str> {
        match self {
            SourcedRecord::Kafka(r) => r.subject(),
            SourcedRecord::Split(r) => Some(&r.subject),
        }
    }
}

/// The split source of a topology without one.
pub struct NoSplits;

impl SplitSource for NoSplits {
    fn owns(&self, _: &str) -> bool {
        false
    }
    fn start(&self, _: &Split, _: Option<i64>, _: bool) {}
    fn stop(&self, _: &Split) {}
    fn set_paused(&self, _: &Split, _: bool) {}
    fn is_paused(&self, _: &Split) -> bool {
        true
    }
    fn caught_up(&self, _: &Split) -> bool {
        false
    }
    fn any_running(&self) -> bool {
        false
    }
    fn recv(&self, _: Duration) -> Option<Result<SplitRecord, crate::Error>> {
        None
    }
}

/// The Kafka consumer `I` and the split source, as one input.
pub struct SourcesInput<I> {
    kafka: I,
    splits: Arc<dyn SplitSource>,
    /// Which to try first on the next poll: the two take turns, so neither starves the other.
    splits_first: AtomicBool,
}

/// How long one wait on either side lasts while both may have records.
const WAIT_SLICE: Duration = Duration::from_millis(5);

impl<I: Input> SourcesInput<I> {
    /// `kafka` must have been built around [`SourcesListener`] with the same split source.
    pub fn new(kafka: I, splits: Arc<dyn SplitSource>) -> SourcesInput<I> {
        SourcesInput {
            kafka,
            splits,
            splits_first: AtomicBool::new(false),
        }
    }

    fn poll_splits(
        &self,
        timeout: Duration,
    ) -> Option<Result<SourcedRecord<I::Record<'_>>, InputError>> {
        self.splits
            .recv(timeout)
            .map(|polled| polled.map(SourcedRecord::Split).map_err(InputError::Fatal))
    }

    fn poll_kafka(
        &self,
        timeout: Duration,
    ) -> Option<Result<SourcedRecord<I::Record<'_>>, InputError>> {
        self.kafka
            .poll(timeout)
            .map(|polled| polled.map(SourcedRecord::Kafka))
    }
}

impl<I: Input> Input for SourcesInput<I> {
    type Record<'a>
        = SourcedRecord<I::Record<'a>>
    where
        Self: 'a;

    fn poll(&self, timeout: Duration) -> Option<Result<Self::Record<'_>, InputError>> {
        if !self.splits.any_running() {
            return self.poll_kafka(timeout);
        }
        if timeout.is_zero() {
            // The common case inside a batch: no clock reads.
            let splits_first = !self.splits_first.fetch_xor(true, Ordering::Relaxed);
            return if splits_first {
                self.poll_splits(timeout)
                    .or_else(|| self.poll_kafka(timeout))
            } else {
                self.poll_kafka(timeout)
                    .or_else(|| self.poll_splits(timeout))
            };
        }
        let deadline = Instant::now() + timeout;
        loop {
            let splits_first = !self.splits_first.fetch_xor(true, Ordering::Relaxed);
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(WAIT_SLICE);
            if splits_first {
                if let Some(polled) = self.poll_splits(Duration::ZERO) {
                    return Some(polled);
                }
                if let Some(polled) = self.poll_kafka(slice) {
                    return Some(polled);
                }
            } else {
                if let Some(polled) = self.poll_kafka(Duration::ZERO) {
                    return Some(polled);
                }
                if let Some(polled) = self.poll_splits(slice) {
                    return Some(polled);
                }
            }
            if left.is_zero() {
                return None;
            }
        }
    }

    fn group(&self) -> &dyn Group {
        self
    }

    fn brokers_reachable(&self) -> bool {
        self.kafka.brokers_reachable()
    }

    fn caught_up(&self, topic: &str, partition: i32) -> bool {
        if self.splits.owns(topic) {
            self.splits.caught_up(&(topic.to_string(), partition))
        } else {
            self.kafka.caught_up(topic, partition)
        }
    }

    fn close(&self) {
        self.kafka.close();
    }
}

impl<I: Input> Group for SourcesInput<I> {
    fn committed(
        &self,
        partitions: &[(String, i32)],
        timeout: Duration,
    ) -> Result<Vec<PartitionOffset>, KafkaClientError> {
        self.kafka.group().committed(partitions, timeout)
    }
    fn seek(
        &self,
        topic: &str,
        partition: i32,
        offset: Option<i64>,
    ) -> Result<(), KafkaClientError> {
        routed(self.kafka.group(), self.splits.as_ref()).seek(topic, partition, offset)
    }
    fn pause(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
        routed(self.kafka.group(), self.splits.as_ref()).pause(partitions)
    }
    fn resume(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
        routed(self.kafka.group(), self.splits.as_ref()).resume(partitions)
    }
    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaClientError> {
        self.kafka.group().watermarks(topic, partition)
    }
    fn assignment(&self) -> Vec<(String, i32)> {
        self.kafka.group().assignment()
    }
    fn membership(&self) -> Option<Membership> {
        self.kafka.group().membership()
    }
    fn commit_offsets(&self, offsets: &[PartitionOffset]) -> Result<(), KafkaClientError> {
        self.kafka.group().commit_offsets(offsets)
    }
    fn describe(&self) -> Result<Option<GroupDescription>, KafkaClientError> {
        self.kafka.group().describe()
    }
}

/// A group whose split partitions are moved by the split source, the rest by Kafka.
struct Routed<'g> {
    kafka: &'g dyn Group,
    splits: &'g dyn SplitSource,
}

fn routed<'g>(kafka: &'g dyn Group, splits: &'g dyn SplitSource) -> Routed<'g> {
    Routed { kafka, splits }
}

impl Routed<'_> {
    /// Pauses or resumes splits in the split source and the rest in Kafka.
    fn set_paused(
        &self,
        partitions: &[(String, i32)],
        paused: bool,
    ) -> Result<(), KafkaClientError> {
        let (kafka, splits) = self.split(partitions);
        for split in &splits {
            self.splits.set_paused(split, paused);
        }
        match (kafka.is_empty(), paused) {
            (true, _) => Ok(()),
            (false, true) => self.kafka.pause(&kafka),
            (false, false) => self.kafka.resume(&kafka),
        }
    }

    /// (Kafka partitions, splits).
    fn split(&self, partitions: &[(String, i32)]) -> (Vec<(String, i32)>, Vec<Split>) {
        partitions
            .iter()
            .cloned()
            .partition(|(topic, _)| !self.splits.owns(topic))
    }
}

impl Group for Routed<'_> {
    fn committed(
        &self,
        partitions: &[(String, i32)],
        timeout: Duration,
    ) -> Result<Vec<PartitionOffset>, KafkaClientError> {
        self.kafka.committed(partitions, timeout)
    }
    /// A split starts over at `offset`, paused if it was (a newly assigned one is).
    fn seek(
        &self,
        topic: &str,
        partition: i32,
        offset: Option<i64>,
    ) -> Result<(), KafkaClientError> {
        if !self.splits.owns(topic) {
            return self.kafka.seek(topic, partition, offset);
        }
        let split = (topic.to_string(), partition);
        let paused = self.splits.is_paused(&split);
        self.splits.start(&split, offset, paused);
        Ok(())
    }
    fn pause(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
        self.set_paused(partitions, true)
    }
    fn resume(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
        self.set_paused(partitions, false)
    }
    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaClientError> {
        self.kafka.watermarks(topic, partition)
    }
    fn assignment(&self) -> Vec<(String, i32)> {
        self.kafka.assignment()
    }
    fn membership(&self) -> Option<Membership> {
        self.kafka.membership()
    }
    fn commit_offsets(&self, offsets: &[PartitionOffset]) -> Result<(), KafkaClientError> {
        self.kafka.commit_offsets(offsets)
    }
    fn describe(&self) -> Result<Option<GroupDescription>, KafkaClientError> {
        self.kafka.describe()
    }
}

/// The rebalance listener the Kafka consumer calls: it keeps the assignment partitions paused
/// in Kafka, stops the readers of revoked splits, and hands the runtime's listener a group that
/// routes split partitions to the split source.
pub struct SourcesListener {
    pub inner: Arc<dyn RebalanceListener>,
    pub splits: Arc<dyn SplitSource>,
}

impl RebalanceListener for SourcesListener {
    fn on_revoke(&self, partitions: &[(String, i32)], lost: bool, group: &dyn Group) {
        self.inner
            .on_revoke(partitions, lost, &routed(group, self.splits.as_ref()));
        for split in partitions.iter().filter(|(t, _)| self.splits.owns(t)) {
            self.splits.stop(split);
        }
    }

    fn on_assign(&self, partitions: &[(String, i32)], group: &dyn Group) {
        let splits: Vec<(String, i32)> = partitions
            .iter()
            .filter(|(t, _)| self.splits.owns(t))
            .cloned()
            .collect();
        if !splits.is_empty() {
            if let Err(error) = group.pause(&splits) {
                tracing::warn!(%error, "could not pause the assignment partitions in the Kafka consumer");
            }
        }
        self.inner
            .on_assign(partitions, &routed(group, self.splits.as_ref()));
    }
}
