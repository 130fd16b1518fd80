//! Simulated transactional producers: epochs that fence, transactions that commit records and
//! offsets atomically, KIP-447's generation check on offsets, and faults at every step.

use super::broker::{Entry, SimBroker};
use super::faults::{Call, Faults};
use super::input::SimMembership;
use crate::kafka::{CommitFailure, CommitFailureKind, KafkaClientError, PartitionOffset};
use crate::runtime::ports::{Membership, Transaction, Transactions};
use crate::state::ChangelogEnds;
use crate::task::{partition_for, OutgoingRecord};

/// Opens producers with one transactional id.
pub struct SimTransactions {
    pub broker: SimBroker,
    pub faults: Faults,
    pub application_id: String,
    pub transactional_id: String,
}

impl Transactions for SimTransactions {
    fn open(&self) -> Result<Box<dyn Transaction>, KafkaClientError> {
        let mut cluster = self.broker.lock();
        let epoch = cluster
            .epochs
            .entry(self.transactional_id.clone())
            .or_default();
        *epoch += 1;
        let epoch = *epoch;
        // init_transactions: the coordinator aborts what the fenced producer left open.
        cluster.abort_open_of(&self.transactional_id);
        Ok(Box::new(SimTransaction {
            broker: self.broker.clone(),
            faults: self.faults.clone(),
            transactional_id: self.transactional_id.clone(),
            epoch,
            txn: None,
            must_abort: false,
            changelog_ends: Default::default(),
        }))
    }

    fn transactional(&self) -> bool {
        true
    }

    /// A producer of the departed instance's id initialises: its epoch moves on (the departed
    /// one is fenced) and the coordinator aborts what it left open.
    fn fence(&self, instance: &str) {
        let id = crate::runtime::transactional_id(&self.application_id, instance);
        let mut cluster = self.broker.lock();
        *cluster.epochs.entry(id.clone()).or_default() += 1;
        cluster.abort_open_of(&id);
    }
}

struct SimTransaction {
    broker: SimBroker,
    faults: Faults,
    transactional_id: String,
    epoch: u64,
    txn: Option<u64>,
    /// A delivery failed: the transaction can only be aborted.
    must_abort: bool,
    /// Per changelog partition, the offset after the last record sent there.
    changelog_ends: ChangelogEnds,
}

fn failure(kind: CommitFailureKind, reason: &str) -> CommitFailure {
    CommitFailure::new(kind, format!("simulated: {reason}"))
}

impl SimTransaction {
    fn check_fenced(&self) -> Result<(), CommitFailure> {
        let cluster = self.broker.lock();
        if cluster.epochs.get(&self.transactional_id) != Some(&self.epoch) {
            return Err(failure(CommitFailureKind::Fenced, "producer fenced"));
        }
        Ok(())
    }

    fn fence_by_another(&mut self) {
        let mut cluster = self.broker.lock();
        *cluster
            .epochs
            .entry(self.transactional_id.clone())
            .or_default() += 1;
        cluster.abort_open_of(&self.transactional_id);
    }
}

impl Transaction for SimTransaction {
    fn send(&mut self, record: &OutgoingRecord) -> Result<(), CommitFailure> {
        self.check_fenced()?;
        if self.faults.fails(Call::SendAbortable) {
            self.must_abort = true;
        }
        let mut cluster = self.broker.lock();
        let txn = *self
            .txn
            .get_or_insert_with(|| cluster.new_txn(&self.transactional_id));
        let partitions = cluster
            .topics
            .get(&record.topic)
            .map_or(0, |t| t.len() as i32);
        if partitions == 0 {
            return Err(failure(
                CommitFailureKind::Permanent,
                &format!("topic {} does not exist", record.topic),
            ));
        }
        let partition = record.partition.unwrap_or_else(|| {
            partition_for(record.key.as_deref().unwrap_or_default(), partitions)
        });
        let entries = &mut cluster.topics.get_mut(&record.topic).expect("checked")
            [partition as usize]
            .entries;
        if record.topic.ends_with(crate::topology::CHANGELOG_SUFFIX) {
            self.changelog_ends
                .insert((record.topic.clone(), partition), entries.len() as i64 + 1);
        }
        entries.push(Entry::Data {
            key: record.key.clone(),
            value: record.value.clone(),
            timestamp_ms: 0,
            txn: Some(txn),
        });
        if let Some(open) = cluster.open.get_mut(&txn) {
            open.partitions.insert((record.topic.clone(), partition));
        }
        Ok(())
    }

    fn serve(&self) {}

    fn commit(
        &mut self,
        offsets: &[PartitionOffset],
        membership: Option<&Membership>,
    ) -> Result<(), CommitFailure> {
        self.check_fenced()?;
        if self.must_abort {
            return Err(failure(
                CommitFailureKind::Abortable,
                "a record was not delivered",
            ));
        }
        if self.faults.fails(Call::CommitFenced) {
            self.fence_by_another();
            return Err(failure(
                CommitFailureKind::Fenced,
                "fenced mid-commit by another producer",
            ));
        }
        let mut cluster = self.broker.lock();
        if !offsets.is_empty() {
            let member = membership
                .and_then(|m| m.0.downcast_ref::<SimMembership>())
                .ok_or_else(|| failure(CommitFailureKind::Fenced, "not a group member"))?;
            let current = cluster.group.members.get(&member.member);
            let owns_all = current.is_some_and(|m| {
                offsets
                    .iter()
                    .all(|o| m.assigned.contains(&(o.topic.clone(), o.partition)))
            });
            if cluster.group.generation != member.generation || !owns_all {
                return Err(failure(
                    CommitFailureKind::Abortable,
                    "stale group generation (KIP-447)",
                ));
            }
        }
        let txn = *self
            .txn
            .get_or_insert_with(|| cluster.new_txn(&self.transactional_id));
        if let Some(open) = cluster.open.get_mut(&txn) {
            open.offsets.extend(offsets.iter().cloned());
        }
        drop(cluster);
        if self.faults.fails(Call::CommitAbortable) {
            return Err(failure(
                CommitFailureKind::Abortable,
                "the transaction must be aborted",
            ));
        }
        if self.faults.fails(Call::CommitUnknownNotCommitted) {
            return Err(failure(
                CommitFailureKind::Unknown,
                "EndTxn never arrived; outcome unknown",
            ));
        }
        self.broker.lock().end_txn(txn, true);
        self.txn = None;
        if self.faults.fails(Call::CommitUnknownCommitted) {
            return Err(failure(
                CommitFailureKind::Unknown,
                "committed, but the reply was lost; outcome unknown",
            ));
        }
        Ok(())
    }

    fn abort(&mut self) -> Result<(), CommitFailure> {
        self.check_fenced()?;
        if let Some(txn) = self.txn.take() {
            self.broker.lock().end_txn(txn, false);
        }
        self.must_abort = false;
        self.changelog_ends.clear();
        Ok(())
    }

    fn take_changelog_ends(&mut self) -> ChangelogEnds {
        std::mem::take(&mut self.changelog_ends)
    }

    fn wait_delivered(&self) -> Result<(), KafkaClientError> {
        Ok(())
    }
}
