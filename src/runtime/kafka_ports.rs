//! The runtime's ports ([`super::ports`]) implemented with eddy's Kafka clients. Plain delegation:
//! what each call means on Kafka is documented where the client is (`src/kafka/`).

use super::ports::{
    Admin, Changelog, Group, GroupDescription, GroupMember, Input, InputError, Membership,
    PolledRecord, RebalanceListener, Transaction, Transactions,
};
use crate::kafka::{
    ChangelogReader, ClientSettings, CommitFailure, CommitFailureKind, ConsumedRecord,
    GroupConsumer, GroupHandle, GroupMetadata, KafkaClientError, PartitionOffset, ReadPosition,
    ReadRecord, RecordProducer, TopicAdmin,
};
use crate::state::ChangelogEnds;
use crate::task::OutgoingRecord;
use std::sync::Arc;
use std::time::Duration;

impl PolledRecord for ConsumedRecord<'_> {
    fn topic(&self) -> &str {
        ConsumedRecord::topic(self)
    }
    fn partition(&self) -> i32 {
        ConsumedRecord::partition(self)
    }
    fn offset(&self) -> i64 {
        ConsumedRecord::offset(self)
    }
    fn key(&self) -> Option<&[u8]> {
        ConsumedRecord::key(self)
    }
    fn payload(&self) -> Option<&[u8]> {
        ConsumedRecord::payload(self)
    }
    fn timestamp_ms(&self) -> Option<i64> {
        ConsumedRecord::timestamp_ms(self)
    }
}

impl Group for GroupHandle<'_> {
    fn committed(
        &self,
        partitions: &[(String, i32)],
        timeout: Duration,
    ) -> Result<Vec<PartitionOffset>, KafkaClientError> {
        GroupHandle::committed(self, partitions, timeout)
    }
    fn seek(
        &self,
        topic: &str,
        partition: i32,
        offset: Option<i64>,
    ) -> Result<(), KafkaClientError> {
        GroupHandle::seek(self, topic, partition, offset)
    }
    fn pause(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
        GroupHandle::pause(self, partitions)
    }
    fn resume(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
        GroupHandle::resume(self, partitions)
    }
    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaClientError> {
        GroupHandle::watermarks(self, topic, partition)
    }
    fn assignment(&self) -> Vec<(String, i32)> {
        GroupHandle::assignment(self)
    }
    fn membership(&self) -> Option<Membership> {
        self.group_metadata()
            .map(|metadata| Membership(Box::new(metadata)))
    }
    fn commit_offsets(&self, offsets: &[PartitionOffset]) -> Result<(), KafkaClientError> {
        self.commit_sync(offsets)
    }
    fn describe(&self) -> Result<Option<GroupDescription>, KafkaClientError> {
        Ok(GroupHandle::describe(self)?.map(|group| GroupDescription {
            stable: group.stable,
            members: group
                .members
                .into_iter()
                .map(|member| GroupMember {
                    instance: member.client_id,
                    member_id: member.member_id,
                    partitions: member.partitions,
                })
                .collect(),
        }))
    }
}

/// The consumer is its own group handle outside callbacks.
impl Group for GroupConsumer {
    fn committed(
        &self,
        partitions: &[(String, i32)],
        timeout: Duration,
    ) -> Result<Vec<PartitionOffset>, KafkaClientError> {
        self.handle().committed(partitions, timeout)
    }
    fn seek(
        &self,
        topic: &str,
        partition: i32,
        offset: Option<i64>,
    ) -> Result<(), KafkaClientError> {
        self.handle().seek(topic, partition, offset)
    }
    fn pause(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
        self.handle().pause(partitions)
    }
    fn resume(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
        self.handle().resume(partitions)
    }
    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaClientError> {
        self.handle().watermarks(topic, partition)
    }
    fn assignment(&self) -> Vec<(String, i32)> {
        self.handle().assignment()
    }
    fn membership(&self) -> Option<Membership> {
        Group::membership(&self.handle())
    }
    fn commit_offsets(&self, offsets: &[PartitionOffset]) -> Result<(), KafkaClientError> {
        self.handle().commit_sync(offsets)
    }
    fn describe(&self) -> Result<Option<GroupDescription>, KafkaClientError> {
        Group::describe(&self.handle())
    }
}

impl Input for GroupConsumer {
    type Record<'a> = ConsumedRecord<'a>;
    fn poll(&self, timeout: Duration) -> Option<Result<ConsumedRecord<'_>, InputError>> {
        GroupConsumer::poll(self, timeout).map(|polled| polled.map_err(InputError::Consumer))
    }
    fn group(&self) -> &dyn Group {
        self
    }
    fn brokers_reachable(&self) -> bool {
        GroupConsumer::brokers_reachable(self)
    }
    fn caught_up(&self, topic: &str, partition: i32) -> bool {
        GroupConsumer::caught_up(self, topic, partition)
    }
    fn close(&self) {
        GroupConsumer::close(self)
    }
}

/// Hands the consumer's rebalance callbacks to the runtime's listener.
pub(crate) struct KafkaListener(pub Arc<dyn RebalanceListener>);

impl crate::kafka::RebalanceListener for KafkaListener {
    fn on_revoke(&self, partitions: &[(String, i32)], lost: bool, group: &GroupHandle<'_>) {
        self.0.on_revoke(partitions, lost, group);
    }
    fn on_assign(&self, partitions: &[(String, i32)], group: &GroupHandle<'_>) {
        self.0.on_assign(partitions, group);
    }
}

impl Transaction for RecordProducer {
    fn send(&mut self, record: &OutgoingRecord) -> Result<(), CommitFailure> {
        RecordProducer::send(self, record)
    }
    fn serve(&self) {
        self.poll();
    }
    fn commit(
        &mut self,
        offsets: &[PartitionOffset],
        membership: Option<&Membership>,
    ) -> Result<(), CommitFailure> {
        let metadata = match membership {
            Some(membership) => Some(membership.0.downcast_ref::<GroupMetadata>().ok_or_else(
                || {
                    CommitFailure::new(
                        CommitFailureKind::Fatal,
                        "the group membership is not a Kafka consumer's",
                    )
                },
            )?),
            None => None,
        };
        RecordProducer::commit(self, offsets, metadata)
    }
    fn abort(&mut self) -> Result<(), CommitFailure> {
        RecordProducer::abort(self)
    }
    fn take_changelog_ends(&mut self) -> ChangelogEnds {
        RecordProducer::take_changelog_ends(self)
    }
    fn wait_delivered(&self) -> Result<(), KafkaClientError> {
        RecordProducer::wait_delivered(self)
    }
}

/// Opens Kafka producers with the instance's transactional id (exactly-once) or none.
pub(crate) struct KafkaTransactions {
    pub settings: ClientSettings,
    pub transactional_id: Option<String>,
}

impl Transactions for KafkaTransactions {
    fn open(&self) -> Result<Box<dyn Transaction>, KafkaClientError> {
        Ok(Box::new(RecordProducer::new(
            &self.settings,
            self.transactional_id.as_deref(),
        )?))
    }
    fn transactional(&self) -> bool {
        self.transactional_id.is_some()
    }
    fn fence(&self, instance: &str) {
        if self.transactional_id.is_none() {
            return;
        }
        let id = super::transactional_id(&self.settings.application_id, instance);
        let settings = self.settings.clone();
        // init_transactions waits for the coordinator to abort what the departed producer left
        // open: not on the loop thread.
        let spawned = std::thread::Builder::new()
            .name("eddy-fence".into())
            .spawn(move || match RecordProducer::new(&settings, Some(&id)) {
                Ok(_fenced) => {
                    tracing::info!(transactional_id = %id, "fenced the producer of an instance that left the group: its open transaction is aborted")
                }
                Err(error) => {
                    tracing::warn!(transactional_id = %id, %error, "could not fence the producer of an instance that left the group; its open transaction ends at transaction.timeout.ms")
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start a thread to fence a departed instance");
        }
    }
}

impl Changelog for ChangelogReader {
    fn open_partition(
        &self,
        topic: &str,
        partition: i32,
        from: Option<i64>,
        patience: Duration,
    ) -> Result<ReadPosition, KafkaClientError> {
        ChangelogReader::open_partition(self, topic, partition, from, patience)
    }
    fn read_some(
        &self,
        topic: &str,
        position: &mut ReadPosition,
        budget: Duration,
        max_records: usize,
        visit: &mut dyn FnMut(ReadRecord),
    ) -> Result<usize, KafkaClientError> {
        ChangelogReader::read_some(self, topic, position, budget, max_records, visit)
    }
    fn close_partition(&self) {
        ChangelogReader::close_partition(self)
    }
}

impl Admin for TopicAdmin {
    fn delete_records_before(
        &self,
        offsets: &[(String, i32, i64)],
        timeout: Duration,
    ) -> Result<usize, KafkaClientError> {
        TopicAdmin::delete_records_before(self, offsets, timeout)
    }
}
