//! The seams the runtime owns: everything it asks of the outside world, as traits. `kafka_ports.rs`
//! implements them with eddy's Kafka clients; [`crate::testing::sim`] implements them with an
//! in-process world that injects faults, so the real runtime (tasks, operators, RocksDB) can be
//! driven through deterministic schedules.
//!
//! The shapes follow what the runtime needs and librdkafka's contracts:
//! - [`Input`] hands out records one poll at a time (a batch consume can stand behind it later),
//!   and calls the [`RebalanceListener`] from inside `poll`, as librdkafka does.
//! - [`Transaction`] is the transactional producer. Its failures are [`CommitFailure`]s, whose
//!   kind follows librdkafka's contract: must abort, fenced/fatal, outcome unknown, permanent.
//! - [`Changelog`] reads a partition range read_committed, [`Admin`] deletes records.

use crate::kafka::{CommitFailure, KafkaClientError, PartitionOffset, ReadPosition, ReadRecord};
use crate::state::ChangelogEnds;
use crate::task::OutgoingRecord;
use std::time::Duration;

/// A record handed out by an [`Input`]; it may borrow the input's buffers.
pub trait PolledRecord {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> Option<&[u8]>;
    fn timestamp_ms(&self) -> Option<i64>;
    /// The NATS subject of a record read from NATS.
    fn subject(&self) -> Option<&str> {
        None
    }
}

/// This member's place in the group, as a transaction needs it to commit offsets (KIP-447: the
/// coordinator rejects offsets from a member whose generation is stale). Opaque to the runtime.
pub struct Membership(pub Box<dyn std::any::Any + Send>);

/// What the runtime may do with its group membership, also from inside rebalance callbacks.
pub trait Group {
    /// Committed offsets and metadata, stable: waits while a transaction that holds offsets for
    /// these partitions is still open.
    fn committed(
        &self,
        partitions: &[(String, i32)],
        timeout: Duration,
    ) -> Result<Vec<PartitionOffset>, KafkaClientError>;
    /// Moves the fetch position (to `offset`, or the beginning when `None`). Records fetched
    /// from the old position and not yet handed out are discarded.
    fn seek(
        &self,
        topic: &str,
        partition: i32,
        offset: Option<i64>,
    ) -> Result<(), KafkaClientError>;
    fn pause(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError>;
    fn resume(&self, partitions: &[(String, i32)]) -> Result<(), KafkaClientError>;
    /// (low, high) offsets of a partition.
    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaClientError>;
    fn assignment(&self) -> Vec<(String, i32)>;
    /// `None` when not a member of the group.
    fn membership(&self) -> Option<Membership>;
    /// Commits offsets outside a transaction (at-least-once).
    fn commit_offsets(&self, offsets: &[PartitionOffset]) -> Result<(), KafkaClientError>;
    /// The group as its coordinator describes it: every member by instance id, with what it is
    /// assigned while the group is stable (for standby placement, and to see who left).
    /// `Ok(None)` while no recent description is at hand: ask again shortly.
    fn describe(&self) -> Result<Option<GroupDescription>, KafkaClientError>;
}

/// The group as its coordinator described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// No rebalance under way: the assignments are final. While the group rebalances its
    /// members are listed (one whose session expired, or that left, is already gone), but not
    /// what each will be assigned.
    pub stable: bool,
    pub members: Vec<GroupMember>,
}

/// A member of the group: its instance id, its member id (the coordinator's name for it, which
/// the assignor orders members by) and the partitions assigned to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    pub instance: String,
    pub member_id: String,
    pub partitions: Vec<(String, i32)>,
}

/// Called from inside [`Input::poll`] when the group moves partitions.
pub trait RebalanceListener: Send + Sync {
    /// Partitions are about to be taken away. `lost`: another member may own them already
    /// (session timeout), so nothing may be committed for them.
    fn on_revoke(&self, partitions: &[(String, i32)], lost: bool, group: &dyn Group);
    /// Partitions were added to this member's assignment.
    fn on_assign(&self, partitions: &[(String, i32)], group: &dyn Group);
}

/// Why a poll returned no record.
#[derive(Debug)]
pub enum InputError {
    /// The Kafka consumer failed; what that means follows librdkafka (`runtime::failure`).
    Consumer(KafkaClientError),
    /// Another source cannot go on (e.g. a NATS stream no longer holds the committed position):
    /// the instance stops with this error.
    Fatal(crate::Error),
}

impl From<KafkaClientError> for InputError {
    fn from(error: KafkaClientError) -> Self {
        InputError::Consumer(error)
    }
}

/// The group consumer, and the sources read beside it.
pub trait Input {
    type Record<'a>: PolledRecord
    where
        Self: 'a;
    /// Waits up to `timeout` for one record; rebalance callbacks run inside this call.
    fn poll(&self, timeout: Duration) -> Option<Result<Self::Record<'_>, InputError>>;
    fn group(&self) -> &dyn Group;
    /// Whether a connection to some broker is up.
    fn brokers_reachable(&self) -> bool;
    /// Whether this partition was last seen read to its end.
    fn caught_up(&self, topic: &str, partition: i32) -> bool;
    /// Leaves the group, revoking partitions through the listener first.
    fn close(&self);
}

/// The producer of one instance: transactional under exactly-once.
pub trait Transaction: Send {
    /// Queues one record, inside the open transaction (which starts on the first send).
    fn send(&mut self, record: &OutgoingRecord) -> Result<(), CommitFailure>;
    /// Serves delivery reports.
    fn serve(&self);
    /// Commits everything sent since the last commit with `offsets` (under exactly-once, into the
    /// transaction with `membership`; otherwise the producer is flushed and the caller commits
    /// the offsets).
    fn commit(
        &mut self,
        offsets: &[PartitionOffset],
        membership: Option<&Membership>,
    ) -> Result<(), CommitFailure>;
    /// Aborts the open transaction, if any.
    fn abort(&mut self) -> Result<(), CommitFailure>;
    /// Per changelog partition, the offset after the last record delivered there since the last
    /// call (an abort forgets them). Taken right after a commit: how far into each changelog the
    /// committed transaction reached, which the stores record beside the writes they apply.
    /// Missing or late reports only leave a store's position behind its files (a longer restore).
    fn take_changelog_ends(&mut self) -> ChangelogEnds;
    /// Waits until every queued record is acknowledged, without committing.
    fn wait_delivered(&self) -> Result<(), KafkaClientError>;
}

/// A partition of an assignment topic that stands for a split of another source (a NATS subject
/// filter): the group hands it out, its committed offset is where the split resumes.
pub type Split = (String, i32);

/// A record read from a split; `offset` is its position in the split's source (a NATS stream
/// sequence), and the committed offset is the next one to read.
#[derive(Clone, Debug)]
pub struct SplitRecord {
    pub split: Split,
    pub offset: i64,
    pub subject: String,
    pub payload: bytes::Bytes,
    pub timestamp_ms: i64,
}

/// Sources read in splits beside the Kafka consumer (`runtime::sources` merges them into one
/// [`Input`]). Seeking a split discards what it read before, as a Kafka seek does.
pub trait SplitSource: Send + Sync {
    /// Whether the partitions of `topic` stand for this source's splits.
    fn owns(&self, topic: &str) -> bool;
    /// (Re)starts a split at `from` (`None`: the start of its source), paused or not.
    fn start(&self, split: &Split, from: Option<i64>, paused: bool);
    fn stop(&self, split: &Split);
    fn set_paused(&self, split: &Split, paused: bool);
    /// Paused, or not started (as a newly assigned partition is paused until resumed).
    fn is_paused(&self, split: &Split) -> bool;
    /// Whether the split was last seen read to its end (and its source is reachable).
    fn caught_up(&self, split: &Split) -> bool;
    fn any_running(&self) -> bool;
    /// The next record of a running split, waiting up to `timeout`; `Err` stops the instance.
    fn recv(&self, timeout: Duration) -> Option<Result<SplitRecord, crate::Error>>;
}

/// Opens producers. Under exactly-once each shares the instance's transactional id, so opening
/// one fences the ones before it, and the coordinator completes or aborts their transaction.
pub trait Transactions: Send + Sync {
    fn open(&self) -> Result<Box<dyn Transaction>, KafkaClientError>;
    /// Whether producers are transactional (exactly-once).
    fn transactional(&self) -> bool;
    /// Fences the producer of `instance`, another instance of the application that left the
    /// group: the coordinator aborts its open transaction now rather than at
    /// `transaction.timeout.ms`, so the stable offsets and changelogs of the tasks taken over
    /// from it do not wait for that. Returns at once; the fence completes in the background.
    /// Nothing to do unless transactional.
    fn fence(&self, instance: &str);
}

/// Reads changelog partitions read_committed, one at a time, for restores.
pub trait Changelog: Send + Sync {
    /// Starts reading `partition` from `from` (the beginning when `None`) up to its end now.
    fn open_partition(
        &self,
        topic: &str,
        partition: i32,
        from: Option<i64>,
        patience: Duration,
    ) -> Result<ReadPosition, KafkaClientError>;
    /// Reads for up to `budget` or `max_records`, advancing `position`; returns how many were read.
    fn read_some(
        &self,
        topic: &str,
        position: &mut ReadPosition,
        budget: Duration,
        max_records: usize,
        visit: &mut dyn FnMut(ReadRecord),
    ) -> Result<usize, KafkaClientError>;
    fn close_partition(&self);
}

/// Cluster administration the loop needs while it runs.
pub trait Admin: Send {
    /// Deletes every record before each `(topic, partition, offset)`; returns how many
    /// partitions were purged.
    fn delete_records_before(
        &self,
        offsets: &[(String, i32, i64)],
        timeout: Duration,
    ) -> Result<usize, KafkaClientError>;
}

/// What time it is, for the loop's pacing (commit ticks, idleness). The simulator moves its own.
pub trait Clock: Send + Sync {
    fn now(&self) -> std::time::Instant;
}

/// The machine's monotonic clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
}
