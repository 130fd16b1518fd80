//! A simulated group consumer. The group rebalances eagerly, as eddy's consumers do: every member
//! revokes everything (committing first) before anything is assigned again. A member whose
//! session the scheduler times out loses its partitions at once and learns it at its next poll
//! (`lost`), like a frozen zombie that comes back.

use super::broker::{Cluster, Entry, SimBroker};
use super::faults::{Call, Faults};
use crate::kafka::{KafkaClientError, PartitionOffset};
use crate::runtime::ports::{
    Group, GroupDescription, GroupMember, Input, InputError, Membership, PolledRecord,
    RebalanceListener,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The group membership a simulated transaction checks (KIP-447).
pub struct SimMembership {
    pub member: String,
    pub generation: u64,
}

/// A record handed out by [`SimInput`].
pub struct SimRecord {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    timestamp_ms: i64,
}

impl PolledRecord for SimRecord {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn partition(&self) -> i32 {
        self.partition
    }
    fn offset(&self) -> i64 {
        self.offset
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }
    fn timestamp_ms(&self) -> Option<i64> {
        Some(self.timestamp_ms)
    }
}

#[derive(Default)]
struct Consumer {
    assigned: Vec<(String, i32)>,
    generation: u64,
    positions: BTreeMap<(String, i32), i64>,
    paused: BTreeSet<(String, i32)>,
    next: usize,
}

pub struct SimInput {
    broker: SimBroker,
    faults: Faults,
    member: String,
    topics: Vec<String>,
    listener: Arc<dyn RebalanceListener>,
    consumer: Mutex<Consumer>,
}

impl SimInput {
    /// Joins the group (a rebalance starts) as `member`, subscribed to `topics`.
    pub fn join(
        broker: SimBroker,
        faults: Faults,
        member: &str,
        topics: Vec<String>,
        listener: Arc<dyn RebalanceListener>,
    ) -> SimInput {
        {
            let mut cluster = broker.lock();
            cluster.group.subscribed = topics.clone();
            cluster
                .group
                .members
                .insert(member.to_string(), Default::default());
            start_rebalance(&mut cluster);
        }
        SimInput {
            broker,
            faults,
            member: member.to_string(),
            topics,
            listener,
            consumer: Mutex::new(Consumer::default()),
        }
    }

    fn consumer(&self) -> std::sync::MutexGuard<'_, Consumer> {
        self.consumer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the rebalance callbacks this member is due, as librdkafka does inside its poll.
    fn rebalance(&self) {
        loop {
            let mut cluster = self.broker.lock();
            let mine = self.consumer().assigned.clone();
            cluster
                .group
                .known
                .insert(self.member.clone(), mine.clone());
            hand_out_moving(&mut cluster);
            let Some(member) = cluster.group.members.get(&self.member).cloned() else {
                drop(cluster);
                if !mine.is_empty() {
                    // Timed out: the partitions have other owners already.
                    self.listener.on_revoke(&mine, true, self);
                    self.forget(&mine);
                }
                // It rejoins, as a consumer whose session expired does.
                let mut cluster = self.broker.lock();
                cluster
                    .group
                    .members
                    .insert(self.member.clone(), Default::default());
                start_rebalance(&mut cluster);
                continue;
            };
            if cluster.group.revoking.contains(&self.member) {
                drop(cluster);
                if !mine.is_empty() {
                    self.listener.on_revoke(&mine, false, self);
                    self.forget(&mine);
                }
                let mut cluster = self.broker.lock();
                cluster.group.revoking.remove(&self.member);
                if let Some(m) = cluster.group.members.get_mut(&self.member) {
                    m.assigned.clear();
                }
                if cluster.group.revoking.is_empty() {
                    assign(&mut cluster, &self.topics);
                }
                continue;
            }
            let removed: Vec<(String, i32)> = mine
                .iter()
                .filter(|p| !member.assigned.contains(p))
                .cloned()
                .collect();
            if !removed.is_empty() {
                // A cooperative rebalance: only these go; the rest keep running.
                let generation = cluster.group.generation;
                drop(cluster);
                self.listener.on_revoke(&removed, false, self);
                self.forget(&removed);
                self.consumer().generation = generation;
                continue;
            }
            let added: Vec<(String, i32)> = member
                .assigned
                .iter()
                .filter(|p| !mine.contains(p))
                .cloned()
                .collect();
            if added.is_empty() {
                return;
            }
            let generation = cluster.group.generation;
            {
                let mut consumer = self.consumer();
                consumer.generation = generation;
                for partition in &added {
                    let start = committed_or_start(&cluster, partition);
                    consumer.positions.insert(partition.clone(), start);
                    consumer.assigned.push(partition.clone());
                }
            }
            drop(cluster);
            self.listener.on_assign(&added, self);
            return;
        }
    }

    fn forget(&self, partitions: &[(String, i32)]) {
        let mut consumer = self.consumer();
        consumer.assigned.retain(|p| !partitions.contains(p));
        for partition in partitions {
            consumer.positions.remove(partition);
            consumer.paused.remove(partition);
        }
    }

    /// The next visible record of an assigned, unpaused partition, round-robin.
    fn next_record(&self) -> Option<SimRecord> {
        let cluster = self.broker.lock();
        let mut consumer = self.consumer();
        let count = consumer.assigned.len();
        for i in 0..count {
            let index = (consumer.next + i) % count;
            let partition = consumer.assigned[index].clone();
            if consumer.paused.contains(&partition) {
                continue;
            }
            let Some(log) = cluster
                .topics
                .get(&partition.0)
                .and_then(|t| t.get(partition.1 as usize))
            else {
                continue;
            };
            let stable = cluster.stable_end(log);
            let mut position = consumer.positions.get(&partition).copied().unwrap_or(0);
            position = position.max(log.start);
            while position < stable {
                let entry = &log.entries[position as usize];
                position += 1;
                if let Entry::Data {
                    key,
                    value,
                    timestamp_ms,
                    txn,
                } = entry
                {
                    if cluster.visible(*txn) {
                        consumer.positions.insert(partition.clone(), position);
                        consumer.next = index + 1;
                        return Some(SimRecord {
                            topic: partition.0.clone(),
                            partition: partition.1,
                            offset: position - 1,
                            key: key.clone(),
                            payload: value.clone(),
                            timestamp_ms: *timestamp_ms,
                        });
                    }
                }
            }
            consumer.positions.insert(partition.clone(), position);
        }
        None
    }

    /// Whether every assigned partition is read to its stable end (nothing to poll).
    pub fn drained(&self) -> bool {
        let cluster = self.broker.lock();
        let consumer = self.consumer();
        consumer.assigned.iter().all(|p| {
            let Some(log) = cluster.topics.get(&p.0).and_then(|t| t.get(p.1 as usize)) else {
                return true;
            };
            consumer.positions.get(p).copied().unwrap_or(0) >= cluster.stable_end(log)
        })
    }
}

fn committed_or_start(cluster: &Cluster, partition: &(String, i32)) -> i64 {
    let start = cluster
        .topics
        .get(&partition.0)
        .and_then(|t| t.get(partition.1 as usize))
        .map_or(0, |l| l.start);
    cluster
        .committed
        .get(partition)
        .and_then(|c| c.offset)
        .unwrap_or(start)
        .max(start)
}

/// Partitions a cooperative rebalance took go to the member owning the fewest, once the member
/// they were taken from no longer holds them.
fn hand_out_moving(cluster: &mut Cluster) {
    let moving = std::mem::take(&mut cluster.group.moving);
    for (partition, from) in moving {
        let owned = cluster
            .group
            .members
            .values()
            .any(|m| m.assigned.contains(&partition));
        if owned {
            continue;
        }
        let held = cluster.group.members.contains_key(&from)
            && cluster
                .group
                .known
                .get(&from)
                .is_some_and(|k| k.contains(&partition));
        if held {
            cluster.group.moving.push((partition, from));
            continue;
        }
        let fewest = cluster
            .group
            .members
            .iter()
            .min_by_key(|(name, m)| (m.assigned.len(), name.to_string()))
            .map(|(name, _)| name.clone());
        if let Some(m) = fewest.and_then(|f| cluster.group.members.get_mut(&f)) {
            m.assigned.push(partition);
        }
    }
}

/// Every member must revoke before anything is assigned again.
pub(crate) fn start_rebalance(cluster: &mut Cluster) {
    cluster.group.revoking = cluster.group.members.keys().cloned().collect();
    let idle: Vec<String> = cluster
        .group
        .members
        .iter()
        .filter(|(_, m)| m.assigned.is_empty())
        .map(|(name, _)| name.clone())
        .collect();
    // Members with nothing to revoke rejoin at once.
    for name in idle {
        cluster.group.revoking.remove(&name);
    }
    if cluster.group.revoking.is_empty() {
        let topics = cluster.group.subscribed.clone();
        assign(cluster, &topics);
    }
}

/// A new generation: the partitions of the subscribed topics dealt round-robin to the members.
pub(crate) fn assign(cluster: &mut Cluster, topics: &[String]) {
    if !topics.is_empty() {
        cluster.group.subscribed = topics.to_vec();
    }
    cluster.group.generation += 1;
    cluster.group.moving.clear();
    let members: Vec<String> = cluster.group.members.keys().cloned().collect();
    if members.is_empty() {
        return;
    }
    let mut partitions = Vec::new();
    for topic in &cluster.group.subscribed {
        let count = cluster.topics.get(topic).map_or(0, Vec::len);
        for p in 0..count as i32 {
            partitions.push((topic.clone(), p));
        }
    }
    for member in cluster.group.members.values_mut() {
        member.assigned.clear();
    }
    for (i, partition) in partitions.into_iter().enumerate() {
        let name = &members[i % members.len()];
        if let Some(member) = cluster.group.members.get_mut(name) {
            member.assigned.push(partition);
        }
    }
}

impl Input for SimInput {
    type Record<'a> = SimRecord;

    fn poll(&self, _timeout: Duration) -> Option<Result<SimRecord, InputError>> {
        self.rebalance();
        if self.faults.fails(Call::PollUnreachable) {
            return Some(Err(InputError::Consumer(KafkaClientError::Unreachable {
                operation: "poll".into(),
                reason: "simulated: broker unreachable".into(),
                code: None,
            })));
        }
        self.next_record().map(Ok)
    }

    fn group(&self) -> &dyn Group {
        self
    }

    fn brokers_reachable(&self) -> bool {
        true
    }

    fn caught_up(&self, topic: &str, partition: i32) -> bool {
        let cluster = self.broker.lock();
        let consumer = self.consumer();
        let key = (topic.to_string(), partition);
        cluster
            .topics
            .get(topic)
            .and_then(|t| t.get(partition as usize))
            .is_some_and(|log| {
                consumer.positions.get(&key).copied().unwrap_or(0) >= cluster.stable_end(log)
            })
    }

    fn close(&self) {
        let mine = self.consumer().assigned.clone();
        let member = self.broker.lock().group.members.contains_key(&self.member);
        if member && !mine.is_empty() {
            self.listener.on_revoke(&mine, false, self);
        }
        self.forget(&mine);
        let mut cluster = self.broker.lock();
        if cluster.group.members.remove(&self.member).is_some() {
            cluster.group.revoking.remove(&self.member);
            start_rebalance(&mut cluster);
        }
    }
}

impl Group for SimInput {
    fn committed(
        &self,
        partitions: &[(String, i32)],
        _timeout: Duration,
    ) -> Result<Vec<PartitionOffset>, KafkaClientError> {
        if self.faults.fails(Call::OffsetFetchTimesOut) {
            return Err(KafkaClientError::Operation {
                operation: "offset fetch".into(),
                reason: "simulated: the stable offsets did not come in time".into(),
                code: None,
            });
        }
        let mut cluster = self.broker.lock();
        Ok(partitions
            .iter()
            .map(|(topic, partition)| {
                cluster.time_out_blocking(topic, *partition, true);
                cluster
                    .committed
                    .get(&(topic.clone(), *partition))
                    .cloned()
                    .unwrap_or(PartitionOffset {
                        topic: topic.clone(),
                        partition: *partition,
                        offset: None,
                        metadata: String::new(),
                    })
            })
            .collect())
    }

    fn seek(
        &self,
        topic: &str,
        partition: i32,
        offset: Option<i64>,
    ) -> Result<(), KafkaClientError> {
        let key = (topic.to_string(), partition);
        let unavailable = |reason: &str| KafkaClientError::Operation {
            operation: "seek".into(),
            reason: format!("simulated: {reason}"),
            code: None,
        };
        if !self.consumer().assigned.contains(&key) {
            return Err(unavailable("partition not assigned"));
        }
        if self.faults.fails(Call::SeekFails) {
            return Err(unavailable("fetcher not ready"));
        }
        let start = self
            .broker
            .watermarks(topic, partition)
            .map_or(0, |(low, _)| low);
        self.consumer()
            .positions
            .insert(key, offset.unwrap_or(start));
        Ok(())
    }

    fn pause(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
        self.consumer().paused.extend(partitions.iter().cloned());
        Ok(())
    }

    fn resume(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
        let mut consumer = self.consumer();
        for partition in partitions {
            consumer.paused.remove(partition);
        }
        Ok(())
    }

    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaClientError> {
        self.broker
            .watermarks(topic, partition)
            .ok_or_else(|| KafkaClientError::Operation {
                operation: "list offsets".into(),
                reason: format!("simulated: no partition {topic}-{partition}"),
                code: None,
            })
    }

    fn assignment(&self) -> Vec<(String, i32)> {
        self.consumer().assigned.clone()
    }

    fn membership(&self) -> Option<Membership> {
        let generation = self.consumer().generation;
        Some(Membership(Box::new(SimMembership {
            member: self.member.clone(),
            generation,
        })))
    }

    /// The coordinator's view: stable while no rebalance is under way (nothing to revoke or
    /// hand on).
    fn describe(&self) -> Result<Option<GroupDescription>, KafkaClientError> {
        let cluster = self.broker.lock();
        let group = &cluster.group;
        let stable = group.revoking.is_empty() && group.moving.is_empty();
        Ok(Some(GroupDescription {
            stable,
            members: group
                .members
                .iter()
                .map(|(member, state)| GroupMember {
                    instance: member.clone(),
                    member_id: member.clone(),
                    partitions: if stable {
                        state.assigned.clone()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        }))
    }

    fn commit_offsets(&self, _offsets: &[PartitionOffset]) -> Result<(), KafkaClientError> {
        Err(KafkaClientError::Operation {
            operation: "offset commit".into(),
            reason: "the simulation runs exactly-once only".into(),
            code: None,
        })
    }
}
