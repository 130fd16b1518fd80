//! The simulated cluster: partitioned logs with transactions, markers and a last stable offset,
//! committed offsets that become visible with their transaction, producer epochs that fence, and
//! one consumer group whose generation moves at every rebalance.

use crate::kafka::PartitionOffset;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// One record of a log, or a transaction marker.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    Data {
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp_ms: i64,
        /// The transaction it was written in (`None`: not transactional).
        txn: Option<u64>,
    },
    Marker,
}

#[derive(Default)]
pub(crate) struct Log {
    pub entries: Vec<Entry>,
    /// Records before it were deleted (`delete_records_before`).
    pub start: i64,
}

/// An open transaction.
pub(crate) struct OpenTxn {
    pub id: u64,
    pub transactional_id: String,
    pub partitions: BTreeSet<(String, i32)>,
    pub offsets: Vec<PartitionOffset>,
}

#[derive(Default)]
pub(crate) struct Cluster {
    pub topics: BTreeMap<String, Vec<Log>>,
    /// Transactional id -> its current producer epoch.
    pub epochs: BTreeMap<String, u64>,
    pub open: BTreeMap<u64, OpenTxn>,
    pub aborted: BTreeSet<u64>,
    next_txn: u64,
    /// The group's committed offsets.
    pub committed: BTreeMap<(String, i32), PartitionOffset>,
    pub group: GroupState,
    /// Transactions the coordinator aborted because a stable read or a new owner waited on them
    /// (what `transaction.timeout.ms` does on a real cluster).
    pub timed_out: u64,
}

/// The consumer group: members, the generation, and each member's assignment.
#[derive(Default)]
pub(crate) struct GroupState {
    /// Moves when a rebalance completes (the assignment changes).
    pub generation: u64,
    pub members: BTreeMap<String, Member>,
    /// Members that must revoke before the next assignment.
    pub revoking: BTreeSet<String>,
    pub subscribed: Vec<String>,
    /// Partitions a cooperative rebalance took, and from whom: handed on once that member's
    /// consumer no longer holds them.
    pub moving: Vec<((String, i32), String)>,
    /// What each member's consumer holds, as it last told (its view lags the coordinator's).
    pub known: BTreeMap<String, Vec<(String, i32)>>,
}

#[derive(Default, Clone)]
pub(crate) struct Member {
    /// What the member owns, as the coordinator sees it (its consumer learns at its next poll).
    pub assigned: Vec<(String, i32)>,
}

/// A record's key and value.
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A handle on the simulated cluster, shared by every client of one simulation.
#[derive(Clone, Default)]
pub struct SimBroker(Arc<Mutex<Cluster>>);

impl SimBroker {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a topic (no-op when it exists).
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let mut cluster = self.lock();
        cluster
            .topics
            .entry(name.to_string())
            .or_insert_with(|| (0..partitions).map(|_| Log::default()).collect());
    }

    /// Appends a plain (non-transactional) record, as a producer outside eddy would.
    pub fn produce(&self, topic: &str, partition: i32, key: &[u8], value: &[u8], ts: i64) {
        let mut cluster = self.lock();
        let log = &mut cluster.topics.get_mut(topic).expect("topic exists")[partition as usize];
        log.entries.push(Entry::Data {
            key: Some(key.to_vec()),
            value: Some(value.to_vec()),
            timestamp_ms: ts,
            txn: None,
        });
    }

    /// Every committed record of `topic`, as a read_committed reader sees it.
    pub fn read_committed(&self, topic: &str) -> Vec<KeyValue> {
        let cluster = self.lock();
        let mut out = Vec::new();
        for log in cluster.topics.get(topic).into_iter().flatten() {
            for entry in &log.entries {
                if let Entry::Data {
                    key, value, txn, ..
                } = entry
                {
                    if txn.is_none_or(|t| {
                        !cluster.open.contains_key(&t) && !cluster.aborted.contains(&t)
                    }) {
                        out.push((key.clone(), value.clone()));
                    }
                }
            }
        }
        out
    }

    /// Every topic's name.
    pub fn topic_names(&self) -> Vec<String> {
        self.lock().topics.keys().cloned().collect()
    }

    /// Offsets committed for the group.
    pub fn committed_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.lock()
            .committed
            .get(&(topic.to_string(), partition))
            .and_then(|c| c.offset)
    }

    /// (log start, end) of a partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        let cluster = self.lock();
        let log = cluster.topics.get(topic)?.get(partition as usize)?;
        Some((log.start, log.entries.len() as i64))
    }

    /// The coordinator times out a member's session: its partitions go to the others at once; it
    /// learns at its next poll that they were lost.
    pub fn expire_session(&self, member: &str) {
        let mut cluster = self.lock();
        if cluster.group.members.remove(member).is_some() {
            cluster.group.revoking.remove(member);
            super::input::start_rebalance(&mut cluster);
        }
    }

    /// A member leaves and rejoins (e.g. a new member joined): everyone revokes, then a new
    /// assignment.
    pub fn rebalance(&self) {
        super::input::start_rebalance(&mut self.lock());
    }

    /// A cooperative rebalance moves `partitions` away from `member`: it revokes just those at
    /// its next poll, and then they go to the member that owns the fewest.
    pub fn revoke_partitions(&self, member: &str, partitions: &[(String, i32)]) {
        let mut cluster = self.lock();
        let Some(m) = cluster.group.members.get_mut(member) else {
            return;
        };
        m.assigned.retain(|p| !partitions.contains(p));
        cluster
            .group
            .moving
            .extend(partitions.iter().map(|p| (p.clone(), member.to_string())));
    }

    /// The partitions the coordinator has given `member`.
    pub fn assignment_of(&self, member: &str) -> Vec<(String, i32)> {
        self.lock()
            .group
            .members
            .get(member)
            .map(|m| m.assigned.clone())
            .unwrap_or_default()
    }

    /// How many transactions the simulated coordinator timed out.
    pub fn timed_out_transactions(&self) -> u64 {
        self.lock().timed_out
    }
}

impl Cluster {
    pub fn new_txn(&mut self, transactional_id: &str) -> u64 {
        self.next_txn += 1;
        let id = self.next_txn;
        self.open.insert(
            id,
            OpenTxn {
                id,
                transactional_id: transactional_id.to_string(),
                partitions: BTreeSet::new(),
                offsets: Vec::new(),
            },
        );
        id
    }

    /// Ends a transaction: markers in every partition it wrote, and on commit its offsets.
    pub fn end_txn(&mut self, id: u64, commit: bool) {
        let Some(txn) = self.open.remove(&id) else {
            return;
        };
        for (topic, partition) in &txn.partitions {
            if let Some(log) = self
                .topics
                .get_mut(topic)
                .and_then(|t| t.get_mut(*partition as usize))
            {
                log.entries.push(Entry::Marker);
            }
        }
        if commit {
            for offset in txn.offsets {
                self.committed
                    .insert((offset.topic.clone(), offset.partition), offset);
            }
        } else {
            self.aborted.insert(id);
        }
    }

    /// Aborts the open transactions of a transactional id (a new producer fenced it).
    pub fn abort_open_of(&mut self, transactional_id: &str) {
        let ids: Vec<u64> = self
            .open
            .values()
            .filter(|t| t.transactional_id == transactional_id)
            .map(|t| t.id)
            .collect();
        for id in ids {
            self.end_txn(id, false);
        }
    }

    /// The first offset of `log` that belongs to a still open transaction (the LSO), or its end.
    pub fn stable_end(&self, log: &Log) -> i64 {
        log.entries
            .iter()
            .position(
                |e| matches!(e, Entry::Data { txn: Some(t), .. } if self.open.contains_key(t)),
            )
            .map_or(log.entries.len() as i64, |p| p as i64)
    }

    /// What a stable read of `partitions` waits for: open transactions holding their offsets, or
    /// records below `up_to`. The coordinator aborts them, as `transaction.timeout.ms` would.
    pub fn time_out_blocking(&mut self, topic: &str, partition: i32, offsets_too: bool) {
        let blocking: Vec<u64> = self
            .open
            .values()
            .filter(|t| {
                t.partitions.contains(&(topic.to_string(), partition))
                    || (offsets_too
                        && t.offsets
                            .iter()
                            .any(|o| o.topic == topic && o.partition == partition))
            })
            .map(|t| t.id)
            .collect();
        for id in blocking {
            self.timed_out += 1;
            self.end_txn(id, false);
        }
    }

    /// Whether a data entry is visible to read_committed readers.
    pub fn visible(&self, txn: Option<u64>) -> bool {
        txn.is_none_or(|t| !self.aborted.contains(&t))
    }
}
